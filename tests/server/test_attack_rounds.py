"""The engine's attack stage: who trains, what is crafted, what is aggregated and reported."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import pytest
import torch
from torch import nn

from velocity import VelocityServer
from velocity._random import torch_generator
from velocity.attacks import (
    AttackPlan,
    AttackResult,
    AttackSpec,
    Backdoor,
    Empire,
    Inf,
    LabelFlipping,
    SignFlip,
    SybilNodes,
    reverse_labels,
)
from velocity.client import TrainConfig, Trainer
from velocity.errors import ConfigurationError
from velocity.server import RoundEngine, build_engine
from velocity.server.engine import serialized_size
from velocity.sim import (
    ClientPopulation,
    ClientWork,
    QuadraticClients,
    SequentialClients,
    SimulationSettings,
)
from velocity.sim.population import client_index
from velocity.strategies import FedAvg, FedMedian
from velocity.types import ClientTask, ClientUpdate, ParamSpec, Result, UpdateProvider


def _quadratic(specs: list[AttackSpec], strategy=None, n: int = 8, seed: int = 0) -> RoundEngine:  # type: ignore[no-untyped-def]
    spec = ParamSpec.from_sizes({"w": 5, "b": 3})
    provider = QuadraticClients(spec.d, seed=seed, num_clients=n)
    return build_engine(
        base=provider,
        spec=spec,
        init_params=torch.zeros(spec.d),
        strategy=strategy or FedAvg(),
        settings=SimulationSettings(seed=seed),
        evaluate=lambda p: (provider.loss(p), float("nan")),
        attacks=AttackPlan(num_clients=n, seed=seed, index_of=client_index, specs=specs),
    )


def _honest_rows(sim: RoundEngine, clients: list[int]) -> torch.Tensor:
    """The next round's honest deltas of ``clients``, trained outside the engine."""
    provider = sim.provider
    assert isinstance(provider, QuadraticClients)
    rows = torch.zeros(len(clients), sim.spec.d)
    for row, k in zip(rows, clients, strict=True):
        task = ClientTask(
            client_id=provider.population.client_id(k),
            round=sim.round + 1,
            version=sim.round,
            params=sim.global_params,
            out=row,
        )
        provider.train(ClientWork(task, k, row))
    return rows


class _Spy(UpdateProvider):
    """Passes everything through and keeps the round's updates as they reach the engine."""

    def __init__(self, inner: UpdateProvider) -> None:
        self.inner = inner
        self.updates: dict[str, ClientUpdate] = {}

    def submit(self, tasks: Sequence[ClientTask]) -> None:
        self.inner.submit(tasks)

    def collect(
        self, *, until: float | None = None, max_results: int | None = None
    ) -> list[Result]:
        out = self.inner.collect(until=until, max_results=max_results)
        self.updates.update({r.client_id: r for r in out if isinstance(r, ClientUpdate)})
        return out

    def cancel(self, client_ids: Collection[str]) -> None:
        self.inner.cancel(client_ids)


def test_empire_rows_are_crafted_from_the_honest_mean_and_averaged() -> None:
    sim = _quadratic([AttackSpec(Empire(scale=-2.0), clients=(1, 5))])
    start = sim.global_params.clone()
    honest = _honest_rows(sim, [0, 2, 3, 4, 6, 7])
    record = sim.run_round()
    crafted = -2.0 * honest.double().mean(0)
    expected = (honest.double().sum(0) + 2 * crafted) / 8
    torch.testing.assert_close(sim.global_params, start + expected.float(), rtol=1e-5, atol=1e-6)
    (result,) = [AttackResult.from_dict(a) for a in record.attack_results]
    assert result.attack_type == "empire"
    assert result.clients_affected == 2
    assert result.client_ids == ("client-1", "client-5")
    assert result.severity == 2.0
    assert record.participated[-2:] == ("client-1", "client-5")  # honest rows first
    assert len(record.participated) == 8


def test_sign_flip_uses_the_adversarys_own_update() -> None:
    sim = _quadratic([AttackSpec(SignFlip(), clients=(3,))], strategy=FedAvg())
    start = sim.global_params.clone()
    rows = _honest_rows(sim, list(range(8)))
    sim.run_round()
    expected = (rows.double().sum(0) - 2 * rows[3].double()) / 8
    torch.testing.assert_close(sim.global_params, start + expected.float(), rtol=1e-5, atol=1e-6)


def test_attack_window_and_fraction_of_the_population() -> None:
    sim = _quadratic([AttackSpec(Empire(), fraction=0.25, start_round=2, end_round=3)], n=8)
    records = sim.run(4)
    assert [len(r.attack_results) for r in records] == [0, 1, 1, 0]
    ids = {tuple(r.attack_results[0]["client_ids"]) for r in records[1:3]}
    assert len(ids) == 1
    assert len(next(iter(ids))) == 2


def test_inf_rows_dropped_by_fedavg_and_reported() -> None:
    sim = _quadratic([AttackSpec(Inf(), clients=(0, 1))], strategy=FedAvg())
    record = sim.run_round()
    assert bool(torch.isfinite(sim.global_params).all())
    (result,) = record.attack_results
    assert result["filtered"] == ["client-0", "client-1"]
    assert "dropped 2 of their rows as non-finite" in result["description"]
    assert result["severity"] is None  # inf is not JSON


