"""Who attacks when: attack specifications and their resolution into each round's adversaries."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from velocity._random import torch_generator
from velocity._validation import (
    Boolean,
    Constraint,
    Described,
    Integer,
    NoneOr,
    Real,
    TupleOf,
    check_parameters,
    check_value,
)
from velocity.attacks._base import Attack
from velocity.attacks._registry import attack_to_dict, parse_attack
from velocity.attacks._update import SybilNodes
from velocity.errors import ConfigurationError

__all__ = ["Assignment", "AttackPlan", "AttackSpec"]

# Their items (ids or indices) are resolved, and checked, against the population by AttackPlan.
_CLIENTS = Described(TupleOf(), "a list of client ids or indices")


@dataclass(frozen=True)
class AttackSpec:
    """One attack and the clients that carry it out.

    Exactly one of ``fraction`` and ``clients`` names the adversaries (not both, and
    neither for :class:`~velocity.attacks.SybilNodes`, whose ``count`` identities are added):

    - ``fraction``: that share of the *registered* clients (``round(fraction × num_clients)``;
      an error when that is zero), drawn once from the run seed — the same clients are
      adversarial in every round and attack whenever they are selected; with
      ``per_round=True`` it is instead a share of each round's participants (at least one),
      drawn per round;
    - ``clients``: client ids (``"client-0007"``) or population indices.

    The attack is active in rounds ``start_round`` … ``end_round`` (inclusive; ``None``: to
    the end).
    """

    attack: Attack
    fraction: float | None = None
    clients: tuple[int | str, ...] | None = None
    start_round: int = 1
    end_round: int | None = None
    per_round: bool = False

    # ``fraction`` is None when ``clients`` names the adversaries (and for sybil_nodes);
    # whether it must be given is a cross-field rule, checked below.
    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "fraction": Described(NoneOr(Real(low=0.0, high=1.0, low_open=True)), "in (0, 1]"),
        "start_round": Integer(low=1),
        "per_round": Boolean(),
    }

    def __post_init__(self) -> None:
        if not isinstance(self.attack, Attack):
            raise ConfigurationError(f"AttackSpec.attack must be an Attack; got {self.attack!r}")
        name = self.attack.name
        owner = f"attack {name}"
        check_parameters(self, self._constraints, owner=owner)
        start = self.start_round
        end_round = Described(
            NoneOr(Integer(low=start)), f"None or an int >= start_round ({start})"
        )
        object.__setattr__(
            self, "end_round", check_value(owner, "end_round", self.end_round, end_round)
        )
        sybil = isinstance(self.attack, SybilNodes)
        if sybil and (self.fraction is not None or self.clients is not None):
            raise ConfigurationError(
                "attacks.sybil_nodes adds `count` new identities to each round; "
                "fraction and clients do not apply to it"
            )
        if not sybil and (self.fraction is None) == (self.clients is None):
            raise ConfigurationError(
                f"attack {name}: give exactly one of fraction (share of clients) and clients "
                "(their ids)"
            )
        if self.clients is not None:
            clients = check_value(owner, "clients", self.clients, _CLIENTS)
            if not clients:
                raise ConfigurationError(f"attack {name}: clients must not be empty")
            repeated = sorted({str(c) for c in clients if clients.count(c) > 1})
            if repeated:
                raise ConfigurationError(
                    f"attack {name}: clients names {', '.join(repeated)} more than once"
                )
            object.__setattr__(self, "clients", clients)
        if self.per_round and self.fraction is None:
            raise ConfigurationError(
                f"attack {name}: per_round applies to a fraction of each round's participants; "
                "it does not go with clients or sybil_nodes"
            )

    def active(self, round_: int) -> bool:
        return self.start_round <= round_ and (self.end_round is None or round_ <= self.end_round)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AttackSpec:
        """``{"type": name, <attack params>, fraction|clients, start_round, end_round}``."""
        if not isinstance(d, Mapping):
            raise ConfigurationError(f"an attack entry must be a mapping; got {d!r}")
        plan_keys = {"fraction", "clients", "start_round", "end_round", "per_round"}
        attack = parse_attack({k: v for k, v in d.items() if k not in plan_keys})
        clients = d.get("clients")
        if isinstance(clients, list):
            clients = tuple(clients)
        return cls(
            attack=attack,
            fraction=d.get("fraction"),
            clients=clients,
            start_round=d.get("start_round", 1),
            end_round=d.get("end_round"),
            per_round=d.get("per_round", False),
        )

    def to_dict(self) -> dict[str, Any]:
        out = attack_to_dict(self.attack)
        out.update(
            fraction=self.fraction,
            clients=None if self.clients is None else list(self.clients),
            start_round=self.start_round,
            end_round=self.end_round,
            per_round=self.per_round,
        )
        return out


@dataclass(frozen=True)
class Assignment:
    """An attack's adversaries in one round: population indices, or a count of new identities."""

    index: int
    spec: AttackSpec
    clients: tuple[int, ...]
    extra: int = 0
    key: int | str = 0


