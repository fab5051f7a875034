"""plot_label_histogram writes an image file, bars or heatmap."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from velocity.data import partition, plot_label_histogram
from velocity.errors import ValidationError

pytest.importorskip("matplotlib")


@pytest.mark.parametrize("clients", [5, 200])
def test_writes_png(tmp_path: Path, clients: int) -> None:
    y = torch.arange(4000) % 10
    hist = partition(y, clients, "dirichlet", seed=0, alpha=0.5).label_histogram(y, 10)
    out = tmp_path / f"hist_{clients}.png"
    plot_label_histogram(hist, out, class_names=[f"c{i}" for i in range(10)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_svg_and_errors(tmp_path: Path) -> None:
    hist = torch.tensor([[1, 2], [3, 0]])
    plot_label_histogram(hist, tmp_path / "h.svg")
    assert b"<svg" in (tmp_path / "h.svg").read_bytes()
    with pytest.raises(ValidationError, match="class_names"):
        plot_label_histogram(hist, tmp_path / "x.png", class_names=["a"])
    with pytest.raises(ValidationError, match=">= 0"):
        plot_label_histogram(-hist, tmp_path / "x.png")
    with pytest.raises(ValidationError, match="2-D"):
        plot_label_histogram(torch.ones(3), tmp_path / "x.png")
