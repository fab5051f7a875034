"""velocity.attacks: AttackSpec validation and AttackPlan's resolution of adversaries."""

from __future__ import annotations

import pytest

from velocity.attacks import (
    Assignment,
    AttackPlan,
    AttackSpec,
    Empire,
    GaussianNoise,
    LabelFlipping,
    Little,
    ModelPoisoning,
    SybilNodes,
)
from velocity.errors import ConfigurationError

ATTACK = ModelPoisoning(boost=2.0)


def index_of(client_id: str) -> int:
    return int(client_id.split("-")[1])


def plan(*specs: AttackSpec, seed: int = 0, num_clients: int = 50) -> AttackPlan:
    return AttackPlan(num_clients=num_clients, seed=seed, index_of=index_of, specs=list(specs))


# ---------------------------------------------------------------------------------- AttackSpec
def test_spec_needs_exactly_one_of_fraction_and_clients() -> None:
    with pytest.raises(ConfigurationError, match="exactly one of fraction") as info:
        AttackSpec(ATTACK)
    assert "model_poisoning" in str(info.value)
    with pytest.raises(ConfigurationError, match="exactly one of fraction"):
        AttackSpec(ATTACK, fraction=0.2, clients=(1, 2))
    AttackSpec(ATTACK, fraction=0.2)
    AttackSpec(ATTACK, clients=(1, "client-2"))


def test_sybil_spec_takes_neither() -> None:
    spec = AttackSpec(SybilNodes(count=3))
    assert spec.fraction is None
    assert spec.clients is None
    for kwargs in ({"fraction": 0.1}, {"clients": (1,)}):
        with pytest.raises(ConfigurationError, match="sybil_nodes") as info:
            AttackSpec(SybilNodes(), **kwargs)
        assert "fraction and clients do not apply" in str(info.value)


@pytest.mark.parametrize("fraction", [0, 0.0, -0.1, 1.0001, 2, True, False, float("nan")])
def test_spec_fraction_range(fraction: object) -> None:
    with pytest.raises(ConfigurationError, match=r"fraction must be in \(0, 1\]"):
        AttackSpec(ATTACK, fraction=fraction)  # type: ignore[arg-type]


@pytest.mark.parametrize("fraction", [1e-9, 0.5, 1, 1.0])
def test_spec_fraction_accepted(fraction: float) -> None:
    assert AttackSpec(ATTACK, fraction=fraction).fraction == fraction


@pytest.mark.parametrize("fraction", ["0.5", [0.5]])
def test_spec_fraction_must_be_a_number(fraction: object) -> None:
    with pytest.raises(ConfigurationError, match="fraction"):
        AttackSpec(ATTACK, fraction=fraction)  # type: ignore[arg-type]


def test_spec_field_errors_name_the_attack_field_and_accepted_values() -> None:
    with pytest.raises(ConfigurationError) as info:
        AttackSpec(ATTACK, fraction=2)
    assert str(info.value) == "attack model_poisoning.fraction must be in (0, 1]; got 2"
    with pytest.raises(ConfigurationError) as info:
        AttackSpec(ATTACK, clients="client-1")  # type: ignore[arg-type]
    assert str(info.value) == (
        "attack model_poisoning.clients must be a list of client ids or indices; got 'client-1'"
    )
    with pytest.raises(ConfigurationError) as info:
        AttackSpec(ATTACK, fraction=0.1, start_round=3, end_round=2)
    assert str(info.value) == (
        "attack model_poisoning.end_round must be None or an int >= start_round (3); got 2"
    )


def test_spec_fraction_is_stored_as_a_float() -> None:
    spec = AttackSpec(ATTACK, fraction=1)
    assert isinstance(spec.fraction, float)
    assert spec == AttackSpec(ATTACK, fraction=1.0)
    assert hash(spec) == hash(AttackSpec(ATTACK, fraction=1.0))


def test_spec_clients_must_not_be_empty() -> None:
    with pytest.raises(ConfigurationError, match="clients must not be empty"):
        AttackSpec(ATTACK, clients=())


@pytest.mark.parametrize("start", [0, -1, True, 1.0, "1", None])
def test_spec_start_round(start: object) -> None:
    with pytest.raises(ConfigurationError, match="start_round must be an int >= 1"):
        AttackSpec(ATTACK, fraction=0.1, start_round=start)  # type: ignore[arg-type]


