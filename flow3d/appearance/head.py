"""Heads of the appearance models: ``appearance_vae`` and ``appearance_flow``.

Both train on the CAPOD meshes of the geometry VAE's cache (the same surface samples, oriented
normals and 32^3 active voxels as ``mesh_svae``), painted afresh every epoch by a random
procedural rule (:mod:`flow3d.appearance.paint`): thousands of (geometry, appearance) pairs
from 135 training meshes.

* ``flow3d train recipes/appearance/vae.yaml``: :class:`~flow3d.appearance.model.AppearanceVAE`,
  the per-voxel appearance channels (colour L1 + L2 at held-out surface points).
* ``flow3d train recipes/appearance/flow.yaml``: a
  :class:`~flow3d.mesh.sparse_flow.SparseLatentFlow` over the standardised appearance channels
  given the voxels, with the frozen geometry VAE's standardised latents as per-voxel input
  (geometry is fixed, so it is kept by construction) and the colour palette of the painting
  as its condition, dropped with probability ``cond_drop`` for classifier-free guidance.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flow3d.appearance.model import (
    PALETTE_SIZE,
    AppearanceBatch,
    AppearanceVAE,
    appearance_loss,
    load_appearance_vae,
    palette,
)
from flow3d.appearance.paint import KINDS, paint, random_painting
from flow3d.engine.flow import affine_path, flow_loss, time_sampler
from flow3d.engine.head import Head
from flow3d.errors import ConfigError
from flow3d.mesh.sparse_head import (
    MeshSVAEDataConfig,
    SparseMeshDataset,
    _ensure_cache,
    load_svae,
)
from flow3d.mesh.voxels import DEFAULT_BOUNDS, SparseVoxels
from flow3d.options import check_float, check_int

__all__ = [
    "AppearanceDataConfig",
    "AppearanceFlowHead",
    "AppearanceFlowModelConfig",
    "AppearanceSampleConfig",
    "AppearanceVAEHead",
    "AppearanceVAEModelConfig",
    "PaintedShapes",
]


# ---- recipe sections ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class AppearanceVAEModelConfig:
    resolution: int = 32
    bounds: float = DEFAULT_BOUNDS
    width: int = 32
    latent_dim: int = 8
    enc_blocks: int = 2
    dec_blocks: int = 2
    num_freqs: int = 3
    mlp_width: int = 64
    kl: float = 1e-5

    def __post_init__(self):
        for key in ("resolution", "width", "latent_dim", "mlp_width"):
            check_int(getattr(self, key), f"model.{key}", lo=1, hi=4096)
        for key in ("enc_blocks", "dec_blocks", "num_freqs"):
            check_int(getattr(self, key), f"model.{key}", lo=0, hi=64)
        check_float(self.kl, "model.kl", lo=0.0, hi=1e3)


@dataclasses.dataclass(frozen=True)
class AppearanceDataConfig(MeshSVAEDataConfig):
    """The geometry VAE's mesh cache, the paintings drawn, and the frozen models a flow
    reads: ``geometry_vae`` (a ``mesh_svae`` checkpoint) and ``appearance_vae``."""

    kinds: tuple[str, ...] = KINDS
    geometry_vae: str = "checkpoints/mesh/svae_cpu"
    appearance_vae: str = "checkpoints/appearance/vae"

    def __post_init__(self):
        if not self.kinds:
            raise ConfigError("data.kinds: name at least one painting")
        for k in self.kinds:
            if k not in KINDS:
                raise ConfigError(f"data.kinds: unknown painting {k!r}; choose from "
                                  f"{', '.join(KINDS)}")
        check_int(self.n_surface, "data.n_surface", lo=16, hi=16384)


@dataclasses.dataclass(frozen=True)
class AppearanceFlowModelConfig:
    widths: tuple[int, ...] = (32, 64, 128)
    depth: int = 2
    heads: int = 4
    cond: str = "vector"
    cond_drop: float = 0.1

    def __post_init__(self):
        if self.cond not in ("none", "vector"):
            raise ConfigError(f"model.cond = {self.cond!r}: must be none or vector (the "
                              "palette)")
        if not self.widths:
            raise ConfigError("model.widths: give one width per level")
        for i, w in enumerate(self.widths):
            check_int(w, f"model.widths[{i}]", lo=8, hi=1 << 14)
        check_int(self.heads, "model.heads", lo=1, hi=1024)
        if self.widths[-1] % self.heads:
            raise ConfigError(f"model.widths[-1] = {self.widths[-1]}: must be divisible by "
                              "model.heads")
        check_int(self.depth, "model.depth", lo=1, hi=256)
        check_float(self.cond_drop, "model.cond_drop", lo=0.0, hi=1.0)


@dataclasses.dataclass(frozen=True)
class AppearanceSampleConfig:
    """``sample`` paints the first ``num`` meshes of ``split`` (seeded) and reconstructs or
    regenerates their colours; ``steps``/``cfg``: the flow's sampler."""

    split: str = "heldout"
    steps: int = 25
    cfg: float = 2.0

    def __post_init__(self):
        if self.split not in ("train", "heldout", "all"):
            raise ConfigError(f"sample.split = {self.split!r}: must be train, heldout or all")
        check_int(self.steps, "sample.steps", lo=1, hi=10**5)
        check_float(self.cfg, "sample.cfg", lo=0.0, hi=100.0)


