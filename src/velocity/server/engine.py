"""The round engine: tasks out, updates back, stages with state, one round result.

Every federated run — simulated or remote, synchronous or asynchronous — is this loop::

    plan      sampler.sample(round)                 -> client ids
    dispatch  provider.submit(tasks)                 (global params, per-client TaskConfig)
    gather    policy.gather(...)                     -> updates and failures, by a trigger
    admit     admit(update, task)                    decode, shape, version, digest
    stages    [pre] -> aggregate -> [post] -> server step       (state in, state out)
    evaluate  evaluate(params) every eval_every rounds
    record    RoundResult -> annotators -> callbacks (checkpoint, progress, audit)

Only *where the clients live* (the :class:`~velocity.types.UpdateProvider`) and *when the
server aggregates* (the :class:`TriggerPolicy`) change between regimes. The engine knows
nothing of populations, dropout, stragglers or adversaries: those are the simulated side's
(a provider that reports :class:`~velocity.types.ClientFailure`\\ s, and a server stage).
"""

from __future__ import annotations

import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

import torch
from torch import Tensor

from velocity._validation import Constraint, Integer, NoneOr, Real, check_parameters
from velocity.errors import ConfigurationError, ValidationError
from velocity.strategies import RoundBatch, run_server_stages, server_chain
from velocity.types import (
    ClientFailure,
    ClientSampler,
    ClientStateStore,
    ClientTask,
    ClientUpdate,
    Clock,
    ParamSpec,
    Result,
    RoundResult,
    Stage,
    StageContext,
    StageState,
    TaskConfig,
    UpdateProvider,
    VirtualClock,
    admit,
    decode_delta,
)

if TYPE_CHECKING:
    from velocity.strategies import Strategy

__all__ = [
    "Callback",
    "Evaluator",
    "Gathered",
    "PayloadDecoder",
    "RoundAnnotator",
    "RoundEngine",
    "SyncRound",
    "TaskMaker",
    "TriggerPolicy",
    "serialized_size",
]

Evaluator = Callable[[Tensor], tuple[float, float]]
"""Maps flat global parameters to (evaluation loss, evaluation accuracy)."""

MAX_ROUND_BYTES: Final = 64 * 2**30
"""Largest ``(n, d)`` float32 stack a round may allocate (a clear error instead of the
allocator's)."""

PayloadDecoder = Callable[[bytes, ParamSpec], Tensor]
"""``(payload, spec) -> (d,) float32 delta``: the server side of an update encoding (a
compression codec). It must treat the bytes as hostile: bounded, shape-checked, no pickle."""

TaskConfigFn = Callable[[str, int], TaskConfig]
"""``(client_id, round) -> TaskConfig``: per-client settings of a round's task."""


class TaskMaker(Protocol):
    """``make_tasks(ids, timeout_s=None, rows=True)``: the engine's tasks for these clients.

    With ``rows=True`` each task gets a row of the round's stack to write its delta into
    (synchronous rounds: the rows are reused next round); a policy that keeps tasks in
    flight across rounds passes ``rows=False`` and the engine copies arriving deltas.
    """

    def __call__(
        self, ids: Sequence[str], *, timeout_s: float | None = None, rows: bool = True
    ) -> list[ClientTask]: ...


def serialized_size(spec: ParamSpec, params: Tensor) -> int:
    """Bytes of ``params`` serialized as safetensors under ``spec``'s names and shapes."""
    from safetensors.torch import save

    tensors = {k: v.contiguous() for k, v in spec.unflatten(params).items()}
    return len(save(tensors))


# ---------------------------------------------------------------------- trigger policies


@dataclass
class Gathered:
    """What a trigger policy hands the engine: the tasks dispatched this round, the results
    to aggregate (in the order the rows are to be stacked), and whether to aggregate now.

    ``answers`` are the tasks the updates answer when they are not this round's (an
    asynchronous policy aggregates updates to tasks dispatched at earlier versions);
    ``None`` means ``tasks``. Each update is admitted against its own task.
    """

    tasks: list[ClientTask]
    results: list[Result]
    aggregate: bool = True
    reason: str = ""
    answers: list[ClientTask] | None = None


