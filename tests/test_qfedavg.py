"""q-FedAvg (Li, Sanjabi, Beirami & Smith 2020): the kernel against the paper's w-space
transcription, the strategy and its settings, the per-row losses from the clients through the
round engine (and the simulated adversary) to the aggregator, and determinism."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from velocity import cli
from velocity import kernels as K
from velocity.attacks import AttackPlan, AttackSpec, Empire, LabelFlipping, SignFlip, SybilNodes
from velocity.client import TrainConfig, Trainer
from velocity.errors import ConfigurationError, ValidationError
from velocity.models import build_model
from velocity.server import RoundEngine
from velocity.sim import ClientPopulation, ClientWork, FractionSampler, SequentialClients
from velocity.sim.adversary import SimulatedAdversary
from velocity.sim.population import client_index
from velocity.sim.provider import wants_initial_loss
from velocity.strategies import (
    NNM,
    AggregateStage,
    Bucketing,
    Clip,
    FedAvg,
    Krum,
    Pipeline,
    QFedAvg,
    RoundBatch,
    describe_strategies,
    parse_strategy,
    resolve_lipschitz,
    to_dict,
)
from velocity.types import (
    ClientTask,
    ClientUpdate,
    ParamSpec,
    StageContext,
    StageState,
    TaskConfig,
)

FEW = settings(max_examples=40, deadline=None)

# ------------------------------------------------------------------ the kernel


def paper_step(
    w: np.ndarray, client_models: np.ndarray, losses: np.ndarray, q: float, L: float
) -> np.ndarray:
    """Algorithm 2 of the paper, transcribed in w-space: the new global model."""
    dw = L * (w[None, :] - client_models)  # Δw_k = L(w^t − w_k)
    with np.errstate(divide="ignore"):
        f_q1 = np.where(losses > 0, losses ** (q - 1), 0.0 if q > 1 else 1.0)
    delta = (losses**q)[:, None] * dw  # Δ'_k = F_k^q Δw_k
    h = q * f_q1 * (dw**2).sum(axis=1) + L * losses**q  # h_k
    new: np.ndarray = w - delta.sum(axis=0) / h.sum()
    return new


@FEW
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 8),
    q=st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 15.0]) | st.floats(0, 20),
    L=st.floats(1e-2, 1e3),
)
def test_kernel_matches_the_papers_w_space_update(seed: int, n: int, q: float, L: float) -> None:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=6)
    deltas = rng.normal(size=(n, 6)) * rng.uniform(0.01, 3.0)
    losses = rng.uniform(0.05, 5.0, size=n)
    expected = paper_step(w, w[None, :] + deltas, losses, q, L) - w
    got = K.qfedavg(torch.tensor(deltas), torch.tensor(losses), q=q, lipschitz=L)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-12)


def test_kernel_hand_value() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    # q = 1, L = 1: h = 1·‖Δ‖² + F = [2, 5]; coefficients F / Σh = [1/7, 4/7]
    out = K.qfedavg(x, torch.tensor([1.0, 4.0]), q=1.0, lipschitz=1.0)
    torch.testing.assert_close(out, torch.tensor([1 / 7, 4 / 7], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_q0_is_the_unweighted_mean_bit_for_bit(dtype: torch.dtype) -> None:
    x = torch.randn(9, 13, generator=torch.Generator().manual_seed(0), dtype=dtype)
    losses = torch.rand(9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = torch.arange(1.0, 10.0)
    got = K.qfedavg(x, losses, w, q=0.0, lipschitz=123.0)
    assert torch.equal(got, K.mean(x))
    assert torch.equal(got, K.mean(x, torch.full((9,), 20.0)))  # equal sample counts


@FEW
@given(
    losses=st.lists(st.floats(0.05, 10.0), min_size=2, max_size=7, unique=True),
    qs=st.lists(st.floats(0, 10), min_size=2, max_size=4, unique=True),
)
def test_larger_q_weighs_high_loss_clients_more(losses: list[float], qs: list[float]) -> None:
    """On one-hot rows the step's coordinate k is client k's coefficient: the highest-loss
    client's share of the step grows with q (from 1/n at q = 0 towards 1), and for any two
    clients the ratio of their coefficients is (F_i / F_j)^q."""
    n = len(losses)
    x = torch.eye(n, dtype=torch.float64)
    f = torch.tensor(losses, dtype=torch.float64)
    top = int(f.argmax())
    shares = []
    for q in sorted(qs):
        coef = K.qfedavg(x, f, q=q, lipschitz=1.0)
        shares.append(float(coef[top] / coef.sum()))
        ratio = coef / coef[0]
        torch.testing.assert_close(ratio, (f / f[0]) ** q, rtol=1e-9, atol=1e-12)
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(shares))
    if min(qs) == 0:
        assert shares[0] == pytest.approx(1 / n)


def test_zero_losses() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    # q >= 1: F^(q-1) is finite at 0; a zero-loss client has no weight in the numerator
    out = K.qfedavg(x, torch.tensor([0.0, 2.0]), q=1.0, lipschitz=1.0)
    assert out[0] == 0.0
    assert out[1] > 0
    with pytest.raises(ValidationError, match=r"0 < q < 1 .* rows \[0\] with loss 0"):
        K.qfedavg(x, torch.tensor([0.0, 2.0]), q=0.5, lipschitz=1.0)
    with pytest.raises(ValidationError, match="denominator"):
        K.qfedavg(x, torch.zeros(2), q=2.0, lipschitz=1.0)
    assert K.qfedavg(x, torch.zeros(2), q=0.0, lipschitz=1.0).tolist() == [0.5, 0.5]


def test_huge_losses_and_q_do_not_overflow() -> None:
    """Scaling the losses by c and the rows by √c scales both sums by c^q and the step by
    √c: with (5e12)^40 far beyond float64, the result is still exact."""
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    f = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    small = K.qfedavg(x, f, q=40.0, lipschitz=2.0)
    huge = K.qfedavg(x * 1e6, f * 1e12, q=40.0, lipschitz=2.0)
    assert bool(torch.isfinite(huge).all())
    torch.testing.assert_close(huge, small * 1e6, rtol=1e-9, atol=0)


def test_nonfinite_rows_leave_with_their_losses() -> None:
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x[2, 1] = float("nan")
    f = torch.linspace(1.0, 2.0, 6, dtype=torch.float64)
    keep = torch.tensor([0, 1, 3, 4, 5])
    got = K.qfedavg(x, f, q=2.0, lipschitz=3.0)
    assert torch.equal(got, K.qfedavg(x[keep], f[keep], q=2.0, lipschitz=3.0))


# ------------------------------------------------------------------ the strategy


def test_settings_and_parsing() -> None:
    assert QFedAvg() == QFedAvg(q=1.0, lipschitz=None)
    assert parse_strategy("QFedAvg") == QFedAvg()
    assert parse_strategy("q_fed_avg") == QFedAvg()
    assert parse_strategy({"type": "QFedAvg", "q": 1.0}) == QFedAvg(q=1.0)
    assert parse_strategy({"type": "qfedavg", "q": 2, "lipschitz": 10}) == QFedAvg(2.0, 10.0)
    spec = yaml.safe_load("strategy: {type: QFedAvg, q: 5, lipschitz: 100}")["strategy"]
    assert parse_strategy(spec) == QFedAvg(q=5.0, lipschitz=100.0)
    assert type(QFedAvg(q=1).q) is float
    assert to_dict(QFedAvg(q=0.5)) == {"type": "QFedAvg", "q": 0.5, "lipschitz": None}
    with pytest.raises(ConfigurationError, match=r"^QFedAvg\.q must be a finite float >= 0"):
        QFedAvg(q=-1.0)
    with pytest.raises(ConfigurationError, match=r"QFedAvg\.lipschitz must be None or a finite"):
        parse_strategy({"type": "QFedAvg", "lipschitz": -2})


def test_listed_by_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    entry = next(d for d in describe_strategies() if d["name"] == "QFedAvg")
    assert entry["kind"] == "aggregator"
    assert [p["name"] for p in entry["parameters"]] == ["q", "lipschitz"]
    assert cli.main(["strategies"]) == cli.EXIT_OK
    assert "QFedAvg" in capsys.readouterr().out


def test_aggregate_needs_losses_and_a_lipschitz() -> None:
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(4))
    f = torch.tensor([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValidationError, match=r"QFedAvg needs one loss per row"):
        QFedAvg(lipschitz=1.0).aggregate(x)
    with pytest.raises(ValidationError, match=r"shape \(4,\)"):
        QFedAvg(lipschitz=1.0).aggregate(x, losses=f[:3])
    with pytest.raises(ConfigurationError, match=r"lipschitz is None.*1/lr"):
        QFedAvg().aggregate(x, losses=f)
    result = QFedAvg(q=2.0, lipschitz=5.0).aggregate(x, losses=f)
    assert torch.equal(result.update, K.qfedavg(x, f, q=2.0, lipschitz=5.0))
    assert result.metrics["rule"] == "QFedAvg"
    assert result.metrics["excluded"] is None


def test_pipelines_keep_each_row_one_clients() -> None:
    """Row-mixing pre-aggregators are refused; rows a clipping stage drops take their losses
    with them."""
    for mixing in (NNM(f=1), Bucketing(bucket_size=2)):
        with pytest.raises(ConfigurationError, match=f"{type(mixing).__name__} mixes the rows"):
            Pipeline(mixing, QFedAvg())
        with pytest.raises(ConfigurationError, match="mixes the rows"):
            parse_strategy([to_dict(mixing), "QFedAvg"])
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x[1] = float("inf")
    f = torch.linspace(0.5, 3.0, 6, dtype=torch.float64)
    keep = torch.tensor([0, 2, 3, 4, 5])
    piped = Pipeline(Clip(threshold=0.5), QFedAvg(q=3.0, lipschitz=2.0)).aggregate(x, losses=f)
    clipped, _ = K.clip(x[keep], threshold=0.5)
    assert torch.equal(piped.update, K.qfedavg(clipped, f[keep], q=3.0, lipschitz=2.0))
    assert piped.metrics["dropped_nonfinite"] == [1]


def test_resolve_lipschitz() -> None:
    assert resolve_lipschitz(QFedAvg(q=2.0), lr=0.1) == QFedAvg(q=2.0, lipschitz=10.0)
    fixed = QFedAvg(lipschitz=3.0)
    assert resolve_lipschitz(fixed, lr=0.1) is fixed
    krum = Krum(f=1)
    assert resolve_lipschitz(krum, lr=0.1) is krum
    assert resolve_lipschitz(Pipeline(Clip(), QFedAvg()), lr=0.5) == Pipeline(
        Clip(), QFedAvg(lipschitz=2.0)
    )
    for bad in (0.0, -1.0, float("inf"), "0.1", True):
        with pytest.raises(ConfigurationError, match="lr must be a finite float > 0"):
            resolve_lipschitz(QFedAvg(), lr=bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the batch and its stage


def _ctx(d: int) -> StageContext:
    return StageContext(0, 1, 0, ParamSpec.from_sizes({"w": d}), torch.zeros(d))


def test_round_batch_losses() -> None:
    rows = torch.zeros(3, 2)
    ids = ["a", "b", "c"]
    assert RoundBatch(rows=rows, num_samples=[1, 1, 1], client_ids=ids).losses is None
    batch = RoundBatch(rows=rows, num_samples=[1, 1, 1], client_ids=ids, losses=[1, 2, 3])
    assert batch.losses == [1.0, 2.0, 3.0]
    with pytest.raises(ValidationError, match=r"one loss per row \(n = 3\).*got 2"):
        RoundBatch(rows=rows, num_samples=[1, 1, 1], client_ids=ids, losses=[1.0, 2.0])
    updates = [ClientUpdate(c, 1, torch.zeros(2), metrics={"initial_loss": 0.5}) for c in ids]
    assert RoundBatch.initial_losses(updates) == [0.5, 0.5, 0.5]
    updates[1] = ClientUpdate("b", 1, torch.zeros(2))
    assert RoundBatch.initial_losses(updates) is None
    assert RoundBatch.initial_losses([]) == []


def test_aggregate_stage_hands_the_losses_over_and_names_bad_ones() -> None:
    rows = torch.randn(3, 4, generator=torch.Generator().manual_seed(6))
    ids = ["a", "b", "c"]
    stage = AggregateStage(QFedAvg(q=1.0, lipschitz=4.0))
    batch = RoundBatch(rows=rows, num_samples=[5, 1, 9], client_ids=ids, losses=[1.0, 2.0, 0.5])
    out, _, metrics = stage.apply(batch, {}, _ctx(4))
    expected = K.qfedavg(rows, torch.tensor([1.0, 2.0, 0.5]), q=1.0, lipschitz=4.0)
    assert out.update is not None
    assert torch.equal(out.update, expected)
    assert metrics["excluded"] is None
    assert metrics["excluded_clients"] is None
    with pytest.raises(ValidationError, match=r"QFedAvg needs every client's initial_loss.*"):
        stage.apply(RoundBatch(rows=rows, num_samples=[1] * 3, client_ids=ids), {}, _ctx(4))
    nan = RoundBatch(rows=rows, num_samples=[1] * 3, client_ids=ids, losses=[1, float("nan"), -1])
    with pytest.raises(ValidationError, match=r"'b' reported nan; 'c' reported -1.0"):
        stage.apply(nan, {}, _ctx(4))
    # rules that need no losses ignore them
    _, _, plain = AggregateStage(FedAvg()).apply(batch, {}, _ctx(4))
    assert plain["rule"] == "FedAvg"


# ------------------------------------------------------------------ clients and the engine

N_CLIENTS, PER_CLIENT = 6, 20
LR = 0.1


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N_CLIENTS * PER_CLIENT, 8, generator=gen)
    # non-IID labels: client k's examples mostly carry label k % 4
    y = (torch.arange(N_CLIENTS * PER_CLIENT) // PER_CLIENT) % 4
    noise = torch.randint(0, 4, y.shape, generator=gen)
    y = torch.where(torch.rand(y.shape, generator=gen) < 0.3, noise, y)
    return x, y


def _trainer() -> Trainer:
    model = build_model("logreg", in_features=8, num_classes=4, seed=0)
    return Trainer(model, TrainConfig(batch_size=5, local_epochs=1, lr=LR))


class _Spy:
    """A server stage that records the batch the aggregator will see."""

    name = "spy"

    def __init__(self) -> None:
        self.seen: list[tuple[list[str], list[float] | None]] = []

    def init(self, spec: ParamSpec) -> StageState:
        return {}

    def apply(
        self, x: RoundBatch, state: StageState, ctx: StageContext
    ) -> tuple[RoundBatch, StageState, Mapping[str, Any]]:
        self.seen.append((list(x.client_ids), None if x.losses is None else list(x.losses)))
        return x, state, {}


def _engine(
    strategy: Any, *, ask: bool = True, attacks: tuple[AttackSpec, ...] = (), seed: int = 0
) -> tuple[RoundEngine, _Spy]:
    x, y = _data()
    trainer = _trainer()
    offsets = torch.arange(0, N_CLIENTS * PER_CLIENT + 1, PER_CLIENT)
    population = ClientPopulation(torch.arange(N_CLIENTS * PER_CLIENT), offsets)
    provider = SequentialClients(trainer, x, y, population, seed=seed, num_classes=4)
    plan = AttackPlan(num_clients=N_CLIENTS, seed=seed, index_of=client_index, specs=list(attacks))
    adversary = SimulatedAdversary(plan, population)
    provider.configure(dropout_rate=0.0, straggler=None, adversary=adversary)
    spy = _Spy()
    engine = RoundEngine(
        provider=provider,
        sampler=FractionSampler(population, fraction=1.0, seed=seed),
        spec=trainer.spec,
        init_params=trainer.spec.flatten(trainer.model.state_dict()),
        strategy=strategy,
        seed=seed,
        pre_stages=[adversary.stage, spy],
        task_config=TaskConfig(options={"initial_loss": True}) if ask else None,
        annotators=[adversary],
    )
    return engine, spy


def test_trainer_measures_the_received_models_loss_only_when_asked() -> None:
    x, y = _data()
    trainer = _trainer()
    params = trainer.spec.flatten(trainer.model.state_dict())
    idx = torch.arange(20, 40)
    plain = trainer.train(params, x, y, idx, generator=torch.Generator().manual_seed(0))
    assert "initial_loss" not in plain.metrics
    plain_delta = plain.delta.clone()
    asked = trainer.train(
        params, x, y, idx, generator=torch.Generator().manual_seed(0), initial_loss=True
    )
    assert torch.equal(asked.delta, plain_delta)  # the measurement changes no bit
    assert asked.metrics["initial_loss"] == trainer.evaluate(params, x, y, indices=idx)[0]
    assert {k: v for k, v in asked.metrics.items() if k != "initial_loss"} == dict(plain.metrics)
    with pytest.raises(ConfigurationError, match="initial_loss must be True or False"):
        trainer.train(params, x, y, idx, generator=torch.Generator(), initial_loss=1)  # type: ignore[arg-type]


def test_the_task_option_asks_for_it() -> None:
    def task(options: Mapping[str, Any]) -> ClientTask:
        return ClientTask("c", 1, 0, torch.zeros(3), config=TaskConfig(options=options))

    assert wants_initial_loss(task({})) is False
    assert wants_initial_loss(task({"initial_loss": True})) is True
    assert wants_initial_loss(task({"initial_loss": False})) is False
    with pytest.raises(ConfigurationError, match=r"options\['initial_loss'\] must be True or"):
        wants_initial_loss(task({"initial_loss": "yes"}))


def test_q0_with_equal_weights_is_fedavg_end_to_end() -> None:
    """Equal sample counts: q-FedAvg with q = 0 and FedAvg both take the plain mean, bit for
    bit, and measuring the initial losses changes no client's update."""
    qfed, spy = _engine(QFedAvg(q=0.0, lipschitz=1 / LR))
    fedavg, _ = _engine(FedAvg(), ask=False)
    for _ in range(3):
        a, b = qfed.run_round(), fedavg.run_round()
        assert a.aggregation["rule"] == "QFedAvg"
        assert torch.equal(qfed.global_params, fedavg.global_params)
    losses = spy.seen[0][1]
    assert losses is not None
    assert len(losses) == N_CLIENTS
    assert all(v > 0 for v in losses)
    assert b.aggregation["excluded"] is None


