"""Per-client evaluation of the global model on each client's held-out split.

Each client's held-out split is drawn from the **test** set to match the client's training
label distribution (``samples`` examples, classes in proportion to its training label
counts, largest-remainder rounding, without replacement while a class has examples left).
The training data are untouched, so turning the metric on never changes the model: the same
config gives the same digests with and without it. The splits are drawn once, from
``torch_generator(seed, "client_eval", client index)``.

:class:`ClientEvaluator` is an annotator of the round engine: on every round whose global
model was evaluated it adds ``stages["client_eval"]`` to the result: per-client ``accuracy``
and ``loss`` and :func:`velocity.metrics.fairness_summary` of the accuracies (``gini``,
``worst_10pct``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Final

import torch
from torch import Tensor

from velocity._random import torch_generator
from velocity.errors import ConfigurationError, ValidationError
from velocity.metrics import fairness_summary
from velocity.types import RoundResult

__all__ = ["MAX_EVAL_CLIENTS", "ClientEvaluator", "matched_split"]

MAX_EVAL_CLIENTS: Final = 10_000
"""Most clients :class:`ClientEvaluator` evaluates (every evaluated round costs
``clients x samples`` forward passes)."""

EvalFn = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[float, float]]
"""``(params, x, y, indices) -> (loss, accuracy)``."""


def matched_split(
    histogram: Sequence[int], test_labels: Tensor, samples: int, generator: torch.Generator
) -> Tensor:
    """Test-set indices (``(m,)`` int64) whose labels follow ``histogram``'s proportions.

    ``m = samples`` when the client has any training example (``0`` otherwise). Class ``c``
    gets ``floor(samples * h_c / sum(h))`` examples, the remainders going to the largest
    fractional parts (ties to the lower class); a class asked for more examples than the
    test set holds repeats them (drawn with replacement beyond the first pass).

    >>> g = torch.Generator().manual_seed(0)
    >>> idx = matched_split([3, 1], torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), 4, g)
    >>> sorted(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])[idx].tolist())
    [0, 0, 0, 1]
    """
    counts = [int(h) for h in histogram]
    if any(h < 0 for h in counts):
        raise ValidationError(f"matched_split: label counts must be >= 0; got {counts}")
    total = sum(counts)
    if total == 0 or samples <= 0:
        return torch.empty(0, dtype=torch.int64)
    exact = [samples * h / total for h in counts]
    wanted = [int(e) for e in exact]
    left = samples - sum(wanted)
    by_remainder = sorted(range(len(counts)), key=lambda c: (-(exact[c] - wanted[c]), c))
    for c in by_remainder[:left]:
        wanted[c] += 1
    picked: list[Tensor] = []
    for c, need in enumerate(wanted):
        if need == 0:
            continue
        pool = torch.nonzero(test_labels == c).flatten()
        if pool.numel() == 0:
            raise ValidationError(
                f"matched_split: the test set has no example of class {c}, which the client "
                "holds; per-client evaluation cannot match its label distribution"
            )
        full, rest = divmod(need, int(pool.numel()))
        for _ in range(full):
            picked.append(pool[torch.randperm(pool.numel(), generator=generator)])
        if rest:
            picked.append(pool[torch.randperm(pool.numel(), generator=generator)[:rest]])
    return torch.cat(picked)


class ClientEvaluator:
    """Engine annotator: the global model's accuracy on every client's held-out split.

    Parameters
    ----------
    evaluate : callable
        ``(params, x, y, indices) -> (loss, accuracy)`` (the trainer's ``evaluate``).
    test_x, test_y : Tensor
        The test set the splits are drawn from.
    client_ids : sequence of str
        Every client, in population order.
    histograms : sequence of sequence of int
        Each client's training label counts (``Partition.label_histogram``), same order.
    samples : int
        Held-out examples per client.
    seed : int
        The run's seed.
    """

    def __init__(
        self,
        evaluate: EvalFn,
        test_x: Tensor,
        test_y: Tensor,
        *,
        client_ids: Sequence[str],
        histograms: Sequence[Sequence[int]],
        samples: int,
        seed: int,
    ) -> None:
        if len(client_ids) != len(histograms):
            raise ValidationError(
                f"ClientEvaluator: {len(client_ids)} client ids but {len(histograms)} histograms"
            )
        if len(client_ids) > MAX_EVAL_CLIENTS:
            raise ConfigurationError(
                f"metrics.client_eval: at most {MAX_EVAL_CLIENTS} clients can be evaluated "
                f"every round; this federation has {len(client_ids)}"
            )
        self._evaluate = evaluate
        self._x = test_x
        self._y = test_y
        self.splits: dict[str, Tensor] = {
            cid: matched_split(hist, test_y, samples, torch_generator(seed, "client_eval", i))
            for i, (cid, hist) in enumerate(zip(client_ids, histograms, strict=True))
        }

    def annotate(self, result: RoundResult, params: Tensor) -> RoundResult:
        """Add ``stages["client_eval"]`` on rounds whose global model was evaluated."""
        if result.global_accuracy is None:
            return result
        accuracy: dict[str, float] = {}
        loss: dict[str, float] = {}
        for cid, idx in self.splits.items():
            if idx.numel() == 0:
                continue
            loss[cid], accuracy[cid] = self._evaluate(params, self._x, self._y, idx)
        report = {"accuracy": accuracy, "loss": loss, **fairness_summary(accuracy)}
        return replace(result, stages={**result.stages, "client_eval": report})
