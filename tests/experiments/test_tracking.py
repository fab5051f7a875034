"""Experiment tracking (``velocity.experiments.tracking``): the ``tracking`` section, and what
TensorBoard and MLflow read back after a real (tiny) run.

The library tests read the logs with the libraries' own readers (TensorBoard's
``EventAccumulator``, ``MlflowClient``) and skip when the library is not installed
(``pip install 'velocityfl[tracking]'``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from velocity.errors import ConfigurationError
from velocity.experiments import ExperimentConfig, InvalidConfigError, RunResult, parse_config
from velocity.experiments.config import TrackingConfig
from velocity.experiments.runner import run_experiment
from velocity.experiments.tracking import (
    METRICS,
    flatten_params,
    round_metrics,
    tracking_dir,
)
from velocity.types import RoundResult

_HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
_HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None

needs_tensorboard = pytest.mark.skipif(not _HAS_TENSORBOARD, reason="tensorboard not installed")
needs_mlflow = pytest.mark.skipif(not _HAS_MLFLOW, reason="mlflow not installed")


def _config(tmp_path: Path, **tracking: Any) -> ExperimentConfig:
    return parse_config(
        {
            "name": "tracked",
            "dataset": "synthetic",
            "model_id": "logreg",
            "seed": 3,
            "training": {"num_rounds": 2, "num_clients": 6, "client_fraction": 0.5},
            "client": {"local_steps": 2, "batch_size": 16},
            "simulation": {"partitioning": "natural"},
            "output": {"dir": str(tmp_path / "outputs"), "save_plots": False},
            "tracking": tracking,
        }
    )


def _expected(result: RunResult, name: str) -> list[tuple[int, float]]:
    """``(round, value)`` for every round where the metric was measured."""
    return [
        (r.round, metrics[name]) for r in result.rounds if name in (metrics := round_metrics(r))
    ]


# ---------------------------------------------------------------------- the section


def test_section_defaults_and_resolved() -> None:
    config = parse_config({"name": "t", "dataset": "mnist"})
    assert config.tracking == TrackingConfig()
    assert config.resolved()["tracking"] == {"tensorboard": False, "mlflow": False, "dir": None}
    assert list(config.resolved())[-1] == "tracking"
    assert tracking_dir(config, Path("out/t")) == Path("out/t/tracking")
    other = config.with_updates({"tracking.dir": "~/tb"})
    assert tracking_dir(other, Path("out/t")) == Path("~/tb").expanduser()


def test_section_is_strict() -> None:
    base = {"name": "t", "dataset": "mnist"}
    with pytest.raises(InvalidConfigError) as info:
        parse_config({**base, "tracking": {"tensorbord": True, "mlflow": "yes", "dir": ""}})
    problems = info.value.problems
    assert any(
        p.startswith("tracking.tensorbord: unknown key; accepted keys of tracking: ")
        and "(did you mean 'tensorboard'?)" in p
        for p in problems
    ), problems
    assert "tracking.mlflow: must be true or false; got 'yes'" in problems
    assert any(p.startswith("tracking.dir: must not be empty") for p in problems), problems


def test_tracking_is_not_part_of_the_trajectory() -> None:
    """Turning tracking on changes the config hash (it is configuration) but not the
    trajectory hash checkpoints carry: a run can be resumed with tracking switched on."""
    plain = parse_config({"name": "t", "dataset": "mnist"})
    tracked = plain.with_updates({"tracking.tensorboard": True, "tracking.dir": "/tmp/x"})
    assert tracked.config_hash() != plain.config_hash()
    assert tracked.trajectory_hash() == plain.trajectory_hash()


def test_round_metrics_and_flatten_params() -> None:
    result = RoundResult(
        round=3,
        selected_client_ids=("a", "b", "c"),
        participated=("a", "b"),
        global_loss=None,
        global_accuracy=None,
        train_loss=0.5,
        bytes_up=10,
        bytes_down=15,
        duration_s=0.25,
    )
    assert round_metrics(result) == {
        "train_loss": 0.5,
        "num_clients": 2.0,
        "num_selected": 3.0,
        "bytes_up": 10.0,
        "bytes_down": 15.0,
        "duration_s": 0.25,
    }
    assert set(round_metrics(result)) <= set(METRICS)
    flat = flatten_params(
        {"a": {"b": 1, "c": {"d": None}}, "s": "x", "e": {}, "l": [{"type": "x"}], "t": True}
    )
    assert flat == {
        "a.b": "1",
        "a.c.d": "null",
        "s": "x",
        "e": "{}",
        "l": '[{"type": "x"}]',
        "t": "true",
    }


def test_missing_library_is_refused_before_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, tensorboard=True)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    with pytest.raises(ConfigurationError, match=r"velocityfl\[tracking\]") as info:
        run_experiment(config)
    assert "'tensorboard'" in str(info.value)
    assert not (tmp_path / "outputs").exists()

    config = _config(tmp_path, mlflow=True)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ConfigurationError, match=r"MLflow logging needs the 'mlflow' package"):
        run_experiment(config)
    assert not (tmp_path / "outputs").exists()


# ---------------------------------------------------------------------- TensorBoard


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


@needs_tensorboard
def test_tensorboard_scalars_are_the_round_results(tmp_path: Path) -> None:
    config = _config(tmp_path, tensorboard=True)
    result = run_experiment(config)
    log_dir = config.run_dir() / "tracking" / "tensorboard" / "tracked"
    assert list(log_dir.glob("events.out.tfevents.*"))
    scalars = _scalars(log_dir)
    assert set(scalars) == set(METRICS)  # every round was evaluated (eval_every 1)
    for name in METRICS:
        expected = _expected(result, name)
        assert [step for step, _ in expected] == [1, 2], name
        # TensorBoard scalars are float32: compare with the values rounded to float32
        assert scalars[name] == [(step, float(np.float32(value))) for step, value in expected]
    accuracy = [r.global_accuracy for r in result.rounds]
    assert [value for _, value in scalars["global_accuracy"]] == pytest.approx(accuracy)
    assert not (config.run_dir() / "tracking" / "mlruns").exists()


@needs_tensorboard
def test_tensorboard_rerun_replaces_the_earlier_run(tmp_path: Path) -> None:
    """A fresh run into the same directory purges the earlier run's steps (purge_step=1):
    TensorBoard shows one value per round, the latest run's."""
    config = _config(tmp_path, tensorboard=True, dir=str(tmp_path / "shared"))
    run_experiment(config)
    second = run_experiment(config)
    log_dir = tmp_path / "shared" / "tensorboard" / "tracked"
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 2
    scalars = _scalars(log_dir)
    durations = [(step, float(np.float32(v))) for step, v in _expected(second, "duration_s")]
    assert scalars["duration_s"] == durations
    assert [step for step, _ in scalars["global_loss"]] == [1, 2]


