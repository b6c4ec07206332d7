"""Mesh data: loading, normalisation, surface and SDF sampling, the on-disk cache, the dataset.

Pipeline per mesh: :func:`load_mesh` (any format trimesh reads, scenes merged, broken files
rejected with a one-line :class:`DataError`) -> :func:`normalize_mesh` (bounding-box centre at
the origin, longest side spanning [-1, 1]) -> :func:`sample_surface` (encoder input: points and
normals) and :func:`sample_sdf_supervision` (near-surface, volume and surface points with the
target SDF of :func:`flow3d.mesh.sdf.mesh_sdf`: winding-number sign plus a thin shell around open
sheets, so non-watertight meshes get a well-defined inside). :func:`build_mesh_cache` writes one
safetensors file per mesh in parallel; :class:`MeshDataset` reads them.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from flow3d.errors import DataError
from flow3d.io import atomic_path, atomic_write_text, is_temporary
from flow3d.mesh.extract import extract_hierarchical
from flow3d.mesh.render import render_views
from flow3d.mesh.sdf import SHELL_EPS, mesh_sdf, mesh_sdf_fn

MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
SUPERVISION_BOUNDS = 1.05  # SDF targets are drawn in [-1.05, 1.05]^3: the decoder's domain
# CAPOD.cla's class order (folder classN is class N - 1), fixed by the dataset
CAPOD_CLASSES = ("Human", "Dolphin", "Chair", "Airplane", "Tree", "Vase", "Desktop_computer",
                 "Hand", "Dog", "Guitar", "Piano", "Spider", "Horse", "Gun", "Car")


def require_trimesh():
    """trimesh, imported when first needed (it takes most of a second), or an ImportError
    naming the extra to install."""
    try:
        import trimesh
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("flow3d.mesh needs trimesh: pip install 'flow3d[mesh]'") from e
    return trimesh


# ---- loading ---------------------------------------------------------------------------------
def scene_geometries(loaded) -> list:
    """``[(geometry, 4x4 transform)]`` for every placed triangle mesh of what ``trimesh.load``
    returned: a Scene node by node (``Scene.dump`` would drop the glTF vertex colours), or one
    Trimesh with the identity."""
    trimesh = require_trimesh()
    if isinstance(loaded, trimesh.Scene):
        parts = [(loaded.geometry[name], transform) for node in loaded.graph.nodes_geometry
                 for transform, name in [loaded.graph[node]]]
    else:
        parts = [(loaded, np.eye(4))]
    return [(g, m) for g, m in parts if isinstance(g, trimesh.Trimesh) and len(g.faces)]


def gltf_vertex_colors(geometry) -> np.ndarray | None:
    """RGBA ``[V, 4]`` of a glTF geometry's ``COLOR_0``, which trimesh keeps as a vertex
    attribute when the primitive also has a material (as flow3d's coloured GLBs do), or None."""
    attrs = getattr(geometry.visual, "vertex_attributes", None)
    c = attrs.get("color") if attrs is not None else None
    return np.asarray(c) if c is not None and len(c) == len(geometry.vertices) else None


def load_mesh(path: str | Path):
    """Read a triangle mesh; GLB/GLTF scenes are merged into one mesh (node transforms applied).

    Visual attributes (colours, textures) are dropped: the pipeline is geometry only, so a file
    with NaN colours loads cleanly when its geometry is valid. Raises :class:`DataError` naming
    the file for: missing or empty files, parse errors, point clouds, files without faces,
    non-finite vertices, out-of-range face indices, and zero-size geometry.
    """
    trimesh = require_trimesh()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such mesh file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    try:
        loaded = trimesh.load(path, process=False)
    except Exception as e:  # noqa: BLE001 - any parser failure is the file's fault
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: cannot be read as a mesh ({msg})") from None
    if isinstance(loaded, trimesh.Scene):
        parts = loaded.dump()
        meshes = [g for g in parts if isinstance(g, trimesh.Trimesh) and len(g.faces)]
        if not parts:
            raise DataError(f"{path}: no geometry in file (empty mesh)")
        if not meshes:
            kinds = sorted({type(g).__name__ for g in parts})
            what = "point cloud without faces" if "PointCloud" in kinds else "no triangles"
            raise DataError(f"{path}: {what} (scene holds {len(parts)} geometries)")
        loaded = trimesh.util.concatenate(meshes) if len(meshes) > 1 else meshes[0]
    if isinstance(loaded, trimesh.PointCloud):
        raise DataError(f"{path}: point cloud without faces ({len(loaded.vertices)} points)")
    if not isinstance(loaded, trimesh.Trimesh):
        raise DataError(f"{path}: not a triangle mesh ({type(loaded).__name__})")
    vertices = np.asarray(loaded.vertices, dtype=np.float64)  # [V, 3]
    faces = np.asarray(loaded.faces, dtype=np.int64)  # [F, 3]
    if len(faces) == 0:
        raise DataError(f"{path}: mesh has no faces ({len(vertices)} vertices)")
    if not np.isfinite(vertices).all():
        raise DataError(f"{path}: vertices contain NaN or inf")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise DataError(f"{path}: face indices out of range [0, {len(vertices)})")
    mesh = trimesh.Trimesh(vertices, faces, process=True, validate=False)
    # Zero-area triangles carry no surface and break closest-point queries (NaN barycentrics).
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    if len(mesh.faces) == 0 or np.ptp(mesh.vertices, axis=0).max() <= 0:
        raise DataError(f"{path}: degenerate geometry (zero size)")
    if mesh.area <= 0:
        raise DataError(f"{path}: all faces have zero area")
    return mesh


def is_watertight_file(path: str | Path) -> bool:
    """Whether the mesh in ``path`` (already readable by :func:`load_mesh`) is closed as
    written: vertices merged by position, every triangle kept (zero-area ones included)."""
    trimesh = require_trimesh()
    loaded = trimesh.load(Path(path), force="mesh", process=False)
    merged = trimesh.Trimesh(np.asarray(loaded.vertices, dtype=np.float64),
                             np.asarray(loaded.faces, dtype=np.int64), process=True,
                             validate=False)
    return bool(merged.is_watertight)


@dataclass(frozen=True, eq=False)
class Normalization:
    """x_norm = (x - center) / scale; invert maps outputs back to the input's coordinates."""

    center: np.ndarray  # [3]
    scale: float

    def apply(self, x):
        """Points [..., 3] or a trimesh (copied) into the normalised frame."""
        return self._map(x, lambda p: (p - self.center) / self.scale)

    def invert(self, x):
        """Points [..., 3] or a trimesh (copied) back into the original frame."""
        return self._map(x, lambda p: p * self.scale + self.center)

    @staticmethod
    def _map(x, fn):
        if hasattr(x, "vertices") and hasattr(x, "faces"):
            out = x.copy()
            out.vertices = fn(np.asarray(x.vertices, dtype=np.float64))
            return out
        return fn(np.asarray(x, dtype=np.float64))

    def to_dict(self) -> dict:
        return {"center": [float(c) for c in self.center], "scale": float(self.scale)}

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(np.asarray(d["center"], dtype=np.float64), float(d["scale"]))


def normalize_mesh(mesh) -> tuple:
    """Centre the bounding box at the origin and scale its longest side to span [-1, 1]."""
    lo, hi = mesh.bounds  # [3], [3]
    norm = Normalization(center=(lo + hi) / 2.0, scale=float((hi - lo).max() / 2.0))
    if not norm.scale > 0:
        raise DataError("mesh has zero size: cannot normalise")
    return norm.apply(mesh), norm


def make_watertight(mesh, resolution: int = 256, eps: float = SHELL_EPS):
    """A watertight, consistently oriented mesh of the target solid of :func:`mesh_sdf`.

    Why winding numbers rather than point-cloud-utils' manifold conversion: see
    :mod:`flow3d.mesh.sdf` (the conversion offsets surfaces by 0.01-0.04 and hollows out meshes
    with holes; the winding-number solid fills holes and adds only an ``eps`` shell to open
    sheets). The zero level set is extracted with the sparse hierarchical marching cubes at
    ``resolution`` (a power of two >= 32) inside the bounding box of the normalised mesh.
    """
    normed, norm = normalize_mesh(mesh)
    # Extraction box: a margin of a few cells so the shell around the boundary is closed.
    bounds = 1.0 + 4.0 / resolution + eps
    res = extract_hierarchical(
        mesh_sdf_fn(normed, eps), resolution, coarse=min(32, resolution), bounds=bounds
    )
    return norm.invert(res.mesh)


# ---- sampling --------------------------------------------------------------------------------
def sample_surface(mesh, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted uniform surface samples: points [n, 3] and unit face normals [n, 3]."""
    tri = np.asarray(mesh.triangles, dtype=np.float64)  # [F, 3, 3]
    area = np.asarray(mesh.area_faces, dtype=np.float64)  # [F]
    face = rng.choice(len(area), size=n, p=area / area.sum())  # [n]
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1.0  # reflect into the triangle: uniform barycentrics
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    a, b, c = tri[face, 0], tri[face, 1], tri[face, 2]
    points = a + u[:, None] * (b - a) + v[:, None] * (c - a)
    normals = np.asarray(mesh.face_normals, dtype=np.float64)[face]
    return points.astype(np.float32), normals.astype(np.float32)


def sample_sdf_supervision(
    mesh,
    n_near: int,
    n_volume: int,
    n_surface: int,
    rng: np.random.Generator,
    near_std: tuple[float, ...] = (0.005, 0.02),
    eps: float = SHELL_EPS,
    bounds: float = SUPERVISION_BOUNDS,
) -> tuple[np.ndarray, np.ndarray]:
    """Query points [M, 3] and their target SDF [M] (negative inside), M = sum of the counts.

    near: surface samples plus N(0, std^2) noise, split evenly over ``near_std``; volume:
    uniform in [-bounds, bounds]^3; surface: points on the mesh (their SDF is computed, not
    assumed: -eps under the shell definition). Order: near, volume, surface.
    """
    parts = []
    if n_near:
        p, _ = sample_surface(mesh, n_near, rng)
        std = np.asarray(near_std, dtype=np.float64)[np.arange(n_near) % len(near_std)]
        parts.append(p + rng.normal(size=(n_near, 3)) * std[:, None])
    if n_volume:
        parts.append(rng.uniform(-bounds, bounds, size=(n_volume, 3)))
    if n_surface:
        parts.append(sample_surface(mesh, n_surface, rng)[0])
    points = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 3), np.float32)
    return points, mesh_sdf(mesh, points, eps)


# ---- files and CAPOD ------------------------------------------------------------------------
def list_mesh_files(root: str | Path) -> list[Path]:
    """All mesh files under ``root`` (recursive, sorted), by suffix."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES
                  and not is_temporary(p))


_CLASS_DIR = re.compile(r"^class(\d+)$")


def capod_class_of(path: str | Path) -> int:
    """Class id (0-based) of a CAPOD mesh from its folder name ``classN``; -1 if not CAPOD."""
    m = _CLASS_DIR.match(Path(path).parent.name)
    return int(m.group(1)) - 1 if m else -1


def mesh_id(path: str | Path, root: str | Path | None = None) -> str:
    """Stable id: the path relative to ``root`` without suffix, '/' replaced by '__'."""
    path = Path(path)
    if root is None:
        rel = Path(path.parent.name) / path.name
    else:  # resolve both, so relative file names and an absolute root agree
        rel = path.resolve().relative_to(Path(root).resolve())
    return "__".join(rel.with_suffix("").parts)


_CAPOD_ID = re.compile(r"(?:^|__)class(\d+)__m(\d+)$")


def capod_key(name: str | Path) -> tuple[int, int] | None:
    """(class folder number, mesh number) of a CAPOD mesh, from its path (``class3/m12.obj``)
    or its cache id (``capod__class3__m12``); None for any other mesh."""
    if isinstance(name, Path):
        name = f"{name.parent.name}__{name.stem}"
    m = _CAPOD_ID.search(str(name))
    return (int(m.group(1)), int(m.group(2))) if m else None


def capod_heldout(keys, holdout_per_class: int) -> set[tuple[int, int]]:
    """The split rule, the only copy: per class, the ``holdout_per_class`` meshes with the
    highest numbers are held out, and at least one stays in training. ``keys`` are
    :func:`capod_key` values; deterministic, so every run and every cache agree."""
    by_class: dict[int, list[int]] = {}
    for cls, num in keys:
        by_class.setdefault(cls, []).append(num)
    held = set()
    for cls, nums in by_class.items():
        nums = sorted(set(nums))
        k = min(holdout_per_class, max(len(nums) - 1, 0))
        held |= {(cls, n) for n in nums[len(nums) - k :]}
    return held


def capod_split(root: str | Path, holdout_per_class: int = 1) -> tuple[list[Path], list[Path]]:
    """(train, held_out) CAPOD ``.obj`` files under ``root`` by :func:`capod_heldout`."""
    root = Path(root)
    files = sorted((f for d in root.iterdir() if d.is_dir() and _CLASS_DIR.match(d.name)
                    for f in d.glob("*.obj") if capod_key(f) is not None), key=capod_key)
    if not files:
        raise DataError(f"{root}: no CAPOD classN folders")
    held = capod_heldout([capod_key(f) for f in files], holdout_per_class)
    return ([f for f in files if capod_key(f) not in held],
            [f for f in files if capod_key(f) in held])


# ---- cache -----------------------------------------------------------------------------------
@dataclass
class CacheReport:
    kept: list[str]
    skipped: dict[str, str]  # mesh path -> reason
    seconds: float

    @property
    def meshes_per_minute(self) -> float:
        return 60.0 * len(self.kept) / max(self.seconds, 1e-9)


def _seed_of(key: str, seed: int) -> int:
    return zlib.crc32(key.encode()) ^ (seed * 0x9E3779B1 & 0xFFFFFFFF)


def _guarded(path, work) -> tuple[str, str | None, str | None]:
    """Run one cache job: (path, mesh id, None) or (path, None, reason). One bad mesh must not
    stop a batch, so unexpected failures become skip reasons that say what happened."""
    try:
        return str(path), work(), None
    except DataError as e:
        return str(path), None, str(e)
    except Exception as e:  # noqa: BLE001 - reported as a skip reason, see docstring
        return str(path), None, f"{path}: unexpected {type(e).__name__}: {e}"


def _save_record(cache_dir, file_name: str, tensors: dict, meta: dict) -> None:
    with atomic_path(Path(cache_dir) / file_name) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _cache_one(args) -> tuple[str, str | None, str | None]:
    """Worker: one mesh -> ``<mesh_id>.safetensors`` (surface samples, SDF supervision)."""
    path, root, cache_dir, n_surface, n_near, n_volume, seed = args
    torch.set_num_threads(1)

    def work() -> str:
        mid = mesh_id(path, root)
        mesh, norm = normalize_mesh(load_mesh(path))
        rng = np.random.default_rng(_seed_of(mid, seed))
        surf, normals = sample_surface(mesh, n_surface, rng)
        q, s = sample_sdf_supervision(mesh, n_near, n_volume, n_surface // 4, rng)
        if not (np.isfinite(s).all() and np.isfinite(surf).all() and np.isfinite(normals).all()):
            raise DataError(f"{path}: non-finite SDF or surface samples")
        tensors = {
            "surface_points": surf, "surface_normals": normals,
            "query_points": q, "query_sdf": s,
            "center": norm.center.astype(np.float64), "scale": np.array([norm.scale]),
        }
        meta = {"path": str(path), "class_id": str(capod_class_of(path)), "mesh_id": mid}
        _save_record(cache_dir, f"{mid}.safetensors", tensors, meta)
        return mid

    return _guarded(path, work)


def build_mesh_cache(
    files,
    cache_dir: str | Path,
    *,
    n_surface: int = 16384,
    n_near: int = 65536,
    n_volume: int = 32768,
    workers: int = 1,
    root: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> CacheReport:
    """Preprocess meshes into ``cache_dir/<mesh_id>.safetensors`` (one file per mesh).

    Per mesh: surface points/normals [n_surface, 3], query points [n_near + n_volume +
    n_surface // 4, 3] with target SDF, and the normalisation. Broken files are skipped with
    their reason (also written to ``cache_dir/report.json``). ``workers`` processes in parallel.
    """
    files = [Path(f) for f in files]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if root is None and files:
        root = _common_root(files)
    jobs = [(f, root, cache_dir, n_surface, n_near, n_volume, seed) for f in files]
    report = _run_jobs(_cache_one, jobs, workers, "mesh cache", progress)
    _write_report(cache_dir / "report.json", report)
    return report


def _write_report(path: Path, report: CacheReport) -> None:
    body = {"kept": report.kept, "skipped": report.skipped, "seconds": report.seconds}
    atomic_write_text(path, json.dumps(body, indent=1))


def _run_jobs(fn, jobs: list, workers: int, desc: str, progress: bool) -> CacheReport:
    """Run ``fn(job) -> (path, mesh id or None, error)`` over jobs, in ``workers`` processes."""
    t0 = time.perf_counter()
    kept, skipped = [], {}
    bar = tqdm(total=len(jobs), desc=desc, unit="mesh", disable=not progress)

    def record(result) -> None:
        path, mid, err = result
        if err is None:
            kept.append(mid)
        else:
            skipped[path] = err
        bar.update()

    if workers > 1:
        # spawn, not fork: forking a process that already runs torch threads can deadlock.
        with mp.get_context("spawn").Pool(workers) as pool:
            for result in pool.imap_unordered(fn, jobs):
                record(result)
    else:
        for job in jobs:
            record(fn(job))
    bar.close()
    return CacheReport(sorted(kept), skipped, time.perf_counter() - t0)


def _views_one(args) -> tuple[str, str | None, str | None]:
    """Worker: render one normalised mesh -> ``<mesh_id>.views.safetensors``."""
    path, root, cache_dir, n_views, image_size, backend, seed = args
    torch.set_num_threads(1)

    def work() -> str:
        mid = mesh_id(path, root)
        mesh, _ = normalize_mesh(load_mesh(path))
        rng = np.random.default_rng(_seed_of(mid + "/views", seed))
        images, cams = render_views(mesh, n_views, image_size, rng, backend=backend)
        tensors = {
            "images": images, "intrinsics": cams["intrinsics"], "extrinsics": cams["extrinsics"],
            "elevations": cams["elevations"], "azimuths": cams["azimuths"],
        }
        meta = {"mesh_id": mid, "backend": cams["backend"], "path": str(path)}
        _save_record(cache_dir, f"{mid}.views.safetensors", tensors, meta)
        return mid

    return _guarded(path, work)


def build_view_cache(
    files,
    cache_dir: str | Path,
    *,
    n_views: int = 8,
    image_size: int = 128,
    backend: str = "numpy",
    workers: int = 1,
    root: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> CacheReport:
    """Conditioning images: ``n_views`` random shaded renders of each normalised mesh with their
    cameras (in the normalised frame of the SDF cache), as ``<mesh_id>.views.safetensors``.

    ``backend="numpy"`` by default: on this CPU the numpy rasteriser is ~10x faster than
    pyrender over EGL's software renderer; ``"auto"``/``"pyrender"`` use OpenGL.
    """
    files = [Path(f) for f in files]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    root = _common_root(files) if root is None and files else root
    jobs = [(f, root, cache_dir, n_views, image_size, backend, seed) for f in files]
    report = _run_jobs(_views_one, jobs, workers, "mesh views", progress)
    _write_report(cache_dir / "views_report.json", report)
    return report


def _common_root(files: list[Path]) -> Path:
    return Path(os.path.commonpath([str(f.parent.absolute()) for f in files]))


def cached_meshes(cache_dir: str | Path) -> list[Path]:
    """The per-mesh files of a cache folder (not their views, not a killed writer's
    temporaries), sorted."""
    return sorted(f for f in Path(cache_dir).glob("*.safetensors")
                  if not f.stem.endswith(".views") and not is_temporary(f))


class MeshDataset(torch.utils.data.Dataset):
    """Items from a cache folder; each draws random subsets of its cached points.

    item: surface_points [n_surface, 3], surface_normals [n_surface, 3], query_points
    [n_query, 3], query_sdf [n_query], class_id (int, -1 outside CAPOD), mesh_id (str), index;
    when :func:`build_view_cache` has run: images uint8 [V, H, W, 3], intrinsics [V, 3, 3],
    extrinsics [V, 4, 4] (world-to-camera, OpenCV axes, normalised frame).
    ``split``: "all", or "train" / "heldout" from :func:`capod_split` (non-CAPOD meshes are
    training meshes), or an explicit list of mesh ids. Subsets are drawn with a generator
    seeded by (seed, index, epoch) so items are reproducible; call ``set_epoch`` to vary them.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        n_surface: int = 2048,
        n_query: int = 4096,
        split="all",
        holdout_per_class: int = 1,
        seed: int = 0,
    ):
        self.cache_dir = Path(cache_dir)
        files = cached_meshes(self.cache_dir)
        if not files:
            raise DataError(f"{self.cache_dir}: no cached meshes (*.safetensors)")
        ids = [f.stem for f in files]
        if split != "all":
            if isinstance(split, str):
                if split not in ("train", "heldout"):
                    raise DataError(f"split must be all/train/heldout or a list, got {split!r}")
                keys = [capod_key(i) for i in ids]
                held = capod_heldout([k for k in keys if k is not None], holdout_per_class)
                keep = [(k in held) == (split == "heldout") for k in keys]
            else:
                wanted = set(split)
                keep = [i in wanted for i in ids]
            files = [f for f, k in zip(files, keep) if k]
        self.files = files
        self.n_surface, self.n_query, self.seed, self.epoch = n_surface, n_query, seed, 0
        self._cache: dict[int, tuple[dict, dict]] = {}

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _load(self, i: int):
        if i not in self._cache:
            with safe_open(str(self.files[i]), "np") as f:
                meta = f.metadata()
            tensors = load_file(str(self.files[i]))
            views = self.files[i].with_name(self.files[i].stem + ".views.safetensors")
            if views.is_file():
                tensors.update({f"view_{k}": v for k, v in load_file(str(views)).items()})
            self._cache[i] = (tensors, meta)
        return self._cache[i]

    def __getitem__(self, i: int) -> dict:
        t, meta = self._load(i)
        for key, n in (("surface_points", self.n_surface), ("query_points", self.n_query)):
            if n > len(t[key]):
                raise DataError(f"{self.files[i]}: {n} {key} requested, {len(t[key])} cached")
        rng = np.random.default_rng([self.seed, i, self.epoch])
        s = rng.choice(len(t["surface_points"]), self.n_surface, replace=False)
        q = rng.choice(len(t["query_points"]), self.n_query, replace=False)
        item = {
            "surface_points": torch.from_numpy(t["surface_points"][s]),
            "surface_normals": torch.from_numpy(t["surface_normals"][s]),
            "query_points": torch.from_numpy(t["query_points"][q]),
            "query_sdf": torch.from_numpy(t["query_sdf"][q]),
            "class_id": int(meta["class_id"]),
            "mesh_id": meta["mesh_id"],
            "index": i,
        }
        if "view_images" in t:  # all cached views; the model picks one per step
            item["images"] = torch.from_numpy(t["view_images"])  # uint8 [V, H, W, 3]
            item["intrinsics"] = torch.from_numpy(t["view_intrinsics"])  # [V, 3, 3]
            item["extrinsics"] = torch.from_numpy(t["view_extrinsics"])  # [V, 4, 4]
        return item

    def source_path(self, i: int) -> Path:
        """The original mesh file of item ``i``, as recorded in its cache metadata."""
        with safe_open(str(self.files[i]), "np") as f:
            return Path(f.metadata()["path"])

    def normalization(self, i: int) -> Normalization:
        t, _ = self._load(i)
        return Normalization(t["center"], float(t["scale"][0]))
