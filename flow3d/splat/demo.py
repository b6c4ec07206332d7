"""The splat part of ``make demo``: a mesh rendered into a small posed-image dataset, fitted
with Gaussians on the CPU in well under a minute, the scene written as an INRIA PLY, a PNG of
held-out views (ground truth above, fit below) and the metrics.

The mesh is the CAPOD car (``../shared/data/meshes/capod/class15/m169.obj``) when the shared
data sits next to the repository, else a procedural shape (a box with a torus through it), so
the demo runs on a fresh clone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SHARED_MESH = (Path(__file__).resolve().parents[2].parent / "shared" / "data" / "meshes"
               / "capod" / "class15" / "m169.obj")


def demo_mesh(out_dir: Path) -> Path:
    """The CAPOD car if present, else a procedural box-and-torus written to ``out_dir``."""
    if SHARED_MESH.is_file():
        return SHARED_MESH
    import trimesh

    shape = trimesh.util.concatenate([
        trimesh.creation.box(extents=(1.0, 0.6, 0.6)),
        trimesh.creation.torus(major_radius=0.5, minor_radius=0.12),
    ])
    path = out_dir / "shape.obj"
    shape.export(path)
    return path


def demo(out_dir: str | Path, *, steps: int = 200, size: int = 48, views: int = 12,
         backend: str = "cpu") -> dict:
    """Views -> fit -> render in ``out_dir`` (created; earlier demo files replaced). Returns
    the paths written and the held-out metrics."""
    from flow3d.io import prepare_output_dir
    from flow3d.mesh.render import image_grid, save_png
    from flow3d.splat.dataset import load_dataset
    from flow3d.splat.fit import FitSettings, fit
    from flow3d.splat.formats import load_scene
    from flow3d.splat.render import RenderSettings, render
    from flow3d.splat.views import ViewsSettings, make_views

    out = prepare_output_dir(Path(out_dir), overwrite=True)
    mesh = demo_mesh(out)
    dataset = make_views(ViewsSettings(mesh=mesh, out=out / "dataset", num=views,
                                       size=size)).parent
    scene_path = out / "scene.ply"
    metrics = fit(FitSettings(dataset=dataset, out=scene_path, steps=steps, sh_degree=1,
                              sh_every=steps // 2, init_points=2000, densify_from=50,
                              densify_every=50, opacity_reset_every=10 * steps,
                              backend=backend, progress=False, checkpoint_every=0))
    # held-out views: ground truth above, the fitted scene below
    _, test = load_dataset(dataset).split()
    scene = load_scene(scene_path)
    with torch.no_grad():
        rgb = render(scene, test.cameras, backend=backend, settings=RenderSettings()).rgb
    truth = test.composited(torch.zeros(3))
    tiles = torch.cat([truth, rgb.clamp(0, 1)]).numpy()
    png = save_png(image_grid(np.round(tiles * 255).astype(np.uint8), cols=len(test)),
                   out / "heldout_views.png")
    return {"mesh": str(mesh), "dataset": str(dataset), "scene": str(scene_path),
            "png": str(png), "metrics": str(scene_path.with_name("scene.metrics.json")),
            "test_psnr": metrics["test_psnr"], "test_ssim": metrics["test_ssim"],
            "num_gaussians": metrics["num_gaussians"], "seconds": metrics["seconds"]}
