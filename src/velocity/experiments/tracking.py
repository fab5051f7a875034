"""Experiment tracking: each round's metrics to TensorBoard and/or MLflow.

Both loggers are round-engine callbacks (``logger(result, engine)``, called after every
round; :class:`velocity.server.engine.Callback`) with a :meth:`close`. Both libraries are
optional, in the ``tracking`` extra (``pip install 'velocityfl[tracking]'``); a logger whose
library is missing raises :class:`~velocity.errors.ConfigurationError` naming the package.

The metrics of a round (:func:`round_metrics`, logged at ``step = result.round``):

==================  ==================================================================
``global_loss``     the global model's test loss (rounds that were evaluated)
``global_accuracy`` the global model's test accuracy, a fraction (rounds evaluated)
``train_loss``      sample-weighted mean training loss of the participants (if any)
``num_clients``     clients whose updates were aggregated (``len(participated)``)
``num_selected``    clients a task was sent to
``bytes_up``        bytes uploaded by the participants
``bytes_down``      bytes broadcast to the selected clients
``duration_s``      wall-clock seconds of the round
==================  ==================================================================

In a YAML experiment the ``tracking`` section turns them on (``docs/configuration.md``)::

    tracking: {tensorboard: true, mlflow: true}   # -> <run dir>/tracking/{tensorboard,mlruns}

From Python::

    logger = TensorBoardLogger("runs/demo")
    engine.callbacks.append(logger)
    engine.run(5)
    logger.close()
"""

from __future__ import annotations

import importlib
import json
import math
import os
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Protocol

from velocity.errors import ConfigurationError

if TYPE_CHECKING:
    from velocity.experiments.config import ExperimentConfig, TrackingConfig
    from velocity.server.engine import RoundEngine
    from velocity.types import RoundResult

__all__ = [
    "METRICS",
    "MLflowLogger",
    "TensorBoardLogger",
    "Tracker",
    "close_trackers",
    "flatten_params",
    "open_trackers",
    "require_trackers",
    "round_metrics",
    "tracking_dir",
]

INSTALL_HINT: Final = "pip install 'velocityfl[tracking]'"
"""How to install both tracking libraries."""

METRICS: Final[tuple[str, ...]] = (
    "global_loss",
    "global_accuracy",
    "train_loss",
    "num_clients",
    "num_selected",
    "bytes_up",
    "bytes_down",
    "duration_s",
)
"""The metric names every logger writes per round (a metric that is ``None`` is skipped)."""

_PARAMS_PER_BATCH: Final = 100  # MLflow's limit of params per log_batch


class Tracker(Protocol):
    """A round-engine callback that logs somewhere and must be closed."""

    def __call__(self, result: RoundResult, engine: RoundEngine | None = None) -> None: ...

    def close(self, *, failed: bool = False) -> None: ...


