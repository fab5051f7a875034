"""Write a finished run to its output directory.

::

    <out_dir>/
      summary.json              always: headline numbers, identity (hashes), written_at
      metrics.json              save_metrics: every RoundResult
      communication.json        always: bytes per round, totals, uploads per client
      config.resolved.yaml      always: the configuration with every default filled
      report.html               always: self-contained page (plots embedded)
      plots/*.png               save_plots: the figures of velocity.experiments.plots

JSON files hold no timestamps except ``summary.json``'s ``written_at``, so two runs of the
same configuration produce byte-identical ``metrics.json``/``communication.json`` apart from
the measured durations. Each file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from velocity.experiments.results import RunResult, jsonable
from velocity.types import RoundResult

__all__ = ["SCHEMA_VERSION", "build_summary", "write_outputs"]

SCHEMA_VERSION: Final = 1
"""Version of the JSON files' layout; bumped when a key changes meaning or disappears."""


def _last(values: list[float | None]) -> float | None:
    for value in reversed(values):
        if value is not None and math.isfinite(value):
            return value
    return None


def build_summary(result: RunResult, *, written_at: str | None = None) -> dict[str, Any]:
    """The content of ``summary.json`` (``written_at`` is left out when ``None``).

    ``credits`` holds every client's contribution (:class:`velocity.governance.CreditTracker`:
    samples, rounds selected and participated, accepted and excluded updates); ``research``
    the last value of each research metric that was on; ``governance`` what governance
    wrote, when it was on.
    """
    from velocity.experiments.governance import credits_of

    strategy = result.config.get("strategy")
    strategy_name = strategy.get("type") if isinstance(strategy, dict) else strategy
    p2p_section = result.config.get("p2p")
    if isinstance(p2p_section, dict) and p2p_section.get("enabled"):
        # no server strategy: the nodes' mixing rule is the run's aggregation
        strategy = {
            "type": "p2p",
            "mixing": p2p_section.get("mixing"),
            "mixing_params": p2p_section.get("mixing_params"),
        }
        strategy_name = f"p2p {p2p_section.get('mixing')}"
    training = result.config.get("training")
    planned = training.get("num_rounds") if isinstance(training, dict) else None
    bytes_up = sum(record.bytes_up for record in result.rounds)
    bytes_down = sum(record.bytes_down for record in result.rounds)
    accuracies = [
        (record.round, record.global_accuracy)
        for record in result.rounds
        if record.global_accuracy is not None and math.isfinite(record.global_accuracy)
    ]
    best_round = max(accuracies, key=lambda pair: pair[1])[0] if accuracies else None
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "name": result.name,
        "dataset": result.dataset,
        "model": result.model_id,
        "strategy": strategy,
        "strategy_name": strategy_name,
        "seed": result.seed,
        "num_clients": result.num_clients,
        "num_params": result.num_params,
        "rounds": len(result.rounds),
        "rounds_planned": planned,
        "final_accuracy": result.final_accuracy,
        "best_accuracy": result.best_accuracy,
        "best_round": best_round,
        "final_loss": _last([record.global_loss for record in result.rounds]),
        "final_train_loss": _last([record.train_loss for record in result.rounds]),
        "total_bytes_up": bytes_up,
        "total_bytes_down": bytes_down,
        "total_bytes": bytes_up + bytes_down,
        "wall_time_s": result.wall_time_s,
        "config_hash": result.config_hash,
        "final_model_digest": result.final_model_digest,
    }
    summary["credits"] = credits_of(result.rounds).to_dict()
    research = research_summary(result.rounds)
    if research:
        summary["research"] = research
    privacy = privacy_summary(result.rounds)
    if privacy:
        summary["privacy"] = privacy
    asynchronous = async_summary(result.rounds)
    if asynchronous:
        summary["async"] = asynchronous
    p2p = p2p_summary(result.rounds)
    if p2p:
        summary["p2p"] = p2p
    governance = result.config.get("governance")
    if isinstance(governance, dict) and governance.get("enabled"):
        summary["governance"] = {
            "audit_log": bool(governance.get("save_audit_log")),
            "replay_manifest": bool(governance.get("save_replay_manifest")),
            "signed": bool(governance.get("sign")),
        }
    if result.environment:
        summary["environment"] = dict(result.environment)
    if written_at is not None:
        summary["written_at"] = written_at
    result_dict: dict[str, Any] = jsonable(summary)
    return result_dict


