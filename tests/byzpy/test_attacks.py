"""velocity.byzpy attacks: ByzPy's calling convention, inputs by flags, errors, formulas."""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest
import torch

from velocity.byzpy.attacks import (
    Attack,
    EmpireAttack,
    GaussianAttack,
    InfAttack,
    LabelFlipAttack,
    LittleAttack,
    MimicAttack,
    SignFlipAttack,
)
from velocity.byzpy.engine.graph.operator import OpContext

CTX = OpContext(node_name="byz")
HONEST: dict[str, Callable[[], Attack]] = {
    "empire": lambda: EmpireAttack(scale=-1.0),
    "little": lambda: LittleAttack(f=2),
    "gaussian": lambda: GaussianAttack(seed=3),
    "inf": lambda: InfAttack(),
    "mimic": lambda: MimicAttack(epsilon=1),
}


def _grads(h: int = 4, shape: tuple[int, ...] = (3, 4), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(h, *shape))


def test_every_attack_is_tested() -> None:
    import velocity.byzpy.attacks as at

    built = {type(make()).__name__ for make in HONEST.values()}
    assert built | {"Attack", "SignFlipAttack", "LabelFlipAttack"} == set(at.__all__)


def test_flags() -> None:
    assert all(make().uses_honest_grads for make in HONEST.values())
    assert SignFlipAttack().uses_base_grad
    assert not SignFlipAttack().uses_honest_grads
    assert LabelFlipAttack(num_classes=3).uses_model_batch
    assert all(not make().supports_subtasks for make in HONEST.values())


@pytest.mark.parametrize("name", HONEST)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_in_numpy_out(name: str, dtype: type) -> None:
    out = HONEST[name]().apply(honest_grads=list(_grads().astype(dtype)))
    assert isinstance(out, np.ndarray)
    assert out.dtype == dtype
    assert out.shape == (3, 4)


@pytest.mark.parametrize("name", HONEST)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_in_torch_out(name: str, dtype: torch.dtype) -> None:
    grads = [torch.tensor(g, dtype=dtype) for g in _grads()]
    before = [g.clone() for g in grads]
    out = HONEST[name]().apply(honest_grads=grads)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == dtype
    assert out.shape == (3, 4)
    assert all(torch.equal(g, b) for g, b in zip(grads, before, strict=True))


@pytest.mark.parametrize("name", HONEST)
def test_missing_or_bad_honest_grads(name: str) -> None:
    attack = HONEST[name]()
    for empty in (None, []):
        with pytest.raises(ValueError, match="honest_grads"):
            attack.apply(honest_grads=empty)
    with pytest.raises(ValueError, match=r"honest_grads\[1\] has shape"):
        attack.apply(honest_grads=[torch.zeros(3), torch.zeros(2)])
    with pytest.raises(ValueError, match="honest_grads mixes backends"):
        attack.apply(honest_grads=[torch.zeros(3), np.zeros(3)])


@pytest.mark.parametrize("name", HONEST)
def test_compute_passes_honest_grads(name: str) -> None:
    grads = [torch.tensor(g) for g in _grads()]
    attack = HONEST[name]()
    got = attack.compute({"honest_grads": grads, "base_grad": grads[0]}, context=CTX)
    assert torch.equal(got, HONEST[name]().apply(honest_grads=grads))
    with pytest.raises(KeyError, match="honest_grads"):
        attack.compute({"base_grad": grads[0]}, context=CTX)


