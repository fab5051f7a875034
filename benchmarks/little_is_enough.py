""" "A Little Is Enough" against robust rules with and without NNM, on ByzPy's parameter server.

The setting of Allouah et al. 2023 ("Fixing by Mixing"), scaled to 2 CPU cores: distributed
SGD on MNIST with worker momentum; honest nodes hold Dirichlet(alpha)-skewed shards; f
Byzantine nodes run ALIE (``little``: honest mean + z * honest std; z = 1.5 as ByzFL's
default, or Baruch et al.'s z_max from (N, f) with ``--z formula``). The reference is FedAvg
on the honest nodes without attack; every rule then runs under the attack from the same seed.
Accuracy is the mean of the last evaluations (to smooth SGD noise).

    python benchmarks/little_is_enough.py                  # defaults below, ~4 min
    python benchmarks/little_is_enough.py --steps 200 --markdown out.md
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# Transparent huge pages for PyTorch's large CPU tensors, as the `velocity` command sets them;
# read once per process at the first large allocation, so set before torch is imported. (This
# script used to get it as a side effect of `import velocity`, which now sets nothing.)
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def rules(f: int) -> dict[str, Any]:
    """The rules compared, each configured for ``f`` Byzantine nodes."""
    return {
        "FedAvg": "FedAvg",
        "Median": "FedMedian",
        "Krum": {"type": "Krum", "f": f},
        "TrimmedMean": {"type": "TrimmedMean", "k": f},
        "NNM + Median": [{"type": "NNM", "f": f}, "FedMedian"],
        "NNM + Krum": [{"type": "NNM", "f": f}, {"type": "Krum", "f": f}],
        "NNM + TrimmedMean": [{"type": "NNM", "f": f}, {"type": "TrimmedMean", "k": f}],
    }


def run(rule: Any, attack: bool, args: argparse.Namespace, data: Any) -> list[float]:
    """Test accuracies at the evaluation steps of one training run."""
    import torch

    from velocity.models import build_model
    from velocity.server import ByzantineNode, HonestNode, ParameterServer
    from velocity.strategies import Pipeline, parse_strategy

    train, test, part = data
    model = build_model(args.model, seed=args.seed)
    honest = [
        HonestNode(
            copy.deepcopy(model),
            train.x[part.indices(i)],
            train.y[part.indices(i)],
            batch_size=args.batch_size,
            momentum=args.momentum,
        )
        for i in range(args.honest)
    ]
    alie = {"type": "little", "z": None if args.z == "formula" else float(args.z)}
    byzantine = [ByzantineNode(alie) for _ in range(args.f)] if attack else []
    strategy = parse_strategy(rule)
    stages = list(strategy.stages) if isinstance(strategy, Pipeline) else [strategy]
    pre, agg = stages[:-1], stages[-1]
    ps = ParameterServer(
        honest, byzantine, agg, pre_aggregator=pre or None, lr=args.lr, seed=args.seed
    )
    evaluator = honest[0]
    accs = []
    for step in range(1, args.steps + 1):
        ps.round()
        if step % args.eval_every == 0:
            with torch.inference_mode():
                net = ps.model
                net.eval()
                pred = net(test.x).argmax(dim=1)
                accs.append(float((pred == test.y).float().mean()))
    ps.shutdown()
    del evaluator
    return accs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mnist-2nn")
    parser.add_argument("--honest", type=int, default=10)
    parser.add_argument("--f", type=int, default=6)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--last", type=int, default=4, help="evaluations averaged at the end")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument(
        "--z",
        default="1.5",
        help="ALIE factor: a number (ByzFL's tau; default 1.5) or 'formula' (Baruch's z_max)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--rules", nargs="+", default=list(rules(1)))
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from velocity.data import load_dataset, partition

    train = load_dataset("mnist", split="train", data_dir=args.data_dir)
    test = load_dataset("mnist", split="test", data_dir=args.data_dir)
    part = partition(train.y, args.honest, "dirichlet", seed=args.seed, alpha=args.alpha)
    data = (train, test, part)
    n = args.honest + args.f
    print(
        f"# ALIE vs NNM: {args.model}, {args.honest} honest + {args.f} Byzantine (N={n}), "
        f"Dirichlet alpha={args.alpha}, {args.steps} steps, batch {args.batch_size}, "
        f"lr {args.lr}, worker momentum {args.momentum}, ALIE z={args.z}, seed {args.seed}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )
    start = time.perf_counter()
    reference = statistics.fmean(run("FedAvg", False, args, data)[-args.last :])
    rows = [
        f"Reference: FedAvg without attack (the {args.honest} honest nodes only): "
        f"{100 * reference:.1f}%.",
        "",
        f"| rule | under ALIE (f={args.f}) | drop vs reference |",
        "|---|---:|---:|",
    ]
    print(rows[0], flush=True)
    table_of_rules = rules(args.f)
    for name in args.rules:
        hit = statistics.fmean(run(table_of_rules[name], True, args, data)[-args.last :])
        rows.append(f"| {name} | {100 * hit:.1f} | {100 * (reference - hit):.1f} |")
        print(rows[-1], flush=True)
    table = "\n".join(rows)
    note = (
        f"\nAccuracy (%): mean of the last {args.last} evaluations (every {args.eval_every} "
        f"steps). {time.perf_counter() - start:.0f} s."
    )
    print()
    print(table + note)
    if args.markdown:
        args.markdown.write_text(table + note + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
