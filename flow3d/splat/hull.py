"""Visual hulls: which pixels of a new view cannot see the object, given its silhouettes.

A 3D point can hold the object only if every view that sees it (in front of the camera, inside
the image) shows the object there: the intersection of the silhouettes' cones, the *visual
hull* (Laurentini 1994), which contains the object. The object lies in the cube ``[-bound,
bound]^3`` (``flow3d splat views``'s frame: bounding box centred at the origin, longest side
1, so ``bound = 0.5``). A pixel of another camera whose ray meets no point of the hull inside
the cube sees background, whatever the object looks like from there; a pixel whose ray meets
the hull may see the object or not.

:func:`outside_hull` samples every ray at ``samples`` points across the cube (vectorised over
rays, points and views); :func:`outside_hull_reference` is its slow twin, one
ray and one point at a time in plain Python, for the tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from flow3d.splat.cameras import Cameras

__all__ = ["contradictions", "contradictions_reference", "dilate", "in_hull",
           "inside_silhouettes", "outside_hull", "outside_hull_reference", "pixel_rays"]


def dilate(masks: Tensor, pixels: int) -> Tensor:
    """Boolean ``masks [V, H, W]`` grown by ``pixels`` (a square neighbourhood)."""
    if pixels <= 0:
        return masks.bool()
    k = 2 * pixels + 1
    return F.max_pool2d(masks.float()[:, None], k, stride=1, padding=pixels)[:, 0] > 0


def pixel_rays(cameras: Cameras) -> tuple[Tensor, Tensor]:
    """World-space origins ``[C, 3]`` and unit directions ``[C, H, W, 3]`` through every pixel
    centre (integer + 0.5, OpenCV axes)."""
    from flow3d.splat.rays import ray_directions

    return cameras.centers.to(torch.float64), ray_directions(cameras)


def _cube_span(o: Tensor, d: Tensor, bound: float) -> tuple[Tensor, Tensor, Tensor]:
    """Entry and exit distances of rays ``o [C, 3] + s d [C, H, W, 3]`` through the cube
    ``[-bound, bound]^3`` (slabs), and whether they meet it in front of the camera."""
    o = o[:, None, None, :].expand_as(d)
    safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    a, b = (-bound - o) / safe, (bound - o) / safe
    s0 = torch.minimum(a, b).amax(-1).clamp_min(0.0)
    s1 = torch.maximum(a, b).amin(-1)
    return s0, s1, s1 > s0


def _pixels(points: Tensor, cameras: Cameras, v: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Float64 ``points [N, 3]`` in view ``v``: camera depth ``z``, whether the view sees them
    (in front, inside the image), and the ``row``, ``col`` of the pixel they fall in (clamped
    into the image where they do not)."""
    vm = cameras.viewmats[v].to(points.device, torch.float64)
    K = cameras.K[v].to(points.device, torch.float64)
    cam = points @ vm[:3, :3].T + vm[:3, 3]
    z = cam[:, 2]
    u = K[0, 0] * cam[:, 0] / z.clamp_min(1e-9) + K[0, 2]
    y = K[1, 1] * cam[:, 1] / z.clamp_min(1e-9) + K[1, 2]
    seen = (z > 1e-9) & (u >= 0) & (u < cameras.width) & (y >= 0) & (y < cameras.height)
    return (z, seen, y.clamp(0, cameras.height - 1).long(),
            u.clamp(0, cameras.width - 1).long())


def inside_silhouettes(points: Tensor, masks: Tensor, cameras: Cameras) -> Tensor:
    """``[N]``: whether each point ``[N, 3]`` is inside the silhouette (``masks [V, H, W]``
    bool) of every view of ``cameras`` that sees it (in front, inside the image)."""
    points = points.to(torch.float64)
    inside = torch.ones(points.shape[0], dtype=torch.bool, device=points.device)
    for v in range(len(cameras)):
        _, seen, row, col = _pixels(points, cameras, v)
        inside &= ~seen | masks[v][row, col]
    return inside


def in_hull(points: Tensor, masks: Tensor, cameras: Cameras, *, bound: float = 0.5) -> Tensor:
    """Whether points ``[..., 3]`` lie in the cube ``[-bound, bound]^3`` and inside the
    silhouettes ``masks [V, H, W]`` of every view of ``cameras`` that sees them."""
    flat = points.reshape(-1, 3).to(torch.float64)
    inside = (flat.abs() <= bound).all(-1) & inside_silhouettes(flat, masks.bool(), cameras)
    return inside.reshape(points.shape[:-1])


def contradictions(points: Tensor, source: Tensor, depth: Tensor, cameras: Cameras, *,
                   margin: float, dilation: int = 1) -> tuple[Tensor, Tensor]:
    """How many views contradict each of ``points [N, 3]``, the surface points of views
    ``source [N]`` (long): ``(background [N], in_front [N])`` counts of the *other* views that
    see a point (in front of the camera, inside the image) and show background there (outside
    their silhouette ``depth [V, H, W] > 0``, grown by ``dilation`` pixels), or show a surface
    there more than ``margin`` behind it (the point floats in space that view sees through).
    Views that agree on an object contradict few of its points; a point only its own view
    shows (a smeared silhouette edge, a view that disagrees with the rest) is contradicted by
    many."""
    pts = points.to(torch.float64)
    masks = dilate(depth > 0, dilation)
    background = torch.zeros(len(pts), dtype=torch.long)
    in_front = torch.zeros(len(pts), dtype=torch.long)
    for v in range(len(cameras)):
        z, seen, row, col = _pixels(pts, cameras, v)
        seen = seen & (source != v)
        inside = masks[v][row, col]
        surface = depth[v][row, col].to(torch.float64)
        background += (seen & ~inside).long()
        in_front += (seen & inside & (surface > 0) & (z < surface - margin)).long()
    return background, in_front


