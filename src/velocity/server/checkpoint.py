"""Round checkpoints on any fsspec storage (``local://dir``, ``memory://dir``, ``s3://...``).

One checkpoint per saved round: ``round-NNNNNN.safetensors`` (the engine's tensors, never
pickle) and ``round-NNNNNN.json`` (its metadata). The contract:

- **crash-safe**: each file is written to a temporary name and renamed into place, the
  tensors first and the JSON last, so a checkpoint exists only once both are complete;
- **verified**: the JSON holds the SHA-256 of the safetensors bytes; on load a checkpoint
  whose JSON does not parse, whose tensors are truncated or altered (a digest mismatch, NaN
  bytes written over the data included) is skipped with a :class:`CheckpointWarning` naming
  the file, and the last good round is loaded instead;
- **bound to its run**: a checkpoint carries its run's identity (``config_hash`` and
  ``seed`` for the runner; the settings fingerprint for ``VelocityServer``), and
  ``load(identity=...)`` refuses another run's state with an error naming both;
- **linear in size**: each JSON holds only the round results recorded since the previous
  checkpoint (``meta["results"]`` is split on save and reassembled on load), so 400 rounds do
  not write 400 copies of the history.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
import warnings
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from velocity.errors import ConfigurationError, ValidationError

__all__ = ["CheckpointStore", "CheckpointWarning"]

_NAME = re.compile(r"round-(\d{6})\.json$")
MAX_JSON_BYTES = 256 << 20
"""A checkpoint JSON larger than this is refused before it is parsed."""


class CheckpointWarning(UserWarning):
    """A checkpoint file was unusable and an earlier round was loaded instead."""


class CheckpointStore:
    """Checkpoints of one run (see the module docstring).

    Examples
    --------
    >>> store = CheckpointStore("memory://doctest-ckpt")
    >>> import torch
    >>> store.save(1, {"w": torch.ones(2)}, {"round": 1, "results": [{"round": 1}]})
    >>> store.latest(), store.load()[1]["results"]
    (1, [{'round': 1}])
    """

    def __init__(self, uri: str) -> None:
        import fsspec

        if not isinstance(uri, str) or not uri.strip("/ "):
            raise ConfigurationError(f"storage must be a non-empty URI string; got {uri!r}")
        if uri.startswith("local://"):
            self.fs, self.root = fsspec.filesystem("file"), uri.removeprefix("local://")
        else:
            try:
                self.fs, self.root = fsspec.url_to_fs(uri)
            except (ValueError, ImportError) as err:
                raise ConfigurationError(f"storage URI {uri!r} is not usable: {err}") from err
        self.uri = uri

    def _path(self, round_: int, ext: str) -> str:
        return f"{self.root.rstrip('/')}/round-{round_:06d}.{ext}"

    # ------------------------------------------------------------------ writing

    def check_writable(self) -> None:
        """Create the folder and write and remove a probe file; raise ``ConfigurationError``
        naming the storage if that fails (call it before training, not after)."""
        probe = f"{self.root.rstrip('/')}/.probe-{uuid.uuid4().hex}"
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            with self.fs.open(probe, "wb") as fh:
                fh.write(b"ok")
            self.fs.rm(probe)
        except OSError as exc:
            raise ConfigurationError(
                f"checkpoint storage {self.uri!r} is not writable: {exc}"
            ) from exc

    def _write(self, path: str, data: bytes) -> None:
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with self.fs.open(tmp, "wb") as fh:
            fh.write(data)
        self.fs.mv(tmp, path)

    def save(self, round_: int, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        """Write round ``round_``'s checkpoint (tensors, then the JSON that makes it count).

        ``meta["results"]``, when present, is the whole history of round results; only those
        newer than the latest checkpoint already stored are written with this one.
        """
        from safetensors.torch import save

        self.fs.makedirs(self.root, exist_ok=True)
        payload = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        body = dict(meta)
        if "results" in body:
            previous = max((r for r in self.rounds() if r < round_), default=0)
            body["results"] = [r for r in body["results"] if int(r["round"]) > previous]
            body["results_after"] = previous
        body["tensors_sha256"] = hashlib.sha256(payload).hexdigest()
        self._write(self._path(round_, "safetensors"), payload)
        self._write(self._path(round_, "json"), json.dumps(body, sort_keys=True).encode())

    # ------------------------------------------------------------------ reading

    def rounds(self) -> list[int]:
        """Rounds that have a JSON file and a tensors file (complete or not: see ``load``)."""
        if not self.fs.exists(self.root):
            return []
        found = []
        for path in self.fs.ls(self.root, detail=False):
            match = _NAME.search(str(path))
            if match and self.fs.exists(self._path(int(match.group(1)), "safetensors")):
                found.append(int(match.group(1)))
        return sorted(found)

    def latest(self) -> int | None:
        rounds = self.rounds()
        return rounds[-1] if rounds else None

    def _read_meta(self, round_: int) -> dict[str, Any]:
        path = self._path(round_, "json")
        with self.fs.open(path, "rb") as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)
        if len(raw) > MAX_JSON_BYTES:
            raise ValidationError(f"{path}: larger than {MAX_JSON_BYTES} bytes")
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValidationError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise ValidationError(f"{path}: not a JSON object")
        return meta

    def _read_one(self, round_: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
        from safetensors import SafetensorError
        from safetensors.torch import load

        meta = self._read_meta(round_)
        path = self._path(round_, "safetensors")
        with self.fs.open(path, "rb") as fh:
            payload = fh.read()
        expected = meta.pop("tensors_sha256", None)
        if expected is None:
            raise ValidationError(f"{path}: its JSON carries no tensors_sha256")
        if hashlib.sha256(payload).hexdigest() != expected:
            raise ValidationError(
                f"{path}: tensors do not match their digest (truncated or altered)"
            )
        try:
            tensors = load(payload)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise ValidationError(f"{path}: not valid safetensors ({exc})") from None
        return tensors, meta

    def _history(self, round_: int, meta: dict[str, Any]) -> list[Any]:
        """The full results history up to ``round_``, from this and the earlier JSON files."""
        pieces = [meta.get("results", [])]
        after = int(meta.pop("results_after", 0))
        while after > 0:
            earlier = self._read_meta(after)
            pieces.append(earlier.get("results", []))
            after = int(earlier.get("results_after", 0))
        history = [r for piece in reversed(pieces) for r in piece]
        numbers = [int(r["round"]) for r in history]
        if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
            raise ValidationError(
                f"{self._path(round_, 'json')}: the stored round results are out of order"
            )
        return history

    def load(
        self, round_: int | None = None, *, identity: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Tensors and metadata of round ``round_`` (default: the latest *good* round).

        Unusable checkpoints are skipped with a :class:`CheckpointWarning` naming the file.
        With ``identity``, a checkpoint whose ``meta["identity"]`` differs is refused.

        Raises
        ------
        ValidationError
            No usable checkpoint (or the requested round is unusable).
        ConfigurationError
            The checkpoint belongs to another run (``identity`` differs).
        """
        candidates = self.rounds() if round_ is None else [round_]
        if not candidates:
            raise ValidationError(f"no checkpoint in {self.uri!r}")
        problems: list[str] = []
        for candidate in reversed(candidates):
            try:
                tensors, meta = self._read_one(candidate)
                if "results" in meta:
                    meta["results"] = self._history(candidate, meta)
            except (ValidationError, OSError, KeyError, TypeError, ValueError) as exc:
                problems.append(str(exc))
                if round_ is not None:
                    break
                warnings.warn(
                    f"skipping unusable checkpoint: {exc}", CheckpointWarning, stacklevel=2
                )
                continue
            if identity is not None:
                check_identity(self.uri, meta.get("identity"), identity)
            return tensors, meta
        raise ValidationError(f"no usable checkpoint in {self.uri!r}: " + "; ".join(problems))

    def identity(self) -> Any:
        """The identity stored with the latest checkpoint whose JSON parses (or ``None``)."""
        for candidate in reversed(self.rounds()):
            try:
                return self._read_meta(candidate).get("identity")
            except (ValidationError, OSError):
                continue
        return None


def check_identity(uri: str, stored: Any, expected: Mapping[str, Any]) -> None:
    """Raise ``ConfigurationError`` unless ``stored`` is the run ``expected`` describes."""
    if stored != dict(expected):
        raise ConfigurationError(
            f"the checkpoints in {uri!r} belong to another run ({_describe(stored)}); this run "
            f"is {_describe(expected)}. Resume refuses to mix runs: give another output "
            "directory or storage, or run without resume to start afresh"
        )


def _describe(identity: Any) -> str:
    if not isinstance(identity, Mapping):
        return "no recorded identity"
    parts = []
    for key in sorted(identity):
        value = identity[key]
        text = str(value)
        parts.append(f"{key}={text[:16]}{'…' if len(text) > 16 else ''}")
    return ", ".join(parts)
