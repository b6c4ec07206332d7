"""Heads of SplatFlow (issue 16), trained on the multi-view scenes of :mod:`flow3d.splat.scenes`.

* ``splat_flow`` (``flow3d train recipes/splat/mvflow_class.yaml``): the multi-view
  rectified flow of :mod:`flow3d.splat.mvflow` over the colour, depth and rays of all 8 views
  (views in a random order each step; a flow over fewer views, e.g. one in
  ``recipes/splat/mvflow_single.yaml``, a random subset of them), class-conditional with
  condition dropout for classifier-free guidance, logit-normal training times.
* ``splat_classifier`` (``flow3d train recipes/splat/classifier.yaml``): the CAPOD class of a
  scene from any subset of its views, trained on real renders; the judge of the generation
  and editing benchmarks.
* ``splat_decoder`` (``flow3d train recipes/splat/gsdecoder.yaml``): the
  :class:`~flow3d.splat.decoder.GSDecoder`. Each step gives it a random subset of each scene's
  views (``given_min``-``given_max`` of them, inputs with multiplicative depth noise so it
  learns to mend imperfect, generated depth) and renders its Gaussians into *every* view of the
  scene: colour L1 + SSIM (3DGS's loss) + alpha against the mask + depth L1 on the object.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flow3d.engine.flow import affine_path, flow_loss, time_sampler
from flow3d.engine.head import Head
from flow3d.engine.keys import check_method
from flow3d.errors import ConfigError
from flow3d.options import check_float, check_int
from flow3d.splat.decoder import (
    GSDecoder,
    GSDecoderConfig,
    decode_scene,
    decoder_inputs,
    pixel_gaussians,
    view_inputs,
)
from flow3d.splat.metrics import photometric_loss
from flow3d.splat.mvflow import MultiViewFlow, MultiViewFlowConfig
from flow3d.splat.raynet import (
    RayRegressor,
    RayRegressorConfig,
    ray_loss,
    sample_rays,
    save_ray_samples,
)
from flow3d.splat.render import render
from flow3d.splat.scenes import SceneBatch, SceneDataConfig, SceneSet, load_scenes

__all__ = ["ClassifierConfig", "DecoderDataConfig", "DecoderSampleConfig", "FlowSampleConfig",
           "GSDecoderHead", "MultiViewFlowHead", "SceneClassifier", "SceneClassifierHead",
           "Steering", "classification_loss", "decoder_loss", "scene_velocity", "shuffle_colours"]

MASK_WEIGHT = 1.0
DEPTH_WEIGHT = 0.2


@dataclasses.dataclass(frozen=True)
class DecoderDataConfig(SceneDataConfig):
    """The scenes, plus how many views the decoder is given while training and the noise on
    their depth (log-normal, per pixel)."""

    given_min: int = 3
    given_max: int = 6
    depth_noise: float = 0.01
    # a decoder with the coverage channel sees it binary (depth > 0, as a flow generates it)
    # in this fraction of its training scenes, the true coverage in the rest
    binary_coverage: float = 0.25
    # each training scene's colour channels in a random order (the same in all its views and
    # its targets): the paintings are arbitrary colours, and 135 meshes x 8 paintings are few
    shuffle_colours: bool = False

    def __post_init__(self):
        super().__post_init__()
        check_int(self.given_min, "data.given_min", lo=1, hi=self.views)
        check_int(self.given_max, "data.given_max", lo=self.given_min, hi=self.views)
        check_float(self.depth_noise, "data.depth_noise", lo=0.0, hi=1.0)
        check_float(self.binary_coverage, "data.binary_coverage", lo=0.0, hi=1.0)


@dataclasses.dataclass(frozen=True)
class DecoderSampleConfig:
    """``sample`` decodes the first scenes of ``split`` from the views ``given`` (every other
    view by default) and renders every view."""

    split: str = "heldout"
    given: tuple[int, ...] = (0, 2, 4, 6)

    def __post_init__(self):
        if self.split not in ("train", "heldout"):
            raise ConfigError(f"sample.split = {self.split!r}: must be train or heldout")
        if not self.given:
            raise ConfigError("sample.given: name at least one view")
        for i, g in enumerate(self.given):
            check_int(g, f"sample.given[{i}]", lo=0, hi=1023)


class _Indices(torch.utils.data.Dataset):
    """Scene indices; the batch itself is cut from the in-memory :class:`SceneSet`."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def shuffle_colours(batch: SceneBatch, generator: torch.Generator | None = None) -> SceneBatch:
    """Each scene's colour channels in a random order, the same in all its views."""
    order = [torch.randperm(3, generator=generator) for _ in range(len(batch.label))]
    return dataclasses.replace(batch, rgb=torch.stack([batch.rgb[b][..., o]
                                                      for b, o in enumerate(order)]))


