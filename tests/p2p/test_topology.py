"""Topology constructors against brute-force expectations, ByzPy's semantics and bad input."""

from __future__ import annotations

import itertools

import networkx as nx
import pytest
import torch

from velocity.errors import ConfigurationError
from velocity.p2p import TOPOLOGY_KINDS, Edge, Topology, topology_from_config


def _neighbour_sets(t: Topology) -> tuple[list[set[int]], list[set[int]]]:
    return (
        [set(t.out_neighbors(i)) for i in range(t.n_nodes)],
        [set(t.in_neighbors(i)) for i in range(t.n_nodes)],
    )


def test_ring_5_1_neighbour_sets() -> None:
    t = Topology.ring(5, 1)
    expected = [{1, 4}, {0, 2}, {1, 3}, {2, 4}, {3, 0}]
    out, inn = _neighbour_sets(t)
    assert out == expected
    assert inn == expected
    assert len(t.edges) == 10
    assert t.is_undirected()
    assert t.is_strongly_connected()


@pytest.mark.parametrize(("n", "k"), [(2, 1), (4, 2), (6, 1), (7, 3), (9, 2), (5, 4)])
def test_ring_matches_brute_force(n: int, k: int) -> None:
    t = Topology.ring(n, k)
    for i in range(n):
        want = {(i + d) % n for d in range(1, k + 1)} | {(i - d) % n for d in range(1, k + 1)}
        assert set(t.out_neighbors(i)) == want
        assert set(t.in_neighbors(i)) == want
        assert list(t.out_neighbors(i)) == sorted(want)
    assert len(t.edges) == len(set(t.edges))  # coinciding edges (k >= n/2) stored once


def test_ring_agrees_with_byzpy() -> None:
    byzpy_topology = pytest.importorskip("byzpy.engine.peer_to_peer.topology")
    for n, k in [(5, 1), (8, 2), (6, 3)]:
        theirs = byzpy_topology.Topology.ring(n, k)
        ours = Topology.ring(n, k)
        for i in range(n):
            assert set(ours.out_neighbors(i)) == set(theirs.out[i])
            assert set(ours.in_neighbors(i)) == set(theirs.in_[i])
        theirs_c = byzpy_topology.Topology.complete(n)
        ours_c = Topology.complete(n)
        for i in range(n):
            assert list(ours_c.out_neighbors(i)) == sorted(theirs_c.out[i])


def test_ring_n_minus_1_is_complete() -> None:
    assert Topology.ring(6, 5) == Topology.complete(6)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_complete(n: int) -> None:
    t = Topology.complete(n)
    assert t.edges == tuple(Edge(u, v) for u, v in itertools.permutations(range(n), 2))
    for i in range(n):
        assert t.out_neighbors(i) == tuple(j for j in range(n) if j != i)
    a = t.adjacency()
    assert torch.equal(a, ~torch.eye(n, dtype=torch.bool))
    assert t.is_strongly_connected()


@pytest.mark.parametrize(("n", "k"), [(16, 4), (10, 3), (8, 0)])
def test_random_regular_is_regular_and_seeded(n: int, k: int) -> None:
    t = Topology.random_regular(n, k, seed=3)
    assert t.is_undirected()
    for i in range(n):
        assert len(t.out_neighbors(i)) == k
        assert len(t.in_neighbors(i)) == k
        assert i not in t.out_neighbors(i)
    assert Topology.random_regular(n, k, seed=3) == t
    expected = Topology.from_networkx(nx.random_regular_graph(k, n, seed=3))
    assert expected == t


def test_random_regular_seeds_differ() -> None:
    graphs = {Topology.random_regular(16, 4, seed=s) for s in range(5)}
    assert len(graphs) > 1


def test_erdos_renyi() -> None:
    assert Topology.erdos_renyi(6, 0.0, seed=0).edges == ()
    assert Topology.erdos_renyi(6, 1.0, seed=0) == Topology.complete(6)
    a = Topology.erdos_renyi(20, 0.3, seed=7)
    assert a == Topology.erdos_renyi(20, 0.3, seed=7)
    assert a.is_undirected()
    d = Topology.erdos_renyi(20, 0.3, seed=7, directed=True)
    assert not d.is_undirected()
    want = {(u, v) for u, v in nx.gnp_random_graph(20, 0.3, seed=7, directed=True).edges()}
    assert {(e.u, e.v) for e in d.edges} == want


