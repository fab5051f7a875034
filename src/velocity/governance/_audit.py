"""The hash-chained audit log: :class:`AuditEvent`, :class:`AuditLog`, :class:`AuditWriter`.

The chain
---------
Event ``i`` carries ``index = i``, a ``kind`` (``run_started``, ``round``, ``erasure``...), an
optional ``round``, JSON ``data`` and ``prev_hash``, the ``hash`` of event ``i - 1``
(:data:`GENESIS`, 64 zeros, for event 0). Its own hash is::

    hash = sha256_hex(canonical_json(
        {"data": data, "index": index, "kind": kind, "prev_hash": prev_hash, "round": round}))

so changing, inserting, removing or reordering any event breaks every later link.

The two files (both byte-exact functions of the events)
-------------------------------------------------------
``audit_log.jsonl``
    One line per event: ``canonical_json(event.to_dict()) + b"\\n"`` (keys ``data``, ``hash``,
    ``index``, ``kind``, ``prev_hash``, ``round``). Appended and fsynced event by event by
    :class:`AuditWriter`: the record that survives a crash.
``audit_log.json``
    The same events as one JSON array, one event per line: ``b"[\\n"``, then the ``.jsonl``
    lines each prefixed with two spaces and joined by ``b",\\n"``, then ``b"\\n]\\n"``
    (``b"[]\\n"`` for no events). Rewritten atomically on :meth:`AuditWriter.write_json` and
    :meth:`AuditWriter.close`. Being derived from the ``.jsonl`` bytes, it cannot drift.

:func:`verify_log_bytes` checks both files and names the first broken event; the event
``data`` is never trusted to hold anything in particular (see :mod:`velocity.governance._verify`
for the two fields that a run's verifier reads).
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

from velocity._validation import short_repr
from velocity.errors import ConfigurationError, SecurityError, ValidationError
from velocity.governance._hashing import JSON, canonical_text, parse_json, sha256_hex
from velocity.governance._io import atomic_write, fsync_directory, read_bounded
from velocity.governance._problem import Problem

__all__ = [
    "AUDIT_JSON",
    "AUDIT_JSONL",
    "EVENT_KEYS",
    "GENESIS",
    "MAX_LINE_BYTES",
    "MAX_LOG_BYTES",
    "AuditEvent",
    "AuditLog",
    "AuditWriter",
    "json_from_jsonl",
    "load_log",
    "verify_log",
    "verify_log_bytes",
]

AUDIT_JSON = "audit_log.json"
AUDIT_JSONL = "audit_log.jsonl"
#: ``prev_hash`` of event 0.
GENESIS = "0" * 64
#: The keys of an event's dict, in canonical order.
EVENT_KEYS = ("data", "hash", "index", "kind", "prev_hash", "round")
#: Largest ``audit_log.jsonl`` read back; ``audit_log.json`` may be 1/8 larger.
MAX_LOG_BYTES = 1 << 30
#: Largest line (one event) of ``audit_log.jsonl``.
MAX_LINE_BYTES = 64 << 20

_HEX64 = re.compile(r"[0-9a-f]{64}")
_KIND = re.compile(r"[a-z][a-z0-9_]{0,63}")
_KIND_RULE = "1 to 64 characters of a-z, 0-9 and _, starting with a letter"


def is_hex64(value: object) -> bool:
    """Whether ``value`` is a SHA-256 hex digest: 64 lower-case hex digits."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0


def _field_problem(index: object, kind: object, round: object, prev_hash: object) -> str | None:
    """What is wrong with the scalar fields of an event, or ``None``."""
    if not _is_count(index):
        return f"index must be an int >= 0; got {short_repr(index)}"
    if not isinstance(kind, str) or _KIND.fullmatch(kind) is None:
        return f"kind must be {_KIND_RULE}; got {short_repr(kind)}"
    if round is not None and not _is_count(round):
        return f"round must be an int >= 0 or null; got {short_repr(round)}"
    if not is_hex64(prev_hash):
        return f"prev_hash must be 64 lower-case hex digits; got {short_repr(prev_hash)}"
    return None


def _freeze(value: Any) -> Any:
    if type(value) is dict:
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if type(value) is list:
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


