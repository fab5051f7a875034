"""Simulated clients: providers whose clients live in this process, on a virtual clock.

:class:`SimulatedClients` is what every simulated provider shares — the simulated
population's behaviour, which the round engine never sees:

- **dropout**: a client that drops out never trains and is reported as a ``dropped``
  :class:`~velocity.types.ClientFailure`;
- **stragglers**: each client's compute delay (virtual seconds, drawn from
  ``(seed, round, client, "delay")``) sets when its update arrives; a client whose delay
  exceeds its task's ``timeout_s`` is not trained at all (the engine stops waiting at the
  deadline and reports it ``timed_out``);
- **adversaries** (:class:`velocity.sim.adversary.SimulatedAdversary`): a data attack is a
  simulated client's poisoned data; an adversary that only crafts its row does not train
  (the adversary's server stage fills its row); adversaries report no loss or accuracy.
- **initial loss**: a task whose ``TaskConfig.options`` has ``"initial_loss": True`` (what
  q-FedAvg needs, see :func:`wants_initial_loss`) has its client report
  ``metrics["initial_loss"]``, the received model's loss on its training data. An
  adversary that trains reports its own (on its possibly poisoned data); one that only
  crafts trains nothing and reports ``0.0`` as a placeholder (a valid value, so admission
  accepts it: admission rejects non-finite losses), which the adversary stage
  replaces by the loss it claims for the row (see :mod:`velocity.sim.adversary`).

Subclasses implement :meth:`SimulatedClients.train` for one honest or data-poisoning client:
:class:`SequentialClients` (a :class:`~velocity.client.Trainer` over in-memory data, one
client after another), :class:`~velocity.sim.quadratic.QuadraticClients`, and the parameter
server's gradient nodes.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from velocity._random import torch_generator
from velocity.client import run_client_stages
from velocity.errors import ConfigurationError
from velocity.sim.sampling import DelayModel, DropoutModel
from velocity.types import (
    ClientFailure,
    ClientStateStore,
    ClientTask,
    ClientUpdate,
    ParamSpec,
    Result,
    Stage,
    StageContext,
    UpdateEncoder,
    UpdateProvider,
    tensor_digest,
)

if TYPE_CHECKING:
    from velocity.attacks import DataAttack
    from velocity.client import TrainConfig, Trainer
    from velocity.sim.adversary import RoundAttack, SimulatedAdversary
    from velocity.sim.population import Population

__all__ = [
    "ClientWork",
    "SequentialClients",
    "SimulatedClients",
    "poison_client_data",
    "scale_poisoned_update",
    "wants_initial_loss",
]


def wants_initial_loss(task: ClientTask) -> bool:
    """Whether ``task`` asks its client to report ``metrics["initial_loss"]``.

    The request is ``TaskConfig(options={"initial_loss": True})``; absent means no. Any value
    but ``True`` or ``False`` is refused with a ``ConfigurationError``.
    """
    wanted = task.config.options.get("initial_loss", False)
    if not isinstance(wanted, bool):
        raise ConfigurationError(
            f"TaskConfig.options['initial_loss'] must be True or False; got {wanted!r}"
        )
    return wanted


@dataclass(frozen=True, eq=False)
class ClientWork:
    """One simulated client's job: its task, population index, and its attack if any."""

    task: ClientTask
    index: int
    out: Tensor
    poison: DataAttack | None = None
    adversarial: bool = False


