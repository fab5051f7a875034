"""Reading ``train.json`` and ``update.json``: bounded, validated, one clear error."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from velocity.errors import ConfigurationError
from velocity.fedtrain.models import LocalUpdate, TrainingConfig

__all__ = ["MAX_FILE_BYTES", "read_config", "read_update"]

MAX_FILE_BYTES: Final = 64 * 2**20
"""Largest file :func:`read_update` and :func:`read_config` read (64 MiB)."""

M = TypeVar("M", bound=BaseModel)


def _problems(error: PydanticValidationError) -> list[str]:
    lines = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "(file)"
        lines.append(f"{where}: {problem['msg']}")
    return lines


def _read(path: str | os.PathLike[str], model: type[M], what: str, max_bytes: int) -> M:
    source = Path(path)
    try:
        with source.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as error:
        raise ConfigurationError(f"cannot read the {what} {source}: {error.strerror}") from None
    if len(data) > max_bytes:
        raise ConfigurationError(
            f"the {what} {source} is larger than {max_bytes} bytes "
            f"({max_bytes / 2**20:g} MiB); refusing to read it"
        )
    try:
        return model.model_validate_json(data)
    except PydanticValidationError as error:
        problems = _problems(error)
        head = f"invalid {what} {source} ({len(problems)} problem{'s' * (len(problems) != 1)}):"
        raise ConfigurationError("\n".join([head, *problems])) from None


def read_update(path: str | os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES) -> LocalUpdate:
    """The :class:`LocalUpdate` in the JSON file ``path``.

    Raises
    ------
    velocity.errors.ConfigurationError
        The file is unreadable, larger than ``max_bytes``, not JSON, or not a valid update;
        the message names every bad field (``gradients.weight.1: Input should be a finite
        number``).
    """
    return _read(path, LocalUpdate, "update file", max_bytes)


def read_config(path: str | os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES) -> TrainingConfig:
    """The :class:`TrainingConfig` in the JSON file ``path`` (errors as :func:`read_update`)."""
    return _read(path, TrainingConfig, "training configuration", max_bytes)
