"""CreditTracker against a brute-force ledger over random round histories."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from velocity.errors import ValidationError
from velocity.governance import CreditRecord, CreditTracker

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLIENT_IDS = [f"node-{i:03d}" for i in range(6)]


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    rounds = draw(st.lists(st.integers(0, 3), max_size=8))  # gaps between round numbers
    history = []
    number = draw(st.integers(0, 2)) - 1
    for gap in rounds:
        number += gap + 1
        selected = draw(st.lists(st.sampled_from(CLIENT_IDS), unique=True, max_size=6))
        accepted_ids = draw(st.lists(st.sampled_from(selected), unique=True)) if selected else []
        rest = [c for c in selected if c not in accepted_ids]
        excluded = draw(st.lists(st.sampled_from(rest), unique=True)) if rest else []
        accepted = {c: draw(st.integers(0, 10_000)) for c in accepted_ids}
        history.append(
            {"round": number, "selected": selected, "accepted": accepted, "excluded": excluded}
        )
    return history


def brute_force(history: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Recount everything from scratch for each client, round by round."""
    out: dict[str, dict[str, Any]] = {}
    for client in CLIENT_IDS:
        rounds_in = [h for h in history if client in h["selected"]]
        if not rounds_in:
            continue
        accepted = [h for h in rounds_in if client in h["accepted"]]
        out[client] = {
            "samples": sum(h["accepted"][client] for h in accepted),
            "rounds_selected": len(rounds_in),
            "rounds_participated": sum(
                client in h["accepted"] or client in h["excluded"] for h in rounds_in
            ),
            "accepted_updates": len(accepted),
            "excluded_updates": sum(client in h["excluded"] for h in rounds_in),
            "first_round": min(h["round"] for h in rounds_in),
            "last_round": max(h["round"] for h in rounds_in),
        }
    return out


@SETTINGS
@given(histories())
def test_tracker_matches_the_brute_force_ledger(history: list[dict[str, Any]]) -> None:
    tracker = CreditTracker()
    for h in history:
        tracker.record_round(
            h["round"], selected=h["selected"], accepted=h["accepted"], excluded=h["excluded"]
        )
    expected = brute_force(history)
    assert {c: r.to_dict() for c, r in tracker.records().items()} == expected
    assert tracker.all_credits() == {c: e["samples"] for c, e in sorted(expected.items())}
    for client in CLIENT_IDS:
        assert tracker.get_credits(client) == expected.get(client, {"samples": 0})["samples"]
    assert tracker.total_samples == sum(sum(h["accepted"].values()) for h in history)
    assert tracker.rounds_recorded == len(history)
    # to_dict is JSON-safe and from_dict restores the same ledger, which keeps counting
    payload = json.loads(json.dumps(tracker.to_dict()))
    restored = CreditTracker.from_dict(payload)
    assert restored.to_dict() == tracker.to_dict()
    assert list(payload["clients"]) == sorted(payload["clients"])
    next_round = (tracker.last_round or 0) + 1
    for t in (tracker, restored):
        t.record_round(next_round, selected=["node-000"], accepted={"node-000": 5})
    assert restored.to_dict() == tracker.to_dict()


def test_seed_style_usage() -> None:
    tracker = CreditTracker()
    tracker.record_round(
        1, selected=["node-000", "node-001"], accepted={"node-000": 600, "node-001": 500}
    )
    tracker.record_round(2, selected=["node-000", "node-001"], accepted={"node-000": np.int64(604)})
    assert tracker.all_credits() == {"node-000": 1204, "node-001": 500}
    assert tracker.get_credits("node-0") == 0  # unknown ids have no credit, not an error
    record = tracker.records()["node-001"]
    assert record == CreditRecord("node-001", 500, 2, 1, 1, 0, 1, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"round": 1, "selected": ["a"], "accepted": {"b": 3}},
         "client 'b' is accepted in round 1 but was not selected"),
        ({"round": 1, "selected": ["a"], "accepted": {"a": -1}},
         "client 'a' in round 1 has samples=-1; expected an int >= 0"),
        ({"round": 1, "selected": ["a"], "accepted": {"a": 2.5}}, "samples=2.5"),
        ({"round": 1, "selected": ["a"], "accepted": {"a": True}}, "samples=True"),
        ({"round": 1, "selected": ["a", "a"], "accepted": {}},
         "'a' is twice in selected of round 1"),
        ({"round": 1, "selected": ["a"], "accepted": {}, "excluded": ["z"]},
         "client 'z' is excluded in round 1 but was not selected"),
        ({"round": 1, "selected": ["a"], "accepted": {"a": 1}, "excluded": ["a"]},
         "'a' is both accepted and excluded in round 1"),
        ({"round": 1, "selected": "abc", "accepted": {}}, "must be a sequence of client ids"),
        ({"round": 1, "selected": [""], "accepted": {}}, "client ids are non-empty str"),
        ({"round": -1, "selected": [], "accepted": {}}, "round must be an int >= 0; got -1"),
        ({"round": 1, "selected": [], "accepted": [("a", 1)]}, "must be a mapping"),
    ],
)  # fmt: skip
def test_bad_rounds_are_refused_and_record_nothing(kwargs: dict[str, Any], match: str) -> None:
    tracker = CreditTracker()
    tracker.record_round(0, selected=["a"], accepted={"a": 1})
    before = tracker.to_dict()
    round_number = kwargs.pop("round")
    with pytest.raises(ValidationError, match=match):
        tracker.record_round(round_number, **kwargs)
    assert tracker.to_dict() == before


def test_rounds_are_recorded_once_in_order() -> None:
    tracker = CreditTracker()
    tracker.record_round(3, selected=[], accepted={})
    with pytest.raises(ValidationError, match="round 3 comes after round 3"):
        tracker.record_round(3, selected=[], accepted={})
    with pytest.raises(ValidationError, match="round 2 comes after round 3"):
        tracker.record_round(2, selected=[], accepted={})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.update(format=2), "format must be 1"),
        (lambda d: d.pop("rounds"), "exactly the keys"),
        (lambda d: d["clients"]["a"].update(samples=-5), "samples must be an int >= 0"),
        (lambda d: d["clients"]["a"].update(samples="5"), "samples must be an int >= 0"),
        (lambda d: d["clients"]["a"].update(rounds_selected=0), "exceeds rounds_selected"),
        (lambda d: d["clients"]["a"].update(accepted_updates=0), "must equal rounds_participated"),
        (lambda d: d["clients"]["a"].update(first_round=None), "null exactly when"),
        (lambda d: d["clients"]["a"].update(first_round=9), "is after last_round"),
        (lambda d: d["clients"]["a"].update(rounds_selected=9, first_round=0),
         "cover more rounds than the ledger"),
        (lambda d: d["clients"]["a"].pop("samples"), "exactly the keys"),
        (lambda d: d.update(last_round=None), "last_round must be null when rounds is 0"),
    ],
)  # fmt: skip
def test_from_dict_is_strict(change: Any, match: str) -> None:
    tracker = CreditTracker()
    tracker.record_round(1, selected=["a", "b"], accepted={"a": 4}, excluded=["b"])
    tracker.record_round(2, selected=["a"], accepted={"a": 6})
    payload = json.loads(json.dumps(tracker.to_dict()))
    change(payload)
    with pytest.raises(ValidationError, match=match):
        CreditTracker.from_dict(payload)
