"""The sparse-voxel SDF-VAE: sparse convolution against its dense twin, decoder shapes and
gradients, a tiny model fitting one shape, watertight extraction from active voxels, the
checkpoint round trip through the ``mesh_svae`` head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flow3d.mesh.extract import extract_hierarchical
from flow3d.mesh.sdf import sphere_sdf, torus_sdf
from flow3d.mesh.sparse_vae import (
    SparseBatch,
    SparseConv3d,
    SparseSDFVAE,
    decode_sparse,
    masked_sdf_fn,
    sparse_conv_dense,
    svae_loss,
)
from flow3d.mesh.vae import VAELossWeights
from flow3d.mesh.voxels import SparseVoxels, active_voxels, corner_points

ROOT = Path(__file__).resolve().parents[2]
R = 16  # a small grid keeps these tests fast


def _shape(sdf, R=R, n=4000, seed=0):
    """Active voxels, surface points/normals and near-surface queries of an analytic SDF."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(60000, 3, generator=g) * 2 - 1
    x.requires_grad_(True)
    for _ in range(8):  # project random points onto the zero level set
        s = sdf(x)
        (gr,) = torch.autograd.grad(s.sum(), x)
        x = (x - s[:, None] * gr / gr.norm(dim=1, keepdim=True)).detach().requires_grad_(True)
    s = sdf(x)
    (gr,) = torch.autograd.grad(s.sum(), x)
    x = x.detach()
    pts = x[s.detach().abs() < 1e-4][:n]
    nrm = torch.nn.functional.normalize(gr[s.detach().abs() < 1e-4][:n], dim=1)
    corner = sdf(torch.from_numpy(corner_points(R)).float()).numpy()
    coords = torch.from_numpy(active_voxels(pts.numpy(), R, corner_sdf=corner))
    q = pts[torch.randint(len(pts), (2048,), generator=g)]
    q = q + 0.03 * torch.randn(q.shape, generator=g)
    return coords, pts, nrm, q, sdf(q)


def _batch(shapes) -> SparseBatch:
    def cat(k):
        return torch.cat([s[k] for s in shapes])

    def idx(k):
        return torch.cat([torch.full((len(s[k]),), i) for i, s in enumerate(shapes)])

    return SparseBatch(SparseVoxels(cat(0), idx(0), R, len(shapes)), cat(1), cat(2), idx(1),
                       cat(3), cat(4), idx(3))


