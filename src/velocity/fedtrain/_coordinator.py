"""The DiLoCo coordinator: the original library's rounds, run on velocity's round engine."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from velocity import kernels
from velocity.fedtrain._provider import (
    FedtrainClients,
    GivenUpdates,
    UpdateProvider,
    check_layout,
    check_updates,
    spec_of,
)
from velocity.fedtrain._tools import CreditTracker, GradientAverager, HashVerifier
from velocity.fedtrain.models import (
    FederatedNode,
    GlobalState,
    LocalUpdate,
    TrainingConfig,
    TrainingResult,
)
from velocity.server import RoundEngine
from velocity.strategies import Aggregator, DiLoCo, Pipeline
from velocity.types import ParamSpec

__all__ = ["DiLoCoCoordinator"]


@dataclass(frozen=True)
class _UnweightedMean(Aggregator):
    """The plain mean of the rows: every node counts once (its samples are credits only)."""

    needs_losses: ClassVar[bool] = False

    def _reduce(self, updates: Tensor, weights: Tensor | None) -> Tensor:
        return kernels.mean(updates, None, nonfinite="raise")


class _Roster:
    """The engine's sampler: the nodes whose updates the round aggregates, in their order."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def sample(self, round_: int) -> Sequence[str]:
        return list(self.ids)


