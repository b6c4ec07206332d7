"""Image metrics and losses for splat fitting: PSNR, SSIM (Wang et al. 2004, with the 11x11
Gaussian window, sigma 1.5, of the 3DGS code) and the 3DGS photometric loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32) -> Tensor:
    """Normalised separable window ``[size]``."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return (g / g.sum()).to(dtype)


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM of images ``[..., H, W, C]`` in [0, 1] (local statistics under a Gaussian
    window, zero-padded borders as in the 3DGS code); a scalar, 1 for identical images."""
    c = a.shape[-1]
    x = a.reshape(-1, *a.shape[-3:]).permute(0, 3, 1, 2)  # [B, C, H, W]
    y = b.reshape(-1, *b.shape[-3:]).permute(0, 3, 1, 2)
    g = gaussian_window(window, sigma, a.dtype).to(a.device)
    k = (g[:, None] * g[None, :]).expand(c, 1, window, window).contiguous()

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, k, padding=window // 2, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return (num / den).mean()


def psnr(a: Tensor, b: Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (inf when identical)."""
    mse = float(((a.detach().double() - b.detach().double()) ** 2).mean())
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def photometric_loss(rendered: Tensor, target: Tensor, ssim_weight: float = 0.2) -> Tensor:
    """3DGS Eq. 7: ``(1 - lambda) L1 + lambda (1 - SSIM)``, lambda = 0.2."""
    l1 = (rendered - target).abs().mean()
    if ssim_weight == 0:
        return l1
    return (1.0 - ssim_weight) * l1 + ssim_weight * (1.0 - ssim(rendered, target))
