"""Per-client geometry of updates and models: divergence and cosine similarity (private).

Every function works in float64 on copies of its inputs (the inputs are never modified) and
returns float64 tensors on the rows' device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from velocity.errors import ValidationError

__all__ = ["cosine_similarity", "update_divergence", "weight_divergence"]


def _vector(value: object, name: str, owner: str) -> Tensor:
    """``value`` as a float64 ``(d,)`` tensor (d >= 1), or a ValidationError naming ``name``."""
    if not isinstance(value, Tensor):
        raise ValidationError(
            f"{owner}: {name} must be a torch.Tensor of shape (d,); got {type(value).__name__}"
        )
    if value.ndim != 1 or value.shape[0] < 1:
        raise ValidationError(
            f"{owner}: {name} must have shape (d,) with d >= 1; got shape {tuple(value.shape)}"
        )
    if not value.is_floating_point():
        raise ValidationError(f"{owner}: {name} must have a floating dtype; got {value.dtype}")
    return value.detach().to(torch.float64)


def _rows(value: object, name: str, owner: str, d: int) -> tuple[Tensor, bool]:
    """``value`` as a float64 ``(n, d)`` tensor, and whether it was given as one ``(d,)`` row."""
    if not isinstance(value, Tensor):
        raise ValidationError(
            f"{owner}: {name} must be a torch.Tensor of shape (n, {d}) or ({d},); "
            f"got {type(value).__name__}"
        )
    single = value.ndim == 1
    rows = value[None, :] if single else value
    if rows.ndim != 2 or rows.shape[1] != d or rows.shape[0] < 1:
        raise ValidationError(
            f"{owner}: {name} must have shape (n, {d}) with n >= 1, or ({d},), to match the "
            f"reference's d={d}; got shape {tuple(value.shape)}"
        )
    if not rows.is_floating_point():
        raise ValidationError(f"{owner}: {name} must have a floating dtype; got {value.dtype}")
    return rows.detach().to(torch.float64), single


def _relative_distance(rows: Tensor, reference: Tensor) -> Tensor:
    """``‖rows_k − reference‖ / ‖reference‖`` per row; the absolute distance when the
    reference is the zero vector."""
    reference = reference.to(rows.device)
    distance: Tensor = torch.linalg.vector_norm(rows - reference, dim=1)
    scale = float(torch.linalg.vector_norm(reference))
    return distance if scale == 0.0 else distance / scale


def _unit(x: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of the finite ``x (n, d)`` scaled to unit norm (scaled by their largest entry
    first, so no norm overflows), and which rows are nonzero; zero rows stay zero."""
    peak = x.abs().amax(dim=1)
    nonzero = peak > 0
    scaled = x / torch.where(nonzero, peak, torch.ones_like(peak))[:, None]
    norms = torch.linalg.vector_norm(scaled, dim=1)
    return scaled / torch.where(nonzero, norms, torch.ones_like(norms))[:, None], nonzero


def weight_divergence(client_params: Tensor, global_params: Tensor) -> Tensor:
    r"""Weight divergence of client models from a global model.

    .. math:: \mathrm{WD}_k = \frac{\lVert w_k - w_g \rVert_2}{\lVert w_g \rVert_2}

    Zhao, Li, Lai, Suda & Chandra 2018, "Federated Learning with Non-IID Data" (their Figure
    2 measures it between FedAvg and centralized SGD models). When :math:`w_g = 0` the ratio
    is undefined; this function then returns the absolute distance
    :math:`\lVert w_k \rVert_2` (a zero model has no scale to be relative to, and the
    absolute distance is still 0 exactly when the models agree). Non-finite entries
    propagate: a row holding ±inf gives inf, one holding NaN gives NaN.

    Parameters
    ----------
    client_params : Tensor, shape (n, d) or (d,)
        Flat client models, one per row (a single model may be given as one vector).
    global_params : Tensor, shape (d,)
        The flat global model.

    Returns
    -------
    Tensor
        float64, shape ``(n,)`` (shape ``()`` when ``client_params`` is one vector), on
        ``client_params``' device.

    Examples
    --------
    >>> import torch
    >>> g = torch.tensor([3.0, 4.0])
    >>> weight_divergence(torch.tensor([[3.0, 4.0], [0.0, 4.0]]), g).tolist()
    [0.0, 0.6]
    >>> weight_divergence(torch.tensor([3.0, 4.0]), torch.zeros(2)).item()  # absolute norm
    5.0
    """
    owner = "weight_divergence"
    reference = _vector(global_params, "global_params", owner)
    rows, single = _rows(client_params, "client_params", owner, reference.shape[0])
    out = _relative_distance(rows, reference)
    return out[0] if single else out