@dataclass
class AttackPlan:
    """The attacks of a run, resolved against its population and seed.

    Fixed adversary sets (``fraction`` and ``clients``) are resolved once and must not overlap
    (clients named by the initial specs are reserved before any fraction is drawn);
    :meth:`assign` then lists, for a round, which of its participants attack with what. Specs
    can be added later (:meth:`add`, used by ``simulate_attack``).
    """

    num_clients: int
    seed: int
    index_of: Callable[[str], int]
    specs: list[AttackSpec] = field(default_factory=list)
    _fixed: dict[int, frozenset[int]] = field(default_factory=dict)
    _reserved: set[int] = field(default_factory=set)
    _keys: list[int | str] = field(default_factory=list)

    def __post_init__(self) -> None:
        specs, self.specs = list(self.specs), []
        # Clients named explicitly are reserved first, so shares drawn by ``fraction`` avoid
        # them whatever the order the attacks are listed in.
        for spec in specs:
            if spec.clients is not None:
                self._reserved.update(self._index(c, spec) for c in spec.clients)
        for spec in specs:
            self.add(spec)

    def add(self, spec: AttackSpec, *, key: int | str | None = None) -> None:
        """Add an attack. ``key`` names it in every random draw that concerns it (default:
        its position); ``simulate_attack`` passes a key built from the round it was queued
        for, so a resumed server draws what an uninterrupted one would."""
        index = len(self.specs)
        key = index if key is None else key
        if spec.clients is not None:
            chosen = frozenset(self._index(c, spec) for c in spec.clients)
        elif spec.fraction is not None and not spec.per_round:
            k = round(spec.fraction * self.num_clients)
            if k < 1:
                raise ConfigurationError(
                    f"attack {spec.attack.name}: fraction={spec.fraction} of "
                    f"{self.num_clients} clients is less than one client"
                )
            taken = set(self._reserved).union(*self._fixed.values())
            perm = torch.randperm(
                self.num_clients, generator=torch_generator(self.seed, "byzantine", key)
            ).tolist()
            free = [c for c in perm if c not in taken]
            if len(free) < k:
                raise ConfigurationError(
                    f"attack {spec.attack.name}: needs {k} adversarial clients but only "
                    f"{len(free)} are not already adversarial in another attack"
                )
            chosen = frozenset(free[:k])
        else:
            chosen = frozenset()
        for other, clients in self._fixed.items():
            both = chosen & clients
            if both:
                raise ConfigurationError(
                    f"attacks {self.specs[other].attack.name} and {spec.attack.name} both "
                    f"claim clients {sorted(both)}; a client carries at most one attack"
                )
        if chosen:
            self._fixed[index] = chosen
        self.specs.append(spec)
        self._keys.append(key)

    def drop_round(self, round_: int) -> int:
        """Remove the attacks that act in ``round_`` only (queued ones); return how many."""
        keep = [
            i
            for i, spec in enumerate(self.specs)
            if not (spec.start_round == round_ and spec.end_round == round_)
        ]
        removed = len(self.specs) - len(keep)
        if removed:
            self._fixed = {
                new: self._fixed[old] for new, old in enumerate(keep) if old in self._fixed
            }
            self.specs = [self.specs[i] for i in keep]
            self._keys = [self._keys[i] for i in keep]
        return removed

    def _index(self, client: int | str, spec: AttackSpec) -> int:
        if isinstance(client, bool):
            raise ConfigurationError(f"attack {spec.attack.name}: bad client {client!r}")
        if isinstance(client, int):
            idx = client
        elif isinstance(client, str):
            try:
                idx = self.index_of(client)
            except Exception as exc:
                raise ConfigurationError(
                    f"attack {spec.attack.name}: unknown client id {client!r}"
                ) from exc
        else:
            raise ConfigurationError(
                f"attack {spec.attack.name}: clients are ids or indices; got {client!r}"
            )
        if not 0 <= idx < self.num_clients:
            raise ConfigurationError(
                f"attack {spec.attack.name}: client index {idx} is outside "
                f"[0, {self.num_clients - 1}]"
            )
        return idx

    def adversaries(self) -> dict[int, tuple[int, ...]]:
        """Fixed adversary sets by spec index (sorted population indices)."""
        return {i: tuple(sorted(c)) for i, c in self._fixed.items()}

    def assign(self, round_: int, active: Sequence[int]) -> list[Assignment]:
        """The attacks of ``round_`` among the participants ``active`` (in spec order)."""
        out: list[Assignment] = []
        taken: set[int] = set()
        for index, spec in enumerate(self.specs):
            if not spec.active(round_):
                continue
            key = self._keys[index]
            if isinstance(spec.attack, SybilNodes):
                out.append(Assignment(index, spec, (), spec.attack.count, key))
                continue
            if index in self._fixed:
                clients = tuple(c for c in active if c in self._fixed[index] and c not in taken)
            else:
                assert spec.fraction is not None
                pool = [c for c in active if c not in taken and not self._is_fixed(c)]
                k = min(len(pool), max(1, round(spec.fraction * len(active))))
                gen = torch_generator(self.seed, round_, "attackers", key)
                pick = torch.randperm(len(pool), generator=gen)[:k].tolist()
                clients = tuple(pool[i] for i in sorted(pick))
            if clients:
                taken.update(clients)
                out.append(Assignment(index, spec, clients, 0, key))
        return out

    def _is_fixed(self, client: int) -> bool:
        return any(client in s for s in self._fixed.values())
