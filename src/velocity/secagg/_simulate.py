"""An in-process driver of the SecAgg+ engine: every message goes through its bytes.

:func:`secure_sum` plays the network between one :class:`SecAggServer` and n
:class:`SecAggClient` objects: each message is serialised, optionally altered by an
``in_flight`` hook (to model a tampering network or server), counted, decoded with the
round's limits and handed to its recipient. Clients named in the ``drop_*`` arguments stop
answering from that round on. It is the reference for what a network coordinator does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray

from velocity.errors import ConfigurationError, ProtocolError, ValidationError
from velocity.secagg._crypto import Entropy, SeededEntropy, system_entropy
from velocity.secagg._messages import (
    AdvertiseKeys,
    ForwardedShares,
    MaskedInput,
    Message,
    NeighbourKeys,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from velocity.secagg._params import SecAggParams
from velocity.secagg._protocol import SecAggClient, SecAggServer, SecAggSession

__all__ = ["CLIENT_PHASES", "SERVER_PHASES", "SecAggResult", "secure_sum"]

CLIENT_PHASES = ("advertise_keys", "share_keys", "mask_input", "unmask")
SERVER_PHASES = ("keys", "shares", "masked_input", "unmask")
_M = TypeVar("_M", bound=Message)


@dataclass(frozen=True, eq=False)
class SecAggResult:
    """The outcome of :func:`secure_sum`.

    Attributes
    ----------
    sum : ndarray of float64, shape (d,)
        The sum of the included clients' (clipped, fixed-point encoded) inputs.
    included, dropped : tuple of str
        Who is in the sum (sent a masked input), and everyone else.
    bytes_sent, bytes_received : mapping str -> int
        Each client's exact wire bytes (the serialised messages it sent / was delivered).
    client_seconds : mapping str -> float
        Per phase of :data:`CLIENT_PHASES`, the clients' total compute time.
    server_seconds : mapping str -> float
        Per phase of :data:`SERVER_PHASES`, the server's compute time (receiving included).
    params : SecAggParams
    dimension : int
    """

    sum: NDArray[np.float64]
    included: tuple[str, ...]
    dropped: tuple[str, ...]
    bytes_sent: Mapping[str, int]
    bytes_received: Mapping[str, int]
    client_seconds: Mapping[str, float]
    server_seconds: Mapping[str, float]
    params: SecAggParams
    dimension: int

    @property
    def plain_upload_bytes(self) -> int:
        """Bytes of the plain float32 vector a client would upload without SecAgg: ``4 d``."""
        return 4 * self.dimension


class _Wire:
    """Serialise, alter, count and decode every message; time every call."""

    def __init__(
        self,
        session: SecAggSession,
        in_flight: Callable[[str, str, bytes], bytes] | None,
    ) -> None:
        self.session = session
        self.in_flight = in_flight
        ids = session.client_ids
        self.sent = dict.fromkeys(ids, 0)
        self.received = dict.fromkeys(ids, 0)
        self.client_seconds = dict.fromkeys(CLIENT_PHASES, 0.0)
        self.server_seconds = dict.fromkeys(SERVER_PHASES, 0.0)

    def _carry(self, source: str, target: str, message: Message, kind: type[_M]) -> _M:
        data = message.to_bytes()
        if self.in_flight is not None:
            data = self.in_flight(source, target, data)
        decoded = self.session.decode(data)
        if not isinstance(decoded, kind):
            raise ProtocolError(f"expected a {kind.__name__} from {source}; got {decoded!r}")
        if target == "server":
            self.sent[source] += len(data)
        else:
            self.received[target] += len(data)
        return decoded

    def up(self, index: int, message: Message, kind: type[_M]) -> _M:
        return self._carry(self.session.client_ids[index], "server", message, kind)

    def down(self, index: int, message: Message, kind: type[_M]) -> _M:
        return self._carry("server", self.session.client_ids[index], message, kind)


def _entropies(
    seed: int | None, entropy: Callable[[str], Entropy] | None
) -> Callable[[str], Entropy]:
    if seed is not None and entropy is not None:
        raise ConfigurationError("secure_sum takes seed or entropy, not both")
    if entropy is not None:
        return entropy
    if seed is not None:
        fixed = int(seed)
        return lambda party: SeededEntropy(fixed, "secagg", party)
    return lambda party: system_entropy


def _check_inputs(inputs: Mapping[str, Any]) -> tuple[tuple[str, ...], int]:
    """The sorted ids and the common length; vectors are converted one at a time, later."""
    if not isinstance(inputs, Mapping) or not inputs:
        raise ValidationError("secure_sum needs a non-empty mapping of client id -> vector")
    ids = tuple(sorted(inputs))
    dims = set()
    for cid in ids:
        x = inputs[cid]
        kind = str(x.dtype) if isinstance(x, np.ndarray | torch.Tensor) else ""
        if not kind.replace("torch.", "").startswith(("float", "bfloat")) or x.ndim != 1:
            raise ValidationError(f"the input of client {cid!r} must be a float vector (d,)")
        dims.add(int(x.shape[0]))
    if len(dims) != 1:
        raise ValidationError(f"all inputs must have one length; got lengths {sorted(dims)}")
    return ids, dims.pop()


def _drop_sets(ids: tuple[str, ...], *groups: Collection[str]) -> list[set[int]]:
    index = {cid: i for i, cid in enumerate(ids)}
    out: list[set[int]] = []
    seen: set[str] = set()
    for group in groups:
        unknown = sorted(set(group) - set(index))
        if unknown:
            raise ConfigurationError(f"secure_sum: dropping unknown clients {unknown}")
        twice = sorted(seen & set(group))
        if twice:
            raise ConfigurationError(f"secure_sum: clients {twice} are dropped twice")
        seen |= set(group)
        out.append({index[cid] for cid in group})
    return out


def secure_sum(
    inputs: Mapping[str, NDArray[Any] | torch.Tensor],
    params: SecAggParams,
    *,
    seed: int | None = None,
    entropy: Callable[[str], Entropy] | None = None,
    drop_before_sharing: Collection[str] = (),
    drop_before_masking: Collection[str] = (),
    drop_after_masking: Collection[str] = (),
    in_flight: Callable[[str, str, bytes], bytes] | None = None,
) -> SecAggResult:
    """Run one SecAgg+ round in process and return the sum of the survivors' inputs.

    Parameters
    ----------
    inputs : mapping str -> ndarray or Tensor, each (d,)
        One float vector per client; ``len(inputs)`` must be ``params.n``. Clients get
        protocol indices in sorted-id order.
    params : SecAggParams
        From :func:`~velocity.secagg.derive_parameters` or given by hand.
    seed : int, optional
        Makes the round reproducible: the session id (hence the graph) and every client's
        keys, seeds and rounding come from :class:`~velocity.secagg.SeededEntropy` streams
        keyed by ``(seed, party)``. Without it (and without ``entropy``), all randomness is
        :func:`os.urandom`.
    entropy : callable, optional
        ``party -> entropy source`` (``party`` is ``"server"`` or a client id), for other
        sources; exclusive with ``seed``.
    drop_before_sharing : collection of str
        Clients that advertise keys, then vanish (never in the sum; nothing to recover).
    drop_before_masking : collection of str
        Clients that share their keys but never send a masked input: excluded from the sum;
        their pairwise masks are removed through their rebuilt masking keys.
    drop_after_masking : collection of str
        Clients that send a masked input, then vanish: included in the sum; their self masks
        are removed through their rebuilt self-mask seeds.
    in_flight : callable, optional
        ``(sender, recipient, bytes) -> bytes`` applied to every message on the wire
        (``"server"`` names the server): a hook to model a tampering network.

    Returns
    -------
    SecAggResult

    Raises
    ------
    ProtocolError, SecurityError
        As raised by the engine (too few survivors around a client, failed authentication,
        a refused unmasking request, ...).

    Examples
    --------
    >>> import numpy as np
    >>> params = SecAggParams(n=4, k=3, t=2, fixed_point_bits=16)
    >>> inputs = {f"c{i}": np.full(3, 0.25 * i, dtype=np.float32) for i in range(4)}
    >>> result = secure_sum(inputs, params, seed=0, drop_after_masking=["c3"])
    >>> np.round(result.sum, 3).tolist(), result.included
    ([1.5, 1.5, 1.5], ('c0', 'c1', 'c2', 'c3'))
    """
    ids, d = _check_inputs(inputs)
    if len(ids) != params.n:
        raise ValidationError(f"secure_sum got {len(ids)} inputs but params.n={params.n}")
    before_sharing, before_masking, after_masking = _drop_sets(
        ids, drop_before_sharing, drop_before_masking, drop_after_masking
    )
    source = _entropies(seed, entropy)
    session = SecAggSession.create(params, ids, d, entropy=source("server"))
    server = SecAggServer(session)
    clients = [SecAggClient(session, i, entropy=source(cid)) for i, cid in enumerate(ids)]
    wire = _Wire(session, in_flight)
    cs, ss = wire.client_seconds, wire.server_seconds

    for i, client in enumerate(clients):
        start = time.perf_counter()
        advert = client.advertise_keys()
        cs["advertise_keys"] += time.perf_counter() - start
        message = wire.up(i, advert, AdvertiseKeys)
        start = time.perf_counter()
        server.receive_keys(i, message)
        ss["keys"] += time.perf_counter() - start
    start = time.perf_counter()
    keys = server.route_keys()
    ss["keys"] += time.perf_counter() - start

    for i in sorted(set(keys) - before_sharing):
        neighbour_keys = wire.down(i, keys[i], NeighbourKeys)
        start = time.perf_counter()
        shares = clients[i].share_keys(neighbour_keys)
        cs["share_keys"] += time.perf_counter() - start
        message_s = wire.up(i, shares, ShareKeys)
        start = time.perf_counter()
        server.receive_shares(i, message_s)
        ss["shares"] += time.perf_counter() - start
    start = time.perf_counter()
    forwarded = server.route_shares()
    ss["shares"] += time.perf_counter() - start

    for i in sorted(forwarded):
        delivered = wire.down(i, forwarded[i], ForwardedShares)
        if i in before_masking:
            continue
        x = inputs[ids[i]]
        start = time.perf_counter()
        masked = clients[i].mask_input(delivered, x)
        cs["mask_input"] += time.perf_counter() - start
        message_m = wire.up(i, masked, MaskedInput)
        start = time.perf_counter()
        server.receive_masked_input(i, message_m)
        ss["masked_input"] += time.perf_counter() - start
    start = time.perf_counter()
    requests = server.request_unmasking()
    ss["masked_input"] += time.perf_counter() - start

    for i in sorted(set(requests) - after_masking):
        request = wire.down(i, requests[i], UnmaskRequest)
        start = time.perf_counter()
        response = clients[i].unmask(request)
        cs["unmask"] += time.perf_counter() - start
        message_u = wire.up(i, response, UnmaskResponse)
        start = time.perf_counter()
        server.receive_unmask_response(i, message_u)
        ss["unmask"] += time.perf_counter() - start
    start = time.perf_counter()
    output = server.finish()
    ss["unmask"] += time.perf_counter() - start

    return SecAggResult(
        sum=output.total,
        included=tuple(ids[i] for i in output.included),
        dropped=tuple(ids[i] for i in output.dropped),
        bytes_sent=dict(wire.sent),
        bytes_received=dict(wire.received),
        client_seconds=dict(cs),
        server_seconds=dict(ss),
        params=params,
        dimension=session.dimension,
    )
