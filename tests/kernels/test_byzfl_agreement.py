"""Agreement with ByzFL (EPFL's reference library) where the definitions match.

ByzFL's package ``__init__`` imports its benchmark code, which imports torchvision (not a
dependency here); a fixture puts permissive stub modules in ``sys.modules`` for the import and
removes them (and ByzFL) again afterwards.

Compared (numpy float64 and torch float32 inputs, within 1e-5 of the largest |value|):
Average/mean, Median, TrMean, Meamed, Krum and MultiKrum (``neighbors="n-f-1"``, m = n − f:
ByzFL scores with the n − f − 1 nearest other rows), MDA, MoNNA (``reference_index=idx``),
CenteredClipping (ByzFL's ``m=None`` is a zero start; L → M, tau → c_tau), GeometricMedian
(ByzFL ``nu`` → eps, ``T`` → max_iter, zero start, no early stop: tol=0), NNM, Clipping, ARC
and Bucketing (same permutation: ByzFL draws it from the global torch generator, ours from an
explicit one seeded identically; for numpy inputs ByzFL uses ``np.random``, so those are
compared with bucket_size=1 after sorting the rows).

Not compared, because the definitions differ: CAF and SMEA (ByzFL estimates the top
eigenvalue with one step of a randomly started power iteration, ours are exact), and CGE
(no ByzFL counterpart).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from velocity import kernels as K

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("byzfl") is None, reason="byzfl is not installed"
)

N, D = 11, 20
RTOL = 1e-5


class _Anything:
    """Absorbs any call or attribute access (``transforms.Compose([...])`` at import time)."""

    def __call__(self, *args: object, **kwargs: object) -> _Anything:
        return self

    def __getattr__(self, name: str) -> _Anything:
        if name.startswith("__"):
            raise AttributeError(name)
        return self


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything()


_STUBS = ("torchvision", "torchvision.datasets", "torchvision.transforms")


@pytest.fixture(scope="module")
def byzfl() -> Iterator[Any]:
    before = set(sys.modules)
    saved = {name: sys.modules[name] for name in _STUBS if name in sys.modules}
    for name in _STUBS:
        if name not in saved:
            module = _StubModule(name)
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, module)
    try:
        module = importlib.import_module("byzfl")
    except Exception as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"byzfl cannot be imported: {exc!r}")
    try:
        yield module
    finally:
        for name in set(sys.modules) - before:
            if name.startswith(("byzfl", "torchvision")):
                del sys.modules[name]
        sys.modules.update(saved)


@pytest.fixture(autouse=True)
def _keep_global_rng() -> Iterator[None]:
    """ByzFL draws from the global generators: give them back as they were."""
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()  # noqa: NPY002 (the global state is the point)
    yield
    torch.random.set_rng_state(torch_state)
    np.random.set_state(np_state)  # noqa: NPY002


def _inputs(kind: str, seed: int = 0) -> tuple[Any, torch.Tensor]:
    """(what ByzFL gets, what our kernel gets): numpy float64 or torch float32, same values."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)) * 3.0 + rng.normal(size=D)
    if kind == "numpy":
        return x.copy(), torch.from_numpy(x.copy())
    t = torch.tensor(x, dtype=torch.float32)
    return t.clone(), t.clone()


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().double().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _agree(ours: Any, theirs: Any, scale_of: Any) -> None:
    scale = float(np.abs(_as_numpy(scale_of)).max())
    err = float(np.abs(_as_numpy(ours) - _as_numpy(theirs)).max())
    assert err <= RTOL * scale, f"max difference {err:.3e} > {RTOL * scale:.3e}"


Pair = tuple[Callable[[Any], Any], Callable[[torch.Tensor], Any]]


