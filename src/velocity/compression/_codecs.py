r"""Update codecs with exact wire sizes: :class:`Float32`, :class:`Float16`, :class:`Int8`,
:class:`TopK` and :class:`QSGD`.

A codec turns a client's flat ``float32`` update row ``(d,)`` (laid out by a
:class:`~velocity.types.ParamSpec`) into the bytes that travel, and those bytes back into a
new ``float32`` row. ``codec.encoded_size(spec)`` is the exact length of every frame the
codec produces for ``spec``, known without encoding anything. Codecs that scale or normalise
do so once per *parameter tensor* of the spec (a layer's weight and its bias get their own
scale), never across tensors.

Frame layout
------------
A frame is a fixed :data:`HEADER_BYTES` (24) byte header, the same for every codec, then the
codec's body. All numbers are little-endian.

======  =====  ======  ==================================================================
offset  bytes  type    field
======  =====  ======  ==================================================================
0       4      bytes   magic ``b"VFC1"`` (:data:`MAGIC`)
4       1      uint8   codec id: 1 float32, 2 float16, 3 int8, 4 top-k, 5 qsgd
5       1      uint8   format version, 1 (:data:`VERSION`)
6       2      uint16  reserved, 0
8       8      uint64  d, the row length; must equal ``spec.d``
16      4      uint32  p0: k (top-k), s (qsgd), T (int8); 0 otherwise
20      4      uint32  p1: T (qsgd); 0 otherwise
24      ...            body
======  =====  ======  ==================================================================

The bodies, with T = ``len(spec)`` (the number of parameter tensors), in this order:

=======  ============================================================  ====================
codec    body                                                          bytes
=======  ============================================================  ====================
float32  d float32 values                                              4d
float16  d float16 values                                              2d
int8     T float32 scales, then d int8 levels in [-127, 127]           4T + d
topk     k float32 values, then k uint32 indices, strictly increasing  8k
qsgd     T float32 norms, then d signed levels in [-s, s]: int8 when   4T + d (s <= 127),
         s <= 127, int16 otherwise (no entropy coding)                 4T + 2d (s > 127)
=======  ============================================================  ====================

So a float16 frame is exactly half a float32 frame's body plus the same header:
``len(f16) == (len(f32) - HEADER_BYTES) // 2 + HEADER_BYTES``.

Errors
------
- A row the codec cannot encode faithfully (wrong shape or dtype, NaN or ±inf, beyond
  float16's range, ...) raises :class:`~velocity.errors.ValidationError` at ``encode``:
  nothing is silently clipped or turned into ``inf``.
- Bytes are hostile. ``decode`` and :func:`decode_frame` check the magic, the codec id, the
  version, the reserved field, ``d`` against ``spec.d``, the codec parameters against the spec
  and the frame length — which must be *exact* — before anything proportional to the frame is
  allocated; then the body: every value, scale and norm finite, scales and norms ``>= 0``,
  levels within their range, top-k indices ``< d`` and strictly increasing. Every refusal is a
  :class:`~velocity.errors.ProtocolError` naming what is wrong. Nothing is ever unpickled.
- Settings out of range raise :class:`~velocity.errors.ConfigurationError` at construction.

Rows may live on any device; they are encoded from a CPU copy and decoded onto the CPU.
"""

from __future__ import annotations

import math
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar, Final, TypeAlias

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from velocity._validation import (
    INVALID,
    Constraint,
    Described,
    Integer,
    OneOf,
    Real,
    check_parameters,
    check_value,
    error_message,
)
from velocity.errors import ConfigurationError, ProtocolError, ValidationError
from velocity.types import ParamSpec

__all__ = [
    "CODECS",
    "FLOAT16_MAX",
    "HEADER_BYTES",
    "MAGIC",
    "QSGD",
    "STRATEGIES",
    "VERSION",
    "Codec",
    "Float16",
    "Float32",
    "Int8",
    "TopK",
    "codec_from_config",
    "decode_frame",
]

Buffer: TypeAlias = bytes | bytearray | memoryview
"""What ``decode`` accepts: any contiguous byte buffer."""

MAGIC: Final = b"VFC1"
"""The first four bytes of every codec frame."""
VERSION: Final = 1
"""The frame format version this module writes and reads."""
_HEADER: Final = struct.Struct("<4sBBHQII")
HEADER_BYTES: Final = _HEADER.size
"""Length of the fixed frame header (24 bytes), the same for every codec."""
FLOAT16_MAX: Final = 65504.0
"""Largest finite float16 value; :class:`Float16` refuses rows beyond it."""
_MAX_U32: Final = 2**32 - 1
_INT8_MAX: Final = 127
_QSGD_MAX_LEVELS: Final = 2**15 - 1

_F32: Final = np.dtype("<f4")
_F16: Final = np.dtype("<f2")
_I8: Final = np.dtype("i1")
_I16: Final = np.dtype("<i2")
_U32: Final = np.dtype("<u4")

Array: TypeAlias = npt.NDArray[Any]


# ---------------------------------------------------------------------- helpers


