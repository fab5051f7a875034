"""Regressions from the review of the round engine: rejected adversaries, hostile frames,
plans resolved once per round, dotted state keys, snapshots, aliasing, restore."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from velocity.attacks import AttackSpec, parse_attack
from velocity.errors import ProtocolError
from velocity.server import RoundEngine, build_engine
from velocity.sim import QuadraticClients, SimulationSettings, StragglerModel
from velocity.strategies import FedAvg, Krum, RoundBatch
from velocity.types import (
    ClientStateStore,
    ClientTask,
    ClientUpdate,
    ParamSpec,
    Result,
    StageContext,
    StageState,
    UpdateProvider,
    decode_task,
    decode_update,
    encode_task,
    encode_update,
    tensor_digest,
)
from velocity.types._wire import MAGIC


def _engine(
    *attacks: AttackSpec, strategy: Any = None, straggler: StragglerModel | None = None
) -> RoundEngine:
    spec = ParamSpec.from_sizes({"w": 8})
    base = QuadraticClients(spec.d, seed=1, num_clients=8)
    return build_engine(
        base=base,
        spec=spec,
        init_params=torch.zeros(spec.d),
        strategy=strategy or FedAvg(),
        settings=SimulationSettings(seed=1, straggler=straggler),
        attacks=list(attacks),
    )


class _Spoil(UpdateProvider):
    """Spoils the digest of ``victims``' updates (the engine must reject them)."""

    def __init__(self, inner: UpdateProvider, victims: Collection[str]) -> None:
        self.inner, self.victims = inner, set(victims)

    def submit(self, tasks: Sequence[ClientTask]) -> None:
        self.inner.submit(tasks)

    def collect(
        self, *, until: float | None = None, max_results: int | None = None
    ) -> list[Result]:
        out: list[Result] = []
        for r in self.inner.collect(until=until, max_results=max_results):
            if isinstance(r, ClientUpdate) and r.client_id in self.victims:
                r = replace(r, digest="0" * 64)
            out.append(r)
        return out

    def cancel(self, client_ids: Collection[str]) -> None:
        self.inner.cancel(client_ids)


def _adversaries(engine: RoundEngine) -> list[str]:
    """Round 1's adversaries (dry: resolve the plan as the provider will)."""
    from velocity.server.builder import adversary_of

    plan = adversary_of(engine).plan.assign(1, list(range(8)))
    return [f"client-{c}" for a in plan for c in a.clients]


@pytest.mark.parametrize(
    "attack",
    [
        AttackSpec(parse_attack("empire"), fraction=0.25),  # crafts only
        AttackSpec(parse_attack("sign_flip"), fraction=0.25),  # starts from its own update
    ],
)
def test_a_rejected_adversary_takes_no_part_in_the_attack(attack: AttackSpec) -> None:
    engine = _engine(attack, strategy=Krum(f=2))
    bad, good = _adversaries(engine)
    engine.provider = _Spoil(engine.provider, {bad})
    result = engine.run_round()
    assert result.rejected == (bad,)
    assert bad not in result.participated
    assert result.num_clients == 7
    (report,) = result.attack_results
    assert report["client_ids"] == [good]
    assert report["clients_affected"] == 1


def test_when_every_adversary_is_rejected_no_attack_is_reported() -> None:
    engine = _engine(AttackSpec(parse_attack("empire"), fraction=0.25))
    engine.provider = _Spoil(engine.provider, set(_adversaries(engine)))
    result = engine.run_round()
    assert len(result.rejected) == 2
    assert result.attack_results == ()


class _TwoCollects(UpdateProvider):
    """Collects a round in two calls (first half the virtual time, then the rest)."""

    def __init__(self, inner: UpdateProvider) -> None:
        self.inner = inner

    def submit(self, tasks: Sequence[ClientTask]) -> None:
        self.inner.submit(tasks)

    def collect(
        self, *, until: float | None = None, max_results: int | None = None
    ) -> list[Result]:
        first = self.inner.collect(until=1.0)
        return first + self.inner.collect(until=until, max_results=max_results)

    def cancel(self, client_ids: Collection[str]) -> None:
        self.inner.cancel(client_ids)


def test_a_rounds_adversaries_are_resolved_once_however_often_it_collects() -> None:
    straggler = StragglerModel(deadline_s=50.0, distribution="exponential", mean_s=1.0)
    attack = AttackSpec(parse_attack("empire"), fraction=0.25, per_round=True)
    sync = _engine(attack, straggler=straggler)
    split = _engine(attack, straggler=straggler)
    split.provider = _TwoCollects(split.provider)
    a, b = sync.run(3), split.run(3)
    assert [r.attack_results for r in a] == [r.attack_results for r in b]
    assert tensor_digest(sync.global_params) == tensor_digest(split.global_params)


# ---------------------------------------------------------------------- hostile frames


def _update_frame(**header: object) -> bytes:
    base = {
        "kind": "update",
        "client_id": "c",
        "num_samples": 1,
        "round": 1,
        "base_version": 0,
        "loss": 0.5,
        "metrics": {},
        "digest": None,
    }
    frame = encode_update(ClientUpdate("c", 1, torch.zeros(2), round=1))
    size = struct.unpack("<I", frame[4:8])[0]
    import json

    text = json.dumps({**base, **header}).encode()
    return MAGIC + struct.pack("<I", len(text)) + text + frame[8 + size :]


