"""velocity._validation: each constraint, the one message template, and the module's layer."""

from __future__ import annotations

import ast
import dataclasses
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

import velocity._validation as validation
from velocity._validation import (
    ERROR_TEMPLATE,
    INVALID,
    Boolean,
    Constraint,
    Described,
    Integer,
    MappingOf,
    NoneOr,
    OneOf,
    Real,
    String,
    TupleOf,
    check_parameters,
    check_value,
    constraints_of,
    error_message,
)
from velocity.errors import ConfigurationError

ACCEPTS: list[tuple[Constraint, object, object]] = [
    (Integer(), 0, 0),
    (Integer(), -7, -7),
    (Integer(low=1), 1, 1),
    (Integer(low=0, high=3), 3, 3),
    (Real(), 1, 1.0),
    (Real(), -2.5, -2.5),
    (Real(low=0), 0, 0.0),
    (Real(low=0, high=1, low_open=True), 1, 1.0),
    (Real(low=0, high=1, high_open=True), 0.0, 0.0),
    (Boolean(), True, True),
    (Boolean(), False, False),
    (String(), "", ""),
    (String(min_length=1), "x", "x"),
    (OneOf("a", "b"), "b", "b"),
    (NoneOr(Integer(low=1)), None, None),
    (NoneOr(Integer(low=1)), 2, 2),
    (NoneOr(Real()), 3, 3.0),
    (TupleOf(), [1, "a"], (1, "a")),
    (TupleOf(), (), ()),
    (TupleOf(Real(), min_length=2), [1, 2.5], (1.0, 2.5)),
    (MappingOf(), {}, {}),
    (MappingOf(String(), Integer(low=0), min_length=1), {"w": 3}, {"w": 3}),
    (Described(Integer(low=2), "at least two"), 2, 2),
]

REJECTS: list[tuple[Constraint, object]] = [
    (Integer(), True),
    (Integer(), False),
    (Integer(), 1.0),
    (Integer(), "1"),
    (Integer(), None),
    (Integer(low=1), 0),
    (Integer(high=3), 4),
    (Real(), True),
    (Real(), "1.0"),
    (Real(), None),
    (Real(), math.nan),
    (Real(), math.inf),
    (Real(), -math.inf),
    (Real(low=0), -0.1),
    (Real(low=0, low_open=True), 0),
    (Real(high=1, high_open=True), 1.0),
    (Real(high=1), 1.5),
    (Boolean(), 1),
    (Boolean(), 0),
    (Boolean(), "false"),
    (Boolean(), None),
    (String(), 3),
    (String(), None),
    (String(min_length=1), ""),
    (OneOf("a", "b"), "c"),
    (OneOf("a", "b"), "A"),
    (OneOf("a", "b"), None),
    (NoneOr(Integer(low=1)), 0),
    (NoneOr(Integer()), 2.0),
    (TupleOf(), "abc"),
    (TupleOf(), {1, 2}),
    (TupleOf(), None),
    (TupleOf(min_length=1), []),
    (TupleOf(Integer()), [1, True]),
    (MappingOf(), [("a", 1)]),
    (MappingOf(min_length=1), {}),
    (MappingOf(key=String()), {1: 2}),
    (MappingOf(value=Integer()), {"a": 1.5}),
    (Described(Integer(low=2), "at least two"), 1),
]


@pytest.mark.parametrize(("constraint", "value", "expected"), ACCEPTS)
def test_constraints_accept_and_convert(
    constraint: Constraint, value: object, expected: object
) -> None:
    converted = constraint.convert(value)
    assert converted == expected
    assert type(converted) is type(expected)


@pytest.mark.parametrize(("constraint", "value"), REJECTS)
def test_constraints_reject(constraint: Constraint, value: object) -> None:
    assert constraint.convert(value) is INVALID


def test_int_is_accepted_for_a_float_and_bool_refused_for_both() -> None:
    assert check_value("X", "lr", 1, Real()) == 1.0
    assert isinstance(check_value("X", "lr", 1, Real()), float)
    for constraint in (Integer(), Real()):
        with pytest.raises(ConfigurationError, match="got True"):
            check_value("X", "n", True, constraint)


@pytest.mark.parametrize(
    ("constraint", "phrase"),
    [
        (Integer(), "an int"),
        (Integer(low=0), "an int >= 0"),
        (Integer(high=9), "an int <= 9"),
        (Integer(low=1, high=9), "an int in [1, 9]"),
        (Real(), "a finite float"),
        (Real(low=0, low_open=True), "a finite float > 0"),
        (Real(high=1, high_open=True), "a finite float < 1"),
        (Real(low=0, high=1, high_open=True), "a finite float in [0, 1)"),
        (Boolean(), "true or false"),
        (String(), "a string"),
        (String(min_length=1), "a non-empty string"),
        (OneOf("drop", "raise"), "one of 'drop', 'raise'"),
        (NoneOr(Integer(low=1)), "None or an int >= 1"),
        (TupleOf(), "a list or tuple"),
        (
            TupleOf(String(), min_length=1),
            "a non-empty list or tuple whose items are each a string",
        ),
        (MappingOf(), "a mapping"),
        (MappingOf(String(), min_length=1), "a non-empty mapping with keys each a string"),
        (Described(Real(low=0, high=1, low_open=True), "in (0, 1]"), "in (0, 1]"),
    ],
)
def test_descriptions(constraint: Constraint, phrase: str) -> None:
    assert constraint.describe() == phrase


