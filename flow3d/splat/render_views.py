"""``flow3d splat render SCENE DATASET --out DIR``: render a scene (.ply, .splat, .spz) at the
cameras of a posed-image dataset: one PNG per view (``<index>.png``, RGBA: the render's alpha)
and ``metrics.json`` with PSNR/SSIM against the dataset's images (composited on the same
background).

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

from flow3d.errors import DataError
from flow3d.io import atomic_path, atomic_write_text, check_output_dir, prepare_output_dir
from flow3d.options import add_overwrite_flag
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scene", help="scene file (.ply, .splat or .spz)")
    p.add_argument("dataset", help="dataset folder (or its transforms.json) giving the cameras")
    p.add_argument("--out", required=True, help="folder for the PNGs and metrics.json")
    p.add_argument("--backend", choices=BACKENDS, default="cpu", help="rasterizer")
    p.add_argument("--background", choices=("black", "white"), default="black")
    add_overwrite_flag(p)


def run(args: argparse.Namespace) -> int:
    s = RenderViewsSettings(Path(args.scene), Path(args.dataset), Path(args.out), args.backend,
                            (1.0, 1.0, 1.0) if args.background == "white" else (0.0, 0.0, 0.0),
                            args.overwrite)
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
    settings = RenderSettings(background=s.background)
    views = []
    for i in range(len(data)):
        with torch.no_grad():
            o = render(scene, data.cameras[i], backend=s.backend, settings=settings)
        rgb = o.rgb[0].clamp(0, 1)
        rgba = torch.cat([rgb, o.alpha[0].clamp(0, 1)], dim=-1)
        with atomic_path(out / f"{i:03d}.png") as tmp:
            Image.fromarray(np.round(rgba.numpy() * 255).astype(np.uint8)).save(tmp, "PNG")
        views.append({"file": f"{i:03d}.png", "source": data.names[i],
                      "psnr": round(psnr(rgb, targets[i]), 3),
                      "ssim": round(float(ssim(rgb, targets[i])), 4)})
    # 4. metrics
    metrics = {"scene": str(s.scene), "dataset": str(s.dataset), "backend": s.backend,
               "num_gaussians": len(scene),
               "psnr": round(float(np.mean([v["psnr"] for v in views])), 3),
               "ssim": round(float(np.mean([v["ssim"] for v in views])), 4), "views": views}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return metrics
