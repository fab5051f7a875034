"""RayClients against SequentialClients: the same models bit for bit, a stable object store,
and refusals by name.

One local Ray instance (2 CPUs, no dashboard) serves the whole module; every test that starts
actors closes them. Skipped where Ray is not installed (``pip install 'velocityfl[ray]'``).
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from velocity.attacks import AttackSpec, parse_attack
from velocity.client import TrainConfig, Trainer
from velocity.errors import ConfigurationError, ProtocolError
from velocity.server import build_engine
from velocity.sim import ClientPopulation, SequentialClients, SimulationSettings
from velocity.sim.backends import BackendSpec
from velocity.strategies import FedAvg, QFedAvg
from velocity.types import ClientTask

ray = pytest.importorskip("ray")

from velocity.sim.ray_clients import RayClients, _chunks, _Record  # noqa: E402

SIZES = (7, 23, 15, 40, 1, 12, 30, 9, 18, 5)
"""Unequal client sizes: a one-example client, sizes below, at and above the batch size."""


@pytest.fixture(scope="module", autouse=True)
def ray_instance() -> Iterator[Any]:
    started = not ray.is_initialized()
    if started:
        ray.init(
            address="local",  # a new instance of our own, whatever else runs on the machine
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            logging_level=logging.ERROR,
        )
    yield ray
    if started:
        ray.shutdown()


def _data() -> tuple[torch.Tensor, torch.Tensor, ClientPopulation]:
    gen = torch.Generator().manual_seed(0)
    total = sum(SIZES) + 20
    x = torch.randn(total, 12, generator=gen)
    y = torch.randint(0, 4, (total,), generator=gen)
    order = torch.randperm(total, generator=gen)[: sum(SIZES)]
    offsets = torch.tensor([0, *torch.tensor(SIZES).cumsum(0).tolist()])
    return x, y, ClientPopulation(order, offsets)


def _mlp() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 4))


def _logreg() -> nn.Module:
    torch.manual_seed(1)
    return nn.Linear(12, 4)


def _base(
    model: Callable[[], nn.Module] = _mlp, config: TrainConfig | None = None
) -> tuple[SequentialClients, nn.Module]:
    x, y, pop = _data()
    m = model()
    trainer = Trainer(m, config or TrainConfig(batch_size=5, lr=0.05, momentum=0.9))
    return SequentialClients(trainer, x, y, pop, seed=7, num_classes=4), m


def _engine(
    backend: BackendSpec | str,
    *,
    model: Callable[[], nn.Module] = _mlp,
    config: TrainConfig | None = None,
    strategy: object = None,
    attacks: Sequence[AttackSpec] = (),
    dropout_rate: float = 0.1,
    client_fraction: float = 0.8,
) -> Any:
    base, m = _base(model, config)
    spec = base.trainer.spec
    return build_engine(
        base=base,
        spec=spec,
        init_params=spec.flatten(m.state_dict()),
        strategy=strategy or FedAvg(),  # type: ignore[arg-type]
        settings=SimulationSettings(
            seed=7, client_fraction=client_fraction, dropout_rate=dropout_rate
        ),
        evaluate=lambda p: (float(p.abs().sum()), float("nan")),
        attacks=attacks,
        backend=backend,
    )


def _ray(**options: Any) -> BackendSpec:
    return BackendSpec(type="ray", **options)


LABEL_FLIP = [AttackSpec(parse_attack("label_flip"), fraction=0.3)]


# ---------------------------------------------------------------------- bit for bit


@pytest.mark.parametrize("num_actors", [1, 2])
def test_rounds_with_dropout_and_label_flipping_equal_sequential_bit_for_bit(
    num_actors: int,
) -> None:
    seq = _engine("sequential", attacks=LABEL_FLIP)
    on_ray = _engine(_ray(num_actors=num_actors), attacks=LABEL_FLIP)
    try:
        want = seq.run(4)
        got = on_ray.run(4)
        provider = on_ray.provider
        assert isinstance(provider, RayClients)
        assert len(provider.actor_info) == num_actors
        # the thread policy: every actor trains with the driver's torch thread count
        assert {info["threads"] for info in provider.actor_info} == {torch.get_num_threads()}
        assert [r.participated for r in got] == [r.participated for r in want]
        assert [r.failures for r in got] == [r.failures for r in want]
        assert any(r.failures for r in want)  # somebody dropped out
        assert [r.attack_results for r in got] == [r.attack_results for r in want]
        assert torch.equal(on_ray.global_params, seq.global_params)
        assert float((seq.global_params - _engine("sequential").global_params).abs().max()) > 1e-3
    finally:
        on_ray.provider.close()


def test_a_lost_actor_fails_its_round_and_the_retry_starts_fresh_actors() -> None:
    seq = _engine("sequential")
    on_ray = _engine(_ray(num_actors=1))
    try:
        seq.run(3)
        on_ray.run(1)
        (actor,) = on_ray.provider._actors
        ray.kill(actor)
        with pytest.raises(ray.exceptions.RayActorError):
            on_ray.run_round()
        assert on_ray.provider._actors == []  # closed: the next round starts a new actor
        assert on_ray.round == 1
        on_ray.run(2)
        assert torch.equal(on_ray.global_params, seq.global_params)
    finally:
        on_ray.provider.close()


def test_initial_losses_and_task_configs_travel() -> None:
    # q-FedAvg asks every client for its initial loss (TaskConfig.options)
    config = TrainConfig(batch_size=4, lr=0.1, weight_decay=0.01, local_steps=3)
    seq = _engine("sequential", config=config, strategy=QFedAvg(q=1.0), model=_logreg)
    on_ray = _engine(_ray(num_actors=2), config=config, strategy=QFedAvg(q=1.0), model=_logreg)
    try:
        seq.run(3)
        on_ray.run(3)
        assert torch.equal(on_ray.global_params, seq.global_params)
    finally:
        on_ray.provider.close()


def test_kept_optimizer_state_is_shipped_and_returned() -> None:
    # DiLoCo's inner AdamW: each client's moments live in the driver's store between rounds
    config = TrainConfig(
        batch_size=8, local_steps=3, lr=0.01, optimizer="adamw", keep_optimizer_state=True
    )
    seq = _engine("sequential", config=config, dropout_rate=0.0, client_fraction=0.6)
    on_ray = _engine(_ray(num_actors=1), config=config, dropout_rate=0.0, client_fraction=0.6)
    try:
        seq.run(4)
        on_ray.run(4)
        assert torch.equal(on_ray.global_params, seq.global_params)
        key = "optimizer-adamw"
        assert seq.client_state.count(key) == on_ray.client_state.count(key) > 0
        for client in seq.client_state.clients():
            want = seq.client_state.get(client, key)
            got = on_ray.client_state.get(client, key)
            assert want.keys() == got.keys()
            assert all(torch.equal(got[k], want[k]) for k in want)
    finally:
        on_ray.provider.close()


def _round_digests(provider: Any, m: nn.Module) -> list[str]:
    params = provider.trainer.spec.flatten(m.state_dict())
    pop = provider.population
    provider.submit([ClientTask(pop.client_id(i), 1, 0, params) for i in range(pop.num_clients)])
    return [r.digest for r in provider.collect()]


def test_the_thread_policy_keeps_the_bits_of_the_in_process_thread_count() -> None:
    # 784 inputs and batches of 50: big enough that PyTorch may split reductions by thread
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(600, 784, generator=gen), torch.randint(0, 10, (600,), generator=gen)
    pop = ClientPopulation(torch.arange(600), torch.arange(0, 601, 75))

    def federation() -> tuple[SequentialClients, nn.Module]:
        torch.manual_seed(4)
        m = nn.Linear(784, 10)
        trainer = Trainer(m, TrainConfig(batch_size=50, lr=0.1, momentum=0.9))
        return SequentialClients(trainer, x, y, pop, seed=1), m

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _round_digests(*federation())
        torch.set_num_threads(max(2, threads))
        several = _round_digests(*federation())
        base, m = federation()
        default = RayClients(base, num_actors=1)  # the driver's count: max(2, threads)
        assert _round_digests(default, m) == several
        base, m = federation()
        single = RayClients(base, num_actors=1, num_threads=1)
        assert _round_digests(single, m) == one
        assert default.actor_info[0]["threads"] == max(2, threads)
        assert single.actor_info[0]["threads"] == 1
        assert default.actor_info[0]["omp_wait_policy"] is not None
        default.close()
        single.close()
    finally:
        torch.set_num_threads(threads)
    # (on this project's CPU ``one != several``: the policy is needed, not decorative)


def test_inner_vectorized_and_auto_train_the_chunks_at_once() -> None:
    seq = _engine("sequential", attacks=LABEL_FLIP)
    vec = _engine(_ray(num_actors=2, inner="vectorized"), attacks=LABEL_FLIP)
    try:
        seq.run(3)
        vec.run(3)
        assert {info["inner"] for info in vec.provider.actor_info} == {"VectorizedClients"}
        torch.testing.assert_close(vec.global_params, seq.global_params, atol=1e-5, rtol=0)
    finally:
        vec.provider.close()
    base, _ = _base(config=TrainConfig(optimizer="adamw", lr=1e-3))
    assert RayClients(base, inner="auto").inner == "sequential"
    base, _ = _base()
    assert RayClients(base, inner="auto").inner == "vectorized"


def test_chunks_are_contiguous_in_task_order() -> None:
    assert _chunks(5, 2) == [(0, 3), (3, 5)]
    assert _chunks(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert _chunks(2, 4) == [(0, 1), (1, 2)]
    assert _chunks(1, 1) == [(0, 1)]


# ---------------------------------------------------------------------- YAML and VelocityServer


def _yaml(backend: dict[str, object]) -> dict[str, object]:
    return {
        "name": "on-ray",
        "dataset": "synthetic",
        "model_id": "logreg",
        "seed": 4,
        "training": {"num_rounds": 3, "num_clients": 12, "client_fraction": 0.5},
        "client": {"batch_size": 8, "local_steps": 3, "lr": 0.1},
        "simulation": {"partitioning": "natural", "dropout_rate": 0.2},
        "backend": backend,
        "output": {"save_plots": False},
    }


def test_a_yaml_run_on_ray_gives_the_sequential_model(tmp_path: Path) -> None:
    import yaml

    from velocity.experiments import load_config, parse_config
    from velocity.experiments.runner import run_experiment

    path = tmp_path / "ray.yaml"
    path.write_text(
        yaml.safe_dump(_yaml({"type": "ray", "num_actors": 2, "resources_per_actor": {"CPU": 1}}))
    )
    config = load_config(path)
    assert config.backend.type == "ray"
    assert config.resolved()["backend"]["num_actors"] == 2
    on_ray = run_experiment(config, output_dir=tmp_path / "ray")
    sequential = run_experiment(parse_config(_yaml({})), output_dir=tmp_path / "seq")
    assert on_ray.final_model_digest == sequential.final_model_digest
    gc.collect()  # the run's actors go with its provider


def test_velocity_server_takes_the_ray_backend(tmp_path: Path) -> None:
    from velocity import VelocityServer

    finals = []
    for backend in ("sequential", "ray"):
        server = VelocityServer(
            "logreg",
            "synthetic",
            "FedAvg",
            storage=f"local://{tmp_path / backend}",
            num_clients=8,
            seed=3,
            partitioning="natural",
            client_fraction=0.5,
            train_config=TrainConfig(batch_size=8, local_steps=2, lr=0.1),
            backend=backend,
        )
        server.run(rounds=2)
        finals.append(server.engine.global_params.clone())
        if backend == "ray":
            assert isinstance(server.engine.provider, RayClients)
            server.engine.provider.close()
    assert torch.equal(finals[0], finals[1])


def test_yaml_backend_errors_name_the_field() -> None:
    from velocity.experiments import InvalidConfigError, parse_config

    cases = {
        "num_actors": ({"type": "ray", "num_actors": 0}, "backend.num_actors: must be >= 1"),
        "inner": ({"type": "ray", "inner": "fast"}, "backend.inner: must be one of 'sequential'"),
        "resources": (
            {"type": "ray", "resources_per_actor": {"CPU": -1}},
            "backend.resources_per_actor: must map resource names to amounts >= 0",
        ),
        "address": ({"type": "ray", "address": ""}, "backend.address: must not be empty"),
        "threads": ({"type": "ray", "num_threads": 0}, "backend.num_threads: must be >= 1"),
        "not_ray": (
            {"type": "sequential", "num_actors": 4},
            "backend: num_actors: only type: ray reads it",
        ),
        "type": ({"type": "dask"}, "'auto', 'ray'; got 'dask'"),
    }
    for name, (backend, fragment) in cases.items():
        with pytest.raises(InvalidConfigError) as info:
            parse_config(_yaml(backend))
        assert fragment in str(info.value), name


def test_configs_without_ray_keep_their_resolved_form_and_hash() -> None:
    # a non-ray config resolves to the four keys it had before ray existed: same hash
    from velocity.experiments import parse_config

    plain = parse_config(_yaml({}))
    assert set(plain.resolved()["backend"]) == {"type", "seed", "spread_s", "max_bytes"}
    on_ray = parse_config(_yaml({"type": "ray"}))
    assert on_ray.resolved()["backend"]["resources_per_actor"] == {"CPU": 1.0}
    assert parse_config(on_ray.resolved()).config_hash() == on_ray.config_hash()
    assert on_ray.config_hash() != plain.config_hash()


# ---------------------------------------------------------------------- the object store


def _plasma() -> tuple[int, int]:
    """(MiB, objects) in the object store, from Ray's own memory summary."""
    from ray._private.internal_api import memory_summary

    text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    found = re.search(r"Plasma memory usage (\d+) MiB, (\d+) objects", text)
    assert found is not None, text
    return int(found.group(1)), int(found.group(2))


