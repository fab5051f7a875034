# ruff: noqa: E501  (the seed table holds its signatures verbatim)
"""The seed's ByzPy 0.1.4 API reference, walked entry by entry against ``velocity.byzpy``.

``SEED_API`` is the seed's class list (``shared/seeds/002_*``: every ``class byzpy.…`` and
function entry, its constructor signature, its bases and the members it documents), written
out here so the test runs without the seed. Porting is replacing ``byzpy`` by
``velocity.byzpy``: every entry must import from that path and from ``velocity.byzpy``, with
the same parameter names, kinds and defaults, the same async/abstract methods, properties
and class attributes.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any

import pytest

import velocity.byzpy

# (qualified name, kind, signature, bases, members); members are
# ("method", name, signature, "" | "async" | "abstractmethod"), ("property", name, "", ""),
# ("attribute", name, literal default or "", "").
SEED_API: list[tuple[str, str, str, tuple[str, ...], tuple[tuple[str, str, str, str], ...]]] = [
    (
        "byzpy.aggregators.base.Aggregator",
        "class",
        "()",
        ("Operator", "ABC"),
        (
            ("method", "aggregate", "(gradients: Sequence[Any])", "abstractmethod"),
            ("method", "compute", "(inputs: Mapping[str, Any], *, context: OpContext)", ""),
            ("attribute", "input_key", "'gradients'", ""),
            ("attribute", "name", "'aggregator'", ""),
        ),
    ),
    (
        "byzpy.aggregators.coordinate_wise.median.CoordinateWiseMedian",
        "class",
        "(*, chunk_size: int = 8192)",
        ("Aggregator",),
        (("method", "aggregate", "(gradients: Sequence[Any])", ""),),
    ),
    (
        "byzpy.aggregators.coordinate_wise.trimmed_mean.CoordinateWiseTrimmedMean",
        "class",
        "(f: int, *, chunk_size: int = 4096)",
        ("Aggregator",),
        (("method", "aggregate", "(gradients: Sequence[Any])", ""),),
    ),
    (
        "byzpy.aggregators.coordinate_wise.mean_of_medians.MeanOfMedians",
        "class",
        "(f: int, *, chunk_size: int = 8192)",
        ("Aggregator",),
        (("method", "aggregate", "(gradients: Sequence[Any])", ""),),
    ),
    (
        "byzpy.aggregators.geometric_wise.geometric_median.GeometricMedian",
        "class",
        "(*, tol: float = 1e-06, max_iter: int = 256, eps: float = 1e-12, init: str = 'median', "
        "chunk_size: int = 32)",
        ("Aggregator",),
        (("method", "aggregate", "(gradients: Sequence[Any])", ""),),
    ),
    (
        "byzpy.aggregators.geometric_wise.krum.Krum",
        "class",
        "(f: int, *, chunk_size: int = 32)",
        ("Aggregator",),
        (("method", "aggregate", "(gradients: Sequence[Any])", ""),),
    ),
    (
        "byzpy.aggregators.geometric_wise.krum.MultiKrum",
        "class",
        "(f: int, q: int, *, chunk_size: int = 32)",
        ("Aggregator",),
        (("method", "aggregate", "(gradients: Sequence[Any])", ""),),
    ),
    (
        "byzpy.aggregators.geometric_wise.minimum_diameter_average.MinimumDiameterAveraging",
        "class",
        "(f: int, *, chunk_size: int = 256)",
        ("Aggregator",),
        (("method", "aggregate", "(gradients: Sequence[Any])", ""),),
    ),
    (
        "byzpy.aggregators.geometric_wise.monna.MoNNA",
        "class",
        "(f: int, *, reference_index: int = 0, chunk_size: int = 32)",
        ("Aggregator",),
        (("method", "aggregate", "(gradients: Sequence[Any])", ""),),
    ),
    (
        "byzpy.aggregators.geometric_wise.smea.SMEA",
        "class",
        "(f: int, *, chunk_size: int = 256)",
        ("Aggregator",),
        (("method", "aggregate", "(gradients: Sequence[Any])", ""),),
    ),
    (
        "byzpy.aggregators.norm_wise.center_clipping.CenteredClipping",
        "class",
        "(*, c_tau: float, M: int = 10, eps: float = 1e-12, init: str = 'mean', chunk_size: int = "
        "32)",
        ("Aggregator",),
        (("method", "aggregate", "(gradients: Sequence[Any])", ""),),
    ),
    (
        "byzpy.aggregators.norm_wise.comparative_gradient_elimination.ComparativeGradientElimination",
        "class",
        "(f: int, *, chunk_size: int = 8192)",
        ("Aggregator",),
        (("method", "aggregate", "(gradients: Sequence[Any])", ""),),
    ),
    (
        "byzpy.aggregators.norm_wise.caf.CAF",
        "class",
        "(f: int, *, chunk_size: int = 256, power_iters: int = 3)",
        ("Aggregator",),
        (("method", "aggregate", "(gradients: Sequence[Any])", ""),),
    ),
    (
        "byzpy.attacks.base.Attack",
        "class",
        "()",
        ("Operator", "ABC"),
        (
            (
                "method",
                "apply",
                "(*, model: Module | None = None, x: Tensor | None = None, y: Tensor | None = None, "
                "honest_grads: List[Any] | None = None, base_grad: Any | None = None)",
                "abstractmethod",
            ),
            ("method", "compute", "(inputs: Mapping[str, Any], *, context: OpContext)", ""),
            ("attribute", "name", "'attack'", ""),
            ("attribute", "supports_subtasks", "False", ""),
            ("attribute", "uses_base_grad", "False", ""),
            ("attribute", "uses_honest_grads", "False", ""),
            ("attribute", "uses_model_batch", "False", ""),
        ),
    ),
    (
        "byzpy.attacks.empire.EmpireAttack",
        "class",
        "(scale: float = -1.0, *, chunk_size: int = 8)",
        ("Attack",),
        (
            (
                "method",
                "apply",
                "(*, model: Module | None = None, x: Tensor | None = None, y: Tensor | None = None, "
                "honest_grads: List[Any] | None = None, base_grad: Any | None = None)",
                "",
            ),
        ),
    ),
    (
        "byzpy.attacks.label_flip.LabelFlipAttack",
        "class",
        "(*, num_classes: int | None = None, mapping: Dict[int, int] | None = None, loss_fn: Module "
        "| None = None, scale: float = 1.0)",
        ("Attack",),
        (
            (
                "method",
                "apply",
                "(*, model: Module | None = None, x: Tensor | None = None, y: Tensor | None = None, "
                "honest_grads: List[Tensor] | None = None, base_grad: Tensor | None = None)",
                "",
            ),
        ),
    ),
    (
        "byzpy.attacks.little.LittleAttack",
        "class",
        "(f: int, N: int | None = None, *, chunk_size: int = 8192)",
        ("Attack",),
        (
            (
                "method",
                "apply",
                "(*, model: Module | None = None, x: Tensor | None = None, y: Tensor | None = None, "
                "honest_grads: List[Any] | None = None, base_grad: Any | None = None)",
                "",
            ),
        ),
    ),
    (
        "byzpy.attacks.sign_flip.SignFlipAttack",
        "class",
        "(scale: float = -1.0, *, chunk_size: int = 8192)",
        ("Attack",),
        (
            (
                "method",
                "apply",
                "(*, model: Module | None = None, x: Tensor | None = None, y: Tensor | None = None, "
                "honest_grads: List[Any] | None = None, base_grad: Any | None = None)",
                "",
            ),
        ),
    ),
    (
        "byzpy.attacks.gaussian.GaussianAttack",
        "class",
        "(mu: float = 0.0, sigma: float = 1.0, *, seed: int | None = None, chunk_size: int = 8192)",
        ("Attack",),
        (
            (
                "method",
                "apply",
                "(*, model: Module | None = None, x: Tensor | None = None, y: Tensor | None = None, "
                "honest_grads: List[Any] | None = None, base_grad: Any | None = None)",
                "",
            ),
        ),
    ),
    (
        "byzpy.attacks.inf.InfAttack",
        "class",
        "(*, chunk_size: int = 8192)",
        ("Attack",),
        (
            (
                "method",
                "apply",
                "(*, model: Module | None = None, x: Tensor | None = None, y: Tensor | None = None, "
                "honest_grads: List[Any] | None = None, base_grad: Any | None = None)",
                "",
            ),
        ),
    ),
    (
        "byzpy.attacks.mimic.MimicAttack",
        "class",
        "(epsilon: int = 0, *, chunk_size: int = 8192)",
        ("Attack",),
        (
            (
                "method",
                "apply",
                "(*, model: Module | None = None, x: Tensor | None = None, y: Tensor | None = None, "
                "honest_grads: List[Any] | None = None, base_grad: Any | None = None)",
                "",
            ),
        ),
    ),
    (
        "byzpy.pre_aggregators.base.PreAggregator",
        "class",
        "()",
        ("Operator", "ABC"),
        (
            ("method", "compute", "(inputs: Mapping[str, Any], *, context: OpContext)", ""),
            ("attribute", "input_key", "'vectors'", ""),
            ("attribute", "name", "'pre_aggregator'", ""),
            ("method", "pre_aggregate", "(xs: Sequence[Any])", "abstractmethod"),
        ),
    ),
    (
        "byzpy.pre_aggregators.bucketing.Bucketing",
        "class",
        "(bucket_size: int, *, feature_chunk_size: int = 8192, perm: Iterable[int] | None = None, "
        "rng: Random | None = None)",
        ("PreAggregator",),
        (("method", "pre_aggregate", "(xs: Sequence[Any])", ""),),
    ),
    (
        "byzpy.pre_aggregators.clipping.Clipping",
        "class",
        "(threshold: float = 2.0, *, chunk_size: int = 32)",
        ("PreAggregator",),
        (("method", "pre_aggregate", "(xs: Sequence[Any])", ""),),
    ),
    (
        "byzpy.pre_aggregators.arc.ARC",
        "class",
        "(f: int = 0, *, chunk_size: int = 32)",
        ("PreAggregator",),
        (("method", "pre_aggregate", "(xs: Sequence[Any])", ""),),
    ),
    (
        "byzpy.pre_aggregators.nnm.NearestNeighborMixing",
        "class",
        "(f: int, *, feature_chunk_size: int = 8192)",
        ("PreAggregator",),
        (("method", "pre_aggregate", "(xs: Sequence[Any])", ""),),
    ),
    (
        "byzpy.engine.parameter_server.ps.ParameterServer",
        "class",
        "(honest_nodes: List[HonestNodeActor], byzantine_nodes: List[ByzantineNodeActor], "
        "aggregator: Aggregator, pre_aggregator: PreAggregator | None = None, update_byzantines: "
        "bool = False, *, actor_pool: ActorPool | None = None, scheduler_metadata: dict | None = "
        "None)",
        ("object",),
        (("method", "round", "()", "async"), ("method", "shutdown", "()", "async")),
    ),
    ("byzpy.engine.peer_to_peer.topology.Edge", "class", "(u: 'int', v: 'int')", ("object",), ()),
    (
        "byzpy.engine.peer_to_peer.topology.Topology",
        "class",
        "(n_nodes: int, edges: Iterable[Tuple[int, int]])",
        ("object",),
        (),
    ),
    (
        "byzpy.engine.peer_to_peer.train.PeerToPeer",
        "class",
        "(honest_nodes: List[HonestNodeActor], byzantine_nodes: List[ByzantineNodeActor] | None, "
        "topology: Topology, *, lr: float = 0.05, channel_name: str = 'p2p', context_factory: "
        "Callable[[str, int], NodeContext] | None = None)",
        ("object",),
        (),
    ),
    (
        "byzpy.engine.node.application.ByzantineNodeApplication",
        "class",
        "(*, name: str, actor_pool: ActorPool | Sequence[ActorPoolConfig], metadata: Mapping[str, "
        "Any] | None = None)",
        ("NodeApplication",),
        (
            ("attribute", "ATTACK_PIPELINE", "'attack'", ""),
            (
                "method",
                "run_attack",
                "(*, inputs: Mapping[str, Any], metadata: Mapping[str, Any] | None = None)",
                "async",
            ),
            (
                "method",
                "run_attack_sync",
                "(*, inputs: Mapping[str, Any], metadata: Mapping[str, Any] | None = None)",
                "",
            ),
        ),
    ),
    (
        "byzpy.engine.node.application.HonestNodeApplication",
        "class",
        "(*, name: str, actor_pool: ActorPool | Sequence[ActorPoolConfig], metadata: Mapping[str, "
        "Any] | None = None)",
        ("NodeApplication",),
        (
            ("attribute", "AGGREGATION_PIPELINE", "'aggregate'", ""),
            ("attribute", "GRADIENT_PIPELINE", "'honest_gradient'", ""),
            (
                "method",
                "aggregate",
                "(*, gradients: Sequence[Any], metadata: Mapping[str, Any] | None = None)",
                "async",
            ),
            (
                "method",
                "aggregate_sync",
                "(*, gradients: Sequence[Any], metadata: Mapping[str, Any] | None = None)",
                "",
            ),
            (
                "method",
                "honest_gradient",
                "(inputs: Mapping[str, Any], *, metadata: Mapping[str, Any] | None = None)",
                "async",
            ),
            (
                "method",
                "honest_gradient_sync",
                "(inputs: Mapping[str, Any], *, metadata: Mapping[str, Any] | None = None)",
                "",
            ),
        ),
    ),
    (
        "byzpy.engine.node.application.NodeApplication",
        "class",
        "(*, name: str, actor_pool: ActorPool | Sequence[ActorPoolConfig], metadata: Mapping[str, "
        "Any] | None = None)",
        ("object",),
        (
            ("method", "has_pipeline", "(name: str)", ""),
            ("method", "list_pipelines", "()", ""),
            ("property", "pool", "", ""),
            (
                "method",
                "register_pipeline",
                "(name: str, graph: ComputationGraph, *, metadata: Mapping[str, Any] | None = None)",
                "",
            ),
            (
                "method",
                "run_pipeline",
                "(name: str, inputs: Mapping[str, Any], *, metadata: Mapping[str, Any] | None = None)",
                "async",
            ),
            (
                "method",
                "run_pipeline_sync",
                "(name: str, inputs: Mapping[str, Any], *, metadata: Mapping[str, Any] | None = None)",
                "",
            ),
            ("method", "shutdown", "()", "async"),
        ),
    ),
    (
        "byzpy.engine.node.application.NodePipeline",
        "class",
        "(graph: ComputationGraph, metadata: Mapping[str, Any] | None = None)",
        ("object",),
        (("attribute", "graph", "", ""), ("attribute", "metadata", "None", "")),
    ),
    (
        "byzpy.engine.graph.scheduler.MessageAwareNodeScheduler",
        "class",
        "(*args, **kwargs)",
        ("NodeScheduler",),
        (
            ("method", "deliver_message", "(message_type: str, payload: Any)", ""),
            ("method", "run", "(inputs: Mapping[str, Any])", "async"),
            (
                "method",
                "wait_for_message",
                "(message_type: str, *, timeout: float | None = None)",
                "async",
            ),
        ),
    ),
    (
        "byzpy.engine.graph.scheduler.MessageSource",
        "class",
        "(message_type: str, field: str | None = None, timeout: float | None = None)",
        ("object",),
        (),
    ),
    (
        "byzpy.engine.graph.scheduler.NodeScheduler",
        "class",
        "(graph: ComputationGraph, *, pool: ActorPool | None = None, metadata: Mapping[str, Any] | "
        "None = None)",
        ("object",),
        (("method", "run", "(inputs: Mapping[str, Any])", "async"),),
    ),
    (
        "byzpy.engine.graph.pool.ActorPool",
        "class",
        "(configs: Sequence[ActorPoolConfig])",
        ("object",),
        (
            ("method", "open_channel", "(name: str)", "async"),
            ("method", "run_many", "(subtasks: Sequence[SubTask])", "async"),
            ("method", "run_subtask", "(subtask: SubTask)", "async"),
            ("method", "shutdown", "()", "async"),
            ("property", "size", "", ""),
            ("method", "start", "()", "async"),
            ("method", "worker_affinities", "()", ""),
        ),
    ),
    (
        "byzpy.engine.graph.pool.ActorPoolChannel",
        "class",
        "(*, name: str, channels: Mapping[str, ChannelRef], endpoints: Mapping[str, Endpoint])",
        ("object",),
        (
            ("method", "channel", "(worker: str)", ""),
            ("method", "endpoint", "(worker: str)", ""),
            ("method", "recv", "(worker: str, *, timeout: float | None = None)", "async"),
            ("method", "send", "(sender: str, recipient: str, payload: Any)", "async"),
            ("property", "workers", "", ""),
        ),
    ),
    (
        "byzpy.engine.graph.pool.ActorPoolConfig",
        "class",
        "(backend: str | ActorBackend, count: int = 1, capabilities: Sequence[str] | None = None, "
        "name: str | None = None)",
        ("object",),
        (
            ("attribute", "backend", "", ""),
            ("attribute", "capabilities", "None", ""),
            ("attribute", "count", "1", ""),
            ("attribute", "name", "None", ""),
            ("method", "resolved_capabilities", "()", ""),
        ),
    ),
    (
        "byzpy.engine.actor.factory.resolve_backend",
        "function",
        "(spec: str | ActorBackend)",
        (),
        (),
    ),
]

_NO_DEFAULT = object()


def _seed_params(sig: str) -> list[tuple[str, inspect._ParameterKind, object]]:
    """(name, kind, default) of each parameter of a seed signature string.

    Compiled (annotations kept as strings) rather than parsed with :mod:`ast`: CPython 3.11's
    ast object construction is not thread-safe (``AST constructor recursion depth mismatch``
    when another thread parses at the same time), and these tests run beside thread actors.
    """
    code = compile(f"from __future__ import annotations\ndef f{sig}: pass\n", "<seed>", "exec")
    namespace: dict[str, Any] = {}
    exec(code, {"__builtins__": {"__import__": __import__}}, namespace)
    return [
        (p.name, p.kind, _NO_DEFAULT if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(namespace["f"]).parameters.values()
    ]


def _our_params(obj: Any, *, drop_self: bool) -> list[tuple[str, inspect._ParameterKind, object]]:
    params = list(inspect.signature(obj).parameters.values())
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    return [
        (p.name, p.kind, _NO_DEFAULT if p.default is inspect.Parameter.empty else p.default)
        for p in params
    ]


def _resolve(qualname: str) -> Any:
    module, _, name = qualname.rpartition(".")
    return getattr(importlib.import_module("velocity." + module), name)


def _same(ours: list[tuple[str, inspect._ParameterKind, object]], seed: list[Any]) -> bool:
    if [(n, k) for n, k, _ in ours] != [(n, k) for n, k, _ in seed]:
        return False
    for (_, _, a), (_, _, b) in zip(ours, seed, strict=True):
        if (a is _NO_DEFAULT) != (b is _NO_DEFAULT):
            return False
        if a is not _NO_DEFAULT and not (a == b and type(a) is type(b)):
            return False
    return True


def test_the_table_is_the_whole_reference() -> None:
    assert len(SEED_API) == 41
    assert len({entry[0] for entry in SEED_API}) == 41


@pytest.mark.parametrize("entry", SEED_API, ids=[e[0].removeprefix("byzpy.") for e in SEED_API])
def test_entry_matches_the_seed(
    entry: tuple[str, str, str, tuple[str, ...], tuple[Any, ...]],
) -> None:
    qualname, kind, sig, bases, members = entry
    obj = _resolve(qualname)
    name = qualname.rpartition(".")[2]
    # importable from the top-level package too, as the same object
    assert getattr(velocity.byzpy, name) is obj, f"velocity.byzpy.{name}"
    assert name in velocity.byzpy.__all__
    ours = _our_params(obj, drop_self=False)
    assert _same(ours, _seed_params(sig)), f"{qualname}{sig} != {inspect.signature(obj)}"
    if kind == "function":
        assert inspect.isfunction(obj)
        return
    assert inspect.isclass(obj)
    mro = {c.__name__ for c in obj.__mro__}
    for base in bases:
        assert base in mro, f"{qualname} does not derive from {base}"
    for member_kind, member, msig, flag in members:
        if member_kind == "property":
            static = inspect.getattr_static(obj, member)
            assert isinstance(static, property), f"{qualname}.{member} is not a property"
        elif member_kind == "attribute":
            if msig:
                value = eval(compile(msig, "<seed>", "eval"), {"__builtins__": {}})  # a literal
                assert getattr(obj, member) == value, f"{qualname}.{member}"
            elif dataclasses.is_dataclass(obj):
                assert member in {f.name for f in dataclasses.fields(obj)}, f"{qualname}.{member}"
            else:
                assert hasattr(obj, member), f"{qualname}.{member}"
        else:
            fn = getattr(obj, member)
            assert callable(fn), f"{qualname}.{member}"
            got = _our_params(fn, drop_self=True)
            assert _same(got, _seed_params(msig)), (
                f"{qualname}.{member}{msig} != {inspect.signature(fn)}"
            )
            is_async = inspect.iscoroutinefunction(fn)
            assert is_async == (flag == "async"), f"{qualname}.{member} async={is_async}"
            if flag == "abstractmethod":
                assert member in obj.__abstractmethods__, f"{qualname}.{member} is not abstract"
