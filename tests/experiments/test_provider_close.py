"""A run releases its provider (workers, Ray actors, connections), finished or failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from velocity.experiments import parse_config
from velocity.experiments.runner import run_experiment
from velocity.sim import SequentialClients


def _config(tmp_path: Path, rounds: int = 2) -> object:
    return parse_config(
        {
            "name": "close",
            "dataset": "synthetic",
            "model_id": "logreg",
            "training": {"num_rounds": rounds, "num_clients": 6, "client_fraction": 0.5},
            "client": {"batch_size": 8, "local_steps": 2},
            "simulation": {"partitioning": "natural"},
            "output": {"dir": str(tmp_path), "save_plots": False},
        }
    )


def test_the_provider_is_closed_after_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[int] = []
    monkeypatch.setattr(SequentialClients, "close", lambda self: closed.append(1))
    run_experiment(_config(tmp_path))  # type: ignore[arg-type]
    assert closed == [1]


def test_the_provider_is_closed_when_a_round_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[int] = []
    monkeypatch.setattr(SequentialClients, "close", lambda self: closed.append(1))

    def broken(self: SequentialClients, works: object) -> None:
        raise RuntimeError("a worker died")

    monkeypatch.setattr(SequentialClients, "train_batch", broken)
    with pytest.raises(RuntimeError, match="a worker died"):
        run_experiment(_config(tmp_path))  # type: ignore[arg-type]
    assert closed == [1]
