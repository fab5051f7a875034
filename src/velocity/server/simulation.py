"""The one round loop of a simulated federation."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from velocity._core import Orchestrator
from velocity._random import torch_generator
from velocity.errors import ConfigurationError
from velocity.sim.population import ClientPopulation
from velocity.sim.provider import ClientResult, UpdateProvider
from velocity.sim.records import RoundRecord
from velocity.sim.sampling import DropoutModel, StragglerModel, select_clients
from velocity.types import ParamSpec

__all__ = ["Simulation", "SimulationSettings", "serialized_size"]

Evaluator = Callable[[Tensor], tuple[float, float]]
"""Maps flat global parameters to (test loss, test accuracy)."""


def serialized_size(spec: ParamSpec, params: Tensor) -> int:
    """Bytes of ``params`` serialized as safetensors under ``spec``'s names and shapes."""
    from safetensors.torch import save

    tensors = {k: v.contiguous() for k, v in spec.unflatten(params).items()}
    return len(save(tensors))


@dataclass(frozen=True)
class SimulationSettings:
    """Round-level behaviour of a simulation (see ``docs/configuration.md``)."""

    seed: int
    client_fraction: float = 1.0
    min_clients: int = 1
    dropout_rate: float = 0.0
    straggler: StragglerModel | None = None
    eval_every: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.client_fraction <= 1.0:
            raise ConfigurationError(
                f"client_fraction must be in (0, 1]; got {self.client_fraction}"
            )
        if self.min_clients < 1:
            raise ConfigurationError(f"min_clients must be >= 1; got {self.min_clients}")
        if self.eval_every < 1:
            raise ConfigurationError(f"eval_every must be >= 1; got {self.eval_every}")
        DropoutModel(self.dropout_rate)  # validates the rate


