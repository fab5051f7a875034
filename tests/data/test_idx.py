"""IDX reading (MNIST, Fashion-MNIST): header validation, truncation, loading and real stats."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from velocity.data import NORMALIZATION, ChecksumError, load_dataset
from velocity.data._idx import parse_idx, read_idx
from velocity.errors import ValidationError

IdxWriter = Callable[..., None]


def test_parse_roundtrip(make_idx: Callable[[np.ndarray], bytes]) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = parse_idx(make_idx(arr), source="t", expected_ndim=3)
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)
    # magic numbers of the real files
    assert int.from_bytes(make_idx(arr)[:4], "big") == 2051
    assert int.from_bytes(make_idx(arr[0, 0])[:4], "big") == 2049


def test_parse_big_endian_int32() -> None:
    raw = struct.pack(">HBBI", 0, 0x0C, 1, 2) + struct.pack(">ii", 1, -2)
    assert parse_idx(raw, source="t").tolist() == [1, -2]


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x00\x00", "no header"),
        (b"\x01\x00\x08\x01" + b"\x00" * 8, "not an IDX file"),
        (b"\x00\x00\x07\x01" + b"\x00" * 8, "element type 0x07"),
        (struct.pack(">HBBI", 0, 8, 1, 5) + b"\x01\x02", "truncated IDX file"),
        (struct.pack(">HBB", 0, 8, 3) + b"\x00\x00\x00\x01", "truncated IDX header"),
        (struct.pack(">HBBI", 0, 8, 1, 1) + b"\x01\x02", "unexpected bytes"),
    ],
)
def test_parse_rejects(raw: bytes, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        parse_idx(raw, source="t")


def test_expected_ndim_names_magic(make_idx: Callable[[np.ndarray], bytes]) -> None:
    with pytest.raises(ValidationError, match=r"magic number 2049.*expected 2051"):
        parse_idx(make_idx(np.zeros(3, np.uint8)), source="t", expected_ndim=3)


def test_read_gzip_and_raw(tmp_path: Path, make_idx: Callable[[np.ndarray], bytes]) -> None:
    arr = np.arange(6, dtype=np.uint8)
    (tmp_path / "a").write_bytes(make_idx(arr))
    (tmp_path / "a.gz").write_bytes(gzip.compress(make_idx(arr)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz", expected_ndim=1), arr)


def test_truncated_gzip(tmp_path: Path, make_idx: Callable[[np.ndarray], bytes]) -> None:
    blob = gzip.compress(make_idx(np.arange(200, dtype=np.uint8)))
    (tmp_path / "t.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValidationError, match="truncated gzip"):
        read_idx(tmp_path / "t.gz")
    (tmp_path / "c.gz").write_bytes(blob[:10] + b"\xff" * 40)
    with pytest.raises(ValidationError, match="gzip"):
        read_idx(tmp_path / "c.gz")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_load_small_files(
    tmp_path: Path,
    idx_writer: IdxWriter,
    tiny_mnist: tuple[np.ndarray, np.ndarray],
    name: str,
    gz: bool,
) -> None:
    images, labels = tiny_mnist
    idx_writer(tmp_path / name, "test", images, labels, gz=gz)
    ds = load_dataset(name, split="test", data_dir=tmp_path, download=False, verify=False)
    assert ds.name == name
    assert ds.x.shape == (12, 1, 28, 28)
    assert ds.x.dtype == torch.float32
    assert ds.y.dtype == torch.int64
    assert ds.y.tolist() == labels.tolist()
    mean, std = NORMALIZATION[name]
    expected = (images.astype(np.float64) / 255 - mean[0]) / std[0]
    np.testing.assert_allclose(ds.x[:, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    raw = load_dataset(
        name, split="test", data_dir=tmp_path, download=False, verify=False, normalize=False
    )
    np.testing.assert_allclose(raw.x[:, 0].numpy(), images / 255, atol=1e-6)


def test_found_official_file_with_wrong_checksum(
    tmp_path: Path, idx_writer: IdxWriter, tiny_mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    idx_writer(tmp_path / "mnist", "train", *tiny_mnist)
    with pytest.raises(ChecksumError, match=r"train-images-idx3-ubyte\.gz.*MD5"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_uncompressed_files_have_no_official_checksum(
    tmp_path: Path, idx_writer: IdxWriter, tiny_mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    idx_writer(tmp_path / "mnist", "train", *tiny_mnist, gz=False)
    assert len(load_dataset("mnist", data_dir=tmp_path, download=False)) == 12


def test_mismatched_counts_and_bad_labels(
    tmp_path: Path, idx_writer: IdxWriter, tiny_mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = tiny_mnist
    idx_writer(tmp_path / "a" / "mnist", "train", images, labels[:5])
    with pytest.raises(ValidationError, match=r"12 images.*5 labels"):
        load_dataset("mnist", data_dir=tmp_path / "a", download=False, verify=False)
    bad = labels.copy()
    bad[0] = 11
    idx_writer(tmp_path / "b" / "mnist", "train", images, bad)
    with pytest.raises(ValidationError, match="labels must be 0-9"):
        load_dataset("mnist", data_dir=tmp_path / "b", download=False, verify=False)
    idx_writer(tmp_path / "c" / "mnist", "train", images[:, :14], labels)
    with pytest.raises(ValidationError, match="28x28"):
        load_dataset("mnist", data_dir=tmp_path / "c", download=False, verify=False)


# ------------------------------------------------------------------------- the real files

_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
_EXPECTED = {
    # README of the shared data: pixel means and label counts.
    ("mnist", "train"): (
        33.318,
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    ),
    ("mnist", "test"): (33.791, [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]),
    ("fashion_mnist", "train"): (72.940, [6000] * 10),
    ("fashion_mnist", "test"): (73.147, [1000] * 10),
}


@pytest.mark.parametrize(("name", "split"), list(_EXPECTED))
def test_real_data_statistics(
    real_data: Callable[[str, tuple[str, ...]], Path], name: str, split: str
) -> None:
    root = real_data(name, _FILES)
    pixel_mean, counts = _EXPECTED[(name, split)]
    ds = load_dataset(name, split=split, data_dir=root, download=False, normalize=False)
    n = sum(counts)
    assert ds.x.shape == (n, 1, 28, 28)
    assert float(ds.x.double().mean()) * 255 == pytest.approx(pixel_mean, abs=5e-4)
    assert torch.bincount(ds.y, minlength=10).tolist() == counts
    if split == "train":
        # The documented normalisation constants are this split's mean and std.
        z = load_dataset(name, split=split, data_dir=root, download=False).x.double()
        assert float(z.mean()) == pytest.approx(0.0, abs=1e-3)
        assert float(z.std()) == pytest.approx(1.0, abs=1e-3)
