"""The simulated adversary: who attacks in a round, and the server stage that crafts rows.

Simulation concerns stay on the simulated side. A :class:`SimulatedAdversary` resolves an
:class:`~velocity.attacks.AttackPlan` against each round's participants
(:meth:`SimulatedAdversary.prepare`, asked by the simulated provider before it trains), and
is wired into the round engine in two places:

- :attr:`SimulatedAdversary.stage` — a *pre-aggregation server stage* that sees the honest
  rows and writes the crafted ones. Rows are laid out ``[honest | adversaries that train |
  rows of attacks that only craft, and Sybil identities, in attack order]``, so the honest
  updates are one view (``rows[:h]``) that omniscient attacks read without a copy. Each
  attack draws from ``ctx.generator("attack", key)``. When the batch carries per-row
  losses (:attr:`~velocity.strategies.RoundBatch.losses`, which q-FedAvg weighs rows by),
  every crafted row — an update attacker's own, a craft-only attacker's, a Sybil's — claims
  the largest honest loss: a Byzantine client may claim any loss, and q-FedAvg gives the
  most weight to the highest one (for q > 0, ``F^q`` grows fastest there), so this is the
  claim that serves the attack best without standing out above every honest client. A
  data-poisoning client follows the protocol and keeps the loss it measured on its
  poisoned data.
- :meth:`SimulatedAdversary.annotate` — after evaluation, the round's
  :class:`~velocity.attacks.AttackResult`\\ s: who attacked, how hard, which rows a
  non-finite filter dropped, and the backdoor's success rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from velocity.attacks import (
    AttackContext,
    AttackPlan,
    AttackResult,
    Backdoor,
    DataAttack,
    UpdateAttack,
)
from velocity.strategies import RoundBatch

if TYPE_CHECKING:
    from velocity.attacks import Assignment
    from velocity.sim.population import Population
    from velocity.types import ParamSpec, RoundResult, StageContext, StageState

__all__ = ["BackdoorEvaluator", "RoundAttack", "SimulatedAdversary"]

BackdoorEvaluator = Callable[[Tensor, Backdoor], float]
"""Maps flat global parameters and a backdoor attack to its attack success rate."""


def _trains(a: Assignment) -> bool:
    return a.spec.attack.kind == "data" or a.spec.attack.needs_own


@dataclass
class RoundAttack:
    """One round's adversaries among its participants (population indices)."""

    round: int
    assignments: list[Assignment]
    adversarial: frozenset[int]
    poison: dict[int, DataAttack]
    craft_only: frozenset[int]
    severity: dict[int, float] = field(default_factory=dict)
    ids: dict[int, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, round_: int, assignments: list[Assignment]) -> RoundAttack:
        return cls(
            round=round_,
            assignments=assignments,
            adversarial=frozenset(c for a in assignments for c in a.clients),
            poison={
                c: a.spec.attack
                for a in assignments
                if isinstance(a.spec.attack, DataAttack)
                for c in a.clients
            },
            craft_only=frozenset(c for a in assignments if not _trains(a) for c in a.clients),
        )


