"""Shakespeare next-character prediction, one client per (play, role), as in LEAF (private).

LEAF (Caldas et al. 2018, arXiv:1812.01097) builds its Shakespeare benchmark from Project
Gutenberg's *Complete Works* (#100): every speaking role of every play is one client, and a
sample is an 80-character window whose target is the next character (the task of McMahan et
al. 2017). This module parses the plays with LEAF's rules and builds the windows as views of
one token buffer; ``docs/data.md`` lists where it deliberately differs from LEAF.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from typing import Final

import numpy as np
import torch

from velocity.data._checks import check_bool, check_fraction, check_int, check_positive_float
from velocity.data._dataset import ArrayDataset
from velocity.data._sources import DEFAULT_TIMEOUT, Layout, RemoteFile, locate
from velocity.errors import ValidationError

__all__ = ["SEQUENCE_LENGTH", "SHAKESPEARE_VOCAB", "load_shakespeare", "parse_plays"]

SHAKESPEARE_VOCAB: Final = (
    "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
)
"""LEAF's 80-character vocabulary; token ``i`` is ``SHAKESPEARE_VOCAB[i]``.

Newline, space, ``! " & ' ( ) , - .``, the digits, ``: ; > ?``, ``A``-``Z``, ``[ ]``,
``a``-``z`` and ``}`` (sic, as in LEAF). Any other character is read as a space.
"""

SEQUENCE_LENGTH: Final = 80
"""Characters of context per sample."""

_SPACE_TOKEN: Final = SHAKESPEARE_VOCAB.index(" ")
_LUT = np.full(128, _SPACE_TOKEN, dtype=np.int64)
for _i, _c in enumerate(SHAKESPEARE_VOCAB):
    _LUT[ord(_c)] = _i

# LEAF's regular expressions (data/shakespeare/preprocess/preprocess_shakespeare.py): a speech
# starts "  NAME. text", continues on lines indented by four spaces; The Comedy of Errors is
# indented differently.
_CHARACTER_RE = re.compile(r"^  ([a-zA-Z][a-zA-Z ]*)\. (.*)")
_CONT_RE = re.compile(r"^    (.*)")
_COE_CHARACTER_RE = re.compile(r"^([a-zA-Z][a-zA-Z ]*)\. (.*)")
_COE_CONT_RE = re.compile(r"^(.*)")
_COE_TITLE = "THE COMEDY OF ERRORS"
_AUTHOR_LINE = "by William Shakespeare"
_FOOTER = "End of this Etext"
_SPACES = re.compile(" {2,}")

_OFFICIAL_NAME = "shakespeare_complete_works.txt"
_REMOTE_SHA256 = "c5601d266987ac885ca96522b1b4e439feb7eca39f0fe1111f7342b63b6468f3"
_MAX_TEXT_BYTES = 32 << 20


def _extract_gutenberg_text(payload: bytes) -> bytes:
    """Pull ``100.txt`` out of Gutenberg's ``1994-01-100.zip``, with LF line endings."""
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            members = [
                i for i in zf.infolist() if i.filename.rsplit("/", 1)[-1].lower() == "100.txt"
            ]
            if not members:
                raise ValidationError("the Gutenberg archive holds no 100.txt")
            if members[0].file_size > _MAX_TEXT_BYTES:
                raise ValidationError("100.txt in the Gutenberg archive is implausibly large")
            text = zf.read(members[0])
    except zipfile.BadZipFile as e:
        raise ValidationError(f"not a zip archive ({e})") from e
    return text.replace(b"\r\n", b"\n")


_REMOTE = RemoteFile(
    _OFFICIAL_NAME,
    ("https://www.gutenberg.org/files/100/old/1994-01-100.zip",),
    sha256=_REMOTE_SHA256,
    transform=_extract_gutenberg_text,
)


def _strip_notices(lines: list[str]) -> list[str]:
    """Drop the ``<<THIS ELECTRONIC VERSION ... >>`` copyright blocks between the plays."""
    kept: list[str] = []
    inside = False
    for line in lines:
        if not inside and line.startswith("<<"):
            inside = True
        if inside:
            if ">>" in line:
                inside = False
            continue
        kept.append(line)
    return kept


def _title_above(lines: list[str], i: int) -> int:
    for j in range(i - 2, max(i - 8, -1), -1):
        if lines[j].strip():
            return j
    raise ValidationError(f"Shakespeare: no title above '{_AUTHOR_LINE}' (line {i + 1})")