# ---- data --------------------------------------------------------------------------------------
class PaintedShapes(SparseMeshDataset):
    """Items of :class:`SparseMeshDataset` painted by a random rule per (item, epoch): the
    first half of the surface points (and their colours) feed the encoders, the second half
    are the colour queries; ``palette``: the encoder colours' :func:`palette`."""

    def __init__(self, cache_dir, d: AppearanceDataConfig, resolution: int, split: str,
                 seed: int = 0):
        super().__init__(cache_dir, resolution, DEFAULT_BOUNDS, d.n_surface, 16, split=split,
                         holdout_per_class=d.holdout_per_class, seed=seed)
        self.kinds = tuple(d.kinds)

    def __getitem__(self, i: int) -> dict:
        it = super().__getitem__(i)
        rng = np.random.default_rng([self.seed, i, self.epoch, 7])
        p, n = it["surface_points"].numpy(), it["surface_normals"].numpy()
        rgb = paint(p, n, random_painting(rng, self.kinds))
        h = len(p) // 2
        return {"coords": it["coords"], "points": it["surface_points"][:h],
                "normals": it["surface_normals"][:h], "colors": torch.from_numpy(rgb[:h]),
                "query_points": it["surface_points"][h:],
                "query_normals": it["surface_normals"][h:],
                "query_colors": torch.from_numpy(rgb[h:]),
                "palette": torch.from_numpy(palette(rgb[:h])), "mesh_id": it["mesh_id"]}


def collate_painted(items, resolution: int) -> AppearanceBatch:
    def flat(key: str) -> tuple[Tensor, Tensor]:
        x = torch.cat([it[key] for it in items])
        b = torch.cat([torch.full((len(it[key]),), k, dtype=torch.long)
                       for k, it in enumerate(items)])
        return x, b

    coords, vb = flat("coords")
    pts, pb = flat("points")
    q, qb = flat("query_points")
    return AppearanceBatch(
        voxels=SparseVoxels(coords, vb, resolution, len(items)), points=pts,
        colors=torch.cat([it["colors"] for it in items]), point_batch=pb, query_points=q,
        query_colors=torch.cat([it["query_colors"] for it in items]), query_batch=qb,
        palette=torch.stack([it["palette"] for it in items]),
        normals=torch.cat([it["normals"] for it in items]),
        query_normals=torch.cat([it["query_normals"] for it in items]))


class _PaintedHead(Head):
    """What both appearance heads share: painted CAPOD shapes on the voxel grid of
    ``self.resolution`` (each head says which)."""

    data_config = AppearanceDataConfig
    sample_config = AppearanceSampleConfig
    resolution: int

    def dataset(self, split: str, seed: int = 0) -> PaintedShapes:
        d = self.recipe.data
        cache = _ensure_cache(d, _svae_config(self.resolution))
        return PaintedShapes(cache, d, self.resolution, split, seed)

    def prepare_data(self) -> None:
        _ensure_cache(self.recipe.data, _svae_config(self.resolution))

    def train_dataset(self) -> torch.utils.data.Dataset:
        return self.dataset("train")

    def collate(self, items) -> AppearanceBatch:
        return collate_painted(items, self.resolution)

    def save_samples(self, samples, out_dir: Path) -> list[Path]:
        """Coloured point clouds (PLY) of the samples."""
        import trimesh

        from flow3d.io import atomic_path

        out = []
        for i, (points, rgb) in enumerate(samples):
            path = Path(out_dir) / f"appearance_{i:03d}.ply"
            cloud = trimesh.PointCloud(points, colors=(np.asarray(rgb) * 255).astype(np.uint8))
            with atomic_path(path) as tmp:
                cloud.export(str(tmp), file_type="ply")
            out.append(path)
        return out


def _svae_config(resolution: int):
    from flow3d.mesh.sparse_head import MeshSVAEModelConfig

    return MeshSVAEModelConfig(resolution=resolution)


