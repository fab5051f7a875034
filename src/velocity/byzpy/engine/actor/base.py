"""``ActorBackend``: where an actor's calls run.

An actor backend is a place that runs one call at a time: ``await backend.run(fn, *args,
**kwargs)`` runs ``fn(*args, **kwargs)`` there and returns its result (or raises its
exception) to the awaiting caller. Calls on one backend are serialized, as an actor's
messages are; different backends run in parallel. :class:`ActorPool` workers and
:class:`NodeActor` s are backends. :func:`~velocity.byzpy.engine.actor.factory.resolve_backend`
turns a spec (``"thread"``...) into one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar, TypeVar, overload

__all__ = ["ActorBackend"]

T = TypeVar("T")


class ActorBackend(ABC):
    """An actor's execution place: started, given calls one at a time, closed.

    Class attributes
    ----------------
    name : str
        The backend's kind, as written in specs (``"thread"``).
    capabilities : tuple of str
        What its workers offer to :attr:`SubTask.affinity` routing (``("cpu",)``).
    shares_memory : bool
        Whether calls run in this process with their arguments passed by reference (the
        ``"thread"`` backend); ``False`` for backends in other processes (Ray), which copy
        arguments and results, so an object built by one call is not the one a later call
        sees (node actors need ``True``).
    """

    name: ClassVar[str] = "actor"
    capabilities: ClassVar[Sequence[str]] = ("cpu",)
    shares_memory: ClassVar[bool] = True

    @abstractmethod
    async def start(self) -> None:
        """Make the backend ready for :meth:`run` (idempotent)."""

    @abstractmethod
    async def close(self) -> None:
        """Finish the call in progress, then release the backend (idempotent)."""

    @overload
    async def run(self, fn: Callable[..., Awaitable[T]], *args: object, **kwargs: object) -> T: ...

    @overload
    async def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T: ...

    @abstractmethod
    async def run(self, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
        """Run ``fn(*args, **kwargs)`` on the backend, after the calls already queued.

        A coroutine function (or any callable returning an awaitable) is awaited on the
        backend. The call's exception is raised here.
        """
