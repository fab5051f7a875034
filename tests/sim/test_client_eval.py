"""The per-client held-out splits: label-matched, deterministic, and the model untouched."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from velocity.sim.client_eval import ClientEvaluator, matched_split
from velocity.types import RoundResult


def _labels(per_class: list[int]) -> torch.Tensor:
    return torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(per_class)])


@settings(max_examples=60, deadline=None)
@given(
    hist=st.lists(st.integers(0, 50), min_size=2, max_size=6).filter(lambda h: sum(h) > 0),
    samples=st.integers(1, 120),
    seed=st.integers(0, 2**31),
)
def test_split_follows_the_histogram_by_largest_remainder(
    hist: list[int], samples: int, seed: int
) -> None:
    test_y = _labels([7] * len(hist))
    idx = matched_split(hist, test_y, samples, torch.Generator().manual_seed(seed))
    assert idx.numel() == samples
    got = torch.bincount(test_y[idx], minlength=len(hist)).tolist()
    total = sum(hist)
    for c, h in enumerate(hist):
        exact = samples * h / total
        assert int(exact) <= got[c] <= int(exact) + 1  # floor, or floor + 1 for a remainder
        if h == 0:
            assert got[c] == 0
    # Without replacement while a class has examples left.
    for c in range(len(hist)):
        chosen = idx[test_y[idx] == c]
        if chosen.numel() <= 7:
            assert chosen.unique().numel() == chosen.numel()


def test_split_is_deterministic_and_empty_for_an_empty_client() -> None:
    test_y = _labels([5, 5, 5])
    a = matched_split([1, 2, 3], test_y, 9, torch.Generator().manual_seed(3))
    b = matched_split([1, 2, 3], test_y, 9, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert matched_split([0, 0, 0], test_y, 9, torch.Generator()).numel() == 0


def test_a_class_missing_from_the_test_set_is_named() -> None:
    import pytest

    from velocity.errors import ValidationError

    with pytest.raises(ValidationError, match="no example of class 1"):
        matched_split([1, 1], _labels([4, 0]), 4, torch.Generator())


def test_evaluator_reports_each_client_and_the_gini_of_their_accuracies() -> None:
    test_y = _labels([10, 10])
    test_x = test_y.to(torch.float32).unsqueeze(1)

    # A "model" that always predicts class 0: client a (all class 0) scores 1, b scores 0.
    def evaluate(
        params: torch.Tensor, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
    ) -> tuple[float, float]:
        correct = (y[idx] == 0).to(torch.float64).mean().item()
        return 1.0 - correct, correct

    ev = ClientEvaluator(
        evaluate,
        test_x,
        test_y,
        client_ids=["a", "b"],
        histograms=[[5, 0], [0, 5]],
        samples=4,
        seed=0,
    )
    skipped = RoundResult(round=1, selected_client_ids=(), participated=())
    assert ev.annotate(skipped, torch.zeros(1)) is skipped  # not an evaluated round
    evaluated = RoundResult(round=1, selected_client_ids=(), participated=(), global_accuracy=0.5)
    report = ev.annotate(evaluated, torch.zeros(1)).stages["client_eval"]
    assert report["accuracy"] == {"a": 1.0, "b": 0.0}
    assert report["gini"] == 0.5  # two clients, one with everything: (|1-0|*2) / (2*4*0.5)
