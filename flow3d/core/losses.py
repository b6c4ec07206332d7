"""Flow-matching regression losses on the velocity, with time weights and masks.

``velocity_loss(pred, target)`` is ``E_t w(t) d(v_theta(x_t, t), dx_t)`` for a per-sample
discrepancy ``d``: the squared error (Lipman et al. 2023, Eq. 9) or the pseudo-Huber distance
``sqrt(||v - u||^2 + c^2) - c`` (Song & Dhariwal 2023, "Improved Techniques for Training
Consistency Models"; Lee, Lin & Fanti 2024 use it for reflow).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flow3d.errors import ConfigError

__all__ = ["LOSS_KINDS", "TIME_WEIGHTS", "time_weight", "velocity_loss"]

LOSS_KINDS = ("mse", "pseudo_huber")
TIME_WEIGHTS = ("none", "x1", "x0", "min_snr")


def _expand_mask(mask: Tensor, like: Tensor) -> Tensor:
    """``mask: [B, ...]`` (a prefix of ``like``'s shape) -> float ``[B, ...]`` like ``like``."""
    if mask.shape != like.shape[: mask.ndim]:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} is not a prefix of {tuple(like.shape)}"
        )
    mask = mask.to(like.dtype).reshape(*mask.shape, *([1] * (like.ndim - mask.ndim)))
    return mask.expand_as(like)


def velocity_loss(
    pred: Tensor,
    target: Tensor,
    *,
    kind: str = "mse",
    mask: Tensor | None = None,
    weight: Tensor | None = None,
    huber_c: float | None = None,
) -> Tensor:
    """Scalar loss between predicted and target velocities ``[B, ...]``.

    - ``kind="mse"``: mean squared error over the unmasked entries,
      ``sum_b w_b sum_i m_bi (p - u)_bi^2 / sum_bi m_bi``.
    - ``kind="pseudo_huber"``: per sample ``sqrt(sum_i m_bi (p - u)_bi^2 + c^2) - c`` averaged
      over the batch (weighted by ``w_b``); ``c`` defaults to ``0.00054 sqrt(d)`` with ``d``
      the number of unmasked entries of the sample (Song & Dhariwal 2023, Sec. 3.3).
    - ``mask``: ``[B, ...]`` with a prefix of ``pred``'s shape (e.g. ``[B, N]`` for
      ``[B, N, 3]``), true/1 where the entry counts; broadcast over the trailing axes.
    - ``weight``: ``[B]`` per-sample time weights (:func:`time_weight`).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if kind not in LOSS_KINDS:
        raise ConfigError(f"unknown loss kind {kind!r}; choose from {LOSS_KINDS}")
    batch = pred.shape[0]
    sq = (pred - target).square()  # [B, ...]
    m = torch.ones_like(sq) if mask is None else _expand_mask(mask, sq)
    w = torch.ones(batch, dtype=sq.dtype, device=sq.device) if weight is None else weight
    if w.shape != (batch,):
        raise ValueError(f"weight must have shape [B={batch}], got {tuple(w.shape)}")
    w = w.to(sq.dtype)
    per_sample_sq = (sq * m).reshape(batch, -1).sum(1)  # [B]
    if kind == "mse":
        return (w * per_sample_sq).sum() / m.sum().clamp_min(1.0)
    count = m.reshape(batch, -1).sum(1)  # [B]
    c = 0.00054 * count.sqrt() if huber_c is None else torch.full_like(count, float(huber_c))
    # sqrt(d + c^2) - c written without cancellation (c may dwarf d in float32)
    per_sample = per_sample_sq / (torch.sqrt(per_sample_sq + c.square()) + c)  # [B]
    return (w * per_sample).mean()


def time_weight(t: Tensor, kind: str = "none", *, gamma: float = 5.0) -> Tensor:
    """Per-sample weights ``[B]`` for the linear (rectified-flow) path.

    Since ``v - v_hat = (x_1 - x1_hat) / (1 - t) = (x_0 - x0_hat) / (-t)``:

    - ``"none"``: 1 (plain velocity loss),
    - ``"x1"``: ``(1 - t)^2`` makes it the data-prediction loss ``||x_1 - x1_hat||^2``,
    - ``"x0"``: ``t^2`` makes it the noise-prediction loss,
    - ``"min_snr"``: Min-SNR-gamma (Hang et al. 2023) on the data loss,
      ``min(snr, gamma) (1 - t)^2`` with ``snr = t^2 / (1 - t)^2``, i.e.
      ``min(t^2, gamma (1 - t)^2)``.
    """
    if kind == "none":
        return torch.ones_like(t)
    if kind == "x1":
        return (1.0 - t).square()
    if kind == "x0":
        return t.square()
    if kind == "min_snr":
        if gamma <= 0 or not math.isfinite(gamma):
            raise ConfigError(f"min_snr gamma must be a positive number, got {gamma}")
        return torch.minimum(t.square(), gamma * (1.0 - t).square())
    raise ConfigError(f"unknown time weight {kind!r}; choose from {TIME_WEIGHTS}")
