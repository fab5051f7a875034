"""Ed25519 signatures over the head of an audit log.

A :class:`SignatureRecord` says "the log whose event ``events - 1`` has hash ``head_hash`` was
signed by ``public_key``". The signed message is::

    b"velocity-audit-v1\\n" + canonical_json(
        {"algorithm": "ed25519", "events": events, "head_hash": head_hash,
         "public_key": public_key})

(the prefix separates these signatures from any other use of the same key). The record is
stored as ``audit_log.sig.json``: ``canonical_json(record.to_dict()) + b"\\n"``; reading it
back checks the bytes are exactly that, so a flipped byte anywhere in the file is detected.

Integrity is not identity
-------------------------
The record embeds the public key that checks it, so a valid signature only proves that
*whoever holds that key* signed this head: anyone can re-sign an altered log with a fresh key.
To know *who* signed, compare the key with one you trust (pin it):
``verify_signature(..., trusted_public_key=...)`` or ``verify_run(...,
trusted_public_key=...)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from velocity._validation import short_repr
from velocity.errors import ConfigurationError, ValidationError
from velocity.governance._audit import AuditLog, is_hex64
from velocity.governance._hashing import canonical_json, parse_json
from velocity.governance._io import KIB, atomic_write, read_bounded
from velocity.governance._problem import Problem

__all__ = [
    "ALGORITHM",
    "DOMAIN",
    "MAX_KEY_BYTES",
    "MAX_SIGNATURE_BYTES",
    "SIGNATURE",
    "SignatureRecord",
    "generate_signing_key",
    "load_signature",
    "load_signing_key",
    "public_key_hex",
    "sign_head",
    "verify_signature",
    "write_signature",
]

SIGNATURE = "audit_log.sig.json"
ALGORITHM = "ed25519"
#: Domain-separation prefix of every signed message.
DOMAIN = b"velocity-audit-v1\n"
MAX_KEY_BYTES = 64 * KIB
MAX_SIGNATURE_BYTES = 64 * KIB
_RECORD_KEYS = ("algorithm", "events", "head_hash", "public_key", "signature")
_HEX128 = re.compile(r"[0-9a-f]{128}")


def public_key_hex(private_key: Ed25519PrivateKey) -> str:
    """The raw 32-byte Ed25519 public key of ``private_key``, as 64 hex digits.

    Examples
    --------
    >>> len(public_key_hex(Ed25519PrivateKey.generate()))
    64
    """
    if not isinstance(private_key, Ed25519PrivateKey):
        raise ConfigurationError(
            f"expected an Ed25519 private key; got {type(private_key).__name__}"
        )
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return raw.hex()


def generate_signing_key(path: str | os.PathLike[str]) -> str:
    """Create a new Ed25519 key at ``path`` (PKCS8 PEM, unencrypted, mode 0o600).

    Returns
    -------
    str
        The public key, 64 hex digits: publish it and pin it when verifying.

    Raises
    ------
    ConfigurationError
        ``path`` already exists (a key is never overwritten) or cannot be created.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     public = generate_signing_key(Path(tmp) / "audit.pem")
    ...     public == public_key_hex(load_signing_key(Path(tmp) / "audit.pem"))
    True
    """
    target = Path(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise ConfigurationError(
            f"signing key file {target} already exists; refusing to overwrite a key "
            "(choose another path or delete it yourself)"
        ) from None
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create signing key file {target}: {exc.strerror or exc}"
        ) from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    return public_key_hex(key)


def load_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read an unencrypted PKCS8 PEM Ed25519 private key (as :func:`generate_signing_key`
    writes it).

    Raises
    ------
    ConfigurationError
        The file is missing, larger than 64 KiB, not a PEM private key, encrypted, or holds
        another kind of key; the message says which.
    """
    target = Path(path)
    try:
        pem = read_bounded(target, MAX_KEY_BYTES, "signing key file")
    except ValidationError as exc:
        raise ConfigurationError(str(exc)) from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise ConfigurationError(
            f"signing key file {target} is encrypted; velocity reads unencrypted PKCS8 PEM keys"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(
            f"signing key file {target} is not a readable PEM private key ({exc})"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(
            f"signing key file {target} holds {_key_kind(key)}; expected an Ed25519 key "
            "(make one with generate_signing_key)"
        )
    return key


def _key_kind(key: object) -> str:
    kinds = (
        (rsa.RSAPrivateKey, "an RSA key"),
        (ec.EllipticCurvePrivateKey, "an elliptic-curve (ECDSA) key"),
        (dsa.DSAPrivateKey, "a DSA key"),
        (ed448.Ed448PrivateKey, "an Ed448 key"),
        (x25519.X25519PrivateKey, "an X25519 key"),
    )
    for cls, name in kinds:
        if isinstance(key, cls):
            return name
    return f"a {type(key).__name__} key"


def _message(events: int, head_hash: str, public_key: str) -> bytes:
    body = {
        "algorithm": ALGORITHM,
        "events": events,
        "head_hash": head_hash,
        "public_key": public_key,
    }
    return DOMAIN + canonical_json(body)


@dataclass(frozen=True)
class SignatureRecord:
    """An Ed25519 signature over ``(head_hash, events)`` of an audit log.

    Attributes
    ----------
    algorithm : str
        Always ``"ed25519"``.
    public_key : str
        The signer's raw public key, 64 hex digits.
    head_hash : str
        Hash of the last event signed (:data:`~velocity.governance.GENESIS` for none).
    events : int
        Number of events signed.
    signature : str
        The 64-byte signature of :meth:`message`, 128 hex digits.

    Examples
    --------
    >>> log = AuditLog()
    >>> _ = log.append("run_started")
    >>> record = sign_head(log, Ed25519PrivateKey.generate())
    >>> SignatureRecord.from_bytes(record.to_bytes()) == record
    True
    >>> verify_signature(record, head_hash=log.head, events=len(log))
    []
    """

    algorithm: str
    public_key: str
    head_hash: str
    events: int
    signature: str

    def __post_init__(self) -> None:
        if self.algorithm != ALGORITHM:
            raise ValidationError(
                f"SignatureRecord.algorithm must be {ALGORITHM!r}; got {short_repr(self.algorithm)}"
            )
        for name in ("public_key", "head_hash"):
            if not is_hex64(getattr(self, name)):
                raise ValidationError(
                    f"SignatureRecord.{name} must be 64 lower-case hex digits; "
                    f"got {short_repr(getattr(self, name))}"
                )
        if type(self.events) is not int or self.events < 0:
            raise ValidationError(
                f"SignatureRecord.events must be an int >= 0; got {short_repr(self.events)}"
            )
        if not isinstance(self.signature, str) or _HEX128.fullmatch(self.signature) is None:
            raise ValidationError(
                "SignatureRecord.signature must be 128 lower-case hex digits; "
                f"got {short_repr(self.signature)}"
            )

    def message(self) -> bytes:
        """The bytes that were signed (see the module docstring)."""
        return _message(self.events, self.head_hash, self.public_key)

    def to_dict(self) -> dict[str, Any]:
        """The five fields as a dict."""
        return {
            "algorithm": self.algorithm,
            "events": self.events,
            "head_hash": self.head_hash,
            "public_key": self.public_key,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any]) -> SignatureRecord:
        """Inverse of :meth:`to_dict`: exactly the five keys, each strictly typed."""
        if not isinstance(mapping, Mapping):
            raise ValidationError(f"a signature record is a JSON object; got {short_repr(mapping)}")
        if set(mapping) != set(_RECORD_KEYS):
            missing = sorted(set(_RECORD_KEYS) - set(mapping))
            unexpected = sorted(str(k) for k in set(mapping) - set(_RECORD_KEYS))
            raise ValidationError(
                f"a signature record has exactly the keys {list(_RECORD_KEYS)}; "
                f"missing {missing}, unexpected {unexpected}"
            )
        return cls(**{key: mapping[key] for key in _RECORD_KEYS})

    def to_bytes(self) -> bytes:
        """The exact bytes of ``audit_log.sig.json``."""
        return canonical_json(self.to_dict()) + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> SignatureRecord:
        """Parse ``audit_log.sig.json``, requiring exactly its canonical bytes.

        Raises
        ------
        ValidationError
            Too large, not JSON, wrong fields, or not byte-for-byte canonical.
        """
        if len(data) > MAX_SIGNATURE_BYTES:
            raise ValidationError(
                f"{SIGNATURE} is {len(data):,} bytes; the limit is {MAX_SIGNATURE_BYTES:,}"
            )
        record = cls.from_dict(parse_json(data, SIGNATURE))
        if record.to_bytes() != data:
            raise ValidationError(
                f"{SIGNATURE} is not in canonical form (its bytes differ from "
                "canonical_json of its fields plus a newline)"
            )
        return record


@overload
def sign_head(head: AuditLog, private_key: Ed25519PrivateKey, /) -> SignatureRecord: ...


@overload
def sign_head(head: str, events: int, private_key: Ed25519PrivateKey, /) -> SignatureRecord: ...


def sign_head(head: AuditLog | str, *rest: object) -> SignatureRecord:
    """Sign the head of a log: ``sign_head(log, key)`` or ``sign_head(head_hash, events, key)``.

    Parameters
    ----------
    head : AuditLog or str
        The log, or the hash of its last event (:data:`~velocity.governance.GENESIS` for an
        empty log) followed by ``events``, its number of events. The last argument is the
        signer's ``Ed25519PrivateKey`` (:func:`load_signing_key`).

    Raises
    ------
    ValidationError
        Wrong arguments: the message shows the two accepted forms.
    ConfigurationError
        The key is not an Ed25519 private key.

    Examples
    --------
    >>> key = Ed25519PrivateKey.generate()
    >>> record = sign_head("ab" * 32, 5, key)
    >>> record.events, record.public_key == public_key_hex(key)
    (5, True)
    >>> log = AuditLog()
    >>> _ = log.append("run_started")
    >>> sign_head(log, key) == sign_head(log.head, 1, key)
    True
    """
    usage = "sign_head(log, private_key) or sign_head(head_hash, events, private_key)"
    count: object
    if isinstance(head, AuditLog) and len(rest) == 1:
        head_hash, count, key = head.head, len(head), rest[0]
    elif isinstance(head, str) and len(rest) == 2:
        head_hash, count, key = head, rest[0], rest[1]
    else:
        raise ValidationError(
            f"call {usage}; got a {type(head).__name__} and {len(rest)} more arguments"
        )
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(
            f"sign_head needs an Ed25519 private key; got {type(key).__name__} ({usage})"
        )
    if not is_hex64(head_hash):
        raise ValidationError(
            f"sign_head: head must be 64 lower-case hex digits; got {short_repr(head_hash)}"
        )
    if type(count) is not int or count < 0:
        raise ValidationError(f"sign_head: events must be an int >= 0; got {short_repr(count)}")
    public = public_key_hex(key)
    signature = key.sign(_message(count, head_hash, public)).hex()
    return SignatureRecord(ALGORITHM, public, head_hash, count, signature)


def _check_trusted(trusted_public_key: str | None) -> None:
    if trusted_public_key is not None and not is_hex64(trusted_public_key):
        raise ConfigurationError(
            "trusted_public_key must be a raw Ed25519 public key as 64 lower-case hex digits; "
            f"got {short_repr(trusted_public_key)}"
        )


def verify_signature(
    record: SignatureRecord,
    *,
    head_hash: str,
    events: int,
    trusted_public_key: str | None = None,
) -> list[Problem]:
    """Every problem of ``record`` as the signature of the log ``(head_hash, events)``.

    Reports a signature that does not verify, a head that is not the log's (the log was
    extended or truncated after signing), and, when ``trusted_public_key`` is given, a
    record signed by another key. Without a trusted key, a valid record proves only that the
    log is unchanged since someone holding *its embedded key* signed it, not who that was.

    Examples
    --------
    >>> key = Ed25519PrivateKey.generate()
    >>> record = sign_head("ab" * 32, 5, key)
    >>> [p.message for p in verify_signature(record, head_hash="ab" * 32, events=6)]
    ['the signature covers 5 events ending at abababababab...; the log has 6 events ending at abababababab...: the log was extended or truncated after signing']
    """  # noqa: E501
    _check_trusted(trusted_public_key)
    problems: list[Problem] = []
    try:
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(record.public_key))
        public.verify(bytes.fromhex(record.signature), record.message())
    except (InvalidSignature, ValueError):
        problems.append(
            Problem(
                SIGNATURE,
                "the signature does not verify: the record was altered, or it was not made "
                "by the key it names",
            )
        )
    if record.head_hash != head_hash or record.events != events:
        problems.append(
            Problem(
                SIGNATURE,
                f"the signature covers {record.events} events ending at "
                f"{record.head_hash[:12]}...; the log has {events} events ending at "
                f"{head_hash[:12]}...: the log was extended or truncated after signing",
            )
        )
    if trusted_public_key is not None and record.public_key != trusted_public_key:
        problems.append(
            Problem(
                SIGNATURE,
                f"signed by {record.public_key}, expected {trusted_public_key}",
            )
        )
    return problems


def write_signature(path: str | os.PathLike[str], record: SignatureRecord) -> None:
    """Write ``record`` to ``path`` (normally ``governance/audit_log.sig.json``) atomically."""
    atomic_write(path, record.to_bytes())


def load_signature(path: str | os.PathLike[str]) -> SignatureRecord:
    """Read a signature file, bounded to 64 KiB and required to be canonical.

    Raises
    ------
    ValidationError
        Missing, too large, malformed or not canonical.
    """
    return SignatureRecord.from_bytes(read_bounded(path, MAX_SIGNATURE_BYTES, SIGNATURE))
