"""DP stages: clipping, local noise, DP-FedAvg's server stage (noise statistics, budget,
adaptive clipping), and the plan's calibration against the accountant."""

from __future__ import annotations

import math

import pytest
import torch

from velocity.errors import ConfigurationError
from velocity.privacy import (
    CentralDP,
    ClipUpdate,
    LocalGaussianNoise,
    PrivacyAccountant,
    PrivacyBudgetExceededError,
    PrivacySettings,
    SamplingScheme,
    adaptive_noise_split,
    compute_epsilon,
    plan_privacy,
)
from velocity.strategies import RoundBatch
from velocity.types import ParamSpec, StageContext


def _ctx(d: int, round_: int = 1, seed: int = 0) -> StageContext:
    return StageContext(seed, round_, round_ - 1, ParamSpec.from_sizes({"w": d}), torch.zeros(d))


def _accountant(z: float = 1.0, budget: float | None = None) -> PrivacyAccountant:
    return PrivacyAccountant(
        sampling=SamplingScheme.fixed(100, 10),
        delta=1e-5,
        noise_multiplier=z,
        epsilon_budget=budget,
    )


def _batch(rows: torch.Tensor) -> RoundBatch:
    n = rows.shape[0]
    return RoundBatch(rows=rows, num_samples=[5] * n, client_ids=[f"c{i}" for i in range(n)])


def test_clip_update_bounds_the_norm_and_keeps_small_rows() -> None:
    ctx = _ctx(3).for_client("c", 0)
    row, _, m = ClipUpdate(2.0).apply(torch.tensor([3.0, 0.0, 4.0]), {}, ctx)
    assert torch.linalg.vector_norm(row).item() == pytest.approx(2.0)
    assert m == {"norm": 5.0, "clipped": 1.0}
    small = torch.tensor([0.1, 0.2, 0.2])
    row, _, m = ClipUpdate(2.0).apply(small.clone(), {}, ctx)
    assert torch.equal(row, small)
    assert m["clipped"] == 0.0


def test_clip_zeroes_non_finite_rows() -> None:
    row, _, m = ClipUpdate(1.0).apply(torch.tensor([math.nan, 1.0]), {}, _ctx(2).for_client("c", 0))
    assert torch.equal(row, torch.zeros(2))
    assert m["norm"] == math.inf


def test_local_noise_statistics_and_client_streams() -> None:
    d = 200_000
    stage = LocalGaussianNoise(clip=1.0, sigma=0.5)
    a, _, _ = stage.apply(torch.zeros(d), {}, _ctx(d).for_client("a", 0))
    b, _, _ = stage.apply(torch.zeros(d), {}, _ctx(d).for_client("b", 1))
    again, _, _ = stage.apply(torch.zeros(d), {}, _ctx(d).for_client("a", 0))
    assert torch.equal(a, again)
    assert not torch.equal(a, b)
    # mean within 5 standard errors, variance within 5 of its standard errors
    assert abs(a.double().mean().item()) < 5 * 0.5 / math.sqrt(d)
    var = a.double().var().item()
    assert abs(var - 0.25) < 5 * 0.25 * math.sqrt(2 / d)


def test_central_dp_is_clip_sum_noise_over_fixed_denominator() -> None:
    d, n = 50_000, 8
    gen = torch.Generator().manual_seed(3)
    rows = torch.randn(n, d, generator=gen) * 0.01
    rows[0] *= 1000  # one large update: clipped to S
    expected_sum = rows.clone()
    norms = torch.linalg.vector_norm(expected_sum.double(), dim=1)
    expected_sum *= torch.clamp(1.0 / norms, max=1.0).float()[:, None]
    stage = CentralDP(_accountant(z=2.0), clip=1.0, denominator=10.0)
    batch, state, metrics = stage.apply(
        _batch(rows), stage.init(ParamSpec.from_sizes({"w": d})), _ctx(d)
    )
    assert batch.notes["aggregated_by"] == "central_dp"
    assert batch.update is not None
    noise = batch.update.double() * 10.0 - expected_sum.double().sum(0)
    # noise ~ N(0, (z S)^2) per coordinate
    assert abs(noise.mean().item()) < 5 * 2.0 / math.sqrt(d)
    assert noise.std().item() == pytest.approx(2.0, rel=5 * math.sqrt(2 / d))
    assert metrics["epsilon"] == pytest.approx(
        compute_epsilon(2.0, SamplingScheme.fixed(100, 10), 1e-5, rounds=1)
    )
    assert state["noise_multipliers"].tolist() == [2.0]