class Simulation:
    """select clients -> broadcast -> local training -> aggregate -> server step -> evaluate.

    The loop is the same whatever the provider: it selects the round's clients from the
    population, removes those that drop out or miss the deadline, asks the
    :class:`~velocity.sim.provider.UpdateProvider` to write each participant's update into a
    row of one preallocated ``(n, d)`` stack, and hands the stack to the aggregation state
    (:class:`velocity._core.Orchestrator`: strategy pipeline and server optimizer). Every
    random choice is derived from ``(seed, round, client, purpose)``.
    """

    def __init__(
        self,
        *,
        provider: UpdateProvider,
        population: ClientPopulation,
        spec: ParamSpec,
        init_params: Tensor,
        strategy: Any,
        settings: SimulationSettings,
        evaluate: Evaluator | None = None,
    ) -> None:
        self.provider = provider
        self.population = population
        self.spec = spec
        self.settings = settings
        self.evaluate = evaluate
        self.core = Orchestrator(init_params, strategy, spec=spec)
        self.dropout = DropoutModel(settings.dropout_rate)
        self.records: list[RoundRecord] = []
        self._stack = torch.empty(0, spec.d, dtype=torch.float32)
        self._payload = serialized_size(spec, self.core.global_params)

    @property
    def round(self) -> int:
        """Number of completed rounds."""
        return self.core.round

    @property
    def global_params(self) -> Tensor:
        return self.core.global_params

    def _rows(self, k: int) -> Tensor:
        if self._stack.shape[0] < k:
            self._stack = torch.empty(k, self.spec.d, dtype=torch.float32)
        return self._stack[:k]

    def _participants(self, round_: int) -> tuple[list[int], list[int], list[int], list[int]]:
        seed = self.settings.seed
        selected = select_clients(
            self.population.num_clients,
            self.settings.client_fraction,
            self.settings.min_clients,
            seed=seed,
            round_=round_,
        ).tolist()
        dropped = [c for c in selected if self.dropout.dropped(c, seed=seed, round_=round_)]
        gone = set(dropped)
        straggler = self.settings.straggler
        late = [
            c
            for c in selected
            if c not in gone
            and straggler is not None
            and straggler.late(c, seed=seed, round_=round_)
        ]
        gone.update(late)
        return selected, dropped, late, [c for c in selected if c not in gone]

    def run_round(self) -> RoundRecord:
        """Run the next round and return its record."""
        start = time.perf_counter()
        round_ = self.core.round + 1
        selected, dropped, late, active = self._participants(round_)
        ids = self.population.client_id
        aggregation: Mapping[str, Any] = {}
        results: list[ClientResult] = []
        train_loss: float | None = None
        if active:
            rows = self._rows(len(active))
            results = self.provider.train_round(round_, active, self.core.global_params, rows)
            train_loss = _weighted_loss(results)
            summary = self.core.aggregate_stacked(
                rows,
                [r.num_samples for r in results],
                [ids(c) for c in active],
                global_loss=train_loss,
                generator=torch_generator(self.settings.seed, round_, "aggregate"),
            )
            aggregation = summary.metrics
        else:
            # Nobody returned an update: the model stays, the round still counts.
            self.core.load_state(
                self.core.global_params,
                round_=round_,
                optimizer_state=self.core.optimizer_state,
                history=self.core.history,
            )
            aggregation = {"skipped": "no client returned an update"}
        loss = acc = None
        if self.evaluate is not None and (round_ % self.settings.eval_every == 0 or round_ == 1):
            loss, acc = self.evaluate(self.core.global_params)
        record = RoundRecord(
            round=round_,
            selected=tuple(ids(c) for c in selected),
            participated=tuple(ids(c) for c in active),
            dropped=tuple(ids(c) for c in dropped),
            stragglers=tuple(ids(c) for c in late),
            global_loss=loss,
            global_accuracy=acc,
            train_loss=train_loss,
            client_accuracy={
                ids(r.client): float(r.metrics["accuracy"])
                for r in results
                if "accuracy" in r.metrics
            },
            bytes_up=self._payload * len(active),
            bytes_down=self._payload * len(selected),
            duration_s=time.perf_counter() - start,
            aggregation=aggregation,
        )
        self.records.append(record)
        return record

    def run(
        self, rounds: int, on_round: Callable[[RoundRecord], None] | None = None
    ) -> list[RoundRecord]:
        """Run ``rounds`` more rounds; ``on_round`` is called after each."""
        out = []
        for _ in range(rounds):
            record = self.run_round()
            out.append(record)
            if on_round is not None:
                on_round(record)
        return out

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Tensors and JSON metadata that restore this simulation exactly (see resume)."""
        tensors = {"global_params": self.core.global_params.contiguous()}
        for key, value in (self.core.optimizer_state or {}).items():
            tensors[f"optimizer.{key}"] = value.contiguous()
        meta = {
            "round": self.core.round,
            "records": [r.to_dict() for r in self.records],
            "history": [s.to_dict() for s in self.core.history],
        }
        return tensors, meta

    def restore(self, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        """Undo :meth:`state`: continue from the saved round as if never interrupted."""
        from velocity.types import RoundSummary

        optimizer = {
            k.removeprefix("optimizer."): v
            for k, v in tensors.items()
            if k.startswith("optimizer.")
        }
        self.core.load_state(
            tensors["global_params"],
            round_=int(meta["round"]),
            optimizer_state=optimizer or None,
            history=[RoundSummary.from_dict(h) for h in meta["history"]],
        )
        self.records = [_record_from_dict(r) for r in meta["records"]]


def _weighted_loss(results: list[ClientResult]) -> float | None:
    pairs = [(r.loss, r.num_samples) for r in results if r.loss is not None]
    total = sum(n for _, n in pairs)
    if not pairs or total == 0:
        return None
    return sum(loss * n for loss, n in pairs) / total


def _record_from_dict(d: Mapping[str, Any]) -> RoundRecord:
    return RoundRecord(
        round=int(d["round"]),
        selected=tuple(d["selected"]),
        participated=tuple(d["participated"]),
        dropped=tuple(d["dropped"]),
        stragglers=tuple(d["stragglers"]),
        global_loss=d["global_loss"],
        global_accuracy=d["global_accuracy"],
        train_loss=d["train_loss"],
        client_accuracy=dict(d["client_accuracy"]),
        bytes_up=int(d["bytes_up"]),
        bytes_down=int(d["bytes_down"]),
        duration_s=float(d["duration_s"]),
        aggregation=dict(d["aggregation"]),
    )
