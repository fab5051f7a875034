"""One federation, every provider: the same engine over three transports gives one model.

Each case runs unchanged over ``sequential`` (clients in this process), ``loopback`` (every
task and update through bytes, as a network would) and ``out_of_order`` (tasks executed in a
random order, results at random virtual times). The property tested: the final model's
digest is the same on every provider, round results agree, and the out-of-order provider
really delivers out of order.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from velocity.attacks import AttackSpec, parse_attack
from velocity.client import TrainConfig
from velocity.data import load_dataset
from velocity.server import RoundEngine, build_engine, make_simulation
from velocity.sim import (
    BackendSpec,
    OutOfOrderClients,
    QuadraticClients,
    SimulationSettings,
    StragglerModel,
)
from velocity.strategies import NNM, FedAvg, FedProx, Krum, Pipeline, Strategy
from velocity.types import (
    ClientFailure,
    ClientTask,
    ParamSpec,
    Result,
    RoundResult,
    UpdateProvider,
    tensor_digest,
)

PROVIDERS = ("sequential", "loopback", "out_of_order")


def _quadratic(
    backend: str,
    strategy: Strategy,
    *,
    seed: int = 3,
    num_clients: int = 12,
    attacks: Sequence[AttackSpec] = (),
    settings: dict[str, object] | None = None,
) -> RoundEngine:
    spec = ParamSpec.from_sizes({"w": 40, "b": 4})
    base = QuadraticClients(spec.d, seed=seed, num_clients=num_clients)
    return build_engine(
        base=base,
        spec=spec,
        init_params=torch.zeros(spec.d),
        strategy=strategy,
        settings=SimulationSettings(seed=seed, **(settings or {})),  # type: ignore[arg-type]
        evaluate=lambda p: (base.loss(p), float("nan")),
        attacks=attacks,
        backend=BackendSpec(type=backend, seed=11, spread_s=0.5),
    )


CASES: dict[str, Callable[[str], RoundEngine]] = {
    "fedavg": lambda b: _quadratic(b, FedAvg()),
    "krum_pipeline_attack": lambda b: _quadratic(
        b,
        Pipeline(NNM(f=2), Krum(f=2)),
        attacks=[AttackSpec(parse_attack("sign_flip"), fraction=0.2)],
    ),
    "omniscient_and_sybil": lambda b: _quadratic(
        b,
        Krum(f=3),
        attacks=[
            AttackSpec(parse_attack("little"), fraction=0.2),
            AttackSpec(parse_attack({"type": "sybil_nodes", "count": 2}), start_round=2),
        ],
    ),
    "dropout_stragglers_sampling": lambda b: _quadratic(
        b,
        FedAvg(),
        num_clients=30,
        settings={
            "client_fraction": 0.5,
            "dropout_rate": 0.2,
            "straggler": StragglerModel(deadline_s=1.2, mean_s=1.0, sigma=0.6),
        },
    ),
}


def _summary(results: Sequence[RoundResult]) -> list[tuple[object, ...]]:
    return [
        (
            r.round,
            r.selected_client_ids,
            r.participated,
            tuple(sorted((f.client_id, f.reason) for f in r.failures)),
            r.attack_results,
            r.aggregation.get("n"),
        )
        for r in results
    ]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", PROVIDERS[1:])
def test_synthetic_federation_is_the_same_on_every_provider(case: str, backend: str) -> None:
    reference = CASES[case]("sequential")
    expected = reference.run(4)
    engine = CASES[case](backend)
    got = engine.run(4)
    assert tensor_digest(engine.global_params) == tensor_digest(reference.global_params)
    assert _summary(got) == _summary(expected)
    assert [r.global_loss for r in got] == [r.global_loss for r in expected]


def test_stragglers_are_timed_out_failures_and_the_clock_moves() -> None:
    engine = CASES["dropout_stragglers_sampling"]("sequential")
    results = engine.run(4)
    reasons = {f.reason for r in results for f in r.failures}
    assert reasons == {"dropped", "timed_out"}
    for r in results:
        assert set(r.participated) | set(r.dropped) | set(r.stragglers) == set(r.selected)
    # a round where someone timed out ends at the deadline on the virtual clock
    assert results[-1].clock_s > 0
    assert all(b.clock_s >= a.clock_s for a, b in itertools.pairwise(results))


@pytest.mark.parametrize("backend", PROVIDERS)
def test_resume_equals_uninterrupted_on_every_provider(backend: str) -> None:
    whole = CASES["krum_pipeline_attack"](backend)
    whole.run(4)
    first = CASES["krum_pipeline_attack"](backend)
    first.run(2)
    tensors, meta = first.state()
    resumed = CASES["krum_pipeline_attack"](backend)
    resumed.restore(tensors, meta)
    resumed.run(2)
    assert tensor_digest(resumed.global_params) == tensor_digest(whole.global_params)
    assert _summary(resumed.results) == _summary(whole.results)


class _Spy(UpdateProvider):
    """Records the order in which results reach the engine."""

    def __init__(self, inner: UpdateProvider) -> None:
        self.inner = inner
        self.orders: list[list[str]] = []
        self.tasks: list[list[str]] = []

    def submit(self, tasks: Sequence[ClientTask]) -> None:
        self.tasks.append([t.client_id for t in tasks])
        self.inner.submit(tasks)

    def collect(
        self, *, until: float | None = None, max_results: int | None = None
    ) -> list[Result]:
        out = self.inner.collect(until=until, max_results=max_results)
        self.orders.append([r.client_id for r in out])
        return out

    def cancel(self, client_ids: Collection[str]) -> None:
        self.inner.cancel(client_ids)


def test_out_of_order_provider_really_delivers_out_of_order() -> None:
    engine = CASES["fedavg"]("out_of_order")
    assert isinstance(engine.provider, OutOfOrderClients)
    spy = _Spy(engine.provider)
    engine.provider = spy
    engine.run(3)
    assert any(order != tasks for order, tasks in zip(spy.orders, spy.tasks, strict=True))
    assert all(
        sorted(order) == sorted(tasks) for order, tasks in zip(spy.orders, spy.tasks, strict=True)
    )


def test_loopback_moves_real_bytes() -> None:
    engine = CASES["fedavg"]("loopback")
    engine.run(1)
    provider = engine.provider
    sent, received = provider.bytes_sent, provider.bytes_received  # type: ignore[attr-defined]
    d = engine.spec.d
    assert sent >= 12 * 4 * d
    assert received >= 12 * 4 * d


# ---------------------------------------------------------------------- tampering


class _Tamper(UpdateProvider):
    """Changes one entry of ``victim``'s delta after its digest was computed."""

    def __init__(self, inner: UpdateProvider, victim: str) -> None:
        self.inner, self.victim = inner, victim

    def submit(self, tasks: Sequence[ClientTask]) -> None:
        self.inner.submit(tasks)

    def collect(
        self, *, until: float | None = None, max_results: int | None = None
    ) -> list[Result]:
        out: list[Result] = []
        for r in self.inner.collect(until=until, max_results=max_results):
            if not isinstance(r, ClientFailure) and r.client_id == self.victim:
                assert r.delta is not None
                delta = r.delta.clone()
                delta[0] += 1.0
                r = replace(r, delta=delta)
            out.append(r)
        return out


