"""One conformance suite, parametrized over every aggregator and pre-aggregator.

Each registered rule is checked for the contract every kernel shares (docs/kernels.md):
output shape/dtype/device, float16/bfloat16 computed in float32 and cast back, inputs never
modified, global random state untouched, determinism, permutation invariance (aggregators) or
equivariance (pre-aggregators) where the rule is symmetric, robust rules ignoring weights,
``ValidationError`` (a ``ValueError``) naming the numbers for invalid n/f and bad inputs, and
the one non-finite-row policy (docs/kernels.md): k rows holding NaN or ±inf are dropped and
count against f — the result is the rule on the n − k finite rows with f − k, bit for bit —
and k > f (rules with f) or k = n (every rule) raises ``ValidationError`` naming the rule and
the counts.

It also checks the selection log (``recording_selection``): every rule that computes its
result from a subset of whole rows notes that subset, once per call, without changing a bit
of the result, and the result is exactly what the noted rows give (Krum's row itself, the
mean of Multi-Krum's rows, ...); the strategies report the complement as ``excluded``, mapped
back to the input rows through non-renumbering pre-aggregators.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from velocity import kernels as K
from velocity import strategies as S
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
    policy: bool = True  # follows the non-finite-row policy (all but mean's "propagate")
    per_row: tuple[str, ...] = ()  # settings with one value per row (qfedavg's losses)

    @property
    def f(self) -> int | None:
        """The Byzantine budget the rule is called with (None for rules without f)."""
        f = self.params().get("f")
        return None if f is None else int(f)

    @property
    def fn(self) -> Callable[..., Any]:
        return getattr(K, self.name)

    def __call__(self, x: torch.Tensor, **extra: Any) -> Any:
        return self.fn(x, **{**self.params(), **extra})

    def rows_of(self, idx: torch.Tensor | list[int]) -> dict[str, Any]:
        """The per-row settings restricted (or permuted) to the rows ``idx``."""
        settings = self.params()
        index = torch.as_tensor(idx, dtype=torch.long)
        return {name: settings[name][index] for name in self.per_row}


def _gen() -> dict[str, Any]:
    return {"bucket_size": 3, "generator": torch.Generator().manual_seed(1234)}


def _f(f: int, **more: Any) -> Callable[[], dict[str, Any]]:
    return lambda: {"f": f, **more}


def _losses(q: float, lipschitz: float = 10.0) -> Callable[[], dict[str, Any]]:
    """qfedavg's settings: N per-row losses (distinct, positive), q and L."""
    losses = torch.linspace(0.3, 2.9, N, dtype=torch.float64).flip(0)
    return lambda: {"losses": losses.clone(), "q": q, "lipschitz": lipschitz}


RULES: list[Rule] = [
    Rule("mean", "mean", uses_weights=True),
    Rule(
        "mean-propagate",
        "mean",
        lambda: {"nonfinite": "propagate"},
        uses_weights=True,
        policy=False,
    ),
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
    Rule("qfedavg", "qfedavg", _losses(1.5), per_row=("losses",)),
    Rule("qfedavg-q0", "qfedavg", _losses(0.0), per_row=("losses",)),
    Rule("qfedavg-q05", "qfedavg", _losses(0.5, lipschitz=0.1), per_row=("losses",)),
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
    out, out_perm = rule(x, weights=w), rule(x[perm], weights=w[perm], **rule.rows_of(perm))
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
    ("qfedavg", {"losses": torch.ones(N), "q": -1.0, "lipschitz": 1.0}),
    ("qfedavg", {"losses": torch.ones(N), "q": math.nan, "lipschitz": 1.0}),
    ("qfedavg", {"losses": torch.ones(N - 1), "q": 1.0, "lipschitz": 1.0}),
    ("qfedavg", {"losses": torch.ones(N, 1), "q": 1.0, "lipschitz": 1.0}),
    ("qfedavg", {"losses": -torch.ones(N), "q": 1.0, "lipschitz": 1.0}),
    ("qfedavg", {"losses": torch.full((N,), math.nan), "q": 1.0, "lipschitz": 1.0}),
    ("qfedavg", {"losses": torch.full((N,), math.inf), "q": 1.0, "lipschitz": 1.0}),
    ("qfedavg", {"losses": torch.ones(N, dtype=torch.bool), "q": 1.0, "lipschitz": 1.0}),
    ("qfedavg", {"losses": [1.0] * N, "q": 1.0, "lipschitz": 1.0}),
    ("qfedavg", {"losses": torch.zeros(N), "q": 0.5, "lipschitz": 1.0}),
    ("qfedavg", {"losses": torch.zeros(N), "q": 2.0, "lipschitz": 1.0}),
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
    "qfedavg",
}