def _pairs(bz: Any, f: int) -> dict[str, Pair]:
    """name -> (ByzFL rule on its input, our kernel on ours), for f Byzantine rows."""
    agg = bz.aggregators
    return {
        "mean": (agg.Average(), K.mean),
        "median": (agg.Median(), K.median),
        "trimmed_mean": (agg.TrMean(f=f), lambda x: K.trimmed_mean(x, f=f)),
        "meamed": (agg.Meamed(f=f), lambda x: K.meamed(x, f=f)),
        "krum": (agg.Krum(f=f), lambda x: K.krum(x, f=f, neighbors="n-f-1")),
        "multi_krum": (
            agg.MultiKrum(f=f),
            lambda x: K.multi_krum(x, f=f, m=N - f, neighbors="n-f-1"),
        ),
        "mda": (agg.MDA(f=f), lambda x: K.mda(x, f=f)),
        "monna": (agg.MoNNA(f=f, idx=3), lambda x: K.monna(x, f=f, reference_index=3)),
        "centered_clipping": (
            agg.CenteredClipping(m=None, L=5, tau=2.5),
            lambda x: K.centered_clipping(x, c_tau=2.5, M=5, init="zero"),
        ),
        "geometric_median": (
            agg.GeometricMedian(nu=0.1, T=8),
            lambda x: K.geometric_median(x, eps=0.1, max_iter=8, init="zero", tol=0.0),
        ),
        "nnm": (bz.NNM(f=f), lambda x: K.nnm(x, f=f)[0]),
        "clip": (bz.Clipping(c=4.0), lambda x: K.clip(x, threshold=4.0)[0]),
        "arc": (bz.ARC(f=f), lambda x: K.arc(x, f=f)[0]),
    }


NAMES = [
    "mean",
    "median",
    "trimmed_mean",
    "meamed",
    "krum",
    "multi_krum",
    "mda",
    "monna",
    "centered_clipping",
    "geometric_median",
    "nnm",
    "clip",
    "arc",
]


@pytest.mark.parametrize("f", [0, 2, 4])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("name", NAMES)
def test_agrees_with_byzfl(byzfl: Any, name: str, kind: str, f: int) -> None:
    for seed in range(3):
        # a fresh ByzFL object each time: CenteredClipping keeps its last output as next start
        theirs_rule, ours_rule = _pairs(byzfl, f)[name]
        theirs_in, ours_in = _inputs(kind, seed)
        # ByzFL's Clipping and ARC write into their input: give it its own copy
        theirs = theirs_rule(theirs_in.copy() if kind == "numpy" else theirs_in.clone())
        ours = ours_rule(ours_in)
        _agree(ours, theirs, ours_in)


@pytest.mark.parametrize("bucket_size", [1, 2, 3, 4, 11])
def test_bucketing_agrees_with_byzfl_for_the_same_permutation(byzfl: Any, bucket_size: int) -> None:
    theirs_in, ours_in = _inputs("torch", 5)
    for seed in (0, 1, 2):
        torch.manual_seed(seed)  # ByzFL: torch.randperm on the global CPU generator
        theirs = byzfl.Bucketing(s=bucket_size)(theirs_in.clone())
        gen = torch.Generator().manual_seed(seed)
        ours, _ = K.bucketing(ours_in, bucket_size=bucket_size, generator=gen)
        assert ours.shape == theirs.shape
        _agree(ours, theirs, ours_in)


def test_bucketing_numpy_size_one_is_the_same_multiset(byzfl: Any) -> None:
    theirs_in, ours_in = _inputs("numpy", 6)
    np.random.seed(0)  # noqa: NPY002 (ByzFL draws from it)
    theirs = byzfl.Bucketing(s=1)(theirs_in)
    ours, _ = K.bucketing(ours_in, bucket_size=1, generator=torch.Generator().manual_seed(0))
    order_t = np.lexsort(theirs.T[::-1])
    order_o = np.lexsort(ours.numpy().T[::-1])
    np.testing.assert_array_equal(ours.numpy()[order_o], theirs[order_t])
