"""velocity.strategies: the frozen strategy dataclasses, Pipeline, parsing and the registry."""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import json
import math
import pickle
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import velocity.strategies as vs
from velocity import kernels as K
from velocity.errors import ConfigurationError, ValidationError
from velocity.strategies import (
    ALL_STRATEGIES,
    ARC,
    CAF,
    CGE,
    MDA,
    NNM,
    PRE_AGGREGATORS,
    SERVER_OPTIMIZERS,
    SMEA,
    Bucketing,
    Bulyan,
    CenteredClipping,
    Clip,
    DiLoCo,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedYogi,
    GeometricMedian,
    Krum,
    MeaMed,
    MoNNA,
    MultiKrum,
    Pipeline,
    QFedAvg,
    ServerSGD,
    TrimmedMean,
    describe_strategies,
    parse_strategy,
    resolve_lipschitz,
    to_dict,
)

STAGE_CLASSES: tuple[type[Any], ...] = (*ALL_STRATEGIES, *PRE_AGGREGATORS, *SERVER_OPTIMIZERS)
FEW = settings(max_examples=25, deadline=None)
ORDER = (
    "Pipeline expects zero or more pre-aggregators, then exactly one aggregator, "
    "then at most one server optimizer"
)


def sample(n: int = 11, d: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# One valid instance per class, and a hypothesis strategy of valid settings per class.

EXAMPLE: dict[type, Any] = {
    FedAvg: FedAvg(),
    FedProx: FedProx(mu=0.1),
    FedMedian: FedMedian(),
    TrimmedMean: TrimmedMean(k=2),
    Krum: Krum(f=2),
    MultiKrum: MultiKrum(f=2, m=3),
    MeaMed: MeaMed(f=2),
    GeometricMedian: GeometricMedian(),
    Bulyan: Bulyan(f=2),
    MDA: MDA(f=2),
    MoNNA: MoNNA(f=2, reference_index=3),
    SMEA: SMEA(f=2),
    CenteredClipping: CenteredClipping(c_tau=1.0),
    CGE: CGE(f=2),
    CAF: CAF(f=2),
    QFedAvg: QFedAvg(q=2.0, lipschitz=10.0),
    Bucketing: Bucketing(bucket_size=2),
    Clip: Clip(),
    ARC: ARC(f=2),
    NNM: NNM(f=2),
    ServerSGD: ServerSGD(),
    FedAvgM: FedAvgM(),
    FedAdagrad: FedAdagrad(),
    FedAdam: FedAdam(),
    FedYogi: FedYogi(),
    DiLoCo: DiLoCo(),
}

counts = st.integers(min_value=0, max_value=10**6)
positive_counts = st.integers(min_value=1, max_value=10**6)
# ints are accepted where floats are expected (YAML writes 1 for 1.0)
nonnegative = st.floats(min_value=0, max_value=1e6) | st.integers(min_value=0, max_value=10**6)
positive = st.floats(min_value=1e-9, max_value=1e6) | st.integers(min_value=1, max_value=10**6)
decay = st.floats(min_value=0, max_value=1, exclude_max=True) | st.just(0)
neighbors = st.sampled_from(["n-f-2", "n-f-1"])
inits = st.sampled_from(["mean", "median", "zero"])

VALID: dict[type, st.SearchStrategy[Any]] = {
    FedAvg: st.builds(FedAvg, nonfinite=st.sampled_from(["drop", "propagate", "raise"])),
    FedProx: st.builds(FedProx, mu=nonnegative),
    FedMedian: st.builds(FedMedian),
    TrimmedMean: st.builds(TrimmedMean, k=counts),
    Krum: st.builds(Krum, f=counts, neighbors=neighbors),
    MultiKrum: st.builds(MultiKrum, f=counts, m=st.none() | positive_counts, neighbors=neighbors),
    MeaMed: st.builds(MeaMed, f=counts),
    GeometricMedian: st.builds(
        GeometricMedian, tol=nonnegative, max_iter=positive_counts, eps=positive, init=inits
    ),
    Bulyan: st.builds(Bulyan, f=counts, neighbors=neighbors),
    MDA: st.builds(MDA, f=counts, max_subsets=positive_counts),
    MoNNA: st.builds(MoNNA, f=counts, reference_index=counts),
    SMEA: st.builds(SMEA, f=counts, max_subsets=positive_counts),
    CenteredClipping: st.builds(
        CenteredClipping, c_tau=nonnegative, M=positive_counts, eps=positive, init=inits
    ),
    CGE: st.builds(CGE, f=counts),
    CAF: st.builds(CAF, f=counts),
    QFedAvg: st.builds(QFedAvg, q=nonnegative, lipschitz=st.none() | positive),
    Bucketing: st.builds(Bucketing, bucket_size=positive_counts),
    Clip: st.builds(Clip, threshold=nonnegative),
    ARC: st.builds(ARC, f=counts),
    NNM: st.builds(NNM, f=counts),
    ServerSGD: st.builds(ServerSGD, lr=positive),
    FedAvgM: st.builds(FedAvgM, lr=positive, momentum=decay),
    FedAdagrad: st.builds(FedAdagrad, lr=positive, tau=positive),
    FedAdam: st.builds(FedAdam, lr=positive, beta1=decay, beta2=decay, tau=positive),
    FedYogi: st.builds(FedYogi, lr=positive, beta1=decay, beta2=decay, tau=positive),
    DiLoCo: st.builds(DiLoCo, lr=positive, momentum=decay, nesterov=st.booleans()),
}

aggregators = st.one_of([VALID[cls] for cls in ALL_STRATEGIES])
pre_aggregators = st.one_of([VALID[cls] for cls in PRE_AGGREGATORS])
server_optimizers = st.one_of([VALID[cls] for cls in SERVER_OPTIMIZERS])


def _pipeline(pre: list[Any], agg: Any, opt: list[Any]) -> Pipeline:
    """A valid Pipeline: a rule that weighs rows by loss takes no row-mixing stage before it."""
    allowed = [p for p in pre if not (agg.needs_losses and p._mixes)]
    return Pipeline(*allowed, agg, *opt)


pipelines = st.builds(
    _pipeline,
    st.lists(pre_aggregators, max_size=3),
    aggregators,
    st.lists(server_optimizers, max_size=1),
)


def test_every_registered_class_has_an_example_and_a_generator() -> None:
    assert set(EXAMPLE) == set(STAGE_CLASSES)
    assert set(VALID) == set(STAGE_CLASSES)
    assert len(STAGE_CLASSES) == len(set(STAGE_CLASSES))


# ---------------------------------------------------------------------------------------------
# The seed's API, verbatim.


def test_seed_examples() -> None:
    assert parse_strategy("FedAvg") == FedAvg()
    assert parse_strategy("FedProx") == FedProx()
    assert parse_strategy({"type": "Krum", "f": 2}) == Krum(f=2)
    assert parse_strategy({"type": "MultiKrum", "f": 1}) == MultiKrum(f=1, m=None)


def test_seed_classes_come_first_in_seed_order_with_seed_fields() -> None:
    seed = (FedAvg, FedProx, FedMedian, TrimmedMean, Krum, MultiKrum)
    assert ALL_STRATEGIES[:6] == seed
    assert FedProx().mu == 0.01
    assert TrimmedMean(3).k == 3
    assert Krum(2).f == 2
    assert MultiKrum(1) == MultiKrum(f=1, m=None)
    assert MultiKrum(1, 4).m == 4


def test_registries_hold_the_right_kinds() -> None:
    assert {cls.kind for cls in ALL_STRATEGIES} == {"aggregator"}
    assert {cls.kind for cls in PRE_AGGREGATORS} == {"pre-aggregator"}
    assert {cls.kind for cls in SERVER_OPTIMIZERS} == {"server-optimizer"}
    assert len(ALL_STRATEGIES) == 16


def test_strategy_alias_is_the_union_of_aggregators_and_pipeline() -> None:
    assert set(vs.Strategy.__args__) == {*ALL_STRATEGIES, Pipeline}
    assert isinstance(Krum(f=1), vs.Strategy)
    assert isinstance(Pipeline(Krum(f=1)), vs.Strategy)
    assert not isinstance(Clip(), vs.Strategy)


def test_exported_members() -> None:
    public = {name for name in dir(vs) if not name.startswith("_")}
    assert sorted(vs.__all__) == sorted(public)


# ---------------------------------------------------------------------------------------------
# Frozen, hashable, compared by value.


@pytest.mark.parametrize("cls", STAGE_CLASSES, ids=lambda c: c.__name__)
def test_frozen_hashable_value_equal(cls: type) -> None:
    one = EXAMPLE[cls]
    two = cls(**{f.name: getattr(one, f.name) for f in dataclasses.fields(one)})
    assert one == two
    assert one is not two
    assert hash(one) == hash(two)
    assert len({one, two}) == 1
    assert pickle.loads(pickle.dumps(one)) == one
    for field in dataclasses.fields(one):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(one, field.name, getattr(one, field.name))
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.new_attribute = 1


def test_value_equality_distinguishes_class_and_settings() -> None:
    assert Krum(f=1) != Krum(f=2)
    assert Krum(f=1) != Krum(f=1, neighbors="n-f-1")
    krum: object = Krum(f=1)  # typed as object: comparing across classes is the point
    assert krum != MeaMed(f=1)
    assert krum != CGE(f=1)
    assert krum != Pipeline(Krum(f=1))
    fedavg: object = FedAvg()
    assert fedavg != FedProx(mu=0.0)


def test_pipeline_frozen_hashable_value_equal() -> None:
    one = Pipeline(Clip(1.0), NNM(f=1), Krum(f=1), FedAdam())
    two = Pipeline(Clip(threshold=1), NNM(1), Krum(1), FedAdam())
    assert one == two
    assert hash(one) == hash(two)
    assert one != Pipeline(NNM(f=1), Clip(1.0), Krum(f=1), FedAdam())
    assert pickle.loads(pickle.dumps(one)) == one
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.stages = ()  # type: ignore[misc]
    assert repr(one) == (
        "Pipeline(Clip(threshold=1.0), NNM(f=1), Krum(f=1, neighbors='n-f-2'), "
        "FedAdam(lr=0.1, beta1=0.9, beta2=0.99, tau=0.001))"
    )


def test_int_is_accepted_and_stored_as_float() -> None:
    prox = FedProx(mu=1)
    assert type(prox.mu) is float
    assert prox == FedProx(mu=1.0)
    assert hash(prox) == hash(FedProx(mu=1.0))
    adam = FedAdam(lr=1, beta1=0, beta2=0, tau=1)
    assert all(type(getattr(adam, name)) is float for name in ("lr", "beta1", "beta2", "tau"))
    assert type(CenteredClipping(c_tau=3).c_tau) is float


# ---------------------------------------------------------------------------------------------
# Validation: every field rejects something, with one message shape naming field and values.

BAD: list[tuple[type, str, Any, str]] = [
    (FedAvg, "nonfinite", "ignore", "one of 'drop', 'propagate', 'raise'"),
    (FedProx, "mu", -0.1, "a finite float >= 0"),
    (FedProx, "mu", math.nan, "a finite float >= 0"),
    (FedProx, "mu", math.inf, "a finite float >= 0"),
    (FedProx, "mu", True, "a finite float >= 0"),
    (FedProx, "mu", "0.1", "a finite float >= 0"),
    (TrimmedMean, "k", -1, "an int >= 0"),
    (TrimmedMean, "k", 1.0, "an int >= 0"),
    (Krum, "f", -1, "an int >= 0"),
    (Krum, "f", True, "an int >= 0"),
    (Krum, "f", 2.0, "an int >= 0"),
    (Krum, "f", "2", "an int >= 0"),
    (Krum, "neighbors", "n-f", "one of 'n-f-2', 'n-f-1'"),
    (MultiKrum, "f", None, "an int >= 0"),
    (MultiKrum, "m", 0, "None or an int >= 1"),
    (MultiKrum, "m", 1.5, "None or an int >= 1"),
    (MultiKrum, "neighbors", "N-F-2", "one of 'n-f-2', 'n-f-1'"),
    (MeaMed, "f", -3, "an int >= 0"),
    (GeometricMedian, "tol", -1e-6, "a finite float >= 0"),
    (GeometricMedian, "max_iter", 0, "an int >= 1"),
    (GeometricMedian, "eps", 0.0, "a finite float > 0"),
    (GeometricMedian, "init", "foo", "one of 'mean', 'median', 'zero'"),
    (Bulyan, "f", False, "an int >= 0"),
    (Bulyan, "neighbors", 2, "one of 'n-f-2', 'n-f-1'"),
    (MDA, "f", -1, "an int >= 0"),
    (MDA, "max_subsets", 0, "an int >= 1"),
    (MoNNA, "f", -1, "an int >= 0"),
    (MoNNA, "reference_index", -1, "an int >= 0"),
    (SMEA, "f", -1, "an int >= 0"),
    (SMEA, "max_subsets", 1e6, "an int >= 1"),
    (CenteredClipping, "c_tau", -1.0, "a finite float >= 0"),
    (CenteredClipping, "M", 0, "an int >= 1"),
    (CenteredClipping, "eps", -1.0, "a finite float > 0"),
    (CenteredClipping, "init", "last", "one of 'mean', 'median', 'zero'"),
    (CGE, "f", -1, "an int >= 0"),
    (CAF, "f", 1.5, "an int >= 0"),
    (QFedAvg, "q", -0.5, "a finite float >= 0"),
    (QFedAvg, "q", math.inf, "a finite float >= 0"),
    (QFedAvg, "lipschitz", 0.0, "None or a finite float > 0"),
    (QFedAvg, "lipschitz", "1", "None or a finite float > 0"),
    (Bucketing, "bucket_size", 0, "an int >= 1"),
    (Clip, "threshold", -2.0, "a finite float >= 0"),
    (ARC, "f", -1, "an int >= 0"),
    (NNM, "f", -1, "an int >= 0"),
    (ServerSGD, "lr", 0, "a finite float > 0"),
    (FedAvgM, "lr", -1.0, "a finite float > 0"),
    (FedAvgM, "momentum", 1.0, "a finite float in [0, 1)"),
    (FedAdagrad, "lr", math.inf, "a finite float > 0"),
    (FedAdagrad, "tau", 0.0, "a finite float > 0"),
    (FedAdam, "lr", None, "a finite float > 0"),
    (FedAdam, "beta1", 1, "a finite float in [0, 1)"),
    (FedAdam, "beta2", -0.5, "a finite float in [0, 1)"),
    (FedAdam, "tau", -1e-3, "a finite float > 0"),
    (FedYogi, "lr", 0.0, "a finite float > 0"),
    (FedYogi, "beta1", 1.5, "a finite float in [0, 1)"),
    (FedYogi, "beta2", 1.0, "a finite float in [0, 1)"),
    (FedYogi, "tau", math.nan, "a finite float > 0"),
    (DiLoCo, "lr", 0, "a finite float > 0"),
    (DiLoCo, "momentum", 1.0, "a finite float in [0, 1)"),
    (DiLoCo, "nesterov", "yes", "true or false"),
]


@pytest.mark.parametrize(
    ("cls", "field", "value", "accepts"), BAD, ids=lambda v: getattr(v, "__name__", repr(v))
)
def test_bad_setting_is_a_configuration_error_naming_field_and_values(
    cls: type, field: str, value: Any, accepts: str
) -> None:
    settings_ = {f.name: getattr(EXAMPLE[cls], f.name) for f in dataclasses.fields(cls)}
    settings_[field] = value
    with pytest.raises(ConfigurationError) as info:
        cls(**settings_)
    assert str(info.value) == f"{cls.__name__}.{field} must be {accepts}; got {value!r}"
    assert isinstance(info.value, ValueError)


def test_every_field_has_a_rejection_case() -> None:
    covered = {(cls, field) for cls, field, _, _ in BAD}
    every = {(cls, f.name) for cls in STAGE_CLASSES for f in dataclasses.fields(cls)}
    assert every - covered == set()


def test_brief_error_messages() -> None:
    with pytest.raises(ConfigurationError, match=r"^Krum\.f must be an int >= 0; got -1$"):
        Krum(f=-1)
    with pytest.raises(
        ConfigurationError, match=r"init must be one of 'mean', 'median', 'zero'; got 'foo'$"
    ):
        CenteredClipping(c_tau=1.0, init="foo")  # type: ignore[arg-type]


@FEW
@given(value=st.integers(max_value=-1))
def test_any_negative_f_is_rejected(value: int) -> None:
    with pytest.raises(ConfigurationError, match=r"^Krum\.f must be an int >= 0"):
        Krum(f=value)


def test_data_dependent_limits_are_left_to_the_kernel() -> None:
    strategy = Krum(f=5)  # fine as a setting
    with pytest.raises(ValidationError, match="n > 2f \\+ 2"):
        strategy.aggregate(sample(n=6))


# ---------------------------------------------------------------------------------------------
# Parsing and the dict form.


@FEW
@given(strategy=aggregators | pipelines)
def test_round_trip_through_dict(strategy: Any) -> None:
    as_dict = to_dict(strategy)
    assert parse_strategy(as_dict) == strategy
    assert parse_strategy(json.loads(json.dumps(as_dict))) == strategy


@pytest.mark.parametrize("cls", STAGE_CLASSES, ids=lambda c: c.__name__)
def test_round_trip_for_every_class(cls: type) -> None:
    example = EXAMPLE[cls]
    strategy = example if cls in ALL_STRATEGIES else None
    if strategy is None:
        stages = [example, FedAvg()] if cls in PRE_AGGREGATORS else [FedAvg(), example]
        strategy = Pipeline(*stages)
    assert parse_strategy(to_dict(strategy)) == strategy
    assert to_dict(example) == {
        "type": cls.__name__,
        **{f.name: getattr(example, f.name) for f in dataclasses.fields(cls)},
    }


def test_to_dict_of_pipeline() -> None:
    assert to_dict(Pipeline(Clip(), Krum(f=2), ServerSGD(lr=0.5))) == {
        "type": "Pipeline",
        "stages": [
            {"type": "Clip", "threshold": 2.0},
            {"type": "Krum", "f": 2, "neighbors": "n-f-2"},
            {"type": "ServerSGD", "lr": 0.5},
        ],
    }


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("fedavg", FedAvg()),
        ("FEDAVG", FedAvg()),
        ("fed_avg", FedAvg()),
        ("fedprox", FedProx()),
        ("fed_median", FedMedian()),
        ("median", FedMedian()),
        ("geometric_median", GeometricMedian()),
        ({"type": "trimmed_mean", "k": 1}, TrimmedMean(k=1)),
        ({"type": "multi_krum", "f": 1, "m": 2}, MultiKrum(f=1, m=2)),
        ({"type": "Multi-Krum", "f": 1}, MultiKrum(f=1)),
        ({"type": "centered_clipping", "c_tau": 1}, CenteredClipping(c_tau=1.0)),
        ({"type": "krum", "f": 1, "neighbors": "n-f-1"}, Krum(f=1, neighbors="n-f-1")),
    ],
)
def test_names_are_case_insensitive_and_accept_snake_case(spec: Any, expected: Any) -> None:
    assert parse_strategy(spec) == expected


