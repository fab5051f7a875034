"""Client stages: transformations of one client's update row, with per-client state.

A client stage has the engine's stage shape (``init(spec) -> state``,
``apply(row, state, ctx) -> (row, state, metrics)``); its state is per client and lives in
the :class:`~velocity.types.ClientStateStore` (checkpointed with the engine).
:func:`run_client_stages` is how every in-process provider applies them after training,
the same code a deployed node runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from velocity._validation import Constraint, Real, check_parameters
from velocity.types import ClientStateStore, ParamSpec, Stage, StageContext, StageState

__all__ = ["WorkerMomentum", "run_client_stages"]


@dataclass(frozen=True)
class WorkerMomentum:
    """Worker momentum: the client submits ``m_t = β m_{t−1} + (1 − β) g_t`` (``m_0 = 0``).

    Karimireddy et al. 2021, "Learning from History for Byzantine Robust Optimization";
    Allouah et al. 2023 pair it with NNM. The buffer ``m`` is the client's state.

    >>> import torch
    >>> from velocity.types import ParamSpec, StageContext
    >>> spec = ParamSpec.from_sizes({"w": 2})
    >>> ctx = StageContext(0, 1, 0, spec, torch.zeros(2))
    >>> row, state, _ = WorkerMomentum(0.5).apply(torch.ones(2), {}, ctx)
    >>> row.tolist(), state["m"].tolist()
    ([0.5, 0.5], [0.5, 0.5])
    """

    beta: float

    _constraints: ClassVar[Mapping[str, Constraint]] = {"beta": Real(low=0, high=1, high_open=True)}

    def __post_init__(self) -> None:
        check_parameters(self)

    @property
    def name(self) -> str:
        return "momentum"

    def init(self, spec: ParamSpec) -> StageState:
        return {}

    def apply(
        self, x: Tensor, state: StageState, ctx: StageContext
    ) -> tuple[Tensor, StageState, Mapping[str, Any]]:
        buf = state.get("m")
        if buf is None:
            buf = torch.zeros_like(x)
        buf.mul_(self.beta).add_(x, alpha=1.0 - self.beta)
        x.copy_(buf)
        return x, {"m": buf}, {}


def run_client_stages(
    stages: Sequence[Stage[Tensor]],
    row: Tensor,
    store: ClientStateStore,
    ctx: StageContext,
) -> tuple[Tensor, dict[str, Mapping[str, Any]]]:
    """Apply ``stages`` to one client's ``row`` (``ctx.client_id`` names the client),
    reading and writing that client's state in ``store``; return the row and the metrics."""
    assert ctx.client_id is not None
    metrics: dict[str, Mapping[str, Any]] = {}
    for stage in stages:
        row, state, out = stage.apply(row, store.get(ctx.client_id, stage.name), ctx)
        store.put(ctx.client_id, stage.name, state)
        if out:
            metrics[stage.name] = out
    return row, metrics
