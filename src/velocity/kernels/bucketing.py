"""Bucketing (pre-aggregator)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from velocity.errors import ValidationError
from velocity.kernels._checks import (
    check_int,
    check_updates,
    check_weights,
    drop_nonfinite,
    finite_rows,
    to_work_dtype,
)

__all__ = ["bucketing"]


def bucketing(
    updates: Tensor,
    weights: Tensor | None = None,
    *,
    bucket_size: int,
    generator: torch.Generator | None = None,
    perm: Sequence[int] | Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    r"""Bucketing (Karimireddy, He & Jaggi 2022, "Byzantine-Robust Learning on Heterogeneous
    Datasets via Bucketing").

    Shuffle the rows with a permutation drawn from ``generator`` (``torch.randperm`` on the
    CPU), cut them into consecutive buckets of ``bucket_size`` rows (the last one may be
    smaller) and return one row per bucket, the bucket's mean: ``⌈n / bucket_size⌉`` rows.
    Output weights are the sums of the input weights of each bucket. Without a generator the
    permutation comes from a fresh, unseeded generator — pass one for reproducible runs.
    ``perm`` (a permutation of ``range(n)``) gives the order of the rows instead of a draw
    (``generator`` must then be ``None``); non-finite rows are left out of that order.
    Non-finite rows (any NaN or ±inf entry) are dropped with their weights before the
    shuffle: the output is the bucketing of the n' finite rows, ``⌈n' / bucket_size⌉`` rows;
    all n rows non-finite raises ``ValidationError`` (the policy in ``docs/kernels.md``). The
    check costs no pass over the input: a non-finite input row makes its bucket's mean
    non-finite, so only the ``⌈n / bucket_size⌉`` output rows are checked (one vectorized
    sum), and the buckets are formed again from the finite rows when one is flagged.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> out, w = bucketing(torch.eye(4), torch.ones(4), bucket_size=2, generator=g)
    >>> out.shape, w.tolist()
    (torch.Size([2, 4]), [2.0, 2.0])
    """
    x = check_updates(updates, "bucketing")
    n = x.shape[0]
    w = check_weights(weights, n, "bucketing")
    size = check_int(bucket_size, "bucket_size", "bucketing", minimum=1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValidationError(
            f"bucketing: generator must be a torch.Generator or None; got {type(generator)}"
        )
    order = None if perm is None else _check_perm(perm, n, generator)
    if order is not None:
        work = to_work_dtype(x)
        finite = finite_rows(work)
        if not bool(finite.all()):
            kept = drop_nonfinite(work, "bucketing", finite=finite)
            position = torch.cumsum(finite.long(), dim=0) - 1
            order = [int(position[i]) for i in order if bool(finite[i])]
            work, w = kept.x, kept.take(w)
        out, out_w = _buckets(work, w, size, None, order)
        if out_w is not None and weights is not None:
            out_w = out_w.to(weights.dtype if weights.is_floating_point() else torch.float64)
        return out.to(x.dtype), out_w
    gen = generator
    if gen is None:
        gen = torch.Generator()
        gen.seed()  # non-deterministic seed, global random state untouched
    work = to_work_dtype(x)
    state = gen.get_state()
    out, out_w = _buckets(work, w, size, gen)
    if not bool(finite_rows(out).all()):
        kept = drop_nonfinite(work, "bucketing")
        if kept.keep is not None:  # else: finite rows whose bucket sum overflowed; kept as is
            gen.set_state(state)  # the same draw as bucketing(finite rows) with this generator
            out, out_w = _buckets(kept.x, kept.take(w), size, gen)
    if out_w is not None and weights is not None:
        out_w = out_w.to(weights.dtype if weights.is_floating_point() else torch.float64)
    return out.to(x.dtype), out_w


def _check_perm(
    perm: Sequence[int] | Tensor, n: int, generator: torch.Generator | None
) -> list[int]:
    if generator is not None:
        raise ValidationError("bucketing: give perm or generator, not both")
    if isinstance(perm, Tensor):
        if perm.ndim != 1 or perm.dtype.is_floating_point or perm.dtype == torch.bool:
            raise ValidationError(
                f"bucketing: perm must be a 1-D integer tensor; got {perm.dtype} of shape "
                f"{tuple(perm.shape)}"
            )
        values: list[object] = list(perm.tolist())
    elif isinstance(perm, str | bytes) or not isinstance(perm, Sequence):
        raise ValidationError(f"bucketing: perm must be a sequence of ints; got {perm!r:.80}")
    else:
        values = list(perm)
    if not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_) for v in values
    ):
        raise ValidationError(f"bucketing: perm must hold ints; got {values!r:.80}")
    if sorted(int(v) for v in values) != list(range(n)) or len(values) != n:  # type: ignore[call-overload]
        raise ValidationError(
            f"bucketing: perm must be a permutation of range(n) = range({n}); got {values!r:.80}"
        )
    return [int(v) for v in values]  # type: ignore[call-overload]


def _buckets(
    work: Tensor,
    w: Tensor | None,
    size: int,
    gen: torch.Generator | None,
    order: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Shuffle the rows of ``work`` with ``gen`` (or take them in ``order``) and average
    consecutive buckets of ``size``."""
    n = work.shape[0]
    if order is None:
        assert gen is not None
        perm = torch.randperm(n, generator=gen, device=gen.device).cpu()
    else:
        perm = torch.tensor(list(order), dtype=torch.long)
    buckets = [perm[i : i + size] for i in range(0, n, size)]
    out = torch.empty(len(buckets), work.shape[1], dtype=work.dtype, device=work.device)
    for b, idx in enumerate(buckets):
        rows = idx.tolist()
        if len(rows) == 1:
            out[b].copy_(work[rows[0]])
        else:
            torch.add(work[rows[0]], work[rows[1]], out=out[b])
            for r in rows[2:]:
                out[b].add_(work[r])
            out[b].mul_(1.0 / len(rows))
    out_w = None if w is None else torch.stack([w[idx].sum() for idx in buckets])
    return out, out_w
