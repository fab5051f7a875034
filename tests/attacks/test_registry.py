"""velocity.attacks: the catalogue by name, parse_attack / attack_to_dict, AttackResult."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from velocity.attacks import (
    ATTACKS,
    VALID_ATTACKS,
    Attack,
    AttackResult,
    Backdoor,
    Empire,
    Gaussian,
    GaussianNoise,
    Inf,
    LabelFlip,
    LabelFlipping,
    Little,
    Mimic,
    MinMax,
    MinSum,
    ModelPoisoning,
    SignFlip,
    SybilNodes,
    attack_class,
    attack_to_dict,
    describe_attacks,
    parse_attack,
)
from velocity.errors import ConfigurationError, ValidationError

NON_DEFAULT: dict[str, Attack] = {
    "model_poisoning": ModelPoisoning(boost=2.5),
    "sybil_nodes": SybilNodes(count=3, scale=-0.5),
    "gaussian_noise": GaussianNoise(sigma=0.7),
    "label_flipping": LabelFlipping(rate=0.25),
    "empire": Empire(scale=-3.0),
    "little": Little(f=2, N=10),
    "sign_flip": SignFlip(scale=-2.0),
    "gaussian": Gaussian(mu=1.0, sigma=3.0),
    "inf": Inf(),
    "mimic": Mimic(epsilon=3),
    "label_flip": LabelFlip(scale=4.0),
    "backdoor": Backdoor(
        target=7, poison_fraction=0.3, trigger_size=2, trigger_value=1.0, boost=5.0
    ),
    "min_max": MinMax(perturbation="unit_vec"),
    "min_sum": MinSum(perturbation="sign"),
}


def test_valid_attacks_are_the_velocity_four() -> None:
    assert isinstance(VALID_ATTACKS, frozenset)
    assert frozenset({"model_poisoning", "sybil_nodes", "gaussian_noise", "label_flipping"}) == (
        VALID_ATTACKS
    )
    assert set(ATTACKS) >= VALID_ATTACKS


def test_catalogue_names() -> None:
    assert set(ATTACKS) == set(NON_DEFAULT)
    assert list(ATTACKS)[:4] == [
        "model_poisoning",
        "sybil_nodes",
        "gaussian_noise",
        "label_flipping",
    ]


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_parse_attack_by_name_class_name_and_spellings(name: str) -> None:
    cls = ATTACKS[name]
    for spelling in (
        name,
        cls.__name__,
        name.upper(),
        name.replace("_", "-"),
        name.replace("_", " "),
        cls.__name__.lower(),
    ):
        attack = parse_attack(spelling)
        assert type(attack) is cls
        assert attack == cls()
        assert attack_class(spelling) is cls


@pytest.mark.parametrize(
    ("byzpy", "cls"),
    [
        ("EmpireAttack", Empire),
        ("LittleAttack", Little),
        ("SignFlipAttack", SignFlip),
        ("GaussianAttack", Gaussian),
        ("InfAttack", Inf),
        ("MimicAttack", Mimic),
        ("LabelFlipAttack", LabelFlip),
    ],
)
def test_parse_attack_byzpy_class_names(byzpy: str, cls: type) -> None:
    assert type(parse_attack(byzpy)) is cls
    assert type(parse_attack({"type": byzpy})) is cls


def test_similar_names_are_distinct() -> None:
    assert type(parse_attack("gaussian")) is Gaussian
    assert type(parse_attack("gaussian_noise")) is GaussianNoise
    assert type(parse_attack("GaussianNoise")) is GaussianNoise
    assert type(parse_attack("label_flip")) is LabelFlip
    assert type(parse_attack("label_flipping")) is LabelFlipping
    assert type(parse_attack("LabelFlipping")) is LabelFlipping
    assert type(parse_attack("MinMax")) is MinMax
    assert type(parse_attack("min-sum")) is MinSum


def test_parse_attack_dict_with_params() -> None:
    assert parse_attack({"type": "little", "f": 2}) == Little(f=2)
    assert parse_attack({"type": "ModelPoisoning", "boost": 3}) == ModelPoisoning(boost=3.0)
    assert parse_attack({"type": "EmpireAttack", "scale": -2}) == Empire(scale=-2.0)
    assert parse_attack({"type": "min_max", "perturbation": "sign"}) == MinMax(perturbation="sign")
    attack = ModelPoisoning(boost=4.0)
    assert parse_attack(attack) is attack


def test_parse_attack_dict_bad_values_raise_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"ModelPoisoning\.boost"):
        parse_attack({"type": "model_poisoning", "boost": -1})


@pytest.mark.parametrize("bad", ["nope", "", "model poisoningx", "fedavg"])
def test_unknown_name_lists_valid_attacks(bad: str) -> None:
    for spec in (bad, {"type": bad}):
        with pytest.raises(ConfigurationError) as info:
            parse_attack(spec)
        message = str(info.value)
        assert repr(bad) in message
        for name in ATTACKS:
            assert name in message


@pytest.mark.parametrize("bad", [5, None, ["little"], 1.5])
def test_non_name_specs_are_refused(bad: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_attack(bad)  # type: ignore[arg-type]
    assert "model_poisoning" in str(info.value)
    with pytest.raises(ConfigurationError, match="unknown attack"):
        attack_class(bad)


def test_dict_without_type_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="'type'") as info:
        parse_attack({"boost": 2.0})
    assert "model_poisoning" in str(info.value)


def test_unknown_parameter_lists_valid_parameters() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_attack({"type": "little", "q": 1.0})
    message = str(info.value)
    assert "'q'" in message
    assert "little" in message
    assert "f, N, z" in message
    with pytest.raises(ConfigurationError) as info:
        parse_attack({"type": "backdoor", "trigger": 3})
    message = str(info.value)
    for field in ("target", "poison_fraction", "trigger_size", "trigger_value", "boost"):
        assert field in message
    with pytest.raises(ConfigurationError, match=r"\(none\)"):
        parse_attack({"type": "inf", "scale": 1.0})


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_to_dict_round_trip(name: str) -> None:
    for attack in (ATTACKS[name](), NON_DEFAULT[name]):
        d = attack_to_dict(attack)
        assert d["type"] == name
        assert set(d) == {"type"} | {f.name for f in dataclasses.fields(attack)}
        assert json.loads(json.dumps(d)) == d
        back = parse_attack(d)
        assert back == attack
        assert type(back) is type(attack)
        assert parse_attack(json.loads(json.dumps(d))) == attack


def test_describe_attacks_has_one_entry_per_attack() -> None:
    entries = describe_attacks()
    assert [e["name"] for e in entries] == list(ATTACKS)
    for entry in entries:
        cls = ATTACKS[entry["name"]]
        assert entry["class"] == cls.__name__
        assert entry["kind"] == cls.kind
        assert entry["omniscient"] == cls.needs_honest
        assert isinstance(entry["summary"], str)
        assert entry["summary"]
        fields = dataclasses.fields(cls)
        assert [p["name"] for p in entry["parameters"]] == [f.name for f in fields]
        for p, f in zip(entry["parameters"], fields, strict=True):
            assert p["default"] == f.default
            assert isinstance(p["accepts"], str)
            assert p["accepts"]
    by_name = {e["name"]: e for e in entries}
    assert by_name["inf"]["parameters"] == []
    assert by_name["min_max"]["parameters"][0]["accepts"] == "one of 'unit_vec', 'std', 'sign'"


def test_describe_attack_strings() -> None:
    assert ModelPoisoning(boost=2.0).describe() == "model_poisoning(boost=2.0)"
    assert Inf().describe() == "inf()"


# ------------------------------------------------------------------------------ AttackResult
def full_result() -> AttackResult:
    return AttackResult(
        attack_type="backdoor",
        clients_affected=3,
        severity=0.5,
        description="3 clients poisoned",
        client_ids=("client-1", "client-4", "client-9"),
        filtered=("client-4",),
        metrics={"backdoor_success_rate": 0.25},
    )


def test_attack_result_is_frozen() -> None:
    result = full_result()
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.severity = 2.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.attack_type = "x"  # type: ignore[misc]


def test_attack_result_round_trip() -> None:
    result = full_result()
    d = result.to_dict()
    assert d == {
        "attack_type": "backdoor",
        "clients_affected": 3,
        "severity": 0.5,
        "description": "3 clients poisoned",
        "client_ids": ["client-1", "client-4", "client-9"],
        "filtered": ["client-4"],
        "metrics": {"backdoor_success_rate": 0.25},
    }
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert AttackResult.from_dict(d) == result
    assert AttackResult.from_dict(json.loads(json.dumps(d))) == result
    minimal = AttackResult("sybil_nodes", 2, 1.0, "two sybils")
    assert AttackResult.from_dict(minimal.to_dict()) == minimal


def test_attack_result_from_seed_keys_only() -> None:
    result = AttackResult.from_dict(
        {"attack_type": "sybil_nodes", "clients_affected": 3, "severity": 1.0, "description": "x"}
    )
    assert result == AttackResult("sybil_nodes", 3, 1.0, "x")
    assert result.client_ids == ()
    assert result.filtered == ()
    assert dict(result.metrics) == {}


def test_attack_result_from_dict_errors() -> None:
    base = {"attack_type": "inf", "clients_affected": 1, "severity": None, "description": "x"}
    with pytest.raises(ValidationError, match="unknown keys") as info:
        AttackResult.from_dict({**base, "extra": 1})
    assert "extra" in str(info.value)
    assert "attack_type" in str(info.value)
    for key in ("attack_type", "clients_affected", "severity", "description"):
        partial = {k: v for k, v in base.items() if k != key}
        with pytest.raises(ValidationError, match="missing keys") as info:
            AttackResult.from_dict(partial)
        assert key in str(info.value)
    with pytest.raises(ValidationError, match="mapping"):
        AttackResult.from_dict([("attack_type", "inf")])  # type: ignore[arg-type]


def test_attack_result_non_finite_becomes_none() -> None:
    result = AttackResult(
        "inf", 2, math.inf, "x", metrics={"a": math.nan, "b": -math.inf, "c": 1.0}
    )
    d = result.to_dict()
    assert d["severity"] is None
    assert d["metrics"] == {"a": None, "b": None, "c": 1.0}
    json.dumps(d, allow_nan=False)
    back = AttackResult.from_dict(d)  # None comes back as NaN
    assert math.isnan(back.severity)
    assert math.isnan(back.metrics["a"])
    assert back.metrics["c"] == 1.0
    assert AttackResult("x", 1, math.nan, "y").to_dict()["severity"] is None