class DiLoCoCoordinator:
    """DiLoCo rounds: average the nodes' pseudo-gradients, take an outer Nesterov step.

    Every round runs on one :class:`velocity.server.RoundEngine` per training run: the
    round's :class:`LocalUpdate`\\ s reach it through :class:`velocity.fedtrain.FedtrainClients`
    (admitted like any update: shape, round, version, SHA-256 digest), an unweighted mean
    aggregates them, and :class:`velocity.strategies.DiLoCo` (SGD with Nesterov momentum,
    ``outer_lr``, ``outer_momentum``) is the server step, its momentum the engine's stage
    state (checkpointed by ``coordinator.engine.state()``). The engine's model is
    :attr:`model`; it starts at zeros.

    Parameters
    ----------
    outer_lr : float
        The outer learning rate, ``> 0`` (DiLoCo's 0.7).
    outer_momentum : float
        The outer momentum β, in ``[0, 1)`` (DiLoCo's 0.9).
    nesterov : bool
        Nesterov momentum (DiLoCo's choice); ``False`` gives heavy-ball momentum.

    Notes
    -----
    With the mean gradient ``g`` of a round (the nodes send pseudo-gradients, start − end
    weights) the model moves as :class:`torch.optim.SGD` ``(lr=outer_lr,
    momentum=outer_momentum, nesterov=nesterov)`` with ``grad = g``::

        b ← β b + g;   x ← x − outer_lr · (g + β b)

    :attr:`GlobalState.global_weights` keeps the original library's meaning, the round's
    averaged gradients (in float64, :class:`GradientAverager`); :attr:`GlobalState.model`
    and :attr:`model` are the outer-optimized weights (float32, the engine's).

    A run starts with :meth:`initialize` (also called by :meth:`run_training`): it forgets
    the previous run's engine and credits. The engine is built by the first round whose
    gradients hold values; that round fixes the parameters (sorted keys, lengths) and a
    later round with another key or length is a :class:`ValueError` naming it. A round
    whose lists are all empty advances the state without an outer step (there is nothing
    to step). Started from a state whose :attr:`GlobalState.model` is set (a checkpoint),
    the engine starts from that model (with fresh momentum).

    Examples
    --------
    >>> coordinator = DiLoCoCoordinator(outer_lr=1.0, outer_momentum=0.5)
    >>> nodes = [FederatedNode(node_id="a", address=""), FederatedNode(node_id="b", address="")]
    >>> config = TrainingConfig(model_name="m", learning_rate=0.1, batch_size=1, local_steps=1,
    ...                         global_rounds=1, num_nodes=2)
    >>> state = coordinator.initialize(config, nodes)
    >>> updates = [LocalUpdate(node_id=n, round_id=1, gradients={"w": [g]}, loss=1.0,
    ...                        samples_used=4) for n, g in (("a", 1.0), ("b", 3.0))]
    >>> state = coordinator.run_round(state, updates)
    >>> state.global_weights, state.model  # mean 2; x = 0 - 1.0 * (2 + 0.5 * 2)
    ({'w': [2.0]}, {'w': [-3.0]})
    >>> coordinator.credit_tracker.all_credits()
    {'a': 4, 'b': 4}
    """

    def __init__(
        self, outer_lr: float = 0.7, outer_momentum: float = 0.9, nesterov: bool = True
    ) -> None:
        # DiLoCo validates the settings (a ConfigurationError, which is a ValueError).
        self.outer_optimizer = DiLoCo(lr=outer_lr, momentum=outer_momentum, nesterov=nesterov)
        self.outer_lr = self.outer_optimizer.lr
        self.outer_momentum = self.outer_optimizer.momentum
        self.nesterov = self.outer_optimizer.nesterov
        self.strategy = Pipeline(_UnweightedMean(), self.outer_optimizer)
        self.credit_tracker = CreditTracker()
        self.averager = GradientAverager()
        self.verifier = HashVerifier()
        self.engine: RoundEngine | None = None
        self.config: TrainingConfig | None = None
        self.nodes: list[FederatedNode] | None = None
        self._clients: FedtrainClients | None = None
        self._roster = _Roster()
        self._offset = 0

    # ------------------------------------------------------------------ state

    @property
    def model(self) -> dict[str, list[float]] | None:
        """The engine's global model (the outer-optimized weights); ``None`` before training."""
        if self.engine is None:
            return None
        params = self.engine.spec.unflatten(self.engine.global_params)
        return {name: [float(v) for v in tensor.tolist()] for name, tensor in params.items()}

    def initialize(self, config: TrainingConfig, nodes: Sequence[FederatedNode]) -> GlobalState:
        """Start a run: forget the previous engine and credits; return the round-0 state.

        Parameters
        ----------
        config : TrainingConfig
            The run's settings (kept in :attr:`GlobalState.config`).
        nodes : sequence of FederatedNode
            The run's nodes, with unique ids; only they may send updates.

        Returns
        -------
        GlobalState
            ``round_id`` 0, no weights, no loss.
        """
        if not isinstance(config, TrainingConfig):
            raise ValueError(f"initialize: config must be a TrainingConfig; got {config!r}")
        nodes = list(nodes)
        bad = [n for n in nodes if not isinstance(n, FederatedNode)]
        if bad:
            raise ValueError(f"initialize: nodes must be FederatedNode; got {bad[0]!r}")
        ids = [n.node_id for n in nodes]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"initialize: node ids must be unique; {twice} appear twice")
        self.config = config
        self.nodes = nodes
        self.engine = None
        self._clients = None
        self._offset = 0
        self.credit_tracker.reset()
        return GlobalState(round_id=0, config=config)

    def collect_updates(self, updates: Sequence[LocalUpdate]) -> list[LocalUpdate]:
        """Check a round's updates before aggregation; return them as a list.

        Every item must be a :class:`LocalUpdate`, every node may send once, every sender
        must be one of the run's nodes (once :meth:`initialize` named them), and an update
        carrying a :attr:`LocalUpdate.digest` must match it.

        Raises
        ------
        ValueError
            ``"No updates provided for aggregation."`` for none, else naming the node at fault.
        """
        if isinstance(updates, list | tuple) and not updates:
            raise ValueError("No updates provided for aggregation.")
        known = None if self.nodes is None else {n.node_id for n in self.nodes}
        return check_updates(updates, None, known, verifier=self.verifier)

    # ------------------------------------------------------------------ rounds

    def run_round(self, state: GlobalState, updates: Sequence[LocalUpdate]) -> GlobalState:
        """One round: check, average, take the outer step on the engine, credit the nodes.

        Parameters
        ----------
        state : GlobalState
            The state the last round returned (or :meth:`initialize`'s).
        updates : sequence of LocalUpdate
            The round's updates, each for round ``state.round_id + 1``.

        Returns
        -------
        GlobalState
            ``round_id + 1``; ``global_weights`` the averaged gradients, ``avg_loss`` the
            mean loss, ``participating_nodes`` the senders, ``model`` the engine's weights.

        Raises
        ------
        ValueError
            No updates, a wrong round, a duplicate or unknown node, a digest mismatch, a
            missing, extra or resized key (see the class notes), a state that is not the
            run's last.
        """
        batch = self.collect_updates(updates)  # digests verified here, once
        round_id = state.round_id + 1
        check_updates(batch, round_id, digests=False)
        averaged = self.averager.average(batch)  # the key and length rule, within the round
        engine = self.engine
        if engine is not None:
            at = self._offset + engine.round
            if state.round_id != at:
                raise ValueError(
                    f"run_round: the state is at round {state.round_id} but this run is at "
                    f"round {at}; pass the state the last round returned, or initialize() a "
                    "new run"
                )
            check_layout(batch, engine.spec, round_id)
        else:
            spec = spec_of(batch)
            if spec.d > 0:
                engine = self._build_engine(spec, state)
        model = state.model
        if engine is not None:
            try:
                self._run_engine_round(engine, state, batch)
            except Exception:
                if engine.round == 0:  # the round that built the engine failed: unbuild it
                    self.engine, self._clients, self._offset = None, None, 0
                raise
            model = self.model
        for update in batch:
            self.credit_tracker.record(update.node_id, update.samples_used)
        return GlobalState(
            round_id=round_id,
            global_weights=averaged,
            participating_nodes=[u.node_id for u in batch],
            avg_loss=math.fsum(u.loss for u in batch) / len(batch),
            model=model,
            config=state.config if state.config is not None else self.config,
        )

    def _build_engine(self, spec: ParamSpec, state: GlobalState) -> RoundEngine:
        init = torch.zeros(spec.d, dtype=torch.float32)
        if state.model is not None:
            sizes = {k: len(v) for k, v in state.model.items() if v}
            if sizes != spec.sizes:
                raise ValueError(
                    f"run_round: the state's model has parameters {sizes}; the round's "
                    f"gradients have {spec.sizes}"
                )
            init = torch.cat(
                [torch.tensor(state.model[name], dtype=torch.float32) for name in spec.names]
            )
            if not bool(torch.isfinite(init).all()):
                raise ValueError("run_round: the state's model holds values beyond float32")
        self._clients = FedtrainClients(GivenUpdates(), self.nodes or [], spec)
        self._clients.verify_digests = False  # run_round verified them before the engine
        engine = RoundEngine(
            provider=self._clients,
            sampler=self._roster,
            spec=spec,
            init_params=init,
            strategy=self.strategy,
            seed=0,
        )
        self.engine = engine
        self._offset = state.round_id
        return engine

    def _run_engine_round(
        self, engine: RoundEngine, state: GlobalState, batch: list[LocalUpdate]
    ) -> None:
        clients = self._clients
        assert clients is not None
        for update in batch:  # without initialize(), every sender joins the run
            if update.node_id not in clients.nodes:
                clients.nodes[update.node_id] = FederatedNode(node_id=update.node_id, address="")
        clients.provider = GivenUpdates(batch)
        clients.state = state
        self._roster.ids = [u.node_id for u in batch]
        result = engine.run_round()
        if result.failures or len(result.participated) != len(batch):
            problems = "; ".join(
                f"{f.client_id}: {f.reason} ({f.message})" for f in result.failures
            )
            raise ValueError(f"round {state.round_id + 1}: the engine refused updates: {problems}")

    # ------------------------------------------------------------------ training

    def run_training(
        self, config: TrainingConfig, nodes: Sequence[FederatedNode], provider: UpdateProvider
    ) -> TrainingResult:
        """Run ``config.global_rounds`` rounds, asking ``provider`` for each round's updates.

        Rounds are numbered ``1 .. global_rounds``; when the provider returns an empty list
        the run stops there (fewer rounds completed than planned).

        Parameters
        ----------
        config : TrainingConfig
            The run's settings.
        nodes : sequence of FederatedNode
            The nodes (handed to the provider every round).
        provider : UpdateProvider
            Where the updates come from.

        Returns
        -------
        TrainingResult
            ``final_loss`` the last round's average loss, ``total_samples`` over every
            node and round, ``duration_seconds`` the wall time.
        """
        if not isinstance(provider, UpdateProvider):
            raise ValueError(
                f"run_training: provider must be a velocity.fedtrain.UpdateProvider; got "
                f"{type(provider).__name__}"
            )
        start = time.perf_counter()
        state = self.initialize(config, nodes)
        history: list[float] = []
        for round_id in range(1, config.global_rounds + 1):
            updates = provider.get_updates(round_id, state, list(self.nodes or []))
            if isinstance(updates, list | tuple) and not updates:
                break
            state = self.run_round(state, updates)
            assert state.avg_loss is not None
            history.append(state.avg_loss)
        return TrainingResult(
            model_name=config.model_name,
            final_loss=history[-1] if history else None,
            total_samples=self.credit_tracker.total(),
            duration_seconds=time.perf_counter() - start,
            rounds_completed=len(history),
            rounds_planned=config.global_rounds,
            loss_history=history,
            final_state=state,
        )