def _segments(spec: ParamSpec) -> Iterator[tuple[int, int, int]]:
    """``(tensor index, offset, size)`` of every parameter tensor of ``spec``."""
    for i, (offset, shape) in enumerate(zip(spec.offsets, spec.shapes, strict=True)):
        yield i, offset, math.prod(shape)


def _check_row(row: object, spec: ParamSpec, owner: str) -> Tensor:
    """``row`` as a finite contiguous CPU float32 ``(d,)`` tensor (a view when it already is)."""
    if not isinstance(row, Tensor):
        raise ValidationError(f"{owner}: the row must be a torch.Tensor; got {type(row).__name__}")
    if row.dtype != torch.float32:
        raise ValidationError(f"{owner}: the row must be float32; got {row.dtype}")
    if row.dim() != 1 or row.shape[0] != spec.d:
        raise ValidationError(
            f"{owner}: the row has shape {tuple(row.shape)}; the ParamSpec needs ({spec.d},)"
        )
    x = row.detach().to("cpu").contiguous()
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = (~finite).nonzero()
        raise ValidationError(
            f"{owner}: the row holds {bad.shape[0]} non-finite values (first at index "
            f"{int(bad[0])}); a codec sends finite numbers only"
        )
    return x


def _view(data: object, what: str) -> memoryview:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"{what}: expected bytes; got {type(data).__name__}")
    try:
        return memoryview(data).cast("B")
    except TypeError as exc:
        raise ProtocolError(f"{what}: the buffer is not contiguous bytes ({exc})") from None


@dataclass(frozen=True)
class _Header:
    codec_id: int
    d: int
    p0: int
    p1: int


def _read_header(view: memoryview, spec: ParamSpec, what: str) -> _Header:
    if len(view) < HEADER_BYTES:
        raise ProtocolError(
            f"{what}: {len(view)} bytes is shorter than the {HEADER_BYTES}-byte header"
        )
    magic, codec_id, version, reserved, d, p0, p1 = _HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise ProtocolError(f"{what}: bad magic {bytes(magic)!r}; expected {MAGIC!r}")
    if version != VERSION:
        raise ProtocolError(f"{what}: format version {version}; this decoder reads {VERSION}")
    if reserved != 0:
        raise ProtocolError(f"{what}: reserved header field is {reserved}; expected 0")
    if d != spec.d:
        raise ProtocolError(f"{what}: the header says d={d}; the ParamSpec has d={spec.d}")
    return _Header(codec_id, d, p0, p1)


def _codec_label(codec_id: int) -> str:
    cls = _BY_ID.get(codec_id)
    return f"{codec_id} ({cls.name})" if cls is not None else f"{codec_id} (unknown)"


def _body(view: memoryview, dtype: np.dtype[Any], count: int, offset: int) -> Array:
    """``count`` items of ``dtype`` at ``offset`` of the body (a read-only view, no copy)."""
    return np.frombuffer(view, dtype=dtype, count=count, offset=HEADER_BYTES + offset)


def _require_finite(values: Array, what: str, kind: str) -> None:
    finite = np.isfinite(values)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ProtocolError(
            f"{what}: {bad.size} {kind} are not finite (first at position {int(bad[0])})"
        )


def _require_nonnegative(values: Array, what: str, kind: str) -> None:
    _require_finite(values, what, kind)
    negative = np.flatnonzero(values < 0)
    if negative.size:
        raise ProtocolError(
            f"{what}: {negative.size} {kind} are negative (first at position {int(negative[0])})"
        )


def _require_levels(levels: Array, bound: int, what: str) -> None:
    if levels.size == 0:
        return
    low, high = int(levels.min()), int(levels.max())
    if low < -bound or high > bound:
        worst = low if -low > high else high
        raise ProtocolError(f"{what}: a level is {worst}; levels must lie in [-{bound}, {bound}]")


def _finite_output(out: Tensor, what: str) -> Tensor:
    if not bool(torch.isfinite(out).all()):
        raise ProtocolError(f"{what}: the decoded values overflow float32")
    return out


def _to_tensor(values: Array) -> Tensor:
    """A new, writable float32 tensor holding ``values``."""
    return torch.from_numpy(np.array(values, dtype=np.float32, copy=True))


def _ceil_up_float32(value: float) -> np.float32:
    """The smallest float32 ``>= value``."""
    rounded = np.float32(value)
    if float(rounded) < value:
        rounded = np.nextafter(rounded, np.float32(np.inf))
    return rounded


# ---------------------------------------------------------------------- base


