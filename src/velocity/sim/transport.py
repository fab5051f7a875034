"""Providers that wrap another: every byte over a loopback wire, or results out of order.

- :class:`LoopbackClients` passes every task and every update through bytes (a JSON header
  plus safetensors, :mod:`velocity.types` framing), as a network transport would: the
  clients see only decoded tasks (no shared memory, no ``out`` row), and the engine receives
  encoded payloads that its admission step decodes with checked shapes and verifies.
- :class:`OutOfOrderClients` executes tasks in a random order and delivers results at random
  virtual times (each on-time result stays before its deadline), so the engine's trigger
  policy and stacking are exercised against arbitrary arrival orders.

Both give bit-identical models to the provider they wrap: results depend only on the tasks.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import ClassVar

import numpy as np

from velocity._random import numpy_rng
from velocity.types import (
    ClientFailure,
    ClientTask,
    Result,
    UpdateProvider,
    decode_task,
    encode_delta,
    encode_task,
)

__all__ = ["LoopbackClients", "OutOfOrderClients"]


class LoopbackClients(UpdateProvider):
    """``inner``'s clients behind a byte-level loopback (see the module docstring).

    ``bytes_sent`` and ``bytes_received`` count the frames that crossed the wire.
    """

    name: ClassVar[str] = "loopback"

    def __init__(self, inner: UpdateProvider, *, max_bytes: int | None = None) -> None:
        self.inner = inner
        self.max_bytes = max_bytes
        self.bytes_sent = 0
        self.bytes_received = 0

    def submit(self, tasks: Sequence[ClientTask]) -> None:
        received = []
        for task in tasks:
            frame = encode_task(task)
            self.bytes_sent += len(frame)
            received.append(decode_task(frame, d=task.params.shape[0], max_bytes=self.max_bytes))
        self.inner.submit(received)

    def collect(
        self, *, until: float | None = None, max_results: int | None = None
    ) -> list[Result]:
        out: list[Result] = []
        for result in self.inner.collect(until=until, max_results=max_results):
            if isinstance(result, ClientFailure):
                out.append(result)
                continue
            # the sending side of the wire attaches the digest the engine verifies
            wired = encode_delta(result if result.digest is not None else result.with_digest())
            assert wired.payload is not None
            self.bytes_received += len(wired.payload)
            out.append(wired)
        return out

    def cancel(self, client_ids: Collection[str]) -> None:
        self.inner.cancel(client_ids)

    def close(self) -> None:
        self.inner.close()


class OutOfOrderClients(UpdateProvider):
    """``inner``'s clients executed in a random order, delivered at random virtual times.

    Tasks are handed to ``inner`` in a random order (simulated providers execute them in
    submission order), and every update gets an arrival time drawn uniformly between its
    own arrival and ``spread_s`` later, capped at its task's deadline, so the engine sees
    the results in a random order. Draws come from ``(seed, round, "out-of-order")``.
    """

    name: ClassVar[str] = "out_of_order"

    def __init__(self, inner: UpdateProvider, *, seed: int = 0, spread_s: float = 1.0) -> None:
        self.inner = inner
        self.seed = int(seed)
        self.spread_s = float(spread_s)
        self._tasks: dict[str, ClientTask] = {}
        self._held: list[ClientTask] = []
        self._done: list[Result] = []

    def submit(self, tasks: Sequence[ClientTask]) -> None:
        for task in tasks:
            self._tasks[task.client_id] = task
        self._held.extend(tasks)

    def collect(
        self, *, until: float | None = None, max_results: int | None = None
    ) -> list[Result]:
        held, self._held = self._held, []
        rng = numpy_rng(self.seed, held[0].round if held else 0, "out-of-order")
        if held:
            # The inner provider executes tasks in the order they were submitted.
            self.inner.submit([held[i] for i in rng.permutation(len(held)).tolist()])
        self._done.extend(self._delay(r, rng) for r in self.inner.collect(until=until))
        self._done.sort(key=lambda r: r.arrived_at)
        ready = [r for r in self._done if until is None or r.arrived_at <= until]
        take = len(ready) if max_results is None else max(0, max_results)
        out = ready[:take]
        taken = {id(r) for r in out}
        self._done = [r for r in self._done if id(r) not in taken]
        return out

    def _delay(self, result: Result, rng: np.random.Generator) -> Result:
        if isinstance(result, ClientFailure):
            return result
        task = self._tasks.get(result.client_id)
        jitter = float(rng.uniform(0.0, self.spread_s))
        arrival = result.arrived_at + jitter
        if task is not None and task.deadline is not None:
            arrival = min(arrival, max(result.arrived_at, task.deadline))
        return replace(result, arrived_at=arrival)

    def cancel(self, client_ids: Collection[str]) -> None:
        gone = set(client_ids)
        self._held = [t for t in self._held if t.client_id not in gone]
        self._done = [r for r in self._done if r.client_id not in gone]
        self.inner.cancel(client_ids)

    def close(self) -> None:
        self.inner.close()