class TriggerPolicy(ABC):
    """When the server aggregates. Synchronous rounds are one policy (:class:`SyncRound`);
    asynchronous ones (FedAsync, FedBuff) keep tasks in flight across versions."""

    @abstractmethod
    def gather(
        self,
        *,
        round_: int,
        make_tasks: TaskMaker,
        sampler: ClientSampler,
        provider: UpdateProvider,
        clock: Clock,
    ) -> Gathered:
        """Dispatch what this round needs, wait for what triggers aggregation, return it."""

    def enough(self, admitted: int) -> bool:
        """Whether ``admitted`` updates (after the engine's admission check) are enough to
        aggregate; otherwise the round is skipped and the model stays. Default: one."""
        return admitted >= 1


@dataclass(frozen=True)
class SyncRound(TriggerPolicy):
    """A synchronous round: send a task to every sampled client, then aggregate when every
    task has answered, or when ``timeout_s`` (virtual or wall seconds) has passed.

    Tasks still unanswered at the deadline become ``timed_out`` failures (and are
    cancelled). A round with fewer than ``min_updates`` updates is skipped (the model
    stays). Results are stacked in task order, whatever order they arrived in.
    """

    timeout_s: float | None = None
    min_updates: int = 1

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "timeout_s": NoneOr(Real(low=0, low_open=True)),
        "min_updates": Integer(low=1),
    }

    def __post_init__(self) -> None:
        check_parameters(self)

    def enough(self, admitted: int) -> bool:
        return admitted >= self.min_updates

    def gather(
        self,
        *,
        round_: int,
        make_tasks: TaskMaker,
        sampler: ClientSampler,
        provider: UpdateProvider,
        clock: Clock,
    ) -> Gathered:
        tasks = make_tasks(list(sampler.sample(round_)), timeout_s=self.timeout_s)
        provider.submit(tasks)
        deadline = None if self.timeout_s is None else clock.now() + self.timeout_s
        arrived = provider.collect(until=deadline)
        order = {task.client_id: i for i, task in enumerate(tasks)}
        answered = {r.client_id for r in arrived}
        missing = [t.client_id for t in tasks if t.client_id not in answered]
        if missing:
            provider.cancel(missing)
            arrived.extend(
                ClientFailure(
                    cid,
                    "timed_out",
                    "missed the round deadline" if deadline is not None else "did not answer",
                    round=round_,
                )
                for cid in missing
            )
        if deadline is not None and missing:
            clock.advance_to(deadline)
        elif arrived:
            clock.advance_to(max(r.arrived_at for r in arrived))
        arrived.sort(key=lambda r: order.get(r.client_id, len(order)))
        return Gathered(tasks, arrived)


# ---------------------------------------------------------------------- hooks


class RoundAnnotator(Protocol):
    """Completes a round's result once it is evaluated (the simulated adversary reports its
    attacks here: which rows a filter dropped, the backdoor's success rate)."""

    def annotate(self, result: RoundResult, params: Tensor) -> RoundResult: ...


class Callback(Protocol):
    """Called after every round with its result (checkpoints, progress, audit log)."""

    def __call__(self, result: RoundResult, engine: RoundEngine) -> None: ...


# ---------------------------------------------------------------------- the engine


@dataclass
class _Stack:
    """The round's reusable ``(k, d)`` buffer; rows are handed to in-process clients."""

    d: int
    buffer: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.buffer = torch.empty(0, self.d, dtype=torch.float32)

    def rows(self, k: int) -> Tensor:
        if self.buffer.shape[0] < k:
            self.buffer = torch.empty(k, self.d, dtype=torch.float32)
        return self.buffer[:k]

    def shares(self, t: Tensor | None) -> bool:
        """Whether ``t`` lives in the buffer's memory at all."""
        return (
            t is not None
            and self.buffer.numel() > 0
            and t.untyped_storage().data_ptr() == self.buffer.untyped_storage().data_ptr()
        )

    def row_of(self, t: Tensor) -> int | None:
        """Index of the buffer row ``t`` is (a contiguous full-row view), else ``None``."""
        buf = self.buffer
        if (
            buf.numel() == 0
            or t.untyped_storage().data_ptr() != buf.untyped_storage().data_ptr()
            or not t.is_contiguous()
            or t.dtype != buf.dtype
        ):
            return None
        offset = t.data_ptr() - buf.data_ptr()
        size = self.d * buf.element_size()
        if offset < 0 or offset % size or offset // size >= buf.shape[0]:
            return None
        return offset // size


