"""Static norm clipping (pre-aggregator)."""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.kernels._checks import check_nonneg_float, check_updates, check_weights
from velocity.kernels._clipping import clip_rows

__all__ = ["clip"]


def clip(
    updates: Tensor,
    weights: Tensor | None = None,
    *,
    threshold: float = 2.0,
    inplace: bool = False,
) -> tuple[Tensor, Tensor | None]:
    r"""Static norm clipping: :math:`x_i \leftarrow x_i \min(1, c / \|x_i\|_2)`.

    A row with ±inf entries becomes ``threshold`` times its limit direction; a row with NaN
    stays NaN. Returns ``(clipped, weights)``. With ``inplace=True`` the rows of ``updates``
    are rewritten instead of copied — for the round's own scratch stack, which the
    orchestrator owns; a copy of 400 MB costs more than the clipping itself.

    Examples
    --------
    >>> import torch
    >>> out, _ = clip(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), threshold=1.0)
    >>> out.tolist()
    [[0.6000000238418579, 0.800000011920929], [0.30000001192092896, 0.4000000059604645]]
    """
    x = check_updates(updates, "clip")
    w = check_weights(weights, x.shape[0], "clip")
    thr = check_nonneg_float(threshold, "threshold", "clip")
    norms = torch.linalg.vector_norm(x.float() if x.dtype != torch.float64 else x, dim=1)
    norms = torch.nan_to_num(norms, nan=float("inf"), posinf=float("inf"))
    over = torch.nonzero(norms > thr).flatten()
    out = x if inplace else x.clone()
    if over.numel():
        clip_rows(out, over, torch.full((over.numel(),), thr, dtype=torch.float64), norms[over])
    del w
    return out, weights
