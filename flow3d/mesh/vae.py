"""Vector-set SDF-VAE: a surface point cloud -> M latent tokens -> a truncated signed distance.

The design follows 3DShape2VecSet (Zhang et al. 2023) as used by TripoSG (Li et al. 2025):

* encoder: M latent queries are a subsample (farthest-point or random) of the N input surface
  points; they cross-attend to the whole point cloud (Fourier features of positions and
  normals), then self-attend; a linear layer gives a diagonal Gaussian
  ``q(z | X) = N(mu, diag(exp(logvar)))`` per token, ``z: [B, M, C]``.
* decoder: self-attention over the latents, then each query point ``p`` cross-attends to them
  and an MLP gives ``s(p) ~ clamp(SDF(p), -tau, tau)``.

M is chosen at run time (``num_latents``): the weights never depend on it, so one checkpoint
encodes with 64, 256 or 512 tokens.

Losses (:func:`vae_loss`), with configurable weights ``lambda_*``::

    L = l1 |s - d| + l2 (s - d)^2                    (SDF, d the truncated target)
      + normal (1 - cos(grad_p s, n))                 (on surface points, autograd gradient)
      + eikonal (|grad_p s| - 1)^2                    (inside the truncation band)
      + kl KL(q(z | X) || N(0, I))
      + sign BCE(sigmoid(-s / eps), [d < 0])          (eps = tau / 10)

The sign term is ours and off by default: it was meant to make a wrong sign near a thin part
(a leg, a fin) expensive whatever its magnitude, as 3DShape2VecSet's occupancy loss does. With
``eps = tau / 10`` its gradient is 100x that of the L1 term, dominates the clipped update and
pushes the field towards a step, against the normal and eikonal terms: on 16 training shapes
and 7,500 CPU steps, weight 0.1 halved F@0.02 (0.316 against 0.631 without it; see
``benchmarks/study_mesh_vae.py``). ``recipes/mesh/vae_gpu.yaml`` (no longer bundled) was
trained with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FourierEmbedding",
    "CrossAttentionBlock",
    "SelfAttentionBlock",
    "SDFVAE",
    "VAELossWeights",
    "farthest_point_sample",
    "random_sample",
    "vae_loss",
]


# ---- building blocks (shared with flow.py) ------------------------------------------------
class FourierEmbedding(nn.Module):
    """``gamma(x) = [x, sin(2^k pi x), cos(2^k pi x)]_{k<F}`` per coordinate (NeRF style)."""

    def __init__(self, in_dim: int = 3, num_freqs: int = 8):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(num_freqs), persistent=False)
        self.out_dim = in_dim * (1 + 2 * num_freqs)

    def forward(self, x: Tensor) -> Tensor:
        xf = (x[..., None] * self.freqs).flatten(-2)  # [..., in_dim * F]
        return torch.cat([x, xf.sin(), xf.cos()], dim=-1)


class Attention(nn.Module):
    """Multi-head attention ``softmax(q k^T / sqrt(d)) v`` with separate query/context widths."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by heads {heads}")
        context_dim = dim if context_dim is None else context_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(context_dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        B, N, D = x.shape
        q = self.to_q(x).view(B, N, self.heads, D // self.heads).transpose(1, 2)
        k, v = self.to_kv(context).view(B, context.shape[1], 2, self.heads, -1).unbind(2)
        # explicit softmax(q k^T / sqrt(d)) v: the fused CPU kernel has no double backward,
        # which the normal and eikonal losses need
        w = (q @ k.permute(0, 2, 3, 1)) * (q.shape[-1] ** -0.5)  # [B, H, N, Nc]
        h = w.softmax(-1) @ v.transpose(1, 2)  # [B, H, N, D / H]
        return self.out(h.transpose(1, 2).reshape(B, N, D))


def mlp(dim: int, mult: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, mult * dim), nn.GELU(), nn.Linear(mult * dim, dim))


class CrossAttentionBlock(nn.Module):
    """Pre-norm ``x + Attn(LN x, LN c)`` then ``x + MLP(LN x)``."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.norm_x = nn.LayerNorm(dim)
        self.norm_c = nn.LayerNorm(dim if context_dim is None else context_dim)
        self.attn = Attention(dim, heads, context_dim)
        self.norm_m = nn.LayerNorm(dim)
        self.mlp = mlp(dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = x + self.attn(self.norm_x(x), self.norm_c(context))
        return x + self.mlp(self.norm_m(x))


class SelfAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_a = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm_m = nn.LayerNorm(dim)
        self.mlp = mlp(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm_a(x))
        return x + self.mlp(self.norm_m(x))


# ---- query subsampling --------------------------------------------------------------------
def farthest_point_sample(points: Tensor, m: int, start: int = 0) -> Tensor:
    """Indices ``[B, m]`` of a greedy farthest-point subsample of ``points: [B, N, 3]``.

    Deterministic: begins at index ``start`` and adds the point farthest from those chosen.
    """
    B, N, _ = points.shape
    if m > N:
        raise ValueError(f"cannot pick {m} latent queries from {N} surface points")
    idx = torch.zeros(B, m, dtype=torch.long, device=points.device)
    dist = torch.full((B, N), float("inf"), device=points.device)
    cur = torch.full((B,), start, dtype=torch.long, device=points.device)
    batch = torch.arange(B, device=points.device)
    for i in range(m):
        idx[:, i] = cur
        d = ((points - points[batch, cur][:, None]) ** 2).sum(-1)  # [B, N]
        dist = torch.minimum(dist, d)
        cur = dist.argmax(-1)
    return idx


def random_sample(points: Tensor, m: int, generator: torch.Generator | None = None) -> Tensor:
    """Indices ``[B, m]`` of a uniform random subsample without replacement."""
    B, N, _ = points.shape
    if m > N:
        raise ValueError(f"cannot pick {m} latent queries from {N} surface points")
    noise = torch.rand(B, N, generator=generator, device=generator.device if generator else None)
    return noise.to(points.device).argsort(-1)[:, :m]


def _gather(x: Tensor, idx: Tensor) -> Tensor:
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


# ---- the VAE ------------------------------------------------------------------------------
class SDFVAE(nn.Module):
    """Vector-set SDF-VAE. ``encode(points, normals, M) -> (z, mu, logvar)`` with
    ``z: [B, M, latent_dim]``; ``sdf(z, queries: [B, Q, 3]) -> [B, Q]``."""

    def __init__(
        self,
        width: int = 64,
        heads: int = 4,
        latent_dim: int = 8,
        enc_layers: int = 1,
        dec_layers: int = 2,
        num_freqs: int = 8,
        num_latents: int = 64,
        truncation: float = 0.1,
        query_sampling: str = "fps",
    ):
        super().__init__()
        if query_sampling not in ("fps", "random"):
            raise ValueError(f"query_sampling must be 'fps' or 'random', got {query_sampling!r}")
        self.latent_dim = latent_dim
        self.num_latents = num_latents
        self.truncation = truncation
        self.query_sampling = query_sampling
        self.embed = FourierEmbedding(3, num_freqs)
        self.in_proj = nn.Linear(2 * self.embed.out_dim, width)  # positions and normals
        self.enc_cross = CrossAttentionBlock(width, heads)
        self.enc_self = nn.ModuleList(SelfAttentionBlock(width, heads) for _ in range(enc_layers))
        self.to_moments = nn.Linear(width, 2 * latent_dim)
        # start with a small posterior variance (sigma ~ 0.05): with sigma ~ 1 at
        # initialisation the sampled latents are mostly noise and the decoder learns to ignore
        # them (a blob for every shape); the KL term grows the variance back as it can.
        with torch.no_grad():
            self.to_moments.weight[latent_dim:].mul_(0.1)
            self.to_moments.bias[latent_dim:].fill_(-6.0)
        self.from_latent = nn.Linear(latent_dim, width)
        self.dec_self = nn.ModuleList(SelfAttentionBlock(width, heads) for _ in range(dec_layers))
        self.query_proj = nn.Linear(self.embed.out_dim, width)
        self.dec_cross = CrossAttentionBlock(width, heads)
        self.sdf_out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 1))

    def _features(self, points: Tensor, normals: Tensor) -> Tensor:
        return self.in_proj(torch.cat([self.embed(points), self.embed(normals)], -1))

    def encode(
        self,
        points: Tensor,  # [B, N, 3] surface points
        normals: Tensor,  # [B, N, 3] unit normals
        num_latents: int | None = None,
        *,
        sample: bool = True,
        generator: torch.Generator | None = None,
        query_sampling: str | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(z, mu, logvar)``, each ``[B, M, latent_dim]``; ``z = mu`` if not sample."""
        if points.ndim != 3 or points.shape[-1] != 3 or normals.shape != points.shape:
            raise ValueError(f"points/normals must be [B, N, 3]: {points.shape}/{normals.shape}")
        m = self.num_latents if num_latents is None else num_latents
        how = query_sampling or self.query_sampling
        if how == "fps":
            idx = farthest_point_sample(points, m)
        else:
            idx = random_sample(points, m, generator)
        feats = self._features(points, normals)  # [B, N, W]
        h = self.enc_cross(_gather(feats, idx), feats)  # [B, M, W]
        for block in self.enc_self:
            h = block(h)
        mu, logvar = self.to_moments(h).chunk(2, dim=-1)  # [B, M, C] each
        logvar = logvar.clamp(-30.0, 20.0)
        if not sample:
            return mu, mu, logvar
        eps = torch.randn(mu.shape, generator=generator, device=mu.device if generator is None
                          else generator.device).to(mu.device)
        return mu + (0.5 * logvar).exp() * eps, mu, logvar

    def decode_latents(self, z: Tensor) -> Tensor:
        """Self-attention over the latents: ``[B, M, C] -> [B, M, W]`` (cache per shape)."""
        h = self.from_latent(z)
        for block in self.dec_self:
            h = block(h)
        return h

    def query(self, h: Tensor, queries: Tensor) -> Tensor:
        """Truncated SDF ``[B, Q]`` at ``queries: [B, Q, 3]`` from decoded latents ``h``."""
        x = self.dec_cross(self.query_proj(self.embed(queries)), h)
        return self.sdf_out(x).squeeze(-1)

    def sdf(self, z: Tensor, queries: Tensor) -> Tensor:
        return self.query(self.decode_latents(z), queries)

    def sdf_fn(self, z: Tensor, chunk: int = 65536):
        """A ``f(points[Q, 3]) -> sdf[Q]`` callable for one shape ``z: [1, M, C]``, evaluated
        in chunks without gradients (what the surface extractor calls)."""
        with torch.no_grad():
            h = self.decode_latents(z)

        def fn(points: Tensor) -> Tensor:
            pts = torch.as_tensor(points, dtype=torch.float32, device=h.device)
            out = []
            with torch.no_grad():
                for s in range(0, pts.shape[0], chunk):
                    out.append(self.query(h, pts[None, s : s + chunk])[0])
            return torch.cat(out) if out else pts.new_zeros(0)

        return fn


@dataclass(frozen=True)
class VAELossWeights:
    l1: float = 1.0
    l2: float = 1.0
    normal: float = 0.1
    eikonal: float = 0.01
    kl: float = 1e-6
    sign: float = 0.0


def vae_loss(
    model: SDFVAE,
    surface: Tensor,  # [B, N, 3]
    normals: Tensor,  # [B, N, 3]
    queries: Tensor,  # [B, Q, 3] supervision points
    sdf: Tensor,  # [B, Q] signed distance at the queries (untruncated)
    *,
    generator: torch.Generator | None = None,
    weights: VAELossWeights = VAELossWeights(),
    num_latents: int | None = None,
    num_grad: int = 256,
) -> dict[str, Tensor]:
    """The SDF-VAE objective of the module docstring; returns every term and ``"loss"``.

    Gradient terms use ``num_grad`` surface points (normal loss) and ``num_grad`` supervision
    points inside the truncation band (eikonal) per shape; double backward is the dominant
    cost, so they are subsampled.
    """
    tau = model.truncation
    z, mu, logvar = model.encode(surface, normals, num_latents, generator=generator)
    h = model.decode_latents(z)
    pred = model.query(h, queries)  # [B, Q]
    target = sdf.clamp(-tau, tau)
    err = pred - target
    terms = {"sdf_l1": err.abs().mean(), "sdf_l2": (err**2).mean()}
    B, N, _ = surface.shape
    g = min(num_grad, N)
    pick = random_sample(surface, g, generator)
    p_surf = _gather(surface, pick)
    n_surf = _gather(normals, pick)
    # eikonal points: supervision queries inside the band (padded with surface points)
    band = (sdf.abs() < tau).float() + torch.rand(
        sdf.shape, generator=generator, device=generator.device if generator else None
    ).to(sdf.device)
    p_band = _gather(queries, band.argsort(-1, descending=True)[:, :g])
    p_grad = torch.cat([p_surf, p_band], 1).detach().requires_grad_(True)
    s_grad = model.query(h, p_grad)
    (grad,) = torch.autograd.grad(s_grad.sum(), p_grad, create_graph=True)  # [B, 2g, 3]
    terms["normal"] = (1.0 - F.cosine_similarity(grad[:, :g], n_surf, dim=-1)).mean()
    terms["eikonal"] = ((grad[:, g:].norm(dim=-1) - 1.0) ** 2).mean()
    terms["kl"] = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(-1).mean()
    inside = (sdf < 0).to(pred.dtype)
    terms["sign"] = F.binary_cross_entropy_with_logits(-pred / (0.1 * tau), inside)
    terms["loss"] = (
        weights.sign * terms["sign"]
        + weights.l1 * terms["sdf_l1"]
        + weights.l2 * terms["sdf_l2"]
        + weights.normal * terms["normal"]
        + weights.eikonal * terms["eikonal"]
        + weights.kl * terms["kl"]
    )
    return terms