def parse_plays(text: str) -> list[tuple[str, dict[str, list[str]]]]:
    """Split the complete works into plays and each play's speech lines per role.

    Returns ``[(title, {ROLE: [line, ...]}), ...]`` in the order of the text; roles in order of
    their first speech, names upper-cased (LEAF's fix for ``SIR Toby`` vs ``SIR TOBY``).

    Rules (LEAF's, except where marked):

    - a work starts at a line ``by William Shakespeare``; its title is the nearest non-blank
      line 2 to 7 lines above;
    - the Gutenberg header (everything before the first title), the footer (from
      ``End of this Etext``) and the ``<<...>>`` copyright notices are skipped (the notices
      are a VelocityFL addition: LEAF lets a few of their lines become fake roles);
    - only works with a ``Dramatis Personae`` line (any case, optional period) are plays
      (VelocityFL; LEAF skips the Sonnets and *A Lover's Complaint* by line numbers);
    - a speech starts with ``  NAME. text`` (two-space indent) and continues on lines indented
      by four spaces; in *The Comedy of Errors* the name has no indent, every following line
      continues the speech, and a line starting ``<`` or a name starting ``ACT `` ends it.

    >>> plays = parse_plays(
    ...     "T\\n\\nby William Shakespeare\\nDramatis Personae\\n"
    ...     "  ANNE. Good day,\\n    my lord.\\n  Bob. Hi.\\n"
    ... )
    >>> plays
    [('T', {'ANNE': ['Good day,', 'my lord.'], 'BOB': ['Hi.']})]
    """
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(_FOOTER):
            lines = lines[:i]
            break
    lines = _strip_notices(lines)
    authors = [i for i, line in enumerate(lines) if line.strip() == _AUTHOR_LINE]
    titles = [_title_above(lines, i) for i in authors]
    plays: list[tuple[str, dict[str, list[str]]]] = []
    seen: dict[str, int] = {}
    for w, a in enumerate(authors):
        end = titles[w + 1] if w + 1 < len(authors) else len(lines)
        body = lines[a + 1 : end]
        if not any(line.strip().rstrip(".").lower() == "dramatis personae" for line in body):
            continue
        title = lines[titles[w]].strip()
        seen[title] = seen.get(title, 0) + 1
        if seen[title] > 1:
            title = f"{title} [{seen[title]}]"
        coe = title == _COE_TITLE
        char_re = _COE_CHARACTER_RE if coe else _CHARACTER_RE
        cont_re = _COE_CONT_RE if coe else _CONT_RE
        roles: dict[str, list[str]] = {}
        current: str | None = None
        for line in body:
            m = char_re.match(line)
            if m:
                role = m.group(1).upper()
                if coe and role.startswith("ACT "):
                    current = None
                else:
                    roles.setdefault(role, []).append(m.group(2))
                    current = role
                continue
            if current is not None:
                m = cont_re.match(line)
                if m:
                    if coe and m.group(1).startswith("<"):
                        current = None
                    else:
                        roles[current].append(m.group(1))
        if len(roles) > 1:  # LEAF drops degenerate plays
            plays.append((title, roles))
    return plays


def _role_text(lines: list[str]) -> str:
    """LEAF's per-role text: each speech line with runs of spaces collapsed, ``\\n``-ended."""
    return "".join(_SPACES.sub(" ", line) + "\n" for line in lines)


def _encode(text: str) -> np.ndarray:
    """Token ids in :data:`SHAKESPEARE_VOCAB`; other characters become the space token."""
    cp = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    return np.where(cp < 128, _LUT[np.minimum(cp, 127)], _SPACE_TOKEN)


