"""sha256_hex, file_digest, state_digest and digest_rows against independent re-implementations."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from velocity.errors import ConfigurationError, ValidationError
from velocity.governance import digest_rows, file_digest, sha256_hex, state_digest
from velocity.types import tensor_digest


def test_sha256_hex_known_vectors() -> None:
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256_hex(memoryview(b"abc")) == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize("chunk_size", [1, 7, 4096, 1 << 20])
def test_file_digest_streams_in_chunks(tmp_path: Path, chunk_size: int) -> None:
    data = bytes(range(256)) * 41 + b"tail"
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_digest(path, chunk_size=chunk_size) == hashlib.sha256(data).hexdigest()


def test_file_digest_errors(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        file_digest(tmp_path / "missing.bin")
    with pytest.raises(ValidationError, match="not a regular file"):
        file_digest(tmp_path)
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(ConfigurationError, match="chunk_size must be an int >= 1; got 0"):
        file_digest(tmp_path / "f", chunk_size=0)


# ------------------------------------------------------------------------------ state_digest


def auditor_state_digest(tensors: dict[str, np.ndarray], dtypes: dict[str, str]) -> str:
    """The layout of state_digest's docstring, written from scratch with struct and hashlib."""
    h = hashlib.sha256(b"VFLSTATE1\n")
    for name in sorted(tensors):
        array = tensors[name]
        header = json.dumps(
            {"dtype": dtypes[name], "name": name, "shape": list(array.shape)},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8")
        h.update(struct.pack("<Q", len(header)))
        h.update(header)
        h.update(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


def test_state_digest_matches_an_independent_implementation() -> None:
    gen = torch.Generator().manual_seed(0)
    state = {
        "layer.weight": torch.randn(4, 3, generator=gen),
        "layer.bias": torch.randn(4, generator=gen),
        "bn.num_batches_tracked": torch.tensor(17),
        "mask": torch.tensor([True, False, True]),
        "half": torch.randn(2, 2, generator=gen).half(),
        "empty": torch.zeros(0, 5),
        "counts": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "ünï": torch.ones(1, dtype=torch.float64),
    }
    arrays = {name: t.numpy() for name, t in state.items()}
    dtypes = {name: str(t.dtype).removeprefix("torch.") for name, t in state.items()}
    assert state_digest(state) == auditor_state_digest(arrays, dtypes)


def test_state_digest_bfloat16_hashes_its_two_byte_values() -> None:
    t = torch.tensor([1.0, -2.5, 3.25], dtype=torch.bfloat16)
    raw = t.view(torch.int16).numpy()
    assert state_digest({"w": t}) == auditor_state_digest({"w": raw}, {"w": "bfloat16"})


def test_state_digest_is_order_free_and_layout_free() -> None:
    w = torch.arange(12.0).reshape(3, 4)
    a = state_digest({"w": w, "b": torch.ones(2)})
    assert a == state_digest({"b": torch.ones(2), "w": w})
    assert a == state_digest({"w": w.t().contiguous().t(), "b": torch.ones(2)})  # strides differ
    assert a == state_digest({"w": w.t().t(), "b": torch.ones(2).requires_grad_()})


@pytest.mark.parametrize(
    "other",
    [
        {"w": torch.arange(12.0).reshape(4, 3), "b": torch.ones(2)},  # shape
        {"w": torch.arange(12.0).reshape(3, 4).double(), "b": torch.ones(2)},  # dtype
        {"v": torch.arange(12.0).reshape(3, 4), "b": torch.ones(2)},  # name
        {"w": torch.arange(12.0).reshape(3, 4)},  # missing tensor
    ],
)
def test_state_digest_sees_shape_dtype_and_names(other: dict[str, torch.Tensor]) -> None:
    base = {"w": torch.arange(12.0).reshape(3, 4), "b": torch.ones(2)}
    assert state_digest(base) != state_digest(other)


def test_state_digest_does_not_copy_contiguous_cpu_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    t = torch.randn(1000)
    seen: list[int] = []
    real = hashlib.sha256

    class Spy:
        def __init__(self, data: bytes = b"") -> None:
            self._h = real(data)

        def update(self, data: memoryview) -> None:
            if isinstance(data, memoryview) and data.nbytes == 4000:
                seen.append(np.frombuffer(data, dtype=np.uint8).ctypes.data)
            self._h.update(data)

        def hexdigest(self) -> str:
            return self._h.hexdigest()

    monkeypatch.setattr(hashlib, "sha256", Spy)
    state_digest({"t": t})
    assert seen == [t.data_ptr()]


def test_state_digest_refusals() -> None:
    with pytest.raises(ValidationError, match=r"must be a torch\.Tensor"):
        state_digest({"w": [1.0, 2.0]})  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match="names must be str"):
        state_digest({1: torch.ones(1)})  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match="to_dense"):
        state_digest({"s": torch.eye(3).to_sparse()})
    with pytest.raises(ValidationError, match="needs a mapping"):
        state_digest([torch.ones(1)])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- digest_rows


@pytest.mark.parametrize(
    "rows",
    [
        torch.randn(5, 33, generator=torch.Generator().manual_seed(1)),
        torch.randn(33, 5, generator=torch.Generator().manual_seed(2)).t(),  # non-contiguous
        torch.randn(4, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3)),
        torch.randn(3, 6, generator=torch.Generator().manual_seed(4)).half(),
        torch.zeros(3, 0),
        torch.zeros(0, 8),
        torch.tensor([[0.0, -0.0, float("nan"), float("inf")]]),
    ],
)
def test_digest_rows_equals_tensor_digest(rows: torch.Tensor) -> None:
    assert digest_rows(rows) == [tensor_digest(rows[i]) for i in range(rows.shape[0])]


def test_digest_rows_threads_give_the_same_list() -> None:
    rows = torch.randn(24, 70_000, generator=torch.Generator().manual_seed(5))  # 6.7 MB
    serial = digest_rows(rows, workers=1)
    assert digest_rows(rows, workers=4) == serial
    assert digest_rows(rows, workers=100) == serial
    assert digest_rows(rows) == serial
    assert serial[7] == hashlib.sha256(rows[7].numpy().tobytes()).hexdigest()


def test_digest_rows_hashes_contiguous_rows_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = torch.randn(3, 100)
    pointers: list[int] = []
    real = hashlib.sha256

    def spy(data: np.ndarray) -> object:
        pointers.append(data.ctypes.data)
        return real(data)

    monkeypatch.setattr(hashlib, "sha256", spy)
    digest_rows(rows, workers=1)
    assert pointers == [rows[i].data_ptr() for i in range(3)]


def test_digest_rows_refusals() -> None:
    with pytest.raises(ValidationError, match=r"needs an \(n, d\) tensor; got shape \(3,\)"):
        digest_rows(torch.ones(3))
    with pytest.raises(ValidationError, match=r"torch\.Tensor"):
        digest_rows(np.ones((2, 2)))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="dense real tensor"):
        digest_rows(torch.ones(2, 2, dtype=torch.complex64))
    with pytest.raises(ConfigurationError, match="workers must be an int >= 1"):
        digest_rows(torch.ones(2, 2), workers=0)


def test_benchmark_script_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "hashing.py"
    spec = importlib.util.spec_from_file_location("governance_hashing_benchmark", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    assert module.main(["--n", "2", "--d", "1000", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "digest_rows / hashlib" in out
    assert "yes" in out
