"""Splitting a dataset among simulated clients (private; re-exported by the package).

A partition is stored in CSR form: one permutation-like array ``order`` holding the sample
indices grouped by client and ``offsets`` with ``num_clients + 1`` boundaries, so client
``k`` owns ``order[offsets[k]:offsets[k + 1]]`` (ascending sample indices). Nothing per client
is allocated, which keeps 10,000-client partitions to two small arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import torch
from torch import Tensor

from velocity.data._checks import check_choice, check_int, check_positive_float
from velocity.errors import ConfigurationError, ValidationError

__all__ = ["PARTITION_SCHEMES", "Partition", "partition"]

PARTITION_SCHEMES: Final = ("iid", "dirichlet", "shard", "natural")
"""Names accepted by :func:`partition`."""

Scheme = Literal["iid", "dirichlet", "shard", "natural"]

_DIRICHLET_DRAWS: Final = 10
"""Fresh Dirichlet draws tried before the min-size repair kicks in."""


@dataclass(frozen=True, eq=False)
class Partition:
    """Which samples each client owns, as CSR arrays.

    Parameters
    ----------
    order : Tensor, shape (M,), int64
        Sample indices grouped by client (ascending within a client). ``M`` is the number of
        samples handed out: ``N`` for every scheme except ``natural`` with fewer clients than
        groups.
    offsets : Tensor, shape (num_clients + 1,), int64
        ``offsets[0] == 0``, non-decreasing, ``offsets[-1] == M``.

    Examples
    --------
    >>> import torch
    >>> p = Partition(torch.tensor([0, 3, 1, 2]), torch.tensor([0, 2, 4]))
    >>> p.num_clients, p.indices(1).tolist(), p.sizes().tolist()
    (2, [1, 2], [2, 2])
    >>> p.label_histogram(torch.tensor([0, 1, 1, 0]), 2).tolist()
    [[2, 0], [0, 2]]
    """

    order: Tensor
    offsets: Tensor

    def __post_init__(self) -> None:
        o, off = self.order, self.offsets
        if not isinstance(o, Tensor) or o.dtype != torch.int64 or o.ndim != 1:
            raise ValidationError("Partition: order must be a 1-D int64 tensor")
        if not isinstance(off, Tensor) or off.dtype != torch.int64 or off.ndim != 1:
            raise ValidationError("Partition: offsets must be a 1-D int64 tensor")
        if off.numel() < 1 or int(off[0]) != 0 or int(off[-1]) != o.numel():
            raise ValidationError(
                f"Partition: offsets must start at 0 and end at len(order)={o.numel()}"
            )
        if off.numel() > 1 and bool((off[1:] < off[:-1]).any()):
            raise ValidationError("Partition: offsets must be non-decreasing")

    @property
    def num_clients(self) -> int:
        """Number of clients, ``len(offsets) - 1``."""
        return int(self.offsets.numel()) - 1

    def indices(self, client: int) -> Tensor:
        """The sample indices of ``client``: a view into ``order``, never a copy."""
        k = int(client)
        if not 0 <= k < self.num_clients:
            raise IndexError(f"client {client} out of range for {self.num_clients} clients")
        return self.order[int(self.offsets[k]) : int(self.offsets[k + 1])]

    def sizes(self) -> Tensor:
        """Samples per client, shape ``(num_clients,)`` int64."""
        return self.offsets[1:] - self.offsets[:-1]

    def label_histogram(self, labels: Tensor, num_classes: int) -> Tensor:
        """Per-client label counts, shape ``(num_clients, num_classes)`` int64.

        One ``bincount`` over ``client * num_classes + label``; no per-client loop.
        """
        y = _as_labels(labels, "label_histogram")
        c = check_int(num_classes, "num_classes", "label_histogram", minimum=1)
        if self.order.numel() and int(self.order.max()) >= y.numel():
            raise ValidationError(
                f"label_histogram: partition refers to sample {int(self.order.max())} but "
                f"labels has only {y.numel()} entries"
            )
        picked = y[self.order]
        if picked.numel() and (int(picked.min()) < 0 or int(picked.max()) >= c):
            raise ValidationError(
                f"label_histogram: labels must lie in [0, {c}); "
                f"got {int(picked.min())}..{int(picked.max())}"
            )
        k = self.num_clients
        client = torch.repeat_interleave(torch.arange(k), self.sizes())
        flat = torch.bincount(client * c + picked, minlength=k * c)
        return flat.reshape(k, c)


def _as_labels(labels: object, where: str) -> Tensor:
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    if not isinstance(labels, Tensor) or labels.ndim != 1:
        raise ValidationError(f"{where}: labels must be a 1-D integer tensor of shape (N,)")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValidationError(f"{where}: labels must be integers; got dtype {labels.dtype}")
    return labels.detach().cpu().to(torch.int64)


def _csr(client_of: np.ndarray, num_clients: int) -> Partition:
    """Group sample indices by client id (``-1`` = not handed out); ascending within a client."""
    assigned = np.flatnonzero(client_of >= 0)
    owners = client_of[assigned]
    order = assigned[np.argsort(owners, kind="stable")]
    counts = np.bincount(owners, minlength=num_clients)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Partition(torch.from_numpy(order.astype(np.int64)), torch.from_numpy(offsets))


def _iid(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    sizes = np.full(k, n // k, dtype=np.int64)
    sizes[: n % k] += 1
    client_of = np.empty(n, dtype=np.int64)
    client_of[rng.permutation(n)] = np.repeat(np.arange(k), sizes)
    return client_of


def _repair_min_size(
    client_of: np.ndarray, k: int, min_samples: int, rng: np.random.Generator
) -> None:
    """Move random samples from clients above ``min_samples`` to those below it, in place.

    A client never gives away one of its first ``min_samples`` samples (in a random order), so
    donors keep at least ``min_samples``; the caller guarantees ``N >= k * min_samples``.
    """
    sizes = np.bincount(client_of, minlength=k)
    deficit = np.maximum(min_samples - sizes, 0)
    need = int(deficit.sum())
    if need == 0:
        return
    key = rng.random(client_of.size)
    grouped = np.lexsort((key, client_of))
    starts = np.cumsum(sizes) - sizes
    rank = np.empty(client_of.size, dtype=np.int64)
    rank[grouped] = np.arange(client_of.size) - np.repeat(starts, sizes)
    spare = np.flatnonzero(rank >= min_samples)
    moved = rng.choice(spare, size=need, replace=False)
    client_of[moved] = np.repeat(np.arange(k), deficit)


def _dirichlet(
    y: np.ndarray, k: int, alpha: float, min_samples: int, rng: np.random.Generator
) -> np.ndarray:
    _, y_idx = np.unique(y, return_inverse=True)
    per_class = np.bincount(y_idx)
    by_class = np.lexsort((rng.random(y.size), y_idx))  # class blocks, random order inside
    counts = np.zeros((per_class.size, k), dtype=np.int64)
    for _ in range(_DIRICHLET_DRAWS):
        p = rng.dirichlet(np.full(k, alpha), size=per_class.size)
        p = np.nan_to_num(p, nan=0.0)
        p /= np.maximum(p.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
        counts = rng.multinomial(per_class, p)
        if int(counts.sum(axis=0).min()) >= min_samples:
            break
    client_of = np.empty(y.size, dtype=np.int64)
    client_of[by_class] = np.repeat(np.tile(np.arange(k), per_class.size), counts.ravel())
    _repair_min_size(client_of, k, min_samples, rng)
    return client_of


def _shards_per_class(total: int, per_class: np.ndarray) -> np.ndarray:
    """Split ``total`` shards among classes proportionally; each class gets 1..n_c shards."""
    ideal = total * per_class / per_class.sum()
    q: np.ndarray = np.clip(np.floor(ideal), 1, per_class).astype(np.int64)
    while int(q.sum()) < total:
        gain = np.where(q < per_class, ideal - q, -np.inf)
        q[int(np.argmax(gain))] += 1
    while int(q.sum()) > total:
        loss = np.where(q > 1, ideal - q, np.inf)
        q[int(np.argmin(loss))] -= 1
    return q


def _shard(y: np.ndarray, k: int, per_client: int, rng: np.random.Generator) -> np.ndarray:
    n = y.size
    total = k * per_client
    sorted_idx = np.argsort(y, kind="stable")
    _, y_idx = np.unique(y, return_inverse=True)
    per_class = np.bincount(y_idx)
    if total >= per_class.size:
        # Label-pure shards: class c is cut into q_c near-equal contiguous pieces.
        q = _shards_per_class(total, per_class)
        first_shard = np.cumsum(q) - q
        cls = y_idx[sorted_idx]
        pos = np.arange(n) - np.repeat(np.cumsum(per_class) - per_class, per_class)
        shard_of = first_shard[cls] + (pos * q[cls]) // per_class[cls]
    else:
        # Fewer shards than classes: McMahan et al.'s contiguous cut of the sorted labels.
        shard_of = (np.arange(n) * total) // n
    owner = np.empty(total, dtype=np.int64)
    owner[rng.permutation(total)] = np.arange(total) // per_client
    client_of = np.empty(n, dtype=np.int64)
    client_of[sorted_idx] = owner[shard_of]
    return client_of


def _natural(groups: Tensor | None, n: int, k: int, min_samples: int) -> np.ndarray:
    if groups is None:
        raise ConfigurationError(
            "partition: scheme 'natural' needs groups= (the natural client of each sample, "
            "e.g. ArrayDataset.groups)"
        )
    g = _as_labels(groups, "partition(groups)").numpy()
    if g.size != n:
        raise ValidationError(f"partition: groups has {g.size} entries but labels has {n}")
    if g.size and int(g.min()) < 0:
        raise ValidationError(f"partition: group ids must be >= 0; got {int(g.min())}")
    ids, g_idx, counts = np.unique(g, return_inverse=True, return_counts=True)
    if k > ids.size:
        raise ConfigurationError(
            f"partition: scheme 'natural' has {ids.size} groups; num_clients={k} is too many"
        )
    chosen = np.sort(np.lexsort((ids, -counts))[:k])  # the k largest groups, in id order
    if int(counts[chosen].min()) < min_samples:
        worst = chosen[int(np.argmin(counts[chosen]))]
        raise ConfigurationError(
            f"partition: scheme 'natural' gives group {int(ids[worst])} only "
            f"{int(counts[worst])} samples, below min_samples={min_samples} "
            f"(lower min_samples or num_clients={k})"
        )
    client_of_group = np.full(ids.size, -1, dtype=np.int64)
    client_of_group[chosen] = np.arange(k)
    return client_of_group[g_idx]


def partition(
    labels: Tensor,
    num_clients: int,
    scheme: Scheme,
    *,
    seed: int,
    alpha: float = 0.5,
    num_shards_per_client: int = 2,
    groups: Tensor | None = None,
    min_samples: int = 1,
) -> Partition:
    r"""Split ``N`` samples among ``num_clients`` clients.

    Parameters
    ----------
    labels : Tensor, shape (N,), integer
        Class of each sample (any integer ids; only equality matters).
    num_clients : int
    scheme : {"iid", "dirichlet", "shard", "natural"}
        - ``"iid"``: a uniform random permutation cut into near-equal parts (the first
          ``N mod K`` clients get one more).
        - ``"dirichlet"``: label skew by Dirichlet proportions, per class over clients (the
          scheme of Yurochkin et al. 2019 and Wang et al. 2020, standardised by NIID-Bench, Li
          et al. 2022; the Dirichlet label-skew idea of Hsu et al. 2019). For each class
          :math:`c`, :math:`p_c \sim \mathrm{Dir}_K(\alpha)` and the class's samples are dealt
          out by :math:`\mathrm{Multinomial}(n_c, p_c)`. Smaller ``alpha`` means more skew.
          Up to 10 fresh draws are tried until every client has ``min_samples``; after that,
          random samples of clients above ``min_samples`` are moved to those below.
        - ``"shard"``: McMahan et al. 2017's pathological non-IID split. Samples sorted by
          label are cut into ``K * num_shards_per_client`` shards (label-pure: each class is
          cut into a share of the shards proportional to its size), and each client gets
          ``num_shards_per_client`` shards at random, hence at most that many labels. With
          fewer shards than classes the sorted samples are cut contiguously instead, as in
          the paper, and a shard may hold two labels.
        - ``"natural"``: one client per group of ``groups`` (a Shakespeare role, a synthetic
          device). With fewer clients than groups, the ``num_clients`` largest groups are used
          (ties: smaller id) and the other samples are left out; client ``k`` is the ``k``-th
          chosen group in increasing id order.
    seed : int >= 0
        The only source of randomness: ``numpy.random.Generator(PCG64(seed))``.
    alpha : float > 0
        Dirichlet concentration (``"dirichlet"`` only).
    num_shards_per_client : int >= 1
        ``"shard"`` only.
    groups : Tensor, shape (N,), int64, optional
        Required for ``"natural"``.
    min_samples : int >= 0
        Every client must end up with at least this many samples, else
        :class:`~velocity.errors.ConfigurationError` naming the settings.

    Returns
    -------
    Partition
        CSR arrays; samples ascending within each client.

    Examples
    --------
    >>> import torch
    >>> p = partition(torch.arange(10) % 2, 3, "iid", seed=0)
    >>> p.sizes().tolist()
    [4, 3, 3]
    >>> y = torch.arange(8) // 2
    >>> shards = partition(y, 2, "shard", seed=0, num_shards_per_client=2)
    >>> shards.label_histogram(y, 4).count_nonzero(dim=1).tolist()
    [2, 2]
    """
    y_t = _as_labels(labels, "partition")
    where = "partition"
    k = check_int(num_clients, "num_clients", where, minimum=1)
    check_choice(scheme, "scheme", where, PARTITION_SCHEMES)
    s = check_int(seed, "seed", where, minimum=0)
    m = check_int(min_samples, "min_samples", where, minimum=0)
    a = check_positive_float(alpha, "alpha", where)
    per_client = check_int(num_shards_per_client, "num_shards_per_client", where, minimum=1)
    y = y_t.numpy()
    n = y.size
    if scheme == "natural":
        return _csr(_natural(groups, n, k, m), k)
    if n < k * m:
        extra = f", alpha={a}" if scheme == "dirichlet" else ""
        raise ConfigurationError(
            f"partition: scheme {scheme!r} with num_clients={k} and min_samples={m}{extra} "
            f"needs at least {k * m} samples; got N={n} (lower num_clients or min_samples)"
        )
    rng = np.random.Generator(np.random.PCG64(s))
    if scheme == "iid":
        client_of = _iid(n, k, rng)
    elif scheme == "dirichlet":
        client_of = _dirichlet(y, k, a, m, rng)
    else:
        total = k * per_client
        if n < total:
            raise ConfigurationError(
                f"partition: scheme 'shard' cuts num_clients * num_shards_per_client = "
                f"{k} * {per_client} = {total} shards, more than the {n} samples"
            )
        client_of = _shard(y, k, per_client, rng)
    result = _csr(client_of, k)
    smallest = int(result.sizes().min())
    if smallest < m:
        raise ConfigurationError(
            f"partition: scheme {scheme!r} left a client with {smallest} samples, below "
            f"min_samples={m} (num_clients={k}, num_shards_per_client={per_client}, N={n}); "
            "use fewer clients or shards, or lower min_samples"
        )
    return result
