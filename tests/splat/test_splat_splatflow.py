"""`flow3d splat generate | complete | edit | poses` on the bundled SplatFlow models: each
writes a scene and its views, keeps exactly what it was given, and refuses bad input in one
line before any model is loaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from contract import assert_user_error
from PIL import Image
from synthetic_scenes import square_masks
from synthetic_scenes import write_sphere_dataset as write_scene

from flow3d import cli
from flow3d.splat.dataset import load_dataset
from flow3d.splat.formats import load_scene
from flow3d.splat.lowpass import sampling_footprint

ROOT = Path(__file__).resolve().parents[2]
FLOW = Path(os.environ.get("FLOW3D_TEST_FLOW", ROOT / "checkpoints" / "splat" / "mvflow_class"))
DECODER = Path(os.environ.get("FLOW3D_TEST_DECODER", ROOT / "checkpoints" / "splat" / "gsdecoder"))
MODELS = ["--flow", str(FLOW), "--decoder", str(DECODER)]
RAYS = Path(os.environ.get("FLOW3D_TEST_RAYS", ROOT / "checkpoints" / "splat" / "raynet"))


def _tiny_flow(folder: Path, recipe_name: str, *overrides: str) -> Path:
    """An untrained tiny flow of ``recipes/splat/<recipe_name>.yaml`` as a checkpoint."""
    from flow3d.engine.checkpoint import write_checkpoint
    from flow3d.engine.config import load_recipe
    from flow3d.engine.heads import get_head

    recipe = load_recipe(ROOT / "recipes" / "splat" / f"{recipe_name}.yaml", overrides=[
        "model.width=16", "model.depth=1", "model.heads=2", "trainer.init_from=null",
        *overrides])
    torch.manual_seed(0)
    state = get_head("splat_flow")(recipe).build_model().state_dict()
    return write_checkpoint(folder / "last", model_state=state, ema_state=state,
                            recipe=recipe, step=0)


@pytest.fixture(scope="module")
def ray_flow(tmp_path_factory):
    """An untrained (tiny) flow of the rays given the views: recipes/splat/mvflow_poses.yaml."""
    return _tiny_flow(tmp_path_factory.mktemp("rayflow"), "mvflow_poses")


@pytest.fixture(scope="module")
def camera_flow(tmp_path_factory):
    """An untrained (tiny) flow of the views given the cameras: recipes/splat/mvflow_cams.yaml."""
    return _tiny_flow(tmp_path_factory.mktemp("camflow"), "mvflow_cams",
                      "model.pixel_channels=4")


def run(argv) -> None:
    assert cli.main([str(a) for a in argv] + MODELS + ["--steps", "2"]) == 0


def assert_kept_outside(src, got, views, box: tuple[slice, slice]) -> None:
    """Every object pixel of ``src`` outside ``box`` in ``views`` is in ``got`` unchanged."""
    outside = torch.ones(len(src), 64, 64, 1, dtype=torch.bool)
    outside[(list(views), *box)] = False
    fg = (outside & (src.masks > 0)).expand_as(src.images)
    assert torch.allclose(got.images[fg], src.images[fg], atol=1 / 255 + 1e-6)


def test_generate_writes_a_scene_and_its_views(tmp_path, capsys):
    out = tmp_path / "chair.ply"
    run(["splat", "generate", "--class", "chair", "--out", out])
    report = json.loads(capsys.readouterr().out)
    views = load_dataset(tmp_path / "chair_views")
    assert len(views) == 8 and views.depths is not None
    scene = load_scene(out)
    assert len(scene) == report["gaussians"] == \
        int((views.depths > 0).sum()) - report["floaters_dropped"]
    assert json.loads((tmp_path / "chair_views" / "report.json").read_text())["class"] == "chair"
    assert scene.means.abs().max() <= 0.75  # nothing beyond 1.5x the object's cube
    # written with the decoder's low-pass in the Gaussians: no axis narrower than sqrt(eps2d)
    # pixels of the finest view (0.32 px; the decoder's own are about a tenth of a pixel)
    assert report["eps2d_baked"] == 0.1
    pixel = sampling_footprint(scene.means, views.cameras)
    assert bool((scene.scales.min(dim=1).values >= 0.999 * 0.1 ** 0.5 * pixel).all())
    run(["splat", "generate", "--class", "chair", "--out", tmp_path / "all.ply",
         "--keep-floaters"])
    kept = json.loads(capsys.readouterr().out)
    assert kept["floaters_dropped"] == 0
    assert len(load_scene(tmp_path / "all.ply")) == int((views.depths > 0).sum())


def test_generate_draws_cameras_around_the_object_or_lets_the_flow_make_them(tmp_path, capsys):
    from flow3d.splat.mvflow import SceneLayout
    from flow3d.splat.splatflow import sample_cameras

    run(["splat", "generate", "--class", "guitar", "--out", tmp_path / "s.ply", "--seed", "3"])
    assert json.loads(capsys.readouterr().out)["cameras"] == "sampled"
    cams = load_dataset(tmp_path / "s_views").cameras
    drawn = sample_cameras(SceneLayout(8, 64, 8, 0.5, 5.0), 3)
    assert torch.allclose(cams.viewmats, drawn.viewmats.float(), atol=1e-5)
    assert torch.allclose(cams.K, drawn.K.float(), atol=1e-4)
    axes = cams.viewmats[:, 2, :3].double()
    spread = torch.rad2deg(torch.acos((axes @ axes.T).clamp(-1, 1))).sum() / 56
    assert spread > 20  # views from around the object, as in the training scenes
    run(["splat", "generate", "--class", "guitar", "--out", tmp_path / "g.ply", "--seed", "3",
         "--cameras", "generated"])
    assert json.loads(capsys.readouterr().out)["cameras"] == "generated"
    assert not torch.allclose(load_dataset(tmp_path / "g_views").cameras.viewmats,
                              cams.viewmats, atol=1e-3)


def test_drop_floaters_removes_what_other_views_contradict_and_keeps_the_object():
    """Views of one sphere, decoded by a (tiny, untrained) GSDecoder: nothing to drop. A blob
    painted into view 0 beside the sphere (other views show background there) is dropped;
    when the views disagree as a whole nothing is."""
    from synthetic_scenes import sphere_scene

    from flow3d.splat.decoder import GSDecoder, GSDecoderConfig, decode_scene
    from flow3d.splat.hull import contradictions
    from flow3d.splat.splatflow import (
        FLOATER_MARGIN,
        FLOATER_MAX_SHARE,
        FLOATER_VIEWS,
        drop_floaters,
    )

    torch.manual_seed(0)
    model = GSDecoder(GSDecoderConfig(width=16, depth=1, heads=2, patch=4, pixel_width=8))
    scene = sphere_scene(views=6, size=32, seed=4, frame=1.0)  # room around the sphere
    rgb, depth, cams = scene.rgb[0], scene.depth[0], scene.cameras(0)
    with torch.no_grad():
        whole = decode_scene(model, rgb, depth, cams)
        kept, n = drop_floaters(model, whole, rgb, depth, cams)
        assert n <= 0.01 * len(whole) and len(kept) == len(whole) - n  # the decoder moves a few
        blob = depth.clone()
        blob[0, 14:18, 14:18] -= 0.3  # pulled 0.3 towards camera 0: floating before the sphere
        moved = decode_scene(model, rgb, blob, cams)
        kept, n = drop_floaters(model, moved, rgb, blob, cams)
    patch = torch.zeros(depth.shape[:3], dtype=torch.bool)
    patch[0, 14:18, 14:18] = True
    floating = moved.means[patch[depth[..., 0] > 0]]  # the Gaussians of those 16 pixels
    assert 16 <= n <= 16 + 0.01 * len(whole)
    assert not any(torch.isclose(kept.means, p).all(-1).any() for p in floating)
    # views that disagree as a whole (each puts the sphere at its own distance): nothing dropped
    mixed = depth * torch.tensor([0.7, 1.3, 0.8, 0.6, 1.0, 1.5]).view(6, 1, 1, 1)
    with torch.no_grad():
        g = decode_scene(model, rgb, mixed, cams)
        same, none = drop_floaters(model, g, rgb, mixed, cams)
    present = mixed[..., 0] > 0
    source = torch.arange(6).view(6, 1, 1).expand_as(present)[present]
    bg, fr = contradictions(g.means, source, mixed[..., 0], cams, margin=FLOATER_MARGIN)
    assert ((bg >= FLOATER_VIEWS) | (fr >= FLOATER_VIEWS)).float().mean() > FLOATER_MAX_SHARE
    assert none == 0 and same is g
    # a cube the object is known to lie in: what lies outside goes, whatever the views say
    with torch.no_grad():
        boxed, out = drop_floaters(model, g, rgb, mixed, cams, bound=0.3)
    outside = (g.means.abs() > 0.3).any(-1)
    assert out == int(outside.sum()) > 0 and len(boxed) == len(g) - out
    assert (boxed.means.abs() <= 0.3).all()
    with torch.no_grad():
        _, n = drop_floaters(model, whole, rgb, depth, cams, bound=10.0)
    assert n == drop_floaters(model, whole, rgb, depth, cams)[1]  # a far cube changes nothing
    extra = depth.clone()
    extra[0, 0, 0] = 1.0  # a corner pixel: background in the sphere's views
    with pytest.raises(ValueError, match="Gaussians for"):
        drop_floaters(model, whole, rgb, extra, cams)


def test_generate_with_anchors_keeps_those_views_of_the_joint_sample(tmp_path, capsys):
    run(["splat", "generate", "--class", "chair", "--out", tmp_path / "a.ply", "--anchor", "0"])
    assert json.loads(capsys.readouterr().out)["anchors"] == []
    run(["splat", "generate", "--class", "chair", "--out", tmp_path / "b.ply", "--anchor", "3"])
    anchors = json.loads(capsys.readouterr().out)["anchors"]
    assert len(anchors) == 3 and anchors == sorted(set(anchors))
    joint, anchored = load_dataset(tmp_path / "a_views"), load_dataset(tmp_path / "b_views")
    # the anchors are the joint sample's views, at its fitted cameras; every camera is kept
    assert torch.allclose(anchored.images[anchors], joint.images[anchors], atol=1 / 255 + 1e-6)
    assert torch.allclose(anchored.cameras.viewmats, joint.cameras.viewmats, atol=1e-5)
    others = [i for i in range(8) if i not in anchors]
    assert not torch.allclose(anchored.images[others], joint.images[others], atol=1 / 255)


def test_anchor_views_prefer_views_the_scene_re_renders_over_empty_or_broken_ones():
    from synthetic_scenes import sphere_scene

    from flow3d.engine.checkpoint import load_frozen
    from flow3d.splat.decoder import decode_scene
    from flow3d.splat.splatflow import Result, anchor_views

    decoder = load_frozen(DECODER, "splat_decoder", "GSDecoder")
    b = sphere_scene(views=6, size=64)
    rgb, depth, cams = b.rgb[0].clone(), b.depth[0].clone(), b.cameras(0)
    rgb[2] = (1.0 - rgb[2]) * (depth[2] > 0)  # view 2 disagrees with the others
    rgb[4], depth[4] = 0.0, 0.0  # view 4 is empty: re-rendered well, but it anchors nothing
    with torch.no_grad():
        scene = decode_scene(decoder, rgb, depth, cams)
    res = Result(rgb, depth, None, cams, cams, scene, 0.0, 0.0)
    picked = anchor_views(res, 4, decoder.cfg.render_settings())
    assert len(picked) == 4 and 2 not in picked and 4 not in picked


def test_complete_keeps_the_known_views_and_cameras(tmp_path, capsys):
    data = write_scene(tmp_path / "data")
    run(["splat", "complete", data, "--known", "0,1,2,3", "--out", tmp_path / "done"])
    src, got = load_dataset(data), load_dataset(tmp_path / "done")
    assert torch.allclose(got.cameras.viewmats, src.cameras.viewmats, atol=1e-5)
    keep = src.masks[:4] > 0
    assert torch.allclose(got.images[:4][keep.expand_as(got.images[:4])],
                          src.images[:4][keep.expand_as(src.images[:4])], atol=1 / 255 + 1e-6)
    assert (tmp_path / "done" / "scene.ply").is_file()


@pytest.mark.parametrize("views, anchor", [(8, 0), (8, 2), (5, 1)])
def test_edit_keeps_every_pixel_outside_the_mask(tmp_path, capsys, views, anchor):
    data = write_scene(tmp_path / "data", views=views)
    box = (slice(20, 44), slice(20, 44))
    masks = square_masks(tmp_path / "masks", (0, 2, 3), box)
    run(["splat", "edit", data, "--mask", masks, "--class", "airplane", "--out",
         tmp_path / "edited", "--anchor", anchor])
    report = json.loads(capsys.readouterr().out)
    assert len(report["anchors"]) == anchor and all(a < views for a in report["anchors"])
    src, got = load_dataset(data), load_dataset(tmp_path / "edited")
    assert len(got) == views
    assert_kept_outside(src, got, (0, 2, 3), box)
    assert torch.allclose(got.cameras.viewmats, src.cameras.viewmats, atol=1e-5)


def test_edit_by_default_runs_the_flow_given_the_cameras_unanchored(tmp_path, capsys):
    """Without --flow, edit takes the bundled flow given the cameras and keeps every edited
    view as it made them (the defaults docs/benchmarks.md measured); generate keeps the joint
    flow."""
    data = write_scene(tmp_path / "data", views=6)
    box = (slice(24, 40), slice(20, 44))
    masks = square_masks(tmp_path / "masks", (2,), box)
    assert cli.main(["splat", "edit", str(data), "--mask", str(masks), "--class", "dog",
                     "--out", str(tmp_path / "edited"), "--decoder", str(DECODER),
                     "--steps", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert Path(report["flow"]) == ROOT / "checkpoints" / "splat" / "mvflow_cams"
    assert report["anchors"] == []
    # and guides the flow towards the class with the bundled noisy-state classifier
    assert report["class_guidance"] == 20
    assert Path(report["guide"]) == ROOT / "checkpoints" / "splat" / "guide"
    assert_kept_outside(load_dataset(data), load_dataset(tmp_path / "edited"), (2,), box)
    from flow3d.splat.splatflow import SplatFlowSettings, default_flow

    assert SplatFlowSettings(task="generate", out=tmp_path / "g.ply",
                             label="dog").model_path == default_flow("generate")
    assert default_flow("generate").name == "mvflow_class"


def test_poses_reports_errors_for_every_view(tmp_path, capsys):
    data = write_scene(tmp_path / "data", views=5)
    run(["splat", "poses", data, "--out", tmp_path / "posed", "--restarts", "2"])
    report = json.loads((tmp_path / "posed" / "report.json").read_text())
    assert len(report["rotation_error_deg"]) == 5 and len(report["center_error"]) == 5
    assert len(load_dataset(tmp_path / "posed")) == 5
    assert report["refined"] and report["restarts"] == 2


def test_poses_refine_with_the_default_restarts(tmp_path, capsys, monkeypatch):
    """The command hands its ``--restarts`` (default :data:`POSE_RESTARTS`) to the
    refinement (recorded here instead of run: the refinement's restarts are tested in
    test_splat_align) and reports it."""
    import flow3d.splat.align as align
    from flow3d.splat.splatflow import POSE_RESTARTS

    seen = []

    def record(cameras, depth, s=None, rgb=None, progress=False):
        seen.append(None if s is None else s.restarts)
        return cameras

    monkeypatch.setattr(align, "refine_cameras", record)
    data = write_scene(tmp_path / "data", views=5)
    report = _poses(data, tmp_path / "posed", "--rays", RAYS)
    assert POSE_RESTARTS > 1 and seen == [POSE_RESTARTS] and report["restarts"] == POSE_RESTARTS
    _poses(data, tmp_path / "again", "--rays", RAYS, "--restarts", 1)
    assert seen == [POSE_RESTARTS, 1]


def _poses(data, out, *extra) -> dict:
    argv = ("splat", "poses", data, "--out", out, "--decoder", DECODER, *extra)
    assert cli.main([str(a) for a in argv]) == 0
    return json.loads((Path(out) / "report.json").read_text())


@pytest.mark.parametrize("model", ["regressor", "ray flow"])
def test_poses_keep_the_views_and_write_their_cameras(tmp_path, capsys, ray_flow, model):
    data = write_scene(tmp_path / "data", views=5)
    extra = ["--rays", RAYS] if model == "regressor" else ["--flow", ray_flow, "--steps", 3]
    report = _poses(data, tmp_path / "posed", *extra, "--restarts", 1)
    src, got = load_dataset(data), load_dataset(tmp_path / "posed")
    assert len(got) == 5 and torch.allclose(got.depths, src.depths, rtol=1e-3, atol=1e-3)
    fg = (src.masks > 0).expand_as(src.images)
    assert torch.allclose(got.images[fg], src.images[fg], atol=1 / 255 + 1e-6)
    assert len(report["rotation_error_deg"]) == 5
    assert len(load_scene(tmp_path / "posed" / "scene.ply")) == report["gaussians"] > 0


@pytest.mark.parametrize("model", ["regressor", "ray flow"])
def test_poses_of_views_without_depth_write_cameras_and_no_scene(tmp_path, capsys, ray_flow,
                                                                 model):
    data = write_scene(tmp_path / "data", depth=False)
    extra = ["--rays", RAYS] if model == "regressor" else ["--flow", ray_flow, "--steps", 3]
    report = _poses(data, tmp_path / "posed", *extra)
    assert report["scene"] is None and report["gaussians"] == 0
    assert not (tmp_path / "posed" / "scene.ply").exists()
    src, got = load_dataset(data), load_dataset(tmp_path / "posed")
    assert len(got) == 8 and torch.equal(got.masks > 0, src.masks > 0)  # alpha: the object


def test_a_ray_flow_estimates_poses_only(tmp_path, capsys, ray_flow):
    data = write_scene(tmp_path / "data")
    argv = ["splat", "complete", data, "--known", "0", "--out", tmp_path / "c", "--flow",
            ray_flow, "--decoder", DECODER]
    assert_user_error([str(a) for a in argv], capsys, ["--flow", "poses", "not complete"],
                      watch=[tmp_path])


@pytest.fixture
def inputs(tmp_path):
    write_scene(tmp_path / "good")
    write_scene(tmp_path / "small", size=32)
    write_scene(tmp_path / "nodepth", depth=False)
    write_scene(tmp_path / "many", views=9, size=64)
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(masks / "000.png")
    (tmp_path / "badmask").mkdir()
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(tmp_path / "badmask" / "000.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "taken.ply").write_bytes(b"keep me")
    for name in ("full", "full_views"):
        (out / name).mkdir()
        (out / name / "x.txt").write_text("keep me")
    return tmp_path


@pytest.mark.parametrize("argv, mentions", [
    (["generate", "--class", "unicorn", "--out", "{out}/new.ply"], ["--class", "unicorn"]),
    (["generate", "--class", "chair", "--out", "{out}/new.glb"], ["--out", "extension"]),
    (["generate", "--class", "chair", "--out", "{out}/taken.ply"], ["taken.ply", "--overwrite"]),
    (["generate", "--class", "chair", "--out", "{out}/full.ply"], ["full_views"]),
    (["generate", "--class", "chair", "--out", "{out}/new.ply", "--steps", "0"], ["--steps"]),
    (["generate", "--class", "chair", "--out", "{out}/new.ply", "--cfg", "nan"], ["--cfg"]),
    (["generate", "--class", "chair", "--out", "{out}/new.ply", "--flow", "{tmp}/nowhere"],
     ["--flow", "nowhere"]),
    (["generate", "--class", "chair", "--out", "{out}/new.ply", "--anchor", "8"],
     ["--anchor 8", "8 views"]),
    (["generate", "--class", "chair", "--out", "{out}/new.ply", "--anchor", "-1"], ["--anchor"]),
    (["generate", "--class", "chair", "--out", "{out}/new.ply", "--cameras", "magic"],
     ["--cameras", "magic"]),
    (["complete", "{tmp}/missing", "--known", "0", "--out", "{out}/c"],
     ["missing", "no such dataset"]),
    (["complete", "{tmp}/good", "--known", "0,9", "--out", "{out}/c"], ["--known 9"]),
    (["complete", "{tmp}/good", "--known", "1,1", "--out", "{out}/c"], ["--known", "twice"]),
    (["complete", "{tmp}/good", "--known", "a,b", "--out", "{out}/c"], ["--known"]),
    (["complete", "{tmp}/small", "--known", "0", "--out", "{out}/c"], ["32x32", "64x64"]),
    (["complete", "{tmp}/nodepth", "--known", "0", "--out", "{out}/c"], ["no depth"]),
    (["complete", "{tmp}/good", "--known", "0", "--out", "{out}/full"], ["full", "not empty"]),
    (["complete", "{tmp}/good", "--known", "0", "--out", "{out}/c", "--strength", "0"],
     ["--strength"]),
    (["complete", "{tmp}/good", "--known", "0", "--out", "{out}/c", "--strength", "1.5"],
     ["--strength"]),
    (["complete", "{tmp}/good", "--known", "0", "--out", "{out}/c", "--strength", "0.5",
      "--no-warp"], ["--strength", "--no-warp"]),
    (["complete", "{tmp}/good", "--known", "0", "--out", "{out}/c", "--polish", "-1"],
     ["--polish"]),
    (["edit", "{tmp}/good", "--mask", "{tmp}/nomasks", "--class", "chair", "--out",
      "{out}/e"], ["--mask", "nomasks"]),
    (["edit", "{tmp}/good", "--mask", "{tmp}/masks", "--class", "chair", "--out", "{out}/e"],
     ["--mask", "no view has a masked pixel"]),
    (["edit", "{tmp}/good", "--mask", "{tmp}/badmask", "--class", "chair", "--out",
      "{out}/e"], ["000.png", "32x32"]),
    (["poses", "{tmp}/many", "--out", "{out}/p"], ["9 views", "holds 8"]),
    (["poses", "{tmp}/good", "--out", "{out}/p", "--restarts", "0"], ["--restarts"]),
    (["poses", "{tmp}/good", "--out", "{out}/p", "--restarts", "2", "--no-refine"],
     ["--restarts", "--no-refine"]),
    (["poses", "{tmp}/good", "--out", "{out}/p", "--flow",
      str(ROOT / "checkpoints" / "toy" / "eight_gaussians")], ["--flow", "not splat_flow"]),
    (["poses", "{tmp}/good", "--out", "{out}/p", "--rays", str(FLOW)],
     ["--rays", "not splat_rays"]),
])
def test_splatflow_bad_input(inputs, capsys, argv, mentions):
    fill = {"tmp": str(inputs), "out": str(inputs / "out")}
    argv = ["splat"] + [a.format(**fill) for a in argv]
    argv += MODELS if not {"--flow", "--rays"} & set(argv) else ["--decoder", str(DECODER)]
    assert_user_error(argv, capsys, mentions, watch=[inputs / "out"])


def _complete_known(scene, known):
    from flow3d.splat.mvflow import SceneLayout
    from flow3d.splat.splatflow import known_state

    lay = SceneLayout(8, 64, 8, 0.5, 5.0)
    return lay, known_state(lay, "complete", rgb=scene.rgb, depth=scene.depth, K=scene.K,
                            viewmats=scene.viewmats, num_views=8, known=known,
                            cameras=scene.cameras(0))


def test_warp_grows_the_known_entries_without_reading_the_novel_views():
    from dataclasses import replace

    from synthetic_scenes import sphere_scene

    from flow3d.engine.checkpoint import load_frozen
    from flow3d.splat.splatflow import warp_known

    decoder = load_frozen(DECODER, "splat_decoder", "decoder")
    scene = sphere_scene(views=8, size=64, seed=2)
    known = [0, 2, 4, 6]
    lay, k = _complete_known(scene, known)
    w = warp_known(decoder, lay, k, tuple(known))
    assert (w.mask >= k.mask).all() and w.mask.sum() > k.mask.sum()
    assert torch.equal(w.values[k.mask], k.values[k.mask])  # the given entries are kept
    assert torch.equal(w.start[w.mask], w.values[w.mask])
    # the novel views' own pixels are never read: blank them and nothing changes
    blank = replace(scene, rgb=scene.rgb.clone(), depth=scene.depth.clone())
    blank.rgb[0, [1, 3, 5, 7]] = 0.5
    blank.depth[0, [1, 3, 5, 7]] = 1.0
    _, k2 = _complete_known(blank, known)
    w2 = warp_known(decoder, lay, k2, tuple(known))
    assert torch.equal(w2.mask, w.mask) and torch.equal(w2.values, w.values)
    assert torch.equal(w2.start, w.start)
    assert (k.values[~k.mask] == 0).all()  # the known entries carry nothing else
    # the Gaussians fitted to the known views first: a different warp, still blind to the
    # novel views
    p = warp_known(decoder, lay, k, tuple(known), polish_steps=10)
    p2 = warp_known(decoder, lay, k2, tuple(known), polish_steps=10)
    assert torch.equal(p.values, p2.values) and not torch.equal(p.start, w.start)
    # every view known: nothing to warp
    _, full = _complete_known(scene, list(range(8)))
    assert warp_known(decoder, lay, full, tuple(range(8))) is full


def test_complete_from_noise_and_without_warp(tmp_path, capsys):
    data = write_scene(tmp_path / "data")
    for name, extra, warp, strength in (("noise", ["--strength", "1"], True, 1.0),
                                        ("whole", ["--no-warp"], False, 1.0),
                                        ("default", [], True, 0.3)):
        run(["splat", "complete", data, "--known", "0,1,2,3", "--out", tmp_path / name, *extra])
        report = json.loads(capsys.readouterr().out)
        assert (report["warp"], report["strength"]) == (warp, strength)
        assert report["polish"] == (100 if warp else 0)
        got, src = load_dataset(tmp_path / name), load_dataset(data)
        keep = (src.masks[:4] > 0).expand_as(src.images[:4])
        assert torch.allclose(got.images[:4][keep], src.images[:4][keep], atol=1 / 255 + 1e-6)


def test_warp_with_fewer_views_than_slots_starts_spare_slots_as_known_views():
    from synthetic_scenes import sphere_scene

    from flow3d.engine.checkpoint import load_frozen
    from flow3d.splat.mvflow import SceneLayout
    from flow3d.splat.splatflow import known_state, warp_known

    decoder = load_frozen(DECODER, "splat_decoder", "decoder")
    scene = sphere_scene(views=5, size=64, seed=2)
    lay = SceneLayout(8, 64, 8, 0.5, 5.0)
    pad = torch.zeros(1, 3, 64, 64, 1)
    k = known_state(lay, "complete", rgb=torch.cat([scene.rgb, pad.expand(1, 3, 64, 64, 3)], 1),
                    depth=torch.cat([scene.depth, pad], 1),
                    K=torch.cat([scene.K, scene.K[:, -1:].expand(1, 3, 3, 3)], 1),
                    viewmats=torch.cat([scene.viewmats, scene.viewmats[:, -1:].expand(1, 3, 4,
                                                                                      4)], 1),
                    num_views=5, known=[0, 2], cameras=scene.cameras(0))
    w = warp_known(decoder, lay, k, (0, 2))
    t = lay.tokens_per_view
    for slot in (5, 6, 7):
        assert torch.equal(w.start[:, slot * t: (slot + 1) * t], w.start[:, :t])
        assert not w.mask[:, slot * t: (slot + 1) * t].any()


def test_a_camera_flow_makes_views_at_the_cameras_it_is_given(tmp_path, capsys, camera_flow):
    from flow3d.splat.mvflow import SceneLayout
    from flow3d.splat.splatflow import sample_cameras

    flow = ["--flow", camera_flow, "--decoder", DECODER, "--steps", "2"]
    assert cli.main(["splat", "generate", "--class", "chair", "--out", str(tmp_path / "s.ply"),
                     "--seed", "4", *map(str, flow)]) == 0
    cams = load_dataset(tmp_path / "s_views").cameras
    drawn = sample_cameras(SceneLayout(8, 64, 8, 0.5, 5.0), 4)
    assert torch.allclose(cams.viewmats, drawn.viewmats.float(), atol=1e-5)
    # complete and edit of a dataset of fewer views than slots: the known pixels kept
    data = write_scene(tmp_path / "data", views=5)
    assert cli.main(["splat", "complete", str(data), "--known", "0,2", "--out",
                     str(tmp_path / "done"), *map(str, flow)]) == 0
    src, got = load_dataset(data), load_dataset(tmp_path / "done")
    assert len(got) == 5 and torch.allclose(got.cameras.viewmats, src.cameras.viewmats,
                                            atol=1e-5)
    keep = (src.masks[[0, 2]] > 0).expand_as(src.images[[0, 2]])
    assert torch.allclose(got.images[[0, 2]][keep], src.images[[0, 2]][keep],
                          atol=1 / 255 + 1e-6)
    box = (slice(16, 40), slice(16, 40))
    masks = square_masks(tmp_path / "masks", (1,), box)
    assert cli.main(["splat", "edit", str(data), "--mask", str(masks), "--class", "vase",
                     "--out", str(tmp_path / "edited"), *map(str, flow)]) == 0
    assert_kept_outside(src, load_dataset(tmp_path / "edited"), (1,), box)


@pytest.mark.parametrize("argv, mentions", [
    (["splat", "generate", "--class", "chair", "--cameras", "generated"],
     ["--flow", "needs cameras", "--cameras generated"]),
    (["splat", "poses", "DATA"], ["--flow", "cannot estimate cameras"]),
])
def test_a_camera_flow_refuses_tasks_without_cameras(tmp_path, capsys, camera_flow, argv,
                                                     mentions):
    data = write_scene(tmp_path / "data")
    argv = [str(data) if a == "DATA" else a for a in argv]
    argv += ["--out", str(tmp_path / "out.ply" if argv[1] == "generate" else tmp_path / "out"),
             "--flow", str(camera_flow), "--decoder", str(DECODER)]
    assert_user_error(argv, capsys, mentions, watch=[tmp_path])


def test_the_bundled_camera_flow_generates_at_the_drawn_cameras(tmp_path, capsys):
    from flow3d.engine.checkpoint import read_recipe

    cams = ROOT / "checkpoints" / "splat" / "mvflow_cams"
    assert tuple(read_recipe(cams).model.given) == ("rays",)
    assert cli.main(["splat", "generate", "--class", "dog", "--out", str(tmp_path / "d.ply"),
                     "--flow", str(cams), "--decoder", str(DECODER), "--steps", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cameras"] == "sampled" and report["gaussians"] > 0
