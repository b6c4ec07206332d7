"""`flow3d splat reconstruct`: the bundled GSDecoder turns a posed dataset with depth into a
scene that re-renders its views, and bad input is refused in one line before any work."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from contract import assert_user_error
from synthetic_scenes import sphere_scene, write_sphere_dataset

from flow3d import cli
from flow3d.splat.formats import load_scene
from flow3d.splat.metrics import psnr
from flow3d.splat.render import render

ROOT = Path(__file__).resolve().parents[2]
CKPT = ROOT / "checkpoints" / "splat" / "gsdecoder"


def test_reconstruct_rerenders_its_views(tmp_path, capsys):
    """The decoded scene re-renders its own views better than plain unprojection (one opaque
    pixel-sized Gaussian per pixel with depth): the silhouettes, where unprojection bleeds
    into the background, dominate the error at 64^2."""
    from flow3d.engine.checkpoint import load_frozen
    from flow3d.splat.dataset import load_dataset
    from flow3d.splat.decoder import pixel_gaussians

    data = write_sphere_dataset(tmp_path / "sphere", views=4, size=64, seed=1)
    out = tmp_path / "scene.ply"
    assert cli.main(["splat", "reconstruct", str(data), "--out", str(out),
                     "--ckpt", str(CKPT)]) == 0
    assert "Gaussians from 4 views" in capsys.readouterr().out
    scene = load_scene(out)
    views = load_dataset(data)
    assert len(scene) == int((views.depths > 0).sum())
    settings = load_frozen(CKPT, "splat_decoder", "GSDecoder").cfg.render_settings()
    plain = pixel_gaussians(torch.zeros(4, 14, 64, 64), views.images, views.depths,
                            views.cameras)
    with torch.no_grad():  # the file carries the decoder's low-pass: rendered without one
        rendered = render(scene, views.cameras,
                          settings=dataclasses.replace(settings, eps2d=0.0)).rgb.clamp(0, 1)
        unprojected = render(plain, views.cameras, settings=settings).rgb.clamp(0, 1)
    target = views.images * views.masks
    assert psnr(rendered, target) > max(psnr(unprojected, target) + 2.0, 20.0)


def test_reconstructed_scene_renders_at_four_times_its_size(tmp_path):
    """The written scene carries the decoder's 2D low-pass in its Gaussians: rendered at 4x
    (``flow3d splat render --scale 4 --eps2d 0``) and averaged back over 4 x 4 pixels, it
    scores within a few dB of its render at its own size (the average blurs more than the
    pixel centre does); the decoder's raw Gaussians (a tenth of a pixel wide) fall apart into
    dots at 4x and score far lower."""
    from PIL import Image

    from flow3d.engine.checkpoint import load_frozen
    from flow3d.splat.dataset import load_dataset
    from flow3d.splat.decoder import decode_scene

    data = write_sphere_dataset(tmp_path / "sphere", views=4, size=64, seed=1)
    out = tmp_path / "scene.ply"
    assert cli.main(["splat", "reconstruct", str(data), "--out", str(out), "--refine", "0",
                     "--ckpt", str(CKPT)]) == 0
    scores = {}
    for scale in (1, 4):
        folder = tmp_path / f"x{scale}"
        assert cli.main(["splat", "render", str(out), str(data), "--out", str(folder),
                         "--eps2d", "0", "--scale", str(scale)]) == 0
        scores[scale] = json.loads((folder / "metrics.json").read_text())["psnr"]
        assert Image.open(folder / "000.png").size == (64 * scale, 64 * scale)
    views = load_dataset(data)
    model = load_frozen(CKPT, "splat_decoder", "GSDecoder")
    with torch.no_grad():
        raw = decode_scene(model, views.images, views.depths * (views.masks > 0),
                           views.cameras, views.masks)
        big = render(raw, views.cameras.resized(4),
                     settings=model.cfg.render_settings()).rgb.clamp(0, 1)
    small = torch.nn.functional.avg_pool2d(big.permute(0, 3, 1, 2), 4).permute(0, 2, 3, 1)
    raw_4x = psnr(small, views.images * views.masks)
    assert scores[4] > scores[1] - 3.0  # 26.9 against 29.3 when written
    assert scores[4] > raw_4x + 3.0  # against 23.0


@pytest.fixture
def inputs(tmp_path):
    for name, size, depth in (("good", 32, True), ("nodepth", 32, False), ("odd", 30, True),
                              ("blank", 32, True)):
        write_sphere_dataset(tmp_path / name, views=4, size=size, depth=depth, seed=1)
    blank = tmp_path / "blank" / "transforms.json"
    meta = json.loads(blank.read_text())
    for f in meta["frames"]:  # every depth map replaced by zeros
        from PIL import Image

        Image.fromarray(np.zeros((32, 32), np.uint16)).save(tmp_path / "blank" /
                                                             f["depth_file_path"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "taken.ply").write_bytes(b"keep me")
    (tmp_path / "notjson").mkdir()
    (tmp_path / "notjson" / "transforms.json").write_text("{nope")
    return tmp_path


@pytest.mark.parametrize("dataset, out, extra, mentions", [
    ("missing", "new.ply", [], ["missing", "no such dataset"]),
    ("notjson", "new.ply", [], ["transforms.json", "not valid JSON"]),
    ("nodepth", "new.ply", [], ["nodepth", "no depth maps"]),
    ("odd", "new.ply", [], ["30x30", "divisible by 4"]),
    ("blank", "new.ply", [], ["blank", "every depth is 0"]),
    ("good", "taken.ply", [], ["--out", "taken.ply", "--overwrite"]),
    ("good", "new.glb", [], ["--out", "unsupported extension"]),
    ("good", "new.ply", ["--ckpt", "nowhere"], ["--ckpt", "nowhere", "no such checkpoint"]),
    ("good", "new.ply", ["--ckpt", str(ROOT / "checkpoints" / "toy" / "eight_gaussians")],
     ["eight_gaussians", "not splat_decoder"]),
    ("good", "new.ply", ["--refine", "-1"], ["--refine", "-1"]),
    ("good", "new.ply", ["--refine", "nan"], ["--refine", "nan"]),
])
def test_reconstruct_bad_input(inputs, capsys, dataset, out, extra, mentions):
    argv = ["splat", "reconstruct", inputs / dataset, "--out", inputs / "out" / out, *extra]
    if "--ckpt" not in extra:
        argv += ["--ckpt", CKPT]
    assert_user_error(argv, capsys, mentions, watch=[inputs / "out"])


def test_reconstruct_refuses_an_unwritable_output(inputs, capsys):
    assert_user_error(["splat", "reconstruct", inputs / "good", "--out", "/proc/new.ply",
                       "--ckpt", CKPT], capsys, ["--out", "/proc"], watch=[inputs / "out"])


def test_decoded_scene_is_finite(tmp_path):
    from flow3d.engine.checkpoint import load_frozen
    from flow3d.splat.decoder import decode_scene

    scene = sphere_scene(views=3, size=32)
    model = load_frozen(CKPT, "splat_decoder", "GSDecoder")
    with torch.no_grad():
        g = decode_scene(model, scene.rgb[0], scene.depth[0], scene.cameras(0))
    for t in (g.means, g.quats, g.log_scales, g.opacity_logits, g.sh):
        assert torch.isfinite(t).all()
    assert not math.isnan(float(g.scales.max()))
