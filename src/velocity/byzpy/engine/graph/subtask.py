"""``SubTask``: one unit of an operator's work that an actor pool can run on any worker."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["SubTask"]


@dataclass(frozen=True)
class SubTask:
    """A call ``fn(*args, **kwargs)`` scheduled on a worker of an :class:`ActorPool`.

    Parameters
    ----------
    fn : callable
        A plain function (or a coroutine function); it runs on the worker.
    args, kwargs
        Its arguments. Thread workers share this process's memory, so tensors are passed by
        reference; other backends move them as safetensors buffers (never pickled).
    name : str, optional
        For logs and errors.
    affinity : str, optional
        A capability the worker must have (``"cpu"``, ``"gpu"``...); ``None`` runs anywhere.
    max_retries : int
        How many times a failed call is retried before its error is raised, ``>= 0``.
    """

    fn: Callable[..., object]
    args: Sequence[object] = field(default_factory=tuple)
    kwargs: Mapping[str, object] = field(default_factory=dict)
    name: str | None = None
    affinity: str | None = None
    max_retries: int = 0
