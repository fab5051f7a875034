"""Benchmark every ``velocity.kernels`` rule against the memory floor and ByzFL / ByzPy.

For every (n, d) the script builds one float32 ``(n, d)`` stack of client updates, measures the
memory floor (one ``torch.sum`` over that stack) in the same run, then times every rule (warm-up
once, median of ``--repeats`` runs) and, when ``byzfl`` / ``byzpy`` are importable, the same rule
from those libraries with each input kind they accept (NumPy arrays, torch tensors), keeping the
fastest. It prints our speed-up per rule and whether the outputs agree where the definitions
match (max |ours - theirs| / max |theirs| <= 1e-5), and says why where they do not.

    python benchmarks/aggregators.py                      # n in {20, 100}, d in {1e5, 1e6}
    python benchmarks/aggregators.py --quick              # n=20, d=1e4, 2 repeats (smoke test)
    python benchmarks/aggregators.py --rules krum,median --n 20 --d 100000
    python benchmarks/aggregators.py --markdown perf.md --json perf.json

Install the anchors with ``benchmarks/install_anchors.sh`` (never changes torch). See
``benchmarks/README.md`` for what each column means.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import shlex
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, Literal

# Transparent huge pages for PyTorch's large CPU tensors, as the `velocity` command sets them;
# read once per process at the first large allocation, so set before torch is imported. (This
# script used to get it as a side effect of `import velocity`, which now sets nothing.)
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _anchors import (
    AnchorCandidate,
    AnchorLibraries,
    anchors_for,
    as_tensor,
    load_anchors,
    subsets,
)

AGREE_RTOL = 1e-5
MAX_SUBSETS = 1_000_000  # the kernels' default max_subsets for MDA and SMEA

# ---------------------------------------------------------------------------------------------
# the rules
# ---------------------------------------------------------------------------------------------

Kind = Literal["aggregator", "pre", "optimizer"]


@dataclass(frozen=True)
class Ctx:
    """What a rule's settings may depend on."""

    n: int
    d: int
    f: int
    exact_f: int
    median_norm: float
    smoothed_iters: int
    smoothed_nu: float


@dataclass(frozen=True)
class Rule:
    name: str
    kernel: str
    kind: Kind
    settings: Callable[[Ctx], dict[str, Any] | str]  # a str is the reason to skip
    about: str = ""
    iterations: str | None = None  # settings key holding a fixed iteration count
    exact: bool = False  # exact combinatorial search: target "< 1 s" too
    no_anchor: str | None = None  # why neither library has this rule
    anchor: str | None = None  # the anchors' rule name, when not `name`
    inplace: bool = False  # rewrites its input: a fresh copy per call (not timed)


def _needs(cond: bool, why: str, s: dict[str, Any]) -> dict[str, Any] | str:
    return s if cond else f"skipped: {why}"


def _f_rule(minimum: Callable[[int, int], bool], why: str) -> Callable[[Ctx], dict[str, Any] | str]:
    def settings(c: Ctx) -> dict[str, Any] | str:
        return _needs(minimum(c.n, c.f), why.format(n=c.n, f=c.f), {"f": c.f})

    return settings


def _exact(c: Ctx) -> dict[str, Any] | str:
    f = c.exact_f
    if c.n <= 2 * f:
        return f"skipped: needs n > 2f; got n={c.n}, f={f}"
    count = subsets(c.n, f)
    if count > MAX_SUBSETS:
        return (
            f"skipped: exact search over C({c.n}, {f}) = {count:,} subsets exceeds "
            f"max_subsets={MAX_SUBSETS:,}, so the kernel refuses it"
        )
    return {"f": f}