class SimulatedAdversary:
    """The attacks of a simulated run (see the module docstring)."""

    def __init__(
        self,
        plan: AttackPlan,
        population: Population,
        *,
        backdoor_evaluate: BackdoorEvaluator | None = None,
    ) -> None:
        self.plan = plan
        self.population = population
        self.backdoor_evaluate = backdoor_evaluate
        self._rounds: dict[int, RoundAttack] = {}
        self.stage = _AdversaryStage(self)

    def prepare(self, round_: int, active: list[int]) -> RoundAttack | None:
        """Resolve ``round_``'s attacks among the participants ``active`` (kept for the stage)."""
        self._rounds.pop(round_ - 1, None)
        assignments = self.plan.assign(round_, active)
        if not assignments:
            self._rounds.pop(round_, None)
            return None
        attack = RoundAttack.of(round_, assignments)
        self._rounds[round_] = attack
        return attack

    def current(self, round_: int) -> RoundAttack | None:
        return self._rounds.get(round_)

    # ------------------------------------------------------------------ the stage

    def craft(self, batch: RoundBatch, attack: RoundAttack, ctx: StageContext) -> RoundBatch:
        index_of = self.population.index_of
        ids = self.population.client_id
        position = {index_of(cid): j for j, cid in enumerate(batch.client_ids)}
        honest = [
            j for j, cid in enumerate(batch.client_ids) if index_of(cid) not in attack.adversarial
        ]
        # Adversaries whose update did not reach aggregation (rejected by the engine) take no
        # part: every count below is over those present.
        present = {
            a.index: tuple(c for c in a.clients if c in position) for a in attack.assignments
        }
        trained = [c for a in attack.assignments if _trains(a) for c in present[a.index]]
        crafted = [c for a in attack.assignments if not _trains(a) for c in present[a.index]]
        extra = sum(a.extra for a in attack.assignments)
        adversarial_rows = len(trained) + len(crafted) + extra
        train = len(honest) + len(trained)
        total = train + len(crafted) + extra
        rows = self.stage.rows(total, batch.rows.shape[1])
        counts: list[int] = []
        names: list[str] = []
        given = batch.losses
        losses: list[float] = []
        for k, j in enumerate([*honest, *(position[c] for c in trained)]):
            rows[k].copy_(batch.rows[j])
            counts.append(int(batch.num_samples[j]))
            names.append(batch.client_ids[j])
            if given is not None:
                losses.append(given[j])
        claimed_loss = _claimed_loss(losses[: len(honest)])
        honest_counts = counts[: len(honest)]
        claimed = round(sum(honest_counts) / len(honest_counts)) if honest_counts else 1
        next_free = train
        row_of = {c: len(honest) + k for k, c in enumerate(trained)}
        sybils = 0
        for a in attack.assignments:
            spec_attack = a.spec.attack
            clients = present[a.index]
            if not clients and not a.extra:
                continue
            if spec_attack.kind == "data":
                attack.severity[a.index] = spec_attack.severity()
                attack.ids[a.index] = [ids(c) for c in clients]
                continue
            f = a.extra or len(clients)
            own: Tensor | None
            if clients and _trains(a):
                first = row_of[clients[0]]
                target = rows[first : first + f]
                own = target.clone()
                if given is not None:
                    losses[first : first + f] = [claimed_loss] * f
            else:
                target = rows[next_free : next_free + f]
                own = None
                next_free += f
                if given is not None:
                    losses.extend([claimed_loss] * f)
                if a.extra:
                    new = [f"sybil-{sybils + k}" for k in range(f)]
                    sybils += f
                    names.extend(new)
                    counts.extend([claimed] * f)
                else:
                    names.extend(ids(c) for c in clients)
                    counts.extend(int(batch.num_samples[position[c]]) for c in clients)
            assert isinstance(spec_attack, UpdateAttack)
            context = AttackContext(
                honest=rows[: len(honest)],
                own=own,
                num_byzantine=f,
                generator=ctx.generator("attack", a.key),
                round_byzantine=adversarial_rows,
                num_participants=total,
            )
            crafted_rows, severity = spec_attack.craft_with_severity(context)
            target.copy_(crafted_rows)
            attack.severity[a.index] = severity
            attack.ids[a.index] = names[-f:] if not _trains(a) else [ids(c) for c in clients]
        return RoundBatch(
            rows=rows,
            num_samples=counts,
            client_ids=names,
            losses=None if given is None else losses,
        )

    # ------------------------------------------------------------------ the report

    def annotate(self, result: RoundResult, params: Tensor) -> RoundResult:
        """Attach the round's :class:`~velocity.attacks.AttackResult`\\ s (as dicts)."""
        attack = self._rounds.get(result.round)
        if attack is None or not attack.severity:
            return result
        dropped = set(result.aggregation.get("dropped_nonfinite_clients", []))
        evaluated = result.global_loss is not None or result.global_accuracy is not None
        out: list[Mapping[str, Any]] = []
        for a in attack.assignments:
            if a.index not in attack.ids:
                continue  # none of its adversaries reached aggregation
            spec_attack = a.spec.attack
            who = attack.ids[a.index]
            filtered = tuple(c for c in who if c in dropped)
            kind = "new identit" if a.extra else "adversarial client"
            plural = ("ies" if a.extra else "s") if len(who) != 1 else ("y" if a.extra else "")
            text = f"{len(who)} {kind}{plural} ran {spec_attack.describe()} in round {result.round}"
            if filtered:
                text += (
                    f"; the aggregator dropped {len(filtered)} of their rows as non-finite "
                    f"({', '.join(filtered)})"
                )
            metrics: dict[str, float] = {}
            if isinstance(spec_attack, Backdoor) and evaluated and self.backdoor_evaluate:
                rate = self.backdoor_evaluate(params, spec_attack)
                metrics["backdoor_success_rate"] = rate
                text += f"; backdoor success rate {rate:.3f}"
            out.append(
                AttackResult(
                    attack_type=spec_attack.name,
                    clients_affected=len(who),
                    severity=attack.severity[a.index],
                    description=text,
                    client_ids=tuple(who),
                    filtered=filtered,
                    metrics=metrics,
                ).to_dict()
            )
        return replace(result, attack_results=tuple(out))


def _claimed_loss(honest: list[float]) -> float:
    """The loss a crafted row claims: the largest finite honest loss (1.0 without one)."""
    finite = [loss for loss in honest if math.isfinite(loss)]
    return max(finite, default=1.0)


class _AdversaryStage:
    """The adversary as a pre-aggregation server stage (simulation only)."""

    def __init__(self, adversary: SimulatedAdversary) -> None:
        self._adversary = adversary
        self._buffer = torch.empty(0, 0, dtype=torch.float32)

    @property
    def name(self) -> str:
        return "adversary"

    def rows(self, k: int, d: int) -> Tensor:
        if self._buffer.shape[0] < k or self._buffer.shape[1] != d:
            self._buffer = torch.empty(k, d, dtype=torch.float32)
        return self._buffer[:k]

    def init(self, spec: ParamSpec) -> StageState:
        return {}

    def apply(
        self, x: RoundBatch, state: StageState, ctx: StageContext
    ) -> tuple[RoundBatch, StageState, Mapping[str, Any]]:
        attack = self._adversary.current(ctx.round)
        if attack is None:
            return x, state, {}
        return self._adversary.craft(x, attack, ctx), state, {}
