"""The ray regressor of `flow3d splat poses`: its inputs say what is object and what is known,
it treats views as a set (any number, any order), it learns the rays of a scene whose colours
give the camera away, and its rays become the dataset's cameras."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from synthetic_scenes import sphere_scene

from flow3d.errors import ConfigError
from flow3d.splat.mvflow import SceneLayout
from flow3d.splat.raynet import RayRegressor, RayRegressorConfig, ray_loss, view_inputs

TINY = RayRegressorConfig(views=4, size=16, patch=8, width=8, layers=1, heads=2)


def test_inputs_mark_the_object_and_drop_depth_per_scene():
    scene = sphere_scene(views=2, size=16)
    lay = SceneLayout(2, 16, 8, 0.5, 5.0)
    rgb = scene.rgb * scene.mask
    x = view_inputs(rgb, scene.depth, lay)
    assert x.shape == (1, 2, 5, 16, 16)
    torch.testing.assert_close(x[:, :, 4], scene.mask[..., 0])
    torch.testing.assert_close(x[:, :, 3], lay.disparity(scene.depth)[..., 0] * scene.mask[..., 0])
    none = view_inputs(rgb, None, lay)  # no depth: the mask from the colour, disparity 0
    assert torch.equal(none[:, :, 3], torch.zeros_like(none[:, :, 3]))
    torch.testing.assert_close(none[:, :, 4], (rgb.amax(-1) > 0).float())
    both = view_inputs(torch.cat([rgb, rgb]), torch.cat([scene.depth, scene.depth]), lay,
                       torch.tensor([True, False]))
    torch.testing.assert_close(both[0], x[0])
    torch.testing.assert_close(both[1], none[0])


def test_views_are_a_set():
    torch.manual_seed(0)
    model = RayRegressor(TINY).eval()
    scene = sphere_scene(views=4, size=16)
    rgb, depth = scene.rgb * scene.mask, scene.depth
    out = model(rgb, depth)
    assert out.shape == (1, 4, 6, 2, 2)
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(model(rgb[:, perm], depth[:, perm]), out[:, perm], atol=1e-5,
                               rtol=1e-5)
    assert model(rgb[:, :3], depth[:, :3]).shape == (1, 3, 6, 2, 2)  # fewer views than slots


def test_it_learns_cameras_that_the_colours_give_away():
    """The sphere is coloured by its world position, so each view's colours fix its camera:
    trained on scenes of other seeds, the regressor beats the rays' mean on a new one."""
    torch.manual_seed(0)
    model = RayRegressor(dataclasses.replace(TINY, depth_drop=0.0))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    test = sphere_scene(views=4, size=16, seed=999)
    truth = model.layout.rays(test.K, test.viewmats)
    for step in range(150):
        loss = ray_loss(model, sphere_scene(views=4, size=16, seed=step % 40), g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        err = (model(test.rgb * test.mask, test.depth) - truth).square().mean()
    baseline = (truth - truth.mean(dim=(1, 3, 4), keepdim=True)).square().mean()
    assert err < 0.6 * baseline  # measured 0.45; untrained 3.8


def test_config_checks():
    with pytest.raises(ConfigError, match="model.patch"):
        RayRegressorConfig(size=64, patch=6)
    with pytest.raises(ConfigError, match="model.heads"):
        RayRegressorConfig(width=10, heads=3)
    with pytest.raises(ConfigError, match="model.depth_drop"):
        RayRegressorConfig(depth_drop=1.5)