def test_registry_covers_every_rule() -> None:
    """Every documented rule, and every rule the package lists, is in the suite."""
    listed = set(getattr(K, "AGGREGATORS", ())) | set(getattr(K, "PRE_AGGREGATORS", ()))
    assert {r.name for r in RULES} == _ALL_KERNELS | listed
    for name in _ALL_KERNELS | set(UTILITIES):
        assert callable(getattr(K, name)), name


def test_policy_covers_every_rule() -> None:
    """Every registered aggregator and pre-aggregator is checked against the non-finite-row
    policy, and every rule with a Byzantine budget is checked with k <= f and k > f."""
    listed = set(K.AGGREGATORS) | set(K.PRE_AGGREGATORS)
    assert {r.name for r in POLICY_RULES} == listed
    with_f = {r.name for r in POLICY_RULES if r.f is not None}
    assert with_f == {n for n in listed if "f" in inspect.signature(getattr(K, n)).parameters}
    assert all(r.f is not None and r.f >= 1 for r in POLICY_RULES if r.name in with_f)


# ---------------------------------------------------------------- the non-finite-row policy

POLICY_RULES = [r for r in RULES if r.policy]
BAD_VALUES = (math.nan, math.inf, -math.inf)
TRUSTED = 3  # MoNNA's reference row (trusted, so never made non-finite here)

# (rows, kind per row, whole row or one entry per row): NaN, +inf and -inf mixed
BAD_GRID: list[tuple[tuple[int, ...], tuple[float, ...], bool]] = [
    ((5,), (math.nan,), True),
    ((0,), (math.inf,), False),
    ((1, 9), (-math.inf, math.nan), False),
    ((0, 10), (math.inf, -math.inf), True),
    ((2, 4, 6), (math.nan, math.inf, -math.inf), False),
    ((0, 1, 2, 4, 5, 6, 7, 8, 9, 10), (math.nan, math.inf, -math.inf) * 3 + (math.nan,), True),
]


def _poison(
    x: torch.Tensor, rows: tuple[int, ...], kinds: tuple[float, ...], whole: bool
) -> torch.Tensor:
    """``x`` with ``rows`` made non-finite (kinds cycled), whole or in one entry each."""
    bad = x.clone()
    for j, i in enumerate(rows):
        value = kinds[j % len(kinds)]
        if whole:
            bad[i] = value
        else:
            bad[i, (i + j) % bad.shape[1]] = value  # one entry is enough
    return bad


def _settings_on_finite(rule: Rule, keep: list[int]) -> dict[str, Any]:
    """The rule's settings for the finite rows ``keep``: f − k, the trusted row renumbered."""
    settings = rule.params()
    k = N - len(keep)
    if rule.f is not None:
        settings["f"] = rule.f - k
    if "reference_index" in settings:
        settings["reference_index"] = keep.index(settings["reference_index"])
    settings.update(rule.rows_of(keep))
    return settings


def _assert_same(got: Any, expected: Any) -> None:
    if isinstance(expected, tuple):
        assert torch.equal(got[0], expected[0])
        assert (got[1] is None) == (expected[1] is None)
        if expected[1] is not None:
            assert torch.equal(got[1], expected[1])
    else:
        assert torch.equal(got, expected)


def _check_policy(rule: Rule, x: torch.Tensor, w: torch.Tensor, rows: tuple[int, ...]) -> None:
    """The policy for one input whose ``rows`` are non-finite (each in some entry)."""
    k = len(rows)
    keep = [i for i in range(N) if i not in rows]
    if k == N or (rule.f is not None and k > rule.f):
        with pytest.raises(ValidationError) as info:
            rule(x, weights=w)
        message = str(info.value)
        assert message.startswith(f"{rule.name}: "), message
        _numbers_in(message, (N,) if k == N else (k, rule.f or 0))
        return
    got = rule(x, weights=w)
    idx = torch.tensor(keep)
    expected = rule.fn(x[idx], weights=w[idx], **_settings_on_finite(rule, keep))
    _assert_same(got, expected)
    assert bool(torch.isfinite(_rows_out(got).float()).all())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("case", range(len(BAD_GRID)))
