"""The fast rasterizers against their slow twin, the dense torch reference: forward values and
gradients w.r.t. every Gaussian parameter, over scene sizes, camera batches and hard cases."""

from __future__ import annotations

import warnings

import pytest
import torch

from flow3d.splat import Cameras, Gaussians, RenderSettings, backend_cpu, render, sh
from flow3d.splat.project import project

FIELDS = ("means", "quats", "log_scales", "opacity_logits", "sh")


def random_gaussians(n: int, seed: int = 0, spread: float = 0.5, log_scale: float = -3.0,
                     degree: int = 1, dtype=torch.float64) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(torch.randn(n, 3, generator=g) * spread, torch.randn(n, 4, generator=g),
                     torch.randn(n, 3, generator=g) * 0.3 + log_scale,
                     torch.randn(n, generator=g) * 1.5,
                     torch.randn(n, sh.num_coeffs(degree), 3, generator=g) * 0.3).to(dtype)


def loss_weights(out, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in (out.rgb, out.alpha,
                                                                       out.depth)]


def render_and_grad(gaussians: Gaussians, cameras: Cameras, backend: str,
                    settings: RenderSettings):
    leaves = [getattr(gaussians, f).detach().clone().requires_grad_(True) for f in FIELDS]
    out = render(Gaussians(*leaves), cameras, backend=backend, settings=settings)
    w_rgb, w_a, w_d = loss_weights(out)
    loss = (out.rgb * w_rgb).sum() + (out.alpha * w_a).sum() + 0.1 * (out.depth * w_d).sum()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return out, [torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves)]


def assert_matches_reference(gaussians, cameras, settings=None, atol=1e-9, backend="cpu"):
    settings = settings or RenderSettings()
    ref, ref_grads = render_and_grad(gaussians, cameras, "torch", settings)
    out, grads = render_and_grad(gaussians, cameras, backend, settings)
    for name in ("rgb", "alpha", "depth"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), atol=atol, rtol=0,
                                   msg=lambda m, n=name: f"{n}: {m}")
    for name, g, r in zip(FIELDS, grads, ref_grads):
        scale = max(1.0, r.abs().max().item())
        torch.testing.assert_close(g, r, atol=atol * scale, rtol=1e-6,
                                   msg=lambda m, n=name: f"grad {n}: {m}")
    return out


@pytest.mark.parametrize("n, n_cams, width, height", [
    (1, 1, 16, 16), (50, 3, 45, 37), (500, 3, 45, 37), (500, 1, 70, 20)])
def test_cpu_matches_reference_float64(n, n_cams, width, height):
    cams = Cameras.orbit(n_cams, radius=3.0, width=width, height=height)
    gs = random_gaussians(n, seed=n)
    if n == 1:  # put the single Gaussian in view, large enough to cover tiles
        gs = Gaussians(gs.means * 0, gs.quats, gs.log_scales + 1.0, gs.opacity_logits, gs.sh)
    out = assert_matches_reference(gs, cams, RenderSettings(background=(0.2, 0.5, 0.9)))
    assert out.alpha.max() > 0.1  # the scene is not empty


def test_cpu_matches_reference_float32():
    cams = Cameras.orbit(3, radius=3.0, width=45, height=37)
    gs = random_gaussians(300, seed=3, dtype=torch.float32)
    settings = RenderSettings()
    ref, ref_grads = render_and_grad(gs, cams, "torch", settings)
    out, grads = render_and_grad(gs, cams, "cpu", settings)
    torch.testing.assert_close(out.rgb, ref.rgb, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.alpha, ref.alpha, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.depth, ref.depth, atol=1e-4, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-4 * max(1.0, r.abs().max().item()), rtol=1e-3)


def hard_scene(cams: Cameras) -> Gaussians:
    """Behind the camera, straddling the image border, extremely thin, huge, zero opacity."""
    base = random_gaussians(40, seed=7, spread=1.2)  # many cross the border
    means = base.means.clone()
    log_scales = base.log_scales.clone()
    logits = base.opacity_logits.clone()
    centers = cams.centers.to(means.dtype)
    means[0] = centers[0] * 1.3  # behind camera 0, in front of the others
    means[1] = centers[0] * 0.999  # just in front of camera 0's near plane region
    log_scales[2] = torch.tensor([-9.0, -2.0, -2.0])  # needle
    log_scales[3] = torch.tensor([-9.0, -9.0, -2.0])
    log_scales[4] = torch.tensor([0.7, 0.5, 0.6])  # covers every image
    logits[5:10] = -30.0  # invisible
    logits[10] = 8.0  # saturates alpha_max
    return Gaussians(means, base.quats, log_scales, logits, base.sh)


