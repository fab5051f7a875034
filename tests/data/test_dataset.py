"""ArrayDataset: validation, length, and the checksum used by replay manifests."""

from __future__ import annotations

import hashlib

import pytest
import torch

import velocity.data._dataset as dataset_module
from velocity.data import ArrayDataset
from velocity.errors import ValidationError


def _ds(**kw: object) -> ArrayDataset:
    args: dict[str, object] = {
        "name": "toy",
        "x": torch.arange(12, dtype=torch.float32).reshape(4, 3),
        "y": torch.tensor([0, 1, 2, 1]),
        "num_classes": 3,
    }
    args.update(kw)
    return ArrayDataset(**args)  # type: ignore[arg-type]


def test_len_and_fields() -> None:
    ds = _ds(groups=torch.tensor([0, 0, 1, 1]), group_names=("a", "b"))
    assert len(ds) == 4
    assert ds.group_names == ("a", "b")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"y": torch.tensor([0, 1, 2])}, "4 rows but y has 3"),
        ({"y": torch.tensor([0.0, 1.0, 2.0, 1.0])}, "int64"),
        ({"y": torch.tensor([0, 1, 3, 1])}, r"\[0, 3\)"),
        ({"num_classes": 0}, "num_classes"),
        ({"groups": torch.tensor([0, 1])}, "groups"),
        ({"groups": torch.tensor([0, -1, 0, 0])}, ">= 0"),
        ({"group_names": ("a",)}, "without groups"),
        ({"groups": torch.tensor([0, 1, 2, 2]), "group_names": ("a", "b")}, "no name"),
        ({"x": torch.tensor(1.0)}, "shape"),
    ],
)
def test_validation(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        _ds(**kw)


def test_checksum_definition() -> None:
    ds = _ds()
    header = b"velocity.ArrayDataset/1 x=torch.float32(4, 3) y=torch.int64(4,)\n"
    expected = hashlib.sha256(header + ds.x.numpy().tobytes() + ds.y.numpy().tobytes())
    assert ds.checksum() == expected.hexdigest()


def test_checksum_sensitivity() -> None:
    base = _ds().checksum()
    assert _ds().checksum() == base
    assert _ds(y=torch.tensor([0, 1, 2, 2])).checksum() != base
    x = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    x[3, 2] = -1
    assert _ds(x=x).checksum() != base
    # same bytes, different shape -> different digest
    assert _ds(x=torch.arange(12, dtype=torch.float32).reshape(4, 3, 1)).checksum() != base


def test_checksum_of_view_equals_contiguous_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_module, "_HASH_CHUNK_BYTES", 64)  # force many chunks
    buf = torch.arange(200, dtype=torch.int64)
    x_view = buf.unfold(0, 10, 1)[:150]
    y = torch.zeros(150, dtype=torch.int64)
    a = ArrayDataset("v", x_view, y, num_classes=1)
    b = ArrayDataset("v", x_view.contiguous(), y, num_classes=1)
    assert not x_view.is_contiguous()
    assert a.checksum() == b.checksum()


def test_empty_dataset() -> None:
    ds = ArrayDataset("e", torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64), num_classes=2)
    assert len(ds) == 0
    assert len(ds.checksum()) == 64
