"""Where files are looked for, what the not-found error says, and the verified download."""

from __future__ import annotations

import gzip
import hashlib
import io
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import velocity.data._sources as sources
import velocity.data._vision as vision
from velocity.data import ChecksumError, DataNotFoundError, load_dataset

IdxWriter = Callable[..., None]


def _pair(label: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((3, 28, 28), np.uint8), np.full(3, label, np.uint8)


def test_lookup_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path, idx_writer: IdxWriter
) -> None:
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    idx_writer(explicit / "mnist", "test", *_pair(1))
    idx_writer(env, "test", *_pair(2))  # files directly in the root
    idx_writer(isolated_env / "mnist", "test", *_pair(3))
    monkeypatch.setenv("VELOCITY_DATA", str(env))

    def first_label(data_dir: Path | None) -> int:
        ds = load_dataset("mnist", split="test", data_dir=data_dir, download=False, verify=False)
        return int(ds.y[0])

    assert first_label(explicit) == 1
    assert first_label(tmp_path / "nowhere") == 2
    assert first_label(None) == 2
    monkeypatch.delenv("VELOCITY_DATA")
    assert first_label(None) == 3


@pytest.mark.parametrize("sub", ["", "mnist", "MNIST/raw"])
def test_subfolder_layouts(tmp_path: Path, idx_writer: IdxWriter, sub: str) -> None:
    idx_writer(tmp_path / sub if sub else tmp_path, "train", *_pair(4))
    ds = load_dataset("mnist", data_dir=tmp_path, download=False, verify=False)
    assert ds.y.tolist() == [4, 4, 4]


def test_a_folder_must_hold_every_file_of_the_split(tmp_path: Path, idx_writer: IdxWriter) -> None:
    idx_writer(tmp_path / "mnist", "train", *_pair(0))
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_not_found_message_lists_places_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    monkeypatch.setenv("VELOCITY_DATA", str(tmp_path / "envdata"))
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("fashion_mnist", split="test", data_dir=tmp_path / "mine", download=False)
    msg = str(info.value)
    for place in (
        tmp_path / "mine",
        tmp_path / "mine" / "fashion_mnist",
        tmp_path / "envdata" / "fashion_mnist",
        isolated_env / "fashion_mnist",
    ):
        assert str(place) in msg
    assert "download=False" in msg
    assert "t10k-images-idx3-ubyte.gz" in msg
    assert "t10k-labels-idx1-ubyte.gz" in msg
    assert "fashion-mnist.s3-website" in msg
    assert isinstance(info.value, ValueError)


def test_unset_env_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"\$VELOCITY_DATA: \(not set\)"):
        load_dataset("mnist", download=False)


# ------------------------------------------------------------------------------ downloads


class _FakeWeb:
    """Stands in for ``urllib.request.urlopen``: serves bytes per URL, or fails."""

    def __init__(self, pages: dict[str, bytes | Exception]) -> None:
        self.pages = pages
        self.calls: list[tuple[str, float | None]] = []

    def __call__(self, request: urllib.request.Request, timeout: float | None = None) -> object:
        url = request.full_url
        self.calls.append((url, timeout))
        page = self.pages.get(url, urllib.error.URLError("no route to host"))
        if isinstance(page, Exception):
            raise page
        return io.BytesIO(page)


def _gz_pair(label: int) -> dict[str, bytes]:
    images, labels = _pair(label)
    out = {}
    for name, arr in (("t10k-images-idx3-ubyte.gz", images), ("t10k-labels-idx1-ubyte.gz", labels)):
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
        out[name] = gzip.compress(header + arr.tobytes(), mtime=0)
    return out


def _pin_md5(monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes]) -> None:
    for name, blob in files.items():
        monkeypatch.setitem(vision._IDX_MD5["mnist"], name, hashlib.md5(blob).hexdigest())


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.part"))


def test_download_verifies_and_writes_atomically(
    monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    files = _gz_pair(7)
    _pin_md5(monkeypatch, files)
    official, mirror = vision._MNIST_URLS
    web = _FakeWeb(
        {
            # the official host is down; the mirror answers
            **{mirror + n: b for n, b in files.items()},
        }
    )
    monkeypatch.setattr(urllib.request, "urlopen", web)
    ds = load_dataset("mnist", split="test", timeout=5)
    assert ds.y.tolist() == [7, 7, 7]
    cached = isolated_env / "mnist"
    for name, blob in files.items():
        assert (cached / name).read_bytes() == blob
    assert _leftovers(isolated_env) == []
    assert [u for u, _ in web.calls] == [
        official + "t10k-images-idx3-ubyte.gz",
        mirror + "t10k-images-idx3-ubyte.gz",
        official + "t10k-labels-idx1-ubyte.gz",
        mirror + "t10k-labels-idx1-ubyte.gz",
    ]
    assert {t for _, t in web.calls} == {5.0}
    # second load: served from the cache, no network
    web.calls.clear()
    assert load_dataset("mnist", split="test").y.tolist() == [7, 7, 7]
    assert web.calls == []


def test_download_checksum_mismatch_keeps_nothing(
    monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    files = _gz_pair(1)
    _pin_md5(monkeypatch, files)
    tampered = {n: b[:-1] + bytes([b[-1] ^ 1]) for n, b in files.items()}
    web = _FakeWeb({base + n: b for base in vision._MNIST_URLS for n, b in tampered.items()})
    monkeypatch.setattr(urllib.request, "urlopen", web)
    with pytest.raises(ChecksumError, match="expected"):
        load_dataset("mnist", split="test")
    assert not (isolated_env / "mnist" / "t10k-images-idx3-ubyte.gz").exists()
    assert _leftovers(isolated_env) == []


class _BrokenStream(io.BytesIO):
    def read(self, size: int | None = -1) -> bytes:
        if self.tell() > 0:
            raise TimeoutError("read timed out")
        return super().read(4)


def test_interrupted_download_leaves_no_partial_file(
    monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    files = _gz_pair(1)
    _pin_md5(monkeypatch, files)

    def urlopen(request: urllib.request.Request, timeout: float | None = None) -> object:
        return _BrokenStream(files[request.full_url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(DataNotFoundError, match="read timed out"):
        load_dataset("mnist", split="test")
    assert list((isolated_env / "mnist").iterdir()) == []


def test_offline_raises_not_found_with_reasons(isolated_env: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist", split="test")
    msg = str(info.value)
    assert "download failed" in msg
    assert "no route" in msg or "network disabled" in msg
    assert "ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz" in msg
    assert str(isolated_env / "mnist") in msg


def test_only_http_urls_are_fetched(tmp_path: Path) -> None:
    remote = sources.RemoteFile("x.bin", ("file:///etc/hostname",), md5="0" * 32)
    with pytest.raises(sources._DownloadFailed, match="refusing"):
        sources._download(remote, tmp_path, 1.0)
    assert list(tmp_path.iterdir()) == []


def test_cache_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VELOCITY_CACHE")
    assert sources.cache_root() == Path("~/.cache/velocity").expanduser()
