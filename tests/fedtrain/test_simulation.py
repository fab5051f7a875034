"""SimulatedNodes: real local training, deterministic per seed, the pseudo-gradient it sends."""

from __future__ import annotations

import itertools

import pytest
import torch

from velocity.errors import ConfigurationError
from velocity.fedtrain import (
    DiLoCoCoordinator,
    GlobalState,
    SimulatedNodes,
    TrainingConfig,
)
from velocity.fedtrain._simulation import _AdamW

SEED_CONFIG = TrainingConfig(
    model_name="my-model-v1",
    learning_rate=0.001,
    batch_size=32,
    local_steps=10,
    global_rounds=5,
    num_nodes=3,
)


def test_nodes_shards_and_capabilities() -> None:
    sim = SimulatedNodes(SEED_CONFIG, seed=0)
    assert [n.node_id for n in sim.nodes] == ["node-000", "node-001", "node-002"]
    sizes = [sim.shard_size(n.node_id) for n in sim.nodes]
    assert all(200 <= s <= 600 for s in sizes)
    assert len(set(sizes)) > 1  # sizes differ per node
    assert [n.capabilities["samples"] for n in sim.nodes] == sizes
    assert all(n.address == f"sim://{n.node_id}" for n in sim.nodes)


def test_the_seeds_train_json_trains_below_one_and_decreases() -> None:
    for seed in (0, 1, 2):
        sim = SimulatedNodes(SEED_CONFIG, seed=seed)
        result = DiLoCoCoordinator().run_training(SEED_CONFIG, sim.nodes, sim)
        history = result.loss_history
        assert len(history) == 5
        assert history[0] < 1.0  # 1.0 is the all-zeros model's loss
        assert all(a > b for a, b in itertools.pairwise(history)), history
        assert result.final_loss is not None
        assert result.final_loss < 0.5 * history[0]


def test_same_seed_same_run_other_seed_other_run() -> None:
    def run(seed: int) -> tuple[list[float], dict[str, list[float]] | None, dict[str, int]]:
        sim = SimulatedNodes(SEED_CONFIG, seed=seed)
        coordinator = DiLoCoCoordinator()
        result = coordinator.run_training(SEED_CONFIG, sim.nodes, sim)
        return result.loss_history, coordinator.model, coordinator.credit_tracker.all_credits()

    assert run(0) == run(0)
    assert run(0)[0] != run(1)[0]


def test_an_update_is_the_pseudo_gradient_of_real_training() -> None:
    sim = SimulatedNodes(SEED_CONFIG, seed=0)
    start = {"weight": [0.05] * 8, "bias": [-0.1]}
    state = GlobalState(round_id=2, model=start)
    (update,) = sim.get_updates(3, state, sim.nodes[1:2])
    assert update.node_id == "node-001"
    assert update.round_id == 3
    assert update.samples_used == 10 * 32
    end = {k: [s - g for s, g in zip(start[k], update.gradients[k], strict=True)] for k in start}
    # the loss reported is the end weights' normalised MSE on the node's shard, lower than
    # the start's: the node really trained
    assert update.loss == pytest.approx(sim.loss("node-001", end), rel=1e-5)
    assert update.loss < sim.loss("node-001", start)
    assert sim.loss("node-001", None) == pytest.approx(1.0)


def test_local_training_is_adamw_on_minibatch_mse() -> None:
    # Recompute node-000's round with torch.optim.AdamW and autograd on the same batches.
    from velocity._random import torch_generator

    config = SEED_CONFIG.model_copy(update={"local_steps": 4, "batch_size": 16})
    sim = SimulatedNodes(config, seed=5)
    (update,) = sim.get_updates(1, GlobalState(round_id=0), sim.nodes[:1])
    x, y = sim._shard("node-000")
    w = torch.zeros(8, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.AdamW([w, b], lr=config.learning_rate)
    generator = torch_generator(5, 1, "node-000", "batches")
    for _ in range(4):
        rows = torch.randperm(int(y.shape[0]), generator=generator)[:16]
        optimizer.zero_grad()
        (x[rows] @ w + b - y[rows]).square().mean().backward()
        optimizer.step()
    assert update.gradients["weight"] == pytest.approx((-w.detach()).tolist(), abs=1e-6)
    assert update.gradients["bias"] == pytest.approx((-b.detach()).tolist(), abs=1e-6)
    assert update.samples_used == 4 * 16


def test_private_adamw_matches_torch() -> None:
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(5, generator=gen)
    mine = start.clone()
    ours = _AdamW(mine, lr=0.05)
    theirs = start.clone().requires_grad_(True)
    reference = torch.optim.AdamW([theirs], lr=0.05)
    for _ in range(25):
        grad = torch.randn(5, generator=gen)
        ours.step(grad)
        theirs.grad = grad.clone()
        reference.step()
    assert torch.allclose(mine, theirs.detach(), atol=1e-7)


def test_a_shard_smaller_than_the_batch_uses_the_shard() -> None:
    config = SEED_CONFIG.model_copy(update={"batch_size": 1000, "local_steps": 2})
    sim = SimulatedNodes(config, seed=0, min_samples=10, max_samples=20)
    (update,) = sim.get_updates(1, GlobalState(round_id=0), sim.nodes[:1])
    assert update.samples_used == 2 * sim.shard_size("node-000")


def test_refusals() -> None:
    sim = SimulatedNodes(SEED_CONFIG, seed=0)
    with pytest.raises(ValueError, match="'ghost' is not one of the simulated nodes"):
        sim.loss("ghost", None)
    from velocity.fedtrain import FederatedNode

    with pytest.raises(ValueError, match="not one of the simulated nodes"):
        sim.get_updates(1, GlobalState(round_id=0), [FederatedNode(node_id="ghost", address="")])
    with pytest.raises(ValueError, match="must hold 'weight' \\(8 values\\) and 'bias'"):
        sim.get_updates(1, GlobalState(round_id=0, model={"weight": [0.0]}), sim.nodes)
    many = SEED_CONFIG.model_copy(update={"num_nodes": 1025})
    with pytest.raises(ConfigurationError, match="at most 1024 nodes"):
        SimulatedNodes(many)
    for kwargs in ({"seed": -1}, {"features": 0}, {"min_samples": 0}, {"max_samples": 100}):
        with pytest.raises(ConfigurationError):
            SimulatedNodes(SEED_CONFIG, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="noise"):
        SimulatedNodes(SEED_CONFIG, noise=float("nan"))
