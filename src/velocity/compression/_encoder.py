"""The codec as the clients' last stage and the server's first: :class:`CodecEncoder`.

On the client, :meth:`CodecEncoder.encode` adds the client's error-feedback residual (when
on), encodes the row into the codec's frame, decodes it again (what the server will see),
and keeps ``compensated - decoded`` as the new residual in the client's state. On the
server, :meth:`CodecEncoder.decode` is registered with the round engine under
:attr:`CodecEncoder.encoding` and decodes the frame, which it treats as hostile (the frame
is checked for its magic, codec, dimension and exact length before anything is allocated).

Residual memory is bounded: ``state_capacity`` clients keep a residual (``memory_mb`` over
``4 d`` bytes each); the least recently updated beyond that forget theirs (their next
update starts without compensation). The residuals are part of the engine's checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from velocity.compression._codecs import Codec, decode_frame
from velocity.errors import ConfigurationError, ValidationError
from velocity.strategies import RoundBatch
from velocity.types import ParamSpec, StageContext, StageState

__all__ = ["ENCODING", "CodecEncoder", "DownlinkCodec"]

ENCODING = "velocity-codec"
"""The encoding name of codec frames on :class:`~velocity.types.ClientUpdate`."""


@dataclass(frozen=True, eq=False)
class CodecEncoder:
    """A codec as the engine's update encoder (:class:`~velocity.types.UpdateEncoder`).

    Parameters
    ----------
    codec : Codec
        From :func:`velocity.compression.codec_from_config` or built directly.
    spec : ParamSpec
        The rows' layout (per-tensor scales follow its tensors).
    error_feedback : bool
        Keep each client's residual and add it to its next update (EF-SGD).
    memory_mb : float
        Most memory the residuals may take, in MiB (at least one client's).

    Examples
    --------
    >>> import torch
    >>> from velocity.compression import TopK
    >>> from velocity.types import ParamSpec, StageContext
    >>> spec = ParamSpec.from_sizes({"w": 4})
    >>> enc = CodecEncoder(TopK(0.5), spec, error_feedback=True)
    >>> ctx = StageContext(0, 1, 0, spec, torch.zeros(4), "c", 0)
    >>> payload, decoded, state = enc.encode(torch.tensor([4.0, -3.0, 2.0, 1.0]), {}, ctx)
    >>> decoded.tolist(), state["residual"].tolist()
    ([4.0, -3.0, 0.0, 0.0], [0.0, 0.0, 2.0, 1.0])
    >>> enc.decode(payload, spec).tolist()
    [4.0, -3.0, 0.0, 0.0]
    """

    codec: Codec
    spec: ParamSpec
    error_feedback: bool = False
    memory_mb: float = 1024.0
    state_capacity: int | None = field(init=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.memory_mb, int | float) and math.isfinite(self.memory_mb)):
            raise ConfigurationError(
                f"CodecEncoder.memory_mb must be a number; got {self.memory_mb!r}"
            )
        capacity = None
        if self.error_feedback:
            capacity = int(self.memory_mb * 2**20 // (4 * self.spec.d))
            if capacity < 1:
                raise ConfigurationError(
                    f"compression.error_feedback_memory_mb: {self.memory_mb:g} MiB cannot hold "
                    f"one residual of {self.spec.d} float32 values "
                    f"({4 * self.spec.d / 2**20:.1f} MiB)"
                )
        object.__setattr__(self, "state_capacity", capacity)

    @property
    def name(self) -> str:
        return "codec"

    @property
    def encoding(self) -> str:
        return ENCODING

    def encoded_size(self) -> int:
        """Bytes of one encoded update (the frame's header included)."""
        return int(self.codec.encoded_size(self.spec))

    def encode(
        self, row: Tensor, state: StageState, ctx: StageContext
    ) -> tuple[bytes, Tensor, StageState]:
        residual = state.get("residual") if self.error_feedback else None
        if residual is not None:
            row.add_(residual)
        generator = ctx.generator("codec")
        payload = self.codec.encode(row, self.spec, generator=generator)
        decoded = self.codec.decode(payload, self.spec)
        if not self.error_feedback:
            return payload, decoded, {}
        new = row - decoded if residual is None else torch.sub(row, decoded, out=residual)
        return payload, decoded, {"residual": new}

    def decode(self, payload: bytes, spec: ParamSpec) -> Tensor:
        """The server side: any codec's frame (the codec id byte says which), checked."""
        return decode_frame(payload, spec)


@dataclass(frozen=True, eq=False)
class DownlinkCodec:
    """Server post-stage: the round's model difference travels to the clients encoded.

    The aggregate ``Δ`` (plus the server's residual, with ``error_feedback``) is encoded with
    ``codec``; the server then applies the *decoded* difference, so the model every client
    rebuilds from its previous version plus the frame is bit for bit the server's. Only a
    plain server step (no server optimizer) keeps that true; the builder refuses others. A
    client that does not hold the previous version downloads the full model instead (the
    engine counts both, see ``RoundEngine(downlink_bytes=...)``).

    State: ``residual`` (the server's, ``(d,)`` float32). Metrics: ``bytes`` (the frame).

    >>> import torch
    >>> from velocity.compression import TopK
    >>> from velocity.strategies import RoundBatch
    >>> from velocity.types import ParamSpec, StageContext
    >>> spec = ParamSpec.from_sizes({"w": 4})
    >>> stage = DownlinkCodec(TopK(0.25), spec)
    >>> batch = RoundBatch(rows=torch.zeros(1, 4), num_samples=[1], client_ids=["c"])
    >>> batch.update = torch.tensor([1.0, 3.0, -2.0, 0.5])
    >>> ctx = StageContext(0, 1, 0, spec, torch.zeros(4))
    >>> batch, state, _ = stage.apply(batch, stage.init(spec), ctx)
    >>> batch.update.tolist(), state["residual"].tolist()
    ([0.0, 3.0, 0.0, 0.0], [1.0, 0.0, -2.0, 0.5])
    """

    codec: Codec
    spec: ParamSpec
    error_feedback: bool = True

    @property
    def name(self) -> str:
        return "downlink"

    def encoded_size(self) -> int:
        return int(self.codec.encoded_size(self.spec))

    def init(self, spec: ParamSpec) -> StageState:
        return {"residual": torch.zeros(spec.d)} if self.error_feedback else {}

    def apply(
        self, x: RoundBatch, state: StageState, ctx: StageContext
    ) -> tuple[RoundBatch, StageState, Mapping[str, Any]]:
        if x.update is None:
            raise ValidationError("DownlinkCodec: no aggregate to encode (it runs after one)")
        delta = x.update.to(torch.float32)
        if self.error_feedback:
            delta = delta + state["residual"]
        frame = self.codec.encode(delta, self.spec, generator=ctx.generator("downlink"))
        decoded = self.codec.decode(frame, self.spec)
        x.update = decoded
        new = {"residual": delta - decoded} if self.error_feedback else {}
        return x, new, {"bytes": len(frame)}
