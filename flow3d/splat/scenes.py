"""Multi-view scenes for SplatFlow: CAPOD meshes painted by procedural rules, rendered from
varied cameras with colour, mask and exact depth, cached once.

A *scene* is one painted mesh seen from ``views`` cameras at ``size``^2 pixels:
``rgb [V, H, W, 3]`` (straight colour, uint8), ``mask [V, H, W]`` (pixel coverage, uint8),
``depth [V, H, W]`` (camera z in scene units, 0 on the background, float16) and the cameras
(``K [V, 3, 3]``, world-to-camera ``viewmats [V, 4, 4]``, OpenCV axes, as
:class:`~flow3d.splat.cameras.Cameras`). The mesh sits in the frame of ``flow3d splat views``:
bounding box centred at the origin, longest side 1, y up.

Appearance matters (issue 16): every scene is painted afresh by a random rule of
:mod:`flow3d.appearance.paint` (per-part colours, stripes, checkers, noise, gradients,
scikit-image pictures projected triplanarly). Cameras vary so that poses are worth estimating
(:func:`scene_cameras`): either an orbit (even azimuths from a random start, one elevation) or
scattered views (random azimuths, elevations spread in ``sin``), each at its own distance
(0.85-1.2 x the distance at which the bounding sphere fills the view) looking at a jittered
point near the centre.

Split: the CAPOD rule of :func:`flow3d.mesh.data.capod_split` (per class, the highest-numbered
``holdout_per_class`` meshes are held out): held-out meshes are never rendered into the
training cache. The cache is one file per mesh under ``<cache_dir>/<key>/<split>/``, so a killed
build resumes where it stopped; ``key`` names the settings that change the pixels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flow3d.errors import DataError
from flow3d.io import atomic_path, is_temporary
from flow3d.options import check_float, check_int
from flow3d.splat.cameras import Cameras

__all__ = ["SceneBatch", "SceneDataConfig", "SceneSet", "build_scene_cache", "load_scenes",
           "render_painting", "scene_cameras"]

KINDS = ("parts", "stripes", "checker", "noise", "gradient", "texture")
SPLITS = ("train", "heldout")
RENDER_VERSION = "2s"  # in the cache key: renders changed (2s: two-sided faces, session 16)


@dataclasses.dataclass(frozen=True)
class SceneDataConfig:
    """The ``data`` section of the SplatFlow recipes."""

    root: str = "../shared/data/meshes/capod"
    cache_dir: str = "runs/splat_scenes"
    holdout_per_class: int = 2
    views: int = 8
    size: int = 64
    fov_deg: float = 40.0
    paintings: int = 8  # scenes per training mesh (a new painting and new cameras each)
    heldout_paintings: int = 2  # scenes per held-out mesh
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        check_int(self.holdout_per_class, "data.holdout_per_class", lo=0, hi=1000)
        check_int(self.views, "data.views", lo=2, hi=64)
        check_int(self.size, "data.size", lo=16, hi=512)
        check_float(self.fov_deg, "data.fov_deg", lo=10.0, hi=120.0)
        check_int(self.paintings, "data.paintings", lo=1, hi=1000)
        check_int(self.heldout_paintings, "data.heldout_paintings", lo=1, hi=1000)
        check_int(self.seed, "data.seed", lo=0, hi=2**31 - 1)

    @property
    def key(self) -> str:
        """Names the settings that change the rendered pixels (not the paths)."""
        return (f"v{self.views}_s{self.size}_f{self.fov_deg:g}_p{self.paintings}"
                f"x{self.heldout_paintings}_h{self.holdout_per_class}_seed{self.seed}"
                f"_{RENDER_VERSION}")


@dataclasses.dataclass(frozen=True)
class SceneSet:
    """N scenes of V views at H x W (see the module docstring for each field's meaning)."""

    rgb: Tensor  # [N, V, H, W, 3] uint8
    mask: Tensor  # [N, V, H, W] uint8
    depth: Tensor  # [N, V, H, W] float16
    K: Tensor  # [N, V, 3, 3] float32
    viewmats: Tensor  # [N, V, 4, 4] float32
    label: Tensor  # [N] CAPOD class index (0-14)
    kind: Tensor  # [N] index into KINDS (the painting rule)
    mesh_ids: tuple[str, ...]

    def __len__(self) -> int:
        return self.rgb.shape[0]

    def batch(self, index) -> SceneBatch:
        """Scenes ``index`` as float tensors in [0, 1] (depth in scene units). Depth is read at
        the pixel centre and coverage from 4 other samples, so at silhouettes a pixel can have
        depth and no coverage (colour 0): such depth is dropped here."""
        index = torch.as_tensor(index, dtype=torch.long)
        mask = self.mask[index].float().unsqueeze(-1) / 255.0
        return SceneBatch(rgb=self.rgb[index].float() / 255.0, mask=mask,
                          depth=self.depth[index].float().unsqueeze(-1) * (mask > 0),
                          K=self.K[index], viewmats=self.viewmats[index],
                          label=self.label[index], size=int(self.rgb.shape[-2]))


@dataclasses.dataclass
class SceneBatch:  # not frozen: Lightning moves batches field by field
    """B scenes as floats: ``rgb [B, V, H, W, 3]`` in [0, 1], ``mask [B, V, H, W, 1]``,
    ``depth [B, V, H, W, 1]``, cameras ``K``, ``viewmats``, ``label [B]``."""

    rgb: Tensor
    mask: Tensor
    depth: Tensor
    K: Tensor
    viewmats: Tensor
    label: Tensor
    size: int

    def cameras(self, b: int, views=None) -> Cameras:
        """The cameras of scene ``b`` (all views, or the ``views`` index)."""
        idx = slice(None) if views is None else torch.as_tensor(views, dtype=torch.long)
        return Cameras(self.K[b, idx], self.viewmats[b, idx], self.size, self.size)

    def views(self, index) -> SceneBatch:
        """The same scenes restricted to the views ``index`` (one list for every scene)."""
        i = torch.as_tensor(index, dtype=torch.long)
        return dataclasses.replace(self, rgb=self.rgb[:, i], mask=self.mask[:, i],
                                   depth=self.depth[:, i], K=self.K[:, i],
                                   viewmats=self.viewmats[:, i])


# ---- cameras -------------------------------------------------------------------------------
def scene_cameras(rng: np.random.Generator, num: int, *, radius: float, size: int,
                  fov_deg: float) -> Cameras:
    """``num`` cameras around an object of bounding radius ``radius`` (module docstring):
    an orbit or scattered views, each at its own distance and jittered look-at point."""
    base = radius / math.sin(math.radians(fov_deg) / 2)
    if rng.random() < 0.5:  # an orbit
        az = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(num) / num
        el = np.full(num, np.radians(rng.uniform(-10.0, 45.0)))
    else:  # scattered over the band
        az = rng.uniform(0, 2 * np.pi, num)
        el = np.arcsin(rng.uniform(np.sin(np.radians(-20.0)), np.sin(np.radians(60.0)), num))
    dist = base * rng.uniform(0.85, 1.2, num)
    eyes = dist[:, None] * np.stack([np.cos(el) * np.sin(az), np.sin(el),
                                     np.cos(el) * np.cos(az)], axis=-1)
    targets = rng.normal(0.0, 0.04, (num, 3))
    return Cameras.look_at(torch.from_numpy(eyes), torch.from_numpy(targets), fov_deg=fov_deg,
                           width=size, height=size)


# ---- building the cache ----------------------------------------------------------------------
def _seed(*parts) -> int:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)


