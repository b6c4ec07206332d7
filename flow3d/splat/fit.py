"""``flow3d splat fit DATASET --out scene.ply``: 3D Gaussian splatting (Kerbl et al. 2023) on a
CPU, from a posed-image dataset (:mod:`flow3d.splat.dataset`).

    1. check the settings, the dataset and the outputs (before any work)
    2. load the views; hold out every 8th for evaluation
    3. initialise: back-projected depth (subsampled) or, without depth, random points in the
       box the cameras look at (carved by the masks when there are masks)
    4. optimise: one random training view per step, loss ``0.8 L1 + 0.2 (1 - SSIM)`` (+ depth
       and mask terms when the dataset has them), Adam with 3DGS's per-parameter learning rates
       (means ``1.6e-4 -> 1.6e-6`` x scene extent, exponential decay), SH degree raised every
       ``sh_every`` steps, adaptive density control (:mod:`flow3d.splat.density`) every
       ``densify_every`` steps between ``densify_from`` and ``densify_until``, opacity reset
       every ``opacity_reset_every``; a checkpoint every ``checkpoint_every`` steps
    5. evaluate PSNR/SSIM on the held-out views; write the scene and ``<stem>.metrics.json``

Outputs follow the output rule (:mod:`flow3d.io`): ``--out`` and its metrics file are refused
when they exist unless ``--overwrite``. Checkpoints live in the sibling folder
``<stem>.fit/`` (``checkpoint.pt``, written atomically); ``--resume`` continues from it with the
same settings (``--steps`` may grow) and is bit-exact with an uninterrupted run, since the view
order and the split noise come from generators saved in the checkpoint. The folder is removed
when the run finishes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from flow3d.errors import ConfigError, DataError, TrainingError
from flow3d.io import atomic_path, atomic_write_text, check_output_file
from flow3d.options import add_overwrite_flag, check_float, check_int, float_range, int_range
from flow3d.splat import density, sh
from flow3d.splat.cameras import Cameras
from flow3d.splat.dataset import PosedImages, backproject, load_dataset, transforms_path
from flow3d.splat.density import DensityControl, SplatParams
from flow3d.splat.gaussians import Gaussians
from flow3d.splat.metrics import photometric_loss, psnr, ssim
from flow3d.splat.render import BACKENDS, RenderSettings, render

SCENE_SUFFIXES = (".ply", ".splat", ".spz")
# settings that may differ between a run and its --resume
RESUMABLE_CHANGES = ("out", "steps", "overwrite", "resume", "progress", "checkpoint_every",
                     "max_minutes", "max_cpu_minutes")


@dataclass(frozen=True)
class FitSettings:
    dataset: Path
    out: Path
    steps: int = 3000
    sh_degree: int = 3
    sh_every: int = 1000  # raise the active SH degree every this many steps
    backend: str = "cpu"
    seed: int = 0
    max_gaussians: int = 300_000
    init_points: int = 20_000
    init_opacity: float = 0.1
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ssim_weight: float = 0.2
    depth_weight: float = 0.1  # used when the dataset has depth
    mask_weight: float = 0.1  # used when the dataset has masks
    # learning rates (3DGS); means are in units of the scene extent
    lr_means: float = 1.6e-4
    lr_means_final: float = 1.6e-6
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacity: float = 5e-2
    lr_sh0: float = 2.5e-3
    lr_shN: float = 2.5e-3 / 20
    # adaptive density control
    densify_from: int | None = None  # None: min(500, steps / 10) (3DGS: 500 of 30k)
    densify_until: int | None = None  # None: half the steps (3DGS: 15k of 30k)
    densify_every: int = 100
    opacity_reset_every: int = 3000
    grad_threshold: float = 2e-4
    checkpoint_every: int = 500  # 0: never
    max_minutes: float | None = None  # stop early after this much wall-clock time
    max_cpu_minutes: float | None = None  # ... or this much CPU time (all threads; benchmarks)
    progress: bool = True
    overwrite: bool = False
    resume: bool = False

    def __post_init__(self) -> None:
        check_int(self.steps, "--steps", lo=1)
        check_int(self.sh_degree, "--sh-degree", lo=0, hi=sh.MAX_DEGREE)
        check_int(self.sh_every, "--sh-every", lo=1)
        check_int(self.max_gaussians, "--max-gaussians", lo=1)
        check_int(self.init_points, "--init-points", lo=1)
        if self.densify_from is not None:
            check_int(self.densify_from, "--densify-from", lo=0)
        check_int(self.densify_every, "--densify-every", lo=1)
        check_int(self.opacity_reset_every, "opacity_reset_every", lo=1)
        check_int(self.checkpoint_every, "--checkpoint-every", lo=0)
        for name in ("max_minutes", "max_cpu_minutes"):
            if getattr(self, name) is not None:
                check_float(getattr(self, name), name, lo=0.0, lo_open=True)
        if self.densify_until is not None:
            check_int(self.densify_until, "--densify-until", lo=0)
        for name in ("ssim_weight", "depth_weight", "mask_weight"):
            check_float(getattr(self, name), name.replace("_", "-"), lo=0.0)
        check_float(self.ssim_weight, "ssim_weight", hi=1.0)
        check_float(self.init_opacity, "init_opacity", lo=0.0, hi=1.0, lo_open=True)
        for name in ("lr_means", "lr_means_final", "lr_scales", "lr_quats", "lr_opacity",
                     "lr_sh0", "lr_shN", "grad_threshold"):
            check_float(getattr(self, name), name, lo=0.0)
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend {self.backend}: choose from {', '.join(BACKENDS)}")
        if len(self.background) != 3:
            raise ConfigError(f"background {self.background}: expected three numbers")
        if self.overwrite and self.resume:
            raise ConfigError("--overwrite and --resume: choose one")

    @property
    def densify_start(self) -> int:
        return min(500, self.steps // 10) if self.densify_from is None else self.densify_from

    @property
    def densify_stop(self) -> int:
        return self.steps // 2 if self.densify_until is None else self.densify_until

    @property
    def metrics_path(self) -> Path:
        return self.out.with_name(self.out.stem + ".metrics.json")

    @property
    def run_dir(self) -> Path:
        return self.out.with_name(self.out.stem + ".fit")

    @property
    def control(self) -> DensityControl:
        return DensityControl(grad_threshold=self.grad_threshold,
                              max_gaussians=self.max_gaussians)

    def as_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v)
                for k, v in dataclasses.asdict(self).items()}


# ---- command line ----------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="dataset folder (or its transforms.json)")
    p.add_argument("--out", required=True, help="scene to write (.ply, .splat or .spz)")
    p.add_argument("--steps", type=int_range(1), default=3000, help="optimisation steps")
    p.add_argument("--sh-degree", type=int_range(0, 3), default=3, help="highest SH degree")
    p.add_argument("--sh-every", type=int_range(1), default=1000,
                   help="raise the SH degree every this many steps")
    p.add_argument("--backend", choices=BACKENDS, default="cpu", help="rasterizer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-gaussians", type=int_range(1), default=300_000,
                   help="cap on the number of Gaussians (memory control)")
    p.add_argument("--init-points", type=int_range(1), default=20_000,
                   help="initial Gaussians (from depth, or random)")
    p.add_argument("--densify-from", type=int_range(0), default=None,
                   help="first densification step (default: min(500, steps / 10))")
    p.add_argument("--densify-until", type=int_range(0), default=None,
                   help="last densification step (default: half the steps)")
    p.add_argument("--densify-every", type=int_range(1), default=100)
    p.add_argument("--depth-weight", type=float_range(0.0), default=0.1,
                   help="weight of the depth L1 term (datasets with depth)")
    p.add_argument("--mask-weight", type=float_range(0.0), default=0.1,
                   help="weight of the alpha-vs-mask L1 term (datasets with masks)")
    p.add_argument("--background", choices=("black", "white"), default="black",
                   help="colour behind the object (masked datasets are composited on it)")
    p.add_argument("--checkpoint-every", type=int_range(0), default=500,
                   help="steps between checkpoints in <stem>.fit/ (0: none)")
    p.add_argument("--max-minutes", type=float_range(0.0, lo_open=True), default=None,
                   help="stop after this many minutes of optimisation (the learning-rate "
                        "and densification schedules still span --steps)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_overwrite_flag(p, resumable=True)


def settings_from_args(args: argparse.Namespace) -> FitSettings:
    return FitSettings(
        dataset=Path(args.dataset), out=Path(args.out), steps=args.steps,
        sh_degree=args.sh_degree, sh_every=args.sh_every, backend=args.backend, seed=args.seed,
        max_gaussians=args.max_gaussians, init_points=args.init_points,
        densify_from=args.densify_from, densify_until=args.densify_until,
        densify_every=args.densify_every,
        depth_weight=args.depth_weight, mask_weight=args.mask_weight,
        background=(1.0, 1.0, 1.0) if args.background == "white" else (0.0, 0.0, 0.0),
        checkpoint_every=args.checkpoint_every, max_minutes=args.max_minutes,
        progress=not args.no_progress,
        overwrite=args.overwrite, resume=args.resume)


def run(args: argparse.Namespace) -> int:
    metrics = fit(settings_from_args(args))
    print(json.dumps(metrics, indent=1))  # noqa: T201 - the command's report
    return 0


# ---- pipeline --------------------------------------------------------------------------------
def fit(s: FitSettings) -> dict:
    """Steps 1-5 of the module docstring; returns the metrics written beside the scene."""
    # 1. everything checked before any work
    checkpoint = check_outputs(s)
    transforms_path(s.dataset)
    # 2. data
    data = load_dataset(s.dataset)
    train, test = data.split()
    background = torch.tensor(s.background)
    targets = train.composited(background)
    extent = scene_extent(train.cameras)
    # 3. initial Gaussians (or the checkpoint's)
    generator = torch.Generator().manual_seed(s.seed)
    params = SplatParams(initial_gaussians(train, s, generator), learning_rates(s, extent))
    start, order = 0, torch.empty(0, dtype=torch.long)
    if checkpoint is not None:
        start, order = load_checkpoint(checkpoint, params, generator)
    # 4. optimise
    if checkpoint is None:  # an earlier run's checkpoint must not outlive --overwrite
        shutil.rmtree(s.run_dir, ignore_errors=True)
    t0, cpu0 = time.perf_counter(), time.process_time()
    last = optimise(params, train, targets, s, extent, generator, start, order)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    # 5. evaluate and write
    scene = params.gaussians().detach().check_finite("fitted scene")
    metrics = {"dataset": str(s.dataset), "steps": last, "resumed_from": start,
               "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
               "threads": torch.get_num_threads(), "backend": s.backend,
               "num_gaussians": len(scene), "train_views": len(train),
               "test_views": 0 if test is None else len(test),
               "image_size": [data.cameras.width, data.cameras.height]}
    metrics.update(evaluate(scene, test, s, prefix="test"))
    metrics.update(evaluate(scene, train, s, prefix="train"))
    from flow3d.splat.formats import save_scene

    save_scene(scene, s.out)
    atomic_write_text(s.metrics_path, json.dumps(metrics, indent=1) + "\n")
    shutil.rmtree(s.run_dir, ignore_errors=True)
    return metrics


def check_outputs(s: FitSettings) -> dict | None:
    """The output rule for the scene, its metrics and the run folder; returns the checkpoint
    to resume from (None: start afresh), read before any write probe."""
    ckpt = s.run_dir / "checkpoint.pt"
    if s.resume and ckpt.is_file():
        state = read_checkpoint(ckpt, s)
        check_output_file(s.out, overwrite=True, suffixes=SCENE_SUFFIXES)
        check_output_file(s.metrics_path, overwrite=True)
        return state
    if s.resume and s.out.exists():
        raise DataError(f"--resume: {s.run_dir} holds no checkpoint and {s.out} exists (the run "
                        "finished); pass --overwrite to fit again")
    # every refusal first, then the write probes
    if s.run_dir.exists() and not s.overwrite and not s.resume:
        raise DataError(f"--out {s.out}: {s.run_dir} holds an interrupted run; pass --resume "
                        "to continue it or --overwrite to start again")
    if s.metrics_path.exists() and not s.overwrite and not s.out.exists():
        raise DataError(f"--out {s.out}: {s.metrics_path} exists; pass --overwrite to "
                        "replace it")
    check_output_file(s.out, overwrite=s.overwrite, suffixes=SCENE_SUFFIXES)
    check_output_file(s.metrics_path, "--out", overwrite=s.overwrite)
    return None


def scene_extent(cameras: Cameras) -> float:
    """3DGS's scene size: 1.1 x the largest distance of a camera from the cameras' centroid."""
    centers = cameras.centers.to(torch.float64)
    radius = float((centers - centers.mean(0)).norm(dim=-1).max())
    return 1.1 * radius if radius > 0 else 1.0


def learning_rates(s: FitSettings, extent: float) -> dict[str, float]:
    return {"means": s.lr_means * extent, "quats": s.lr_quats, "log_scales": s.lr_scales,
            "opacity_logits": s.lr_opacity, "sh0": s.lr_sh0, "shN": s.lr_shN}


def initial_gaussians(train: PosedImages, s: FitSettings, generator: torch.Generator
                      ) -> Gaussians:
    """Depth points with their pixel colours, else random points in the view box."""
    if train.depths is not None and (train.depths > 0).any():
        points, index = backproject(train.depths, train.cameras)
        pick = torch.randperm(len(points), generator=generator)[:s.init_points]
        points, index = points[pick], index[pick]
        colors = train.images[index[:, 0], index[:, 1], index[:, 2]]
    else:
        points = random_points(train, s.init_points, generator)
        colors = torch.rand(len(points), 3, generator=generator)
    g = Gaussians.from_points(points, colors, opacity=s.init_opacity, sh_degree=s.sh_degree)
    return Gaussians(g.means, g.quats, density.initial_log_scales(points), g.opacity_logits, g.sh)


def random_points(train: PosedImages, num: int, generator: torch.Generator) -> Tensor:
    """``num`` points uniform in the cube around the point nearest every camera's optical axis
    (half-size: what the median camera sees at that distance); with masks, points outside
    the object's silhouette in any view that sees them are redrawn (up to 20 rounds)."""
    cams = train.cameras
    c2w = cams.camtoworlds.to(torch.float64)
    origins, dirs = c2w[:, :3, 3], c2w[:, :3, 2]  # camera centres, optical axes
    proj = torch.eye(3, dtype=torch.float64) - dirs[:, :, None] * dirs[:, None, :]
    center = torch.linalg.lstsq(proj.sum(0), (proj @ origins[..., None]).sum(0)).solution[:, 0]
    dist = (origins - center).norm(dim=-1).median()
    half = float(dist * 0.5 * cams.width / cams.K[:, 0, 0].median())
    kept = []
    for _ in range(20):
        p = (torch.rand(num * 4, 3, generator=generator, dtype=torch.float64) * 2 - 1) * half
        p = p + center
        if train.masks is not None:
            p = p[inside_silhouettes(p, train)]
        kept.append(p)
        if sum(len(k) for k in kept) >= num:
            break
    points = torch.cat(kept)[:num]
    if len(points) == 0:
        raise DataError(f"{train.names[0]}: the masks leave no room for initial points")
    return points.to(torch.float32)


