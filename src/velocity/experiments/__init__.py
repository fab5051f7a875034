"""Experiments: a YAML configuration in, a run directory out.

- :func:`load_config` / :func:`parse_config` -> :class:`ExperimentConfig` (strict, frozen
  pydantic models; every problem reported by its dotted path, see ``docs/configuration.md``);
- the runner (``velocity.experiments.runner.run_experiment``) returns a :class:`RunResult`
  of :class:`RoundResult` s;
- :func:`write_outputs` writes ``summary.json``, ``metrics.json``, ``communication.json``,
  ``config.resolved.yaml``, ``plots/*.png`` and ``report.html``.

The runner is not imported here (it pulls in the simulation engine); import it explicitly.
"""

from velocity.experiments.config import (
    DATASETS,
    MODEL_IDS,
    AsyncFLConfig,
    ClientConfig,
    CompressionConfig,
    ExperimentConfig,
    GovernanceConfig,
    InvalidConfigError,
    MetricsConfig,
    OutputConfig,
    PrivacyConfig,
    SimulationConfig,
    StragglerConfig,
    TrainingConfig,
    load_config,
    parse_config,
)
from velocity.experiments.outputs import build_summary, write_outputs
from velocity.experiments.results import RoundCallback, RoundResult, RunResult

__all__ = [
    "DATASETS",
    "MODEL_IDS",
    "AsyncFLConfig",
    "ClientConfig",
    "CompressionConfig",
    "ExperimentConfig",
    "GovernanceConfig",
    "InvalidConfigError",
    "MetricsConfig",
    "OutputConfig",
    "PrivacyConfig",
    "RoundCallback",
    "RoundResult",
    "RunResult",
    "SimulationConfig",
    "StragglerConfig",
    "TrainingConfig",
    "build_summary",
    "load_config",
    "parse_config",
    "write_outputs",
]
