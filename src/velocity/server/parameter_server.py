r"""ByzPy's parameter-server training API, on top of the round engine.

A :class:`ParameterServer` trains one model with synchronous minibatch SGD: in every round
each :class:`HonestNode` computes the gradient of its loss on one minibatch of its own data
at the current global parameters, each :class:`ByzantineNode` submits what its attack
crafts, the (optionally pre-aggregated) gradients are combined by a robust aggregator, and
the server takes the step :math:`x \leftarrow x - \eta\, \mathrm{agg}(g_1, \dots, g_n)`.

There is no second round loop here: the server is a :class:`~velocity.server.RoundEngine`
built by the one builder, whose clients are the nodes (one simulated client per node, honest
first), whose provider writes each node's minibatch gradient into its row of the round's
stack, whose attacks are one :class:`~velocity.attacks.AttackSpec` per Byzantine node (the
simulated adversary's server stage), and whose strategy is
``Pipeline(*pre_aggregators, aggregator, <gradient step>)``.

Sign convention
---------------
The rows of the round's stack are *gradients* (ByzPy's gradient space), not model deltas
(``new − old``) as in federated rounds, so every attack and aggregator sees exactly what
it sees in ByzPy: ``sign_flip`` submits :math:`-g`, ``little`` :math:`\mu + z\sigma` of the
honest gradients, ``gaussian`` with ``mu`` shifts the gradient by ``+mu``, ``label_flip``
submits ``scale`` times the gradient on flipped labels. Because a gradient points uphill,
the strategy's last stage is a private server step that *descends*,
``x ← x − lr · agg`` (bit for bit what ``ServerSGD(lr)`` does with ``−agg``), and keeps the
aggregate it applied so that :meth:`ParameterServer.round` returns it exactly (the
history's ``aggregation["server_optimizer"]`` names it ``"_GradientStep"``).

Examples
--------
>>> import copy
>>> import torch
>>> from torch import nn
>>> gen = torch.Generator().manual_seed(0)
>>> x = torch.randn(64, 4, generator=gen)
>>> y = (x[:, 0] > 0).long()
>>> model = nn.Linear(4, 3)  # every node gets a copy: one architecture, one starting point
>>> nodes = [
...     HonestNode(copy.deepcopy(model), x[16 * k : 16 * k + 16], y[16 * k : 16 * k + 16],
...                batch_size=8)
...     for k in range(4)
... ]
>>> byz = [ByzantineNode("empire")]
>>> ps = ParameterServer(nodes, byz, "FedMedian", lr=0.1, seed=0)
>>> g = ps.round()
>>> g.shape, g.dtype, ps.round_count
(torch.Size([15]), torch.float32, 1)
>>> ps.history[0]["attack_results"][0]["client_ids"]
['client-4']
>>> ps.shutdown()
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

from velocity._random import torch_generator
from velocity._validation import Boolean, Integer, NoneOr, Real, check_value
from velocity.attacks import Attack, AttackSpec, SybilNodes, parse_attack
from velocity.client import WorkerMomentum, run_client_stages
from velocity.errors import ConfigurationError, ProtocolError, ValidationError
from velocity.server.builder import build_engine
from velocity.server.engine import Evaluator, RoundEngine
from velocity.sim.population import ClientPopulation
from velocity.sim.provider import (
    ClientWork,
    SimulatedClients,
    poison_client_data,
    scale_poisoned_update,
)
from velocity.sim.settings import SimulationSettings
from velocity.strategies import (
    Aggregator,
    Pipeline,
    PreAggregator,
    RoundBatch,
    ServerOptimizer,
    ServerSGD,
    parse_strategy,
)
from velocity.types import ClientStateStore, ClientUpdate, ParamSpec, Stage, StageContext

if TYPE_CHECKING:
    from velocity._validation import Constraint

__all__ = ["ByzantineNode", "HonestNode", "LossFn", "ParameterServer"]

_MOMENTUM: Final = Real(low=0, high=1, high_open=True)
_BATCH: Final = Integer(low=1)
_CLASSES: Final = NoneOr(Integer(low=2))

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss_fn(output, target) -> scalar``, averaged over the batch (like ``F.cross_entropy``)."""

