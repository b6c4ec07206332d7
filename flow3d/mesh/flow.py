"""Latent rectified-flow transformer over the SDF-VAE's M latent tokens.

A DiT (Peebles & Xie 2023) without patching: each latent token ``[C]`` is one transformer
token; the timestep (and, in class mode, the class) modulates every block through adaptive
LayerNorm with zero-initialised gates (AdaLN-Zero); in image mode each block also
cross-attends to the image tokens of :class:`~flow3d.mesh.image_encoder.ImageEncoder`
(as TripoSG / PixArt do). The model predicts the velocity ``dx_t/dt`` of the rectified flow
``x_t = t x_1 + (1 - t) x_0`` (``t = 0`` noise, ``t = 1`` data).

Classifier-free guidance: :meth:`LatentFlow.null_context` gives the "no condition" context
(learned null image tokens, or the extra null class); training replaces the condition by it
with probability ``cond_drop``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flow3d.mesh.image_encoder import ImageEncoder
from flow3d.mesh.vae import Attention, mlp

__all__ = ["COND_MODES", "CONDITIONING_MODES", "Conditioning", "LatentFlow", "timestep_embedding"]

COND_MODES = ("none", "class", "image")  # what the mesh heads' recipes take
# every mode of :class:`Conditioning`: "vector" (a global condition vector) serves the
# appearance flow (flow3d.appearance), whose recipes check it themselves
CONDITIONING_MODES = (*COND_MODES, "vector")


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of ``1000 t``: ``[B] -> [B, dim]`` (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    a = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([a.cos(), a.sin()], dim=-1)


class DiTBlock(nn.Module):
    """``x += g1 * SA(mod(LN x)); x += CA(LN x, ctx); x += g2 * MLP(mod(LN x))``."""

    def __init__(self, dim: int, heads: int, cross: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, heads)
        self.cross = cross
        if cross:
            self.norm_x = nn.LayerNorm(dim)
            self.cross_attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = mlp(dim)
        self.mod = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def forward(self, x: Tensor, c: Tensor, ctx: Tensor | None) -> Tensor:
        s1, b1, g1, s2, b2, g2 = self.mod(nn.functional.silu(c))[:, None].chunk(6, dim=-1)
        x = x + g1 * self.attn(self.norm1(x) * (1 + s1) + b1)
        if self.cross:
            x = x + self.cross_attn(self.norm_x(x), ctx)
        return x + g2 * self.mlp(self.norm2(x) * (1 + s2) + b2)


class Conditioning:
    """The condition of a flow network (class, image or none) and its classifier-free-guidance
    null, shared by :class:`LatentFlow` and the sparse-voxel flows of
    :mod:`flow3d.mesh.sparse_flow`: :meth:`build_conditioning` adds ``class_emb`` (one extra
    row: the null class) or ``image_encoder`` + ``null_tokens`` to an ``nn.Module``."""

    def build_conditioning(self, cond: str, width: int, num_classes: int = 15,
                           image: tuple[int, int] = (64, 32), cond_drop: float = 0.1,
                           vector_dim: int = 16) -> None:
        """``image`` = (resolution, channels) of the :class:`ImageEncoder`; ``vector_dim``: the
        size of a global condition vector (``"vector"`` mode, e.g. a colour palette)."""
        if cond not in CONDITIONING_MODES:
            raise ValueError(f"cond must be one of {CONDITIONING_MODES}, got {cond!r}")
        self.cond, self.num_classes, self.cond_drop = cond, num_classes, cond_drop
        if cond == "class":
            self.class_emb = nn.Embedding(num_classes + 1, width)  # last row: null class
        if cond == "image":
            self.image_encoder = ImageEncoder(width, *image)
            n_tok = (image[0] // 8) ** 2
            self.null_tokens = nn.Parameter(torch.randn(1, n_tok, width) * 0.02)
        if cond == "vector":
            self.vector_dim = vector_dim
            self.vector_emb = nn.Sequential(nn.Linear(vector_dim, width), nn.SiLU(),
                                            nn.Linear(width, width))
            self.null_vector = nn.Parameter(torch.zeros(1, 1, width))

    def context(self, *, images: Tensor | None = None, labels: Tensor | None = None,
                vector: Tensor | None = None) -> Tensor | None:
        """The condition this model takes, from whichever of ``images`` ``[B, 1, R, R]``,
        ``labels`` ``[B]`` and ``vector`` ``[B, D]`` it needs (the others are ignored): image
        tokens ``[B, T, W]``, class or vector embeddings ``[B, 1, W]``, or None for an
        unconditional model. The one place where the conditioning mode is switched on
        (training, sampling and the generate pipeline)."""
        if self.cond == "image":
            if images is None:
                raise ValueError("image-conditioned flow needs images")
            return self.image_encoder(images)
        if self.cond == "class":
            if labels is None:
                raise ValueError("class-conditioned flow needs labels")
            if (labels < 0).any() or (labels >= self.num_classes).any():
                raise ValueError(f"class labels must lie in [0, {self.num_classes})")
            return self.class_emb(labels)[:, None]
        if self.cond == "vector":
            if vector is None or vector.ndim != 2 or vector.shape[1] != self.vector_dim:
                got = None if vector is None else tuple(vector.shape)
                raise ValueError(f"vector-conditioned flow needs vector [B, {self.vector_dim}], "
                                 f"got {got}")
            return self.vector_emb(vector.to(self.null_vector))[:, None]
        return None

    def time_condition(self, t, batch: int, ctx: Tensor | None, device) -> Tensor:
        """``[B, W]``: the embedding of ``t`` (0-dim or ``[B]``) through ``self.t_mlp``, plus the
        class or vector embedding in those modes; a conditioned model without ``ctx`` is an
        error."""
        t = torch.as_tensor(t, dtype=torch.float32, device=device).reshape(-1).expand(batch)
        width = self.t_mlp[0].in_features
        c = self.t_mlp(timestep_embedding(t, width))
        if self.cond != "none" and ctx is None:
            raise ValueError(f"{self.cond}-conditioned flow needs a context")
        return c + ctx[:, 0] if self.cond in ("class", "vector") else c

    def null_context(self, batch: int) -> Tensor | None:
        """The "no condition" context used for classifier-free guidance."""
        if self.cond == "image":
            return self.null_tokens.expand(batch, -1, -1)
        if self.cond == "class":
            idx = torch.full((batch,), self.num_classes, device=self.class_emb.weight.device)
            return self.class_emb(idx)[:, None]
        if self.cond == "vector":
            return self.null_vector.expand(batch, -1, -1)
        return None

    def drop_context(self, ctx: Tensor | None, generator: torch.Generator | None) -> Tensor | None:
        """Replace each sample's context by the null one with probability ``cond_drop``."""
        if ctx is None or self.cond_drop <= 0:
            return ctx
        u = torch.rand(ctx.shape[0], generator=generator, device=generator.device if generator
                       else None).to(ctx.device)
        keep = (u >= self.cond_drop)[:, None, None]
        null = self.null_context(ctx.shape[0])
        return torch.where(keep, ctx, null.to(ctx.dtype))