def _render_mesh_scenes(path: Path, mesh_id: str, count: int, d: SceneDataConfig) -> dict:
    """``count`` scenes of one mesh: painted, placed, rendered."""
    from flow3d.appearance.paint import paint_faces, paintable_faces, random_painting
    from flow3d.mesh.data import capod_class_of, load_mesh, normalize_mesh
    from flow3d.splat.views import render_mesh

    mesh, _ = normalize_mesh(load_mesh(path))
    mesh.apply_scale(0.5)  # longest side 1, as flow3d splat views
    radius = float(np.linalg.norm(mesh.vertices, axis=1).max())
    faces = paintable_faces(mesh)  # once per mesh: orienting normals is the costly part
    out = {k: [] for k in ("rgb", "mask", "depth", "K", "viewmats", "kind")}
    for p in range(count):
        rng = np.random.default_rng(_seed(d.seed, mesh_id, p))
        painting = random_painting(rng)
        painted = paint_faces(faces, painting)
        cams = scene_cameras(rng, d.views, radius=radius, size=d.size, fov_deg=d.fov_deg)
        rgba, depth = render_mesh([painted], cams)
        out["rgb"].append(torch.from_numpy(rgba[..., :3].copy()))
        out["mask"].append(torch.from_numpy(rgba[..., 3].copy()))
        out["depth"].append(torch.from_numpy(depth).to(torch.float16))
        out["K"].append(cams.K.float())
        out["viewmats"].append(cams.viewmats.float())
        out["kind"].append(KINDS.index(painting.kind))
    scenes = {k: torch.stack(v) if k != "kind" else torch.tensor(v) for k, v in out.items()}
    scenes["label"] = torch.full((count,), capod_class_of(path), dtype=torch.long)
    return scenes


