"""The seed's native module surface, in Python over PyTorch's native tensor kernels.

The VelocityFL seed compiles ``velocity._core`` from Rust so that aggregation stays on the
hot path. Here the hot path is :mod:`velocity.kernels` — vectorized PyTorch on one stacked
``(n, d)`` tensor, running on CPU or CUDA — and this module is the thin facade the seed
describes:

=========================  ==================================================================
``Orchestrator``           owns per-experiment round state: takes a round's client
                           updates, returns a ``RoundSummary``
``ClientUpdate``           the seed's update: ``num_samples`` and trained ``weights``
``RoundSummary``           the seed's round result (a view of ``velocity.types.RoundResult``)
``Strategy``               strategy factory: ``Strategy.fed_avg()``, ``Strategy.krum(f)``, ...
``aggregate``              standalone aggregation — numpy, torch or lists in, same kind out
``apply_gaussian_noise``   standalone noise kernel — numpy or torch in, same kind out
every kernel               re-exported from :mod:`velocity.kernels` (``mean``, ``krum``, ...)
=========================  ==================================================================

Not a stable API: prefer ``velocity.VelocityServer`` and the strategy dataclasses of
:mod:`velocity.strategies`. This module sits above the kernels and strategies (it wraps
them); nothing in those layers imports it.

Examples
--------
>>> import numpy as np
>>> aggregate(np.array([[1.0, 2.0], [3.0, 4.0]]), Strategy.fed_avg(), weights=[1, 3])
array([2.5, 3.5])
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, overload

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from velocity.errors import ConfigurationError, ProtocolError, ValidationError
from velocity.kernels import (
    AGGREGATORS,
    PRE_AGGREGATORS,
    SERVER_OPTIMIZERS,
    arc,
    bucketing,
    bulyan,
    caf,
    centered_clipping,
    cge,
    clip,
    fedadagrad,
    fedadam,
    fedavgm,
    fedyogi,
    geometric_median,
    krum,
    krum_scores,
    mda,
    meamed,
    mean,
    median,
    monna,
    multi_krum,
    nnm,
    nonfinite_rows,
    pairwise_sq_distances,
    qfedavg,
    server_sgd,
    smea,
    trimmed_mean,
)
from velocity.kernels import apply_gaussian_noise as _noise_kernel
from velocity.strategies import (
    AggregationResult,
    FedAvg,
    FedMedian,
    FedProx,
    Krum,
    MultiKrum,
    RoundBatch,
    TrimmedMean,
    parse_strategy,
    run_server_stages,
    server_chain,
)
from velocity.strategies import Strategy as StrategySpec
from velocity.types import ClientUpdate as EngineUpdate
from velocity.types import ParamSpec, RoundResult, StageContext, StageState, admit
from velocity.types._params import _check_count, _frozen_mapping, _json_value, _optional_float

__all__ = [
    "AGGREGATORS",
    "PRE_AGGREGATORS",
    "SERVER_OPTIMIZERS",
    "ClientUpdate",
    "Orchestrator",
    "RoundSummary",
    "Strategy",
    "StrategyLike",
    "aggregate",
    "apply_gaussian_noise",
    "arc",
    "bucketing",
    "bulyan",
    "caf",
    "centered_clipping",
    "cge",
    "clip",
    "fedadagrad",
    "fedadam",
    "fedavgm",
    "fedyogi",
    "geometric_median",
    "krum",
    "krum_scores",
    "mda",
    "meamed",
    "mean",
    "median",
    "monna",
    "multi_krum",
    "nnm",
    "nonfinite_rows",
    "pairwise_sq_distances",
    "qfedavg",
    "server_sgd",
    "smea",
    "trimmed_mean",
]


# ---------------------------------------------------------------------- Strategy


@dataclass(frozen=True)
class Strategy:
    """The seed's strategy factory: a frozen wrapper around one strategy dataclass.

    ``Strategy.krum(2).spec == Krum(f=2)``. Anything that takes a strategy here also takes
    the dataclass itself, its name, or its dict form.

    Parameters
    ----------
    spec : Aggregator or Pipeline
        The wrapped strategy (see :mod:`velocity.strategies`).

    Examples
    --------
    >>> Strategy.multi_krum(1)
    Strategy(MultiKrum(f=1, m=None, neighbors='n-f-2'))
    >>> Strategy.from_spec({"type": "Krum", "f": 2}) == Strategy.krum(2)
    True
    """

    spec: StrategySpec

    def __post_init__(self) -> None:
        if isinstance(self.spec, Strategy):
            object.__setattr__(self, "spec", self.spec.spec)
        elif not isinstance(self.spec, StrategySpec):
            raise ConfigurationError(
                "Strategy wraps an aggregator or a Pipeline from velocity.strategies; got "
                f"{self.spec!r} ({type(self.spec).__name__}); use Strategy.from_spec for names "
                "and dicts"
            )

    def __repr__(self) -> str:
        return f"Strategy({self.spec!r})"

    @property
    def name(self) -> str:
        """Class name of the wrapped strategy (``"FedAvg"``, ``"Pipeline"``, ...)."""
        return type(self.spec).__name__

    @classmethod
    def fed_avg(cls) -> Strategy:
        """Weighted mean, :class:`~velocity.strategies.FedAvg`."""
        return cls(FedAvg())

    @classmethod
    def fed_prox(cls, mu: float = 0.01) -> Strategy:
        """:class:`~velocity.strategies.FedProx` (server side: weighted mean)."""
        return cls(FedProx(mu=mu))

    @classmethod
    def fed_median(cls) -> Strategy:
        """Coordinate-wise median, :class:`~velocity.strategies.FedMedian`."""
        return cls(FedMedian())

    @classmethod
    def trimmed_mean(cls, k: int) -> Strategy:
        """Coordinate-wise trimmed mean, :class:`~velocity.strategies.TrimmedMean`."""
        return cls(TrimmedMean(k=k))

    @classmethod
    def krum(cls, f: int) -> Strategy:
        """:class:`~velocity.strategies.Krum` tolerating ``f`` Byzantine clients."""
        return cls(Krum(f=f))

    @classmethod
    def multi_krum(cls, f: int, m: int | None = None) -> Strategy:
        """:class:`~velocity.strategies.MultiKrum`; ``m=None`` averages ``n - f`` rows."""
        return cls(MultiKrum(f=f, m=m))

    @classmethod
    def from_spec(cls, spec: StrategyLike) -> Strategy:
        """Wrap a strategy given as a ``Strategy``, a dataclass, a name, a dict or a list.

        Names, dicts and lists go through :func:`velocity.strategies.parse_strategy`
        (``ConfigurationError`` on anything unknown).
        """
        if isinstance(spec, Strategy):
            return spec
        return cls(parse_strategy(spec))

    def aggregate(
        self,
        updates: Tensor,
        weights: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> AggregationResult:
        """Run the wrapped strategy on ``updates (n, d)``: ``(update (d,), metrics)``."""
        return self.spec.aggregate(updates, weights, generator=generator)


StrategyLike: TypeAlias = Strategy | StrategySpec | str | Mapping[str, Any] | Sequence[Any]
"""Everything accepted where a strategy is expected."""


def _resolve_strategy(strategy: StrategyLike) -> StrategySpec:
    if isinstance(strategy, Strategy):
        return strategy.spec
    return parse_strategy(strategy)


# ---------------------------------------------------------------------- aggregate


def _as_rows(updates: object) -> tuple[Tensor, str, np.dtype[Any] | None]:
    """``updates`` as an ``(n, d)`` tensor, plus its kind (torch/numpy/list) and numpy dtype."""
    if isinstance(updates, Tensor):
        return updates, "torch", None
    if isinstance(updates, np.ndarray):
        return torch.as_tensor(updates), "numpy", updates.dtype
    if isinstance(updates, Sequence) and not isinstance(updates, str | bytes):
        if len(updates) == 0:
            raise ValidationError("aggregate needs at least one update row; got none")
        rows = list(updates)
        length: int | None = None
        for index, row in enumerate(rows):
            size = _row_length(row, index)
            if length is None:
                length = size
            elif size != length:
                raise ValidationError(
                    f"aggregate: update rows must have equal length; row {index} has "
                    f"{size} entries, row 0 has {length}"
                )
        first = rows[0]
        if isinstance(first, Tensor):
            if not all(isinstance(r, Tensor) for r in rows):
                raise ValidationError("aggregate: mix of torch tensors and other rows")
            return torch.stack(rows), "torch", None
        if isinstance(first, np.ndarray):
            stacked = np.stack([np.asarray(r) for r in rows])
            return torch.as_tensor(stacked), "numpy", stacked.dtype
        return torch.as_tensor(rows, dtype=torch.float64), "list", None
    raise ValidationError(
        "aggregate: updates must be an (n, d) torch tensor or numpy array, or a list of "
        f"equal-length rows; got {type(updates).__name__}"
    )


def _row_length(row: object, index: int) -> int:
    if isinstance(row, Tensor | np.ndarray):
        if row.ndim != 1:
            raise ValidationError(
                f"aggregate: row {index} must be 1-D; got shape {tuple(row.shape)}"
            )
        return int(row.shape[0])
    if isinstance(row, Sequence) and not isinstance(row, str | bytes):
        return len(row)
    raise ValidationError(
        f"aggregate: row {index} must be a 1-D tensor, array or list; got {type(row).__name__}"
    )


def _as_weights(weights: object, like: Tensor) -> Tensor | None:
    if weights is None:
        return None
    if isinstance(weights, Tensor):
        return weights.to(like.device)
    if isinstance(weights, np.ndarray | Sequence) and not isinstance(weights, str | bytes):
        return torch.as_tensor(np.asarray(weights, dtype=np.float64), device=like.device)
    raise ValidationError(
        "aggregate: weights must be a tensor, an array, a list of numbers or None; "
        f"got {type(weights).__name__}"
    )


@overload
def aggregate(
    updates: Tensor | Sequence[Tensor],
    strategy: StrategyLike,
    weights: Tensor | NDArray[Any] | Sequence[float] | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor: ...
@overload
def aggregate(
    updates: NDArray[Any] | Sequence[NDArray[Any]],
    strategy: StrategyLike,
    weights: Tensor | NDArray[Any] | Sequence[float] | None = None,
    *,
    generator: torch.Generator | None = None,
) -> NDArray[Any]: ...
@overload
def aggregate(
    updates: Sequence[Sequence[float]],
    strategy: StrategyLike,
    weights: Tensor | NDArray[Any] | Sequence[float] | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[float]: ...
def aggregate(
    updates: Tensor | NDArray[Any] | Sequence[Any],
    strategy: StrategyLike,
    weights: Tensor | NDArray[Any] | Sequence[float] | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor | NDArray[Any] | list[float]:
    """Aggregate stacked client updates with one strategy (the seed's standalone kernel).

    Parameters
    ----------
    updates : Tensor, ndarray, or list of rows
        ``(n, d)`` floating tensor or array, or ``n`` equal-length 1-D tensors, arrays or
        lists of numbers.
    strategy : Strategy, strategy dataclass, Pipeline, str or dict
        E.g. ``Strategy.krum(1)``, ``Krum(f=1)``, ``"FedMedian"``, ``{"type": "Krum", "f": 1}``.
    weights : (n,) tensor, array or list, optional
        Per-row weights (sample counts); only weighted rules use them.
    generator : torch.Generator, optional
        Randomness for rules that need it (``Bucketing``).

    Returns
    -------
    The ``(d,)`` aggregate, in the input's kind: a tensor (same dtype and device) for tensor
    input, an ndarray of the input dtype for numpy input, a list of floats for lists of
    numbers (computed in float64).

    Examples
    --------
    >>> import torch
    >>> aggregate(torch.tensor([[0.0, 1.0], [2.0, 3.0], [100.0, 100.0]]), "FedMedian")
    tensor([2., 3.])
    >>> aggregate([[0.0, 1.0], [2.0, 3.0]], {"type": "FedAvg"})
    [1.0, 2.0]
    """
    spec = _resolve_strategy(strategy)
    rows, kind, np_dtype = _as_rows(updates)
    result = spec.aggregate(rows, _as_weights(weights, rows), generator=generator).update
    if np_dtype is not None:
        return result.detach().cpu().numpy().astype(np_dtype, copy=False)
    if kind == "list":
        values: list[float] = result.tolist()
        return values
    return result


@overload
def apply_gaussian_noise(
    vector: Tensor, std: float, generator: torch.Generator | None = None
) -> Tensor: ...
@overload
def apply_gaussian_noise(
    vector: NDArray[Any], std: float, generator: torch.Generator | None = None
) -> NDArray[Any]: ...
def apply_gaussian_noise(
    vector: Tensor | NDArray[Any], std: float, generator: torch.Generator | None = None
) -> Tensor | NDArray[Any]:
    """``vector + N(0, std²)`` as a new tensor or array (the seed's standalone noise kernel).

    Torch input goes straight to :func:`velocity.kernels.apply_gaussian_noise`; a numpy
    array is converted, noised with the same draws, and returned as an array of its dtype.

    Examples
    --------
    >>> import numpy as np
    >>> g = torch.Generator().manual_seed(0)
    >>> apply_gaussian_noise(np.zeros(2, dtype=np.float32), 0.0, g)
    array([0., 0.], dtype=float32)
    """
    if isinstance(vector, np.ndarray):
        noised = _noise_kernel(torch.as_tensor(vector), std, generator)
        return noised.numpy().astype(vector.dtype, copy=False)
    return _noise_kernel(vector, std, generator)


# ---------------------------------------------------------------------- seed types


@dataclass(frozen=True, eq=False)
class ClientUpdate:
    """The seed's update struct: ``num_samples`` and the client's trained ``weights``.

    ``weights`` maps every parameter name to its values after local training (the seed's
    ``dict[str, list[float]]``); the :class:`Orchestrator` turns it into the engine's update
    (:class:`velocity.types.ClientUpdate`, delta ``= weights − global``). ``client_id``
    defaults to ``"client-<i>"`` by position in the round.

    >>> ClientUpdate(num_samples=3, weights={"w": [1.0, 2.0]}).num_samples
    3
    """

    num_samples: int
    weights: Mapping[str, Sequence[float]]
    client_id: str | None = None
    loss: float | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.num_samples, bool)
            or not isinstance(self.num_samples, int)
            or (self.num_samples < 0)
        ):
            raise ValidationError(
                f"ClientUpdate.num_samples must be an int >= 0; got {self.num_samples!r}"
            )
        if not isinstance(self.weights, Mapping):
            raise ValidationError(
                "ClientUpdate.weights must be a dict of parameter name to list of floats; "
                f"got {type(self.weights).__name__}"
            )

    def to_update(self, spec: ParamSpec, global_params: Tensor, index: int) -> EngineUpdate:
        """The engine's update: delta ``= weights − global_params`` in ``spec``'s layout."""
        who = self.client_id or f"client-{index}"
        weights = spec.from_lists(self.weights)
        return EngineUpdate(who, self.num_samples, weights - global_params, loss=self.loss)


@dataclass(frozen=True)
class RoundSummary:
    """The seed's round result: ``round``, ``num_clients``, ``global_loss``,
    ``attack_results`` (a JSON string) and ``selected_client_ids`` — a view of
    :class:`velocity.types.RoundResult` (:meth:`from_result`), plus the aggregation
    ``metrics``. ``global_loss`` is the round's loss as the caller knows it: the engine's
    evaluation loss (:meth:`from_result`), or for :meth:`Orchestrator.aggregate_round`,
    which evaluates nothing, the clients' sample-weighted reported loss.

    >>> s = RoundSummary(round=1, num_clients=2, global_loss=0.5, attack_results="[]",
    ...                  selected_client_ids=("a", "b"))
    >>> RoundSummary.from_dict(s.to_dict()) == s
    True
    """

    round: int
    num_clients: int
    global_loss: float | None = None
    attack_results: str = "[]"
    selected_client_ids: tuple[str, ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        owner = "RoundSummary"
        object.__setattr__(self, "round", _check_count(owner, "round", self.round))
        object.__setattr__(
            self, "num_clients", _check_count(owner, "num_clients", self.num_clients)
        )
        object.__setattr__(
            self, "global_loss", _optional_float(owner, "global_loss", self.global_loss)
        )
        if not isinstance(self.attack_results, str):
            raise ValidationError(
                "RoundSummary.attack_results is JSON text (the seed's form); got "
                f"{type(self.attack_results).__name__}"
            )
        try:
            parsed = json.loads(self.attack_results)
        except ValueError as exc:
            raise ValidationError(f"RoundSummary.attack_results is not JSON: {exc}") from None
        if not isinstance(parsed, list):
            raise ValidationError("RoundSummary.attack_results must be a JSON list")
        ids = self.selected_client_ids
        if isinstance(ids, str) or not all(isinstance(c, str) for c in ids):
            raise ValidationError(
                f"{owner}.selected_client_ids must be a sequence of str; got {ids!r}"
            )
        object.__setattr__(self, "selected_client_ids", tuple(ids))
        object.__setattr__(self, "metrics", _frozen_mapping(owner, "metrics", self.metrics))

    @property
    def attacks(self) -> list[dict[str, Any]]:
        """``attack_results`` decoded."""
        value: list[dict[str, Any]] = json.loads(self.attack_results)
        return value

    @classmethod
    def from_result(cls, result: RoundResult) -> RoundSummary:
        d = result.to_dict()
        return cls(
            round=result.round,
            num_clients=result.num_clients,
            global_loss=d["global_loss"],
            attack_results=json.dumps(d["attack_results"], sort_keys=True),
            selected_client_ids=tuple(result.selected_client_ids),
            metrics=d["aggregation"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "num_clients": self.num_clients,
            "global_loss": self.global_loss,
            "attack_results": self.attack_results,
            "selected_client_ids": list(self.selected_client_ids),
            "metrics": dict(self.metrics),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoundSummary:
        known = {"round", "num_clients", "global_loss", "attack_results", "selected_client_ids"}
        if not isinstance(data, Mapping):
            raise ValidationError(f"RoundSummary.from_dict needs a mapping; got {data!r}")
        unknown = sorted(set(data) - known - {"metrics"})
        if unknown:
            raise ValidationError(
                f"RoundSummary.from_dict: unknown keys {unknown}; known: {sorted(known)}"
            )
        missing = sorted({"round", "num_clients"} - set(data))
        if missing:
            raise ValidationError(f"RoundSummary.from_dict: missing keys {missing}")
        attacks = data.get("attack_results", "[]")
        if not isinstance(attacks, str):
            attacks = json.dumps(attacks, sort_keys=True)
        return cls(
            round=data["round"],
            num_clients=data["num_clients"],
            global_loss=data.get("global_loss"),
            attack_results=attacks,
            selected_client_ids=data.get("selected_client_ids", ()),
            metrics=data.get("metrics", {}),
        )


# ---------------------------------------------------------------------- Orchestrator


class Orchestrator:
    """Owns one experiment's round state (the seed's native orchestrator): the global
    parameters, the round counter, the server stages' state and the history.

    :meth:`aggregate_round` takes a round's updates — the seed's :class:`ClientUpdate`
    (trained weights) or the engine's :class:`velocity.types.ClientUpdate` (deltas) —,
    admits them with the engine's one admission check (length, duplicates, round stamp,
    digest when present), stacks them in ONE ``(n, d)`` float32 tensor, and runs the same
    server stages as the round engine (:class:`velocity.strategies.AggregateStage`, then
    :class:`velocity.strategies.ServerStepStage`): ``params + delta``, or the strategy's
    server optimizer. Client selection and training are the engine's
    (:class:`velocity.server.RoundEngine`); this class only turns updates into a model.

    Parameters
    ----------
    global_params : Tensor or dict of str to list of float
        The initial global model: a flat ``(d,)`` floating tensor (kept as float32), or the
        seed's ``{name: [floats]}`` form.
    strategy : Strategy, strategy dataclass, Pipeline, str or dict, optional
        How to aggregate; ``FedAvg()`` when omitted.
    spec : ParamSpec, optional
        Layout of the flat vector. Defaults to the dict's names and lengths, or one
        parameter named ``"params"`` for a tensor.
    seed : int
        Root of randomized rules' draws (``(seed, round, "aggregate")``).

    Examples
    --------
    >>> orch = Orchestrator({"w": [0.0, 0.0]}, Strategy.fed_avg())
    >>> summary = orch.aggregate_round([
    ...     ClientUpdate(num_samples=1, weights={"w": [1.0, 0.0]}, client_id="a"),
    ...     ClientUpdate(num_samples=3, weights={"w": [1.0, 4.0]}, client_id="b"),
    ... ])
    >>> summary.round, summary.selected_client_ids, orch.global_weights
    (1, ('a', 'b'), {'w': [1.0, 3.0]})
    """

    def __init__(
        self,
        global_params: Tensor | Mapping[str, Sequence[float]],
        strategy: StrategyLike | None = None,
        *,
        spec: ParamSpec | None = None,
        seed: int = 0,
    ) -> None:
        if isinstance(global_params, Tensor):
            if global_params.ndim != 1 or not global_params.is_floating_point():
                raise ValidationError(
                    "Orchestrator: global_params must be a 1-D floating tensor; got "
                    f"{global_params.dtype} of shape {tuple(global_params.shape)}"
                )
            params = global_params.detach().to(torch.float32, copy=True)
            if spec is None:
                spec = ParamSpec.from_sizes({"params": int(params.shape[0])})
        elif isinstance(global_params, Mapping):
            if spec is None:
                spec = ParamSpec.from_sizes({k: len(v) for k, v in global_params.items()})
            params = spec.from_lists(global_params)
        else:
            raise ValidationError(
                "Orchestrator: global_params must be a (d,) tensor or a dict of lists; got "
                f"{type(global_params).__name__}"
            )
        if spec.d != params.shape[0]:
            raise ValidationError(
                f"Orchestrator: spec has d={spec.d} but global_params has {params.shape[0]} entries"
            )
        self._spec = spec
        self._strategy = _resolve_strategy(FedAvg() if strategy is None else strategy)
        self._stages = server_chain(self._strategy)
        self._states: dict[str, StageState] = {s.name: s.init(spec) for s in self._stages}
        self._params = params
        self._round = 0
        self._seed = int(seed)
        self._history: list[RoundSummary] = []

    def __repr__(self) -> str:
        return f"Orchestrator(d={self.d}, strategy={self._strategy!r}, round={self._round})"

    # ------------------------------------------------------------------ state

    @property
    def strategy(self) -> StrategySpec:
        """The strategy dataclass (an aggregator or a :class:`Pipeline`)."""
        return self._strategy

    @property
    def spec(self) -> ParamSpec:
        """Layout of the flat parameter vector."""
        return self._spec

    @property
    def d(self) -> int:
        """Number of parameters."""
        return self._spec.d

    @property
    def round(self) -> int:
        """Number of completed rounds; the next summary has ``round + 1``."""
        return self._round

    @property
    def global_params(self) -> Tensor:
        """Current flat ``(d,)`` float32 global model (a new tensor every round)."""
        return self._params

    @property
    def global_weights(self) -> dict[str, list[float]]:
        """Current global model in the seed's ``{name: [floats]}`` form."""
        return self._spec.to_lists(self._params)

    @property
    def optimizer_state(self) -> Mapping[str, Tensor] | None:
        """The server optimizer's state (``None`` before its first step or without one)."""
        return self._states.get("server_step") or None

    @property
    def history(self) -> tuple[RoundSummary, ...]:
        """Every completed round's summary, oldest first."""
        return tuple(self._history)

    # ------------------------------------------------------------------ the round

    def aggregate_round(
        self,
        updates: Sequence[ClientUpdate | EngineUpdate],
        *,
        global_loss: float | None = None,
        attack_results: Sequence[Mapping[str, Any] | Any] = (),
    ) -> RoundSummary:
        """Aggregate one round of updates into the global model and record the summary.

        Parameters
        ----------
        updates : sequence of ClientUpdate
            At least one; the seed's :class:`ClientUpdate` or the engine's
            :class:`velocity.types.ClientUpdate` (distinct client ids; each delta of length
            ``d``; ``round`` either ``0`` (not stamped) or this round's number; a
            ``digest``, when present, must match the delta).
        global_loss : float, optional
            The round's loss for the summary; defaults to the sample-weighted mean of the
            clients' reported losses when every client reported one.
        attack_results : sequence of mappings or dataclasses
            Recorded (as JSON) in the summary.

        Raises
        ------
        ValidationError
            No updates, an update of another type, or a wrong ``d``.
        ProtocolError
            A wrong round number, a bad digest, or two updates from one client.

        Nothing changes when an error is raised.
        """
        items = list(updates)
        round_ = self._round + 1
        if not items:
            raise ValidationError(f"round {round_}: aggregate_round needs at least one update")
        engine_updates: list[EngineUpdate] = []
        for index, item in enumerate(items):
            if isinstance(item, ClientUpdate):
                engine_updates.append(item.to_update(self._spec, self._params, index))
            elif isinstance(item, EngineUpdate):
                engine_updates.append(item)
            else:
                raise ValidationError(
                    f"round {round_}: update {index} must be a ClientUpdate; "
                    f"got {type(item).__name__}"
                )
        seen: set[str] = set()
        for update in engine_updates:
            if update.d != self.d and update.delta is not None:
                raise ValidationError(
                    f"round {round_}: update from client {update.client_id!r} has "
                    f"d={update.d}; the global model has d={self.d}"
                )
            refused = admit(update, round_=round_, d=self.d, seen=seen, require_digest=False)
            if refused is not None:
                raise ProtocolError(
                    f"round {round_}: update from client {update.client_id!r}: {refused.message}"
                )
        rows = torch.empty((len(engine_updates), self.d), dtype=torch.float32)
        for index, update in enumerate(engine_updates):
            assert update.delta is not None
            rows[index].copy_(update.delta.detach())
        batch = RoundBatch(
            rows=rows,
            num_samples=[u.num_samples for u in engine_updates],
            client_ids=[u.client_id for u in engine_updates],
        )
        ctx = StageContext(self._seed, round_, self._round, self._spec, self._params)
        batch, states, metrics = run_server_stages(self._stages, batch, self._states, ctx)
        assert batch.params is not None
        summary = RoundSummary(
            round=round_,
            num_clients=len(engine_updates),
            global_loss=_round_loss(engine_updates) if global_loss is None else global_loss,
            attack_results=json.dumps(
                [_json_value(a) for a in attack_results], sort_keys=True, default=str
            ),
            selected_client_ids=tuple(batch.client_ids),
            metrics=dict(metrics["aggregate"]),
        )
        self._params = batch.params
        self._states.update(states)
        self._round = round_
        self._history.append(summary)
        return summary


def _round_loss(updates: Sequence[EngineUpdate]) -> float | None:
    """Sample-weighted mean of the reported losses (plain mean if no samples); None if any
    client did not report one."""
    losses = [update.loss for update in updates]
    if any(loss is None for loss in losses):
        return None
    values = [float(loss) for loss in losses if loss is not None]
    counts = [update.num_samples for update in updates]
    total = sum(counts)
    if total == 0:
        return math.fsum(values) / len(values)
    return math.fsum(loss * count for loss, count in zip(values, counts, strict=True)) / total
