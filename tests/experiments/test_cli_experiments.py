"""``velocity validate-config`` and ``velocity run`` (with a fake runner module)."""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from velocity import cli
from velocity.experiments import ExperimentConfig, RoundResult, RunResult, write_outputs

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MakeResult = Callable[..., RunResult]


# ---------------------------------------------------------------------- validate-config


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_validate_shipped_configs(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate-config", str(path)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert re.fullmatch(rf"valid: {path.stem} \([0-9a-f]{{12}}\)\n", out), out


def _config(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_validate_reports_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(
        tmp_path,
        "name: x\ndataset: mnist\ntraining:\n  client_fraction: 1.5\n  num_round: 3\n"
        "client:\n  lr: 0\n",
    )
    assert cli.main(["validate-config", str(path)]) == cli.EXIT_CONFIG
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0] == f"velocity: configuration error: invalid configuration {path} (3 problems):"
    assert lines[1] == "  training.client_fraction: must be > 0 and <= 1; got 1.5"
    assert lines[2].startswith("  training.num_round: unknown key; accepted keys of training: ")
    assert lines[3] == "  client.lr: must be > 0; got 0"
    assert len(lines) == 4


def test_validate_one_problem_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, "name: x\ndataset: mnist\nprivacy:\n  enabled: true\n  mode: bogus\n")
    assert cli.main(["validate-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"velocity: configuration error: {path}: privacy.mode: must be one of 'central', "
        "'local', 'dp_sgd'; got 'bogus'\n"
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (None, "configuration file not found"),
        ("name: [x\n", "invalid YAML"),
        ("", "the file is empty"),
    ],
)
def test_validate_file_problems_exit_2(
    text: str | None, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "missing.yaml" if text is None else _config(tmp_path, text)
    assert cli.main(["validate-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("velocity: configuration error: ")
    assert fragment in err


def test_validate_without_path_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate-config"]) == 2
    assert "usage: velocity validate-config" in capsys.readouterr().err


def test_help_lists_new_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("run", "validate-config", "strategies", "backends", "version", "130"):
        assert word in out


# ---------------------------------------------------------------------- run


class FakeRunner:
    """Stands in for ``velocity.experiments.runner`` until the real one exists."""

    def __init__(self, make_result: MakeResult, error: BaseException | None = None) -> None:
        self.make_result = make_result
        self.error = error
        self.calls: list[tuple[ExperimentConfig, Path]] = []
        self.records: list[RoundResult] = []
        self.resumed: list[bool] = []

    def run_experiment(
        self,
        config: ExperimentConfig,
        *,
        output_dir: Path,
        on_round: Callable[[RoundResult], None] | None = None,
        resume: bool = False,
    ) -> RunResult:
        self.calls.append((config, output_dir))
        self.resumed.append(resume)
        if self.error is not None:
            raise self.error

        def both(record: RoundResult) -> None:
            self.records.append(record)
            if on_round is not None:
                on_round(record)

        result = self.make_result(config, num_clients=config.training.num_clients, on_round=both)
        write_outputs(
            result,
            output_dir,
            save_plots=config.output.save_plots,
            save_metrics=config.output.save_metrics,
        )
        return result


@pytest.fixture
def fake_runner(make_result: MakeResult, monkeypatch: pytest.MonkeyPatch) -> FakeRunner:
    runner = FakeRunner(make_result)
    module = types.ModuleType("velocity.experiments.runner")
    module.run_experiment = runner.run_experiment  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "velocity.experiments.runner", module)
    return runner


def _small_config(tmp_path: Path, **extra: Any) -> Path:
    lines = [
        "name: tiny",
        "dataset: mnist",
        "training:",
        "  num_rounds: 4",
        "  num_clients: 6",
        "  eval_every: 2",
        "output:",
        f"  dir: {tmp_path / 'default_out'}",
        "  save_plots: false",
    ]
    return _config(tmp_path, "\n".join(lines) + "\n", name="tiny.yaml")


def test_run_resume_flag_reaches_the_runner(fake_runner: FakeRunner, tmp_path: Path) -> None:
    path = _small_config(tmp_path)
    assert cli.main(["run", "--config", str(path), "--no-progress"]) == cli.EXIT_OK
    assert cli.main(["run", "--config", str(path), "--no-progress", "--resume"]) == cli.EXIT_OK
    assert fake_runner.resumed == [False, True]


def test_run_with_overrides(
    fake_runner: FakeRunner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _small_config(tmp_path)
    out_root = tmp_path / "elsewhere"
    argv = ["run", "--config", str(path), "--output-dir", str(out_root), "--rounds", "3"]
    code = cli.main([*argv, "--seed", "7", "--no-progress"])
    captured = capsys.readouterr()
    assert code == cli.EXIT_OK, captured.err
    ((config, output_dir),) = fake_runner.calls
    assert config.training.num_rounds == 3
    assert config.seed == 7
    assert output_dir == out_root / "tiny"
    assert config.run_dir() == output_dir
    assert [r.round for r in fake_runner.records] == [1, 2, 3]
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["rounds"] == 3
    assert summary["config_hash"] == config.config_hash()
    assert not (output_dir / "plots").exists()  # output.save_plots: false
    assert "final accuracy" in captured.out
    assert str(output_dir) in captured.out
    assert config.config_hash()[:12] in captured.out
    assert captured.err == ""


def test_run_verbose_without_progress_prints_rounds(
    fake_runner: FakeRunner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _small_config(tmp_path)
    assert cli.main(["-v", "run", "--config", str(path), "--no-progress"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4
    assert err[0].startswith("round 1/4 accuracy - (")
    assert err[1].startswith("round 2/4 accuracy ")
    assert "%" in err[1]


def test_run_with_progress_bar(
    fake_runner: FakeRunner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _small_config(tmp_path)
    assert cli.main(["run", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert len(fake_runner.records) == 4
    assert "4/4" in captured.err  # the bar's final state
    assert "accuracy" in captured.err
    assert "final accuracy" in captured.out
    assert (tmp_path / "default_out" / "tiny" / "report.html").is_file()


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        (
            ["--rounds", "0"],
            "velocity: configuration error: overrides: training.num_rounds: must be >= 1; got 0",
        ),
        (["--seed", "-3"], "velocity: configuration error: overrides: seed: must be >= 0"),
    ],
)
def test_run_bad_override_exits_2(
    extra: list[str],
    line: str,
    fake_runner: FakeRunner,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = _small_config(tmp_path)
    assert cli.main(["run", "--config", str(path), *extra]) == 2
    assert capsys.readouterr().err.startswith(line)
    assert fake_runner.calls == []


def test_run_bad_config_exits_2_without_running(
    fake_runner: FakeRunner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, "name: x\ndataset: mnist\nclient:\n  lr: -1\n")
    assert cli.main(["run", "--config", str(path)]) == 2
    assert "client.lr: must be > 0; got -1" in capsys.readouterr().err
    assert fake_runner.calls == []


def test_run_needs_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run"]) == 2
    assert "--config" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "code", "fragment"),
    [
        (RuntimeError("disk full"), 1, "velocity: error: RuntimeError: disk full"),
        (KeyboardInterrupt(), 130, "velocity: interrupted"),
    ],
)
def test_run_failures(
    error: BaseException,
    code: int,
    fragment: str,
    fake_runner: FakeRunner,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_runner.error = error
    path = _small_config(tmp_path)
    assert cli.main(["run", "--config", str(path)]) == code
    assert fragment in capsys.readouterr().err