def test_central_dp_refuses_the_round_past_the_budget_and_keeps_state() -> None:
    z = 1.0
    one = compute_epsilon(z, SamplingScheme.fixed(100, 10), 1e-5, rounds=1)
    two = compute_epsilon(z, SamplingScheme.fixed(100, 10), 1e-5, rounds=2)
    stage = CentralDP(_accountant(z, budget=(one + two) / 2), clip=1.0, denominator=10.0)
    spec = ParamSpec.from_sizes({"w": 4})
    _, state, _ = stage.apply(_batch(torch.ones(3, 4)), stage.init(spec), _ctx(4, 1))
    with pytest.raises(PrivacyBudgetExceededError, match="epsilon"):
        stage.apply(_batch(torch.ones(3, 4)), state, _ctx(4, 2))
    assert state["noise_multipliers"].tolist() == [1.0]


def test_adaptive_clipping_tracks_the_quantile() -> None:
    d, n = 20, 400
    rows = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    rows *= (torch.rand(n, generator=torch.Generator().manual_seed(1)) * 4)[:, None] / (
        torch.linalg.vector_norm(rows, dim=1)[:, None]
    )  # norms uniform on [0, 4]: median 2
    stage = CentralDP(
        _accountant(z=1.0), clip=0.1, denominator=float(n), adaptive=True, clip_lr=0.5
    )
    spec = ParamSpec.from_sizes({"w": d})
    state = stage.init(spec)
    for r in range(1, 60):
        _, state, _metrics = stage.apply(_batch(rows.clone()), state, _ctx(d, r))
    assert float(state["clip"]) == pytest.approx(2.0, rel=0.15)
    assert stage.update_noise_multiplier == pytest.approx(adaptive_noise_split(1.0, n / 20))


def test_adaptive_split_is_andrew_et_al_theorem() -> None:
    z_delta = adaptive_noise_split(1.2, 3.0)
    assert (z_delta**-2 + (2 * 3.0) ** -2) ** -0.5 == pytest.approx(1.2)
    with pytest.raises(ConfigurationError, match="count_stddev"):
        adaptive_noise_split(2.0, 0.9)


def test_plan_calibrates_without_overshooting_and_refuses_a_too_small_multiplier() -> None:
    settings = PrivacySettings(epsilon=2.0, delta=1e-5, client_sampling="poisson")
    plan = plan_privacy(
        settings, num_rounds=20, num_clients=1000, clients_per_round=100, client_fraction=0.1
    )
    assert plan.calibrated
    assert plan.planned_epsilon <= 2.0
    assert plan.sampling.kind == "poisson"
    assert plan.server_stage is not None
    assert plan.server_stage.denominator == pytest.approx(100.0)
    with pytest.raises(ConfigurationError, match=r"reach epsilon=.* > privacy\.epsilon=2"):
        plan_privacy(
            PrivacySettings(epsilon=2.0, noise_multiplier=0.3),
            num_rounds=20,
            num_clients=1000,
            clients_per_round=100,
            client_fraction=0.1,
        )


def test_plan_local_mode_uses_replace_one_sensitivity() -> None:
    plan = plan_privacy(
        PrivacySettings(mode="local", epsilon=4.0, max_grad_norm=0.5),
        num_rounds=3,
        num_clients=10,
        clients_per_round=5,
        client_fraction=0.5,
    )
    assert plan.local_sigma == pytest.approx(0.5 * plan.noise_multiplier)
    assert compute_epsilon(plan.noise_multiplier, SamplingScheme.full(1), 1e-5, rounds=3) <= 4.0


def test_plan_dp_sgd_takes_the_worst_client() -> None:
    plan = plan_privacy(
        PrivacySettings(mode="dp_sgd", epsilon=3.0),
        num_rounds=2,
        num_clients=3,
        clients_per_round=3,
        client_fraction=1.0,
        client_sizes=[500, 1000, 4000],
        batch_size=50,
        local_epochs=1,
    )
    assert plan.dp_sgd is not None
    worst = max(
        compute_epsilon(
            plan.noise_multiplier, SamplingScheme.poisson(n, 50 / n), 1e-5, rounds=2 * (n // 50)
        )
        for n in (500, 1000, 4000)
    )
    assert plan.planned_epsilon == pytest.approx(worst)
    assert worst <= 3.0


def test_quiet_accounting_silences_the_library_and_restores_the_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from velocity.privacy import quiet_accounting

    logger = logging.getLogger("absl")
    before = logger.level
    with caplog.at_level(logging.WARNING, logger="absl"), quiet_accounting():
        logger.warning("excluded order")
        assert logger.level == logging.ERROR
    assert "excluded order" not in caplog.text
    assert logger.level == before