def _ragged_indices(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` over the pairs, without a Python loop."""
    total = int(lengths.sum())
    out_starts = np.cumsum(lengths) - lengths
    return np.repeat(starts - out_starts, lengths) + np.arange(total, dtype=np.int64)


_ISOLATE_CHUNK = 1 << 16


def build_windows(
    texts: list[str], split: str, train_fraction: float, isolate_clients: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, y, groups)`` for one split of the per-client texts.

    Client ``c``'s text ``T_c`` (length ``n_c``) gives ``n_c`` samples: the target of sample
    ``p`` is ``T_c[p]``. The first ``floor(train_fraction * n_c)`` samples are the train split,
    the rest the test split.

    - Default: the chosen parts of all clients are concatenated after 80 pad characters into
      one buffer ``B``; sample ``i`` is ``x[i] = B[i : i + 80]`` (a view: ``B.unfold``),
      ``y[i] = B[i + 80]``. The first 80 contexts of a client therefore reach back into the
      previous client's part (the very first into the pad).
    - ``isolate_clients``: ``x`` is materialised (``N * 640`` bytes) and every context is
      exactly the 80 characters before the target in the client's own text, padded with
      spaces before its start (for test samples this includes the end of the train part).
    """
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    tokens = _encode("".join(texts))
    starts = np.cumsum(lengths) - lengths
    n_train = np.floor(lengths * train_fraction).astype(np.int64)
    if split == "train":
        seg_start, seg_len = starts, n_train
    else:
        seg_start, seg_len = starts + n_train, lengths - n_train
    positions = _ragged_indices(seg_start, seg_len)
    n = positions.size
    groups = torch.repeat_interleave(torch.arange(len(texts)), torch.from_numpy(seg_len))
    if not isolate_clients:
        pad = np.full(SEQUENCE_LENGTH, _SPACE_TOKEN, dtype=np.int64)
        t = torch.from_numpy(np.concatenate([pad, tokens[positions]]))
        return t.unfold(0, SEQUENCE_LENGTH, 1)[:n], t[SEQUENCE_LENGTH:], groups
    client_start = np.repeat(starts, seg_len)
    offsets = np.arange(-SEQUENCE_LENGTH, 0, dtype=np.int64)
    x = torch.empty((n, SEQUENCE_LENGTH), dtype=torch.int64)
    out = x.numpy()
    for lo in range(0, n, _ISOLATE_CHUNK):
        hi = min(n, lo + _ISOLATE_CHUNK)
        ctx = positions[lo:hi, None] + offsets[None, :]
        inside = ctx >= client_start[lo:hi, None]
        out[lo:hi] = np.where(inside, tokens[np.maximum(ctx, 0)], _SPACE_TOKEN)
    return x, torch.from_numpy(tokens[positions]), groups


def load_shakespeare(
    split: str,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
    *,
    min_samples_per_client: object = 2,
    max_clients: object = None,
    train_fraction: object = 0.8,
    isolate_clients: object = False,
    verify: object = True,
    timeout: object = DEFAULT_TIMEOUT,
) -> ArrayDataset:
    """LEAF Shakespeare: ``x`` (N, 80) int64 token windows, ``y`` (N,) next-token targets.

    Parameters
    ----------
    min_samples_per_client : int
        Roles with fewer characters (= samples) are dropped. Roles whose train or test part
        would be empty are always dropped.
    max_clients : int, optional
        Keep only the largest roles (ties: earlier first); clients stay in text order.
    train_fraction : float in (0, 1)
        Per role, the first ``floor(train_fraction * n)`` samples are train, the rest test
        (LEAF's ``-t sample --tf 0.8``; McMahan et al. 2017 also split each role in time).
    isolate_clients : bool
        Materialise ``x`` (N * 640 bytes) so that every context is the 80 characters before
        the target in the role's own text (spaces before its start); by default ``x`` is a
        view and a role's first 80 contexts reach into the previous role's text.
    """
    where = "load_dataset('shakespeare')"
    min_samples = check_int(min_samples_per_client, "min_samples_per_client", where, minimum=1)
    limit = None if max_clients is None else check_int(max_clients, "max_clients", where, minimum=1)
    fraction = check_fraction(train_fraction, "train_fraction", where)
    isolate = check_bool(isolate_clients, "isolate_clients", where)
    do_verify = check_bool(verify, "verify", where)
    secs = check_positive_float(timeout, "timeout", where)
    layout = Layout(
        "text",
        ((_OFFICIAL_NAME, "100.txt", "raw_data.txt", "t8.shakespeare.txt"),),
        ("shakespeare",),
    )
    found = locate(
        "shakespeare",
        split,
        [layout],
        data_dir=data_dir,
        download=download,
        remotes=[_REMOTE],
        cache_subdir="shakespeare",
        verify=do_verify,
        timeout=secs,
    )
    path = found.paths[0]
    plays = parse_plays(path.read_text(encoding="utf-8", errors="replace"))
    if not plays:
        raise ValidationError(
            f"{path}: no plays found (expected title lines followed by '{_AUTHOR_LINE}', a "
            "'Dramatis Personae' and speeches '  NAME. text')"
        )
    names: list[str] = []
    texts: list[str] = []
    for title, roles in plays:
        for role, lines in roles.items():
            names.append(f"{title}::{role}")
            texts.append(_role_text(lines))
    sizes = np.array([len(t) for t in texts], dtype=np.int64)
    n_train = np.floor(sizes * fraction).astype(np.int64)
    keep = (sizes >= min_samples) & (n_train >= 1) & (sizes - n_train >= 1)
    chosen = np.flatnonzero(keep)
    if limit is not None and chosen.size > limit:
        by_size = chosen[np.argsort(-sizes[chosen], kind="stable")][:limit]
        chosen = np.sort(by_size)
    if chosen.size == 0:
        raise ValidationError(
            f"{where}: no role has >= {min_samples} samples and a non-empty train and test part"
        )
    x, y, groups = build_windows([texts[i] for i in chosen.tolist()], split, fraction, isolate)
    return ArrayDataset(
        "shakespeare",
        x,
        y,
        num_classes=len(SHAKESPEARE_VOCAB),
        groups=groups,
        group_names=tuple(names[i] for i in chosen.tolist()),
    )