@pytest.mark.parametrize(
    "header",
    [
        {"loss": 10**400},
        {"num_samples": 10**400},
        {"num_samples": -1},
        {"metrics": {"a": 10**400}},
        {"metrics": {"a": [[[[[[[[[[[1]]]]]]]]]]]}},
        {"extra": 1},
        {"round": "1"},
    ],
)
def test_hostile_update_headers_are_protocol_errors(header: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        decode_update(_update_frame(**header), d=2)


def test_nan_deep_nesting_and_duplicate_keys_are_refused() -> None:
    frame = encode_update(ClientUpdate("c", 1, torch.zeros(2), round=1))
    size = struct.unpack("<I", frame[4:8])[0]
    body = frame[8 + size :]
    for text in (
        b'{"kind": "update", "loss": NaN}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"kind": "update", "kind": "task"}',
    ):
        with pytest.raises(ProtocolError):
            decode_update(MAGIC + struct.pack("<I", len(text)) + text + body, d=2)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), cut=st.integers(0, 400))
def test_random_and_truncated_frames_are_protocol_errors(data: bytes, cut: int) -> None:
    good = encode_task(ClientTask("c", 1, 0, torch.zeros(3)))
    for candidate in (data, MAGIC + data, good[:cut], good[:cut] + data):
        with contextlib.suppress(ProtocolError):
            decode_task(candidate, d=3)


def test_tasks_refuse_bad_timing() -> None:
    from velocity.errors import ValidationError

    for kwargs in ({"round": 0}, {"timeout_s": 0.0}, {"timeout_s": float("nan")}):
        args = {"client_id": "c", "round": 1, "version": 0, "params": torch.zeros(1), **kwargs}
        with pytest.raises(ValidationError):
            ClientTask(**args)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- state


@dataclass(frozen=True)
class _Ema:
    """A stage whose state keys hold dots (parameter names)."""

    @property
    def name(self) -> str:
        return "ema.v1"

    def init(self, spec: ParamSpec) -> StageState:
        return {"linear.weight": torch.zeros(spec.d)}

    def apply(
        self, x: RoundBatch, state: StageState, ctx: StageContext
    ) -> tuple[RoundBatch, StageState, Mapping[str, Any]]:
        assert x.update is not None
        return x, {"linear.weight": 0.5 * state["linear.weight"] + x.update}, {}


def test_dotted_stage_names_and_keys_survive_a_checkpoint() -> None:
    def make() -> RoundEngine:
        spec = ParamSpec.from_sizes({"w": 4})
        base = QuadraticClients(spec.d, seed=0, num_clients=4)
        from velocity.sim import FractionSampler

        return RoundEngine(
            provider=base,
            sampler=FractionSampler(base.population),
            spec=spec,
            init_params=torch.zeros(spec.d),
            strategy=FedAvg(),
            seed=0,
            post_stages=[_Ema()],
        )

    a = make()
    a.run(2)
    tensors, meta = a.state()
    assert "stage.ema.v1.linear.weight" in tensors
    b = make()
    b.restore(tensors, meta)
    assert torch.equal(
        b.stage_state("ema.v1")["linear.weight"], a.stage_state("ema.v1")["linear.weight"]
    )


def test_client_state_snapshot_is_a_copy_and_dotted_names_round_trip() -> None:
    store = ClientStateStore()
    m = torch.ones(2)
    store.put("c.1", "ef.v2", {"linear.weight": m})
    store.put("idle", "momentum", {})
    tensors, meta = store.state()
    m.add_(1.0)  # training continues in place
    assert torch.equal(tensors["0.ef.v2.linear.weight"], torch.ones(2))
    other = ClientStateStore()
    other.restore(tensors, meta)
    assert torch.equal(other.get("c.1", "ef.v2")["linear.weight"], torch.ones(2))
    assert other.clients() == ["c.1", "idle"]


def test_a_restored_engine_takes_the_checkpoints_clock_and_forgets_its_last_aggregate() -> None:
    straggler = StragglerModel(deadline_s=1.0, mean_s=1.0)
    first = _engine(straggler=straggler)
    first.run(1)
    tensors, meta = first.state()
    used = _engine(straggler=straggler)
    used.run(4)
    used.restore(tensors, meta)
    assert used.clock.now() == first.clock.now()
    assert used.last_aggregate is None
    assert used.round == 1


@pytest.mark.parametrize(
    "layout",
    [
        [0, 1, 2],  # in place: no copy
        [1, 2, 0],  # rows rotated
        [2, 0],  # a subset out of order
        ["fresh", 1, 0],  # mixed: one tensor of its own
        ["misaligned", 0, "fresh"],  # a view that is not a whole row
    ],
)
def test_stacking_copies_every_delta_exactly_whatever_its_memory(layout: list[object]) -> None:
    engine = _engine()
    d = engine.spec.d
    buffer = engine._stack.rows(3)
    buffer.copy_(torch.arange(3 * d, dtype=torch.float32).view(3, d))
    flat = engine._stack.buffer.view(-1)
    deltas: list[Tensor] = []
    for item in layout:
        if item == "fresh":
            deltas.append(torch.full((d,), -1.0))
        elif item == "misaligned":
            deltas.append(flat[d // 2 : d // 2 + d])
        else:
            deltas.append(engine._stack.buffer[int(item)])  # type: ignore[call-overload]
    expected = torch.stack([t.clone() for t in deltas])
    updates = [ClientUpdate(f"c{j}", 1, t) for j, t in enumerate(deltas)]
    assert torch.equal(engine._stack_rows(updates), expected)
