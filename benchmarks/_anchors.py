"""Import ByzFL and ByzPy safely and map every VelocityFL rule to their callables.

Used by ``benchmarks/aggregators.py``; nothing in ``src/`` imports this.

Installing the anchors: see ``benchmarks/install_anchors.sh`` (``--no-deps``, so the CPU torch
of the environment is never replaced).

Importing them:

* ``import byzfl`` runs ``byzfl/__init__.py``, which imports ``byzfl.benchmark.train``, which does
  ``from torchvision import datasets, transforms`` and builds a few ``transforms.Compose(...)``
  objects at import time. The aggregators never touch torchvision, and no torchvision wheel works
  with this CPU torch, so when torchvision cannot be imported we register an empty stand-in module
  (every attribute is an inert callable) *before* importing byzfl, and say so in the output.
* ByzPy imports cleanly; its aggregators always use its torch backend (``get_backend()`` ignores
  ``set_backend``), and a few of them (MDA, SMEA, CAF, clipping, ARC) convert to NumPy internally.

Calling them: ByzFL rules are callables taking one ``(n, d)`` array or tensor. ByzPy aggregators
are objects with ``.aggregate(list_of_vectors)`` and pre-aggregators ``.pre_aggregate(list)``;
their parallel "subtask" path (an actor pool driven by asyncio, data copied into POSIX shared
memory) is optional here (``pool_workers``), the plain method is the default.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import math
import os
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = [
    "AnchorCandidate",
    "AnchorLibraries",
    "anchors_for",
    "as_tensor",
    "load_anchors",
]

# ---------------------------------------------------------------------------------------------
# importing
# ---------------------------------------------------------------------------------------------


class _Inert:
    """Stands for any torchvision object: callable, any attribute, does nothing."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        del args, kwargs

    def __call__(self, *args: object, **kwargs: object) -> _Inert:
        return _Inert()

    def __getattr__(self, name: str) -> _Inert:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert()


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert()


def _register_torchvision_standin() -> str | None:
    """Make ``import torchvision`` succeed; return a message when a stand-in was registered."""
    if "torchvision" in sys.modules and not isinstance(sys.modules["torchvision"], _StandInModule):
        return None
    reason = "not installed"
    if importlib.util.find_spec("torchvision") is not None:
        try:
            importlib.import_module("torchvision")
            return None
        except Exception as exc:  # an incompatible wheel: fall through to the stand-in
            reason = f"installed but not importable ({type(exc).__name__})"
    for name in ("torchvision", "torchvision.datasets", "torchvision.transforms"):
        module = _StandInModule(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=True)
        module.__path__ = []
        sys.modules[name] = module
    tv = sys.modules["torchvision"]
    tv.datasets = sys.modules["torchvision.datasets"]  # type: ignore[attr-defined]
    tv.transforms = sys.modules["torchvision.transforms"]  # type: ignore[attr-defined]
    return (
        f"torchvision {reason}: registered an empty stand-in module 'torchvision' before "
        "importing byzfl (byzfl/__init__ imports byzfl.benchmark.train, which imports "
        "torchvision; the aggregators never use it)"
    )


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class AnchorLibraries:
    """What could be imported: ``byzfl`` is the package, ``byzpy`` a name -> class map."""

    byzfl: Any | None = None
    byzpy: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    standin_message: str | None = None
    pool_workers: int = 0


_BYZPY_CLASSES = {
    "CoordinateWiseMedian": "byzpy.aggregators.coordinate_wise",
    "CoordinateWiseTrimmedMean": "byzpy.aggregators.coordinate_wise",
    "MeanOfMedians": "byzpy.aggregators.coordinate_wise",
    "GeometricMedian": "byzpy.aggregators.geometric_wise",
    "Krum": "byzpy.aggregators.geometric_wise",
    "MultiKrum": "byzpy.aggregators.geometric_wise",
    "MinimumDiameterAveraging": "byzpy.aggregators.geometric_wise",
    "MoNNA": "byzpy.aggregators.geometric_wise",
    "SMEA": "byzpy.aggregators.geometric_wise",
    "CenteredClipping": "byzpy.aggregators.norm_wise",
    "ComparativeGradientElimination": "byzpy.aggregators.norm_wise",
    "CAF": "byzpy.aggregators.norm_wise",
    "Bucketing": "byzpy.pre_aggregators",
    "NearestNeighborMixing": "byzpy.pre_aggregators",
    "Clipping": "byzpy.pre_aggregators",
    "ARC": "byzpy.pre_aggregators",
}