@dataclass(frozen=True)
class Codec(ABC):
    """An update codec: a flat float32 row to an exact-size frame of bytes and back.

    Subclasses set :attr:`name` and a unique one-byte ``codec_id`` and implement the body.
    The frame layout and the checks on decode are in the module docstring.

    Examples
    --------
    >>> spec = ParamSpec.from_sizes({"w": 3})
    >>> codec = Float32()
    >>> frame = codec.encode(torch.tensor([1.0, -2.0, 0.5]), spec)
    >>> len(frame) == codec.encoded_size(spec) == HEADER_BYTES + 4 * 3
    True
    >>> codec.decode(frame, spec).tolist()
    [1.0, -2.0, 0.5]
    """

    name: ClassVar[str]
    codec_id: ClassVar[int]
    _constraints: ClassVar[Mapping[str, Constraint]] = {}

    def __post_init__(self) -> None:
        check_parameters(self)

    # -------------------------------------------------------------- public API

    def encode(
        self, row: Tensor, spec: ParamSpec, *, generator: torch.Generator | None = None
    ) -> bytes:
        """The frame of ``row``: exactly :meth:`encoded_size` bytes.

        Parameters
        ----------
        row : Tensor
            A finite float32 ``(d,)`` row in ``spec``'s layout, on any device. Not modified.
        spec : ParamSpec
            The row's layout (per-tensor scales follow its tensors).
        generator : torch.Generator, optional
            A CPU generator; required by :class:`QSGD` (random rounding), ignored by the
            deterministic codecs.

        Raises
        ------
        ValidationError
            The row is not a finite float32 ``(d,)`` tensor, or this codec cannot carry it.
        """
        owner = f"{type(self).__name__}.encode"
        x = _check_row(row, spec, owner)
        p0, p1 = self._params(spec)
        header = _HEADER.pack(MAGIC, self.codec_id, VERSION, 0, spec.d, p0, p1)
        return b"".join((header, *self._encode_body(x, spec, generator, owner)))

    def decode(self, data: Buffer, spec: ParamSpec) -> Tensor:
        """A new float32 ``(d,)`` CPU row from a frame of *this* codec (same settings).

        Raises
        ------
        ProtocolError
            The bytes are not a well-formed frame of this codec for ``spec`` (see the module
            docstring for every check).
        """
        what = f"{self.name} frame"
        view = _view(data, what)
        header = _read_header(view, spec, what)
        if header.codec_id != self.codec_id:
            raise ProtocolError(
                f"{what}: codec id {_codec_label(header.codec_id)}; expected "
                f"{_codec_label(self.codec_id)}"
            )
        expected = self._params(spec)
        if (header.p0, header.p1) != expected:
            raise ProtocolError(
                f"{what}: header parameters (p0, p1) = {(header.p0, header.p1)}; {self!r} "
                f"with d={spec.d} and {len(spec)} tensors writes {expected}"
            )
        return type(self)._decode_checked(view, header, spec, what)

    def encoded_size(self, spec: ParamSpec) -> int:
        """The exact byte length of every frame :meth:`encode` writes for ``spec``.

        Examples
        --------
        >>> spec = ParamSpec.from_sizes({"w": 6, "b": 2})
        >>> [c.encoded_size(spec) for c in (Float32(), Float16(), Int8(), TopK(0.25))]
        [56, 40, 40, 40]
        """
        p0, p1 = self._params(spec)
        return HEADER_BYTES + type(self)._body_size(p0, p1, spec, type(self).__name__)

    @abstractmethod
    def max_error(self, row: Tensor, spec: ParamSpec) -> Tensor:
        """A float64 ``(d,)`` bound on ``|decode(encode(row)) - row|`` per coordinate.

        Float64, so that the bound itself is not rounded below the error it bounds.
        """

    # -------------------------------------------------------------- subclass hooks

    @abstractmethod
    def _params(self, spec: ParamSpec) -> tuple[int, int]:
        """The header's ``(p0, p1)`` for ``spec``."""

    @abstractmethod
    def _encode_body(
        self, x: Tensor, spec: ParamSpec, generator: torch.Generator | None, owner: str
    ) -> list[bytes]:
        """The body's parts for a checked CPU row ``x``."""

    @classmethod
    @abstractmethod
    def _body_size(cls, p0: int, p1: int, spec: ParamSpec, what: str) -> int:
        """The body length the header's parameters imply (ProtocolError if they are invalid)."""

    @classmethod
    @abstractmethod
    def _decode_body(cls, view: memoryview, header: _Header, spec: ParamSpec, what: str) -> Tensor:
        """The row of a frame whose header and exact length are already checked."""

    @classmethod
    def _decode_checked(
        cls, view: memoryview, header: _Header, spec: ParamSpec, what: str
    ) -> Tensor:
        size = HEADER_BYTES + cls._body_size(header.p0, header.p1, spec, what)
        if len(view) != size:
            raise ProtocolError(
                f"{what}: {len(view)} bytes; a {cls.name} frame with d={spec.d}, "
                f"p0={header.p0}, p1={header.p1} is exactly {size} bytes"
            )
        return cls._decode_body(view, header, spec, what)

    @staticmethod
    def _no_params(p0: int, p1: int, what: str) -> None:
        if p0 != 0 or p1 != 0:
            raise ProtocolError(f"{what}: header parameters (p0, p1) = {(p0, p1)}; expected (0, 0)")


# ---------------------------------------------------------------------- float32 / float16


