"""The model zoo: the benchmark models of the federated-learning papers.

====================  ===================  ==========  ======================================
id                    input (one example)  parameters  paper
====================  ===================  ==========  ======================================
``mnist-cnn``         ``(1, 28, 28)``       1,663,370  McMahan et al. 2017 (CNN)
``mnist-2nn``         ``(1, 28, 28)``         199,210  McMahan et al. 2017 (2NN)
``logreg``            ``(1, 28, 28)``           7,850  convex baseline (610 with 60 inputs)
``cifar-cnn``         ``(3, 32, 32)``       1,756,426  McMahan et al. 2017 / TF CIFAR tutorial
``char-lstm``         ``(80,)`` int64         819,920  Caldas et al. 2018 (LEAF Shakespeare)
``char-transformer``  ``(80,)`` int64         115,536  GPT-2-style causal transformer (DiLoCo)
====================  ===================  ==========  ======================================

Counts are for the default number of classes (10; 80 characters for the character models).
:func:`build_model` builds one by id, reproducibly when given a seed; :func:`model_info`
describes one without building its weights.

Examples
--------
>>> import torch
>>> from velocity.models import build_model, model_info
>>> model = build_model("mnist-cnn", seed=0)
>>> model(torch.zeros(2, 1, 28, 28)).shape
torch.Size([2, 10])
>>> model_info("char-lstm").input_dtype
torch.int64
"""

from __future__ import annotations

from velocity.models._registry import (
    MODEL_DATASETS,
    MODELS,
    ModelInfo,
    build_model,
    check_model_dataset,
    model_info,
)
from velocity.models._zoo import (
    CharLSTM,
    CharTransformer,
    CifarCNN,
    LogisticRegression,
    Mnist2NN,
    MnistCNN,
    count_parameters,
)

__all__ = [
    "MODELS",
    "MODEL_DATASETS",
    "CharLSTM",
    "CharTransformer",
    "CifarCNN",
    "LogisticRegression",
    "Mnist2NN",
    "MnistCNN",
    "ModelInfo",
    "build_model",
    "check_model_dataset",
    "count_parameters",
    "model_info",
]
