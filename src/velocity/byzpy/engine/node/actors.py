"""Node actors: a node object living on an actor backend, called with ``await``.

``await HonestNodeActor.spawn(MyNode, backend="thread", kwargs={...})`` constructs
``MyNode(**kwargs)`` on the backend; afterwards every method of the node is called through
the actor as a coroutine (``await actor.honest_gradient_for_next_batch()``), one call at a
time per actor, while different actors run in parallel. The node class is never pickled:
the ``"thread"`` backend constructs it in this process. Backends are resolved by
:func:`velocity.byzpy.engine.actor.factory.resolve_backend` (see there which exist); the Ray
backends (``"process"``, ``"gpu"``, ``"tcp://..."``) are refused here, since a node's state
would not persist between calls in another process (they serve ``ActorPool`` subtasks).

Notes
-----
ByzPy's ``ByzantineNodeActor.spawn`` defaults to ``backend="process"``; here both default
to ``"thread"``, the backend that runs without extra services.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import ClassVar, TypeVar

from torch import Tensor

from velocity.byzpy.engine.actor.factory import ActorBackend, resolve_backend
from velocity.byzpy.engine.node.base import ByzantineNode, HonestNode

__all__ = [
    "ByzantineNodeActor",
    "HonestNodeActor",
    "NodeActor",
    "call_node",
    "check_nodes",
    "node_vector",
]

A = TypeVar("A", bound="NodeActor")


class NodeActor:
    """A node object on an actor backend; its methods are awaited through the actor.

    Parameters
    ----------
    backend : ActorBackend
        The started backend the node lives on.
    node : object
        The node object (constructed on the backend).
    """

    def __init__(self, backend: ActorBackend, node: object) -> None:
        self._backend = backend
        self._node = node
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self._node).__name__}, backend={self._backend.name})"

    @property
    def node(self) -> object:
        """The node object itself (in this process for the ``"thread"`` backend)."""
        return self._node

    @property
    def backend(self) -> ActorBackend:
        return self._backend

    @property
    def closed(self) -> bool:
        return self._closed

    async def call(self, method: str, *args: object, **kwargs: object) -> object:
        """Await ``node.<method>(*args, **kwargs)`` run on the actor."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed; it cannot run {method}()")
        fn = getattr(self._node, method, None)
        if not callable(fn):
            raise AttributeError(f"{type(self._node).__name__} has no method {method!r}")
        return await self._backend.run(fn, *args, **kwargs)

    def __getattr__(self, name: str) -> Callable[..., Awaitable[object]]:
        if name.startswith("_"):
            raise AttributeError(name)
        if not callable(getattr(self._node, name, None)):
            raise AttributeError(f"{type(self._node).__name__} has no method {name!r}")

        async def method(*args: object, **kwargs: object) -> object:
            return await self.call(name, *args, **kwargs)

        method.__name__ = name
        return method

    async def close(self) -> None:
        """Stop the actor's backend (idempotent)."""
        if not self._closed:
            self._closed = True
            await self._backend.close()

    node_base: ClassVar[type] = object
    """The class a node built by :meth:`spawn` must be an instance of."""

    @classmethod
    async def spawn(
        cls: type[A],
        node_cls: Callable[..., object],
        *,
        backend: str | ActorBackend = "thread",
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
    ) -> A:
        """Construct ``node_cls(*args, **kwargs)`` on ``backend``; it must be a
        :attr:`node_base` (an HonestNode for :class:`HonestNodeActor`, a ByzantineNode for
        :class:`ByzantineNodeActor`)."""
        base = cls.node_base
        if not callable(node_cls):
            raise TypeError(f"{cls.__name__}.spawn: node_cls must be a class; got {node_cls!r}")
        resolved = resolve_backend(backend)
        if not resolved.shares_memory:
            from velocity.errors import ConfigurationError

            raise ConfigurationError(
                f"{cls.__name__}.spawn: backend {resolved.name!r} runs calls in another "
                "process (a Ray actor), where the node built by one call is not the node a "
                "later call sees; node actors live in this process: use backend='thread'"
            )
        await resolved.start()
        try:
            node = await resolved.run(node_cls, *args, **dict(kwargs or {}))
        except BaseException:
            await resolved.close()
            raise
        if not isinstance(node, base):
            await resolved.close()
            raise TypeError(
                f"{cls.__name__}.spawn: {getattr(node_cls, '__name__', node_cls)!r} built a "
                f"{type(node).__name__}, not a {base.__name__}"
            )
        return cls(resolved, node)


class HonestNodeActor(NodeActor):
    """An :class:`~velocity.byzpy.engine.node.base.HonestNode` on an actor."""

    node_base: ClassVar[type] = HonestNode


class ByzantineNodeActor(NodeActor):
    """A :class:`~velocity.byzpy.engine.node.base.ByzantineNode` on an actor."""

    node_base: ClassVar[type] = ByzantineNode


async def call_node(node: object, method: str, *args: object, **kwargs: object) -> object:
    """``node.method(*args, **kwargs)``: awaited through its actor when ``node`` is a
    :class:`NodeActor`, else run in a worker thread (a plain node object)."""
    if isinstance(node, NodeActor):
        return await node.call(method, *args, **kwargs)
    fn = getattr(node, method, None)
    if not callable(fn):
        raise AttributeError(f"{type(node).__name__} has no method {method!r}")
    return await asyncio.to_thread(fn, *args, **kwargs)


def check_nodes(
    nodes: object,
    actor: type[NodeActor],
    owner: str,
    what: str,
    methods: Sequence[str] = (),
) -> list[object]:
    """``nodes`` as a list of ``actor`` actors or plain nodes of its :attr:`NodeActor.node_base`,
    each having ``methods``; else ``ConfigurationError`` naming ``owner.what[index]``."""
    from velocity.errors import ConfigurationError

    kinds = (actor, actor.node_base)
    names = " or ".join(k.__name__ for k in kinds)
    if isinstance(nodes, str | bytes) or not isinstance(nodes, Sequence):
        raise ConfigurationError(f"{owner}.{what} must be a list of {names}; got {nodes!r}")
    for index, node in enumerate(nodes):
        if not isinstance(node, kinds):
            raise ConfigurationError(
                f"{owner}.{what}[{index}] must be a {names}; got {type(node).__name__}"
            )
        obj = node.node if isinstance(node, NodeActor) else node
        missing = [m for m in methods if not callable(getattr(obj, m, None))]
        if missing:
            raise ConfigurationError(
                f"{owner}.{what}[{index}] ({type(obj).__name__}) lacks {', '.join(missing)}; "
                "mix in velocity.byzpy.engine.node.mixin.P2PHonestMixin / P2PByzantineMixin"
            )
    return list(nodes)


def node_vector(value: object, who: str, d: int | None) -> Tensor:
    """What a node method returned, as a flat detached vector: a non-empty tensor of ``d``
    entries (any length when ``None``), else ``ValidationError`` naming ``who``."""
    from velocity.errors import ValidationError

    if not isinstance(value, Tensor):
        raise ValidationError(f"{who} returned {type(value).__name__}; expected a torch.Tensor")
    if value.numel() == 0 or (d is not None and value.numel() != d):
        want = "a non-empty vector" if d is None else f"{d} entries"
        raise ValidationError(
            f"{who} returned a tensor of shape {tuple(value.shape)}; expected {want}"
        )
    return value.detach().reshape(-1)
