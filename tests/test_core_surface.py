"""Tests for velocity._core: the seed's native-module surface over the kernels."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from velocity import _core, kernels
from velocity._core import (
    ClientUpdate,
    Orchestrator,
    RoundSummary,
    Strategy,
    aggregate,
    apply_gaussian_noise,
)
from velocity.errors import ConfigurationError, ProtocolError, ValidationError
from velocity.strategies import (
    Bucketing,
    Clip,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    Krum,
    MultiKrum,
    Pipeline,
    ServerSGD,
    TrimmedMean,
)
from velocity.types import ParamSpec

# ---------------------------------------------------------------------- surface


def test_all_covers_every_kernel_and_the_seed_names() -> None:
    assert set(kernels.__all__) <= set(_core.__all__)
    seed = {
        "Orchestrator",
        "ClientUpdate",
        "RoundSummary",
        "Strategy",
        "aggregate",
        "apply_gaussian_noise",
    }
    assert seed <= set(_core.__all__)
    assert len(_core.__all__) == len(set(_core.__all__))
    for name in _core.__all__:
        assert hasattr(_core, name), name


def test_kernels_are_reexported_unchanged() -> None:
    for name in kernels.__all__:
        if name != "apply_gaussian_noise":  # wrapped to accept numpy too
            assert getattr(_core, name) is getattr(kernels, name), name


def test_types_are_the_shared_ones() -> None:
    from velocity import types

    assert _core.ClientUpdate is types.ClientUpdate
    assert _core.RoundSummary is types.RoundSummary


# ---------------------------------------------------------------------- Strategy


@pytest.mark.parametrize(
    ("made", "expected"),
    [
        (Strategy.fed_avg(), FedAvg()),
        (Strategy.fed_prox(0.1), FedProx(mu=0.1)),
        (Strategy.fed_prox(), FedProx()),
        (Strategy.fed_median(), FedMedian()),
        (Strategy.trimmed_mean(2), TrimmedMean(k=2)),
        (Strategy.krum(2), Krum(f=2)),
        (Strategy.multi_krum(1), MultiKrum(f=1, m=None)),
        (Strategy.multi_krum(1, m=3), MultiKrum(f=1, m=3)),
    ],
)
def test_strategy_factories_equal_the_dataclasses(made: Strategy, expected: Any) -> None:
    assert made.spec == expected
    assert made == Strategy(expected)
    assert hash(made) == hash(Strategy(expected))
    assert made.name == type(expected).__name__


def test_strategy_from_spec_accepts_every_spelling() -> None:
    expected = Strategy.krum(2)
    assert Strategy.from_spec(Krum(f=2)) == expected
    assert Strategy.from_spec({"type": "Krum", "f": 2}) == expected
    assert Strategy.from_spec(expected) is expected
    assert Strategy.from_spec("FedAvg") == Strategy.fed_avg()
    pipeline = Pipeline(Clip(), Krum(f=1))
    assert Strategy.from_spec(["Clip", {"type": "Krum", "f": 1}]).spec == pipeline
    assert Strategy(Strategy.fed_median()).spec == FedMedian()  # type: ignore[arg-type]
    assert repr(Strategy.krum(2)) == "Strategy(Krum(f=2, neighbors='n-f-2'))"


def test_strategy_rejects_non_strategies() -> None:
    with pytest.raises(ConfigurationError, match="Strategy wraps an aggregator"):
        Strategy("FedAvg")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unknown strategy type 'Nope'"):
        Strategy.from_spec("Nope")
    with pytest.raises(ConfigurationError):
        Strategy.krum(-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Strategy.fed_avg().spec = FedMedian()  # type: ignore[misc]


# ---------------------------------------------------------------------- aggregate

_GEN = torch.Generator().manual_seed(1234)
_ROWS = torch.randn(7, 5, generator=_GEN, dtype=torch.float64)
_WEIGHTS = torch.tensor([1.0, 2.0, 3.0, 1.0, 5.0, 1.0, 2.0], dtype=torch.float64)

# (dataclass, its dict spelling, its Strategy factory, direct kernel call)
_CASES: list[tuple[Any, dict[str, Any], Strategy, Callable[[torch.Tensor], torch.Tensor]]] = [
    (FedAvg(), {"type": "FedAvg"}, Strategy.fed_avg(), lambda x: kernels.mean(x, _WEIGHTS)),
    (FedMedian(), {"type": "FedMedian"}, Strategy.fed_median(), kernels.median),
    (
        TrimmedMean(k=2),
        {"type": "TrimmedMean", "k": 2},
        Strategy.trimmed_mean(2),
        lambda x: kernels.trimmed_mean(x, f=2),
    ),
    (Krum(f=1), {"type": "krum", "f": 1}, Strategy.krum(1), lambda x: kernels.krum(x, f=1)),
    (
        MultiKrum(f=1, m=3),
        {"type": "MultiKrum", "f": 1, "m": 3},
        Strategy.multi_krum(1, m=3),
        lambda x: kernels.multi_krum(x, f=1, m=3),
    ),
]


@pytest.mark.parametrize(("spec", "as_dict", "factory", "kernel"), _CASES)
def test_aggregate_matches_the_kernel_for_every_spelling_and_input_kind(
    spec: Any, as_dict: dict[str, Any], factory: Strategy, kernel: Callable[..., torch.Tensor]
) -> None:
    expected = kernel(_ROWS)
    for strategy in (spec, as_dict, factory):
        # torch in -> torch out, same dtype
        out = aggregate(_ROWS, strategy, weights=_WEIGHTS)
        assert isinstance(out, torch.Tensor)
        assert out.dtype == torch.float64
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        # numpy in -> numpy out, input dtype kept
        arr = _ROWS.numpy()
        out_np = aggregate(arr, strategy, weights=_WEIGHTS.numpy())
        assert isinstance(out_np, np.ndarray)
        assert out_np.dtype == np.float64
        np.testing.assert_array_equal(out_np, expected.numpy())
        # list of numpy rows -> numpy; list of weights is fine
        out_rows = aggregate(list(arr), strategy, weights=_WEIGHTS.tolist())
        assert isinstance(out_rows, np.ndarray)
        np.testing.assert_array_equal(out_rows, expected.numpy())
        # list of tensor rows -> tensor
        out_t = aggregate(list(_ROWS), strategy, weights=_WEIGHTS)
        assert isinstance(out_t, torch.Tensor)
        torch.testing.assert_close(out_t, expected, rtol=0, atol=0)
        # list of lists -> list of floats (computed in float64)
        out_list = aggregate(_ROWS.tolist(), strategy, weights=_WEIGHTS.tolist())
        assert isinstance(out_list, list)
        assert out_list == expected.tolist()


def test_aggregate_keeps_float32_numpy_and_does_not_touch_input() -> None:
    arr = _ROWS.numpy().astype(np.float32)
    before = arr.copy()
    out = aggregate(arr, "FedMedian")
    assert out.dtype == np.float32
    assert out.shape == (5,)
    np.testing.assert_array_equal(arr, before)
    np.testing.assert_array_equal(out, kernels.median(torch.from_numpy(arr)).numpy())


def test_aggregate_errors() -> None:
    with pytest.raises(ValidationError, match="row 1 has 2 entries, row 0 has 3"):
        aggregate([[1.0, 2.0, 3.0], [1.0, 2.0]], "FedAvg")
    with pytest.raises(ValidationError, match="at least one update row"):
        aggregate([], "FedAvg")
    with pytest.raises(ValidationError, match="row 0 must be 1-D"):
        aggregate([np.zeros((2, 2))], "FedAvg")
    with pytest.raises(ValidationError, match="updates must be"):
        aggregate("abc", "FedAvg")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unknown strategy type"):
        aggregate(_ROWS, "NoSuchRule")
    with pytest.raises(ValidationError, match=r"n > 2f \+ 2; got n=3, f=1"):
        aggregate(_ROWS[:3], Krum(f=1))  # n too small for f


def test_aggregate_passes_the_generator_to_random_rules() -> None:
    pipeline = Pipeline(Bucketing(bucket_size=2), FedMedian())
    first = aggregate(_ROWS, pipeline, generator=torch.Generator().manual_seed(7))
    second = aggregate(_ROWS, pipeline, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)
    with pytest.raises(ConfigurationError, match=r"needs an explicit torch\.Generator"):
        aggregate(_ROWS, pipeline)


def test_apply_gaussian_noise_numpy_and_torch_agree() -> None:
    vec = np.arange(4, dtype=np.float32)
    noisy = apply_gaussian_noise(vec, 0.5, torch.Generator().manual_seed(3))
    assert isinstance(noisy, np.ndarray)
    assert noisy.dtype == np.float32
    expected = kernels.apply_gaussian_noise(
        torch.from_numpy(vec), 0.5, torch.Generator().manual_seed(3)
    )
    np.testing.assert_array_equal(noisy, expected.numpy())
    np.testing.assert_array_equal(vec, np.arange(4, dtype=np.float32))
    t = torch.zeros(3, dtype=torch.float64)
    out = apply_gaussian_noise(t, 1.0, torch.Generator().manual_seed(3))
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float64


# ---------------------------------------------------------------------- Orchestrator


def _updates(round_: int = 0) -> list[ClientUpdate]:
    return [
        ClientUpdate("a", 1, torch.tensor([1.0, 0.0, 2.0]), round=round_, loss=1.0),
        ClientUpdate("b", 3, torch.tensor([1.0, 4.0, -2.0]), round=round_, loss=3.0),
    ]


def test_fedavg_round_is_the_weighted_mean_update() -> None:
    start = torch.tensor([10.0, 20.0, 30.0])
    orch = Orchestrator(start, Strategy.fed_avg())
    assert orch.round == 0
    summary = orch.aggregate_round(_updates())
    expected_delta = (1 * torch.tensor([1.0, 0.0, 2.0]) + 3 * torch.tensor([1.0, 4.0, -2.0])) / 4
    torch.testing.assert_close(orch.global_params, start + expected_delta)
    assert orch.global_params.dtype == torch.float32
    assert start.tolist() == [10.0, 20.0, 30.0]  # the caller's tensor is not touched
    assert orch.round == 1
    assert summary.round == 1
    assert summary.num_clients == 2
    assert summary.selected_client_ids == ("a", "b")
    assert summary.global_loss == pytest.approx((1 * 1.0 + 3 * 3.0) / 4)
    assert summary.metrics["rule"] == "FedAvg"
    assert summary.metrics["n"] == 2
    assert summary.metrics["dropped_nonfinite"] == []
    assert summary.metrics["dropped_nonfinite_clients"] == []
    assert summary.metrics["total_samples"] == 4
    assert summary.metrics["server_optimizer"] is None
    assert orch.history == (summary,)
    d = summary.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert RoundSummary.from_dict(d) == summary


def test_rounds_accumulate_and_stamped_rounds_are_checked() -> None:
    orch = Orchestrator(torch.zeros(3), "FedAvg")
    orch.aggregate_round(_updates(round_=1))
    summary = orch.aggregate_round(_updates(round_=2), global_loss=0.5)
    assert summary.round == 2
    assert summary.global_loss == 0.5
    torch.testing.assert_close(orch.global_params, 2 * torch.tensor([1.0, 3.0, -1.0]))
    assert [s.round for s in orch.history] == [1, 2]
    with pytest.raises(ProtocolError, match="client 'a' is for round 2"):
        orch.aggregate_round(_updates(round_=2))


def test_orchestrator_from_dict_of_lists_and_global_weights() -> None:
    orch = Orchestrator({"w": [0.0, 0.0], "b": [1.0]}, FedAvg())
    assert orch.spec == ParamSpec.from_sizes({"w": 2, "b": 1})
    orch.aggregate_round([ClientUpdate("c", 2, torch.tensor([1.0, 2.0, 3.0]))])
    assert orch.global_weights == {"w": [1.0, 2.0], "b": [4.0]}


def test_digest_mismatch_is_rejected_and_nothing_changes() -> None:
    orch = Orchestrator(torch.zeros(3))
    good = _updates()[0].with_digest()
    tampered = dataclasses.replace(_updates()[1].with_digest(), delta=torch.tensor([9.0, 9, 9]))
    with pytest.raises(ProtocolError, match=r"digest mismatch .* client 'b'"):
        orch.aggregate_round([good, tampered])
    assert orch.round == 0
    assert orch.history == ()
    assert orch.global_params.tolist() == [0.0, 0.0, 0.0]
    orch.aggregate_round([good])  # a matching digest is accepted
    assert orch.global_params.tolist() == [1.0, 0.0, 2.0]


def test_wrong_d_duplicates_and_empty_rounds_are_rejected() -> None:
    orch = Orchestrator(torch.zeros(3))
    with pytest.raises(ValidationError, match="client 'x' has d=2; the global model has d=3"):
        orch.aggregate_round([ClientUpdate("x", 1, torch.zeros(2))])
    with pytest.raises(ProtocolError, match="client 'a' sent more than one update"):
        orch.aggregate_round([_updates()[0], _updates()[0]])
    with pytest.raises(ValidationError, match="at least one update"):
        orch.aggregate_round([])
    with pytest.raises(ValidationError, match="must be a ClientUpdate"):
        orch.aggregate_round([{"client_id": "a"}])  # type: ignore[list-item]
    assert orch.round == 0


def test_server_optimizer_is_applied() -> None:
    start = torch.tensor([1.0, 1.0, 1.0])
    orch = Orchestrator(start, Pipeline(FedAvg(), ServerSGD(lr=0.5)))
    summary = orch.aggregate_round(_updates())
    mean_delta = torch.tensor([1.0, 3.0, -1.0])
    torch.testing.assert_close(orch.global_params, start + 0.5 * mean_delta)
    assert summary.metrics["server_optimizer"] == "ServerSGD"


def test_server_optimizer_state_carries_over_rounds() -> None:
    start = torch.zeros(3)
    orch = Orchestrator(start, Pipeline(FedAvg(), FedAvgM(lr=1.0, momentum=0.5)))
    mean_delta = torch.tensor([1.0, 3.0, -1.0])
    orch.aggregate_round(_updates())
    orch.aggregate_round(_updates())
    params, state = kernels.fedavgm(start, mean_delta, None, lr=1.0, momentum=0.5)
    params, state = kernels.fedavgm(params, mean_delta, state, lr=1.0, momentum=0.5)
    torch.testing.assert_close(orch.global_params, params)
    assert orch.optimizer_state is not None
    torch.testing.assert_close(orch.optimizer_state["m"], state["m"])


def test_nonfinite_updates_are_dropped_and_named() -> None:
    orch = Orchestrator(torch.zeros(3), FedAvg())
    bad = ClientUpdate("nan-client", 5, torch.tensor([float("nan"), 0.0, 0.0]))
    summary = orch.aggregate_round([*_updates(), bad])
    assert summary.metrics["dropped_nonfinite"] == [2]
    assert summary.metrics["dropped_nonfinite_clients"] == ["nan-client"]
    torch.testing.assert_close(orch.global_params, torch.tensor([1.0, 3.0, -1.0]))
    assert summary.global_loss is None  # one client reported no loss


def test_low_precision_deltas_are_written_into_the_float32_stack() -> None:
    orch = Orchestrator(torch.zeros(2), FedMedian())
    orch.aggregate_round(
        [
            ClientUpdate("a", 1, torch.tensor([1.0, 2.0], dtype=torch.float16)),
            ClientUpdate("b", 1, torch.tensor([3.0, 4.0], dtype=torch.bfloat16)),
            ClientUpdate("c", 1, torch.tensor([5.0, 6.0], dtype=torch.float64)),
        ]
    )
    assert orch.global_params.dtype == torch.float32
    assert orch.global_params.tolist() == [3.0, 4.0]


def test_orchestrator_rejects_bad_construction() -> None:
    with pytest.raises(ValidationError, match="1-D floating tensor"):
        Orchestrator(torch.zeros(2, 2))
    with pytest.raises(ValidationError, match="spec has d=3"):
        Orchestrator(torch.zeros(2), spec=ParamSpec.from_sizes({"w": 3}))
    with pytest.raises(ConfigurationError):
        Orchestrator(torch.zeros(2), "NoSuchRule")
