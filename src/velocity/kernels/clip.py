"""Static norm clipping (pre-aggregator)."""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.kernels._checks import (
    check_nonneg_float,
    check_updates,
    check_weights,
    drop_nonfinite,
)
from velocity.kernels._clipping import clip_factors, clip_rows, row_norms, scaled_copy

__all__ = ["clip"]


def clip(
    updates: Tensor,
    weights: Tensor | None = None,
    *,
    threshold: float = 2.0,
    inplace: bool = False,
) -> tuple[Tensor, Tensor | None]:
    r"""Static norm clipping: :math:`x_i \leftarrow x_i \min(1, c / \|x_i\|_2)`.

    Returns ``(clipped, weights)``. With ``inplace=True`` the rows of ``updates`` are rewritten
    instead of copied — for the round's own scratch stack, which the orchestrator owns; a copy
    of 400 MB costs more than the clipping itself. Non-finite rows (any NaN or ±inf entry)
    are dropped with their weights: the output holds the n' finite rows, clipped (a new
    tensor, whatever ``inplace`` says); all n rows non-finite raises ``ValidationError`` (the
    policy in ``docs/kernels.md``). The row norms double as the finite check; the copy is
    then made and scaled in one pass (in place, only the rows over the threshold are
    rewritten).

    Examples
    --------
    >>> import torch
    >>> out, _ = clip(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), threshold=1.0)
    >>> out.tolist()
    [[0.6000000238418579, 0.800000011920929], [0.30000001192092896, 0.4000000059604645]]
    """
    x = check_updates(updates, "clip")
    check_weights(weights, x.shape[0], "clip")
    thr = check_nonneg_float(threshold, "threshold", "clip")
    norms = row_norms(x)
    kept = drop_nonfinite(x, "clip", hint=norms)
    if kept.keep is None and not inplace:
        return scaled_copy(x, clip_factors(norms, thr)), weights
    if kept.keep is None:
        out = x
    else:  # a new tensor of the finite rows; their norms again, as clip(finite rows) has them
        out, weights = kept.x, kept.take(weights)
        norms = row_norms(out)
    over = torch.nonzero(norms > thr).flatten()
    if over.numel():
        clip_rows(out, over, torch.full((over.numel(),), thr, dtype=torch.float64), norms[over])
    return out, weights
