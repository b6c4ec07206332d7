"""A classifier of *noisy* multi-view states, for classifier guidance of the SplatFlow flows.

The flows of :mod:`flow3d.splat.mvflow` are class-conditional and sampled with classifier-free
guidance, but at this size their own hold on the class is weak: CFG of 4 or 7 instead of 2
changed recognition by at most one scene or edit in 30 (docs/benchmarks.md, "Generation",
"Editing"). A classifier trained
on the real renders knows the classes far better (93% from 8 held-out views). Classifier
guidance (:class:`~flow3d.core.guidance.ClassifierGuidance`, Dhariwal & Nichol 2021) hands
that knowledge to the sampler: it adds ``w (1 - t) / t * grad log p(c | x_t)`` to the
velocity, which needs a classifier of the state *on the path*, ``x_t = t x_1 + (1 - t) x_0``,
not of clean views. This module is that classifier:

* :class:`NoisyClassifier`: the per-view CNN of the benchmark judge
  (:class:`~flow3d.splat.head.SceneClassifier`), made time-aware (each block's features
  scaled and shifted from the time, FiLM), over the colour and disparity channels of the
  flow's token states (:class:`~flow3d.splat.mvflow.SceneLayout`; the rays are not read),
  features averaged over the views.
* ``splat_guide`` (``flow3d train recipes/splat/guide.yaml``): cross-entropy on real
  training scenes noised to a uniform time, in a random view order, mirrored half the time.
  It is trained on the training split only, apart from the judge, and is not the judge.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flow3d.errors import ConfigError
from flow3d.options import check_float, check_int
from flow3d.splat.head import (
    ClassifierSampleConfig,
    GSDecoderHead,
    _check_views_match,
    classification_loss,
)
from flow3d.splat.mvflow import SceneLayout
from flow3d.splat.scenes import SceneDataConfig

__all__ = ["NoisyClassifier", "NoisyClassifierConfig", "NoisyClassifierHead", "class_log_prob",
           "check_layouts_match"]

# the times at which `sample` reports held-out accuracy
REPORT_TIMES = (0.2, 0.4, 0.6, 0.8, 1.0)


@dataclasses.dataclass(frozen=True)
class NoisyClassifierConfig:
    """The ``model`` section of ``recipes/splat/guide.yaml``: the flow's layout (views, size,
    patch, near, far: must equal the guided flow's) and the CNN's width."""

    views: int = 8
    size: int = 64
    patch: int = 8
    near: float = 0.5
    far: float = 5.0
    width: int = 32
    num_classes: int = 15

    def __post_init__(self):
        check_int(self.views, "model.views", lo=1, hi=64)
        check_int(self.size, "model.size", lo=16, hi=512)
        check_int(self.patch, "model.patch", lo=1, hi=64)
        if self.size % self.patch:
            raise ConfigError(f"model.size ({self.size}) must be a multiple of model.patch "
                              f"({self.patch})")
        check_float(self.near, "model.near", lo=0.0, hi=1e3, lo_open=True)
        check_float(self.far, "model.far", lo=self.near, hi=1e4, lo_open=True)
        check_int(self.width, "model.width", lo=8, hi=1024)
        if self.width % 8:
            raise ConfigError(f"model.width ({self.width}) must be a multiple of 8 (group norm)")
        check_int(self.num_classes, "model.num_classes", lo=2, hi=100_000)


class NoisyClassifier(nn.Module):
    """Logits ``[B, classes]`` of token states ``[B, V T, dim]`` at times ``t [B]`` (module
    docstring)."""

    def __init__(self, cfg: NoisyClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.layout = SceneLayout(cfg.views, cfg.size, cfg.patch, cfg.near, cfg.far)
        w = cfg.width
        widths = (w, 2 * w, 4 * w, 4 * w)
        self.t_embed = nn.Sequential(nn.Linear(16, 4 * w), nn.SiLU())
        self.convs, self.norms, self.films = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        c = 4
        for out in widths:
            self.convs.append(nn.Conv2d(c, out, 3, stride=2, padding=1))
            self.norms.append(nn.GroupNorm(8, out))
            film = nn.Linear(4 * w, 2 * out)
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
            self.films.append(film)
            c = out
        self.out = nn.Linear(c, cfg.num_classes)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        lay = self.layout
        b = x.shape[0]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(b)
        pix = lay.unpatchify(x[..., : lay.patch**2 * 4])  # [B, V, H, W, 4]
        h = pix.reshape(b * lay.views, lay.size, lay.size, 4).permute(0, 3, 1, 2)
        freqs = torch.exp(torch.linspace(0.0, 6.0, 8, device=x.device, dtype=x.dtype))
        emb = self.t_embed(torch.cat([torch.sin(t[:, None] * freqs),
                                      torch.cos(t[:, None] * freqs)], -1))
        emb = emb.repeat_interleave(lay.views, dim=0)  # [B V, 4 w]
        for conv, norm, film in zip(self.convs, self.norms, self.films, strict=True):
            scale, shift = film(emb)[:, :, None, None].chunk(2, dim=1)
            h = nn.functional.silu(norm(conv(h)) * (1 + scale) + shift)
        f = h.mean((-1, -2)).reshape(b, lay.views, -1).mean(1)
        return self.out(f)


def check_layouts_match(guide: NoisyClassifier, flow) -> None:
    """The guide reads the flow's states: their layouts (and classes) must be the same."""
    g, f = guide.layout, flow.layout
    if (g.views, g.size, g.patch, g.near, g.far) != (f.views, f.size, f.patch, f.near, f.far) \
            or guide.cfg.num_classes != flow.num_classes:
        raise ConfigError(f"--guide: a classifier of {g.views} views at {g.size}^2 (patch "
                          f"{g.patch}, {guide.cfg.num_classes} classes) cannot guide a flow of "
                          f"{f.views} views at {f.size}^2 (patch {f.patch}, {flow.num_classes} "
                          "classes)")