def load_anchors(*, enabled: bool = True, pool_workers: int = 0) -> AnchorLibraries:
    """Import whichever of byzfl / byzpy is importable; never raises."""
    libs = AnchorLibraries(pool_workers=max(0, pool_workers))
    if not enabled:
        return libs
    try:
        libs.standin_message = _register_torchvision_standin()
        libs.byzfl = importlib.import_module("byzfl")
        libs.versions["byzfl"] = _version("byzfl")
    except Exception as exc:
        libs.errors["byzfl"] = f"{type(exc).__name__}: {exc}"
    try:
        classes: dict[str, Any] = {}
        for name, module in _BYZPY_CLASSES.items():
            classes[name] = getattr(importlib.import_module(module), name)
        libs.byzpy = classes
        libs.versions["byzpy"] = _version("byzpy")
    except Exception as exc:
        libs.errors["byzpy"] = f"{type(exc).__name__}: {exc}"
    return libs


# ---------------------------------------------------------------------------------------------
# candidates
# ---------------------------------------------------------------------------------------------


@dataclass
class AnchorCandidate:
    """One way of running one anchor rule: a library, an input kind, a callable.

    ``prepare(x)`` builds the input from the ``(n, d)`` float32 CPU tensor ``x`` and is not
    timed; ``call(prepared)`` is timed. ``fresh_input`` means ``call`` modifies its input, so
    ``prepare`` runs (untimed) before every call. ``definition`` is ``None`` when the anchor
    computes the same function as ours, else why it differs. ``skip`` holds a reason not to run.
    """

    library: str
    input_kind: str
    description: str
    call: Callable[[Any], Any]
    prepare: Callable[[torch.Tensor], Any]
    est_bytes: int
    definition: str | None = None
    fresh_input: bool = False
    skip: str | None = None
    close: Callable[[], None] | None = None

    @property
    def label(self) -> str:
        return f"{self.library}[{self.input_kind}]"


def _np2d(x: torch.Tensor) -> np.ndarray:
    return x.numpy()


def _np2d_copy(x: torch.Tensor) -> np.ndarray:
    return x.numpy().copy()


def _t2d(x: torch.Tensor) -> torch.Tensor:
    return x


