"""YAML config -> wired simulation -> outputs directory."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from velocity.errors import ConfigurationError
from velocity.types import RoundResult, tensor_digest

if TYPE_CHECKING:
    from velocity.compression import DownlinkCodec
    from velocity.data import ArrayDataset
    from velocity.experiments.config import ExperimentConfig
    from velocity.experiments.results import RunResult
    from velocity.privacy import PrivacySettings
    from velocity.server.builder import Federation
    from velocity.sim.secure import SecAggConfig
    from velocity.strategies import RoundBatch
    from velocity.types import ParamSpec, Stage, UpdateEncoder

__all__ = ["build_simulation", "model_digest", "run_experiment"]

OnRound = Callable[[RoundResult], None]


def model_digest(params: torch.Tensor) -> str:
    """SHA-256 of the flat float32 parameters (little-endian bytes)."""
    return tensor_digest(params)


def build_simulation(
    config: ExperimentConfig,
    *,
    seed: int,
    datasets: tuple[ArrayDataset, ArrayDataset] | None = None,
    stages: Sequence[Stage[RoundBatch]] = (),
) -> Federation:
    """Wire the federation described by ``config`` (through the one builder).

    ``datasets`` (train, test) skips loading when the caller already holds them; ``stages``
    are extra server stages before aggregation (the audit trail's). The ``metrics`` section
    adds the research stage and the per-client evaluator. With ``parameter_server.enabled``
    the federation is ByzPy's parameter server
    (:func:`velocity.experiments.parameter_server.build_parameter_server`).
    """
    from velocity.client import TrainConfig
    from velocity.server.builder import make_simulation
    from velocity.server.research import ResearchStage
    from velocity.sim.backends import BackendSpec
    from velocity.sim.sampling import StragglerModel
    from velocity.sim.settings import SimulationSettings
    from velocity.strategies import FedProx

    if config.p2p.enabled:
        raise ConfigurationError(
            "build_simulation wires a server-based federation; a config with p2p.enabled is "
            "built by velocity.experiments.p2p.build_p2p"
        )
    if config.parameter_server.enabled:
        from velocity.experiments.parameter_server import build_parameter_server

        return build_parameter_server(config, seed=seed, datasets=datasets, stages=stages)
    guard = protections(config, seed=seed)
    strategy = config.strategy_obj()
    aggregator = strategy.aggregator
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
    metrics = config.metrics
    post_stages: list[Stage[RoundBatch]] = []
    if metrics.cosine_similarity or metrics.weight_divergence:
        post_stages.append(
            ResearchStage(cosine=metrics.cosine_similarity, divergence=metrics.weight_divergence)
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
            delays=config.async_fl.delay_model() if config.async_fl.enabled else None,
        ),
        train_config=TrainConfig(
            batch_size=client.batch_size,
            local_epochs=client.local_epochs or 1,  # unset when local_steps is given
            local_steps=client.local_steps,
            lr=client.lr,
            momentum=client.momentum,
            weight_decay=client.weight_decay,
            prox_mu=aggregator.mu if isinstance(aggregator, FedProx) else client.prox_mu,
            optimizer=client.optimizer,
            beta1=client.beta1,
            beta2=client.beta2,
            eps=client.eps,
            keep_optimizer_state=client.keep_optimizer_state,
        ),
        device=client.device,
        partitioning=sim_cfg.partitioning,
        alpha=sim_cfg.alpha,
        num_shards_per_client=sim_cfg.num_shards_per_client,
        data_dir=config.data_dir,
        attacks=config.attack_specs(),
        datasets=datasets,
        backend=BackendSpec(**config.backend.model_dump()),
        stages=stages,
        post_stages=post_stages,
        client_eval_samples=metrics.client_eval_samples if metrics.client_eval else None,
        num_rounds=config.training.num_rounds,
        privacy=guard.privacy,
        encoder_for=guard.encoder_for,
        secure=guard.secure,
        downlink_for=guard.downlink_for,
        asynchronous=(
            config.async_fl.settings(config.training.clients_per_round)
            if config.async_fl.enabled
            else None
        ),
    )


@dataclass(frozen=True)
class Protections:
    """``make_simulation``'s ``privacy``, ``encoder_for`` and ``secure`` arguments."""

    privacy: PrivacySettings | None = None
    encoder_for: Callable[[ParamSpec], UpdateEncoder] | None = None
    secure: SecAggConfig | None = None
    downlink_for: Callable[[ParamSpec], DownlinkCodec] | None = None


def protections(config: ExperimentConfig, *, seed: int) -> Protections:
    """What the config's ``privacy``, ``compression`` and ``secure_aggregation`` sections
    ask ``make_simulation`` for (``None`` where a section is off)."""
    privacy = config.privacy
    settings = None
    if privacy.enabled:
        from velocity.privacy import PrivacySettings

        fields = privacy.model_dump()
        fields.pop("enabled")
        settings = PrivacySettings(**fields)
    compression = config.compression
    encoder_for = downlink_for = None
    if compression.enabled:
        from velocity.compression import CodecEncoder, DownlinkCodec, codec_from_config

        codec = codec_from_config(
            compression.strategy,
            topk_ratio=compression.topk_ratio,
            quantization_bits=compression.quantization_bits,
            qsgd_levels=compression.qsgd_levels,
        )
        encoder_for = functools.partial(
            CodecEncoder,
            codec,
            error_feedback=compression.error_feedback,
            memory_mb=compression.error_feedback_memory_mb,
        )
        if compression.downlink:
            downlink_for = functools.partial(
                DownlinkCodec, codec, error_feedback=compression.error_feedback
            )
    secure = config.secure_aggregation
    secagg = None
    if secure.enabled:
        from velocity.secagg import ThreatModel
        from velocity.sim.secure import SecAggConfig

        clip = secure.clip
        if clip is None:
            clip = privacy.max_grad_norm if privacy.enabled else 1.0
            if privacy.enabled and privacy.distributed:
                clip *= 2.0  # room for the clients' noise shares (beyond: clipped per coordinate)
        secagg = SecAggConfig(
            threat=ThreatModel(
                corrupt_fraction=secure.corrupt_fraction,
                dropout_rate=secure.dropout_rate,
                security_bits=secure.security_bits,
                correctness_bits=secure.correctness_bits,
            ),
            clip=clip,
            fixed_point_bits=secure.fixed_point_bits,
            dropout_after_masking=secure.dropout_after_masking,
            seed=seed,
        )
    return Protections(settings, encoder_for, secagg, downlink_for)


def run_experiment(
    config: ExperimentConfig,
    *,
    output_dir: str | Path | None = None,
    on_round: OnRound | None = None,
    rounds: int | None = None,
    seed: int | None = None,
    resume: bool = False,
) -> RunResult:
    """Run the experiment ``config`` and write its outputs.

    Outputs go to ``output_dir`` or ``<config.output.dir>/<config.name>``. ``rounds`` and
    ``seed`` override the config; the overrides are part of the run's configuration
    (``config.resolved.yaml`` and the config hash say the seed and rounds it ran with). With
    ``output.checkpoint_every`` set, a checkpoint is saved every that many rounds under
    ``checkpoints/``; ``resume=True`` continues from the latest good one and gives the same
    final model as an uninterrupted run.

    Checkpoints carry the run's identity (:meth:`ExperimentConfig.trajectory_hash` and the
    seed): resume refuses another run's checkpoints, and a fresh run moves the checkpoints
    it finds aside (``checkpoints.prev-N/``, with a warning) instead of mixing state. While
    a run is in progress ``RUNNING.json`` marks the directory; it is removed when the run
    completes, so a marker left behind says the run was interrupted (``velocity run
    --resume`` continues it). The directory's writability is checked before training.

    With ``tracking.tensorboard`` / ``tracking.mlflow`` on, every round is also logged to
    TensorBoard / MLflow (:mod:`velocity.experiments.tracking`); a missing library is
    refused before anything is built.
    """
    import warnings

    from velocity.experiments.governance import open_governance
    from velocity.experiments.outputs import write_outputs
    from velocity.experiments.results import RunResult, run_environment
    from velocity.experiments.tracking import close_trackers, open_trackers, require_trackers
    from velocity.server.checkpoint import CheckpointStore

    start = time.perf_counter()
    overrides: dict[str, object] = {}
    if seed is not None and int(seed) != config.seed:
        overrides["seed"] = int(seed)
    if rounds is not None and int(rounds) >= 1 and int(rounds) != config.training.num_rounds:
        overrides["training.num_rounds"] = int(rounds)
    if overrides:
        config = config.with_updates(overrides)
    seed = config.seed
    total = config.training.num_rounds if rounds is None else max(0, int(rounds))
    out = Path(output_dir) if output_dir is not None else Path(config.output.dir) / config.name
    identity = {"trajectory_hash": config.trajectory_hash(), "seed": seed}
    marker = out / MARKER
    every = config.output.checkpoint_every
    ckpt_dir = out / "checkpoints"
    store = CheckpointStore(f"local://{ckpt_dir}")
    existing = store.latest() is not None
    if config.p2p.enabled:
        if resume:
            raise ConfigurationError(
                "resume: a peer-to-peer run keeps no checkpoints; run it again from the start"
            )
        from velocity.experiments.p2p import run_p2p

        result = run_p2p(
            config,
            out,
            total=total,
            started=start,
            on_round=on_round,
            claim=lambda: _claim(out, marker, identity),
        )
        marker.unlink(missing_ok=True)
        return result
    if resume and config.async_fl.enabled:
        raise ConfigurationError(
            "resume: an asynchronous run's in-flight tasks are not part of its checkpoints, so "
            "it cannot be resumed exactly; run it again from the start"
        )
    if resume and existing:
        from velocity.server.checkpoint import check_identity

        check_identity(str(ckpt_dir), store.identity(), identity)
    require_trackers(config.tracking)  # a missing tracking library: refused before anything
    governance = open_governance(config, out)  # a bad signing key: refused before anything
    # Build first (data, model): a refused or failing run leaves no directory behind.
    federation = build_simulation(
        config, seed=seed, stages=() if governance is None else [governance.stage]
    )
    engine = federation.engine
    if existing and not resume:
        aside = _aside(ckpt_dir)
        ckpt_dir.rename(aside)
        interrupted = " (an interrupted run: use resume to continue it)" if marker.exists() else ""
        warnings.warn(
            f"{ckpt_dir} held checkpoints of an earlier run{interrupted}; moved them to "
            f"{aside} and starting afresh",
            stacklevel=2,
        )
    governed = out / "governance"
    if governance is not None and governed.exists() and not (resume and existing):
        aside = _aside(governed)
        governed.rename(aside)
        warnings.warn(
            f"{governed} held an earlier run's governance files; moved them to {aside}",
            stacklevel=2,
        )
    _claim(out, marker, identity)
    if resume and existing:
        tensors, meta = store.load(identity=identity)
        engine.restore(tensors, meta)
    if governance is not None:
        governance.start(federation, resume=resume and existing)

    def after_round(result: RoundResult) -> None:
        if every and result.round % every == 0:
            tensors, meta = engine.state()
            store.save(result.round, tensors, {**meta, "identity": identity})
        if on_round is not None:
            on_round(result)

    trackers = open_trackers(config, out, start_round=engine.round)
    engine.callbacks.extend(trackers)
    try:
        engine.run(max(0, total - engine.round), on_round=after_round)
    except BaseException:
        close_trackers(trackers, failed=True)
        if governance is not None:
            governance.abort()
        raise
    finally:
        engine.provider.close()  # workers, Ray actors, connections: released either way
    close_trackers(trackers)
    records = tuple(engine.results)
    accs = [r.global_accuracy for r in records if r.global_accuracy is not None]
    params = engine.global_params
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
        environment=run_environment(),
    )
    written = write_outputs(
        result, out, save_plots=config.output.save_plots, save_metrics=config.output.save_metrics
    )
    if config.output.save_model:
        from safetensors.torch import save_file

        tensors = {k: v.contiguous() for k, v in engine.spec.unflatten(params).items()}
        save_file(tensors, str(out / "global_model.safetensors"))
        # The seed's form too: a plain state dict, torch.load(path, weights_only=True).
        torch.save({k: v.clone() for k, v in tensors.items()}, out / "global_model.pt")
        written["global_model.safetensors"] = out / "global_model.safetensors"
        written["global_model.pt"] = out / "global_model.pt"
    if governance is not None:
        governance.finish(out, written)
    marker.unlink(missing_ok=True)
    return result


MARKER = "RUNNING.json"
"""The marker of a run in progress (left behind by an interrupted run)."""


def _claim(out: Path, marker: Path, identity: dict[str, object]) -> None:
    """Create the run directory and its marker before any training: an unwritable directory
    is reported now, naming it, not after the rounds have been computed."""
    import json
    import os

    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({**identity, "pid": os.getpid()}), encoding="utf-8")
        tmp.replace(marker)
    except OSError as exc:
        raise ConfigurationError(f"cannot write to the run directory {out}: {exc}") from exc


def _aside(path: Path) -> Path:
    n = 1
    while (candidate := path.with_name(f"{path.name}.prev-{n}")).exists():
        n += 1
    return candidate
