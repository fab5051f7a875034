"""The SecAgg+ engine end to end: correctness, dropouts, privacy of the server's view,
attacks the clients refuse, and the exact wire sizes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

import velocity.secagg as secagg
from velocity.errors import ConfigurationError, ProtocolError, SecurityError, ValidationError
from velocity.secagg import (
    ForwardedShares,
    MaskedInput,
    MessageType,
    NeighbourKeys,
    PeerKeys,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    SecAggSession,
    SeededEntropy,
    ShareKeys,
    ThreatModel,
    UnmaskRequest,
    decode_message,
    derive_parameters,
    no_dropout_traffic,
    secure_sum,
)


def _inputs(n: int, d: int, seed: int = 0, clip: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"c{i:03d}": rng.uniform(-clip, clip, d).astype(np.float32) for i in range(n)}


def _plain_sum(inputs: dict[str, np.ndarray], ids: tuple[str, ...]) -> np.ndarray:
    return np.sum([inputs[c].astype(np.float64) for c in ids], axis=0)


# -- correctness ---------------------------------------------------------------------------------


def test_100_clients_with_dropouts_before_and_after_masking() -> None:
    params = derive_parameters(100, ThreatModel(corrupt_fraction=0.05, dropout_rate=0.1))
    assert not params.complete_graph
    inputs = _inputs(100, 300)
    ids = sorted(inputs)
    after = ids[10:20]  # 10% drop after sending their masked input
    before = ids[50:53]
    result = secure_sum(
        inputs, params, seed=11, drop_before_masking=before, drop_after_masking=after
    )
    assert set(result.dropped) == set(before)
    assert set(after) <= set(result.included)
    assert len(result.included) == 97
    err = np.abs(result.sum - _plain_sum(inputs, result.included)).max()
    assert err <= params.error_bound(len(result.included))


@pytest.mark.parametrize(("n", "t"), [(2, 1), (3, 2), (5, 3), (5, 4)])
def test_complete_graph_small_cases(n: int, t: int) -> None:
    params = SecAggParams(n=n, k=n - 1, t=t, fixed_point_bits=20, rounding="nearest")
    inputs = _inputs(n, 17, seed=n)
    result = secure_sum(inputs, params, seed=n)
    assert result.included == tuple(sorted(inputs))
    assert np.abs(result.sum - _plain_sum(inputs, result.included)).max() <= params.error_bound(n)


def test_complete_graph_with_dropouts_of_each_kind() -> None:
    params = SecAggParams(n=8, k=7, t=4, fixed_point_bits=20)
    inputs = _inputs(8, 9)
    result = secure_sum(
        inputs,
        params,
        seed=5,
        drop_before_sharing=["c000"],
        drop_before_masking=["c001"],
        drop_after_masking=["c002"],
    )
    assert result.dropped == ("c000", "c001")
    assert np.abs(result.sum - _plain_sum(inputs, result.included)).max() <= params.error_bound(6)


def test_64_bit_modulus_and_torch_inputs() -> None:
    params = SecAggParams(n=12, k=4, t=3, clip=8.0, fixed_point_bits=40, modulus_bits=64)
    inputs = {k: torch.from_numpy(v) for k, v in _inputs(12, 50, clip=8.0).items()}
    result = secure_sum(inputs, params, seed=2, drop_after_masking=["c004"])
    plain = np.sum([v.double().numpy() for v in inputs.values()], axis=0)
    assert result.sum.dtype == np.float64
    assert np.abs(result.sum - plain).max() <= params.error_bound(12)


def test_same_seed_same_bytes_different_seed_different_masks() -> None:
    params = SecAggParams(n=10, k=4, t=3)
    inputs = _inputs(10, 32)

    def digest(seed: int) -> tuple[str, np.ndarray]:
        h = hashlib.sha256()

        def record(source: str, target: str, data: bytes) -> bytes:
            h.update(source.encode() + target.encode() + data)
            return data

        result = secure_sum(inputs, params, seed=seed, in_flight=record)
        return h.hexdigest(), result.sum

    a, b, c = digest(1), digest(1), digest(2)
    assert a[0] == b[0]
    assert (a[1] == b[1]).all()
    assert a[0] != c[0]
    assert np.abs(a[1] - c[1]).max() <= params.error_bound(10) * 2


# -- the server's view ---------------------------------------------------------------------------


def _masked_input_of(
    target: str, inputs: dict[str, np.ndarray], params: SecAggParams, seed: int
) -> np.ndarray:
    seen: list[np.ndarray] = []

    def grab(source: str, to: str, data: bytes) -> bytes:
        if source == target and data[0] == MessageType.MASKED_INPUT:
            seen.append(np.frombuffer(data[9:], dtype="<u4").copy())
        return data

    secure_sum(inputs, params, seed=seed, in_flight=grab)
    return seen[0]


def test_a_masked_input_is_uniform_whatever_the_input() -> None:
    """Over fresh randomness, y_u's coordinates are uniform on Z_{2^32} for x and for a very
    different x' (chi-square on the top 4 bits, and a two-sample test between x and x')."""
    params = SecAggParams(n=3, k=2, t=2, rounding="nearest")
    d, runs = 64, 60
    base = _inputs(3, d)
    other = dict(base, c000=np.full(d, 0.999, dtype=np.float32))
    base["c000"] = np.zeros(d, dtype=np.float32)
    histograms = []
    for inputs in (base, other):
        ys = np.concatenate([_masked_input_of("c000", inputs, params, s) for s in range(runs)])
        counts = np.bincount((ys >> 28).astype(np.int64), minlength=16)
        expected = ys.size / 16
        assert float(((counts - expected) ** 2 / expected).sum()) < 56.5  # chi2(15), p = 1e-6
        histograms.append(counts)
    a, b = histograms
    pooled = (a + b) / 2
    assert float((((a - pooled) ** 2 + (b - pooled) ** 2) / pooled).sum()) < 56.5


def test_the_mask_does_not_depend_on_the_input() -> None:
    """With every random choice fixed, y(x) - y(x') = enc(x) - enc(x') mod 2^b: the mask is a
    fixed uniform vector added to the encoding, a bijection, so y is uniform for any x."""
    params = SecAggParams(n=4, k=3, t=2, fixed_point_bits=16, rounding="nearest")
    d = 40
    x = _inputs(4, d)
    x2 = dict(x, c001=-x["c001"])
    y1 = _masked_input_of("c001", x, params, seed=9)
    y2 = _masked_input_of("c001", x2, params, seed=9)
    enc = [
        secagg.encode_fixed_point(
            v, clip=1.0, fixed_point_bits=16, modulus_bits=32, rounding="nearest"
        )
        for v in (x["c001"], x2["c001"])
    ]
    assert ((y1 - y2) == (enc[0] - enc[1])).all()
    assert not (y1 == enc[0]).any()


# -- driving the engine by hand ------------------------------------------------------------------


class Round:
    """A round driven step by step, so tests can change messages between the parties."""

    def __init__(self, params: SecAggParams, d: int = 8, seed: int = 0) -> None:
        ids = tuple(f"c{i:02d}" for i in range(params.n))
        self.session = SecAggSession.create(params, ids, d, entropy=SeededEntropy(seed, "server"))
        self.server = SecAggServer(self.session)
        self.clients = [
            SecAggClient(self.session, i, entropy=SeededEntropy(seed, i)) for i in range(params.n)
        ]
        self.inputs = [np.full(d, 0.01 * i, dtype=np.float32) for i in range(params.n)]

    def keys(self) -> dict[int, NeighbourKeys]:
        self.adverts = [c.advertise_keys() for c in self.clients]
        for i, advert in enumerate(self.adverts):
            self.server.receive_keys(i, advert)
        return self.server.route_keys()

    def shares(self) -> dict[int, ForwardedShares]:
        for i, msg in self.keys().items():
            self.server.receive_shares(i, self.clients[i].share_keys(msg))
        return self.server.route_shares()

    def masked(self, skip: tuple[int, ...] = ()) -> dict[int, UnmaskRequest]:
        for i, msg in self.shares().items():
            if i not in skip:
                y = self.clients[i].mask_input(msg, self.inputs[i])
                self.server.receive_masked_input(i, y)
        return self.server.request_unmasking()


def test_a_tampered_ciphertext_is_a_security_error() -> None:
    params = SecAggParams(n=6, k=4, t=3)

    def flip(source: str, target: str, data: bytes) -> bytes:
        if target == "c003" and data[0] == MessageType.FORWARDED_SHARES:
            data = bytearray(data)
            data[9 + 4 + 40] ^= 0x01  # inside the first sealed share
            return bytes(data)
        return data

    with pytest.raises(SecurityError, match=r"sealed for client 'c003'.*failed authentication"):
        secure_sum(_inputs(6, 4), params, seed=0, in_flight=flip)


def test_a_misattributed_ciphertext_is_a_security_error() -> None:
    """The associated data binds the sender: a share relabelled as another's is refused."""
    r = Round(SecAggParams(n=6, k=5, t=3))
    forwarded = r.shares()
    msg = forwarded[0]
    a, b = msg.shares[0], msg.shares[1]
    swapped = ForwardedShares(
        0, (type(a)(a.peer, b.sealed), type(b)(b.peer, a.sealed), *msg.shares[2:])
    )
    with pytest.raises(SecurityError, match="failed authentication"):
        r.clients[0].mask_input(swapped, r.inputs[0])


