"""Synthetic multi-view scenes for the splat tests: exact colour, depth and masks without a
renderer (tests/ is on the path through conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from flow3d.splat.scenes import SceneBatch, scene_cameras


def sphere_scene(views: int = 3, size: int = 16, seed: int = 0, frame: float = 0.5) -> SceneBatch:
    """One scene of a unit-diameter sphere coloured by its normal, rendered analytically
    (ray-sphere intersection at pixel centres): exact depth and mask, no renderer needed.
    The cameras frame a ball of radius ``frame`` (0.5: the sphere fills the views)."""
    rng = np.random.default_rng(seed)
    cams = scene_cameras(rng, views, radius=frame, size=size, fov_deg=40.0)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64) + 0.5,
                            torch.arange(size, dtype=torch.float64) + 0.5, indexing="ij")
    rgb, depth = [], []
    for k, vm in zip(cams.K.double(), cams.viewmats.double()):
        d_cam = torch.stack([(xs - k[0, 2]) / k[0, 0], (ys - k[1, 2]) / k[1, 1],
                             torch.ones_like(xs)], -1)  # z = 1
        r, t = vm[:3, :3], vm[:3, 3]
        o = -(r.T @ t)
        d = d_cam @ r  # world directions with camera z = 1
        a, b, c = (d * d).sum(-1), 2 * (d @ o), o @ o - 0.25
        disc = b * b - 4 * a * c
        z = torch.where(disc > 0, (-b - disc.clamp_min(0).sqrt()) / (2 * a), torch.zeros_like(a))
        p = o + z.unsqueeze(-1) * d
        rgb.append(torch.where(z.unsqueeze(-1) > 0, 0.5 + p, torch.zeros_like(p)))
        depth.append(z.unsqueeze(-1))
    rgb, depth = torch.stack(rgb).float().clamp(0, 1), torch.stack(depth).float()
    return SceneBatch(rgb=rgb[None], mask=(depth > 0).float()[None], depth=depth[None],
                      K=cams.K[None], viewmats=cams.viewmats[None],
                      label=torch.zeros(1, dtype=torch.long), size=size)


def write_sphere_dataset(folder: Path, views: int = 8, size: int = 64, depth: bool = True,
                         seed: int = 2) -> Path:
    """:func:`sphere_scene` written as a ``transforms.json`` dataset (RGBA, depth PNGs)."""
    from flow3d.splat.dataset import save_dataset

    scene = sphere_scene(views=views, size=size, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    rgba = torch.cat([scene.rgb[0], scene.mask[0]], -1)
    save_dataset(folder, np.round(rgba.numpy() * 255).astype(np.uint8), scene.cameras(0),
                 depths=scene.depth[0, ..., 0].numpy() if depth else None)
    return folder


def square_masks(folder: Path, views, box: tuple[slice, slice], size: int = 64) -> Path:
    """Edit masks: ``box`` (rows, columns) white in each of ``views``, no PNG for the others."""
    from PIL import Image

    folder.mkdir()
    m = np.zeros((size, size), np.uint8)
    m[box] = 255
    for v in views:
        Image.fromarray(m).save(folder / f"{v:03d}.png")
    return folder