@pytest.mark.parametrize("cls", STAGE_CLASSES, ids=lambda c: c.__name__)
def test_every_class_is_reachable_by_its_lower_and_snake_case_names(cls: type) -> None:
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()  # FedAvgM -> fed_avg_m
    for name in (cls.__name__.lower(), cls.__name__.upper(), snake):
        stage = {**to_dict(EXAMPLE[cls]), "type": name}
        if cls in ALL_STRATEGIES:
            assert parse_strategy(stage) == EXAMPLE[cls]
        elif cls in PRE_AGGREGATORS:
            assert parse_strategy([stage, "FedAvg"]) == Pipeline(EXAMPLE[cls], FedAvg())
        else:
            assert parse_strategy(["FedAvg", stage]) == Pipeline(FedAvg(), EXAMPLE[cls])


def test_parse_pipeline_forms() -> None:
    expected = Pipeline(Bucketing(bucket_size=2), Clip(), Krum(f=1), FedAdam(lr=0.5))
    stages = [{"type": "bucketing", "bucket_size": 2}, "clip", {"type": "Krum", "f": 1}]
    stages.append({"type": "fed_adam", "lr": 0.5})
    assert parse_strategy({"type": "Pipeline", "stages": stages}) == expected
    assert parse_strategy({"type": "pipeline", "stages": tuple(stages)}) == expected
    assert parse_strategy(stages) == expected
    assert parse_strategy([Clip(), Krum(f=1)]) == Pipeline(Clip(), Krum(f=1))


