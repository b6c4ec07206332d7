"""Guided appearance transfer onto a mesh (GuideFlow3D, Yin et al. 2025), on a CPU.

``transfer(TransferSettings(target=..., source=..., out=...))``:

1. read and check the target mesh, the source (a mesh with colours or a texture, or an image)
   and the output path, before any model is loaded;
2. the target's geometry: normalised frame, active 32^3 voxels and the frozen geometry VAE's
   latents (the per-voxel input of the appearance flow; the voxels are the target's own, so
   its geometry is kept by construction);
3. the source's appearance: its colour palette (the flow's condition) and, for a mesh source,
   its appearance latents on its own voxels (:class:`~flow3d.appearance.model.AppearanceVAE`);
4. sample the appearance channels with the flow (classifier-free guidance on the palette) and,
   after every step, optimiser steps on a guidance loss of the predicted appearance
   (:class:`flow3d.core.guidance.OptimizerGuidance`, ``target="x1_skip"``):

   * ``part``: co-segment target and source surface samples (k-means over both shapes'
     :func:`point_features`: position in the shape's box, outward normal) and pull the colour
     decoded at each target sample to that of its nearest source sample of the same part
     (GuideFlow3D's part-aware loss, with our geometry features for PartField, in colour space;
     matching whole voxels' latents instead measured CIEDE2000 ~20 against ~6 per sample on
     training pairs, and the appearance VAE cannot undo a wrong voxel match);
   * ``self``: k-means parts of the target alone and a supervised contrastive loss on the
     appearance latents' cosine similarity (voxels of a part alike, parts apart); the colours
     come from the palette;
   * ``image``: the sliced Wasserstein distance between the colours of the target's surface
     rendered by the splat rasterizer from a reference view (the mesh head's first
     conditioning view: the photo's camera is not known) and the image's object pixels;
   * ``none``: the flow and the palette only;

5. decode colours at the vertices of the target mesh, subdivided so that no edge is longer than
   half a voxel (subdividing a triangle in its plane keeps the surface exactly), and write a
   GLB with vertex colours in the target's own coordinates.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flow3d.errors import ConfigError, DataError
from flow3d.options import check_float, check_int

__all__ = [
    "GUIDANCES",
    "demo",
    "preview_png",
    "source_gaussians",
    "AppearanceModels",
    "Source",
    "TransferSettings",
    "appearance_velocity",
    "kmeans",
    "load_models",
    "load_source",
    "sample_appearance",
    "sliced_wasserstein",
    "transfer",
    "voxel_features",
]

GUIDANCES = ("part", "self", "image", "none")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = ROOT / "checkpoints"
EXAMPLES = ROOT / "examples" / "appearance"


@dataclasses.dataclass(frozen=True)
class TransferSettings:
    """Everything ``flow3d appearance transfer`` needs, checked once."""

    target: str | None = None  # the mesh to paint
    source: str | None = None  # a coloured / textured mesh, or an image
    out: str | None = None  # .glb (vertex colours)
    splat: str | None = None  # also Gaussians on the surface (.ply / .splat / .spz)
    steps: int = 50
    guidance: str = "part"
    seed: int = 0
    cfg: float = 2.0  # classifier-free guidance on the palette
    lr: float = 0.1  # optimiser step on the state per flow step
    opt_steps: int = 2  # optimiser steps after every flow step
    parts: int = 8  # co-segmentation clusters (part), target parts (self: 5)
    models: str = str(CHECKPOINTS / "appearance")  # holds vae/ and flow/
    geometry: str = str(CHECKPOINTS / "mesh" / "svae_cpu")
    overwrite: bool = False

    def __post_init__(self):
        from flow3d.mesh.pipeline import _input, _output

        if self.guidance not in GUIDANCES:
            raise ConfigError(f"--guidance {self.guidance!r}: choose from {', '.join(GUIDANCES)}")
        check_int(self.steps, "--steps", lo=1, hi=10_000)
        check_int(self.seed, "--seed", lo=0, hi=2**63 - 1)
        check_int(self.opt_steps, "--opt-steps", lo=0, hi=1000)
        check_int(self.parts, "--parts", lo=2, hi=256)
        check_float(self.cfg, "--cfg", lo=0.0, hi=100.0)
        check_float(self.lr, "--lr", lo=0.0, hi=100.0)
        _input(self.target, "--target", "mesh file")
        _input(self.source, "--source", "mesh or image file")
        if self.source is not None:
            _check_pairing(self.guidance, _is_image(self.source), self.source)
        _output(self.out, "--out", self.overwrite, (".glb",))
        _output(self.splat, "--splat", self.overwrite, (".ply", ".splat", ".spz"))


def _check_pairing(guidance: str, image: bool, source: str) -> None:
    if guidance == "image" and not image:
        raise ConfigError(f"--guidance image needs an image --source, got {source}")
    if guidance == "part" and image:
        raise ConfigError(f"--guidance part needs a mesh --source (an image has no parts to "
                          f"match), got {source}; use --guidance image or self")


def _is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


# ---- inputs ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Source:
    """An appearance source in its own normalised frame: coloured surface samples (mesh), or
    the object pixels' colours (image: ``points``/``normals`` are None)."""

    colors: np.ndarray  # [N, 3] in [0, 1]
    points: np.ndarray | None = None
    normals: np.ndarray | None = None  # outward
    mesh: object = None  # the normalised trimesh (mesh sources)
    path: str = "source"

    @property
    def is_image(self) -> bool:
        return self.points is None


