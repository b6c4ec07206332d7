"""Heads of the two-stage sparse-voxel generator: ``mesh_structure`` and ``mesh_slat``.

Both read the frozen sparse-voxel VAE named by ``data.vae`` and one cache of structured
latents (:func:`structured_latents`): every CAPOD mesh of the VAE's mesh cache encoded once
(its active voxels and mean latents), its class, and its conditioning renders, keyed by the
VAE's weights so that a retrained VAE never reuses stale latents.

* ``flow3d train recipes/mesh/structure_class.yaml`` (or ``structure_image.yaml``):
  :class:`~flow3d.mesh.sparse_flow.StructureFlow` on the patched occupancies.
* ``flow3d train recipes/mesh/slat.yaml``: :class:`~flow3d.mesh.sparse_flow.SparseLatentFlow`
  on the latents standardised with the VAE's per-channel statistics, given the voxels.

Image conditioning is trained on renders whose tone varies (:func:`vary_tone`: gamma,
contrast, brightness and noise of the foreground), because a user's photo is coloured and lit
unlike the renders: the encoder must read the silhouette and the shading's shape, not its
levels.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from flow3d.engine.checkpoint import ema_file, find_checkpoint
from flow3d.engine.flow import affine_path, flow_loss, time_sampler
from flow3d.errors import ConfigError, DataError
from flow3d.io import atomic_path
from flow3d.mesh.flow import COND_MODES
from flow3d.mesh.head import MeshFlowHead, MeshFlowSampleConfig, condition_images
from flow3d.mesh.occupancy_vae import OccupancyVAE, occupancy_vae_loss
from flow3d.mesh.sparse_flow import (
    SparseLatentFlow,
    StructureFlow,
    coords_to_grid,
    occupancy_field,
    patchify,
)
from flow3d.mesh.sparse_head import MeshSVAEDataConfig, _ensure_cache, collate_sparse, load_svae
from flow3d.mesh.sparse_vae import SparseSDFVAE
from flow3d.mesh.voxels import SparseVoxels
from flow3d.options import check_float, check_int

__all__ = [
    "MeshOccVAEHead",
    "MeshOccVAEModelConfig",
    "MeshSLatHead",
    "MeshSLatModelConfig",
    "MeshSFlowDataConfig",
    "MeshStructureHead",
    "MeshStructureModelConfig",
    "StructuredLatents",
    "structured_latents",
    "vary_tone",
]


# ---- recipe sections ---------------------------------------------------------------------------
def _check_cond(cfg) -> None:
    if cfg.cond not in COND_MODES:
        raise ConfigError(f"model.cond = {cfg.cond!r}: must be one of {', '.join(COND_MODES)}")
    check_int(cfg.heads, "model.heads", lo=1, hi=1024)
    check_int(cfg.num_classes, "model.num_classes", lo=1, hi=1 << 20)
    for key in ("image_resolution", "image_channels"):  # stride-8 CNN, GroupNorm(8)
        check_int(getattr(cfg, key), f"model.{key}", lo=8, hi=4096)
        if getattr(cfg, key) % 8:
            raise ConfigError(f"model.{key} = {getattr(cfg, key)}: must be a multiple of 8")
    check_float(cfg.cond_drop, "model.cond_drop", lo=0.0, hi=1.0)


@dataclasses.dataclass(frozen=True)
class _ConditionedModelConfig:
    """The condition fields every sparse-voxel flow's ``model`` section has."""

    heads: int = 4
    cond: str = "none"
    num_classes: int = 15
    image_resolution: int = 64
    image_channels: int = 32
    cond_drop: float = 0.1

    def __post_init__(self):
        _check_cond(self)


@dataclasses.dataclass(frozen=True)
class MeshStructureModelConfig(_ConditionedModelConfig):
    cond: str = "class"
    patch: int = 4  # patch mode only: (32 / 4)^3 = 512 tokens of 64 values
    width: int = 128
    depth: int = 6

    def __post_init__(self):
        super().__post_init__()
        check_int(self.patch, "model.patch", lo=1, hi=64)
        check_int(self.width, "model.width", lo=8, hi=1 << 14)
        check_int(self.depth, "model.depth", lo=1, hi=256)
        if self.width % self.heads:
            raise ConfigError(f"model.width = {self.width}: must be divisible by model.heads")


