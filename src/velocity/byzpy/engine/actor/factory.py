"""Turn user specs into actor backends: :func:`resolve_backend`.

==========================  ============================================================
spec                        backend
==========================  ============================================================
``"thread"``                :class:`ThreadActorBackend`: a worker thread of this process
an ``ActorBackend``         itself
``"process"``, ``"gpu"``,   recognised, but they need Ray or a remote actor service,
``"tcp://host:port"``       which this build does not provide:
                            :class:`~velocity.errors.ConfigurationError`
``"ucx://host:port"``       not supported: :class:`ValueError`
==========================  ============================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from velocity.byzpy.engine.actor.backends.thread import ThreadActorBackend
from velocity.byzpy.engine.actor.base import ActorBackend
from velocity.errors import ConfigurationError

__all__ = [
    "ActorBackend",
    "BackendSpec",
    "ThreadActorBackend",
    "parse_backend_spec",
    "resolve_backend",
]

_ACCEPTED = (
    "'thread', 'process', 'gpu', 'tcp://host:port' or an ActorBackend instance "
    "('thread' is the one this build runs)"
)


@dataclass(frozen=True)
class BackendSpec:
    """A parsed backend spec string: its kind, and ``host``/``port`` for ``"tcp"``."""

    kind: Literal["thread", "process", "gpu", "tcp"]
    host: str | None = None
    port: int | None = None

    @property
    def capabilities(self) -> tuple[str, ...]:
        """What workers of this kind offer to affinity routing."""
        return ("gpu",) if self.kind == "gpu" else ("cpu",)


def parse_backend_spec(spec: str) -> BackendSpec:
    """Check a backend spec string and parse it (nothing is started).

    Raises
    ------
    ValueError
        An unknown spec, a malformed ``tcp://`` address, or a ``ucx://`` spec.
    """
    if not isinstance(spec, str):
        raise ValueError(
            f"backend spec must be a str; got {type(spec).__name__}; accepted: {_ACCEPTED}"
        )
    if spec in ("thread", "process", "gpu"):
        return BackendSpec(kind=spec)  # type: ignore[arg-type]
    if spec.startswith("ucx://"):
        raise ValueError(
            f"backend {spec!r}: UCX actors are not supported; accepted specs: {_ACCEPTED}"
        )
    if spec.startswith("tcp://"):
        host, sep, port_text = spec[len("tcp://") :].rpartition(":")
        if not sep or not host:
            raise ValueError(f"backend {spec!r}: expected 'tcp://host:port'")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(
                f"backend {spec!r}: the port must be an integer in [1, 65535]; got {port_text!r}"
            )
        return BackendSpec(kind="tcp", host=host, port=int(port_text))
    raise ValueError(f"unknown actor backend spec {spec!r}; accepted: {_ACCEPTED}")


def resolve_backend(spec: str | ActorBackend) -> ActorBackend:
    """Resolve an actor backend from a spec string or an instance.

    Parameters
    ----------
    spec : str or ActorBackend
        ``"thread"`` for a worker thread of this process, or an existing backend (returned
        as is). ``"process"``, ``"gpu"`` and ``"tcp://host:port"`` are recognised but not
        available in this build.

    Returns
    -------
    ActorBackend
        A new backend (not started) for a spec string, else ``spec`` itself.

    Raises
    ------
    ConfigurationError
        For ``"process"``, ``"gpu"`` and ``"tcp://host:port"``: they need Ray or a remote
        actor service that this build does not provide; use ``"thread"``.
    ValueError
        For an unknown or malformed spec and for ``"ucx://..."``.

    Examples
    --------
    >>> backend = resolve_backend("thread")
    >>> isinstance(backend, ThreadActorBackend)
    True
    >>> resolve_backend(backend) is backend
    True
    """
    if isinstance(spec, ActorBackend):
        return spec
    parsed = parse_backend_spec(spec)
    if parsed.kind == "thread":
        return ThreadActorBackend()
    need = {
        "process": "worker processes (Ray)",
        "gpu": "GPU worker processes (Ray)",
        "tcp": f"a remote actor server at {parsed.host}:{parsed.port}",
    }[parsed.kind]
    raise ConfigurationError(
        f"actor backend {spec!r} needs {need}, which this build does not provide yet; "
        "use backend='thread' (actors on worker threads of this process)"
    )
