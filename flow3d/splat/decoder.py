"""GSDecoder: pixel-aligned 3D Gaussians from posed views (images + depths + camera rays).

SplatFlow's feed-forward decoder, at a size this CPU trains. Each view's pixels carry colour,
depth and their Plücker ray (:func:`flow3d.splat.rays.plucker_rays`), 10 channels (11):

    x = [rgb (black where there is no depth) | disparity | (coverage) | ray direction d |
         moment o x d]

with ``disparity = (1/z - 1/far) / (1/near - 1/far)`` in (0, 1] where the depth ``z > 0`` and 0
on the background. With ``coverage: true`` an 11th channel carries each pixel's coverage (the
alpha of an antialiased render, in [0, 1]): at 64^2 a third of an object's pixels are partly
covered, and a decoder that does not know it paints them as opaque, bleeding into the
background. Such a decoder also makes Gaussians at covered pixels whose depth sample missed the
object (their depth taken from the nearest surface among the 8 neighbours), starts their
opacity at the coverage, and reads a binary coverage (``depth > 0``, what a flow generates)
as well: training shows it binary part of the time.

A patch embedding (``patch``^2 pixels per token), a transformer with joint attention over the
tokens of *all* views (cross-view attention), and a per-pixel head (the tokens unpatchified
beside a 3x3 convolution of the raw pixels) give 14 numbers per pixel:

* depth ``z' = z exp(0.1 tanh(p_0))``, sub-pixel offset ``tanh(p_1:3)`` pixels: the Gaussian's
  centre is the back-projection of the shifted pixel at ``z'``;
* scales ``softplus(p_3:6) z'/f`` (the pixel's footprint), rotation quaternion ``p_6:10 +
  (1, 0, 0, 0)``, opacity ``sigmoid(p_10 + 3)`` (``sigmoid(p_10 + logit(coverage))``, the
  coverage clamped to [0.02, sigmoid(3)], with the coverage channel), colour ``clamp(rgb +
  p_11:14, 0, 1)`` (SH degree 0).

The last layer starts at zero, so an untrained decoder *is* plain unprojection (one opaque
pixel-sized Gaussian per foreground pixel at its depth): the baseline it must beat. Only pixels
with depth become Gaussians (a view's background makes none). Training renders the Gaussians of
some views into the others (:func:`decoder_loss`) with the differentiable rasterizer.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flow3d.options import check_float, check_int
from flow3d.splat import sh
from flow3d.splat.cameras import Cameras
from flow3d.splat.gaussians import Gaussians

__all__ = ["GSDecoder", "GSDecoderConfig", "decode_scene", "depth_from_disparity", "decoder_inputs",
           "disparity", "fill_depth", "pixel_gaussians", "view_inputs"]

IN_CHANNELS = 10  # without the coverage channel
NUM_PARAMS = 14
OPACITY_BIAS = 3.0
COVERAGE_RANGE = (0.02, 1.0 / (1.0 + math.exp(-OPACITY_BIAS)))  # opacity starts at the
# coverage clamped to this (the top: opacity logit OPACITY_BIAS, as without coverage)


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
    coverage: bool = False  # an 11th input channel: each pixel's coverage (module docstring)

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

    @property
    def in_channels(self) -> int:
        return IN_CHANNELS + int(self.coverage)

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


def fill_depth(depth: Tensor, coverage: Tensor) -> Tensor:
    """``depth [V, H, W, 1]`` with each covered pixel that has no depth (``coverage > 0``,
    ``depth == 0``: its depth sample missed the object) given the nearest depth among its 8
    neighbours; pixels with no neighbour's depth either stay at 0."""
    d = depth.permute(0, 3, 1, 2)
    far = torch.where(d > 0, d, torch.full_like(d, float("inf")))
    nearest = -F.max_pool2d(-far, 3, stride=1, padding=1)
    nearest = torch.where(torch.isfinite(nearest), nearest, torch.zeros_like(nearest))
    missing = (coverage.permute(0, 3, 1, 2) > 0) & (d <= 0)
    return torch.where(missing, nearest, d).permute(0, 2, 3, 1)


