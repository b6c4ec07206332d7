"""SplatFlow's tasks on the bundled models: generate, complete, edit a scene, estimate poses.

One multi-view flow (:mod:`flow3d.splat.mvflow`) generates the colour, depth and camera rays of
8 views at 64^2 together; the GSDecoder (:mod:`flow3d.splat.decoder`) turns views into
Gaussians. Every task is the same integration with a different set of known entries, replaced
along the path by the core's :class:`~flow3d.core.guidance.Inpainting` hook (training-free):

* ``generate``: nothing known; a class as the condition.
* ``complete``: the known views' colour and depth and every view's rays (the cameras asked
  for) known; the other views generated. By default (``warp``) the known views are first
  decoded into Gaussians and rendered at the other cameras: the pixels they show solidly, and
  the pixels whose rays miss the known views' visual hull (:mod:`flow3d.splat.hull`: certainly
  background), become known too, so the flow generates only what the known views cannot
  explain (disocclusions, silhouette edges). The integration starts from the warped views
  (the faint pixels too) noised to ``t = 1 - strength`` (SDEdit; ``--strength 1``: from pure
  noise); generated pixels whose points fall outside the hull are dropped (floaters). With
  ``--no-warp`` the other views are generated whole, as SplatFlow does.
* ``edit``: every pixel outside the masks and every ray known; the masked pixels regenerated
  under the requested class.
* ``poses``: every view's colour (and depth, when the dataset has it) known; the rays
  generated and read back as cameras (:func:`flow3d.splat.rays.cameras_from_rays`, principal
  point at the image centre).

Generated rays are replaced by those of the fitted cameras before decoding (SplatFlow's
"stop-ray", applied once at the end here, not during the first steps). Datasets are nerfstudio
``transforms.json`` folders with views of the flow's size (64^2), objects in the frame of
``flow3d splat views``; a dataset of fewer than 8 views fills the remaining slots with free
generated views that are discarded.

    1. check the settings, inputs and outputs (before any model is loaded)
    2. read the dataset (complete / edit / poses) and build the known entries
    3. load the models and integrate
    4. fit the cameras, decode the Gaussians
    5. write the scene, the views (transforms.json) and a report
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flow3d.engine.checkpoint import PROJECT_ROOT, resolve_path
from flow3d.errors import ConfigError, DataError
from flow3d.io import atomic_write_text, check_output_dir, check_output_file, prepare_output_dir
from flow3d.options import add_overwrite_flag, check_float, check_int

CHECKPOINTS = PROJECT_ROOT / "checkpoints" / "splat"  # bundled, found from any directory
MAX_STEPS = 10_000
DEFAULT_STRENGTH = 0.3  # complete: how far the warped views are noised before the flow
TASKS = ("generate", "complete", "edit", "poses")


@dataclasses.dataclass(frozen=True)
class SplatFlowSettings:
    """Everything one SplatFlow task needs, checked once (``task`` says which)."""

    task: str
    out: Path
    dataset: Path | None = None  # complete / edit / poses
    label: str | None = None  # --class (generate, edit; optional for poses / complete)
    known: tuple[int, ...] = ()  # complete: the views given
    masks: Path | None = None  # edit: folder of one mask PNG per view (white = regenerate)
    steps: int = 50
    seed: int = 0
    cfg: float = 2.0  # guidance on colour and depth (rays get 1 when conditioned)
    flow: Path = CHECKPOINTS / "mvflow_class"
    decoder: Path = CHECKPOINTS / "gsdecoder"
    warp: bool = True  # complete: keep what the known views' Gaussians show (module docstring)
    strength: float | None = None  # complete with warp: SDEdit from the warped views (None:
    # DEFAULT_STRENGTH; 1: from noise)
    overwrite: bool = False

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"unknown SplatFlow task {self.task!r}")
        check_int(self.steps, "--steps", lo=1, hi=MAX_STEPS)
        check_int(self.seed, "--seed", lo=0, hi=2**63 - 1)
        check_float(self.cfg, "--cfg", lo=0.0, hi=100.0)
        if self.strength is not None:
            check_float(self.strength, "--strength", lo=0.0, hi=1.0, lo_open=True)
            if self.task != "complete" or not self.warp:
                raise ConfigError("--strength: applies to complete's warped views only (drop "
                                  "--no-warp or --strength)")
        if self.label is not None:
            from flow3d.mesh.condition import class_index

            class_index(self.label)
        if self.task in ("generate", "edit") and self.label is None:
            raise ConfigError(f"flow3d splat {self.task}: --class is required (the flow is "
                              "class-conditional)")
        if self.task == "complete" and not self.known:
            raise ConfigError("--known: name at least one view (e.g. --known 0,1,2,3)")
        if len(set(self.known)) != len(self.known):
            raise ConfigError(f"--known {','.join(map(str, self.known))}: a view is named twice")
        if self.task == "edit" and self.masks is None:
            raise ConfigError("flow3d splat edit: --mask is required")

    @property
    def sdedit_strength(self) -> float:
        """The SDEdit strength of complete's warped start (1 elsewhere: from noise)."""
        if self.task == "complete" and self.warp:
            return DEFAULT_STRENGTH if self.strength is None else self.strength
        return 1.0

    @property
    def scene_path(self) -> Path:
        """The Gaussians: ``--out`` itself for generate, ``--out/scene.ply`` otherwise."""
        return self.out if self.task == "generate" else self.out / "scene.ply"

    @property
    def views_dir(self) -> Path:
        """The views as a dataset: beside the scene for generate, in ``--out`` otherwise."""
        return self.out.with_name(self.out.stem + "_views") if self.task == "generate" \
            else self.out