# ---- the appearance VAE ------------------------------------------------------------------------
class AppearanceVAEHead(_PaintedHead):
    """Trains :class:`AppearanceVAE` with :func:`appearance_loss`."""

    name = "appearance_vae"
    model_config = AppearanceVAEModelConfig

    @property
    def resolution(self) -> int:
        return self.recipe.model.resolution

    def build_model(self) -> AppearanceVAE:
        m = self.recipe.model
        return AppearanceVAE(m.resolution, m.bounds, m.width, m.latent_dim, m.enc_blocks,
                             m.dec_blocks, m.num_freqs, m.mlp_width)

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        return appearance_loss(model, batch, generator=generator, kl=self.recipe.model.kl)

    @torch.no_grad()
    def sample(self, model: nn.Module, num: int, *, seed: int = 0, **overrides: Any) -> list:
        """(query points, reconstructed colours) of the first ``num`` painted meshes."""
        cfg = self.sample_settings(**overrides)
        ds = self.dataset(cfg.split, seed)
        out = []
        for i in range(min(num, len(ds))):
            b = self.collate([ds[i]])
            _, mu, _ = model.encode(b.voxels, b.points, b.colors, b.point_batch, b.normals,
                                    sample=False)
            rgb = model.colors(model.decode(mu, b.voxels), b.voxels, b.query_points,
                               b.query_batch, b.query_normals)
            out.append((b.query_points.numpy(), rgb.numpy()))
        return out


# ---- the appearance flow -----------------------------------------------------------------------
class AppearanceFlowHead(_PaintedHead):
    """Rectified flow over the appearance channels given the voxels and geometry latents."""

    name = "appearance_flow"
    model_config = AppearanceFlowModelConfig

    def __init__(self, recipe: Any):
        super().__init__(recipe)
        self._geometry, self._appearance = None, None

    @property
    def resolution(self) -> int:
        return self.geometry_vae.resolution

    @property
    def geometry_vae(self):
        if self._geometry is None:
            self._geometry = load_svae(self.recipe.data.geometry_vae)
        return self._geometry

    @property
    def appearance_vae(self) -> AppearanceVAE:
        if self._appearance is None:
            self._appearance = load_appearance_vae(self.recipe.data.appearance_vae)
        return self._appearance

    def build_model(self):
        from flow3d.mesh.sparse_flow import SparseLatentFlow

        m = self.recipe.model
        return SparseLatentFlow(self.appearance_vae.latent_dim, m.widths, m.depth, m.heads,
                                m.cond, extra_dim=self.geometry_vae.latent_dim,
                                cond_drop=m.cond_drop, vector_dim=4 * PALETTE_SIZE)

    @torch.no_grad()
    def encode(self, batch: AppearanceBatch) -> tuple[Tensor, Tensor]:
        """Standardised (appearance, geometry) latents ``[M, C_a]``, ``[M, C_g]`` (means)."""
        a, g, v = self.appearance_vae, self.geometry_vae, batch.voxels
        _, mu_a, _ = a.encode(v, batch.points, batch.colors, batch.point_batch, batch.normals,
                              sample=False)
        _, mu_g, _ = g.encode(v, batch.points, batch.normals, batch.point_batch, sample=False)
        return a.normalize_latent(mu_a), g.normalize_latent(mu_g)

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        v = batch.voxels
        x_1, extra = self.encode(batch)
        x_0 = torch.randn(x_1.shape, generator=generator, device=generator.device).to(x_1)
        t = time_sampler(self.recipe.flow).sample(v.num_shapes, generator=generator,
                                                  device=x_1.device)
        ps = affine_path(self.recipe.flow).sample(x_0, x_1, t[v.batch])
        ctx = model.drop_context(model.context(vector=batch.palette), generator)
        pred = model(ps.x_t, t, v, ctx, extra)
        return {"loss": flow_loss(self.recipe.flow, pred, ps.dx_t, t[v.batch])}

    @torch.no_grad()
    def sample(self, model: nn.Module, num: int, *, seed: int = 0, **overrides: Any) -> list:
        """(query points, colours) regenerated for the first ``num`` painted meshes of the
        split, conditioned on their own palettes."""
        from flow3d.appearance.transfer import appearance_velocity, sample_appearance

        cfg = self.sample_settings(**overrides)
        ds = self.dataset(cfg.split, seed)
        out = []
        for i in range(min(num, len(ds))):
            b = self.collate([ds[i]])
            _, extra = self.encode(b)
            velocity = appearance_velocity(model, b.voxels, extra, b.palette, cfg.cfg)
            z = sample_appearance(velocity, self.appearance_vae, len(b.voxels), steps=cfg.steps,
                                  seed=seed)
            a = self.appearance_vae
            rgb = a.colors(a.decode(z, b.voxels), b.voxels, b.query_points, b.query_batch,
                           b.query_normals)
            out.append((b.query_points.numpy(), rgb.numpy()))
        return out
