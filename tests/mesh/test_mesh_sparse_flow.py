"""The two-stage sparse-voxel generator: voxel pyramids, patching, the sparse U-Net's
independence of row order and of the other shapes in a batch, both heads learning a batch,
generation end to end, and local editing that keeps everything outside the box exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flow3d.mesh.sparse_flow import (
    SparseLatentFlow,
    StructureFlow,
    coords_to_grid,
    grid_to_coords,
    patchify,
    unpatchify,
)
from flow3d.mesh.voxels import SparseVoxels

trimesh = pytest.importorskip("trimesh")
ROOT = Path(__file__).resolve().parents[2]


def _random_voxels(n_shapes=3, R=16, p=0.15, seed=0) -> SparseVoxels:
    g = torch.Generator().manual_seed(seed)
    coords, batch = [], []
    for b in range(n_shapes):
        occ = torch.rand(R, R, R, generator=g) < p
        c = torch.nonzero(occ)
        coords.append(c)
        batch.append(torch.full((len(c),), b))
    return SparseVoxels(torch.cat(coords), torch.cat(batch), R, n_shapes)


# ---- building blocks ---------------------------------------------------------------------------
def test_coarsen_matches_a_dense_twin():
    v = _random_voxels()
    coarse, parent = v.coarsen()
    assert coarse.resolution == 8
    # every parent once, and each voxel's parent row holds coords // 2 of the same shape
    dense = {(int(b), *map(int, c)) for b, c in zip(v.batch, v.coords // 2)}
    got = {(int(b), *map(int, c)) for b, c in zip(coarse.batch, coarse.coords)}
    assert got == dense and len(coarse) == len(dense)
    torch.testing.assert_close(coarse.coords[parent], v.coords // 2)
    torch.testing.assert_close(coarse.batch[parent], v.batch)


def test_patchify_round_trip_and_structure_grid():
    g = torch.rand(2, 16, 16, 16) > 0.5
    x = patchify(g, 4)
    assert x.shape == (2, 64, 64)
    # a patch is a contiguous 4^3 block
    torch.testing.assert_close(x[0, 0].reshape(4, 4, 4), g[0, :4, :4, :4])
    torch.testing.assert_close(unpatchify(x, 4), g)
    model = StructureFlow(16, 4, width=16, heads=2, depth=1, cond="none")
    assert torch.equal(model.to_grid(model.from_grid(g)), g)
    coords = grid_to_coords(g[0])
    assert torch.equal(coords_to_grid(coords, 16), g[0])


def test_occupancy_field_is_a_signed_distance_whose_sign_is_the_occupancy():
    from flow3d.mesh.sparse_flow import FIELD_TRUNCATION, occupancy_field

    g = torch.zeros(3, 16, 16, 16, dtype=torch.bool)
    g[0, 4:12, 4:12, 4:12] = True  # a cube: 8 voxels thick
    g[1, 7:9] = True  # a slab 2 voxels thick
    f = occupancy_field(g)  # g[2] empty
    assert torch.equal(f < 0, g) and f.abs().max() <= 1
    h = 1 / FIELD_TRUNCATION
    assert f[0, 4, 8, 8] == pytest.approx(-0.5 * h)  # active, on the border
    assert f[0, 3, 8, 8] == pytest.approx(0.5 * h)  # inactive, next to it
    assert f[0, 6, 8, 8] == pytest.approx(-2.5 * h)  # two voxels deeper
    assert f[0, 0, 8, 8] == pytest.approx(3.5 * h)
    assert f[1, 0, 0, 0] == 1.0 and (f[2] == 1).all()  # truncated; empty grid all outside


def _flow(cond="none", seed=0) -> SparseLatentFlow:
    torch.manual_seed(seed)
    model = SparseLatentFlow(8, (16, 32, 32), depth=1, heads=2, cond=cond, num_classes=3)
    with torch.no_grad():  # zero-initialised outputs would make every check trivially true
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.1)
    return model.eval()


def test_sparse_flow_is_independent_of_row_order():
    v = _random_voxels()
    model = _flow()
    x = torch.randn(len(v), 8)
    t = torch.tensor([0.2, 0.5, 0.9])
    out = model(x, t, v)
    perm = torch.randperm(len(v), generator=torch.Generator().manual_seed(1))
    v2 = SparseVoxels(v.coords[perm], v.batch[perm], v.resolution, v.num_shapes)
    out2 = model(x[perm], t, v2)
    torch.testing.assert_close(out2, out[perm], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cond", ["none", "class", "image"])
def test_sparse_flow_shapes_do_not_see_each_other(cond):
    """A shape's velocity is the same alone and in a batch (attention is per shape)."""
    v = _random_voxels(2)
    model = _flow(cond)
    x = torch.randn(len(v), 8)
    t = torch.tensor([0.3, 0.7])
    ctx = model.context(images=torch.rand(2, 1, 64, 64), labels=torch.tensor([0, 2]))
    out = model(x, t, v, ctx)
    rows = torch.nonzero(v.batch == 1).squeeze(-1)
    alone = SparseVoxels(v.coords[rows], torch.zeros(len(rows), dtype=torch.long), 16, 1)
    out1 = model(x[rows], t[1:], alone, None if ctx is None else ctx[1:])
    torch.testing.assert_close(out1, out[rows], atol=1e-5, rtol=1e-4)


