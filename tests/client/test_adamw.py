"""The Trainer's AdamW (DiLoCo's inner optimizer) against a hand-written ``torch.optim.AdamW``
loop on the same batches, its state kept between rounds or not, and its refusals."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from velocity.client import TrainConfig, Trainer
from velocity.errors import ConfigurationError, ValidationError
from velocity.types import ParamSpec

FEATURES, CLASSES, ROWS = 5, 3, 40


@pytest.fixture
def data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(11)
    return torch.randn(ROWS, FEATURES, generator=g), torch.randint(0, CLASSES, (ROWS,), generator=g)


def mlp(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(FEATURES, 12), nn.Tanh(), nn.Linear(12, CLASSES))


def flat(model: nn.Module) -> Tensor:
    return ParamSpec.from_module(model).flatten(model.state_dict())


class HandRolled:
    """A plain PyTorch worker: one optimizer for its whole life (``persist``) or one per round."""

    def __init__(self, model: nn.Module, config: TrainConfig, *, persist: bool) -> None:
        self.model, self.config, self.persist = model, config, persist
        self.spec = ParamSpec.from_module(model)
        self.optimizer = self._fresh()

    def _fresh(self) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "sgd":
            return torch.optim.SGD(
                self.model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay
            )
        return torch.optim.AdamW(
            self.model.parameters(),
            lr=c.lr,
            betas=(c.beta1, c.beta2),
            eps=c.eps,
            weight_decay=c.weight_decay,
        )

    def round(self, start: Tensor, x: Tensor, y: Tensor, rows: Tensor, seed: int) -> Tensor:
        if not self.persist:
            self.optimizer = self._fresh()
        with torch.no_grad():
            for name, value in self.spec.unflatten(start).items():
                self.model.state_dict()[name].copy_(value)
        g = torch.Generator().manual_seed(seed)
        n, bs = len(rows), self.config.batch_size
        total = self.config.local_steps or self.config.local_epochs * math.ceil(n / bs)
        step = 0
        while step < total:
            order = rows[torch.randperm(n, generator=g)]
            for begin in range(0, n, bs):
                if step == total:
                    break
                batch = order[begin : begin + bs]
                loss = F.cross_entropy(self.model(x[batch]), y[batch])
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                step += 1
        return flat(self.model) - start


ADAMW = TrainConfig(
    batch_size=7,
    local_steps=13,  # two epochs of ceil(30 / 7) = 5 batches and a part of a third
    lr=3e-3,
    optimizer="adamw",
    beta1=0.8,
    beta2=0.95,
    eps=1e-6,
    weight_decay=0.1,
)


def test_one_round_equals_a_hand_rolled_adamw_loop(data: tuple[Tensor, Tensor]) -> None:
    x, y = data
    rows = torch.arange(5, 35)
    trainer = Trainer(mlp(), ADAMW)
    start = flat(mlp())
    result = trainer.train(start, x, y, rows, generator=torch.Generator().manual_seed(4))
    expected = HandRolled(mlp(), ADAMW, persist=False).round(start, x, y, rows, seed=4)
    assert torch.equal(result.delta, expected)
    assert result.metrics["steps"] == 13.0
    assert result.optimizer_state is None  # not kept unless asked
    # AdamW's step is not SGD's: the same settings with SGD move elsewhere
    sgd = dataclasses.replace(ADAMW, optimizer="sgd")
    other = Trainer(mlp(), sgd).train(start, x, y, rows, generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(other.delta, expected)


def _rounds(
    trainer: Trainer, worker: HandRolled, data: tuple[Tensor, Tensor], *, keep: bool
) -> list[tuple[Tensor, Tensor]]:
    """Three rounds of one client whose global model moves between them (half its delta)."""
    x, y = data
    rows = torch.arange(0, 30)
    start = flat(mlp())
    state = None
    pairs = []
    for round_ in range(3):
        result = trainer.train(
            start,
            x,
            y,
            rows,
            generator=torch.Generator().manual_seed(round_),
            optimizer_state=state,
        )
        expected = worker.round(start, x, y, rows, seed=round_)
        pairs.append((result.delta.clone(), expected))
        state = result.optimizer_state if keep else None
        start = start + 0.5 * expected
    return pairs


def test_kept_state_equals_one_optimizer_over_the_rounds(data: tuple[Tensor, Tensor]) -> None:
    config = dataclasses.replace(ADAMW, keep_optimizer_state=True)
    pairs = _rounds(
        Trainer(mlp(), config), HandRolled(mlp(), config, persist=True), data, keep=True
    )
    for ours, theirs in pairs:
        assert torch.equal(ours, theirs)


def test_reset_state_equals_a_fresh_optimizer_per_round(data: tuple[Tensor, Tensor]) -> None:
    pairs = _rounds(
        Trainer(mlp(), ADAMW), HandRolled(mlp(), ADAMW, persist=False), data, keep=False
    )
    for ours, theirs in pairs:
        assert torch.equal(ours, theirs)
    kept = dataclasses.replace(ADAMW, keep_optimizer_state=True)
    persistent = _rounds(
        Trainer(mlp(), kept), HandRolled(mlp(), kept, persist=True), data, keep=True
    )
    assert torch.equal(pairs[0][0], persistent[0][0])  # the first round starts fresh either way
    assert not torch.equal(pairs[1][0], persistent[1][0])  # later rounds differ


def test_kept_sgd_momentum_equals_one_sgd_over_the_rounds(data: tuple[Tensor, Tensor]) -> None:
    config = TrainConfig(
        batch_size=6, local_steps=4, lr=0.05, momentum=0.9, keep_optimizer_state=True
    )
    pairs = _rounds(
        Trainer(mlp(), config), HandRolled(mlp(), config, persist=True), data, keep=True
    )
    for ours, theirs in pairs:
        assert torch.equal(ours, theirs)


def test_the_state_round_trips_and_is_copied(data: tuple[Tensor, Tensor]) -> None:
    x, y = data
    config = dataclasses.replace(ADAMW, keep_optimizer_state=True, local_steps=3)
    trainer = Trainer(mlp(), config)
    start = flat(mlp())
    first = trainer.train(start, x, y, torch.arange(10), generator=torch.Generator().manual_seed(0))
    state = first.optimizer_state
    assert state is not None
    names = [name for name, _ in mlp().named_parameters()]
    assert set(state) == {f"{n}.{k}" for n in names for k in ("step", "exp_avg", "exp_avg_sq")}
    assert float(state["0.weight.step"]) == 3.0
    assert state["0.weight.exp_avg"].shape == (12, FEATURES)
    before = {k: v.clone() for k, v in state.items()}
    second = trainer.train(
        start,
        x,
        y,
        torch.arange(10),
        generator=torch.Generator().manual_seed(1),
        optimizer_state=state,
    )
    assert all(torch.equal(state[k], before[k]) for k in state)  # the caller's copy is intact
    assert second.optimizer_state is not None
    assert float(second.optimizer_state["0.weight.step"]) == 6.0
    # SGD without momentum keeps nothing
    plain = TrainConfig(batch_size=5, local_steps=2, keep_optimizer_state=True)
    none = Trainer(mlp(), plain).train(start, x, y, torch.arange(10), generator=torch.Generator())
    assert none.optimizer_state == {}


def test_bad_optimizer_states_are_refused(data: tuple[Tensor, Tensor]) -> None:
    x, y = data
    start, rows = flat(mlp()), torch.arange(10)
    kept = dataclasses.replace(ADAMW, keep_optimizer_state=True, local_steps=2)
    good = (
        Trainer(mlp(), kept).train(start, x, y, rows, generator=torch.Generator()).optimizer_state
    )
    assert good is not None

    def train(config: TrainConfig, state: dict[str, Tensor]) -> None:
        Trainer(mlp(), config).train(
            start, x, y, rows, generator=torch.Generator(), optimizer_state=state
        )

    with pytest.raises(ValidationError, match="keep_optimizer_state is False"):
        train(ADAMW, dict(good))
    with pytest.raises(ValidationError, match="not the adamw state"):
        train(kept, {"0.weight.momentum_buffer": torch.zeros(12, FEATURES)})
    sgd = TrainConfig(momentum=0.5, keep_optimizer_state=True)
    with pytest.raises(ValidationError, match="not the sgd state"):
        train(sgd, dict(good))
    with pytest.raises(ValidationError, match="has shape"):
        train(kept, {**good, "0.weight.exp_avg": torch.zeros(3)})
    with pytest.raises(ValidationError, match="of a trainable parameter"):
        train(kept, {"nope.step": torch.tensor(1.0)})
    with pytest.raises(ValidationError, match=r"holds exp_avg; adamw needs"):
        train(kept, {"0.weight.exp_avg": torch.zeros(12, FEATURES)})
    train(kept, {})  # empty: a fresh start


def test_train_config_settings() -> None:
    config = TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.1, keep_optimizer_state=True)
    assert (config.beta1, config.beta2, config.eps) == (0.9, 0.999, 1e-8)
    assert TrainConfig().optimizer == "sgd"
    assert TrainConfig().keep_optimizer_state is False
    with pytest.raises(ConfigurationError, match=r"TrainConfig\.optimizer must be one of"):
        TrainConfig(optimizer="adam")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="momentum is SGD's"):
        TrainConfig(optimizer="adamw", momentum=0.9)
    with pytest.raises(ConfigurationError, match=r"TrainConfig\.beta1 must be"):
        TrainConfig(beta1=1.0)
    with pytest.raises(ConfigurationError, match=r"TrainConfig\.eps must be"):
        TrainConfig(eps=0)
    with pytest.raises(ConfigurationError, match=r"TrainConfig\.keep_optimizer_state must be"):
        TrainConfig(keep_optimizer_state=1)  # type: ignore[arg-type]


def test_dp_sgd_with_adamw_is_dp_adam(data: tuple[Tensor, Tensor]) -> None:
    """AdamW acts on the private gradient. With every example in every batch (q = 1), no
    clipping in effect and no noise, the private gradient is the full-batch mean gradient,
    so DP-AdamW is full-batch AdamW."""
    x, y = data
    rows = torch.arange(0, 20)
    base = dataclasses.replace(ADAMW, batch_size=20, local_steps=4, keep_optimizer_state=True)
    dp = dataclasses.replace(base, dp_clip=1e6, dp_noise_multiplier=0.0)
    start = flat(mlp())
    plain = Trainer(mlp(), base).train(
        start, x, y, rows, generator=torch.Generator().manual_seed(0)
    )
    private = Trainer(mlp(), dp).train(
        start, x, y, rows, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(private.delta, plain.delta, rtol=1e-4, atol=1e-6)
    assert private.metrics["dp_steps"] == 4.0
    assert private.optimizer_state is not None
    assert float(private.optimizer_state["0.weight.step"]) == 4.0
