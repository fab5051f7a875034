"""YAML config -> wired simulation -> outputs directory."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from velocity.sim.records import RoundRecord
from velocity.types import tensor_digest

__all__ = ["build_simulation", "model_digest", "run_experiment"]

OnRound = Callable[[RoundRecord], None]


def model_digest(params: torch.Tensor) -> str:
    """SHA-256 of the flat float32 parameters (little-endian bytes)."""
    return tensor_digest(params)


def build_simulation(config: Any, *, seed: int, datasets: tuple[Any, Any] | None = None) -> Any:
    """Wire the simulation described by ``config`` (an ``ExperimentConfig``).

    ``datasets`` (train, test) skips loading when the caller already holds them.
    """
    from velocity.client import TrainConfig
    from velocity.server.builder import make_simulation
    from velocity.server.simulation import SimulationSettings
    from velocity.sim.sampling import StragglerModel
    from velocity.strategies import FedProx, Pipeline

    strategy = config.strategy_obj()
    aggregator = strategy.aggregator if isinstance(strategy, Pipeline) else strategy
    client = config.client
    sim_cfg = config.simulation
    straggler = None
    if sim_cfg.straggler.enabled:
        straggler = StragglerModel(
            deadline_s=sim_cfg.straggler.deadline_s,
            distribution=sim_cfg.straggler.delay_distribution,
            mean_s=sim_cfg.straggler.delay_mean_s,
            sigma=sim_cfg.straggler.delay_sigma,
        )
    return make_simulation(
        dataset=config.dataset,
        model_id=config.model_id,
        strategy=strategy,
        num_clients=config.training.num_clients,
        settings=SimulationSettings(
            seed=seed,
            client_fraction=config.training.client_fraction,
            min_clients=config.training.min_clients,
            dropout_rate=sim_cfg.dropout_rate,
            straggler=straggler,
            eval_every=config.training.eval_every,
        ),
        train_config=TrainConfig(
            batch_size=client.batch_size,
            local_epochs=client.local_epochs or 1,  # unset when local_steps is given
            local_steps=client.local_steps,
            lr=client.lr,
            momentum=client.momentum,
            weight_decay=client.weight_decay,
            prox_mu=aggregator.mu if isinstance(aggregator, FedProx) else client.prox_mu,
        ),
        partitioning=sim_cfg.partitioning,
        alpha=sim_cfg.alpha,
        num_shards_per_client=sim_cfg.num_shards_per_client,
        data_dir=config.data_dir,
        attacks=config.attack_specs(),
        datasets=datasets,
    )


def run_experiment(
    config: Any,
    *,
    output_dir: str | Path | None = None,
    on_round: OnRound | None = None,
    rounds: int | None = None,
    seed: int | None = None,
    resume: bool = False,
) -> Any:
    """Run the experiment ``config`` (an ``ExperimentConfig``) and write its outputs.

    Outputs go to ``output_dir`` or ``<config.output.dir>/<config.name>``. ``rounds`` and
    ``seed`` override the config. With ``output.checkpoint_every`` set, a checkpoint is saved
    every that many rounds under ``checkpoints/``; ``resume=True`` continues from the latest
    one and gives the same final model as an uninterrupted run.
    """
    from velocity.experiments.outputs import write_outputs
    from velocity.experiments.results import RunResult
    from velocity.server.checkpoint import CheckpointStore

    start = time.perf_counter()
    seed = config.seed if seed is None else int(seed)
    total = config.training.num_rounds if rounds is None else int(rounds)
    out = Path(output_dir) if output_dir is not None else Path(config.output.dir) / config.name
    out.mkdir(parents=True, exist_ok=True)
    federation = build_simulation(config, seed=seed)
    simulation = federation.simulation
    every = config.output.checkpoint_every
    store = CheckpointStore(f"local://{out / 'checkpoints'}") if every else None
    if resume and store is not None and store.latest() is not None:
        tensors, meta = store.load()
        simulation.restore(tensors, meta)

    def after_round(record: RoundRecord) -> None:
        if store is not None and every and record.round % every == 0:
            tensors, meta = simulation.state()
            store.save(record.round, tensors, meta)
        if on_round is not None:
            on_round(record)

    simulation.run(max(0, total - simulation.round), on_round=after_round)
    records = tuple(simulation.records)
    accs = [r.global_accuracy for r in records if r.global_accuracy is not None]
    params = simulation.global_params
    result = RunResult(
        name=config.name,
        config=config.resolved(),
        config_hash=config.config_hash(),
        seed=seed,
        dataset=config.dataset,
        model_id=config.model_id,
        num_params=federation.num_params,
        num_clients=config.training.num_clients,
        client_ids=federation.client_ids,
        rounds=records,
        label_histogram=federation.label_histogram,
        final_model_digest=model_digest(params),
        wall_time_s=time.perf_counter() - start,
        final_accuracy=accs[-1] if accs else None,
        best_accuracy=max(accs) if accs else None,
    )
    write_outputs(
        result, out, save_plots=config.output.save_plots, save_metrics=config.output.save_metrics
    )
    if config.output.save_model:
        from safetensors.torch import save_file

        tensors = {k: v.contiguous() for k, v in simulation.spec.unflatten(params).items()}
        save_file(tensors, str(out / "global_model.safetensors"))
    return result