def test_vary_tone_keeps_the_background_and_changes_the_object():
    from flow3d.mesh.sparse_gen_head import vary_tone

    img = torch.ones(4, 1, 16, 16)
    img[:, :, 4:12, 4:12] = 0.4
    out = vary_tone(img, torch.Generator().manual_seed(0))
    assert torch.equal(out[..., :4, :], img[..., :4, :])  # background stays 1
    obj = out[:, 0, 4:12, 4:12].mean((1, 2))
    assert obj.std() > 0.02 and (out[:, :, 4:12, 4:12] < 1).all()


# ---- the heads, end to end on four small meshes -----------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny untrained sparse VAE (16^3), both heads on four meshes, their checkpoints."""
    from flow3d.engine.checkpoint import write_checkpoint
    from flow3d.engine.config import load_recipe
    from flow3d.engine.heads import get_head

    tmp = tmp_path_factory.mktemp("sflow")
    meshes = {"class1/m1.obj": trimesh.creation.icosphere(2, radius=0.6),
              "class1/m2.obj": trimesh.creation.box((1.0, 0.6, 0.8)),
              "class2/m3.obj": trimesh.creation.cylinder(0.4, 1.2),
              "class2/m4.obj": trimesh.creation.torus(0.6, 0.2)}
    for name, m in meshes.items():
        (tmp / "meshes" / name).parent.mkdir(parents=True, exist_ok=True)
        m.export(tmp / "meshes" / name)
    data = [f"data.root={tmp / 'meshes'}", f"data.cache_dir={tmp / 'cache'}",
            "data.holdout_per_class=0", "data.cache_surface=2048", "data.cache_near=2048",
            "data.cache_volume=512", "data.n_surface=1024"]
    svae = load_recipe(ROOT / "recipes/mesh/svae_cpu.yaml",
                       ["model.width=16", "model.resolution=16", "model.dec_blocks=2", *data])
    torch.manual_seed(0)
    vae = get_head("mesh_svae")(svae).build_model()
    write_checkpoint(tmp / "svae", model_state=vae.state_dict(), ema_state=None, recipe=svae,
                     step=0)
    out = {"tmp": tmp, "meshes": tmp / "meshes"}
    occ = load_recipe(ROOT / "recipes/mesh/occvae.yaml", [*data, f"data.vae={tmp / 'svae'}",
                                                          "model.width=8", "model.latent_dim=4"])
    occ_head = get_head("mesh_occvae")(occ)
    torch.manual_seed(0)
    occ_model = occ_head.build_model()
    out["occvae"] = (occ, occ_head, occ_model)
    write_checkpoint(tmp / "occvae", model_state=occ_model.state_dict(), ema_state=None,
                     recipe=occ, step=0)
    for name, recipe, extra in [
        ("structure", "structure_class.yaml", ["model.width=32", "model.depth=1",
                                               "model.heads=2", "model.num_classes=2",
                                               f"data.occupancy_vae={tmp / 'occvae'}"]),
        ("slat", "slat.yaml", ["model.widths=[16, 32, 32]", "model.depth=1", "model.heads=2"]),
    ]:
        r = load_recipe(ROOT / "recipes/mesh" / recipe, [*data, f"data.vae={tmp / 'svae'}",
                                                         *extra])
        head = get_head(r.head)(r)
        torch.manual_seed(0)
        model = head.build_model()
        out[name] = (r, head, model)
    return out


def _fit(head, model, steps=40):
    """Adam on one fixed batch: the loss must fall (the head's data, loss and model learn)."""
    ds = head.train_dataset()
    batch = head.collate([ds[i] for i in range(len(ds))])
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    model.train()
    for step in range(steps):
        g = torch.Generator().manual_seed(step % 4)
        loss = head.loss(model, batch, g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def test_the_heads_learn_a_batch(tiny):
    for name in ("occvae", "structure", "slat"):
        _, head, model = tiny[name]
        losses = _fit(head, model)
        assert np.isfinite(losses).all()
        assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), (name, losses[:4], losses[-4:])


