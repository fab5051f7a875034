"""``velocity fedtrain run`` and ``velocity fedtrain verify`` (in-process through ``main``)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from velocity import __version__, cli

CONFIG: dict[str, Any] = {
    "model_name": "my-model-v1",
    "learning_rate": 0.001,
    "batch_size": 32,
    "local_steps": 10,
    "global_rounds": 5,
    "num_nodes": 3,
}
UPDATE: dict[str, Any] = {
    "node_id": "node-000",
    "round_id": 1,
    "gradients": {"weight": [0.1, -0.2, 0.05, 0.03], "bias": [0.01]},
    "loss": 0.852341,
    "samples_used": 128,
}
DIGEST = hashlib.sha256(json.dumps(UPDATE["gradients"], sort_keys=True).encode()).hexdigest()

SUMMARY = re.compile(
    r"Starting federated training: (?P<model>\S+)  nodes=(?P<nodes>\d+)  rounds=(?P<rounds>\d+)\n"
    r"\n"
    r"Training complete\.\n"
    r"  Rounds completed:  (?P<done>\d+)/(?P<planned>\d+)\n"
    r"  Total samples:     (?P<total>\d+)\n"
    r"  Final avg loss:    (?P<loss>\d+\.\d{6})\n"
    r"  Duration:          \d+\.\d{3}s\n"
    r"\n"
    r"Node credits \(samples processed\):\n"
    r"(?P<credits>(?:  node-\d{3}: \d+ samples\n)+)\Z"
)


def write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fedtrain_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str, config: object = CONFIG
) -> re.Match[str]:
    path = write(tmp_path, "train.json", config)
    code, out, err = run_cli(capsys, "fedtrain", "run", "--config", str(path), *extra)
    assert code == cli.EXIT_OK, err
    match = SUMMARY.fullmatch(out)
    assert match is not None, out
    return match


def numbers(match: re.Match[str]) -> tuple[str, ...]:
    """Every printed number except the duration."""
    return tuple(match.group(k) for k in ("nodes", "rounds", "done", "total", "loss", "credits"))


# ---------------------------------------------------------------------- run


def test_run_prints_the_summary_and_credits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    match = fedtrain_run(tmp_path, capsys, "--nodes", "3")
    assert match["model"] == "my-model-v1"
    assert (match["nodes"], match["rounds"], match["done"], match["planned"]) == (
        "3",
        "5",
        "5",
        "5",
    )
    assert float(match["loss"]) < 0.5
    credits = re.findall(r"  (node-\d{3}): (\d+) samples", match["credits"])
    assert [c[0] for c in credits] == ["node-000", "node-001", "node-002"]
    assert sum(int(c[1]) for c in credits) == int(match["total"])
    assert all(int(c[1]) == 5 * 10 * 32 for c in credits)


def test_run_is_deterministic_for_a_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = numbers(fedtrain_run(tmp_path, capsys, "--seed", "7"))
    again = numbers(fedtrain_run(tmp_path, capsys, "--seed", "7"))
    other = numbers(fedtrain_run(tmp_path, capsys, "--seed", "8"))
    default = numbers(fedtrain_run(tmp_path, capsys))
    zero = numbers(fedtrain_run(tmp_path, capsys, "--seed", "0"))
    assert first == again
    assert first[4] != other[4]  # the final loss
    assert default == zero


def test_run_reports_the_final_loss_of_the_library(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from velocity.fedtrain import DiLoCoCoordinator, SimulatedNodes, TrainingConfig

    match = fedtrain_run(tmp_path, capsys, "--seed", "3")
    config = TrainingConfig.model_validate(CONFIG)
    sim = SimulatedNodes(config, seed=3)
    result = DiLoCoCoordinator().run_training(config, sim.nodes, sim)
    assert match["loss"] == f"{result.final_loss:.6f}"
    assert int(match["total"]) == result.total_samples


def test_nodes_overrides_num_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    match = fedtrain_run(tmp_path, capsys, "--nodes", "5")
    assert match["nodes"] == "5"
    assert len(re.findall("node-", match["credits"])) == 5
    match = fedtrain_run(tmp_path, capsys, config={**CONFIG, "num_nodes": 2, "global_rounds": 2})
    assert (match["nodes"], match["done"], match["planned"]) == ("2", "2", "2")


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({**CONFIG, "learning_rate": 0}, "  learning_rate: Input should be greater than 0"),
        ({**CONFIG, "batch_sise": 3}, "  batch_sise: Extra inputs are not permitted"),
        ("{not json", "  (file): Invalid JSON"),
        ([1, 2], "  (file): Input should be an object"),
    ],
)
def test_run_bad_config_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: object, problem: str
) -> None:
    path = write(tmp_path, "train.json", config)
    code, out, err = run_cli(capsys, "fedtrain", "run", "--config", str(path))
    assert code == cli.EXIT_CONFIG
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith(
        f"velocity: configuration error: invalid training configuration {path}"
    )
    assert any(line.startswith(problem) for line in lines[1:]), err


def test_run_bad_nodes_and_missing_file_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "train.json", CONFIG)
    code, out, err = run_cli(capsys, "fedtrain", "run", "--config", str(path), "--nodes", "0")
    assert code == cli.EXIT_CONFIG
    assert out == ""
    assert "argument --nodes: must be an int >= 1; got 0" in err
    code, _, err = run_cli(capsys, "fedtrain", "run", "--config", str(path), "--nodes", "x")
    assert code == cli.EXIT_CONFIG
    assert "argument --nodes: must be an int >= 1; got 'x'" in err
    code, _, err = run_cli(capsys, "fedtrain", "run", "--config", str(path), "--nodes", "2000")
    assert code == cli.EXIT_CONFIG
    assert "at most 1024 nodes" in err
    missing = tmp_path / "nope.json"
    code, _out, err = run_cli(capsys, "fedtrain", "run", "--config", str(missing))
    assert code == cli.EXIT_CONFIG
    assert f"cannot read the training configuration {missing}" in err
    code, _, _ = run_cli(capsys, "fedtrain", "run")  # argparse: --config is required
    assert code == cli.EXIT_CONFIG


# ---------------------------------------------------------------------- verify


def test_verify_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "update.json", UPDATE)
    code, out, _ = run_cli(capsys, "fedtrain", "verify", "--update", str(path), "--hash", DIGEST)
    assert code == cli.EXIT_OK
    assert out == f"Verification PASSED.  Hash: {DIGEST}\n"
    code, out, _ = run_cli(
        capsys, "fedtrain", "verify", "--update", str(path), "--hash", DIGEST.upper()
    )
    assert code == cli.EXIT_OK
    assert out == f"Verification PASSED.  Hash: {DIGEST}\n"


def test_verify_fails_with_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tampered = {**UPDATE, "gradients": {**UPDATE["gradients"], "bias": [0.011]}}
    path = write(tmp_path, "update.json", tampered)
    code, out, _ = run_cli(capsys, "fedtrain", "verify", "--update", str(path), "--hash", DIGEST)
    assert code == cli.EXIT_ERROR
    computed = hashlib.sha256(
        json.dumps(tampered["gradients"], sort_keys=True).encode()
    ).hexdigest()
    assert out.startswith("Verification FAILED. ")
    assert f"Expected: {DIGEST}" in out
    assert f"Computed: {computed}" in out
    assert "node-000, round 1" in out


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{", "(file): Invalid JSON"),
        (json.dumps({**UPDATE, "loss": "high"}), "loss: Input should be a valid number"),
        (
            json.dumps({k: v for k, v in UPDATE.items() if k != "samples_used"}),
            "samples_used: Field required",
        ),
        (
            json.dumps(UPDATE).replace("0.01]", "NaN]"),
            "gradients.bias.0: Input should be a finite number",
        ),
    ],
)
def test_verify_malformed_update_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, problem: str
) -> None:
    path = write(tmp_path, "update.json", content)
    code, out, err = run_cli(capsys, "fedtrain", "verify", "--update", str(path), "--hash", DIGEST)
    assert code == cli.EXIT_CONFIG
    assert out == ""
    assert err.startswith(f"velocity: configuration error: invalid update file {path}")
    assert f"  {problem}" in err


def test_readers_bound_the_file_and_name_the_problem(tmp_path: Path) -> None:
    from velocity.errors import ConfigurationError
    from velocity.fedtrain import MAX_FILE_BYTES, read_config, read_update

    assert MAX_FILE_BYTES == 64 * 2**20
    path = write(tmp_path, "update.json", UPDATE)
    assert read_update(path).samples_used == 128
    with pytest.raises(ConfigurationError, match="larger than 10 bytes"):
        read_update(path, max_bytes=10)
    assert read_config(write(tmp_path, "train.json", CONFIG)).num_nodes == 3
    with pytest.raises(ConfigurationError, match=r"\(2 problems\):\nnode_id: .*\nloss: "):
        read_update(write(tmp_path, "bad.json", {**UPDATE, "node_id": "", "loss": None}))


def test_verify_a_real_oversized_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from velocity.fedtrain import MAX_FILE_BYTES

    path = tmp_path / "big.json"
    with path.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk or memory cost
    code, _, err = run_cli(capsys, "fedtrain", "verify", "--update", str(path), "--hash", DIGEST)
    assert code == cli.EXIT_CONFIG
    assert f"is larger than {MAX_FILE_BYTES} bytes (64 MiB)" in err


@pytest.mark.parametrize("digest", ["abc", "z" * 64, DIGEST + "0", ""])
def test_verify_malformed_hash_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], digest: str
) -> None:
    path = write(tmp_path, "update.json", UPDATE)
    code, _out, err = run_cli(capsys, "fedtrain", "verify", "--update", str(path), "--hash", digest)
    assert code == cli.EXIT_CONFIG
    assert "--hash must be a SHA-256 digest (64 hex digits)" in err


def test_verify_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none.json"
    code, _, err = run_cli(capsys, "fedtrain", "verify", "--update", str(missing), "--hash", DIGEST)
    assert code == cli.EXIT_CONFIG
    assert f"cannot read the update file {missing}" in err


# ---------------------------------------------------------------------- the group, --version


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--version")
    assert code == cli.EXIT_OK
    assert out == f"velocityfl {__version__}\n"
    code, out, _ = run_cli(capsys, "fedtrain", "--version")
    assert code == cli.EXIT_OK
    assert out == f"velocityfl {__version__}\n"


def test_fedtrain_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "fedtrain")
    assert code == cli.EXIT_CONFIG
    assert "ACTION" in err
    code, out, _ = run_cli(capsys, "fedtrain", "--help")
    assert code == cli.EXIT_OK
    assert "run" in out
    assert "verify" in out
