"""Simulation overhead: one FedAvg round of the McMahan et al. (2017) MNIST setup.

Compares VelocityFL's round loop (``velocity.server.Simulation`` with ``SequentialClients``)
against a plain PyTorch loop doing the same training work: 10 clients per round, each 60 SGD
steps of batch 10 (600 samples, E = 1, B = 10) on the paper's CNN, then a weighted average.
The plain loop keeps its clients in a Python list of index tensors; VelocityFL registers
100, 10,000 or 100,000 clients (a lazy ``VirtualPopulation``) and selects 10 per round.

Every configuration runs in its own subprocess so peak memory (``ru_maxrss``) is its own.
Reported, per configuration: median time of rounds 2..R, first round (start-up included:
building the population, model, trainer and round loop), and peak RSS. Ratios are against
the plain loop measured in the same invocation.

    python benchmarks/simulation.py                 # 100 / 10,000 / 100,000 clients
    python benchmarks/simulation.py --rounds 4 --clients 100 --markdown out.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CLIENTS_PER_ROUND = 10
SAMPLES_PER_CLIENT = 600
BATCH = 10
LR = 0.05


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _mnist(data_dir: str | None) -> tuple[Any, Any]:
    from velocity.data import load_dataset

    ds = load_dataset("mnist", split="train", data_dir=data_dir)
    return ds.x, ds.y


def worker_loop(rounds: int, data_dir: str | None) -> dict[str, Any]:
    """A plain PyTorch FedAvg loop: no framework, same work."""
    t0 = time.perf_counter()
    import torch

    from velocity.models import build_model

    x, y = _mnist(data_dir)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(x.shape[0], generator=gen)
    clients = [perm[i * SAMPLES_PER_CLIENT : (i + 1) * SAMPLES_PER_CLIENT] for i in range(100)]
    model = build_model("mnist-cnn", seed=0)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for r in range(rounds):
        start = time.perf_counter() if r else t0
        chosen = torch.randperm(100, generator=gen)[:CLIENTS_PER_ROUND].tolist()
        acc = {k: torch.zeros_like(v) for k, v in global_state.items()}
        for c in chosen:
            model.load_state_dict(global_state)
            opt = torch.optim.SGD(model.parameters(), lr=LR)
            idx = clients[c][torch.randperm(SAMPLES_PER_CLIENT, generator=gen)]
            for b in range(0, SAMPLES_PER_CLIENT, BATCH):
                batch = idx[b : b + BATCH]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x.index_select(0, batch)), y.index_select(0, batch))
                loss.backward()
                opt.step()
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    acc[k] += (v - global_state[k]) * (1.0 / CLIENTS_PER_ROUND)
        with torch.no_grad():
            global_state = {k: global_state[k] + acc[k] for k in global_state}
        times.append(time.perf_counter() - start)
    return {"times": times, "rss_mb": _rss_mb()}


def worker_velocity(rounds: int, clients: int, data_dir: str | None) -> dict[str, Any]:
    """VelocityFL: registered population, 10 selected per round, FedAvg, no evaluation."""
    t0 = time.perf_counter()
    import torch

    from velocity.client import TrainConfig, Trainer
    from velocity.models import build_model
    from velocity.server.simulation import Simulation, SimulationSettings
    from velocity.sim import SequentialClients, VirtualPopulation
    from velocity.strategies import FedAvg

    x, y = _mnist(data_dir)
    population = VirtualPopulation(
        clients, pool_size=x.shape[0], samples_per_client=SAMPLES_PER_CLIENT, seed=0
    )
    model = build_model("mnist-cnn", seed=0)
    trainer = Trainer(model, TrainConfig(batch_size=BATCH, local_epochs=1, lr=LR))
    sim = Simulation(
        provider=SequentialClients(trainer, x, y, population, seed=0),
        population=population,  # type: ignore[arg-type]
        spec=trainer.spec,
        init_params=trainer.spec.flatten(model.state_dict()),
        strategy=FedAvg(),
        settings=SimulationSettings(seed=0, client_fraction=CLIENTS_PER_ROUND / clients),
    )
    times = []
    for r in range(rounds):
        start = time.perf_counter() if r else t0
        sim.run_round()
        times.append(time.perf_counter() - start)
    del torch
    return {"times": times, "rss_mb": _rss_mb()}


def _spawn(args: list[str]) -> dict[str, Any]:
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 10_000, 100_000])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--worker", choices=["loop", "velocity"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "loop":
        print(json.dumps(worker_loop(args.rounds, args.data_dir)))
        return 0
    if args.worker == "velocity":
        print(json.dumps(worker_velocity(args.rounds, args.n, args.data_dir)))
        return 0

    import torch

    common = ["--rounds", str(args.rounds)] + (
        ["--data-dir", args.data_dir] if args.data_dir else []
    )
    print(
        f"# simulation benchmark: torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, {args.rounds} rounds, "
        f"{CLIENTS_PER_ROUND} clients x {SAMPLES_PER_CLIENT // BATCH} steps (B={BATCH}) per round"
    )
    loop = _spawn(["--worker", "loop", *common])
    loop_round = statistics.median(loop["times"][1:])
    rows = [
        "| setup | registered clients | round (s) | vs loop | first round (s) | first / later "
        "| peak RSS (MB) | RSS vs loop |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| plain PyTorch loop | 100 | {loop_round:.3f} | 1.00x | {loop['times'][0]:.3f} | "
        f"{loop['times'][0] / loop_round:.2f}x | {loop['rss_mb']:.0f} | 1.00x |",
    ]
    base_rss = None
    for n in args.clients:
        res = _spawn(["--worker", "velocity", "--n", str(n), *common])
        later = statistics.median(res["times"][1:])
        base_rss = res["rss_mb"] if base_rss is None else base_rss
        rows.append(
            f"| VelocityFL | {n:,} | {later:.3f} | {later / loop_round:.2f}x | "
            f"{res['times'][0]:.3f} | {res['times'][0] / later:.2f}x | {res['rss_mb']:.0f} | "
            f"{res['rss_mb'] / loop['rss_mb']:.2f}x |"
        )
        print(rows[-1], flush=True)
    table = "\n".join(rows)
    extra = ""
    if base_rss is not None and len(args.clients) > 1:
        last = rows[-1].split("|")[7].strip()
        extra = (
            f"\nRegistering {args.clients[-1]:,} instead of {args.clients[0]:,} clients: peak RSS "
            f"{base_rss:.0f} MB -> {last} MB."
        )
    print()
    print(table + extra)
    if args.markdown:
        args.markdown.write_text(table + extra + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
