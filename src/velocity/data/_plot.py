"""Picture of a partition's label skew (private; re-exported by the package)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from velocity.errors import ValidationError

__all__ = ["plot_label_histogram"]

_MAX_BAR_CLIENTS = 50
"""Up to this many clients get one stacked bar each; more are drawn as a heatmap."""


def plot_label_histogram(
    hist: Tensor,
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
) -> None:
    """Save a picture of per-client label counts (``Partition.label_histogram``).

    Up to 50 clients: one stacked bar per client, a colour per class. More clients: a
    heatmap, clients along x, classes along y, colour = count. Uses matplotlib's object API
    (no pyplot, no global backend change); the format follows ``path``'s suffix.

    Parameters
    ----------
    hist : Tensor, shape (num_clients, num_classes)
        Non-negative counts.
    path : str or PathLike
        Output file (``.png``, ``.pdf``, ``.svg``, ...).
    class_names : sequence of str, optional
        One label per class for the legend or the y axis.
    """
    if not isinstance(hist, Tensor) or hist.ndim != 2:
        raise ValidationError("plot_label_histogram: hist must be a 2-D tensor (clients, classes)")
    if hist.dtype == torch.bool or hist.is_complex():
        raise ValidationError(f"plot_label_histogram: counts must be real; got {hist.dtype}")
    h = hist.detach().cpu().to(torch.float64).numpy()
    k, c = h.shape
    if k == 0 or c == 0:
        raise ValidationError(f"plot_label_histogram: hist is empty (shape {k}x{c})")
    if not np.isfinite(h).all() or (h < 0).any():
        raise ValidationError("plot_label_histogram: counts must be finite and >= 0")
    names = [str(i) for i in range(c)] if class_names is None else [str(n) for n in class_names]
    if len(names) != c:
        raise ValidationError(f"plot_label_histogram: {len(names)} class_names for {c} classes")
    try:
        from matplotlib import colormaps
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plot_label_histogram needs matplotlib: pip install matplotlib") from e

    fig = Figure(figsize=(max(6.0, min(16.0, 0.25 * k + 3.0)), 4.5), layout="constrained")
    ax = fig.add_subplot()
    if k <= _MAX_BAR_CLIENTS:
        cmap = colormaps["tab10" if c <= 10 else "tab20"]
        clients = np.arange(k)
        bottom = np.zeros(k)
        for j in range(c):
            color = cmap(j % cmap.N)
            ax.bar(clients, h[:, j], bottom=bottom, label=names[j], color=color, width=0.85)
            bottom += h[:, j]
        ax.set_xlim(-0.6, k - 0.4)
        if c <= 20:
            ax.legend(title="class", fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_ylabel("samples")
    else:
        image = ax.imshow(
            h.T, aspect="auto", interpolation="nearest", cmap="viridis", origin="lower"
        )
        fig.colorbar(image, ax=ax, label="samples")
        if c <= 20:
            ax.set_yticks(np.arange(c), labels=names)
        ax.set_ylabel("class")
    ax.set_xlabel("client")
    ax.set_title(f"Label distribution over {k} clients")
    fig.savefig(os.fspath(path), dpi=110)