@pytest.mark.parametrize(("start", "end"), [(3, 2), (1, 0), (2, True), (1, 2.0), (1, "3")])
def test_spec_end_round(start: int, end: object) -> None:
    with pytest.raises(ConfigurationError, match="end_round must be None or an int >= start_round"):
        AttackSpec(ATTACK, fraction=0.1, start_round=start, end_round=end)  # type: ignore[arg-type]


def test_spec_attack_must_be_an_attack() -> None:
    with pytest.raises(ConfigurationError, match="must be an Attack"):
        AttackSpec("model_poisoning", fraction=0.1)  # type: ignore[arg-type]


def test_spec_active_rounds() -> None:
    spec = AttackSpec(ATTACK, fraction=0.1, start_round=3, end_round=5)
    assert [r for r in range(1, 9) if spec.active(r)] == [3, 4, 5]
    open_ended = AttackSpec(ATTACK, fraction=0.1, start_round=2)
    assert not open_ended.active(1)
    assert open_ended.active(2)
    assert open_ended.active(10**6)
    assert AttackSpec(ATTACK, fraction=0.1, start_round=4, end_round=4).active(4)


@pytest.mark.parametrize(
    "spec",
    [
        AttackSpec(Little(f=2), fraction=0.2, start_round=2, end_round=5, per_round=True),
        AttackSpec(ModelPoisoning(boost=3.0), clients=(1, "client-7")),
        AttackSpec(SybilNodes(count=4, scale=2.0), start_round=3),
        AttackSpec(LabelFlipping(rate=0.5), fraction=1.0),
    ],
)
def test_spec_dict_round_trip(spec: AttackSpec) -> None:
    d = spec.to_dict()
    assert AttackSpec.from_dict(d) == spec
    assert AttackSpec.from_dict(d).to_dict() == d


def test_spec_from_dict() -> None:
    d = {
        "type": "little",
        "f": 2,
        "N": None,
        "z": None,
        "fraction": 0.2,
        "clients": None,
        "start_round": 2,
        "end_round": 5,
        "per_round": True,
    }
    spec = AttackSpec.from_dict(d)
    assert spec == AttackSpec(Little(f=2), fraction=0.2, start_round=2, end_round=5, per_round=True)
    assert spec.to_dict() == d
    short = AttackSpec.from_dict({"type": "EmpireAttack", "clients": ["client-3", 4]})
    assert short == AttackSpec(Empire(), clients=("client-3", 4))
    assert short.start_round == 1
    assert short.end_round is None
    assert short.per_round is False
    with pytest.raises(ConfigurationError, match="has no parameter 'fractoin'"):
        AttackSpec.from_dict({"type": "empire", "fractoin": 0.2})
    with pytest.raises(ConfigurationError, match="exactly one"):
        AttackSpec.from_dict({"type": "empire"})


# ---------------------------------------------------------------------------------- AttackPlan
def fixed(p: AttackPlan, index: int = 0) -> set[int]:
    return set(p.adversaries()[index])


def test_fraction_gives_fixed_adversaries() -> None:
    p = plan(AttackSpec(ATTACK, fraction=0.2))
    chosen = fixed(p)
    assert len(chosen) == 10
    assert chosen <= set(range(50))
    assert p.adversaries()[0] == tuple(sorted(chosen))
    assert fixed(plan(AttackSpec(ATTACK, fraction=0.2))) == chosen
    others = [fixed(plan(AttackSpec(ATTACK, fraction=0.2), seed=s)) for s in (1, 2, 3)]
    assert all(o != chosen for o in others)


@pytest.mark.parametrize(("fraction", "k"), [(0.02, 1), (0.03, 2), (0.5, 25), (1.0, 50)])
def test_fraction_count_is_round_fraction_n(fraction: float, k: int) -> None:
    assert len(fixed(plan(AttackSpec(ATTACK, fraction=fraction)))) == k


def test_fraction_below_one_client_is_refused() -> None:
    # NOTE: the AttackSpec docstring says "(round(fraction × num_clients), at least one)"
    # for fixed adversaries; the plan refuses instead of rounding up to one.
    with pytest.raises(ConfigurationError, match="less than one client"):
        plan(AttackSpec(ATTACK, fraction=0.009))


