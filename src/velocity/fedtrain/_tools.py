"""The coordinator's tools: gradient hashes, sample credits and the element-wise average."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence

import numpy as np

from velocity.fedtrain.models import LocalUpdate

__all__ = ["CreditTracker", "GradientAverager", "HashVerifier"]


class HashVerifier:
    """SHA-256 digests of gradient dictionaries, to detect corrupted or tampered updates.

    The digest is the hex SHA-256 of ``json.dumps(gradients, sort_keys=True)`` (UTF-8): key
    order does not matter, every float's ``repr`` does (``0.1`` and
    ``0.10000000000000002`` differ).

    Examples
    --------
    >>> verifier = HashVerifier()
    >>> digest = verifier.compute_hash({"b": [0.01], "w": [0.1, -0.2]})
    >>> digest == verifier.compute_hash({"w": [0.1, -0.2], "b": [0.01]})
    True
    >>> update = LocalUpdate(node_id="n", round_id=1, gradients={"w": [0.1, -0.2], "b": [0.01]},
    ...                      loss=0.5, samples_used=8)
    >>> verifier.verify(update, digest), verifier.verify(update, "0" * 64)
    (True, False)
    """

    @staticmethod
    def compute_hash(gradients: Mapping[str, Sequence[float]]) -> str:
        """The hex SHA-256 of ``json.dumps(gradients, sort_keys=True)``.

        Parameters
        ----------
        gradients : mapping of str to sequence of float
            A gradient dictionary (:attr:`LocalUpdate.gradients`).

        Returns
        -------
        str
            64 lower-case hex digits.
        """
        text = json.dumps(gradients, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def verify(self, update: LocalUpdate, digest: str) -> bool:
        """Whether ``digest`` is the hash of ``update.gradients`` (compared in constant time).

        Parameters
        ----------
        update : LocalUpdate
            The update received.
        digest : str
            The hex digest the sender computed (either case); anything that is not an ASCII
            string never matches.

        Returns
        -------
        bool
        """
        if not isinstance(digest, str) or not digest.isascii():
            return False
        return hmac.compare_digest(self.compute_hash(update.gradients), digest.lower())


class CreditTracker:
    """Samples each node has processed: the credit of its contribution.

    Examples
    --------
    >>> credits = CreditTracker()
    >>> credits.record("node-0", 100); credits.record("node-0", 20); credits.record("node-1", 5)
    >>> credits.all_credits(), credits.get_credits("node-0"), credits.get_credits("nobody")
    ({'node-0': 120, 'node-1': 5}, 120, 0)
    >>> credits.total()
    125
    """

    def __init__(self) -> None:
        self._credits: dict[str, int] = {}

    def record(self, node_id: str, samples: int) -> None:
        """Add ``samples`` (an int ``>= 0``) to ``node_id``'s credit.

        Raises
        ------
        ValueError
            If ``node_id`` is not a non-empty string or ``samples`` is not an int ``>= 0``.
        """
        if not isinstance(node_id, str) or not node_id:
            raise ValueError(
                f"CreditTracker.record: node_id must be a non-empty str; got {node_id!r}"
            )
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise ValueError(
                f"CreditTracker.record: samples must be an int >= 0; got {samples!r} for "
                f"{node_id!r}"
            )
        self._credits[node_id] = self._credits.get(node_id, 0) + samples

    def get_credits(self, node_id: str) -> int:
        """Samples recorded for ``node_id`` (``0`` for a node never recorded)."""
        return self._credits.get(node_id, 0)

    def all_credits(self) -> dict[str, int]:
        """A copy of every node's credit, in the order nodes were first recorded."""
        return dict(self._credits)

    def total(self) -> int:
        """Samples recorded over every node."""
        return sum(self._credits.values())

    def reset(self) -> None:
        """Forget every credit."""
        self._credits.clear()


class GradientAverager:
    """The element-wise, unweighted mean of the nodes' gradient lists.

    Every node counts once, whatever its ``samples_used`` (the original library averages).
    The mean is taken in float64 in the order the updates come: two nodes sending ``0.1``
    and ``0.2`` average to ``(0.1 + 0.2) / 2 == 0.15000000000000002``, as in Python.

    Notes
    -----
    Keys are the union over the updates, in the order they are first seen. A key for which
    every node's list is empty or absent averages to ``[]``. Every other key must be sent by
    every node with the same length: a node missing a parameter, or sending another length,
    is refused with a :class:`ValueError` naming the node and the key (a model with missing
    or reshaped parameters is a bug, and averaging around it would hide it).

    Examples
    --------
    >>> def update(node, grads):
    ...     return LocalUpdate(node_id=node, round_id=1, gradients=grads, loss=0.0, samples_used=1)
    >>> GradientAverager().average([update("a", {"w": [0.1, 0.2]}), update("b", {"w": [0.2, 0.1]})])
    {'w': [0.15000000000000002, 0.15000000000000002]}
    >>> GradientAverager().average([update("a", {"w": [1.0], "e": []}), update("b", {"w": [3.0]})])
    {'w': [2.0], 'e': []}
    >>> GradientAverager().average([update("a", {"w": [1.0]}), update("b", {"v": [1.0]})])
    Traceback (most recent call last):
    ...
    ValueError: GradientAverager: node 'b' sends no gradient 'w' (node 'a' sends 1 values); every node must send every parameter
    """  # noqa: E501

    def average(self, updates: Sequence[LocalUpdate]) -> dict[str, list[float]]:
        """Average ``updates`` key by key, element by element.

        Parameters
        ----------
        updates : sequence of LocalUpdate
            At least one.

        Returns
        -------
        dict of str to list of float

        Raises
        ------
        ValueError
            ``"Cannot average an empty list of updates."`` for no updates; a node missing a
            key or sending another length (see the class notes).
        """
        if not updates:
            raise ValueError("Cannot average an empty list of updates.")
        return {key: _mean_of(key, updates) for key in layout_of(updates)}


def layout_of(updates: Sequence[LocalUpdate]) -> dict[str, int]:
    """``{key: length}`` of a round's updates: the union of their keys (first-seen order).

    A key's length is that of its non-empty lists; every node must send every key with
    values, at that length (else a :class:`ValueError` naming the node and the key).
    Keys whose lists are all empty or absent have length ``0``.
    """
    keys: dict[str, None] = {}
    for update in updates:
        keys.update(dict.fromkeys(update.gradients))
    layout: dict[str, int] = {}
    for key in keys:
        owner = next((u for u in updates if u.gradients.get(key)), None)
        if owner is None:
            layout[key] = 0
            continue
        length = len(owner.gradients[key])
        for update in updates:
            values = update.gradients.get(key)
            if values is None:
                raise ValueError(
                    f"GradientAverager: node {update.node_id!r} sends no gradient {key!r} "
                    f"(node {owner.node_id!r} sends {length} values); every node must send "
                    "every parameter"
                )
            if len(values) != length:
                raise ValueError(
                    f"GradientAverager: node {update.node_id!r} sends {len(values)} values for "
                    f"{key!r}, node {owner.node_id!r} sends {length}; every node must send "
                    "every parameter at one length"
                )
        layout[key] = length
    return layout


def _mean_of(key: str, updates: Sequence[LocalUpdate]) -> list[float]:
    rows = [u.gradients[key] for u in updates if u.gradients.get(key)]
    if not rows:
        return []
    total = np.zeros(len(rows[0]), dtype=np.float64)
    for row in rows:  # node order, one addition per node: Python's own sum, vectorised
        total += np.asarray(row, dtype=np.float64)
    mean: list[float] = (total / len(rows)).tolist()
    return mean
