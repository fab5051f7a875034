"""Shared set-up for the ``velocity.data`` tests.

Every test runs with ``$VELOCITY_CACHE`` pointing into its own temporary folder,
``$VELOCITY_DATA`` unset, and ``urllib.request.urlopen`` replaced by a stub that fails, so no
test can touch the network or the user's cache by accident. Tests that need the real datasets
use the ``real_data`` fixture: ``$VELOCITY_DATA`` (as set when the session started) or
``/work/shared/data``, skipped when neither holds the files.
"""

from __future__ import annotations

import gzip
import os
import struct
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

_REAL_DATA_CANDIDATES = [p for p in (os.environ.get("VELOCITY_DATA"), "/work/shared/data") if p]


def _no_network(*args: object, **kwargs: object) -> object:
    raise urllib.error.URLError("network disabled in tests")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    cache = tmp_path / "velocity-cache"
    monkeypatch.setenv("VELOCITY_CACHE", str(cache))
    monkeypatch.delenv("VELOCITY_DATA", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    return cache


@pytest.fixture
def real_data() -> Callable[[str, tuple[str, ...]], Path]:
    """``real_data(subdir, files)`` -> the root holding ``subdir/files``, or skip."""

    def find(subdir: str, files: tuple[str, ...]) -> Path:
        for root in _REAL_DATA_CANDIDATES:
            base = Path(root)
            if all((base / subdir / f).is_file() for f in files):
                return base
        pytest.skip(f"real {subdir} data not found (set $VELOCITY_DATA)")

    return find


def idx_bytes(array: np.ndarray) -> bytes:
    """An uncompressed uint8 IDX file holding ``array``."""
    assert array.dtype == np.uint8
    header = struct.pack(">HBB", 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def write_idx_pair(
    folder: Path, split: str, images: np.ndarray, labels: np.ndarray, *, gz: bool = True
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "train" if split == "train" else "t10k"
    for stem, arr in (
        (f"{prefix}-images-idx3-ubyte", images),
        (f"{prefix}-labels-idx1-ubyte", labels),
    ):
        raw = idx_bytes(arr)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw, mtime=0))
        else:
            (folder / stem).write_bytes(raw)


@pytest.fixture
def idx_writer() -> Callable[..., None]:
    return write_idx_pair


@pytest.fixture
def make_idx() -> Callable[[np.ndarray], bytes]:
    return idx_bytes


@pytest.fixture
def tiny_mnist() -> tuple[np.ndarray, np.ndarray]:
    """12 random 28x28 uint8 images and labels 0..9, 0, 1."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    labels = (np.arange(12) % 10).astype(np.uint8)
    return images, labels
