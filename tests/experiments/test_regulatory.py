"""Compliance scenarios: an auditor's questions, each answered from a run's output files alone.

Every test reads only what a governed run left on disk (``governance/*.json*``, summary.json,
metrics.json, the model file) with plain ``json`` and ``hashlib`` — never the objects the run
held in memory — and the ``velocity audit`` / ``velocity replay`` commands.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from velocity import cli
from velocity.experiments import ExperimentConfig, parse_config
from velocity.experiments.runner import run_experiment
from velocity.governance import generate_signing_key

ROUNDS = 4


def _config(out: Path, key: Path, **extra: Any) -> ExperimentConfig:
    data: dict[str, Any] = {
        "name": "audited",
        "dataset": "synthetic",
        "model_id": "logreg",
        "seed": 11,
        "training": {"num_rounds": ROUNDS, "num_clients": 8, "client_fraction": 0.5},
        "client": {"local_steps": 3, "batch_size": 16, "lr": 0.1},
        "simulation": {"partitioning": "natural", "dropout_rate": 0.2},
        "governance": {"enabled": True, "sign": True, "signing_key": str(key)},
        "output": {"dir": str(out), "save_plots": False, "save_model": True},
    }
    data.update(extra)
    return parse_config(data)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("keys") / "org.pem"
    return path, generate_signing_key(path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, str]) -> Path:
    out = tmp_path_factory.mktemp("runs")
    run_experiment(_config(out, keys[0]))
    return out / "audited"


@pytest.fixture(scope="module")
def byzantine_dir(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, str]) -> Path:
    out = tmp_path_factory.mktemp("byz")
    config = _config(
        out,
        keys[0],
        strategy={"type": "MultiKrum", "f": 1},
        attacks=[{"type": "model_poisoning", "boost": 10.0, "clients": ["client-1"]}],
        training={"num_rounds": 3, "num_clients": 8, "client_fraction": 1.0},
        simulation={"partitioning": "natural", "dropout_rate": 0.0},
    )
    run_experiment(config)
    return out / "audited"


@pytest.fixture
def copy_of(tmp_path: Path) -> Any:
    def make(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return make


def _events(run: Path) -> list[dict[str, Any]]:
    lines = (run / "governance" / "audit_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _round_events(run: Path) -> dict[int, dict[str, Any]]:
    """The latest event of every round (a resumed run supersedes earlier ones)."""
    out: dict[int, dict[str, Any]] = {}
    for event in _events(run):
        if event["kind"] == "round":
            out[event["round"]] = event["data"]
    return out


def _verify(run: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["audit", "verify", str(run), *extra])
    return code, capsys.readouterr().out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------- the questions


def test_q01_which_clients_contributed_to_model_version_x(run_dir: Path) -> None:
    rounds = _round_events(run_dir)
    assert sorted(rounds) == list(range(1, ROUNDS + 1))
    metrics = json.loads((run_dir / "metrics.json").read_text())["rounds"]
    for record in metrics:
        event = rounds[record["round"]]
        # Model version r is the model after round r: its contributors are that round's rows.
        assert event["participated"] == record["participated"]
        assert sorted(event["updates"]) == sorted(record["participated"])


def test_q02_was_client_y_included_in_round_r(run_dir: Path) -> None:
    for r, event in _round_events(run_dir).items():
        for cid in event["selected"]:
            included = cid in event["updates"]
            failed = {f["client_id"] for f in event["failures"]}
            assert included != (cid in failed), (r, cid)  # exactly one answer, never both
            if included:
                assert len(event["updates"][cid]["digest"]) == 64


def test_q03_was_the_log_altered(
    run_dir: Path, copy_of: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _verify(run_dir, capsys=capsys)[0] == cli.EXIT_OK
    tampered = copy_of(run_dir)
    log = tampered / "governance" / "audit_log.jsonl"
    lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
    event = json.loads(lines[2])
    event["data"]["participated"] = event["data"]["participated"][:-1]  # hide a contributor
    lines[2] = json.dumps(event, sort_keys=True, separators=(",", ":")) + "\n"
    log.write_text("".join(lines), encoding="utf-8")
    code, out = _verify(tampered, capsys=capsys)
    assert code == cli.EXIT_ERROR
    assert "first broken event: 2" in out


def test_q04_does_the_run_reproduce(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = run_dir / "governance" / "replay_manifest.json"
    code = cli.main(["replay", str(manifest), "--output-dir", str(tmp_path / "again")])
    out = capsys.readouterr().out
    assert code == cli.EXIT_OK, out
    assert f"identical: all {ROUNDS + 1} links" in out
    assert out.count("identical") >= ROUNDS + 1


def test_q05_which_privacy_budget_was_spent(run_dir: Path) -> None:
    manifest = json.loads((run_dir / "governance" / "replay_manifest.json").read_text())
    assert manifest["features"]["privacy"] is False
    # No DP: no epsilon is claimed for any round (never a made-up number).
    assert all(event["epsilon"] is None for event in _round_events(run_dir).values())


def test_q06_which_clients_were_excluded_as_byzantine_and_by_which_rule(
    byzantine_dir: Path,
) -> None:
    rounds = _round_events(byzantine_dir)
    for event in rounds.values():
        assert event["strategy"]["rule"] == "MultiKrum"
        excluded = event["strategy"]["excluded_clients"]
        assert isinstance(excluded, list)
        assert "client-1" in excluded  # the boosted poisoner is left out every round
        attacked = {c for a in event["attacks"] for c in a["client_ids"]}
        assert attacked == {"client-1"}
    summary = json.loads((byzantine_dir / "summary.json").read_text())
    assert summary["credits"]["clients"]["client-1"]["excluded_updates"] == len(rounds)


def test_q07_erase_a_clients_personal_record_and_the_chain_stays_verifiable(
    run_dir: Path, copy_of: Any, keys: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of(run_dir)
    clients = run / "governance" / "clients.json"
    before = json.loads(clients.read_text())
    assert before["client-3"]["record"]["label_histogram"]
    code = cli.main(
        [
            "audit",
            "erase",
            str(run),
            "--client",
            "client-3",
            "--reason",
            "GDPR art. 17 request #42",
            "--signing-key",
            str(keys[0]),
        ]
    )
    assert code == cli.EXIT_OK, capsys.readouterr()
    after = json.loads(clients.read_text())
    assert after["client-3"] == {"erased": True}
    assert "label_histogram" not in json.dumps(after["client-3"])
    code, out = _verify(run, "--public-key", keys[1], "--require-signature", capsys=capsys)
    assert code == cli.EXIT_OK, out
    erasures = [e for e in _events(run) if e["kind"] == "erasure"]
    assert [e["data"]["client_id"] for e in erasures] == ["client-3"]


def test_q08_who_was_asked_but_did_not_contribute_and_why(run_dir: Path) -> None:
    reasons = {f["reason"] for event in _round_events(run_dir).values() for f in event["failures"]}
    assert reasons <= {"dropped", "timed_out", "rejected", "stale", "error"}
    assert "dropped" in reasons  # dropout_rate 0.2 over 4 rounds of 4 clients: seeded, happens


def test_q09_which_data_was_the_model_trained_on(run_dir: Path) -> None:
    from velocity.data import load_dataset

    manifest = json.loads((run_dir / "governance" / "replay_manifest.json").read_text())
    train = load_dataset("synthetic", split="train")
    assert manifest["datasets"]["synthetic/train"] == train.checksum()


def test_q10_which_software_produced_the_model(run_dir: Path) -> None:
    import torch

    import velocity

    manifest = json.loads((run_dir / "governance" / "replay_manifest.json").read_text())
    assert manifest["schema_version"] == "1.1"
    assert manifest["packages"]["velocityfl"] == velocity.__version__
    assert manifest["packages"]["torch"] == torch.__version__
    assert set(manifest["git"]) == {"commit", "dirty"}
    assert manifest["platform"]["torch_threads"] == torch.get_num_threads()


def test_q11_is_the_model_file_the_one_the_log_describes(run_dir: Path) -> None:
    from safetensors.torch import load_file

    from velocity.governance import state_digest

    events = _events(run_dir)
    completed = events[-1]
    assert completed["kind"] == "run_completed"
    model = run_dir / "global_model.safetensors"
    assert completed["data"]["files"]["global_model.safetensors"] == _sha256(model)
    assert state_digest(load_file(str(model))) == completed["data"]["final_model_digest"]
    assert _round_events(run_dir)[ROUNDS]["model_after"] == completed["data"]["final_model_digest"]


def test_q12_was_the_log_signed_by_our_key(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], keys: tuple[Path, str]
) -> None:
    code, out = _verify(run_dir, "--public-key", keys[1], "--require-signature", capsys=capsys)
    assert code == cli.EXIT_OK, out
    assert keys[1] in out
    other = generate_signing_key(tmp_path / "other.pem")
    code, out = _verify(run_dir, "--public-key", other, capsys=capsys)
    assert code == cli.EXIT_ERROR
    assert other in out


def test_q13_were_events_deleted(
    run_dir: Path, copy_of: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of(run_dir)
    for name in ("audit_log.jsonl",):
        log = run / "governance" / name
        lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
        log.write_text("".join(lines[:-1]), encoding="utf-8")  # drop run_completed
    code, out = _verify(run, capsys=capsys)
    assert code == cli.EXIT_ERROR, out


def test_q14_which_configuration_was_used(run_dir: Path) -> None:
    import yaml

    events = _events(run_dir)
    started = events[0]
    assert started["kind"] == "run_started"
    assert started["index"] == 0
    resolved = yaml.safe_load((run_dir / "config.resolved.yaml").read_text())
    config = parse_config(resolved)
    assert started["data"]["config_digest"] == config.config_hash()
    files = events[-1]["data"]["files"]
    assert files["config.resolved.yaml"] == _sha256(run_dir / "config.resolved.yaml")


def test_q15_how_much_did_each_client_contribute(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    credits = summary["credits"]["clients"]
    samples: dict[str, int] = {}
    rounds: dict[str, int] = {}
    for event in _round_events(run_dir).values():
        for cid, update in event["updates"].items():
            samples[cid] = samples.get(cid, 0) + update["num_samples"]
            rounds[cid] = rounds.get(cid, 0) + 1
    assert {c: v["samples"] for c, v in credits.items() if v["samples"]} == samples
    assert {
        c: v["rounds_participated"] for c, v in credits.items() if v["rounds_participated"]
    } == rounds


def test_q16_are_the_reported_accuracies_those_of_the_logged_models(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())["rounds"]
    rounds = _round_events(run_dir)
    for record in metrics:
        assert rounds[record["round"]]["global_accuracy"] == record["global_accuracy"]
    files = _events(run_dir)[-1]["data"]["files"]
    assert files["metrics.json"] == _sha256(run_dir / "metrics.json")


def test_q17_the_model_chain_links_every_version_to_the_one_before(run_dir: Path) -> None:
    events = _events(run_dir)
    chain = hashlib.sha256(
        b"velocity-model-chain/1" + bytes.fromhex(events[0]["data"]["initial_model_digest"])
    ).hexdigest()
    assert events[0]["data"]["model_chain"] == chain
    previous = events[0]["data"]["initial_model_digest"]
    for r, event in sorted(_round_events(run_dir).items()):
        assert event["model_before"] == previous, r
        chain = hashlib.sha256(
            bytes.fromhex(chain) + bytes.fromhex(event["model_after"])
        ).hexdigest()
        assert event["model_chain"] == chain
        previous = event["model_after"]


def test_q18_was_the_run_interrupted(
    tmp_path: Path, keys: tuple[Path, str], run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An interrupted and resumed run says so in its log, still verifies, and ends with the
    model of the uninterrupted run."""
    config = _config(tmp_path, keys[0]).with_updates({"output.checkpoint_every": 2})
    run_experiment(config, rounds=2)
    resumed = run_experiment(config, resume=True)
    run = tmp_path / "audited"
    kinds = [e["kind"] for e in _events(run)]
    assert "resumed" in kinds
    code, out = _verify(run, capsys=capsys)
    assert code == cli.EXIT_OK, out
    final = _events(run_dir)[-1]["data"]["final_model_digest"]
    assert _events(run)[-1]["data"]["final_model_digest"] == final
    assert resumed.rounds[-1].round == ROUNDS
