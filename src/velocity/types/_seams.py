"""The seams of the round engine: the provider interface, the clock, stages and client state.

They live in the bottom layer because both sides implement or use them: the engine
(:mod:`velocity.server`) drives them; simulated and remote clients (:mod:`velocity.sim`,
``velocity.net``), client stages (clipping, worker momentum, DP, codecs) and server stages
(strategies, adversaries, central DP) implement them.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeAlias, TypeVar

import torch
from torch import Tensor

from velocity._random import Key, torch_generator
from velocity.errors import ValidationError
from velocity.types._messages import ClientFailure, ClientTask, ClientUpdate
from velocity.types._params import ParamSpec

__all__ = [
    "ClientSampler",
    "ClientStateStore",
    "Clock",
    "Result",
    "Stage",
    "StageContext",
    "StageState",
    "UpdateEncoder",
    "UpdateProvider",
    "VirtualClock",
    "WallClock",
]

Result: TypeAlias = ClientUpdate | ClientFailure
"""What a provider hands back for one task."""

StageState: TypeAlias = dict[str, Tensor]
"""A stage's state: named tensors, checkpointed as safetensors (scalars as 0-d tensors)."""

X = TypeVar("X")


# ---------------------------------------------------------------------- clock


class Clock(ABC):
    """Where the engine reads the time: virtual in simulation, wall-clock in deployment."""

    @abstractmethod
    def now(self) -> float:
        """Seconds since the run started."""

    @abstractmethod
    def advance_to(self, t: float) -> None:
        """Move the clock to ``t`` (virtual clocks jump; a wall clock lets time pass)."""

    def restore(self, t: float) -> None:
        """Set the clock to a checkpoint's time (virtual clocks only; default: advance)."""
        self.advance_to(t)


class VirtualClock(Clock):
    """Simulated time: it moves only when the engine moves it, never backwards.

    >>> clock = VirtualClock()
    >>> clock.advance_to(2.5); clock.advance_to(1.0); clock.now()
    2.5
    """

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)

    def now(self) -> float:
        return self._t

    def advance_to(self, t: float) -> None:
        self._t = max(self._t, float(t))

    def restore(self, t: float) -> None:
        self._t = float(t)


class WallClock(Clock):
    """Real time since construction (``time.monotonic``); ``advance_to`` is a no-op."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._start

    def advance_to(self, t: float) -> None:
        return None


# ---------------------------------------------------------------------- provider


class UpdateProvider(ABC):
    """Where clients live: the engine sends :class:`ClientTask`s and collects results.

    The engine calls :meth:`submit` with tasks and then :meth:`collect` until it has what
    its trigger policy needs; it never knows whether the clients are simulated in this
    process, Ray actors, or remote nodes.

    Contract
    --------
    - :meth:`collect` returns results (a :class:`ClientUpdate` or a :class:`ClientFailure`
      per task) in arrival order: ``arrived_at`` never decreases within and across calls.
      With ``until``, only those that arrived by that clock time; with ``max_results``, at
      most that many; with neither, every outstanding task's result.
    - An in-process provider may write a delta into ``task.out`` and return it as the
      update's ``delta`` (no copy); every other provider returns its own tensor (or an
      encoded ``payload``) and the engine copies it into the round's stack.
    - Every update carries its digest (:meth:`ClientUpdate.with_digest`), computed where the
      client computed the delta; the engine rejects updates whose digest does not match.
      The one exception is an update whose ``delta`` *is* its task's ``out`` row (the same
      tensor object): an in-process client wrote it straight into the engine's own memory,
      where a digest could detect nothing, so it may come without one. A digest that is
      attached is always verified.
    - Results are deterministic functions of the tasks (and the run seed), whatever the
      order in which a provider executes them.
    """

    name: ClassVar[str] = "custom"

    @abstractmethod
    def submit(self, tasks: Sequence[ClientTask]) -> None:
        """Dispatch ``tasks`` (clients start training)."""

    @abstractmethod
    def collect(
        self, *, until: float | None = None, max_results: int | None = None
    ) -> list[Result]:
        """Results that have arrived (see the class contract)."""

    def cancel(self, client_ids: Collection[str]) -> None:  # noqa: B027 (optional hook)
        """Forget outstanding tasks of these clients (the engine stopped waiting)."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release resources (workers, connections). Default: nothing to release."""


