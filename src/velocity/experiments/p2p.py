"""A YAML experiment with ``p2p.enabled: true``: decentralized training, the same outputs.

:func:`run_p2p` builds :class:`velocity.p2p.DecentralizedSGD` from the config (the nodes are
``training.num_clients``; ``client.lr`` and ``client.batch_size`` are the local step;
``simulation.partitioning``/``alpha`` split the data), runs ``training.num_rounds`` rounds
and writes what a server-based run writes (``summary.json``, ``metrics.json``, the report,
the plots). Each round is one :class:`~velocity.types.RoundResult` whose fields mean, for a
peer-to-peer run:

- ``selected_client_ids`` / ``participated``: every node (``node-<i>``), honest or not;
- ``global_accuracy``: the honest nodes' mean test accuracy (evaluated rounds);
- ``client_accuracy``: each honest node's **test** accuracy (evaluated rounds);
- ``train_loss``: the honest nodes' mean training loss before the step;
- ``bytes_up``: float32 vectors sent along every edge (``4 · d · |E|``); ``bytes_down`` 0;
- ``aggregation``: ``{"rule": <mixing>, "n": <nodes>}``;
- ``stages["p2p"]``: ``consensus_distance`` (honest nodes, after mixing), ``node_accuracy``,
  ``min_node_accuracy``, ``max_node_accuracy``, ``byzantine_nodes``, ``mixing``, ``topology``.

The final model digest is the SHA-256 of every node's parameters, the ``(n, d)`` stack in
node order; ``output.save_model`` writes that stack to ``node_models.safetensors``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from velocity.types import RoundResult, tensor_digest

if TYPE_CHECKING:
    from collections.abc import Callable

    from velocity.experiments.config import ExperimentConfig
    from velocity.experiments.results import RunResult
    from velocity.p2p import DecentralizedSGD

__all__ = ["build_p2p", "run_p2p"]


def build_p2p(config: ExperimentConfig) -> DecentralizedSGD:
    """The decentralized run ``config`` describes (its ``p2p`` section must be on)."""
    from velocity.errors import ConfigurationError
    from velocity.p2p import DecentralizedSGD

    p2p = config.p2p
    if not p2p.enabled:
        raise ConfigurationError("build_p2p: the config's p2p section is not enabled")
    return DecentralizedSGD.from_config(
        dataset=config.dataset,
        model=config.model_id,
        n_nodes=config.training.num_clients,
        topology=p2p.topology,
        topology_params=p2p.topology_params,
        byzantine=p2p.byzantine,
        attack=p2p.attack,
        attack_space=p2p.attack_space,
        attack_knowledge=p2p.attack_knowledge,
        mixing=p2p.mixing,
        mixing_params=p2p.mixing_params,
        partition_scheme=config.simulation.partitioning,
        alpha=config.simulation.alpha,
        lr=config.client.lr,
        batch_size=config.client.batch_size,
        seed=config.seed,
        eval_every=config.training.eval_every,
        train_samples=p2p.train_samples,
        test_samples=p2p.test_samples,
        data_dir=config.data_dir,
    )


def run_p2p(
    config: ExperimentConfig,
    out: Path,
    *,
    total: int,
    started: float,
    on_round: Callable[[RoundResult], None] | None = None,
    claim: Callable[[], None] | None = None,
) -> RunResult:
    """Run ``total`` rounds of the peer-to-peer experiment ``config`` into ``out``.

    ``claim`` is called once the run is built (data and model loaded), before the first
    round: the runner creates the run directory and its marker there.
    """
    from safetensors.torch import save_file

    from velocity.experiments.outputs import write_outputs
    from velocity.experiments.results import RunResult, run_environment

    sgd = build_p2p(config)
    if claim is not None:
        claim()
    n = sgd.n_nodes
    ids = tuple(f"node-{i}" for i in range(n))
    honest_ids = [ids[i] for i in sgd.honest_nodes]
    d = int(sgd.params.shape[1])
    edges = len(sgd.topology.edges)
    records: list[RoundResult] = []
    for r in range(total):
        tick = time.perf_counter()
        last = r == total - 1
        step = sgd.step(evaluate=True if last else None)
        accuracy = step.node_accuracy
        per_node = {} if accuracy is None else dict(zip(honest_ids, accuracy, strict=True))
        record = RoundResult(
            round=step.round,
            selected_client_ids=ids,
            participated=ids,
            global_accuracy=step.honest_mean_accuracy,
            train_loss=step.loss,
            client_accuracy=per_node,
            samples={cid: sgd.batch_size for cid in ids},
            bytes_up=4 * d * edges,
            duration_s=time.perf_counter() - tick,
            aggregation={"rule": sgd.mixing, "n": n},
            stages={
                "p2p": {
                    "consensus_distance": step.consensus_distance,
                    "node_accuracy": per_node or None,
                    "min_node_accuracy": min(accuracy) if accuracy else None,
                    "max_node_accuracy": max(accuracy) if accuracy else None,
                    "byzantine_nodes": list(sgd.byzantine_nodes),
                    "mixing": sgd.mixing,
                    "topology": config.p2p.topology,
                }
            },
        )
        records.append(record)
        if on_round is not None:
            on_round(record)
    accs = [r.global_accuracy for r in records if r.global_accuracy is not None]
    params = sgd.params
    result = RunResult(
        name=config.name,
        config=config.resolved(),
        config_hash=config.config_hash(),
        seed=config.seed,
        dataset=config.dataset,
        model_id=config.model_id,
        num_params=d,
        num_clients=n,
        client_ids=ids,
        rounds=tuple(records),
        label_histogram=sgd.label_histogram()[:1000],
        final_model_digest=tensor_digest(params.reshape(-1)),
        wall_time_s=time.perf_counter() - started,
        final_accuracy=accs[-1] if accs else None,
        best_accuracy=max(accs) if accs else None,
        environment=run_environment(),
    )
    write_outputs(
        result, out, save_plots=config.output.save_plots, save_metrics=config.output.save_metrics
    )
    if config.output.save_model:
        save_file({"params": params.contiguous()}, str(out / "node_models.safetensors"))
    return result
