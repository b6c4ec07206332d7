"""A library of shapes found by their silhouettes: image to mesh by retrieval.

``flow3d mesh retrieve --image PHOTO.png`` answers with the library shape whose outline, seen
from one of :data:`VIEW_AZIMUTHS` x :data:`VIEW_ELEVATIONS` (24 views around the object),
overlaps the photo's object best (intersection over union of the two masks, both from
:func:`~flow3d.mesh.image_encoder.prepare_mask`: the colour foreground in the square crop that
``prepare_image`` takes of every input). The
silhouette is what survives colour, texture, lighting and background changes, and the view
search makes the answer independent of where the photo was taken from. A photo taken between
two library views matches every shape a little worse, which blurs the ranking, so
:meth:`ShapeLibrary.refine` searches the views of the best few shapes again on a finer grid
around their best view (5 degrees: :data:`REFINE_AZIMUTHS` x :data:`REFINE_ELEVATIONS`) and
ranks them by that IoU (on the held-out CAPOD protocol it gains most on photos from random
views: docs/benchmarks.md, "Silhouette retrieval"). On the held-out CAPOD
protocol (docs/benchmarks.md, "Image to mesh") it finds a closer shape than the nearest
training mesh by the image encoder's feature, and far closer on styled renders. It is still a
neighbour of the object, not the object: the generators are what can make a new shape.

The bundled library (``checkpoints/mesh/library``) holds the CAPOD training meshes (the split
the mesh models were trained on), decimated to :data:`LIBRARY_FACES` faces, with their 24
silhouettes at 64^2; built in one command::

    flow3d mesh library --data ../shared/data/meshes/capod --out checkpoints/mesh/library

Files: ``library.safetensors`` (packed masks, float16 vertices, int16 faces, offsets) and
``library.json`` (names, classes, views, how it was built).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flow3d.errors import DataError
from flow3d.io import atomic_dir
from flow3d.mesh.image_encoder import BACKGROUND_TOLERANCE, prepare_mask

__all__ = [
    "LIBRARY_FACES",
    "Match",
    "REFINE_AZIMUTHS",
    "REFINE_ELEVATIONS",
    "ShapeLibrary",
    "VIEW_AZIMUTHS",
    "VIEW_ELEVATIONS",
    "build_capod_library",
    "build_library",
    "silhouette",
    "silhouettes",
]

# 24 views: every 30 degrees of azimuth, at the two elevations of the conditioning renders
VIEW_AZIMUTHS = tuple(float(a) for a in range(0, 360, 30) for _ in (0, 1))
VIEW_ELEVATIONS = (10.0, 30.0) * 12
MASK_RESOLUTION = 64  # the image encoder's input size; masks compare at this size
RENDER_SIZE = 96  # the conditioning renders' size (flow3d.mesh.head.condition_images)
LIBRARY_FACES = 2000  # per shape: F@0.05 is unchanged by it (0.564 / 0.565 against the
# full meshes on the 15-mesh protocol), the library stays under 4 MB
FORMAT = "flow3d-shape-library-1"
# the finer search around a shape's best library view: offsets in degrees, 7 x 5 = 35 views
# (the library's views are 30 degrees of azimuth and 20 of elevation apart: this covers the gap)
REFINE_AZIMUTHS = tuple(float(d) for d in range(-15, 16, 5))
REFINE_ELEVATIONS = tuple(float(d) for d in range(-10, 11, 5))


def silhouette(image: Tensor) -> Tensor:
    """A prepared image ``[1, R, R]`` (background 1, see ``prepare_image``) -> its object
    mask ``[R, R]`` bool (grey contrast only: from pixels, :func:`prepare_mask` also sees
    colour)."""
    return image[0] < 1.0 - BACKGROUND_TOLERANCE


def silhouettes(mesh, resolution: int = MASK_RESOLUTION, *, azimuths=VIEW_AZIMUTHS,
                elevations=VIEW_ELEVATIONS) -> Tensor:
    """The masks ``[V, R, R]`` of a normalised mesh from the given views (default: the
    library's), rendered as the conditioning views are and framed like a user's photo
    (:func:`prepare_mask`)."""
    from flow3d.mesh.render import render_views

    images, _ = render_views(mesh, len(azimuths), RENDER_SIZE, elevations=list(elevations),
                             azimuths=list(azimuths), backend="numpy")
    return torch.stack([prepare_mask(im, resolution) for im in images])


def _iou(masks: Tensor, mask: Tensor) -> Tensor:
    """Intersection over union of ``masks [..., R, R]`` with one ``mask [R, R]`` -> ``[...]``."""
    lib = masks.flatten(-2).float()
    q = mask.flatten().float()
    inter = lib @ q
    return inter / (lib.sum(-1) + q.sum() - inter).clamp_min(1.0)


@dataclasses.dataclass(frozen=True)
class Match:
    index: int  # the library shape
    name: str
    label: int  # CAPOD class index (-1: none)
    view: int  # the library view whose silhouette matched best
    iou: float
    azimuth: float  # degrees: the library view's, or the refined view's
    elevation: float


@dataclasses.dataclass
class ShapeLibrary:
    """Shapes (normalised meshes) with their silhouettes ``masks [N, V, R, R]`` bool."""

    names: list[str]
    labels: list[int]
    vertices: list[np.ndarray]  # [n_i, 3] float32, the normalised frame
    faces: list[np.ndarray]  # [f_i, 3] int64
    masks: Tensor
    source: str = ""

    def __post_init__(self):
        n = len(self.names)
        if not (len(self.labels) == len(self.vertices) == len(self.faces) == len(self.masks)
                == n) or self.masks.shape[1:2] != (len(VIEW_AZIMUTHS),):
            raise ValueError("a shape library needs one name, label, mesh and set of "
                             f"{len(VIEW_AZIMUTHS)} masks per shape")

    def __len__(self) -> int:
        return len(self.names)

    def mesh(self, index: int):
        import trimesh

        return trimesh.Trimesh(self.vertices[index], self.faces[index], process=False)

    def search(self, mask: Tensor, top: int = 1) -> list[Match]:
        """The ``top`` shapes whose best view overlaps ``mask [R, R]`` most, best first."""
        if mask.shape != self.masks.shape[2:]:
            raise ValueError(f"mask is {tuple(mask.shape)}, the library's are "
                             f"{tuple(self.masks.shape[2:])}")
        if not mask.any():
            raise DataError("the image has no object to match (an empty silhouette)")
        best, view = _iou(self.masks, mask).max(1)  # [N]
        order = torch.argsort(best, descending=True)[:top]
        return [Match(int(i), self.names[i], self.labels[i], int(view[i]), float(best[i]),
                      VIEW_AZIMUTHS[view[i]], VIEW_ELEVATIONS[view[i]]) for i in order]

    def refine(self, mask: Tensor, matches: list[Match]) -> list[Match]:
        """``matches`` (from :meth:`search`) re-scored at their best view on a finer grid around
        it (:data:`REFINE_AZIMUTHS` x :data:`REFINE_ELEVATIONS` offsets, the library's view
        included, so no IoU goes down) and re-ranked, best first; their ``azimuth`` and
        ``elevation`` become the refined view's. About 0.15 s per match on one thread: the 35
        silhouettes are rendered from the library's mesh."""
        if mask.shape != self.masks.shape[2:]:
            raise ValueError(f"mask is {tuple(mask.shape)}, the library's are "
                             f"{tuple(self.masks.shape[2:])}")
        refined = []
        for m in matches:
            azimuths = [m.azimuth + da for da in REFINE_AZIMUTHS for _ in REFINE_ELEVATIONS]
            elevations = [m.elevation + de for _ in REFINE_AZIMUTHS for de in REFINE_ELEVATIONS]
            iou = _iou(silhouettes(self.mesh(m.index), mask.shape[-1], azimuths=azimuths,
                                   elevations=elevations), mask)  # [35]
            j = int(iou.argmax())
            if float(iou[j]) < m.iou:  # the library's own silhouette scores higher: keep it
                refined.append(m)  # (renders are deterministic: only a rounding edge case)
            else:
                refined.append(dataclasses.replace(m, iou=float(iou[j]),
                                                   azimuth=azimuths[j] % 360.0,
                                                   elevation=elevations[j]))
        return sorted(refined, key=lambda m: -m.iou)

    # ---- files ------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``library.safetensors`` + ``library.json`` into ``folder``, atomically."""
        from safetensors.torch import save_file

        if any(len(v) > np.iinfo(np.int16).max for v in self.vertices):
            raise ValueError("a library shape has too many vertices for int16 faces: "
                             "decimate it first")
        sizes = lambda xs: torch.tensor([0] + [len(x) for x in xs]).cumsum(0)  # noqa: E731
        packed = np.packbits(self.masks.numpy().reshape(len(self), -1), axis=1)
        tensors = {
            "masks": torch.from_numpy(packed),
            "vertices": torch.from_numpy(np.concatenate(self.vertices)).half(),
            "faces": torch.from_numpy(np.concatenate(self.faces).astype(np.int16)),
            "vertex_offsets": sizes(self.vertices),
            "face_offsets": sizes(self.faces),
        }
        meta = {"format": FORMAT, "names": self.names, "labels": self.labels,
                "azimuths": VIEW_AZIMUTHS, "elevations": VIEW_ELEVATIONS,
                "resolution": int(self.masks.shape[-1]), "source": self.source}
        with atomic_dir(folder) as tmp:
            save_file(tensors, str(tmp / "library.safetensors"))
            (tmp / "library.json").write_text(json.dumps(meta, indent=1) + "\n")
            for f in tmp.iterdir():  # safetensors writes 0600; a library is for everyone
                os.chmod(f, 0o644)
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> ShapeLibrary:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        meta_file, data_file = folder / "library.json", folder / "library.safetensors"
        if not meta_file.is_file() or not data_file.is_file():
            raise DataError(f"{folder}: not a shape library (library.json and "
                            "library.safetensors expected)")
        try:
            meta = json.loads(meta_file.read_text())
            t = load_file(str(data_file))
            if meta.get("format") != FORMAT or list(meta["azimuths"]) != list(VIEW_AZIMUTHS) \
                    or list(meta["elevations"]) != list(VIEW_ELEVATIONS):
                raise ValueError(f"format {meta.get('format')!r} or views differ from this "
                                 f"version's ({FORMAT})")
            r, n = int(meta["resolution"]), len(meta["names"])
            bits = np.unpackbits(t["masks"].numpy(), axis=1)[:, : len(VIEW_AZIMUTHS) * r * r]
            masks = torch.from_numpy(bits.reshape(n, len(VIEW_AZIMUTHS), r, r).astype(bool))
            vo, fo = t["vertex_offsets"].tolist(), t["face_offsets"].tolist()
            verts = t["vertices"].float().numpy()
            faces = t["faces"].numpy().astype(np.int64)
            return cls(list(meta["names"]), [int(x) for x in meta["labels"]],
                       [verts[vo[i]:vo[i + 1]] for i in range(n)],
                       [faces[fo[i]:fo[i + 1]] for i in range(n)], masks,
                       str(meta.get("source", "")))
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
            raise DataError(f"{folder}: broken shape library ({e})") from None


def build_library(files: list[Path], *, names: list[str] | None = None,
                  labels: list[int] | None = None, faces: int = LIBRARY_FACES, source: str = "",
                  progress: bool = True) -> ShapeLibrary:
    """Normalise, decimate and render the silhouettes of ``files`` (unreadable meshes are a
    :class:`DataError` naming the file); ``names`` default to the file stems."""
    from tqdm import tqdm

    from flow3d.mesh.data import load_mesh, normalize_mesh
    from flow3d.mesh.postprocess import decimate

    verts, tris, masks = [], [], []
    for f in tqdm(files, desc="shape library", unit="mesh", disable=not progress):
        mesh = decimate(normalize_mesh(load_mesh(f))[0], faces)
        mesh, _ = normalize_mesh(mesh)  # decimation can move the bounding box a little
        verts.append(np.asarray(mesh.vertices, dtype=np.float32))
        tris.append(np.asarray(mesh.faces, dtype=np.int64))
        masks.append(silhouettes(mesh))
    return ShapeLibrary(list(names) if names is not None else [Path(f).stem for f in files],
                        list(labels) if labels is not None else [-1] * len(files),
                        verts, tris, torch.stack(masks), source)


def build_capod_library(root: str | Path, holdout_per_class: int = 2,
                        faces: int = LIBRARY_FACES, progress: bool = True) -> ShapeLibrary:
    """The CAPOD training split (the mesh recipes hold out 2 meshes per class) as a library,
    its shapes named ``classN/mK``."""
    from flow3d.mesh.data import capod_split

    train, held = capod_split(root, holdout_per_class=holdout_per_class)
    source = (f"CAPOD {root}: {len(train)} training meshes ({len(held)} held out, "
              f"{holdout_per_class} per class), {faces} faces each")
    return build_library(train, names=[f"{f.parent.name}/{f.stem}" for f in train],
                         labels=[int(f.parent.name[5:]) - 1 for f in train], faces=faces,
                         source=source, progress=progress)