def test_compute_passes_base_grad_and_model_batch() -> None:
    g = torch.tensor([1.0, -2.0])
    assert SignFlipAttack().compute({"base_grad": g}, context=CTX).tolist() == [-1.0, 2.0]
    with pytest.raises(KeyError, match="base_grad"):
        SignFlipAttack().compute({"honest_grads": [g]}, context=CTX)
    model = torch.nn.Linear(2, 2)
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    attack = LabelFlipAttack(num_classes=2)
    out = attack.compute({"model": model, "x": x, "y": y}, context=CTX)
    assert out.shape == (6,)
    with pytest.raises(KeyError, match="'y'"):
        attack.compute({"model": model, "x": x}, context=CTX)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: EmpireAttack(chunk_size=0), "chunk_size"),
        (lambda: EmpireAttack(scale="big"), "scale"),  # type: ignore[arg-type]
        (lambda: LittleAttack(f=-1), r"LittleAttack\.f"),
        (lambda: LittleAttack(f=1, N=0), r"LittleAttack\.N"),
        (lambda: SignFlipAttack(chunk_size=-1), "chunk_size"),
        (lambda: GaussianAttack(sigma=-1.0), "sigma"),
        (lambda: GaussianAttack(seed=-3), "seed"),
        (lambda: InfAttack(chunk_size=0), "chunk_size"),
        (lambda: MimicAttack(epsilon=-1), "epsilon"),
        (lambda: LabelFlipAttack(), "mapping"),
        (lambda: LabelFlipAttack(num_classes=1), "num_classes"),
        (lambda: LabelFlipAttack(mapping={0: "a"}), "mapping"),  # type: ignore[dict-item]
        (lambda: LabelFlipAttack(num_classes=2, loss_fn=3), "loss_fn"),  # type: ignore[arg-type]
    ],
)
def test_bad_settings_are_refused_naming_the_argument(
    make: Callable[[], object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_seed_empire_example() -> None:
    grads = [torch.randn(100) for _ in range(5)]
    out = EmpireAttack(scale=-1.0).apply(honest_grads=grads)
    assert out.shape == (100,)
    torch.testing.assert_close(out, -torch.stack(grads).mean(0), rtol=1e-6, atol=1e-6)


def test_empire_and_sign_flip_formulas() -> None:
    g = _grads()
    np.testing.assert_allclose(
        EmpireAttack(scale=2.0).apply(honest_grads=list(g)), 2 * g.mean(0), rtol=1e-6
    )
    np.testing.assert_allclose(
        SignFlipAttack(scale=-3.0).apply(base_grad=g[1]), -3 * g[1], rtol=1e-6
    )
    with pytest.raises(ValueError, match="base_grad"):
        SignFlipAttack().apply(base_grad=None)
    with pytest.raises(ValueError, match="base_grad"):
        SignFlipAttack().apply(base_grad=np.zeros(3, dtype=np.int64))


@pytest.mark.parametrize(("f", "N", "h"), [(2, None, 5), (3, 20, 6), (0, None, 4), (9, None, 3)])
def test_little_formula(f: int, N: int | None, h: int) -> None:
    g = _grads(h=h)
    total = h + f if N is None else N
    s = max(1, total // 2 + 1 - f)
    z = NormalDist().inv_cdf(min(max((total - s) / total, 1e-12), 1 - 1e-12))
    expected = g.mean(0) + z * g.std(0)  # population σ
    np.testing.assert_allclose(
        LittleAttack(f=f, N=N).apply(honest_grads=list(g)), expected, rtol=1e-5, atol=1e-6
    )


def test_little_needs_N_at_least_f() -> None:
    with pytest.raises(ValueError, match=r"N must be >= f; got N=2, f=3"):
        LittleAttack(f=3, N=2).apply(honest_grads=[torch.zeros(2)])


def test_one_honest_gradient_gives_the_mean() -> None:
    g = torch.tensor([1.0, 2.0])
    assert LittleAttack(f=1).apply(honest_grads=[g]).tolist() == [1.0, 2.0]


def test_mimic_and_inf() -> None:
    g = _grads()
    np.testing.assert_allclose(MimicAttack(epsilon=2).apply(honest_grads=list(g)), g[2], rtol=1e-6)
    with pytest.raises(
        ValueError, match=r"epsilon must be < the number of honest_grads; got epsilon=4, n=4"
    ):
        MimicAttack(epsilon=4).apply(honest_grads=list(g))
    out = InfAttack().apply(honest_grads=[torch.zeros(2, 2, dtype=torch.float64)])
    assert out.dtype == torch.float64
    assert bool(torch.isposinf(out).all())


def test_gaussian_seeded_repeats_and_unseeded_differs() -> None:
    grads = [torch.zeros(4000)]
    seeded = GaussianAttack(mu=1.0, sigma=2.0, seed=5)
    a, b = seeded.apply(honest_grads=grads), seeded.apply(honest_grads=grads)
    assert torch.equal(a, b)
    assert not torch.equal(a, GaussianAttack(mu=1.0, sigma=2.0, seed=6).apply(honest_grads=grads))
    free = GaussianAttack()
    assert not torch.equal(free.apply(honest_grads=grads), free.apply(honest_grads=grads))
    assert abs(a.mean().item() - 1.0) < 5 * 2.0 / math.sqrt(4000)
    assert abs(a.std().item() - 2.0) < 0.1
    assert GaussianAttack(sigma=0.0, mu=3.0).apply(honest_grads=grads).eq(3.0).all()


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def _reference_grad(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])  # type: ignore[union-attr]
    model.zero_grad()
    return grad


def test_label_flip_is_the_gradient_on_flipped_labels() -> None:
    model = _model()
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    got = LabelFlipAttack(num_classes=3, scale=2.0).apply(model=model, x=x, y=y)
    torch.testing.assert_close(got, 2.0 * _reference_grad(model, x, 2 - y))
    mapping = {0: 1, 1: 0}
    mapped = y.clone()
    mapped[y == 0], mapped[y == 1] = 1, 0
    got = LabelFlipAttack(mapping=mapping, num_classes=3).apply(model=model, x=x, y=y)
    torch.testing.assert_close(got, _reference_grad(model, x, mapped))
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_label_flip_errors() -> None:
    model = _model()
    with pytest.raises(ValueError, match="model, x and y"):
        LabelFlipAttack(num_classes=3).apply(model=model, x=torch.randn(2, 4))
    with pytest.raises(ValueError, match="labels"):
        LabelFlipAttack(num_classes=3).apply(
            model=model, x=torch.randn(2, 4), y=torch.tensor([0, 7])
        )


def test_label_flip_custom_loss() -> None:
    model = _model()
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    calls: list[int] = []

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return torch.nn.functional.cross_entropy(logits, labels, reduction="sum")

    got: Any = LabelFlipAttack(num_classes=3, loss_fn=loss).apply(model=model, x=x, y=y)
    assert calls == [1]
    assert got.shape == (sum(p.numel() for p in model.parameters()),)