def test_an_engine_round_is_the_kernel_on_the_clients_rows_and_losses() -> None:
    engine, spy = _engine(QFedAvg(q=2.0, lipschitz=1 / LR))
    provider = engine.provider
    assert isinstance(provider, SequentialClients)
    start = engine.global_params.clone()
    rows = torch.zeros(N_CLIENTS, engine.spec.d)
    losses = []
    for k in range(N_CLIENTS):
        task = ClientTask(
            client_id=provider.population.client_id(k),
            round=1,
            version=0,
            params=start,
            config=TaskConfig(options={"initial_loss": True}),
            out=rows[k],
        )
        losses.append(provider.train(ClientWork(task, k, rows[k])).metrics["initial_loss"])
    engine.run_round()
    assert spy.seen[0][1] == losses
    expected = K.qfedavg(rows, torch.tensor(losses), q=2.0, lipschitz=1 / LR)
    assert engine.last_aggregate is not None
    assert torch.equal(engine.last_aggregate, expected)
    assert torch.equal(engine.global_params, start + expected)
    # q > 0 moves the step away from the plain mean, towards the high-loss clients
    assert not torch.allclose(expected, rows.mean(dim=0))


def test_deterministic() -> None:
    a, _ = _engine(QFedAvg(q=1.0, lipschitz=1 / LR), seed=3)
    b, _ = _engine(QFedAvg(q=1.0, lipschitz=1 / LR), seed=3)
    a.run(2)
    b.run(2)
    assert torch.equal(a.global_params, b.global_params)