@dataclasses.dataclass(frozen=True)
class Models:
    flow: torch.nn.Module
    head: object  # the splat_flow head (sampling settings, integration)
    decoder: torch.nn.Module


def load_models(s: SplatFlowSettings) -> Models:
    """The flow and the decoder (their folders were checked in step 1)."""
    from flow3d.engine.checkpoint import load_frozen, load_model

    loaded = load_model(s.flow)
    if loaded.recipe.head != "splat_flow":
        raise ConfigError(f"--flow {s.flow}: a {loaded.recipe.head!r} checkpoint, not splat_flow")
    decoder = load_frozen(s.decoder, "splat_decoder", "--decoder GSDecoder")
    return Models(loaded.model.eval().requires_grad_(False), loaded.head, decoder)


# ---- the known entries -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Known:
    """The state's known entries (``mask``, ``values`` ``[1, V T, dim]``) and the dataset's
    own cameras of its views (``None`` for generate)."""

    values: Tensor
    mask: Tensor
    cameras: object = None
    num_views: int = 0
    start: Tensor | None = None  # an estimate of the whole state to start from (SDEdit)


def read_views(s: SplatFlowSettings, layout) -> tuple[object, Tensor, Tensor, bool]:
    """The dataset's views as the flow's slots: ``(PosedImages, rgb [1, V, H, W, 3], depth
    [1, V, H, W, 1], has_depth)``, empty slots zero."""
    from flow3d.splat.dataset import load_dataset

    data = load_dataset(s.dataset, max_size=4096)
    w, h = data.cameras.width, data.cameras.height
    if (w, h) != (layout.size, layout.size):
        raise DataError(f"{s.dataset}: views are {w}x{h}; the flow generates "
                        f"{layout.size}x{layout.size} views (render them with flow3d splat "
                        f"views --size {layout.size})")
    if len(data) > layout.views:
        raise DataError(f"{s.dataset}: {len(data)} views; the flow holds {layout.views}")
    for k in s.known:
        if not 0 <= k < len(data):
            raise DataError(f"--known {k}: the dataset has views 0-{len(data) - 1}")
    if not torch.isfinite(data.images).all() or (
            data.depths is not None and not torch.isfinite(data.depths).all()):
        raise DataError(f"{s.dataset}: images or depths contain NaN or inf")
    v = len(data)
    mask = data.masks if data.masks is not None else torch.ones_like(data.images[..., :1])
    rgb = torch.zeros(1, layout.views, layout.size, layout.size, 3)
    depth = torch.zeros(1, layout.views, layout.size, layout.size, 1)
    rgb[0, :v] = data.images * (mask > 0)
    if data.depths is not None:
        depth[0, :v] = data.depths * (mask > 0)
    return data, rgb, depth, data.depths is not None


def slot_cameras(data, layout) -> tuple[Tensor, Tensor]:
    """``K [1, V, 3, 3]``, ``viewmats [1, V, 4, 4]``: the dataset's cameras, the empty slots
    given copies of its last (their rays are never known)."""
    return _slot_cameras(data.cameras, len(data), layout)


