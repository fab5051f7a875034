r"""Gossip and robust neighbourhood mixing on the stacked ``(n, d)`` matrix of node vectors.

Every rule takes all nodes' vectors as ONE tensor ``X`` (row ``i`` is what node ``i``
sends) and returns the nodes' new vectors. Row ``i`` of a mixing matrix ``W`` is what node
``i`` *receives*: ``W[i, j] > 0`` only for ``j = i`` and the in-neighbours ``j -> i`` of
the topology.

- :func:`metropolis_weights`: the Metropolis–Hastings gossip matrix of a topology.
- :func:`gossip`: ``W @ X``, one matrix product.
- :func:`clipped_gossip` (He, Karimireddy & Jaggi 2023) and :func:`nna` (nearest-neighbour
  averaging): one ``(n, n)`` Gram matrix ``X Xᵀ`` gives every pairwise distance, the rule
  turns the distances into an ``(n, n)`` coefficient matrix ``M``, and the result is ONE
  product ``M @ X``. Nothing loops over nodes on ``d``-sized vectors.
- :func:`robust_neighbourhood`: any per-node aggregator (``velocity.kernels.median``, a
  trimmed mean, ...) on each node's neighbourhood rows; a loop over nodes, the general
  fallback.
- :func:`consensus_distance`: how far the nodes are from agreeing.

The distances come from a Gram matrix of the rows centred at a central row (a translation,
which changes no distance and removes the common component that makes
``‖x‖² + ‖y‖² − 2x·y`` cancel; a robust centre, so a far Byzantine row cannot move it),
built over column blocks, each block's product summed in float64.

Examples
--------
>>> import torch
>>> from velocity.p2p.topology import Topology
>>> w = metropolis_weights(Topology.ring(4))
>>> [round(v, 4) for v in w[0].tolist()]
[0.3333, 0.3333, 0.0, 0.3333]
>>> x = torch.tensor([[0.0], [0.0], [0.0], [30.0]], dtype=torch.float64)
>>> gossip(x, w)[0].item(), clipped_gossip(x, w, tau=3.0)[0].item()
(10.0, 1.0)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from velocity.errors import ValidationError
from velocity.p2p.topology import Topology

__all__ = [
    "adaptive_clip_radius",
    "clipped_gossip",
    "consensus_distance",
    "gossip",
    "metropolis_weights",
    "nna",
    "robust_neighbourhood",
    "second_eigenvalue_modulus",
]

_BLOCK_BYTES = 8 << 20
"""Bytes of one column block of ``X`` in the Gram product (stays in cache)."""

Rows = Sequence[int] | Tensor | None


# ------------------------------------------------------------------------------ checks
def _check_x(x: object, rule: str) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValidationError(f"{rule}: X must be a floating (n, d) tensor; got {shape}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValidationError(f"{rule}: X needs n >= 1 rows and d >= 1 columns; got {x.shape}")
    return x.detach()


def _check_w(w: object, n: int, rule: str) -> Tensor:
    if not isinstance(w, Tensor) or w.shape != (n, n) or not w.is_floating_point():
        shape = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
        raise ValidationError(f"{rule}: W must be a floating ({n}, {n}) tensor; got {shape}")
    w64 = w.detach().to(torch.float64)
    if not bool(torch.isfinite(w64).all()) or bool((w64 < 0).any()):
        raise ValidationError(f"{rule}: W must have finite, non-negative entries")
    return w64


def _rows(rows: Rows, n: int, rule: str, device: torch.device) -> Tensor:
    if rows is None:
        return torch.arange(n, device=device)
    idx = torch.as_tensor(rows, dtype=torch.int64).flatten()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValidationError(f"{rule}: rows must be node ids in [0, {n}); got {idx.tolist()}")
    return idx.to(device)


def _adjacency(adjacency: Tensor | Topology, n: int, rule: str) -> Tensor:
    if isinstance(adjacency, Topology):
        if adjacency.n_nodes != n:
            raise ValidationError(
                f"{rule}: the topology has {adjacency.n_nodes} nodes but X has {n} rows"
            )
        return adjacency.adjacency()
    if not isinstance(adjacency, Tensor) or adjacency.shape != (n, n):
        shape = tuple(adjacency.shape) if isinstance(adjacency, Tensor) else adjacency
        raise ValidationError(
            f"{rule}: adjacency must be a Topology or an ({n}, {n}) bool tensor; got {shape!r}"
        )
    return adjacency.detach().to(torch.bool).cpu()


# ------------------------------------------------------------------------------ weights
def metropolis_weights(topology: Topology, *, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""The ``(n, n)`` gossip matrix of ``topology`` (row ``i``: what node ``i`` receives).

    On an undirected topology (every edge has its reverse), Metropolis–Hastings weights
    (Xiao & Boyd 2004, "Fast linear iterations for distributed averaging"):

    .. math::
        W_{ij} = \frac{1}{1 + \max(\deg i, \deg j)}\ \ (j \sim i), \qquad
        W_{ii} = 1 - \sum_{j \ne i} W_{ij},

    symmetric and doubly stochastic, with non-negative diagonal. A directed topology has no
    doubly-stochastic matrix built from local degrees in general; there each node averages
    uniformly over itself and its in-neighbours, :math:`W_{ij} = 1 / (1 + |\mathrm{in}(i)|)`
    for :math:`j \in \mathrm{in}(i) \cup \{i\}`: row-stochastic (every node computes a
    convex combination), not column-stochastic (the network average is not preserved).

    Examples
    --------
    >>> from velocity.p2p.topology import Topology
    >>> [round(v, 4) for v in metropolis_weights(Topology.complete(3))[0].tolist()]
    [0.3333, 0.3333, 0.3333]
    """
    if not isinstance(topology, Topology):
        raise ValidationError(
            f"metropolis_weights: topology must be a Topology; got {type(topology).__name__}"
        )
    n = topology.n_nodes
    w = torch.zeros(n, n, dtype=torch.float64)
    if topology.is_undirected():
        deg = [len(topology.out_neighbors(i)) for i in range(n)]
        for e in topology.edges:
            w[e.v, e.u] = 1.0 / (1.0 + max(deg[e.u], deg[e.v]))
        w += torch.diag(1.0 - w.sum(dim=1))
    else:
        for i in range(n):
            senders = (i, *topology.in_neighbors(i))
            w[i, list(senders)] = 1.0 / len(senders)
    return w.to(dtype)


