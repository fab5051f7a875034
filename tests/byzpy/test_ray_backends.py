"""ByzPy actor pools on Ray: ``"process"``, ``"gpu"`` and ``"tcp://host:port"`` backends.

One local Ray instance (2 CPUs, no GPU, no dashboard) serves the module. The coordinate-wise
aggregators fan out over a Ray-backed pool bit for bit as over the thread pool. Skipped
where Ray is not installed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from velocity.byzpy.aggregators.coordinate_wise import (
    CoordinateWiseMedian,
    CoordinateWiseTrimmedMean,
    MeanOfMedians,
)
from velocity.byzpy.engine.actor.factory import parse_backend_spec, resolve_backend
from velocity.byzpy.engine.graph.executor import run_operator
from velocity.byzpy.engine.graph.operator import OpContext
from velocity.byzpy.engine.graph.pool import ActorPool, ActorPoolConfig
from velocity.byzpy.engine.graph.subtask import SubTask
from velocity.errors import ConfigurationError

ray = pytest.importorskip("ray")

from velocity.byzpy.engine.actor.backends.ray import (  # noqa: E402
    RayActorBackend,
    RayClusterActorBackend,
    RayGPUActorBackend,
    _pack,
    _unpack,
)

CTX = OpContext(node_name="agg")


@pytest.fixture(scope="module", autouse=True)
def ray_instance() -> Iterator[Any]:
    # this module's helpers travel by value, so the actors need not import a test module
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = not ray.is_initialized()
    if started:
        ray.init(
            address="local",
            num_cpus=2,
            num_gpus=0,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            logging_level=logging.ERROR,
        )
    yield ray
    if started:
        ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


# -- helpers that run on the actors ---------------------------------------------------------


def _whoami(tag: int) -> tuple[int, int, int]:
    return tag, os.getpid(), torch.get_num_threads()


async def _later(x: torch.Tensor) -> torch.Tensor:
    await asyncio.sleep(0.01)
    return x * 2


def _fail(message: str) -> None:
    raise KeyError(message)


def _append(k: int) -> list[int]:
    # the actor process's own record of its calls' order (functions travel by value, so a
    # module-level list would be a fresh copy per call; os.environ is the process's)
    seen = os.environ.get("VELOCITY_TEST_CALLS", "") + f"{k},"
    os.environ["VELOCITY_TEST_CALLS"] = seen
    return [int(v) for v in seen.rstrip(",").split(",")]


def _describe(x: torch.Tensor, nested: dict[str, Any]) -> dict[str, Any]:
    return {
        "dtype": str(x.dtype),
        "device": str(x.device),
        "twice": x * 2,
        "inner": nested["pair"][1] + 1,
    }


# -- resolving specs -------------------------------------------------------------------------


def test_specs_resolve_to_ray_backends_without_starting_anything() -> None:
    process = resolve_backend("process")
    gpu = resolve_backend("gpu")
    assert type(process) is RayActorBackend
    assert type(gpu) is RayGPUActorBackend
    assert not process.started
    assert not gpu.started
    assert (process.name, tuple(process.capabilities)) == ("process", ("cpu",))
    assert (gpu.name, tuple(gpu.capabilities), gpu.num_gpus) == ("gpu", ("gpu",), 1.0)
    assert not process.shares_memory
    assert ActorPoolConfig(backend=gpu).resolved_capabilities() == ("gpu",)


def test_tcp_joins_the_cluster_at_its_gcs_address() -> None:
    address = ray.get_runtime_context().gcs_address  # "host:port" of this module's instance
    backend = resolve_backend(f"tcp://{address}")
    assert isinstance(backend, RayClusterActorBackend)
    assert backend.spec == f"tcp://{address}"

    async def main() -> tuple[int, int, int]:
        await backend.start()
        try:
            return await backend.run(_whoami, 7)
        finally:
            await backend.close()

    tag, pid, threads = asyncio.run(main())
    assert (tag, threads) == (7, torch.get_num_threads())
    assert pid != os.getpid()


def test_tcp_without_a_cluster_is_refused_at_once() -> None:
    with pytest.raises(ConfigurationError, match=r"nothing answers at 127.0.0.1:1 .*'thread'"):
        resolve_backend("tcp://127.0.0.1:1")


def test_ucx_is_refused_naming_the_supported_backends() -> None:
    with pytest.raises(ValueError, match="UCX actors are not supported") as info:
        resolve_backend("ucx://localhost:13337")
    for spec in ("'thread'", "'process'", "'gpu'", "'tcp://host:port'"):
        assert spec in str(info.value)
    assert parse_backend_spec("process").capabilities == ("cpu",)


# -- one backend -----------------------------------------------------------------------------


def test_a_backend_runs_calls_in_order_coroutines_and_errors() -> None:
    backend = RayActorBackend()

    async def main() -> None:
        with pytest.raises(RuntimeError, match="not running"):
            await backend.run(_whoami, 0)
        await backend.start()
        await backend.start()  # idempotent
        # calls on one backend run one at a time, in the order they were made
        seen = await asyncio.gather(*(backend.run(_append, k) for k in range(6)))
        assert seen[-1] == list(range(6))
        doubled = await backend.run(_later, torch.arange(3.0))
        assert torch.equal(doubled, torch.tensor([0.0, 2.0, 4.0]))
        with pytest.raises(KeyError, match="no such key"):
            await backend.run(_fail, "no such key")
        assert (await backend.run(_whoami, 1))[0] == 1  # it survives an error
        await backend.close()
        await backend.close()  # idempotent
        assert not backend.started

    asyncio.run(main())


def test_tensors_travel_as_safetensors_buffers_and_arrive_on_the_cpu() -> None:
    x = torch.arange(12, dtype=torch.float64).reshape(3, 4).t()  # not contiguous
    packed = _pack((x, {"pair": [1, torch.ones(2, dtype=torch.bfloat16)]}))
    assert not any(isinstance(v, torch.Tensor) for v in _walk(packed))
    back = _unpack(packed)
    assert isinstance(back, tuple)
    assert torch.equal(back[0], x)
    assert back[0].dtype == torch.float64
    assert back[1]["pair"][1].dtype == torch.bfloat16

    async def main() -> dict[str, Any]:
        backend = RayActorBackend()
        await backend.start()
        try:
            return await backend.run(_describe, x, {"pair": (0, torch.ones(2))})
        finally:
            await backend.close()

    out = asyncio.run(main())
    assert out["dtype"] == "torch.float64"
    assert out["device"] == "cpu"
    assert torch.equal(out["twice"], x * 2)
    assert torch.equal(out["inner"], torch.full((2,), 2.0))


def _walk(value: object) -> Iterator[object]:
    if isinstance(value, list | tuple):
        for v in value:
            yield from _walk(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    else:
        yield value


# -- pools: subtasks bit for bit -------------------------------------------------------------

CHUNKED = {
    "median": lambda: CoordinateWiseMedian(chunk_size=3),
    "trimmed_mean": lambda: CoordinateWiseTrimmedMean(f=2, chunk_size=3),
    "meamed": lambda: MeanOfMedians(f=4, chunk_size=4),
}


def _grads(kind: str, nonfinite: bool) -> list[Any]:
    rows = np.random.default_rng(3).normal(size=(8, 2, 5))
    if nonfinite:
        rows[1, 0, 0] = np.inf
        rows[5, 1, 4] = np.nan
    if kind == "numpy":
        return list(rows)
    dtype = torch.float32 if kind == "float32" else torch.float64
    return [torch.tensor(r, dtype=dtype) for r in rows]


def test_coordinate_wise_subtasks_on_ray_equal_the_thread_pool_bit_for_bit() -> None:
    cases = [
        (name, kind, nonfinite)
        for name in CHUNKED
        for kind in ("float32", "float64", "numpy")
        for nonfinite in (False, True)
    ]

    async def run_all(pool: ActorPool) -> list[Any]:
        async with pool:
            return [
                await CHUNKED[name]().run(
                    {"gradients": _grads(kind, nonfinite)}, context=CTX, pool=pool
                )
                for name, kind, nonfinite in cases
            ]

    on_threads = asyncio.run(run_all(ActorPool([ActorPoolConfig("thread", count=2)])))
    on_ray = asyncio.run(run_all(ActorPool([ActorPoolConfig("process", count=2)])))
    for case, want, got in zip(cases, on_threads, on_ray, strict=True):
        assert type(got) is type(want), case
        assert got.dtype == want.dtype, case
        if isinstance(want, np.ndarray):
            assert np.array_equal(got, want), case
        else:
            assert torch.equal(got, want), case
        whole = CHUNKED[case[0]]().aggregate(_grads(case[1], case[2]))
        assert np.array_equal(np.asarray(got), np.asarray(whole)), case


def test_run_operator_and_affinity_over_a_mixed_pool() -> None:
    grads = [torch.randn(40, generator=torch.Generator().manual_seed(i)) for i in range(9)]
    agg = CoordinateWiseTrimmedMean(f=2, chunk_size=7)
    on_ray = asyncio.run(
        run_operator(agg, {"gradients": grads}, pool_config=ActorPoolConfig("process", count=2))
    )
    assert torch.equal(on_ray, agg.aggregate(grads))

    async def main() -> tuple[list[Any], list[Any]]:
        pool = ActorPool(
            [
                ActorPoolConfig("thread", count=1, name="local"),
                ActorPoolConfig("process", count=1, name="ray", capabilities=["ray"]),
            ]
        )
        async with pool:
            remote = await pool.run_many(
                [SubTask(fn=_whoami, args=(k,), affinity="ray") for k in range(3)]
            )
            pinned = await pool.run_many(
                [SubTask(fn=_whoami, args=(k,), affinity="worker::local-0") for k in range(2)]
            )
        return remote, pinned

    remote, pinned = asyncio.run(main())
    assert [r[0] for r in remote] == [0, 1, 2]
    assert len({r[1] for r in remote}) == 1
    assert remote[0][1] != os.getpid()
    assert {p[1] for p in pinned} == {os.getpid()}


# -- refusals and limits ---------------------------------------------------------------------


def test_a_gpu_pool_on_a_cluster_without_gpus_fails_at_once() -> None:
    pool = ActorPool([ActorPoolConfig("thread", count=1), ActorPoolConfig("gpu")])
    with pytest.raises(ConfigurationError, match=r"GPU: 1, but the Ray cluster has 0.*'thread'"):
        asyncio.run(pool.start())
    assert not pool.started


def test_no_local_gpu_is_refused_before_ray_would_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigurationError, match=r"needs a GPU, and this machine has none"):
        asyncio.run(RayGPUActorBackend().start())


def test_an_actor_the_cluster_cannot_place_times_out() -> None:
    first = RayActorBackend(num_cpus=2)
    second = RayActorBackend(num_cpus=2, start_timeout_s=2)

    async def main() -> None:
        await first.start()
        try:
            with pytest.raises(ConfigurationError, match=r"placed no actor .* within 2 s"):
                await second.start()
            assert not second.started
        finally:
            await first.close()

    asyncio.run(main())


def test_node_actors_refuse_ray_backends() -> None:
    from velocity.byzpy.engine.node.actors import HonestNodeActor
    from velocity.byzpy.engine.node.base import HonestNode

    with pytest.raises(ConfigurationError, match=r"another process.*backend='thread'"):
        asyncio.run(HonestNodeActor.spawn(HonestNode, backend="process"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_cpus": -1}, "num_cpus must be a number >= 0"),
        ({"num_gpus": "1"}, "num_gpus must be a number >= 0"),
        ({"num_threads": 0}, "num_threads must be None or an int >= 1"),
        ({"start_timeout_s": 0}, "start_timeout_s must be a number > 0"),
    ],
)
def test_bad_backend_settings_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        RayActorBackend(**kwargs)
    with pytest.raises(ConfigurationError, match="num_gpus must be > 0"):
        RayGPUActorBackend(num_gpus=0)


def test_ray_missing_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import velocity.sim._ray as ray_support

    monkeypatch.setattr(ray_support, "ray_installed", lambda: False)
    for spec in ("process", "gpu", "tcp://127.0.0.1:1"):
        with pytest.raises(ConfigurationError, match=r"velocityfl\[ray\].*backend='thread'"):
            resolve_backend(spec)
