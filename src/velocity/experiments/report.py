"""``report.html``: one self-contained page per run.

Inline CSS, the plots embedded as base64 PNG ``data:`` URIs, no scripts, no links to
anything outside the file — it can be mailed or archived on its own. Content: the headline
numbers, the plots, the per-round table and the resolved configuration. No timestamp, so the
same result gives the same page.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from velocity.experiments.results import RunResult

__all__ = ["format_bytes", "render_report"]

_CSS: Final = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       color: #1f2328; margin: 0 auto; max-width: 1100px; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; }
.sub { color: #59636e; margin: 0 0 16px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px; }
.card { border: 1px solid #d1d9e0; border-radius: 6px; padding: 10px 12px; }
.card .k { color: #59636e; font-size: 12px; } .card .v { font-size: 20px; font-weight: 600; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 12px; }
.plots figure { margin: 0; border: 1px solid #d1d9e0; border-radius: 6px; padding: 6px; }
.plots img { width: 100%; height: auto; display: block; }
.plots figcaption { color: #59636e; font-size: 12px; text-align: center; }
table { border-collapse: collapse; width: 100%; font-size: 12px; }
th, td { border-bottom: 1px solid #d1d9e0; padding: 3px 8px; text-align: right; }
th { background: #f6f8fa; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
.scroll { max-height: 480px; overflow: auto; border: 1px solid #d1d9e0; border-radius: 6px; }
pre { background: #f6f8fa; border-radius: 6px; padding: 12px; overflow: auto; font-size: 12px; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
"""

_CAPTIONS: Final = {
    "global_accuracy.png": "Global test accuracy per round",
    "global_loss.png": "Global test loss and mean client training loss",
    "per_client_accuracy.png": "Local training accuracy per client and round (blank: absent)",
    "consensus_distance.png": "Consensus distance among honest nodes, per-node accuracy",
    "client_participation.png": "Participated, straggling and dropped clients per round",
    "label_histogram.png": "Training labels per client (the partition)",
}


