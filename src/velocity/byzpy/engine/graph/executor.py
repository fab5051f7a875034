"""ByzPy's one-operator helpers: :class:`OperatorExecutor` and :func:`run_operator`.

``await run_operator(MultiKrum(f=2, q=5), {"gradients": grads}, pool_config=...)`` builds the
one-node graph (:func:`make_single_operator_graph`), its :class:`NodeScheduler` and, when
``pool_config`` is given, an :class:`ActorPool` it starts and shuts down; it returns the
operator's result. The input keys default to the operator's ``input_key`` (aggregators:
``"gradients"``, pre-aggregators: ``"vectors"``); attacks read several inputs, so they need
``input_keys``. A single custom key (``input_keys=["grads"]``) is renamed to the operator's
``input_key`` on the way in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

from velocity.byzpy.engine.graph.operator import OpContext, Operator
from velocity.byzpy.engine.graph.ops import make_single_operator_graph
from velocity.byzpy.engine.graph.pool import ActorPool, ActorPoolConfig
from velocity.byzpy.engine.graph.scheduler import NodeScheduler
from velocity.byzpy.engine.graph.subtask import SubTask

__all__ = ["OperatorExecutor", "run_operator"]


def _default_keys(operator: Operator) -> tuple[str, ...]:
    if getattr(operator, "uses_honest_grads", None) is not None:  # an Attack
        raise ValueError(
            f"OperatorExecutor: {type(operator).__name__} is an attack, whose inputs depend on "
            "its uses_* flags; give input_keys (e.g. ['honest_grads'])"
        )
    key = getattr(operator, "input_key", None)
    if not isinstance(key, str):
        raise ValueError(
            f"OperatorExecutor: cannot tell the input keys of {type(operator).__name__} (it has "
            "no input_key); give input_keys"
        )
    return (key,)


class _Renamed(Operator):
    """``operator`` reading graph input ``source`` as its ``target`` key (subtasks kept)."""

    def __init__(self, operator: Operator, source: str, target: str) -> None:
        self.inner = operator
        self.source, self.target = source, target
        self.name = operator.name
        self.supports_subtasks = operator.supports_subtasks
        self.max_subtasks_inflight = operator.max_subtasks_inflight

    def _inputs(self, inputs: Mapping[str, object]) -> dict[str, object]:
        out = {k: v for k, v in inputs.items() if k != self.source}
        out[self.target] = inputs[self.source]
        return out

    def compute(self, inputs: Mapping[str, object], *, context: OpContext) -> object:
        return self.inner.compute(self._inputs(inputs), context=context)

    def create_subtasks(
        self, inputs: Mapping[str, object], *, context: OpContext
    ) -> Iterable[SubTask]:
        return self.inner.create_subtasks(self._inputs(inputs), context=context)

    def reduce_subtasks(
        self, partials: Sequence[object], inputs: Mapping[str, object], *, context: OpContext
    ) -> object:
        return self.inner.reduce_subtasks(partials, self._inputs(inputs), context=context)


class OperatorExecutor:
    """Run one operator, on an actor pool it manages when ``pool_config`` is given.

    Parameters
    ----------
    operator : Operator
        An aggregator, pre-aggregator, attack or any :class:`Operator`.
    input_keys : sequence of str, optional
        The graph inputs the operator reads; default: its ``input_key``.
    pool_config : ActorPoolConfig or a sequence of them, optional
        The pool's workers; the pool starts at the first :meth:`run` (or ``async with``)
        and stops at ``__aexit__``. ``None``: the operator runs in this thread.
    node_name : str, optional
        The graph node's name (default: the operator's ``name``).
    """

    def __init__(
        self,
        operator: Operator,
        *,
        input_keys: Sequence[str] | None = None,
        pool_config: ActorPoolConfig | Sequence[ActorPoolConfig] | None = None,
        node_name: str | None = None,
    ) -> None:
        if not isinstance(operator, Operator):
            raise TypeError(
                f"OperatorExecutor: operator must be an Operator; got {type(operator).__name__}"
            )
        if input_keys is None:
            keys = _default_keys(operator)
        elif isinstance(input_keys, str) or not isinstance(input_keys, Sequence):
            raise ValueError(
                f"OperatorExecutor: input_keys must be a sequence of str; got {input_keys!r}"
            )
        else:
            keys = tuple(input_keys)
        if isinstance(pool_config, ActorPoolConfig):
            configs: list[ActorPoolConfig] | None = [pool_config]
        elif pool_config is None:
            configs = None
        else:
            configs = list(pool_config)
            if not configs or not all(isinstance(c, ActorPoolConfig) for c in configs):
                raise ValueError(
                    "OperatorExecutor: pool_config must be an ActorPoolConfig, a non-empty "
                    f"sequence of them, or None; got {pool_config!r}"
                )
        self.operator = operator
        self.input_keys: tuple[str, ...] = keys
        self.node_name = node_name or operator.name
        own_key = getattr(operator, "input_key", None)
        op: Operator = operator
        if len(keys) == 1 and isinstance(own_key, str) and keys[0] != own_key:
            op = _Renamed(operator, keys[0], own_key)
        self._graph = make_single_operator_graph(
            node_name=self.node_name, operator=op, input_keys=keys
        )
        self._configs = configs
        self._pool: ActorPool | None = None
        self._scheduler: NodeScheduler | None = None

    async def __aenter__(self) -> OperatorExecutor:
        await self._ensure_pool()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _ensure_pool(self) -> None:
        if self._configs is not None and self._pool is None:
            self._pool = ActorPool(self._configs)
            await self._pool.start()
            self._scheduler = None

    async def close(self) -> None:
        """Shut the managed pool down (idempotent); a later :meth:`run` starts a new one."""
        if self._pool is not None:
            pool, self._pool, self._scheduler = self._pool, None, None
            await pool.shutdown()

    async def run(self, inputs: Mapping[str, object]) -> object:
        """The operator's result on ``inputs`` (a mapping holding every input key)."""
        await self._ensure_pool()
        if self._scheduler is None:
            self._scheduler = NodeScheduler(self._graph, pool=self._pool)
        results = await self._scheduler.run(inputs)
        return results[self.node_name]


async def run_operator(
    operator: Operator,
    inputs: Mapping[str, object],
    *,
    pool_config: ActorPoolConfig | Sequence[ActorPoolConfig] | None = None,
    input_keys: Sequence[str] | None = None,
) -> object:
    """Run ``operator`` once on ``inputs`` (see :class:`OperatorExecutor`) and clean up.

    Examples
    --------
    >>> import asyncio, torch
    >>> from velocity.byzpy import CoordinateWiseMedian
    >>> grads = [torch.tensor([1.0, 5.0]), torch.tensor([2.0, 6.0]), torch.tensor([9.0, 0.0])]
    >>> asyncio.run(run_operator(CoordinateWiseMedian(), {"gradients": grads}))
    tensor([2., 5.])
    """
    async with OperatorExecutor(
        operator, pool_config=pool_config, input_keys=input_keys
    ) as executor:
        return await executor.run(inputs)
