"""Simulated dataset clients trained by long-lived Ray actors: :class:`RayClients`.

``backend: {type: ray}`` runs a :class:`~velocity.sim.SequentialClients` federation's local
training in ``num_actors`` Ray actors, on this machine or on an existing Ray cluster, while
everything else stays in this process (the driver): client sampling, dropout, stragglers,
adversaries, client stages, codecs, digests and the round engine.

How a round travels
-------------------
- **Once, when the first round needs them**, the actors are created. Each gets the dataset
  (``x`` and ``y`` put into Ray's object store once as numpy arrays and read by every actor
  without a copy on the same node), a CPU copy of the model, the training config, the loss,
  the population's indices and the seed. An actor holds a
  :class:`~velocity.sim.SequentialClients` (``inner: sequential``) or a
  :class:`~velocity.sim.vectorized.VectorizedClients` (``inner: vectorized``) over them.
- **Every collect**, the base's :meth:`~velocity.sim.SimulatedClients.train_batch` hook
  receives the clients about to train. Each distinct global-parameter tensor of their tasks
  is put into the object store once (one ``ray.put`` per round, not per client); the
  clients are cut, in task order, into ``num_actors`` contiguous chunks of nearly equal
  size (the first ones one larger), and each actor trains its chunk in one call, returning
  one ``(k, d)`` float32 numpy array of deltas and one small record per client (sample
  count, loss, metrics). The driver checks the array's type, dtype and shape and every
  record (a mismatch is a :class:`~velocity.errors.ProtocolError`), copies each row into its
  task's row of the round's stack, and drops every object reference of the round, so the
  object store holds nothing of past rounds.

Same results as in this process
-------------------------------
An actor trains a client with the same code as the in-process provider: the same generator
``(seed, round, client, "train")``, the same poisoning (:func:`poison_client_data` with
``(seed, round, client, "poison")``, :func:`scale_poisoned_update`), the same per-task
config overrides. A client's update does not depend on the other clients, so the result
does not depend on the number of actors or on how the clients are cut.

**Thread policy.** PyTorch splits some float reductions across its intra-op threads, so
the thread count changes the last bits of an update (measured on this project's 2-core CPU:
the MNIST logistic regression at B=50 and the 2NN at B=10 differ between 1 and 2 threads).
Every actor therefore calls ``torch.set_num_threads`` with the driver's
``torch.get_num_threads()`` (taken when the actors start) unless ``num_threads`` is given:
with the default, a run is bit-identical to :class:`~velocity.sim.SequentialClients` in this
process on the same kind of CPU; with ``num_threads=k`` it is bit-identical to an
in-process run under ``torch.set_num_threads(k)`` (both tested). The actors wait passively
at OpenMP barriers (``OMP_WAIT_POLICY=PASSIVE`` unless this process sets another policy),
so ``num_actors`` teams of threads sharing fewer cores do not spin against each other; for
the most throughput keep ``num_actors * num_threads`` at most the cores (e.g. ``num_threads:
1``), at the price of those last bits for the models whose kernels split by thread count.
On a GPU (``resources_per_actor: {GPU: 1}``: the actors train on CUDA) the updates are
CUDA's, not bit-identical to a CPU run.

**Kept optimizer state** (``TrainConfig.keep_optimizer_state``, DiLoCo's inner AdamW)
stays in the driver's :class:`~velocity.types.ClientStateStore`: each client's state is sent
with its task and the new state comes back with its row (a client that appears twice in one
collect trains in a later call, after its first state has returned). ``inner: vectorized``
cannot keep it (:func:`~velocity.sim.vectorized.can_vectorize`).

Serialization: the model, loss function, population and data attacks travel to the actors
pickled by Ray (cloudpickle), between processes of one's own Ray cluster; tensors of the
data, the parameters and the returned rows travel as numpy buffers.

Failures: an exception in an actor's training is raised by the round as Ray re-raises it
(an instance of the original class, e.g. ``ValidationError`` for a client without data);
a lost actor fails the round with ``ray.exceptions.RayActorError`` and closes the actors,
so that the engine's retry of the round starts fresh ones (and gives the same model).
Actors that the cluster cannot hold at all are refused at once, and actors not placed
within ``start_timeout_s`` are reported, both as :class:`~velocity.errors.ConfigurationError`.

Examples
--------
>>> import torch
>>> from velocity.client import TrainConfig, Trainer
>>> from velocity.sim import ClientPopulation, SequentialClients
>>> trainer = Trainer(torch.nn.Linear(3, 2), TrainConfig(batch_size=2))
>>> population = ClientPopulation(torch.arange(8), torch.tensor([0, 4, 8]))
>>> base = SequentialClients(trainer, torch.randn(8, 3), torch.randint(0, 2, (8,)),
...                          population, seed=0)
>>> RayClients(base, num_actors=0)  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
velocity.errors.ConfigurationError: RayClients.num_actors must be an int >= 1; got 0
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, cast

import numpy as np
import torch
from torch import Tensor

from velocity._validation import Integer, MappingOf, NoneOr, OneOf, Real, String, check_value
from velocity.errors import ConfigurationError, ProtocolError
from velocity.sim._ray import (
    RAY_EXTRA,
    actor_runtime_env,
    check_resources,
    connect,
    ray_installed,
)
from velocity.sim.provider import ClientWork, SequentialClients, SimulatedClients
from velocity.types import ClientStateStore, ClientTask, ClientUpdate, TaskConfig

if TYPE_CHECKING:
    from torch import nn

    from velocity.attacks import DataAttack
    from velocity.client import TrainConfig
    from velocity.sim.population import Population

__all__ = ["DEFAULT_RESOURCES", "INNER", "RayClients"]

INNER: Final = ("sequential", "vectorized", "auto")
"""The ``inner`` trainers of an actor: ``sequential`` (the default, bit-identical to the
in-process provider), ``vectorized`` (:class:`~velocity.sim.vectorized.VectorizedClients`,
equal up to float rounding) or ``auto`` (vectorized when
:func:`~velocity.sim.vectorized.can_vectorize` allows it, else sequential)."""

DEFAULT_RESOURCES: Final[Mapping[str, float]] = {"CPU": 1.0}
"""What each actor reserves by default: one CPU."""

_LOG = logging.getLogger("velocity.sim")
_OWNER = "RayClients"
_RESOURCES = MappingOf(key=String(min_length=1), value=Real(low=0))


# ---------------------------------------------------------------------- what travels


@dataclass(frozen=True, eq=False)
class _Kit:
    """What every actor is built from (put into the object store once)."""

    model: nn.Module
    config: TrainConfig
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    population: Population
    seed: int
    num_classes: int | None
    inner: Literal["sequential", "vectorized"]
    num_threads: int
    device: str
    d: int


@dataclass(frozen=True, eq=False)
class _Item:
    """One client's job on the wire; ``slot`` picks its global parameters among the call's."""

    slot: int
    client_id: str
    round: int
    version: int
    config: TaskConfig
    index: int
    poison: DataAttack | None = None
    optimizer_state: dict[str, Tensor] | None = None


@dataclass(frozen=True, eq=False)
class _Record:
    """What an actor returns for one client besides its delta row."""

    num_samples: int
    loss: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    optimizer_state: dict[str, Tensor] | None = None


# ---------------------------------------------------------------------- the actor


class _ClientsActor:
    """The body of one Ray actor: a simulated provider over its copy of the federation."""

    def __init__(self, kit: _Kit, x: np.ndarray | Tensor, y: np.ndarray | Tensor) -> None:
        from velocity.client import Trainer

        torch.set_num_threads(kit.num_threads)
        device = torch.device(kit.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigurationError(
                "RayClients.resources_per_actor asks for a GPU, but torch in this Ray actor "
                "sees no CUDA device"
            )
        self._kit = kit
        self._device = device
        trainer = Trainer(kit.model.to(device), kit.config, loss_fn=kit.loss_fn)
        clients: SequentialClients
        xt, yt = _tensor(x, device), _tensor(y, device)
        if kit.inner == "vectorized":
            from velocity.sim.vectorized import VectorizedClients

            clients = VectorizedClients(
                trainer, xt, yt, kit.population, seed=kit.seed, num_classes=kit.num_classes
            )
        else:
            clients = SequentialClients(
                trainer, xt, yt, kit.population, seed=kit.seed, num_classes=kit.num_classes
            )
        self._clients = clients

    def ready(self) -> dict[str, object]:
        """What the actor runs with (checked by the driver and the tests)."""
        return {
            "pid": os.getpid(),
            "threads": torch.get_num_threads(),
            "device": str(self._device),
            "inner": type(self._clients).__name__,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        }

    def train(
        self, items: Sequence[_Item], *params: np.ndarray | Tensor
    ) -> tuple[np.ndarray, list[_Record]]:
        """Train ``items`` (each on ``params[item.slot]``): their ``(k, d)`` deltas, records."""
        kit, device = self._kit, self._device
        flat = [_tensor(p, device, copy=True) for p in params]
        rows = torch.empty((len(items), kit.d), dtype=torch.float32, device=device)
        clients = self._clients
        kept = _kept_key(kit.config)
        if kept is not None:
            clients.client_state = ClientStateStore()
        works: list[ClientWork] = []
        for i, item in enumerate(items):
            task = ClientTask(
                item.client_id, item.round, item.version, flat[item.slot], item.config
            )
            if kept is not None and item.optimizer_state:
                clients.client_state.put(item.client_id, kept, item.optimizer_state)
            works.append(ClientWork(task, item.index, rows[i], poison=item.poison))
        clients.train_batch(works)
        records: list[_Record] = []
        for work in works:
            update = clients.train(work)
            if update.delta is not work.out:
                work.out.copy_(cast(Tensor, update.delta))
            state = None
            if kept is not None:
                state = {
                    k: v.detach().to("cpu")
                    for k, v in clients.client_state.get(work.task.client_id, kept).items()
                }
            records.append(_Record(update.num_samples, update.loss, dict(update.metrics), state))
        out = rows.numpy() if device.type == "cpu" else rows.cpu().numpy()
        return out, records


# ---------------------------------------------------------------------- the provider


@dataclass(frozen=True, eq=False)
class _Trained:
    """One client's returned training, waiting for :meth:`RayClients.train`."""

    num_samples: int
    loss: float | None
    metrics: Mapping[str, float]
    optimizer_state: dict[str, Tensor] | None


