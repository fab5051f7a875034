"""MoNNA: mean of the nearest neighbours of a trusted row."""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.kernels._checks import (
    check_f,
    check_int,
    check_updates,
    check_weights,
    drop_nonfinite,
    finite_rows,
    note_selected,
    require,
    to_work_dtype,
)
from velocity.kernels._gram import sq_distances_to
from velocity.kernels._select import mean_of_rows, smallest

__all__ = ["monna", "sq_distances_to_row"]


def sq_distances_to_row(x: Tensor, ref: int) -> Tensor:
    """float64 ``(n,)`` squared distances from every row to row ``ref``, by direct differences.

    One blocked pass over the data; differences are formed before squaring, so there is no
    cancellation for rows close to the reference. Non-finite values become +inf.
    """
    acc = sq_distances_to(x, x[ref])
    return torch.nan_to_num(acc, nan=float("inf"), posinf=float("inf"))


def monna(
    updates: Tensor, weights: Tensor | None = None, *, f: int, reference_index: int = 0
) -> Tensor:
    r"""MoNNA (Farhadkhani et al. 2023, "Robust Collaborative Learning with Linear Gradient
    Overhead").

    The mean of the ``n − f`` rows nearest (Euclidean) to the trusted row ``reference_index``,
    that row included; ties go to the lower index. The reference row must be finite (it is
    trusted, so it is never dropped: a non-finite reference raises ``ValidationError``). Needs
    ``n > 2f``. ``weights`` are validated and ignored. The k non-finite rows (any NaN or ±inf
    entry) are dropped and count against f: the result is MoNNA of the n − k finite rows with
    f − k, from the same reference row; k > f raises ``ValidationError`` (the policy in
    ``docs/kernels.md``).

    Examples
    --------
    >>> import torch
    >>> monna(torch.tensor([[0.0], [1.0], [3.0], [100.0]]), f=1).tolist()
    [1.3333333730697632]
    """
    x = check_updates(updates, "monna")
    n = x.shape[0]
    check_weights(weights, n, "monna")
    f = check_f(f, "monna")
    ref = check_int(reference_index, "reference_index", "monna", minimum=0)
    require(n > 2 * f, f"monna needs n > 2f; got n={n}, f={f}")
    require(ref < n, f"monna: reference_index must be < n; got reference_index={ref}, n={n}")
    work = to_work_dtype(x)
    # the distances are the finite check's hint (a non-finite row, or reference, makes them
    # non-finite), so finite input is read twice in all: distances, then the mean
    sq = sq_distances_to(work, work[ref])
    finite = finite_rows(work, hint=sq)
    kept = drop_nonfinite(work, "monna", f, finite=finite)
    require(
        bool(finite[ref]),
        f"monna: the trusted reference row {ref} holds non-finite values",
    )
    if kept.keep is not None:  # the distances of the finite rows alone, bit for bit
        work, ref = kept.x, kept.position(ref)
        sq = sq_distances_to(work, work[ref])
    sq = torch.nan_to_num(sq, nan=float("inf"), posinf=float("inf"))
    chosen = smallest(sq, n - f)
    note_selected(kept.rows_of(chosen), n)
    return mean_of_rows(work, chosen).to(x.dtype)
