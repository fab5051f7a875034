"""Governance overhead: the baseline experiment with ``governance.enabled`` off and on.

Runs ``configs/baseline.yaml`` (or ``--config``) alternately without and with governance
(audit log, signature, replay manifest, and the research metrics with ``--metrics``) in this
one process, ``--repeats`` times each, and reports the ratio of the median wall times
(on / off). The two runs must end with the same model digest (governance never changes the
model); the script says so or fails. Target: ratio <= 1.05.

    python benchmarks/governance.py                      # 10 rounds, 1 repeat each
    python benchmarks/governance.py --rounds 3 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "baseline.yaml"))
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--metrics", action="store_true", help="also turn the research metrics on")
    args = parser.parse_args(argv)

    from velocity.experiments import load_config
    from velocity.experiments.runner import run_experiment
    from velocity.governance import generate_signing_key

    base = load_config(args.config)
    updates: dict[str, object] = {"output.save_plots": False}
    if args.rounds is not None:
        updates["training.num_rounds"] = args.rounds
    base = base.with_updates(updates)
    times: dict[str, list[float]] = {"off": [], "on": []}
    digests: dict[str, set[str]] = {"off": set(), "on": set()}
    with tempfile.TemporaryDirectory(prefix="velocity-gov-bench-") as tmp:
        key = Path(tmp) / "key.pem"
        generate_signing_key(key)
        governed: dict[str, object] = {
            "governance.enabled": True,
            "governance.sign": True,
            "governance.signing_key": str(key),
        }
        if args.metrics:
            governed.update(
                {
                    "metrics.cosine_similarity": True,
                    "metrics.weight_divergence": True,
                    "metrics.client_eval": True,
                }
            )
        configs = {"off": base, "on": base.with_updates(governed)}
        for repeat in range(args.repeats):
            for mode in ("off", "on"):
                start = time.perf_counter()
                result = run_experiment(configs[mode], output_dir=Path(tmp) / f"{mode}{repeat}")
                times[mode].append(time.perf_counter() - start)
                digests[mode].add(result.final_model_digest)
                print(f"{mode:>3} run {repeat + 1}: {times[mode][-1]:.1f} s", file=sys.stderr)
    ratio = statistics.median(times["on"]) / statistics.median(times["off"])
    same = digests["off"] == digests["on"] and len(digests["off"]) == 1
    print(f"governance on / off wall time: {ratio:.3f} (target <= 1.05)")
    print(f"same final model digest on and off: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