@pytest.fixture(scope="module")
def checkpoints(tiny):
    from flow3d.engine.checkpoint import write_checkpoint

    paths = {}
    for name in ("structure", "slat"):
        recipe, _, model = tiny[name]
        paths[name] = tiny["tmp"] / f"ck_{name}"
        write_checkpoint(paths[name], model_state=model.state_dict(), ema_state=None,
                         recipe=recipe, step=1)
    return paths


def test_generate_two_stage_writes_a_closed_mesh(tiny, checkpoints, tmp_path):
    from flow3d.mesh.pipeline import GenerateSettings, generate

    settings = GenerateSettings(label="1", ckpt=str(checkpoints["structure"]),
                                latent_ckpt=str(checkpoints["slat"]), steps=4, resolution=32,
                                out=str(tmp_path / "g.glb"))
    mesh = generate(settings)
    assert len(mesh.faces) > 0 and mesh.is_watertight
    assert (tmp_path / "g.glb").is_file()


def test_edit_keeps_everything_outside_the_box(tiny, checkpoints):
    """Voxels and latents outside the box are the input's bit for bit; the surface moves only
    within the decoder's reach of the box."""
    from scipy.spatial import cKDTree

    from flow3d.mesh.data import load_mesh, normalize_mesh
    from flow3d.mesh.pipeline import EditSettings, edit, load_generator
    from flow3d.mesh.sparse_generate import SampleOptions, box_mask, edit_margin, edit_shape
    from flow3d.mesh.sparse_vae import encode_mesh

    settings = EditSettings(mesh=str(tiny["meshes"] / "class1/m2.obj"), box="0.1,-1,-1,1,1,1",
                            label="0", ckpt=str(checkpoints["structure"]),
                            latent_ckpt=str(checkpoints["slat"]), steps=4, resolution=32)
    models = load_generator(settings.generate)
    vae = models.vae
    normed, _ = normalize_mesh(load_mesh(settings.mesh))
    coords, z = encode_mesh(vae, normed)
    R = vae.resolution
    grid = torch.stack(torch.meshgrid(*[torch.arange(R)] * 3, indexing="ij"), -1).reshape(-1, 3)
    inside = box_mask(grid, settings.box, vae).reshape(R, R, R)
    ctx = models.structure.model.context(labels=torch.tensor([0]))
    new_coords, new_z, _ = edit_shape(models, (coords, z), inside, ctx, {"label": "0"},
                                   SampleOptions(steps=4, latent_steps=2))
    out_old = ~inside[coords[:, 0], coords[:, 1], coords[:, 2]]
    out_new = ~inside[new_coords[:, 0], new_coords[:, 1], new_coords[:, 2]]
    assert torch.equal(coords[out_old], new_coords[out_new])
    assert torch.equal(z[out_old], new_z[out_new])
    # the meshes agree wherever the box is out of the decoder's reach
    result = edit(settings, models=models, reference=True)
    edited, unedited = result["mesh"], result["unedited"]
    _, norm = normalize_mesh(load_mesh(settings.mesh))
    pts = np.asarray(unedited.sample(20000, seed=0))
    p_n = norm.apply(pts)
    far = p_n[:, 0] < settings.box[0] - edit_margin(vae)
    assert far.sum() > 100
    d, _ = cKDTree(np.asarray(edited.vertices)).query(pts[far])
    d_ref, _ = cKDTree(np.asarray(unedited.vertices)).query(pts[far])
    assert np.abs(d - d_ref).max() < 1e-6
    assert edited.is_watertight


def test_drop_specks_keeps_large_pieces_and_the_largest():
    from flow3d.mesh.sparse_generate import drop_specks

    g = torch.zeros(16, 16, 16, dtype=torch.bool)
    g[2:10, 2:10, 2:10] = True  # 512 voxels
    g[12:15, 12:15, 12:15] = True  # 27 voxels: 5% of the set, kept
    g[0, 15, 0] = True  # a speck
    g[15, 0, 15] = True
    c = drop_specks(torch.nonzero(g), 16)
    assert len(c) == 512 + 27
    assert torch.equal(drop_specks(torch.nonzero(g), 16, fraction=0.5),
                       torch.nonzero(g[:10, :10, :10]))  # only the largest piece
