"""``flow3d appearance transfer`` against bad input: one line naming the option or file, exit
status 2, nothing written, and no model loaded before the inputs are checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from contract import assert_user_error

trimesh = pytest.importorskip("trimesh")

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "examples" / "mesh" / "capod_heldout_view.png"


@pytest.fixture
def meshes(tmp_path) -> dict[str, Path]:
    """A plain target, a vertex-coloured source, and broken files."""
    d = tmp_path / "in"
    d.mkdir()
    plain = trimesh.creation.box((1.0, 2.0, 0.5))
    plain.export(d / "plain.obj")
    coloured = trimesh.creation.icosphere(2)
    rgb = (np.abs(coloured.vertices) * 255).clip(0, 255).astype(np.uint8)
    coloured.visual.vertex_colors = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], 1)
    coloured.export(d / "coloured.ply")
    (d / "empty.obj").write_bytes(b"")
    (d / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    (d / "nan.obj").write_text("v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    good = trimesh.creation.icosphere(2).export(file_type="glb")
    (d / "cut.glb").write_bytes(good[: len(good) // 2])
    return {p.name: p for p in d.iterdir()}


@pytest.fixture
def no_models(monkeypatch):
    import flow3d.appearance.transfer as transfer

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(transfer, "load_models", refuse)


def argv(target, source, out, *extra):
    return ["appearance", "transfer", "--target", target, "--source", source, "--out", out,
            *extra]


@pytest.mark.parametrize("name,says", [("empty.obj", "empty file"), ("points.obj", "points.obj"),
                                       ("nan.obj", "NaN"), ("cut.glb", "cut.glb")])
def test_bad_target_meshes(name, says, meshes, tmp_path, capsys, no_models):
    assert_user_error(argv(meshes[name], meshes["coloured.ply"], tmp_path / "o.glb"), capsys,
                      mentions=[name, says], watch=[tmp_path])


@pytest.mark.parametrize("name,says", [("empty.obj", "empty file"), ("nan.obj", "NaN"),
                                       ("plain.obj", "no colours or texture")])
def test_bad_sources(name, says, meshes, tmp_path, capsys, no_models):
    assert_user_error(argv(meshes["plain.obj"], meshes[name], tmp_path / "o.glb"), capsys,
                      mentions=[name, says], watch=[tmp_path])


def test_missing_files_and_folders(meshes, tmp_path, capsys, no_models):
    assert_user_error(argv(tmp_path / "gone.obj", meshes["coloured.ply"], tmp_path / "o.glb"),
                      capsys, mentions=["--target", "gone.obj", "not found"], watch=[tmp_path])
    assert_user_error(argv(meshes["plain.obj"], tmp_path, tmp_path / "o.glb"), capsys,
                      mentions=["--source", "is a folder"], watch=[tmp_path])


def test_image_without_an_object(meshes, tmp_path, capsys, no_models):
    from PIL import Image

    blank = tmp_path / "in" / "blank.png"
    Image.new("RGB", (64, 64), "white").save(blank)
    assert_user_error(argv(meshes["plain.obj"], blank, tmp_path / "o.glb", "--guidance",
                           "image"), capsys, mentions=["blank.png", "no object"],
                      watch=[tmp_path])


@pytest.mark.parametrize("extra,says", [
    (["--guidance", "colourful"], "--guidance"),
    (["--steps", "0"], "--steps"),
    (["--steps", "nan"], "--steps"),
    (["--cfg", "nan"], "--cfg"),
    (["--cfg", "-1"], "--cfg"),
    (["--lr", "inf"], "--lr"),
    (["--seed", "-3"], "--seed"),
    (["--guidance", "image"], "needs an image --source"),
])
def test_bad_options(extra, says, meshes, tmp_path, capsys, no_models):
    assert_user_error(argv(meshes["plain.obj"], meshes["coloured.ply"], tmp_path / "o.glb",
                           *extra), capsys, mentions=[says], watch=[tmp_path])


def test_part_guidance_needs_a_mesh_source(meshes, tmp_path, capsys, no_models):
    assert_user_error(argv(meshes["plain.obj"], IMAGE, tmp_path / "o.glb", "--guidance", "part"),
                      capsys, mentions=["--guidance part", "image"], watch=[tmp_path])


@pytest.mark.parametrize("case", range(6))
def test_bad_outputs(case, meshes, tmp_path, capsys, no_models):
    (tmp_path / "taken.glb").mkdir()
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "existing.glb").write_text("keep me")
    out, says = [
        ("", "an output path is required"),
        (tmp_path / "taken.glb", "is a folder"),
        (tmp_path / "file.txt" / "m.glb", "file.txt is a file"),
        ("/proc/flow3d_contract.glb", "cannot write"),
        (tmp_path / "existing.glb", "file exists; pass --overwrite"),
        (tmp_path / "m.obj", "unsupported extension"),
    ][case]
    assert_user_error(argv(meshes["plain.obj"], meshes["coloured.ply"], out), capsys,
                      mentions=["--out", says], watch=[tmp_path])


@pytest.mark.parametrize("case", range(5))
def test_bad_splat_outputs(case, meshes, tmp_path, capsys, no_models):
    (tmp_path / "taken.ply").mkdir()
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "existing.ply").write_text("keep me")
    out, says = [
        (tmp_path / "taken.ply", "is a folder"),
        (tmp_path / "file.txt" / "s.ply", "file.txt is a file"),
        ("/proc/flow3d_contract.ply", "cannot write"),
        (tmp_path / "existing.ply", "file exists; pass --overwrite"),
        (tmp_path / "s.txt", "unsupported extension"),
    ][case]
    assert_user_error(argv(meshes["plain.obj"], meshes["coloured.ply"], tmp_path / "o.glb",
                           "--splat", out), capsys, mentions=["--splat", says],
                      watch=[tmp_path])
