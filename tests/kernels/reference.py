"""Brute-force float64 reference implementations of every rule in ``velocity.kernels``.

Written from the mathematical definitions in ``docs/kernels.md`` and the cited papers, with
explicit loops over rows, coordinates and subsets: slow, obvious, and independent of the
kernels' Gram-matrix and block-sorting machinery. Inputs are ``numpy`` arrays, converted to
float64 here; only small sizes are meant to be fed in.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]

__all__ = [
    "arc",
    "bucketing",
    "bulyan",
    "caf",
    "centered_clipping",
    "cge",
    "clip",
    "fedadagrad",
    "fedadam",
    "fedavgm",
    "fedyogi",
    "geometric_median",
    "krum",
    "krum_scores",
    "mda",
    "meamed",
    "mean",
    "median",
    "monna",
    "multi_krum",
    "nnm",
    "pairwise_sq_distances",
    "server_sgd",
    "smea",
    "trimmed_mean",
]


def _rows(x: ArrayLike) -> Array:
    a = np.array(x, dtype=np.float64)
    assert a.ndim == 2, a.shape
    return a


def _finite_rows(a: Array) -> NDArray[np.bool_]:
    return np.array([all(math.isfinite(v) for v in row) for row in a], dtype=bool)


def _norm(v: Array) -> float:
    return math.sqrt(float(np.sum(v * v)))


def _sq_dist(a: Array, b: Array) -> float:
    diff = a - b
    return float(np.sum(diff * diff))


def _scalar_median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    if n % 2 == 1:
        return s[n // 2]
    return (s[n // 2 - 1] + s[n // 2]) / 2.0


def _mean_of(a: Array, idx: Sequence[int]) -> Array:
    out = np.zeros(a.shape[1])
    for i in idx:
        out += a[i]
    return out / len(idx)


# --------------------------------------------------------------------------- distances


def pairwise_sq_distances(x: ArrayLike) -> Array:
    a = _rows(x)
    n = a.shape[0]
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = _sq_dist(a[i], a[j])
    return out


# --------------------------------------------------------------------------- aggregators


def mean(x: ArrayLike, weights: ArrayLike | None = None) -> Array:
    a = _rows(x)
    n = a.shape[0]
    w = np.ones(n) if weights is None else np.array(weights, dtype=np.float64)
    total = float(sum(w))
    out = np.zeros(a.shape[1])
    for i in range(n):
        out += w[i] * a[i]
    return out / total


def median(x: ArrayLike) -> Array:
    a = _rows(x)
    return np.array([_scalar_median(list(a[:, j])) for j in range(a.shape[1])])


def trimmed_mean(x: ArrayLike, f: int) -> Array:
    a = _rows(x)
    n = a.shape[0]
    out = []
    for j in range(a.shape[1]):
        kept = sorted(a[:, j])[f : n - f]
        out.append(sum(kept) / len(kept))
    return np.array(out)


def meamed(x: ArrayLike, f: int) -> Array:
    a = _rows(x)
    n = a.shape[0]
    out = []
    for j in range(a.shape[1]):
        col = list(a[:, j])
        med = _scalar_median(col)
        closest = sorted(col, key=lambda v, med=med: abs(v - med))[: n - f]
        out.append(sum(closest) / len(closest))
    return np.array(out)


def geometric_median(
    x: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 256,
    eps: float = 1e-12,
    init: str | ArrayLike = "median",
) -> Array:
    """Plain Weiszfeld: ``z <- sum (w_i/beta_i) x_i / sum (w_i/beta_i)``, beta_i clamped at eps."""
    a = _rows(x)
    w_all = np.ones(a.shape[0]) if weights is None else np.array(weights, dtype=np.float64)
    keep = _finite_rows(a)
    a, w = a[keep], w_all[keep]
    if isinstance(init, str):
        if init == "zero":
            z = np.zeros(a.shape[1])
        elif init == "mean":
            z = mean(a, w)
        elif init == "median":
            z = median(a)
        else:
            raise ValueError(init)
    else:
        z = np.array(init, dtype=np.float64)
    for _ in range(max_iter):
        num = np.zeros(a.shape[1])
        den = 0.0
        for i in range(a.shape[0]):
            beta = max(_norm(a[i] - z), eps)
            num += (w[i] / beta) * a[i]
            den += w[i] / beta
        z_new = num / den
        done = _norm(z_new - z) <= tol * max(_norm(z), 1.0)
        z = z_new
        if done:
            break
    return z


def _neighbour_count(n: int, f: int, neighbors: str) -> int:
    if neighbors == "n-f-2":
        return n - f - 2
    if neighbors == "n-f-1":
        return n - f - 1
    raise ValueError(neighbors)


def krum_scores(sq_dist: Array, k: int) -> list[float]:
    """Sum of squared distances from each row to its k nearest *other* rows."""
    n = sq_dist.shape[0]
    scores = []
    for i in range(n):
        others = sorted(float(sq_dist[i, j]) for j in range(n) if j != i)
        scores.append(sum(others[:k]))
    return scores


def krum(x: ArrayLike, f: int, neighbors: str = "n-f-2") -> Array:
    a = _rows(x)
    scores = krum_scores(pairwise_sq_distances(a), _neighbour_count(a.shape[0], f, neighbors))
    return a[int(np.argmin(scores))].copy()


def multi_krum(x: ArrayLike, f: int, m: int | None = None, neighbors: str = "n-f-2") -> Array:
    a = _rows(x)
    n = a.shape[0]
    m = n - f if m is None else m
    scores = krum_scores(pairwise_sq_distances(a), _neighbour_count(n, f, neighbors))
    chosen = sorted(range(n), key=lambda i: scores[i])[:m]
    return _mean_of(a, chosen)


def bulyan(x: ArrayLike, f: int, neighbors: str = "n-f-2") -> Array:
    """Iterated Krum picks theta = n - 2f rows; then beta = theta - 2f closest to the median."""
    a = _rows(x)
    n = a.shape[0]
    offset = 2 if neighbors == "n-f-2" else 1
    theta = n - 2 * f
    dist = pairwise_sq_distances(a)
    remaining = list(range(n))
    selected: list[int] = []
    for _ in range(theta):
        r = len(remaining)
        k = min(max(r - f - offset, 0), r - 1)
        scores = krum_scores(dist[np.ix_(remaining, remaining)], k)
        pick = remaining[int(np.argmin(scores))]
        selected.append(pick)
        remaining.remove(pick)
    beta = theta - 2 * f
    sel = a[selected]
    out = []
    for j in range(a.shape[1]):
        col = list(sel[:, j])
        med = _scalar_median(col)
        closest = sorted(col, key=lambda v, med=med: abs(v - med))[:beta]
        out.append(sum(closest) / beta)
    return np.array(out)


def mda(x: ArrayLike, f: int) -> Array:
    a = _rows(x)
    n = a.shape[0]
    dist = pairwise_sq_distances(a)
    best: tuple[int, ...] | None = None
    best_diam = math.inf
    for subset in itertools.combinations(range(n), n - f):
        diam = max((dist[i, j] for i, j in itertools.combinations(subset, 2)), default=0.0)
        if diam < best_diam:
            best, best_diam = subset, diam
    assert best is not None
    return _mean_of(a, best)


def monna(x: ArrayLike, f: int, reference_index: int = 0) -> Array:
    a = _rows(x)
    n = a.shape[0]
    ref = a[reference_index]
    order = sorted(range(n), key=lambda i: _sq_dist(a[i], ref))
    return _mean_of(a, order[: n - f])


def _max_cov_eig(rows: Array, c: Array | None = None) -> tuple[float, Array, Array]:
    """Top eigenpair of the (weighted) empirical covariance ``sum c_i (x_i-mu)(x_i-mu)^T / sum c``.

    Returns ``(lambda, v, mu)``. Small d: ``eigh`` of the d×d matrix itself. Large d: the same
    nonzero spectrum from the n×n matrix ``C^½ D Dᵀ C^½ / sum c`` (D = centred rows), with
    ``v ∝ Dᵀ C^½ u``.
    """
    c = np.ones(rows.shape[0]) if c is None else c
    total = float(c.sum())
    mu = (c[:, None] * rows).sum(axis=0) / total
    diffs = rows - mu
    if rows.shape[1] <= 64:
        cov = np.zeros((rows.shape[1], rows.shape[1]))
        for i in range(rows.shape[0]):
            cov += c[i] * np.outer(diffs[i], diffs[i])
        cov /= total
        vals, vecs = np.linalg.eigh(cov)
        return float(vals[-1]), vecs[:, -1], mu
    root = np.sqrt(c)
    small = (root[:, None] * (diffs @ diffs.T) * root[None, :]) / total
    vals, vecs = np.linalg.eigh(small)
    v = diffs.T @ (root * vecs[:, -1])
    return float(vals[-1]), v / np.linalg.norm(v), mu


def _max_eigenvalue_of_covariance(rows: Array) -> float:
    """Largest eigenvalue of ``(1/m) Σ (x_i − μ)(x_i − μ)ᵀ``, exact (from whichever of the d×d
    covariance and the m×m Gram matrix of the centred rows is smaller: same nonzero spectrum)."""
    diffs = rows - rows.mean(axis=0)
    m, d = diffs.shape
    small = diffs.T @ diffs if d <= m else diffs @ diffs.T
    return float(np.linalg.eigvalsh(small / m)[-1])


def smea(x: ArrayLike, f: int) -> Array:
    a = _rows(x)
    n = a.shape[0]
    best: tuple[int, ...] | None = None
    best_val = math.inf
    for subset in itertools.combinations(range(n), n - f):
        lam = _max_eigenvalue_of_covariance(a[list(subset)])
        if lam < best_val:
            best, best_val = subset, lam
    assert best is not None
    return _mean_of(a, best)


def centered_clipping(
    x: ArrayLike,
    *,
    c_tau: float,
    M: int = 10,
    eps: float = 1e-12,
    init: str | ArrayLike = "mean",
) -> Array:
    a = _rows(x)
    n = a.shape[0]
    finite = _finite_rows(a)
    if isinstance(init, str):
        if init == "zero":
            v = np.zeros(a.shape[1])
        elif init == "mean":
            v = mean(a[finite])
        elif init == "median":
            v = median(a[finite])
        else:
            raise ValueError(init)
    else:
        v = np.array(init, dtype=np.float64)
    for _ in range(M):
        step = np.zeros(a.shape[1])
        for i in range(n):
            if not finite[i]:
                continue
            diff = a[i] - v
            step += diff * min(1.0, c_tau / max(_norm(diff), eps))
        v = v + step / n
    return v


def cge(x: ArrayLike, f: int) -> Array:
    a = _rows(x)
    n = a.shape[0]
    norms = [_norm(r) if all(map(math.isfinite, r)) else math.inf for r in a]
    order = sorted(range(n), key=lambda i: norms[i])
    return _mean_of(a, order[: n - f])


def caf(x: ArrayLike, f: int) -> Array:
    """Covariance-bound agnostic filter with an exact top eigenpair.

    ``max tau`` is taken over the rows that still carry weight (c_i > 0), so each step zeroes
    at least one weight; the docs' ``c_i(1 - tau_i / max tau)`` leaves "max over which rows"
    open, and a max over zero-weight rows could stall the loop. With f = 0 the loop never runs
    and the answer is the plain mean of the finite rows.
    """
    a = _rows(x)
    n = a.shape[0]
    c = np.where(_finite_rows(a), 1.0, 0.0)
    data = np.where(np.isfinite(a), a, 0.0)
    best_lam = math.inf
    best_mu = mean(data, c)
    while c.sum() > n - 2 * f:
        lam, v, mu = _max_cov_eig(data, c)
        if lam < best_lam:
            best_lam, best_mu = lam, mu
        tau = np.array([float((data[i] - mu) @ v) ** 2 if c[i] > 0 else 0.0 for i in range(n)])
        c = c * (1.0 - tau / tau.max())
    return best_mu


# --------------------------------------------------------------------------- pre-aggregators


def bucketing(
    x: ArrayLike,
    weights: ArrayLike | None,
    *,
    bucket_size: int,
    permutation: Sequence[int],
) -> tuple[Array, Array]:
    """Bucket means for a *given* permutation; weights out = summed weights (ones if None)."""
    a = _rows(x)
    n = a.shape[0]
    w = np.ones(n) if weights is None else np.array(weights, dtype=np.float64)
    perm = list(permutation)
    assert sorted(perm) == list(range(n))
    rows, ws = [], []
    for start in range(0, n, bucket_size):
        bucket = perm[start : start + bucket_size]
        rows.append(_mean_of(a, bucket))
        ws.append(sum(w[i] for i in bucket))
    return np.array(rows), np.array(ws)


def clip(x: ArrayLike, threshold: float = 2.0) -> Array:
    a = _rows(x)
    out = np.zeros_like(a)
    for i, row in enumerate(a):
        nrm = _norm(row)
        out[i] = row * (min(1.0, threshold / nrm) if nrm > 0 else 1.0)
    return out


def arc(x: ArrayLike, f: int) -> Array:
    a = _rows(x)
    n = a.shape[0]
    k = (2 * f * (n - f)) // n  # exact floor(2f/n * (n - f))
    norms = [_norm(r) for r in a]
    order = sorted(range(n), key=lambda i: norms[i])  # increasing norm
    out = a.copy()
    if k == 0:
        return out
    limit = norms[order[n - k - 1]]
    for i in order[n - k :]:
        out[i] = a[i] * (limit / norms[i])
    return out


def nnm(x: ArrayLike, f: int) -> Array:
    a = _rows(x)
    n = a.shape[0]
    out = np.zeros_like(a)
    dist = pairwise_sq_distances(a)
    for i in range(n):
        order = sorted(range(n), key=lambda j, i=i: dist[i, j])
        out[i] = _mean_of(a, order[: n - f])
    return out


# --------------------------------------------------------------------------- server optimizers
# Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2 (no bias correction).
# Each takes the parameters, the aggregated delta and the reference's own state (a dict of
# float64 arrays, or None on the first round) and returns (new_params, new_state).

RefState = dict[str, Array] | None


def server_sgd(
    x: ArrayLike, delta: ArrayLike, state: RefState, *, lr: float = 1.0
) -> tuple[Array, dict[str, Array]]:
    return np.asarray(x, np.float64) + lr * np.asarray(delta, np.float64), {}


def fedavgm(
    x: ArrayLike, delta: ArrayLike, state: RefState, *, lr: float = 1.0, momentum: float = 0.9
) -> tuple[Array, dict[str, Array]]:
    d = np.asarray(delta, np.float64)
    m = np.zeros_like(d) if not state else state["m"]
    m = momentum * m + d
    return np.asarray(x, np.float64) + lr * m, {"m": m}


def fedadagrad(
    x: ArrayLike, delta: ArrayLike, state: RefState, *, lr: float = 0.1, tau: float = 1e-3
) -> tuple[Array, dict[str, Array]]:
    d = np.asarray(delta, np.float64)
    v = np.full_like(d, tau**2) if not state else state["v"]
    v = v + d * d
    return np.asarray(x, np.float64) + lr * d / (np.sqrt(v) + tau), {"v": v}


def _adam_like(
    x: ArrayLike,
    delta: ArrayLike,
    state: RefState,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    tau: float,
    yogi: bool,
) -> tuple[Array, dict[str, Array]]:
    d = np.asarray(delta, np.float64)
    m = np.zeros_like(d) if not state else state["m"]
    v = np.full_like(d, tau**2) if not state else state["v"]
    m = beta1 * m + (1 - beta1) * d
    d2 = d * d
    v = v - (1 - beta2) * d2 * np.sign(v - d2) if yogi else beta2 * v + (1 - beta2) * d2
    return np.asarray(x, np.float64) + lr * m / (np.sqrt(v) + tau), {"m": m, "v": v}


def fedadam(
    x: ArrayLike,
    delta: ArrayLike,
    state: RefState,
    *,
    lr: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
) -> tuple[Array, dict[str, Array]]:
    return _adam_like(x, delta, state, lr=lr, beta1=beta1, beta2=beta2, tau=tau, yogi=False)


def fedyogi(
    x: ArrayLike,
    delta: ArrayLike,
    state: RefState,
    *,
    lr: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
) -> tuple[Array, dict[str, Array]]:
    return _adam_like(x, delta, state, lr=lr, beta1=beta1, beta2=beta2, tau=tau, yogi=True)
