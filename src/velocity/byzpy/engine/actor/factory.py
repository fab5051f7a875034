"""Turn user specs into actor backends: :func:`resolve_backend`.

==========================  ============================================================
spec                        backend
==========================  ============================================================
``"thread"``                :class:`ThreadActorBackend`: a worker thread of this process
``"process"``               ``RayActorBackend``: a Ray CPU actor (a worker process) on the
                            Ray instance this process is connected to, else
                            ``RAY_ADDRESS``'s cluster, else a local Ray instance started at
                            the first ``start()``
``"gpu"``                   ``RayGPUActorBackend``: a Ray actor with ``num_gpus=1`` (refused
                            at start, not waited for, when the cluster has no GPU)
``"tcp://host:port"``       ``RayClusterActorBackend``: a Ray CPU actor on the Ray cluster
                            whose GCS listens at ``host:port`` (its head's ``ray start
                            --head --port=PORT``), joined by ``ray.init(address=
                            "host:port")``
an ``ActorBackend``         itself
``"ucx://host:port"``       not supported: :class:`ValueError` naming the supported specs
==========================  ============================================================

The Ray backends (:mod:`velocity.byzpy.engine.actor.backends.ray`) need the ``ray`` extra
(``pip install 'velocityfl[ray]'``); without it they are refused with a
:class:`~velocity.errors.ConfigurationError` that says so. They send the call's function and
non-tensor arguments pickled by Ray (cloudpickle) and tensors as safetensors buffers.
Resolving a spec starts nothing, except that ``"tcp://host:port"`` checks at once that
something answers there (a 2-second TCP connect), so a wrong address fails here rather than
at the pool's start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

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
    "('process', 'gpu' and 'tcp://' run Ray actors)"
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
        ``"thread"``, ``"process"``, ``"gpu"``, ``"tcp://host:port"`` (see the module
        table), or an existing backend (returned as is).

    Returns
    -------
    ActorBackend
        A new backend (not started) for a spec string, else ``spec`` itself.

    Raises
    ------
    ConfigurationError
        For ``"process"``, ``"gpu"`` and ``"tcp://..."`` when Ray is not installed, and for
        ``"tcp://host:port"`` when nothing answers at ``host:port``; the message names
        ``backend='thread'`` as the alternative.
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
    from velocity.sim._ray import RAY_EXTRA, probe_address, ray_installed

    if not ray_installed():
        raise ConfigurationError(
            f"actor backend {spec!r} runs Ray actors, and this installation does not provide "
            f"Ray ({RAY_EXTRA}); or use backend='thread' (actors on worker threads of this "
            "process)"
        )
    from velocity.byzpy.engine.actor.backends.ray import (
        RayActorBackend,
        RayClusterActorBackend,
        RayGPUActorBackend,
    )

    if parsed.kind == "process":
        return RayActorBackend()
    if parsed.kind == "gpu":
        return RayGPUActorBackend()
    # parse_backend_spec gave "tcp" a host (IPv6 in brackets) and a port
    host, port = cast(str, parsed.host).strip("[]"), cast(int, parsed.port)
    reason = probe_address(host, port)
    if reason is not None:
        raise ConfigurationError(
            f"actor backend {spec!r}: nothing answers at {parsed.host}:{port} ({reason}), so "
            "it does not provide a Ray cluster (start its head there with `ray start --head "
            f"--port={port}`); or use backend='thread' (actors on worker threads of this "
            "process)"
        )
    return RayClusterActorBackend(f"{parsed.host}:{port}")
