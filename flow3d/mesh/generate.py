"""Image (or class) -> mesh with the bundled checkpoints, and VAE reconstruction.

    image --ImageEncoder--> tokens --solve(CFG(v), noise, steps)--> latents z [1, M, C]
          --SDFVAE decoder--> sdf(p) --extract_hierarchical--> marching cubes
          --remove_floaters, decimate--> export (GLB / OBJ / PLY / STL)

Every step is a public function so that a caller can stop anywhere (the latents, the SDF
callable, the raw extraction).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from flow3d.errors import DataError

__all__ = [
    "CHECKPOINTS",
    "MeshPipeline",
    "decode_mesh",
    "demo",
    "generate_mesh",
    "load_pipeline",
    "reconstruct_mesh",
    "resolve_checkpoint",
]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = PROJECT_ROOT / "checkpoints" / "mesh"
DEMO_IMAGE = PROJECT_ROOT / "examples" / "mesh" / "capod_heldout_view.png"
EXTRACT_BOUNDS = 1.05  # the decoder was supervised on [-1.05, 1.05]^3


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint path as given, else relative to the project root (bundled ones)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    q = PROJECT_ROOT / p
    return q if q.exists() else p


def decode_mesh(vae, z: torch.Tensor, resolution: int = 128, *, faces: int | None = None,
                keep: str | float | None = "largest", coarse: int = 32):
    """Latents ``z: [1, M, C]`` -> a trimesh in the normalised frame ([-1, 1] box).

    Sparse hierarchical marching cubes on the decoder's SDF, then (``keep``) floater removal
    (``"largest"`` leaves one connected piece) and (``faces``) quadric decimation.
    """
    import trimesh

    from flow3d.mesh.extract import extract_hierarchical
    from flow3d.mesh.postprocess import decimate, remove_floaters

    if z.ndim != 3 or z.shape[0] != 1:
        raise ValueError(f"z must be [1, M, C], got {tuple(z.shape)}")
    sdf_fn = vae.sdf_fn(z)

    def extract(res: int):
        out = extract_hierarchical(sdf_fn, res, coarse=min(coarse, res), bounds=EXTRACT_BOUNDS)
        mesh = trimesh.Trimesh(out.vertices, out.faces, process=True)
        if len(mesh.faces) == 0:
            raise DataError("the decoded SDF has no zero level set inside the box (empty mesh)")
        return remove_floaters(mesh, keep) if keep is not None else mesh

    mesh = extract(resolution)
    res = resolution
    while faces is not None and len(mesh.faces) > faces:
        small = decimate(mesh, faces)
        # quadric decimation can open or split a thin surface; then a coarser extraction
        # (always closed) is the next candidate
        if small.is_watertight or not mesh.is_watertight or res <= min(coarse, resolution):
            return small
        res //= 2
        mesh = extract(res)
    return mesh


@dataclasses.dataclass
class MeshPipeline:
    """A loaded latent flow with its head (which holds the frozen VAE)."""

    model: torch.nn.Module
    head: object
    path: Path

    @property
    def vae(self):
        return self.head.vae

    @property
    def cond(self) -> str:
        return self.model.cond


def load_pipeline(ckpt: str | Path = CHECKPOINTS / "flow_image") -> MeshPipeline:
    """Load a ``mesh_flow`` checkpoint; its ``data.vae`` is resolved like the checkpoint."""
    from flow3d.engine.checkpoint import load_model

    path = resolve_checkpoint(ckpt)
    if not path.exists():
        raise DataError(f"{path}: checkpoint not found")
    loaded = load_model(path)
    if loaded.recipe.head != "mesh_flow":
        raise DataError(f"{path}: a {loaded.recipe.head!r} checkpoint, not mesh_flow")
    return MeshPipeline(loaded.model, loaded.head, path)


def _class_index(name: str | int, num_classes: int) -> int:
    from flow3d.mesh.data import capod_class_names

    if isinstance(name, int) or str(name).isdigit():
        idx = int(name)
    else:
        names = [n.lower() for n in _capod_names(capod_class_names)]
        key = str(name).lower().replace(" ", "_")
        if key not in names:
            raise DataError(f"unknown class {name!r} (choose from {', '.join(names)})")
        idx = names.index(key)
    if not 0 <= idx < num_classes:
        raise DataError(f"class index {idx} is outside [0, {num_classes})")
    return idx


def _capod_names(reader) -> list[str]:
    root = PROJECT_ROOT.parent / "shared" / "data" / "meshes" / "capod"
    try:
        return reader(root)
    except DataError:  # the data folder is not here: CAPOD.cla order, fixed by the dataset
        return ["Human", "Dolphin", "Chair", "Airplane", "Tree", "Vase", "Desktop_computer",
                "Hand", "Dog", "Guitar", "Piano", "Spider", "Horse", "Gun", "Car"]


@torch.no_grad()
def generate_mesh(
    pipe: MeshPipeline,
    image: str | Path | torch.Tensor | None = None,
    label: str | int | None = None,
    *,
    steps: int = 50,
    cfg: float = 5.0,
    resolution: int = 128,
    faces: int | None = 50000,
    seed: int = 0,
    method: str = "euler",
):
    """One mesh (normalised frame) from an image file / tensor ``[1, R, R]`` or a class."""
    from flow3d.mesh.image_encoder import load_image

    model = pipe.model
    if model.cond == "image":
        if image is None:
            raise DataError(f"{pipe.path}: this model is image-conditioned: give --image")
        if not isinstance(image, torch.Tensor):
            image = load_image(image, model.image_encoder.resolution)
        ctx = model.context(images=image[None].float())
    elif model.cond == "class":
        if label is None:
            raise DataError(f"{pipe.path}: this model is class-conditioned: give --class")
        ctx = model.context(labels=torch.tensor([_class_index(label, model.num_classes)]))
    else:
        ctx = None
    z = pipe.head.sample_latents(model, ctx, 1, seed=seed, steps=steps, cfg=cfg, method=method)
    return decode_mesh(pipe.vae, z, resolution, faces=faces)


@torch.no_grad()
def reconstruct_mesh(vae, mesh, *, num_latents: int = 64, resolution: int = 128,
                     n_points: int = 4096, seed: int = 0):
    """Encode and decode a mesh through the VAE; the result is in the input's coordinates."""
    from flow3d.mesh.data import normalize_mesh, sample_surface

    normed, norm = normalize_mesh(mesh)
    pts, nrm = sample_surface(normed, n_points, np.random.default_rng(seed))
    _, mu, _ = vae.encode(torch.from_numpy(pts)[None], torch.from_numpy(nrm)[None], num_latents,
                          sample=False, query_sampling="fps")
    return norm.invert(decode_mesh(vae, mu, resolution, keep="largest"))


def demo(out_dir: str | Path, *, steps: int = 50, cfg: float = 5.0, resolution: int = 128,
         seed: int = 0) -> list[Path]:
    """``make demo``: the bundled example image -> ``mesh_demo.glb`` + turntable PNG."""
    from flow3d.mesh.postprocess import export_mesh
    from flow3d.mesh.render import save_png, turntable_png

    out = Path(out_dir)
    pipe = load_pipeline()
    mesh = generate_mesh(pipe, DEMO_IMAGE, steps=steps, cfg=cfg, resolution=resolution,
                         seed=seed)
    import matplotlib.image as mpimg

    src = (mpimg.imread(DEMO_IMAGE)[..., :3] * 255).astype(np.uint8)
    return [
        save_png(src, out / "mesh_demo_input.png"),
        export_mesh(mesh, out / "mesh_demo.glb"),
        turntable_png(mesh, out / "mesh_demo_turntable.png", backend="numpy"),
    ]
