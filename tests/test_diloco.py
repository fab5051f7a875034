"""DiLoCo (Douillard et al. 2023): the outer step against ``torch.optim.SGD`` (Nesterov) on the
pseudo-gradient, heavy ball against FedAvgM, the sign convention through the round engine,
parsing and YAML, checkpointed outer and inner state, and the benchmark's smoke test."""

from __future__ import annotations

import ast
import importlib.util
import json
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
import yaml

from velocity import cli
from velocity.client import TrainConfig
from velocity.errors import ConfigurationError
from velocity.experiments import parse_config
from velocity.experiments.runner import build_simulation, run_experiment
from velocity.server.builder import make_simulation
from velocity.sim.settings import SimulationSettings
from velocity.strategies import (
    SERVER_OPTIMIZERS,
    DiLoCo,
    FedAvg,
    FedAvgM,
    Pipeline,
    describe_strategies,
    parse_strategy,
    to_dict,
)

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ the outer step


@pytest.mark.parametrize(
    ("lr", "momentum"), [(0.7, 0.9), (0.3, 0.5), (1.0, 0.0), (2.5, 0.99)], ids=str
)
@pytest.mark.parametrize("nesterov", [True, False])
def test_step_is_torch_sgd_on_the_pseudo_gradient(
    lr: float, momentum: float, nesterov: bool
) -> None:
    gen = torch.Generator().manual_seed(7)
    start = torch.randn(9, generator=gen, dtype=torch.float64)
    deltas = [torch.randn(9, generator=gen, dtype=torch.float64) for _ in range(6)]
    reference = torch.nn.Parameter(start.clone())
    # torch refuses Nesterov without momentum; with β = 0 both variants are plain SGD
    sgd = torch.optim.SGD([reference], lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    outer = DiLoCo(lr=lr, momentum=momentum, nesterov=nesterov)
    params, state = start, None
    for delta in deltas:
        reference.grad = -delta  # the pseudo-gradient: old − new
        sgd.step()
        params, state = outer.step(params, delta, state)
        torch.testing.assert_close(params, reference.detach(), rtol=1e-12, atol=1e-12)
        if momentum:
            buffer = sgd.state[reference]["momentum_buffer"]
            torch.testing.assert_close(state["m"], -buffer, rtol=1e-12, atol=1e-12)
    assert set(state) == {"m"}


def test_heavy_ball_is_fedavgm_exactly() -> None:
    gen = torch.Generator().manual_seed(1)
    ours, theirs = torch.randn(5, generator=gen), None
    mine_state = None
    fedavgm_params = ours.clone()
    for _ in range(5):
        delta = torch.randn(5, generator=gen)
        ours, mine_state = DiLoCo(lr=0.4, momentum=0.8, nesterov=False).step(
            ours, delta, mine_state
        )
        fedavgm_params, theirs = FedAvgM(lr=0.4, momentum=0.8).step(fedavgm_params, delta, theirs)
        assert torch.equal(ours, fedavgm_params)
        assert torch.equal(mine_state["m"], theirs["m"])


def test_nesterov_looks_ahead_and_the_sign_is_downhill() -> None:
    # The aggregate is new − old: a step follows it; the first Nesterov step is lr·(1+β)·Δ.
    delta = torch.tensor([1.0, -2.0])
    params, state = DiLoCo(lr=0.5, momentum=0.5).step(torch.zeros(2), delta, None)
    assert params.tolist() == [0.75, -1.5]
    params, state = DiLoCo(lr=0.5, momentum=0.5).step(params, delta, state)
    # m = 0.5·Δ + Δ = 1.5Δ; step = 0.5·(Δ + 0.5·1.5Δ) = 0.875Δ
    assert params.tolist() == [1.625, -3.25]
    assert state["m"].tolist() == [1.5, -3.0]
    plain, _ = DiLoCo(lr=1.0, momentum=0.0).step(torch.zeros(2), delta, None)
    assert torch.equal(plain, delta)  # outer lr 1, no momentum: FedAvg


def test_step_leaves_its_inputs_alone() -> None:
    params, delta = torch.ones(3), torch.full((3,), 0.5)
    state = {"m": torch.full((3,), 2.0)}
    DiLoCo().step(params, delta, state)
    assert params.tolist() == [1.0] * 3
    assert delta.tolist() == [0.5] * 3
    assert state["m"].tolist() == [2.0] * 3


def test_defaults_are_the_papers() -> None:
    assert DiLoCo() == DiLoCo(lr=0.7, momentum=0.9, nesterov=True)
    assert DiLoCo in SERVER_OPTIMIZERS
    with pytest.raises(ConfigurationError, match=r"DiLoCo\.momentum must be"):
        DiLoCo(momentum=1.0)
    with pytest.raises(ConfigurationError, match=r"DiLoCo\.nesterov must be true or false"):
        DiLoCo(nesterov=1)  # type: ignore[arg-type]


# ------------------------------------------------------------------ parsing


def test_parse_and_to_dict() -> None:
    assert parse_strategy(["FedAvg", "DiLoCo"]) == Pipeline(FedAvg(), DiLoCo())
    spec = {"type": "Pipeline", "stages": ["fedavg", {"type": "diloco", "lr": 0.5}]}
    strategy = parse_strategy(spec)
    assert strategy.server_optimizer == DiLoCo(lr=0.5)
    assert to_dict(DiLoCo()) == {"type": "DiLoCo", "lr": 0.7, "momentum": 0.9, "nesterov": True}
    assert parse_strategy(to_dict(strategy)) == strategy


def test_a_bare_diloco_is_refused_with_a_pipeline_that_works() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_strategy("DiLoCo")
    message = str(info.value)
    assert "DiLoCo is a server-optimizer, not an aggregator" in message
    suggested = message.split("e.g. ", 1)[1]
    # the suggestion puts the server optimizer after the aggregator, where a Pipeline takes it
    assert parse_strategy(ast.literal_eval(suggested)) == Pipeline(FedAvg(), DiLoCo())


def test_listed_for_the_cli() -> None:
    entry = next(d for d in describe_strategies() if d["name"] == "DiLoCo")
    assert entry["kind"] == "server-optimizer"
    assert [(p["name"], p["default"]) for p in entry["parameters"]] == [
        ("lr", 0.7),
        ("momentum", 0.9),
        ("nesterov", True),
    ]


# ------------------------------------------------------------------ through the round engine


def _federation(strategy: Pipeline, config: TrainConfig, seed: int = 5):  # type: ignore[no-untyped-def]
    return make_simulation(
        dataset="synthetic",
        model_id="logreg",
        strategy=strategy,
        num_clients=4,
        settings=SimulationSettings(seed=seed, client_fraction=1.0),
        train_config=config,
        partitioning="iid",
    )


def test_the_engine_steps_on_the_mean_delta() -> None:
    """The server step receives the weighted mean of the clients' ``new − old``: replaying
    the recurrence on the engine's own aggregates reproduces its parameters every round."""
    outer = DiLoCo(lr=0.7, momentum=0.9)
    config = TrainConfig(batch_size=8, local_steps=5, lr=0.01, optimizer="adamw")
    engine = _federation(Pipeline(FedAvg(), outer), config).engine
    params = engine.global_params.clone()
    m = torch.zeros_like(params)
    for _ in range(3):
        result = engine.run_round()
        delta = engine.last_aggregate
        assert delta is not None
        assert result.aggregation["server_optimizer"] == "DiLoCo"
        m = 0.9 * m + delta
        params = params + 0.7 * (delta + 0.9 * m)
        torch.testing.assert_close(engine.global_params, params, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(engine.stage_state("server_step")["m"], m)


def _yaml(keep: bool, **client: object) -> dict[str, object]:
    return {
        "name": "diloco-ckpt",
        "seed": 3,
        "dataset": "synthetic",
        "model_id": "logreg",
        "strategy": ["FedAvg", {"type": "DiLoCo", "lr": 0.7, "momentum": 0.9}],
        "training": {"num_rounds": 4, "num_clients": 4, "client_fraction": 1.0},
        "client": {
            "batch_size": 8,
            "local_steps": 5,
            "lr": 0.01,
            "optimizer": "adamw",
            "weight_decay": 0.1,
            "keep_optimizer_state": keep,
            **client,
        },
        "output": {"save_plots": False, "checkpoint_every": 1},
    }


class _Stop(Exception):
    pass


def _stop_after(n: int):  # type: ignore[no-untyped-def]
    def on_round(result: object) -> None:
        if result.round == n:  # type: ignore[attr-defined]
            raise _Stop

    return on_round


def test_yaml_run_resumes_with_outer_momentum_and_inner_adamw_state(tmp_path: Path) -> None:
    config = parse_config(_yaml(keep=True))
    federation = build_simulation(config, seed=3)
    assert federation.engine.strategy == Pipeline(FedAvg(), DiLoCo())
    straight = run_experiment(config, output_dir=tmp_path / "straight")
    with pytest.raises(_Stop):
        run_experiment(config, output_dir=tmp_path / "resumed", on_round=_stop_after(2))
    resumed = run_experiment(config, output_dir=tmp_path / "resumed", resume=True)
    # Both the server's momentum and every client's AdamW moments came back from the
    # checkpoint: the resumed run ends on the very same model.
    assert resumed.final_model_digest == straight.final_model_digest
    reset = run_experiment(parse_config(_yaml(keep=False)), output_dir=tmp_path / "reset")
    assert reset.final_model_digest != straight.final_model_digest


def test_inner_state_lives_in_the_engines_client_store() -> None:
    config = TrainConfig(
        batch_size=8, local_steps=3, lr=0.01, optimizer="adamw", keep_optimizer_state=True
    )
    engine = _federation(Pipeline(FedAvg(), DiLoCo()), config).engine
    engine.run(2)
    store = engine.client_state
    assert store.count("optimizer-adamw") == 4
    state = store.get(store.clients()[0], "optimizer-adamw")
    assert set(state) == {
        f"linear.{p}.{k}" for p in ("weight", "bias") for k in ("step", "exp_avg", "exp_avg_sq")
    }
    assert float(state["linear.weight.step"]) == 6.0  # 3 inner steps in each of 2 rounds


# ------------------------------------------------------------------ the shipped config, by the CLI


def test_velocity_run_of_the_shipped_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``velocity run --config configs/diloco_shakespeare.yaml``, shortened (2 rounds of 2
    inner steps) and on a small play in the Shakespeare layout."""
    data = yaml.safe_load((ROOT / "configs" / "diloco_shakespeare.yaml").read_text())
    data["data_dir"] = str(_fake_works(tmp_path / "data"))
    data["training"].update(num_rounds=2, eval_every=1)
    data["client"].update(local_steps=2, batch_size=4)
    data["output"]["save_plots"] = False
    path = tmp_path / "diloco.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    code = cli.main(["run", "--config", str(path), "--output-dir", str(tmp_path / "out")])
    assert code == cli.EXIT_OK, capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "diloco_shakespeare" / "summary.json").read_text())
    assert summary["rounds"] == 2
    assert summary["model"] == "char-transformer"
    assert summary["strategy"]["stages"][1]["type"] == "DiLoCo"


# ------------------------------------------------------------------ the benchmark


def _fake_works(root: Path) -> Path:
    """A small play in the Gutenberg layout ``load_dataset("shakespeare")`` parses."""
    rng = random.Random(0)
    words = ["thou", "art", "my", "lord", "good", "morrow", "sweet", "fair", "night", "love"]
    lines = ["A FAKE PLAY", "", "by William Shakespeare", "", "Dramatis Personae", ""]
    for speech in range(160):
        role = ("ANNE", "BOB", "CLEO")[speech % 3]
        text = " ".join(rng.choice(words) for _ in range(9)).capitalize() + "."
        lines.append(f"  {role}. {text}")
        lines.append("    " + " ".join(rng.choice(words) for _ in range(8)) + ".")
    (root / "shakespeare").mkdir(parents=True)
    (root / "shakespeare" / "100.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _benchmark(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    path = ROOT / "benchmarks" / "diloco.py"
    spec = importlib.util.spec_from_file_location("diloco_benchmark", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_benchmark_quick_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = _benchmark(monkeypatch)
    data = _fake_works(tmp_path / "data")
    plot, out = tmp_path / "curves.png", tmp_path / "all.json"
    argv = ["--quick", "--data-dir", str(data), "--plot", str(plot), "--json", str(out)]
    assert bench.main([*argv, "--also-reset"]) == 0
    text = capsys.readouterr().out
    assert "| sync |" in text
    assert "| DiLoCo |" in text
    assert "| DiLoCo-reset |" in text
    assert "final DiLoCo / sync = " in text
    assert plot.stat().st_size > 1000
    payload = json.loads(out.read_text())
    names = [c["name"] for c in payload["curves"]]
    assert names == ["sync", "DiLoCo", "DiLoCo-reset"]
    sync, diloco = payload["curves"][:2]
    assert sync["windows"] == diloco["windows"]  # the same data budget
    assert diloco["comms"][-1] * 3 == sync["comms"][-1]  # H = 3 in --quick


def test_benchmark_sync_arm_sees_the_workers_batches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one inner SGD step, outer lr 1 and no momentum, DiLoCo is synchronous SGD: the
    engine's run and the reference loop agree, so they see the very same batches."""
    bench = _benchmark(monkeypatch)
    data = _fake_works(tmp_path / "data")
    out = tmp_path / "all.json"
    argv = [
        "--quick",
        "--data-dir",
        str(data),
        "--json",
        str(out),
        "--train-windows",
        "2000",  # 4 equal shards: FedAvg's sample weights are equal
        "--rounds",
        "3",
        "--inner-steps",
        "1",
        "--inner-optimizer",
        "sgd",
        "--inner-lr",
        "0.5",
        "--weight-decay",
        "0",
        "--outer-lr",
        "1",
        "--outer-momentum",
        "0",
    ]
    assert bench.main(argv) == 0
    capsys.readouterr()
    sync, diloco = json.loads(out.read_text())["curves"]
    assert len(sync["loss"]) == 4
    assert sync["loss"][0] == diloco["loss"][0]  # the same initial model
    assert sync["loss"][-1] != sync["loss"][0]
    torch.testing.assert_close(
        torch.tensor(diloco["loss"]), torch.tensor(sync["loss"]), rtol=1e-5, atol=1e-5
    )
