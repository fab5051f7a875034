"""Comparative gradient elimination."""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.kernels._checks import (
    check_f,
    check_updates,
    check_weights,
    drop_nonfinite,
    note_selected,
    require,
    to_work_dtype,
)
from velocity.kernels._select import mean_of_rows, smallest

__all__ = ["cge"]


def cge(updates: Tensor, weights: Tensor | None = None, *, f: int) -> Tensor:
    r"""Comparative gradient elimination (Gupta & Vaidya 2020, "Fault-Tolerance in Distributed
    Optimization: The Case of Redundancy"; Gupta, Liu & Vaidya 2021).

    The mean of the ``n − f`` rows with the smallest L2 norms (ties: lower index). Needs
    ``n > f``. ``weights`` are validated and ignored. The k non-finite rows (any NaN or ±inf
    entry) are dropped and count against f: the result is CGE of the n − k finite rows with
    f − k (the same n − f rows are averaged); k > f raises ``ValidationError`` (the policy in
    ``docs/kernels.md``). The row norms double as the finite check: no extra pass.

    Examples
    --------
    >>> import torch
    >>> round(cge(torch.tensor([[1.0], [-2.0], [3.0], [-50.0]]), f=1).item(), 4)
    0.6667
    """
    x = check_updates(updates, "cge")
    n = x.shape[0]
    check_weights(weights, n, "cge")
    f = check_f(f, "cge")
    require(n > f, f"cge needs n > f; got n={n}, f={f}")
    work = to_work_dtype(x)
    norms = torch.linalg.vector_norm(work, dim=1)
    kept = drop_nonfinite(work, "cge", f, hint=norms)
    if kept.keep is not None:
        work = kept.x  # norms again on the finite rows: the same numbers as cge(finite rows)
        norms = torch.linalg.vector_norm(work, dim=1)
    chosen = smallest(norms.to(torch.float64), n - f)
    note_selected(kept.rows_of(chosen), n)
    return mean_of_rows(work, chosen).to(x.dtype)
