"""docs/extending.md runs: its Python blocks, in order, as one program, and they do what the
page says (the custom provider's failures and digests, the custom stage's state and metrics)."""

from __future__ import annotations

import contextlib
import io
import re
import sys
import types
from pathlib import Path

import pytest
import torch

from velocity.types import ClientTask, ClientUpdate, TaskConfig, UpdateProvider

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


@pytest.fixture(scope="module")
def page() -> types.ModuleType:
    """The page's namespace after running every ``python`` block (a real module, so that
    dataclasses and annotations resolve as in a file)."""
    blocks = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) == 3, "provider, stage, wiring"
    module = types.ModuleType("velocity_extending_docs")
    sys.modules[module.__name__] = module
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            for i, block in enumerate(blocks):
                exec(compile(block, f"{DOC}:block{i + 1}", "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    module.printed = out.getvalue()
    return module


def test_the_model_converges_to_the_honest_clients_mean_target(page: types.ModuleType) -> None:
    honest = [page.targets[c] for c in ("c0", "c1", "c2")]
    mean = torch.stack(honest).mean(0)
    assert torch.linalg.vector_norm(page.engine.global_params - mean) < 0.05
    # the reported training loss falls to its floor: the honest clients' spread around the mean
    floor = sum(0.5 * float((mean - t).square().sum()) for t in honest) / len(honest)
    losses = [r.train_loss for r in page.results]
    assert losses[0] > 4 * floor
    assert losses[-1] == pytest.approx(floor, rel=1e-3)


def test_failures_offline_dropped_and_tampered_rejected_every_round(
    page: types.ModuleType,
) -> None:
    assert isinstance(page.engine.provider, UpdateProvider)
    for result in page.results:
        assert result.participated == ("c0", "c1", "c2")
        assert result.dropped == ("c3",)
        assert result.rejected == ("c4",)
        (rejected,) = (f for f in result.failures if f.reason == "rejected")
        assert rejected.message.startswith("digest mismatch")


def test_tampering_is_what_gets_rejected(page: types.ModuleType) -> None:
    # The same provider without tampering: c4 is admitted, so rejection is the digest's doing.
    provider = page.NoisyQuadratic(page.targets, offline={"c3"})
    task = ClientTask("c4", round=1, version=0, params=torch.zeros(3), config=TaskConfig(lr=0.5))
    provider.submit([task])
    (update,) = provider.collect()
    assert isinstance(update, ClientUpdate)
    assert update.verify_digest()
    assert update.arrived_at == task.dispatched_at + 1.0
    # `until` before the arrival: nothing yet, and the task stays outstanding.
    provider.submit([task])
    assert provider.collect(until=task.dispatched_at + 0.5) == []
    assert len(provider.collect(max_results=1)) == 1


def test_stage_state_counts_the_clipped_rounds(page: types.ModuleType) -> None:
    metrics = [r.stages["clip_aggregate"] for r in page.results]
    clipped = [m["clipped"] for m in metrics]
    assert clipped[0]
    assert not clipped[-1]
    assert all(m["norm"] > 0.5 for m in metrics if m["clipped"])
    tensors, meta = page.engine.state()
    counter = tensors["stage.clip_aggregate.clipped_rounds"]
    assert counter.ndim == 0
    assert int(counter) == sum(clipped) == 8  # the page's printed claim
    assert "clip_aggregate" in meta["stages"]
    assert int(page.engine.stage_state("clip_aggregate")["clipped_rounds"]) == sum(clipped)
    first = page.results[0]
    assert first.stages["clip_aggregate"]["norm"] == pytest.approx(2.449, abs=0.01)


def test_printed_output_matches_the_comments(page: types.ModuleType) -> None:
    printed = page.printed
    assert "'clip_aggregate': {'norm': 2.44" in printed
    assert "'clipped': True" in printed
    assert "'clipped': False" in printed
    assert "tensor(8)" in printed
