"""Shaded renders of a mesh on a plain background: conditioning images and turntables.

Two backends with one camera model, so either can produce training images:
- ``"pyrender"``: OpenGL through EGL (no display needed; ``pip install 'flow3d[render]'``).
- ``"numpy"``: a pure-numpy z-buffer rasteriser with Lambert shading, the reference twin that
  works on any machine (tests run it everywhere).
``backend="auto"`` tries pyrender and falls back to numpy when EGL or pyrender is missing.

Cameras: pinhole, OpenCV convention (x right, y down, z forward). ``intrinsics`` [V, 3, 3] in
pixels, ``extrinsics`` [V, 4, 4] world-to-camera; every camera looks at the bounding-box centre
from ``distance`` bounding-sphere radii, so the whole mesh is in view.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from flow3d.io import atomic_path

log = logging.getLogger(__name__)

BACKGROUND = 255  # white
ALBEDO = 0.75
AMBIENT = 0.25


# ---- cameras ---------------------------------------------------------------------------------
def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """World-to-camera [4, 4] (OpenCV axes) for a camera at ``eye`` looking at ``target``."""
    fwd = target - eye
    fwd = fwd / np.linalg.norm(fwd)
    up = np.asarray(up, dtype=np.float64)
    if abs(np.dot(fwd, up)) > 0.999:  # looking straight up or down: pick another up vector
        up = np.array([0.0, 0.0, 1.0])
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    rot = np.stack([right, down, fwd])  # rows: camera axes in world coordinates
    ext = np.eye(4)
    ext[:3, :3] = rot
    ext[:3, 3] = -rot @ eye
    return ext


def make_cameras(
    center: np.ndarray,
    radius: float,
    elevations,
    azimuths,
    image_size: int,
    yfov_deg: float = 40.0,
    margin: float = 1.05,
) -> dict:
    """Cameras on a sphere around ``center`` (angles in degrees; y is up, azimuth 0 looks -z)."""
    elev = np.radians(np.asarray(elevations, dtype=np.float64))
    azim = np.radians(np.asarray(azimuths, dtype=np.float64))
    yfov = math.radians(yfov_deg)
    distance = margin * radius / math.sin(yfov / 2)
    f = image_size / 2 / math.tan(yfov / 2)
    k = np.array([[f, 0, image_size / 2], [0, f, image_size / 2], [0, 0, 1.0]])
    exts = []
    for e, a in zip(elev, azim):
        eye = center + distance * np.array([math.cos(e) * math.sin(a), math.sin(e),
                                            math.cos(e) * math.cos(a)])
        exts.append(look_at(eye, center))
    return {
        "intrinsics": np.repeat(k[None], len(exts), axis=0),  # [V, 3, 3]
        "extrinsics": np.stack(exts),  # [V, 4, 4] world -> camera
        "elevations": np.degrees(elev), "azimuths": np.degrees(azim),
        "distance": distance, "yfov_deg": yfov_deg, "image_size": image_size,
    }


# ---- numpy rasteriser ------------------------------------------------------------------------
def _rasterize_numpy(vertices, faces, k, ext, size: int) -> np.ndarray:
    """One view: z-buffer rasterisation with two-sided Lambert headlight shading -> [H, W, 3]."""
    v_cam = vertices @ ext[:3, :3].T + ext[:3, 3]  # [V, 3]
    z = v_cam[:, 2]
    uv = v_cam[:, :2] / np.maximum(z[:, None], 1e-9) * k[[0, 1], [0, 1]] + k[:2, 2]  # [V, 2]
    tri_cam = v_cam[faces]  # [F, 3, 3]
    normal = np.cross(tri_cam[:, 1] - tri_cam[:, 0], tri_cam[:, 2] - tri_cam[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    centre = tri_cam.mean(axis=1)
    view = -centre / np.maximum(np.linalg.norm(centre, axis=1, keepdims=True), 1e-12)
    shade = AMBIENT + (1 - AMBIENT) * ALBEDO * np.abs(np.sum(normal * view, axis=1))  # [F]
    keep = (z[faces] > 1e-6).all(axis=1)
    tri, fid = uv[faces][keep], np.flatnonzero(keep)  # [F', 3, 2]
    zinv = 1.0 / z[faces][keep]  # [F', 3] perspective-correct depth interpolation
    lo = np.clip(np.floor(tri.min(axis=1) - 0.5), 0, size - 1).astype(np.int64)  # [F', 2]
    hi = np.clip(np.ceil(tri.max(axis=1) - 0.5), 0, size - 1).astype(np.int64)
    depth = np.full(size * size, np.inf)
    color = np.full(size * size, -1.0)
    wh = hi - lo + 1  # [F', 2]
    count = wh[:, 0] * wh[:, 1]
    budget = 4_000_000
    start = 0
    while start < len(tri):
        csum = np.cumsum(count[start:])
        stop = start + max(1, int(np.searchsorted(csum, budget)))
        sl = slice(start, stop)
        n = count[sl]
        f = np.repeat(np.arange(start, stop), n)  # candidate pixels per face
        local = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        px = lo[f, 0] + local % wh[f, 0]
        py = lo[f, 1] + local // wh[f, 0]
        p = np.stack([px + 0.5, py + 0.5], axis=1)  # pixel centres
        a, b, c = tri[f, 0], tri[f, 1], tri[f, 2]
        area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        ok = np.abs(area) > 1e-12
        w0 = (b[:, 0] - p[:, 0]) * (c[:, 1] - p[:, 1]) - (b[:, 1] - p[:, 1]) * (c[:, 0] - p[:, 0])
        w1 = (c[:, 0] - p[:, 0]) * (a[:, 1] - p[:, 1]) - (c[:, 1] - p[:, 1]) * (a[:, 0] - p[:, 0])
        w0 = np.where(ok, w0 / np.where(ok, area, 1), -1)
        w1 = np.where(ok, w1 / np.where(ok, area, 1), -1)
        w2 = 1 - w0 - w1
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        f, px, py = f[inside], px[inside], py[inside]
        zi = (np.stack([w0, w1, w2], 1)[inside] * zinv[f]).sum(axis=1)
        zz = 1.0 / zi
        pix = py * size + px
        order = np.lexsort((zz, pix))
        pix, zz, f = pix[order], zz[order], f[order]
        first = np.r_[True, pix[1:] != pix[:-1]]
        pix, zz, f = pix[first], zz[first], f[first]
        closer = zz < depth[pix]
        depth[pix[closer]] = zz[closer]
        color[pix[closer]] = shade[fid[f[closer]]]
        start = stop
    img = np.where(color < 0, BACKGROUND, np.round(np.clip(color, 0, 1) * 255))
    return np.repeat(img.reshape(size, size, 1), 3, axis=2).astype(np.uint8)


# ---- pyrender --------------------------------------------------------------------------------
def _render_pyrender(mesh, cameras: dict) -> np.ndarray:
    """All views with pyrender over EGL (raises on any failure; the caller falls back)."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # set here, never at import time
    import pyrender
    import trimesh

    size = int(cameras["image_size"])
    plain = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    material = pyrender.MetallicRoughnessMaterial(
        baseColorFactor=[ALBEDO, ALBEDO, ALBEDO, 1.0], metallicFactor=0.0, roughnessFactor=1.0,
        doubleSided=True,
    )
    bg = [BACKGROUND / 255.0] * 3 + [1.0]
    scene = pyrender.Scene(bg_color=bg, ambient_light=[AMBIENT] * 3)
    scene.add(pyrender.Mesh.from_trimesh(plain, material=material, smooth=False))
    flip = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV camera axes -> OpenGL camera axes
    renderer = pyrender.OffscreenRenderer(size, size)
    try:
        images = []
        for k, ext in zip(cameras["intrinsics"], cameras["extrinsics"]):
            pose = np.linalg.inv(ext) @ flip  # camera-to-world, OpenGL axes
            cam = pyrender.IntrinsicsCamera(k[0, 0], k[1, 1], k[0, 2], k[1, 2], znear=0.01,
                                            zfar=1e4)
            cam_node = scene.add(cam, pose=pose)
            light = scene.add(pyrender.DirectionalLight(intensity=math.pi), pose=pose)
            color, _ = renderer.render(scene)
            scene.remove_node(cam_node)
            scene.remove_node(light)
            images.append(np.asarray(color[..., :3], dtype=np.uint8))
    finally:
        renderer.delete()
    return np.stack(images)


