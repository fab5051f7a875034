"""The data of the aumai-fedtrain surface: pydantic v2 models, validated and bounded.

:class:`TrainingConfig` (a run's settings, the ``train.json`` file), :class:`FederatedNode`
(a participant), :class:`LocalUpdate` (what a node sends back after its local steps),
:class:`GlobalState` (the coordinator's view after a round) and :class:`TrainingResult`
(the summary of :meth:`velocity.fedtrain.DiLoCoCoordinator.run_training`).

Every model refuses unknown keys (``extra="forbid"``), validates assignments, and takes
numbers strictly: an integer field does not take ``2.5``, ``"3"`` or ``true``; a float field
takes an integer but not a string or a boolean, and never NaN or infinity. Bad input raises
:class:`pydantic.ValidationError` naming the field (``gradients.weight.2``, ``learning_rate``).
Everything round-trips through JSON: ``Model.model_validate_json(json.dumps(m.model_dump(
mode="json")))`` equals ``m``.

Hostile input is bounded before it is converted: a gradient dictionary holds at most
:data:`MAX_GRADIENT_KEYS` keys (each at most :data:`MAX_NAME_LENGTH` characters) and
:data:`MAX_GRADIENT_VALUES` floats in all, counted on the raw lists before any value is
converted; node ids and model names are at most :data:`MAX_NAME_LENGTH` characters.

Examples
--------
>>> update = LocalUpdate(node_id="n0", round_id=1, gradients={"w": [0.5, 1]}, loss=0.25,
...                      samples_used=32)
>>> update.gradients
{'w': [0.5, 1.0]}
>>> LocalUpdate.model_validate_json(update.model_dump_json()) == update
True
>>> try:
...     TrainingConfig(model_name="m", learning_rate=0, batch_size=1, local_steps=1,
...                    global_rounds=1, num_nodes=1)
... except ValueError as error:  # pydantic.ValidationError is a ValueError
...     print(str(error).splitlines()[1])
learning_rate
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "MAX_GRADIENT_KEYS",
    "MAX_GRADIENT_VALUES",
    "MAX_NAME_LENGTH",
    "MAX_NODES",
    "MAX_SAMPLES",
    "FederatedNode",
    "GlobalState",
    "Gradients",
    "LocalUpdate",
    "NodeStatus",
    "TrainingConfig",
    "TrainingResult",
]

MAX_GRADIENT_VALUES: Final = 2**24
"""Most floats one gradient dictionary may hold, over all its keys (64 MiB as float32)."""

MAX_GRADIENT_KEYS: Final = 2**16
"""Most keys (parameter names) one gradient dictionary may hold."""

MAX_NAME_LENGTH: Final = 512
"""Longest parameter name, node id, address or model name, in characters."""

MAX_SAMPLES: Final = 2**53
"""Largest sample count an update may claim (exact as a float64, like the engine's)."""

MAX_NODES: Final = 2**16
"""Most node ids a :class:`GlobalState` may list, and most capability entries of a node."""

NodeStatus = Literal["idle", "training", "offline", "failed"]
"""What a node is doing: waiting for work, training, unreachable, or broken."""

_STRICT: Final = ConfigDict(extra="forbid", validate_assignment=True)

_Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
_Count = Annotated[int, Field(strict=True, ge=0)]
_Positive = Annotated[int, Field(strict=True, ge=1)]
_Name = Annotated[str, Field(strict=True, min_length=1, max_length=MAX_NAME_LENGTH)]


def _bounded_gradients(value: Any) -> Any:
    """Refuse an oversized gradient dictionary before pydantic converts a single value.

    Counting runs on the raw input (a mapping of sequences); anything else is left for the
    type validation that follows to refuse with its own message.
    """
    if not isinstance(value, Mapping):
        return value
    if len(value) > MAX_GRADIENT_KEYS:
        raise ValueError(
            f"holds {len(value)} keys; at most {MAX_GRADIENT_KEYS} are accepted (MAX_GRADIENT_KEYS)"
        )
    total = 0
    for key, values in value.items():
        if isinstance(key, str) and len(key) > MAX_NAME_LENGTH:
            raise ValueError(
                f"key {key[:32]!r}... is {len(key)} characters long; at most {MAX_NAME_LENGTH}"
            )
        if isinstance(values, Sequence) and not isinstance(values, str | bytes):
            total += len(values)
            if total > MAX_GRADIENT_VALUES:
                raise ValueError(
                    f"holds more than {MAX_GRADIENT_VALUES} values (at key {key!r}); that is "
                    "the most one update may hold (MAX_GRADIENT_VALUES)"
                )
    return value


Gradients = Annotated[
    dict[Annotated[str, Field(strict=True)], list[_Finite]],
    BeforeValidator(_bounded_gradients),
]
"""``dict[str, list[float]]``: finite floats under parameter names, bounded in size."""


class TrainingConfig(BaseModel):
    """A federated run's settings (the ``train.json`` file of ``velocity fedtrain run``).

    Attributes
    ----------
    model_name : str
        A label for the run (printed by the CLI).
    learning_rate : float
        The nodes' local (inner) learning rate, finite and ``> 0``.
    batch_size : int
        Samples per local step, ``>= 1``.
    local_steps : int
        Local steps a node takes before it sends its update, ``>= 1``.
    global_rounds : int
        Rounds (synchronisations with the coordinator), ``>= 1``.
    num_nodes : int
        Nodes of a simulation (:class:`velocity.fedtrain.SimulatedNodes`), ``>= 1``.

    Examples
    --------
    >>> TrainingConfig(model_name="m", learning_rate=1e-3, batch_size=32, local_steps=10,
    ...                global_rounds=5, num_nodes=3).local_steps
    10
    """

    model_config = _STRICT

    model_name: _Name
    learning_rate: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
    batch_size: _Positive
    local_steps: _Positive
    global_rounds: _Positive
    num_nodes: _Positive


class FederatedNode(BaseModel):
    """A participant of the run: an id, a network address and capability metadata.

    Attributes
    ----------
    node_id : str
        Unique within a run.
    address : str
        Where the node is reached (``"host:port"``); may be empty for a simulated node.
    capabilities : dict of str to bool, int, float or str
        Metadata a provider may schedule by (``{"gpu": True, "ram_gb": 80}``).
    status : {"idle", "training", "offline", "failed"}
        What the node is doing; ``"idle"`` by default.

    Examples
    --------
    >>> FederatedNode(node_id="n0", address="10.0.0.1:5000", capabilities={"gpu": True})
    FederatedNode(node_id='n0', address='10.0.0.1:5000', capabilities={'gpu': True}, status='idle')
    """

    model_config = _STRICT

    node_id: _Name
    address: Annotated[str, Field(strict=True, max_length=MAX_NAME_LENGTH)]
    capabilities: Annotated[
        dict[
            Annotated[str, Field(strict=True, max_length=MAX_NAME_LENGTH)],
            Annotated[
                bool | int | _Finite | Annotated[str, Field(max_length=MAX_NAME_LENGTH)],
                Field(union_mode="smart"),
            ],
        ],
        Field(max_length=MAX_NODES),
    ] = Field(default_factory=dict)
    status: NodeStatus = "idle"


class LocalUpdate(BaseModel):
    """What a node sends after its local steps: gradients, the loss it reached, its samples.

    Attributes
    ----------
    node_id : str
        The sender.
    round_id : int
        The round the update is for, ``>= 0`` (the coordinator requires its current round).
    gradients : dict of str to list of float
        Finite floats under parameter names, at most :data:`MAX_GRADIENT_VALUES` in all.
        For DiLoCo a node sends its pseudo-gradient ``start − end`` (the weights it started
        the round from minus those it ended with), so stepping along ``−gradients`` descends.
    loss : float
        The training loss the node reached, finite.
    samples_used : int
        Samples the node processed this round, ``0 <= samples_used <= 2**53``; its credit.
    digest : str, optional
        :meth:`velocity.fedtrain.HashVerifier.compute_hash` of ``gradients``, attached by
        the sender; when set, the coordinator refuses the update unless it matches.
        Not part of the original library's model (which verifies hashes out of band).

    Examples
    --------
    >>> LocalUpdate(node_id="n0", round_id=1, gradients={}, loss=-1, samples_used=True)
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for LocalUpdate
    samples_used
      Input should be a valid integer [type=int_type, input_value=True, input_type=bool]
    ...
    """

    model_config = _STRICT

    node_id: _Name
    round_id: _Count
    gradients: Gradients
    loss: _Finite
    samples_used: Annotated[int, Field(strict=True, ge=0, le=MAX_SAMPLES)]
    digest: Annotated[str, Field(strict=True, max_length=128)] | None = None


class GlobalState(BaseModel):
    """The coordinator's view after a round.

    Attributes
    ----------
    round_id : int
        Rounds completed (``0`` after :meth:`~velocity.fedtrain.DiLoCoCoordinator.initialize`).
    global_weights : dict of str to list of float
        The round's aggregated (element-wise averaged) gradients — the original library's
        meaning of the field, kept. The outer-optimized model is :attr:`model`.
    participating_nodes : list of str
        Who contributed to the round, in the order their updates came.
    avg_loss : float, optional
        The unweighted mean of the round's losses; ``None`` before the first round.
    model : dict of str to list of float, optional
        The global model after the round's outer (Nesterov) step, the weights nodes train
        from next round; ``None`` until a round with gradient values ran. An addition to the
        original library.
    config : TrainingConfig, optional
        The run's settings (what :meth:`~velocity.fedtrain.DiLoCoCoordinator.initialize`
        was given), so a provider sees ``local_steps`` and ``batch_size``. An addition.

    Examples
    --------
    >>> state = GlobalState(round_id=2, global_weights={"w": [0.5]}, avg_loss=0.1)
    >>> GlobalState.model_validate_json(state.model_dump_json()) == state
    True
    """

    model_config = _STRICT

    round_id: _Count
    global_weights: Gradients = Field(default_factory=dict)
    participating_nodes: Annotated[list[_Name], Field(max_length=MAX_NODES)] = Field(
        default_factory=list
    )
    avg_loss: _Finite | None = None
    model: Gradients | None = None
    config: TrainingConfig | None = None


class TrainingResult(BaseModel):
    """The summary of a training run.

    Attributes
    ----------
    model_name : str
        The run's :attr:`TrainingConfig.model_name`.
    final_loss : float, optional
        The last completed round's average loss; ``None`` when no round completed.
    total_samples : int
        Samples processed by every node over every completed round.
    duration_seconds : float
        Wall-clock seconds the run took.
    rounds_completed : int
        Rounds that ran (fewer than planned when the provider returned no updates).
    rounds_planned : int
        :attr:`TrainingConfig.global_rounds`.
    loss_history : list of float
        Every completed round's average loss, in order.
    final_state : GlobalState
        The state after the last completed round.

    Examples
    --------
    >>> result = TrainingResult(model_name="m", final_loss=0.5, total_samples=10,
    ...     duration_seconds=0.1, rounds_completed=1, rounds_planned=2, loss_history=[0.5],
    ...     final_state=GlobalState(round_id=1))
    >>> TrainingResult.model_validate_json(result.model_dump_json()) == result
    True
    """

    model_config = _STRICT

    model_name: _Name
    final_loss: _Finite | None
    total_samples: _Count
    duration_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    rounds_completed: _Count
    rounds_planned: _Positive
    loss_history: list[_Finite] = Field(default_factory=list)
    final_state: GlobalState
