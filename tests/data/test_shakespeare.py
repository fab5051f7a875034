"""LEAF-style Shakespeare: play/role parsing, vocabulary, windows, splits, real-data checks."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from velocity.data import SHAKESPEARE_VOCAB, ArrayDataset, ChecksumError, load_dataset
from velocity.data._shakespeare import parse_plays
from velocity.errors import ConfigurationError, ValidationError

NOTICE = """<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS OF WILLIAM
SHAKESPEARE IS COPYRIGHT 1990-1993 BY WORLD LIBRARY, INC., AND IS
WITH PERMISSION.  ELECTRONIC AND MACHINE READABLE COPIES MAY BE
SERVICE THAT CHARGES FOR DOWNLOAD TIME OR FOR MEMBERSHIP.>>"""

EXIT = " " * 44 + "Exit"

TEXT = f"""This is the 100th Etext file presented by Project Gutenberg, and
  HEADER. This line looks like a speech but is in the header.

1609

THE SONNETS

by William Shakespeare

  From fairest creatures we desire increase.
  Die to themselves. Sweet roses do not so,
  Nor services to do till you require.

{NOTICE}

1603

A TINY PLAY

by William Shakespeare


Dramatis Personae

  ANNE, a lady
  BOB, a man

ACT I. SCENE 1.

  ANNE. Good   morrow, Bob.
    How fares my lord*?
  BOB. Well.
{EXIT}
  Anne. Farewell.

THE END

{NOTICE}

1594

THE COMEDY OF ERRORS

by William Shakespeare

Dramatis Personae

ACT I. SCENE 1.
AEGEON. Proceed, Solinus,
  And by the doom.
DUKE. Merchant of Syracuse.
{NOTICE}
DUKE. more.

