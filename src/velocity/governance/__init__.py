"""Governance: digests, the hash-chained audit log, signatures, client records and credits.

- :func:`canonical_json` (RFC 8785), :func:`sha256_hex`, :func:`config_digest`,
  :func:`file_digest`, :func:`state_digest` (a model's named tensors) and :func:`digest_rows`
  (one digest per update row, equal to :func:`velocity.types.tensor_digest`).
- :class:`AuditLog` of :class:`AuditEvent`, written crash-safely by :class:`AuditWriter` as
  ``audit_log.jsonl`` and ``audit_log.json``; :func:`load_log` to resume,
  :func:`verify_log_bytes` / :func:`verify_log` to check.
- :func:`sign_head` / :func:`verify_signature`: Ed25519 over the head (``audit_log.sig.json``).
- :class:`ClientRegistry` (``clients.json``, kept out of the chain) and :func:`erase_client`.
- :class:`CreditTracker`: per-client contribution ledger.
- :func:`verify_run`: everything above, for a run directory, as an :class:`AuditReport`.

Files of ``<run_dir>/governance/``: :data:`AUDIT_JSONL`, :data:`AUDIT_JSON`,
:data:`SIGNATURE`, :data:`CLIENTS`, :data:`MANIFEST`.
"""

from velocity.governance._audit import (
    AUDIT_JSON,
    AUDIT_JSONL,
    GENESIS,
    AuditEvent,
    AuditLog,
    AuditWriter,
    load_log,
    verify_log,
    verify_log_bytes,
)
from velocity.governance._credits import CreditRecord, CreditTracker
from velocity.governance._hashing import (
    canonical_json,
    config_digest,
    digest_rows,
    file_digest,
    sha256_hex,
    state_digest,
)
from velocity.governance._problem import Problem
from velocity.governance._registry import CLIENTS, ClientRegistry, erase_client
from velocity.governance._signing import (
    SIGNATURE,
    SignatureRecord,
    generate_signing_key,
    load_signature,
    load_signing_key,
    public_key_hex,
    sign_head,
    verify_signature,
    write_signature,
)
from velocity.governance._verify import GOVERNANCE_DIR, MANIFEST, AuditReport, verify_run

__all__ = [
    "AUDIT_JSON",
    "AUDIT_JSONL",
    "CLIENTS",
    "GENESIS",
    "GOVERNANCE_DIR",
    "MANIFEST",
    "SIGNATURE",
    "AuditEvent",
    "AuditLog",
    "AuditReport",
    "AuditWriter",
    "ClientRegistry",
    "CreditRecord",
    "CreditTracker",
    "Problem",
    "SignatureRecord",
    "canonical_json",
    "config_digest",
    "digest_rows",
    "erase_client",
    "file_digest",
    "generate_signing_key",
    "load_log",
    "load_signature",
    "load_signing_key",
    "public_key_hex",
    "sha256_hex",
    "sign_head",
    "state_digest",
    "verify_log",
    "verify_log_bytes",
    "verify_run",
    "verify_signature",
    "write_signature",
]
