r"""Vectorized decentralized SGD with Byzantine nodes: :class:`DecentralizedSGD`.

All ``n`` node models live in ONE ``(n, d)`` float32 tensor ``X``. A round ``t`` is:

1. **local step** — every node's gradient on its own mini-batch in one pass
   (``torch.func.vmap(grad(loss))`` over a :func:`torch.func.functional_call` of the model,
   the batch stacked as ``(n, B, ...)``): :math:`x_i^{t+1/2} = x_i^t - \eta\, g_i`;
2. **attack** — the rows of the Byzantine nodes are replaced by the vectors they send,
   crafted by a :mod:`velocity.attacks` update attack; each Byzantine node sends ONE vector
   to all its out-neighbours (no equivocation);
3. **mixing** — every honest node mixes what it receives from its in-neighbours with a rule
   chosen by name (:data:`MIXING_RULES`, or any aggregator of :mod:`velocity.kernels`):
   :math:`x_i^{t+1} = \mathrm{mix}_i(S)`, ``S`` the sent matrix;
4. **metrics** — consensus distance among the honest nodes, each honest node's test
   accuracy and their mean (:class:`P2PRound`). Byzantine rows enter no metric.

The Byzantine nodes' own rows are then set to the honest nodes' average: an omniscient
adversary that tracks the honest models, so its "own honest update" (what ``sign_flip`` and
``gaussian_noise`` start from) is a plausible one. Every random draw is derived from
``(seed, round, purpose)`` (:mod:`velocity._random`): the same seed gives bit-identical runs.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from velocity import kernels
from velocity._random import numpy_rng, torch_generator
from velocity._validation import Integer, OneOf, Real, check_value
from velocity.attacks import Attack, AttackContext, SybilNodes, UpdateAttack, parse_attack
from velocity.data import Partition, load_dataset, partition
from velocity.errors import ConfigurationError
from velocity.models import build_model, check_model_dataset
from velocity.p2p.mixing import (
    clipped_gossip,
    consensus_distance,
    metropolis_weights,
    nna,
    robust_neighbourhood,
)
from velocity.p2p.topology import Topology, topology_from_config

__all__ = [
    "ATTACK_KNOWLEDGE",
    "ATTACK_SPACES",
    "MIXING_RULES",
    "DecentralizedSGD",
    "P2PRound",
    "check_attack",
    "check_mixing",
]

MIXING_RULES: Final[tuple[str, ...]] = ("gossip", "clipped_gossip", "nna")

MAX_NODES: Final = 4096
"""The most nodes a :class:`DecentralizedSGD` takes (its gossip matrix is a dense ``(n, n)``
float64 tensor: 128 MiB at this size)."""

MAX_PARAM_BYTES: Final = 8 * 2**30
"""The most bytes the ``(n, d)`` float32 node models may take (8 GiB)."""
"""The built-in mixing rules; any name of ``velocity.kernels.AGGREGATORS`` (except
``qfedavg``) is accepted too and runs through :func:`robust_neighbourhood`."""

ATTACK_SPACES: Final[tuple[str, ...]] = ("model", "update")
"""What a Byzantine node's attack crafts: the vector it sends, or the update it adds."""

ATTACK_KNOWLEDGE: Final[tuple[str, ...]] = ("omniscient", "neighbours")
"""Which honest vectors an attack sees: all of them, or its in-neighbours' only."""

_MIXING_PARAMS: Final[Mapping[str, tuple[str, ...]]] = {
    "gossip": (),
    "clipped_gossip": ("tau", "delta", "f"),
    "nna": ("f",),
}
_KERNEL_RULES: Final[tuple[str, ...]] = tuple(a for a in kernels.AGGREGATORS if a != "qfedavg")
_EVAL_CHUNK: Final = 2048
_OWNER: Final = "DecentralizedSGD"


