"""Reader for the IDX format of MNIST and Fashion-MNIST (private).

An IDX file (LeCun et al., http://yann.lecun.com/exdb/mnist/) is, with every integer
big-endian::

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte  3     number of dimensions d
    4 * d bytes the dimension sizes (uint32)
    the data    prod(sizes) elements, row-major

Read as one uint32, bytes 0-3 are the "magic number": 2049 for a label file (uint8, d=1) and
2051 for an image file (uint8, d=3). Files may be gzip-compressed (detected from the gzip
magic bytes, whatever their name).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from velocity.errors import ValidationError

__all__ = ["parse_idx", "read_idx"]

_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(data: bytes, *, source: str, expected_ndim: int | None = None) -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file into a read-only numpy array.

    Raises :class:`velocity.errors.ValidationError` naming ``source`` for a bad header, a
    dimension count other than ``expected_ndim``, or a payload that is shorter (truncated) or
    longer than the header says.

    >>> import struct
    >>> raw = struct.pack(">HBBI", 0, 0x08, 1, 3) + bytes([7, 8, 9])
    >>> parse_idx(raw, source="labels", expected_ndim=1).tolist()
    [7, 8, 9]
    """
    if len(data) < 4:
        raise ValidationError(f"{source}: truncated IDX file ({len(data)} bytes, no header)")
    if data[0] != 0 or data[1] != 0:
        raise ValidationError(
            f"{source}: not an IDX file (first two bytes are {data[:2].hex()}, expected 0000)"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in _DTYPES:
        raise ValidationError(f"{source}: unknown IDX element type 0x{type_code:02x}")
    if expected_ndim is not None and ndim != expected_ndim:
        magic = int.from_bytes(data[:4], "big")
        want = (type_code << 8) | expected_ndim
        raise ValidationError(
            f"{source}: IDX magic number {magic} ({ndim} dimensions); expected {want} "
            f"({expected_ndim} dimensions)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValidationError(
            f"{source}: truncated IDX header ({len(data)} bytes, need {header} for {ndim} dims)"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[type_code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    payload = len(data) - header
    if payload < expected:
        raise ValidationError(
            f"{source}: truncated IDX file: header says shape {shape} ({expected} data bytes) "
            f"but only {payload} bytes follow the {header}-byte header"
        )
    if payload > expected:
        raise ValidationError(
            f"{source}: {payload - expected} unexpected bytes after the IDX data "
            f"(shape {shape}, {expected} data bytes)"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_idx(path: Path, *, expected_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file, gzip-compressed or raw.

    Raises :class:`velocity.errors.ValidationError` for a corrupt or truncated gzip stream and
    for everything :func:`parse_idx` rejects.
    """
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except EOFError as e:
            raise ValidationError(f"{path}: truncated gzip stream ({e})") from e
        except (OSError, zlib.error) as e:
            raise ValidationError(f"{path}: corrupt gzip stream ({e})") from e
    return parse_idx(raw, source=str(path), expected_ndim=expected_ndim)