def test_two_fraction_specs_are_disjoint() -> None:
    p = plan(AttackSpec(ATTACK, fraction=0.2), AttackSpec(GaussianNoise(), fraction=0.3))
    a, b = fixed(p, 0), fixed(p, 1)
    assert len(a) == 10
    assert len(b) == 15
    assert not a & b
    q = plan(AttackSpec(ATTACK, fraction=0.5), AttackSpec(GaussianNoise(), fraction=0.5))
    assert fixed(q, 0) | fixed(q, 1) == set(range(50))


def test_fractions_exceeding_population_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="needs 30 adversarial clients but only 20"):
        plan(AttackSpec(ATTACK, fraction=0.6), AttackSpec(GaussianNoise(), fraction=0.6))


def test_explicit_clients_and_string_ids() -> None:
    p = plan(AttackSpec(ATTACK, clients=("client-3", 7, "client-12", 3)))
    assert p.adversaries() == {0: (3, 7, 12)}


def test_overlapping_explicit_clients_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"both claim clients \[2\]") as info:
        plan(AttackSpec(ATTACK, clients=(1, 2)), AttackSpec(Empire(), clients=("client-2", 5)))
    assert "model_poisoning" in str(info.value)
    assert "empire" in str(info.value)


def test_explicit_clients_added_later_overlapping_a_drawn_set_are_refused() -> None:
    p = plan(AttackSpec(ATTACK, fraction=0.2))
    victim = min(fixed(p))
    with pytest.raises(ConfigurationError, match=rf"both claim clients \[{victim}\]"):
        p.add(AttackSpec(Empire(), clients=(victim,)))
    with pytest.raises(ConfigurationError, match=r"both claim clients \[3\]"):
        plan(AttackSpec(ATTACK, clients=(3, 4)), AttackSpec(Empire(), clients=(3,)))


def test_fraction_avoids_explicit_clients() -> None:
    p = plan(AttackSpec(Empire(), clients=tuple(range(40))), AttackSpec(ATTACK, fraction=0.2))
    assert fixed(p, 1) == set(range(40, 50))


@pytest.mark.parametrize("client", [50, -1, "client-50", "client-99", 10**9])
def test_out_of_range_client_index(client: int | str) -> None:
    with pytest.raises(ConfigurationError, match=r"outside \[0, 49\]"):
        plan(AttackSpec(ATTACK, clients=(client,)))


@pytest.mark.parametrize("client", ["nobody", "client-x", "client"])
def test_unknown_client_id(client: str) -> None:
    with pytest.raises(ConfigurationError, match="unknown client id") as info:
        plan(AttackSpec(ATTACK, clients=(client,)))
    assert repr(client) in str(info.value)


@pytest.mark.parametrize("client", [True, 1.0, None, (1,)])
def test_bad_client_type(client: object) -> None:
    with pytest.raises(ConfigurationError, match="model_poisoning"):
        plan(AttackSpec(ATTACK, clients=(client,)))  # type: ignore[arg-type]


def test_assign_returns_only_active_fixed_adversaries() -> None:
    p = plan(AttackSpec(ATTACK, fraction=0.2))
    adversaries = fixed(p)
    active = list(range(0, 50, 2))
    (assignment,) = p.assign(1, active)
    assert isinstance(assignment, Assignment)
    assert assignment.index == 0
    assert assignment.extra == 0
    assert assignment.spec is p.specs[0]
    assert assignment.clients == tuple(c for c in active if c in adversaries)
    # participants' order is kept
    rev = active[::-1]
    (assignment,) = p.assign(1, rev)
    assert assignment.clients == tuple(c for c in rev if c in adversaries)
    # no adversary selected: no assignment
    honest = [c for c in range(50) if c not in adversaries]
    assert p.assign(1, honest) == []
    assert p.assign(1, []) == []


def test_assign_respects_start_and_end_round() -> None:
    p = plan(AttackSpec(ATTACK, clients=(1, 2), start_round=3, end_round=5))
    active = list(range(50))
    for r in range(1, 9):
        out = p.assign(r, active)
        if 3 <= r <= 5:
            assert [a.clients for a in out] == [(1, 2)]
        else:
            assert out == []


