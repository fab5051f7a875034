"""The coordinate-wise engine: per-coordinate reductions over sorted values (private).

A coordinate-wise rule looks at the n values of each coordinate in sorted order. Sorting the
``(n, d)`` stack along its first axis is slow with ``torch.sort`` on CPU (strided, no SIMD), so
on CPU this engine cuts the stack into column blocks of about 1 MiB, transposes each block into
cache, sorts it along its contiguous axis with numpy's SIMD sort, and hands the sorted
``(c, n)`` block to a reducer that returns the block's ``(c,)`` results. The blocks are shared
between ``torch.get_num_threads()`` threads (numpy and torch release the GIL). On other devices,
and for dtypes numpy cannot sort, blocks are sorted with ``torch.sort``.

NaN sorts after +inf in both numpy and torch, so a column holds a non-finite value exactly
when its sorted first value is −inf or its last is +inf or NaN. With ``finite_only`` the engine
checks those two ends of every sorted block (2d values in all, no extra pass over the data) and
reports non-finite input instead of reducing it: the rules then apply the non-finite-row policy
(:func:`velocity.kernels._checks.drop_nonfinite`) and run again on the finite rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from velocity.kernels._checks import drop_nonfinite

__all__ = ["Reducer", "coordinatewise", "coordinatewise_rule"]

Reducer = Callable[[Tensor], Tensor]
"""Maps a sorted block ``(c, n)`` (ascending along dim 1) to its ``(c,)`` results."""

_BLOCK_BYTES = 1 << 20
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _one_thread() -> None:
    """Worker initializer: torch ops on this thread run single-threaded.

    Without it, the first parallel torch op on a worker gives that thread an OpenMP team of its
    own, and the extra teams slow every later torch op of the process (measured 2-3x on the
    local training that follows a coordinate-wise aggregation). The setting is the worker
    thread's own; the main thread keeps ``torch.get_num_threads()``.
    """
    torch.set_num_threads(1)


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size != workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="velocity-cw", initializer=_one_thread
            )
            _pool_size = workers
        return _pool


def _numpy_sortable(x: Tensor) -> bool:
    """Whether ``x``'s blocks are sorted by numpy (CPU float32/float64) rather than torch."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def _block_columns(n: int, itemsize: int) -> int:
    return max(64, _BLOCK_BYTES // max(1, n * itemsize))


def coordinatewise(
    x: Tensor,
    reducer: Reducer,
    *,
    rows: Tensor | None = None,
    out_dtype: torch.dtype,
    finite_only: bool = False,
) -> Tensor | None:
    """Apply ``reducer`` to every column of ``x`` (optionally only ``rows`` of it), sorted.

    Returns a ``(d,)`` tensor of ``out_dtype`` on ``x``'s device; with ``finite_only``,
    ``None`` as soon as a sorted block shows a non-finite value (the remaining blocks are
    skipped).
    """
    n = x.shape[0] if rows is None else int(rows.numel())
    d = x.shape[1]
    out = torch.empty(d, dtype=out_dtype, device=x.device)
    numpy_ok = _numpy_sortable(x)
    cols = _block_columns(n, x.element_size())
    if not numpy_ok:
        src = x if rows is None else x.index_select(0, rows.to(x.device))
        # one flag on the device, read once at the end: no synchronisation per block
        bad = torch.zeros((), dtype=torch.bool, device=x.device) if finite_only else None
        for start in range(0, d, cols):
            stop = min(start + cols, d)
            block = src[:, start:stop].T.sort(dim=1).values
            if bad is not None:
                bad |= ~torch.isfinite(block[:, 0] - block[:, -1]).all()
            out[start:stop] = reducer(block).to(out_dtype)
        return None if bad is not None and bool(bad) else out

    xn = x.numpy()
    row_idx = None if rows is None else rows.cpu().numpy()
    seen = threading.Event()  # set by any worker that meets a non-finite value

    def work(lo: int, hi: int) -> None:
        with np.errstate(invalid="ignore", over="ignore"):
            for start in range(lo, hi, cols):
                if seen.is_set():
                    return
                stop = min(start + cols, hi)
                part = xn[:, start:stop] if row_idx is None else xn[row_idx, start:stop]
                block = np.ascontiguousarray(part.T)
                block.sort(axis=1)
                # first − last is non-finite iff an end is (or finite ends overflow, which
                # only costs the caller a second, plain pass): one strided read of the ends
                if finite_only and not np.isfinite(block[:, 0] - block[:, -1]).all():
                    seen.set()
                    return
                out[start:stop] = reducer(torch.from_numpy(block)).to(out_dtype)

    threads = max(1, min(torch.get_num_threads(), -(-d // cols)))
    if threads == 1:
        work(0, d)
        return None if seen.is_set() else out
    # Contiguous column ranges rounded to whole blocks: each column is computed the same way
    # whatever the thread count, so results are bit-identical across runs and machines.
    per = -(-d // (threads * cols)) * cols
    futures = [_executor(threads).submit(work, lo, min(lo + per, d)) for lo in range(0, d, per)]
    for fut in futures:
        fut.result()
    return None if seen.is_set() else out


def coordinatewise_rule(
    x: Tensor,
    reducer: Callable[[int | None], Reducer],
    *,
    rule: str,
    f: int | None,
    out_dtype: torch.dtype,
) -> Tensor:
    """A coordinate-wise rule under the non-finite-row policy.

    ``reducer(f)`` builds the reducer for budget f. The stack is sorted and reduced once; only
    if a sorted block shows a non-finite value are the non-finite rows dropped (counted
    against ``f``, see :func:`velocity.kernels._checks.drop_nonfinite`) and the rule run again
    on the finite rows with ``reducer(f − k)``. Finite input costs no extra pass.
    """
    out = coordinatewise(x, reducer(f), out_dtype=out_dtype, finite_only=True)
    if out is not None:
        return out
    kept = drop_nonfinite(x, rule, f)
    out = coordinatewise(kept.x, reducer(kept.f), out_dtype=out_dtype)
    assert out is not None
    return out
