"""ParameterServer: ByzPy's synchronous PS training on top of the simulation round loop."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from velocity._random import torch_generator
from velocity.attacks import SignFlip
from velocity.errors import ConfigurationError, ProtocolError
from velocity.server.parameter_server import ByzantineNode, HonestNode, ParameterServer
from velocity.strategies import NNM, Clip, FedAvg, FedMedian, Krum, Pipeline, ServerSGD

PER_NODE = 32
BATCH = 16
FEATURES = 4
CLASSES = 3


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add contention on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(num_nodes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well-separated Gaussian blobs in 4-d: a linearly separable problem."""
    gen = torch.Generator().manual_seed(seed)
    centers = 3.0 * torch.randn(CLASSES, FEATURES, generator=gen)
    y = torch.randint(0, CLASSES, (num_nodes * PER_NODE,), generator=gen)
    x = centers[y] + 0.5 * torch.randn(num_nodes * PER_NODE, FEATURES, generator=gen)
    return x, y


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(FEATURES, CLASSES)


def _part(t: torch.Tensor, i: int) -> torch.Tensor:
    return t[PER_NODE * i : PER_NODE * (i + 1)]


def _server(
    num_honest: int,
    attacks: Sequence[Any],
    aggregator: Any,
    pre_aggregator: Any = None,
    update_byzantines: bool = False,
    *,
    lr: float = 0.5,
    seed: int = 0,
) -> tuple[ParameterServer, torch.Tensor, torch.Tensor]:
    x, y = _data(num_honest + len(attacks))
    model = _model()
    honest = [
        HonestNode(copy.deepcopy(model), _part(x, i), _part(y, i), batch_size=BATCH)
        for i in range(num_honest)
    ]
    byzantine = [
        ByzantineNode(
            attack,
            model=copy.deepcopy(model),
            x=_part(x, num_honest + j),
            y=_part(y, num_honest + j),
            batch_size=BATCH,
        )
        for j, attack in enumerate(attacks)
    ]
    ps = ParameterServer(
        honest, byzantine, aggregator, pre_aggregator, update_byzantines, lr=lr, seed=seed
    )
    return ps, x, y


def _loss(ps: ParameterServer, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(ps.model(x), y))


def _batch(seed: int, round_: int, node: int) -> torch.Generator:
    return torch_generator(seed, round_, node, "batch")


# --------------------------------------------------------------------------- the round


def test_gradient_is_the_minibatch_gradient_of_the_loss() -> None:
    ps, x, y = _server(2, [], "FedAvg")
    node = ps.honest_nodes[1]
    params = ps.global_params + 0.1
    got = node.gradient(params, generator=_batch(0, 1, 1))

    idx = torch.randperm(PER_NODE, generator=_batch(0, 1, 1))[:BATCH]
    model = nn.Linear(FEATURES, CLASSES)
    model.load_state_dict(ps.spec.unflatten(params))
    torch.autograd.backward(F.cross_entropy(model(_part(x, 1)[idx]), _part(y, 1)[idx]))
    assert model.weight.grad is not None
    assert model.bias.grad is not None
    want = torch.cat([model.weight.grad.reshape(-1), model.bias.grad])
    assert got.dtype == torch.float32
    assert got.shape == (ps.spec.d,)
    torch.testing.assert_close(got, want)
    assert torch.equal(ps.global_params + 0.1, params)  # params untouched


def test_round_returns_the_mean_of_the_gradients_and_steps_by_minus_lr_g() -> None:
    ps, _, _ = _server(4, [], "FedAvg", lr=0.5)
    before = ps.global_params
    rows = torch.stack(
        [n.gradient(before, generator=_batch(0, 1, i)) for i, n in enumerate(ps.honest_nodes)]
    )
    g = ps.round()
    assert g.shape == (ps.spec.d,)
    assert g.dtype == torch.float32
    assert torch.equal(g, FedAvg().aggregate(rows, torch.ones(4, dtype=torch.float64)).update)
    torch.testing.assert_close(g, rows.mean(dim=0))
    assert torch.equal(ps.global_params, before - 0.5 * g)
    assert ps.round_count == 1

    before = ps.global_params
    rows = torch.stack(
        [n.gradient(before, generator=_batch(0, 2, i)) for i, n in enumerate(ps.honest_nodes)]
    )
    g = ps.round()
    torch.testing.assert_close(g, rows.mean(dim=0))
    assert torch.equal(ps.global_params, before - 0.5 * g)


