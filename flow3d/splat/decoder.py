"""GSDecoder: pixel-aligned 3D Gaussians from posed views (images + depths + camera rays).

SplatFlow's feed-forward decoder, at a size this CPU trains. Each view's pixels carry colour,
depth and their Plücker ray (:func:`flow3d.splat.rays.plucker_rays`), 10 channels:

    x = [rgb (black where there is no depth) | disparity | ray direction d | moment o x d]

with ``disparity = (1/z - 1/far) / (1/near - 1/far)`` in (0, 1] where the depth ``z > 0`` and 0
on the background. A patch embedding (``patch``^2 pixels per token), a transformer with joint
attention over the tokens of *all* views (cross-view attention), and a per-pixel head (the
tokens unpatchified beside a 3x3 convolution of the raw pixels) give 14 numbers per pixel:

* depth ``z' = z exp(0.1 tanh(p_0))``, sub-pixel offset ``tanh(p_1:3)`` pixels: the Gaussian's
  centre is the back-projection of the shifted pixel at ``z'``;
* scales ``softplus(p_3:6) z'/f`` (the pixel's footprint), rotation quaternion ``p_6:10 +
  (1, 0, 0, 0)``, opacity ``sigmoid(p_10 + 3)``, colour ``clamp(rgb + p_11:14, 0, 1)`` (SH
  degree 0).

The last layer starts at zero, so an untrained decoder *is* plain unprojection (one opaque
pixel-sized Gaussian per foreground pixel at its depth): the baseline it must beat. Only pixels
with depth become Gaussians (a view's background makes none). Training renders the Gaussians of
some views into the others (:func:`decoder_loss`) with the differentiable rasterizer.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flow3d.options import check_float, check_int
from flow3d.splat import sh
from flow3d.splat.cameras import Cameras
from flow3d.splat.gaussians import Gaussians

__all__ = ["GSDecoder", "GSDecoderConfig", "decode_scene", "depth_from_disparity", "disparity",
           "pixel_gaussians", "view_inputs"]

IN_CHANNELS = 10
NUM_PARAMS = 14
OPACITY_BIAS = 3.0


@dataclasses.dataclass(frozen=True)
class GSDecoderConfig:
    """The ``model`` section of ``recipes/splat/gsdecoder.yaml``."""

    width: int = 128
    depth: int = 4
    heads: int = 4
    patch: int = 4
    pixel_width: int = 32
    near: float = 0.5  # depth normalisation of the disparity channel, scene units
    far: float = 5.0
    eps2d: float = 0.3  # the rasterizer's 2D low-pass (pixels^2) the Gaussians are fitted for

    def __post_init__(self):
        check_int(self.width, "model.width", lo=8, hi=4096)
        check_int(self.depth, "model.depth", lo=0, hi=64)
        check_int(self.heads, "model.heads", lo=1, hi=64)
        if self.width % self.heads:
            raise ValueError(f"model.width = {self.width}: must be divisible by model.heads")
        check_int(self.patch, "model.patch", lo=1, hi=64)
        check_int(self.pixel_width, "model.pixel_width", lo=4, hi=1024)
        check_float(self.near, "model.near", lo=0.0, hi=1e6, lo_open=True)
        check_float(self.far, "model.far", lo=self.near, hi=1e9, lo_open=True)
        check_float(self.eps2d, "model.eps2d", lo=0.0, hi=10.0)

    def render_settings(self):
        """How this decoder's Gaussians are rendered in training and evaluation."""
        from flow3d.splat.settings import RenderSettings

        return RenderSettings(eps2d=self.eps2d)


def disparity(depth: Tensor, near: float, far: float) -> Tensor:
    """``(1/z - 1/far) / (1/near - 1/far)`` where ``depth z > 0`` (1 at ``near``, 0 at
    ``far``), 0 on the background; the inverse of :func:`depth_from_disparity`."""
    inv = (1.0 / depth.clamp_min(1e-6) - 1.0 / far) / (1.0 / near - 1.0 / far)
    return torch.where(depth > 0, inv, torch.zeros_like(depth))


def depth_from_disparity(disp: Tensor, near: float, far: float) -> Tensor:
    """Camera z of a (positive) normalised disparity."""
    return 1.0 / (disp * (1.0 / near - 1.0 / far) + 1.0 / far)


def view_inputs(rgb: Tensor, depth: Tensor, cameras: Cameras, near: float, far: float) -> Tensor:
    """The decoder's input ``[V, 10, H, W]`` from ``rgb [V, H, W, 3]``, ``depth [V, H, W, 1]``
    (0 = background) and the views' cameras (module docstring)."""
    from flow3d.splat.rays import plucker_rays

    present = (depth > 0).to(rgb.dtype)
    pix = torch.cat([rgb * present, disparity(depth, near, far)], dim=-1)
    pix = pix.permute(0, 3, 1, 2)  # [V, 4, H, W]
    rays = plucker_rays(cameras).to(rgb.dtype)  # [V, 6, H, W]
    return torch.cat([pix, rays], dim=1)


