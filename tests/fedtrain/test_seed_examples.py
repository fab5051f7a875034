"""Every code block of the aumai-fedtrain getting-started guide runs as written.

The blocks are the guide's, with ``aumai_fedtrain`` replaced by ``velocity.fedtrain`` and the
``aumai-fedtrain`` command by ``velocity fedtrain`` (run in-process through ``cli.main``).
Python blocks run with ``exec`` in one namespace per section, as a reader pasting them into
one session would; their output is checked.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from velocity import __version__, cli

TRAIN_JSON = """\
{
  "model_name": "my-model-v1",
  "learning_rate": 0.001,
  "batch_size": 32,
  "local_steps": 10,
  "global_rounds": 5,
  "num_nodes": 3
}
"""

UPDATE_JSON = """\
{
  "node_id": "node-000",
  "round_id": 1,
  "gradients": {
    "weight": [0.1, -0.2, 0.05, 0.03],
    "bias":   [0.01]
  },
  "loss": 0.852341,
  "samples_used": 128
}
"""

COMPUTE_HASH = """\
from velocity.fedtrain import HashVerifier, LocalUpdate

update = LocalUpdate.model_validate({
    "node_id": "node-000",
    "round_id": 1,
    "gradients": {"weight": [0.1, -0.2, 0.05, 0.03], "bias": [0.01]},
    "loss": 0.852341,
    "samples_used": 128,
})
verifier = HashVerifier()
print(verifier.compute_hash(update.gradients))
"""

STEP_4 = """\
import math
import random

from velocity.fedtrain import (
    DiLoCoCoordinator,
    FederatedNode,
    GlobalState,
    LocalUpdate,
    TrainingConfig,
    UpdateProvider,
)


class DecayingLossProvider(UpdateProvider):
    \"\"\"Produces updates with exponentially decaying loss.\"\"\"

    def get_updates(
        self,
        round_id: int,
        state: GlobalState,
        nodes: list[FederatedNode],
    ) -> list[LocalUpdate]:
        return [
            LocalUpdate(
                node_id=node.node_id,
                round_id=round_id,
                gradients={
                    "w": [random.gauss(0, 0.05 / round_id) for _ in range(8)],
                    "b": [random.gauss(0, 0.01 / round_id)],
                },
                loss=math.exp(-round_id * 0.3),
                samples_used=random.randint(100, 300),
            )
            for node in nodes
        ]


config = TrainingConfig(
    model_name="demo",
    learning_rate=0.001,
    batch_size=32,
    local_steps=10,
    global_rounds=8,
    num_nodes=4,
)

nodes = [
    FederatedNode(node_id=f"node-{i}", address=f"192.168.1.{i}:5000")
    for i in range(4)
]

coordinator = DiLoCoCoordinator()
result = coordinator.run_training(config, nodes, DecayingLossProvider())

print(f"Final loss:    {result.final_loss:.6f}")
print(f"Total samples: {result.total_samples}")
print(f"Duration:      {result.duration_seconds:.4f}s")
"""

STEP_5 = """\
credits = coordinator.credit_tracker.all_credits()
for node_id, samples in sorted(credits.items()):
    print(f"  {node_id}: {samples} samples")

# Query a single node
node_0_credits = coordinator.credit_tracker.get_credits("node-0")
print(f"node-0 contributed {node_0_credits} samples total")
"""

PATTERN_1 = """\
from velocity.fedtrain import DiLoCoCoordinator, FederatedNode, TrainingConfig, LocalUpdate

coordinator = DiLoCoCoordinator()

config = TrainingConfig(
    model_name="manual-run",
    learning_rate=0.01,
    batch_size=64,
    local_steps=5,
    global_rounds=10,
    num_nodes=2,
)
nodes = [
    FederatedNode(node_id="node-a", address="10.0.0.1:5000"),
    FederatedNode(node_id="node-b", address="10.0.0.2:5000"),
]

# Start
state = coordinator.initialize(config, nodes)
print(f"Initialised at round {state.round_id}")