def test_parse_returns_strategy_objects_unchanged() -> None:
    krum = Krum(f=1)
    pipeline = Pipeline(Clip(), krum)
    assert parse_strategy(krum) is krum
    assert parse_strategy(pipeline) is pipeline


def test_str_for_class_with_required_parameters_names_them() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_strategy("Krum")
    assert "Krum requires parameter(s) f (an int >= 0)" in str(info.value)
    with pytest.raises(ConfigurationError, match=r"requires parameter\(s\) c_tau"):
        parse_strategy("centered_clipping")
    with pytest.raises(ConfigurationError, match=r"MultiKrum requires parameter\(s\) f "):
        parse_strategy({"type": "MultiKrum", "m": 2})
    with pytest.raises(ConfigurationError, match=r"Pipeline requires parameter stages"):
        parse_strategy("Pipeline")


def test_unknown_type_lists_every_valid_name() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_strategy({"type": "FedSomething"})
    message = str(info.value)
    assert message.startswith("unknown strategy type 'FedSomething'")
    for cls in STAGE_CLASSES:
        assert cls.__name__ in message
    assert "Pipeline" in message
    with pytest.raises(ConfigurationError, match="unknown strategy type 3"):
        parse_strategy({"type": 3})


def test_unknown_key_lists_the_valid_parameters() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_strategy({"type": "MultiKrum", "f": 1, "k": 2})
    assert str(info.value) == (
        "MultiKrum has no parameter 'k'; valid parameters of MultiKrum: f, m, neighbors"
    )
    with pytest.raises(ConfigurationError, match="valid parameters of FedMedian: \\(none\\)"):
        parse_strategy({"type": "FedMedian", "f": 1})
    with pytest.raises(ConfigurationError, match="valid parameters of Clip: threshold"):
        parse_strategy([{"type": "Clip", "tau": 1}, "FedAvg"])


