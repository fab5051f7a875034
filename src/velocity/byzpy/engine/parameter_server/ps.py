"""ByzPy's asynchronous parameter server, on VelocityFL's round engine.

``await ps.round()`` does what ByzPy's does: every honest node computes its gradient on its
next minibatch (concurrently, one coroutine per actor), every Byzantine node crafts its
vector from the round's honest gradients, the optional pre-aggregator and the aggregator
combine them, and the aggregate is sent back to every honest node (and to the Byzantine
ones with ``update_byzantines=True``), which apply it to their own models. It returns the
aggregate.

There is no second round loop: the round is one :meth:`velocity.server.RoundEngine.run_round`
built by the one builder. Its clients are the nodes (honest first, then Byzantine), its
provider hands each honest node's gradient to the engine as that client's update (checked:
a flat, finite-or-not float vector of the common length ``d``), each Byzantine node is a
crafted-row adversary of the engine's adversary stage (which gives it the honest rows), and
the strategy is ``Pipeline(<pre_aggregator>, <aggregator>, ServerSGD(lr=1))`` whose two
first stages call the ByzPy-style objects — through a :class:`NodeScheduler` on
``actor_pool`` when one is given, so aggregators with subtasks fan out over it. The engine's
``global_params`` are therefore the running sum of the aggregates (the server holds no
model: the nodes do).

Differences from ByzPy 0.1.4 (see docs/byzpy.md):

- gradients are laid out in node order (honest nodes in the order given, then Byzantine),
  not in order of completion, so a round is deterministic whatever the thread timing;
- rows travel as float32 (the engine's stack); the aggregate is returned, and applied, in
  the dtype, device and shape of the first honest gradient;
- every gradient is checked: a non-tensor, a wrong length or an empty vector raises
  :class:`velocity.errors.ValidationError` naming the node;
- shared-memory tensor handles are not used (thread actors share this process's memory).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import torch
from torch import Tensor

from velocity._validation import Boolean, Constraint, Integer, check_value
from velocity.attacks import AttackContext, AttackSpec, UpdateAttack
from velocity.byzpy.engine.graph.operator import Operator
from velocity.byzpy.engine.graph.ops import CallableOp, make_single_operator_graph
from velocity.byzpy.engine.graph.pool import ActorPool
from velocity.byzpy.engine.graph.scheduler import NodeScheduler
from velocity.byzpy.engine.node.actors import (
    ByzantineNodeActor,
    HonestNodeActor,
    NodeActor,
    call_node,
    check_nodes,
    node_vector,
)
from velocity.byzpy.engine.node.base import ByzantineNode, HonestNode
from velocity.errors import ConfigurationError, ProtocolError, ValidationError
from velocity.server.builder import build_engine
from velocity.server.engine import RoundEngine
from velocity.sim.population import ClientPopulation
from velocity.sim.provider import ClientWork, SimulatedClients
from velocity.sim.settings import SimulationSettings
from velocity.strategies import Aggregator as _Aggregator
from velocity.strategies import Pipeline, ServerSGD
from velocity.strategies import PreAggregator as _PreAggregator
from velocity.types import ClientUpdate, ParamSpec

__all__ = ["ParameterServer"]

T = TypeVar("T")
HonestLike = HonestNodeActor | HonestNode
ByzantineLike = ByzantineNodeActor | ByzantineNode


class _Bridge:
    """Runs coroutines on the server's event loop from the engine's worker thread.

    ``round()`` awaits the engine's round in a worker thread, so the loop is free to run
    the actors' calls and the actor pool's subtasks that the engine's stages ask for.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    def run(self, coro: Coroutine[object, object, T]) -> T:
        loop = self.loop
        if loop is None:
            coro.close()
            raise RuntimeError("ParameterServer: no round is running")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


def _vector(value: object, who: str, d: int | None) -> Tensor:
    """:func:`node_vector`, floating point, as the engine's float32 CPU row."""
    vec = node_vector(value, who, d)
    if not vec.is_floating_point():
        raise ValidationError(f"{who} returned a {vec.dtype} tensor; expected floating point")
    return vec.to("cpu", torch.float32)