@dataclasses.dataclass(frozen=True)
class MeshSLatModelConfig(_ConditionedModelConfig):
    widths: tuple[int, ...] = (32, 64, 128)  # channels at 32^3, 16^3, 8^3
    depth: int = 2  # blocks per level (down and up)

    def __post_init__(self):
        super().__post_init__()
        if not self.widths:
            raise ConfigError("model.widths: give one width per level")
        for i, w in enumerate(self.widths):
            check_int(w, f"model.widths[{i}]", lo=8, hi=1 << 14)
        if self.widths[-1] % self.heads:
            raise ConfigError(f"model.widths[-1] = {self.widths[-1]}: must be divisible by "
                              "model.heads")
        check_int(self.depth, "model.depth", lo=1, hi=256)


@dataclasses.dataclass(frozen=True)
class MeshSFlowDataConfig(MeshSVAEDataConfig):
    vae: str = "checkpoints/mesh/svae_cpu"  # the frozen sparse-voxel VAE (mesh_svae)
    views: int = 6  # conditioning renders per mesh (image mode)
    # structure flow only: the frozen mesh_occvae whose 8^3 latent it generates ("": the
    # occupancy field in model.patch^3 patches instead)
    occupancy_vae: str = ""

    def __post_init__(self):
        if not str(self.vae).strip():
            raise ConfigError("data.vae: a mesh_svae checkpoint is required (got '')")
        check_int(self.views, "data.views", lo=1, hi=6)
        check_int(self.holdout_per_class, "data.holdout_per_class", lo=0, hi=1 << 20)


@dataclasses.dataclass(frozen=True)
class MeshOccVAEModelConfig:
    latent_dim: int = 8
    width: int = 16
    kl: float = 1e-4
    image_resolution: int = 64  # of the shared structured-latent cache's renders (unused here)
    cond: str = "none"

    def __post_init__(self):
        check_int(self.latent_dim, "model.latent_dim", lo=1, hi=1024)
        check_int(self.width, "model.width", lo=8, hi=4096)
        if self.width % 8:
            raise ConfigError(f"model.width = {self.width}: must be a multiple of 8 (GroupNorm)")
        check_float(self.kl, "model.kl", lo=0.0, hi=1e3)


# ---- the structured-latent cache ---------------------------------------------------------------
@dataclasses.dataclass
class StructuredLatents:
    """Every cached mesh's voxels and latents, flat with ``offsets [N + 1]``."""

    coords: Tensor  # [S, 3] long
    latents: Tensor  # [S, C] (raw, not standardised)
    offsets: Tensor  # [N + 1]
    labels: Tensor  # [N] CAPOD class
    train: Tensor  # [N] bool: in the VAE's training split
    images: Tensor  # [N, V, 1, R, R] conditioning renders
    mesh_ids: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def shape(self, i: int) -> tuple[Tensor, Tensor]:
        s, e = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.coords[s:e], self.latents[s:e]

    def subset(self, split: str) -> list[int]:
        if split == "all":
            return list(range(len(self)))
        keep = self.train if split == "train" else ~self.train
        return torch.nonzero(keep).squeeze(-1).tolist()


def _vae_key(d: MeshSFlowDataConfig, image_resolution: int) -> str:
    try:
        ckpt = find_checkpoint(d.vae)
    except FileNotFoundError as e:
        raise DataError(f"{d.vae}: VAE checkpoint not found (data.vae)") from e
    h = hashlib.sha1(ema_file(ckpt).read_bytes())
    h.update(f"{d.holdout_per_class}:{d.n_surface}:{image_resolution}:{d.views}".encode())
    return h.hexdigest()[:10]