def test_asking_for_both_shares_of_one_client_is_refused() -> None:
    r = Round(SecAggParams(n=6, k=5, t=3))
    requests = r.masked(skip=(5,))
    req = requests[0]
    assert req.dropped == (5,)
    greedy = UnmaskRequest(0, req.survivors, (*req.dropped, req.survivors[0]))
    with pytest.raises(SecurityError, match=r"both shares of client 'c01' \(index 1\)"):
        r.clients[0].unmask(greedy)


def test_a_second_unmasking_request_is_refused() -> None:
    r = Round(SecAggParams(n=6, k=5, t=3))
    requests = r.masked(skip=(5,))
    r.clients[0].unmask(requests[0])
    flipped = UnmaskRequest(0, (*requests[0].survivors[1:], 5), (requests[0].survivors[0],))
    with pytest.raises(SecurityError, match="already answered an unmasking request"):
        r.clients[0].unmask(flipped)


def test_an_unmasking_request_must_partition_the_neighbours() -> None:
    r = Round(SecAggParams(n=6, k=5, t=3))
    req = r.masked()[2]
    with pytest.raises(ProtocolError, match="exactly once; missing client 'c05'"):
        r.clients[2].unmask(UnmaskRequest(2, req.survivors[:-1], ()))


def test_too_few_survivors_is_a_protocol_error_naming_the_client() -> None:
    params = SecAggParams(n=20, k=4, t=3)
    ids = tuple(f"c{i:03d}" for i in range(20))
    graph = SecAggSession.create(params, ids, 4, entropy=SeededEntropy(3, "server")).graph
    victim = 7
    gone = [ids[v] for v in graph.neighbours(victim)[:2]]  # 2 of its 4 neighbours vanish

    def entropy(party: str) -> SeededEntropy:
        return SeededEntropy(3, party)

    with pytest.raises(ProtocolError, match=r"cannot unmask .*client 'c007' \(index 7\)"):
        secure_sum(_inputs(20, 4), params, entropy=entropy, drop_after_masking=gone)


