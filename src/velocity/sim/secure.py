"""Secure aggregation (SecAgg+) in the round engine: the server sees only the sum.

The SecAgg+ library (:mod:`velocity.secagg`) is transport-agnostic; this module drives it
across one round of the engine, every message through its bytes, as
:func:`velocity.secagg.secure_sum` does in one call::

    dispatch  SecureAggregationClients.submit    session over the round's n task clients;
                                                 advertise keys -> route -> share keys ->
                                                 route shares (forwarded to each client)
    gather    SecureAggregationClients.collect   each trained delta -> mask_input -> the
                                                 MaskedInput bytes as the update's payload
    admit     SecAggRounds.decode_masked_input   bytes -> the masked words as float32 bits;
                                                 the engine checks the digest of those bits
    stages    SecAggStage ("secagg", pre-stage)  rows -> receive_masked_input; simulated
                                                 dropout after masking; request unmasking ->
                                                 unmask -> finish: the sum, the mean

The three share a :class:`SecAggRounds` registry holding the driver state of the round in
progress (session, server, clients, forwarded shares, byte counts).
:func:`build_secure_aggregation` wires them; :func:`check_compatible` refuses strategies
and attacks that need the individual updates.

Notes
-----
- **Rows that are not numbers.** An admitted update's row holds its masked vector in
  Z_{2^32}, each uint32 word *reinterpreted* as a float32 bit pattern (some look like NaN or
  infinity). The engine only copies rows (bit-exact) and digests them; the ``secagg`` stage
  reads them back as uint32 and zeroes them, so no later stage reads them as numbers.
- **Clipping bias.** Inputs are encoded in fixed point with ``clip`` as the per-coordinate
  range: a coordinate beyond ``[-clip, clip]`` is clipped (a bias towards zero of
  ``|x| - clip`` on that coordinate); inside it the stochastic rounding is unbiased with error
  below ``2^-f`` per client and coordinate (``SecAggParams.error_bound``).
- **The mean is unweighted.** The aggregate is ``sum / count`` over the clients in the sum:
  the server cannot weigh inputs it cannot see, so FedAvg's sample-count weights are not
  applied (clients with equal counts give FedAvg's mean exactly).
- **Failures.** A client that fails before sending its masked input (dropout, deadline, an
  update the engine rejects) is left out of the sum; its pairwise masks are removed through
  its neighbours' shares of its masking key. A client simulated to vanish after masking
  (``dropout_after_masking``) is in the sum; its self mask is removed through shares.
- **No checkpointed secrets.** The stage's state is empty: a round's keys and shares live
  only in memory until the round's stage finishes. A run resumed from a checkpoint starts a
  fresh session at its next round; the session's randomness is derived from ``(seed, round,
  attempt, party)``, so the resumed run is the uninterrupted one (the attempt counts a round
  dispatched again after a failure).
- **One round at a time.** Opening round ``r`` discards every earlier round's state (a round
  the engine skipped never reaches the stage); asynchronous policies that keep tasks of
  several versions in flight are not supported.
- **Simulation only.** Every party's randomness is a :class:`~velocity.secagg.SeededEntropy`
  stream of the run's seed, so whoever knows the seed knows every key: this measures the
  protocol's cost and correctness; it protects nothing.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Final, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from velocity._random import numpy_rng
from velocity._validation import INVALID, Constraint, Integer, NoneOr, Real, check_parameters
from velocity.attacks import Attack, AttackPlan, AttackSpec
from velocity.errors import ConfigurationError, ProtocolError, ValidationError
from velocity.secagg import (
    AdvertiseKeys,
    ForwardedShares,
    MaskedInput,
    Message,
    NeighbourKeys,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    SecAggSession,
    SeededEntropy,
    ServerOutput,
    ShareKeys,
    ThreatModel,
    UnmaskRequest,
    UnmaskResponse,
    derive_parameters,
)
from velocity.strategies import RoundBatch, Strategy, mean_based
from velocity.types import (
    ClientFailure,
    ClientTask,
    ParamSpec,
    Result,
    StageContext,
    StageState,
    UpdateProvider,
    decode_delta,
    tensor_digest,
)

__all__ = [
    "ENCODING",
    "SecAggConfig",
    "SecAggRound",
    "SecAggRounds",
    "SecAggStage",
    "SecureAggregationClients",
    "build_secure_aggregation",
    "check_compatible",
]

ENCODING: Final = "secagg+"
"""The update encoding of a MaskedInput payload (the engine's decoder key)."""
CLIENT_PHASES: Final = ("advertise_keys", "share_keys", "mask_input", "unmask")
SERVER_PHASES: Final = ("keys", "shares", "masked_input", "unmask")
_MODULUS_BITS: Final = 32
_M = TypeVar("_M", bound=Message)
PayloadDecoder = Callable[[bytes, ParamSpec], Tensor]
"""``(payload, spec) -> (d,) float32``: the shape of ``velocity.server.PayloadDecoder``."""


# ---------------------------------------------------------------------- configuration


class _Threat:
    """Constraint: a :class:`~velocity.secagg.ThreatModel`."""

    def describe(self) -> str:
        return "a ThreatModel"

    def convert(self, value: object) -> object:
        return value if isinstance(value, ThreatModel) else INVALID


class _Modulus32:
    """Constraint: 32 (a masked word must fit a float32 row of the engine's stack)."""

    def describe(self) -> str:
        return (
            "32 (the masked words travel through the engine's float32 rows as bit patterns; "
            "64-bit words do not fit)"
        )

    def convert(self, value: object) -> object:
        ok = isinstance(value, int) and not isinstance(value, bool) and value == _MODULUS_BITS
        return value if ok else INVALID


@dataclass(frozen=True, kw_only=True)
class SecAggConfig:
    """Settings of secure aggregation in a simulated federation.

    Parameters
    ----------
    threat : ThreatModel
        The corrupt fraction, dropout rate and failure probabilities the parameters meet.
    clip : float
        ``c``, the per-coordinate range of the fixed-point encoding: a coordinate of an
        update beyond ``[-c, c]`` is clipped (biased towards zero; see the module notes).
    fixed_point_bits : int, optional
        ``f``; ``None`` lets :func:`~velocity.secagg.derive_parameters` pick the largest
        ``f <= 24`` whose sums of n inputs cannot wrap around ``2^32``.
    dropout_after_masking : float
        The simulated fraction, in ``[0, 1)``, of the clients that send their masked input
        and then vanish before the unmasking round (their self masks are removed through
        Shamir shares). Never so many that a neighbourhood falls below the threshold.
    seed : int
        Root of every party's randomness: ``(seed, round, attempt, party)``.
    modulus_bits : int
        Must be 32 (the masked words travel as float32 bit patterns).

    Parameters ``(k, t, f)`` come from :meth:`parameters` for each round's number of
    clients.

    Examples
    --------
    >>> config = SecAggConfig(threat=ThreatModel(0.05, 0.1), clip=1.0, seed=0)
    >>> p = config.parameters(100)
    >>> p.n, p.k, p.t, p.fixed_point_bits, p.modulus_bits
    (100, 52, 29, 24, 32)
    >>> SecAggConfig(threat=ThreatModel(0.05, 0.1), clip=1.0, seed=0, modulus_bits=64)
    Traceback (most recent call last):
        ...
    velocity.errors.ConfigurationError: SecAggConfig.modulus_bits must be 32 (the masked \
words travel through the engine's float32 rows as bit patterns; 64-bit words do not fit); got 64
    """

    threat: ThreatModel
    clip: float
    fixed_point_bits: int | None = None
    dropout_after_masking: float = 0.0
    seed: int
    modulus_bits: int = _MODULUS_BITS

    _constraints: ClassVar[Mapping[str, Constraint]] = {
        "threat": _Threat(),
        "clip": Real(low=0, low_open=True),
        "fixed_point_bits": NoneOr(Integer(0, 62)),
        "dropout_after_masking": Real(low=0, high=1, high_open=True),
        "seed": Integer(),
        "modulus_bits": _Modulus32(),
    }

    def __post_init__(self) -> None:
        check_parameters(self)

    def parameters(self, n: int) -> SecAggParams:
        """The round's parameters for ``n`` clients (:func:`derive_parameters`, cached by n).

        Raises
        ------
        ConfigurationError
            From :func:`derive_parameters`: no ``(k, t)`` meets the threat model for ``n``,
            or ``fixed_point_bits`` is too large for a sum of ``n`` inputs.
        """
        return _parameters(self.threat, self.clip, self.fixed_point_bits, int(n))


@functools.lru_cache(maxsize=64)
def _parameters(threat: ThreatModel, clip: float, bits: int | None, n: int) -> SecAggParams:
    return derive_parameters(
        n, threat, clip=clip, modulus_bits=_MODULUS_BITS, fixed_point_bits=bits
    )


# ---------------------------------------------------------------------- one round


def _as_float_bits(words: NDArray[Any]) -> Tensor:
    """uint32 words as a float32 tensor of the same bit patterns (a new, writable copy)."""
    return torch.from_numpy(np.array(words, dtype="<u4", copy=True).view("<f4"))


class SecAggRound:
    """The driver state of one round: the session, the server, the clients, the wire.

    Every message goes through its bytes (serialised, counted, decoded with the session's
    limits), like :func:`velocity.secagg.secure_sum`. ``sent[i]`` / ``received[i]`` are
    client ``i``'s exact protocol bytes, all phases; ``client_seconds`` / ``server_seconds``
    the compute time per phase.
    """

    def __init__(
        self,
        round_: int,
        attempt: int,
        params: SecAggParams,
        client_ids: Sequence[str],
        dimension: int,
        seed: int,
    ) -> None:
        self.round = round_
        self.attempt = attempt
        self.params = params
        self.seed = seed
        server_entropy = SeededEntropy(seed, "secagg", round_, attempt, "server")
        self.session = SecAggSession.create(params, client_ids, dimension, entropy=server_entropy)
        self.server = SecAggServer(self.session)
        ids = self.session.client_ids
        self.index = {cid: i for i, cid in enumerate(ids)}
        self.clients = [
            SecAggClient(
                self.session,
                i,
                entropy=SeededEntropy(seed, "secagg", round_, attempt, "client", cid),
            )
            for i, cid in enumerate(ids)
        ]
        self.forwarded: dict[int, ForwardedShares] = {}
        self.masked: set[int] = set()
        self.sent = [0] * len(ids)
        self.received = [0] * len(ids)
        self.client_seconds = dict.fromkeys(CLIENT_PHASES, 0.0)
        self.server_seconds = dict.fromkeys(SERVER_PHASES, 0.0)

    def __repr__(self) -> str:
        return f"SecAggRound(round={self.round}, attempt={self.attempt}, n={self.params.n})"

    # -- the wire ----------------------------------------------------------------------------

    def _decode(self, data: bytes, kind: type[_M], what: str) -> _M:
        decoded = self.session.decode(data)
        if not isinstance(decoded, kind):
            raise ProtocolError(f"expected a {kind.__name__} {what}; got {type(decoded).__name__}")
        return decoded

    def up(self, index: int, message: Message, kind: type[_M]) -> _M:
        """Client ``index`` -> server: serialise, count, decode."""
        data = message.to_bytes()
        self.sent[index] += len(data)
        return self._decode(data, kind, f"from {self.session.name(index)}")

    def down(self, index: int, message: Message, kind: type[_M]) -> _M:
        """Server -> client ``index``: serialise, count, decode."""
        data = message.to_bytes()
        self.received[index] += len(data)
        return self._decode(data, kind, f"for {self.session.name(index)}")

    # -- rounds 0 and 1: at dispatch ---------------------------------------------------------

    def share_keys(self) -> None:
        """Key advertisement and key sharing for every client; forwarded shares delivered."""
        cs, ss, server = self.client_seconds, self.server_seconds, self.server
        for i, client in enumerate(self.clients):
            start = time.perf_counter()
            advert = client.advertise_keys()
            cs["advertise_keys"] += time.perf_counter() - start
            message = self.up(i, advert, AdvertiseKeys)
            start = time.perf_counter()
            server.receive_keys(i, message)
            ss["keys"] += time.perf_counter() - start
        start = time.perf_counter()
        keys = server.route_keys()
        ss["keys"] += time.perf_counter() - start
        for i in sorted(keys):
            neighbour_keys = self.down(i, keys[i], NeighbourKeys)
            start = time.perf_counter()
            shares = self.clients[i].share_keys(neighbour_keys)
            cs["share_keys"] += time.perf_counter() - start
            message_s = self.up(i, shares, ShareKeys)
            start = time.perf_counter()
            server.receive_shares(i, message_s)
            ss["shares"] += time.perf_counter() - start
        start = time.perf_counter()
        forwarded = server.route_shares()
        ss["shares"] += time.perf_counter() - start
        self.forwarded = {i: self.down(i, forwarded[i], ForwardedShares) for i in sorted(forwarded)}

    # -- round 2: at collection --------------------------------------------------------------

    def mask(self, client_id: str, delta: Tensor) -> tuple[bytes, NDArray[np.uint32]]:
        """Client ``client_id``'s MaskedInput bytes for ``delta``, and the masked words.

        Raises
        ------
        ProtocolError
            If the client is not in the round's roster, completed no key sharing, or has
            masked already.
        ValidationError
            If ``delta`` is not a finite vector of the round's length (from the library).
        """
        i = self.index.get(client_id)
        if i is None:
            raise ProtocolError(f"{client_id!r} is not a client of round {self.round}'s session")
        shares = self.forwarded.get(i)
        if shares is None:
            raise ProtocolError(f"{self.session.name(i)} completed no key sharing")
        if i in self.masked:
            raise ProtocolError(f"{self.session.name(i)} masked a second input")
        self.masked.add(i)
        start = time.perf_counter()
        message = self.clients[i].mask_input(shares, delta.detach())
        self.client_seconds["mask_input"] += time.perf_counter() - start
        data = message.to_bytes()
        self.sent[i] += len(data)
        words: NDArray[np.uint32] = np.asarray(message.vector, dtype="<u4")
        return data, words

    # -- rounds 2 and 3: in the server stage -------------------------------------------------

    def receive(self, client_id: str, words: NDArray[np.uint32]) -> int:
        """Hand the server ``client_id``'s masked input (its authenticated row); its index."""
        i = self.index.get(client_id)
        if i is None:
            raise ProtocolError(
                f"a row of {client_id!r} reached secure aggregation, but it is not a client of "
                f"round {self.round}'s session"
            )
        start = time.perf_counter()
        self.server.receive_masked_input(i, MaskedInput(i, words))
        self.server_seconds["masked_input"] += time.perf_counter() - start
        return i

    def drop_after_masking(self, survivors: Collection[int], target: int) -> set[int]:
        """Up to ``target`` simulated clients that vanish after masking, taken from
        ``survivors`` in a random order of ``(seed, round, "secagg-drop")``, skipping any
        whose loss would leave a neighbourhood with fewer than ``t`` answering clients."""
        order = sorted(survivors)
        if target <= 0:
            return set()
        graph, t = self.session.graph, self.params.t
        answering = set(order)
        counts = {v: sum(1 for w in graph.neighbours(v) if w in answering) for v in self.forwarded}
        dropped: set[int] = set()
        rng = numpy_rng(self.seed, self.round, "secagg-drop")
        for u in (order[j] for j in rng.permutation(len(order)).tolist()):
            if len(dropped) == target:
                break
            affected = [v for v in graph.neighbours(u) if v in counts]
            if all(counts[v] - 1 >= t for v in affected):
                dropped.add(u)
                for v in affected:
                    counts[v] -= 1
        return dropped

    def unmask(self, after_masking: Collection[int]) -> ServerOutput:
        """Request unmasking, the answers of everyone but ``after_masking``, and the sum."""
        cs, ss, server = self.client_seconds, self.server_seconds, self.server
        start = time.perf_counter()
        requests = server.request_unmasking()
        ss["masked_input"] += time.perf_counter() - start
        gone = set(after_masking)
        for i in sorted(set(requests) - gone):
            request = self.down(i, requests[i], UnmaskRequest)
            start = time.perf_counter()
            response = self.clients[i].unmask(request)
            cs["unmask"] += time.perf_counter() - start
            message = self.up(i, response, UnmaskResponse)
            start = time.perf_counter()
            server.receive_unmask_response(i, message)
            ss["unmask"] += time.perf_counter() - start
        start = time.perf_counter()
        output = server.finish()
        ss["unmask"] += time.perf_counter() - start
        return output


class SecAggRounds:
    """The registry of the round in progress, shared by the provider, decoder and stage.

    It holds at most one round (see the module notes): :meth:`open` discards every other,
    :meth:`close` forgets a finished one.
    """

    def __init__(self) -> None:
        self._rounds: dict[int, SecAggRound] = {}
        self._last: tuple[int, int] | None = None  # (round, attempt) of the latest opening

    def __len__(self) -> int:
        return len(self._rounds)

    def __contains__(self, round_: object) -> bool:
        return round_ in self._rounds

    def open(
        self,
        round_: int,
        params: SecAggParams,
        client_ids: Sequence[str],
        dimension: int,
        seed: int,
    ) -> SecAggRound:
        """A new session for ``round_`` (a new attempt if the round was opened before)."""
        last = self._last
        attempt = last[1] + 1 if last is not None and last[0] == round_ else 0
        self._rounds.clear()
        record = SecAggRound(round_, attempt, params, client_ids, dimension, seed)
        self._rounds[round_] = record
        self._last = (round_, attempt)
        return record

    def get(self, round_: int) -> SecAggRound:
        """The open round ``round_``; a :class:`ProtocolError` if it is not open."""
        record = self._rounds.get(round_)
        if record is None:
            open_ = sorted(self._rounds) or "none"
            raise ProtocolError(
                f"secure aggregation has no open session for round {round_} (open: {open_})"
            )
        return record

    def current(self) -> SecAggRound:
        """The open round (the one the engine is admitting updates for)."""
        if not self._rounds:
            raise ProtocolError("secure aggregation has no open session")
        return next(iter(self._rounds.values()))

    def close(self, round_: int) -> None:
        """Forget ``round_``'s keys, shares and clients."""
        self._rounds.pop(round_, None)

    def clear(self) -> None:
        self._rounds.clear()

    def decode_masked_input(self, payload: bytes, spec: ParamSpec) -> Tensor:
        """The engine's decoder of :data:`ENCODING`: MaskedInput bytes -> ``(d,)`` float32.

        The bytes are decoded with the open session's limits (tag, sender index ``< n``,
        length ``== d``, exact size) and the sender must have completed key sharing. The
        result holds the masked uint32 words *as float32 bit patterns*: not numbers, only
        the ``secagg`` stage reads them (as uint32). The engine then checks the update's
        digest against these bits.

        Raises
        ------
        ProtocolError
            If no round is open, or the bytes are not a valid MaskedInput of it.
        ValidationError
            If ``spec.d`` is not the session's dimension.
        """
        record = self.current()
        d = record.session.dimension
        if spec.d != d:
            raise ValidationError(f"secure aggregation's session has d={d}; the spec has {spec.d}")
        message = record.session.decode(payload)
        if not isinstance(message, MaskedInput):
            raise ProtocolError(f"expected a MaskedInput; got {type(message).__name__}")
        if message.sender not in record.forwarded:
            raise ProtocolError(
                f"a MaskedInput names index {message.sender}, which completed no key sharing"
            )
        return _as_float_bits(message.vector)


# ---------------------------------------------------------------------- the provider


class SecureAggregationClients(UpdateProvider):
    """``inner``'s clients, each sending its update masked by SecAgg+ (see the module doc).

    ``submit`` starts the round's session over all its task clients (``n = len(tasks) >=
    2``) and runs key advertisement and key sharing; the tasks reach ``inner`` without their
    ``out`` rows, so the engine's stack never holds a plain delta. ``collect`` turns each
    update into its MaskedInput payload (encoding :data:`ENCODING`, digest of the masked
    words as float32 bits); failures pass through (those clients dropped before masking),
    and an update that cannot be masked (a non-finite delta) becomes an ``error`` failure.
    """

    name: ClassVar[str] = "secagg"

    def __init__(
        self,
        inner: UpdateProvider,
        config: SecAggConfig,
        rounds: SecAggRounds | None = None,
    ) -> None:
        if not isinstance(config, SecAggConfig):
            raise ConfigurationError(f"secure aggregation needs a SecAggConfig; got {config!r}")
        self.inner = inner
        self.config = config
        self.rounds = SecAggRounds() if rounds is None else rounds

    def submit(self, tasks: Sequence[ClientTask]) -> None:
        tasks = list(tasks)
        if not tasks:
            self.inner.submit(tasks)
            return
        rounds = sorted({t.round for t in tasks})
        if len(rounds) != 1:
            raise ConfigurationError(
                f"secure aggregation runs one session per round; got tasks of rounds {rounds}"
            )
        round_, n = rounds[0], len(tasks)
        if n < 2:
            raise ConfigurationError(
                f"secure aggregation needs at least 2 clients per round; round {round_} has "
                f"{n} (raise client_fraction or min_clients)"
            )
        ids = sorted(t.client_id for t in tasks)
        params = self.config.parameters(n)
        record = self.rounds.open(
            round_, params, ids, int(tasks[0].params.shape[0]), self.config.seed
        )
        record.share_keys()
        self.inner.submit([replace(t, out=None) if t.out is not None else t for t in tasks])

    def collect(
        self, *, until: float | None = None, max_results: int | None = None
    ) -> list[Result]:
        return [self._mask(r) for r in self.inner.collect(until=until, max_results=max_results)]

    def _mask(self, result: Result) -> Result:
        if isinstance(result, ClientFailure):
            return result

        def fail(message: str) -> ClientFailure:
            return ClientFailure(
                result.client_id, "error", message, round=result.round, arrived_at=result.arrived_at
            )

        if result.round not in self.rounds:
            return fail(f"no secure-aggregation session is open for round {result.round}")
        record = self.rounds.get(result.round)
        update = result
        if update.delta is None:
            if update.encoding != "velocity-frame":
                return fail(
                    f"secure aggregation masks plain deltas; got a {update.encoding!r} payload"
                )
            update = decode_delta(update, d=record.session.dimension)
        assert update.delta is not None
        try:
            data, words = record.mask(update.client_id, update.delta)
        except ValidationError as exc:
            return fail(f"its update cannot be masked: {exc}")
        return replace(
            update,
            delta=None,
            payload=data,
            encoding=ENCODING,
            digest=tensor_digest(torch.from_numpy(words.view("<f4"))),
        )

    def cancel(self, client_ids: Collection[str]) -> None:
        self.inner.cancel(client_ids)

    def close(self) -> None:
        self.rounds.clear()
        self.inner.close()


# ---------------------------------------------------------------------- the server stage


@dataclass(frozen=True, eq=False)
class SecAggStage:
    """Server pre-stage ``secagg``: the rows' masked inputs -> the sum, the mean.

    A *sum-only* stage (:class:`velocity.strategies.AggregateStage` then skips the rule).
    Each row (client ``batch.client_ids[j]``, as the transport authenticated it) is that
    client's masked input; the simulated ``dropout_after_masking`` clients then vanish; the
    others answer the unmasking request; :meth:`SecAggServer.finish` gives the sum of every
    client that sent a masked input. The stage sets ``notes["sum"]`` (float32 ``(d,)``),
    ``notes["secagg_count"]``, ``notes["aggregated_by"] = "secagg"``, ``update = sum /
    count`` (float32), and zeroes the rows (masked bits, not numbers). Its state is empty.

    Metrics: ``n``, ``k``, ``t``, ``fixed_point_bits``, ``clip``, ``included``,
    ``dropped_before_masking``, ``dropped_after_masking`` (and its ``_target``),
    ``bytes_up_total`` / ``bytes_up_mean`` / ``bytes_down_total`` / ``bytes_down_mean`` (per
    client of the session, every phase), ``error_bound`` (of the sum, per coordinate),
    ``privacy_failure``, ``correctness_failure``, ``client_seconds``, ``server_seconds``.

    Raises
    ------
    ProtocolError, SecurityError
        As the library raises them (fewer than ``t`` neighbours of a client answered, ...):
        the round fails and the model stays.
    """

    config: SecAggConfig
    rounds: SecAggRounds

    @property
    def name(self) -> str:
        return "secagg"

    def init(self, spec: ParamSpec) -> StageState:
        return {}

    def apply(
        self, x: RoundBatch, state: StageState, ctx: StageContext
    ) -> tuple[RoundBatch, StageState, Mapping[str, Any]]:
        record = self.rounds.get(ctx.round)
        d = record.session.dimension
        rows = x.rows
        if x.update is not None:
            by = x.notes.get("aggregated_by", "a pre-stage")
            raise ConfigurationError(
                f"secure aggregation must be the first stage to aggregate; {by} already did"
            )
        if rows.dtype != torch.float32 or rows.ndim != 2 or rows.shape[1] != d:
            raise ValidationError(
                f"secure aggregation reads (m, {d}) float32 rows; got {rows.dtype} "
                f"{tuple(rows.shape)}"
            )
        words = rows.detach().cpu().contiguous().numpy().view("<u4")
        survivors = [record.receive(cid, words[j]) for j, cid in enumerate(x.client_ids)]
        target = math.floor(self.config.dropout_after_masking * len(survivors) + 0.5)
        after = record.drop_after_masking(survivors, target)
        output = record.unmask(after)
        self.rounds.close(ctx.round)
        count = len(output.included)
        total = torch.from_numpy(np.asarray(output.total, dtype=np.float64))
        x.notes["sum"] = total.to(torch.float32)
        x.notes["secagg_count"] = count
        x.notes["aggregated_by"] = "secagg"
        x.update = (total / count).to(torch.float32)
        rows.zero_()
        params, n = record.params, record.params.n
        up, down = sum(record.sent), sum(record.received)
        metrics: dict[str, Any] = {
            "n": n,
            "k": params.k,
            "t": params.t,
            "fixed_point_bits": params.fixed_point_bits,
            "clip": params.clip,
            "included": count,
            "dropped_before_masking": len(output.dropped),
            "dropped_after_masking": len(after),
            "dropped_after_masking_target": target,
            "bytes_up_total": up,
            "bytes_up_mean": up / n,
            "bytes_down_total": down,
            "bytes_down_mean": down / n,
            "error_bound": params.error_bound(count),
            "privacy_failure": params.privacy_failure,
            "correctness_failure": params.correctness_failure,
            "client_seconds": sum(record.client_seconds.values()),
            "server_seconds": sum(record.server_seconds.values()),
        }
        return x, state, metrics


# ---------------------------------------------------------------------- wiring


def build_secure_aggregation(
    config: SecAggConfig, inner: UpdateProvider
) -> tuple[SecureAggregationClients, SecAggStage, dict[str, PayloadDecoder]]:
    """The provider around ``inner``, the ``secagg`` pre-stage and the engine's decoders,
    sharing one :class:`SecAggRounds`. Check the strategy with :func:`check_compatible`.

    >>> from velocity.sim import QuadraticClients
    >>> config = SecAggConfig(threat=ThreatModel(0.0, 0.1), clip=4.0, seed=0)
    >>> provider, stage, decoders = build_secure_aggregation(config, QuadraticClients(3, seed=0))
    >>> stage.name, sorted(decoders), provider.rounds is stage.rounds
    ('secagg', ['secagg+'], True)
    """
    rounds = SecAggRounds()
    provider = SecureAggregationClients(inner, config, rounds)
    stage = SecAggStage(config, rounds)
    return provider, stage, {ENCODING: rounds.decode_masked_input}


def _strategy_problem(strategy: Strategy) -> str | None:
    if mean_based(strategy):
        return None
    aggregator = strategy.aggregator
    rule = type(aggregator).__name__
    pre = [type(p).__name__ for p in strategy.pre_aggregators]
    if pre:
        why = f"its pre-aggregators {pre} transform the individual rows"
    elif getattr(aggregator, "needs_losses", False):
        why = f"{rule} weighs each row by its client's loss"
    elif (policy := getattr(aggregator, "nonfinite", "drop")) != "drop":
        why = f"{rule}(nonfinite={policy!r}) inspects every row"
    else:
        why = f"{rule} selects, trims or weighs the individual rows"
    return (
        f"strategy {strategy!r}: secure aggregation shows the server only the sum of the "
        f"updates, but {why}; use a plain mean (FedAvg or FedProx, with FedAvgM, FedAdam, "
        "FedYogi or FedAdagrad as server optimizer, no pre-aggregators)"
    )


def check_compatible(
    strategy: Strategy, attacks: Iterable[AttackSpec | Attack] | AttackPlan = ()
) -> None:
    """Refuse what needs the individual updates under secure aggregation.

    ``strategy`` must be a plain mean (:func:`velocity.strategies.mean_based`: FedAvg or
    FedProx, any server optimizer, no pre-aggregators); every attack must be a data attack
    (an update attack crafts its rows on the server side, which sees only the sum).

    Raises
    ------
    ConfigurationError
        Naming every problem at once.

    Examples
    --------
    >>> from velocity.strategies import FedAdam, FedAvg, Krum, Pipeline
    >>> check_compatible(Pipeline(FedAvg(), FedAdam()))
    >>> check_compatible(Krum(f=1))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    velocity.errors.ConfigurationError: strategy Krum(...): secure aggregation shows the server \
only the sum of the updates, but Krum selects, trims or weighs the individual rows; ...
    """
    problems: list[str] = []
    found = _strategy_problem(strategy)
    if found is not None:
        problems.append(found)
    specs = attacks.specs if isinstance(attacks, AttackPlan) else list(attacks)
    for item in specs:
        attack = item.attack if isinstance(item, AttackSpec) else item
        if attack.kind != "data":
            problems.append(
                f"attack {attack.name}: it crafts its clients' updates from the rows the server "
                "sees, but secure aggregation shows the server only the sum; only data attacks "
                "(label_flipping, label_flip, backdoor) run under secure aggregation"
            )
    if problems:
        raise ConfigurationError("; ".join(problems))
