"""The actor backends this build provides: :class:`ThreadActorBackend`."""

from velocity.byzpy.engine.actor.backends.thread import ThreadActorBackend

__all__ = ["ThreadActorBackend"]
