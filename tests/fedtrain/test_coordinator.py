"""DiLoCoCoordinator: rounds on the round engine, the outer Nesterov step, the refusals."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import pytest
import torch

from velocity.errors import ConfigurationError
from velocity.fedtrain import (
    DiLoCoCoordinator,
    FederatedNode,
    GlobalState,
    HashVerifier,
    LocalUpdate,
    TrainingConfig,
    UpdateProvider,
)
from velocity.server import RoundEngine

CONFIG = TrainingConfig(
    model_name="t", learning_rate=0.01, batch_size=8, local_steps=2, global_rounds=4, num_nodes=3
)
NODES = [FederatedNode(node_id=f"n{i}", address=f"10.0.0.{i}:5000") for i in range(3)]


def upd(node: str, round_id: int, gradients: dict[str, list[float]], loss: float = 1.0,
        samples: int = 10) -> LocalUpdate:  # fmt: skip
    return LocalUpdate(
        node_id=node, round_id=round_id, gradients=gradients, loss=loss, samples_used=samples
    )


class Scripted(UpdateProvider):
    """Updates from a function of (round, node); records what it was handed."""

    def __init__(
        self,
        make: Callable[[int, FederatedNode], LocalUpdate | None],
        stop_after: int | None = None,
    ) -> None:
        self.make = make
        self.stop_after = stop_after
        self.calls: list[tuple[int, GlobalState, list[str]]] = []

    def get_updates(
        self, round_id: int, state: GlobalState, nodes: list[FederatedNode]
    ) -> list[LocalUpdate]:
        self.calls.append((round_id, state, [n.node_id for n in nodes]))
        if self.stop_after is not None and round_id > self.stop_after:
            return []
        return [u for n in nodes if (u := self.make(round_id, n)) is not None]


def gradient_of(round_id: int, node: FederatedNode) -> dict[str, list[float]]:
    i = int(node.node_id[1:])
    return {"w": [0.1 * (i + 1) * round_id, -0.05 * i], "b": [0.01 * round_id]}


# ---------------------------------------------------------------------- construction


def test_defaults_are_dilocos() -> None:
    coordinator = DiLoCoCoordinator()
    assert (coordinator.outer_lr, coordinator.outer_momentum, coordinator.nesterov) == (
        0.7,
        0.9,
        True,
    )
    assert coordinator.model is None
    assert coordinator.engine is None


@pytest.mark.parametrize(
    "kwargs",
    [{"outer_lr": 0}, {"outer_lr": -1}, {"outer_momentum": 1.0}, {"outer_momentum": -0.1},
     {"nesterov": "yes"}],
)  # fmt: skip
def test_bad_outer_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        DiLoCoCoordinator(**kwargs)  # type: ignore[arg-type]


def test_initialize_returns_round_zero_and_resets() -> None:
    coordinator = DiLoCoCoordinator()
    state = coordinator.initialize(CONFIG, NODES)
    assert state == GlobalState(round_id=0, config=CONFIG)
    coordinator.run_round(state, [upd("n0", 1, {"w": [1.0]})])
    assert coordinator.engine is not None
    assert coordinator.credit_tracker.all_credits() == {"n0": 10}
    coordinator.initialize(CONFIG, NODES)
    assert coordinator.engine is None
    assert coordinator.model is None
    assert coordinator.credit_tracker.all_credits() == {}


def test_initialize_refuses_duplicate_nodes_and_bad_types() -> None:
    with pytest.raises(ValueError, match=r"\['n0'\] appear twice"):
        DiLoCoCoordinator().initialize(CONFIG, [NODES[0], NODES[0]])
    with pytest.raises(ValueError, match="TrainingConfig"):
        DiLoCoCoordinator().initialize({"model_name": "x"}, NODES)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="FederatedNode"):
        DiLoCoCoordinator().initialize(CONFIG, ["n0"])  # type: ignore[list-item]


# ---------------------------------------------------------------------- one round


def test_run_round_state_credits_and_engine() -> None:
    coordinator = DiLoCoCoordinator()
    state = coordinator.initialize(CONFIG, NODES)
    updates = [
        upd("n2", 1, {"w": [1.0, 2.0], "b": [0.5]}, loss=0.25, samples=7),
        upd("n0", 1, {"w": [3.0, 4.0], "b": [-0.5]}, loss=0.75, samples=9),
    ]
    new = coordinator.run_round(state, updates)
    assert new.round_id == 1
    assert new.global_weights == {"w": [2.0, 3.0], "b": [0.0]}
    assert new.participating_nodes == ["n2", "n0"]
    assert new.avg_loss == 0.5
    assert new.config == CONFIG
    assert coordinator.credit_tracker.all_credits() == {"n2": 7, "n0": 9}
    engine = coordinator.engine
    assert isinstance(engine, RoundEngine)
    assert engine.spec.names == ("b", "w")  # sorted keys, each 1-D
    assert engine.spec.shapes == ((1,), (2,))
    assert engine.round == 1
    (result,) = engine.results
    assert result.participated == ("n2", "n0")
    assert result.samples == {"n2": 7, "n0": 9}
    assert result.failures == ()
    # the engine aggregated the negated gradients (delta = new - old) without weights
    assert engine.last_aggregate is not None
    assert engine.last_aggregate.tolist() == [-0.0, -2.0, -3.0]
    # and took DiLoCo's first step from zeros: x = -lr (1 + beta) g
    assert new.model == coordinator.model
    assert coordinator.model is not None
    assert coordinator.model["b"] == [0.0]
    assert coordinator.model["w"] == pytest.approx([-0.7 * 1.9 * 2, -0.7 * 1.9 * 3], rel=1e-6)


def test_the_mean_ignores_sample_counts_even_zero() -> None:
    coordinator = DiLoCoCoordinator(outer_lr=1.0, outer_momentum=0.0, nesterov=False)
    state = GlobalState(round_id=0)
    state = coordinator.run_round(
        state, [upd("a", 1, {"w": [1.0]}, samples=0), upd("b", 1, {"w": [3.0]}, samples=0)]
    )
    assert coordinator.model == {"w": [-2.0]}
    assert coordinator.credit_tracker.all_credits() == {"a": 0, "b": 0}


def test_run_round_without_initialize_accepts_any_nodes() -> None:
    coordinator = DiLoCoCoordinator()
    state = coordinator.run_round(GlobalState(round_id=0), [upd("x", 1, {"w": [1.0]})])
    state = coordinator.run_round(state, [upd("y", 2, {"w": [1.0]}), upd("x", 2, {"w": [1.0]})])
    assert state.round_id == 2
    assert coordinator.credit_tracker.all_credits() == {"x": 20, "y": 10}


# ---------------------------------------------------------------------- the outer step


def torch_outer(
    gradients: Sequence[list[float]], lr: float, momentum: float, nesterov: bool
) -> list[list[float]]:
    """torch.optim.SGD from zeros with grad = each round's mean gradient; params per round."""
    p = torch.zeros(len(gradients[0]), dtype=torch.float64, requires_grad=True)
    # torch refuses Nesterov without momentum; with momentum 0 both are plain SGD
    optimizer = torch.optim.SGD([p], lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    out = []
    for g in gradients:
        p.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
        out.append(p.detach().tolist())
    return out


def test_two_rounds_by_hand() -> None:
    # lr 0.5, beta 0.5, Nesterov, from x = 0, buffer b = 0, mean gradients g1 = 2, g2 = -1:
    #   round 1: b = g1 = 2;           x = 0 - 0.5 * (2 + 0.5 * 2) = -1.5
    #   round 2: b = 0.5 * 2 - 1 = 0;  x = -1.5 - 0.5 * (-1 + 0.5 * 0) = -1.0
    coordinator = DiLoCoCoordinator(outer_lr=0.5, outer_momentum=0.5)
    state = coordinator.run_round(
        GlobalState(round_id=0), [upd("a", 1, {"w": [1.0]}), upd("b", 1, {"w": [3.0]})]
    )
    assert coordinator.model == {"w": [-1.5]}
    assert state.global_weights == {"w": [2.0]}
    state = coordinator.run_round(state, [upd("a", 2, {"w": [-2.0]}), upd("b", 2, {"w": [0.0]})])
    assert coordinator.model == {"w": [-1.0]}
    assert torch_outer([[2.0], [-1.0]], 0.5, 0.5, True) == [[-1.5], [-1.0]]


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize(("lr", "momentum"), [(0.7, 0.9), (1.0, 0.0), (0.3, 0.5)])
def test_outer_step_is_torch_sgd_on_the_mean_gradient(
    nesterov: bool, lr: float, momentum: float
) -> None:
    coordinator = DiLoCoCoordinator(outer_lr=lr, outer_momentum=momentum, nesterov=nesterov)
    state = coordinator.initialize(CONFIG, NODES)
    means: list[list[float]] = []
    models: list[list[float]] = []
    for round_id in (1, 2, 3):
        updates = [upd(n.node_id, round_id, gradient_of(round_id, n)) for n in NODES]
        state = coordinator.run_round(state, updates)
        # the spec is sorted: b then w
        means.append(state.global_weights["b"] + state.global_weights["w"])
        assert coordinator.model is not None
        models.append(coordinator.model["b"] + coordinator.model["w"])
    expected = torch_outer(means, lr, momentum, nesterov)
    for got, want in zip(models, expected, strict=True):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7)