RULES: tuple[Rule, ...] = (
    Rule("mean", "mean", "aggregator", lambda c: {}),
    Rule("median", "median", "aggregator", lambda c: {}),
    Rule(
        "trimmed_mean",
        "trimmed_mean",
        "aggregator",
        _f_rule(lambda n, f: n > 2 * f, "needs n > 2f; got n={n}, f={f}"),
    ),
    Rule(
        "meamed",
        "meamed",
        "aggregator",
        _f_rule(lambda n, f: n > 2 * f, "needs n > 2f; got n={n}, f={f}"),
    ),
    Rule(
        "geometric_median",
        "geometric_median",
        "aggregator",
        lambda c: {"tol": 1e-6, "max_iter": 256, "eps": 1e-12, "init": "mean"},
        about="converged Weiszfeld; compared with ByzPy at equal tolerance",
    ),
    Rule(
        "geometric_median_smoothed",
        "geometric_median",
        "aggregator",
        lambda c: {
            "max_iter": c.smoothed_iters,
            "tol": 0.0,
            "eps": c.smoothed_nu,
            "init": "zero",
        },
        about="ByzFL's smoothed Weiszfeld: T fixed iterations from 0, beta >= nu",
        iterations="max_iter",
    ),
    Rule(
        "krum",
        "krum",
        "aggregator",
        lambda c: _needs(
            c.n > 2 * c.f + 2,
            f"needs n > 2f + 2; got n={c.n}, f={c.f}",
            {"f": c.f, "neighbors": "n-f-1"},
        ),
    ),
    Rule(
        "multi_krum",
        "multi_krum",
        "aggregator",
        lambda c: _needs(
            c.n > 2 * c.f + 2,
            f"needs n > 2f + 2; got n={c.n}, f={c.f}",
            {"f": c.f, "m": c.n - c.f, "neighbors": "n-f-1"},
        ),
    ),
    Rule(
        "bulyan",
        "bulyan",
        "aggregator",
        _f_rule(lambda n, f: n >= 4 * f + 3, "needs n >= 4f + 3; got n={n}, f={f}"),
        no_anchor="neither ByzFL nor ByzPy has Bulyan",
    ),
    Rule("mda", "mda", "aggregator", _exact, exact=True),
    Rule("smea", "smea", "aggregator", _exact, exact=True),
    Rule(
        "monna",
        "monna",
        "aggregator",
        lambda c: _needs(
            c.n > 2 * c.f, f"needs n > 2f; got n={c.n}, f={c.f}", {"f": c.f, "reference_index": 0}
        ),
    ),
    Rule(
        "centered_clipping",
        "centered_clipping",
        "aggregator",
        lambda c: {"c_tau": 0.5 * c.median_norm, "M": 10, "eps": 1e-12, "init": "zero"},
        about="c_tau = half the median row norm; v0 = 0 as in ByzFL",
        iterations="M",
    ),
    Rule("cge", "cge", "aggregator", _f_rule(lambda n, f: n > f, "needs n > f; got n={n}, f={f}")),
    Rule(
        "caf",
        "caf",
        "aggregator",
        _f_rule(lambda n, f: n > 2 * f, "needs n > 2f; got n={n}, f={f}"),
    ),
    Rule("bucketing", "bucketing", "pre", lambda c: {"bucket_size": 2, "seed": 0}),
    Rule(
        "clip",
        "clip",
        "pre",
        lambda c: {"threshold": c.median_norm},
        about="threshold = median row norm (half the rows are clipped)",
    ),
    Rule(
        "clip_inplace",
        "clip",
        "pre",
        lambda c: {"threshold": c.median_norm, "inplace": True},
        about="threshold = median row norm; inplace=True, as ByzFL clips: each call gets a "
        "fresh copy of the stack (the copy is not timed)",
        anchor="clip",
        inplace=True,
    ),
    Rule("arc", "arc", "pre", _f_rule(lambda n, f: n > f, "needs n > f; got n={n}, f={f}")),
    Rule(
        "arc_inplace",
        "arc",
        "pre",
        lambda c: _needs(
            c.n > c.f, f"needs n > f; got n={c.n}, f={c.f}", {"f": c.f, "inplace": True}
        ),
        about="inplace=True, as ByzFL's ARC: each call gets a fresh copy of the stack (the "
        "copy is not timed)",
        anchor="arc",
        inplace=True,
    ),
    Rule("nnm", "nnm", "pre", _f_rule(lambda n, f: n > f, "needs n > f; got n={n}, f={f}")),
    Rule(
        "fedadam",
        "fedadam",
        "optimizer",
        lambda c: {"lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
        about="one step on (d,) params with existing state; its floor is torch.sum over the "
        "4 x d floats it reads (params, delta, m, v)",
        no_anchor="server optimizers have no ByzFL/ByzPy counterpart",
    ),
)
RULES_BY_NAME = {r.name: r for r in RULES}

# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------


class CallTimeout(BaseException):
    """A BaseException, so that library code catching ``Exception`` cannot swallow it."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise ``CallTimeout`` in the main thread after ``seconds`` (checked between bytecodes)."""
    if seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise CallTimeout(f"timed out after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class Timing:
    times: list[float] = field(default_factory=list)  # seconds
    note: str = ""
    error: str | None = None
    timed_out: float | None = None  # the limit, when the warm-up exceeded it

    @property
    def median_ms(self) -> float | None:
        return 1e3 * statistics.median(self.times) if self.times else None


def measure(
    call: Callable[[Any], Any],
    prepare: Callable[[], Any],
    *,
    fresh: bool,
    repeats: int,
    budget_s: float,
    timeout_s: float,
    inspect: Callable[[Any], None] | None = None,
) -> Timing:
    """Warm up once, then time up to ``repeats`` calls.

    ``prepare`` is never timed; with ``fresh`` it runs before every call (for callables that
    modify their input). ``inspect`` receives the warm-up's output (untimed) before it is
    dropped. Timed runs stop early once they have used ``budget_s`` seconds; when the warm-up
    alone took longer than that, the warm-up is the only sample.
    """
    timing = Timing()
    try:
        arg = prepare()
        with deadline(timeout_s):
            t0 = time.perf_counter()
            out = call(arg)
            warm = time.perf_counter() - t0
    except CallTimeout:
        timing.timed_out = timeout_s
        timing.error = f"> {timeout_s:g} s (timed out, --timeout-s)"
        return timing
    except Exception as exc:
        timing.error = f"{type(exc).__name__}: {_short(str(exc))}"
        return timing
    if inspect is not None:
        inspect(out)
    del out
    if warm >= budget_s:
        timing.times = [warm]
        timing.note = "1 run (the warm-up; slower than --budget-s)"
        return timing
    try:
        for _ in range(repeats):
            if fresh:
                del arg
                arg = prepare()
            with deadline(timeout_s):
                t0 = time.perf_counter()
                res = call(arg)
                timing.times.append(time.perf_counter() - t0)
            del res
            if sum(timing.times) >= budget_s and len(timing.times) < repeats:
                timing.note = f"{len(timing.times)} of {repeats} runs (--budget-s)"
                break
    except CallTimeout:
        timing.note = f"a timed run exceeded {timeout_s:g} s"
    except Exception as exc:
        timing.error = f"{type(exc).__name__}: {_short(str(exc))}"
    if not timing.times:
        timing.times = [warm]
        timing.note = (timing.note + "; " if timing.note else "") + "warm-up time only"
    return timing


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def floor_ms(x: torch.Tensor, samples: int) -> list[float]:
    torch.sum(x)
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        torch.sum(x)
        out.append(1e3 * (time.perf_counter() - t0))
    return out


# ---------------------------------------------------------------------------------------------
# data and agreement
# ---------------------------------------------------------------------------------------------


def make_updates(n: int, d: int, byzantine: int, seed: int) -> torch.Tensor:
    """Honest rows mu + N(0, 1); the last ``byzantine`` rows -3 mu + 0.1 N(0, 1) (float32)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=g)
    x = torch.randn(n, d, generator=g)
    honest = n - byzantine
    x[:honest] += mu
    if byzantine:
        x[honest:].mul_(0.1).add_(mu, alpha=-3.0)
    return x


def rel_diff(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, str | None]:
    """max |ours - ref| / max |ref|, in float64, without a full-size temporary."""
    if tuple(ours.shape) != tuple(ref.shape):
        return math.nan, f"shape {tuple(ref.shape)} vs ours {tuple(ours.shape)}"
    a, b = ours.reshape(-1), ref.reshape(-1)
    max_diff = max_ref = 0.0
    step = 1 << 21
    for i in range(0, a.numel(), step):
        x, y = a[i : i + step].double(), b[i : i + step].double()
        if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
            return math.nan, "non-finite output"
        max_diff = max(max_diff, float((x - y).abs().max()))
        max_ref = max(max_ref, float(y.abs().max()))
    return (max_diff / max_ref if max_ref > 0 else max_diff), None


# ---------------------------------------------------------------------------------------------
# one row
# ---------------------------------------------------------------------------------------------


@dataclass
class AnchorResult:
    label: str
    library: str
    input_kind: str
    description: str
    ms: float | None = None
    runs: int = 0
    note: str = ""
    error: str | None = None
    skipped: str | None = None
    timed_out: float | None = None
    definition: str | None = None
    rel_diff: float | None = None
    agrees: str = ""  # "yes", "no", "differs", ""


@dataclass
class Row:
    rule: str
    settings: str
    n: int
    d: int
    floor_ms: float
    ours_ms: float | None = None
    ours_runs: int = 0
    ours_note: str = ""
    ours_error: str | None = None
    skipped: str | None = None
    iterations: int | None = None
    anchors: list[AnchorResult] = field(default_factory=list)
    best_anchor: str | None = None
    best_anchor_ms: float | None = None
    best_anchor_lower_bound: bool = False
    speedup: float | None = None
    target_met: bool | None = None
    target: str = ""
    agrees: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ours_over_floor(self) -> float | None:
        return None if self.ours_ms is None else self.ours_ms / self.floor_ms


def _fmt_setting(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def settings_text(rule: Rule, s: Mapping[str, Any]) -> str:
    parts = [f"{k}={_fmt_setting(v)}" for k, v in s.items()]
    if rule.name == "bucketing":
        parts = [f"bucket_size={s['bucket_size']}", f"generator seed {s['seed']}"]
    return ", ".join(parts) if parts else "—"


def _kernel_kwargs(rule: Rule, s: Mapping[str, Any]) -> dict[str, Any]:
    kw = dict(s)
    if rule.name == "bucketing":
        seed = kw.pop("seed")
        kw["generator"] = torch.Generator().manual_seed(seed)
    return kw


def run_rule(
    rule: Rule,
    kernels: ModuleType | None,
    x: torch.Tensor,
    ctx: Ctx,
    floors: Mapping[str, float],
    libs: AnchorLibraries,
    args: argparse.Namespace,
) -> Row:
    n, d = x.shape
    s = rule.settings(ctx)
    floor = floors["vector" if rule.kind == "optimizer" else "stack"]
    if isinstance(s, str):
        return Row(rule.name, "—", n, d, floor, skipped=s)
    row = Row(rule.name, settings_text(rule, s), n, d, floor)
    if rule.about:
        row.notes.append(rule.about)
    if rule.iterations:
        row.iterations = int(s[rule.iterations])

    # ours -----------------------------------------------------------------------------------
    fn = getattr(kernels, rule.kernel, None) if kernels is not None else None
    ours_out: torch.Tensor | None = None
    if fn is None:
        row.ours_error = f"velocity.kernels has no {rule.kernel}()"
    else:
        kept: list[torch.Tensor] = []

        def keep(out: Any) -> None:  # aggregators: (d,); pre-aggregators, optimizers: a tuple
            kept.append((out[0] if isinstance(out, tuple) else out).detach())

        timing = _time_ours(rule, fn, x, s, args, keep)
        row.ours_ms, row.ours_runs, row.ours_note = timing.median_ms, len(timing.times), timing.note
        row.ours_error = timing.error
        ours_out = kept[0] if kept else None
        del kept

    # anchors --------------------------------------------------------------------------------
    if rule.no_anchor:
        row.notes.append(rule.no_anchor)
    anchor_rule = rule.anchor or rule.name
    actx: dict[str, Any] = {}
    if ours_out is not None and rule.name == "geometric_median":
        actx["ours_norm"] = float(torch.linalg.vector_norm(ours_out.double()))
    cands = (
        anchors_for(
            anchor_rule, s, n, d, libs, max_bytes=int(args.max_anchor_gib * 2**30), ctx=actx
        )
        if rule.kind != "optimizer"
        else []
    )
    if rule.name == "geometric_median" and libs.byzfl is not None:
        row.notes.append(
            "ByzFL's GeometricMedian has no convergence test (fixed T iterations): see "
            "geometric_median_smoothed"
        )
    for cand in cands:
        row.anchors.append(_run_anchor(cand, x, ours_out, args))
        gc.collect()
    del ours_out
    return row


def _time_ours(
    rule: Rule,
    fn: Callable[..., Any],
    x: torch.Tensor,
    s: Mapping[str, Any],
    args: argparse.Namespace,
    keep: Callable[[Any], None],
) -> Timing:
    if rule.kind == "optimizer":
        g = torch.Generator().manual_seed(1)
        params = torch.randn(x.shape[1], generator=g)
        delta = torch.randn(x.shape[1], generator=g) * 1e-2
        try:
            _, state = fn(params, delta, None, **s)  # first round creates the state
        except Exception as exc:
            return Timing(error=f"{type(exc).__name__}: {_short(str(exc))}")
        return measure(
            lambda _: fn(params, delta, state, **s),
            lambda: None,
            fresh=False,
            repeats=args.repeats,
            budget_s=args.budget_s,
            timeout_s=args.timeout_s,
            inspect=keep,
        )
    if rule.inplace:  # a fresh copy of the stack per call, made before the clock starts
        return measure(
            lambda arg: fn(arg[0], **arg[1]),
            lambda: (x.clone(), _kernel_kwargs(rule, s)),
            fresh=True,
            repeats=args.repeats,
            budget_s=args.budget_s,
            timeout_s=args.timeout_s,
            inspect=keep,
        )
    fresh = rule.name == "bucketing"  # a fresh generator per call, same permutation each time
    return measure(
        lambda kw: fn(x, **kw),
        lambda: _kernel_kwargs(rule, s),
        fresh=fresh,
        repeats=args.repeats,
        budget_s=args.budget_s,
        timeout_s=args.timeout_s,
        inspect=keep,
    )


def _run_anchor(
    cand: AnchorCandidate, x: torch.Tensor, ours: torch.Tensor | None, args: argparse.Namespace
) -> AnchorResult:
    res = AnchorResult(
        label=cand.label,
        library=cand.library,
        input_kind=cand.input_kind,
        description=cand.description,
        definition=cand.definition,
    )
    if cand.skip:
        res.skipped = cand.skip
        return res

    def compare(out: Any) -> None:
        if ours is None:
            return
        try:
            rel, why = rel_diff(ours, as_tensor(out))
        except Exception as exc:
            rel, why = math.nan, f"{type(exc).__name__}: {_short(str(exc))}"
        res.rel_diff = None if math.isnan(rel) else rel
        if cand.definition:
            res.agrees = "differs"
        elif why:
            res.agrees = f"no ({why})"
        else:
            res.agrees = "yes" if rel <= AGREE_RTOL else "no"

    try:
        timing = measure(
            cand.call,
            lambda: cand.prepare(x),
            fresh=cand.fresh_input,
            repeats=args.repeats,
            budget_s=args.budget_s,
            timeout_s=args.timeout_s,
            inspect=compare,
        )
    finally:
        if cand.close is not None:
            cand.close()
    res.ms, res.runs, res.note = timing.median_ms, len(timing.times), timing.note
    res.error, res.timed_out = timing.error, timing.timed_out
    return res


def _summarise(rule: Rule, row: Row) -> None:
    ran = [a for a in row.anchors if a.ms is not None]
    slow = [a for a in row.anchors if a.timed_out is not None]
    if ran:
        best = min(ran, key=lambda a: a.ms or math.inf)
        row.best_anchor, row.best_anchor_ms = best.label, best.ms
    elif slow:
        best = max(slow, key=lambda a: a.timed_out or 0.0)
        row.best_anchor, row.best_anchor_ms = best.label, 1e3 * (best.timed_out or 0.0)
        row.best_anchor_lower_bound = True
    if row.best_anchor_ms is not None and row.ours_ms:
        row.speedup = row.best_anchor_ms / row.ours_ms

    # target ---------------------------------------------------------------------------------
    criteria: list[tuple[str, bool]] = []
    row.target, row.target_met = "", None
    if row.ours_ms is None:
        row.target = "—"
        return _agreement(row)
    if row.best_anchor_ms is not None:
        anchor_ratio = row.best_anchor_ms / row.floor_ms
        if anchor_ratio <= 4 and not row.best_anchor_lower_bound:
            over = row.ours_over_floor or math.inf
            criteria.append(
                (f"<= 2.5x floor (best anchor at {anchor_ratio:.1f}x floor)", over <= 2.5)
            )
        else:
            criteria.append((">= 2x best anchor", (row.speedup or 0.0) >= 2))
    if rule.exact:
        criteria.append(("< 1 s", row.ours_ms < 1000))
    if criteria:
        row.target_met = all(ok for _, ok in criteria)
        if len(criteria) == 1:
            row.target = criteria[0][0]
        else:
            row.target = "; ".join(f"{t} ({'yes' if ok else 'no'})" for t, ok in criteria)
    else:
        row.target = "n/a (no anchor ran)" if row.anchors else "n/a (no anchor)"
    _agreement(row)


def _fmt_rel(x: float) -> str:
    return "0" if x == 0 else f"{x:.0e}"


def _agreement(row: Row) -> None:
    parts = []
    for lib in ("byzfl", "byzpy"):
        mine = [a for a in row.anchors if a.library == lib and a.agrees]
        if not mine:
            continue
        rels = [a.rel_diff for a in mine if a.rel_diff is not None]
        worst = f" (rel. diff {_fmt_rel(max(rels))})" if rels else ""
        if any(a.agrees == "differs" for a in mine):
            parts.append(f"{lib}: differs by definition{worst}")
        elif all(a.agrees == "yes" for a in mine):
            parts.append(f"{lib}: yes{worst}")
        else:
            bad = next(a for a in mine if a.agrees != "yes")
            parts.append(f"{lib}: {bad.agrees}{worst}")
    row.agrees = "; ".join(parts) if parts else ("—" if row.anchors else "n/a (no anchor)")


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms >= 100:
        return f"{ms:,.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def fmt_d(d: int) -> str:
    e = round(math.log10(d)) if d > 0 else 0
    return f"1e{e}" if 10**e == d else str(d)


COLUMNS = (
    "rule",
    "settings",
    "n",
    "d",
    "ours (ms)",
    "ours/floor",
    "best anchor (ms, library[input])",
    "speed-up",
    "target met",
    "agrees",
)


def row_cells(row: Row) -> list[str]:
    if row.skipped:
        return [row.rule, "—", str(row.n), fmt_d(row.d), row.skipped, "", "", "", "", ""]
    ours = fmt_ms(row.ours_ms) if row.ours_error is None else f"error: {row.ours_error}"
    if row.iterations and row.ours_ms is not None:
        ours += f" ({fmt_ms(row.ours_ms / row.iterations)}/it)"
    ratio = f"{row.ours_over_floor:.2f}x" if row.ours_over_floor is not None else "—"
    if row.best_anchor_ms is not None:
        lb = "> " if row.best_anchor_lower_bound else ""
        anchor = f"{lb}{fmt_ms(row.best_anchor_ms)}"
        if row.iterations and not row.best_anchor_lower_bound:
            anchor += f" ({fmt_ms(row.best_anchor_ms / row.iterations)}/it)"
        anchor += f" {row.best_anchor}"
    elif row.anchors:
        anchor = "none ran (see notes)"
    else:
        anchor = "—"
    speed = "—"
    if row.speedup is not None:
        speed = ("> " if row.best_anchor_lower_bound else "") + f"{row.speedup:.1f}x"
    if row.target_met is None:
        target = row.target
    else:
        target = f"{'yes' if row.target_met else 'NO'} — {row.target}"
    return [
        row.rule,
        row.settings,
        str(row.n),
        fmt_d(row.d),
        ours,
        ratio,
        anchor,
        speed,
        target,
        row.agrees,
    ]


def row_notes(row: Row) -> list[str]:
    notes = list(row.notes)
    if row.ours_note:
        notes.append(f"ours: {row.ours_note}")
    for a in row.anchors:
        head = f"{a.label} {a.description}"
        if a.skipped:
            notes.append(f"{head}: {a.skipped}")
        elif a.error:
            notes.append(f"{head}: {a.error}")
        else:
            detail = f"{fmt_ms(a.ms)} ms"
            if a.note:
                detail += f" ({a.note})"
            if a.rel_diff is not None:
                detail += f", rel. diff {_fmt_rel(a.rel_diff)}"
            notes.append(f"{head}: {detail}")
    return notes


def header_lines(meta: Mapping[str, Any]) -> list[str]:
    lines = [
        f"Command: `{meta['command']}`",
        f"Machine: {meta['cpu']}; {meta['cpu_count']} logical CPUs ({meta['cpus_usable']} usable), "
        f"torch threads {meta['torch_threads']}; Python {meta['python']}, torch {meta['torch']}, "
        f"numpy {meta['numpy']}; byzfl {meta['byzfl']}, byzpy {meta['byzpy']}",
    ]
    if meta.get("standin"):
        lines.append(f"Note: {meta['standin']}")
    for lib, err in meta.get("anchor_errors", {}).items():
        lines.append(f"{lib} not importable: {err}")
    if meta.get("byzpy_pool"):
        lines.append(f"ByzPy also timed through its actor pool: {meta['byzpy_pool']} thread actors")
    lines.append(
        "Timing: one warm-up, then the median of "
        f"{meta['repeats']} runs (fewer if a rule exceeds {meta['budget_s']:g} s, see notes). "
        "Floor: one torch.sum over the same (n, d) float32 stack, measured in the same run. "
        f"Agreement: max |ours - theirs| / max |theirs| <= {AGREE_RTOL:g}."
    )
    for fl in meta["floors"]:
        lines.append(
            f"Floor n={fl['n']}, d={fmt_d(fl['d'])}: {fmt_ms(fl['ms'])} ms "
            f"({fl['gbps']:.3g} GB/s over {fl['bytes'] / 1e6:.3g} MB); vector floor for the "
            f"server optimizer (torch.sum over 4 x d): {fmt_ms(fl['vector_floor_ms'])} ms"
        )
    return lines


def definition_notes(rows: Sequence[Row]) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        for a in r.anchors:
            if a.definition:
                seen.setdefault(f"{r.rule} vs {a.library}: {a.definition}", None)
    return list(seen)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(meta: Mapping[str, Any], rows: Sequence[Row]) -> str:
    out = [f"- {_md_escape(line)}" for line in header_lines(meta)]
    out.append("")
    out.append("| " + " | ".join(COLUMNS) + " |")
    out.append("|" + "---|" * len(COLUMNS))
    for r in rows:
        out.append("| " + " | ".join(_md_escape(c) for c in row_cells(r)) + " |")
    defs = definition_notes(rows)
    if defs:
        out += ["", "Where the definitions differ (no agreement verdict):", ""]
        out += [f"- {_md_escape(t)}" for t in defs]
    out += ["", "Notes per row:", ""]
    for r in rows:
        notes = row_notes(r)
        if notes:
            out.append(f"- **{r.rule}** (n={r.n}, d={fmt_d(r.d)}): " + "; ".join(notes))
    return "\n".join(out) + "\n"


def render_console(meta: Mapping[str, Any], rows: Sequence[Row]) -> None:
    for line in header_lines(meta):
        print(line)
    try:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
    except ImportError:
        widths = [max(len(c), *(len(row_cells(r)[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
        print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row_cells(r), widths, strict=True)))
    else:
        table = Table(show_lines=False)
        for c in COLUMNS:
            table.add_column(Text(c), overflow="fold")
        for r in rows:
            table.add_row(*(Text(c) for c in row_cells(r)))
        Console(width=max(160, Console().width)).print(table)
    defs = definition_notes(rows)
    if defs:
        print("\nWhere the definitions differ (no agreement verdict):")
        for t in defs:
            print(f"  - {t}")
    print("\nNotes per row:")
    for r in rows:
        notes = row_notes(r)
        if notes:
            print(f"  - {r.rule} (n={r.n}, d={fmt_d(r.d)}): " + "; ".join(notes))


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def _import_kernels() -> tuple[ModuleType | None, str | None]:
    try:
        import velocity.kernels as kernels
    except ImportError:
        src = Path(__file__).resolve().parent.parent / "src"
        sys.path.insert(0, str(src))
        try:
            import velocity.kernels as kernels
        except ImportError as exc:
            return None, f"{type(exc).__name__}: {exc}"
    return kernels, None


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_meta(args: argparse.Namespace, libs: AnchorLibraries) -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "command": "python benchmarks/aggregators.py " + shlex.join(sys.argv[1:]),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "byzfl": libs.versions.get("byzfl", "not used" if args.no_anchors else "not importable"),
        "byzpy": libs.versions.get("byzpy", "not used" if args.no_anchors else "not importable"),
        "standin": libs.standin_message,
        "anchor_errors": dict(libs.errors),
        "byzpy_pool": libs.pool_workers,
        "repeats": args.repeats,
        "budget_s": args.budget_s,
        "floors": [],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--n", type=int, nargs="+", default=None, help="numbers of clients [20 100]")
    p.add_argument("--d", type=int, nargs="+", default=None, help="dimensions [100000 1000000]")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per rule [5]")
    p.add_argument(
        "--rules", default="all", help="comma-separated rule names, 'all', or 'list' to print them"
    )
    p.add_argument("--no-anchors", action="store_true", help="do not import or time byzfl/byzpy")
    p.add_argument("--f", type=int, default=None, help="Byzantine count f [max(1, n // 10)]")
    p.add_argument("--exact-f", type=int, default=4, help="f for the exact rules MDA and SMEA")
    p.add_argument("--smoothed-iters", type=int, default=3, help="T of ByzFL's GeometricMedian")
    p.add_argument("--smoothed-nu", type=float, default=0.1, help="nu of ByzFL's GeometricMedian")
    p.add_argument(
        "--max-anchor-gib",
        type=float,
        default=8.0,
        help="skip an anchor whose estimated extra memory exceeds this",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=60.0,
        help="stop timing one candidate after this many seconds of timed runs",
    )
    p.add_argument(
        "--timeout-s",
        type=float,
        default=120.0,
        help="abandon a single call after this many seconds (0 = never)",
    )
    p.add_argument(
        "--byzpy-pool",
        type=int,
        default=0,
        metavar="WORKERS",
        help="also time ByzPy's actor-pool path with this many thread actors "
        "(copies the stack into /dev/shm)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", type=Path, default=None, help="write the Markdown table here")
    p.add_argument("--json", type=Path, default=None, help="write every measurement here")
    p.add_argument("--quick", action="store_true", help="n=20, d=1e4, 2 repeats (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.n = args.n or [20]
        args.d = args.d or [10_000]
        args.repeats = args.repeats or 2
    args.n = args.n or [20, 100]
    args.d = args.d or [100_000, 1_000_000]
    args.repeats = args.repeats or 5
    if args.rules == "list":
        for r in RULES:
            print(f"{r.name:28s} velocity.kernels.{r.kernel} ({r.kind})")
        raise SystemExit(0)
    if args.rules == "all":
        args.rule_list = list(RULES)
    else:
        names = [s.strip() for s in args.rules.split(",") if s.strip()]
        unknown = [s for s in names if s not in RULES_BY_NAME]
        if unknown:
            p.error(f"unknown rule(s) {', '.join(unknown)}; known: {', '.join(RULES_BY_NAME)}")
        args.rule_list = [RULES_BY_NAME[s] for s in names]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    kernels, kerr = _import_kernels()
    libs = load_anchors(enabled=not args.no_anchors, pool_workers=args.byzpy_pool)
    meta = machine_meta(args, libs)
    if kerr:
        print(f"velocity.kernels not importable: {kerr}", file=sys.stderr)
    if libs.standin_message:
        print(libs.standin_message, file=sys.stderr)

    rows: list[Row] = []
    for n in args.n:
        for d in args.d:
            f = args.f if args.f is not None else max(1, n // 10)
            x = make_updates(n, d, byzantine=min(f, n // 2), seed=args.seed)
            samples = max(2 * args.repeats + 1, 5)
            stack_ms = floor_ms(x, samples)
            vec = torch.randn(4, d, generator=torch.Generator().manual_seed(2))
            vec_ms = floor_ms(vec, samples)
            median_norm = float(torch.linalg.vector_norm(x, dim=1).median())
            ctx = Ctx(n, d, f, args.exact_f, median_norm, args.smoothed_iters, args.smoothed_nu)
            floors = {"stack": statistics.median(stack_ms), "vector": statistics.median(vec_ms)}
            block: list[Row] = []
            for rule in args.rule_list:
                print(f"[n={n} d={fmt_d(d)}] {rule.name} ...", file=sys.stderr, flush=True)
                row = run_rule(rule, kernels, x, ctx, floors, libs, args)
                block.append(row)
                _progress(row)
                gc.collect()
            # the floor again at the end of the block: report the median of both sets
            stack_ms += floor_ms(x, samples)
            floors["stack"] = statistics.median(stack_ms)
            for row in block:
                rule = RULES_BY_NAME[row.rule]
                if rule.kind != "optimizer":
                    row.floor_ms = floors["stack"]
                if not row.skipped:
                    _summarise(rule, row)
            rows += block
            meta["floors"].append(
                {
                    "n": n,
                    "d": d,
                    "ms": floors["stack"],
                    "bytes": x.numel() * x.element_size(),
                    "gbps": x.numel() * x.element_size() / floors["stack"] / 1e6,
                    "samples_ms": stack_ms,
                    "vector_floor_ms": floors["vector"],
                }
            )
            del x, vec
            gc.collect()

    print()
    render_console(meta, rows)
    if args.markdown:
        args.markdown.write_text(render_markdown(meta, rows))
        print(f"\nMarkdown written to {args.markdown}")
    if args.json:
        payload = {"meta": meta, "rows": [_row_json(r) for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        print(f"JSON written to {args.json}")
    return 0


def _row_json(row: Row) -> dict[str, Any]:
    out = asdict(row)
    out["ours_over_floor"] = row.ours_over_floor
    return out


def _progress(row: Row) -> None:
    if row.skipped:
        print(f"    {row.skipped}", file=sys.stderr)
        return
    msg = (
        f"    ours {fmt_ms(row.ours_ms)} ms"
        if row.ours_error is None
        else f"    ours {row.ours_error}"
    )
    for a in row.anchors:
        if a.ms is not None:
            msg += f"; {a.label} {fmt_ms(a.ms)} ms"
        else:
            msg += f"; {a.label} {a.skipped or a.error}"
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
