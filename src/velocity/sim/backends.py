"""The provider registry: ``backend: {type: ...}`` names where simulated clients run.

Every simulated federation has a base provider whose clients live in this process and train
one after another (:class:`~velocity.sim.SequentialClients` for datasets,
:class:`~velocity.sim.QuadraticClients` for ``layer_shapes`` servers, the parameter server's
gradient nodes). A backend runs those same clients behind another seam:

==============  =========================================================================
``sequential``  the base provider itself (the default)
``loopback``    every task and update through bytes (JSON + safetensors), as over a wire
``out_of_order`` tasks executed in a random order, results at random virtual times
``vectorized``  dataset clients trained K at once with ``torch.func`` (vmap over stacked
                parameters, :class:`~velocity.sim.vectorized.VectorizedClients`)
``auto``        ``vectorized`` when the model and training allow it, else ``sequential``
                (the reason logged on the ``velocity.sim`` logger)
``ray``         dataset clients trained by ``num_actors`` long-lived Ray actors, locally or
                on a Ray cluster at ``address``
                (:class:`~velocity.sim.ray_clients.RayClients`; needs the ``ray`` extra)
==============  =========================================================================

``sequential``, ``loopback`` and ``out_of_order`` give bit-identical models for the same
configuration and seed, and so does ``ray`` with its default ``inner: sequential`` and
thread count. ``vectorized`` gives the same updates up to float rounding (batched
matrix products; it is itself deterministic and independent of its chunk size). Unknown names
fail with the list of known ones (``velocity backends`` prints it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from velocity.errors import ConfigurationError
from velocity.sim.transport import LoopbackClients, OutOfOrderClients
from velocity.types import UpdateProvider

__all__ = ["BACKENDS", "Backend", "BackendSpec", "make_backend"]


@dataclass(frozen=True)
class BackendSpec:
    """A backend choice and its settings (the YAML ``backend:`` section).

    ``seed`` and ``spread_s`` are ``out_of_order``'s, ``max_bytes`` is ``loopback``'s;
    ``address``, ``num_actors``, ``resources_per_actor`` (``None``: one CPU per actor),
    ``inner`` and ``num_threads`` are ``ray``'s (see
    :class:`~velocity.sim.ray_clients.RayClients`, which validates them).
    """

    type: str = "sequential"
    seed: int = 0
    spread_s: float = 1.0
    max_bytes: int | None = None
    address: str | None = None
    num_actors: int = 2
    resources_per_actor: Mapping[str, float] | None = field(default=None, hash=False)
    inner: str = "sequential"
    num_threads: int | None = None


@dataclass(frozen=True)
class Backend:
    """One registry entry: a description and how to wrap the base provider."""

    name: str
    description: str
    wrap: Callable[[UpdateProvider, BackendSpec], UpdateProvider]


_LOG = logging.getLogger("velocity.sim")


def _vectorized(base: UpdateProvider, spec: BackendSpec) -> UpdateProvider:
    from velocity.sim.provider import SequentialClients
    from velocity.sim.vectorized import vectorized_from

    if not isinstance(base, SequentialClients):
        raise ConfigurationError(
            "backend.type: vectorized trains dataset clients (SequentialClients); this "
            f"federation's clients are {type(base).__name__}"
        )
    return vectorized_from(base)


def _auto(base: UpdateProvider, spec: BackendSpec) -> UpdateProvider:
    from velocity.sim.provider import SequentialClients
    from velocity.sim.vectorized import can_vectorize, vectorized_from

    if not isinstance(base, SequentialClients):
        _LOG.info("backend auto: sequential (%s clients are not vectorized)", type(base).__name__)
        return base
    ok, reason = can_vectorize(base.trainer.model, base.trainer.config)
    if not ok:
        _LOG.info("backend auto: sequential, not vectorized: %s", reason)
        return base
    _LOG.info("backend auto: vectorized")
    return vectorized_from(base)


def _ray(base: UpdateProvider, spec: BackendSpec) -> UpdateProvider:
    from velocity.sim._ray import RAY_EXTRA, ray_installed
    from velocity.sim.provider import SequentialClients

    if not isinstance(base, SequentialClients):
        raise ConfigurationError(
            "backend.type: ray trains dataset clients (SequentialClients); this "
            f"federation's clients are {type(base).__name__}"
        )
    if not ray_installed():
        raise ConfigurationError(
            f"backend.type: ray needs Ray, which is not installed: {RAY_EXTRA}"
        )
    from velocity.sim.ray_clients import RayClients

    return RayClients(
        base,
        num_actors=spec.num_actors,
        address=spec.address,
        resources_per_actor=spec.resources_per_actor,
        inner=spec.inner,
        num_threads=spec.num_threads,
    )


BACKENDS: Final[dict[str, Backend]] = {
    b.name: b
    for b in (
        Backend(
            "sequential",
            "clients in this process, trained one after another (default)",
            lambda base, spec: base,
        ),
        Backend(
            "loopback",
            "every task and update passes through bytes (JSON header + safetensors), as a "
            "network transport would; options: max_bytes",
            lambda base, spec: LoopbackClients(base, max_bytes=spec.max_bytes),
        ),
        Backend(
            "out_of_order",
            "tasks executed in a random order, results delivered at random virtual times; "
            "options: seed, spread_s",
            lambda base, spec: OutOfOrderClients(base, seed=spec.seed, spread_s=spec.spread_s),
        ),
        Backend(
            "vectorized",
            "dataset clients trained K at once (torch.func vmap over stacked parameters); "
            "same updates up to float rounding",
            _vectorized,
        ),
        Backend(
            "auto",
            "vectorized when the model and training allow it, else sequential (reason logged)",
            _auto,
        ),
        Backend(
            "ray",
            "dataset clients trained by long-lived Ray actors, locally or on a Ray cluster; "
            "options: address, num_actors, resources_per_actor, inner, num_threads "
            "(needs the ray extra of velocityfl)",
            _ray,
        ),
    )
}
"""Every backend by name."""


def make_backend(spec: BackendSpec | str, base: UpdateProvider) -> UpdateProvider:
    """``base`` behind the backend ``spec`` names (a name or a :class:`BackendSpec`)."""
    if isinstance(spec, str):
        spec = BackendSpec(type=spec)
    if not isinstance(spec, BackendSpec):
        raise ConfigurationError(
            f"backend must be one of {', '.join(repr(n) for n in BACKENDS)} or a BackendSpec; "
            f"got {spec!r}"
        )
    backend = BACKENDS.get(spec.type)
    if backend is None:
        raise ConfigurationError(
            f"backend.type must be one of {', '.join(repr(n) for n in BACKENDS)}; got {spec.type!r}"
        )
    return backend.wrap(base, spec)
