"""Tests for velocity.types: ParamSpec, ClientUpdate, ClientFailure, RoundResult.

The seed's ``RoundSummary`` view lives in ``velocity._core`` (tests/test_core_surface.py)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from velocity.errors import ValidationError
from velocity.types import ClientFailure, ClientUpdate, ParamSpec, RoundResult

# ---------------------------------------------------------------------- ParamSpec

DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.uint8,
    torch.bool,
]


def _random_tensor(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    if not dtype.is_floating_point:
        limit = 2**24 if dtype in (torch.int64, torch.int32) else 2**15 - 1
        return torch.randint(-limit, limit + 1, shape, generator=gen, dtype=dtype)
    return (torch.randn(shape, generator=gen) * 100).to(dtype)


shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
entries = st.lists(st.tuples(shapes, st.sampled_from(DTYPES)), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(entries=entries, seed=st.integers(0, 2**31 - 1))
def test_flatten_unflatten_round_trip_is_exact(
    entries: list[tuple[tuple[int, ...], torch.dtype]], seed: int
) -> None:
    sd = {
        f"p{i}": _random_tensor(shape, dtype, seed + i) for i, (shape, dtype) in enumerate(entries)
    }
    spec = ParamSpec.from_state_dict(sd)
    assert spec.d == sum(math.prod(s) for s, _ in entries)
    vec = spec.flatten(sd)
    assert vec.dtype == torch.float32
    assert vec.shape == (spec.d,)
    back = spec.unflatten(vec)
    assert list(back) == list(sd)
    for name, tensor in sd.items():
        assert back[name].dtype == tensor.dtype
        assert back[name].shape == tensor.shape
        assert torch.equal(back[name], tensor), name
    # the list form round-trips too
    assert torch.equal(spec.from_lists(spec.to_lists(vec)), vec)


def test_offsets_and_layout_follow_spec_order() -> None:
    spec = ParamSpec(("a", "b", "c"), ((2, 2), (), (3,)))
    assert spec.offsets == (0, 4, 5)
    assert spec.d == 8
    assert spec.sizes == {"a": 4, "b": 1, "c": 3}
    assert len(spec) == 3
    # dict order does not matter: the spec's order does
    sd = {"c": torch.tensor([6.0, 7.0, 8.0]), "a": torch.arange(4.0).reshape(2, 2)}
    sd["b"] = torch.tensor(5.0)
    assert spec.flatten(sd).tolist() == [0, 1, 2, 3, 5, 6, 7, 8]


def test_unflatten_float32_returns_views() -> None:
    spec = ParamSpec(("w", "n"), ((2, 3), ()), (torch.float32, torch.int64))
    vec = torch.arange(7.0)
    out = spec.unflatten(vec)
    out["w"][0, 0] = 42.0
    assert vec[0] == 42.0
    assert out["w"].untyped_storage().data_ptr() == vec.untyped_storage().data_ptr()
    assert out["n"].dtype == torch.int64
    assert out["n"].item() == 6


def test_flatten_into_stack_row_writes_in_place() -> None:
    spec = ParamSpec.from_module(torch.nn.Linear(3, 2))
    rows = spec.stack(3)
    assert rows.shape == (3, spec.d)
    assert rows.dtype == torch.float32
    rows.fill_(-1.0)
    sd = {"weight": torch.ones(2, 3), "bias": torch.tensor([2.0, 3.0])}
    result = spec.flatten(sd, out=rows[1])
    assert result.data_ptr() == rows[1].data_ptr()
    assert rows[1].tolist() == [1.0] * 6 + [2.0, 3.0]
    assert (rows[0] == -1).all()
    assert (rows[2] == -1).all()


def test_flatten_converts_half_precision_into_float32_row() -> None:
    spec = ParamSpec(("h",), ((3,),), (torch.float16,))
    row = torch.zeros(2, 3)[0]
    spec.flatten({"h": torch.tensor([0.5, 1.5, -2.0], dtype=torch.float16)}, out=row)
    assert row.tolist() == [0.5, 1.5, -2.0]


def test_from_module_includes_buffers() -> None:
    spec = ParamSpec.from_module(torch.nn.BatchNorm1d(4))
    assert spec.names == (
        "weight",
        "bias",
        "running_mean",
        "running_var",
        "num_batches_tracked",
    )
    assert spec.dtypes[-1] == torch.int64
    assert spec.d == 4 * 4 + 1


def test_flatten_error_names_parameter_and_shapes() -> None:
    spec = ParamSpec(("layer.weight", "layer.bias"), ((2, 3), (2,)))
    bad = {"layer.weight": torch.zeros(3, 2), "layer.bias": torch.zeros(2)}
    with pytest.raises(ValidationError, match=r"'layer\.weight'.*\(3, 2\).*expected \(2, 3\)"):
        spec.flatten(bad)


def test_flatten_error_lists_missing_and_unexpected_names() -> None:
    spec = ParamSpec.from_sizes({"a": 1, "b": 1})
    with pytest.raises(ValidationError, match=r"missing \['b'\].*unexpected \['c'\]"):
        spec.flatten({"a": torch.zeros(1), "c": torch.zeros(1)})


def test_flatten_rejects_wrong_out() -> None:
    spec = ParamSpec.from_sizes({"a": 2})
    sd = {"a": torch.zeros(2)}
    with pytest.raises(ValidationError, match="out must be a float32"):
        spec.flatten(sd, out=torch.zeros(3))
    with pytest.raises(ValidationError, match="out must be a float32"):
        spec.flatten(sd, out=torch.zeros(2, dtype=torch.float64))


def test_float64_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValidationError, match=r"'w' is float64.*module\.float\(\)"):
        ParamSpec.from_state_dict({"w": torch.zeros(2, dtype=torch.float64)})
    spec = ParamSpec.from_sizes({"w": 2})
    with pytest.raises(ValidationError, match="'w' is float64"):
        spec.flatten({"w": torch.zeros(2, dtype=torch.float64)})


def test_unsupported_dtype_is_refused() -> None:
    with pytest.raises(ValidationError, match="unsupported dtype"):
        ParamSpec(("z",), ((1,),), (torch.complex64,))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_integers_beyond_2_pow_24_are_refused(dtype: torch.dtype) -> None:
    spec = ParamSpec(("n",), ((2,),), (dtype,))
    ok = torch.tensor([2**24, -(2**24)], dtype=dtype)
    assert spec.unflatten(spec.flatten({"n": ok}))["n"].tolist() == [2**24, -(2**24)]
    with pytest.raises(ValidationError, match=r"'n'.*outside \[-2\*\*24, 2\*\*24\]"):
        spec.flatten({"n": torch.tensor([0, 2**24 + 1], dtype=dtype)})
    with pytest.raises(ValidationError, match="'n'"):
        spec.flatten({"n": torch.tensor([-(2**24) - 1, 0], dtype=dtype)})


def test_unflatten_rounds_and_clamps_integer_buffers() -> None:
    spec = ParamSpec(("u", "b"), ((3,), (2,)), (torch.uint8, torch.bool))
    out = spec.unflatten(torch.tensor([1.6, -3.0, 300.0, 0.2, 0.9]))
    assert out["u"].tolist() == [2, 0, 255]
    assert out["b"].tolist() == [False, True]


def test_unflatten_and_to_lists_check_length() -> None:
    spec = ParamSpec.from_sizes({"a": 2})
    with pytest.raises(ValidationError, match=r"expected \(2,\)"):
        spec.unflatten(torch.zeros(3))
    with pytest.raises(ValidationError, match=r"expected \(2,\)"):
        spec.to_lists(torch.zeros(2, 1))


def test_from_lists_checks_lengths_and_names() -> None:
    spec = ParamSpec.from_sizes({"a": 2, "b": 1})
    with pytest.raises(ValidationError, match="'b' has 2 values; expected 1"):
        spec.from_lists({"a": [1.0, 2.0], "b": [1.0, 2.0]})
    with pytest.raises(ValidationError, match=r"missing \['b'\]"):
        spec.from_lists({"a": [1.0, 2.0]})


def test_spec_validation() -> None:
    with pytest.raises(ValidationError, match="one shape and one dtype per name"):
        ParamSpec(("a", "b"), ((1,),))
    with pytest.raises(ValidationError, match="'a' appears twice"):
        ParamSpec(("a", "a"), ((1,), (1,)))
    with pytest.raises(ValidationError, match="negative dimension"):
        ParamSpec(("a",), ((-1,),))


def test_digest_identifies_the_layout() -> None:
    base = ParamSpec(("a", "b"), ((2,), (3,)))
    assert base.digest() == ParamSpec(("a", "b"), ((2,), (3,))).digest()
    assert base == ParamSpec(("a", "b"), ((2,), (3,)))
    assert hash(base) == hash(ParamSpec(("a", "b"), ((2,), (3,))))
    others = [
        ParamSpec(("a", "c"), ((2,), (3,))),
        ParamSpec(("a", "b"), ((3,), (2,))),
        ParamSpec(("a", "b"), ((2,), (3,)), (torch.float32, torch.float16)),
        ParamSpec(("b", "a"), ((3,), (2,))),
    ]
    digests = {base.digest(), *(o.digest() for o in others)}
    assert len(digests) == 1 + len(others)
    assert all(len(d) == 64 for d in digests)


def test_spec_is_frozen() -> None:
    spec = ParamSpec.from_sizes({"a": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.d = 3  # type: ignore[misc]


# ---------------------------------------------------------------------- ClientUpdate


def test_client_update_defaults_and_fields() -> None:
    u = ClientUpdate("c1", 5, torch.tensor([1.0, 2.0]))
    assert u.round == 0
    assert u.loss is None
    assert dict(u.metrics) == {}
    assert u.staleness == 0
    assert u.digest is None
    assert u.d == 2
    assert u.base_version == 0
    assert u.payload is None
    assert u.encoding is None
    assert u.arrived_at == 0.0


def test_client_update_metrics_are_read_only_copies() -> None:
    source = {"acc": 0.5}
    u = ClientUpdate("c1", 5, torch.zeros(2), loss=1, metrics=source)
    source["acc"] = 0.9
    assert u.metrics["acc"] == 0.5
    assert isinstance(u.loss, float)
    with pytest.raises(TypeError):
        u.metrics["acc"] = 1.0  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        u.num_samples = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"client_id": ""}, "client_id must be a non-empty str"),
        ({"num_samples": -1}, "num_samples must be >= 0"),
        ({"num_samples": 2.0}, "num_samples must be an int"),
        ({"num_samples": True}, "num_samples must be an int"),
        ({"delta": torch.zeros(2, 2)}, "1-D floating"),
        ({"delta": torch.zeros(2, dtype=torch.int64)}, "1-D floating"),
        ({"delta": [1.0, 2.0]}, "must be a torch.Tensor"),
        ({"round": -1}, "round must be >= 0"),
        ({"staleness": -2}, "staleness must be >= 0"),
        ({"loss": "low"}, "loss must be a float"),
        ({"metrics": {"acc": "high"}}, r"metrics\['acc'\] must be a float"),
        ({"digest": 5}, "digest must be a hex str"),
        ({"base_version": -1}, "base_version must be >= 0"),
        ({"arrived_at": "soon"}, "arrived_at must be a float"),
        ({"delta": None}, r"delta must be a torch\.Tensor \(or None with a bytes payload"),
        ({"delta": None, "payload": b"x"}, r"or None with a bytes payload and its encoding"),
        ({"payload": b"x", "encoding": "safetensors"}, "give delta or payload, not both"),
    ],
)
def test_client_update_validation(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"client_id": "c1", "num_samples": 3, "delta": torch.zeros(2)}
    args.update(kwargs)
    with pytest.raises(ValidationError, match=message):
        ClientUpdate(**args)  # type: ignore[arg-type]


def test_client_update_accepts_numpy_delta_and_numpy_ints() -> None:
    u = ClientUpdate("c", np.int64(4), np.array([1.0, 2.0], dtype=np.float32))  # type: ignore[arg-type]
    assert isinstance(u.delta, torch.Tensor)
    assert u.num_samples == 4
    assert type(u.num_samples) is int


def test_client_update_digest() -> None:
    delta = torch.tensor([0.25, -1.5, 3.0])
    u = ClientUpdate("c", 1, delta)
    assert not u.verify_digest()  # no digest to verify
    signed = u.with_digest()
    assert signed.verify_digest()
    assert signed.digest == u.compute_digest()
    import hashlib

    expected = hashlib.sha256(np.array([0.25, -1.5, 3.0], dtype="<f4").tobytes()).hexdigest()
    assert signed.digest == expected
    # same values in another dtype give the same digest (it hashes float32 bytes)
    assert ClientUpdate("c", 1, delta.to(torch.bfloat16)).compute_digest() == expected
    tampered = dataclasses.replace(signed, delta=delta + 1e-3)
    assert not tampered.verify_digest()


def test_client_update_may_carry_an_encoded_payload_instead_of_a_delta() -> None:
    u = ClientUpdate("c", 2, None, payload=b"bytes", encoding="safetensors")
    assert u.delta is None
    assert u.d == 0
    with pytest.raises(ValidationError, match="still encoded; decode it first"):
        u.compute_digest()


# ---------------------------------------------------------------------- ClientFailure


def test_client_failure_reasons_and_dict_round_trip() -> None:
    failure = ClientFailure("client-3", "timed_out", "missed the deadline", round=2)
    d = failure.to_dict()
    assert d == {
        "client_id": "client-3",
        "reason": "timed_out",
        "message": "missed the deadline",
        "round": 2,
    }
    assert ClientFailure.from_dict(json.loads(json.dumps(d))) == failure
    for reason in ("dropped", "timed_out", "rejected", "stale", "error"):
        assert ClientFailure("c", reason).reason == reason  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="reason must be one of"):
        ClientFailure("c", "lost")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="client_id must be a non-empty str"):
        ClientFailure("", "dropped")


# ---------------------------------------------------------------------- RoundResult


def _result(**changes: object) -> RoundResult:
    fields: dict[str, object] = {
        "round": 3,
        "selected_client_ids": ("a", "b", "c", "d", "e"),
        "participated": ("a", "b"),
        "failures": (
            ClientFailure("c", "dropped", round=3),
            ClientFailure("d", "timed_out", round=3),
            ClientFailure("e", "rejected", "digest mismatch", round=3),
        ),
        "global_loss": 0.5,
        "global_accuracy": 0.75,
        "train_loss": 1.25,
        "client_accuracy": {"a": 0.5, "b": 1.0},
        "samples": {"a": 3, "b": 4},
        "bytes_up": 20,
        "bytes_down": 50,
        "duration_s": 0.1,
        "clock_s": 2.0,
        "aggregation": {
            "rule": "FedAvg",
            "dropped_nonfinite": torch.tensor(1),
            "norm": np.float32(2.5),
            "v": (1, 2),
        },
        "stages": {"adversary": {"rows": 2}},
        "attack_results": ({"attack_type": "gaussian_noise", "severity": 0.1},),
    }
    fields.update(changes)
    return RoundResult(**fields)  # type: ignore[arg-type]


def test_round_result_derives_failures_by_reason() -> None:
    r = _result()
    assert r.num_clients == 2
    assert r.selected == r.selected_client_ids == ("a", "b", "c", "d", "e")
    assert r.dropped == ("c",)
    assert r.stragglers == ("d",)
    assert r.rejected == ("e",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.round = 4  # type: ignore[misc]


def test_round_result_to_dict_is_json_and_round_trips() -> None:
    r = _result()
    d = r.to_dict()
    assert list(d) == [
        "round",
        "num_clients",
        "global_loss",
        "attack_results",
        "selected_client_ids",
        "global_accuracy",
        "train_loss",
        "participated",
        "dropped",
        "stragglers",
        "rejected",
        "failures",
        "client_accuracy",
        "samples",
        "bytes_up",
        "bytes_down",
        "duration_s",
        "clock_s",
        "aggregation",
        "stages",
    ]
    assert d["aggregation"] == {"rule": "FedAvg", "dropped_nonfinite": 1, "norm": 2.5, "v": [1, 2]}
    assert d["selected_client_ids"] == ["a", "b", "c", "d", "e"]
    assert d["dropped"] == ["c"]
    assert d["stragglers"] == ["d"]
    assert d["rejected"] == ["e"]
    assert d["failures"][2] == {
        "client_id": "e",
        "reason": "rejected",
        "message": "digest mismatch",
        "round": 3,
    }
    assert json.loads(json.dumps(d)) == d
    back = RoundResult.from_dict(json.loads(json.dumps(d)))
    assert back.to_dict() == d
    assert back.failures == r.failures
    # to_dict hands out copies
    d["aggregation"]["x"] = 1
    d["attack_results"][0]["x"] = 1
    assert "x" not in r.aggregation
    assert "x" not in r.attack_results[0]


def test_round_result_to_dict_writes_non_finite_floats_as_null() -> None:
    r = _result(
        global_loss=float("nan"),
        train_loss=float("inf"),
        aggregation={"norm": float("nan")},
        attack_results=({"severity": float("inf")},),
    )
    d = r.to_dict()
    assert d["global_loss"] is None
    assert d["train_loss"] is None
    assert d["aggregation"] == {"norm": None}
    assert d["attack_results"] == [{"severity": None}]
    assert json.loads(json.dumps(d, allow_nan=False)) == d


def test_round_result_minimal_dict() -> None:
    r = RoundResult.from_dict({"round": 1, "selected_client_ids": [], "participated": []})
    assert r.global_loss is None
    assert r.attack_results == ()
    assert r.failures == ()
    assert r.num_clients == 0
    assert dict(r.aggregation) == {}


@pytest.mark.parametrize(
    "data",
    [
        {"round": 1, "participated": []},
        {"round": "x", "selected_client_ids": [], "participated": []},
        {"round": 1, "selected_client_ids": [], "participated": [], "failures": [{"x": 1}]},
        {
            "round": 1,
            "selected_client_ids": [],
            "participated": [],
            "failures": [{"client_id": "c", "reason": "lost"}],
        },
    ],
)
def test_round_result_from_dict_rejects_malformed_records(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RoundResult.from_dict(data)
