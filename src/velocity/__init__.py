"""VelocityFL: fast, robust, reproducible federated learning.

The public surface: strategies (frozen dataclasses, :func:`parse_strategy`), the parameter
plumbing (:class:`ParamSpec`, :class:`ClientUpdate`, :class:`RoundResult`), the error
hierarchy, and the :mod:`velocity.kernels` module of aggregation kernels.

``import velocity`` is light: it imports neither torch nor any submodule that does, and it
sets no environment variables. Every export except the errors is resolved on first access
(PEP 562), so ``velocity.Krum`` or ``from velocity import Krum`` imports
:mod:`velocity.strategies` (and torch) then, not before.

Large CPU tensors (a round's ``(n, d)`` update stack is hundreds of MB) are faster with
transparent huge pages. PyTorch reads ``THP_MEM_ALLOC_ENABLE`` once, at its first large
allocation, so it is a process setting: the ``velocity`` command sets it to ``1`` unless it is
already set; a program using the library sets it itself (``os.environ`` or the shell) before
its first large allocation. See docs/architecture.md.
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING

# No torch here: the error hierarchy is imported eagerly.
from velocity.errors import (
    ConfigurationError,
    ProtocolError,
    SecurityError,
    ValidationError,
    VelocityError,
)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ does this lazily
    from velocity import kernels
    from velocity._core import RoundSummary
    from velocity.server import VelocityServer
    from velocity.strategies import (
        ALL_STRATEGIES,
        ARC,
        CAF,
        CGE,
        MDA,
        NNM,
        PRE_AGGREGATORS,
        SERVER_OPTIMIZERS,
        SMEA,
        AggregationResult,
        Bucketing,
        Bulyan,
        CenteredClipping,
        Clip,
        FedAdagrad,
        FedAdam,
        FedAvg,
        FedAvgM,
        FedMedian,
        FedProx,
        FedYogi,
        GeometricMedian,
        Krum,
        MeaMed,
        MoNNA,
        MultiKrum,
        Pipeline,
        ServerSGD,
        Strategy,
        TrimmedMean,
        parse_strategy,
        to_dict,
    )
    from velocity.types import ClientUpdate, ParamSpec, RoundResult

__version__ = "0.1.0"

#: Lazy exports: public name -> the module that defines it. A value naming the submodule
#: ``velocity.<name>`` itself (``"kernels": "velocity.kernels"``) exports that module. To add
#: or move an export, edit this table, the ``TYPE_CHECKING`` imports above and ``__all__``
#: (tests/test_light_import.py checks that the three agree).
_LAZY_EXPORTS: dict[str, str] = {
    # modules
    "kernels": "velocity.kernels",
    # the server
    "VelocityServer": "velocity.server",
    # parameter plumbing
    "ClientUpdate": "velocity.types",
    "ParamSpec": "velocity.types",
    "RoundResult": "velocity.types",
    "RoundSummary": "velocity._core",
    # strategies: registries, helpers, and the stages themselves
    "ALL_STRATEGIES": "velocity.strategies",
    "PRE_AGGREGATORS": "velocity.strategies",
    "SERVER_OPTIMIZERS": "velocity.strategies",
    "AggregationResult": "velocity.strategies",
    "Pipeline": "velocity.strategies",
    "Strategy": "velocity.strategies",
    "parse_strategy": "velocity.strategies",
    "to_dict": "velocity.strategies",
    "ARC": "velocity.strategies",
    "Bucketing": "velocity.strategies",
    "Bulyan": "velocity.strategies",
    "CAF": "velocity.strategies",
    "CGE": "velocity.strategies",
    "CenteredClipping": "velocity.strategies",
    "Clip": "velocity.strategies",
    "FedAdagrad": "velocity.strategies",
    "FedAdam": "velocity.strategies",
    "FedAvg": "velocity.strategies",
    "FedAvgM": "velocity.strategies",
    "FedMedian": "velocity.strategies",
    "FedProx": "velocity.strategies",
    "FedYogi": "velocity.strategies",
    "GeometricMedian": "velocity.strategies",
    "Krum": "velocity.strategies",
    "MDA": "velocity.strategies",
    "MeaMed": "velocity.strategies",
    "MoNNA": "velocity.strategies",
    "MultiKrum": "velocity.strategies",
    "NNM": "velocity.strategies",
    "SMEA": "velocity.strategies",
    "ServerSGD": "velocity.strategies",
    "TrimmedMean": "velocity.strategies",
}


def __getattr__(name: str) -> object:
    """Import a lazy export on first access and cache it in the module namespace (PEP 562)."""
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _importlib.import_module(module_name)
    value: object = module if module_name == f"{__name__}.{name}" else getattr(module, name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_EXPORTS))


__all__ = [
    "ALL_STRATEGIES",
    "ARC",
    "CAF",
    "CGE",
    "MDA",
    "NNM",
    "PRE_AGGREGATORS",
    "SERVER_OPTIMIZERS",
    "SMEA",
    "AggregationResult",
    "Bucketing",
    "Bulyan",
    "CenteredClipping",
    "ClientUpdate",
    "Clip",
    "ConfigurationError",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedMedian",
    "FedProx",
    "FedYogi",
    "GeometricMedian",
    "Krum",
    "MeaMed",
    "MoNNA",
    "MultiKrum",
    "ParamSpec",
    "Pipeline",
    "ProtocolError",
    "RoundResult",
    "RoundSummary",
    "SecurityError",
    "ServerSGD",
    "Strategy",
    "TrimmedMean",
    "ValidationError",
    "VelocityError",
    "VelocityServer",
    "__version__",
    "kernels",
    "parse_strategy",
    "to_dict",
]