def _sincos_2d(h: int, w: int, dim: int) -> Tensor:
    """Fixed 2D sine-cosine position embedding ``[h * w, dim]`` (dim divisible by 4)."""
    q = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(q, dtype=torch.float32) / q))
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                          torch.arange(w, dtype=torch.float32), indexing="ij")
    ay, ax = y.reshape(-1, 1) * freq, x.reshape(-1, 1) * freq
    emb = torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1)
    return F.pad(emb, (0, dim - emb.shape[1]))


class GSDecoder(nn.Module):
    """Views ``[B, V, 10, H, W]`` -> per-pixel Gaussian parameters ``[B, V, 14, H, W]``."""

    def __init__(self, cfg: GSDecoderConfig):
        super().__init__()
        self.cfg = cfg
        w, p = cfg.width, cfg.patch
        self.embed = nn.Conv2d(IN_CHANNELS, w, p, stride=p)
        self.view_embed = nn.Parameter(torch.zeros(w))  # marks tokens of a given view
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(w, cfg.heads, 4 * w, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(w)
        self.unpatch = nn.Linear(w, p * p * cfg.pixel_width)
        self.skip = nn.Conv2d(IN_CHANNELS, cfg.pixel_width, 3, padding=1)
        self.head = nn.Sequential(nn.GELU(), nn.Conv2d(cfg.pixel_width, cfg.pixel_width, 1),
                                  nn.GELU(), nn.Conv2d(cfg.pixel_width, NUM_PARAMS, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        b, v, c, h, w = x.shape
        p, d = self.cfg.patch, self.cfg.width
        if c != IN_CHANNELS or h % p or w % p:
            raise ValueError(f"GSDecoder: input {tuple(x.shape)}: expected [B, V, "
                             f"{IN_CHANNELS}, H, W] with H, W divisible by {p}")
        flat = x.reshape(b * v, c, h, w)
        tok = self.embed(flat).flatten(2).transpose(1, 2)  # [B V, h w / p^2, D]
        tok = tok + _sincos_2d(h // p, w // p, d).to(tok) + self.view_embed
        tok = tok.reshape(b, v * tok.shape[1], d)  # joint attention over every view
        for block in self.blocks:
            tok = block(tok)
        tok = self.unpatch(self.norm(tok)).reshape(b * v, h // p, w // p, p, p, -1)
        feat = tok.permute(0, 5, 1, 3, 2, 4).reshape(b * v, -1, h, w)
        out = self.head(feat + self.skip(flat))
        return out.reshape(b, v, NUM_PARAMS, h, w)


def pixel_gaussians(params: Tensor, rgb: Tensor, depth: Tensor, cameras: Cameras) -> Gaussians:
    """One scene's Gaussians from ``params [V, 14, H, W]``, its input ``rgb [V, H, W, 3]``,
    ``depth [V, H, W, 1]`` and cameras: one per pixel with depth (module docstring)."""
    v, _, h, w = params.shape
    keep = depth[..., 0] > 0  # [V, H, W]
    prm = params.permute(0, 2, 3, 1)[keep]  # [N, 14]
    view = torch.arange(v).view(v, 1, 1).expand(v, h, w)[keep]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=params.dtype),
                            torch.arange(w, dtype=params.dtype), indexing="ij")
    px = xs.expand(v, h, w)[keep] + 0.5 + torch.tanh(prm[:, 1])
    py = ys.expand(v, h, w)[keep] + 0.5 + torch.tanh(prm[:, 2])
    z = depth[..., 0][keep] * torch.exp(0.1 * torch.tanh(prm[:, 0]))
    k = cameras.K.to(params)[view]  # [N, 3, 3]
    cam = torch.stack([(px - k[:, 0, 2]) / k[:, 0, 0] * z, (py - k[:, 1, 2]) / k[:, 1, 1] * z,
                       z], dim=-1)
    vm = cameras.viewmats.to(params)[view]
    rot, t = vm[:, :3, :3], vm[:, :3, 3]
    means = ((cam - t).unsqueeze(1) @ rot).squeeze(1)  # R^T (x - t), row-vector form
    footprint = (z / k[:, 0, 0]).unsqueeze(-1)
    log_scales = torch.log(F.softplus(prm[:, 3:6]) * footprint + 1e-8)
    quats = prm[:, 6:10] + torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=params.dtype)
    colors = (rgb[keep] + prm[:, 11:14]).clamp(0.0, 1.0)
    return Gaussians(means, quats, log_scales, prm[:, 10] + OPACITY_BIAS,
                     sh.rgb_to_sh0(colors).unsqueeze(1))


def decode_scene(model: GSDecoder, rgb: Tensor, depth: Tensor, cameras: Cameras) -> Gaussians:
    """Gaussians of one scene from all its views (``rgb [V, H, W, 3]``, ``depth [V, H, W,
    1]``, ``cameras``)."""
    x = view_inputs(rgb, depth, cameras, model.cfg.near, model.cfg.far)
    return pixel_gaussians(model(x.unsqueeze(0))[0], rgb, depth, cameras)

