"""Secure aggregation in the round engine (``velocity.sim.secure``): the aggregate is the
plain mean, the server's rows are one-time-padded, failures and tampering are handled, the
incompatible rules and attacks are refused, and runs are reproducible."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from velocity.attacks import AttackSpec, LabelFlipping, SignFlip
from velocity.errors import ConfigurationError, ProtocolError
from velocity.secagg import (
    SecAggClient,
    ThreatModel,
    UnmaskRequest,
    UnmaskResponse,
    encode_fixed_point,
    no_dropout_traffic,
)
from velocity.server import RoundEngine, build_engine
from velocity.sim import FractionSampler, QuadraticClients, SimulationSettings
from velocity.sim.secure import (
    ENCODING,
    SecAggConfig,
    SecAggStage,
    SecureAggregationClients,
    build_secure_aggregation,
    check_compatible,
)
from velocity.strategies import (
    Clip,
    FedAdam,
    FedAvg,
    Krum,
    Pipeline,
    QFedAvg,
    RoundBatch,
    TrimmedMean,
)
from velocity.types import (
    ClientFailure,
    ClientTask,
    ClientUpdate,
    ParamSpec,
    Result,
    StageContext,
    StageState,
    UpdateProvider,
)

THREAT = ThreatModel(corrupt_fraction=0.05, dropout_rate=0.1)
SMALL = ThreatModel(corrupt_fraction=0.0, dropout_rate=0.1, correctness_bits=5)
CLIP = 8.0  # the quadratic clients' deltas stay well inside [-8, 8]

# ---------------------------------------------------------------------- helpers


class _Plain(UpdateProvider):
    """Between the clients and the masking: remembers every plain delta (the test's oracle)."""

    def __init__(self, inner: UpdateProvider) -> None:
        self.inner = inner
        self.deltas: dict[tuple[int, str], Tensor] = {}

    def submit(self, tasks: Sequence[ClientTask]) -> None:
        self.inner.submit(tasks)

    def collect(
        self, *, until: float | None = None, max_results: int | None = None
    ) -> list[Result]:
        out = self.inner.collect(until=until, max_results=max_results)
        for r in out:
            if isinstance(r, ClientUpdate) and r.delta is not None:
                self.deltas[(r.round, r.client_id)] = r.delta.detach().double().clone()
        return out

    def cancel(self, client_ids: Collection[str]) -> None:
        self.inner.cancel(client_ids)

    def mean(self, round_: int, ids: Sequence[str]) -> Tensor:
        return torch.stack([self.deltas[(round_, c)] for c in ids]).mean(0)


class _Wire(UpdateProvider):
    """Between the masking and the engine: records (and optionally alters) the payloads."""

    def __init__(
        self,
        inner: UpdateProvider,
        tamper: Callable[[ClientUpdate], ClientUpdate] | None = None,
    ) -> None:
        self.inner = inner
        self.tamper = tamper
        self.payloads: dict[str, bytes] = {}

    def submit(self, tasks: Sequence[ClientTask]) -> None:
        self.inner.submit(tasks)

    def collect(
        self, *, until: float | None = None, max_results: int | None = None
    ) -> list[Result]:
        out: list[Result] = []
        for r in self.inner.collect(until=until, max_results=max_results):
            if isinstance(r, ClientUpdate):
                assert r.payload is not None
                assert r.delta is None
                if self.tamper is not None:
                    r = self.tamper(r)
                assert r.payload is not None
                self.payloads[r.client_id] = r.payload
            out.append(r)
        return out

    def cancel(self, client_ids: Collection[str]) -> None:
        self.inner.cancel(client_ids)


@dataclass(eq=False)
class _Spy:
    """A server stage that copies what it sees (before or after the secagg stage)."""

    label: str
    rows: list[Tensor] = field(default_factory=list)
    ids: list[list[str]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.label

    def init(self, spec: ParamSpec) -> StageState:
        return {}

    def apply(
        self, x: RoundBatch, state: StageState, ctx: StageContext
    ) -> tuple[RoundBatch, StageState, Mapping[str, Any]]:
        self.rows.append(x.rows.clone())
        self.ids.append(list(x.client_ids))
        self.notes.append(dict(x.notes))
        return x, state, {}


@dataclass(eq=False)
class _Federation:
    engine: RoundEngine
    config: SecAggConfig
    plain: _Plain
    wire: _Wire
    before: _Spy
    after: _Spy

    @property
    def provider(self) -> SecureAggregationClients:
        inner = self.wire.inner
        assert isinstance(inner, SecureAggregationClients)
        return inner


def _federation(
    *,
    n: int = 100,
    d: int = 1000,
    threat: ThreatModel = THREAT,
    dropout: float = 0.0,
    after: float = 0.0,
    seed: int = 0,
    secagg_seed: int = 1,
    strategy: Any = None,
    tamper: Callable[[ClientUpdate], ClientUpdate] | None = None,
) -> _Federation:
    spec = ParamSpec.from_sizes({"w": d})
    base = QuadraticClients(d, seed=seed, num_clients=n, dropout_rate=dropout)
    plain = _Plain(base)
    config = SecAggConfig(threat=threat, clip=CLIP, dropout_after_masking=after, seed=secagg_seed)
    provider, stage, decoders = build_secure_aggregation(config, plain)
    wire = _Wire(provider, tamper)
    before, post = _Spy("rows_in"), _Spy("rows_out")
    engine = RoundEngine(
        provider=wire,
        sampler=FractionSampler(base.population, seed=seed),
        spec=spec,
        init_params=torch.zeros(d),
        strategy=strategy or FedAvg(),
        seed=seed,
        pre_stages=[before, stage],
        post_stages=[post],
        decoders=decoders,
    )
    return _Federation(engine, config, plain, wire, before, post)


def _assert_mean(fed: _Federation, round_: int, ids: Sequence[str]) -> None:
    """The engine's aggregate is the plain mean of ``ids``' deltas within the fixed-point
    bound: ``|sum - exact| < m 2^-f`` (stochastic rounding), then float32 rounding."""
    m = len(ids)
    params = fed.config.parameters(len(fed.engine.results[-1].selected_client_ids))
    exact = fed.plain.mean(round_, ids)
    got = fed.engine.last_aggregate
    assert got is not None
    assert got.dtype == torch.float32
    err = (got.double() - exact).abs()
    allowed = params.error_bound(m) / m + 2.0**-23 * exact.abs()
    assert bool((err <= allowed).all()), float((err - allowed).max())


def _words(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy().view(np.uint32)


# ---------------------------------------------------------------------- correctness


def _check_hundred_clients(d: int, monkeypatch: pytest.MonkeyPatch) -> None:
    answered: list[int] = []
    unmask = SecAggClient.unmask

    def spy(self: SecAggClient, message: UnmaskRequest) -> UnmaskResponse:
        answered.append(self.index)
        return unmask(self, message)

    monkeypatch.setattr(SecAggClient, "unmask", spy)
    fed = _federation(n=100, d=d, after=0.1)
    result = fed.engine.run_round()
    assert len(answered) == 90  # the 10 that vanished after masking never answer
    metrics = result.stages["secagg"]
    assert len(result.participated) == 100
    assert metrics["n"] == 100
    assert metrics["included"] == 100
    assert metrics["dropped_after_masking"] == 10
    assert metrics["dropped_before_masking"] == 0
    assert (metrics["k"], metrics["t"]) == (fed.config.parameters(100).k, 29)
    assert result.aggregation["aggregated_by"] == "secagg"
    _assert_mean(fed, 1, list(result.participated))
    (notes,) = fed.after.notes
    assert notes["secagg_count"] == 100
    assert notes["sum"].dtype == torch.float32
    assert notes["sum"].shape == (d,)
    # every client's protocol bytes, every phase: at least the masked input (9 + 4d) up
    assert metrics["bytes_up_mean"] > 4 * d
    assert metrics["bytes_down_mean"] > 0
    assert result.bytes_up == 100 * (9 + 4 * d)  # the engine counts the payloads
    assert len(fed.provider.rounds) == 0  # the round's secrets are forgotten


def test_aggregate_is_the_plain_mean_with_10_percent_dropping_after_masking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _check_hundred_clients(1000, monkeypatch)


@pytest.mark.slow
def test_aggregate_is_the_plain_mean_at_d_1e5(monkeypatch: pytest.MonkeyPatch) -> None:
    _check_hundred_clients(100_000, monkeypatch)


def test_clients_failing_before_masking_are_left_out_and_recovered() -> None:
    fed = _federation(n=30, d=200, threat=SMALL, dropout=0.2, after=0.1)
    result = fed.engine.run_round()
    dropped = {f.client_id for f in result.failures if f.reason == "dropped"}
    assert dropped  # seed 0 drops some of the 30
    survivors = [c for c in result.selected_client_ids if c not in dropped]
    assert sorted(result.participated) == sorted(survivors)
    metrics = result.stages["secagg"]
    assert metrics["included"] == len(survivors)
    assert metrics["dropped_before_masking"] == len(dropped)
    assert metrics["dropped_after_masking"] >= 1
    (notes,) = fed.after.notes
    params = fed.config.parameters(30)
    exact = torch.stack([fed.plain.deltas[(1, c)] for c in survivors]).sum(0)
    err = (notes["sum"].double() - exact).abs()
    assert bool((err <= params.error_bound(len(survivors)) + 2.0**-22 * exact.abs()).all())
    _assert_mean(fed, 1, survivors)


# ---------------------------------------------------------------------- the server's view


def test_rows_carry_the_masked_words_bit_exactly_then_are_zeroed() -> None:
    fed = _federation(n=40, d=1000, threat=SMALL)
    result = fed.engine.run_round()
    # nobody dropped: every client's bytes, every phase, are the library's formula
    metrics = result.stages["secagg"]
    up, down = no_dropout_traffic(metrics["k"], 1000, 32)
    assert (metrics["bytes_up_mean"], metrics["bytes_down_mean"]) == (up, down)
    (rows,), (ids,) = fed.before.rows, fed.before.ids
    nan_like = 0
    for j, cid in enumerate(ids):
        sent = np.frombuffer(fed.wire.payloads[cid][9:], dtype="<u4")
        assert np.array_equal(_words(rows[j]), sent), cid
        nan_like += int(torch.isnan(rows[j]).sum())
    # uniform words: about 2^-8 of them are NaN patterns (quiet and signalling), all kept
    assert nan_like > 40 * 1000 / 512
    (after,) = fed.after.rows
    assert bool((after == 0).all())


@dataclass(eq=False)
class _Fixed(UpdateProvider):
    """Clients whose deltas are given."""

    deltas: Mapping[str, Tensor]
    tasks: list[ClientTask] = field(default_factory=list)

    def submit(self, tasks: Sequence[ClientTask]) -> None:
        self.tasks.extend(tasks)

    def collect(
        self, *, until: float | None = None, max_results: int | None = None
    ) -> list[Result]:
        out: list[Result] = [
            ClientUpdate(
                t.client_id, 1, self.deltas[t.client_id].clone(), round=t.round, base_version=0
            ).with_digest()
            for t in self.tasks
        ]
        self.tasks = []
        return out


def _masked_row(deltas: Mapping[str, Tensor], target: str, seed: int = 3) -> np.ndarray:
    """The row the server holds for ``target`` (through the engine's decoder)."""
    d = next(iter(deltas.values())).shape[0]
    config = SecAggConfig(threat=ThreatModel(0.0, 0.0), clip=1.0, seed=seed)
    provider, _, decoders = build_secure_aggregation(config, _Fixed(deltas))
    provider.submit(
        [ClientTask(c, round=1, version=0, params=torch.zeros(d)) for c in sorted(deltas)]
    )
    (update,) = [r for r in provider.collect() if r.client_id == target]
    assert isinstance(update, ClientUpdate)
    assert update.encoding == ENCODING
    assert update.payload is not None
    return _words(decoders[ENCODING](update.payload, ParamSpec.from_sizes({"w": d})))


def _chi_square_top_byte(words: np.ndarray) -> float:
    counts = np.bincount((words >> 24).astype(np.int64), minlength=256)
    expected = words.size / 256
    return float(((counts - expected) ** 2 / expected).sum())


CHI2_255_P1E6 = 377.08  # scipy.stats.chi2.ppf(1 - 1e-6, 255)


def test_the_masked_row_is_uniform_whatever_the_input() -> None:
    d = 100_000
    gen = torch.Generator().manual_seed(0)
    others = {f"c{i}": torch.rand(d, generator=gen) * 2 - 1 for i in range(1, 5)}
    for x in (torch.zeros(d), torch.full((d,), 0.75)):
        row = _masked_row({"c0": x, **others}, "c0")
        assert _chi_square_top_byte(row) < CHI2_255_P1E6
    # the test bites: the unmasked encoding of the constant input is far from uniform
    plain = encode_fixed_point(
        np.full(d, 0.75), clip=1.0, fixed_point_bits=24, modulus_bits=32, rounding="nearest"
    )
    assert _chi_square_top_byte(plain) > 100 * CHI2_255_P1E6


def test_the_mask_is_a_one_time_pad_independent_of_the_input() -> None:
    """Same seeds, two inputs on the fixed-point grid (so rounding is exact): the masked
    rows differ by exactly enc(x) - enc(x') mod 2^32 — one fixed mask added to either."""
    d, f = 4096, 24
    gen = torch.Generator().manual_seed(1)
    others = {f"c{i}": torch.rand(d, generator=gen) * 2 - 1 for i in range(1, 5)}
    q = torch.randint(-(2**f), 2**f + 1, (d,), generator=gen)
    x = (q.double() / 2**f).float()  # exact in float32
    y1 = _masked_row({"c0": x, **others}, "c0")
    y2 = _masked_row({"c0": -x, **others}, "c0")
    enc = (2 * q).numpy().astype(np.int64).view(np.uint64).astype(np.uint32)  # q - (-q)
    assert np.array_equal(y1 - y2, enc)
    assert not np.array_equal(y1, q.numpy().astype(np.int64).view(np.uint64).astype(np.uint32))
    # another seed, another pad
    assert not np.array_equal(y1, _masked_row({"c0": x, **others}, "c0", seed=4))


def test_a_non_finite_update_is_a_client_error_not_a_masked_row() -> None:
    d = 8
    deltas = {f"c{i}": torch.full((d,), 0.1 * i) for i in range(4)}
    deltas["c2"] = torch.full((d,), float("nan"))
    config = SecAggConfig(threat=ThreatModel(0.0, 0.0), clip=1.0, seed=0)
    provider, _, _ = build_secure_aggregation(config, _Fixed(deltas))
    provider.submit([ClientTask(c, round=1, version=0, params=torch.zeros(d)) for c in deltas])
    results = {r.client_id: r for r in provider.collect()}
    failure = results["c2"]
    assert isinstance(failure, ClientFailure)
    assert failure.reason == "error"
    assert "cannot be masked" in failure.message
    assert all(isinstance(results[c], ClientUpdate) for c in ("c0", "c1", "c3"))


# ---------------------------------------------------------------------- tampering


def _flip(cid: str, offset: int) -> Callable[[ClientUpdate], ClientUpdate]:
    def tamper(update: ClientUpdate) -> ClientUpdate:
        if update.client_id != cid or update.payload is None:
            return update
        data = bytearray(update.payload)
        data[offset] ^= 0xFF
        return replace(update, payload=bytes(data))

    return tamper


def _truncate(cid: str) -> Callable[[ClientUpdate], ClientUpdate]:
    def tamper(update: ClientUpdate) -> ClientUpdate:
        if update.client_id != cid or update.payload is None:
            return update
        return replace(update, payload=update.payload[:-1])

    return tamper


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (_flip("client-03", 9 + 4 * 17), "digest mismatch"),  # a masked word
        (_flip("client-03", 0), "undecodable: unknown SecAgg message tag"),
        (_flip("client-03", 1), "undecodable"),  # the sender index, now >= n
        (_truncate("client-03"), "undecodable"),
    ],
    ids=["word", "tag", "sender", "truncated"],
)
def test_a_tampered_payload_is_rejected_and_the_round_completes(
    tamper: Callable[[ClientUpdate], ClientUpdate], expected: str
) -> None:
    fed = _federation(n=20, d=64, threat=SMALL, tamper=tamper)
    result = fed.engine.run_round()
    (rejected,) = [f for f in result.failures if f.reason == "rejected"]
    assert rejected.client_id == "client-03"
    assert expected in rejected.message
    others = [c for c in result.selected_client_ids if c != "client-03"]
    assert sorted(result.participated) == sorted(others)
    metrics = result.stages["secagg"]
    assert metrics["dropped_before_masking"] == 1
    assert metrics["included"] == 19
    _assert_mean(fed, 1, others)


def test_too_many_rejections_fail_the_round_with_the_protocol_error() -> None:
    victims = {"client-0", "client-1"}
    active = [True]

    def tamper(update: ClientUpdate) -> ClientUpdate:
        if active[0] and update.client_id in victims and update.payload is not None:
            return replace(update, payload=update.payload[:-1])
        return update

    # 4 clients on a cycle with t = k = 2: two of them missing leaves a survivor with fewer
    # than t surviving neighbours, and it refuses to unmask
    fed = _federation(n=4, d=16, threat=ThreatModel(0.0, 0.0), tamper=tamper)
    with pytest.raises(ProtocolError, match=r"threshold is t=2"):
        fed.engine.run_round()
    assert fed.engine.round == 0
    assert bool((fed.engine.global_params == 0).all())
    active[0] = False  # the same round again, a fresh session (the next attempt)
    result = fed.engine.run_round()
    assert result.round == 1
    assert len(result.participated) == 4
    _assert_mean(fed, 1, list(result.participated))


# ---------------------------------------------------------------------- compatibility


@pytest.mark.parametrize(
    ("strategy", "attacks", "expected"),
    [
        (Krum(f=1), (), r"Krum selects, trims or weighs the individual rows"),
        (TrimmedMean(k=1), (), r"TrimmedMean selects, trims or weighs"),
        (Pipeline(Clip(2.0), FedAvg()), (), r"pre-aggregators \['Clip'\] transform"),
        (QFedAvg(), (), r"QFedAvg weighs each row by its client's loss"),
        (FedAvg(), [AttackSpec(SignFlip(), fraction=0.1)], r"attack sign_flip: it crafts"),
    ],
    ids=["krum", "trimmed_mean", "pipeline", "qfedavg", "crafting_attack"],
)
def test_check_compatible_refuses_what_needs_the_rows(
    strategy: Any, attacks: Any, expected: str
) -> None:
    with pytest.raises(ConfigurationError, match=expected) as info:
        check_compatible(strategy, attacks)
    assert "secure aggregation shows the server only the sum" in str(info.value)


def test_check_compatible_accepts_plain_means_and_data_attacks() -> None:
    check_compatible(FedAvg())
    check_compatible(Pipeline(FedAvg(), FedAdam()))
    check_compatible(FedAvg(), [AttackSpec(LabelFlipping(), fraction=0.2)])


def test_check_compatible_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_compatible(Krum(f=1), [AttackSpec(SignFlip(), fraction=0.1)])
    assert "Krum" in str(info.value)
    assert "sign_flip" in str(info.value)


# ---------------------------------------------------------------------- settings


def test_config_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="modulus_bits must be 32"):
        SecAggConfig(threat=THREAT, clip=1.0, seed=0, modulus_bits=64)
    with pytest.raises(ConfigurationError, match="clip must be a finite float > 0"):
        SecAggConfig(threat=THREAT, clip=0.0, seed=0)
    with pytest.raises(ConfigurationError, match="dropout_after_masking"):
        SecAggConfig(threat=THREAT, clip=1.0, seed=0, dropout_after_masking=1.0)
    config = SecAggConfig(threat=THREAT, clip=1, seed=0)
    assert config.clip == 1.0
    assert config.parameters(100) is config.parameters(100)
    with pytest.raises(ConfigurationError, match="no graph degree"):
        config.parameters(5)  # the threat model cannot be met by 5 clients


