"""The run's figures, rendered with matplotlib's Agg canvas to PNG bytes.

No ``pyplot`` and no global backend switch: each figure is a standalone
``matplotlib.figure.Figure``, so rendering never opens a window, never touches the caller's
backend, and is safe in threads. The PNGs carry no timestamp and no software tag, so the same
result renders to the same bytes on the same matplotlib version.

:func:`render_plots` returns ``{"global_accuracy.png": b"...", ...}`` — the files of
``outputs/<name>/plots/``.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

import numpy as np

from velocity.experiments.results import RunResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["MAX_HEATMAP_CLIENTS", "PLOT_FILES", "render_plots"]

MAX_HEATMAP_CLIENTS: Final = 100
"""Most clients drawn in the per-client heatmap and the label histogram."""


def _figure(width: float = 7.0, height: float = 4.0) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _series(result: RunResult, values: list[float | None]) -> tuple[list[int], list[float]]:
    pairs = [
        (record.round, value)
        for record, value in zip(result.rounds, values, strict=True)
        if value is not None and math.isfinite(value)
    ]
    return [r for r, _ in pairs], [v for _, v in pairs]


def _integer_axis(ax: Axes, *, y: bool = False) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if y:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _line(ax: Axes, xs: list[int], ys: list[float], label: str, style: str = "-") -> None:
    marker = "o" if len(xs) <= 50 else None
    ax.plot(xs, ys, style, marker=marker, markersize=3, label=label)
    _integer_axis(ax)


def plot_global_accuracy(result: RunResult) -> bytes:
    """Global test accuracy (%) per evaluated round, the best one marked."""
    figure = _figure()
    ax = figure.subplots()
    xs, ys = _series(result, [r.global_accuracy for r in result.rounds])
    if not xs:
        _empty(ax, "no evaluated rounds")
    else:
        percent = [100.0 * y for y in ys]
        _line(ax, xs, percent, "global model")
        best = int(np.argmax(percent))
        ax.annotate(
            f"best {percent[best]:.2f}% (round {xs[best]})",
            (xs[best], percent[best]),
            textcoords="offset points",
            xytext=(0, -14),
            ha="center",
            fontsize=8,
        )
        ax.set_xlabel("round")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    ax.set_title(f"{result.name}: global test accuracy")
    return _png(figure)


def plot_global_loss(result: RunResult) -> bytes:
    """Global test loss per evaluated round, and the participants' mean training loss."""
    figure = _figure()
    ax = figure.subplots()
    test_x, test_y = _series(result, [r.global_loss for r in result.rounds])
    train_x, train_y = _series(result, [r.train_loss for r in result.rounds])
    if not test_x and not train_x:
        _empty(ax, "no losses recorded")
    else:
        if test_x:
            _line(ax, test_x, test_y, "global test loss")
        if train_x:
            _line(ax, train_x, train_y, "mean client training loss", "--")
        ax.set_xlabel("round")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax.set_title(f"{result.name}: loss")
    return _png(figure)


def _heatmap_clients(result: RunResult, series: Sequence[Mapping[str, float]]) -> list[str]:
    """The clients the heatmap shows: the most frequent participants, in population order."""
    counts: Counter[str] = Counter()
    for values in series:
        counts.update(values.keys())
    if len(counts) <= MAX_HEATMAP_CLIENTS:
        chosen = set(counts)
    else:
        order = {cid: i for i, cid in enumerate(result.client_ids)}
        ranked = sorted(counts, key=lambda cid: (-counts[cid], order.get(cid, math.inf), cid))
        chosen = set(ranked[:MAX_HEATMAP_CLIENTS])
    ordered = [cid for cid in result.client_ids if cid in chosen]
    ordered += sorted(chosen.difference(ordered))  # ids the population list did not name
    return ordered


def plot_per_client_accuracy(result: RunResult) -> bytes:
    """Heatmap of local training accuracy: clients x rounds, blank where a client was absent."""
    series = [record.client_accuracy for record in result.rounds]
    return _client_heatmap(result, series, "local training accuracy (%)", "per-client accuracy")


def _client_eval(result: RunResult) -> list[Mapping[str, float]]:
    return [
        dict(record.stages.get("client_eval", {}).get("accuracy", {})) for record in result.rounds
    ]


def plot_client_eval_accuracy(result: RunResult) -> bytes:
    """Heatmap of the global model's accuracy on each client's held-out split
    (``metrics.client_eval``): clients x rounds, blank on rounds not evaluated."""
    return _client_heatmap(
        result,
        _client_eval(result),
        "global model, held-out accuracy (%)",
        "global model on each client's held-out split",
    )


def _epsilons(result: RunResult) -> list[float | None]:
    out: list[float | None] = []
    for record in result.rounds:
        value = record.stages.get("privacy", {}).get("epsilon")
        out.append(None if value is None else float(value))
    return out


