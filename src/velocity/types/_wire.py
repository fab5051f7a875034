"""Tasks and updates as bytes: a JSON header plus safetensors, never pickle.

Frame layout (all that a network transport or another process sees)::

    b"VFL1" | header length (uint32, little-endian) | UTF-8 JSON header | safetensors bytes

The JSON header holds the scalar fields; the safetensors part holds the tensors (the task's
global parameters, the update's delta). Decoding is bounded and checks everything it reads:
the magic, the lengths against ``max_bytes``, the header's keys (unknown ones refused) and
types, numbers (finite, integers within ``[0, 2**53]``, no ``NaN``/``Infinity``), nesting
depth, and each tensor's name, dtype and shape (``(d,)`` float32). Every refusal is a
:class:`~velocity.errors.ProtocolError`; it never executes code from the bytes.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any, Final

import torch
from torch import Tensor

from velocity.errors import ProtocolError
from velocity.types._messages import ClientTask, ClientUpdate, TaskConfig

__all__ = [
    "MAGIC",
    "MAX_HEADER_BYTES",
    "decode_delta",
    "decode_task",
    "decode_update",
    "encode_delta",
    "encode_task",
    "encode_update",
]

MAGIC: Final = b"VFL1"
MAX_HEADER_BYTES: Final = 1 << 20
"""A header larger than 1 MiB is refused before it is parsed."""


def _frame(header: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> bytes:
    from safetensors.torch import save

    text = json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")
    body = save({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()})
    return MAGIC + struct.pack("<I", len(text)) + text + body


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a key appears twice in one object")
    return dict(pairs)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number a frame may carry")


def _unframe(
    data: bytes,
    *,
    kind: str,
    names: tuple[str, ...],
    keys: frozenset[str],
    d: int,
    max_bytes: int | None,
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The checked header and tensors of a ``kind`` frame (``"task"`` or ``"update"``)."""
    what = f"{kind} frame"
    max_bytes = max_bytes or _limit(d)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"{what}: expected bytes; got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise ProtocolError(f"{what}: {len(data)} bytes exceed the limit of {max_bytes}")
    if len(data) < 8 or data[:4] != MAGIC:
        raise ProtocolError(f"{what}: not a VelocityFL frame (bad magic)")
    (size,) = struct.unpack("<I", data[4:8])
    if size > MAX_HEADER_BYTES or 8 + size > len(data):
        raise ProtocolError(f"{what}: header length {size} is out of bounds")
    try:
        header = json.loads(
            data[8 : 8 + size].decode("utf-8"),
            parse_constant=_no_constant,
            object_pairs_hook=_unique_keys,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"{what}: header is not plain JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"{what}: header must be a JSON object")
    unknown = sorted(set(header) - keys)
    if unknown:
        raise ProtocolError(f"{what}: unknown header keys {unknown}")
    if header.get("kind") != kind:
        raise ProtocolError(f"{what}: kind is {header.get('kind')!r}, not {kind!r}")
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data[8 + size :])
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ProtocolError(f"{what}: tensor section is not valid safetensors ({exc})") from None
    if tuple(sorted(tensors)) != tuple(sorted(names)):
        raise ProtocolError(f"{what}: tensors {sorted(tensors)}; expected {sorted(names)}")
    for name, tensor in tensors.items():
        if tensor.dtype != torch.float32 or tuple(tensor.shape) != (d,):
            raise ProtocolError(
                f"{what}: tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}; "
                f"expected float32 ({d},)"
            )
    return header, tensors


MAX_COUNT: Final = 2**53
"""Largest integer a frame may carry (exact as a float64)."""


def _field(header: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if key not in header:
        raise ProtocolError(f"{what}: header lacks {key!r}")
    value = header[key]
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise ProtocolError(f"{what}: header field {key!r} has the wrong type")
    if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= MAX_COUNT:
        raise ProtocolError(f"{what}: header field {key!r} is out of range [0, 2**53]")
    if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= MAX_COUNT):
        raise ProtocolError(f"{what}: header field {key!r} is not a finite number")
    return value


def _number(header: Mapping[str, Any], key: str, what: str, *, positive: bool = False) -> Any:
    """An optional finite number (``None`` allowed)."""
    value = header.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{what}: header field {key!r} has the wrong type")
    if not (abs(value) <= MAX_COUNT and math.isfinite(float(value))) or (positive and value <= 0):
        raise ProtocolError(f"{what}: header field {key!r} is out of range")
    return float(value)