def decoder_loss(model: GSDecoder, batch: SceneBatch, given: Tensor, *,
                 depth_noise: float = 0.0, generator: torch.Generator | None = None,
                 backend: str = "cpu", binary_coverage: float = 0.0) -> dict[str, Tensor]:
    """Render the Gaussians decoded from the views ``given`` into every view of each scene (a
    decoder with the coverage channel reads each scene's coverage binary with probability
    ``binary_coverage``)."""
    views = batch.views(given)
    if depth_noise > 0:
        noise = torch.randn(views.depth.shape, generator=generator) * depth_noise
        views = dataclasses.replace(views, depth=views.depth * noise.exp())
    cfg = model.cfg
    n = len(batch.label)
    binary = torch.zeros(n, dtype=torch.bool)
    if cfg.coverage and binary_coverage > 0:  # no draw otherwise: older recipes replay exactly
        binary = torch.rand(n, generator=generator) < binary_coverage
    inputs = [decoder_inputs(cfg, views.rgb[b], views.depth[b],
                             None if binary[b] else views.mask[b]) for b in range(n)]
    x = torch.stack([view_inputs(views.rgb[b], inputs[b][0], views.cameras(b), cfg.near,
                                 cfg.far, inputs[b][1]) for b in range(n)])
    params = model(x)
    terms = {"rgb": 0.0, "mask": 0.0, "depth": 0.0}
    settings = cfg.render_settings()
    for b in range(n):
        g = pixel_gaussians(params[b], views.rgb[b], inputs[b][0], views.cameras(b),
                            inputs[b][1])
        out = render(g, batch.cameras(b), backend=backend, settings=settings)
        mask = batch.mask[b]
        target = batch.rgb[b] * mask
        terms["rgb"] = terms["rgb"] + photometric_loss(out.rgb, target)
        terms["mask"] = terms["mask"] + (out.alpha - mask).abs().mean()
        obj = (batch.depth[b] > 0).to(out.depth)
        err = (out.depth - batch.depth[b]).abs() * obj
        terms["depth"] = terms["depth"] + err.sum() / obj.sum().clamp_min(1.0)
    terms = {k: v / n for k, v in terms.items()}
    loss = terms["rgb"] + MASK_WEIGHT * terms["mask"] + DEPTH_WEIGHT * terms["depth"]
    return {"loss": loss, **terms}