def test_median_with_a_sign_flip_node_equals_the_median_by_hand() -> None:
    ps, _, _ = _server(4, ["sign_flip"], "FedMedian")
    params = ps.global_params
    honest = [n.gradient(params, generator=_batch(0, 1, i)) for i, n in enumerate(ps.honest_nodes)]
    flipped = -ps.byzantine_nodes[0].gradient(params, generator=_batch(0, 1, 4))
    rows = torch.stack([*honest, flipped])
    g = ps.round()
    assert torch.equal(g, FedMedian().aggregate(rows).update)
    torch.testing.assert_close(g, rows.median(dim=0).values)


def test_label_flip_node_submits_the_scaled_gradient_on_flipped_labels() -> None:
    ps, x, y = _server(3, [{"type": "label_flip", "scale": 2.0}], "FedAvg")
    params = ps.global_params
    honest = [n.gradient(params, generator=_batch(0, 1, i)) for i, n in enumerate(ps.honest_nodes)]
    flipped_node = HonestNode(_model(), _part(x, 3), (CLASSES - 1) - _part(y, 3), batch_size=BATCH)
    evil = 2.0 * flipped_node.gradient(params, generator=_batch(0, 1, 3))
    g = ps.round()
    torch.testing.assert_close(g, torch.stack([*honest, evil]).mean(dim=0))
    [result] = ps.history[0]["attack_results"]
    assert result["attack_type"] == "label_flip"
    assert result["client_ids"] == [ps.node_ids[3]]


def test_same_seed_gives_bit_identical_parameters() -> None:
    def run(seed: int) -> torch.Tensor:
        ps, _, _ = _server(
            4,
            ["little", {"type": "gaussian", "sigma": 0.5}],
            {"type": "TrimmedMean", "k": 2},
            {"type": "Bucketing", "bucket_size": 1},
            seed=seed,
        )
        for _ in range(4):
            ps.round()
        return ps.global_params

    first = run(0)
    assert torch.equal(first, run(0))
    assert not torch.equal(first, run(1))


# --------------------------------------------------------------------------- training


def test_honest_training_reduces_the_loss() -> None:
    ps, x, y = _server(4, [], "FedAvg", lr=0.2)
    start = _loss(ps, x, y)
    for _ in range(30):
        ps.round()
    end = _loss(ps, x, y)
    assert end < 0.5 * start
    assert ps.history[-1]["train_loss"] is not None


@pytest.mark.parametrize(
    ("attack", "aggregator"),
    [
        ("empire", {"type": "TrimmedMean", "k": 2}),
        ("sign_flip", "FedMedian"),
        ({"type": "model_poisoning", "boost": 10}, {"type": "TrimmedMean", "k": 2}),
    ],
)
def test_robust_aggregation_trains_under_attack_where_the_mean_fails(
    attack: Any, aggregator: Any
) -> None:
    ps, x, y = _server(4, [attack, attack], aggregator, lr=0.2)
    start = _loss(ps, x, y)
    for _ in range(30):
        ps.round()
    robust = _loss(ps, x, y)
    assert robust < 0.5 * start

    strong = [{"type": "model_poisoning", "boost": 10}] * 2
    ps, x, y = _server(4, strong, "FedAvg", lr=0.2)
    for _ in range(30):
        ps.round()
    plain = _loss(ps, x, y)
    assert plain > start > robust


def test_pre_aggregator_runs_before_the_aggregator() -> None:
    ps, x, y = _server(5, ["empire", "empire"], Krum(f=1), NNM(f=2), lr=0.2)
    start = _loss(ps, x, y)
    for _ in range(10):
        ps.round()
    assert _loss(ps, x, y) < start
    aggregation = ps.history[0]["aggregation"]
    assert aggregation["pre_aggregators"] == ["NNM"]
    assert aggregation["rule"] == "Krum"
    assert ps.strategy == Pipeline(NNM(f=2), Krum(f=1), ServerSGD(lr=0.2))


