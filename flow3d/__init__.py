"""flow3d: rectified-flow generative modelling for 3D and scientific data.

One flow-matching core (:mod:`flow3d.core`) specialised into domain heads: toy 2D
(:mod:`flow3d.toy`), meshes (:mod:`flow3d.mesh`) and protein backbones (:mod:`protein`).
"""

from flow3d.errors import Flow3dError

__version__ = "0.1.0"

__all__ = ["Flow3dError", "__version__", "load"]


def load(path, *, ema: bool = True, device: str = "cpu"):
    """Load a ready-to-sample model from a checkpoint directory (weights + recipe).

    Returns a :class:`flow3d.engine.checkpoint.LoadedModel`.
    """
    from flow3d.engine.checkpoint import load_model

    return load_model(path, ema=ema, device=device)
