"""Communication graphs for peer-to-peer training: :class:`Topology` and its constructors.

A topology is a *directed* graph on the nodes ``0 .. n-1``. An edge ``u -> v`` means that node
``u`` sends its vector to node ``v``; so node ``i`` *receives* from its in-neighbours
:meth:`Topology.in_neighbors` and *sends* to its out-neighbours :meth:`Topology.out_neighbors`.
Undirected graphs (ring, complete, random regular, Erdős–Rényi) hold both directions of every
edge. The constructors follow ByzPy's ``Topology`` (``byzpy.engine.peer_to_peer.topology``):
``Topology.ring(n, k)`` joins each node to its ``k`` successors *and* its ``k`` predecessors.

Examples
--------
>>> t = Topology.ring(5, k=1)
>>> t.out_neighbors(0), t.in_neighbors(0)
((1, 4), (1, 4))
>>> len(Topology.complete(4).edges)
12
>>> topology_from_config("random_regular", 8, k=3, seed=0).is_undirected()
True
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import torch
from torch import Tensor

from velocity.errors import ConfigurationError

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["TOPOLOGY_KINDS", "Edge", "Topology", "topology_from_config"]


@dataclass(frozen=True, order=True)
class Edge:
    """A directed edge ``u -> v``: node ``u`` sends to node ``v``."""

    u: int
    v: int


def _check_int(owner: str, name: str, value: object, low: int, high: int | None = None) -> int:
    if not isinstance(value, bool) and isinstance(value, numbers.Integral):
        v = int(value)
        if v >= low and (high is None or v <= high):
            return v
    bound = f">= {low}" if high is None else f"in [{low}, {high}]"
    raise ConfigurationError(f"{owner}.{name} must be an int {bound}; got {value!r}")


def _check_prob(owner: str, name: str, value: object) -> float:
    if not isinstance(value, bool) and isinstance(value, numbers.Real):
        v = float(value)
        if 0.0 <= v <= 1.0:
            return v
    raise ConfigurationError(f"{owner}.{name} must be a float in [0, 1]; got {value!r}")


def _check_seed(owner: str, value: object) -> int:
    return _check_int(owner, "seed", value, 0)


class Topology:
    """A directed communication graph on the nodes ``0 .. n_nodes - 1``.

    Parameters
    ----------
    n_nodes : int
        Number of nodes (>= 1).
    edges : iterable of (int, int)
        Directed edges ``(u, v)``: ``u`` sends to ``v``. Both ends must lie in
        ``[0, n_nodes)``, self loops are refused (a node always keeps its own vector; the
        mixing rules add it), and repeated edges are collapsed into one.

    Notes
    -----
    The neighbour sets are stored once, sorted, as tuples; :attr:`edges` is the sorted tuple
    of :class:`Edge`. Unlike ByzPy's ``Topology``, which stores the lists it is given, bad
    input raises :class:`~velocity.errors.ConfigurationError` (a ``ValueError``) naming the
    field, and a duplicated edge is stored once.

    Examples
    --------
    >>> t = Topology(3, [(0, 1), (1, 2), (0, 1)])
    >>> t.edges
    (Edge(u=0, v=1), Edge(u=1, v=2))
    >>> t.is_strongly_connected()
    False
    """

    __slots__ = ("_edges", "_in", "_n", "_out")

    def __init__(self, n_nodes: int, edges: Iterable[tuple[int, int]]) -> None:
        n = _check_int("Topology", "n_nodes", n_nodes, 1)
        seen: set[tuple[int, int]] = set()
        for k, pair in enumerate(edges):
            try:
                u, v = pair
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"Topology.edges[{k}] must be a pair (u, v) of node ids; got {pair!r}"
                ) from None
            for end, value in (("u", u), ("v", v)):
                if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                    raise ConfigurationError(
                        f"Topology.edges[{k}].{end} must be an int node id; got {value!r}"
                    )
                if not 0 <= int(value) < n:
                    raise ConfigurationError(
                        f"Topology.edges[{k}].{end} must be a node id in [0, {n}); got {value}"
                    )
            if int(u) == int(v):
                raise ConfigurationError(
                    f"Topology.edges[{k}] is a self loop ({u}, {v}); a node always keeps its own "
                    "vector, so self loops are not edges"
                )
            seen.add((int(u), int(v)))
        self._n = n
        self._edges = tuple(Edge(u, v) for u, v in sorted(seen))
        out: list[list[int]] = [[] for _ in range(n)]
        inn: list[list[int]] = [[] for _ in range(n)]
        for u, v in sorted(seen):
            out[u].append(v)
            inn[v].append(u)
        self._out = tuple(tuple(sorted(o)) for o in out)
        self._in = tuple(tuple(sorted(i)) for i in inn)

    # ------------------------------------------------------------------ accessors
    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return self._n

    @property
    def edges(self) -> tuple[Edge, ...]:
        """Every directed edge once, sorted by ``(u, v)``."""
        return self._edges

    def _node(self, i: int, where: str) -> int:
        return _check_int(f"Topology.{where}", "i", i, 0, self._n - 1)

    def out_neighbors(self, i: int) -> tuple[int, ...]:
        """The nodes ``i`` sends to (sorted)."""
        return self._out[self._node(i, "out_neighbors")]

    def in_neighbors(self, i: int) -> tuple[int, ...]:
        """The nodes ``i`` receives from (sorted)."""
        return self._in[self._node(i, "in_neighbors")]

    def adjacency(self) -> Tensor:
        """``(n, n)`` bool tensor ``A`` with ``A[u, v]`` true for every edge ``u -> v``.

        Column ``i`` marks node ``i``'s in-neighbours, row ``i`` its out-neighbours.
        """
        a = torch.zeros(self._n, self._n, dtype=torch.bool)
        if self._edges:
            idx = torch.tensor([(e.u, e.v) for e in self._edges], dtype=torch.int64)
            a[idx[:, 0], idx[:, 1]] = True
        return a

    def is_undirected(self) -> bool:
        """Whether every edge ``u -> v`` has its reverse ``v -> u``."""
        present = frozenset(self._edges)
        return all(Edge(e.v, e.u) in present for e in self._edges)

    def is_strongly_connected(self) -> bool:
        """Whether every node can reach every other along directed edges (one node: true)."""

        def reach(adj: tuple[tuple[int, ...], ...]) -> int:
            seen = {0}
            stack = [0]
            while stack:
                for j in adj[stack.pop()]:
                    if j not in seen:
                        seen.add(j)
                        stack.append(j)
            return len(seen)

        return reach(self._out) == self._n and reach(self._in) == self._n

    def subgraph_is_strongly_connected(self, nodes: Iterable[int]) -> bool:
        """Whether the graph restricted to ``nodes`` (e.g. the honest ones) is strongly connected.

        >>> Topology.ring(6).subgraph_is_strongly_connected([0, 1, 3, 4])
        False
        """
        keep = sorted({self._node(i, "subgraph_is_strongly_connected") for i in nodes})
        if not keep:
            raise ConfigurationError("Topology.subgraph_is_strongly_connected needs >= 1 node")
        index = {v: k for k, v in enumerate(keep)}
        edges = [(index[e.u], index[e.v]) for e in self._edges if e.u in index and e.v in index]
        return Topology(len(keep), edges).is_strongly_connected()

    def to_networkx(self) -> nx.DiGraph[int]:
        """A ``networkx.DiGraph`` with nodes ``0 .. n-1`` and the same directed edges."""
        import networkx as nx

        g: nx.DiGraph[int] = nx.DiGraph()
        g.add_nodes_from(range(self._n))
        g.add_edges_from((e.u, e.v) for e in self._edges)
        return g

    # ------------------------------------------------------------------ dunder
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Topology):
            return NotImplemented
        return self._n == other._n and self._edges == other._edges

    def __hash__(self) -> int:
        return hash((self._n, self._edges))

    def __repr__(self) -> str:
        return f"Topology(n_nodes={self._n}, edges={len(self._edges)})"

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_edges(
        cls, n: int, edges: Iterable[tuple[int, int]], *, undirected: bool = False
    ) -> Topology:
        """The graph of ``edges``; with ``undirected=True`` each edge is added in both directions.

        >>> Topology.from_edges(3, [(0, 1)], undirected=True).in_neighbors(0)
        (1,)
        """
        if not isinstance(undirected, bool):
            raise ConfigurationError(
                f"Topology.from_edges.undirected must be a bool; got {undirected!r}"
            )
        directed = cls(n, edges)
        if not undirected:
            return directed
        pairs = [(e.u, e.v) for e in directed.edges]
        return cls(n, pairs + [(v, u) for u, v in pairs])

    @classmethod
    def complete(cls, n: int) -> Topology:
        """Every ordered pair of distinct nodes: each node talks to all the others."""
        n = _check_int("Topology.complete", "n", n, 1)
        return cls(n, ((i, j) for i in range(n) for j in range(n) if i != j))

    @classmethod
    def ring(cls, n: int, k: int = 1) -> Topology:
        """Node ``i`` sends to ``i ± 1, ..., i ± k`` (mod n): ByzPy's ring semantics.

        Needs ``n >= 2`` and ``1 <= k <= n - 1``; edges that coincide (``k >= n/2``) are
        stored once, so ``ring(n, n - 1)`` is the complete graph.

        >>> Topology.ring(6, k=2).out_neighbors(0)
        (1, 2, 4, 5)
        """
        n = _check_int("Topology.ring", "n", n, 2)
        k = _check_int("Topology.ring", "k", k, 1, n - 1)
        return cls(
            n,
            [(i, (i + s * d) % n) for i in range(n) for d in range(1, k + 1) for s in (1, -1)],
        )

    @classmethod
    def random_regular(cls, n: int, k: int, seed: int) -> Topology:
        """A uniformly random undirected ``k``-regular graph (``networkx.random_regular_graph``).

        Needs ``0 <= k < n`` and ``n * k`` even; the same ``seed`` gives the same graph.
        """
        import networkx as nx

        n = _check_int("Topology.random_regular", "n", n, 1)
        k = _check_int("Topology.random_regular", "k", k, 0, n - 1)
        seed = _check_seed("Topology.random_regular", seed)
        if (n * k) % 2:
            raise ConfigurationError(f"Topology.random_regular needs n * k even; got n={n}, k={k}")
        return cls.from_networkx(nx.random_regular_graph(k, n, seed=seed))

    @classmethod
    def erdos_renyi(cls, n: int, p: float, seed: int, *, directed: bool = False) -> Topology:
        """G(n, p): each (unordered, or ordered if ``directed``) pair is an edge with prob. ``p``.

        Drawn by ``networkx.gnp_random_graph(n, p, seed=seed, directed=directed)``; undirected
        draws hold both directions. Connectivity is not guaranteed: check
        :meth:`is_strongly_connected`.
        """
        import networkx as nx

        n = _check_int("Topology.erdos_renyi", "n", n, 1)
        p = _check_prob("Topology.erdos_renyi", "p", p)
        seed = _check_seed("Topology.erdos_renyi", seed)
        if not isinstance(directed, bool):
            raise ConfigurationError(
                f"Topology.erdos_renyi.directed must be a bool; got {directed!r}"
            )
        return cls.from_networkx(nx.gnp_random_graph(n, p, seed=seed, directed=directed))

    @classmethod
    def from_networkx(cls, g: nx.Graph[Any]) -> Topology:
        """The topology of a networkx graph whose nodes are exactly ``0 .. n-1``.

        An undirected graph gives both directions of each edge, a ``DiGraph`` its own edges.
        Self loops are refused (as in the constructor); relabel other node sets first with
        ``networkx.convert_node_labels_to_integers``.
        """
        import networkx as nx

        if not isinstance(g, nx.Graph):
            raise ConfigurationError(
                f"Topology.from_networkx.g must be a networkx graph; got {type(g).__name__}"
            )
        n = g.number_of_nodes()
        if set(g.nodes) != set(range(n)):
            raise ConfigurationError(
                f"Topology.from_networkx.g must have the nodes 0..{n - 1}; got "
                f"{sorted(g.nodes, key=repr)[:5]!r}... (relabel with "
                "networkx.convert_node_labels_to_integers)"
            )
        if n == 0:
            raise ConfigurationError("Topology.from_networkx.g must have >= 1 node; got 0")
        pairs = [(int(u), int(v)) for u, v in g.edges()]
        return cls.from_edges(n, pairs, undirected=not g.is_directed())


# ---------------------------------------------------------------------- from plain config
_KIND_PARAMS: Final[Mapping[str, tuple[str, ...]]] = {
    "ring": ("k",),
    "complete": (),
    "random_regular": ("k", "seed"),
    "erdos_renyi": ("p", "seed", "directed"),
    "edges": ("edges", "undirected"),
}

TOPOLOGY_KINDS: Final[tuple[str, ...]] = tuple(_KIND_PARAMS)
"""The ``kind`` values :func:`topology_from_config` accepts."""


MAX_CONFIG_EDGES: Final = 1_000_000
"""The most edges :func:`topology_from_config` builds (a config file is untrusted input:
``complete`` on 10,000 nodes would be 10^8 edges). Python callers of the constructors are not
capped."""


def _check_size(kind: str, n: int, params: Mapping[str, Any]) -> None:
    """Refuse, before building, a topology whose edge count would exceed the cap."""
    if isinstance(n, bool) or not isinstance(n, int):
        return  # the constructor names the bad n
    k = params.get("k", 1)
    p = params.get("p", 0.0)
    expected: float = {
        "ring": 2 * n * (k if isinstance(k, int) else 1),
        "complete": n * (n - 1),
        "random_regular": n * (k if isinstance(k, int) else 1),
        "erdos_renyi": (p if isinstance(p, int | float) else 0.0) * n * (n - 1),
        "edges": 0,
    }.get(kind, 0)
    edges = params.get("edges")
    if kind == "edges" and isinstance(edges, Sized):
        expected = len(edges) * (2 if params.get("undirected") else 1)
    if expected > MAX_CONFIG_EDGES:
        raise ConfigurationError(
            f"topology {kind!r} on {n} nodes would have about {int(expected):,} edges; the "
            f"limit is {MAX_CONFIG_EDGES:,} (fewer nodes or a sparser graph)"
        )


def topology_from_config(kind: str, n: int, **params: Any) -> Topology:
    """Build a topology from plain config values (what a YAML ``p2p:`` section holds).

    Parameters
    ----------
    kind : {"ring", "complete", "random_regular", "erdos_renyi", "edges"}
        Which constructor to call.
    n : int
        Number of nodes.
    **params
        The constructor's settings: ``ring``: ``k=1``; ``complete``: none;
        ``random_regular``: ``k`` (required), ``seed=0``; ``erdos_renyi``: ``p`` (required),
        ``seed=0``, ``directed=False``; ``edges``: ``edges`` (required, a list of
        ``[u, v]`` pairs), ``undirected=False``.

    Returns
    -------
    Topology

    Examples
    --------
    >>> topology_from_config("ring", 4, k=1).out_neighbors(0)
    (1, 3)
    >>> topology_from_config("torus", 4)
    Traceback (most recent call last):
        ...
    velocity.errors.ConfigurationError: topology kind must be one of 'ring', 'complete', \