def test_momentum_is_engine_stage_state_and_checkpoints() -> None:
    coordinator = DiLoCoCoordinator(outer_lr=0.5, outer_momentum=0.5)
    state = coordinator.run_round(GlobalState(round_id=0), [upd("a", 1, {"w": [2.0]})])
    engine = coordinator.engine
    assert engine is not None
    # the DiLoCo buffer m is the negated SGD buffer: m = -g after one round
    assert engine.stage_state("server_step")["m"].tolist() == [-2.0]
    tensors, meta = engine.state()
    assert tensors["stage.server_step.m"].tolist() == [-2.0]
    assert tensors["global_params"].tolist() == [-1.5]
    assert meta["round"] == 1
    state = coordinator.run_round(state, [upd("a", 2, {"w": [-1.0]})])
    assert coordinator.model == {"w": [-1.0]}
    engine.restore(tensors, meta)  # back to after round 1: the same round 2 again
    assert coordinator.model == {"w": [-1.5]}


# ---------------------------------------------------------------------- refusals


def test_collect_updates_refuses_empty_and_names_nodes() -> None:
    coordinator = DiLoCoCoordinator()
    with pytest.raises(ValueError, match=r"^No updates provided for aggregation\.$"):
        coordinator.collect_updates([])
    coordinator.initialize(CONFIG, NODES)
    assert coordinator.collect_updates((upd("n0", 1, {}),))[0].node_id == "n0"
    with pytest.raises(ValueError, match="node 'zz' is not one of this run's nodes"):
        coordinator.collect_updates([upd("zz", 1, {})])
    with pytest.raises(ValueError, match="node 'n1' sent more than one update"):
        coordinator.collect_updates([upd("n1", 1, {}), upd("n1", 1, {})])
    with pytest.raises(ValueError, match="update 1 is a dict"):
        coordinator.collect_updates([upd("n1", 1, {}), {"node_id": "n2"}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="must be a list"):
        coordinator.collect_updates(None)  # type: ignore[arg-type]


def test_round_mismatch_is_refused_by_name() -> None:
    coordinator = DiLoCoCoordinator()
    state = coordinator.initialize(CONFIG, NODES)
    with pytest.raises(ValueError, match="round 1: the update of node 'n1' is for round 2"):
        coordinator.run_round(state, [upd("n0", 1, {"w": [1.0]}), upd("n1", 2, {"w": [1.0]})])
    assert coordinator.engine is None  # nothing happened
    assert coordinator.credit_tracker.all_credits() == {}


def test_a_stale_state_is_refused() -> None:
    coordinator = DiLoCoCoordinator()
    state0 = coordinator.initialize(CONFIG, NODES)
    coordinator.run_round(state0, [upd("n0", 1, {"w": [1.0]})])
    with pytest.raises(ValueError, match="the state is at round 0 but this run is at round 1"):
        coordinator.run_round(state0, [upd("n0", 1, {"w": [1.0]})])


def test_digests_attached_by_the_sender_are_verified() -> None:
    coordinator = DiLoCoCoordinator()
    state = coordinator.initialize(CONFIG, NODES)
    good = upd("n0", 1, {"w": [1.0]})
    good.digest = HashVerifier.compute_hash(good.gradients)
    bad = upd("n1", 1, {"w": [2.0]})
    bad.digest = HashVerifier.compute_hash({"w": [2.5]})
    with pytest.raises(ValueError, match="gradients of node 'n1' do not match their digest"):
        coordinator.run_round(state, [good, bad])
    assert coordinator.run_round(state, [good]).round_id == 1


def test_a_key_missing_within_a_round_is_refused() -> None:
    coordinator = DiLoCoCoordinator()
    state = coordinator.initialize(CONFIG, NODES)
    with pytest.raises(ValueError, match="node 'n1' sends no gradient 'b'"):
        coordinator.run_round(
            state, [upd("n0", 1, {"w": [1.0], "b": [1.0]}), upd("n1", 1, {"w": [1.0]})]
        )


@pytest.mark.parametrize(
    ("later", "message"),
    [
        ({"w": [1.0, 2.0]}, "no node sends gradient 'b'"),
        ({"w": [1.0, 2.0], "b": [1.0], "c": [1.0]}, "gradient 'c' .* is not a parameter"),
        ({"w": [1.0], "b": [1.0]}, "gradient 'w' has 1 values; the model's parameter has 2"),
    ],
)
def test_a_later_round_must_keep_the_keys_and_lengths(
    later: dict[str, list[float]], message: str
) -> None:
    coordinator = DiLoCoCoordinator()
    state = coordinator.initialize(CONFIG, NODES)
    state = coordinator.run_round(state, [upd("n0", 1, {"w": [1.0, 2.0], "b": [1.0]})])
    with pytest.raises(ValueError, match=f"round 2: {message}"):
        coordinator.run_round(state, [upd("n0", 2, later)])
    assert coordinator.engine is not None
    assert coordinator.engine.round == 1  # the engine did not move


def test_empty_lists_carry_nothing_and_may_come_and_go() -> None:
    coordinator = DiLoCoCoordinator()
    state = coordinator.initialize(CONFIG, NODES)
    state = coordinator.run_round(state, [upd("n0", 1, {"w": [1.0], "e": []})])
    assert state.global_weights == {"w": [1.0], "e": []}
    state = coordinator.run_round(state, [upd("n0", 2, {"w": [1.0], "f": []})])
    assert state.global_weights == {"w": [1.0], "f": []}
    assert coordinator.model is not None
    assert set(coordinator.model) == {"w"}


def test_rounds_without_values_advance_without_an_outer_step() -> None:
    # the FAQ's "All my averaged gradient vectors are []": nothing for the engine to step
    coordinator = DiLoCoCoordinator(outer_lr=1.0, outer_momentum=0.0)
    state = coordinator.initialize(CONFIG, NODES)
    state = coordinator.run_round(state, [upd("n0", 1, {"w": []}, samples=3)])
    assert state.global_weights == {"w": []}
    assert state.model is None
    assert coordinator.engine is None
    assert coordinator.credit_tracker.get_credits("n0") == 3
    # the first round with values builds the engine; round numbers stay the run's
    state = coordinator.run_round(state, [upd("n0", 2, {"w": [2.0]})])
    assert state.round_id == 2
    assert coordinator.model == {"w": [-2.0]}
    state = coordinator.run_round(state, [upd("n0", 3, {"w": [1.0]})])
    assert coordinator.model == {"w": [-3.0]}


def test_values_beyond_float32_are_refused_by_node_and_key() -> None:
    coordinator = DiLoCoCoordinator()
    state = coordinator.initialize(CONFIG, NODES)
    with pytest.raises(ValueError, match="node 'n1': gradient 'w' holds a value beyond float32"):
        coordinator.run_round(state, [upd("n0", 1, {"w": [1.0]}), upd("n1", 1, {"w": [1e39]})])
    assert coordinator.credit_tracker.all_credits() == {}
    assert coordinator.engine is None  # the failed first round does not fix the layout
    state = coordinator.run_round(state, [upd("n0", 1, {"v": [1.0, 2.0]})])
    assert coordinator.engine is not None
    assert coordinator.engine.spec.names == ("v",)


def test_a_checkpointed_state_restarts_from_its_model() -> None:
    first = DiLoCoCoordinator(outer_lr=1.0, outer_momentum=0.0)
    state = first.run_round(GlobalState(round_id=0), [upd("a", 1, {"w": [1.0, 2.0]})])
    restored = GlobalState.model_validate_json(state.model_dump_json())
    second = DiLoCoCoordinator(outer_lr=1.0, outer_momentum=0.0)
    new = second.run_round(restored, [upd("a", 2, {"w": [1.0, 1.0]})])
    assert new.round_id == 2
    assert second.model == {"w": [-2.0, -3.0]}
    with pytest.raises(ValueError, match="the state's model has parameters"):
        DiLoCoCoordinator().run_round(restored, [upd("a", 2, {"v": [1.0]})])


# ---------------------------------------------------------------------- run_training


def test_run_training_rounds_result_and_provider_view() -> None:
    provider = Scripted(lambda r, n: upd(n.node_id, r, gradient_of(r, n), loss=1.0 / r, samples=r))
    coordinator = DiLoCoCoordinator()
    result = coordinator.run_training(CONFIG, NODES, provider)
    assert [c[0] for c in provider.calls] == [1, 2, 3, 4]
    assert [c[1].round_id for c in provider.calls] == [0, 1, 2, 3]
    assert all(c[2] == ["n0", "n1", "n2"] for c in provider.calls)
    # the provider sees the model it should train from, and the run's config
    assert provider.calls[0][1].model is None
    assert provider.calls[3][1].config == CONFIG
    assert result.rounds_completed == result.rounds_planned == 4
    assert result.loss_history == [1.0, 0.5, 1 / 3, 0.25]
    assert result.final_loss == 0.25
    assert result.total_samples == 3 * (1 + 2 + 3 + 4)
    assert result.duration_seconds >= 0
    assert result.model_name == "t"
    assert result.final_state.round_id == 4
    assert result.final_state.model == coordinator.model
    assert coordinator.credit_tracker.all_credits() == {"n0": 10, "n1": 10, "n2": 10}
    assert coordinator.engine is not None
    assert coordinator.engine.round == 4


def test_run_training_hands_each_round_the_last_states_model() -> None:
    provider = Scripted(lambda r, n: upd(n.node_id, r, gradient_of(r, n)))
    coordinator = DiLoCoCoordinator()
    coordinator.run_training(CONFIG, NODES, provider)
    states = [c[1] for c in provider.calls]
    for before, after in itertools.pairwise(states):
        assert after.round_id == before.round_id + 1
    assert states[1].model is not None
    assert states[1].model != states[2].model


def test_run_training_stops_early_on_an_empty_round() -> None:
    provider = Scripted(lambda r, n: upd(n.node_id, r, {"w": [1.0]}), stop_after=2)
    coordinator = DiLoCoCoordinator()
    result = coordinator.run_training(CONFIG, NODES, provider)
    assert result.rounds_completed == 2
    assert result.rounds_planned == 4
    assert len(provider.calls) == 3
    assert result.final_state.round_id == 2


def test_run_training_with_no_round_at_all() -> None:
    provider = Scripted(lambda r, n: None)
    result = DiLoCoCoordinator().run_training(CONFIG, NODES, provider)
    assert result.rounds_completed == 0
    assert result.final_loss is None
    assert result.total_samples == 0
    assert result.final_state.round_id == 0


def test_run_training_with_partial_participation() -> None:
    provider = Scripted(lambda r, n: upd(n.node_id, r, {"w": [1.0]}) if n.node_id != "n1" else None)
    coordinator = DiLoCoCoordinator()
    result = coordinator.run_training(CONFIG, NODES, provider)
    assert result.final_state.participating_nodes == ["n0", "n2"]
    assert coordinator.credit_tracker.get_credits("n1") == 0


def test_run_training_refuses_a_non_provider_and_bad_returns() -> None:
    with pytest.raises(ValueError, match="UpdateProvider"):
        DiLoCoCoordinator().run_training(CONFIG, NODES, object())  # type: ignore[arg-type]

    class Broken(UpdateProvider):
        def get_updates(
            self, round_id: int, state: GlobalState, nodes: list[FederatedNode]
        ) -> list[LocalUpdate]:
            return None  # type: ignore[return-value]

    with pytest.raises(ValueError, match="must be a list of LocalUpdate; got NoneType"):
        DiLoCoCoordinator().run_training(CONFIG, NODES, Broken())


def test_avg_loss_is_the_plain_mean() -> None:
    coordinator = DiLoCoCoordinator()
    losses = [0.1, 0.2, 0.7]
    updates = [upd(f"n{i}", 1, {"w": [0.0]}, loss=v, samples=10**i) for i, v in enumerate(losses)]
    state = coordinator.run_round(coordinator.initialize(CONFIG, NODES), updates)
    assert state.avg_loss == math.fsum(losses) / 3
