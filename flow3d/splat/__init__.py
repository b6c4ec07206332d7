"""3D Gaussian splats on any machine: the ``Gaussians`` type, cameras, a differentiable
rasterizer with a dense reference, a fast CPU backend and the gsplat GPU backend.

    from flow3d.splat import Cameras, Gaussians, render
    out = render(gaussians, Cameras.orbit(4, radius=3.0), backend="cpu")   # out.rgb [4, H, W, 3]
"""

from flow3d.splat.cameras import Cameras
from flow3d.splat.gaussians import Gaussians
from flow3d.splat.project import Projected, project
from flow3d.splat.render import BACKENDS, RenderOutput, RenderSettings, render

__all__ = ["BACKENDS", "Cameras", "Gaussians", "Projected", "RenderOutput", "RenderSettings",
           "project", "render"]