def test_bad_value_in_a_dict_is_reported_by_the_constraint_table() -> None:
    with pytest.raises(ConfigurationError, match=r"^Krum\.f must be an int >= 0; got 2\.5$"):
        parse_strategy({"type": "Krum", "f": 2.5})


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"f": 2}, "a strategy dict needs a 'type' key"),
        (3, "a strategy spec must be a name"),
        (None, "a strategy spec must be a name"),
        ("Clip", "Clip is a pre-aggregator, not an aggregator"),
        ({"type": "FedAdam"}, "FedAdam is a server-optimizer, not an aggregator"),
        ({"type": "Pipeline"}, "a Pipeline dict has exactly the keys 'type' and 'stages'"),
        ({"type": "Pipeline", "stages": ["FedAvg"], "x": 1}, "exactly the keys"),
        ({"type": "Pipeline", "stages": "FedAvg"}, "Pipeline stages must be a list"),
        ([{"type": "Pipeline", "stages": ["FedAvg"]}], "cannot be a Pipeline"),
        ([Pipeline(FedAvg())], "cannot be a Pipeline"),
        (["FedAvg", "Clip"], ORDER),
        ([], ORDER),
        ([Clip()], ORDER),
    ],
)
def test_parse_errors(spec: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match.replace("(", "\\(")):
        parse_strategy(spec)


