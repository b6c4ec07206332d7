"""The mesh tasks (``flow3d mesh generate | edit | reconstruct | eval``), each one thin pipeline.

A task is two things: a frozen settings dataclass, built once (by the command line or by a
caller) and checked once in ``__post_init__`` with messages that name the command-line option,
and one function whose body is the task's numbered steps, so that the whole path from input to
file reads top to bottom (TripoSG's ``pipeline_triposg.py`` has the same shape)::

    generate(GenerateSettings(image="photo.png", out="chair.glb"))
        1. read the image          size from the header, an object on it   (cheap checks first)
        2. load the models, once   two-stage (structure + latents) or the
                                   vector-set flow, and the VAE they name   (load_generator)
        3. encode the condition    image tokens or a class embedding       (encode_condition)
        4. sample                  structure, then latents on its voxels   (sample_shape)
                                   (vector set: noise -> z)                (sample_latents)
        5-6. decode and extract    closed, floaters dropped, decimated     (decode_shape)
        7. export                  GLB / OBJ / PLY / STL (+ turntable PNG) (export_mesh)

    edit(EditSettings(mesh="chair.obj", box=(0, -1, -1, 1, 1, 1), label="chair", out=...))
        1. read the mesh and image  2. load the two stages  3. normalise, encode the voxels
        4. the box's voxels  5. encode the condition  6. inpaint structure then latents in the
        box (edit_shape)  7. decode, back in the input's coordinates, export

    reconstruct(ReconstructSettings(mesh="bunny.ply", out="bunny_vae.glb"))
        1. read the mesh  2. load the VAE  3. normalise and sample the surface  4. encode
        5. decode  6. extract, back in the input's coordinates  7. export

    retrieve(RetrieveSettings(image="photo.png", out="nearest.glb"))
        1. read the image  2. load the shape library  3. the image's silhouette  4. the shape
        whose silhouette from one of 24 views overlaps it most  5. through the SDF-VAE
        (closed, normals)  6. export

    build_shape_library(LibrarySettings(data="capod/", out="library/"))
        1. split CAPOD  2. normalise, decimate, render 24 silhouettes each  3. write

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
from flow3d.engine.keys import check_method
from flow3d.errors import ConfigError, DataError
from flow3d.io import atomic_write_text, check_output_dir, check_output_file
from flow3d.mesh.condition import class_index, encode_condition
from flow3d.mesh.data import (
    is_watertight_file,
    load_mesh,
    normalize_mesh,
    sample_surface,
)
from flow3d.mesh.head import MAX_FACES, MIN_FACES
from flow3d.mesh.image_encoder import read_image
from flow3d.mesh.metrics import FRAMES, mesh_metrics
from flow3d.mesh.postprocess import EXPORT_FORMATS, check_resolution, export_mesh, sdf_to_mesh
from flow3d.mesh.render import save_png, turntable_png
from flow3d.mesh.sparse_generate import (
    SampleOptions,
    TwoStage,
    box_mask,
    decode_shape,
    edit_shape,
    load_two_stage,
    sample_shape,
)
from flow3d.mesh.sparse_vae import SparseSDFVAE, encode_mesh, reconstruct_sparse
from flow3d.options import check_float, check_int

__all__ = [
    "CHECKPOINTS",
    "DEMO_IMAGE",
    "EditSettings",
    "GenerateSettings",
    "LibrarySettings",
    "MeshEvalSettings",
    "ReconstructSettings",
    "RetrieveSettings",
    "build_shape_library",
    "demo",
    "edit",
    "evaluate",
    "generate",
    "reconstruct",
    "retrieve",
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


# ---- generate ----------------------------------------------------------------------------------
GENERATOR_HEADS = ("mesh_structure", "mesh_flow")  # two-stage sparse-voxel, vector-set


@dataclasses.dataclass(frozen=True)
class GenerateSettings:
    """Everything ``flow3d mesh generate`` needs, checked once.

    The generator is the checkpoint's: a ``mesh_structure`` checkpoint runs the two-stage
    sparse-voxel generator (its latent stage from ``latent_ckpt``), a ``mesh_flow`` one the
    vector-set latent flow. By default the bundled one for the input (:data:`GENERATOR`)."""

    image: str | None = None  # --image: a photo or render of one object
    label: str | None = None  # --class: a CAPOD class, for the class-conditional model
    ckpt: str | None = None  # mesh_structure or mesh_flow checkpoint; default: bundled
    latent_ckpt: str | None = None  # two-stage only: the mesh_slat checkpoint
    steps: int = 50
    cfg: float | None = None  # classifier-free guidance weight (None: the generator's default)
    method: str = "euler"
    seed: int = 0
    resolution: int = 256  # extraction grid
    faces: int = 50_000  # decimation budget
    out: str | None = None  # mesh file; None: return the mesh only
    png: str | None = None  # turntable PNG of the result
    overwrite: bool = False

    def __post_init__(self):
        if self.image is not None and self.label is not None:
            # the bundled models take one condition each (image or class)
            raise ConfigError("--image and --class cannot be combined: the image model takes "
                              "no class and the class model no image; give one of them")
        _input(self.image, "--image", "image file")
        if self.label is not None:
            class_index(self.label)
        check_int(self.steps, "--steps", lo=1, hi=MAX_STEPS)
        if self.cfg is not None:
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
        kind = "class" if self.label is not None else "image"
        return CHECKPOINTS / GENERATOR[kind]

    @property
    def latent_checkpoint(self) -> Path:
        return Path(self.latent_ckpt) if self.latent_ckpt else CHECKPOINTS / "slat"


# The bundled generator per condition: the one that measures better on the held-out protocols
# of docs/benchmarks.md ("Mesh: two-stage sparse-voxel generation and editing"). From an image
# the vector set still does (F@0.05 0.333 against 0.233 on renders of held-out meshes).
GENERATOR = {"class": "structure_class", "image": "flow_image"}
DEFAULT_CFG = {"mesh_structure": 3.0, "mesh_flow": 5.0}


def load_generator(settings: GenerateSettings) -> LoadedModel | TwoStage:
    """The generator of ``settings.checkpoint``: a :class:`TwoStage` (structure + latents)
    or the vector-set latent flow's :class:`LoadedModel`."""
    loaded = load_model(settings.checkpoint)
    if loaded.recipe.head not in GENERATOR_HEADS:
        raise DataError(f"{settings.checkpoint}: a {loaded.recipe.head!r} checkpoint, not a "
                        f"generator ({' or '.join(GENERATOR_HEADS)})")
    if loaded.recipe.head == "mesh_structure":
        return load_two_stage(loaded, settings.latent_checkpoint)
    if settings.latent_ckpt:
        raise ConfigError(f"--latent-ckpt: {settings.checkpoint} is a vector-set flow, which has "
                          "no latent stage; it is for a mesh_structure checkpoint")
    return loaded