class RayClients(SimulatedClients):
    """A :class:`~velocity.sim.SequentialClients` federation trained by Ray actors.

    Made from the in-process provider ``base`` (its trainer, data, population, seed and
    simulated behaviour: dropout, stragglers, adversary, client stages, encoder, client
    state and spec, as ``base`` holds them). See the module doc for what travels and why
    the results equal ``base``'s.

    Parameters
    ----------
    base : SequentialClients
        The federation (exactly a ``SequentialClients``: a subclass's own training would
        not run in the actors).
    num_actors : int
        Long-lived actors (>= 1), created at the first round that trains a client.
    address : str, optional
        The Ray cluster: ``None`` (default) uses this process's connection, else
        ``RAY_ADDRESS``, else starts a local Ray instance; ``"host:port"`` joins the
        cluster whose head node's GCS listens there (``ray start --head --port=PORT``);
        ``"auto"`` and ``"ray://..."`` are passed to ``ray.init`` as they are.
    resources_per_actor : mapping of str to float, optional
        What each actor reserves (default :data:`DEFAULT_RESOURCES`, one CPU): ``CPU``,
        ``GPU`` (the actors then train on CUDA), ``memory`` (bytes) and any custom
        resource of the cluster, each an amount >= 0.
    inner : {"sequential", "vectorized", "auto"}
        How an actor trains its chunk (:data:`INNER`); ``vectorized`` is refused, with
        :func:`~velocity.sim.vectorized.can_vectorize`'s reason, where it cannot train
        the federation.
    num_threads : int, optional
        Each actor's ``torch.set_num_threads``; default the driver's thread count (the
        bit-identity policy of the module doc).
    start_timeout_s : float
        How long (seconds, > 0) the actors may take to start (their resources may be busy)
        before the start fails with a ``ConfigurationError``.

    Raises
    ------
    ConfigurationError
        For Ray not installed, a base that is not a ``SequentialClients``, and every
        setting out of range, each by name.
    """

    name: ClassVar[str] = "ray"

    def __init__(
        self,
        base: SequentialClients,
        *,
        num_actors: int = 2,
        address: str | None = None,
        resources_per_actor: Mapping[str, float] | None = None,
        inner: str = "sequential",
        num_threads: int | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        if type(base) is not SequentialClients:
            raise ConfigurationError(
                "backend.type: ray trains dataset clients (exactly SequentialClients: a "
                "subclass's own training would not run in the actors); this federation's "
                f"clients are {type(base).__name__}"
            )
        self.num_actors: int = check_value(_OWNER, "num_actors", num_actors, Integer(low=1))
        self.address: str | None = check_value(
            _OWNER, "address", address, NoneOr(String(min_length=1))
        )
        resources = DEFAULT_RESOURCES if resources_per_actor is None else resources_per_actor
        self.resources_per_actor: dict[str, float] = check_value(
            _OWNER, "resources_per_actor", resources, _RESOURCES
        )
        check_value(_OWNER, "inner", inner, OneOf(*INNER))
        self.num_threads: int | None = check_value(
            _OWNER, "num_threads", num_threads, NoneOr(Integer(low=1))
        )
        self.start_timeout_s: float = check_value(
            _OWNER, "start_timeout_s", start_timeout_s, Real(low=0, low_open=True)
        )
        if not ray_installed():
            raise ConfigurationError(
                f"backend.type: ray needs Ray, which is not installed: {RAY_EXTRA}"
            )
        super().__init__(base.population, seed=base.seed)
        self.dropout = base.dropout
        self.straggler = base.straggler
        self.adversary = base.adversary
        self.client_stages = base.client_stages
        self.encoder = base.encoder
        self.client_state = base.client_state
        self.spec = base.spec
        self.trainer = base.trainer
        self.x = base.x
        self.y = base.y
        self.num_classes = base.num_classes
        self.inner: Literal["sequential", "vectorized"] = self._resolve_inner(inner)
        self._kept = _kept_key(base.trainer.config)
        self._actors: list[Any] = []
        self._shared: list[Any] = []
        self._trained: dict[int, _Trained] = {}
        self.actor_info: list[dict[str, object]] = []
        """What each started actor reported (pid, threads, device, inner)."""

    def _resolve_inner(self, inner: str) -> Literal["sequential", "vectorized"]:
        if inner == "sequential":
            return "sequential"
        from velocity.sim.vectorized import can_vectorize

        ok, reason = can_vectorize(self.trainer.model, self.trainer.config)
        if inner == "vectorized" and not ok:
            raise ConfigurationError(
                f"{_OWNER}.inner: 'vectorized' cannot train this federation: {reason}"
            )
        if inner == "auto":
            _LOG.info("ray inner auto: %s (%s)", "vectorized" if ok else "sequential", reason)
        return "vectorized" if ok else "sequential"

    # ------------------------------------------------------------------ the base's hooks

    def train_batch(self, works: Sequence[ClientWork]) -> None:
        self._trained.clear()
        if works:
            self._train_remote(works)

    def train(self, work: ClientWork) -> ClientUpdate:
        done = self._trained.pop(id(work.task), None)
        if done is None:
            self._train_remote([work])
            done = self._trained.pop(id(work.task))
        if self._kept is not None and done.optimizer_state is not None:
            self.client_state.put(work.task.client_id, self._kept, done.optimizer_state)
        return ClientUpdate(
            work.task.client_id,
            done.num_samples,
            work.out,
            loss=done.loss,
            metrics=dict(done.metrics),
        )

    def close(self) -> None:
        """Stop the actors and release the data they share (the next round starts new ones)."""
        actors, self._actors = self._actors, []
        self._shared = []
        self.actor_info = []
        if actors:
            import ray

            if ray.is_initialized():
                for actor in actors:
                    ray.kill(actor)

    # ------------------------------------------------------------------ the remote side

    def _start(self) -> list[Any]:
        """The actors, created on first use (see the module doc)."""
        if self._actors:
            return self._actors
        ray = connect(self.address, what="backend.type: ray")
        check_resources(
            ray, self.resources_per_actor, what="RayClients.resources_per_actor", count=1
        )
        check_resources(
            ray,
            self.resources_per_actor,
            what=f"RayClients.num_actors={self.num_actors} with resources_per_actor",
            count=self.num_actors,
        )
        gpu = self.resources_per_actor.get("GPU", 0.0) > 0
        model = copy.deepcopy(self.trainer.model).to("cpu")
        kit = _Kit(
            model=model,
            config=self.trainer.config,
            loss_fn=self.trainer.loss_fn,
            population=self.population,
            seed=self.seed,
            num_classes=self.num_classes,
            inner=self.inner,
            num_threads=self.num_threads or torch.get_num_threads(),
            device="cuda" if gpu else "cpu",
            d=self.trainer.spec.d,
        )
        shared = [ray.put(kit), ray.put(_wire(self.x)), ray.put(_wire(self.y))]
        actor_cls = ray.remote(max_restarts=0)(_ClientsActor).options(
            runtime_env=actor_runtime_env(), **_actor_options(self.resources_per_actor)
        )
        actors = [actor_cls.remote(*shared) for _ in range(self.num_actors)]
        pending = [a.ready.remote() for a in actors]
        done, waiting = ray.wait(pending, num_returns=len(pending), timeout=self.start_timeout_s)
        if waiting:
            for actor in actors:
                ray.kill(actor)
            wanted = self.resources_per_actor
            free, total = ray.available_resources(), ray.cluster_resources()
            raise ConfigurationError(
                f"RayClients: {len(done)} of {self.num_actors} Ray actors started within "
                f"{self.start_timeout_s:g} s; each asks for {_show_resources(wanted)}, and "
                f"the cluster has {_show_resources({k: free.get(k, 0.0) for k in wanted})} "
                f"of that free ({_show_resources({k: total.get(k, 0.0) for k in wanted})} in "
                "all); lower backend.num_actors or backend.resources_per_actor"
            )
        self.actor_info = list(ray.get(pending))
        self._actors, self._shared = actors, shared
        return actors

    def _train_remote(self, works: Sequence[ClientWork]) -> None:
        actors = self._start()
        if self._kept is None:
            self._run(works, actors, {})
            return
        sent: dict[str, dict[str, Tensor]] = {}
        for wave in _waves(works):
            self._run(wave, actors, sent)

    def _run(
        self, works: Sequence[ClientWork], actors: list[Any], sent: dict[str, dict[str, Tensor]]
    ) -> None:
        """One call per actor over ``works`` cut in contiguous chunks; rows and records in."""
        import ray

        slots: dict[tuple[int, tuple[int, ...], str], int] = {}
        params: list[Tensor] = []
        items: list[_Item] = []
        kept = self._kept
        for work in works:
            task = work.task
            p = task.params
            key = (p.data_ptr(), tuple(p.shape), str(p.device))
            slot = slots.setdefault(key, len(params))
            if slot == len(params):
                params.append(p)
            state = None
            if kept is not None:
                state = sent.get(task.client_id)
                if state is None:
                    state = self.client_state.get(task.client_id, kept)
            items.append(
                _Item(
                    slot,
                    task.client_id,
                    task.round,
                    task.version,
                    task.config,
                    work.index,
                    poison=work.poison,
                    optimizer_state=state,
                )
            )
        refs = [ray.put(_wire(p)) for p in params]
        chunks = _chunks(len(works), len(actors))
        calls = [
            actor.train.remote(items[start:stop], *refs)
            for actor, (start, stop) in zip(actors, chunks, strict=False)
        ]
        try:
            answers = ray.get(calls)
        except ray.exceptions.RayActorError:
            self.close()  # a lost actor: the next attempt starts a fresh set
            raise
        finally:
            del refs, calls
        for (start, stop), answer in zip(chunks, answers, strict=True):
            self._accept(works[start:stop], answer, sent)
        del answers

    def _accept(
        self, works: Sequence[ClientWork], answer: object, sent: dict[str, dict[str, Tensor]]
    ) -> None:
        """Check one actor's answer for ``works``, copy its rows into their ``out``."""
        d = self.trainer.spec.d
        k = len(works)
        if not (isinstance(answer, tuple) and len(answer) == 2):
            raise ProtocolError(
                f"a Ray actor answered {type(answer).__name__}; expected (rows, records)"
            )
        rows, records = answer
        if not isinstance(rows, np.ndarray) or rows.dtype != np.float32 or rows.shape != (k, d):
            got = (
                f"{rows.dtype} array of shape {rows.shape}"
                if isinstance(rows, np.ndarray)
                else type(rows).__name__
            )
            raise ProtocolError(
                f"a Ray actor returned a {got} for {k} clients; expected a float32 array of "
                f"shape ({k}, {d})"
            )
        if not isinstance(records, list) or len(records) != k:
            raise ProtocolError(
                f"a Ray actor returned {type(records).__name__} records for {k} clients; "
                f"expected a list of {k}"
            )
        with warnings.catch_warnings():
            # the rows are read-only views of the object store; they are copied at once
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            for i, (work, record) in enumerate(zip(works, records, strict=True)):
                record = _check_record(record, work.task.client_id, self._kept is not None)
                work.out.copy_(torch.from_numpy(rows[i]))
                self._trained[id(work.task)] = _Trained(
                    record.num_samples, record.loss, record.metrics, record.optimizer_state
                )
                if record.optimizer_state is not None:
                    sent[work.task.client_id] = record.optimizer_state


# ---------------------------------------------------------------------- helpers


def _kept_key(config: TrainConfig) -> str | None:
    """The client-state name of a kept optimizer state (``SequentialClients``' key)."""
    return f"optimizer-{config.optimizer}" if config.keep_optimizer_state else None


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    """``n`` items in at most ``parts`` contiguous chunks of nearly equal size, the first
    ones one larger: ``_chunks(5, 2) == [(0, 3), (3, 5)]``."""
    parts = max(1, min(parts, n))
    size, extra = divmod(n, parts)
    out: list[tuple[int, int]] = []
    start = 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def _waves(works: Sequence[ClientWork]) -> list[list[ClientWork]]:
    """``works`` in order, a new wave wherever a client appears again (its kept state must
    come back before it trains again)."""
    waves: list[list[ClientWork]] = [[]]
    seen: set[str] = set()
    for work in works:
        if work.task.client_id in seen:
            waves.append([])
            seen = set()
        waves[-1].append(work)
        seen.add(work.task.client_id)
    return waves


def _wire(tensor: Tensor) -> np.ndarray | Tensor:
    """A CPU tensor as a numpy array (a view when it can be; Ray moves numpy buffers without
    pickling them), or the tensor itself for a dtype numpy lacks (bfloat16)."""
    cpu = tensor.detach().to("cpu")
    try:
        return cpu.numpy()
    except TypeError:
        return cpu


def _tensor(value: np.ndarray | Tensor, device: torch.device, *, copy: bool = False) -> Tensor:
    """What :func:`_wire` sent, as a tensor on ``device`` (a read-only object-store array is
    wrapped without a copy unless ``copy``)."""
    if isinstance(value, Tensor):
        return value.to(device)
    if copy:
        return torch.tensor(value, device=device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(value).to(device)


def _actor_options(resources: Mapping[str, float]) -> dict[str, Any]:
    """``resources_per_actor`` as Ray actor options (CPU, GPU, memory, custom resources)."""
    options: dict[str, Any] = {}
    custom: dict[str, float] = {}
    for name, amount in resources.items():
        if name == "CPU":
            options["num_cpus"] = amount
        elif name == "GPU":
            options["num_gpus"] = amount
        elif name == "memory":
            options["memory"] = amount
        else:
            custom[name] = amount
    if custom:
        options["resources"] = custom
    return options


def _show_resources(resources: Mapping[str, float]) -> str:
    shown = ", ".join(
        f"{k}: {v:g}" for k, v in sorted(resources.items()) if not k.startswith("node:")
    )
    return "{" + shown + "}"


def _check_record(record: object, client_id: str, kept: bool) -> _Record:
    """A returned record, checked: a :class:`_Record` of sane values (else ProtocolError)."""
    problem = None
    if not isinstance(record, _Record):
        problem = f"a {type(record).__name__} instead of a record"
    elif (
        isinstance(record.num_samples, bool)
        or not isinstance(record.num_samples, int)
        or record.num_samples < 0
    ):
        problem = f"num_samples {record.num_samples!r}"
    elif record.loss is not None and not isinstance(record.loss, float):
        problem = f"loss {record.loss!r}"
    elif not isinstance(record.metrics, dict) or not all(
        isinstance(k, str) and isinstance(v, float) for k, v in record.metrics.items()
    ):
        problem = "metrics that are not a mapping of str to float"
    elif kept and not (
        isinstance(record.optimizer_state, dict)
        and all(isinstance(v, Tensor) for v in record.optimizer_state.values())
    ):
        problem = "no optimizer state (keep_optimizer_state is set)"
    if problem is not None or not isinstance(record, _Record):
        raise ProtocolError(f"a Ray actor returned {problem} for client {client_id!r}")
    return record
