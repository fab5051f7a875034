"""Parameter derivation: exact tails checked by brute force, monotonicity, refusals."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from velocity.errors import ConfigurationError
from velocity.secagg import (
    CommunicationGraph,
    SecAggParams,
    ThreatModel,
    correctness_failure_bound,
    derive_parameters,
    privacy_failure_bound,
)
from velocity.secagg._params import (
    hypergeometric_pmf,
    neighbourhood_exposure,
    neighbourhood_shortfall,
    run_removed_probability,
)

# -- brute force ---------------------------------------------------------------------------------


def _neighbourhoods(others: int, k: int) -> list[tuple[int, ...]]:
    return list(itertools.combinations(range(others), k))


@pytest.mark.parametrize(("others", "corrupt", "k"), [(9, 3, 4), (7, 0, 2), (8, 8, 3), (6, 2, 6)])
def test_hypergeometric_pmf_matches_enumeration(others: int, corrupt: int, k: int) -> None:
    counts = [0] * (k + 1)
    subsets = _neighbourhoods(others, k)
    for subset in subsets:
        counts[sum(1 for v in subset if v < corrupt)] += 1
    pmf = hypergeometric_pmf(others, corrupt, k)
    for j in range(k + 1):
        assert pmf[j] == pytest.approx(counts[j] / len(subsets), rel=1e-12, abs=1e-15)


def _exact_exposure(n: int, k: int, t: int, corrupt: int) -> Fraction:
    subsets = _neighbourhoods(n - 1, k)
    bad = sum(1 for s in subsets if sum(1 for v in s if v < corrupt) >= 2 * t - k)
    return Fraction(bad, len(subsets))


def _exact_shortfall(n: int, k: int, t: int, corrupt: int, dropout: Fraction) -> Fraction:
    """P[fewer than t honest survivors among a uniformly random k-neighbourhood]."""
    subsets = _neighbourhoods(n - 1, k)
    total = Fraction(0)
    for subset in subsets:
        honest = [v for v in subset if v >= corrupt]
        for pattern in itertools.product((False, True), repeat=len(honest)):
            drops = sum(pattern)
            weight = dropout**drops * (1 - dropout) ** (len(honest) - drops)
            if len(honest) - drops < t:
                total += weight
    return total / len(subsets)


@pytest.mark.parametrize(
    ("n", "k", "t", "corrupt", "dropout"),
    [(10, 4, 3, 2, Fraction(1, 10)), (9, 6, 4, 1, Fraction(1, 5)), (8, 2, 2, 0, Fraction(1, 3))],
)
def test_neighbourhood_tails_match_brute_force(
    n: int, k: int, t: int, corrupt: int, dropout: Fraction
) -> None:
    assert neighbourhood_exposure(n, k, t, corrupt) == pytest.approx(
        float(_exact_exposure(n, k, t, corrupt)), rel=1e-12, abs=1e-15
    )
    assert neighbourhood_shortfall(n, k, t, corrupt, float(dropout)) == pytest.approx(
        float(_exact_shortfall(n, k, t, corrupt, dropout)), rel=1e-12, abs=1e-15
    )


@pytest.mark.parametrize(
    ("n", "run", "corrupt", "dropout"), [(8, 3, 2, Fraction(1, 5)), (7, 2, 0, Fraction(1, 2))]
)
def test_run_removed_probability_matches_brute_force(
    n: int, run: int, corrupt: int, dropout: Fraction
) -> None:
    placements = list(itertools.combinations(range(n), corrupt))
    total = Fraction(0)
    for placed in placements:
        honest_in_run = sum(1 for p in range(run) if p not in placed)
        total += dropout**honest_in_run
    exact = total / len(placements)
    assert run_removed_probability(n, run, corrupt, float(dropout)) == pytest.approx(
        float(exact), rel=1e-12
    )


@pytest.mark.parametrize(("n", "k"), [(8, 2), (9, 4), (10, 4), (10, 6)])
def test_a_disconnected_harary_graph_has_a_removed_run_of_k_over_2(n: int, k: int) -> None:
    """The connectivity term's premise, checked for every removal set."""
    graph = CommunicationGraph(n=n, k=k, order=tuple(range(n)))
    half = k // 2
    for mask in range(1 << n):
        removed = {v for v in range(n) if mask >> v & 1}
        alive = [v for v in range(n) if v not in removed]
        if len(alive) < 2:
            continue
        seen, stack = {alive[0]}, [alive[0]]
        while stack:
            for w in graph.neighbours(stack.pop()):
                if w not in removed and w not in seen:
                    seen.add(w)
                    stack.append(w)
        if len(seen) < len(alive):
            runs = [all((s + i) % n in removed for i in range(half)) for s in range(n)]
            assert sum(runs) >= 1, removed


def test_harary_neighbourhood_is_a_uniform_subset_over_permutations() -> None:
    n, k = 6, 4
    counts: dict[frozenset[int], int] = {}
    for order in itertools.permutations(range(n)):
        hood = frozenset(CommunicationGraph(n=n, k=k, order=order).neighbours(0))
        counts[hood] = counts.get(hood, 0) + 1
    assert len(counts) == math.comb(n - 1, k)
    assert len(set(counts.values())) == 1


def test_bounds_compose_the_per_client_tails() -> None:
    threat = ThreatModel(corrupt_fraction=0.1, dropout_rate=0.05)
    n, k, t = 300, 40, 26
    c = threat.corrupt_count(n)
    privacy = (n - c) * neighbourhood_exposure(n, k, t, c) + n * run_removed_probability(
        n, k // 2, c, 0.05
    )
    assert privacy_failure_bound(n, k, t, threat) == pytest.approx(privacy)
    assert correctness_failure_bound(n, k, t, threat) == pytest.approx(
        n * neighbourhood_shortfall(n, k, t, c, 0.05)
    )


