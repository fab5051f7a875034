"""Vectorized against sequential simulated clients: one FedAvg round on MNIST.

The McMahan et al. (2017) MNIST data split into 1,000 IID clients of 60 examples; one round
in which all 1,000 clients train (B = 10, E = 1: six SGD steps each), on the logistic
regression and on the paper's "2NN" (``velocity.models.build_model``). The same round runs
through the round engine (``build_engine``, as ``make_simulation`` wires it) once with
``SequentialClients`` and once with ``VectorizedClients``, alternately, in one process, so
machine noise hits both alike. Reported: the throughput ratio (sequential round time over
vectorized round time, median over the repeats) and the largest difference between the two
rounds' models.

    VELOCITY_DATA=/work/shared/data python benchmarks/vectorized.py            # 1,000 clients
    python benchmarks/vectorized.py --quick                                   # 50 clients
    python benchmarks/vectorized.py --models logreg --repeats 5 --json out.json

Targets: >= 5x for logreg, >= 2x for the 2NN (1,000 clients).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

try:
    import velocity  # noqa: F401
except ImportError:  # run from a checkout without ``pip install -e .``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SAMPLES_PER_CLIENT = 60
BATCH = 10
LR = 0.05
TARGETS = {"logreg": 5.0, "mnist-2nn": 2.0}


def _engine(kind: str, model_id: str, train: Any, num_clients: int) -> Any:
    """A round engine over ``num_clients`` MNIST clients, every one selected per round."""
    from velocity._random import derive_seed
    from velocity.client import TrainConfig, Trainer
    from velocity.data import partition
    from velocity.models import build_model
    from velocity.server import build_engine
    from velocity.sim import ClientPopulation, SequentialClients, SimulationSettings
    from velocity.sim.vectorized import VectorizedClients
    from velocity.strategies import FedAvg

    seed = 0
    used = num_clients * SAMPLES_PER_CLIENT
    labels = train.y[:used]
    part = partition(labels, num_clients, "iid", seed=derive_seed(seed, "partition"))
    population = ClientPopulation(part.order, part.offsets)
    extra = {"in_features": int(train.x[0].numel())} if model_id == "logreg" else {}
    model = build_model(model_id, num_classes=10, seed=1, **extra)
    trainer = Trainer(model, TrainConfig(batch_size=BATCH, lr=LR, local_epochs=1))
    cls = VectorizedClients if kind == "vectorized" else SequentialClients
    base = cls(trainer, train.x, train.y, population, seed=seed, num_classes=10)
    spec = trainer.spec
    return build_engine(
        base=base,
        spec=spec,
        init_params=spec.flatten(model.state_dict()),
        strategy=FedAvg(),
        settings=SimulationSettings(seed=seed, client_fraction=1.0),
        evaluate=None,
    )


def measure(
    model_id: str, *, num_clients: int, repeats: int, data_dir: str | None
) -> dict[str, Any]:
    """Time one round per provider ``repeats`` times, alternately; the ratio of medians."""
    import torch

    from velocity.data import load_dataset

    train = load_dataset("mnist", split="train", data_dir=data_dir)
    times: dict[str, list[float]] = {"sequential": [], "vectorized": []}
    params: dict[str, Any] = {}
    for _ in range(repeats):
        for kind in ("sequential", "vectorized"):
            engine = _engine(kind, model_id, train, num_clients)
            start = time.perf_counter()
            engine.run_round()
            times[kind].append(time.perf_counter() - start)
            params[kind] = engine.global_params
    seq = statistics.median(times["sequential"])
    vec = statistics.median(times["vectorized"])
    diff = float((params["sequential"] - params["vectorized"]).abs().max())
    return {
        "model": model_id,
        "clients": num_clients,
        "ratio": seq / vec,
        "sequential_s": seq,
        "vectorized_s": vec,
        "max_abs_model_diff": diff,
        "target": TARGETS.get(model_id),
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 clients, 1 repeat")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="logreg,mnist-2nn")
    parser.add_argument("--data-dir", default=os.environ.get("VELOCITY_DATA"))
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    clients, repeats = (50, 1) if args.quick else (args.clients, args.repeats)
    results = []
    for model_id in args.models.split(","):
        r = measure(model_id, num_clients=clients, repeats=repeats, data_dir=args.data_dir)
        met = "" if r["target"] is None else f"  (target >= {r['target']:g}x)"
        print(
            f"{model_id:>10}  {clients} clients x {SAMPLES_PER_CLIENT}, B={BATCH}, E=1: "
            f"vectorized/sequential throughput ratio {r['ratio']:.2f}x{met}; "
            f"max |model difference| {r['max_abs_model_diff']:.2e}"
        )
        results.append(r)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
