"""Ray, the optional dependency: importing it, connecting to a cluster, checking resources.

The one place VelocityFL imports :mod:`ray` (always inside a function: ``import velocity``
never loads it). :class:`~velocity.sim.ray_clients.RayClients` and the ByzPy actor backends
(:mod:`velocity.byzpy.engine.actor.backends.ray`) connect through :func:`connect`:

- ``address=None``: a process already connected (``ray.init`` called before) keeps its
  connection; otherwise plain ``ray.init()`` decides, as Ray documents it: the cluster named
  by ``RAY_ADDRESS`` when that variable is set, else one started on this machine with ``ray
  start``, else a new local Ray instance (started without the dashboard).
- ``address="host:port"``: the Ray cluster whose GCS (the head node's ``ray start --head
  --port=PORT``, 6379 by default) listens there, joined as a driver, as ``ray start
  --address`` joins a worker. ``"auto"`` and ``"ray://host:port"`` (Ray Client) are Ray's own
  forms and passed through unchanged. A process is connected to one cluster at a time: an
  address other than the one already connected to is refused.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Final

from velocity.errors import ConfigurationError

__all__ = [
    "RAY_EXTRA",
    "actor_runtime_env",
    "check_resources",
    "connect",
    "probe_address",
    "ray_installed",
    "require_ray",
    "split_address",
]

RAY_EXTRA: Final = "pip install 'velocityfl[ray]'"
"""How to install Ray with the version range VelocityFL is tested with."""


def ray_installed() -> bool:
    """Whether :mod:`ray` can be imported (without importing it)."""
    return importlib.util.find_spec("ray") is not None


def require_ray(what: str) -> ModuleType:
    """The :mod:`ray` module, or a ``ConfigurationError`` saying ``what`` needs it and how
    to install it."""
    try:
        import ray
    except ImportError as error:
        raise ConfigurationError(
            f"{what} needs Ray, which is not installed: {RAY_EXTRA}"
        ) from error
    return ray


def split_address(address: str) -> tuple[str, int] | None:
    """``("host", port)`` of a ``host:port`` address (IPv6 hosts in brackets), else
    ``None`` (``"auto"``, ``"ray://..."``)."""
    if "://" in address or address == "auto":
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def probe_address(host: str, port: int, *, timeout_s: float = 2.0) -> str | None:
    """``None`` when a TCP connection to ``host:port`` opens within ``timeout_s``, else the
    reason it did not (a quick check before ``ray.init`` spends its own retries)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as error:
        return str(error) or type(error).__name__


def connect(address: str | None, *, what: str) -> ModuleType:
    """Connect this process to Ray (see the module doc) and return the :mod:`ray` module.

    ``what`` names the setting that asked for Ray in errors (``"backend.type: ray"``).
    """
    ray = require_ray(what)
    if ray.is_initialized():
        if address is not None and not _connected_to(ray, address):
            current = ray.get_runtime_context().gcs_address
            raise ConfigurationError(
                f"{what}: this process is already connected to the Ray cluster at {current}, "
                f"not {address!r}; a process joins one Ray cluster (call ray.shutdown() "
                "first, or leave the address unset to use the current one)"
            )
        return ray
    if address is None:
        if os.environ.get("RAY_ADDRESS"):
            ray.init()
        else:
            ray.init(include_dashboard=False)
        return ray
    hostport = split_address(address)
    if hostport is not None:
        reason = probe_address(*hostport)
        if reason is not None:
            raise ConfigurationError(
                f"{what}: no Ray cluster answers at {address} ({reason}); start one there "
                f"with `ray start --head --port={hostport[1]}`, or leave the address unset "
                "for a local Ray instance"
            )
    try:
        ray.init(address=address)
    except ConnectionError as error:
        raise ConfigurationError(
            f"{what}: cannot join the Ray cluster at {address}: {error}"
        ) from error
    return ray


def _connected_to(ray: ModuleType, address: str) -> bool:
    """Whether the current connection is to the GCS at ``address`` (``"auto"`` and Ray
    Client addresses cannot be compared and are taken as the current cluster)."""
    wanted = split_address(address)
    if wanted is None:
        return True
    current = split_address(str(ray.get_runtime_context().gcs_address))
    if current is None:
        return False
    return current[1] == wanted[1] and _same_host(current[0], wanted[0])


def _same_host(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        ours = {info[4][0] for info in socket.getaddrinfo(a, None)}
        theirs = {info[4][0] for info in socket.getaddrinfo(b, None)}
    except OSError:
        return False
    local = {"127.0.0.1", "::1"}
    return bool(ours & theirs) or (bool(ours & local) and bool(theirs & local))


def check_resources(
    ray: ModuleType, request: Mapping[str, float], *, what: str, count: int = 1
) -> None:
    """Refuse (``ConfigurationError`` naming ``what``) ``count`` actors each asking for
    ``request`` when the cluster's current total of some resource is smaller than what they
    ask for together: they could never all run, and would wait forever. (Requests within the
    totals but above what is free wait; the callers' start timeouts bound that. A cluster
    that autoscales is judged by the nodes it has now.)"""
    totals = ray.cluster_resources()
    for name, amount in request.items():
        have = float(totals.get(name, 0.0))
        if amount > 0 and have < amount * count:
            listed = ", ".join(
                f"{k}: {v:g}" for k, v in sorted(totals.items()) if not k.startswith("node:")
            )
            asked = (
                f"asks each actor for {name}: {amount:g}"
                if count == 1
                else f"asks {count} actors x {name}: {amount:g} = {amount * count:g} {name}"
            )
            raise ConfigurationError(
                f"{what} {asked}, but the Ray cluster has {have:g} {name} in all ({listed})"
            )


def actor_runtime_env() -> dict[str, Any]:
    """The ``runtime_env`` of VelocityFL's Ray actors: ``OMP_WAIT_POLICY=PASSIVE`` (or this
    process's own ``OMP_WAIT_POLICY``).

    An actor runs PyTorch with several intra-op threads, and several actors often share a
    machine's cores: with OpenMP's default policy a thread that reaches a barrier first
    spins, taking the core a descheduled team-mate needs, which made 2 actors x 2 threads on
    2 cores 4-6x slower per round than 2 x 1 thread (benchmarks/ray_clients.py). Passive
    waiting sleeps instead. The wait policy changes no arithmetic, so no result bit.
    """
    return {"env_vars": {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY") or "PASSIVE"}}