def test_too_few_neighbours_sharing_keys_is_refused_by_the_client() -> None:
    params = SecAggParams(n=5, k=4, t=3)
    with pytest.raises(ProtocolError, match=r"only 2 of its neighbours completed key sharing"):
        secure_sum(_inputs(5, 4), params, seed=0, drop_before_sharing=["c000", "c001"])


def test_the_client_refuses_non_neighbours_and_reflected_keys() -> None:
    r = Round(SecAggParams(n=10, k=4, t=3))
    keys = r.keys()
    stranger = next(v for v in range(10) if v != 0 and v not in r.session.graph.neighbours(0))
    fake = PeerKeys(stranger, b"\x09" * 32, b"\x0a" * 32)
    with pytest.raises(SecurityError, match="keys of non-neighbours"):
        r.clients[0].share_keys(NeighbourKeys(0, (*keys[0].keys, fake)))
    first = keys[1].keys[0]
    mine = r.adverts[1].masking_key  # the client's own key, reflected back
    reflected = PeerKeys(first.index, first.encryption_key, mine)
    with pytest.raises(SecurityError, match="repeats another key"):
        r.clients[1].share_keys(NeighbourKeys(1, (reflected, *keys[1].keys[1:])))


def test_corrupted_key_shares_are_caught_by_the_public_key_check() -> None:
    params = SecAggParams(n=6, k=5, t=3)

    def corrupt(source: str, target: str, data: bytes) -> bytes:
        if target == "server" and data[0] == MessageType.UNMASK_RESPONSE:
            a, b = int.from_bytes(data[5:9], "little"), int.from_bytes(data[9:13], "little")
            out = bytearray(data)
            for j in range(b):
                offset = 13 + 38 * (a + j) + 4
                out[offset] ^= 0x01  # stays a canonical field element
            return bytes(out)
        return data

    with pytest.raises(SecurityError, match=r"masking key rebuilt for client 'c005'"):
        secure_sum(_inputs(6, 4), params, seed=1, drop_before_masking=["c005"], in_flight=corrupt)


