"""The mesh tasks (``flow3d mesh generate | reconstruct | eval``), each one thin pipeline.

A task is two things: a frozen settings dataclass, built once (by the command line or by a
caller) and checked once in ``__post_init__`` with messages that name the command-line option,
and one function whose body is the task's numbered steps, so that the whole path from input to
file reads top to bottom (TripoSG's ``pipeline_triposg.py`` has the same shape)::

    generate(GenerateSettings(image="photo.png", out="chair.glb"))
        1. read the image          size from the header, an object on it   (cheap checks first)
        2. load the models, once   the latent flow and the VAE it names     (load_model)
        3. encode the condition    image tokens or a class embedding       (LatentFlow.context)
        4. sample latents          noise -> z, classifier-free guidance    (sample_latents)
        5. decode                  z -> SDF                                (SDFVAE.sdf_fn)
        6. extract                 SDF -> one closed piece, decimated      (sdf_to_mesh)
        7. export                  GLB / OBJ / PLY / STL (+ turntable PNG) (export_mesh)

    reconstruct(ReconstructSettings(mesh="bunny.ply", out="bunny_vae.glb"))
        1. read the mesh  2. load the VAE  3. normalise and sample the surface  4. encode
        5. decode  6. extract, back in the input's coordinates  7. export

    evaluate(MeshEvalSettings(pred="pred.glb", gt="gt.obj"))
        1. read both meshes  2. score them in one frame  3. write the report (JSON, PNG)

Outputs follow the rule of :mod:`flow3d.io` (an existing file needs ``overwrite``), checked
with the settings, before any model is loaded; every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from flow3d.engine.checkpoint import PROJECT_ROOT, LoadedModel, load_model
from flow3d.engine.keys import check_method, suggest
from flow3d.errors import ConfigError, DataError
from flow3d.io import atomic_write_text, check_output_file
from flow3d.mesh.data import (
    CAPOD_CLASSES,
    is_watertight_file,
    load_mesh,
    normalize_mesh,
    sample_surface,
)
from flow3d.mesh.head import MAX_FACES, MIN_FACES
from flow3d.mesh.image_encoder import prepare_image, read_image
from flow3d.mesh.metrics import FRAMES, mesh_metrics
from flow3d.mesh.postprocess import EXPORT_FORMATS, check_resolution, export_mesh, sdf_to_mesh
from flow3d.mesh.render import save_png, turntable_png
from flow3d.mesh.sparse_vae import SparseSDFVAE, reconstruct_sparse
from flow3d.options import check_float, check_int

__all__ = [
    "CHECKPOINTS",
    "DEMO_IMAGE",
    "GenerateSettings",
    "MeshEvalSettings",
    "ReconstructSettings",
    "demo",
    "evaluate",
    "generate",
    "reconstruct",
]

CHECKPOINTS = PROJECT_ROOT / "checkpoints" / "mesh"
DEMO_IMAGE = PROJECT_ROOT / "examples" / "mesh" / "capod_heldout_view.png"
MAX_STEPS = 10_000
MAX_CFG = 100.0


def _output(path: str | None, option: str, overwrite: bool, suffixes: tuple[str, ...]) -> None:
    if path is not None:
        check_output_file(path, option, overwrite=overwrite, suffixes=suffixes)


def _input(path: str | None, option: str, what: str) -> None:
    if path is not None and not Path(path).is_file():
        kind = "is a folder" if Path(path).is_dir() else "not found"
        raise DataError(f"{option} {path}: {what} {kind}")


def class_index(label: str | int, option: str = "--class") -> int:
    """A CAPOD class name (``chair``, any case) or index as the class model's label."""
    text = str(label).strip()
    if text.isdigit():
        return int(text)
    names = [n.lower() for n in CAPOD_CLASSES]
    key = text.lower().replace(" ", "_")
    if key not in names:
        raise ConfigError(f"{option} {label!r}: not a CAPOD class" + suggest(key, names))
    return names.index(key)


