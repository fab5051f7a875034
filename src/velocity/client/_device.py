"""Where a client's model and data live: :func:`resolve_device`."""

from __future__ import annotations

import re
from typing import Final

import torch

from velocity.errors import ConfigurationError

__all__ = ["DEVICE_CHOICES", "is_device_name", "resolve_device"]

DEVICE_CHOICES: Final = "'auto', 'cpu', 'cuda' or 'cuda:<index>'"
"""The accepted ``device`` values, as error messages name them."""

_CUDA = re.compile(r"cuda(?::(\d+))?")


def is_device_name(value: object) -> bool:
    """Whether ``value`` is one of the accepted names (nothing is checked on the machine).

    >>> is_device_name("cuda:1"), is_device_name("gpu")
    (True, False)
    """
    return isinstance(value, str) and (
        value in ("auto", "cpu") or _CUDA.fullmatch(value) is not None
    )


def resolve_device(value: object, *, field: str = "device") -> torch.device:
    """The ``torch.device`` a ``device`` setting names.

    ``"auto"`` is the first CUDA device when PyTorch sees one, else the CPU; ``"cpu"`` the
    CPU; ``"cuda"`` / ``"cuda:<index>"`` that GPU, refused when it does not exist (nothing
    falls back silently). ``field`` names the setting in error messages.

    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available()
    ...                            else torch.device("cpu"))
    True
    >>> resolve_device("tpu")
    Traceback (most recent call last):
    ...
    velocity.errors.ConfigurationError: device must be one of ... got 'tpu'
    """
    if isinstance(value, torch.device):
        value = str(value)
    if not isinstance(value, str):
        raise ConfigurationError(f"{field} must be one of {DEVICE_CHOICES}; got {value!r}")
    if value == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if value == "cpu":
        return torch.device("cpu")
    match = _CUDA.fullmatch(value)
    if match is None:
        raise ConfigurationError(f"{field} must be one of {DEVICE_CHOICES}; got {value!r}")
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        seen = f"{count} CUDA device(s)" if count else "no CUDA device"
        raise ConfigurationError(
            f"{field} {value!r}: PyTorch sees {seen}; use 'cpu' or 'auto' (the GPU when "
            "there is one, else the CPU)"
        )
    return torch.device("cuda", index)