class LatentFlow(Conditioning, nn.Module):
    """Velocity network ``v(x_t, t, ctx)`` with ``x_t: [B, M, C]`` latent tokens.

    ``cond``: ``"none"`` (unconditional), ``"class"`` (``num_classes`` labels) or
    ``"image"`` (a from-scratch :class:`ImageEncoder`). Latents are standardised with the
    buffers ``latent_mean`` / ``latent_std`` (set from the training latents by the head):
    the flow runs in standardised space; :meth:`to_latent` maps samples back.
    """

    def __init__(
        self,
        latent_dim: int = 8,
        width: int = 64,
        heads: int = 4,
        depth: int = 2,
        cond: str = "image",
        num_classes: int = 15,
        image_resolution: int = 64,
        image_channels: int = 32,
        cond_drop: float = 0.1,
    ):
        super().__init__()
        self.width = width
        self.register_buffer("latent_mean", torch.zeros(()))
        self.register_buffer("latent_std", torch.ones(()))
        self.x_in = nn.Linear(latent_dim, width)
        self.t_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.build_conditioning(cond, width, num_classes, (image_resolution, image_channels),
                                cond_drop)
        self.blocks = nn.ModuleList(DiTBlock(width, heads, cond != "none") for _ in range(depth))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False)
        self.mod_out = nn.Linear(width, 2 * width)
        self.x_out = nn.Linear(width, latent_dim)
        for layer in (self.mod_out, self.x_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # ---- latent standardisation ---------------------------------------------------------
    def from_latent(self, z: Tensor) -> Tensor:
        return (z - self.latent_mean) / self.latent_std

    def to_latent(self, x: Tensor) -> Tensor:
        return x * self.latent_std + self.latent_mean

    # ---- velocity ----------------------------------------------------------------------
    def embed(self, x: Tensor) -> Tensor:
        """Tokens ``[B, M, W]`` of ``x: [B, M, C]`` (no positions: the vector set's tokens are
        unordered; :class:`~flow3d.mesh.sparse_flow.StructureFlow` adds its grid's)."""
        return self.x_in(x)

    def forward(self, x: Tensor, t: Tensor, ctx: Tensor | None = None) -> Tensor:
        """``v: [B, M, C]`` for ``x: [B, M, C]``, ``t`` 0-dim or ``[B]``, ``ctx`` from
        :meth:`context` / :meth:`null_context` (``None`` when unconditional)."""
        return self.x_out(self.features(x, t, ctx)[0])

    def features(self, x: Tensor, t: Tensor, ctx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The transformer's modulated output features ``[B, M, W]`` (what ``x_out`` maps to
        the velocity) and the time/class condition ``[B, W]``, for heads that decode more
        from them than one linear layer does."""
        if x.ndim != 3:
            raise ValueError(f"x must be [B, M, C], got {tuple(x.shape)}")
        c = self.time_condition(t, x.shape[0], ctx, x.device)  # [B, W]
        h = self.embed(x)  # [B, M, W]
        for block in self.blocks:
            h = block(h, c, ctx)
        shift, scale = self.mod_out(nn.functional.silu(c))[:, None].chunk(2, dim=-1)
        return self.norm_out(h) * (1 + scale) + shift, c
