"""MNIST, Fashion-MNIST and CIFAR-10 (private).

Images become float32 tensors scaled to ``[0, 1]`` and then, by default, standardised per
channel with the mean and standard deviation of the *training* split (:data:`NORMALIZATION`),
the same constants for both splits:

.. math:: x = (p / 255 - \\mu_c) / \\sigma_c
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from velocity.data._checks import check_bool, check_positive_float
from velocity.data._dataset import ArrayDataset
from velocity.data._idx import read_idx
from velocity.data._sources import DEFAULT_TIMEOUT, Layout, RemoteFile, locate
from velocity.errors import ValidationError

__all__ = ["NORMALIZATION", "load_cifar10", "load_fashion_mnist", "load_mnist", "safe_unpickle"]

NORMALIZATION: Final[Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
    # (per-channel mean, per-channel std) of the training split, pixels scaled to [0, 1].
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
"""Mean and standard deviation per channel of each image dataset's training split."""

# --------------------------------------------------------------------------- MNIST-style IDX

_MNIST_URLS = (
    "http://yann.lecun.com/exdb/mnist/",  # official
    "https://ossci-datasets.s3.amazonaws.com/mnist/",  # the PyTorch mirror
)
_FASHION_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

_IDX_MD5: Final[Mapping[str, Mapping[str, str]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
_IDX_SUBDIRS: Final[Mapping[str, tuple[str, ...]]] = {
    "mnist": ("mnist", "MNIST", "MNIST/raw"),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist", "FashionMNIST", "FashionMNIST/raw"),
}


def _idx_files(split: str) -> tuple[str, str]:
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _standardize(pixels: np.ndarray, name: str, normalize: bool) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> float32 ``(p / 255 - mean) / std`` per channel (or ``p / 255``)."""
    x = pixels.astype(np.float32)
    if normalize:
        mean, std = NORMALIZATION[name]
        scale = np.array([1.0 / (255.0 * s) for s in std], dtype=np.float32)
        shift = np.array([m / s for m, s in zip(mean, std, strict=True)], dtype=np.float32)
        x *= scale.reshape(1, -1, 1, 1)
        x -= shift.reshape(1, -1, 1, 1)
    else:
        x *= np.float32(1.0 / 255.0)
    return torch.from_numpy(x)


def _load_idx_dataset(
    name: str,
    urls: tuple[str, ...],
    split: str,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
    *,
    normalize: object,
    verify: object,
    timeout: object,
) -> ArrayDataset:
    where = f"load_dataset({name!r})"
    do_norm = check_bool(normalize, "normalize", where)
    do_verify = check_bool(verify, "verify", where)
    secs = check_positive_float(timeout, "timeout", where)
    images, labels = _idx_files(split)
    layout = Layout(
        "IDX",
        ((f"{images}.gz", images), (f"{labels}.gz", labels)),
        _IDX_SUBDIRS[name],
    )
    md5 = _IDX_MD5[name]
    remotes = [
        RemoteFile(f, tuple(base + f for base in urls), md5=md5[f])
        for f in (f"{images}.gz", f"{labels}.gz")
    ]
    found = locate(
        name,
        split,
        [layout],
        data_dir=data_dir,
        download=download,
        remotes=remotes,
        cache_subdir=name,
        verify=do_verify,
        timeout=secs,
    )
    image_path, label_path = found.paths
    img = read_idx(image_path, expected_ndim=3)
    lab = read_idx(label_path, expected_ndim=1)
    if img.dtype != np.uint8 or lab.dtype != np.uint8:
        raise ValidationError(f"{name}: expected uint8 IDX files; got {img.dtype}, {lab.dtype}")
    if img.shape[1:] != (28, 28):
        raise ValidationError(f"{image_path}: expected 28x28 images; got {img.shape[1:]}")
    if img.shape[0] != lab.shape[0]:
        raise ValidationError(
            f"{name}: {img.shape[0]} images in {image_path.name} but {lab.shape[0]} labels "
            f"in {label_path.name}"
        )
    if lab.size and int(lab.max()) > 9:
        raise ValidationError(f"{label_path}: labels must be 0-9; found {int(lab.max())}")
    x = _standardize(img[:, None, :, :], name, do_norm)
    y = torch.from_numpy(lab.astype(np.int64))
    return ArrayDataset(name, x, y, num_classes=10)


def load_mnist(
    split: str,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
    *,
    normalize: object = True,
    verify: object = True,
    timeout: object = DEFAULT_TIMEOUT,
) -> ArrayDataset:
    """MNIST (LeCun et al. 1998): 60,000 train / 10,000 test digits, ``x`` (N, 1, 28, 28)."""
    return _load_idx_dataset(
        "mnist",
        _MNIST_URLS,
        split,
        data_dir,
        download,
        normalize=normalize,
        verify=verify,
        timeout=timeout,
    )


def load_fashion_mnist(
    split: str,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
    *,
    normalize: object = True,
    verify: object = True,
    timeout: object = DEFAULT_TIMEOUT,
) -> ArrayDataset:
    """Fashion-MNIST (Xiao et al. 2017): same format and sizes as MNIST, 10 clothing classes."""
    return _load_idx_dataset(
        "fashion_mnist",
        _FASHION_URLS,
        split,
        data_dir,
        download,
        normalize=normalize,
        verify=verify,
        timeout=timeout,
    )


# --------------------------------------------------------------------------------- CIFAR-10

_CIFAR_PY_MD5: Final[Mapping[str, str]] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
_CIFAR_PY_ARCHIVE = RemoteFile(
    "cifar-10-python.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    md5="c58f30108f718f92721af3b95e74349a",
)
_CIFAR_BIN_ARCHIVE = RemoteFile(
    "cifar-10-binary.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
    md5="c32a1d4ab5d03f1284b67883e8d87530",
)
_CIFAR_RECORD = 1 + 3072
_MAX_MEMBER_BYTES = 64 << 20

_ALLOWED_GLOBALS: Final = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)


def _numpy_reconstruct() -> Any:
    import importlib

    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):  # pragma: no cover - depends on numpy's version
            continue
    raise pickle.UnpicklingError("numpy's array reconstructor is not available")  # pragma: no cover


class _NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; refuses every other global.

    The only callables a pickle may name are numpy's array reconstruction helpers
    (``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``,
    ``numpy.ndarray``, ``numpy.dtype``), so loading a crafted file cannot run code.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: only numpy arrays are allowed "
                "in a CIFAR batch"
            )
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return np.ndarray if name == "ndarray" else np.dtype


def safe_unpickle(data: bytes) -> Any:
    """Unpickle ``data`` allowing nothing but builtin containers and numpy arrays.

    Keys and strings of Python 2 pickles (the official CIFAR batches) come back as ``bytes``.

    >>> import pickle, numpy as np
    >>> safe_unpickle(pickle.dumps({b"labels": [1, 2]}, protocol=4))
    {b'labels': [1, 2]}
    >>> safe_unpickle(pickle.dumps(print))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    _pickle.UnpicklingError: refusing to unpickle global builtins.print: ...
    """
    return _NumpyArrayUnpickler(io.BytesIO(data), encoding="bytes").load()


def _get(batch: Mapping[Any, Any], key: str) -> Any:
    if key.encode() in batch:
        return batch[key.encode()]
    if key in batch:
        return batch[key]
    raise ValidationError(f"CIFAR batch has no {key!r} entry (keys: {sorted(map(repr, batch))})")


def _parse_python_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = safe_unpickle(data)
    except pickle.UnpicklingError as e:
        raise ValidationError(f"{source}: {e}") from e
    except Exception as e:  # malformed pickles raise many types
        raise ValidationError(
            f"{source}: not a CIFAR python batch ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(batch, dict):
        raise ValidationError(f"{source}: expected a pickled dict; got {type(batch).__name__}")
    images = _get(batch, "data")
    labels = np.asarray(_get(batch, "labels"))
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2:
        raise ValidationError(f"{source}: 'data' must be a uint8 array of shape (k, 3072)")
    if images.shape[1] != 3072:
        raise ValidationError(f"{source}: 'data' must have 3072 columns; got {images.shape[1]}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValidationError(f"{source}: {images.shape[0]} images but {labels.size} labels")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValidationError(f"{source}: labels must be integers; got dtype {labels.dtype}")
    return images, labels.astype(np.int64)


def _parse_binary_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    if len(data) == 0 or len(data) % _CIFAR_RECORD:
        raise ValidationError(
            f"{source}: a CIFAR-10 binary batch is a whole number of {_CIFAR_RECORD}-byte "
            f"records (1 label byte + 3072 pixel bytes); got {len(data)} bytes"
        )
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    return rec[:, 1:], rec[:, 0].astype(np.int64)


def _cifar_layouts(split: str) -> list[Layout]:
    py = (
        ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
        if split == "train"
        else ("test_batch",)
    )
    return [
        Layout("python-archive", (("cifar-10-python.tar.gz",),), ("cifar10",)),
        Layout(
            "python-batches",
            tuple((n,) for n in py),
            ("cifar-10-batches-py", "cifar10", "cifar10/cifar-10-batches-py"),
        ),
        Layout(
            "binary-batches",
            tuple((f"{n}.bin",) for n in py),
            ("cifar-10-batches-bin", "cifar10", "cifar10/cifar-10-batches-bin"),
        ),
        Layout("binary-archive", (("cifar-10-binary.tar.gz",),), ("cifar10",)),
    ]


def _read_archive(path: Path, folder: str, names: tuple[str, ...]) -> dict[str, bytes]:
    """Read ``folder/name`` members of a tar.gz without extracting anything to disk."""
    wanted = {f"{folder}/{n}": n for n in names}
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                key = wanted.get(member.name)
                if key is None or not member.isfile():
                    continue
                if member.size > _MAX_MEMBER_BYTES:
                    raise ValidationError(f"{path}: member {member.name} is implausibly large")
                f = tar.extractfile(member)
                if f is None:  # pragma: no cover - isfile() members always have data
                    continue
                out[key] = f.read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValidationError(f"{path}: unreadable archive ({type(e).__name__}: {e})") from e
    missing = [f"{folder}/{n}" for n in names if n not in out]
    if missing:
        raise ValidationError(f"{path}: archive lacks {', '.join(missing)}")
    return out


def load_cifar10(
    split: str,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
    *,
    normalize: object = True,
    verify: object = True,
    timeout: object = DEFAULT_TIMEOUT,
) -> ArrayDataset:
    """CIFAR-10 (Krizhevsky 2009): 50,000 train / 10,000 test colour images, ``x`` (N, 3, 32, 32).

    Reads the official python batches (through a restricted unpickler) or the binary batches,
    as folders or as the official ``.tar.gz`` archives (read in place, never extracted).
    """
    where = "load_dataset('cifar10')"
    do_norm = check_bool(normalize, "normalize", where)
    do_verify = check_bool(verify, "verify", where)
    secs = check_positive_float(timeout, "timeout", where)
    layouts = _cifar_layouts(split)
    remotes = [_CIFAR_PY_ARCHIVE, _CIFAR_BIN_ARCHIVE] + [
        RemoteFile(n, (), md5=m) for n, m in _CIFAR_PY_MD5.items()
    ]
    found = locate(
        "cifar10",
        split,
        layouts,
        data_dir=data_dir,
        download=download,
        remotes=remotes,
        cache_subdir="cifar10",
        verify=do_verify,
        timeout=secs,
    )
    names = tuple(n[0].removesuffix(".bin") for n in layouts[1].files)
    kind = found.layout.kind
    batches: list[tuple[np.ndarray, np.ndarray]] = []
    if kind == "python-batches":
        batches = [_parse_python_batch(p.read_bytes(), str(p)) for p in found.paths]
    elif kind == "binary-batches":
        batches = [_parse_binary_batch(p.read_bytes(), str(p)) for p in found.paths]
    elif kind == "python-archive":
        members = _read_archive(found.paths[0], "cifar-10-batches-py", names)
        batches = [_parse_python_batch(members[n], f"{found.paths[0]}:{n}") for n in names]
    else:
        bin_names = tuple(f"{n}.bin" for n in names)
        members = _read_archive(found.paths[0], "cifar-10-batches-bin", bin_names)
        batches = [_parse_binary_batch(members[n], f"{found.paths[0]}:{n}") for n in bin_names]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise ValidationError(
            f"cifar10: labels must be 0-9; found {int(labels.min())}..{int(labels.max())}"
        )
    x = _standardize(images.reshape(-1, 3, 32, 32), "cifar10", do_norm)
    return ArrayDataset("cifar10", x, torch.from_numpy(labels), num_classes=10)
