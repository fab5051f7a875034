"""The one round loop of a simulated federation."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from velocity._core import Orchestrator
from velocity._random import torch_generator
from velocity.errors import ConfigurationError
from velocity.sim.population import ClientPopulation
from velocity.sim.provider import ClientResult, UpdateProvider
from velocity.sim.records import RoundRecord

if TYPE_CHECKING:
    from velocity.attacks import Assignment, AttackPlan
from velocity.sim.sampling import DropoutModel, StragglerModel, select_clients
from velocity.types import ParamSpec

__all__ = ["Simulation", "SimulationSettings", "serialized_size"]

Evaluator = Callable[[Tensor], tuple[float, float]]
"""Maps flat global parameters to (test loss, test accuracy)."""

TriggerEvaluator = Callable[[Tensor, Any], float]
"""Maps flat global parameters and a backdoor attack to its attack success rate."""


def serialized_size(spec: ParamSpec, params: Tensor) -> int:
    """Bytes of ``params`` serialized as safetensors under ``spec``'s names and shapes."""
    from safetensors.torch import save

    tensors = {k: v.contiguous() for k, v in spec.unflatten(params).items()}
    return len(save(tensors))


@dataclass(frozen=True)
class SimulationSettings:
    """Round-level behaviour of a simulation (see ``docs/configuration.md``)."""

    seed: int
    client_fraction: float = 1.0
    min_clients: int = 1
    dropout_rate: float = 0.0
    straggler: StragglerModel | None = None
    eval_every: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.client_fraction <= 1.0:
            raise ConfigurationError(
                f"client_fraction must be in (0, 1]; got {self.client_fraction}"
            )
        if self.min_clients < 1:
            raise ConfigurationError(f"min_clients must be >= 1; got {self.min_clients}")
        if self.eval_every < 1:
            raise ConfigurationError(f"eval_every must be >= 1; got {self.eval_every}")
        DropoutModel(self.dropout_rate)  # validates the rate


