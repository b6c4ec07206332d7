"""A small image encoder trained from scratch (no pretrained weights can be downloaded here).

A strided CNN turns a grayscale image ``[B, 1, R, R]`` (white background, object roughly
centred; :func:`prepare_image` makes one from any photo) into a grid of tokens
``[B, (R/8)^2, width]`` with learned 2D position embeddings, which the latent flow
cross-attends to, and a pooled feature ``[B, width]`` used for retrieval baselines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from flow3d.errors import DataError

__all__ = ["ImageEncoder", "background_warning", "colour_foreground", "foreground", "load_image",
           "prepare_image", "prepare_mask", "read_image"]


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(8, cout), nn.SiLU()
    )


class ImageEncoder(nn.Module):
    """CNN ``[B, 1, R, R] -> tokens [B, (R/8)^2, width]``; three stride-2 stages."""

    def __init__(self, width: int = 64, resolution: int = 64, channels: int = 32):
        super().__init__()
        if resolution % 8:
            raise ValueError(f"image resolution must be a multiple of 8, got {resolution}")
        self.resolution = resolution
        c = channels
        self.net = nn.Sequential(
            _conv(1, c, 1), _conv(c, c, 2), _conv(c, 2 * c, 2), _conv(2 * c, 2 * c, 2),
            nn.Conv2d(2 * c, width, 1),
        )
        n = (resolution // 8) ** 2
        self.pos = nn.Parameter(torch.randn(1, n, width) * 0.02)
        self.norm = nn.LayerNorm(width)

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 1 or images.shape[-1] != self.resolution:
            raise ValueError(
                f"images must be [B, 1, {self.resolution}, {self.resolution}], got {images.shape}"
            )
        # white background -> 0 so padding and background agree
        f = self.net(1.0 - images)  # [B, W, R/8, R/8]
        return self.norm(f.flatten(2).transpose(1, 2) + self.pos)  # [B, (R/8)^2, W]

    def pooled(self, images: Tensor) -> Tensor:
        """Mean token ``[B, width]`` (an image feature for nearest-neighbour retrieval)."""
        return self.forward(images).mean(1)


# What a user's image must be: sizes known from the header, before any pixel is decoded
MIN_IMAGE_SIDE = 16  # below this there is no shape to read
MAX_IMAGE_SIDE = 8192  # larger photos are downscaled to 64 px anyway: resize them first
MIN_OBJECT_FRACTION = 1e-3  # of the pixels differ from the background, else "no object"
BACKGROUND_TOLERANCE = 0.05  # grey levels within this of the border median are background
MASK_COVERAGE = 0.01  # prepare_mask: a resized pixel is object above this covered fraction
CLUTTER_COVER, CLUTTER_BORDER = 0.8, 0.25  # background_warning: "object" everywhere


def _rgb(rgb: np.ndarray) -> np.ndarray:
    """Any ``[H, W]`` / ``[H, W, 1|3|4]`` uint8 or float image -> ``[H, W, C]`` floats in
    [0, 1] (C = 1 grey or 3 colour), alpha composited on white."""
    a = np.asarray(rgb, dtype=np.float32)
    if a.max() > 1.0:
        a = a / 255.0
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3] * a[..., 3:] + (1.0 - a[..., 3:])
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise ValueError(f"image must be [H, W] grey or [H, W, 3|4] RGB(A), got shape "
                         f"{np.shape(rgb)}")
    if min(a.shape[:2]) < 2:
        raise ValueError(f"image is {a.shape[1]}x{a.shape[0]} pixels; at least 2x2 is needed")
    return a


def _grey(rgb: np.ndarray) -> np.ndarray:
    """Any image (see :func:`_rgb`) -> grey ``[H, W]`` in [0, 1], alpha composited on white."""
    return _rgb(rgb).mean(-1)


def foreground(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """(object mask ``[H, W]``, background grey level): pixels further than
    ``BACKGROUND_TOLERANCE`` from the median border value, so dark or light backgrounds
    both work."""
    a = _grey(rgb)
    bg = float(np.median(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])))
    return np.abs(a - bg) > BACKGROUND_TOLERANCE, bg


def colour_foreground(rgb: np.ndarray) -> np.ndarray:
    """The object mask ``[H, W]`` by colour: pixels further than ``BACKGROUND_TOLERANCE`` in
    any channel from the median border colour, so that an object as bright as its background
    but of another colour is seen (the grey :func:`foreground`, which frames the models'
    inputs as they were trained, misses it)."""
    c = _rgb(rgb)
    border = np.concatenate([c[0], c[-1], c[:, 0], c[:, -1]])  # [P, C]
    return (np.abs(c - np.median(border, axis=0)) > BACKGROUND_TOLERANCE).any(-1)


def _crop(fg: np.ndarray, resolution: int) -> Tensor:
    """The sampling grid ``[1, R, R, 2]`` (grid_sample's, align_corners) of the square around
    the foreground with a 10% margin (the whole image when there is none)."""
    h, w = fg.shape
    if fg.any():
        ys, xs = np.nonzero(fg)
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        half = max(ys.max() - ys.min(), xs.max() - xs.min()) / 2 * 1.1 + 1
    else:
        cy, cx, half = (h - 1) / 2, (w - 1) / 2, max(h, w) / 2
    t = (np.arange(resolution) + 0.5) / resolution * 2 * half - half
    yy, xx = np.meshgrid(cy + t, cx + t, indexing="ij")
    return torch.from_numpy(np.stack([xx / (w - 1) * 2 - 1, yy / (h - 1) * 2 - 1], -1)
                            )[None].float()


def prepare_image(rgb: np.ndarray, resolution: int = 64) -> Tensor:
    """Any ``[H, W]`` / ``[H, W, 3|4]`` uint8 or float image -> ``[1, R, R]`` float in [0, 1].

    Grayscale, alpha composited on white, mapped to ``1 - |a - background|`` (see
    :func:`foreground`), the foreground is cropped to a square with a 10% margin and resized:
    the model sees objects the way it was trained on renders, whatever the photo's framing.
    """
    a = _grey(rgb)
    fg, bg = foreground(a)
    # contrast to the background, background -> 1; shifted by +1 so that zero marks "outside"
    img = torch.from_numpy(2.0 - np.abs(a - bg))[None, None].float()
    out = torch.nn.functional.grid_sample(img, _crop(fg, resolution), align_corners=True,
                                          padding_mode="zeros")
    out = torch.where(out < 1.0, torch.full_like(out, 2.0), out) - 1.0  # outside -> 1
    return out[0].clamp(0, 1)  # [1, R, R]


def background_warning(rgb: np.ndarray) -> str | None:
    """A sentence when the photo's background does not look plain (its colour foreground
    covers most of the image or runs along most of its border), else None: the silhouette, and
    the models' framing, are then the clutter's, not the object's."""
    fg = colour_foreground(rgb)
    border = np.concatenate([fg[0], fg[-1], fg[:, 0], fg[:, -1]]).mean()
    if fg.mean() > CLUTTER_COVER or border > CLUTTER_BORDER:
        return (f"the object covers {fg.mean():.0%} of the image and {border:.0%} of its border: "
                "the background does not look plain; give a photo on a plain background or a "
                "PNG with transparency")
    return None


