"""The engine's encoder seam: client stages, update encoders, decoders, wire bytes, bounded
per-client state, sum-only pre-stages and Poisson sampling."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor

from velocity.errors import ConfigurationError
from velocity.server import build_engine
from velocity.server.engine import RoundEngine
from velocity.sim import QuadraticClients
from velocity.sim.population import ClientPopulation
from velocity.sim.sampling import PoissonSampler
from velocity.sim.settings import SimulationSettings
from velocity.strategies import FedAvg, RoundBatch
from velocity.types import ClientStateStore, ParamSpec, StageContext, StageState, tensor_digest

SPEC = ParamSpec.from_sizes({"w": 40, "b": 4})


@dataclass(frozen=True)
class Half:
    """A toy codec: float16 body behind a 4-byte length header; keeps a residual."""

    feedback: bool = False
    capacity: int | None = None

    @property
    def name(self) -> str:
        return "half"

    @property
    def encoding(self) -> str:
        return "toy-half"

    @property
    def state_capacity(self) -> int | None:
        return self.capacity

    def encode(
        self, row: Tensor, state: StageState, ctx: StageContext
    ) -> tuple[bytes, Tensor, StageState]:
        if self.feedback and "residual" in state:
            row = row + state["residual"]
        body = row.half().numpy().tobytes()
        payload = struct.pack("<I", len(body)) + body
        decoded = self.decode(payload, ctx.spec)
        return payload, decoded, ({"residual": row - decoded} if self.feedback else {})

    def decode(self, payload: bytes, spec: ParamSpec) -> Tensor:
        (size,) = struct.unpack("<I", payload[:4])
        if size != 2 * spec.d or len(payload) != 4 + size:
            raise ValueError(f"bad frame of {len(payload)} bytes")
        return torch.frombuffer(bytearray(payload[4:]), dtype=torch.float16).float()


@dataclass(frozen=True)
class Scale:
    """A client stage: multiply the row by ``factor`` and count calls in the client state."""

    factor: float

    @property
    def name(self) -> str:
        return "scale"

    def init(self, spec: ParamSpec) -> StageState:
        return {}

    def apply(
        self, x: Tensor, state: StageState, ctx: StageContext
    ) -> tuple[Tensor, StageState, Mapping[str, Any]]:
        calls = state.get("calls", torch.zeros(()))
        x.mul_(self.factor)
        return x, {"calls": calls + 1}, {"factor": self.factor}


def _engine(**kwargs: Any) -> tuple[RoundEngine, QuadraticClients]:
    base = QuadraticClients(SPEC.d, seed=3, num_clients=8)
    engine = build_engine(
        base=base,
        spec=SPEC,
        init_params=torch.zeros(SPEC.d),
        strategy=FedAvg(),
        settings=SimulationSettings(seed=3, client_fraction=0.5),
        evaluate=lambda p: (base.loss(p), float("nan")),
        **kwargs,
    )
    return engine, base


def test_encoded_updates_are_decoded_and_counted_at_their_wire_size() -> None:
    plain, _ = _engine()
    coded, _ = _engine(encoder=Half())
    a, b = plain.run_round(), coded.run_round()
    assert a.participated == b.participated
    assert b.bytes_up == len(b.participated) * (4 + 2 * SPEC.d)
    assert a.bytes_up > b.bytes_up
    # the server aggregated the float16-rounded rows
    assert torch.allclose(coded.global_params, plain.global_params, atol=1e-3)
    assert not torch.equal(coded.global_params, plain.global_params)


def test_client_stages_run_on_every_honest_row_with_per_client_state() -> None:
    plain, _ = _engine()
    scaled, _ = _engine(client_stages=[Scale(0.5)])
    plain.run(2)
    scaled.run(2)
    # the aggregate of a mean is linear: half the rows, half the step (first round)
    first_plain = plain.results[0]
    first = scaled.results[0]
    assert first.participated == first_plain.participated
    store = scaled.client_state
    assert sum(int(store.get(c, "scale").get("calls", 0)) for c in store.clients()) == sum(
        len(r.participated) for r in scaled.results
    )


def test_first_round_of_scaled_clients_is_half_the_plain_step() -> None:
    plain, _ = _engine()
    scaled, _ = _engine(client_stages=[Scale(0.5)])
    plain.run_round()
    scaled.run_round()
    assert torch.allclose(scaled.global_params, 0.5 * plain.global_params, atol=1e-6)


def test_a_corrupt_payload_is_a_rejected_failure_not_a_crash() -> None:
    engine, base = _engine(encoder=Half())
    original = base.collect

    def corrupt(**kwargs: Any) -> list[Any]:
        out = original(**kwargs)
        from dataclasses import replace

        first = out[0]
        return [replace(first, payload=first.payload[:-2]), *out[1:]]

    base.collect = corrupt  # type: ignore[method-assign]
    result = engine.run_round()
    assert len(result.rejected) == 1
    assert "undecodable" in result.failures[0].message


def test_unknown_encoding_is_rejected_naming_the_known_ones() -> None:
    engine, _base = _engine(encoder=Half())
    engine.decoders.clear()
    result = engine.run_round()
    assert result.participated == ()
    assert all("unknown encoding 'toy-half'" in f.message for f in result.failures)


def test_error_feedback_state_is_bounded_and_checkpointed() -> None:
    engine, _ = _engine(encoder=Half(feedback=True, capacity=2))
    engine.run(3)
    assert engine.client_state.count("half") == 2
    tensors, meta = engine.state()
    other, _ = _engine(encoder=Half(feedback=True, capacity=2))
    other.restore(tensors, meta)
    assert other.client_state.count("half") == 2
    engine.run_round()
    other.run_round()
    assert tensor_digest(engine.global_params) == tensor_digest(other.global_params)


def test_store_evicts_least_recently_written() -> None:
    store = ClientStateStore()
    for cid in ["a", "b", "c"]:
        store.put(cid, "r", {"x": torch.zeros(1)})
    store.put("a", "r", {"x": torch.ones(1)})  # a is now the most recent
    assert store.evict("r", keep=2) == ["b"]
    assert store.count("r") == 2
    assert store.get("b", "r") == {}
    tensors, meta = store.state()
    again = ClientStateStore()
    again.restore(tensors, meta)
    again.put("d", "r", {"x": torch.zeros(1)})
    assert again.evict("r", keep=2) == ["c"]


@dataclass(frozen=True)
class SumStage:
    """A sum-only pre-stage: sets the aggregate itself (twice the mean, to be visible)."""

    @property
    def name(self) -> str:
        return "sum_only"

    def init(self, spec: ParamSpec) -> StageState:
        return {}

    def apply(
        self, x: RoundBatch, state: StageState, ctx: StageContext
    ) -> tuple[RoundBatch, StageState, Mapping[str, Any]]:
        x.update = 2 * x.rows.mean(0)
        x.notes["aggregated_by"] = "sum_only"
        return x, state, {}


def test_a_sum_only_pre_stage_replaces_the_rule() -> None:
    plain, _ = _engine()
    summed, _ = _engine(sum_stages=[SumStage()])
    plain.run_round()
    result = summed.run_round()
    assert result.aggregation["aggregated_by"] == "sum_only"
    # QuadraticClients hold equal sample counts, so the weighted mean is the plain mean
    assert torch.allclose(summed.global_params, 2 * plain.global_params, atol=1e-6)


def test_poisson_sampler_inclusion_rate_and_determinism() -> None:
    pop = ClientPopulation(torch.arange(2000), torch.arange(2001))
    sampler = PoissonSampler(pop, rate=0.05, seed=1)
    counts = [len(sampler.sample(r)) for r in range(1, 201)]
    mean = sum(counts) / len(counts)
    assert abs(mean - 100) < 5 * (2000 * 0.05 * 0.95 / 200) ** 0.5
    assert sampler.sample(7) == PoissonSampler(pop, rate=0.05, seed=1).sample(7)
    assert sampler.sample(7) != sampler.sample(8)
    with pytest.raises(ConfigurationError, match="rate"):
        PoissonSampler(pop, rate=0.0)
