"""Ed25519 keys, signatures over the head, and what a signature does and does not prove."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from velocity.errors import ConfigurationError, ValidationError
from velocity.governance import (
    AuditLog,
    SignatureRecord,
    canonical_json,
    generate_signing_key,
    load_signature,
    load_signing_key,
    public_key_hex,
    sign_head,
    verify_signature,
    write_signature,
)


def small_log(events: int = 3) -> AuditLog:
    log = AuditLog()
    for i in range(events):
        log.append("round", {"i": i}, round=i)
    return log


def test_generated_key_file_is_private_pkcs8_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "audit.pem"
    public = generate_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted
    key = load_signing_key(path)
    assert public_key_hex(key) == public
    with pytest.raises(ConfigurationError, match="already exists; refusing to overwrite"):
        generate_signing_key(path)
    assert path.read_bytes() == pem


def test_load_signing_key_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_signing_key(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_bytes(b"not a key at all")
    with pytest.raises(ConfigurationError, match="is not a readable PEM private key"):
        load_signing_key(tmp_path / "junk.pem")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pem").write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(
        ConfigurationError, match=r"holds an elliptic-curve \(ECDSA\) key; expected"
    ):
        load_signing_key(tmp_path / "ec.pem")
    encrypted = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    (tmp_path / "enc.pem").write_bytes(encrypted)
    with pytest.raises(ConfigurationError, match="is encrypted"):
        load_signing_key(tmp_path / "enc.pem")
    with open(tmp_path / "big.pem", "wb") as handle:
        handle.truncate(1 << 20)
    with pytest.raises(ConfigurationError, match="the limit is 65,536 bytes"):
        load_signing_key(tmp_path / "big.pem")


def test_signed_message_is_domain_separated_canonical_json() -> None:
    key = Ed25519PrivateKey.generate()
    log = small_log()
    record = sign_head(log, key)
    message = b"velocity-audit-v1\n" + canonical_json(
        {
            "algorithm": "ed25519",
            "events": 3,
            "head_hash": log.head,
            "public_key": public_key_hex(key),
        }
    )
    assert record.message() == message
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(record.public_key))
    public.verify(bytes.fromhex(record.signature), message)  # raises if wrong
    assert record.to_bytes() == canonical_json(record.to_dict()) + b"\n"


def test_extension_and_truncation_after_signing_are_detected() -> None:
    log = small_log(3)
    record = sign_head(log, Ed25519PrivateKey.generate())
    assert verify_signature(record, head_hash=log.head, events=3) == []
    longer = AuditLog.from_events(log.events)
    longer.append("round", {"i": 3}, round=3)
    shorter = AuditLog.from_events(log.events[:2])
    for other in (longer, shorter):
        problems = verify_signature(record, head_hash=other.head, events=len(other))
        assert len(problems) == 1
        assert "the log was extended or truncated after signing" in problems[0].message


def test_a_pinned_key_is_what_proves_identity() -> None:
    log = small_log()
    ours, theirs = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    forged = sign_head(log, theirs)  # anyone can sign any log with their own key...
    assert verify_signature(forged, head_hash=log.head, events=len(log)) == []
    problems = verify_signature(
        forged, head_hash=log.head, events=len(log), trusted_public_key=public_key_hex(ours)
    )  # ...which only the pinned key exposes
    assert [p.message for p in problems] == [
        f"signed by {public_key_hex(theirs)}, expected {public_key_hex(ours)}"
    ]
    with pytest.raises(ConfigurationError, match="trusted_public_key must be"):
        verify_signature(forged, head_hash=log.head, events=3, trusted_public_key="nope")


def test_altered_records_do_not_verify() -> None:
    log = small_log()
    record = sign_head(log, Ed25519PrivateKey.generate())
    other = Ed25519PrivateKey.generate()
    swapped_key = SignatureRecord(
        "ed25519", public_key_hex(other), record.head_hash, record.events, record.signature
    )
    flipped = record.signature[:-1] + ("0" if record.signature[-1] != "0" else "1")
    bad_sig = SignatureRecord("ed25519", record.public_key, log.head, 3, flipped)
    for bad in (swapped_key, bad_sig):
        problems = verify_signature(bad, head_hash=log.head, events=3)
        assert [p.message.split(":")[0] for p in problems] == ["the signature does not verify"]


def test_signature_file_round_trip_and_strict_parsing(tmp_path: Path) -> None:
    log = small_log()
    record = sign_head(log, Ed25519PrivateKey.generate())
    path = tmp_path / "audit_log.sig.json"
    write_signature(path, record)
    assert load_signature(path) == record
    pretty = canonical_json(record.to_dict()).replace(b",", b", ") + b"\n"
    with pytest.raises(ValidationError, match="not in canonical form"):
        SignatureRecord.from_bytes(pretty)
    with pytest.raises(ValidationError, match="exactly the keys"):
        SignatureRecord.from_bytes(b'{"algorithm":"ed25519"}\n')
    as_dict = record.to_dict()
    for key, value, match in [
        ("algorithm", "rsa", "algorithm must be 'ed25519'"),
        ("events", -1, "events must be an int >= 0"),
        ("events", 2.0, "events must be an int >= 0"),
        ("head_hash", "XY" * 32, "head_hash must be 64 lower-case hex"),
        ("signature", "ab", "signature must be 128 lower-case hex"),
    ]:
        with pytest.raises(ValidationError, match=match):
            SignatureRecord.from_dict({**as_dict, key: value})
    with pytest.raises(ValidationError, match=r"call sign_head\(log, private_key\) or"):
        sign_head(log.head, Ed25519PrivateKey.generate())  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="needs an Ed25519 private key"):
        sign_head(log, "not a key")  # type: ignore[call-overload]
    with pytest.raises(ValidationError, match="events must be an int >= 0; got -1"):
        sign_head(log.head, -1, Ed25519PrivateKey.generate())


def test_sign_head_accepts_a_head_and_count() -> None:
    log = small_log()
    key = Ed25519PrivateKey.generate()
    by_log, by_head = sign_head(log, key), sign_head(log.head, len(log), key)
    assert by_log == by_head  # Ed25519 signatures are deterministic
