"""CIFAR-10 readers on small files written in the official formats; the safe unpickler."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from velocity.data import NORMALIZATION, ChecksumError, DataNotFoundError, load_dataset
from velocity.data._vision import safe_unpickle
from velocity.errors import ValidationError

TRAIN = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
K = 3  # images per batch


def _batches() -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(5)
    out = {}
    for i, name in enumerate((*TRAIN, "test_batch")):
        data = rng.integers(0, 256, size=(K, 3072), dtype=np.uint8)
        out[name] = (data, [(i + j) % 10 for j in range(K)])
    return out


def _python_blob(name: str, data: np.ndarray, labels: list[int]) -> bytes:
    batch = {
        b"batch_label": f"{name} of 6".encode(),
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{j}.png".encode() for j in range(len(labels))],
    }
    # Protocol 4 writes bytes natively (protocol 2 would route them through _codecs.encode,
    # which the reader rightly refuses) and numpy arrays via _reconstruct, as the originals.
    return pickle.dumps(batch, protocol=4)


def _binary_blob(data: np.ndarray, labels: list[int]) -> bytes:
    return np.concatenate([np.array(labels, np.uint8)[:, None], data], axis=1).tobytes()


def _write_python(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name, (data, labels) in _batches().items():
        (folder / name).write_bytes(_python_blob(name, data, labels))


def _write_binary(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name, (data, labels) in _batches().items():
        (folder / f"{name}.bin").write_bytes(_binary_blob(data, labels))


def _expected(split: str) -> tuple[np.ndarray, list[int]]:
    b = _batches()
    names = TRAIN if split == "train" else ("test_batch",)
    return np.concatenate([b[n][0] for n in names]), [lab for n in names for lab in b[n][1]]


def _load(root: Path, split: str = "train", **kw: object) -> torch.Tensor:
    opts: dict[str, object] = {"verify": False, **kw}
    ds = load_dataset("cifar10", split=split, data_dir=root, download=False, **opts)
    _, labels = _expected(split)
    assert ds.x.shape == (len(labels), 3, 32, 32)
    assert ds.x.dtype == torch.float32
    assert ds.y.tolist() == labels
    assert ds.num_classes == 10
    return ds.x


@pytest.mark.parametrize("split", ["train", "test"])
def test_python_batches(tmp_path: Path, split: str) -> None:
    _write_python(tmp_path / "cifar-10-batches-py")
    x = _load(tmp_path, split)
    data, _ = _expected(split)
    mean, std = NORMALIZATION["cifar10"]
    pixels = data.reshape(-1, 3, 32, 32) / 255.0
    expected = (pixels - np.array(mean)[None, :, None, None]) / np.array(std)[None, :, None, None]
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-5, atol=1e-5)
    raw = _load(tmp_path, split, normalize=False)
    np.testing.assert_allclose(raw.numpy(), pixels, atol=1e-6)


@pytest.mark.parametrize("split", ["train", "test"])
def test_binary_batches_match_python_batches(tmp_path: Path, split: str) -> None:
    _write_python(tmp_path / "py" / "cifar-10-batches-py")
    _write_binary(tmp_path / "bin" / "cifar10" / "cifar-10-batches-bin")
    assert torch.equal(_load(tmp_path / "py", split), _load(tmp_path / "bin", split))


def _tar(path: Path, folder: str, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def test_archives_are_read_in_place(tmp_path: Path) -> None:
    b = _batches()
    py = {n: _python_blob(n, d, lab) for n, (d, lab) in b.items()}
    bn = {f"{n}.bin": _binary_blob(d, lab) for n, (d, lab) in b.items()}
    (tmp_path / "a" / "cifar10").mkdir(parents=True)
    _tar(tmp_path / "a" / "cifar10" / "cifar-10-python.tar.gz", "cifar-10-batches-py", py)
    (tmp_path / "b").mkdir()
    _tar(tmp_path / "b" / "cifar-10-binary.tar.gz", "cifar-10-batches-bin", bn)
    xa = _load(tmp_path / "a", "train")
    xb = _load(tmp_path / "b", "train")
    assert torch.equal(xa, xb)
    assert sorted(os.listdir(tmp_path / "a" / "cifar10")) == ["cifar-10-python.tar.gz"]


def test_archive_missing_member(tmp_path: Path) -> None:
    _tar(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", {"test_batch": b"x"})
    with pytest.raises(ValidationError, match="lacks cifar-10-batches-py/data_batch_1"):
        _load(tmp_path, "train")


def test_found_official_batch_with_wrong_checksum(tmp_path: Path) -> None:
    _write_python(tmp_path / "cifar-10-batches-py")
    with pytest.raises(ChecksumError, match="test_batch"):
        load_dataset("cifar10", split="test", data_dir=tmp_path, download=False)


def test_missing_split_is_reported(tmp_path: Path) -> None:
    _write_python(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("cifar10", split="test", data_dir=tmp_path, download=False)
    msg = str(info.value)
    assert "test_batch.bin" in msg
    assert "cifar-10-python.tar.gz" in msg
    assert "www.cs.toronto.edu" in msg


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_unpickler_refuses_code(tmp_path: Path) -> None:
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to unpickle global .*system"):
        safe_unpickle(pickle.dumps({b"data": _Evil()}))
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(
        pickle.dumps({b"data": _Evil(), b"labels": [0]})
    )
    with pytest.raises(ValidationError, match="refusing"):
        _load(tmp_path, "test")


def test_unpickler_allows_only_numpy_arrays() -> None:
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = safe_unpickle(pickle.dumps({b"data": arr, "k": [1, (2, 3.0)]}, protocol=4))
    np.testing.assert_array_equal(out[b"data"], arr)
    assert out["k"] == [1, (2, 3.0)]
    with pytest.raises(pickle.UnpicklingError, match=r"collections\.OrderedDict"):
        safe_unpickle(pickle.dumps(__import__("collections").OrderedDict(a=1)))


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ([1, 2], "expected a pickled dict"),
        ({b"labels": [0]}, "no 'data' entry"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "3072 columns"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]}, "labels must be 0-9"),
    ],
)
def test_malformed_python_batch(tmp_path: Path, batch: object, match: str) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=4))
    with pytest.raises(ValidationError, match=match):
        load_dataset("cifar10", split="test", data_dir=tmp_path, download=False, verify=False)


def test_malformed_binary_batch(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    (folder / "test_batch.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(ValidationError, match="3073-byte records"):
        load_dataset("cifar10", split="test", data_dir=tmp_path, download=False, verify=False)
