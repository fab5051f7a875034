"""Ray actor backends: ``"process"``, ``"gpu"`` and ``"tcp://host:port"``.

Each backend is one Ray actor (a worker process of a Ray cluster) that runs one call at a
time, in the order the calls were made, as :class:`ActorBackend` requires:

==========================  =============================================================
spec                        backend
==========================  =============================================================
``"process"``               :class:`RayActorBackend`: a CPU actor on the Ray instance this
                            process is connected to (or, when it is not, ``RAY_ADDRESS``'s
                            cluster, else a local Ray instance it starts)
``"gpu"``                   :class:`RayGPUActorBackend`: the same with ``num_gpus=1``; its
                            workers offer the ``"gpu"`` capability
``"tcp://host:port"``       :class:`RayClusterActorBackend`: a CPU actor on the Ray cluster
                            whose GCS listens at ``host:port`` (the head node's ``ray start
                            --head --port=PORT``), joined with ``ray.init(address=
                            "host:port")``, as ``ray start --address`` joins a worker
==========================  =============================================================

What travels, and how
---------------------
The function of a call and every argument that is not a tensor are serialized by Ray
(cloudpickle): acceptable between the processes of one's own Ray cluster, never between
parties that do not trust each other. Tensors — top-level arguments, keyword arguments and
results, and those inside lists, tuples and dicts of them — travel as safetensors buffers
(exact bits, dtype and shape) and arrive on the CPU: a function that wants the GPU moves them
itself. A coroutine function runs to completion on an event loop the actor keeps for its whole
life. An exception raised by the call is raised to the awaiting caller (as Ray re-raises it:
an instance of the original exception class, its message followed by the remote traceback).

The actor sets ``torch.set_num_threads`` to the caller's ``torch.get_num_threads()`` (taken
at :meth:`~RayActorBackend.start`) unless ``num_threads`` is given, so float reductions split
across threads give the same bits as in this process, and waits passively at OpenMP barriers
(``OMP_WAIT_POLICY=PASSIVE``, see :func:`velocity.sim._ray.actor_runtime_env`).

Starting never waits forever: a ``"gpu"`` backend without a GPU in the cluster (or, before
any Ray instance is running here, on this machine) is refused at once, and an actor that the
cluster cannot place within ``start_timeout_s`` is killed and reported, both as
:class:`~velocity.errors.ConfigurationError` naming ``backend='thread'`` as the alternative.
A Ray backend cannot host a node object (:class:`~velocity.byzpy.engine.node.actors.NodeActor`
needs calls that share the node's memory, ``shares_memory``).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar, cast, overload

import torch
from torch import Tensor

from velocity.byzpy.engine.actor.base import ActorBackend
from velocity.errors import ConfigurationError
from velocity.sim._ray import actor_runtime_env, check_resources, connect, require_ray

__all__ = ["RayActorBackend", "RayClusterActorBackend", "RayGPUActorBackend"]

T = TypeVar("T")

_THREAD = "use backend='thread' (actors on worker threads of this process)"


class _WireTensor:
    """A tensor as safetensors bytes (what crosses between the caller and the actor)."""

    __slots__ = ("data",)

    def __init__(self, tensor: Tensor) -> None:
        from safetensors.torch import save

        self.data = save({"t": tensor.detach().to("cpu").contiguous()})

    def __reduce__(self) -> tuple[Callable[[bytes], _WireTensor], tuple[bytes]]:
        return _wire_from_bytes, (self.data,)

    def tensor(self) -> Tensor:
        from safetensors.torch import load

        return load(self.data)["t"]


def _wire_from_bytes(data: bytes) -> _WireTensor:
    wire = _WireTensor.__new__(_WireTensor)
    wire.data = data
    return wire


def _pack(value: object) -> object:
    """``value`` with every tensor (also in lists, tuples and dicts) as a :class:`_WireTensor`."""
    if isinstance(value, Tensor):
        return _WireTensor(value)
    if isinstance(value, list):
        return [_pack(v) for v in value]
    if type(value) is tuple:
        return tuple(_pack(v) for v in value)
    if type(value) is dict:
        return {k: _pack(v) for k, v in value.items()}
    return value


def _unpack(value: object) -> object:
    """Inverse of :func:`_pack`."""
    if isinstance(value, _WireTensor):
        return value.tensor()
    if isinstance(value, list):
        return [_unpack(v) for v in value]
    if type(value) is tuple:
        return tuple(_unpack(v) for v in value)
    if type(value) is dict:
        return {k: _unpack(v) for k, v in value.items()}
    return value


class _Host:
    """The body of the Ray actor: runs each call, keeping one event loop for coroutines."""

    def __init__(self, num_threads: int) -> None:
        torch.set_num_threads(num_threads)
        self._loop: asyncio.AbstractEventLoop | None = None

    def ready(self) -> dict[str, object]:
        return {"pid": os.getpid(), "threads": torch.get_num_threads()}

    def call(self, fn: Callable[..., object], args: object, kwargs: object) -> object:
        # run() packed a tuple and a dict
        result = fn(
            *cast(tuple[object, ...], _unpack(args)), **cast(dict[str, object], _unpack(kwargs))
        )
        if inspect.isawaitable(result):
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
            result = self._loop.run_until_complete(_awaited(result))
        return _pack(result)

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


async def _awaited(value: Awaitable[T]) -> T:
    return await value


class RayActorBackend(ActorBackend):
    """One Ray CPU actor (spec ``"process"``; see the module doc).

    Parameters
    ----------
    address : str, optional
        The Ray cluster (``None``: this process's connection, else ``RAY_ADDRESS``, else a
        local instance; ``"host:port"``: the cluster whose GCS listens there).
    num_cpus, num_gpus : float
        What the actor reserves (>= 0); ``num_cpus=1`` by default.
    num_threads : int, optional
        The actor's ``torch.set_num_threads``; default this process's thread count.
    start_timeout_s : float
        How long :meth:`start` waits for the cluster to place the actor (> 0 seconds).
    """

    name: ClassVar[str] = "process"
    capabilities: ClassVar[tuple[str, ...]] = ("cpu",)
    shares_memory: ClassVar[bool] = False

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        num_threads: int | None = None,
        start_timeout_s: float = 60.0,
    ) -> None:
        owner = type(self).__name__
        for what, amount in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
            if isinstance(amount, bool) or not isinstance(amount, int | float) or not amount >= 0:
                raise ConfigurationError(f"{owner}.{what} must be a number >= 0; got {amount!r}")
        if num_threads is not None and (
            isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
        ):
            raise ConfigurationError(
                f"{owner}.num_threads must be None or an int >= 1; got {num_threads!r}"
            )
        if (
            isinstance(start_timeout_s, bool)
            or not isinstance(start_timeout_s, int | float)
            or not start_timeout_s > 0
        ):
            raise ConfigurationError(
                f"{owner}.start_timeout_s must be a number > 0; got {start_timeout_s!r}"
            )
        self.address = address
        self.num_cpus = float(num_cpus)
        self.num_gpus = float(num_gpus)
        self.num_threads = num_threads
        self.start_timeout_s = float(start_timeout_s)
        self._actor: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "started" if self._actor is not None else "stopped"
        where = "" if self.address is None else f" at {self.address}"
        return f"{type(self).__name__}({self.name!r}{where}, {state})"

    @property
    def started(self) -> bool:
        """Whether the backend accepts calls."""
        return self._actor is not None

    @property
    def spec(self) -> str:
        """The spec string this backend answers to."""
        return self.name

    async def start(self) -> None:
        with self._lock:
            if self._actor is not None:
                return
        self._check_local_gpu()
        ray = connect(self.address, what=f"actor backend {self.spec!r}")
        request = {"CPU": self.num_cpus, "GPU": self.num_gpus}
        try:
            check_resources(ray, request, what=f"actor backend {self.spec!r}")
        except ConfigurationError as error:
            raise ConfigurationError(f"{error}; {_THREAD}") from None
        threads = self.num_threads or torch.get_num_threads()
        host = ray.remote(max_restarts=0)(_Host).options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, runtime_env=actor_runtime_env()
        )
        actor = host.remote(threads)
        try:
            await asyncio.wait_for(_wait(actor.ready.remote()), timeout=self.start_timeout_s)
        except TimeoutError:
            ray.kill(actor)
            raise ConfigurationError(
                f"actor backend {self.spec!r}: the Ray cluster placed no actor asking for "
                f"{self.num_cpus:g} CPU and {self.num_gpus:g} GPU within "
                f"{self.start_timeout_s:g} s (free: {ray.available_resources()}); {_THREAD}"
            ) from None
        except BaseException:
            ray.kill(actor)
            raise
        with self._lock:
            if self._actor is None:
                self._actor = actor
                return
        ray.kill(actor)  # another start() won the race

    def _check_local_gpu(self) -> None:
        """Refuse a GPU request at once when no Ray instance runs here yet and neither this
        machine nor ``RAY_ADDRESS`` could provide one (a local Ray instance would have none)."""
        if self.num_gpus <= 0 or self.address is not None or os.environ.get("RAY_ADDRESS"):
            return
        ray = require_ray(f"actor backend {self.spec!r}")

        if not ray.is_initialized() and torch.cuda.device_count() == 0:
            raise ConfigurationError(
                f"actor backend {self.spec!r} needs a GPU, and this machine has none for a "
                f"local Ray instance (connect to a Ray cluster with GPUs first: ray.init("
                f"address=...) or RAY_ADDRESS); or {_THREAD}"
            )

    async def close(self) -> None:
        with self._lock:
            actor, self._actor = self._actor, None
        if actor is None:
            return
        import ray

        try:
            await _wait(actor.close.remote())  # after the calls already queued
        except ray.exceptions.RayActorError:
            pass  # it died already
        finally:
            ray.kill(actor)

    @overload
    async def run(self, fn: Callable[..., Awaitable[T]], *args: object, **kwargs: object) -> T: ...

    @overload
    async def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T: ...

    async def run(self, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
        if not callable(fn):
            raise TypeError(f"{type(self).__name__}.run: fn must be callable; got {fn!r}")
        with self._lock:
            actor = self._actor
            if actor is None:
                raise RuntimeError(
                    f"{self!r} is not running; await start() first (or it was closed)"
                )
            ref = actor.call.remote(fn, _pack(args), _pack(dict(kwargs)))
        return _unpack(await _wait(ref))


class RayGPUActorBackend(RayActorBackend):
    """One Ray actor with one GPU (spec ``"gpu"``): the ``"gpu"`` capability."""

    name: ClassVar[str] = "gpu"
    capabilities: ClassVar[tuple[str, ...]] = ("gpu",)

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 1.0,
        num_threads: int | None = None,
        start_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(
            address=address,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            num_threads=num_threads,
            start_timeout_s=start_timeout_s,
        )
        if not self.num_gpus > 0:
            raise ConfigurationError(f"RayGPUActorBackend.num_gpus must be > 0; got {num_gpus!r}")


class RayClusterActorBackend(RayActorBackend):
    """One Ray CPU actor on the cluster at ``address`` (spec ``"tcp://host:port"``)."""

    name: ClassVar[str] = "tcp"

    def __init__(
        self,
        address: str,
        *,
        num_cpus: float = 1.0,
        num_threads: int | None = None,
        start_timeout_s: float = 60.0,
    ) -> None:
        if not isinstance(address, str) or not address:
            raise ConfigurationError(
                f"RayClusterActorBackend.address must be 'host:port'; got {address!r}"
            )
        super().__init__(
            address=address,
            num_cpus=num_cpus,
            num_threads=num_threads,
            start_timeout_s=start_timeout_s,
        )

    @property
    def spec(self) -> str:
        return f"tcp://{self.address}"


async def _wait(ref: Any) -> object:
    """Await a Ray object reference on any event loop (its ``concurrent.futures`` future)."""
    return await asyncio.wrap_future(ref.future())
