"""Bounded reads and crash-safe writes of the governance files.

Every file of a run directory is read back as untrusted input: its size is checked before it
is read (:func:`read_bounded`), and only regular files are read (a FIFO or a device named like
a governance file would otherwise block or stream forever). Files that are rewritten as a whole
(``audit_log.json``, ``audit_log.sig.json``, ``clients.json``) are replaced atomically
(:func:`atomic_write`): written to a temporary file in the same directory, flushed to disk, then
renamed over the old one, so a crash leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from velocity.errors import ValidationError

__all__ = [
    "KIB",
    "MIB",
    "atomic_write",
    "fsync_directory",
    "read_bounded",
]

KIB = 1 << 10
MIB = 1 << 20


def _describe(what: str, path: Path) -> str:
    return f"{what} ({path})"


def read_bounded(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The bytes of the regular file ``path``, refusing files larger than ``limit`` bytes.

    Raises
    ------
    ValidationError
        The file is missing, not a regular file, unreadable, or larger than ``limit``; the
        message names ``what``, the path and the limit.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = Path(tmp) / "x.txt"
    ...     _ = p.write_bytes(b"hello")
    ...     read_bounded(p, 16, "the test file")
    b'hello'
    """
    p = Path(path)
    name = _describe(what, p)
    try:
        info = os.stat(p)
    except FileNotFoundError:
        raise ValidationError(f"{name} does not exist") from None
    except OSError as exc:
        raise ValidationError(f"cannot read {name}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValidationError(f"{name} is not a regular file")
    if info.st_size > limit:
        raise ValidationError(f"{name} is {info.st_size:,} bytes; the limit is {limit:,} bytes")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        raise ValidationError(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between stat and open
            raise ValidationError(f"{name} is not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 16 * MIB))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ValidationError(f"cannot read {name}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise ValidationError(f"{name} grew past the limit of {limit:,} bytes while being read")
    return b"".join(chunks)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Flush a directory entry to disk (a new or renamed file survives a crash); best effort.

    Platforms that cannot open a directory (Windows) are skipped silently.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically: temporary file, fsync, ``os.replace``.

    ``mode`` is the permission of the new file, narrowed by the umask as usual (``0o600`` for
    files holding personal data). A crash leaves the old file or the new one, never a mix;
    the temporary file is removed when the write fails.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = Path(tmp) / "a.json"
    ...     atomic_write(p, b"[]\\n")
    ...     p.read_bytes()
    b'[]\\n'
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)
