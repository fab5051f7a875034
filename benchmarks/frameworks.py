"""Frameworks side by side: VelocityFL, pfl 0.6 and Flower 1.42 on the same FedAvg rounds.

Every number is a ratio against a reference measured in the same run: the plain PyTorch loop
(per selected client: copy the global weights into a model, SGD over its batches, accumulate
the weighted average), which runs in the same process as the VelocityFL rows, its rounds
interleaved with theirs (loop, sequential, vectorized, loop, ...) so machine noise hits all of
them alike. pfl and Flower run in processes of their own (pfl's multi-worker mode needs one
process per rank, Flower starts Ray); the plain loop is run once more in its own process after
them, as a check that being in a process of its own does not change the reference.

**Workload 1, cross-device** (per model: logistic regression 784->10 and McMahan et al.'s
"2NN" 784-200-200-10): real MNIST, 1,000 clients x 60 samples (the IID partition of
``make_simulation``), 100 clients per round, B=10, E=1 (6 steps), SGD lr 0.1. Rows: plain loop,
VelocityFL sequential provider, VelocityFL vectorized backend, pfl in 1 process, pfl with 2
worker processes x 1 thread (its ``PFL_WORKER_ADDRESSES`` / ``PFL_WORKER_RANK`` mode over
``torch.distributed``), Flower simulation (Ray backend, one actor per CPU, 1 thread each).

**Workload 2, the paper CNN round** (``benchmarks/simulation.py``'s: 10 clients per round of
600 samples, B=10, E=1, lr 0.05): plain loop and VelocityFL at 100 and 10,000 registered
clients (interleaved, ``simulation.py``'s own ``PlainLoop`` and ``VelocityRounds``), and Flower
with 100 and 10,000 registered virtual SuperNodes, 10 sampled per round.

Each row's s/round is the median of rounds 2..R. What is the same across frameworks (data
partition, initial weights, steps, seeds) is listed in ``benchmarks/_workloads.py``; as a check
that every row did the same training, each also reports its final model's accuracy on the
first 1,000 MNIST test images (not timed). ``--threads N`` sets the torch threads of the
one-process rows (loop, VelocityFL, pfl in 1 process; default torch's own): on a machine that
is busy with other work, two OpenMP threads per process can stall each other badly, so timings
are only quotable from a quiet machine.

    VELOCITY_DATA=/work/shared/data python benchmarks/frameworks.py        # everything
    python benchmarks/frameworks.py --quick --only loop,velocity           # smoke test
    python benchmarks/frameworks.py --models logreg --only loop,velocity,pfl --rounds 6
    python benchmarks/frameworks.py --markdown out.md --json out.json

Install pfl and Flower with ``benchmarks/install_bench.sh`` (never changes torch or numpy);
a framework that is not installed gets "not installed" rows and the rest still runs.

Targets (issue 14): VelocityFL sequential <= 1.10x the plain loop; best VelocityFL backend
>= 2x faster than pfl's best mode for logreg and >= 1.3x for the 2NN; VelocityFL >= 1.3x faster
than Flower on the CNN round.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Transparent huge pages for PyTorch's large CPU tensors, as the `velocity` command sets them
# (read once per process, before torch's first large allocation; workers inherit it).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import velocity  # noqa: F401
except ImportError:  # run from a checkout without ``pip install -e .``
    sys.path.insert(0, str(HERE.parent / "src"))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE.parent / "src"), os.environ.get("PYTHONPATH")) if p
    )

import _workloads as wls  # noqa: E402

FRAMEWORKS = ("loop", "velocity", "pfl", "flower")
MODELS = {"logreg": "logreg", "2nn": "mnist-2nn", "mnist-2nn": "mnist-2nn"}
MODEL_NAMES = {"logreg": "logistic regression (784->10)", "mnist-2nn": "2NN (784-200-200-10)"}
SEQUENTIAL_TARGET = 1.10  # VelocityFL sequential s/round <= 1.10x the plain loop's
PFL_TARGETS = {"logreg": 2.0, "mnist-2nn": 1.3}  # best VelocityFL >= this x faster than pfl
FLOWER_TARGET = 1.3  # VelocityFL >= 1.3x faster than Flower on the CNN round
WORKER_TIMEOUT_S = 3600
ACC = f"test accuracy after R rounds (first {wls.ACCURACY_SAMPLES:,} test images)"


# ---------------------------------------------------------------------- worker side


def _worker(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process; what it returns is printed as ``RESULT``."""
    import torch

    threads = int(spec.get("threads") or 0)
    if threads > 0 and kind != "flower":
        torch.set_num_threads(threads)
    wl = wls.Workload.from_json(spec["workload"])
    rounds, data_dir = int(spec["rounds"]), spec.get("data_dir")
    if kind == "pfl":
        return wls.run_pfl(wl, rounds, data_dir)
    if kind == "flower":
        return wls.run_flower(
            wl, rounds, data_dir, cpus_per_client=float(spec["cpus_per_client"]), threads=threads
        )
    x, y = wls.load_mnist(data_dir)
    runners: dict[str, Any] = {}
    if kind == "inproc":  # workload 1: loop / VelocityFL sequential / vectorized, interleaved
        for row in spec["rows"]:
            if row == "loop":
                runners[row] = wls.PlainLoop(x, y, wl)
            else:
                runners[row] = wls.VelocityRun(x, y, wl, backend=row)
    elif kind == "cnn-inproc":  # workload 2: simulation.py's own loop and VelocityFL rounds
        import simulation

        simulation.SAMPLES_PER_CLIENT = wl.samples  # 600; 60 with --quick
        for row in spec["rows"]:
            if row == "loop":
                runners[row] = simulation.PlainLoop(x, y)
            else:
                runners[row] = simulation.VelocityRounds(x, y, int(row.split("-")[1]))
    else:
        raise SystemExit(f"unknown worker {kind!r}")
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for key, runner in runners.items():
            start = time.perf_counter()
            runner.round()
            times[key].append(time.perf_counter() - start)
    accuracy = {}
    for key, runner in runners.items():  # not timed: the check that all did the same training
        if hasattr(runner, "final_state"):
            state = runner.final_state()
        elif hasattr(runner, "sim"):  # simulation.VelocityRounds
            state = wls.flat_to_state(wl, runner.sim.global_params)
        else:  # simulation.PlainLoop
            state = runner.state
        accuracy[key] = wls.test_accuracy(wl, state, data_dir)
    return {"times": times, "accuracy": accuracy, "torch_threads": torch.get_num_threads()}


