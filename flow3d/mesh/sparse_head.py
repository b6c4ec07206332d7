"""The ``mesh_svae`` head: trains :class:`~flow3d.mesh.sparse_vae.SparseSDFVAE` on the mesh cache.

``flow3d train recipes/mesh/svae_cpu.yaml``. Data: the SDF cache of
:func:`flow3d.mesh.data.build_mesh_cache` plus, per mesh, its active voxels
(:func:`build_voxel_cache`, in ``<cache_dir>/voxels_r<R>/``, a sub-folder so that
:class:`~flow3d.mesh.data.MeshDataset` never mistakes them for meshes). Each item keeps the
SDF supervision points that lie in its active voxels (the field is defined there only).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flow3d.engine.head import Head
from flow3d.errors import DataError
from flow3d.mesh.data import (
    MeshDataset,
    _guarded,
    _run_jobs,
    _save_record,
    _write_report,
    cached_meshes,
)
from flow3d.mesh.head import ensure_mesh_cache
from flow3d.mesh.sparse_vae import SparseBatch, SparseSDFVAE, svae_loss
from flow3d.mesh.vae import VAELossWeights
from flow3d.mesh.voxels import DEFAULT_BOUNDS, SparseVoxels

__all__ = [
    "MeshSVAEDataConfig",
    "MeshSVAEHead",
    "MeshSVAEModelConfig",
    "MeshSVAESampleConfig",
    "SparseMeshDataset",
    "build_voxel_cache",
    "load_svae",
]


# ---- recipe sections ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MeshSVAEModelConfig:
    resolution: int = 32
    bounds: float = DEFAULT_BOUNDS
    width: int = 32
    latent_dim: int = 8
    enc_blocks: int = 2
    dec_blocks: int = 3
    num_freqs: int = 3
    mlp_width: int = 64
    truncation: float = 0.1
    num_grad: int = 256  # points per shape for the normal and eikonal terms
    loss: VAELossWeights = VAELossWeights(kl=1e-5)


@dataclasses.dataclass(frozen=True)
class MeshSVAEDataConfig:
    root: str = "../shared/data/meshes/capod"
    cache_dir: str = "runs/mesh_svae_cache"
    holdout_per_class: int = 2  # CAPOD meshes per class kept out of training
    n_surface: int = 8192  # encoder points per item
    n_query: int = 4096  # SDF supervision points per item (inside active voxels)
    cache_surface: int = 16384
    cache_near: int = 32768
    cache_volume: int = 8192
    workers: int = 1


@dataclasses.dataclass(frozen=True)
class MeshSVAESampleConfig:
    """``sample`` reconstructs the first ``num`` meshes of ``split``."""

    split: str = "heldout"
    resolution: int = 256


# ---- the voxel cache ---------------------------------------------------------------------------
def voxel_dir(cache_dir: str | Path, resolution: int) -> Path:
    return Path(cache_dir) / f"voxels_r{resolution}"


def _voxels_one(args) -> tuple[str, str | None, str | None]:
    record, out_dir, resolution, bounds, per_voxel = args
    torch.set_num_threads(1)

    def work() -> str:
        from safetensors import safe_open

        from flow3d.mesh.data import _seed_of, load_mesh, normalize_mesh
        from flow3d.mesh.sdf import mesh_sdf
        from flow3d.mesh.voxels import shape_active_voxels

        with safe_open(str(record), "np") as f:
            meta = f.metadata()
        mesh, _ = normalize_mesh(load_mesh(meta["path"]))
        coords = shape_active_voxels(mesh, resolution, bounds)
        # Uniform supervision inside every active voxel: near-surface samples (std <= 0.02)
        # rarely reach the outer layer of the dilated shell, where the decoder must still
        # say "outside"; without these, it left spurious sheets there.
        rng = np.random.default_rng(_seed_of(meta["mesh_id"] + "/voxels", 0))
        u = np.repeat(coords, per_voxel, axis=0) + rng.random((len(coords) * per_voxel, 3))
        pts = (u * (2 * bounds / resolution) - bounds).astype(np.float32)
        from safetensors.numpy import load_file

        from flow3d.mesh.sparse_vae import orient_normals

        cached = load_file(str(record))
        tensors = {
            "coords": np.ascontiguousarray(coords, dtype=np.int16),
            "voxel_query_points": pts, "voxel_query_sdf": mesh_sdf(mesh, pts),
            "surface_normals": orient_normals(mesh, cached["surface_points"],
                                              cached["surface_normals"]),
        }
        _save_record(out_dir, f"{meta['mesh_id']}.safetensors", tensors,
                     {"resolution": str(resolution), "bounds": repr(bounds), **meta})
        return meta["mesh_id"]

    return _guarded(record, work)


def build_voxel_cache(cache_dir: str | Path, resolution: int = 32, bounds: float = DEFAULT_BOUNDS,
                      *, per_voxel: int = 8, workers: int = 1, progress: bool = True):
    """Active voxels of every cached mesh (missing ones only) into :func:`voxel_dir`, with
    ``per_voxel`` uniform points in each and their target SDF, and the cached surface normals
    oriented out of the target solid (:func:`~flow3d.mesh.sparse_vae.orient_normals`)."""
    cache_dir = Path(cache_dir)
    out = voxel_dir(cache_dir, resolution)
    out.mkdir(parents=True, exist_ok=True)
    records = cached_meshes(cache_dir)
    jobs = [(r, out, resolution, bounds, per_voxel) for r in records
            if not (out / r.name).is_file()]
    report = _run_jobs(_voxels_one, jobs, workers, "active voxels", progress and bool(jobs))
    _write_report(out / "report.json", report)
    return report


# ---- dataset ---------------------------------------------------------------------------------
class SparseMeshDataset(MeshDataset):
    """:class:`MeshDataset` items plus ``coords: [M, 3]`` (active voxels); half the query
    points are the cache's SDF samples that lie inside active voxels (mostly near the
    surface), half the voxel cache's uniform samples of the active voxels."""

    def __init__(self, cache_dir, resolution: int = 32, bounds: float = DEFAULT_BOUNDS,
                 n_surface: int = 8192, n_query: int = 4096, split="all",
                 holdout_per_class: int = 2, seed: int = 0):
        super().__init__(cache_dir, n_surface, n_query, split, holdout_per_class, seed)
        self.resolution, self.bounds = resolution, bounds
        self.voxel_dir = voxel_dir(cache_dir, resolution)
        self._voxels: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def voxels(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(active voxels [M, 3] int64, indices of the cached queries inside them)."""
        if i not in self._voxels:
            from safetensors.numpy import load_file

            f = self.voxel_dir / self.files[i].name
            if not f.is_file():
                raise DataError(f"{f}: active voxels not cached (build_voxel_cache)")
            vt = load_file(str(f))
            coords = vt["coords"].astype(np.int64)
            t, _ = self._load(i)
            t["voxel_query_points"], t["voxel_query_sdf"] = (
                vt["voxel_query_points"], vt["voxel_query_sdf"])
            t["surface_normals"] = vt["surface_normals"]  # oriented out of the target solid
            R = self.resolution
            occ = np.zeros((R, R, R), dtype=bool)
            occ[coords[:, 0], coords[:, 1], coords[:, 2]] = True
            q = np.floor((t["query_points"] + self.bounds) / (2 * self.bounds / R)).astype(int)
            ok = ((q >= 0) & (q < R)).all(1)
            inside = np.zeros(len(q), dtype=bool)
            inside[ok] = occ[q[ok, 0], q[ok, 1], q[ok, 2]]
            self._voxels[i] = coords, np.flatnonzero(inside)
        return self._voxels[i]

    def __getitem__(self, i: int) -> dict:
        t, meta = self._load(i)
        coords, q_in = self.voxels(i)
        rng = np.random.default_rng([self.seed, i, self.epoch])
        s = rng.choice(len(t["surface_points"]), self.n_surface, replace=False)
        n_near = self.n_query - self.n_query // 2
        q = q_in[rng.choice(len(q_in), n_near, replace=len(q_in) < n_near)]
        n_vox = len(t["voxel_query_points"])
        qv = rng.choice(n_vox, self.n_query // 2, replace=n_vox < self.n_query // 2)
        return {
            "coords": torch.from_numpy(coords),
            "surface_points": torch.from_numpy(t["surface_points"][s]),
            "surface_normals": torch.from_numpy(t["surface_normals"][s]),
            "query_points": torch.from_numpy(
                np.concatenate([t["query_points"][q], t["voxel_query_points"][qv]])),
            "query_sdf": torch.from_numpy(
                np.concatenate([t["query_sdf"][q], t["voxel_query_sdf"][qv]])),
            "class_id": int(meta["class_id"]),
            "mesh_id": meta["mesh_id"],
            "index": i,
        }


def collate_sparse(items, resolution: int) -> SparseBatch:
    """Concatenate items into flat tensors with the shape index of every row."""

    def flat(key: str) -> tuple[Tensor, Tensor]:
        x = torch.cat([it[key] for it in items])
        b = torch.cat([torch.full((len(it[key]),), k, dtype=torch.long)
                       for k, it in enumerate(items)])
        return x, b

    coords, vb = flat("coords")
    sp, sb = flat("surface_points")
    qp, qb = flat("query_points")
    return SparseBatch(
        voxels=SparseVoxels(coords, vb, resolution, len(items)),
        surface_points=sp, surface_normals=torch.cat([it["surface_normals"] for it in items]),
        surface_batch=sb, query_points=qp,
        query_sdf=torch.cat([it["query_sdf"] for it in items]), query_batch=qb,
    )


# ---- the head ----------------------------------------------------------------------------------
def _ensure_cache(d: MeshSVAEDataConfig, m: MeshSVAEModelConfig) -> Path:
    """The mesh cache (ids relative to the folder above ``data.root``), then its voxel sets."""
    cache = ensure_mesh_cache(d, id_root=Path(d.root).parent)
    build_voxel_cache(cache, m.resolution, m.bounds, workers=d.workers)
    return cache


class MeshSVAEHead(Head):
    """Trains the sparse-voxel SDF-VAE with :func:`~flow3d.mesh.sparse_vae.svae_loss`."""

    name = "mesh_svae"
    model_config = MeshSVAEModelConfig
    data_config = MeshSVAEDataConfig
    sample_config = MeshSVAESampleConfig

    def build_model(self) -> SparseSDFVAE:
        m = self.recipe.model
        return SparseSDFVAE(m.resolution, m.bounds, m.width, m.latent_dim, m.enc_blocks,
                            m.dec_blocks, m.num_freqs, m.mlp_width, m.truncation)

    def prepare_data(self) -> None:
        _ensure_cache(self.recipe.data, self.recipe.model)

    def dataset(self, split: str, seed: int = 0) -> SparseMeshDataset:
        d, m = self.recipe.data, self.recipe.model
        return SparseMeshDataset(_ensure_cache(d, m), m.resolution, m.bounds, d.n_surface,
                                 d.n_query, split=split, holdout_per_class=d.holdout_per_class,
                                 seed=seed)

    def train_dataset(self) -> torch.utils.data.Dataset:
        return self.dataset("train")

    def collate(self, items) -> SparseBatch:
        return collate_sparse(items, self.recipe.model.resolution)

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        m = self.recipe.model
        return svae_loss(model, batch, generator=generator, weights=m.loss, num_grad=m.num_grad)

    @torch.no_grad()
    def sample(self, model: nn.Module, num: int, *, seed: int = 0, **overrides: Any) -> list:
        """Reconstructions (normalised frame) of the first ``num`` meshes of the split."""
        from flow3d.mesh.sparse_vae import decode_sparse

        cfg = dataclasses.replace(self.recipe.sample, **overrides)
        ds = self.dataset(cfg.split, seed)
        out = []
        for i in range(min(num, len(ds))):
            b = self.collate([ds[i]])
            _, mu, _ = model.encode(b.voxels, b.surface_points, b.surface_normals,
                                    b.surface_batch, sample=False)
            out.append(decode_sparse(model, mu, b.voxels.coords, cfg.resolution).mesh)
        return out

    def save_samples(self, samples, out_dir: Path) -> list[Path]:
        from flow3d.mesh.postprocess import export_mesh

        return [export_mesh(m, Path(out_dir) / f"recon_{i:03d}.glb") for i, m in enumerate(samples)]


def load_svae(path: str | Path) -> SparseSDFVAE:
    """The frozen sparse SDF-VAE of a ``mesh_svae`` checkpoint (eval mode)."""
    from flow3d.engine.checkpoint import load_frozen

    return load_frozen(path, "mesh_svae", "sparse VAE")
