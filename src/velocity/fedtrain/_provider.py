"""The injection point (:class:`UpdateProvider`) and its adapter to the round engine.

:class:`UpdateProvider` is the original library's interface: ``get_updates(round_id, state,
nodes)`` returns the nodes' :class:`LocalUpdate`\\ s. :class:`FedtrainClients` makes any such
provider a :class:`velocity.types.UpdateProvider` of the round engine: the engine's tasks
become one ``get_updates`` call, each :class:`LocalUpdate` one
:class:`velocity.types.ClientUpdate` whose delta is the update's gradients laid out flat in a
:class:`velocity.types.ParamSpec` (keys sorted, each a 1-D parameter of its list's length),
negated (see :class:`FedtrainClients`) and stamped with its digest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import ClassVar

import numpy as np
import torch

from velocity.fedtrain._tools import HashVerifier, layout_of
from velocity.fedtrain.models import FederatedNode, GlobalState, LocalUpdate
from velocity.types import ClientTask, ClientUpdate, ParamSpec, Result
from velocity.types import UpdateProvider as EngineProvider

__all__ = ["FedtrainClients", "UpdateProvider", "check_updates"]


class UpdateProvider(ABC):
    """Where the nodes' updates come from: real nodes over a network, or a simulator.

    Implement :meth:`get_updates`. The coordinator calls it once per round; returning an
    empty list ends :meth:`~velocity.fedtrain.DiLoCoCoordinator.run_training` early.

    Examples
    --------
    >>> class Constant(UpdateProvider):
    ...     def get_updates(self, round_id, state, nodes):
    ...         return [LocalUpdate(node_id=n.node_id, round_id=round_id, gradients={"w": [1.0]},
    ...                             loss=1.0, samples_used=1) for n in nodes]
    >>> nodes = [FederatedNode(node_id="a", address="")]
    >>> [u.node_id for u in Constant().get_updates(1, GlobalState(round_id=0), nodes)]
    ['a']
    """

    @abstractmethod
    def get_updates(
        self, round_id: int, state: GlobalState, nodes: list[FederatedNode]
    ) -> list[LocalUpdate]:
        """The updates of round ``round_id`` (``state.round_id + 1``) from ``nodes``.

        Parameters
        ----------
        round_id : int
            The round to train, ``>= 1``; every update must carry it.
        state : GlobalState
            The state after the previous round (:attr:`GlobalState.model` holds the weights
            to train from, once there are any).
        nodes : list of FederatedNode
            The nodes asked; each sends at most one update.

        Returns
        -------
        list of LocalUpdate
        """


def check_updates(
    updates: object,
    round_id: int | None = None,
    nodes: Collection[str] | None = None,
    *,
    verifier: HashVerifier | None = None,
    digests: bool = True,
) -> list[LocalUpdate]:
    """``updates`` as a list, after the round's checks; a :class:`ValueError` names what fails.

    Every item must be a :class:`LocalUpdate`; no node may send twice; with ``round_id``,
    every update must carry it; with ``nodes``, every sender must be one of them; an update
    with a :attr:`LocalUpdate.digest` must match it (:meth:`HashVerifier.verify`; skipped
    with ``digests=False``, for updates already checked).

    Examples
    --------
    >>> u = LocalUpdate(node_id="a", round_id=2, gradients={}, loss=0.0, samples_used=0)
    >>> check_updates([u], round_id=3)
    Traceback (most recent call last):
    ...
    ValueError: round 3: the update of node 'a' is for round 2
    """
    if not isinstance(updates, list | tuple):
        raise ValueError(f"updates must be a list of LocalUpdate; got {type(updates).__name__}")
    where = "" if round_id is None else f"round {round_id}: "
    seen: set[str] = set()
    checked: list[LocalUpdate] = []
    verifier = HashVerifier() if verifier is None else verifier
    for index, update in enumerate(updates):
        if not isinstance(update, LocalUpdate):
            raise ValueError(
                f"{where}update {index} is a {type(update).__name__}, not a LocalUpdate"
            )
        who = update.node_id
        if who in seen:
            raise ValueError(f"{where}node {who!r} sent more than one update")
        seen.add(who)
        if round_id is not None and update.round_id != round_id:
            raise ValueError(f"{where}the update of node {who!r} is for round {update.round_id}")
        if nodes is not None and who not in nodes:
            raise ValueError(f"{where}node {who!r} is not one of this run's nodes")
        if digests and update.digest is not None and not verifier.verify(update, update.digest):
            raise ValueError(
                f"{where}the gradients of node {who!r} do not match their digest "
                "(corrupted or tampered update)"
            )
        checked.append(update)
    return checked


def spec_of(updates: Sequence[LocalUpdate]) -> ParamSpec:
    """The flat layout of a round's gradients: keys with values, sorted, each 1-D.

    Keys whose lists are all empty hold nothing and are left out (their average is ``[]``).
    A node missing a key or sending another length is a :class:`ValueError`
    (:class:`~velocity.fedtrain.GradientAverager`'s rule).
    """
    layout = {k: n for k, n in layout_of(updates).items() if n > 0}
    names = tuple(sorted(layout))
    return ParamSpec(names, tuple((layout[k],) for k in names))


def check_layout(updates: Sequence[LocalUpdate], spec: ParamSpec, round_id: int) -> None:
    """Refuse a round whose keys or lengths are not ``spec``'s, naming the key."""
    layout = {k: n for k, n in layout_of(updates).items() if n > 0}
    sizes = spec.sizes
    for key in sorted(sizes.keys() | layout.keys()):
        if key not in layout:
            raise ValueError(
                f"round {round_id}: no node sends gradient {key!r}, which the model has "
                f"({sizes[key]} values); every round must send every parameter"
            )
        if key not in sizes:
            raise ValueError(
                f"round {round_id}: gradient {key!r} ({layout[key]} values) is not a parameter "
                f"of the model fixed by the first round ({sorted(sizes)})"
            )
        if layout[key] != sizes[key]:
            raise ValueError(
                f"round {round_id}: gradient {key!r} has {layout[key]} values; the model's "
                f"parameter has {sizes[key]}"
            )


def flat_gradients(update: LocalUpdate, spec: ParamSpec) -> torch.Tensor:
    """``update.gradients`` as one ``(d,)`` float32 vector in ``spec``'s layout.

    Raises a :class:`ValueError` naming the node and the key when a key is missing, has
    another length, is not in the spec (with values), or holds a value that overflows float32.

    Examples
    --------
    >>> spec = ParamSpec(("b", "w"), ((1,), (2,)))
    >>> u = LocalUpdate(node_id="a", round_id=1, gradients={"w": [1, 2], "b": [3]}, loss=0,
    ...                 samples_used=0)
    >>> flat_gradients(u, spec).tolist()
    [3.0, 1.0, 2.0]
    """
    who = update.node_id
    extra = sorted(k for k, v in update.gradients.items() if v and k not in spec.sizes)
    if extra:
        raise ValueError(f"node {who!r} sends gradient {extra[0]!r}, which the model does not have")
    parts: list[np.ndarray] = []
    for name, size in spec.sizes.items():
        values = update.gradients.get(name)
        if values is None or len(values) != size:
            got = "no values" if values is None else f"{len(values)} values"
            raise ValueError(
                f"node {who!r} sends {got} for gradient {name!r}; the model's parameter has {size}"
            )
        with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
            part = np.asarray(values, dtype=np.float64).astype(np.float32)
        if not np.isfinite(part).all():
            raise ValueError(
                f"node {who!r}: gradient {name!r} holds a value beyond float32's range "
                f"(|x| > {float(np.finfo(np.float32).max):.4g})"
            )
        parts.append(part)
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return torch.from_numpy(flat)


class FedtrainClients(EngineProvider):
    """An aumai-style :class:`UpdateProvider` as a provider of the round engine.

    On :meth:`submit` it calls ``provider.get_updates(state.round_id + 1, state, nodes)``
    with the nodes the engine's tasks name, checks the updates (:func:`check_updates`: the
    round, one update per node, senders among the tasks, digests), and turns each into a
    :class:`~velocity.types.ClientUpdate`: ``num_samples = samples_used``, ``loss``, the
    task's round and version, ``delta = −gradients`` flattened in ``spec``'s layout
    (:func:`flat_gradients`), and its digest. :meth:`collect` returns them.

    Parameters
    ----------
    provider : UpdateProvider
        The aumai-style provider.
    nodes : sequence of FederatedNode
        Every node a task may name.
    spec : ParamSpec
        The layout of the gradients (every key of the model, each 1-D).
    state : GlobalState, optional
        What ``get_updates`` is handed (``round_id`` 0 by default); the driver sets
        :attr:`state` before every round.

    Notes
    -----
    The sign: a :class:`LocalUpdate` carries a pseudo-gradient (start − end weights, it
    points uphill), while a :class:`~velocity.types.ClientUpdate`'s delta is new − old (it
    points downhill) and the engine's server optimizers step along it. The adapter negates,
    so a mean-then-:class:`velocity.strategies.DiLoCo` strategy is
    :class:`torch.optim.SGD` with Nesterov momentum applied with ``grad`` = the nodes' mean
    gradients. :attr:`received` keeps the last round's :class:`LocalUpdate`\\ s;
    :attr:`verify_digests` (``True``) checks the digests senders attach.
    """

    name: ClassVar[str] = "fedtrain"

    def __init__(
        self,
        provider: UpdateProvider,
        nodes: Sequence[FederatedNode],
        spec: ParamSpec,
        state: GlobalState | None = None,
    ) -> None:
        if not isinstance(provider, UpdateProvider):
            raise ValueError(
                f"FedtrainClients: provider must be a velocity.fedtrain.UpdateProvider; got "
                f"{type(provider).__name__}"
            )
        self.provider = provider
        self.nodes = {node.node_id: node for node in nodes}
        if len(self.nodes) != len(nodes):
            raise ValueError("FedtrainClients: node ids must be unique")
        self.spec = spec
        self.state = GlobalState(round_id=0) if state is None else state
        self.verify_digests = True
        self.received: list[LocalUpdate] = []
        self._outstanding: list[ClientUpdate] = []

    def submit(self, tasks: Sequence[ClientTask]) -> None:
        unknown = [t.client_id for t in tasks if t.client_id not in self.nodes]
        if unknown:
            raise ValueError(f"FedtrainClients: tasks name unknown nodes {unknown}")
        round_id = self.state.round_id + 1
        asked = [self.nodes[t.client_id] for t in tasks]
        updates = check_updates(
            self.provider.get_updates(round_id, self.state, asked),
            round_id,
            {t.client_id for t in tasks},
            digests=self.verify_digests,
        )
        by_id = {t.client_id: t for t in tasks}
        outstanding = []
        for update in updates:
            task = by_id[update.node_id]
            outstanding.append(
                ClientUpdate(
                    client_id=update.node_id,
                    num_samples=update.samples_used,
                    delta=-flat_gradients(update, self.spec),
                    round=task.round,
                    loss=update.loss,
                    base_version=task.version,
                    arrived_at=task.dispatched_at,
                ).with_digest()
            )
        self.received = updates
        self._outstanding = outstanding

    def collect(
        self, *, until: float | None = None, max_results: int | None = None
    ) -> list[Result]:
        ready = [u for u in self._outstanding if until is None or u.arrived_at <= until]
        if max_results is not None:
            ready = ready[: max(0, max_results)]
        taken = {id(u) for u in ready}
        self._outstanding = [u for u in self._outstanding if id(u) not in taken]
        return list(ready)

    def cancel(self, client_ids: Collection[str]) -> None:
        self._outstanding = [u for u in self._outstanding if u.client_id not in client_ids]


class GivenUpdates(UpdateProvider):
    """A provider that hands back the updates it was given (a manual round)."""

    def __init__(self, updates: Sequence[LocalUpdate] = ()) -> None:
        self.updates = list(updates)

    def get_updates(
        self, round_id: int, state: GlobalState, nodes: list[FederatedNode]
    ) -> list[LocalUpdate]:
        return list(self.updates)
