"""The condition a mesh flow takes, from a user's input: a CAPOD class name or an image.

Shared by every mesh generator (the vector-set latent flow, the sparse-voxel structure and
latent flows): each network's ``cond`` mode says which input it takes
(:class:`~flow3d.mesh.flow.Conditioning`).
"""

from __future__ import annotations

import torch

from flow3d.engine.checkpoint import LoadedModel
from flow3d.engine.keys import suggest
from flow3d.errors import ConfigError, DataError
from flow3d.mesh.data import CAPOD_CLASSES
from flow3d.mesh.image_encoder import prepare_image

__all__ = ["class_index", "encode_condition"]


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