def second_eigenvalue_modulus(w: Tensor) -> float:
    r"""The second-largest eigenvalue modulus :math:`\lambda` of a gossip matrix.

    For a symmetric doubly-stochastic ``W``, one gossip step shrinks the spread around the
    mean by at least :math:`\lambda`: :math:`\lVert W X - \bar X\rVert_F \le \lambda
    \lVert X - \bar X\rVert_F`, so the consensus distance shrinks by :math:`\lambda^2` per
    round. Smaller is faster mixing; the complete graph with uniform weights has 0.

    >>> from velocity.p2p.topology import Topology
    >>> round(second_eigenvalue_modulus(metropolis_weights(Topology.complete(4))), 12)
    0.0
    """
    if not isinstance(w, Tensor) or w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValidationError("second_eigenvalue_modulus: W must be a square (n, n) tensor")
    w64 = w.detach().to(torch.float64).cpu()
    if w64.shape[0] < 2:
        return 0.0
    if torch.allclose(w64, w64.T):
        mods = torch.linalg.eigvalsh(w64).abs()
    else:
        mods = torch.linalg.eigvals(w64).abs()
    return float(torch.sort(mods, descending=True).values[1])


# ------------------------------------------------------------------------------ gossip
def gossip(x: Tensor, w: Tensor) -> Tensor:
    """Plain gossip averaging: ``W @ X``, one ``(n, n) @ (n, d)`` product (``X``'s dtype).

    Not robust: one node sending a far vector moves each of its out-neighbours by its weight
    times that distance.
    """
    x = _check_x(x, "gossip")
    _check_w(w, x.shape[0], "gossip")
    return w.detach().to(device=x.device, dtype=x.dtype) @ x


