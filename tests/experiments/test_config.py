"""The experiment configuration: schema, error messages, loading, resolution, hashing."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from velocity.errors import ConfigurationError
from velocity.experiments import (
    DATASETS,
    MODEL_IDS,
    ExperimentConfig,
    InvalidConfigError,
    load_config,
    parse_config,
)
from velocity.strategies import FedProx, Krum, Pipeline

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BASE: dict[str, Any] = {"name": "t", "dataset": "mnist"}


def _with(path: str, value: object, base: dict[str, Any] | None = None) -> dict[str, Any]:
    data = copy.deepcopy(BASE if base is None else base)
    *parents, leaf = path.split(".")
    target = data
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = value
    return data


def _problems(data: object) -> tuple[str, ...]:
    with pytest.raises(InvalidConfigError) as info:
        parse_config(data)
    assert isinstance(info.value, ConfigurationError)
    return info.value.problems


# ---------------------------------------------------------------------- every bad field

BAD_VALUES: list[tuple[str, object, str]] = [
    ("name", "has space", "must be 1-128 characters"),
    ("name", "", "must be 1-128 characters"),
    ("name", "../escape", "must be 1-128 characters"),
    ("name", 5, "must be a string; got 5"),
    ("seed", -1, "must be >= 0 and < 9223372036854775808; got -1"),
    ("seed", 1.5, "must be an integer; got 1.5"),
    ("seed", True, "must be an integer; got true"),
    ("seed", "7", "must be an integer; got '7'"),
    ("dataset", "imagenet", "must be one of 'mnist', 'fashion_mnist', 'cifar10', 'shakespeare'"),
    ("data_dir", 3, "must be a string; got 3"),
    ("model_id", "resnet", "unknown model 'resnet'; known models: mnist-cnn"),
    ("model_id", "mnist_cnn", "(did you mean 'mnist-cnn'?)"),
    ("strategy", "Nope", "unknown strategy type 'Nope'"),
    ("strategy", {"type": "Krum"}, "Krum requires parameter(s) f"),
    ("strategy", {"type": "Krum", "f": -1}, "Krum.f must be an int >= 0; got -1"),
    ("strategy", {"type": "FedAvg", "bogus": 1}, "FedAvg has no parameter 'bogus'"),
    ("strategy", 5, "must be a strategy name, a mapping with a 'type' key, or a list"),
    ("training.num_rounds", 0, "must be >= 1; got 0"),
    ("training.num_rounds", 2.0, "must be an integer; got 2.0"),
    ("training.num_clients", 0, "must be >= 1; got 0"),
    ("training.client_fraction", 0, "must be > 0 and <= 1; got 0"),
    ("training.client_fraction", 1.5, "must be > 0 and <= 1; got 1.5"),
    ("training.client_fraction", "half", "must be a number; got 'half'"),
    ("training.min_clients", 0, "must be >= 1; got 0"),
    ("training.eval_every", 0, "must be >= 1; got 0"),
    ("client.batch_size", 0, "must be >= 1; got 0"),
    ("client.local_epochs", 0, "must be >= 1; got 0"),
    ("client.local_steps", 0, "must be >= 1; got 0"),
    ("client.lr", 0, "must be > 0; got 0"),
    ("client.lr", -0.1, "must be > 0; got -0.1"),
    ("client.lr", float("nan"), "must be a finite number; got .nan"),
    ("client.lr", float("inf"), "must be a finite number; got .inf"),
    ("client.lr", True, "must be a number; got true"),
    ("client.momentum", 1.0, "must be >= 0 and < 1; got 1.0"),
    ("client.momentum", -0.5, "must be >= 0 and < 1; got -0.5"),
    ("client.weight_decay", -1, "must be >= 0; got -1"),
    ("client.prox_mu", -1, "must be >= 0; got -1"),
    ("simulation.partitioning", "random", "must be one of 'iid', 'dirichlet', 'shard', 'natural'"),
    ("simulation.alpha", 0, "must be > 0; got 0"),
    ("simulation.num_shards_per_client", 0, "must be >= 1; got 0"),
    ("simulation.dropout_rate", 1.0, "must be >= 0 and < 1; got 1.0"),
    ("simulation.dropout_rate", -0.1, "must be >= 0 and < 1; got -0.1"),
    ("simulation.straggler.enabled", "yes", "must be true or false; got 'yes'"),
    ("simulation.straggler.deadline_s", 0, "must be > 0; got 0"),
    ("simulation.straggler.delay_distribution", "pareto", "must be one of 'lognormal'"),
    ("simulation.straggler.delay_mean_s", 0, "must be > 0; got 0"),
    ("simulation.straggler.delay_sigma", -1, "must be >= 0; got -1"),
    ("privacy.enabled", "yes", "must be true or false; got 'yes'"),
    ("privacy.mode", "global", "must be one of 'central', 'local', 'dp_sgd'"),
    ("privacy.noise_multiplier", 0, "must be > 0; got 0"),
    ("privacy.accountant", "gdp", "must be one of 'rdp', 'pld'"),
    ("privacy.client_sampling", "shuffle", "must be one of 'poisson', 'fixed'"),
    ("privacy.clipping", "auto", "must be one of 'fixed', 'adaptive'"),
    ("privacy.target_quantile", 1.5, "must be >= 0 and <= 1; got 1.5"),
    ("secure_aggregation.corrupt_fraction", 1, "must be >= 0 and < 1; got 1"),
    ("secure_aggregation.security_bits", 0, "must be >= 1 and <= 256; got 0"),
    ("secure_aggregation.fixed_point_bits", 31, "must be >= 0 and <= 30; got 31"),
    ("privacy.epsilon", 0, "must be > 0; got 0"),
    ("privacy.delta", 1, "must be > 0 and < 1; got 1"),
    ("privacy.max_grad_norm", 0, "must be > 0; got 0"),
    ("governance.enabled", "yes", "must be true or false; got 'yes'"),
    ("governance.sign", True, "true needs governance.signing_key, the path of an Ed25519"),
    ("governance.signing_key", "", "must not be empty"),
    ("metrics.client_eval", 1, "must be true or false; got 1"),
    ("metrics.client_eval_samples", 0, "must be >= 1 and <= 100000; got 0"),
    ("metrics.cosine_similarity", "on", "must be true or false"),
    ("governance.save_audit_log", 1, "must be true or false; got 1"),
    ("governance.save_replay_manifest", "no", "must be true or false"),
    ("async_fl.enabled", "yes", "enabled"),
    ("async_fl.concurrency", 0, "must be >= 1; got 0"),
    ("async_fl.delay_shape", 1.0, "must be > 1; got 1.0"),
    ("async_fl.delay_min", -1, "must be >= 0; got -1"),
    ("async_fl.delay_max", -1, "must be >= 0; got -1"),
    ("async_fl.staleness_threshold", -1, "must be >= 0; got -1"),
    ("async_fl.staleness_strategy", "linear", "must be one of 'uniform', 'inverse_staleness'"),
    ("async_fl.staleness_decay_factor", 0, "must be > 0 and <= 1; got 0"),
    ("async_fl.staleness_decay_factor", 1.5, "must be > 0 and <= 1; got 1.5"),
    ("compression.enabled", "on", "must be true or false"),
    ("compression.strategy", "svd", "must be one of 'topk', 'quantization', 'qsgd'; got 'svd'"),
    ("compression.qsgd_levels", 0, "must be >= 1 and <= 32767; got 0"),
    ("compression.topk_ratio", 0, "must be > 0 and <= 1; got 0"),
    ("compression.quantization_bits", 4, "must be one of 8, 16; got 4"),
    ("compression.error_feedback", "off", "must be true or false"),
    ("attacks", [{"type": "sign_flip"}], "[0] attack sign_flip: give exactly one of fraction"),
    ("attacks", [{"type": "nope", "fraction": 0.2}], "unknown attack 'nope'; valid attacks: "),
    ("attacks", [{"type": "little", "fraction": 0.2, "q": 1}], "parameters of little: f, N, z"),
    ("attacks", [{"type": "empire", "fraction": 1.5}], "fraction must be in (0, 1]; got 1.5"),
    ("attacks", [{"type": "empire", "clients": ["client-99"]}], "client index 99 is outside"),
    ("attacks", [{"type": "empire", "fraction": 0.2, "start_round": 0}], "start_round must be"),
    ("attacks", [{"type": "model_poisoning", "boost": -1, "fraction": 0.2}], "boost must be"),
    ("attacks", ["little"], "[0] must be a mapping like"),
    ("attacks", "none", "must be a list; got 'none'"),
    ("backend.type", "grpc", "must be one of 'sequential', 'loopback', 'out_of_order'"),
    ("backend.seed", -1, "must be >= 0; got -1"),
    ("backend.spread_s", 0, "must be > 0; got 0"),
    ("backend.max_bytes", 10, "must be >= 1024; got 10"),
    ("backend.max_bytes", 1.5, "must be an integer; got 1.5"),
    ("backend", "loopback", "must be a mapping with the keys type, seed, spread_s, max_bytes"),
    ("output.dir", "", "must not be empty"),
    ("output.dir", None, "must be a string; got null"),
    ("output.save_plots", "no", "must be true or false"),
    ("output.save_metrics", 0, "must be true or false"),
    ("output.save_model", None, "must be true or false"),
    ("output.checkpoint_every", 0, "must be >= 1; got 0"),
    ("training", 5, "must be a mapping with the keys num_rounds, num_clients"),
    ("simulation.straggler", [], "must be a mapping with the keys enabled, deadline_s"),
]


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    BAD_VALUES,
    ids=[f"{path}={value!r}" for path, value, _ in BAD_VALUES],
)
def test_every_bad_value_names_its_field(path: str, value: object, fragment: str) -> None:
    problems = _problems(_with(path, value))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: "), problems
    assert fragment in problems[0], problems


def test_the_example_message_from_the_brief() -> None:
    problems = _problems(_with("training.client_fraction", 1.5))
    assert problems == ("training.client_fraction: must be > 0 and <= 1; got 1.5",)


def test_every_problem_is_reported_at_once() -> None:
    data = _with("training.client_fraction", 1.5)
    data = _with("client.lr", 0, data)
    data = _with("simulation.partitioning", "random", data)
    data = _with("privacy.enabled", "yes", data)
    data = _with("model_id", "resnet", data)
    with pytest.raises(InvalidConfigError) as info:
        parse_config(data, source="exp.yaml")
    problems = info.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "model_id",
        "training.client_fraction",
        "client.lr",
        "simulation.partitioning",
        "privacy.enabled",
    ]
    message = str(info.value)
    assert message.splitlines()[0] == "invalid configuration exp.yaml (5 problems):"
    assert message.splitlines()[1:] == list(problems)


@pytest.mark.parametrize("missing", ["name", "dataset"])
def test_required_fields(missing: str) -> None:
    data = dict(BASE)
    del data[missing]
    assert _problems(data) == (f"{missing}: required field is missing",)


def test_not_a_mapping() -> None:
    assert _problems([1, 2]) == (
        "the configuration must be a mapping of top-level keys; got [1, 2] (list)",
    )


# ---------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key_lists_the_accepted_keys() -> None:
    (problem,) = _problems({**BASE, "rounds": 3})
    keys = ", ".join(ExperimentConfig.model_fields)
    assert problem == f"rounds: unknown key; accepted keys of the top level: {keys}"
    assert "training" in problem
    assert "output" in problem


@pytest.mark.parametrize(
    ("path", "section", "suggestion"),
    [
        ("training.num_round", "training", "num_rounds"),
        ("client.learning_rate", "client", None),
        ("simulation.straggler.deadline", "simulation.straggler", "deadline_s"),
        ("privacy.epsilon_", "privacy", "epsilon"),
        ("output.directory", "output", None),
    ],
)
def test_unknown_nested_key(path: str, section: str, suggestion: str | None) -> None:
    (problem,) = _problems(_with(path, 1))
    assert problem.startswith(f"{path}: unknown key; accepted keys of {section}: ")
    model: type[pydantic.BaseModel] = ExperimentConfig
    for part in section.split("."):
        annotation = model.model_fields[part].annotation
        assert isinstance(annotation, type)
        model = annotation
    for key in model.model_fields:
        assert key in problem
    if suggestion is not None:
        assert problem.endswith(f"(did you mean {suggestion!r}?)")


# ---------------------------------------------------------------------- across fields


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            _with("training", {"num_clients": 4, "min_clients": 5}),
            "training.min_clients: must be <= training.num_clients (4); got 5",
        ),
        (
            {**BASE, "model_id": "char-lstm"},
            "model_id: 'char-lstm' cannot be trained on dataset 'mnist'; it takes 'shakespeare'",
        ),
        (
            {**BASE, "dataset": "cifar10"},
            "model_id: 'mnist-cnn' cannot be trained on dataset 'cifar10'",
        ),
        (
            _with("simulation.partitioning", "natural"),
            "simulation.partitioning: 'natural' needs a dataset that is already split by client",
        ),
        (
            _with("client", {"local_epochs": 2, "local_steps": 10}),
            "client: set either local_epochs or local_steps, not both",
        ),
        (
            _with("async_fl", {"delay_min": 2.0, "delay_max": 1.0}),
            "async_fl: delay_max must be >= delay_min; got delay_min=2.0, delay_max=1.0",
        ),
        (
            {**BASE, "strategy": {"type": "FedProx", "mu": 0.1}, "client": {"prox_mu": 0.2}},
            "client.prox_mu: 0.2 disagrees with the strategy's FedProx mu=0.1",
        ),
    ],
)
def test_cross_field_problems(data: dict[str, Any], expected: str) -> None:
    problems = _problems(data)
    assert any(p.startswith(expected) for p in problems), problems


def test_cross_field_problems_are_listed_together() -> None:
    data = {
        **BASE,
        "model_id": "char-lstm",
        "training": {"num_clients": 2, "min_clients": 3},
        "simulation": {"partitioning": "natural"},
    }
    problems = _problems(data)
    assert [p.split(":")[0] for p in problems] == [
        "model_id",
        "training.min_clients",
        "simulation.partitioning",
    ]


def test_natural_partitioning_on_shakespeare() -> None:
    config = parse_config(
        {
            **BASE,
            "dataset": "shakespeare",
            "model_id": "char-lstm",
            "simulation": {"partitioning": "natural"},
        }
    )
    assert config.simulation.partitioning == "natural"


def test_every_model_has_a_dataset() -> None:
    for model_id in MODEL_IDS:
        ok = [d for d in DATASETS if _valid({**BASE, "dataset": d, "model_id": model_id})]
        assert ok, model_id


def test_names_match_the_registries() -> None:
    from velocity.data import DATASETS as DATA_REGISTRY
    from velocity.models import MODELS

    assert MODEL_IDS == MODELS
    assert DATASETS == DATA_REGISTRY


def _valid(data: dict[str, Any]) -> bool:
    try:
        parse_config(data)
    except InvalidConfigError:
        return False
    return True


# ---------------------------------------------------------------------- defaults, FedProx


def test_defaults() -> None:
    config = parse_config(BASE)
    assert config.seed == 42
    assert config.model_id == "mnist-cnn"
    assert config.strategy == "FedAvg"
    assert config.data_dir is None
    assert config.training.num_rounds == 20
    assert config.training.clients_per_round == 5
    assert config.client.local_epochs == 1
    assert config.client.local_steps is None
    assert config.client.prox_mu == 0.0
    assert config.simulation.partitioning == "iid"
    assert config.simulation.straggler.enabled is False
    for section in (config.privacy, config.governance, config.async_fl, config.compression):
        assert section.enabled is False
    assert not any(config.metrics.model_dump()[k] for k in ("client_eval", "cosine_similarity"))
    assert config.attacks == []
    assert config.output.checkpoint_every is None
    assert config.run_dir() == Path("outputs") / "t"


def test_local_steps_replace_epochs() -> None:
    config = parse_config(_with("client.local_steps", 50))
    assert (config.client.local_epochs, config.client.local_steps) == (None, 50)


def test_int_accepted_for_float() -> None:
    config = parse_config(_with("client.lr", 1))
    assert config.client.lr == 1.0
    assert isinstance(config.client.lr, float)


@pytest.mark.parametrize(
    ("strategy", "mu"),
    [
        ("FedProx", 0.01),
        ({"type": "FedProx", "mu": 0.5}, 0.5),
        ({"type": "Pipeline", "stages": ["Clip", {"type": "FedProx", "mu": 0.2}]}, 0.2),
    ],
)
def test_fedprox_mu_fills_prox_mu(strategy: object, mu: float) -> None:
    config = parse_config({**BASE, "strategy": strategy})
    assert config.client.prox_mu == mu
    aggregator = config.strategy_obj()
    if isinstance(aggregator, Pipeline):
        aggregator = aggregator.aggregator
    assert aggregator == FedProx(mu=mu)


def test_fedprox_mu_explicit_and_equal_is_fine() -> None:
    config = parse_config(
        {**BASE, "strategy": {"type": "FedProx", "mu": 0.1}, "client": {"prox_mu": 0.1}}
    )
    assert config.client.prox_mu == 0.1


def test_prox_mu_without_fedprox_is_kept() -> None:
    assert parse_config(_with("client.prox_mu", 0.3)).client.prox_mu == 0.3


def test_strategy_obj() -> None:
    config = parse_config({**BASE, "strategy": {"type": "krum", "f": 1}})
    assert config.strategy_obj() == Krum(f=1)
    assert config.strategy == {"type": "krum", "f": 1}  # the spec as written


def test_frozen() -> None:
    config = parse_config(BASE)
    with pytest.raises(pydantic.ValidationError):
        config.seed = 1  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        config.training.num_rounds = 1  # type: ignore[misc]


# ---------------------------------------------------------------------- the shipped configs

SHIPPED = {
    "baseline.yaml": ("baseline", "dirichlet", 10),
    "noniid_strict.yaml": ("noniid_strict", "dirichlet", 20),
    "fedavg_mnist_paper.yaml": ("fedavg_mnist_paper", "iid", 100),
    "fedavg_mnist_paper_noniid.yaml": ("fedavg_mnist_paper_noniid", "shard", 100),
}


@pytest.mark.parametrize("filename", sorted(SHIPPED))
def test_shipped_configs_load(filename: str) -> None:
    config = load_config(CONFIGS / filename)
    name, partitioning, clients = SHIPPED[filename]
    assert config.name == name
    assert config.dataset == "mnist"
    assert config.model_id == "mnist-cnn"
    assert config.simulation.partitioning == partitioning
    assert config.training.num_clients == clients


def test_shipped_config_details() -> None:
    baseline = load_config(CONFIGS / "baseline.yaml")
    assert baseline.simulation.alpha == 0.5
    assert baseline.simulation.dropout_rate == 0.1
    strict = load_config(CONFIGS / "noniid_strict.yaml")
    assert (strict.simulation.alpha, strict.simulation.dropout_rate) == (0.05, 0.2)
    for filename in ("fedavg_mnist_paper.yaml", "fedavg_mnist_paper_noniid.yaml"):
        paper = load_config(CONFIGS / filename)
        assert paper.training.client_fraction == 0.1
        assert paper.training.clients_per_round == 10
        assert (paper.client.local_epochs, paper.client.batch_size) == (5, 10)
        assert paper.client.momentum == 0.0
    noniid = load_config(CONFIGS / "fedavg_mnist_paper_noniid.yaml")
    assert noniid.simulation.num_shards_per_client == 2


# ---------------------------------------------------------------------- resolved, hash


def _round_trip(config: ExperimentConfig) -> ExperimentConfig:
    text = yaml.safe_dump(config.resolved(), sort_keys=False)
    return parse_config(yaml.safe_load(text))


@pytest.mark.parametrize(
    "data",
    [
        BASE,
        {**BASE, "strategy": "FedProx"},
        {**BASE, "strategy": ["clip", {"type": "multi_krum", "f": 1}, "fedadam"]},
        _with("client.local_steps", 7),
        _with("backend", {"type": "out_of_order", "seed": 3, "spread_s": 0.5}),
        _with("backend", {"type": "loopback", "max_bytes": 4096}),
        _with("privacy", {"epsilon": 2.0, "delta": 1.0e-6}),
        *(yaml.safe_load(p.read_text()) for p in sorted(CONFIGS.glob("*.yaml"))),
    ],
)
def test_resolved_round_trips_through_yaml(data: dict[str, Any]) -> None:
    config = parse_config(data)
    resolved = config.resolved()
    json.dumps(resolved, allow_nan=False)  # JSON-safe
    again = _round_trip(config)
    assert again.resolved() == resolved
    assert again.config_hash() == config.config_hash()
    assert _round_trip(again).resolved() == resolved


def test_resolved_fills_everything() -> None:
    resolved = parse_config(BASE).resolved()
    # every field, except the p2p and parameter_server sections, written only when enabled
    # (so federated runs' hashes stay stable)
    optional = {"p2p", "parameter_server"}
    assert list(resolved) == [f for f in ExperimentConfig.model_fields if f not in optional]
    assert resolved["strategy"] == {"type": "FedAvg", "nonfinite": "drop"}
    assert resolved["simulation"]["straggler"]["delay_distribution"] == "lognormal"
    assert resolved["privacy"] == {
        "enabled": False,
        "mode": "central",
        "epsilon": 1.0,
        "delta": 1.0e-5,
        "max_grad_norm": 1.0,
        "noise_multiplier": None,
        "clipping": "fixed",
        "accountant": "rdp",
        "client_sampling": "fixed",
        "target_quantile": 0.5,
        "clip_lr": 0.2,
        "count_stddev": None,
        "distributed": False,
    }
    assert resolved["secure_aggregation"]["enabled"] is False
    assert "backend" in resolved
    assert resolved["backend"] == {
        "type": "sequential",
        "seed": 0,
        "spread_s": 1.0,
        "max_bytes": None,
    }


def test_config_hash_is_stable() -> None:
    digest = parse_config(BASE).config_hash()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert parse_config(copy.deepcopy(BASE)).config_hash() == digest
    # the same experiment written differently hashes the same
    same = [
        {**BASE, "strategy": {"type": "FedAvg"}},
        {**BASE, "strategy": "fed_avg"},
        {**BASE, "seed": 42, "client": {"lr": 0.01, "local_epochs": 1}},
        {"dataset": "mnist", "name": "t"},
    ]
    for data in same:
        assert parse_config(data).config_hash() == digest, data


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("seed", 43),
        ("name", "u"),
        ("client.lr", 0.02),
        ("training.num_rounds", 21),
        ("strategy", {"type": "FedAvg", "nonfinite": "raise"}),
        ("simulation.straggler.deadline_s", 11.0),
        ("privacy.epsilon", 2.0),
        ("backend.type", "loopback"),
        ("output.save_plots", False),
    ],
)
def test_config_hash_is_sensitive(path: str, value: object) -> None:
    assert parse_config(_with(path, value)).config_hash() != parse_config(BASE).config_hash()


# ---------------------------------------------------------------------- with_updates


def test_with_updates() -> None:
    config = parse_config(BASE)
    updated = config.with_updates({"training.num_rounds": 3, "seed": 7, "output.dir": "/tmp/x"})
    assert (updated.training.num_rounds, updated.seed) == (3, 7)
    assert updated.run_dir() == Path("/tmp/x/t")
    assert config.training.num_rounds == 20  # the original is unchanged
    assert config.with_updates({"client.local_steps": 5}).client.local_epochs is None
    prox = config.with_updates({"strategy": {"type": "FedProx", "mu": 0.3}})
    assert prox.client.prox_mu == 0.3


def test_with_updates_validates() -> None:
    config = parse_config(BASE)
    with pytest.raises(InvalidConfigError) as info:
        config.with_updates({"training.num_rounds": 0})
    assert info.value.problems == ("training.num_rounds: must be >= 1; got 0",)
    with pytest.raises(InvalidConfigError, match="no such configuration field"):
        config.with_updates({"nope.deeper": 1})


# ---------------------------------------------------------------------- load_config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match="configuration file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(InvalidConfigError, match="the file is empty"):
        load_config(_write(tmp_path, "# nothing\n"))
    with pytest.raises(InvalidConfigError, match=r"invalid YAML \(line 3, column 1\): expected"):
        load_config(_write(tmp_path, "name: x\ntraining: [unclosed\n"))
    with pytest.raises(InvalidConfigError, match="must be a mapping of top-level keys"):
        load_config(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(InvalidConfigError, match="duplicate key 'lr'"):
        load_config(_write(tmp_path, "name: x\ndataset: mnist\nclient:\n  lr: 0.1\n  lr: 0.2\n"))


def test_load_config_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\ndataset: mnist\nclient:\n  lr: 0\n")
    with pytest.raises(InvalidConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: client.lr: must be > 0; got 0"
    assert info.value.source == str(path)


def test_load_config_reads_exponents_as_floats(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\ndataset: mnist\nprivacy:\n  delta: 1e-6\n")
    assert load_config(path).privacy.delta == 1e-6


def test_load_config_is_safe(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: !!python/object/apply:os.system ['true']\ndataset: mnist\n")
    with pytest.raises(InvalidConfigError, match="invalid YAML"):
        load_config(path)


def test_public_surface() -> None:
    import velocity.experiments as experiments

    assert experiments.__all__
    assert [n for n in experiments.__all__ if not hasattr(experiments, n)] == []
    assert len(set(experiments.__all__)) == len(experiments.__all__)


@pytest.mark.parametrize(
    ("num_clients", "fraction", "min_clients"),
    [(10, 0.5, 1), (100, 0.1, 1), (7, 0.3, 1), (3, 0.1, 1), (10, 0.1, 4), (10, 1.0, 1)],
)
def test_clients_per_round_matches_the_sampler(
    num_clients: int, fraction: float, min_clients: int
) -> None:
    from velocity.sim.sampling import select_clients

    training = {
        "num_clients": num_clients,
        "client_fraction": fraction,
        "min_clients": min_clients,
    }
    config = parse_config({**BASE, "training": training})
    chosen = select_clients(num_clients, fraction, min_clients, seed=0, round_=1)
    assert config.training.clients_per_round == len(chosen)
