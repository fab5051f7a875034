"""Local training of one client: minibatch SGD or AdamW on in-memory tensors, FedProx and
example-level DP-SGD optional."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from velocity.client._config import TrainConfig, TrainResult
from velocity.client._dpsgd import (
    add_gaussian_noise,
    check_per_example_model,
    clipped_gradient_sum,
    poisson_mask,
)
from velocity.errors import ConfigurationError, ValidationError
from velocity.types import ParamSpec

__all__ = ["LossFn", "Trainer"]

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss_fn(output, target) -> scalar``, averaged over the batch (like ``F.cross_entropy``)."""

_STATE_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "sgd": frozenset({"momentum_buffer"}),
    "adamw": frozenset({"step", "exp_avg", "exp_avg_sq"}),
}
"""The per-parameter state each local optimizer keeps, by PyTorch's names."""


class Trainer:
    """Train one model locally for any number of clients, one after another.

    The model instance is scratch space shared by every client: :meth:`train` loads the
    global parameters into it, runs the local SGD steps, and writes the resulting update
    into a flat vector in :class:`~velocity.types.ParamSpec` layout. A fresh
    :class:`torch.optim.SGD` (or :class:`torch.optim.AdamW`, ``config.optimizer="adamw"``)
    is made per call, because its buffers are per-client state: FedAvg does not keep them
    between rounds, and with ``config.keep_optimizer_state`` the caller keeps them for the
    client and hands them back (``optimizer_state``), as DiLoCo's workers keep their inner
    AdamW (Douillard et al. 2023).

    Local training is McMahan et al. 2017's ClientUpdate ("Communication-Efficient Learning
    of Deep Networks from Decentralized Data", Algorithm 1): ``E`` epochs (or a fixed number
    of steps) of minibatch SGD (or AdamW) of size ``B`` from the global model, with FedProx's
    proximal term ``mu/2 · ‖w − w_global‖²`` when ``config.prox_mu > 0`` (Li et al. 2020,
    "Federated Optimization in Heterogeneous Networks").

    Parameters
    ----------
    model : torch.nn.Module
        The architecture. Its parameters are overwritten by every call.
    config : TrainConfig
        Local-training settings.
    loss_fn : callable, optional
        ``loss_fn(output, target)`` returning the batch-mean loss; default
        :func:`torch.nn.functional.cross_entropy`.
    spec : ParamSpec, optional
        Layout of the flat vectors; must equal ``ParamSpec.from_module(model)``, which is the
        default. Pass it to share one spec object between components.

    Notes
    -----
    The hot loop is what a hand-written PyTorch loop does: ``index_select`` the batch from
    the in-memory dataset, forward, backward, step. Loss and accuracy are kept as tensors and
    read once at the end, so there is no host synchronisation per step. The proximal term
    enters through its gradient, ``grad += mu · (w − w_global)``, added before the optimizer
    step with two fused ``foreach`` operations, as the FedProx authors' own optimizer does;
    mathematically it is the gradient of the proximal term added to the loss.

    Randomness comes only from the ``generator`` passed to :meth:`train` (the order of the
    examples in each epoch), so the same generator state gives a bit-identical update on
    the CPU. Models with dropout would draw their masks from PyTorch's global generator;
    none of the :mod:`velocity.models` models has dropout.

    **DP-SGD.** With ``config.dp_clip = C`` set, the local steps are those of DP-SGD (Abadi
    et al. 2016, "Deep Learning with Differential Privacy", Algorithm 1) instead of the
    shuffled minibatches:

    - *Poisson sampling*: at every step each of the client's ``n`` examples is in the batch
      independently with probability ``q = min(1, B / n)`` (``torch.rand(n) < q`` from the
      ``generator``), which is the sampling the privacy accountants analyse; batch sizes
      vary and may be 0. The number of steps is the plain path's: ``local_steps`` if set,
      else ``local_epochs · ceil(n / B)``.
    - *Per-example gradients* with :mod:`torch.func` (``vmap(grad(·))`` over a
      ``functional_call`` of the model, in chunks that bound the memory), each clipped as a
      whole (all parameters together) to L2 norm ``C`` by the factor
      ``min(1, C / (‖g_i‖ + 1e-6))``.
    - The step's gradient is ``(Σ_i clip_C(g_i) + N(0, (z·C)² I)) / (q·n)``, ``z`` the
      noise multiplier. The denominator is the *expected* batch size ``q·n`` (``B`` when
      ``B < n``), fixed, as the guarantee under Poisson sampling requires; an empty batch
      still takes a step, with noise only. It is set as the parameters' ``.grad`` and the
      same :class:`torch.optim.SGD` step follows, so momentum, weight decay and FedProx's
      proximal gradient (which reads no example, added after the noise) are
      post-processing of the private gradient.

    Models with batch normalisation are refused (:class:`ConfigurationError`): batch
    statistics mix the examples. Loss and accuracy are reported over the examples seen, as
    the plain path does, for monitoring; they are computed from the private data and are
    not covered by the DP guarantee. ``metrics`` gains ``"dp_steps"`` and
    ``"dp_clipped_fraction"``. The accounting (``ε`` for ``q``, ``z`` and the steps) is
    not done here.

    Examples
    --------
    >>> from velocity.models import build_model
    >>> model = build_model("logreg", in_features=4, num_classes=3, seed=0)
    >>> trainer = Trainer(model, TrainConfig(batch_size=2, lr=0.1))
    >>> x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    >>> global_params = trainer.spec.flatten(model.state_dict())
    >>> result = trainer.train(global_params, x, y, torch.arange(5),
    ...                        generator=torch.Generator().manual_seed(0))
    >>> result.delta.shape, result.num_samples, result.metrics["steps"]
    (torch.Size([15]), 5, 3.0)
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        *,
        loss_fn: LossFn | None = None,
        spec: ParamSpec | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigurationError(
                f"Trainer.model must be a torch.nn.Module; got {type(model).__name__}"
            )
        if not isinstance(config, TrainConfig):
            raise ConfigurationError(
                f"Trainer.config must be a TrainConfig; got {type(config).__name__}"
            )
        model_spec = ParamSpec.from_module(model)
        if spec is not None and spec != model_spec:
            raise ValidationError(
                "Trainer.spec does not match the model's state dict "
                f"(spec: {len(spec)} tensors, d={spec.d}; model: {len(model_spec)} tensors, "
                f"d={model_spec.d})"
            )
        if config.dp_clip is not None:
            check_per_example_model(model)
        self._model = model
        self._config = config
        self._loss_fn: LossFn = F.cross_entropy if loss_fn is None else loss_fn
        self._spec = model_spec if spec is None else spec
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self._param_names = [name for name, _ in trainable]
        self._params = [p for _, p in trainable]
        self._optimizers: dict[tuple[object, ...], torch.optim.Optimizer] = {}
        self._layout: _Layout | None = None

    @property
    def loss_fn(self) -> LossFn:
        """The loss ``loss_fn(output, target)`` the trainer minimises."""
        return self._loss_fn

    @property
    def model(self) -> nn.Module:
        """The model being trained (its parameters are those of the last call)."""
        return self._model

    @property
    def config(self) -> TrainConfig:
        """The local-training settings."""
        return self._config

    @property
    def spec(self) -> ParamSpec:
        """Layout of the flat parameter and update vectors: ``ParamSpec.from_module(model)``."""
        return self._spec

    # ------------------------------------------------------------------ training

    def train(
        self,
        global_params: Tensor,
        x: Tensor,
        y: Tensor,
        indices: Tensor,
        *,
        generator: torch.Generator,
        out: Tensor | None = None,
        config: TrainConfig | None = None,
        initial_loss: bool = False,
        optimizer_state: Mapping[str, Tensor] | None = None,
    ) -> TrainResult:
        """Train from ``global_params`` on the client's examples ``x[indices]``.

        Parameters
        ----------
        global_params : Tensor
            ``(d,)`` float32 flat global model (:meth:`ParamSpec.flatten` layout). Not modified.
        x, y : Tensor
            The whole in-memory dataset: inputs ``(M, ...)`` and targets ``(M, ...)``. On the
            model's device for speed; batches on another device are moved one by one.
        indices : Tensor
            ``(n,)`` integer row numbers of this client's examples in ``x`` and ``y``.
        generator : torch.Generator
            Source of the example order: one ``torch.randperm`` per epoch. With DP-SGD,
            source of each step's Poisson sample (``torch.rand(n)``) and then of its noise
            (one ``torch.randn`` of the trainable coordinates, when ``z > 0``).
        out : Tensor, optional
            ``(d,)`` float32 tensor to write the update into, typically row ``i`` of the
            round's :meth:`ParamSpec.stack`, on ``global_params``' device. Must not overlap
            ``global_params``.
        config : TrainConfig, optional
            This call's settings (a task's per-client overrides); the trainer's own by default.
        initial_loss : bool
            Also measure :math:`F_k(w^t)`, the mean loss of the *received* model
            ``global_params`` over the client's examples, before any step: one pass without
            gradients, as :meth:`evaluate` does (eval mode, example-weighted mean of
            ``loss_fn``), reported as ``metrics["initial_loss"]``. q-FedAvg weighs clients
            by it (Li et al. 2020, "Fair Resource Allocation in Federated Learning"). Off by
            default: nothing is measured and the training is untouched; on, the update is
            bit-identical to the one without it (the pass changes no parameter, buffer or
            generator).
        optimizer_state : mapping of str to Tensor, optional
            With ``config.keep_optimizer_state``: the client's optimizer state from its last
            call (:attr:`TrainResult.optimizer_state`), loaded (copied) into the fresh
            optimizer before the first step; ``None`` or empty starts from scratch. Refused
            without ``keep_optimizer_state``.

        Returns
        -------
        TrainResult
            ``delta = new_params − global_params`` (``out`` itself when given), the sample
            count, the mean minibatch loss, the metrics and, with
            ``config.keep_optimizer_state``, the optimizer state after the last step.

        Raises
        ------
        ValidationError
            Empty or out-of-range ``indices`` (the client has no usable data), tensors of
            the wrong shape, dtype or device, or an ``optimizer_state`` that is not this
            model's state of ``config.optimizer``.
        """
        config = self._config if config is None else config
        if not isinstance(initial_loss, bool):
            raise ConfigurationError(
                f"train.initial_loss must be True or False; got {initial_loss!r}"
            )
        n = self._check_data(x, y, indices)
        if config.dp_clip is not None:
            check_per_example_model(self._model)
        self._check_vector("global_params", global_params)
        if not isinstance(generator, torch.Generator):
            raise ValidationError(f"train needs a torch.Generator; got {type(generator).__name__}")
        if out is None:
            out = torch.empty(self._spec.d, dtype=torch.float32, device=global_params.device)
        else:
            self._check_vector("out", out)
            if out.device != global_params.device:
                raise ValidationError(
                    f"out is on {out.device} but global_params on {global_params.device}"
                )
            if out.data_ptr() == global_params.data_ptr():
                raise ValidationError("out must not be global_params itself")

        received_loss = (
            self.evaluate(global_params, x, y, indices=indices)[0] if initial_loss else None
        )
        model = self._model
        layout = self._fast_layout()
        device = self._device(layout)
        self._load(global_params, layout)
        mu = config.prox_mu
        anchors: list[Tensor] = []
        if mu:
            start = self._spec.unflatten(global_params)
            anchors = [start[name].to(device) for name in self._param_names]
        rows = indices.to(x.device)
        move = x.device != device

        batch_size = config.batch_size
        steps_per_epoch = math.ceil(n / batch_size)
        total = (
            config.local_steps
            if config.local_steps is not None
            else config.local_epochs * steps_per_epoch
        )
        lean_lr = _lean_sgd_lr(config)
        optimizer = (
            None
            if lean_lr is not None and config.dp_clip is None
            else self._optimizer(config, optimizer_state)
        )
        loss_fn = self._loss_fn
        if config.dp_clip is not None:
            assert optimizer is not None
            result = self._train_dpsgd(
                config,
                x,
                y,
                rows,
                clip=config.dp_clip,
                total=total,
                optimizer=optimizer,
                anchors=anchors,
                generator=generator,
                global_params=global_params,
                out=out,
                received_loss=received_loss,
            )
            return self._with_state(result, optimizer, config)
        losses: list[Tensor] = []
        predictions: list[Tensor] = []
        targets: list[Tensor] = []
        classify: bool | None = None

        params = self._params
        model.train()
        step = 0
        while step < total:
            perm = torch.randperm(n, generator=generator, device=generator.device)
            order = rows.index_select(0, perm.to(rows.device))
            for b in range(min(steps_per_epoch, total - step)):
                batch = order[b * batch_size : (b + 1) * batch_size]
                xb = x.index_select(0, batch)
                yb = y.index_select(0, batch)
                if move:
                    xb = xb.to(device, non_blocking=True)
                    yb = yb.to(device, non_blocking=True)
                output = model(xb)
                loss = loss_fn(output, yb)
                for p in params:  # optimizer.zero_grad(): set_to_none
                    p.grad = None
                torch.autograd.backward(loss)
                if mu:
                    self._add_proximal_gradient(mu, anchors)
                if optimizer is None:
                    assert lean_lr is not None
                    _sgd_step(params, lean_lr)
                else:
                    optimizer.step()
                losses.append(loss.detach())
                if classify is None:
                    classify = _is_classification(output, yb)
                if classify:
                    predictions.append(output.argmax(1))
                    targets.append(yb)
            step += min(steps_per_epoch, total - step)
        for p in params:  # free the gradients
            p.grad = None

        self._flatten_into(out, layout)
        with torch.no_grad():
            out.sub_(global_params)

        samples_seen = (total // steps_per_epoch) * n + min(
            (total % steps_per_epoch) * batch_size, n
        )
        metrics: dict[str, float] = {"steps": float(total), "samples_seen": float(samples_seen)}
        if received_loss is not None:
            metrics["initial_loss"] = received_loss
        mean_loss = torch.stack(losses).mean()
        if classify:
            correct = (torch.cat(predictions) == torch.cat(targets)).sum()
            loss_value, correct_value = torch.stack([mean_loss.double(), correct.double()]).tolist()
            metrics["accuracy"] = correct_value / samples_seen
        else:
            loss_value = float(mean_loss)
        result = TrainResult(
            delta=out,
            num_samples=n,
            loss=loss_value,
            metrics=MappingProxyType(metrics),
        )
        return self._with_state(result, optimizer, config)

    def _optimizer(
        self, config: TrainConfig, state: Mapping[str, Tensor] | None
    ) -> torch.optim.Optimizer:
        """A fresh optimizer of ``config.optimizer`` over the trainable parameters, holding a
        copy of ``state`` (see :meth:`train`)."""
        reusable = not config.keep_optimizer_state
        cache_key = (
            config.optimizer,
            config.lr,
            config.momentum,
            config.weight_decay,
            config.beta1,
            config.beta2,
            config.eps,
        )
        if reusable and (state is None or not len(state)):
            # A fresh optimizer per client, without constructing one: the cached one with its
            # state dropped steps exactly as a new one would.
            cached = self._optimizers.get(cache_key)
            if cached is not None:
                cached.state.clear()
                return cached
        optimizer: torch.optim.Optimizer
        if config.optimizer == "adamw":
            optimizer = torch.optim.AdamW(
                self._params,
                lr=config.lr,
                betas=(config.beta1, config.beta2),
                eps=config.eps,
                weight_decay=config.weight_decay,
            )
        else:
            optimizer = torch.optim.SGD(
                self._params,
                lr=config.lr,
                momentum=config.momentum,
                weight_decay=config.weight_decay,
            )
        if state is None or not len(state):
            if reusable:
                if len(self._optimizers) >= _MAX_CACHED_OPTIMIZERS:  # e.g. a per-round lr
                    del self._optimizers[next(iter(self._optimizers))]
                self._optimizers[cache_key] = optimizer
            return optimizer
        if not config.keep_optimizer_state:
            raise ValidationError(
                "train got an optimizer_state but config.keep_optimizer_state is False; set it "
                "to carry the optimizer's state between rounds"
            )
        allowed = _STATE_KEYS[config.optimizer]
        index = {name: i for i, name in enumerate(self._param_names)}
        loaded: dict[int, dict[str, Tensor]] = {}
        for flat, value in state.items():
            name, _, key = str(flat).rpartition(".")
            i = index.get(name)
            if i is None or key not in allowed or not isinstance(value, Tensor):
                raise ValidationError(
                    f"optimizer_state entry {flat!r} is not the {config.optimizer} state of a "
                    f"trainable parameter (expected '<parameter>.<key>' with key one of "
                    f"{', '.join(sorted(allowed))}, holding a tensor)"
                )
            if value.dim() and value.shape != self._params[i].shape:
                raise ValidationError(
                    f"optimizer_state[{flat!r}] has shape {tuple(value.shape)}, but the "
                    f"parameter has {tuple(self._params[i].shape)}"
                )
            loaded.setdefault(i, {})[key] = value.detach().clone()
        for i, entries in loaded.items():
            if entries.keys() != allowed:
                raise ValidationError(
                    f"optimizer_state of {self._param_names[i]!r} holds "
                    f"{', '.join(sorted(entries))}; {config.optimizer} needs "
                    f"{', '.join(sorted(allowed))}"
                )
        groups = optimizer.state_dict()["param_groups"]
        optimizer.load_state_dict({"state": loaded, "param_groups": groups})
        return optimizer

    def _with_state(
        self, result: TrainResult, optimizer: torch.optim.Optimizer | None, config: TrainConfig
    ) -> TrainResult:
        """``result`` carrying the optimizer's state when ``config.keep_optimizer_state``."""
        if not config.keep_optimizer_state or optimizer is None:
            return result
        state = {
            f"{name}.{key}": value.detach()
            for name, p in zip(self._param_names, self._params, strict=True)
            for key, value in optimizer.state.get(p, {}).items()
            if isinstance(value, Tensor)
        }
        return dataclasses.replace(result, optimizer_state=MappingProxyType(state))

    def _train_dpsgd(
        self,
        config: TrainConfig,
        x: Tensor,
        y: Tensor,
        rows: Tensor,
        *,
        clip: float,
        total: int,
        optimizer: torch.optim.Optimizer,
        anchors: list[Tensor],
        generator: torch.Generator,
        global_params: Tensor,
        out: Tensor,
        received_loss: float | None,
    ) -> TrainResult:
        """DP-SGD's ``total`` steps (Abadi et al. 2016, Algorithm 1); see the class notes."""
        model = self._model
        layout = self._fast_layout()
        device = self._device(layout)
        move = x.device != device
        n = int(rows.shape[0])
        expected = min(config.batch_size, n)  # q·n, the fixed denominator
        q = expected / n
        noise_std = config.dp_noise_multiplier * clip
        names = self._param_names
        trainable = set(names)
        frozen = {
            name: tensor.detach()
            for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers())
            if name not in trainable
        }
        mu = config.prox_mu

        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        clipped = torch.zeros((), dtype=torch.int64, device=device)
        samples_seen = 0
        classify: bool | None = None

        model.train()
        for _ in range(total):
            mask = poisson_mask(n, q, generator)
            batch = rows[mask.to(rows.device)]
            xb = x.index_select(0, batch)
            yb = y.index_select(0, batch)
            if move:
                xb = xb.to(device, non_blocking=True)
                yb = yb.to(device, non_blocking=True)
            params = {name: p.detach() for name, p in zip(names, self._params, strict=True)}
            step = clipped_gradient_sum(model, params, frozen, self._loss_fn, xb, yb, clip=clip)
            add_gaussian_noise(step.sums, noise_std, generator)
            for p, g in zip(self._params, step.sums, strict=True):
                p.grad = g.div_(expected)
            if mu:
                self._add_proximal_gradient(mu, anchors)
            optimizer.step()
            size = int(batch.shape[0])
            if size:
                samples_seen += size
                loss_sum += step.losses.double().sum()
                clipped += step.num_clipped
                if classify is None:
                    classify = _is_classification(step.outputs, yb)
                if classify:
                    correct += (step.outputs.argmax(1) == yb).sum()
        optimizer.zero_grad()

        self._flatten_into(out, layout)
        with torch.no_grad():
            out.sub_(global_params)

        loss_total, correct_total, clipped_total = torch.stack(
            [loss_sum, correct.double(), clipped.double()]
        ).tolist()
        seen = samples_seen if samples_seen else math.nan
        metrics: dict[str, float] = {
            "steps": float(total),
            "samples_seen": float(samples_seen),
            "dp_steps": float(total),
            "dp_clipped_fraction": clipped_total / seen,
        }
        if received_loss is not None:
            metrics["initial_loss"] = received_loss
        if classify:
            metrics["accuracy"] = correct_total / seen
        return TrainResult(
            delta=out,
            num_samples=n,
            loss=loss_total / seen,
            metrics=MappingProxyType(metrics),
        )

    def _add_proximal_gradient(self, mu: float, anchors: list[Tensor]) -> None:
        """``grad += mu · (w − w_global)`` for every trainable parameter that has a gradient."""
        params: list[Tensor] = []
        grads: list[Tensor] = []
        starts: list[Tensor] = []
        for p, anchor in zip(self._params, anchors, strict=True):
            if p.grad is not None:
                params.append(p)
                grads.append(p.grad)
                starts.append(anchor)
        with torch.no_grad():
            torch._foreach_add_(grads, torch._foreach_sub(params, starts), alpha=mu)

    # ------------------------------------------------------------------ evaluation

    def evaluate(
        self,
        params: Tensor,
        x: Tensor,
        y: Tensor,
        *,
        batch_size: int = 1000,
        indices: Tensor | None = None,
    ) -> tuple[float, float]:
        """Mean loss and accuracy of the flat model ``params`` on ``x[indices]`` (default: all).

        Runs in :func:`torch.inference_mode` with the model in eval mode (its previous mode
        is restored). The loss is the example-weighted mean of ``loss_fn`` over the batches.
        Accuracy is the fraction of ``argmax(output, 1) == y``; it is ``nan`` when the output
        is not ``(N, C)`` logits for integer targets ``(N,)``.

        Parameters
        ----------
        params : Tensor
            ``(d,)`` float32 flat model.
        x, y : Tensor
            Inputs and targets.
        batch_size : int
            Examples per forward pass (>= 1); only memory and speed depend on it.
        indices : Tensor, optional
            ``(n,)`` integer row numbers to evaluate on.

        Returns
        -------
        tuple of (float, float)
            ``(mean loss, accuracy)``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(f"evaluate.batch_size must be an int >= 1; got {batch_size!r}")
        self._check_vector("params", params)
        if indices is None:
            n = self._check_pair(x, y)
            if n == 0:
                raise ValidationError("evaluate got an empty dataset: x has no rows")
        else:
            n = self._check_data(x, y, indices)
        model = self._model
        layout = self._fast_layout()
        device = self._device(layout)
        rows = None if indices is None else indices.to(x.device)
        self._load(params, layout)
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                total_loss = torch.zeros((), dtype=torch.float64, device=device)
                correct = torch.zeros((), dtype=torch.int64, device=device)
                classify = True
                for start in range(0, n, batch_size):
                    if rows is None:
                        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                    else:
                        batch = rows[start : start + batch_size]
                        xb, yb = x.index_select(0, batch), y.index_select(0, batch)
                    xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                    output = model(xb)
                    total_loss += self._loss_fn(output, yb).double() * yb.shape[0]
                    classify = classify and _is_classification(output, yb)
                    if classify:
                        correct += (output.argmax(1) == yb).sum()
                loss_sum, correct_sum = torch.stack([total_loss, correct.double()]).tolist()
        finally:
            model.train(was_training)
        return loss_sum / n, (correct_sum / n if classify else math.nan)

    # ------------------------------------------------------------------ helpers

    def _fast_layout(self) -> _Layout | None:
        """The model's tensors as flat views in spec order, when every one is a float32
        parameter or buffer (``None`` otherwise: the general, state-dict path is taken).

        Cached; rebuilt when a parameter or buffer was replaced or moved (checked by object
        identity and storage address on every call: a few attribute reads per tensor).
        """
        layout = self._layout
        if layout is not None and layout.valid():
            return layout
        self._layout = layout = _Layout.of(self._model, self._spec)
        return layout

    def _device(self, layout: _Layout | None) -> torch.device:
        if layout is not None:
            return layout.device
        for tensor in itertools.chain(self._model.parameters(), self._model.buffers()):
            return tensor.device
        return torch.device("cpu")

    def _load(self, vec: Tensor, layout: _Layout | None) -> None:
        """Copy the flat ``vec`` into the model."""
        with torch.no_grad():
            if layout is not None:
                if vec.device != layout.device:  # the model on a GPU, the engine's vector not
                    vec = vec.to(layout.device, non_blocking=True)
                torch._foreach_copy_(layout.flat, list(torch.split(vec, layout.numels)))
                return
            pieces = self._spec.unflatten(vec)
            for name, tensor in self._model.state_dict().items():
                tensor.copy_(pieces[name])

    def _flatten_into(self, out: Tensor, layout: _Layout | None) -> None:
        """Write the model's current state into ``out`` (spec layout)."""
        with torch.no_grad():
            if layout is not None and out.device == layout.device:
                torch.cat(layout.flat, out=out)
            elif layout is not None:  # one copy of the whole row off the model's device
                out.copy_(torch.cat(layout.flat))
            else:
                self._spec.flatten(self._model.state_dict(), out=out)

    def _check_vector(self, what: str, vec: object) -> None:
        if not isinstance(vec, Tensor):
            raise ValidationError(f"{what} must be a torch.Tensor; got {type(vec).__name__}")
        if vec.dtype != torch.float32 or vec.dim() != 1 or vec.shape[0] != self._spec.d:
            raise ValidationError(
                f"{what} must be a float32 tensor of shape ({self._spec.d},); "
                f"got {vec.dtype} of shape {tuple(vec.shape)}"
            )

    @staticmethod
    def _check_pair(x: object, y: object) -> int:
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise ValidationError(
                f"x and y must be torch.Tensors; got {type(x).__name__} and {type(y).__name__}"
            )
        if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
            raise ValidationError(
                "x and y must hold the same number of rows; "
                f"got shapes {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if x.device != y.device:
            raise ValidationError(f"x is on {x.device} but y on {y.device}")
        return int(x.shape[0])

    @classmethod
    def _check_data(cls, x: Tensor, y: Tensor, indices: object) -> int:
        rows = cls._check_pair(x, y)
        if not isinstance(indices, Tensor):
            raise ValidationError(f"indices must be a torch.Tensor; got {type(indices).__name__}")
        if indices.dim() != 1 or indices.dtype not in (torch.int64, torch.int32):
            raise ValidationError(
                "indices (the client's rows of x) must be a 1-D int64 or int32 tensor; "
                f"got {indices.dtype} of shape {tuple(indices.shape)}"
            )
        n = int(indices.shape[0])
        if n == 0:
            raise ValidationError(
                "the client's data is empty: indices has no entries, and a client needs at "
                "least one example to train or evaluate on"
            )
        low, high = torch.stack(torch.aminmax(indices)).tolist()
        if low < 0 or high >= rows:
            raise ValidationError(
                f"indices must lie in [0, {rows}) (the rows of x); got values in [{low}, {high}]"
            )
        return n


def _is_classification(output: Tensor, target: Tensor) -> bool:
    """Whether ``output`` are ``(N, C)`` logits for integer class targets ``(N,)``."""
    return (
        output.dim() == 2
        and target.dim() == 1
        and not target.is_floating_point()
        and not target.is_complex()
    )


_MAX_CACHED_OPTIMIZERS: Final = 8
"""Optimizers a trainer keeps for reuse (one per distinct setting; a schedule evicts)."""


def _lean_sgd_lr(config: TrainConfig) -> float | None:
    """The learning rate when a step is plain ``w ← w − lr · g`` (SGD without momentum or
    weight decay, nothing kept between rounds), else ``None`` (the torch optimizer steps)."""
    if (
        config.optimizer == "sgd"
        and config.momentum == 0
        and config.weight_decay == 0
        and not config.keep_optimizer_state
    ):
        return float(config.lr)
    return None


def _sgd_step(params: Sequence[Tensor], lr: float) -> None:
    """``p ← p − lr · p.grad`` for every parameter with a gradient: the update
    :class:`torch.optim.SGD` makes without momentum and weight decay (the same ``add_`` with
    ``alpha=-lr``, so bit-identical), without the optimizer's per-step bookkeeping."""
    with_grad = [p for p in params if p.grad is not None]
    if with_grad:
        grads = [p.grad for p in with_grad if p.grad is not None]
        with torch.no_grad():
            torch._foreach_add_(with_grad, grads, alpha=-lr)


@dataclass(frozen=True, eq=False)
class _Layout:
    """A model's state tensors in spec order, each with a flat view, for the fast
    load/flatten path (:meth:`Trainer._fast_layout`)."""

    owners: tuple[tuple[dict[str, Tensor | None], str, Tensor], ...]
    flat: list[Tensor]
    numels: list[int]
    pointers: tuple[int, ...]
    device: torch.device

    @classmethod
    def of(cls, model: nn.Module, spec: ParamSpec) -> _Layout | None:
        """The layout of ``model``, or ``None`` when a tensor is not a plain float32
        parameter or buffer reachable by its state-dict name (custom state dicts, other
        dtypes, non-contiguous storage, mixed devices)."""
        modules = dict(model.named_modules(remove_duplicate=False))
        owners: list[tuple[dict[str, Tensor | None], str, Tensor]] = []
        state = model.state_dict(keep_vars=True)
        if list(state) != list(spec.names):
            return None
        for name, tensor in state.items():
            prefix, _, attr = name.rpartition(".")
            module = modules.get(prefix)
            if module is None:
                return None
            table: dict[str, Tensor | None]
            if module._parameters.get(attr) is tensor:
                table = module._parameters
            elif module._buffers.get(attr) is tensor:
                table = module._buffers
            else:
                return None
            if tensor.dtype != torch.float32 or not tensor.is_contiguous():
                return None
            owners.append((table, attr, tensor))
        if not owners or len({t.device for *_, t in owners}) != 1:
            return None
        tensors = [t for *_, t in owners]
        return cls(
            owners=tuple(owners),
            flat=[t.detach().view(-1) for t in tensors],
            numels=[t.numel() for t in tensors],
            pointers=tuple(t.data_ptr() for t in tensors),
            device=tensors[0].device,
        )

    def valid(self) -> bool:
        """Whether every tensor is still the model's, at the same storage address."""
        for (table, attr, tensor), pointer in zip(self.owners, self.pointers, strict=True):
            if table.get(attr) is not tensor or tensor.data_ptr() != pointer:
                return False
        return True
