"""SplatFlow's generator at CPU size: a rectified flow over the colour, depth and camera rays
of all views of a scene at once, in pixel space.

No pretrained image VAE can be downloaded here, so the state is the pixels themselves, cut into
``patch``^2 tokens (SplatFlow's latent is 8x downsampled, and its rays live at latent
resolution: one ray per 8x8 pixels, as here). One token per patch and view::

    token = [ (2 rgb - 1, 2 disparity - 1) for each of the patch's p^2 pixels | d | m / 3 ]

``rgb`` is black where there is no depth (the object on a black background), ``disparity =
(1/z - 1/far) / (1/near - 1/far)`` (0 on the background, so the depth channel is -1 there),
``(d, m)`` the Plücker ray through the patch centre (:func:`flow3d.splat.rays.plucker_rays`;
moments scaled to about unit size). A scene is ``[V * T, p^2 * 4 + 6]`` tokens, ``T`` per view,
and :class:`MultiViewFlow` is the mesh head's DiT (:class:`~flow3d.mesh.flow.LatentFlow`:
AdaLN-Zero blocks, class condition with a learned null for classifier-free guidance) with joint
attention over every view's tokens, a learned position per patch and a learned embedding per
view slot. The network predicts the clean scene ``x1_hat`` and returns the velocity ``(x1_hat -
x_t) / (1 - t)`` (``1 - t`` floored at 0.05 in training): a token holds 262 numbers and the DiT
is 192 wide, so a velocity (or noise) prediction would have to carry every pixel's noise through
a narrower layer, while clean views lie near a low-dimensional set (JiT, Li and He 2025, "Back
to Basics: Let Denoising Generative Models Denoise"; measured here: the velocity-predicting flow
still left per-pixel noise in its samples after 1,250 steps). With ``pixel_decoder: conv``
(the bundled flow) :class:`PixelDecoder` refines that prediction's pixels at full resolution
(the linear head alone makes each 8x8 patch from one token feature). :class:`SceneLayout` converts
both ways and names the channel groups (``rgb``, ``depth``, ``rays``) that get their own
guidance weights and inpainting masks.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from flow3d.errors import ConfigError
from flow3d.mesh.flow import LatentFlow
from flow3d.options import check_float, check_int
from flow3d.splat.cameras import Cameras
from flow3d.splat.decoder import depth_from_disparity, disparity

__all__ = ["MOMENT_SCALE", "MultiViewFlow", "MultiViewFlowConfig", "PixelDecoder", "SceneLayout"]

MOMENT_SCALE = 1.0 / 3.0  # |o x d| <= |o| ~ 2-3.5 scene units for these cameras
GROUPS = ("rgb", "depth", "rays")  # a token's channel groups
BACKGROUND_DISPARITY = 0.04  # below this (depth > 3.9 units; scenes reach 3.3) is background
# floor of 1 - t when the predicted scene becomes a velocity: in training (bounded loss
# weights, as JiT), and when sampling (tiny, so the last Euler step lands on the prediction)
MIN_REMAINING_TIME = 0.05
SAMPLING_REMAINING_TIME = 1e-4


@dataclasses.dataclass(frozen=True)
class MultiViewFlowConfig:
    """The ``model`` section of ``recipes/splat/mvflow_class.yaml``."""

    views: int = 8
    size: int = 64
    patch: int = 8
    width: int = 256
    depth: int = 6
    heads: int = 4
    cond: str = "class"
    num_classes: int = 15
    cond_drop: float = 0.1
    near: float = 0.5
    far: float = 5.0
    # training weight of each ray channel against a pixel channel: a token holds 256 pixel
    # numbers and 6 ray numbers, so at weight 1 the cameras are 2% of the loss
    ray_loss_weight: float = 1.0
    # channel groups (of rgb, depth, rays) given clean instead of generated: a conditional
    # flow over the rest (e.g. [rgb, depth]: the cameras of given views, Ray Diffusion's split
    # of pose estimation from generation). Given channels are passed through unchanged (zero
    # velocity) and carry no loss.
    given: tuple[str, ...] = ()
    # given depth: the chance that a training scene's depth channels are all 0 instead (how
    # a dataset without depth maps is given, so one model serves both)
    depth_drop: float = 0.0
    # how the pixels of the clean-scene prediction come out of the transformer: "linear" (one
    # linear layer per token: each 8x8 patch from one 192-wide feature, little more than the
    # patch's mean colour when undertrained) or "conv" (:class:`PixelDecoder`: the linear
    # patches refined at full resolution by a small convolutional net that also sees the
    # transformer's features and the noisy pixels, as a U-Net's last stage does)
    pixel_decoder: str = "linear"
    pixel_channels: int = 32  # the conv decoder's width
    pixel_blocks: int = 2  # and its residual blocks (two 3x3 convolutions each)

    def __post_init__(self):
        check_int(self.views, "model.views", lo=1, hi=64)
        check_int(self.size, "model.size", lo=8, hi=1024)
        check_int(self.patch, "model.patch", lo=1, hi=64)
        if self.size % self.patch:
            raise ConfigError(f"model.size = {self.size}: must be divisible by model.patch "
                              f"({self.patch})")
        check_int(self.width, "model.width", lo=8, hi=8192)
        check_int(self.heads, "model.heads", lo=1, hi=128)
        if self.width % self.heads:
            raise ConfigError(f"model.width = {self.width}: must be divisible by model.heads")
        check_int(self.depth, "model.depth", lo=1, hi=128)
        if self.cond not in ("none", "class"):
            raise ConfigError(f"model.cond = {self.cond!r}: must be none or class")
        check_int(self.num_classes, "model.num_classes", lo=1, hi=100_000)
        check_float(self.cond_drop, "model.cond_drop", lo=0.0, hi=1.0)
        check_float(self.near, "model.near", lo=0.0, hi=1e6, lo_open=True)
        check_float(self.far, "model.far", lo=self.near, hi=1e9, lo_open=True)
        check_float(self.ray_loss_weight, "model.ray_loss_weight", lo=0.0, hi=1e4,
                    lo_open=True)
        for g in self.given:
            if g not in GROUPS:
                raise ConfigError(f"model.given: unknown group {g!r} (choose from "
                                  f"{', '.join(GROUPS)})")
        if len(set(self.given)) != len(self.given) or len(self.given) == len(GROUPS):
            raise ConfigError(f"model.given = {list(self.given)}: name each group once and "
                              "leave at least one to generate")
        check_float(self.depth_drop, "model.depth_drop", lo=0.0, hi=1.0)
        if self.pixel_decoder not in ("linear", "conv"):
            raise ConfigError(f"model.pixel_decoder = {self.pixel_decoder!r}: must be linear "
                              "or conv")
        check_int(self.pixel_channels, "model.pixel_channels", lo=4, hi=1024)
        check_int(self.pixel_blocks, "model.pixel_blocks", lo=0, hi=64)
        if self.depth_drop and "depth" not in self.given:
            raise ConfigError("model.depth_drop: applies to a given depth (add depth to "
                              "model.given)")


@dataclasses.dataclass(frozen=True)
class SceneLayout:
    """Scenes of ``views`` views at ``size``^2 <-> token states ``[B, views * T, dim]``."""

    views: int
    size: int
    patch: int
    near: float
    far: float

    @property
    def grid(self) -> int:  # patches per side
        return self.size // self.patch

    @property
    def tokens_per_view(self) -> int:
        return self.grid**2

    @property
    def dim(self) -> int:
        return self.patch**2 * 4 + 6

    def groups(self) -> dict[str, Tensor]:
        """Channel indices of each group within a token: ``rgb``, ``depth``, ``rays``."""
        pix = torch.arange(self.patch**2 * 4).reshape(-1, 4)
        return {"rgb": pix[:, :3].reshape(-1), "depth": pix[:, 3],
                "rays": torch.arange(self.patch**2 * 4, self.dim)}

    # ---- scenes -> tokens -------------------------------------------------------------------
    def disparity(self, depth: Tensor) -> Tensor:
        """The decoder's disparity (:func:`~flow3d.splat.decoder.disparity`) kept in [0, 1]."""
        return disparity(depth, self.near, self.far).clamp(0.0, 1.0)

    def rays(self, K: Tensor, viewmats: Tensor) -> Tensor:
        """``[B, V, 6, g, g]`` rays at the patch centres (moments scaled)."""
        from flow3d.splat.rays import plucker_rays

        b, v = K.shape[:2]
        cams = Cameras(K.reshape(b * v, 3, 3), viewmats.reshape(b * v, 4, 4), self.size,
                       self.size)
        r = plucker_rays(cams, grid=self.grid).reshape(b, v, 6, self.grid, self.grid)
        return torch.cat([r[:, :, :3], r[:, :, 3:] * MOMENT_SCALE], dim=2)

    def to_state(self, rgb: Tensor, depth: Tensor, K: Tensor, viewmats: Tensor) -> Tensor:
        """Tokens ``[B, V T, dim]`` of ``rgb [B, V, H, W, 3]`` in [0, 1], ``depth [B, V, H, W,
        1]`` (0 = background) and cameras ``K [B, V, 3, 3]``, ``viewmats [B, V, 4, 4]``."""
        b, v, h, w, _ = rgb.shape
        if (v, h, w) != (self.views, self.size, self.size):
            raise ValueError(f"scenes of {v} views at {w}x{h}; the layout takes {self.views} "
                             f"at {self.size}x{self.size}")
        fg = (depth > 0).to(rgb.dtype)
        pix = self.patchify(torch.cat([2 * rgb * fg - 1, 2 * self.disparity(depth) - 1], -1))
        g = self.grid
        rays = self.rays(K, viewmats).permute(0, 1, 3, 4, 2).reshape(b, v * g * g, 6)
        return torch.cat([pix, rays.to(pix)], dim=-1)

    def patchify(self, images: Tensor) -> Tensor:
        """``[B, V, H, W, C]`` images -> ``[B, V T, p^2 C]`` tokens (pixel-major, channel-minor:
        a token's first ``p^2 * 4`` numbers when ``C = 4``)."""
        b, v, _, _, c = images.shape
        p, g = self.patch, self.grid
        t = images.reshape(b, v, g, p, g, p, c).permute(0, 1, 2, 4, 3, 5, 6)
        return t.reshape(b, v * g * g, p * p * c)

    def unpatchify(self, tokens: Tensor, channels: int = 4) -> Tensor:
        """The inverse of :meth:`patchify`: ``[B, V T, p^2 C]`` -> ``[B, V, H, W, C]``."""
        b = tokens.shape[0]
        p, g, v = self.patch, self.grid, self.views
        t = tokens.reshape(b, v, g, g, p, p, channels).permute(0, 1, 2, 4, 3, 5, 6)
        return t.reshape(b, v, self.size, self.size, channels)

    # ---- tokens -> scenes -------------------------------------------------------------------
    def split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(rgb [B, V, H, W, 3] in [0, 1], depth [B, V, H, W, 1], rays [B, V, 6, g, g])``
        (moments unscaled) of a state; disparity below :data:`BACKGROUND_DISPARITY` is
        background (depth 0, colour 0)."""
        b = x.shape[0]
        p, g, v = self.patch, self.grid, self.views
        t = x.reshape(b, v, g, g, self.dim)
        pix = self.unpatchify(x[..., : p * p * 4])
        disp = ((pix[..., 3:] + 1) / 2).clamp(0.0, 1.0)
        fg = disp > BACKGROUND_DISPARITY
        depth = torch.where(fg, depth_from_disparity(disp, self.near, self.far),
                            torch.zeros_like(disp))
        rgb = ((pix[..., :3] + 1) / 2).clamp(0.0, 1.0) * fg
        rays = t[..., p * p * 4 :].permute(0, 1, 4, 2, 3)
        rays = torch.cat([rays[:, :, :3], rays[:, :, 3:] / MOMENT_SCALE], dim=2)
        return rgb, depth, rays

    def loss_weights(self, ray_weight: float) -> Tensor:
        """Per-channel loss weights ``[dim]``: 1 for pixel channels, ``ray_weight`` for rays."""
        w = torch.ones(self.dim)
        w[self.patch**2 * 4 :] = ray_weight
        return w

    def group_mask(self, names) -> Tensor:
        """Boolean ``[dim]``: the channels of the groups ``names``."""
        m = torch.zeros(self.dim, dtype=torch.bool)
        for name, idx in self.groups().items():
            if name in names:
                m[idx] = True
        return m

    def pixel_mask(self, pixels: Tensor, channels=("rgb", "depth")) -> Tensor:
        """Boolean ``[1, V T, dim]``: the ``channels`` (of ``rgb``, ``depth``) of the pixels
        set in ``pixels [V, H, W]``; ray channels False."""
        p, g = self.patch, self.grid
        px = pixels.reshape(self.views, g, p, g, p).permute(0, 1, 3, 2, 4)
        px = px.reshape(self.views * g * g, p * p)
        out = torch.zeros(self.views * g * g, self.dim, dtype=torch.bool)
        per_pixel = out[:, : p * p * 4].view(-1, p * p, 4)
        for name, c in (("rgb", slice(0, 3)), ("depth", slice(3, 4))):
            if name in channels:
                per_pixel[..., c] = px[..., None]
        return out[None]

    def known_pixels(self, mask: Tensor) -> Tensor:
        """Boolean ``[V, H, W]``: the pixels whose depth channel is set in a token mask ``[1,
        V T, dim]`` (the inverse of :meth:`pixel_mask`)."""
        p, g = self.patch, self.grid
        m = mask[0, :, : p * p * 4].reshape(self.views, g, g, p, p, 4)[..., 3]
        return m.permute(0, 1, 3, 2, 4).reshape(self.views, self.size, self.size)

    def snap_rays(self, x: Tensor) -> Tensor:
        """``x`` with every view's ray channels replaced by the rays of the camera fitted to
        them (principal point at the centre); a scene whose rays fit no camera is left as it
        is (early in sampling they may not)."""
        from flow3d.splat.rays import snap_rays

        out = x.clone()
        b, p, g = x.shape[0], self.patch, self.grid
        rays = x[..., p * p * 4 :].reshape(b, self.views, g, g, 6).permute(0, 1, 4, 2, 3)
        for i in range(b):
            r = torch.cat([rays[i, :, :3], rays[i, :, 3:] / MOMENT_SCALE], dim=1)
            try:
                s = snap_rays(r, self.size, self.size,
                              principal_point=(self.size / 2, self.size / 2))
            except ValueError:
                continue
            s = torch.cat([s[:, :3], s[:, 3:] * MOMENT_SCALE], dim=1)
            out[i, :, p * p * 4 :] = s.permute(0, 2, 3, 1).reshape(-1, 6).to(x)
        return out

    def view_mask(self, known_views, device=None) -> Tensor:
        """Boolean ``[1, V T, 1]``: the tokens of the views ``known_views``."""
        m = torch.zeros(self.views, dtype=torch.bool, device=device)
        m[list(known_views)] = True
        return m.repeat_interleave(self.tokens_per_view)[None, :, None]


class PixelDecoder(nn.Module):
    """The pixels of a clean-scene prediction refined at full resolution: the linear head's
    patches ``[B, V T, p^2 4]``, the transformer's features (each token's ``W`` numbers spread
    over its patch as ``p^2 x k`` by a linear layer) and the noisy pixels of ``x_t`` go into a
    small residual CNN per view (FiLM from the time/class condition in each block), whose
    output is added to the patches. The last convolution starts at zero, so an untrained
    decoder returns the linear head's prediction."""

    FEATURES = 8  # k: feature channels per pixel from the transformer

    def __init__(self, layout: SceneLayout, width: int, channels: int, blocks: int):
        super().__init__()
        self.layout = layout
        k = self.FEATURES
        self.spread = nn.Linear(width, layout.patch**2 * k)
        self.conv_in = nn.Conv2d(4 + 4 + k, channels, 3, padding=1)
        groups = min(8, channels)
        while channels % groups:
            groups -= 1
        self.norms = nn.ModuleList(nn.GroupNorm(groups, channels) for _ in range(2 * blocks))
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1)
                                   for _ in range(2 * blocks))
        self.film = nn.ModuleList(nn.Linear(width, 2 * channels) for _ in range(blocks))
        for f in self.film:
            nn.init.zeros_(f.weight)
            nn.init.zeros_(f.bias)
        self.conv_out = nn.Conv2d(channels, 4, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _images(self, tokens: Tensor, channels: int) -> Tensor:
        """``[B, V T, p^2 C]`` -> ``[B V, C, H, W]``."""
        img = self.layout.unpatchify(tokens, channels)
        return img.flatten(0, 1).permute(0, 3, 1, 2)

    def forward(self, patches: Tensor, features: Tensor, x_t: Tensor, c: Tensor) -> Tensor:
        """Refined pixel channels ``[B, V T, p^2 4]`` (``patches`` and ``x_t``'s pixel channels
        ``[B, V T, p^2 4]``, ``features [B, V T, W]``, ``c [B, W]``)."""
        b, v = patches.shape[0], self.layout.views
        coarse = self._images(patches, 4)
        h = torch.cat([coarse, self._images(x_t, 4),
                       self._images(self.spread(features), self.FEATURES)], dim=1)
        h = self.conv_in(h)
        cv = c.repeat_interleave(v, dim=0)  # the condition of each view's scene
        for i, film in enumerate(self.film):
            scale, shift = film(nn.functional.silu(cv))[..., None, None].chunk(2, dim=1)
            r = self.convs[2 * i](nn.functional.silu(self.norms[2 * i](h)))
            r = self.norms[2 * i + 1](r) * (1 + scale) + shift
            h = h + self.convs[2 * i + 1](nn.functional.silu(r))
        out = coarse + self.conv_out(nn.functional.silu(h))
        return self.layout.patchify(out.permute(0, 2, 3, 1).reshape(b, v, *out.shape[2:], 4))


class MultiViewFlow(LatentFlow):
    """Velocity of multi-view token states ``[B, V T, dim]`` (module docstring)."""

    def __init__(self, cfg: MultiViewFlowConfig):
        self.layout = SceneLayout(cfg.views, cfg.size, cfg.patch, cfg.near, cfg.far)
        super().__init__(latent_dim=self.layout.dim, width=cfg.width, heads=cfg.heads,
                         depth=cfg.depth, cond=cfg.cond, num_classes=cfg.num_classes,
                         cond_drop=cfg.cond_drop)
        self.cfg = cfg
        self.pos = nn.Parameter(torch.randn(1, self.layout.tokens_per_view, cfg.width) * 0.02)
        self.view_emb = nn.Parameter(torch.randn(cfg.views, 1, cfg.width) * 0.02)
        self.register_buffer("given", self.layout.group_mask(cfg.given), persistent=False)
        self.pixel_decoder = (PixelDecoder(self.layout, cfg.width, cfg.pixel_channels,
                                           cfg.pixel_blocks)
                              if cfg.pixel_decoder == "conv" else None)

    def forward(self, x: Tensor, t: Tensor, ctx: Tensor | None = None) -> Tensor:
        """Velocity ``[B, V T, dim]`` from the predicted clean scene (module docstring); zero
        on the given channels."""
        from flow3d.core.conversions import convert_prediction

        eps = MIN_REMAINING_TIME if self.training else SAMPLING_REMAINING_TIME
        v = convert_prediction(self.predict_scene(x, t, ctx), x, t, src="x1", dst="velocity",
                               eps=eps)
        return v.masked_fill(self.given, 0.0) if self.cfg.given else v  # exactly, no rounding

    def predict_scene(self, x: Tensor, t: Tensor, ctx: Tensor | None = None) -> Tensor:
        """The network's clean-scene prediction ``x1_hat`` (the given channels: ``x``'s)."""
        if self.pixel_decoder is None:
            pred = super().forward(x, t, ctx)
        else:
            features, c = self.features(x, t, ctx)
            pred = self.x_out(features)
            n = self.layout.patch**2 * 4
            pixels = self.pixel_decoder(pred[..., :n], features, x[..., :n], c)
            pred = torch.cat([pixels, pred[..., n:]], dim=-1)
        return torch.where(self.given, x, pred) if self.cfg.given else pred

    def embed(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        if n != self.layout.views * self.layout.tokens_per_view:
            raise ValueError(f"MultiViewFlow: {n} tokens; expected {self.layout.views} views x "
                             f"{self.layout.tokens_per_view}")
        pos = (self.pos + self.view_emb).reshape(1, n, -1)
        return self.x_in(x) + pos
