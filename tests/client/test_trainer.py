"""The client Trainer against a hand-written PyTorch loop doing the same SGD steps."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn import functional as F

from velocity import client
from velocity.client import TrainConfig, Trainer, TrainResult
from velocity.errors import ConfigurationError, ValidationError
from velocity.models import build_model
from velocity.types import ParamSpec

NUM_FEATURES, NUM_CLASSES, NUM_ROWS = 6, 4, 50


@pytest.fixture
def data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(42)
    x = torch.randn(NUM_ROWS, NUM_FEATURES, generator=g)
    y = torch.randint(0, NUM_CLASSES, (NUM_ROWS,), generator=g)
    return x, y


def small_mlp(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(NUM_FEATURES, 16), nn.ReLU(), nn.Linear(16, NUM_CLASSES))


def flat(model: nn.Module) -> Tensor:
    return ParamSpec.from_module(model).flatten(model.state_dict())


def reference_train(
    model: nn.Module,
    global_params: Tensor,
    x: Tensor,
    y: Tensor,
    indices: Tensor,
    seed: int,
    config: TrainConfig,
    *,
    prox_by_autograd: bool = False,
) -> tuple[Tensor, list[float], int, int]:
    """Plain PyTorch: load, shuffle per epoch, SGD steps. Returns (delta, losses, correct, seen)."""
    spec = ParamSpec.from_module(model)
    with torch.no_grad():
        for name, value in spec.unflatten(global_params).items():
            model.state_dict()[name].copy_(value)
    params = list(model.parameters())
    anchors = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    g = torch.Generator().manual_seed(seed)
    n, bs = len(indices), config.batch_size
    total = config.local_steps or config.local_epochs * math.ceil(n / bs)
    losses: list[float] = []
    correct = seen = step = 0
    while step < total:
        order = indices[torch.randperm(n, generator=g)]
        for start in range(0, n, bs):
            if step == total:
                break
            batch = order[start : start + bs]
            logits = model(x[batch])
            loss = F.cross_entropy(logits, y[batch])
            objective = loss
            if prox_by_autograd:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchors, strict=True))
                objective = loss + config.prox_mu / 2 * prox
            optimizer.zero_grad()
            objective.backward()
            if config.prox_mu and not prox_by_autograd:
                with torch.no_grad():
                    for p, a in zip(params, anchors, strict=True):
                        assert p.grad is not None
                        p.grad.add_(p - a, alpha=config.prox_mu)
            optimizer.step()
            losses.append(loss.item())
            correct += int((logits.argmax(1) == y[batch]).sum())
            seen += len(batch)
            step += 1
    return flat(model) - global_params, losses, correct, seen


def run(
    config: TrainConfig,
    x: Tensor,
    y: Tensor,
    indices: Tensor,
    seed: int = 0,
    *,
    model_seed: int = 0,
    out: Tensor | None = None,
) -> TrainResult:
    model = small_mlp(model_seed)
    trainer = Trainer(model, config)
    return trainer.train(
        flat(small_mlp(model_seed)),
        x,
        y,
        indices,
        generator=torch.Generator().manual_seed(seed),
        out=out,
    )


CONFIGS = [
    TrainConfig(batch_size=8, lr=0.1),
    TrainConfig(batch_size=7, local_epochs=3, lr=0.05),
    TrainConfig(batch_size=5, local_steps=11, lr=0.1),
    TrainConfig(batch_size=8, local_epochs=2, lr=0.1, momentum=0.9, weight_decay=1e-3),
    TrainConfig(batch_size=100, local_epochs=4, lr=0.5),  # full batch (B = inf)
    TrainConfig(batch_size=6, local_epochs=2, lr=0.1, prox_mu=0.5),
    TrainConfig(batch_size=6, local_steps=9, lr=0.1, momentum=0.5, prox_mu=0.01),
]


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
def test_bitwise_equal_to_hand_written_loop(
    config: TrainConfig, data: tuple[Tensor, Tensor]
) -> None:
    x, y = data
    indices = torch.arange(3, 40, 2)  # 19 of the 50 rows, not contiguous
    result = run(config, x, y, indices, seed=7)
    expected, losses, correct, seen = reference_train(
        small_mlp(), flat(small_mlp()), x, y, indices, 7, config
    )
    assert torch.equal(result.delta, expected)
    assert result.num_samples == 19
    assert result.metrics["steps"] == len(losses)
    assert result.metrics["samples_seen"] == seen
    assert result.loss == pytest.approx(sum(losses) / len(losses), rel=1e-6)
    assert result.metrics["accuracy"] == pytest.approx(correct / seen)


def test_proximal_gradient_matches_the_proximal_loss(data: tuple[Tensor, Tensor]) -> None:
    # grad += mu (w - w_global) is the gradient of mu/2 ||w - w_global||^2 added to the loss.
    x, y = data
    indices = torch.arange(30)
    config = TrainConfig(batch_size=4, local_epochs=2, lr=0.1, prox_mu=0.3)
    result = run(config, x, y, indices)
    expected, *_ = reference_train(
        small_mlp(), flat(small_mlp()), x, y, indices, 0, config, prox_by_autograd=True
    )
    torch.testing.assert_close(result.delta, expected, rtol=1e-5, atol=1e-6)


def test_fedprox_mu_zero_is_plain_and_mu_positive_pulls_towards_global(
    data: tuple[Tensor, Tensor],
) -> None:
    x, y = data
    indices = torch.arange(40)
    plain = TrainConfig(batch_size=4, local_epochs=3, lr=0.2)
    zero = run(dataclasses.replace(plain, prox_mu=0), x, y, indices).delta
    base = run(plain, x, y, indices).delta
    prox = run(dataclasses.replace(plain, prox_mu=1.0), x, y, indices).delta
    assert torch.equal(zero, base)
    assert not torch.equal(prox, base)
    assert prox.norm() < base.norm()  # the proximal term keeps the model nearer the global one


def test_local_steps_override_epochs(data: tuple[Tensor, Tensor]) -> None:
    x, y = data
    indices = torch.arange(20)  # batch 8 -> 3 steps per epoch (8, 8, 4)
    by_epochs = run(TrainConfig(batch_size=8, local_epochs=2), x, y, indices)
    by_steps = run(TrainConfig(batch_size=8, local_epochs=5, local_steps=6), x, y, indices)
    assert torch.equal(by_epochs.delta, by_steps.delta)
    partial = run(TrainConfig(batch_size=8, local_steps=7), x, y, indices)
    assert partial.metrics["steps"] == 7
    assert partial.metrics["samples_seen"] == 2 * 20 + 8
    assert not torch.equal(partial.delta, by_steps.delta)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 30),
    batch_size=st.integers(1, 40),
    epochs=st.integers(1, 3),
    steps=st.none() | st.integers(1, 12),
)
def test_step_and_sample_counts(n: int, batch_size: int, epochs: int, steps: int | None) -> None:
    x, y = torch.randn(n, NUM_FEATURES), torch.randint(0, NUM_CLASSES, (n,))
    config = TrainConfig(batch_size=batch_size, local_epochs=epochs, local_steps=steps)
    result = run(config, x, y, torch.arange(n))
    _, losses, _, seen = reference_train(
        small_mlp(), flat(small_mlp()), x, y, torch.arange(n), 0, config
    )
    per_epoch = math.ceil(n / batch_size)
    assert result.metrics["steps"] == (steps if steps is not None else epochs * per_epoch)
    assert result.metrics["steps"] == len(losses)
    assert result.metrics["samples_seen"] == seen
    assert result.num_samples == n


def test_momentum_and_weight_decay_reach_the_optimizer(data: tuple[Tensor, Tensor]) -> None:
    x, y = data
    indices = torch.arange(32)
    base = TrainConfig(batch_size=4, local_epochs=2, lr=0.1)
    plain = run(base, x, y, indices).delta
    momentum = run(dataclasses.replace(base, momentum=0.9), x, y, indices).delta
    decay = run(dataclasses.replace(base, weight_decay=0.1), x, y, indices).delta
    assert not torch.equal(plain, momentum)
    assert not torch.equal(plain, decay)
    assert not torch.equal(momentum, decay)


def test_deterministic_under_a_seed(data: tuple[Tensor, Tensor]) -> None:
    x, y = data
    indices = torch.arange(50)
    config = TrainConfig(batch_size=8, lr=0.1, momentum=0.9)
    a, b = run(config, x, y, indices, seed=3), run(config, x, y, indices, seed=3)
    c = run(config, x, y, indices, seed=4)
    assert torch.equal(a.delta, b.delta)
    assert a.loss == b.loss
    assert a.metrics == b.metrics
    assert not torch.equal(a.delta, c.delta)


def test_global_rng_is_not_used(data: tuple[Tensor, Tensor]) -> None:
    x, y = data
    before = torch.get_rng_state()
    run(TrainConfig(batch_size=8), x, y, torch.arange(50))
    assert torch.equal(torch.get_rng_state(), before)


def test_one_trainer_serves_many_clients(data: tuple[Tensor, Tensor]) -> None:
    # Nothing leaks between clients: not the parameters, not the momentum buffers.
    x, y = data
    config = TrainConfig(batch_size=4, local_epochs=2, lr=0.1, momentum=0.9)
    trainer = Trainer(small_mlp(), config)
    global_params = flat(small_mlp())
    clients = [torch.arange(0, 10), torch.arange(10, 35), torch.arange(35, 50)]
    updates = trainer.spec.stack(len(clients))
    for i, rows in enumerate(clients):
        result = trainer.train(
            global_params, x, y, rows, generator=torch.Generator().manual_seed(i), out=updates[i]
        )
        assert result.delta.data_ptr() == updates[i].data_ptr()
    for i, rows in enumerate(clients):
        alone = run(config, x, y, rows, seed=i)
        assert torch.equal(updates[i], alone.delta)


def test_writes_only_its_row_and_leaves_global_params_alone(
    data: tuple[Tensor, Tensor],
) -> None:
    x, y = data
    model = small_mlp()
    trainer = Trainer(model, TrainConfig(batch_size=8))
    global_params = flat(model)
    kept = global_params.clone()
    stack = torch.full((3, trainer.spec.d), 7.0)
    result = trainer.train(
        global_params, x, y, torch.arange(12), generator=torch.Generator(), out=stack[1]
    )
    assert result.delta.data_ptr() == stack[1].data_ptr()
    assert torch.equal(global_params, kept)
    assert (stack[0] == 7).all()
    assert (stack[2] == 7).all()
    assert not (stack[1] == 7).all()
    # new params - global params: loading global + delta reproduces the trained model.
    torch.testing.assert_close(global_params + stack[1], flat(model))


def test_char_lstm_trains(data: tuple[Tensor, Tensor]) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 80, (6, 80), generator=g)
    y = torch.randint(0, 80, (6,), generator=g)
    model = build_model("char-lstm", seed=0)
    trainer = Trainer(model, TrainConfig(batch_size=4, lr=0.5))
    result = trainer.train(flat(model), x, y, torch.arange(6), generator=g)
    assert result.metrics["steps"] == 2
    assert result.delta.abs().sum() > 0
    assert math.isfinite(result.loss)


def test_custom_loss_without_classes() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, generator=g), torch.randn(20, 1, generator=g)
    model = nn.Linear(3, 1)
    trainer = Trainer(model, TrainConfig(batch_size=5, lr=0.1), loss_fn=F.mse_loss)
    result = trainer.train(flat(model), x, y, torch.arange(20), generator=g)
    assert "accuracy" not in result.metrics
    assert result.metrics["steps"] == 4
    loss, accuracy = trainer.evaluate(flat(model), x, y)
    assert math.isnan(accuracy)
    assert loss == pytest.approx(F.mse_loss(model(x), y).item(), rel=1e-6)


@pytest.mark.parametrize("batch_size", [1000, 7])
@pytest.mark.parametrize("with_indices", [False, True])
def test_evaluate_matches_manual_computation(
    data: tuple[Tensor, Tensor], batch_size: int, with_indices: bool
) -> None:
    x, y = data
    reference = small_mlp(seed=9)
    params = flat(reference)
    trainer = Trainer(small_mlp(seed=1), TrainConfig())
    trainer.model.train()
    indices = torch.arange(5, 45, 3) if with_indices else None
    rows = torch.arange(NUM_ROWS) if indices is None else indices
    loss, accuracy = trainer.evaluate(params, x, y, batch_size=batch_size, indices=indices)
    with torch.no_grad():
        logits = reference(x[rows])
    assert loss == pytest.approx(F.cross_entropy(logits, y[rows]).item(), rel=1e-6)
    assert accuracy == pytest.approx((logits.argmax(1) == y[rows]).double().mean().item())
    assert trainer.model.training  # mode restored
    assert torch.equal(flat(trainer.model), params)


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("batch_size", 0, "an int >= 1"),
        ("batch_size", 2.5, "an int >= 1"),
        ("batch_size", True, "an int >= 1"),
        ("local_epochs", 0, "an int >= 1"),
        ("local_steps", 0, "None or an int >= 1"),
        ("lr", 0, "a finite float > 0"),
        ("lr", float("nan"), "a finite float > 0"),
        ("lr", "0.1", "a finite float > 0"),
        ("momentum", 1.0, "a finite float in [0, 1)"),
        ("momentum", -0.1, "a finite float in [0, 1)"),
        ("weight_decay", -1e-4, "a finite float >= 0"),
        ("prox_mu", -1, "a finite float >= 0"),
        ("prox_mu", float("inf"), "a finite float >= 0"),
    ],
)
def test_bad_config_names_the_field(field: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        TrainConfig(**{field: value})  # type: ignore[arg-type]
    message = str(excinfo.value)
    assert message.startswith(f"TrainConfig.{field} must be {expected}; got ")


def test_config_normalises_ints_to_floats() -> None:
    config = TrainConfig(lr=1, momentum=0, prox_mu=0)
    assert isinstance(config.lr, float)
    assert config == TrainConfig(lr=1.0)
    assert hash(config) == hash(TrainConfig(lr=1.0))


def _trainer() -> tuple[Trainer, Tensor]:
    model = small_mlp()
    return Trainer(model, TrainConfig()), flat(model)


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        (torch.tensor([], dtype=torch.int64), "client's data is empty"),
        (torch.tensor([0, 50]), r"indices must lie in \[0, 50\)"),
        (torch.tensor([-1, 3]), r"indices must lie in \[0, 50\)"),
        (torch.tensor([0.0, 1.0]), "1-D int64 or int32"),
        (torch.zeros(2, 2, dtype=torch.int64), "1-D int64 or int32"),
    ],
)
def test_bad_indices(data: tuple[Tensor, Tensor], indices: Tensor, message: str) -> None:
    x, y = data
    trainer, params = _trainer()
    with pytest.raises(ValidationError, match=message):
        trainer.train(params, x, y, indices, generator=torch.Generator())
    with pytest.raises(ValidationError, match=message):
        trainer.evaluate(params, x, y, indices=indices)


def test_bad_tensors(data: tuple[Tensor, Tensor]) -> None:
    x, y = data
    trainer, params = _trainer()
    rows = torch.arange(4)
    g = torch.Generator()
    with pytest.raises(ValidationError, match="global_params must be a float32 tensor"):
        trainer.train(params[:-1], x, y, rows, generator=g)
    with pytest.raises(ValidationError, match="global_params must be a float32 tensor"):
        trainer.train(params.double(), x, y, rows, generator=g)
    with pytest.raises(ValidationError, match="out must be a float32 tensor"):
        trainer.train(params, x, y, rows, generator=g, out=torch.empty(3))
    with pytest.raises(ValidationError, match="out must not be global_params"):
        trainer.train(params, x, y, rows, generator=g, out=params)
    with pytest.raises(ValidationError, match="same number of rows"):
        trainer.train(params, x, y[:-1], rows, generator=g)
    with pytest.raises(ValidationError, match=r"torch\.Generator"):
        trainer.train(params, x, y, rows, generator=0)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="empty dataset"):
        trainer.evaluate(params, x[:0], y[:0])
    with pytest.raises(ConfigurationError, match="batch_size must be an int >= 1"):
        trainer.evaluate(params, x, y, batch_size=0)


def test_constructor_checks() -> None:
    model = small_mlp()
    with pytest.raises(ConfigurationError, match="TrainConfig"):
        Trainer(model, {"lr": 0.1})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="does not match the model"):
        Trainer(model, TrainConfig(), spec=ParamSpec.from_sizes({"w": 3}))
    spec = ParamSpec.from_module(model)
    assert Trainer(model, TrainConfig(), spec=spec).spec is spec


def test_per_call_config_overrides_the_trainers(data: tuple[Tensor, Tensor]) -> None:
    x, y = data
    rows = torch.arange(NUM_ROWS)
    base, other = TrainConfig(batch_size=8, lr=0.1), TrainConfig(batch_size=5, lr=0.03)
    trainer = Trainer(small_mlp(), base)
    params = flat(small_mlp())
    overridden = trainer.train(
        params, x, y, rows, generator=torch.Generator().manual_seed(3), config=other
    )
    expected = run(other, x, y, rows, seed=3)
    assert torch.equal(overridden.delta, expected.delta)
    assert overridden.metrics["steps"] == expected.metrics["steps"]
    assert trainer.config == base  # the trainer's own settings are unchanged
    again = trainer.train(params, x, y, rows, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again.delta, run(base, x, y, rows, seed=3).delta)


def test_worker_momentum_is_a_client_stage_with_per_client_state() -> None:
    from velocity.types import ClientStateStore, StageContext

    spec = ParamSpec.from_sizes({"w": 2})
    ctx = StageContext(0, 1, 0, spec, torch.zeros(2))
    store = ClientStateStore()
    stages = [client.WorkerMomentum(0.5)]
    row, metrics = client.run_client_stages(
        stages, torch.tensor([2.0, 4.0]), store, ctx.for_client("a", 0)
    )
    assert row.tolist() == [1.0, 2.0]
    assert metrics == {}
    client.run_client_stages(stages, torch.tensor([8.0, 8.0]), store, ctx.for_client("b", 1))
    row, _ = client.run_client_stages(
        stages, torch.tensor([2.0, 4.0]), store, ctx.for_client("a", 0)
    )
    assert row.tolist() == [1.5, 3.0]  # 0.5 * [1, 2] + 0.5 * [2, 4]; b's buffer is its own
    assert store.get("b", "momentum")["m"].tolist() == [4.0, 4.0]
    with pytest.raises(ConfigurationError, match="beta"):
        client.WorkerMomentum(1.0)


def test_exports() -> None:
    assert sorted(client.__all__) == [
        "DEVICE_CHOICES",
        "LossFn",
        "TrainConfig",
        "TrainResult",
        "Trainer",
        "WorkerMomentum",
        "resolve_device",
        "run_client_stages",
    ]
    assert all(hasattr(client, name) for name in client.__all__)


def test_replaced_or_moved_parameters_are_seen(data: tuple[Tensor, Tensor]) -> None:
    # The trainer caches flat views of the model's tensors; a parameter replaced by another
    # object, or given new storage through ``.data``, must be trained, not the stale view.
    x, y = data
    config = TrainConfig(batch_size=5, lr=0.1)
    rows = torch.arange(0, 20)
    model = small_mlp()
    trainer = Trainer(model, config)
    global_params = flat(small_mlp())
    first = trainer.train(global_params, x, y, rows, generator=torch.Generator().manual_seed(1))
    expected = first.delta.clone()
    assert isinstance(model[0], nn.Linear)
    model[0].weight = nn.Parameter(torch.zeros_like(model[0].weight))
    trainer = Trainer(model, config)  # trainable parameters are bound at construction
    again = trainer.train(global_params, x, y, rows, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.delta, expected)
    model[2].bias.data = torch.zeros_like(model[2].bias)  # new storage, same Parameter
    again = trainer.train(global_params, x, y, rows, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.delta, expected)
    torch.testing.assert_close(flat(model), global_params + expected)


def test_models_with_integer_buffers_take_the_state_dict_path(
    data: tuple[Tensor, Tensor],
) -> None:
    # BatchNorm's int64 num_batches_tracked is no float32 view: the general path loads and
    # flattens it, and the update of the integer buffer is exact.
    x, y = data
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(NUM_FEATURES, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))
    spec = ParamSpec.from_module(model)
    global_params = spec.flatten(model.state_dict())
    trainer = Trainer(model, TrainConfig(batch_size=5, lr=0.1))
    result = trainer.train(
        global_params, x, y, torch.arange(20), generator=torch.Generator().manual_seed(0)
    )
    tracked = spec.unflatten(result.delta)["1.num_batches_tracked"]
    assert int(tracked) == 4  # four steps, one batch count each
