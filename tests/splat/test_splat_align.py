"""Camera refinement by silhouette, free-space and colour consistency: the batched losses
(all pairs; one camera at many places) are their pair-by-pair twin (values and gradients),
true cameras are the minimum, cameras turned off by 15 degrees come back on an object that is
not symmetric, the search finds cameras far from where they were, and restarts keep the run
whose cameras agree best."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flow3d.core.so3 import axis_angle_to_rotmat
from flow3d.splat.align import (
    AlignSettings,
    camera_hypotheses_loss,
    consistency_loss,
    consistency_loss_reference,
    refine_cameras,
    refinement_loss,
    view_maps,
    view_pixels,
    view_points,
)
from flow3d.splat.cameras import Cameras
from flow3d.splat.rays import relative_rotation_errors_deg


@pytest.fixture(scope="module")
def l_shape():
    """An L of two boxes (no symmetry a rotation could hide in), 6 views at 48^2: cameras,
    depth and colour (object on black) from the renderer ``flow3d splat views`` uses."""
    trimesh = pytest.importorskip("trimesh")
    from flow3d.splat.scenes import scene_cameras
    from flow3d.splat.views import render_mesh

    a = trimesh.creation.box((0.8, 0.25, 0.25))
    b = trimesh.creation.box((0.25, 0.6, 0.25))
    b.apply_translation((-0.275, 0.3, 0.1))
    mesh = trimesh.util.concatenate([a, b])
    mesh.apply_translation(-mesh.bounding_box.centroid)
    mesh.visual.face_colors = np.where(  # each box its own colour: colour says which is which
        (np.arange(len(mesh.faces)) < len(a.faces))[:, None], (200, 120, 60, 255),
        (40, 160, 220, 255)).astype(np.uint8)
    radius = float(np.linalg.norm(mesh.vertices, axis=1).max())
    cams = scene_cameras(np.random.default_rng(3), 6, radius=radius, size=48, fov_deg=40.0)
    try:
        rgba, depth = render_mesh([mesh], cams)
    except Exception as e:  # noqa: BLE001 - no GL here
        pytest.skip(f"no renderer: {e}")
    rgb = torch.from_numpy(rgba[..., :3].copy()).float() / 255 * torch.from_numpy(
        rgba[..., 3:] > 0)
    return cams.to(torch.float32), torch.from_numpy(depth)[..., None].float(), rgb


def _turned(cams: Cameras, degrees) -> Cameras:
    """Each camera turned about the world's up axis through the origin by ``degrees[i]``."""
    vm = cams.viewmats.clone()
    for i, deg in enumerate(degrees):
        m = torch.eye(4)
        m[:3, :3] = axis_angle_to_rotmat(torch.tensor([0.0, float(np.radians(deg)), 0.0])).T
        vm[i] = vm[i] @ m
    return Cameras(cams.K, vm, cams.width, cams.height)


def _loss_inputs(l_shape, empty: int, n: int, seed: int, with_colour: bool):
    """``(points, colours, maps)`` of the L's views with view ``empty`` blanked (a view
    without object takes no part)."""
    cams, depth, rgb = l_shape
    depth = depth.clone()
    depth[empty] = 0
    pixels, colours = view_pixels(depth, n, torch.Generator().manual_seed(seed),
                                  rgb if with_colour else None)
    pts = view_points(cams.K, pixels)
    assert torch.equal(pts[empty], torch.zeros_like(pts[empty]))
    assert (colours is None) != with_colour
    return pts, colours, view_maps(depth, rgb if with_colour else None)


@pytest.mark.parametrize("with_colour", [False, True])
def test_batched_loss_is_its_reference_in_values_and_gradients(l_shape, with_colour):
    cams = l_shape[0]
    s = AlignSettings()
    pts, colours, maps = _loss_inputs(l_shape, 2, 40, 0, with_colour)
    turned = _turned(cams, [10, -7, 0, 12, 4, -9])
    grads = []
    for fn in (consistency_loss, consistency_loss_reference):
        R = turned.viewmats[:, :3, :3].clone().requires_grad_(True)
        t = turned.viewmats[:, :3, 3].clone().requires_grad_(True)
        loss = fn(pts, colours, cams.K, R, t, maps, s)
        loss.backward()
        grads.append((loss.detach(), R.grad, t.grad))
    (l1, gr1, gt1), (l2, gr2, gt2) = grads
    assert l1 > 0
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gr1, gr2, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(gt1, gt2, rtol=1e-3, atol=1e-4)