@pytest.mark.parametrize("rule", POLICY_RULES, ids=lambda r: r.id)
def test_nonfinite_rows_are_dropped_and_counted(rule: Rule, case: int, dtype: torch.dtype) -> None:
    """k <= f (or k < n): the rule on the finite rows with f − k, bit for bit, and finite;
    k > f (or k = n): ValidationError naming the rule and the counts."""
    rows, kinds, whole = BAD_GRID[case]
    x, w = _data(dtype, seed=case)
    _check_policy(rule, _poison(x, rows, kinds, whole), w, rows)


@pytest.mark.parametrize("rule", POLICY_RULES, ids=lambda r: r.id)
def test_every_row_nonfinite_raises(rule: Rule) -> None:
    for value in BAD_VALUES:
        x = torch.full((N, D), value, dtype=torch.float64)
        with pytest.raises(ValidationError, match=rf"^{rule.name}: all {N} rows are non-finite"):
            rule(x)


@pytest.mark.parametrize("rule", [r for r in POLICY_RULES if r.f is not None], ids=lambda r: r.id)
def test_one_more_nonfinite_row_than_f_raises(rule: Rule) -> None:
    assert rule.f is not None
    rows = tuple(i for i in range(N) if i != TRUSTED)[: rule.f + 1]
    x, w = _data()
    x = _poison(x, rows, (math.inf, -math.inf, math.nan), False)
    with pytest.raises(ValidationError) as info:
        rule(x, weights=w)
    assert str(info.value) == f"{rule.name}: {rule.f + 1} non-finite rows exceed f={rule.f} (n={N})"


@st.composite
def _poisoned(draw: st.DrawFn) -> tuple[int, tuple[int, ...], tuple[float, ...], bool]:
    rows = draw(
        st.lists(st.sampled_from([i for i in range(N) if i != TRUSTED]), unique=True, max_size=N)
    )
    kinds = tuple(draw(st.sampled_from(BAD_VALUES)) for _ in rows)
    return draw(st.integers(0, 2**16)), tuple(sorted(rows)), kinds, draw(st.booleans())


@pytest.mark.parametrize("rule", POLICY_RULES, ids=lambda r: r.id)
@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_poisoned(), dtype=st.sampled_from([torch.float64, torch.float32]))
def test_nonfinite_input_never_passes_as_a_finite_answer(
    rule: Rule, case: tuple[int, tuple[int, ...], tuple[float, ...], bool], dtype: torch.dtype
) -> None:
    """Any set of non-finite rows, any mix of NaN/±inf, whole rows or single entries: the
    result is the rule on the finite rows (bit for bit) or a ValidationError, never a finite
    vector computed from non-finite input."""
    seed, rows, kinds, whole = case
    x, w = _data(dtype, seed=seed)
    _check_policy(rule, _poison(x, rows, kinds, whole), w, rows)


_COORDINATEWISE = {"median", "trimmed_mean", "meamed"}


@pytest.mark.parametrize(
    "rule", [r for r in POLICY_RULES if r.name in _COORDINATEWISE], ids=lambda r: r.id
)
def test_policy_on_the_torch_sort_path(rule: Rule, monkeypatch: pytest.MonkeyPatch) -> None:
    """The coordinate-wise engine's torch-sorted path (CUDA's) detects non-finite input too."""
    from velocity.kernels import _coordinate

    monkeypatch.setattr(_coordinate, "_numpy_sortable", lambda x: False)
    for case, (rows, kinds, whole) in enumerate(BAD_GRID):
        x, w = _data(torch.float32, seed=case)
        _check_policy(rule, _poison(x, rows, kinds, whole), w, rows)