# Simulate one round
updates = [
    LocalUpdate(node_id="node-a", round_id=1, gradients={"w": [0.1, 0.2]}, loss=0.5, samples_used=64),
    LocalUpdate(node_id="node-b", round_id=1, gradients={"w": [0.2, 0.1]}, loss=0.4, samples_used=64),
]
new_state = coordinator.run_round(state, updates)
print(f"After round {new_state.round_id}: avg_loss={new_state.avg_loss}")
print(f"Averaged weights: {new_state.global_weights}")
"""  # noqa: E501

PATTERN_2 = """\
from velocity.fedtrain import HashVerifier, LocalUpdate

verifier = HashVerifier()

# On the sending node: compute and attach the hash
update = LocalUpdate(
    node_id="node-0",
    round_id=3,
    gradients={"w": [0.01, -0.02, 0.005], "b": [0.001]},
    loss=0.321,
    samples_used=200,
)
hash_digest = verifier.compute_hash(update.gradients)

# On the receiving coordinator: verify before aggregating
if not verifier.verify(update, hash_digest):
    raise ValueError(f"Gradient tampering detected from {update.node_id}")
"""

PATTERN_3 = """\
from velocity.fedtrain import UpdateProvider, LocalUpdate, GlobalState, FederatedNode

class HttpUpdateProvider(UpdateProvider):
    \"\"\"Collects real gradient updates from live nodes over HTTP.\"\"\"

    def get_updates(
        self,
        round_id: int,
        state: GlobalState,
        nodes: list[FederatedNode],
    ) -> list[LocalUpdate]:
        import httpx
        updates: list[LocalUpdate] = []
        for node in nodes:
            response = httpx.post(
                f"http://{node.address}/train",
                json={
                    "round_id": round_id,
                    "global_weights": state.global_weights,
                },
                timeout=60.0,
            )
            response.raise_for_status()
            updates.append(LocalUpdate.model_validate(response.json()))
        return updates
"""

PATTERN_4 = """\
import json
from velocity.fedtrain.models import GlobalState

# After each round, checkpoint the state
state_json = json.dumps(state.model_dump(mode="json"), indent=2)
with open(f"checkpoint_round_{state.round_id}.json", "w") as f:
    f.write(state_json)

# Reload from checkpoint
with open("checkpoint_round_5.json") as f:
    restored_state = GlobalState.model_validate_json(f.read())
print(f"Restored from round {restored_state.round_id}")
"""

PATTERN_5 = """\
from velocity.fedtrain.models import FederatedNode