def test_out_of_order_calls_and_impersonation_are_refused() -> None:
    r = Round(SecAggParams(n=5, k=4, t=3))
    with pytest.raises(ProtocolError, match="cannot unmask at stage new"):
        r.clients[0].unmask(UnmaskRequest(0, (), ()))
    advert = r.clients[1].advertise_keys()
    with pytest.raises(ProtocolError, match="claims to come from index 1"):
        r.server.receive_keys(2, advert)
    r.server.receive_keys(1, advert)
    with pytest.raises(ProtocolError, match="sent a second AdvertiseKeys"):
        r.server.receive_keys(1, advert)
    with pytest.raises(ProtocolError, match="cannot receive shares at stage keys"):
        r.server.receive_shares(1, ShareKeys(1, ()))


def test_inputs_are_checked() -> None:
    params = SecAggParams(n=3, k=2, t=2)
    with pytest.raises(ValidationError, match="one length"):
        secure_sum({"a": np.zeros(3), "b": np.zeros(3), "c": np.zeros(4)}, params)
    with pytest.raises(ValidationError, match=r"params\.n=3"):
        secure_sum({"a": np.zeros(3), "b": np.zeros(3)}, params)
    with pytest.raises(ValidationError, match="NaN"):
        secure_sum({"a": np.zeros(3), "b": np.zeros(3), "c": np.full(3, np.nan)}, params, seed=0)


# -- wire format ---------------------------------------------------------------------------------


def _expected_size(data: bytes, w: int) -> int:
    tag = MessageType(data[0])
    a = int.from_bytes(data[5:9], "little")
    if tag is MessageType.ADVERTISE_KEYS:
        return 69
    if tag is MessageType.NEIGHBOUR_KEYS:
        return 9 + 68 * a
    if tag in (MessageType.SHARE_KEYS, MessageType.FORWARDED_SHARES):
        return 9 + 100 * a
    if tag is MessageType.MASKED_INPUT:
        return 9 + w * a
    b = int.from_bytes(data[9:13], "little")
    return 13 + (4 if tag is MessageType.UNMASK_REQUEST else 38) * (a + b)


