"""write_outputs: every file of a run directory, its keys, the self-contained report."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from velocity.experiments import RunResult, parse_config, write_outputs
from velocity.experiments.outputs import build_summary

MakeResult = Callable[..., RunResult]

PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = [
    "plots/global_accuracy.png",
    "plots/global_loss.png",
    "plots/per_client_accuracy.png",
    "plots/client_participation.png",
    "plots/label_histogram.png",
]
ALL_FILES = {
    "summary.json",
    "metrics.json",
    "communication.json",
    "config.resolved.yaml",
    "report.html",
    *PLOTS,
}
SUMMARY_KEYS = {
    "schema_version",
    "name",
    "dataset",
    "model",
    "strategy",
    "strategy_name",
    "seed",
    "num_clients",
    "num_params",
    "rounds",
    "rounds_planned",
    "final_accuracy",
    "best_accuracy",
    "best_round",
    "final_loss",
    "final_train_loss",
    "total_bytes_up",
    "total_bytes_down",
    "total_bytes",
    "wall_time_s",
    "config_hash",
    "final_model_digest",
    "credits",
    "written_at",
}
RECORD_KEYS = {
    "round",
    "num_clients",
    "selected_client_ids",
    "participated",
    "dropped",
    "stragglers",
    "rejected",
    "failures",
    "global_loss",
    "global_accuracy",
    "train_loss",
    "client_accuracy",
    "samples",
    "bytes_up",
    "bytes_down",
    "duration_s",
    "clock_s",
    "aggregation",
    "stages",
    "attack_results",
}


@pytest.fixture(scope="module")
def written(
    tmp_path_factory: pytest.TempPathFactory, make_result: MakeResult
) -> tuple[RunResult, dict[str, Path], Path]:
    result = make_result()
    out = tmp_path_factory.mktemp("run") / result.name
    return result, write_outputs(result, out), out


def _json(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_every_file_is_written(written: tuple[RunResult, dict[str, Path], Path]) -> None:
    _, files, out = written
    assert set(files) == ALL_FILES
    for relative, path in files.items():
        assert path == out / relative
        assert path.is_file()
        assert path.stat().st_size > 0
    leftovers = [p.name for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_summary(written: tuple[RunResult, dict[str, Path], Path]) -> None:
    result, files, _ = written
    summary = _json(files["summary.json"])
    assert set(summary) == SUMMARY_KEYS
    assert summary["name"] == result.name
    assert summary["model"] == result.model_id
    assert summary["strategy"] == {"type": "FedAvg", "nonfinite": "drop"}
    assert summary["strategy_name"] == "FedAvg"
    assert summary["rounds"] == summary["rounds_planned"] == len(result.rounds) == 6
    assert summary["final_accuracy"] == result.final_accuracy
    assert summary["best_accuracy"] == result.best_accuracy
    assert summary["best_round"] == 6
    assert summary["final_loss"] == result.rounds[-1].global_loss
    assert summary["total_bytes_up"] == sum(r.bytes_up for r in result.rounds)
    assert summary["total_bytes"] == sum(r.bytes_up + r.bytes_down for r in result.rounds)
    assert summary["config_hash"] == result.config_hash
    assert summary["final_model_digest"] == result.final_model_digest
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", str(summary["written_at"]))
    credits = summary["credits"]["clients"]  # type: ignore[index]
    for cid, record in credits.items():
        selected = [r for r in result.rounds if cid in r.selected_client_ids]
        assert record["rounds_selected"] == len(selected)
        assert record["rounds_participated"] == sum(cid in r.participated for r in selected)
        assert record["samples"] == sum(r.samples.get(cid, 0) for r in selected)


def test_metrics(written: tuple[RunResult, dict[str, Path], Path]) -> None:
    result, files, _ = written
    metrics = _json(files["metrics.json"])
    assert set(metrics) == {"schema_version", "name", "config_hash", "rounds"}
    rounds = metrics["rounds"]
    assert isinstance(rounds, list)
    assert len(rounds) == len(result.rounds)
    for record, row in zip(result.rounds, rounds, strict=True):
        assert set(row) == RECORD_KEYS
        assert row == record.to_dict()
    first = rounds[0]
    assert first["global_accuracy"] is None  # eval_every=2: round 1 not evaluated
    assert first["aggregation"]["bad"] is None  # NaN -> null
    assert first["aggregation"]["norm"] == 1.5  # numpy scalar -> float
    assert first["aggregation"]["dropped_nonfinite"] == []
    assert "NaN" not in files["metrics.json"].read_text()
    # failures are listed with their reason, and by reason
    third = rounds[2]  # the synthetic run drops one client every third round
    assert third["dropped"] == [third["selected_client_ids"][0]]
    assert third["failures"] == [
        {"client_id": third["dropped"][0], "reason": "dropped", "message": "", "round": 3}
    ]
    fourth = rounds[3]  # ... and one straggles every fourth
    assert fourth["stragglers"] == [fourth["selected_client_ids"][1]]
    assert [f["reason"] for f in fourth["failures"]] == ["timed_out"]
    assert first["num_clients"] == len(first["participated"])


def test_communication(written: tuple[RunResult, dict[str, Path], Path]) -> None:
    result, files, _ = written
    comm = _json(files["communication.json"])
    assert set(comm) == {
        "schema_version",
        "name",
        "num_params",
        "rounds",
        "total_bytes_up",
        "total_bytes_down",
        "total_bytes",
        "uploads_per_client",
        "selections_per_client",
    }
    rounds = comm["rounds"]
    assert isinstance(rounds, list)
    assert [r["bytes_up"] for r in rounds] == [r.bytes_up for r in result.rounds]
    assert set(rounds[0]) == {"round", "bytes_up", "bytes_down", "uploads"}
    assert comm["total_bytes_down"] == sum(r.bytes_down for r in result.rounds)
    uploads = comm["uploads_per_client"]
    assert isinstance(uploads, dict)
    assert sum(uploads.values()) == sum(len(r.participated) for r in result.rounds)
    assert list(uploads) == sorted(uploads)  # population order (ids sort the same here)


def test_resolved_config_file(written: tuple[RunResult, dict[str, Path], Path]) -> None:
    result, files, _ = written
    text = files["config.resolved.yaml"].read_text(encoding="utf-8")
    assert text.startswith(f"# resolved configuration of {result.name}\n")
    assert f"# config_hash: {result.config_hash}" in text
    data = yaml.safe_load(text)
    assert data == dict(result.config)
    assert parse_config(data).config_hash() == result.config_hash


def test_plots_are_pngs(written: tuple[RunResult, dict[str, Path], Path]) -> None:
    _, files, _ = written
    for name in PLOTS:
        assert files[name].read_bytes().startswith(PNG), name


def test_report_is_self_contained(written: tuple[RunResult, dict[str, Path], Path]) -> None:
    result, files, _ = written
    page = files["report.html"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(PLOTS)
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    lowered = page.lower()
    for external in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert external not in lowered, external
    assert "<style>" in page
    # headline numbers, config and the per-round table
    assert f"{100 * result.final_accuracy:.2f}%" in page  # type: ignore[operator]
    assert result.config_hash in page
    assert page.count("<tr><td>") >= len(result.rounds)
    assert "client_fraction" in page
    # the embedded images are the files on disk
    import base64

    embedded = [base64.b64decode(src.split(",", 1)[1]) for src in sources]
    assert embedded == [files[name].read_bytes() for name in PLOTS]


def test_outputs_are_deterministic(make_result: MakeResult, tmp_path: Path) -> None:
    result = make_result()
    first = write_outputs(result, tmp_path / "a")
    second = write_outputs(result, tmp_path / "b")
    for relative in first:
        a, b = first[relative].read_bytes(), second[relative].read_bytes()
        if relative == "summary.json":
            strip = re.compile(rb'\s*"written_at": "[^"]*"')
            a, b = strip.sub(b"", a), strip.sub(b"", b)
        assert a == b, relative


def test_switches(make_result: MakeResult, tmp_path: Path) -> None:
    result = make_result()
    files = write_outputs(result, tmp_path / "quiet", save_plots=False, save_metrics=False)
    assert set(files) == {
        "summary.json",
        "communication.json",  # written whenever outputs are
        "config.resolved.yaml",
        "report.html",
    }
    assert not (tmp_path / "quiet" / "plots").exists()
    page = files["report.html"].read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == len(PLOTS)  # the report keeps its plots


def test_without_matplotlib(
    make_result: MakeResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import velocity.experiments.plots as plots

    def no_matplotlib(result: RunResult) -> dict[str, bytes]:
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(plots, "render_plots", no_matplotlib)
    with pytest.warns(UserWarning, match="Plots unavailable"):
        files = write_outputs(make_result(), tmp_path)
    assert not any(name.startswith("plots/") for name in files)
    page = files["report.html"].read_text(encoding="utf-8")
    assert "Plots unavailable" in page
    assert "data:image" not in page


def test_large_and_odd_results_render(make_result: MakeResult, tmp_path: Path) -> None:
    many = parse_config(
        {
            "name": "many",
            "dataset": "mnist",
            "training": {"num_rounds": 4, "num_clients": 300, "client_fraction": 0.5},
        }
    )
    files = write_outputs(make_result(many, num_clients=300, num_classes=62), tmp_path / "m")
    assert files["plots/per_client_accuracy.png"].read_bytes().startswith(PNG)
    assert files["plots/label_histogram.png"].read_bytes().startswith(PNG)


def test_empty_run(make_result: MakeResult, tmp_path: Path) -> None:
    import dataclasses

    result = dataclasses.replace(
        make_result(),
        rounds=(),
        label_histogram=[],
        final_accuracy=None,
        best_accuracy=None,
    )
    files = write_outputs(result, tmp_path)
    assert set(files) == ALL_FILES
    summary = build_summary(result)
    assert summary["rounds"] == 0
    assert summary["final_loss"] is None
    assert summary["best_round"] is None
    assert "written_at" not in summary


def test_report_attack_cell() -> None:
    from velocity.attacks import AttackResult
    from velocity.experiments.report import _attacks

    assert _attacks([]) == "–"
    inf = AttackResult("inf", 3, float("inf"), "x", filtered=("a", "b", "c")).to_dict()
    bd = AttackResult("backdoor", 2, 0.5, "y", metrics={"backdoor_success_rate": 0.97}).to_dict()
    assert _attacks([inf]) == "inf ×3 (3 dropped)"
    assert _attacks([inf, bd]) == "inf ×3 (3 dropped); backdoor ×2 (success 97.00%)"