class RoundEngine:
    """Runs rounds: tasks out through a provider, updates back, server stages, one result.

    Parameters
    ----------
    provider : UpdateProvider
        Where the clients live.
    sampler : ClientSampler
        Which clients each round asks.
    spec : ParamSpec
        Layout of the flat parameters.
    init_params : Tensor
        The initial ``(d,)`` global model (copied, float32).
    strategy : Strategy
        Pre-aggregators, aggregator and server optimizer; becomes the ``aggregate`` and
        ``server_step`` stages.
    seed : int
        Root of the stages' randomness (``ctx.generator``).
    policy : TriggerPolicy
        When to aggregate; :class:`SyncRound` by default.
    pre_stages, post_stages : sequence of server stages
        Run before aggregation on the stacked rows (a simulated adversary, unmasking) and
        after it on the aggregate (central DP noise).
    evaluate : callable, optional
        ``params -> (loss, accuracy)``, run after rounds ``1`` and every ``eval_every``-th.
    task_config : TaskConfig or callable
        Per-client settings of each task (``(client_id, round) -> TaskConfig``).
    clock : Clock
        Virtual by default.
    client_state : ClientStateStore
        Per-client state; share it with an in-process provider that keeps client stages.
    annotators, callbacks : sequences
        Result completion and after-round hooks.
    decoders : mapping of str to PayloadDecoder
        The server side of update encodings: an update whose ``payload`` is in encoding
        ``e`` is decoded by ``decoders[e]`` at admission, and its digest is then checked
        against the decoded delta. ``"velocity-frame"`` (:func:`velocity.types.encode_delta`)
        is always known. A round's ``bytes_up`` counts each aggregated update's payload bytes
        (its safetensors size when it came as a plain delta).
    downlink_bytes : int, optional
        Bytes of one compressed model *difference* (a downlink codec stage, see
        :class:`velocity.compression.DownlinkCodec`): a task whose client holds the previous
        version (it trained from it last round) downloads only that; every other task
        downloads the full model (its safetensors size). ``None``: every task downloads the
        full model.

    Examples
    --------
    See ``docs/extending.md`` for a custom provider and a custom stage.
    """

    def __init__(
        self,
        *,
        provider: UpdateProvider,
        sampler: ClientSampler,
        spec: ParamSpec,
        init_params: Tensor,
        strategy: Strategy,
        seed: int,
        policy: TriggerPolicy | None = None,
        pre_stages: Sequence[Stage[RoundBatch]] = (),
        post_stages: Sequence[Stage[RoundBatch]] = (),
        evaluate: Evaluator | None = None,
        eval_every: int = 1,
        task_config: TaskConfig | TaskConfigFn | None = None,
        clock: Clock | None = None,
        client_state: ClientStateStore | None = None,
        annotators: Sequence[RoundAnnotator] = (),
        callbacks: Sequence[Callback] = (),
        decoders: Mapping[str, PayloadDecoder] | None = None,
        downlink_bytes: int | None = None,
    ) -> None:
        if init_params.shape != (spec.d,) or not init_params.is_floating_point():
            raise ValidationError(
                f"RoundEngine: init_params must be a ({spec.d},) floating tensor; got "
                f"{init_params.dtype} {tuple(init_params.shape)}"
            )
        if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
            raise ConfigurationError(f"eval_every must be an int >= 1; got {eval_every!r}")
        self.provider = provider
        self.sampler = sampler
        self.spec = spec
        self.strategy = strategy
        self.seed = int(seed)
        self.policy: TriggerPolicy = SyncRound() if policy is None else policy
        self.stages: list[Stage[RoundBatch]] = server_chain(
            strategy, pre=pre_stages, post=post_stages
        )
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"RoundEngine: stage names must be unique; got {names}")
        self.evaluate = evaluate
        self.eval_every = eval_every
        self._task_config = task_config
        self.clock: Clock = VirtualClock() if clock is None else clock
        self.client_state = ClientStateStore() if client_state is None else client_state
        self.annotators = list(annotators)
        self.callbacks = list(callbacks)
        self.results: list[RoundResult] = []
        self.last_aggregate: Tensor | None = None
        self._params = init_params.detach().to(torch.float32, copy=True)
        self._round = 0
        self._states: dict[str, StageState] = {s.name: s.init(spec) for s in self.stages}
        self._stack = _Stack(spec.d)
        self._payload = serialized_size(spec, self._params)
        self.decoders: dict[str, PayloadDecoder] = dict(decoders or {})
        if "velocity-frame" in self.decoders:
            raise ConfigurationError(
                "RoundEngine: 'velocity-frame' is the engine's own encoding; name yours otherwise"
            )
        self._diff_bytes = None if downlink_bytes is None else int(downlink_bytes)
        self._wire: dict[str, int] = {}

    # ------------------------------------------------------------------ state

    @property
    def round(self) -> int:
        """Number of completed rounds (= the global model's version)."""
        return self._round

    @property
    def version(self) -> int:
        return self._round

    @property
    def global_params(self) -> Tensor:
        """The flat ``(d,)`` float32 global model (a new tensor every round; do not modify)."""
        return self._params

    def stage_state(self, name: str) -> StageState:
        """A copy of stage ``name``'s state."""
        return dict(self._states[name])

    # ------------------------------------------------------------------ the round

    def _config(self, client_id: str, round_: int) -> TaskConfig:
        source = self._task_config
        if source is None:
            return TaskConfig()
        if isinstance(source, TaskConfig):
            return source
        return source(client_id, round_)

    def _make_tasks(self, round_: int) -> TaskMaker:
        def make(
            ids: Sequence[str], *, timeout_s: float | None = None, rows: bool = True
        ) -> list[ClientTask]:
            if len(set(ids)) != len(ids):
                raise ValidationError(f"round {round_}: the sampler named a client twice")
            need = 4 * len(ids) * self.spec.d
            if rows and need > MAX_ROUND_BYTES:
                raise ConfigurationError(
                    f"round {round_}: {len(ids)} clients x {self.spec.d} parameters need "
                    f"{need / 2**30:.1f} GiB of float32 update rows; the limit is "
                    f"{MAX_ROUND_BYTES / 2**30:.0f} GiB (sample fewer clients per round)"
                )
            stack = self._stack.rows(len(ids)) if rows else None
            now = self.clock.now()
            return [
                ClientTask(
                    client_id=cid,
                    round=round_,
                    version=self._round,
                    params=self._params,
                    config=self._config(cid, round_),
                    dispatched_at=now,
                    timeout_s=timeout_s,
                    out=None if stack is None else stack[i],
                )
                for i, cid in enumerate(ids)
            ]

        return make

    def _admit(
        self, gathered: Gathered, round_: int
    ) -> tuple[list[ClientUpdate], list[ClientFailure]]:
        answered = gathered.tasks if gathered.answers is None else gathered.answers
        tasks = {t.client_id: t for t in answered}
        seen: set[str] = set()
        updates: list[ClientUpdate] = []
        failures: list[ClientFailure] = []
        wire: dict[str, int] = {}
        for result in gathered.results:
            if isinstance(result, ClientFailure):
                failures.append(result)
                continue
            size = self._payload
            if result.delta is None:
                size = len(result.payload or b"")
                try:
                    result = self._decode(result)
                except Exception as exc:  # hostile or broken bytes never crash a round
                    failures.append(
                        ClientFailure(result.client_id, "rejected", f"undecodable: {exc}", round_)
                    )
                    continue
            task = tasks.get(result.client_id)
            if task is None:
                failures.append(
                    ClientFailure(result.client_id, "rejected", "no task was sent to it", round_)
                )
                continue
            # A delta that is the task's own `out` row was written into the engine's memory
            # in this process: no digest is needed (see UpdateProvider); one attached is
            # still checked.
            in_place = task.out is not None and result.delta is task.out
            refused = admit(
                result,
                round_=round_,
                d=self.spec.d,
                seen=seen,
                task=task,
                require_digest=not in_place,
            )
            if refused is not None:
                failures.append(refused)
                continue
            updates.append(result)
            wire[result.client_id] = size
        self._wire = wire
        return updates, failures

    def _decode(self, update: ClientUpdate) -> ClientUpdate:
        """An encoded update with its delta decoded (the payload dropped)."""
        if update.encoding == "velocity-frame":
            return decode_delta(update, d=self.spec.d)
        decoder = self.decoders.get(str(update.encoding))
        if decoder is None or update.payload is None:
            known = ", ".join(sorted(["velocity-frame", *self.decoders]))
            raise ValidationError(f"unknown encoding {update.encoding!r} (known: {known})")
        delta = decoder(update.payload, self.spec)
        if delta.shape != (self.spec.d,) or delta.dtype != torch.float32:
            raise ValidationError(
                f"decoder of {update.encoding!r} returned {delta.dtype} "
                f"{tuple(delta.shape)}, not float32 ({self.spec.d},)"
            )
        return replace(update, delta=delta, payload=None, encoding=None)

    def _stack_rows(self, updates: Sequence[ClientUpdate]) -> Tensor:
        """The admitted deltas as one ``(k, d)`` stack, without copies where they already are."""
        k = len(updates)
        deltas = [u.delta for u in updates]
        assert all(d is not None for d in deltas)
        positions = [self._stack.row_of(d) for d in deltas if d is not None]
        if positions == list(range(k)):
            return self._stack.buffer[:k]
        aliased = [p for p in positions if p is not None]
        partial = any(
            p is None and self._stack.shares(d) for p, d in zip(positions, deltas, strict=True)
        )
        if not partial and (
            not aliased
            or (len(aliased) == k and all(a < b for a, b in itertools.pairwise(aliased)))
        ):
            rows = self._stack.rows(k) if not aliased else self._stack.buffer[:k]
            for j, delta in enumerate(deltas):
                if positions[j] != j and delta is not None:
                    rows[j].copy_(delta.detach())
            return rows
        rows = torch.empty(k, self.spec.d, dtype=torch.float32)
        for j, delta in enumerate(deltas):
            if delta is not None:
                rows[j].copy_(delta.detach())
        return rows

    def run_round(self) -> RoundResult:
        """Run the next round and return its result.

        A round that raises (a stage refusing its input, a provider failing) leaves the
        model, the round counter and the stage states as they were; the clock and the
        clients' own state (worker momentum) may have moved. Restore the last checkpoint for
        an exact retry.
        """
        start = time.perf_counter()
        round_ = self._round + 1
        gathered = self.policy.gather(
            round_=round_,
            make_tasks=self._make_tasks(round_),
            sampler=self.sampler,
            provider=self.provider,
            clock=self.clock,
        )
        down = self._download_bytes(gathered.tasks)  # before this round updates who holds what
        updates, failures = self._admit(gathered, round_)
        ctx = StageContext(self.seed, round_, self._round, self.spec, self._params)
        stage_metrics: dict[str, Mapping[str, Any]] = {}
        aggregation: Mapping[str, Any]
        participated: list[str] = []
        samples: dict[str, int] = {}
        if gathered.aggregate and updates and self.policy.enough(len(updates)):
            batch = RoundBatch(
                rows=self._stack_rows(updates),
                num_samples=[u.num_samples for u in updates],
                client_ids=[u.client_id for u in updates],
                losses=RoundBatch.initial_losses(updates),
                notes={"staleness": {u.client_id: u.staleness for u in updates}},
            )
            batch, states, stage_metrics = run_server_stages(self.stages, batch, self._states, ctx)
            assert batch.params is not None
            self._params = batch.params
            self._states.update(states)
            self.last_aggregate = batch.update
            participated = list(batch.client_ids)
            samples = dict(zip(batch.client_ids, map(int, batch.num_samples), strict=True))
            aggregation = stage_metrics.pop("aggregate", {})
            for update in updates:
                self.client_state.last_version[update.client_id] = update.base_version
        else:
            # Nothing to aggregate: the model stays, the round still counts.
            reason = gathered.reason or (
                "no client returned an update"
                if not updates
                else f"{len(updates)} updates are not enough for {self.policy!r}"
            )
            aggregation = {"skipped": reason}
            updates = []  # nothing was aggregated: no training loss or accuracy to report
        self._round = round_
        stage_metrics.pop("server_step", None)
        loss = acc = None
        if self.evaluate is not None and (round_ % self.eval_every == 0 or round_ == 1):
            loss, acc = self.evaluate(self._params)
        train_loss = _weighted_loss(updates)
        result = RoundResult(
            round=round_,
            selected_client_ids=tuple(t.client_id for t in gathered.tasks),
            participated=tuple(participated),
            failures=tuple(failures),
            global_loss=loss,
            global_accuracy=acc,
            train_loss=train_loss,
            client_accuracy={
                u.client_id: float(u.metrics["accuracy"])
                for u in updates
                if "accuracy" in u.metrics
            },
            samples=samples,
            bytes_up=sum(self._wire.get(cid, self._payload) for cid in participated),
            bytes_down=down,
            duration_s=0.0,
            clock_s=self.clock.now(),
            aggregation=aggregation,
            stages={k: v for k, v in stage_metrics.items() if v},
        )
        for annotator in self.annotators:
            result = annotator.annotate(result, self._params)
        result = replace(result, duration_s=time.perf_counter() - start)
        self.results.append(result)
        for callback in self.callbacks:
            callback(result, self)
        return result

    def _download_bytes(self, tasks: Sequence[ClientTask]) -> int:
        if self._diff_bytes is None:
            return self._payload * len(tasks)
        held = self.client_state.last_version
        total = 0
        for task in tasks:
            previous = task.version - 1
            fresh = previous >= 0 and held.get(task.client_id) == previous
            total += self._diff_bytes if fresh else self._payload
        return total

    def run(
        self, rounds: int, on_round: Callable[[RoundResult], None] | None = None
    ) -> list[RoundResult]:
        """Run ``rounds`` more rounds; ``on_round`` is called after each."""
        out = []
        for _ in range(rounds):
            result = self.run_round()
            out.append(result)
            if on_round is not None:
                on_round(result)
        return out

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Tensors and JSON metadata that restore this engine exactly (see :meth:`restore`).

        Tensors: ``global_params``, ``stage.<stage>.<key>`` (every stage's state, e.g. the
        server optimizer's moments) and ``client.<i>.<state>.<key>`` (the per-client store).
        """
        tensors = {"global_params": self._params.contiguous()}
        for name, state in self._states.items():
            for key, value in state.items():
                tensors[f"stage.{name}.{key}"] = value.detach().clone()
        client_tensors, client_meta = self.client_state.state()
        for key, value in client_tensors.items():
            tensors[f"client.{key}"] = value
        meta = {
            "round": self._round,
            "clock_s": self.clock.now(),
            "stages": sorted(self._states),
            "clients": client_meta,
            "results": [r.to_dict() for r in self.results],
        }
        return tensors, meta

    def restore(self, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        """Undo :meth:`state`: continue from the saved round as if never interrupted."""
        params = tensors.get("global_params")
        if params is None or params.shape != (self.spec.d,):
            raise ValidationError(
                f"checkpoint: global_params must be a ({self.spec.d},) tensor; got "
                f"{None if params is None else tuple(params.shape)}"
            )
        names = sorted((s.name for s in self.stages), key=len, reverse=True)
        states: dict[str, StageState] = {}
        client: dict[str, Tensor] = {}
        for key, value in tensors.items():
            if key.startswith("stage."):
                rest = key.removeprefix("stage.")
                name = next((n for n in names if rest.startswith(n + ".")), None)
                if name is None:
                    raise ValidationError(
                        f"checkpoint: {key!r} is the state of no stage of this engine "
                        f"({sorted(names)})"
                    )
                states.setdefault(name, {})[rest[len(name) + 1 :]] = value.clone()
            elif key.startswith("client."):
                client[key.removeprefix("client.")] = value
        saved = set(meta.get("stages", states))
        missing = [s.name for s in self.stages if s.name not in saved and s.init(self.spec)]
        if missing:
            raise ValidationError(
                f"checkpoint: no state for the stages {missing} (saved by another engine?)"
            )
        self._params = params.detach().to(torch.float32, copy=True)
        self._round = int(meta["round"])
        self._states = {s.name: states.get(s.name, s.init(self.spec)) for s in self.stages}
        self.client_state.restore(client, meta.get("clients", {}))
        self.clock.restore(float(meta.get("clock_s", 0.0)))
        self.last_aggregate = None
        self.results = [RoundResult.from_dict(r) for r in meta.get("results", [])]


def _weighted_loss(updates: Sequence[ClientUpdate]) -> float | None:
    pairs = [(u.loss, u.num_samples) for u in updates if u.loss is not None]
    total = sum(n for _, n in pairs)
    if not pairs or total == 0:
        return None
    return sum(loss * n for loss, n in pairs) / total