# ---- generate ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GenerateSettings:
    """Everything ``flow3d mesh generate`` needs, checked once."""

    image: str | None = None  # --image: a photo or render of one object
    label: str | None = None  # --class: a CAPOD class, for the class-conditional model
    ckpt: str | None = None  # a mesh_flow checkpoint; default: the bundled one for the input
    steps: int = 50
    cfg: float = 5.0  # classifier-free guidance weight (0 = the conditional field)
    method: str = "euler"
    seed: int = 0
    resolution: int = 128  # extraction grid
    faces: int = 50_000  # decimation budget
    out: str | None = None  # mesh file; None: return the mesh only
    png: str | None = None  # turntable PNG of the result
    overwrite: bool = False

    def __post_init__(self):
        if self.image is not None and self.label is not None:
            # the bundled models take one condition each (flow_image, flow_class)
            raise ConfigError("--image and --class cannot be combined: the image model takes "
                              "no class and the class model no image; give one of them")
        _input(self.image, "--image", "image file")
        if self.label is not None:
            class_index(self.label)
        check_int(self.steps, "--steps", lo=1, hi=MAX_STEPS)
        check_float(self.cfg, "--cfg", lo=0.0, hi=MAX_CFG)
        check_method(self.method, "--method")
        check_int(self.seed, "--seed", lo=0, hi=2**63 - 1)
        check_resolution(self.resolution, "--resolution")
        check_int(self.faces, "--faces", lo=MIN_FACES, hi=MAX_FACES)
        _output(self.out, "--out", self.overwrite, EXPORT_FORMATS)
        _output(self.png, "--png", self.overwrite, (".png",))

    @property
    def checkpoint(self) -> Path:
        if self.ckpt is not None:
            return Path(self.ckpt)
        return CHECKPOINTS / ("flow_class" if self.label is not None else "flow_image")


def encode_condition(models: LoadedModel, image, label) -> torch.Tensor | None:
    """The latent flow's context from the one input its mode takes: an image (a file's pixels
    from :func:`read_image`, or a prepared ``[1, R, R]`` tensor), a class, or nothing."""
    flow = models.model
    given = [opt for opt, value in (("--image", image), ("--class", label)) if value is not None]
    takes = {"image": ["--image"], "class": ["--class"], "none": []}[flow.cond]
    if given != takes:
        what = (f"an {flow.cond}-conditioned model: give {takes[0]}" if takes
                else "an unconditional model: give neither --image nor --class")
        raise DataError(f"{models.path}: {what}")
    images = labels = None
    if image is not None:
        if not isinstance(image, torch.Tensor):
            image = prepare_image(image, flow.image_encoder.resolution)
        images = image[None].float()  # [1, 1, R, R]
    if label is not None:
        index = class_index(label)
        if not 0 <= index < flow.num_classes:
            raise DataError(f"--class {label}: this model has classes 0 to "
                            f"{flow.num_classes - 1}")
        labels = torch.tensor([index])
    return flow.context(images=images, labels=labels)


@torch.no_grad()
def generate(settings: GenerateSettings, *, image=None, models: LoadedModel | None = None):
    """One mesh (in the normalised frame, [-1, 1] box) for ``settings``; written to
    ``settings.out`` / ``settings.png`` when they are set. ``image`` (pixels or a prepared
    tensor) and ``models`` (from :func:`load_model`) let a caller skip steps 1 and 2."""
    # 1. read the image: size, decoding and "is there an object" before any model is loaded
    if image is None and settings.image is not None:
        image = read_image(settings.image)
    if image is None and settings.label is None and settings.ckpt is None and models is None:
        raise ConfigError("give --image PHOTO.png (or --class NAME for the class model)")
    # 2. load the latent flow and the VAE it names, once (the head holds the VAE)
    models = models or load_model(settings.checkpoint, head_name="mesh_flow")
    # 3. encode the condition
    ctx = encode_condition(models, image, settings.label)
    # 4. sample latents: noise [1, M, C] -> z, with classifier-free guidance
    z = models.head.sample_latents(models.model, ctx, 1, seed=settings.seed, steps=settings.steps,
                                   cfg=settings.cfg, method=settings.method)
    # 5. decode: z -> the SDF the VAE's decoder defines
    sdf = models.head.vae.sdf_fn(z)
    # 6. extract: marching cubes, the largest piece, decimation to the face budget
    mesh = sdf_to_mesh(sdf, settings.resolution, faces=settings.faces)
    # 7. export
    if settings.out is not None:
        export_mesh(mesh, settings.out)
    if settings.png is not None:
        turntable_png(mesh, settings.png, backend="numpy")
    return mesh


