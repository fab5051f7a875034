"""DiLoCo against fully synchronous data-parallel training: char-transformer on Shakespeare.

Douillard et al. 2023, "DiLoCo: Distributed Low-Communication Training of Language Models".
Both arms train the registry's ``char-transformer`` from the same initialisation on the same
4 iid shards of the Shakespeare training windows, with the same AdamW settings, and see the
same examples in the same order:

- **DiLoCo** runs on the round engine (``make_simulation``): every round each of the 4
  workers takes ``H`` inner AdamW steps of batch ``B`` from the global model (its AdamW state
  kept between rounds, ``keep_optimizer_state``), and the server applies
  ``Pipeline(FedAvg(), DiLoCo(lr, momentum))`` (Nesterov SGD on the mean pseudo-gradient).
  One communication per ``H`` steps.
- **sync** is the reference, a plain PyTorch loop: one AdamW step per step on the ``4·B``
  batch made of the 4 workers' batches (= the 4 workers' gradients averaged every step).
  Step ``s`` uses exactly the batches DiLoCo's workers use in step ``s mod H`` of round
  ``s // H + 1`` (the simulated clients' batch order is reproduced from the same derived
  generators). One communication per step.

Both are evaluated on the same fixed random subset of the test windows (the last 20% of every
role's text) every ``--eval-every`` rounds (``H`` steps). The report gives the validation
loss against training windows seen and against communication rounds, the final ratio
DiLoCo / sync (target: <= 1.05 while communicating ``H`` times less often) and the wall
time of each arm; ``--plot`` draws both curves, ``--json`` writes every number.

    python benchmarks/diloco.py                        # H=50, 40 rounds: ~9 min on one core
    python benchmarks/diloco.py --plot docs/img/diloco_shakespeare.png --json diloco.json
    python benchmarks/diloco.py --also-reset           # + DiLoCo with a fresh AdamW per round
    python benchmarks/diloco.py --quick                # seconds: a smoke test

Every run is single-threaded (``torch.set_num_threads(1)``) unless ``--threads`` says
otherwise. Needs the Shakespeare text (``$VELOCITY_DATA`` or the cache; ``--data-dir``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from velocity._random import torch_generator  # noqa: E402
from velocity.client import TrainConfig, Trainer  # noqa: E402
from velocity.data import ArrayDataset, load_dataset  # noqa: E402
from velocity.models import build_model  # noqa: E402
from velocity.server.builder import make_simulation  # noqa: E402
from velocity.sim.provider import SequentialClients  # noqa: E402
from velocity.sim.settings import SimulationSettings  # noqa: E402
from velocity.strategies import DiLoCo, FedAvg, Pipeline  # noqa: E402

MODEL = "char-transformer"
WORKERS = 4


@dataclass
class Curve:
    """One arm's validation losses: after ``steps[i]`` steps of every worker (= sync steps),
    having seen ``windows[i]`` training windows and communicated ``comms[i]`` times."""

    name: str
    steps: list[int] = field(default_factory=list)
    windows: list[int] = field(default_factory=list)
    comms: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def add(self, steps: int, windows: int, comms: int, loss: float) -> None:
        self.steps.append(steps)
        self.windows.append(windows)
        self.comms.append(comms)
        self.loss.append(loss)


@dataclass(frozen=True)
class Settings:
    rounds: int
    inner_steps: int
    batch_size: int
    inner_lr: float
    weight_decay: float
    beta2: float
    outer_lr: float
    outer_momentum: float
    nesterov: bool
    eval_every: int
    val_windows: int
    train_windows: int | None
    seed: int
    inner_optimizer: str = "adamw"


def _subset(data: ArrayDataset, count: int | None, seed: int, label: str) -> ArrayDataset:
    """``count`` windows of ``data`` drawn without replacement (all of them for ``None``)."""
    if count is None or count >= len(data):
        return data
    rows = torch.randperm(len(data), generator=torch_generator(seed, label))[:count]
    rows = rows.sort().values
    return ArrayDataset(data.name, data.x[rows], data.y[rows], num_classes=data.num_classes)


def _train_config(s: Settings, *, keep_state: bool) -> TrainConfig:
    return TrainConfig(
        batch_size=s.batch_size,
        local_steps=s.inner_steps,
        lr=s.inner_lr,
        optimizer="adamw" if s.inner_optimizer == "adamw" else "sgd",
        beta2=s.beta2,
        weight_decay=s.weight_decay,
        keep_optimizer_state=keep_state,
    )


def run_diloco(
    s: Settings, train: ArrayDataset, val: ArrayDataset, *, keep_state: bool, name: str
) -> tuple[Curve, torch.Tensor, list[torch.Tensor]]:
    """DiLoCo on the round engine; returns its curve, the initial parameters and the shards."""
    strategy = Pipeline(
        FedAvg(), DiLoCo(lr=s.outer_lr, momentum=s.outer_momentum, nesterov=s.nesterov)
    )
    federation = make_simulation(
        dataset="shakespeare",
        model_id=MODEL,
        strategy=strategy,
        num_clients=WORKERS,
        settings=SimulationSettings(seed=s.seed, client_fraction=1.0, eval_every=s.eval_every),
        train_config=_train_config(s, keep_state=keep_state),
        partitioning="iid",
        datasets=(train, val),
    )
    engine = federation.engine
    base = engine.provider
    assert isinstance(base, SequentialClients)
    shards = [base.population.indices(i) for i in range(WORKERS)]
    init = engine.global_params.clone()
    curve = Curve(name)
    evaluate = engine.evaluate
    assert evaluate is not None
    curve.add(0, 0, 0, evaluate(init)[0])
    evaluating = [0.0]

    def timed(params: torch.Tensor) -> tuple[float, float]:
        began = time.perf_counter()
        try:
            return evaluate(params)
        finally:
            evaluating[0] += time.perf_counter() - began

    engine.evaluate = timed  # the wall time reported is training and aggregation, as sync's
    start = time.perf_counter()
    for _ in range(s.rounds):
        result = engine.run_round()
        if result.global_loss is not None and result.round % s.eval_every == 0:
            r = result.round
            windows = r * s.inner_steps * s.batch_size * WORKERS
            curve.add(r * s.inner_steps, windows, r, float(result.global_loss))
            _progress(curve)
    curve.wall_s = time.perf_counter() - start - evaluating[0]
    return curve, init, shards


def _round_batches(
    s: Settings, shards: Sequence[torch.Tensor], round_: int
) -> list[list[torch.Tensor]]:
    """The rows each worker trains on in round ``round_``, batch by batch, as the simulated
    clients draw them (``Trainer.train``'s epoch permutation from their derived generator)."""
    out: list[list[torch.Tensor]] = []
    for client, rows in enumerate(shards):
        n = int(rows.shape[0])
        generator = torch_generator(s.seed, round_, client, "train")
        batches: list[torch.Tensor] = []
        while len(batches) < s.inner_steps:  # a new epoch when the shard runs out
            order = rows.index_select(0, torch.randperm(n, generator=generator))
            per_epoch = math.ceil(n / s.batch_size)
            for b in range(min(per_epoch, s.inner_steps - len(batches))):
                batches.append(order[b * s.batch_size : (b + 1) * s.batch_size])
        out.append(batches)
    return out


def run_sync(
    s: Settings,
    train: ArrayDataset,
    val: ArrayDataset,
    init: torch.Tensor,
    shards: Sequence[torch.Tensor],
) -> Curve:
    """The reference: one AdamW step per step on the 4 workers' batches together (or an SGD
    step, ``inner_optimizer="sgd"``: with ``H = 1``, outer lr 1 and no outer momentum DiLoCo
    is then exactly this loop, which the smoke test checks)."""
    model = build_model(MODEL, num_classes=train.num_classes, seed=0)
    evaluator = Trainer(model, TrainConfig())
    spec = evaluator.spec
    pieces = spec.unflatten(init)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            tensor.copy_(pieces[key])
    optimizer: torch.optim.Optimizer
    if s.inner_optimizer == "adamw":
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=s.inner_lr, betas=(0.9, s.beta2), weight_decay=s.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=s.inner_lr, weight_decay=s.weight_decay)
    curve = Curve("sync")
    curve.add(0, 0, 0, evaluator.evaluate(init, val.x, val.y)[0])
    elapsed = 0.0
    for round_ in range(1, s.rounds + 1):
        batches = _round_batches(s, shards, round_)
        start = time.perf_counter()
        model.train()
        for step in range(s.inner_steps):
            rows = torch.cat([worker[step] for worker in batches])
            loss = F.cross_entropy(model(train.x.index_select(0, rows)), train.y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        elapsed += time.perf_counter() - start
        if round_ % s.eval_every == 0:
            params = spec.flatten(model.state_dict())
            steps = round_ * s.inner_steps
            windows = steps * s.batch_size * WORKERS
            curve.add(steps, windows, steps, evaluator.evaluate(params, val.x, val.y)[0])
            _progress(curve)
    curve.wall_s = elapsed
    return curve


def _progress(curve: Curve) -> None:
    print(
        f"  {curve.name:>12}: step {curve.steps[-1]:>6}  windows {curve.windows[-1]:>9,}  "
        f"comms {curve.comms[-1]:>6}  val loss {curve.loss[-1]:.4f}",
        file=sys.stderr,
        flush=True,
    )


def plot(curves: Sequence[Curve], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"sync": "k-", "DiLoCo": "C0-", "DiLoCo-reset": "C1--"}
    for curve in curves:
        style = styles.get(curve.name, "C2-")
        left.plot(curve.windows, curve.loss, style, label=curve.name)
        right.plot(curve.comms[1:], curve.loss[1:], style, marker=".", label=curve.name)
    left.set_xlabel("training windows seen (80 characters -> next one)")
    left.set_ylabel("validation loss (nats / character)")
    left.set_title("against data (= compute)")
    right.set_xscale("log")
    right.set_xlabel("communication rounds (log)")
    right.set_title("against communication")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    low = min(min(c.loss[1:]) for c in curves)
    high = max(c.loss[1] for c in curves)
    for ax in (left, right):
        ax.set_ylim(low - 0.05, high + 0.1)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(curves: Sequence[Curve], s: Settings) -> str:
    sync = next(c for c in curves if c.name == "sync")
    lines = [
        "| arm | inner steps / worker | windows seen | communications | final val loss | "
        "/ sync | train wall (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for curve in curves:
        ratio = curve.loss[-1] / sync.loss[-1]
        lines.append(
            f"| {curve.name} | {curve.steps[-1]:,} | {curve.windows[-1]:,} | "
            f"{curve.comms[-1]:,} | {curve.loss[-1]:.4f} | {ratio:.4f} | {curve.wall_s:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, help="outer rounds (default 40; --quick 2)")
    parser.add_argument("--inner-steps", type=int, help="H (default 50; --quick 3)")
    parser.add_argument("--batch-size", type=int, help="per worker (default 32; --quick 4)")
    parser.add_argument("--inner-lr", type=float, default=2e-3)
    parser.add_argument("--inner-optimizer", choices=["adamw", "sgd"], default="adamw")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--beta2", type=float, default=0.99)
    parser.add_argument("--outer-lr", type=float, default=0.7)
    parser.add_argument("--outer-momentum", type=float, default=0.9)
    parser.add_argument("--heavy-ball", action="store_true", help="outer momentum without Nesterov")
    parser.add_argument("--eval-every", type=int, help="rounds between evaluations (2; --quick 1)")
    parser.add_argument("--val-windows", type=int, help="validation windows (4096; --quick 64)")
    parser.add_argument(
        "--train-windows", type=int, help="subsample the train split (--quick 4000)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--also-reset", action="store_true", help="+ DiLoCo, AdamW reset per round")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--plot", type=Path, default=None, help="write the curves (PNG)")
    parser.add_argument("--json", type=Path, default=None, help="write every number (JSON)")
    parser.add_argument("--quick", action="store_true", help="a tiny run, for a smoke test")
    args = parser.parse_args(argv)
    defaults: dict[str, Any] = {
        "rounds": 40,
        "inner_steps": 50,
        "batch_size": 32,
        "eval_every": 2,
        "val_windows": 4096,
        "train_windows": None,
    }
    if args.quick:
        defaults.update(
            rounds=2, inner_steps=3, batch_size=4, eval_every=1, val_windows=64, train_windows=4000
        )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    torch.set_num_threads(args.threads)
    s = Settings(
        rounds=args.rounds,
        inner_steps=args.inner_steps,
        batch_size=args.batch_size,
        inner_lr=args.inner_lr,
        weight_decay=args.weight_decay,
        beta2=args.beta2,
        outer_lr=args.outer_lr,
        outer_momentum=args.outer_momentum,
        nesterov=not args.heavy_ball,
        eval_every=args.eval_every,
        val_windows=args.val_windows,
        train_windows=args.train_windows,
        seed=args.seed,
        inner_optimizer=args.inner_optimizer,
    )
    train = _subset(
        load_dataset("shakespeare", split="train", data_dir=args.data_dir),
        s.train_windows,
        s.seed,
        "train-subset",
    )
    val = _subset(
        load_dataset("shakespeare", split="test", data_dir=args.data_dir),
        s.val_windows,
        s.seed,
        "validation",
    )
    print(
        f"# DiLoCo vs sync: {MODEL}, {WORKERS} workers, H={s.inner_steps}, B={s.batch_size}/"
        f"worker, {s.rounds} rounds, inner {s.inner_optimizer} lr={s.inner_lr:g} "
        f"wd={s.weight_decay:g} beta2={s.beta2:g}, outer lr={s.outer_lr:g} "
        f"momentum={s.outer_momentum:g} nesterov={s.nesterov}; train {len(train):,} windows, "
        f"validation {len(val):,}",
        flush=True,
    )
    started = time.perf_counter()
    diloco, init, shards = run_diloco(s, train, val, keep_state=True, name="DiLoCo")
    curves = [run_sync(s, train, val, init, shards), diloco]
    if args.also_reset:
        curves.append(run_diloco(s, train, val, keep_state=False, name="DiLoCo-reset")[0])
    total = time.perf_counter() - started
    sync = curves[0]
    ratio = diloco.loss[-1] / sync.loss[-1]
    print(_table(curves, s))
    print(
        f"\nfinal DiLoCo / sync = {ratio:.4f} (target <= 1.05: "
        f"{'met' if ratio <= 1.05 else 'missed'}); communication {s.inner_steps}x less often; "
        f"total {total:.0f} s on {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    )
    print(
        "command: python benchmarks/diloco.py " + " ".join(sys.argv[1:] if argv is None else argv)
    )
    if args.plot is not None:
        plot(
            curves,
            args.plot,
            f"{MODEL} on Shakespeare, {WORKERS} workers, H={s.inner_steps}, "
            f"B={s.batch_size}/worker; DiLoCo/sync final = {ratio:.3f}",
        )
        print(f"plot: {args.plot}")
    if args.json is not None:
        payload: dict[str, Any] = {
            "settings": s.__dict__,
            "ratio": ratio,
            "total_s": total,
            "curves": [c.__dict__ for c in curves],
        }
        args.json.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