@dataclass(frozen=True)
class P2PRound:
    """What one round of :class:`DecentralizedSGD` measured (honest nodes only).

    Attributes
    ----------
    round : int
        1-based round number.
    loss : float
        Mean training loss of the honest nodes on this round's mini-batches (before the step).
    consensus_distance : float
        :func:`~velocity.p2p.consensus_distance` of the honest nodes after mixing.
    node_accuracy : tuple of float, or None
        Test accuracy of each honest node, in the order of
        :attr:`DecentralizedSGD.honest_nodes`; ``None`` in rounds that were not evaluated.
    honest_mean_accuracy : float or None
        Mean of ``node_accuracy``.
    """

    round: int
    loss: float
    consensus_distance: float
    node_accuracy: tuple[float, ...] | None
    honest_mean_accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (non-finite floats become ``None``)."""

        def num(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        return {
            "round": self.round,
            "loss": num(self.loss),
            "consensus_distance": num(self.consensus_distance),
            "node_accuracy": None
            if self.node_accuracy is None
            else [num(a) for a in self.node_accuracy],
            "honest_mean_accuracy": None
            if self.honest_mean_accuracy is None
            else num(self.honest_mean_accuracy),
        }


def check_attack(spec: str | Mapping[str, Any] | Attack) -> UpdateAttack:
    """The update attack ``spec`` names (:func:`velocity.attacks.parse_attack`), or an error.

    Data attacks (they poison training data, a P2P node sends vectors) and ``sybil_nodes``
    (it adds identities, which a fixed topology does not have) are refused.

    >>> check_attack({"type": "little", "z": 1.5})
    Little(f=None, N=None, z=1.5)
    """
    attack = parse_attack(spec)
    if not isinstance(attack, UpdateAttack):
        raise ConfigurationError(
            f"{_OWNER}.attack must be an update attack (a crafted vector per Byzantine node); "
            f"{attack.name!r} is a data attack"
        )
    if isinstance(attack, SybilNodes):
        raise ConfigurationError(
            f"{_OWNER}.attack: 'sybil_nodes' adds identities, which a fixed topology does not "
            "have; use 'empire' (the same crafted row) on the Byzantine nodes instead"
        )
    return attack


def check_mixing(name: object, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate a mixing rule and its settings without a topology; the settings, normalised.

    ``name`` is one of :data:`MIXING_RULES` or a ``velocity.kernels`` aggregator (not
    ``qfedavg``). ``clipped_gossip`` takes at most one of ``tau`` (float >= 0), ``delta``
    (float >= 0) and ``f`` (int >= 0); ``nna`` takes ``f`` (int >= 0); ``gossip`` none; a
    kernel its own keyword settings (checked, with the topology, by the dry run every
    :class:`DecentralizedSGD` makes at construction; :meth:`DecentralizedSGD.check_setup`
    makes it without data).

    >>> check_mixing("clipped_gossip", {"tau": 1})
    {'tau': 1.0}
    """
    valid = (*MIXING_RULES, *_KERNEL_RULES)
    if not isinstance(name, str) or name not in valid:
        raise ConfigurationError(
            f"{_OWNER}.mixing must be one of {', '.join(map(repr, valid))}; got {name!r}"
        )
    if params is not None and not isinstance(params, Mapping):
        raise ConfigurationError(f"{_OWNER}.mixing_params must be a mapping; got {params!r}")
    out = dict(params or {})
    if name not in _MIXING_PARAMS:
        return out
    accepted = _MIXING_PARAMS[name]
    unknown = sorted(set(out) - set(accepted))
    if unknown:
        raise ConfigurationError(
            f"{_OWNER}.mixing_params: {name!r} has no parameter(s) "
            f"{', '.join(map(repr, unknown))}; accepted: {', '.join(accepted) or '(none)'}"
        )
    if name == "clipped_gossip" and len(out) > 1:
        raise ConfigurationError(
            f"{_OWNER}.mixing_params: clipped_gossip takes at most one of tau, delta, f; "
            f"got {sorted(out)}"
        )
    for key in ("tau", "delta"):
        if key in out:
            out[key] = check_value(_OWNER, f"mixing_params.{key}", out[key], Real(low=0.0))
    if "f" in out:
        out["f"] = check_value(_OWNER, "mixing_params.f", out["f"], Integer(low=0))
    return out