def test_pre_aggregators_and_pipelines_by_name_and_dict() -> None:
    ps, _, _ = _server(
        4,
        [],
        {"type": "Pipeline", "stages": [{"type": "NNM", "f": 1}, "FedMedian"]},
        ["Clip", {"type": "Bucketing", "bucket_size": 2}],
    )
    ps.round()
    assert ps.history[0]["aggregation"]["pre_aggregators"] == ["Clip", "Bucketing", "NNM"]
    assert ps.strategy.aggregator == FedMedian()
    assert ps.strategy.pre_aggregators[0] == Clip()


def test_attack_results_name_the_byzantine_nodes() -> None:
    ps, _, _ = _server(4, ["empire", "sign_flip"], {"type": "TrimmedMean", "k": 2})
    ps.round()
    ps.round()
    assert ps.node_ids == tuple(f"client-{i}" for i in range(6))
    for record in ps.history:
        results = record["attack_results"]
        assert [r["attack_type"] for r in results] == ["empire", "sign_flip"]
        assert [r["client_ids"] for r in results] == [["client-4"], ["client-5"]]
        assert sorted(record["participated"]) == list(ps.node_ids)


def test_inf_node_is_dropped_by_the_mean_and_reported() -> None:
    ps, _, _ = _server(3, ["inf"], "FedAvg")
    g = ps.round()
    assert bool(torch.isfinite(g).all())
    [result] = ps.history[0]["attack_results"]
    assert result["filtered"] == ["client-3"]


def test_update_byzantines_changes_what_a_sign_flip_node_submits() -> None:
    def second_round(update: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ps, _, _ = _server(3, [SignFlip()], "FedAvg", update_byzantines=update)
        initial = ps.global_params
        ps.round()
        current = ps.global_params
        honest = [
            n.gradient(current, generator=_batch(0, 2, i)) for i, n in enumerate(ps.honest_nodes)
        ]
        stale_or_fresh = current if update else initial
        evil = -ps.byzantine_nodes[0].gradient(stale_or_fresh, generator=_batch(0, 2, 3))
        g = ps.round()
        torch.testing.assert_close(g, torch.stack([*honest, evil]).mean(dim=0))
        return g, evil

    g_stale, evil_stale = second_round(False)
    g_fresh, evil_fresh = second_round(True)
    assert not torch.allclose(evil_stale, evil_fresh)
    assert not torch.allclose(g_stale, g_fresh)


# --------------------------------------------------------------------------- state


def test_the_server_is_a_round_engine() -> None:
    from velocity.server import RoundEngine

    ps, _, _ = _server(3, ["empire"], "FedMedian")
    engine = ps.engine
    assert isinstance(engine, RoundEngine)
    g = ps.round()
    assert engine.round == ps.round_count == 1
    assert engine.last_aggregate is not None
    assert torch.equal(g, engine.last_aggregate)
    assert torch.equal(ps.global_params, engine.global_params)
    (result,) = engine.results
    assert ps.history == [result.to_dict()]
    assert result.participated == ps.node_ids
    assert result.selected_client_ids == ps.node_ids
    assert result.aggregation["rule"] == "FedMedian"
    assert result.aggregation["server_optimizer"] == "_GradientStep"
    assert result.attack_results[0]["client_ids"] == ["client-3"]


def test_model_state_dict_and_params_are_copies_of_the_global_model() -> None:
    ps, _, _ = _server(2, [], "FedAvg")
    ps.round()
    params = ps.global_params
    params.add_(1.0)
    assert not torch.equal(params, ps.global_params)
    model = ps.model
    assert isinstance(model, nn.Linear)
    assert torch.equal(ps.spec.flatten(model.state_dict()), ps.global_params)
    assert set(ps.state_dict()) == {"weight", "bias"}
    assert model is not ps.honest_nodes[0].model


def test_shutdown_is_idempotent_and_stops_rounds() -> None:
    ps, _, _ = _server(2, ["empire"], "FedAvg")
    ps.round()
    ps.shutdown()
    ps.shutdown()
    assert ps.closed
    with pytest.raises(ProtocolError, match="shut down"):
        ps.round()
    assert ps.round_count == 1
    assert len(ps.history) == 1
    assert ps.global_params.shape == (ps.spec.d,)

    with _server(2, [], "FedAvg")[0] as other:
        other.round()
    assert other.closed


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("attack", "missing"),
    [("sign_flip", "model, x, y"), ({"type": "label_flip"}, "model, x, y")],
)
def test_attacks_that_need_data_refuse_a_node_without_it(attack: Any, missing: str) -> None:
    name = attack if isinstance(attack, str) else attack["type"]
    with pytest.raises(ConfigurationError, match=f"{name}.*missing: {missing}"):
        ByzantineNode(attack)
    with pytest.raises(ConfigurationError, match="missing: x, y"):
        ByzantineNode(attack, model=_model())


