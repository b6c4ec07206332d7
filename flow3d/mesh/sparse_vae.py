"""Structured sparse-voxel SDF-VAE: per-voxel latents on the active voxels of a 32^3 grid.

The structured latent of TRELLIS (Xiang et al. 2024) and Direct3D-S2 (Wu et al. 2025), written
with the sorted-key neighbour gather of :mod:`flow3d.mesh.voxels` instead of CUDA sparse
convolutions (issue 15):

* encoder: each surface point (Fourier features of its offset inside its voxel, and its
  normal) goes through a point MLP and is max-pooled into its active voxel (PointNet per voxel,
  Qi et al. 2017); voxels without a point get a learned embedding. Residual 3x3x3 sparse
  convolutions (:class:`SparseConv3d`) mix neighbours, and a linear layer gives a diagonal
  Gaussian ``q(z | X)`` per voxel, ``z: [M, C]``.
* decoder: residual sparse convolutions over ``z`` give features ``f: [M, W]``; a query ``p``
  interpolates them trilinearly from the 8 voxel centres around it (missing voxels contribute
  one of two learned features: outside, or enclosed by the active set), appends periodic
  Fourier features of its position in voxel units (continuous across voxels, so the field is
  continuous), and a small MLP gives the truncated SDF ``s(p) ~ clamp(SDF(p), -tau, tau)``.

The field is defined inside active voxels; :func:`masked_sdf_fn` gives every other point the
sign of its component of the inactive voxels (:func:`flow3d.mesh.voxels.voxel_labels`), so the
mesh extracted from active voxels only (:func:`decode_sparse`) is closed.

Losses (:func:`svae_loss`) are those of :func:`flow3d.mesh.vae.vae_loss` (SDF L1 + L2, normal,
eikonal, KL) with the SDF supervised inside active voxels only. The KL term is averaged over
voxels (summed over channels). ``latent_mean``/``latent_std`` are running per-channel
statistics of the posterior means, updated by the loss: a flow over the latents standardises
them with :meth:`SparseSDFVAE.normalize_latent`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flow3d.mesh.vae import FourierEmbedding, VAELossWeights
from flow3d.mesh.voxels import (
    DEFAULT_BOUNDS,
    OFFSETS_3X3X3,
    SparseVoxels,
    voxel_labels,
    voxel_size,
)

__all__ = [
    "SparseConv3d",
    "SparseSDFVAE",
    "decode_sparse",
    "masked_sdf_fn",
    "orient_normals",
    "reconstruct_sparse",
    "sparse_conv_dense",
    "svae_loss",
]

# The 8 corners of a unit cell (trilinear interpolation weights follow this order).
_CELL = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])


# ---- sparse convolution ------------------------------------------------------------------------
class SparseConv3d(nn.Module):
    """3x3x3 convolution over active voxels: ``y_v = b + sum_k W_k x_{v + o_k}``, missing
    neighbours counting as 0 (submanifold convolution, Graham et al. 2018: outputs only at
    active voxels). ``weight: [27, C_in, C_out]`` in :data:`OFFSETS_3X3X3` order."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(27, c_in, c_out) / math.sqrt(27 * c_in))
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: Tensor, nbr: Tensor) -> Tensor:
        """x: [M, C_in], nbr: [M, 27] rows (-1 missing) -> [M, C_out]."""
        M, C = x.shape
        x_pad = torch.cat([x, x.new_zeros(1, C)])  # row M is the zero neighbour
        g = x_pad.index_select(0, torch.where(nbr < 0, M, nbr).reshape(-1))  # [M * 27, C_in]
        return g.view(M, -1) @ self.weight.reshape(-1, self.weight.shape[-1]) + self.bias


def sparse_conv_dense(x: Tensor, voxels: SparseVoxels, weight: Tensor, bias: Tensor) -> Tensor:
    """Slow twin of :class:`SparseConv3d`: scatter into a dense grid, ``F.conv3d``, gather."""
    R, B, C = voxels.resolution, voxels.num_shapes, x.shape[1]
    c, b = voxels.coords, voxels.batch
    dense = x.new_zeros(B, C, R, R, R)
    dense[b, :, c[:, 0], c[:, 1], c[:, 2]] = x
    # conv3d correlates: out[p] = sum_{a,b,c} w[..., a, b, c] x[p + (a, b, c) - 1]
    w = weight.reshape(3, 3, 3, C, -1).permute(4, 3, 0, 1, 2)
    y = F.conv3d(dense, w, bias, padding=1)
    return y[b, :, c[:, 0], c[:, 1], c[:, 2]]