@torch.no_grad()
def generate(settings: GenerateSettings, *, image=None, models=None):
    """One mesh (in the normalised frame, [-1, 1] box) for ``settings``; written to
    ``settings.out`` / ``settings.png`` when they are set. ``image`` (pixels or a prepared
    tensor) and ``models`` (from :func:`load_generator`) let a caller skip steps 1 and 2."""
    # 1. read the image: size, decoding and "is there an object" before any model is loaded
    if image is None and settings.image is not None:
        image = read_image(settings.image)
    if image is None and settings.label is None and settings.ckpt is None and models is None:
        raise ConfigError("give --image PHOTO.png (or --class NAME for the class model)")
    # 2. load the generator, once (its heads hold the VAE)
    models = models or load_generator(settings)
    two_stage = isinstance(models, TwoStage)
    first = models.structure if two_stage else models
    cfg = settings.cfg if settings.cfg is not None else DEFAULT_CFG[first.recipe.head]
    # 3. encode the condition
    ctx = encode_condition(first, image, settings.label)
    if two_stage:
        # 4. sample the structure, then the latents on its voxels (both with CFG)
        opts = SampleOptions(steps=settings.steps, latent_steps=max(settings.steps // 2, 1),
                             cfg=cfg, method=settings.method, seed=settings.seed)
        coords, z = sample_shape(models, ctx, {"image": image, "label": settings.label}, opts)
        # 5-6. decode on the active voxels, extract (closed), drop floaters, decimate
        mesh = decode_shape(models.vae, coords, z, settings.resolution, faces=settings.faces)
    else:
        # 4. sample latents: noise [1, M, C] -> z, with classifier-free guidance
        z = models.head.sample_latents(models.model, ctx, 1, seed=settings.seed,
                                       steps=settings.steps, cfg=cfg, method=settings.method)
        # 5-6. decode z -> SDF; marching cubes, the largest piece, decimation
        mesh = sdf_to_mesh(models.head.vae.sdf_fn(z), settings.resolution, faces=settings.faces)
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
    one by default (``checkpoints/mesh/svae_r64``, 64^3 active voxels); ``svae_cpu`` (32^3, the
    generators' VAE) or a vector-set ``mesh_vae`` checkpoint (e.g.
    ``checkpoints/mesh/vae_cpu``) also works, and only it takes ``latents``."""

    mesh: str | None = None  # the input mesh file (any format trimesh reads)
    vae: str | None = None  # a mesh_svae or mesh_vae checkpoint; default: svae_r64
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
        return Path(self.vae) if self.vae is not None else CHECKPOINTS / "svae_r64"


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


# ---- edit --------------------------------------------------------------------------------------
def parse_box(text: str, option: str = "--box") -> tuple[float, ...]:
    """``"x0,y0,z0,x1,y1,z1"`` -> 6 floats: a non-empty box inside [-1, 1]^3 (the input's
    normalised frame), else a :class:`ConfigError` naming ``option``."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        box = tuple(float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: six comma-separated numbers x0,y0,z0,x1,y1,z1 "
                          "are needed") from None
    if len(box) != 6:
        raise ConfigError(f"{option} {text!r}: six numbers x0,y0,z0,x1,y1,z1 are needed, got "
                          f"{len(box)}")
    if not all(np.isfinite(box)):
        raise ConfigError(f"{option} {text!r}: every corner must be a finite number")
    if min(box) < -1 or max(box) > 1:
        raise ConfigError(f"{option} {text!r}: outside [-1, 1] (the box is given in the input's "
                          "normalised frame: bounding-box centre at 0, longest side [-1, 1])")
    for axis in range(3):
        if box[axis] >= box[axis + 3]:
            what = "empty" if box[axis] == box[axis + 3] else "inverted"
            raise ConfigError(f"{option} {text!r}: {what} along {'xyz'[axis]} "
                              f"({box[axis]} >= {box[axis + 3]}); give x0,y0,z0 below x1,y1,z1")
    return box


