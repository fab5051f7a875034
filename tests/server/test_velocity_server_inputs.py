"""VelocityServer validates its arguments as the YAML path does (one table, one message form)."""

from __future__ import annotations

import pytest

from velocity import VelocityServer
from velocity.errors import ConfigurationError
from velocity.experiments import parse_config

_QUAD = {"model_id": "toy", "dataset": "none", "layer_shapes": {"w": 3}}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, r"VelocityServer\.seed must be an int in \[0, "),
        ({"num_clients": -1}, r"VelocityServer\.num_clients must be an int >= 1; got -1"),
        ({"num_clients": 2.5}, r"num_clients must be an int >= 1; got 2\.5"),
        ({"num_clients": True}, r"num_clients must be an int >= 1; got True"),
        ({"layer_shapes": [1, 2]}, r"layer_shapes must be a non-empty mapping"),
        ({"layer_shapes": {}}, r"layer_shapes must be a non-empty mapping"),
        ({"layer_shapes": {"w": 0}}, r"layer_shapes must be"),
        ({"layer_shapes": {"w": 10**13}}, r"holds 10000000000000 parameters; at most"),
        ({"alpha": 0}, r"alpha must be a finite float > 0"),
        ({"partitioning": "random"}, r"partitioning must be one of 'iid', 'dirichlet'"),
        ({"client_fraction": 1.5}, r"client_fraction must be a finite float in \(0, 1\]"),
        ({"train_config": {"lr": 1}}, r"train_config must be None or a velocity\.client"),
        ({"resume": "yes"}, r"resume must be true or false"),
        ({"backend": None}, r"backend must be one of 'sequential'"),
        ({"backend": "spark"}, r"backend\.type must be one of 'sequential'"),
        # ray trains dataset clients; a layer_shapes server's clients are quadratic ones
        ({"backend": "ray"}, r"backend\.type: ray trains dataset clients"),
    ],
)
def test_bad_arguments_are_refused_with_the_field_named(
    kwargs: dict[str, object], message: str
) -> None:
    args = {**_QUAD, "storage": "memory://inputs", **kwargs}
    with pytest.raises(ConfigurationError, match=message):
        VelocityServer(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model_id", "dataset", "message"),
    [
        ("mnist-cnn", "synthetic", r"model 'mnist-cnn' cannot be trained on dataset 'synthetic'"),
        ("char-lstm", "mnist", r"model 'char-lstm' cannot be trained on dataset 'mnist'"),
        ("resnet", "mnist", r"model_id must be one of 'mnist-cnn'"),
        ("logreg", "imagenet", r"dataset must be one of 'mnist'"),
    ],
)
def test_model_and_dataset_are_checked_before_any_data_is_loaded(
    model_id: str, dataset: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        VelocityServer(model_id, dataset, storage="memory://inputs-md")


def test_the_yaml_path_uses_the_same_model_dataset_table() -> None:
    with pytest.raises(ConfigurationError, match="cannot be trained on dataset 'synthetic'"):
        parse_config({"name": "x", "dataset": "synthetic", "model_id": "mnist-cnn"})


def test_sybil_count_is_bounded_everywhere() -> None:
    server = VelocityServer(**_QUAD, storage="memory://inputs-sybil")  # type: ignore[arg-type]
    with pytest.raises(
        ConfigurationError, match=r"SybilNodes\.count must be an int in \[1, 10000\]"
    ):
        server.simulate_attack("sybil_nodes", count=10**9)
    with pytest.raises(ConfigurationError, match=r"count must be an int in \[1, 10000\]"):
        parse_config(
            {"name": "x", "dataset": "mnist", "attacks": [{"type": "sybil_nodes", "count": 10**9}]}
        )
