"""Simulation overhead: one FedAvg round of the McMahan et al. (2017) MNIST setup.

Compares VelocityFL's round engine (``velocity.server.RoundEngine`` with ``SequentialClients``)
against a plain PyTorch loop doing the same training work: 10 clients per round, each 60 SGD
steps of batch 10 (600 samples, E = 1, B = 10) on the paper's CNN, then a weighted average.
The plain loop keeps its clients in a Python list of index tensors; VelocityFL registers
100, 10,000 or 100,000 clients (a lazy ``VirtualPopulation``) and selects 10 per round.

Two measurements:

- **Interleaved** (the round-time ratio): one process builds the plain loop and a VelocityFL
  round loop per population size and runs their rounds in turn (loop, 100, 10k, 100k, loop,
  ...), so machine noise hits all of them alike; the median of rounds 2..R is compared.
- **Own process** per configuration: peak memory (``ru_maxrss``), the median later round, and
  the first round with start-up, both from process start (interpreter, ``import torch``,
  data, model) and from after ``import torch`` (what the framework itself adds).

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

# Transparent huge pages for PyTorch's large CPU tensors, as the `velocity` command sets them;
# read once per process at the first large allocation, so set before torch is imported. (Worker
# processes inherit it. This script used to get it as a side effect of `import velocity`,
# which now sets nothing.)
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

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


class PlainLoop:
    """A plain PyTorch FedAvg loop: no framework, same work."""

    def __init__(self, x: Any, y: Any) -> None:
        import torch

        from velocity.models import build_model

        self.torch = torch
        self.x, self.y = x, y
        self.gen = torch.Generator().manual_seed(0)
        perm = torch.randperm(x.shape[0], generator=self.gen)
        n = SAMPLES_PER_CLIENT
        self.clients = [perm[i * n : (i + 1) * n] for i in range(100)]
        self.model = build_model("mnist-cnn", seed=0)
        self.state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def round(self) -> None:
        torch, model, state = self.torch, self.model, self.state
        chosen = torch.randperm(100, generator=self.gen)[:CLIENTS_PER_ROUND].tolist()
        acc = {k: torch.zeros_like(v) for k, v in state.items()}
        for c in chosen:
            model.load_state_dict(state)
            opt = torch.optim.SGD(model.parameters(), lr=LR)
            idx = self.clients[c][torch.randperm(SAMPLES_PER_CLIENT, generator=self.gen)]
            for b in range(0, SAMPLES_PER_CLIENT, BATCH):
                batch = idx[b : b + BATCH]
                opt.zero_grad(set_to_none=True)
                out = model(self.x.index_select(0, batch))
                loss = self.loss_fn(out, self.y.index_select(0, batch))
                loss.backward()
                opt.step()
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    acc[k] += (v - state[k]) * (1.0 / CLIENTS_PER_ROUND)
        with torch.no_grad():
            self.state = {k: state[k] + acc[k] for k in state}


class VelocityRounds:
    """VelocityFL: registered population, 10 selected per round, FedAvg, no evaluation."""

    def __init__(self, x: Any, y: Any, clients: int) -> None:
        from velocity.client import TrainConfig, Trainer
        from velocity.models import build_model
        from velocity.server import build_engine
        from velocity.sim import SequentialClients, SimulationSettings, VirtualPopulation
        from velocity.strategies import FedAvg

        population = VirtualPopulation(
            clients, pool_size=x.shape[0], samples_per_client=SAMPLES_PER_CLIENT, seed=0
        )
        model = build_model("mnist-cnn", seed=0)
        trainer = Trainer(model, TrainConfig(batch_size=BATCH, local_epochs=1, lr=LR))
        self.sim = build_engine(
            base=SequentialClients(trainer, x, y, population, seed=0),
            spec=trainer.spec,
            init_params=trainer.spec.flatten(model.state_dict()),
            strategy=FedAvg(),
            settings=SimulationSettings(seed=0, client_fraction=CLIENTS_PER_ROUND / clients),
        )

    def round(self) -> None:
        self.sim.run_round()


def _worker(kind: str, rounds: int, clients: int, data_dir: str | None) -> dict[str, Any]:
    """One setup in a fresh process: round times (the first with start-up) and peak RSS.

    ``startup_s`` is everything before the first round from process start (interpreter,
    ``import torch``, data, model); ``framework_startup_s`` the part after ``import torch``.
    """
    t_process = time.perf_counter()
    import torch

    t_torch = time.perf_counter()
    x, y = _mnist(data_dir)
    runner: Any = PlainLoop(x, y) if kind == "loop" else VelocityRounds(x, y, clients)
    t_ready = time.perf_counter()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        runner.round()
        times.append(time.perf_counter() - start)
    del torch
    return {
        "times": times,
        "startup_s": t_ready - t_process,
        "framework_startup_s": t_ready - t_torch,
        "rss_mb": _rss_mb(),
    }


def _interleaved(rounds: int, clients: list[int], data_dir: str | None) -> dict[str, Any]:
    """All setups in one process, rounds interleaved (loop, V100, V10k, ..., loop, ...).

    Noise on a busy 2-core machine hits every setup alike, so the per-round ratios are
    comparable; the first (warm-up) round of each is dropped.
    """
    x, y = _mnist(data_dir)
    runners: dict[str, Any] = {"loop": PlainLoop(x, y)}
    for n in clients:
        runners[str(n)] = VelocityRounds(x, y, n)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for key, runner in runners.items():
            start = time.perf_counter()
            runner.round()
            times[key].append(time.perf_counter() - start)
    return {"times": times}


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
    parser.add_argument("--interleaved-rounds", type=int, default=8)
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 10_000, 100_000])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument(
        "--worker", choices=["loop", "velocity", "interleaved"], help=argparse.SUPPRESS
    )
    parser.add_argument("--n", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "interleaved":
        print(json.dumps(_interleaved(args.rounds, args.clients, args.data_dir)))
        return 0
    if args.worker is not None:
        print(json.dumps(_worker(args.worker, args.rounds, args.n, args.data_dir)))
        return 0

    import torch

    data = ["--data-dir", args.data_dir] if args.data_dir else []
    common = ["--rounds", str(args.rounds), *data]
    print(
        f"# simulation benchmark: torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, {CLIENTS_PER_ROUND} clients x "
        f"{SAMPLES_PER_CLIENT // BATCH} steps (B={BATCH}) per round"
    )
    mixed = _spawn(
        [
            "--worker",
            "interleaved",
            "--rounds",
            str(args.interleaved_rounds),
            "--clients",
            *map(str, args.clients),
            *data,
        ]
    )["times"]
    loop_mixed = statistics.median(mixed["loop"][1:])
    loop = _spawn(["--worker", "loop", *common])
    loop_round = statistics.median(loop["times"][1:])

    def first(res: dict[str, Any], later: float) -> str:
        whole = res["startup_s"] + res["times"][0]
        framework = res["framework_startup_s"] + res["times"][0]
        return f"{whole / later:.2f}x | {framework / later:.2f}x"

    rows = [
        "| setup | registered clients | round (s), interleaved | vs loop | round (s), own "
        "process | first / later (from process start) | first / later (after import torch) "
        "| peak RSS (MB) | RSS vs loop |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| plain PyTorch loop | 100 | {loop_mixed:.3f} | 1.00x | {loop_round:.3f} | "
        f"{first(loop, loop_round)} | {loop['rss_mb']:.0f} | 1.00x |",
    ]
    rss = []
    for n in args.clients:
        res = _spawn(["--worker", "velocity", "--n", str(n), *common])
        later = statistics.median(res["times"][1:])
        mixed_n = statistics.median(mixed[str(n)][1:])
        rss.append(res["rss_mb"])
        rows.append(
            f"| VelocityFL | {n:,} | {mixed_n:.3f} | {mixed_n / loop_mixed:.2f}x | {later:.3f} "
            f"| {first(res, later)} | {res['rss_mb']:.0f} | {res['rss_mb'] / loop['rss_mb']:.2f}x |"
        )
        print(rows[-1], flush=True)
    table = "\n".join(rows)
    extra = ""
    if len(rss) > 1:
        extra = (
            f"\nRegistering {args.clients[-1]:,} instead of {args.clients[0]:,} clients: peak RSS "
            f"{rss[0]:.0f} MB -> {rss[-1]:.0f} MB."
        )
    print()
    print(table + extra)
    if args.markdown:
        args.markdown.write_text(table + extra + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