class _Nodes(SimulatedClients):
    """The nodes as the engine's clients: honest client ``i`` answers with node ``i``'s
    gradient, gathered by :meth:`ParameterServer.round` before the engine's round."""

    name: ClassVar[str] = "byzpy_parameter_server"

    def __init__(self, n: int) -> None:
        super().__init__(ClientPopulation(torch.arange(n), torch.arange(n + 1)), seed=0)
        self.gradients: list[Tensor] = []

    def train(self, work: ClientWork) -> ClientUpdate:
        task = work.task
        work.out.copy_(self.gradients[work.index])
        return ClientUpdate(task.client_id, 1, work.out)


@dataclass(frozen=True, eq=False)
class _NodeAttack(UpdateAttack):
    """Byzantine node ``node`` as a crafted-row adversary: its vector, from the honest rows."""

    name: ClassVar[str] = "byzantine_node"
    needs_honest: ClassVar[bool] = True
    node: int = 0
    _constraints: ClassVar[Mapping[str, Constraint]] = {"node": Integer(low=0)}
    server: ParameterServer | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_value(type(self).__name__, "node", self.node, Integer(low=0))

    def describe(self) -> str:
        assert self.server is not None
        return f"{type(self.server._byzantine[self.node]).__name__}(node={self.node})"

    def _craft(self, ctx: AttackContext) -> Tensor:
        assert self.server is not None
        return self.server._crafted(self.node, ctx.honest).reshape(1, -1)


