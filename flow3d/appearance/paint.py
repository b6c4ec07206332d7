"""Procedural appearance: colour rules on a mesh's surface points, for training and evaluation.

Real textured assets are scarce here (two glTF models), so the appearance models train on the
CAPOD meshes painted by rules: each :class:`Painting` maps surface points (normalised frame,
with outward normals) to RGB in [0, 1]. The rules:

* ``parts``: a colour per geometric part (:func:`geometric_parts`: side / top-facing /
  bottom-facing surfaces, the side ones split by height): the same rule on another shape gives
  the *known* right answer of a part-aware transfer;
* ``stripes``, ``checker``, ``gradient``: periodic or linear colour in space;
* ``noise``: smooth random Fourier noise between two colours;
* ``texture``: an image bundled with scikit-image projected triplanarly (weights ``|n_i|^4``).

A painting is a small frozen record (kind, palette, axis, direction, scale, seed): painting the
same points twice gives the same colours, and :func:`random_painting` draws one from a
``numpy`` generator.
"""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np

__all__ = [
    "KINDS",
    "paint_faces",
    "paintable_faces",
    "painted_mesh",
    "TEXTURES",
    "Painting",
    "geometric_parts",
    "paint",
    "random_painting",
]

KINDS = ("parts", "stripes", "checker", "noise", "gradient", "texture")
TEXTURES = ("astronaut", "coffee", "chelsea", "rocket", "colorwheel", "immunohistochemistry")
NUM_PARTS = 4


@dataclasses.dataclass(frozen=True)
class Painting:
    """One colour rule. ``colors [K, 3]`` in [0, 1] (``parts`` uses 4, the others 2);
    ``axis``: the up axis of ``parts``; ``direction [3]``: stripes / gradient / texture
    orientation; ``scale``: stripe period, checker cell, noise wavelength or texture tile size,
    in normalised units; ``seed``: noise phases; ``texture``: a scikit-image image name."""

    kind: str
    colors: np.ndarray
    axis: int = 1
    direction: tuple[float, float, float] = (0.0, 1.0, 0.0)
    scale: float = 0.5
    seed: int = 0
    texture: str = "astronaut"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown painting {self.kind!r}; choose from {KINDS}")
        if self.kind == "texture" and self.texture not in TEXTURES:
            raise ValueError(f"unknown texture {self.texture!r}; choose from {TEXTURES}")


def geometric_parts(points: np.ndarray, normals: np.ndarray, axis: int = 1,
                    split: float = 0.4) -> np.ndarray:
    """Part of every point, ``[N]`` in {0, 1, 2, 3}: 2 = facing up (``n_axis > 0.7``),
    3 = facing down (``n_axis < -0.7``), else side surfaces below (0) or above (1) the height
    ``split`` of the points' own extent along ``axis``. Defined on any shape the same way."""
    n = normals[:, axis]
    h = points[:, axis]
    lo, hi = float(h.min()), float(h.max())
    rel = (h - lo) / max(hi - lo, 1e-9)
    part = np.where(rel < split, 0, 1)
    part = np.where(n > 0.7, 2, part)
    return np.where(n < -0.7, 3, part).astype(np.int64)


@cache
def _texture(name: str, size: int = 128) -> np.ndarray:
    """A scikit-image picture as ``[size, size, 3]`` float in [0, 1] (centre crop)."""
    import skimage.data
    from skimage.transform import resize

    img = np.asarray(getattr(skimage.data, name)(), dtype=np.float64)
    img = img[..., :3] / (255.0 if img.max() > 1.0 else 1.0)
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return resize(img, (size, size), anti_aliasing=True).astype(np.float32)