class GSDecoderHead(Head):
    """Trains :class:`GSDecoder` on the cached scenes with :func:`decoder_loss`."""

    name = "splat_decoder"
    model_config = GSDecoderConfig
    data_config = DecoderDataConfig
    sample_config = DecoderSampleConfig

    def __init__(self, recipe: Any):
        super().__init__(recipe)
        self._scenes: dict[str, SceneSet] = {}

    def scenes(self, split: str) -> SceneSet:
        if split not in self._scenes:
            self._scenes[split] = load_scenes(self.recipe.data, split)
        return self._scenes[split]

    def build_model(self) -> GSDecoder:
        return GSDecoder(self.recipe.model)

    def prepare_data(self) -> None:
        self.scenes("train")

    def train_dataset(self) -> torch.utils.data.Dataset:
        return _Indices(len(self.scenes("train")))

    def collate(self, items) -> SceneBatch:
        return self.scenes("train").batch(list(items))

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        d = self.recipe.data
        n = int(torch.randint(d.given_min, d.given_max + 1, (1,), generator=generator))
        given = torch.randperm(d.views, generator=generator)[:n]
        if d.shuffle_colours:
            batch = shuffle_colours(batch, generator)
        return decoder_loss(model, batch, given, depth_noise=d.depth_noise,
                            generator=generator, binary_coverage=d.binary_coverage)

    @torch.no_grad()
    def sample(self, model: nn.Module, num: int, *, seed: int = 0, **overrides: Any) -> list:
        """Gaussians of the first ``num`` scenes of the split, decoded from ``given`` views."""
        cfg = self.sample_settings(**overrides)
        scenes = self.scenes(cfg.split)
        given = torch.tensor(cfg.given)
        if int(given.max()) >= self.recipe.data.views:
            raise ConfigError(f"sample.given: view {int(given.max())} does not exist (scenes "
                              f"have {self.recipe.data.views} views)")
        out = []
        for i in range(min(num, len(scenes))):
            views = scenes.batch([i]).views(given)
            out.append(decode_scene(model, views.rgb[0], views.depth[0], views.cameras(0),
                                    views.mask[0]))
        return out

    def save_samples(self, samples, out_dir: Path) -> list[Path]:
        from flow3d.splat.formats import write_ply

        return [write_ply(g, Path(out_dir) / f"scene_{i:03d}.ply") for i, g in
                enumerate(samples)]


# ---- the multi-view flow -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FlowSampleConfig:
    """Sampling: ``steps`` of ``method`` on the core's time grid (``shift``), classifier-free
    guidance with one weight per channel group (SplatFlow uses 7 / 5 / 1 for image / depth /
    rays at its size), and SplatFlow's stop-ray: while ``t <= stop_ray`` the predicted rays
    are replaced by those of the cameras fitted to them
    (:class:`~flow3d.core.guidance.ProjectPrediction`)."""

    steps: int = 50
    method: str = "euler"
    shift: float | None = None
    cfg_rgb: float = 2.0
    cfg_depth: float = 2.0
    cfg_rays: float = 1.0
    stop_ray: float = 0.25  # until this time the predicted rays are snapped to cameras (0: off)

    def __post_init__(self):
        check_int(self.steps, "sample.steps", lo=1, hi=10**5)
        check_method(self.method, "sample.method")
        if self.shift is not None:
            check_float(self.shift, "sample.shift", lo=0.0, hi=1e3, lo_open=True)
        for key in ("cfg_rgb", "cfg_depth", "cfg_rays"):
            check_float(getattr(self, key), f"sample.{key}", lo=0.0, hi=100.0)
        check_float(self.stop_ray, "sample.stop_ray", lo=0.0, hi=1.0)


@dataclasses.dataclass(frozen=True)
class Steering:
    """What steers :meth:`MultiViewFlowHead.sample_states` besides classifier-free guidance:
    solver ``hooks`` (``hook(x, t_next, step) -> x``, e.g. the core's inpainting) and
    ``guidance``, a ``velocity -> velocity`` wrapper applied after CFG (e.g. the splat guide's
    classifier guidance, :func:`~flow3d.splat.splatflow.class_guidance`)."""

    hooks: tuple = ()
    guidance: Any = None


def given_inputs(model: MultiViewFlow, x_1: Tensor, generator: torch.Generator) -> Tensor:
    """The clean states a conditional flow is given in training: each scene's depth channels
    set to 0 (no depth maps) with probability ``model.depth_drop``."""
    if not model.cfg.depth_drop:
        return x_1
    drop = torch.rand(x_1.shape[0], 1, 1, generator=generator) < model.cfg.depth_drop
    depth = model.layout.group_mask(("depth",))
    return torch.where(drop.to(x_1.device) & depth.to(x_1.device), torch.zeros_like(x_1), x_1)


