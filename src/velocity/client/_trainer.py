"""Local training of one client: minibatch SGD on in-memory tensors, FedProx optional."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from types import MappingProxyType

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from velocity.client._config import TrainConfig, TrainResult
from velocity.errors import ConfigurationError, ValidationError
from velocity.types import ParamSpec

__all__ = ["LossFn", "Trainer"]

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss_fn(output, target) -> scalar``, averaged over the batch (like ``F.cross_entropy``)."""


class Trainer:
    """Train one model locally for any number of clients, one after another.

    The model instance is scratch space shared by every client: :meth:`train` loads the
    global parameters into it, runs the local SGD steps, and writes the resulting update
    into a flat vector in :class:`~velocity.types.ParamSpec` layout. A fresh
    :class:`torch.optim.SGD` is made per client, because momentum buffers are per-client
    state that FedAvg does not keep between rounds.

    Local training is McMahan et al. 2017's ClientUpdate ("Communication-Efficient Learning
    of Deep Networks from Decentralized Data", Algorithm 1): ``E`` epochs (or a fixed number
    of steps) of minibatch SGD of size ``B`` from the global model, with FedProx's proximal
    term ``mu/2 · ‖w − w_global‖²`` when ``config.prox_mu > 0`` (Li et al. 2020,
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
        self._model = model
        self._config = config
        self._loss_fn: LossFn = F.cross_entropy if loss_fn is None else loss_fn
        self._spec = model_spec if spec is None else spec
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self._param_names = [name for name, _ in trainable]
        self._params = [p for _, p in trainable]

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
            Source of the example order: one ``torch.randperm`` per epoch.
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

        Returns
        -------
        TrainResult
            ``delta = new_params − global_params`` (``out`` itself when given), the sample
            count, the mean minibatch loss and the metrics.

        Raises
        ------
        ValidationError
            Empty or out-of-range ``indices`` (the client has no usable data), or tensors of
            the wrong shape, dtype or device.
        """
        config = self._config if config is None else config
        if not isinstance(initial_loss, bool):
            raise ConfigurationError(
                f"train.initial_loss must be True or False; got {initial_loss!r}"
            )
        n = self._check_data(x, y, indices)
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
        device = self._device()
        start_params = self._load(global_params)
        mu = config.prox_mu
        anchors = [start_params[name].to(device) for name in self._param_names] if mu else []
        rows = indices.to(x.device)
        move = x.device != device

        batch_size = config.batch_size
        steps_per_epoch = math.ceil(n / batch_size)
        total = (
            config.local_steps
            if config.local_steps is not None
            else config.local_epochs * steps_per_epoch
        )
        optimizer = torch.optim.SGD(
            self._params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        loss_fn = self._loss_fn
        losses: list[Tensor] = []
        predictions: list[Tensor] = []
        targets: list[Tensor] = []
        classify: bool | None = None

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
                optimizer.zero_grad()
                torch.autograd.backward(loss)
                if mu:
                    self._add_proximal_gradient(mu, anchors)
                optimizer.step()
                losses.append(loss.detach())
                if classify is None:
                    classify = _is_classification(output, yb)
                if classify:
                    predictions.append(output.argmax(1))
                    targets.append(yb)
            step += min(steps_per_epoch, total - step)
        optimizer.zero_grad()  # free the gradients; the optimizer state goes with it

        with torch.no_grad():
            self._spec.flatten(model.state_dict(), out=out)
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
        return TrainResult(
            delta=out,
            num_samples=n,
            loss=loss_value,
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
        device = self._device()
        rows = None if indices is None else indices.to(x.device)
        self._load(params)
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

    def _device(self) -> torch.device:
        for tensor in itertools.chain(self._model.parameters(), self._model.buffers()):
            return tensor.device
        return torch.device("cpu")

    def _load(self, vec: Tensor) -> dict[str, Tensor]:
        """Copy the flat ``vec`` into the model; returns ``vec``'s per-parameter views."""
        pieces = self._spec.unflatten(vec)
        with torch.no_grad():
            for name, tensor in self._model.state_dict().items():
                tensor.copy_(pieces[name])
        return pieces

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
