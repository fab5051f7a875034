"""Canonical JSON (RFC 8785) and the SHA-256 digests of configs, files, models and updates.

Canonical JSON
--------------
:func:`canonical_json` writes a JSON value as the JSON Canonicalization Scheme (JCS, RFC 8785)
does, so that equal data always gives equal bytes and equal digests:

- objects: members sorted by key, compared as UTF-16 code units (RFC 8785 section 3.2.3);
  keys must be ``str``;
- no whitespace between tokens; the output is UTF-8;
- strings: only ``"``, ``\\`` and the control characters U+0000..U+001F are escaped, as
  ``\\b \\t \\n \\f \\r`` where such a short form exists and ``\\u00xx`` (lower-case hex)
  otherwise; every other character is written as itself;
- floats: the ECMAScript ``Number.prototype.toString`` form (shortest round-trip digits;
  ``2.0`` -> ``2``, ``1e21`` -> ``1e+21``, ``1e-7`` -> ``1e-7``, ``-0.0`` -> ``0``);
  NaN and infinities are refused;
- ``int``: written exactly, in decimal. For ``|n| <= 2**53`` this is what RFC 8785 writes; a
  larger ``int`` (a 63-bit seed, say) stays exact here, where a strict JCS implementation
  would round it to the nearest double;
- ``list`` and ``tuple`` are arrays; ``True``/``False``/``None`` are ``true``/``false``/``null``.

Anything else (sets, bytes, NumPy scalars, tensors, objects) is refused with a
:class:`~velocity.errors.ValidationError` naming the JSON path, e.g. ``$.rounds[3].loss``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import Tensor

from velocity._validation import Integer, check_value
from velocity.errors import ValidationError

__all__ = [
    "JSON",
    "STATE_MAGIC",
    "canonical_json",
    "canonical_text",
    "config_digest",
    "digest_rows",
    "es_number",
    "file_digest",
    "parse_json",
    "sha256_hex",
    "state_digest",
]

#: A JSON value as :func:`canonical_json` accepts it.
JSON: TypeAlias = "bool | int | float | str | Sequence[JSON] | Mapping[str, JSON] | None"

#: First bytes of the :func:`state_digest` layout (format version 1).
STATE_MAGIC = b"VFLSTATE1\n"

# ---------------------------------------------------------------------------------------------
# canonical JSON
# ---------------------------------------------------------------------------------------------

_ESCAPES: dict[int, str] = {code: f"\\u{code:04x}" for code in range(0x20)}
_ESCAPES.update(
    {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\"}
)
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class _Refused(Exception):
    """Raised inside the encoder; carries the path back up to :func:`canonical_json`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str | int] = []


def _format_path(root: str, path: Sequence[str | int]) -> str:
    parts = [root]
    for step in reversed(path):
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif _IDENTIFIER.match(step):
            parts.append(f".{step}")
        else:
            parts.append(f"[{json.dumps(step, ensure_ascii=True)}]")
    return "".join(parts)


def _quote(text: str) -> str:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _Refused(
                f"string holds a lone surrogate (U+{ord(text[exc.start]):04X}) at position "
                f"{exc.start}, which is not valid Unicode text"
            ) from None
    if _NEEDS_ESCAPE.search(text) is None:
        return f'"{text}"'
    return '"' + text.translate(_ESCAPES) + '"'


def es_number(value: float) -> str:
    """``value`` as ECMAScript's ``Number.prototype.toString`` writes it (RFC 8785 3.2.2.3).

    Examples
    --------
    >>> [es_number(x) for x in (2.0, 1e21, 1e-7, -0.0, 0.1, 123.456, 1e16)]
    ['2', '1e+21', '1e-7', '0', '0.1', '123.456', '10000000000000000']
    """
    if not math.isfinite(value):
        raise _Refused(f"{value!r} is not a finite number; JSON has no NaN or Infinity")
    if value == 0.0:
        return "0"
    text = float.__repr__(value)  # shortest round-trip digits, nearest to the value
    if "e" not in text:  # Python's fixed notation (1e-4 <= |x| < 1e16) is ECMAScript's too
        return text[:-2] if text.endswith(".0") else text
    sign = ""
    if text[0] == "-":
        sign, text = "-", text[1:]
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    significant = digits.lstrip("0")
    # value = 0.<significant> * 10**point
    point = len(whole) + (int(exponent) if exponent else 0) - (len(digits) - len(significant))
    significant = significant.rstrip("0")
    k = len(significant)
    if k <= point <= 21:
        return sign + significant + "0" * (point - k)
    if 0 < point <= 21:
        return sign + significant[:point] + "." + significant[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * (-point) + significant
    e = point - 1
    tail = f"e{'+' if e >= 0 else '-'}{abs(e)}"
    if k == 1:
        return sign + significant + tail
    return sign + significant[0] + "." + significant[1:] + tail


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _encode(value: object, out: list[str]) -> None:
    kind = type(value)
    if kind is str:
        out.append(_quote(value))  # type: ignore[arg-type]
    elif kind is int:
        out.append(int.__repr__(value))
    elif kind is float:
        out.append(es_number(value))  # type: ignore[arg-type]
    elif kind is dict:
        _encode_object(value, out)  # type: ignore[arg-type]
    elif kind is list or kind is tuple:
        _encode_array(value, out)  # type: ignore[arg-type]
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, Mapping):
        _encode_object(value, out)
    elif isinstance(value, str):  # str subclasses (StrEnum members): their plain value
        out.append(_quote(str.__str__(value)))
    elif isinstance(value, int):  # int subclasses (IntEnum members)
        out.append(int.__repr__(int(value)))
    elif isinstance(value, float):
        out.append(es_number(float(value)))
    elif isinstance(value, list | tuple):
        _encode_array(value, out)
    else:
        raise _Refused(_unsupported(value))


