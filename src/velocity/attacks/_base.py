"""What every attack shares: its result record, the round context it sees, its base classes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from velocity._validation import Constraint, Integer, check_parameters, check_value
from velocity.errors import ValidationError

__all__ = [
    "Attack",
    "AttackContext",
    "AttackResult",
    "DataAttack",
    "UpdateAttack",
]

_NUM_CLASSES = Integer(low=2)


@dataclass(frozen=True)
class AttackResult:
    """Outcome of one simulated attack in one round (an entry of a round's ``attack_results``).

    ``attack_type`` is the attack's name (``"model_poisoning"``, ``"little"``, ...);
    ``clients_affected`` how many submitted updates the adversary controlled that round;
    ``severity`` the attack's strength parameter (boost, noise scale, flip rate, ``z``, ``γ``…,
    see each attack's :meth:`Attack.severity`); ``description`` a sentence saying what happened,
    including rows a non-finite filter dropped. The optional fields give the detail:
    ``client_ids`` (the adversarial identities), ``filtered`` (those whose rows the
    aggregator dropped as non-finite) and ``metrics`` (e.g. ``backdoor_success_rate``).
    """

    attack_type: str
    clients_affected: int
    severity: float
    description: str
    client_ids: tuple[str, ...] = ()
    filtered: tuple[str, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(
            (
                self.attack_type,
                self.clients_affected,
                self.severity,
                self.description,
                self.client_ids,
                self.filtered,
                tuple(sorted(self.metrics.items())),
            )
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; non-finite severities and metrics become ``None`` (JSON has no
        infinity), which :meth:`from_dict` reads back as NaN."""

        def num(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        return {
            "attack_type": self.attack_type,
            "clients_affected": int(self.clients_affected),
            "severity": num(self.severity),
            "description": self.description,
            "client_ids": list(self.client_ids),
            "filtered": list(self.filtered),
            "metrics": {k: num(float(v)) for k, v in self.metrics.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AttackResult:
        """Inverse of :meth:`to_dict`; unknown keys are refused, the optional ones may be absent.

        >>> AttackResult.from_dict({"attack_type": "sybil_nodes", "clients_affected": 3,
        ...                         "severity": 1.0, "description": "x"}).clients_affected
        3
        """
        if not isinstance(d, Mapping):
            raise ValidationError(f"AttackResult.from_dict needs a mapping; got {d!r}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValidationError(
                f"AttackResult.from_dict: unknown keys {unknown}; valid keys: {', '.join(names)}"
            )
        required = names[:4]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValidationError(f"AttackResult.from_dict: missing keys {missing}")
        severity = d["severity"]
        return cls(
            attack_type=str(d["attack_type"]),
            clients_affected=int(d["clients_affected"]),
            severity=float("nan") if severity is None else float(severity),
            description=str(d["description"]),
            client_ids=tuple(str(c) for c in d.get("client_ids", ())),
            filtered=tuple(str(c) for c in d.get("filtered", ())),
            metrics={
                str(k): float("nan") if v is None else float(v)
                for k, v in dict(d.get("metrics", {})).items()
            },
        )


@dataclass(frozen=True)
class AttackContext:
    """What an update attack sees in a round.

    Attributes
    ----------
    honest : Tensor, shape (h, d)
        The honest participants' updates of this round (omniscient attacks read them;
        ``h`` may be 0 for attacks that do not).
    own : Tensor of shape (f, d), or None
        The adversarial clients' own honest updates (trained on their data from the round's
        global model), for attacks that start from them.
    num_byzantine : int
        ``f``: how many adversarial rows to produce.
    generator : torch.Generator
        The only source of randomness (derived from the run seed, the round and the attack).
    num_participants : int
        ``N``: every row the aggregator will see (honest + adversarial); ``h + f`` by default.
    round_byzantine : int
        All adversarial rows of the round, of every attack (``f`` by default): what an attack
        that reasons about "the f Byzantine clients" (``little``) means by f.
    """

    honest: Tensor
    own: Tensor | None
    num_byzantine: int
    generator: torch.Generator
    num_participants: int = -1
    round_byzantine: int = -1

    def __post_init__(self) -> None:
        if self.honest.ndim != 2:
            raise ValidationError(
                f"AttackContext.honest must be (h, d); got shape {tuple(self.honest.shape)}"
            )
        if self.num_byzantine < 1:
            raise ValidationError(
                f"AttackContext.num_byzantine must be >= 1; got {self.num_byzantine}"
            )
        if self.own is not None and self.own.shape != (self.num_byzantine, self.dim):
            raise ValidationError(
                f"AttackContext.own must be ({self.num_byzantine}, {self.dim}); "
                f"got {tuple(self.own.shape)}"
            )
        if self.round_byzantine == -1:
            object.__setattr__(self, "round_byzantine", self.num_byzantine)
        elif self.round_byzantine < self.num_byzantine:
            raise ValidationError(
                f"AttackContext.round_byzantine must be >= num_byzantine "
                f"({self.num_byzantine}); got {self.round_byzantine}"
            )
        rows = self.honest.shape[0] + self.round_byzantine
        if self.num_participants == -1:
            object.__setattr__(self, "num_participants", rows)
        elif self.num_participants < rows:
            raise ValidationError(
                f"AttackContext.num_participants must be >= h + f = {rows}; "
                f"got {self.num_participants}"
            )

    @property
    def dim(self) -> int:
        return int(self.honest.shape[1])


@dataclass(frozen=True)
class Attack:
    """Base of every attack: a frozen dataclass validated against ``_constraints``.

    Class attributes say what the round loop must provide: ``needs_honest`` (omniscient: the
    same round's honest updates), ``needs_own`` (the adversary's own honest update) and
    ``intensity_field`` (the parameter :meth:`VelocityServer.simulate_attack`'s ``intensity``
    sets, or ``None``).
    """

    name: ClassVar[str]
    kind: ClassVar[Literal["update", "data"]]
    needs_honest: ClassVar[bool] = False
    needs_own: ClassVar[bool] = False
    intensity_field: ClassVar[str | None] = None
    _constraints: ClassVar[Mapping[str, Constraint]] = {}

    def __post_init__(self) -> None:
        check_parameters(self)

    def severity(self) -> float:
        """The attack's strength as one number (its main parameter; see each class)."""
        return 1.0

    def severity_for(self, ctx: AttackContext) -> float:
        """The severity in a given round (attacks whose strength depends on it override)."""
        return self.severity()

    def describe(self) -> str:
        """``name(param=value, ...)``."""
        params = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"{self.name}({params})"


@dataclass(frozen=True)
class UpdateAttack(Attack):
    """An adversary that replaces its clients' updates by crafted vectors."""

    kind: ClassVar[Literal["update", "data"]] = "update"

    def _check(self, ctx: AttackContext) -> None:
        if self.needs_honest and ctx.honest.shape[0] == 0:
            raise ValidationError(
                f"{self.name}: needs at least one honest update in the round; got none"
            )
        if self.needs_own and ctx.own is None:
            raise ValidationError(f"{self.name}: needs the adversary's own honest updates")

    def craft_with_severity(self, ctx: AttackContext) -> tuple[Tensor, float]:
        """:meth:`craft` and :meth:`severity_for` together (one pass where they share work)."""
        return self.craft(ctx), self.severity_for(ctx)

    def craft(self, ctx: AttackContext) -> Tensor:
        """The ``(f, d)`` adversarial updates for this round (checked and float32)."""
        self._check(ctx)
        out = self._craft(ctx)
        if out.shape != (ctx.num_byzantine, ctx.dim):
            raise ValidationError(
                f"{self.name}: crafted shape {tuple(out.shape)}, expected "
                f"({ctx.num_byzantine}, {ctx.dim})"
            )
        return out.to(torch.float32)

    def _craft(self, ctx: AttackContext) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class DataAttack(Attack):
    """An adversary that poisons its clients' local data; they then train as usual.

    ``poison`` maps the client's examples to poisoned ones; the resulting update is
    multiplied by :meth:`update_scale` (1 unless the attack boosts it).
    """

    kind: ClassVar[Literal["update", "data"]] = "data"

    def poison(
        self, x: Tensor, y: Tensor, *, num_classes: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Poisoned ``(x, y)``; the inputs are never modified (an unchanged one may be
        returned as it is)."""
        if y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ValidationError(
                f"{self.name}: needs integer class labels y of shape (n,) matching x; got "
                f"x {tuple(x.shape)}, y {tuple(y.shape)}"
            )
        num_classes = check_value(
            f"{type(self).__name__}.poison", "num_classes", num_classes, _NUM_CLASSES
        )
        return self._poison(x, y, num_classes, generator)

    def _poison(
        self, x: Tensor, y: Tensor, num_classes: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def update_scale(self) -> float:
        return 1.0