@pytest.mark.parametrize("bits", [32, 64])
def test_every_message_has_the_documented_size(bits: int) -> None:
    params = SecAggParams(n=16, k=6, t=4, modulus_bits=bits)
    sizes: list[tuple[int, int]] = []

    def measure(source: str, target: str, data: bytes) -> bytes:
        sizes.append((len(data), _expected_size(data, bits // 8)))
        return data

    d = 33
    result = secure_sum(_inputs(16, d), params, seed=4, in_flight=measure)
    assert len(sizes) == 16 * 7
    assert all(got == want for got, want in sizes)
    sent, received = no_dropout_traffic(6, d, bits)
    assert set(result.bytes_sent.values()) == {sent}
    assert set(result.bytes_received.values()) == {received}


def test_decoding_refuses_malformed_messages() -> None:
    def decode(data: bytes) -> object:
        return decode_message(data, n=4, dimension=2, modulus_bits=32)

    good = MaskedInput(1, np.array([1, 2], dtype=np.uint32)).to_bytes()
    assert (decode(good).vector == [1, 2]).all()  # type: ignore[attr-defined]
    cases: list[tuple[bytes, str]] = [
        (b"", "empty"),
        (b"\x63" + good[1:], "unknown SecAgg message tag 99"),
        (good + b"\x00", "1 unexpected trailing bytes"),
        (good[:-1], "truncated"),
        (good[:1] + (9).to_bytes(4, "little") + good[5:], "9 is not a client index below 4"),
        (good[:5] + (3).to_bytes(4, "little") + good[9:] + bytes(4), "vector length 3"),
        (bytes([2, 0, 0, 0, 0]) + (7).to_bytes(4, "little"), "7 keys exceed the limit of 3"),
    ]
    for data, match in cases:
        with pytest.raises(ProtocolError, match=match):
            decode(data)
    share = bytes([7, 1, 0, 0, 0]) + (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
    bad_element = (2**130 - 1).to_bytes(17, "little") + bytes(17)
    with pytest.raises(ProtocolError, match="not below the field prime"):
        decode(share + (2).to_bytes(4, "little") + bad_element)


def test_round_trip_of_every_message_type() -> None:
    r = Round(SecAggParams(n=5, k=4, t=3))
    messages: list[object] = []
    keys = r.keys()
    messages += list(keys.values())
    for i, msg in keys.items():
        share = r.clients[i].share_keys(msg)
        messages.append(share)
        r.server.receive_shares(i, share)
    forwarded = r.server.route_shares()
    messages += list(forwarded.values())
    for i, msg in forwarded.items():
        r.server.receive_masked_input(i, r.clients[i].mask_input(msg, r.inputs[i]))
    for i, req in r.server.request_unmasking().items():
        messages.append(req)
        messages.append(r.clients[i].unmask(req))
    for m in messages:
        back = r.session.decode(m.to_bytes())  # type: ignore[attr-defined]
        assert back == m


def test_exported_names_resolve() -> None:
    assert secagg.__all__ == sorted(secagg.__all__)
    assert all(hasattr(secagg, name) for name in secagg.__all__)


def test_sessions_are_checked() -> None:
    params = SecAggParams(n=3, k=2, t=2)
    with pytest.raises(ConfigurationError, match="distinct"):
        SecAggSession(params, ("a", "a", "b"), 3, bytes(32))
    with pytest.raises(ConfigurationError, match=r"params\.n=3"):
        SecAggSession(params, ("a", "b"), 3, bytes(32))
    with pytest.raises(ConfigurationError, match="32 bytes"):
        SecAggSession(params, ("a", "b", "c"), 3, bytes(16))
