"""Governance of a YAML run: the audit trail, client records, signature, replay manifest.

:func:`open_governance` is called by the runner before the first round (it refuses a bad
signing key before anything is trained); :meth:`RunGovernance.finish` after the outputs are
written. ``governance/`` then holds::

    audit_log.jsonl, audit_log.json   the hash-chained events (velocity.server.audit)
    audit_log.sig.json                with sign: Ed25519 signature of the chain head
    clients.json                      personal records, salted commitments in the chain
    replay_manifest.json              schema 1.1: everything a replay needs

The replay manifest (schema ``1.1``) holds: ``seed``, ``config_digest`` (the config hash),
``trajectory_hash``, ``config`` (the resolved configuration), ``packages`` (versions),
``git`` (commit and dirty flag of the VelocityFL source tree, when it is a git checkout),
``datasets`` (content digests of the train and test splits as loaded:
:meth:`velocity.data.ArrayDataset.checksum`), ``platform`` (including ``torch_threads``,
which bit-identity depends on), ``features`` (what the run enabled) and ``model_chain`` (the
model digest and chain link after every round). :func:`replay` re-runs it and compares the
chain round by round.
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from velocity import governance as gov
from velocity.errors import ConfigurationError, ValidationError
from velocity.experiments.outputs import _write
from velocity.server.audit import AuditTrail

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from velocity.experiments.config import ExperimentConfig
    from velocity.server.builder import Federation
    from velocity.strategies import RoundBatch
    from velocity.types import RoundResult, Stage

__all__ = [
    "MANIFEST_SCHEMA",
    "ReplayReport",
    "RunGovernance",
    "build_manifest",
    "credits_of",
    "load_manifest",
    "open_governance",
    "replay",
]

MANIFEST_SCHEMA: Final = "1.1"
MAX_MANIFEST_BYTES: Final = 64 * 2**20
_PACKAGES: Final = (
    "velocityfl",
    "torch",
    "numpy",
    "safetensors",
    "pydantic",
    "cryptography",
    "PyYAML",
    "matplotlib",
)


def credits_of(rounds: Sequence[RoundResult]) -> gov.CreditTracker:
    """Per-client credits of a run from its round records (the one ledger)."""
    tracker = gov.CreditTracker()
    for record in rounds:
        aggregation = record.aggregation
        excluded = set(aggregation.get("excluded_clients") or ())
        excluded |= set(aggregation.get("dropped_nonfinite_clients") or ())
        accepted = {
            cid: int(record.samples.get(cid, 0))
            for cid in record.participated
            if cid not in excluded
        }
        selected = list(dict.fromkeys([*record.selected_client_ids, *record.participated]))
        tracker.record_round(
            record.round,
            selected=selected,
            accepted=accepted,
            excluded=[c for c in record.participated if c in excluded],
        )
    return tracker


def _packages() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git() -> dict[str, Any]:
    """Commit and dirty flag of the source tree velocity was imported from, if a checkout."""
    import velocity

    where = Path(velocity.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": head or None, "dirty": bool(dirty)}


def _platform() -> dict[str, Any]:
    """The platform part of :func:`~velocity.experiments.results.run_environment` (the same
    facts summary.json records), plus what only a replay needs."""
    import torch

    from velocity.experiments.results import run_environment

    env = run_environment()
    return {
        "system": platform.system(),
        **{k: env[k] for k in ("platform", "machine", "processor", "python")},
        "python_implementation": platform.python_implementation(),
        "torch_threads": env["torch_threads"],
        "cuda": torch.cuda.is_available(),
    }


def _features(config: ExperimentConfig) -> dict[str, Any]:
    g = config.governance
    m = config.metrics
    return {
        "strategy": config.resolved()["strategy"],
        "backend": config.backend.type,
        "attacks": [a.to_dict()["type"] for a in config.attack_specs()],
        "dropout": config.simulation.dropout_rate > 0,
        "stragglers": config.simulation.straggler.enabled,
        "privacy": config.privacy.enabled,
        "compression": config.compression.enabled,
        "async_fl": config.async_fl.enabled,
        "governance": {
            "audit_log": g.save_audit_log,
            "replay_manifest": g.save_replay_manifest,
            "signed": g.sign,
        },
        "metrics": sorted(k for k, v in m.model_dump().items() if v is True),
        "checkpoints": config.output.checkpoint_every is not None,
    }


def build_manifest(
    config: ExperimentConfig,
    *,
    datasets: Mapping[str, str],
    model_chain: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The replay manifest (schema 1.1) of a run of ``config``."""
    return {
        "schema_version": MANIFEST_SCHEMA,
        "name": config.name,
        "seed": config.seed,
        "config_digest": config.config_hash(),
        "trajectory_hash": config.trajectory_hash(),
        "config": config.resolved(),
        "packages": _packages(),
        "git": _git(),
        "datasets": dict(datasets),
        "platform": _platform(),
        "features": _features(config),
        "model_chain": [dict(link) for link in model_chain],
    }


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read and check a replay manifest (bounded; JSON only)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ConfigurationError(f"replay manifest {p}: cannot read it ({exc})") from exc
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ValidationError(f"replay manifest {p}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"replay manifest {p}: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValidationError(f"replay manifest {p}: must be a JSON object")
    if data.get("schema_version") != MANIFEST_SCHEMA:
        raise ValidationError(
            f"replay manifest {p}: schema_version must be {MANIFEST_SCHEMA!r}; "
            f"got {data.get('schema_version')!r}"
        )
    for key, kind in (("config", dict), ("model_chain", list), ("seed", int), ("platform", dict)):
        if not isinstance(data.get(key), kind):
            raise ValidationError(f"replay manifest {p}: {key!r} must be a {kind.__name__}")
    for i, link in enumerate(data["model_chain"]):
        if not (
            isinstance(link, dict)
            and isinstance(link.get("round"), int)
            and all(_hex64(link.get(k)) for k in ("model_digest", "chain"))
        ):
            raise ValidationError(
                f"replay manifest {p}: model_chain[{i}] must be {{round, model_digest, chain}}"
            )
    return data


def _hex64(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def _json_bytes(data: Any) -> bytes:
    return (
        json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    ).encode()


@dataclass
class RunGovernance:
    """What the runner holds while a governed run is in progress."""

    config: ExperimentConfig
    directory: Path
    trail: AuditTrail
    signing_key: Ed25519PrivateKey | None = None
    registry: gov.ClientRegistry | None = None
    dataset_digests: dict[str, str] = field(default_factory=dict)

    @property
    def stage(self) -> Stage[RoundBatch]:
        """The audit trail's digest stage (goes before aggregation)."""
        return self.trail.stage

    def start(self, federation: Federation, *, resume: bool) -> None:
        """Client records and the first (or ``resumed``) event, before the first round."""
        engine = federation.engine
        clients_file = self.directory / gov.CLIENTS
        if resume and clients_file.exists():
            self.registry = gov.ClientRegistry.load(clients_file)
        else:
            registry = gov.ClientRegistry()
            for i, cid in enumerate(federation.client_ids):
                hist = (
                    federation.label_histogram[i] if i < len(federation.label_histogram) else None
                )
                record: dict[str, Any] = {"client_id": cid}
                if hist is not None:
                    record["num_samples"] = int(sum(hist))
                    record["label_histogram"] = [int(h) for h in hist]
                registry.add(cid, record)
            self.registry = registry
        self.directory.mkdir(parents=True, exist_ok=True)
        if federation.train is not None and federation.test is not None:
            self.dataset_digests = {
                f"{federation.train.name}/train": federation.train.checksum(),
                f"{federation.test.name}/test": federation.test.checksum(),
            }
        self.trail.start(
            engine,
            run={
                "name": self.config.name,
                "seed": self.config.seed,
                "config_digest": self.config.config_hash(),
                "trajectory_hash": self.config.trajectory_hash(),
                "datasets": self.dataset_digests,
            },
            client_commitments=self.registry.commitments(),
            resume=resume,
        )
        self.registry.write(clients_file)
        engine.callbacks.append(self.trail)

    def finish(self, run_dir: Path, written: Mapping[str, Path]) -> list[str]:
        """Manifest, ``run_completed`` with every output file's digest, signature.

        Returns the governance files written (relative to ``run_dir``).
        """
        g = self.config.governance
        files = {rel: gov.file_digest(path) for rel, path in written.items()}
        out: list[str] = []
        if g.save_replay_manifest:
            manifest = build_manifest(
                self.config, datasets=self.dataset_digests, model_chain=self.trail.model_chain
            )
            path = _write(self.directory / gov.MANIFEST, _json_bytes(manifest))
            rel = path.relative_to(run_dir).as_posix()
            files[rel] = gov.file_digest(path)
            out.append(rel)
        if g.save_audit_log:
            self.trail.finish(files)
            out += [f"governance/{gov.AUDIT_JSONL}", f"governance/{gov.AUDIT_JSON}"]
            if g.sign and self.signing_key is not None:
                record = gov.sign_head(self.trail.log, self.signing_key)
                gov.write_signature(self.directory / gov.SIGNATURE, record)
                out.append(f"governance/{gov.SIGNATURE}")
        out.append(f"governance/{gov.CLIENTS}")
        return out

    def abort(self) -> None:
        """An interrupted run: keep the events so far readable."""
        self.trail.close()


def open_governance(config: ExperimentConfig, run_dir: Path) -> RunGovernance | None:
    """The run's governance, or ``None`` when ``governance.enabled`` is false. A signing key
    that cannot be loaded is refused here, before anything is built or trained."""
    g = config.governance
    if not g.enabled:
        return None
    key = None
    if g.sign:
        assert g.signing_key is not None  # the config validator guarantees it
        key = gov.load_signing_key(Path(g.signing_key).expanduser())
    directory = run_dir / "governance"
    trail = AuditTrail(directory, write=g.save_audit_log)
    return RunGovernance(config=config, directory=directory, trail=trail, signing_key=key)


# ---------------------------------------------------------------------- replay


@dataclass(frozen=True)
class ReplayReport:
    """Round-by-round comparison of a replay's model chain with the manifest's."""

    rows: tuple[tuple[int, str, str | None, bool], ...]
    """``(round, recorded chain link, replayed link or None, identical)``."""
    environment_differences: tuple[str, ...]

    @property
    def identical(self) -> bool:
        return bool(self.rows) and all(ok for *_, ok in self.rows)

    @property
    def first_mismatch(self) -> int | None:
        return next((r for r, _, _, ok in self.rows if not ok), None)


def replay(
    manifest_path: str | Path,
    *,
    output_dir: str | Path,
    on_round: Callable[[int, str, str | None, bool], None] | None = None,
) -> ReplayReport:
    """Re-run the experiment of a replay manifest into ``output_dir`` and compare chains.

    The torch thread count is set to the manifest's (bit-identity depends on it); other
    differences of environment (package versions, platform, git commit) are reported, not
    refused. The replay itself runs with its own governance, so ``output_dir`` gets a new
    manifest whose chain is compared with the recorded one round by round.
    """
    import torch

    from velocity.experiments.config import parse_config
    from velocity.experiments.runner import run_experiment

    manifest = load_manifest(manifest_path)
    config = parse_config(manifest["config"], source=str(manifest_path))
    if config.config_hash() != manifest.get("config_digest"):
        raise ValidationError(
            f"replay manifest {manifest_path}: its config does not match its config_digest "
            f"({manifest.get('config_digest')}); the manifest was altered"
        )
    differences: list[str] = []
    threads = manifest["platform"].get("torch_threads")
    if isinstance(threads, int) and threads >= 1 and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    now_packages = _packages()
    for name, version in dict(manifest.get("packages", {})).items():
        if now_packages.get(name) != version:
            differences.append(f"{name}: recorded {version}, now {now_packages.get(name)}")
    now_platform = _platform()
    for key in ("machine", "processor", "python", "system"):
        recorded = manifest["platform"].get(key)
        if recorded != now_platform.get(key):
            differences.append(f"platform.{key}: recorded {recorded}, now {now_platform.get(key)}")
    # The replay writes its own governance files (manifest, chain) without needing the key.
    config = config.with_updates(
        {"governance.sign": False, "governance.signing_key": None, "governance.enabled": True}
    )
    recorded = {int(link["round"]): str(link["chain"]) for link in manifest["model_chain"]}
    rows: list[tuple[int, str, str | None, bool]] = []
    result_dir = Path(output_dir)
    run_experiment(config, output_dir=result_dir)
    replayed = load_manifest(result_dir / "governance" / gov.MANIFEST)
    got = {int(link["round"]): str(link["chain"]) for link in replayed["model_chain"]}
    for round_ in sorted(recorded):
        mine = got.get(round_)
        row = (round_, recorded[round_], mine, mine == recorded[round_])
        rows.append(row)
        if on_round is not None:
            on_round(*row)
    return ReplayReport(tuple(rows), tuple(differences))
