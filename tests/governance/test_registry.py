"""Client records out of the chain, salted commitments, and erasure that keeps the chain valid."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from velocity.errors import ConfigurationError, SecurityError, ValidationError
from velocity.governance import (
    AUDIT_JSON,
    AUDIT_JSONL,
    CLIENTS,
    SIGNATURE,
    AuditWriter,
    ClientRegistry,
    canonical_json,
    erase_client,
    generate_signing_key,
    load_log,
    load_signature,
    sha256_hex,
    verify_run,
)

Run = Any


def test_commitment_is_salted_sha256_of_the_canonical_record() -> None:
    registry = ClientRegistry()
    record = {"site": "Lyon", "contact": "a@b.example"}
    commitment = registry.add("c1", record)
    salt = json.loads(registry.to_bytes())["c1"]["salt"]
    assert len(salt) == 32
    assert commitment == sha256_hex(bytes.fromhex(salt) + canonical_json(record))
    assert registry.record("c1") == record


def test_salts_are_random_not_derived() -> None:
    a, b = ClientRegistry(), ClientRegistry()
    assert a.add("c1", {"x": 1}) != b.add("c1", {"x": 1})


def test_registry_file_round_trip_and_mode(tmp_path: Path) -> None:
    registry = ClientRegistry()
    registry.add("c1", {"x": [1, 2.5]})
    registry.add("c2", {"y": "é"})
    registry.erase("c2")
    path = tmp_path / CLIENTS
    registry.write(path)
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    loaded = ClientRegistry.load(path)
    assert loaded.to_bytes() == path.read_bytes() == registry.to_bytes()
    assert loaded.commitments() == registry.commitments()
    assert loaded.is_erased("c2")
    assert not loaded.is_erased("c1")
    assert path.read_bytes().endswith(b'"c2":{"erased":true}}\n')


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"[]\n", "must hold a JSON object"),
        (b'{"c1":{"erased":false}}\n', "must be"),
        (b'{"c1":{"erased":1}}\n', "must be"),
        (b'{"c1":{"record":{},"salt":"xyz"}}\n', "salt of client 'c1' must be 32 lower-case hex"),
        (b'{"c1":{"record":[],"salt":"' + b"0" * 32 + b'"}}\n', "must be a JSON object"),
        (b'{"":{"erased":true}}\n', "a client id must be a str of 1 to 256"),
        (b'{"c1":{"erased":true}}', "not in canonical form"),
        (b'{"c1": {"erased":true}}\n', "not in canonical form"),
        (b'{"c1":{"erased":true},"c1":{"erased":true}}\n', "appears twice"),
        (b'{"c1":{"erased":tru', "not valid JSON"),
        (b"\xff", "not valid UTF-8"),
    ],
)
def test_registry_parsing_is_strict(data: bytes, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        ClientRegistry.from_bytes(data)


def test_registry_refusals() -> None:
    registry = ClientRegistry()
    registry.add("c1", {"x": 1})
    with pytest.raises(ValidationError, match="'c1' is already registered"):
        registry.add("c1", {"x": 2})
    with pytest.raises(ValidationError, match="must be a mapping"):
        registry.add("c2", ["not", "an", "object"])  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"unknown client 'nobody'; registered: 'c1'"):
        registry.erase("nobody")
    registry.erase("c1")
    with pytest.raises(ValidationError, match="'c1' was already erased"):
        registry.erase("c1")
    with pytest.raises(ValidationError, match="'c1' is already erased"):
        registry.add("c1", {"x": 3})
    with pytest.raises(ValidationError, match="was erased"):
        registry.record("c1")


# -------------------------------------------------------------------------------- erase_client


def all_bytes(run: Run) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(run.root.rglob("*")) if p.is_file())


def test_erasure_keeps_the_run_verifiable_and_removes_the_personal_data(
    make_run: Callable[..., Run], records: dict[str, dict[str, str]]
) -> None:
    run = make_run()
    before = load_log(run.governance)
    secret = records["hospital-b"]
    assert secret["contact"].encode() in all_bytes(run)
    event = erase_client(
        run.governance, "hospital-b", reason="GDPR art. 17 request #42", signing_key=run.key
    )
    assert event.kind == "erasure"
    assert event.index == len(before)
    assert event.data["client_id"] == "hospital-b"
    assert event.data["commitment"] == before.events[0].data["client_commitments"]["hospital-b"]  # type: ignore[index]
    report = verify_run(run.root, trusted_public_key=run.public_key, require_signature=True)
    assert report.ok, report.summary()
    assert report.signed
    assert report.events == len(before) + 1
    everything = all_bytes(run)
    for value in secret.values():
        assert value.encode() not in everything
    assert records["hospital-a"]["contact"].encode() in everything  # the others stay
    assert not [p for p in run.governance.iterdir() if p.name.startswith(".")]  # no temp files
    assert load_signature(run.file(SIGNATURE)).events == len(before) + 1
    assert run.file(AUDIT_JSON).read_bytes() == load_log(run.governance).json_bytes()


def test_erasure_of_a_signed_log_needs_its_key(
    make_run: Callable[..., Run], tmp_path: Path
) -> None:
    run = make_run()
    untouched = all_bytes(run)
    with pytest.raises(SecurityError, match="pass signing_key= so that the head after"):
        erase_client(run.governance, "lab-c", reason="request")
    with pytest.raises(SecurityError, match="is not the key that signed this log"):
        erase_client(
            run.governance, "lab-c", reason="request", signing_key=Ed25519PrivateKey.generate()
        )
    assert all_bytes(run) == untouched  # nothing was written
    key_path = tmp_path / "key.pem"
    generate_signing_key(key_path)
    with pytest.raises(SecurityError, match="is not the key that signed"):
        erase_client(run.governance, "lab-c", reason="request", signing_key=key_path)
    with pytest.raises(ConfigurationError, match="does not exist"):
        erase_client(run.governance, "lab-c", reason="request", signing_key=tmp_path / "none.pem")


def test_erasure_of_an_unsigned_log(make_run: Callable[..., Run]) -> None:
    run = make_run(signed=False)
    erase_client(run.governance, "lab-c", reason="request")
    assert not run.file(SIGNATURE).exists()
    assert verify_run(run.root).ok


def test_unknown_and_already_erased_clients_are_refused(make_run: Callable[..., Run]) -> None:
    run = make_run()
    with pytest.raises(ValidationError, match="unknown client 'nobody'"):
        erase_client(run.governance, "nobody", reason="request", signing_key=run.key)
    erase_client(run.governance, "lab-c", reason="request", signing_key=run.key)
    with pytest.raises(ValidationError, match=r"'lab-c' was already erased \(event 4\)"):
        erase_client(run.governance, "lab-c", reason="again", signing_key=run.key)
    for reason in ("", "   ", "x" * 1001, 5):
        with pytest.raises(ValidationError, match="reason must be a non-empty str"):
            erase_client(run.governance, "hospital-a", reason=reason, signing_key=run.key)  # type: ignore[arg-type]


def test_erasure_refuses_a_tampered_directory(make_run: Callable[..., Run]) -> None:
    run = make_run()
    path = run.file(CLIENTS)
    path.write_bytes(path.read_bytes().replace(b"Lyon", b"Nice"))
    with pytest.raises(SecurityError, match="does not match its commitment in event 0"):
        erase_client(run.governance, "hospital-a", reason="request", signing_key=run.key)
    run = make_run()
    log = run.file(AUDIT_JSONL)
    log.write_bytes(log.read_bytes().replace(b'"loss":0.5', b'"loss":0.4'))
    with pytest.raises(SecurityError, match="event 2: hash does not match its content"):
        erase_client(run.governance, "hospital-a", reason="request", signing_key=run.key)
    run = make_run()
    sig = run.file(SIGNATURE)
    sig.write_bytes(sig.read_bytes().replace(b'"events":4', b'"events":3'))
    with pytest.raises(SecurityError, match="the signature does not verify"):
        erase_client(run.governance, "hospital-a", reason="request", signing_key=run.key)


def test_an_interrupted_erasure_is_completed_by_calling_again(
    make_run: Callable[..., Run], records: dict[str, dict[str, str]]
) -> None:
    run = make_run()
    # Crash after the erasure event reached audit_log.jsonl, before anything else.
    commitment = load_log(run.governance).events[0].data["client_commitments"]["lab-c"]  # type: ignore[index]
    with AuditWriter.resume(run.governance) as writer:
        writer.append("erasure", {"client_id": "lab-c", "commitment": commitment, "reason": "r"})
    report = verify_run(run.root)
    messages = [p.message for p in report.problems]
    assert any("has an erasure event (event 4) but its record is still in" in m for m in messages)
    assert any("extended or truncated after signing" in m for m in messages)
    event = erase_client(run.governance, "lab-c", reason="r", signing_key=run.key)
    assert event.index == 4  # not appended twice
    assert len(load_log(run.governance)) == 5
    assert verify_run(run.root, trusted_public_key=run.public_key).ok
    assert records["lab-c"]["contact"].encode() not in all_bytes(run)
