"""verify_run over a whole run directory: every byte of every governance file matters."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from velocity.errors import ConfigurationError
from velocity.governance import (
    AUDIT_JSON,
    AUDIT_JSONL,
    CLIENTS,
    SIGNATURE,
    AuditWriter,
    canonical_json,
    erase_client,
    file_digest,
    verify_run,
)

Run = Any


def flips(data: bytes, rnd: random.Random) -> list[tuple[int, int]]:
    out = [(i, b ^ 0x01) for i, b in enumerate(data)]
    for i, b in enumerate(data):
        new = rnd.randrange(255)
        out.append((i, new if new < b else new + 1))
    return out


def test_every_byte_of_every_governance_file_is_protected(make_run: Callable[..., Run]) -> None:
    run = make_run(rounds=1)
    erase_client(run.governance, "hospital-b", reason="request #7", signing_key=run.key)
    assert verify_run(run.root, trusted_public_key=run.public_key).ok
    targets = [
        run.file(AUDIT_JSONL),
        run.file(AUDIT_JSON),
        run.file(SIGNATURE),
        run.file(CLIENTS),
        run.root / "metrics.json",
    ]
    assert b'{"erased":true}' in run.file(CLIENTS).read_bytes()
    rnd = random.Random(17)
    missed: list[tuple[str, int, int]] = []
    total = 0
    for path in targets:
        original = path.read_bytes()
        for position, new in flips(original, rnd):
            changed = bytearray(original)
            changed[position] = new
            path.write_bytes(changed)
            report = verify_run(run.root)
            total += 1
            if report.ok:
                missed.append((path.name, position, new))
        path.write_bytes(original)
    assert verify_run(run.root).ok
    assert total > 6_000
    assert missed == []


def test_report_fields(make_run: Callable[..., Run]) -> None:
    run = make_run()
    report = verify_run(run.root, trusted_public_key=run.public_key)
    assert report.ok
    assert report.problems == ()
    assert report.events == 4
    assert report.signed
    assert report.signer == run.public_key
    assert report.first_broken_event is None
    assert report.files_checked == 5  # jsonl, json, signature, clients, metrics.json
    assert report.summary().startswith("OK: 4 events, signed by")


def test_first_broken_event_and_messages(make_run: Callable[..., Run]) -> None:
    run = make_run()
    log = run.file(AUDIT_JSONL)
    log.write_bytes(log.read_bytes().replace(b'"loss":0.5', b'"loss":0.4'))
    report = verify_run(run.root)
    assert not report.ok
    assert report.first_broken_event == 2
    assert str(report.problems[0]) == (
        "governance/audit_log.jsonl: event 2: hash does not match its content"
    )
    assert "governance/audit_log.json: audit_log.json differs from audit_log.jsonl at event 2" in [
        str(p) for p in report.problems
    ]


def test_signature_requirements(make_run: Callable[..., Run]) -> None:
    unsigned = make_run(signed=False)
    assert verify_run(unsigned.root).ok
    report = verify_run(unsigned.root, require_signature=True)
    assert [p.message for p in report.problems] == ["the log is not signed, but it is required"]
    report = verify_run(unsigned.root, trusted_public_key=unsigned.public_key)
    assert "a trusted key was given" in report.problems[0].message
    signed = make_run()
    report = verify_run(signed.root, trusted_public_key=unsigned.public_key)
    assert not report.ok
    assert not report.signed
    assert (
        report.problems[0].message
        == f"signed by {signed.public_key}, expected {unsigned.public_key}"
    )
    with pytest.raises(ConfigurationError, match="trusted_public_key must be"):
        verify_run(signed.root, trusted_public_key="ABC")
    with pytest.raises(ConfigurationError, match="require_signature must be true or false"):
        verify_run(signed.root, require_signature="yes")  # type: ignore[arg-type]


def test_truncated_or_extended_after_signing(make_run: Callable[..., Run]) -> None:
    run = make_run()
    with AuditWriter.resume(run.governance) as writer:
        writer.append("note", {"text": "added after signing"})
    report = verify_run(run.root)
    assert len(report.problems) == 1
    assert "extended or truncated after signing" in report.problems[0].message
    run = make_run()
    lines = run.file(AUDIT_JSONL).read_bytes().split(b"\n")
    run.file(AUDIT_JSONL).write_bytes(b"\n".join(lines[:-2]) + b"\n")  # drop the last event
    run.file(AUDIT_JSON).unlink()
    report = verify_run(run.root)
    assert any("extended or truncated after signing" in p.message for p in report.problems)


def rewrite_clients(run: Run, change: Callable[[dict[str, Any]], None]) -> None:
    body = json.loads(run.file(CLIENTS).read_bytes())
    change(body)
    run.file(CLIENTS).write_bytes(canonical_json(body) + b"\n")


def test_records_and_commitments_must_agree(make_run: Callable[..., Run]) -> None:
    run = make_run()
    rewrite_clients(run, lambda body: body.pop("lab-c"))  # deleted outright, no erasure event
    assert [p.message for p in verify_run(run.root).problems] == [
        "client 'lab-c''s record was deleted without an erasure event (committed to in event 0)"
    ]
    rewrite_clients(run, lambda body: body.update({"lab-c": {"erased": True}}))
    assert [p.message for p in verify_run(run.root).problems] == [
        "client 'lab-c' is marked erased but the log has no erasure event for it"
    ]
    rewrite_clients(run, lambda body: body["hospital-a"]["record"].update(site="Paris"))
    assert verify_run(run.root).problems[0].message == (
        "the record of client 'hospital-a' does not match its commitment in event 0"
    )
    run.file(CLIENTS).unlink()
    assert verify_run(run.root).problems[0].message == (
        "clients.json is missing, but event 0 commits to 3 client records"
    )


def test_erasures_must_agree_with_the_registry(make_run: Callable[..., Run]) -> None:
    run = make_run(signed=False)
    erase_client(run.governance, "lab-c", reason="request")
    assert verify_run(run.root).ok
    rewrite_clients(run, lambda body: body.pop("lab-c"))
    assert [p.message for p in verify_run(run.root).problems] == [
        "client 'lab-c' was erased in event 4 but is missing from clients.json "
        '(expected {"erased": true})'
    ]
    run = make_run(signed=False)
    with AuditWriter.resume(run.governance) as writer:
        writer.append("erasure", {"client_id": "ghost", "commitment": "ab" * 32, "reason": "r"})
        writer.append("erasure", {"client_id": "lab-c"})
    messages = [p.message for p in verify_run(run.root).problems]
    assert messages == [
        "event 5: an erasure event needs data with a str client_id and a 64-hex commitment",
        "event 4: the erasure of client 'ghost' names a client the log never committed to",
    ]


def test_listed_files_are_digested_and_paths_are_confined(make_run: Callable[..., Run]) -> None:
    run = make_run(signed=False)
    (run.root / "model.bin").write_bytes(b"weights")
    outside = run.root.parent / "outside.txt"
    outside.write_text("secret")
    os.symlink(outside, run.root / "link.txt")
    digest = file_digest(run.root / "model.bin")
    files = {
        "model.bin": digest,
        "missing.bin": digest,
        "../outside.txt": digest,
        "/etc/passwd": digest,
        "a/./b": digest,
        "C:/x": digest,
        "dir\\file": digest,
        "link.txt": file_digest(outside),
        "governance/audit_log.jsonl": digest,
        "bad-digest.bin": "XYZ",
    }
    with AuditWriter.resume(run.governance) as writer:
        writer.append("run_completed", {"files": files})
    report = verify_run(run.root)
    messages = sorted(str(p) for p in report.problems)
    expected_fragments = [
        "refusing listed path '../outside.txt': it has '.', '..' or empty components",
        "refusing listed path '/etc/passwd': it is absolute",
        "refusing listed path 'a/./b'",
        "refusing listed path 'C:/x': it is absolute",
        "refusing listed path 'dir\\\\file': it holds a backslash",
        "refusing listed path 'governance/audit_log.jsonl': the audit files cannot list",
        "the digest of 'bad-digest.bin' is not 64 lower-case hex digits",
        "missing.bin: missing.bin is missing (listed in event 4)",
        "link.txt: link.txt leaves the run directory through a symlink",
    ]
    for fragment in expected_fragments:
        assert any(fragment in m for m in messages), (fragment, messages)
    assert len(report.problems) == len(expected_fragments)
    assert all(p.event == 4 for p in report.problems)
    assert (
        report.files_checked == 4
    )  # jsonl, json, clients, model.bin (metrics.json is no longer listed)


def test_only_the_last_run_completed_event_counts(make_run: Callable[..., Run]) -> None:
    run = make_run(signed=False)
    (run.root / "metrics.json").write_text("changed")
    assert not verify_run(run.root).ok
    with AuditWriter.resume(run.governance) as writer:
        writer.append(
            "run_completed", {"files": {"metrics.json": file_digest(run.root / "metrics.json")}}
        )
    assert verify_run(run.root).ok


def test_hostile_directories_give_reports_not_tracebacks(tmp_path: Path) -> None:
    assert "does not exist" in verify_run(tmp_path).problems[0].message
    gov = tmp_path / "governance"
    gov.mkdir()
    (gov / AUDIT_JSONL).write_bytes(b'{"data": 1}\n\x00\xff\n')
    (gov / AUDIT_JSON).write_bytes(b"\xff" * 10)
    (gov / SIGNATURE).write_bytes(b'{"algorithm": "ed25519"}')
    (gov / CLIENTS).write_bytes(b"[1, 2, 3]")
    report = verify_run(tmp_path)
    assert not report.ok
    assert report.first_broken_event == 0
    wheres = {p.where for p in report.problems}
    assert wheres == {
        "governance/audit_log.jsonl",
        "governance/audit_log.json",
        "governance/audit_log.sig.json",
        "governance/clients.json",
    }
    with open(gov / CLIENTS, "wb") as handle:
        handle.truncate((256 << 20) + 1)
    report = verify_run(tmp_path)
    assert any("the limit is 268,435,456 bytes" in p.message for p in report.problems)