@pytest.mark.parametrize(
    ("fraction", "n_active"), [(0.1, 20), (0.1, 5), (0.5, 7), (1.0, 9), (0.25, 1), (0.3, 50)]
)
def test_per_round_fraction(fraction: float, n_active: int) -> None:
    p = plan(AttackSpec(ATTACK, fraction=fraction, per_round=True))
    assert p.adversaries() == {}
    active = list(range(3, 3 + 2 * n_active, 2))
    k = max(1, round(fraction * n_active))
    picks = []
    for r in range(1, 7):
        (assignment,) = p.assign(r, active)
        assert len(assignment.clients) == k
        assert len(set(assignment.clients)) == k
        assert set(assignment.clients) <= set(active)
        assert list(assignment.clients) == sorted(assignment.clients, key=active.index)
        assert p.assign(r, active) == [assignment]  # deterministic
        assert plan(AttackSpec(ATTACK, fraction=fraction, per_round=True)).assign(r, active) == [
            assignment
        ]
        picks.append(assignment.clients)
    if 0 < k < n_active:
        assert len(set(picks)) > 1  # drawn per round


def test_per_round_fraction_skips_fixed_adversaries() -> None:
    p = plan(
        AttackSpec(Empire(), clients=tuple(range(10))),
        AttackSpec(ATTACK, fraction=0.5, per_round=True),
    )
    active = list(range(20))
    fixed_a, per_round = p.assign(1, active)
    assert fixed_a.clients == tuple(range(10))
    assert len(per_round.clients) == 10  # round(0.5 * 20), capped by the free pool
    assert set(per_round.clients) == set(range(10, 20))
    # fixed adversaries of an inactive spec are not drafted either
    q = plan(
        AttackSpec(Empire(), clients=tuple(range(10)), start_round=5),
        AttackSpec(ATTACK, fraction=1.0, per_round=True),
    )
    (only,) = q.assign(1, active)
    assert set(only.clients) == set(range(10, 20))
    assert q.assign(1, list(range(10))) == []  # the free pool is empty


def test_sybil_assignment() -> None:
    p = plan(AttackSpec(SybilNodes(count=3)), AttackSpec(ATTACK, clients=(4,)))
    assert p.adversaries() == {1: (4,)}
    sybil, poison = p.assign(2, list(range(10)))
    assert sybil.index == 0
    assert sybil.clients == ()
    assert sybil.extra == 3
    assert poison.index == 1
    assert poison.clients == (4,)
    assert poison.extra == 0
    late = plan(AttackSpec(SybilNodes(count=2), start_round=3, end_round=3))
    assert late.assign(2, [0]) == []
    assert [a.extra for a in late.assign(3, [0])] == [2]
    assert late.assign(4, [0]) == []


def test_add_later() -> None:
    p = plan(AttackSpec(ATTACK, clients=(1,)))
    p.add(AttackSpec(Empire(), fraction=0.1))
    assert len(p.specs) == 2
    assert len(fixed(p, 1)) == 5
    assert 1 not in fixed(p, 1)
    with pytest.raises(ConfigurationError, match="both claim"):
        p.add(AttackSpec(Empire(), clients=(1,)))
    assert len(p.specs) == 2


def test_drawn_shares_avoid_clients_named_later() -> None:
    """A fraction drawn first never collides with clients another attack names explicitly."""
    index_of = lambda s: int(s.split("-")[1])  # noqa: E731
    for seed in range(20):
        plain = AttackPlan(
            num_clients=10, seed=seed, index_of=index_of, specs=[AttackSpec(Empire(), fraction=0.5)]
        )
        drawn = plain.adversaries()[0]
        named = (drawn[0],)  # a client the draw would pick
        plan = AttackPlan(
            num_clients=10,
            seed=seed,
            index_of=index_of,
            specs=[
                AttackSpec(Empire(), fraction=0.5),
                AttackSpec(Little(), clients=named),
            ],
        )
        sets = plan.adversaries()
        assert not set(sets[0]) & set(sets[1])
        assert sets[1] == named
        assert len(sets[0]) == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fraction": 0.2, "per_round": "false"}, "per_round must be true or false"),
        ({"clients": (1,), "per_round": True}, "does not go with clients"),
    ],
)
def test_per_round_is_checked(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AttackSpec(Empire(), **kwargs)  # type: ignore[arg-type]


def test_clients_list_becomes_a_tuple_and_from_dict_needs_a_mapping() -> None:
    spec = AttackSpec(Empire(), clients=[1, 2])  # type: ignore[arg-type]
    assert spec.clients == (1, 2)
    assert hash(spec)
    with pytest.raises(ConfigurationError, match="must be a mapping"):
        AttackSpec.from_dict("empire")  # type: ignore[arg-type]