def test_a_round_without_losses_is_refused() -> None:
    engine, _ = _engine(QFedAvg(q=1.0, lipschitz=1 / LR), ask=False)
    before = engine.global_params.clone()
    with pytest.raises(ValidationError, match=r"initial_loss.*TaskConfig\(options="):
        engine.run_round()
    assert torch.equal(engine.global_params, before)
    assert engine.round == 0


def test_under_attack_every_crafted_row_claims_the_largest_honest_loss() -> None:
    """Craft-only (Empire), own-update (SignFlip) and Sybil rows claim the largest honest
    loss; a data-poisoning client (LabelFlipping) keeps the loss it measured."""
    attacks = (
        AttackSpec(Empire(), clients=(0,)),
        AttackSpec(SignFlip(), clients=(2,)),
        AttackSpec(LabelFlipping(), clients=(4,)),
        AttackSpec(SybilNodes(count=2)),
    )
    engine, spy = _engine(QFedAvg(q=1.0, lipschitz=1 / LR), attacks=attacks)
    result = engine.run_round()
    ids, losses = spy.seen[0]
    assert losses is not None
    by_id = dict(zip(ids, losses, strict=True))
    honest = [by_id[f"client-{k}"] for k in (1, 3, 5)]
    top = max(honest)
    assert by_id["client-0"] == top
    assert by_id["client-2"] == top
    assert [by_id[i] for i in ids if i.startswith("sybil")] == [top, top]
    assert by_id["client-4"] != top  # measured on its flipped labels
    assert result.aggregation["rule"] == "QFedAvg"
    assert bool(torch.isfinite(engine.global_params).all())
    assert result.attack_results
    json.dumps(result.to_dict())  # the round's record stays JSON