def _unsupported(value: object) -> str:
    name = type(value).__name__
    if isinstance(value, np.generic | np.ndarray | Tensor):
        return f"{name} is not a JSON type; convert it first (.item() or .tolist())"
    if isinstance(value, set | frozenset):
        return f"{name} is not a JSON type (it has no order); use a sorted list"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"{name} is not a JSON type; encode it (e.g. .hex())"
    return f"{name} is not a JSON type (expected dict, list, tuple, str, int, float, bool, None)"


def _encode_array(items: Sequence[object], out: list[str]) -> None:
    out.append("[")
    for position, item in enumerate(items):
        if position:
            out.append(",")
        try:
            _encode(item, out)
        except _Refused as exc:
            exc.path.append(position)
            raise
    out.append("]")


def _encode_object(mapping: Mapping[object, object], out: list[str]) -> None:
    keys: list[str] = []
    ascii_only = True
    for key in mapping:
        if type(key) is not str:
            if not isinstance(key, str):
                raise _Refused(
                    f"object key {key!r} is a {type(key).__name__}; JSON object keys must be str"
                )
            key = str.__str__(key)
        keys.append(key)
        ascii_only = ascii_only and key.isascii()
    keys.sort(key=None if ascii_only else _utf16_key)  # code points == UTF-16 units for ASCII
    out.append("{")
    for position, key in enumerate(keys):
        if position:
            out.append(",")
        try:
            out.append(_quote(key))
            out.append(":")
            _encode(mapping[key], out)
        except _Refused as exc:
            exc.path.append(key)
            raise
    out.append("}")


def canonical_text(value: object, *, root: str = "$") -> str:
    """:func:`canonical_json` as ``str``; ``root`` names the value in error paths."""
    out: list[str] = []
    try:
        _encode(value, out)
    except _Refused as exc:
        raise ValidationError(
            f"cannot write {_format_path(root, exc.path)} as canonical JSON: {exc.reason}"
        ) from None
    except RecursionError:
        raise ValidationError(f"cannot write {root} as canonical JSON: nested too deeply") from None
    return "".join(out)


def canonical_json(value: object) -> bytes:
    """The RFC 8785 (JCS) canonical JSON bytes of ``value`` (see the module docstring).

    Parameters
    ----------
    value : JSON
        ``dict`` (``str`` keys), ``list``, ``tuple``, ``str``, ``int``, finite ``float``,
        ``bool`` or ``None``, nested.

    Returns
    -------
    bytes
        UTF-8, no whitespace, keys sorted by UTF-16 code units, ECMAScript number forms.

    Raises
    ------
    ValidationError
        For NaN/infinity, a non-``str`` key, a lone surrogate or an unsupported type; the
        message names the JSON path (``$.rounds[3].loss``).

    Examples
    --------
    >>> canonical_json({"b": [1, 2.0, 1e21], "a": "é\\n", "c": None})
    b'{"a":"\\xc3\\xa9\\\\n","b":[1,2,1e+21],"c":null}'
    >>> canonical_json({"rounds": [{"loss": float("nan")}]})
    Traceback (most recent call last):
    ...
    velocity.errors.ValidationError: cannot write $.rounds[0].loss as canonical JSON: nan is not a finite number; JSON has no NaN or Infinity
    """  # noqa: E501
    return canonical_text(value).encode("utf-8")


