"""``run_operator`` / ``OperatorExecutor``: ByzPy's top-level one-operator helpers."""

from __future__ import annotations

import asyncio

import pytest
import torch

from velocity.byzpy import (
    ActorPoolConfig,
    CoordinateWiseMedian,
    CoordinateWiseTrimmedMean,
    EmpireAttack,
    MultiKrum,
    OperatorExecutor,
    run_operator,
)


def _grads(n: int = 9, d: int = 40) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(d, generator=g) for _ in range(n)]


@pytest.mark.parametrize("pool", [None, ActorPoolConfig(backend="thread", count=3)])
def test_run_operator_equals_the_direct_call(pool: ActorPoolConfig | None) -> None:
    grads = _grads()
    for op in (CoordinateWiseMedian(chunk_size=8), CoordinateWiseTrimmedMean(f=2, chunk_size=8)):
        got = asyncio.run(run_operator(op, {"gradients": grads}, pool_config=pool))
        assert torch.equal(got, op.aggregate(grads))  # type: ignore[arg-type]


def test_custom_input_keys_are_renamed_and_attacks_need_them() -> None:
    grads = _grads()
    op = MultiKrum(f=2, q=4)
    got = asyncio.run(run_operator(op, {"grads": grads}, input_keys=["grads"]))
    assert torch.equal(got, op.aggregate(grads))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attack"):
        OperatorExecutor(EmpireAttack())
    crafted = asyncio.run(
        run_operator(EmpireAttack(scale=-1.0), {"honest_grads": grads}, input_keys=["honest_grads"])
    )
    assert torch.allclose(crafted, -torch.stack(grads).mean(0), atol=1e-6)  # type: ignore[arg-type]


def test_an_executor_reuses_its_pool_and_closes_it() -> None:
    grads = _grads()

    async def main() -> list[object]:
        async with OperatorExecutor(
            CoordinateWiseMedian(chunk_size=4),
            pool_config=[ActorPoolConfig(backend="thread", count=2)],
        ) as ex:
            first = await ex.run({"gradients": grads})
            second = await ex.run({"gradients": grads[:5]})
            pool = ex._pool
        assert ex._pool is None
        assert pool is not None
        return [first, second]

    first, second = asyncio.run(main())
    assert torch.equal(first, torch.stack(grads).median(0).values)  # type: ignore[arg-type]
    assert torch.equal(second, torch.stack(grads[:5]).median(0).values)  # type: ignore[arg-type]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="Operator"):
        OperatorExecutor(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="input_keys"):
        OperatorExecutor(CoordinateWiseMedian(), input_keys="gradients")
    with pytest.raises(ValueError, match="pool_config"):
        OperatorExecutor(CoordinateWiseMedian(), pool_config=[])
