"""Appearance channels on the structured sparse-voxel latent, and the colour palette condition.

:class:`AppearanceVAE` is the sparse-voxel VAE of :mod:`flow3d.mesh.sparse_vae` with colour
where the geometry VAE has normals and signed distance: surface points carry their RGB into
their active voxel (PointNet max-pooling, residual sparse convolutions, a diagonal Gaussian of
``latent_dim`` channels per voxel), and the decoder's query MLP gives RGB logits at any point,
interpolated trilinearly from the voxel features. It lives on the *same* active voxels as the
geometry latents (TRELLIS keeps geometry and appearance in one structured latent; we keep two
decoders so that the geometry VAE, already bundled, is not retrained).

:func:`palette` summarises a set of colours by its ``k`` dominant colours and their weights:
the global condition of the appearance flow (a source image or a textured mesh gives one the
same way).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor, nn

from flow3d.mesh.sparse_vae import SparseSDFVAE
from flow3d.mesh.voxels import DEFAULT_BOUNDS, SparseVoxels

__all__ = ["PALETTE_SIZE", "AppearanceBatch", "AppearanceVAE", "appearance_loss",
           "load_appearance_vae", "palette"]

PALETTE_SIZE = 4  # dominant colours in the condition: 4 x (RGB + weight) = 16 values


class AppearanceVAE(SparseSDFVAE):
    """``encode(voxels, points, colors, point_batch, normals)`` (colours in [0, 1]) ``-> (z,
    mu, logvar)``; ``decode(z, voxels) -> feats``; :meth:`colors` ``(feats, voxels, points,
    point_batch, normals) -> [Q, 3]`` in (0, 1). Points carry ``2 rgb - 1`` and their outward
    normal into the encoder, and the query MLP reads the query's normal beside the
    interpolated features, then ends in 3 RGB logits: colour that changes across a crease
    inside one voxel (a part boundary at a sharp edge) is a function of the normal there,
    which a field of position alone can only blur."""

    def __init__(self, resolution: int = 32, bounds: float = DEFAULT_BOUNDS, width: int = 32,
                 latent_dim: int = 8, enc_blocks: int = 2, dec_blocks: int = 2,
                 num_freqs: int = 3, mlp_width: int = 64):
        super().__init__(resolution, bounds, width, latent_dim, enc_blocks, dec_blocks,
                         num_freqs, mlp_width, truncation=1.0)
        self.point_mlp[0] = nn.Linear(self.point_embed.out_dim + 6, width)
        self.sdf_mlp[0] = nn.Linear(width + self.query_embed.out_dim + 3, mlp_width)
        self.sdf_mlp[-1] = nn.Linear(mlp_width, 3)
        with torch.no_grad():  # the means start as the colour offset alone (latent_offset)
            self.to_moments[1].weight[:latent_dim].zero_()
            self.to_moments[1].bias[:latent_dim].zero_()

    def latent_offset(self, mu: Tensor, feats: Tensor, rows: Tensor, count: Tensor) -> Tensor:
        """The first three latent channels are offset by the voxel's mean ``2 rgb - 1`` (0 for
        a voxel without points), so a latent carries its voxel's colour from the first step
        and the network learns what varies inside the voxel. Without this direct path the
        max-pooled point MLP, led by the position embedding, passed almost no colour:
        training on fresh paintings stayed near one mean colour's 13 dB (logged batches at
        12.6-15.1, one at 18.0, over 450 steps; a 150-step rerun ended at 12.8)."""
        mean = torch.zeros(len(mu), 3, device=mu.device).index_add_(0, rows, feats[:, :3])
        mean = mean / count.clamp_min(1)[:, None]
        return torch.cat([mu[:, :3] + mean, mu[:, 3:]], -1)

    def encode(self, voxels: SparseVoxels, points: Tensor, colors: Tensor, point_batch: Tensor,
               normals: Tensor, **kwargs) -> tuple[Tensor, Tensor, Tensor]:
        if colors.shape != points.shape or normals.shape != points.shape:
            raise ValueError(f"points/colors/normals must be [P, 3]: {tuple(points.shape)}/"
                             f"{tuple(colors.shape)}/{tuple(normals.shape)}")
        feats = torch.cat([colors * 2.0 - 1.0, normals], -1)
        return self.encode_features(voxels, points, feats, point_batch, **kwargs)

    def colors(self, feats: Tensor, voxels: SparseVoxels, points: Tensor, point_batch: Tensor,
               normals: Tensor) -> Tensor:
        """RGB ``[Q, 3]`` in (0, 1) at surface ``points`` with outward ``normals``."""
        x = torch.cat([self.interpolate(feats, voxels, points, point_batch), normals], -1)
        return torch.sigmoid(self.sdf_mlp(x))


@dataclasses.dataclass
class AppearanceBatch:  # not frozen: Lightning moves batches field by field
    """Painted shapes: encoder points and colours, query points and their true colours."""

    voxels: SparseVoxels
    points: Tensor  # [P, 3]
    colors: Tensor  # [P, 3]
    point_batch: Tensor  # [P]
    query_points: Tensor  # [Q, 3]
    query_colors: Tensor  # [Q, 3]
    query_batch: Tensor  # [Q]
    palette: Tensor  # [B, 4 * PALETTE_SIZE]
    normals: Tensor  # [P, 3] outward
    query_normals: Tensor  # [Q, 3]


def appearance_loss(model: AppearanceVAE, batch: AppearanceBatch, *,
                    generator: torch.Generator | None = None, kl: float = 1e-5,
                    stats_momentum: float = 0.01) -> dict[str, Tensor]:
    """Colour L1 + L2 at held-out surface points and the KL term (averaged over voxels); in
    training mode the running latent statistics are updated (as for the geometry VAE)."""
    v = batch.voxels
    z, mu, logvar = model.encode(v, batch.points, batch.colors, batch.point_batch,
                                 batch.normals, generator=generator)
    pred = model.colors(model.decode(z, v), v, batch.query_points, batch.query_batch,
                        batch.query_normals)
    err = pred - batch.query_colors
    terms = {"rgb_l1": err.abs().mean(), "rgb_l2": (err**2).mean(),
             "kl": 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(-1).mean()}
    terms["loss"] = terms["rgb_l1"] + terms["rgb_l2"] + kl * terms["kl"]
    if model.training and stats_momentum > 0:
        with torch.no_grad():
            model.latent_mean.lerp_(mu.mean(0), stats_momentum)
            model.latent_std.lerp_(mu.std(0).clamp_min(1e-6), stats_momentum)
    terms["psnr"] = (-10 * torch.log10(terms["rgb_l2"].detach().clamp_min(1e-10)))
    return terms


def palette(colors: np.ndarray, k: int = PALETTE_SIZE, iters: int = 12,
            max_points: int = 4096) -> np.ndarray:
    """``[4 k]``: the ``k`` dominant colours of ``colors [N, 3]`` (k-means in RGB, started at
    luminance quantiles, so deterministic), each followed by its weight, heaviest first."""
    c = np.asarray(colors, dtype=np.float64).reshape(-1, 3)
    if len(c) == 0:
        raise ValueError("palette of no colours")
    if len(c) > max_points:
        c = c[np.linspace(0, len(c) - 1, max_points).astype(np.int64)]
    lum = c @ np.array([0.299, 0.587, 0.114])
    centres = c[np.argsort(lum)[((np.arange(k) + 0.5) / k * len(c)).astype(np.int64)]]
    for _ in range(iters):
        assign = ((c[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        for j in range(k):
            if (assign == j).any():
                centres[j] = c[assign == j].mean(0)
    weight = np.bincount(assign, minlength=k) / len(c)
    order = np.argsort(-weight, kind="stable")
    return np.concatenate([centres[order], weight[order, None]], 1).reshape(-1).astype(
        np.float32)


def load_appearance_vae(path) -> AppearanceVAE:
    """The frozen appearance VAE of an ``appearance_vae`` checkpoint (eval mode)."""
    from flow3d.engine.checkpoint import load_frozen

    return load_frozen(path, "appearance_vae", "appearance VAE")
