"""VelocityServer: the seed's API on the quadratic federation, storage and resume."""

from __future__ import annotations

import json

import pytest
import torch

from velocity import FedAvg, Krum, TrimmedMean, VelocityServer
from velocity.errors import ConfigurationError
from velocity.sim import QuadraticClients
from velocity.types import RoundResult

SHAPES = {"conv.weight": 12, "conv.bias": 3, "fc.weight": 6}


def _server(storage: str, **kw) -> VelocityServer:  # type: ignore[no-untyped-def]
    return VelocityServer("toy", "none", kw.pop("strategy", None), storage, SHAPES, **kw)


def test_run_returns_seed_round_dicts() -> None:
    server = _server("memory://vs-dicts", num_clients=5)
    rounds = server.run(min_clients=5, rounds=3)
    assert [r["round"] for r in rounds] == [1, 2, 3]
    for r in rounds:
        assert {
            "round",
            "num_clients",
            "global_loss",
            "attack_results",
            "selected_client_ids",
        } <= set(r)
        assert r["num_clients"] == 5
        assert r["attack_results"] == []
        assert len(r["selected_client_ids"]) == 5
        # every run() dict is a RoundResult.to_dict()
        assert list(r) == list(RoundResult.from_dict(r).to_dict())
    losses = [r["global_loss"] for r in rounds]
    assert losses[2] < losses[0]
    assert server.strategy == FedAvg()
    # global_loss is the evaluation loss only: the quadratic objective at the new model
    provider = server.engine.provider
    assert isinstance(provider, QuadraticClients)
    final = torch.tensor([w for ws in server.global_weights.values() for w in ws])
    assert rounds[-1]["global_loss"] == pytest.approx(provider.loss(final))
    assert rounds[-1]["train_loss"] is not None
    assert rounds[-1]["train_loss"] != rounds[-1]["global_loss"]


def test_global_weights_and_history_shapes() -> None:
    server = _server("memory://vs-weights", strategy=TrimmedMean(k=1), num_clients=6)
    server.run(min_clients=3, rounds=2)
    weights = server.global_weights
    assert {k: len(v) for k, v in weights.items()} == SHAPES
    assert json.loads(json.dumps(server.history)) == server.history
    assert [h["round"] for h in server.history] == [1, 2]


def test_min_clients_controls_selection() -> None:
    server = _server("memory://vs-min", num_clients=10, client_fraction=0.1)
    assert server.run(min_clients=4, rounds=1)[0]["num_clients"] == 4


def test_strategy_spellings() -> None:
    server = _server("memory://vs-s1", strategy={"type": "Krum", "f": 1})
    assert server.strategy == Krum(f=1)


def test_same_settings_resume_from_storage() -> None:
    a = _server("memory://vs-resume", num_clients=4)
    a.run(rounds=2)
    with pytest.raises(ConfigurationError, match=r"already holds checkpoints.*resume=True"):
        _server("memory://vs-resume", num_clients=4)
    b = _server("memory://vs-resume", num_clients=4, resume=True)
    assert [h["round"] for h in b.history] == [1, 2]
    assert b.history == a.history
    assert b.run(rounds=1)[0]["round"] == 3
    straight = _server("memory://vs-straight", num_clients=4)
    straight.run(rounds=3)
    assert straight.global_weights == b.global_weights


def test_different_settings_do_not_resume() -> None:
    _server("memory://vs-other", num_clients=4).run(rounds=2)
    fresh = _server("memory://vs-other", num_clients=5)
    assert fresh.history == []
    # resume=True without checkpoints of these settings is a fresh start
    also_fresh = _server("memory://vs-other", num_clients=6, resume=True)
    assert also_fresh.history == []
    assert also_fresh.run(rounds=1)[0]["round"] == 1


def test_resume_must_be_a_bool() -> None:
    with pytest.raises(ConfigurationError, match="resume must be true or false"):
        _server("memory://vs-resume-bool", resume="yes")


@pytest.mark.parametrize("backend", ["loopback", "out_of_order"])
def test_backends_give_the_same_model(backend: str) -> None:
    sequential = _server(f"memory://vs-backend-seq-{backend}", num_clients=5)
    sequential.run(min_clients=5, rounds=2)
    other = _server(f"memory://vs-backend-{backend}", num_clients=5, backend=backend)
    other.run(min_clients=5, rounds=2)
    assert other.global_weights == sequential.global_weights
    with pytest.raises(ConfigurationError, match=r"backend\.type must be one of"):
        _server("memory://vs-backend-bad", backend="carrier-pigeon")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_clients": 0}, "min_clients"),
        ({"min_clients": 99}, "exceeds"),
        ({"rounds": -1}, "rounds"),
    ],
)
def test_run_argument_errors(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        _server("memory://vs-err", num_clients=4).run(**kwargs)


def test_layer_shapes_validation() -> None:
    with pytest.raises(ConfigurationError, match="layer_shapes"):
        VelocityServer("toy", "none", storage="memory://vs-bad", layer_shapes={"w": 0})
