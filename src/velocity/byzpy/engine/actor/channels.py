"""In-process channels between actors: endpoints, mailboxes and :class:`ChannelRef`.

Every actor of an :class:`~velocity.byzpy.engine.graph.pool.ActorPool` has an
:class:`Endpoint`; a channel named ``name`` bound on it is a FIFO :class:`Mailbox`. A
:class:`ChannelRef` sends to any endpoint of this process and receives from its own mailbox.

The primitives here are safe to use from several threads and several event loops: a
delivery from any thread wakes an ``await`` on any loop with ``loop.call_soon_threadsafe``,
and a value handed to a receiver whose wait times out at that moment is returned to it,
never lost.

Notes
-----
Payloads are passed by reference (the thread backend shares this process's memory). A
cross-process channel would move tensors as safetensors buffers; this build has only
in-process (``"thread"``) endpoints, and sending to another scheme raises
:class:`~velocity.errors.ConfigurationError`.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from velocity.errors import ConfigurationError

__all__ = ["ChannelRef", "Endpoint", "Mailbox", "Waiter", "channel_router"]

T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    """Where an actor can be reached.

    Parameters
    ----------
    scheme : str
        ``"thread"`` (this process) in this build.
    address : str
        ``""`` for in-process endpoints (``"host:port"`` for remote ones).
    actor_id : str
        Unique within ``scheme`` and ``address``.
    """

    scheme: str
    address: str
    actor_id: str

    @classmethod
    def local(cls) -> Endpoint:
        """A fresh in-process endpoint."""
        return cls(scheme="thread", address="", actor_id=uuid.uuid4().hex)


class Waiter(Generic[T]):
    """One ``await`` for one value, woken from any thread.

    Created on the running loop; :meth:`deliver` (from any thread) stores the value and
    wakes the awaiting task. The owner of the waiter list decides, under its own lock,
    whether a timed-out waiter was already given a value (:attr:`delivered`).
    """

    __slots__ = ("_future", "_loop", "delivered", "value")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._future: asyncio.Future[None] = self._loop.create_future()
        self.delivered = False
        self.value: T | None = None

    def deliver(self, value: T) -> bool:
        """Give the waiter ``value`` (call under the owner's lock); ``False`` if its loop
        is gone, in which case the value was not taken."""
        try:
            self._loop.call_soon_threadsafe(_wake, self._future)
        except RuntimeError:  # the waiter's loop is closed: nobody will read the value
            return False
        self.value = value
        self.delivered = True
        return True

    async def wait(self, timeout: float | None) -> bool:
        """Wait until delivered or ``timeout`` seconds passed; whether it was woken."""
        done, _ = await asyncio.wait({self._future}, timeout=timeout)
        return bool(done)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Mailbox(Generic[T]):
    """A thread-safe FIFO queue whose :meth:`get` is awaited on any event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: deque[T] = deque()
        self._waiters: deque[Waiter[T]] = deque()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def put(self, item: T) -> None:
        """Hand ``item`` to the oldest waiting receiver, or queue it."""
        with self._lock:
            while self._waiters:
                if self._waiters.popleft().deliver(item):
                    return
            self._items.append(item)

    async def get(self, *, timeout: float | None = None) -> T:
        """The next item; :class:`TimeoutError` if none came within ``timeout`` seconds."""
        with self._lock:
            if self._items:
                return self._items.popleft()
            waiter: Waiter[T] = Waiter()
            self._waiters.append(waiter)
        try:
            await waiter.wait(timeout)
        finally:
            with self._lock:
                if not waiter.delivered and waiter in self._waiters:
                    self._waiters.remove(waiter)
                taken = waiter.delivered
        if taken:
            return cast(T, waiter.value)
        raise TimeoutError(f"no item within {timeout} s")


class _ChannelRouter:
    """This process's endpoints and their named mailboxes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._boxes: dict[str, dict[str, Mailbox[tuple[Endpoint, object]]]] = {}

    def register(self, endpoint: Endpoint) -> None:
        with self._lock:
            self._boxes.setdefault(endpoint.actor_id, {})

    def unregister(self, endpoint: Endpoint) -> None:
        with self._lock:
            self._boxes.pop(endpoint.actor_id, None)

    def mailbox(self, endpoint: Endpoint, name: str) -> Mailbox[tuple[Endpoint, object]]:
        if endpoint.scheme != "thread":
            raise ConfigurationError(
                f"channel {name!r}: endpoint scheme {endpoint.scheme!r} is not reachable; this "
                "build has in-process ('thread') channels only"
            )
        with self._lock:
            boxes = self._boxes.get(endpoint.actor_id)
            if boxes is None:
                raise RuntimeError(
                    f"channel {name!r}: no actor {endpoint.actor_id!r} in this process "
                    "(its pool was shut down?)"
                )
            return boxes.setdefault(name, Mailbox())


channel_router = _ChannelRouter()


class ChannelRef:
    """A channel named ``name`` bound on the local endpoint ``local``.

    Parameters
    ----------
    local : Endpoint
        The endpoint this handle receives on (and sends from).
    name : str
        The channel's name; a message goes to the mailbox of that name at the recipient.
    """

    __slots__ = ("_local", "_name")

    def __init__(self, local: Endpoint, name: str) -> None:
        self._local = local
        self._name = name
        channel_router.mailbox(local, name)  # bind (create) the mailbox now

    def __repr__(self) -> str:
        return f"ChannelRef({self._name!r}, {self._local.actor_id[:8]})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def endpoint(self) -> Endpoint:
        return self._local

    async def send(self, to: Endpoint, payload: object) -> None:
        """Put ``payload`` in the recipient's mailbox for this channel (by reference)."""
        channel_router.mailbox(to, self._name).put((self._local, payload))

    async def recv(self, *, timeout: float | None = None) -> object:
        """The next payload sent to this endpoint on this channel.

        Returns ``None`` when nothing arrived within ``timeout`` seconds (as ByzPy does).
        """
        box = channel_router.mailbox(self._local, self._name)
        try:
            _, payload = await box.get(timeout=timeout)
        except TimeoutError:
            return None
        return payload
