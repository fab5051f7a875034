"""Verify the governance record of a whole run directory: :func:`verify_run`.

What a run directory holds (the contract for the engine's audit callback)
-------------------------------------------------------------------------
::

    <run_dir>/
      governance/
        audit_log.jsonl       the chain, one canonical event per line (the primary record)
        audit_log.json        the same events as a JSON array (derived, optional)
        audit_log.sig.json    Ed25519 signature of the head (optional)
        clients.json          client records with salts, or {"erased": true} (optional)
        replay_manifest.json  (written by the replay feature; check it by listing it in files)
      metrics.json, checkpoints/, ...

The verifier reads two fields of event data, and nothing else:

``client_commitments``
    In the data of the ``run_started`` event (any event may carry it; a client may be
    committed to once, or again with the same value): ``{client_id: commitment}``, the
    :meth:`ClientRegistry.commitments` of the run's registry. Each record present in
    ``clients.json`` must match its commitment; a record marked erased needs an ``erasure``
    event with the same commitment; a committed client absent from ``clients.json`` is a
    record deleted without an erasure event.
``files``
    In the data of the **last** ``run_completed`` event: ``{relative_path: sha256_hex}``,
    paths relative to ``run_dir`` with ``/`` separators (``"metrics.json"``,
    ``"checkpoints/final.safetensors"``, ``"governance/replay_manifest.json"``), digests from
    :func:`file_digest`. Each file is digested again and compared. Absolute paths, ``..``
    components, backslashes and paths that leave ``run_dir`` through a symlink are problems,
    never read. The audit files themselves cannot be listed (they change after the event).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from velocity._validation import short_repr
from velocity.errors import ConfigurationError, ValidationError
from velocity.governance._audit import (
    AUDIT_JSON,
    AUDIT_JSONL,
    MAX_LOG_BYTES,
    CheckedLine,
    check_json_copy,
    check_jsonl,
    is_hex64,
)
from velocity.governance._hashing import file_digest
from velocity.governance._io import read_bounded
from velocity.governance._problem import Problem
from velocity.governance._registry import (
    CLIENTS,
    MAX_CLIENTS_BYTES,
    ClientRegistry,
    chain_commitments,
    chain_erasures,
)
from velocity.governance._signing import (
    MAX_SIGNATURE_BYTES,
    SIGNATURE,
    SignatureRecord,
    verify_signature,
)

__all__ = ["GOVERNANCE_DIR", "MANIFEST", "AuditReport", "verify_run"]

GOVERNANCE_DIR = "governance"
MANIFEST = "replay_manifest.json"
FILES_KEY = "files"
COMPLETED_KIND = "run_completed"
_DRIVE = re.compile(r"[A-Za-z]:")


@dataclass(frozen=True)
class AuditReport:
    """The outcome of :func:`verify_run`.

    Attributes
    ----------
    ok : bool
        No problem found.
    problems : tuple of Problem
        Every problem, in the order checked (log, signature, clients, files).
    first_broken_event : int or None
        The smallest event index any problem names.
    events : int
        Events in ``audit_log.jsonl`` (complete lines).
    signed : bool
        A signature file is present and verifies against the log (and the trusted key).
    signer : str or None
        The public key named by the signature file, when it could be read.
    files_checked : int
        Files read and checked (governance files and listed files).
    """

    ok: bool
    problems: tuple[Problem, ...]
    first_broken_event: int | None
    events: int
    signed: bool
    signer: str | None
    files_checked: int

    def summary(self) -> str:
        """A few human-readable lines: verdict, then one line per problem."""
        head = "OK" if self.ok else f"FAILED ({len(self.problems)} problems)"
        if self.signed:
            signer = f", signed by {self.signer}"
        elif self.signer is not None:
            signer = f", with a signature by {self.signer} that does not hold"
        else:
            signer = ", not signed"
        lines = [f"{head}: {self.events} events{signer}, {self.files_checked} files checked"]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


def _unsafe_path(path: str) -> str | None:
    """Why ``path`` may not be listed, or ``None`` when it is a clean relative path."""
    if not path:
        return "it is empty"
    if "\\" in path or "\x00" in path:
        return "it holds a backslash or a NUL byte"
    if path.startswith("/") or _DRIVE.match(path):
        return "it is absolute"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "it has '.', '..' or empty components"
    if len(parts) == 2 and parts[0] == GOVERNANCE_DIR and parts[1] in _SELF:
        return "the audit files cannot list themselves"
    return None


_SELF = frozenset({AUDIT_JSON, AUDIT_JSONL, SIGNATURE, CLIENTS})


def _governance(where: str) -> str:
    return f"{GOVERNANCE_DIR}/{where}"


def _relocate(problems: list[Problem]) -> list[Problem]:
    return [replace(p, where=_governance(p.where)) for p in problems]


def _read_optional(path: Path, limit: int, name: str) -> tuple[bytes | None, Problem | None]:
    if not os.path.lexists(path):
        return None, None
    try:
        return read_bounded(path, limit, name), None
    except ValidationError as exc:
        return None, Problem(_governance(name), str(exc))


def verify_run(
    run_dir: str | os.PathLike[str],
    *,
    trusted_public_key: str | None = None,
    require_signature: bool = False,
) -> AuditReport:
    """Check the governance record of a run directory; never raises on bad content.

    Checks, under ``run_dir/governance/`` (see the module docstring for the layout): the
    log, both files (:func:`verify_log_bytes`); the signature, when present, against the
    log's head; ``clients.json`` against the commitments and erasures in the chain; and the
    files listed by the last ``run_completed`` event, each digested again.

    Parameters
    ----------
    run_dir : path
        The run's output directory (the one holding ``governance/``).
    trusted_public_key : str, optional
        The signer's public key (64 hex digits) you trust. When given, the log must be
        signed, by this key. Without it, a signature proves integrity, not identity.
    require_signature : bool
        Report a missing signature as a problem.

    Returns
    -------
    AuditReport
        ``ok`` when no problem was found; ``problems`` says what and where.

    Raises
    ------
    ConfigurationError
        ``trusted_public_key`` is not 64 hex digits, or ``require_signature`` not a bool.

    Examples
    --------
    >>> import tempfile
    >>> from velocity.governance import AuditWriter, file_digest
    >>> with tempfile.TemporaryDirectory() as run:
    ...     _ = (Path(run) / "metrics.json").write_text("{}")
    ...     with AuditWriter(Path(run) / "governance") as writer:
    ...         _ = writer.append("run_started", {"seed": 0})
    ...         digest = file_digest(Path(run) / "metrics.json")
    ...         _ = writer.append("run_completed", {"files": {"metrics.json": digest}})
    ...     ok = verify_run(run)
    ...     _ = (Path(run) / "metrics.json").write_text('{"loss": 0}')
    ...     bad = verify_run(run)
    >>> ok.ok, ok.events, ok.files_checked
    (True, 2, 3)
    >>> bad.ok, str(bad.problems[0])
    (False, 'metrics.json: metrics.json does not match its digest in event 1')
    """
    if trusted_public_key is not None and not is_hex64(trusted_public_key):
        raise ConfigurationError(
            "verify_run.trusted_public_key must be a raw Ed25519 public key as 64 lower-case "
            f"hex digits; got {short_repr(trusted_public_key)}"
        )
    if not isinstance(require_signature, bool):
        raise ConfigurationError(
            "verify_run.require_signature must be true or false; "
            f"got {short_repr(require_signature)}"
        )
    root = Path(run_dir)
    folder = root / GOVERNANCE_DIR
    problems: list[Problem] = []
    files_checked = 0

    # -- the log
    try:
        jsonl = read_bounded(folder / AUDIT_JSONL, MAX_LOG_BYTES, AUDIT_JSONL)
    except ValidationError as exc:
        unreadable = Problem(_governance(AUDIT_JSONL), str(exc))
        return AuditReport(False, (unreadable,), None, 0, False, None, 0)
    files_checked += 1
    result = check_jsonl(jsonl)
    problems += _relocate(result.problems)
    json_bytes, problem = _read_optional(
        folder / AUDIT_JSON, MAX_LOG_BYTES + MAX_LOG_BYTES // 8, AUDIT_JSON
    )
    if problem is not None:
        problems.append(problem)
    if json_bytes is not None:
        files_checked += 1
        mismatch = check_json_copy(json_bytes, result.lines, AUDIT_JSON)
        if mismatch is not None:
            problems.append(replace(mismatch, where=_governance(AUDIT_JSON)))
    checked = result.checked
    events = len(checked)
    head = checked[-1].hash if checked and checked[-1].parsed else None

    # -- the signature
    signed, signer = False, None
    sig_bytes, problem = _read_optional(folder / SIGNATURE, MAX_SIGNATURE_BYTES, SIGNATURE)
    if problem is not None:
        problems.append(problem)
    if sig_bytes is not None:
        files_checked += 1
        try:
            record = SignatureRecord.from_bytes(sig_bytes)
        except ValidationError as exc:
            problems.append(Problem(_governance(SIGNATURE), str(exc)))
        else:
            signer = record.public_key
            found = verify_signature(
                record,
                head_hash=head if head is not None else "0" * 64,
                events=events,
                trusted_public_key=trusted_public_key,
            )
            problems += _relocate(found)
            signed = not found
    elif problem is None and (require_signature or trusted_public_key is not None):
        why = "a trusted key was given" if trusted_public_key is not None else "it is required"
        problems.append(Problem(_governance(SIGNATURE), f"the log is not signed, but {why}"))

    # -- clients
    views: list[tuple[int, str, Mapping[str, Any]]] = [
        (c.index, c.kind, c.data) for c in checked if c.data is not None and c.index is not None
    ]
    clients_bytes, problem = _read_optional(folder / CLIENTS, MAX_CLIENTS_BYTES, CLIENTS)
    if problem is not None:
        problems.append(problem)
    registry: ClientRegistry | None = None
    if clients_bytes is not None:
        files_checked += 1
        try:
            registry = ClientRegistry.from_bytes(clients_bytes)
        except ValidationError as exc:
            problems.append(Problem(_governance(CLIENTS), str(exc)))
    if problem is None and (clients_bytes is None or registry is not None):
        problems += _client_problems(views, registry)

    # -- listed files
    file_problems, listed = _file_problems(root, checked)
    problems += file_problems
    files_checked += listed

    indices = [p.event for p in problems if p.event is not None]
    return AuditReport(
        ok=not problems,
        problems=tuple(problems),
        first_broken_event=min(indices) if indices else None,
        events=events,
        signed=signed,
        signer=signer,
        files_checked=files_checked,
    )


def _client_problems(
    views: list[tuple[int, str, Mapping[str, Any]]], registry: ClientRegistry | None
) -> list[Problem]:
    where_log = _governance(AUDIT_JSONL)
    where = _governance(CLIENTS)
    commitments, problems = chain_commitments(views, where_log)
    erasures, more = chain_erasures(views, where_log)
    problems = problems + more
    if registry is None:
        if commitments:
            first = min(index for _, index in commitments.values())
            problems.append(
                Problem(
                    where,
                    f"{CLIENTS} is missing, but event {first} commits to "
                    f"{len(commitments)} client records",
                    first,
                )
            )
        return problems
    for client_id in registry.client_ids:
        committed = commitments.get(client_id)
        erased = erasures.get(client_id)
        if registry.is_erased(client_id):
            if erased is None:
                problems.append(
                    Problem(
                        where,
                        f"client {client_id!r} is marked erased but the log has no erasure "
                        "event for it",
                    )
                )
            elif committed is not None and erased[0] != committed[0]:
                problems.append(
                    Problem(
                        where_log,
                        f"event {erased[1]}: the erasure of client {client_id!r} names a "
                        f"commitment other than the one in event {committed[1]}",
                        erased[1],
                    )
                )
            continue
        if committed is None:
            problems.append(
                Problem(where, f"client {client_id!r} has no commitment in the audit log")
            )
        elif registry.commitment(client_id) != committed[0]:
            problems.append(
                Problem(
                    where,
                    f"the record of client {client_id!r} does not match its commitment in "
                    f"event {committed[1]}",
                    committed[1],
                )
            )
        if erased is not None:
            problems.append(
                Problem(
                    where,
                    f"client {client_id!r} has an erasure event (event {erased[1]}) but its "
                    f"record is still in {CLIENTS}",
                    erased[1],
                )
            )
    for client_id, (_, index) in sorted(commitments.items()):
        if client_id in registry:
            continue
        if client_id in erasures:
            message = (
                f"client {client_id!r} was erased in event {erasures[client_id][1]} but is "
                f'missing from {CLIENTS} (expected {{"erased": true}})'
            )
        else:
            message = (
                f"client {client_id!r}'s record was deleted without an erasure event "
                f"(committed to in event {index})"
            )
        problems.append(Problem(where, message, index))
    for client_id, (_, index) in sorted(erasures.items()):
        if client_id not in commitments:
            problems.append(
                Problem(
                    where_log,
                    f"event {index}: the erasure of client {client_id!r} names a client the "
                    "log never committed to",
                    index,
                )
            )
    return problems


def _file_problems(root: Path, checked: list[CheckedLine]) -> tuple[list[Problem], int]:
    completed = [c for c in checked if c.parsed and c.kind == COMPLETED_KIND]
    if not completed:
        return [], 0
    last = completed[-1]
    index = last.index
    listed = (last.data or {}).get(FILES_KEY)
    if listed is None:
        return [], 0
    where = _governance(AUDIT_JSONL)
    if not isinstance(listed, dict):
        return [Problem(where, f"event {index}: {FILES_KEY} must be an object", index)], 0
    problems: list[Problem] = []
    count = 0
    base = root.resolve()
    for path, digest in sorted(listed.items()):
        unsafe = _unsafe_path(path)
        if unsafe is not None:
            problems.append(
                Problem(where, f"event {index}: refusing listed path {path!r}: {unsafe}", index)
            )
            continue
        if not is_hex64(digest):
            problems.append(
                Problem(
                    where,
                    f"event {index}: the digest of {path!r} is not 64 lower-case hex digits",
                    index,
                )
            )
            continue
        target = root.joinpath(*path.split("/"))
        if not os.path.lexists(target):
            problems.append(Problem(path, f"{path} is missing (listed in event {index})", index))
            continue
        if not target.resolve().is_relative_to(base):
            problems.append(
                Problem(path, f"{path} leaves the run directory through a symlink", index)
            )
            continue
        try:
            actual = file_digest(target)
        except ValidationError as exc:
            problems.append(Problem(path, str(exc), index))
            continue
        count += 1
        if actual != digest:
            problems.append(
                Problem(path, f"{path} does not match its digest in event {index}", index)
            )
    return problems, count
