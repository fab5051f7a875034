"""The model registry: ids, :func:`build_model` and :func:`model_info`."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import torch
from torch import nn

from velocity.errors import ConfigurationError
from velocity.models._zoo import (
    CharLSTM,
    CharTransformer,
    CifarCNN,
    LogisticRegression,
    Mnist2NN,
    MnistCNN,
    count_parameters,
)

__all__ = ["MODELS", "ModelInfo", "build_model", "model_info"]

_MCMAHAN = (
    "McMahan et al. 2017, Communication-Efficient Learning of Deep Networks from "
    "Decentralized Data (AISTATS)"
)


@dataclass(frozen=True)
class ModelInfo:
    """What a registered model expects and how big it is.

    Parameters
    ----------
    model_id : str
        The registry id.
    input_shape : tuple of int
        Shape of one example, without the batch dimension.
    input_dtype : torch.dtype
        ``torch.float32`` for images and features, ``torch.int64`` for character ids.
    num_classes : int
        Number of output logits (the vocabulary size for the character models).
    num_params : int
        Number of scalar parameters.
    paper : str
        Where the architecture comes from.
    """

    model_id: str
    input_shape: tuple[int, ...]
    input_dtype: torch.dtype
    num_classes: int
    num_params: int
    paper: str


@dataclass(frozen=True)
class _Entry:
    build: Callable[[int, int | None], nn.Module]  # (num_classes, in_features) -> model
    input_shape: Callable[[int | None], tuple[int, ...]]  # in_features -> example shape
    input_dtype: torch.dtype
    num_classes: int
    paper: str
    takes_in_features: bool = False


def _logreg(num_classes: int, in_features: int | None) -> nn.Module:
    return LogisticRegression(784 if in_features is None else in_features, num_classes)


_REGISTRY: Final = MappingProxyType(
    {
        "mnist-cnn": _Entry(
            lambda c, _: MnistCNN(c), lambda _: (1, 28, 28), torch.float32, 10, _MCMAHAN
        ),
        "mnist-2nn": _Entry(
            lambda c, _: Mnist2NN(c), lambda _: (1, 28, 28), torch.float32, 10, _MCMAHAN
        ),
        "logreg": _Entry(
            _logreg,
            lambda f: (1, 28, 28) if f is None else (f,),
            torch.float32,
            10,
            "Multinomial logistic regression (MNIST; Synthetic data of Li et al. 2020, "
            "Federated Optimization in Heterogeneous Networks, with in_features=60)",
            takes_in_features=True,
        ),
        "cifar-cnn": _Entry(
            lambda c, _: CifarCNN(c),
            lambda _: (3, 32, 32),
            torch.float32,
            10,
            _MCMAHAN + "; the TensorFlow CIFAR-10 tutorial CNN",
        ),
        "char-lstm": _Entry(
            lambda c, _: CharLSTM(vocab_size=c),
            lambda _: (80,),
            torch.int64,
            80,
            "Caldas et al. 2018, LEAF: A Benchmark for Federated Settings (Shakespeare)",
        ),
        "char-transformer": _Entry(
            lambda c, _: CharTransformer(vocab_size=c),
            lambda _: (80,),
            torch.int64,
            80,
            "GPT-2's pre-LN causal transformer (Radford et al. 2019, Language Models are "
            "Unsupervised Multitask Learners) at toy scale, the model family DiLoCo trains "
            "(Douillard et al. 2023)",
        ),
    }
)

MODELS: Final[tuple[str, ...]] = tuple(_REGISTRY)
"""Ids of every registered model, in registry order."""

MODEL_DATASETS: Final = MappingProxyType(
    {
        "mnist-cnn": ("mnist", "fashion_mnist"),
        "mnist-2nn": ("mnist", "fashion_mnist"),
        "logreg": ("mnist", "fashion_mnist", "cifar10", "synthetic"),
        "cifar-cnn": ("cifar10",),
        "char-lstm": ("shakespeare",),
        "char-transformer": ("shakespeare",),
    }
)
"""Datasets each model can be trained on (its input shape): one table for every entry point
(YAML configs, ``VelocityServer``). ``logreg`` sizes its input to the dataset's features."""


