"""Posed-image datasets in nerfstudio's ``transforms.json`` convention, read into tensors.

``transforms.json`` (a folder holding it, or the file itself)::

    {"fl_x": 154.0, "fl_y": 154.0, "cx": 64.0, "cy": 64.0, "w": 128, "h": 128,
     "depth_unit_scale_factor": 0.0001,
     "frames": [{"file_path": "images/000.png", "depth_file_path": "depths/000.png",
                 "transform_matrix": [[...4 x 4 camera-to-world, OpenGL axes...]]}, ...],
     "flow3d_normalization": {"center": [x, y, z], "scale": s}}

Intrinsics sit at the top level or per frame (a frame's own keys win). ``file_path`` and
``depth_file_path`` are relative to the folder of ``transforms.json``. RGBA images carry the
object mask in their alpha channel (RGB is then straight, not premultiplied).

Depth encoding (as nerfstudio reads it): a 16-bit single-channel PNG of integers, or a ``.npy``
array of floats, ``[H, W]``; either is multiplied by ``depth_unit_scale_factor`` (default 1e-3:
millimetres in a PNG) to give the camera-space z distance in scene units (the OpenCV camera's
z, not the distance along the ray). 0 means "no depth here" (background). ``flow3d splat views``
writes PNGs with ``depth_unit_scale_factor = 1e-4`` (0.1 mm when a unit is a metre; depth up
to 6.55 units).

``flow3d_normalization`` (written by ``flow3d splat views``) says how the source mesh was moved
into the dataset's frame: ``x_dataset = (x_mesh - center) / scale``.

Held out for evaluation, as in the 3DGS papers: every 8th frame (indices 0, 8, 16, ...).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flow3d.errors import DataError
from flow3d.splat.cameras import Cameras

HOLDOUT_EVERY = 8
DEFAULT_DEPTH_SCALE = 1e-3  # nerfstudio's default: 16-bit PNG depth in millimetres
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")


@dataclass(frozen=True)
class PosedImages:
    """V views of one size: ``images [V, H, W, 3]`` in [0, 1] (straight RGB),
    ``masks [V, H, W, 1]`` in [0, 1] from the alpha channel (None when no image has one),
    ``depths [V, H, W, 1]`` camera z in scene units, 0 where unknown (None without depth),
    the ``cameras`` and each frame's ``file_path``."""

    images: Tensor
    masks: Tensor | None
    depths: Tensor | None
    cameras: Cameras
    names: tuple[str, ...]
    normalization: dict | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index) -> PosedImages:
        if isinstance(index, int):
            index = [index]
        index = torch.as_tensor(index, dtype=torch.long)
        pick = [self.names[i] for i in index.tolist()]
        return PosedImages(self.images[index], None if self.masks is None else self.masks[index],
                           None if self.depths is None else self.depths[index],
                           Cameras(self.cameras.K[index], self.cameras.viewmats[index],
                                   self.cameras.width, self.cameras.height),
                           tuple(pick), self.normalization)

    def split(self, every: int = HOLDOUT_EVERY) -> tuple[PosedImages, PosedImages | None]:
        """(train, test): every ``every``-th frame (0, every, ...) is held out. A dataset of
        one frame trains on it and has no test views."""
        v = len(self)
        test = [i for i in range(v) if i % every == 0] if v > 1 else []
        train = [i for i in range(v) if i not in test]
        return self[train], (self[test] if test else None)

    def composited(self, background: Tensor) -> Tensor:
        """Images over ``background [3]`` using the mask: ``[V, H, W, 3]``."""
        if self.masks is None:
            return self.images
        return self.images * self.masks + background * (1.0 - self.masks)


def transforms_path(path: str | Path) -> Path:
    path = Path(path)
    file = path / "transforms.json" if path.is_dir() else path
    if not file.is_file():
        what = "no transforms.json in folder" if path.is_dir() else "no such dataset"
        raise DataError(f"{file}: {what} (expected a nerfstudio transforms.json)")
    return file


def read_transforms(path: str | Path) -> tuple[Path, dict]:
    file = transforms_path(path)
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{file}: expected a JSON object with 'frames'")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DataError(f"{file}: no frames (the 'frames' list is missing or empty)")
    return file, meta


