"""Operators: the units a :class:`ComputationGraph` schedules.

Aggregators, pre-aggregators and attacks of :mod:`velocity.byzpy` are operators: each reads
its input under ``input_key`` from the graph's inputs and computes with :meth:`compute`.
An operator that sets ``supports_subtasks = True`` may also split its work into
:class:`SubTask` s (:meth:`create_subtasks`) that an :class:`ActorPool` fans out over its
workers, and combine the partial results with :meth:`reduce_subtasks`; with no pool, or a
pool of one worker, :meth:`run` simply calls :meth:`compute`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from velocity.byzpy.engine.graph.subtask import SubTask

__all__ = ["OpContext", "Operator", "SubtaskRunner"]


class SubtaskRunner(Protocol):
    """What :meth:`Operator.run` needs of a pool: its size and a way to run one subtask."""

    @property
    def size(self) -> int: ...

    async def run_subtask(self, subtask: SubTask) -> object: ...


@dataclass(frozen=True)
class OpContext:
    """Runtime metadata of one operator invocation: the graph node's name and the metadata
    the scheduler was given (node name, pool size, ``worker_affinities``...)."""

    node_name: str
    metadata: Mapping[str, object] | None = None


class Operator:
    """Base class of everything a computation graph can run.

    Class attributes
    ----------------
    name : str
        The operator's name (``"aggregator"``, ``"pre_aggregator"``, ``"attack"``...).
    supports_subtasks : bool
        Whether :meth:`create_subtasks` / :meth:`reduce_subtasks` are implemented.
    max_subtasks_inflight : int or None
        At most this many subtasks in flight (``None``: 8 per worker).
    """

    name: str = "operator"
    supports_subtasks: bool = False
    max_subtasks_inflight: int | None = None

    def compute(self, inputs: Mapping[str, object], *, context: OpContext) -> object:
        """Compute the operator's output from the graph ``inputs``; subclasses override."""
        raise NotImplementedError(f"operator {self.name!r} does not implement compute()")

    def create_subtasks(
        self, inputs: Mapping[str, object], *, context: OpContext
    ) -> Iterable[SubTask]:
        """Split the work into subtasks (only called when ``supports_subtasks``)."""
        return ()

    def reduce_subtasks(
        self, partials: Sequence[object], inputs: Mapping[str, object], *, context: OpContext
    ) -> object:
        """Combine the subtasks' results, in the order :meth:`create_subtasks` yielded them."""
        raise NotImplementedError(f"operator {self.name!r} does not implement reduce_subtasks()")

    async def run(
        self,
        inputs: Mapping[str, object],
        *,
        context: OpContext,
        pool: SubtaskRunner | None = None,
    ) -> object:
        """Run the operator: fanned out over ``pool`` when it has several workers and the
        operator supports subtasks, else :meth:`compute` in this thread."""
        if self.supports_subtasks and pool is not None and pool.size > 1:
            subtasks = list(self.create_subtasks(inputs, context=context))
            if subtasks:
                affinities = (context.metadata or {}).get("worker_affinities")
                if isinstance(affinities, Sequence) and not isinstance(affinities, str):
                    subtasks = list(_with_affinities(subtasks, [str(a) for a in affinities]))
                partials = await _run_windowed(pool, subtasks, self.max_subtasks_inflight)
                return await _maybe_await(self.reduce_subtasks(partials, inputs, context=context))
        return await _maybe_await(self.compute(inputs, context=context))


async def _maybe_await(value: object) -> object:
    if inspect.isawaitable(value):
        return await value
    return value


def _with_affinities(subtasks: Sequence[SubTask], affinities: Sequence[str]) -> Iterator[SubTask]:
    for k, task in enumerate(subtasks):
        if task.affinity is None and affinities:
            yield dataclasses.replace(task, affinity=affinities[k % len(affinities)])
        else:
            yield task


async def _run_windowed(
    pool: SubtaskRunner, subtasks: Sequence[SubTask], limit: int | None
) -> list[object]:
    """Run ``subtasks`` on ``pool`` with at most ``limit`` in flight; results in order."""
    window = max(1, limit if limit else pool.size * 8)
    semaphore = asyncio.Semaphore(window)

    async def one(task: SubTask) -> object:
        async with semaphore:
            return await pool.run_subtask(task)

    return list(await asyncio.gather(*(one(task) for task in subtasks)))
