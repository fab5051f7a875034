"""Actor backends (``resolve_backend``, ``ThreadActorBackend``) and node actors on them."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Sequence
from typing import cast

import pytest
import torch
from torch import Tensor

from velocity.byzpy.engine.actor.factory import (
    ActorBackend,
    ThreadActorBackend,
    parse_backend_spec,
    resolve_backend,
)
from velocity.byzpy.engine.node.actors import ByzantineNodeActor, HonestNodeActor, call_node
from velocity.byzpy.engine.node.base import ByzantineNode, HonestNode
from velocity.errors import ConfigurationError

# -- resolve_backend -------------------------------------------------------------------


def test_thread_spec_gives_a_fresh_thread_backend() -> None:
    a, b = resolve_backend("thread"), resolve_backend("thread")
    assert isinstance(a, ThreadActorBackend)
    assert a is not b
    assert a.name == "thread"


def test_a_backend_instance_is_returned_as_is() -> None:
    backend = ThreadActorBackend()
    assert resolve_backend(backend) is backend


@pytest.mark.parametrize("spec", ["process", "gpu", "tcp://localhost:29000", "tcp://[::1]:80"])
def test_recognised_but_unavailable_specs_say_so(spec: str) -> None:
    # without Ray every Ray spec is unavailable; with it, a tcp:// address where nothing
    # answers (tests/byzpy/test_ray_backends.py runs the Ray backends themselves)
    if importlib.util.find_spec("ray") is not None and not spec.startswith("tcp://"):
        pytest.skip("Ray is installed: 'process' and 'gpu' resolve to Ray actor backends")
    with pytest.raises(ConfigurationError, match=r"does not provide.*backend='thread'"):
        resolve_backend(spec)


def test_ucx_is_not_supported() -> None:
    with pytest.raises(ValueError, match=r"UCX actors are not supported.*'thread'") as info:
        resolve_backend("ucx://localhost:13337")
    assert not isinstance(info.value, ConfigurationError)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("threads", "unknown actor backend spec 'threads'"),
        ("Thread", "unknown actor backend spec"),
        ("tcp://localhost", "expected 'tcp://host:port'"),
        ("tcp://:80", "expected 'tcp://host:port'"),
        ("tcp://host:http", "port must be an integer"),
        ("tcp://host:0", "port must be an integer"),
        ("tcp://host:70000", "port must be an integer"),
        (3, "must be a str"),
    ],
)
def test_bad_specs_list_the_accepted_ones(spec: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_backend(spec)  # type: ignore[arg-type]


def test_parse_backend_spec() -> None:
    parsed = parse_backend_spec("tcp://example.org:29000")
    assert (parsed.kind, parsed.host, parsed.port) == ("tcp", "example.org", 29000)
    assert parse_backend_spec("gpu").capabilities == ("gpu",)
    assert parse_backend_spec("thread").capabilities == ("cpu",)


# -- ThreadActorBackend ------------------------------------------------------------------


def test_thread_backend_runs_calls_on_its_one_thread_one_at_a_time() -> None:
    async def main() -> None:
        backend = ThreadActorBackend(thread_name="solo")
        await backend.start()
        active, peak, lock = [0], [0], threading.Lock()

        def work(k: int) -> tuple[int, str]:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            total = sum(range(20_000))  # some work while others are queued
            with lock:
                active[0] -= 1
            return k + total * 0, threading.current_thread().name

        results = await asyncio.gather(*(backend.run(work, k) for k in range(12)))
        await backend.close()
        assert [k for k, _ in results] == list(range(12))  # results to the right callers
        assert {name for _, name in results} == {"solo_0"}
        assert peak[0] == 1
        assert threading.current_thread().name != "solo_0"

    asyncio.run(main())


def test_thread_backend_awaits_coroutine_functions_on_a_persistent_loop() -> None:
    async def main() -> None:
        backend = ThreadActorBackend()
        await backend.start()

        async def coro(x: int) -> tuple[int, int]:
            await asyncio.sleep(0)
            return x * 2, id(asyncio.get_running_loop())

        (a, loop_a), (b, loop_b) = await backend.run(coro, 1), await backend.run(coro, 5)
        assert (a, b) == (2, 10)
        assert loop_a == loop_b != id(asyncio.get_running_loop())
        await backend.close()

    asyncio.run(main())


def test_thread_backend_propagates_exceptions_and_keeps_working() -> None:
    async def main() -> None:
        backend = ThreadActorBackend()
        await backend.start()

        def boom() -> None:
            raise KeyError("inside the actor")

        with pytest.raises(KeyError, match="inside the actor"):
            await backend.run(boom)
        assert await backend.run(len, [1, 2, 3]) == 3
        await backend.close()

    asyncio.run(main())


def test_thread_backend_lifecycle() -> None:
    async def main() -> None:
        backend = ThreadActorBackend()
        with pytest.raises(RuntimeError, match="await start"):
            await backend.run(len, [])
        await backend.start()
        await backend.start()  # idempotent
        assert backend.started
        await backend.close()
        await backend.close()  # idempotent
        with pytest.raises(RuntimeError, match="not running"):
            await backend.run(len, [])
        await backend.start()  # restartable
        assert await backend.run(len, [1]) == 1
        await backend.close()

    asyncio.run(main())


def test_thread_backend_serves_several_event_loops() -> None:
    backend = ThreadActorBackend()
    asyncio.run(backend.start())
    assert asyncio.run(backend.run(abs, -3)) == 3
    assert asyncio.run(backend.run(abs, -4)) == 4
    asyncio.run(backend.close())


def test_actor_backend_is_abstract() -> None:
    with pytest.raises(TypeError):
        ActorBackend()  # type: ignore[abstract]


# -- node actors ---------------------------------------------------------------------------


class TinyHonest(HonestNode):
    def __init__(self, scale: float, *, fail: bool = False) -> None:
        if fail:
            raise RuntimeError("constructor failed")
        self.scale = scale
        self.weights = torch.zeros(3)
        self.thread = threading.current_thread().name
        self.calls = 0

    def next_batch(self) -> tuple[Tensor, Tensor]:
        self.calls += 1
        return torch.ones(2, 3) * self.calls, torch.zeros(2)

    def honest_gradient(self, x: Tensor, y: Tensor) -> Tensor:
        return x.mean(dim=0) * self.scale

    def apply_server_gradient(self, grad_vec: Tensor) -> None:
        self.weights -= grad_vec

    def where(self) -> str:
        return threading.current_thread().name

    def explode(self) -> None:
        raise ValueError("node method failed")


class TinyByzantine(ByzantineNode):
    def next_batch(self) -> tuple[Tensor, Tensor]:
        return torch.empty(0), torch.empty(0)

    def byzantine_gradient(
        self, x: Tensor, y: Tensor, honest_grads: Sequence[Tensor] | None = None
    ) -> Tensor:
        return -torch.stack(list(honest_grads or [torch.zeros(3)])).sum(dim=0)

    def apply_server_gradient(self, grad_vec: Tensor) -> None:
        pass


def test_honest_actor_runs_the_node_on_its_thread() -> None:
    async def main() -> None:
        backend = ThreadActorBackend(thread_name="node-thread")
        actor = await HonestNodeActor.spawn(TinyHonest, backend=backend, kwargs={"scale": 2.0})
        node = actor.node
        assert isinstance(node, TinyHonest)
        assert node.thread.startswith("node-thread")  # constructed on the actor
        assert cast(str, await actor.where()).startswith("node-thread")
        g1 = cast(Tensor, await actor.honest_gradient_for_next_batch())
        g2 = cast(Tensor, await actor.call("honest_gradient_for_next_batch"))
        assert torch.equal(g1, torch.full((3,), 2.0))
        assert torch.equal(g2, torch.full((3,), 4.0))  # state kept between calls
        await actor.apply_server_gradient(torch.ones(3))
        assert torch.equal(node.weights, -torch.ones(3))
        assert "TinyHonest" in repr(actor)
        assert "thread" in repr(actor)
        await actor.close()

    asyncio.run(main())


def test_actor_errors_propagate_and_a_closed_actor_refuses() -> None:
    async def main() -> None:
        actor = await HonestNodeActor.spawn(TinyHonest, args=(1.0,))
        with pytest.raises(ValueError, match="node method failed"):
            await actor.explode()
        with pytest.raises(AttributeError, match="no method 'missing'"):
            await actor.call("missing")
        assert cast(Tensor, await actor.honest_gradient_for_next_batch()).shape == (3,)
        await actor.close()
        assert actor.closed
        with pytest.raises(RuntimeError, match="closed"):
            await actor.honest_gradient_for_next_batch()
        await actor.close()  # idempotent

    asyncio.run(main())


def test_spawn_refuses_the_wrong_base_class_and_closes_the_backend() -> None:
    async def main() -> None:
        backend = ThreadActorBackend()
        with pytest.raises(TypeError, match="not a ByzantineNode"):
            await ByzantineNodeActor.spawn(TinyHonest, backend=backend, args=(1.0,))
        assert not backend.started
        other = ThreadActorBackend()
        with pytest.raises(TypeError, match="not a HonestNode"):
            await HonestNodeActor.spawn(TinyByzantine, backend=other)
        assert not other.started
        failing = ThreadActorBackend()
        with pytest.raises(RuntimeError, match="constructor failed"):
            await HonestNodeActor.spawn(
                TinyHonest, backend=failing, args=(1.0,), kwargs={"fail": True}
            )
        assert not failing.started
        with pytest.raises(ConfigurationError, match="backend='thread'"):
            await HonestNodeActor.spawn(TinyHonest, backend="process", args=(1.0,))

    asyncio.run(main())


def test_byzantine_actor_and_call_node() -> None:
    async def main() -> None:
        actor = await ByzantineNodeActor.spawn(TinyByzantine)
        honest = [torch.ones(3), 2 * torch.ones(3)]
        crafted = cast(Tensor, await call_node(actor, "byzantine_gradient_for_next_batch", honest))
        assert torch.equal(crafted, torch.full((3,), -3.0))
        await actor.close()
        plain = TinyHonest(3.0)
        grad = cast(Tensor, await call_node(plain, "honest_gradient_for_next_batch"))
        assert torch.equal(grad, torch.full((3,), 3.0))

    asyncio.run(main())


def test_actors_run_in_parallel() -> None:
    """Two actors each wait for the other at a barrier: only parallel actors get through."""

    class Meeting(TinyHonest):
        def meet(self, barrier: threading.Barrier) -> int:
            return barrier.wait()

    async def main() -> None:
        a = await HonestNodeActor.spawn(Meeting, args=(1.0,))
        b = await HonestNodeActor.spawn(Meeting, args=(1.0,))
        barrier = threading.Barrier(2, timeout=10)
        ranks = await asyncio.gather(a.meet(barrier), b.meet(barrier))
        assert sorted(ranks) == [0, 1]  # type: ignore[type-var]
        await a.close()
        await b.close()

    asyncio.run(main())
