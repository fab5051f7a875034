"""What travels between the round engine and the clients: tasks out, updates or failures back.

- :class:`ClientTask`: the engine asks one client to train — client id, model version, the
  global parameters (or, for remote clients, a handle that the provider resolves), and a
  per-client :class:`TaskConfig`.
- :class:`ClientUpdate`: the ONE update type on every path (in-process, loopback bytes,
  network): client id, the model version it was trained from, sample count, the flat delta
  row (or an encoded payload that a server stage decodes), loss, metrics and a SHA-256
  digest that the engine verifies.
- :class:`ClientFailure`: a client that did not deliver — ``dropped``, ``timed_out``,
  ``rejected`` (bad digest, shape, version, duplicate) or ``error``.

:func:`admit` is the one admission check, shared by the round engine and the
``velocity._core.Orchestrator`` facade.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, get_args

import numpy as np
import torch
from torch import Tensor

from velocity.errors import ValidationError
from velocity.types._params import (
    _EMPTY,
    _check_count,
    _frozen_mapping,
    _optional_float,
    tensor_digest,
)

__all__ = [
    "FAILURE_REASONS",
    "ClientFailure",
    "ClientTask",
    "ClientUpdate",
    "FailureReason",
    "TaskConfig",
    "admit",
]

MAX_SAMPLES: Final = 2**53
"""Largest sample count an update may claim (exact as the float64 weight it becomes)."""

FailureReason = Literal["dropped", "timed_out", "rejected", "stale", "error"]
FAILURE_REASONS: Final[tuple[str, ...]] = get_args(FailureReason)
"""``dropped`` (never answered: offline, crashed), ``timed_out`` (missed the deadline),
``rejected`` (the engine refused the update: digest, shape, version, duplicate) and ``error``
(the client reported a failure)."""


# ---------------------------------------------------------------------- TaskConfig


@dataclass(frozen=True)
class TaskConfig:
    """Per-client training settings a task carries; ``None`` means "the client's default".

    Parameters
    ----------
    lr : float, optional
        Local learning rate.
    local_epochs, local_steps : int, optional
        Local budget (``local_steps`` wins when both are set, as in ``TrainConfig``).
    prox_mu : float, optional
        FedProx's proximal strength ``mu`` (``0`` disables it).
    options : mapping
        Further JSON settings for client stages (DP, codecs): ``{"dp": {...}, "codec": {...}}``.

    Examples
    --------
    >>> TaskConfig(prox_mu=0.1).to_dict()["prox_mu"]
    0.1
    >>> TaskConfig.from_dict(TaskConfig(lr=1, options={"dp": {"clip": 1.0}}).to_dict())
    TaskConfig(lr=1.0, local_epochs=None, local_steps=None, prox_mu=None, options={'dp': {'clip': 1.0}})
    """  # noqa: E501

    lr: float | None = None
    local_epochs: int | None = None
    local_steps: int | None = None
    prox_mu: float | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        owner = "TaskConfig"
        for name in ("lr", "prox_mu"):
            value = _optional_float(owner, name, getattr(self, name))
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ValidationError(f"{owner}.{name} must be None or a finite float >= 0")
            object.__setattr__(self, name, value)
        for name in ("local_epochs", "local_steps"):
            value = getattr(self, name)
            if value is not None:
                number = _check_count(owner, name, value)
                if number < 1:
                    raise ValidationError(f"{owner}.{name} must be None or an int >= 1")
                object.__setattr__(self, name, number)
        object.__setattr__(self, "options", _frozen_mapping(owner, "options", self.options))

    def __repr__(self) -> str:
        return (
            f"TaskConfig(lr={self.lr}, local_epochs={self.local_epochs}, local_steps="
            f"{self.local_steps}, prox_mu={self.prox_mu}, options={dict(self.options)})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "local_epochs": self.local_epochs,
            "local_steps": self.local_steps,
            "prox_mu": self.prox_mu,
            "options": dict(self.options),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationError(f"TaskConfig: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


# ---------------------------------------------------------------------- ClientTask


@dataclass(frozen=True, eq=False)
class ClientTask:
    """One client's assignment for one round (or one server version, asynchronously).

    Parameters
    ----------
    client_id : str
        Who trains.
    round : int
        The round the update is for (``>= 1``).
    version : int
        The global model version ``params`` are (the number of server steps taken so far).
    params : Tensor
        The flat ``(d,)`` float32 global parameters. Read-only for the client.
    config : TaskConfig
        Per-client settings.
    dispatched_at : float
        Clock time (seconds; virtual in simulation) when the task was sent.
    timeout_s : float, optional
        Seconds after ``dispatched_at`` the engine waits for this update (``None``: no limit);
        :attr:`deadline` is the clock time it ends.
    out : Tensor, optional
        A ``(d,)`` row of the round's preallocated stack that an in-process client may write
        its delta into (no copy). Never sent over a wire.
    """

    client_id: str
    round: int
    version: int
    params: Tensor
    config: TaskConfig = field(default_factory=TaskConfig)
    dispatched_at: float = 0.0
    timeout_s: float | None = None
    out: Tensor | None = None

    @property
    def deadline(self) -> float | None:
        """``dispatched_at + timeout_s`` (``None`` without a timeout)."""
        return None if self.timeout_s is None else self.dispatched_at + self.timeout_s

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, str) or not self.client_id:
            raise ValidationError(
                f"ClientTask.client_id must be a non-empty str; got {self.client_id!r}"
            )
        who = f"ClientTask({self.client_id!r})"
        if _check_count(who, "round", self.round) < 1:
            raise ValidationError(f"{who}.round must be an int >= 1; got {self.round}")
        _check_count(who, "version", self.version)
        dispatched = _optional_float(who, "dispatched_at", self.dispatched_at)
        if dispatched is None or not math.isfinite(dispatched):
            raise ValidationError(f"{who}.dispatched_at must be a finite float")
        timeout = _optional_float(who, "timeout_s", self.timeout_s)
        if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
            raise ValidationError(
                f"{who}.timeout_s must be None or a finite float > 0; got {self.timeout_s!r}"
            )
        if not isinstance(self.params, Tensor) or self.params.ndim != 1:
            raise ValidationError(f"{who}.params must be a 1-D tensor")
        if self.out is not None and self.out.shape != self.params.shape:
            raise ValidationError(
                f"{who}.out must have the shape of params {tuple(self.params.shape)}; "
                f"got {tuple(self.out.shape)}"
            )


# ---------------------------------------------------------------------- ClientUpdate


@dataclass(frozen=True, eq=False)
class ClientUpdate:
    """One client's contribution to one round: the one update type on every path.

    Parameters
    ----------
    client_id : str
        Who sent it.
    num_samples : int
        Local training examples behind the update (>= 0); the FedAvg weight.
    delta : Tensor, optional
        The flat ``(d,)`` floating update, ``new_params - global_params``
        (see :meth:`ParamSpec.flatten`). A numpy array is converted to a tensor. ``None``
        only when ``payload`` carries the encoded update instead.
    round : int
        The round this update is submitted to; ``0`` means "not stamped".
    loss : float, optional
        The client's reported training loss.
    metrics : mapping of str to float
        Other client-side measurements; stored read-only.
    staleness : int
        How many versions behind the current global model the update was computed
        (asynchronous FL); ``0`` for synchronous rounds.
    digest : str, optional
        SHA-256 (hex) of the delta, see :meth:`compute_digest`. The engine rejects an update
        whose digest does not match, and one without a digest.
    base_version : int
        The global model version the client trained from (:attr:`ClientTask.version`).
    payload : bytes, optional
        The encoded update (``encoding`` names the format) when ``delta`` is ``None``; the
        engine's admission step decodes it, with checked shapes, before aggregation.
    encoding : str, optional
        Format of ``payload``: ``"velocity-frame"`` (JSON header + safetensors, see
        :func:`velocity.types.encode_delta`) is the one the engine decodes.
    arrived_at : float
        Clock time the update reached the server (virtual in simulation).

    Notes
    -----
    Instances compare by identity (the delta is a tensor, whose ``==`` is elementwise).

    Examples
    --------
    >>> u = ClientUpdate("c1", 10, torch.tensor([0.5, -1.0])).with_digest()
    >>> u.verify_digest()
    True
    """

    client_id: str
    num_samples: int
    delta: Tensor | None
    round: int = 0
    loss: float | None = None
    metrics: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    staleness: int = 0
    digest: str | None = None
    base_version: int = 0
    payload: bytes | None = None
    encoding: str | None = None
    arrived_at: float = 0.0

    def __post_init__(self) -> None:
        owner = "ClientUpdate"
        if not isinstance(self.client_id, str) or not self.client_id:
            raise ValidationError(
                f"{owner}.client_id must be a non-empty str; got {self.client_id!r}"
            )
        who = f"ClientUpdate({self.client_id!r})"
        samples = _check_count(who, "num_samples", self.num_samples)
        if samples > MAX_SAMPLES:
            raise ValidationError(f"{who}.num_samples must be <= 2**53; got {samples}")
        object.__setattr__(self, "num_samples", samples)
        object.__setattr__(self, "round", _check_count(who, "round", self.round))
        object.__setattr__(self, "staleness", _check_count(who, "staleness", self.staleness))
        object.__setattr__(
            self, "base_version", _check_count(who, "base_version", self.base_version)
        )
        object.__setattr__(self, "loss", _optional_float(who, "loss", self.loss))
        arrived = _optional_float(who, "arrived_at", self.arrived_at)
        object.__setattr__(self, "arrived_at", 0.0 if arrived is None else arrived)
        delta: object = self.delta
        if isinstance(delta, np.ndarray):
            delta = torch.from_numpy(delta)
        if delta is None:
            if not isinstance(self.payload, bytes) or not isinstance(self.encoding, str):
                raise ValidationError(
                    f"{who}.delta must be a torch.Tensor (or None with a bytes payload and "
                    "its encoding); got None"
                )
        elif not isinstance(delta, Tensor):
            raise ValidationError(f"{who}.delta must be a torch.Tensor; got {type(delta).__name__}")
        elif delta.dim() != 1 or not delta.is_floating_point():
            raise ValidationError(
                f"{who}.delta must be a 1-D floating tensor; "
                f"got {delta.dtype} of shape {tuple(delta.shape)}"
            )
        elif self.payload is not None:
            raise ValidationError(f"{who}: give delta or payload, not both")
        object.__setattr__(self, "delta", delta)
        if not isinstance(self.metrics, Mapping):
            raise ValidationError(f"{who}.metrics must be a mapping; got {self.metrics!r}")
        metrics: dict[str, float] = {}
        for key, value in self.metrics.items():
            number = _optional_float(who, f"metrics[{key!r}]", value)
            if number is None:
                raise ValidationError(f"{who}.metrics[{key!r}] must be a float; got None")
            metrics[str(key)] = number
        object.__setattr__(self, "metrics", MappingProxyType(metrics))
        if self.digest is not None and not isinstance(self.digest, str):
            raise ValidationError(f"{who}.digest must be a hex str or None; got {self.digest!r}")

    @property
    def d(self) -> int:
        """Length of the delta (``0`` while it is still an encoded payload)."""
        return 0 if self.delta is None else int(self.delta.shape[0])

    def compute_digest(self) -> str:
        """SHA-256 (hex) of the delta as little-endian float32 bytes.

        Examples
        --------
        >>> ClientUpdate("c", 1, torch.zeros(1)).compute_digest()[:16]
        'df3f619804a92fdb'
        """
        if self.delta is None:
            raise ValidationError(
                f"ClientUpdate({self.client_id!r}): the delta is still encoded; decode it first"
            )
        return tensor_digest(self.delta)

    def verify_digest(self) -> bool:
        """Whether :attr:`digest` is present and matches the delta (False if absent)."""
        return self.digest is not None and self.digest.lower() == self.compute_digest()

    def with_digest(self) -> ClientUpdate:
        """A copy with :attr:`digest` set to :meth:`compute_digest`."""
        return dataclasses.replace(self, digest=self.compute_digest())


# ---------------------------------------------------------------------- ClientFailure


@dataclass(frozen=True)
class ClientFailure:
    """A client that did not contribute to a round, and why.

    Examples
    --------
    >>> ClientFailure("client-3", "timed_out", round=2).to_dict()["reason"]
    'timed_out'
    """

    client_id: str
    reason: FailureReason
    message: str = ""
    round: int = 0
    arrived_at: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, str) or not self.client_id:
            raise ValidationError(
                f"ClientFailure.client_id must be a non-empty str; got {self.client_id!r}"
            )
        if self.reason not in FAILURE_REASONS:
            raise ValidationError(
                f"ClientFailure.reason must be one of {', '.join(FAILURE_REASONS)}; "
                f"got {self.reason!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "reason": self.reason,
            "message": self.message,
            "round": self.round,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClientFailure:
        return cls(
            client_id=str(data["client_id"]),
            reason=data["reason"],
            message=str(data.get("message", "")),
            round=int(data.get("round", 0)),
        )


# ---------------------------------------------------------------------- admission


def admit(
    update: object,
    *,
    round_: int,
    d: int,
    seen: set[str],
    task: ClientTask | None = None,
    require_digest: bool = True,
) -> ClientFailure | None:
    """The one admission check: ``None`` if ``update`` may be aggregated, else why not.

    An update is rejected when it comes twice from one client (``seen`` collects the ids
    admitted so far and is updated), is still encoded, has the wrong length, answers no
    outstanding ``task`` (when the caller tracks tasks: another round or another base
    version than the task's), is stamped for another round than ``round_`` (without a task),
    reports an ``initial_loss`` metric that is not a finite number ``>= 0``, or carries no
    digest (unless ``require_digest`` is false) or one that does not match its delta.
    Anything that is not a :class:`ClientUpdate` raises ``ValidationError``.
    """
    if not isinstance(update, ClientUpdate):
        raise ValidationError(
            f"round {round_}: an update must be a ClientUpdate; got {type(update).__name__}"
        )
    who = update.client_id

    def reject(message: str) -> ClientFailure:
        return ClientFailure(who, "rejected", message, round=round_, arrived_at=update.arrived_at)

    if who in seen:
        return reject("sent more than one update this round")
    if update.delta is None:
        return reject(f"payload ({update.encoding}) was not decoded")
    if update.d != d:
        return reject(f"update has d={update.d}; the global model has d={d}")
    if task is not None:
        if update.round not in (0, task.round) or update.base_version != task.version:
            return reject(
                f"update (round {update.round}, version {update.base_version}) does not answer "
                f"its task (round {task.round}, version {task.version})"
            )
    elif update.round not in (0, round_):
        return reject(f"update is for round {update.round}, not {round_}")
    loss = update.metrics.get("initial_loss")
    if loss is not None and not (
        isinstance(loss, int | float)
        and not isinstance(loss, bool)
        and math.isfinite(loss)
        and loss >= 0
    ):
        # Loss-weighted rules (QFedAvg) read it: one bad value must cost only its sender.
        return reject(f"initial_loss must be a finite number >= 0; got {loss!r}")
    if update.digest is None:
        if require_digest:
            return reject("update carries no digest")
        seen.add(who)
        return None
    computed = update.compute_digest()
    if update.digest.lower() != computed:
        return reject(
            f"digest mismatch (claimed {update.digest[:16]}..., computed {computed[:16]}...)"
        )
    seen.add(who)
    return None