class _DuplicateKey(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(f"object key {key!r} appears twice")
            seen.add(key)
    return result


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(
    parse_constant=_refuse_constant, object_pairs_hook=_object_without_duplicates
)


def parse_json(data: bytes, what: str) -> Any:
    """Parse untrusted UTF-8 JSON strictly: no NaN/Infinity, no duplicate keys, no BOM.

    Raises
    ------
    ValidationError
        Naming ``what`` and the reason.

    Examples
    --------
    >>> parse_json(b'{"a": [1, 2.5]}', "the example")
    {'a': [1, 2.5]}
    >>> parse_json(b'{"a": 1, "a": 2}', "the example")
    Traceback (most recent call last):
    ...
    velocity.errors.ValidationError: the example is not valid JSON: object key 'a' appears twice
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{what} is not valid UTF-8 (byte {exc.start})") from None
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise ValidationError(f"{what} is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise ValidationError(f"{what} is not valid JSON: {exc}") from None


# ---------------------------------------------------------------------------------------------
# digests
# ---------------------------------------------------------------------------------------------


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """SHA-256 of ``data``, as 64 lower-case hex digits.

    Examples
    --------
    >>> sha256_hex(b"abc")
    'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
    """
    return hashlib.sha256(data).hexdigest()


def config_digest(mapping: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of ``canonical_json(mapping)``: equal settings, equal digest.

    The key order of the mapping does not matter; ``1.0`` and ``1`` give the same digest.

    Examples
    --------
    >>> config_digest({"lr": 0.1, "rounds": 3}) == config_digest({"rounds": 3, "lr": 0.1})
    True
    >>> config_digest({"x": 1.0}) == config_digest({"x": 1})
    True
    """
    if not isinstance(mapping, Mapping):
        raise ValidationError(
            f"config_digest needs a mapping (a config as a dict); got {type(mapping).__name__}"
        )
    return sha256_hex(canonical_json(mapping))


def file_digest(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks of ``chunk_size`` bytes.

    Memory use is one ``chunk_size`` buffer, whatever the file's size.

    Raises
    ------
    ValidationError
        The file is missing, not a regular file, or unreadable.
    ConfigurationError
        ``chunk_size`` is not an int >= 1.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = Path(tmp) / "f.bin"
    ...     _ = p.write_bytes(b"abc")
    ...     file_digest(p, chunk_size=2) == sha256_hex(b"abc")
    True
    """
    size = check_value("file_digest", "chunk_size", chunk_size, Integer(low=1))
    p = Path(path)
    buffer = bytearray(size)
    view = memoryview(buffer)
    digest = hashlib.sha256()
    try:
        if not p.is_file():
            what = "does not exist" if not p.exists() else "is not a regular file"
            raise ValidationError(f"cannot digest {p}: it {what}")
        with open(p, "rb", buffering=0) as handle:
            while True:
                read = handle.readinto(view)
                if not read:
                    break
                digest.update(view[:read])
    except OSError as exc:
        raise ValidationError(f"cannot digest {p}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _as_bytes_array(name: str, tensor: Tensor) -> np.ndarray[Any, Any]:
    """A NumPy view (no copy when possible) of ``tensor``'s C-order little-endian bytes."""
    if not isinstance(tensor, Tensor):
        raise ValidationError(
            f"tensor {name!r} must be a torch.Tensor; got {type(tensor).__name__}"
        )
    if tensor.layout != torch.strided:
        raise ValidationError(
            f"tensor {name!r} has layout {tensor.layout}; convert it with .to_dense() first"
        )
    if tensor.is_quantized or tensor.device.type == "meta":
        raise ValidationError(f"tensor {name!r} ({tensor.dtype} on {tensor.device}) has no data")
    cpu = tensor.detach().to("cpu").contiguous()
    if cpu.is_conj():
        cpu = cpu.resolve_conj()
    if cpu.is_neg():
        cpu = cpu.resolve_neg()
    flat = cpu.reshape(-1)
    if sys.byteorder == "little":
        return flat.view(torch.uint8).numpy()  # the bytes as they are in memory
    size = cpu.element_size()  # big-endian host: swap each element to little-endian
    if size == 1:
        return flat.view(torch.uint8).numpy()
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}[size] if size <= 8 else None
    if as_int is None:  # complex128: two float64 halves
        return flat.view(torch.float64).numpy().astype("<f8")
    return flat.view(as_int).numpy().astype(f"<i{size}")


def _state_header(name: str, tensor: Tensor) -> bytes:
    return canonical_json(
        {"dtype": _dtype_name(tensor.dtype), "name": name, "shape": list(tensor.shape)}
    )


def state_digest(tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 (hex) of a model's named tensors in one documented byte layout.

    The hashed bytes are, in order::

        b"VFLSTATE1\\n"
        for name in sorted(tensors):            # Python's sorted(): by Unicode code point
            header = canonical_json({"dtype": dtype, "name": name, "shape": [d0, d1, ...]})
            struct.pack("<Q", len(header))      # 8-byte little-endian length of the header
            header                              # UTF-8
            data                                # numel * itemsize bytes, C order, little-endian

    ``dtype`` is the torch dtype without ``torch.`` (``"float32"``, ``"bfloat16"``,
    ``"int64"``, ``"bool"``...); ``shape`` is ``[]`` for a scalar; the data of a ``bool`` is one
    byte per entry (0 or 1). The length of the data is implied by dtype and shape. Tensors on
    another device are copied to the CPU; a contiguous CPU tensor is hashed in place, without a
    copy. Parameters and buffers are hashed in full precision: a ``float16`` weight is hashed
    as its 2-byte values, not converted.

    Raises
    ------
    ValidationError
        A name is not a ``str``, a value is not a dense tensor.

    Examples
    --------
    >>> import hashlib, struct
    >>> t = torch.tensor([1.0, 2.0])
    >>> header = b'{"dtype":"float32","name":"w","shape":[2]}'
    >>> by_hand = hashlib.sha256(
    ...     b"VFLSTATE1\\n" + struct.pack("<Q", len(header)) + header + t.numpy().tobytes()
    ... ).hexdigest()
    >>> state_digest({"w": t}) == by_hand
    True
    """
    if not isinstance(tensors, Mapping):
        raise ValidationError(
            f"state_digest needs a mapping of name to tensor; got {type(tensors).__name__}"
        )
    names = list(tensors)
    for name in names:
        if not isinstance(name, str):
            raise ValidationError(f"tensor names must be str; got {name!r}")
    digest = hashlib.sha256(STATE_MAGIC)
    for name in sorted(names):
        tensor = tensors[name]
        array = _as_bytes_array(name, tensor)
        header = _state_header(name, tensor)
        digest.update(struct.pack("<Q", len(header)))
        digest.update(header)
        if array.size:
            digest.update(array.data)
    return digest.hexdigest()


#: ``digest_rows`` uses threads from this many bytes in all...
_THREADS_MIN_TOTAL = 8 * 1024 * 1024
#: ...and this many bytes per row (below it, per-row Python overhead dominates).
_THREADS_MIN_ROW = 256 * 1024
_MAX_WORKERS = 8


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def digest_rows(rows: Tensor, *, workers: int | None = None) -> list[str]:
    """SHA-256 (hex) of each row of an ``(n, d)`` tensor, as little-endian float32 bytes.

    ``digest_rows(rows)[i] == velocity.types.tensor_digest(rows[i])`` for every ``i``: the
    digest a client attaches to its update. A contiguous float32 CPU tensor is hashed in
    place (no copy); any other tensor is first converted to contiguous float32 on the CPU,
    once, as ``tensor_digest`` does.

    Parameters
    ----------
    rows : Tensor
        ``(n, d)``, real dtype (converted to float32).
    workers : int, optional
        Threads hashing rows at once (``hashlib`` releases the GIL on large buffers).
        ``None`` (default) uses up to 8 threads when the stack holds at least 8 MiB in rows
        of at least 256 KiB, one thread otherwise. The result is the same list either way.

    Returns
    -------
    list of str
        ``n`` digests, in row order.

    Examples
    --------
    >>> from velocity.types import tensor_digest
    >>> rows = torch.arange(6.0).reshape(2, 3)
    >>> digest_rows(rows) == [tensor_digest(rows[0]), tensor_digest(rows[1])]
    True
    """
    threads = (
        None if workers is None else check_value("digest_rows", "workers", workers, Integer(1))
    )
    if not isinstance(rows, Tensor):
        raise ValidationError(f"digest_rows needs a torch.Tensor; got {type(rows).__name__}")
    if rows.dim() != 2:
        raise ValidationError(
            f"digest_rows needs an (n, d) tensor; got shape {tuple(rows.shape)} ({rows.dim()}-D)"
        )
    if rows.dtype.is_complex or rows.layout != torch.strided:
        raise ValidationError(
            f"digest_rows needs a dense real tensor; got {rows.dtype} with layout {rows.layout}"
        )
    cpu = rows.detach().to("cpu", torch.float32).contiguous()
    array = cpu.numpy()
    if sys.byteorder != "little":
        array = array.astype("<f4")
    n, d = array.shape
    if threads is None:
        row_bytes = 4 * d
        big = n > 1 and row_bytes >= _THREADS_MIN_ROW and n * row_bytes >= _THREADS_MIN_TOTAL
        threads = min(_MAX_WORKERS, _usable_cpus(), n) if big else 1
    threads = max(1, min(threads, n))
    sha256: Callable[..., Any] = hashlib.sha256
    if threads == 1:
        return [sha256(array[i]).hexdigest() for i in range(n)]
    bounds = [n * part // threads for part in range(threads + 1)]

    def work(part: int) -> list[str]:
        return [sha256(array[i]).hexdigest() for i in range(bounds[part], bounds[part + 1])]

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="digest_rows") as pool:
        pieces = list(pool.map(work, range(threads)))
    return [digest for piece in pieces for digest in piece]