def test_byzantine_node_errors() -> None:
    with pytest.raises(ConfigurationError, match="sybil_nodes"):
        ByzantineNode("sybil_nodes")
    with pytest.raises(ConfigurationError, match="unknown attack"):
        ByzantineNode("nope")
    with pytest.raises(ConfigurationError, match="both x and y"):
        ByzantineNode("empire", model=_model(), x=torch.zeros(2, FEATURES))
    with pytest.raises(ConfigurationError, match="integer class labels"):
        ByzantineNode("label_flip", model=_model(), x=torch.zeros(2, 4), y=torch.zeros(2, 3))
    assert ByzantineNode("empire").computes_gradient is False


def test_server_configuration_errors() -> None:
    x, y = _data(2)
    node = HonestNode(_model(), x, y)
    with pytest.raises(ConfigurationError, match="at least one honest node"):
        ParameterServer([], [ByzantineNode("empire")], "FedAvg")
    with pytest.raises(ConfigurationError, match=r"honest_nodes\[1\] must be a HonestNode"):
        ParameterServer([node, ByzantineNode("empire")], [], "FedAvg")  # type: ignore[list-item]
    other = HonestNode(nn.Linear(5, 3), torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigurationError, match=r"honest_nodes\[1\] has a different architecture"):
        ParameterServer([node, other], [], "FedAvg")
    with pytest.raises(ConfigurationError, match=r"byzantine_nodes\[0\] has a different"):
        ParameterServer([node], [ByzantineNode("empire", model=nn.Linear(4, 2))], "FedAvg")
    for lr in (0, -1.0, math.nan, math.inf, True, "0.1"):
        with pytest.raises(ConfigurationError, match="lr must be"):
            ParameterServer([node], [], "FedAvg", lr=lr)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="requires parameter"):
        ParameterServer([node], [], "Krum")
    with pytest.raises(ConfigurationError, match="server optimizer"):
        ParameterServer([node], [], Pipeline(FedAvg(), ServerSGD(lr=1.0)))
    with pytest.raises(ConfigurationError, match="not a pre-aggregator"):
        ParameterServer([node], [], "FedAvg", "FedMedian")
    with pytest.raises(ConfigurationError, match="update_byzantines must be true or false"):
        ParameterServer([node], [], "FedAvg", None, 1)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="batch_size"):
        HonestNode(_model(), x, y, batch_size=0)
    with pytest.raises(ConfigurationError, match="same number"):
        HonestNode(_model(), x, y[:-1])


def test_worker_momentum_is_the_exponential_average_of_gradients() -> None:
    import copy

    from velocity._random import torch_generator
    from velocity.server import HonestNode, ParameterServer

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(40, 4, generator=gen)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Linear(4, 2)
    plain = HonestNode(copy.deepcopy(model), x, y, batch_size=8)
    node = HonestNode(copy.deepcopy(model), x, y, batch_size=8, momentum=0.5)
    ps = ParameterServer([node], [], "FedAvg", lr=0.1, seed=0)
    params = ps.global_params.clone()
    m = torch.zeros_like(params)
    for r in (1, 2, 3):
        g = plain.gradient(params, generator=torch_generator(0, r, 0, "batch"))
        m = 0.5 * m + 0.5 * g
        sent = ps.round()
        torch.testing.assert_close(sent, m)
        params = params - 0.1 * m
        torch.testing.assert_close(ps.global_params, params)
    with pytest.raises(ConfigurationError, match=r"momentum must be a finite float in \[0, 1\)"):
        HonestNode(copy.deepcopy(model), x, y, momentum=1.0)
