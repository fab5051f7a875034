"""Parameter layout: :class:`ParamSpec` and the canonical digest of flat tensors.

:class:`ParamSpec` maps a model's state dict to ONE flat ``float32`` vector of length ``d``
and back. The updates of a round live in one preallocated ``(n, d)`` tensor
(:meth:`ParamSpec.stack`); each client's flattened update is written into its row.

Numeric contract of the flat vector
-----------------------------------
Every parameter is stored as ``float32``. This is exact for ``float32``, ``float16`` and
``bfloat16`` parameters, and for integer and boolean buffers (``num_batches_tracked``...)
whose values lie in ``[-2**24, 2**24]``, where every integer is a ``float32``. Nothing is
silently rounded:

- ``float64`` and complex parameters are refused when the spec is built (convert the model
  with ``module.float()`` first);
- an integer value outside ``[-2**24, 2**24]`` is refused by :meth:`ParamSpec.flatten`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from velocity.errors import ValidationError

__all__ = ["ParamSpec", "tensor_digest"]

#: Largest magnitude up to which every integer is exactly representable in float32.
MAX_EXACT_INT = 2**24

_FLOAT_DTYPES = frozenset({torch.float32, torch.float16, torch.bfloat16})
_INT_DTYPES = frozenset(
    {
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.uint16,
        torch.uint32,
        torch.uint64,
    }
)
# Integer dtypes whose every value already fits exactly in float32.
_SMALL_INT_DTYPES = frozenset({torch.bool, torch.uint8, torch.int8, torch.int16, torch.uint16})
_SUPPORTED_DTYPES = _FLOAT_DTYPES | _INT_DTYPES


def _check_dtype(name: str, dtype: torch.dtype) -> None:
    if dtype in _SUPPORTED_DTYPES:
        return
    if dtype == torch.float64:
        raise ValidationError(
            f"parameter {name!r} is float64, which does not fit in the float32 flat vector "
            "without rounding; convert the model to float32 first (module.float())"
        )
    raise ValidationError(
        f"parameter {name!r} has unsupported dtype {dtype}; supported: float32, float16, "
        "bfloat16 and integer/bool buffers"
    )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class ParamSpec:
    """Layout of a model's parameters in one flat ``float32`` vector.

    Parameters are laid out one after the other in ``names`` order, each flattened in
    row-major (C) order. ``offsets[i]`` is where parameter ``i`` starts; ``d`` is the total
    number of entries.

    Parameters
    ----------
    names : tuple of str
        Parameter names, in layout order. Must be unique.
    shapes : tuple of tuple of int
        Shape of each parameter.
    dtypes : tuple of torch.dtype
        Dtype of each parameter: float32, float16, bfloat16, or an integer/bool type
        (see the module docstring for the exactness contract). Defaults to float32 for all.

    Examples
    --------
    >>> spec = ParamSpec(("w", "b"), ((2, 3), (3,)))
    >>> spec.d, spec.offsets
    (9, (0, 6))
    >>> sd = {"w": torch.ones(2, 3), "b": torch.arange(3.0)}
    >>> vec = spec.flatten(sd)
    >>> vec.tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 2.0]
    >>> spec.unflatten(vec)["b"]
    tensor([0., 1., 2.])
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...] = ()
    offsets: tuple[int, ...] = field(init=False)
    d: int = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(self.names)
        shapes = tuple(tuple(int(s) for s in shape) for shape in self.shapes)
        dtypes = tuple(self.dtypes) if self.dtypes else (torch.float32,) * len(names)
        if not (len(names) == len(shapes) == len(dtypes)):
            raise ValidationError(
                f"ParamSpec needs one shape and one dtype per name; got {len(names)} names, "
                f"{len(shapes)} shapes, {len(dtypes)} dtypes"
            )
        seen: set[str] = set()
        for name, shape, dtype in zip(names, shapes, dtypes, strict=True):
            if not isinstance(name, str):
                raise ValidationError(f"parameter names must be str; got {name!r}")
            if name in seen:
                raise ValidationError(f"parameter name {name!r} appears twice")
            seen.add(name)
            if any(s < 0 for s in shape):
                raise ValidationError(f"parameter {name!r} has a negative dimension: {shape}")
            _check_dtype(name, dtype)
        offsets: list[int] = []
        total = 0
        for shape in shapes:
            offsets.append(total)
            total += math.prod(shape)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "dtypes", dtypes)
        object.__setattr__(self, "offsets", tuple(offsets))
        object.__setattr__(self, "d", total)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor]) -> ParamSpec:
        """Build the spec of a state dict, in its iteration order.

        Examples
        --------
        >>> ParamSpec.from_state_dict({"w": torch.zeros(2, 2), "n": torch.tensor(0)})
        ParamSpec(names=('w', 'n'), shapes=((2, 2), ()), dtypes=(torch.float32, torch.int64), offsets=(0, 4), d=5)
        """  # noqa: E501
        names: list[str] = []
        shapes: list[tuple[int, ...]] = []
        dtypes: list[torch.dtype] = []
        for name, tensor in state_dict.items():
            if not isinstance(tensor, Tensor):
                raise ValidationError(
                    f"parameter {name!r} must be a torch.Tensor; got {type(tensor).__name__}"
                )
            names.append(name)
            shapes.append(tuple(tensor.shape))
            dtypes.append(tensor.dtype)
        return cls(tuple(names), tuple(shapes), tuple(dtypes))

    @classmethod
    def from_module(cls, module: torch.nn.Module) -> ParamSpec:
        """Build the spec of ``module.state_dict()`` (parameters and persistent buffers).

        Examples
        --------
        >>> ParamSpec.from_module(torch.nn.Linear(3, 2)).names
        ('weight', 'bias')
        """
        return cls.from_state_dict(module.state_dict())

    @classmethod
    def from_sizes(cls, sizes: Mapping[str, int]) -> ParamSpec:
        """Build a spec of flat float32 parameters from ``{name: number of entries}``.

        This is the seed's ``layer_shapes: dict[str, int]`` form.

        Examples
        --------
        >>> ParamSpec.from_sizes({"layer1": 4, "layer2": 2}).d
        6
        """
        return cls(tuple(sizes), tuple((int(n),) for n in sizes.values()))

    # ------------------------------------------------------------------ properties

    @property
    def sizes(self) -> dict[str, int]:
        """``{name: number of entries}``, in layout order."""
        return {name: math.prod(shape) for name, shape in zip(self.names, self.shapes, strict=True)}

    def __len__(self) -> int:
        return len(self.names)

    def digest(self) -> str:
        """SHA-256 (hex) of the layout: names, shapes and dtypes, in order.

        Two specs have the same digest exactly when they are equal.

        Examples
        --------
        >>> len(ParamSpec.from_sizes({"w": 3}).digest())
        64
        """
        layout = [
            [name, list(shape), _dtype_name(dtype)]
            for name, shape, dtype in zip(self.names, self.shapes, self.dtypes, strict=True)
        ]
        blob = json.dumps(layout, separators=(",", ":"), ensure_ascii=True).encode()
        return hashlib.sha256(blob).hexdigest()

    # ------------------------------------------------------------------ vectors

    def stack(self, n: int, *, device: torch.device | str | None = None) -> Tensor:
        """Preallocate the round's ``(n, d)`` float32 update stack (uninitialized).

        Every row must be written (e.g. ``spec.flatten(sd, out=stack[i])``) before use.

        Examples
        --------
        >>> ParamSpec.from_sizes({"w": 3}).stack(4).shape
        torch.Size([4, 3])
        """
        if n < 0:
            raise ValidationError(f"stack needs n >= 0; got n={n}")
        return torch.empty((n, self.d), dtype=torch.float32, device=device)

    def _check_names(self, keys: Iterable[str], what: str) -> None:
        keys = list(keys)
        if keys == list(self.names):
            return
        key_set, name_set = set(keys), set(self.names)
        missing = [n for n in self.names if n not in key_set]
        unexpected = [k for k in keys if k not in name_set]
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unexpected:
            parts.append(f"unexpected {unexpected}")
        if parts:
            raise ValidationError(f"{what} does not match the ParamSpec: " + "; ".join(parts))

    def flatten(self, state_dict: Mapping[str, Tensor], out: Tensor | None = None) -> Tensor:
        """Write a state dict (or a dict of per-parameter deltas) into one flat vector.

        Parameters
        ----------
        state_dict : mapping of str to Tensor
            Exactly the spec's names (any order) with the spec's shapes. Any supported dtype
            is accepted and converted to float32 (a float32 delta for an integer buffer is
            fine); float64 tensors and integers outside ``[-2**24, 2**24]`` are refused.
        out : Tensor, optional
            A 1-D float32 tensor of length ``d`` to write into, e.g. row ``i`` of
            :meth:`stack`. It is written in place, with no intermediate copy.

        Returns
        -------
        Tensor
            ``out`` if given, else a new float32 ``(d,)`` tensor on the first tensor's device.

        Raises
        ------
        ValidationError
            Names, shapes or dtypes do not fit; the message names the parameter.

        Examples
        --------
        >>> spec = ParamSpec.from_sizes({"a": 2, "b": 1})
        >>> rows = torch.zeros(2, spec.d)
        >>> _ = spec.flatten({"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0])}, out=rows[1])
        >>> rows
        tensor([[0., 0., 0.],
                [1., 2., 3.]])
        """
        self._check_names(state_dict.keys(), "state dict")
        for name, shape in zip(self.names, self.shapes, strict=True):
            tensor = state_dict[name]
            if not isinstance(tensor, Tensor):
                raise ValidationError(
                    f"parameter {name!r} must be a torch.Tensor; got {type(tensor).__name__}"
                )
            if tuple(tensor.shape) != shape:
                raise ValidationError(
                    f"parameter {name!r} has shape {tuple(tensor.shape)}; expected {shape}"
                )
            if tensor.dtype not in _SUPPORTED_DTYPES:
                _check_dtype(name, tensor.dtype)
            if tensor.dtype in _INT_DTYPES and tensor.dtype not in _SMALL_INT_DTYPES:
                self._check_int_range(name, tensor)
        if out is None:
            device = next(iter(state_dict.values())).device if state_dict else None
            out = torch.empty(self.d, dtype=torch.float32, device=device)
        elif out.dtype != torch.float32 or out.dim() != 1 or out.shape[0] != self.d:
            raise ValidationError(
                f"out must be a float32 tensor of shape ({self.d},); "
                f"got {out.dtype} of shape {tuple(out.shape)}"
            )
        for name, offset, shape in zip(self.names, self.offsets, self.shapes, strict=True):
            size = math.prod(shape)
            out[offset : offset + size].copy_(state_dict[name].detach().reshape(-1))
        return out

    @staticmethod
    def _check_int_range(name: str, tensor: Tensor) -> None:
        if tensor.numel() == 0:
            return
        too_big = bool((tensor > MAX_EXACT_INT).any())
        if not too_big and tensor.dtype not in (torch.uint32, torch.uint64):
            too_big = bool((tensor < -MAX_EXACT_INT).any())
        if too_big:
            raise ValidationError(
                f"parameter {name!r} ({_dtype_name(tensor.dtype)}) holds an integer outside "
                f"[-2**24, 2**24], which float32 cannot represent exactly"
            )

    def _check_vector(self, vec: Tensor) -> None:
        if not isinstance(vec, Tensor):
            raise ValidationError(f"expected a torch.Tensor; got {type(vec).__name__}")
        if vec.dim() != 1 or vec.shape[0] != self.d:
            raise ValidationError(f"flat vector has shape {tuple(vec.shape)}; expected ({self.d},)")

    def unflatten(self, vec: Tensor) -> dict[str, Tensor]:
        """Split a flat ``(d,)`` vector back into ``{name: tensor}``.

        Parameters whose spec dtype equals ``vec.dtype`` (float32 for a vector from
        :meth:`flatten`) are *views* into ``vec`` — no copy; writing to them writes to
        ``vec``. Other parameters are converted copies: floating types by a cast, integer
        and bool types by rounding to the nearest integer and clamping to the dtype's range
        (exact for values that came from :meth:`flatten`).

        Examples
        --------
        >>> spec = ParamSpec(("w", "n"), ((2,), ()), (torch.float32, torch.int64))
        >>> vec = torch.tensor([0.5, 1.5, 7.0])
        >>> out = spec.unflatten(vec)
        >>> out["n"]
        tensor(7)
        >>> out["w"].data_ptr() == vec.data_ptr()
        True
        """
        self._check_vector(vec)
        result: dict[str, Tensor] = {}
        for name, offset, shape, dtype in zip(
            self.names, self.offsets, self.shapes, self.dtypes, strict=True
        ):
            piece = vec[offset : offset + math.prod(shape)].reshape(shape)
            if dtype == vec.dtype:
                result[name] = piece
            elif dtype in _FLOAT_DTYPES:
                result[name] = piece.to(dtype)
            elif dtype == torch.bool:
                result[name] = piece.round() != 0
            else:
                info = torch.iinfo(dtype)
                rounded = piece.to(torch.float64).round().clamp(info.min, info.max)
                result[name] = rounded.to(dtype)
        return result

    def to_lists(self, vec: Tensor) -> dict[str, list[float]]:
        """The seed's ``dict[str, list[float]]`` form: each parameter as a flat list.

        Examples
        --------
        >>> ParamSpec.from_sizes({"a": 2, "b": 1}).to_lists(torch.tensor([1.0, 2.0, 3.0]))
        {'a': [1.0, 2.0], 'b': [3.0]}
        """
        self._check_vector(vec)
        flat = vec.detach().to("cpu", torch.float32)
        return {
            name: flat[offset : offset + math.prod(shape)].tolist()
            for name, offset, shape in zip(self.names, self.offsets, self.shapes, strict=True)
        }

    def from_lists(
        self,
        lists: Mapping[str, Sequence[float]],
        *,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Inverse of :meth:`to_lists`: a float32 ``(d,)`` vector.

        Python floats are rounded to the nearest float32 (exact for lists produced by
        :meth:`to_lists`). Each list must have the parameter's number of entries.

        Examples
        --------
        >>> spec = ParamSpec.from_sizes({"a": 2, "b": 1})
        >>> spec.from_lists({"a": [1.0, 2.0], "b": [3.0]})
        tensor([1., 2., 3.])
        """
        self._check_names(lists.keys(), "weights dict")
        out = torch.empty(self.d, dtype=torch.float32)
        for name, offset, shape in zip(self.names, self.offsets, self.shapes, strict=True):
            size = math.prod(shape)
            values = lists[name]
            if len(values) != size:
                raise ValidationError(
                    f"parameter {name!r} has {len(values)} values; expected {size}"
                )
            out[offset : offset + size] = torch.as_tensor(values, dtype=torch.float32)
        return out if device is None else out.to(device)


# ---------------------------------------------------------------------- helpers


def tensor_digest(tensor: Tensor) -> str:
    """SHA-256 (hex) of ``tensor`` as little-endian float32 bytes (updates, global models)."""
    array = tensor.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.sha256(array.astype("<f4", copy=False).tobytes()).hexdigest()


def _check_count(owner: str, name: str, value: object) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool | np.bool_):
        raise ValidationError(f"{owner}.{name} must be an int; got {value!r}")
    number = int(value)
    if number < 0:
        raise ValidationError(f"{owner}.{name} must be >= 0; got {number}")
    return number


def _optional_float(owner: str, name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValidationError(f"{owner}.{name} must be a float or None; got {value!r}")
    return float(value)


def _json_value(value: Any) -> Any:
    """Convert ``value`` to plain JSON types (dict, list, str, int, float, bool, None)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _json_value(dataclasses.asdict(value))
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return _json_value(to_dict())
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_value(v) for v in value]
    raise ValidationError(f"cannot represent {type(value).__name__} value {value!r} as JSON")


def _frozen_mapping(owner: str, name: str, value: Any) -> Mapping[str, Any]:
    converted = _json_value(value)
    if not isinstance(converted, dict):
        raise ValidationError(f"{owner}.{name} must be a mapping; got {type(value).__name__}")
    return MappingProxyType(converted)


_EMPTY: Mapping[str, Any] = MappingProxyType({})
