"""Tests for the ``velocity`` command line (run in-process through ``main``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from velocity import cli
from velocity.errors import ConfigurationError, ValidationError
from velocity.strategies import describe_strategies


def test_strategies_table_lists_every_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["strategies"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    for entry in describe_strategies():
        assert entry["name"] in out
    for kind in ("aggregator", "pre-aggregator", "server-optimizer"):
        assert kind in out
    assert "f, neighbors='n-f-2'" in out  # Krum's parameters: required f, default neighbors
    assert "mu=0.01" in out


def test_strategies_json_is_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["strategies", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == json.loads(json.dumps(describe_strategies()))
    assert {"name", "kind", "parameters", "summary"} <= set(listed[0])


BACKEND_NAMES = ("sequential", "loopback", "out_of_order", "vectorized", "auto", "ray")


def test_backends_table_names_every_backend(capsys: pytest.CaptureFixture[str]) -> None:
    from velocity.sim.backends import BACKENDS

    assert cli.main(["backends"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert set(BACKENDS) == set(BACKEND_NAMES)
    for name in BACKEND_NAMES:
        assert name in out
    assert "safetensors" in out  # loopback's description


def test_backends_json_is_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    from velocity.sim.backends import BACKENDS

    assert cli.main(["backends", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in listed] == list(BACKENDS) == list(BACKEND_NAMES)
    for row in listed:
        assert set(row) == {"name", "description"}
        assert row["description"] == BACKENDS[row["name"]].description


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("velocity ")
    assert cli.main(["-v", "version"]) == 0
    verbose = capsys.readouterr().out
    assert "torch " in verbose
    assert "python " in verbose


def test_version_flag_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    import velocity

    assert cli.main(["--version"]) == cli.EXIT_OK
    assert capsys.readouterr().out == f"velocityfl {velocity.__version__}\n"
    # a global option: accepted after a command too (before its required options)
    assert cli.main(["run", "--version"]) == cli.EXIT_OK
    assert capsys.readouterr().out == f"velocityfl {velocity.__version__}\n"


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["run", "--config", "x.yaml"], False),
        (["-v", "run", "--config", "x.yaml"], True),
        (["run", "--config", "x.yaml", "-v"], True),
        (["run", "--verbose", "--config", "x.yaml"], True),
        (["bench", "robustness", "--config", "g.yaml", "-v"], True),
        (["bench", "-v", "robustness", "--config", "g.yaml"], True),
        (["--verbose", "bench", "robustness", "--config", "g.yaml"], True),
        (["strategies", "--json", "-v"], True),
        (["version"], False),
    ],
)
def test_global_options_before_or_after_the_command(argv: list[str], verbose: bool) -> None:
    args = cli.build_parser().parse_args(argv)
    assert args.verbose is verbose


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_after_the_command_shows_the_traceback(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.yaml")
    run = ["run", "--config", missing]
    assert cli.main(["-v", *run] if where == "before" else [*run, "-v"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.endswith(f"velocity: configuration error: configuration file not found: {missing}\n")
    assert cli.main(run) == cli.EXIT_CONFIG
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [[], ["no-such-command"], ["strategies", "--no-such-flag"], ["--bogus"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == cli.EXIT_CONFIG == 2
    assert "usage: velocity" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "strategies" in out
    assert "Exit codes" in out


def _raise(error: Exception) -> None:
    raise error


def test_configuration_error_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import velocity.strategies

    monkeypatch.setattr(
        velocity.strategies,
        "describe_strategies",
        lambda: _raise(ConfigurationError("unknown strategy type 'Nope'")),
    )
    assert cli.main(["strategies"]) == 2
    err = capsys.readouterr().err
    assert err == "velocity: configuration error: unknown strategy type 'Nope'\n"
    # with -v the traceback comes too
    assert cli.main(["-v", "strategies"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.endswith("velocity: configuration error: unknown strategy type 'Nope'\n")


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (ValidationError("bad data"), "velocity: error: bad data"),
        (RuntimeError("boom"), "velocity: error: RuntimeError: boom"),
    ],
)
def test_runtime_errors_exit_1(
    error: Exception,
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import velocity.strategies

    monkeypatch.setattr(velocity.strategies, "describe_strategies", lambda: _raise(error))
    assert cli.main(["strategies"]) == cli.EXIT_ERROR == 1
    err = capsys.readouterr().err
    assert err.startswith(line)
    assert "Traceback" not in err
    assert err.count("\n") == 1
