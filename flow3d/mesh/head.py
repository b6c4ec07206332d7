"""The mesh heads: :class:`MeshVAEHead` (SDF-VAE) and :class:`MeshFlowHead` (latent flow).

Training is two-stage, as in TripoSG: ``flow3d train recipes/mesh/vae_cpu.yaml`` fits the
SDF-VAE on the mesh cache of :mod:`flow3d.mesh.data`; then ``recipes/mesh/flow_image.yaml``
(or ``flow_class.yaml``) names that checkpoint in ``data.vae``, encodes every training mesh once
with the frozen VAE (mean latents, farthest-point queries; cached next to the mesh cache) and
fits a rectified flow ``x_t = t x_1 + (1 - t) x_0`` on the standardised latents, conditioned
on renders of the mesh (:func:`condition_images`) or on its CAPOD class.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from flow3d.core.guidance import ClassifierFreeGuidance
from flow3d.core.solvers import solve
from flow3d.core.time import time_grid
from flow3d.engine.checkpoint import ema_file, find_checkpoint, load_model
from flow3d.engine.flow import affine_path, flow_loss, time_sampler
from flow3d.engine.head import Head
from flow3d.engine.keys import check_method
from flow3d.errors import ConfigError, DataError
from flow3d.io import atomic_path
from flow3d.mesh.data import (
    MeshDataset,
    build_mesh_cache,
    cached_meshes,
    list_mesh_files,
    load_mesh,
    normalize_mesh,
)
from flow3d.mesh.flow import COND_MODES, LatentFlow
from flow3d.mesh.image_encoder import prepare_image
from flow3d.mesh.postprocess import check_resolution, export_mesh, sdf_to_mesh
from flow3d.mesh.render import render_views
from flow3d.mesh.vae import SDFVAE, VAELossWeights, vae_loss
from flow3d.options import check_float, check_int

__all__ = [
    "CONDITION_AZIMUTHS",
    "CONDITION_ELEVATIONS",
    "MeshDataConfig",
    "MeshFlowDataConfig",
    "MeshFlowHead",
    "MeshFlowModelConfig",
    "MeshFlowSampleConfig",
    "MeshVAEHead",
    "MeshVAEModelConfig",
    "MeshVAESampleConfig",
    "condition_images",
]

# The conditioning views of every training mesh: six azimuths, two elevations.
CONDITION_AZIMUTHS = (30.0, 90.0, 150.0, 210.0, 270.0, 330.0)
CONDITION_ELEVATIONS = (10.0, 30.0, 10.0, 30.0, 10.0, 30.0)


def condition_images(
    mesh, resolution: int = 64, azimuths=CONDITION_AZIMUTHS, elevations=CONDITION_ELEVATIONS,
    render_size: int = 96,
) -> Tensor:
    """Renders of a normalised mesh prepared like a user's photo: ``[V, 1, R, R]``."""
    images, _ = render_views(
        mesh, len(azimuths), render_size, elevations=list(elevations),
        azimuths=list(azimuths), backend="numpy",
    )
    return torch.stack([prepare_image(im, resolution) for im in images])


# ---- recipe sections ------------------------------------------------------------------------
MIN_FACES, MAX_FACES = 4, 10**8  # a decimation budget: a tetrahedron up to any real mesh


def _check_widths(width: int, heads: int, section: str) -> None:
    check_int(width, f"{section}.width", lo=1, hi=1 << 16)
    check_int(heads, f"{section}.heads", lo=1, hi=1024)
    if width % heads:
        raise ConfigError(f"{section}.width = {width}: must be divisible by {section}.heads "
                          f"= {heads}")


def _check_split(split: str) -> None:
    if split not in ("train", "heldout", "all"):
        raise ConfigError(f"sample.split = {split!r}: must be train, heldout or all")


