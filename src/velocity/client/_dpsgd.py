"""Example-level DP-SGD: Poisson sampling, per-example gradients, clipping and noise.

The pieces of one DP-SGD step (Abadi et al. 2016, "Deep Learning with Differential
Privacy", Algorithm 1), as small functions on a model and a batch, which
:class:`~velocity.client.Trainer` runs when ``TrainConfig.dp_clip`` is set:

- :func:`poisson_mask` draws the step's batch: each of the ``n`` examples independently
  with probability ``q`` (the sampling the privacy accountants assume);
- :func:`per_example_gradients` computes ``∇ℓ(w; x_i, y_i)`` for every example of a batch
  at once with :mod:`torch.func` (``vmap(grad(...))`` over a ``functional_call``);
- :func:`clipped_gradient_sum` clips each example's whole gradient (all parameters
  together) to L2 norm ``C`` and sums, in chunks that bound the memory;
- :func:`add_gaussian_noise` adds ``N(0, σ²)`` to every coordinate of the sum.

The step's gradient is then ``(Σ_i clip_C(g_i) + N(0, (z·C)² I)) / (q·n)``: the denominator
is the *expected* batch size, fixed, not the sampled one (whose size would leak).

Examples
--------
>>> import torch
>>> from torch.nn import functional as F
>>> model = torch.nn.Linear(3, 2)
>>> x, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
>>> params = {name: p.detach() for name, p in model.named_parameters()}
>>> grads = per_example_gradients(model, params, {}, F.cross_entropy, x, y)
>>> grads.grads["weight"].shape, grads.losses.shape
(torch.Size([5, 2, 3]), torch.Size([5]))
>>> total = clipped_gradient_sum(model, params, {}, F.cross_entropy, x, y, clip=0.1)
>>> bool(torch.cat([s.flatten() for s in total.sums]).norm() <= 5 * 0.1 + 1e-6)
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final, NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from velocity.errors import ConfigurationError, ValidationError

__all__ = [
    "CHUNK_BYTES",
    "MAX_CHUNK",
    "ClippedSum",
    "PerExample",
    "add_gaussian_noise",
    "check_per_example_model",
    "chunk_size_for",
    "clipped_gradient_sum",
    "per_example_gradients",
    "poisson_mask",
]

LossFn = Callable[[Tensor, Tensor], Tensor]

MAX_CHUNK: Final = 256
"""Most examples per ``vmap`` call."""

CHUNK_BYTES: Final = 512 * 2**20
"""Memory budget of one chunk's float32 per-example gradients (512 MiB)."""

CLIP_EPS: Final = 1e-6
"""Added to the gradient norm in the clipping factor ``min(1, C / (‖g‖ + eps))``."""


class PerExample(NamedTuple):
    """Per-example gradients of a batch of ``B`` examples.

    ``grads[name]`` is ``(B, *param.shape)``; ``losses`` is ``(B,)``, each example's loss;
    ``outputs`` is ``(B, ...)``, each example's model output (detached).
    """

    grads: dict[str, Tensor]
    losses: Tensor
    outputs: Tensor


class ClippedSum(NamedTuple):
    """``Σ_i clip_C(g_i)`` over a batch, with what the metrics need.

    ``sums`` has one tensor per parameter, in the order of ``params``; ``num_clipped`` is a
    0-d int64 tensor (examples whose gradient norm exceeded ``C``); ``losses`` ``(B,)`` and
    ``outputs`` ``(B, ...)`` as in :class:`PerExample`.
    """

    sums: list[Tensor]
    num_clipped: Tensor
    losses: Tensor
    outputs: Tensor