def _slot_cameras(cameras, v: int, layout) -> tuple[Tensor, Tensor]:
    slots = [min(i, v - 1) for i in range(layout.views)]
    return cameras.K[slots][None].float(), cameras.viewmats[slots][None].float()


def read_masks(s: SplatFlowSettings, data, layout) -> Tensor:
    """Edit masks ``[V, H, W]`` bool (True = regenerate) from ``--mask``: a folder with one PNG
    per view, named like the view's image file or by its index (``000.png``)."""
    from PIL import Image

    folder = Path(s.masks)
    if not folder.is_dir():
        raise DataError(f"--mask {folder}: no such folder (one PNG per view, white = "
                        "regenerate)")
    out = torch.zeros(layout.views, layout.size, layout.size, dtype=torch.bool)
    for i, name in enumerate(data.names):
        candidates = [folder / Path(name).name, folder / f"{i:03d}.png"]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            continue  # a view without a mask is kept whole
        try:
            with Image.open(path) as im:
                m = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        except Exception as e:  # noqa: BLE001 - any decoder failure is the file's fault
            raise DataError(f"--mask {path}: cannot be read as an image ({e})") from None
        if m.shape != (layout.size, layout.size):
            raise DataError(f"--mask {path}: {m.shape[1]}x{m.shape[0]}, but the views are "
                            f"{layout.size}x{layout.size}")
        out[i] = torch.from_numpy(m > 0.5)
    if not out.any():
        raise DataError(f"--mask {folder}: no view has a masked pixel (white = regenerate)")
    return out


def known_entries(s: SplatFlowSettings, layout) -> Known:
    """Step 2: what the task keeps (module docstring), from the dataset."""
    if s.task == "generate":
        return known_state(layout, "generate")
    data, rgb, depth, has_depth = read_views(s, layout)
    if s.task in ("complete", "edit") and not has_depth:
        raise DataError(f"{s.dataset}: no depth maps; {s.task} keeps the given colour and "
                        "depth")
    K, vm = slot_cameras(data, layout)
    edit = read_masks(s, data, layout) if s.task == "edit" else None
    return known_state(layout, s.task, rgb=rgb, depth=depth if has_depth else None, K=K,
                       viewmats=vm, num_views=len(data), known=s.known, edit_mask=edit,
                       cameras=data.cameras)


def known_state(layout, task: str, **views) -> Known:
    """The known entries of ``task`` from tensors: ``rgb [1, V, H, W, 3]``, ``depth`` (or
    None: colour only), cameras ``K``, ``viewmats`` ``[1, V, ...]`` of the flow's ``V`` slots,
    of which the first ``num_views`` are real; ``known`` (complete), ``edit_mask [V, H, W]``
    (edit, True = regenerate); ``cameras`` the views' own (kept in the result)."""
    shape = (1, layout.views * layout.tokens_per_view, layout.dim)
    if task == "generate":
        return Known(torch.zeros(shape), torch.zeros(shape, dtype=torch.bool))
    rgb, depth, v = views["rgb"], views["depth"], views["num_views"]
    has_depth = depth is not None
    depth = depth if has_depth else torch.zeros_like(rgb[..., :1])
    values = layout.to_state(rgb, depth, views["K"], views["viewmats"])
    pixels = torch.zeros(layout.views, layout.size, layout.size, dtype=torch.bool)
    rays = torch.zeros(layout.views, dtype=torch.bool)
    if task == "complete":
        pixels[list(views["known"])] = True
        rays[:v] = True
    elif task == "edit":
        pixels[:v] = ~views["edit_mask"][:v]
        rays[:v] = True
    else:  # poses
        pixels[:v] = True
    mask = layout.pixel_mask(pixels, ("rgb", "depth") if has_depth else ("rgb",))
    mask[..., layout.groups()["rays"]] |= layout.view_mask(rays.nonzero()[:, 0].tolist())[0]
    values = torch.where(mask, values, torch.zeros_like(values))  # nothing else is read
    return Known(values, mask, views.get("cameras"), v)


WARP_SEEN_ALPHA = 0.5  # a warped pixel this opaque is known (its colour and depth)
HULL_DILATION = 1  # pixels the known silhouettes grow by before carving (sampling, edges)
HULL_BOUND = 0.5  # half-size of the object's cube in flow3d splat views's frame
HULL_MARGIN = 1.05  # the cube grows to hold every known point with this margin


