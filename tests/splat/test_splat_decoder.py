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
import torch.nn.functional as F
from synthetic_scenes import sphere_scene

from flow3d.errors import ConfigError, DataError
from flow3d.splat.decoder import (
    GSDecoder,
    GSDecoderConfig,
    decode_scene,
    decoder_inputs,
    fill_depth,
    pixel_gaussians,
    view_inputs,
)
from flow3d.splat.head import DecoderDataConfig, decoder_loss
from flow3d.splat.project import project
from flow3d.splat.render import render
from flow3d.splat.scenes import SceneDataConfig, load_scenes, render_painting, scene_cameras

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
    # a cached scene rendered again: at its own size the cached pixels and cameras, at twice
    # the size the same cameras with twice the focal length (quality_splat_decoder --upscale)
    mesh = held.mesh_ids[0]
    same = render_painting(d, "heldout", mesh, 0, d.size)
    assert torch.equal(same["rgb"], held.rgb[0])
    torch.testing.assert_close(same["viewmats"], held.viewmats[0].to(same["viewmats"]))
    big = render_painting(d, "heldout", mesh, 0, 2 * d.size)
    assert big["rgb"].shape[1:3] == (32, 32)
    torch.testing.assert_close(big["K"][:, :2], 2 * same["K"][:, :2])
    with pytest.raises(DataError, match="no such mesh"):
        render_painting(d, "heldout", "class9_m0", 0, 16)
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


# ---- the coverage channel and the refinement ----------------------------------------------
COV = dataclasses.replace(TINY, coverage=True)


def test_fill_depth_gives_covered_pixels_the_nearest_neighbours_depth():
    depth = torch.zeros(1, 4, 4, 1)
    depth[0, 1, 1], depth[0, 1, 2] = 2.0, 3.0
    cov = torch.zeros(1, 4, 4, 1)
    cov[0, 1, 1] = cov[0, 1, 2] = 1.0
    cov[0, 2, 2] = 0.4  # covered, no depth sample: its nearest neighbour is at 2
    cov[0, 3, 0] = 0.3  # covered, but no neighbour has depth either
    out = fill_depth(depth, cov)
    assert out[0, 2, 2, 0] == 2.0
    assert out[0, 3, 0, 0] == 0.0 and out[0, 0, 0, 0] == 0.0  # uncovered stays background
    assert out[0, 1, 1, 0] == 2.0 and out[0, 1, 2, 0] == 3.0  # depth kept where it is
    assert int((out > 0).sum()) == 3


def test_binary_coverage_decodes_as_the_decoder_without_the_channel():
    """Untrained (last layer zero) and given no coverage, a decoder with the channel makes
    the same Gaussians as one without it: views from a flow decode as before."""
    scene = sphere_scene()
    cams = scene.cameras(0)
    with torch.no_grad():
        new = decode_scene(GSDecoder(COV), scene.rgb[0], scene.depth[0], cams)
        old = decode_scene(GSDecoder(TINY), scene.rgb[0], scene.depth[0], cams)
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        assert torch.allclose(getattr(new, name), getattr(old, name), atol=1e-5), name


def test_coverage_sets_opacity_adds_edge_pixels_and_reaches_the_network():
    torch.manual_seed(0)
    scene = sphere_scene(size=32)
    cams = scene.cameras(0)
    depth = scene.depth[0].clone()
    cov = scene.mask[0].clone()
    edge = (F.max_pool2d(cov.permute(0, 3, 1, 2), 3, 1, 1).permute(0, 2, 3, 1) > 0) & (cov == 0)
    cov[edge] = 0.25  # a ring of partly covered pixels whose depth sample missed
    model = GSDecoder(COV)
    with torch.no_grad():
        g = decode_scene(model, scene.rgb[0], depth, cams, cov)
        assert len(g) == int((depth > 0).sum()) + int(edge.sum())
        alpha = torch.sigmoid(g.opacity_logits)
        assert torch.isclose(alpha.min(), torch.tensor(0.25), atol=1e-5)
        assert torch.isclose(alpha.max(), torch.tensor(1 / (1 + math.exp(-3.0))), atol=1e-5)
        for p in model.head[-1].parameters():
            torch.nn.init.normal_(p, std=0.1)
        d, c = decoder_inputs(COV, scene.rgb[0], depth, cov)
        a = model(view_inputs(scene.rgb[0], d, cams, COV.near, COV.far, c).unsqueeze(0))
        b = model(view_inputs(scene.rgb[0], d, cams, COV.near, COV.far,
                              (c > 0).float()).unsqueeze(0))
    assert (a - b).abs().max() > 1e-4  # the network reads the coverage it is given
    batch = dataclasses.replace(scene, mask=cov[None])
    out = decoder_loss(model, batch, torch.tensor([0, 1]), binary_coverage=0.0)
    out["loss"].backward()
    assert model.embed.weight.grad[:, 4].abs().max() > 0  # the coverage channel's weights


def test_polish_fits_the_views_it_is_given():
    """Decoded Gaussians with wrong colours, refined on the views, re-render them better;
    zero steps change nothing."""
    from flow3d.splat.fit import PolishSettings, polish

    torch.manual_seed(0)
    scene = sphere_scene(size=32)
    cams = scene.cameras(0)
    with torch.no_grad():
        g = decode_scene(GSDecoder(TINY), scene.rgb[0], scene.depth[0], cams)
    g = dataclasses.replace(g, sh=g.sh + 0.3 * torch.randn_like(g.sh))
    target = scene.rgb[0] * scene.mask[0]

    def error(s):
        with torch.no_grad():
            return float((render(s, cams).rgb - target).abs().mean())

    assert polish(g, cams, target, scene.mask[0], PolishSettings(steps=0)) is g
    fitted = polish(g, cams, target, scene.mask[0], PolishSettings(steps=40))
    assert not fitted.means.requires_grad
    assert error(fitted) < 0.6 * error(g), (error(fitted), error(g))
    with pytest.raises(ConfigError, match="--refine"):
        PolishSettings(steps=-1)


def test_shuffle_colours_permutes_each_scenes_channels_alike_in_every_view():
    from flow3d.splat.head import shuffle_colours

    scene = sphere_scene(views=3, size=16)
    batch = dataclasses.replace(scene, rgb=torch.cat([scene.rgb, scene.rgb.flip(-1)]),
                                mask=scene.mask.repeat(2, 1, 1, 1, 1),
                                depth=scene.depth.repeat(2, 1, 1, 1, 1),
                                K=scene.K.repeat(2, 1, 1, 1),
                                viewmats=scene.viewmats.repeat(2, 1, 1, 1),
                                label=torch.zeros(2, dtype=torch.long))
    seen = set()
    for seed in range(12):
        out = shuffle_colours(batch, torch.Generator().manual_seed(seed))
        for b in range(2):
            # the same permutation of the channels in every view of scene b
            perm = [next(c for c in range(3) if torch.equal(out.rgb[b, ..., k],
                                                            batch.rgb[b, ..., c]))
                    for k in range(3)]
            assert sorted(perm) == [0, 1, 2]
            seen.add(tuple(perm))
        assert torch.equal(out.depth, batch.depth) and torch.equal(out.mask, batch.mask)
    assert len(seen) >= 4  # the order is drawn, not fixed