def _scalars(index: int, kind: str, round: int | None) -> tuple[bytes, bytes, bytes]:
    return str(index).encode(), f'"{kind}"'.encode(), b"null" if round is None else b"%d" % round


def _content_bytes(
    data_json: bytes, index: int, kind: str, round: int | None, prev_hash: str
) -> bytes:
    """``canonical_json`` of the hashed content (keys in canonical order by construction)."""
    i, k, r = _scalars(index, kind, round)
    return b"".join(
        (b'{"data":', data_json, b',"index":', i, b',"kind":', k, b',"prev_hash":"',
         prev_hash.encode(), b'","round":', r, b"}")
    )  # fmt: skip


def _line_bytes(
    data_json: bytes, index: int, kind: str, round: int | None, prev_hash: str, digest: str
) -> bytes:
    """``canonical_json(event.to_dict())``, the ``.jsonl`` line without its newline."""
    i, k, r = _scalars(index, kind, round)
    return b"".join(
        (b'{"data":', data_json, b',"hash":"', digest.encode(), b'","index":', i, b',"kind":',
         k, b',"prev_hash":"', prev_hash.encode(), b'","round":', r, b"}")
    )  # fmt: skip


@dataclass(frozen=True)
class AuditEvent:
    """One event of the chain; its ``hash`` is checked when it is built.

    Parameters
    ----------
    index : int
        Position in the log, from 0.
    kind : str
        What happened: 1 to 64 characters of ``a-z``, ``0-9`` and ``_``, starting with a
        letter (``"run_started"``, ``"round"``, ``"run_completed"``, ``"erasure"``...).
    round : int or None
        The round it belongs to, if any.
    data : mapping of str to JSON
        The payload. It is stored in its canonical form, read-only: tuples become tuples of
        the parsed values, ``2.0`` becomes ``2`` (both are the JSON number 2), so an event
        equals itself read back from the files.
    prev_hash : str
        ``hash`` of the previous event, :data:`GENESIS` for event 0.
    hash : str
        ``sha256_hex(canonical_json({"data", "index", "kind", "prev_hash", "round"}))``.

    Raises
    ------
    ValidationError
        A field has the wrong type or form, or ``data`` is not JSON.
    SecurityError
        ``hash`` does not match the content.

    Examples
    --------
    >>> e = AuditEvent.create(0, "run_started", {"seed": 7}, prev_hash=GENESIS)
    >>> e.to_dict()["data"], len(e.hash)
    ({'seed': 7}, 64)
    >>> AuditEvent.from_dict(e.to_dict()) == e
    True
    """

    index: int
    kind: str
    round: int | None
    data: Mapping[str, JSON]
    prev_hash: str
    hash: str
    _line: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problem = _field_problem(self.index, self.kind, self.round, self.prev_hash)
        if problem is not None:
            raise ValidationError(f"AuditEvent.{problem}")
        if not is_hex64(self.hash):
            raise ValidationError(
                f"AuditEvent.hash must be 64 lower-case hex digits; got {short_repr(self.hash)}"
            )
        if not isinstance(self.data, Mapping):
            raise ValidationError(
                f"AuditEvent.data must be a mapping (a JSON object); got {type(self.data).__name__}"
            )
        data_json = canonical_text(self.data, root="data").encode("utf-8")
        content = _content_bytes(data_json, self.index, self.kind, self.round, self.prev_hash)
        if sha256_hex(content) != self.hash:
            raise SecurityError(f"event {self.index}: hash does not match its content")
        object.__setattr__(self, "data", _freeze(json.loads(data_json)))
        line = _line_bytes(data_json, self.index, self.kind, self.round, self.prev_hash, self.hash)
        object.__setattr__(self, "_line", line)

    def __hash__(self) -> int:
        return hash(self.hash)

    @classmethod
    def create(
        cls,
        index: int,
        kind: str,
        data: Mapping[str, Any] | None = None,
        *,
        round: int | None = None,
        prev_hash: str,
    ) -> AuditEvent:
        """The event with these fields and its computed ``hash``."""
        problem = _field_problem(index, kind, round, prev_hash)
        if problem is not None:
            raise ValidationError(f"AuditEvent.{problem}")
        payload: Mapping[str, Any] = {} if data is None else data
        if not isinstance(payload, Mapping):
            raise ValidationError(
                f"AuditEvent.data must be a mapping (a JSON object); got {type(payload).__name__}"
            )
        data_json = canonical_text(payload, root="data").encode("utf-8")
        digest = sha256_hex(_content_bytes(data_json, index, kind, round, prev_hash))
        return cls(index, kind, round, payload, prev_hash, digest)

    def to_dict(self) -> dict[str, Any]:
        """``{"data", "hash", "index", "kind", "prev_hash", "round"}``, plain JSON types."""
        return {
            "data": _thaw(self.data),
            "hash": self.hash,
            "index": self.index,
            "kind": self.kind,
            "prev_hash": self.prev_hash,
            "round": self.round,
        }

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any]) -> AuditEvent:
        """Inverse of :meth:`to_dict`; exactly the six keys, each strictly typed.

        Raises
        ------
        ValidationError
            Missing or unexpected keys, wrong types.
        SecurityError
            The ``hash`` does not match the content.
        """
        if not isinstance(mapping, Mapping):
            raise ValidationError(
                f"an audit event must be a JSON object; got {short_repr(mapping)}"
            )
        keys = set(mapping)
        if keys != set(EVENT_KEYS):
            missing = sorted(set(EVENT_KEYS) - keys)
            unexpected = sorted(str(k) for k in keys - set(EVENT_KEYS))
            raise ValidationError(
                f"an audit event has exactly the keys {list(EVENT_KEYS)}; "
                f"missing {missing}, unexpected {unexpected}"
            )
        return cls(
            index=mapping["index"],
            kind=mapping["kind"],
            round=mapping["round"],
            data=mapping["data"],
            prev_hash=mapping["prev_hash"],
            hash=mapping["hash"],
        )

    def canonical_bytes(self) -> bytes:
        """``canonical_json(self.to_dict())``: the event's ``.jsonl`` line, without newline."""
        return self._line