def test_true_cameras_are_the_minimum(l_shape):
    cams, depth, rgb = l_shape
    s = AlignSettings()
    pixels, colours = view_pixels(depth, 200, torch.Generator().manual_seed(0), rgb)
    pts = view_points(cams.K, pixels)
    maps = view_maps(depth, rgb)

    def loss(c: Cameras) -> float:
        return float(consistency_loss(pts, colours, c.K, c.viewmats[:, :3, :3],
                                      c.viewmats[:, :3, 3], maps, s))

    # not 0: pixel-sized residuals at the silhouettes' edges, and the points a view cannot
    # see (hidden in it) count fully in the colour term
    at_truth = loss(cams)
    for deg, more in ((8, 0.25), (-8, 0.25), (20, 0.5), (-20, 0.5)):  # measured 0.36-0.77
        assert loss(_turned(cams, [0, deg, 0, 0, 0, 0])) > at_truth + more


def test_turned_cameras_come_back(l_shape):
    cams, depth, rgb = l_shape
    turned = _turned(cams, [0, 15, -12, 14, -15, 10])
    before = relative_rotation_errors_deg(turned, cams)
    refined = refine_cameras(turned, depth, rgb=rgb)
    after = relative_rotation_errors_deg(refined, cams)
    assert before.median() > 10
    assert after.median() < 3 and after.max() < 8
    # the views share the fitted cameras' median focal length, held there
    assert torch.allclose(refined.K[:, 0, 0], cams.K[:, 0, 0].median(), rtol=0.01)
    assert torch.equal(refine_cameras(turned, depth, AlignSettings(iters=0, turn_iters=0)).viewmats,
                       turned.viewmats)


def test_a_camera_turned_round_to_the_far_side_comes_back(l_shape):
    cams, depth, rgb = l_shape
    turned = _turned(cams, [0, 0, 180, 0, 0, 0])  # the fitted cameras' typical failure
    assert relative_rotation_errors_deg(turned, cams).max() > 90
    after = relative_rotation_errors_deg(refine_cameras(turned, depth, rgb=rgb), cams)
    assert after.max() < 5
    stuck = refine_cameras(turned, depth, AlignSettings(turns=(), grid_azimuths=0))  # no search
    assert relative_rotation_errors_deg(stuck, cams).max() > 30


def _moved_round_the_object(cams: Cameras, i: int, azimuth: float, elevation: float) -> Cameras:
    """Camera ``i`` carried to another azimuth and elevation (degrees, added to its own)
    about the origin, still looking at the origin: a place no turn about up reaches."""
    c = cams.to(torch.float64)
    eye = c.centers[i]
    r = float(eye.norm())
    az = math.atan2(float(eye[0]), float(eye[2])) + math.radians(azimuth)
    el = math.asin(float(eye[1]) / r) + math.radians(elevation)
    new = r * torch.tensor([[math.cos(el) * math.sin(az), math.sin(el),
                             math.cos(el) * math.cos(az)]], dtype=torch.float64)
    moved = Cameras.look_at(new, torch.zeros(1, 3), fov_deg=40.0, width=cams.width,
                            height=cams.height)
    vm = cams.viewmats.clone()
    vm[i] = moved.viewmats[0].to(vm.dtype)
    return Cameras(cams.K, vm, cams.width, cams.height)


def test_the_grid_search_finds_a_camera_far_from_where_it_was(l_shape):
    cams, depth, rgb = l_shape
    moved = _moved_round_the_object(cams, 3, 110.0, 35.0)
    assert relative_rotation_errors_deg(moved, cams).max() > 60
    # one round of the search, by the grid alone (measured: 1.3 deg; descent alone 87 deg)
    found = refine_cameras(moved, depth, AlignSettings(turns=(), rounds=1), rgb=rgb)
    assert relative_rotation_errors_deg(found, cams).max() < 5
    stuck = refine_cameras(moved, depth, AlignSettings(turns=(), grid_azimuths=0, rounds=1),
                           rgb=rgb)
    assert relative_rotation_errors_deg(stuck, cams).max() > 30


