"""Ready-made operators and graphs: :class:`CallableOp`, :class:`RemoteCallableOp`,
:func:`make_single_operator_graph`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from velocity.byzpy.engine.graph.graph import ComputationGraph, GraphNode, graph_input
from velocity.byzpy.engine.graph.operator import OpContext, Operator
from velocity.byzpy.engine.graph.subtask import SubTask

__all__ = ["CallableOp", "RemoteCallableOp", "make_single_operator_graph"]


def _check_mapping(who: str, input_mapping: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(input_mapping, Mapping):
        raise TypeError(
            f"{who}.input_mapping must be a mapping; got {type(input_mapping).__name__}"
        )
    for param, source in input_mapping.items():
        if not (isinstance(param, str) and param and isinstance(source, str) and source):
            raise ValueError(
                f"{who}.input_mapping must map parameter names to input names (non-empty str); "
                f"got {param!r}: {source!r}"
            )
    return dict(input_mapping)


class CallableOp(Operator):
    """An operator that calls ``fn(**{param: inputs[source]})``.

    Parameters
    ----------
    fn : callable
        A function (or coroutine function) of the mapped keyword arguments.
    input_mapping : mapping of str to str
        ``fn``'s parameter name -> the operator input it is read from.
    name : str
        The operator's name (default ``"callable"``).

    Examples
    --------
    >>> op = CallableOp(lambda a, b: a - b, input_mapping={"a": "x", "b": "y"})
    >>> op.compute({"x": 5, "y": 2}, context=OpContext("n"))
    3
    """

    name = "callable"

    def __init__(
        self, fn: Callable[..., object], *, input_mapping: Mapping[str, str], name: str = "callable"
    ) -> None:
        who = type(self).__name__
        if not callable(fn):
            raise TypeError(f"{who}: fn must be callable; got {fn!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{who}.name must be a non-empty str; got {name!r}")
        self.fn = fn
        self.input_mapping = _check_mapping(who, input_mapping)
        self.name = name

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({getattr(self.fn, '__name__', self.fn)!r}, name={self.name!r})"
        )

    def _kwargs(self, inputs: Mapping[str, object]) -> dict[str, object]:
        kwargs: dict[str, object] = {}
        for param, source in self.input_mapping.items():
            if source not in inputs:
                raise KeyError(
                    f"{type(self).__name__} {self.name!r}: missing input {source!r} for "
                    f"parameter {param!r}; got inputs {sorted(inputs)}"
                )
            kwargs[param] = inputs[source]
        return kwargs

    def compute(self, inputs: Mapping[str, object], *, context: OpContext) -> object:
        return self.fn(**self._kwargs(inputs))


class RemoteCallableOp(CallableOp):
    """A :class:`CallableOp` whose call runs on a worker of the pool, as one subtask.

    With no pool (or a pool of one worker) it runs in the scheduler's thread, like
    :class:`CallableOp`.
    """

    name = "remote_callable"
    supports_subtasks = True

    def __init__(
        self,
        fn: Callable[..., object],
        *,
        input_mapping: Mapping[str, str],
        name: str = "remote_callable",
    ) -> None:
        super().__init__(fn, input_mapping=input_mapping, name=name)

    def create_subtasks(
        self, inputs: Mapping[str, object], *, context: OpContext
    ) -> Iterable[SubTask]:
        return [SubTask(fn=self.fn, kwargs=self._kwargs(inputs), name=self.name)]

    def reduce_subtasks(
        self, partials: Sequence[object], inputs: Mapping[str, object], *, context: OpContext
    ) -> object:
        if len(partials) != 1:
            raise RuntimeError(f"{self.name!r}: expected one partial result; got {len(partials)}")
        return partials[0]


def make_single_operator_graph(
    *, node_name: str, operator: Operator, input_keys: Sequence[str]
) -> ComputationGraph:
    """A one-node graph: ``operator`` reads graph inputs named ``input_keys`` (under the
    same names) and its result is the graph's output ``node_name``.

    Examples
    --------
    >>> op = CallableOp(lambda gradients: sum(gradients), input_mapping={"gradients": "gradients"})
    >>> g = make_single_operator_graph(node_name="agg", operator=op, input_keys=["gradients"])
    >>> g.outputs, sorted(g.required_inputs)
    (['agg'], ['gradients'])
    """
    if isinstance(input_keys, str) or not isinstance(input_keys, Sequence):
        raise ValueError(
            f"make_single_operator_graph: input_keys must be a sequence of str (not a str); "
            f"got {input_keys!r}"
        )
    node = GraphNode(
        name=node_name, op=operator, inputs={key: graph_input(key) for key in input_keys}
    )
    return ComputationGraph([node], outputs=[node_name])