class SimulatedClients(UpdateProvider):
    """The simulated population's side of every in-process provider (see the module doc).

    ``collect`` trains lazily: a task is trained when its result is collected, in task order,
    and results are returned in order of virtual arrival (``dispatched_at + delay``; ties in
    task order). An update written into its task's ``out`` row (the engine's stack) carries
    no digest: it never left this process's memory, and the engine does not ask for one
    (see :class:`~velocity.types.UpdateProvider`); every other update — a row of its own
    (no ``out``, or a client stage returned a new tensor), or an encoded payload (the
    digest of the decoded row) — carries its digest.
    """

    name: ClassVar[str] = "simulated"

    def __init__(
        self,
        population: Population,
        *,
        seed: int,
        dropout_rate: float = 0.0,
        straggler: DelayModel | None = None,
        adversary: SimulatedAdversary | None = None,
    ) -> None:
        self.population = population
        self.seed = int(seed)
        self.dropout = DropoutModel(dropout_rate)
        self.straggler = straggler
        self.adversary = adversary
        self._pending: list[ClientTask] = []
        self._done: list[Result] = []
        self._plans: dict[int, RoundAttack | None] = {}
        self.client_stages: tuple[Stage[Tensor], ...] = ()
        self.encoder: UpdateEncoder | None = None
        self.client_state = ClientStateStore()
        self.spec: ParamSpec | None = None

    def configure(
        self,
        *,
        dropout_rate: float,
        straggler: DelayModel | None,
        adversary: SimulatedAdversary | None,
        client_stages: Sequence[Stage[Tensor]] = (),
        encoder: UpdateEncoder | None = None,
        client_state: ClientStateStore | None = None,
        spec: ParamSpec | None = None,
    ) -> None:
        """Set the population's behaviour (the builder's call, before the first round).

        ``client_stages`` run on every honest client's trained row, in order (clipping, local
        DP noise), with per-client state in ``client_state`` (the engine's store);
        ``encoder`` then turns every row into the payload that travels (a codec). Both need
        ``spec``, the layout of the rows.
        """
        self.dropout = DropoutModel(dropout_rate)
        self.straggler = straggler
        self.adversary = adversary
        if (client_stages or encoder is not None) and spec is None:
            raise ConfigurationError("client stages and encoders need the parameter spec")
        self.client_stages = tuple(client_stages)
        self.encoder = encoder
        if client_state is not None:
            self.client_state = client_state
        self.spec = spec

    # ------------------------------------------------------------------ the seam

    def submit(self, tasks: Sequence[ClientTask]) -> None:
        # A round dispatched again (its first attempt failed) gets its adversaries anew.
        busy = {t.round for t in self._pending} | {r.round for r in self._done}
        for round_ in {t.round for t in tasks} - busy:
            self._plans.pop(round_, None)
        self._pending.extend(tasks)

    def cancel(self, client_ids: Collection[str]) -> None:
        gone = set(client_ids)
        self._pending = [t for t in self._pending if t.client_id not in gone]
        self._done = [r for r in self._done if r.client_id not in gone]

    def collect(
        self, *, until: float | None = None, max_results: int | None = None
    ) -> list[Result]:
        ready: list[tuple[ClientTask, int, float]] = []
        later: list[ClientTask] = []
        on_time: dict[int, list[int]] = {}
        for task in self._pending:
            index = self.population.index_of(task.client_id)
            if self.dropout.dropped(index, seed=self.seed, round_=task.round):
                self._done.append(
                    ClientFailure(
                        task.client_id,
                        "dropped",
                        "the simulated client dropped out",
                        round=task.round,
                        arrived_at=task.dispatched_at,
                    )
                )
                continue
            delay = self.delay(index, task.round)
            arrival = task.dispatched_at + delay
            late = task.timeout_s is not None and delay > task.timeout_s
            if not late:
                on_time.setdefault(task.round, []).append(index)
            if until is not None and (late or arrival > until):
                later.append(task)
                continue
            ready.append((task, index, arrival))
        self._pending = later
        if self.adversary is not None:
            # A round's adversaries are resolved once, from all its participants (those that
            # neither dropped out nor miss their deadline, in population order), however many
            # collect calls its results take.
            for round_, indices in sorted(on_time.items()):
                if round_ not in self._plans:
                    self._plans[round_] = self.adversary.prepare(round_, sorted(indices))
        self._done.extend(self._train_ready(ready))
        waiting = [t.round for t in self._pending]
        oldest = min(waiting) if waiting else max(self._plans, default=0)
        self._plans = {r: p for r, p in self._plans.items() if r >= oldest}
        self._done.sort(key=lambda r: r.arrived_at)  # stable: ties keep task order
        take = len(self._done) if max_results is None else max(0, max_results)
        out, self._done = self._done[:take], self._done[take:]
        return out

    def delay(self, index: int, round_: int) -> float:
        """Virtual compute time of client ``index`` in ``round_`` (0 without stragglers)."""
        if self.straggler is None:
            return 0.0
        return self.straggler.delay(index, seed=self.seed, round_=round_)

    def train_batch(self, works: Sequence[ClientWork]) -> None:
        """Called once per collect with every work item about to be trained, before the
        :meth:`train` calls (which follow in task order). The default does nothing; a
        provider that trains many clients at once (``VectorizedClients``) trains them here
        and lets :meth:`train` pick each result up."""

    def _train_ready(self, ready: list[tuple[ClientTask, int, float]]) -> list[Result]:
        plans = self._plans
        items: list[tuple[ClientTask, int, float, ClientWork, bool]] = []
        for task, index, arrival in ready:
            out = task.out if task.out is not None else torch.empty_like(task.params)
            plan = plans.get(task.round)
            work = ClientWork(
                task,
                index,
                out,
                poison=None if plan is None else plan.poison.get(index),
                adversarial=plan is not None and index in plan.adversarial,
            )
            # An adversary that only crafts does not train: its row is the adversary stage's.
            craft_only = plan is not None and index in plan.craft_only
            items.append((task, index, arrival, work, craft_only))
        self.train_batch([work for *_, work, craft_only in items if not craft_only])
        results: list[Result] = []
        for task, index, arrival, work, craft_only in items:
            if craft_only:
                # it fills its row at the adversary stage; it claims its population sample count
                work.out.zero_()
                claims = {"initial_loss": 0.0} if wants_initial_loss(task) else {}
                update = ClientUpdate(
                    task.client_id, self.population.num_samples(index), work.out, metrics=claims
                )
            else:
                update = self.train(work)
                if work.adversarial:
                    kept = {k: v for k, v in update.metrics.items() if k == "initial_loss"}
                    update = replace(update, loss=None, metrics=kept)
            results.append(
                self._finish(
                    replace(
                        update, round=task.round, base_version=task.version, arrived_at=arrival
                    ),
                    work,
                    trained=not craft_only,
                )
            )
        return results

    def _finish(self, update: ClientUpdate, work: ClientWork, *, trained: bool) -> ClientUpdate:
        """The client's side after training: its stages, its encoder (and the digest of
        what the encoder's decoder must reproduce)."""
        if not self.client_stages and self.encoder is None:
            return _digested(update, work)
        assert self.spec is not None
        assert update.delta is not None
        task = work.task
        ctx = StageContext(
            self.seed, task.round, task.version, self.spec, task.params, task.client_id, work.index
        )
        row = update.delta
        if trained and not work.adversarial and self.client_stages:
            # Honest clients run the client pipeline; an adversary sends what it wants.
            row, stage_metrics = run_client_stages(self.client_stages, row, self.client_state, ctx)
            flat = {
                f"{stage}.{k}": float(v) for stage, m in stage_metrics.items() for k, v in m.items()
            }
            update = replace(update, delta=row, metrics={**update.metrics, **flat})
        if self.encoder is None:
            return _digested(update, work)
        state = self.client_state.get(task.client_id, self.encoder.name)
        payload, decoded, state = self.encoder.encode(row, state, ctx)
        if state:
            self.client_state.put(task.client_id, self.encoder.name, state)
            capacity = self.encoder.state_capacity
            if capacity is not None:
                self.client_state.evict(self.encoder.name, keep=capacity)
        return replace(
            update,
            delta=None,
            payload=payload,
            encoding=self.encoder.encoding,
            digest=tensor_digest(decoded),
        )

    def train(self, work: ClientWork) -> ClientUpdate:
        """Train one client: write its delta into ``work.out`` and return its update."""
        raise NotImplementedError


