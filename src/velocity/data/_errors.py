"""The exceptions of :mod:`velocity.data` (private; re-exported by the package).

::

    VelocityError
    ├── ConfigurationError(ValueError)
    │   └── DataNotFoundError      the files are nowhere and could not (or may not) be downloaded
    ├── ValidationError(ValueError)    a dataset file is malformed (truncated, bad header, ...)
    └── SecurityError
        └── ChecksumError          a file does not match its published checksum
"""

from __future__ import annotations

from velocity.errors import ConfigurationError, SecurityError

__all__ = ["ChecksumError", "DataNotFoundError"]


class DataNotFoundError(ConfigurationError):
    """A dataset's files were not found and could not (or were not allowed to) be downloaded.

    The message lists every folder searched, the files to put there and the download sources.
    """


class ChecksumError(SecurityError):
    """A dataset file (found on disk or downloaded) does not match its published checksum."""
