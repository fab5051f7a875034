"""Finding dataset files on disk, verifying them, and downloading them (private).

Lookup order, for every file-backed dataset:

1. the explicit ``data_dir`` argument,
2. ``$VELOCITY_DATA``,
3. the cache, ``$VELOCITY_CACHE`` or ``~/.cache/velocity``,
4. a download from the official source (and listed mirrors) into the cache.

Each of the three roots may hold the files directly or in one of the dataset's sub-folders
(``mnist/``, ``cifar-10-batches-py/``, ...). The first folder that holds *every* file a split
needs wins. Downloads stream to a temporary file next to the target, are checked against the
published MD5/SHA-256 while streaming, and only then renamed into place (``os.replace``), so a
partial or corrupt download never sits under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from velocity.data._errors import ChecksumError, DataNotFoundError

__all__ = [
    "DEFAULT_TIMEOUT",
    "Layout",
    "Located",
    "RemoteFile",
    "cache_root",
    "file_digest",
    "locate",
]

DEFAULT_TIMEOUT = 60.0
"""Seconds a download may wait on the network (connect or read) before giving up."""

_CHUNK = 1 << 20
_USER_AGENT = "velocityfl-data/0.1 (+https://github.com/velocityfl)"


@dataclass(frozen=True)
class RemoteFile:
    """An official file: where to get it and its published digest.

    ``md5`` / ``sha256`` describe the file as stored on disk under ``name``. When ``transform``
    is set (Shakespeare: pull the text out of Gutenberg's zip), the downloaded payload is passed
    through it first and the digest is checked on the result.
    """

    name: str
    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None
    transform: Callable[[bytes], bytes] | None = field(default=None, compare=False)

    def digest_spec(self) -> tuple[str, str] | None:
        """``(algorithm, hex digest)`` to check, preferring SHA-256; ``None`` if unpublished."""
        if self.sha256 is not None:
            return "sha256", self.sha256
        if self.md5 is not None:
            return "md5", self.md5
        return None


@dataclass(frozen=True)
class Layout:
    """One accepted on-disk arrangement of a dataset split.

    ``files`` lists the required files; each entry is a tuple of accepted names for that file,
    the official (downloadable) name first, e.g. ``("train-images-idx3-ubyte.gz",
    "train-images-idx3-ubyte")``.
    """

    kind: str
    files: tuple[tuple[str, ...], ...]
    subdirs: tuple[str, ...]


@dataclass(frozen=True)
class Located:
    """The layout that matched and the path of each of its files, in ``layout.files`` order."""

    layout: Layout
    paths: tuple[Path, ...]


def cache_root() -> Path:
    """``$VELOCITY_CACHE`` if set, else ``~/.cache/velocity``."""
    env = os.environ.get("VELOCITY_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/velocity").expanduser()


def _roots(data_dir: str | os.PathLike[str] | None) -> list[tuple[str, Path | None]]:
    env = os.environ.get("VELOCITY_DATA")
    return [
        ("data_dir", None if data_dir is None else Path(data_dir).expanduser()),
        ("$VELOCITY_DATA", Path(env).expanduser() if env else None),
        ("cache ($VELOCITY_CACHE or ~/.cache/velocity)", cache_root()),
    ]


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, remote: RemoteFile) -> None:
    spec = remote.digest_spec()
    if spec is None:
        return
    algorithm, expected = spec
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise ChecksumError(
            f"{path} does not match the official {algorithm.upper()} of {remote.name}: "
            f"expected {expected}, got {actual}. The file is corrupt, truncated or a different "
            f"version; delete it (or replace it with the official file) and load again, or pass "
            f"verify=False if you deliberately use a modified copy."
        )


def _find(
    dirs: Sequence[Path], layouts: Sequence[Layout]
) -> tuple[Layout, tuple[Path, ...]] | None:
    for d in dirs:
        if not d.is_dir():
            continue
        for layout in layouts:
            found: list[Path] = []
            for names in layout.files:
                hit = next((d / n for n in names if (d / n).is_file()), None)
                if hit is None:
                    break
                found.append(hit)
            else:
                return layout, tuple(found)
    return None


def _candidate_dirs(root: Path, layouts: Sequence[Layout]) -> list[Path]:
    dirs = [root]
    for layout in layouts:
        for sub in layout.subdirs:
            p = root / sub
            if p not in dirs:
                dirs.append(p)
    return dirs


class _DownloadFailed(Exception):
    def __init__(self, failures: list[str], checksum_mismatch: bool) -> None:
        super().__init__("; ".join(failures))
        self.failures = failures
        self.checksum_mismatch = checksum_mismatch


def _fetch(url: str, target: Path, remote: RemoteFile, timeout: float) -> None:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"refusing to download from a {scheme!r} URL")
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    spec = remote.digest_spec()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{remote.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.new(spec[0]) if spec is not None and remote.transform is None else None
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                if h is not None:
                    h.update(chunk)
            out.flush()
            os.fsync(out.fileno())
        if remote.transform is not None:
            payload = remote.transform(tmp.read_bytes())
            if spec is not None:
                h = hashlib.new(spec[0])
                h.update(payload)
            tmp.write_bytes(payload)
        if spec is not None and h is not None and h.hexdigest() != spec[1]:
            raise ChecksumError(
                f"{url}: downloaded {remote.name} has {spec[0].upper()} {h.hexdigest()}, "
                f"expected {spec[1]}"
            )
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _download(remote: RemoteFile, dest: Path, timeout: float) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / remote.name
    failures: list[str] = []
    mismatch = False
    for url in remote.urls:
        try:
            _fetch(url, target, remote, timeout)
        except ChecksumError as e:
            mismatch = True
            failures.append(str(e))
        except (OSError, ValueError, http.client.HTTPException) as e:
            # urllib.error.URLError and socket timeouts are OSErrors.
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            failures.append(f"{url}: {type(e).__name__}: {reason}")
        else:
            return target
    raise _DownloadFailed(failures, mismatch)


def _describe_names(names: tuple[str, ...]) -> str:
    if len(names) == 1:
        return names[0]
    return f"{names[0]} (or {', '.join(names[1:])})"


def locate(
    dataset: str,
    split: str,
    layouts: Sequence[Layout],
    *,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
    remotes: Sequence[RemoteFile],
    cache_subdir: str,
    verify: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Located:
    """Find (or download) the files of one dataset split.

    Parameters
    ----------
    layouts
        Accepted arrangements, tried in order in every folder searched.
    remotes
        The official files that make up ``layouts[0]`` (by their first accepted name); they are
        downloaded into ``cache_root() / cache_subdir`` when nothing is found. Found files whose
        name is an official name are checked against the published digest when ``verify``.

    Raises
    ------
    DataNotFoundError
        Nothing found and ``download`` is false or every source failed; the message lists
        every folder searched, the files to put there and the sources tried.
    ChecksumError
        A found official file, or every downloaded copy, has the wrong digest.
    """
    by_name = {r.name: r for r in remotes}
    searched: list[str] = []
    for label, root in _roots(data_dir):
        if root is None:
            searched.append(f"{label}: (not set)")
            continue
        dirs = _candidate_dirs(root, layouts)
        searched.append(f"{label}: " + ", ".join(str(d) for d in dirs))
        hit = _find(dirs, layouts)
        if hit is not None:
            layout, paths = hit
            if verify:
                for p in paths:
                    if p.name in by_name:
                        _verify(p, by_name[p.name])
            return Located(layout, paths)

    def not_found(reason: str) -> DataNotFoundError:
        lines = [f"{dataset} ({split} split): {reason}", "Searched, in this order:"]
        lines += [f"  - {s}" for s in searched]
        lines.append(
            "Put these files together into one of those folders, e.g. "
            f"<data_dir>/{layouts[0].subdirs[0] if layouts[0].subdirs else ''}:"
        )
        for i, layout in enumerate(layouts):
            prefix = "  " if i == 0 else "  or, as the " + layout.kind + " layout: "
            lines.append(prefix + "; ".join(_describe_names(n) for n in layout.files))
        sources = [r for r in remotes if r.urls]
        if sources:
            lines.append("Official sources (downloaded into the cache when download=True):")
            lines += [f"  - {r.name}: {', '.join(r.urls)}" for r in sources]
        return DataNotFoundError("\n".join(lines))

    if not download:
        raise not_found("not found, and download=False")
    if not any(r.urls for r in remotes):
        raise not_found("not found, and it has no download source")
    dest = cache_root() / cache_subdir
    failures: list[str] = []
    mismatch = False
    needed = [names[0] for names in layouts[0].files]
    for name in needed:
        remote = by_name[name]
        if (dest / name).is_file():
            continue
        try:
            _download(remote, dest, timeout)
        except _DownloadFailed as e:
            failures += e.failures
            mismatch = mismatch or e.checksum_mismatch
    if failures:
        detail = "\n".join(f"    {f}" for f in failures)
        if mismatch:
            raise ChecksumError(
                f"{dataset}: downloaded files failed checksum verification (nothing was kept):\n"
                f"{detail}"
            )
        raise not_found(f"not found, and the download failed:\n{detail}")
    hit = _find([dest], layouts[:1])
    if hit is None:  # pragma: no cover - every needed file was just written
        raise not_found("downloaded files vanished from the cache")
    layout, paths = hit
    if verify:
        for p in paths:
            if p.name in by_name:
                _verify(p, by_name[p.name])
    return Located(layout, paths)
