"""Local-training settings and results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final, Literal, TypeAlias

from velocity._validation import Boolean, Integer, NoneOr, OneOf, Real, check_parameters
from velocity.errors import ConfigurationError

if TYPE_CHECKING:
    from torch import Tensor

    from velocity._validation import Constraint

__all__ = ["TrainConfig", "TrainResult"]

_Optimizer: TypeAlias = Literal["sgd", "adamw"]

_BETA: Final = Real(low=0, high=1, high_open=True)


@dataclass(frozen=True)
class TrainConfig:
    """How a client trains locally: minibatch SGD or AdamW, optionally with FedProx's
    proximal term and example-level DP-SGD.

    Settings are validated at construction; an ``int`` is accepted where a float is expected.

    Parameters
    ----------
    batch_size : int
        Minibatch size ``B`` (>= 1). The last batch of an epoch holds the remainder. A size
        at least the client's data size gives full-batch gradient descent (McMahan et al.
        2017's ``B = ∞``).
    local_epochs : int
        Passes ``E`` over the client's data (>= 1), each in a fresh random order.
    local_steps : int, optional
        If set (>= 1), exactly this many optimizer steps, cycling through as many epochs as
        needed; ``local_epochs`` is then ignored (DiLoCo's ``H`` inner steps).
    lr : float
        Learning rate (> 0).
    momentum : float
        Heavy-ball momentum in ``[0, 1)`` (:class:`torch.optim.SGD`; ``optimizer="sgd"``
        only). The momentum buffer is per-client and starts at zero every round unless
        ``keep_optimizer_state``.
    weight_decay : float
        ``>= 0``. With ``"sgd"``: the L2 penalty :class:`torch.optim.SGD` adds to the
        gradient. With ``"adamw"``: AdamW's decoupled decay ``w ← w − lr · weight_decay · w``
        (Loshchilov & Hutter 2019), applied apart from the adaptive step.
    optimizer : {"sgd", "adamw"}
        The local optimizer: :class:`torch.optim.SGD` (the default, McMahan et al. 2017's
        ClientUpdate) or :class:`torch.optim.AdamW` (DiLoCo's inner optimizer).
    beta1, beta2 : float
        AdamW's moment decay rates, in ``[0, 1)`` (PyTorch's defaults 0.9, 0.999); unused
        by ``"sgd"``.
    eps : float
        AdamW's denominator term (> 0, default 1e-8); unused by ``"sgd"``.
    keep_optimizer_state : bool
        Keep each client's optimizer state (AdamW's step count and moments, SGD's momentum
        buffer) from one round to the next, as DiLoCo's workers keep their inner optimizer
        (Douillard et al. 2023). The simulated clients store it in the engine's
        :class:`~velocity.types.ClientStateStore`, which is checkpointed; the
        :class:`Trainer` takes and returns it (``optimizer_state``). ``False`` (the default)
        starts every round from a fresh optimizer, as FedAvg does.
    prox_mu : float
        FedProx's ``mu`` (>= 0): the local objective becomes
        ``loss(w) + mu/2 · ‖w − w_global‖²`` (Li et al. 2020, "Federated Optimization in
        Heterogeneous Networks"). ``0`` is plain FedAvg local training.
    dp_clip : float, optional
        Example-level DP-SGD (Abadi et al. 2016, "Deep Learning with Differential
        Privacy"): the L2 norm ``C`` (> 0) each example's gradient is clipped to. ``None``
        (the default) trains without DP-SGD. When set, every step samples its batch by
        Poisson sampling with rate ``q = min(1, batch_size / n)`` and its gradient is
        ``(Σ_i clip_C(g_i) + N(0, (z·C)² I)) / (q·n)``; see :class:`Trainer`.
    dp_noise_multiplier : float
        DP-SGD's noise multiplier ``z`` (>= 0): the Gaussian noise added to the sum of the
        clipped gradients has standard deviation ``z·C`` per coordinate. ``0`` clips
        without noise (no privacy). A value > 0 needs ``dp_clip``.

    Notes
    -----
    DP-SGD combines with the other settings as post-processing of the private gradient:
    ``momentum`` and ``weight_decay`` act in :class:`torch.optim.SGD` on it (or AdamW's
    moments and decoupled decay, with ``optimizer="adamw"``: DP-Adam), and FedProx's
    proximal gradient ``mu · (w − w_global)``, which depends on no example, is added to
    it after the noise, unclipped. A kept optimizer state is a function of earlier private
    gradients, so it is post-processing too. The privacy of the update is that of the DP-SGD steps;
    computing ``(ε, δ)`` from ``q``, ``z`` and the number of steps is the accountant's job.

    Examples
    --------
    >>> config = TrainConfig(batch_size=10, local_epochs=5, lr=1)
    >>> config.lr, config.local_steps
    (1.0, None)
    >>> TrainConfig(lr=0)
    Traceback (most recent call last):
        ...
    velocity.errors.ConfigurationError: TrainConfig.lr must be a finite float > 0; got 0
    >>> TrainConfig(dp_clip=1, dp_noise_multiplier=1.1).dp_clip
    1.0
    >>> TrainConfig(dp_noise_multiplier=1.1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    velocity.errors.ConfigurationError: TrainConfig.dp_noise_multiplier > 0 needs dp_clip ...
    >>> TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.1).beta2
    0.999
    >>> TrainConfig(optimizer="adamw", momentum=0.9)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    velocity.errors.ConfigurationError: TrainConfig.momentum is SGD's; AdamW keeps its own ...
    """

    batch_size: int = 32
    local_epochs: int = 1
    local_steps: int | None = None
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    prox_mu: float = 0.0
    dp_clip: float | None = None
    dp_noise_multiplier: float = 0.0
    optimizer: _Optimizer = "sgd"
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    keep_optimizer_state: bool = False

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "batch_size": Integer(low=1),
        "local_epochs": Integer(low=1),
        "local_steps": NoneOr(Integer(low=1)),
        "lr": Real(low=0, low_open=True),
        "momentum": Real(low=0, high=1, high_open=True),
        "weight_decay": Real(low=0),
        "prox_mu": Real(low=0),
        "dp_clip": NoneOr(Real(low=0, low_open=True)),
        "dp_noise_multiplier": Real(low=0),
        "optimizer": OneOf("sgd", "adamw"),
        "beta1": _BETA,
        "beta2": _BETA,
        "eps": Real(low=0, low_open=True),
        "keep_optimizer_state": Boolean(),
    }

    def __post_init__(self) -> None:
        check_parameters(self)
        if self.dp_noise_multiplier > 0 and self.dp_clip is None:
            raise ConfigurationError(
                "TrainConfig.dp_noise_multiplier > 0 needs dp_clip (the clipping norm that "
                f"scales the noise); got dp_noise_multiplier={self.dp_noise_multiplier!r}, "
                "dp_clip=None"
            )
        if self.optimizer == "adamw" and self.momentum:
            raise ConfigurationError(
                "TrainConfig.momentum is SGD's; AdamW keeps its own first moment (beta1), so "
                f"set momentum=0 with optimizer='adamw'; got momentum={self.momentum!r}"
            )


@dataclass(frozen=True, eq=False)
class TrainResult:
    """What one client's local training produced.

    Parameters
    ----------
    delta : Tensor
        ``(d,)`` float32, ``new_params − global_params`` in :class:`~velocity.types.ParamSpec`
        layout. It *is* the ``out`` row when one was passed to :meth:`Trainer.train`.
    num_samples : int
        Examples held by the client (``len(indices)``): its FedAvg weight.
    loss : float
        Mean of the minibatch losses over the local steps, each taken before its step. This
        is the data loss; FedProx's proximal term is not included.
    metrics : mapping of str to float
        ``"steps"`` (optimizer steps taken), ``"samples_seen"`` and, for classification (logits
        ``(N, C)`` with integer targets ``(N,)``), ``"accuracy"``: the fraction of examples
        predicted correctly in the minibatches seen, before each step. With DP-SGD
        (``TrainConfig.dp_clip`` set) ``loss`` and ``"accuracy"`` are means over the
        examples seen (the Poisson batches vary in size; ``nan`` if no example was
        sampled), and ``"dp_steps"`` (DP-SGD steps) and ``"dp_clipped_fraction"`` (the
        fraction of the examples seen whose gradient norm exceeded ``C``) are added.
    optimizer_state : mapping of str to Tensor, optional
        With ``TrainConfig.keep_optimizer_state``: the optimizer's state after the last
        step, ``"<parameter name>.<state key>"`` to tensor (PyTorch's keys: AdamW's
        ``step``, ``exp_avg`` and ``exp_avg_sq``, SGD's ``momentum_buffer``; SGD without
        momentum keeps none), to hand to the next :meth:`Trainer.train` of the same client.
        ``None`` otherwise.
    """

    delta: Tensor
    num_samples: int
    loss: float
    metrics: Mapping[str, float]
    optimizer_state: Mapping[str, Tensor] | None = None