def view_inputs(rgb: Tensor, depth: Tensor, cameras: Cameras, near: float, far: float,
                coverage: Tensor | None = None) -> Tensor:
    """The decoder's input ``[V, 10 or 11, H, W]`` from ``rgb [V, H, W, 3]``, ``depth [V, H, W,
    1]`` (0 = background), the views' cameras and, for a decoder with the coverage channel,
    ``coverage [V, H, W, 1]`` (module docstring)."""
    from flow3d.splat.rays import plucker_rays

    present = (depth > 0).to(rgb.dtype)
    parts = [rgb * present, disparity(depth, near, far)]
    if coverage is not None:
        parts.append(coverage.to(rgb.dtype) * present)
    pix = torch.cat(parts, dim=-1).permute(0, 3, 1, 2)  # [V, 4 or 5, H, W]
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
        self.embed = nn.Conv2d(cfg.in_channels, w, p, stride=p)
        self.view_embed = nn.Parameter(torch.zeros(w))  # marks tokens of a given view
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(w, cfg.heads, 4 * w, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(w)
        self.unpatch = nn.Linear(w, p * p * cfg.pixel_width)
        self.skip = nn.Conv2d(cfg.in_channels, cfg.pixel_width, 3, padding=1)
        self.head = nn.Sequential(nn.GELU(), nn.Conv2d(cfg.pixel_width, cfg.pixel_width, 1),
                                  nn.GELU(), nn.Conv2d(cfg.pixel_width, NUM_PARAMS, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        b, v, c, h, w = x.shape
        p, d = self.cfg.patch, self.cfg.width
        if c != self.cfg.in_channels or h % p or w % p:
            raise ValueError(f"GSDecoder: input {tuple(x.shape)}: expected [B, V, "
                             f"{self.cfg.in_channels}, H, W] with H, W divisible by {p}")
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


def pixel_gaussians(params: Tensor, rgb: Tensor, depth: Tensor, cameras: Cameras,
                    coverage: Tensor | None = None) -> Gaussians:
    """One scene's Gaussians from ``params [V, 14, H, W]``, its input ``rgb [V, H, W, 3]``,
    ``depth [V, H, W, 1]`` and cameras: one per pixel with depth (module docstring). With
    ``coverage [V, H, W, 1]`` the opacities start from it instead of a constant."""
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
    if coverage is None:
        bias = OPACITY_BIAS
    else:
        bias = torch.logit(coverage[..., 0][keep].to(params).clamp(*COVERAGE_RANGE))
    return Gaussians(means, quats, log_scales, prm[:, 10] + bias,
                     sh.rgb_to_sh0(colors).unsqueeze(1))


def decoder_inputs(cfg: GSDecoderConfig, rgb: Tensor, depth: Tensor,
                   coverage: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """The depth and coverage a decoder of ``cfg`` reads: for one with the coverage channel,
    the coverage (binary ``depth > 0`` when not given: views a flow generated) and the depth
    filled at covered pixels (:func:`fill_depth`); else the depth as it is and no coverage."""
    if not cfg.coverage:
        return depth, None
    if coverage is None:
        coverage = (depth > 0).to(rgb.dtype)
    depth = fill_depth(depth, coverage)
    return depth, coverage * (depth > 0)


def decode_scene(model: GSDecoder, rgb: Tensor, depth: Tensor, cameras: Cameras,
                 coverage: Tensor | None = None) -> Gaussians:
    """Gaussians of one scene from all its views (``rgb [V, H, W, 3]`` straight colour,
    ``depth [V, H, W, 1]``, ``cameras``, and where known ``coverage [V, H, W, 1]``: the
    decoder with the coverage channel reads it, others ignore it)."""
    depth, coverage = decoder_inputs(model.cfg, rgb, depth, coverage)
    x = view_inputs(rgb, depth, cameras, model.cfg.near, model.cfg.far, coverage)
    return pixel_gaussians(model(x.unsqueeze(0))[0], rgb, depth, cameras, coverage)