def test_to_dict_rejects_non_strategies() -> None:
    with pytest.raises(ConfigurationError, match="to_dict expects a strategy or a stage"):
        to_dict("FedAvg")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Pipeline composition.


@pytest.mark.parametrize(
    "stages",
    [
        (),
        (Clip(),),
        (FedAdam(),),
        (Krum(f=1), Clip()),
        (Krum(f=1), Krum(f=1)),
        (FedAdam(), Krum(f=1)),
        (Krum(f=1), FedAdam(), ServerSGD()),
        (Clip(), Krum(f=1), NNM(f=1)),
        (Clip(), FedAdam(), Krum(f=1)),
    ],
    ids=lambda stages: "-".join(type(s).__name__ for s in stages) or "empty",
)
def test_pipeline_order_errors_say_what_is_expected(stages: tuple[Any, ...]) -> None:
    with pytest.raises(ConfigurationError) as info:
        Pipeline(*stages)
    message = str(info.value)
    assert message.startswith(ORDER)
    for stage in stages:
        assert f"{type(stage).__name__} ({stage.kind})" in message


def test_pipeline_rejects_non_stages() -> None:
    with pytest.raises(ConfigurationError, match=r"Pipeline stage 1 is 'Krum' \(str\)"):
        Pipeline(Clip(), "Krum")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"stage 0 is Pipeline"):
        Pipeline(Pipeline(Krum(f=1)))  # type: ignore[arg-type]


def test_pipeline_parts() -> None:
    clip, nnm, krum, adam = Clip(), NNM(f=1), Krum(f=1), FedAdam()
    full = Pipeline(clip, nnm, krum, adam)
    assert full.stages == (clip, nnm, krum, adam)
    assert full.pre_aggregators == (clip, nnm)
    assert full.aggregator is krum
    assert full.server_optimizer is adam
    bare = Pipeline(krum)
    assert bare.pre_aggregators == ()
    assert bare.server_optimizer is None
    # a bare aggregator answers the same questions
    assert krum.pre_aggregators == ()
    assert krum.aggregator is krum
    assert krum.server_optimizer is None


