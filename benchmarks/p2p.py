"""Benchmarks of ``velocity.p2p``: the cost of robust mixing, and robustness on MNIST.

    python benchmarks/p2p.py --mixing          # 64 nodes, d=1e6: mixing step / one matmul
    python benchmarks/p2p.py --mnist           # 16 nodes, 3 Byzantine: the accuracy table
    python benchmarks/p2p.py --quick           # both, tiny (smoke test, a few seconds)
    python benchmarks/p2p.py --mnist --rounds 50 --json p2p.json --markdown p2p.md

``--mixing`` builds one float32 ``(n, d)`` matrix of node vectors and the gossip matrix of a
random ``k``-regular graph, then times, interleaved in the same run (one warm-up, the median
of ``--repeats``): the reference product ``(n, n) @ (n, d)``, :func:`gossip`,
:func:`clipped_gossip` (adaptive and fixed radius) and :func:`nna`. Only the RATIOS to the
reference are reported (target: <= 3).

``--mnist`` trains decentralized SGD on MNIST (``VELOCITY_DATA`` or ``--data-dir``) over a
random 4-regular graph of 16 nodes, 3 of them Byzantine, and reports the honest nodes' mean
test accuracy after ``--rounds`` rounds: attack-free, then each attack with plain gossip,
ClippedGossip and NNA. Target: the robust rules within 3 points of the attack-free run, plain
gossip below it.
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from velocity.p2p import (  # noqa: E402
    DecentralizedSGD,
    Topology,
    clipped_gossip,
    gossip,
    metropolis_weights,
    nna,
)

ATTACKS: dict[str, dict[str, Any]] = {
    "sign_flip": {"type": "sign_flip"},
    "gaussian": {"type": "gaussian", "sigma": 1.0},
    "empire": {"type": "empire", "scale": -1.0},
    "little": {"type": "little"},
}
"""The attacks of the MNIST table (``velocity.attacks`` specs, model space)."""

ROBUST = ("clipped_gossip", "nna")


def _machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"Python {platform.python_version()}"
    )


# ------------------------------------------------------------------------------ mixing
def mixing_benchmark(n: int, d: int, k: int, repeats: int, seed: int) -> dict[str, Any]:
    """Median time of each mixing step divided by that of one ``(n, n) @ (n, d)`` product."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    topo = Topology.random_regular(n, k, seed=seed)
    w = metropolis_weights(topo)
    w32 = w.to(torch.float32)
    delta = w.max().item()  # one neighbour's weight: clip the farthest neighbour
    ops: dict[str, Callable[[], torch.Tensor]] = {
        "reference (n,n)@(n,d)": lambda: w32 @ x,
        "gossip": lambda: gossip(x, w),
        "clipped_gossip (adaptive)": lambda: clipped_gossip(x, w, delta=delta),
        "clipped_gossip (tau=1)": lambda: clipped_gossip(x, w, 1.0),
        "nna (f=2)": lambda: nna(x, topo, 2),
    }
    times: dict[str, list[float]] = {name: [] for name in ops}
    for op in ops.values():
        op()  # warm-up
    for _ in range(repeats):
        for name, op in ops.items():
            start = time.perf_counter()
            op()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    ref = med["reference (n,n)@(n,d)"]
    return {
        "n": n,
        "d": d,
        "k": k,
        "repeats": repeats,
        "ratios": {name: t / ref for name, t in med.items()},
    }


