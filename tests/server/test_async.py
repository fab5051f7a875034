"""Asynchronous FL on the round engine: event order, staleness weights and determinism."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import pytest
import torch

from velocity.errors import ConfigurationError
from velocity.server import RoundEngine
from velocity.server.asynchronous import (
    AsyncRoundSummary,
    AsyncSettings,
    BufferedAsync,
    Staleness,
    StalenessWeighting,
)
from velocity.sim import QuadraticClients
from velocity.sim.sampling import ClientSpeeds, FractionSampler, UniformDelay
from velocity.strategies import FedAvg, FedMedian
from velocity.types import (
    ClientFailure,
    ClientTask,
    ClientUpdate,
    ParamSpec,
    Result,
    UpdateProvider,
)

# ---------------------------------------------------------------------- staleness weights


@pytest.mark.parametrize(
    ("staleness", "expected"),
    [
        (Staleness("uniform"), [1.0, 1.0, 1.0, 1.0]),
        (Staleness("inverse_staleness"), [1.0, 1 / 2, 1 / 3, 1 / 6]),
        (Staleness("exponential_decay", decay=0.5), [1.0, 0.5, 0.25, 0.5**5]),
        (Staleness("polynomial", a=0.5), [1.0, 2**-0.5, 3**-0.5, 6**-0.5]),
        # hinge (Xie et al. 2019): 1 up to b, then 1 / (a (t - b) + 1)
        (Staleness("hinge", a=2.0, b=1), [1.0, 1.0, 1 / 3, 1 / 9]),
    ],
)
def test_staleness_weights_match_hand_computations(
    staleness: Staleness, expected: list[float]
) -> None:
    got = [staleness.weight(t) for t in (0, 1, 2, 5)]
    assert got == pytest.approx(expected, rel=1e-15)


def test_staleness_inputs_are_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match="strategy"):
        Staleness("linear")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="decay"):
        Staleness("exponential_decay", decay=0.0)
    with pytest.raises(ConfigurationError, match="staleness must be an int >= 0"):
        Staleness().weight(-1)
    with pytest.raises(ConfigurationError, match="mixing"):
        StalenessWeighting(mixing=1.5)
    with pytest.raises(ConfigurationError, match="concurrency"):
        BufferedAsync(["a", "b"], seed=0, concurrency=3)
    with pytest.raises(ConfigurationError, match="buffer_size"):
        BufferedAsync(["a", "b"], seed=0, concurrency=1, buffer_size=0)
    with pytest.raises(ConfigurationError, match="staleness_threshold"):
        BufferedAsync(["a", "b"], seed=0, concurrency=1, staleness_threshold=-1)
    with pytest.raises(ConfigurationError, match="unique"):
        BufferedAsync(["a", "a"], seed=0, concurrency=1)


# ---------------------------------------------------------------------- a hand-checked trace


class FixedDelays(UpdateProvider):
    """Client ``c`` answers ``delays[c]`` after dispatch with a delta of ones."""

    def __init__(self, delays: dict[str, float], d: int, fail: Collection[str] = ()) -> None:
        self.delays, self.d, self.fail = delays, d, set(fail)
        self.outstanding: list[ClientTask] = []
        self.max_in_flight = 0
        self.log: list[tuple[str, float, int]] = []  # (client, dispatched_at, version)

    def submit(self, tasks: Sequence[ClientTask]) -> None:
        self.outstanding.extend(tasks)
        self.max_in_flight = max(self.max_in_flight, len(self.outstanding))
        self.log += [(t.client_id, t.dispatched_at, t.version) for t in tasks]

    def collect(
        self, *, until: float | None = None, max_results: int | None = None
    ) -> list[Result]:
        order = sorted(
            range(len(self.outstanding)),
            key=lambda i: (
                self.outstanding[i].dispatched_at + self.delays[self.outstanding[i].client_id]
            ),
        )
        take = order[: len(order) if max_results is None else max_results]
        out: list[Result] = []
        for i in take:
            t = self.outstanding[i]
            at = t.dispatched_at + self.delays[t.client_id]
            if t.client_id in self.fail:
                out.append(ClientFailure(t.client_id, "dropped", round=t.round, arrived_at=at))
                continue
            update = ClientUpdate(
                t.client_id,
                1,
                torch.ones(self.d),
                round=t.round,
                base_version=t.version,
                arrived_at=at,
            )
            out.append(update.with_digest())
        self.outstanding = [t for i, t in enumerate(self.outstanding) if i not in set(take)]
        return out


def _trace_engine(
    policy: BufferedAsync, stage: StalenessWeighting, provider: UpdateProvider
) -> RoundEngine:
    spec = ParamSpec.from_sizes({"w": 3})
    return RoundEngine(
        provider=provider,
        sampler=lambda_sampler(),
        spec=spec,
        init_params=torch.zeros(3),
        strategy=FedAvg(),
        seed=0,
        policy=policy,
        pre_stages=[stage],
    )


class lambda_sampler:
    def sample(self, round_: int) -> list[str]:
        raise AssertionError("BufferedAsync must not use the engine's sampler")


def test_fedasync_trace_matches_a_hand_computation() -> None:
    # a answers 1.0 after dispatch, b 2.5; both in flight; aggregate every arrival.
    #   t=0    dispatch a, b at v0
    #   t=1    a (v0, tau 0)  -> v1;  dispatch a at t=1
    #   t=2    a (v1, tau 0)  -> v2;  dispatch a at t=2
    #   t=2.5  b (v0, tau 2)  -> v3;  dispatch b at t=2.5
    #   t=3    a (v2, tau 1)  -> v4
    provider = FixedDelays({"a": 1.0, "b": 2.5}, d=3)
    policy = BufferedAsync(["a", "b"], seed=0, concurrency=2, buffer_size=1)
    engine = _trace_engine(policy, StalenessWeighting(Staleness("inverse_staleness")), provider)
    results = engine.run(4)
    assert [r.clock_s for r in results] == [1.0, 2.0, 2.5, 3.0]
    assert [r.participated for r in results] == [("a",), ("a",), ("b",), ("a",)]
    assert [r.stages["staleness"]["max"] for r in results] == [0, 0, 2, 1]
    # x += s(tau) * ones: 1, 1, 1/3, 1/2
    expected = 1 + 1 + 1 / 3 + 1 / 2
    assert engine.global_params.tolist() == pytest.approx([expected] * 3, rel=1e-6)
    assert sorted(provider.log[:2]) == [("a", 0.0, 0), ("b", 0.0, 0)]
    assert provider.log[2:] == [
        ("a", 1.0, 1),
        ("a", 2.0, 2),
        ("b", 2.5, 3),
    ]
    assert provider.max_in_flight == 2
    summaries = [AsyncRoundSummary.from_result(r) for r in results]
    assert [s.mean_weight for s in summaries] == pytest.approx([1, 1, 1 / 3, 1 / 2])
    assert [s.virtual_time for s in summaries] == [1.0, 2.0, 2.5, 3.0]


def test_a_stale_update_is_discarded_and_its_client_waits_a_version() -> None:
    provider = FixedDelays({"a": 1.0, "b": 2.5}, d=3)
    policy = BufferedAsync(["a", "b"], seed=0, concurrency=2, staleness_threshold=1)
    engine = _trace_engine(policy, StalenessWeighting(), provider)
    results = engine.run(3)
    assert [e for e in provider.log if e[0] == "b"] == [("b", 0.0, 0)]
    engine.run_round()
    # v2 -> v3: b arrives at 2.5 two versions behind: discarded; a (t=3) makes v3
    third = results[2]
    assert [(f.client_id, f.reason) for f in third.failures] == [("b", "stale")]
    assert "2 versions behind" in third.failures[0].message
    assert third.participated == ("a",)
    assert third.clock_s == 3.0
    assert AsyncRoundSummary.from_result(third).discarded == 1
    # b was not asked again at v2 (it would repeat its fate); it is asked at v3
    assert [e for e in provider.log if e[0] == "b"] == [("b", 0.0, 0), ("b", 3.0, 3)]
    assert third.to_dict()["failures"][0]["reason"] == "stale"


def test_fedbuff_aggregates_every_k_and_keeps_concurrency_in_flight() -> None:
    delays = {f"c{i}": 1.0 + i for i in range(6)}
    provider = FixedDelays(delays, d=3)
    policy = BufferedAsync(list(delays), seed=3, concurrency=4, buffer_size=2)
    engine = _trace_engine(policy, StalenessWeighting(), provider)
    results = engine.run(5)
    assert all(r.num_clients == 2 for r in results)
    assert provider.max_in_flight == 4
    assert len(policy.in_flight) == 4
    # clock never goes back; each version's two updates are distinct clients
    clocks = [r.clock_s for r in results]
    assert clocks == sorted(clocks)
    assert all(len(set(r.participated)) == 2 for r in results)


def test_failed_clients_are_reported_and_replaced() -> None:
    provider = FixedDelays({"a": 1.0, "b": 0.5, "c": 2.0}, d=3, fail={"b"})
    policy = BufferedAsync(["a", "b", "c"], seed=0, concurrency=2)
    engine = _trace_engine(policy, StalenessWeighting(), provider)
    results = engine.run(3)
    assert all("b" not in r.participated for r in results)
    assert any(f.client_id == "b" and f.reason == "dropped" for r in results for f in r.failures)
    assert all(r.num_clients == 1 for r in results)


def test_nothing_in_flight_skips_the_version() -> None:
    provider = FixedDelays({"a": 1.0}, d=3, fail={"a"})
    policy = BufferedAsync(["a"], seed=0, concurrency=1)
    engine = _trace_engine(policy, StalenessWeighting(), provider)
    result = engine.run_round()
    assert result.aggregation == {"skipped": "no update arrived"}
    assert result.failures[0].reason == "dropped"
    assert engine.global_params.tolist() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------------- simulated clients


def _simulated(
    seed: int, settings: AsyncSettings, strategy: FedAvg | FedMedian | None = None
) -> tuple[RoundEngine, QuadraticClients]:
    spec = ParamSpec.from_sizes({"w": 6})
    clients = QuadraticClients(spec.d, seed=seed, num_clients=20)
    clients.configure(
        dropout_rate=0.1,
        straggler=ClientSpeeds(mean_s=1.0, shape=1.5, jitter=0.3),
        adversary=None,
    )
    ids = [clients.population.client_id(i) for i in range(20)]
    engine = RoundEngine(
        provider=clients,
        sampler=FractionSampler(clients.population, fraction=1.0, seed=seed),
        spec=spec,
        init_params=torch.zeros(spec.d),
        strategy=strategy or FedAvg(),
        seed=seed,
        policy=settings.policy(ids, seed=seed),
        pre_stages=[settings.stage()],
        evaluate=lambda p: (clients.loss(p), float("nan")),
    )
    return engine, clients


def test_same_seed_same_virtual_time_trace_and_model() -> None:
    settings = AsyncSettings(
        concurrency=8,
        buffer_size=3,
        staleness_threshold=4,
        staleness=Staleness("polynomial", a=0.5),
    )
    a, clients = _simulated(5, settings)
    b, _ = _simulated(5, settings)
    ra, rb = a.run(12), b.run(12)
    assert [r.clock_s for r in ra] == [r.clock_s for r in rb]
    assert [r.participated for r in ra] == [r.participated for r in rb]
    assert torch.equal(a.global_params, b.global_params)
    c, _ = _simulated(6, settings)
    rc = c.run(12)
    assert [r.clock_s for r in rc] != [r.clock_s for r in ra]
    # it learns: the quadratic's loss falls
    assert ra[-1].global_loss < 0.6 * clients.loss(torch.zeros(6))  # type: ignore[operator]
    assert max(r.stages["staleness"]["max"] for r in ra) >= 1


def test_a_robust_rule_aggregates_async_rows() -> None:
    settings = AsyncSettings(concurrency=6, buffer_size=5, staleness=Staleness("hinge"))
    engine, _ = _simulated(1, settings, strategy=FedMedian())
    results = engine.run(6)
    assert all(r.num_clients == 5 for r in results)
    assert all(r.aggregation.get("rule") == "FedMedian" for r in results), results[0].aggregation
    assert bool(torch.isfinite(engine.global_params).all())


def test_uniform_delays_are_within_their_bounds_and_seeded() -> None:
    model = UniformDelay(0.5, 2.0)
    draws = [model.delay(c, seed=1, round_=r) for c in range(50) for r in range(1, 5)]
    assert min(draws) >= 0.5
    assert max(draws) <= 2.0
    assert draws == [model.delay(c, seed=1, round_=r) for c in range(50) for r in range(1, 5)]
    assert UniformDelay(1.0, 1.0).delay(3, seed=0, round_=1) == 1.0


def test_client_speeds_are_persistent_and_heavy_tailed() -> None:
    speeds = ClientSpeeds(mean_s=1.0, shape=1.5, jitter=0.0)
    means = torch.tensor([speeds.client_mean(c, seed=0) for c in range(20000)])
    # Pareto with tail index 1.5 and mean 1: x_m = 1/3, P(X > x) = (x_m / x)^1.5
    assert float(means.min()) >= 1 / 3 - 1e-12
    for x in (1.0, 3.0, 10.0):
        expected = (1 / 3 / x) ** 1.5
        assert float((means > x).double().mean()) == pytest.approx(expected, rel=0.15)
    # the same client is slow every round (no jitter: exactly its mean)
    assert speeds.delay(7, seed=0, round_=1) == speeds.delay(7, seed=0, round_=9)
    jittered = ClientSpeeds(mean_s=2.0, shape=3.0, jitter=0.5, min_s=0.1)
    d = [jittered.delay(4, seed=0, round_=r) for r in range(1, 2001)]
    base = jittered.client_mean(4, seed=0)
    assert sum(d) / len(d) == pytest.approx(0.1 + base, rel=0.05)  # jitter has mean 1


def test_the_async_benchmark_quick_mode_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util
    import json

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "async_fl.py"
    spec = importlib.util.spec_from_file_location("async_fl_bench", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "rows.json"
    assert module.main(["--quick", "--plot", str(tmp_path / "p.png"), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["run"] for r in rows] == ["sync", "fedbuff"]
    assert rows[0]["time_to_target"] is not None
    assert (tmp_path / "p.png").exists()
    assert "speedup_sync_over_fedbuff" in capsys.readouterr().out