class Simulation:
    """select clients -> broadcast -> local training -> aggregate -> server step -> evaluate.

    The loop is the same whatever the provider: it selects the round's clients from the
    population, removes those that drop out or miss the deadline, asks the
    :class:`~velocity.sim.provider.UpdateProvider` to write each participant's update into a
    row of one preallocated ``(n, d)`` stack, and hands the stack to the aggregation state
    (:class:`velocity._core.Orchestrator`: strategy pipeline and server optimizer). Every
    random choice is derived from ``(seed, round, client, purpose)``.
    """

    def __init__(
        self,
        *,
        provider: UpdateProvider,
        population: ClientPopulation,
        spec: ParamSpec,
        init_params: Tensor,
        strategy: Any,
        settings: SimulationSettings,
        evaluate: Evaluator | None = None,
        attacks: AttackPlan | None = None,
        backdoor_evaluate: TriggerEvaluator | None = None,
    ) -> None:
        self.provider = provider
        self.population = population
        self.spec = spec
        self.settings = settings
        self.evaluate = evaluate
        self.core = Orchestrator(init_params, strategy, spec=spec)
        self.dropout = DropoutModel(settings.dropout_rate)
        self.records: list[RoundRecord] = []
        self.attacks = attacks
        self.backdoor_evaluate = backdoor_evaluate
        self._stack = torch.empty(0, spec.d, dtype=torch.float32)
        self._payload = serialized_size(spec, self.core.global_params)

    @property
    def round(self) -> int:
        """Number of completed rounds."""
        return self.core.round

    @property
    def global_params(self) -> Tensor:
        return self.core.global_params

    def _rows(self, k: int) -> Tensor:
        if self._stack.shape[0] < k:
            self._stack = torch.empty(k, self.spec.d, dtype=torch.float32)
        return self._stack[:k]

    def _participants(self, round_: int) -> tuple[list[int], list[int], list[int], list[int]]:
        seed = self.settings.seed
        selected = select_clients(
            self.population.num_clients,
            self.settings.client_fraction,
            self.settings.min_clients,
            seed=seed,
            round_=round_,
        ).tolist()
        dropped = [c for c in selected if self.dropout.dropped(c, seed=seed, round_=round_)]
        gone = set(dropped)
        straggler = self.settings.straggler
        late = [
            c
            for c in selected
            if c not in gone
            and straggler is not None
            and straggler.late(c, seed=seed, round_=round_)
        ]
        gone.update(late)
        return selected, dropped, late, [c for c in selected if c not in gone]

    def run_round(self) -> RoundRecord:
        """Run the next round and return its record."""
        start = time.perf_counter()
        round_ = self.core.round + 1
        selected, dropped, late, active = self._participants(round_)
        ids = self.population.client_id
        aggregation: Mapping[str, Any] = {}
        results: list[ClientResult] = []
        train_loss: float | None = None
        attack_round: _AttackRound | None = None
        participated = [ids(c) for c in active]
        if active:
            assignments = self.attacks.assign(round_, active) if self.attacks else []
            if assignments:
                attack_round = _AttackRound(self, round_, active, assignments)
                rows, counts, participated, results = attack_round.run()
                honest = [r for r in results if r.client not in attack_round.adversarial]
                train_loss = _weighted_loss(honest)
            else:
                rows = self._rows(len(active))
                results = self.provider.train_round(round_, active, self.core.global_params, rows)
                counts = [r.num_samples for r in results]
                train_loss = _weighted_loss(results)
            summary = self.core.aggregate_stacked(
                rows,
                counts,
                participated,
                global_loss=train_loss,
                generator=torch_generator(self.settings.seed, round_, "aggregate"),
            )
            aggregation = summary.metrics
        else:
            # Nobody returned an update: the model stays, the round still counts.
            self.core.load_state(
                self.core.global_params,
                round_=round_,
                optimizer_state=self.core.optimizer_state,
                history=self.core.history,
            )
            aggregation = {"skipped": "no client returned an update"}
        loss = acc = None
        evaluated = self.evaluate is not None and (
            round_ % self.settings.eval_every == 0 or round_ == 1
        )
        if evaluated:
            assert self.evaluate is not None
            loss, acc = self.evaluate(self.core.global_params)
        attack_results: tuple[Mapping[str, Any], ...] = ()
        if attack_round is not None:
            attack_results = attack_round.results(aggregation, evaluated)
            self.core.annotate_last(attack_results)
        record = RoundRecord(
            round=round_,
            selected=tuple(ids(c) for c in selected),
            participated=tuple(participated),
            dropped=tuple(ids(c) for c in dropped),
            stragglers=tuple(ids(c) for c in late),
            global_loss=loss,
            global_accuracy=acc,
            train_loss=train_loss,
            client_accuracy={
                ids(r.client): float(r.metrics["accuracy"])
                for r in results
                if "accuracy" in r.metrics
                and (attack_round is None or r.client not in attack_round.adversarial)
            },
            bytes_up=self._payload * len(participated),
            bytes_down=self._payload * len(selected),
            duration_s=time.perf_counter() - start,
            aggregation=aggregation,
            attack_results=attack_results,
        )
        self.records.append(record)
        return record

    def run(
        self, rounds: int, on_round: Callable[[RoundRecord], None] | None = None
    ) -> list[RoundRecord]:
        """Run ``rounds`` more rounds; ``on_round`` is called after each."""
        out = []
        for _ in range(rounds):
            record = self.run_round()
            out.append(record)
            if on_round is not None:
                on_round(record)
        return out

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Tensors and JSON metadata that restore this simulation exactly (see resume)."""
        tensors = {"global_params": self.core.global_params.contiguous()}
        for key, value in (self.core.optimizer_state or {}).items():
            tensors[f"optimizer.{key}"] = value.contiguous()
        meta = {
            "round": self.core.round,
            "records": [r.to_dict() for r in self.records],
            "history": [s.to_dict() for s in self.core.history],
        }
        return tensors, meta

    def restore(self, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        """Undo :meth:`state`: continue from the saved round as if never interrupted."""
        from velocity.types import RoundSummary

        optimizer = {
            k.removeprefix("optimizer."): v
            for k, v in tensors.items()
            if k.startswith("optimizer.")
        }
        self.core.load_state(
            tensors["global_params"],
            round_=int(meta["round"]),
            optimizer_state=optimizer or None,
            history=[RoundSummary.from_dict(h) for h in meta["history"]],
        )
        self.records = [_record_from_dict(r) for r in meta["records"]]


def _weighted_loss(results: list[ClientResult]) -> float | None:
    pairs = [(r.loss, r.num_samples) for r in results if r.loss is not None]
    total = sum(n for _, n in pairs)
    if not pairs or total == 0:
        return None
    return sum(loss * n for loss, n in pairs) / total


def _record_from_dict(d: Mapping[str, Any]) -> RoundRecord:
    return RoundRecord(
        round=int(d["round"]),
        selected=tuple(d["selected"]),
        participated=tuple(d["participated"]),
        dropped=tuple(d["dropped"]),
        stragglers=tuple(d["stragglers"]),
        global_loss=d["global_loss"],
        global_accuracy=d["global_accuracy"],
        train_loss=d["train_loss"],
        client_accuracy=dict(d["client_accuracy"]),
        bytes_up=int(d["bytes_up"]),
        bytes_down=int(d["bytes_down"]),
        duration_s=float(d["duration_s"]),
        aggregation=dict(d["aggregation"]),
        attack_results=tuple(dict(a) for a in d.get("attack_results", ())),
    )


class _AttackRound:
    """The adversarial part of one round: who trains, what gets crafted, what is reported.

    Rows are laid out ``[honest | adversaries that train | adversaries that only craft |
    Sybil identities]``, so the honest updates are one view (``rows[:h]``) that omniscient
    attacks read without a copy. Each attack draws from a generator derived from
    ``(seed, round, "attack", spec index)``.
    """

    def __init__(
        self, sim: Simulation, round_: int, active: list[int], assignments: list[Assignment]
    ) -> None:
        self.sim = sim
        self.round = round_
        self.active = active
        self.assignments = assignments
        self.adversarial = {c for a in assignments for c in a.clients}
        self.severity: dict[int, float] = {}
        self.ids: dict[int, list[str]] = {}

    def run(self) -> tuple[Tensor, list[int], list[str], list[ClientResult]]:
        sim = self.sim
        ids = sim.population.client_id
        honest = [c for c in self.active if c not in self.adversarial]

        def trains(a: Assignment) -> bool:
            return a.spec.attack.kind == "data" or a.spec.attack.needs_own

        trained_adv = [c for a in self.assignments if trains(a) for c in a.clients]
        crafted_only = [c for a in self.assignments if not trains(a) for c in a.clients]
        extra = sum(a.extra for a in self.assignments)
        adversarial_rows = len(self.adversarial) + extra
        train = honest + trained_adv
        total = len(train) + len(crafted_only) + extra
        rows = sim._rows(total)
        from velocity.attacks import AttackContext, DataAttack

        poison: dict[int, DataAttack] = {
            c: a.spec.attack
            for a in self.assignments
            if isinstance(a.spec.attack, DataAttack)
            for c in a.clients
        }
        results = sim.provider.train_round(
            self.round, train, sim.core.global_params, rows[: len(train)], poison=poison or None
        )
        counts = [r.num_samples for r in results]
        honest_counts = counts[: len(honest)]
        claimed = round(sum(honest_counts) / len(honest_counts)) if honest_counts else 1
        # Sample counts of adversaries that do not train (one per population client: only
        # built when some exist, not on every attacked round of a 100k-client population).
        sizes = sim.population.sizes() if crafted_only else None
        position = {c: i for i, c in enumerate(train)}
        next_free = len(train)
        names = [ids(c) for c in train]
        sybils = 0
        for a in self.assignments:
            attack = a.spec.attack
            if attack.kind == "data":
                self.severity[a.index] = attack.severity()
                self.ids[a.index] = [ids(c) for c in a.clients]
                continue
            f = a.extra or len(a.clients)
            if a.clients and trains(a):
                first = position[a.clients[0]]
                target = rows[first : first + f]
                own: Tensor | None = target.clone()
            else:
                target = rows[next_free : next_free + f]
                own = None
                next_free += f
                if a.extra:
                    new = [f"sybil-{sybils + k}" for k in range(f)]
                    sybils += f
                    names.extend(new)
                    counts.extend([claimed] * f)
                else:
                    names.extend(ids(c) for c in a.clients)
                    assert sizes is not None
                    counts.extend(int(sizes[c]) for c in a.clients)

            ctx = AttackContext(
                honest=rows[: len(honest)],
                own=own,
                num_byzantine=f,
                generator=torch_generator(sim.settings.seed, self.round, "attack", a.key),
                round_byzantine=adversarial_rows,
                num_participants=total,
            )
            crafted, severity = attack.craft_with_severity(ctx)  # type: ignore[attr-defined]
            target.copy_(crafted)
            self.severity[a.index] = severity
            self.ids[a.index] = names[-f:] if not trains(a) else [ids(c) for c in a.clients]
        return rows, counts, names, results

    def results(
        self, aggregation: Mapping[str, Any], evaluated: bool
    ) -> tuple[Mapping[str, Any], ...]:
        from velocity.attacks import AttackResult, Backdoor

        dropped = set(aggregation.get("dropped_nonfinite_clients", []))
        out = []
        for a in self.assignments:
            attack = a.spec.attack
            who = self.ids[a.index]
            filtered = tuple(c for c in who if c in dropped)
            kind = "new identit" if a.extra else "adversarial client"
            plural = ("ies" if a.extra else "s") if len(who) != 1 else ("y" if a.extra else "")
            text = f"{len(who)} {kind}{plural} ran {attack.describe()} in round {self.round}"
            if filtered:
                text += (
                    f"; the aggregator dropped {len(filtered)} of their rows as non-finite "
                    f"({', '.join(filtered)})"
                )
            metrics: dict[str, float] = {}
            if isinstance(attack, Backdoor) and evaluated and self.sim.backdoor_evaluate:
                rate = self.sim.backdoor_evaluate(self.sim.core.global_params, attack)
                metrics["backdoor_success_rate"] = rate
                text += f"; backdoor success rate {rate:.3f}"
            result = AttackResult(
                attack_type=attack.name,
                clients_affected=len(who),
                severity=self.severity[a.index],
                description=text,
                client_ids=tuple(who),
                filtered=filtered,
                metrics=metrics,
            )
            out.append(result.to_dict())
        return tuple(out)