@dataclass(frozen=True)
class Float32(Codec):
    """The identity codec, the reference: ``d`` little-endian float32 values, bit-exact.

    Error: none (:meth:`max_error` is zero).

    Examples
    --------
    >>> spec = ParamSpec.from_sizes({"w": 2})
    >>> Float32().decode(Float32().encode(torch.tensor([0.1, -3.0]), spec), spec)
    tensor([ 0.1000, -3.0000])
    """

    name: ClassVar[str] = "float32"
    codec_id: ClassVar[int] = 1

    def max_error(self, row: Tensor, spec: ParamSpec) -> Tensor:
        """Zero: float32 is sent as it is.

        >>> Float32().max_error(torch.ones(2), ParamSpec.from_sizes({"w": 2})).tolist()
        [0.0, 0.0]
        """
        _check_row(row, spec, "Float32.max_error")
        return torch.zeros(spec.d, dtype=torch.float64)

    def _params(self, spec: ParamSpec) -> tuple[int, int]:
        return 0, 0

    def _encode_body(
        self, x: Tensor, spec: ParamSpec, generator: torch.Generator | None, owner: str
    ) -> list[bytes]:
        return [x.numpy().astype(_F32, copy=False).tobytes()]

    @classmethod
    def _body_size(cls, p0: int, p1: int, spec: ParamSpec, what: str) -> int:
        cls._no_params(p0, p1, what)
        return 4 * spec.d

    @classmethod
    def _decode_body(cls, view: memoryview, header: _Header, spec: ParamSpec, what: str) -> Tensor:
        values = _body(view, _F32, spec.d, 0)
        _require_finite(values, what, "values")
        return _to_tensor(values)


@dataclass(frozen=True)
class Float16(Codec):
    r"""IEEE half precision: ``d`` little-endian float16 values, round to nearest even.

    Error: for ``|v| >= 2^-14`` (float16's normal range) ``|err| <= 2^-11 |v|``; below it
    (subnormal) ``|err| <= 2^-25``. A row with any ``|v| > 65504`` (:data:`FLOAT16_MAX`) is
    refused at encode with a :class:`~velocity.errors.ValidationError` — it would become
    ``inf``. Decodes to exactly ``row.half().float()``.

    Examples
    --------
    >>> spec = ParamSpec.from_sizes({"w": 2})
    >>> Float16().decode(Float16().encode(torch.tensor([1.0, 1 / 3]), spec), spec).tolist()
    [1.0, 0.333251953125]
    >>> Float16().encode(torch.tensor([7e4, 0.0]), spec)
    Traceback (most recent call last):
        ...
    velocity.errors.ValidationError: Float16.encode: max |value| is 70000 (at index 0), beyond float16's largest finite value 65504; scale the update down or use Float32 or Int8
    """  # noqa: E501

    name: ClassVar[str] = "float16"
    codec_id: ClassVar[int] = 2

    def max_error(self, row: Tensor, spec: ParamSpec) -> Tensor:
        """``max(2^-11 |v|, 2^-25)`` per coordinate.

        >>> Float16().max_error(torch.tensor([2048.0]), ParamSpec.from_sizes({"w": 1})).tolist()
        [1.0]
        """
        x = _check_row(row, spec, "Float16.max_error")
        return torch.clamp(x.double().abs() * 2.0**-11, min=2.0**-25)

    def _params(self, spec: ParamSpec) -> tuple[int, int]:
        return 0, 0

    def _encode_body(
        self, x: Tensor, spec: ParamSpec, generator: torch.Generator | None, owner: str
    ) -> list[bytes]:
        if spec.d:
            peak, where = x.abs().max(dim=0)
            if float(peak) > FLOAT16_MAX:
                raise ValidationError(
                    f"{owner}: max |value| is {float(peak):g} (at index {int(where)}), beyond "
                    f"float16's largest finite value {FLOAT16_MAX:g}; scale the update down or "
                    "use Float32 or Int8"
                )
        return [x.half().numpy().astype(_F16, copy=False).tobytes()]

    @classmethod
    def _body_size(cls, p0: int, p1: int, spec: ParamSpec, what: str) -> int:
        cls._no_params(p0, p1, what)
        return 2 * spec.d

    @classmethod
    def _decode_body(cls, view: memoryview, header: _Header, spec: ParamSpec, what: str) -> Tensor:
        values = _body(view, _F16, spec.d, 0)
        _require_finite(values, what, "values")
        return _to_tensor(values)


# ---------------------------------------------------------------------- int8


