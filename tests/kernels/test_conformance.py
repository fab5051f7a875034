"""One conformance suite, parametrized over every aggregator and pre-aggregator.

Each registered rule is checked for the contract every kernel shares (docs/kernels.md):
output shape/dtype/device, float16/bfloat16 computed in float32 and cast back, inputs never
modified, global random state untouched, determinism, permutation invariance (aggregators) or
equivariance (pre-aggregators) where the rule is symmetric, robust rules ignoring weights, and
``ValidationError`` (a ``ValueError``) naming the numbers for invalid n/f and bad inputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from velocity import kernels as K
from velocity.errors import ValidationError

N, D = 11, 7


@dataclass(frozen=True)
class Rule:
    """How to call one kernel with valid settings, and what it promises."""

    id: str
    name: str
    params: Callable[[], dict[str, Any]] = dict
    pre: bool = False  # pre-aggregator: returns (updates', weights')
    symmetric: bool = True  # permutation invariant (aggregator) / equivariant (pre-aggregator)
    uses_weights: bool = False  # mean and geometric_median; every other rule ignores them
    # (n, settings, numbers the message must name) for row counts too small for the settings
    too_few: tuple[tuple[int, dict[str, Any], tuple[int, ...]], ...] = ()
    takes_f: bool = False

    @property
    def fn(self) -> Callable[..., Any]:
        return getattr(K, self.name)

    def __call__(self, x: torch.Tensor, **extra: Any) -> Any:
        return self.fn(x, **{**self.params(), **extra})


def _gen() -> dict[str, Any]:
    return {"bucket_size": 3, "generator": torch.Generator().manual_seed(1234)}


def _f(f: int, **more: Any) -> Callable[[], dict[str, Any]]:
    return lambda: {"f": f, **more}


RULES: list[Rule] = [
    Rule("mean", "mean", uses_weights=True),
    Rule("mean-propagate", "mean", lambda: {"nonfinite": "propagate"}, uses_weights=True),
    Rule("median", "median"),
    Rule("trimmed_mean", "trimmed_mean", _f(2), too_few=((6, {"f": 3}, (6, 3)),), takes_f=True),
    Rule("meamed", "meamed", _f(2), too_few=((6, {"f": 3}, (6, 3)),), takes_f=True),
    Rule("geometric_median", "geometric_median", uses_weights=True),
    Rule(
        "geometric_median-zero",
        "geometric_median",
        lambda: {"init": "zero", "tol": 0.0, "max_iter": 20},
        uses_weights=True,
    ),
    Rule("krum", "krum", _f(2), too_few=((6, {"f": 2}, (6, 2)),), takes_f=True),
    Rule("krum-nf1", "krum", _f(2, neighbors="n-f-1"), too_few=((6, {"f": 2}, (6, 2)),)),
    Rule("multi_krum", "multi_krum", _f(2), too_few=((6, {"f": 2}, (6, 2)),), takes_f=True),
    Rule(
        "multi_krum-m",
        "multi_krum",
        _f(2, m=3),
        too_few=((11, {"f": 2, "m": 12}, (12,)), (11, {"f": 2, "m": 0}, (0,))),
    ),
    # Bulyan's last selection steps use Krum with <= 1 neighbour, where mutual nearest
    # neighbours tie exactly and the lower index wins (see the kernel's docstring).
    Rule(
        "bulyan",
        "bulyan",
        _f(2),
        too_few=((10, {"f": 2}, (10, 2)),),
        takes_f=True,
        symmetric=False,
    ),
    Rule("mda", "mda", _f(2), too_few=((6, {"f": 3}, (6, 3)),), takes_f=True),
    Rule(
        "monna",
        "monna",
        _f(2, reference_index=3),
        symmetric=False,
        too_few=((6, {"f": 3}, (6, 3)), (11, {"f": 2, "reference_index": 11}, (11,))),
        takes_f=True,
    ),
    Rule("smea", "smea", _f(2), too_few=((6, {"f": 3}, (6, 3)),), takes_f=True),
    Rule("centered_clipping", "centered_clipping", lambda: {"c_tau": 1.0}),
    Rule("centered_clipping-median", "centered_clipping", lambda: {"c_tau": 0.5, "init": "median"}),
    Rule("cge", "cge", _f(2), too_few=((5, {"f": 5}, (5,)),), takes_f=True),
    Rule("caf", "caf", _f(2), too_few=((6, {"f": 3}, (6, 3)),), takes_f=True),
    Rule("bucketing", "bucketing", _gen, pre=True, symmetric=False),
    Rule("clip", "clip", lambda: {"threshold": 1.0}, pre=True),
    Rule("arc", "arc", _f(2), pre=True, too_few=((4, {"f": 5}, (4, 5)),), takes_f=True),
    Rule("nnm", "nnm", _f(2), pre=True, too_few=((5, {"f": 5}, (5,)),), takes_f=True),
]
IDS = [r.id for r in RULES]
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
    ),
]


def _data(
    dtype: torch.dtype = torch.float64, device: str = "cpu", n: int = N, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g, dtype=torch.float64) * 2.0 + 1.0
    w = torch.rand(n, generator=g, dtype=torch.float64) * 10 + 0.5
    return x.to(dtype=dtype, device=device), w.to(dtype=dtype, device=device)


def _rows_out(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _check_output(rule: Rule, out: Any, x: torch.Tensor) -> None:
    n, d = x.shape
    if rule.pre:
        assert isinstance(out, tuple)
        assert len(out) == 2
        rows, w = out
        assert rows.ndim == 2
        assert rows.shape[1] == d
        expected_rows = -(-n // 3) if rule.name == "bucketing" else n
        assert rows.shape[0] == expected_rows
        if w is not None:
            assert w.shape == (rows.shape[0],)
            assert w.device == x.device
    else:
        assert isinstance(out, torch.Tensor)
        rows = out
        assert rows.shape == (d,)
    assert rows.dtype == x.dtype
    assert rows.device == x.device
    assert bool(torch.isfinite(rows.float()).all())


# ---------------------------------------------------------------- shape, dtype, device


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_shape_dtype_device(rule: Rule, dtype: torch.dtype, device: str) -> None:
    x, w = _data(dtype, device)
    _check_output(rule, rule(x), x)
    _check_output(rule, rule(x, weights=w), x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_cuda_matches_cpu(rule: Rule) -> None:
    """Same answer on the accelerator as on the CPU (float64; same generator seed)."""
    x, _ = _data(torch.float64, "cpu")
    cpu = _rows_out(rule(x))
    gpu = _rows_out(rule(x.to("cuda")))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_low_precision_computed_in_float32(rule: Rule, dtype: torch.dtype) -> None:
    x, w = _data(torch.float32)
    x = x.to(dtype)
    out = rule(x, weights=w.to(dtype))
    _check_output(rule, out, x)
    expected = rule(x.float(), weights=w.to(dtype).float())
    torch.testing.assert_close(_rows_out(out), _rows_out(expected).to(dtype), rtol=0, atol=0)


# ---------------------------------------------------------------- purity


@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_inputs_not_mutated(rule: Rule) -> None:
    x, w = _data(torch.float32)
    x_before, w_before = x.clone(), w.clone()
    rule(x, weights=w)
    rule(x)
    assert torch.equal(x, x_before)
    assert torch.equal(w, w_before)


def test_centered_clipping_init_tensor_not_mutated() -> None:
    x, _ = _data()
    init = torch.full((D,), 3.0, dtype=torch.float64)
    K.centered_clipping(x, c_tau=0.5, init=init)
    assert torch.equal(init, torch.full((D,), 3.0, dtype=torch.float64))


@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_global_random_state_untouched(rule: Rule) -> None:
    x, w = _data()
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()  # noqa: NPY002 (the global state is the point)
    rule(x, weights=w)
    if rule.name == "bucketing":
        K.bucketing(x, bucket_size=2)  # no generator: must still leave global state alone
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    after = np.random.get_state()  # noqa: NPY002 (the global state is the point)
    assert after[0] == np_state[0]
    assert np.array_equal(after[1], np_state[1])
    assert after[2:] == np_state[2:]


@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_deterministic(rule: Rule) -> None:
    x, w = _data(torch.float32)
    a, b = rule(x, weights=w), rule(x, weights=w)
    assert torch.equal(_rows_out(a), _rows_out(b))
    if rule.pre and a[1] is not None:
        assert torch.equal(a[1], b[1])


def test_bucketing_generator_controls_the_permutation() -> None:
    x, _ = _data(n=12)
    outs = [
        K.bucketing(x, bucket_size=3, generator=torch.Generator().manual_seed(s))[0]
        for s in (5, 5, 6, 7, 8)
    ]
    assert torch.equal(outs[0], outs[1])
    # 12!/(3!^4 4!) = 15400 distinct bucketings: three other seeds cannot all coincide
    assert any(not torch.equal(outs[0], o) for o in outs[2:])


# ---------------------------------------------------------------- symmetry


@pytest.mark.parametrize("rule", [r for r in RULES if r.symmetric], ids=lambda r: r.id)
def test_permutation_symmetry(rule: Rule) -> None:
    x, w = _data()
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(7))
    out, out_perm = rule(x, weights=w), rule(x[perm], weights=w[perm])
    if rule.pre:
        torch.testing.assert_close(out_perm[0], out[0][perm], rtol=1e-12, atol=1e-12)
        if out[1] is not None:
            torch.testing.assert_close(out_perm[1], out[1][perm])
    else:
        torch.testing.assert_close(out_perm, out, rtol=1e-12, atol=1e-12)


def test_monna_follows_its_reference_row() -> None:
    x, _ = _data()
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    new_index = int(torch.nonzero(perm == 4).item())
    a = K.monna(x, f=2, reference_index=4)
    b = K.monna(x[perm], f=2, reference_index=new_index)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", [r for r in RULES if not r.uses_weights], ids=lambda r: r.id)
def test_robust_rules_ignore_weights(rule: Rule) -> None:
    """Every row is one vote: weights are validated, never used (bucketing only sums them)."""
    x, w = _data()
    skewed = w.clone()
    skewed[0] = 1e6
    out_w, out_none = rule(x, weights=skewed), rule(x)
    assert torch.equal(_rows_out(out_w), _rows_out(out_none))
    if rule.pre and rule.name != "bucketing":
        assert out_w[1] is skewed or torch.equal(out_w[1], skewed)


# ---------------------------------------------------------------- validation


def _numbers_in(message: str, numbers: tuple[int, ...]) -> None:
    for number in numbers:
        assert re.search(rf"(?<![\d.]){number}(?![\d.])", message), (number, message)


@pytest.mark.parametrize("rule", [r for r in RULES if r.too_few], ids=lambda r: r.id)
def test_too_few_rows_raise_with_numbers(rule: Rule) -> None:
    for n, settings, numbers in rule.too_few:
        x, _ = _data(n=n)
        with pytest.raises(ValidationError) as info:
            rule.fn(x, **{**rule.params(), **settings})
        assert isinstance(info.value, ValueError)
        _numbers_in(str(info.value), numbers)


@pytest.mark.parametrize("rule", [r for r in RULES if r.takes_f], ids=lambda r: r.id)
@pytest.mark.parametrize("bad_f", [-1, 1.5, "2", True, None])
def test_bad_f_raises(rule: Rule, bad_f: object) -> None:
    x, _ = _data()
    with pytest.raises(ValidationError, match="f"):
        rule.fn(x, **{**rule.params(), "f": bad_f})


BAD_SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("mean", {"nonfinite": "ignore"}),
    ("geometric_median", {"init": "origin"}),
    ("geometric_median", {"max_iter": -1}),
    ("geometric_median", {"tol": -1.0}),
    ("geometric_median", {"eps": 0.0}),
    ("krum", {"f": 1, "neighbors": "n-f"}),
    ("multi_krum", {"f": 1, "neighbors": "n-f-3"}),
    ("bulyan", {"f": 1, "neighbors": "n"}),
    ("centered_clipping", {"c_tau": -1.0}),
    ("centered_clipping", {"c_tau": float("nan")}),
    ("centered_clipping", {"c_tau": 1.0, "M": -1}),
    ("centered_clipping", {"c_tau": 1.0, "init": "origin"}),
    ("centered_clipping", {"c_tau": 1.0, "init": torch.zeros(D + 1, dtype=torch.float64)}),
    ("monna", {"f": 1, "reference_index": -1}),
    ("mda", {"f": 1, "max_subsets": 10}),
    ("smea", {"f": 1, "max_subsets": 10}),
    ("bucketing", {"bucket_size": 0}),
    ("bucketing", {"bucket_size": 2, "generator": 42}),
    ("clip", {"threshold": -1.0}),
    ("clip", {"threshold": float("inf")}),
]


@pytest.mark.parametrize(("name", "settings"), BAD_SETTINGS, ids=lambda v: str(v)[:30])
def test_bad_settings_raise(name: str, settings: dict[str, Any]) -> None:
    x, _ = _data()
    with pytest.raises(ValidationError):
        getattr(K, name)(x, **settings)


def _bad_updates() -> list[tuple[str, object]]:
    return [
        ("1-D", torch.ones(5)),
        ("3-D", torch.ones(3, 2, 2)),
        ("no rows", torch.ones(0, 3)),
        ("no columns", torch.ones(4, 0)),
        ("integer", torch.ones(4, 3, dtype=torch.int64)),
        ("bool", torch.ones(4, 3, dtype=torch.bool)),
        ("numpy", np.ones((4, 3))),
        ("list", [[1.0, 2.0], [3.0, 4.0]]),
    ]


UTILITIES = ["nonfinite_rows", "pairwise_sq_distances"]


@pytest.mark.parametrize("bad", [b for _, b in _bad_updates()], ids=[k for k, _ in _bad_updates()])
@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_bad_updates_raise(rule: Rule, bad: object) -> None:
    with pytest.raises(ValidationError):
        rule.fn(bad, **rule.params())


@pytest.mark.parametrize("name", UTILITIES)
def test_utilities_validate_updates(name: str) -> None:
    for _, bad in _bad_updates():
        with pytest.raises(ValidationError):
            getattr(K, name)(bad)


@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_bad_weights_raise(rule: Rule) -> None:
    x, w = _data()
    bad_weights = [
        w[:-1],  # wrong length
        torch.cat([w, w[:1]]),
        w[None, :],  # wrong rank
        torch.where(torch.arange(N) == 2, -1.0, 1.0).to(torch.float64),  # negative
        torch.where(torch.arange(N) == 2, float("nan"), 1.0).to(torch.float64),
        torch.where(torch.arange(N) == 2, float("inf"), 1.0).to(torch.float64),
        w.numpy(),
    ]
    for bad in bad_weights:
        with pytest.raises(ValidationError):
            rule(x, weights=bad)


def test_weight_error_names_the_lengths() -> None:
    x, w = _data()
    with pytest.raises(ValidationError) as info:
        K.mean(x, weights=w[:-2])
    _numbers_in(str(info.value), (N, N - 2))


def test_mean_refuses_all_nonfinite_when_dropping() -> None:
    x = torch.full((3, 2), float("nan"))
    with pytest.raises(ValidationError):
        K.mean(x)


@pytest.mark.parametrize("name", ["mean", "geometric_median"])
def test_zero_total_weight_raises(name: str) -> None:
    x, _ = _data()
    with pytest.raises(ValidationError):
        getattr(K, name)(x, weights=torch.zeros(N, dtype=torch.float64))


# ---------------------------------------------------------------- registry completeness

_ALL_KERNELS = {
    "mean",
    "median",
    "trimmed_mean",
    "meamed",
    "geometric_median",
    "krum",
    "multi_krum",
    "bulyan",
    "mda",
    "monna",
    "smea",
    "centered_clipping",
    "cge",
    "caf",
    "bucketing",
    "clip",
    "arc",
    "nnm",
}


def test_registry_covers_every_rule() -> None:
    """Every documented rule, and every rule the package lists, is in the suite."""
    listed = set(getattr(K, "AGGREGATORS", ())) | set(getattr(K, "PRE_AGGREGATORS", ()))
    assert {r.name for r in RULES} == _ALL_KERNELS | listed
    for name in _ALL_KERNELS | set(UTILITIES):
        assert callable(getattr(K, name)), name
