"""Visual hulls (flow3d.splat.hull): the vectorised carve equals its one-ray-at-a-time twin,
never carves a pixel that sees the object, and carves most of the background."""

from __future__ import annotations

import pytest
import torch
from synthetic_scenes import sphere_scene

from flow3d.splat.dataset import backproject
from flow3d.splat.hull import (
    _cube_span,
    dilate,
    in_hull,
    outside_hull,
    outside_hull_reference,
    pixel_rays,
)


def _split(scene, known):
    cams = scene.cameras(0)
    novel = [v for v in range(len(cams)) if v not in known]
    return scene.mask[0, known, ..., 0] > 0, cams[known], cams[novel], novel


@pytest.mark.parametrize("views, known, size", [(5, [0, 1, 2], 12), (4, [0], 10),
                                                (6, [0, 2, 4], 9)])
def test_fast_carve_equals_reference(views, known, size):
    scene = sphere_scene(views=views, size=size, seed=views)
    masks, cams, query, _ = _split(scene, known)
    fast = outside_hull(masks, cams, query, samples=24)
    slow = outside_hull_reference(masks, cams, query, samples=24)
    assert torch.equal(fast, slow)


def test_carve_keeps_the_object_and_removes_background():
    scene = sphere_scene(views=8, size=32, seed=3)
    masks, cams, query, novel = _split(scene, [0, 2, 4, 6])
    out = outside_hull(dilate(masks, 1), cams, query)
    truth = scene.mask[0, novel, ..., 0] > 0
    assert not (out & truth).any()  # no pixel that sees the sphere is called background
    # every ray that misses the object's cube is background, and the hull carves more
    o, d = pixel_rays(query)
    _, _, meets_cube = _cube_span(o, d, 0.5)
    assert out[~meets_cube].all() and (out & meets_cube).sum() > 20
    # empty silhouettes carve every point a view sees; the rest of the cube stays
    empty = outside_hull(torch.zeros_like(masks), cams, query)
    assert empty.sum() >= out.sum()


def test_pixel_rays_meet_their_own_pixels():
    scene = sphere_scene(views=2, size=8)
    cams = scene.cameras(0)
    o, d = pixel_rays(cams)
    p = o[:, None, None, :] + 2.0 * d  # a point on every ray, back through the camera
    vm, K = cams.viewmats.double(), cams.K.double()
    cam = torch.einsum("cij,chwj->chwi", vm[:, :3, :3], p) + vm[:, None, None, :3, 3]
    u = K[:, 0, 0, None, None] * cam[..., 0] / cam[..., 2] + K[:, 0, 2, None, None]
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    assert torch.allclose(u, xs.double() + 0.5, atol=1e-9)
    assert torch.allclose(d.norm(dim=-1), torch.ones(2, 8, 8, dtype=torch.float64))


def test_dilate_and_shape_check():
    m = torch.zeros(1, 5, 5, dtype=torch.bool)
    m[0, 2, 2] = True
    assert dilate(m, 1).sum() == 9 and torch.equal(dilate(m, 0), m)
    scene = sphere_scene(views=2, size=8)
    with pytest.raises(ValueError, match="masks"):
        outside_hull(torch.zeros(1, 8, 8, dtype=torch.bool), scene.cameras(0),
                     scene.cameras(0))


def test_surface_points_are_in_the_hull_of_other_views():
    scene = sphere_scene(views=6, size=24, seed=5)
    cams = scene.cameras(0)
    pts, _ = backproject(scene.depth[0, 3:], cams[[3, 4, 5]])
    masks = dilate(scene.mask[0, :3, ..., 0] > 0, 1)
    assert len(pts) > 100 and in_hull(pts, masks, cams[[0, 1, 2]]).all()
    far = torch.tensor([[0.0, 0.0, 0.45], [3.0, 0.0, 0.0]], dtype=torch.float64)
    assert in_hull(far, masks, cams[[0, 1, 2]]).tolist() == [True, False]  # inside / off-cube


def test_complete_drops_generated_floaters_outside_the_hull():
    from flow3d.splat.splatflow import drop_outside_hull

    scene = sphere_scene(views=6, size=24, seed=5)
    rgb, depth = scene.rgb[0].clone(), scene.depth[0].clone()
    rgb[4, 1, 1], depth[4, 1, 1] = 0.7, 1.0  # a generated speck in a corner of a novel view
    rgb[5, 1, 1], depth[5, 1, 1] = 0.7, 1.0  # the same, but a known (warped) pixel
    generated = torch.zeros(6, 24, 24, dtype=torch.bool)
    generated[3:] = True
    generated[5, 1, 1] = False
    out_rgb, out_depth = drop_outside_hull(rgb, depth, scene.cameras(0), (0, 1, 2), generated)
    assert out_depth[4, 1, 1] == 0 and (out_rgb[4, 1, 1] == 0).all()
    assert out_depth[5, 1, 1] == 1.0  # only generated pixels are judged
    # the sphere's own pixels stay, and the known views are untouched
    keep = scene.depth[0, 3:, ..., 0] > 0
    assert torch.equal(out_depth[3:][keep], scene.depth[0, 3:][keep])
    assert torch.equal(out_rgb[:3], rgb[:3])


