"""Hostile and careless configuration files: bounded, and refused with clear errors."""

from __future__ import annotations

import resource
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from velocity import cli
from velocity.experiments import parse_config
from velocity.experiments.config import MAX_CONFIG_BYTES, InvalidConfigError, load_config


def _laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    previous = "a"
    for name in "bcdefghijk"[: levels - 1]:
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
        previous = name
    return "\n".join([*lines, "name: x", "dataset: mnist"]) + "\n"


def test_billion_laughs_is_refused_before_it_is_built(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(_laughs())
    assert path.stat().st_size < 600
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InvalidConfigError, match=r"laughs\.yaml: .*expands to more than"):
        load_config(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200


def test_small_anchors_still_work(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "name: a\ndataset: mnist\n"
        "strategy: &s [{type: NNM, f: 1}, {type: Krum, f: 1}]\n"
        "training: {num_rounds: 2}\n"
        "attacks: [{type: little, fraction: 0.1}, {type: sign_flip, fraction: 0.1}]\n"
    )
    assert load_config(path).training.num_rounds == 2


def test_an_endless_file_is_refused_unread() -> None:
    with pytest.raises(InvalidConfigError, match=r"/dev/zero: the file is larger than"):
        load_config("/dev/zero")


def test_a_large_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("name: x\n" + "#" * (MAX_CONFIG_BYTES + 10) + "\n")
    with pytest.raises(InvalidConfigError, match="larger than"):
        load_config(path)


def test_a_binary_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x00\x01\xff\xfe")
    with pytest.raises(InvalidConfigError, match=r"model\.bin: not UTF-8 text"):
        load_config(path)
    assert cli.main(["validate-config", str(path)]) == cli.EXIT_CONFIG


def test_error_messages_never_print_a_whole_value() -> None:
    huge = ["x" * 1000] * 10_000
    with pytest.raises(InvalidConfigError) as info:
        parse_config({"name": "x", "dataset": "mnist", "strategy": huge})
    assert len(str(info.value)) < 2000
    with pytest.raises(InvalidConfigError) as info:
        parse_config({"name": "x", "dataset": "mnist", "training": {"num_rounds": huge}})
    assert len(str(info.value)) < 2000


def test_trimmed_mean_errors_name_k() -> None:
    import torch

    from velocity.errors import ValidationError
    from velocity.strategies import TrimmedMean

    with pytest.raises(ValidationError, match=r"TrimmedMean needs n > 2k; got n=4, k=2"):
        TrimmedMean(k=2).aggregate(torch.zeros(4, 3))


# ---------------------------------------------------------------------- fuzz


def _outcome(path: Path) -> BaseException | None:
    """What loading ``path`` raises (``None`` when it is a valid configuration)."""
    try:
        load_config(path)
    except Exception as exc:  # the assertion is on the type
        return exc
    return None


_KEYS = [
    "name",
    "seed",
    "dataset",
    "model_id",
    "strategy",
    "training",
    "client",
    "simulation",
    "attacks",
    "backend",
    "output",
    "privacy",
    "bogus",
]
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.printable, max_size=20),
    st.sampled_from(["mnist", "FedAvg", "Krum", "little", "iid", "sequential", "logreg"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from([*_KEYS, "f", "k", "type", "num_rounds", "lr"]), inner, max_size=4
        ),
    ),
    max_leaves=12,
)
_documents = st.dictionaries(st.sampled_from(_KEYS), _values, max_size=8)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=_documents)
def test_fuzzed_documents_give_only_clear_errors(doc: dict[str, object], tmp_path: Path) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc))
    error = _outcome(path)
    assert error is None or isinstance(error, InvalidConfigError), repr(error)
    assert error is None or 0 < len(str(error)) < 20_000


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(string.printable + "&*!|>%@`\u00e9", max_size=300))
def test_fuzzed_text_gives_only_clear_errors(text: str, tmp_path: Path) -> None:
    path = tmp_path / "text.yaml"
    path.write_text(text)
    error = _outcome(path)
    assert error is None or isinstance(error, InvalidConfigError), repr(error)


# ---------------------------------------------------------------------- runnable configs


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"strategy": {"type": "Krum", "f": 3}, "training": {"num_clients": 8}},
            r"round 1 cannot run .*\(4 rows\): krum needs n > 2f \+ 2; got n=4, f=3",
        ),
        (
            {"attacks": [{"type": "little", "fraction": 1.0}], "training": {"num_clients": 10}},
            r"little: needs at least one honest update",
        ),
        (
            {"training": {"num_clients": 70_000}},
            r"training\.num_clients: 70000 clients cannot each hold an example of mnist's 60000",
        ),
        (
            {
                "training": {"num_rounds": 5},
                "attacks": [{"type": "empire", "fraction": 0.2, "start_round": 9}],
            },
            r"attacks\[0\]\.start_round: 9 is after the last round \(5\)",
        ),
        (
            {"attacks": [{"type": "sign_flip", "clients": ["client-1", "client-1"]}]},
            r"clients names client-1 more than once",
        ),
    ],
)
def test_configs_that_cannot_run_fail_validation(extra: dict[str, object], message: str) -> None:
    data: dict[str, object] = {"name": "x", "dataset": "mnist", "training": {}}
    for key, value in extra.items():
        data[key] = value
    with pytest.raises(InvalidConfigError, match=message):
        parse_config(data)


def test_a_refused_run_leaves_no_directory_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from velocity.errors import ConfigurationError
    from velocity.experiments import runner

    def refuse(*args: object, **kwargs: object) -> None:
        raise ConfigurationError("the data cannot be loaded")

    monkeypatch.setattr(runner, "build_simulation", refuse)
    config = parse_config({"name": "gone", "dataset": "mnist"})
    out = tmp_path / "out"
    with pytest.raises(ConfigurationError, match="cannot be loaded"):
        runner.run_experiment(config, output_dir=out)
    assert not out.exists()