# ---------------------------------------------------------------------------------------------
# aggregate() runs the kernels with the strategy's settings.

Kernel = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]

DIRECT: list[tuple[Any, Kernel]] = [
    (FedAvg(), lambda x, w: K.mean(x, w)),
    (FedAvg(nonfinite="propagate"), lambda x, w: K.mean(x, w, nonfinite="propagate")),
    (FedProx(mu=0.5), lambda x, w: K.mean(x, w)),
    (FedMedian(), lambda x, w: K.median(x)),
    (TrimmedMean(k=3), lambda x, w: K.trimmed_mean(x, f=3)),
    (Krum(f=2), lambda x, w: K.krum(x, f=2)),
    (Krum(f=1, neighbors="n-f-1"), lambda x, w: K.krum(x, f=1, neighbors="n-f-1")),
    (MultiKrum(f=2), lambda x, w: K.multi_krum(x, f=2)),
    (MultiKrum(f=1, m=3), lambda x, w: K.multi_krum(x, f=1, m=3)),
    (
        MultiKrum(f=2, m=4, neighbors="n-f-1"),
        lambda x, w: K.multi_krum(x, f=2, m=4, neighbors="n-f-1"),
    ),
    (MeaMed(f=3), lambda x, w: K.meamed(x, f=3)),
    (GeometricMedian(), lambda x, w: K.geometric_median(x, w)),
    (
        GeometricMedian(tol=1e-3, max_iter=3, eps=1e-6, init="zero"),
        lambda x, w: K.geometric_median(x, w, tol=1e-3, max_iter=3, eps=1e-6, init="zero"),
    ),
    (Bulyan(f=2), lambda x, w: K.bulyan(x, f=2)),
    (Bulyan(f=1, neighbors="n-f-1"), lambda x, w: K.bulyan(x, f=1, neighbors="n-f-1")),
    (MDA(f=2), lambda x, w: K.mda(x, f=2)),
    (MoNNA(f=3, reference_index=4), lambda x, w: K.monna(x, f=3, reference_index=4)),
    (SMEA(f=2), lambda x, w: K.smea(x, f=2)),
    (CenteredClipping(c_tau=0.5), lambda x, w: K.centered_clipping(x, c_tau=0.5)),
    (
        CenteredClipping(c_tau=0.3, M=2, eps=1e-6, init="median"),
        lambda x, w: K.centered_clipping(x, c_tau=0.3, M=2, eps=1e-6, init="median"),
    ),
    (CGE(f=3), lambda x, w: K.cge(x, f=3)),
    (CAF(f=2), lambda x, w: K.caf(x, f=2)),
    (QFedAvg(q=2.0, lipschitz=10.0), lambda x, w: K.qfedavg(x, LOSSES, w, q=2.0, lipschitz=10.0)),
    (QFedAvg(q=0), lambda x, w: K.qfedavg(x, LOSSES, q=0.0, lipschitz=1.0)),
]
LOSSES = torch.linspace(0.5, 3.0, 11, dtype=torch.float64)
"""Per-row losses for the rules that weigh rows by them (QFedAvg)."""
SELECTING = {Krum, MultiKrum, Bulyan, MDA, SMEA, MoNNA, CGE, CAF}
"""The rules that report the rows they left out wholesale (``excluded``); see the
AggregationResult docstring."""


def test_every_aggregator_has_a_direct_kernel_case() -> None:
    assert {type(strategy) for strategy, _ in DIRECT} == set(ALL_STRATEGIES)


@pytest.mark.parametrize(("strategy", "kernel"), DIRECT, ids=lambda v: repr(v)[:60])
def test_aggregate_equals_the_kernel(strategy: Any, kernel: Kernel) -> None:
    x = sample()
    weights = torch.arange(1.0, 12.0)
    extra = {"losses": LOSSES} if strategy.needs_losses else {}
    for w in (None, weights):
        if strategy.needs_losses and strategy.lipschitz is None:
            with pytest.raises(ConfigurationError, match="lipschitz is None"):
                strategy.aggregate(x, w, **extra)
            strategy = resolve_lipschitz(strategy, lr=1.0)
        result = strategy.aggregate(x, w, **extra)
        expected = kernel(x, w)
        assert torch.equal(result.update, expected)
        excluded = result.metrics.pop("excluded")
        assert result.metrics == {
            "rule": type(strategy).__name__,
            "n": 11,
            "n_aggregated": 11,
            "pre_aggregators": [],
            "dropped_nonfinite": [],
        }
        if type(strategy) in SELECTING:
            assert isinstance(excluded, list)
            assert excluded == sorted(set(excluded))
            assert set(excluded) <= set(range(11))
        else:
            assert excluded is None
        assert torch.equal(Pipeline(strategy).aggregate(x, w, **extra).update, expected)


@pytest.mark.parametrize(
    ("cls", "kernel", "extra"),
    [(Krum, K.krum, {}), (MultiKrum, K.multi_krum, {"m": 8}), (Bulyan, K.bulyan, {})],
    ids=["Krum", "MultiKrum", "Bulyan"],
)
def test_neighbors_setting_reaches_the_kernel(cls: Any, kernel: Any, extra: Any) -> None:
    x = sample(seed=1)  # a sample on which the two neighbourhood sizes disagree
    paper = kernel(x, f=1, **extra)
    byzfl = kernel(x, f=1, neighbors="n-f-1", **extra)
    assert not torch.equal(paper, byzfl)
    assert torch.equal(cls(f=1, **extra).aggregate(x).update, paper)
    assert torch.equal(cls(f=1, neighbors="n-f-1", **extra).aggregate(x).update, byzfl)