@dataclasses.dataclass(frozen=True)
class MeshVAEModelConfig:
    width: int = 64
    heads: int = 4
    latent_dim: int = 8
    enc_layers: int = 1
    dec_layers: int = 2
    num_freqs: int = 6
    num_latents: int = 64  # default M at inference
    truncation: float = 0.1
    query_sampling: str = "fps"
    train_latents: tuple[int, ...] = (64, 64, 32, 128)  # M drawn per step: one set of weights
    num_grad: int = 128  # points per shape for the normal and eikonal terms
    loss: VAELossWeights = VAELossWeights()

    def __post_init__(self):
        _check_widths(self.width, self.heads, "model")
        for key in ("latent_dim", "num_latents"):
            check_int(getattr(self, key), f"model.{key}", lo=1, hi=1 << 14)
        for key in ("enc_layers", "dec_layers"):
            check_int(getattr(self, key), f"model.{key}", lo=0, hi=256)
        check_int(self.num_freqs, "model.num_freqs", lo=0, hi=32)
        check_int(self.num_grad, "model.num_grad", lo=0, hi=1 << 20)
        check_float(self.truncation, "model.truncation", lo=0.0, hi=10.0, lo_open=True)
        if self.query_sampling not in ("fps", "random"):
            raise ConfigError(f"model.query_sampling = {self.query_sampling!r}: must be 'fps' "
                              "or 'random'")
        if not self.train_latents:
            raise ConfigError("model.train_latents: give at least one latent count")
        for i, m in enumerate(self.train_latents):
            check_int(m, f"model.train_latents[{i}]", lo=1, hi=1 << 14)


@dataclasses.dataclass(frozen=True)
class MeshDataConfig:
    root: str = "../shared/data/meshes"
    cache_dir: str = "runs/mesh_cache"
    holdout_per_class: int = 2  # CAPOD meshes per class kept out of training
    n_surface: int = 768  # encoder points per item
    n_query: int = 1024  # SDF supervision points per item
    cache_surface: int = 8192
    cache_near: int = 16384
    cache_volume: int = 8192
    workers: int = 1

    def __post_init__(self):
        for key in ("root", "cache_dir"):
            if not str(getattr(self, key)).strip():
                raise ConfigError(f"data.{key}: a folder is required (got '')")
        check_int(self.holdout_per_class, "data.holdout_per_class", lo=0, hi=1 << 20)
        for key in ("n_surface", "n_query", "cache_surface"):
            check_int(getattr(self, key), f"data.{key}", lo=1, hi=1 << 24)
        for key in ("cache_near", "cache_volume"):
            check_int(getattr(self, key), f"data.{key}", lo=0, hi=1 << 24)
        check_int(self.workers, "data.workers", lo=1, hi=1024)


@dataclasses.dataclass(frozen=True)
class MeshVAESampleConfig:
    """``sample`` reconstructs the first ``num`` meshes of ``split``."""

    split: str = "heldout"
    num_latents: int = 64
    resolution: int = 128

    def __post_init__(self):
        _check_split(self.split)
        check_int(self.num_latents, "sample.num_latents", lo=1, hi=1 << 14)
        check_resolution(self.resolution, "sample.resolution")


@dataclasses.dataclass(frozen=True)
class MeshFlowModelConfig:
    width: int = 64
    heads: int = 4
    depth: int = 2
    cond: str = "image"  # "none" | "class" | "image"
    num_classes: int = 15
    image_resolution: int = 64
    image_channels: int = 32
    cond_drop: float = 0.1

    def __post_init__(self):
        if self.cond not in COND_MODES:
            raise ConfigError(f"model.cond = {self.cond!r}: must be one of "
                              f"{', '.join(COND_MODES)}")
        _check_widths(self.width, self.heads, "model")
        check_int(self.depth, "model.depth", lo=1, hi=256)
        check_int(self.num_classes, "model.num_classes", lo=1, hi=1 << 20)
        check_int(self.image_resolution, "model.image_resolution", lo=8, hi=1024)
        check_int(self.image_channels, "model.image_channels", lo=8, hi=4096)
        for key in ("image_resolution", "image_channels"):  # stride-8 CNN, GroupNorm(8)
            if getattr(self, key) % 8:
                raise ConfigError(f"model.{key} = {getattr(self, key)}: must be a multiple "
                                  "of 8")
        check_float(self.cond_drop, "model.cond_drop", lo=0.0, hi=1.0)


@dataclasses.dataclass(frozen=True)
class MeshFlowDataConfig(MeshDataConfig):
    vae: str = "checkpoints/mesh/vae_cpu"  # frozen SDF-VAE checkpoint
    num_latents: int = 64

    def __post_init__(self):
        super().__post_init__()
        if not str(self.vae).strip():
            raise ConfigError("data.vae: a mesh_vae checkpoint is required (got '')")
        check_int(self.num_latents, "data.num_latents", lo=1, hi=1 << 14)


