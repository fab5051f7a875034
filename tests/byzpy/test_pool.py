"""``ActorPool``, ``ActorPoolConfig`` and ``ActorPoolChannel`` on thread workers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from velocity.byzpy.engine.actor.factory import ThreadActorBackend
from velocity.byzpy.engine.graph.operator import SubtaskRunner
from velocity.byzpy.engine.graph.pool import ActorPool, ActorPoolChannel, ActorPoolConfig
from velocity.byzpy.engine.graph.subtask import SubTask
from velocity.errors import ConfigurationError


def _thread_name() -> str:
    return threading.current_thread().name


# -- ActorPoolConfig -----------------------------------------------------------------------


def test_config_capabilities_are_inferred_from_the_backend() -> None:
    assert ActorPoolConfig(backend="thread").resolved_capabilities() == ("cpu",)
    assert ActorPoolConfig(backend="process").resolved_capabilities() == ("cpu",)
    assert ActorPoolConfig(backend="gpu", count=2).resolved_capabilities() == ("gpu",)
    assert ActorPoolConfig(backend="tcp://h:1").resolved_capabilities() == ("cpu",)
    assert ActorPoolConfig(backend=ThreadActorBackend()).resolved_capabilities() == ("cpu",)
    explicit = ActorPoolConfig(backend="thread", capabilities=["cpu", "fast"])
    assert explicit.resolved_capabilities() == ("cpu", "fast")
    assert explicit.capabilities == ("cpu", "fast")  # frozen copy
    cfg = ActorPoolConfig(backend="thread", count=4, name="cpu-workers")
    assert (cfg.backend, cfg.count, cfg.capabilities, cfg.name) == (
        "thread",
        4,
        None,
        "cpu-workers",
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "thread", "count": 0}, "count must be an int >= 1"),
        ({"backend": "thread", "count": True}, "count must be an int >= 1"),
        ({"backend": "thread", "count": 1.5}, "count must be an int >= 1"),
        ({"backend": "nope"}, "unknown actor backend spec"),
        ({"backend": "ucx://h:1"}, "UCX"),
        ({"backend": "tcp://h"}, "tcp://host:port"),
        ({"backend": 3}, "spec string"),
        ({"backend": "thread", "capabilities": "cpu"}, "sequence of str"),
        ({"backend": "thread", "capabilities": []}, "sequence of str"),
        ({"backend": "thread", "capabilities": ["cpu", ""]}, "non-empty str"),
        ({"backend": "thread", "name": ""}, "name must be None or a non-empty str"),
    ],
)
def test_config_rejects_bad_settings(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ActorPoolConfig(**kwargs)  # type: ignore[arg-type]


def test_a_backend_instance_backs_one_worker() -> None:
    with pytest.raises(ValueError, match="backs one worker"):
        ActorPoolConfig(backend=ThreadActorBackend(), count=2)


def test_pool_rejects_bad_configs() -> None:
    with pytest.raises(ValueError, match="non-empty sequence"):
        ActorPool([])
    with pytest.raises(ValueError, match="ActorPoolConfig"):
        ActorPool(["thread"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="named 'w-0'"):
        ActorPool([ActorPoolConfig("thread", name="w"), ActorPoolConfig("thread", name="w")])


def test_unavailable_backends_fail_at_start_naming_the_alternative() -> None:
    pool = ActorPool([ActorPoolConfig(backend="thread", count=2), ActorPoolConfig(backend="gpu")])
    assert pool.size == 3
    with pytest.raises(ConfigurationError, match="backend='thread'"):
        asyncio.run(pool.start())
    assert not pool.started


# -- running subtasks ----------------------------------------------------------------------


def test_names_size_and_affinities_are_known_before_start() -> None:
    pool = ActorPool(
        [
            ActorPoolConfig("thread", count=2),
            ActorPoolConfig("thread", name="gpu", capabilities=["gpu"]),
        ]
    )
    assert pool.size == 3
    assert pool.workers == ("actor-0", "actor-1", "gpu-0")
    assert pool.worker_affinities() == ("worker::actor-0", "worker::actor-1", "worker::gpu-0")
    two_unnamed = ActorPool([ActorPoolConfig("thread"), ActorPoolConfig("thread")])
    assert two_unnamed.workers == ("actor-0", "actor1-0")


def test_run_many_returns_results_in_order_and_starts_lazily() -> None:
    async def main() -> None:
        pool = ActorPool([ActorPoolConfig(backend="thread", count=3)])
        assert not pool.started
        tasks = [SubTask(fn=pow, args=(k, 2)) for k in range(25)]
        assert await pool.run_many(tasks) == [k * k for k in range(25)]
        assert pool.started
        assert await pool.run_many([]) == []
        assert await pool.run_subtask(SubTask(fn=divmod, args=(17, 5))) == (3, 2)
        await pool.shutdown()
        assert not pool.started

    asyncio.run(main())


def test_workers_run_in_parallel_and_each_runs_one_subtask_at_a_time() -> None:
    async def main() -> None:
        pool = ActorPool([ActorPoolConfig(backend="thread", count=4)])
        barrier = threading.Barrier(4, timeout=10)  # passes only with 4 subtasks at once
        names = await pool.run_many([SubTask(fn=lambda: (barrier.wait(), _thread_name())[1])] * 4)
        assert len(set(names)) == 4

        active, peak, lock = [0], [0], threading.Lock()

        def tracked() -> None:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            sum(range(5_000))
            with lock:
                active[0] -= 1

        await pool.run_many([SubTask(fn=tracked) for _ in range(40)])
        assert 1 <= peak[0] <= 4
        await pool.shutdown()

    asyncio.run(main())


def test_coroutine_functions_run_on_the_workers() -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    async def main() -> list[object]:
        async with ActorPool([ActorPoolConfig("thread", count=2)]) as pool:
            return await pool.run_many([SubTask(fn=double, args=(k,)) for k in range(6)])

    assert asyncio.run(main()) == [0, 2, 4, 6, 8, 10]


def test_affinity_routes_to_a_worker_with_that_capability() -> None:
    async def main() -> None:
        pool = ActorPool(
            [
                ActorPoolConfig(backend="thread", count=2),
                ActorPoolConfig(
                    backend=ThreadActorBackend(thread_name="fakegpu"), capabilities=["gpu"]
                ),
            ]
        )
        gpu = await pool.run_many([SubTask(fn=_thread_name, affinity="gpu") for _ in range(6)])
        assert all(str(name).startswith("fakegpu") for name in gpu)
        cpu = await pool.run_many([SubTask(fn=_thread_name, affinity="cpu") for _ in range(6)])
        assert not any(str(name).startswith("fakegpu") for name in cpu)
        # "worker::<name>" pins a subtask to one worker
        for affinity in pool.worker_affinities():
            pinned = await pool.run_many([SubTask(fn=_thread_name, affinity=affinity)] * 3)
            assert len(set(pinned)) == 1
        with pytest.raises(ValueError, match=r"no worker offers affinity 'tpu'.*'cpu'.*'gpu'"):
            await pool.run_subtask(SubTask(fn=_thread_name, affinity="tpu"))
        await pool.shutdown()

    asyncio.run(main())


def test_choice_is_round_robin_over_idle_workers() -> None:
    async def main() -> None:
        async with ActorPool([ActorPoolConfig("thread", count=3)]) as pool:
            seq = [await pool.run_subtask(SubTask(fn=_thread_name)) for _ in range(6)]
        assert seq[:3] == seq[3:]
        assert len(set(seq)) == 3

    asyncio.run(main())


def _flaky(failures: int) -> tuple[Callable[[], str], list[int]]:
    calls = [0]
    lock = threading.Lock()

    def fn() -> str:
        with lock:
            calls[0] += 1
            k = calls[0]
        if k <= failures:
            raise RuntimeError(f"failure {k}")
        return "ok"

    return fn, calls


def test_retries_then_success() -> None:
    async def main() -> None:
        async with ActorPool([ActorPoolConfig("thread", count=2)]) as pool:
            fn, calls = _flaky(2)
            assert await pool.run_subtask(SubTask(fn=fn, max_retries=2)) == "ok"
            assert calls[0] == 3

    asyncio.run(main())


def test_retries_exhausted_raise_the_last_error() -> None:
    async def main() -> None:
        async with ActorPool([ActorPoolConfig("thread", count=2)]) as pool:
            fn, calls = _flaky(5)
            with pytest.raises(RuntimeError, match="failure 2") as info:
                await pool.run_subtask(SubTask(fn=fn, max_retries=1, name="flaky"))
            assert calls[0] == 2
            assert any("failed 2 times" in note for note in info.value.__notes__)
            fn0, calls0 = _flaky(1)
            with pytest.raises(RuntimeError, match="failure 1"):
                await pool.run_subtask(SubTask(fn=fn0))  # no retries by default
            assert calls0[0] == 1
            with pytest.raises(ValueError, match="max_retries"):
                await pool.run_subtask(SubTask(fn=fn0, max_retries=-1))
            with pytest.raises(TypeError, match="SubTask"):
                await pool.run_subtask(len)  # type: ignore[arg-type]
            # the pool still works after failures (workers were released)
            assert await pool.run_many([SubTask(fn=abs, args=(-k,)) for k in range(4)]) == [
                0,
                1,
                2,
                3,
            ]

    asyncio.run(main())


def test_shutdown_fails_waiting_subtasks_and_the_pool_restarts() -> None:
    async def main() -> None:
        pool = ActorPool([ActorPoolConfig("thread", count=1)])
        release = threading.Event()
        running = asyncio.ensure_future(pool.run_subtask(SubTask(fn=lambda: release.wait(10))))
        while not pool.started:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(pool.run_subtask(SubTask(fn=abs, args=(-1,))))
        await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(pool.shutdown())
        with pytest.raises(RuntimeError, match="shut down"):
            await queued
        release.set()
        await closing
        assert await running is True
        assert await pool.run_subtask(SubTask(fn=abs, args=(-7,))) == 7  # lazy restart
        await pool.shutdown()
        await pool.shutdown()  # idempotent

    asyncio.run(main())


def test_a_pool_serves_several_event_loops() -> None:
    pool = ActorPool([ActorPoolConfig("thread", count=2)])
    assert asyncio.run(pool.run_many([SubTask(fn=abs, args=(-1,))] * 3)) == [1, 1, 1]
    assert asyncio.run(pool.run_many([SubTask(fn=abs, args=(-2,))] * 3)) == [2, 2, 2]
    asyncio.run(pool.shutdown())


def test_the_pool_is_a_subtask_runner() -> None:
    pool: SubtaskRunner = ActorPool([ActorPoolConfig("thread", count=2)])
    assert pool.size == 2


# -- channels ------------------------------------------------------------------------------


def test_channels_between_workers() -> None:
    async def main() -> None:
        pool = ActorPool([ActorPoolConfig("thread", count=3, name="w")])
        chan = await pool.open_channel("p2p")
        assert isinstance(chan, ActorPoolChannel)
        assert await pool.open_channel("p2p") is chan  # bindings are reused
        assert chan.workers == ("w-0", "w-1", "w-2")
        assert chan.endpoint("w-1") == chan.channel("w-1").endpoint
        payload = {"tensor": [1, 2, 3]}
        await chan.send("w-0", "w-2", payload)
        await chan.send("w-1", "w-2", "second")
        assert await chan.recv("w-2") is payload  # by reference, FIFO
        assert await chan.recv("w-2", timeout=1) == "second"
        assert await chan.recv("w-2", timeout=0.05) is None  # ByzPy: None on timeout
        other = await pool.open_channel("other")
        await other.send("w-0", "w-1", 1)
        assert await chan.recv("w-1", timeout=0.05) is None  # channels are separate
        assert await other.recv("w-1") == 1
        with pytest.raises(KeyError, match="no worker 'w-9'"):
            chan.channel("w-9")
        with pytest.raises(KeyError, match="no endpoint"):
            chan.endpoint("w-9")
        with pytest.raises(ValueError, match="non-empty str"):
            await pool.open_channel("")
        await pool.shutdown()
        with pytest.raises(RuntimeError, match="no actor"):
            await chan.send("w-0", "w-1", 1)  # the old endpoints are gone
        fresh = await pool.open_channel("p2p")
        assert fresh is not chan
        await pool.shutdown()

    asyncio.run(main())


def test_a_waiting_recv_is_woken_by_a_send_from_a_worker_thread() -> None:
    async def main() -> None:
        async with ActorPool([ActorPoolConfig("thread", count=2, name="w")]) as pool:
            chan = await pool.open_channel("c")
            waiting = asyncio.ensure_future(chan.recv("w-1", timeout=10))
            await asyncio.sleep(0.01)
            # the send coroutine runs on worker w-0's thread and event loop
            sent = SubTask(fn=chan.send, args=("w-0", "w-1", "hi"), affinity="worker::w-0")
            await pool.run_subtask(sent)
            assert await waiting == "hi"

    asyncio.run(main())