def test_settings_reach_the_kernel() -> None:
    # independent references, so a wrong argument mapping cannot hide behind the kernel
    x = sample(n=9, d=4)
    ordered = x.sort(dim=0).values
    assert torch.allclose(TrimmedMean(k=2).aggregate(x).update, ordered[2:7].mean(dim=0))
    assert torch.allclose(FedMedian().aggregate(x).update, ordered[4])
    w = torch.arange(1.0, 10.0)
    expected = (w[:, None] * x).sum(dim=0) / w.sum()
    assert torch.allclose(FedAvg().aggregate(x, w).update, expected)
    norms = x.norm(dim=1)
    smallest = norms.argsort()[:6]
    assert torch.allclose(CGE(f=3).aggregate(x).update, x[smallest].mean(dim=0))


def test_fedavg_reports_dropped_nonfinite_rows() -> None:
    x = sample(n=8, d=3)
    x[2, 1] = math.nan
    x[5, 0] = -math.inf
    w = torch.arange(1.0, 9.0)
    keep = torch.tensor([0, 1, 3, 4, 6, 7])
    expected = (w[keep, None] * x[keep]).sum(dim=0) / w[keep].sum()
    for strategy in (FedAvg(), FedProx(mu=0.1)):
        result = strategy.aggregate(x, w)
        assert result.metrics["dropped_nonfinite"] == [2, 5]
        assert torch.allclose(result.update, expected)
    propagated = FedAvg(nonfinite="propagate").aggregate(x, w)
    assert propagated.metrics["dropped_nonfinite"] == []
    assert not torch.isfinite(propagated.update).all()
    with pytest.raises(ValidationError):
        FedAvg(nonfinite="raise").aggregate(x, w)


def test_rules_that_skip_nonfinite_rows_report_them() -> None:
    x = sample(n=9, d=3)
    x[4, 2] = math.nan
    for strategy in (GeometricMedian(), CenteredClipping(c_tau=1.0), CAF(f=2)):
        result = strategy.aggregate(x)
        assert result.metrics["dropped_nonfinite"] == [4]
        assert torch.isfinite(result.update).all()
    assert FedMedian().aggregate(sample(n=9, d=3)).metrics["dropped_nonfinite"] == []


def test_pipeline_applies_pre_aggregators_in_order() -> None:
    x = sample(n=12, d=5) * 3
    pipeline = Pipeline(Clip(threshold=1.5), NNM(f=2), ARC(f=1), MultiKrum(f=2, m=3), FedYogi())
    rows, w = K.clip(x, threshold=1.5)
    rows, w = K.nnm(rows, w, f=2)
    rows, w = K.arc(rows, w, f=1)
    expected = K.multi_krum(rows, w, f=2, m=3)
    result = pipeline.aggregate(x)
    assert torch.equal(result.update, expected)
    assert result.metrics == {
        "rule": "MultiKrum",
        "n": 12,
        "n_aggregated": 12,
        "pre_aggregators": ["Clip", "NNM", "ARC"],
        "dropped_nonfinite": [],
        "excluded": None,  # NNM mixed the rows: a row left out is no one client
    }
    swapped = Pipeline(NNM(f=2), Clip(threshold=1.5), ARC(f=1), MultiKrum(f=2, m=3))
    assert not torch.equal(swapped.aggregate(x).update, expected)


def test_pre_aggregator_apply_equals_kernel() -> None:
    x = sample(n=10, d=4) * 2
    w = torch.arange(1.0, 11.0)
    cases = [
        (Clip(threshold=0.7), K.clip(x, w, threshold=0.7)),
        (ARC(f=2), K.arc(x, w, f=2)),
        (NNM(f=3), K.nnm(x, w, f=3)),
        (
            Bucketing(bucket_size=3),
            K.bucketing(x, w, bucket_size=3, generator=torch.Generator().manual_seed(7)),
        ),
    ]
    for stage, (rows, weights) in cases:
        got_rows, got_weights = stage.apply(x, w, generator=torch.Generator().manual_seed(7))
        assert torch.equal(got_rows, rows)
        assert got_weights is not None
        assert weights is not None
        assert torch.equal(got_weights, weights)


def test_bucketing_uses_the_callers_generator() -> None:
    x = sample(n=12, d=4)
    pipeline = Pipeline(Bucketing(bucket_size=3), FedMedian())
    first = pipeline.aggregate(x, generator=torch.Generator().manual_seed(1))
    again = pipeline.aggregate(x, generator=torch.Generator().manual_seed(1))
    buckets, _ = K.bucketing(x, bucket_size=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first.update, again.update)
    assert torch.equal(first.update, K.median(buckets))
    assert first.metrics["n"] == 12
    assert first.metrics["n_aggregated"] == 4