def privacy_summary(rounds: Sequence[RoundResult]) -> dict[str, Any]:
    """The ``privacy`` object of a private run: what its last round reported (epsilon spent
    so far, delta, noise multiplier, sampling and its rate, accountant, neighbouring
    relation, ...) and the RDP ``orders`` used; ``{}`` without privacy."""
    for record in reversed(rounds):
        privacy = record.stages.get("privacy")
        if privacy:
            out = dict(privacy)
            if out.get("accountant") == "rdp":
                from velocity.privacy import DEFAULT_RDP_ORDERS

                out["orders"] = [float(order) for order in DEFAULT_RDP_ORDERS]
            else:
                out["orders"] = None
            return out
    return {}


def async_summary(rounds: Sequence[RoundResult]) -> dict[str, Any]:
    """The ``async`` object of an asynchronous run (``{}`` for a synchronous one): server
    versions, the virtual time they took, updates aggregated and discarded as stale, and the
    staleness of the aggregated updates (mean over updates, max)."""
    versions = [r for r in rounds if "staleness" in r.stages]
    if not versions:
        return {}
    updates = sum(r.num_clients for r in versions)
    weighted = sum(float(r.stages["staleness"].get("mean", 0.0)) * r.num_clients for r in versions)
    return {
        "versions": len(versions),
        "virtual_time": rounds[-1].clock_s,
        "updates": updates,
        "discarded_stale": sum(1 for r in versions for f in r.failures if f.reason == "stale"),
        "mean_staleness": weighted / updates if updates else 0.0,
        "max_staleness": max(int(r.stages["staleness"].get("max", 0)) for r in versions),
    }


def p2p_summary(rounds: Sequence[RoundResult]) -> dict[str, Any]:
    """The ``p2p`` object of a peer-to-peer run (``{}`` otherwise): the mixing rule, the
    Byzantine nodes, the consensus distance among the honest nodes after the first and the
    last round, and the last evaluated per-node accuracies (each honest node's, min, max)."""
    records = [r for r in rounds if "p2p" in r.stages]
    if not records:
        return {}
    first, last = records[0].stages["p2p"], records[-1].stages["p2p"]
    out: dict[str, Any] = {
        "mixing": last.get("mixing"),
        "topology": last.get("topology"),
        "byzantine_nodes": list(last.get("byzantine_nodes", [])),
        "consensus_distance_first": first.get("consensus_distance"),
        "consensus_distance": last.get("consensus_distance"),
    }
    for record in reversed(records):
        stage = record.stages["p2p"]
        if stage.get("node_accuracy"):
            out["accuracy_round"] = record.round
            out["node_accuracy"] = dict(stage["node_accuracy"])
            out["min_node_accuracy"] = stage.get("min_node_accuracy")
            out["max_node_accuracy"] = stage.get("max_node_accuracy")
            out["honest_mean_accuracy"] = record.global_accuracy
            break
    return out


def research_summary(rounds: Sequence[RoundResult]) -> dict[str, Any]:
    """The last value of each research metric a run measured (``{}`` when none was on)."""
    out: dict[str, Any] = {}
    for record in rounds:
        research = record.stages.get("research", {})
        for key in ("cosine_similarity_mean", "weight_divergence_mean"):
            if research.get(key) is not None:
                out[key] = research[key]
        client_eval = record.stages.get("client_eval")
        if client_eval:
            out["client_eval"] = {
                "round": record.round,
                **{k: v for k, v in client_eval.items() if k not in ("accuracy", "loss")},
            }
    return out


