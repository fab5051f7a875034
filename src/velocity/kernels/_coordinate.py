"""The coordinate-wise engine: per-coordinate reductions over sorted values (private).

A coordinate-wise rule looks at the n values of each coordinate in sorted order. Sorting the
``(n, d)`` stack along its first axis is slow with ``torch.sort`` on CPU (strided, no SIMD), so
on CPU this engine cuts the stack into column blocks of about 1 MiB, transposes each block into
cache, sorts it along its contiguous axis with numpy's SIMD sort, and hands the sorted
``(c, n)`` block to a reducer that returns the block's ``(c,)`` results. The blocks are shared
between ``torch.get_num_threads()`` threads (numpy and torch release the GIL). On other devices,
and for dtypes numpy cannot sort, blocks are sorted with ``torch.sort``.

NaN sorts after +inf in both numpy and torch, so reducers see non-finite values at the ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

__all__ = ["coordinatewise"]

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


def _block_columns(n: int, itemsize: int) -> int:
    return max(64, _BLOCK_BYTES // max(1, n * itemsize))


def coordinatewise(
    x: Tensor, reducer: Reducer, *, rows: Tensor | None = None, out_dtype: torch.dtype
) -> Tensor:
    """Apply ``reducer`` to every column of ``x`` (optionally only ``rows`` of it), sorted.

    Returns a ``(d,)`` tensor of ``out_dtype`` on ``x``'s device.
    """
    n = x.shape[0] if rows is None else int(rows.numel())
    d = x.shape[1]
    out = torch.empty(d, dtype=out_dtype, device=x.device)
    numpy_ok = x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
    cols = _block_columns(n, x.element_size())
    if not numpy_ok:
        src = x if rows is None else x.index_select(0, rows.to(x.device))
        for start in range(0, d, cols):
            stop = min(start + cols, d)
            block = src[:, start:stop].T.sort(dim=1).values
            out[start:stop] = reducer(block).to(out_dtype)
        return out

    xn = x.numpy()
    row_idx = None if rows is None else rows.cpu().numpy()

    def work(lo: int, hi: int) -> None:
        for start in range(lo, hi, cols):
            stop = min(start + cols, hi)
            part = xn[:, start:stop] if row_idx is None else xn[row_idx, start:stop]
            block = np.ascontiguousarray(part.T)
            block.sort(axis=1)
            out[start:stop] = reducer(torch.from_numpy(block)).to(out_dtype)

    threads = max(1, min(torch.get_num_threads(), -(-d // cols)))
    if threads == 1:
        work(0, d)
        return out
    # Contiguous column ranges rounded to whole blocks: each column is computed the same way
    # whatever the thread count, so results are bit-identical across runs and machines.
    per = -(-d // (threads * cols)) * cols
    futures = [_executor(threads).submit(work, lo, min(lo + per, d)) for lo in range(0, d, per)]
    for fut in futures:
        fut.result()
    return out