def _accuracy_against(
    result: RunResult, pairs: list[tuple[float, float]], xlabel: str, what: str, empty: str
) -> bytes:
    """Test accuracy (%) against ``x`` for each ``(x, accuracy)`` pair, one line."""
    figure = _figure()
    ax = figure.subplots()
    if not pairs:
        _empty(ax, empty)
    else:
        ax.plot([p[0] for p in pairs], [100.0 * p[1] for p in pairs], "o-", markersize=3)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    ax.set_title(f"{result.name}: accuracy against {what}")
    return _png(figure)


def plot_privacy_utility(result: RunResult) -> bytes:
    """Test accuracy (%) against the privacy spent (epsilon) after each evaluated round."""
    pairs = [
        (eps, record.global_accuracy)
        for eps, record in zip(_epsilons(result), result.rounds, strict=True)
        if eps is not None and record.global_accuracy is not None and math.isfinite(eps)
    ]
    return _accuracy_against(
        result, pairs, "epsilon spent (delta fixed)", "privacy spent", "no evaluated private rounds"
    )


def plot_accuracy_vs_time(result: RunResult) -> bytes:
    """Test accuracy (%) against virtual time (asynchronous runs: one point per version)."""
    pairs = [
        (record.clock_s, record.global_accuracy)
        for record in result.rounds
        if record.global_accuracy is not None and math.isfinite(record.global_accuracy)
    ]
    return _accuracy_against(
        result, pairs, "virtual time (s)", "virtual time", "no evaluated versions"
    )


def _client_heatmap(
    result: RunResult, series: Sequence[Mapping[str, float]], label: str, title: str
) -> bytes:
    clients = _heatmap_clients(result, series)
    height = min(12.0, 2.5 + 0.12 * len(clients))
    figure = _figure(8.0, height)
    ax = figure.subplots()
    if not clients or not result.rounds:
        _empty(ax, "no client accuracies recorded")
    else:
        row = {cid: i for i, cid in enumerate(clients)}
        grid = np.full((len(clients), len(result.rounds)), np.nan)
        for column, values in enumerate(series):
            for cid, accuracy in values.items():
                if cid in row:
                    grid[row[cid], column] = 100.0 * accuracy
        from matplotlib import colormaps

        cmap = colormaps["viridis"].with_extremes(bad="0.92")
        image = ax.imshow(
            np.ma.masked_invalid(grid),
            aspect="auto",
            interpolation="nearest",
            cmap=cmap,
            vmin=0.0,
            vmax=100.0,
        )
        figure.colorbar(image, ax=ax, label=label)
        rounds = [record.round for record in result.rounds]
        ticks = _ticks(len(rounds))
        ax.set_xticks(ticks, [str(rounds[i]) for i in ticks])
        if len(clients) <= 30:
            ax.set_yticks(range(len(clients)), clients, fontsize=7)
        else:
            ax.set_yticks([])
        ax.set_xlabel("round")
        shown = len(clients)
        total = max(result.num_clients, shown)
        ax.set_ylabel(f"client ({shown} of {total})" if shown < total else "client")
    ax.set_title(f"{result.name}: {title}")
    return _png(figure)


def _ticks(count: int, most: int = 12) -> list[int]:
    step = max(1, math.ceil(count / most))
    return list(range(0, count, step))


def plot_client_participation(result: RunResult) -> bytes:
    """Stacked bars per round: participated, stragglers, dropped."""
    figure = _figure()
    ax = figure.subplots()
    if not result.rounds:
        _empty(ax, "no rounds")
    else:
        rounds = np.array([record.round for record in result.rounds])
        done = np.array([len(record.participated) for record in result.rounds])
        late = np.array([len(record.stragglers) for record in result.rounds])
        lost = np.array([len(record.dropped) for record in result.rounds])
        width = 0.8
        ax.bar(rounds, done, width, label="participated", color="#2b8a3e")
        ax.bar(rounds, late, width, bottom=done, label="stragglers", color="#f08c00")
        ax.bar(rounds, lost, width, bottom=done + late, label="dropped", color="#c92a2a")
        ax.set_xlabel("round")
        ax.set_ylabel("clients")
        _integer_axis(ax, y=True)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{result.name}: client participation")
    return _png(figure)