# ---------------------------------------------------------------------- MLflow


@needs_mlflow
def test_mlflow_run_holds_the_config_and_the_round_results(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    config = _config(tmp_path, mlflow=True)
    result = run_experiment(config)
    store = config.run_dir() / "tracking" / "mlruns"
    uri = store.resolve().as_uri()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tracked"
    history = client.get_metric_history(run.info.run_id, "global_accuracy")
    assert [(m.step, m.value) for m in history] == _expected(result, "global_accuracy")
    assert [m.value for m in history] == [r.global_accuracy for r in result.rounds]
    for name in METRICS:
        got = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]
        assert got == _expected(result, name), name
    params = run.data.params
    assert params == flatten_params(config.resolved())
    assert params["training.num_rounds"] == "2"
    assert params["strategy.type"] == "FedAvg"
    assert params["dataset"] == "synthetic"
    assert params["tracking.mlflow"] == "true"
    assert run.data.tags["velocity.config_hash"] == result.config_hash
    assert run.data.tags["velocity.seed"] == "3"
    assert not (config.run_dir() / "tracking" / "tensorboard").exists()


@needs_mlflow
@needs_tensorboard
def test_both_loggers_and_a_failed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both on: each gets every round; a run that fails mid-way ends its MLflow run FAILED."""
    from mlflow.tracking import MlflowClient

    from velocity.server.engine import RoundEngine

    config = _config(tmp_path, tensorboard=True, mlflow=True)
    real = RoundEngine.run_round

    def failing(self: RoundEngine) -> RoundResult:
        if self.round >= 1:
            raise RuntimeError("boom in round 2")
        return real(self)

    monkeypatch.setattr(RoundEngine, "run_round", failing)
    with pytest.raises(RuntimeError, match="boom"):
        run_experiment(config)
    client = MlflowClient(tracking_uri=(config.run_dir() / "tracking" / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1]
    log_dir = config.run_dir() / "tracking" / "tensorboard" / "tracked"
    assert [step for step, _ in _scalars(log_dir)["train_loss"]] == [1]


@needs_mlflow
@needs_tensorboard
def test_resume_continues_the_tensorboard_series_and_opens_a_new_mlflow_run(
    tmp_path: Path,
) -> None:
    from mlflow.tracking import MlflowClient

    config = _config(tmp_path, tensorboard=True, mlflow=True).with_updates(
        {"output.checkpoint_every": 1}
    )
    first = run_experiment(config)
    resumed = run_experiment(config, rounds=3, resume=True)
    assert [r.round for r in resumed.rounds] == [1, 2, 3]
    log_dir = config.run_dir() / "tracking" / "tensorboard" / "tracked"
    scalars = _scalars(log_dir)
    expected = [(s, float(np.float32(v))) for s, v in _expected(resumed, "global_accuracy")]
    assert scalars["global_accuracy"] == expected
    assert scalars["global_accuracy"][:2] == [
        (s, float(np.float32(v))) for s, v in _expected(first, "global_accuracy")
    ]
    client = MlflowClient(tracking_uri=(config.run_dir() / "tracking" / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"])
    assert [run.data.tags["velocity.start_round"] for run in runs] == ["0", "2"]
    steps = [
        [m.step for m in client.get_metric_history(run.info.run_id, "global_accuracy")]
        for run in runs
    ]
    assert steps == [[1, 2], [3]]