def render_painting(d: SceneDataConfig, split: str, mesh_id: str, painting: int,
                    size: int) -> dict:
    """Painting ``painting`` of mesh ``mesh_id`` (of ``split``) rendered again at ``size``^2:
    the cached scene's painting and cameras (the same seeds), more pixels (``rgb``, ``mask``,
    ``depth``, ``K``, ``viewmats`` of its views). For scoring a scene decoded at the cached
    size against what a larger render would show."""
    files = {_mesh_id(f): f for f in _split_files(d)[split]}
    if mesh_id not in files:
        raise DataError(f"{mesh_id}: no such mesh in the {split} split of {d.root}")
    scenes = _render_mesh_scenes(files[mesh_id], mesh_id, painting + 1,
                                 dataclasses.replace(d, size=size))
    return {k: scenes[k][painting] for k in ("rgb", "mask", "depth", "K", "viewmats")}


def _split_files(d: SceneDataConfig) -> dict[str, list[Path]]:
    from flow3d.mesh.data import capod_split

    root = Path(d.root)
    if not root.is_dir():
        raise DataError(f"{root}: mesh folder not found (data.root)")
    train, held = capod_split(root, d.holdout_per_class)
    return {"train": train, "heldout": held}


def _mesh_id(path: Path) -> str:
    return f"{path.parent.name}_{path.stem}"


def build_scene_cache(d: SceneDataConfig, splits=SPLITS) -> Path:
    """Render every missing scene file of ``splits`` (resumable); returns the cache folder."""
    from tqdm import tqdm

    folder = Path(d.cache_dir) / d.key
    files = _split_files(d)
    for split in splits:
        out = folder / split
        out.mkdir(parents=True, exist_ok=True)
        count = d.paintings if split == "train" else d.heldout_paintings
        todo = [f for f in files[split] if not (out / f"{_mesh_id(f)}.pt").is_file()]
        for f in tqdm(todo, desc=f"splat scenes ({split})", unit="mesh",
                      disable=not d.progress or not todo):
            scenes = _render_mesh_scenes(f, _mesh_id(f), count, d)
            with atomic_path(out / f"{_mesh_id(f)}.pt") as tmp:
                torch.save(scenes, tmp)
    return folder


def load_scenes(d: SceneDataConfig, split: str = "train", *, build: bool = True) -> SceneSet:
    """The cached scenes of ``split`` (built first when ``build`` and files are missing)."""
    if split not in SPLITS:
        raise DataError(f"unknown scene split {split!r} (choose from {SPLITS})")
    folder = Path(d.cache_dir) / d.key / split
    expected = {_mesh_id(f) for f in _split_files(d)[split]}
    have = {p.stem for p in folder.glob("*.pt") if not is_temporary(p)} if folder.is_dir() \
        else set()
    if expected - have:
        if not build:
            raise DataError(f"{folder}: {len(expected - have)} of {len(expected)} scene files "
                            f"missing (build the cache: flow3d train with this recipe)")
        build_scene_cache(d, splits=(split,))
    parts, ids = [], []
    for mid in sorted(expected):
        s = torch.load(folder / f"{mid}.pt", weights_only=True)
        parts.append(s)
        ids += [mid] * len(s["label"])
    cat = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return SceneSet(rgb=cat["rgb"], mask=cat["mask"], depth=cat["depth"], K=cat["K"],
                    viewmats=cat["viewmats"], label=cat["label"], kind=cat["kind"],
                    mesh_ids=tuple(ids))