def structured_latents(d: MeshSFlowDataConfig, vae: SparseSDFVAE, image_resolution: int
                       ) -> StructuredLatents:
    """Encode every mesh of the VAE's cache once (train and held-out; progress bar), cached in
    ``<cache_dir>/structured_latents/slat_<key>.safetensors``."""
    from flow3d.mesh.sparse_head import SparseMeshDataset

    m = vae
    # a sub-folder: a file beside the per-mesh records would be listed as a mesh
    key = _vae_key(d, image_resolution)
    path = Path(d.cache_dir) / "structured_latents" / f"slat_{key}.safetensors"
    if not path.is_file():
        from tqdm import tqdm

        from flow3d.mesh.data import load_mesh, normalize_mesh

        cache = _ensure_cache(d, _vae_model_config(m))
        sets = {s: SparseMeshDataset(cache, m.resolution, m.bounds, d.n_surface, 16, split=s,
                                     holdout_per_class=d.holdout_per_class)
                for s in ("train", "heldout")}
        coords, latents, labels, train, images, ids = [], [], [], [], [], []
        jobs = [(s, i) for s, ds in sets.items() for i in range(len(ds))]
        for s, i in tqdm(jobs, desc="structured latents", unit="mesh"):
            ds = sets[s]
            it = ds[i]
            b = collate_sparse([it], m.resolution)
            with torch.no_grad():
                _, mu, _ = m.encode(b.voxels, b.surface_points, b.surface_normals,
                                    b.surface_batch, sample=False)
            mesh, _ = normalize_mesh(load_mesh(ds.source_path(i)))
            images.append(condition_images(mesh, image_resolution)[: d.views].half())
            coords.append(it["coords"].short())
            latents.append(mu)
            labels.append(it["class_id"])
            train.append(s == "train")
            ids.append(it["mesh_id"])
        t = {"coords": torch.cat(coords), "latents": torch.cat(latents),
             "offsets": torch.tensor([0] + [len(c) for c in coords]).cumsum(0),
             "labels": torch.tensor(labels), "train": torch.tensor(train),
             "images": torch.stack(images)}
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in t.items()}, str(tmp),
                      metadata={"mesh_ids": "\n".join(ids)})
    from safetensors import safe_open

    t = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        ids = f.metadata()["mesh_ids"].split("\n")
    return StructuredLatents(t["coords"].long(), t["latents"], t["offsets"], t["labels"],
                             t["train"].bool(), t["images"].float(), ids)


def _vae_model_config(vae: SparseSDFVAE):
    from flow3d.mesh.sparse_head import MeshSVAEModelConfig

    return MeshSVAEModelConfig(resolution=vae.resolution, bounds=vae.bounds)


