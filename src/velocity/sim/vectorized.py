"""Vectorized simulated clients: many clients' local SGD at once with :mod:`torch.func`.

:class:`VectorizedClients` is a drop-in alternative to
:class:`~velocity.sim.SequentialClients` (same constructor, same updates up to float
rounding): instead of one client after another, it trains a chunk of ``K`` clients
together. Their parameters are stacked, ``(K, *shape)`` per tensor, and every local step
is one ``vmap(grad(loss))`` over a :func:`torch.func.functional_call` of the model, each
client on its own minibatch, followed by one stacked SGD step.

Per client, the semantics are :class:`~velocity.client.Trainer`'s exactly:

- the batch order comes from the same generator, ``(seed, round, client, "train")``, with
  the same draw (one ``torch.randperm(n)`` per epoch), so every client sees the same
  examples in the same order as under ``SequentialClients``;
- ``local_epochs`` or ``local_steps``, the last batch of an epoch holding the remainder;
- SGD with ``lr``, heavy-ball ``momentum`` and L2 ``weight_decay`` as
  :class:`torch.optim.SGD` computes them, FedProx's proximal gradient
  ``mu · (w − w_global)`` added first;
- the update ``new − global``, ``num_samples``, the mean minibatch loss and the metrics
  (``steps``, ``samples_seen``, ``accuracy``, ``initial_loss`` when asked).

Clients of unequal sizes share a chunk: batches are padded to ``B`` rows with a mask (a
padded example has weight 0 in its client's batch mean), and a client whose steps are
done is masked out of the later steps (its parameters stop changing).

**DP-SGD** (``TrainConfig.dp_clip`` set) is the Trainer's too: every step, each client
draws its Poisson batch (``torch.rand(n) < q``, ``q = min(1, B/n)``) and then its noise
(one ``torch.randn`` of its trainable coordinates, when ``z > 0``) from its own generator,
in that order, as :class:`~velocity.client.Trainer` does; the chunk's per-example gradients
are one ``vmap`` over clients of ``vmap(grad)`` over examples (batches padded to the step's
largest and masked), each example clipped to norm ``C`` as a whole, summed, noised and
divided by the client's expected batch size ``min(B, n)``; the SGD step follows. Memory per
client then includes the per-example gradients (about ``2·B·D`` numbers at the largest
Poisson batches), which the default chunk size accounts for.

Examples
--------
>>> from velocity.client import TrainConfig
>>> from velocity.models import build_model
>>> ok, reason = can_vectorize(build_model("logreg", in_features=4, num_classes=3, seed=0),
...                            TrainConfig(optimizer="adamw", lr=1e-3))
>>> ok, reason[:40]
(False, "optimizer 'adamw' is not vectorized; Vec")
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Final

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from velocity._random import torch_generator
from velocity.client._dpsgd import CHUNK_BYTES, CLIP_EPS, poisson_mask
from velocity.errors import ConfigurationError, ValidationError
from velocity.sim.provider import (
    ClientWork,
    SequentialClients,
    poison_client_data,
    scale_poisoned_update,
    wants_initial_loss,
)
from velocity.types import ClientUpdate

if TYPE_CHECKING:
    from velocity.client import TrainConfig, Trainer
    from velocity.sim.adversary import SimulatedAdversary
    from velocity.sim.population import Population
    from velocity.sim.sampling import DelayModel

__all__ = [
    "DEFAULT_MEMORY_MB",
    "MAX_CHUNK_CLIENTS",
    "VectorizedClients",
    "can_vectorize",
    "chunk_clients_for",
    "vectorized_from",
]

DEFAULT_MEMORY_MB: Final = 64.0
"""Default memory budget of one chunk of clients (MiB), see :func:`chunk_clients_for`.

