r"""Error feedback (EF-SGD): what a lossy codec drops is kept and sent later.

Seide et al. 2014 ("1-Bit Stochastic Gradient Descent and its Application to Data-Parallel
Distributed Training of Speech DNNs"); Karimireddy et al. 2019 ("Error Feedback Fixes SignSGD
and other Gradient Compression Schemes"). Each client keeps a residual :math:`e` — a float32
``(d,)`` row in the :class:`~velocity.types.ParamSpec` layout, one per client (the per-client
store that bounds their number lives with the caller) — and in round t sends

.. math::
    p_t = x_t + e_{t-1}, \qquad \hat p_t = \mathrm{decode}(\mathrm{encode}(p_t)), \qquad
    e_t = p_t - \hat p_t,

so that :math:`\sum_{t \le T} \hat p_t + e_T = \sum_{t \le T} x_t`: nothing is lost, only late.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from velocity.compression._codecs import Codec
from velocity.errors import ValidationError
from velocity.types import ParamSpec

__all__ = ["ErrorFeedback", "compensate", "encode_with_feedback"]


def compensate(row: Tensor, residual: Tensor | None) -> Tensor:
    """``row + residual`` as a new tensor (``row`` itself when ``residual`` is ``None``).

    Neither input is modified. ``residual`` must have ``row``'s shape and dtype.

    Examples
    --------
    >>> compensate(torch.tensor([1.0, 2.0]), torch.tensor([0.5, -2.0])).tolist()
    [1.5, 0.0]
    """
    if residual is None:
        return row
    if not isinstance(residual, Tensor):
        raise ValidationError(
            f"error feedback: the residual must be a torch.Tensor; got {type(residual).__name__}"
        )
    if residual.shape != row.shape or residual.dtype != row.dtype:
        raise ValidationError(
            f"error feedback: the residual is {residual.dtype} {tuple(residual.shape)}; the row "
            f"is {row.dtype} {tuple(row.shape)}"
        )
    return row + residual.to(row.device)


def encode_with_feedback(
    codec: Codec,
    row: Tensor,
    spec: ParamSpec,
    residual: Tensor | None,
    *,
    generator: torch.Generator | None = None,
) -> tuple[bytes, Tensor, Tensor]:
    """Encode ``row + residual`` and return ``(frame, decoded, new residual)``.

    ``decoded`` is what the server will decode from ``frame`` (a new CPU float32 ``(d,)``
    row); ``new residual = (row + residual) - decoded``, on ``row``'s device. ``residual``
    ``None`` means zero (a client's first round). No input is modified.

    Examples
    --------
    >>> from velocity.compression import TopK
    >>> spec = ParamSpec.from_sizes({"w": 3})
    >>> frame, decoded, residual = encode_with_feedback(
    ...     TopK(0.3), torch.tensor([3.0, 1.0, -2.0]), spec, torch.tensor([0.0, 2.5, 0.0])
    ... )
    >>> decoded.tolist(), residual.tolist()
    ([0.0, 3.5, 0.0], [3.0, 0.0, -2.0])
    """
    compensated = compensate(row, residual)
    frame = codec.encode(compensated, spec, generator=generator)
    decoded = codec.decode(frame, spec)
    return frame, decoded, compensated - decoded.to(compensated.device)


@dataclass(frozen=True)
class ErrorFeedback:
    """A codec with error feedback: :func:`encode_with_feedback` bound to ``codec``.

    Parameters
    ----------
    codec : Codec
        The (lossy) codec whose error is fed back.

    Examples
    --------
    >>> from velocity.compression import TopK
    >>> spec = ParamSpec.from_sizes({"w": 2})
    >>> ef = ErrorFeedback(TopK(0.5))
    >>> residual = None
    >>> for x in ([1.0, 0.75], [1.0, 0.75]):
    ...     _, decoded, residual = ef.step(torch.tensor(x), spec, residual)
    ...     print(decoded.tolist(), residual.tolist())
    [1.0, 0.0] [0.0, 0.75]
    [0.0, 1.5] [1.0, 0.0]
    """

    codec: Codec

    def __post_init__(self) -> None:
        if not isinstance(self.codec, Codec):
            raise ValidationError(
                f"ErrorFeedback.codec must be a Codec; got {type(self.codec).__name__}"
            )

    @staticmethod
    def compensate(row: Tensor, residual: Tensor | None) -> Tensor:
        """``row + residual`` (:func:`compensate`).

        >>> ErrorFeedback.compensate(torch.ones(2), None).tolist()
        [1.0, 1.0]
        """
        return compensate(row, residual)

    def step(
        self,
        row: Tensor,
        spec: ParamSpec,
        residual: Tensor | None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[bytes, Tensor, Tensor]:
        """``(frame, decoded, new residual)`` (:func:`encode_with_feedback`)."""
        return encode_with_feedback(self.codec, row, spec, residual, generator=generator)