def _metrics(result: RunResult) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "name": result.name,
        "config_hash": result.config_hash,
        "rounds": [record.to_dict() for record in result.rounds],
    }


def _communication(result: RunResult) -> dict[str, Any]:
    uploads: Counter[str] = Counter()
    selections: Counter[str] = Counter()
    for record in result.rounds:
        uploads.update(record.participated)
        selections.update(record.selected_client_ids)
    order = {cid: i for i, cid in enumerate(result.client_ids)}

    def ordered(counts: Counter[str]) -> dict[str, int]:
        keys = sorted(counts, key=lambda cid: (order.get(cid, len(order)), cid))
        return {cid: counts[cid] for cid in keys}

    bytes_up = sum(record.bytes_up for record in result.rounds)
    bytes_down = sum(record.bytes_down for record in result.rounds)
    return {
        "schema_version": SCHEMA_VERSION,
        "name": result.name,
        "num_params": result.num_params,
        "rounds": [
            {
                "round": record.round,
                "bytes_up": record.bytes_up,
                "bytes_down": record.bytes_down,
                "uploads": len(record.participated),
            }
            for record in result.rounds
        ],
        "total_bytes_up": bytes_up,
        "total_bytes_down": bytes_down,
        "total_bytes": bytes_up + bytes_down,
        "uploads_per_client": ordered(uploads),
        "selections_per_client": ordered(selections),
    }


def _json(data: Any) -> str:
    return json.dumps(jsonable(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _config_yaml(result: RunResult) -> str:
    import yaml

    body: str = yaml.safe_dump(
        jsonable(result.config), sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    return f"# resolved configuration of {result.name}\n# config_hash: {result.config_hash}\n{body}"


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    if isinstance(data, str):
        temporary.write_text(data, encoding="utf-8")
    else:
        temporary.write_bytes(data)
    temporary.replace(path)
    return path


def write_outputs(
    result: RunResult,
    out_dir: Path,
    *,
    save_plots: bool = True,
    save_metrics: bool = True,
) -> dict[str, Path]:
    """Write the run's files into ``out_dir`` (created if missing).

    Parameters
    ----------
    result : RunResult
        The finished run.
    out_dir : Path
        The run directory, usually ``ExperimentConfig.run_dir()`` (``outputs/<name>``).
    save_plots : bool
        Write ``plots/*.png``. The report embeds the plots either way.
    save_metrics : bool
        Write ``metrics.json`` (``communication.json`` is always written).

    Returns
    -------
    dict of str to Path
        Every file written, keyed by its path relative to ``out_dir`` in POSIX form
        (``"summary.json"``, ``"plots/global_accuracy.png"``, ...).

    Notes
    -----
    Without matplotlib the plots are skipped with a :class:`UserWarning` and the report says
    so; everything else is still written.
    """
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}

    def put(relative: str, data: str | bytes) -> None:
        written[relative] = _write(out_dir / relative, data)

    plots: dict[str, bytes] = {}
    plots_note: str | None = None
    try:
        from velocity.experiments.plots import render_plots

        plots = render_plots(result)
    except ImportError as error:
        plots_note = f"Plots unavailable: {error} (pip install matplotlib)."
        warnings.warn(plots_note, UserWarning, stacklevel=2)

    written_at = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    summary = build_summary(result, written_at=written_at)
    config_yaml = _config_yaml(result)

    put("summary.json", _json(summary))
    put("communication.json", _json(_communication(result)))
    if save_metrics:
        put("metrics.json", _json(_metrics(result)))
    put("config.resolved.yaml", config_yaml)
    if save_plots:
        for name, png in plots.items():
            put(f"plots/{name}", png)

    from velocity.experiments.report import render_report

    report_summary = {key: value for key, value in summary.items() if key != "written_at"}
    put(
        "report.html",
        render_report(
            result,
            plots,
            summary=report_summary,
            config_yaml=config_yaml,
            plots_note=plots_note,
        ),
    )
    return written
