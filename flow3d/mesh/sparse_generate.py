"""Sampling and local editing with the two-stage sparse-voxel generator.

:func:`sample_shape` runs both stages (:mod:`flow3d.mesh.sparse_flow`): a structure (active
voxels) from the structure flow, then latents on those voxels from the latent flow, each with
the core's solver and classifier-free guidance. :func:`edit_shape` regenerates only the
voxels inside a box: both stages run with the core's :class:`~flow3d.core.guidance.Inpainting`
hook, whose known entries are the input's structure tokens and latents outside the box (the
latents set exactly at ``t = 1``; the voxels outside the box merged back), so everything
outside the box is the input's, bit for bit; the mesh changes only where the decoder's
receptive field (:func:`edit_margin`) reaches into the box.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from flow3d.core.guidance import Inpainting
from flow3d.engine.checkpoint import LoadedModel, load_model
from flow3d.errors import DataError
from flow3d.mesh.condition import encode_condition
from flow3d.mesh.sparse_flow import coords_to_grid, grid_to_coords, patchify
from flow3d.mesh.sparse_vae import SparseSDFVAE, decode_sparse
from flow3d.mesh.voxels import SparseVoxels, voxel_labels, voxel_size

__all__ = [
    "SampleOptions",
    "TwoStage",
    "box_mask",
    "decode_shape",
    "drop_specks",
    "edit_margin",
    "edit_shape",
    "load_two_stage",
    "sample_shape",
]


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    """Solver settings of both stages (the latent stage's CFG applies when it is conditioned)."""

    steps: int = 50
    latent_steps: int = 25
    cfg: float = 3.0
    method: str = "euler"
    seed: int = 0
    resample: int = 0  # inpainting: RePaint jumps per step (harmonises the box with the rest)


@dataclasses.dataclass
class TwoStage:
    """The loaded structure and latent flows; both heads hold the same frozen VAE."""

    structure: LoadedModel
    latents: LoadedModel

    @property
    def vae(self) -> SparseSDFVAE:
        return self.structure.head.vae


def load_two_stage(structure, latent_ckpt) -> TwoStage:
    """A ``mesh_structure`` checkpoint (a path, or already loaded) and a ``mesh_slat`` one,
    trained on the same VAE."""
    st = structure if isinstance(structure, LoadedModel) else load_model(
        structure, head_name="mesh_structure")
    try:
        la = load_model(latent_ckpt, head_name="mesh_slat")
    except FileNotFoundError:
        raise DataError(f"{latent_ckpt}: latent-flow checkpoint not found") from None
    if str(st.recipe.data.vae) != str(la.recipe.data.vae):
        raise DataError(f"{latent_ckpt}: its VAE ({la.recipe.data.vae}) is not the structure "
                        f"model's ({st.recipe.data.vae})")
    la.head._vae = st.head.vae  # one copy
    return TwoStage(st, la)


def box_mask(coords: Tensor, box: tuple[float, ...], vae: SparseSDFVAE) -> Tensor:
    """``[M]`` bool: the voxel's centre lies inside ``box = (x0, y0, z0, x1, y1, z1)`` (the
    normalised frame)."""
    centre = (coords.float() + 0.5) * voxel_size(vae.resolution, vae.bounds) - vae.bounds
    lo = torch.tensor(box[:3], dtype=torch.float32)
    hi = torch.tensor(box[3:], dtype=torch.float32)
    return ((centre >= lo) & (centre <= hi)).all(-1)


def edit_margin(vae: SparseSDFVAE) -> float:
    """How far outside a box an edit can move the surface: the decoder's receptive field
    (one voxel per residual convolution block, one more for the trilinear interpolation) in
    the normalised frame's units."""
    return (len(vae.dec_blocks) + 1) * voxel_size(vae.resolution, vae.bounds)


def _check_voxels(coords: Tensor, where: str) -> Tensor:
    if len(coords) == 0:
        raise DataError(f"{where}: the structure flow produced no active voxels; try another "
                        "--seed or a lower --cfg")
    return coords


def drop_specks(coords: Tensor, resolution: int, fraction: float = 0.02) -> Tensor:
    """Active voxels without the 26-connected pieces smaller than ``fraction`` of them (the
    largest piece is always kept): a sampled structure's isolated specks would each decode to
    a floater (pieces of real shapes are far larger than 2% of their voxels)."""
    from scipy.ndimage import label

    if len(coords) == 0:
        return coords
    grid = coords_to_grid(coords, resolution).numpy()
    comp, n = label(grid, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return coords
    sizes = np.bincount(comp.ravel())[1:]
    keep = np.flatnonzero((sizes >= fraction * len(coords)) | (sizes == sizes.max())) + 1
    c = coords.numpy()
    return coords[torch.from_numpy(np.isin(comp[c[:, 0], c[:, 1], c[:, 2]], keep))]


def _latent_context(models: TwoStage, ctx_inputs: dict):
    la = models.latents
    cond = la.model.cond
    return encode_condition(la, ctx_inputs.get("image") if cond == "image" else None,
                            ctx_inputs.get("label") if cond == "class" else None)


@torch.no_grad()
def sample_shape(models: TwoStage, ctx: Tensor | None, ctx_inputs: dict, opts: SampleOptions
                 ) -> tuple[Tensor, Tensor]:
    """One shape: active voxels ``[M, 3]`` and raw latents ``[M, C]``. ``ctx`` is the
    structure flow's condition; ``ctx_inputs`` (``image``, ``label``) give the latent flow's
    when it takes one."""
    st, la = models.structure, models.latents
    coords = st.head.sample_structure(st.model, ctx, 1, seed=opts.seed, steps=opts.steps,
                                      cfg=opts.cfg, method=opts.method)[0]
    coords = _check_voxels(drop_specks(coords, models.vae.resolution), "generate")
    z = la.head.sample_latents_on(la.model, coords, _latent_context(models, ctx_inputs),
                                  seed=opts.seed + 1, steps=opts.latent_steps, cfg=opts.cfg,
                                  method=opts.method)
    return coords, z


@torch.no_grad()
def edit_shape(models: TwoStage, shape: tuple[Tensor, Tensor], inside: Tensor,
               ctx: Tensor | None, ctx_inputs: dict, opts: SampleOptions
               ) -> tuple[Tensor, Tensor, np.ndarray]:
    """Regenerate the voxels of ``shape = (coords [M, 3], latents [M, C])`` whose centres are
    in the box (``inside: [R, R, R]`` bool, the box's voxels): structure first (occupancy
    inpainted outside the box), then latents (the kept voxels' latents inpainted).

    Returns the new voxels, their latents and the labels to decode them with
    (:func:`~flow3d.mesh.voxels.voxel_labels` of the new voxels inside the box, the input's
    outside it): inside/outside is a global property of a voxel set, and an edit that opens
    the shell would otherwise turn the input's interior into the outside far from the box."""
    st, la, vae = models.structure, models.latents, models.vae
    coords, z = shape
    R = vae.resolution
    g = torch.Generator().manual_seed(opts.seed)
    # 1. structure: known = the input's occupancy (its latent tokens) outside the box; a token
    # is known when every voxel it covers is outside the box
    occ = coords_to_grid(coords, R)[None]
    known = st.head.encode_grids(occ)  # [1, T, D]
    block = R // round(known.shape[1] ** (1 / 3))  # voxels per token side
    keep = patchify((~inside)[None], block).all(-1, keepdim=True).expand_as(known)
    v_st = st.head.velocity(st.model, ctx, opts.cfg)
    hook = Inpainting(known, keep, resample=opts.resample, velocity=v_st, generator=g)
    grid = st.head.sample_structure(st.model, ctx, 1, seed=opts.seed, steps=opts.steps,
                                    cfg=opts.cfg, method=opts.method, hooks=[hook])[0]
    # outside the box: the input's voxels exactly (the VAE's decoder reaches across tokens)
    new_occ = (coords_to_grid(grid, R) & inside) | (occ[0] & ~inside)
    new_grid = _check_voxels(grid_to_coords(new_occ), "edit")
    # 2. latents: known = the input's latents on its voxels outside the box
    old_row = torch.full((R, R, R), -1, dtype=torch.long)
    old_row[coords[:, 0], coords[:, 1], coords[:, 2]] = torch.arange(len(coords))
    rows = old_row[new_grid[:, 0], new_grid[:, 1], new_grid[:, 2]]
    kept = (rows >= 0) & ~inside[new_grid[:, 0], new_grid[:, 1], new_grid[:, 2]]
    known_z = torch.zeros(len(new_grid), vae.latent_dim)
    known_z[kept] = vae.normalize_latent(z[rows[kept]])
    voxels = SparseVoxels(new_grid, torch.zeros(len(new_grid), dtype=torch.long), R, 1)
    la_ctx = _latent_context(models, ctx_inputs)
    v_la = la.head.velocity_on(la.model, voxels, la_ctx, opts.cfg)
    hook = Inpainting(known_z, kept[:, None], resample=opts.resample, velocity=v_la, generator=g)
    z_new = la.head.sample_latents_on(la.model, new_grid, la_ctx,
                                      seed=opts.seed + 1, steps=opts.latent_steps, cfg=opts.cfg,
                                      method=opts.method, hooks=[hook])
    z_new[kept] = z[rows[kept]]  # exactly the input's (no round trip through standardising)
    labels = np.where(inside.numpy(), voxel_labels(new_grid.numpy(), R),
                      voxel_labels(coords.numpy(), R)).astype(np.int8)
    return new_grid, z_new, labels


def decode_shape(vae: SparseSDFVAE, coords: Tensor, z: Tensor, resolution: int, *,
                 faces: int | None = None, keep: float | None = 0.01,
                 labels: np.ndarray | None = None):
    """Latents on voxels -> a closed trimesh in the normalised frame: hierarchical extraction
    from the active voxels, pieces smaller than ``keep`` of the area dropped (floaters; the
    largest is always kept), decimated to ``faces`` when it has more. ``labels``: an edit's
    (see :func:`edit_shape`)."""
    import trimesh

    from flow3d.mesh.postprocess import decimate, remove_floaters

    out = decode_sparse(vae, z, coords, resolution, labels=labels)
    mesh = trimesh.Trimesh(out.vertices, out.faces, process=True)
    if len(mesh.faces) == 0:
        raise DataError("the decoded shape has no surface (empty mesh)")
    if keep is not None:
        mesh = remove_floaters(mesh, keep)
    if faces is not None and len(mesh.faces) > faces:
        small = decimate(mesh, faces)
        if small.is_watertight or not mesh.is_watertight:
            mesh = small
    return mesh
