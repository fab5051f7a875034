"""Mixing rules against brute-force per-node references, and gossip's contraction rate."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from velocity.errors import ValidationError
from velocity.kernels import median, trimmed_mean
from velocity.p2p import (
    Topology,
    adaptive_clip_radius,
    clipped_gossip,
    consensus_distance,
    gossip,
    metropolis_weights,
    nna,
    robust_neighbourhood,
    second_eigenvalue_modulus,
)

TOPOLOGIES = {
    "ring16": Topology.ring(16),
    "ring9k2": Topology.ring(9, 2),
    "complete6": Topology.complete(6),
    "regular12": Topology.random_regular(12, 4, seed=1),
    "er15": Topology.erdos_renyi(15, 0.3, seed=4),
}


def _x(n: int, d: int, seed: int = 0, outliers: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x[:outliers] = 50.0 * torch.randn(outliers, d, generator=g, dtype=torch.float64)
    return x


# ------------------------------------------------------------------ brute-force references
def _ref_clipped(x: torch.Tensor, w: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        acc = x[i].clone()
        for j in range(x.shape[0]):
            if j == i or w[i, j] == 0:
                continue
            diff = x[j] - x[i]
            norm = float(diff.norm())
            scale = 1.0 if norm <= float(tau[i]) else float(tau[i]) / norm
            acc += w[i, j] * scale * diff
        out[i] = acc
    return out


def _ref_radius(x: torch.Tensor, w: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    taus = []
    for i in range(x.shape[0]):
        nbrs = [j for j in range(x.shape[0]) if j != i and w[i, j] > 0]
        nbrs.sort(key=lambda j: (-float((x[j] - x[i]).norm()), j))
        total, k = 0.0, 0
        while k < len(nbrs) and total + float(w[i, nbrs[k]]) <= float(delta[i]) + 1e-12:
            total += float(w[i, nbrs[k]])
            k += 1
        taus.append(0.0 if k == len(nbrs) else float((x[nbrs[k]] - x[i]).norm()))
    return torch.tensor(taus, dtype=torch.float64)


def _ref_nna(x: torch.Tensor, t: Topology, f: list[int]) -> torch.Tensor:
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        hood = [i, *t.in_neighbors(i)]
        hood.sort(key=lambda j: (j != i, float((x[j] - x[i]).norm()), j))
        keep = hood[: len(hood) - f[i]]
        out[i] = x[keep].mean(dim=0)
    return out


# ------------------------------------------------------------------ weights
@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_metropolis_is_symmetric_doubly_stochastic(name: str) -> None:
    t = TOPOLOGIES[name]
    w = metropolis_weights(t)
    assert w.dtype == torch.float64
    assert torch.allclose(w, w.T)
    assert torch.allclose(w.sum(dim=0), torch.ones(t.n_nodes, dtype=torch.float64))
    assert torch.allclose(w.sum(dim=1), torch.ones(t.n_nodes, dtype=torch.float64))
    assert bool((w >= 0).all())
    off = w.clone().fill_diagonal_(0)
    assert torch.equal(off > 0, t.adjacency().T)  # W[i, j] > 0 iff j -> i
    for e in t.edges:
        deg_u, deg_v = len(t.out_neighbors(e.u)), len(t.out_neighbors(e.v))
        assert w[e.v, e.u].item() == pytest.approx(1.0 / (1.0 + max(deg_u, deg_v)))


def test_metropolis_directed_is_row_stochastic_uniform() -> None:
    t = Topology(4, [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)])
    w = metropolis_weights(t)
    assert torch.allclose(w.sum(dim=1), torch.ones(4, dtype=torch.float64))
    assert w[2].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0])  # in(2) = {0, 1}
    assert w[1].tolist() == pytest.approx([0.5, 0.5, 0.0, 0.0])


def test_second_eigenvalue_of_ring() -> None:
    w = metropolis_weights(Topology.ring(16))  # 1/3 on self and both neighbours
    assert second_eigenvalue_modulus(w) == pytest.approx(1 / 3 + 2 / 3 * math.cos(2 * math.pi / 16))


# ------------------------------------------------------------------ gossip
def test_gossip_is_one_matmul_in_x_dtype() -> None:
    t = TOPOLOGIES["regular12"]
    w = metropolis_weights(t)
    x = _x(12, 7).float()
    out = gossip(x, w)
    assert out.dtype == torch.float32
    assert torch.allclose(out, (w @ x.double()).float(), atol=1e-6)


def test_gossip_on_ring_shrinks_consensus_distance_geometrically() -> None:
    t = Topology.ring(16)
    w = metropolis_weights(t)
    lam2 = second_eigenvalue_modulus(w) ** 2
    x = _x(16, 5, seed=3)
    prev = consensus_distance(x)
    ratios = []
    for _ in range(300):
        x = gossip(x, w)
        cur = consensus_distance(x)
        ratios.append(cur / prev)
        prev = cur
    assert max(ratios) <= lam2 * (1 + 1e-9)  # every round contracts by at least lambda_2^2
    assert ratios[-1] == pytest.approx(lam2, rel=1e-3)  # and asymptotically by exactly that
    assert prev < 1e-10 * consensus_distance(_x(16, 5, seed=3))


# ------------------------------------------------------------------ ClippedGossip
@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_clipped_gossip_matches_per_node_loop(name: str) -> None:
    t = TOPOLOGIES[name]
    n = t.n_nodes
    w = metropolis_weights(t)
    x = _x(n, 9, seed=n, outliers=2)
    for tau in (0.5, 3.0):
        ref = _ref_clipped(x, w, torch.full((n,), tau, dtype=torch.float64))
        assert torch.allclose(clipped_gossip(x, w, tau), ref, atol=1e-10)
    per_node = torch.linspace(0.1, 5.0, n, dtype=torch.float64)
    assert torch.allclose(clipped_gossip(x, w, per_node), _ref_clipped(x, w, per_node), atol=1e-10)
    delta = w.clone().fill_diagonal_(0).max(dim=1).values  # one (heaviest) neighbour's weight
    radius = _ref_radius(x, w, delta)
    dist = torch.cdist(x, x)
    assert torch.allclose(adaptive_clip_radius(dist, w, delta), radius, atol=1e-10)
    assert torch.allclose(clipped_gossip(x, w, delta=delta), _ref_clipped(x, w, radius), atol=1e-10)


def test_clipped_gossip_with_huge_tau_is_gossip_and_zero_tau_is_identity() -> None:
    t = TOPOLOGIES["regular12"]
    w = metropolis_weights(t)
    x = _x(12, 6, outliers=3)
    assert torch.allclose(clipped_gossip(x, w, 1e12), gossip(x, w), atol=1e-12)
    assert torch.allclose(clipped_gossip(x, w, delta=0.0), gossip(x, w), atol=1e-12)
    assert torch.allclose(clipped_gossip(x, w, 0.0), x, atol=1e-12)


def test_adaptive_radius_clips_the_outlier_to_the_next_distance() -> None:
    t = Topology.complete(4)
    w = metropolis_weights(t)
    x = torch.tensor([[0.0], [1.0], [2.0], [100.0]], dtype=torch.float64)
    out = clipped_gossip(x, w, delta=0.25)
    # node 0: neighbours at 1, 2, 100 (weight 1/4 each); the farthest is pulled in to 2
    assert out[0].item() == pytest.approx(0.25 * (1 + 2 + 2))


def test_clipped_gossip_bounds_a_byzantine_pull() -> None:
    t = TOPOLOGIES["regular12"]
    w = metropolis_weights(t)
    x = _x(12, 4)
    honest_only = clipped_gossip(x, w, 0.7)
    x_bad = x.clone()
    x_bad[0] = 1e6
    attacked = clipped_gossip(x_bad, w, 0.7)
    for i in t.out_neighbors(0):  # each receiver moves by at most w_i0 * tau (+ its own change)
        shift = float((attacked[i] - honest_only[i]).norm())
        assert shift <= 2 * w[i, 0].item() * 0.7 + 1e-9


def test_rows_select_receivers() -> None:
    t = TOPOLOGIES["er15"]
    w = metropolis_weights(t)
    x = _x(15, 5, outliers=2)
    rows = [3, 7, 8, 14]
    assert torch.allclose(clipped_gossip(x, w, 1.0, rows=rows), clipped_gossip(x, w, 1.0)[rows])
    delta = torch.full((15,), 0.2, dtype=torch.float64)
    full = clipped_gossip(x, w, delta=delta)
    assert torch.allclose(clipped_gossip(x, w, delta=delta, rows=rows), full[rows])
    assert torch.allclose(nna(x, t, 1, rows=rows), nna(x, t, 1)[rows])


def test_clipped_gossip_discards_non_finite_messages() -> None:
    t = Topology.complete(4)
    w = metropolis_weights(t)
    x = _x(4, 3)
    x_bad = x.clone()
    x_bad[3] = math.inf
    out = clipped_gossip(x_bad, w, 1.0, rows=[0, 1, 2])
    # the inf message gets coefficient 0: same as the rows of a 3-node graph with weight 1/4
    w3 = w.clone()
    w3[:, 3] = 0
    ref = _ref_clipped(x[:3], w3[:3, :3], torch.ones(3, dtype=torch.float64))
    assert torch.isfinite(out).all()
    assert torch.allclose(out, ref, atol=1e-12)
    with pytest.raises(ValidationError, match="non-finite"):
        clipped_gossip(x_bad, w, 1.0)  # node 3 itself is non-finite


def test_clipped_gossip_bad_input() -> None:
    w = metropolis_weights(Topology.ring(4))
    x = _x(4, 2)
    with pytest.raises(ValidationError, match="exactly one of tau"):
        clipped_gossip(x, w)
    with pytest.raises(ValidationError, match="exactly one of tau"):
        clipped_gossip(x, w, 1.0, delta=0.1)
    with pytest.raises(ValidationError, match="tau must be >= 0"):
        clipped_gossip(x, w, -1.0)
    with pytest.raises(ValidationError, match=r"W must be a floating \(4, 4\)"):
        clipped_gossip(x, w[:3], 1.0)
    with pytest.raises(ValidationError, match=r"X must be a floating \(n, d\)"):
        clipped_gossip(x[0], w, 1.0)
    with pytest.raises(ValidationError, match="rows must be node ids"):
        clipped_gossip(x, w, 1.0, rows=[4])


# ------------------------------------------------------------------ NNA
@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_nna_matches_per_node_loop(name: str) -> None:
    t = TOPOLOGIES[name]
    n = t.n_nodes
    x = _x(n, 6, seed=2 * n, outliers=2)
    min_hood = min(1 + len(t.in_neighbors(i)) for i in range(n))
    for f in range(min_hood):
        assert torch.allclose(nna(x, t, f), _ref_nna(x, t, [f] * n), atol=1e-12)
    per_node = torch.tensor([min(1, len(t.in_neighbors(i))) for i in range(n)])
    assert torch.allclose(nna(x, t.adjacency(), per_node), _ref_nna(x, t, per_node.tolist()))


def test_nna_f0_on_complete_graph_is_the_mean() -> None:
    x = _x(5, 3)
    assert torch.allclose(nna(x, Topology.complete(5), 0), x.mean(dim=0).expand(5, -1))


def test_nna_ties_break_by_node_id() -> None:
    t = Topology.complete(4)
    x = torch.tensor([[0.0], [1.0], [-1.0], [1.0]], dtype=torch.float64)
    # node 0 keeps itself and 2 of {1, 2, 3} at distance 1: the lower ids 1 and 2
    assert nna(x, t, 1)[0].item() == pytest.approx(0.0)


def test_nna_non_finite_rows() -> None:
    t = Topology.complete(5)
    x = _x(5, 3)
    x[4] = math.nan
    out = nna(x, t, 1, rows=[0, 1, 2, 3])
    assert torch.allclose(out, _ref_nna(x[:4], Topology.complete(4), [0] * 4))
    with pytest.raises(ValidationError, match="non-finite"):
        nna(x, t, 0, rows=[0])


def test_nna_refuses_f_too_large() -> None:
    with pytest.raises(ValidationError, match=r"node 0 has n_i=3.*f=3"):
        nna(_x(5, 2), Topology.ring(5), 3)
    with pytest.raises(ValidationError, match="f must be an int"):
        nna(_x(5, 2), Topology.ring(5), 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="topology has 4 nodes"):
        nna(_x(5, 2), Topology.ring(4), 1)


def test_distances_survive_a_large_common_offset_in_float32() -> None:
    """The centred Gram matrix keeps small differences on top of a large offset."""
    t = Topology.complete(6)
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(6, 2000, generator=g, dtype=torch.float64) * 1e-3
    spread[5] *= 30  # the one to drop
    x64 = 1e3 + spread
    out = nna(x64.float(), t, 1).double()
    ref = _ref_nna(x64, t, [1] * 6)
    assert torch.allclose(out, ref, atol=1e-3)  # float32 resolution of 1e3 is 6e-5


def test_distances_survive_a_far_byzantine_row_in_float32() -> None:
    """A far row must not move the Gram matrix's centre: honest distances of ~1e-3 next to a
    row 1e4 away, and a near attacker (a few 1e-2 off the honest mean) that NNA must drop."""
    g = torch.Generator().manual_seed(0)
    d = 10_000
    honest = 1.0 + 1e-3 * torch.randn(8, d, generator=g)
    near = honest.mean(0, keepdim=True) + 0.05
    far = torch.full((1, d), 1e4)
    x = torch.cat([honest, near, far]).float()
    t = Topology.complete(10)
    out = nna(x, t, 2, rows=range(8)).double()
    for i in range(8):
        dist = ((x.double() - x[i].double()) ** 2).sum(1)
        keep = torch.argsort(dist, stable=True)[:8]
        assert 8 not in keep.tolist()  # the brute force drops the near attacker
        assert torch.allclose(out[i], x[keep].double().mean(0), atol=1e-5)


# ------------------------------------------------------------------ generic rule
def test_robust_neighbourhood_matches_loop() -> None:
    t = TOPOLOGIES["regular12"]
    x = _x(12, 5, outliers=2).float()
    out = robust_neighbourhood(x, t, median)
    for i in range(12):
        hood = x[[i, *t.in_neighbors(i)]]
        assert torch.allclose(out[i], median(hood))
    tm = functools.partial(trimmed_mean, f=1)
    out_tm = robust_neighbourhood(x, t, tm, rows=[0, 5])
    assert torch.allclose(out_tm[1], trimmed_mean(x[[5, *t.in_neighbors(5)]], f=1))
    with pytest.raises(ValidationError, match="must return a"):
        robust_neighbourhood(x, t, lambda rows: rows)


# ------------------------------------------------------------------ consensus distance
def test_consensus_distance_definition() -> None:
    x = _x(7, 4)
    want = sum(float((x[i] - x.mean(0)).pow(2).sum()) for i in range(7)) / 7
    assert consensus_distance(x) == pytest.approx(want)
    sub = [0, 2, 5]
    bad = x.clone()
    bad[[1, 3, 4, 6]] = math.nan  # rows outside `honest` never enter
    want_sub = consensus_distance(x[sub])
    assert consensus_distance(bad, honest=sub) == pytest.approx(want_sub)
    assert consensus_distance(x[:1].expand(4, -1).clone()) == 0.0
    with pytest.raises(ValidationError, match="at least one row"):
        consensus_distance(x, honest=[])


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 9),
    d=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    tau=st.floats(0.0, 5.0),
)
def test_clipped_gossip_property(n: int, d: int, seed: int, tau: float) -> None:
    t = Topology.erdos_renyi(n, 0.5, seed=seed)
    w = metropolis_weights(t)
    x = _x(n, d, seed=seed, outliers=1)
    taus = torch.full((n,), tau, dtype=torch.float64)
    assert torch.allclose(clipped_gossip(x, w, tau), _ref_clipped(x, w, taus), atol=1e-9)