def test_a_round_needs_two_clients() -> None:
    config = SecAggConfig(threat=ThreatModel(0.0, 0.0), clip=1.0, seed=0)
    provider, _, _ = build_secure_aggregation(config, _Fixed({"a": torch.zeros(2)}))
    with pytest.raises(ConfigurationError, match="at least 2 clients per round; round 1 has 1"):
        provider.submit([ClientTask("a", round=1, version=0, params=torch.zeros(2))])


def test_the_stage_refuses_a_round_without_a_session() -> None:
    config = SecAggConfig(threat=ThreatModel(0.0, 0.0), clip=1.0, seed=0)
    _, stage, _ = build_secure_aggregation(config, _Fixed({}))
    spec = ParamSpec.from_sizes({"w": 2})
    batch = RoundBatch(rows=torch.zeros(1, 2), num_samples=[1], client_ids=["a"])
    ctx = StageContext(0, 1, 0, spec, torch.zeros(2))
    assert isinstance(stage, SecAggStage)
    assert stage.init(spec) == {}
    with pytest.raises(ProtocolError, match="no open session for round 1"):
        stage.apply(batch, {}, ctx)


# ---------------------------------------------------------------------- determinism, wiring


def test_same_seeds_give_a_bit_identical_model_over_three_rounds() -> None:
    def run(secagg_seed: int) -> Tensor:
        fed = _federation(n=12, d=50, threat=SMALL, dropout=0.1, after=0.2, secagg_seed=secagg_seed)
        fed.engine.run(3)
        return fed.engine.global_params

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # other keys, other stochastic rounding
    torch.testing.assert_close(a, c, atol=1e-4, rtol=0)


def test_build_engine_wires_secure_aggregation_behind_the_loopback_backend() -> None:
    d, n = 20, 12
    spec = ParamSpec.from_sizes({"w": d})

    def make(secure: SecAggConfig | None) -> RoundEngine:
        return build_engine(
            base=QuadraticClients(d, seed=0, num_clients=n),
            spec=spec,
            init_params=torch.zeros(d),
            strategy=FedAvg(),
            settings=SimulationSettings(seed=0),
            backend="loopback",
            secure=secure,
        )

    config = SecAggConfig(threat=SMALL, clip=CLIP, seed=5)
    masked, plain = make(config), make(None)
    for _ in range(2):
        result = masked.run_round()
        plain.run_round()
        assert result.stages["secagg"]["included"] == n
    bound = config.parameters(n).error_bound(n) / n
    torch.testing.assert_close(masked.global_params, plain.global_params, atol=4 * bound, rtol=1e-6)