def _lookup(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Nearest texel of a tiled image at ``uv [N, 2]`` (any real values)."""
    s = img.shape[0]
    ij = np.floor(np.mod(uv, 1.0) * s).astype(np.int64).clip(0, s - 1)
    return img[ij[:, 0], ij[:, 1]]


def _noise(points: np.ndarray, scale: float, seed: int, waves: int = 8) -> np.ndarray:
    """Smooth noise in [0, 1]: random Fourier waves of wavelength about ``scale``."""
    rng = np.random.default_rng(seed)
    freq = rng.normal(size=(waves, 3)) / scale
    phase = rng.uniform(0, 2 * np.pi, waves)
    v = np.cos(2 * np.pi * points @ freq.T + phase).sum(-1) / np.sqrt(waves / 2)
    return 1.0 / (1.0 + np.exp(-2.0 * v))


def paint(points: np.ndarray, normals: np.ndarray, painting: Painting) -> np.ndarray:
    """RGB ``[N, 3]`` float32 in [0, 1] of surface ``points [N, 3]`` with unit ``normals``."""
    p = np.asarray(points, dtype=np.float64)
    c = np.asarray(painting.colors, dtype=np.float64)
    d = np.asarray(painting.direction, dtype=np.float64)
    d = d / max(np.linalg.norm(d), 1e-12)
    kind, s = painting.kind, painting.scale
    if kind == "parts":
        out = c[geometric_parts(p, normals, painting.axis)]
    elif kind == "stripes":
        out = c[(np.floor(p @ d / s).astype(np.int64) % 2)]
    elif kind == "checker":
        out = c[(np.floor(p / s).astype(np.int64).sum(-1) % 2)]
    elif kind == "noise":
        a = _noise(p, s, painting.seed)[:, None]
        out = (1 - a) * c[0] + a * c[1]
    elif kind == "gradient":
        a = ((p @ d) / 1.2 * 0.5 + 0.5).clip(0, 1)[:, None]
        out = (1 - a) * c[0] + a * c[1]
    else:  # texture, triplanar
        img = _texture(painting.texture)
        w = np.abs(np.asarray(normals, dtype=np.float64)) ** 4
        w = w / np.maximum(w.sum(-1, keepdims=True), 1e-12)
        shift = d[:2]
        out = sum(w[:, [k]] * _lookup(img, np.delete(p, k, axis=1) / s + shift) for k in range(3))
    return np.asarray(out, dtype=np.float32).clip(0.0, 1.0)


def _palette(rng: np.random.Generator, k: int) -> np.ndarray:
    """``k`` distinct random colours: hues spread apart, saturation and value in [0.3, 1]."""
    import colorsys

    h0 = rng.random()
    hues = (h0 + np.arange(k) / k + rng.uniform(-0.08, 0.08, k)) % 1.0
    rng.shuffle(hues)
    return np.array([colorsys.hsv_to_rgb(h, rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
                     for h in hues], dtype=np.float32)


def random_painting(rng: np.random.Generator, kinds: tuple[str, ...] = KINDS,
                    axis: int | None = None) -> Painting:
    """A painting drawn from ``rng``: kind uniform over ``kinds``, random palette, direction,
    scale in [0.15, 0.8], texture; ``axis`` (the up axis of ``parts``) random unless given."""
    kind = str(rng.choice(kinds))
    d = rng.normal(size=3)
    return Painting(
        kind=kind,
        colors=_palette(rng, NUM_PARTS if kind == "parts" else 2),
        axis=int(rng.integers(3)) if axis is None else int(axis),
        direction=tuple(float(v) for v in d / np.linalg.norm(d)),
        scale=float(np.exp(rng.uniform(np.log(0.15), np.log(0.8)))),
        seed=int(rng.integers(1 << 31)),
        texture=str(rng.choice(TEXTURES)),
    )


def painted_mesh(mesh, painting: Painting, *, max_edge: float = 0.05):
    """A copy of a trimesh painted by ``painting`` as face colours: subdivided in its own
    planes to edges of at most ``max_edge`` (normalised frame), the rule evaluated at each
    face's centroid with its outward normal (exact for ``parts``, whose colour is a function
    of the normal). Makes coloured test assets. To paint one mesh many times, subdivide once
    with :func:`paintable_faces` and call :func:`paint_faces` per painting."""
    return paint_faces(paintable_faces(mesh, max_edge=max_edge), painting)


def paintable_faces(mesh, *, max_edge: float = 0.05):
    """``(subdivided mesh, face centroids, outward face normals)`` for :func:`paint_faces`;
    centroids and normals in the normalised frame (the costly part: orienting the normals)."""
    import trimesh

    from flow3d.mesh.data import normalize_mesh
    from flow3d.mesh.sparse_vae import orient_normals

    normed, norm = normalize_mesh(mesh)
    v, f = trimesh.remesh.subdivide_to_size(np.asarray(mesh.vertices), np.asarray(mesh.faces),
                                            max_edge * float(norm.scale), max_iter=8)
    out = trimesh.Trimesh(v, f, process=False)
    centres = norm.apply(np.asarray(out.triangles_center)).astype(np.float32)
    nrm = orient_normals(normed, centres, np.asarray(out.face_normals, dtype=np.float32))
    return out, centres, nrm


def paint_faces(faces, painting: Painting):
    """A copy of :func:`paintable_faces`' mesh with ``painting``'s face colours."""
    import trimesh

    mesh, centres, nrm = faces
    out = mesh.copy()
    rgb = paint(centres, nrm, painting)
    out.visual = trimesh.visual.ColorVisuals(out, face_colors=np.concatenate(
        [(rgb * 255).round(), np.full((len(rgb), 1), 255)], 1).astype(np.uint8))
    return out
