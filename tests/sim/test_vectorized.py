"""VectorizedClients against SequentialClients: the same updates, rounds and refusals."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from velocity.attacks import AttackSpec, parse_attack
from velocity.client import TrainConfig, Trainer
from velocity.errors import ConfigurationError
from velocity.server import build_engine
from velocity.sim import ClientPopulation, SequentialClients, SimulationSettings
from velocity.sim.vectorized import (
    VectorizedClients,
    can_vectorize,
    chunk_clients_for,
    vectorized_from,
)
from velocity.strategies import FedAvg, FedProx, QFedAvg
from velocity.types import ClientTask, ClientUpdate, TaskConfig, tensor_digest

ATOL = 1e-5
SIZES = (7, 23, 15, 40, 1, 12, 30, 9)
"""Unequal client sizes: a one-example client, sizes below, at and above the batch size."""


def _data() -> tuple[torch.Tensor, torch.Tensor, ClientPopulation]:
    gen = torch.Generator().manual_seed(0)
    total = sum(SIZES) + 20
    x = torch.randn(total, 12, generator=gen)
    y = torch.randint(0, 4, (total,), generator=gen)
    order = torch.randperm(total, generator=gen)[: sum(SIZES)]
    offsets = torch.tensor([0, *torch.tensor(SIZES).cumsum(0).tolist()])
    return x, y, ClientPopulation(order, offsets)


def _logreg() -> nn.Module:
    torch.manual_seed(1)
    return nn.Linear(12, 4)


def _mlp() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 4))


MODELS: dict[str, Callable[[], nn.Module]] = {"logreg": _logreg, "mlp": _mlp}

CONFIGS: dict[str, tuple[TrainConfig, TaskConfig]] = {
    "sgd": (TrainConfig(batch_size=5, lr=0.1), TaskConfig()),
    "momentum": (TrainConfig(batch_size=5, lr=0.05, momentum=0.9), TaskConfig()),
    "weight_decay": (TrainConfig(batch_size=4, lr=0.1, weight_decay=0.05), TaskConfig()),
    "fedprox": (TrainConfig(batch_size=5, lr=0.1, momentum=0.5), TaskConfig(prox_mu=0.3)),
    "epochs": (TrainConfig(batch_size=6, lr=0.05, local_epochs=3), TaskConfig()),
    "steps": (TrainConfig(batch_size=5, lr=0.1, weight_decay=0.01), TaskConfig(local_steps=7)),
    "task_lr_initial_loss": (
        TrainConfig(batch_size=8, lr=0.1, momentum=0.9),
        TaskConfig(lr=0.02, options={"initial_loss": True}),
    ),
    # DP-SGD: a small clip so most examples are clipped, noise, Poisson batches of all sizes
    "dp_sgd": (
        TrainConfig(batch_size=5, lr=0.1, dp_clip=0.5, dp_noise_multiplier=1.1),
        TaskConfig(),
    ),
    "dp_sgd_momentum_steps": (
        TrainConfig(batch_size=4, lr=0.05, momentum=0.9, dp_clip=0.3, dp_noise_multiplier=0.7),
        TaskConfig(local_steps=6),
    ),
    "dp_sgd_no_noise_prox_decay": (
        TrainConfig(batch_size=6, lr=0.1, weight_decay=0.01, dp_clip=2.0, local_epochs=2),
        TaskConfig(prox_mu=0.2, options={"initial_loss": True}),
    ),
}


def _round(
    cls: type[SequentialClients],
    model: Callable[[], nn.Module],
    config: TrainConfig,
    task_config: TaskConfig,
    *,
    clients: Sequence[int] = tuple(range(len(SIZES))),
    **kw: object,
) -> list[ClientUpdate]:
    x, y, pop = _data()
    m = model()
    trainer = Trainer(m, config)
    params = trainer.spec.flatten(m.state_dict())
    provider = cls(trainer, x, y, pop, seed=5, **kw)  # type: ignore[arg-type]
    provider.submit([ClientTask(pop.client_id(i), 2, 1, params, task_config) for i in clients])
    results = provider.collect()
    assert all(isinstance(r, ClientUpdate) for r in results)
    return results  # type: ignore[return-value]


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_updates_equal_sequential_clients(model: str, case: str) -> None:
    config, task_config = CONFIGS[case]
    expected = _round(SequentialClients, MODELS[model], config, task_config)
    got = _round(VectorizedClients, MODELS[model], config, task_config, chunk_clients=3)
    assert [u.client_id for u in got] == [u.client_id for u in expected]
    for want, have in zip(expected, got, strict=True):
        assert want.delta is not None
        assert have.delta is not None
        assert float(want.delta.abs().max()) > 1e-4  # the client really trained
        torch.testing.assert_close(have.delta, want.delta, atol=ATOL, rtol=0)
        assert have.num_samples == want.num_samples
        assert want.loss is not None
        assert have.loss == pytest.approx(want.loss, abs=1e-5)
        assert have.metrics.keys() == want.metrics.keys()
        for key, value in want.metrics.items():
            assert have.metrics[key] == pytest.approx(value, abs=1e-5), key
        assert have.digest == tensor_digest(have.delta)


def test_chunk_size_does_not_change_results_and_runs_repeat_bit_for_bit() -> None:
    config, task_config = CONFIGS["fedprox"]
    runs = [
        _round(VectorizedClients, _mlp, config, task_config, chunk_clients=c)
        for c in (1, 3, len(SIZES), 100, 3)
    ]
    reference = runs[0]
    for run in runs[1:]:
        assert [u.digest for u in run] == [u.digest for u in reference]
        assert [u.loss for u in run] == [u.loss for u in reference]
        assert [dict(u.metrics) for u in run] == [dict(u.metrics) for u in reference]


def test_a_clients_update_does_not_depend_on_its_company() -> None:
    config, task_config = CONFIGS["steps"]
    alone = _round(VectorizedClients, _mlp, config, task_config, clients=[3])
    crowd = _round(VectorizedClients, _mlp, config, task_config, clients=[0, 3, 4, 6])
    assert alone[0].digest == crowd[1].digest


def _engine(
    cls: type[SequentialClients],
    model: Callable[[], nn.Module],
    config: TrainConfig,
    strategy: object,
    *,
    attacks: Sequence[AttackSpec] = (),
    **kw: object,
) -> object:
    x, y, pop = _data()
    m = model()
    trainer = Trainer(m, config)
    spec = trainer.spec
    base = cls(trainer, x, y, pop, seed=7, num_classes=4, **kw)  # type: ignore[arg-type]
    return build_engine(
        base=base,
        spec=spec,
        init_params=spec.flatten(m.state_dict()),
        strategy=strategy,  # type: ignore[arg-type]
        settings=SimulationSettings(seed=7, client_fraction=0.75, dropout_rate=0.1),
        evaluate=lambda p: (float(p.abs().sum()), float("nan")),
        attacks=attacks,
    )


@pytest.mark.parametrize(
    ("strategy", "attacks"),
    [
        (FedAvg(), ()),
        (FedProx(mu=0.2), ()),
        (QFedAvg(q=1.0), ()),
        (FedAvg(), [AttackSpec(parse_attack("label_flip"), fraction=0.25)]),
    ],
    ids=["fedavg", "fedprox", "qfedavg", "label_flip"],
)
def test_engine_rounds_give_the_sequential_model(
    strategy: object, attacks: Sequence[AttackSpec]
) -> None:
    config = TrainConfig(batch_size=5, lr=0.05, momentum=0.9)
    seq = _engine(SequentialClients, _mlp, config, strategy, attacks=attacks)
    vec = _engine(VectorizedClients, _mlp, config, strategy, attacks=attacks, chunk_clients=2)
    want = seq.run(3)  # type: ignore[attr-defined]
    got = vec.run(3)  # type: ignore[attr-defined]
    assert [r.participated for r in got] == [r.participated for r in want]
    torch.testing.assert_close(
        vec.global_params,  # type: ignore[attr-defined]
        seq.global_params,  # type: ignore[attr-defined]
        atol=ATOL,
        rtol=0,
    )
    init = Trainer(_mlp(), config).spec.flatten(_mlp().state_dict())
    assert float((seq.global_params - init).abs().max()) > 1e-3  # type: ignore[attr-defined]


def test_vectorized_from_takes_over_the_configured_population() -> None:
    x, y, pop = _data()
    m = _logreg()
    trainer = Trainer(m, TrainConfig(batch_size=5, lr=0.1))
    seq = SequentialClients(trainer, x, y, pop, seed=5, dropout_rate=0.5)
    vec = vectorized_from(seq, chunk_clients=4)
    assert isinstance(vec, VectorizedClients)
    assert vec.chunk_clients == 4
    assert vec.dropout is seq.dropout
    assert vec.seed == seq.seed
    assert vec.trainer is trainer
    with pytest.raises(TypeError, match="chunk"):
        vectorized_from(seq, chunk=4)  # type: ignore[call-arg]


class _BN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn(self.fc(x))
        return out


def _frozen() -> nn.Module:
    m = nn.Linear(3, 2)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


REFUSED: dict[str, tuple[Callable[[], nn.Module], TrainConfig, str]] = {
    "adamw": (_logreg, TrainConfig(optimizer="adamw", lr=1e-3), "optimizer 'adamw'"),
    "kept_state": (_logreg, TrainConfig(keep_optimizer_state=True), "keep_optimizer_state"),
    "batchnorm": (_BN, TrainConfig(), "'bn' \\(BatchNorm1d\\)"),
    "dropout": (lambda: nn.Sequential(nn.Linear(12, 4), nn.Dropout(0.5)), TrainConfig(), "Dropout"),
    "lstm": (lambda: nn.LSTM(4, 8), TrainConfig(), "LSTM"),
    "no_params": (_frozen, TrainConfig(), "no trainable parameters"),
    "float64": (lambda: nn.Linear(3, 2).double(), TrainConfig(), "torch.float64"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_can_vectorize_refuses_with_a_reason(case: str) -> None:
    model, config, reason = REFUSED[case]
    ok, why = can_vectorize(model(), config)
    assert not ok
    assert re.search(reason, why), why
    if case != "float64":  # the Trainer's flat layout has no float64
        x, y, pop = _data()
        with pytest.raises(ConfigurationError, match="VectorizedClients cannot train"):
            VectorizedClients(Trainer(model(), config), x, y, pop, seed=0)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_can_vectorize_accepts_sgd_models(model: str) -> None:
    ok, why = can_vectorize(MODELS[model](), TrainConfig(momentum=0.9, weight_decay=0.1))
    assert ok
    assert why
    assert can_vectorize(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.0)), TrainConfig())[0]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_chunk_clients_is_refused(bad: object) -> None:
    x, y, pop = _data()
    with pytest.raises(ConfigurationError, match="chunk_clients"):
        VectorizedClients(Trainer(_logreg(), TrainConfig()), x, y, pop, seed=0, chunk_clients=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -5.0, float("inf"), "64"])
def test_bad_memory_budget_is_refused(bad: object) -> None:
    x, y, pop = _data()
    with pytest.raises(ConfigurationError, match="memory_mb"):
        VectorizedClients(Trainer(_logreg(), TrainConfig()), x, y, pop, seed=0, memory_mb=bad)  # type: ignore[arg-type]


def test_default_chunk_follows_the_memory_budget() -> None:
    small = chunk_clients_for(_mlp(), 10, 0.01)
    assert small == 1
    big = chunk_clients_for(_mlp(), 10, 64)
    bigger = chunk_clients_for(_mlp(), 10, 128)
    assert 1 <= big <= bigger
    x, y, pop = _data()
    vec = VectorizedClients(
        Trainer(_mlp(), TrainConfig(batch_size=10)), x, y, pop, seed=0, memory_mb=0.01
    )
    assert vec.chunk_clients == 1


_BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "vectorized.py"
_DATA = os.environ.get("VELOCITY_DATA")


@pytest.mark.skipif(
    not _DATA or not (Path(_DATA) / "mnist").exists(), reason="needs MNIST in $VELOCITY_DATA"
)
def test_benchmark_quick_mode_runs() -> None:
    spec = importlib.util.spec_from_file_location("bench_vectorized", _BENCH)
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--quick", "--models", "logreg"])
    (row,) = results
    assert row["model"] == "logreg"
    assert row["clients"] == 50
    assert row["clients_ratio"] > 0
    assert row["engine_ratio"] > 0
    assert row["clients_max_abs_diff"] < ATOL
    assert row["engine_max_abs_diff"] < ATOL


# ---------------------------------------------------------------------- the backend registry


def _yaml(backend: dict[str, object], **client: object) -> dict[str, object]:
    return {
        "name": "vec",
        "dataset": "synthetic",
        "model_id": "logreg",
        "seed": 4,
        "training": {"num_rounds": 3, "num_clients": 12, "client_fraction": 0.5},
        "client": {"batch_size": 8, "local_steps": 3, "lr": 0.1, **client},
        "simulation": {"partitioning": "natural"},
        "backend": backend,
    }


def test_yaml_backends_vectorized_and_auto_match_sequential(tmp_path: Any) -> None:
    from velocity.experiments import parse_config
    from velocity.experiments.runner import build_simulation
    from velocity.sim.vectorized import VectorizedClients

    finals = {}
    for kind in ("sequential", "vectorized", "auto"):
        federation = build_simulation(parse_config(_yaml({"type": kind})), seed=4)
        chosen = any(isinstance(p, VectorizedClients) for p in _providers(federation.engine))
        assert chosen == (kind != "sequential"), kind
        federation.engine.run(3)
        finals[kind] = federation.engine.global_params
    assert torch.allclose(finals["vectorized"], finals["sequential"], atol=1e-5)
    assert torch.equal(finals["auto"], finals["vectorized"])


def test_dp_sgd_in_example_blocks_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    # A budget so small that every example is its own block: the clipped sums accumulate
    # over blocks to what the Trainer computes.
    from velocity.sim import vectorized

    config, task_config = CONFIGS["dp_sgd_momentum_steps"]
    expected = _round(SequentialClients, _mlp, config, task_config)
    monkeypatch.setattr(vectorized, "CHUNK_BYTES", 1)
    got = _round(VectorizedClients, _mlp, config, task_config, chunk_clients=4)
    for want, have in zip(expected, got, strict=True):
        assert want.delta is not None
        assert have.delta is not None
        torch.testing.assert_close(have.delta, want.delta, atol=ATOL, rtol=0)
        assert have.metrics["dp_clipped_fraction"] == pytest.approx(
            want.metrics["dp_clipped_fraction"]
        )


def test_yaml_dp_sgd_runs_vectorized_with_the_sequential_model() -> None:
    from velocity.experiments import parse_config
    from velocity.experiments.runner import build_simulation
    from velocity.sim.vectorized import VectorizedClients

    finals = {}
    for kind in ("sequential", "auto"):
        raw = _yaml({"type": kind})
        raw["privacy"] = {
            "enabled": True,
            "mode": "dp_sgd",
            "epsilon": 8.0,
            "delta": 1e-5,
            "max_grad_norm": 0.5,
        }
        federation = build_simulation(parse_config(raw), seed=4)
        chosen = any(isinstance(p, VectorizedClients) for p in _providers(federation.engine))
        assert chosen == (kind == "auto")
        federation.engine.run(3)
        finals[kind] = federation.engine.global_params
    assert torch.allclose(finals["auto"], finals["sequential"], atol=1e-5)


def test_auto_falls_back_with_the_reason_logged(caplog: Any) -> None:
    import logging

    from velocity.experiments import parse_config
    from velocity.experiments.runner import build_simulation
    from velocity.sim.vectorized import VectorizedClients

    with caplog.at_level(logging.INFO, logger="velocity.sim"):
        federation = build_simulation(
            parse_config(_yaml({"type": "auto"}, optimizer="adamw")), seed=4
        )
    assert not any(isinstance(p, VectorizedClients) for p in _providers(federation.engine))
    assert "not vectorized" in caplog.text
    with pytest.raises(ConfigurationError, match=r"adamw|AdamW|optimizer"):
        build_simulation(parse_config(_yaml({"type": "vectorized"}, optimizer="adamw")), seed=4)


def _providers(engine: Any) -> list[object]:
    out, seen = [], engine.provider
    while seen is not None and seen not in out:
        out.append(seen)
        seen = getattr(seen, "base", None)
    return out


def test_velocity_server_takes_the_vectorized_backend(tmp_path: Any) -> None:
    from velocity import VelocityServer

    finals = []
    for backend in ("sequential", "vectorized"):
        server = VelocityServer(
            "logreg",
            "synthetic",
            "FedAvg",
            storage=f"local://{tmp_path / backend}",
            num_clients=8,
            seed=3,
            partitioning="natural",
            client_fraction=0.5,
            train_config=TrainConfig(batch_size=8, local_steps=2, lr=0.1),
            backend=backend,
        )
        server.run(rounds=2)
        finals.append(server.engine.global_params)
    assert torch.allclose(finals[0], finals[1], atol=1e-5)