# ------------------------------------------------------------------------------ distances
def _centre_row(x: Tensor) -> int:
    """A row near the bulk of the rows: the one closest to the coordinate-wise median of
    (at most) 4096 evenly strided coordinates. Only the float precision of the Gram matrix
    depends on this choice (distances do not depend on the centre), so a cheap robust guess
    is enough: with an honest majority it is an honest-looking row, and centring there keeps
    the honest rows' norms at the honest spread even when a far row pulls the mean away."""
    step = max(1, x.shape[1] // 4096)
    sample = x[:, ::step].to(torch.float64)
    med = sample.median(dim=0).values
    gaps = ((sample - med) ** 2).sum(dim=1)
    return int(torch.nan_to_num(gaps, nan=float("inf")).argmin())


def _centred_gram(x: Tensor) -> Tensor:
    """float64 Gram matrix of the rows of ``x`` centred at one of them (:func:`_centre_row`),
    over column blocks: each block's product runs in ``x``'s dtype and is summed in float64.

    Centring at the mean would let one far (Byzantine) row shift every honest row's norm
    to the far row's scale, where float32 products cancel catastrophically in
    ``|x_i|² + |x_j|² − 2 x_i·x_j``; centred at a central row the honest rows' norms stay at
    their own spread.
    """
    n, d = x.shape
    r = _centre_row(x)
    cols = max(1024, _BLOCK_BYTES // max(1, n * x.element_size()))
    acc = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    for start in range(0, d, cols):
        block = x[:, start : start + cols]
        block = block - block[r : r + 1]
        acc += (block @ block.T).to(torch.float64)
    return acc


def _sq_distances(x: Tensor) -> tuple[Tensor, Tensor | None]:
    """float64 ``(n, n)`` squared distances and the finite-row mask (``None``: all finite).

    Rows holding NaN or ±inf are infinitely far from every other row (0 from themselves).
    The check costs nothing when every row is finite: a non-finite row makes the Gram matrix
    non-finite, and only then is the mask computed and the Gram matrix redone.
    """
    g = _centred_gram(x)
    finite: Tensor | None = None
    if not bool(torch.isfinite(g).all()):
        finite = torch.isfinite(x).all(dim=1)
        idx = torch.nonzero(finite).flatten()
        g = torch.zeros_like(g)
        if idx.numel():
            g[idx[:, None], idx[None, :]] = _centred_gram(x.index_select(0, idx))
    diag = g.diagonal()
    dist = (diag[:, None] + diag[None, :] - 2.0 * g).clamp_min_(0.0)
    if finite is not None:
        bad = ~finite
        dist[bad, :] = math.inf
        dist[:, bad] = math.inf
    dist.fill_diagonal_(0.0)
    return dist, finite


def _combine(m: Tensor, x: Tensor, finite: Tensor | None, rule: str, rows: Tensor) -> Tensor:
    """``M @ X`` in ``X``'s dtype; non-finite rows of ``X`` never enter the product."""
    if finite is None:
        return m.to(device=x.device, dtype=x.dtype) @ x
    bad_self = ~finite[rows]
    if bool(bad_self.any()):
        raise ValidationError(
            f"{rule}: node(s) {rows[bad_self].tolist()} hold non-finite vectors themselves; "
            "leave them out with rows=..."
        )
    used = (m != 0) & ~finite[None, :]
    if bool(used.any()):
        nodes = rows[used.any(dim=1)].tolist()
        raise ValidationError(
            f"{rule}: node(s) {nodes} would average non-finite rows (more non-finite "
            "neighbours than the rule tolerates)"
        )
    idx = torch.nonzero(finite).flatten()
    return m[:, idx].to(device=x.device, dtype=x.dtype) @ x.index_select(0, idx)


# ------------------------------------------------------------------------------ clipping
def adaptive_clip_radius(dist: Tensor, w: Tensor, delta: float | Tensor) -> Tensor:
    r"""Per-node clipping radii: clip the farthest neighbours holding total weight <= ``δ_i``.

    Parameters
    ----------
    dist : Tensor, shape (n, n)
        Distances ``‖x_j − x_i‖`` (row ``i``: from node ``i``).
    w : Tensor, shape (n, n)
        The gossip matrix (``W[i, j] > 0``: ``i`` receives from ``j``).
    delta : float or Tensor of shape (n,)
        Each node's budget: the mixing weight it is prepared to see clipped, normally the
        total weight of its Byzantine neighbours, :math:`\delta_i = \sum_{j \in B} W_{ij}`.

    Returns
    -------
    Tensor, shape (n,), float64

    Notes
    -----
    Node ``i`` sorts its neighbours by distance, farthest first, with weights
    :math:`w_{(1)}, w_{(2)}, \dots`; ``k`` is the largest count with
    :math:`w_{(1)} + \dots + w_{(k)} \le \delta_i`, and :math:`\tau_i` is the distance of
    the ``(k+1)``-th farthest neighbour (0 when every neighbour is within the budget). So the
    ``k`` farthest neighbours are pulled in to the next one's distance and nobody else is
    touched; ``δ_i = 0`` clips nothing. This is the practical counterpart of He et al.'s
    analysis, whose radius is set from the honest neighbours' spread, which a node cannot
    observe; with one neighbour's weight as budget it is the authors' experimental rule
    (clip only the farthest neighbour, ``τ_i`` = the second-largest distance).
    """
    n = dist.shape[0]
    d64 = dist.detach().to(torch.float64)
    w64 = w.detach().to(device=d64.device, dtype=torch.float64)
    budget = torch.as_tensor(delta, dtype=torch.float64, device=d64.device).expand(n)
    if not bool(torch.isfinite(budget).all()) or bool((budget < 0).any()):
        raise ValidationError(f"clipped_gossip: delta must be finite and >= 0; got {delta!r}")
    off = w64.clone()
    off.fill_diagonal_(0.0)
    support = off > 0
    keyed = torch.where(support, d64, torch.full_like(d64, -1.0))
    order = torch.sort(keyed, dim=1, descending=True, stable=True).indices
    sorted_w = torch.gather(off, 1, order)
    sorted_d = torch.gather(keyed, 1, order)
    cum = torch.cumsum(sorted_w, dim=1)
    tol = 1e-12 + 1e-9 * budget[:, None]
    degree = support.sum(dim=1)
    within = (cum <= budget[:, None] + tol) & (torch.arange(n, device=d64.device) < degree[:, None])
    k = within.sum(dim=1)
    pick = torch.gather(sorted_d, 1, k.clamp_max(n - 1)[:, None]).squeeze(1)
    return torch.where(k < degree, pick.clamp_min(0.0), torch.zeros_like(pick))


def clipped_gossip(
    x: Tensor,
    w: Tensor,
    tau: float | Tensor | None = None,
    *,
    delta: float | Tensor | None = None,
    rows: Rows = None,
) -> Tensor:
    r"""ClippedGossip (He, Karimireddy & Jaggi 2023, "Byzantine-robust decentralized learning
    via ClippedGossip"): gossip in which each received difference is clipped.

    .. math::
        x_i^{+} = x_i + \sum_j W_{ij}\,\mathrm{clip}(x_j - x_i, \tau_i), \qquad
        \mathrm{clip}(v, \tau) = \min\!\left(1, \frac{\tau}{\lVert v\rVert}\right) v .

    Written as ``M @ X`` with :math:`M_{ij} = W_{ij} \min(1, \tau_i / \lVert x_j - x_i\rVert)`
    for :math:`j \ne i` and :math:`M_{ii} = 1 - \sum_{j \ne i} M_{ij}`: the distances come
    from one Gram matrix, the result from one matrix product. A Byzantine neighbour can move
    node ``i`` by at most :math:`W_{ij}\tau_i`. With ``tau`` at least every distance this is
    :func:`gossip` (for a row-stochastic ``W``).

    Parameters
    ----------
    x : Tensor, shape (n, d)
        The vectors the nodes send (row ``i``: node ``i``'s).
    w : Tensor, shape (n, n)
        Row-stochastic gossip matrix (:func:`metropolis_weights`).
    tau : float or Tensor of shape (n,), optional
        Fixed clipping radius (one for all, or one per receiving node), >= 0.
    delta : float or Tensor of shape (n,), optional
        Instead of ``tau``: the adaptive radius of :func:`adaptive_clip_radius` with this
        per-node weight budget. Exactly one of ``tau`` and ``delta`` is given.
    rows : sequence of int, optional
        The receiving nodes to compute (default every node), e.g. the honest ones.

    Returns
    -------
    Tensor, shape (len(rows), d), X's dtype

    Notes
    -----
    A sender whose vector holds NaN or ±inf has no direction to clip; its message is
    discarded (its coefficient is 0 and its weight stays with the receiver).

    Examples
    --------
    >>> import torch
    >>> from velocity.p2p.topology import Topology
    >>> w = metropolis_weights(Topology.complete(3))
    >>> x = torch.tensor([[0.0], [1.0], [100.0]], dtype=torch.float64)
    >>> clipped_gossip(x, w, delta=1 / 3)[:2].flatten().tolist()
    [0.6666666666666666, 1.0]
    """
    rule = "clipped_gossip"
    x = _check_x(x, rule)
    n = x.shape[0]
    w64 = _check_w(w, n, rule).to(x.device)
    if (tau is None) == (delta is None):
        raise ValidationError(f"{rule}: give exactly one of tau (fixed) and delta (adaptive)")
    idx = _rows(rows, n, rule, x.device)
    dist2, finite = _sq_distances(x)
    dist = dist2.sqrt()
    if tau is not None:
        radius = torch.as_tensor(tau, dtype=torch.float64, device=x.device)
        if radius.ndim > 1 or (radius.ndim == 1 and radius.numel() != n):
            raise ValidationError(f"{rule}: tau must be a float or an ({n},) tensor")
        if not bool((radius >= 0).all()) or bool(torch.isnan(radius).any()):
            raise ValidationError(f"{rule}: tau must be >= 0; got {tau!r}")
        radius = radius.expand(n)
    else:
        assert delta is not None
        if isinstance(delta, Tensor) and delta.numel() not in (1, n):
            raise ValidationError(f"{rule}: delta must be a float or an ({n},) tensor")
        radius = adaptive_clip_radius(dist, w64, delta)
    radius = radius.index_select(0, idx)
    d_rows = dist.index_select(0, idx)
    scale = torch.where(
        d_rows > radius[:, None],
        radius[:, None] / d_rows.clamp_min(torch.finfo(torch.float64).tiny),
        torch.ones_like(d_rows),
    )
    coef = w64.index_select(0, idx) * scale
    coef[torch.arange(idx.numel(), device=x.device), idx] = 0.0
    if finite is not None:
        coef[:, ~finite] = 0.0
    coef[torch.arange(idx.numel(), device=x.device), idx] = 1.0 - coef.sum(dim=1)
    return _combine(coef, x, finite, rule, idx)


# ------------------------------------------------------------------------------ NNA
def nna(x: Tensor, adjacency: Tensor | Topology, f: int | Tensor, *, rows: Rows = None) -> Tensor:
    r"""Nearest-neighbour averaging over each node's in-neighbourhood.

    Node ``i`` holds the ``n_i = 1 + |in(i)|`` vectors of itself and its in-neighbours and
    averages the ``n_i − f_i`` of them nearest to its own vector, its own included (it is at
    distance 0): the decentralized form of NNA (Farhadkhani et al. 2023, "Robust
    collaborative learning with linear gradient overhead", ICML). The ``f_i`` farthest
    vectors, where Byzantine vectors far enough to matter are, are left out.

    Parameters
    ----------
    x : Tensor, shape (n, d)
    adjacency : Topology or bool Tensor of shape (n, n)
        ``A[u, v]`` true for every edge ``u -> v``; column ``i`` marks ``i``'s in-neighbours.
    f : int or int Tensor of shape (n,)
        Vectors each node leaves out (>= 0), one for all or one per node; needs
        ``n_i − f_i >= 1`` at every computed node.
    rows : sequence of int, optional
        The nodes to compute (default every node).

    Returns
    -------
    Tensor, shape (len(rows), d), X's dtype

    Notes
    -----
    Selection uses the distances of one Gram matrix; the averages are ONE product of a 0/1
    mask (scaled by ``1 / (n_i − f_i)``) with ``X``. Equal distances are broken by node id
    (lower first), the node itself always first. Vectors holding NaN or ±inf are the
    farthest; a node that would still have to average one is refused with
    ``ValidationError``.

    Examples
    --------
    >>> import torch
    >>> from velocity.p2p.topology import Topology
    >>> x = torch.tensor([[0.0], [1.0], [100.0]], dtype=torch.float64)
    >>> nna(x, Topology.complete(3), 1)[:2].flatten().tolist()
    [0.5, 0.5]
    """
    rule = "nna"
    x = _check_x(x, rule)
    n = x.shape[0]
    adj = _adjacency(adjacency, n, rule).to(x.device)
    idx = _rows(rows, n, rule, x.device)
    cand = adj.T.clone()
    cand.fill_diagonal_(True)
    sizes = cand.sum(dim=1)
    if isinstance(f, Tensor):
        f_t = f.detach().to(device=x.device, dtype=torch.int64).flatten()
        if f_t.numel() == 1:
            f_t = f_t.expand(n)
        if f_t.numel() != n:
            raise ValidationError(f"{rule}: f must be an int or an ({n},) int tensor")
    elif isinstance(f, numbers.Integral) and not isinstance(f, bool):
        f_t = torch.full((n,), int(f), dtype=torch.int64, device=x.device)
    else:
        raise ValidationError(f"{rule}: f must be an int >= 0; got {f!r}")
    if bool((f_t < 0).any()):
        raise ValidationError(f"{rule}: f must be >= 0; got {f_t.min().item()}")
    keep = (sizes - f_t).index_select(0, idx)
    if bool((keep < 1).any()):
        bad = int(torch.nonzero(keep < 1).flatten()[0])
        node = int(idx[bad])
        raise ValidationError(
            f"{rule} needs n_i - f >= 1 at every node; node {node} has n_i={int(sizes[node])} "
            f"(itself and {int(sizes[node]) - 1} in-neighbours) and f={int(f_t[node])}"
        )
    dist2, finite = _sq_distances(x)
    d_rows = dist2.index_select(0, idx)
    cand_rows = cand.index_select(0, idx)
    key = torch.where(cand_rows, d_rows, torch.full_like(d_rows, math.inf))
    key[torch.arange(idx.numel(), device=x.device), idx] = -1.0  # the node itself first
    order = torch.sort(key, dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(n, device=x.device).expand_as(order).contiguous())
    chosen = ranks < keep[:, None]
    coef = chosen.to(torch.float64) / keep[:, None].to(torch.float64)
    return _combine(coef, x, finite, rule, idx)


# ------------------------------------------------------------------------------ general
def robust_neighbourhood(
    x: Tensor,
    topology: Topology,
    rule: Callable[[Tensor], Tensor],
    *,
    rows: Rows = None,
) -> Tensor:
    """Apply a robust aggregator to each node's neighbourhood: itself and its in-neighbours.

    Row ``i`` of the result is ``rule(X[[i, *in_neighbors(i)]])``; the rule maps a
    ``(m, d)`` stack to a ``(d,)`` vector, e.g. ``velocity.kernels.median`` or
    ``functools.partial(velocity.kernels.trimmed_mean, f=1)``. One call per node: the general
    fallback for rules without a Gram-matrix form.

    Examples
    --------
    >>> import torch
    >>> from velocity.kernels import median
    >>> from velocity.p2p.topology import Topology
    >>> x = torch.tensor([[0.0], [1.0], [2.0], [100.0]])
    >>> robust_neighbourhood(x, Topology.complete(4), median).flatten().tolist()
    [1.5, 1.5, 1.5, 1.5]
    """
    name = "robust_neighbourhood"
    x = _check_x(x, name)
    n = x.shape[0]
    if not isinstance(topology, Topology) or topology.n_nodes != n:
        raise ValidationError(f"{name}: topology must be a Topology with {n} nodes")
    if not callable(rule):
        raise ValidationError(f"{name}: rule must be callable (m, d) -> (d,); got {rule!r}")
    idx = _rows(rows, n, name, x.device)
    out = torch.empty(idx.numel(), x.shape[1], dtype=x.dtype, device=x.device)
    for k, i in enumerate(idx.tolist()):
        members = torch.tensor((i, *topology.in_neighbors(i)), device=x.device)
        value = rule(x.index_select(0, members))
        if not isinstance(value, Tensor) or value.shape != (x.shape[1],):
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValidationError(
                f"{name}: rule must return a ({x.shape[1]},) tensor; got {got} at node {i}"
            )
        out[k] = value
    return out


# ------------------------------------------------------------------------------ metrics
def consensus_distance(x: Tensor, honest: Rows = None) -> float:
    r"""Mean squared distance of the nodes to their average, over ``honest`` rows if given.

    .. math:: \Xi = \frac{1}{|H|} \sum_{i \in H} \lVert x_i - \bar x_H\rVert^2,
        \qquad \bar x_H = \frac{1}{|H|}\sum_{i \in H} x_i,

    computed in float64; 0 exactly when the selected nodes agree. Rows outside ``honest``
    (the Byzantine ones) enter neither the mean nor the sum.

    >>> import torch
    >>> consensus_distance(torch.tensor([[0.0], [2.0], [1e9]]), honest=[0, 1])
    1.0
    """
    x = _check_x(x, "consensus_distance")
    idx = _rows(honest, x.shape[0], "consensus_distance", x.device)
    if idx.numel() == 0:
        raise ValidationError("consensus_distance: honest must select at least one row")
    sel = x.index_select(0, idx).to(torch.float64)
    return float(((sel - sel.mean(dim=0, keepdim=True)) ** 2).sum(dim=1).mean())
