"""Post-processing of extracted meshes: floaters, decimation, watertightness, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flow3d.errors import DataError
from flow3d.io import atomic_path

EXPORT_FORMATS = (".glb", ".obj", ".ply", ".stl")


def _trimesh(mesh):
    import trimesh

    return trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), process=False)


def remove_floaters(mesh, keep: str | float = "largest"):
    """Drop small disconnected pieces (face-connected components).

    keep="largest": keep only the component with the largest surface area; a float f in (0, 1]:
    keep every component whose area is at least f times the total area (the largest is always
    kept). Returns a new mesh.
    """
    import trimesh

    if len(mesh.faces) == 0:
        return mesh.copy()
    labels = trimesh.graph.connected_component_labels(
        trimesh.graph.face_adjacency(mesh.faces), node_count=len(mesh.faces)
    )  # [F]
    area = np.bincount(labels, weights=mesh.area_faces)  # [C]
    if keep == "largest":
        chosen = np.array([np.argmax(area)])
    elif isinstance(keep, (int, float)) and not isinstance(keep, bool) and 0 < keep <= 1:
        chosen = np.flatnonzero(area >= keep * area.sum())
        chosen = np.union1d(chosen, [np.argmax(area)])
    else:
        raise ValueError(f"keep must be 'largest' or a fraction in (0, 1], got {keep!r}")
    out = trimesh.Trimesh(mesh.vertices, mesh.faces[np.isin(labels, chosen)], process=False)
    out.remove_unreferenced_vertices()
    return out


def decimate(mesh, faces: int):
    """Quadric-error decimation (Garland & Heckbert 1997) to at most ``faces`` triangles.

    Uses trimesh's ``simplify_quadric_decimation`` (backend: the ``fast_simplification``
    package). A mesh already within budget is returned unchanged.
    """
    if faces <= 0:
        raise ValueError(f"face budget must be positive, got {faces}")
    if len(mesh.faces) <= faces:
        return mesh
    try:
        import fast_simplification  # noqa: F401
    except ImportError as e:
        raise ImportError("decimation needs fast_simplification: pip install 'flow3d[mesh]'") from e
    out = _trimesh(mesh).simplify_quadric_decimation(face_count=int(faces))
    out.remove_unreferenced_vertices()
    return out


def ensure_watertight(mesh, resolution: int = 256):
    """Return ``mesh`` if it is a closed, consistently wound solid; otherwise remesh the target
    solid of :func:`flow3d.mesh.sdf.mesh_sdf` with :func:`flow3d.mesh.data.make_watertight`."""
    m = _trimesh(mesh)
    if m.is_watertight and m.is_winding_consistent and m.volume > 0:
        return m
    from flow3d.mesh.data import make_watertight

    return make_watertight(m, resolution)


def export_mesh(mesh, path: str | Path) -> Path:
    """Write GLB / OBJ / PLY / STL (chosen by suffix) atomically; returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_FORMATS:
        known = ", ".join(EXPORT_FORMATS)
        raise DataError(f"{path}: unsupported mesh format {suffix!r} (use {known})")
    if len(mesh.faces) == 0:
        raise DataError(f"{path}: refusing to write a mesh with no faces")
    with atomic_path(path) as tmp:
        _trimesh(mesh).export(tmp, file_type=suffix[1:])
    return path
