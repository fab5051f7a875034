"""The one exception hierarchy of VelocityFL.

::

    VelocityError                      root: catch this to catch everything we raise
    ├── ConfigurationError(ValueError) a setting is unknown, missing or out of range
    ├── ValidationError(ValueError)    data handed to a kernel or component is unusable
    │                                  (wrong shape, n too small for f, ...)
    ├── ProtocolError                  a peer broke the protocol (wrong round, bad digest)
    └── SecurityError                  authentication or integrity failure

Both ``ConfigurationError`` and ``ValidationError`` also derive from :class:`ValueError`,
so code written against plain ``ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "ProtocolError",
    "SecurityError",
    "ValidationError",
    "VelocityError",
]


class VelocityError(Exception):
    """Root of every exception raised by VelocityFL on purpose."""


class ConfigurationError(VelocityError, ValueError):
    """A setting (strategy parameter, config field) is unknown or out of range."""


class ValidationError(VelocityError, ValueError):
    """Input data is unusable: wrong shape or dtype, or too few rows for the rule."""


class ProtocolError(VelocityError):
    """A participant broke the round protocol."""


class SecurityError(VelocityError):
    """Authentication or integrity checking failed."""
