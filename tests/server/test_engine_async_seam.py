"""The engine already admits asynchronous aggregation: a FedBuff-shaped trigger policy.

FedAsync/FedBuff are their own issue; this only shows that such a policy is a
``TriggerPolicy`` of the same engine (no second loop): tasks stay in flight across server
versions, the server aggregates every K arrivals, stale updates are admitted against the
task they answer, and results arrive out of order at virtual times.
"""

from __future__ import annotations

import torch

from velocity.server import Gathered, RoundEngine, TriggerPolicy
from velocity.server.engine import TaskMaker
from velocity.sim import QuadraticClients, StragglerModel
from velocity.sim.sampling import FractionSampler
from velocity.strategies import FedAvg
from velocity.types import ClientSampler, ClientTask, Clock, ParamSpec, UpdateProvider


class BufferedK(TriggerPolicy):
    """Keep ``concurrency`` clients training; aggregate every ``k`` arrivals."""

    def __init__(self, k: int, concurrency: int) -> None:
        self.k, self.concurrency = k, concurrency
        self.in_flight: dict[str, ClientTask] = {}
        self.staleness: list[int] = []

    def gather(
        self,
        *,
        round_: int,
        make_tasks: TaskMaker,
        sampler: ClientSampler,
        provider: UpdateProvider,
        clock: Clock,
    ) -> Gathered:
        free = [c for c in sampler.sample(round_) if c not in self.in_flight]
        new = make_tasks(free[: self.concurrency - len(self.in_flight)], rows=False)
        provider.submit(new)
        self.in_flight.update({t.client_id: t for t in new})
        arrived = provider.collect(max_results=self.k)
        if arrived:
            clock.advance_to(arrived[-1].arrived_at)
        answered = [self.in_flight.pop(r.client_id) for r in arrived]
        self.staleness += [round_ - 1 - t.version for t in answered]
        return Gathered(tasks=answered, results=list(arrived))


def _engine(policy: TriggerPolicy) -> tuple[RoundEngine, QuadraticClients]:
    spec = ParamSpec.from_sizes({"w": 8})
    clients = QuadraticClients(spec.d, seed=0, num_clients=12)
    clients.configure(
        dropout_rate=0.0,
        straggler=StragglerModel(deadline_s=100.0, distribution="exponential", mean_s=1.0),
        adversary=None,
    )
    engine = RoundEngine(
        provider=clients,
        sampler=FractionSampler(clients.population, fraction=1.0, seed=0),
        spec=spec,
        init_params=torch.zeros(spec.d),
        strategy=FedAvg(),
        seed=0,
        policy=policy,
        evaluate=lambda p: (clients.loss(p), float("nan")),
    )
    return engine, clients


def test_a_buffered_async_policy_runs_on_the_same_engine() -> None:
    policy = BufferedK(k=3, concurrency=6)
    engine, _ = _engine(policy)
    results = engine.run(8)
    assert all(r.num_clients == 3 for r in results)
    # versions advanced while tasks were in flight: some updates were stale, none rejected
    assert max(policy.staleness) >= 1
    assert not any(r.failures for r in results)
    # arrivals are in virtual time, not submission order
    assert results[-1].clock_s > 0
    assert [r.global_loss for r in results][-1] < results[0].global_loss  # type: ignore[operator]


def test_async_policy_is_deterministic() -> None:
    a, _ = _engine(BufferedK(k=2, concurrency=5))
    b, _ = _engine(BufferedK(k=2, concurrency=5))
    a.run(6)
    b.run(6)
    assert torch.equal(a.global_params, b.global_params)