@dataclass(frozen=True)
class Int8(Codec):
    r"""Symmetric int8 with one float32 scale per parameter tensor.

    For tensor t, :math:`\mathrm{scale}_t = \max_i |v_i| / 127` (float32; 0 for an all-zero
    or empty tensor) and :math:`q_i = \mathrm{round}(v_i / \mathrm{scale}_t) \in [-127, 127]`
    (nearest, ties to even); decoding gives :math:`q_i\,\mathrm{scale}_t`. The frame is
    ``T`` float32 scales then ``d`` int8 levels.

    Error: ``|err_i| <= scale_t / 2`` up to float32 rounding of the division and product;
    :meth:`max_error` returns the rigorous ``scale_t (1/2 + 2^-16) + 2^-142`` (the last term
    matters only for subnormal scales). Values that are integer multiples of a power-of-two
    scale are exact.

    Examples
    --------
    >>> spec = ParamSpec.from_sizes({"w": 3, "b": 1})
    >>> row = torch.tensor([127.0, -63.5, 1.0, 0.0])
    >>> Int8().decode(Int8().encode(row, spec), spec).tolist()
    [127.0, -64.0, 1.0, 0.0]
    """

    name: ClassVar[str] = "int8"
    codec_id: ClassVar[int] = 3

    @staticmethod
    def scales(row: Tensor, spec: ParamSpec) -> Tensor:
        """The float32 ``(T,)`` per-tensor scales ``max |v| / 127`` that :meth:`encode` sends.

        >>> Int8.scales(torch.tensor([254.0, 1.0, 0.0]), ParamSpec.from_sizes({"a": 2, "b": 1}))
        tensor([2., 0.])
        """
        return Int8._scales(_check_row(row, spec, "Int8.scales"), spec)

    @staticmethod
    def _scales(x: Tensor, spec: ParamSpec) -> Tensor:
        scales = torch.zeros(len(spec), dtype=torch.float32)
        for i, offset, size in _segments(spec):
            if size:
                scales[i] = x[offset : offset + size].abs().amax() / _INT8_MAX
        return scales

    def max_error(self, row: Tensor, spec: ParamSpec) -> Tensor:
        """``scale_t (1/2 + 2^-16) + 2^-142`` for every coordinate of tensor t.

        >>> Int8().max_error(torch.tensor([254.0, 1.0]), ParamSpec.from_sizes({"w": 2})).tolist()
        [1.000030517578125, 1.000030517578125]
        """
        scales = self.scales(row, spec).double()
        sizes = torch.tensor([size for _, _, size in _segments(spec)], dtype=torch.long)
        return torch.repeat_interleave(scales * (0.5 + 2.0**-16) + 2.0**-142, sizes)

    def _params(self, spec: ParamSpec) -> tuple[int, int]:
        return len(spec), 0

    def _encode_body(
        self, x: Tensor, spec: ParamSpec, generator: torch.Generator | None, owner: str
    ) -> list[bytes]:
        scales = self._scales(x, spec)
        levels = torch.zeros(spec.d, dtype=torch.int8)
        for i, offset, size in _segments(spec):
            scale = scales[i]
            if size and float(scale) > 0:
                piece = torch.round(x[offset : offset + size] / scale)
                levels[offset : offset + size] = piece.clamp_(-_INT8_MAX, _INT8_MAX)
        return [scales.numpy().astype(_F32, copy=False).tobytes(), levels.numpy().tobytes()]

    @classmethod
    def _body_size(cls, p0: int, p1: int, spec: ParamSpec, what: str) -> int:
        if p0 != len(spec) or p1 != 0:
            raise ProtocolError(
                f"{what}: header parameters (p0, p1) = {(p0, p1)}; the ParamSpec has "
                f"{len(spec)} tensors, so expected ({len(spec)}, 0)"
            )
        return 4 * len(spec) + spec.d

    @classmethod
    def _decode_body(cls, view: memoryview, header: _Header, spec: ParamSpec, what: str) -> Tensor:
        scales = _body(view, _F32, len(spec), 0)
        _require_nonnegative(scales, what, "scales")
        levels = _body(view, _I8, spec.d, 4 * len(spec))
        _require_levels(levels, _INT8_MAX, what)
        out = _to_tensor(levels)
        for i, offset, size in _segments(spec):
            out[offset : offset + size] *= float(scales[i])
        return _finite_output(out, what)


# ---------------------------------------------------------------------- top-k


