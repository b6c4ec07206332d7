"""Metrics against hand cases, and post-processing (floaters, decimation, export round trip)."""

from __future__ import annotations

import numpy as np
import pytest

from flow3d.errors import DataError
from flow3d.mesh.metrics import format_metrics, mesh_metrics
from flow3d.mesh.postprocess import decimate, ensure_watertight, export_mesh, remove_floaters

trimesh = pytest.importorskip("trimesh")


def test_mesh_against_itself_is_perfect():
    mesh = trimesh.creation.annulus(r_min=0.3, r_max=0.8, height=0.5)
    m = mesh_metrics(mesh, mesh, n_points=5000, n_volume=5000)
    assert m["chamfer_l1"] == 0 and m["chamfer_l2"] == 0
    assert m["fscore@0.01"] == m["fscore@0.02"] == m["fscore@0.05"] == 1.0
    assert m["normal_consistency"] == pytest.approx(1.0)
    assert m["volume_iou"] == 1.0
    assert "| chamfer_l1 |" in format_metrics(m)


def test_concentric_spheres_known_distances():
    gt = trimesh.creation.icosphere(subdivisions=4, radius=3.0)  # normalised to radius 1
    pred = trimesh.creation.icosphere(subdivisions=4, radius=2.4)  # -> radius 0.8 in GT frame
    m = mesh_metrics(pred, gt, n_points=10_000, n_volume=10_000)
    assert m["chamfer_l1"] == pytest.approx(0.2, abs=4e-3)
    assert m["chamfer_l2"] == pytest.approx(0.04, abs=2e-3)
    assert m["fscore@0.05"] == 0.0
    assert m["normal_consistency"] > 0.99
    # both meshes are closed: their own solids, no shell; faceting costs < 1%
    assert m["volume_iou"] == pytest.approx(0.8**3, abs=0.015)


def test_normalisation_is_the_ground_truths():
    gt = trimesh.creation.box(extents=(2.0, 2.0, 2.0))
    pred = gt.copy()
    pred.apply_translation((0.1, 0.0, 0.0))  # 0.1 in GT units of half-size 1 -> 0.1
    m = mesh_metrics(pred, gt, n_points=20_000, n_volume=20_000)
    assert 0.02 < m["chamfer_l1"] < 0.1
    assert m["fscore@0.01"] < m["fscore@0.05"] < 1.0
    assert m["volume_iou"] == pytest.approx(1.9 / 2.1, abs=0.02)
    scaled = gt.copy()
    scaled.apply_scale(10.0)  # same shape, wrong size: must not score as perfect
    assert mesh_metrics(scaled, gt, n_points=2000, n_volume=0)["fscore@0.05"] < 0.1


def test_metrics_reject_empty_meshes():
    empty = trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64))
    with pytest.raises(DataError, match="prediction"):
        mesh_metrics(empty, trimesh.creation.box(), n_points=10)


def test_remove_floaters_and_decimate():
    big = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    small = trimesh.creation.icosphere(subdivisions=1, radius=0.1)
    small.apply_translation((3, 0, 0))
    both = trimesh.util.concatenate([big, small])
    kept = remove_floaters(both)
    assert len(kept.faces) == len(big.faces) and kept.is_watertight
    assert len(remove_floaters(both, keep=0.001).faces) == len(both.faces)
    with pytest.raises(ValueError):
        remove_floaters(both, keep="smallest")
    pytest.importorskip("fast_simplification")
    small_mesh = decimate(big, 1000)
    assert len(small_mesh.faces) <= 1000 and small_mesh.is_watertight
    assert decimate(small_mesh, 10**6) is small_mesh


def test_ensure_watertight_keeps_closed_and_fixes_open():
    box = trimesh.creation.box()
    assert ensure_watertight(box).is_watertight
    opened = trimesh.Trimesh(box.vertices, box.faces[:-2])
    fixed = ensure_watertight(opened, resolution=32)
    assert fixed.is_watertight and fixed.volume > 0


@pytest.mark.parametrize("suffix", [".glb", ".obj", ".ply", ".stl"])
def test_export_round_trip(tmp_path, suffix):
    from flow3d.mesh.data import load_mesh

    mesh = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3)
    path = export_mesh(mesh, tmp_path / f"out{suffix}")
    back = load_mesh(path)
    assert len(back.faces) == len(mesh.faces)
    assert np.allclose(back.bounds, mesh.bounds, atol=1e-5)
    assert abs(back.volume - mesh.volume) < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == [f"out{suffix}"]  # no temporary left


def test_glb_carries_vertex_normals_and_a_material(tmp_path):
    """Read back with a plain glTF parse (not trimesh): NORMAL attribute with outward unit
    normals at every vertex, a PBR material on the primitive."""
    import json
    import struct

    mesh = trimesh.creation.icosphere(3, radius=2.0)
    raw = export_mesh(mesh, tmp_path / "s.glb").read_bytes()
    (n_json,) = struct.unpack("<I", raw[12:16])
    doc = json.loads(raw[20 : 20 + n_json])
    prim = doc["meshes"][0]["primitives"][0]
    assert "NORMAL" in prim["attributes"] and "material" in prim
    pbr = doc["materials"][prim["material"]]["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0 and 0 < pbr["roughnessFactor"] <= 1
    acc = doc["accessors"][prim["attributes"]["NORMAL"]]
    view = doc["bufferViews"][acc["bufferView"]]
    start = 20 + n_json + 8 + view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    normals = np.frombuffer(raw, np.float32, acc["count"] * 3, start).reshape(-1, 3)
    pos_acc = doc["accessors"][prim["attributes"]["POSITION"]]
    pview = doc["bufferViews"][pos_acc["bufferView"]]
    pstart = 20 + n_json + 8 + pview.get("byteOffset", 0) + pos_acc.get("byteOffset", 0)
    pos = np.frombuffer(raw, np.float32, pos_acc["count"] * 3, pstart).reshape(-1, 3)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    cos = (normals * pos / np.linalg.norm(pos, axis=1, keepdims=True)).sum(1)
    assert cos.min() > 0.97  # a sphere's normals point out of its centre


def test_export_rejects_unknown_format(tmp_path):
    with pytest.raises(DataError, match="unsupported"):
        export_mesh(trimesh.creation.box(), tmp_path / "out.xyz")


def test_open_ground_truth_against_its_watertight_solid():
    from flow3d.mesh.data import make_watertight

    box = trimesh.creation.box(extents=(1.0, 0.6, 0.4))
    opened = trimesh.Trimesh(box.vertices, box.faces[:-2])  # one open side
    solid = make_watertight(opened, resolution=64)
    m = mesh_metrics(solid, opened, n_points=20_000, n_volume=20_000)
    assert m["volume_iou"] > 0.97  # same solid (the cap over the hole costs F-score only)
    assert m["fscore@0.05"] > 0.9
