"""A YAML experiment with ``parameter_server.enabled: true``: ByzPy's parameter server.

:func:`build_parameter_server` wires :class:`velocity.server.ParameterServer` from the config
— ``training.num_clients`` nodes, the last ``parameter_server.byzantine`` of them Byzantine
(running ``parameter_server.attack``), each honest node holding its partition
(``simulation.partitioning``) and computing one minibatch gradient (``client.batch_size``,
worker momentum ``client.momentum``) per round at the global parameters; the strategy's
pre-aggregators and aggregator combine the gradients and the server steps
``x ← x − client.lr · agg`` — and returns it as a :class:`~velocity.server.Federation`, so the
run goes through the same runner as a federated one: evaluation (``training.eval_every``),
checkpoints and resume, governance, tracking, outputs and the report.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from velocity.data import ArrayDataset
    from velocity.experiments.config import ExperimentConfig
    from velocity.server.builder import Federation
    from velocity.strategies import RoundBatch
    from velocity.types import Stage

__all__ = ["build_parameter_server"]

_EVAL_CHUNK = 4096


def build_parameter_server(
    config: ExperimentConfig,
    *,
    seed: int,
    datasets: tuple[ArrayDataset, ArrayDataset] | None = None,
    stages: Sequence[Stage[RoundBatch]] = (),
) -> Federation:
    """The parameter server ``config`` describes, as a federation (its engine is the PS's)."""
    from torch.func import functional_call
    from torch.nn import functional as F

    from velocity._random import derive_seed
    from velocity.attacks import parse_attack
    from velocity.data import load_dataset, partition
    from velocity.errors import ConfigurationError
    from velocity.models import build_model
    from velocity.server.builder import Federation, adversary_of
    from velocity.server.parameter_server import ByzantineNode, HonestNode, ParameterServer

    section = config.parameter_server
    if not section.enabled:
        raise ConfigurationError("build_parameter_server: parameter_server is not enabled")
    if datasets is not None:
        train, test = datasets
    else:
        train = load_dataset(config.dataset, split="train", data_dir=config.data_dir)
        test = load_dataset(config.dataset, split="test", data_dir=config.data_dir)
    n = config.training.num_clients
    part = partition(
        train.y,
        n,
        config.simulation.partitioning,
        seed=derive_seed(seed, "partition"),
        alpha=config.simulation.alpha,
        num_shards_per_client=config.simulation.num_shards_per_client,
        groups=train.groups,
    )
    extra = {"in_features": int(train.x[0].numel())} if config.model_id == "logreg" else {}
    model = build_model(
        config.model_id,
        num_classes=train.num_classes,
        seed=derive_seed(seed, "init") % 2**31,
        **extra,
    )
    client = config.client
    b = section.byzantine
    h = n - b

    def rows(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = int(part.offsets[i]), int(part.offsets[i + 1])
        idx = part.order[lo:hi]
        return train.x[idx], train.y[idx]

    honest = []
    for i in range(h):
        x, y = rows(i)
        honest.append(
            HonestNode(
                copy.deepcopy(model), x, y, batch_size=client.batch_size, momentum=client.momentum
            )
        )
    byzantine = []
    if b:
        attack = parse_attack(section.attack)  # type: ignore[arg-type]
        needs_data = attack.kind == "data" or attack.needs_own
        for i in range(h, n):
            x, y = rows(i)
            byzantine.append(
                ByzantineNode(
                    attack,
                    model=copy.deepcopy(model) if needs_data else None,
                    x=x if needs_data else None,
                    y=y if needs_data else None,
                    batch_size=client.batch_size,
                    num_classes=train.num_classes,
                )
            )
    spec = honest[0].spec  # the model's whole state dict (buffers included)

    @torch.no_grad()
    def evaluate(params: torch.Tensor) -> tuple[float, float]:
        tensors = spec.unflatten(params)
        was_training = model.training
        model.eval()
        total_loss, correct = 0.0, 0
        try:
            for start in range(0, len(test.y), _EVAL_CHUNK):
                xs, ys = test.x[start : start + _EVAL_CHUNK], test.y[start : start + _EVAL_CHUNK]
                out = functional_call(model, tensors, (xs,))
                total_loss += float(F.cross_entropy(out, ys, reduction="sum"))
                correct += int((out.argmax(dim=-1) == ys).sum())
        finally:
            model.train(was_training)
        count = max(1, len(test.y))
        return total_loss / count, correct / count

    ps = ParameterServer(
        honest,
        byzantine,
        config.strategy_obj(),
        update_byzantines=section.update_byzantines,
        lr=client.lr,
        seed=seed,
        evaluate=evaluate,
        eval_every=config.training.eval_every,
        stages=stages,
    )
    histogram = part.label_histogram(train.y, train.num_classes)
    return Federation(
        engine=ps.engine,
        adversary=adversary_of(ps.engine),
        label_histogram=histogram[:1000].tolist(),
        num_params=spec.d,
        client_ids=ps.node_ids,
        num_classes=train.num_classes,
        train=train,
        test=test,
    )
