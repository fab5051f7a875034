"""Throughput of ``digest_rows`` and ``state_digest`` relative to plain ``hashlib.sha256``.

For every (n, d) the script builds one float32 ``(n, d)`` stack of updates and, untimed, a
``bytes`` copy of each row. In the same run it then times (one warm-up, then the median of
``--repeats`` runs):

- **hashlib rows**: ``hashlib.sha256(row_bytes).hexdigest()`` for each pre-made row ``bytes``:
  the floor for one digest per row on one thread;
- **digest_rows**: ``velocity.governance.digest_rows(stack)`` (threads when the stack is large)
  and ``digest_rows(stack, workers=1)``;
- **hashlib stream**: one ``hashlib.sha256`` fed every pre-made row ``bytes`` in turn;
- **state_digest**: ``state_digest({"layer000": stack[0], ...})`` over the same n tensors
  (headers and the layout of its docstring on top of the same data).

It reports ratios, never absolute times: ``hashlib time / our time`` (1.0 = as fast as hashlib
over ready-made bytes; above 1 = faster, from threads). It also checks that ``digest_rows``
agrees with the hashlib digests.

    python benchmarks/hashing.py               # n in {10, 100}, d in {1e5, 1e6}, 5 repeats
    python benchmarks/hashing.py --quick       # n=10, d in {1e5, 1e6}, 3 repeats (seconds)
    python benchmarks/hashing.py --n 10 --d 100000 --json hashing.json
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _import_governance() -> Any:
    try:
        import velocity.governance as governance
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
        import velocity.governance as governance
    return governance


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    """One warm-up call, then the median of ``repeats`` timed calls."""
    call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@dataclass
class Row:
    n: int
    d: int
    megabytes: float
    rows_auto: float  # hashlib rows time / digest_rows time
    rows_serial: float  # hashlib rows time / digest_rows(workers=1) time
    state: float  # hashlib stream time / state_digest time
    agrees: bool
    hashlib_gbps: float  # context only: the floor's throughput on this machine


def measure(governance: Any, n: int, d: int, repeats: int, seed: int) -> Row:
    gen = torch.Generator().manual_seed(seed)
    stack = torch.randn(n, d, generator=gen)
    row_bytes = [stack[i].numpy().tobytes() for i in range(n)]  # pre-made, untimed
    state = {f"layer{i:03d}": stack[i] for i in range(n)}

    def hashlib_rows() -> list[str]:
        return [hashlib.sha256(b).hexdigest() for b in row_bytes]

    def hashlib_stream() -> str:
        h = hashlib.sha256()
        for b in row_bytes:
            h.update(b)
        return h.hexdigest()

    agrees = governance.digest_rows(stack) == hashlib_rows()
    floor_rows = median_seconds(hashlib_rows, repeats)
    auto = median_seconds(lambda: governance.digest_rows(stack), repeats)
    serial = median_seconds(lambda: governance.digest_rows(stack, workers=1), repeats)
    floor_stream = median_seconds(hashlib_stream, repeats)
    ours_state = median_seconds(lambda: governance.state_digest(state), repeats)
    floor_rows = min(floor_rows, median_seconds(hashlib_rows, repeats))  # again, after ours
    size = n * d * 4
    return Row(
        n=n,
        d=d,
        megabytes=size / 1e6,
        rows_auto=floor_rows / auto,
        rows_serial=floor_rows / serial,
        state=floor_stream / ours_state,
        agrees=agrees,
        hashlib_gbps=size / floor_rows / 1e9,
    )


def fmt_d(d: int) -> str:
    exponent = len(str(d)) - 1
    return f"1e{exponent}" if d == 10**exponent else str(d)


COLUMNS = (
    "n",
    "d",
    "MB",
    "digest_rows / hashlib",
    "digest_rows(workers=1) / hashlib",
    "state_digest / hashlib",
    "agrees",
)


def cells(row: Row) -> list[str]:
    return [
        str(row.n),
        fmt_d(row.d),
        f"{row.megabytes:.0f}",
        f"{row.rows_auto:.2f}x",
        f"{row.rows_serial:.2f}x",
        f"{row.state:.2f}x",
        "yes" if row.agrees else "NO",
    ]


def render(meta: dict[str, Any], rows: Sequence[Row]) -> None:
    print(
        f"Machine: {meta['cpu']}, {meta['cpus_usable']} usable CPUs; Python {meta['python']}, "
        f"torch {meta['torch']}, numpy {meta['numpy']}"
    )
    print(f"Command: {meta['command']}")
    print(
        "Ratios are hashlib time / our time over the same float32 data (higher is faster; "
        f"1.00x = as fast as hashlib.sha256 over pre-made bytes). Median of {meta['repeats']} "
        "runs after one warm-up."
    )
    table = [list(COLUMNS), *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    for k, line in enumerate(table):
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    context = ", ".join(f"n={r.n} d={fmt_d(r.d)}: {r.hashlib_gbps:.2f} GB/s" for r in rows)
    print(f"(context, not a result: the hashlib floor ran at {context})")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--n", type=int, nargs="+", default=None, help="rows (clients) [10 100]")
    p.add_argument("--d", type=int, nargs="+", default=None, help="dimensions [1e5 1e6]")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per candidate [5]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write every measurement here")
    p.add_argument("--quick", action="store_true", help="n=10, d in {1e5, 1e6}, 3 repeats")
    args = p.parse_args(argv)
    if args.quick:
        args.n = args.n or [10]
        args.repeats = args.repeats or 3
    args.n = args.n or [10, 100]
    args.d = args.d or [100_000, 1_000_000]
    args.repeats = args.repeats or 5
    if min(args.n) < 1 or min(args.d) < 1 or args.repeats < 1:
        p.error("--n, --d and --repeats must be >= 1")
    return args


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    governance = _import_governance()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    meta = {
        "command": "python benchmarks/hashing.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "cpu": cpu_name(),
        "cpus_usable": usable,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "repeats": args.repeats,
    }
    rows = []
    for n in args.n:
        for d in args.d:
            print(f"[n={n} d={fmt_d(d)}] ...", file=sys.stderr, flush=True)
            rows.append(measure(governance, n, d, args.repeats, args.seed))
            gc.collect()
    print()
    render(meta, rows)
    if args.json:
        args.json.write_text(
            json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2)
        )
        print(f"JSON written to {args.json}")
    return 0 if all(r.agrees for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