Small on purpose: on the CPU, chunks whose per-step buffers exceed the allocator's reuse
threshold are slower (each step's fresh gradients are page-faulted anew); measured on the
MNIST benchmark, 16 clients of the 2NN and about 200 of the logistic regression per chunk
were fastest. On a GPU, raise it (e.g. ``memory_mb=1024``)."""

MAX_CHUNK_CLIENTS: Final = 1024
"""Most clients trained together in one chunk."""

_EVAL_BLOCK: Final = 256
"""Examples per client per forward pass when measuring ``initial_loss``."""

LossFn = Callable[[Tensor, Tensor], Tensor]


# ---------------------------------------------------------------------- what can be vectorized


def can_vectorize(model: nn.Module, train_config: TrainConfig) -> tuple[bool, str]:
    """Whether :class:`VectorizedClients` can train ``model`` under ``train_config``.

    Returns ``(True, "…")`` or ``(False, reason)``, the reason naming what stands in the
    way and what to use instead. Refused:

    - optimizers other than ``"sgd"`` (AdamW) and ``keep_optimizer_state`` (per-client
      optimizer state between rounds);
    - layers with batch statistics (``BatchNorm``, ``InstanceNorm`` with running stats):
      training updates buffers in place, which ``vmap`` cannot do per client;
    - dropout layers with ``p > 0``: their masks come from PyTorch's global generator,
      whose draws would not be those of the sequential clients;
    - recurrent layers (``nn.RNN``/``LSTM``/``GRU``): no ``vmap`` rule for their fused
      kernels;
    - models without trainable parameters, or whose trainable parameters are not float32.
    """
    if not isinstance(model, nn.Module):
        return False, f"the model must be a torch.nn.Module; got {type(model).__name__}"
    if train_config.optimizer != "sgd":
        return False, (
            f"optimizer {train_config.optimizer!r} is not vectorized; VectorizedClients "
            "runs SGD (with momentum and weight decay) only, use backend 'sequential'"
        )
    if train_config.keep_optimizer_state:
        return False, (
            "keep_optimizer_state carries each client's optimizer state between rounds, "
            "which VectorizedClients does not keep; use backend 'sequential'"
        )
    for name, module in model.named_modules():
        label = f"layer {name!r} ({type(module).__name__})" if name else type(module).__name__
        if isinstance(
            module, nn.modules.batchnorm._BatchNorm | nn.modules.instancenorm._InstanceNorm
        ) and (module.track_running_stats or isinstance(module, nn.modules.batchnorm._BatchNorm)):
            return False, (
                f"{label} normalises with batch statistics and updates its running "
                "statistics in place during training, which cannot be done per client "
                "in one vmap; use GroupNorm or LayerNorm, or backend 'sequential'"
            )
        if isinstance(module, nn.modules.dropout._DropoutNd | nn.AlphaDropout) and module.p > 0:
            return False, (
                f"{label} draws its masks from PyTorch's global generator in training, so "
                "a vectorized run would not reproduce the sequential clients; set p=0 or "
                "use backend 'sequential'"
            )
        if isinstance(module, nn.RNNBase):
            return False, (
                f"{label} is a fused recurrent kernel that torch.func.vmap cannot batch "
                "over clients; use backend 'sequential'"
            )
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        return False, f"{type(model).__name__} has no trainable parameters"
    for name, p in trainable:
        if p.dtype != torch.float32:
            return False, (
                f"parameter {name!r} is {p.dtype}; VectorizedClients trains float32 parameters only"
            )
    return True, "SGD on a model without batch statistics, dropout or recurrent kernels"


def chunk_clients_for(
    model: nn.Module, batch_size: int, memory_mb: float, *, dp_sgd: bool = False
) -> int:
    """Clients per chunk whose training state fits in ``memory_mb`` MiB.

    A client in a chunk holds about ``6·D`` float32 numbers for its ``D`` trainable
    parameters (parameters, start point, gradient, momentum buffer and two temporaries)
    and ``4·B·F`` for its minibatch of ``B`` examples of ``F`` numbers each and the
    activations (``F`` taken as the widest of the inputs and the layers' outputs, as far
    as the ``Linear`` and ``Conv`` layers tell). The chunk is
    ``clamp(memory_mb · 2²⁰ / (4 · (6·D + 4·B·F)), 1, MAX_CHUNK_CLIENTS)``. With ``dp_sgd``
    each client also holds per-example gradients, ``2·B·D`` more numbers (a Poisson batch
    rarely exceeds twice its expected size ``B``).

    >>> from velocity.models import build_model
    >>> chunk_clients_for(build_model("mnist-2nn", seed=0), 10, 64)
    13
    """
    if not memory_mb > 0 or not math.isfinite(memory_mb):
        raise ConfigurationError(f"memory_mb must be a finite number > 0; got {memory_mb!r}")
    extra_per_example = 2 * batch_size if dp_sgd else 0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    width = 1
    for module in model.modules():
        if isinstance(module, nn.Linear):
            width = max(width, module.in_features, module.out_features)
        elif isinstance(module, nn.modules.conv._ConvNd):
            # A convolution's output can be much wider than its weights; assume a 32x32 map.
            width = max(width, module.out_channels * 32 * 32)
    per_client = 4 * (6 * trainable + 4 * batch_size * width + extra_per_example * trainable)
    chunk = int(memory_mb * 2**20 // per_client)
    return max(1, min(MAX_CHUNK_CLIENTS, chunk))


# ---------------------------------------------------------------------- the provider


@dataclass(frozen=True, eq=False)
class _Trained:
    """One client's finished training, waiting for :meth:`VectorizedClients.train`."""

    delta: Tensor
    num_samples: int
    loss: float
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class _Plan:
    """A chunk's minibatch schedule: ``rows[k, s]`` are client ``k``'s ``B`` rows of the
    data source at step ``s`` (padded), ``valid[k, s]`` which of them are real."""

    rows: Tensor
    valid: Tensor
    sizes: list[int]
    totals: list[int]


@dataclass(frozen=True, eq=False)
class _Chunk:
    """What one chunk's training works on (see :meth:`VectorizedClients._setup`)."""

    k: int
    device: torch.device
    x: Tensor
    y: Tensor
    client_rows: list[Tensor]
    views: dict[str, Tensor]
    params: dict[str, Tensor]
    anchors: list[Tensor]
    frozen: dict[str, Tensor]
    initial: list[float] | None


class _StackedSGD:
    """:class:`torch.optim.SGD`'s step for every client of a chunk at once: FedProx's
    proximal gradient first (as the Trainer adds it before the step), L2 weight decay, heavy
    ball momentum (the buffer starts as the first step's gradient), then ``w ← w − lr·step``
    for the active clients only."""

    def __init__(self, config: TrainConfig, anchors: list[Tensor]) -> None:
        self.lr, self.mu = config.lr, config.prox_mu
        self.momentum, self.wd = config.momentum, config.weight_decay
        self.anchors = anchors
        self.buffers: list[Tensor] = []

    def step(self, current: list[Tensor], steps: list[Tensor], active: Tensor) -> None:
        if self.mu:
            torch._foreach_add_(steps, torch._foreach_sub(current, self.anchors), alpha=self.mu)
        if self.wd:
            torch._foreach_add_(steps, current, alpha=self.wd)
        if self.momentum:
            if not self.buffers:
                self.buffers = [g.clone() for g in steps]
            else:
                torch._foreach_mul_(self.buffers, self.momentum)
                torch._foreach_add_(self.buffers, steps)
            steps = self.buffers
        if bool(active.all()):
            torch._foreach_add_(current, steps, alpha=-self.lr)
            return
        moved = torch._foreach_add(current, steps, alpha=-self.lr)
        k = int(active.shape[0])
        for p, new in zip(current, moved, strict=True):
            keep = active.view(k, *([1] * (p.dim() - 1)))
            p.copy_(torch.where(keep, new, p))


class VectorizedClients(SequentialClients):
    """Train the round's clients ``chunk_clients`` at a time with ``torch.func``.

    The constructor is :class:`~velocity.sim.SequentialClients`' (``trainer`` gives the
    model, its loss and the base :class:`~velocity.client.TrainConfig`; a task's
    :class:`~velocity.types.TaskConfig` overrides lr, local epochs or steps and FedProx
    ``mu`` per client), plus two memory settings. Everything but the training — dropout,
    stragglers, adversaries, client stages, codecs, digests — is the simulated base's.

    Parameters
    ----------
    trainer, x, y, population, seed, num_classes, dropout_rate, straggler, adversary
        As in :class:`~velocity.sim.SequentialClients`.
    chunk_clients : int, optional
        Most clients trained together (>= 1). Default :func:`chunk_clients_for` the model,
        the batch size and ``memory_mb``. Results do not depend on it.
    memory_mb : float
        Memory budget of one chunk (MiB, > 0) from which the default ``chunk_clients`` is
        chosen; default :data:`DEFAULT_MEMORY_MB`.

    Raises
    ------
    ConfigurationError
        When :func:`can_vectorize` refuses the trainer's model and config (with its
        reason), or for a bad ``chunk_clients`` or ``memory_mb``.

    Notes
    -----
    A client's update equals ``SequentialClients``' up to float rounding (the batch mean is
    a masked sum divided by the batch size, and ``vmap`` batches the matrix products), not
    bit for bit; two runs of the same configuration are bit-identical, whatever the chunk
    size. Clients are grouped by their training config (tasks of one round share it) and
    chunked in task order. Training is lazy as in the base: a ``collect`` trains every
    client it returns, chunk by chunk, before their updates are finished in task order.
    """

    name: ClassVar[str] = "vectorized"

    def __init__(
        self,
        trainer: Trainer,
        x: Tensor,
        y: Tensor,
        population: Population,
        *,
        seed: int,
        num_classes: int | None = None,
        dropout_rate: float = 0.0,
        straggler: DelayModel | None = None,
        adversary: SimulatedAdversary | None = None,
        chunk_clients: int | None = None,
        memory_mb: float = DEFAULT_MEMORY_MB,
    ) -> None:
        super().__init__(
            trainer,
            x,
            y,
            population,
            seed=seed,
            num_classes=num_classes,
            dropout_rate=dropout_rate,
            straggler=straggler,
            adversary=adversary,
        )
        ok, reason = can_vectorize(trainer.model, trainer.config)
        if not ok:
            raise ConfigurationError(f"VectorizedClients cannot train this federation: {reason}")
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int | float):
            raise ConfigurationError(f"memory_mb must be a number > 0; got {memory_mb!r}")
        if chunk_clients is None:
            chunk_clients = chunk_clients_for(
                trainer.model,
                trainer.config.batch_size,
                float(memory_mb),
                dp_sgd=trainer.config.dp_clip is not None,
            )
        elif isinstance(chunk_clients, bool) or not isinstance(chunk_clients, int):
            raise ConfigurationError(f"chunk_clients must be an int >= 1; got {chunk_clients!r}")
        if chunk_clients < 1:
            raise ConfigurationError(f"chunk_clients must be an int >= 1; got {chunk_clients!r}")
        self.chunk_clients = chunk_clients
        self.memory_mb = float(memory_mb)
        self._loss = _trainer_loss(trainer)
        model = trainer.model
        self._trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        self._trained: dict[int, _Trained] = {}

    # ------------------------------------------------------------------ the base's hooks

    def train_batch(self, works: Sequence[ClientWork]) -> None:
        # Train every client this collect returns, chunk by chunk; the base then calls
        # ``train`` per task in order, which picks each result up.
        self._trained.clear()
        self.train_many(works)

    def train(self, work: ClientWork) -> ClientUpdate:
        done = self._trained.pop(id(work.task), None)
        if done is None:
            self.train_many([work])
            done = self._trained.pop(id(work.task))
        if done.delta is not work.out:
            work.out.copy_(done.delta)
        scale_poisoned_update(work.poison, work.out)
        return ClientUpdate(
            work.task.client_id,
            done.num_samples,
            work.out,
            loss=done.loss,
            metrics=dict(done.metrics),
        )

    def train_many(self, works: Sequence[ClientWork]) -> None:
        """Train ``works`` in chunks of at most :attr:`chunk_clients` clients of one config.

        Each client's delta is written into its ``work.out`` (before any poisoning scale,
        which :meth:`train` applies) and kept until :meth:`train` returns it.
        """
        groups: dict[TrainConfig, list[ClientWork]] = {}
        for work in works:
            groups.setdefault(self._config(work.task), []).append(work)
        for config, group in groups.items():
            for start in range(0, len(group), self.chunk_clients):
                self._train_chunk(group[start : start + self.chunk_clients], config)

    # ------------------------------------------------------------------ one chunk

    def _train_chunk(self, works: Sequence[ClientWork], config: TrainConfig) -> None:
        if config.dp_clip is not None:
            self._train_chunk_dp(works, config, config.dp_clip)
            return
        chunk = self._setup(works)
        device, k, params = chunk.device, chunk.k, chunk.params
        plan = _schedule(works, chunk.client_rows, config, seed=self.seed)
        x_src, y_src = chunk.x, chunk.y
        loss_of = self._client_loss()
        step_grad = vmap(grad(loss_of, has_aux=True), in_dims=(0, 0, 0, 0, 0))
        sgd = _StackedSGD(config, chunk.anchors)
        totals = torch.tensor(plan.totals, device=device)
        loss_sum = torch.zeros(k, dtype=torch.float32, device=device)
        correct = torch.zeros(k, dtype=torch.int64, device=device)
        classify: bool | None = None
        num_steps = int(plan.rows.shape[1])
        batch = int(plan.rows.shape[2])
        move = x_src.device != device
        self.trainer.model.train()
        for s in range(num_steps):
            rows = plan.rows[:, s].reshape(-1)
            xb = x_src.index_select(0, rows)
            yb = y_src.index_select(0, rows)
            if move:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            xb = xb.view(k, batch, *xb.shape[1:])
            yb = yb.view(k, batch, *yb.shape[1:])
            valid = plan.valid[:, s].to(device)
            weights = valid.to(torch.float32)
            grads, (losses, outputs) = step_grad(params, chunk.frozen, xb, yb, weights)
            active = totals > s
            sgd.step(
                [params[n] for n in self._trainable], [grads[n] for n in self._trainable], active
            )
            loss_sum += torch.where(active, losses, torch.zeros_like(losses))
            if classify is None:
                classify = _is_classification(outputs, yb)
            if classify:
                hits = (outputs.argmax(-1) == yb) & valid & active.view(k, 1)
                correct += hits.sum(1)

        mean_loss = loss_sum / totals.to(torch.float32)
        values = torch.stack([mean_loss.double(), correct.double()], dim=1).tolist()
        b = config.batch_size
        for i, work in enumerate(works):
            n, total = plan.sizes[i], plan.totals[i]
            spe = math.ceil(n / b)
            seen = (total // spe) * n + min((total % spe) * b, n)
            metrics: dict[str, float] = {"steps": float(total), "samples_seen": float(seen)}
            loss_value, correct_value = values[i]
            if classify:
                metrics["accuracy"] = correct_value / seen
            self._finish_client(chunk, i, work, loss_value, metrics)

    def _train_chunk_dp(
        self, works: Sequence[ClientWork], config: TrainConfig, clip: float
    ) -> None:
        """DP-SGD for a chunk: the Trainer's steps (Poisson batches, per-example clipping,
        Gaussian noise, the fixed expected-batch denominator), every client's draws from its
        own generator in the Trainer's order (each step: ``torch.rand(n)``, then the noise)."""
        chunk = self._setup(works)
        device, k, params = chunk.device, chunk.k, chunk.params
        trainable = self._trainable
        b = config.batch_size
        sizes = [int(r.shape[0]) for r in chunk.client_rows]
        totals = [
            config.local_steps
            if config.local_steps is not None
            else config.local_epochs * math.ceil(n / b)
            for n in sizes
        ]
        expected = [min(b, n) for n in sizes]
        generators = [torch_generator(self.seed, w.task.round, w.index, "train") for w in works]
        noise_std = config.dp_noise_multiplier * clip
        numels = [params[n][0].numel() for n in trainable]
        divisors = torch.tensor(expected, dtype=torch.float32, device=device)
        step_grads = self._example_grads()
        sgd = _StackedSGD(config, chunk.anchors)
        loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
        correct = torch.zeros(k, dtype=torch.int64, device=device)
        clipped = torch.zeros(k, dtype=torch.int64, device=device)
        seen = [0] * k
        classify: bool | None = None
        self.trainer.model.train()
        for s in range(max(totals)):
            live = [i for i in range(k) if totals[i] > s]
            picks: list[Tensor] = []
            noises: list[Tensor] = []
            for i in range(k):
                if i not in live:
                    picks.append(chunk.client_rows[i][:0])
                    noises.append(torch.zeros(sum(numels), device=device))
                    continue
                mask = poisson_mask(sizes[i], expected[i] / sizes[i], generators[i])
                picks.append(chunk.client_rows[i][mask.to(chunk.client_rows[i].device)])
                noise = (
                    torch.randn(sum(numels), generator=generators[i], device=generators[i].device)
                    if noise_std
                    else torch.zeros(sum(numels))
                )
                noises.append(noise.to(device))
            widest = max(1, max(int(p.shape[0]) for p in picks))
            rows, valid = _padded_picks(picks, widest, chunk.client_rows)
            valid = valid.to(device)
            sums = [torch.zeros_like(params[n]) for n in trainable]
            # examples in blocks, so that one block's per-example gradients fit the budget
            block = max(1, CHUNK_BYTES // (4 * k * max(1, sum(numels))))
            for first in range(0, widest, block):
                part = rows[:, first : first + block]
                width = int(part.shape[1])
                ok = valid[:, first : first + width]
                xb = chunk.x.index_select(0, part.reshape(-1)).to(device)
                yb = chunk.y.index_select(0, part.reshape(-1)).to(device)
                xb = xb.view(k, width, *xb.shape[1:])
                yb = yb.view(k, width, *yb.shape[1:])
                grads, (losses, outputs) = step_grads(params, chunk.frozen, xb, yb)
                per_param = [grads[n].reshape(k, width, -1) for n in trainable]
                norms = torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(g, dim=2) for g in per_param], dim=2),
                    dim=2,
                )
                factors = (clip / (norms + CLIP_EPS)).clamp(max=1.0) * ok.to(torch.float32)
                for total, g in zip(sums, per_param, strict=True):
                    total.view(k, -1).add_(torch.einsum("kb,kbd->kd", factors, g))
                clipped += ((norms > clip) & ok).sum(1)
                loss_sum += (losses.double() * ok.double()).sum(1)
                if classify is None:
                    classify = _is_classification(outputs, yb)
                if classify:
                    correct += ((outputs.argmax(-1) == yb) & ok).sum(1)
            noise = torch.stack(noises)
            offset = 0
            for total, numel in zip(sums, numels, strict=True):
                flat = total.view(k, -1)
                if noise_std:
                    flat.add_(noise[:, offset : offset + numel], alpha=noise_std)
                offset += numel
                flat.div_(divisors.view(k, 1))
            steps = sums
            active = torch.zeros(k, dtype=torch.bool, device=device)
            active[live] = True
            sgd.step([params[n] for n in trainable], steps, active)
            for i in live:
                seen[i] += int(picks[i].shape[0])

        values = torch.stack([loss_sum, correct.double(), clipped.double()], dim=1).tolist()
        for i, work in enumerate(works):
            loss_total, correct_total, clipped_total = values[i]
            count = seen[i] if seen[i] else math.nan
            metrics: dict[str, float] = {
                "steps": float(totals[i]),
                "samples_seen": float(seen[i]),
                "dp_steps": float(totals[i]),
                "dp_clipped_fraction": clipped_total / count,
            }
            if classify:
                metrics["accuracy"] = correct_total / count
            self._finish_client(chunk, i, work, loss_total / count, metrics)

    def _setup(self, works: Sequence[ClientWork]) -> _Chunk:
        """A chunk's data, stacked start points, trainable copies and frozen tensors."""
        spec = self.trainer.spec
        device = _device(self.trainer.model)
        x_src, y_src, client_rows = self._sources(works)
        k = len(works)
        first = works[0].task.params
        if all(w.task.params is first for w in works):
            # One round's tasks share the global model: one copy, broadcast over the chunk.
            start = first.to(device).unsqueeze(0).expand(k, -1)
        else:
            start = torch.stack([w.task.params for w in works]).to(device)
        names = list(spec.names)
        offsets = dict(zip(names, spec.offsets, strict=True))
        shapes = dict(zip(names, spec.shapes, strict=True))
        views = {
            n: start[:, offsets[n] : offsets[n] + math.prod(shapes[n])].view(k, *shapes[n])
            for n in names
        }
        frozen = self._frozen(works, device)
        params = {n: views[n].clone(memory_format=torch.contiguous_format) for n in self._trainable}
        initial = (
            self._initial_losses(params, frozen, x_src, y_src, client_rows, device)
            if any(wants_initial_loss(w.task) for w in works)
            else None
        )
        return _Chunk(
            k=k,
            device=device,
            x=x_src,
            y=y_src,
            client_rows=client_rows,
            views=views,
            params=params,
            anchors=[views[n] for n in self._trainable],
            frozen=frozen,
            initial=initial,
        )

    def _finish_client(
        self, chunk: _Chunk, i: int, work: ClientWork, loss: float, metrics: dict[str, float]
    ) -> None:
        """Client ``i``'s row written into ``work.out`` and its result kept for :meth:`train`."""
        out = work.out
        self._write_row(
            out,
            work.task.params,
            {t: (chunk.params[t][i], chunk.views[t][i]) for t in self._trainable},
        )
        if chunk.initial is not None and wants_initial_loss(work.task):
            metrics["initial_loss"] = chunk.initial[i]
        self._trained[id(work.task)] = _Trained(
            out, int(chunk.client_rows[i].shape[0]), loss, metrics
        )

    def _example_grads(
        self,
    ) -> Callable[
        [dict[str, Tensor], dict[str, Tensor], Tensor, Tensor],
        tuple[dict[str, Tensor], tuple[Tensor, Tensor]],
    ]:
        """Per-example gradients of every client's batch: ``(K, W, *shape)`` per parameter,
        with the ``(K, W)`` losses and outputs (vmap over clients of vmap over examples)."""
        model = self.trainer.model
        loss_fn = self._loss

        def example_loss(
            p: dict[str, Tensor], frozen: dict[str, Tensor], x1: Tensor, y1: Tensor
        ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
            output = functional_call(model, (p, frozen), (x1.unsqueeze(0),))
            loss = loss_fn(output, y1.unsqueeze(0))
            return loss, (loss.detach(), output.squeeze(0).detach())

        per_example = vmap(grad(example_loss, has_aux=True), in_dims=(None, None, 0, 0))
        batched: Callable[
            [dict[str, Tensor], dict[str, Tensor], Tensor, Tensor],
            tuple[dict[str, Tensor], tuple[Tensor, Tensor]],
        ] = vmap(per_example, in_dims=(0, 0, 0, 0))
        return batched

    def _client_loss(
        self,
    ) -> Callable[
        [dict[str, Tensor], dict[str, Tensor], Tensor, Tensor, Tensor],
        tuple[Tensor, tuple[Tensor, Tensor]],
    ]:
        """One client's masked batch-mean loss, ``vmap``-able over clients."""
        model = self.trainer.model
        per_example = _per_example(self._loss)

        def client_loss(
            p: dict[str, Tensor], frozen: dict[str, Tensor], xb: Tensor, yb: Tensor, w: Tensor
        ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
            output = functional_call(model, (p, frozen), (xb,))
            losses = per_example(output, yb)
            loss = (losses * w).sum() / w.sum().clamp(min=1.0)
            return loss, (loss.detach(), output.detach())

        return client_loss

    def _sources(self, works: Sequence[ClientWork]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """The chunk's data and each client's rows in it.

        Without data poisoning: the whole dataset and each client's population indices.
        With it: the chunk's clients' data (poisoned where attacked) concatenated, and each
        client's range of it.
        """
        idx = [self.population.indices(w.index) for w in works]
        for w, rows in zip(works, idx, strict=True):
            if rows.dim() != 1 or rows.shape[0] == 0:
                raise ValidationError(
                    f"client {w.task.client_id!r} has no data: a client needs at least one "
                    "example to train on"
                )
        if all(w.poison is None for w in works):
            device = self.x.device
            return self.x, self.y, [r.to(device) for r in idx]
        xs: list[Tensor] = []
        ys: list[Tensor] = []
        rows_out: list[Tensor] = []
        offset = 0
        for w, rows in zip(works, idx, strict=True):
            xc, yc = self.x[rows], self.y[rows]
            if w.poison is not None:
                xc, yc = poison_client_data(
                    w.poison,
                    xc,
                    yc,
                    num_classes=self._classes(),
                    seed=self.seed,
                    round_=w.task.round,
                    client=w.index,
                )
            xs.append(xc)
            ys.append(yc)
            n = int(xc.shape[0])
            rows_out.append(torch.arange(offset, offset + n, device=xc.device))
            offset += n
        return torch.cat(xs), torch.cat(ys), rows_out

    def _frozen(self, works: Sequence[ClientWork], device: torch.device) -> dict[str, Tensor]:
        """Each client's buffers and untrained parameters, stacked, in the model's dtypes."""
        spec = self.trainer.spec
        trainable = set(self._trainable)
        rest = [n for n in spec.names if n not in trainable]
        if not rest:
            return {}
        pieces = [spec.unflatten(w.task.params) for w in works]
        state = self.trainer.model.state_dict()
        return {
            n: torch.stack([p[n] for p in pieces]).to(device=device, dtype=state[n].dtype)
            for n in rest
        }

    def _write_row(
        self, out: Tensor, params: Tensor, trained: Mapping[str, tuple[Tensor, Tensor]]
    ) -> None:
        """``out = new − params``: each trained tensor's ``new − start`` written straight
        into its slice, the others as the Trainer's flatten-and-subtract gives them (0 for
        float32 entries)."""
        spec = self.trainer.spec
        received: dict[str, Tensor] | None = None
        for name, offset, shape in zip(spec.names, spec.offsets, spec.shapes, strict=True):
            row = out[offset : offset + math.prod(shape)]
            pair = trained.get(name)
            if pair is not None:
                new, old = pair
                if new.device == row.device:
                    torch.sub(new.reshape(-1), old.reshape(-1), out=row)
                else:  # trained on a GPU, the row in the engine's (CPU) stack
                    row.copy_((new - old).reshape(-1))
                continue
            if received is None:
                received = spec.unflatten(params)
            row.copy_(received[name].to(torch.float32).reshape(-1))
            row.sub_(params[offset : offset + row.shape[0]])

    def _initial_losses(
        self,
        params: dict[str, Tensor],
        frozen: dict[str, Tensor],
        x: Tensor,
        y: Tensor,
        client_rows: list[Tensor],
        device: torch.device,
    ) -> list[float]:
        """Each client's mean loss of its received model over all its examples (eval mode)."""
        model = self.trainer.model
        per_example = _per_example(self._loss)
        k = len(client_rows)
        longest = max(int(r.shape[0]) for r in client_rows)

        def client_losses(
            p: dict[str, Tensor], fz: dict[str, Tensor], xb: Tensor, yb: Tensor
        ) -> Tensor:
            return per_example(functional_call(model, (p, fz), (xb,)), yb)

        batched = vmap(client_losses)
        total = torch.zeros(k, dtype=torch.float64, device=device)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for first in range(0, longest, _EVAL_BLOCK):
                    rows, valid = _padded_block(client_rows, first, _EVAL_BLOCK)
                    flat = rows.reshape(-1)
                    xb = x.index_select(0, flat).to(device)
                    yb = y.index_select(0, flat).to(device)
                    width = int(rows.shape[1])
                    losses = batched(
                        params,
                        frozen,
                        xb.view(k, width, *xb.shape[1:]),
                        yb.view(k, width, *yb.shape[1:]),
                    )
                    total += (losses.double() * valid.to(device)).sum(1)
        finally:
            model.train(was_training)
        sizes = [float(r.shape[0]) for r in client_rows]
        return [v / n for v, n in zip(total.tolist(), sizes, strict=True)]


def vectorized_from(
    seq: SequentialClients,
    *,
    chunk_clients: int | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
) -> VectorizedClients:
    """A :class:`VectorizedClients` over ``seq``'s trainer, data, population and behaviour.

    ``chunk_clients`` and ``memory_mb`` are :class:`VectorizedClients`' own settings.
    The simulated behaviour (dropout, stragglers, adversary, client stages, encoder, client
    state and spec) is taken over as ``seq`` holds it, so the result can replace ``seq``
    before or after :meth:`~velocity.sim.SimulatedClients.configure`.
    """
    if not isinstance(seq, SequentialClients):
        raise ConfigurationError(
            f"vectorized_from needs a SequentialClients; got {type(seq).__name__}"
        )
    out = VectorizedClients(
        seq.trainer,
        seq.x,
        seq.y,
        seq.population,
        seed=seq.seed,
        num_classes=seq.num_classes,
        chunk_clients=chunk_clients,
        memory_mb=memory_mb,
    )
    out.dropout = seq.dropout
    out.straggler = seq.straggler
    out.adversary = seq.adversary
    out.client_stages = seq.client_stages
    out.encoder = seq.encoder
    out.client_state = seq.client_state
    out.spec = seq.spec
    return out


# ---------------------------------------------------------------------- helpers


def _schedule(
    works: Sequence[ClientWork], client_rows: list[Tensor], config: TrainConfig, *, seed: int
) -> _Plan:
    """Every client's minibatches, drawn as :class:`~velocity.client.Trainer` draws them.

    Client ``c`` in round ``r``: generator ``(seed, r, c, "train")``, one
    ``torch.randperm(n)`` per epoch, batches ``order[b·B:(b+1)·B]``, ``local_steps`` or
    ``local_epochs · ceil(n / B)`` steps. Batches are padded to ``B`` rows (with the
    client's own first row, masked out) and clients to the chunk's most steps.
    """
    b = config.batch_size
    per_client: list[tuple[Tensor, Tensor]] = []
    sizes: list[int] = []
    totals: list[int] = []
    for work, rows in zip(works, client_rows, strict=True):
        n = int(rows.shape[0])
        spe = math.ceil(n / b)
        total = config.local_steps if config.local_steps is not None else config.local_epochs * spe
        generator = torch_generator(seed, work.task.round, work.index, "train")
        epochs: list[Tensor] = []
        masks: list[Tensor] = []
        pad = spe * b - n
        step = 0
        while step < total:
            perm = torch.randperm(n, generator=generator, device=generator.device)
            order = rows.index_select(0, perm.to(rows.device))
            if pad:
                order = torch.cat([order, order[:1].expand(pad)])
            take = min(spe, total - step)
            epochs.append(order.view(spe, b)[:take])
            masks.append((torch.arange(spe * b, device=rows.device) < n).view(spe, b)[:take])
            step += take
        per_client.append((torch.cat(epochs), torch.cat(masks)))
        sizes.append(n)
        totals.append(total)
    longest = max(totals)
    all_rows: list[Tensor] = []
    all_valid: list[Tensor] = []
    for (order, mask), total in zip(per_client, totals, strict=True):
        if total < longest:
            order = torch.cat([order, order[:1].expand(longest - total, b)])
            mask = torch.cat([mask, mask.new_zeros(longest - total, b)])
        all_rows.append(order)
        all_valid.append(mask)
    return _Plan(torch.stack(all_rows), torch.stack(all_valid), sizes, totals)


def _padded_picks(
    picks: list[Tensor], width: int, client_rows: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """Each client's sampled rows padded to ``width`` with its first row, and the mask."""
    rows: list[Tensor] = []
    valid: list[Tensor] = []
    for pick, own in zip(picks, client_rows, strict=True):
        m = int(pick.shape[0])
        device = own.device
        valid.append(torch.arange(width, device=device) < m)
        rows.append(torch.cat([pick, own[:1].expand(width - m)]) if m < width else pick)
    return torch.stack(rows), torch.stack(valid)


def _padded_block(client_rows: list[Tensor], first: int, width: int) -> tuple[Tensor, Tensor]:
    """Rows ``first … first+width`` of every client, padded with its first row, and a mask."""
    longest = max(int(r.shape[0]) for r in client_rows)
    width = min(width, longest - first)
    rows: list[Tensor] = []
    valid: list[Tensor] = []
    for r in client_rows:
        part = r[first : first + width]
        m = int(part.shape[0])
        mask = torch.arange(width, device=r.device) < m
        if m < width:
            part = torch.cat([part, r[:1].expand(width - m)])
        rows.append(part)
        valid.append(mask)
    return torch.stack(rows), torch.stack(valid)


def _per_example(loss_fn: LossFn) -> Callable[[Tensor, Tensor], Tensor]:
    """``(B, ...) outputs, (B, ...) targets -> (B,)`` losses of a batch-mean ``loss_fn``."""
    if loss_fn is F.cross_entropy:

        def cross_entropy(output: Tensor, target: Tensor) -> Tensor:
            return F.cross_entropy(output, target, reduction="none")

        return cross_entropy

    def one(output: Tensor, target: Tensor) -> Tensor:
        return loss_fn(output.unsqueeze(0), target.unsqueeze(0))

    batched: Callable[[Tensor, Tensor], Tensor] = vmap(one)
    return batched


def _trainer_loss(trainer: Trainer) -> LossFn:
    """The trainer's loss function (its public ``loss_fn`` when it has one)."""
    loss: LossFn = trainer.loss_fn
    return loss


def _device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _is_classification(output: Tensor, target: Tensor) -> bool:
    """Whether ``output`` are ``(K, B, C)`` logits for integer class targets ``(K, B)``."""
    return (
        output.dim() == 3
        and target.dim() == 2
        and not target.is_floating_point()
        and not target.is_complex()
    )