# ---- reconstruct -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ReconstructSettings:
    """Everything ``flow3d mesh reconstruct`` needs, checked once. The VAE is the sparse-voxel
    one by default (``checkpoints/mesh/svae_cpu``); a vector-set ``mesh_vae`` checkpoint (e.g.
    ``checkpoints/mesh/vae_cpu``) also works, and only it takes ``latents``."""

    mesh: str | None = None  # the input mesh file (any format trimesh reads)
    vae: str | None = None  # a mesh_svae or mesh_vae checkpoint; default: svae_cpu
    latents: int | None = None  # vector-set VAE only: latent tokens M (None: 64)
    points: int | None = None  # surface samples encoded (None: 8192 sparse, 4096 vector set)
    resolution: int = 128
    seed: int = 0
    out: str | None = None
    overwrite: bool = False

    def __post_init__(self):
        _input(self.mesh, "mesh", "mesh file")
        if self.points is not None:
            check_int(self.points, "--points", lo=16, hi=1 << 20)
        if self.latents is not None:
            check_int(self.latents, "--latents", lo=1, hi=self.points or VECTOR_SET_POINTS)
        check_resolution(self.resolution, "--resolution")
        check_int(self.seed, "--seed", lo=0, hi=2**63 - 1)
        _output(self.out, "--out", self.overwrite, EXPORT_FORMATS)

    @property
    def checkpoint(self) -> Path:
        return Path(self.vae) if self.vae is not None else CHECKPOINTS / "svae_cpu"


VECTOR_SET_POINTS, VECTOR_SET_LATENTS, SPARSE_POINTS = 4096, 64, 8192
RECONSTRUCT_HEADS = ("mesh_svae", "mesh_vae")


@torch.no_grad()
def reconstruct(settings: ReconstructSettings, *, mesh=None, vae=None):
    """``settings.mesh`` (or ``mesh``) through the SDF-VAE, in the input's own coordinates;
    written to ``settings.out`` when set. ``vae`` (a loaded model) lets a caller skip step 2."""
    # 1. read the mesh: a broken file fails here, before the VAE is loaded
    where = settings.mesh or "mesh"
    mesh = mesh if mesh is not None else load_mesh(settings.mesh)
    # 2. load the VAE: sparse-voxel (mesh_svae) or vector-set (mesh_vae)
    if vae is None:
        loaded = load_model(settings.checkpoint)
        if loaded.recipe.head not in RECONSTRUCT_HEADS:
            raise DataError(f"{settings.checkpoint}: a {loaded.recipe.head!r} checkpoint, not "
                            f"an SDF-VAE ({' or '.join(RECONSTRUCT_HEADS)})")
        vae = loaded.model
    sparse = isinstance(vae, SparseSDFVAE)
    if sparse and settings.latents is not None:
        raise ConfigError("--latents: only the vector-set VAE (a mesh_vae checkpoint) takes a "
                          "number of latent tokens; the sparse-voxel VAE has one per voxel")
    try:
        if sparse:
            # 3-6. normalise, encode the active voxels, decode and extract from them
            recon = reconstruct_sparse(vae, mesh, settings.resolution,
                                       n_points=settings.points or SPARSE_POINTS,
                                       seed=settings.seed)
        else:
            # 3. normalise (bounding box to [-1, 1]) and sample the surface
            normed, norm = normalize_mesh(mesh)
            points, normals = sample_surface(normed, settings.points or VECTOR_SET_POINTS,
                                             np.random.default_rng(settings.seed))
            # 4. encode: mean latents, farthest-point queries (deterministic)
            _, mu, _ = vae.encode(torch.from_numpy(points)[None],
                                  torch.from_numpy(normals)[None],
                                  settings.latents or VECTOR_SET_LATENTS, sample=False,
                                  query_sampling="fps")
            # 5-6. decode, extract, then back to the input's coordinates
            recon = norm.invert(sdf_to_mesh(vae.sdf_fn(mu), settings.resolution))
    except (DataError, ValueError) as e:  # the decoder's complaint, said about the user's file
        raise DataError(f"{where}: cannot reconstruct: {e}") from None
    # 7. export
    if settings.out is not None:
        export_mesh(recon, settings.out)
    return recon