def test_from_edges_collapses_duplicates_and_sorts() -> None:
    t = Topology(4, [(2, 1), (0, 3), (2, 1), (0, 1)])
    assert t.edges == (Edge(0, 1), Edge(0, 3), Edge(2, 1))
    assert t.out_neighbors(0) == (1, 3)
    assert t.in_neighbors(1) == (0, 2)
    u = Topology.from_edges(3, [(0, 1), (1, 2)], undirected=True)
    assert u.is_undirected()
    assert len(u.edges) == 4
    assert not Topology.from_edges(3, [(0, 1), (1, 2)]).is_undirected()


def test_adjacency_and_networkx_round_trip() -> None:
    t = Topology(5, [(0, 1), (1, 2), (2, 0), (3, 4)])
    a = t.adjacency()
    assert a.dtype == torch.bool
    assert a.shape == (5, 5)
    assert {(int(u), int(v)) for u, v in torch.nonzero(a).tolist()} == {(e.u, e.v) for e in t.edges}
    g = t.to_networkx()
    assert isinstance(g, nx.DiGraph)
    assert set(g.nodes) == set(range(5))
    assert Topology.from_networkx(g) == t
    ug = nx.path_graph(4)
    assert Topology.from_networkx(ug) == Topology.from_edges(
        4, [(0, 1), (1, 2), (2, 3)], undirected=True
    )


def test_strong_connectivity() -> None:
    assert Topology(1, []).is_strongly_connected()
    assert not Topology(2, []).is_strongly_connected()
    assert not Topology(3, [(0, 1), (1, 2)]).is_strongly_connected()
    assert Topology(3, [(0, 1), (1, 2), (2, 0)]).is_strongly_connected()
    ring = Topology.ring(8)
    assert ring.subgraph_is_strongly_connected([0, 1, 2])
    assert not ring.subgraph_is_strongly_connected([0, 1, 4, 5])


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: Topology(0, []), "n_nodes"),
        (lambda: Topology(True, []), "n_nodes"),
        (lambda: Topology(3, [(0, 3)]), "edges[0].v"),
        (lambda: Topology(3, [(-1, 0)]), "edges[0].u"),
        (lambda: Topology(3, [(0, 1), (1, 1)]), "self loop"),
        (lambda: Topology(3, [(0, 1.5)]), "edges[0].v"),  # type: ignore[list-item]
        (lambda: Topology(3, [(0, 1, 2)]), "pair"),  # type: ignore[list-item]
        (lambda: Topology.ring(1), "ring.n"),
        (lambda: Topology.ring(5, 0), "ring.k"),
        (lambda: Topology.ring(5, 5), "ring.k"),
        (lambda: Topology.random_regular(5, 3, seed=0), "n * k even"),
        (lambda: Topology.random_regular(5, 5, seed=0), "random_regular.k"),
        (lambda: Topology.random_regular(6, 2, seed=-1), "seed"),
        (lambda: Topology.erdos_renyi(5, 1.5, seed=0), "erdos_renyi.p"),
        (lambda: Topology.from_networkx(nx.relabel_nodes(nx.path_graph(3), {0: 5})), "nodes"),
        (lambda: Topology.ring(5).out_neighbors(5), "out_neighbors.i"),
    ],
)
def test_bad_input_names_the_field(make: object, needle: str) -> None:
    with pytest.raises(ConfigurationError) as info:  # a ValueError
        make()  # type: ignore[operator]
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)


def test_topology_from_config() -> None:
    assert topology_from_config("ring", 5) == Topology.ring(5, 1)
    assert topology_from_config("ring", 6, k=2) == Topology.ring(6, 2)
    assert topology_from_config("complete", 4) == Topology.complete(4)
    assert topology_from_config("random_regular", 10, k=4, seed=2) == Topology.random_regular(
        10, 4, seed=2
    )
    assert topology_from_config("erdos_renyi", 10, p=0.5, seed=1) == Topology.erdos_renyi(
        10, 0.5, seed=1
    )
    edges = topology_from_config("edges", 3, edges=[[0, 1], [1, 2]], undirected=True)
    assert edges == Topology.from_edges(3, [(0, 1), (1, 2)], undirected=True)
    assert set(TOPOLOGY_KINDS) == {"ring", "complete", "random_regular", "erdos_renyi", "edges"}


def test_topology_from_config_errors() -> None:
    with pytest.raises(ValueError, match=r"ring.*complete.*random_regular.*erdos_renyi.*edges"):
        topology_from_config("torus", 4)
    with pytest.raises(ValueError, match=r"unknown parameter.*'p'.*accepted: k"):
        topology_from_config("ring", 4, p=0.1)
    with pytest.raises(ValueError, match=r"missing parameter.*'k'"):
        topology_from_config("random_regular", 4)
    with pytest.raises(ValueError, match="edges must be a list"):
        topology_from_config("edges", 4, edges=3)
