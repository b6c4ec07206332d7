"""The rasterizer's 2D low-pass moved into the Gaussians (flow3d.splat.lowpass): the
smoothing is exact in 3D, the footprint is the finest view's pixel, and a baked scene renders
without a low-pass as the original did with one, and at 4x without falling apart."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flow3d.splat.cameras import Cameras
from flow3d.splat.gaussians import Gaussians
from flow3d.splat.lowpass import bake_low_pass, sampling_footprint
from flow3d.splat.render import render
from flow3d.splat.settings import RenderSettings


def _random(n: int, seed: int = 0, dtype=torch.float64) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(torch.randn(n, 3, generator=g, dtype=dtype),
                     torch.randn(n, 4, generator=g, dtype=dtype),
                     torch.randn(n, 3, generator=g, dtype=dtype) - 3,
                     torch.randn(n, generator=g, dtype=dtype),
                     torch.rand(n, 1, 3, generator=g, dtype=dtype))


def _camera(z: float = 0.0, f: float = 100.0, size: int = 64) -> Cameras:
    """Looking down +z from (0, 0, z) (OpenCV axes: world = camera, shifted)."""
    vm = torch.eye(4)[None].clone()
    vm[0, 2, 3] = -z
    return Cameras(Cameras.intrinsics(f, f, size / 2, size / 2)[None], vm, size, size)


@pytest.mark.parametrize("variance", [0.0, 0.01, "per-row"])
def test_smoothed_adds_the_variance_to_every_covariance(variance):
    g = _random(16)
    v = torch.rand(16, dtype=torch.float64) * 0.05 if variance == "per-row" else variance
    vv = torch.as_tensor(v, dtype=torch.float64).reshape(-1, 1, 1)
    expected = g.covariances() + vv * torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(g.smoothed(v).covariances(), expected)
    assert torch.equal(g.smoothed(v).opacity_logits, g.opacity_logits)
    with pytest.raises(ValueError, match="variance"):
        g.smoothed(-1e-3)


def test_smoothed_gradients_match_finite_differences():
    g = _random(5)
    v = torch.rand(5, dtype=torch.float64) * 0.1

    def f(log_scales, var):
        return dataclasses.replace(g, log_scales=log_scales).smoothed(var).log_scales

    assert torch.autograd.gradcheck(f, (g.log_scales.clone().requires_grad_(),
                                        v.clone().requires_grad_()))


def test_footprint_is_the_finest_view_that_sees_the_point():
    means = torch.tensor([[0.0, 0.0, 2.0],     # both cameras: the nearer (z 1 from it)
                          [0.0, 0.0, 0.0],     # behind the near camera: the far one, z 2
                          [3.0, 0.0, 2.0],     # outside the near one's frustum: far, z 4
                          [0.0, 0.0, -5.0]])   # behind both: the largest of all
    near, far = _camera(1.0), _camera(-2.0)
    cams = Cameras(torch.cat([near.K, far.K]), torch.cat([near.viewmats, far.viewmats]), 64, 64)
    fp = sampling_footprint(means, cams)
    torch.testing.assert_close(fp[:3], torch.tensor([1.0, 2.0, 4.0]) / 100)
    torch.testing.assert_close(fp[3], torch.tensor(6.0 / 100))
    assert sampling_footprint(torch.zeros(0, 3), cams).shape == (0,)


def _splat_plane(spacing_px: float, size: int = 64, z: float = 2.0, f: float = 100.0):
    """Gaussians a tenth of a pixel wide, one per ``spacing_px`` pixels on a fronto-parallel
    square at depth ``z`` filling the image's middle half: a decoder's output at 64^2."""
    pix = z / f
    n = int(size / 2 / spacing_px)
    ij = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1)
    xy = ((ij.reshape(-1, 2).float() + 0.5) * spacing_px - size / 4) * pix
    means = torch.cat([xy, torch.full((len(xy), 1), z)], dim=1)
    k = len(means)
    return Gaussians(means, torch.tensor([[1.0, 0, 0, 0]]).repeat(k, 1),
                     torch.full((k, 3), float(torch.log(torch.tensor(0.1 * pix)))),
                     torch.full((k,), 3.0), torch.full((k, 1, 3), 0.5))


def test_baked_scene_without_low_pass_renders_as_the_original_with_it():
    g, cam = _splat_plane(1.0), _camera()
    with torch.no_grad():
        a = render(g, cam, settings=RenderSettings(eps2d=0.1))
        b = render(bake_low_pass(g, cam, 0.1), cam, settings=RenderSettings(eps2d=0.0))
    assert (a.rgb - b.rgb).abs().max() < 0.02
    assert (a.alpha - b.alpha).abs().max() < 0.02


def test_baked_scene_renders_at_four_times_its_size_without_holes():
    """At 64^2 with eps2d 0.1, Gaussians a pixel apart look solid (every pixel centre is a
    Gaussian's); at 256^2 the raw ones are dots with empty pixels between them (the
    low-pass shrank with the pixels; mean alpha 0.10), the baked ones keep their 64^2 width
    and overlap (0.61, no pixel under 0.43: a Gaussian of 0.33 px spaced 1 px apart is
    ridged between its neighbours, as the 64^2 render is between its samples)."""
    g, cam = _splat_plane(1.0), _camera()
    inside = (slice(20, 44), slice(20, 44))
    big = (slice(80, 176), slice(80, 176))
    with torch.no_grad():
        native = render(g, cam, settings=RenderSettings(eps2d=0.1)).alpha[0][inside].mean()
        raw = render(g, cam.resized(4), settings=RenderSettings(eps2d=0.1)).alpha[0][big]
        baked = render(bake_low_pass(g, cam, 0.1), cam.resized(4),
                       settings=RenderSettings(eps2d=0.1)).alpha[0][big]
    assert native > 0.9
    assert raw.min() == 0.0 and raw.mean() < 0.2
    assert baked.min() > 0.4 and baked.mean() > 0.55


def test_bake_low_pass_edge_cases():
    g, cam = _splat_plane(2.0), _camera()
    assert bake_low_pass(g, cam, 0.0) is g
    empty = Gaussians.empty()
    assert len(bake_low_pass(empty, cam, 0.3)) == 0
    with pytest.raises(ValueError, match="eps2d"):
        bake_low_pass(g, cam, -0.1)


def test_resized_cameras_project_points_scaled():
    cam = _camera(size=32)
    big = cam.resized(3)
    assert (big.width, big.height) == (96, 96)
    p = torch.tensor([0.3, -0.2, 2.5])
    uv = (cam.K[0] @ p)[:2] / p[2]
    torch.testing.assert_close((big.K[0] @ p)[:2] / p[2], 3 * uv)
    for bad in (0, 1.5, -2):
        with pytest.raises(ValueError, match="factor"):
            cam.resized(bad)
