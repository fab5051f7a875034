"""The hash chain, its two file formats, the crash-safe writer, resume and tamper detection."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from velocity.errors import ConfigurationError, SecurityError, ValidationError
from velocity.governance import (
    AUDIT_JSON,
    AUDIT_JSONL,
    GENESIS,
    AuditEvent,
    AuditLog,
    AuditWriter,
    canonical_json,
    load_log,
    verify_log,
    verify_log_bytes,
)


def sample_log(rounds: int = 3) -> AuditLog:
    log = AuditLog()
    log.append("run_started", {"config_digest": "ab" * 32, "seed": 7, "clients": ["a", "b"]})
    for r in range(1, rounds + 1):
        log.append(
            "round",
            {"loss": 1.0 / r, "accuracy": 0.5 + r / 100, "selected": ["a", "b"], "note": "é\n"},
            round=r,
        )
    log.append("run_completed", {"files": {}})
    return log


def auditor_hash(event: dict[str, object]) -> str:
    """The chain rule as an auditor would code it: sorted compact JSON, SHA-256."""
    content = {k: event[k] for k in ("data", "index", "kind", "prev_hash", "round")}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def test_chain_links_and_hashes_recompute_independently() -> None:
    log = AuditLog()
    log.append("run_started", {"seed": 1})
    log.append("round", {"loss": 0.5, "ids": ["x"]}, round=1)
    prev = GENESIS
    for i, event in enumerate(log.events):
        as_dict = event.to_dict()
        assert as_dict["index"] == i
        assert as_dict["prev_hash"] == prev
        assert as_dict["hash"] == auditor_hash(as_dict)
        prev = event.hash
    assert log.head == prev
    assert AuditLog().head == GENESIS


def test_file_formats_are_byte_exact_functions_of_the_events() -> None:
    log = sample_log()
    lines = [canonical_json(e.to_dict()) for e in log.events]
    assert log.jsonl_bytes() == b"".join(line + b"\n" for line in lines)
    assert log.json_bytes() == b"[\n" + b",\n".join(b"  " + line for line in lines) + b"\n]\n"
    parsed = json.loads(log.json_bytes())
    assert parsed == [e.to_dict() for e in log.events]
    assert AuditLog().json_bytes() == b"[]\n"
    assert verify_log_bytes(b"", b"[]\n") == []


def test_event_data_is_canonical_and_read_only() -> None:
    event = AuditEvent.create(0, "round", {"loss": 2.0, "ids": ("a", "b")}, prev_hash=GENESIS)
    assert event.to_dict()["data"] == {"ids": ["a", "b"], "loss": 2}
    with pytest.raises(TypeError):
        event.data["loss"] = 3  # type: ignore[index]
    assert AuditEvent.from_dict(json.loads(event.canonical_bytes())) == event
    assert hash(event) == hash(event.hash)


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"index": -1}, ValidationError, "index must be an int >= 0; got -1"),
        ({"index": True}, ValidationError, "index must be an int >= 0; got True"),
        ({"kind": "Round!"}, ValidationError, "kind must be 1 to 64 characters"),
        ({"kind": ""}, ValidationError, "kind must be"),
        ({"round": "1"}, ValidationError, "round must be an int >= 0 or null; got '1'"),
        ({"prev_hash": "AB" * 32}, ValidationError, "prev_hash must be 64 lower-case hex"),
        ({"hash": "zz"}, ValidationError, "hash must be 64 lower-case hex"),
        ({"data": [1]}, ValidationError, "data must be a mapping"),
        ({"data": {"x": float("nan")}}, ValidationError, r"data\.x"),
        ({"data": {"seed": 8}}, SecurityError, "event 0: hash does not match its content"),
    ],
)
def test_from_dict_is_strict(changes: dict[str, object], error: type, match: str) -> None:
    base = AuditEvent.create(0, "run_started", {"seed": 7}, prev_hash=GENESIS).to_dict()
    base.update(changes)
    with pytest.raises(error, match=match):
        AuditEvent.from_dict(base)


def test_from_dict_refuses_missing_and_extra_keys() -> None:
    base = AuditEvent.create(0, "run_started", prev_hash=GENESIS).to_dict()
    del base["round"]
    base["extra"] = 1
    with pytest.raises(ValidationError, match=r"missing \['round'\], unexpected \['extra'\]"):
        AuditEvent.from_dict(base)


def test_from_events_checks_the_chain() -> None:
    log = sample_log()
    events = list(log.events)
    assert AuditLog.from_events(events).head == log.head
    with pytest.raises(SecurityError, match="event 2 is at position 1"):
        AuditLog.from_events([events[0], events[2]])


# ----------------------------------------------------------------------------- verification


def test_verify_names_the_first_broken_event() -> None:
    log = sample_log(rounds=8)
    lines = log.jsonl_bytes().split(b"\n")
    lines[7] = lines[7].replace(b'"round":7', b'"round":70')
    problems = verify_log_bytes(b"\n".join(lines), None)
    assert [str(p) for p in problems] == [
        "audit_log.jsonl: event 7: hash does not match its content"
    ]
    assert problems[0].event == 7


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda ls: ls[:3] + ls[4:], "line 4 holds index 4; expected 3"),
        (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], "line 2 holds index 2; expected 1"),
        (lambda ls: [*ls[:2], b"{not json", *ls[3:]], "line 3 (event 2) is not valid JSON"),
        (lambda ls: [*ls[:2], b"", *ls[2:]], "line 3 (event 2) is empty"),
        (lambda ls: [*ls[:2], b"[1, 2]", *ls[3:]], "line 3 (event 2) is not a JSON object"),
        (lambda ls: [*ls[:1], ls[1].replace(b'{"data"', b'{ "data"'), *ls[2:]],
         "event 1: the line is not in canonical form"),
        (lambda ls: [*ls[:1], ls[1][:-1] + b',"extra":1}', *ls[2:]],
         "unexpected ['extra']"),
        (lambda ls: [*ls[:-1], ls[-1] + b"\n" + ls[-1]], "line 6 holds index 4; expected 5"),
    ],
)  # fmt: skip
def test_verify_messages(mutate: object, message: str) -> None:
    lines = sample_log().jsonl_bytes().split(b"\n")[:-1]
    jsonl = b"\n".join(mutate(lines)) + b"\n"  # type: ignore[operator]
    problems = verify_log_bytes(jsonl)
    assert problems, "the change was not detected"
    assert message in problems[0].message


def test_verify_reports_json_copy_divergence() -> None:
    log = sample_log()
    jsonl, js = log.jsonl_bytes(), log.json_bytes()
    lines = js.split(b"\n")
    lines[4] = lines[4].replace(b'"loss":', b'"loss" :')
    assert [str(p) for p in verify_log_bytes(jsonl, b"\n".join(lines))] == [
        "audit_log.json: audit_log.json differs from audit_log.jsonl at event 3"
    ]
    shorter = AuditLog.from_events(log.events[:-1]).json_bytes()
    assert "differs from audit_log.jsonl at event" in verify_log_bytes(jsonl, shorter)[0].message
    assert verify_log_bytes(jsonl, js + b" ")[0].message.endswith("after its last event")


def test_verify_detects_an_incomplete_last_line() -> None:
    jsonl = sample_log().jsonl_bytes()
    problems = verify_log_bytes(jsonl[:-10])
    assert problems[-1].message.startswith("line 5 (event 4) is incomplete")


def flips(data: bytes, rnd: random.Random) -> list[tuple[int, int]]:
    """(position, new byte): XOR 0x01 of every byte, and a different random byte at each."""
    out = [(i, b ^ 0x01) for i, b in enumerate(data)]
    for i, b in enumerate(data):
        new = rnd.randrange(255)
        out.append((i, new if new < b else new + 1))
    return out


def test_every_single_byte_change_of_either_file_is_detected() -> None:
    log = sample_log(rounds=16)
    jsonl, js = log.jsonl_bytes(), log.json_bytes()
    assert 8_000 < len(jsonl) + len(js) < 16_000
    assert verify_log_bytes(jsonl, js) == []
    rnd = random.Random(8785)
    missed = []
    for position, new in flips(jsonl, rnd):
        changed = bytearray(jsonl)
        changed[position] = new
        if not verify_log_bytes(bytes(changed), js):
            missed.append(("jsonl", position, new))
    for position, new in flips(js, rnd):
        changed = bytearray(js)
        changed[position] = new
        if not verify_log_bytes(jsonl, bytes(changed)):
            missed.append(("json", position, new))
    assert missed == []


# ----------------------------------------------------------------------------- hostile input


def test_hostile_lines_give_problems_not_tracebacks() -> None:
    hostile = [
        b"\xff\xfe",
        b'{"data":{},"hash":"' + b"0" * 64 + b'","index":1e400}',
        b'{"a":1,"a":2}',
        b"[" * 200_000,
        b'{"data":{"x":NaN},"hash":"","index":0,"kind":"k","prev_hash":"","round":null}',
        b'{"data":{"s":"\\ud800"},"hash":"' + b"0" * 64 + b'","index":0,"kind":"k","prev_hash":"'
        + b"0" * 64 + b'","round":null}',
        b'{"data":{},"hash":"' + b"0" * 64 + b'","index":' + b"9" * 5000 + b"}",
        b'"just a string"',
    ]  # fmt: skip
    for line in hostile:
        problems = verify_log_bytes(line + b"\n")
        assert len(problems) >= 1
        assert problems[0].event == 0


def test_oversized_inputs_are_refused_before_parsing(tmp_path: Path) -> None:
    from velocity.governance._audit import MAX_LINE_BYTES, MAX_LOG_BYTES

    huge_line = b"x" * (MAX_LINE_BYTES + 1) + b"\n"
    assert "is 67,108,865 bytes; the limit is 67,108,864" in verify_log_bytes(huge_line)[0].message
    with open(tmp_path / AUDIT_JSONL, "wb") as handle:  # sparse: no disk used
        handle.truncate(MAX_LOG_BYTES + 1)
    problems = verify_log(tmp_path)
    assert "the limit is 1,073,741,824 bytes" in problems[0].message
    with pytest.raises(ValidationError, match="the limit is 1,073,741,824 bytes"):
        load_log(tmp_path)


def test_a_fifo_is_refused_not_read(tmp_path: Path) -> None:
    import os

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / AUDIT_JSONL)
    assert "is not a regular file" in verify_log(tmp_path)[0].message


# ----------------------------------------------------------------------------- the writer


def test_writer_appends_durably_and_writes_json_on_close(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path / "gov")
    first = writer.append("run_started", {"seed": 0})
    on_disk = (tmp_path / "gov" / AUDIT_JSONL).read_bytes()
    assert on_disk == first.canonical_bytes() + b"\n"  # visible before close
    assert not (tmp_path / "gov" / AUDIT_JSON).exists()
    writer.append("round", {"loss": 0.5}, round=1)
    writer.write_json()
    assert (tmp_path / "gov" / AUDIT_JSON).read_bytes() == writer.log.json_bytes()
    writer.append("run_completed")
    writer.close()
    writer.close()  # idempotent
    assert (tmp_path / "gov" / AUDIT_JSON).read_bytes() == writer.log.json_bytes()
    assert verify_log(tmp_path / "gov") == []
    with pytest.raises(ConfigurationError, match="is closed"):
        writer.append("late")


def test_writer_refuses_to_overwrite_a_run(tmp_path: Path) -> None:
    with AuditWriter(tmp_path) as writer:
        writer.append("run_started")
    with pytest.raises(ConfigurationError, match=r"refusing to overwrite it: to continue it use"):
        AuditWriter(tmp_path)


def test_writer_rejects_bad_events_without_writing(tmp_path: Path) -> None:
    with AuditWriter(tmp_path) as writer:
        writer.append("run_started")
        size = (tmp_path / AUDIT_JSONL).stat().st_size
        with pytest.raises(ValidationError, match=r"data\.rounds\[0\]\.loss"):
            writer.append("round", {"rounds": [{"loss": float("inf")}]})
        assert (tmp_path / AUDIT_JSONL).stat().st_size == size
        writer.append("round", {"ok": True}, round=1)
    assert verify_log(tmp_path) == []


def test_resume_continues_the_chain(tmp_path: Path) -> None:
    with AuditWriter(tmp_path) as writer:
        writer.append("run_started", {"seed": 3})
        writer.append("round", {"loss": 0.9}, round=1)
        head = writer.head
    log = load_log(tmp_path)
    assert len(log) == 2
    assert log.head == head
    with AuditWriter.resume(tmp_path) as writer:
        event = writer.append("round", {"loss": 0.8}, round=2)
        writer.append("run_completed")
    assert event.prev_hash == head
    assert event.index == 2
    assert verify_log(tmp_path) == []
    assert [e.kind for e in load_log(tmp_path)] == [
        "run_started",
        "round",
        "round",
        "run_completed",
    ]


def test_load_then_append_in_memory_then_write(tmp_path: Path) -> None:
    with AuditWriter(tmp_path) as writer:
        writer.append("run_started", {"seed": 3})
    log = load_log(tmp_path)
    log.append("round", {"loss": 0.7}, round=1)
    log.append("round", {"loss": 0.6}, round=2)
    with AuditWriter(tmp_path, log=log) as writer:  # writes the two new events
        writer.append("run_completed")
    assert verify_log(tmp_path) == []
    assert load_log(tmp_path).events == log.events  # the writer appended to log itself
    assert len(log) == 4
    other = AuditLog()
    other.append("run_started", {"seed": 4})
    with pytest.raises(ConfigurationError, match="does not start with the events it holds"):
        AuditWriter(tmp_path, log=other)


def test_resume_after_a_crash_mid_line(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path)
    writer.append("run_started", {"seed": 3})
    writer.append("round", {"loss": 0.9}, round=1)
    whole = (tmp_path / AUDIT_JSONL).read_bytes()
    (tmp_path / AUDIT_JSONL).write_bytes(whole[:-7])  # the last write was cut short
    with pytest.raises(SecurityError, match=r"line 2 \(event 1\) is incomplete"):
        load_log(tmp_path)
    with AuditWriter.resume(tmp_path, drop_incomplete_tail=True) as resumed:
        assert len(resumed) == 1
        resumed.append("round", {"loss": 0.95}, round=1)
    assert verify_log(tmp_path) == []
    assert len(load_log(tmp_path)) == 2


def test_load_log_refuses_a_tampered_log(tmp_path: Path) -> None:
    with AuditWriter(tmp_path) as writer:
        writer.append("run_started", {"seed": 3})
        writer.append("round", {"loss": 0.9}, round=1)
    path = tmp_path / AUDIT_JSONL
    path.write_bytes(path.read_bytes().replace(b"0.9", b"0.1"))
    with pytest.raises(SecurityError, match="event 1: hash does not match its content"):
        load_log(tmp_path)
    with pytest.raises(SecurityError):
        AuditWriter.resume(tmp_path)
    with pytest.raises(ValidationError, match="does not exist"):
        load_log(tmp_path / "nowhere")