def prepare_mask(rgb: np.ndarray, resolution: int = 64) -> Tensor:
    """The object's silhouette ``[R, R]`` bool (:func:`colour_foreground`), cropped to a square
    around it with a 10% margin like :func:`prepare_image` and resized; a pixel belongs to the
    object when any of its area does, so thin parts (legs, wires) survive the resize."""
    fg = colour_foreground(rgb)
    m = torch.from_numpy(fg.astype(np.float32))[None, None]
    out = torch.nn.functional.grid_sample(m, _crop(fg, resolution), align_corners=True,
                                          padding_mode="zeros")
    return out[0, 0] > MASK_COVERAGE


def read_image(path: str | Path) -> np.ndarray:
    """A user's image file as ``[H, W, 3|4]`` floats in [0, 1], checked before it is used: its
    size is read from the header and refused before decoding when it is absurd, a truncated or
    non-image file is a :class:`DataError` naming it, and so is an image with no object on it
    (blank, or fully transparent)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the size is checked here, with a message of our own
    try:
        with Image.open(path) as im:
            w, h = im.size
            if max(w, h) > MAX_IMAGE_SIDE:
                raise DataError(f"{path}: image is {w}x{h} pixels; the largest side accepted is "
                                f"{MAX_IMAGE_SIDE} (the model sees 64x64: resize it first)")
            if min(w, h) < MIN_IMAGE_SIDE:
                raise DataError(f"{path}: image is {w}x{h} pixels; at least "
                                f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} is needed to see an object")
            has_alpha = "A" in im.getbands() or "transparency" in im.info
            im = im.convert("RGBA" if has_alpha else "RGB")
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file (PNG, JPEG, ...)") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt pixel data
        raise DataError(f"{path}: cannot read image ({e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    rgb = np.asarray(im, dtype=np.float32) / 255.0  # [H, W, 3|4]
    mask, _ = foreground(rgb)
    if mask.mean() < MIN_OBJECT_FRACTION:
        what = "fully transparent" if has_alpha and rgb[..., 3].max() == 0 else "blank"
        raise DataError(f"{path}: no object in the image ({what}: under "
                        f"{MIN_OBJECT_FRACTION:.1%} of the pixels differ from the background); "
                        "give a photo or render of one object")
    return rgb


def load_image(path: str | Path, resolution: int = 64) -> Tensor:
    """Read and check an image file (:func:`read_image`) -> ``[1, R, R]``."""
    return prepare_image(read_image(path), resolution)