def test_a_tampered_update_is_rejected_and_counted() -> None:
    engine = CASES["fedavg"]("sequential")
    engine.provider = _Tamper(engine.provider, "client-05")
    result = engine.run_round()
    assert result.rejected == ("client-05",)
    (failure,) = result.failures
    assert failure.reason == "rejected"
    # The in-process client wrote its row into the engine's stack (no digest needed there);
    # a replaced delta is no longer that row and has no digest to vouch for it.
    assert "carries no digest" in failure.message
    assert "client-05" not in result.participated
    assert result.num_clients == 11
    assert result.aggregation["n"] == 11
    assert result.to_dict()["rejected"] == ["client-05"]


def test_a_tampered_update_with_its_digest_is_rejected() -> None:
    engine = CASES["fedavg"]("sequential")

    class _Stale(_Tamper):
        """Digests the victim's row, then changes it: the digest no longer matches."""

        def collect(
            self, *, until: float | None = None, max_results: int | None = None
        ) -> list[Result]:
            out: list[Result] = []
            for r in self.inner.collect(until=until, max_results=max_results):
                if not isinstance(r, ClientFailure) and r.client_id == self.victim:
                    assert r.delta is not None
                    assert r.digest is None
                    signed = r.with_digest()
                    assert signed.delta is not None
                    signed.delta[0] += 1.0
                    r = signed
                out.append(r)
            return out

    engine.provider = _Stale(engine.provider, "client-03")
    result = engine.run_round()
    assert result.rejected == ("client-03",)
    assert "digest mismatch" in result.failures[0].message