def known_hull(depth: Tensor, cameras, views: list[int]) -> tuple[Tensor, float]:
    """The silhouettes the known ``views`` carve with (dilated by :data:`HULL_DILATION`) and
    the half-size of the object's cube (:func:`hull_bound`)."""
    from flow3d.splat.hull import dilate

    return dilate(depth[views, ..., 0] > 0, HULL_DILATION), hull_bound(depth, cameras, views)


def hull_bound(depth: Tensor, cameras, views: list[int]) -> float:
    """Half-size of the cube the object lies in: :data:`HULL_BOUND` (``flow3d splat views``
    frames objects in it), grown when the known views' own points reach further (a dataset in
    another frame), so the carving never cuts what the known views see."""
    from flow3d.splat.dataset import backproject

    points, _ = backproject(depth[views], cameras[views])
    reach = float(points.abs().max()) * HULL_MARGIN if len(points) else 0.0
    return max(HULL_BOUND, reach)


def warp_known(decoder, layout, known: Known, views: tuple[int, ...]) -> Known:
    """``complete``'s known entries grown by what the known ``views`` show elsewhere (module
    docstring): their GSDecoder Gaussians rendered at the other cameras give the colour and
    depth of pixels at least :data:`WARP_SEEN_ALPHA` opaque; pixels whose rays miss the
    known silhouettes' visual hull are background. Returns ``known`` unchanged when every view
    is known."""
    from flow3d.splat.decoder import decode_scene
    from flow3d.splat.hull import outside_hull
    from flow3d.splat.render import render

    kv = list(views)
    novel = [i for i in range(known.num_views) if i not in kv]
    if not novel:
        return known
    cams = known.cameras.to(torch.float32)
    rgb, depth, _ = layout.split(known.values)
    rgb, depth = rgb[0].clone(), depth[0].clone()
    with torch.no_grad():
        g = decode_scene(decoder, rgb[kv], depth[kv], cams[kv])
        out = render(g, cams[novel], settings=decoder.cfg.render_settings())
    seen = out.alpha[..., 0] >= WARP_SEEN_ALPHA
    masks, bound = known_hull(depth, cams, kv)
    empty = outside_hull(masks, cams[kv], cams[novel], bound=bound)
    rgb[novel] = torch.where(seen[..., None], out.rgb.clamp(0, 1), torch.zeros_like(out.rgb))
    depth[novel] = torch.where(seen[..., None], out.depth, torch.zeros_like(out.depth))
    K, vm = _slot_cameras(cams, known.num_views, layout)
    values = layout.to_state(rgb[None], depth[None], K, vm)  # rays: the known ones below
    pixels = torch.zeros(layout.views, layout.size, layout.size, dtype=torch.bool)
    pixels[novel] = seen | empty
    mask = known.mask | layout.pixel_mask(pixels)
    # the start: every novel pixel as the Gaussians show it, however faint
    rgb[novel] = out.rgb.clamp(0, 1)
    depth[novel] = torch.where(out.alpha >= 1.0 / 255, out.depth, torch.zeros_like(out.depth))
    start = layout.to_state(rgb[None], depth[None], K, vm)
    grown = torch.where(known.mask, known.values, torch.where(mask, values, 0.0))
    start = torch.where(mask, grown, start)
    # the empty slots of a dataset of fewer views start as copies of a known view (image,
    # depth and rays), as in training, rather than as empty views at another's camera
    t = layout.tokens_per_view
    for slot in range(known.num_views, layout.views):
        start[:, slot * t: (slot + 1) * t] = start[:, kv[0] * t: (kv[0] + 1) * t]
    return Known(grown, mask, known.cameras, known.num_views, start=start)


def drop_outside_hull(rgb: Tensor, depth: Tensor, cameras, views: tuple[int, ...],
                      generated: Tensor) -> tuple[Tensor, Tensor]:
    """``complete``'s generated pixels cleaned: a pixel set in ``generated [V, H, W]`` whose
    point (its ray at its depth) lies outside the visual hull of the known ``views``, or
    outside the object's cube (:func:`hull_bound`), becomes background (``rgb [V, H, W,
    3]``, ``depth [V, H, W, 1]``). Such a point is a floater: a known view that sees it shows
    background there, or it lies beyond every point the known views show."""
    from flow3d.splat.dataset import backproject
    from flow3d.splat.hull import in_hull

    kv = list(views)
    cams = cameras.to(torch.float32)
    points, index = backproject(depth * generated[..., None], cams)
    masks, bound = known_hull(depth, cams, kv)
    out = index[~in_hull(points, masks, cams[kv], bound=bound)]
    view, y, x = out[:, 0], out[:, 1], out[:, 2]
    rgb, depth = rgb.clone(), depth.clone()
    rgb[view, y, x] = 0.0
    depth[view, y, x] = 0.0
    return rgb, depth


