"""Checkpoints: crash-safe, verified, bound to their run, linear in size; resume never mixes
runs (regressions of the "nothing lost, nothing trusted" issue, points 1-3)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from velocity.errors import ConfigurationError, ValidationError
from velocity.experiments import ExperimentConfig, parse_config
from velocity.experiments.runner import MARKER, run_experiment
from velocity.server import CheckpointStore
from velocity.server.checkpoint import CheckpointWarning


def _config(**output: object) -> ExperimentConfig:
    return parse_config(
        {
            "name": "ckpt",
            "seed": 3,
            "dataset": "synthetic",
            "model_id": "logreg",
            "training": {"num_rounds": 4, "num_clients": 30, "client_fraction": 0.1},
            "client": {"local_steps": 2},
            "simulation": {"partitioning": "natural"},
            "output": {"save_plots": False, "checkpoint_every": 1, **output},
        }
    )


class _Stop(Exception):
    pass


def _interrupt_after(n: int):  # type: ignore[no-untyped-def]
    def on_round(result: object) -> None:
        if result.round == n:  # type: ignore[attr-defined]
            raise _Stop

    return on_round


def test_resume_refuses_another_runs_checkpoints(tmp_path: Path) -> None:
    config = _config()
    run_experiment(config, output_dir=tmp_path)  # seed 3, 4 rounds
    # the same config with another seed, interrupted after 2 checkpoints ...
    with pytest.raises(_Stop), pytest.warns(UserWarning, match="moved them to"):
        run_experiment(config, output_dir=tmp_path, seed=4, on_round=_interrupt_after(2))
    # ... its fresh start moved seed 3's checkpoints aside; resuming seed 4 continues seed 4
    assert (tmp_path / "checkpoints.prev-1").is_dir()
    resumed = run_experiment(config, output_dir=tmp_path, seed=4, resume=True)
    straight = run_experiment(config, output_dir=tmp_path / "other", seed=4)
    assert resumed.final_model_digest == straight.final_model_digest
    assert resumed.seed == 4
    # resuming seed 4's checkpoints as seed 5 is refused, naming both runs
    with pytest.raises(ConfigurationError, match=r"belong to another run \(seed=4"):
        run_experiment(config, output_dir=tmp_path, seed=5, resume=True)


def test_an_interrupted_run_leaves_a_marker_and_resume_continues_it(tmp_path: Path) -> None:
    config = _config()
    straight = run_experiment(config, output_dir=tmp_path / "straight")
    assert not (tmp_path / "straight" / MARKER).exists()
    with pytest.raises(_Stop):
        run_experiment(config, output_dir=tmp_path / "run", on_round=_interrupt_after(3))
    marker = json.loads((tmp_path / "run" / MARKER).read_text())
    assert marker["seed"] == 3
    assert marker["trajectory_hash"] == config.trajectory_hash()
    resumed = run_experiment(config, output_dir=tmp_path / "run", resume=True)
    assert resumed.final_model_digest == straight.final_model_digest
    assert [r.round for r in resumed.rounds] == [1, 2, 3, 4]
    assert not (tmp_path / "run" / MARKER).exists()


def test_resume_can_continue_a_run_for_more_rounds(tmp_path: Path) -> None:
    config = _config()
    run_experiment(config, output_dir=tmp_path, rounds=2)
    more = run_experiment(config, output_dir=tmp_path, resume=True)  # num_rounds 4
    assert (
        more.final_model_digest
        == run_experiment(config, output_dir=tmp_path / "b").final_model_digest
    )


def test_a_fresh_run_moves_an_earlier_run_aside_with_a_warning(tmp_path: Path) -> None:
    config = _config()
    run_experiment(config, output_dir=tmp_path, rounds=2)
    with pytest.warns(UserWarning, match=r"moved them to .*checkpoints\.prev-1"):
        run_experiment(config, output_dir=tmp_path, rounds=1)
    assert CheckpointStore(f"local://{tmp_path / 'checkpoints.prev-1'}").latest() == 2
    assert CheckpointStore(f"local://{tmp_path / 'checkpoints'}").latest() == 1


def test_an_unwritable_run_directory_is_refused_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    trained: list[int] = []
    with pytest.raises(ConfigurationError, match="cannot write to the run directory"):
        run_experiment(
            _config(), output_dir=blocker / "run", on_round=lambda r: trained.append(r.round)
        )
    assert trained == []


# ---------------------------------------------------------------------- the store


def _store(tmp_path: Path, rounds: int = 3) -> CheckpointStore:
    store = CheckpointStore(f"local://{tmp_path / 'ck'}")
    results = []
    for r in range(1, rounds + 1):
        results.append({"round": r, "value": r * 1.5})
        store.save(r, {"w": torch.full((4,), float(r))}, {"round": r, "results": list(results)})
    return store


def test_each_checkpoint_stores_only_its_new_results(tmp_path: Path) -> None:
    store = _store(tmp_path, rounds=40)
    sizes = [len(Path(store._path(r, "json")).read_bytes()) for r in (2, 40)]
    assert sizes[1] < sizes[0] * 1.5  # round 40's JSON is not 20x round 2's
    _, meta = store.load()
    assert [r["round"] for r in meta["results"]] == list(range(1, 41))
    _, meta = store.load(7)
    assert [r["round"] for r in meta["results"]] == list(range(1, 8))


@pytest.mark.parametrize("damage", ["truncated_json", "truncated_tensors", "nan_over_tensors"])
def test_a_damaged_latest_checkpoint_falls_back_with_a_warning(tmp_path: Path, damage: str) -> None:
    store = _store(tmp_path)
    if damage == "truncated_json":
        path = Path(store._path(3, "json"))
        path.write_bytes(path.read_bytes()[:20])
    else:
        path = Path(store._path(3, "safetensors"))
        data = bytearray(path.read_bytes())
        if damage == "truncated_tensors":
            data = data[: len(data) - 7]
        else:
            data[-16:] = struct_nan(4)
        path.write_bytes(bytes(data))
    with pytest.warns(CheckpointWarning, match=r"round-000003"):
        tensors, meta = store.load()
    assert meta["round"] == 2
    assert torch.equal(tensors["w"], torch.full((4,), 2.0))
    with pytest.raises(ValidationError, match="round-000003"):
        store.load(3)


def struct_nan(n: int) -> bytes:
    import struct

    return struct.pack(f"<{n}f", *([math.nan] * n))


def test_no_usable_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    store = _store(tmp_path, rounds=1)
    Path(store._path(1, "json")).write_text("{")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        with pytest.raises(ValidationError, match=r"no usable checkpoint .*round-000001\.json"):
            store.load()


def test_writes_leave_no_partial_files(tmp_path: Path) -> None:
    _store(tmp_path, rounds=2)
    names = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert names == [
        "round-000001.json",
        "round-000001.safetensors",
        "round-000002.json",
        "round-000002.safetensors",
    ]


# ---------------------------------------------------------------------- VelocityServer


@pytest.mark.parametrize("storage", ["", "   ", "/", None, 3])
def test_velocity_server_refuses_unusable_storage(storage: object) -> None:
    from velocity import VelocityServer

    with pytest.raises(ConfigurationError, match="storage"):
        VelocityServer("toy", "none", storage=storage, layer_shapes={"w": 2})  # type: ignore[arg-type]


def test_velocity_server_checks_storage_before_training(tmp_path: Path) -> None:
    from velocity import VelocityServer

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigurationError, match="not writable"):
        VelocityServer("toy", "none", storage=f"local://{blocker}/ck", layer_shapes={"w": 2})


def test_velocity_server_keeps_a_completed_round_when_its_save_fails(tmp_path: Path) -> None:
    from velocity import VelocityServer

    server = VelocityServer(
        "toy", "none", storage=f"local://{tmp_path}/ck", layer_shapes={"w": 2}, num_clients=3
    )
    server.run(rounds=1)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    server._store.save = broken  # type: ignore[method-assign]
    with pytest.raises(ConfigurationError, match=r"round 2 completed .*disk full"):
        server.run(rounds=1)
    assert [h["round"] for h in server.history] == [1, 2]


def test_summary_records_the_environment_and_the_seeds_model_file(tmp_path: Path) -> None:
    import torch as _torch

    config = _config(save_model=True, checkpoint_every=None)
    result = run_experiment(config, output_dir=tmp_path, rounds=1)
    summary = json.loads((tmp_path / "summary.json").read_text())
    env = summary["environment"]
    assert env["torch"] == _torch.__version__
    assert env["torch_threads"] == _torch.get_num_threads()
    assert {"numpy", "python", "platform", "velocityfl"} <= set(env)
    state = _torch.load(tmp_path / "global_model.pt", weights_only=True)
    from safetensors.torch import load_file

    same = load_file(str(tmp_path / "global_model.safetensors"))
    assert set(state) == set(same)
    assert all(_torch.equal(state[k], same[k]) for k in state)
    assert result.environment == env
    assert (tmp_path / "communication.json").exists()
