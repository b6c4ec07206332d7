"""Tiny mesh models: shapes, gradients, M selectable, a sphere is learnt, CFG weight 0."""

from __future__ import annotations

import math

import pytest
import torch

from flow3d.mesh.flow import LatentFlow
from flow3d.mesh.image_encoder import ImageEncoder, prepare_image
from flow3d.mesh.vae import SDFVAE, farthest_point_sample, vae_loss


def sphere_batch(b: int, n: int, q: int, radius: float = 0.6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d = torch.nn.functional.normalize(torch.randn(b, n, 3, generator=g), dim=-1)
    surface = radius * d  # [B, N, 3]
    queries = torch.rand(b, q, 3, generator=g) * 2 - 1  # [B, Q, 3]
    sdf = queries.norm(dim=-1) - radius  # [B, Q]
    return surface, d, queries, sdf


def tiny_vae(**kw) -> SDFVAE:
    torch.manual_seed(0)
    return SDFVAE(width=32, heads=2, latent_dim=4, enc_layers=1, dec_layers=1, num_freqs=4, **kw)


def test_vae_shapes_and_backward():
    vae = tiny_vae()
    s, n, q, d = sphere_batch(2, 128, 64)
    z, mu, logvar = vae.encode(s, n, 16, generator=torch.Generator().manual_seed(0))
    assert z.shape == mu.shape == logvar.shape == (2, 16, 4)
    assert vae.sdf(z, q).shape == (2, 64)
    terms = vae_loss(vae, s, n, q, d, generator=torch.Generator().manual_seed(0), num_latents=8)
    assert set(terms) >= {"sdf_l1", "sdf_l2", "normal", "eikonal", "kl", "sign", "loss"}
    terms["loss"].backward()
    grads = [p.grad for p in vae.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("m", [8, 32, 64])
def test_vae_num_latents_selectable_with_shared_weights(m):
    vae = tiny_vae()
    s, n, q, _ = sphere_batch(1, 128, 16)
    z, _, _ = vae.encode(s, n, m, sample=False)
    assert z.shape == (1, m, 4)
    assert vae.sdf(z, q).shape == (1, 16)


def test_vae_too_many_latents_is_an_error():
    vae = tiny_vae()
    s, n, _, _ = sphere_batch(1, 16, 4)
    with pytest.raises(ValueError, match="latent queries"):
        vae.encode(s, n, 32)


def test_farthest_point_sample_spreads_out():
    pts = torch.tensor([[[0.0, 0, 0], [0.01, 0, 0], [1.0, 0, 0], [0.0, 1, 0]]])
    idx = farthest_point_sample(pts, 3)
    assert sorted(idx[0].tolist()) == [0, 2, 3]


def test_vae_overfits_a_sphere():
    torch.manual_seed(0)
    vae = tiny_vae(truncation=0.2)
    opt = torch.optim.Adam(vae.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    s, n, q, d = sphere_batch(1, 128, 256)
    target = d.clamp(-0.2, 0.2)
    with torch.no_grad():
        before = (vae.sdf(vae.encode(s, n, 8, sample=False)[0], q) - target).abs().mean()
    for _ in range(30):
        terms = vae_loss(vae, s, n, q, d, generator=g, num_latents=8, num_grad=32)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    with torch.no_grad():
        after = (vae.sdf(vae.encode(s, n, 8, sample=False)[0], q) - target).abs().mean()
    assert after < 0.2 * before and after < 0.1, (before, after)


def test_sdf_fn_chunks_match_batched_query():
    vae = tiny_vae()
    s, n, q, _ = sphere_batch(1, 64, 100)
    z, _, _ = vae.encode(s, n, 8, sample=False)
    fn = vae.sdf_fn(z, chunk=7)
    torch.testing.assert_close(fn(q[0]), vae.sdf(z, q)[0].detach(), atol=1e-5, rtol=1e-5)


def test_image_encoder_tokens_and_prepare_image():
    enc = ImageEncoder(width=32, resolution=32, channels=8)
    assert enc(torch.rand(3, 1, 32, 32)).shape == (3, 16, 32)
    assert enc.pooled(torch.rand(3, 1, 32, 32)).shape == (3, 32)
    with pytest.raises(ValueError, match="images must be"):
        enc(torch.rand(3, 3, 32, 32))
    # a dark square on white, off-centre and in RGBA: cropped, centred, background white
    img = torch.ones(80, 120, 4)
    img[10:30, 70:90, :3] = 0.2
    out = prepare_image(img.numpy(), 32)
    assert out.shape == (1, 32, 32)
    assert out[0, 0, 0] == pytest.approx(1.0) and out[0, 16, 16] == pytest.approx(0.2, abs=0.02)
    # a black background is treated the same as white
    inv = prepare_image(1.0 - img[..., :3].numpy(), 32)
    assert inv[0, 0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("cond", ["none", "class", "image"])
def test_flow_shapes_and_t_broadcast(cond):
    torch.manual_seed(0)
    flow = LatentFlow(latent_dim=4, width=32, heads=2, depth=1, cond=cond, num_classes=3,
                      image_resolution=32, image_channels=8)
    x = torch.randn(2, 10, 4)
    if cond == "image":
        ctx = flow.context(images=torch.rand(2, 1, 32, 32))
    elif cond == "class":
        ctx = flow.context(labels=torch.tensor([0, 2]))
    else:
        ctx = None
    # zero-initialised output: perturb so the comparison below is not trivially 0 == 0
    for p in flow.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    v_vec = flow(x, torch.tensor([0.3, 0.3]), ctx)
    v_0d = flow(x, torch.tensor(0.3), ctx)
    assert v_vec.shape == x.shape
    torch.testing.assert_close(v_vec, v_0d)
    v_vec.square().sum().backward()


def test_flow_condition_dropout_and_null():
    flow = LatentFlow(latent_dim=4, width=32, heads=2, depth=1, cond="class", num_classes=3,
                      cond_drop=1.0)
    ctx = flow.context(labels=torch.tensor([0, 1]))
    dropped = flow.drop_context(ctx, torch.Generator().manual_seed(0))
    torch.testing.assert_close(dropped, flow.null_context(2))
    with pytest.raises(ValueError, match="labels"):
        flow.context(labels=torch.tensor([3]))


def test_cfg_weight_zero_equals_conditional():
    guidance = pytest.importorskip("flow3d.core.guidance", reason="core guidance not built yet")
    ClassifierFreeGuidance = guidance.ClassifierFreeGuidance  # noqa: N806

    torch.manual_seed(0)
    flow = LatentFlow(latent_dim=4, width=32, heads=2, depth=1, cond="class", num_classes=3)
    for p in flow.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    ctx = flow.context(labels=torch.tensor([1]))
    null = flow.null_context(1)
    x, t = torch.randn(1, 6, 4), torch.tensor(0.4)
    cond = lambda x, t: flow(x, t, ctx)  # noqa: E731
    uncond = lambda x, t: flow(x, t, null)  # noqa: E731
    torch.testing.assert_close(ClassifierFreeGuidance(cond, uncond, 0.0)(x, t), cond(x, t))
    guided = ClassifierFreeGuidance(cond, uncond, 2.0)(x, t)
    torch.testing.assert_close(guided, cond(x, t) + 2.0 * (cond(x, t) - uncond(x, t)))
    assert not math.isclose((guided - cond(x, t)).abs().max().item(), 0.0)
