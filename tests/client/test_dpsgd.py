"""Example-level DP-SGD in the client Trainer, against brute-force per-example backward passes."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from velocity.client import TrainConfig, Trainer, TrainResult
from velocity.client._dpsgd import (
    check_per_example_model,
    chunk_size_for,
    clipped_gradient_sum,
    per_example_gradients,
    poisson_mask,
)
from velocity.errors import ConfigurationError
from velocity.models import build_model
from velocity.types import ParamSpec

NUM_FEATURES, NUM_CLASSES = 6, 4


def small_mlp(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(NUM_FEATURES, 16), nn.ReLU(), nn.Linear(16, NUM_CLASSES))


def small_cnn(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(1, 4, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * 4 * 4, NUM_CLASSES),
        )


def flat(model: nn.Module) -> Tensor:
    return ParamSpec.from_module(model).flatten(model.state_dict())


def tabular(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, NUM_FEATURES, generator=g), torch.randint(
        0, NUM_CLASSES, (n,), generator=g
    )


def train(
    config: TrainConfig,
    x: Tensor,
    y: Tensor,
    seed: int = 0,
    *,
    model: nn.Module | None = None,
    loss_fn: object = None,
) -> TrainResult:
    model = small_mlp() if model is None else model
    trainer = Trainer(model, config, loss_fn=loss_fn)  # type: ignore[arg-type]
    return trainer.train(
        flat(model), x, y, torch.arange(len(x)), generator=torch.Generator().manual_seed(seed)
    )


def split_params(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    params = {name: p.detach() for name, p in model.named_parameters()}
    return params, {name: b for name, b in model.named_buffers()}


def loop_gradients(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: object = F.cross_entropy
) -> list[dict[str, Tensor]]:
    """One ``loss.backward()`` per example: the brute-force per-example gradients."""
    result = []
    for i in range(len(x)):
        model.zero_grad()
        loss_fn(model(x[i : i + 1]), y[i : i + 1]).backward()  # type: ignore[operator]
        result.append({name: p.grad.clone() for name, p in model.named_parameters()})  # type: ignore[union-attr]
    model.zero_grad()
    return result


def loop_clipped_sum(model: nn.Module, x: Tensor, y: Tensor, clip: float) -> dict[str, Tensor]:
    total = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for g in loop_gradients(model, x, y):
        norm = torch.cat([t.flatten() for t in g.values()]).norm()
        factor = min(1.0, clip / (float(norm) + 1e-6))
        for name, t in g.items():
            total[name] += factor * t
    return total


# ---------------------------------------------------------------- per-example gradients


PER_EXAMPLE_MODELS = {
    "mnist-2nn": (lambda: build_model("mnist-2nn", seed=0), (1, 28, 28), 10, 5),
    "mnist-cnn": (lambda: build_model("mnist-cnn", seed=0), (1, 28, 28), 10, 3),
    "logreg": (lambda: build_model("logreg", seed=0), (1, 28, 28), 10, 6),
    "small-cnn": (small_cnn, (1, 8, 8), NUM_CLASSES, 6),
}


@pytest.mark.parametrize("name", list(PER_EXAMPLE_MODELS))
def test_per_example_gradients_equal_a_loop_of_backward_passes(name: str) -> None:
    build, shape, classes, batch = PER_EXAMPLE_MODELS[name]
    model = build()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *shape, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    params, frozen = split_params(model)
    result = per_example_gradients(model, params, frozen, F.cross_entropy, x, y)
    expected = loop_gradients(model, x, y)
    for name_, grads in result.grads.items():
        assert grads.shape == (batch, *params[name_].shape)
        for i in range(batch):
            torch.testing.assert_close(grads[i], expected[i][name_], atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        outputs = model(x)
    torch.testing.assert_close(result.outputs, outputs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        result.losses, F.cross_entropy(outputs, y, reduction="none"), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("chunk_size", [None, 1, 4])
def test_clipped_sum_equals_a_loop_and_does_not_depend_on_chunks(chunk_size: int | None) -> None:
    model = small_mlp()
    x, y = tabular(11)
    norms = [
        float(torch.cat([t.flatten() for t in g.values()]).norm())
        for g in loop_gradients(model, x, y)
    ]
    clip = sorted(norms)[5]  # about half the examples are clipped
    params, frozen = split_params(model)
    result = clipped_gradient_sum(
        model, params, frozen, F.cross_entropy, x, y, clip=clip, chunk_size=chunk_size
    )
    expected = loop_clipped_sum(model, x, y, clip)
    for name, total in zip(params, result.sums, strict=True):
        torch.testing.assert_close(total, expected[name], atol=1e-6, rtol=1e-5)
    assert int(result.num_clipped) == sum(norm > clip for norm in norms) == 5
    assert result.losses.shape == (11,)


def test_clipped_sum_of_an_empty_batch_is_zero() -> None:
    model = small_mlp()
    params, frozen = split_params(model)
    x, y = tabular(3)
    result = clipped_gradient_sum(model, params, frozen, F.cross_entropy, x[:0], y[:0], clip=1.0)
    assert all(
        torch.equal(s, torch.zeros_like(p))
        for s, p in zip(result.sums, params.values(), strict=True)
    )
    assert int(result.num_clipped) == 0


def test_chunk_size_bounds_memory() -> None:
    assert chunk_size_for(10) == 256
    assert chunk_size_for(1_663_370) * 4 * 1_663_370 <= 512 * 2**20
    assert chunk_size_for(10**12) == 1


# ---------------------------------------------------------------- the DP-SGD step


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"local_steps": 3, "momentum": 0.9, "weight_decay": 1e-2, "prox_mu": 0.5},
    ],
    ids=["one-step", "momentum-decay-prox"],
)
def test_noiseless_unclipped_full_sampling_is_plain_sgd(extra: dict[str, float]) -> None:
    # q = 1 (batch_size >= n): every example is in every batch and the denominator is n, so
    # with z = 0 and a clipping norm no gradient reaches, DP-SGD is full-batch SGD.
    x, y = tabular(20)
    base = TrainConfig(batch_size=32, lr=0.3, **({"local_steps": 1} | extra))  # type: ignore[arg-type]
    plain = train(base, x, y)
    private = train(dataclasses.replace(base, dp_clip=1e6), x, y)
    torch.testing.assert_close(private.delta, plain.delta, atol=1e-6, rtol=1e-5)
    assert not torch.equal(private.delta, torch.zeros_like(private.delta))
    assert private.metrics["steps"] == private.metrics["dp_steps"] == plain.metrics["steps"]
    assert private.metrics["samples_seen"] == plain.metrics["samples_seen"]
    assert private.metrics["dp_clipped_fraction"] == 0.0
    assert private.loss == pytest.approx(plain.loss, rel=1e-5)
    assert private.metrics["accuracy"] == pytest.approx(plain.metrics["accuracy"])


@pytest.mark.parametrize("clip", [1e6, 0.05])
def test_one_step_is_the_formula_on_the_poisson_batch(clip: float) -> None:
    # delta = -lr (sum_i clip_C(g_i) + z C xi) / (q n), with the batch and xi drawn from the
    # generator in that order: rand(n) < q, then randn(d).
    n, batch_size, lr, z, seed = 30, 10, 0.2, 0.7, 3
    x, y = tabular(n)
    config = TrainConfig(batch_size=batch_size, lr=lr, local_steps=1, dp_clip=clip)
    config = dataclasses.replace(config, dp_noise_multiplier=z)
    result = train(config, x, y, seed=seed)

    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, generator=g) < batch_size / n
    noise = torch.randn(ParamSpec.from_module(small_mlp()).d, generator=g)
    batch = torch.arange(n)[mask]
    model = small_mlp()
    sums = loop_clipped_sum(model, x[batch], y[batch], clip)
    total = torch.cat([t.flatten() for t in sums.values()])
    expected = -lr * (total + z * clip * noise) / batch_size
    assert 0 < len(batch) != batch_size  # a Poisson batch, not a fixed-size one
    torch.testing.assert_close(result.delta, expected, atol=1e-6, rtol=1e-5)
    assert result.metrics["samples_seen"] == len(batch)


def test_clipping_bounds_the_noiseless_update() -> None:
    n, lr, clip = 40, 0.5, 1e-3
    x, y = tabular(n)
    for batch_size in (64, 10):  # q = 1 and q = 1/4
        config = TrainConfig(batch_size=batch_size, lr=lr, local_steps=1, dp_clip=clip)
        result = train(config, x, y, seed=2)
        seen, expected_batch = result.metrics["samples_seen"], min(batch_size, n)
        bound = lr * clip * seen / expected_batch
        norm = float(result.delta.norm())
        assert 0 < norm <= bound * (1 + 1e-5)
        assert result.metrics["dp_clipped_fraction"] == 1.0
        unclipped = train(dataclasses.replace(config, dp_clip=1e6), x, y, seed=2)
        assert float(unclipped.delta.norm()) > 10 * bound


def test_clipped_fraction_on_a_constructed_case() -> None:
    n = 10
    x, y = tabular(n, seed=3)
    norms = sorted(
        float(torch.cat([t.flatten() for t in g.values()]).norm())
        for g in loop_gradients(small_mlp(), x, y)
    )
    clip = (norms[5] + norms[6]) / 2  # exactly 4 of the 10 norms exceed it
    config = TrainConfig(batch_size=n, lr=0.1, local_steps=1, dp_clip=clip)
    result = train(config, x, y)
    assert result.metrics["samples_seen"] == n
    assert result.metrics["dp_clipped_fraction"] == pytest.approx(0.4)


def zero_loss(output: Tensor, target: Tensor) -> Tensor:
    return (output * 0).sum()


def test_noise_statistics() -> None:
    # Gradients are exactly zero, so the update is -lr z C xi / (q n), xi ~ N(0, I_d).
    n, batch_size, lr, z, clip = 40, 10, 0.5, 1.3, 2.0
    model = build_model("mnist-2nn", seed=0)
    d = ParamSpec.from_module(model).d
    x, y = torch.randn(n, 1, 28, 28), torch.randint(0, 10, (n,))
    config = TrainConfig(
        batch_size=batch_size, lr=lr, local_steps=1, dp_clip=clip, dp_noise_multiplier=z
    )
    result = train(config, x, y, model=model, loss_fn=zero_loss)
    sigma = lr * z * clip / batch_size
    u = result.delta.double() / sigma
    # mean ~ N(0, 1/d); (d-1) s^2 ~ chi^2(d-1), s^2 within 5 of its sd sqrt(2/(d-1)) of 1
    assert abs(float(u.mean())) < 5 / math.sqrt(d)
    assert abs(float(u.var()) - 1) < 5 * math.sqrt(2 / (d - 1))
    # Gaussian shape: P(|xi| < 1) = 0.6827, binomial sd sqrt(p(1-p)/d)
    inside = float((u.abs() < 1).double().mean())
    assert abs(inside - 0.682689) < 5 * math.sqrt(0.682689 * 0.317311 / d)
    assert result.metrics["dp_clipped_fraction"] == 0.0


def test_an_empty_batch_still_steps_with_noise() -> None:
    n, lr, z, clip = 200, 0.1, 1.0, 0.5  # batch_size 1: q = 1/200, P(empty) = 0.37
    x, y = tabular(n)
    config = TrainConfig(batch_size=1, lr=lr, local_steps=1, dp_clip=clip, dp_noise_multiplier=z)
    d = ParamSpec.from_module(small_mlp()).d
    for seed in range(50):
        g = torch.Generator().manual_seed(seed)
        if not (torch.rand(n, generator=g) < 1 / n).any():
            break
    else:
        pytest.fail("no empty Poisson batch in 50 seeds")
    result = train(config, x, y, seed=seed)
    expected = -lr * z * clip * torch.randn(d, generator=g)
    assert result.metrics["samples_seen"] == 0
    torch.testing.assert_close(result.delta, expected, atol=1e-7, rtol=1e-5)
    assert math.isnan(result.loss)
    assert math.isnan(result.metrics["dp_clipped_fraction"])


def test_poisson_mask_inclusion_frequency() -> None:
    n, q, draws = 25, 0.2, 20_000
    g = torch.Generator().manual_seed(0)
    masks = torch.stack([poisson_mask(n, q, g) for _ in range(draws)]).double()
    counts = masks.sum(0)
    sd = math.sqrt(draws * q * (1 - q))
    assert ((counts - draws * q).abs() < 5 * sd).all()  # every example, ~ Bin(draws, q)
    sizes = masks.sum(1)
    assert sizes.min() < n * q < sizes.max()  # batch sizes vary
    # independent inclusion: two examples are together with probability q^2
    both = float((masks[:, 0] * masks[:, 1]).sum())
    assert abs(both - draws * q * q) < 5 * math.sqrt(draws * q * q * (1 - q * q))
    assert poisson_mask(n, 1.0, g).all()


def test_trainer_samples_at_rate_q() -> None:
    n, batch_size, steps = 50, 10, 400
    x, y = tabular(n)
    config = TrainConfig(batch_size=batch_size, lr=0.01, local_steps=steps, dp_clip=1.0)
    seen = train(config, x, y).metrics["samples_seen"]
    q = batch_size / n
    assert abs(seen - steps * n * q) < 5 * math.sqrt(steps * n * q * (1 - q))


def test_deterministic_under_a_seed_and_no_global_rng() -> None:
    x, y = tabular(30)
    config = TrainConfig(
        batch_size=8, lr=0.1, local_epochs=2, momentum=0.9, dp_clip=0.5, dp_noise_multiplier=1.1
    )
    before = torch.get_rng_state()
    a, b, c = train(config, x, y, seed=3), train(config, x, y, seed=3), train(config, x, y, seed=4)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a.delta, b.delta)
    assert a.loss == b.loss
    assert a.metrics == b.metrics
    assert not torch.equal(a.delta, c.delta)
    assert a.metrics["steps"] == a.metrics["dp_steps"] == 2 * math.ceil(30 / 8)


def test_loss_without_classes_and_initial_loss() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, generator=g), torch.randn(20, 1, generator=g)
    model = nn.Linear(3, 1)
    trainer = Trainer(model, TrainConfig(batch_size=5, lr=0.1, dp_clip=1.0), loss_fn=F.mse_loss)
    result = trainer.train(flat(model), x, y, torch.arange(20), generator=g, initial_loss=True)
    assert "accuracy" not in result.metrics
    assert math.isfinite(result.loss)
    assert math.isfinite(result.metrics["initial_loss"])


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("dp_clip", 0, "None or a finite float > 0"),
        ("dp_clip", -1.0, "None or a finite float > 0"),
        ("dp_clip", float("nan"), "None or a finite float > 0"),
        ("dp_clip", "1", "None or a finite float > 0"),
        ("dp_clip", True, "None or a finite float > 0"),
        ("dp_noise_multiplier", -0.1, "a finite float >= 0"),
        ("dp_noise_multiplier", float("inf"), "a finite float >= 0"),
    ],
)
def test_bad_dp_config_names_the_field(field: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        TrainConfig(**{field: value})  # type: ignore[arg-type]
    assert str(excinfo.value).startswith(f"TrainConfig.{field} must be {expected}; got ")


def test_noise_needs_a_clipping_norm() -> None:
    with pytest.raises(ConfigurationError, match=r"TrainConfig\.dp_noise_multiplier .*dp_clip"):
        TrainConfig(dp_noise_multiplier=1.0)
    config = TrainConfig(dp_clip=1, dp_noise_multiplier=0)
    assert isinstance(config.dp_clip, float)
    assert config == TrainConfig(dp_clip=1.0)
    assert TrainConfig().dp_clip is None


def test_batch_norm_is_refused_with_the_model_named() -> None:
    model = nn.Sequential(nn.Linear(NUM_FEATURES, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    message = r"Sequential: its layer '1' \(BatchNorm1d\) normalises with batch statistics"
    with pytest.raises(ConfigurationError, match=message):
        check_per_example_model(model)
    with pytest.raises(ConfigurationError, match=message):
        Trainer(model, TrainConfig(dp_clip=1.0))
    trainer = Trainer(model, TrainConfig())  # the plain path still takes it
    x, y = tabular(8)
    with pytest.raises(ConfigurationError, match=message):
        trainer.train(
            flat(model),
            x,
            y % 2,
            torch.arange(8),
            generator=torch.Generator(),
            config=TrainConfig(dp_clip=1.0),
        )