def check_per_example_model(model: nn.Module) -> None:
    """Refuse a model whose per-example gradients :mod:`torch.func` cannot take.

    Batch normalisation in training mode normalises each example with statistics of the
    whole batch: the examples' losses are then not separable, a per-example gradient has no
    meaning (and DP-SGD forbids batch statistics, which leak across examples), and
    ``vmap`` over one example at a time would update the running statistics in place,
    which it refuses. Use ``GroupNorm`` or ``LayerNorm`` instead.

    Raises
    ------
    ConfigurationError
        Naming the model class and the offending layer.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ConfigurationError(
                f"DP-SGD cannot train {type(model).__name__}: its layer {name!r} "
                f"({type(module).__name__}) normalises with batch statistics, which mix the "
                "examples, so per-example gradients are undefined and the statistics leak "
                "across examples; replace it with GroupNorm or LayerNorm"
            )


def chunk_size_for(num_params: int) -> int:
    """Examples per ``vmap`` call: at most :data:`MAX_CHUNK`, and few enough that the
    chunk's float32 per-example gradients fit in :data:`CHUNK_BYTES` (at least 1).

    >>> chunk_size_for(7_850), chunk_size_for(1_663_370)
    (256, 80)
    """
    return max(1, min(MAX_CHUNK, CHUNK_BYTES // (4 * max(1, num_params))))


def per_example_gradients(
    model: nn.Module,
    params: Mapping[str, Tensor],
    frozen: Mapping[str, Tensor],
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
) -> PerExample:
    """Gradient of ``loss_fn(model(x_i), y_i)`` with respect to ``params``, for every ``i``.

    One ``vmap(grad(·))`` over a :func:`torch.func.functional_call` of ``model`` on a
    single example (batch of one), so ``loss_fn`` sees ``(1, ...)`` outputs and targets,
    as a batch-mean loss such as :func:`torch.nn.functional.cross_entropy` expects.

    Parameters
    ----------
    model : torch.nn.Module
        The architecture; its own parameters are not read or changed.
    params : mapping of str to Tensor
        The parameters to differentiate, by ``named_parameters`` name (detached tensors).
    frozen : mapping of str to Tensor
        Everything else ``functional_call`` needs: buffers, parameters not trained.
    loss_fn : callable
        ``loss_fn(output, target)``, the batch-mean loss.
    x, y : Tensor
        A batch of ``B >= 1`` inputs ``(B, ...)`` and targets ``(B, ...)``.

    Returns
    -------
    PerExample
        ``grads[name]`` of shape ``(B, *params[name].shape)``, the losses and outputs.

    Notes
    -----
    Dropout draws a different mask per example (``randomness="different"``), from PyTorch's
    global generator as in the plain training loop.
    """
    if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
        raise ValidationError(
            "per_example_gradients needs a batch of B >= 1 inputs and as many targets; "
            f"got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )

    def example_loss(
        p: dict[str, Tensor], x1: Tensor, y1: Tensor
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        output = functional_call(model, (p, dict(frozen)), (x1.unsqueeze(0),))
        loss = loss_fn(output, y1.unsqueeze(0))
        return loss, (loss.detach(), output.squeeze(0).detach())

    batched = vmap(grad(example_loss, has_aux=True), in_dims=(None, 0, 0), randomness="different")
    grads, (losses, outputs) = batched(dict(params), x, y)
    return PerExample(grads, losses, outputs)


def clipped_gradient_sum(
    model: nn.Module,
    params: Mapping[str, Tensor],
    frozen: Mapping[str, Tensor],
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    *,
    clip: float,
    chunk_size: int | None = None,
) -> ClippedSum:
    """``Σ_i g_i · min(1, C / (‖g_i‖ + 1e-6))`` over the batch, ``g_i`` each example's
    gradient with respect to all of ``params`` together (Abadi et al. 2016, Alg. 1).

    The batch is processed ``chunk_size`` examples at a time (default
    :func:`chunk_size_for` the number of parameters), so memory holds one chunk's
    per-example gradients. A batch of ``B = 0`` gives zero sums.

    Parameters
    ----------
    model, params, frozen, loss_fn, x, y
        As in :func:`per_example_gradients`, with ``B >= 0``.
    clip : float
        The clipping norm ``C`` (> 0).
    chunk_size : int, optional
        Examples per ``vmap`` call (>= 1).
    """
    if not clip > 0:
        raise ValidationError(f"clipped_gradient_sum needs clip > 0; got {clip!r}")
    names = list(params)
    num_params = sum(t.numel() for t in params.values())
    chunk = chunk_size_for(num_params) if chunk_size is None else chunk_size
    if chunk < 1:
        raise ValidationError(f"clipped_gradient_sum needs chunk_size >= 1; got {chunk}")
    sums = [torch.zeros_like(params[name]) for name in names]
    num_clipped = torch.zeros((), dtype=torch.int64, device=x.device)
    losses: list[Tensor] = []
    outputs: list[Tensor] = []
    for start in range(0, x.shape[0], chunk):
        part = per_example_gradients(
            model, params, frozen, loss_fn, x[start : start + chunk], y[start : start + chunk]
        )
        grads = [part.grads[name] for name in names]
        norms = torch.linalg.vector_norm(
            torch.stack(
                [torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1) for g in grads], dim=1
            ),
            dim=1,
        )
        factors = (clip / (norms + CLIP_EPS)).clamp(max=1.0)
        for total, g in zip(sums, grads, strict=True):
            total.add_(torch.tensordot(factors, g, dims=1))
        num_clipped += (norms > clip).sum()
        losses.append(part.losses)
        outputs.append(part.outputs)
    if not losses:
        return ClippedSum(sums, num_clipped, x.new_zeros(0), x.new_zeros(0))
    return ClippedSum(sums, num_clipped, torch.cat(losses), torch.cat(outputs))


def add_gaussian_noise(sums: Sequence[Tensor], std: float, generator: torch.Generator) -> None:
    """Add ``N(0, std²)`` to every coordinate of ``sums``, in place, drawn from ``generator``.

    One ``torch.randn`` of all the coordinates, in the order of ``sums``, on the
    generator's device (so the draw does not depend on where the model lives); moved to
    the tensors' device. Nothing is drawn when ``std == 0``.
    """
    if std == 0 or not sums:
        return
    total = sum(t.numel() for t in sums)
    noise = torch.randn(total, generator=generator, device=generator.device)
    noise = noise.to(sums[0].device)
    pieces = torch.split(noise, [t.numel() for t in sums])
    shaped = [piece.view_as(t) for piece, t in zip(pieces, sums, strict=True)]
    torch._foreach_add_(list(sums), shaped, alpha=std)


def poisson_mask(n: int, q: float, generator: torch.Generator) -> Tensor:
    """``(n,)`` bool: example ``i`` is in the batch independently with probability ``q``.

    ``torch.rand(n) < q`` on the generator's device; ``q >= 1`` takes every example.

    >>> mask = poisson_mask(10_000, 0.25, torch.Generator().manual_seed(0))
    >>> mask.shape, 0.23 < mask.float().mean().item() < 0.27
    (torch.Size([10000]), True)
    """
    return torch.rand(n, generator=generator, device=generator.device) < q
