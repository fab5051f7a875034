"""Actors: backends that run one call at a time (:class:`ActorBackend`), the
``"thread"`` backend, in-process channels, and :func:`resolve_backend`."""

from velocity.byzpy.engine.actor.backends.thread import ThreadActorBackend
from velocity.byzpy.engine.actor.base import ActorBackend
from velocity.byzpy.engine.actor.channels import ChannelRef, Endpoint
from velocity.byzpy.engine.actor.factory import resolve_backend

__all__ = ["ActorBackend", "ChannelRef", "Endpoint", "ThreadActorBackend", "resolve_backend"]
