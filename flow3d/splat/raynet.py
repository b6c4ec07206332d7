"""Camera rays regressed from views: how ``flow3d splat poses`` estimates cameras.

SplatFlow estimates poses by inpainting: the views are known and its joint flow generates their
rays. At the size trained here that does not work (measured: pose accuracy 0%, docs/
benchmarks.md): the joint flow's rays follow its own noisy rays, not the views, and a flow
trained for rays given clean views (``model.given`` of :mod:`flow3d.splat.mvflow`) still
predicted the mean rays after 1,250 steps. Ray Diffusion (Zhang et al. 2024, "Cameras as
Rays") shows the other way: regress a Plücker ray per image patch from the views, then fit
cameras to the rays by least squares (:func:`flow3d.splat.rays.cameras_from_rays`) — the same
ray representation and camera fit as SplatFlow's, with a network built for the job.

:class:`RayRegressor`: per view a small CNN (colour on black, disparity, object mask, pixel
coordinates) down to the flow's patch grid (8x8 cells of 8x8 pixels at 64^2), then a
transformer over the cells of *all* views (cross-view attention, no view embedding: any number
of views, in any order), and a linear layer to each cell's ray ``(d, m / 3)`` (the layout of
:class:`~flow3d.splat.mvflow.SceneLayout`). Depth is optional: training drops it (disparity 0)
for ``depth_drop`` of the scenes, so colour-only datasets get cameras too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flow3d.errors import ConfigError
from flow3d.options import check_float, check_int
from flow3d.splat.mvflow import SceneLayout
from flow3d.splat.scenes import SceneBatch

__all__ = ["RayRegressor", "RayRegressorConfig", "ray_loss", "sample_rays",
           "save_ray_samples", "view_inputs"]


@dataclasses.dataclass(frozen=True)
class RayRegressorConfig:
    """The ``model`` section of ``recipes/splat/raynet.yaml``. ``views``, ``size``, ``patch``,
    ``near``, ``far`` define the ray layout as the flow's (:class:`SceneLayout`); ``views`` is
    the most views a dataset may have."""

    views: int = 8
    size: int = 64
    patch: int = 8
    near: float = 0.5
    far: float = 5.0
    width: int = 32  # channels of the first convolution (x2, x4 further down)
    layers: int = 4  # transformer layers over all views' cells
    heads: int = 4
    depth_drop: float = 0.2  # share of training scenes given without depth

    def __post_init__(self):
        check_int(self.views, "model.views", lo=1, hi=64)
        check_int(self.size, "model.size", lo=8, hi=1024)
        check_int(self.patch, "model.patch", lo=2, hi=64)
        if self.size % self.patch or self.patch & (self.patch - 1):
            raise ConfigError(f"model.patch = {self.patch}: must be a power of two dividing "
                              f"model.size ({self.size})")
        check_float(self.near, "model.near", lo=0.0, hi=1e6, lo_open=True)
        check_float(self.far, "model.far", lo=self.near, hi=1e9, lo_open=True)
        check_int(self.width, "model.width", lo=4, hi=1024)
        check_int(self.layers, "model.layers", lo=0, hi=64)
        check_int(self.heads, "model.heads", lo=1, hi=64)
        if (4 * self.width) % self.heads:
            raise ConfigError(f"model.heads = {self.heads}: must divide 4 x model.width")
        check_float(self.depth_drop, "model.depth_drop", lo=0.0, hi=1.0)

    @property
    def layout(self) -> SceneLayout:
        return SceneLayout(self.views, self.size, self.patch, self.near, self.far)


def view_inputs(rgb: Tensor, depth: Tensor | None, layout: SceneLayout,
                has_depth: Tensor | None = None) -> Tensor:
    """``[B, V, 5, H, W]`` network inputs of ``rgb [B, V, H, W, 3]`` (the object on black) and
    ``depth [B, V, H, W, 1]`` (0 = background; None = no depth maps; ``has_depth [B]``: which
    scenes' depth to use): colour, disparity (0 without depth) and the object mask (where there
    is depth, else where the colour is not black)."""
    b = rgb.shape[0]
    if depth is None:
        depth, has_depth = torch.zeros_like(rgb[..., :1]), torch.zeros(b, dtype=torch.bool)
    elif has_depth is None:
        has_depth = torch.ones(b, dtype=torch.bool)
    use = has_depth.to(rgb.device).view(b, 1, 1, 1, 1)
    fg = torch.where(use, depth > 0, rgb.amax(-1, keepdim=True) > 0).to(rgb.dtype)
    disp = torch.where(use, layout.disparity(depth) * fg, torch.zeros_like(fg))
    return torch.cat([rgb * fg, disp, fg], -1).permute(0, 1, 4, 2, 3)


class RayRegressor(nn.Module):
    """Rays ``[B, V, 6, g, g]`` (moments scaled, as the flow's tokens) of views (module
    docstring)."""

    def __init__(self, cfg: RayRegressorConfig):
        super().__init__()
        self.cfg = cfg
        self.layout = cfg.layout
        w = cfg.width
        layers, c = [nn.Conv2d(7, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU()], w
        for _ in range(cfg.patch.bit_length() - 1):  # halve down to one cell per patch
            out = min(4 * w, 2 * c)
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.GroupNorm(8, out),
                       nn.SiLU(), nn.Conv2d(out, out, 3, padding=1), nn.GroupNorm(8, out),
                       nn.SiLU()]
            c = out
        self.cnn = nn.Sequential(*layers)
        g = self.layout.grid
        self.pos = nn.Parameter(torch.randn(g * g, c) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(c, cfg.heads, 4 * c, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(c)
        self.out = nn.Linear(c, 6)

    def forward(self, rgb: Tensor, depth: Tensor | None,
                has_depth: Tensor | None = None) -> Tensor:
        """Rays of ``rgb``, ``depth`` (:func:`view_inputs`)."""
        x = view_inputs(rgb, depth, self.layout, has_depth)
        b, v, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device).view(1, 1, 1, h, 1).expand(b, v, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=x.device).view(1, 1, 1, 1, w).expand(b, v, 1, h, w)
        f = self.cnn(torch.cat([x, xs, ys], 2).reshape(b * v, 7, h, w))  # [BV, C, g, g]
        g = f.shape[-1]
        tok = f.flatten(2).transpose(1, 2) + self.pos  # [BV, g g, C]
        tok = tok.reshape(b, v * g * g, -1)
        for blk in self.blocks:
            tok = blk(tok)
        rays = self.out(self.norm(tok)).reshape(b, v, g, g, 6)
        return rays.permute(0, 1, 4, 2, 3)


def ray_loss(model: RayRegressor, batch: SceneBatch, generator: torch.Generator) -> dict:
    """MSE of the rays of a random subset of 2-8 views of each scene, in a random order; the
    depth of ``depth_drop`` of the scenes withheld."""
    v = batch.rgb.shape[1]
    n = int(torch.randint(2, v + 1, (1,), generator=generator))
    views = batch.views(torch.randperm(v, generator=generator)[:n])
    truth = model.layout.rays(views.K, views.viewmats).to(views.rgb)
    has_depth = torch.rand(views.rgb.shape[0], generator=generator) >= model.cfg.depth_drop
    pred = model(views.rgb * (views.depth > 0), views.depth, has_depth.to(views.rgb.device))
    err = (pred - truth).square()
    return {"loss": err.mean(), "dir_mse": err[:, :, :3].mean().detach()}


def sample_rays(head, model: RayRegressor, num: int, **overrides: Any) -> list:
    """(true, predicted) rays of the first ``num`` scenes of the split."""
    scenes = head.scenes(head.sample_settings(**overrides).split)
    out = []
    for i in range(min(num, len(scenes))):
        b = scenes.batch([i])
        truth = model.layout.rays(b.K, b.viewmats)[0]
        out.append((truth, model(b.rgb * (b.depth > 0), b.depth)[0]))
    return out


def save_ray_samples(samples, out_dir: Path) -> list[Path]:
    """A JSON list of each scene's ray error (mean squared, and median direction angle)."""
    import json

    from flow3d.io import atomic_write_text

    rows = []
    for truth, pred in samples:
        d = nn.functional.normalize(pred[:, :3], dim=1)
        cos = (d * truth[:, :3]).sum(1).clamp(-1, 1)
        rows.append({"mse": float((pred - truth).square().mean()),
                     "median_direction_error_deg": float(torch.rad2deg(cos.acos()).median())})
    path = Path(out_dir) / "ray_errors.json"
    atomic_write_text(path, json.dumps(rows, indent=1) + "\n")
    return [path]
