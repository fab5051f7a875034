"""FedtrainClients: an aumai-style provider driving a RoundEngine built by hand."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from velocity.fedtrain import (
    FederatedNode,
    FedtrainClients,
    GlobalState,
    LocalUpdate,
    UpdateProvider,
    check_updates,
)
from velocity.fedtrain._provider import flat_gradients, spec_of
from velocity.server import RoundEngine
from velocity.strategies import DiLoCo, FedAvg, Pipeline
from velocity.types import ClientTask, ClientUpdate, ParamSpec

SPEC = ParamSpec(("b", "w"), ((1,), (2,)))
NODES = [FederatedNode(node_id=n, address=f"{n}:1") for n in ("a", "b", "c")]


class Fixed:
    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = list(ids)

    def sample(self, round_: int) -> list[str]:
        return list(self.ids)


class Recorder(UpdateProvider):
    def __init__(self, gradients: dict[str, dict[str, list[float]]], *, round_shift: int = 0):
        self.gradients = gradients
        self.round_shift = round_shift
        self.calls: list[tuple[int, int, list[str]]] = []

    def get_updates(
        self, round_id: int, state: GlobalState, nodes: list[FederatedNode]
    ) -> list[LocalUpdate]:
        self.calls.append((round_id, state.round_id, [n.node_id for n in nodes]))
        return [
            LocalUpdate(
                node_id=n.node_id,
                round_id=round_id + self.round_shift,
                gradients=self.gradients[n.node_id],
                loss=0.5,
                samples_used=3,
            )
            for n in nodes
            if n.node_id in self.gradients
        ]


def task(cid: str, round_: int = 1, version: int = 0) -> ClientTask:
    return ClientTask(client_id=cid, round=round_, version=version, params=torch.zeros(SPEC.d))


GRADS = {"a": {"w": [1.0, 2.0], "b": [0.5]}, "b": {"w": [3.0, 4.0], "b": [-0.5]}}


def test_submit_turns_local_updates_into_digested_client_updates() -> None:
    provider = Recorder(GRADS)
    clients = FedtrainClients(provider, NODES, SPEC)
    clients.submit([task("a", 4, 3), task("b", 4, 3)])
    assert provider.calls == [(1, 0, ["a", "b"])]  # state.round_id + 1, the tasks' nodes
    results = clients.collect()
    assert [r.client_id for r in results] == ["a", "b"]
    first = results[0]
    assert isinstance(first, ClientUpdate)
    assert first.delta is not None
    assert first.delta.dtype == torch.float32
    assert first.delta.tolist() == [-0.5, -1.0, -2.0]  # -(b, w...) in sorted key order
    assert first.num_samples == 3
    assert first.loss == 0.5
    assert (first.round, first.base_version) == (4, 3)
    assert first.verify_digest()
    assert [u.node_id for u in clients.received] == ["a", "b"]
    assert clients.collect() == []  # collected once


def test_collect_max_results_and_cancel() -> None:
    clients = FedtrainClients(Recorder(GRADS), NODES, SPEC)
    clients.submit([task("a"), task("b")])
    assert [r.client_id for r in clients.collect(max_results=1)] == ["a"]
    assert [r.client_id for r in clients.collect(until=0.0)] == ["b"]
    clients.submit([task("a"), task("b")])
    clients.cancel(["a"])
    assert [r.client_id for r in clients.collect()] == ["b"]


def test_state_round_is_what_the_provider_is_asked() -> None:
    provider = Recorder(GRADS)
    clients = FedtrainClients(provider, NODES, SPEC, state=GlobalState(round_id=6))
    clients.submit([task("a")])
    assert provider.calls == [(7, 6, ["a"])]


def test_submit_refuses_wrong_rounds_unknown_nodes_and_bad_layouts() -> None:
    with pytest.raises(ValueError, match="round 1: the update of node 'a' is for round 2"):
        FedtrainClients(Recorder(GRADS, round_shift=1), NODES, SPEC).submit([task("a")])
    with pytest.raises(ValueError, match=r"tasks name unknown nodes \['zz'\]"):
        FedtrainClients(Recorder(GRADS), NODES, SPEC).submit([task("zz")])
    bad = {"a": {"w": [1.0], "b": [0.5]}}
    with pytest.raises(ValueError, match="node 'a' sends 1 values for gradient 'w'"):
        FedtrainClients(Recorder(bad), NODES, SPEC).submit([task("a")])
    extra = {"a": {"w": [1.0, 1.0], "b": [0.5], "z": [1.0]}}
    with pytest.raises(ValueError, match="node 'a' sends gradient 'z', which the model"):
        FedtrainClients(Recorder(extra), NODES, SPEC).submit([task("a")])

    class Outsider(UpdateProvider):
        def get_updates(
            self, round_id: int, state: GlobalState, nodes: list[FederatedNode]
        ) -> list[LocalUpdate]:
            return [
                LocalUpdate(node_id="c", round_id=1, gradients=GRADS["a"], loss=0, samples_used=0)
            ]

    with pytest.raises(ValueError, match="node 'c' is not one of this run's nodes"):
        FedtrainClients(Outsider(), NODES, SPEC).submit([task("a")])


def test_constructor_refuses_duplicates_and_non_providers() -> None:
    with pytest.raises(ValueError, match="unique"):
        FedtrainClients(Recorder(GRADS), [NODES[0], NODES[0]], SPEC)
    with pytest.raises(ValueError, match="UpdateProvider"):
        FedtrainClients(object(), NODES, SPEC)  # type: ignore[arg-type]


def test_drives_a_hand_built_engine_with_dilocos_outer_step() -> None:
    provider = Recorder(GRADS)
    clients = FedtrainClients(provider, NODES, SPEC)
    engine = RoundEngine(
        provider=clients,
        sampler=Fixed(["a", "b", "c"]),  # "c" sends nothing: the engine records a failure
        spec=SPEC,
        init_params=torch.zeros(SPEC.d),
        strategy=Pipeline(FedAvg(), DiLoCo(lr=1.0, momentum=0.0, nesterov=False)),
        seed=0,
    )
    result = engine.run_round()
    assert result.participated == ("a", "b")
    assert [f.client_id for f in result.failures] == ["c"]
    # FedAvg weighs by samples_used (equal here): x = 0 - mean gradient
    assert engine.global_params.tolist() == [0.0, -2.0, -3.0]
    clients.state = GlobalState(round_id=1)
    engine.run_round()
    assert provider.calls[1][:2] == (2, 1)
    assert engine.global_params.tolist() == [0.0, -4.0, -6.0]


def test_check_updates_without_round_or_nodes() -> None:
    u = LocalUpdate(node_id="a", round_id=9, gradients={}, loss=0.0, samples_used=0)
    assert check_updates([u]) == [u]
    assert check_updates((u,), 9, {"a"}) == [u]
    with pytest.raises(ValueError, match="must be a list"):
        check_updates("a")


def test_spec_of_and_flat_gradients() -> None:
    updates = [
        LocalUpdate(node_id=n, round_id=1, gradients=g, loss=0, samples_used=0)
        for n, g in (
            ("a", {"z": [1.0, 2.0], "e": [], "a": [3.0]}),
            ("b", {"a": [1.0], "z": [0.0, 0.0]}),
        )
    ]
    spec = spec_of(updates)
    assert spec.names == ("a", "z")  # sorted, the empty key left out
    assert spec.shapes == ((1,), (2,))
    assert flat_gradients(updates[0], spec).tolist() == [3.0, 1.0, 2.0]
    assert spec_of([updates[0].model_copy(update={"gradients": {"e": []}})]).d == 0


def test_submit_verifies_attached_digests_unless_told_not_to() -> None:
    from velocity.fedtrain import HashVerifier

    class Signed(UpdateProvider):
        def __init__(self, claimed: dict[str, list[float]]) -> None:
            self.claimed = claimed

        def get_updates(
            self, round_id: int, state: GlobalState, nodes: list[FederatedNode]
        ) -> list[LocalUpdate]:
            digest = HashVerifier.compute_hash(self.claimed)
            return [
                LocalUpdate(
                    node_id="a", round_id=1, gradients=GRADS["a"], loss=0, samples_used=0,
                    digest=digest,
                )
            ]  # fmt: skip

    FedtrainClients(Signed(GRADS["a"]), NODES, SPEC).submit([task("a")])
    tampered = FedtrainClients(Signed(GRADS["b"]), NODES, SPEC)
    with pytest.raises(ValueError, match="gradients of node 'a' do not match their digest"):
        tampered.submit([task("a")])
    tampered.verify_digests = False
    tampered.submit([task("a")])
    assert len(tampered.collect()) == 1
