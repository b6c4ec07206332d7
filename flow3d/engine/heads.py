"""Which head class a recipe's ``head:`` name means: a plain, checked dict, imported lazily.

Heads with heavy optional dependencies (biopython, trimesh) are only imported when a recipe
asks for them, so ``flow3d train recipes/toy/...`` works with the core install alone.
"""

from __future__ import annotations

import importlib

from flow3d.engine.head import Head
from flow3d.engine.keys import suggest
from flow3d.errors import ConfigError

__all__ = ["HEADS", "HeadUnavailableError", "get_head"]

# name -> "module:Class"
HEADS: dict[str, str] = {
    "toy": "flow3d.toy.head:ToyHead",
    "protein": "protein.head:ProteinHead",
    "mesh_vae": "flow3d.mesh.head:MeshVAEHead",
    "mesh_flow": "flow3d.mesh.head:MeshFlowHead",
    "mesh_svae": "flow3d.mesh.sparse_head:MeshSVAEHead",
    "mesh_structure": "flow3d.mesh.sparse_gen_head:MeshStructureHead",
    "mesh_slat": "flow3d.mesh.sparse_gen_head:MeshSLatHead",
    "mesh_occvae": "flow3d.mesh.sparse_gen_head:MeshOccVAEHead",
    "appearance_vae": "flow3d.appearance.head:AppearanceVAEHead",
    "appearance_flow": "flow3d.appearance.head:AppearanceFlowHead",
    "splat_decoder": "flow3d.splat.head:GSDecoderHead",
    "splat_flow": "flow3d.splat.head:MultiViewFlowHead",
    "splat_classifier": "flow3d.splat.head:SceneClassifierHead",
    "splat_rays": "flow3d.splat.head:RayRegressorHead",
    "splat_guide": "flow3d.splat.guide:NoisyClassifierHead",
}

# the pip extra that provides each head's optional dependencies
EXTRAS: dict[str, str] = {"protein": "protein", "mesh_vae": "mesh", "mesh_flow": "mesh",
                          "mesh_svae": "mesh", "mesh_structure": "mesh", "mesh_slat": "mesh",
                          "mesh_occvae": "mesh", "appearance_vae": "mesh",
                          "appearance_flow": "mesh", "splat_decoder": "mesh",
                          "splat_flow": "mesh", "splat_classifier": "mesh",
                          "splat_rays": "mesh", "splat_guide": "mesh"}


class HeadUnavailableError(ConfigError):
    """The head is known but its module (or one of its dependencies) cannot be imported."""


def get_head(name: str, *, where: str = "recipe") -> type[Head]:
    """Resolve a head name to its class; unknown names suggest the closest known one."""
    if name not in HEADS:
        raise ConfigError(f"{where}: unknown head {name!r}" + suggest(name, sorted(HEADS)))
    module_name, _, attr = HEADS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        extra = EXTRAS.get(name)
        hint = f"; install it with pip install 'flow3d[{extra}]'" if extra else ""
        raise HeadUnavailableError(
            f"{where}: head {name!r} cannot be imported ({module_name}: {e}){hint}"
        ) from e
    cls = getattr(module, attr, None)
    if cls is None:
        raise HeadUnavailableError(f"{where}: head {name!r}: {module_name} has no {attr}")
    if not (isinstance(cls, type) and issubclass(cls, Head)):
        raise TypeError(f"{HEADS[name]} is not a flow3d.engine.head.Head subclass")
    return cls