def contradictions_reference(points: Tensor, source: Tensor, depth: Tensor, cameras: Cameras,
                             *, margin: float, dilation: int = 1) -> tuple[Tensor, Tensor]:
    """:func:`contradictions` one point and one view at a time (the slow twin)."""
    K, vm = cameras.K.tolist(), cameras.viewmats.tolist()
    d = depth.tolist()
    w, h = cameras.width, cameras.height
    background, in_front = [], []
    for p, src in zip(points.tolist(), source.tolist()):
        nb = nf = 0
        for v in range(len(K)):
            if v == src:
                continue
            cam = [sum(vm[v][i][j] * p[j] for j in range(3)) + vm[v][i][3] for i in range(3)]
            if cam[2] <= 1e-9:
                continue
            u = K[v][0][0] * cam[0] / cam[2] + K[v][0][2]
            y = K[v][1][1] * cam[1] / cam[2] + K[v][1][2]
            if not (0 <= u < w and 0 <= y < h):
                continue
            r, c = int(y), int(u)
            near = [d[v][rr][cc] for rr in range(max(r - dilation, 0), min(r + dilation + 1, h))
                    for cc in range(max(c - dilation, 0), min(c + dilation + 1, w))]
            if not any(x > 0 for x in near):
                nb += 1
            elif d[v][r][c] > 0 and cam[2] < d[v][r][c] - margin:
                nf += 1
        background.append(nb)
        in_front.append(nf)
    return torch.tensor(background, dtype=torch.long), torch.tensor(in_front, dtype=torch.long)


def outside_hull(masks: Tensor, cameras: Cameras, query: Cameras, *, bound: float = 0.5,
                 samples: int = 96) -> Tensor:
    """``[Q, H, W]`` bool: pixels of the ``query`` cameras whose rays miss the visual hull of
    the silhouettes ``masks [V, H', W']`` (bool) seen by ``cameras`` within the cube
    ``[-bound, bound]^3`` (module docstring). Rays are sampled at ``samples`` evenly spaced
    points across the cube, so hull parts thinner than the spacing can be missed: dilate the
    silhouettes by a pixel to be safe."""
    if masks.shape != (len(cameras), cameras.height, cameras.width):
        raise ValueError(f"outside_hull: masks {tuple(masks.shape)} for {len(cameras)} views "
                         f"of {cameras.width}x{cameras.height}")
    o, d = pixel_rays(query)
    s0, s1, hit = _cube_span(o, d, bound)
    frac = (torch.arange(samples, dtype=torch.float64) + 0.5) / samples
    s = s0[..., None] + (s1 - s0)[..., None] * frac  # [Q, H, W, S]
    pts = o[:, None, None, None, :] + s[..., None] * d[..., None, :]
    occupied = inside_silhouettes(pts.reshape(-1, 3), masks.bool(), cameras).reshape(s.shape)
    return ~(hit & occupied.any(-1))


def outside_hull_reference(masks: Tensor, cameras: Cameras, query: Cameras, *,
                           bound: float = 0.5, samples: int = 96) -> Tensor:
    """:func:`outside_hull` one ray and one point at a time (the slow twin)."""
    K, vm = cameras.K.tolist(), cameras.viewmats.tolist()
    qK, qvm = query.K.tolist(), query.viewmats.tolist()
    out = torch.ones(len(query), query.height, query.width, dtype=torch.bool)
    for q in range(len(query)):
        r = [row[:3] for row in qvm[q][:3]]
        t = [row[3] for row in qvm[q][:3]]
        centre = [-sum(r[j][i] * t[j] for j in range(3)) for i in range(3)]
        for row in range(query.height):
            for col in range(query.width):
                dc = [(col + 0.5 - qK[q][0][2]) / qK[q][0][0],
                      (row + 0.5 - qK[q][1][2]) / qK[q][1][1], 1.0]
                dw = [sum(r[j][i] * dc[j] for j in range(3)) for i in range(3)]
                n = math.sqrt(sum(x * x for x in dw))
                dw = [x / n for x in dw]
                a0, a1 = 0.0, math.inf
                for i in range(3):
                    if abs(dw[i]) < 1e-12:
                        if abs(centre[i]) > bound:
                            a1 = -1.0
                        continue
                    lo, hi = sorted(((-bound - centre[i]) / dw[i], (bound - centre[i]) / dw[i]))
                    a0, a1 = max(a0, lo), min(a1, hi)
                if a1 <= a0:
                    continue
                for k in range(samples):
                    s = a0 + (a1 - a0) * (k + 0.5) / samples
                    p = [centre[i] + s * dw[i] for i in range(3)]
                    if _point_in_hull(p, masks, K, vm, cameras.width, cameras.height):
                        out[q, row, col] = False
                        break
    return out


def _point_in_hull(p, masks, K, vm, width, height) -> bool:
    for v in range(len(K)):
        cam = [sum(vm[v][i][j] * p[j] for j in range(3)) + vm[v][i][3] for i in range(3)]
        if cam[2] <= 1e-9:
            continue
        u = K[v][0][0] * cam[0] / cam[2] + K[v][0][2]
        y = K[v][1][1] * cam[1] / cam[2] + K[v][1][2]
        if 0 <= u < width and 0 <= y < height and not bool(masks[v][int(y), int(u)]):
            return False
    return True
