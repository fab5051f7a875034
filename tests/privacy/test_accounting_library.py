"""The accountant against Google's dp-accounting computed by hand, calibration that never
overshoots (hypothesis), the budget, and the Gaussian mechanism's exact calibration."""

from __future__ import annotations

import math

import dp_accounting
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velocity.errors import ConfigurationError
from velocity.privacy import (
    PrivacyAccountant,
    PrivacyBudgetExceededError,
    SamplingScheme,
    analytic_gaussian_sigma,
    calibrate_noise_multiplier,
    classic_gaussian_sigma,
    compute_epsilon,
    gaussian_delta,
)

REL = dp_accounting.NeighboringRelation


def _rdp(event: dp_accounting.DpEvent, relation: object, delta: float) -> float:
    from velocity.privacy import DEFAULT_RDP_ORDERS

    accountant = dp_accounting.rdp.RdpAccountant(list(DEFAULT_RDP_ORDERS), relation)
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize(
    ("z", "q", "rounds", "delta"),
    [(1.1, 0.01, 100, 1e-5), (0.8, 0.1, 20, 1e-6), (3.0, 0.5, 5, 1e-5)],
)
def test_poisson_rdp_equals_the_library_to_1e_6(
    z: float, q: float, rounds: int, delta: float
) -> None:
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds
    )
    expected = _rdp(event, REL.ADD_OR_REMOVE_ONE, delta)
    got = compute_epsilon(z, SamplingScheme.poisson(10_000, q), delta, rounds=rounds)
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("z", "n", "m", "rounds"), [(1.1, 1000, 10, 100), (2.0, 100, 30, 10)])
def test_fixed_sampling_rdp_equals_the_library_replace_one(
    z: float, n: int, m: int, rounds: int
) -> None:
    # replace-one: a sum of updates clipped to S moves by up to 2 S; the library's RDP takes the
    # Gaussian's multiplier relative to that distance, so the event carries z / 2.
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.SampledWithoutReplacementDpEvent(n, m, dp_accounting.GaussianDpEvent(z / 2)),
        rounds,
    )
    expected = _rdp(event, REL.REPLACE_ONE, 1e-5)
    got = compute_epsilon(z, SamplingScheme.fixed(n, m), 1e-5, rounds=rounds)
    assert got == pytest.approx(expected, rel=1e-6)


def test_poisson_pld_equals_the_library() -> None:
    z, q, rounds, delta = 1.0, 0.05, 50, 1e-5
    accountant = dp_accounting.pld.PLDAccountant(
        REL.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-4
    )
    accountant.compose(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds
    )
    expected = accountant.get_epsilon(delta)
    got = compute_epsilon(
        z, SamplingScheme.poisson(1000, q), delta, rounds=rounds, accountant="pld"
    )
    assert got == pytest.approx(expected, rel=1e-6)


def test_pld_refuses_fixed_sampling_naming_the_supported_ones() -> None:
    with pytest.raises(ConfigurationError, match="supported"):
        compute_epsilon(1.0, SamplingScheme.fixed(100, 10), 1e-5, rounds=3, accountant="pld")


def test_abadi_et_al_mnist_example() -> None:
    # TF-Privacy's compute_dp_sgd_privacy example: N=60000, batch 256, z=1.1, 60 epochs,
    # delta=1e-5: TF-Privacy published epsilon = 2.92 with the classic RDP-to-DP conversion;
    # dp-accounting's conversion (Canonne, Kamath & Steinke 2020) is tighter, 2.60.
    q = 256 / 60000
    steps = int(60 * 60000 / 256)
    eps = compute_epsilon(1.1, SamplingScheme.poisson(60000, q), 1e-5, rounds=steps)
    assert eps == pytest.approx(2.5966, abs=1e-3)
    assert eps < 2.92