def test_inf_without_the_filter_makes_the_model_non_finite() -> None:
    sim = _quadratic([AttackSpec(Inf(), clients=(0,))], strategy=FedAvg(nonfinite="propagate"))
    record = sim.run_round()
    assert not bool(torch.isfinite(sim.global_params).all())
    assert record.attack_results[0]["filtered"] == []


def test_sybil_identities_join_the_round() -> None:
    sim = _quadratic([AttackSpec(SybilNodes(count=3, scale=1.0))], strategy=FedMedian())
    record = sim.run_round()
    assert len(record.participated) == 11
    assert record.participated[-3:] == ("sybil-0", "sybil-1", "sybil-2")
    assert record.bytes_up == 11 * serialized_size(sim.spec, sim.global_params)
    assert record.bytes_down == 8 * serialized_size(sim.spec, sim.global_params)
    assert record.attack_results[0]["clients_affected"] == 3
    assert record.aggregation["n"] == 11
    assert sim.results[-1].attack_results[0]["attack_type"] == "sybil_nodes"


def test_attacks_are_deterministic_and_survive_checkpoints() -> None:
    def run() -> tuple[torch.Tensor, RoundEngine]:
        sim = _quadratic([AttackSpec(Empire(), fraction=0.25), AttackSpec(SybilNodes(count=2))])
        sim.run(3)
        return sim.global_params.clone(), sim

    a, sim = run()
    b, _ = run()
    assert torch.equal(a, b)
    tensors, meta = sim.state()
    other = _quadratic([AttackSpec(Empire(), fraction=0.25), AttackSpec(SybilNodes(count=2))])
    other.restore(tensors, meta)
    assert [r.to_dict() for r in other.results] == [r.to_dict() for r in sim.results]
    # and the restored engine goes on drawing the same attacks
    sim.run(1)
    other.run(1)
    assert torch.equal(other.global_params, sim.global_params)
    assert other.results[-1].to_dict() | {"duration_s": 0} == sim.results[-1].to_dict() | {
        "duration_s": 0
    }


