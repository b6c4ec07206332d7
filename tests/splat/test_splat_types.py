"""Gaussians, cameras and SH maths: round trips and invariances."""

from __future__ import annotations

import pytest
import torch

from flow3d.errors import DataError
from flow3d.splat import Cameras, Gaussians, render, sh


def random_rotation(seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=dtype))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_gaussians(n: int, degree: int = 3, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(torch.randn(n, 3, generator=g) * 0.5, torch.randn(n, 4, generator=g),
                     torch.randn(n, 3, generator=g) * 0.3 - 3.0, torch.randn(n, generator=g),
                     torch.randn(n, sh.num_coeffs(degree), 3, generator=g) * 0.3)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_rotation_is_exact(degree):
    r = random_rotation(degree)
    coeffs = torch.randn(sh.num_coeffs(degree), 3, dtype=torch.float64)
    dirs = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64), dim=-1)
    rotated = sh.sh_basis(degree, dirs) @ (sh.sh_rotation(r, degree) @ coeffs)
    expected = sh.sh_basis(degree, dirs @ r) @ coeffs  # f(R^T d)
    torch.testing.assert_close(rotated, expected, atol=1e-10, rtol=0)


def test_sh_degree_zero_is_the_dc_colour():
    rgb = torch.rand(7, 3)
    coeffs = sh.rgb_to_sh0(rgb)[:, None]
    torch.testing.assert_close(sh.sh_to_rgb(coeffs, torch.randn(7, 3)), rgb)


def test_rigid_transform_renders_the_same_from_the_moved_cameras():
    gs = random_gaussians(300)
    cams = Cameras.orbit(2, radius=3.0, width=40, height=32)
    r, t = random_rotation(5).float(), torch.tensor([0.1, -0.2, 0.3])
    moved = gs.transform(r, t)
    pose = torch.eye(4)
    pose[:3, :3], pose[:3, 3] = r, t
    moved_cams = Cameras(cams.K, cams.viewmats @ torch.linalg.inv(pose), 40, 32)
    a = render(gs, cams, backend="torch")
    b = render(moved, moved_cams, backend="torch")
    torch.testing.assert_close(a.rgb, b.rgb, atol=1e-4, rtol=0)
    torch.testing.assert_close(a.alpha, b.alpha, atol=1e-4, rtol=0)
    torch.testing.assert_close(moved.covariances(), r @ gs.covariances() @ r.T, atol=1e-6,
                               rtol=1e-4)


def test_indexing_masks_cat_and_degree():
    gs = random_gaussians(10, degree=1)
    assert len(gs[3]) == 1 and len(gs[2:5]) == 3 and len(gs[gs.opacities > 2.0]) == 0
    both = Gaussians.cat([gs, random_gaussians(4, degree=3)])
    assert len(both) == 14 and both.sh_degree == 3
    torch.testing.assert_close(both.sh[:10, 4:], torch.zeros(10, 12, 3))
    assert gs.with_sh_degree(0).sh.shape == (10, 1, 3)
    assert gs.to(torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="SH coefficients"):
        Gaussians(gs.means, gs.quats, gs.log_scales, gs.opacity_logits, torch.zeros(10, 5, 3))
    assert len(Gaussians.empty()) == 0


def test_check_finite_names_the_field():
    gs = random_gaussians(5)
    bad = Gaussians(gs.means, gs.quats, gs.log_scales.clone(), gs.opacity_logits, gs.sh)
    bad.log_scales[2, 1] = float("nan")
    with pytest.raises(DataError, match=r"scene.ply: log_scales .* row 2"):
        bad.check_finite("scene.ply")


def test_camera_conventions_round_trip():
    cams = Cameras.orbit(5, radius=2.5, elevation_deg=30.0, width=64, height=48)
    back = Cameras.from_camtoworld_gl(cams.camtoworld_gl(), cams.K, 64, 48)
    torch.testing.assert_close(back.viewmats, cams.viewmats, atol=1e-5, rtol=0)
    # look_at: the target projects to the image centre, in front of the camera
    target_c = cams.viewmats[:, :3, :3] @ torch.zeros(3) + cams.viewmats[:, :3, 3]
    assert (target_c[:, 2] > 0).all()
    torch.testing.assert_close(target_c[:, :2], torch.zeros(5, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(cams.centers.norm(dim=-1), torch.full((5,), 2.5))
    # OpenGL: the camera looks down its -z axis, y up
    c2w = cams.camtoworld_gl()
    forward = -c2w[:, :3, 2]
    torch.testing.assert_close(forward, -cams.centers / 2.5, atol=1e-5, rtol=0)
    assert (c2w[:, 1, 1] > 0).all()  # camera up has a positive world-y part