class SparseResBlock(nn.Module):
    """``x + conv(SiLU(LN x))`` then ``x + MLP(LN x)`` (one 3x3x3 sparse convolution per block:
    the neighbour gather, not the matrix product, dominates a step on this CPU)."""

    def __init__(self, width: int, mult: int = 2):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.conv = SparseConv3d(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, mult * width), nn.SiLU(),
                                 nn.Linear(mult * width, width))
        with torch.no_grad():
            self.mlp[-1].weight.mul_(0.1)

    def forward(self, x: Tensor, nbr: Tensor) -> Tensor:
        x = x + self.conv(F.silu(self.norm1(x)), nbr)
        return x + self.mlp(self.norm2(x))


class PeriodicEmbedding(nn.Module):
    """``[sin(2^k 2 pi u), cos(2^k 2 pi u)]_{k<F}`` per coordinate of ``u`` (voxel units):
    periodic with period one voxel, so a field built on it is continuous across voxels."""

    def __init__(self, num_freqs: int = 4):
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * 2.0 ** torch.arange(num_freqs),
                             persistent=False)
        self.out_dim = 6 * num_freqs

    def forward(self, u: Tensor) -> Tensor:
        uf = (u[..., None] * self.freqs).flatten(-2)
        return torch.cat([uf.sin(), uf.cos()], dim=-1)


