"""Update codecs: exact round trips, exact wire sizes, hostile bytes, error feedback, config."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

import velocity.compression as compression
from velocity.compression import (
    CODECS,
    FLOAT16_MAX,
    HEADER_BYTES,
    MAGIC,
    QSGD,
    Codec,
    ErrorFeedback,
    Float16,
    Float32,
    Int8,
    TopK,
    codec_from_config,
    compensate,
    decode_frame,
    encode_with_feedback,
)
from velocity.errors import ConfigurationError, ProtocolError, ValidationError
from velocity.types import ParamSpec

# The frame header, written out independently of the implementation (the documented layout).
HEADER = struct.Struct("<4sBBHQII")
IDS = {"float32": 1, "float16": 2, "int8": 3, "topk": 4, "qsgd": 5}

#: One instance of every codec (and both QSGD level widths): the conformance table.
CODEC_TABLE: list[Codec] = [
    Float32(),
    Float16(),
    Int8(),
    TopK(0.1),
    TopK(1.0),
    QSGD(levels=4),
    QSGD(levels=300),
]

SPECS = [
    ParamSpec.from_sizes({"w": 1}),
    ParamSpec.from_sizes({"w": 37}),
    ParamSpec(("conv", "bias", "empty", "scalar"), ((4, 3, 2), (4,), (0, 3), ())),
    ParamSpec.from_sizes({"a": 100, "b": 3, "c": 250}),
    ParamSpec.from_sizes({}),
]

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_row(spec: ParamSpec, seed: int = 0, scale: float = 1.0) -> Tensor:
    return torch.randn(spec.d, generator=gen(seed)) * scale


def header(
    codec_id: int,
    d: int,
    p0: int = 0,
    p1: int = 0,
    *,
    magic: bytes = MAGIC,
    version: int = 1,
    reserved: int = 0,
) -> bytes:
    return HEADER.pack(magic, codec_id, version, reserved, d, p0, p1)


def roundtrip(codec: Codec, row: Tensor, spec: ParamSpec, seed: int = 0) -> Tensor:
    return codec.decode(codec.encode(row, spec, generator=gen(seed)), spec)


def codec_id(codec: Codec | type[Codec]) -> str:
    return repr(codec)


# ---------------------------------------------------------------------- surface


def test_all_names_resolve() -> None:
    assert compression.__all__
    assert [n for n in compression.__all__ if not hasattr(compression, n)] == []
    assert len(set(compression.__all__)) == len(compression.__all__)


def test_table_covers_every_codec() -> None:
    assert {type(c) for c in CODEC_TABLE} == set(CODECS.values())
    assert {name: cls.codec_id for name, cls in CODECS.items()} == IDS
    assert HEADER_BYTES == HEADER.size == 24


def test_settings_are_validated() -> None:
    assert TopK(1).ratio == 1.0  # YAML writes 1
    assert isinstance(TopK(1).ratio, float)
    for bad in (0, -0.1, 1.5, True, float("nan"), "0.1"):
        with pytest.raises(ConfigurationError, match=r"TopK\.ratio must be"):
            TopK(bad)  # type: ignore[arg-type]
    for bad_levels in (0, 32768, 2.0, True):
        with pytest.raises(ConfigurationError, match=r"QSGD\.levels must be"):
            QSGD(levels=bad_levels)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        TopK(0.5).ratio = 0.2  # type: ignore[misc]


# ---------------------------------------------------------------------- conformance


@pytest.mark.parametrize("codec", CODEC_TABLE, ids=codec_id)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"d{s.d}-T{len(s)}")
def test_conformance(codec: Codec, spec: ParamSpec) -> None:
    row = random_row(spec, seed=spec.d)
    before = row.clone()
    frame = codec.encode(row, spec, generator=gen(1))
    assert torch.equal(row, before)  # input not mutated
    assert isinstance(frame, bytes)
    assert len(frame) == codec.encoded_size(spec)
    magic, cid, version, reserved, d, _, _ = HEADER.unpack_from(frame)
    assert (magic, cid, version, reserved, d) == (MAGIC, IDS[codec.name], 1, 0, spec.d)
    decoded = codec.decode(frame, spec)
    assert decoded.dtype == torch.float32
    assert decoded.shape == (spec.d,)
    assert torch.equal(decode_frame(frame, spec), decoded)
    assert spec.d == 0 or decoded.data_ptr() != row.data_ptr()
    again = decoded.clone()
    decoded.zero_()  # a new, writable tensor: the frame is untouched
    assert torch.equal(codec.decode(frame, spec), again)
    error = (codec.decode(frame, spec).double() - row.double()).abs()
    assert bool((error <= codec.max_error(row, spec)).all())
    # deterministic under equal generators
    assert codec.encode(row, spec, generator=gen(1)) == frame


@pytest.mark.parametrize("codec", CODEC_TABLE, ids=codec_id)
def test_encode_refuses_unusable_rows(codec: Codec) -> None:
    spec = ParamSpec.from_sizes({"w": 4})
    row = torch.tensor([1.0, 2.0, 3.0, 4.0])
    cases: list[tuple[object, str]] = [
        (torch.tensor([1.0, float("nan"), 3.0, float("inf")]), "2 non-finite values"),
        (row.double(), "must be float32"),
        (row[:3], r"needs \(4,\)"),
        (row.reshape(2, 2), r"needs \(4,\)"),
        ([1.0, 2.0, 3.0, 4.0], "must be a torch.Tensor"),
    ]
    for bad, match in cases:
        with pytest.raises(ValidationError, match=match):
            codec.encode(bad, spec, generator=gen())  # type: ignore[arg-type]


@given(
    sizes=st.lists(st.integers(0, 60), min_size=0, max_size=4),
    ratio=st.floats(1e-4, 1.0),
    levels=st.integers(1, 32767),
    seed=st.integers(0, 2**16),
)
@SETTINGS
def test_encoded_size_is_exact(sizes: list[int], ratio: float, levels: int, seed: int) -> None:
    spec = ParamSpec.from_sizes({f"t{i}": n for i, n in enumerate(sizes)})
    row = random_row(spec, seed)
    for codec in (Float32(), Float16(), Int8(), TopK(ratio), QSGD(levels=levels)):
        frame = codec.encode(row, spec, generator=gen(seed))
        assert len(frame) == codec.encoded_size(spec)
    d, t = spec.d, len(spec)
    k = TopK(ratio).k(d)
    if d:  # k = max(1, ceil(ratio d)), up to the last bit of the float product
        assert 1 <= k <= d
        assert k - 1 < ratio * d * (1 + 1e-12)
        assert k >= ratio * d * (1 - 1e-12)
    else:
        assert k == 0
    assert Float32().encoded_size(spec) == HEADER_BYTES + 4 * d
    assert Int8().encoded_size(spec) == HEADER_BYTES + 4 * t + d
    assert TopK(ratio).encoded_size(spec) == HEADER_BYTES + 8 * k
    width = 1 if levels <= 127 else 2
    assert QSGD(levels=levels).encoded_size(spec) == HEADER_BYTES + 4 * t + width * d


@given(d=st.integers(0, 500), seed=st.integers(0, 2**16))
@SETTINGS
def test_float16_is_half_the_float32_body_plus_the_same_header(d: int, seed: int) -> None:
    spec = ParamSpec.from_sizes({"w": d})
    row = random_row(spec, seed)
    f32, f16 = Float32().encode(row, spec), Float16().encode(row, spec)
    assert len(f16) == (len(f32) - HEADER_BYTES) // 2 + HEADER_BYTES
    assert f16[:4] == f32[:4] == MAGIC
    assert f16[8:HEADER_BYTES] == f32[8:HEADER_BYTES]


# ---------------------------------------------------------------------- exactness


def test_float32_is_bit_exact() -> None:
    row = torch.tensor([0.0, -0.0, 1e-45, -3.4e38, 1 / 3, 2.0**-126, 7.0])
    spec = ParamSpec.from_sizes({"w": row.numel()})
    out = roundtrip(Float32(), row, spec)
    assert torch.equal(out.view(torch.int32), row.view(torch.int32))


@given(
    values=st.lists(
        st.floats(-FLOAT16_MAX, FLOAT16_MAX, width=32, allow_subnormal=True), max_size=40
    )
)
@SETTINGS
def test_float16_equals_torch_half(values: list[float]) -> None:
    row = torch.tensor(values, dtype=torch.float32)
    spec = ParamSpec.from_sizes({"w": row.numel()})
    out = roundtrip(Float16(), row, spec)
    assert torch.equal(out.view(torch.int32), row.half().float().view(torch.int32))
    error = (out.double() - row.double()).abs()
    normal = row.abs() >= 2.0**-14
    assert bool((error[normal] <= row.double().abs()[normal] * 2.0**-11).all())
    assert bool((error[~normal] <= 2.0**-25).all())


def test_float16_refuses_values_beyond_its_range() -> None:
    spec = ParamSpec.from_sizes({"w": 3})
    edge = torch.tensor([FLOAT16_MAX, -FLOAT16_MAX, 0.0])
    assert torch.equal(roundtrip(Float16(), edge, spec), edge)
    for peak in (65505.0, -1e6, 3e38):
        with pytest.raises(ValidationError, match="65504") as info:
            Float16().encode(torch.tensor([0.0, peak, 1.0]), spec)
        assert "index 1" in str(info.value)


def test_int8_error_is_at_most_half_a_scale_per_tensor() -> None:
    spec = ParamSpec(("big", "small", "zero"), ((300,), (50,), (10,)))
    row = torch.cat(
        [torch.randn(300, generator=gen(0)) * 1e3, torch.randn(50) * 1e-3, torch.zeros(10)]
    )
    frame = Int8().encode(row, spec)
    scales = np.frombuffer(frame, "<f4", count=3, offset=HEADER_BYTES)
    expected = [float(row[:300].abs().max()) / 127, float(row[300:350].abs().max()) / 127, 0.0]
    assert scales.tolist() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(Int8.scales(row, spec), torch.from_numpy(scales.copy()))
    levels = np.frombuffer(frame, "i1", offset=HEADER_BYTES + 12)
    assert int(np.abs(levels[:300]).max()) == 127
    assert int(np.abs(levels[300:350]).max()) == 127
    out = Int8().decode(frame, spec).double()
    err = (out - row.double()).abs()
    for (lo, hi), scale in zip(((0, 300), (300, 350), (350, 360)), scales, strict=True):
        assert float(err[lo:hi].max()) <= float(scale) / 2 * (1 + 2**-15)  # per-tensor scale
    assert torch.equal(out[350:], torch.zeros(10, dtype=torch.float64))


@given(
    exponent=st.integers(-30, 30),
    multiples=st.lists(st.integers(-127, 127), min_size=1, max_size=30),
)
@SETTINGS
def test_int8_is_exact_for_multiples_of_a_power_of_two_scale(
    exponent: int, multiples: list[int]
) -> None:
    scale = 2.0**exponent
    values = [*multiples, 127]  # the max |v| fixes the scale at exactly 2**exponent
    row = torch.tensor([m * scale for m in values], dtype=torch.float32)
    spec = ParamSpec.from_sizes({"w": row.numel()})
    assert torch.equal(roundtrip(Int8(), row, spec), row)


def brute_force_topk(row: Tensor, k: int) -> list[int]:
    order = sorted(range(row.numel()), key=lambda i: (-abs(float(row[i])), i))
    return sorted(order[:k])


@given(
    values=st.lists(st.integers(-4, 4), min_size=1, max_size=60),  # many ties
    ratio=st.floats(1e-3, 1.0),
)
@SETTINGS
def test_topk_keeps_exactly_the_k_largest_ties_to_lower_index(
    values: list[int], ratio: float
) -> None:
    row = torch.tensor(values, dtype=torch.float32) * 0.5
    spec = ParamSpec.from_sizes({"w": row.numel()})
    codec = TopK(ratio)
    k = codec.k(spec.d)
    kept = brute_force_topk(row, k)
    assert codec.keep(row, spec).tolist() == kept
    frame = codec.encode(row, spec)
    indices = np.frombuffer(frame, "<u4", count=k, offset=HEADER_BYTES + 4 * k)
    assert indices.tolist() == kept
    expected = torch.zeros_like(row)
    expected[kept] = row[kept]
    assert torch.equal(codec.decode(frame, spec), expected)


def test_topk_k_is_computed_exactly() -> None:
    assert [TopK(0.7).k(10), TopK(0.4).k(5), TopK(0.1).k(10), TopK(0.3).k(10)] == [7, 2, 1, 3]
    assert TopK(1e-9).k(10**6) == 1
    assert TopK(1.0).k(10**6) == 10**6
    assert TopK(0.5).k(0) == 0
    with pytest.raises(ValidationError, match="uint32"):
        TopK(0.5).encoded_size(ParamSpec.from_sizes({"w": 2**32}))


def test_topk_on_a_large_row_matches_a_stable_sort() -> None:
    spec = ParamSpec.from_sizes({"w": 50_000})
    row = torch.round(torch.randn(spec.d, generator=gen(3)) * 20) / 4  # heavy ties
    codec = TopK(0.05)
    order = np.lexsort((np.arange(spec.d), -row.abs().numpy()))
    expected = np.sort(order[: codec.k(spec.d)])
    assert np.array_equal(codec.keep(row, spec).numpy(), expected)


# ---------------------------------------------------------------------- qsgd


def hoeffding_tolerance(step: Tensor, n: int, coordinates: int, delta: float = 1e-6) -> Tensor:
    """|mean - v| <= step sqrt(ln(2m / delta) / 2n) for all m coordinates, w.p. >= 1 - delta.

    Each decode of a coordinate takes one of two values a step apart (Hoeffding, with a
    union bound over the coordinates)."""
    return step * math.sqrt(math.log(2 * coordinates / delta) / (2 * n))


@pytest.mark.parametrize("levels", [1, 3, 200])
def test_qsgd_is_unbiased_with_bounded_levels_and_variance(levels: int) -> None:
    spec = ParamSpec.from_sizes({"a": 9, "b": 4})
    row = torch.tensor([0.3, -1.7, 0.0, 2.2, 0.05, -0.4, 1.1, 0.9, -0.01, 5.0, -3.0, 0.2, 0.0])
    codec = QSGD(levels=levels)
    draws = 3000
    total = torch.zeros(spec.d, dtype=torch.float64)
    sq_error = 0.0
    level_dtype = "i1" if levels <= 127 else "<i2"
    for seed in range(draws):
        frame = codec.encode(row, spec, generator=gen(seed))
        stored = np.frombuffer(frame, level_dtype, offset=HEADER_BYTES + 4 * 2)
        assert int(np.abs(stored.astype(np.int64)).max()) <= levels
        out = codec.decode(frame, spec).double()
        total += out
        sq_error += float(((out - row.double()) ** 2).sum())
    norms = QSGD.norms(row, spec).double()
    step = torch.repeat_interleave(norms / levels, torch.tensor([9, 4]))
    mean = total / draws
    assert bool(((mean - row.double()).abs() <= hoeffding_tolerance(step, draws, spec.d)).all())
    assert sq_error / draws <= codec.variance_bound(row, spec)


def test_qsgd_randomness_is_explicit_and_deterministic() -> None:
    spec = ParamSpec.from_sizes({"w": 200})
    row = random_row(spec)
    codec = QSGD(levels=2)
    with pytest.raises(ValidationError, match=r"needs a torch\.Generator"):
        codec.encode(row, spec)
    assert codec.encode(row, spec, generator=gen(5)) == codec.encode(row, spec, generator=gen(5))
    assert codec.encode(row, spec, generator=gen(5)) != codec.encode(row, spec, generator=gen(6))
    # the deterministic codecs ignore the generator
    assert Int8().encode(row, spec, generator=gen(5)) == Int8().encode(row, spec)


def test_qsgd_single_coordinate_and_zero_tensor_are_exact() -> None:
    spec = ParamSpec.from_sizes({"one": 3, "zero": 2})
    row = torch.tensor([0.0, -2.5, 0.0, 0.0, 0.0])
    assert torch.equal(roundtrip(QSGD(levels=7), row, spec), row)


def test_qsgd_level_width_switches_at_127() -> None:
    spec = ParamSpec.from_sizes({"w": 10})
    assert QSGD(levels=127).encoded_size(spec) == HEADER_BYTES + 4 + 10
    assert QSGD(levels=128).encoded_size(spec) == HEADER_BYTES + 4 + 20


# ---------------------------------------------------------------------- hostile bytes

SPEC = ParamSpec.from_sizes({"a": 3, "b": 2})  # d = 5, T = 2
F32 = "<f4"


def body(dtype: str, values: list[float] | list[int]) -> bytes:
    return np.asarray(values, dtype=dtype).tobytes()


GOOD_F32 = body(F32, [1, 2, 3, 4, 5])
GOOD_TOPK_VALUES = body(F32, [1.0, 2.0])

HOSTILE: list[tuple[str, Codec, bytes, str]] = [
    ("short", Float32(), MAGIC + b"\x01", "shorter than the 24-byte header"),
    ("magic", Float32(), header(1, 5, magic=b"VFL1") + GOOD_F32, "bad magic"),
    ("version", Float32(), header(1, 5, version=2) + GOOD_F32, "format version 2"),
    ("reserved", Float32(), header(1, 5, reserved=7) + GOOD_F32, "reserved header field"),
    ("d", Float32(), header(1, 6) + GOOD_F32 + body(F32, [6]), "d=6; the ParamSpec has d=5"),
    ("codec id", Int8(), header(1, 5) + GOOD_F32, r"codec id 1 \(float32\); expected 3"),
    ("params", Float32(), header(1, 5, 1) + GOOD_F32, r"\(p0, p1\) = \(1, 0\)"),
    ("truncated", Float32(), header(1, 5) + GOOD_F32[:-1], "43 bytes.*exactly 44"),
    ("over-long", Float32(), header(1, 5) + GOOD_F32 + b"\0", "45 bytes.*exactly 44"),
    ("nan", Float32(), header(1, 5) + body(F32, [1, 2, float("nan"), 4, 5]), "not finite"),
    ("f16 inf", Float16(), header(2, 5) + body("<f2", [1, 2, 3, float("inf"), 5]), "not finite"),
    ("int8 T", Int8(), header(3, 5, 3) + bytes(12 + 5), r"= \(3, 0\).*\(2, 0\)"),
    ("int8 nan scale", Int8(), header(3, 5, 2) + body(F32, [1, float("nan")]) + bytes(5),
     "scales are not finite"),
    ("int8 negative", Int8(), header(3, 5, 2) + body(F32, [1, -1]) + bytes(5), "negative"),
    ("int8 -128", Int8(), header(3, 5, 2) + body(F32, [1, 1]) + body("i1", [0, -128, 0, 0, 0]),
     r"level is -128; levels must lie in \[-127, 127\]"),
    ("int8 overflow", Int8(), header(3, 5, 2) + body(F32, [3e38, 1]) + body("i1", [127] * 5),
     "overflow float32"),
    ("topk k", TopK(0.4), header(4, 5, 3) + bytes(24), r"\(p0, p1\) = \(3, 0\)"),
    ("topk range", TopK(0.4), header(4, 5, 2) + GOOD_TOPK_VALUES + body("<u4", [1, 5]),
     "index 5 is out of range for d=5"),
    ("topk order", TopK(0.4), header(4, 5, 2) + GOOD_TOPK_VALUES + body("<u4", [3, 1]),
     "strictly increasing"),
    ("topk repeat", TopK(0.4), header(4, 5, 2) + GOOD_TOPK_VALUES + body("<u4", [2, 2]),
     "strictly increasing"),
    ("topk nan", TopK(0.4), header(4, 5, 2) + body(F32, [float("inf"), 1]) + body("<u4", [0, 1]),
     "values are not finite"),
    ("qsgd s", QSGD(levels=4), header(5, 5, 5, 2) + bytes(8 + 5), r"\(5, 2\)"),
    ("qsgd level", QSGD(levels=4), header(5, 5, 4, 2) + body(F32, [1, 1])
     + body("i1", [0, 5, 0, 0, 0]), r"level is 5; levels must lie in \[-4, 4\]"),
    ("qsgd norm", QSGD(levels=4), header(5, 5, 4, 2) + body(F32, [float("nan"), 1]) + bytes(5),
     "norms are not finite"),
    ("qsgd int16", QSGD(levels=300), header(5, 5, 300, 2) + body(F32, [1, 1])
     + body("<i2", [0, 0, -301, 0, 0]), "level is -301"),
]  # fmt: skip


#: Refusals of one codec's decoder that a frame of the same codec with other settings avoids.
CODEC_SPECIFIC = {"codec id", "params", "topk k", "qsgd s"}


@pytest.mark.parametrize(("name", "codec", "data", "match"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_frames_are_refused(name: str, codec: Codec, data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        codec.decode(data, SPEC)
    if name not in CODEC_SPECIFIC:
        with pytest.raises(ProtocolError, match=match):
            decode_frame(data, SPEC)


def test_decode_frame_checks_parameters_for_validity() -> None:
    with pytest.raises(ProtocolError, match="unknown codec id 9"):
        decode_frame(header(9, 5) + GOOD_F32, SPEC)
    with pytest.raises(ProtocolError, match=r"k must lie in \[1, 5\]"):
        decode_frame(header(4, 5, 6), SPEC)
    with pytest.raises(ProtocolError, match=r"k must lie in \[1, 5\]"):
        decode_frame(header(4, 5, 0), SPEC)
    with pytest.raises(ProtocolError, match=r"s must lie in \[1, 32767\]"):
        decode_frame(header(5, 5, 0, 2) + bytes(13), SPEC)
    # a valid top-k frame with another k than the decoder's codec: fine for decode_frame only
    frame = header(4, 5, 1) + body(F32, [2.0]) + body("<u4", [4])
    assert decode_frame(frame, SPEC).tolist() == [0.0, 0.0, 0.0, 0.0, 2.0]
    with pytest.raises(ProtocolError, match=r"\(p0, p1\) = \(1, 0\)"):
        TopK(0.4).decode(frame, SPEC)


@pytest.mark.parametrize("bad", ["text", 5, None, [1, 2], np.zeros(3)])
def test_decode_refuses_non_bytes(bad: object) -> None:
    with pytest.raises(ProtocolError, match="expected bytes"):
        decode_frame(bad, SPEC)  # type: ignore[arg-type]


def test_decode_accepts_bytearray_and_memoryview() -> None:
    frame = Int8().encode(random_row(SPEC), SPEC)
    expected = decode_frame(frame, SPEC)
    assert torch.equal(decode_frame(bytearray(frame), SPEC), expected)
    assert torch.equal(decode_frame(memoryview(frame), SPEC), expected)
    with pytest.raises(ProtocolError, match="not contiguous"):
        decode_frame(memoryview(frame + frame)[::2], SPEC)


HUGE = ParamSpec.from_sizes({"w": 2**40})  # 4 TiB as float32: must never be allocated


@pytest.mark.parametrize(
    "data",
    [
        header(1, 2**40),
        header(2, 2**40) + bytes(100),
        header(3, 2**40, 1) + bytes(4),
        header(4, 2**40, 2**32 - 1) + bytes(64),
        header(5, 2**40, 4, 1) + bytes(64),
    ],
)
def test_header_sizes_are_checked_before_allocating(data: bytes) -> None:
    with pytest.raises(ProtocolError, match="exactly"):
        decode_frame(data, HUGE)
    with pytest.raises(ProtocolError, match="the header says d=1099511627776"):
        decode_frame(data, SPEC)


@st.composite
def mutated_frames(draw: st.DrawFn) -> tuple[Codec, bytes]:
    codec = draw(st.sampled_from(CODEC_TABLE))
    seed = draw(st.integers(0, 1000))
    frame = bytearray(codec.encode(random_row(SPEC, seed, scale=100.0), SPEC, generator=gen(seed)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "extend", "set"]))
        if kind == "flip" and frame:
            i = draw(st.integers(0, len(frame) - 1))
            frame[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and frame:
            i = draw(st.integers(0, len(frame) - 1))
            frame[i] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del frame[draw(st.integers(0, len(frame))) :]
        else:
            frame += draw(st.binary(min_size=1, max_size=16))
    return codec, bytes(frame)


@given(mutated_frames())
@settings(max_examples=150, deadline=None, derandomize=True)
def test_fuzzed_frames_only_ever_raise_protocol_error(case: tuple[Codec, bytes]) -> None:
    codec, data = case
    for decoder in (decode_frame, codec.decode):
        try:
            out = decoder(data, SPEC)
        except ProtocolError:
            continue
        assert out.dtype == torch.float32
        assert out.shape == (SPEC.d,)
        assert bool(torch.isfinite(out).all())


# ---------------------------------------------------------------------- error feedback


def test_error_feedback_telescopes() -> None:
    spec = ParamSpec(("w", "b"), ((40, 5), (5,)))
    codec = TopK(0.05)
    rows = [random_row(spec, seed) for seed in range(12)]
    residual: Tensor | None = None
    sent = torch.zeros(spec.d, dtype=torch.float64)
    for row in rows:
        before = row.clone()
        frame, decoded, residual = encode_with_feedback(codec, row, spec, residual)
        assert torch.equal(row, before)
        assert torch.equal(decode_frame(frame, spec), decoded)
        sent += decoded.double()
    assert residual is not None
    total = torch.stack(rows).double().sum(0)
    assert torch.allclose(sent + residual.double(), total, atol=1e-5)
    # without feedback the dropped mass is simply lost
    plain = sum(codec.decode(codec.encode(r, spec), spec).double() for r in rows)
    assert float((plain - total).abs().max()) > 1.0


def test_error_feedback_helper_and_checks() -> None:
    spec = ParamSpec.from_sizes({"w": 4})
    row, residual = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.5, 0.0, 0.0, -4.0])
    assert compensate(row, None) is row
    assert compensate(row, residual).tolist() == [1.5, 2.0, 3.0, 0.0]
    assert row.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert residual.tolist() == [0.5, 0.0, 0.0, -4.0]
    with pytest.raises(ValidationError, match="residual is"):
        compensate(row, torch.zeros(3))
    with pytest.raises(ValidationError, match="residual is"):
        compensate(row, torch.zeros(4, dtype=torch.float64))
    frame, decoded, new = ErrorFeedback(QSGD(levels=2)).step(row, spec, residual, generator=gen())
    assert torch.allclose(decoded + new, compensate(row, residual))
    assert torch.equal(decode_frame(frame, spec), decoded)
    with pytest.raises(ValidationError, match="must be a Codec"):
        ErrorFeedback("topk")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- configuration


def test_codec_from_config_maps_the_yaml() -> None:
    assert codec_from_config("topk", topk_ratio=0.25) == TopK(0.25)
    assert codec_from_config("topk", topk_ratio=1) == TopK(1.0)
    assert codec_from_config("quantization", quantization_bits=16) == Float16()
    assert codec_from_config("quantization", quantization_bits=8) == Int8()
    assert codec_from_config("qsgd", qsgd_levels=300) == QSGD(levels=300)
    assert codec_from_config("none") == Float32()
    assert codec_from_config("float32") == Float32()
    # only the setting the strategy uses is checked
    assert codec_from_config("topk", topk_ratio=0.5, quantization_bits=3) == TopK(0.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategy": "zip"}, "compression.strategy must be one of 'none', 'float32', 'topk', "
         "'quantization', 'qsgd'; got 'zip'"),
        ({"strategy": "TopK"}, "compression.strategy must be one of"),
        ({"strategy": "quantization", "quantization_bits": 4},
         "compression.quantization_bits must be one of 8, 16; got 4"),
        ({"strategy": "quantization", "quantization_bits": True}, "quantization_bits"),
        ({"strategy": "quantization", "quantization_bits": 8.0}, "quantization_bits"),
        ({"strategy": "topk", "topk_ratio": 0}, r"compression.topk_ratio must be .* \(0, 1\]"),
        ({"strategy": "topk", "topk_ratio": 2.0}, "compression.topk_ratio"),
        ({"strategy": "qsgd", "qsgd_levels": 0},
         r"compression.qsgd_levels must be an int in \[1, 32767\]; got 0"),
        ({"strategy": "qsgd", "qsgd_levels": 40000}, "compression.qsgd_levels"),
    ],
)  # fmt: skip
def test_codec_from_config_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        codec_from_config(**kwargs)  # type: ignore[arg-type]
