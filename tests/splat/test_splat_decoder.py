"""SplatFlow's GSDecoder and its scenes: the untrained decoder is exact unprojection, attention
mixes views, gradients reach every parameter, a tiny decoder learns a scene, and the scene cache
is deterministic, resumable and keeps held-out meshes out of training."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_scenes import sphere_scene

from flow3d.errors import ConfigError, DataError
from flow3d.splat.decoder import GSDecoder, GSDecoderConfig, pixel_gaussians, view_inputs
from flow3d.splat.head import DecoderDataConfig, decoder_loss
from flow3d.splat.project import project
from flow3d.splat.render import render
from flow3d.splat.scenes import SceneDataConfig, load_scenes, scene_cameras

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "meshes" / "capod"
TINY = GSDecoderConfig(width=16, depth=1, heads=2, patch=4, pixel_width=8)


def test_zero_parameters_are_unprojection():
    """Zero parameters put one Gaussian per pixel with depth at that pixel's back-projection:
    projected into its own camera it lands on the pixel centre, at the pixel's depth, with
    the pixel's colour and a footprint of softplus(0) pixels."""
    scene = sphere_scene()
    cams = scene.cameras(0)
    params = torch.zeros(3, 14, 16, 16)
    g = pixel_gaussians(params, scene.rgb[0], scene.depth[0], cams)
    keep = scene.depth[0, ..., 0] > 0
    assert len(g) == int(keep.sum()) > 50
    first = int(keep[0].sum())
    proj = project(g[torch.arange(first)], cams[0])
    ys, xs = torch.nonzero(keep[0], as_tuple=True)
    assert torch.allclose(proj.means2d[0], torch.stack([xs, ys], -1).float() + 0.5, atol=1e-3)
    assert torch.allclose(proj.depths[0], scene.depth[0, 0][keep[0]][:, 0], atol=1e-5)
    assert torch.allclose(g.dc_colors[:first], scene.rgb[0, 0][keep[0]], atol=1e-6)
    pixel = (scene.depth[0, 0][keep[0]][:, 0] / cams.K[0, 0, 0]).unsqueeze(-1)
    assert torch.allclose(g.scales[:first], math.log(2.0) * pixel.expand(-1, 3), rtol=1e-5)


def test_untrained_decoder_renders_its_own_views():
    """The decoder's last layer starts at zero: its Gaussians re-render the given views."""
    scene = sphere_scene(size=32)
    model = GSDecoder(TINY)
    cams = scene.cameras(0)
    x = view_inputs(scene.rgb[0], scene.depth[0], cams, TINY.near, TINY.far)
    with torch.no_grad():
        params = model(x.unsqueeze(0))[0]
    assert params.abs().max() == 0
    out = render(pixel_gaussians(params, scene.rgb[0], scene.depth[0], cams), cams)
    inside = scene.mask[0, ..., 0] > 0
    err = (out.rgb - scene.rgb[0]).abs()[inside].mean()
    assert err < 0.03, err


def test_attention_mixes_views_and_is_view_order_equivariant():
    torch.manual_seed(0)
    model = GSDecoder(TINY)
    for p in model.head[-1].parameters():
        torch.nn.init.normal_(p, std=0.1)
    scene = sphere_scene()
    x = view_inputs(scene.rgb[0], scene.depth[0], scene.cameras(0), TINY.near,
                    TINY.far).unsqueeze(0)
    with torch.no_grad():
        y = model(x)
        perm = torch.tensor([2, 0, 1])
        assert torch.allclose(model(x[:, perm]), y[:, perm], atol=1e-5)
        x2 = x.clone()
        x2[:, 1] += 0.5
        y2 = model(x2)
    assert (y2[:, 0] - y[:, 0]).abs().max() > 1e-4  # view 0 sees view 1's change


def test_loss_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = GSDecoder(TINY)
    for p in model.head[-1].parameters():
        torch.nn.init.normal_(p, std=0.01)
    scene = sphere_scene()
    out = decoder_loss(model, scene, torch.tensor([0, 1]), depth_noise=0.01,
                       generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "rgb", "mask", "depth"}
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