# -- derivation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [100, 300, 1000, 5000])
@pytest.mark.parametrize(("g", "d"), [(0.0, 0.05), (0.05, 0.05), (0.1, 0.1), (0.02, 0.2)])
def test_derived_parameters_meet_both_targets_and_are_minimal(n: int, g: float, d: float) -> None:
    threat = ThreatModel(corrupt_fraction=g, dropout_rate=d)
    p = derive_parameters(n, threat)
    assert privacy_failure_bound(n, p.k, p.t, threat) <= 2.0**-40
    assert correctness_failure_bound(n, p.k, p.t, threat) <= 2.0**-20
    assert p.privacy_failure is not None
    assert p.correctness_failure is not None
    assert p.k // 2 < p.t <= p.k
    # No smaller even degree has a t meeting both targets. The correctness failure grows with
    # t, so at each k only the smallest t meeting the privacy target needs checking.
    for k in range(2, min(p.k, n - 1), 2):
        private = [
            t
            for t in range(k // 2 + 1, k + 1)
            if privacy_failure_bound(n, k, t, threat) <= 2.0**-40
        ]
        if private:
            assert correctness_failure_bound(n, k, private[0], threat) > 2.0**-20, k


@pytest.mark.parametrize("n", [300, 2000, 20000])
def test_more_dropout_never_needs_a_smaller_graph(n: int) -> None:
    ks = [derive_parameters(n, ThreatModel(0.05, d)).k for d in (0.0, 0.02, 0.05, 0.1, 0.15)]
    assert ks == sorted(ks)
    assert ks[-1] > ks[0]


@pytest.mark.parametrize("n", [300, 2000, 20000])
def test_more_corruption_never_needs_a_smaller_graph(n: int) -> None:
    ks = [derive_parameters(n, ThreatModel(g, 0.05)).k for g in (0.0, 0.02, 0.05, 0.1, 0.15)]
    assert ks == sorted(ks)
    assert ks[-1] > ks[0]


def test_more_dropout_leaves_more_spare_shares() -> None:
    """The dropout margin k - t grows with the dropout rate (at n = 2000, gamma = 0.05)."""
    margins = [
        (p.k - p.t) / p.k
        for p in (derive_parameters(2000, ThreatModel(0.05, d)) for d in (0.01, 0.05, 0.1, 0.15))
    ]
    assert margins == sorted(margins)


def test_small_n_falls_back_to_the_complete_graph() -> None:
    p = derive_parameters(12, ThreatModel(0.0, 0.01, correctness_bits=10))
    assert p.complete_graph
    assert p.k == 11
    assert p.t == 6  # a strict majority of the 11 others; X = 0 corrupt


def test_impossible_threat_models_are_refused_naming_both_fractions() -> None:
    for g, d in [(0.25, 0.25), (0.3, 0.25), (0.0, 0.5), (0.34, 0.0)]:
        with pytest.raises(ConfigurationError, match=r"corrupt_fraction=.*dropout_rate="):
            ThreatModel(corrupt_fraction=g, dropout_rate=d)


def test_unreachable_targets_are_refused_naming_n() -> None:
    with pytest.raises(ConfigurationError, match=r"n=10: even the complete graph fails"):
        derive_parameters(10, ThreatModel(0.1, 0.1))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("corrupt_fraction", -0.1),
        ("dropout_rate", 1.0),
        ("security_bits", 0),
        ("correctness_bits", 1.5),
    ],
)
def test_threat_model_fields_are_validated(field: str, value: object) -> None:
    kwargs: dict[str, object] = {"corrupt_fraction": 0.0, "dropout_rate": 0.0, field: value}
    with pytest.raises(ConfigurationError, match=rf"ThreatModel\.{field} must be"):
        ThreatModel(**kwargs)  # type: ignore[arg-type]


def test_threat_model_accepts_ints() -> None:
    assert ThreatModel(corrupt_fraction=0, dropout_rate=0).corrupt_fraction == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 10, "k": 5, "t": 3}, r"k must be n - 1 = 9 \(complete graph\) or an even int"),
        ({"n": 10, "k": 10, "t": 6}, r"SecAggParams\.k must be an int in \[1, 9\]"),
        ({"n": 10, "k": 4, "t": 5}, r"SecAggParams\.t must be an int in \[3, 4\]"),
        ({"n": 10, "k": 4, "t": 3, "modulus_bits": 16}, r"modulus_bits must be 32 or 64"),
        ({"n": 10, "k": 4, "t": 3, "rounding": "up"}, r"rounding must be one of"),
        ({"n": 10, "k": 4, "t": 3, "clip": 0}, r"clip must be a finite float > 0"),
        (
            {"n": 5000, "k": 4, "t": 3, "fixed_point_bits": 20},
            r"n=5000 encodings with clip=1.0 and fixed_point_bits=20 .* modulus_bits=32",
        ),
    ],
)
def test_params_refusals_name_the_field(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        SecAggParams(**kwargs)  # type: ignore[arg-type]


def test_derive_picks_the_most_fixed_point_bits_that_fit() -> None:
    threat = ThreatModel(0.0, 0.05)
    p = derive_parameters(1000, threat, clip=4.0)
    assert p.fixed_point_bits == 19  # 1000 * 4 * 2^19 < 2^31 <= 1000 * 4 * 2^20
    assert derive_parameters(1000, threat, modulus_bits=64).fixed_point_bits == 24
    with pytest.raises(ConfigurationError, match=r"n=3000 encodings with clip=1000000.0"):
        derive_parameters(3000, threat, clip=1e6)