def scene_velocity(model: MultiViewFlow, ctx: Tensor | None, cfg: FlowSampleConfig):
    """``v(x, t)`` with the condition bound and per-group classifier-free guidance (rgb, depth
    and ray channels of every token; :class:`~flow3d.core.guidance.ClassifierFreeGuidance`
    along the token's channel dimension)."""
    from flow3d.core.guidance import ClassifierFreeGuidance

    def cond(x, t):
        return model(x, t, ctx)

    weights = (cfg.cfg_rgb, cfg.cfg_depth, cfg.cfg_rays)
    if ctx is None or not any(weights):
        return cond
    null = model.null_context(ctx.shape[0])

    def uncond(x, t):
        return model(x, t, null)

    g = model.layout.groups()
    groups = [(g["rgb"].tolist(), cfg.cfg_rgb), (g["depth"].tolist(), cfg.cfg_depth),
              (g["rays"].tolist(), cfg.cfg_rays)]
    return ClassifierFreeGuidance(cond, uncond, 0.0, groups=groups, channel_dim=-1)


def _check_views_match(recipe, fewer: bool = False) -> None:
    """A model over ``views`` views at ``size``^2 needs data of that shape (``fewer``: or of
    more views, a random ``views`` of them each step)."""
    m, d = recipe.model, recipe.data
    if m.size != d.size or (m.views > d.views if fewer else m.views != d.views):
        views = "at most" if fewer else "equal to"
        raise ConfigError(f"model.views / model.size ({m.views}, {m.size}): the views must be "
                          f"{views} data.views ({d.views}) and the size data.size ({d.size})")