class DecentralizedSGD:
    """Decentralized SGD over a topology, every node's model a row of one ``(n, d)`` tensor.

    Parameters
    ----------
    model : torch.nn.Module
        The architecture; its current parameters are every node's starting point. It must be
        a pure function of its parameters (no BatchNorm running statistics, no dropout):
        buffers are passed as constants.
    topology : Topology
        Who sends to whom; ``n = topology.n_nodes``.
    x, y : Tensor
        Training features ``(N, ...)`` and int64 labels ``(N,)``.
    parts : velocity.data.Partition
        Which samples each node owns (``parts.num_clients == n``, every node >= 1 sample).
    byzantine : sequence of int
        The Byzantine node ids (default none).
    attack : str, mapping or UpdateAttack, optional
        What the Byzantine nodes send (:func:`velocity.attacks.parse_attack`); required when
        there are Byzantine nodes, refused otherwise.
    attack_space : {"model", "update"}
        ``"model"`` (default, ByzPy's semantics): the attack crafts the vector sent, from the
        honest nodes' half-step models. ``"update"``: it crafts an update ``u`` from the honest
        local updates ``x^{t+1/2} - x^t``, and the Byzantine node sends its model plus ``u``.
    attack_knowledge : {"omniscient", "neighbours"}
        Whether a Byzantine node sees every honest vector (default) or its in-neighbours'
        only (then each Byzantine node crafts separately, with ``N`` = its neighbourhood).
    mixing : str
        ``"gossip"``, ``"clipped_gossip"``, ``"nna"`` or a kernel aggregator name.
    mixing_params : mapping, optional
        ``clipped_gossip``: ``tau`` (fixed radius), ``delta`` (adaptive, weight budget) or
        ``f`` (adaptive, budget = the weight of a node's ``f`` heaviest neighbours); none of
        them: adaptive with the true Byzantine weight of each node's neighbours. ``nna``:
        ``f`` (vectors each node leaves out); default: each node's number of Byzantine
        in-neighbours. A kernel rule: its keyword settings (``f`` for ``trimmed_mean``...).
    lr : float
        Step size (> 0).
    batch_size : int
        Examples per node per round, drawn with replacement from the node's samples.
    seed : int
        Root of every random draw (mini-batches, attack noise).
    test : (Tensor, Tensor), optional
        Test features and labels for the per-node accuracy.
    eval_every : int
        Evaluate accuracy every this many rounds (and in the last round of :meth:`run`).
    loss_fn : callable, optional
        ``loss_fn(logits, y) -> scalar``; default cross-entropy.
    num_classes : int, optional
        For :meth:`label_histogram`; default ``max(y) + 1``.

    Notes
    -----
    The "true Byzantine weight" defaults (``clipped_gossip`` and ``nna`` without settings)
    let the simulation give each honest node the bound its analysis assumes; a deployment
    sets ``tau``/``delta``/``f`` instead.

    Examples
    --------
    >>> import torch
    >>> from velocity.data import partition
    >>> from velocity.p2p import Topology
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(64, 5); y = (x[:, 0] > 0).long()
    >>> sgd = DecentralizedSGD(torch.nn.Linear(5, 2), Topology.ring(4), x, y,
    ...                        partition(y, 4, "iid", seed=0), lr=0.5, batch_size=8)
    >>> sgd.params.shape
    torch.Size([4, 12])
    >>> rounds = sgd.run(3)
    >>> rounds[-1].round
    3
    """

    def __init__(
        self,
        model: nn.Module,
        topology: Topology,
        x: Tensor,
        y: Tensor,
        parts: Partition,
        *,
        byzantine: Sequence[int] = (),
        attack: str | Mapping[str, Any] | Attack | None = None,
        attack_space: str = "model",
        attack_knowledge: str = "omniscient",
        mixing: str = "gossip",
        mixing_params: Mapping[str, Any] | None = None,
        lr: float = 0.05,
        batch_size: int = 32,
        seed: int = 0,
        test: tuple[Tensor, Tensor] | None = None,
        eval_every: int = 1,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        num_classes: int | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigurationError(f"{_OWNER}.model must be a torch.nn.Module")
        if not isinstance(topology, Topology):
            raise ConfigurationError(f"{_OWNER}.topology must be a Topology")
        n = topology.n_nodes
        if n > MAX_NODES:
            raise ConfigurationError(
                f"{_OWNER}: at most {MAX_NODES} nodes (the gossip matrix is a dense (n, n) "
                f"float64 tensor); the topology has {n}"
            )
        self.topology = topology
        self.lr = check_value(_OWNER, "lr", lr, Real(low=0.0, low_open=True))
        self.batch_size = check_value(_OWNER, "batch_size", batch_size, Integer(low=1))
        self.seed = check_value(_OWNER, "seed", seed, Integer(low=0))
        self.eval_every = check_value(_OWNER, "eval_every", eval_every, Integer(low=1))
        self.attack_space = check_value(_OWNER, "attack_space", attack_space, OneOf(*ATTACK_SPACES))
        self.attack_knowledge = check_value(
            _OWNER, "attack_knowledge", attack_knowledge, OneOf(*ATTACK_KNOWLEDGE)
        )
        # ---- data
        if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.shape[:1] != y.shape:
            raise ConfigurationError(f"{_OWNER}: x must be (N, ...) and y (N,) tensors")
        if y.dtype != torch.int64:
            raise ConfigurationError(f"{_OWNER}: y must be int64 labels; got {y.dtype}")
        if not isinstance(parts, Partition) or parts.num_clients != n:
            got = parts.num_clients if isinstance(parts, Partition) else type(parts).__name__
            raise ConfigurationError(
                f"{_OWNER}.parts must be a Partition with {n} clients (one per node); got {got}"
            )
        sizes = parts.sizes()
        if bool((sizes < 1).any()):
            empty = torch.nonzero(sizes < 1).flatten().tolist()
            raise ConfigurationError(f"{_OWNER}: node(s) {empty} own no training sample")
        self._x, self._y = x, y
        self._parts = parts
        self._order, self._starts, self._sizes = parts.order, parts.offsets[:-1], sizes
        self.num_classes: int = int(y.max()) + 1 if y.numel() else 1
        if num_classes is not None:
            self.num_classes = check_value(_OWNER, "num_classes", num_classes, Integer(low=1))
        if test is not None:
            tx, ty = test
            if tx.shape[:1] != ty.shape or ty.dtype != torch.int64:
                raise ConfigurationError(f"{_OWNER}.test must be (x (T, ...), y (T,) int64)")
        self._test = test
        # ---- nodes
        byz = sorted({check_value(_OWNER, "byzantine[]", b, Integer(0, n - 1)) for b in byzantine})
        if len(byz) >= n:
            raise ConfigurationError(f"{_OWNER}: needs at least one honest node; got n={n}")
        self.byzantine_nodes: tuple[int, ...] = tuple(byz)
        self.honest_nodes: tuple[int, ...] = tuple(i for i in range(n) if i not in set(byz))
        self._honest = torch.tensor(self.honest_nodes, dtype=torch.int64)
        self._byz = torch.tensor(self.byzantine_nodes, dtype=torch.int64)
        if byz and attack is None:
            raise ConfigurationError(f"{_OWNER}: byzantine nodes {byz} need an attack")
        if attack is not None and not byz:
            raise ConfigurationError(f"{_OWNER}: an attack needs byzantine nodes; got none")
        self.attack: UpdateAttack | None = None if attack is None else check_attack(attack)
        # ---- model as a flat (n, d) tensor
        self._model = model
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ConfigurationError(f"{_OWNER}.model has no trainable parameters")
        self._names = tuple(k for k, _ in named)
        self._shapes = tuple(tuple(p.shape) for _, p in named)
        self._numels = tuple(p.numel() for _, p in named)
        self._buffers = {k: b.detach() for k, b in model.named_buffers()}
        d = sum(self._numels)
        if 4 * n * d > MAX_PARAM_BYTES:
            raise ConfigurationError(
                f"{_OWNER}: {n} nodes x {d:,} parameters need {4 * n * d / 2**30:.1f} GiB as one "
                f"float32 tensor; the limit is {MAX_PARAM_BYTES / 2**30:.0f} GiB"
            )
        flat = torch.cat([p.detach().reshape(-1).to(torch.float32) for _, p in named])
        self._params = flat.unsqueeze(0).expand(n, -1).clone()
        self._loss_fn = loss_fn if loss_fn is not None else F.cross_entropy
        # ---- mixing
        self._w = metropolis_weights(topology)
        self.mixing, self._mix = self._mixing_rule(mixing, mixing_params)
        self.round = 0
        self._dry_run()

    def _dry_run(self) -> None:
        """Craft and mix once on small random vectors, so that a setting the rule or the
        attack cannot run with (``krum`` without ``f``, an ``nna`` ``f`` larger than a
        neighbourhood, a Byzantine node with no honest in-neighbour to copy...) is refused
        now, naming the setting, not at the first round."""
        gen = torch.Generator().manual_seed(0)
        n = self.n_nodes
        base = torch.randn(n, 3, generator=gen)
        half = base + 0.01 * torch.randn(n, 3, generator=gen)
        try:
            sent = half.clone()
            if self.attack is not None:
                sent[self._byz] = self._craft(half, base, 1)
            self._mix(sent)
        except ConfigurationError:
            raise
        except (ValueError, TypeError, RuntimeError) as error:
            raise ConfigurationError(
                f"{_OWNER}: a round cannot run with mixing={self.mixing!r} "
                f"{dict(self._mixing_params)} and attack="
                f"{None if self.attack is None else self.attack.name!r} on this topology: "
                f"{error}"
            ) from None

    # ------------------------------------------------------------------ mixing set-up
    def _byzantine_in_counts(self) -> Tensor:
        adj = self.topology.adjacency()
        is_byz = torch.zeros(self.topology.n_nodes, dtype=torch.bool)
        is_byz[self._byz] = True
        return (adj & is_byz[:, None]).sum(dim=0)

    def _mixing_rule(
        self, name: object, raw: Mapping[str, Any] | None
    ) -> tuple[str, Callable[[Tensor], Tensor]]:
        params = check_mixing(name, raw)
        self._mixing_params = dict(params)
        assert isinstance(name, str)
        honest, w = self._honest, self._w
        if name == "gossip":
            w_rows = w.index_select(0, honest).to(torch.float32)
            return name, lambda s: w_rows @ s
        if name == "clipped_gossip":
            if "tau" in params:
                tau = float(params["tau"])
                return name, lambda s: clipped_gossip(s, w, tau, rows=honest)
            delta: float | Tensor
            if "delta" in params:
                delta = float(params["delta"])
            elif "f" in params:
                degrees = [len(self.topology.in_neighbors(i)) for i in self.honest_nodes]
                if params["f"] >= min(degrees):
                    raise ConfigurationError(
                        f"{_OWNER}.mixing_params.f: clipped_gossip with f={params['f']} would "
                        f"clip every neighbour of a node with {min(degrees)} in-neighbours to "
                        "nothing (no mixing at all); use f < the smallest in-degree"
                    )
                off = w.clone()
                off.fill_diagonal_(0.0)
                delta = torch.sort(off, dim=1, descending=True).values[:, : params["f"]].sum(dim=1)
            else:
                delta = w[:, self._byz].sum(dim=1)
            return name, lambda s: clipped_gossip(s, w, delta=delta, rows=honest)
        if name == "nna":
            f_nodes: int | Tensor = (
                int(params["f"]) if "f" in params else self._byzantine_in_counts()
            )
            adj = self.topology.adjacency()
            return name, lambda s: nna(s, adj, f_nodes, rows=honest)
        rule = functools.partial(getattr(kernels, name), **params)
        topo = self.topology
        return name, lambda s: robust_neighbourhood(s, topo, rule, rows=honest)

    # ------------------------------------------------------------------ accessors
    @property
    def n_nodes(self) -> int:
        return self.topology.n_nodes

    @property
    def params(self) -> Tensor:
        """The ``(n, d)`` float32 node models (a copy; Byzantine rows hold the honest mean)."""
        return self._params.clone()

    @property
    def weights(self) -> Tensor:
        """The ``(n, n)`` float64 gossip matrix (:func:`metropolis_weights`)."""
        return self._w.clone()

    def _as_dict(self, flat: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        start = 0
        for name, shape, k in zip(self._names, self._shapes, self._numels, strict=True):
            out[name] = flat[:, start : start + k].reshape(flat.shape[0], *shape)
            start += k
        return out

    # ------------------------------------------------------------------ the round
    def _batches(self, rnd: int) -> tuple[Tensor, Tensor]:
        gen = torch_generator(self.seed, rnd, "p2p-batch")
        u = torch.rand((self.n_nodes, self.batch_size), generator=gen, dtype=torch.float64)
        local = torch.minimum(
            (u * self._sizes[:, None]).floor().to(torch.int64), self._sizes[:, None] - 1
        )
        idx = self._order[self._starts[:, None] + local]
        return self._x[idx], self._y[idx]

    def _gradients(self, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        model, buffers, loss_fn = self._model, self._buffers, self._loss_fn

        def node_loss(p: dict[str, Tensor], xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor]:
            out = functional_call(model, (p, buffers), (xs,))
            loss = loss_fn(out, ys)
            return loss, loss.detach()

        grads, losses = vmap(grad(node_loss, has_aux=True))(self._as_dict(self._params), xb, yb)
        flat = torch.cat([grads[k].reshape(self.n_nodes, -1) for k in self._names], dim=1).to(
            torch.float32
        )
        return flat, losses

    def _craft(self, half: Tensor, base: Tensor, rnd: int) -> Tensor:
        """The ``(f, d)`` vectors the Byzantine nodes send this round."""
        assert self.attack is not None
        attack, byz, honest = self.attack, self._byz, self._honest
        space = half if self.attack_space == "model" else half - base
        own_all = space.index_select(0, byz)
        if self.attack_knowledge == "omniscient":
            ctx = AttackContext(
                honest=space.index_select(0, honest),
                own=own_all,
                num_byzantine=int(byz.numel()),
                generator=torch_generator(self.seed, rnd, "p2p-attack"),
                num_participants=self.n_nodes,
            )
            crafted = attack.craft(ctx)
        else:
            rows = []
            byz_set = set(self.byzantine_nodes)
            for k, b in enumerate(self.byzantine_nodes):
                hood = self.topology.in_neighbors(b)
                seen = [j for j in hood if j not in byz_set]
                ctx = AttackContext(
                    honest=space[torch.tensor(seen, dtype=torch.int64)] if seen else space[:0],
                    own=own_all[k : k + 1],
                    num_byzantine=1,
                    generator=torch_generator(self.seed, rnd, "p2p-attack", b),
                    num_participants=1 + len(hood),
                    round_byzantine=1 + len(hood) - len(seen),
                )
                rows.append(attack.craft(ctx))
            crafted = torch.cat(rows, dim=0)
        crafted = crafted.to(half.dtype)
        if self.attack_space == "update":
            crafted = base.index_select(0, byz) + crafted
        return crafted

    def step(self, *, evaluate: bool | None = None) -> P2PRound:
        """Run one round (local step, attack, mixing) and return its metrics.

        ``evaluate`` forces (``True``) or skips (``False``) the accuracy evaluation; by
        default it runs every :attr:`eval_every` rounds.
        """
        rnd = self.round + 1
        xb, yb = self._batches(rnd)
        g, losses = self._gradients(xb, yb)
        base = self._params
        half = base - self.lr * g
        sent = half
        if self.attack is not None:
            sent = half.clone()
            sent[self._byz] = self._craft(half, base, rnd)
        mixed = self._mix(sent)
        new = torch.empty_like(base)
        new[self._honest] = mixed
        if self._byz.numel():
            new[self._byz] = mixed.mean(dim=0, keepdim=True).expand(self._byz.numel(), -1)
        self._params = new
        self.round = rnd
        if evaluate is None:
            evaluate = rnd == 1 or rnd % self.eval_every == 0
        node_acc = self.node_accuracy() if (evaluate and self._test is not None) else None
        return P2PRound(
            round=rnd,
            loss=float(losses.index_select(0, self._honest).to(torch.float64).mean()),
            consensus_distance=consensus_distance(mixed),
            node_accuracy=node_acc,
            honest_mean_accuracy=None if node_acc is None else sum(node_acc) / len(node_acc),
        )

    def run(self, rounds: int) -> list[P2PRound]:
        """Run ``rounds`` rounds; the last one is always evaluated (when a test set is set)."""
        rounds = check_value(_OWNER, "rounds", rounds, Integer(low=1))
        return [self.step(evaluate=True if r == rounds - 1 else None) for r in range(rounds)]

    def label_histogram(self) -> list[list[int]]:
        """Training labels per node, ``(n, num_classes)`` counts as nested lists."""
        hist = self._parts.label_histogram(self._y, self.num_classes)
        return [[int(c) for c in row] for row in hist.tolist()]

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def node_accuracy(self) -> tuple[float, ...]:
        """Test accuracy of every honest node (in :attr:`honest_nodes` order)."""
        if self._test is None:
            raise ConfigurationError(f"{_OWNER}.node_accuracy needs a test set (test=...)")
        tx, ty = self._test
        model, buffers = self._model, self._buffers

        def logits(p: dict[str, Tensor], xs: Tensor) -> Tensor:
            out: Tensor = functional_call(model, (p, buffers), (xs,))
            return out

        params = self._as_dict(self._params.index_select(0, self._honest))
        correct = torch.zeros(len(self.honest_nodes), dtype=torch.int64)
        for start in range(0, tx.shape[0], _EVAL_CHUNK):
            xs, ys = tx[start : start + _EVAL_CHUNK], ty[start : start + _EVAL_CHUNK]
            pred = vmap(logits, in_dims=(0, None))(params, xs).argmax(dim=-1)
            correct += (pred == ys[None, :]).sum(dim=1)
        total = max(1, tx.shape[0])
        return tuple(float(c) / total for c in correct.tolist())

    # ------------------------------------------------------------------ from config
    @classmethod
    def check_setup(
        cls,
        topology: Topology,
        *,
        byzantine: int | Sequence[int] = 0,
        attack: str | Mapping[str, Any] | None = None,
        attack_space: str = "model",
        attack_knowledge: str = "omniscient",
        mixing: str = "gossip",
        mixing_params: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        """Refuse (``ConfigurationError``) a setup a round cannot run with, without data:
        the constructor's checks and its dry run on a two-parameter stand-in model.
        ``byzantine`` is a count or the ids, as in :meth:`from_config`."""
        n = topology.n_nodes
        if n > MAX_NODES:
            raise ConfigurationError(f"{_OWNER}: at most {MAX_NODES} nodes; got {n}")
        byz = _byzantine_ids(byzantine, n, seed)
        y = torch.arange(2 * n, dtype=torch.int64) % 2
        x = torch.zeros(2 * n, 1)
        parts = Partition(torch.arange(2 * n), torch.arange(0, 2 * n + 1, 2))
        cls(
            nn.Linear(1, 2),
            topology,
            x,
            y,
            parts,
            byzantine=byz,
            attack=attack,
            attack_space=attack_space,
            attack_knowledge=attack_knowledge,
            mixing=mixing,
            mixing_params=mixing_params,
            seed=seed,
        )

    @classmethod
    def from_config(
        cls,
        *,
        dataset: str = "mnist",
        model: str = "mnist-2nn",
        n_nodes: int = 16,
        topology: str = "random_regular",
        topology_params: Mapping[str, Any] | None = None,
        byzantine: int | Sequence[int] = 0,
        attack: str | Mapping[str, Any] | None = None,
        attack_space: str = "model",
        attack_knowledge: str = "omniscient",
        mixing: str = "gossip",
        mixing_params: Mapping[str, Any] | None = None,
        partition_scheme: str = "iid",
        alpha: float = 0.5,
        lr: float = 0.05,
        batch_size: int = 32,
        seed: int = 0,
        eval_every: int = 1,
        train_samples: int | None = None,
        test_samples: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        download: bool = True,
    ) -> DecentralizedSGD:
        """Build a run from plain values (what a YAML ``p2p:`` section holds).

        ``dataset`` is loaded with :func:`velocity.data.load_dataset` (``data_dir``, then
        ``$VELOCITY_DATA``...), split among the nodes with :func:`velocity.data.partition`
        (``partition_scheme`` ``"iid"``, ``"dirichlet"`` with ``alpha``, ``"shard"``); the
        model is :func:`velocity.models.build_model` ``(model, seed=seed)``; the topology is
        :func:`~velocity.p2p.topology_from_config` ``(topology, n_nodes, **topology_params)``.
        ``byzantine`` is a count (that many node ids drawn from the seed) or the ids
        themselves. ``train_samples``/``test_samples`` keep a seeded subset of each split
        (for quick runs). The other settings are the constructor's.
        """
        n = check_value(_OWNER, "n_nodes", n_nodes, Integer(low=1))
        seed = check_value(_OWNER, "seed", seed, Integer(low=0))
        if not isinstance(topology, str):
            raise ConfigurationError(f"{_OWNER}.topology must be a kind name; got {topology!r}")
        topo = topology_from_config(topology, n, **dict(topology_params or {}))
        check_model_dataset(model, dataset, owner=_OWNER)
        train = load_dataset(dataset, split="train", data_dir=data_dir, download=download)
        test = load_dataset(dataset, split="test", data_dir=data_dir, download=download)
        tx, ty = _subset(train.x, train.y, train_samples, seed, "train")
        vx, vy = _subset(test.x, test.y, test_samples, seed, "test")
        in_features = int(tx[0].numel()) if model == "logreg" and tx.ndim == 2 else None
        net = build_model(model, num_classes=train.num_classes, seed=seed, in_features=in_features)
        scheme = check_value(
            _OWNER, "partition_scheme", partition_scheme, OneOf("iid", "dirichlet", "shard")
        )
        parts = partition(ty, n, scheme, seed=seed, alpha=alpha, min_samples=1)
        byz = _byzantine_ids(byzantine, n, seed)
        return cls(
            net,
            topo,
            tx,
            ty,
            parts,
            byzantine=byz,
            attack=attack,
            attack_space=attack_space,
            attack_knowledge=attack_knowledge,
            mixing=mixing,
            mixing_params=mixing_params,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            test=(vx, vy),
            eval_every=eval_every,
            num_classes=train.num_classes,
        )


def _byzantine_ids(byzantine: int | Sequence[int], n: int, seed: int) -> list[int]:
    """The Byzantine node ids: given, or ``byzantine`` of them drawn from the seed."""
    if isinstance(byzantine, Sequence) and not isinstance(byzantine, str):
        return list(byzantine)
    count = check_value(_OWNER, "byzantine", byzantine, Integer(0, max(0, n - 1)))
    pick = numpy_rng(seed, "p2p-byzantine").choice(n, size=count, replace=False)
    return sorted(int(i) for i in pick)


def _subset(x: Tensor, y: Tensor, k: int | None, seed: int, split: str) -> tuple[Tensor, Tensor]:
    if k is None:
        return x, y
    k = check_value(_OWNER, f"{split}_samples", k, Integer(low=1))
    if k >= y.numel():
        return x, y
    keep = numpy_rng(seed, "p2p-subset", split).permutation(y.numel())[:k]
    idx = torch.from_numpy(keep.copy()).sort().values
    return x[idx], y[idx]