@dataclasses.dataclass(frozen=True)
class EditSettings:
    """Everything ``flow3d mesh edit`` needs, checked once: regenerate the part of ``mesh``
    inside ``box`` given a class or an image, keep the rest."""

    mesh: str | None = None  # the input mesh file
    box: str | tuple[float, ...] | None = None  # x0,y0,z0,x1,y1,z1 in the normalised frame
    image: str | None = None
    label: str | None = None
    ckpt: str | None = None  # mesh_structure checkpoint; default: bundled for the condition
    latent_ckpt: str | None = None  # mesh_slat checkpoint
    steps: int = 50
    cfg: float = 3.0
    seed: int = 0
    resolution: int = 256
    out: str | None = None
    overwrite: bool = False

    def __post_init__(self):
        _input(self.mesh, "mesh", "mesh file")
        if self.box is None:
            raise ConfigError("--box x0,y0,z0,x1,y1,z1 is required")
        if isinstance(self.box, str):
            object.__setattr__(self, "box", parse_box(self.box))
        else:
            parse_box(",".join(str(v) for v in self.box))
        GenerateSettings(image=self.image, label=self.label, steps=self.steps, cfg=self.cfg,
                         seed=self.seed, resolution=self.resolution)  # the shared checks
        if self.image is None and self.label is None and self.ckpt is None:
            raise ConfigError("give --class NAME or --image PNG: what the box should become")
        _output(self.out, "--out", self.overwrite, EXPORT_FORMATS)

    @property
    def generate(self) -> GenerateSettings:
        return GenerateSettings(image=self.image, label=self.label, ckpt=self.ckpt,
                                latent_ckpt=self.latent_ckpt)


