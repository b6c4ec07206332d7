"""``flow3d splat reconstruct DATASET --out scene.ply``: 3D Gaussians from posed views with
depth, in one forward pass of the bundled GSDecoder (:mod:`flow3d.splat.decoder`).

The dataset is a nerfstudio ``transforms.json`` with depth maps (``flow3d splat views`` writes
them; SplatFlow's generator produces them), views of one size divisible by the decoder's
patch. The decoder was trained on objects in the frame of ``flow3d splat views`` (bounding box
centred at the origin, longest side 1) seen from about 2-3 units at 64^2: other scales and
sizes run but are outside what it learnt. Every view is given to the decoder; pixels with
depth become Gaussians (and, for a decoder with the coverage channel, pixels the masks cover).
``--refine N`` then fits those Gaussians N steps to the same views
(:func:`flow3d.splat.fit.polish`): a few seconds that sharpen the views the decoder saw and,
measured on held-out scenes, the views it did not see as well (docs/benchmarks.md). The
decoder's Gaussians lean on its rasterizer's 2D low-pass (``eps2d``); the file is written with
that low-pass moved into them (:mod:`flow3d.splat.lowpass`), so it renders at any size without
falling apart into dots: render it with ``eps2d`` 0 (``flow3d splat render --eps2d 0``).

    1. check the settings, the dataset file and the output (before any work)
    2. read the dataset: images, masks, depths, cameras (depth is required)
    3. load the decoder and decode every view; refine; bake the low-pass
    4. write the scene (.ply, .splat or .spz by extension)
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from flow3d.engine.checkpoint import PROJECT_ROOT, resolve_path
from flow3d.errors import DataError
from flow3d.io import check_output_file
from flow3d.options import add_overwrite_flag, int_range

DEFAULT_CKPT = str(PROJECT_ROOT / "checkpoints" / "splat" / "gsdecoder")
MAX_VIEWS = 64
MAX_SIZE = 512
REFINE_STEPS = 100


@dataclass(frozen=True)
class ReconstructSettings:
    dataset: Path
    out: Path
    ckpt: Path = Path(DEFAULT_CKPT)
    overwrite: bool = False
    refine: int = REFINE_STEPS

    def __post_init__(self) -> None:
        from flow3d.splat.fit import PolishSettings

        PolishSettings(steps=self.refine)  # checks the count before any work


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="dataset folder (or its transforms.json) with depth maps")
    p.add_argument("--out", required=True, help="scene file to write: .ply, .splat or .spz")
    p.add_argument("--ckpt", default=DEFAULT_CKPT, help="GSDecoder checkpoint folder")
    p.add_argument("--refine", type=int_range(0, 100_000), default=REFINE_STEPS, metavar="STEPS",
                   help=f"fit the decoded Gaussians this many steps to the views (default "
                        f"{REFINE_STEPS}; 0: the decoder's output as it is)")
    add_overwrite_flag(p)


def run(args: argparse.Namespace) -> int:
    s = ReconstructSettings(Path(args.dataset), Path(args.out), resolve_path(args.ckpt),
                            args.overwrite, args.refine)
    report = reconstruct(s)
    print(f"{report['out']}: {report['gaussians']} Gaussians from {report['views']} views "  # noqa: T201
          f"in {report['seconds']:.2f} s")
    return 0


def reconstruct(s: ReconstructSettings) -> dict:
    """Steps 1-4 of the module docstring; returns what was written."""
    from flow3d.engine.checkpoint import load_frozen
    from flow3d.splat.dataset import load_dataset, transforms_path
    from flow3d.splat.decoder import decode_scene
    from flow3d.splat.fit import PolishSettings, polish
    from flow3d.splat.formats import SUFFIXES, save_scene
    from flow3d.splat.lowpass import bake_low_pass

    # 1. inputs and output, before any work
    transforms_path(s.dataset)
    out = check_output_file(s.out, "--out", overwrite=s.overwrite, suffixes=SUFFIXES)
    if not s.ckpt.is_dir():
        raise DataError(f"--ckpt {s.ckpt}: no such checkpoint folder")
    # 2. the views
    data = load_dataset(s.dataset, max_size=MAX_SIZE)
    where = f"{s.dataset}"
    if data.depths is None:
        raise DataError(f"{where}: no depth maps (frames need depth_file_path); the GSDecoder "
                        "decodes colour + depth + cameras (flow3d splat views writes depth)")
    if len(data) > MAX_VIEWS:
        raise DataError(f"{where}: {len(data)} views; the decoder attends over all views "
                        f"jointly and takes at most {MAX_VIEWS}")
    if not torch.isfinite(data.depths).all() or not torch.isfinite(data.images).all():
        raise DataError(f"{where}: images or depths contain NaN or inf")
    mask = data.masks if data.masks is not None else torch.ones_like(data.depths)
    depth = data.depths * (mask > 0)
    if not (depth > 0).any():
        raise DataError(f"{where}: every depth is 0 (background): nothing to reconstruct")
    # 3. decode
    model = load_frozen(s.ckpt, "splat_decoder", "GSDecoder")
    patch = model.cfg.patch
    w, h = data.cameras.width, data.cameras.height
    if w % patch or h % patch:
        raise DataError(f"{where}: images are {w}x{h}; the decoder needs sides divisible by "
                        f"{patch}")
    t0 = time.perf_counter()
    coverage = data.masks if data.masks is not None else (depth > 0).to(depth)
    with torch.no_grad():
        scene = decode_scene(model, data.images, depth, data.cameras, coverage)
    scene = polish(scene, data.cameras, data.images * coverage, coverage,
                   PolishSettings(steps=s.refine), model.cfg.render_settings())
    # the decoder's low-pass moved into the Gaussians: the file renders at any size
    scene = bake_low_pass(scene.detach(), data.cameras, model.cfg.eps2d)
    seconds = time.perf_counter() - t0
    # 4. write
    save_scene(scene, out)
    return {"out": str(out), "gaussians": len(scene), "views": len(data), "seconds": seconds,
            "eps2d_baked": model.cfg.eps2d}
