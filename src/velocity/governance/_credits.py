"""The per-client contribution ledger: :class:`CreditTracker` and :class:`CreditRecord`.

One ledger for every engine (the round engine, a DiLoCo coordinator...). Each round reports
who was asked (``selected``), whose update was aggregated and on how many samples
(``accepted``), and whose update arrived but was left out by a robust rule (``excluded``). A
client selected but neither accepted nor excluded dropped out or failed that round.

A client's credit is the number of samples behind its accepted updates.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from velocity._validation import short_repr
from velocity.errors import ValidationError

__all__ = ["CreditRecord", "CreditTracker"]

_FORMAT = 1


@dataclass(frozen=True)
class CreditRecord:
    """What one client contributed so far.

    Attributes
    ----------
    client_id : str
    samples : int
        Sum of the samples of its accepted updates: its credit.
    rounds_selected : int
        Rounds in which it was selected.
    rounds_participated : int
        Rounds in which its update reached the server's aggregation (accepted or excluded):
        ``accepted_updates + excluded_updates``.
    accepted_updates : int
        Updates accepted (aggregated).
    excluded_updates : int
        Updates that arrived but that a robust rule left out.
    first_round, last_round : int or None
        First and last round in which it was selected.
    """

    client_id: str
    samples: int = 0
    rounds_selected: int = 0
    rounds_participated: int = 0
    accepted_updates: int = 0
    excluded_updates: int = 0
    first_round: int | None = None
    last_round: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The counts as a JSON-safe dict (without ``client_id``, which is the ledger key)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "client_id"}

    @classmethod
    def from_dict(cls, client_id: str, mapping: Mapping[str, Any]) -> CreditRecord:
        """Inverse of :meth:`to_dict`: exactly its keys, non-negative ints, consistent counts."""
        expected = {f.name for f in fields(cls)} - {"client_id"}
        where = f"credits of client {client_id!r}"
        if not isinstance(mapping, Mapping) or set(mapping) != expected:
            raise ValidationError(
                f"{where} must be an object with exactly the keys {sorted(expected)}; "
                f"got {short_repr(mapping)}"
            )
        values: dict[str, Any] = {}
        for name in sorted(expected):
            value = mapping[name]
            optional = name in ("first_round", "last_round")
            if value is None and optional:
                values[name] = None
                continue
            if type(value) is not int or value < 0:
                kind = "an int >= 0 or null" if optional else "an int >= 0"
                raise ValidationError(f"{where}: {name} must be {kind}; got {short_repr(value)}")
            values[name] = value
        record = cls(client_id, **values)
        _check_consistent(record)
        return record


def _check_consistent(r: CreditRecord) -> None:
    where = f"credits of client {r.client_id!r}"
    if r.rounds_participated > r.rounds_selected:
        raise ValidationError(
            f"{where}: rounds_participated ({r.rounds_participated}) exceeds rounds_selected "
            f"({r.rounds_selected})"
        )
    if r.accepted_updates + r.excluded_updates != r.rounds_participated:
        raise ValidationError(
            f"{where}: accepted_updates + excluded_updates ({r.accepted_updates} + "
            f"{r.excluded_updates}) must equal rounds_participated ({r.rounds_participated})"
        )
    if (r.first_round is None) != (r.rounds_selected == 0) or (r.first_round is None) != (
        r.last_round is None
    ):
        raise ValidationError(
            f"{where}: first_round and last_round are null exactly when rounds_selected is 0"
        )
    if r.first_round is not None and r.last_round is not None and r.first_round > r.last_round:
        raise ValidationError(
            f"{where}: first_round ({r.first_round}) is after last_round ({r.last_round})"
        )
    if r.accepted_updates == 0 and r.samples:
        raise ValidationError(f"{where}: {r.samples} samples but no accepted update")


def _ids(owner: str, name: str, value: object, round: int) -> list[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
        raise ValidationError(
            f"{owner}: {name} of round {round} must be a sequence of client ids; "
            f"got {short_repr(value)}"
        )
    ids = list(value)
    seen: set[str] = set()
    for client_id in ids:
        if not isinstance(client_id, str) or not client_id:
            raise ValidationError(
                f"{owner}: {name} of round {round} holds {short_repr(client_id)}; client ids "
                "are non-empty str"
            )
        if client_id in seen:
            raise ValidationError(
                f"{owner}: client {client_id!r} is twice in {name} of round {round}"
            )
        seen.add(client_id)
    return ids


class CreditTracker:
    """Per-client credits (samples aggregated) and participation counts.

    Examples
    --------
    >>> tracker = CreditTracker()
    >>> tracker.record_round(1, selected=["a", "b", "c"], accepted={"a": 100, "b": 50},
    ...                      excluded=["c"])
    >>> tracker.record_round(2, selected=["a", "c"], accepted={"a": 80, "c": 20})
    >>> tracker.all_credits()
    {'a': 180, 'b': 50, 'c': 20}
    >>> tracker.get_credits("a"), tracker.get_credits("never-seen"), tracker.total_samples
    (180, 0, 250)
    >>> tracker.records()["c"].excluded_updates
    1
    """

    def __init__(self) -> None:
        self._records: dict[str, CreditRecord] = {}
        self._last_round: int | None = None
        self._rounds = 0

    def record_round(
        self,
        round: int,
        *,
        selected: Sequence[str],
        accepted: Mapping[str, int],
        excluded: Sequence[str] = (),
    ) -> None:
        """Add one round. Rounds are recorded once each, in increasing order.

        Parameters
        ----------
        round : int
            The round number, >= 0 and greater than the last one recorded.
        selected : sequence of str
            Clients asked to train this round.
        accepted : mapping of str to int
            ``{client_id: samples}`` of the updates aggregated; each id must be selected.
        excluded : sequence of str
            Clients whose update arrived but was left out; selected, and not accepted.

        Raises
        ------
        ValidationError
            Naming the round and the client: a round out of order, duplicate ids, an accepted
            or excluded id that was not selected, a client both accepted and excluded, a
            negative or non-integer sample count. Nothing is recorded then.
        """
        owner = "CreditTracker.record_round"
        if type(round) is not int or round < 0:
            raise ValidationError(f"{owner}: round must be an int >= 0; got {short_repr(round)}")
        if self._last_round is not None and round <= self._last_round:
            raise ValidationError(
                f"{owner}: round {round} comes after round {self._last_round}, which is "
                "already recorded; rounds are recorded once each, in increasing order"
            )
        chosen = _ids(owner, "selected", selected, round)
        if not isinstance(accepted, Mapping):
            raise ValidationError(
                f"{owner}: accepted of round {round} must be a mapping of client id to "
                f"samples; got {short_repr(accepted)}"
            )
        left_out = _ids(owner, "excluded", excluded, round)
        chosen_set = set(chosen)
        samples: dict[str, int] = {}
        for client_id, count in accepted.items():
            if client_id not in chosen_set:
                raise ValidationError(
                    f"{owner}: client {short_repr(client_id)} is accepted in round {round} but "
                    "was not selected"
                )
            if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
                raise ValidationError(
                    f"{owner}: client {client_id!r} in round {round} has samples="
                    f"{short_repr(count)}; expected an int >= 0"
                )
            samples[client_id] = int(count)
        for client_id in left_out:
            if client_id not in chosen_set:
                raise ValidationError(
                    f"{owner}: client {client_id!r} is excluded in round {round} but was not "
                    "selected"
                )
            if client_id in samples:
                raise ValidationError(
                    f"{owner}: client {client_id!r} is both accepted and excluded in round {round}"
                )
        out = set(left_out)
        for client_id in chosen:
            old = self._records.get(client_id) or CreditRecord(client_id)
            taken = client_id in samples
            self._records[client_id] = CreditRecord(
                client_id,
                samples=old.samples + samples.get(client_id, 0),
                rounds_selected=old.rounds_selected + 1,
                rounds_participated=old.rounds_participated + (taken or client_id in out),
                accepted_updates=old.accepted_updates + taken,
                excluded_updates=old.excluded_updates + (client_id in out),
                first_round=round if old.first_round is None else old.first_round,
                last_round=round,
            )
        self._last_round = round
        self._rounds += 1

    def all_credits(self) -> dict[str, int]:
        """``{client_id: samples}`` of every client ever selected, sorted by id."""
        return {client_id: r.samples for client_id, r in sorted(self._records.items())}

    def get_credits(self, client_id: str) -> int:
        """The samples credited to ``client_id``; 0 for a client never selected."""
        record = self._records.get(client_id)
        return 0 if record is None else record.samples

    def records(self) -> dict[str, CreditRecord]:
        """``{client_id: CreditRecord}``, sorted by id."""
        return dict(sorted(self._records.items()))

    @property
    def total_samples(self) -> int:
        """Samples credited over all clients and rounds."""
        return sum(r.samples for r in self._records.values())

    @property
    def rounds_recorded(self) -> int:
        """How many rounds were recorded."""
        return self._rounds

    @property
    def last_round(self) -> int | None:
        """The last round recorded, ``None`` before the first."""
        return self._last_round

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return (
            f"CreditTracker(clients={len(self._records)}, rounds={self._rounds}, "
            f"total_samples={self.total_samples})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``{"clients": {id: counts}, "format": 1, "last_round", "rounds"}``.

        Examples
        --------
        >>> tracker = CreditTracker()
        >>> tracker.record_round(0, selected=["a"], accepted={"a": 3})
        >>> CreditTracker.from_dict(tracker.to_dict()).all_credits()
        {'a': 3}
        """
        return {
            "clients": {client_id: r.to_dict() for client_id, r in sorted(self._records.items())},
            "format": _FORMAT,
            "last_round": self._last_round,
            "rounds": self._rounds,
        }

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any]) -> CreditTracker:
        """Inverse of :meth:`to_dict`, strictly checked (resume a ledger from a checkpoint).

        Raises
        ------
        ValidationError
            Wrong keys or types, or counts that no sequence of rounds could produce.
        """
        keys = {"clients", "format", "last_round", "rounds"}
        if not isinstance(mapping, Mapping) or set(mapping) != keys:
            raise ValidationError(
                f"a credit ledger is an object with exactly the keys {sorted(keys)}; "
                f"got {short_repr(mapping)}"
            )
        if mapping["format"] != _FORMAT or type(mapping["format"]) is not int:
            raise ValidationError(
                f"credit ledger format must be {_FORMAT}; got {short_repr(mapping['format'])}"
            )
        rounds, last = mapping["rounds"], mapping["last_round"]
        if type(rounds) is not int or rounds < 0:
            raise ValidationError(
                f"credit ledger rounds must be an int >= 0; got {short_repr(rounds)}"
            )
        if (last is None) != (rounds == 0) or (
            last is not None and (type(last) is not int or last < rounds - 1)
        ):
            raise ValidationError(
                f"credit ledger last_round must be null when rounds is 0 and an int >= rounds - 1 "
                f"otherwise; got last_round={short_repr(last)}, rounds={rounds}"
            )
        clients = mapping["clients"]
        if not isinstance(clients, Mapping):
            raise ValidationError(
                f"credit ledger clients must be an object; got {short_repr(clients)}"
            )
        tracker = cls()
        for client_id, counts in clients.items():
            if not isinstance(client_id, str) or not client_id:
                raise ValidationError(
                    f"credit ledger client ids are non-empty str; got {short_repr(client_id)}"
                )
            record = CreditRecord.from_dict(client_id, counts)
            if record.rounds_selected > rounds or (
                record.last_round is not None and last is not None and record.last_round > last
            ):
                raise ValidationError(
                    f"credits of client {client_id!r} cover more rounds than the ledger "
                    f"({record.rounds_selected} selected, last round {record.last_round}; the "
                    f"ledger has {rounds} rounds up to {last})"
                )
            tracker._records[client_id] = record
        tracker._rounds = rounds
        tracker._last_round = last
        return tracker