def _t2d_copy(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


def _np_list(x: torch.Tensor) -> list[np.ndarray]:
    return list(x.numpy())


def _t_list(x: torch.Tensor) -> list[torch.Tensor]:
    return list(x.unbind(0))


_PREPARE: dict[tuple[str, str, bool], Callable[[torch.Tensor], Any]] = {
    ("byzfl", "numpy", False): _np2d,
    ("byzfl", "numpy", True): _np2d_copy,
    ("byzfl", "torch", False): _t2d,
    ("byzfl", "torch", True): _t2d_copy,
    ("byzpy", "numpy", False): _np_list,
    ("byzpy", "torch", False): _t_list,
}


@dataclass(frozen=True)
class _Spec:
    """How to build one anchor rule (library-independent of the input kind)."""

    description: str
    factory: Callable[[], Callable[[Any], Any]]
    bytes_per_element: float  # extra memory, in bytes per input element (n * d)
    definition: str | None = None
    mutates: bool = False
    kinds: tuple[str, ...] = ("numpy", "torch")
    extra_bytes: Callable[[int, int], int] | None = None
    pool_op: Callable[[], Any] | None = None  # byzpy operator for the actor-pool path
    pool_bytes_per_element: float = 4.0


# definition differences, one sentence each (they are printed under the table) --------------

LOWER_MEDIAN = (
    "ByzPy's CoordinateWiseMedian is torch.median, the lower of the two middle values for even "
    "n; ours (and ByzFL's) averages the two middle values"
)
MEAMED_CENTRE = (
    "ByzPy's MeanOfMedians centres each coordinate on torch.median (the lower middle value for "
    "even n), ours and ByzFL's on the mean of the two middle values, so the n - f values kept "
    "can differ"
)
CAF_BYZFL = (
    "ByzFL's CAF estimates the top eigenvector with one power iteration from a fresh random "
    "vector (global RNG) at every step; ours uses the exact top eigenpair"
)
CAF_BYZPY = (
    "ByzPy's CAF uses 3 power iterations from a fixed random start (default_rng(0)) and stops "
    "early when max tau <= 1e-12; ours uses the exact top eigenpair"
)
SMEA_BYZFL = (
    "ByzFL's SMEA scores every subset with one power iteration from a random vector instead of "
    "the exact largest eigenvalue of the subset covariance"
)
BUCKETING_BYZFL = (
    "ByzFL's Bucketing draws its permutation from the global NumPy/torch RNG, ours from an "
    "explicit torch.Generator: the buckets (hence outputs) are not comparable"
)


def _byzfl_specs(rule: str, s: Mapping[str, Any], n: int, d: int, fl: Any) -> list[_Spec]:
    f = int(s.get("f", 0))
    if rule == "mean":
        return [_Spec("byzfl.Average()", lambda: fl.Average(), 0)]
    if rule == "median":
        return [_Spec("byzfl.Median()", lambda: fl.Median(), 12)]
    if rule == "trimmed_mean":
        return [_Spec(f"byzfl.TrMean(f={f})", lambda: fl.TrMean(f=f), 12)]
    if rule == "meamed":
        return [_Spec(f"byzfl.Meamed(f={f})", lambda: fl.Meamed(f=f), 40)]
    if rule == "geometric_median_smoothed":
        nu, t = float(s["eps"]), int(s["max_iter"])
        return [
            _Spec(f"byzfl.GeometricMedian(nu={nu}, T={t})", lambda: fl.GeometricMedian(nu, t), 16)
        ]
    if rule == "krum":
        return [_Spec(f"byzfl.Krum(f={f})", lambda: fl.Krum(f=f), 8)]
    if rule == "multi_krum":
        return [_Spec(f"byzfl.MultiKrum(f={f}) (m = n - f)", lambda: fl.MultiKrum(f=f), 8)]
    if rule == "mda":
        return [_Spec(f"byzfl.MDA(f={f})", lambda: fl.MDA(f=f), 8)]
    if rule == "smea":
        return [_Spec(f"byzfl.SMEA(f={f})", lambda: fl.SMEA(f=f), 16, definition=SMEA_BYZFL)]
    if rule == "monna":
        idx = int(s.get("reference_index", 0))
        return [_Spec(f"byzfl.MoNNA(f={f}, idx={idx})", lambda: fl.MoNNA(f=f, idx=idx), 8)]
    if rule == "centered_clipping":
        tau, m = float(s["c_tau"]), int(s["M"])

        # CenteredClipping keeps its last output as the next start (self.m): a fresh object per
        # call gives the stateless rule with v0 = 0, i.e. ours with init="zero".
        def cc() -> Callable[[Any], Any]:
            return lambda x: fl.CenteredClipping(L=m, tau=tau)(x)

        return [_Spec(f"byzfl.CenteredClipping(L={m}, tau={tau:.6g}) (v0 = 0)", cc, 12)]
    if rule == "caf":
        return [_Spec(f"byzfl.CAF(f={f})", lambda: fl.CAF(f=f), 28, definition=CAF_BYZFL)]
    if rule == "nnm":
        k = n - f
        return [
            _Spec(
                f"byzfl.NNM(f={f})",
                lambda: fl.NNM(f=f),
                8,
                extra_bytes=lambda n_, d_: n_ * k * d_ * 4,  # vectors[indices]: (n, n - f, d)
            )
        ]
    if rule == "bucketing":
        b = int(s["bucket_size"])
        return [_Spec(f"byzfl.Bucketing(s={b})", lambda: fl.Bucketing(s=b), 8, BUCKETING_BYZFL)]
    if rule == "clip":
        c = float(s["threshold"])
        return [_Spec(f"byzfl.Clipping(c={c:.6g})", lambda: fl.Clipping(c=c), 4, mutates=True)]
    if rule == "arc":
        return [_Spec(f"byzfl.ARC(f={f})", lambda: fl.ARC(f=f), 4, mutates=True)]
    return []


def _agg(obj: Any) -> Callable[[Any], Any]:
    return obj.aggregate  # type: ignore[no-any-return]


def _pre(obj: Any) -> Callable[[Any], Any]:
    return obj.pre_aggregate  # type: ignore[no-any-return]


def _byzpy_specs(
    rule: str, s: Mapping[str, Any], n: int, d: int, py: dict[str, Any], ctx: Mapping[str, Any]
) -> list[_Spec]:
    f = int(s.get("f", 0))
    torch_only = ("torch",)

    def spec(
        desc: str,
        make: Callable[[], Any],
        bpe: float,
        *,
        pre: bool = False,
        definition: str | None = None,
        kinds: tuple[str, ...] = torch_only,
        pool_bpe: float = 4.0,
    ) -> _Spec:
        wrap = _pre if pre else _agg
        return _Spec(
            desc,
            lambda: wrap(make()),
            bpe,
            definition=definition,
            kinds=kinds,
            pool_op=make,
            pool_bytes_per_element=pool_bpe,
        )

    # ByzPy's backend is always torch: lists of NumPy arrays fail in torch.as_tensor(x, dtype=
    # <numpy dtype>), so only torch inputs, except for MDA (below).
    if rule == "median":
        return [
            spec(
                "byzpy.CoordinateWiseMedian()",
                py["CoordinateWiseMedian"],
                8,
                definition=LOWER_MEDIAN,
            )
        ]
    if rule == "trimmed_mean":
        return [
            spec(
                f"byzpy.CoordinateWiseTrimmedMean(f={f})",
                lambda: py["CoordinateWiseTrimmedMean"](f),
                16,
            )
        ]
    if rule == "meamed":
        return [
            spec(
                f"byzpy.MeanOfMedians(f={f})",
                lambda: py["MeanOfMedians"](f),
                24,
                definition=MEAMED_CENTRE,
            )
        ]
    if rule == "geometric_median":
        # ByzPy stops on the absolute step ||z_{t+1} - z_t|| <= tol; ours on the step relative
        # to max(||z_t||, 1). Equal tolerance: hand ByzPy tol * max(||z*||, 1), z* our result.
        scale = max(float(ctx.get("ours_norm", 1.0)), 1.0)
        tol_abs = float(s["tol"]) * scale
        mi, eps, init = int(s["max_iter"]), float(s["eps"]), str(s["init"])
        return [
            spec(
                f"byzpy.GeometricMedian(tol={tol_abs:.3g} (= tol * ||z||), max_iter={mi}, "
                f"eps={eps:g}, init={init!r})",
                lambda: py["GeometricMedian"](tol=tol_abs, max_iter=mi, eps=eps, init=init),
                12,
                pool_bpe=8,
            )
        ]
    if rule == "krum":
        return [spec(f"byzpy.Krum(f={f})", lambda: py["Krum"](f), 4)]
    if rule == "multi_krum":
        q = int(s["m"])
        return [spec(f"byzpy.MultiKrum(f={f}, q={q})", lambda: py["MultiKrum"](f, q), 4)]
    if rule == "monna":
        idx = int(s.get("reference_index", 0))
        return [
            spec(
                f"byzpy.MoNNA(f={f}, reference_index={idx})",
                lambda: py["MoNNA"](f, reference_index=idx),
                12,
            )
        ]
    if rule == "centered_clipping":
        tau, m, eps, init = float(s["c_tau"]), int(s["M"]), float(s["eps"]), str(s["init"])
        return [
            spec(
                f"byzpy.CenteredClipping(c_tau={tau:.6g}, M={m}, eps={eps:g}, init={init!r})",
                lambda: py["CenteredClipping"](c_tau=tau, M=m, eps=eps, init=init),
                16,
            )
        ]
    if rule == "cge":
        return [
            spec(
                f"byzpy.ComparativeGradientElimination(f={f})",
                lambda: py["ComparativeGradientElimination"](f),
                8,
                pool_bpe=8,
            )
        ]
    if rule == "nnm":
        return [
            spec(
                f"byzpy.NearestNeighborMixing(f={f})",
                lambda: py["NearestNeighborMixing"](f),
                8,
                pre=True,
            )
        ]
    if rule == "bucketing":
        # ByzPy takes an explicit permutation: hand it the one our kernel draws from
        # torch.Generator().manual_seed(seed), so that the outputs are comparable.
        b = int(s["bucket_size"])
        seed = int(s.get("seed", 0))
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        return [
            spec(
                f"byzpy.Bucketing(bucket_size={b}, perm=torch.randperm(n, seed {seed}))",
                lambda: py["Bucketing"](b, perm=perm),
                4,
                pre=True,
            )
        ]
    if rule == "smea":
        return [spec(f"byzpy.SMEA(f={f})", lambda: py["SMEA"](f), 4)]
    if rule == "caf":
        return [spec(f"byzpy.CAF(f={f})", lambda: py["CAF"](f), 20, definition=CAF_BYZPY)]
    if rule == "clip":
        c = float(s["threshold"])
        return [spec(f"byzpy.Clipping(threshold={c:.6g})", lambda: py["Clipping"](c), 8, pre=True)]
    if rule == "arc":
        return [spec(f"byzpy.ARC(f={f})", lambda: py["ARC"](f), 8, pre=True)]
    # MDA stays in NumPy throughout and returns what it was given: both input kinds work.
    # (SMEA, CAF, Clipping and ARC also compute in NumPy but end in torch.as_tensor(..., dtype=
    # <numpy dtype>), which fails for NumPy inputs.)
    if rule == "mda":
        return [
            spec(
                f"byzpy.MinimumDiameterAveraging(f={f})",
                lambda: py["MinimumDiameterAveraging"](f),
                4,
                kinds=("numpy", "torch"),
            )
        ]
    return []


# ---------------------------------------------------------------------------------------------
# ByzPy's actor-pool ("subtask") path, optional
# ---------------------------------------------------------------------------------------------


class _ByzpyPoolRunner:
    """Runs one ByzPy operator through ``OperatorExecutor`` with a pool of thread actors.

    ByzPy copies the stacked input into POSIX shared memory for every call and some of its
    chunk functions call ``torch.set_num_threads``; the torch thread count is restored after
    every call so that the other measurements are not affected.
    """

    def __init__(self, operator: Any, workers: int) -> None:
        from byzpy.engine.graph.executor import OperatorExecutor
        from byzpy.engine.graph.pool import ActorPoolConfig

        self._loop = asyncio.new_event_loop()
        self._key = operator.input_key
        self._executor = OperatorExecutor(
            operator, pool_config=ActorPoolConfig(backend="thread", count=workers)
        )
        self._threads = torch.get_num_threads()
        self._loop.run_until_complete(self._executor.__aenter__())  # type: ignore[no-untyped-call]

    def __call__(self, xs: Sequence[Any]) -> Any:
        try:
            return self._loop.run_until_complete(self._executor.run({self._key: xs}))
        finally:
            torch.set_num_threads(self._threads)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            aexit = self._executor.__aexit__(None, None, None)  # type: ignore[no-untyped-call]
            self._loop.run_until_complete(aexit)
        self._loop.close()
        torch.set_num_threads(self._threads)


def _shm_free_bytes() -> int:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


# ---------------------------------------------------------------------------------------------
# public
# ---------------------------------------------------------------------------------------------


def anchors_for(
    rule: str,
    settings: Mapping[str, Any],
    n: int,
    d: int,
    libs: AnchorLibraries,
    *,
    max_bytes: int,
    ctx: Mapping[str, Any] | None = None,
) -> list[AnchorCandidate]:
    """Every (library, input kind) way of running ``rule`` with ``settings`` on ``(n, d)``."""
    ctx = ctx or {}
    out: list[AnchorCandidate] = []
    elements = n * d
    per_lib: list[tuple[str, list[_Spec]]] = []
    if libs.byzfl is not None:
        per_lib.append(("byzfl", _byzfl_specs(rule, settings, n, d, libs.byzfl)))
    if libs.byzpy is not None:
        per_lib.append(("byzpy", _byzpy_specs(rule, settings, n, d, libs.byzpy, ctx)))
    for library, specs in per_lib:
        for sp in specs:
            est = int(sp.bytes_per_element * elements)
            if sp.extra_bytes is not None:
                est += sp.extra_bytes(n, d)
            for kind in sp.kinds:
                skip = None
                if est > max_bytes:
                    skip = (
                        f"skipped: needs about {est / 2**30:.2g} GiB "
                        f"(limit {max_bytes / 2**30:.1f} GiB, --max-anchor-gib)"
                    )
                out.append(
                    AnchorCandidate(
                        library=library,
                        input_kind=kind,
                        description=sp.description,
                        call=_lazy(sp.factory),
                        prepare=_PREPARE[(library, kind, sp.mutates)],
                        est_bytes=est,
                        definition=sp.definition,
                        fresh_input=sp.mutates,
                        skip=skip,
                    )
                )
            if library == "byzpy" and libs.pool_workers > 0 and sp.pool_op is not None:
                pool_est = int(sp.pool_bytes_per_element * elements)
                skip = None
                if pool_est > _shm_free_bytes():
                    skip = (
                        f"skipped: ByzPy's pool path copies about {pool_est / 2**30:.1f} GiB "
                        "into /dev/shm, which has less free space"
                    )
                elif est + pool_est > max_bytes:
                    skip = f"skipped: needs about {(est + pool_est) / 2**30:.1f} GiB"
                out.append(_pool_candidate(sp, libs.pool_workers, est + pool_est, skip))
    return out


def _lazy(factory: Callable[[], Callable[[Any], Any]]) -> Callable[[Any], Any]:
    """Build the anchor object once, on first use (so that construction is not timed)."""
    holder: list[Callable[[Any], Any]] = []

    def call(x: Any) -> Any:
        if not holder:
            holder.append(factory())
        return holder[0](x)

    return call


def _pool_candidate(sp: _Spec, workers: int, est: int, skip: str | None) -> AnchorCandidate:
    runner: list[_ByzpyPoolRunner] = []

    def call(xs: Any) -> Any:
        if not runner:
            assert sp.pool_op is not None
            runner.append(_ByzpyPoolRunner(sp.pool_op(), workers))
        return runner[0](xs)

    def close() -> None:
        if runner:
            runner[0].close()
            runner.clear()

    return AnchorCandidate(
        library="byzpy",
        input_kind=f"torch, {workers} thread actors",
        description=sp.description + f" via OperatorExecutor(thread pool x{workers})",
        call=call,
        prepare=_t_list,
        est_bytes=est,
        definition=sp.definition,
        skip=skip,
        close=close,
    )


def as_tensor(out: Any) -> torch.Tensor:
    """An anchor's output (array, tensor or a list of rows) as a CPU tensor."""
    if isinstance(out, torch.Tensor):
        return out.detach().cpu()
    if isinstance(out, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(out))
    if isinstance(out, list | tuple):
        return torch.stack([as_tensor(r) for r in out])
    return torch.as_tensor(np.asarray(out))


def subsets(n: int, f: int) -> int:
    """C(n, f): the number of (n - f)-subsets an exact search visits."""
    return math.comb(n, f)