def mixing_markdown(res: dict[str, Any], command: str) -> str:
    lines = [
        f"Mixing step cost, n={res['n']}, d={res['d']:,} float32, random {res['k']}-regular "
        f"graph, median of {res['repeats']} interleaved runs ({_machine()}).",
        f"Command: `{command}`",
        "",
        "| step | time / one (n,n)@(n,d) product | target <= 3 |",
        "| --- | ---: | --- |",
    ]
    for name, ratio in res["ratios"].items():
        met = "—" if name.startswith("reference") else ("yes" if ratio <= 3.0 else "NO")
        lines.append(f"| {name} | {ratio:.2f} | {met} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ MNIST
@dataclass
class Row:
    attack: str
    mixing: str
    accuracy: float
    gap: float
    consensus: float
    seconds: float


def mnist_table(
    *,
    rounds: int,
    n: int,
    k: int,
    f: int,
    lr: float,
    batch_size: int,
    seed: int,
    attacks: Sequence[str],
    train_samples: int | None,
    test_samples: int | None,
    data_dir: str | None,
) -> dict[str, Any]:
    """The accuracy table: attack-free, then every attack x {gossip, clipped_gossip, nna}."""
    common: dict[str, Any] = {
        "dataset": "mnist",
        "model": "mnist-2nn",
        "n_nodes": n,
        "topology": "random_regular",
        "topology_params": {"k": k, "seed": seed},
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "eval_every": rounds,
        "train_samples": train_samples,
        "test_samples": test_samples,
        "data_dir": data_dir,
        "download": False,
    }

    def run(attack: str | None, mixing: str) -> tuple[DecentralizedSGD, float, float, float]:
        start = time.perf_counter()
        sgd = DecentralizedSGD.from_config(
            **common,
            byzantine=f if attack else 0,
            attack=ATTACKS[attack] if attack else None,
            mixing=mixing,
        )
        last = sgd.run(rounds)[-1]
        assert last.honest_mean_accuracy is not None
        return (
            sgd,
            100.0 * last.honest_mean_accuracy,
            last.consensus_distance,
            time.perf_counter() - start,
        )

    _, clean, clean_cd, clean_s = run(None, "gossip")
    rows = [Row("none", "gossip", clean, 0.0, clean_cd, clean_s)]
    byz: tuple[int, ...] = ()
    topo: Topology | None = None
    for attack in attacks:
        for mixing in ("gossip", *ROBUST):
            sgd, acc, cd, secs = run(attack, mixing)
            byz, topo = sgd.byzantine_nodes, sgd.topology
            rows.append(Row(attack, mixing, acc, acc - clean, cd, secs))
    info: dict[str, Any] = {"byzantine": list(byz)}
    if topo is not None:
        honest = [i for i in range(n) if i not in byz]
        adj = topo.adjacency()
        info["honest_subgraph_connected"] = topo.subgraph_is_strongly_connected(honest)
        info["byzantine_in_neighbours"] = {
            i: int(adj[list(byz), i].sum()) for i in honest if int(adj[list(byz), i].sum())
        }
    robust_ok = all(r.gap >= -3.0 for r in rows if r.mixing in ROBUST)
    gossip_degrades = all(r.gap < -3.0 for r in rows if r.attack != "none" and r.mixing == "gossip")
    return {
        "settings": {k_: v for k_, v in common.items() if k_ != "data_dir"} | {"f": f},
        "graph": info,
        "rows": [asdict(r) for r in rows],
        "robust_within_3_points": robust_ok,
        "plain_gossip_degrades": gossip_degrades,
    }


def mnist_markdown(res: dict[str, Any], command: str) -> str:
    s, g = res["settings"], res["graph"]
    lines = [
        f"MNIST, {s['model']}, {s['n_nodes']} nodes on a random {s['topology_params']['k']}-"
        f"regular graph (seed {s['seed']}), {s['f']} Byzantine (nodes {g.get('byzantine')}), "
        f"IID split, lr {s['lr']}, batch {s['batch_size']}, {s['eval_every']} rounds; honest "
        f"nodes' mean test accuracy ({_machine()}).",
        f"Honest nodes with Byzantine in-neighbours: {g.get('byzantine_in_neighbours')}; "
        f"honest subgraph strongly connected: {g.get('honest_subgraph_connected')}.",
        f"Command: `{command}`",
        "",
        "| attack | mixing | honest mean acc. (%) | vs attack-free (points) | "
        "honest consensus dist. | time (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['attack']} | {r['mixing']} | {r['accuracy']:.2f} | {r['gap']:+.2f} | "
            f"{r['consensus']:.2e} | {r['seconds']:.1f} |"
        )
    lines += [
        "",
        f"Robust rules within 3 points of attack-free: {res['robust_within_3_points']}; "
        f"plain gossip more than 3 points below under every attack: "
        f"{res['plain_gossip_degrades']}.",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mixing", action="store_true", help="time one mixing step (ratios)")
    p.add_argument("--mnist", action="store_true", help="the MNIST robustness table")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--n", type=int, default=64, help="--mixing: nodes (default 64)")
    p.add_argument("--d", type=int, default=1_000_000, help="--mixing: dimension (1e6)")
    p.add_argument("--repeats", type=int, default=7, help="--mixing: timed runs per step")
    p.add_argument("--rounds", type=int, default=50, help="--mnist: rounds (default 50)")
    p.add_argument("--lr", type=float, default=0.1, help="--mnist: step size (0.1)")
    p.add_argument("--batch-size", type=int, default=32, help="--mnist: batch per node (32)")
    p.add_argument("--attacks", default=",".join(ATTACKS), help="--mnist: comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="MNIST folder (default $VELOCITY_DATA)")
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    p.add_argument("--markdown", type=Path, default=None, help="write the tables as Markdown")
    args = p.parse_args(list(argv) if argv is not None else None)
    if not (args.mixing or args.mnist):
        if not args.quick:
            p.error("choose --mixing, --mnist or --quick")
        args.mixing = args.mnist = True
    attacks = [a for a in args.attacks.split(",") if a]
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        p.error(f"unknown attack(s) {unknown}; choose from {', '.join(ATTACKS)}")
    command = shlex.join(["python", "benchmarks/p2p.py", *(argv or sys.argv[1:])])
    out: dict[str, Any] = {"command": command, "machine": _machine()}
    texts: list[str] = []
    if args.mixing:
        n, d, reps = (8, 10_000, 2) if args.quick else (args.n, args.d, args.repeats)
        res = mixing_benchmark(n, d, k=min(8, n - 1 - (n % 2)), repeats=reps, seed=args.seed)
        out["mixing"] = res
        texts.append(mixing_markdown(res, command))
    if args.mnist:
        quick = args.quick
        res = mnist_table(
            rounds=3 if quick else args.rounds,
            n=8 if quick else 16,
            k=4,
            f=1 if quick else 3,
            lr=args.lr,
            batch_size=8 if quick else args.batch_size,
            seed=args.seed,
            attacks=attacks[:1] if quick else attacks,
            train_samples=800 if quick else None,
            test_samples=200 if quick else None,
            data_dir=args.data_dir,
        )
        out["mnist"] = res
        texts.append(mnist_markdown(res, command))
    text = "\n\n".join(texts)
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
