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
from synthetic_scenes import write_sphere_dataset as write_scene

from flow3d import cli
from flow3d.splat.dataset import load_dataset
from flow3d.splat.formats import load_scene

ROOT = Path(__file__).resolve().parents[2]
FLOW = Path(os.environ.get("FLOW3D_TEST_FLOW", ROOT / "checkpoints" / "splat" / "mvflow_class"))
DECODER = Path(os.environ.get("FLOW3D_TEST_DECODER", ROOT / "checkpoints" / "splat" / "gsdecoder"))
MODELS = ["--flow", str(FLOW), "--decoder", str(DECODER)]


def run(argv) -> None:
    assert cli.main([str(a) for a in argv] + MODELS + ["--steps", "2"]) == 0


def test_generate_writes_a_scene_and_its_views(tmp_path, capsys):
    out = tmp_path / "chair.ply"
    run(["splat", "generate", "--class", "chair", "--out", out])
    report = json.loads(capsys.readouterr().out)
    views = load_dataset(tmp_path / "chair_views")
    assert len(views) == 8 and views.depths is not None
    assert len(load_scene(out)) == report["gaussians"] == int((views.depths > 0).sum())
    assert json.loads((tmp_path / "chair_views" / "report.json").read_text())["class"] == "chair"


def test_complete_keeps_the_known_views_and_cameras(tmp_path, capsys):
    data = write_scene(tmp_path / "data")
    run(["splat", "complete", data, "--known", "0,1,2,3", "--out", tmp_path / "done"])
    src, got = load_dataset(data), load_dataset(tmp_path / "done")
    assert torch.allclose(got.cameras.viewmats, src.cameras.viewmats, atol=1e-5)
    keep = src.masks[:4] > 0
    assert torch.allclose(got.images[:4][keep.expand_as(got.images[:4])],
                          src.images[:4][keep.expand_as(src.images[:4])], atol=1 / 255 + 1e-6)
    assert (tmp_path / "done" / "scene.ply").is_file()


def test_edit_keeps_every_pixel_outside_the_mask(tmp_path, capsys):
    data = write_scene(tmp_path / "data")
    masks = tmp_path / "masks"
    masks.mkdir()
    m = np.zeros((64, 64), np.uint8)
    m[20:44, 20:44] = 255
    Image.fromarray(m).save(masks / "000.png")
    run(["splat", "edit", data, "--mask", masks, "--class", "airplane", "--out",
         tmp_path / "edited"])
    src, got = load_dataset(data), load_dataset(tmp_path / "edited")
    outside = torch.ones(8, 64, 64, 1, dtype=torch.bool)
    outside[0, 20:44, 20:44] = False
    fg = outside & (src.masks > 0)
    assert torch.allclose(got.images[fg.expand_as(got.images)],
                          src.images[fg.expand_as(src.images)], atol=1 / 255 + 1e-6)


def test_poses_reports_errors_for_every_view(tmp_path, capsys):
    data = write_scene(tmp_path / "data", views=5)
    run(["splat", "poses", data, "--out", tmp_path / "posed"])
    report = json.loads((tmp_path / "posed" / "report.json").read_text())
    assert len(report["rotation_error_deg"]) == 5 and len(report["center_error"]) == 5
    assert len(load_dataset(tmp_path / "posed")) == 5


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
    (["complete", "{tmp}/missing", "--known", "0", "--out", "{out}/c"],
     ["missing", "no such dataset"]),
    (["complete", "{tmp}/good", "--known", "0,9", "--out", "{out}/c"], ["--known 9"]),
    (["complete", "{tmp}/good", "--known", "1,1", "--out", "{out}/c"], ["--known", "twice"]),
    (["complete", "{tmp}/good", "--known", "a,b", "--out", "{out}/c"], ["--known"]),
    (["complete", "{tmp}/small", "--known", "0", "--out", "{out}/c"], ["32x32", "64x64"]),
    (["complete", "{tmp}/nodepth", "--known", "0", "--out", "{out}/c"], ["no depth"]),
    (["complete", "{tmp}/good", "--known", "0", "--out", "{out}/full"], ["full", "not empty"]),
    (["edit", "{tmp}/good", "--mask", "{tmp}/nomasks", "--class", "chair", "--out",
      "{out}/e"], ["--mask", "nomasks"]),
    (["edit", "{tmp}/good", "--mask", "{tmp}/masks", "--class", "chair", "--out", "{out}/e"],
     ["--mask", "no view has a masked pixel"]),
    (["edit", "{tmp}/good", "--mask", "{tmp}/badmask", "--class", "chair", "--out",
      "{out}/e"], ["000.png", "32x32"]),
    (["poses", "{tmp}/many", "--out", "{out}/p"], ["9 views", "holds 8"]),
    (["poses", "{tmp}/good", "--out", "{out}/p", "--flow",
      str(ROOT / "checkpoints" / "toy" / "eight_gaussians")], ["--flow", "not splat_flow"]),
])
def test_splatflow_bad_input(inputs, capsys, argv, mentions):
    fill = {"tmp": str(inputs), "out": str(inputs / "out")}
    argv = ["splat"] + [a.format(**fill) for a in argv]
    argv += MODELS if "--flow" not in argv else ["--decoder", str(DECODER)]
    assert_user_error(argv, capsys, mentions, watch=[inputs / "out"])
