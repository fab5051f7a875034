"""HashVerifier against hashlib, CreditTracker, GradientAverager (mean, empty keys, refusals)."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from velocity.fedtrain import CreditTracker, GradientAverager, HashVerifier, LocalUpdate

SEED_GRADIENTS = {"weight": [0.1, -0.2, 0.05, 0.03], "bias": [0.01]}


def update(node: str, gradients: dict[str, list[float]], **kw: object) -> LocalUpdate:
    data: dict[str, object] = {"loss": 0.0, "samples_used": 1, "round_id": 1, **kw}
    return LocalUpdate.model_validate({"node_id": node, "gradients": gradients, **data})


def sha256_of(gradients: object) -> str:
    return hashlib.sha256(json.dumps(gradients, sort_keys=True).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------- HashVerifier


def test_compute_hash_is_sha256_of_sorted_json() -> None:
    digest = HashVerifier().compute_hash(SEED_GRADIENTS)
    assert digest == sha256_of(SEED_GRADIENTS)
    # the text hashed, spelled out: sorted keys, json's default separators, float reprs
    text = '{"bias": [0.01], "weight": [0.1, -0.2, 0.05, 0.03]}'
    assert digest == hashlib.sha256(text.encode()).hexdigest()


def test_compute_hash_of_the_seed_update() -> None:
    seed = update("node-000", SEED_GRADIENTS, loss=0.852341, samples_used=128)
    assert HashVerifier().compute_hash(seed.gradients) == sha256_of(SEED_GRADIENTS)
    assert HashVerifier().compute_hash(seed.gradients) == (
        "5d12bb7d2c22dabffd4c3a168cd8f5c1dd4c34cdfd062a4aa6041134edfeab71"
    )


def test_compute_hash_is_a_static_method() -> None:
    assert HashVerifier.compute_hash({"w": [1.0]}) == sha256_of({"w": [1.0]})


def test_hash_ignores_key_order_but_not_float_repr() -> None:
    verifier = HashVerifier()
    a = verifier.compute_hash({"a": [1.0], "b": [2.0]})
    assert a == verifier.compute_hash({"b": [2.0], "a": [1.0]})
    assert verifier.compute_hash({"w": [0.1]}) != verifier.compute_hash({"w": [0.1 + 1e-17 * 2]})
    assert verifier.compute_hash({"w": [0.1]}) != verifier.compute_hash(
        {"w": [0.10000000000000002]}
    )


def test_random_gradients_hash_like_hashlib() -> None:
    rng = random.Random(7)
    for _ in range(20):
        gradients = {
            f"k{i}": [rng.uniform(-1, 1) for _ in range(rng.randint(0, 5))]
            for i in range(rng.randint(0, 4))
        }
        assert HashVerifier().compute_hash(gradients) == sha256_of(gradients)


def test_verify_matches_and_refuses() -> None:
    verifier = HashVerifier()
    u = update("n", SEED_GRADIENTS)
    digest = verifier.compute_hash(u.gradients)
    assert verifier.verify(u, digest) is True
    assert verifier.verify(u, digest.upper()) is True
    assert verifier.verify(u, digest[:-1] + ("0" if digest[-1] != "0" else "1")) is False
    assert verifier.verify(u, "") is False
    assert verifier.verify(u, "é" * 64) is False
    assert verifier.verify(u, None) is False  # type: ignore[arg-type]
    tampered = update("n", {**SEED_GRADIENTS, "bias": [0.02]})
    assert verifier.verify(tampered, digest) is False


def test_verify_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    from velocity.fedtrain import _tools

    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(_tools.hmac, "compare_digest", spy)
    u = update("n", {"w": [1.0]})
    assert HashVerifier().verify(u, sha256_of({"w": [1.0]}))
    assert calls == [(sha256_of({"w": [1.0]}), sha256_of({"w": [1.0]}))]


# ---------------------------------------------------------------------- CreditTracker


def test_credit_tracker_records_sums_and_resets() -> None:
    credits = CreditTracker()
    assert credits.all_credits() == {}
    assert credits.get_credits("x") == 0
    credits.record("b", 10)
    credits.record("a", 5)
    credits.record("b", 0)
    credits.record("b", 7)
    assert credits.all_credits() == {"b": 17, "a": 5}
    assert list(credits.all_credits()) == ["b", "a"]
    assert credits.get_credits("b") == 17
    assert credits.total() == 22
    copy = credits.all_credits()
    copy["a"] = 1000
    assert credits.get_credits("a") == 5  # a copy
    credits.reset()
    assert credits.all_credits() == {}
    assert credits.total() == 0


@pytest.mark.parametrize(
    ("node", "samples"), [("a", -1), ("a", 1.5), ("a", True), ("", 1), (None, 1)]
)
def test_credit_tracker_refuses(node: object, samples: object) -> None:
    with pytest.raises(ValueError, match=r"CreditTracker\.record"):
        CreditTracker().record(node, samples)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- GradientAverager


def test_average_is_the_elementwise_unweighted_mean() -> None:
    rng = random.Random(3)
    rows = [[rng.uniform(-1, 1) for _ in range(6)] for _ in range(5)]
    updates = [
        update(f"n{i}", {"w": row, "b": [float(i)]}, samples_used=10**i)
        for i, row in enumerate(rows)
    ]
    averaged = GradientAverager().average(updates)
    assert list(averaged) == ["w", "b"]
    for j in range(6):
        assert averaged["w"][j] == pytest.approx(sum(r[j] for r in rows) / 5, abs=1e-15)
    assert averaged["b"] == [2.0]  # unweighted: samples_used does not matter


def test_average_matches_python_float_arithmetic() -> None:
    updates = [update("a", {"w": [0.1, 0.2]}), update("b", {"w": [0.2, 0.1]})]
    assert GradientAverager().average(updates) == {"w": [(0.1 + 0.2) / 2, (0.2 + 0.1) / 2]}
    three = [update(n, {"w": [v]}) for n, v in (("a", 0.1), ("b", 0.2), ("c", 0.3))]
    assert GradientAverager().average(three) == {"w": [(0.1 + 0.2 + 0.3) / 3]}


def test_average_of_one_update_is_its_gradients() -> None:
    u = update("a", SEED_GRADIENTS)
    assert GradientAverager().average([u]) == SEED_GRADIENTS


def test_average_of_no_updates_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^Cannot average an empty list of updates\.$"):
        GradientAverager().average([])


def test_keys_whose_lists_are_all_empty_or_absent_average_to_empty() -> None:
    updates = [
        update("a", {"w": [], "v": [1.0]}),
        update("b", {"v": [3.0]}),
        update("c", {"v": [2.0], "w": []}),
    ]
    assert GradientAverager().average(updates) == {"w": [], "v": [2.0]}
    assert GradientAverager().average([update("a", {}), update("b", {})]) == {}


def test_a_node_missing_a_key_is_refused_by_name() -> None:
    updates = [update("a", {"w": [1.0], "b": [0.0]}), update("b", {"w": [1.0]})]
    with pytest.raises(ValueError, match=r"node 'b' sends no gradient 'b' \(node 'a' sends 1"):
        GradientAverager().average(updates)


def test_a_node_sending_an_empty_list_for_a_key_with_values_is_refused() -> None:
    updates = [update("a", {"w": [1.0, 2.0]}), update("b", {"w": []})]
    with pytest.raises(ValueError, match=r"node 'b' sends 0 values for 'w', node 'a' sends 2"):
        GradientAverager().average(updates)


def test_a_length_mismatch_is_refused_by_name() -> None:
    updates = [
        update("a", {"w": [1.0, 2.0]}),
        update("b", {"w": [1.0, 2.0]}),
        update("c", {"w": [1.0]}),
    ]
    with pytest.raises(ValueError, match=r"node 'c' sends 1 values for 'w', node 'a' sends 2"):
        GradientAverager().average(updates)
