"""Research metrics as a server stage: how each aggregated update relates to the aggregate.

:class:`ResearchStage` runs after aggregation (a post stage of the round engine) and reports,
per aggregated row (client id), the cosine similarity of its update with the round's aggregate
and its weight divergence ``||w_k - w|| / ||w||`` where ``w_k = x + Δ_k`` is the client's model
and ``w = x + Δ`` the aggregate's model (before any server optimizer), plus their means. It
changes nothing: the batch leaves as it came. See ``docs/metrics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from velocity.errors import ValidationError
from velocity.metrics import cosine_similarity, weight_divergence
from velocity.strategies import RoundBatch
from velocity.types import ParamSpec, StageContext, StageState

__all__ = ["ResearchStage"]


def _mean(values: Mapping[str, float]) -> float | None:
    finite = [v for v in values.values() if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


@dataclass(frozen=True)
class ResearchStage:
    """Cosine similarity and weight divergence of every aggregated update (metrics only)."""

    cosine: bool = True
    divergence: bool = True

    @property
    def name(self) -> str:
        return "research"

    def init(self, spec: ParamSpec) -> StageState:
        return {}

    def apply(
        self, x: RoundBatch, state: StageState, ctx: StageContext
    ) -> tuple[RoundBatch, StageState, Mapping[str, Any]]:
        if x.update is None:
            raise ValidationError("ResearchStage: runs after aggregation; no aggregate yet")
        metrics: dict[str, Any] = {}
        rows = x.rows
        if self.cosine:
            cos = cosine_similarity(rows, x.update.to(rows.device))
            per_client = {cid: float(v) for cid, v in zip(x.client_ids, cos.tolist(), strict=True)}
            metrics["cosine_similarity"] = per_client
            metrics["cosine_similarity_mean"] = _mean(per_client)
        if self.divergence:
            base = ctx.params.to(torch.float64)
            target = base + x.update.to(base.device, torch.float64)
            div = (
                torch.stack(
                    [
                        weight_divergence(
                            base + row.to(base.device, torch.float64), target
                        ).reshape(())
                        for row in rows
                    ]
                )
                if rows.shape[0]
                else torch.empty(0)
            )
            per_client = {cid: float(v) for cid, v in zip(x.client_ids, div.tolist(), strict=True)}
            metrics["weight_divergence"] = per_client
            metrics["weight_divergence_mean"] = _mean(per_client)
        return x, state, metrics