nodes = [
    FederatedNode(
        node_id="gpu-node-0",
        address="10.0.0.1:5000",
        capabilities={
            "gpu": True,
            "gpu_model": "A100",
            "ram_gb": 80,
            "network_mbps": 10000,
        },
        status="idle",
    ),
    FederatedNode(
        node_id="cpu-node-1",
        address="10.0.0.2:5000",
        capabilities={
            "gpu": False,
            "ram_gb": 32,
            "network_mbps": 1000,
        },
        status="idle",
    ),
]
"""

FAQ_PYTORCH = """\
gradients = {
    name: param.grad.detach().cpu().numpy().tolist()
    for name, param in model.named_parameters()
    if param.grad is not None
}
"""


def run(code: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    namespace = {"__name__": "__seed_example__"} if namespace is None else namespace
    exec(compile(code, "<seed example>", "exec"), namespace)
    return namespace


# ---------------------------------------------------------------------- installation / verify


def test_verify_version_command(capsys: pytest.CaptureFixture[str]) -> None:
    # aumai-fedtrain --version  ->  velocity --version
    assert cli.main(["--version"]) == cli.EXIT_OK
    assert capsys.readouterr().out == f"velocityfl {__version__}\n"


def test_verify_version_attribute() -> None:
    # python -c "import aumai_fedtrain; print(aumai_fedtrain.__version__)"
    out = subprocess.run(
        [sys.executable, "-c", "import velocity.fedtrain; print(velocity.fedtrain.__version__)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout == f"{__version__}\n"


# ---------------------------------------------------------------------- steps 1-3: the CLI


def test_step_1_and_2_run_the_cli_simulation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("train.json").write_text(TRAIN_JSON, encoding="utf-8")
    assert cli.main(["fedtrain", "run", "--config", "train.json", "--nodes", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Starting federated training: my-model-v1  nodes=3  rounds=5"
    assert lines[1] == ""
    assert lines[2] == "Training complete."
    assert lines[3] == "  Rounds completed:  5/5"
    total = int(re.fullmatch(r"  Total samples:     (\d+)", lines[4]).group(1))  # type: ignore[union-attr]
    loss = float(re.fullmatch(r"  Final avg loss:    (\d\.\d{6})", lines[5]).group(1))  # type: ignore[union-attr]
    assert re.fullmatch(r"  Duration:          \d+\.\d{3}s", lines[6])
    assert lines[7] == ""
    assert lines[8] == "Node credits (samples processed):"
    credits = [re.fullmatch(r"  (node-\d{3}): (\d+) samples", line) for line in lines[9:]]
    assert [m.group(1) for m in credits if m] == ["node-000", "node-001", "node-002"]
    assert sum(int(m.group(2)) for m in credits if m) == total
    # "The Final avg loss should be significantly lower than 1.0"
    assert loss < 0.5


def test_step_3_hash_then_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("update.json").write_text(UPDATE_JSON, encoding="utf-8")
    run(COMPUTE_HASH)
    digest = capsys.readouterr().out.strip()
    gradients = {"weight": [0.1, -0.2, 0.05, 0.03], "bias": [0.01]}
    expected = hashlib.sha256(json.dumps(gradients, sort_keys=True).encode()).hexdigest()
    assert digest == expected
    # aumai-fedtrain verify --update update.json --hash <paste the hash here>
    assert cli.main(["fedtrain", "verify", "--update", "update.json", "--hash", digest]) == 0
    assert capsys.readouterr().out == f"Verification PASSED.  Hash: {digest}\n"


# ---------------------------------------------------------------------- steps 4-5


def test_step_4_and_5_custom_provider_and_credits(capsys: pytest.CaptureFixture[str]) -> None:
    namespace = run(STEP_4)
    out = capsys.readouterr().out.splitlines()
    result = namespace["result"]
    assert out[0] == f"Final loss:    {result.final_loss:.6f}"
    assert result.rounds_completed == 8
    assert result.final_loss == pytest.approx(__import__("math").exp(-8 * 0.3))
    assert out[1] == f"Total samples: {result.total_samples}"
    assert re.fullmatch(r"Duration:      \d+\.\d{4}s", out[2])

    run(STEP_5, namespace)
    out = capsys.readouterr().out.splitlines()
    credits = namespace["credits"]
    assert sorted(credits) == ["node-0", "node-1", "node-2", "node-3"]
    assert out[:4] == [f"  {n}: {credits[n]} samples" for n in sorted(credits)]
    assert sum(credits.values()) == result.total_samples
    assert 8 * 100 <= credits["node-0"] <= 8 * 300
    assert out[4] == f"node-0 contributed {credits['node-0']} samples total"


# ---------------------------------------------------------------------- patterns


def test_pattern_1_single_manual_round(capsys: pytest.CaptureFixture[str]) -> None:
    namespace = run(PATTERN_1)
    assert capsys.readouterr().out.splitlines() == [
        "Initialised at round 0",
        "After round 1: avg_loss=0.45",
        "Averaged weights: {'w': [0.15000000000000002, 0.15000000000000002]}",
    ]
    coordinator = namespace["coordinator"]
    assert coordinator.credit_tracker.all_credits() == {"node-a": 64, "node-b": 64}
    # the engine took DiLoCo's first outer step from zeros: -0.7 * (1 + 0.9) * g
    assert coordinator.model["w"] == pytest.approx([-0.7 * 1.9 * 0.15] * 2, rel=1e-6)


def test_pattern_2_verify_in_a_pipeline() -> None:
    namespace = run(PATTERN_2)
    verifier, update = namespace["verifier"], namespace["update"]
    assert verifier.verify(update, namespace["hash_digest"])
    tampered = update.model_copy(update={"gradients": {"w": [0.01, -0.02, 0.006], "b": [0.001]}})
    assert not verifier.verify(tampered, namespace["hash_digest"])


def test_pattern_3_http_provider_defines_without_httpx() -> None:
    from velocity.fedtrain import UpdateProvider

    namespace = run(PATTERN_3)
    provider = namespace["HttpUpdateProvider"]()
    assert isinstance(provider, UpdateProvider)


@pytest.mark.skipif(importlib.util.find_spec("httpx") is None, reason="httpx is not installed")
def test_pattern_3_http_provider_with_a_mock_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from velocity.fedtrain import FederatedNode, GlobalState

    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append({"url": str(request.url), **body})
        node = request.url.host
        return httpx.Response(
            200,
            json={
                "node_id": node,
                "round_id": body["round_id"],
                "gradients": {"w": [1.0]},
                "loss": 0.5,
                "samples_used": 10,
            },
        )

    client = httpx.Client(transport=httpx.MockTransport(handler))
    monkeypatch.setattr(httpx, "post", client.post)
    namespace = run(PATTERN_3)
    nodes = [FederatedNode(node_id=h, address=f"{h}:5000") for h in ("a", "b")]
    state = GlobalState(round_id=0, global_weights={"w": [0.25]})
    updates = namespace["HttpUpdateProvider"]().get_updates(1, state, nodes)
    assert [u.node_id for u in updates] == ["a", "b"]
    assert seen[0] == {"url": "http://a:5000/train", "round_id": 1, "global_weights": {"w": [0.25]}}


def test_pattern_4_checkpoint_the_global_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from velocity.fedtrain import DiLoCoCoordinator, SimulatedNodes, TrainingConfig

    config = TrainingConfig.model_validate_json(TRAIN_JSON)
    simulation = SimulatedNodes(config, seed=0)
    state = DiLoCoCoordinator().run_training(config, simulation.nodes, simulation).final_state
    assert state.round_id == 5
    monkeypatch.chdir(tmp_path)
    namespace = run(PATTERN_4, {"state": state})
    assert capsys.readouterr().out == "Restored from round 5\n"
    assert namespace["restored_state"] == state
    assert (tmp_path / "checkpoint_round_5.json").exists()


def test_pattern_5_node_capabilities() -> None:
    namespace = run(PATTERN_5)
    gpu, cpu = namespace["nodes"]
    assert gpu.capabilities == {
        "gpu": True,
        "gpu_model": "A100",
        "ram_gb": 80,
        "network_mbps": 10000,
    }
    assert type(gpu.capabilities["gpu"]) is bool
    assert type(gpu.capabilities["ram_gb"]) is int
    assert cpu.status == "idle"


# ---------------------------------------------------------------------- FAQ


def test_faq_empty_updates_messages() -> None:
    from velocity.fedtrain import DiLoCoCoordinator, GradientAverager

    with pytest.raises(ValueError, match=r"^Cannot average an empty list of updates\.$"):
        GradientAverager().average([])
    with pytest.raises(ValueError, match=r"^No updates provided for aggregation\.$"):
        DiLoCoCoordinator().collect_updates([])


def test_faq_pytorch_gradients_feed_a_local_update() -> None:
    import torch

    from velocity.fedtrain import LocalUpdate

    model = torch.nn.Linear(3, 2)
    model(torch.ones(4, 3)).square().sum().backward()
    namespace = run(FAQ_PYTORCH, {"model": model})
    gradients = namespace["gradients"]
    assert set(gradients) == {"weight", "bias"}
    # a 2-D parameter's .tolist() is a list of lists: flatten it for a LocalUpdate
    flat = {k: torch.tensor(v).flatten().tolist() for k, v in gradients.items()}
    update = LocalUpdate(node_id="n", round_id=1, gradients=flat, loss=0.0, samples_used=4)
    assert len(update.gradients["weight"]) == 6