def check_model_dataset(model_id: object, dataset: object, *, owner: str) -> None:
    """Refuse an unknown model, or a model that cannot take ``dataset``'s inputs."""
    if not isinstance(model_id, str) or model_id not in MODEL_DATASETS:
        raise ConfigurationError(
            f"{owner}.model_id must be one of {', '.join(map(repr, MODEL_DATASETS))}; "
            f"got {model_id!r}"
        )
    allowed = MODEL_DATASETS[model_id]
    if dataset not in allowed:
        raise ConfigurationError(
            f"{owner}: model {model_id!r} cannot be trained on dataset {dataset!r}; "
            f"it takes {', '.join(repr(d) for d in allowed)}"
        )


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigurationError(f"{name} must be an int >= {low}; got {value!r}")
    return int(value)


def _lookup(
    model_id: str, num_classes: int | None, in_features: int | None
) -> tuple[_Entry, int, int | None]:
    entry = _REGISTRY.get(model_id) if isinstance(model_id, str) else None
    if entry is None:
        raise ConfigurationError(f"unknown model {model_id!r}; known models: {', '.join(MODELS)}")
    classes = (
        entry.num_classes if num_classes is None else _check_int("num_classes", num_classes, 2)
    )
    if in_features is not None:
        if not entry.takes_in_features:
            raise ConfigurationError(
                f"in_features applies only to 'logreg'; model {model_id!r} has a fixed input "
                f"shape {entry.input_shape(None)}"
            )
        in_features = _check_int("in_features", in_features, 1)
    return entry, classes, in_features


def build_model(
    model_id: str,
    *,
    num_classes: int | None = None,
    seed: int | None = None,
    in_features: int | None = None,
) -> nn.Module:
    """Build a registered model, on the CPU, in float32 and training mode.

    Parameters
    ----------
    model_id : str
        One of :data:`MODELS`: ``"mnist-cnn"``, ``"mnist-2nn"``, ``"logreg"``,
        ``"cifar-cnn"``, ``"char-lstm"``, ``"char-transformer"``.
    num_classes : int, optional
        Number of output logits (>= 2); the vocabulary size for ``"char-lstm"`` and
        ``"char-transformer"``. Defaults to the model's benchmark value (10, or 80
        characters).
    seed : int, optional
        Seed (>= 0) of the initialisation. The same seed gives bit-identical parameters. The
        draws come from a forked CPU generator, so the global random state is left exactly
        as it was. Without a seed the global generator is used, as plain PyTorch does.
    in_features : int, optional
        Input size of ``"logreg"`` (default 784, MNIST; 60 for the Synthetic data of Li et
        al. 2020). Refused for the other models, whose input shape is fixed.

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    ConfigurationError
        For an unknown id (the message lists the known ones) or an out-of-range setting.

    Examples
    --------
    >>> model = build_model("mnist-2nn", seed=0)
    >>> sum(p.numel() for p in model.parameters())
    199210
    >>> a, b = build_model("logreg", seed=1), build_model("logreg", seed=1)
    >>> torch.equal(a.linear.weight, b.linear.weight)
    True
    """
    entry, classes, features = _lookup(model_id, num_classes, in_features)
    if seed is None:
        return entry.build(classes, features)
    seed = _check_int("seed", seed, 0)
    with torch.random.fork_rng(devices=[]):
        # Seed the CPU generator only: torch.manual_seed would also reseed every CUDA device
        # and fork_rng(devices=[]) would not restore those.
        torch.default_generator.manual_seed(seed)
        return entry.build(classes, features)


def model_info(
    model_id: str, *, num_classes: int | None = None, in_features: int | None = None
) -> ModelInfo:
    """Shapes, sizes and provenance of a registered model, without allocating its weights.

    Takes the same ``num_classes`` and ``in_features`` as :func:`build_model`.

    Examples
    --------
    >>> info = model_info("mnist-cnn")
    >>> info.num_params, info.input_shape
    (1663370, (1, 28, 28))
    >>> model_info("logreg", in_features=60).num_params
    610
    """
    entry, classes, features = _lookup(model_id, num_classes, in_features)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        num_params = count_parameters(entry.build(classes, features))
    return ModelInfo(
        model_id=model_id,
        input_shape=entry.input_shape(features),
        input_dtype=entry.input_dtype,
        num_classes=classes,
        num_params=num_params,
        paper=entry.paper,
    )
