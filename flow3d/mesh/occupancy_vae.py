"""A small 3D-conv VAE of the active-voxel occupancy: 32^3 -> 8^3 x 8 -> 32^3 (TRELLIS's
sparse-structure VAE, Xiang et al. 2024, at our grid size).

The structure flow learns far better on this smooth, low-dimensional latent than on the
occupancy itself: a shell two or three voxels thin is a high-frequency signal, and a flow over
its raw patches produced fragmented confetti after 1,000 CPU steps (docs/benchmarks.md), while
the decoder's convolutions turn any latent into coherent shells.

encoder: conv 3^3 -> two stride-2 stages (GroupNorm + SiLU) -> a diagonal Gaussian
``[B, C, R/4, R/4, R/4]``; decoder: the mirror with transposed convolutions -> occupancy
logits ``[B, 1, R, R, R]``. Loss: binary cross-entropy (positives weighted, the shell is ~10%
of the grid) + soft Dice + a small KL; per-channel statistics of the posterior means are kept
(``latent_mean``/``latent_std``, running, like the sparse VAE's) to standardise the latent
for a flow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OccupancyVAE", "occupancy_vae_loss"]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU())


class OccupancyVAE(nn.Module):
    """``encode(occ [B, 1, R, R, R]) -> (z, mu, logvar)`` with ``z: [B, C, R/4, R/4, R/4]``;
    ``decode(z) -> logits [B, 1, R, R, R]``."""

    def __init__(self, resolution: int = 32, latent_dim: int = 8, width: int = 32):
        super().__init__()
        if resolution % 4:
            raise ValueError(f"resolution {resolution} must be a multiple of 4")
        self.resolution, self.latent_dim = resolution, latent_dim
        w = width
        self.enc = nn.Sequential(
            _block(1, w),
            nn.Conv3d(w, 2 * w, 4, stride=2, padding=1), nn.GroupNorm(8, 2 * w), nn.SiLU(),
            _block(2 * w, 2 * w),
            nn.Conv3d(2 * w, 4 * w, 4, stride=2, padding=1), nn.GroupNorm(8, 4 * w), nn.SiLU(),
            _block(4 * w, 4 * w),
            nn.Conv3d(4 * w, 2 * latent_dim, 1),
        )
        self.dec = nn.Sequential(
            _block(latent_dim, 4 * w), _block(4 * w, 4 * w),
            nn.ConvTranspose3d(4 * w, 2 * w, 4, stride=2, padding=1), nn.GroupNorm(8, 2 * w),
            nn.SiLU(), _block(2 * w, 2 * w),
            nn.ConvTranspose3d(2 * w, w, 4, stride=2, padding=1), nn.GroupNorm(8, w), nn.SiLU(),
            _block(w, w), nn.Conv3d(w, 1, 3, padding=1),
        )
        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_std", torch.ones(latent_dim))

    def encode(self, occ: Tensor, *, sample: bool = True,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.enc(occ.float() * 2 - 1).chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        if not sample:
            return mu, mu, logvar
        eps = torch.randn(mu.shape, generator=generator,
                          device=generator.device if generator is not None else mu.device)
        return mu + (0.5 * logvar).exp() * eps.to(mu), mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        return self.dec(z)

    # ---- the flow's view: standardised tokens [B, (R/4)^3, C] ----------------------------------
    def to_tokens(self, occ: Tensor) -> Tensor:
        """Occupancy ``[B, R, R, R]`` bool -> standardised mean latents ``[B, T, C]``."""
        with torch.no_grad():
            _, mu, _ = self.encode(occ[:, None], sample=False)
        x = (mu - self.latent_mean[:, None, None, None]) / self.latent_std[:, None, None, None]
        return x.flatten(2).transpose(1, 2)

    def from_tokens(self, x: Tensor) -> Tensor:
        """Standardised tokens ``[B, T, C]`` -> occupancy ``[B, R, R, R]`` bool (logit > 0)."""
        n = self.resolution // 4
        z = x.transpose(1, 2).reshape(x.shape[0], self.latent_dim, n, n, n)
        z = z * self.latent_std[:, None, None, None] + self.latent_mean[:, None, None, None]
        with torch.no_grad():
            return self.decode(z)[:, 0] > 0


def occupancy_vae_loss(model: OccupancyVAE, occ: Tensor, *, generator=None, kl: float = 1e-4,
                       stats_momentum: float = 0.01) -> dict[str, Tensor]:
    """BCE (positives weighted by the negative/positive ratio, at most 10) + soft Dice + KL on
    occupancies ``[B, R, R, R]``; updates the running latent statistics in training."""
    target = occ.float()[:, None]
    z, mu, logvar = model.encode(occ[:, None], generator=generator)
    logits = model.decode(z)
    pos = target.mean().clamp_min(1e-4)
    weight = ((1 - pos) / pos).clamp(max=10.0)
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
    p = logits.sigmoid()
    dice = 1 - (2 * (p * target).sum((1, 2, 3, 4)) + 1) / (p.sum((1, 2, 3, 4))
                                                           + target.sum((1, 2, 3, 4)) + 1)
    kl_term = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1).mean()
    with torch.no_grad():
        pred = logits > 0
        t = target > 0.5
        iou = ((pred & t).sum() / (pred | t).sum().clamp_min(1)).float()
    if model.training and stats_momentum > 0:
        with torch.no_grad():
            m = mu.transpose(0, 1).reshape(model.latent_dim, -1)
            model.latent_mean.lerp_(m.mean(1), stats_momentum)
            model.latent_std.lerp_(m.std(1).clamp_min(1e-6), stats_momentum)
    loss = bce + dice.mean() + kl * kl_term
    return {"loss": loss, "bce": bce.detach(), "dice": dice.mean().detach(),
            "kl": kl_term.detach(), "iou": iou}