@pytest.mark.parametrize("c_in,c_out,shapes", [(1, 1, 1), (5, 7, 2), (8, 3, 3)])
def test_sparse_conv_matches_dense_conv3d(c_in, c_out, shapes):
    g = torch.Generator().manual_seed(c_in)
    coords = torch.randint(0, R, (400, 3), generator=g)
    batch = torch.randint(0, shapes, (400,), generator=g)
    key = torch.unique(((batch * R + coords[:, 0]) * R + coords[:, 1]) * R + coords[:, 2])
    v = SparseVoxels(torch.stack([(key // R**2) % R, (key // R) % R, key % R], 1), key // R**3,
                     R, shapes)
    conv = SparseConv3d(c_in, c_out)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(len(v), c_in, requires_grad=True)
    y = conv(x, v.neighbors())
    y_ref = sparse_conv_dense(x, v, conv.weight, conv.bias)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    gy = torch.randn_like(y)
    g1 = torch.autograd.grad(y, (x, conv.weight), gy)
    g2 = torch.autograd.grad(y_ref, (x, conv.weight), gy)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_encoder_decoder_shapes_and_gradients():
    torch.manual_seed(0)
    model = SparseSDFVAE(resolution=R, width=16, latent_dim=8, enc_blocks=1, dec_blocks=1)
    b = _batch([_shape(sphere_sdf), _shape(torus_sdf)])
    z, mu, logvar = model.encode(b.voxels, b.surface_points, b.surface_normals, b.surface_batch)
    assert z.shape == mu.shape == logvar.shape == (len(b.voxels), 8)
    feats = model.decode(z, b.voxels)
    assert feats.shape == (len(b.voxels), 16)
    p = b.query_points.clone().requires_grad_(True)
    s = model.query(feats, b.voxels, p, b.query_batch)
    assert s.shape == (len(p),) and torch.isfinite(s).all()
    (gp,) = torch.autograd.grad(s.sum(), p, create_graph=True)
    assert gp.shape == p.shape and torch.isfinite(gp).all()
    gp.norm(dim=1).sum().backward()  # double backward reaches the encoder
    assert model.point_mlp[0].weight.grad is not None
    assert model.sdf_mlp[0].weight.grad.abs().sum() > 0


def test_field_is_continuous_across_voxels():
    """Periodic query features and trilinear weights: no jump at voxel boundaries."""
    torch.manual_seed(0)
    model = SparseSDFVAE(resolution=R, width=16, enc_blocks=1, dec_blocks=1)
    coords, pts, nrm, _, _ = _shape(sphere_sdf)
    v = SparseVoxels(coords, torch.zeros(len(coords), dtype=torch.long), R, 1)
    z, _, _ = model.encode(v, pts, nrm, torch.zeros(len(pts), dtype=torch.long), sample=False)
    fn = model.sdf_fn(z, v)
    h = model.h
    for k in range(3, R - 3):  # across voxel faces and voxel centres along a line
        for off in (0.0, 0.5):
            x = -model.bounds + (k + off) * h
            p = torch.tensor([[x - 1e-5, 0.02, 0.5], [x + 1e-5, 0.02, 0.5]])
            a, b = fn(p)
            assert abs(float(a - b)) < 1e-3


def test_tiny_model_fits_one_shape():
    torch.manual_seed(0)
    model = SparseSDFVAE(resolution=R, width=16, enc_blocks=1, dec_blocks=1, mlp_width=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    b = _batch([_shape(torus_sdf)])
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        out = svae_loss(model, b, generator=g, weights=VAELossWeights(kl=1e-5), num_grad=64)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["sdf_l1"].detach()))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert float(model.latent_std.sub(1).abs().max()) > 0  # running statistics moved


def test_fit_loss_drops_quickly():
    """The fast form of the overfit test: 15 steps on one shape lower the SDF error."""
    torch.manual_seed(0)
    model = SparseSDFVAE(resolution=R, width=16, enc_blocks=1, dec_blocks=1, mlp_width=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    b = _batch([_shape(sphere_sdf, n=1500)])
    g = torch.Generator().manual_seed(0)
    first = last = None
    for _ in range(15):
        out = svae_loss(model, b, generator=g, num_grad=32)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = float(out["loss"].detach()) if first is None else first
        last = float(out["loss"].detach())
    assert last < 0.6 * first
    assert set(out) >= {"sdf_l1", "sdf_l2", "normal", "eikonal", "kl", "loss"}


def test_extraction_from_active_voxels_is_watertight():
    Rg = 32
    coords, *_ = _shape(lambda p: sphere_sdf(p, 0.6), R=Rg)
    c = coords.numpy()
    # exact field: the same triangles as the whole-grid hierarchical extraction
    fn = masked_sdf_fn(lambda p: sphere_sdf(p, 0.6), c, Rg, 1.125, 0.1)
    res = extract_hierarchical(fn, 128, coarse=Rg, bounds=1.125, start_cells=c)
    ref = extract_hierarchical(lambda p: sphere_sdf(p, 0.6), 128, coarse=Rg, bounds=1.125)
    assert res.mesh.is_watertight and len(res.faces) == len(ref.faces)
    assert res.n_queries < ref.n_queries
    # a field that is wrong at the edge of the active set (too big a sphere) is capped there
    fn = masked_sdf_fn(lambda p: sphere_sdf(p, 0.75), c, Rg, 1.125, 0.1)
    res = extract_hierarchical(fn, 128, coarse=Rg, bounds=1.125, start_cells=c)
    assert res.mesh.is_watertight and len(res.faces) > 0


def test_decode_sparse_untrained_model_is_watertight():
    torch.manual_seed(0)
    model = SparseSDFVAE(resolution=R, width=16, enc_blocks=1, dec_blocks=1).eval()
    coords, pts, nrm, _, _ = _shape(sphere_sdf)
    v = SparseVoxels(coords, torch.zeros(len(coords), dtype=torch.long), R, 1)
    _, mu, _ = model.encode(v, pts, nrm, torch.zeros(len(pts), dtype=torch.long), sample=False)
    with torch.no_grad():
        model.sdf_mlp[-1].bias.fill_(-0.05)  # everything inside: capped at the set's border
    res = decode_sparse(model, mu, coords, 64)
    assert len(res.faces) > 0 and res.mesh.is_watertight
    with pytest.raises(ValueError, match="multiple"):
        decode_sparse(model, mu, coords, 40)


def test_checkpoint_round_trip(tmp_path):
    from flow3d.engine.checkpoint import load_model, write_checkpoint
    from flow3d.engine.config import load_recipe
    from flow3d.engine.heads import get_head

    recipe = load_recipe(ROOT / "recipes" / "mesh" / "svae_cpu.yaml",
                         ["model.width=16", "model.resolution=16"])
    head = get_head(recipe.head)(recipe)
    torch.manual_seed(0)
    model = head.build_model()
    with torch.no_grad():
        model.latent_std.fill_(2.5)
    write_checkpoint(tmp_path / "ck", model_state=model.state_dict(), ema_state=None,
                     recipe=recipe, step=3)
    loaded = load_model(tmp_path / "ck")
    assert loaded.recipe.head == "mesh_svae" and loaded.step == 3
    b = _batch([_shape(sphere_sdf, n=800)])
    model.eval()
    outs = []
    for m in (model, loaded.model):
        _, mu, _ = m.encode(b.voxels, b.surface_points, b.surface_normals, b.surface_batch,
                            sample=False)
        outs.append(m.query(m.decode(mu, b.voxels), b.voxels, b.query_points, b.query_batch))
    torch.testing.assert_close(outs[0], outs[1])
    assert float(loaded.model.latent_std[0]) == 2.5


def test_voxel_cache_and_dataset(tmp_path):
    """One small mesh through the SDF cache, the voxel cache and a collated batch."""
    import trimesh

    from flow3d.mesh.data import build_mesh_cache
    from flow3d.mesh.sparse_head import SparseMeshDataset, build_voxel_cache, collate_sparse

    path = tmp_path / "class1" / "m1.obj"
    path.parent.mkdir()
    sphere = trimesh.creation.icosphere(2, radius=0.5)
    sphere.invert()  # inward face normals: the cache must orient them out of the solid
    sphere.export(path)
    build_mesh_cache([path], tmp_path / "cache", n_surface=1024, n_near=2048, n_volume=512,
                     root=tmp_path, progress=False)
    report = build_voxel_cache(tmp_path / "cache", 16, per_voxel=2, progress=False)
    assert report.kept == ["class1__m1"] and not report.skipped
    ds = SparseMeshDataset(tmp_path / "cache", 16, n_surface=512, n_query=256)
    item = ds[0]
    occ = np.zeros((16,) * 3, bool)
    c = item["coords"].numpy()
    occ[c[:, 0], c[:, 1], c[:, 2]] = True
    q = np.floor((item["query_points"].numpy() + 1.125) / (2.25 / 16)).astype(int)
    assert item["query_points"].shape == (256, 3) and occ[q[:, 0], q[:, 1], q[:, 2]].all()
    outward = (item["surface_normals"] * item["surface_points"]).sum(1)
    assert (outward > 0).all()
    b = collate_sparse([item, ds[0]], 16)
    assert b.voxels.num_shapes == 2 and len(b.voxels) == 2 * len(c)
    assert b.query_batch.tolist() == [0] * 256 + [1] * 256


def test_orient_normals_follows_the_target_solid():
    import trimesh

    from flow3d.mesh.data import sample_surface
    from flow3d.mesh.sparse_vae import orient_normals

    mesh = trimesh.creation.icosphere(2, radius=0.5)
    pts, nrm = sample_surface(mesh, 500, np.random.default_rng(0))
    flipped = nrm.copy()
    flipped[::3] *= -1  # inconsistent winding
    out = orient_normals(mesh, pts, flipped)
    np.testing.assert_allclose(out, nrm, atol=1e-6)