def test_a_tampered_payload_on_the_wire_is_rejected() -> None:
    engine = CASES["fedavg"]("loopback")

    class _FlipPayload(_Tamper):
        def collect(
            self, *, until: float | None = None, max_results: int | None = None
        ) -> list[Result]:
            out: list[Result] = []
            for r in self.inner.collect(until=until, max_results=max_results):
                if not isinstance(r, ClientFailure) and r.client_id == self.victim:
                    assert r.payload is not None
                    data = bytearray(r.payload)
                    data[-1] ^= 0x01  # one bit of the last float of the delta
                    r = replace(r, payload=bytes(data))
                out.append(r)
            return out

    engine.provider = _FlipPayload(engine.provider, "client-02")
    result = engine.run_round()
    assert result.rejected == ("client-02",)
    assert "digest" in result.failures[0].message


# ---------------------------------------------------------------------- a real dataset


def _synthetic_data() -> tuple[object, object]:
    kwargs = {"num_clients": 8, "seed": 2}
    return (
        load_dataset("synthetic", split="train", **kwargs),
        load_dataset("synthetic", split="test", **kwargs),
    )


def _dataset_engine(backend: str, datasets: tuple[object, object], dataset: str) -> RoundEngine:
    return make_simulation(
        dataset=dataset,
        model_id="logreg",
        strategy=Pipeline(NNM(f=1), Krum(f=1)),
        num_clients=8,
        settings=SimulationSettings(seed=5, client_fraction=1.0, dropout_rate=0.1),
        train_config=TrainConfig(batch_size=16, local_steps=4, lr=0.05),
        partitioning="natural" if dataset == "synthetic" else "dirichlet",
        attacks=[
            AttackSpec(parse_attack("label_flipping"), clients=("client-3",)),
            AttackSpec(parse_attack("empire"), fraction=0.125),
        ],
        datasets=datasets,  # type: ignore[arg-type]
        backend=backend,
    ).engine


@pytest.mark.parametrize("backend", PROVIDERS[1:])
def test_dataset_federation_is_the_same_on_every_provider(backend: str) -> None:
    data = _synthetic_data()
    reference = _dataset_engine("sequential", data, "synthetic")
    expected = reference.run(3)
    engine = _dataset_engine(backend, data, "synthetic")
    got = engine.run(3)
    assert tensor_digest(engine.global_params) == tensor_digest(reference.global_params)
    assert _summary(got) == _summary(expected)
    assert any(r.attack_results for r in got)


def _mnist_dir() -> Path | None:
    for candidate in (os.environ.get("VELOCITY_DATA"), "../shared/data"):
        if candidate and (Path(candidate) / "mnist").is_dir():
            return Path(candidate)
    return None


@pytest.mark.skipif(_mnist_dir() is None, reason="MNIST files not available")
@pytest.mark.parametrize("backend", PROVIDERS[1:])
def test_mnist_federation_is_the_same_on_every_provider(backend: str) -> None:
    root = _mnist_dir()
    train = load_dataset("mnist", split="train", data_dir=root)
    test = load_dataset("mnist", split="test", data_dir=root)
    keep = torch.arange(0, train.x.shape[0], 20)  # 3,000 examples keep it quick
    small = replace(train, x=train.x[keep], y=train.y[keep])
    data = (small, replace(test, x=test.x[:1000], y=test.y[:1000]))
    reference = _dataset_engine("sequential", data, "mnist")
    reference.run(2)
    engine = _dataset_engine(backend, data, "mnist")
    engine.run(2)
    assert tensor_digest(engine.global_params) == tensor_digest(reference.global_params)
    assert _summary(engine.results) == _summary(reference.results)


# ---------------------------------------------------------------------- fixes on the way


