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

The selection rules (Krum, Multi-Krum, NNM) need decisions, not distances: which rows have the
smallest scores, which rows are a row's nearest. They start from :func:`fast_gram` — one plain
product per column block, in the data's dtype, uncentred, accumulated in float64 — whose
rounding is bounded entrywise, so :class:`SqDistanceBounds` knows every distance to within an
interval. Only the entries on which a decision depends and that the intervals leave open are
recomputed in float64 (:meth:`SqDistanceBounds.refine`); if that still leaves a decision open
(near-duplicates), the decision falls back to the accurate engine above.
"""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.kernels._checks import FiniteRows, drop_nonfinite, finite_rows

__all__ = [
    "Basis",
    "SqDistanceBounds",
    "distance_bounds",
    "fast_gram",
    "finite_rows",
    "gram",
    "pairwise_sq_distances_from",
    "sq_distances_to",
]

_BLOCK_BYTES = 4 << 20
_DIRECT_BLOCK_BYTES = 1 << 20  # the difference blocks of sq_distances_to stay in cache
_REFINE_BLOCK_BYTES = 1 << 20  # and the float64 blocks of SqDistanceBounds.refine
_U64 = 2.0**-53


def gram(x: Tensor, extras: Tensor | None = None, centre: Tensor | None = None) -> Tensor:
    """float64 Gram matrix of ``[x; extras]`` after translating every row by ``-centre``.

    ``x`` is ``(n, d)`` with finite entries, ``extras`` an optional ``(e, d)``; the result is
    ``(n + e, n + e)`` on x's device. The default centre is the column means of ``x``;
    rules that face far outliers pass a robust one (the coordinate-wise median), which keeps
    the honest rows' inner products at the precision of their own spread.
    """
    n, d = x.shape
    ext = None if extras is None else extras.to(x.dtype)
    m = n + (0 if ext is None else ext.shape[0])
    cols = max(256, _BLOCK_BYTES // max(1, m * x.element_size()))
    acc = torch.zeros(m, m, dtype=torch.float64, device=x.device)
    buf = torch.empty(m, min(cols, d), dtype=x.dtype, device=x.device)  # reused by every block
    for start in range(0, d, cols):
        block = x[:, start : start + cols]
        y = buf[:, : block.shape[1]]
        if centre is None:
            shift = block.mean(dim=0, keepdim=True)
        else:
            shift = centre[start : start + cols].to(x.dtype)
        torch.sub(block, shift, out=y[:n])
        if ext is not None:
            torch.sub(ext[:, start : start + cols], shift, out=y[n:])
        acc += (y @ y.T).to(torch.float64)
    return acc


def sq_distances_to(x: Tensor, z: Tensor) -> Tensor:
    """float64 ``(n,)`` squared distances from the rows of ``x`` to the point ``z (d,)``.

    By direct differences, one blocked pass over the data (no cancellation for rows close to
    ``z``); in x's dtype within a block, float64 across blocks. A row with a NaN or ±inf entry
    (or a non-finite ``z``) gives a non-finite value: the finite check's hint.
    """
    n, d = x.shape
    cols = max(256, _DIRECT_BLOCK_BYTES // max(1, n * x.element_size()))
    starts = range(0, d, cols)
    norms = torch.empty(len(starts), n, dtype=x.dtype, device=x.device)  # per block
    buf = torch.empty(n, min(cols, d), dtype=x.dtype, device=x.device)
    z = z.to(x.dtype)
    for b, start in enumerate(starts):
        block = x[:, start : start + cols]
        y = buf[:, : block.shape[1]]
        torch.sub(block, z[start : start + cols], out=y)
        torch.linalg.vector_norm(y, dim=1, out=norms[b])
    return norms.to(torch.float64).square_().sum(dim=0)


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


# ---------------------------------------------------------------- decisions from one GEMM

_FAST_COLS_CPU = 65536
"""Columns per product of :func:`fast_gram` on CPU (as fast as one product over all of d, and
the longest product whose rounding was measured: see ``_CHAIN``)."""
_FAST_COLS_BATCHED = 1000
"""Columns per product in the batched form (accelerators): the bound below then holds for any
summation order and with or without fused multiply-adds (γ₁₀₀₁ < 1024 u)."""
_CHAIN = 1024
"""The rounding bound of one product's entry is ``_CHAIN · u · Σ_k |a_k b_k|`` (u the unit
roundoff of the products). Rigorous in the batched form; on CPU the BLAS sums each entry in
register blocks of a few hundred terms, and the worst case measured for products of up to
65536 columns (rows of one repeated value, whose rounding errors all have the same sign) was
118 u with MKL, 1 or 2 threads (about 1 u for random data): ``_CHAIN`` leaves more than 8x."""
_BATCH_BYTES = 64 << 20


def _product_unit_roundoff(x: Tensor) -> float:
    """Unit roundoff of the products in ``x @ x.T`` as torch computes them for ``x``."""
    if x.dtype == torch.float64:
        return _U64
    reduced = 2.0**-8  # TF32 (2^-11) or bfloat16 (2^-8) products: the larger
    try:
        backend = torch.backends.cuda.matmul if x.device.type == "cuda" else None
        flag = getattr(backend, "fp32_precision", "none") if backend is not None else "none"
        if x.device.type == "cpu":
            flag = getattr(getattr(torch.backends.mkldnn, "matmul", None), "fp32_precision", flag)
        if flag in ("tf32", "bf16"):
            return reduced
        if flag == "ieee":
            return 2.0**-24
        if torch.get_float32_matmul_precision() != "highest":
            return reduced
    except RuntimeError:  # legacy and per-backend settings mixed: assume the worst
        return reduced
    if x.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return reduced
    return 2.0**-24


def fast_gram(x: Tensor, *, batched: bool | None = None) -> tuple[Tensor, float]:
    """Uncentred float64 Gram matrix of ``x (n, d)`` and its rounding scale ``t``.

    One product in ``x``'s dtype per block of columns, accumulated in float64 (a plain
    ``X Xᵀ``, as fast as the BLAS allows, and the only pass over the data). Every entry
    satisfies ``|g_ij − xᵢ·xⱼ| <= t · Σ_k |x_ik x_jk| <= t ‖xᵢ‖ ‖xⱼ‖``. Rows with non-finite
    entries give non-finite diagonal entries (the finite check's hint). ``batched`` (the
    default off CPU): products of 1000 columns, many per launch.
    """
    n, d = x.shape
    acc = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    if not (x.device.type != "cpu" if batched is None else batched):
        cols = _FAST_COLS_CPU
        for start in range(0, d, cols):
            block = x[:, start : start + cols]
            acc += (block @ block.T).to(torch.float64)
    else:
        cols = _FAST_COLS_BATCHED
        full = d // cols * cols
        step = cols * max(1, _BATCH_BYTES // max(1, n * n * x.element_size()))
        for start in range(0, full, step):
            v = x[:, start : min(start + step, full)].reshape(n, -1, cols).transpose(0, 1)
            acc += torch.bmm(v, v.transpose(1, 2)).sum(dim=0, dtype=torch.float64)
        if full < d:
            block = x[:, full:]
            acc += (block @ block.T).to(torch.float64)
    blocks = -(-d // cols)
    return acc, _product_unit_roundoff(x) * _CHAIN + _U64 * (blocks + 2)


class SqDistanceBounds:
    """Squared distances between the finite rows ``x``, each known to within ``error``.

    ``value`` and ``error`` are float64 ``(n, n)``; the true squared distance lies in
    ``[value − error, value + error]``. From :func:`fast_gram`: ``value = gᵢᵢ + gⱼⱼ − 2gᵢⱼ``
    and ``error = t (‖xᵢ‖ + ‖xⱼ‖)²``, which is small against the distance unless the pair is
    close relative to its norms. :meth:`refine` makes chosen entries accurate (float64 on the
    rows involved), :meth:`make_exact` replaces everything by the accurate engine
    (:func:`pairwise_sq_distances_from`; ``error`` 0).
    """

    def __init__(self, x: Tensor, g: Tensor, t: float) -> None:
        self.x = x
        self.exact = False
        if not bool(torch.isfinite(g).all()):  # a finite row whose square overflows
            self.make_exact()
            return
        self.value = _sq_from_gram(g)
        root = g.diagonal().clamp_min(0.0).sqrt()
        # t bounds the rounding of every gᵢⱼ against ‖xᵢ‖‖xⱼ‖, and of gᵢᵢ + gⱼⱼ − 2gᵢⱼ (float64)
        scale = t * (1.0 + 4.0 * t) + 8.0 * _U64
        self.error = scale * (root[:, None] + root[None, :]).square()
        self.error.fill_diagonal_(0.0)

    def lo(self) -> Tensor:
        """Lower bounds (>= 0)."""
        return (self.value - self.error).clamp_min(0.0)

    def hi(self) -> Tensor:
        """Upper bounds."""
        return self.value + self.error

    def make_exact(self) -> None:
        """Every distance from the accurate engine; no error bound from now on."""
        self.value = pairwise_sq_distances_from(self.x)
        self.error = torch.zeros_like(self.value)
        self.exact = True

    def refine(self, rows: Tensor, partners: Tensor | None = None) -> None:
        """Recompute the distances between ``rows`` and ``partners`` (every row if ``None``).

        In float64, on the rows involved translated by the first of ``rows`` (so
        ``‖xᵢ − xⱼ‖²`` cancels only against distances to that row, not against the norms),
        blocked over the columns; one pass over those rows.
        """
        x = self.x
        n, d = x.shape
        rows = rows.to(device=x.device, dtype=torch.long)
        a = int(rows.numel())
        if partners is None:  # every row, in order: no gather
            cols_idx, pos = torch.arange(n, device=x.device), rows
        else:  # `rows` first, then the other partners
            outside = torch.ones(n, dtype=torch.bool, device=x.device)
            outside[rows] = False
            others = partners.to(device=x.device, dtype=torch.long)
            cols_idx = torch.cat([rows, others[outside[others]]])
            pos = torch.arange(a, device=x.device)
        width = int(cols_idx.numel())
        ref = int(rows[0])
        cols = max(256, min(d, _REFINE_BLOCK_BYTES // max(1, width * 8)))
        g = torch.zeros(a, width, dtype=torch.float64, device=x.device)
        sq = torch.zeros(width, dtype=torch.float64, device=x.device)
        buf = torch.empty(width, cols, dtype=torch.float64, device=x.device)
        for start in range(0, d, cols):
            block = x[:, start : start + cols]
            y = buf[:, : block.shape[1]]
            y.copy_(block if partners is None else block.index_select(0, cols_idx))
            y -= block[ref].to(torch.float64)
            sq += torch.linalg.vector_norm(y, dim=1).square_()
            g.addmm_(y.index_select(0, pos) if partners is None else y[:a], y.T)
        blocks = -(-d // cols)
        # chains of at most `cols` float64 additions per block, blocks summed, y rounded once
        t = _U64 * (cols + blocks + 8)
        sq_rows = sq.index_select(0, pos)
        dist = (sq_rows[:, None] + sq[None, :] - 2.0 * g).clamp_min_(0.0)
        root = sq.sqrt()
        err = t * (root.index_select(0, pos)[:, None] + root[None, :]).square()
        # symmetric: the block between `rows` and themselves is averaged with its transpose
        inner, inner_err = dist[:, pos], err[:, pos]
        dist[:, pos] = 0.5 * (inner + inner.T)
        err[:, pos] = torch.maximum(inner_err, inner_err.T)
        self.value[rows[:, None], cols_idx[None, :]] = dist
        self.value[cols_idx[:, None], rows[None, :]] = dist.T
        self.error[rows[:, None], cols_idx[None, :]] = err
        self.error[cols_idx[:, None], rows[None, :]] = err.T
        self.value.fill_diagonal_(0.0)
        self.error.fill_diagonal_(0.0)


def distance_bounds(x: Tensor, rule: str, f: int | None) -> tuple[FiniteRows, SqDistanceBounds]:
    """The non-finite-row policy and the fast distances of the finite rows, in one GEMM.

    The Gram diagonal (the squared row norms) is the finite check's hint: a row with a NaN
    or ±inf entry has a non-finite one. When rows are dropped, the product is made again on
    the finite rows, so the result is that of the finite rows alone, bit for bit.
    """
    g, t = fast_gram(x)
    kept = drop_nonfinite(x, rule, f, hint=g.diagonal())
    if kept.keep is not None:
        g, t = fast_gram(kept.x)
    return kept, SqDistanceBounds(kept.x, g, t)