def _colored_samples(path: str, count: int, seed: int):
    """(points, normals, colours) sampled on a mesh file's surface with its colours
    (a base-colour texture, or vertex / face colours), scene transforms applied."""
    import trimesh

    from flow3d.mesh.data import scene_geometries

    parts = scene_geometries(trimesh.load(path, process=False))
    if not any(_texture_image(g) is not None or _color_kind(g) for g, _ in parts):
        raise DataError(f"{path}: the mesh has no colours or texture to transfer; give a "
                        "textured or coloured mesh, or an image")
    scale = np.array([abs(np.linalg.det(m[:3, :3])) ** (2 / 3) for _, m in parts])
    areas = np.array([g.area for g, _ in parts]) * scale
    counts = np.random.default_rng(seed).multinomial(count, areas / areas.sum())
    pts, nrm, rgb = [], [], []
    for (g, m), n in zip(parts, counts):
        if n == 0:
            continue
        p, face = trimesh.sample.sample_surface(g, int(n), seed=seed)
        rgb.append(_surface_colors(g, p, face))
        pts.append(trimesh.transform_points(p, m))
        normal = g.face_normals[face] @ np.linalg.inv(m[:3, :3])  # normals: inverse transpose
        nrm.append(normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12))
    return (np.concatenate(pts).astype(np.float32), np.concatenate(nrm).astype(np.float32),
            np.concatenate(rgb).astype(np.float32).clip(0, 1))


def _texture_image(g):
    """The base-colour image of a textured trimesh (PBR or simple material), or None."""
    if getattr(g.visual, "kind", None) != "texture" or getattr(g.visual, "uv", None) is None:
        return None
    mat = g.visual.material
    for key in ("baseColorTexture", "image"):
        img = getattr(mat, key, None)
        if img is not None:
            return img
    return None


def _color_kind(g) -> str | None:
    """"vertex" / "face" for colours trimesh read as such, "vertex" too for a glTF's
    ``COLOR_0`` under a material without a texture (as our GLB files are), else None."""
    kind = getattr(g.visual, "kind", None)
    if kind in ("vertex", "face"):
        return kind
    from flow3d.mesh.data import gltf_vertex_colors

    return "vertex" if gltf_vertex_colors(g) is not None else None