# ---- the pipeline ------------------------------------------------------------------------------
def check_outputs(s: SplatFlowSettings) -> None:
    """Step 1's output half: the scene file and the views folder, refused before any work."""
    from flow3d.splat.formats import SUFFIXES

    if s.task == "generate":
        check_output_file(s.out, "--out", overwrite=s.overwrite, suffixes=SUFFIXES)
        check_output_dir(s.views_dir, "--out (its _views folder)", overwrite=s.overwrite)
    else:
        check_output_dir(s.out, "--out", overwrite=s.overwrite)


def check_inputs(s: SplatFlowSettings) -> None:
    from flow3d.splat.dataset import transforms_path

    if s.dataset is not None:
        transforms_path(s.dataset)
    if s.task == "edit" and not Path(s.masks).is_dir():
        raise DataError(f"--mask {s.masks}: no such folder (one PNG per view, white = "
                        "regenerate)")
    for path, opt in ((s.flow, "--flow"), (s.decoder, "--decoder")):
        if not Path(path).is_dir():
            raise DataError(f"{opt} {path}: no such checkpoint folder")


def run_task(s: SplatFlowSettings) -> dict:
    """Steps 1-5 of the module docstring; returns the report (also written as report.json)."""
    from flow3d.splat.formats import save_scene
    from flow3d.splat.mvflow import SceneLayout
    from flow3d.splat.rays import pose_errors

    # 1. inputs and outputs
    check_inputs(s)
    check_outputs(s)
    flow_cfg = _flow_config(s.flow)
    layout = SceneLayout(flow_cfg.views, flow_cfg.size, flow_cfg.patch, flow_cfg.near,
                         flow_cfg.far)
    # 2. known entries (reads the dataset: every error in it is reported here)
    known = known_entries(s, layout)
    # 3-4. integrate, fit the cameras, decode
    models = load_models(s)
    result = synthesize(models, layout, known, s)
    scene, n = result.scene, result.views
    # 5. write
    report = {"task": s.task, "class": s.label, "views": n, "steps": s.steps, "seed": s.seed,
              "gaussians": len(scene), "flow_seconds": round(result.flow_seconds, 2),
              "seconds": round(result.seconds, 2), "scene": str(s.scene_path),
              "views_dir": str(s.views_dir)}
    if s.task == "complete":
        report["warp"] = s.warp
        report["strength"] = s.sdedit_strength
    if s.task == "poses":
        err = pose_errors(result.fitted, known.cameras, align=False)
        report["rotation_error_deg"] = [round(float(e), 2) for e in err["rotation_deg"]]
        report["center_error"] = [round(float(e), 4) for e in err["center"]]
    if s.task != "generate":
        prepare_output_dir(s.out, overwrite=s.overwrite)
    else:
        prepare_output_dir(s.views_dir, overwrite=s.overwrite)
    save_scene(scene.detach(), s.scene_path)
    _write_views(s.views_dir, result.rgb, result.depth, result.cameras, report)
    atomic_write_text(s.views_dir / "report.json", json.dumps(report, indent=1) + "\n")
    return report


@dataclasses.dataclass(frozen=True)
class Result:
    """A task's output: the views ``rgb [V, H, W, 3]``, ``depth [V, H, W, 1]``, the generated
    rays ``[V, 6, g, g]``, the cameras fitted to them, the cameras the views are decoded and
    written with (the dataset's own for complete / edit, else the fitted ones) and the
    Gaussians; seconds for the flow alone and in all."""

    rgb: Tensor
    depth: Tensor
    rays: Tensor
    fitted: object
    cameras: object
    scene: object
    flow_seconds: float
    seconds: float

    @property
    def views(self) -> int:
        return self.rgb.shape[0]