@dataclass(frozen=True)
class TopK(Codec):
    r"""Top-k sparsification: the ``k`` entries of largest magnitude, exactly.

    ``k = max(1, ceil(ratio * d))`` (``0`` when ``d = 0``), computed exactly from the shortest
    decimal form of ``ratio`` (``0.7 * 10`` gives 7 and ``0.4 * 5`` gives 2, where binary
    floats would give 8 and 3). Ties in ``|v|`` are broken towards the lower
    index: the threshold ``t`` is the k-th largest ``|v|`` (a selection, ``numpy.partition``),
    every entry with ``|v| > t`` is kept, then the lowest-index entries with ``|v| == t`` up to
    k. The frame carries ``k`` float32 values then their ``k`` uint32 indices, ascending; the
    size is fixed by k (``8k`` body bytes), so ``d`` must be below ``2^32``.

    Error: the kept entries are exact, the dropped ones are exactly the error
    (``decode - row == -row`` there, 0 elsewhere).

    Parameters
    ----------
    ratio : float
        Fraction of the coordinates kept, in ``(0, 1]``.

    Examples
    --------
    >>> spec = ParamSpec.from_sizes({"w": 5})
    >>> codec = TopK(0.4)
    >>> codec.k(spec.d)
    2
    >>> row = torch.tensor([0.5, -3.0, 1.0, -1.0, 2.0])
    >>> codec.decode(codec.encode(row, spec), spec).tolist()
    [0.0, -3.0, 0.0, 0.0, 2.0]
    """

    ratio: float = 0.1

    name: ClassVar[str] = "topk"
    codec_id: ClassVar[int] = 4
    _constraints: ClassVar[Mapping[str, Constraint]] = {"ratio": Real(low=0, high=1, low_open=True)}

    def k(self, d: int) -> int:
        """The number of entries kept of a row of length ``d``.

        >>> TopK(0.7).k(10), TopK(0.4).k(5), TopK(1e-9).k(10), TopK(0.5).k(0)
        (7, 2, 1, 0)
        """
        return min(d, max(1, math.ceil(Fraction(repr(self.ratio)) * d)))

    def keep(self, row: Tensor, spec: ParamSpec) -> Tensor:
        """The int64 indices of the kept entries, ascending (ties to the lower index).

        >>> TopK(0.5).keep(torch.tensor([1.0, -2.0, 2.0, 0.0]), ParamSpec.from_sizes({"w": 4}))
        tensor([1, 2])
        """
        x = _check_row(row, spec, "TopK.keep")
        return torch.from_numpy(self._keep(x, spec.d))

    def _keep(self, x: Tensor, d: int) -> npt.NDArray[np.int64]:
        k = self.k(d)
        if k == d:
            return np.arange(d, dtype=np.int64)
        magnitude = x.abs().numpy()
        threshold = np.partition(magnitude, d - k)[d - k]
        mask = magnitude > threshold
        missing = k - int(np.count_nonzero(mask))
        mask[np.flatnonzero(magnitude == threshold)[:missing]] = True
        return np.flatnonzero(mask)

    def max_error(self, row: Tensor, spec: ParamSpec) -> Tensor:
        """``|v|`` on the dropped entries, 0 on the kept ones (the error, exactly).

        >>> TopK(0.5).max_error(torch.tensor([1.0, -2.0]), ParamSpec.from_sizes({"w": 2})).tolist()
        [1.0, 0.0]
        """
        x = _check_row(row, spec, "TopK.max_error")
        error = x.double().abs()
        error[torch.from_numpy(self._keep(x, spec.d))] = 0.0
        return error

    def _params(self, spec: ParamSpec) -> tuple[int, int]:
        if spec.d > _MAX_U32:
            raise ValidationError(
                f"TopK: d={spec.d} does not fit the frame's uint32 indices (d must be < 2**32)"
            )
        return self.k(spec.d), 0

    def _encode_body(
        self, x: Tensor, spec: ParamSpec, generator: torch.Generator | None, owner: str
    ) -> list[bytes]:
        index = self._keep(x, spec.d)
        values = x.numpy()[index]
        return [values.astype(_F32, copy=False).tobytes(), index.astype(_U32).tobytes()]

    @classmethod
    def _body_size(cls, p0: int, p1: int, spec: ParamSpec, what: str) -> int:
        low = min(spec.d, 1)
        if not low <= p0 <= spec.d or p1 != 0:
            raise ProtocolError(
                f"{what}: header parameters (k, p1) = {(p0, p1)}; k must lie in "
                f"[{low}, {spec.d}] and p1 be 0"
            )
        return 8 * p0

    @classmethod
    def _decode_body(cls, view: memoryview, header: _Header, spec: ParamSpec, what: str) -> Tensor:
        k = header.p0
        values = _body(view, _F32, k, 0)
        _require_finite(values, what, "values")
        index = _body(view, _U32, k, 4 * k).astype(np.int64)
        if k and int(index[-1]) >= spec.d:
            raise ProtocolError(f"{what}: index {int(index.max())} is out of range for d={spec.d}")
        steps = np.flatnonzero(np.diff(index) <= 0)
        if steps.size:
            i = int(steps[0])
            raise ProtocolError(
                f"{what}: indices must be strictly increasing; position {i + 1} holds "
                f"{int(index[i + 1])} after {int(index[i])}"
            )
        out = torch.zeros(spec.d, dtype=torch.float32)
        out[torch.from_numpy(index)] = _to_tensor(values)
        return out


# ---------------------------------------------------------------------- qsgd