# ---------------------------------------------------------------------- orchestration


def _result_of(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            found: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return found
    return None


def _failure(proc: subprocess.CompletedProcess[str] | None, what: str) -> str:
    if proc is None:
        return f"{what}: timed out after {WORKER_TIMEOUT_S} s"
    tail = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()][-3:]
    return f"{what}: exit {proc.returncode}: " + " | ".join(tail)[-400:]


def _spawn(kind: str, spec: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one worker in a fresh interpreter; its ``RESULT`` or ``{"error": ...}``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--spec"]
    try:
        proc = subprocess.run(
            [*cmd, json.dumps(spec)],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=WORKER_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": _failure(None, kind)}
    result = _result_of(proc.stdout) if proc.returncode == 0 else None
    return result if result is not None else {"error": _failure(proc, kind)}


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _spawn_pfl_workers(spec: dict[str, Any], workers: int) -> dict[str, Any]:
    """pfl's multi-worker simulation: ``workers`` processes of this script, each told its rank
    and every rank's address (pfl reads ``PFL_WORKER_ADDRESSES`` / ``PFL_WORKER_RANK`` when it
    is imported and joins a gloo ``torch.distributed`` group); rank 0's timings."""
    addresses = ",".join(f"localhost:{p}" for p in _free_ports(workers))
    threads = str(spec["threads"])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "pfl", "--spec"]
    procs = []
    for rank in range(workers):
        env = {
            **os.environ,
            "PFL_WORKER_ADDRESSES": addresses,
            "PFL_WORKER_RANK": str(rank),
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
        }
        procs.append(
            subprocess.Popen(
                [*cmd, json.dumps(spec)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    outputs: list[subprocess.CompletedProcess[str] | None] = []
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            outputs.append(None)
            break
    first = outputs[0] if outputs else None
    if len(outputs) != workers or any(o is None or o.returncode != 0 for o in outputs):
        bad = next((o for o in outputs if o is None or o.returncode != 0), None)
        return {"error": _failure(bad, f"pfl x{workers}")}
    assert first is not None
    result = _result_of(first.stdout)
    if result is None or result.get("world_size") != workers:
        return {"error": f"pfl x{workers}: rank 0 did not run as 1 of {workers} workers"}
    return result


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _installed() -> dict[str, str | None]:
    """Versions of the frameworks that can be imported (``None``: not installed)."""
    found = {}
    for name, module, extra in (
        ("pfl", "pfl", ()),
        ("flwr", "flwr", ("ray",)),
    ):
        ok = all(importlib.util.find_spec(m) is not None for m in (module, *extra))
        found[name] = _version(name) if ok else None
    found["ray"] = _version("ray")
    return found


def _flower_spec(args: argparse.Namespace) -> dict[str, Any]:
    """Flower's Ray resources: ``cpus_per_client`` CPUs per actor (one actor per that many
    CPUs), each actor's torch using as many threads."""
    cpus = float(args.flower_cpus_per_client)
    return {"cpus_per_client": cpus, "threads": max(1, round(cpus))}


def _median_later(times: list[float]) -> float:
    """The median of rounds 2..R (round 1 holds warm-up and start-up)."""
    later = times[1:] if len(times) > 1 else times
    return float(statistics.median(later))


def _row(
    key: str, label: str, setting: str, result: dict[str, Any] | None, *, times_key: str = ""
) -> dict[str, Any]:
    """One table row from a worker's result (``times`` or ``times[times_key]``)."""
    row: dict[str, Any] = {"key": key, "label": label, "setting": setting}
    if result is None:
        row["status"] = "skipped"
    elif "error" in result:
        row["status"] = "failed"
        row["note"] = result["error"]
    else:
        times = result["times"][times_key] if times_key else result["times"]
        accuracy = result.get("accuracy")
        row["accuracy"] = accuracy.get(times_key) if isinstance(accuracy, dict) else accuracy
        row["status"] = "ok"
        row["round_times"] = [float(t) for t in times]
        row["s_per_round"] = _median_later(row["round_times"])
    return row


def _status_row(key: str, label: str, setting: str, status: str) -> dict[str, Any]:
    return {"key": key, "label": label, "setting": setting, "status": status}


def _with_ratios(rows: list[dict[str, Any]], reference: str = "loop") -> list[dict[str, Any]]:
    """``vs_loop``: each row's s/round over the reference row's (> 1: slower than the loop)."""
    ref = next((r for r in rows if r["key"] == reference and r.get("s_per_round")), None)
    for r in rows:
        if ref is not None and r.get("s_per_round") is not None:
            r["vs_loop"] = r["s_per_round"] / ref["s_per_round"]
        else:
            r["vs_loop"] = None
    return rows


def _ok(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["key"] == key and r.get("s_per_round") is not None), None)


def _best(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any] | None:
    found = [r for k in keys if (r := _ok(rows, k)) is not None]
    return min(found, key=lambda r: r["s_per_round"]) if found else None


def cross_device(
    model_id: str, args: argparse.Namespace, installed: dict[str, Any]
) -> dict[str, Any]:
    """Workload 1 for one model: every row, its ratio to the loop, and the comparisons."""
    wl = wls.cross_device(model_id, quick=args.quick)
    base = {"workload": wl.to_json(), "rounds": args.rounds, "data_dir": args.data_dir}
    only, threads_in = args.only, args.threads
    rows: list[dict[str, Any]] = []
    inproc = [k for k in ("loop",) if k in only]
    inproc += ["sequential", "vectorized"] if "velocity" in only else []
    res = _spawn("inproc", {**base, "rows": inproc, "threads": threads_in}) if inproc else None
    threads = res.get("torch_threads") if res and "error" not in res else None
    setting = f"in-process, interleaved, {_threads(threads)}" if threads else "in-process"
    labels = {
        "loop": "plain PyTorch loop (reference)",
        "sequential": "VelocityFL, sequential provider",
        "vectorized": "VelocityFL, vectorized backend",
    }
    for key in ("loop", "sequential", "vectorized"):
        if key in inproc:
            failed = res is not None and "error" in res
            rows.append(_row(key, labels[key], setting, res, times_key="" if failed else key))
    pfl = f"pfl {installed['pfl']}" if installed["pfl"] else "pfl"
    external = False
    if "pfl" in only:
        if installed["pfl"] is None:
            for key, what in (("pfl-1", "1 process"), ("pfl-2", "2 workers")):
                rows.append(_status_row(key, f"{pfl}, {what}", "own process", "not installed"))
        else:
            one = _spawn("pfl", {**base, "threads": threads_in})
            t1 = one.get("torch_threads", "?")
            rows.append(_row("pfl-1", f"{pfl}, 1 process", f"own process, {_threads(t1)}", one))
            n = args.pfl_workers
            many = _spawn_pfl_workers({**base, "threads": 1}, n)
            rows.append(
                _row(
                    "pfl-2",
                    f"{pfl}, {n} worker processes x 1 thread",
                    f"{n} processes (PFL_WORKER_ADDRESSES, gloo)",
                    many,
                )
            )
            external = True
    if "flower" in only:
        flwr = f"Flower {installed['flwr']}" if installed["flwr"] else "Flower"
        if installed["flwr"] is None:
            rows.append(_status_row("flower", f"{flwr} simulation", "Ray", "not installed"))
        else:
            res_f = _spawn("flower", {**base, **_flower_spec(args)})
            actors = res_f.get("actors", "?")
            rows.append(
                _row(
                    "flower",
                    f"{flwr} simulation (run_simulation, Ray {installed['ray']})",
                    f"own process + Ray, {actors} actors x {_threads(res_f.get('threads', '?'))}",
                    res_f,
                )
            )
            external = True
    if "loop" in only and external:
        again = _spawn("inproc", {**base, "rows": ["loop"], "threads": threads_in})
        failed = "error" in again
        rows.append(
            _row(
                "loop-own",
                "plain PyTorch loop, again (check)",
                "own process, after the others",
                again,
                times_key="" if failed else "loop",
            )
        )
    _with_ratios(rows)
    comparisons: dict[str, Any] = {}
    seq, loop = _ok(rows, "sequential"), _ok(rows, "loop")
    if seq is not None and loop is not None:
        value = seq["s_per_round"] / loop["s_per_round"]
        comparisons["sequential_vs_loop"] = {
            "value": value,
            "target": f"<= {SEQUENTIAL_TARGET:.2f}x",
            "met": value <= SEQUENTIAL_TARGET,
        }
    vel, best_pfl = _best(rows, ("sequential", "vectorized")), _best(rows, ("pfl-1", "pfl-2"))
    if vel is not None and best_pfl is not None:
        speedup = best_pfl["s_per_round"] / vel["s_per_round"]
        target = PFL_TARGETS.get(model_id)
        comparisons["best_velocity_vs_best_pfl"] = {
            "velocity": vel["key"],
            "pfl": best_pfl["key"],
            "speedup": speedup,
            "target": None if target is None else f">= {target:g}x",
            "met": None if target is None else speedup >= target,
        }
    return {"model": model_id, "workload": json.loads(wl.to_json()), "rows": rows, **comparisons}


def cnn(args: argparse.Namespace, installed: dict[str, Any]) -> dict[str, Any]:
    """Workload 2: the CNN round, plain loop / VelocityFL / Flower at each registered count."""
    sizes = args.cnn_clients
    wl = wls.cnn_round(sizes[0], quick=args.quick)
    base = {"rounds": args.rounds, "data_dir": args.data_dir}
    only = args.only
    inproc = (["loop"] if "loop" in only else []) + (
        [f"velocity-{n}" for n in sizes] if "velocity" in only else []
    )
    rows: list[dict[str, Any]] = []
    if inproc:
        spec = {**base, "workload": wl.to_json(), "rows": inproc, "threads": args.threads}
        res = _spawn("cnn-inproc", spec)
        failed = "error" in res
        threads = None if failed else res.get("torch_threads")
        setting = f"in-process, interleaved, {_threads(threads)}" if threads else "in-process"
        for key in inproc:
            if key == "loop":
                label, n = "plain PyTorch loop (reference; simulation.py's)", 100
            else:
                label, n = "VelocityFL (simulation.py's VelocityRounds)", int(key.split("-")[1])
            row = _row(key, label, setting, res, times_key="" if failed else key)
            row["registered"] = n
            rows.append(row)
    if "flower" in only:
        flwr = f"Flower {installed['flwr']}" if installed["flwr"] else "Flower"
        for n in sizes:
            key = f"flower-{n}"
            if installed["flwr"] is None:
                row = _status_row(key, f"{flwr} simulation", "Ray", "not installed")
            else:
                spec = {
                    **base,
                    "workload": wls.cnn_round(n, quick=args.quick).to_json(),
                    **_flower_spec(args),
                }
                res_f = _spawn("flower", spec)
                actors = res_f.get("actors", "?")
                row = _row(
                    key,
                    f"{flwr} simulation (run_simulation, Ray {installed['ray']})",
                    f"own process + Ray, {actors} actors x {_threads(res_f.get('threads', '?'))}",
                    res_f,
                )
            row["registered"] = n
            rows.append(row)
    _with_ratios(rows)
    comparisons = {}
    for n in sizes:
        vel, flw = _ok(rows, f"velocity-{n}"), _ok(rows, f"flower-{n}")
        if vel is not None and flw is not None:
            speedup = flw["s_per_round"] / vel["s_per_round"]
            comparisons[str(n)] = {
                "speedup": speedup,
                "target": f">= {FLOWER_TARGET:g}x",
                "met": speedup >= FLOWER_TARGET,
            }
    return {
        "workload": json.loads(wl.to_json()),
        "registered": sizes,
        "rows": rows,
        "velocity_vs_flower": comparisons,
    }


# ---------------------------------------------------------------------- report


def _machine(installed: dict[str, Any]) -> dict[str, Any]:
    import numpy
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "velocityfl": _version("velocityfl"),
        "pfl": installed["pfl"],
        "flwr": installed["flwr"],
        "ray": installed["ray"],
    }


def _fmt_s(row: dict[str, Any]) -> str:
    return f"{row['s_per_round']:.4f}" if row.get("s_per_round") is not None else row["status"]


def _fmt_acc(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _speedup(entry: dict[str, Any]) -> str:
    """``x`` = the other framework's s/round over VelocityFL's."""
    x = entry["speedup"]
    return f"{x:.2f}x faster" if x >= 1 else f"{x:.2f}x, i.e. {1 / x:.2f}x slower"


def _threads(n: object) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def _met(entry: dict[str, Any]) -> str:
    if entry.get("met") is None:
        return "no target"
    return "met" if entry["met"] else "missed"


def _table(rows: list[dict[str, Any]], *, registered: bool = False) -> list[str]:
    head = "| row | " + ("registered clients | " if registered else "") + "setting | "
    lines = [
        head + f"s/round (median of rounds 2..R) | vs plain loop | {ACC} |",
        "|---|" + ("---:|" if registered else "") + "---|---:|---:|---:|",
    ]
    for r in rows:
        label = r["label"] + (f" ({r['note']})" if r.get("note") else "")
        reg = f"{r['registered']:,} | " if registered else ""
        lines.append(
            f"| {label} | {reg}{r['setting']} | {_fmt_s(r)} | {_fmt_ratio(r.get('vs_loop'))} "
            f"| {_fmt_acc(r.get('accuracy'))} |"
        )
    return lines


def report(results: dict[str, Any]) -> str:
    """The results as markdown: a header naming the machine and command, then the tables."""
    m = results["machine"]
    out = [
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical / {m['usable_cpus']} usable CPUs, "
        f"{m['torch_threads']} torch threads; Python {m['python']}, torch {m['torch']}, "
        f"numpy {m['numpy']}, VelocityFL {m['velocityfl']}, pfl {m['pfl'] or 'not installed'}, "
        f"flwr {m['flwr'] or 'not installed'}, ray {m['ray'] or 'not installed'}.",
        f"Command: `{results['command']}`; {results['rounds']} rounds per row, s/round = median "
        "of rounds 2..R; `vs plain loop` = the row's s/round over the plain loop's (same run).",
    ]
    for block in results["cross_device"]:
        wl = block["workload"]
        out += [
            "",
            f"**Workload 1, {MODEL_NAMES.get(block['model'], block['model'])}**: "
            f"{wl['registered']:,} clients x {wl['samples']} MNIST samples, {wl['per_round']} "
            f"per round, B={wl['batch']}, E=1 ({-(-wl['samples'] // wl['batch'])} steps), "
            f"SGD lr {wl['lr']:g}.",
            "",
            *_table(block["rows"]),
        ]
        if "sequential_vs_loop" in block:
            c = block["sequential_vs_loop"]
            out += [
                "",
                f"- VelocityFL sequential vs plain loop: {c['value']:.2f}x "
                f"(target {c['target']}: {_met(c)})",
            ]
        if "best_velocity_vs_best_pfl" in block:
            c = block["best_velocity_vs_best_pfl"]
            out.append(
                f"- best VelocityFL ({c['velocity']}) vs pfl's best mode ({c['pfl']}): "
                f"{_speedup(c)} (target {c['target']}: {_met(c)})"
            )
    if results.get("cnn") is not None:
        block = results["cnn"]
        wl = block["workload"]
        out += [
            "",
            f"**Workload 2, the McMahan CNN round**: {wl['per_round']} clients per round x "
            f"{wl['samples']} samples, B={wl['batch']}, E=1 ({-(-wl['samples'] // wl['batch'])} "
            f"steps), SGD lr {wl['lr']:g}.",
            "",
            *_table(block["rows"], registered=True),
            "",
        ]
        for n, c in block["velocity_vs_flower"].items():
            out.append(
                f"- VelocityFL vs Flower at {int(n):,} registered clients: {_speedup(c)} "
                f"(target {c['target']}: {_met(c)})"
            )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds per row (default 8)")
    parser.add_argument("--models", default="logreg,2nn", help="workload 1 models: logreg,2nn")
    parser.add_argument(
        "--only", default=",".join(FRAMEWORKS), help="rows to run: velocity,pfl,flower,loop"
    )
    parser.add_argument(
        "--workloads", default="cross-device,cnn", help="cross-device (workload 1), cnn (2)"
    )
    parser.add_argument("--cnn-clients", default="100,10000", help="workload 2 registered")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads of the one-process rows (loop, VelocityFL, pfl in 1 process); "
        "0: torch's default",
    )
    parser.add_argument("--pfl-workers", type=int, default=2)
    parser.add_argument("--flower-cpus-per-client", type=float, default=1.0)
    parser.add_argument("--data-dir", default=os.environ.get("VELOCITY_DATA"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 3 rounds: smoke test")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        result = _worker(args.worker, json.loads(args.spec))
        if result.get("rank", 0) == 0:
            print("RESULT " + json.dumps(result), flush=True)
        return result

    args.rounds = args.rounds or (3 if args.quick else 8)
    if args.rounds < 2:
        parser.error("--rounds must be >= 2 (round 1 is not timed)")
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(FRAMEWORKS))
    if unknown:
        parser.error(f"--only: unknown {unknown}; choose from {','.join(FRAMEWORKS)}")
    try:
        models = [MODELS[m.strip()] for m in args.models.split(",") if m.strip()]
    except KeyError as exc:
        parser.error(f"--models: unknown {exc}; choose from logreg,2nn")
    workloads = {s.strip() for s in args.workloads.split(",") if s.strip()}
    args.cnn_clients = [int(n) for n in args.cnn_clients.split(",")]
    installed = _installed()
    command = shlex.join(["python", "benchmarks/frameworks.py", *(argv or sys.argv[1:])])
    results: dict[str, Any] = {
        "machine": _machine(installed),
        "command": command,
        "rounds": args.rounds,
        "only": args.only,
        "quick": args.quick,
        "cross_device": [],
        "cnn": None,
    }
    print(f"# frameworks side by side: {command}", flush=True)
    if "cross-device" in workloads:
        for model_id in models:
            block = cross_device(model_id, args, installed)
            results["cross_device"].append(block)
            print(f"# workload 1, {model_id}: done", flush=True)
    if "cnn" in workloads:
        results["cnn"] = cnn(args, installed)
        print("# workload 2 (CNN round): done", flush=True)
    text = report(results)
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
