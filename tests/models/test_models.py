"""The model zoo: exact parameter counts, forward shapes, reproducible init, registry errors."""

from __future__ import annotations

import pytest
import torch

from velocity import models
from velocity.errors import ConfigurationError
from velocity.models import MODELS, ModelInfo, build_model, count_parameters, model_info

# Counts from the papers where they state one (McMahan et al. 2017 for both MNIST models),
# otherwise computed by hand in the model docstrings.
PARAM_COUNTS = {
    "mnist-cnn": 1_663_370,
    "mnist-2nn": 199_210,
    "logreg": 7_850,
    "cifar-cnn": 1_756_426,
    "char-lstm": 819_920,
    "char-transformer": 115_536,
}


def _example_input(info: ModelInfo, batch: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    shape = (batch, *info.input_shape)
    if info.input_dtype == torch.int64:
        return torch.randint(0, info.num_classes, shape, generator=g)
    return torch.randn(shape, generator=g)


def test_registry_lists_every_model() -> None:
    assert tuple(PARAM_COUNTS) == MODELS


def test_all_names_resolve() -> None:
    assert sorted(models.__all__) == sorted(set(models.__all__))
    assert all(hasattr(models, name) for name in models.__all__)


@pytest.mark.parametrize("model_id", MODELS)
def test_parameter_count_is_exact(model_id: str) -> None:
    model = build_model(model_id, seed=0)
    assert count_parameters(model) == PARAM_COUNTS[model_id]
    assert model_info(model_id).num_params == PARAM_COUNTS[model_id]


def test_cifar_cnn_count_by_layer() -> None:
    # conv 5x5 3->64, conv 5x5 64->64, dense 64*8*8->384, 384->192, 192->10 (with biases).
    expected = (5 * 5 * 3 * 64 + 64) + (5 * 5 * 64 * 64 + 64)
    expected += (64 * 8 * 8 * 384 + 384) + (384 * 192 + 192) + (192 * 10 + 10)
    assert expected == PARAM_COUNTS["cifar-cnn"]


@pytest.mark.parametrize("model_id", MODELS)
def test_forward_shape_and_dtype(model_id: str) -> None:
    info = model_info(model_id)
    model = build_model(model_id, seed=0)
    logits = model(_example_input(info))
    assert logits.shape == (3, info.num_classes)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("model_id", MODELS)
def test_num_classes_override(model_id: str) -> None:
    info = model_info(model_id, num_classes=7)
    assert info.num_classes == 7
    model = build_model(model_id, num_classes=7, seed=0)
    assert count_parameters(model) == info.num_params
    assert model(_example_input(info)).shape == (3, 7)


@pytest.mark.parametrize("model_id", MODELS)
def test_seeded_init_is_reproducible_and_leaves_global_rng_alone(model_id: str) -> None:
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = build_model(model_id, seed=5).state_dict()
    b = build_model(model_id, seed=5).state_dict()
    c = build_model(model_id, seed=6).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_model_info_does_not_touch_global_rng() -> None:
    before = torch.get_rng_state()
    for model_id in MODELS:
        model_info(model_id)
    assert torch.equal(torch.get_rng_state(), before)


def test_unseeded_build_uses_global_rng() -> None:
    torch.manual_seed(3)
    a = build_model("logreg").state_dict()
    torch.manual_seed(3)
    b = build_model("logreg").state_dict()
    assert torch.equal(a["linear.weight"], b["linear.weight"])


def test_logreg_inputs() -> None:
    model = build_model("logreg", seed=0)
    images = torch.randn(4, 1, 28, 28)
    assert torch.equal(model(images), model(images.reshape(4, 784)))
    synthetic = build_model("logreg", in_features=60, seed=0)
    assert count_parameters(synthetic) == 610
    assert synthetic(torch.randn(5, 60)).shape == (5, 10)
    info = model_info("logreg", in_features=60)
    assert info.input_shape == (60,)
    assert info.num_params == 610


def test_mnist_info() -> None:
    info = model_info("mnist-cnn")
    assert info == ModelInfo(
        model_id="mnist-cnn",
        input_shape=(1, 28, 28),
        input_dtype=torch.float32,
        num_classes=10,
        num_params=1_663_370,
        paper=info.paper,
    )
    assert "McMahan" in info.paper
    assert "LEAF" in model_info("char-lstm").paper


def test_unknown_model_lists_known_ids() -> None:
    with pytest.raises(ConfigurationError, match="unknown model 'resnet-18'") as excinfo:
        build_model("resnet-18")
    assert all(model_id in str(excinfo.value) for model_id in MODELS)
    with pytest.raises(ConfigurationError, match="known models"):
        model_info("nope")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, "num_classes must be an int >= 2; got 1"),
        ({"num_classes": 2.0}, "num_classes must be an int >= 2; got 2.0"),
        ({"num_classes": True}, "num_classes must be an int >= 2; got True"),
        ({"seed": -1}, "seed must be an int >= 0; got -1"),
        ({"seed": "0"}, "seed must be an int >= 0; got '0'"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build_model("mnist-2nn", **kwargs)  # type: ignore[arg-type]


def test_in_features_only_for_logreg() -> None:
    with pytest.raises(ConfigurationError, match="in_features applies only to 'logreg'"):
        build_model("mnist-cnn", in_features=60)
    with pytest.raises(ConfigurationError, match="in_features must be an int >= 1; got 0"):
        build_model("logreg", in_features=0)
