"""``ThreadActorBackend``: an actor on its own worker thread of this process.

Its calls run one at a time on one dedicated thread, in the order they were made; a
coroutine function runs to completion on an event loop that the thread keeps for the
actor's whole life (so asyncio objects an actor creates stay on one loop). Arguments and
results are passed by reference: nothing is copied or serialized. The awaiting side works
on any event loop (the call's future is wrapped into the caller's loop), so one backend
can serve ``asyncio.run`` after ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import itertools
import threading
from collections.abc import Awaitable, Callable
from typing import ClassVar, TypeVar, cast, overload

from velocity.byzpy.engine.actor.base import ActorBackend

__all__ = ["ThreadActorBackend"]

T = TypeVar("T")
_IDS = itertools.count()


class ThreadActorBackend(ActorBackend):
    """An actor on a dedicated worker thread.

    Parameters
    ----------
    thread_name : str, optional
        The worker thread's name (default ``"byzpy-actor-<k>"``).

    Notes
    -----
    :meth:`start` after :meth:`close` starts a fresh thread, so a pool can be restarted.
    :meth:`run` on a backend that is not started, or closed, raises :class:`RuntimeError`.
    """

    name: ClassVar[str] = "thread"
    capabilities: ClassVar[tuple[str, ...]] = ("cpu",)

    def __init__(self, *, thread_name: str | None = None) -> None:
        if thread_name is not None and (not isinstance(thread_name, str) or not thread_name):
            raise ValueError(
                f"ThreadActorBackend.thread_name must be a non-empty str; got {thread_name!r}"
            )
        self._thread_name = thread_name or f"byzpy-actor-{next(_IDS)}"
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._local = threading.local()

    def __repr__(self) -> str:
        state = "started" if self._executor is not None else "stopped"
        return f"ThreadActorBackend({self._thread_name!r}, {state})"

    @property
    def started(self) -> bool:
        """Whether the backend accepts calls."""
        return self._executor is not None

    async def start(self) -> None:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=self._thread_name
                )

    async def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        # After the queued calls: close the thread's event loop, then let the thread go.
        closing = asyncio.wrap_future(executor.submit(self._close_thread_loop))
        await closing
        await asyncio.to_thread(executor.shutdown, True)

    @overload
    async def run(self, fn: Callable[..., Awaitable[T]], *args: object, **kwargs: object) -> T: ...

    @overload
    async def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T: ...

    async def run(self, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
        if not callable(fn):
            raise TypeError(f"ThreadActorBackend.run: fn must be callable; got {fn!r}")
        with self._lock:
            executor = self._executor
            if executor is None:
                raise RuntimeError(
                    f"{self!r} is not running; await start() first (or it was closed)"
                )
            future = executor.submit(self._invoke, fn, args, kwargs)
        return await asyncio.wrap_future(future)

    # -- on the worker thread ----------------------------------------------------------

    def _invoke(
        self, fn: Callable[..., object], args: tuple[object, ...], kwargs: dict[str, object]
    ) -> object:
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            loop = self._thread_loop()
            return loop.run_until_complete(_awaited(cast(Awaitable[object], result)))
        return result

    def _thread_loop(self) -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None or loop.is_closed():
            loop = asyncio.new_event_loop()
            self._local.loop = loop
        return loop

    def _close_thread_loop(self) -> None:
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is not None and not loop.is_closed():
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        self._local.loop = None


async def _awaited(value: Awaitable[T]) -> T:
    return await value
