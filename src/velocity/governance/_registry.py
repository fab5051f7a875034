"""Client records kept out of the chain, so that they can be erased while the chain verifies.

Personal or identifying details of a client (its owner, its site, its contact...) never enter
the hash chain. They live in ``governance/clients.json``::

    {"<client_id>": {"record": {...any JSON object...}, "salt": "<32 hex digits>"}, ...}

and, once erased, ``{"<client_id>": {"erased": true}}`` (``canonical_json(...) + b"\\n"``,
file mode 0o600). The chain holds only a salted commitment per client::

    commitment = sha256_hex(bytes.fromhex(salt) + canonical_json(record))

in the data of one event (normally ``run_started``) under ``"client_commitments"``:
``{"<client_id>": "<commitment>", ...}``. The salt is 16 random bytes from
:func:`secrets.token_bytes`, never derived from the run's seed, so a commitment cannot be
brute-forced back into the record. Erasing a client (:func:`erase_client`) deletes its record
and salt and appends an ``erasure`` event with data ``{"client_id", "commitment", "reason"}``;
the old commitment stays in the chain, now unlinkable to any data, and every hash still
verifies.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from velocity._validation import short_repr
from velocity.errors import SecurityError, ValidationError
from velocity.governance._audit import GENESIS, AuditEvent, AuditWriter, is_hex64, load_log
from velocity.governance._hashing import canonical_json, parse_json, sha256_hex
from velocity.governance._io import MIB, atomic_write, read_bounded
from velocity.governance._problem import Problem
from velocity.governance._signing import (
    SIGNATURE,
    load_signature,
    load_signing_key,
    public_key_hex,
    sign_head,
    verify_signature,
    write_signature,
)

__all__ = [
    "CLIENTS",
    "COMMITMENTS_KEY",
    "ERASURE_KIND",
    "MAX_CLIENTS_BYTES",
    "ClientRegistry",
    "chain_commitments",
    "chain_erasures",
    "erase_client",
    "record_commitment",
]

CLIENTS = "clients.json"
#: Key of an event's data that holds ``{client_id: commitment}``.
COMMITMENTS_KEY = "client_commitments"
#: Kind of the event :func:`erase_client` appends.
ERASURE_KIND = "erasure"
MAX_CLIENTS_BYTES = 256 * MIB
_SALT = re.compile(r"[0-9a-f]{32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_ID = 256
_MAX_REASON = 1000


def _check_client_id(client_id: object) -> str:
    if (
        not isinstance(client_id, str)
        or not 1 <= len(client_id) <= _MAX_ID
        or _CONTROL.search(client_id) is not None
    ):
        raise ValidationError(
            f"a client id must be a str of 1 to {_MAX_ID} characters without control "
            f"characters; got {short_repr(client_id)}"
        )
    return client_id


def record_commitment(salt: bytes, record: Mapping[str, Any]) -> str:
    """``sha256_hex(salt + canonical_json(record))``: what the chain holds for a client.

    Examples
    --------
    >>> record_commitment(bytes(16), {"site": "A"}) == sha256_hex(bytes(16) + b'{"site":"A"}')
    True
    """
    return sha256_hex(bytes(salt) + canonical_json(record))


@dataclass(frozen=True)
class _Entry:
    record: bytes | None  # canonical JSON of the record; None once erased
    salt: str | None

    @property
    def erased(self) -> bool:
        return self.record is None

    def commitment(self) -> str:
        if self.record is None or self.salt is None:
            raise ValidationError("an erased client has no commitment")
        return sha256_hex(bytes.fromhex(self.salt) + self.record)


class ClientRegistry:
    """Per-client records with salted commitments; see the module docstring for the format.

    Examples
    --------
    >>> registry = ClientRegistry()
    >>> commitment = registry.add("hospital-a", {"contact": "dr.a@example.org"})
    >>> registry.commitments() == {"hospital-a": commitment}
    True
    >>> registry.erase("hospital-a")
    >>> registry.is_erased("hospital-a"), registry.commitments()
    (True, {})
    >>> registry.to_bytes()
    b'{"hospital-a":{"erased":true}}\\n'
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def add(self, client_id: str, record: Mapping[str, Any]) -> str:
        """Register ``client_id`` with its ``record`` (a JSON object); return its commitment.

        Raises
        ------
        ValidationError
            The id is malformed or already registered (erased ids stay taken), or the record
            is not a JSON object.
        """
        _check_client_id(client_id)
        if client_id in self._entries:
            state = "erased" if self._entries[client_id].erased else "registered"
            raise ValidationError(f"client {client_id!r} is already {state}")
        if not isinstance(record, Mapping):
            raise ValidationError(
                f"the record of client {client_id!r} must be a mapping (a JSON object); "
                f"got {type(record).__name__}"
            )
        entry = _Entry(canonical_json(record), secrets.token_bytes(16).hex())
        self._entries[client_id] = entry
        return entry.commitment()

    def _entry(self, client_id: str) -> _Entry:
        try:
            return self._entries[client_id]
        except KeyError:
            known = sorted(self._entries)
            shown = ", ".join(repr(k) for k in known[:10]) + (" ..." if len(known) > 10 else "")
            raise ValidationError(
                f"unknown client {short_repr(client_id)}; registered: {shown or 'none'}"
            ) from None

    def _live(self, client_id: str) -> _Entry:
        entry = self._entry(client_id)
        if entry.erased:
            raise ValidationError(f"client {client_id!r} was erased")
        return entry

    def commitment(self, client_id: str) -> str:
        """The commitment of a client that is registered and not erased."""
        return self._live(client_id).commitment()

    def commitments(self) -> dict[str, str]:
        """``{client_id: commitment}`` of every client not erased, sorted by id; put it in
        the ``client_commitments`` of the ``run_started`` event."""
        return {
            client_id: entry.commitment()
            for client_id, entry in sorted(self._entries.items())
            if not entry.erased
        }

    def record(self, client_id: str) -> dict[str, Any]:
        """A copy of the record of a client that is registered and not erased."""
        record = self._live(client_id).record
        parsed: dict[str, Any] = parse_json(record or b"{}", "the record")
        return parsed

    def is_erased(self, client_id: str) -> bool:
        """Whether the (registered) client was erased."""
        return self._entry(client_id).erased

    def erase(self, client_id: str) -> None:
        """Delete the record and salt of ``client_id``, keeping ``{"erased": true}``.

        Raises
        ------
        ValidationError
            Unknown or already erased client.
        """
        entry = self._entry(client_id)
        if entry.erased:
            raise ValidationError(f"client {client_id!r} was already erased")
        self._entries[client_id] = _Entry(None, None)

    @property
    def client_ids(self) -> tuple[str, ...]:
        """Every registered id, erased ones included, sorted."""
        return tuple(sorted(self._entries))

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        erased = sum(entry.erased for entry in self._entries.values())
        return f"ClientRegistry(clients={len(self._entries)}, erased={erased})"

    # ------------------------------------------------------------------ files

    def to_bytes(self) -> bytes:
        """The exact bytes of ``clients.json``."""
        body: dict[str, Any] = {}
        for client_id, entry in self._entries.items():
            if entry.record is None:
                body[client_id] = {"erased": True}
            else:
                body[client_id] = {
                    "record": parse_json(entry.record, "the record"),
                    "salt": entry.salt,
                }
        return canonical_json(body) + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> ClientRegistry:
        """Parse ``clients.json`` strictly (exact fields, hex salts, canonical bytes).

        Raises
        ------
        ValidationError
            Naming the client and field that is wrong.
        """
        if len(data) > MAX_CLIENTS_BYTES:
            raise ValidationError(
                f"{CLIENTS} is {len(data):,} bytes; the limit is {MAX_CLIENTS_BYTES:,}"
            )
        body = parse_json(data, CLIENTS)
        if not isinstance(body, dict):
            raise ValidationError(f"{CLIENTS} must hold a JSON object; got {type(body).__name__}")
        registry = cls()
        for client_id, value in body.items():
            try:
                _check_client_id(client_id)
            except ValidationError as exc:
                raise ValidationError(f"{CLIENTS}: {exc}") from None
            if value == {"erased": True} and type(value["erased"]) is bool:
                registry._entries[client_id] = _Entry(None, None)
                continue
            if not isinstance(value, dict) or set(value) != {"record", "salt"}:
                raise ValidationError(
                    f"{CLIENTS}: client {client_id!r} must be "
                    '{"record": {...}, "salt": "<32 hex digits>"} or {"erased": true}; '
                    f"got {short_repr(value)}"
                )
            record, salt = value["record"], value["salt"]
            if not isinstance(record, dict):
                raise ValidationError(
                    f"{CLIENTS}: the record of client {client_id!r} must be a JSON object; "
                    f"got {type(record).__name__}"
                )
            if not isinstance(salt, str) or _SALT.fullmatch(salt) is None:
                raise ValidationError(
                    f"{CLIENTS}: the salt of client {client_id!r} must be 32 lower-case hex "
                    f"digits; got {short_repr(salt)}"
                )
            registry._entries[client_id] = _Entry(canonical_json(record), salt)
        if registry.to_bytes() != data:
            raise ValidationError(
                f"{CLIENTS} is not in canonical form (its bytes differ from canonical_json "
                "of its content plus a newline)"
            )
        return registry

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write ``clients.json`` atomically, readable by its owner only (mode 0o600)."""
        atomic_write(path, self.to_bytes(), mode=0o600)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ClientRegistry:
        """Read ``clients.json`` (bounded to 256 MiB) with :meth:`from_bytes`."""
        return cls.from_bytes(read_bounded(path, MAX_CLIENTS_BYTES, CLIENTS))


# ---------------------------------------------------------------------------------------------
# what the chain says about clients
# ---------------------------------------------------------------------------------------------

#: ``(index, kind, data)`` of an event, as :func:`chain_commitments` reads it.
EventView = tuple[int, str, Mapping[str, Any]]


def _views(events: Iterable[AuditEvent | EventView]) -> list[EventView]:
    views: list[EventView] = []
    for event in events:
        if isinstance(event, AuditEvent):
            views.append((event.index, event.kind, event.data))
        else:
            views.append(event)
    return views


def chain_commitments(
    events: Iterable[AuditEvent | EventView], where: str
) -> tuple[dict[str, tuple[str, int]], list[Problem]]:
    """``{client_id: (commitment, event index)}`` from every event's ``client_commitments``.

    Malformed entries and a client committed to twice with different values are problems.
    """
    found: dict[str, tuple[str, int]] = {}
    problems: list[Problem] = []
    for index, _, data in _views(events):
        block = data.get(COMMITMENTS_KEY)
        if block is None:
            continue
        if not isinstance(block, Mapping):
            problems.append(
                Problem(where, f"event {index}: {COMMITMENTS_KEY} must be an object", index)
            )
            continue
        for client_id, commitment in block.items():
            if not is_hex64(commitment):
                problems.append(
                    Problem(
                        where,
                        f"event {index}: the commitment of client {client_id!r} is not 64 "
                        f"lower-case hex digits; got {short_repr(commitment)}",
                        index,
                    )
                )
            elif client_id in found and found[client_id][0] != commitment:
                problems.append(
                    Problem(
                        where,
                        f"event {index}: client {client_id!r} has a commitment different from "
                        f"the one in event {found[client_id][1]}",
                        index,
                    )
                )
            else:
                found.setdefault(client_id, (commitment, index))
    return found, problems


def chain_erasures(
    events: Iterable[AuditEvent | EventView], where: str
) -> tuple[dict[str, tuple[str, int]], list[Problem]]:
    """``{client_id: (erased commitment, event index)}`` from the ``erasure`` events."""
    found: dict[str, tuple[str, int]] = {}
    problems: list[Problem] = []
    for index, kind, data in _views(events):
        if kind != ERASURE_KIND:
            continue
        client_id, commitment = data.get("client_id"), data.get("commitment")
        if not isinstance(client_id, str) or not is_hex64(commitment):
            problems.append(
                Problem(
                    where,
                    f"event {index}: an erasure event needs data with a str client_id and a "
                    "64-hex commitment",
                    index,
                )
            )
            continue
        if client_id in found:
            problems.append(
                Problem(
                    where,
                    f"event {index}: client {client_id!r} was already erased in event "
                    f"{found[client_id][1]}",
                    index,
                )
            )
            continue
        found[client_id] = (str(commitment), index)
    return found, problems


def _resolve_key(
    signing_key: Ed25519PrivateKey | str | os.PathLike[str] | None,
) -> Ed25519PrivateKey | None:
    if signing_key is None or isinstance(signing_key, Ed25519PrivateKey):
        return signing_key
    return load_signing_key(signing_key)


def erase_client(
    run_governance_dir: str | os.PathLike[str],
    client_id: str,
    *,
    reason: str,
    signing_key: Ed25519PrivateKey | str | os.PathLike[str] | None = None,
) -> AuditEvent:
    """Erase a client's record from a run's governance directory, keeping the chain valid.

    In order: verify ``audit_log.jsonl`` (and the signature, when there is one); append an
    ``erasure`` event ``{"client_id", "commitment", "reason"}`` to ``audit_log.jsonl`` and
    rewrite ``audit_log.json``; sign the new head when the log was signed (or a key is
    given); then rewrite ``clients.json`` without the record and salt. A crash in between is
    completed by calling it again: an erasure event already in the chain is not repeated.

    Parameters
    ----------
    run_governance_dir : path
        The ``governance/`` directory of a run.
    client_id : str
        The client to erase.
    reason : str
        Why (e.g. ``"GDPR art. 17 request #123"``), 1 to 1000 characters. It enters the
        chain for good: never put personal data in it.
    signing_key : Ed25519PrivateKey or path, optional
        Required when the log is signed: it must be the key that signed it.

    Returns
    -------
    AuditEvent
        The erasure event.

    Raises
    ------
    ValidationError
        Unknown client, client already erased, malformed ``clients.json``, bad ``reason``.
    SecurityError
        The log or its signature does not verify, the log is signed and no (or another) key
        is given, or the record does not match its commitment in the chain.
    """
    folder = Path(run_governance_dir)
    _check_client_id(client_id)
    if not isinstance(reason, str) or not 1 <= len(reason.strip()) <= _MAX_REASON:
        raise ValidationError(
            f"erase_client: reason must be a non-empty str of at most {_MAX_REASON} "
            f"characters; got {short_repr(reason)}"
        )
    registry = ClientRegistry.load(folder / CLIENTS)
    log = load_log(folder)  # SecurityError when the .jsonl does not verify
    key = _resolve_key(signing_key)
    sig_path = folder / SIGNATURE
    signed = sig_path.exists()
    if signed:
        if key is None:
            raise SecurityError(
                f"{sig_path} signs this log: pass signing_key= so that the head after the "
                "erasure is signed too (the signature would otherwise go stale)"
            )
        _check_existing_signature(sig_path, log.events, public_key_hex(key))

    commitments, problems = chain_commitments(log.events, "audit_log.jsonl")
    erasures, more = chain_erasures(log.events, "audit_log.jsonl")
    if problems or more:
        raise SecurityError(f"refusing to erase: {(problems + more)[0]}")
    if client_id not in registry:
        raise ValidationError(
            f"unknown client {client_id!r}: it is not in {folder / CLIENTS} "
            f"(registered: {len(registry)})"
        )
    erased_before = erasures.get(client_id)
    if registry.is_erased(client_id):
        where = f" (event {erased_before[1]})" if erased_before else ""
        raise ValidationError(f"client {client_id!r} was already erased{where}")
    if client_id not in commitments:
        raise SecurityError(
            f"client {client_id!r} has no commitment in the audit log of {folder}; refusing "
            "to erase a record the chain does not know"
        )
    commitment, committed_at = commitments[client_id]
    if registry.commitment(client_id) != commitment:
        raise SecurityError(
            f"the record of client {client_id!r} in {CLIENTS} does not match its commitment "
            f"in event {committed_at}; refusing to erase a tampered record"
        )

    if erased_before is None:
        with AuditWriter.resume(folder) as writer:
            event = writer.append(
                ERASURE_KIND,
                {"client_id": client_id, "commitment": commitment, "reason": reason},
            )
            log = writer.log
    else:  # an earlier call appended the event, then stopped: finish its work
        event = log.events[erased_before[1]]
        AuditWriter(folder, log=log).close()  # rewrites audit_log.json
    if key is not None:
        write_signature(sig_path, sign_head(log, key))
    registry.erase(client_id)
    registry.write(folder / CLIENTS)
    return event


def _check_existing_signature(path: Path, events: tuple[AuditEvent, ...], signer: str) -> None:
    try:
        record = load_signature(path)
    except ValidationError as exc:
        raise SecurityError(f"refusing to erase: {exc}") from None
    if record.public_key != signer:
        raise SecurityError(
            f"the signing key given ({signer}) is not the key that signed this log "
            f"({record.public_key}); refusing to re-sign it with another key"
        )
    # The signature may cover the whole log or, after an interrupted erasure, a prefix of it.
    count = record.events
    if count > len(events):
        raise SecurityError(
            f"refusing to erase: {path.name} covers {count} events; the log has {len(events)}"
        )
    head = events[count - 1].hash if count else GENESIS
    problems = verify_signature(record, head_hash=head, events=count)
    if problems:
        raise SecurityError(f"refusing to erase: {path.name}: {problems[0].message}")