End of this Etext of The Complete Works of William Shakespeare
"""

ROLE_TEXTS = {
    "A TINY PLAY::ANNE": "Good morrow, Bob.\nHow fares my lord ?\nFarewell.\n",
    "A TINY PLAY::BOB": "Well.\n Exit\n",
    "THE COMEDY OF ERRORS::AEGEON": "Proceed, Solinus,\n And by the doom.\n",
    "THE COMEDY OF ERRORS::DUKE": "Merchant of Syracuse.\nmore.\n\n",
}


@pytest.fixture
def works(tmp_path: Path) -> Path:
    (tmp_path / "shakespeare").mkdir()
    (tmp_path / "shakespeare" / "100.txt").write_text(TEXT)
    return tmp_path


def _load(root: Path, split: str = "train", **kw: object) -> ArrayDataset:
    return load_dataset("shakespeare", split=split, data_dir=root, download=False, **kw)


def _decode(tokens: torch.Tensor) -> str:
    return "".join(SHAKESPEARE_VOCAB[int(t)] for t in tokens)


def test_vocabulary_is_leafs() -> None:
    assert SHAKESPEARE_VOCAB == (
        "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
    )


def test_parse_plays() -> None:
    plays = parse_plays(TEXT)
    assert [t for t, _ in plays] == ["A TINY PLAY", "THE COMEDY OF ERRORS"]
    tiny, coe = plays[0][1], plays[1][1]
    assert tiny == {
        "ANNE": ["Good   morrow, Bob.", "How fares my lord*?", "Farewell."],
        "BOB": ["Well.", EXIT[4:]],
    }
    # Comedy of Errors: no indent; the copyright notice is not a role ("WITH PERMISSION")
    assert coe == {
        "AEGEON": ["Proceed, Solinus,", "  And by the doom."],
        "DUKE": ["Merchant of Syracuse.", "more.", ""],
    }


def test_no_plays_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "100.txt").write_text("just some text\n")
    with pytest.raises(ValidationError, match="no plays found"):
        _load(tmp_path)


@pytest.mark.parametrize("isolate", [False, True])
def test_splits_cover_every_character_once(works: Path, isolate: bool) -> None:
    train = _load(works, "train", isolate_clients=isolate)
    test = _load(works, "test", isolate_clients=isolate)
    names = tuple(ROLE_TEXTS)
    assert train.group_names == test.group_names == names
    assert train.num_classes == 80
    assert train.x.shape == (len(train), 80)
    assert train.x.dtype == train.y.dtype == torch.int64
    for c, name in enumerate(names):
        text = ROLE_TEXTS[name]
        tr = train.y[train.groups == c]
        te = test.y[test.groups == c]
        assert len(tr) == math.floor(0.8 * len(text))
        assert _decode(tr) + _decode(te) == text


def test_default_windows_are_one_view(works: Path) -> None:
    ds = _load(works, "train")
    n = len(ds)
    assert not ds.x.is_contiguous()
    assert ds.x.untyped_storage().nbytes() == (n + 80) * 8
    assert ds.x.untyped_storage().data_ptr() == ds.y.untyped_storage().data_ptr()
    assert _decode(ds.x[0]) == " " * 80
    assert torch.equal(ds.x[1:, -1], ds.y[:-1])
    assert torch.equal(ds.x[1:, :-1], ds.x[:-1, 1:])


@pytest.mark.parametrize("split", ["train", "test"])
def test_isolated_contexts_are_the_roles_own_text(works: Path, split: str) -> None:
    ds = _load(works, split, isolate_clients=True)
    assert ds.x.is_contiguous()
    row = 0
    for c, name in enumerate(ds.group_names or ()):
        text = ROLE_TEXTS[name]
        cut = math.floor(0.8 * len(text))
        positions = range(cut) if split == "train" else range(cut, len(text))
        padded = " " * 80 + text
        for p in positions:
            assert int(ds.groups[row]) == c  # type: ignore[index]
            assert _decode(ds.x[row]) == padded[p : p + 80]
            assert SHAKESPEARE_VOCAB[int(ds.y[row])] == text[p]
            row += 1
    assert row == len(ds)


def test_view_and_isolated_agree_on_targets(works: Path) -> None:
    a, b = _load(works), _load(works, isolate_clients=True)
    assert torch.equal(a.y, b.y)
    assert torch.equal(a.groups, b.groups)  # type: ignore[arg-type]
    first = int((a.groups == 0).sum())  # type: ignore[union-attr]
    assert torch.equal(a.x[:first], b.x[:first])  # the first role starts after the pad
    assert not torch.equal(a.x[first : first + 80], b.x[first : first + 80])


def test_client_filters(works: Path) -> None:
    small = len(ROLE_TEXTS["A TINY PLAY::BOB"])
    ds = _load(works, min_samples_per_client=small + 1)
    assert "A TINY PLAY::BOB" not in (ds.group_names or ())
    assert len(ds.group_names or ()) == 3
    top2 = _load(works, max_clients=2)
    assert top2.group_names == ("A TINY PLAY::ANNE", "THE COMEDY OF ERRORS::AEGEON")
    assert int(top2.groups.max()) == 1  # type: ignore[union-attr]
    half = _load(works, train_fraction=0.5)
    assert len(half) == sum(len(t) // 2 for t in ROLE_TEXTS.values())
    with pytest.raises(ValidationError, match="no role"):
        _load(works, min_samples_per_client=10_000)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"train_fraction": 1.0}, "train_fraction"),
        ({"min_samples_per_client": 0}, "min_samples_per_client"),
        ({"max_clients": 0}, "max_clients"),
        ({"isolate_clients": 1}, "isolate_clients"),
        ({"windows": 80}, "unknown option"),
    ],
)
def test_bad_options(works: Path, kw: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        _load(works, **kw)


def test_official_name_is_checksummed(tmp_path: Path) -> None:
    (tmp_path / "shakespeare_complete_works.txt").write_text(TEXT)
    with pytest.raises(ChecksumError, match="SHA256"):
        _load(tmp_path)
    assert len(_load(tmp_path, verify=False)) > 0


# ------------------------------------------------------------------------- the real text


def test_real_text(real_data: Callable[[str, tuple[str, ...]], Path]) -> None:
    root = real_data("shakespeare", ("shakespeare_complete_works.txt",))
    text = (root / "shakespeare" / "shakespeare_complete_works.txt").read_text()
    plays = parse_plays(text)
    assert len(plays) == 36
    assert plays[0][0] == "ALLS WELL THAT ENDS WELL"
    assert "HAM" in dict(plays)["THE TRAGEDY OF HAMLET, PRINCE OF DENMARK"]
    assert not any(role.startswith("WITH PERMISSION") for _, roles in plays for role in roles)
    train = load_dataset("shakespeare", data_dir=root, download=False)
    test = load_dataset("shakespeare", split="test", data_dir=root, download=False)
    names = train.group_names or ()
    assert names == test.group_names
    assert "THE TRAGEDY OF HAMLET, PRINCE OF DENMARK::HAM" in names  # speaker names are abbreviated
    assert len(names) > 1000
    assert 3_000_000 < len(train) < 5_000_000
    assert 0.2 < len(test) / (len(train) + len(test)) < 0.21
    assert int(train.y.max()) < 80
    # One token buffer: 8 bytes per sample (plus the pad), not 640.
    assert train.x.untyped_storage().nbytes() == (len(train) + 80) * 8
    sizes = torch.bincount(train.groups, minlength=len(names))  # type: ignore[arg-type]
    assert int(sizes.min()) >= 1
