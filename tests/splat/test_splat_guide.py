"""The noisy-state classifier of SplatFlow's classifier guidance: it reads colour and disparity
(never the rays), learns classes from noised scenes through the engine's head, refuses a flow of
another layout, and `flow3d splat edit --class-guidance` runs it and keeps the unmasked pixels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from synthetic_scenes import sphere_scene, square_masks
from synthetic_scenes import write_sphere_dataset as write_scene

from flow3d import cli
from flow3d.errors import ConfigError
from flow3d.splat.guide import (
    NoisyClassifier,
    NoisyClassifierConfig,
    check_layouts_match,
    class_log_prob,
)
from flow3d.splat.mvflow import MultiViewFlow, MultiViewFlowConfig
from flow3d.splat.scenes import SceneBatch

ROOT = Path(__file__).resolve().parents[2]
DECODER = ROOT / "checkpoints" / "splat" / "gsdecoder"
TINY = NoisyClassifierConfig(views=3, size=16, patch=8, width=8, num_classes=4)


def _two_scenes() -> SceneBatch:
    """Class 0: a sphere filling the views; class 1: the same sphere seen from twice as far
    with its colours inverted."""
    a, b = sphere_scene(views=3, size=16, seed=0), sphere_scene(views=3, size=16, seed=1,
                                                                frame=1.0)
    rgb_b = torch.where(b.depth > 0, 1 - b.rgb, b.rgb)
    return SceneBatch(rgb=torch.cat([a.rgb, rgb_b]), mask=torch.cat([a.mask, b.mask]),
                      depth=torch.cat([a.depth, b.depth]), K=torch.cat([a.K, b.K]),
                      viewmats=torch.cat([a.viewmats, b.viewmats]),
                      label=torch.tensor([0, 1]), size=16)


def test_the_guide_reads_pixels_not_rays_and_gives_a_gradient_of_the_state_shape():
    torch.manual_seed(0)
    guide = NoisyClassifier(TINY)
    for film in guide.films:  # time-aware from the start (FiLM is zero-initialised)
        torch.nn.init.normal_(film.weight, std=0.5)
    s = _two_scenes()
    x = guide.layout.to_state(s.rgb, s.depth, s.K, s.viewmats)
    logits = guide(x, torch.tensor([0.3, 0.9]))
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    # one time for the batch, as a solver passes it
    torch.testing.assert_close(guide(x, torch.tensor(0.5)), guide(x, torch.tensor([0.5, 0.5])))
    assert not torch.allclose(guide(x, torch.tensor(0.1)), guide(x, torch.tensor(0.9)))
    z = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(class_log_prob(guide, torch.tensor([2, 3]))(z, 0.5).sum(), z)
    rays = guide.layout.groups()["rays"]
    assert grad.shape == x.shape and grad[..., rays].abs().max() == 0
    assert grad[..., : rays[0]].abs().max() > 0


def test_the_guide_head_learns_classes_of_noised_scenes(tmp_path):
    from flow3d.engine.config import load_recipe
    from flow3d.engine.heads import get_head

    recipe = load_recipe(ROOT / "recipes" / "splat" / "guide.yaml", overrides=[
        "model.views=3", "model.size=16", "model.width=8", "data.views=3", "data.size=16"])
    head = get_head("splat_guide")(recipe)
    model = head.build_model()
    scenes = _two_scenes()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(head.loss(model, scenes, torch.Generator().manual_seed(7))["loss"])

    first = fixed_loss()
    for _ in range(60):
        loss = head.loss(model, scenes, g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_loss() < 0.5 * first
    x = model.layout.to_state(scenes.rgb, scenes.depth, scenes.K, scenes.viewmats)
    with torch.no_grad():
        assert torch.equal(model(x, torch.ones(2)).argmax(-1), torch.tensor([0, 1]))


def test_a_guide_of_another_layout_is_refused():
    guide = NoisyClassifier(TINY)
    same = MultiViewFlow(MultiViewFlowConfig(views=3, size=16, patch=8, width=16, depth=1,
                                             heads=2, num_classes=4))
    check_layouts_match(guide, same)
    other = MultiViewFlow(MultiViewFlowConfig(views=4, size=16, patch=8, width=16, depth=1,
                                              heads=2, num_classes=4))
    with pytest.raises(ConfigError, match="--guide"):
        check_layouts_match(guide, other)
    with pytest.raises(ConfigError, match="multiple of model.patch"):
        NoisyClassifierConfig(size=60, patch=8)


@pytest.fixture(scope="module")
def tiny_guide(tmp_path_factory) -> Path:
    """An untrained guide of the bundled flows' layout, as a checkpoint."""
    from flow3d.engine.checkpoint import write_checkpoint
    from flow3d.engine.config import load_recipe
    from flow3d.engine.heads import get_head

    recipe = load_recipe(ROOT / "recipes" / "splat" / "guide.yaml", overrides=["model.width=8"])
    torch.manual_seed(0)
    state = get_head("splat_guide")(recipe).build_model().state_dict()
    return write_checkpoint(tmp_path_factory.mktemp("guide") / "last", model_state=state,
                            ema_state=state, recipe=recipe, step=0)