def inside_silhouettes(points: Tensor, views: PosedImages) -> Tensor:
    """``[M]`` True where no view that sees the point has mask < 0.5 there."""
    from flow3d.splat import hull

    return hull.inside_silhouettes(points, views.masks[..., 0] >= 0.5, views.cameras)


def optimise(params: SplatParams, train: PosedImages, targets: Tensor, s: FitSettings,
             extent: float, generator: torch.Generator, start: int, order: Tensor) -> int:
    """Steps ``start`` to ``s.steps`` (or until ``s.max_minutes``); returns the last step."""
    from tqdm import tqdm

    deadline = None if s.max_minutes is None else time.perf_counter() + 60 * s.max_minutes
    cpu_deadline = None if s.max_cpu_minutes is None else \
        time.process_time() + 60 * s.max_cpu_minutes
    done = start
    settings = RenderSettings(background=s.background)
    control = s.control
    bar = tqdm(total=s.steps, initial=start, disable=not s.progress, desc="fit",
               unit="step", dynamic_ncols=True)
    for step in range(start, s.steps):
        if len(order) == 0:  # a fresh random order of the training views per epoch
            order = torch.randperm(len(train), generator=generator)
        view, order = int(order[0]), order[1:]
        t = step / max(1, s.steps - 1)
        params.set_lr("means", math.exp((1 - t) * math.log(s.lr_means * extent)
                                        + t * math.log(max(s.lr_means_final, 1e-20) * extent)))
        degree = min(s.sh_degree, step // s.sh_every)
        out = render(params.gaussians(), train.cameras[view], backend=s.backend,
                     settings=dataclasses.replace(settings, sh_degree=degree))
        out.projected.means2d.retain_grad()
        loss = step_loss(out, train, targets, view, s)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(f"fit: loss is {value} at step {step}; try a lower "
                                "learning rate or --sh-degree 0")
        loss.backward()
        params.accumulate(out.projected, train.cameras.width, train.cameras.height)
        params.step()
        done = step + 1
        refine(params, control, s, extent, generator, done)
        if s.checkpoint_every and done % s.checkpoint_every == 0 and done < s.steps:
            save_checkpoint(s, params, generator, done, order)
        bar.update(1)
        if done % 10 == 0 or done == s.steps:
            bar.set_postfix(loss=f"{value:.4f}", n=len(params))
        if (deadline is not None and time.perf_counter() > deadline) or (
                cpu_deadline is not None and time.process_time() > cpu_deadline):
            break
    bar.close()
    return done


def step_loss(out, train: PosedImages, targets: Tensor, view: int, s: FitSettings) -> Tensor:
    """Photometric loss, plus depth L1 where the view has depth and the render covers it,
    plus alpha-vs-mask L1."""
    loss = photometric_loss(out.rgb[0], targets[view], s.ssim_weight)
    if train.depths is not None and s.depth_weight > 0:
        gt = train.depths[view]
        valid = (gt > 0) & (out.alpha[0].detach() > 0.5)
        if valid.any():
            loss = loss + s.depth_weight * (out.depth[0] - gt).abs()[valid].mean()
    if train.masks is not None and s.mask_weight > 0:
        loss = loss + s.mask_weight * (out.alpha[0] - train.masks[view]).abs().mean()
    return loss


def refine(params: SplatParams, control: DensityControl, s: FitSettings, extent: float,
           generator: torch.Generator, done: int) -> None:
    """Adaptive density control and opacity reset after ``done`` steps (3DGS schedule)."""
    if s.densify_start < done <= s.densify_stop and done % s.densify_every == 0:
        density.densify(params, control, extent, generator)
        density.prune(params, control, extent, prune_big=done > s.opacity_reset_every)
        params.reset_stats()
    if done % s.opacity_reset_every == 0 and done <= s.densify_stop:
        density.reset_opacity(params, control)


@dataclass(frozen=True)
class PolishSettings:
    """A few steps of fitting that start from Gaussians a network predicted (the GSDecoder's
    pixel-aligned ones) instead of from points: every given view rendered each step, loss
    ``photometric + mask_weight |alpha - mask|``, one Adam per parameter at ``lr`` (opacity at
    5x, means at 0.01x in scene units), no density control."""

    steps: int = 100
    lr: float = 0.01
    mask_weight: float = 0.5

    def __post_init__(self) -> None:
        check_int(self.steps, "--refine", lo=0, hi=100_000)
        check_float(self.lr, "refine lr", lo=0.0, hi=1.0, lo_open=True)
        check_float(self.mask_weight, "refine mask_weight", lo=0.0, hi=100.0)


def polish(scene: Gaussians, cameras: Cameras, target: Tensor, mask: Tensor | None,
           s: PolishSettings, settings: RenderSettings | None = None) -> Gaussians:
    """``scene`` fitted ``s.steps`` steps to the views ``target [V, H, W, 3]`` (premultiplied
    on the render background) and, where given, their coverage ``mask [V, H, W, 1]``."""
    if s.steps == 0 or len(scene) == 0:
        return scene
    lrs = {"means": 0.01 * s.lr, "quats": s.lr, "log_scales": s.lr, "opacity_logits": 5 * s.lr,
           "sh0": s.lr, "shN": s.lr / 20}
    params = SplatParams(scene, lrs)
    with torch.enable_grad():
        for _ in range(s.steps):
            out = render(params.gaussians(), cameras, settings=settings)
            loss = photometric_loss(out.rgb, target)
            if mask is not None and s.mask_weight > 0:
                loss = loss + s.mask_weight * (out.alpha - mask).abs().mean()
            if not torch.isfinite(loss):
                raise TrainingError(f"refine: loss is {float(loss)}; try fewer steps")
            loss.backward()
            params.step()
    return params.gaussians().detach()


@torch.no_grad()
def evaluate(scene: Gaussians, views: PosedImages | None, s: FitSettings, prefix: str) -> dict:
    """Mean PSNR and SSIM over ``views`` (composited on the background)."""
    if views is None:
        return {f"{prefix}_psnr": None, f"{prefix}_ssim": None}
    targets = views.composited(torch.tensor(s.background))
    settings = RenderSettings(background=s.background)
    psnrs, ssims = [], []
    for i in range(len(views)):
        rgb = render(scene, views.cameras[i], backend=s.backend, settings=settings).rgb[0]
        rgb = rgb.clamp(0, 1)
        psnrs.append(psnr(rgb, targets[i]))
        ssims.append(float(ssim(rgb, targets[i])))
    return {f"{prefix}_psnr": round(sum(psnrs) / len(psnrs), 3),
            f"{prefix}_ssim": round(sum(ssims) / len(ssims), 4)}


# ---- checkpoints -----------------------------------------------------------------------------
def save_checkpoint(s: FitSettings, params: SplatParams, generator: torch.Generator,
                    step: int, order: Tensor) -> Path:
    path = s.run_dir / "checkpoint.pt"
    state = {"step": step, "settings": s.as_dict(), "params": params.state_dict(),
             "generator": generator.get_state(), "order": order}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def read_checkpoint(path: Path, s: FitSettings) -> dict:
    """The checkpoint at ``path``, refused when damaged or written with other settings."""
    try:
        state = torch.load(path, weights_only=False)
        saved, step = state["settings"], int(state["step"])
    except Exception as e:  # noqa: BLE001 - a damaged file is the user's to remove
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: cannot be read as a checkpoint ({msg}); pass --overwrite to "
                        "start again") from None
    changed = sorted(k for k, v in s.as_dict().items()
                     if k not in RESUMABLE_CHANGES and _plain(saved.get(k)) != _plain(v))
    if changed:
        raise ConfigError(f"--resume {path}: settings differ from the interrupted run's "
                          f"({', '.join(changed)}); pass --overwrite to start again")
    if step > s.steps:
        raise ConfigError(f"--resume {path}: the run is at step {step}, beyond --steps "
                          f"{s.steps}")
    return state


def load_checkpoint(state: dict, params: SplatParams, generator: torch.Generator
                    ) -> tuple[int, Tensor]:
    params.load_state_dict(state["params"])
    generator.set_state(state["generator"])
    return state["step"], state["order"]


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
