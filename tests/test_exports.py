"""The public surface is exactly what `__all__` says, and every name resolves."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "velocity",
    "velocity.kernels",
    "velocity.strategies",
    "velocity.errors",
    "velocity.types",
    "velocity.data",
    "velocity.models",
    "velocity.client",
    "velocity.sim",
    "velocity.server",
    "velocity.experiments",
    "velocity.governance",
    "velocity.metrics",
    "velocity.secagg",
    "velocity.privacy",
    "velocity.compression",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_resolve(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__, f"{name} has an empty __all__"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert missing == []
    assert len(set(module.__all__)) == len(module.__all__)


def test_kernel_registries_name_real_functions() -> None:
    from velocity import kernels

    for group in (kernels.AGGREGATORS, kernels.PRE_AGGREGATORS, kernels.SERVER_OPTIMIZERS):
        for name in group:
            assert callable(getattr(kernels, name)), name
    assert set(kernels.AGGREGATORS).isdisjoint(kernels.PRE_AGGREGATORS)


def test_core_reexports_every_kernel() -> None:
    from velocity import _core, kernels

    # apply_gaussian_noise is wrapped in _core so it also takes numpy arrays (seed surface).
    for name in kernels.__all__:
        if name == "apply_gaussian_noise":
            continue
        assert getattr(_core, name) is getattr(kernels, name), name
    assert callable(_core.apply_gaussian_noise)


def test_seed_import_lines() -> None:
    # The seed's two import lines (VelocityServer arrives with the simulation engine).
    from velocity import Strategy  # noqa: F401
    from velocity.strategies import ALL_STRATEGIES

    assert [c.__name__ for c in ALL_STRATEGIES[:6]] == [
        "FedAvg",
        "FedProx",
        "FedMedian",
        "TrimmedMean",
        "Krum",
        "MultiKrum",
    ]