class SequentialClients(SimulatedClients):
    """Train the clients one after another in this process with one reusable trainer.

    Client ``c`` in round ``r`` shuffles its batches with a generator derived from
    ``(seed, r, c, "train")``, so its update is the same whatever else runs in the round.
    A task's :class:`~velocity.types.TaskConfig` overrides the trainer's settings (lr, local
    epochs or steps, FedProx ``mu``) for that client. With
    ``TrainConfig.keep_optimizer_state`` each client's optimizer state (DiLoCo's inner AdamW
    moments) is kept in :attr:`client_state` under ``"optimizer-<optimizer>"`` between its
    rounds, and so checkpointed with the engine.
    """

    name: ClassVar[str] = "sequential"

    def __init__(
        self,
        trainer: Trainer,
        x: Tensor,
        y: Tensor,
        population: Population,
        *,
        seed: int,
        num_classes: int | None = None,
        dropout_rate: float = 0.0,
        straggler: DelayModel | None = None,
        adversary: SimulatedAdversary | None = None,
    ) -> None:
        super().__init__(
            population,
            seed=seed,
            dropout_rate=dropout_rate,
            straggler=straggler,
            adversary=adversary,
        )
        self.trainer = trainer
        self.x = x
        self.y = y
        self.num_classes = num_classes
        self._configs: dict[Any, TrainConfig] = {}

    def _config(self, task: ClientTask) -> TrainConfig:
        cfg = task.config
        key = (cfg.lr, cfg.local_epochs, cfg.local_steps, cfg.prox_mu)
        found = self._configs.get(key)
        if found is None:
            base = self.trainer.config
            changes: dict[str, Any] = {}
            if cfg.lr is not None:
                changes["lr"] = cfg.lr
            if cfg.local_steps is not None:
                changes["local_steps"] = cfg.local_steps
            elif cfg.local_epochs is not None:
                changes["local_epochs"] = cfg.local_epochs
                changes["local_steps"] = None
            if cfg.prox_mu is not None:
                changes["prox_mu"] = cfg.prox_mu
            found = replace(base, **changes) if changes else base
            self._configs[key] = found
        return found

    def train(self, work: ClientWork) -> ClientUpdate:
        task, client = work.task, work.index
        x, y, idx = self.x, self.y, self.population.indices(client)
        attack = work.poison
        if attack is not None:
            x, y = poison_client_data(
                attack,
                self.x[idx],
                self.y[idx],
                num_classes=self._classes(),
                seed=self.seed,
                round_=task.round,
                client=client,
            )
            idx = torch.arange(idx.shape[0], dtype=idx.dtype, device=idx.device)
        config = self._config(task)
        # A kept optimizer state (DiLoCo's inner AdamW) is the client's, in the engine's store.
        kept = f"optimizer-{config.optimizer}" if config.keep_optimizer_state else None
        res = self.trainer.train(
            task.params,
            x,
            y,
            idx,
            generator=torch_generator(self.seed, task.round, client, "train"),
            out=work.out,
            config=config,
            initial_loss=wants_initial_loss(task),
            optimizer_state=None if kept is None else self.client_state.get(task.client_id, kept),
        )
        if kept is not None and res.optimizer_state is not None:
            self.client_state.put(task.client_id, kept, res.optimizer_state)
        scale_poisoned_update(attack, work.out)
        return ClientUpdate(
            task.client_id, res.num_samples, work.out, loss=res.loss, metrics=dict(res.metrics)
        )

    def _classes(self) -> int:
        if self.num_classes is None:
            if self.y.ndim != 1 or self.y.is_floating_point():
                raise ConfigurationError(
                    "data poisoning needs integer class labels; this dataset has none"
                )
            self.num_classes = int(self.y.max()) + 1
        return self.num_classes


def _digested(update: ClientUpdate, work: ClientWork) -> ClientUpdate:
    """``update`` with its digest, unless its delta is the task's own ``out`` row."""
    if work.task.out is not None and update.delta is work.task.out:
        return update
    return update.with_digest()


def poison_client_data(
    attack: DataAttack,
    x: Tensor,
    y: Tensor,
    *,
    num_classes: int,
    seed: int,
    round_: int,
    client: int,
) -> tuple[Tensor, Tensor]:
    """``attack.poison`` of one client's data with the generator every provider must use:
    derived from ``(seed, round, client, "poison")``."""
    generator = torch_generator(seed, round_, client, "poison")
    return attack.poison(x, y, num_classes=num_classes, generator=generator)


def scale_poisoned_update(attack: DataAttack | None, row: Tensor) -> None:
    """Multiply a poisoned client's update row by ``attack.update_scale()`` in place."""
    if attack is not None and attack.update_scale() != 1.0:
        row.mul_(attack.update_scale())