def test_per_round_multipliers_compose_like_the_library() -> None:
    sampling = SamplingScheme.poisson(1000, 0.1)
    zs = [1.0, 1.0, 2.0, 0.7]
    events = [
        dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(z)) for z in zs
    ]
    expected = _rdp(dp_accounting.ComposedDpEvent(events), REL.ADD_OR_REMOVE_ONE, 1e-5)
    assert compute_epsilon(zs, sampling, 1e-5) == pytest.approx(expected, rel=1e-6)


@settings(max_examples=8, deadline=None)
@given(
    epsilon=st.floats(0.2, 10.0),
    delta=st.floats(1e-7, 1e-3),
    rounds=st.integers(1, 100),
    q=st.floats(0.005, 1.0),
    kind=st.sampled_from(["poisson", "fixed"]),
)
def test_calibration_never_overshoots_and_is_tight(
    epsilon: float, delta: float, rounds: int, q: float, kind: str
) -> None:
    sampling = (
        SamplingScheme.poisson(1000, q)
        if kind == "poisson"
        else SamplingScheme.fixed(1000, max(1, round(q * 1000)))
    )
    z = calibrate_noise_multiplier(epsilon, delta, rounds=rounds, sampling=sampling)
    assert compute_epsilon(z, sampling, delta, rounds=rounds) <= epsilon
    if z > 0.05:
        assert compute_epsilon(z * 0.99, sampling, delta, rounds=rounds) > epsilon


def test_accountant_steps_checks_the_budget_and_restores() -> None:
    sampling = SamplingScheme.fixed(100, 10)
    one = compute_epsilon(1.0, sampling, 1e-5, rounds=1)
    three = compute_epsilon(1.0, sampling, 1e-5, rounds=3)
    acc = PrivacyAccountant(
        sampling=sampling, delta=1e-5, noise_multiplier=1.0, epsilon_budget=three * 1.0001
    )
    eps = [acc.step() for _ in range(3)]
    assert eps[0] == pytest.approx(one)
    assert eps[-1] == pytest.approx(three)
    assert eps == sorted(eps)
    with pytest.raises(PrivacyBudgetExceededError, match=r"round 4 .*epsilon"):
        acc.check_next()
    again = PrivacyAccountant(sampling=sampling, delta=1e-5, noise_multiplier=1.0)
    again.restore(acc.state())
    assert again.epsilon == pytest.approx(acc.epsilon)
    assert again.rounds == 3
    assert {"epsilon", "delta", "noise_multiplier", "sampling", "sampling_rate", "rounds",
            "accountant", "neighboring_relation", "orders"} <= set(acc.to_dict())  # fmt: skip


def test_gaussian_delta_matches_the_library_pld_of_one_gaussian() -> None:
    sigma, eps = 1.3, 1.5
    pld = dp_accounting.pld.privacy_loss_distribution.from_gaussian_mechanism(
        sigma, value_discretization_interval=1e-5
    )
    assert gaussian_delta(sigma, eps) == pytest.approx(pld.get_delta_for_epsilon(eps), rel=1e-3)


@settings(max_examples=25, deadline=None)
@given(epsilon=st.floats(0.05, 20.0), delta=st.floats(1e-9, 1e-2))
def test_analytic_sigma_never_overshoots(epsilon: float, delta: float) -> None:
    sigma = analytic_gaussian_sigma(epsilon, delta)
    assert gaussian_delta(sigma, epsilon) <= delta
    assert gaussian_delta(sigma * 0.999, epsilon) > delta * 0.999


def test_classic_formula_fails_beyond_epsilon_one_and_is_refused() -> None:
    # the classic sigma = sqrt(2 ln(1.25/delta))/eps, evaluated by hand at eps = 10
    eps, delta = 10.0, 1e-5
    classic = math.sqrt(2 * math.log(1.25 / delta)) / eps
    assert gaussian_delta(classic, eps) > delta  # it would not be (eps, delta)-DP
    with pytest.raises(ConfigurationError, match="analytic"):
        classic_gaussian_sigma(eps, delta)
    assert classic_gaussian_sigma(0.5, delta) >= analytic_gaussian_sigma(0.5, delta)