# ------------------------------------------------------------------- data attacks on images
def _image_sim(
    specs: list[AttackSpec], seed: int = 0
) -> tuple[RoundEngine, Trainer, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(120, 1, 8, 8, generator=gen)
    y = torch.arange(120) % 4
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    trainer = Trainer(model, TrainConfig(batch_size=10, local_epochs=1, lr=0.1))
    offsets = torch.arange(0, 121, 20)
    population = ClientPopulation(torch.arange(120), offsets)
    spec = trainer.spec
    sim = build_engine(
        base=SequentialClients(trainer, x, y, population, seed=seed, num_classes=4),
        spec=spec,
        init_params=spec.flatten(model.state_dict()),
        strategy=FedAvg(),
        settings=SimulationSettings(seed=seed),
        evaluate=lambda p: trainer.evaluate(p, x, y),
        attacks=AttackPlan(num_clients=6, seed=seed, index_of=client_index, specs=specs),
        backdoor_evaluate=lambda p, attack: float(
            trainer.evaluate(p, attack.apply_trigger(x), torch.full_like(y, attack.target))[1]
        ),
    )
    return sim, trainer, x, y


def test_label_flipping_client_trains_on_flipped_labels() -> None:
    attack = LabelFlipping(rate=1.0)
    sim, trainer, x, y = _image_sim([AttackSpec(attack, clients=(2,))])
    start = sim.global_params.clone()
    idx = sim.sampler.population.indices(2)  # type: ignore[attr-defined]
    xp, yp = attack.poison(
        x[idx], y[idx], num_classes=4, generator=torch_generator(0, 1, 2, "poison")
    )
    assert torch.equal(yp, reverse_labels(y[idx], 4))
    expected = torch.zeros(sim.spec.d)
    trainer.train(
        start, xp, yp, torch.arange(20), generator=torch_generator(0, 1, 2, "train"), out=expected
    )
    spy = _Spy(sim.provider)
    sim.provider = spy
    record = sim.run_round()
    row = spy.updates["client-2"].delta
    assert row is not None
    torch.testing.assert_close(row, expected)
    # honest 0, 1, 3, 4, 5 first, then the adversary
    assert record.participated == (
        "client-0",
        "client-1",
        "client-3",
        "client-4",
        "client-5",
        "client-2",
    )
    # the adversary reports no training loss: the round's loss is the honest clients' mean
    honest = [spy.updates[c] for c in record.participated[:5]]
    assert spy.updates["client-2"].loss is None
    assert record.train_loss == pytest.approx(
        sum(u.loss * u.num_samples for u in honest if u.loss is not None)
        / sum(u.num_samples for u in honest)
    )
    assert "client-2" not in record.client_accuracy


def test_backdoor_reports_its_success_rate() -> None:
    sim, *_ = _image_sim([AttackSpec(Backdoor(target=1, poison_fraction=1.0), clients=(0, 1))])
    record = sim.run_round()
    (result,) = record.attack_results
    rate = result["metrics"]["backdoor_success_rate"]
    assert 0.0 <= rate <= 1.0
    assert "backdoor success rate" in result["description"]


# ------------------------------------------------------------------- VelocityServer
def _server(name: str) -> VelocityServer:
    return VelocityServer(
        "toy",
        "none",
        FedAvg(),
        storage=f"memory://attack-rounds-{name}",
        layer_shapes={"w": 4},
        num_clients=10,
    )


def test_simulate_attack_queues_for_the_next_round_only() -> None:
    server = _server("queue")
    server.run(min_clients=10, rounds=1)
    server.simulate_attack("model_poisoning", intensity=5.0, fraction=0.2)
    rounds = server.run(min_clients=10, rounds=2)
    first, second = (r["attack_results"] for r in rounds)
    assert second == []
    (result,) = first
    assert result["attack_type"] == "model_poisoning"
    assert result["clients_affected"] == 2
    assert result["severity"] == 5.0
    assert server.history[1]["attack_results"] == first
    server.simulate_attack("sybil_nodes", count=4)
    (r,) = server.run(min_clients=10, rounds=1)
    assert r["num_clients"] == 14
    assert r["attack_results"][0]["clients_affected"] == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attack_type": "nope"}, "valid attacks: model_poisoning, sybil_nodes"),
        ({"attack_type": "empire", "intensity": 2.0}, "empire has no intensity"),
        ({"attack_type": "empire", "count": 3}, "count is the number of sybil_nodes"),
        ({"attack_type": "gaussian_noise", "intensity": -1.0}, "GaussianNoise.sigma must be"),
        ({"attack_type": "model_poisoning", "fraction": 0.0}, "fraction must be in (0, 1]"),
        ({"attack_type": "label_flipping"}, "poisons training data"),
        ({"attack_type": "little", "params": {"q": 1}}, "valid parameters of little: f, N, z"),
        ({"attack_type": "empire", "params": {"type": "inf"}}, "must not hold 'type'"),
        ({"attack_type": "empire", "params": "ab"}, "params must be a mapping"),
        ({"attack_type": "sybil_nodes", "params": {"count": 5}}, "as count="),
        ({"attack_type": "sybil_nodes", "count": True}, "count must be an int >= 1"),
    ],
)
def test_simulate_attack_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=None) as info:
        _server("errors").simulate_attack(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_gaussian_noise_intensity_is_the_noise_scale() -> None:
    server = _server("noise")
    server.simulate_attack("gaussian_noise", intensity=0.5, fraction=1.0)
    (r,) = server.run(min_clients=10, rounds=1)
    assert r["attack_results"][0]["severity"] == 0.5
    assert r["attack_results"][0]["clients_affected"] == 10
    assert math.isfinite(r["global_loss"])


def test_little_counts_every_adversary_of_the_round() -> None:
    """f in z_max is the round's adversarial rows, not only this attack's (review finding)."""
    from velocity.attacks import Little

    sim = _quadratic(
        [
            AttackSpec(Little(), clients=(0,)),
            AttackSpec(Little(), clients=(1,)),
            AttackSpec(Little(), clients=(2,)),
        ],
        n=10,
    )
    record = sim.run_round()
    z = Little.z_max(3, 10)
    assert [r["severity"] for r in record.attack_results] == [pytest.approx(z)] * 3


def test_queued_attacks_draw_the_same_after_a_resume() -> None:
    def server(name: str, *, resume: bool = False) -> VelocityServer:
        return VelocityServer(
            "toy",
            "none",
            FedAvg(),
            storage=f"memory://attack-rounds-{name}",
            layer_shapes={"w": 4},
            num_clients=10,
            resume=resume,
        )

    a = server("resume-a")
    a.simulate_attack("model_poisoning", intensity=3.0, fraction=0.2)
    a.run(min_clients=10, rounds=1)
    a.simulate_attack("model_poisoning", intensity=3.0, fraction=0.2)
    (second,) = a.run(min_clients=10, rounds=1)

    b = server("resume-b")
    b.simulate_attack("model_poisoning", intensity=3.0, fraction=0.2)
    b.run(min_clients=10, rounds=1)
    with pytest.raises(ConfigurationError, match="pass resume=True"):
        server("resume-b")
    b2 = server("resume-b", resume=True)  # a new process resuming from b's checkpoint
    assert b2.engine.round == 1
    b2.simulate_attack("model_poisoning", intensity=3.0, fraction=0.2)
    (resumed,) = b2.run(min_clients=10, rounds=1)
    assert resumed["attack_results"] == second["attack_results"]
    assert resumed["global_loss"] == second["global_loss"]


def test_a_failing_queued_attack_is_dropped() -> None:
    from velocity.errors import ValidationError

    server = _server("failing")
    server.simulate_attack("mimic", params={"epsilon": 50}, fraction=0.2)
    with pytest.raises(ValidationError, match="epsilon=50"):
        server.run(min_clients=10, rounds=1)
    (r,) = server.run(min_clients=10, rounds=1)
    assert r["attack_results"] == []