def update_divergence(rows: Tensor, aggregate: Tensor) -> Tensor:
    r"""How far each client's update lies from the round's aggregate, relative to it.

    .. math:: \mathrm{UD}_k = \frac{\lVert \Delta_k - \Delta \rVert_2}{\lVert \Delta \rVert_2}

    with :math:`\Delta_k` client k's update (``new − global`` parameters) and :math:`\Delta`
    the aggregated update: :func:`weight_divergence` of the models :math:`w^t + \Delta_k`
    against :math:`w^t + \Delta`, measured relative to the step instead of the model. When
    :math:`\Delta = 0` the absolute distance :math:`\lVert \Delta_k \rVert_2` is returned
    (as in :func:`weight_divergence`). Non-finite entries propagate.

    Parameters
    ----------
    rows : Tensor, shape (n, d) or (d,)
        The clients' updates.
    aggregate : Tensor, shape (d,)
        The aggregated update.

    Returns
    -------
    Tensor
        float64, shape ``(n,)`` (``()`` for one update), on ``rows``' device.

    Examples
    --------
    >>> import torch
    >>> update_divergence(torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([2.0, 0.0])).tolist()
    [0.5, 0.5]
    """
    owner = "update_divergence"
    reference = _vector(aggregate, "aggregate", owner)
    stack, single = _rows(rows, "rows", owner, reference.shape[0])
    out = _relative_distance(stack, reference)
    return out[0] if single else out


def cosine_similarity(rows: Tensor, reference: Tensor) -> Tensor:
    r"""Cosine similarity of every row with a reference vector.

    .. math:: \cos_k = \frac{\langle x_k, r \rangle}{\lVert x_k \rVert_2 \lVert r \rVert_2}
        \in [-1, 1]

    The angle-based view of client agreement used, e.g., by FLTrust (Cao, Fang, Liu & Gong
    2021, "FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping") and FoolsGold
    (Fung, Yoon & Beschastnikh 2020). Computed in float64 from unit vectors and clamped to
    [-1, 1] against rounding. Conventions: a zero row, or a zero reference, has no direction
    and gets ``0.0`` (orthogonal to everything); a row holding NaN or ±inf gets NaN (every
    row gets NaN when the reference does).

    Parameters
    ----------
    rows : Tensor, shape (n, d) or (d,)
    reference : Tensor, shape (d,)

    Returns
    -------
    Tensor
        float64, shape ``(n,)`` (``()`` for one row), on ``rows``' device.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [0.0, 0.0]])
    >>> cosine_similarity(x, torch.tensor([1.0, 0.0])).tolist()
    [1.0, 0.0, -1.0, 0.0]
    """
    owner = "cosine_similarity"
    ref = _vector(reference, "reference", owner)
    stack, single = _rows(rows, "rows", owner, ref.shape[0])
    ref = ref.to(stack.device)
    ref_finite = bool(torch.isfinite(ref).all())
    finite = torch.isfinite(stack).all(dim=1) & ref_finite
    unit_rows, row_directed = _unit(torch.where(finite[:, None], stack, 0.0))
    unit_ref, ref_directed = _unit((ref if ref_finite else torch.zeros_like(ref))[None, :])
    cos = (unit_rows @ unit_ref[0]).clamp(-1.0, 1.0)
    cos = torch.where(row_directed & ref_directed[0], cos, torch.zeros_like(cos))
    cos = torch.where(finite, cos, torch.full_like(cos, torch.nan))
    return cos[0] if single else cos
