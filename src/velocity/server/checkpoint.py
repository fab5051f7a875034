"""Round checkpoints on any fsspec storage (``local://dir``, ``memory://dir``, ``s3://...``)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from velocity.errors import ConfigurationError, ValidationError

__all__ = ["CheckpointStore"]

_NAME = re.compile(r"round-(\d{6})\.json$")


class CheckpointStore:
    """One checkpoint per round: ``round-NNNNNN.safetensors`` plus ``round-NNNNNN.json``.

    Tensors travel as safetensors (never pickle); the JSON file holds the metadata and is
    written last, so a checkpoint counts only once both files exist — an interrupted write
    is ignored on resume. ``local://path`` means a path on this machine (relative paths are
    relative to the working directory); any other URI goes to ``fsspec.url_to_fs``.

    >>> store = CheckpointStore("memory://doctest-ckpt")
    >>> import torch
    >>> store.save(1, {"w": torch.ones(2)}, {"round": 1})
    >>> store.latest(), store.load()[1]["round"]
    (1, 1)
    """

    def __init__(self, uri: str) -> None:
        import fsspec

        if not isinstance(uri, str) or not uri:
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

    def save(self, round_: int, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        from safetensors.torch import save

        self.fs.makedirs(self.root, exist_ok=True)
        payload = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        with self.fs.open(self._path(round_, "safetensors"), "wb") as fh:
            fh.write(payload)
        with self.fs.open(self._path(round_, "json"), "w") as fh:
            json.dump(meta, fh, sort_keys=True)

    def rounds(self) -> list[int]:
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

    def load(self, round_: int | None = None) -> tuple[dict[str, Tensor], dict[str, Any]]:
        from safetensors.torch import load

        if round_ is None:
            round_ = self.latest()
            if round_ is None:
                raise ValidationError(f"no checkpoint in {self.uri!r}")
        with self.fs.open(self._path(round_, "safetensors"), "rb") as fh:
            tensors = load(fh.read())
        with self.fs.open(self._path(round_, "json"), "r") as fh:
            meta = json.load(fh)
        return tensors, meta
