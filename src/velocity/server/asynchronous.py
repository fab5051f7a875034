"""Asynchronous FL on the round engine: a trigger policy that keeps clients in flight.

An engine round is one *server version*. :class:`BufferedAsync` keeps ``concurrency``
clients training at all times on a (virtual) clock: each arrival is checked for staleness
(how many versions the model moved since the client's task was dispatched), buffered, and
replaced at once by a newly dispatched client; when the buffer holds ``buffer_size``
updates the engine aggregates them and the version moves on. ``buffer_size = 1`` is
FedAsync (Xie et al. 2019, "Asynchronous Federated Optimization"), ``buffer_size = K`` is
FedBuff (Nguyen et al. 2022, "Federated Learning with Buffered Asynchronous Aggregation").

The staleness weight ``s(τ)`` is a server stage (:class:`StalenessWeighting`) that scales
each row before aggregation, so every strategy — robust rules included — and every client
stage (DP-SGD, local DP, codecs) work unchanged::

    dispatch   clients idle -> tasks at the current version (up to `concurrency` in flight)
    arrive     earliest arrival first (virtual time jumps to it)
    admit      staleness τ = version - task.version; τ > threshold -> a `stale` failure
    buffer     until `buffer_size` updates -> the engine aggregates (one version)
    weight     row_i *= mixing · s(τ_i)        (StalenessWeighting, a pre-stage)

A client is busy from dispatch until its update is aggregated (at most one update per
client per version); a client whose result failed or was discarded waits for the next
version before it is asked again (its simulated fate in a round is a fixed draw, so asking
it again at the same version would repeat it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import torch

from velocity._random import numpy_rng
from velocity._validation import Constraint, Integer, NoneOr, OneOf, Real, check_parameters
from velocity.errors import ConfigurationError
from velocity.server.engine import Gathered, TaskMaker, TriggerPolicy
from velocity.strategies import RoundBatch
from velocity.types import (
    ClientFailure,
    ClientSampler,
    ClientTask,
    ClientUpdate,
    Clock,
    ParamSpec,
    Result,
    RoundResult,
    StageContext,
    StageState,
    UpdateProvider,
)

__all__ = [
    "STALENESS_STRATEGIES",
    "AsyncRoundSummary",
    "AsyncSettings",
    "BufferedAsync",
    "Staleness",
    "StalenessWeighting",
]

StalenessStrategy = Literal[
    "uniform", "inverse_staleness", "exponential_decay", "polynomial", "hinge"
]
STALENESS_STRATEGIES: tuple[str, ...] = (
    "uniform",
    "inverse_staleness",
    "exponential_decay",
    "polynomial",
    "hinge",
)


@dataclass(frozen=True)
class Staleness:
    """The staleness weight ``s(τ)`` of an update computed ``τ`` versions ago.

    ``"uniform"``: ``1`` (FedAsync's constant function); ``"inverse_staleness"``:
    ``1 / (1 + τ)``; ``"exponential_decay"``: ``decay^τ``; ``"polynomial"``:
    ``(1 + τ)^(-a)`` (Xie et al. 2019); ``"hinge"``: ``1`` for ``τ <= b``, else
    ``1 / (a (τ - b) + 1)`` (Xie et al. 2019).

    Examples
    --------
    >>> [Staleness("inverse_staleness").weight(t) for t in (0, 1, 3)]
    [1.0, 0.5, 0.25]
    >>> round(Staleness("exponential_decay", decay=0.9).weight(2), 6)
    0.81
    >>> [Staleness("hinge", a=10, b=4).weight(t) for t in (4, 5)]
    [1.0, 0.09090909090909091]
    """

    strategy: StalenessStrategy = "uniform"
    decay: float = 0.9
    a: float = 0.5
    b: int = 4

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "strategy": OneOf(*STALENESS_STRATEGIES),
        "decay": Real(low=0, high=1, low_open=True),
        "a": Real(low=0),
        "b": Integer(low=0),
    }

    def __post_init__(self) -> None:
        check_parameters(self)

    def weight(self, tau: int) -> float:
        """``s(τ)`` for ``τ >= 0``."""
        if isinstance(tau, bool) or not isinstance(tau, int) or tau < 0:
            raise ConfigurationError(f"staleness must be an int >= 0; got {tau!r}")
        kind = self.strategy
        if kind == "uniform":
            return 1.0
        if kind == "inverse_staleness":
            return 1.0 / (1.0 + tau)
        if kind == "exponential_decay":
            return float(self.decay**tau)
        if kind == "polynomial":
            return float((1.0 + tau) ** (-self.a))
        return 1.0 if tau <= self.b else 1.0 / (self.a * (tau - self.b) + 1.0)


@dataclass(frozen=True)
class StalenessWeighting:
    """Server pre-stage: row ``i`` becomes ``mixing · s(τ_i) · row_i``.

    ``τ_i`` comes from the engine (``batch.notes["staleness"]``, each update's
    :attr:`~velocity.types.ClientUpdate.staleness`). The aggregate of the weighted rows is
    FedBuff's ``(1/K) Σ s(τ_i) Δ_i`` under an unweighted mean and its sample-weighted form
    under FedAvg; with one update per version and ``mixing = α`` it is FedAsync's step
    ``x ← x + α s(τ) Δ`` (the client's delta applied to the current model; the paper's
    model mixing ``(1 - α) x + α x_client`` would also pull the model back toward the
    client's stale base, which we do not do). Metrics: ``mean``, ``max`` staleness and the
    ``mean_weight``.
    """

    staleness: Staleness = Staleness()
    mixing: float = 1.0
    name: str = "staleness"

    def __post_init__(self) -> None:
        if not (isinstance(self.mixing, int | float) and math.isfinite(self.mixing)) or not (
            0 < self.mixing <= 1
        ):
            raise ConfigurationError(
                f"StalenessWeighting.mixing must be a number in (0, 1]; got {self.mixing!r}"
            )

    def init(self, spec: ParamSpec) -> StageState:
        return {}

    def apply(
        self, x: RoundBatch, state: StageState, ctx: StageContext
    ) -> tuple[RoundBatch, StageState, Mapping[str, Any]]:
        known: Mapping[str, int] = x.notes.get("staleness", {})
        taus = [int(known.get(cid, 0)) for cid in x.client_ids]
        weights = [self.mixing * self.staleness.weight(t) for t in taus]
        if taus and any(w != 1.0 for w in weights):
            w = torch.tensor(weights, dtype=x.rows.dtype).unsqueeze(1)
            x = replace(x, rows=x.rows * w)
        metrics: dict[str, Any] = {}
        if taus:
            metrics = {
                "mean": sum(taus) / len(taus),
                "max": max(taus),
                "mean_weight": sum(weights) / len(weights),
            }
        return x, state, metrics


@dataclass(frozen=True)
class AsyncSettings:
    """An asynchronous federation's settings (the YAML ``async_fl:`` section).

    Parameters
    ----------
    concurrency : int
        Clients training at once (``>= 1``, at most the population).
    buffer_size : int
        Updates per aggregation ``K`` (``1``: FedAsync; ``K > 1``: FedBuff).
    staleness_threshold : int or None
        Updates more than this many versions old are discarded (``stale`` failures);
        ``None`` keeps every update.
    staleness : Staleness
        The weight function ``s(τ)``.
    mixing : float
        FedAsync's ``α`` in ``(0, 1]``: every row is also scaled by it.
    """

    concurrency: int
    buffer_size: int = 1
    staleness_threshold: int | None = None
    staleness: Staleness = Staleness()
    mixing: float = 1.0

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "concurrency": Integer(low=1),
        "buffer_size": Integer(low=1),
        "staleness_threshold": NoneOr(Integer(low=0)),
        "mixing": Real(low=0, high=1, low_open=True),
    }

    def __post_init__(self) -> None:
        check_parameters(self, self._constraints)
        if not isinstance(self.staleness, Staleness):
            raise ConfigurationError(
                f"AsyncSettings.staleness must be a Staleness; got {self.staleness!r}"
            )

    def policy(self, clients: Sequence[str], *, seed: int) -> BufferedAsync:
        """The trigger policy over ``clients``."""
        return BufferedAsync(
            clients,
            seed=seed,
            concurrency=self.concurrency,
            buffer_size=self.buffer_size,
            staleness_threshold=self.staleness_threshold,
        )

    def stage(self) -> StalenessWeighting:
        """The staleness-weighting server stage."""
        return StalenessWeighting(self.staleness, self.mixing)


class BufferedAsync(TriggerPolicy):
    """Asynchronous rounds: ``concurrency`` clients in flight, aggregate every
    ``buffer_size`` arrivals (see the module docstring).

    Clients to dispatch are drawn uniformly among the idle ones from
    ``(seed, version + 1, dispatch count, "async-dispatch")``, so a run's whole event trace
    is a function of the seed. ``sampler`` (the engine's) is not used: who is asked is
    decided by who is idle.

    Examples
    --------
    >>> policy = BufferedAsync([f"c{i}" for i in range(5)], seed=0, concurrency=2)
    >>> policy.in_flight
    ()
    """

    def __init__(
        self,
        clients: Sequence[str],
        *,
        seed: int,
        concurrency: int,
        buffer_size: int = 1,
        staleness_threshold: int | None = None,
    ) -> None:
        ids = list(clients)
        if not ids or len(set(ids)) != len(ids):
            raise ConfigurationError(
                "BufferedAsync: clients must be a non-empty list of unique ids"
            )
        for name, value, low in (("concurrency", concurrency, 1), ("buffer_size", buffer_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigurationError(
                    f"BufferedAsync.{name} must be an int >= {low}; got {value!r}"
                )
        if concurrency > len(ids):
            raise ConfigurationError(
                f"BufferedAsync.concurrency must be <= the {len(ids)} clients; got {concurrency}"
            )
        if buffer_size > len(ids):
            raise ConfigurationError(
                f"BufferedAsync.buffer_size must be <= the {len(ids)} clients (one update per "
                f"client per version); got {buffer_size}"
            )
        if staleness_threshold is not None and (
            isinstance(staleness_threshold, bool)
            or not isinstance(staleness_threshold, int)
            or staleness_threshold < 0
        ):
            raise ConfigurationError(
                "BufferedAsync.staleness_threshold must be None or an int >= 0; got "
                f"{staleness_threshold!r}"
            )
        self.clients = ids
        self.seed = int(seed)
        self.concurrency = concurrency
        self.buffer_size = buffer_size
        self.staleness_threshold = staleness_threshold
        self._flying: dict[str, ClientTask] = {}
        self._dispatches = 0

    def __repr__(self) -> str:
        return (
            f"BufferedAsync(concurrency={self.concurrency}, buffer_size={self.buffer_size}, "
            f"staleness_threshold={self.staleness_threshold})"
        )

    @property
    def in_flight(self) -> tuple[str, ...]:
        """Clients training now, in dispatch order."""
        return tuple(self._flying)

    def _pick(self, round_: int, need: int, busy: set[str]) -> list[str]:
        rng = numpy_rng(self.seed, round_, self._dispatches, "async-dispatch")
        self._dispatches += 1
        n = len(self.clients)
        if len(busy) * 2 < n:  # mostly idle: rejection sampling, O(need)
            picked: list[str] = []
            chosen: set[str] = set()
            while len(picked) < need:
                cid = self.clients[int(rng.integers(n))]
                if cid not in busy and cid not in chosen:
                    chosen.add(cid)
                    picked.append(cid)
            return picked
        idle = [c for c in self.clients if c not in busy]
        order = rng.permutation(len(idle))[:need]
        return [idle[int(i)] for i in order]

    def gather(
        self,
        *,
        round_: int,
        make_tasks: TaskMaker,
        sampler: ClientSampler,
        provider: UpdateProvider,
        clock: Clock,
    ) -> Gathered:
        version = round_ - 1
        dispatched: list[ClientTask] = []
        buffer: list[tuple[ClientTask, ClientUpdate]] = []
        failures: list[Result] = []
        waiting: set[str] = set()  # freed without contributing: asked again next version

        def top_up() -> None:
            busy = set(self._flying) | waiting | {t.client_id for t, _ in buffer}
            need = min(self.concurrency - len(self._flying), len(self.clients) - len(busy))
            if need <= 0:
                return
            tasks = make_tasks(self._pick(round_, need, busy), rows=False)
            provider.submit(tasks)
            for task in tasks:
                self._flying[task.client_id] = task
            dispatched.extend(tasks)

        top_up()
        while len(buffer) < self.buffer_size:
            got = provider.collect(max_results=1)
            if not got:
                break  # nothing in flight: every idle client already answered this version
            result = got[0]
            clock.advance_to(result.arrived_at)
            task = self._flying.pop(result.client_id, None)
            if task is None:
                failures.append(
                    ClientFailure(
                        result.client_id, "rejected", "no task was sent to it", round=round_
                    )
                )
                continue
            if isinstance(result, ClientFailure):
                failures.append(result)
                waiting.add(task.client_id)
            else:
                tau = version - task.version
                limit = self.staleness_threshold
                if limit is not None and tau > limit:
                    failures.append(
                        ClientFailure(
                            task.client_id,
                            "stale",
                            f"trained on version {task.version}, {tau} versions behind "
                            f"(staleness_threshold={limit})",
                            round=round_,
                            arrived_at=result.arrived_at,
                        )
                    )
                    waiting.add(task.client_id)
                else:
                    buffer.append((task, replace(result, staleness=tau)))
            top_up()
        return Gathered(
            tasks=dispatched,
            results=[*(u for _, u in buffer), *failures],
            answers=[t for t, _ in buffer],
            reason="" if buffer else "no update arrived",
        )


@dataclass(frozen=True)
class AsyncRoundSummary:
    """One server version of an asynchronous run (FLP's name), read off its round result.

    >>> from velocity.types import RoundResult
    >>> r = RoundResult(round=3, selected_client_ids=("c1",), participated=("c2", "c4"),
    ...                 clock_s=7.5, stages={"staleness": {"mean": 1.5, "max": 2,
    ...                                                    "mean_weight": 0.45}})
    >>> AsyncRoundSummary.from_result(r).to_dict()["mean_staleness"]
    1.5
    """

    version: int
    virtual_time: float
    num_updates: int
    dispatched: int
    discarded: int
    mean_staleness: float
    max_staleness: int
    mean_weight: float
    global_accuracy: float | None = None
    global_loss: float | None = None

    @classmethod
    def from_result(cls, result: RoundResult) -> AsyncRoundSummary:
        weights = result.stages.get("staleness", {})
        return cls(
            version=result.round,
            virtual_time=result.clock_s,
            num_updates=result.num_clients,
            dispatched=len(result.selected_client_ids),
            discarded=sum(1 for f in result.failures if f.reason == "stale"),
            mean_staleness=float(weights.get("mean", 0.0)),
            max_staleness=int(weights.get("max", 0)),
            mean_weight=float(weights.get("mean_weight", 1.0)),
            global_accuracy=result.global_accuracy,
            global_loss=result.global_loss,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "virtual_time": self.virtual_time,
            "num_updates": self.num_updates,
            "dispatched": self.dispatched,
            "discarded": self.discarded,
            "mean_staleness": self.mean_staleness,
            "max_staleness": self.max_staleness,
            "mean_weight": self.mean_weight,
            "global_accuracy": self.global_accuracy,
            "global_loss": self.global_loss,
        }