# ---- evaluate ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MeshEvalSettings:
    """Everything ``flow3d mesh eval`` needs, checked once."""

    pred: str | None = None
    gt: str | None = None
    frame: str = "normalized"  # see flow3d.mesh.metrics.FRAMES
    points: int = 100_000  # surface samples per mesh
    volume_points: int = 100_000  # for the volume IoU (0: skip it)
    seed: int = 0
    json: str | None = None
    png: str | None = None  # turntable of the prediction
    overwrite: bool = False

    def __post_init__(self):
        _input(self.pred, "pred", "mesh file")
        _input(self.gt, "gt", "mesh file")
        if self.frame not in FRAMES:
            raise ConfigError(f"--frame {self.frame!r}: choose from {', '.join(FRAMES)}")
        check_int(self.points, "--points", lo=100, hi=10**7)
        check_int(self.volume_points, "--volume-points", lo=0, hi=10**7)
        check_int(self.seed, "--seed", lo=0, hi=2**63 - 2)
        _output(self.json, "--json", self.overwrite, (".json",))
        _output(self.png, "--png", self.overwrite, (".png",))


def evaluate(settings: MeshEvalSettings, *, pred=None, gt=None) -> dict:
    """Metrics of the prediction against the ground truth in ``settings.frame``; the report
    (``frame`` and the inputs with the metrics) is written to ``settings.json`` when set."""
    # 1. read both meshes; watertightness is that of the file as written (load_mesh drops
    # zero-area triangles for the metrics, which can open a closed mesh's topology)
    watertight = pred.is_watertight if pred is not None else None
    if pred is None:
        pred = load_mesh(settings.pred)
        watertight = is_watertight_file(settings.pred)
    gt = gt if gt is not None else load_mesh(settings.gt)
    # 2. score them in one frame
    metrics = mesh_metrics(pred, gt, settings.points, settings.seed, frame=settings.frame,
                           n_volume=settings.volume_points)
    metrics["watertight"] = float(watertight)
    report = {"pred": settings.pred, "gt": settings.gt, "frame": settings.frame,
              "points": settings.points, **metrics}
    # 3. write the report and the turntable
    if settings.json is not None:
        atomic_write_text(settings.json, json.dumps(report, indent=1) + "\n")
    if settings.png is not None:
        turntable_png(pred, settings.png, backend="numpy")
    return report


# ---- demo --------------------------------------------------------------------------------------
def demo(out_dir: str | Path, *, steps: int = 50, cfg: float = 5.0, resolution: int = 128,
         seed: int = 0) -> list[Path]:
    """``make demo``: the bundled example image -> ``mesh_demo.glb`` + turntable PNG."""
    out = Path(out_dir)
    settings = GenerateSettings(image=str(DEMO_IMAGE), steps=steps, cfg=cfg, seed=seed,
                                resolution=resolution, out=str(out / "mesh_demo.glb"),
                                png=str(out / "mesh_demo_turntable.png"), overwrite=True)
    generate(settings)
    source = (read_image(DEMO_IMAGE)[..., :3] * 255).astype(np.uint8)
    return [save_png(source, out / "mesh_demo_input.png"), Path(settings.out), Path(settings.png)]
