"""The pydantic models: validation naming the field, strict numbers, bounds, JSON round-trip."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from velocity.fedtrain import (
    MAX_GRADIENT_KEYS,
    MAX_GRADIENT_VALUES,
    FederatedNode,
    GlobalState,
    LocalUpdate,
    TrainingConfig,
    TrainingResult,
    models,
)
from velocity.fedtrain.models import MAX_NAME_LENGTH, MAX_SAMPLES

CONFIG: dict[str, Any] = {
    "model_name": "m",
    "learning_rate": 0.001,
    "batch_size": 32,
    "local_steps": 10,
    "global_rounds": 5,
    "num_nodes": 3,
}
UPDATE: dict[str, Any] = {
    "node_id": "node-000",
    "round_id": 1,
    "gradients": {"weight": [0.1, -0.2], "bias": [0.01]},
    "loss": 0.5,
    "samples_used": 128,
}


def fields_of(error: ValidationError) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in error.errors()]


def roundtrip(model: BaseModel) -> None:
    text = json.dumps(model.model_dump(mode="json"))
    assert type(model).model_validate_json(text) == model
    assert type(model).model_validate(json.loads(text)) == model


# ---------------------------------------------------------------------- TrainingConfig


def test_training_config_accepts_the_seed_file() -> None:
    config = TrainingConfig.model_validate(CONFIG)
    assert config.learning_rate == 0.001
    assert config.num_nodes == 3
    roundtrip(config)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("learning_rate", 0),
        ("learning_rate", -1e-3),
        ("learning_rate", float("inf")),
        ("learning_rate", "0.1"),
        ("batch_size", 0),
        ("batch_size", 2.5),
        ("batch_size", True),
        ("local_steps", 0),
        ("global_rounds", 0),
        ("num_nodes", 0),
        ("num_nodes", "3"),
        ("model_name", ""),
        ("model_name", "x" * (MAX_NAME_LENGTH + 1)),
    ],
)
def test_training_config_refuses_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingConfig.model_validate({**CONFIG, field: value})
    assert fields_of(caught.value) == [field]


def test_training_config_refuses_unknown_and_missing_keys() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingConfig.model_validate({**CONFIG, "local_step": 3})
    assert fields_of(caught.value) == ["local_step"]
    missing = dict(CONFIG)
    del missing["global_rounds"]
    with pytest.raises(ValidationError) as caught:
        TrainingConfig.model_validate(missing)
    assert fields_of(caught.value) == ["global_rounds"]


def test_training_config_validates_assignment() -> None:
    config = TrainingConfig.model_validate(CONFIG)
    with pytest.raises(ValidationError):
        config.batch_size = 0


def test_an_integer_is_a_float() -> None:
    assert TrainingConfig.model_validate({**CONFIG, "learning_rate": 1}).learning_rate == 1.0


# ---------------------------------------------------------------------- FederatedNode


def test_federated_node_defaults_and_capabilities_keep_their_types() -> None:
    node = FederatedNode(node_id="n", address="h:1")
    assert node.capabilities == {}
    assert node.status == "idle"
    node = FederatedNode(
        node_id="n", address="h:1", capabilities={"gpu": True, "ram": 8, "bw": 1.5, "m": "A100"}
    )
    assert [type(v) for v in node.capabilities.values()] == [bool, int, float, str]
    roundtrip(node)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"status": "sleeping"}, "status"),
        ({"node_id": ""}, "node_id"),
        ({"capabilities": {"x": [1]}}, "capabilities.x"),
        ({"capabilities": {"x": float("nan")}}, "capabilities.x"),
        ({"extra": 1}, "extra"),
    ],
)
def test_federated_node_refuses(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        FederatedNode.model_validate({"node_id": "n", "address": "a", **data})
    assert all(f.startswith(field) for f in fields_of(caught.value)), fields_of(caught.value)


def test_node_status_values() -> None:
    for status in ("idle", "training", "offline", "failed"):
        assert FederatedNode(node_id="n", address="", status=status).status == status


# ---------------------------------------------------------------------- LocalUpdate


def test_local_update_roundtrip_and_int_values_become_floats() -> None:
    update = LocalUpdate.model_validate({**UPDATE, "gradients": {"w": [1, 2.5]}})
    assert update.gradients == {"w": [1.0, 2.5]}
    assert all(type(v) is float for v in update.gradients["w"])
    assert update.digest is None
    roundtrip(update)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"gradients": {"w": [0.1, float("nan")]}}, "gradients.w.1"),
        ({"gradients": {"w": [float("inf")]}}, "gradients.w.0"),
        ({"gradients": {"w": ["0.1"]}}, "gradients.w.0"),
        ({"gradients": {"w": [True]}}, "gradients.w.0"),
        ({"gradients": {"w": 0.1}}, "gradients.w"),
        ({"gradients": {"w": [[0.1]]}}, "gradients.w.0"),
        ({"gradients": [0.1]}, "gradients"),
        ({"loss": float("nan")}, "loss"),
        ({"loss": "0.5"}, "loss"),
        ({"samples_used": -1}, "samples_used"),
        ({"samples_used": MAX_SAMPLES + 1}, "samples_used"),
        ({"samples_used": 1.0}, "samples_used"),
        ({"round_id": -1}, "round_id"),
        ({"node_id": ""}, "node_id"),
        ({"weights": {}}, "weights"),
    ],
)
def test_local_update_refuses_naming_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        LocalUpdate.model_validate({**UPDATE, **data})
    assert fields_of(caught.value) == [field]


def test_json_nan_and_infinity_tokens_are_refused() -> None:
    for token in ("NaN", "Infinity", "-Infinity", "1e400"):
        text = json.dumps(UPDATE).replace("0.01", token)
        with pytest.raises(ValidationError) as caught:
            LocalUpdate.model_validate_json(text)
        assert fields_of(caught.value) == ["gradients.bias.0"], token


def test_gradient_value_cap_is_checked_on_the_raw_lists() -> None:
    # One value over the cap, as raw strings: refused by the count before any conversion (a
    # conversion would report 2**24 + 1 "not a number" errors instead of one).
    half = MAX_GRADIENT_VALUES // 2
    data = {**UPDATE, "gradients": {"a": ["x"] * half, "b": ["x"] * (half + 1)}}
    with pytest.raises(ValidationError) as caught:
        LocalUpdate.model_validate(data)
    assert fields_of(caught.value) == ["gradients"]
    message = caught.value.errors()[0]["msg"]
    assert "holds more than 16777216 values (at key 'b')" in message
    assert "MAX_GRADIENT_VALUES" in message


def test_the_cap_is_read_at_validation_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "MAX_GRADIENT_VALUES", 4)
    LocalUpdate.model_validate({**UPDATE, "gradients": {"a": [0.0] * 2, "b": [0.0] * 2}})
    with pytest.raises(ValidationError, match="more than 4 values"):
        LocalUpdate.model_validate({**UPDATE, "gradients": {"a": [0.0] * 2, "b": [0.0] * 3}})
    with pytest.raises(ValidationError, match="more than 4 values"):
        GlobalState.model_validate({"round_id": 1, "model": {"w": [0.0] * 5}})


def test_gradient_value_cap_accepts_exactly_the_limit() -> None:
    values = [0.0] * MAX_GRADIENT_VALUES
    update = LocalUpdate.model_validate({**UPDATE, "gradients": {"w": values}})
    assert len(update.gradients["w"]) == MAX_GRADIENT_VALUES


def test_gradient_key_count_and_key_length_caps() -> None:
    too_many = {f"k{i}": [] for i in range(MAX_GRADIENT_KEYS + 1)}
    with pytest.raises(ValidationError, match="MAX_GRADIENT_KEYS") as caught:
        LocalUpdate.model_validate({**UPDATE, "gradients": too_many})
    assert fields_of(caught.value) == ["gradients"]
    long_key = {"k" * (MAX_NAME_LENGTH + 1): [0.0]}
    with pytest.raises(ValidationError) as caught:
        LocalUpdate.model_validate({**UPDATE, "gradients": long_key})
    assert fields_of(caught.value) == ["gradients"]


def test_hostile_json_update_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # The JSON is parsed (bounded by the file limit of read_update) and the lists counted
    # before a float is made; a smaller cap keeps the test fast.
    monkeypatch.setattr(models, "MAX_GRADIENT_VALUES", 1000)
    text = '{"node_id": "n", "round_id": 1, "loss": 0, "samples_used": 0, "gradients": {"w": [%s]}}'
    with pytest.raises(ValidationError) as caught:
        LocalUpdate.model_validate_json(text % ",".join(["0"] * 1001))
    assert fields_of(caught.value) == ["gradients"]
    assert LocalUpdate.model_validate_json(text % ",".join(["0"] * 1000)).gradients["w"][0] == 0.0


# ---------------------------------------------------------------------- GlobalState, result


def test_global_state_defaults_and_roundtrip() -> None:
    state = GlobalState(round_id=0)
    assert (state.global_weights, state.participating_nodes, state.avg_loss) == ({}, [], None)
    assert state.model is None
    assert state.config is None
    full = GlobalState(
        round_id=3,
        global_weights={"w": [0.5, -1.0]},
        participating_nodes=["a", "b"],
        avg_loss=0.25,
        model={"w": [1.0, 2.0]},
        config=TrainingConfig.model_validate(CONFIG),
    )
    roundtrip(full)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"round_id": -1}, "round_id"),
        ({"avg_loss": float("nan")}, "avg_loss"),
        ({"global_weights": {"w": [float("inf")]}}, "global_weights.w.0"),
        ({"participating_nodes": [""]}, "participating_nodes.0"),
    ],
)
def test_global_state_refuses(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        GlobalState.model_validate({"round_id": 1, **data})
    assert fields_of(caught.value) == [field]


def test_training_result_roundtrip_and_bounds() -> None:
    result = TrainingResult(
        model_name="m",
        final_loss=None,
        total_samples=0,
        duration_seconds=0.0,
        rounds_completed=0,
        rounds_planned=3,
        final_state=GlobalState(round_id=0),
    )
    roundtrip(result)
    with pytest.raises(ValidationError) as caught:
        TrainingResult.model_validate({**result.model_dump(), "duration_seconds": -1.0})
    assert fields_of(caught.value) == ["duration_seconds"]
