"""Cameras refined by the views' own geometry and colour.

The cameras fitted to regressed rays (:mod:`flow3d.splat.raynet`) are right to some 10-40
degrees. Views with depth say more: every surface point one view sees must project *inside*
the object's silhouette in every other view (the visual hull's rule, :mod:`flow3d.splat.hull`),
must not float in front of the surface another view sees there (free space; behind it is
fine: occlusion), and where another view does see it, it has the same colour there.
:func:`refine_cameras` moves every camera (a rotation and a translation each, and one shared
focal length) by gradient descent on those three residuals over every ordered pair of views,
from the fitted cameras: a multi-view alignment of depth maps in the spirit of bundle
adjustment, with silhouettes and a dense colour check instead of feature matches (the views
of one object share few reliable features at 64^2).

* silhouette: a point of view ``i`` projected into view ``j`` costs the square of its
  distance (pixels, less half a pixel) to ``j``'s object, read from the distance transform of
  ``j``'s background by bilinear lookup;
* free space: where it lands on ``j``'s object, the square of how far (scene units, less a
  ``margin``) it lies in front of ``j``'s depth;
* colour: 1 minus how surely ``j`` sees the point (its depth there within about ``margin``)
  with the point's own colour (a point ``j`` does not see costs 1, so the term rewards
  overlap of matching surfaces rather than fewer visible points).

Descent alone stops in the nearest minimum, and cameras regressed from one 64^2 view are
often far from theirs (on held-out scenes the true cameras scored lower than the refined ones
in almost every scene that failed). So before each joint descent every camera in turn, the
others held, is tried at many places at once: where it is, turned about the up axis, and the
best places of a grid of azimuths and elevations around the object (the views were taken
looking at it), each descended a few steps; the lowest loss is kept. That search is greedy
(one camera moves while the others hold), and which minimum it reaches depends on the points
it was given; ``restarts`` runs it again on other samples and keeps the run whose cameras
agree best on a larger common sample (:func:`refinement_loss`).

:func:`consistency_loss` evaluates all pairs at once, :func:`camera_hypotheses_loss` the pairs
of one camera at many places at once; :func:`consistency_loss_reference` is their
one-pair-at-a-time twin (the tests hold them equal, values and gradients).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from flow3d.options import ConfigError, check_float, check_int
from flow3d.splat.cameras import Cameras

COLOUR_SCALE = 0.05  # squared RGB difference (in [0, 1]) at which colours stop matching
JUDGE_SEED_OFFSET = 1_000_003  # refinement_loss draws its points apart from every restart's

__all__ = ["AlignSettings", "camera_hypotheses_loss", "consistency_loss",
           "consistency_loss_reference", "outside_distance", "refine_cameras",
           "refinement_loss", "view_maps", "view_pixels", "view_points"]


@dataclasses.dataclass(frozen=True)
class AlignSettings:
    """How :func:`refine_cameras` runs: Adam ``iters`` steps of ``lr`` on ``points`` surface
    points per view; the three residuals' weights and the free-space ``margin``."""

    iters: int = 400
    points: int = 500
    lr: float = 0.02
    margin: float = 0.03  # scene units a point may sit in front of another view's surface
    # one camera took every view: the views share one focal length, the median of the fitted
    # ones, held there by focal_weight per squared log of its change (left free, it shrank to
    # half in the scenes that failed: a wider view fits wrong cameras' silhouettes)
    shared_focal: bool = True
    focal_weight: float = 1000.0
    # the search, before each of ``rounds`` joint descents: each camera in turn, the others
    # held, tried where it is, at these other azimuths about the object (degrees; regressed
    # cameras are often off by a symmetry of the object, front for back) and at the
    # grid_keep best places (by the loss) of a grid of grid_azimuths azimuths x
    # grid_elevations (degrees) around the origin at its own distance, looking at the origin;
    # every place descended turn_iters steps at once, the best kept
    turns: tuple[float, ...] = (90.0, 180.0, 270.0)
    grid_azimuths: int = 36
    grid_elevations: tuple[float, ...] = (-15.0, 0.0, 15.0, 30.0, 45.0, 60.0)
    grid_keep: int = 12
    turn_iters: int = 60
    rounds: int = 4  # search, descend all together (iters, then iters // 2 steps), again
    # the whole refinement run this many times from the same cameras, each on its own sample
    # of points (seed, seed + 1, ...): the search is greedy (one camera at a time, the others
    # held), so a sample that leads it elsewhere can find the minimum another missed; the run
    # whose cameras agree best on a common, larger sample (judge_points per view) is kept
    restarts: int = 1
    judge_points: int = 2000
    silhouette_weight: float = 0.01  # per squared pixel
    free_space_weight: float = 10.0  # per squared scene unit
    colour_weight: float = 0.3  # per point of another view's that it does not see as it is
    seed: int = 0

    def __post_init__(self):
        check_int(self.iters, "align.iters", lo=0, hi=100_000)
        check_int(self.points, "align.points", lo=1, hi=1_000_000)
        check_float(self.lr, "align.lr", lo=0.0, hi=10.0, lo_open=True)
        check_float(self.margin, "align.margin", lo=0.0, hi=1e3)
        check_float(self.focal_weight, "align.focal_weight", lo=0.0, hi=1e9)
        check_float(self.silhouette_weight, "align.silhouette_weight", lo=0.0, hi=1e6)
        check_float(self.free_space_weight, "align.free_space_weight", lo=0.0, hi=1e6)
        check_float(self.colour_weight, "align.colour_weight", lo=0.0, hi=1e6)
        check_int(self.seed, "align.seed", lo=0, hi=2**63 - 1)
        for i, deg in enumerate(self.turns):
            check_float(deg, f"align.turns[{i}]", lo=-360.0, hi=360.0)
        check_int(self.grid_azimuths, "align.grid_azimuths", lo=0, hi=3600)
        for i, deg in enumerate(self.grid_elevations):
            check_float(deg, f"align.grid_elevations[{i}]", lo=-90.0, hi=90.0)
        if self.grid_azimuths and not self.grid_elevations:
            raise ConfigError("align.grid_elevations: empty, with grid_azimuths "
                              f"{self.grid_azimuths} (give at least one, or grid_azimuths 0)")
        check_int(self.grid_keep, "align.grid_keep", lo=1, hi=1_000_000)
        check_int(self.turn_iters, "align.turn_iters", lo=0, hi=100_000)
        check_int(self.rounds, "align.rounds", lo=1, hi=1000)
        check_int(self.restarts, "align.restarts", lo=1, hi=1000)
        check_int(self.judge_points, "align.judge_points", lo=1, hi=1_000_000)