def format_bytes(count: int) -> str:
    """Decimal units: ``format_bytes(1_234_567) == "1.23 MB"``."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def _percent(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.2f}%"


def _number(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cards(summary: Mapping[str, Any]) -> str:
    wall = summary.get("wall_time_s")
    items = [
        ("final accuracy", _percent(summary.get("final_accuracy"))),
        ("best accuracy", _percent(summary.get("best_accuracy"))),
        ("final loss", _number(summary.get("final_loss"))),
        ("rounds", f"{summary.get('rounds', 0)}"),
        ("clients", f"{summary.get('num_clients', 0):,}"),
        ("parameters", f"{summary.get('num_params', 0):,}"),
        ("uploaded", format_bytes(int(summary.get("total_bytes_up", 0)))),
        ("downloaded", format_bytes(int(summary.get("total_bytes_down", 0)))),
        ("wall time", "–" if wall is None else f"{float(wall):.1f} s"),
    ]
    cells = "".join(
        f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div></div>'
        for k, v in items
    )
    return f'<div class="cards">{cells}</div>'


def _plots(plots: Mapping[str, bytes], note: str | None) -> str:
    if not plots:
        return f'<p class="sub">{_e(note or "No plots.")}</p>'
    figures = []
    for name, png in plots.items():
        data = base64.b64encode(png).decode("ascii")
        caption = _CAPTIONS.get(name, name)
        figures.append(
            f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
    return f'<div class="plots">{"".join(figures)}</div>'


def _table(result: RunResult) -> str:
    head = (
        "round",
        "selected",
        "participated",
        "stragglers",
        "dropped",
        "test accuracy",
        "test loss",
        "train loss",
        "uploaded",
        "downloaded",
        "seconds",
        "attacks",
    )
    rows = []
    for r in result.rounds:
        cells = (
            str(r.round),
            str(len(r.selected_client_ids)),
            str(len(r.participated)),
            str(len(r.stragglers)),
            str(len(r.dropped)),
            _percent(r.global_accuracy),
            _number(r.global_loss),
            _number(r.train_loss),
            format_bytes(r.bytes_up),
            format_bytes(r.bytes_down),
            f"{r.duration_s:.2f}",
            _attacks(r.attack_results),
        )
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
    body = "".join(rows) or f'<tr><td colspan="{len(head)}">no rounds</td></tr>'
    return f'<div class="scroll"><table><thead>{header}</thead><tbody>{body}</tbody></table></div>'


def _attacks(results: Sequence[Mapping[str, Any]]) -> str:
    """``little ×10``, ``inf ×10 (10 dropped)``, ``backdoor ×2 (success 97.0%)``; ``–`` if none."""
    parts = []
    for a in results:
        text = f"{a.get('attack_type', '?')} ×{a.get('clients_affected', 0)}"
        notes = []
        if a.get("filtered"):
            notes.append(f"{len(a['filtered'])} dropped")
        rate = dict(a.get("metrics") or {}).get("backdoor_success_rate")
        if rate is not None:
            notes.append(f"success {_percent(rate)}")
        parts.append(text + (f" ({', '.join(notes)})" if notes else ""))
    return "; ".join(parts) or "–"


def _credits(summary: Mapping[str, Any], limit: int = 50) -> str:
    """Per-client credits (the clients with most samples first, at most ``limit`` rows)."""
    credits = dict(summary.get("credits") or {}).get("clients") or {}
    if not credits:
        return "<p>No client contributed.</p>"
    order = sorted(credits, key=lambda c: (-int(credits[c].get("samples", 0)), c))
    head = ("client", "samples", "rounds selected", "rounds participated", "accepted", "excluded")
    keys = (
        "samples",
        "rounds_selected",
        "rounds_participated",
        "accepted_updates",
        "excluded_updates",
    )
    rows = [
        "<tr><td>"
        + _e(cid)
        + "</td>"
        + "".join(f"<td>{_e(credits[cid].get(k, 0))}</td>" for k in keys)
        + "</tr>"
        for cid in order[:limit]
    ]
    more = len(order) - limit
    note = f"<p>{more} more clients in summary.json.</p>" if more > 0 else ""
    header = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
    return (
        f'<div class="scroll"><table><thead>{header}</thead><tbody>{"".join(rows)}</tbody>'
        f"</table></div>{note}"
    )


def _research(summary: Mapping[str, Any]) -> str:
    research = dict(summary.get("research") or {})
    if not research:
        return ""
    rows: list[tuple[str, object]] = []
    for key in ("cosine_similarity_mean", "weight_divergence_mean"):
        if key in research:
            rows.append((key.replace("_", " "), _number(research[key])))
    client_eval = dict(research.get("client_eval") or {})
    for key in ("gini", "mean", "min", "max", "worst_10pct", "best_10pct"):
        if key in client_eval:
            rows.append((f"per-client accuracy: {key}", _number(client_eval[key])))
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<h2>Research metrics</h2><table>{body}</table>"


def _p2p(summary: Mapping[str, Any], limit: int = 100) -> str:
    p2p = dict(summary.get("p2p") or {})
    if not p2p:
        return ""
    rows: list[tuple[str, object]] = [
        ("mixing rule", p2p.get("mixing")),
        ("topology", p2p.get("topology")),
        ("Byzantine nodes", ", ".join(map(str, p2p.get("byzantine_nodes") or [])) or "none"),
        ("consensus distance after round 1", _number(p2p.get("consensus_distance_first"))),
        ("consensus distance after the last round", _number(p2p.get("consensus_distance"))),
        ("honest mean accuracy", _percent(p2p.get("honest_mean_accuracy"))),
        ("worst honest node accuracy", _percent(p2p.get("min_node_accuracy"))),
        ("best honest node accuracy", _percent(p2p.get("max_node_accuracy"))),
    ]
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    nodes = dict(p2p.get("node_accuracy") or {})
    shown = list(nodes.items())[:limit]
    per_node = "".join(
        f"<tr><td>{_e(node)}</td><td>{_e(_percent(acc))}</td></tr>" for node, acc in shown
    )
    note = f"<p>first {limit} of {len(nodes)} nodes</p>" if len(nodes) > limit else ""
    round_ = p2p.get("accuracy_round")
    caption = f"Per-node test accuracy (round {round_})" if round_ is not None else ""
    table = (
        f"<h3>{_e(caption)}</h3><table><thead><tr><th>node</th><th>accuracy</th></tr></thead>"
        f"<tbody>{per_node}</tbody></table>{note}"
        if nodes
        else ""
    )
    return f"<h2>Peer-to-peer</h2><table>{body}</table>{table}"


def _privacy(summary: Mapping[str, Any]) -> str:
    privacy = dict(summary.get("privacy") or {})
    if not privacy:
        return ""
    keys = (
        "mode", "epsilon", "epsilon_budget", "delta", "noise_multiplier", "calibrated",
        "max_grad_norm", "clipping", "sampling", "sampling_rate", "rounds", "accountant",
        "neighboring_relation", "unit", "distributed",
    )  # fmt: skip
    rows = [
        (k.replace("_", " "), _number(v) if isinstance(v, float) else v)
        for k in keys
        if (v := privacy.get(k)) is not None
    ]
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<h2>Privacy</h2><table>{body}</table>"


def _identity(result: RunResult, summary: Mapping[str, Any]) -> str:
    strategy = summary.get("strategy")
    shown = json.dumps(strategy, sort_keys=False) if strategy is not None else "–"
    rows: Sequence[tuple[str, object]] = (
        ("config hash", result.config_hash),
        ("final model digest (SHA-256)", result.final_model_digest),
        ("seed", result.seed),
        ("strategy", shown),
    )
    body = "".join(f"<tr><td>{_e(k)}</td><td><code>{_e(v)}</code></td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def render_report(
    result: RunResult,
    plots: Mapping[str, bytes],
    *,
    summary: Mapping[str, Any],
    config_yaml: str,
    plots_note: str | None = None,
) -> str:
    """The HTML page for ``result``.

    Parameters
    ----------
    result : RunResult
        The run.
    plots : mapping of str to bytes
        File name -> PNG bytes (:func:`velocity.experiments.plots.render_plots`), embedded in
        this order; may be empty.
    summary : mapping
        The content of ``summary.json`` (headline numbers).
    config_yaml : str
        The resolved configuration as YAML, shown verbatim.
    plots_note : str, optional
        Shown instead of the plots when there are none (e.g. why they are missing).
    """
    title = f"VelocityFL run: {result.name}"
    subtitle = (
        f"dataset {result.dataset} · model {result.model_id} · {result.num_clients:,} clients"
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            f"<h1>{_e(title)}</h1>",
            f'<p class="sub">{_e(subtitle)}</p>',
            _cards(summary),
            "<h2>Identity</h2>",
            _identity(result, summary),
            "<h2>Plots</h2>",
            _plots(plots, plots_note),
            "<h2>Rounds</h2>",
            _table(result),
            _privacy(summary),
            _p2p(summary),
            _research(summary),
            "<h2>Client credits</h2>",
            _credits(summary),
            "<h2>Configuration</h2>",
            f"<pre><code>{_e(config_yaml)}</code></pre>",
            "</body>",
            "</html>",
            "",
        ]
    )