@dataclasses.dataclass(frozen=True)
class MeshFlowSampleConfig:
    steps: int = 50
    method: str = "euler"
    cfg: float = 5.0  # classifier-free guidance weight (0 = conditional)
    shift: float | None = None
    resolution: int = 128
    faces: int = 50000
    split: str = "heldout"  # meshes whose renders/classes condition `sample`

    def __post_init__(self):
        check_int(self.steps, "sample.steps", lo=1, hi=10**5)
        check_method(self.method, "sample.method")
        check_float(self.cfg, "sample.cfg", lo=0.0, hi=100.0)
        if self.shift is not None:
            check_float(self.shift, "sample.shift", lo=0.0, hi=1e3, lo_open=True)
        check_resolution(self.resolution, "sample.resolution")
        check_int(self.faces, "sample.faces", lo=MIN_FACES, hi=MAX_FACES)
        _check_split(self.split)


# ---- helpers shared by both heads --------------------------------------------------------
def ensure_mesh_cache(d, id_root: Path | None = None) -> Path:
    """Build the mesh cache of :mod:`flow3d.mesh.data` once (skipped when it holds finished
    records; a killed build's temporaries do not count). ``d`` is a data config with ``root``,
    ``cache_dir``, ``cache_surface/near/volume`` and ``workers`` (both mesh heads' have them);
    mesh ids are paths relative to ``id_root`` (default ``d.root``)."""
    cache = Path(d.cache_dir)
    if not cached_meshes(cache):
        root = Path(d.root)
        if not root.exists():
            raise DataError(f"{root}: mesh folder not found (data.root)")
        files = [f for f in list_mesh_files(root) if "edge_cases" not in f.parts]
        build_mesh_cache(
            files, cache, n_surface=d.cache_surface, n_near=d.cache_near,
            n_volume=d.cache_volume, workers=d.workers,
            root=root if id_root is None else id_root,
        )
    return cache


def _stack(items, key: str) -> Tensor:
    return torch.stack([it[key] for it in items])


# ---- the SDF-VAE head -------------------------------------------------------------------
class MeshVAEHead(Head):
    """Trains :class:`~flow3d.mesh.vae.SDFVAE` with :func:`~flow3d.mesh.vae.vae_loss`."""

    name = "mesh_vae"
    model_config = MeshVAEModelConfig
    data_config = MeshDataConfig
    sample_config = MeshVAESampleConfig

    def build_model(self) -> SDFVAE:
        m = self.recipe.model
        return SDFVAE(
            m.width, m.heads, m.latent_dim, m.enc_layers, m.dec_layers, m.num_freqs,
            m.num_latents, m.truncation, m.query_sampling,
        )

    def prepare_data(self) -> None:
        ensure_mesh_cache(self.recipe.data)

    def train_dataset(self) -> torch.utils.data.Dataset:
        d = self.recipe.data
        return MeshDataset(ensure_mesh_cache(d), d.n_surface, d.n_query, split="train",
                           holdout_per_class=d.holdout_per_class)

    def collate(self, items):
        keys = ("surface_points", "surface_normals", "query_points", "query_sdf")
        batch = {k: _stack(items, k) for k in keys}
        batch["class_id"] = torch.tensor([it["class_id"] for it in items])
        return batch

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        m = self.recipe.model
        pick = torch.randint(len(m.train_latents), (), generator=generator, device=generator.device)
        return vae_loss(
            model, batch["surface_points"], batch["surface_normals"], batch["query_points"],
            batch["query_sdf"], generator=generator, weights=m.loss,
            num_latents=m.train_latents[int(pick)], num_grad=m.num_grad,
        )

    @torch.no_grad()
    def sample(self, model: nn.Module, num: int, *, seed: int = 0, **overrides: Any) -> list:
        """Reconstructions (normalised coordinates) of the first ``num`` meshes of the split."""
        cfg = self.sample_settings(**overrides)
        d = self.recipe.data
        ds = MeshDataset(ensure_mesh_cache(d), min(4096, d.cache_surface), 16, split=cfg.split,
                         holdout_per_class=d.holdout_per_class, seed=seed)
        out = []
        for i in range(min(num, len(ds))):
            it = ds[i]
            z, _, _ = model.encode(it["surface_points"][None], it["surface_normals"][None],
                                   cfg.num_latents, sample=False)
            out.append(sdf_to_mesh(model.sdf_fn(z), cfg.resolution))
        return out

    def save_samples(self, samples, out_dir: Path) -> list[Path]:
        return [export_mesh(m, Path(out_dir) / f"recon_{i:03d}.glb") for i, m in enumerate(samples)]


