"""The mesh heads end to end on tiny synthetic meshes: cache -> VAE (engine) -> flow head."""

from __future__ import annotations

import dataclasses

import pytest
import torch

trimesh = pytest.importorskip("trimesh")

from flow3d.engine.config import recipe_from_dict  # noqa: E402
from flow3d.mesh.head import MeshFlowHead, MeshVAEHead  # noqa: E402
from flow3d.mesh.postprocess import sdf_to_mesh  # noqa: E402
from flow3d.mesh.sdf import sphere_sdf  # noqa: E402


@pytest.fixture(scope="module")
def mesh_root(tmp_path_factory):
    """A CAPOD-like folder: two classes of two meshes (one of each held out)."""
    root = tmp_path_factory.mktemp("meshes")
    shapes = {
        "class1": [trimesh.creation.box((1, 1, 1)), trimesh.creation.box((1, 0.5, 0.8))],
        "class2": [trimesh.creation.icosphere(2, 1.0), trimesh.creation.icosphere(2, 0.7)],
    }
    k = 1
    for cls, meshes in shapes.items():
        (root / "capod" / cls).mkdir(parents=True)
        for m in meshes:
            m.export(root / "capod" / cls / f"m{k}.obj")
            k += 1
    return root


def tiny_sections(root, cache):
    data = dict(root=str(root), cache_dir=str(cache), holdout_per_class=1, n_surface=128,
                n_query=128, cache_surface=512, cache_near=512, cache_volume=256)
    trainer = dict(max_steps=2, batch_size=2, lr=1e-3, log_every=1, ckpt_every=2,
                   progress=False, out_dir=str(cache.parent / "run"))
    return data, trainer


@pytest.fixture(scope="module")
def vae_ckpt(mesh_root, tmp_path_factory):
    from flow3d.engine.train import train

    torch.set_num_threads(1)
    data, trainer = tiny_sections(mesh_root, tmp_path_factory.mktemp("vae") / "cache")
    recipe = recipe_from_dict({
        "head": "mesh_vae", "data": data, "trainer": trainer,
        "model": dict(width=32, heads=2, latent_dim=4, dec_layers=1, num_freqs=4,
                      num_latents=16, train_latents=[16, 8], num_grad=16),
        "sample": dict(num_latents=16, resolution=32),
    })
    head = MeshVAEHead(recipe)
    ds = head.train_dataset()
    assert len(ds) == 2  # one mesh per class held out
    batch = head.collate([ds[0], ds[1]])
    assert batch["surface_points"].shape == (2, 128, 3)
    terms = head.loss(head.build_model(), batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(terms["loss"])
    return train(recipe), data


def test_vae_head_trains_through_the_engine(vae_ckpt):
    from flow3d.engine.checkpoint import load_model

    ckpt, _ = vae_ckpt
    loaded = load_model(ckpt)
    assert loaded.recipe.head == "mesh_vae" and loaded.step == 2


@pytest.mark.parametrize("cond", ["class", "image"])
def test_flow_head_loss_and_latent_sampling(vae_ckpt, tmp_path, cond):
    ckpt, data = vae_ckpt
    recipe = recipe_from_dict({
        "head": "mesh_flow",
        "data": {**data, "vae": str(ckpt), "num_latents": 16},
        "model": dict(width=32, heads=2, depth=1, cond=cond, num_classes=2,
                      image_resolution=32, image_channels=8),
        "sample": dict(steps=3, cfg=2.0),
        "flow": {"time_sampler": {"name": "logit_normal"}},
    })
    head = MeshFlowHead(recipe)
    ds = head.train_dataset()
    assert len(ds) == 2 * 6  # two training meshes x six conditioning views
    item = ds[0]
    assert item["x_1"].shape == (16, 4) and item["image"].shape == (1, 32, 32)
    model = head.build_model()
    batch = head.collate([ds[i] for i in range(4)])
    out = head.loss(model, batch, torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    # the standardisation statistics of the training latents are now in the model
    assert model.latent_std.item() == pytest.approx(float(ds.latents.std()), rel=1e-5)
    ctx = head.context(model, batch)
    z = head.sample_latents(model, ctx, 4, seed=0)
    assert z.shape == (4, 16, 4) and torch.isfinite(z).all()


def test_sdf_to_mesh_is_one_watertight_piece_and_respects_budget():
    mesh = sdf_to_mesh(lambda p: sphere_sdf(torch.as_tensor(p, dtype=torch.float32), 0.6), 64,
                       faces=2000)
    assert mesh.is_watertight and len(mesh.split(only_watertight=False)) == 1
    assert len(mesh.faces) <= 2000
    radius = torch.as_tensor(mesh.vertices).norm(dim=-1)
    assert radius.mean().item() == pytest.approx(0.6, abs=0.02)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_vae_and_flow_train_on_gpu_and_decode_like_cpu(vae_ckpt, tmp_path):
    """The VAE loss (double backward, device generator) and the flow loss on CUDA; the
    decoder's SDF on CUDA equals the CPU's."""
    from flow3d.engine.checkpoint import load_model
    from flow3d.engine.train import train

    ckpt, data = vae_ckpt
    loaded = load_model(ckpt)
    trainer = dataclasses.replace(loaded.recipe.trainer, accelerator="gpu",
                                  out_dir=str(tmp_path / "vae_gpu"))
    train(loaded.recipe.replace(trainer=trainer))
    flow = recipe_from_dict({
        "head": "mesh_flow",
        "data": {**data, "vae": str(ckpt), "num_latents": 16},
        "model": dict(width=32, heads=2, depth=1, cond="image", num_classes=2,
                      image_resolution=32, image_channels=8),
        "trainer": dict(max_steps=2, batch_size=4, accelerator="gpu", progress=False,
                        out_dir=str(tmp_path / "flow_gpu"), ckpt_every=2, log_every=1),
    })
    train(flow)
    vae = loaded.model
    z = torch.randn(1, 16, 4, generator=torch.Generator().manual_seed(0))
    pts = torch.rand(4096, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ref = vae.sdf_fn(z)(pts)
    out = vae.cuda().sdf_fn(z.cuda())(pts.cuda())
    torch.testing.assert_close(out.cpu(), ref, atol=1e-4, rtol=1e-3)