def vary_tone(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random tone of prepared images ``[B, 1, R, R]`` (1 = background): the foreground's
    contrast ``1 - a`` gets a gamma in [0.5, 2], a gain in [0.35, 1.3] and Gaussian noise
    (std up to 0.03); the background stays 1 (what :func:`prepare_image` makes of any photo)."""
    B = images.shape[0]
    dev = generator.device

    def u(lo, hi):
        return (lo + (hi - lo) * torch.rand(B, 1, 1, 1, generator=generator, device=dev)
                ).to(images)

    fg = (1.0 - images).clamp(0, 1)
    bg = fg <= 1e-6
    gamma = torch.exp(u(np.log(0.5), np.log(2.0)))
    fg = fg.clamp_min(1e-6) ** gamma * u(0.35, 1.3)
    fg = fg + u(0.0, 0.03) * torch.randn(images.shape, generator=generator, device=dev).to(fg)
    fg = torch.where(bg, torch.zeros_like(fg), fg.clamp(0.02, 1.0))
    return 1.0 - fg


# ---- datasets ------------------------------------------------------------------------------
class _ShapeItems(torch.utils.data.Dataset):
    """(shape, view) pairs of one split: voxels, latents, one conditioning image, the class."""

    def __init__(self, slat: StructuredLatents, rows: list[int], views: int):
        self.slat, self.rows, self.views = slat, rows, views

    def __len__(self) -> int:
        return len(self.rows) * self.views

    def __getitem__(self, i: int) -> dict[str, Any]:
        n, v = divmod(i, self.views)
        r = self.rows[n]
        coords, latents = self.slat.shape(r)
        return {"coords": coords, "latents": latents, "image": self.slat.images[r, v],
                "label": self.slat.labels[r]}


class _SparseFlowBase(MeshFlowHead):
    """What both stages share: the frozen sparse VAE, the structured latents, conditioning."""

    data_config = MeshSFlowDataConfig
    sample_config = MeshFlowSampleConfig

    @property
    def vae(self) -> SparseSDFVAE:
        if self._vae is None:
            self._vae = load_svae(self.recipe.data.vae)
        return self._vae

    def latents(self) -> StructuredLatents:
        if getattr(self, "_slat", None) is None:
            self._slat = structured_latents(self.recipe.data, self.vae,
                                            self.recipe.model.image_resolution)
        return self._slat

    def prepare_data(self) -> None:
        self.latents()

    def items(self, split: str) -> _ShapeItems:
        slat = self.latents()
        views = self.recipe.data.views if self.recipe.model.cond == "image" else 1
        rows = slat.subset(split)
        if not rows:
            raise DataError(f"{self.recipe.data.root}: no {split} meshes in the latent cache")
        return _ShapeItems(slat, rows, views)

    def train_dataset(self) -> torch.utils.data.Dataset:
        return self.items("train")

    def context(self, model, batch: dict[str, Tensor], generator: torch.Generator | None = None):
        images = batch["image"]
        if model.cond == "image" and generator is not None and model.training:
            images = vary_tone(images, generator)
        return model.context(images=images, labels=batch["label"])


# ---- stage 1: structure --------------------------------------------------------------------
class MeshStructureHead(_SparseFlowBase):
    """Rectified flow over the patched 32^3 occupancy of the active voxels."""

    name = "mesh_structure"
    model_config = MeshStructureModelConfig

    @property
    def occupancy_vae(self) -> OccupancyVAE | None:
        """The frozen occupancy VAE of ``data.occupancy_vae`` (None: patch mode)."""
        path = self.recipe.data.occupancy_vae
        if not path:
            return None
        if getattr(self, "_occ", None) is None:
            from flow3d.engine.checkpoint import load_model

            try:
                self._occ = load_model(path, head_name="mesh_occvae").model.eval()
            except FileNotFoundError:
                raise DataError(f"{path}: occupancy VAE not found (data.occupancy_vae)") from None
            self._occ.requires_grad_(False)
        return self._occ

    def build_model(self) -> StructureFlow:
        m, occ = self.recipe.model, self.occupancy_vae
        grid = dict(resolution=self.vae.resolution, patch=m.patch) if occ is None else dict(
            resolution=occ.resolution // 4, patch=1, channels=occ.latent_dim)
        return StructureFlow(**grid, width=m.width, heads=m.heads, depth=m.depth, cond=m.cond,
                             num_classes=m.num_classes, image_resolution=m.image_resolution,
                             image_channels=m.image_channels, cond_drop=m.cond_drop)

    def encode_grids(self, grids: Tensor) -> Tensor:
        """Occupancies ``[B, R, R, R]`` -> the flow's data ``[B, T, D]``."""
        occ = self.occupancy_vae
        if occ is None:
            return patchify(occupancy_field(grids), self.recipe.model.patch)
        return occ.to_tokens(grids)

    def decode_tokens(self, model: StructureFlow, x: Tensor) -> Tensor:
        """The flow's samples ``[B, T, D]`` -> occupancies ``[B, R, R, R]`` bool."""
        occ = self.occupancy_vae
        return model.to_grid(x) if occ is None else occ.from_tokens(x)

    def collate(self, items) -> dict[str, Tensor]:
        R = self.vae.resolution
        grids = torch.stack([coords_to_grid(it["coords"], R) for it in items])
        return {"x_1": self.encode_grids(grids),
                "image": torch.stack([it["image"] for it in items]),
                "label": torch.stack([it["label"] for it in items])}

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        x_1 = batch["x_1"]
        x_0 = torch.randn(x_1.shape, generator=generator, device=generator.device).to(x_1)
        t = time_sampler(self.recipe.flow).sample(x_1.shape[0], generator=generator,
                                                  device=x_1.device)
        ps = affine_path(self.recipe.flow).sample(x_0, x_1, t)
        ctx = model.drop_context(self.context(model, batch, generator), generator)
        return {"loss": flow_loss(self.recipe.flow, model(ps.x_t, t, ctx), ps.dx_t, t)}

    @torch.no_grad()
    def sample_structure(self, model: StructureFlow, ctx: Tensor | None, num: int, *,
                         seed: int = 0, hooks=(), **overrides: Any) -> list[Tensor]:
        """Active voxels ``[M, 3]`` of ``num`` sampled structures (``hooks``: solver hooks,
        e.g. the core's inpainting)."""
        from flow3d.core.solvers import solve
        from flow3d.core.time import time_grid

        cfg = self.sample_settings(**overrides)
        g = torch.Generator().manual_seed(seed)
        T = (model.resolution // model.patch) ** 3
        x_0 = torch.randn(num, T, model.x_in.in_features, generator=g)
        grid = time_grid(cfg.steps, shift=cfg.shift)
        x_1 = solve(self.velocity(model, ctx, cfg.cfg), x_0, method=cfg.method, grid=grid,
                    hooks=list(hooks)).x
        return [torch.nonzero(gr).long() for gr in self.decode_tokens(model, x_1)]

    @torch.no_grad()
    def sample(self, model: nn.Module, num: int, *, seed: int = 0, **overrides: Any) -> list:
        """Structures for classes ``0, 1, ...`` (class mode), the first held-out meshes'
        renders (image mode) or noise: active voxels ``[M, 3]`` each."""
        slat = self.latents()
        rows = slat.subset("heldout")[:num]
        images = slat.images[rows, 0] if model.cond == "image" else None
        ctx = model.context(images=images, labels=torch.arange(num) % model.num_classes)
        num = num if ctx is None else ctx.shape[0]
        return self.sample_structure(model, ctx, num, seed=seed, **overrides)

    def save_samples(self, samples, out_dir: Path) -> list[Path]:
        from flow3d.mesh.postprocess import export_mesh

        out = []
        for i, coords in enumerate(samples):
            out.append(export_mesh(voxel_boxes(coords, self.vae),
                                   Path(out_dir) / f"structure_{i:03d}.glb"))
        return out


def voxel_boxes(coords: Tensor, vae: SparseSDFVAE):
    """The active voxels as a box mesh in the normalised frame (for looking at structures)."""
    import trimesh

    h = 2 * vae.bounds / vae.resolution
    grid = coords_to_grid(coords, vae.resolution).numpy()
    boxes = trimesh.voxel.VoxelGrid(grid).as_boxes()
    boxes.apply_scale(h)
    boxes.apply_translation([-vae.bounds] * 3)
    return boxes


class MeshOccVAEHead(_SparseFlowBase):
    """Trains the occupancy VAE of the structure stage on the training meshes' active voxels
    (each item flipped at random along the two horizontal axes)."""

    name = "mesh_occvae"
    model_config = MeshOccVAEModelConfig

    def build_model(self) -> OccupancyVAE:
        m = self.recipe.model
        return OccupancyVAE(self.vae.resolution, m.latent_dim, m.width)

    def items(self, split: str) -> _ShapeItems:
        slat = self.latents()
        rows = slat.subset(split)
        if not rows:
            raise DataError(f"{self.recipe.data.root}: no {split} meshes in the latent cache")
        return _ShapeItems(slat, rows, 1)

    def collate(self, items) -> Tensor:
        R = self.vae.resolution
        return torch.stack([coords_to_grid(it["coords"], R) for it in items])

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        flips = torch.rand(batch.shape[0], 2, generator=generator, device=generator.device) < 0.5
        grids = torch.stack([g.flip([a for a, f in zip((0, 2), fl.tolist()) if f]) if fl.any()
                             else g for g, fl in zip(batch, flips)])
        return occupancy_vae_loss(model, grids, generator=generator, kl=self.recipe.model.kl)

    @torch.no_grad()
    def sample(self, model: nn.Module, num: int, *, seed: int = 0, **overrides: Any) -> list:
        """The first ``num`` held-out structures through the VAE: active voxels each."""
        slat = self.latents()
        grids = torch.stack([coords_to_grid(slat.shape(r)[0], self.vae.resolution)
                             for r in slat.subset("heldout")[:num]])
        _, mu, _ = model.encode(grids[:, None], sample=False)
        return [torch.nonzero(g).long() for g in model.decode(mu)[:, 0] > 0]

    def save_samples(self, samples, out_dir: Path) -> list[Path]:
        from flow3d.mesh.postprocess import export_mesh

        return [export_mesh(voxel_boxes(c, self.vae), Path(out_dir) / f"occupancy_{i:03d}.glb")
                for i, c in enumerate(samples)]


# ---- stage 2: latents given the structure ------------------------------------------------------
@dataclasses.dataclass
class SLatBatch:  # not frozen: Lightning moves batches field by field
    voxels: SparseVoxels
    latents: Tensor  # [M, C] raw
    image: Tensor  # [B, 1, R, R]
    label: Tensor  # [B]

    def __getitem__(self, key: str):  # the shared context() reads batch["image"/"label"]
        return getattr(self, key)


class MeshSLatHead(_SparseFlowBase):
    """Rectified flow over the per-voxel latents given the active voxels."""

    name = "mesh_slat"
    model_config = MeshSLatModelConfig

    def build_model(self) -> SparseLatentFlow:
        m = self.recipe.model
        return SparseLatentFlow(self.vae.latent_dim, m.widths, m.depth, m.heads, m.cond,
                                num_classes=m.num_classes,
                                image=(m.image_resolution, m.image_channels),
                                cond_drop=m.cond_drop)

    def collate(self, items) -> SLatBatch:
        coords = torch.cat([it["coords"] for it in items])
        batch = torch.cat([torch.full((len(it["coords"]),), k, dtype=torch.long)
                           for k, it in enumerate(items)])
        return SLatBatch(SparseVoxels(coords, batch, self.vae.resolution, len(items)),
                         torch.cat([it["latents"] for it in items]),
                         torch.stack([it["image"] for it in items]),
                         torch.stack([it["label"] for it in items]))

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        v = batch.voxels
        x_1 = self.vae.normalize_latent(batch.latents.to(self.vae.latent_mean))
        x_0 = torch.randn(x_1.shape, generator=generator, device=generator.device).to(x_1)
        t = time_sampler(self.recipe.flow).sample(v.num_shapes, generator=generator,
                                                  device=x_1.device)
        ps = affine_path(self.recipe.flow).sample(x_0, x_1, t[v.batch])
        ctx = model.drop_context(self.context(model, batch, generator), generator)
        pred = model(ps.x_t, t, v, ctx)
        return {"loss": flow_loss(self.recipe.flow, pred, ps.dx_t, t[v.batch])}

    def velocity_on(self, model: SparseLatentFlow, voxels: SparseVoxels, ctx, cfg_weight: float):
        """``v(x, t)`` on fixed voxels with the condition bound, with CFG when conditioned."""
        from flow3d.mesh.sparse_flow import velocity_on

        return velocity_on(model, voxels, ctx, cfg_weight)

    @torch.no_grad()
    def sample_latents_on(self, model: SparseLatentFlow, coords: Tensor, ctx: Tensor | None, *,
                          seed: int = 0, hooks=(), **overrides: Any) -> Tensor:
        """Raw VAE latents ``[M, C]`` on one shape's voxels ``coords: [M, 3]``."""
        from flow3d.core.solvers import solve
        from flow3d.core.time import time_grid

        cfg = self.sample_settings(**overrides)
        voxels = SparseVoxels(coords.long(), torch.zeros(len(coords), dtype=torch.long),
                              self.vae.resolution, 1)
        g = torch.Generator().manual_seed(seed)
        x_0 = torch.randn(len(coords), self.vae.latent_dim, generator=g)
        grid = time_grid(cfg.steps, shift=cfg.shift)
        x_1 = solve(self.velocity_on(model, voxels, ctx, cfg.cfg), x_0, method=cfg.method,
                    grid=grid, hooks=list(hooks)).x
        return self.vae.denormalize_latent(x_1)

    @torch.no_grad()
    def sample(self, model: nn.Module, num: int, *, seed: int = 0, **overrides: Any) -> list:
        """Meshes on the true voxels of the first ``num`` held-out shapes (their class or
        render as the condition)."""
        from flow3d.mesh.sparse_vae import decode_sparse

        cfg = self.sample_settings(**overrides)
        slat = self.latents()
        out = []
        for r in slat.subset("heldout")[:num]:
            coords, _ = slat.shape(r)
            ctx = model.context(images=slat.images[r : r + 1, 0], labels=slat.labels[r : r + 1])
            z = self.sample_latents_on(model, coords, ctx, seed=seed, **overrides)
            out.append(decode_sparse(self.vae, z, coords, cfg.resolution).mesh)
        return out