def class_log_prob(guide: NoisyClassifier, labels: Tensor):
    """``log_prob(x, t) -> [B]``: the guide's log-probability of ``labels`` (one per sample,
    or one for all), for :class:`~flow3d.core.guidance.ClassifierGuidance`."""

    def log_prob(x: Tensor, t: Tensor) -> Tensor:
        logp = torch.log_softmax(guide(x, t).float(), dim=-1)
        lab = labels.to(x.device).reshape(-1).expand(x.shape[0])
        return logp.gather(-1, lab[:, None]).squeeze(-1)

    return log_prob


class NoisyClassifierHead(GSDecoderHead):
    """Trains :class:`NoisyClassifier` on the cached scenes (the decoder head's data)."""

    name = "splat_guide"
    model_config = NoisyClassifierConfig
    data_config = SceneDataConfig
    sample_config = ClassifierSampleConfig

    def build_model(self) -> NoisyClassifier:
        _check_views_match(self.recipe)
        return NoisyClassifier(self.recipe.model)

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        views = batch.views(torch.randperm(batch.rgb.shape[1], generator=generator))
        rgb, depth = views.rgb, views.depth
        if float(torch.rand((), generator=generator)) < 0.5:  # mirrored (cameras not read)
            rgb, depth = rgb.flip(-2), depth.flip(-2)
        x_1 = model.layout.to_state(rgb, depth, views.K, views.viewmats)
        x_0 = torch.randn(x_1.shape, generator=generator).to(x_1)
        t = torch.rand(x_1.shape[0], generator=generator).to(x_1)
        x_t = t[:, None, None] * x_1 + (1 - t[:, None, None]) * x_0
        return classification_loss(model(x_t, t), views.label)

    @torch.no_grad()
    def sample(self, model: nn.Module, num: int, *, seed: int = 0, **overrides: Any) -> list:
        """Accuracy on the first ``num`` scenes of the split at each of :data:`REPORT_TIMES`
        (one noise draw per scene and time, from ``seed``)."""
        scenes = self.scenes(self.sample_settings(**overrides).split)
        g = torch.Generator().manual_seed(seed)
        n = min(num, len(scenes))
        right = dict.fromkeys(REPORT_TIMES, 0)
        for i in range(n):
            b = scenes.batch([i])
            x_1 = model.layout.to_state(b.rgb, b.depth, b.K, b.viewmats)
            for t in REPORT_TIMES:
                x_t = t * x_1 + (1 - t) * torch.randn(x_1.shape, generator=g)
                right[t] += int(model(x_t, torch.tensor([t])).argmax(-1)[0] == b.label[0])
        return [{"t": t, "accuracy": right[t] / max(n, 1), "scenes": n} for t in REPORT_TIMES]

    def save_samples(self, samples, out_dir: Path) -> list[Path]:
        from flow3d.io import atomic_write_text

        path = Path(out_dir) / "accuracy.json"
        atomic_write_text(path, json.dumps(samples, indent=1))
        return [path]