@torch.no_grad()
def edit(settings: EditSettings, *, mesh=None, models: TwoStage | None = None,
         reference: bool = False) -> dict:
    """The edited mesh (input's coordinates) and what was kept: ``{"mesh", "voxels_in_box",
    "voxels_kept"}``; written to ``settings.out`` when set. ``reference`` adds ``"unedited"``,
    the input through the VAE (the same voxels and latents, no edit), for comparison (one more
    decode, which the command does not need)."""
    where = settings.mesh or "mesh"
    # 1. read the mesh and the image: broken inputs fail before any model is loaded
    mesh = mesh if mesh is not None else load_mesh(settings.mesh)
    image = read_image(settings.image) if settings.image is not None else None
    # 2. load the two stages (structure for the condition, latents, the VAE)
    models = models or load_generator(settings.generate)
    if not isinstance(models, TwoStage):
        raise DataError(f"{settings.generate.checkpoint}: editing needs the two-stage "
                        "sparse-voxel generator (a mesh_structure checkpoint)")
    vae = models.vae
    # 3. normalise; active voxels and latents of the input
    normed, norm = normalize_mesh(mesh)
    try:
        coords, z = encode_mesh(vae, normed, seed=settings.seed)
    except ValueError as e:
        raise DataError(f"{where}: cannot voxelise: {e}") from None
    # 4. the box's voxels (centres inside it)
    R = vae.resolution
    all_voxels = torch.stack(torch.meshgrid(*[torch.arange(R)] * 3, indexing="ij"), -1)
    inside = box_mask(all_voxels.reshape(-1, 3), settings.box, vae).reshape(R, R, R)
    if not inside.any():
        raise ConfigError(f"--box {settings.box}: holds no voxel centre (voxels are "
                          f"{2 * vae.bounds / R:.3f} wide); make it larger")
    # 5. encode the condition; 6. regenerate the box (structure, then latents)
    ctx = encode_condition(models.structure, image, settings.label)
    opts = SampleOptions(steps=settings.steps, latent_steps=max(settings.steps // 2, 1),
                         cfg=settings.cfg, seed=settings.seed)
    new_coords, new_z, labels = edit_shape(models, (coords, z), inside, ctx,
                                           {"image": image, "label": settings.label}, opts)
    # 7. decode both, back to the input's coordinates; export
    edited = norm.invert(decode_shape(vae, new_coords, new_z, settings.resolution, keep=None,
                                      labels=labels))
    if settings.out is not None:
        export_mesh(edited, settings.out)
    kept = int((~inside[coords[:, 0], coords[:, 1], coords[:, 2]]).sum())
    result = {"mesh": edited, "voxels_kept": kept,
              "voxels_in_box": int(inside[new_coords[:, 0], new_coords[:, 1],
                                          new_coords[:, 2]].sum())}
    if reference:
        result["unedited"] = norm.invert(decode_shape(vae, coords, z, settings.resolution,
                                                      keep=None))
    return result


# ---- retrieve ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RetrieveSettings:
    """Everything ``flow3d mesh retrieve`` needs, checked once: the shape of a library
    (:mod:`flow3d.mesh.library`) whose silhouette matches the image's object best, through a
    sparse-voxel SDF-VAE (``vae``; default ``svae_r64``), or as it is (``raw``)."""

    image: str | None = None
    library: str | None = None  # a shape library folder; default: checkpoints/mesh/library
    vae: str | None = None  # a mesh_svae checkpoint; default: svae_r64
    raw: bool = False  # the library's decimated mesh as it is, no VAE
    top: int = 3  # how many matches to report
    candidates: int = 16  # best shapes whose views are searched again finely (0: not at all)
    resolution: int = 256  # extraction grid of the VAE's output
    out: str | None = None
    png: str | None = None
    overwrite: bool = False

    def __post_init__(self):
        _input(self.image, "--image", "image file")
        if self.raw and self.vae is not None:
            raise ConfigError("--raw writes the library mesh without a VAE; it cannot be "
                              "combined with --vae")
        for option, folder in (("--library", self.library), ("--vae", self.vae)):
            if folder is not None and not Path(folder).is_dir():
                raise DataError(f"{option} {folder}: folder not found")
        check_int(self.top, "--top", lo=1, hi=1000)
        check_int(self.candidates, "--candidates", lo=0, hi=1000)
        check_resolution(self.resolution, "--resolution")
        _output(self.out, "--out", self.overwrite, EXPORT_FORMATS)
        _output(self.png, "--png", self.overwrite, (".png",))

    @property
    def library_dir(self) -> Path:
        return Path(self.library) if self.library is not None else CHECKPOINTS / "library"

    @property
    def vae_checkpoint(self) -> Path | None:
        if self.raw:
            return None
        return Path(self.vae) if self.vae is not None else CHECKPOINTS / "svae_r64"


@torch.no_grad()
def retrieve(settings: RetrieveSettings, *, image=None, library=None, vae=None) -> dict:
    """``{"mesh", "matches", "warning"}``: the best library shape for the image (the
    normalised frame, through the VAE unless ``settings.raw``) and the ``top`` matches
    (:class:`~flow3d.mesh.library.Match`, best first); the mesh is written to ``settings.out``
    when set. ``image`` (pixels, or a prepared ``[1, R, R]`` tensor: grey contrast only),
    ``library`` and ``vae`` (a loaded model) let a caller skip reading them. ``warning``: a
    sentence when the photo's background does not look plain (None otherwise)."""
    from flow3d.mesh.image_encoder import background_warning, prepare_mask
    from flow3d.mesh.library import ShapeLibrary, silhouette

    # 1. read the image: size, decoding and "is there an object" before anything is loaded
    if image is None:
        if settings.image is None:
            raise ConfigError("give --image PHOTO.png: the object to find")
        image = read_image(settings.image)
    # 2. the library (its masks fix the resolution the image is framed at)
    library = library if library is not None else ShapeLibrary.load(settings.library_dir)
    # 3. the silhouette, framed like the library's renders (a prepared image: its grey mask)
    pixels = not isinstance(image, torch.Tensor)
    mask = prepare_mask(image, library.masks.shape[-1]) if pixels else silhouette(image)
    warning = background_warning(image) if pixels else None
    # 4. the best shape over all views: the library's 24, then finer around the best few
    matches = library.search(mask, max(settings.top, settings.candidates))
    if settings.candidates:
        matches = library.refine(mask, matches[: settings.candidates]) + \
            matches[settings.candidates:]
    matches = matches[: settings.top]
    mesh = library.mesh(matches[0].index)
    # 5. through the SDF-VAE: closed, smooth normals, at the asked resolution
    ckpt = settings.vae_checkpoint
    if vae is None and ckpt is not None:
        loaded = load_model(ckpt)
        if loaded.recipe.head != "mesh_svae":
            raise DataError(f"{ckpt}: a {loaded.recipe.head!r} checkpoint, not a sparse-voxel "
                            "SDF-VAE (mesh_svae)")
        vae = loaded.model
    if vae is not None and not settings.raw:
        mesh = reconstruct_sparse(vae, mesh, settings.resolution)
    # 6. export
    if settings.out is not None:
        export_mesh(mesh, settings.out)
    if settings.png is not None:
        turntable_png(mesh, settings.png, backend="numpy")
    return {"mesh": mesh, "matches": matches, "warning": warning}


# ---- library -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LibrarySettings:
    """Everything ``flow3d mesh library`` needs, checked once: the CAPOD training split as the
    shape library of ``retrieve``."""

    data: str | None = None  # the CAPOD folder (class1 ... class15)
    out: str | None = None  # the library folder
    holdout_per_class: int = 2  # the split the bundled mesh models were trained on
    faces: int = 2000
    overwrite: bool = False

    def __post_init__(self):
        if self.data is None or not Path(self.data).is_dir():
            raise DataError(f"--data {self.data}: not a folder")
        check_int(self.holdout_per_class, "--holdout-per-class", lo=0, hi=1000)
        check_int(self.faces, "--faces", lo=MIN_FACES, hi=np.iinfo(np.int16).max)
        check_output_dir(self.out, "--out", overwrite=self.overwrite)


def build_shape_library(settings: LibrarySettings):
    """1. split CAPOD  2. normalise, decimate and render the training meshes' silhouettes
    3. write the library (atomically). Returns the :class:`~flow3d.mesh.library.ShapeLibrary`."""
    from flow3d.mesh.library import build_capod_library

    library = build_capod_library(settings.data, settings.holdout_per_class, settings.faces)
    library.save(settings.out)
    return library


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
def demo(out_dir: str | Path, *, steps: int = 50, cfg: float | None = None,
         resolution: int = 128, seed: int = 0) -> list[Path]:
    """``make demo``: the bundled example image -> ``mesh_demo.glb`` + turntable PNG."""
    out = Path(out_dir)
    settings = GenerateSettings(image=str(DEMO_IMAGE), steps=steps, cfg=cfg, seed=seed,
                                resolution=resolution, out=str(out / "mesh_demo.glb"),
                                png=str(out / "mesh_demo_turntable.png"), overwrite=True)
    generate(settings)
    source = (read_image(DEMO_IMAGE)[..., :3] * 255).astype(np.uint8)
    return [save_png(source, out / "mesh_demo_input.png"), Path(settings.out), Path(settings.png)]