# ---- the latent flow head --------------------------------------------------------------
class _LatentItems(torch.utils.data.Dataset):
    """(mesh, view) pairs: latents ``[M, C]``, one conditioning image, the class."""

    def __init__(self, latents: Tensor, images: Tensor, labels: Tensor):
        self.latents, self.images, self.labels = latents, images, labels  # [N,M,C] [N,V,1,R,R]
        self.views = images.shape[1]

    def __len__(self) -> int:
        return len(self.latents) * self.views

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        n, v = divmod(i, self.views)
        return {"x_1": self.latents[n], "image": self.images[n, v], "label": self.labels[n]}


def encode_meshes(vae: SDFVAE, surface: Tensor, normals: Tensor, num_latents: int,
                  batch: int = 8) -> Tensor:
    """Mean latents ``[N, M, C]`` of surface clouds ``[N, P, 3]`` (deterministic FPS)."""
    out = []
    with torch.no_grad():
        for s in range(0, len(surface), batch):
            out.append(vae.encode(surface[s : s + batch], normals[s : s + batch], num_latents,
                                  sample=False, query_sampling="fps")[1])
    return torch.cat(out)


class MeshFlowHead(Head):
    """Rectified flow on SDF-VAE latents, conditioned on an image, a class, or nothing."""

    name = "mesh_flow"
    model_config = MeshFlowModelConfig
    data_config = MeshFlowDataConfig
    sample_config = MeshFlowSampleConfig

    def __init__(self, recipe: Any):
        super().__init__(recipe)
        self._vae: SDFVAE | None = None
        self._stats: tuple[float, float] | None = None

    def build_model(self) -> LatentFlow:
        m = self.recipe.model
        return LatentFlow(
            self.vae.latent_dim, m.width, m.heads, m.depth, m.cond, m.num_classes,
            m.image_resolution, m.image_channels, m.cond_drop,
        )

    @property
    def vae(self) -> SDFVAE:
        """The frozen SDF-VAE of ``data.vae``, read once per head (the flow's latent size and
        every decode use this one copy)."""
        if self._vae is None:
            try:
                loaded = load_model(self.recipe.data.vae, head_name="mesh_vae")
            except FileNotFoundError:
                raise DataError(f"{self.recipe.data.vae}: VAE checkpoint not found "
                                "(data.vae)") from None
            self._vae = loaded.model.requires_grad_(False)
        return self._vae

    # ---- data ----------------------------------------------------------------------------
    def _latent_cache(self) -> Path:
        """Keyed by the VAE's weights (not its path: a VAE retrained in place must not reuse
        stale latents, and the same VAE on another machine finds the same cache)."""
        d = self.recipe.data
        try:
            ckpt = find_checkpoint(d.vae)
        except FileNotFoundError as e:
            raise DataError(f"{d.vae}: VAE checkpoint not found (data.vae)") from e
        h = hashlib.sha1(ema_file(ckpt).read_bytes())
        h.update(f"{d.num_latents}:{d.holdout_per_class}:{self.recipe.model.image_resolution}"
                 .encode())
        return Path(d.cache_dir) / f"flow_latents_{h.hexdigest()[:10]}.safetensors"

    def prepare_data(self) -> None:
        self.train_dataset()

    def train_dataset(self) -> torch.utils.data.Dataset:
        path = self._latent_cache()
        if path.is_file():
            t = load_file(str(path))
        else:
            t = self._encode_training_set()
            with atomic_path(path) as tmp:
                save_file(t, str(tmp))
        keep = t["labels"] >= 0 if self.recipe.model.cond == "class" else slice(None)
        if self.recipe.model.cond == "class" and not keep.any():
            raise DataError(f"{self.recipe.data.root}: no CAPOD (classN) meshes to train the "
                            "class-conditional flow on")
        latents, labels = t["latents"][keep], t["labels"][keep]
        images = t["images"][keep].float()  # stored as float16 (renders in [0, 1])
        self._stats = (float(latents.mean()), float(latents.std()))
        return _LatentItems(latents, images, labels)

    def _encode_training_set(self) -> dict[str, Tensor]:
        d, m = self.recipe.data, self.recipe.model
        ds = MeshDataset(ensure_mesh_cache(d), min(4096, d.cache_surface), 16, split="train",
                         holdout_per_class=d.holdout_per_class)
        items = [ds[i] for i in range(len(ds))]
        latents = encode_meshes(self.vae, _stack(items, "surface_points"),
                                _stack(items, "surface_normals"), d.num_latents)
        images = []
        for it in items:
            mesh, _ = normalize_mesh(load_mesh(ds.source_path(it["index"])))
            images.append(condition_images(mesh, m.image_resolution))
        return {"latents": latents.contiguous(), "images": torch.stack(images).half(),
                "labels": torch.tensor([it["class_id"] for it in items])}

    # ---- training ----------------------------------------------------------------------
    def _set_stats(self, model: LatentFlow) -> None:
        if self._stats is not None:
            mean, std = self._stats
            model.latent_mean.fill_(mean)
            model.latent_std.fill_(max(std, 1e-6))

    def context(self, model: LatentFlow, batch: dict[str, Tensor]) -> Tensor | None:
        if model.cond == "class" and (batch["label"] < 0).any():
            raise DataError("class-conditional training needs CAPOD meshes only "
                            "(a mesh without a class is in the training set)")
        return model.context(images=batch["image"], labels=batch["label"])

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        with torch.no_grad():
            self._set_stats(model)
        x_1 = model.from_latent(batch["x_1"])  # [B, M, C] standardised
        b = x_1.shape[0]
        x_0 = torch.randn(x_1.shape, generator=generator, device=generator.device).to(x_1)
        t = time_sampler(self.recipe.flow).sample(b, generator=generator, device=x_1.device)
        ps = affine_path(self.recipe.flow).sample(x_0, x_1, t)
        ctx = model.drop_context(self.context(model, batch), generator)
        return {"loss": flow_loss(self.recipe.flow, model(ps.x_t, t, ctx), ps.dx_t, t)}

    # ---- sampling ----------------------------------------------------------------------
    def velocity(self, model: LatentFlow, ctx: Tensor | None, cfg_weight: float):
        """``v(x, t)`` with the condition bound, wrapped in classifier-free guidance."""
        def cond(x, t):
            return model(x, t, ctx)

        if ctx is None or cfg_weight == 0:
            return cond
        null = model.null_context(ctx.shape[0])

        def uncond(x, t):
            return model(x, t, null)

        return ClassifierFreeGuidance(cond, uncond, cfg_weight)

    @torch.no_grad()
    def sample_latents(self, model: LatentFlow, ctx: Tensor | None, num: int, *, seed: int = 0,
                       **overrides: Any) -> Tensor:
        """Integrate noise ``[num, M, C]`` to VAE latents (un-standardised)."""
        cfg = self.sample_settings(**overrides)
        g = torch.Generator().manual_seed(seed)
        x_0 = torch.randn(num, self.recipe.data.num_latents, model.x_in.in_features, generator=g)
        grid = time_grid(cfg.steps, shift=cfg.shift)
        x_1 = solve(self.velocity(model, ctx, cfg.cfg), x_0, method=cfg.method, grid=grid).x
        return model.to_latent(x_1)

    @torch.no_grad()
    def sample(self, model: nn.Module, num: int, *, seed: int = 0, **overrides: Any) -> list:
        """Meshes for the first ``num`` held-out meshes' renders (image mode), classes
        ``0, 1, ...`` (class mode) or plain noise (unconditional)."""
        cfg = self.sample_settings(**overrides)
        images = self.split_images(cfg.split)[:num] if model.cond == "image" else None
        ctx = model.context(images=images, labels=torch.arange(num) % model.num_classes)
        num = num if ctx is None else ctx.shape[0]
        z = self.sample_latents(model, ctx, num, seed=seed, **overrides)
        return [sdf_to_mesh(self.vae.sdf_fn(z[i : i + 1]), cfg.resolution, faces=cfg.faces)
                for i in range(num)]

    def split_images(self, split: str) -> Tensor:
        """The first conditioning view of every mesh of a cache split: ``[N, 1, R, R]``."""
        d = self.recipe.data
        ds = MeshDataset(ensure_mesh_cache(d), 16, 16, split=split,
                         holdout_per_class=d.holdout_per_class)
        out = []
        for i in range(len(ds)):
            mesh, _ = normalize_mesh(load_mesh(ds.source_path(i)))
            out.append(condition_images(mesh, self.recipe.model.image_resolution,
                                        CONDITION_AZIMUTHS[:1], CONDITION_ELEVATIONS[:1]))
        return torch.cat(out)

    def save_samples(self, samples, out_dir: Path) -> list[Path]:
        out = Path(out_dir)
        return [export_mesh(m, out / f"sample_{i:03d}.glb") for i, m in enumerate(samples)]
