"""Posed-image datasets: `flow3d splat views` round trips, exact depth, and one-line errors for
broken transforms.json datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from contract import assert_user_error

from flow3d.errors import DataError
from flow3d.splat import Cameras
from flow3d.splat.dataset import backproject, load_dataset, save_dataset

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "meshes"


def pyrender_works() -> bool:
    try:
        import trimesh

        from flow3d.splat.views import render_mesh, sphere_cameras

        render_mesh([trimesh.creation.box()], sphere_cameras(1, radius=1.0, size=8, fov_deg=40,
                                                            elevations=(0, 10)))
        return True
    except Exception:  # noqa: BLE001 - any failure means: no renderer here
        return False


needs_gl = pytest.mark.skipif(not pyrender_works(), reason="pyrender/EGL not available")


def tiny_dataset(folder: Path, views: int = 4, size: int = 8, depth: bool = False,
                 alpha: bool = True) -> Path:
    """Random images on orbit cameras, written with save_dataset (no renderer needed)."""
    g = np.random.default_rng(0)
    images = g.integers(0, 256, (views, size, size, 4 if alpha else 3), dtype=np.uint8)
    cams = Cameras.orbit(views, radius=3.0, width=size, height=size)
    depths = np.full((views, size, size), 2.5) if depth else None
    folder.mkdir(parents=True, exist_ok=True)
    save_dataset(folder, images, cams, depths=depths)
    return folder


def edit_transforms(folder: Path, fn) -> None:
    path = folder / "transforms.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


# ---- round trips -----------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    folder = tiny_dataset(tmp_path / "d", views=9, depth=True)
    data = load_dataset(folder)
    cams = Cameras.orbit(9, radius=3.0, width=8, height=8)
    assert torch.allclose(data.cameras.K, cams.K)
    assert torch.allclose(data.cameras.viewmats, cams.viewmats, atol=1e-5)
    assert data.images.shape == (9, 8, 8, 3) and data.masks.shape == (9, 8, 8, 1)
    assert torch.allclose(data.depths, torch.full((9, 8, 8, 1), 2.5))
    train, test = data.split()
    assert test.names == ("images/000.png", "images/008.png") and len(train) == 7


def test_depth_scale_and_npy(tmp_path):
    folder = tiny_dataset(tmp_path / "d", views=1)
    np.save(folder / "d.npy", np.full((8, 8), 1250.0, dtype=np.float32))

    def use_npy(meta):
        meta["frames"][0]["depth_file_path"] = "d.npy"
        meta["depth_unit_scale_factor"] = 1e-3

    edit_transforms(folder, use_npy)
    assert torch.allclose(load_dataset(folder).depths, torch.full((1, 8, 8, 1), 1.25))


@needs_gl
def test_views_round_trip_and_exact_depth(tmp_path, capsys):
    import trimesh

    from flow3d import cli
    from flow3d.splat.views import sphere_cameras

    mesh = trimesh.creation.icosphere(subdivisions=5, radius=2.0)
    mesh.apply_translation([3.0, -1.0, 0.5])  # the dataset moves it into the unit box
    mesh.export(tmp_path / "ball.obj")
    out = tmp_path / "data"
    assert cli.main(["splat", "views", str(tmp_path / "ball.obj"), "--num", "5", "--size",
                     "48", "--out", str(out)]) == 0
    data = load_dataset(out)
    norm = data.normalization
    assert np.allclose(norm["center"], [3.0, -1.0, 0.5], atol=1e-6)
    # cameras equal the ones views placed
    cams = sphere_cameras(5, radius=float(np.linalg.norm(mesh.vertices - norm["center"],
                                                         axis=1).max()) / norm["scale"],
                          size=48, fov_deg=40.0, elevations=(-20.0, 60.0))
    assert torch.allclose(data.cameras.K, cams.K, atol=1e-4)
    assert torch.allclose(data.cameras.viewmats, cams.viewmats, atol=1e-5)
    # every depth pixel lands on the sphere (radius 2 / scale 4 = 0.5), mapped back: radius 2
    points, _ = backproject(data.depths, data.cameras)
    back = points.double() * norm["scale"] + torch.tensor(norm["center"])
    err = (back - torch.tensor([3.0, -1.0, 0.5])).norm(dim=-1) - 2.0
    assert err.abs().max() < 2e-3 * 2.0, float(err.abs().max())
    assert err.abs().median() < 2e-4 * 2.0
    # masks: coverage with depth only inside it, procedural colours are not black
    assert ((data.depths > 0) <= (data.masks > 0)).all()
    assert data.images[data.masks[..., 0] > 0.99].mean() > 0.2


@needs_gl
@pytest.mark.skipif(not (DATA / "capod").is_dir(), reason="../shared/data not present")
def test_capod_depth_lands_on_surface(tmp_path):
    pytest.importorskip("point_cloud_utils")
    import trimesh

    from flow3d.mesh.sdf import mesh_sdf
    from flow3d.splat.views import ViewsSettings, make_views

    path = DATA / "capod" / "class15" / "m169.obj"
    make_views(ViewsSettings(mesh=path, out=tmp_path / "d", num=3, size=48))
    data = load_dataset(tmp_path / "d")
    points, _ = backproject(data.depths, data.cameras)
    norm = data.normalization
    back = points.double().numpy() * norm["scale"] + np.array(norm["center"])
    dist = np.abs(mesh_sdf(trimesh.load(path), back, eps=0)) / norm["scale"]
    assert np.median(dist) < 2e-4 and np.quantile(dist, 0.99) < 2e-3


# ---- one-line errors -------------------------------------------------------------------------
def fit_argv(dataset: Path, tmp_path: Path) -> list[str]:
    return ["splat", "fit", str(dataset), "--out", str(tmp_path / "out" / "s.ply"), "--steps",
            "2", "--backend", "torch", "--no-progress"]


@pytest.mark.parametrize("case", ["no_transforms", "no_frames", "missing_image", "missing_field",
                                  "missing_intrinsics", "zero_size", "empty_image",
                                  "different_sizes", "depth_shape", "bad_json"])
def test_broken_dataset_is_one_line_error(case, tmp_path, capsys):
    folder = tiny_dataset(tmp_path / "d", views=3)
    mention = str(folder / "transforms.json")
    if case == "no_transforms":
        (folder / "transforms.json").unlink()
    elif case == "no_frames":
        edit_transforms(folder, lambda m: m.update(frames=[]))
    elif case == "missing_image":
        (folder / "images" / "001.png").unlink()
        mention = "001.png"
    elif case == "missing_field":
        edit_transforms(folder, lambda m: m["frames"][1].pop("transform_matrix"))
        mention = "transform_matrix"
    elif case == "missing_intrinsics":
        edit_transforms(folder, lambda m: [f.pop("fl_x") for f in m["frames"]])
        mention = "fl_x"
    elif case == "zero_size":
        edit_transforms(folder, lambda m: m.update(w=0))
    elif case == "empty_image":
        (folder / "images" / "002.png").write_bytes(b"")
        mention = "002.png"
    elif case == "different_sizes":
        from PIL import Image

        Image.new("RGB", (4, 4)).save(folder / "images" / "001.png")
        mention = "001.png"
    elif case == "depth_shape":
        np.save(folder / "d.npy", np.ones((3, 8), dtype=np.float32))
        edit_transforms(folder, lambda m: m["frames"][0].update(depth_file_path="d.npy"))
        mention = "d.npy"
    elif case == "bad_json":
        (folder / "transforms.json").write_text("{not json")
    with pytest.raises(DataError):
        load_dataset(folder)
    assert_user_error(fit_argv(folder, tmp_path), capsys, mentions=[mention],
                      watch=[tmp_path])


def test_views_bad_inputs(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "transforms.json").write_text("{}")
    (tmp_path / "empty.obj").write_text("")
    mesh = tmp_path / "m.obj"
    mesh.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert_user_error(["splat", "views", str(tmp_path / "nope.obj"), "--out",
                       str(tmp_path / "o")], capsys, ["nope.obj"], [tmp_path])
    assert_user_error(["splat", "views", str(tmp_path / "empty.obj"), "--out",
                       str(tmp_path / "o")], capsys, ["empty.obj"], [tmp_path])
    assert_user_error(["splat", "views", str(mesh), "--out", str(tmp_path / "taken")], capsys,
                      ["--out", "--overwrite"], [tmp_path])
    assert_user_error(["splat", "views", str(mesh), "--out", str(tmp_path / "file" / "o")],
                      capsys, ["--out"], [tmp_path])
    for bad in ("0", "-1", "nan", "2.5"):
        assert_user_error(["splat", "views", str(mesh), "--num", bad, "--out",
                           str(tmp_path / "o")], capsys, ["--num"], [tmp_path])


@needs_gl
def test_render_mesh_shows_a_sheet_from_both_sides():
    """One triangle seen from its front and from its back covers the same pixels with the same
    colour and depth: renders are two-sided, so every view of a mesh with open sheets or
    inconsistent winding shows one 3D object (pyrender culls back faces by default)."""
    import trimesh

    from flow3d.splat.views import render_mesh

    tri = trimesh.Trimesh([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]], [[0, 1, 2]],
                          process=False)
    tri.visual.face_colors = [200, 40, 40, 255]
    eyes = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, -2.0]])  # its front (+z), its back
    cams = Cameras.look_at(eyes, torch.zeros(2, 3), fov_deg=40, width=16, height=16)
    rgba, depth = render_mesh([tri], cams)
    front, back = rgba[0, ..., 3] > 0, rgba[1, ..., 3] > 0
    assert front.sum() > 20
    # the back view is the front one mirrored (up to a partly covered pixel on an edge)
    assert (front != back[:, ::-1]).sum() <= 2
    assert np.abs(rgba[1][back][:, :3].astype(int) - [200, 40, 40]).max() <= 1
    seen = depth > 0  # depth is sampled at the pixel centre, coverage over the pixel
    assert abs(int(seen[1].sum()) - int(seen[0].sum())) <= 2 and seen[1].sum() > 10
    assert np.allclose(depth[1][seen[1]], 2.0, atol=1e-3)