class MultiViewFlowHead(GSDecoderHead):
    """Trains :class:`MultiViewFlow` on the cached scenes (the decoder head's data)."""

    name = "splat_flow"
    model_config = MultiViewFlowConfig
    data_config = SceneDataConfig
    sample_config = FlowSampleConfig

    def build_model(self) -> MultiViewFlow:
        _check_views_match(self.recipe, fewer=True)
        return MultiViewFlow(self.recipe.model)

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        # the views in a random order; a flow over fewer views than the scenes have: a random
        # subset of them (e.g. one view: a single-view flow of the same scenes)
        order = torch.randperm(batch.rgb.shape[1], generator=generator)
        views = batch.views(order[: model.layout.views])
        x_1 = model.layout.to_state(views.rgb, views.depth, views.K, views.viewmats)
        x_0 = torch.randn(x_1.shape, generator=generator).to(x_1)
        t = time_sampler(self.recipe.flow).sample(x_1.shape[0], generator=generator,
                                                  device=x_1.device)
        ps = affine_path(self.recipe.flow).sample(x_0, x_1, t)
        x_t = ps.x_t
        if model.cfg.given:  # a conditional flow: the given groups clean, no loss on them
            x_t = torch.where(model.given, given_inputs(model, x_1, generator), x_t)
        ctx = model.drop_context(model.context(labels=views.label), generator)
        pred = model(x_t, t, ctx)
        w = model.cfg.ray_loss_weight
        mask = None
        if w != 1.0 or model.cfg.given:
            weights = model.layout.loss_weights(w) * ~model.given.cpu()
            mask = weights.to(x_1).expand_as(x_1)
        out = {"loss": flow_loss(self.recipe.flow, pred, ps.dx_t, t, mask=mask)}
        if (w != 1.0 or model.cfg.given) and "rays" not in model.cfg.given:
            # the rays' own error (of x1_hat), to watch them learn
            rays = model.layout.groups()["rays"]
            err = (pred - ps.dx_t)[..., rays].detach() * (1 - t).view(-1, 1, 1)
            out["ray_mse"] = err.square().mean()
        return out

    @torch.no_grad()
    def sample_states(self, model: MultiViewFlow, labels: Tensor | None, num: int, *,
                      seed: int = 0, steer: Steering | None = None,
                      start: Tensor | None = None, strength: float = 1.0,
                      given: Tensor | None = None, **overrides: Any) -> Tensor:
        """Token states ``[num, V T, dim]`` integrated from noise (``labels [num]`` for a
        class-conditional model, None for its null class; ``steer``: a :class:`Steering`, solver
        hooks such as the core's inpainting and a velocity wrapper). With ``start`` (an
        estimate of the states) and ``strength < 1``, SDEdit
        (:func:`~flow3d.core.editing.sdedit`): ``start`` noised to ``t = 1 - strength`` and
        integrated from there in ``strength`` of the steps (evenly spaced:
        ``sample.shift`` applies to sampling from noise only). A conditional flow
        (``model.given``) needs ``given``: states whose given channels are used as they are
        (the model keeps them: zero velocity)."""
        from flow3d.core.solvers import solve
        from flow3d.core.time import time_grid

        cfg = self.sample_settings(**overrides)
        g = torch.Generator().manual_seed(seed)
        lay = model.layout
        x_0 = torch.randn(num, lay.views * lay.tokens_per_view, lay.dim, generator=g)
        if model.cfg.given:
            if given is None:
                raise ConfigError(f"a conditional flow (given {', '.join(model.cfg.given)}) "
                                  "samples only with those channels given (flow3d splat "
                                  "poses)")
            x_0 = torch.where(model.given, given.to(x_0).expand_as(x_0), x_0)
            if start is not None:  # the path from start keeps the given channels too
                start = torch.where(model.given, given.to(start).expand_as(start), start)
        ctx = None
        if model.cond == "class":
            ctx = model.null_context(num) if labels is None else model.context(labels=labels)
            if labels is None:
                cfg = dataclasses.replace(cfg, cfg_rgb=0.0, cfg_depth=0.0, cfg_rays=0.0)
        velocity = scene_velocity(model, ctx, cfg)
        steer = steer or Steering()
        hooks = steer.hooks
        if steer.guidance is not None:
            velocity = steer.guidance(velocity)
        if cfg.stop_ray > 0 and "rays" not in model.cfg.given:
            # SplatFlow's stop-ray, before any other hook (inpainting)
            from flow3d.core.guidance import ProjectPrediction

            hooks = [ProjectPrediction(velocity, lay.snap_rays, t_max=cfg.stop_ray), *hooks]
        if start is not None and strength < 1.0:
            from flow3d.core.editing import sdedit

            x = sdedit(velocity, start.expand_as(x_0), strength, noise=x_0,
                       steps=max(1, round(cfg.steps * strength)), method=cfg.method,
                       hooks=list(hooks)).x
        else:
            x = solve(velocity, x_0, method=cfg.method,
                      grid=time_grid(cfg.steps, shift=cfg.shift), hooks=list(hooks)).x
        # the given channels exactly (SDEdit's noising mixes a value with itself: rounding)
        return torch.where(model.given, x_0, x) if model.cfg.given else x

    @torch.no_grad()
    def sample(self, model: nn.Module, num: int, *, seed: int = 0, **overrides: Any) -> list:
        """``num`` scenes of classes 0, 1, ...: ``(rgb, depth, rays)`` per scene."""
        labels = torch.arange(num) % model.num_classes
        x = self.sample_states(model, labels, num, seed=seed, **overrides)
        rgb, depth, rays = model.layout.split(x)
        return [(rgb[i], depth[i], rays[i]) for i in range(num)]

    def save_samples(self, samples, out_dir: Path) -> list[Path]:
        """One PNG per scene: the views' colours over their depths."""
        import numpy as np
        from PIL import Image

        from flow3d.io import atomic_path

        out = []
        for i, (rgb, depth, _) in enumerate(samples):
            d = depth / depth.max().clamp_min(1e-6)
            row = torch.cat([torch.cat(list(rgb), 1), torch.cat(list(d.expand_as(rgb)), 1)], 0)
            path = Path(out_dir) / f"scene_{i:03d}.png"
            with atomic_path(path) as tmp:
                Image.fromarray(np.round(row.numpy() * 255).astype(np.uint8)).save(tmp, "PNG")
            out.append(path)
        return out


# ---- the class recogniser of the benchmarks ----------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """The ``model`` section of ``recipes/splat/classifier.yaml``."""

    width: int = 32
    num_classes: int = 15

    def __post_init__(self):
        check_int(self.width, "model.width", lo=4, hi=1024)
        check_int(self.num_classes, "model.num_classes", lo=2, hi=100_000)


