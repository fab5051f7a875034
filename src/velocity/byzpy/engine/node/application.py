"""Node applications: an actor pool plus named pipelines (computation graphs) run on it.

A :class:`NodeApplication` owns an :class:`ActorPool` and a set of pipelines; each
:meth:`~NodeApplication.run_pipeline` runs one through a :class:`NodeScheduler` on that
pool, with the metadata ``{"node": name, "pipeline": pipeline}`` updated by the
application's, the pipeline's and the call's metadata (in that order).
:class:`HonestNodeApplication` and :class:`ByzantineNodeApplication` reserve pipeline names
(``"aggregate"``, ``"honest_gradient"``; ``"attack"``) and add helpers that return the
pipeline's (first) output.

Notes
-----
The ``*_sync`` helpers run the coroutine with ``asyncio.run`` when no event loop runs in
this thread. Inside a running loop (a coroutine, a notebook cell) blocking on it would
deadlock the loop, so they raise :class:`RuntimeError` asking for the ``await`` form, as
ByzPy 0.1.4 does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from velocity.byzpy.engine.graph.graph import ComputationGraph
from velocity.byzpy.engine.graph.pool import ActorPool, ActorPoolConfig
from velocity.byzpy.engine.graph.scheduler import NodeScheduler

__all__ = ["ByzantineNodeApplication", "HonestNodeApplication", "NodeApplication", "NodePipeline"]

T = TypeVar("T")


@dataclass(frozen=True)
class NodePipeline:
    """A computation graph registered on a node, with its own metadata."""

    graph: ComputationGraph
    metadata: Mapping[str, Any] | None = None


def _run_sync(coro: Coroutine[Any, Any, T], what: str) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise RuntimeError(
        f"{what}() cannot block inside a running event loop (it would deadlock that loop); "
        f"await the async form instead"
    )


def _check_metadata(who: str, metadata: Mapping[str, Any] | None) -> None:
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"{who}: metadata must be a mapping or None; got {type(metadata).__name__}")


class NodeApplication:
    """The application runtime of one node: an actor pool and named pipelines.

    Parameters
    ----------
    name : str
        The node's name (non-empty).
    actor_pool : ActorPool or sequence of ActorPoolConfig
        The pool the pipelines run on, or the configs of a new one.
    metadata : mapping, optional
        Added to every pipeline run's metadata.

    Examples
    --------
    >>> from velocity.byzpy.engine.graph.ops import CallableOp, make_single_operator_graph
    >>> app = NodeApplication(
    ...     name="node0", actor_pool=[ActorPoolConfig(backend="thread", count=2)]
    ... )
    >>> op = CallableOp(lambda x: x + 1, input_mapping={"x": "x"})
    >>> graph = make_single_operator_graph(node_name="inc", operator=op, input_keys=["x"])
    >>> app.register_pipeline("inc", graph)
    >>> app.run_pipeline_sync("inc", {"x": 1})
    {'inc': 2}
    >>> import asyncio; asyncio.run(app.shutdown())
    """

    def __init__(
        self,
        *,
        name: str,
        actor_pool: ActorPool | Sequence[ActorPoolConfig],
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        who = type(self).__name__
        if not isinstance(name, str) or not name:
            raise ValueError(f"{who}.name must be a non-empty str; got {name!r}")
        _check_metadata(who, metadata)
        self.name = name
        self._pool = actor_pool if isinstance(actor_pool, ActorPool) else ActorPool(actor_pool)
        self._pipelines: dict[str, NodePipeline] = {}
        self._base_metadata: dict[str, Any] = dict(metadata or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, pipelines={list(self._pipelines)})"

    @property
    def pool(self) -> ActorPool:
        """The application's actor pool."""
        return self._pool

    def register_pipeline(
        self, name: str, graph: ComputationGraph, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Register ``graph`` under ``name`` (names are unique per application)."""
        who = f"{type(self).__name__}.register_pipeline"
        if not isinstance(name, str) or not name:
            raise ValueError(f"{who}: name must be a non-empty str; got {name!r}")
        if not isinstance(graph, ComputationGraph):
            raise TypeError(f"{who}: graph must be a ComputationGraph; got {type(graph).__name__}")
        _check_metadata(who, metadata)
        if name in self._pipelines:
            raise ValueError(
                f"{who}: pipeline {name!r} is already registered on node {self.name!r}"
            )
        self._pipelines[name] = NodePipeline(graph=graph, metadata=dict(metadata or {}))

    def has_pipeline(self, name: str) -> bool:
        return name in self._pipelines

    def list_pipelines(self) -> Iterable[str]:
        """The registered pipeline names, in registration order."""
        return tuple(self._pipelines)

    def _pipeline(self, name: str) -> NodePipeline:
        try:
            return self._pipelines[name]
        except KeyError:
            raise KeyError(
                f"node {self.name!r} has no pipeline {name!r}; registered: {list(self._pipelines)}"
            ) from None

    async def run_pipeline(
        self, name: str, inputs: Mapping[str, Any], *, metadata: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run pipeline ``name`` on ``inputs`` through a :class:`NodeScheduler` on the pool;
        its outputs by name."""
        pipeline = self._pipeline(name)
        _check_metadata(f"{type(self).__name__}.run_pipeline", metadata)
        merged: dict[str, Any] = {"node": self.name, "pipeline": name}
        merged.update(self._base_metadata)
        merged.update(pipeline.metadata or {})
        merged.update(metadata or {})
        scheduler = NodeScheduler(pipeline.graph, pool=self._pool, metadata=merged)
        return await scheduler.run(inputs)

    def run_pipeline_sync(
        self, name: str, inputs: Mapping[str, Any], *, metadata: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """:meth:`run_pipeline` from synchronous code (see the module's notes)."""
        self._pipeline(name)
        return _run_sync(self.run_pipeline(name, inputs, metadata=metadata), "run_pipeline_sync")

    async def shutdown(self) -> None:
        """Shut the actor pool down."""
        await self._pool.shutdown()

    def _require(self, pipeline: str, what: str) -> None:
        if pipeline not in self._pipelines:
            raise KeyError(
                f"node {self.name!r} has no {what} pipeline: register one under {pipeline!r}; "
                f"registered: {list(self._pipelines)}"
            )

    async def _first_output(
        self,
        pipeline: str,
        what: str,
        inputs: Mapping[str, Any],
        metadata: Mapping[str, Any] | None,
    ) -> Any:
        self._require(pipeline, what)
        result = await self.run_pipeline(pipeline, inputs, metadata=metadata)
        return next(iter(result.values()))


class HonestNodeApplication(NodeApplication):
    """A node application for honest nodes, with ``aggregate`` and ``honest_gradient``
    pipelines.

    Examples
    --------
    >>> from velocity.byzpy.engine.graph.ops import CallableOp, make_single_operator_graph
    >>> app = HonestNodeApplication(
    ...     name="honest_node0", actor_pool=[ActorPoolConfig(backend="thread", count=2)]
    ... )
    >>> mean = CallableOp(
    ...     lambda gradients: sum(gradients) / len(gradients),
    ...     input_mapping={"gradients": "gradients"},
    ... )
    >>> app.register_pipeline(app.AGGREGATION_PIPELINE, make_single_operator_graph(
    ...     node_name="agg", operator=mean, input_keys=["gradients"]))
    >>> app.aggregate_sync(gradients=[1.0, 2.0, 6.0])
    3.0
    >>> import asyncio; asyncio.run(app.shutdown())
    """

    AGGREGATION_PIPELINE: ClassVar[str] = "aggregate"
    GRADIENT_PIPELINE: ClassVar[str] = "honest_gradient"

    async def aggregate(
        self, *, gradients: Sequence[Any], metadata: Mapping[str, Any] | None = None
    ) -> Any:
        """Run the ``aggregate`` pipeline on ``{"gradients": gradients}``; its output."""
        return await self._first_output(
            self.AGGREGATION_PIPELINE, "aggregation", {"gradients": gradients}, metadata
        )

    def aggregate_sync(
        self, *, gradients: Sequence[Any], metadata: Mapping[str, Any] | None = None
    ) -> Any:
        self._require(self.AGGREGATION_PIPELINE, "aggregation")
        return _run_sync(self.aggregate(gradients=gradients, metadata=metadata), "aggregate_sync")

    async def honest_gradient(
        self, inputs: Mapping[str, Any], *, metadata: Mapping[str, Any] | None = None
    ) -> Any:
        """Run the ``honest_gradient`` pipeline on ``inputs``; its output."""
        return await self._first_output(self.GRADIENT_PIPELINE, "honest gradient", inputs, metadata)

    def honest_gradient_sync(
        self, inputs: Mapping[str, Any], *, metadata: Mapping[str, Any] | None = None
    ) -> Any:
        self._require(self.GRADIENT_PIPELINE, "honest gradient")
        return _run_sync(self.honest_gradient(inputs, metadata=metadata), "honest_gradient_sync")


class ByzantineNodeApplication(NodeApplication):
    """A node application for Byzantine nodes, with an ``attack`` pipeline.

    Examples
    --------
    >>> from velocity.byzpy.engine.graph.ops import CallableOp, make_single_operator_graph
    >>> app = ByzantineNodeApplication(
    ...     name="byz_node0", actor_pool=[ActorPoolConfig(backend="thread", count=1)]
    ... )
    >>> flip = CallableOp(
    ...     lambda honest_grads: -sum(honest_grads), input_mapping={"honest_grads": "honest_grads"}
    ... )
    >>> app.register_pipeline(app.ATTACK_PIPELINE, make_single_operator_graph(
    ...     node_name="attack", operator=flip, input_keys=["honest_grads"]))
    >>> app.run_attack_sync(inputs={"honest_grads": [1, 2]})
    -3
    >>> import asyncio; asyncio.run(app.shutdown())
    """

    ATTACK_PIPELINE: ClassVar[str] = "attack"

    async def run_attack(
        self, *, inputs: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> Any:
        """Run the ``attack`` pipeline on ``inputs``; its output."""
        return await self._first_output(self.ATTACK_PIPELINE, "attack", inputs, metadata)

    def run_attack_sync(
        self, *, inputs: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> Any:
        self._require(self.ATTACK_PIPELINE, "attack")
        return _run_sync(self.run_attack(inputs=inputs, metadata=metadata), "run_attack_sync")