def test_edit_with_class_guidance_keeps_the_unmasked_pixels(tmp_path, capsys, tiny_guide):
    from flow3d.splat.dataset import load_dataset

    data = write_scene(tmp_path / "data", views=4)
    masks = square_masks(tmp_path / "masks", (1,), (slice(20, 44), slice(20, 44)))
    assert cli.main(["splat", "edit", str(data), "--mask", str(masks), "--class",
                     "dog", "--out", str(tmp_path / "edited"), "--decoder", str(DECODER),
                     "--steps", "2", "--class-guidance", "3", "--guide", str(tiny_guide)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["class_guidance"] == 3
    src, got = load_dataset(data), load_dataset(tmp_path / "edited")
    outside = torch.ones(4, 64, 64, 1, dtype=torch.bool)
    outside[1, 20:44, 20:44] = False
    fg = (outside & (src.masks > 0)).expand_as(src.images)
    assert torch.allclose(got.images[fg], src.images[fg], atol=1 / 255 + 1e-6)


@pytest.mark.parametrize(("argv", "mentions"), [
    (["splat", "complete", "DATA", "--known", "0", "--class-guidance", "2", "--out", "OUT"],
     "--class-guidance"),
    (["splat", "generate", "--class", "dog", "--class-guidance", "-1", "--out", "OUT.ply"],
     "--class-guidance"),
    (["splat", "generate", "--class", "dog", "--class-guidance", "2", "--guide", "MISSING",
      "--out", "OUT.ply"], "--guide"),
])
def test_class_guidance_bad_input(tmp_path, capsys, argv, mentions):
    from contract import assert_user_error

    data = write_scene(tmp_path / "data", views=2)
    argv = [a.replace("DATA", str(data)).replace("OUT", str(tmp_path / "out"))
            .replace("MISSING", str(tmp_path / "missing")) for a in argv]
    assert_user_error(argv, capsys, [mentions])
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.ply").exists()


def test_the_bundled_guide_reads_the_bundled_flows_states():
    """checkpoints/splat/guide has the layout and classes of both bundled flows (its held-out
    accuracy at each time is in docs/benchmarks.md)."""
    from flow3d.engine.checkpoint import load_frozen, load_model

    guide = load_frozen(ROOT / "checkpoints" / "splat" / "guide", "splat_guide", "guide")
    for name in ("mvflow_class", "mvflow_cams"):
        check_layouts_match(guide, load_model(ROOT / "checkpoints" / "splat" / name).model)
    assert guide.cfg.num_classes == 15


def test_anchored_edits_guide_the_completion_too(tmp_path, capsys, tiny_guide, monkeypatch):
    """--anchor 1: the draft and the completion from its anchor are both guided, with edit's
    default weight (the completion runs as a complete task, whose own default is off)."""
    from flow3d.splat import splatflow

    weights = []
    real = splatflow.class_guidance

    def spy(guide, labels, weight):
        weights.append(weight)
        return real(guide, labels, weight)

    monkeypatch.setattr(splatflow, "class_guidance", spy)
    data = write_scene(tmp_path / "data", views=3)
    masks = square_masks(tmp_path / "masks", (0,), (slice(24, 40), slice(24, 40)))
    assert cli.main(["splat", "edit", str(data), "--mask", str(masks), "--class",
                     "chair", "--out", str(tmp_path / "edited"), "--decoder", str(DECODER),
                     "--steps", "2", "--anchor", "1", "--guide", str(tiny_guide)]) == 0
    capsys.readouterr()
    assert weights == [splatflow.DEFAULT_CLASS_GUIDANCE["edit"]] * 2
