"""``flow3d splat render SCENE DATASET --out DIR``: render a scene (.ply, .splat, .spz) at the
cameras of a posed-image dataset: one PNG per view (``<index>.png``, RGBA: the render's alpha)
and ``metrics.json`` with PSNR/SSIM against the dataset's images (composited on the same
background). ``--scale N`` renders at N times the dataset's size (the PNGs) and scores the
render averaged back over N x N pixels; ``--eps2d`` is the rasterizer's 2D low-pass (pixels^2;
3DGS's 0.3 by default, 0 for the scenes ``flow3d splat generate | reconstruct`` write, whose
Gaussians carry their decoder's low-pass: :mod:`flow3d.splat.lowpass`).

    1. check the settings, the scene, the dataset and the output folder
    2. load the scene and the dataset
    3. render each view, score it, write its PNG
    4. write metrics.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flow3d.errors import DataError
from flow3d.io import atomic_path, atomic_write_text, check_output_dir, prepare_output_dir
from flow3d.options import add_overwrite_flag, float_range, int_range
from flow3d.splat.dataset import load_dataset, transforms_path
from flow3d.splat.metrics import psnr, ssim
from flow3d.splat.render import BACKENDS, RenderSettings, render


@dataclass(frozen=True)
class RenderViewsSettings:
    scene: Path
    dataset: Path
    out: Path
    backend: str = "cpu"
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    overwrite: bool = False
    eps2d: float = 0.3  # the rasterizer's 2D low-pass, pixels^2 at the rendered size
    scale: int = 1  # render at this many times the dataset's size


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scene", help="scene file (.ply, .splat or .spz)")
    p.add_argument("dataset", help="dataset folder (or its transforms.json) giving the cameras")
    p.add_argument("--out", required=True, help="folder for the PNGs and metrics.json")
    p.add_argument("--backend", choices=BACKENDS, default="cpu", help="rasterizer")
    p.add_argument("--background", choices=("black", "white"), default="black")
    p.add_argument("--eps2d", type=float_range(0.0, 10.0), default=0.3,
                   help="2D low-pass in pixels^2 (3DGS: 0.3; 0 for scenes written by flow3d "
                   "splat generate / reconstruct, whose Gaussians carry it)")
    p.add_argument("--scale", type=int_range(1, 16), default=1,
                   help="render at this many times the dataset's size (scored averaged back)")
    add_overwrite_flag(p)


def run(args: argparse.Namespace) -> int:
    s = RenderViewsSettings(Path(args.scene), Path(args.dataset), Path(args.out), args.backend,
                            (1.0, 1.0, 1.0) if args.background == "white" else (0.0, 0.0, 0.0),
                            args.overwrite, args.eps2d, args.scale)
    metrics = render_views(s)
    print(json.dumps(metrics, indent=1))  # noqa: T201 - the command's report
    return 0


def render_views(s: RenderViewsSettings) -> dict:
    from PIL import Image

    from flow3d.splat.formats import load_scene

    # 1. inputs and output checked before any work
    if not s.scene.is_file():
        raise DataError(f"{s.scene}: no such scene file")
    transforms_path(s.dataset)
    out = check_output_dir(s.out, overwrite=s.overwrite)
    # 2. load
    scene = load_scene(s.scene).check_finite(str(s.scene))
    data = load_dataset(s.dataset)
    targets = data.composited(torch.tensor(s.background))
    prepare_output_dir(out, overwrite=s.overwrite)
    # 3. render, score, write
    settings = RenderSettings(background=s.background, eps2d=s.eps2d)
    cameras = data.cameras.resized(s.scale)
    views = []
    for i in range(len(data)):
        with torch.no_grad():
            o = render(scene, cameras[i], backend=s.backend, settings=settings)
        rgba = torch.cat([o.rgb[0], o.alpha[0]], dim=-1).clamp(0, 1)
        with atomic_path(out / f"{i:03d}.png") as tmp:
            Image.fromarray(np.round(rgba.numpy() * 255).astype(np.uint8)).save(tmp, "PNG")
        rgb = rgba[..., :3]
        if s.scale > 1:  # each dataset pixel: the mean of the N x N rendered ones
            rgb = F.avg_pool2d(rgb.permute(2, 0, 1)[None], s.scale)[0].permute(1, 2, 0)
        views.append({"file": f"{i:03d}.png", "source": data.names[i],
                      "psnr": round(psnr(rgb, targets[i]), 3),
                      "ssim": round(float(ssim(rgb, targets[i])), 4)})
    # 4. metrics
    metrics = {"scene": str(s.scene), "dataset": str(s.dataset), "backend": s.backend,
               "eps2d": s.eps2d, "scale": s.scale,
               "num_gaussians": len(scene),
               "psnr": round(float(np.mean([v["psnr"] for v in views])), 3),
               "ssim": round(float(np.mean([v["ssim"] for v in views])), 4), "views": views}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return metrics