@dataclass(frozen=True)
class QSGD(Codec):
    r"""QSGD stochastic quantization (Alistarh et al. 2017, "QSGD: Communication-Efficient SGD
    via Gradient Quantization and Encoding"), per parameter tensor, without entropy coding.

    For tensor t with norm :math:`n_t = \|v_t\|_2` (sent as float32, rounded *up*), each
    coordinate becomes :math:`\mathrm{sign}(v_i)\,\ell_i\,n_t / s` with
    :math:`\ell_i \in \{0, \dots, s\}` drawn by unbiased stochastic rounding of
    :math:`r_i = s |v_i| / n_t`: :math:`\ell_i = \lfloor r_i \rfloor + 1` with probability
    :math:`r_i - \lfloor r_i \rfloor`, else :math:`\lfloor r_i \rfloor`. The uniforms come
    from the ``generator`` passed to :meth:`encode` (one ``torch.rand(d)`` draw), so equal
    generators give equal frames. The signed levels are stored as int8 when ``s <= 127``,
    else int16.

    Error: unbiased, :math:`\mathbb{E}[\mathrm{decode}] = v` (up to float32 rounding of
    :math:`r_i` and of the product); per coordinate :math:`|err_i| < n_t / s`; variance
    :math:`\mathbb{E}\|Q(v_t) - v_t\|^2 \le \min(d_t / s^2, \sqrt{d_t} / s)\, n_t^2`
    (:meth:`variance_bound`, Alistarh et al. Lemma 3.1).

    Parameters
    ----------
    levels : int
        s, the number of quantization levels, in ``[1, 32767]``.

    Examples
    --------
    >>> spec = ParamSpec.from_sizes({"w": 4})
    >>> codec = QSGD(levels=4)
    >>> row = torch.tensor([3.0, 0.0, -4.0, 0.0])
    >>> frame = codec.encode(row, spec, generator=torch.Generator().manual_seed(0))
    >>> len(frame) == codec.encoded_size(spec) == HEADER_BYTES + 4 + 4
    True
    >>> codec.decode(frame, spec).tolist()  # steps of n / s = 5 / 4: levels 2 and 4
    [2.5, 0.0, -5.0, 0.0]
    """

    levels: int = 16

    name: ClassVar[str] = "qsgd"
    codec_id: ClassVar[int] = 5
    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "levels": Integer(low=1, high=_QSGD_MAX_LEVELS)
    }

    @staticmethod
    def norms(row: Tensor, spec: ParamSpec) -> Tensor:
        """The float32 ``(T,)`` per-tensor norms QSGD sends: ``||v_t||_2`` rounded up.

        >>> QSGD.norms(torch.tensor([3.0, 4.0, 1.0]), ParamSpec.from_sizes({"a": 2, "b": 1}))
        tensor([5., 1.])
        """
        x = _check_row(row, spec, "QSGD.norms")
        return QSGD._norms(x, spec, "QSGD.norms")

    @staticmethod
    def _norms(x: Tensor, spec: ParamSpec, owner: str) -> Tensor:
        norms = np.zeros(len(spec), dtype=np.float32)
        for i, offset, size in _segments(spec):
            if size:
                exact = float(
                    torch.linalg.vector_norm(x[offset : offset + size], dtype=torch.float64)
                )
                norms[i] = _ceil_up_float32(exact)
                if not np.isfinite(norms[i]):
                    raise ValidationError(
                        f"{owner}: the norm of tensor {spec.names[i]!r} ({exact:g}) exceeds the "
                        "float32 range"
                    )
        return torch.from_numpy(norms)

    def variance_bound(self, row: Tensor, spec: ParamSpec) -> float:
        r"""The bound :math:`\sum_t \min(d_t / s^2, \sqrt{d_t} / s)\, n_t^2` on
        :math:`\mathbb{E}\|\mathrm{decode} - v\|^2`.

        >>> QSGD(levels=2).variance_bound(torch.tensor([3.0, 4.0]), ParamSpec.from_sizes({"w": 2}))
        12.5
        """
        norms = self.norms(row, spec).double()
        s = self.levels
        total = 0.0
        for i, _, size in _segments(spec):
            total += min(size / s**2, math.sqrt(size) / s) * float(norms[i]) ** 2
        return total

    def max_error(self, row: Tensor, spec: ParamSpec) -> Tensor:
        """``n_t / s`` (one level step, with a ``2^-20`` relative margin) for tensor t.

        >>> QSGD(levels=5).max_error(torch.tensor([3.0, 4.0]), ParamSpec.from_sizes({"w": 2}))
        tensor([1.0000, 1.0000], dtype=torch.float64)
        """
        norms = self.norms(row, spec).double()
        sizes = torch.tensor([size for _, _, size in _segments(spec)], dtype=torch.long)
        return torch.repeat_interleave(norms / self.levels * (1 + 2.0**-20), sizes)

    def _level_dtype(self) -> torch.dtype:
        return torch.int8 if self.levels <= _INT8_MAX else torch.int16

    def _params(self, spec: ParamSpec) -> tuple[int, int]:
        return self.levels, len(spec)

    def _encode_body(
        self, x: Tensor, spec: ParamSpec, generator: torch.Generator | None, owner: str
    ) -> list[bytes]:
        if not isinstance(generator, torch.Generator):
            raise ValidationError(
                f"{owner}: QSGD rounds at random and needs a torch.Generator (derive one from "
                f"(seed, round, client), e.g. velocity._random.torch_generator); got {generator!r}"
            )
        if generator.device.type != "cpu":
            raise ValidationError(
                f"{owner}: the generator must be a CPU generator; got {generator.device}"
            )
        s = self.levels
        norms = self._norms(x, spec, owner)
        uniform = torch.rand(spec.d, generator=generator, dtype=torch.float32)
        levels = torch.zeros(spec.d, dtype=self._level_dtype())
        for i, offset, size in _segments(spec):
            norm = float(norms[i])
            if size == 0 or norm == 0.0:
                continue
            piece = x[offset : offset + size]
            scaled = piece.abs().div_(norm).mul_(s).clamp_(max=s)
            level = scaled.floor()
            level += uniform[offset : offset + size] < (scaled - level)
            levels[offset : offset + size] = level.mul_(torch.sign(piece))
        return [norms.numpy().astype(_F32, copy=False).tobytes(), levels.numpy().tobytes()]

    @classmethod
    def _body_size(cls, p0: int, p1: int, spec: ParamSpec, what: str) -> int:
        if not 1 <= p0 <= _QSGD_MAX_LEVELS or p1 != len(spec):
            raise ProtocolError(
                f"{what}: header parameters (s, T) = {(p0, p1)}; s must lie in "
                f"[1, {_QSGD_MAX_LEVELS}] and T equal the ParamSpec's {len(spec)} tensors"
            )
        return 4 * len(spec) + spec.d * (1 if p0 <= _INT8_MAX else 2)

    @classmethod
    def _decode_body(cls, view: memoryview, header: _Header, spec: ParamSpec, what: str) -> Tensor:
        s = header.p0
        norms = _body(view, _F32, len(spec), 0)
        _require_nonnegative(norms, what, "norms")
        levels = _body(view, _I8 if s <= _INT8_MAX else _I16, spec.d, 4 * len(spec))
        _require_levels(levels, s, what)
        out = _to_tensor(levels)
        for i, offset, size in _segments(spec):
            out[offset : offset + size] *= float(norms[i]) / s
        return _finite_output(out, what)