def test_mean_propagate_keeps_nonfinite_rows() -> None:
    """The one documented exception: ``mean(nonfinite="propagate")`` keeps them."""
    x, _ = _data()
    x[4, 2] = math.nan
    assert bool(torch.isnan(K.mean(x, nonfinite="propagate")[2]))


def test_finite_rows_are_not_copied() -> None:
    """All rows finite (the common case): the check makes no copy of the stack."""
    from velocity.kernels._checks import drop_nonfinite

    x, _ = _data()
    kept = drop_nonfinite(x, "test", 2)
    assert kept.x is x
    assert kept.keep is None
    assert kept.f == 2
    out, _ = K.clip(x, threshold=1e9, inplace=True)
    assert out.data_ptr() == x.data_ptr()  # the same storage, rewritten in place


def test_reported_examples() -> None:
    """The cases that leaked before: Multi-Krum f=1 with 2 of 7 rows inf returned inf; the
    median ranked NaN as the largest value."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 4, generator=g, dtype=torch.float64)
    x[[2, 5]] = math.inf
    with pytest.raises(ValidationError, match=r"^multi_krum: 2 non-finite rows exceed f=1"):
        K.multi_krum(x, f=1)
    keep = torch.tensor([0, 1, 3, 4, 6])
    assert torch.equal(K.multi_krum(x, f=2), K.multi_krum(x[keep], f=0))
    y = torch.tensor([[1.0], [2.0], [math.nan], [3.0]])
    assert K.median(y).tolist() == [2.0]


# ---------------------------------------------------------------- the strategies pass it through


def _bad_rows(rows: tuple[int, ...], n: int = 12, seed: int = 5) -> torch.Tensor:
    x = torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return _poison(x, rows, BAD_VALUES, True)


@pytest.mark.parametrize(
    ("strategy", "kernel"),
    [
        (S.FedAvg(), lambda x, w, k: K.mean(x, w)),
        (S.FedMedian(), lambda x, w, k: K.median(x)),
        (S.TrimmedMean(k=3), lambda x, w, k: K.trimmed_mean(x, f=3 - k)),
        (S.Krum(f=3), lambda x, w, k: K.krum(x, f=3 - k)),
        (S.MultiKrum(f=3), lambda x, w, k: K.multi_krum(x, f=3 - k)),
        (S.GeometricMedian(), lambda x, w, k: K.geometric_median(x, w)),
        (S.CAF(f=3), lambda x, w, k: K.caf(x, f=3 - k)),
    ],
    ids=lambda v: type(v).__name__,
)
def test_strategies_report_the_dropped_rows(strategy: Any, kernel: Any) -> None:
    rows = (2, 7)
    x, w = _bad_rows(rows), torch.arange(1.0, 13.0, dtype=torch.float64)
    keep = torch.tensor([i for i in range(12) if i not in rows])
    result = strategy.aggregate(x, w)
    assert result.metrics["dropped_nonfinite"] == [2, 7]
    assert torch.equal(result.update, kernel(x[keep], w[keep], 2))


def test_pipeline_counts_rows_dropped_upstream_against_f() -> None:
    """Rows a pre-aggregator dropped are among the f faulty clients of every later stage, so a
    no-op pre-aggregator changes nothing and the budget is enforced across the pipeline."""
    x = _bad_rows((0, 5))
    keep = torch.tensor([i for i in range(12) if i not in (0, 5)])
    cases: list[tuple[Any, Callable[[torch.Tensor], torch.Tensor]]] = [
        (S.Krum(f=3), lambda r: K.krum(r, f=1)),
        (S.TrimmedMean(k=2), lambda r: K.trimmed_mean(r, f=0)),
        (S.MultiKrum(f=2, m=4), lambda r: K.multi_krum(r, f=0, m=4)),
    ]
    for rule, kernel in cases:
        bare = rule.aggregate(x)
        piped = S.Pipeline(S.Clip(threshold=1e30), rule).aggregate(x)
        assert torch.equal(piped.update, bare.update)
        assert torch.equal(piped.update, kernel(x[keep]))
        assert piped.metrics["dropped_nonfinite"] == bare.metrics["dropped_nonfinite"] == [0, 5]
    # NNM (f=3) drops 2 rows and runs with f=1; the Krum after it runs with f=3 - 2 = 1
    piped = S.Pipeline(S.NNM(f=3), S.Krum(f=3)).aggregate(x)
    mixed, _ = K.nnm(x[keep], f=1)
    assert torch.equal(piped.update, K.krum(mixed, f=1))
    assert piped.metrics["dropped_nonfinite"] == [0, 5]
    with pytest.raises(ValidationError, match=r"^Krum: 2 non-finite rows left out .* exceed f=1"):
        S.Pipeline(S.Clip(threshold=1e30), S.Krum(f=1)).aggregate(x)
    with pytest.raises(ValidationError, match=r"^nnm: 2 non-finite rows exceed f=1"):
        S.Pipeline(S.NNM(f=1), S.Krum(f=3)).aggregate(x)


def test_pipeline_reports_input_rows_through_pre_aggregators() -> None:
    """Drops at a later stage are named by their input rows; after Bucketing they are not."""
    x = _bad_rows((3, 8))
    result = S.Pipeline(S.Clip(threshold=1e30), S.ARC(f=3), S.Krum(f=3)).aggregate(x)
    assert result.metrics["dropped_nonfinite"] == [3, 8]
    assert result.metrics["n_aggregated"] == 10
    g = torch.Generator().manual_seed(0)
    result = S.Pipeline(S.Bucketing(bucket_size=2), S.Krum(f=2)).aggregate(x, generator=g)
    assert result.metrics["dropped_nonfinite"] == [3, 8]
    assert result.metrics["n_aggregated"] == 5
    assert bool(torch.isfinite(result.update).all())


def test_qfedavg_refuses_a_missing_or_bad_lipschitz_as_configuration() -> None:
    """``lipschitz=None`` is the strategy's "use 1/lr"; reaching the kernel it is a setting
    nobody filled in (ConfigurationError, not bad data)."""
    from velocity.errors import ConfigurationError

    x, _ = _data()
    for bad in (None, 0.0, -1.0, math.inf, "1", True):
        with pytest.raises(ConfigurationError, match="lipschitz"):
            K.qfedavg(x, torch.ones(N), q=1.0, lipschitz=bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the selection log

# The kernels whose result is computed from a subset of whole rows (docs: AggregationResult).
SELECTING = {"krum", "multi_krum", "bulyan", "mda", "smea", "monna", "cge", "caf"}
AGGREGATOR_RULES = [r for r in RULES if not r.pre]
WIDE = 3 * N  # d > n: the affine hull of fewer than n rows is a proper subspace


def _wide(seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, WIDE, generator=g, dtype=torch.float64)
    x[[1, 6]] += 8.0  # two outliers, so the robust rules do leave rows out
    return x.to(dtype)


def _noted(rule: Rule, x: torch.Tensor, **extra: Any) -> tuple[Any, list[Any]]:
    from velocity.kernels._checks import recording_selection

    with recording_selection() as log:
        out = rule(x, **extra)
    return out, list(log)


def _closest_to_median_mean(rows: torch.Tensor, beta: int) -> torch.Tensor:
    """Per coordinate, the mean of the ``beta`` values closest to the median (brute force)."""
    import kernels_reference as ref

    out = []
    for column in rows.T.tolist():
        med = ref._scalar_median(column)
        closest = sorted(column, key=lambda v, med=med: abs(v - med))[:beta]
        out.append(math.fsum(closest) / beta)
    return torch.tensor(out, dtype=torch.float64)


def test_selection_covers_every_selecting_rule() -> None:
    """Exactly the row-selecting kernels note a selection, once per call; the others never."""
    x = _wide()
    noting = set()
    for rule in AGGREGATOR_RULES:
        _, log = _noted(rule, x)
        assert len(log) in (0, 1), rule.id
        if log:
            noting.add(rule.name)
            assert log[0].n == N
            assert list(log[0].kept) == sorted(set(log[0].kept))
    assert noting == SELECTING
    for rule in [r for r in RULES if r.pre]:
        assert _noted(rule, x)[1] == [], rule.id


@pytest.mark.parametrize("rule", AGGREGATOR_RULES, ids=lambda r: r.id)
def test_noting_changes_nothing(rule: Rule) -> None:
    """Recording the selection reads the chosen indices only: bit-identical results."""
    for dtype in (torch.float64, torch.float32):
        x = _wide(3, dtype)
        alone = rule(x)
        noted, _ = _noted(rule, x)
        assert torch.equal(alone, noted)


SELECTING_RULES = [r for r in AGGREGATOR_RULES if r.name in SELECTING]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("rule", SELECTING_RULES, ids=lambda r: r.id)
def test_result_is_what_the_noted_rows_give(rule: Rule, seed: int) -> None:
    """The result is a combination of the noted rows only, and, rule by rule, exactly what
    they give: Krum's row itself, the plain mean of the averaged subset, Bulyan's trimmed
    coordinates of its selection. A combination of rows lies in their affine hull (a proper
    subspace, since d > n); Bulyan's coordinate-wise step stays in their bounding box."""
    x = _wide(seed)
    out, log = _noted(rule, x)
    kept = list(log[0].kept)
    rows = x[kept]
    f = rule.f or 0
    if rule.name == "bulyan":
        assert bool((out >= rows.min(dim=0).values).all())
        assert bool((out <= rows.max(dim=0).values).all())
    else:  # out - rows[0] in the span of rows[1:] - rows[0]
        basis = (rows[1:] - rows[0]).T
        target = out - rows[0]
        if basis.shape[1]:
            coef = torch.linalg.lstsq(basis, target[:, None]).solution
            target = target - (basis @ coef)[:, 0]
        assert float(target.norm()) <= 1e-9 * (1.0 + float(x.abs().max())), rule.id
    if rule.name == "krum":
        assert len(kept) == 1
        assert torch.equal(out, x[kept[0]])
    elif rule.name == "bulyan":
        assert len(kept) == N - 2 * f
        torch.testing.assert_close(
            out, _closest_to_median_mean(rows, N - 4 * f), rtol=1e-12, atol=1e-12
        )
    elif rule.name == "caf":
        assert len(kept) >= N - 2 * f  # the filter zeroes one weight per step at most
    else:
        m = rule.params().get("m") or N - f
        assert len(kept) == m
        torch.testing.assert_close(out, rows.mean(dim=0), rtol=1e-12, atol=1e-12)