class ClientSampler(Protocol):
    """Which clients a round asks: ``sample(round_)`` returns their ids, in task order."""

    def sample(self, round_: int) -> Sequence[str]: ...


# ---------------------------------------------------------------------- stages


@dataclass(frozen=True, eq=False)
class StageContext:
    """What a stage may know about the moment it runs, and its source of randomness.

    ``key`` identifies the client in random draws (the population index in simulation, the
    client id elsewhere); it is ``None`` for server stages. :meth:`generator` derives a
    generator from ``(seed, round, [key], purpose, *extra)`` — never global state.
    """

    seed: int
    round: int
    version: int
    spec: ParamSpec
    params: Tensor
    client_id: str | None = None
    key: Key | None = None

    def generator(self, purpose: str, *extra: Key) -> torch.Generator:
        """``torch_generator(seed, round, [key], purpose, *extra)``."""
        keys: tuple[Key, ...] = (self.round,)
        if self.key is not None:
            keys += (self.key,)
        return torch_generator(self.seed, *keys, purpose, *extra)

    def for_client(self, client_id: str, key: Key) -> StageContext:
        """The same moment, seen by one client."""
        return StageContext(
            self.seed, self.round, self.version, self.spec, self.params, client_id, key
        )


class Stage(Protocol[X]):
    """One transformation of a round, with state in and state out (optax's shape).

    Client stages act on one update (``X`` is a ``(d,)`` row), server stages on the round's
    :class:`velocity.strategies.RoundBatch` (the stacked ``(n, d)`` rows and, after
    aggregation, the ``(d,)`` aggregate). ``init`` gives the initial state; ``apply``
    returns the new value, the new state and metrics for the round result. State is
    checkpointed; randomness comes from ``ctx.generator(...)``.
    """

    @property
    def name(self) -> str:
        """A stable name: the key of the stage's state and metrics."""
        ...

    def init(self, spec: ParamSpec) -> StageState: ...

    def apply(
        self, x: X, state: StageState, ctx: StageContext
    ) -> tuple[X, StageState, Mapping[str, Any]]: ...


class UpdateEncoder(Protocol):
    """The last client stage: a row becomes the bytes that travel (a compression codec).

    ``encode(row, state, ctx)`` returns ``(payload, decoded, state)``: the bytes sent, the row
    the server will decode from them (the client keeps it, e.g. for error feedback) and the
    client's new state (under :attr:`name` in the :class:`ClientStateStore`). ``decode`` is
    the server side, registered with the engine under :attr:`encoding`; it treats the bytes
    as hostile. ``encode`` may write into ``row``.
    """

    @property
    def name(self) -> str: ...

    @property
    def encoding(self) -> str: ...

    @property
    def state_capacity(self) -> int | None:
        """Most clients whose state is kept (least recently updated forget); ``None``: all."""
        ...

    def encode(
        self, row: Tensor, state: StageState, ctx: StageContext
    ) -> tuple[bytes, Tensor, StageState]: ...

    def decode(self, payload: bytes, spec: ParamSpec) -> Tensor: ...


# ---------------------------------------------------------------------- client state


