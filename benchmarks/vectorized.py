"""Vectorized against sequential simulated clients: one FedAvg round on MNIST.

The McMahan et al. (2017) MNIST data split into 1,000 IID clients of 60 examples; one round
in which all 1,000 clients train (B = 10, E = 1: six SGD steps each), on the logistic
regression and on the paper's "2NN" (``velocity.models.build_model``), once with
``SequentialClients`` and once with ``VectorizedClients``, alternately, in one process, so
machine noise hits both alike. Two timings, each the median over ``--repeats``:

- **clients**: the provider alone, ``submit`` + ``collect`` of the round's tasks as the
  engine calls them (training, each update written into its row of the round's stack and
  SHA-256-digested). The throughput the two providers differ in; the targets apply here.
- **engine**: the whole round of ``build_engine`` (as ``make_simulation`` wires it), which
  adds what both share: admission re-hashing every update, and aggregation.

Printed: the throughput ratios (sequential time over vectorized time; no absolute times)
and the largest differences between the two providers' updates and models.

    VELOCITY_DATA=/work/shared/data python benchmarks/vectorized.py            # 1,000 clients
    python benchmarks/vectorized.py --quick                                   # 50 clients
    python benchmarks/vectorized.py --models logreg --repeats 5 --json out.json
    python benchmarks/vectorized.py --device cuda --memory-mb 1024             # on a GPU

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


def _setup(model_id: str, train: Any, num_clients: int) -> tuple[Any, Any, Any]:
    """``num_clients`` IID MNIST clients of 60 examples, a fresh model and its trainer."""
    from velocity._random import derive_seed
    from velocity.client import TrainConfig, Trainer
    from velocity.data import partition
    from velocity.models import build_model
    from velocity.sim import ClientPopulation

    labels = train.y[: num_clients * SAMPLES_PER_CLIENT]
    part = partition(labels, num_clients, "iid", seed=derive_seed(0, "partition"))
    population = ClientPopulation(part.order, part.offsets)
    extra = {"in_features": int(train.x[0].numel())} if model_id == "logreg" else {}
    model = build_model(model_id, num_classes=10, seed=1, **extra).to(DEVICE)
    trainer = Trainer(model, TrainConfig(batch_size=BATCH, lr=LR, local_epochs=1))
    return population, model, trainer


def _clients(kind: str, trainer: Any, train: Any, population: Any) -> Any:
    from velocity.sim import SequentialClients
    from velocity.sim.vectorized import DEFAULT_MEMORY_MB, VectorizedClients

    x, y = train.x.to(DEVICE), train.y.to(DEVICE)
    if kind == "vectorized":
        memory = DEFAULT_MEMORY_MB if MEMORY_MB is None else MEMORY_MB
        return VectorizedClients(
            trainer, x, y, population, seed=0, num_classes=10, memory_mb=memory
        )
    return SequentialClients(trainer, x, y, population, seed=0, num_classes=10)


DEVICE = "cpu"
"""Where the clients' model and data live (``--device``); the stack stays on the CPU."""
MEMORY_MB: float | None = None
"""``VectorizedClients.memory_mb`` (``--memory-mb``); its default when ``None``."""


def clients_round(kind: str, model_id: str, train: Any, num_clients: int) -> tuple[float, Any]:
    """One round of every client through the provider alone (``submit`` + ``collect``, as
    the engine calls them, each update written into its row of the round's stack and
    digested): seconds and the ``(n, d)`` stack."""
    from velocity.types import ClientTask

    population, model, trainer = _setup(model_id, train, num_clients)
    provider = _clients(kind, trainer, train, population)
    params = trainer.spec.flatten(model.state_dict()).cpu()
    stack = trainer.spec.stack(num_clients)
    tasks = [
        ClientTask(population.client_id(i), 1, 0, params, out=stack[i]) for i in range(num_clients)
    ]
    start = time.perf_counter()
    provider.submit(tasks)
    results = provider.collect()
    elapsed = time.perf_counter() - start
    assert len(results) == num_clients
    return elapsed, stack


def engine_round(kind: str, model_id: str, train: Any, num_clients: int) -> tuple[float, Any]:
    """One whole FedAvg round of the engine (``build_engine``, as ``make_simulation`` wires
    it; admission re-hashes every update, then aggregation): seconds and the new model."""
    from velocity.server import build_engine
    from velocity.sim import SimulationSettings
    from velocity.strategies import FedAvg

    population, model, trainer = _setup(model_id, train, num_clients)
    spec = trainer.spec
    engine = build_engine(
        base=_clients(kind, trainer, train, population),
        spec=spec,
        init_params=spec.flatten(model.state_dict()).cpu(),
        strategy=FedAvg(),
        settings=SimulationSettings(seed=0, client_fraction=1.0),
        evaluate=None,
    )
    start = time.perf_counter()
    engine.run_round()
    return time.perf_counter() - start, engine.global_params


def measure(
    model_id: str, *, num_clients: int, repeats: int, data_dir: str | None
) -> dict[str, Any]:
    """Both providers ``repeats`` times, alternately; ratios of the median times."""
    import torch

    from velocity.data import load_dataset

    train = load_dataset("mnist", split="train", data_dir=data_dir)
    out: dict[str, Any] = {"model": model_id, "clients": num_clients}
    for what, fn in (("clients", clients_round), ("engine", engine_round)):
        times: dict[str, list[float]] = {"sequential": [], "vectorized": []}
        got: dict[str, Any] = {}
        for kind in ("sequential", "vectorized"):  # warm-up, not timed
            fn(kind, model_id, train, min(num_clients, 20))
        for _ in range(repeats):
            for kind in ("sequential", "vectorized"):
                seconds, got[kind] = fn(kind, model_id, train, num_clients)
                times[kind].append(seconds)
        seq = statistics.median(times["sequential"])
        vec = statistics.median(times["vectorized"])
        out[f"{what}_ratio"] = seq / vec
        out[f"{what}_max_abs_diff"] = float((got["sequential"] - got["vectorized"]).abs().max())
    out["target"] = TARGETS.get(model_id)
    out["torch_threads"] = torch.get_num_threads()
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 clients, 1 repeat")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="logreg,mnist-2nn")
    parser.add_argument("--data-dir", default=os.environ.get("VELOCITY_DATA"))
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:<i> or auto")
    parser.add_argument("--memory-mb", type=float, default=None, help="vectorized chunk budget")
    args = parser.parse_args(argv)
    from velocity.client import resolve_device

    global DEVICE, MEMORY_MB
    DEVICE, MEMORY_MB = str(resolve_device(args.device, field="--device")), args.memory_mb
    clients, repeats = (50, 1) if args.quick else (args.clients, args.repeats)
    results = []
    for model_id in args.models.split(","):
        r = measure(model_id, num_clients=clients, repeats=repeats, data_dir=args.data_dir)
        met = "" if r["target"] is None else f" (target >= {r['target']:g}x)"
        print(
            f"{model_id:>10}  {clients} clients x {SAMPLES_PER_CLIENT}, B={BATCH}, E=1, "
            f"{r['torch_threads']} threads: throughput vectorized/sequential "
            f"clients {r['clients_ratio']:.2f}x{met}, whole engine round "
            f"{r['engine_ratio']:.2f}x; max |difference| updates "
            f"{r['clients_max_abs_diff']:.1e}, model {r['engine_max_abs_diff']:.1e}"
        )
        results.append(r)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