def load_dataset(path: str | Path, *, max_size: int | None = None) -> PosedImages:
    """Read ``transforms.json`` and its images (and depths) into a :class:`PosedImages`.
    ``max_size`` (pixels): images larger than this are refused rather than silently resized."""
    file, meta = read_transforms(path)
    root = file.parent
    scale = _number(meta.get("depth_unit_scale_factor", DEFAULT_DEPTH_SCALE), file,
                    "depth_unit_scale_factor")
    images, masks, depths, Ks, c2ws, names = [], [], [], [], [], []
    size = None
    for i, frame in enumerate(meta["frames"]):
        where = f"{file}: frame {i}"
        if not isinstance(frame, dict):
            raise DataError(f"{where}: expected an object")
        missing = [k for k in ("file_path", "transform_matrix") if k not in frame]
        missing += [k for k in INTRINSIC_KEYS if k not in frame and k not in meta]
        if missing:
            raise DataError(f"{where}: missing {', '.join(missing)}")
        intr = {k: _number(frame.get(k, meta.get(k)), file, f"frame {i} {k}")
                for k in INTRINSIC_KEYS}
        w, h = int(intr["w"]), int(intr["h"])
        if w < 1 or h < 1:
            raise DataError(f"{where}: image size {w}x{h} must be positive")
        c2w = _matrix(frame["transform_matrix"], where)
        image_file = root / str(frame["file_path"])
        rgb, alpha = _read_image(image_file)
        if rgb.shape[:2] != (h, w):
            raise DataError(f"{image_file}: image is {rgb.shape[1]}x{rgb.shape[0]}, "
                            f"transforms.json says {w}x{h}")
        if size is None:
            size = (w, h)
        elif size != (w, h):
            raise DataError(f"{image_file}: {w}x{h}, but frame 0 is {size[0]}x{size[1]} "
                            "(all views must have one size)")
        if max_size is not None and max(w, h) > max_size:
            raise DataError(f"{image_file}: {w}x{h} is larger than {max_size} pixels")
        depth = None
        if frame.get("depth_file_path"):
            depth = _read_depth(root / str(frame["depth_file_path"]), (h, w), scale)
        images.append(rgb)
        masks.append(alpha)
        depths.append(depth)
        Ks.append(Cameras.intrinsics(intr["fl_x"], intr["fl_y"], intr["cx"], intr["cy"]))
        c2ws.append(c2w)
        names.append(str(frame["file_path"]))
    mask_t = None
    if any(m is not None for m in masks):
        mask_t = torch.stack([torch.ones(size[1], size[0], 1) if m is None else m
                              for m in masks])
    depth_t = None
    if any(d is not None for d in depths):
        depth_t = torch.stack([torch.zeros(size[1], size[0], 1) if d is None else d
                               for d in depths])
    cameras = Cameras.from_camtoworld_gl(torch.stack(c2ws), torch.stack(Ks).to(torch.float32),
                                         size[0], size[1])
    norm = meta.get("flow3d_normalization")
    return PosedImages(torch.stack(images), mask_t, depth_t, cameras, tuple(names),
                       norm if isinstance(norm, dict) else None)


