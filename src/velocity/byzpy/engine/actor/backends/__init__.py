"""The actor backends: :class:`ThreadActorBackend` here; the Ray backends (``"process"``,
``"gpu"``, ``"tcp://"``) in :mod:`velocity.byzpy.engine.actor.backends.ray`, imported on
demand by :func:`~velocity.byzpy.engine.actor.factory.resolve_backend` (the ``ray`` extra)."""

from velocity.byzpy.engine.actor.backends.thread import ThreadActorBackend

__all__ = ["ThreadActorBackend"]
