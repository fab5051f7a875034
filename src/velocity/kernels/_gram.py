"""The distance engine: one Gram matrix instead of n² passes over the data (private).

Every distance-based rule needs inner products between the n rows (and sometimes a few extra
vectors such as the coordinate-wise median). They come from one product ``X Xᵀ``:

* computed block by block over the columns, so temporaries stay in cache;
* on rows centred at their mean in each block — a translation, which changes no distance, and
  removes the large common component that makes ``‖x‖² + ‖y‖² − 2x·y`` cancel badly;
* each block's product (float32 GEMM for float32 data) accumulated in float64.

Pairs whose squared distance is tiny against their squared norms (near-duplicates, as Sybil
attacks produce) are then recomputed on the rows of their cluster centred inside the cluster, so
their distances are accurate relative to the cluster's own spread. The aggregators hand in
finite rows only (the non-finite-row policy drops the others first); for the public
:func:`velocity.kernels.pairwise_sq_distances`, rows with non-finite entries are kept out of
the product and are infinitely far from everything.
"""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.kernels._checks import finite_rows

__all__ = ["Basis", "finite_rows", "gram", "pairwise_sq_distances_from"]

_BLOCK_BYTES = 4 << 20


def gram(x: Tensor, extras: Tensor | None = None, centre: Tensor | None = None) -> Tensor:
    """float64 Gram matrix of ``[x; extras]`` after translating every row by ``-centre``.

    ``x`` is ``(n, d)`` with finite entries, ``extras`` an optional ``(e, d)``; the result is
    ``(n + e, n + e)`` on x's device. The default centre is the column means of ``x``;
    rules that face far outliers pass a robust one (the coordinate-wise median), which keeps
    the honest rows' inner products at the precision of their own spread.
    """
    n, d = x.shape
    rows = x if extras is None else torch.cat([x, extras.to(x.dtype)], dim=0)
    m = rows.shape[0]
    cols = max(256, _BLOCK_BYTES // max(1, m * x.element_size()))
    acc = torch.zeros(m, m, dtype=torch.float64, device=x.device)
    for start in range(0, d, cols):
        block = rows[:, start : start + cols]
        if centre is None:
            block = block - block[:n].mean(dim=0, keepdim=True)
        else:
            block = block - centre[start : start + cols].to(block.dtype)
        acc += (block @ block.T).to(torch.float64)
    return acc


def _sq_from_gram(g: Tensor) -> Tensor:
    diag = g.diagonal()
    dist = diag[:, None] + diag[None, :] - 2.0 * g
    dist = torch.nan_to_num(dist, nan=float("inf"), posinf=float("inf")).clamp_min_(0.0)
    dist.fill_diagonal_(0.0)
    return dist


def _components(adjacent: Tensor) -> list[list[int]]:
    n = adjacent.shape[0]
    neighbours = [torch.nonzero(adjacent[i]).flatten().tolist() for i in range(n)]
    seen = [False] * n
    comps: list[list[int]] = []
    for start in range(n):
        if seen[start] or not neighbours[start]:
            continue
        stack, comp = [start], []
        seen[start] = True
        while stack:
            i = stack.pop()
            comp.append(i)
            for j in neighbours[i]:
                if not seen[j]:
                    seen[j] = True
                    stack.append(j)
        comps.append(sorted(comp))
    return comps


def _refine_threshold(dtype: torch.dtype) -> float:
    return 1e-10 if dtype == torch.float64 else 1e-2


_MAX_DEPTH = 4


def _refined_sq_distances(x: Tensor, threshold: float, depth: int = 0) -> Tensor:
    """Squared distances of the finite rows ``x``, refined inside clusters of close rows.

    Pairs closer than ``threshold`` times their squared norms (about the centre) lose
    precision to cancellation; each cluster of such pairs that is a strict subset of ``x`` is
    recomputed centred at its own mean, recursively, so nested clusters (Sybil copies inside
    an honest cloud inside a spread-out round) each get the precision of their own scale.
    """
    g = gram(x)
    dist = _sq_from_gram(g)
    if depth >= _MAX_DEPTH or x.shape[0] < 3:
        return dist
    diag = g.diagonal().clamp_min(0.0)
    close = dist < threshold * (diag[:, None] + diag[None, :])
    close.fill_diagonal_(False)
    if bool(close.any()):
        for comp in _components(close.cpu()):
            if len(comp) == x.shape[0]:
                continue  # re-centring the same rows at the same mean would change nothing
            sel = torch.tensor(comp, device=x.device)
            local = _refined_sq_distances(x.index_select(0, sel), threshold, depth + 1)
            dist[sel[:, None], sel[None, :]] = local
    return dist


def pairwise_sq_distances_from(x: Tensor, finite: Tensor | None = None) -> Tensor:
    """float64 ``(n, n)`` squared Euclidean distances; non-finite rows are at +inf.

    ``finite`` is the :func:`finite_rows` mask of ``x``; ``None`` means every row is finite.
    """
    n = x.shape[0]
    all_finite = finite is None or bool(finite.all())
    idx = None if all_finite or finite is None else torch.nonzero(finite).flatten()
    xf = x if idx is None else x.index_select(0, idx.to(x.device))
    dist_f = torch.zeros(0, 0, dtype=torch.float64, device=x.device)
    if xf.shape[0] > 0:
        dist_f = _refined_sq_distances(xf, _refine_threshold(x.dtype))
    if idx is None:
        return dist_f
    dist = torch.full((n, n), float("inf"), dtype=torch.float64, device=x.device)
    dist.fill_diagonal_(0.0)
    dist[idx[:, None], idx[None, :]] = dist_f
    return dist


class Basis:
    """Vectors represented by coefficients over the rows of ``x`` and a few extra vectors.

    Iterative rules (Weiszfeld, centered clipping, CAF) keep their iterate as an affine
    combination ``z = Σ αⱼ pⱼ`` (Σα = 1) of the points ``p = [rows of x; extras]``, and
    compute every distance they need from the Gram matrix, so each iteration costs O(n²)
    instead of a pass over the ``(n, d)`` data. Only :meth:`materialize` touches the data.
    """

    def __init__(
        self, x: Tensor, extras: Tensor | None = None, centre: Tensor | None = None
    ) -> None:
        """``x``: ``(n, d)`` finite rows (the callers drop non-finite rows first)."""
        self.x = x
        self.xf = x
        self.extras = extras
        self.n_rows = int(x.shape[0])
        self.k = gram(self.xf, extras, centre)
        self.size = self.k.shape[0]

    def sq_dist_to(self, alpha: Tensor) -> Tensor:
        """Squared distances from every point to ``z = Σ αⱼ pⱼ`` (float64, clamped >= 0)."""
        k_alpha = self.k @ alpha
        sq = self.k.diagonal() - 2.0 * k_alpha + alpha @ k_alpha
        return sq.clamp_min(0.0)

    def sq_norm(self, alpha: Tensor) -> Tensor:
        """``‖Σ αⱼ pⱼ‖²`` for a linear combination with Σα = 0 (a difference of points)."""
        return (alpha @ (self.k @ alpha)).clamp_min(0.0)

    def materialize(self, alpha: Tensor) -> Tensor:
        """Form ``Σ αⱼ pⱼ`` as a ``(d,)`` tensor of the data's dtype (one pass over the data)."""
        dtype = self.xf.dtype
        coef = alpha.to(device=self.xf.device, dtype=dtype)
        out = coef[: self.n_rows] @ self.xf
        if self.extras is not None:
            out = out + coef[self.n_rows :] @ self.extras.to(dtype)
        return out
