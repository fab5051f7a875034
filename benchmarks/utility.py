"""Privacy/utility and compression/utility on MNIST: accuracy next to the reference run.

Two studies, each run side by side in this one process (same data, model, seed):

- ``privacy``: ``configs/dp_fedavg.yaml`` without privacy (the reference) and with the budget
  set to each ``--epsilons`` value; reports final accuracy, epsilon spent and the accuracy gap.
- ``compression``: ``configs/baseline.yaml`` uncompressed (the reference), top-k at
  ``--ratio`` with error feedback and without; reports accuracy, the gap to the reference
  (target: within 1.5 points with error feedback) and the uplink bytes ratio.

    python benchmarks/utility.py privacy --epsilons 0.5 1 4
    python benchmarks/utility.py compression --ratio 0.01
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

ROOT = Path(__file__).resolve().parents[1]


def _run(config: object, tmp: str, label: str) -> dict[str, object]:
    from velocity.experiments import ExperimentConfig
    from velocity.experiments.outputs import build_summary
    from velocity.experiments.runner import run_experiment

    assert isinstance(config, ExperimentConfig)
    result = run_experiment(config, output_dir=Path(tmp) / label)
    summary = build_summary(result)
    row = {
        "run": label,
        "accuracy": result.final_accuracy,
        "epsilon": (summary.get("privacy") or {}).get("epsilon"),
        "noise_multiplier": (summary.get("privacy") or {}).get("noise_multiplier"),
        "bytes_up": summary["total_bytes_up"],
        "wall_s": round(result.wall_time_s, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=["privacy", "compression"])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.5, 1.0, 4.0])
    parser.add_argument("--ratio", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)

    from velocity.experiments import load_config

    rows = []
    with tempfile.TemporaryDirectory(prefix="velocity-utility-") as tmp:
        if args.study == "privacy":
            base = load_config(ROOT / "configs" / "dp_fedavg.yaml")
            common: dict[str, object] = {"output.save_plots": False}
            if args.rounds is not None:
                common["training.num_rounds"] = args.rounds
            rows.append(_run(base.with_updates({**common, "privacy.enabled": False}), tmp, "none"))
            for eps in args.epsilons:
                cfg = base.with_updates({**common, "privacy.epsilon": eps})
                rows.append(_run(cfg, tmp, f"eps={eps:g}"))
        else:
            base = load_config(ROOT / "configs" / "baseline.yaml")
            common = {"output.save_plots": False}
            if args.rounds is not None:
                common["training.num_rounds"] = args.rounds
            rows.append(_run(base.with_updates(common), tmp, "float32"))
            for feedback in (True, False):
                cfg = base.with_updates(
                    {
                        **common,
                        "compression.enabled": True,
                        "compression.strategy": "topk",
                        "compression.topk_ratio": args.ratio,
                        "compression.error_feedback": feedback,
                    }
                )
                rows.append(_run(cfg, tmp, f"topk={args.ratio:g} ef={feedback}"))
    ref = rows[0]
    print("\nrun | accuracy | gap (points) | epsilon | uplink bytes ratio")
    for row in rows:
        acc = float(row["accuracy"] or 0.0)
        gap = 100 * (float(ref["accuracy"] or 0.0) - acc)
        ratio = int(row["bytes_up"]) / max(1, int(ref["bytes_up"]))  # type: ignore[call-overload]
        eps = row["epsilon"]
        print(f"{row['run']} | {100 * acc:.2f}% | {gap:+.2f} | {eps} | {ratio:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
