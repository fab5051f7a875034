"""The public surface of velocity.governance, and the layers it may not reach into."""

from __future__ import annotations

import subprocess
import sys

import velocity.governance as governance

EXPECTED = {
    "canonical_json", "sha256_hex", "config_digest", "file_digest", "state_digest",
    "digest_rows", "AuditEvent", "AuditLog", "AuditWriter", "load_log", "GENESIS",
    "verify_log_bytes", "verify_log", "SignatureRecord", "generate_signing_key",
    "load_signing_key", "sign_head", "verify_signature", "ClientRegistry", "erase_client",
    "CreditTracker", "CreditRecord", "verify_run", "AuditReport", "Problem", "AUDIT_JSON",
    "AUDIT_JSONL", "SIGNATURE", "CLIENTS", "MANIFEST",
}  # fmt: skip


def test_all_is_complete_and_resolves() -> None:
    names = set(governance.__all__)
    assert len(names) == len(governance.__all__)
    assert names >= EXPECTED
    assert [n for n in governance.__all__ if not hasattr(governance, n)] == []
    assert governance.AUDIT_JSON == "audit_log.json"
    assert governance.AUDIT_JSONL == "audit_log.jsonl"
    assert governance.SIGNATURE == "audit_log.sig.json"
    assert governance.CLIENTS == "clients.json"
    assert governance.MANIFEST == "replay_manifest.json"
    assert governance.GENESIS == "0" * 64


def test_importing_governance_loads_no_higher_layer() -> None:
    code = (
        "import sys, velocity.governance\n"
        "bad = ('server', 'sim', 'experiments', 'strategies', 'kernels', 'client', 'attacks',"
        " 'metrics', 'secagg')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in"
        " [['velocity', b] for b in bad]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
