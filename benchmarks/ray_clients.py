"""Ray actors against the in-process provider: FedAvg rounds on MNIST, time ratio Ray / local.

The issue's workload: the MNIST training split cut into 1,000 IID clients of 60 examples,
the logistic regression (``velocity.models.build_model("logreg")``), 100 clients per round
(``client_fraction=0.1``), B = 10, E = 1 (six SGD steps per client), FedAvg. Two engines
built by ``build_engine`` over the same federation: one with ``SequentialClients`` in this
process, one ``RayClients`` engine (``backend: {type: ray}``, ``--actors`` actors) per entry of
``--actor-threads`` (torch threads per actor; default ``driver,1``: the driver's count, the
bit-identical default policy, and 1 thread, so that 2 actors use 2 threads in all).
Their rounds alternate (round 1 of each is a warm-up: the Ray actors start there and are
timed apart), so machine noise hits both alike, and both wait passively at OpenMP barriers
(``OMP_WAIT_POLICY=PASSIVE`` unless set: the actors' default, see
``velocity.sim._ray.actor_runtime_env``). Printed, per Ray engine: the ratio of the
median round times **Ray / in-process** measured in this run (below 1: Ray is faster), the
actor start-up time, and whether its final model is bit-identical to the in-process one.

    VELOCITY_DATA=/work/shared/data python benchmarks/ray_clients.py                # full
    VELOCITY_DATA=/work/shared/data python benchmarks/ray_clients.py --quick        # small
    python benchmarks/ray_clients.py --rounds 21 --actors 2 --actor-threads 1 --json out.json

Target: ratio <= 1.2 with 2 actors (1,000 clients, 100 per round).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
# The Ray actors wait passively at OpenMP barriers (velocity.sim._ray.actor_runtime_env); the
# in-process side does too, so that other load on the machine hurts both alike (with the
# spinning default, an in-process 2-thread team on a busy 2-core machine was up to 30x slower).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    import velocity  # noqa: F401
except ImportError:  # run from a checkout without ``pip install -e .``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SAMPLES_PER_CLIENT = 60
BATCH = 10
LR = 0.05
TARGET = 1.2


def _engine(train: Any, num_clients: int, fraction: float, backend: Any) -> Any:
    """A FedAvg engine over ``num_clients`` IID MNIST clients of 60 examples (logreg)."""
    from velocity._random import derive_seed
    from velocity.client import TrainConfig, Trainer
    from velocity.data import partition
    from velocity.models import build_model
    from velocity.server import build_engine
    from velocity.sim import ClientPopulation, SequentialClients, SimulationSettings
    from velocity.strategies import FedAvg

    labels = train.y[: num_clients * SAMPLES_PER_CLIENT]
    part = partition(labels, num_clients, "iid", seed=derive_seed(0, "partition"))
    population = ClientPopulation(part.order, part.offsets)
    model = build_model("logreg", in_features=int(train.x[0].numel()), num_classes=10, seed=1)
    trainer = Trainer(model, TrainConfig(batch_size=BATCH, lr=LR, local_epochs=1))
    base = SequentialClients(trainer, train.x, train.y, population, seed=0, num_classes=10)
    spec = trainer.spec
    return build_engine(
        base=base,
        spec=spec,
        init_params=spec.flatten(model.state_dict()),
        strategy=FedAvg(),
        settings=SimulationSettings(seed=0, client_fraction=fraction),
        evaluate=None,
        backend=backend,
    )


def measure(
    *,
    num_clients: int,
    fraction: float,
    rounds: int,
    actors: int,
    actor_threads: list[int | None],
    data_dir: str | None,
    address: str | None,
) -> list[dict[str, Any]]:
    """The in-process engine and one Ray engine per ``actor_threads`` entry (``None``: the
    driver's count), ``rounds`` rounds each, alternately (round 1 untimed): one result per
    Ray engine, its ratio of median round times to the in-process one's."""
    import ray
    import torch

    from velocity.data import load_dataset
    from velocity.sim.backends import BackendSpec

    if not ray.is_initialized():
        if address is None:
            # each actor reserves one CPU; only one engine trains at a time, so the local
            # instance declares a CPU per actor of every Ray engine
            ray.init(
                address="local",
                num_cpus=max(os.cpu_count() or 1, actors * len(actor_threads)),
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                logging_level=logging.ERROR,
            )
        else:
            ray.init(address=address, log_to_driver=False)
    train = load_dataset("mnist", split="train", data_dir=data_dir)
    engines = {"local": _engine(train, num_clients, fraction, "sequential")}
    for threads in actor_threads:
        spec = BackendSpec(type="ray", num_actors=actors, num_threads=threads, address=address)
        engines[f"ray-{threads or 'driver'}"] = _engine(train, num_clients, fraction, spec)
    times: dict[str, list[float]] = {k: [] for k in engines}
    first: dict[str, float] = {}
    try:
        per_round_clients = 0
        for kind, engine in engines.items():  # round 1: warm-up; the actors start here
            start = time.perf_counter()
            per_round_clients = len(engine.run_round().selected_client_ids)
            first[kind] = time.perf_counter() - start
        for _ in range(rounds - 1):
            for kind, engine in engines.items():
                start = time.perf_counter()
                engine.run_round()
                times[kind].append(time.perf_counter() - start)
        info = {k: list(e.provider.actor_info) for k, e in engines.items() if k != "local"}
    finally:
        for kind, engine in engines.items():
            if kind != "local":
                engine.provider.close()
    local = statistics.median(times["local"])
    results = []
    for kind, engine in engines.items():
        if kind == "local":
            continue
        ray_s = statistics.median(times[kind])
        results.append(
            {
                "clients": num_clients,
                "clients_per_round": per_round_clients,
                "rounds": rounds,
                "actors": actors,
                "actor_threads": info[kind][0]["threads"] if info[kind] else None,
                "driver_threads": torch.get_num_threads(),
                "ratio": ray_s / local,
                "local_round_s": local,
                "ray_round_s": ray_s,
                "ray_first_round_s": first[kind],
                "bit_identical": bool(
                    torch.equal(engines["local"].global_params, engine.global_params)
                ),
                "target": TARGET,
            }
        )
    return results


def _threads(text: str) -> list[int | None]:
    return [None if t == "driver" else int(t) for t in text.split(",")]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 clients, 20 per round, 4 rounds")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=11, help="including the warm-up round")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument(
        "--actor-threads",
        type=_threads,
        default=[None, 1],
        help="torch threads per actor, one Ray engine each ('driver': ours); default driver,1",
    )
    parser.add_argument("--address", default=None, help="an existing Ray cluster (host:port)")
    parser.add_argument("--data-dir", default=os.environ.get("VELOCITY_DATA"))
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    clients, rounds = (200, 4) if args.quick else (args.clients, args.rounds)
    if rounds < 2:
        parser.error("--rounds must be >= 2 (round 1 is the warm-up)")
    results = measure(
        num_clients=clients,
        fraction=args.fraction,
        rounds=rounds,
        actors=args.actors,
        actor_threads=args.actor_threads,
        data_dir=args.data_dir,
        address=args.address,
    )
    for r in results:
        met = "met" if r["ratio"] <= TARGET else "MISSED"
        print(
            f"logreg  {clients} clients x {SAMPLES_PER_CLIENT}, {r['clients_per_round']} per "
            f"round, B={BATCH}, E=1, {rounds - 1} timed rounds; driver {r['driver_threads']} "
            f"threads, {r['actors']} actors x {r['actor_threads']} threads: round time Ray / "
            f"in-process {r['ratio']:.2f}x (target <= {TARGET:g}x, {met}); median round "
            f"{r['ray_round_s']:.3f} s vs {r['local_round_s']:.3f} s, first Ray round (actor "
            f"start) {r['ray_first_round_s']:.1f} s; models bit-identical: {r['bit_identical']}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
