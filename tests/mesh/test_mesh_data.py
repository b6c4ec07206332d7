"""Mesh data: loading (every edge case), normalisation, sampling, target SDF, cache, dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flow3d.errors import DataError
from flow3d.mesh import data
from flow3d.mesh.sdf import SHELL_EPS, mesh_sdf

trimesh = pytest.importorskip("trimesh")

MESHES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "meshes"
needs_data = pytest.mark.skipif(
    not MESHES.is_dir(), reason="real meshes not found at ../shared/data/meshes"
)
EDGE = MESHES / "trimesh_models" / "edge_cases"

# What each broken or unusual file must give: "ok" or a phrase of the rejection reason.
EXPECTED = {
    "busted.STL": "ok",
    "empty.obj": "empty",
    "empty.ply": "empty",
    "empty.stl": "empty",
    "multibody.stl": "ok",
    "nancolor.obj": "ok",  # geometry is valid; colours are not used
    "negative_indices.obj": "ok",
    "notenoughindices.obj": "ok",  # the short face is dropped; one triangle remains
    "points_ascii.ply": "point cloud",
    "points_bin.ply": "point cloud",
    "soup.stl": "ok",
    "two_objects.obj": "ok",
    "wallhole.obj": "ok",
}


@needs_data
def test_every_edge_case_loads_or_is_rejected_clearly():
    files = sorted(p.name for p in EDGE.iterdir())
    assert set(files) == set(EXPECTED), "edge-case folder changed: update EXPECTED"
    for name in files:
        path = EDGE / name
        if EXPECTED[name] == "ok":
            mesh = data.load_mesh(path)
            assert len(mesh.faces) > 0 and np.isfinite(mesh.vertices).all()
        else:
            with pytest.raises(DataError) as e:
                data.load_mesh(path)
            msg = str(e.value)
            assert name in msg and EXPECTED[name] in msg and "\n" not in msg


def test_load_rejects_nan_vertices_missing_and_bad_indices(tmp_path):
    bad = tmp_path / "nan.obj"
    bad.write_text("v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n")
    with pytest.raises(DataError, match="NaN"):
        data.load_mesh(bad)
    with pytest.raises(DataError, match="no such"):
        data.load_mesh(tmp_path / "missing.obj")
    zero = tmp_path / "zero.obj"
    zero.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        data.load_mesh(zero)
    flat = tmp_path / "point.obj"
    flat.write_text("v 0 0 0\nv 0 0 0\nv 0 0 0\nf 1 2 3\n")
    with pytest.raises(DataError, match="zero"):
        data.load_mesh(flat)


def test_load_off_and_ascii_formats(tmp_path):
    off = tmp_path / "tet.off"
    off.write_text("OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 2 1\n3 0 1 3\n3 0 3 2\n3 1 2 3\n")
    mesh = data.load_mesh(off)
    assert len(mesh.faces) == 4 and mesh.is_watertight
    obj = tmp_path / "tet.obj"
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n")
    assert np.allclose(data.load_mesh(obj).bounds, mesh.bounds)
    assert data.list_mesh_files(tmp_path) == [obj, off]


@needs_data
def test_glb_scene_is_merged_into_one_mesh():
    mesh = data.load_mesh(MESHES / "trimesh_models" / "objects" / "CesiumMilkTruck.glb")
    scene = trimesh.load(MESHES / "trimesh_models" / "objects" / "CesiumMilkTruck.glb")
    assert isinstance(mesh, trimesh.Trimesh)
    assert np.allclose(mesh.bounds, scene.bounds, atol=1e-5)


def test_normalization_round_trip_and_bounds():
    box = trimesh.creation.box(extents=(4.0, 2.0, 1.0))
    box.apply_translation((10.0, -3.0, 2.0))
    normed, norm = data.normalize_mesh(box)
    assert np.allclose(normed.bounds, [[-1, -0.5, -0.25], [1, 0.5, 0.25]])
    back = norm.invert(normed)
    assert np.allclose(back.vertices, box.vertices)
    pts = np.random.default_rng(0).normal(size=(10, 3))
    assert np.allclose(norm.invert(norm.apply(pts)), pts)
    again = data.Normalization.from_dict(norm.to_dict())
    assert np.allclose(again.center, norm.center) and again.scale == norm.scale


def test_sample_surface_on_sphere():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    pts, nrm = data.sample_surface(sphere, 2000, np.random.default_rng(0))
    assert pts.shape == (2000, 3) and nrm.shape == (2000, 3)
    assert np.abs(np.linalg.norm(pts, axis=1) - 1).max() < 5e-3
    assert (np.sum(pts * nrm, axis=1) > 0.99).all()  # outward unit normals
    again, _ = data.sample_surface(sphere, 2000, np.random.default_rng(0))
    assert np.array_equal(pts, again)


def test_sdf_supervision_matches_analytic_sphere():
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.6)
    pts, sdf = data.sample_sdf_supervision(sphere, 400, 400, 100, np.random.default_rng(1))
    assert pts.shape == (900, 3) and sdf.shape == (900,)
    exact = np.linalg.norm(pts, axis=1) - 0.6
    # closed mesh: the target is the plain SDF outside and shifted by at most eps elsewhere
    assert np.abs(sdf - exact)[:800].max() < SHELL_EPS + 2e-3
    far = np.abs(exact) > 2 * SHELL_EPS
    assert np.array_equal(sdf[far] < 0, exact[far] < 0)
    assert np.allclose(sdf[800:], -SHELL_EPS, atol=1e-4)  # surface points sit inside the shell


def test_open_sheet_gets_a_thin_shell():
    corners = [[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]]
    sheet = trimesh.Trimesh(corners, [[0, 1, 2], [0, 2, 3]])
    pts = np.array([[0, 0, 0.0], [0, 0, 0.5 * SHELL_EPS], [0, 0, 0.1], [0, 0, -0.1]])
    s = mesh_sdf(sheet, pts)
    assert s[0] < 0 and s[1] < 0 and s[2] > 0 and s[3] > 0
    assert np.allclose(s[2:], 0.1 - SHELL_EPS, atol=1e-4)


def test_make_watertight_closes_a_mesh_with_a_hole():
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    holed = trimesh.Trimesh(box.vertices, box.faces[2:])  # one side missing
    assert not holed.is_watertight
    closed = data.make_watertight(holed, resolution=32)
    assert closed.is_watertight and closed.volume > 0
    assert abs(closed.volume - 1.0) < 0.15  # the hole is filled, not a hollow shell


@needs_data
def test_capod_classes_and_split_are_deterministic():
    root = MESHES / "capod"
    lines = (root / "CAPOD.cla").read_text().splitlines()[2:]
    names = [t[0] for t in map(str.split, lines) if len(t) == 3 and not t[0].isdigit()]
    assert tuple(names) == data.CAPOD_CLASSES  # the class model's label order
    train, held = data.capod_split(root, holdout_per_class=2)
    assert len(held) == 30 and not set(train) & set(held)
    assert (train, held) == data.capod_split(root, holdout_per_class=2)
    assert {data.capod_class_of(p) for p in held} == set(range(15))


@needs_data
def test_cache_and_dataset_round_trip(tmp_path):
    capod = MESHES / "capod"
    files = [capod / "class13" / "m149.obj", capod / "class13" / "m155.obj",
             EDGE / "points_ascii.ply", EDGE / "empty.obj", EDGE / "soup.stl"]
    report = data.build_mesh_cache(
        files, tmp_path / "cache", n_surface=256, n_near=256, n_volume=128, workers=2,
        root=MESHES, progress=False,
    )
    assert len(report.kept) == 3 and len(report.skipped) == 2
    assert all("points_ascii.ply" in r or "empty.obj" in r for r in report.skipped.values())
    assert (tmp_path / "cache" / "report.json").is_file()
    ds = data.MeshDataset(tmp_path / "cache", n_surface=100, n_query=200)
    assert len(ds) == 3
    item = ds[0]
    assert item["surface_points"].shape == (100, 3) and item["query_sdf"].shape == (200,)
    assert item["surface_points"].abs().max() <= 1.0 + 1e-5
    ids = {ds[i]["mesh_id"]: ds[i]["class_id"] for i in range(3)}
    assert ids["capod__class13__m149"] == 12 and ids["trimesh_models__edge_cases__soup"] == -1
    assert torch.equal(ds[0]["query_points"], ds[0]["query_points"])  # reproducible
    with pytest.raises(DataError, match="requested"):
        data.MeshDataset(tmp_path / "cache", n_surface=10**6)[0]
    held = data.MeshDataset(tmp_path / "cache", 10, 10, split="heldout")
    train = data.MeshDataset(tmp_path / "cache", 10, 10, split="train")
    assert [held[i]["mesh_id"] for i in range(len(held))] == ["capod__class13__m155"]
    assert len(train) == 2
    views = data.build_view_cache(
        files[:1], tmp_path / "cache", n_views=3, image_size=32, root=MESHES, progress=False
    )
    assert views.kept == ["capod__class13__m149"]
    ds = data.MeshDataset(tmp_path / "cache", n_surface=100, n_query=200)
    assert len(ds) == 3  # view files are not items
    i = [ds[j]["mesh_id"] for j in range(3)].index("capod__class13__m149")
    item = ds[i]
    assert item["images"].shape == (3, 32, 32, 3) and item["images"].dtype == torch.uint8
    assert item["extrinsics"].shape == (3, 4, 4) and (item["images"] < 200).any()
    assert "images" not in ds[(i + 1) % 3]
    # the cached normalisation maps the cache back to the mesh's own coordinates
    mesh = data.load_mesh(capod / "class13" / "m149.obj")
    assert np.allclose(ds.normalization(i).invert(np.zeros(3)), mesh.bounds.mean(0), atol=1e-6)


@needs_data
def test_real_mesh_with_degenerate_faces_gives_finite_sdf():
    # CAPOD m157 (a gun) has 60 zero-area triangles: they used to produce NaN distances
    mesh, _ = data.normalize_mesh(data.load_mesh(MESHES / "capod" / "class14" / "m157.obj"))
    assert (mesh.area_faces > 0).all()
    pts, sdf = data.sample_sdf_supervision(mesh, 20_000, 5_000, 1_000, np.random.default_rng(0))
    assert np.isfinite(sdf).all() and (sdf < 0).any() and (sdf > 0).any()


def test_mesh_sdf_is_finite_next_to_a_degenerate_triangle():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 2, 2], [2, 2, 2], [3, 3, 3.0]])
    mesh = trimesh.Trimesh(v, [[0, 1, 2], [3, 4, 5]], process=False)
    s = mesh_sdf(mesh, np.array([[2.5, 2.5, 2.6], [0.2, 0.2, 0.5]]))
    assert np.isfinite(s).all() and s[1] == pytest.approx(0.5 - SHELL_EPS, abs=1e-5)


def test_mesh_id_agrees_for_relative_files_and_an_absolute_root(tmp_path, monkeypatch):
    """Files given relative to the working folder, root given absolute (as the cache builder
    does): the id is the same as with absolute paths, not an 'unexpected' skip."""
    root = tmp_path / "meshes"
    (root / "class1").mkdir(parents=True)
    (root / "class1" / "m1.obj").write_text("v 0 0 0\n")
    monkeypatch.chdir(tmp_path)
    rel = Path("meshes") / "class1" / "m1.obj"
    assert data.mesh_id(rel, root) == data.mesh_id(root / "class1" / "m1.obj", root)
    assert data.mesh_id(rel, root) == "class1__m1"