def _jsonl(lines: Iterable[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def json_from_jsonl(lines: list[bytes]) -> bytes:
    """The ``audit_log.json`` bytes for these ``.jsonl`` lines (without their newlines).

    Examples
    --------
    >>> json_from_jsonl([b'{"a":1}', b'{"b":2}'])
    b'[\\n  {"a":1},\\n  {"b":2}\\n]\\n'
    >>> json_from_jsonl([])
    b'[]\\n'
    """
    if not lines:
        return b"[]\n"
    return b"[\n" + b",\n".join(b"  " + line for line in lines) + b"\n]\n"


class AuditLog:
    """An in-memory hash chain of :class:`AuditEvent`.

    Examples
    --------
    >>> log = AuditLog()
    >>> first = log.append("run_started", {"seed": 0})
    >>> second = log.append("round", {"loss": 0.5}, round=1)
    >>> len(log), second.prev_hash == first.hash, log.head == second.hash
    (2, True, True)
    >>> verify_log_bytes(log.jsonl_bytes(), log.json_bytes())
    []
    """

    def __init__(self) -> None:
        self._events: list[AuditEvent] = []

    @classmethod
    def from_events(cls, events: Iterable[AuditEvent]) -> AuditLog:
        """A log holding ``events``, which must form a chain from :data:`GENESIS`.

        Raises
        ------
        SecurityError
            An event's index is not its position or its ``prev_hash`` does not link.
        """
        log = cls()
        for event in events:
            if not isinstance(event, AuditEvent):
                raise ValidationError(f"expected AuditEvent objects; got {short_repr(event)}")
            log._check_next(event)
            log._events.append(event)
        return log

    def _check_next(self, event: AuditEvent) -> None:
        position = len(self._events)
        if event.index != position:
            raise SecurityError(f"event {event.index} is at position {position} of the log")
        if event.prev_hash != self.head:
            raise SecurityError(f"event {position}: prev_hash does not link to the previous event")

    def build(
        self, kind: str, data: Mapping[str, Any] | None = None, *, round: int | None = None
    ) -> AuditEvent:
        """The event :meth:`append` would add next, without adding it."""
        return AuditEvent.create(len(self._events), kind, data, round=round, prev_hash=self.head)

    def add(self, event: AuditEvent) -> None:
        """Append an event built by :meth:`build` (it must link to the current head)."""
        self._check_next(event)
        self._events.append(event)

    def append(
        self, kind: str, data: Mapping[str, Any] | None = None, *, round: int | None = None
    ) -> AuditEvent:
        """Add the next event and return it.

        Raises
        ------
        ValidationError
            ``kind``, ``round`` or ``data`` is not accepted (the message says why and where).
        """
        event = self.build(kind, data, round=round)
        self._events.append(event)
        return event

    @property
    def events(self) -> tuple[AuditEvent, ...]:
        """All events, oldest first."""
        return tuple(self._events)

    @property
    def head(self) -> str:
        """Hash of the last event, :data:`GENESIS` when the log is empty."""
        return self._events[-1].hash if self._events else GENESIS

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[AuditEvent]:
        return iter(tuple(self._events))

    def __repr__(self) -> str:
        return f"AuditLog(events={len(self._events)}, head={self.head[:12]}...)"

    def jsonl_bytes(self) -> bytes:
        """The exact bytes of ``audit_log.jsonl`` for these events."""
        return _jsonl(event.canonical_bytes() for event in self._events)

    def json_bytes(self) -> bytes:
        """The exact bytes of ``audit_log.json`` for these events."""
        return json_from_jsonl([event.canonical_bytes() for event in self._events])


# ---------------------------------------------------------------------------------------------
# verification (pure, on bytes)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedLine:
    """What one ``.jsonl`` line says and what is wrong with it on its own (internal)."""

    problem: str | None  # starting with "{line}" or "{event}", filled in by _label
    index: int | None = None
    kind: str = ""
    round: int | None = None
    data: Mapping[str, Any] | None = None
    prev_hash: str = ""
    hash: str = ""

    @property
    def parsed(self) -> bool:
        return self.data is not None


#: Lines up to this size have their check memoized (see :func:`_check_line`).
_CACHED_LINE_BYTES = 4 << 10


def _check_line(line: bytes) -> CheckedLine:
    """What ``line`` says and what is wrong with it on its own (not its position).

    The result is a pure function of the bytes, memoized for short lines in a bounded LRU
    cache: re-verifying a log that grew by a few events (a resumed run, an erasure, a
    verifier run twice) costs only the new lines. Callers must not mutate ``data``.
    """
    if len(line) <= _CACHED_LINE_BYTES:
        return _check_line_cached(line)
    return _check_line_uncached(line)


def _check_line_uncached(line: bytes) -> CheckedLine:
    if not line:
        return CheckedLine("{line} is empty")
    if len(line) > MAX_LINE_BYTES:
        return CheckedLine(f"{{line}} is {len(line):,} bytes; the limit is {MAX_LINE_BYTES:,}")
    try:
        obj = parse_json(line, "it")
    except ValidationError as exc:
        return CheckedLine("{line} " + str(exc).removeprefix("it "))
    if not isinstance(obj, dict):
        return CheckedLine(f"{{line}} is not a JSON object; got {type(obj).__name__}")
    if set(obj) != set(EVENT_KEYS):
        missing = sorted(set(EVENT_KEYS) - set(obj))
        unexpected = sorted(set(obj) - set(EVENT_KEYS))
        return CheckedLine(
            f"{{line}} does not have the event keys {list(EVENT_KEYS)}: "
            f"missing {missing}, unexpected [{', '.join(short_repr(k) for k in unexpected)}]"
        )
    index, kind, round, data = obj["index"], obj["kind"], obj["round"], obj["data"]
    prev_hash, digest = obj["prev_hash"], obj["hash"]
    problem = _field_problem(index, kind, round, prev_hash)
    if problem is None and not is_hex64(digest):
        problem = f"hash must be 64 lower-case hex digits; got {short_repr(digest)}"
    if problem is None and not isinstance(data, dict):
        problem = f"data must be a JSON object; got {type(data).__name__}"
    if problem is not None:
        return CheckedLine(f"{{line}}: {problem}")
    try:
        data_json = canonical_text(data, root="data").encode("utf-8")
    except ValidationError as exc:
        return CheckedLine(f"{{line}}: {exc}")
    found = CheckedLine(None, index, kind, round, data, prev_hash, digest)
    content = _content_bytes(data_json, index, kind, round, prev_hash)
    if sha256_hex(content) != digest:
        return replace(found, problem="{event}: hash does not match its content")
    if _line_bytes(data_json, index, kind, round, prev_hash, digest) != line:
        return replace(
            found,
            problem="{event}: the line is not in canonical form (its bytes differ from "
            "canonical_json of the event)",
        )
    return found


_check_line_cached = functools.lru_cache(maxsize=2048)(_check_line_uncached)


@dataclass(frozen=True)
class JsonlCheck:
    """The outcome of :func:`check_jsonl` (internal, shared with the run verifier)."""

    problems: list[Problem]
    lines: list[bytes]  # the complete lines, without newlines
    checked: list[CheckedLine]
    incomplete_tail: bool


def _label(problem: str, position: int) -> str:
    """``problem`` with its leading ``{line}`` / ``{event}`` marker replaced (no str.format:
    the rest holds text from the file)."""
    if problem.startswith("{line}"):
        return f"line {position + 1} (event {position})" + problem.removeprefix("{line}")
    return f"event {position}" + problem.removeprefix("{event}")


def check_jsonl(jsonl: bytes, where: str = AUDIT_JSONL) -> JsonlCheck:
    """Check ``audit_log.jsonl`` bytes line by line (see :func:`verify_log_bytes`)."""
    problems: list[Problem] = []
    if len(jsonl) > MAX_LOG_BYTES:
        problems.append(
            Problem(where, f"the file is {len(jsonl):,} bytes; the limit is {MAX_LOG_BYTES:,}")
        )
        return JsonlCheck(problems, [], [], False)
    lines = jsonl.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    checked: list[CheckedLine] = []
    previous: str | None = GENESIS
    for position, line in enumerate(lines):
        result = _check_line(line)
        checked.append(result)
        if result.problem is not None:
            problems.append(Problem(where, _label(result.problem, position), position))
        if not result.parsed:
            previous = None
            continue
        if result.index != position:
            problems.append(
                Problem(
                    where,
                    f"line {position + 1} holds index {result.index}; expected {position} "
                    "(an event was inserted, removed or moved)",
                    position,
                )
            )
        elif previous is not None and result.prev_hash != previous:
            target = "GENESIS (64 zeros)" if position == 0 else f"event {position - 1}"
            problems.append(
                Problem(where, f"event {position}: prev_hash does not link to {target}", position)
            )
        previous = result.hash
    incomplete = bool(tail)
    if incomplete:
        position = len(lines)
        problems.append(
            Problem(
                where,
                f"line {position + 1} (event {position}) is incomplete: the file does not end "
                "with a newline (an interrupted write?)",
                position,
            )
        )
    return JsonlCheck(problems, lines, checked, incomplete)


def check_json_copy(json_bytes: bytes, lines: list[bytes], where: str) -> Problem | None:
    """The problem of ``audit_log.json`` against the ``.jsonl`` lines, or ``None``."""
    limit = MAX_LOG_BYTES + MAX_LOG_BYTES // 8
    if len(json_bytes) > limit:
        return Problem(where, f"the file is {len(json_bytes):,} bytes; the limit is {limit:,}")
    expected = json_from_jsonl(lines)
    if json_bytes == expected:
        return None
    got_lines = json_bytes.split(b"\n")
    want_lines = expected.split(b"\n")
    first = next(
        (i for i, (a, b) in enumerate(zip(got_lines, want_lines, strict=False)) if a != b),
        min(len(got_lines), len(want_lines)),
    )
    count = len(lines)
    if not lines:
        return Problem(where, f"{where} differs from {AUDIT_JSONL}, which holds no events")
    event = min(max(first - 1, 0), count - 1) if first <= count else None
    if event is None:
        return Problem(where, f"{where} differs from {AUDIT_JSONL} after its last event")
    return Problem(where, f"{where} differs from {AUDIT_JSONL} at event {event}", event)


def verify_log_bytes(jsonl: bytes, json_bytes: bytes | None = None) -> list[Problem]:
    """Every problem of an audit log given as the bytes of its files; ``[]`` when it verifies.

    Checks that every ``.jsonl`` line parses (strict JSON, UTF-8, bounded size) into an event
    with exactly the six keys and well-formed fields; that each index is its position, each
    ``prev_hash`` links, each hash recomputes; that the ``.jsonl`` bytes are exactly the
    canonical serialization of the events (so any change of any byte is detected); and, when
    ``json_bytes`` is given, that ``audit_log.json`` is exactly the array form of the same
    lines. Problems come in file order, so the first names the first broken event.

    Examples
    --------
    >>> log = AuditLog()
    >>> _ = log.append("run_started", {"seed": 1})
    >>> _ = log.append("round", {"loss": 0.25}, round=1)
    >>> good = log.jsonl_bytes()
    >>> verify_log_bytes(good, log.json_bytes())
    []
    >>> bad = good.replace(b'"loss":0.25', b'"loss":0.24')
    >>> [str(p) for p in verify_log_bytes(bad, log.json_bytes())]
    ['audit_log.jsonl: event 1: hash does not match its content', 'audit_log.json: audit_log.json differs from audit_log.jsonl at event 1']
    """  # noqa: E501
    result = check_jsonl(jsonl)
    problems = list(result.problems)
    if json_bytes is not None and len(jsonl) <= MAX_LOG_BYTES:
        problem = check_json_copy(json_bytes, result.lines, AUDIT_JSON)
        if problem is not None:
            problems.append(problem)
    return problems


def verify_log(directory: str | os.PathLike[str]) -> list[Problem]:
    """:func:`verify_log_bytes` on ``directory/audit_log.jsonl`` and, if present, ``.json``.

    A missing or unreadable ``.jsonl`` is reported as a problem, not raised.
    """
    folder = Path(directory)
    try:
        jsonl = read_bounded(folder / AUDIT_JSONL, MAX_LOG_BYTES, AUDIT_JSONL)
    except ValidationError as exc:
        return [Problem(AUDIT_JSONL, str(exc))]
    json_path = folder / AUDIT_JSON
    json_bytes: bytes | None = None
    if json_path.exists():
        try:
            json_bytes = read_bounded(json_path, MAX_LOG_BYTES + MAX_LOG_BYTES // 8, AUDIT_JSON)
        except ValidationError as exc:
            return [*verify_log_bytes(jsonl), Problem(AUDIT_JSON, str(exc))]
    return verify_log_bytes(jsonl, json_bytes)


def _raise_problems(path: Path, problems: list[Problem]) -> None:
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    raise SecurityError(f"{path} does not verify: {problems[0].message}{more}")


def _log_from_checked(checked: list[CheckedLine]) -> AuditLog:
    events = [
        AuditEvent(c.index, c.kind, c.round, c.data, c.prev_hash, c.hash)  # type: ignore[arg-type]
        for c in checked
    ]
    return AuditLog.from_events(events)


def load_log(directory: str | os.PathLike[str], *, drop_incomplete_tail: bool = False) -> AuditLog:
    """Read and verify ``directory/audit_log.jsonl``; append to the result to resume a run.

    Only the ``.jsonl`` is read (``audit_log.json`` is rewritten from it when a writer
    closes). With ``drop_incomplete_tail``, a last line cut short by a crash (no final
    newline) is ignored instead of refused; :meth:`AuditWriter.resume` then truncates it.

    Raises
    ------
    ValidationError
        The file is missing, not a regular file, or larger than :data:`MAX_LOG_BYTES`.
    SecurityError
        The log does not verify; the message names the first problem.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with AuditWriter(tmp) as writer:
    ...         _ = writer.append("run_started", {"seed": 3})
    ...     log = load_log(tmp)
    ...     _ = log.append("run_resumed")
    ...     len(log)
    2
    """
    path = Path(directory) / AUDIT_JSONL
    data = read_bounded(path, MAX_LOG_BYTES, AUDIT_JSONL)
    result = check_jsonl(data)
    problems = result.problems
    if drop_incomplete_tail and result.incomplete_tail:
        problems = problems[:-1]
    if problems:
        _raise_problems(path, problems)
    return _log_from_checked(result.checked)


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


class AuditWriter:
    """Writes an :class:`AuditLog` to ``directory`` as it grows, crash-safely.

    Each :meth:`append` writes the event's line to ``audit_log.jsonl`` and fsyncs it before
    returning, so every event returned has reached the disk. :meth:`write_json` and
    :meth:`close` rewrite ``audit_log.json`` atomically. Use as a context manager.

    Parameters
    ----------
    directory : path
        Created if missing.
    log : AuditLog, optional
        Events to start from. ``audit_log.jsonl`` must then be absent or hold the first of
        these events (those missing are written, e.g. after ``load_log`` then ``append``).
        The writer then appends to this object.
        Without ``log``, the file must be absent or empty: an existing run is continued with
        :meth:`resume` (or ``log=load_log(directory)``), never overwritten.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with AuditWriter(tmp) as writer:
    ...         _ = writer.append("run_started", {"seed": 0})
    ...         _ = writer.append("round", {"loss": 1.5}, round=1)
    ...     with AuditWriter.resume(tmp) as writer:
    ...         _ = writer.append("run_completed", {"files": {}})
    ...     verify_log(tmp), len(load_log(tmp))
    ([], 3)
    """

    def __init__(self, directory: str | os.PathLike[str], *, log: AuditLog | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._log = AuditLog() if log is None else log
        self._lock = threading.Lock()
        self._failed: BaseException | None = None
        path = self.directory / AUDIT_JSONL
        expected = self._log.jsonl_bytes()
        existing = path.exists()
        current = read_bounded(path, MAX_LOG_BYTES, AUDIT_JSONL) if existing else b""
        if not expected.startswith(current):
            hint = (
                "to continue it use AuditWriter.resume(directory)"
                if log is None
                else "the log given does not start with the events it holds"
            )
            raise ConfigurationError(
                f"{path} already holds an audit log ({len(current):,} bytes); "
                f"refusing to overwrite it: {hint}"
            )
        self._file = open(path, "ab")  # noqa: SIM115 - closed in close()
        if len(expected) > len(current):  # events of ``log`` not on disk yet
            self._write(expected[len(current) :])
        elif not existing:
            os.fsync(self._file.fileno())
        if not existing:
            fsync_directory(self.directory)

    @classmethod
    def resume(
        cls, directory: str | os.PathLike[str], *, drop_incomplete_tail: bool = False
    ) -> AuditWriter:
        """Continue the log of ``directory`` (an interrupted or finished run).

        With ``drop_incomplete_tail``, a last line cut short by a crash is removed from the
        file first (see :func:`load_log`).
        """
        folder = Path(directory)
        log = load_log(folder, drop_incomplete_tail=drop_incomplete_tail)
        path = folder / AUDIT_JSONL
        size = len(log.jsonl_bytes())
        if path.stat().st_size != size:
            with open(path, "r+b") as handle:
                handle.truncate(size)
                handle.flush()
                os.fsync(handle.fileno())
        return cls(folder, log=log)

    @property
    def log(self) -> AuditLog:
        """The events written so far (do not append to it directly)."""
        return self._log

    @property
    def head(self) -> str:
        """Hash of the last event written."""
        return self._log.head

    def __len__(self) -> int:
        return len(self._log)

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())

    def append(
        self, kind: str, data: Mapping[str, Any] | None = None, *, round: int | None = None
    ) -> AuditEvent:
        """Add an event, write its line and fsync it; return the event.

        Raises
        ------
        ValidationError
            The event is not accepted (nothing is written).
        SecurityError
            An earlier write failed, so the file may end in a partial line: reopen it with
            ``AuditWriter.resume(directory, drop_incomplete_tail=True)``.
        """
        with self._lock:
            if self._failed is not None:
                raise SecurityError(
                    f"an earlier write to {self.directory / AUDIT_JSONL} failed "
                    f"({self._failed!r}); the file may end in a partial line. Resume with "
                    "AuditWriter.resume(directory, drop_incomplete_tail=True)"
                )
            if self._file.closed:
                raise ConfigurationError(f"the audit writer of {self.directory} is closed")
            event = self._log.build(kind, data, round=round)
            try:
                self._write(event.canonical_bytes() + b"\n")
            except BaseException as exc:
                self._failed = exc
                raise
            self._log.add(event)
            return event

    def write_json(self) -> None:
        """Rewrite ``audit_log.json`` from the events written so far (atomically)."""
        with self._lock:
            atomic_write(self.directory / AUDIT_JSON, self._log.json_bytes())

    def close(self) -> None:
        """Write ``audit_log.json`` and close ``audit_log.jsonl`` (idempotent)."""
        if self._file.closed:
            return
        try:
            if self._failed is None:
                self.write_json()
        finally:
            self._file.close()

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