# ---- public ----------------------------------------------------------------------------------
def render_views(
    mesh,
    n_views: int = 8,
    image_size: int = 128,
    rng: np.random.Generator | None = None,
    *,
    elevations=None,
    azimuths=None,
    backend: str = "auto",
    yfov_deg: float = 40.0,
) -> tuple[np.ndarray, dict]:
    """Render ``mesh`` -> (images uint8 [V, H, W, 3], cameras dict; see module docstring).

    Views: explicit ``elevations``/``azimuths`` (degrees), else random (elevation uniform in
    [-10, 40], azimuth uniform) from ``rng``, else a turntable at 20 degrees elevation.
    ``cameras["backend"]`` says which backend drew the images.
    """
    if backend not in ("auto", "pyrender", "numpy"):
        raise ValueError(f"backend must be auto, pyrender or numpy, got {backend!r}")
    if elevations is None or azimuths is None:
        if rng is not None:
            elevations = rng.uniform(-10.0, 40.0, n_views)
            azimuths = rng.uniform(0.0, 360.0, n_views)
        else:
            elevations = np.full(n_views, 20.0)
            azimuths = np.arange(n_views) * 360.0 / n_views
    lo, hi = np.asarray(mesh.bounds, dtype=np.float64)
    center = (lo + hi) / 2
    radius = float(np.linalg.norm(np.asarray(mesh.vertices) - center, axis=1).max())
    cameras = make_cameras(center, max(radius, 1e-9), elevations, azimuths, image_size, yfov_deg)
    images = None
    if backend in ("auto", "pyrender"):
        try:
            images = _render_pyrender(mesh, cameras)
            cameras["backend"] = "pyrender"
        except Exception as e:  # noqa: BLE001 - any GL/EGL failure means: use the fallback
            if backend == "pyrender":
                raise RuntimeError(f"pyrender/EGL rendering failed: {e}") from e
            log.info("pyrender unavailable (%s); using the numpy rasteriser", e)
    if images is None:
        v = np.asarray(mesh.vertices, dtype=np.float64)
        f = np.asarray(mesh.faces, dtype=np.int64)
        images = np.stack([
            _rasterize_numpy(v, f, k, ext, image_size)
            for k, ext in zip(cameras["intrinsics"], cameras["extrinsics"])
        ])
        cameras["backend"] = "numpy"
    return images, cameras


def image_grid(images: np.ndarray, cols: int | None = None) -> np.ndarray:
    """Tile [V, H, W, 3] images into one [rows*H, cols*W, 3] image (blank cells white)."""
    v, h, w, _ = images.shape
    cols = cols or math.ceil(math.sqrt(v))
    rows = math.ceil(v / cols)
    grid = np.full((rows * h, cols * w, 3), BACKGROUND, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return grid


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 [H, W, 3] image as PNG atomically."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")
    return path


def turntable_png(
    mesh, path: str | Path, n: int = 8, image_size: int = 256, elevation: float = 20.0,
    backend: str = "auto",
) -> Path:
    """Render ``n`` views around the vertical axis and write them as one grid PNG."""
    images, _ = render_views(
        mesh, n, image_size, elevations=np.full(n, elevation),
        azimuths=np.arange(n) * 360.0 / n, backend=backend,
    )
    return save_png(image_grid(images, cols=min(n, 4)), path)