def _surface_colors(g, points: np.ndarray, face: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] of surface points on faces ``face`` of one trimesh (grey if uncoloured)."""
    import trimesh

    bary = trimesh.triangles.points_to_barycentric(g.triangles[face], points)
    img = _texture_image(g)
    if img is not None:
        uv = (bary[:, :, None] * np.asarray(g.visual.uv)[g.faces[face]]).sum(1)
        c = trimesh.visual.color.uv_to_color(uv, img)[:, :3] / 255.0
        factor = getattr(g.visual.material, "baseColorFactor", None)
        return c * (np.asarray(factor[:3]) / 255.0 if factor is not None else 1.0)
    kind = _color_kind(g)
    if kind == "vertex":
        from flow3d.mesh.data import gltf_vertex_colors

        vc = gltf_vertex_colors(g) if g.visual.kind == "texture" else g.visual.vertex_colors
        vc = np.asarray(vc, dtype=np.float64)[:, :3] / 255.0
        return (bary[:, :, None] * vc[g.faces[face]]).sum(1)
    if kind == "face":
        return np.asarray(g.visual.face_colors, dtype=np.float64)[face, :3] / 255.0
    return np.full((len(points), 3), 0.5)


def load_source(path: str, *, count: int = 16384, seed: int = 0) -> Source:
    """A source file checked and read: an image's object pixels, or a coloured mesh's
    surface samples in the mesh's normalised frame with outward normals. Broken files are a
    :class:`DataError`."""
    if _is_image(path):
        from flow3d.mesh.image_encoder import foreground, read_image

        rgb = read_image(path)
        mask, _ = foreground(rgb)
        img = rgb[..., :3] if rgb.shape[-1] == 3 else (
            rgb[..., :3] * rgb[..., 3:] + (1.0 - rgb[..., 3:]))
        return Source(colors=img[mask].astype(np.float32), path=str(path))
    from flow3d.mesh.data import load_mesh, normalize_mesh

    mesh = load_mesh(path)  # the geometry checks (empty, point cloud, NaN, ...)
    pts, nrm, rgb = _colored_samples(path, count, seed)
    if not np.isfinite(rgb).all():
        raise DataError(f"{path}: colours are not finite numbers")
    from flow3d.mesh.sparse_vae import orient_normals

    normed, norm = normalize_mesh(mesh)
    pts = norm.apply(pts).astype(np.float32)
    return Source(colors=rgb, points=pts, normals=orient_normals(normed, pts, nrm),
                  mesh=normed, path=str(path))


# ---- models ------------------------------------------------------------------------------------
@dataclasses.dataclass
class AppearanceModels:
    geometry: torch.nn.Module  # SparseSDFVAE
    appearance: torch.nn.Module  # AppearanceVAE
    flow: torch.nn.Module  # SparseLatentFlow over the appearance channels


def load_models(models: str | Path, geometry: str | Path) -> AppearanceModels:
    """The frozen geometry VAE, appearance VAE (``models/vae``) and flow (``models/flow``)."""
    from flow3d.appearance.model import load_appearance_vae
    from flow3d.engine.checkpoint import load_frozen
    from flow3d.mesh.sparse_head import load_svae

    flow = load_frozen(Path(models) / "flow", "appearance_flow", "appearance flow")
    return AppearanceModels(load_svae(geometry), load_appearance_vae(Path(models) / "vae"), flow)


# ---- geometry and correspondence ---------------------------------------------------------------
@dataclasses.dataclass
class Shape:
    """A mesh in its normalised frame on the VAEs' voxels."""

    coords: Tensor  # [M, 3]
    voxels: object  # SparseVoxels
    points: Tensor  # [P, 3] surface samples
    normals: Tensor  # [P, 3] (outward)
    geometry: Tensor  # [M, C_g] standardised geometry latents
    features: Tensor  # [M, F] correspondence features


def shape_of(models: AppearanceModels, normed_mesh, *, seed: int = 0, n_points: int = 8192
             ) -> Shape:
    """Voxels, surface samples, geometry latents and correspondence features of a normalised
    mesh."""
    from flow3d.mesh.data import sample_surface
    from flow3d.mesh.sparse_vae import orient_normals
    from flow3d.mesh.voxels import SparseVoxels, shape_active_voxels

    g = models.geometry
    coords = torch.from_numpy(np.asarray(
        shape_active_voxels(normed_mesh, g.resolution, g.bounds, seed=seed), dtype=np.int64))
    voxels = SparseVoxels(coords, torch.zeros(len(coords), dtype=torch.long), g.resolution, 1)
    pts, nrm = sample_surface(normed_mesh, n_points, np.random.default_rng(seed))
    nrm = orient_normals(normed_mesh, pts, nrm)
    p, n = torch.from_numpy(np.asarray(pts, np.float32)), torch.from_numpy(
        np.asarray(nrm, np.float32))
    with torch.no_grad():
        _, mu, _ = g.encode(voxels, p, n, torch.zeros(len(p), dtype=torch.long), sample=False)
    geo = g.normalize_latent(mu)
    return Shape(coords, voxels, p, n, geo, voxel_features(voxels, p, n, geo, g))