def test_bucketing_without_a_generator_is_an_error_naming_the_stage() -> None:
    x = sample(n=12, d=4)
    with pytest.raises(ConfigurationError) as info:
        Pipeline(Bucketing(bucket_size=3), FedMedian()).aggregate(x)
    assert "Bucketing(bucket_size=3)" in str(info.value)
    assert "generator" in str(info.value)
    with pytest.raises(ConfigurationError, match=r"Bucketing\(bucket_size=2\).*generator"):
        Bucketing(bucket_size=2).apply(x)


def test_aggregate_does_not_modify_its_input() -> None:
    x = sample(n=12, d=4)
    before = x.clone()
    Pipeline(Clip(threshold=0.1), ARC(f=2), FedAvg()).aggregate(x)
    assert torch.equal(x, before)


# ---------------------------------------------------------------------------------------------
# Server optimizers call their kernels with their settings, threading the state.

SERVER: list[tuple[Any, Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]]] = [
    (ServerSGD(lr=0.3), lambda p, d, s: K.server_sgd(p, d, s, lr=0.3)),
    (FedAvgM(lr=0.7, momentum=0.5), lambda p, d, s: K.fedavgm(p, d, s, lr=0.7, momentum=0.5)),
    (FedAdagrad(lr=0.2, tau=0.01), lambda p, d, s: K.fedadagrad(p, d, s, lr=0.2, tau=0.01)),
    (
        FedAdam(lr=0.2, beta1=0.5, beta2=0.8, tau=0.01),
        lambda p, d, s: K.fedadam(p, d, s, lr=0.2, beta1=0.5, beta2=0.8, tau=0.01),
    ),
    (
        FedYogi(lr=0.2, beta1=0.5, beta2=0.8, tau=0.01),
        lambda p, d, s: K.fedyogi(p, d, s, lr=0.2, beta1=0.5, beta2=0.8, tau=0.01),
    ),
    (
        DiLoCo(lr=0.6, momentum=0.8),
        lambda p, d, s: K.fedavgm(p, d, s, lr=0.6, momentum=0.8, nesterov=True),
    ),
]


def test_every_server_optimizer_has_a_kernel_case() -> None:
    assert {type(opt) for opt, _ in SERVER} == set(SERVER_OPTIMIZERS)


@pytest.mark.parametrize(("optimizer", "kernel"), SERVER, ids=lambda v: repr(v)[:40])
def test_server_optimizer_step_equals_the_kernel(optimizer: Any, kernel: Any) -> None:
    gen = torch.Generator().manual_seed(3)
    params = torch.randn(6, generator=gen)
    deltas = [torch.randn(6, generator=gen) for _ in range(3)]
    mine, mine_state = params, None
    ref, ref_state = params, None
    for delta in deltas:
        mine, mine_state = optimizer.step(mine, delta, mine_state)
        ref, ref_state = kernel(ref, delta, ref_state)
        assert torch.equal(mine, ref)
        assert mine_state.keys() == ref_state.keys()
        assert all(torch.equal(mine_state[k], ref_state[k]) for k in ref_state)


def test_server_sgd_step_value() -> None:
    new, _ = ServerSGD(lr=0.5).step(torch.zeros(3), torch.tensor([2.0, -2.0, 4.0]), None)
    assert new.tolist() == [1.0, -1.0, 2.0]


# ---------------------------------------------------------------------------------------------
# describe_strategies for the CLI.


def test_describe_strategies() -> None:
    described = describe_strategies()
    assert [d["name"] for d in described] == [cls.__name__ for cls in STAGE_CLASSES]
    assert json.loads(json.dumps(described)) == described
    for entry, cls in zip(described, STAGE_CLASSES, strict=True):
        assert entry["kind"] == cls.kind
        assert entry["summary"]
        assert "\n" not in entry["summary"]
        fields = dataclasses.fields(cls)
        assert [p["name"] for p in entry["parameters"]] == [f.name for f in fields]
        for param, field in zip(entry["parameters"], fields, strict=True):
            required = field.default is dataclasses.MISSING
            assert param["required"] is required
            assert param["default"] == (None if required else field.default)
            assert param["accepts"]
    krum = described[[cls.__name__ for cls in STAGE_CLASSES].index("Krum")]
    assert krum["parameters"] == [
        {"name": "f", "required": True, "default": None, "accepts": "an int >= 0"},
        {
            "name": "neighbors",
            "required": False,
            "default": "n-f-2",
            "accepts": "one of 'n-f-2', 'n-f-1'",
        },
    ]


@pytest.mark.parametrize("cls", STAGE_CLASSES, ids=lambda c: c.__name__)
def test_docstrings_name_the_kernel(cls: type) -> None:
    kernel = {
        "FedAvg": "mean",
        "FedProx": "mean",
        "FedMedian": "median",
        "TrimmedMean": "trimmed_mean",
        "MultiKrum": "multi_krum",
        "GeometricMedian": "geometric_median",
        "CenteredClipping": "centered_clipping",
        "ServerSGD": "server_sgd",
        "DiLoCo": "fedavgm",
    }.get(cls.__name__, cls.__name__.lower())
    assert f"velocity.kernels.{kernel}`" in (cls.__doc__ or "")
    assert hasattr(K, kernel)


# ---------------------------------------------------------------------------------------------
# The examples in the docstrings run.

MODULES = [
    "velocity.strategies",
    "velocity.strategies._fair",
    "velocity.strategies._parse",
    "velocity.strategies._pipeline",
    "velocity.strategies._registry",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