def test_fedprox_mu_reaches_every_clients_training() -> None:
    from velocity import VelocityServer

    common = {
        "storage": "memory://fedprox-engine-test",
        "num_clients": 4,
        "seed": 1,
        "partitioning": "iid",
        "train_config": TrainConfig(batch_size=8, local_steps=20, lr=0.02),
    }
    steps = {}
    for name, strategy in (("avg", FedAvg()), ("prox", FedProx(mu=10.0))):
        server = VelocityServer("logreg", "synthetic", strategy, **common)  # type: ignore[arg-type]
        start = torch.tensor(server.global_weights["linear.weight"])
        server.run(min_clients=4, rounds=1)
        steps[name] = torch.tensor(server.global_weights["linear.weight"]) - start
    # The proximal term mu/2 ||w - w_global||^2 pulls local models back to the global one:
    # with it the round's step is strictly shorter (before the engine, both were equal).
    assert not torch.equal(steps["avg"], steps["prox"])
    assert steps["prox"].norm() < 0.9 * steps["avg"].norm()


def _parameter_server(seed: int = 4) -> object:
    import copy

    from torch import nn

    from velocity.server import ByzantineNode, HonestNode, ParameterServer

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(160, 5, generator=gen)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    model = nn.Linear(5, 2)
    nodes = [
        HonestNode(
            copy.deepcopy(model),
            x[32 * k : 32 * k + 32],
            y[32 * k : 32 * k + 32],
            batch_size=8,
            momentum=0.9,
        )
        for k in range(5)
    ]
    return ParameterServer(nodes, [ByzantineNode("little")], "FedMedian", lr=0.1, seed=seed)


def test_parameter_server_resume_keeps_worker_momentum() -> None:
    whole = _parameter_server()
    for _ in range(5):
        whole.round()  # type: ignore[attr-defined]
    first = _parameter_server()
    for _ in range(2):
        first.round()  # type: ignore[attr-defined]
    tensors, meta = first.engine.state()  # type: ignore[attr-defined]
    assert any(k.startswith("client.") and k.endswith(".momentum.m") for k in tensors)
    resumed = _parameter_server()
    resumed.engine.restore(tensors, meta)  # type: ignore[attr-defined]
    for _ in range(3):
        resumed.round()  # type: ignore[attr-defined]
    assert torch.equal(resumed.global_params, whole.global_params)  # type: ignore[attr-defined]
    # and momentum matters: restarting it at zero would give another model
    tensors = {k: v for k, v in tensors.items() if not k.startswith("client.")}
    restarted = _parameter_server()
    restarted.engine.restore(tensors, {**meta, "clients": {}})  # type: ignore[attr-defined]
    for _ in range(3):
        restarted.round()  # type: ignore[attr-defined]
    assert not torch.equal(restarted.global_params, whole.global_params)  # type: ignore[attr-defined]


def test_run_experiment_writes_the_seed_it_ran_with(tmp_path: Path) -> None:
    import yaml

    from velocity.experiments import parse_config
    from velocity.experiments.runner import run_experiment

    config = parse_config(
        {
            "name": "seeded",
            "seed": 1,
            "dataset": "synthetic",
            "model_id": "logreg",
            "training": {"num_rounds": 1, "num_clients": 30, "client_fraction": 0.1},
            "client": {"local_steps": 2},
            "simulation": {"partitioning": "natural"},
            "output": {"save_plots": False},
        }
    )
    result = run_experiment(config, output_dir=tmp_path, seed=7)
    written = yaml.safe_load((tmp_path / "config.resolved.yaml").read_text())
    assert written["seed"] == 7
    assert result.seed == 7
    assert result.config_hash == config.with_updates({"seed": 7}).config_hash()
    assert result.config_hash != config.config_hash()


def test_sync_round_skips_a_round_without_enough_updates() -> None:
    from velocity.server import SyncRound

    engine = CASES["fedavg"]("sequential")
    engine.policy = SyncRound(min_updates=13)  # 12 clients answer
    before = engine.global_params.clone()
    result = engine.run_round()
    assert "not enough" in result.aggregation["skipped"]
    assert result.participated == ()
    assert result.round == 1 == engine.round
    assert torch.equal(engine.global_params, before)
    engine.policy = SyncRound(min_updates=12)
    assert engine.run_round().num_clients == 12
    with pytest.raises(ValueError, match="min_updates must be an int >= 1"):
        SyncRound(min_updates=0)
