"""A small governed run directory, built the way the engine's audit callback would build it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from velocity.governance import (
    CLIENTS,
    SIGNATURE,
    AuditWriter,
    ClientRegistry,
    file_digest,
    public_key_hex,
    sign_head,
    write_signature,
)

#: Personal data the fixture puts in clients.json; erasure must remove every byte of it.
RECORDS = {
    "hospital-a": {"contact": "alice.martin@hospital-a.example", "site": "Lyon"},
    "hospital-b": {"contact": "bob.kowalski@hospital-b.example", "site": "Gdansk"},
    "lab-c": {"contact": "carol.nguyen@lab-c.example", "site": "Hanoi"},
}


@dataclass
class Run:
    root: Path
    governance: Path
    key: Ed25519PrivateKey
    public_key: str

    def file(self, name: str) -> Path:
        return self.governance / name


def build_run(root: Path, *, signed: bool = True, rounds: int = 2) -> Run:
    """metrics.json and governance/ with both log files, clients.json and a signature."""
    governance = root / "governance"
    root.mkdir(parents=True, exist_ok=True)
    (root / "metrics.json").write_text('{"final_loss": 0.125, "rounds": 2}\n')
    registry = ClientRegistry()
    for client_id, record in RECORDS.items():
        registry.add(client_id, record)
    with AuditWriter(governance) as writer:
        writer.append(
            "run_started",
            {"client_commitments": registry.commitments(), "config_digest": "ab" * 32},
        )
        for r in range(1, rounds + 1):
            writer.append("round", {"loss": 1.0 / r, "selected": ["hospital-a", "lab-c"]}, round=r)
        writer.append(
            "run_completed", {"files": {"metrics.json": file_digest(root / "metrics.json")}}
        )
        log = writer.log
    registry.write(governance / CLIENTS)
    key = Ed25519PrivateKey.generate()
    if signed:
        write_signature(governance / SIGNATURE, sign_head(log, key))
    return Run(root, governance, key, public_key_hex(key))


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Run]:
    counter = iter(range(1_000_000))

    def make(**kwargs: object) -> Run:
        return build_run(tmp_path / f"run{next(counter)}", **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def records() -> dict[str, dict[str, str]]:
    return {client_id: dict(record) for client_id, record in RECORDS.items()}