def test_cpu_hard_cases_match_reference():
    cams = Cameras.orbit(3, radius=3.0, width=41, height=30)
    assert_matches_reference(hard_scene(cams), cams, RenderSettings(background=(1.0, 0.0, 0.3)))


def test_empty_scene_is_background():
    cams = Cameras.orbit(2, radius=3.0, width=20, height=12)
    settings = RenderSettings(background=(0.1, 0.2, 0.3))
    for backend in ("torch", "cpu"):
        out = render(Gaussians.empty(1, dtype=torch.float64), cams, backend=backend,
                     settings=settings)
        assert out.rgb.shape == (2, 12, 20, 3)
        torch.testing.assert_close(out.rgb, torch.tensor(settings.background).double().expand(
            2, 12, 20, 3))
        assert (out.alpha == 0).all() and (out.depth == 0).all()


def test_cpu_image_does_not_depend_on_tile_size():
    cams = Cameras.orbit(2, radius=3.0, width=33, height=29)
    gs = random_gaussians(200, seed=11, dtype=torch.float64)
    outs = [render(gs, cams, backend="cpu", settings=RenderSettings(tile_size=t))
            for t in (1, 5, 16, 64)]
    for o in outs[1:]:
        torch.testing.assert_close(o.rgb, outs[0].rgb, atol=1e-12, rtol=0)


def test_cpu_threads_give_the_same_image():
    cams = Cameras.orbit(2, radius=3.0, width=40, height=40)
    gs = random_gaussians(300, seed=5, dtype=torch.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, g1 = render_and_grad(gs, cams, "cpu", RenderSettings())
        torch.set_num_threads(2)
        two, g2 = render_and_grad(gs, cams, "cpu", RenderSettings())
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one.rgb, two.rgb)  # tiles are independent; reductions run per camera
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


def test_gradcheck_through_the_cpu_function():
    lib = backend_cpu.load_library()
    if lib is None:
        pytest.skip("cpu rasterizer not compiled")
    cams = Cameras.orbit(1, radius=3.0, width=11, height=9)
    gs = random_gaussians(4, seed=2, log_scale=-1.8)
    gs = Gaussians(gs.means * 0.2, gs.quats, gs.log_scales, gs.opacity_logits.clamp(-1, 1.5),
                   gs.sh)
    settings = RenderSettings(background=(0.3, 0.6, 0.1))
    p = project(gs, cams)
    assert (p.radii > 0).all()
    inputs = [t.detach().clone().requires_grad_(True) for t in
              (p.means2d, p.conics, p.colors, p.opacities, p.depths)]

    def fn(*xs):
        return backend_cpu.RasterizeTiles.apply(*xs, p.radii, cams, settings, lib)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_missing_compiler_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(backend_cpu, "_lib", None)
    monkeypatch.setattr(backend_cpu, "_failed", None)
    monkeypatch.setattr(backend_cpu, "_compiler", lambda: None)
    cams = Cameras.orbit(1, radius=3.0, width=16, height=16)
    gs = random_gaussians(20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = render(gs, cams, backend="cpu")
        render(gs, cams, backend="cpu")
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1 and "\n" not in msgs[0] and "dense torch reference" in msgs[0]
    torch.testing.assert_close(out.rgb, render(gs, cams, backend="torch").rgb)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat needs CUDA")
@pytest.mark.parametrize("n, n_cams", [(50, 1), (500, 3)])
def test_gsplat_matches_reference(n, n_cams):
    pytest.importorskip("gsplat")
    cams = Cameras.orbit(n_cams, radius=3.0, width=45, height=37)
    gs = random_gaussians(n, seed=n, dtype=torch.float32)
    # gsplat clamps alpha at 0.999 and bins by its own radii: compare with the same clamp
    settings = RenderSettings(alpha_max=0.999, background=(0.2, 0.5, 0.9))
    ref, ref_grads = render_and_grad(gs, cams, "torch", settings)
    out, grads = render_and_grad(gs.to("cuda"), cams.to("cuda"), "gsplat", settings)
    torch.testing.assert_close(out.rgb.cpu(), ref.rgb, atol=2e-3, rtol=0)
    torch.testing.assert_close(out.alpha.cpu(), ref.alpha, atol=2e-3, rtol=0)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.cpu(), r, atol=2e-2 * max(1.0, r.abs().max().item()),
                                   rtol=2e-2)


def test_gsplat_without_cuda_is_one_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    from flow3d.errors import Flow3dError

    with pytest.raises(Flow3dError, match="gsplat") as info:
        render(random_gaussians(3), Cameras.orbit(1, radius=3.0, width=8, height=8),
               backend="gsplat")
    assert "\n" not in str(info.value)
