"""canonical_json against RFC 8785's published examples, and its round-trip properties."""

from __future__ import annotations

import json
import math
import random
import struct
from collections import OrderedDict
from enum import IntEnum, StrEnum
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from velocity.errors import ValidationError
from velocity.governance import canonical_json, config_digest, sha256_hex

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def from_hex(bits: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(bits))[0]
    return value


# RFC 8785, Appendix B ("Number Serialization Samples"): IEEE 754 bits -> expected JSON.
RFC8785_APPENDIX_B = [
    ("0000000000000000", "0"),  # zero
    ("8000000000000000", "0"),  # minus zero
    ("0000000000000001", "5e-324"),  # min pos number
    ("8000000000000001", "-5e-324"),  # min neg number
    ("7fefffffffffffff", "1.7976931348623157e+308"),  # max pos number
    ("ffefffffffffffff", "-1.7976931348623157e+308"),  # max neg number
    ("4340000000000000", "9007199254740992"),  # max pos int
    ("c340000000000000", "-9007199254740992"),  # max neg int
    ("4430000000000000", "295147905179352830000"),  # ~2**68
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),  # round to even
]
RFC8785_NOT_FINITE = ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"]


@pytest.mark.parametrize(("bits", "expected"), RFC8785_APPENDIX_B)
def test_rfc8785_number_samples(bits: str, expected: str) -> None:
    assert canonical_json(from_hex(bits)) == expected.encode()
    assert canonical_json([from_hex(bits)]) == f"[{expected}]".encode()


@pytest.mark.parametrize("bits", RFC8785_NOT_FINITE)
def test_rfc8785_nan_and_infinity_are_refused(bits: str) -> None:
    with pytest.raises(ValidationError, match="not a finite number"):
        canonical_json({"x": from_hex(bits)})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2.0, "2"),
        (-3.0, "-3"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (1e-6, "0.000001"),
        (1.5e-7, "1.5e-7"),
        (0.1, "0.1"),
        (1e16, "10000000000000000"),
        (123456789.125, "123456789.125"),
        (-0.0, "0"),
        (1e300, "1e+300"),
        (True, "true"),
        (None, "null"),
        (2**63, "9223372036854775808"),  # ints stay exact
    ],
)
def test_number_forms(value: object, expected: str) -> None:
    assert canonical_json(value) == expected.encode()


def test_rfc8785_section_3_2_4_example() -> None:
    # The input of RFC 8785 section 3.2.4, parsed the way any JSON parser would.
    source = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        r' "string": "\u20ac$\u000F\u000aA' + "'" + r'\u0042\u0022\u005c\\\"\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(json.loads(source)) == expected.encode("utf-8")


def test_rfc8785_section_3_2_3_sorting_by_utf16_code_units() -> None:
    source = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    order = [value for value in json.loads(canonical_json(source)).values()]
    assert order == [
        "Carriage Return",
        "One",
        "Control",
        "Latin Small Letter O With Diaeresis",
        "Euro Sign",
        "Emoji: Grinning Face",  # U+D83D sorts before U+FB33 in UTF-16...
        "Hebrew Letter Dalet With Dagesh",  # ...though U+1F600 > U+FB33 as a code point
    ]


def test_string_escaping_is_minimal() -> None:
    text = "".join(chr(c) for c in range(0x20)) + '"\\/\x7f\u2028é😀'
    expected = (
        '"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r'
        "\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018"
        '\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\\"\\\\/\x7f\u2028é😀"'
    )
    assert canonical_json(text) == expected.encode("utf-8")


def test_tuples_enums_and_mapping_types() -> None:
    class Color(StrEnum):
        RED = "red"

    class Level(IntEnum):
        HIGH = 3

    value = OrderedDict([("z", (1, 2)), ("a", {Color.RED: Level.HIGH})])
    assert canonical_json(value) == b'{"a":{"red":3},"z":[1,2]}'


@pytest.mark.parametrize(
    ("value", "path", "reason"),
    [
        ({"rounds": [{}, {}, {}, {"loss": math.nan}]}, "$.rounds[3].loss", "not a finite"),
        ({"a": {1: "x"}}, "$.a", "keys must be str"),
        ({"a": [{1, 2}]}, "$.a[0]", "no order"),
        ({"t": torch.ones(2)}, "$.t", "convert it first"),
        ({"n": np.float32(1.0)}, "$.n", "convert it first"),
        ({"b": b"raw"}, "$.b", "encode it"),
        ({"odd key": object()}, '$["odd key"]', "not a JSON type"),
        ({"s": "\ud800"}, "$.s", "lone surrogate"),
        ([math.inf], "$[0]", "not a finite"),
    ],
)
def test_refusals_name_the_json_path(value: object, path: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        canonical_json(value)
    message = str(info.value)
    assert f"cannot write {path} as canonical JSON" in message
    assert reason in message


def test_deep_nesting_is_a_clear_error() -> None:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(ValidationError, match="nested too deeply"):
        canonical_json(value)


# ---------------------------------------------------------------------------------- properties

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


def same_json(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: a number is its double value; ints stay exact."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        if isinstance(a, float) or isinstance(b, float):
            return float(a) == float(b)
        return a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@SETTINGS
@given(json_values)
def test_parse_of_canonical_is_the_value(value: Any) -> None:
    assert same_json(json.loads(canonical_json(value)), value)


@SETTINGS
@given(json_values)
def test_canonical_is_a_fixed_point(value: Any) -> None:
    once = canonical_json(value)
    assert canonical_json(json.loads(once)) == once


@SETTINGS
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=8), st.randoms())
def test_key_order_does_not_matter(mapping: dict[str, Any], rnd: random.Random) -> None:
    items = list(mapping.items())
    rnd.shuffle(items)
    assert canonical_json(dict(items)) == canonical_json(mapping)
    assert config_digest(dict(items)) == config_digest(mapping)


ascii_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(st.characters(max_codepoint=127), max_size=6), children, max_size=4
        )
    ),
    max_leaves=20,
)


@SETTINGS
@given(ascii_values)
def test_agrees_with_python_json_where_the_rules_coincide(value: Any) -> None:
    # Without floats and with ASCII keys, RFC 8785 is Python's sorted compact dump.
    reference = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == reference.encode("utf-8")


@SETTINGS
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_form_round_trips_and_is_short(value: float) -> None:
    text = canonical_json(value).decode()
    assert float(text) == value
    digits = text.lstrip("-").split("e")[0].replace(".", "").strip("0")
    assert len(digits) <= len(repr(abs(value)).split("e")[0].replace(".", "").strip("0"))


def test_config_digest_is_sha256_of_canonical_bytes() -> None:
    config = {"strategy": "fedavg", "lr": 0.1, "rounds": 3}
    assert config_digest(config) == sha256_hex(b'{"lr":0.1,"rounds":3,"strategy":"fedavg"}')
    with pytest.raises(ValidationError, match="needs a mapping"):
        config_digest([1, 2])  # type: ignore[arg-type]
