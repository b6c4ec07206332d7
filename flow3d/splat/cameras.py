"""``Cameras``: a batch of pinhole cameras in the OpenCV convention (x right, y down, z
forward), with conversions to and from nerfstudio's ``transforms.json`` (camera-to-world in the
OpenGL convention: x right, y up, z backward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# OpenGL <-> OpenCV camera axes: flip y and z (its own inverse)
GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


@dataclass(frozen=True)
class Cameras:
    """C cameras of one image size: intrinsics ``K [C, 3, 3]`` in pixels (pixel centres at
    integer + 0.5, gsplat's convention), world-to-camera ``viewmats [C, 4, 4]`` (OpenCV)."""

    K: Tensor
    viewmats: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        c = self.K.shape[0] if self.K.ndim == 3 else -1
        if self.K.shape != (c, 3, 3) or self.viewmats.shape != (c, 4, 4):
            raise ValueError(f"Cameras: K {tuple(self.K.shape)} and viewmats "
                             f"{tuple(self.viewmats.shape)}: expected [C, 3, 3] and [C, 4, 4]")
        if int(self.width) < 1 or int(self.height) < 1:
            raise ValueError(f"Cameras: image size {self.width}x{self.height} must be positive")

    def __len__(self) -> int:
        return self.K.shape[0]

    def __getitem__(self, index) -> Cameras:
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return Cameras(self.K[index], self.viewmats[index], self.width, self.height)

    def to(self, *args, **kwargs) -> Cameras:
        return Cameras(self.K.to(*args, **kwargs), self.viewmats.to(*args, **kwargs),
                       self.width, self.height)

    def resized(self, factor: int) -> Cameras:
        """The same cameras at ``factor`` times the image size: focal lengths and principal
        point scaled (pixel centres at integer + 0.5 keep the image's edges in place)."""
        if int(factor) != factor or factor < 1:
            raise ValueError(f"Cameras.resized: factor {factor} must be a positive integer")
        K = self.K.clone()
        K[:, :2] = K[:, :2] * factor
        return Cameras(K, self.viewmats, self.width * int(factor), self.height * int(factor))

    @property
    def camtoworlds(self) -> Tensor:  # [C, 4, 4], OpenCV axes
        return torch.linalg.inv(self.viewmats)

    @property
    def centers(self) -> Tensor:  # [C, 3]: camera centres in world coordinates
        r, t = self.viewmats[:, :3, :3], self.viewmats[:, :3, 3]
        return -(r.transpose(-1, -2) @ t.unsqueeze(-1)).squeeze(-1)

    # ---- constructors --------------------------------------------------------------------
    @staticmethod
    def from_camtoworld_gl(c2w_gl: Tensor, K: Tensor, width: int, height: int) -> Cameras:
        """From nerfstudio/Blender camera-to-world matrices (OpenGL axes) ``[C, 4, 4]``."""
        c2w_cv = c2w_gl.to(torch.float64) @ GL_TO_CV
        viewmats = torch.linalg.inv(c2w_cv).to(c2w_gl.dtype)
        return Cameras(K.to(c2w_gl.dtype), viewmats, width, height)

    def camtoworld_gl(self) -> Tensor:
        """Camera-to-world in the OpenGL convention of ``transforms.json``: ``[C, 4, 4]``."""
        c2w_cv = torch.linalg.inv(self.viewmats.to(torch.float64))
        return (c2w_cv @ GL_TO_CV).to(self.viewmats.dtype)

    @staticmethod
    def intrinsics(fx: float, fy: float, cx: float, cy: float) -> Tensor:
        return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    @staticmethod
    def look_at(eyes: Tensor, targets: Tensor, *, fov_deg: float, width: int, height: int,
                up: tuple[float, float, float] = (0.0, 1.0, 0.0)) -> Cameras:
        """Cameras at ``eyes [C, 3]`` looking at ``targets [C, 3]`` with a vertical field of
        view ``fov_deg``; ``up`` is the world's up direction (y by default)."""
        eyes, targets = eyes.to(torch.float64), targets.to(torch.float64)
        forward = targets - eyes
        forward = forward / forward.norm(dim=-1, keepdim=True)
        up_t = torch.tensor(up, dtype=torch.float64).expand_as(forward)
        right = torch.linalg.cross(forward, up_t)  # camera x: image right (y points down)
        bad = right.norm(dim=-1) < 1e-8  # looking straight along up: pick another axis
        if bad.any():
            alt = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(forward)
            right[bad] = torch.linalg.cross(forward[bad], alt[bad])
        right = right / right.norm(dim=-1, keepdim=True)
        down = torch.linalg.cross(forward, right)
        r = torch.stack([right, down, forward], dim=-2)  # rows: camera axes in world
        viewmats = torch.eye(4, dtype=torch.float64).repeat(len(eyes), 1, 1)
        viewmats[:, :3, :3] = r
        viewmats[:, :3, 3] = -(r @ eyes.unsqueeze(-1)).squeeze(-1)
        f = 0.5 * height / math.tan(math.radians(fov_deg) / 2)
        K = Cameras.intrinsics(f, f, width / 2, height / 2).repeat(len(eyes), 1, 1)
        return Cameras(K.float(), viewmats.float(), width, height)

    @staticmethod
    def orbit(num: int, *, radius: float, elevation_deg: float = 20.0, fov_deg: float = 40.0,
              width: int = 128, height: int = 128, target: tuple = (0.0, 0.0, 0.0),
              start_deg: float = 0.0) -> Cameras:
        """``num`` cameras evenly around the y axis at one elevation, looking at ``target``."""
        az = torch.deg2rad(torch.arange(num, dtype=torch.float64) * 360.0 / num + start_deg)
        el = math.radians(elevation_deg)
        eyes = torch.stack([radius * math.cos(el) * torch.sin(az),
                            torch.full_like(az, radius * math.sin(el)),
                            radius * math.cos(el) * torch.cos(az)], dim=-1)
        eyes = eyes + torch.tensor(target, dtype=torch.float64)
        targets = torch.tensor(target, dtype=torch.float64).expand_as(eyes)
        return Cameras.look_at(eyes, targets, fov_deg=fov_deg, width=width, height=height)
