"""Governance mode end to end: same model on and off, every byte of its files guarded,
resume, the research metrics, and the refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from velocity.errors import VelocityError
from velocity.experiments import ExperimentConfig, parse_config
from velocity.experiments.runner import run_experiment
from velocity.governance import GOVERNANCE_DIR, generate_signing_key, verify_run


def _config(out: Path, **extra: Any) -> ExperimentConfig:
    data: dict[str, Any] = {
        "name": "small",
        "dataset": "synthetic",
        "model_id": "logreg",
        "seed": 5,
        "training": {"num_rounds": 2, "num_clients": 4, "client_fraction": 0.5},
        "client": {"local_steps": 2, "batch_size": 16, "lr": 0.1},
        "simulation": {"partitioning": "natural", "dropout_rate": 0.3},
        "output": {"dir": str(out), "save_plots": False},
    }
    data.update(extra)
    return parse_config(data)


@pytest.fixture(scope="module")
def signed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("signed")
    public = generate_signing_key(root / "key.pem")
    governance = {"enabled": True, "sign": True, "signing_key": str(root / "key.pem")}
    run_experiment(_config(root, governance=governance))
    return root / "small", public


def test_governance_never_changes_the_model(tmp_path: Path) -> None:
    plain = run_experiment(_config(tmp_path / "off"))
    governed = run_experiment(
        _config(
            tmp_path / "on",
            governance={"enabled": True},
            metrics={"cosine_similarity": True, "weight_divergence": True, "client_eval": True},
        )
    )
    assert governed.final_model_digest == plain.final_model_digest
    assert [r.global_accuracy for r in governed.rounds] == [r.global_accuracy for r in plain.rounds]


def test_every_single_byte_flip_of_every_governance_file_is_detected(
    signed_run: tuple[Path, str],
) -> None:
    run, public = signed_run
    assert verify_run(run, trusted_public_key=public).ok
    files = sorted((run / GOVERNANCE_DIR).iterdir())
    assert {p.name for p in files} == {
        "audit_log.json",
        "audit_log.jsonl",
        "audit_log.sig.json",
        "clients.json",
        "replay_manifest.json",
    }
    missed: list[str] = []
    for path in files:
        original = path.read_bytes()
        try:
            for i in range(len(original)):
                flipped = bytearray(original)
                flipped[i] ^= 0x01
                path.write_bytes(bytes(flipped))
                if verify_run(run, trusted_public_key=public).ok:
                    missed.append(f"{path.name}[{i}]")
        finally:
            path.write_bytes(original)
    assert not missed, missed[:20]
    assert verify_run(run, trusted_public_key=public).ok


def test_a_governed_run_refuses_a_bad_key_before_training(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("hello")
    config = _config(tmp_path, governance={"enabled": True, "sign": True, "signing_key": str(bad)})
    with pytest.raises(VelocityError, match=r"not-a-key\.pem"):
        run_experiment(config)
    assert not (tmp_path / "small").exists()  # nothing was built or written


def test_a_fresh_run_moves_an_earlier_governance_dir_aside(tmp_path: Path) -> None:
    config = _config(tmp_path, governance={"enabled": True})
    run_experiment(config)
    with pytest.warns(UserWarning, match="earlier run's governance files"):
        run_experiment(config)
    assert (tmp_path / "small" / "governance.prev-1" / "audit_log.jsonl").exists()
    assert verify_run(tmp_path / "small").ok


def test_research_metrics_reach_metrics_json_and_the_summary(tmp_path: Path) -> None:
    import json

    metrics = {"cosine_similarity": True, "weight_divergence": True, "client_eval": True}
    result = run_experiment(_config(tmp_path, metrics=metrics))
    records = json.loads((tmp_path / "small" / "metrics.json").read_text())["rounds"]
    for record, kept in zip(records, result.rounds, strict=True):
        research = record["stages"]["research"]
        assert sorted(research["cosine_similarity"]) == sorted(kept.participated)
        assert all(-1.0 <= v <= 1.0 for v in research["cosine_similarity"].values())
        assert all(v >= 0.0 for v in research["weight_divergence"].values())
        client_eval = record["stages"]["client_eval"]
        assert sorted(client_eval["accuracy"]) == sorted(result.client_ids)
        assert 0.0 <= client_eval["gini"] <= 1.0
    summary = json.loads((tmp_path / "small" / "summary.json").read_text())
    assert set(summary["research"]) >= {"cosine_similarity_mean", "client_eval"}
    assert "Research metrics" in (tmp_path / "small" / "report.html").read_text()


def test_metrics_off_cost_nothing_and_leave_no_trace(tmp_path: Path) -> None:
    result = run_experiment(_config(tmp_path))
    assert all("research" not in r.stages and "client_eval" not in r.stages for r in result.rounds)