class ClientStateStore:
    """Per-client state (worker momentum, error-feedback residuals, last version seen).

    Keyed by client id, holding only clients that have participated (so 100,000 registered
    clients cost nothing until they train), and part of the engine's checkpoint.

    >>> store = ClientStateStore()
    >>> store.put("client-1", "momentum", {"m": torch.ones(2)})
    >>> store.get("client-1", "momentum")["m"].tolist(), store.get("client-2", "momentum")
    ([1.0, 1.0], {})
    >>> tensors, meta = store.state()
    >>> other = ClientStateStore(); other.restore(tensors, meta); len(other)
    1
    """

    def __init__(self) -> None:
        self._data: dict[str, dict[str, StageState]] = {}
        self.last_version: dict[str, int] = {}
        self._stamp: dict[tuple[str, str], int] = {}
        self._counts: dict[str, int] = {}
        self._clock = 0

    def __len__(self) -> int:
        return len(self._data.keys() | self.last_version.keys())

    def get(self, client_id: str, name: str) -> StageState:
        """The state ``name`` of ``client_id`` (a new empty dict when there is none)."""
        return dict(self._data.get(client_id, {}).get(name, {}))

    def put(self, client_id: str, name: str, state: Mapping[str, Tensor]) -> None:
        self._data.setdefault(client_id, {})[name] = dict(state)
        self._clock += 1
        if (client_id, name) not in self._stamp:
            self._counts[name] = self._counts.get(name, 0) + 1
        self._stamp[(client_id, name)] = self._clock

    def evict(self, name: str, keep: int) -> list[str]:
        """Keep state ``name`` only for the ``keep`` clients that wrote it most recently;
        return the clients whose state was dropped (a bounded memory for per-client buffers
        such as error-feedback residuals)."""
        if self._counts.get(name, 0) <= keep:
            return []
        holders = [
            (self._stamp.get((c, name), 0), c) for c, own in self._data.items() if name in own
        ]
        holders.sort()
        dropped = [c for _, c in holders[: len(holders) - max(0, keep)]]
        for client in dropped:
            del self._data[client][name]
            self._stamp.pop((client, name), None)
            self._counts[name] -= 1
            if not self._data[client]:
                del self._data[client]
        return dropped

    def count(self, name: str) -> int:
        """How many clients hold state ``name``."""
        return self._counts.get(name, 0)

    def clients(self) -> list[str]:
        return sorted(self._data.keys() | self.last_version.keys())

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Tensors ``"<i>.<name>.<key>"`` and JSON naming client ``i`` (ids may hold dots)."""
        ids = sorted(self._data)
        tensors: dict[str, Tensor] = {}
        names: list[list[str]] = []
        for i, client in enumerate(ids):
            names.append(sorted(self._data[client]))
            for name, state in self._data[client].items():
                for key, value in state.items():
                    tensors[f"{i}.{name}.{key}"] = value.detach().clone()
        stamps = [
            [self._stamp.get((c, n), 0) for n in own] for c, own in zip(ids, names, strict=True)
        ]
        meta = {
            "clients": ids,
            "names": names,
            "stamps": stamps,
            "last_version": dict(self.last_version),
        }
        return tensors, meta

    def restore(self, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        """Undo :meth:`state`."""
        ids = list(meta.get("clients", []))
        names = [list(n) for n in meta.get("names", [[] for _ in ids])]
        if len(names) != len(ids):
            raise ValidationError("client state: one list of state names per client expected")
        data: dict[str, dict[str, StageState]] = {
            client: {name: {} for name in own} for client, own in zip(ids, names, strict=True)
        }
        for flat, value in tensors.items():
            index, name, key = _split(flat, names)
            data[ids[index]].setdefault(name, {})[key] = value.clone()
        self._data = data
        stamps = meta.get("stamps", [[0] * len(n) for n in names])
        self._stamp = {
            (client, name): int(stamp)
            for client, own, marks in zip(ids, names, stamps, strict=True)
            for name, stamp in zip(own, marks, strict=True)
        }
        self._clock = max(self._stamp.values(), default=0)
        self._counts = {}
        for own in names:
            for name in own:
                self._counts[name] = self._counts.get(name, 0) + 1
        self.last_version = {str(k): int(v) for k, v in meta.get("last_version", {}).items()}


def _split(flat: str, names: list[list[str]]) -> tuple[int, str, str]:
    """``"<i>.<name>.<key>"`` with client ``i``'s state ``name`` known (names and keys may
    hold dots: the longest known name wins)."""
    head, _, rest = flat.partition(".")
    if not head.isdigit() or int(head) >= len(names):
        raise ValidationError(f"client state entry {flat!r} names no client")
    index = int(head)
    for name in sorted(names[index], key=len, reverse=True):
        if rest.startswith(name + ".") and len(rest) > len(name) + 1:
            return index, name, rest[len(name) + 1 :]
    raise ValidationError(f"client state entry {flat!r} names no state of client {index}")