# ---------------------------------------------------------------------- registry


CODECS: Final[Mapping[str, type[Codec]]] = {
    cls.name: cls for cls in (Float32, Float16, Int8, TopK, QSGD)
}
"""Every codec class, by :attr:`Codec.name`."""

_BY_ID: Final[Mapping[int, type[Codec]]] = {cls.codec_id: cls for cls in CODECS.values()}


def decode_frame(data: Buffer, spec: ParamSpec) -> Tensor:
    """Decode any codec's frame, dispatching on its codec id byte (the server's side).

    The header's parameters are checked for validity against ``spec`` (k in ``[1, d]``, s in
    ``[1, 32767]``, T equal to the number of tensors) rather than against one codec's
    settings, then the frame is decoded with every check of :meth:`Codec.decode`.

    Raises
    ------
    ProtocolError
        The bytes are not a well-formed frame for ``spec``, or name an unknown codec.

    Examples
    --------
    >>> spec = ParamSpec.from_sizes({"w": 4})
    >>> frame = TopK(0.25).encode(torch.tensor([1.0, -5.0, 2.0, 0.0]), spec)
    >>> decode_frame(frame, spec).tolist()
    [0.0, -5.0, 0.0, 0.0]
    >>> decode_frame(b"VFL1" + frame[4:], spec)
    Traceback (most recent call last):
        ...
    velocity.errors.ProtocolError: codec frame: bad magic b'VFL1'; expected b'VFC1'
    """
    what = "codec frame"
    view = _view(data, what)
    header = _read_header(view, spec, what)
    cls = _BY_ID.get(header.codec_id)
    if cls is None:
        known = ", ".join(f"{c.codec_id} ({c.name})" for c in _BY_ID.values())
        raise ProtocolError(f"{what}: unknown codec id {header.codec_id}; known: {known}")
    return cls._decode_checked(view, header, spec, f"{cls.name} frame")


# ---------------------------------------------------------------------- configuration


STRATEGIES: Final = ("none", "float32", "topk", "quantization", "qsgd")
"""The ``compression.strategy`` values :func:`codec_from_config` accepts."""


@dataclass(frozen=True)
class _IntChoice:
    options: tuple[int, ...]

    def describe(self) -> str:
        return "one of " + ", ".join(str(option) for option in self.options)

    def convert(self, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            return INVALID
        return int(value) if int(value) in self.options else INVALID


_BITS: Final = _IntChoice((8, 16))


def codec_from_config(
    strategy: str,
    *,
    topk_ratio: float = 0.1,
    quantization_bits: int = 16,
    qsgd_levels: int = 16,
) -> Codec:
    """The codec the configuration's ``compression`` section names.

    ``"topk"``: :class:`TopK` (``topk_ratio``); ``"quantization"``: :class:`Float16` for
    ``quantization_bits=16``, :class:`Int8` for 8; ``"qsgd"``: :class:`QSGD`
    (``qsgd_levels``); ``"none"`` or ``"float32"``: :class:`Float32`. Only the setting the
    strategy uses is checked.

    Raises
    ------
    ConfigurationError
        An unknown strategy or a setting out of range; the message lists what is accepted.

    Examples
    --------
    >>> codec_from_config("topk", topk_ratio=0.01)
    TopK(ratio=0.01)
    >>> codec_from_config("quantization", quantization_bits=8)
    Int8()
    >>> codec_from_config("zip")
    Traceback (most recent call last):
        ...
    velocity.errors.ConfigurationError: compression.strategy must be one of 'none', 'float32', 'topk', 'quantization', 'qsgd'; got 'zip'
    """  # noqa: E501
    owner = "compression"
    name = check_value(owner, "strategy", strategy, OneOf(*STRATEGIES))
    if name == "topk":
        ratio = check_value(owner, "topk_ratio", topk_ratio, TopK._constraints["ratio"])
        return TopK(ratio)
    if name == "quantization":
        bits = _BITS.convert(quantization_bits)
        if bits is INVALID:
            raise ConfigurationError(
                error_message(owner, "quantization_bits", quantization_bits, _BITS)
            )
        return Float16() if bits == 16 else Int8()
    if name == "qsgd":
        levels = check_value(
            owner,
            "qsgd_levels",
            qsgd_levels,
            Described(QSGD._constraints["levels"], f"an int in [1, {_QSGD_MAX_LEVELS}]"),
        )
        return QSGD(levels=levels)
    return Float32()
