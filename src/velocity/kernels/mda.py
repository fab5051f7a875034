"""Minimum diameter averaging (exact)."""

from __future__ import annotations

from torch import Tensor

from velocity.kernels._checks import (
    check_bool,
    check_f,
    check_int,
    check_updates,
    check_weights,
    drop_nonfinite,
    note_selected,
    require,
    to_work_dtype,
)
from velocity.kernels._gram import pairwise_sq_distances_from
from velocity.kernels._select import mean_of_rows
from velocity.kernels._subsets import best_subset

__all__ = ["mda"]


def mda(
    updates: Tensor,
    weights: Tensor | None = None,
    *,
    f: int,
    max_subsets: int = 1_000_000,
    strict: bool = True,
) -> Tensor:
    r"""Minimum diameter averaging (El Mhamdi, Guerraoui & Rouault 2018; Rousseeuw 1985).

    The mean of the subset :math:`S`, :math:`|S| = n - f`, of smallest diameter
    :math:`\max_{i,j \in S} \|x_i - x_j\|`, found by exact search over all C(n, f) subsets
    (the first minimal one in ``itertools.combinations`` order). Refuses with a clear error
    when C(n, f) > ``max_subsets`` instead of running for hours. Needs ``n > 2f``;
    ``strict=False`` needs only ``n > f`` (ByzPy's check).
    ``weights`` are validated and ignored. The k non-finite rows (any NaN or ±inf entry) are
    dropped and count against f: the result is MDA of the n − k finite rows with f − k (whose
    C(n − k, f − k) subsets are the ones searched); k > f raises ``ValidationError`` (the
    policy in ``docs/kernels.md``).

    Examples
    --------
    >>> import torch
    >>> round(mda(torch.tensor([[0.0], [1.0], [2.0], [40.0], [41.0]]), f=2).item(), 4)
    1.0
    """
    x = check_updates(updates, "mda")
    n = x.shape[0]
    check_weights(weights, n, "mda")
    f = check_f(f, "mda")
    max_subsets = check_int(max_subsets, "max_subsets", "mda", minimum=1)
    if check_bool(strict, "strict", "mda"):
        require(n > 2 * f, f"mda needs n > 2f; got n={n}, f={f}")
    else:
        require(n > f, f"mda needs n > f (strict=False); got n={n}, f={f}")
    kept = drop_nonfinite(to_work_dtype(x), "mda", f)
    work = kept.x
    assert kept.f is not None
    dist = pairwise_sq_distances_from(work)

    def diameter(idx: Tensor) -> Tensor:
        return dist[idx[:, :, None], idx[:, None, :]].amax(dim=(1, 2))

    chosen = best_subset(
        work.shape[0], kept.f, diameter, rule="mda", max_subsets=max_subsets, device=dist.device
    )
    note_selected(kept.rows_of(chosen), n)
    return mean_of_rows(work, chosen).to(x.dtype)
