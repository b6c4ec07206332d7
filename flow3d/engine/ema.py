"""Exponential moving average of model weights, with the usual warm-up of the decay.

    theta_ema <- d * theta_ema + (1 - d) * theta,   d_k = min(decay, (1 + k) / (10 + k))

The warm-up (Tensorflow's ``ExponentialMovingAverage(num_updates=...)``, used by DDPM/EDM
trainers) lets the average follow the fast early changes instead of remembering the random
initialisation for ~1 / (1 - decay) steps.
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """A float32 shadow copy of a module's parameters and buffers (no gradients)."""

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ema decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.shadow: dict[str, torch.Tensor] = {
            k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
            for k, v in model.state_dict().items()
        }

    def decay_at(self, step: int) -> float:
        """The decay used for the update after optimiser step ``step`` (0-based)."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self.decay_at(step)
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.lerp_(v.detach().to(s.device, torch.float32), 1.0 - d)
            else:  # integer buffers (counters) are copied
                s.copy_(v)

    def to(self, device: torch.device | str) -> EMA:
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise KeyError(f"EMA state keys differ from the model's: {sorted(missing)[:5]}")
        for k, v in state.items():
            self.shadow[k].copy_(v)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (cast to its dtypes)."""
        model.load_state_dict({k: v for k, v in self.shadow.items()}, strict=True)