AttackLike = Attack | str | Mapping[str, Any]
"""An attack instance, its name, or ``{"type": name, **params}`` (see ``parse_attack``)."""

StageLike = Any
"""A strategy object, its name or its dict form (see ``velocity.strategies.parse_strategy``)."""


# --------------------------------------------------------------------------- nodes


class HonestNode:
    """A worker holding local data; it computes minibatch gradients at given parameters.

    The node never trains its ``model``: the module only provides the architecture (and,
    for the first honest node of a :class:`ParameterServer`, the initial parameters). The
    gradient is taken with :func:`torch.func.functional_call` on a copy of the flat
    parameters, so neither the module nor the parameters handed in are modified.

    Parameters
    ----------
    model : torch.nn.Module
        The architecture; every node of one server must have the same
        :class:`~velocity.types.ParamSpec` (names, shapes and dtypes of its state dict).
    x, y : Tensor
        The node's examples ``(n, ...)`` and targets ``(n, ...)``, ``n >= 1``.
    batch_size : int
        Examples per minibatch, ``>= 1``; a node with fewer examples uses all of them.
    loss_fn : callable, optional
        ``loss_fn(output, target)`` returning the batch-mean loss; default
        :func:`torch.nn.functional.cross_entropy`.

    Notes
    -----
    The gradient is taken with respect to the module's trainable parameters
    (``requires_grad``); entries of buffers and frozen parameters are 0. The module is put in
    training mode for the forward pass (its mode is restored); buffers updated by the forward
    pass (batch-norm statistics) are updated on a scratch copy and discarded.
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        batch_size: int = 32,
        loss_fn: LossFn | None = None,
        momentum: float = 0.0,
    ) -> None:
        who = type(self).__name__
        self._momentum: float = check_value(who, "momentum", momentum, _MOMENTUM)
        if not isinstance(model, nn.Module):
            raise ConfigurationError(f"{who}.model must be a torch.nn.Module; got {model!r}")
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise ConfigurationError(
                f"{who}: x and y must be torch.Tensors; got {type(x).__name__} and "
                f"{type(y).__name__}"
            )
        if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ConfigurationError(
                f"{who}: x and y must hold the same number (>= 1) of examples; got shapes "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        batch_size = check_value(who, "batch_size", batch_size, _BATCH)
        if loss_fn is not None and not callable(loss_fn):
            raise ConfigurationError(f"{who}.loss_fn must be callable; got {loss_fn!r}")
        self._model = model
        self._x = x
        self._y = y
        self._batch_size = batch_size
        self._loss_fn: LossFn = F.cross_entropy if loss_fn is None else loss_fn
        self._spec = ParamSpec.from_module(model)
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        self._trainable = tuple(name for name in self._spec.names if name in trainable)
        self._slices = {
            name: (offset, math.prod(shape))
            for name, offset, shape in zip(
                self._spec.names, self._spec.offsets, self._spec.shapes, strict=True
            )
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(d={self._spec.d}, examples={self.num_examples}, "
            f"batch_size={self._batch_size})"
        )

    @property
    def model(self) -> nn.Module:
        """The architecture (not trained by the node)."""
        return self._model

    @property
    def x(self) -> Tensor:
        return self._x

    @property
    def y(self) -> Tensor:
        return self._y

    @property
    def num_examples(self) -> int:
        return int(self._x.shape[0])

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def momentum(self) -> float:
        """Worker momentum β: the node submits ``m_t = β m_{t-1} + (1 − β) g_t`` (``m_0 = 0``)."""
        return self._momentum

    @property
    def loss_fn(self) -> LossFn:
        return self._loss_fn

    @property
    def spec(self) -> ParamSpec:
        """Layout of the flat parameter and gradient vectors: ``ParamSpec.from_module(model)``."""
        return self._spec

    def batch_indices(self, generator: torch.Generator) -> Tensor:
        """The minibatch: ``randperm(n, generator=generator)[:batch_size]`` (no replacement)."""
        return torch.randperm(self.num_examples, generator=generator)[: self._batch_size]

    def gradient(self, params: Tensor, *, generator: torch.Generator) -> Tensor:
        """The ``(d,)`` float32 minibatch gradient of the loss at the flat ``params``.

        The minibatch is :meth:`batch_indices` ``(generator)``; the parameter server derives
        that generator from ``(seed, round, node index, "batch")``.
        """
        out = torch.empty(self._spec.d, dtype=torch.float32)
        self._gradient(params, self._x, self._y, generator=generator, out=out)
        return out

    def _gradient(
        self, params: Tensor, x: Tensor, y: Tensor, *, generator: torch.Generator, out: Tensor
    ) -> tuple[float, float | None]:
        """Write the minibatch gradient on ``(x, y)`` into ``out``; return (loss, accuracy)."""
        spec = self._spec
        if not isinstance(params, Tensor) or params.shape != (spec.d,):
            raise ValidationError(
                f"{type(self).__name__}: params must be a ({spec.d},) tensor; got "
                f"{getattr(params, 'shape', type(params).__name__)}"
            )
        device = _device(self._model)
        idx = self.batch_indices(generator).to(x.device)
        xb = x.index_select(0, idx).to(device)
        yb = y.index_select(0, idx).to(device)
        pieces = spec.unflatten(params.detach().to(device=device, dtype=torch.float32))
        inputs = {name: t.clone() for name, t in pieces.items()}
        leaves = [inputs[name].requires_grad_(True) for name in self._trainable]
        model = self._model
        was_training = model.training
        model.train()
        try:
            with torch.enable_grad():
                output = functional_call(model, inputs, (xb,))
                loss = self._loss_fn(output, yb)
                grads = torch.autograd.grad(loss, leaves, allow_unused=True) if leaves else ()
        finally:
            model.train(was_training)
        out.zero_()
        for name, grad in zip(self._trainable, grads, strict=True):
            if grad is not None:
                offset, size = self._slices[name]
                out[offset : offset + size].copy_(grad.reshape(-1))
        accuracy: float | None = None
        with torch.no_grad():
            if (
                output.ndim == 2
                and yb.ndim == 1
                and not yb.is_floating_point()
                and output.shape[0] == yb.shape[0]
            ):
                accuracy = float((output.argmax(1) == yb).double().mean())
        return float(loss.detach()), accuracy


class ByzantineNode:
    """A worker that submits what its attack crafts instead of its honest gradient.

    Parameters
    ----------
    attack : Attack, str or dict
        The attack (:func:`velocity.attacks.parse_attack` form: ``"empire"``,
        ``{"type": "sign_flip", "scale": -1}``, an instance...). Omniscient and noise attacks
        (``empire``, ``little``, ``gaussian``, ``inf``, ``mimic``, ``min_max``, ``min_sum``)
        need nothing else. Attacks that start from the node's own honest gradient
        (``sign_flip``, ``model_poisoning``, ``gaussian_noise``) and data attacks
        (``label_flip``, ``label_flipping``, ``backdoor``) need ``model``, ``x`` and ``y``.
        ``sybil_nodes`` adds identities to a round and has no place in a fixed node set.
    model : torch.nn.Module, optional
        The architecture (must match the honest nodes').
    x, y : Tensor, optional
        The node's own examples and targets.
    batch_size : int
        Examples per minibatch, ``>= 1``.
    loss_fn : callable, optional
        Default :func:`torch.nn.functional.cross_entropy`.
    num_classes : int, optional
        Classes for data attacks that relabel examples; by default one more than the largest
        integer label held by any node of the server.

    Raises
    ------
    ConfigurationError
        Unknown attack, ``sybil_nodes``, or an attack that needs the node's data without it.
    """

    def __init__(
        self,
        attack: AttackLike,
        *,
        model: nn.Module | None = None,
        x: Tensor | None = None,
        y: Tensor | None = None,
        batch_size: int = 32,
        loss_fn: LossFn | None = None,
        num_classes: int | None = None,
    ) -> None:
        parsed = parse_attack(attack)
        name = parsed.name
        if isinstance(parsed, SybilNodes):
            raise ConfigurationError(
                "ByzantineNode: attack sybil_nodes adds new identities to a round; in a "
                "parameter server every Byzantine identity is a ByzantineNode, so give one "
                "ByzantineNode per identity with the attack they share (e.g. 'empire')"
            )
        needs = "poisons the node's own data" if parsed.kind == "data" else None
        if parsed.needs_own:
            needs = "starts from the node's own honest gradient"
        if (x is None) != (y is None):
            raise ConfigurationError(
                f"ByzantineNode({name}): give both x and y or neither; got only "
                f"{'x' if y is None else 'y'}"
            )
        if needs is not None:
            missing = [k for k, v in (("model", model), ("x", x), ("y", y)) if v is None]
            if missing:
                raise ConfigurationError(
                    f"ByzantineNode: attack {name} {needs}, so it needs model=, x= and y=; "
                    f"missing: {', '.join(missing)}"
                )
        if x is not None and model is None:
            raise ConfigurationError(
                f"ByzantineNode({name}): x and y need a model= to compute gradients with"
            )
        num_classes = check_value("ByzantineNode", "num_classes", num_classes, _CLASSES)
        local: HonestNode | None = None
        if model is not None and x is not None and y is not None:
            local = HonestNode(model, x, y, batch_size=batch_size, loss_fn=loss_fn)
            if parsed.kind == "data" and (y.ndim != 1 or y.is_floating_point()):
                raise ConfigurationError(
                    f"ByzantineNode: data attack {name} relabels examples and needs integer "
                    f"class labels y of shape (n,); got {y.dtype} of shape {tuple(y.shape)}"
                )
        elif model is not None and not isinstance(model, nn.Module):
            raise ConfigurationError(
                f"ByzantineNode.model must be a torch.nn.Module; got {model!r}"
            )
        self._attack = parsed
        self._model = model
        self._local = local
        self._num_classes = num_classes
        self._spec = None if model is None else ParamSpec.from_module(model)

    def __repr__(self) -> str:
        data = "" if self._local is None else f", examples={self._local.num_examples}"
        return f"ByzantineNode({self._attack.describe()}{data})"

    @property
    def attack(self) -> Attack:
        return self._attack

    @property
    def model(self) -> nn.Module | None:
        return self._model

    @property
    def spec(self) -> ParamSpec | None:
        """``ParamSpec.from_module(model)``, or ``None`` without a model."""
        return self._spec

    @property
    def num_classes(self) -> int | None:
        return self._num_classes

    @property
    def computes_gradient(self) -> bool:
        """Whether the node computes a gradient on its own data (own-gradient or data attack)."""
        return self._attack.kind == "data" or self._attack.needs_own

    def gradient(self, params: Tensor, *, generator: torch.Generator) -> Tensor:
        """The node's *honest* minibatch gradient at ``params`` (as :meth:`HonestNode.gradient`)."""
        if self._local is None:
            raise ConfigurationError(
                f"ByzantineNode({self._attack.name}) has no model and data to compute a gradient"
            )
        return self._local.gradient(params, generator=generator)


def _device(model: nn.Module) -> torch.device:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


# --------------------------------------------------------------------------- the round's rows


class _GradientNodes(SimulatedClients):
    """The nodes as simulated clients: client ``c`` writes node ``c``'s gradient.

    Rows are minibatch *gradients* (not deltas), or their worker momentum
    (:class:`velocity.client.WorkerMomentum`, its buffer in the engine's per-client state
    store, so a checkpoint keeps it) for nodes with ``momentum = β > 0``. Honest nodes
    (``c < num_honest``) compute at the round's global parameters; Byzantine nodes that
    compute at all do so at ``byzantine_params`` when set (their stale copy), else at the
    global parameters. Data attacks poison the node's data with a generator derived from
    ``(seed, round, c, "poison")`` and multiply the row by ``attack.update_scale()``, as
    :class:`~velocity.sim.SequentialClients` does. Every node reports one sample, so
    sample-weighted rules weigh the nodes equally.
    """

    name: ClassVar[str] = "parameter_server"

    def __init__(
        self,
        workers: Sequence[HonestNode | None],
        num_classes: Sequence[int | None],
        *,
        num_honest: int,
        seed: int,
        byzantine_params: Tensor | None,
        client_state: ClientStateStore,
    ) -> None:
        n = len(workers)
        super().__init__(ClientPopulation(torch.arange(n), torch.arange(n + 1)), seed=seed)
        self.workers = list(workers)
        self.num_classes = list(num_classes)
        self.num_honest = num_honest
        self.byzantine_params = byzantine_params
        self.client_state = client_state
        self._stages = [
            [] if w is None or w.momentum == 0.0 else [WorkerMomentum(w.momentum)]
            for w in self.workers
        ]

    def train(self, work: ClientWork) -> ClientUpdate:
        task, client = work.task, work.index
        worker = self.workers[client]
        if worker is None:
            raise ValidationError(f"node {client} has no model and data to compute with")
        params = task.params
        if client >= self.num_honest and self.byzantine_params is not None:
            params = self.byzantine_params
        x, y = worker.x, worker.y
        attack = work.poison
        if attack is not None:
            classes = self.num_classes[client]
            if classes is None:
                raise ConfigurationError(
                    f"node {client}: data attack {attack.name} needs integer class labels "
                    "to relabel; give ByzantineNode(num_classes=...)"
                )
            x, y = poison_client_data(
                attack, x, y, num_classes=classes, seed=self.seed, round_=task.round, client=client
            )
        loss, accuracy = worker._gradient(
            params,
            x,
            y,
            generator=torch_generator(self.seed, task.round, client, "batch"),
            out=work.out,
        )
        scale_poisoned_update(attack, work.out)
        if self._stages[client]:
            ctx = StageContext(self.seed, task.round, task.version, worker.spec, task.params)
            run_client_stages(
                self._stages[client],
                work.out,
                self.client_state,
                ctx.for_client(task.client_id, client),
            )
        metrics = {} if accuracy is None else {"accuracy": accuracy}
        return ClientUpdate(task.client_id, 1, work.out, loss=loss, metrics=metrics)


@dataclass(frozen=True)
class _GradientStep(ServerOptimizer):
    """Server gradient descent ``x ← x − lr · g`` that keeps ``g`` as its state.

    Computed as ``ServerSGD(lr).step(x, −g)`` (bit-identical to ``x − lr · g``); the
    engine keeps the aggregate it applied (``last_aggregate``), which is what
    :meth:`ParameterServer.round` returns.
    """

    lr: float = 0.05

    _constraints: ClassVar[Mapping[str, Constraint]] = ServerSGD._constraints

    def step(
        self, params: Tensor, delta: Tensor, state: Mapping[str, Tensor] | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        new, _ = ServerSGD(lr=self.lr).step(params, -delta, None)
        return new, {}


# --------------------------------------------------------------------------- the server


class ParameterServer:
    """Synchronous parameter-server training with honest and Byzantine nodes (ByzPy's API).

    Each :meth:`round`: every honest node computes its minibatch gradient at the global
    parameters; every Byzantine node submits its attack's output (omniscient attacks see the
    round's honest gradients); the pre-aggregators and the aggregator combine the ``n``
    gradients into ``g``; the server steps ``x ← x − lr · g`` and returns ``g``.

    Unlike ByzPy's actor-based server, this one is **synchronous**: :meth:`round` and
    :meth:`shutdown` are plain methods (no ``await``), and the nodes run one after another in
    this process. The round is one :meth:`velocity.server.RoundEngine.run_round` (see the
    module docstring for how nodes, attacks and the strategy map onto it).

    Parameters
    ----------
    honest_nodes : sequence of HonestNode
        At least one. The first node's model gives the initial global parameters.
    byzantine_nodes : sequence of ByzantineNode
        Possibly empty.
    aggregator : aggregator, name or dict
        E.g. ``"FedAvg"`` (the mean), ``"FedMedian"``, ``{"type": "TrimmedMean", "k": 2}``,
        ``Krum(f=2)``. A :class:`~velocity.strategies.Pipeline` without a server optimizer is
        accepted too and flattened: its pre-aggregators run after ``pre_aggregator``.
    pre_aggregator : pre-aggregator, name, dict or a sequence of them, optional
        E.g. ``NNM(f=2)``, ``{"type": "Bucketing", "bucket_size": 2}``, ``"Clip"``.
    update_byzantines : bool
        Byzantine nodes that compute their own gradient (``sign_flip``, ``label_flip``...)
        keep their own copy of the parameters. With ``True`` that copy is refreshed from the
        global parameters after every round, so they compute at the current model, like the
        honest nodes; with ``False`` (ByzPy's default) it stays at the initial parameters.
        Omniscient attacks read the round's honest gradients and are not affected.
    lr : float
        Server learning rate, ``> 0``.
    seed : int
        Root of every random draw: minibatches ``(seed, round, node, "batch")``, data
        poisoning ``(seed, round, node, "poison")``, attacks ``(seed, round, "attack", j)``
        and randomized aggregation ``(seed, round, "aggregate")``. The same seed gives
        bit-identical parameters after any number of rounds.
    evaluate : callable ``(params) -> (loss, accuracy)``, optional
        Evaluates the global parameters (flat, in :attr:`spec`'s layout) in round 1, every
        ``eval_every`` rounds and the last round of :meth:`RoundEngine.run`; the results are
        the history's ``global_loss`` / ``global_accuracy`` (what the YAML
        ``parameter_server:`` section wires to the test set).
    eval_every : int
        ``>= 1``.
    stages : sequence of server stages, optional
        Extra stages before aggregation (the audit trail's, as in :func:`build_engine`).

    Raises
    ------
    ConfigurationError
        No honest node, a node of the wrong type, nodes whose architectures (``ParamSpec``)
        differ, an unknown or misplaced strategy stage, a Pipeline with a server optimizer,
        or a bad ``lr``, ``seed`` or ``update_byzantines``.

    Notes
    -----
    Node ``i`` is client ``i`` of the simulation: honest nodes are ``0 .. h−1`` and Byzantine
    nodes ``h .. h+b−1``; their ids (``"client-<i>"``, see :attr:`node_ids`) name them in
    :attr:`history` (``participated``, ``attack_results[j]["client_ids"]``...). Every node
    carries the same weight for sample-weighted rules (``FedAvg`` is the plain mean, as in
    ByzPy), whatever its batch size. The rows the aggregator sees are laid out
    ``[honest | Byzantine nodes that compute a gradient | the other Byzantine nodes]``.
    """

    def __init__(
        self,
        honest_nodes: Sequence[HonestNode],
        byzantine_nodes: Sequence[ByzantineNode],
        aggregator: StageLike,
        pre_aggregator: StageLike | None = None,
        update_byzantines: bool = False,
        *,
        lr: float = 0.05,
        seed: int = 0,
        evaluate: Evaluator | None = None,
        eval_every: int = 1,
        stages: Sequence[Stage[RoundBatch]] = (),
    ) -> None:
        honest = _node_list(honest_nodes, HonestNode, "honest_nodes")
        byzantine = _node_list(byzantine_nodes, ByzantineNode, "byzantine_nodes")
        if not honest:
            raise ConfigurationError(
                "ParameterServer needs at least one honest node; honest_nodes is empty"
            )
        owner = "ParameterServer"
        update_byzantines = check_value(owner, "update_byzantines", update_byzantines, Boolean())
        lr = check_value(owner, "lr", lr, Real(low=0, low_open=True))
        seed = check_value(owner, "seed", seed, Integer())
        eval_every = check_value(owner, "eval_every", eval_every, Integer(low=1))
        if evaluate is not None and not callable(evaluate):
            raise ConfigurationError(
                f"{owner}.evaluate must be callable(params) -> (loss, accuracy) or None; "
                f"got {evaluate!r}"
            )
        spec = honest[0].spec
        _check_architectures(spec, honest, byzantine)

        pres, agg = _stages(aggregator, pre_aggregator)
        self._strategy = Pipeline(*pres, agg, ServerSGD(lr=float(lr)))
        h, b = len(honest), len(byzantine)
        n = h + b
        init = spec.flatten(honest[0].model.state_dict()).detach().to("cpu", torch.float32)
        default_classes = _default_classes(honest, byzantine)
        store = ClientStateStore()
        provider = _GradientNodes(
            [*honest, *(node._local for node in byzantine)],
            [None] * h
            + [
                default_classes if node.num_classes is None else node.num_classes
                for node in byzantine
            ],
            num_honest=h,
            seed=seed,
            byzantine_params=None if update_byzantines else init.clone(),
            client_state=store,
        )
        self._engine = build_engine(
            base=provider,
            spec=spec,
            init_params=init,
            strategy=Pipeline(*pres, agg, _GradientStep(lr=float(lr))),
            settings=SimulationSettings(
                seed=seed, client_fraction=1.0, min_clients=n, eval_every=eval_every
            ),
            attacks=[AttackSpec(node.attack, clients=(h + j,)) for j, node in enumerate(byzantine)],
            client_state=store,
            evaluate=evaluate,
            stages=stages,
        )
        self._provider = provider
        self._honest = tuple(honest)
        self._byzantine = tuple(byzantine)
        self._lr = float(lr)
        self._seed = seed
        self._update_byzantines = update_byzantines
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"ParameterServer(honest={len(self._honest)}, byzantine={len(self._byzantine)}, "
            f"strategy={self._strategy!r}, round={self.round_count}"
            f"{', closed' if self._closed else ''})"
        )

    def __enter__(self) -> ParameterServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ the round

    def round(self) -> Tensor:
        """Run one synchronous training round; return the aggregated gradient.

        Returns
        -------
        Tensor
            The ``(d,)`` float32 aggregate ``g`` of the round's gradients (after
            pre-aggregation), exactly as the aggregator produced it; the global parameters
            moved by ``−lr · g``.

        Raises
        ------
        ProtocolError
            The server was shut down.
        """
        if self._closed:
            raise ProtocolError("ParameterServer.round: the server has been shut down")
        self._engine.run_round()
        aggregate = self._engine.last_aggregate
        assert aggregate is not None
        return aggregate.clone()

    def shutdown(self) -> None:
        """Release the nodes; :meth:`round` then raises ProtocolError. Idempotent.

        The parameters, :attr:`model` and :attr:`history` stay readable.
        """
        if self._closed:
            return
        self._closed = True
        self._provider.close()

    # ------------------------------------------------------------------ state

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` was called."""
        return self._closed

    @property
    def global_params(self) -> Tensor:
        """A copy of the flat ``(d,)`` float32 global parameters."""
        return self._engine.global_params.clone()

    @property
    def spec(self) -> ParamSpec:
        """Layout of the flat parameter and gradient vectors (the nodes' architecture)."""
        return self._engine.spec

    def state_dict(self) -> dict[str, Tensor]:
        """The global parameters as the model's state dict (copies)."""
        pieces = self._engine.spec.unflatten(self._engine.global_params)
        return {name: tensor.clone() for name, tensor in pieces.items()}

    @property
    def model(self) -> nn.Module:
        """A new copy of the first honest node's module holding the global parameters."""
        module: nn.Module = copy.deepcopy(self._honest[0].model)
        module.load_state_dict(self.state_dict())
        return module

    @property
    def history(self) -> list[dict[str, Any]]:
        """One :meth:`~velocity.types.RoundResult.to_dict` per round, oldest first.

        ``train_loss`` is the honest nodes' mean minibatch loss, ``aggregation`` the
        aggregator's metrics and ``attack_results`` one entry per Byzantine node that
        attacked (its ``client_ids`` name the node, see :attr:`node_ids`).
        """
        return [result.to_dict() for result in self._engine.results]

    @property
    def round_count(self) -> int:
        """Number of completed rounds."""
        return self._engine.round

    @property
    def node_ids(self) -> tuple[str, ...]:
        """The nodes' ids in the history: honest nodes first, then Byzantine nodes."""
        return tuple(f"client-{i}" for i in range(len(self._honest) + len(self._byzantine)))

    @property
    def honest_nodes(self) -> tuple[HonestNode, ...]:
        return self._honest

    @property
    def byzantine_nodes(self) -> tuple[ByzantineNode, ...]:
        return self._byzantine

    @property
    def strategy(self) -> Pipeline:
        """``Pipeline(*pre_aggregators, aggregator, ServerSGD(lr))``: what the server runs.

        (The step is applied to the negated aggregate, since the rows are gradients.)
        """
        return self._strategy

    @property
    def lr(self) -> float:
        return self._lr

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def update_byzantines(self) -> bool:
        return self._update_byzantines

    @property
    def engine(self) -> RoundEngine:
        """The underlying round engine (checkpoints: ``engine.state()`` / ``restore``, which
        include every node's worker momentum)."""
        return self._engine


# --------------------------------------------------------------------------- helpers


def _node_list(nodes: object, cls: type, what: str) -> list[Any]:
    if isinstance(nodes, str | bytes) or not isinstance(nodes, Sequence):
        raise ConfigurationError(
            f"ParameterServer.{what} must be a list of {cls.__name__}; got {nodes!r}"
        )
    for index, node in enumerate(nodes):
        if not isinstance(node, cls):
            raise ConfigurationError(
                f"ParameterServer.{what}[{index}] must be a {cls.__name__}; got "
                f"{type(node).__name__}"
            )
    return list(nodes)


def _check_architectures(
    spec: ParamSpec, honest: Sequence[HonestNode], byzantine: Sequence[ByzantineNode]
) -> None:
    named: list[tuple[str, ParamSpec | None]] = [
        (f"honest_nodes[{i}]", node.spec) for i, node in enumerate(honest)
    ]
    named += [(f"byzantine_nodes[{i}]", node.spec) for i, node in enumerate(byzantine)]
    for where, other in named:
        if other is None or other == spec:
            continue
        diff = _first_difference(spec, other)
        raise ConfigurationError(
            f"ParameterServer: {where} has a different architecture from honest_nodes[0] "
            f"({diff}); every node must have the same state-dict names, shapes and dtypes"
        )


def _first_difference(a: ParamSpec, b: ParamSpec) -> str:
    for name_a, name_b, sa, sb, da, db in itertools.zip_longest(
        a.names, b.names, a.shapes, b.shapes, a.dtypes, b.dtypes
    ):
        if name_a != name_b:
            return f"tensor {name_b!r} where honest_nodes[0] has {name_a!r}"
        if sa != sb or da != db:
            return f"{name_a!r} is {db} {sb}, not {da} {sa}"
    return f"d={b.d} versus d={a.d}"


def _stages(aggregator: StageLike, pre_aggregator: StageLike | None) -> tuple[list[Any], Any]:
    """(pre-aggregators, aggregator) from the user's specs."""
    pres: list[Any] = []
    if pre_aggregator is not None:
        items = (
            list(pre_aggregator)
            if isinstance(pre_aggregator, Sequence) and not isinstance(pre_aggregator, str)
            else [pre_aggregator]
        )
        for item in items:
            if isinstance(item, PreAggregator):
                pres.append(item)
                continue
            try:
                parsed = parse_strategy([item, "FedAvg"])
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"ParameterServer.pre_aggregator: {item!r} is not a pre-aggregator "
                    f"(Bucketing, Clip, ARC, NNM: an instance, a name or a dict): {exc}"
                ) from exc
            assert isinstance(parsed, Pipeline)
            pres.extend(parsed.pre_aggregators)
    try:
        strategy = parse_strategy(aggregator)
    except ConfigurationError as exc:
        raise ConfigurationError(f"ParameterServer.aggregator: {exc}") from exc
    if isinstance(strategy, Aggregator):
        return pres, strategy
    assert isinstance(strategy, Pipeline)
    if strategy.server_optimizer is not None:
        raise ConfigurationError(
            f"ParameterServer.aggregator: {strategy!r} has a server optimizer; the parameter "
            "server applies its own step (x ← x − lr · g); pass the pipeline without it"
        )
    return [*pres, *strategy.pre_aggregators], strategy.aggregator


def _default_classes(
    honest: Sequence[HonestNode], byzantine: Sequence[ByzantineNode]
) -> int | None:
    """One more than the largest integer label any node holds (at least 2), or None."""
    labels = [node.y for node in honest]
    labels += [node._local.y for node in byzantine if node._local is not None]
    top: int | None = None
    for y in labels:
        if y.ndim != 1 or y.is_floating_point() or y.numel() == 0:
            continue
        top = max(int(y.max()), -1 if top is None else top)
    return None if top is None else max(top + 1, 2)