class SceneClassifier(nn.Module):
    """The CAPOD class of a scene from its views: a small CNN per view (colour on black +
    disparity), features averaged over the views, a linear layer. Trained on real renders; it
    judges generated and edited scenes (issue 16's recognition bars)."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        layers, c = [], 4
        for out in (w, 2 * w, 4 * w, 4 * w):
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.GroupNorm(8, out),
                       nn.SiLU()]
            c = out
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(c, cfg.num_classes)

    def forward(self, rgb: Tensor, depth: Tensor) -> Tensor:
        """Logits ``[B, classes]`` of ``rgb [B, V, H, W, 3]``, ``depth [B, V, H, W, 1]``."""
        b, v, h, w, _ = rgb.shape
        fg = (depth > 0).to(rgb.dtype)
        disp = torch.where(depth > 0, 1.0 / depth.clamp_min(1e-3), torch.zeros_like(depth))
        x = torch.cat([rgb * fg, disp], -1).reshape(b * v, h, w, 4).permute(0, 3, 1, 2)
        f = self.features(x).mean((-1, -2)).reshape(b, v, -1).mean(1)
        return self.out(f)


def classification_loss(logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Cross-entropy and accuracy: the losses of the scene classifiers (the judge and the
    guide of :mod:`flow3d.splat.guide`)."""
    return {"loss": nn.functional.cross_entropy(logits, labels),
            "accuracy": (logits.argmax(-1) == labels).float().mean()}


@dataclasses.dataclass(frozen=True)
class ClassifierSampleConfig:
    split: str = "heldout"

    def __post_init__(self):
        if self.split not in ("train", "heldout"):
            raise ConfigError(f"sample.split = {self.split!r}: must be train or heldout")


class SceneClassifierHead(GSDecoderHead):
    """Trains :class:`SceneClassifier` (cross-entropy) on random subsets of 2-8 views of the
    cached scenes, in a random order, mirrored left-right half of the time."""

    name = "splat_classifier"
    model_config = ClassifierConfig
    data_config = SceneDataConfig
    sample_config = ClassifierSampleConfig

    def build_model(self) -> SceneClassifier:
        return SceneClassifier(self.recipe.model)

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        v = batch.rgb.shape[1]
        n = int(torch.randint(2, v + 1, (1,), generator=generator))
        views = batch.views(torch.randperm(v, generator=generator)[:n])
        rgb, depth = views.rgb, views.depth
        if float(torch.rand((), generator=generator)) < 0.5:
            rgb, depth = rgb.flip(-2), depth.flip(-2)
        return classification_loss(model(rgb, depth), views.label)

    @torch.no_grad()
    def sample(self, model: nn.Module, num: int, *, seed: int = 0, **overrides: Any) -> list:
        """(true class, predicted class) of the first ``num`` scenes of the split."""
        scenes = self.scenes(self.sample_settings(**overrides).split)
        out = []
        for i in range(min(num, len(scenes))):
            b = scenes.batch([i])
            out.append((int(b.label[0]), int(model(b.rgb, b.depth).argmax(-1)[0])))
        return out

    def save_samples(self, samples, out_dir: Path) -> list[Path]:
        import json

        from flow3d.io import atomic_write_text

        path = Path(out_dir) / "predictions.json"
        atomic_write_text(path, json.dumps([{"true": t, "predicted": p} for t, p in samples]))
        return [path]


# ---- cameras from views ------------------------------------------------------------------------
class RayRegressorHead(GSDecoderHead):
    """Trains :class:`~flow3d.splat.raynet.RayRegressor` (:func:`~flow3d.splat.raynet.ray_loss`)
    on the cached scenes; ``sample`` writes each held-out scene's ray errors."""

    name = "splat_rays"
    model_config = RayRegressorConfig
    data_config = SceneDataConfig
    sample_config = ClassifierSampleConfig  # the scenes of a split, as the classifier's

    def build_model(self) -> RayRegressor:
        _check_views_match(self.recipe)
        return RayRegressor(self.recipe.model)

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        return ray_loss(model, batch, generator)

    @torch.no_grad()
    def sample(self, model: nn.Module, num: int, *, seed: int = 0, **overrides: Any) -> list:
        return sample_rays(self, model, num, **overrides)

    def save_samples(self, samples, out_dir: Path) -> list[Path]:
        return save_ray_samples(samples, out_dir)