# ---- the VAE -------------------------------------------------------------------------------
class SparseSDFVAE(nn.Module):
    """``encode(voxels, points, normals, point_batch) -> (z, mu, logvar)`` with ``z: [M, C]``
    on the rows of ``voxels``; ``decode(z, voxels) -> f: [M, W]``;
    ``query(f, voxels, points, point_batch) -> sdf [Q]``."""

    def __init__(
        self,
        resolution: int = 32,
        bounds: float = DEFAULT_BOUNDS,
        width: int = 32,
        latent_dim: int = 8,
        enc_blocks: int = 2,
        dec_blocks: int = 3,
        num_freqs: int = 3,
        mlp_width: int = 64,
        truncation: float = 0.1,
    ):
        super().__init__()
        self.resolution, self.bounds = resolution, bounds
        self.latent_dim, self.truncation = latent_dim, truncation
        self.h = voxel_size(resolution, bounds)
        self.point_embed = FourierEmbedding(3, num_freqs)
        self.point_mlp = nn.Sequential(
            nn.Linear(self.point_embed.out_dim + 3, width), nn.SiLU(), nn.Linear(width, width))
        self.empty_voxel = nn.Parameter(torch.zeros(width))  # voxels holding no surface point
        self.enc_blocks = nn.ModuleList(SparseResBlock(width) for _ in range(enc_blocks))
        self.to_moments = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * latent_dim))
        with torch.no_grad():  # start with sigma ~ 0.05 (see SDFVAE: noise-first latents die)
            self.to_moments[1].bias[latent_dim:].fill_(-6.0)
        self.from_latent = nn.Linear(latent_dim, width)
        self.dec_blocks = nn.ModuleList(SparseResBlock(width) for _ in range(dec_blocks))
        self.dec_norm = nn.LayerNorm(width)
        # interpolation from missing voxels: one feature for the outside, one for enclosed
        # voxels (a single one cannot say which side of the surface the set's border is on;
        # with it the decoder put spurious sheets on both borders of the shell)
        self.empty_feature = nn.Parameter(torch.zeros(2, width))
        self.query_embed = PeriodicEmbedding(num_freqs)
        self.sdf_mlp = nn.Sequential(
            nn.Linear(width + self.query_embed.out_dim, mlp_width), nn.SiLU(),
            nn.Linear(mlp_width, mlp_width), nn.SiLU(), nn.Linear(mlp_width, 1))
        self.register_buffer("latent_mean", torch.zeros(latent_dim))
        self.register_buffer("latent_std", torch.ones(latent_dim))

    # ---- latent standardisation (for a flow) --------------------------------------------------
    def normalize_latent(self, z: Tensor) -> Tensor:
        return (z - self.latent_mean) / self.latent_std

    def denormalize_latent(self, x: Tensor) -> Tensor:
        return x * self.latent_std + self.latent_mean

    # ---- encoder --------------------------------------------------------------------------
    def encode(
        self,
        voxels: SparseVoxels,
        points: Tensor,  # [P, 3] surface points (normalised frame)
        normals: Tensor,  # [P, 3]
        point_batch: Tensor,  # [P] shape of each point
        *,
        sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(z, mu, logvar)``, each ``[M, C]``; ``z = mu`` if not ``sample``. Points outside
        the active voxels are ignored."""
        if points.ndim != 2 or points.shape[-1] != 3 or normals.shape != points.shape:
            raise ValueError(f"points/normals must be [P, 3]: {points.shape}/{normals.shape}")
        return self.encode_features(voxels, points, normals, point_batch, sample=sample,
                                    generator=generator)

    def encode_features(self, voxels: SparseVoxels, points: Tensor, feats: Tensor,
                        point_batch: Tensor, *, sample: bool = True,
                        generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`encode` with any per-point features ``feats [P, F]`` in the normals' place
        (``F`` = what ``point_mlp`` takes beside the position embedding)."""
        u = (points + self.bounds) / self.h  # [P, 3] voxel units
        cell = torch.floor(u).long()
        row = voxels.lookup(cell, point_batch)  # [P]
        keep = row >= 0
        local = (u - cell - 0.5)[keep]  # [P', 3] in [-0.5, 0.5]
        feat = self.point_mlp(torch.cat([self.point_embed(local), feats[keep]], -1))
        M, W = len(voxels), feat.shape[-1]
        pooled = feat.new_zeros(M, W).scatter_reduce(
            0, row[keep, None].expand(-1, W), feat, "amax", include_self=False)
        count = torch.zeros(M, device=feat.device).index_add_(
            0, row[keep], torch.ones(len(feat), device=feat.device))
        h = torch.where(count[:, None] > 0, pooled, self.empty_voxel.expand(M, -1))
        nbr = voxels.neighbors(OFFSETS_3X3X3)
        for block in self.enc_blocks:
            h = block(h, nbr)
        mu, logvar = self.to_moments(h).chunk(2, dim=-1)
        mu = self.latent_offset(mu, feats[keep], row[keep], count)
        logvar = logvar.clamp(-30.0, 20.0)
        if not sample:
            return mu, mu, logvar
        eps = torch.randn(mu.shape, generator=generator,
                          device=generator.device if generator is not None else mu.device)
        return mu + (0.5 * logvar).exp() * eps.to(mu.device), mu, logvar

    def latent_offset(self, mu: Tensor, feats: Tensor, rows: Tensor, count: Tensor) -> Tensor:
        """The posterior means ``mu [M, C]``, given each kept point's features, its voxel row
        and the points per voxel: unchanged here; the appearance VAE offsets its first channels
        by the voxel's mean colour."""
        return mu

    # ---- decoder --------------------------------------------------------------------------
    def decode(self, z: Tensor, voxels: SparseVoxels) -> Tensor:
        """Per-voxel features ``[M, W]`` from latents ``z: [M, C]`` (cache them per shape)."""
        h = self.from_latent(z)
        nbr = voxels.neighbors(OFFSETS_3X3X3)
        for block in self.dec_blocks:
            h = block(h, nbr)
        return self.dec_norm(h)

    def query(self, feats: Tensor, voxels: SparseVoxels, points: Tensor, point_batch: Tensor
              ) -> Tensor:
        """Truncated SDF ``[Q]`` at ``points: [Q, 3]`` of shapes ``point_batch: [Q]``."""
        return self.sdf_mlp(self.interpolate(feats, voxels, points, point_batch)).squeeze(-1)

    def interpolate(self, feats: Tensor, voxels: SparseVoxels, points: Tensor,
                    point_batch: Tensor) -> Tensor:
        """The query MLP's input ``[Q, W + E]``: voxel features interpolated trilinearly at
        ``points`` and the periodic embedding of their position."""
        u = (points + self.bounds) / self.h - 0.5  # voxel-centre lattice
        base = torch.floor(u).detach()
        w = u - base  # [Q, 3] in [0, 1)
        cell = _CELL.to(points.device)
        corners = base.long()[:, None, :] + cell  # [Q, 8, 3]
        corners, cb = corners.reshape(-1, 3), point_batch.repeat_interleave(8)
        rows = voxels.lookup(corners, cb)
        empty = len(feats) + voxels.enclosed(corners, cb).long()  # row M outside, M + 1 inside
        table = torch.cat([feats, self.empty_feature])
        f = table[torch.where(rows < 0, empty, rows).view(-1, 8)]  # [Q, 8, W]
        wc = torch.where(cell.bool(), w[:, None, :], 1 - w[:, None, :]).prod(-1)  # [Q, 8]
        f = (wc[..., None] * f).sum(1)
        return torch.cat([f, self.query_embed(u + 0.5)], -1)

    def sdf_fn(self, z: Tensor, voxels: SparseVoxels, chunk: int = 65536):
        """``f(points[Q, 3]) -> sdf[Q]`` for one shape (``voxels.num_shapes == 1``), in chunks
        without gradients; not masked (see :func:`masked_sdf_fn`)."""
        with torch.no_grad():
            feats = self.decode(z, voxels)

        def fn(points: Tensor) -> Tensor:
            pts = torch.as_tensor(points, dtype=torch.float32, device=feats.device)
            out = []
            with torch.no_grad():
                for s in range(0, len(pts), chunk):
                    p = pts[s : s + chunk]
                    out.append(self.query(feats, voxels, p, p.new_zeros(len(p), dtype=torch.long)))
            return torch.cat(out) if out else pts.new_zeros(0)

        return fn


# ---- loss ----------------------------------------------------------------------------------
@dataclass
class SparseBatch:  # not frozen: Lightning moves batches field by field
    """A collated batch: flat tensors with the shape index of every row."""

    voxels: SparseVoxels
    surface_points: Tensor  # [P, 3]
    surface_normals: Tensor  # [P, 3]
    surface_batch: Tensor  # [P]
    query_points: Tensor  # [Q, 3] (inside active voxels)
    query_sdf: Tensor  # [Q] untruncated target
    query_batch: Tensor  # [Q]


def _subset(n: int, k: int, generator: torch.Generator | None) -> Tensor:
    dev = generator.device if generator is not None else None
    return torch.randperm(n, generator=generator, device=dev)[:k].cpu()


def svae_loss(
    model: SparseSDFVAE,
    batch: SparseBatch,
    *,
    generator: torch.Generator | None = None,
    weights: VAELossWeights | None = None,
    num_grad: int = 256,
    stats_momentum: float = 0.01,
) -> dict[str, Tensor]:
    """SDF L1 + L2, normal, eikonal and KL terms (see :func:`flow3d.mesh.vae.vae_loss`), every
    term and ``"loss"``. ``num_grad`` surface points and as many band queries per shape get the
    autograd gradient terms. In training mode the running latent statistics are updated."""
    weights = VAELossWeights() if weights is None else weights
    tau = model.truncation
    v = batch.voxels
    z, mu, logvar = model.encode(v, batch.surface_points, batch.surface_normals,
                                 batch.surface_batch, generator=generator)
    feats = model.decode(z, v)
    pred = model.query(feats, v, batch.query_points, batch.query_batch)
    err = pred - batch.query_sdf.clamp(-tau, tau)
    terms = {"sdf_l1": err.abs().mean(), "sdf_l2": (err**2).mean()}
    g = num_grad * v.num_shapes
    pick = _subset(len(batch.surface_points), g, generator)
    band = torch.nonzero(batch.query_sdf.abs() < tau).squeeze(-1)
    pick_band = band[_subset(len(band), g, generator)]
    p_grad = torch.cat([batch.surface_points[pick], batch.query_points[pick_band]])
    b_grad = torch.cat([batch.surface_batch[pick], batch.query_batch[pick_band]])
    p_grad = p_grad.detach().requires_grad_(True)
    s_grad = model.query(feats, v, p_grad, b_grad)
    (grad,) = torch.autograd.grad(s_grad.sum(), p_grad, create_graph=True)
    n_s = len(pick)
    terms["normal"] = (1 - F.cosine_similarity(grad[:n_s], batch.surface_normals[pick], -1)
                       ).mean()
    terms["eikonal"] = ((grad[n_s:].norm(dim=-1) - 1) ** 2).mean() if len(pick_band) else (
        grad.sum() * 0)
    terms["kl"] = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(-1).mean()
    terms["loss"] = (weights.l1 * terms["sdf_l1"] + weights.l2 * terms["sdf_l2"]
                     + weights.normal * terms["normal"] + weights.eikonal * terms["eikonal"]
                     + weights.kl * terms["kl"])
    if model.training and stats_momentum > 0:
        with torch.no_grad():
            m, s = mu.mean(0), mu.std(0).clamp_min(1e-6)
            model.latent_mean.lerp_(m, stats_momentum)
            model.latent_std.lerp_(s, stats_momentum)
    terms["latent_sigma"] = (0.5 * logvar).exp().mean().detach()
    return terms


# ---- extraction ------------------------------------------------------------------------------
def masked_sdf_fn(sdf_fn, coords: np.ndarray, resolution: int, bounds: float, tau: float,
                  chunk: int = 262_144, labels: np.ndarray | None = None):
    """The decoded field inside active voxels, the sign of its component elsewhere.

    A point whose adjacent voxels (1 to 8: more than one when it lies on a voxel face) are all
    active gets ``sdf_fn``; one adjacent to an outside voxel gets ``max(sdf, 1e-6)``, one
    adjacent to enclosed voxels only ``min(sdf, -1e-6)``; points with no active neighbour get
    ``+tau`` (outside) or ``-tau`` (inside) without a decoder call. Every surface the
    extraction finds is then the boundary of a solid: closed. ``labels`` (default: those of
    ``coords``, :func:`voxel_labels`) can be given, e.g. an edit's merged labels.
    """
    R = resolution
    labels = voxel_labels(coords, R) if labels is None else labels
    labels = torch.from_numpy(np.asarray(labels).astype(np.int64))
    labels = torch.nn.functional.pad(labels, (1, 1, 1, 1, 1, 1), value=0)  # outside the grid
    h = voxel_size(R, bounds)
    e = 1e-4

    def fn(points: Tensor) -> Tensor:
        p = points.detach().float().cpu()
        u = (p + bounds) / h
        lo = torch.floor(u - e).long().clamp(-1, R) + 1  # +1: the padding layer
        hi = torch.floor(u + e).long().clamp(-1, R) + 1
        cols = []
        for c in _CELL.tolist():  # the (up to 8) voxels whose closure holds the point
            i, j, k = (hi[:, a] if c[a] else lo[:, a] for a in range(3))
            cols.append(labels[i, j, k])
        adj = torch.stack(cols, 1)  # [Q, 8]
        any_out = (adj == 0).any(1)
        any_in = (adj == -1).any(1)
        any_act = (adj == 1).any(1)
        out = torch.where(any_out, torch.tensor(tau), torch.tensor(-tau))
        idx = torch.nonzero(any_act).squeeze(-1)
        for s in range(0, len(idx), chunk):
            i = idx[s : s + chunk]
            d = sdf_fn(points[i]).float().cpu()
            d = torch.where(any_out[i], d.clamp_min(1e-6), d)
            d = torch.where(~any_out[i] & any_in[i], d.clamp_max(-1e-6), d)
            out[i] = d
        return out.to(points.device)

    return fn


def decode_sparse(model: SparseSDFVAE, z: Tensor, coords: Tensor, resolution: int = 256, *,
                  chunk: int = 65536, band: int = 1, labels: np.ndarray | None = None):
    """One shape's latents ``z: [M, C]`` on active voxels ``coords: [M, 3]`` -> an
    :class:`~flow3d.mesh.extract.ExtractResult` in the normalised frame.

    Hierarchical marching cubes (:func:`~flow3d.mesh.extract.extract_hierarchical`) started
    from the active voxels' cells (the 32^3 grid is the coarse level) on the masked field of
    :func:`masked_sdf_fn`; the grid spans the voxel grid's box, whose outer voxels are never
    active, so nothing is cut.
    """
    from flow3d.mesh.extract import ExtractBudget, extract_hierarchical

    R = model.resolution
    if resolution % R or resolution < R:
        raise ValueError(f"resolution {resolution} must be a multiple of the voxel grid {R}")
    coords = coords.long()
    if len(coords) == 0:
        raise ValueError("no active voxels: nothing to decode")
    voxels = SparseVoxels(coords, torch.zeros(len(coords), dtype=torch.long), R, 1)
    if labels is not None:
        voxels.set_labels(labels)
    fn = masked_sdf_fn(model.sdf_fn(z, voxels, chunk), coords.cpu().numpy(), R, model.bounds,
                       model.truncation, labels=labels)
    start = coords.cpu().numpy()
    if labels is not None:  # merged labels may put inside next to outside: a surface there
        start = np.concatenate([start, _label_seams(labels)])
    return extract_hierarchical(fn, resolution, coarse=R, band=band, bounds=model.bounds,
                                budget=ExtractBudget(chunk=chunk), start_cells=start)


def _label_seams(labels: np.ndarray) -> np.ndarray:
    """Inside voxels (-1) that share a face with an outside one (0): given labels that are not
    one set's own components (an edit's), the solid's boundary also runs through them."""
    inside, out = labels == -1, np.pad(labels == 0, 1, constant_values=True)
    R = labels.shape[0]
    touch = np.zeros_like(inside)
    for axis in range(3):
        for shift in (0, 2):
            sl = [slice(1, R + 1)] * 3
            sl[axis] = slice(shift, shift + R)
            touch |= out[tuple(sl)]
    return np.argwhere(inside & touch).astype(np.int64)


def orient_normals(mesh, points: np.ndarray, normals: np.ndarray, delta: float = 0.01
                   ) -> np.ndarray:
    """Flip surface normals ``[N, 3]`` to point out of the target solid of
    :func:`flow3d.mesh.sdf.mesh_sdf`: ``n`` is kept where ``s(p + delta n) >= s(p - delta n)``.

    Face normals follow the triangles' winding, which many meshes get backwards (whole CAPOD
    models are inverted), while the target SDF's sign comes from winding numbers and does not
    care: an encoder fed raw normals learns "inside is behind the normal" and inverts the field
    of an inverted mesh. Open sheets (s the same on both sides) keep their normal.
    """
    from flow3d.mesh.sdf import mesh_sdf

    p = np.asarray(points, dtype=np.float64)
    n = np.asarray(normals, dtype=np.float64)
    s = mesh_sdf(mesh, np.concatenate([p + delta * n, p - delta * n]))
    flip = s[: len(p)] < s[len(p) :]
    return np.where(flip[:, None], -n, n).astype(np.float32)


def encode_mesh(model: SparseSDFVAE, normed_mesh, *, n_points: int = 8192, seed: int = 0,
                coords: np.ndarray | None = None) -> tuple[Tensor, Tensor]:
    """Active voxels ``[M, 3]`` and mean latents ``[M, C]`` of a normalised trimesh
    (``n_points`` surface samples: as many as a training item holds)."""
    from flow3d.mesh.data import sample_surface
    from flow3d.mesh.voxels import shape_active_voxels

    if coords is None:
        coords = shape_active_voxels(normed_mesh, model.resolution, model.bounds, seed=seed)
    c = torch.from_numpy(np.asarray(coords, dtype=np.int64))
    voxels = SparseVoxels(c, torch.zeros(len(c), dtype=torch.long), model.resolution, 1)
    pts, nrm = sample_surface(normed_mesh, n_points, np.random.default_rng(seed))
    nrm = orient_normals(normed_mesh, pts, nrm)
    pts_t = torch.from_numpy(pts)
    with torch.no_grad():
        _, mu, _ = model.encode(voxels, pts_t, torch.from_numpy(nrm),
                                torch.zeros(len(pts_t), dtype=torch.long), sample=False)
    return c, mu


def reconstruct_sparse(model: SparseSDFVAE, mesh, resolution: int = 256, *,
                       n_points: int = 8192, seed: int = 0):
    """Encode a mesh (any coordinates) and decode it at ``resolution``^3: a watertight
    trimesh in the input's own coordinates (the inverse of :func:`normalize_mesh`)."""
    from flow3d.mesh.data import normalize_mesh

    normed, norm = normalize_mesh(mesh)
    model = model.eval()
    coords, mu = encode_mesh(model, normed, n_points=n_points, seed=seed)
    return norm.invert(decode_sparse(model, mu, coords, resolution).mesh)