def round_metrics(result: RoundResult) -> dict[str, float]:
    """The :data:`METRICS` of one round as floats; metrics that are ``None`` are left out."""
    values: dict[str, float | int | None] = {
        "global_loss": result.global_loss,
        "global_accuracy": result.global_accuracy,
        "train_loss": result.train_loss,
        "num_clients": len(result.participated),
        "num_selected": len(result.selected_client_ids),
        "bytes_up": result.bytes_up,
        "bytes_down": result.bytes_down,
        "duration_s": result.duration_s,
    }
    return {name: float(value) for name, value in values.items() if value is not None}


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings -> ``{"training.num_rounds": "20", ...}``; leaves as JSON text.

    Strings stay as they are; other leaves (numbers, ``null``, booleans, lists such as
    ``attacks``) are written as JSON. An empty mapping is the leaf ``"{}"``.
    """
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return flat


def _require(module: str, package: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(
            f"{what} needs the {package!r} package, which is not installed: "
            f"{INSTALL_HINT} (or pip install {package})"
        ) from exc


def _summary_writer() -> Any:
    _require("tensorboard", "tensorboard", "TensorBoard logging")
    module = _require("torch.utils.tensorboard", "tensorboard", "TensorBoard logging")
    return module.SummaryWriter


# ---------------------------------------------------------------------- TensorBoard


class TensorBoardLogger:
    """Writes :func:`round_metrics` as TensorBoard scalars (``step = round``).

    Parameters
    ----------
    log_dir : str or Path
        The event files' directory (created); ``tensorboard --logdir`` it or a parent.
    purge_step : int, optional
        Events of earlier files at this step or later are hidden (TensorBoard's
        ``purge_step``): a fresh run passes 1 so an earlier run in the same directory does
        not show through, a resumed run its first round.
    flush_secs : int
        Seconds between flushes; each round is also flushed when it is logged.
    """

    def __init__(
        self, log_dir: str | Path, *, purge_step: int | None = None, flush_secs: int = 30
    ) -> None:
        writer = _summary_writer()
        self.log_dir = Path(log_dir)
        self._writer: Any = writer(
            log_dir=str(self.log_dir), purge_step=purge_step, flush_secs=flush_secs
        )
        self._closed = False

    def __call__(self, result: RoundResult, engine: RoundEngine | None = None) -> None:
        for tag, value in round_metrics(result).items():
            self._writer.add_scalar(tag, value, global_step=result.round)
        self._writer.flush()

    def close(self, *, failed: bool = False) -> None:
        """Flush and close the event file (again: nothing)."""
        if not self._closed:
            self._closed = True
            self._writer.close()

    def __repr__(self) -> str:
        return f"TensorBoardLogger({str(self.log_dir)!r})"


# ---------------------------------------------------------------------- MLflow


class MLflowLogger:
    """Logs one MLflow run: ``params`` flattened, :func:`round_metrics` with ``step = round``.

    Parameters
    ----------
    tracking_uri : str
        The tracking store: ``file:<dir>`` (a local file store; as MLflow 3 keeps it only
        on request, ``MLFLOW_ALLOW_FILE_STORE=true`` is set for this process unless the
        environment sets it already), ``sqlite:///<file>``, or a server's ``http(s)://`` URL.
    experiment : str
        The MLflow experiment; created when missing.
    run_name : str, optional
        The run's name (MLflow picks one when ``None``).
    params : mapping, optional
        Logged as the run's params, flattened by :func:`flatten_params` (long values are
        cut at MLflow's length limit).
    tags : mapping of str to str, optional
        The run's tags.

    Attributes
    ----------
    run_id, experiment_id : str
        Where the run is: ``MlflowClient(tracking_uri).get_metric_history(run_id, name)``.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        *,
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        mlflow = _require("mlflow", "mlflow", "MLflow logging")
        if tracking_uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._entities: Any = importlib.import_module("mlflow.entities")
        validation = importlib.import_module("mlflow.utils.validation")
        limit = int(getattr(validation, "MAX_PARAM_VAL_LENGTH", 500))
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self._closed = False
        error: type[BaseException] = mlflow.exceptions.MlflowException
        try:
            self._client: Any = importlib.import_module("mlflow.tracking").MlflowClient(
                tracking_uri=tracking_uri
            )
            self.experiment_id: str = self._experiment_id(experiment, error)
            run = self._client.create_run(
                self.experiment_id, run_name=run_name, tags=dict(tags or {})
            )
        except error as exc:
            raise ConfigurationError(
                f"MLflow cannot start a run in {tracking_uri} (experiment {experiment!r}): {exc}"
            ) from exc
        self.run_id: str = run.info.run_id
        flat = flatten_params(params or {})
        items = [
            self._entities.Param(key, value if len(value) <= limit else value[: limit - 3] + "...")
            for key, value in flat.items()
        ]
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, params=items[start : start + _PARAMS_PER_BATCH])

    def _experiment_id(self, name: str, error: type[BaseException]) -> str:
        found = self._client.get_experiment_by_name(name)
        if found is None:
            try:
                return str(self._client.create_experiment(name))
            except error:  # created meanwhile by another process
                found = self._client.get_experiment_by_name(name)
                if found is None:
                    raise
        return str(found.experiment_id)

    def __call__(self, result: RoundResult, engine: RoundEngine | None = None) -> None:
        now = int(time.time() * 1000)
        metrics = [
            self._entities.Metric(name, value, now, result.round)
            for name, value in round_metrics(result).items()
            if math.isfinite(value)
        ]
        self._client.log_batch(self.run_id, metrics=metrics)

    def close(self, *, failed: bool = False) -> None:
        """End the run: ``FINISHED``, or ``FAILED`` when ``failed`` (again: nothing)."""
        if not self._closed:
            self._closed = True
            self._client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")

    def __repr__(self) -> str:
        return f"MLflowLogger({self.tracking_uri!r}, experiment={self.experiment!r})"


# ---------------------------------------------------------------------- the YAML runner


def require_trackers(tracking: TrackingConfig) -> None:
    """Raise :class:`ConfigurationError` now if an enabled tracker's library is missing
    (the runner calls it before building anything)."""
    if tracking.tensorboard:
        _summary_writer()
    if tracking.mlflow:
        _require("mlflow", "mlflow", "MLflow logging")


def tracking_dir(config: ExperimentConfig, run_dir: Path) -> Path:
    """``tracking.dir`` (``~`` expanded), or ``<run_dir>/tracking`` when it is ``null``."""
    if config.tracking.dir is None:
        return run_dir / "tracking"
    return Path(config.tracking.dir).expanduser()


def open_trackers(
    config: ExperimentConfig, run_dir: Path, *, start_round: int = 0
) -> list[Tracker]:
    """The loggers ``config.tracking`` turns on, ready to append to ``engine.callbacks``.

    TensorBoard: ``<dir>/tensorboard/<name>/``. MLflow: the file store ``<dir>/mlruns``,
    experiment ``<name>``, one run per call with the resolved configuration as params and
    the tags ``velocity.config_hash``, ``velocity.seed`` and ``velocity.start_round``.
    ``start_round`` is the last round already done (a resumed run): its TensorBoard events
    continue from there, its MLflow run holds the rounds after it.
    """
    tracking = config.tracking
    root = tracking_dir(config, run_dir)
    trackers: list[Tracker] = []
    try:
        if tracking.tensorboard:
            log_dir = root / "tensorboard" / config.name
            trackers.append(TensorBoardLogger(log_dir, purge_step=start_round + 1))
        if tracking.mlflow:
            store = root / "mlruns"
            store.mkdir(parents=True, exist_ok=True)
            tags = {
                "velocity.config_hash": config.config_hash(),
                "velocity.seed": str(config.seed),
                "velocity.start_round": str(start_round),
            }
            trackers.append(
                MLflowLogger(
                    store.resolve().as_uri(),
                    config.name,
                    run_name=config.name,
                    params=config.resolved(),
                    tags=tags,
                )
            )
    except BaseException:
        close_trackers(trackers, failed=True)
        raise
    return trackers


def close_trackers(trackers: Iterable[Tracker], *, failed: bool = False) -> None:
    """Close every tracker. After a failure (``failed``) a tracker that cannot close is
    reported as a warning, so the run's own error is the one raised; otherwise the first
    error is raised once all are closed."""
    first: Exception | None = None
    for tracker in trackers:
        try:
            tracker.close(failed=failed)
        except Exception as exc:
            if failed:
                warnings.warn(f"could not close {tracker!r}: {exc}", stacklevel=2)
            elif first is None:
                first = exc
    if first is not None:
        raise first
