"""The workloads of ``benchmarks/frameworks.py`` and the code each framework runs on them.

Kept apart from the script so that worker processes can import it by name: Flower's Ray
actors unpickle the ClientApp with :func:`flower_train` by reference (``_workloads`` is on
their ``PYTHONPATH``, which Flower's Ray backend sets from the driver's ``sys.path``), and a
function pickled by reference keeps its module's caches (the actor loads MNIST once, not once
per message).

What is the same for every framework, by construction:

- **data**: real MNIST through :func:`velocity.data.load_dataset`; client ``k`` owns
  ``population.indices(k)`` of :func:`make_population` (the cross-device workload: the IID
  :func:`velocity.data.partition` of ``make_simulation``, seed ``derive_seed(0, "partition")``;
  the CNN round: ``VirtualPopulation(n, pool_size=60000, samples_per_client=600, seed=0)``, as
  ``benchmarks/simulation.py`` registers its clients);
- **model**: :func:`velocity.models.build_model` with seed 0, so every framework starts from the
  same weights (the CNN round: ``simulation.py``'s ``build_model("mnist-cnn", seed=0)``);
- **local work**: plain SGD (no momentum, no weight decay), batch ``B``, one epoch over the
  client's samples (``ceil(samples / B)`` steps), mean cross-entropy; then FedAvg, the
  update average weighted by sample counts;
- **seeds**: 0 for every framework's own generators (client selection, shuffling).

What each framework decides itself: which clients a round selects and in which order a client
visits its samples (each seeded, but each framework draws them its own way), and pfl's
``Dataset.iter`` does not shuffle at all (it cuts the client's samples in stored order).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

SEED = 0
"""The seed of every generator in every framework."""

CROSS_DEVICE = "cross-device"
CNN = "cnn"


@dataclass(frozen=True)
class Workload:
    """One benchmark setting; every framework's run of it gets exactly these numbers."""

    kind: str  # CROSS_DEVICE or CNN
    model_id: str  # velocity.models id: logreg, mnist-2nn, mnist-cnn
    registered: int  # registered clients
    per_round: int  # clients selected per round
    samples: int  # samples per client
    batch: int  # local batch size B (E = 1)
    lr: float  # local SGD step size

    @property
    def steps(self) -> int:
        """Local SGD steps per client per round (one epoch)."""
        return -(-self.samples // self.batch)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Workload:
        return cls(**json.loads(text))


def cross_device(model_id: str, *, quick: bool = False) -> Workload:
    """Workload 1: 1,000 clients x 60 MNIST samples, 100 per round, B=10, E=1, lr 0.1."""
    if quick:
        return Workload(CROSS_DEVICE, model_id, 50, 10, 60, 10, 0.1)
    return Workload(CROSS_DEVICE, model_id, 1000, 100, 60, 10, 0.1)


def cnn_round(registered: int, *, quick: bool = False) -> Workload:
    """Workload 2, ``benchmarks/simulation.py``'s round: the McMahan CNN, 10 clients per round
    of 600 samples (B=10, E=1: 60 steps) and its lr 0.05; ``quick``: 60 samples (6 steps)."""
    import simulation  # benchmarks/simulation.py, on sys.path beside this file

    samples = 60 if quick else simulation.SAMPLES_PER_CLIENT
    return Workload(
        CNN,
        "mnist-cnn",
        registered,
        simulation.CLIENTS_PER_ROUND,
        samples,
        simulation.BATCH,
        simulation.LR,
    )


# ---------------------------------------------------------------------- data and model


def load_mnist(data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The MNIST training split through the project's loader: ``(60000, 1, 28, 28)`` float32
    (normalised) and ``(60000,)`` int64."""
    from velocity.data import load_dataset

    ds = load_dataset("mnist", split="train", data_dir=data_dir)
    return ds.x, ds.y


def make_population(wl: Workload, y: torch.Tensor) -> Any:
    """The clients' data: a velocity ``Population`` whose ``indices(k)`` are client ``k``'s
    sample rows; every framework reads its clients from it."""
    from velocity.sim import VirtualPopulation

    if wl.kind == CNN:
        return VirtualPopulation(
            wl.registered, pool_size=int(y.shape[0]), samples_per_client=wl.samples, seed=SEED
        )
    from velocity._random import derive_seed
    from velocity.data import partition
    from velocity.sim import ClientPopulation

    labels = y[: wl.registered * wl.samples]
    part = partition(labels, wl.registered, "iid", seed=derive_seed(SEED, "partition"))
    return ClientPopulation(part.order, part.offsets)


def init_model(wl: Workload) -> torch.nn.Module:
    """The model every framework starts from (seed 0)."""
    from velocity.models import build_model

    extra = {"in_features": 784} if wl.model_id == "logreg" else {}
    return build_model(wl.model_id, num_classes=10, seed=SEED, **extra)


def local_sgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor,
    wl: Workload,
    generator: torch.Generator,
) -> None:
    """One client's local training as a hand-written loop: a fresh SGD, one epoch over
    ``rows`` in a shuffled order, batches of ``wl.batch`` (what the plain loop and the Flower
    client run)."""
    opt = torch.optim.SGD(model.parameters(), lr=wl.lr)
    loss_fn = torch.nn.functional.cross_entropy
    order = rows[torch.randperm(rows.shape[0], generator=generator)]
    for b in range(0, order.shape[0], wl.batch):
        batch = order[b : b + wl.batch]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x.index_select(0, batch)), y.index_select(0, batch))
        torch.autograd.backward(loss)
        opt.step()


ACCURACY_SAMPLES = 1000
"""Test images the final model of each row is scored on (a check that every framework did the
same training, not a benchmark of accuracy)."""


def test_accuracy(wl: Workload, state: dict[str, torch.Tensor], data_dir: str | None) -> float:
    """Accuracy of the weights ``state`` (a state dict of :func:`init_model`'s architecture)
    on the first :data:`ACCURACY_SAMPLES` MNIST test images. Not timed."""
    from velocity.data import load_dataset

    test = load_dataset("mnist", split="test", data_dir=data_dir)
    model = init_model(wl)
    model.load_state_dict({k: v.detach().clone() for k, v in state.items()})
    model.eval()
    with torch.inference_mode():
        x, y = test.x[:ACCURACY_SAMPLES], test.y[:ACCURACY_SAMPLES]
        return float((model(x).argmax(1) == y).double().mean())


def flat_to_state(wl: Workload, vec: torch.Tensor) -> dict[str, torch.Tensor]:
    """A VelocityFL flat parameter vector as a state dict of :func:`init_model`'s model."""
    from velocity.types import ParamSpec

    return ParamSpec.from_module(init_model(wl)).unflatten(vec)


# ---------------------------------------------------------------------- in-process runners


class PlainLoop:
    """The reference: a plain PyTorch FedAvg loop, no framework, the same work.

    Per round: ``per_round`` of the registered clients at random; per selected client, copy
    the global weights into the model, run its SGD steps, accumulate its weighted update; then
    add the average to the global weights. The clients are a Python list of index tensors (the
    same rows as every framework's clients).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, wl: Workload) -> None:
        population = make_population(wl, y)
        self.x, self.y, self.wl = x, y, wl
        self.clients = [population.indices(k) for k in range(wl.registered)]
        self.model = init_model(wl)
        self.state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.gen = torch.Generator().manual_seed(SEED)

    def final_state(self) -> dict[str, torch.Tensor]:
        return self.state

    def round(self) -> None:
        model, state, wl = self.model, self.state, self.wl
        chosen = torch.randperm(wl.registered, generator=self.gen)[: wl.per_round].tolist()
        total = float(sum(int(self.clients[c].shape[0]) for c in chosen))
        acc = {k: torch.zeros_like(v) for k, v in state.items()}
        for c in chosen:
            model.load_state_dict(state)
            local_sgd(model, self.x, self.y, self.clients[c], wl, self.gen)
            weight = self.clients[c].shape[0] / total
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    acc[k] += (v - state[k]) * weight
        with torch.no_grad():
            self.state = {k: state[k] + acc[k] for k in state}


class VelocityRun:
    """VelocityFL: the round engine of ``build_engine`` (as ``make_simulation`` wires it, minus
    evaluation) over ``SequentialClients``, with ``backend`` "sequential" or "vectorized"."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, wl: Workload, backend: str) -> None:
        from velocity.client import TrainConfig, Trainer
        from velocity.server import build_engine
        from velocity.sim import SequentialClients, SimulationSettings
        from velocity.strategies import FedAvg

        self.wl = wl
        population = make_population(wl, y)
        model = init_model(wl)
        trainer = Trainer(model, TrainConfig(batch_size=wl.batch, lr=wl.lr, local_epochs=1))
        self.engine = build_engine(
            base=SequentialClients(trainer, x, y, population, seed=SEED, num_classes=10),
            spec=trainer.spec,
            init_params=trainer.spec.flatten(model.state_dict()),
            strategy=FedAvg(),
            settings=SimulationSettings(seed=SEED, client_fraction=wl.per_round / wl.registered),
            evaluate=None,
            backend=backend,
        )

    def round(self) -> None:
        self.engine.run_round()

    def final_state(self) -> dict[str, torch.Tensor]:
        return flat_to_state(self.wl, self.engine.global_params)


# ---------------------------------------------------------------------- pfl 0.6


def run_pfl(wl: Workload, rounds: int, data_dir: str | None) -> dict[str, Any]:
    """``rounds`` central iterations of pfl's FedAvg (``FederatedAveraging`` over a
    ``SimulatedBackend``) with its PyTorch model, in this process.

    Under pfl's multi-worker mode (``PFL_WORKER_ADDRESSES`` / ``PFL_WORKER_RANK`` set before
    pfl is imported, one process per rank; pfl's ``torch.distributed`` context is created at
    import) every rank trains its share of each cohort and the statistics are all-reduced
    (gloo). Returns the wall time of each central iteration (``after_central_iteration``
    callback marks), this rank and the world size.
    """
    import numpy as np
    from pfl.aggregate.base import get_num_devices_weight_name
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.aggregate.weighting import WeightByDatapoints
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.common_types import Population
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.data.sampling import get_user_sampler
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.internal.ops.selector import get_default_framework_module
    from pfl.metrics import Metrics, Weighted, get_overall_value
    from pfl.model.pytorch import PyTorchModel

    np.random.seed(SEED)  # noqa: NPY002  (pfl samples users and seeds from numpy's global state)
    torch.manual_seed(SEED)
    x, y = load_mnist(data_dir)
    population = make_population(wl, y)
    # pfl's documented layout: a dict user id -> that user's arrays (here torch tensors, so
    # no conversion per batch), sampled uniformly.
    slices = {}
    for k in range(wl.registered):
        rows = population.indices(k)
        slices[k] = [x.index_select(0, rows), y.index_select(0, rows)]
    federated = FederatedDataset.from_slices(slices, get_user_sampler("random", list(slices)))

    class PflNet(torch.nn.Module):
        """pfl's PyTorch models carry ``loss`` and ``metrics``; this wraps the shared one."""

        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.net(inputs)
            return out

        def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            self.train()
            return torch.nn.functional.cross_entropy(self(inputs), targets)

        def metrics(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
            self.eval()
            with torch.no_grad():
                loss = torch.nn.functional.cross_entropy(self(inputs), targets, reduction="sum")
            return {"loss": Weighted(float(loss), int(targets.shape[0]))}

    net = PflNet(init_model(wl))
    model = PyTorchModel(
        model=net,
        local_optimizer_create=torch.optim.SGD,
        central_optimizer=torch.optim.SGD(net.parameters(), lr=1.0),
    )
    backend = SimulatedBackend(
        training_data=federated, val_data=None, postprocessors=[WeightByDatapoints()]
    )

    class Clock(TrainingProcessCallback):  # type: ignore[misc,unused-ignore]
        def __init__(self) -> None:
            self.marks: list[float] = []
            self.devices: list[int] = []

        def on_train_begin(self, *, model: Any) -> Any:
            self.marks = [time.perf_counter()]
            return Metrics()

        def after_central_iteration(
            self, aggregate_metrics: Any, model: Any, *, central_iteration: int
        ) -> Any:
            self.marks.append(time.perf_counter())
            devices = aggregate_metrics[get_num_devices_weight_name(Population.TRAIN)]
            self.devices.append(round(get_overall_value(devices)))
            return False, Metrics()

    clock = Clock()
    FederatedAveraging().run(
        algorithm_params=NNAlgorithmParams(
            central_num_iterations=rounds,
            # pfl evaluates when iteration % frequency == 0, so iteration 0 (round 1, not
            # timed) evaluates each user before and after training; no later one does.
            evaluation_frequency=rounds + 1,
            train_cohort_size=wl.per_round,
            val_cohort_size=0,
        ),
        backend=backend,
        model=model,
        model_train_params=NNTrainHyperParams(
            local_learning_rate=wl.lr, local_num_epochs=1, local_batch_size=wl.batch
        ),
        model_eval_params=NNEvalHyperParams(local_batch_size=None),
        callbacks=[clock],
        send_metrics_to_platform=False,
    )
    dist = get_default_framework_module().distributed
    times = [b - a for a, b in zip(clock.marks, clock.marks[1:], strict=False)]
    if len(times) != rounds or any(d != wl.per_round for d in clock.devices):
        raise RuntimeError(f"pfl ran {len(times)} rounds with {clock.devices} users each")
    return {
        "times": times,
        "accuracy": test_accuracy(wl, net.net.state_dict(), data_dir),
        "rank": int(dist.global_rank),
        "world_size": int(dist.world_size),
        "torch_threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------- Flower 1.42

_FLOWER_CLIENT: dict[str, Any] = {}
"""Per Ray actor process: the workload's data, population and scratch model, built once."""


def flower_train(msg: Any, context: Any) -> Any:
    """The Flower ClientApp's ``train``: load the global arrays, run the client's local SGD
    (:func:`local_sgd`, as the plain loop does), reply with the new arrays and
    ``num-examples``. The workload travels in the message's config; the data are loaded on
    the actor's first message and kept."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    config = msg.content["config"]
    key = str(config["workload"])
    state = _FLOWER_CLIENT.get(key)
    if state is None:
        threads = int(config["threads"])
        if threads > 0:
            torch.set_num_threads(threads)
        wl = Workload.from_json(key)
        data_dir = str(config["data_dir"]) or None
        x, y = load_mnist(data_dir)
        state = (wl, x, y, make_population(wl, y), init_model(wl))
        _FLOWER_CLIENT.clear()
        _FLOWER_CLIENT[key] = state
    wl, x, y, population, model = state
    client = int(context.node_config["partition-id"])
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    rows = population.indices(client)
    from velocity._random import torch_generator

    gen = torch_generator(SEED, int(config["server-round"]), client, "train")
    local_sgd(model, x, y, rows, wl, gen)
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"num-examples": int(rows.shape[0])}),
        }
    )
    return Message(content=content, reply_to=msg)


def run_flower(
    wl: Workload, rounds: int, data_dir: str | None, *, cpus_per_client: float, threads: int
) -> dict[str, Any]:
    """``rounds`` rounds of Flower's FedAvg (``flwr.serverapp.strategy.FedAvg.start``) over
    ``wl.registered`` virtual SuperNodes in Flower's Simulation Runtime with the Ray backend
    (``flwr.simulation.run_simulation``), the ClientApp running :func:`flower_train`.

    A round is timed from the strategy's ``configure_train`` to the end of its
    ``aggregate_train`` (evaluation is off: ``fraction_evaluate=0``).
    """
    import logging
    import random

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from flwr.app import ArrayRecord, ConfigRecord
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    logging.getLogger("flwr").setLevel(logging.WARNING)
    random.seed(SEED)  # FedAvg samples the nodes with Python's random
    torch.manual_seed(SEED)

    times: list[float] = []
    replies: list[int] = []
    final: list[dict[str, torch.Tensor]] = []

    class TimedFedAvg(FedAvg):  # type: ignore[misc,unused-ignore]
        def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
            self._started = time.perf_counter()
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round: int, results: Any) -> Any:
            results = list(results)
            out = super().aggregate_train(server_round, results)
            times.append(time.perf_counter() - self._started)
            replies.append(len(results))
            return out

    server_app = ServerApp()

    @server_app.main()  # type: ignore[misc,unused-ignore]
    def main(grid: Any, context: Any) -> None:
        strategy = TimedFedAvg(
            fraction_train=wl.per_round / wl.registered,
            fraction_evaluate=0.0,
            min_train_nodes=wl.per_round,
            min_available_nodes=wl.registered,
        )
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(init_model(wl).state_dict()),
            num_rounds=rounds,
            train_config=ConfigRecord(
                {"workload": wl.to_json(), "data_dir": data_dir or "", "threads": threads}
            ),
        )
        final.append(result.arrays.to_torch_state_dict())

    client_app = ClientApp()
    client_app.train()(flower_train)
    cpus = os.cpu_count() or 1
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=wl.registered,
        backend_name="ray",
        backend_config={
            "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus, "logging_level": "error", "log_to_driver": False},
        },
    )
    if len(times) != rounds or any(r != wl.per_round for r in replies):
        raise RuntimeError(f"Flower ran {len(times)} rounds with {replies} replies")
    return {
        "times": times,
        "accuracy": test_accuracy(wl, final[0], data_dir),
        "actors": int(cpus // cpus_per_client),
        "threads": threads,
    }