def synthesize(models: Models, layout, known: Known, s: SplatFlowSettings) -> Result:
    """Steps 3-4: integrate with the known entries inpainted, fit the cameras, decode."""
    from flow3d.core.guidance import Inpainting
    from flow3d.mesh.condition import class_index
    from flow3d.splat.decoder import decode_scene
    from flow3d.splat.rays import cameras_from_rays

    t_all = time.perf_counter()
    if s.task == "complete" and s.warp:
        known = warp_known(models.decoder, layout, known, s.known)
    t0 = time.perf_counter()
    labels = None if s.label is None else torch.tensor([class_index(s.label)])
    w = s.cfg if labels is not None else 0.0
    hooks = [Inpainting(known.values, known.mask,
                        generator=torch.Generator().manual_seed(s.seed + 1))] \
        if known.mask.any() else []
    with torch.no_grad():
        x = models.head.sample_states(models.flow, labels, 1, seed=s.seed, hooks=hooks,
                                      start=known.start, strength=s.sdedit_strength,
                                      steps=s.steps,
                                      cfg_rgb=w, cfg_depth=w,
                                      cfg_rays=1.0 if labels is not None else 0.0)
    rgb, depth, rays = layout.split(x)  # known entries: set exactly by Inpainting at t = 1
    flow_s = time.perf_counter() - t0
    n = layout.views if s.task == "generate" else known.num_views
    rgb, depth, rays = rgb[0, :n], depth[0, :n], rays[0, :n]
    if s.task == "complete" and s.warp:
        generated = ~layout.known_pixels(known.mask)[:n]
        rgb, depth = drop_outside_hull(rgb, depth, known.cameras, s.known, generated)
    try:
        fitted = cameras_from_rays(rays, layout.size, layout.size,
                                   principal_point=(layout.size / 2, layout.size / 2))
    except ValueError as e:  # generated rays that no pinhole camera has
        raise DataError(f"the generated rays do not form cameras ({e}); try another --seed "
                        "or more --steps") from None
    # complete / edit decode at the cameras asked for (the dataset's, checked to be size^2)
    cams = known.cameras.to(torch.float32) if s.task in ("complete", "edit") else fitted
    with torch.no_grad():
        scene = decode_scene(models.decoder, rgb, depth, cams)
    return Result(rgb, depth, rays, fitted, cams, scene, flow_s, time.perf_counter() - t_all)


def _flow_config(path: Path):
    """The flow's model section, read from its recipe without loading weights (for step 2)."""
    from flow3d.engine.checkpoint import read_recipe

    try:
        recipe = read_recipe(path)
    except FileNotFoundError as e:
        raise DataError(f"--flow {path}: no checkpoint here ({e})") from None
    if recipe.head != "splat_flow":
        raise ConfigError(f"--flow {path}: a {recipe.head!r} checkpoint, not splat_flow")
    return recipe.model


def _write_views(folder: Path, rgb: Tensor, depth: Tensor, cameras, report: dict) -> Path:
    """The views as a ``transforms.json`` dataset (RGBA: alpha = where there is depth)."""
    from flow3d.splat.dataset import save_dataset

    alpha = (depth > 0).float()
    rgba = torch.cat([rgb, alpha], -1).clamp(0, 1)
    return save_dataset(folder, np.round(rgba.numpy() * 255).astype(np.uint8), cameras,
                        depths=depth[..., 0].numpy(),
                        extra={"flow3d_splatflow": {k: report[k] for k in
                                                    ("task", "class", "steps", "seed")}})


# ---- command line --------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=50, help="ODE solver steps")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--cfg", type=float, default=2.0, help="guidance on colour and depth "
                   "(rays: 1) when a class is given; 0 = conditional only")
    p.add_argument("--flow", default=str(CHECKPOINTS / "mvflow_class"),
                   help="multi-view flow checkpoint (splat_flow)")
    p.add_argument("--decoder", default=str(CHECKPOINTS / "gsdecoder"),
                   help="GSDecoder checkpoint (splat_decoder)")
    add_overwrite_flag(p)


def _known(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give view indices like 0,1,2,3") from None


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--class", dest="label", required=True, metavar="NAME",
                   help="CAPOD class (e.g. chair)")
    p.add_argument("--out", required=True, help="scene file (.ply, .splat, .spz); the 8 views "
                   "and their cameras go to <out>_views/ (transforms.json)")
    _common(p)


