"""SplatFlow's multi-view flow: the token layout is an exact round trip, its channel groups
partition a token, guidance weights each group on its own, inpainting keeps known views, and a
tiny flow trains and samples through the engine's head."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from synthetic_scenes import sphere_scene

from flow3d.core.guidance import Inpainting
from flow3d.errors import ConfigError
from flow3d.splat.head import FlowSampleConfig, scene_velocity
from flow3d.splat.mvflow import MultiViewFlow, MultiViewFlowConfig, SceneLayout
from flow3d.splat.rays import plucker_rays

TINY = MultiViewFlowConfig(views=3, size=16, patch=8, width=16, depth=1, heads=2,
                           num_classes=4)


def test_layout_round_trip_is_exact():
    scene = sphere_scene(views=3, size=16)
    lay = SceneLayout(3, 16, 8, 0.5, 5.0)
    x = lay.to_state(scene.rgb, scene.depth, scene.K, scene.viewmats)
    assert x.shape == (1, 3 * 4, 8 * 8 * 4 + 6) and x.abs().max() <= 3.0
    rgb, depth, rays = lay.split(x)
    fg = scene.depth > 0
    torch.testing.assert_close(rgb, scene.rgb * fg, atol=1e-6, rtol=0)
    torch.testing.assert_close(depth, scene.depth, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rays[0], plucker_rays(scene.cameras(0), grid=2), atol=1e-6,
                               rtol=0)
    # background tokens are -1 in every pixel channel
    g = lay.groups()
    back = x[0, :, g["depth"]] == -1
    assert torch.equal(x[0, :, g["rgb"]].reshape(12, 64, 3)[back], -torch.ones(int(back.sum()),
                                                                                3))


def test_groups_partition_a_token_and_views_mask_their_tokens():
    lay = SceneLayout(3, 16, 8, 0.5, 5.0)
    g = lay.groups()
    allc = torch.cat([g["rgb"], g["depth"], g["rays"]]).sort().values
    assert torch.equal(allc, torch.arange(lay.dim))
    assert len(g["rgb"]) == 3 * 64 and len(g["depth"]) == 64 and len(g["rays"]) == 6
    m = lay.view_mask([0, 2])
    assert m.shape == (1, 12, 1) and m[0, :4].all() and not m[0, 4:8].any() and m[0, 8:].all()


def test_pixel_masks_round_trip_and_rays_weigh_in_the_loss():
    lay = SceneLayout(3, 16, 8, 0.5, 5.0)
    pixels = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5
    mask = lay.pixel_mask(pixels)
    assert torch.equal(lay.known_pixels(mask), pixels)
    # the mask is where the layout puts each pixel: a state built from a marked image agrees
    marked = lay.to_state(pixels[None, ..., None].float().expand(1, 3, 16, 16, 3),
                          torch.ones(1, 3, 16, 16, 1), torch.eye(3).expand(1, 3, 3, 3),
                          torch.eye(4).expand(1, 3, 4, 4))
    assert torch.equal(marked[..., lay.groups()["rgb"]] > 0, mask[..., lay.groups()["rgb"]])
    w = lay.loss_weights(16.0)
    assert w[lay.groups()["rays"]].eq(16.0).all() and w[lay.groups()["rgb"]].eq(1.0).all()
    with pytest.raises(ConfigError, match="ray_loss_weight"):
        MultiViewFlowConfig(ray_loss_weight=0.0)


def test_config_checks():
    with pytest.raises(ConfigError, match="model.size"):
        MultiViewFlowConfig(size=20, patch=8)
    with pytest.raises(ConfigError, match="model.cond"):
        MultiViewFlowConfig(cond="image")


def test_patchify_is_the_tokens_pixel_layout():
    lay = SceneLayout(3, 16, 8, 0.5, 5.0)
    img = torch.randn(2, 3, 16, 16, 5)
    tok = lay.patchify(img)
    assert tok.shape == (2, 12, 64 * 5)
    assert torch.equal(lay.unpatchify(tok, 5), img)
    # token 1 of view 2 is the patch at row 0, column 1; its pixels row-major, channels last
    torch.testing.assert_close(tok[1, 2 * 4 + 1].reshape(8, 8, 5), img[1, 2, :8, 8:], rtol=0,
                               atol=0)


def test_conv_pixel_decoder_starts_as_the_linear_head_and_learns_each_pixel():
    torch.manual_seed(0)
    conv = MultiViewFlow(dataclasses.replace(TINY, pixel_decoder="conv", pixel_channels=8))
    linear = MultiViewFlow(TINY)
    for p in linear.parameters():
        torch.nn.init.normal_(p, std=0.1)
    missing, unexpected = conv.load_state_dict(linear.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("pixel_decoder.") for k in missing)
    x, t = torch.randn(8, 12, 262), torch.rand(8)
    ctx = linear.context(labels=torch.arange(8) % 4).detach()
    # zero-initialised last convolution: the untrained decoder returns the linear prediction
    torch.testing.assert_close(conv.predict_scene(x, t, ctx), linear.predict_scene(x, t, ctx))
    # a target with detail in every pixel: the noisy pixels themselves (256 independent
    # numbers per token), which a 16-wide token feature cannot carry through a linear map
    # and the convolutions see directly
    n = 64 * 4
    target = x[..., :n]

    def fit(model, params):
        opt = torch.optim.Adam(params, lr=1e-2)
        for _ in range(150):
            opt.zero_grad()
            (model.predict_scene(x, t, ctx)[..., :n] - target).square().mean().backward()
            opt.step()
        return float((model.predict_scene(x, t, ctx)[..., :n] - target).square().mean())

    before = float((linear.predict_scene(x, t, ctx)[..., :n] - target).square().mean())
    assert fit(conv, conv.pixel_decoder.parameters()) < 0.05 * before
    # rays come from the transformer alone
    torch.testing.assert_close(conv.predict_scene(x, t, ctx)[..., n:],
                               linear.predict_scene(x, t, ctx)[..., n:])
    assert fit(linear, linear.parameters()) > 0.5 * before
    with pytest.raises(ConfigError, match="model.pixel_decoder"):
        MultiViewFlowConfig(pixel_decoder="deconv")
    with pytest.raises(ConfigError, match="model.pixel_channels"):
        MultiViewFlowConfig(pixel_decoder="conv", pixel_channels=0)


def test_group_guidance_weights_each_group():
    torch.manual_seed(0)
    model = MultiViewFlow(TINY)
    for p in model.parameters():  # wake the zero-initialised output layers
        torch.nn.init.normal_(p, std=0.05)
    lay = model.layout
    x = torch.randn(2, 12, lay.dim)
    t = torch.tensor(0.5)
    ctx = model.context(labels=torch.tensor([1, 2]))
    with torch.no_grad():
        v_c, v_u = model(x, t, ctx), model(x, t, model.null_context(2))
        v = scene_velocity(model, ctx, FlowSampleConfig(cfg_rgb=3.0, cfg_depth=0.0,
                                                        cfg_rays=1.0))(x, t)
    g = lay.groups()
    torch.testing.assert_close(v[..., g["rgb"]], (v_c + 3.0 * (v_c - v_u))[..., g["rgb"]])
    torch.testing.assert_close(v[..., g["depth"]], v_c[..., g["depth"]])
    torch.testing.assert_close(v[..., g["rays"]], (v_c + (v_c - v_u))[..., g["rays"]])
    assert (v_c - v_u).abs().max() > 1e-4


def test_inpainting_keeps_known_views_and_rays_exactly():
    from flow3d.core.solvers import solve

    torch.manual_seed(0)
    model = MultiViewFlow(TINY)
    lay = model.layout
    scene = sphere_scene(views=3, size=16)
    known = lay.to_state(scene.rgb, scene.depth, scene.K, scene.viewmats)
    mask = lay.view_mask([0]).expand(1, -1, lay.dim).clone()
    mask[..., lay.groups()["rays"]] = True  # every camera known
    hook = Inpainting(known, mask, generator=torch.Generator().manual_seed(0))
    ctx = model.context(labels=torch.tensor([0]))
    with torch.no_grad():
        x = solve(scene_velocity(model, ctx, FlowSampleConfig()), torch.randn_like(known),
                  steps=4, hooks=[hook]).x
    assert torch.equal(x[mask], known[mask])
    assert not torch.equal(x[~mask], known[~mask])


def test_flow_head_trains_and_samples(tmp_path):
    from flow3d.engine.config import load_recipe
    from flow3d.engine.heads import get_head

    recipe = load_recipe("recipes/splat/mvflow_class.yaml", overrides=[
        "model.views=3", "model.size=16", "model.width=16", "model.depth=1", "model.heads=2",
        "data.views=3", "data.size=16"])
    head = get_head("splat_flow")(recipe)
    model = head.build_model()
    scene = sphere_scene(views=3, size=16)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)

    def fixed_loss() -> float:  # the same noise, times and view order every time
        with torch.no_grad():
            return float(head.loss(model, scene, torch.Generator().manual_seed(7))["loss"])

    first = fixed_loss()
    for _ in range(40):
        loss = head.loss(model, scene, g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_loss() < 0.75 * first
    samples = head.sample(model, 2, steps=2)
    assert len(samples) == 2 and samples[0][0].shape == (3, 16, 16, 3)
    paths = head.save_samples(samples, tmp_path)
    assert all(p.is_file() for p in paths)


def test_snap_rays_keeps_exact_rays_and_mends_noisy_ones():
    scene = sphere_scene(views=3, size=16)
    lay = SceneLayout(3, 16, 8, 0.5, 5.0)
    x = lay.to_state(scene.rgb, scene.depth, scene.K, scene.viewmats)
    torch.testing.assert_close(lay.snap_rays(x), x, atol=1e-5, rtol=0)
    rays = lay.groups()["rays"]
    noisy = x.clone()
    noisy[..., rays] += 0.02 * torch.randn(noisy[..., rays].shape,
                                           generator=torch.Generator().manual_seed(0))
    fixed = lay.snap_rays(noisy)
    assert (fixed - x)[..., rays].abs().max() < (noisy - x)[..., rays].abs().max()
    assert torch.equal(fixed[..., : rays[0]], noisy[..., : rays[0]])  # pixels untouched
    garbage = x.clone()
    garbage[..., rays] = 0.0  # zero directions: no camera fits; left as it was
    assert torch.equal(lay.snap_rays(garbage), garbage)


def test_velocity_comes_from_the_predicted_scene():
    torch.manual_seed(0)
    model = MultiViewFlow(TINY)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(2, 12, model.layout.dim)
    t = torch.tensor([0.3, 0.99])
    ctx = model.context(labels=torch.tensor([0, 1]))
    model.eval()  # sampling: the exact conversion
    with torch.no_grad():
        v, x1 = model(x, t, ctx), model.predict_scene(x, t, ctx)
    torch.testing.assert_close(v[0], (x1[0] - x[0]) / 0.7)
    torch.testing.assert_close(v[1], (x1[1] - x[1]) / 0.01, rtol=1e-4, atol=1e-4)
    model.train()  # in training 1 - t is floored at 0.05: x0 = (x - t x1) / 0.05
    with torch.no_grad():
        v = model(x, t, ctx)
    torch.testing.assert_close(v[1], x1[1] - (x[1] - 0.99 * x1[1]) / 0.05)


# ---- a conditional flow: the rays generated from given views (Ray Diffusion's split) -------
def _ray_flow(**kw) -> MultiViewFlow:
    import dataclasses

    torch.manual_seed(0)
    model = MultiViewFlow(dataclasses.replace(TINY, given=("rgb", "depth"), **kw))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return model


def test_given_channels_keep_their_values_and_carry_no_loss():
    from flow3d.engine.config import load_recipe
    from flow3d.engine.heads import get_head

    model = _ray_flow()
    rays = model.layout.group_mask(("rays",))
    assert torch.equal(model.given, ~rays)
    x, t = torch.randn(2, 12, model.layout.dim), torch.tensor([0.2, 0.7])
    ctx = model.context(labels=torch.tensor([0, 1]))
    v = model(x, t, ctx)
    assert torch.equal(v[..., ~rays], torch.zeros_like(v[..., ~rays]))
    assert v[..., rays].abs().min() > 0
    torch.testing.assert_close(model.predict_scene(x, t, ctx)[..., ~rays], x[..., ~rays])

    recipe = load_recipe("recipes/splat/mvflow_poses.yaml", overrides=[
        "model.views=3", "model.size=16", "model.width=16", "model.depth=1", "model.heads=2",
        "data.views=3", "data.size=16", "model.depth_drop=0.0"])
    head = get_head("splat_flow")(recipe)
    model = head.build_model()
    for p in model.parameters():  # not zero-initialised: every input reaches the output
        torch.nn.init.normal_(p, std=0.05)
    scene = sphere_scene(views=3, size=16)
    loss = head.loss(model, scene, torch.Generator().manual_seed(3))
    torch.testing.assert_close(loss["loss"], loss["ray_mse"])  # the loss is the rays' alone
    loss["loss"].backward()
    # the network reads the clean views: the input layer's weights on them learn
    assert model.x_in.weight.grad[:, ~rays].abs().sum() > 0


def test_depth_drop_zeroes_whole_scenes_depth_only():
    from flow3d.splat.head import given_inputs

    model = _ray_flow(depth_drop=0.5)
    x = torch.randn(64, 12, model.layout.dim)
    got = given_inputs(model, x, torch.Generator().manual_seed(0))
    depth = model.layout.group_mask(("depth",))
    dropped = (got[..., depth] == 0).all(-1).all(-1)
    assert 16 < int(dropped.sum()) < 48
    assert torch.equal(got[~dropped], x[~dropped])
    assert torch.equal(got[dropped][..., ~depth], x[dropped][..., ~depth])


def test_conditional_sampling_keeps_the_given_views_exactly():
    from flow3d.engine.config import load_recipe
    from flow3d.engine.heads import get_head

    recipe = load_recipe("recipes/splat/mvflow_poses.yaml", overrides=[
        "model.views=3", "model.size=16", "model.width=16", "model.depth=1", "model.heads=2",
        "data.views=3", "data.size=16"])
    head = get_head("splat_flow")(recipe)
    model = head.build_model().eval()
    scene = sphere_scene(views=3, size=16)
    given = model.layout.to_state(scene.rgb, scene.depth, scene.K, scene.viewmats)
    x = head.sample_states(model, None, 1, given=given, steps=3, stop_ray=0.0)
    rays = model.layout.group_mask(("rays",))
    assert torch.equal(x[..., ~rays], given[..., ~rays])
    assert torch.isfinite(x).all() and not torch.equal(x[..., rays], given[..., rays])
    with pytest.raises(ConfigError, match="given"):
        head.sample_states(model, None, 1, steps=2)


def test_a_flow_given_the_cameras_keeps_them_from_noise_and_from_an_sdedit_start():
    from flow3d.engine.config import load_recipe
    from flow3d.engine.heads import get_head

    recipe = load_recipe("recipes/splat/mvflow_cams.yaml", overrides=[
        "model.views=3", "model.size=16", "model.width=16", "model.depth=1", "model.heads=2",
        "model.pixel_channels=4", "data.views=3", "data.size=16", "trainer.init_from=null"])
    head = get_head("splat_flow")(recipe)
    model = head.build_model().eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    rays = model.layout.group_mask(("rays",))
    assert torch.equal(model.given, rays)
    scene = sphere_scene(views=3, size=16)
    given = model.layout.to_state(scene.rgb, scene.depth, scene.K, scene.viewmats)
    labels = torch.tensor([2])
    x = head.sample_states(model, labels, 1, given=given, steps=3)
    assert torch.equal(x[..., rays], given[..., rays])
    assert torch.isfinite(x).all() and not torch.equal(x[..., ~rays], given[..., ~rays])
    # an SDEdit start whose rays differ (a dataset's spare slots): the given rays win
    start = given + torch.randn(given.shape, generator=torch.Generator().manual_seed(1))
    x = head.sample_states(model, labels, 1, given=given, start=start, strength=0.4, steps=5)
    assert torch.equal(x[..., rays], given[..., rays])
    # training: the loss is the images' alone (rays given exactly carry none)
    model.train()
    loss = head.loss(model, sphere_scene(views=3, size=16), torch.Generator().manual_seed(3))
    assert set(loss) == {"loss"} and loss["loss"] > 0
    loss["loss"].backward()
    assert model.x_in.weight.grad[:, rays].abs().sum() > 0  # the network reads the cameras


def test_given_config_checks():
    with pytest.raises(ConfigError, match="model.given"):
        MultiViewFlowConfig(given=("colour",))
    with pytest.raises(ConfigError, match="model.given"):
        MultiViewFlowConfig(given=("rgb", "depth", "rays"))
    with pytest.raises(ConfigError, match="model.depth_drop"):
        MultiViewFlowConfig(given=("rgb",), depth_drop=0.2)


def test_a_flow_over_fewer_views_trains_on_a_random_subset_of_each_scene():
    from flow3d.engine.config import load_recipe
    from flow3d.engine.heads import get_head

    small = ["model.size=16", "model.width=16", "model.depth=1", "model.heads=2",
             "data.views=3", "data.size=16"]
    recipe = load_recipe("recipes/splat/mvflow_single.yaml", overrides=small)
    head = get_head("splat_flow")(recipe)
    model = head.build_model()
    assert model.layout.views == 1
    scene = sphere_scene(views=3, size=16)
    drawn = []
    to_state = model.layout.to_state

    def spy(rgb, *rest):  # which of the scene's views each step trains on
        drawn.append([bool(torch.equal(rgb[0, 0], scene.rgb[0, v] * (scene.depth[0, v] > 0)))
                      for v in range(3)].index(True))
        return to_state(rgb, *rest)

    object.__setattr__(model.layout, "to_state", spy)
    for seed in range(12):  # which view a step draws follows its generator
        assert torch.isfinite(head.loss(model, scene, torch.Generator().manual_seed(seed))["loss"])
    assert len(drawn) == 12 and set(drawn) == {0, 1, 2}
    too_many = load_recipe("recipes/splat/mvflow_single.yaml",
                           overrides=small + ["model.views=4"])
    with pytest.raises(ConfigError, match="model.views"):
        get_head("splat_flow")(too_many).build_model()
