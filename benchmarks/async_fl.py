"""FedBuff against synchronous FedAvg on MNIST with heavy-tailed stragglers, in virtual time.

Both runs in this one process share the data, the model init, the client speeds and the
seed. The clients' task times are heavy-tailed per client
(:class:`velocity.sim.sampling.ClientSpeeds`: Pareto tail index ``--shape``, mean 1 s, a
lognormal jitter per task), so a few clients are persistently 5-10x slower than the rest.

- **sync**: FedAvg, ``--concurrency`` clients per round, deadline-free rounds (every round
  waits for its slowest client);
- **fedbuff**: ``--concurrency`` clients in flight, the server aggregates every
  ``--buffer`` arrivals with the staleness weight ``1 / sqrt(1 + tau)`` (FedBuff's).

It reports each run's virtual time to ``--target`` test accuracy and their ratio
(sync / fedbuff: > 1 means FedBuff got there faster), and writes the two accuracy curves
against virtual time to ``--plot``.

    python benchmarks/async_fl.py                     # 50 clients, 10 in flight, ~6 min
    python benchmarks/async_fl.py --quick             # synthetic data, a few seconds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

ROOT = Path(__file__).resolve().parents[1]


def _federation(args: argparse.Namespace, asynchronous: bool) -> Any:
    from velocity.client import TrainConfig
    from velocity.server.asynchronous import AsyncSettings, Staleness
    from velocity.server.builder import make_simulation
    from velocity.sim.sampling import ClientSpeeds
    from velocity.sim.settings import SimulationSettings
    from velocity.strategies import FedAvg

    quick = args.quick
    return make_simulation(
        dataset="synthetic" if quick else "mnist",
        model_id="logreg" if quick else args.model,
        strategy=FedAvg(),
        num_clients=args.clients,
        settings=SimulationSettings(
            seed=args.seed,
            client_fraction=args.concurrency / args.clients,
            delays=ClientSpeeds(mean_s=1.0, shape=args.shape, jitter=0.25),
        ),
        train_config=TrainConfig(
            batch_size=args.batch_size, local_epochs=1, lr=args.lr, momentum=0.9
        ),
        partitioning="natural" if quick else "iid",
        asynchronous=(
            AsyncSettings(
                concurrency=args.concurrency,
                buffer_size=args.buffer,
                staleness_threshold=args.threshold,
                staleness=Staleness("polynomial", a=0.5),
            )
            if asynchronous
            else None
        ),
    )


def _run(args: argparse.Namespace, asynchronous: bool, budget: float) -> dict[str, Any]:
    """Run until ``--target`` accuracy or ``budget`` virtual seconds (or ``--max-rounds``)."""
    import torch

    torch.set_num_threads(1)
    federation = _federation(args, asynchronous)
    engine = federation.engine
    curve: list[tuple[float, float]] = []
    hit: float | None = None
    updates = 0
    for _ in range(args.max_rounds):
        result = engine.run_round()
        updates += result.num_clients
        acc = result.global_accuracy
        if acc is not None:
            curve.append((result.clock_s, acc))
            if hit is None and acc >= args.target:
                hit = result.clock_s
                break
        if result.clock_s > budget:
            break
    return {
        "run": "fedbuff" if asynchronous else "sync",
        "time_to_target": hit,
        "versions": engine.round,
        "updates": updates,
        "final_accuracy": curve[-1][1] if curve else None,
        "virtual_time": engine.clock.now(),
        "curve": curve,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic data, logreg")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--buffer", type=int, default=5)
    parser.add_argument("--threshold", type=int, default=None)
    parser.add_argument("--shape", type=float, default=1.5, help="Pareto tail index of speeds")
    parser.add_argument("--model", default="mnist-cnn")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--target", type=float, default=0.97)
    parser.add_argument("--max-rounds", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "async_fedbuff.png")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.concurrency, args.buffer = 12, 4, 2
        args.target = min(args.target, 0.5)
        args.max_rounds = min(args.max_rounds, 20)
        args.lr = 0.1

    sync = _run(args, asynchronous=False, budget=math.inf)
    # FedBuff gets the virtual time sync needed (or sync's whole run when it missed).
    budget = sync["time_to_target"] or sync["virtual_time"]
    fedbuff = _run(args, asynchronous=True, budget=2.0 * budget)
    rows = [sync, fedbuff]
    for row in rows:
        shown = {k: v for k, v in row.items() if k != "curve"}
        print(json.dumps(shown), flush=True)
    ratio = None
    if sync["time_to_target"] and fedbuff["time_to_target"]:
        ratio = sync["time_to_target"] / fedbuff["time_to_target"]
    print(
        json.dumps(
            {
                "target_accuracy": args.target,
                "speedup_sync_over_fedbuff": ratio,
                "clients": args.clients,
                "concurrency": args.concurrency,
                "buffer": args.buffer,
                "pareto_shape": args.shape,
            }
        ),
        flush=True,
    )
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "speedup": ratio}, indent=2))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for row, label in ((sync, "synchronous FedAvg"), (fedbuff, f"FedBuff (K={args.buffer})")):
            xs = [t for t, _ in row["curve"]]
            ys = [100 * a for _, a in row["curve"]]
            ax.plot(xs, ys, "o-", markersize=2, label=label)
        ax.axhline(100 * args.target, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("virtual time (s)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(
            f"{args.clients} clients, {args.concurrency} in flight, Pareto speeds "
            f"(shape {args.shape})"
        )
        ax.grid(alpha=0.3)
        ax.legend()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110, bbox_inches="tight", metadata={"Software": None})
    return 0


if __name__ == "__main__":
    sys.exit(main())