def voxel_features(voxels, points: Tensor, normals: Tensor, geometry: Tensor, vae,
                   weights: tuple[float, float, float] = (1.0, 0.5, 0.1)) -> Tensor:
    """Correspondence features ``[M, 3 + 3 + C_g]`` of one shape's voxels: the voxel centre's
    position in the box of the shape's surface (each axis in [0, 1], so shapes of different
    proportions line up), the mean outward normal of its surface points (0 where none), and
    the standardised geometry latents, weighted by ``weights``."""
    centre = (voxels.coords.float() + 0.5) * vae.h - vae.bounds
    lo, hi = points.min(0).values, points.max(0).values
    rel = (centre - lo) / (hi - lo).clamp_min(1e-6)
    u = ((points + vae.bounds) / vae.h).floor().long()
    row = voxels.lookup(u, torch.zeros(len(u), dtype=torch.long))
    keep = row >= 0
    nsum = torch.zeros(len(voxels), 3).index_add_(0, row[keep], normals[keep])
    nrm = nsum / nsum.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    w_pos, w_nrm, w_geo = weights
    return torch.cat([w_pos * rel, w_nrm * nrm, w_geo * geometry], -1)


def kmeans(x: Tensor, k: int, *, iters: int = 20, seed: int = 0) -> Tensor:
    """Labels ``[N]`` of k-means on ``x [N, F]`` (k-means++ start from ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    k = min(k, len(x))
    centres = x[torch.randint(len(x), (1,), generator=g)]
    for _ in range(k - 1):
        d = torch.cdist(x, centres).min(1).values ** 2
        centres = torch.cat([centres, x[torch.multinomial(d + 1e-12, 1, generator=g)]])
    for _ in range(iters):
        labels = torch.cdist(x, centres).argmin(1)
        for j in range(k):
            if (labels == j).any():
                centres[j] = x[labels == j].mean(0)
    return torch.cdist(x, centres).argmin(1)


def part_correspondence(target: Tensor, source: Tensor, k: int, seed: int = 0) -> Tensor:
    """For every target voxel (features ``target [M, F]``), the row of its nearest source
    voxel (``source [S, F]``) within the same co-segmented part (k-means over both shapes'
    voxels); a part the source lacks falls back to the nearest source voxel overall."""
    labels = kmeans(torch.cat([target, source]), k, seed=seed)
    lt, ls = labels[: len(target)], labels[len(target) :]
    d = torch.cdist(target, source)
    same = lt[:, None] == ls[None, :]
    has = same.any(1, keepdim=True)
    d = torch.where(same | ~has, d, torch.full_like(d, float("inf")))
    return d.argmin(1)


# ---- losses ------------------------------------------------------------------------------------
def sliced_wasserstein(a: Tensor, b: Tensor, *, projections: int = 64, seed: int = 0,
                       quantiles: int = 256) -> Tensor:
    """Sliced 2-Wasserstein distance between point sets ``a [N, D]`` and ``b [K, D]`` (random
    directions from ``seed``; each projection compared at ``quantiles`` quantiles)."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(a.shape[1], projections, generator=g)
    d = d / d.norm(dim=0, keepdim=True)
    q = (torch.arange(quantiles, dtype=a.dtype) + 0.5) / quantiles
    pa = torch.quantile(a @ d.to(a), q, dim=0)
    pb = torch.quantile(b @ d.to(b), q, dim=0)
    return ((pa - pb) ** 2).mean().sqrt()