def plot_label_histogram(result: RunResult) -> bytes:
    """Training labels per client: stacked bars (<= 20 classes) or a clients x classes map."""
    rows = result.label_histogram[:MAX_HEATMAP_CLIENTS]
    figure = _figure(8.0, 4.5)
    ax = figure.subplots()
    if not rows or not rows[0]:
        _empty(ax, "no label histogram")
        ax.set_title(f"{result.name}: labels per client")
        return _png(figure)
    counts = np.asarray(rows, dtype=np.float64)
    num_clients, num_classes = counts.shape
    labels = list(result.client_ids[:num_clients])
    labels += [str(i) for i in range(len(labels), num_clients)]
    if num_classes <= 20:
        from matplotlib import colormaps

        colors = colormaps["tab20" if num_classes > 10 else "tab10"]
        positions = np.arange(num_clients)
        bottom = np.zeros(num_clients)
        for label in range(num_classes):
            ax.bar(
                positions,
                counts[:, label],
                0.85,
                bottom=bottom,
                color=colors(label),
                label=str(label),
            )
            bottom += counts[:, label]
        ax.set_ylabel("training samples")
        ax.legend(title="class", fontsize=7, ncols=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        image = ax.imshow(counts.T, aspect="auto", interpolation="nearest", cmap="magma")
        figure.colorbar(image, ax=ax, label="training samples")
        ax.set_ylabel("class")
    if num_clients <= 30:
        ax.set_xticks(range(num_clients), labels, rotation=90, fontsize=7)
    else:
        ticks = _ticks(num_clients)
        ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=7)
    total = max(result.num_clients, len(result.label_histogram))
    ax.set_xlabel(f"client (first {num_clients} of {total})" if num_clients < total else "client")
    ax.set_title(f"{result.name}: labels per client")
    return _png(figure)


PLOT_FILES: Final[dict[str, Callable[[RunResult], bytes]]] = {
    "global_accuracy.png": plot_global_accuracy,
    "global_loss.png": plot_global_loss,
    "per_client_accuracy.png": plot_per_client_accuracy,
    "client_participation.png": plot_client_participation,
    "label_histogram.png": plot_label_histogram,
}
"""File name -> renderer, in the order the report shows them."""


def _p2p(result: RunResult, key: str) -> list[float | None]:
    values: list[float | None] = []
    for record in result.rounds:
        value = record.stages.get("p2p", {}).get(key)
        values.append(float(value) if isinstance(value, int | float) else None)
    return values


def plot_consensus_distance(result: RunResult) -> bytes:
    """A peer-to-peer run's consensus distance among the honest nodes per round (log scale),
    and the spread of the honest nodes' test accuracy (min, mean, max) when evaluated."""
    figure = _figure(7.0, 6.0)
    top, bottom = figure.subplots(2, 1, sharex=True)
    xs, ys = _series(result, _p2p(result, "consensus_distance"))
    positive = [(x, y) for x, y in zip(xs, ys, strict=True) if y > 0]
    if positive:
        _line(top, [x for x, _ in positive], [y for _, y in positive], "honest nodes")
        top.set_yscale("log")
        top.set_ylabel("consensus distance")
        top.grid(alpha=0.3)
    else:
        _empty(top, "consensus reached (distance 0)" if xs else "no rounds")
    top.set_title(f"{result.name}: consensus distance and per-node accuracy")
    low_x, low = _series(result, _p2p(result, "min_node_accuracy"))
    high_x, high = _series(result, _p2p(result, "max_node_accuracy"))
    mean_x, mean = _series(result, [r.global_accuracy for r in result.rounds])
    if mean_x:
        _line(bottom, mean_x, [100 * v for v in mean], "honest mean")
        if low_x and len(low_x) == len(high_x):
            bottom.fill_between(
                low_x, [100 * v for v in low], [100 * v for v in high], alpha=0.2,
                label="honest min–max",
            )  # fmt: skip
        bottom.set_ylabel("test accuracy (%)")
        bottom.legend(fontsize=8)
        bottom.grid(alpha=0.3)
    else:
        _empty(bottom, "no evaluated rounds")
    bottom.set_xlabel("round")
    return _png(figure)


def render_plots(result: RunResult) -> dict[str, bytes]:
    """Every figure of :data:`PLOT_FILES` as PNG bytes, keyed by file name, and
    ``client_eval_accuracy.png`` when the run measured ``metrics.client_eval``, and
    ``privacy_utility.png`` (accuracy against epsilon) for a private run, and
    ``accuracy_vs_time.png`` (accuracy against virtual time) for an asynchronous one, and
    ``consensus_distance.png`` for a peer-to-peer one.

    Raises
    ------
    ImportError
        matplotlib is not installed.
    """
    plots = {name: render(result) for name, render in PLOT_FILES.items()}
    if any(_client_eval(result)):
        plots["client_eval_accuracy.png"] = plot_client_eval_accuracy(result)
    if any(eps is not None for eps in _epsilons(result)):
        plots["privacy_utility.png"] = plot_privacy_utility(result)
    if any("staleness" in record.stages for record in result.rounds):
        plots["accuracy_vs_time.png"] = plot_accuracy_vs_time(result)
    if any("p2p" in record.stages for record in result.rounds):
        plots["consensus_distance.png"] = plot_consensus_distance(result)
    return plots