def test_the_cube_grows_for_objects_in_a_larger_frame():
    from dataclasses import replace

    from flow3d.splat.splatflow import drop_outside_hull, hull_bound

    scene = sphere_scene(views=6, size=24, seed=5)
    cams = scene.cameras(0)
    assert 0.5 <= hull_bound(scene.depth[0], cams, [0, 1, 2]) <= 0.53  # the unit cube, 5% margin
    # the same scene in a frame 3x larger: cameras and depths scaled, the sphere now radius 1.5
    vm = cams.viewmats.clone()
    vm[:, :3, 3] *= 3
    big = replace(cams, viewmats=vm)
    depth = scene.depth[0] * 3
    assert 1.5 < hull_bound(depth, big, [0, 1, 2]) < 1.7
    generated = torch.zeros(6, 24, 24, dtype=torch.bool)
    generated[3:] = True
    _, out = drop_outside_hull(scene.rgb[0], depth, big, (0, 1, 2), generated)
    assert torch.equal(out, depth)  # nothing of the big sphere is carved


def _probe_points(scene, source_views, extra: int, seed: int):
    """Surface points of ``source_views`` jittered off the surface, plus ``extra`` random
    points in the cube: every case of the vote (seen or not, inside, outside, in front)."""
    cams = scene.cameras(0)
    pts, idx = backproject(scene.depth[0, source_views], cams[source_views])
    g = torch.Generator().manual_seed(seed)
    pts = pts + 0.08 * torch.randn(pts.shape, generator=g, dtype=pts.dtype)
    source = torch.tensor(source_views)[idx[:, 0]]
    rand = torch.rand(extra, 3, generator=g, dtype=pts.dtype) * 1.6 - 0.8
    src = torch.randint(0, len(cams), (extra,), generator=g)
    return torch.cat([pts, rand]), torch.cat([source, src])


@pytest.mark.parametrize("views, size, dilation, margin", [(4, 10, 1, 0.05), (5, 12, 0, 0.1),
                                                           (3, 16, 2, 0.0)])
def test_fast_contradictions_equal_reference(views, size, dilation, margin):
    from flow3d.splat.hull import contradictions, contradictions_reference

    scene = sphere_scene(views=views, size=size, seed=size)
    pts, source = _probe_points(scene, [0, views - 1], extra=60, seed=views)
    depth = scene.depth[0, ..., 0]
    fast = contradictions(pts, source, depth, scene.cameras(0), margin=margin,
                          dilation=dilation)
    slow = contradictions_reference(pts, source, depth, scene.cameras(0), margin=margin,
                                    dilation=dilation)
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
    assert fast[0].any() and fast[1].any()  # both kinds of contradiction were exercised


def test_views_of_one_object_do_not_contradict_its_surface_but_do_a_floater():
    from flow3d.splat.hull import contradictions

    scene = sphere_scene(views=6, size=24, seed=7)
    cams = scene.cameras(0)
    depth = scene.depth[0, ..., 0]
    pts, idx = backproject(scene.depth[0], cams)
    background, in_front = contradictions(pts, idx[:, 0], depth, cams, margin=0.05)
    assert background.sum() == 0
    # near another view's rim the depth changes fast within a pixel: a few points there are
    # "in front" of one view (nearest-pixel lookup), hardly any of two
    assert (in_front >= 1).sum() < 0.05 * len(pts) and (in_front >= 2).sum() < 0.002 * len(pts)
    # a point beside the sphere, and one between view 0's camera and the sphere's surface
    o, d = pixel_rays(cams[[0]])
    hit = depth[0] > 0
    r, c = [int(x) for x in hit.nonzero()[len(hit.nonzero()) // 2]]
    ray = d[0, r, c]
    z_cam = float(depth[0, r, c])  # camera z of the surface; the ray's length differs by cos
    axes = cams.viewmats[0, :3, :3].to(ray.dtype)  # rows: camera 0's x, y, z in the world
    cos = float(ray @ axes[2])
    front = o[0] + (z_cam - 0.3) / cos * ray  # 0.3 in front of view 0's surface
    bg, fr = contradictions(front[None], torch.tensor([1]), depth, cams, margin=0.05)
    assert fr[0] >= 1 and bg[0] == 0  # view 0 (at least) sees through it to its surface
    # a view 0 that shows background on its left half contradicts exactly the other views'
    # points that fall there (the sphere fills the frame: "beside it" is outside every image)
    cut = depth.clone()
    cut[0, :, :12] = 0
    others = idx[:, 0] != 0
    bg, _ = contradictions(pts[others], idx[others, 0], cut, cams, margin=0.05)
    cam0 = pts[others].double() @ cams.viewmats[0, :3, :3].double().T + cams.viewmats[0, :3, 3]
    u = cams.K[0, 0, 0] * cam0[:, 0] / cam0[:, 2] + cams.K[0, 0, 2]
    assert bg.max() == 1 and ((bg == 1) == (u < 11)).float().mean() > 0.99
    assert (u < 11).sum() > 100