def supervised_contrastive(z: Tensor, labels: Tensor, tau: float = 0.2) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) on the cosine similarity of ``z``."""
    z = torch.nn.functional.normalize(z, dim=-1)
    sim = z @ z.T / tau
    eye = torch.eye(len(z), dtype=torch.bool)
    sim = sim.masked_fill(eye, -1e9)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    logp = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    n = pos.sum(1).clamp_min(1)
    return -(logp * pos).sum(1).div(n).mean()


def guidance_loss(settings: TransferSettings, models: AppearanceModels, target: Shape,
                  source: Source):
    """``loss(x1) -> [1]`` on the standardised appearance latents of the target, or None."""
    a = models.appearance
    if settings.guidance == "none":
        return None
    if settings.guidance == "part":
        return _part_loss(settings, a, target, source)
    if settings.guidance == "self":
        labels = kmeans(target.features, 5, seed=settings.seed)
        g = torch.Generator().manual_seed(settings.seed)
        pick = torch.randperm(len(labels), generator=g)[:1024]

        def loss(x1: Tensor) -> Tensor:
            return supervised_contrastive(x1[pick], labels[pick]).reshape(1)

        return loss
    # image: the decoded surface rendered from the reference view, its colour statistics
    # against the image's object pixels
    return _image_loss(settings, a, target, source)


def point_features(points: Tensor, normals: Tensor, w_normal: float = 1.0) -> Tensor:
    """Correspondence features ``[N, 6]`` of surface samples: the position in the box of the
    samples (each axis in [0, 1], so shapes of different proportions line up) and the outward
    normal times ``w_normal``."""
    lo, hi = points.min(0).values, points.max(0).values
    return torch.cat([(points - lo) / (hi - lo).clamp_min(1e-6), w_normal * normals], -1)


def part_targets(settings: TransferSettings, target: Shape, source: Source,
                 count: int = 4096) -> tuple[Tensor, Tensor, Tensor]:
    """(target sample rows ``[n]``, their colours to match ``[n, 3]``, the source rows): each
    of ``count`` target samples takes the colour of its nearest source sample within the same
    co-segmented part (:func:`part_correspondence` on :func:`point_features`)."""
    g = torch.Generator().manual_seed(settings.seed)
    pick = torch.randperm(len(target.points), generator=g)[:count]
    src = torch.randperm(len(source.points), generator=g)[: 2 * count]
    ft = point_features(target.points[pick], target.normals[pick])
    fs = point_features(torch.from_numpy(source.points), torch.from_numpy(source.normals))[src]
    rows = src[part_correspondence(ft, fs, settings.parts, settings.seed)]
    return pick, torch.from_numpy(source.colors)[rows], rows


def _part_loss(settings: TransferSettings, a, target: Shape, source: Source):
    """``loss(x1)``: mean squared error between the colours decoded from ``x1`` at target
    samples and the colours of their part-matched source samples (GuideFlow3D's part-aware
    loss, in colour space: per sample, where latents would match whole voxels)."""
    pick, goal, _ = part_targets(settings, target, source)
    pts, nrm = target.points[pick], target.normals[pick]
    zeros = torch.zeros(len(pts), dtype=torch.long)

    def loss(x1: Tensor) -> Tensor:
        rgb = a.colors(a.decode(a.denormalize_latent(x1), target.voxels), target.voxels, pts,
                       zeros, nrm)
        return (10.0 * ((rgb - goal) ** 2).mean()).reshape(1)

    return loss


REFERENCE_VIEW = (30.0, 10.0)  # azimuth, elevation (degrees): the mesh head's first view


def _image_loss(settings: TransferSettings, a, target: Shape, source: Source, size: int = 64):
    """``loss(x1)``: 10 x the sliced Wasserstein distance between the colours of the target's
    surface as the splat rasterizer sees it from :data:`REFERENCE_VIEW` (flat Gaussians on
    4,096 surface samples, colours decoded from ``x1``, differentiable) and the image's object
    pixels."""
    import math

    from flow3d.splat.cameras import Cameras
    from flow3d.splat.render import render

    g = torch.Generator().manual_seed(settings.seed)
    pick = torch.randperm(len(target.points), generator=g)[:4096]
    pts, nrm = target.points[pick], target.normals[pick]
    zeros = torch.zeros(len(pts), dtype=torch.long)
    az, el = (math.radians(v) for v in REFERENCE_VIEW)
    eye = 3.0 * torch.tensor([[math.cos(el) * math.sin(az), math.sin(el),
                               math.cos(el) * math.cos(az)]])
    cam = Cameras.look_at(eye, torch.zeros(1, 3), fov_deg=40.0, width=size, height=size)
    lo, hi = pts.min(0).values, pts.max(0).values
    spacing = float((hi - lo).prod().clamp_min(1e-6) ** (1 / 3)) * 1.5 / math.sqrt(len(pts))
    want = torch.from_numpy(source.colors[np.random.default_rng(settings.seed).choice(
        len(source.colors), min(len(source.colors), 8192), replace=False)])

    def loss(x1: Tensor) -> Tensor:
        rgb = a.colors(a.decode(a.denormalize_latent(x1), target.voxels), target.voxels, pts,
                       zeros, nrm)
        out = render(surface_discs(pts, nrm, rgb, spacing), cam)
        alpha = out.alpha[0, ..., 0]
        seen = alpha > 0.5
        if int(seen.sum()) < 16:  # nothing in view: fall back to every surface sample
            return (10.0 * sliced_wasserstein(rgb, want, seed=settings.seed)).reshape(1)
        colours = out.rgb[0][seen] / alpha[seen][:, None]
        return (10.0 * sliced_wasserstein(colours, want, seed=settings.seed)).reshape(1)

    return loss


# ---- sampling ----------------------------------------------------------------------------------
def sample_appearance(velocity, appearance, rows: int, *, steps: int = 50, seed: int = 0,
                      hooks=()) -> Tensor:
    """Raw appearance latents ``[rows, C]``: Euler steps of ``velocity`` (from
    :func:`appearance_velocity`) from seeded noise on the voxels' rows, ``hooks`` after every
    step."""
    from flow3d.core.solvers import solve
    from flow3d.core.time import time_grid

    g = torch.Generator().manual_seed(seed)
    x_0 = torch.randn(rows, appearance.latent_dim, generator=g)
    x_1 = solve(velocity, x_0, method="euler", grid=time_grid(steps), hooks=list(hooks)).x
    return appearance.denormalize_latent(x_1)


def appearance_velocity(flow, voxels, extra: Tensor, palette: Tensor, cfg: float):
    """The appearance flow's ``v(x, t)`` on ``voxels`` given standardised geometry latents
    ``extra`` and palettes ``[B, 16]``, with classifier-free guidance ``cfg`` on the palette."""
    from flow3d.mesh.sparse_flow import velocity_on

    return velocity_on(flow, voxels, flow.context(vector=palette), cfg, extra)


def transfer(settings: TransferSettings, *, target_mesh=None, source: Source | None = None,
             models: AppearanceModels | None = None) -> dict:
    """Paint ``settings.target`` like ``settings.source``: ``{"mesh"`` (vertex-coloured
    trimesh, the target's coordinates), ``"seconds"``, ``"nfe"}``; written to
    ``settings.out`` when set. ``target_mesh`` / ``source`` / ``models`` skip the reading."""
    from flow3d.appearance.model import palette as palette_of
    from flow3d.core.guidance import OptimizerGuidance
    from flow3d.mesh.data import load_mesh, normalize_mesh

    t0 = time.perf_counter()
    # 1. inputs first: broken files fail before any model is read
    where = settings.target or "target"
    target_mesh = target_mesh if target_mesh is not None else load_mesh(settings.target)
    source = source if source is not None else load_source(settings.source, seed=settings.seed)
    _check_pairing(settings.guidance, source.is_image, source.path)
    models = models or load_models(settings.models, settings.geometry)
    a = models.appearance
    torch.manual_seed(settings.seed)
    # 2. the target's geometry
    normed, norm = normalize_mesh(target_mesh)
    try:
        tgt = shape_of(models, normed, seed=settings.seed)
    except ValueError as e:
        raise DataError(f"{where}: cannot voxelise: {e}") from None
    # 3. the source's palette: the flow's condition; 4. guided sampling
    pal = torch.from_numpy(palette_of(source.colors))[None]
    loss = guidance_loss(settings, models, tgt, source)
    velocity = appearance_velocity(models.flow, tgt.voxels, tgt.geometry, pal, settings.cfg)
    hooks = []
    if loss is not None and settings.opt_steps > 0 and settings.lr > 0:
        hooks.append(OptimizerGuidance(loss, steps=settings.opt_steps, lr=settings.lr,
                                       optimizer="adamw", target="x1_skip", velocity=velocity))
    z = sample_appearance(velocity, a, len(tgt.voxels), steps=settings.steps, seed=settings.seed,
                          hooks=hooks)
    nfe = settings.steps * (2 if settings.cfg else 1) + sum(h.nfe for h in hooks)
    # 5. colours at the target's (subdivided) vertices; export
    mesh = colored_target(target_mesh, normed, norm, a, tgt, z)
    if settings.out is not None:
        from flow3d.mesh.postprocess import export_mesh

        export_mesh(mesh, settings.out)
    if settings.splat is not None:
        from flow3d.splat.formats import save_scene

        save_scene(surface_gaussians(a, tgt, z, normed, norm, seed=settings.seed),
                   settings.splat)
    return {"mesh": mesh, "latents": z, "shape": tgt, "nfe": nfe,
            "seconds": time.perf_counter() - t0}


def colors_at(appearance, shape: Shape, z: Tensor, points: np.ndarray, normals: np.ndarray,
              chunk: int = 65536) -> np.ndarray:
    """RGB ``[N, 3]`` in [0, 1] decoded from latents ``z`` at normalised surface ``points``
    with outward ``normals``."""
    with torch.no_grad():
        feats = appearance.decode(z, shape.voxels)
        p = torch.from_numpy(np.asarray(points, dtype=np.float32))
        n = torch.from_numpy(np.asarray(normals, dtype=np.float32))
        out = [appearance.colors(feats, shape.voxels, p[s : s + chunk],
                                 torch.zeros(len(p[s : s + chunk]), dtype=torch.long),
                                 n[s : s + chunk])
               for s in range(0, len(p), chunk)]
    return torch.cat(out).numpy() if out else np.zeros((0, 3), np.float32)


def subdivided(mesh, normed, norm, max_edge: float):
    """(the mesh subdivided so that no edge is longer than ``max_edge`` in the normalised
    frame; its vertices normalised; their outward normals). Subdividing a triangle in its
    plane keeps the surface exactly."""
    import trimesh

    from flow3d.mesh.sparse_vae import orient_normals

    v, f = trimesh.remesh.subdivide_to_size(np.asarray(mesh.vertices), np.asarray(mesh.faces),
                                            max_edge * float(norm.scale), max_iter=6)
    out = trimesh.Trimesh(v, f, process=False)
    vn = norm.apply(v).astype(np.float32)
    normals = orient_normals(normed, vn, np.asarray(out.vertex_normals, dtype=np.float32))
    return out, vn, normals


def colored_target(mesh, normed, norm, appearance, shape: Shape, z: Tensor):
    """The target mesh (its own coordinates and surface), subdivided to edges of at most half
    a voxel, with vertex colours decoded at its vertices."""
    import trimesh

    out, vn, normals = subdivided(mesh, normed, norm, 0.5 * appearance.h)
    rgb = colors_at(appearance, shape, z, vn, normals)
    alpha = np.full((len(rgb), 1), 255, dtype=np.uint8)
    out.visual = trimesh.visual.ColorVisuals(
        out, vertex_colors=np.concatenate([(rgb * 255).round().astype(np.uint8), alpha], 1))
    return out


def surface_gaussians(appearance, shape: Shape, z: Tensor, normed, norm, *, count: int = 40000,
                      seed: int = 0):
    """Flat Gaussians on the target's surface (``count`` area-uniform samples, the input's
    coordinates) with the decoded colours: discs of the samples' spacing along the surface,
    a tenth of it along the normal, nearly opaque; for the splat viewer."""
    from flow3d.mesh.data import sample_surface
    from flow3d.mesh.sparse_vae import orient_normals

    pts, nrm = sample_surface(normed, count, np.random.default_rng(seed))
    nrm = orient_normals(normed, pts, nrm)
    rgb = colors_at(appearance, shape, z, pts, nrm)
    spacing = np.sqrt(normed.area / count) * float(norm.scale)
    return surface_discs(torch.from_numpy(norm.invert(pts)).float(),
                         torch.from_numpy(np.asarray(nrm)).float(), torch.from_numpy(rgb),
                         float(spacing))


def surface_discs(points: Tensor, normals: Tensor, colors: Tensor, spacing: float,
                  opacity: float = 0.95):
    """Flat Gaussians on surface samples: discs of radius ``spacing`` along the surface, a
    tenth of it along the unit ``normals``, coloured ``colors`` (differentiable in them)."""
    from flow3d.splat.gaussians import Gaussians

    g = Gaussians.from_points(points, colors, scale=spacing, opacity=opacity)
    flat = torch.tensor([0.0, 0.0, float(np.log(0.1))], dtype=g.log_scales.dtype)
    return Gaussians(g.means, _quat_z_to(normals.to(g.means)), g.log_scales + flat,
                     g.opacity_logits, g.sh)


def _quat_z_to(n: Tensor) -> Tensor:
    """Unit quaternions ``[N, 4]`` (w, x, y, z) rotating +z onto the unit vectors ``n``."""
    z = torch.tensor([0.0, 0.0, 1.0]).expand_as(n)
    w = 1.0 + (z * n).sum(-1, keepdim=True)
    q = torch.cat([w, torch.linalg.cross(z, n)], -1)
    flip = w[:, 0] < 1e-6  # n = -z: half a turn about x
    q[flip] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    return q / q.norm(dim=-1, keepdim=True)


# ---- previews and the demo ---------------------------------------------------------------------
def preview_png(rows: list, path: str | Path, *, size: int = 160, views: int = 4) -> Path:
    """A PNG grid: one row per Gaussians in ``rows`` (normalised to the unit box each), seen
    from ``views`` cameras around it, on white, through the splat CPU rasterizer."""
    from flow3d.mesh.render import save_png
    from flow3d.splat.gaussians import Gaussians
    from flow3d.splat.render import render
    from flow3d.splat.views import sphere_cameras

    cams = sphere_cameras(views, radius=0.9, size=size, fov_deg=40.0, elevations=(15.0, 35.0))
    lines = []
    for g in rows:
        lo, hi = g.means.min(0).values, g.means.max(0).values
        scale = float((hi - lo).max()) / 1.6
        g = Gaussians((g.means - (lo + hi) / 2) / scale, g.quats, g.log_scales - np.log(scale),
                      g.opacity_logits, g.sh)
        with torch.no_grad():
            out = render(g, cams)
        img = out.rgb + (1.0 - out.alpha)  # white background
        lines.append(torch.cat(list(img.clamp(0, 1)), dim=1))  # views side by side
    grid = (torch.cat(lines, dim=0).numpy() * 255).round().astype(np.uint8)
    return save_png(grid, path)


def source_gaussians(source: Source, count: int = 40000):
    """Flat Gaussians on a mesh source's coloured samples (its normalised frame)."""

    pts = torch.from_numpy(source.points[:count]).float()
    spacing = float(np.sqrt(source.mesh.area / len(pts)))
    return surface_discs(pts, torch.from_numpy(source.normals[:count]),
                         torch.from_numpy(source.colors[:count]), spacing)


def demo(out_dir: str | Path, *, steps: int = 50, seed: int = 0) -> list[Path]:
    """``make demo``: the parts of a painted piano (examples/appearance) onto a chair never
    trained on: ``appearance_demo.glb``, its Gaussians (``.ply``) and a preview PNG (source
    row, result row)."""
    out = Path(out_dir)
    settings = TransferSettings(target=str(EXAMPLES / "chair.glb"),
                                source=str(EXAMPLES / "piano_parts.glb"),
                                out=str(out / "appearance_demo.glb"),
                                splat=str(out / "appearance_demo.ply"), steps=steps, seed=seed,
                                overwrite=True)
    source = load_source(settings.source, seed=seed)
    transfer(settings, source=source)
    from flow3d.splat.formats import read_ply

    png = preview_png([source_gaussians(source), read_ply(settings.splat)],
                      out / "appearance_demo.png")
    return [Path(settings.out), Path(settings.splat), png]
