"""Research metrics: weight divergence, cosine similarity, fairness (Gini).

Pure functions: tensors (or numbers) in, float64 results out; no logging, no state. Use them
in callbacks and analyses, e.g. on a round's client updates and aggregate, or on the
per-client accuracies of a :class:`velocity.types.RoundResult`.

=========================  ==================================================================
:func:`weight_divergence`  ``‖w_k − w_g‖ / ‖w_g‖`` per client model (Zhao et al. 2018)
:func:`update_divergence`  ``‖Δ_k − Δ‖ / ‖Δ‖`` per client update against the aggregate
:func:`cosine_similarity`  ``cos(x_k, r)`` per row, in [-1, 1]
:func:`gini`               Gini coefficient of non-negative values
:func:`fairness_summary`   mean, std, min, max, tails and Gini of per-client values
=========================  ==================================================================

Examples
--------
>>> import torch
>>> from velocity.metrics import cosine_similarity, gini
>>> cosine_similarity(torch.tensor([[1.0, 1.0], [1.0, -1.0]]), torch.tensor([1.0, 0.0]))
tensor([0.7071, 0.7071], dtype=torch.float64)
>>> gini([0.0, 0.0, 0.0, 1.0])
0.75
"""

from velocity.metrics._fairness import Values, fairness_summary, gini
from velocity.metrics._vectors import cosine_similarity, update_divergence, weight_divergence

__all__ = [
    "Values",
    "cosine_similarity",
    "fairness_summary",
    "gini",
    "update_divergence",
    "weight_divergence",
]
