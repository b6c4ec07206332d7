"""The appearance head's pieces: paintings, palette, the appearance VAE, the flow's extra
inputs and vector condition, correspondences and guidance losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flow3d.appearance.model import AppearanceVAE, appearance_loss, palette
from flow3d.appearance.paint import KINDS, Painting, geometric_parts, paint, random_painting
from flow3d.appearance.transfer import (
    kmeans,
    part_correspondence,
    sliced_wasserstein,
    supervised_contrastive,
)
from flow3d.mesh.voxels import SparseVoxels

trimesh = pytest.importorskip("trimesh")


def box_surface(n=4000, seed=0):
    box = trimesh.creation.box((1.0, 1.6, 0.8))
    pts, face = trimesh.sample.sample_surface(box, n, seed=seed)
    return np.asarray(pts, np.float32), np.asarray(box.face_normals[face], np.float32)


def test_geometric_parts_on_a_box():
    pts, nrm = box_surface()
    parts = geometric_parts(pts, nrm, axis=1)
    assert (parts[nrm[:, 1] > 0.9] == 2).all() and (parts[nrm[:, 1] < -0.9] == 3).all()
    side = np.abs(nrm[:, 1]) < 0.1
    rel = (pts[:, 1] - pts[:, 1].min()) / np.ptp(pts[:, 1])
    assert (parts[side & (rel < 0.39)] == 0).all() and (parts[side & (rel > 0.41)] == 1).all()
    # the rule is the same on another shape: a box twice as tall splits at the same fraction
    tall = pts * np.array([1, 2, 1], np.float32)
    assert (geometric_parts(tall, nrm, 1) == parts).all()


@pytest.mark.parametrize("kind", KINDS)
def test_every_painting_is_deterministic_and_in_range(kind):
    pts, nrm = box_surface()
    p = random_painting(np.random.default_rng(3), (kind,))
    a, b = paint(pts, nrm, p), paint(pts, nrm, p)
    assert a.shape == (len(pts), 3) and a.dtype == np.float32
    assert np.array_equal(a, b) and a.min() >= 0 and a.max() <= 1
    assert a.std(0).max() > 0.01  # not a flat colour


def test_parts_painting_uses_its_palette():
    pts, nrm = box_surface()
    pal = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], np.float32)
    rgb = paint(pts, nrm, Painting("parts", pal, axis=1))
    assert np.array_equal(rgb, pal[geometric_parts(pts, nrm, 1)])
    with pytest.raises(ValueError, match="unknown painting"):
        Painting("plaid", pal)


def test_palette_finds_the_dominant_colours():
    rgb = np.concatenate([np.tile([[0.9, 0.1, 0.1]], (700, 1)), np.tile([[0.1, 0.2, 0.9]],
                                                                        (300, 1))])
    p = palette(rgb).reshape(4, 4)
    np.testing.assert_allclose(p[0], [0.9, 0.1, 0.1, 0.7], atol=1e-6)
    np.testing.assert_allclose(p[1], [0.1, 0.2, 0.9, 0.3], atol=1e-6)
    assert p[:, 3].sum() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        palette(np.zeros((0, 3)))


def _painted_batch(seed=0):
    from flow3d.appearance.head import collate_painted

    pts, nrm = box_surface(6000, seed)
    pts = pts * 1.2
    rgb = paint(pts, nrm, Painting("parts", np.array(
        [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], np.float32), axis=1))
    from flow3d.mesh.voxels import points_to_voxels

    coords = torch.unique(points_to_voxels(torch.from_numpy(pts), 16), dim=0)
    h = len(pts) // 2
    item = {"coords": coords, "points": torch.from_numpy(pts[:h]),
            "normals": torch.from_numpy(nrm[:h]), "colors": torch.from_numpy(rgb[:h]),
            "query_points": torch.from_numpy(pts[h:]), "query_normals": torch.from_numpy(nrm[h:]),
            "query_colors": torch.from_numpy(rgb[h:]), "palette": torch.from_numpy(palette(rgb))}
    return collate_painted([item], 16)


def test_appearance_vae_learns_a_painted_shape():
    torch.manual_seed(0)
    model = AppearanceVAE(resolution=16, width=16, latent_dim=4, enc_blocks=1, dec_blocks=1,
                          mlp_width=32)
    batch = _painted_batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        terms = appearance_loss(model, batch)
        first = first if first is not None else float(terms["psnr"])
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    assert float(terms["psnr"]) > first + 8 and float(terms["psnr"]) > 20
    with pytest.raises(ValueError, match="points/colors/normals"):
        model.encode(batch.voxels, batch.points, batch.colors[:, :2], batch.point_batch,
                     batch.normals)


def test_sparse_flow_takes_extra_features_and_a_vector_condition():
    from flow3d.mesh.sparse_flow import SparseLatentFlow

    torch.manual_seed(0)
    flow = SparseLatentFlow(4, (16, 32, 32), depth=1, heads=2, cond="vector", extra_dim=3,
                            vector_dim=5, cond_drop=0.5)
    coords = torch.stack(torch.meshgrid(*[torch.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    v = SparseVoxels(torch.cat([coords, coords + 5]), torch.repeat_interleave(
        torch.arange(2), len(coords)), 16, 2)
    x, extra = torch.randn(len(v), 4), torch.randn(len(v), 3)
    ctx = flow.context(vector=torch.randn(2, 5))
    assert ctx.shape == (2, 1, 32) and flow.null_context(2).shape == (2, 1, 32)
    torch.nn.init.normal_(flow.x_out.weight)  # zero-initialised: make the output depend
    out = flow(x, torch.tensor(0.3), v, ctx, extra)
    assert out.shape == x.shape
    # the extra features matter, and a shape's output ignores the other shape's features
    extra2 = extra.clone()
    extra2[len(coords):] += 1.0
    out2 = flow(x, torch.tensor(0.3), v, ctx, extra2)
    assert torch.allclose(out[: len(coords)], out2[: len(coords)], atol=1e-5)
    assert not torch.allclose(out[len(coords):], out2[len(coords):])
    with pytest.raises(ValueError, match="extra per-voxel features"):
        flow(x, torch.tensor(0.3), v, ctx)
    with pytest.raises(ValueError, match="vector"):
        flow.context(vector=torch.randn(2, 4))
    dropped = flow.drop_context(ctx, torch.Generator().manual_seed(1))
    assert dropped.shape == ctx.shape


def test_kmeans_and_part_correspondence():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 2, generator=g) * 0.05
    b = torch.randn(50, 2, generator=g) * 0.05 + 3.0
    labels = kmeans(torch.cat([a, b]), 2)
    assert len(set(labels[:50].tolist())) == 1 and labels[0] != labels[50]
    feats = torch.cat([a, b])
    assert torch.equal(part_correspondence(feats, feats, 2), torch.arange(100))
    # a target part the source lacks falls back to the nearest source voxel
    rows = part_correspondence(feats, a, 2)
    assert (rows < 50).all()


def test_sliced_wasserstein_of_a_translation():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4000, 3, generator=g)
    assert float(sliced_wasserstein(a, a)) == pytest.approx(0.0, abs=1e-6)
    shift = torch.tensor([0.3, 0.0, 0.0])
    # a translation by c moves every projection on d by c.d: SW2 = |c| sqrt(E (d_x)^2)
    sw = float(sliced_wasserstein(a, a + shift, projections=2000))
    assert sw == pytest.approx(0.3 / np.sqrt(3), rel=0.05)


def test_supervised_contrastive_prefers_grouped_embeddings():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    grouped = torch.eye(3)[labels] + 0.01 * torch.randn(6, 3, generator=torch.Generator()
                                                          .manual_seed(0))
    mixed = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])]
    assert supervised_contrastive(grouped, labels) < supervised_contrastive(mixed, labels)


def test_vertex_coloured_glb_keeps_colours_under_a_matte_material(tmp_path):
    import json
    import struct

    from flow3d.mesh.postprocess import export_mesh

    mesh = trimesh.creation.icosphere(2)
    rgba = np.concatenate([(np.abs(mesh.vertices) * 255).astype(np.uint8),
                           np.full((len(mesh.vertices), 1), 255, np.uint8)], 1)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=rgba)
    path = export_mesh(mesh, tmp_path / "c.glb")
    data = path.read_bytes()
    assert struct.unpack_from("<I", data, 8)[0] == len(data)  # the header's total length
    n = struct.unpack_from("<I", data, 12)[0]
    doc = json.loads(data[20 : 20 + n])
    prim = doc["meshes"][0]["primitives"][0]
    assert {"COLOR_0", "NORMAL"} <= set(prim["attributes"])
    assert doc["materials"][prim["material"]]["pbrMetallicRoughness"]["metallicFactor"] == 0.0
    back = list(trimesh.load(path, process=False).geometry.values())[0]
    assert np.array_equal(np.asarray(back.visual.vertex_attributes["color"]), rgba)