def _references() -> int:
    """Object references this driver holds."""
    return len(ray._private.worker.global_worker.core_worker.get_all_reference_counts())


def _settled(max_objects: int, timeout_s: float = 20.0) -> tuple[int, int]:
    """The object store's (MiB, objects) once it holds at most ``max_objects`` (Ray frees a
    dropped object asynchronously, a fraction of a second later on a busy machine), or the
    last reading after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    reading = _plasma()
    while reading[1] > max_objects and time.monotonic() < deadline:
        time.sleep(0.2)
        reading = _plasma()
    return reading


def test_the_object_store_does_not_grow_over_200_rounds() -> None:
    # a model of 11,904 parameters: every round puts 48 kB of parameters and gets back
    # two arrays of 4 rows, 190 kB each (above Ray's 100 kB inline limit, so in the store)
    def wide() -> nn.Module:
        torch.manual_seed(3)
        return nn.Sequential(nn.Linear(12, 700), nn.ReLU(), nn.Linear(700, 4))

    config = TrainConfig(batch_size=64, local_steps=1, lr=0.01)
    engine = _engine(_ray(num_actors=2), model=wide, config=config, dropout_rate=0.0)
    shared = 3  # what the actors share for their whole life: the kit, x and y
    try:
        engine.run(10)
        early_mib, early_objects = _settled(shared)
        early_refs = _references()
        engine.run(190)
        late_mib, late_objects = _settled(shared)
        late_refs = _references()
        # kept, 190 rounds x 3 objects would be 570 objects and about 80 MiB
        assert early_objects <= shared
        assert late_objects <= shared, (early_objects, late_objects)
        assert late_mib <= early_mib + 1, (early_mib, late_mib)
        assert late_refs <= early_refs, (early_refs, late_refs)
        assert engine.round == 200
    finally:
        engine.provider.close()


_BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "ray_clients.py"
_DATA = os.environ.get("VELOCITY_DATA")


@pytest.mark.skipif(
    not _DATA or not (Path(_DATA) / "mnist").exists(), reason="needs MNIST in $VELOCITY_DATA"
)
def test_benchmark_quick_mode_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("THP_MEM_ALLOC_ENABLE", "OMP_WAIT_POLICY"):  # the benchmark sets defaults
        monkeypatch.setenv(name, os.environ.get(name, "1" if name.startswith("THP") else ""))
    spec = importlib.util.spec_from_file_location("bench_ray_clients", _BENCH)
    assert spec is not None
    assert spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    (row,) = bench.main(["--quick", "--actor-threads", "driver"])
    assert (row["clients"], row["clients_per_round"], row["actors"]) == (200, 20, 2)
    assert row["ratio"] > 0
    assert row["bit_identical"]


# ---------------------------------------------------------------------- refusals


_D = 12 * 16 + 16 + 16 * 8 + 8 + 8 * 4 + 4  # the MLP's parameters
_RECORD = _Record(7, 0.5, {"steps": 1.0})
_GOOD = np.zeros((2, _D), dtype=np.float32)
WRONG_ANSWERS: dict[str, tuple[object, str]] = {
    "shape": ((np.zeros((2, _D + 1), np.float32), [_RECORD, _RECORD]), r"shape \(2, "),
    "dtype": ((_GOOD.astype(np.float64), [_RECORD, _RECORD]), "float64 array"),
    "rows_type": ((torch.zeros(2, _D), [_RECORD, _RECORD]), "returned a Tensor"),
    "count": ((_GOOD, [_RECORD]), "expected a list of 2"),
    "record": ((_GOOD, [_RECORD, {"num_samples": 7}]), "dict instead of a record"),
    "samples": ((_GOOD, [_RECORD, _Record(-1, 0.5)]), "num_samples -1"),
    "metrics": ((_GOOD, [_RECORD, _Record(7, 0.5, {"steps": "1"})]), "metrics that are not"),
    "answer": ("nope", r"expected \(rows, records\)"),
}


@pytest.mark.parametrize("case", sorted(WRONG_ANSWERS))
def test_an_actor_that_answers_wrong_is_a_protocol_error(case: str) -> None:
    from velocity.sim import ClientWork

    base, m = _base()
    clients = RayClients(base)
    spec = base.trainer.spec
    assert spec.d == _D
    params = spec.flatten(m.state_dict())
    works = [
        ClientWork(ClientTask(base.population.client_id(i), 1, 0, params), i, torch.empty(spec.d))
        for i in range(2)
    ]
    answer, match = WRONG_ANSWERS[case]
    with pytest.raises(ProtocolError, match=match):
        clients._accept(works, answer, {})
    clients._accept(works, (_GOOD, [_RECORD, _RECORD]), {})  # a right answer is taken


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_actors": 0}, r"RayClients.num_actors must be an int >= 1; got 0"),
        ({"num_actors": 1.5}, r"RayClients.num_actors must be an int >= 1"),
        ({"inner": "fast"}, r"RayClients.inner must be one of 'sequential', 'vectorized'"),
        ({"resources_per_actor": {"CPU": -1}}, r"RayClients.resources_per_actor must be"),
        ({"resources_per_actor": {"": 1}}, r"RayClients.resources_per_actor must be"),
        ({"address": ""}, r"RayClients.address must be None or a non-empty string"),
        ({"num_threads": 0}, r"RayClients.num_threads must be None or an int >= 1"),
        ({"start_timeout_s": 0}, r"RayClients.start_timeout_s must be"),
    ],
)
def test_bad_settings_are_refused_by_name(options: dict[str, Any], match: str) -> None:
    base, _ = _base()
    with pytest.raises(ConfigurationError, match=match):
        RayClients(base, **options)


def test_what_cannot_work_is_refused() -> None:
    from velocity.sim.vectorized import vectorized_from

    base, _ = _base(config=TrainConfig(optimizer="adamw", lr=1e-3))
    with pytest.raises(ConfigurationError, match=r"inner: 'vectorized' cannot train.*adamw"):
        RayClients(base, inner="vectorized")
    base, _ = _base()
    with pytest.raises(ConfigurationError, match=r"exactly SequentialClients.*VectorizedClients"):
        RayClients(vectorized_from(base))
    from velocity import VelocityServer

    with pytest.raises(ConfigurationError, match="QuadraticClients"):
        VelocityServer(
            "toy", "none", storage="memory://ray-quadratic", layer_shapes={"w": 4}, backend="ray"
        )


def test_ray_missing_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import velocity.sim._ray as ray_support
    import velocity.sim.ray_clients as module

    monkeypatch.setattr(module, "ray_installed", lambda: False)
    monkeypatch.setattr(ray_support, "ray_installed", lambda: False)
    base, _ = _base()
    with pytest.raises(ConfigurationError, match=r"pip install 'velocityfl\[ray\]'"):
        RayClients(base)
    from velocity.sim.backends import make_backend

    with pytest.raises(ConfigurationError, match=r"backend.type: ray needs Ray.*velocityfl\[ray\]"):
        make_backend("ray", base)


def test_resources_the_cluster_lacks_fail_before_any_actor_starts() -> None:
    base, m = _base()
    clients = RayClients(base, resources_per_actor={"GPU": 1})
    params = base.trainer.spec.flatten(m.state_dict())
    clients.submit([ClientTask(base.population.client_id(0), 1, 0, params)])
    with pytest.raises(ConfigurationError, match="asks each actor for GPU: 1, but the Ray cluster"):
        clients.collect()
    assert clients.actor_info == []


def test_more_actors_than_the_cluster_holds_fail_at_once() -> None:
    base, m = _base()
    clients = RayClients(base, num_actors=3)  # 3 x 1 CPU on 2 CPUs
    params = base.trainer.spec.flatten(m.state_dict())
    clients.submit([ClientTask(base.population.client_id(0), 1, 0, params)])
    with pytest.raises(ConfigurationError, match=r"asks 3 actors x CPU: 1 = 3 CPU, but the Ray"):
        clients.collect()
    assert clients.actor_info == []


@ray.remote(num_cpus=2)
class _Hog:
    """Holds both CPUs of the module's Ray instance."""

    def ready(self) -> bool:
        return True


def test_actors_that_cannot_be_placed_in_time_fail_with_a_clear_error() -> None:
    hog = _Hog.remote()  # type: ignore[attr-defined]
    try:
        ray.get(hog.ready.remote())
        base, m = _base()
        clients = RayClients(base, num_actors=1, start_timeout_s=2)
        params = base.trainer.spec.flatten(m.state_dict())
        clients.submit([ClientTask(base.population.client_id(0), 1, 0, params)])
        with pytest.raises(
            ConfigurationError, match=r"0 of 1 Ray actors started within 2 s.*\{CPU: 0\} of that"
        ):
            clients.collect()
        assert clients.actor_info == []
    finally:
        ray.kill(hog)


def test_another_cluster_address_is_refused_while_connected() -> None:
    base, m = _base()
    clients = RayClients(base, address="127.0.0.1:1")
    params = base.trainer.spec.flatten(m.state_dict())
    clients.submit([ClientTask(base.population.client_id(0), 1, 0, params)])
    with pytest.raises(ConfigurationError, match="already connected to the Ray cluster"):
        clients.collect()


def test_importing_velocity_does_not_import_ray() -> None:
    import subprocess
    import sys

    code = "import sys, velocity, velocity.sim; print('ray' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"
