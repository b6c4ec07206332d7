"""``flow3d splat views MESH --num 8 --size 128 --out DATASET``: render a mesh into a posed-image
dataset (see :mod:`flow3d.splat.dataset`) with exact depth and masks.

Colours are unlit (flat): the mesh's texture or vertex/face colours when it has them, else a
procedural colour per face from its normal, so every view of a surface point has the same
colour (what degree-0 Gaussians can reproduce exactly). The mesh is first moved into a unit box
(bounding box centred at the origin, longest side 1) and that move is recorded in
transforms.json (``flow3d_normalization``) so results map back to the mesh's frame. Cameras
look at the origin from a sphere around it: azimuths by the golden angle, elevations evenly
spread in ``[elevation_min, elevation_max]``, at a distance where the whole mesh fits the view.

Rendering uses pyrender over EGL (offscreen, no display: ``PYOPENGL_PLATFORM=egl``).

    1. check the settings, the mesh file and the output folder (before any rendering)
    2. load the mesh with its colours and normalise it into the unit box
    3. place the cameras
    4. render colour, mask and depth
    5. write the dataset
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flow3d.errors import DataError
from flow3d.io import check_output_dir, prepare_output_dir
from flow3d.options import add_overwrite_flag, check_float, check_int, float_range, int_range
from flow3d.splat.cameras import Cameras

GOLDEN_ANGLE_DEG = 180.0 * (3.0 - math.sqrt(5.0))
DEPTH_SCALE = 1e-4  # depth PNG units: 1e-4 scene units (the unit box spans 1)


@dataclass(frozen=True)
class ViewsSettings:
    mesh: Path
    out: Path
    num: int = 8
    size: int = 128
    fov_deg: float = 40.0
    elevation_min: float = -20.0
    elevation_max: float = 60.0
    margin: float = 1.1  # the bounding sphere's radius times this fills the field of view
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_int(self.num, "--num", lo=1, hi=10_000)
        check_int(self.size, "--size", lo=8, hi=4096)
        check_float(self.fov_deg, "--fov", lo=1.0, hi=170.0)
        check_float(self.elevation_min, "--elevation-min", lo=-89.0, hi=89.0)
        check_float(self.elevation_max, "--elevation-max", lo=self.elevation_min, hi=89.0)


# ---- command line ----------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("mesh", help="mesh file (.obj, .ply, .stl, .glb, ...)")
    p.add_argument("--out", required=True, help="dataset folder to write (transforms.json)")
    p.add_argument("--num", type=int_range(1, 10_000), default=8, help="number of views")
    p.add_argument("--size", type=int_range(8, 4096), default=128, help="image size, pixels")
    p.add_argument("--fov", type=float_range(1.0, 170.0), default=40.0, dest="fov_deg",
                   help="field of view, degrees")
    p.add_argument("--elevation-min", type=float_range(-89.0, 89.0), default=-20.0)
    p.add_argument("--elevation-max", type=float_range(-89.0, 89.0), default=60.0)
    add_overwrite_flag(p)


def settings_from_args(args: argparse.Namespace) -> ViewsSettings:
    return ViewsSettings(mesh=Path(args.mesh), out=Path(args.out), num=args.num, size=args.size,
                         fov_deg=args.fov_deg, elevation_min=args.elevation_min,
                         elevation_max=args.elevation_max, overwrite=args.overwrite)


def run(args: argparse.Namespace) -> int:
    path = make_views(settings_from_args(args))
    print(path)  # noqa: T201 - the command prints what it wrote
    return 0


# ---- pipeline --------------------------------------------------------------------------------
def make_views(s: ViewsSettings) -> Path:
    """Steps 1-5 of the module docstring; returns the written transforms.json."""
    from flow3d.splat.dataset import save_dataset

    # 1. inputs and output checked before rendering
    if not s.mesh.is_file():
        raise DataError(f"{s.mesh}: no such mesh file")
    out = check_output_dir(s.out, overwrite=s.overwrite)
    # 2. the mesh, coloured, in the unit box
    meshes, normalization = load_colored_mesh(s.mesh)
    # 3. cameras
    radius = max(float(np.linalg.norm(m.vertices, axis=1).max()) for m in meshes)
    cameras = sphere_cameras(s.num, radius=radius, size=s.size, fov_deg=s.fov_deg,
                             elevations=(s.elevation_min, s.elevation_max), margin=s.margin)
    # 4. render
    rgba, depth = render_mesh(meshes, cameras)
    # 5. write
    prepare_output_dir(out, overwrite=s.overwrite)
    return save_dataset(out, rgba, cameras, depths=depth, depth_scale=DEPTH_SCALE,
                        normalization=normalization,
                        extra={"flow3d_source": str(s.mesh), "flow3d_views": {
                            "fov_deg": s.fov_deg, "elevations": [s.elevation_min,
                                                                 s.elevation_max]}})


def load_colored_mesh(path: Path) -> tuple[list, dict]:
    """The mesh's triangle parts with their visuals, moved into the unit box, and the
    normalisation ``{"center", "scale"}`` (``x_box = (x - center) / scale``)."""
    try:
        import trimesh
    except ImportError:  # pragma: no cover - depends on the environment
        raise DataError("flow3d splat views needs trimesh: pip install 'flow3d[mesh]'") from None
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    try:
        loaded = trimesh.load(path)
    except Exception as e:  # noqa: BLE001 - any parser failure is the file's fault
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: cannot be read as a mesh ({msg})") from None
    parts = loaded.dump() if isinstance(loaded, trimesh.Scene) else [loaded]
    meshes = [m for m in parts if isinstance(m, trimesh.Trimesh) and len(m.faces)]
    if not meshes:
        raise DataError(f"{path}: no triangles in file")
    vertices = np.concatenate([np.asarray(m.vertices, dtype=np.float64) for m in meshes])
    if not np.isfinite(vertices).all():
        raise DataError(f"{path}: vertices contain NaN or inf")
    lo, hi = vertices.min(0), vertices.max(0)
    scale = float((hi - lo).max())
    if not scale > 0:
        raise DataError(f"{path}: degenerate geometry (zero size)")
    center = (lo + hi) / 2.0
    out = []
    for m in meshes:
        m = m.copy()
        m.apply_translation(-center)
        m.apply_scale(1.0 / scale)
        if m.visual.kind is None:  # no colours of its own
            m = procedural_colors(m)
        out.append(m)
    return out, {"center": [float(c) for c in center], "scale": scale}


def procedural_colors(mesh):
    """Flat face colours from the face normals (0.15 + 0.7 (n + 1) / 2 per channel), faces
    split so each keeps its own colour."""
    mesh = mesh.copy()
    mesh.unmerge_vertices()
    normals = np.asarray(mesh.face_normals, dtype=np.float64)  # [F, 3]
    rgb = 0.15 + 0.7 * (normals + 1.0) / 2.0
    colors = np.concatenate([np.round(rgb * 255), np.full((len(rgb), 1), 255.0)], axis=1)
    mesh.visual.face_colors = colors.astype(np.uint8)
    return mesh


def sphere_cameras(num: int, *, radius: float, size: int, fov_deg: float,
                   elevations: tuple[float, float], margin: float = 1.1) -> Cameras:
    """``num`` cameras looking at the origin: azimuth ``i * golden angle``, elevation with
    ``sin(elevation)`` evenly spread over the range (so views cover the band evenly)."""
    distance = margin * radius / math.sin(math.radians(fov_deg) / 2)
    s0, s1 = (math.sin(math.radians(e)) for e in elevations)
    i = torch.arange(num, dtype=torch.float64)
    el = torch.asin(s0 + (s1 - s0) * (i + 0.5) / num)
    az = torch.deg2rad(i * GOLDEN_ANGLE_DEG)
    eyes = distance * torch.stack([torch.cos(el) * torch.sin(az), torch.sin(el),
                                   torch.cos(el) * torch.cos(az)], dim=-1)
    return Cameras.look_at(eyes, torch.zeros_like(eyes), fov_deg=fov_deg, width=size,
                           height=size)


# pyrender draws with 4x MSAA and reads depth from sample 0, which the standard pattern puts at
# (-0.125, +0.375) pixels from the centre (x right, y down); the depth pass shifts the principal
# point so that sample lands on the pixel centre. Measured: median back-projection error on a
# sphere 2e-5 with the shift, 1.3e-3 without (tests/splat/test_splat_dataset.py checks it).
MSAA_SAMPLE0_OFFSET = (-0.125, 0.375)


def _render_pass(scene, renderer, k: np.ndarray, pose: np.ndarray, flags, shift):
    import pyrender

    cam = pyrender.IntrinsicsCamera(k[0, 0], k[1, 1], k[0, 2] + shift[0], k[1, 2] + shift[1],
                                    znear=0.01, zfar=100.0)
    node = scene.add(cam, pose=pose)
    try:
        return renderer.render(scene, flags=flags)
    finally:
        scene.remove_node(node)


def two_sided(mesh):
    """``mesh`` with every face also wound the other way (same vertices, colours, UVs), so a
    renderer that culls back faces shows it from both sides (pyrender's depth pass always
    culls, whatever the material says)."""
    import trimesh

    faces = np.asarray(mesh.faces)
    both = np.concatenate([faces, faces[:, ::-1]])
    vis = mesh.visual
    if getattr(vis, "kind", None) == "face":
        fc = np.asarray(vis.face_colors)
        return trimesh.Trimesh(mesh.vertices, both, face_colors=np.concatenate([fc, fc]),
                               process=False)
    if getattr(vis, "kind", None) == "vertex":
        return trimesh.Trimesh(mesh.vertices, both, vertex_colors=vis.vertex_colors,
                               process=False)
    return trimesh.Trimesh(mesh.vertices, both, visual=vis.copy(), process=False)


def render_mesh(meshes: list, cameras: Cameras) -> tuple[np.ndarray, np.ndarray]:
    """Unlit colour with pixel coverage as alpha (uint8 ``[V, H, W, 4]``, straight RGB) and
    camera z at each pixel centre (float32 ``[V, H, W]``, 0 on the background), via pyrender
    over EGL. Faces are two-sided: with pyrender's default back-face culling a mesh with open
    sheets or inconsistent winding (60% of the held-out CAPOD scenes, 11% of their object
    pixels on average) looked different from each side, so no 3D scene explained its views."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # set when used, never at import
    try:
        import pyrender
    except Exception as e:  # noqa: BLE001 - a missing or broken GL stack
        raise DataError(f"flow3d splat views needs pyrender with EGL (pip install "
                        f"'flow3d[render]'): {str(e).splitlines()[0] if str(e) else e!r}"
                        ) from None
    w, h = cameras.width, cameras.height
    scene = pyrender.Scene(bg_color=[0.0, 0.0, 0.0, 0.0], ambient_light=[1.0, 1.0, 1.0])
    for m in meshes:
        scene.add(pyrender.Mesh.from_trimesh(two_sided(m), smooth=False))
    try:
        renderer = pyrender.OffscreenRenderer(w, h)
    except Exception as e:  # noqa: BLE001 - no EGL device, no driver
        raise DataError(f"flow3d splat views: no offscreen OpenGL renderer available "
                        f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); it "
                        f"needs EGL (PYOPENGL_PLATFORM=egl) and pyrender") from None
    c2w_gl = cameras.camtoworld_gl().to(torch.float64).numpy()
    flags = pyrender.RenderFlags.FLAT | pyrender.RenderFlags.RGBA
    colors, depths = [], []
    try:
        for k, pose in zip(cameras.K.to(torch.float64).numpy(), c2w_gl):
            color = _render_pass(scene, renderer, k, pose, flags, (0.0, 0.0))[0]
            depth = _render_pass(scene, renderer, k, pose, pyrender.RenderFlags.DEPTH_ONLY,
                                 MSAA_SAMPLE0_OFFSET)
            alpha = color[..., 3:].astype(np.float64) / 255.0
            # the resolved colour is premultiplied by coverage (black background): unmultiply
            rgb = np.where(alpha > 0, color[..., :3] / np.maximum(alpha, 1e-6), 0.0)
            colors.append(np.concatenate([np.clip(np.round(rgb), 0, 255), color[..., 3:]],
                                         axis=-1).astype(np.uint8))
            depths.append(np.where(depth > 0, depth, 0.0).astype(np.float32))
    finally:
        renderer.delete()
    return np.stack(colors), np.stack(depths)
