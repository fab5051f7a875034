"""What a run returns: one :class:`~velocity.types.RoundResult` per round inside a
:class:`RunResult`.

The runner fills these; :func:`velocity.experiments.write_outputs` turns them into the files
of ``outputs/<name>/``. Conventions:

- accuracies are fractions in ``[0, 1]`` (the report shows percentages);
- ``None`` means "not measured this round" (``global_*`` between ``eval_every`` rounds);
- client lists are client ids in the order the runner produced them;
- ``bytes_up`` counts what the participating clients sent, ``bytes_down`` what the server
  broadcast, both as raw payload bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from velocity.types import RoundResult  # the one round record, owned by the bottom layer

__all__ = ["RoundCallback", "RoundResult", "RunResult", "jsonable", "run_environment"]


RoundCallback: TypeAlias = Callable[[RoundResult], None]
"""``on_round(record)``: called by the runner after each round (progress bars, logging)."""


@dataclass(frozen=True)
class RunResult:
    """A finished run.

    Attributes
    ----------
    name : str
        The experiment name (``config.name``).
    config : mapping
        ``ExperimentConfig.resolved()``.
    config_hash : str
        ``ExperimentConfig.config_hash()``.
    seed, dataset, model_id : int, str, str
        Copied from the configuration for convenience.
    num_params : int
        Trainable parameters of the model.
    num_clients : int
        Clients in the population.
    client_ids : tuple of str
        Every client id, in population order.
    rounds : tuple of RoundResult
        One record per completed round, in order.
    label_histogram : list of list of int
        ``(num_clients, num_classes)`` training-label counts per client; for very large
        populations only the first 1000 clients' rows.
    final_model_digest : str
        SHA-256 (hex) of the final global model's parameters.
    wall_time_s : float
        Wall-clock seconds of the whole run.
    final_accuracy, best_accuracy : float or None
        The last and the highest evaluated global accuracy; ``None`` if never evaluated.
    environment : mapping
        What bit-identical results depend on besides the config and seed: library versions,
        the torch thread count, the platform (:func:`run_environment`).
    """

    name: str
    config: Mapping[str, Any]
    config_hash: str
    seed: int
    dataset: str
    model_id: str
    num_params: int
    num_clients: int
    client_ids: tuple[str, ...]
    rounds: tuple[RoundResult, ...]
    label_histogram: list[list[int]]
    final_model_digest: str
    wall_time_s: float
    final_accuracy: float | None
    best_accuracy: float | None
    environment: Mapping[str, Any] = field(default_factory=dict)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types.

    Mappings become dicts with string keys, tuples/lists/sets lists (sets sorted), non-finite
    floats ``None``; tensors and numpy values go through ``tolist()``; anything else becomes
    its ``str``.

    Examples
    --------
    >>> jsonable({"a": (1, 2.5, float("nan")), 3: {"b"}})
    {'a': [1, 2.5, None], '3': ['b']}
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, set | frozenset):
        return [jsonable(item) for item in sorted(value, key=str)]
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # torch.Tensor, numpy arrays and scalars
        return jsonable(tolist())
    return str(value)


def run_environment() -> dict[str, Any]:
    """What a run's bit-identical result depends on besides its config and seed.

    Same config, seed, machine (CPU model: its SIMD kernels), torch version, torch thread
    count and backend give bit-identical models; the provider, the number of workers and
    thread timing do not matter. A different ``torch_threads`` changes the order of some
    floating-point reductions inside PyTorch (the MNIST CNN's digest differs between 1 and 2
    threads), so it is recorded here.
    """
    import platform

    import numpy
    import torch

    return {
        "velocityfl": _version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
    }


def _version() -> str:
    from velocity import __version__

    return __version__