def test_check_value_message_is_the_template() -> None:
    assert ERROR_TEMPLATE == "{owner}.{name} must be {expected}; got {value!r}"
    with pytest.raises(ConfigurationError) as info:
        check_value("Krum", "f", -1, Integer(low=0))
    assert str(info.value) == "Krum.f must be an int >= 0; got -1"
    assert isinstance(info.value, ValueError)
    with pytest.raises(ConfigurationError) as info:
        check_value("Server", "mode", "fast", OneOf("sync", "async"))
    assert str(info.value) == "Server.mode must be one of 'sync', 'async'; got 'fast'"
    assert error_message("A", "b", None, Boolean()) == "A.b must be true or false; got None"


def test_check_value_returns_the_converted_value() -> None:
    assert check_value("S", "ids", ["a", "b"], TupleOf(String())) == ("a", "b")
    assert check_value("S", "timeout", None, NoneOr(Real(low=0))) is None


@dataclasses.dataclass(frozen=True)
class _Settings:
    rounds: int = 1
    lr: float = 0.1
    verbose: bool = False
    _constraints: ClassVar[dict[str, Constraint]] = {
        "rounds": Integer(low=1),
        "lr": Real(low=0, low_open=True),
        "verbose": Boolean(),
    }

    def __post_init__(self) -> None:
        check_parameters(self)


@dataclasses.dataclass(frozen=True)
class _Partial:
    attack: Any = None
    share: float = 0.5
    _constraints: ClassVar[dict[str, Constraint]] = {"share": Real(low=0, high=1)}

    def __post_init__(self) -> None:
        check_parameters(self, self._constraints, owner="partial thing")


def test_check_parameters_normalises_and_names_the_class() -> None:
    settings = _Settings(rounds=3, lr=1)
    assert settings.lr == 1.0
    assert isinstance(settings.lr, float)
    assert settings == _Settings(rounds=3, lr=1.0)
    assert hash(settings) == hash(_Settings(rounds=3, lr=1.0))
    assert constraints_of(settings) is _Settings._constraints
    assert constraints_of(object()) == {}
    with pytest.raises(ConfigurationError, match=r"^_Settings\.rounds must be an int >= 1; got 0$"):
        _Settings(rounds=0)
    with pytest.raises(ConfigurationError, match=r"^_Settings\.verbose must be true or false"):
        _Settings(verbose=1)  # type: ignore[arg-type]


def test_check_parameters_with_a_table_checks_only_its_entries() -> None:
    assert _Partial(attack="anything", share=1).share == 1.0
    with pytest.raises(ConfigurationError, match=r"^partial thing\.share must be"):
        _Partial(share=2)


def test_strategies_constraints_re_exports_the_machinery() -> None:
    from velocity.strategies import _constraints

    for name in validation.__all__:
        assert getattr(_constraints, name) is getattr(validation, name)
    assert Integer(low=0) == _constraints.BYZANTINE


# ------------------------------------------------------------------------------- the layer
def test_validation_imports_only_errors_from_velocity_ast() -> None:
    tree = ast.parse(Path(validation.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            assert node.module is not None
            imported.add(node.module)
    ours = {name for name in imported if name.split(".")[0] == "velocity"}
    assert ours == {"velocity.errors"}
    for name in imported - ours:
        top = name.split(".")[0]
        assert top == "__future__" or top in sys.stdlib_module_names, name


def test_validation_imports_only_errors_from_velocity_at_runtime() -> None:
    # ``import velocity._validation`` runs ``velocity/__init__``, which imports much more:
    # under a bare ``velocity`` package, load velocity.errors, then see what the module adds.
    code = (
        "import importlib.util, sys, types\n"
        f"src = {str(Path(validation.__file__).parent)!r}\n"
        "package = types.ModuleType('velocity')\n"
        "package.__path__ = [src]  # velocity/__init__ is not run; any submodule still loads\n"
        "sys.modules['velocity'] = package\n"
        "def load(name, path):\n"
        "    spec = importlib.util.spec_from_file_location(name, path)\n"
        "    module = importlib.util.module_from_spec(spec)\n"
        "    sys.modules[name] = module\n"
        "    spec.loader.exec_module(module)\n"
        "load('velocity.errors', src + '/errors.py')\n"
        "before = set(sys.modules)\n"
        "load('velocity._validation', src + '/_validation.py')\n"
        "new = sorted(m for m in set(sys.modules) - before if m.startswith('velocity'))\n"
        "print(','.join(new))\n"
        "print('torch' in sys.modules, 'numpy' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out == ["velocity._validation", "False False"]