'random_regular', 'erdos_renyi', 'edges'; got 'torus'
    """
    if not isinstance(kind, str) or kind not in _KIND_PARAMS:
        raise ConfigurationError(
            f"topology kind must be one of {', '.join(map(repr, TOPOLOGY_KINDS))}; got {kind!r}"
        )
    accepted = _KIND_PARAMS[kind]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigurationError(
            f"topology {kind!r}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted) or '(none)'}"
        )
    required = {"random_regular": ("k",), "erdos_renyi": ("p",), "edges": ("edges",)}
    missing = [p for p in required.get(kind, ()) if p not in params]
    if missing:
        raise ConfigurationError(
            f"topology {kind!r}: missing parameter(s) {', '.join(map(repr, missing))}"
        )
    _check_size(kind, n, params)
    if kind == "ring":
        return Topology.ring(n, params.get("k", 1))
    if kind == "complete":
        return Topology.complete(n)
    if kind == "random_regular":
        return Topology.random_regular(n, params["k"], params.get("seed", 0))
    if kind == "erdos_renyi":
        return Topology.erdos_renyi(
            n, params["p"], params.get("seed", 0), directed=params.get("directed", False)
        )
    edges = params["edges"]
    if isinstance(edges, (str, bytes)) or not isinstance(edges, Iterable):
        raise ConfigurationError(
            f"topology 'edges': edges must be a list of [u, v] pairs; got {edges!r}"
        )
    return Topology.from_edges(n, edges, undirected=params.get("undirected", False))
