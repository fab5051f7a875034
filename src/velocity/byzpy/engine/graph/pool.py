"""``ActorPool``: a set of actor workers that run the subtasks of graph operators.

A pool is built from :class:`ActorPoolConfig` s, each a group of ``count`` workers on one
backend (``"thread"``: a dedicated worker thread each) with the same capability tags
(``"cpu"``, ``"gpu"``...). Every worker also has the tag ``"worker::<name>"``
(:meth:`ActorPool.worker_affinities`), so a subtask can be pinned to one worker.

:meth:`ActorPool.run_subtask` gives a subtask to an idle worker offering its
``affinity`` (any worker when ``None``): the first idle one in round-robin order after the
last one chosen, so the choice is deterministic; when none is idle it waits, first come
first served, for one to be released. A worker runs one subtask at a time. A failing
subtask is retried ``max_retries`` times (possibly on another worker), then its last error
is raised.

Notes
-----
The pool starts lazily: :meth:`ActorPool.run_subtask`, :meth:`ActorPool.run_many` and
:meth:`ActorPool.open_channel` call :meth:`ActorPool.start` first (as ByzPy does), and
after :meth:`ActorPool.shutdown` the next use starts fresh workers. The pool's state is
guarded by a lock and its waits are woken with ``call_soon_threadsafe``, so it can be used
from several threads and event loops (``run_pipeline_sync`` runs one ``asyncio.run`` per
call).

Differences from ByzPy 0.1.4: asking for an affinity no worker offers raises
:class:`ValueError` naming it and the available ones (ByzPy: a bare ``RuntimeError``); an
``ActorBackend`` instance can back one worker only (``count=1``): sharing one backend
between workers would serialize them; functions are passed to thread workers by reference
(no cloudpickle round trip).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import cast

from velocity.byzpy.engine.actor.base import ActorBackend
from velocity.byzpy.engine.actor.channels import ChannelRef, Endpoint, Waiter, channel_router
from velocity.byzpy.engine.actor.factory import parse_backend_spec, resolve_backend
from velocity.byzpy.engine.graph.subtask import SubTask

__all__ = ["ActorPool", "ActorPoolChannel", "ActorPoolConfig"]

_AFFINITY_PREFIX = "worker::"


@dataclass(frozen=True)
class ActorPoolConfig:
    """A group of ``count`` workers on one backend with the same capabilities.

    Parameters
    ----------
    backend : str or ActorBackend
        ``"thread"`` (see :func:`~velocity.byzpy.engine.actor.factory.resolve_backend` for
        the recognised specs), or a backend instance (then ``count`` must be 1).
    count : int
        Number of workers, ``>= 1``.
    capabilities : sequence of str, optional
        Capability tags of these workers; by default inferred from the backend
        (``"thread"``, ``"process"``, ``"tcp://..."``: ``("cpu",)``; ``"gpu"``: ``("gpu",)``;
        an instance: its class's ``capabilities``).
    name : str, optional
        Prefix of the workers' names (``"<name>-0"``, ``"<name>-1"``...; default ``"actor"``).

    Examples
    --------
    >>> ActorPoolConfig(backend="thread", count=4, name="cpu-workers").resolved_capabilities()
    ('cpu',)
    """

    backend: str | ActorBackend
    count: int = 1
    capabilities: Sequence[str] | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.backend, str):
            parse_backend_spec(self.backend)
        elif not isinstance(self.backend, ActorBackend):
            raise ValueError(
                "ActorPoolConfig.backend must be a spec string ('thread'...) or an ActorBackend; "
                f"got {type(self.backend).__name__}"
            )
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"ActorPoolConfig.count must be an int >= 1; got {self.count!r}")
        if isinstance(self.backend, ActorBackend) and self.count != 1:
            raise ValueError(
                "ActorPoolConfig: an ActorBackend instance backs one worker; got count="
                f"{self.count} (pass a spec string such as 'thread' for several workers)"
            )
        if self.capabilities is not None:
            caps = self.capabilities
            if isinstance(caps, str) or not isinstance(caps, Sequence) or not caps:
                raise ValueError(
                    "ActorPoolConfig.capabilities must be None or a non-empty sequence of str; "
                    f"got {caps!r}"
                )
            if not all(isinstance(c, str) and c for c in caps):
                raise ValueError(
                    f"ActorPoolConfig.capabilities must hold non-empty str; got {list(caps)!r}"
                )
            object.__setattr__(self, "capabilities", tuple(caps))
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ValueError(
                f"ActorPoolConfig.name must be None or a non-empty str; got {self.name!r}"
            )

    def resolved_capabilities(self) -> Sequence[str]:
        """The explicit ``capabilities``, else those inferred from the backend."""
        if self.capabilities is not None:
            return tuple(self.capabilities)
        if isinstance(self.backend, str):
            return parse_backend_spec(self.backend).capabilities
        return tuple(type(self.backend).capabilities)


class _PoolWorker:
    """One worker of a pool: its backend (while started), tags, endpoint and state."""

    def __init__(self, *, index: int, name: str, config: ActorPoolConfig) -> None:
        self.index = index
        self.name = name
        self.config = config
        self.affinity = f"{_AFFINITY_PREFIX}{name}"
        self.capabilities = frozenset({*config.resolved_capabilities(), self.affinity})
        self.backend: ActorBackend | None = None
        self.endpoint: Endpoint | None = None
        self.busy = False


def _worker_names(configs: Sequence[ActorPoolConfig]) -> list[tuple[str, ActorPoolConfig]]:
    names: list[tuple[str, ActorPoolConfig]] = []
    unnamed = 0
    for ci, cfg in enumerate(configs):
        if cfg.name is not None:
            prefix = cfg.name
        else:
            prefix = "actor" if unnamed == 0 else f"actor{ci}"
            unnamed += 1
        names.extend((f"{prefix}-{k}", cfg) for k in range(cfg.count))
    seen: set[str] = set()
    for name, _ in names:
        if name in seen:
            raise ValueError(
                f"ActorPool: two workers would be named {name!r}; give the configs distinct names"
            )
        seen.add(name)
    return names


_Offer = _PoolWorker | BaseException


class ActorPool:
    """Workers from one or more :class:`ActorPoolConfig` s, running subtasks.

    Parameters
    ----------
    configs : sequence of ActorPoolConfig
        At least one.

    Examples
    --------
    >>> import asyncio
    >>> from velocity.byzpy.engine.graph.subtask import SubTask
    >>> async def main():
    ...     async with ActorPool([ActorPoolConfig(backend="thread", count=2)]) as pool:
    ...         return await pool.run_many([SubTask(fn=pow, args=(2, k)) for k in range(4)])
    >>> asyncio.run(main())
    [1, 2, 4, 8]
    """

    def __init__(self, configs: Sequence[ActorPoolConfig]) -> None:
        if isinstance(configs, ActorPoolConfig):
            configs = [configs]
        if not isinstance(configs, Sequence) or not configs:
            raise ValueError(
                f"ActorPool needs a non-empty sequence of ActorPoolConfig; got {configs!r}"
            )
        for cfg in configs:
            if not isinstance(cfg, ActorPoolConfig):
                raise ValueError(
                    f"ActorPool configs must be ActorPoolConfig; got {type(cfg).__name__}"
                )
        self.configs = list(configs)
        self._workers = [
            _PoolWorker(index=k, name=name, config=cfg)
            for k, (name, cfg) in enumerate(_worker_names(self.configs))
        ]
        self._lock = threading.Lock()
        self._started = False
        self._start_waiters: list[Waiter[BaseException | None]] | None = None
        self._generation = 0
        self._cursor = 0
        self._waiting: list[tuple[str | None, Waiter[_Offer]]] = []
        self._channels: dict[str, ActorPoolChannel] = {}

    def __repr__(self) -> str:
        state = "started" if self._started else "stopped"
        return f"ActorPool({[w.name for w in self._workers]}, {state})"

    async def __aenter__(self) -> ActorPool:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    @property
    def size(self) -> int:
        """The number of workers."""
        return len(self._workers)

    @property
    def started(self) -> bool:
        return self._started

    @property
    def workers(self) -> Sequence[str]:
        """The workers' names, in order."""
        return tuple(w.name for w in self._workers)

    def worker_affinities(self) -> Sequence[str]:
        """One affinity per worker (``"worker::<name>"``) that pins a subtask to it."""
        return tuple(w.affinity for w in self._workers)

    def capabilities(self) -> Sequence[str]:
        """Every affinity some worker offers, sorted."""
        return tuple(sorted(set().union(*(w.capabilities for w in self._workers))))

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker's backend (idempotent; concurrent calls wait for the first)."""
        waiter: Waiter[BaseException | None] | None = None
        with self._lock:
            if self._started:
                return
            if self._start_waiters is not None:
                waiter = Waiter()
                self._start_waiters.append(waiter)
            else:
                self._start_waiters = []
        if waiter is not None:
            await waiter.wait(None)
            if isinstance(waiter.value, BaseException):
                raise waiter.value
            return
        error: BaseException | None = None
        try:
            await self._start_workers()
        except BaseException as exc:
            error = exc
            raise
        finally:
            with self._lock:
                self._started = error is None
                waiters, self._start_waiters = self._start_waiters or [], None
                for w in waiters:
                    w.deliver(error)

    async def _start_workers(self) -> None:
        backends = [resolve_backend(w.config.backend) for w in self._workers]
        started: list[ActorBackend] = []
        try:
            for backend in backends:
                await backend.start()
                started.append(backend)
        except BaseException:
            for backend in started:
                await backend.close()
            raise
        for worker, backend in zip(self._workers, backends, strict=True):
            worker.backend = backend
            worker.busy = False
            worker.endpoint = Endpoint.local()
            channel_router.register(worker.endpoint)

    async def shutdown(self) -> None:
        """Close every worker (after its running subtask); waiting subtasks fail with
        :class:`RuntimeError`. The next use starts the pool again."""
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._generation += 1
            waiting, self._waiting = self._waiting, []
            for _, waiter in waiting:
                waiter.deliver(RuntimeError("ActorPool was shut down"))
            backends = [w.backend for w in self._workers]
            for w in self._workers:
                if w.endpoint is not None:
                    channel_router.unregister(w.endpoint)
                w.backend, w.endpoint, w.busy = None, None, False
            self._channels.clear()
        for backend in backends:
            if backend is not None:
                await backend.close()

    # -- running subtasks --------------------------------------------------------------

    async def run_subtask(self, subtask: SubTask) -> object:
        """Run ``subtask`` on a worker offering its affinity; retry, then raise."""
        if not isinstance(subtask, SubTask):
            raise TypeError(
                f"ActorPool.run_subtask expects a SubTask; got {type(subtask).__name__}"
            )
        retries = subtask.max_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"SubTask.max_retries must be an int >= 0; got {retries!r}")
        await self.start()
        attempts = retries + 1
        for attempt in range(1, attempts + 1):
            worker, generation = await self._acquire(subtask.affinity)
            try:
                backend = worker.backend
                if backend is None:
                    raise RuntimeError("ActorPool was shut down")
                return await backend.run(subtask.fn, *subtask.args, **dict(subtask.kwargs))
            except Exception as exc:
                if attempt == attempts:
                    if attempts > 1:
                        exc.add_note(
                            f"subtask {subtask.name or subtask.fn!r} failed {attempts} times "
                            f"(max_retries={retries}); this is the last error"
                        )
                    raise
            finally:
                self._release(worker, generation)
        raise AssertionError("unreachable")  # pragma: no cover

    async def run_many(self, subtasks: Sequence[SubTask]) -> list[object]:
        """Run ``subtasks`` concurrently over the pool; their results, in order."""
        await self.start()
        return list(await asyncio.gather(*(self.run_subtask(st) for st in subtasks)))

    async def _acquire(self, affinity: str | None) -> tuple[_PoolWorker, int]:
        with self._lock:
            if not self._started:
                raise RuntimeError("ActorPool was shut down")
            generation = self._generation
            candidates = [
                w for w in self._workers if affinity is None or affinity in w.capabilities
            ]
            if not candidates:
                raise ValueError(
                    f"ActorPool: no worker offers affinity {affinity!r}; available: "
                    f"{list(self.capabilities())}"
                )
            idle = [w for w in candidates if not w.busy]
            if idle:
                n = len(self._workers)
                worker = min(idle, key=lambda w: (w.index - self._cursor) % n)
                worker.busy = True
                self._cursor = worker.index + 1
                return worker, generation
            waiter: Waiter[_Offer] = Waiter()
            self._waiting.append((affinity, waiter))
        try:
            await waiter.wait(None)
        except BaseException:
            with self._lock:
                if not waiter.delivered:
                    self._waiting = [(a, w) for a, w in self._waiting if w is not waiter]
                    raise
            if isinstance(waiter.value, _PoolWorker):
                self._release(waiter.value, generation)
            raise
        offer = waiter.value
        if isinstance(offer, BaseException):
            raise offer
        return cast(_PoolWorker, offer), generation

    def _release(self, worker: _PoolWorker, generation: int) -> None:
        with self._lock:
            if generation != self._generation or not self._started:
                return
            k = 0
            while k < len(self._waiting):
                affinity, waiter = self._waiting[k]
                if affinity is None or affinity in worker.capabilities:
                    del self._waiting[k]
                    if waiter.deliver(worker):
                        return
                    continue
                k += 1
            worker.busy = False

    # -- channels ----------------------------------------------------------------------

    async def open_channel(self, name: str) -> ActorPoolChannel:
        """Bind a channel named ``name`` on every worker; the same object on later calls
        with that name (until :meth:`shutdown`)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"ActorPool.open_channel: name must be a non-empty str; got {name!r}")
        await self.start()
        with self._lock:
            cached = self._channels.get(name)
            if cached is not None:
                return cached
            channels: dict[str, ChannelRef] = {}
            endpoints: dict[str, Endpoint] = {}
            for w in self._workers:
                if w.endpoint is None:
                    raise RuntimeError("ActorPool was shut down")
                channels[w.name] = ChannelRef(w.endpoint, name)
                endpoints[w.name] = w.endpoint
            pool_channel = ActorPoolChannel(name=name, channels=channels, endpoints=endpoints)
            self._channels[name] = pool_channel
            return pool_channel


class ActorPoolChannel:
    """A channel bound on every worker of a pool, with send/recv keyed by worker name.

    Parameters
    ----------
    name : str
        The channel's name.
    channels : mapping of str to ChannelRef
        Worker name -> its handle on the channel.
    endpoints : mapping of str to Endpoint
        Worker name -> its endpoint.

    Notes
    -----
    Payloads travel by reference between the thread workers of this process (a
    cross-process channel would carry tensors as safetensors buffers).
    :meth:`recv` returns ``None`` when nothing arrives within ``timeout`` (as ByzPy).
    """

    def __init__(
        self,
        *,
        name: str,
        channels: Mapping[str, ChannelRef],
        endpoints: Mapping[str, Endpoint],
    ) -> None:
        self.name = name
        self._channels = dict(channels)
        self._endpoints = dict(endpoints)

    def __repr__(self) -> str:
        return f"ActorPoolChannel({self.name!r}, workers={list(self._channels)})"

    @property
    def workers(self) -> Sequence[str]:
        """The names of the workers the channel is bound on."""
        return tuple(self._channels)

    def channel(self, worker: str) -> ChannelRef:
        """``worker``'s handle on the channel."""
        try:
            return self._channels[worker]
        except KeyError:
            raise KeyError(
                f"channel {self.name!r}: no worker {worker!r}; workers: {list(self._channels)}"
            ) from None

    def endpoint(self, worker: str) -> Endpoint:
        """``worker``'s endpoint."""
        try:
            return self._endpoints[worker]
        except KeyError:
            raise KeyError(
                f"channel {self.name!r}: no endpoint for {worker!r}; workers: "
                f"{list(self._endpoints)}"
            ) from None

    async def send(self, sender: str, recipient: str, payload: object) -> None:
        """Send ``payload`` from worker ``sender`` to worker ``recipient``."""
        await self.channel(sender).send(self.endpoint(recipient), payload)

    async def recv(self, worker: str, *, timeout: float | None = None) -> object:
        """The next payload sent to ``worker`` (``None`` after ``timeout`` seconds)."""
        return await self.channel(worker).recv(timeout=timeout)
