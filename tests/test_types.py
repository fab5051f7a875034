"""Tests for velocity.types: ParamSpec, ClientUpdate, RoundSummary."""

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
from velocity.types import ClientUpdate, ParamSpec, RoundSummary

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


# ---------------------------------------------------------------------- RoundSummary


@dataclasses.dataclass(frozen=True)
class _Attack:
    attack_type: str
    clients_affected: int


def test_round_summary_to_dict_is_json_and_round_trips() -> None:
    s = RoundSummary(
        round=3,
        num_clients=2,
        global_loss=0.5,
        attack_results=({"attack_type": "gaussian_noise", "severity": 0.1},),
        selected_client_ids=["a", "b"],  # type: ignore[arg-type]
        metrics={"dropped_nonfinite": torch.tensor(1), "norm": np.float32(2.5), "v": (1, 2)},
    )
    d = s.to_dict()
    assert set(d) == {
        "round",
        "num_clients",
        "global_loss",
        "attack_results",
        "selected_client_ids",
        "metrics",
    }
    assert d["metrics"] == {"dropped_nonfinite": 1, "norm": 2.5, "v": [1, 2]}
    assert d["selected_client_ids"] == ["a", "b"]
    assert json.loads(json.dumps(d)) == d
    assert RoundSummary.from_dict(d) == s
    assert RoundSummary.from_dict(json.loads(json.dumps(d))) == s
    # to_dict hands out copies
    d["metrics"]["x"] = 1
    assert "x" not in s.metrics


def test_round_summary_converts_attack_dataclasses() -> None:
    s = RoundSummary(1, 4, attack_results=(_Attack("sybil_nodes", 2),))  # type: ignore[arg-type]
    assert s.to_dict()["attack_results"] == [{"attack_type": "sybil_nodes", "clients_affected": 2}]
    with pytest.raises(TypeError):
        s.attack_results[0]["x"] = 1  # type: ignore[index]


def test_round_summary_minimal_dict() -> None:
    s = RoundSummary.from_dict({"round": 1, "num_clients": 0})
    assert s.global_loss is None
    assert s.attack_results == ()
    assert s.selected_client_ids == ()
    assert dict(s.metrics) == {}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"round": 1}, r"missing keys \['num_clients'\]"),
        ({"round": 1, "num_clients": 1, "extra": 2}, r"unknown keys \['extra'\]"),
        ({"round": -1, "num_clients": 1}, "round must be >= 0"),
        ({"round": 1, "num_clients": 1.5}, "num_clients must be an int"),
        ({"round": 1, "num_clients": 1, "global_loss": "x"}, "global_loss must be a float"),
        ({"round": 1, "num_clients": 1, "selected_client_ids": [1]}, "sequence of str"),
        ({"round": 1, "num_clients": 1, "selected_client_ids": "ab"}, "sequence of str"),
        ({"round": 1, "num_clients": 1, "attack_results": [1]}, r"attack_results\[0\]"),
        ({"round": 1, "num_clients": 1, "metrics": [1]}, "metrics must be a mapping"),
        ({"round": 1, "num_clients": 1, "metrics": {"o": object()}}, "cannot represent"),
    ],
)
def test_round_summary_validation(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RoundSummary.from_dict(data)