def outside_distance(mask: Tensor) -> Tensor:
    """``[V, H, W]`` distance (pixels) from each pixel centre to the nearest object pixel of
    ``mask [V, H, W]`` (0 on the object; a view without object: 0 everywhere, no constraint)."""
    from scipy import ndimage

    out = torch.zeros(mask.shape, dtype=torch.float32)
    for v, m in enumerate(mask.bool().cpu().numpy()):
        if m.any():
            out[v] = torch.from_numpy(ndimage.distance_transform_edt(~m)).float()
    return out


def view_pixels(depth: Tensor, n: int, generator: torch.Generator,
                rgb: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """``([V, n, 3], [V, n, 3] or None)``: ``n`` object pixels of every view drawn with
    replacement as ``(x, y, depth)`` (pixel centres), and their colours from ``rgb [V, H, W,
    3]``; ``depth [V, H, W, 1]``, 0 = background (a view without object gives zeros)."""
    v = depth.shape[0]
    out, colours = torch.zeros(v, n, 3), torch.zeros(v, n, 3)
    for i in range(v):
        ys, xs = torch.nonzero(depth[i, ..., 0] > 0, as_tuple=True)
        if len(ys) == 0:
            continue
        pick = torch.randint(len(ys), (n,), generator=generator)
        ys, xs = ys[pick], xs[pick]
        out[i] = torch.stack([xs + 0.5, ys + 0.5, depth[i, ys, xs, 0].float()], -1)
        if rgb is not None:
            colours[i] = rgb[i, ys, xs].float()
    return out, colours if rgb is not None else None


def view_points(K: Tensor, pixels: Tensor) -> Tensor:
    """``[V, n, 3]`` points in each camera's frame (OpenCV axes) of :func:`view_pixels`
    lifted through ``K [V, 3, 3]`` (zeros stay zeros: see :func:`consistency_loss`)."""
    x = (pixels[..., 0] - K[:, 0, 2, None]) / K[:, 0, 0, None]
    y = (pixels[..., 1] - K[:, 1, 2, None]) / K[:, 1, 1, None]
    z = pixels[..., 2]
    return torch.stack([x * z, y * z, z], -1)


def view_maps(depth: Tensor, rgb: Tensor | None = None) -> Tensor:
    """``[V, C, H, W]`` what a point projected into a view reads there: the distance to the
    object (:func:`outside_distance`), the depth, and the colour when ``rgb [V, H, W, 3]`` is
    given (``C`` = 2 or 5)."""
    d = depth[..., 0].float()
    maps = [outside_distance(d > 0)[:, None], d[:, None]]
    if rgb is not None:
        maps.append(rgb.float().permute(0, 3, 1, 2))
    return torch.cat(maps, 1)


def _residuals(q: Tensor, colour: Tensor | None, K: Tensor, maps: Tensor,
               s: AlignSettings) -> Tensor:
    """``[3, ...]`` silhouette, free-space and colour residuals of points ``q [..., 3]`` (their
    colours ``[..., 3]``) in the frame of views with intrinsics ``K [..., 3, 3]`` and ``maps
    [N, C, H, W]`` (:func:`view_maps`; ``q`` is ``[N, M, 3]``: ``M`` points per view)."""
    h, w = maps.shape[-2:]
    z = q[..., 2].clamp_min(1e-3)
    u = q[..., 0] / z * K[..., 0, 0, None] + K[..., 0, 2, None]
    v = q[..., 1] / z * K[..., 1, 1, None] + K[..., 1, 2, None]
    grid = torch.stack([u / w * 2 - 1, v / h * 2 - 1], -1)[:, None]  # [N, 1, M, 2]
    read = F.grid_sample(maps, grid, align_corners=False, padding_mode="border")[:, :, 0]
    d_out, d_obj = read[:, 0], read[:, 1]  # border: outside the image, the edge's values
    inside = (grid.abs() <= 1).all(-1)[:, 0]
    d_obj = torch.where(inside, d_obj, torch.zeros_like(d_obj))
    sil = (d_out - 0.5).clamp_min(0).square()
    free = torch.where(d_obj > 0, (d_obj - z - s.margin).clamp_min(0), torch.zeros_like(z))
    col = torch.zeros_like(z)
    if colour is not None and maps.shape[1] == 5:  # 1 - how surely j sees this point, as is
        seen = torch.where(d_obj > 0, torch.exp(-((d_obj - z) / s.margin).square()), col)
        diff = (read[:, 2:].movedim(1, -1) - colour).square().sum(-1)
        col = 1 - seen * torch.exp(-diff / COLOUR_SCALE)
    return torch.stack([sil, free.square(), col])


def _weights(s: AlignSettings, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.tensor([s.silhouette_weight, s.free_space_weight, s.colour_weight], dtype=dtype)


def consistency_loss_reference(points: Tensor, colours: Tensor | None, K: Tensor, R: Tensor,
                               t: Tensor, maps: Tensor, s: AlignSettings,
                               only: int | None = None) -> Tensor:
    """The slow twin of :func:`consistency_loss` (and, with ``only=k``, of
    :func:`camera_hypotheses_loss`: the pairs view ``k`` takes part in, no others): one
    ordered pair of views at a time."""
    v = len(maps)
    has = points.abs().sum((1, 2)) > 0
    total = points.new_zeros(())
    for i in range(v):
        if not has[i]:
            continue
        world = (points[i] - t[i]) @ R[i]
        for j in range(v):
            if j == i or not has[j] or (only is not None and only not in (i, j)):
                continue
            r = _residuals((world @ R[j].T + t[j])[None], None if colours is None else
                           colours[i][None], K[j][None], maps[j][None], s)
            total = total + (_weights(s, r.dtype) * r.mean((1, 2))).sum()
    return total


def consistency_loss(points: Tensor, colours: Tensor | None, K: Tensor, R: Tensor, t: Tensor,
                     maps: Tensor, s: AlignSettings) -> Tensor:
    """Sum over ordered pairs of views ``(i, j)``, ``i != j``, of the mean silhouette,
    free-space and colour residuals of ``i``'s points in ``j`` (module docstring).
    ``points [V, n, 3]`` in camera frames (``colours [V, n, 3]`` or None), world-to-camera
    ``R [V, 3, 3]``, ``t [V, 3]``, ``maps`` of :func:`view_maps`; views without points take
    no part."""
    v, n = points.shape[:2]
    world = torch.einsum("vnk,vkl->vnl", points - t[:, None], R)  # R^T (p - t), row form
    q = torch.einsum("inl,jml->jinm", world, R) + t[:, None, None]  # [j, i, n, 3]
    col = None if colours is None else colours.reshape(1, v * n, 3).expand(v, -1, -1)
    r = _residuals(q.reshape(v, v * n, 3), col, K, maps, s).reshape(3, v, v, n)
    per_pair = torch.einsum("c,cji->ij", _weights(s, points.dtype), r.mean(-1))
    has = points.abs().sum((1, 2)) > 0
    pairs = has[:, None] & has[None, :] & ~torch.eye(v, dtype=torch.bool)
    return torch.where(pairs, per_pair, torch.zeros_like(per_pair)).sum()


def camera_hypotheses_loss(points: Tensor, colours: Tensor | None, K: Tensor, R: Tensor,
                           t: Tensor, maps: Tensor, s: AlignSettings, k: int,
                           places: tuple[Tensor, Tensor]) -> Tensor:
    """``[H]``: the part of :func:`consistency_loss` that camera ``k`` changes (the ``2 (V -
    1)`` pairs it takes part in) with the camera at each of ``H`` ``places`` (world-to-camera
    ``Rk [H, 3, 3]``, ``tk [H, 3]``), the other cameras where ``R``, ``t`` have them: every
    place tried for one camera scored, and descended, at once."""
    Rk, tk = places
    v, n = points.shape[:2]
    h = len(Rk)
    has = points.abs().sum((1, 2)) > 0
    if not has[k]:
        return points.new_zeros(h)
    world = torch.einsum("vnk,vkl->vnl", points - t[:, None], R)  # the others' points
    own = torch.einsum("nk,hkl->hnl", points[k], Rk) - torch.einsum("hk,hkl->hl", tk, Rk)[:, None]
    # every hypothesis read from the one map it lands in: no copies of the maps
    into = world.reshape(1, v * n, 3) @ Rk.transpose(1, 2) + tk[:, None]  # [h, v n, 3]
    col = None if colours is None else colours.reshape(1, v * n, 3).expand(h, -1, -1)
    r_in = _residuals(into.reshape(1, h * v * n, 3),
                      None if col is None else col.reshape(1, h * v * n, 3), K[k][None],
                      maps[k][None], s).reshape(3, h, v, n)
    out = torch.einsum("hnl,jml->jhnm", own, R) + t[:, None, None]  # [j, h, n, 3]
    col = None if colours is None else colours[k].repeat(h, 1)[None].expand(v, -1, -1)
    r_out = _residuals(out.reshape(v, h * n, 3), col, K, maps, s).reshape(3, v, h, n)
    per = torch.einsum("c,chv->hv", _weights(s, points.dtype),
                       r_in.mean(-1) + r_out.mean(-1).transpose(1, 2))
    others = has & (torch.arange(v) != k)
    return torch.where(others, per, torch.zeros_like(per)).sum(-1)


@dataclasses.dataclass
class _Poses:
    """Cameras in refinement: world-to-camera ``R [V, 3, 3]``, ``t [V, 3]`` and the shared
    focal scale ``log_f``."""

    R: Tensor
    t: Tensor
    log_f: Tensor


def _intrinsics(K0: Tensor, log_f: Tensor) -> Tensor:
    scale = torch.ones(3, 3).index_put((torch.tensor([0, 1]), torch.tensor([0, 1])),
                                       log_f.exp().expand(2))
    return K0 * scale


def _descend(p: _Poses, K0: Tensor, views: tuple, s: AlignSettings, iters: int,
             focal: bool) -> _Poses:
    """``iters`` Adam steps on every camera (and, with ``focal``, the focal scale) given
    ``views`` ``(pixels, colours, maps)``."""
    from flow3d.core.so3 import axis_angle_to_rotmat

    pixels, colours, maps = views
    v = len(p.R)
    omega = torch.zeros(v, 3, requires_grad=True)
    shift = torch.zeros(v, 3, requires_grad=True)
    log_f = p.log_f.clone().requires_grad_(focal)
    opt = torch.optim.Adam([omega, shift] + ([log_f] if focal else []), lr=s.lr)
    with torch.enable_grad():
        for _ in range(iters):
            K = _intrinsics(K0, log_f)
            loss = (consistency_loss(view_points(K, pixels), colours, K,
                                     axis_angle_to_rotmat(omega) @ p.R, p.t + shift, maps, s)
                    + s.focal_weight * log_f.square())
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return _Poses(axis_angle_to_rotmat(omega) @ p.R, p.t + shift, log_f.detach())


def _turn_about_up(p: _Poses, i: int, degrees: float) -> _Poses:
    """Camera ``i`` carried round the world's up axis (y, through the origin) by
    ``degrees``: the same view of the object from another azimuth."""
    from flow3d.core.so3 import axis_angle_to_rotmat

    turn = axis_angle_to_rotmat(torch.tensor([0.0, math.radians(degrees), 0.0]))
    R, t = p.R.clone(), p.t.clone()
    R[i] = p.R[i] @ turn.T  # X' = turn X: x_cam = R turn^T X' + t
    return _Poses(R, t, p.log_f)


def _descend_hypotheses(p: _Poses, k: int, Rk: Tensor, tk: Tensor, K: Tensor, views: tuple,
                        s: AlignSettings, iters: int) -> tuple[Tensor, Tensor, Tensor]:
    """``iters`` Adam steps on each of camera ``k``'s hypotheses ``Rk [H, 3, 3]``, ``tk [H,
    3]`` at once (the others held at ``p``): ``(Rk, tk, loss [H])`` at the end (losses of
    :func:`camera_hypotheses_loss`; the hypotheses do not interact, so one Adam on their sum
    descends each on its own)."""
    from flow3d.core.so3 import axis_angle_to_rotmat

    pixels, colours, maps = views
    pts = view_points(K, pixels)
    omega = torch.zeros(len(Rk), 3, requires_grad=True)
    shift = torch.zeros(len(Rk), 3, requires_grad=True)
    opt = torch.optim.Adam([omega, shift], lr=s.lr)

    def loss_of(R: Tensor, t: Tensor) -> Tensor:
        return camera_hypotheses_loss(pts, colours, K, p.R, p.t, maps, s, k, (R, t))

    with torch.enable_grad():
        for _ in range(iters):
            loss = loss_of(axis_angle_to_rotmat(omega) @ Rk, tk + shift).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        Rk, tk = axis_angle_to_rotmat(omega) @ Rk, tk + shift
        return Rk, tk, loss_of(Rk, tk)


def _grid_places(p: _Poses, k: int, K: Tensor, views: tuple, s: AlignSettings
                 ) -> tuple[Tensor, Tensor]:
    """The ``s.grid_keep`` best places for camera ``k`` (``R [G, 3, 3]``, ``t [G, 3]``) of a
    grid of ``s.grid_azimuths`` azimuths x ``s.grid_elevations`` around the origin at the
    camera's own distance, looking at the origin with no roll."""
    pixels, colours, maps = views
    dist = float((p.R[k].T @ p.t[k]).norm())
    az = torch.arange(s.grid_azimuths, dtype=torch.float64) * (2 * math.pi / s.grid_azimuths)
    el = torch.deg2rad(torch.tensor(s.grid_elevations, dtype=torch.float64))
    az, el = torch.meshgrid(az, el, indexing="ij")
    eyes = dist * torch.stack([el.cos() * az.sin(), el.sin(), el.cos() * az.cos()], -1)
    eyes = eyes.reshape(-1, 3)
    vm = Cameras.look_at(eyes, torch.zeros_like(eyes), fov_deg=40.0, width=1,  # K unused
                         height=1).viewmats.to(p.R.dtype)
    with torch.no_grad():
        loss = camera_hypotheses_loss(view_points(K, pixels), colours, K, p.R, p.t, maps, s, k,
                                      (vm[:, :3, :3], vm[:, :3, 3]))
    best = loss.argsort()[: s.grid_keep]
    return vm[best, :3, :3], vm[best, :3, 3]


def refine_cameras(cameras: Cameras, depth: Tensor, s: AlignSettings = AlignSettings(),
                   rgb: Tensor | None = None, progress: bool = False) -> Cameras:
    """``cameras`` moved (and, with ``shared_focal``, given one common focal length) to agree
    with the views' ``depth [V, H, W, 1]`` (and colours ``rgb [V, H, W, 3]``; module
    docstring): ``s.rounds`` times, each camera in turn, the others held, tried where it is,
    at the other azimuths of ``s.turns`` and at the best places of the grid, kept where the
    loss is lowest; then all cameras together. With ``s.restarts > 1`` all of that is run
    again on other samples of points and the run with the lowest :func:`refinement_loss` is
    returned. ``progress``: a bar over the cameras searched (on stderr)."""
    from tqdm.auto import tqdm

    maps = view_maps(depth, rgb)  # the distance transforms: once for every run and the judge
    bar = tqdm(total=s.restarts * s.rounds * len(cameras.viewmats), desc="refining cameras",
               unit="camera", leave=False, disable=not progress)
    runs = [_refine_once(cameras, depth, maps, dataclasses.replace(s, seed=s.seed + r), rgb,
                         bar) for r in range(s.restarts)]
    bar.close()
    if len(runs) == 1:
        return runs[0]
    judged = _judge_sample(depth, maps, s, rgb)
    losses = [_judge(c, judged, s) for c in runs]
    return runs[min(range(len(runs)), key=losses.__getitem__)]  # ties: the first run


def refinement_loss(cameras: Cameras, depth: Tensor, s: AlignSettings = AlignSettings(),
                    rgb: Tensor | None = None) -> float:
    """:func:`consistency_loss` of ``cameras`` (their own intrinsics) on ``s.judge_points``
    points per view drawn with a seed of their own (not one a restart descended on): the
    score :func:`refine_cameras` picks its restarts by."""
    return _judge(cameras, _judge_sample(depth, view_maps(depth, rgb), s, rgb), s)


def _judge_sample(depth: Tensor, maps: Tensor, s: AlignSettings,
                  rgb: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor]:
    """``(pixels, colours, maps)`` of :func:`refinement_loss`'s own sample."""
    g = torch.Generator().manual_seed(s.seed + JUDGE_SEED_OFFSET)
    return (*view_pixels(depth, s.judge_points, g, rgb), maps)


def _judge(cameras: Cameras, sample: tuple, s: AlignSettings) -> float:
    pixels, colours, maps = sample
    K, vm = cameras.K.float(), cameras.viewmats.float()
    with torch.no_grad():
        return float(consistency_loss(view_points(K, pixels), colours, K, vm[:, :3, :3],
                                      vm[:, :3, 3], maps, s))


def _refine_once(cameras: Cameras, depth: Tensor, maps: Tensor, s: AlignSettings,
                 rgb: Tensor | None, bar) -> Cameras:
    """One run of :func:`refine_cameras` on the points of ``s.seed`` (``maps``: the views'
    :func:`view_maps`; ``bar``: its tqdm bar, advanced once per camera searched)."""
    g = torch.Generator().manual_seed(s.seed)
    K0 = cameras.K.float().clone()
    if s.shared_focal:
        K0[:, 0, 0] = K0[:, 1, 1] = K0[:, 0, 0].median()
    vm = cameras.viewmats.float()
    pixels, colours = view_pixels(depth, s.points, g, rgb)
    views = (pixels, colours, maps)
    v = len(vm)
    p = _Poses(vm[:, :3, :3], vm[:, :3, 3], torch.zeros(()))

    def turn_each(p: _Poses) -> _Poses:
        K = _intrinsics(K0, p.log_f)
        R, t = p.R.clone(), p.t.clone()
        for k in range(v):
            here = _Poses(R, t, p.log_f)
            Rk = torch.stack([here.R[k]] + [_turn_about_up(here, k, deg).R[k]
                                            for deg in s.turns])
            tk = t[k].expand(len(Rk), 3)
            if s.grid_azimuths:
                Rg, tg = _grid_places(here, k, K, views, s)
                Rk, tk = torch.cat([Rk, Rg]), torch.cat([tk, tg])
            Rk, tk, loss = _descend_hypotheses(here, k, Rk, tk, K, views, s, s.turn_iters)
            best = int(loss.argmin())  # ties: the camera where it was
            R[k], t[k] = Rk[best], tk[best]
            bar.update()
        return _Poses(R, t, p.log_f)

    # search before every joint descent: a camera a half turn off pulls the others its way
    # once all move
    turning = bool((s.turns or s.grid_azimuths) and s.turn_iters)
    for r in range(s.rounds):
        p = turn_each(p) if turning else p
        bar.update(0 if turning else v)
        p = _descend(p, K0, views, s, s.iters if r == 0 else s.iters // 2, s.shared_focal)
    out = vm.clone()
    out[:, :3, :3], out[:, :3, 3] = p.R, p.t
    return Cameras(_intrinsics(K0, p.log_f).to(cameras.K.dtype), out.to(cameras.viewmats.dtype),
                   cameras.width, cameras.height)