# ---- parts -----------------------------------------------------------------------------------
def _number(value, file: Path, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DataError(f"{file}: {key} = {value!r} is not a finite number")
    return float(value)


def _matrix(value, where: str) -> Tensor:
    try:
        m = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: transform_matrix is not a 4x4 matrix of numbers") from None
    if m.shape == (3, 4):
        m = torch.cat([m, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    if m.shape != (4, 4) or not torch.isfinite(m).all():
        raise DataError(f"{where}: transform_matrix must be a finite 4x4 matrix "
                        f"(got shape {tuple(m.shape)})")
    if abs(float(torch.det(m[:3, :3]))) < 1e-9:
        raise DataError(f"{where}: transform_matrix is singular")
    return m.to(torch.float32)


def _read_image(path: Path) -> tuple[Tensor, Tensor | None]:
    """``[H, W, 3]`` RGB in [0, 1] and ``[H, W, 1]`` alpha (None when the image has none)."""
    from PIL import Image

    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty image file")
    try:
        with Image.open(path) as im:
            im.load()
            has_alpha = im.mode in ("RGBA", "LA") or "transparency" in im.info
            array = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot be read as an image ({e})") from None
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{path}: zero-size image")
    t = torch.from_numpy(array.astype(np.float32) / 255.0)
    return t[..., :3].contiguous(), (t[..., 3:].contiguous() if has_alpha else None)


def _read_depth(path: Path, shape: tuple[int, int], scale: float) -> Tensor:
    """``[H, W, 1]`` camera z in scene units (16-bit PNG or .npy, times ``scale``)."""
    if not path.is_file():
        raise DataError(f"{path}: depth file not found")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot be read as a .npy depth map ({e})") from None
    else:
        from PIL import Image

        try:
            with Image.open(path) as im:
                array = np.asarray(im)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot be read as a depth image ({e})") from None
    array = np.squeeze(np.asarray(array, dtype=np.float64))
    if array.shape != shape:
        raise DataError(f"{path}: depth map is {list(array.shape)}, expected [{shape[0]}, "
                        f"{shape[1]}] like its image")
    if not np.isfinite(array).all() or (array < 0).any():
        raise DataError(f"{path}: depth has negative, NaN or infinite values")
    return torch.from_numpy(array * scale).to(torch.float32).unsqueeze(-1)


def backproject(depths: Tensor, cameras: Cameras) -> tuple[Tensor, Tensor]:
    """World points ``[M, 3]`` of every pixel with depth > 0, and their ``(view, y, x)``
    indices ``[M, 3]``: pixel centres (integer + 0.5) lifted to camera z = depth."""
    from flow3d.splat.render import pixel_centers

    v, h, w, _ = depths.shape
    pix = pixel_centers(w, h, torch.float64)  # [H, W, 2]
    index = (depths[..., 0] > 0).nonzero()  # [M, 3]
    z = depths[index[:, 0], index[:, 1], index[:, 2], 0].to(torch.float64)
    uv = pix[index[:, 1], index[:, 2]]
    K = cameras.K.to(torch.float64)[index[:, 0]]
    x = (uv[:, 0] - K[:, 0, 2]) / K[:, 0, 0] * z
    y = (uv[:, 1] - K[:, 1, 2]) / K[:, 1, 1] * z
    p_cam = torch.stack([x, y, z, torch.ones_like(z)], dim=-1)  # [M, 4]
    c2w = cameras.camtoworlds.to(torch.float64)[index[:, 0]]
    return (c2w @ p_cam.unsqueeze(-1)).squeeze(-1)[:, :3].to(torch.float32), index


def save_dataset(folder: str | Path, images: np.ndarray, cameras: Cameras, *,
                 depths: np.ndarray | None = None, depth_scale: float = 1e-4,
                 normalization: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``images`` (uint8 ``[V, H, W, 3 or 4]``; RGBA carries the mask) and optional
    ``depths`` (float ``[V, H, W]`` camera z, 0 = none) as a transforms.json dataset in the
    (existing, checked) ``folder``; each file is written atomically, transforms.json last."""
    from PIL import Image

    from flow3d.io import atomic_path, atomic_write_text

    folder = Path(folder)
    v, h, w = images.shape[:3]
    c2w = cameras.camtoworld_gl().to(torch.float64)
    frames = []
    for i in range(v):
        frame = {"file_path": f"images/{i:03d}.png"}
        with atomic_path(folder / frame["file_path"]) as tmp:
            Image.fromarray(np.ascontiguousarray(images[i])).save(tmp, format="PNG")
        if depths is not None:
            frame["depth_file_path"] = f"depths/{i:03d}.png"
            units = np.round(np.asarray(depths[i], dtype=np.float64) / depth_scale)
            if units.max(initial=0) > 65535:
                raise DataError(f"{folder}: depth {units.max() * depth_scale:.3g} does not fit "
                                f"a 16-bit PNG at depth_unit_scale_factor {depth_scale:g}")
            with atomic_path(folder / frame["depth_file_path"]) as tmp:
                Image.fromarray(units.astype(np.uint16)).save(tmp, format="PNG")
        k = cameras.K[i].tolist()
        frame.update({"fl_x": k[0][0], "fl_y": k[1][1], "cx": k[0][2], "cy": k[1][2],
                      "transform_matrix": c2w[i].tolist()})
        frames.append(frame)
    meta = {"camera_model": "OPENCV", "w": w, "h": h}
    if depths is not None:
        meta["depth_unit_scale_factor"] = depth_scale
    if normalization is not None:
        meta["flow3d_normalization"] = normalization
    meta.update(extra or {})
    meta["frames"] = frames
    atomic_write_text(folder / "transforms.json", json.dumps(meta, indent=1) + "\n")
    return folder / "transforms.json"