def test_a_wrong_index_list_would_be_caught() -> None:
    """The check above fails for a selection off by one row (its power, shown once)."""
    x = _wide(1)
    out, log = _noted(next(r for r in RULES if r.id == "multi_krum"), x)
    kept = list(log[0].kept)
    left_out = next(i for i in range(N) if i not in kept)
    wrong = [*kept[1:], left_out]
    assert not torch.allclose(out, x[wrong].mean(dim=0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rule", SELECTING_RULES, ids=lambda r: r.id)
def test_noted_rows_are_input_rows_when_nonfinite_rows_are_dropped(rule: Rule) -> None:
    """With non-finite rows dropped first, the noted rows are named in the caller's rows and
    never include a dropped one: the same rows as the rule on the finite rows."""
    bad = (0, 9)
    x = _poison(_wide(2), bad, (math.nan, math.inf), False)
    _, log = _noted(rule, x)
    keep = [i for i in range(N) if i not in bad]
    _, finite_log = _noted(
        Rule(rule.id, rule.name, lambda: _settings_on_finite(rule, keep)), x[torch.tensor(keep)]
    )
    assert not set(log[0].kept) & set(bad)
    assert list(log[0].kept) == [keep[i] for i in finite_log[0].kept]


# ---------------------------------------------------------------- the strategies report it

# (strategy, rows it uses from N rows one of which is non-finite: n' = N - 1, f' = f - 1)
STRATEGY_SELECTING: list[tuple[Any, int]] = [
    (S.Krum(f=2), 1),
    (S.Krum(f=2, neighbors="n-f-1"), 1),
    (S.MultiKrum(f=2), N - 2),
    (S.MultiKrum(f=2, m=3), 3),
    (S.Bulyan(f=2), (N - 1) - 2 * 1),
    (S.MDA(f=2), N - 2),
    (S.SMEA(f=2), N - 2),
    (S.MoNNA(f=2, reference_index=3), N - 2),
    (S.CGE(f=2), N - 2),
    (S.CAF(f=2), -1),  # data-dependent
]


def test_every_selecting_strategy_is_listed() -> None:
    """The strategies reporting ``excluded`` are exactly the table's; the others report None."""
    x = _wide()
    examples = {type(s): s for s, _ in STRATEGY_SELECTING}
    others = [
        S.FedAvg(),
        S.FedProx(),
        S.FedMedian(),
        S.TrimmedMean(k=2),
        S.MeaMed(f=2),
        S.GeometricMedian(),
        S.CenteredClipping(c_tau=1.0),
    ]
    covered = set(examples) | {type(s) for s in others} | {S.QFedAvg}
    assert covered == set(S.ALL_STRATEGIES)
    for strategy in [*examples.values(), *others]:
        reported = strategy.aggregate(x).metrics["excluded"]
        assert (reported is not None) == (type(strategy) in examples), strategy
    qfedavg = S.QFedAvg(q=1.0, lipschitz=1.0).aggregate(x, losses=torch.ones(N))
    assert qfedavg.metrics["excluded"] is None


@pytest.mark.parametrize(("strategy", "used"), STRATEGY_SELECTING, ids=lambda v: repr(v)[:30])
def test_strategies_report_excluded_rows(strategy: Any, used: int) -> None:
    """``excluded`` is the complement of the rows used, the non-finite ones apart (those are
    in ``dropped_nonfinite`` only), in the caller's numbering, through Clip and ARC too."""
    bad = (4,)
    x = _poison(_wide(5), bad, (math.nan,), True)
    result = strategy.aggregate(x)
    excluded = result.metrics["excluded"]
    assert result.metrics["dropped_nonfinite"] == [4]
    assert 4 not in excluded
    assert excluded == sorted(excluded)
    used_rows = [i for i in range(N) if i not in excluded and i not in bad]
    if used > 0:
        assert len(used_rows) == used
    # the update is computed from the used rows only: recompute it from them
    if isinstance(strategy, S.Krum):
        assert torch.equal(result.update, x[used_rows[0]])
    elif not isinstance(strategy, S.Bulyan | S.CAF):
        torch.testing.assert_close(result.update, x[used_rows].mean(dim=0), rtol=1e-12, atol=1e-12)
    # row-wise pre-aggregators keep the numbering; a no-op Clip changes nothing
    piped = S.Pipeline(S.Clip(threshold=1e30), strategy).aggregate(x)
    assert piped.metrics["excluded"] == excluded
    assert torch.equal(piped.update, result.update)


def test_excluded_maps_through_arc_and_is_none_after_mixing() -> None:
    x = _wide(6) * 3
    arced, _ = K.arc(x, f=2)
    picked = K.krum(arced, f=2)
    row = next(i for i in range(N) if torch.equal(arced[i], picked))
    result = S.Pipeline(S.ARC(f=2), S.Krum(f=2)).aggregate(x)
    assert result.metrics["excluded"] == [i for i in range(N) if i != row]
    g = torch.Generator().manual_seed(0)
    assert S.Pipeline(S.NNM(f=2), S.Krum(f=2)).aggregate(x).metrics["excluded"] is None
    bucketed = S.Pipeline(S.Bucketing(bucket_size=2), S.Krum(f=1)).aggregate(x, generator=g)
    assert bucketed.metrics["excluded"] is None
    assert S.FedMedian().aggregate(x).metrics["excluded"] is None


def test_aggregate_stage_names_the_excluded_clients() -> None:
    from velocity.types import ParamSpec, StageContext

    x = _wide(7).float()
    ids = [f"c{i}" for i in range(N)]
    spec = ParamSpec.from_sizes({"w": WIDE})
    ctx = StageContext(0, 1, 0, spec, torch.zeros(WIDE))
    batch = S.RoundBatch(rows=x, num_samples=[1] * N, client_ids=ids)
    _, _, metrics = S.AggregateStage(S.MultiKrum(f=2, m=4)).apply(batch, {}, ctx)
    assert metrics["excluded_clients"] == [ids[i] for i in metrics["excluded"]]
    assert len(metrics["excluded_clients"]) == N - 4
    _, _, metrics = S.AggregateStage(S.FedAvg()).apply(batch, {}, ctx)
    assert metrics["excluded"] is None
    assert metrics["excluded_clients"] is None