def test_tiny_decoder_learns_a_novel_view():
    """Trained on views 0 and 1 of a sphere, the loss on all three views drops."""
    torch.manual_seed(0)
    model = GSDecoder(TINY)
    scene = sphere_scene(views=3, size=16, seed=3)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    given = torch.tensor([0, 1])
    with torch.no_grad():
        first = float(decoder_loss(model, scene, given)["loss"])
    for _ in range(30):
        loss = decoder_loss(model, scene, given)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.8 * first, (first, float(loss.detach()))


def test_decoder_rejects_bad_shapes_and_settings():
    model = GSDecoder(TINY)
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.zeros(1, 2, 10, 18, 16))
    with pytest.raises(ValueError, match="expected"):
        model(torch.zeros(1, 2, 9, 16, 16))
    with pytest.raises(ValueError, match="model.width"):
        GSDecoderConfig(width=18, heads=4)
    with pytest.raises(ConfigError, match="data.given_max"):
        DecoderDataConfig(given_min=3, given_max=9, views=8)


def test_scene_cameras_see_the_object():
    for seed in range(20):
        cams = scene_cameras(np.random.default_rng(seed), 8, radius=0.7, size=64, fov_deg=40.0)
        centre = cams.viewmats[:, :3, 3]  # the origin in camera coordinates
        uv = centre[:, :2] / centre[:, 2:] * cams.K[:, 0, 0].unsqueeze(-1) + 32
        assert (centre[:, 2] > 0).all() and ((uv - 32).abs() < 10).all()
        dist = cams.centers.norm(dim=-1)
        base = 0.7 / math.sin(math.radians(20))
        assert (dist > 0.8 * base).all() and (dist < 1.25 * base).all()
    again = scene_cameras(np.random.default_rng(3), 8, radius=0.7, size=64, fov_deg=40.0)
    first = scene_cameras(np.random.default_rng(3), 8, radius=0.7, size=64, fov_deg=40.0)
    assert torch.equal(again.viewmats, first.viewmats)


def test_scene_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="data.views"):
        SceneDataConfig(views=1)
    with pytest.raises(ConfigError, match="data.size"):
        SceneDataConfig(size=8)


@pytest.mark.skipif(not (DATA / "class1").is_dir(), reason="../shared/data not available")
def test_scene_cache_builds_resumes_and_splits(tmp_path):
    pytest.importorskip("pyrender")
    root = tmp_path / "capod"
    for cls in ("class1", "class2"):
        (root / cls).mkdir(parents=True)
        for f in sorted((DATA / cls).glob("m*.obj"))[:2]:
            shutil.copy(f, root / cls / f.name)
    d = SceneDataConfig(root=str(root), cache_dir=str(tmp_path / "cache"), holdout_per_class=1,
                        views=2, size=16, paintings=2, heldout_paintings=1, progress=False)
    try:
        train = load_scenes(d, "train")
    except DataError as e:  # no EGL here
        pytest.skip(str(e))
    held = load_scenes(d, "heldout")
    assert len(train) == 4 and len(held) == 2
    assert not set(train.mesh_ids) & set(held.mesh_ids)
    assert train.rgb.shape == (4, 2, 16, 16, 3) and train.rgb.dtype == torch.uint8
    batch = train.batch([0, 1, 2, 3])
    fg = batch.depth > 0
    assert fg.any() and ((batch.mask > 0) | ~fg).all()  # depth only where there is coverage
    assert (batch.rgb.amax(-1, keepdim=True)[fg] > 0).float().mean() > 0.9
    files = sorted((tmp_path / "cache" / d.key / "train").glob("*.pt"))
    stamps = [f.stat().st_mtime_ns for f in files]
    again = load_scenes(d, "train")  # read, not rendered again
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert torch.equal(again.rgb, train.rgb)
    files[0].unlink()  # a killed build: only the missing file is rendered
    resumed = load_scenes(d, "train")
    assert torch.equal(resumed.rgb, train.rgb)
    with pytest.raises(DataError, match="missing"):
        load_scenes(dataclasses.replace(d, cache_dir=str(tmp_path / "none")), "train",
                    build=False)