@pytest.mark.parametrize("with_colour", [False, True])
def test_hypotheses_of_one_camera_are_its_pairs_in_values_and_gradients(l_shape, with_colour):
    """:func:`camera_hypotheses_loss` scores H places of camera ``k`` at once: each is the
    pair-by-pair twin over the pairs ``k`` takes part in (``only=k``) with the camera there,
    values and gradients; and those pairs move camera ``k`` as the whole loss does."""
    cams = l_shape[0]
    s = AlignSettings()
    pts, colours, maps = _loss_inputs(l_shape, 4, 30, 2, with_colour)
    pts, maps = pts.double(), maps.double()  # float64: the sums' order differs
    colours = None if colours is None else colours.double()
    c = _turned(cams, [5, -3, 0, 8, 4, -6]).to(torch.float64)
    k = 1
    places = torch.stack([_turned(cams, [0, deg, 0, 0, 0, 0]).viewmats[k] for deg in
                          (-20, 0, 7, 90)]).double()
    Rk = places[:, :3, :3].clone().requires_grad_(True)
    tk = places[:, :3, 3].clone().requires_grad_(True)
    R, t = c.viewmats[:, :3, :3], c.viewmats[:, :3, 3]
    batched = camera_hypotheses_loss(pts, colours, c.K, R, t, maps, s, k, (Rk, tk))
    gR, gt = torch.autograd.grad(batched.sum(), [Rk, tk])
    assert batched.shape == (4,) and len(set(batched.tolist())) == 4
    for h in range(4):
        grads = []
        for fn, only in ((consistency_loss_reference, k), (consistency_loss, None)):
            Rh = R.clone().index_put((torch.tensor(k),), places[h, :3, :3]).requires_grad_(True)
            th = t.clone().index_put((torch.tensor(k),), places[h, :3, 3]).requires_grad_(True)
            loss = fn(pts, colours, c.K, Rh, th, maps, s, **({"only": only} if only else {}))
            grads.append((loss.detach(), *torch.autograd.grad(loss, [Rh, th])))
        (one, g1, g2), (whole, g3, g4) = grads
        assert 0 < one < whole
        torch.testing.assert_close(batched[h], one, rtol=1e-9, atol=1e-12)
        for a, b in ((gR[h], g1[k]), (gt[h], g2[k]), (g1[k], g3[k]), (g2[k], g4[k])):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
    # the view without object: nothing to score
    assert torch.equal(camera_hypotheses_loss(pts, colours, c.K, R, t, maps, s, 4, (Rk, tk)),
                       torch.zeros(4, dtype=torch.float64))


def test_refinement_loss_is_lowest_at_the_true_cameras(l_shape):
    cams, depth, rgb = l_shape
    at_truth = refinement_loss(cams, depth, rgb=rgb)
    for degrees in ([0, 0, 180, 0, 0, 0], [0, 10, 0, 0, 0, 0], [0, 0, 0, -10, 0, 0]):
        assert refinement_loss(_turned(cams, degrees), depth, rgb=rgb) > at_truth
    # its own sample of points: not the one a run with the same seed descended on
    s = AlignSettings(judge_points=AlignSettings().points)
    pixels, colours = view_pixels(depth, s.points, torch.Generator().manual_seed(s.seed), rgb)
    vm = _turned(cams, [0, 10, 0, 0, 0, 0]).viewmats
    on_descent_sample = float(consistency_loss(view_points(cams.K, pixels), colours, cams.K,
                                               vm[:, :3, :3], vm[:, :3, 3],
                                               view_maps(depth, rgb), s))
    assert refinement_loss(_turned(cams, [0, 10, 0, 0, 0, 0]), depth, s, rgb) != \
        pytest.approx(on_descent_sample, rel=1e-6)


def test_restarts_keep_the_run_whose_cameras_agree_best(l_shape):
    """``restarts=3`` returns, of the three single runs on the samples of seeds 0, 1, 2, the
    one :func:`refinement_loss` scores lowest (a cheap search, so that the runs differ)."""
    cams, depth, rgb = l_shape
    start = _turned(cams, [0, 0, 150, 0, -60, 0])
    cheap = dict(iters=15, turn_iters=4, rounds=1, grid_azimuths=6, grid_elevations=(0.0,),
                 grid_keep=1, points=25, judge_points=300)
    runs = [refine_cameras(start, depth, AlignSettings(seed=r, **cheap), rgb=rgb)
            for r in range(3)]
    losses = [refinement_loss(c, depth, AlignSettings(**cheap), rgb) for c in runs]
    assert len({round(v, 6) for v in losses}) == 3  # the samples led the runs apart
    best = refine_cameras(start, depth, AlignSettings(restarts=3, **cheap), rgb=rgb)
    assert torch.equal(best.viewmats, runs[int(np.argmin(losses))].viewmats)
    assert torch.equal(best.K, runs[int(np.argmin(losses))].K)


@pytest.mark.parametrize("field, value", [("restarts", 0), ("judge_points", 0)])
def test_align_settings_refuse_nonsense(field, value):
    from flow3d.options import ConfigError

    with pytest.raises(ConfigError, match=f"align.{field}"):
        AlignSettings(**{field: value})
