"""The char-transformer: its shapes, its causality, its parameter count by layer, the registry
entry, and that the Shakespeare pipeline (Trainer, DP-SGD) trains it."""

from __future__ import annotations

import pytest
import torch

from velocity.client import TrainConfig, Trainer
from velocity.errors import ConfigurationError, ValidationError
from velocity.models import (
    MODEL_DATASETS,
    CharTransformer,
    build_model,
    check_model_dataset,
    count_parameters,
    model_info,
)


def _ids(n: int = 3, length: int = 80, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 80, (n, length), generator=torch.Generator().manual_seed(seed))


def test_shapes() -> None:
    model = build_model("char-transformer", seed=0)
    x = _ids()
    assert model(x).shape == (3, 80)
    assert model.sequence_logits(x).shape == (3, 80, 80)
    short = _ids(length=17)
    assert model(short).shape == (3, 80)
    assert model.sequence_logits(short).shape == (3, 17, 80)
    assert model(x).dtype == torch.float32


def test_forward_is_the_last_position_of_the_full_sequence() -> None:
    # forward() computes the last block for the last position only; it must agree.
    model = CharTransformer(num_layers=3, d_model=32, num_heads=2)
    x = _ids(n=5)
    torch.testing.assert_close(model(x), model.sequence_logits(x)[:, -1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("position", [0, 1, 39, 78])
def test_a_later_character_never_changes_earlier_logits(position: int) -> None:
    model = build_model("char-transformer", seed=1)
    x = _ids(n=4, seed=position)
    changed = x.clone()
    changed[:, position + 1 :] = (changed[:, position + 1 :] + 7) % 80
    with torch.no_grad():
        before, after = model.sequence_logits(x), model.sequence_logits(changed)
    assert torch.equal(before[:, : position + 1], after[:, : position + 1])
    assert not torch.allclose(before[:, position + 1 :], after[:, position + 1 :])


def test_every_earlier_character_is_read() -> None:
    model = build_model("char-transformer", seed=2)
    x = _ids(n=2)
    for position in (0, 40, 79):
        changed = x.clone()
        changed[:, position] = (changed[:, position] + 1) % 80
        with torch.no_grad():
            assert not torch.allclose(model(x), model(changed))


def test_parameter_count_by_layer() -> None:
    v, d, length, layers, ff = 80, 64, 80, 2, 256
    block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * ff + ff) + (ff * d + d)
    expected = v * d + length * d + layers * block + 2 * d + (d * v + v)
    assert expected == 115_536
    assert count_parameters(CharTransformer()) == expected
    assert count_parameters(CharTransformer(vocab_size=7)) == expected - 73 * d * 2 - 73


def test_registry_entry() -> None:
    info = model_info("char-transformer")
    assert info.input_shape == (80,)
    assert info.input_dtype == torch.int64
    assert info.num_classes == 80
    assert info.num_params == 115_536
    assert "GPT-2" in info.paper
    assert MODEL_DATASETS["char-transformer"] == ("shakespeare",)
    check_model_dataset("char-transformer", "shakespeare", owner="t")
    with pytest.raises(ConfigurationError, match="cannot be trained on dataset 'mnist'"):
        check_model_dataset("char-transformer", "mnist", owner="t")
    assert isinstance(build_model("char-transformer", num_classes=7), CharTransformer)


def test_gpt2_initialisation() -> None:
    model = build_model("char-transformer", seed=0)
    block = model.blocks[0]
    assert torch.count_nonzero(block.qkv.bias) == 0
    assert abs(float(block.qkv.weight.detach().std()) - 0.02) < 0.002
    assert abs(float(block.proj.weight.detach().std()) - 0.01) < 0.002  # 0.02 / sqrt(2 · 2 layers)
    assert torch.equal(block.ln1.weight, torch.ones(64))


def test_bad_settings_and_inputs_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="d_model a multiple of num_heads"):
        CharTransformer(d_model=30, num_heads=4)
    with pytest.raises(ConfigurationError, match="num_layers >= 1"):
        CharTransformer(num_layers=0)
    model = CharTransformer(seq_len=10)
    with pytest.raises(ValidationError, match="L <= 10"):
        model(_ids(length=11))
    with pytest.raises(ValidationError, match=r"\(N, L\) character ids"):
        model(torch.zeros(3, dtype=torch.int64))


def test_it_learns_a_periodic_text() -> None:
    """A repeating 5-character text is learnt from its 80-character windows (next-character
    targets, the Shakespeare pipeline's shape): the loss falls far below log(80)."""
    text = torch.tensor([3, 17, 42, 8, 60] * 60)
    x = text.unfold(0, 80, 1)[:-1]
    y = text[80:]
    model = build_model("char-transformer", seed=0)
    trainer = Trainer(model, TrainConfig(batch_size=16, local_steps=60, lr=3e-3, optimizer="adamw"))
    start = trainer.spec.flatten(model.state_dict())
    rows = torch.arange(len(y))
    result = trainer.train(start, x, y, rows, generator=torch.Generator().manual_seed(0))
    loss, accuracy = trainer.evaluate(start + result.delta, x, y)
    assert loss < 0.1  # log(80) = 4.38 at chance
    assert accuracy == 1.0


def test_dp_sgd_takes_per_example_gradients() -> None:
    model = build_model("char-transformer", seed=0)
    config = TrainConfig(batch_size=4, local_steps=2, dp_clip=1.0, dp_noise_multiplier=0.5)
    trainer = Trainer(model, config)
    x, y = _ids(n=16), torch.randint(0, 80, (16,), generator=torch.Generator().manual_seed(1))
    start = trainer.spec.flatten(model.state_dict())
    with pytest.warns(UserWarning, match="batching rule"):  # torch's vmap falls back for SDPA
        result = trainer.train(start, x, y, torch.arange(16), generator=torch.Generator())
    assert result.metrics["dp_steps"] == 2.0
    assert torch.isfinite(result.delta).all()
    assert float(result.delta.norm()) > 0