def _plain_numbers(value: object, what: str, key: str, depth: int = 0) -> None:
    """Refuse nesting deeper than a few levels and numbers beyond :data:`MAX_COUNT`."""
    if depth > 8:
        raise ProtocolError(f"{what}: header field {key!r} is nested too deeply")
    if isinstance(value, dict):
        for item in value.values():
            _plain_numbers(item, what, key, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _plain_numbers(item, what, key, depth + 1)
    elif (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and not (abs(value) <= MAX_COUNT and math.isfinite(float(value)))
    ):
        raise ProtocolError(f"{what}: header field {key!r} holds an out-of-range number")


_TASK_KEYS: Final = frozenset(
    {"kind", "client_id", "round", "version", "config", "dispatched_at", "timeout_s"}
)
_UPDATE_KEYS: Final = frozenset(
    {"kind", "client_id", "num_samples", "round", "base_version", "loss", "metrics", "digest"}
)


def _limit(d: int) -> int:
    return 4 * d + MAX_HEADER_BYTES + 4096


# ---------------------------------------------------------------------- tasks


def encode_task(task: ClientTask) -> bytes:
    """``task`` without its ``out`` row (memory is not shared over a wire)."""
    header = {
        "kind": "task",
        "client_id": task.client_id,
        "round": task.round,
        "version": task.version,
        "config": task.config.to_dict(),
        "dispatched_at": task.dispatched_at,
        "timeout_s": task.timeout_s,
    }
    return _frame(header, {"params": task.params})


def decode_task(data: bytes, *, d: int, max_bytes: int | None = None) -> ClientTask:
    """Inverse of :func:`encode_task`; ``d`` is the model size the receiver expects."""
    what = "task frame"
    header, tensors = _unframe(
        data, kind="task", names=("params",), keys=_TASK_KEYS, d=d, max_bytes=max_bytes
    )
    config = _field(header, "config", dict, what)
    _plain_numbers(config, what, "config")
    try:
        return ClientTask(
            client_id=_field(header, "client_id", str, what),
            round=_field(header, "round", int, what),
            version=_field(header, "version", int, what),
            params=tensors["params"],
            config=TaskConfig.from_dict(config),
            dispatched_at=_field(header, "dispatched_at", (int, float), what),
            timeout_s=_number(header, "timeout_s", what, positive=True),
        )
    except (ValueError, TypeError, OverflowError) as exc:
        raise ProtocolError(f"{what}: {exc}") from None


# ---------------------------------------------------------------------- updates


def _update_header(update: ClientUpdate) -> dict[str, Any]:
    return {
        "kind": "update",
        "client_id": update.client_id,
        "num_samples": update.num_samples,
        "round": update.round,
        "base_version": update.base_version,
        "loss": update.loss,
        "metrics": dict(update.metrics),
        "digest": update.digest,
    }


def encode_update(update: ClientUpdate) -> bytes:
    """``update`` (decoded delta) as one frame."""
    if update.delta is None:
        raise ProtocolError("encode_update: the update's delta is still encoded")
    return _frame(_update_header(update), {"delta": update.delta})


def encode_delta(update: ClientUpdate) -> ClientUpdate:
    """``update`` as it arrives from a wire: ``delta=None``, the frame as its ``payload``."""
    return ClientUpdate(
        update.client_id,
        update.num_samples,
        None,
        round=update.round,
        loss=update.loss,
        metrics=update.metrics,
        digest=update.digest,
        base_version=update.base_version,
        payload=encode_update(update),
        encoding="velocity-frame",
        arrived_at=update.arrived_at,
    )


def decode_update(data: bytes, *, d: int, max_bytes: int | None = None) -> ClientUpdate:
    """Inverse of :func:`encode_update`; ``d`` is the model size the server expects."""
    what = "update frame"
    header, tensors = _unframe(
        data, kind="update", names=("delta",), keys=_UPDATE_KEYS, d=d, max_bytes=max_bytes
    )
    loss = _number(header, "loss", what)
    digest = header.get("digest")
    if digest is not None and not isinstance(digest, str):
        raise ProtocolError(f"{what}: header field 'digest' has the wrong type")
    metrics = _field(header, "metrics", dict, what)
    _plain_numbers(metrics, what, "metrics")
    try:
        return ClientUpdate(
            client_id=_field(header, "client_id", str, what),
            num_samples=_field(header, "num_samples", int, what),
            delta=tensors["delta"],
            round=_field(header, "round", int, what),
            loss=loss,
            metrics=metrics,
            digest=digest,
            base_version=_field(header, "base_version", int, what),
        )
    except (ValueError, TypeError, OverflowError) as exc:
        raise ProtocolError(f"{what}: {exc}") from None


def decode_delta(update: ClientUpdate, *, d: int) -> ClientUpdate:
    """A payload-carrying update (:func:`encode_delta`) decoded; the frame must agree with
    the envelope (client id, round, digest)."""
    if update.delta is not None:
        return update
    if update.encoding != "velocity-frame" or update.payload is None:
        raise ProtocolError(
            f"update from {update.client_id!r}: unknown encoding {update.encoding!r}"
        )
    inner = decode_update(update.payload, d=d)
    if (inner.client_id, inner.round, inner.digest) != (
        update.client_id,
        update.round,
        update.digest,
    ):
        raise ProtocolError(
            f"update from {update.client_id!r}: the frame disagrees with its envelope"
        )
    return ClientUpdate(
        inner.client_id,
        inner.num_samples,
        inner.delta,
        round=inner.round,
        loss=inner.loss,
        metrics=inner.metrics,
        digest=inner.digest,
        base_version=inner.base_version,
        arrived_at=update.arrived_at,
    )
