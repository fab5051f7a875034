"""Decentralized SGD: vectorized gradients, one round by hand, determinism, metrics, config."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from velocity.data import DataNotFoundError, partition
from velocity.errors import ConfigurationError
from velocity.p2p import (
    MIXING_RULES,
    DecentralizedSGD,
    P2PRound,
    Topology,
    check_attack,
    check_mixing,
    clipped_gossip,
    consensus_distance,
    metropolis_weights,
)

ROOT = Path(__file__).resolve().parents[2]


def _task(n_nodes: int = 8, samples: int = 400, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Two Gaussian blobs in 6-D: a linearly separable binary task."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (samples,), generator=g)
    x = torch.randn(samples, 6, generator=g) + 2.0 * (2 * y[:, None] - 1).float()
    return x, y


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))


def _sgd(**kw: object) -> DecentralizedSGD:
    x, y = _task()
    n = int(kw.pop("n", 8))  # type: ignore[call-overload]
    topo = kw.pop("topology", Topology.ring(n))
    settings: dict[str, object] = {"lr": 0.2, "batch_size": 16, "seed": 1, "test": (x, y)}
    settings.update(kw)
    return DecentralizedSGD(
        _model(),
        topo,  # type: ignore[arg-type]
        x,
        y,
        partition(y, n, "iid", seed=0),
        **settings,  # type: ignore[arg-type]
    )


def test_vmapped_gradients_equal_a_per_node_loop() -> None:
    sgd = _sgd()
    xb, yb = sgd._batches(1)
    assert xb.shape == (8, 16, 6)
    assert yb.shape == (8, 16)
    grads, losses = sgd._gradients(xb, yb)
    for i in range(8):
        model = _model()
        loss = F.cross_entropy(model(xb[i]), yb[i])
        loss.backward()  # type: ignore[no-untyped-call]
        ref = torch.cat([p.grad.reshape(-1) for p in model.parameters()])  # type: ignore[union-attr]
        assert torch.allclose(grads[i], ref, atol=1e-6)
        assert losses[i].item() == pytest.approx(loss.item(), rel=1e-6)


def test_batches_come_from_each_nodes_own_samples() -> None:
    x, y = _task()
    parts = partition(y, 8, "dirichlet", seed=0, alpha=0.3)
    sgd = DecentralizedSGD(_model(), Topology.ring(8), x, y, parts, batch_size=50, seed=3)
    xb, _ = sgd._batches(4)
    for i in range(8):
        own = x[parts.indices(i)]
        assert all(bool((own == row).all(dim=1).any()) for row in xb[i])


def test_one_round_by_hand_with_sign_flip_and_plain_gossip() -> None:
    topo = Topology.random_regular(8, 4, seed=0)
    sgd = _sgd(topology=topo, byzantine=[2, 5], attack="sign_flip")
    base = sgd.params
    xb, yb = sgd._batches(1)
    g, _ = sgd._gradients(xb, yb)
    half = base - sgd.lr * g
    sent = half.clone()
    sent[[2, 5]] = -half[[2, 5]]  # sign_flip (scale -1) of the Byzantine nodes' own vectors
    honest = list(sgd.honest_nodes)
    want = metropolis_weights(topo)[honest].float() @ sent
    sgd.step()
    after = sgd.params
    assert torch.allclose(after[honest], want, atol=1e-6)
    assert torch.allclose(after[[2, 5]], want.mean(dim=0).expand(2, -1))  # track honest mean


def test_one_round_by_hand_with_clipped_gossip_oracle_budget() -> None:
    topo = Topology.ring(8, 2)
    sgd = _sgd(
        topology=topo,
        byzantine=[0],
        attack={"type": "gaussian", "sigma": 5.0},
        mixing="clipped_gossip",
    )
    w = metropolis_weights(topo)
    rounds = sgd.run(2)
    assert all(math.isfinite(r.loss) for r in rounds)
    # the default budget: each node's total weight on Byzantine in-neighbours
    delta = w[:, 0].clone()
    delta[0] = 0.0
    sgd2 = _sgd(
        topology=topo,
        byzantine=[0],
        attack={"type": "gaussian", "sigma": 5.0},
        mixing="clipped_gossip",
        mixing_params={"delta": 0.0},
    )
    assert sgd2.mixing == "clipped_gossip"
    x = torch.randn(8, 5, dtype=torch.float64)
    honest = list(sgd.honest_nodes)
    assert torch.allclose(sgd._mix(x), clipped_gossip(x, w, delta=delta, rows=honest))


def test_training_decreases_loss_and_is_bit_deterministic() -> None:
    a = _sgd(eval_every=5).run(30)
    b = _sgd(eval_every=5).run(30)
    assert a == b
    first = sum(r.loss for r in a[:3]) / 3
    last = sum(r.loss for r in a[-3:]) / 3
    assert last < 0.5 * first
    assert a[-1].honest_mean_accuracy is not None
    assert a[-1].honest_mean_accuracy > 0.9
    sa, sb = _sgd(), _sgd()
    sa.run(5)
    sb.run(5)
    assert torch.equal(sa.params, sb.params)
    other = _sgd(seed=2)
    other.run(5)
    assert not torch.equal(other.params, sa.params)


@pytest.mark.parametrize("mixing", [*MIXING_RULES, "median", "trimmed_mean"])
def test_every_mixing_rule_trains_under_attack(mixing: str) -> None:
    params = {"f": 1} if mixing == "trimmed_mean" else None
    sgd = _sgd(
        n=10,
        topology=Topology.ring(10, 2),
        byzantine=[3],
        attack="sign_flip",
        mixing=mixing,
        mixing_params=params,
        eval_every=20,
    )
    rounds = sgd.run(20)
    assert sgd.mixing == mixing
    acc = rounds[-1].honest_mean_accuracy
    assert acc is not None
    if mixing != "gossip":
        assert acc > 0.9, mixing


def test_byzantine_rows_never_enter_honest_metrics() -> None:
    sgd = _sgd(n=10, topology=Topology.ring(10, 2), byzantine=[1, 6], attack="inf", mixing="nna")
    r = sgd.step()
    params = sgd.params
    honest = list(sgd.honest_nodes)
    assert sgd.honest_nodes == (0, 2, 3, 4, 5, 7, 8, 9)
    assert torch.isfinite(params).all()
    assert r.consensus_distance == pytest.approx(consensus_distance(params, honest=honest))
    assert r.node_accuracy is not None
    assert len(r.node_accuracy) == 8
    assert math.isfinite(r.loss)
    # metrics are computed from the honest rows only: poisoning the Byzantine rows changes none
    before = sgd.node_accuracy()
    sgd._params[[1, 6]] = math.nan
    assert sgd.node_accuracy() == before
    x, y = _task()
    for k, i in enumerate(honest):
        model = _model()
        torch.nn.utils.vector_to_parameters(params[i], model.parameters())
        acc = (model(x).argmax(dim=1) == y).double().mean().item()
        assert before[k] == pytest.approx(acc)


def test_plain_gossip_is_broken_by_noise_and_robust_rules_are_not() -> None:
    kw: dict[str, object] = {
        "n": 10,
        "topology": Topology.ring(10, 2),
        "byzantine": [3, 7],
        "attack": {"type": "gaussian", "sigma": 3.0},
        "eval_every": 25,
    }
    bad = _sgd(**kw, mixing="gossip").run(25)[-1]
    assert bad.honest_mean_accuracy is not None
    for rule in ("nna", "clipped_gossip"):
        good = _sgd(**kw, mixing=rule).run(25)[-1]
        assert good.honest_mean_accuracy is not None
        assert good.honest_mean_accuracy > bad.honest_mean_accuracy + 0.1, rule
        assert good.loss < 0.5 * bad.loss, rule
        assert good.consensus_distance < 0.1 * bad.consensus_distance, rule


@pytest.mark.parametrize(
    ("space", "knowledge"),
    [("update", "omniscient"), ("model", "neighbours"), ("update", "neighbours")],
)
def test_attack_spaces_and_knowledge(space: str, knowledge: str) -> None:
    sgd = _sgd(
        byzantine=[0, 4],
        attack="little",
        attack_space=space,
        attack_knowledge=knowledge,
        mixing="clipped_gossip",
    )
    base = sgd.params
    rounds = sgd.run(3)
    assert all(math.isfinite(r.consensus_distance) for r in rounds)
    assert not torch.equal(base, sgd.params)
    again = _sgd(
        byzantine=[0, 4],
        attack="little",
        attack_space=space,
        attack_knowledge=knowledge,
        mixing="clipped_gossip",
    ).run(3)
    assert again == rounds


def test_update_space_sends_model_plus_crafted_update() -> None:
    sgd = _sgd(byzantine=[2], attack={"type": "sign_flip", "scale": -1.0}, attack_space="update")
    base = sgd.params
    xb, yb = sgd._batches(1)
    g, _ = sgd._gradients(xb, yb)
    half = base - sgd.lr * g
    crafted = sgd._craft(half, base, 1)
    assert torch.allclose(crafted[0], base[2] + sgd.lr * g[2], atol=1e-7)


def test_p2p_round_to_dict() -> None:
    r = P2PRound(3, 0.5, math.inf, (0.5, 1.0), 0.75)
    assert r.to_dict() == {
        "round": 3,
        "loss": 0.5,
        "consensus_distance": None,
        "node_accuracy": [0.5, 1.0],
        "honest_mean_accuracy": 0.75,
    }


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"mixing": "average"}, "mixing must be one of 'gossip', 'clipped_gossip', 'nna'"),
        ({"mixing": "qfedavg"}, "mixing must be one of"),
        ({"mixing": "nna", "mixing_params": {"tau": 1}}, "accepted: f"),
        ({"mixing": "clipped_gossip", "mixing_params": {"tau": 1, "f": 1}}, "at most one"),
        ({"mixing": "clipped_gossip", "mixing_params": {"tau": -1}}, "mixing_params.tau"),
        ({"byzantine": [1]}, "need an attack"),
        ({"attack": "sign_flip"}, "needs byzantine nodes"),
        ({"byzantine": [1], "attack": "label_flipping"}, "data attack"),
        ({"byzantine": [1], "attack": "sybil_nodes"}, "sybil_nodes"),
        ({"byzantine": [1], "attack": "nope"}, "unknown attack"),
        ({"byzantine": [8], "attack": "sign_flip"}, "byzantine"),
        ({"lr": 0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"attack_space": "grad"}, "attack_space"),
        ({"attack_knowledge": "all"}, "attack_knowledge"),
    ],
)
def test_bad_settings_are_refused(kw: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        _sgd(**kw)
    assert needle in str(info.value)


def test_partition_must_match_the_topology() -> None:
    x, y = _task()
    with pytest.raises(ConfigurationError, match="Partition with 8 clients"):
        DecentralizedSGD(_model(), Topology.ring(8), x, y, partition(y, 4, "iid", seed=0))


def test_from_config_on_mnist() -> None:
    try:
        sgd = DecentralizedSGD.from_config(
            n_nodes=6,
            topology="ring",
            topology_params={"k": 1},
            byzantine=1,
            attack="gaussian",
            mixing="clipped_gossip",
            model="logreg",
            train_samples=600,
            test_samples=100,
            batch_size=4,
            download=False,
        )
    except DataNotFoundError:
        pytest.skip("MNIST not found (set VELOCITY_DATA)")
    assert len(sgd.byzantine_nodes) == 1
    assert sgd.params.shape == (6, 7850)
    r = sgd.run(2)[-1]
    assert r.node_accuracy is not None
    assert len(r.node_accuracy) == 5
    with pytest.raises(ConfigurationError, match="topology kind"):
        DecentralizedSGD.from_config(topology="torus", download=False)


def _benchmark(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("p2p_benchmark", ROOT / "benchmarks" / "p2p.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_benchmark_quick_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = _benchmark(monkeypatch)
    out = tmp_path / "p2p.json"
    try:
        assert bench.main(["--quick", "--json", str(out)]) == 0
    except DataNotFoundError:
        pytest.skip("MNIST not found (set VELOCITY_DATA)")
    text = capsys.readouterr().out
    assert "| clipped_gossip (adaptive) |" in text
    assert "| sign_flip | nna |" in text
    import json

    payload = json.loads(out.read_text())
    assert set(payload["mixing"]["ratios"]) >= {"gossip", "nna (f=2)"}
    assert [r["mixing"] for r in payload["mnist"]["rows"]] == [
        "gossip",
        "gossip",
        "clipped_gossip",
        "nna",
    ]


def test_check_attack_and_check_mixing_without_a_topology() -> None:
    assert check_attack("SignFlipAttack").name == "sign_flip"
    with pytest.raises(ConfigurationError, match="data attack"):
        check_attack("label_flip")
    assert check_mixing("clipped_gossip", {"delta": 1}) == {"delta": 1.0}
    assert check_mixing("nna", {"f": 2}) == {"f": 2}
    assert check_mixing("trimmed_mean", {"f": 1}) == {"f": 1}
    assert check_mixing("gossip") == {}
    with pytest.raises(ConfigurationError, match=r"mixing_params\.f"):
        check_mixing("nna", {"f": -1})
    with pytest.raises(ConfigurationError, match="accepted: \\(none\\)"):
        check_mixing("gossip", {"tau": 1.0})
    with pytest.raises(ConfigurationError, match="must be a mapping"):
        check_mixing("nna", [1])  # type: ignore[arg-type]


def test_label_histogram_counts_each_nodes_labels() -> None:
    x, y = _task()
    parts = partition(y, 8, "dirichlet", seed=0, alpha=0.3)
    sgd = DecentralizedSGD(_model(), Topology.ring(8), x, y, parts)
    hist = sgd.label_histogram()
    assert len(hist) == 8
    for i in range(8):
        own = y[parts.indices(i)]
        assert hist[i] == [int((own == c).sum()) for c in range(2)]


def test_clipped_gossip_f_at_least_the_degree_is_refused() -> None:
    from velocity.p2p import Topology

    with pytest.raises(ConfigurationError, match=r"mixing_params\.f.*in-degree"):
        DecentralizedSGD.check_setup(
            Topology.ring(6, k=1), mixing="clipped_gossip", mixing_params={"f": 2}
        )
    DecentralizedSGD.check_setup(
        Topology.ring(6, k=1), mixing="clipped_gossip", mixing_params={"f": 1}
    )