def add_complete_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="dataset (transforms.json, 64x64 views with depth): the "
                   "cameras of every view; images of the --known ones")
    p.add_argument("--known", type=_known, required=True, help="views given, e.g. 0,1,2,3")
    p.add_argument("--class", dest="label", metavar="NAME", help="CAPOD class (optional)")
    p.add_argument("--out", required=True, help="folder: completed views + scene.ply")
    p.add_argument("--no-warp", action="store_true", help="generate the other views whole "
                   "(SplatFlow), not only what the known views' Gaussians cannot show")
    p.add_argument("--strength", type=float, default=None, help="how far the warped views "
                   f"are noised before the flow completes them (0 < s <= 1, default "
                   f"{DEFAULT_STRENGTH}; 1 = from pure noise)")
    _common(p)


def add_edit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="dataset (transforms.json, 64x64 views with depth)")
    p.add_argument("--mask", dest="masks", required=True, help="folder with one PNG per view "
                   "(named like its image or 000.png ...; white = regenerate)")
    p.add_argument("--class", dest="label", required=True, metavar="NAME",
                   help="CAPOD class of the regenerated region")
    p.add_argument("--out", required=True, help="folder: edited views + scene.ply")
    _common(p)


def add_poses_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="dataset (transforms.json, 64x64 views; depth optional)")
    p.add_argument("--class", dest="label", metavar="NAME", help="CAPOD class (optional)")
    p.add_argument("--out", required=True, help="folder: the views with estimated cameras + "
                   "scene.ply + report.json (errors against the dataset's cameras)")
    _common(p)


def _settings(task: str, args: argparse.Namespace) -> SplatFlowSettings:
    return SplatFlowSettings(
        task=task, out=Path(args.out), dataset=Path(args.dataset) if task != "generate"
        else None, label=args.label, known=getattr(args, "known", ()),
        masks=Path(args.masks) if getattr(args, "masks", None) else None, steps=args.steps,
        seed=args.seed, cfg=args.cfg, flow=resolve_path(args.flow),
        decoder=resolve_path(args.decoder), warp=not getattr(args, "no_warp", False),
        strength=getattr(args, "strength", None),
        overwrite=args.overwrite)


def _run(task: str, args: argparse.Namespace) -> int:
    report = run_task(_settings(task, args))
    print(json.dumps(report, indent=1))  # noqa: T201 - the command's report
    return 0


def run_generate(args: argparse.Namespace) -> int:
    return _run("generate", args)


def run_complete(args: argparse.Namespace) -> int:
    return _run("complete", args)


def run_edit(args: argparse.Namespace) -> int:
    return _run("edit", args)


def run_poses(args: argparse.Namespace) -> int:
    return _run("poses", args)


# ---- make demo -----------------------------------------------------------------------------
def demo(out_dir: str | Path, *, steps: int = 25) -> dict:
    """``make demo``'s SplatFlow part: an airplane scene generated (``scene.ply`` and its views
    in ``scene_views/``), then edited: the lower half of the object in every view regenerated
    as a chair (``edited/``); ``views.png`` shows generated views above edited ones."""
    from PIL import Image

    from flow3d.mesh.render import image_grid, save_png
    from flow3d.splat.dataset import load_dataset

    out = prepare_output_dir(Path(out_dir), overwrite=True)
    gen = run_task(SplatFlowSettings(task="generate", out=out / "scene.ply", label="airplane",
                                     steps=steps))
    views = load_dataset(out / "scene_views")
    masks = out / "masks"
    masks.mkdir()
    for i, depth in enumerate(views.depths[..., 0] > 0):
        m = np.zeros(depth.shape, np.uint8)
        ys, xs = np.nonzero(depth.numpy())
        if len(ys):
            mid = (int(ys.min()) + int(ys.max())) // 2
            m[mid: int(ys.max()) + 3, max(int(xs.min()) - 2, 0): int(xs.max()) + 3] = 255
        Image.fromarray(m).save(masks / f"{i:03d}.png")
    edit = run_task(SplatFlowSettings(task="edit", out=out / "edited",
                                      dataset=out / "scene_views", masks=masks, label="chair",
                                      steps=steps))
    edited = load_dataset(out / "edited")
    tiles = torch.cat([views.images, edited.images]).numpy()
    png = save_png(image_grid(np.round(tiles * 255).astype(np.uint8), cols=len(views)),
                   out / "views.png")
    return {"scene": gen["scene"], "edited": edit["scene"], "png": str(png),
            "seconds": gen["seconds"] + edit["seconds"]}
