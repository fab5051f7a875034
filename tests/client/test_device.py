"""``device`` settings: where the clients' model and data live (CPU here; CUDA when present)."""

from __future__ import annotations

import pytest
import torch

from velocity.client import TrainConfig, Trainer, resolve_device
from velocity.errors import ConfigurationError
from velocity.models import build_model
from velocity.server import make_simulation
from velocity.sim import SimulationSettings
from velocity.strategies import FedAvg

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_resolve_device_accepts_the_documented_values() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    want = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto") == want


@pytest.mark.parametrize("bad", ["tpu", "", "CUDA", "cuda:x", "cuda:-1", 3, None])
def test_resolve_device_names_the_field_and_the_choices(bad: object) -> None:
    with pytest.raises(ConfigurationError, match=r"client\.device must be one of 'auto', 'cpu'"):
        resolve_device(bad, field="client.device")


def test_a_missing_gpu_is_refused_not_replaced() -> None:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigurationError, match=r"device 'cuda:\d+': PyTorch sees"):
        resolve_device(f"cuda:{count}")


def _federation(device: str) -> torch.Tensor:
    fed = make_simulation(
        dataset="synthetic",
        model_id="logreg",
        strategy=FedAvg(),
        num_clients=8,
        settings=SimulationSettings(seed=3, client_fraction=0.5),
        train_config=TrainConfig(batch_size=8, local_steps=3, lr=0.1),
        partitioning="natural",
        device=device,
    )
    fed.engine.run(2)
    return fed.engine.global_params


def test_auto_on_a_cpu_machine_is_the_cpu_run_bit_for_bit() -> None:
    if torch.cuda.is_available():
        pytest.skip("auto is the GPU here")
    assert torch.equal(_federation("auto"), _federation("cpu"))


@cuda
def test_gpu_clients_match_the_cpu_run() -> None:
    cpu, gpu = _federation("cpu"), _federation("cuda")
    assert gpu.device.type == "cpu"  # the engine's model stays on the CPU
    torch.testing.assert_close(gpu, cpu, atol=1e-5, rtol=1e-4)


@cuda
def test_trainer_with_its_model_on_the_gpu_writes_a_cpu_row() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    model = build_model("logreg", in_features=6, num_classes=3, seed=0)
    config = TrainConfig(batch_size=5, lr=0.1, momentum=0.9)
    cpu = Trainer(model, config)
    params = cpu.spec.flatten(model.state_dict())
    want = cpu.train(params, x, y, torch.arange(20), generator=torch.Generator().manual_seed(1))
    gpu = Trainer(build_model("logreg", in_features=6, num_classes=3, seed=0).cuda(), config)
    out = torch.empty_like(params)
    got = gpu.train(
        params,
        x.cuda(),
        y.cuda(),
        torch.arange(20),
        generator=torch.Generator().manual_seed(1),
        out=out,
    )
    assert got.delta is out
    torch.testing.assert_close(out, want.delta, atol=1e-5, rtol=1e-4)


def test_yaml_client_device_is_checked_run_and_kept_out_of_default_hashes() -> None:
    from velocity.experiments import parse_config
    from velocity.experiments.runner import build_simulation

    raw: dict[str, object] = {
        "name": "dev",
        "dataset": "synthetic",
        "model_id": "logreg",
        "training": {"num_rounds": 1, "num_clients": 6, "client_fraction": 0.5},
        "client": {"batch_size": 8, "local_steps": 2},
        "simulation": {"partitioning": "natural"},
    }
    plain = parse_config(raw)
    assert "device" not in plain.resolved()["client"]
    on_cpu = parse_config({**raw, "client": {"batch_size": 8, "local_steps": 2, "device": "cpu"}})
    assert on_cpu.config_hash() == plain.config_hash()
    auto = parse_config({**raw, "client": {"batch_size": 8, "local_steps": 2, "device": "auto"}})
    assert auto.resolved()["client"]["device"] == "auto"
    assert auto.config_hash() != plain.config_hash()
    federation = build_simulation(auto, seed=1)
    federation.engine.run(1)
    with pytest.raises(ValueError, match=r"client\.device.*'auto', 'cpu', 'cuda'"):
        parse_config({**raw, "client": {"batch_size": 8, "local_steps": 2, "device": "gpu"}})
    with pytest.raises(ValueError, match=r"parameter_server: client\.device does not apply"):
        parse_config(
            {
                **raw,
                "client": {"batch_size": 8, "local_steps": 2, "device": "auto"},
                "parameter_server": {"enabled": True},
            }
        )
