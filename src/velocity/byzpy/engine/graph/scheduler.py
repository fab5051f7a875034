"""Schedulers: run a :class:`ComputationGraph` with :class:`NodeScheduler`, or one whose
inputs may come from messages with :class:`MessageAwareNodeScheduler`.

:meth:`NodeScheduler.run` starts every node as a task that waits for the nodes it reads,
so independent nodes run concurrently (operators that await subtasks on the pool or
messages overlap; a plain ``compute`` runs in the event loop's thread, as in ByzPy). Each
operator runs as ``op.run(node_inputs, context=OpContext(node_name, metadata), pool=pool)``
with the scheduler's metadata plus, when there is a pool, ``pool_size`` and
``worker_affinities``. The first failing node (in topological order) cancels the others and
its exception is raised.

Notes
-----
:meth:`MessageAwareNodeScheduler.deliver_message` may be called from any thread: its state is
guarded by a lock and a waiting task is woken on its own loop with
``loop.call_soon_threadsafe``. A message is handed to every task waiting for its type at
delivery time; when none is waiting it is cached (FIFO per type) for the next
:meth:`~MessageAwareNodeScheduler.wait_for_message`. ByzPy 0.1.4 also caches a message that it
handed to waiters, so a later wait receives it a second time; here a message is consumed
once (by the waiters present, or by the next waiter).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import defaultdict, deque
from collections.abc import Mapping
from typing import Any

from velocity.byzpy.engine.actor.channels import Waiter
from velocity.byzpy.engine.graph.graph import ComputationGraph, GraphInput, GraphNode
from velocity.byzpy.engine.graph.operator import OpContext, Operator, SubtaskRunner
from velocity.byzpy.engine.graph.pool import ActorPool

__all__ = ["MessageAwareNodeScheduler", "MessageSource", "MessageTriggerOp", "NodeScheduler"]


def _check_timeout(who: str, timeout: float | None) -> None:
    if timeout is None:
        return
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout < 0
    ):
        raise ValueError(f"{who}: timeout must be None or a finite number >= 0; got {timeout!r}")


def _check_message_type(who: str, message_type: str) -> None:
    if not isinstance(message_type, str) or not message_type:
        raise ValueError(f"{who}: message_type must be a non-empty str; got {message_type!r}")


class NodeScheduler:
    """Evaluate a computation graph, dispatching operators' subtasks to an actor pool.

    Parameters
    ----------
    graph : ComputationGraph
        The graph to run.
    pool : ActorPool, optional
        Where operators that support subtasks fan out; ``None`` runs every operator with
        its ``compute`` in this thread.
    metadata : mapping, optional
        Added to every operator's :class:`OpContext` (node name, pool size...).

    Examples
    --------
    >>> import asyncio
    >>> from velocity.byzpy.engine.graph.ops import CallableOp, make_single_operator_graph
    >>> op = CallableOp(lambda gradients: sum(gradients), input_mapping={"gradients": "gradients"})
    >>> graph = make_single_operator_graph(node_name="agg", operator=op, input_keys=["gradients"])
    >>> asyncio.run(NodeScheduler(graph).run({"gradients": [1, 2, 3]}))
    {'agg': 6}
    """

    def __init__(
        self,
        graph: ComputationGraph,
        *,
        pool: ActorPool | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        who = type(self).__name__
        if not isinstance(graph, ComputationGraph):
            raise TypeError(f"{who}: graph must be a ComputationGraph; got {type(graph).__name__}")
        if pool is not None and not isinstance(pool, ActorPool):
            raise TypeError(f"{who}: pool must be an ActorPool or None; got {type(pool).__name__}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(
                f"{who}: metadata must be a mapping or None; got {type(metadata).__name__}"
            )
        self.graph = graph
        self.pool = pool
        self.metadata: dict[str, Any] = dict(metadata or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.graph!r}, pool={self.pool!r})"

    async def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run the graph on ``inputs`` (the graph inputs by name); the outputs by name."""
        self._check_inputs(inputs)
        return await self._execute(inputs)

    def _check_inputs(self, inputs: Mapping[str, Any]) -> None:
        if not isinstance(inputs, Mapping):
            raise TypeError(
                f"{type(self).__name__}.run: inputs must be a mapping; got {type(inputs).__name__}"
            )
        missing = sorted(self.graph.required_inputs.difference(inputs))
        if missing:
            raise ValueError(
                f"{type(self).__name__}.run: missing graph inputs {missing}; the graph needs "
                f"{sorted(self.graph.required_inputs)}"
            )

    def _context(self, node: GraphNode) -> OpContext:
        metadata = dict(self.metadata)
        if self.pool is not None:
            metadata.setdefault("pool_size", self.pool.size)
            metadata.setdefault("worker_affinities", tuple(self.pool.worker_affinities()))
        return OpContext(node_name=node.name, metadata=metadata)

    async def _resolve_input(
        self,
        node: GraphNode,
        key: str,
        ref: object,
        inputs: Mapping[str, Any],
        results: Mapping[str, Any],
    ) -> Any:
        if isinstance(ref, GraphInput):
            return inputs[ref.name]
        if isinstance(ref, str):
            return results[ref]
        raise TypeError(
            f"graph node {node.name!r} input {key!r} is a {type(ref).__name__}; message inputs "
            "need a MessageAwareNodeScheduler"
        )

    async def _run_node(
        self,
        node: GraphNode,
        inputs: Mapping[str, Any],
        tasks: Mapping[str, asyncio.Task[Any]],
    ) -> Any:
        results = {dep: await tasks[dep] for dep in node.node_dependencies()}
        node_inputs = {
            key: await self._resolve_input(node, key, ref, inputs, results)
            for key, ref in node.inputs.items()
        }
        pool: SubtaskRunner | None = self.pool
        return await node.op.run(node_inputs, context=self._context(node), pool=pool)

    async def _execute(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        tasks: dict[str, asyncio.Task[Any]] = {}
        for node in self.graph.nodes_in_order():
            tasks[node.name] = asyncio.ensure_future(self._run_node(node, inputs, tasks))
        try:
            await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
        finally:
            pending = [t for t in tasks.values() if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        for name in self.graph.order:
            task = tasks[name]
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return {name: tasks[name].result() for name in self.graph.outputs}


class MessageSource:
    """A graph input filled by the next delivered message of type ``message_type``.

    Parameters
    ----------
    message_type : str
        The message type to wait for.
    field : str, optional
        Take ``payload[field]`` of a mapping payload instead of the whole payload.
    timeout : float, optional
        Seconds to wait (``None``: forever); :class:`asyncio.TimeoutError` after.
    """

    __slots__ = ("field", "message_type", "timeout")

    def __init__(
        self, message_type: str, field: str | None = None, timeout: float | None = None
    ) -> None:
        _check_message_type("MessageSource", message_type)
        if field is not None and (not isinstance(field, str) or not field):
            raise ValueError(f"MessageSource: field must be None or a non-empty str; got {field!r}")
        _check_timeout("MessageSource", timeout)
        self.message_type = message_type
        self.field = field
        self.timeout = timeout

    def __repr__(self) -> str:
        return (
            f"MessageSource({self.message_type!r}, field={self.field!r}, timeout={self.timeout!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MessageSource):
            return NotImplemented
        return (self.message_type, self.field, self.timeout) == (
            other.message_type,
            other.field,
            other.timeout,
        )

    def __hash__(self) -> int:
        return hash((self.message_type, self.field, self.timeout))

    def extract(self, payload: Any) -> Any:
        """The value this source stands for in a delivered ``payload``."""
        if self.field is None:
            return payload
        if not isinstance(payload, Mapping):
            raise TypeError(
                f"MessageSource({self.message_type!r}): cannot take field {self.field!r} of a "
                f"{type(payload).__name__} payload (a mapping is needed)"
            )
        if self.field not in payload:
            raise KeyError(
                f"MessageSource({self.message_type!r}): field {self.field!r} not in the payload; "
                f"its keys: {sorted(map(str, payload))}"
            )
        return payload[self.field]


class MessageAwareNodeScheduler(NodeScheduler):
    """A :class:`NodeScheduler` whose graph inputs may come from delivered messages.

    Takes :class:`NodeScheduler`'s arguments. Values of ``run``'s ``inputs`` and node inputs
    that are :class:`MessageSource` s are resolved by waiting for a message; operators see
    the scheduler under ``context.metadata["scheduler"]`` (:class:`MessageTriggerOp` uses it).

    Examples
    --------
    >>> import asyncio
    >>> from velocity.byzpy.engine.graph.ops import CallableOp, make_single_operator_graph
    >>> op = CallableOp(lambda x: x * 2, input_mapping={"x": "x"})
    >>> graph = make_single_operator_graph(node_name="d", operator=op, input_keys=["x"])
    >>> s = MessageAwareNodeScheduler(graph)
    >>> s.deliver_message("gradient", {"vec": 21})
    >>> asyncio.run(s.run({"x": MessageSource("gradient", field="vec")}))
    {'d': 42}
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._message_lock = threading.Lock()
        self._message_cache: defaultdict[str, deque[Any]] = defaultdict(deque)
        self._message_waiters: defaultdict[str, list[Waiter[Any]]] = defaultdict(list)

    def deliver_message(self, message_type: str, payload: Any) -> None:
        """Hand ``payload`` to every task waiting for ``message_type``, or cache it.

        Safe to call from any thread.
        """
        _check_message_type("deliver_message", message_type)
        with self._message_lock:
            waiters = self._message_waiters.pop(message_type, [])
            delivered = [w.deliver(payload) for w in waiters]
            if not any(delivered):
                self._message_cache[message_type].append(payload)

    async def wait_for_message(self, message_type: str, *, timeout: float | None = None) -> Any:
        """The next ``message_type`` payload: a cached one at once, else the next delivered.

        Raises
        ------
        asyncio.TimeoutError
            When none arrives within ``timeout`` seconds.
        """
        _check_message_type("wait_for_message", message_type)
        _check_timeout("wait_for_message", timeout)
        with self._message_lock:
            cached = self._message_cache.get(message_type)
            if cached:
                return cached.popleft()
            waiter: Waiter[Any] = Waiter()
            self._message_waiters[message_type].append(waiter)
        try:
            await waiter.wait(timeout)
        finally:
            with self._message_lock:
                if not waiter.delivered:
                    waiting = self._message_waiters.get(message_type, [])
                    if waiter in waiting:
                        waiting.remove(waiter)
                    if not waiting:
                        self._message_waiters.pop(message_type, None)
        if waiter.delivered:
            return waiter.value
        raise TimeoutError(f"no {message_type!r} message within {timeout} s")

    async def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Resolve :class:`MessageSource` values of ``inputs`` (in order), then run the graph."""
        self._check_inputs(inputs)
        resolved: dict[str, Any] = {}
        for key, value in inputs.items():
            if isinstance(value, MessageSource):
                payload = await self.wait_for_message(value.message_type, timeout=value.timeout)
                resolved[key] = value.extract(payload)
            else:
                resolved[key] = value
        return await self._execute(resolved)

    def _context(self, node: GraphNode) -> OpContext:
        base = super()._context(node)
        return OpContext(
            node_name=base.node_name, metadata={**(base.metadata or {}), "scheduler": self}
        )

    async def _resolve_input(
        self,
        node: GraphNode,
        key: str,
        ref: object,
        inputs: Mapping[str, Any],
        results: Mapping[str, Any],
    ) -> Any:
        if isinstance(ref, MessageSource):
            payload = await self.wait_for_message(ref.message_type, timeout=ref.timeout)
            return ref.extract(payload)
        return await super()._resolve_input(node, key, ref, inputs, results)


class MessageTriggerOp(Operator):
    """An operator whose result is the next ``message_type`` message.

    It must run under a :class:`MessageAwareNodeScheduler` (found in
    ``context.metadata["scheduler"]``).

    Parameters
    ----------
    message_type : str
        The message type to wait for.
    timeout : float, optional
        Seconds to wait (``None``: forever).
    """

    def __init__(self, message_type: str, timeout: float | None = None) -> None:
        _check_message_type("MessageTriggerOp", message_type)
        _check_timeout("MessageTriggerOp", timeout)
        self.message_type = message_type
        self.timeout = timeout
        self.name = f"message_trigger_{message_type}"

    async def run(
        self,
        inputs: Mapping[str, object],
        *,
        context: OpContext,
        pool: SubtaskRunner | None = None,
    ) -> object:
        scheduler = (context.metadata or {}).get("scheduler")
        if not isinstance(scheduler, MessageAwareNodeScheduler):
            raise RuntimeError(
                f"MessageTriggerOp({self.message_type!r}) needs a MessageAwareNodeScheduler in "
                f"context.metadata['scheduler']; got {type(scheduler).__name__}"
            )
        return await scheduler.wait_for_message(self.message_type, timeout=self.timeout)
