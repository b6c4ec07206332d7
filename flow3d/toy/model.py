"""A small MLP velocity field ``v_theta(x, t)`` for 2D toy data."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["TimeEmbedding", "VelocityMLP"]


class TimeEmbedding(nn.Module):
    """Sinusoidal features of ``t in [0, 1]``: ``[sin(2 pi f t), cos(2 pi f t)]`` for
    log-spaced frequencies ``f`` in [1, max_freq] (Vaswani et al. 2017 / NeRF style)."""

    def __init__(self, num_freqs: int = 16, max_freq: float = 100.0):
        super().__init__()
        freqs = torch.logspace(0, math.log10(max_freq), num_freqs)  # [F]
        self.register_buffer("freqs", 2 * math.pi * freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:  # t: [B] -> [B, 2F]
        angle = t[:, None].float() * self.freqs[None]
        return torch.cat([angle.sin(), angle.cos()], dim=-1)


class VelocityMLP(nn.Module):
    """``v(x, t) = MLP([x, emb(t)])``; ``x: [B, dim]``, ``t`` a scalar or ``[B]``."""

    def __init__(self, dim: int = 2, width: int = 128, depth: int = 3, num_freqs: int = 16):
        super().__init__()
        self.time = TimeEmbedding(num_freqs)
        layers: list[nn.Module] = []
        d_in = dim + 2 * num_freqs
        for _ in range(depth):
            layers += [nn.Linear(d_in, width), nn.SiLU()]
            d_in = width
        layers.append(nn.Linear(d_in, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        return self.net(torch.cat([x, self.time(t).to(x.dtype)], dim=-1))