@dataclass(frozen=True, eq=False)
class _OperatorPre(_PreAggregator):
    """A ByzPy-style pre-aggregator (``pre_aggregate(list) -> list``) as an engine stage."""

    op: object = None
    _renumbers: ClassVar[bool] = True
    _mixes: ClassVar[bool] = True

    def __post_init__(self) -> None:
        pass

    def apply(
        self,
        updates: Tensor,
        weights: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        d = updates.shape[1]
        out = self.op.pre_aggregate(list(updates.unbind(0)))  # type: ignore[attr-defined]
        if isinstance(out, Tensor | str | bytes) or not isinstance(out, Sequence) or not out:
            raise ValidationError(
                f"pre_aggregator.pre_aggregate() returned {_shown(out)}; expected a non-empty "
                f"list of vectors of {d} entries"
            )
        rows = [_output(v, "pre_aggregator.pre_aggregate()", d) for v in out]
        return torch.stack(rows), None


@dataclass(frozen=True, eq=False)
class _OperatorAggregator(_Aggregator):
    """A ByzPy-style aggregator (``aggregate(list) -> vector``) as an engine stage; through
    a :class:`NodeScheduler` on the actor pool when one is given."""

    op: object = None
    scheduler: NodeScheduler | None = field(default=None, compare=False)
    bridge: _Bridge | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        pass

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        rows = list(updates.unbind(0))
        if self.scheduler is not None and self.bridge is not None:
            outputs = self.bridge.run(self.scheduler.run({"gradients": rows}))
            result = outputs["agg"]
        else:
            result = self.op.aggregate(rows)  # type: ignore[attr-defined]
        return _output(result, "aggregator.aggregate()", updates.shape[1])


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _output(value: object, who: str, d: int) -> Tensor:
    """A (pre-)aggregator's vector as a float32 ``(d,)`` row, or ValidationError naming it."""
    try:
        vec = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValidationError(f"{who} returned {_shown(value)}; expected a vector") from None
    if vec.numel() != d or not (vec.is_floating_point() or vec.dtype == torch.int64):
        raise ValidationError(
            f"{who} returned a {vec.dtype} tensor of shape {tuple(vec.shape)}; expected a "
            f"floating vector of {d} entries (the gradients' length)"
        )
    return vec.detach().to("cpu", torch.float32).reshape(-1)


class ParameterServer:
    """ByzPy's parameter server: ``await round()`` returns the round's aggregate.

    Parameters
    ----------
    honest_nodes : list of HonestNodeActor (or HonestNode)
        At least one. Plain node objects are called in worker threads.
    byzantine_nodes : list of ByzantineNodeActor (or ByzantineNode)
        Possibly empty.
    aggregator : velocity.byzpy.aggregators.Aggregator
        Any object with ByzPy's ``aggregate(gradients) -> vector`` (a custom subclass too).
    pre_aggregator : velocity.byzpy.pre_aggregators.PreAggregator, optional
        Any object with ``pre_aggregate(vectors) -> list``.
    update_byzantines : bool
        Whether Byzantine nodes receive the aggregate too (default False).
    actor_pool : ActorPool, optional
        Run the aggregator through a :class:`NodeScheduler` on this pool (its subtasks fan
        out over the pool's workers); by default it runs in the engine's thread.
    scheduler_metadata : dict, optional
        Metadata for that scheduler (``worker_affinities``...).

    Examples
    --------
    See docs/byzpy.md and tests/byzpy/test_parameter_server.py: ::

        ps = ParameterServer(honest_nodes=honest_actors, byzantine_nodes=byz_actors,
                             aggregator=MultiKrum(f=2, q=5))
        for _ in range(100):
            await ps.round()
        await ps.shutdown()
    """

    def __init__(
        self,
        honest_nodes: Sequence[HonestLike],
        byzantine_nodes: Sequence[ByzantineLike] | None,
        aggregator: object,
        pre_aggregator: object | None = None,
        update_byzantines: bool = False,
        *,
        actor_pool: ActorPool | None = None,
        scheduler_metadata: Mapping[str, object] | None = None,
    ) -> None:
        who = "ParameterServer"
        self._honest = check_nodes(honest_nodes, HonestNodeActor, who, "honest_nodes")
        self._byzantine = check_nodes(
            byzantine_nodes or [], ByzantineNodeActor, who, "byzantine_nodes"
        )
        if not self._honest:
            raise ConfigurationError(f"{who} needs at least one honest node; honest_nodes is empty")
        if not callable(getattr(aggregator, "aggregate", None)):
            raise ConfigurationError(
                f"{who}.aggregator must have an aggregate(gradients) method (a "
                f"velocity.byzpy aggregator); got {aggregator!r}"
            )
        if pre_aggregator is not None and not callable(
            getattr(pre_aggregator, "pre_aggregate", None)
        ):
            raise ConfigurationError(
                f"{who}.pre_aggregator must have a pre_aggregate(vectors) method (a "
                f"velocity.byzpy pre-aggregator) or be None; got {pre_aggregator!r}"
            )
        if actor_pool is not None and not isinstance(actor_pool, ActorPool):
            raise ConfigurationError(
                f"{who}.actor_pool must be an ActorPool or None; got {actor_pool!r}"
            )
        self.update_byzantines: bool = check_value(
            who, "update_byzantines", update_byzantines, Boolean()
        )
        self.aggregator = aggregator
        self.pre_aggregator = pre_aggregator
        self.actor_pool = actor_pool
        self._bridge = _Bridge()
        self._scheduler: NodeScheduler | None = None
        if actor_pool is not None:
            # an Operator (velocity.byzpy aggregators are) fans out its subtasks on the pool;
            # a duck-typed aggregator runs as one call on a pool worker
            op = (
                aggregator
                if isinstance(aggregator, Operator)
                else CallableOp(
                    aggregator.aggregate,  # type: ignore[attr-defined]
                    input_mapping={"gradients": "gradients"},
                    name="aggregator",
                )
            )
            graph = make_single_operator_graph(
                node_name="agg", operator=op, input_keys=("gradients",)
            )
            self._scheduler = NodeScheduler(graph, pool=actor_pool, metadata=scheduler_metadata)
        self._provider = _Nodes(len(self._honest) + len(self._byzantine))
        self._engine: RoundEngine | None = None
        self._like: Tensor | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="velocity-ps")
        self._closed = False
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return (
            f"ParameterServer(honest={len(self._honest)}, byzantine={len(self._byzantine)}, "
            f"aggregator={self.aggregator!r}, round={self.round_count})"
        )

    # ------------------------------------------------------------------ the round

    async def round(self) -> Tensor:
        """One round; returns the aggregate (shape, dtype and device of the first honest
        node's gradient), after every node that receives it has applied it.

        Rounds run one at a time: a second ``round()`` awaited concurrently waits for the
        first. A round that is cancelled still finishes (the engine's round and the nodes'
        updates stay in step) before the cancellation propagates. If a node, the
        pre-aggregator or the aggregator raises, the error propagates and the engine does
        not count the round; the honest nodes have drawn their minibatch, as in ByzPy.
        """
        async with self._lock:
            if self._closed:
                raise ProtocolError("ParameterServer.round: the server has been shut down")
            task = asyncio.ensure_future(self._round())
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():
                    await asyncio.wait([task])
                raise

    async def _round(self) -> Tensor:
        raw = await asyncio.gather(
            *(call_node(node, "honest_gradient_for_next_batch") for node in self._honest)
        )
        d = self._engine.spec.d if self._engine is not None else None
        if d is None and isinstance(raw[0], Tensor) and raw[0].numel() > 0:
            d = raw[0].numel()
        gradients = [
            _vector(g, f"honest_nodes[{i}].honest_gradient_for_next_batch()", d)
            for i, g in enumerate(raw)
        ]
        first = raw[0]
        assert isinstance(first, Tensor)
        self._like = first
        if self._engine is None:
            self._engine = self._build(gradients[0].numel())
        self._provider.gradients = gradients
        loop = asyncio.get_running_loop()
        self._bridge.loop = loop
        try:
            await loop.run_in_executor(self._executor, self._engine.run_round)
        finally:
            self._bridge.loop = None
        aggregate = self._engine.last_aggregate
        assert aggregate is not None
        g = aggregate.clone().reshape(first.shape).to(device=first.device, dtype=first.dtype)
        receivers: list[object] = [*self._honest]
        if self.update_byzantines:
            receivers += self._byzantine
        await asyncio.gather(*(call_node(node, "apply_server_gradient", g) for node in receivers))
        return g

    async def shutdown(self) -> None:
        """Close every node actor (idempotent); :meth:`round` then raises ProtocolError."""
        async with self._lock:  # after the round in progress, if any
            if self._closed:
                return
            self._closed = True
            await asyncio.gather(
                *(n.close() for n in (*self._honest, *self._byzantine) if isinstance(n, NodeActor))
            )
            self._executor.shutdown(wait=False)

    # ------------------------------------------------------------------ wiring

    def _build(self, d: int) -> RoundEngine:
        h, b = len(self._honest), len(self._byzantine)
        spec = ParamSpec.from_sizes({"gradient": d})
        stages: list[_Aggregator | _PreAggregator] = []
        if self.pre_aggregator is not None:
            stages.append(_OperatorPre(op=self.pre_aggregator))
        stages.append(
            _OperatorAggregator(op=self.aggregator, scheduler=self._scheduler, bridge=self._bridge)
        )
        attacks = [AttackSpec(_NodeAttack(node=j, server=self), clients=(h + j,)) for j in range(b)]
        return build_engine(
            base=self._provider,
            spec=spec,
            init_params=torch.zeros(d),
            strategy=Pipeline(*stages, ServerSGD(lr=1.0)),
            settings=SimulationSettings(seed=0, client_fraction=1.0, min_clients=h + b),
            attacks=attacks,
        )

    def _crafted(self, j: int, honest: Tensor) -> Tensor:
        """Byzantine node ``j``'s vector for this round (called by the engine's adversary)."""
        like = self._like
        assert like is not None
        grads = tuple(row.reshape(like.shape).to(like.dtype) for row in honest.unbind(0))
        raw = self._bridge.run(
            call_node(self._byzantine[j], "byzantine_gradient_for_next_batch", grads)
        )
        return _vector(
            raw, f"byzantine_nodes[{j}].byzantine_gradient_for_next_batch()", like.numel()
        )

    # ------------------------------------------------------------------ state

    @property
    def engine(self) -> RoundEngine | None:
        """The round engine (built at the first round, when the gradients' length is known)."""
        return self._engine

    @property
    def round_count(self) -> int:
        return 0 if self._engine is None else self._engine.round

    @property
    def history(self) -> list[dict[str, object]]:
        """One ``RoundResult.to_dict()`` per round (node ``i`` is ``client-<i>``)."""
        return [] if self._engine is None else [r.to_dict() for r in self._engine.results]

    @property
    def closed(self) -> bool:
        return self._closed
