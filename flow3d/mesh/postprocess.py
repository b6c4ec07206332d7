"""From an SDF to a file: surface extraction, floaters, decimation, watertightness, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flow3d.errors import ConfigError, DataError
from flow3d.io import atomic_path
from flow3d.mesh.data import SUPERVISION_BOUNDS, make_watertight, require_trimesh
from flow3d.mesh.extract import extract_hierarchical
from flow3d.options import check_int

EXPORT_FORMATS = (".glb", ".obj", ".ply", ".stl")


def _as_trimesh(mesh):
    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    return require_trimesh().Trimesh(vertices, faces, process=False)


def remove_floaters(mesh, keep: str | float = "largest"):
    """Drop small disconnected pieces (face-connected components).

    keep="largest": keep only the component with the largest surface area; a float f in (0, 1]:
    keep every component whose area is at least f times the total area (the largest is always
    kept). Returns a new mesh.
    """
    trimesh = require_trimesh()
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
    out = _as_trimesh(mesh).simplify_quadric_decimation(face_count=int(faces))
    out.remove_unreferenced_vertices()
    return out


MIN_RESOLUTION, MAX_RESOLUTION = 32, 512  # extraction grids: the coarse level up to 512^3


def check_resolution(value: int, name: str = "--resolution") -> int:
    """An extraction grid :func:`sdf_to_mesh` takes (a power of two in [32, 512]), else a
    :class:`ConfigError` naming ``name``."""
    check_int(value, name)
    if not MIN_RESOLUTION <= value <= MAX_RESOLUTION or value & (value - 1):
        raise ConfigError(f"{name} = {value}: must be a power of two between {MIN_RESOLUTION} "
                          f"and {MAX_RESOLUTION}")
    return value


def sdf_to_mesh(sdf_fn, resolution: int = 128, *, faces: int | None = None,
                keep: str | float | None = "largest", coarse: int = 32):
    """The surface of a decoded SDF ``sdf_fn(points [N, 3]) -> [N]`` as a trimesh in the
    normalised frame: sparse hierarchical marching cubes over the decoder's domain, then
    (``keep``) floater removal (``"largest"`` leaves one connected piece) and (``faces``)
    quadric decimation. Decimation can open or split a thin surface; then a coarser extraction
    (always closed) is taken instead."""
    def extract(res: int):
        out = extract_hierarchical(sdf_fn, res, coarse=min(coarse, res), bounds=SUPERVISION_BOUNDS)
        mesh = require_trimesh().Trimesh(out.vertices, out.faces, process=True)
        if len(mesh.faces) == 0:
            raise DataError("the decoded SDF has no zero level set inside the box (empty mesh)")
        return remove_floaters(mesh, keep) if keep is not None else mesh

    mesh = extract(resolution)
    res = resolution
    while faces is not None and len(mesh.faces) > faces:
        small = decimate(mesh, faces)
        if small.is_watertight or not mesh.is_watertight or res <= min(coarse, resolution):
            return small
        res //= 2
        mesh = extract(res)
    return mesh


def ensure_watertight(mesh, resolution: int = 256):
    """Return ``mesh`` if it is a closed, consistently wound solid; otherwise remesh the target
    solid of :func:`flow3d.mesh.sdf.mesh_sdf` with :func:`flow3d.mesh.data.make_watertight`."""
    m = _as_trimesh(mesh)
    if m.is_watertight and m.is_winding_consistent and m.volume > 0:
        return m
    return make_watertight(m, resolution)


# The material of every GLB we write: a light grey, fully rough dielectric (glTF 2.0 PBR
# metallic-roughness), so viewers show shape and shading instead of their own fallback.
DEFAULT_MATERIAL = {"name": "flow3d_default", "baseColorFactor": [200, 200, 200, 255],
                    "metallicFactor": 0.0, "roughnessFactor": 0.9}


def _for_glb(mesh):
    """A copy with area-weighted vertex normals and :data:`DEFAULT_MATERIAL` (GLB only: the
    other formats carry no material, and OBJ/PLY normals confuse some readers' indexing).
    A mesh with vertex colours keeps them (``COLOR_0``; :func:`_add_color_material` then
    gives it a white, non-metallic material)."""
    import trimesh

    out = _as_trimesh(mesh)
    _ = out.vertex_normals  # computed now, written as the NORMAL attribute
    if getattr(mesh.visual, "kind", None) == "vertex":
        out.visual = trimesh.visual.ColorVisuals(out, vertex_colors=mesh.visual.vertex_colors)
        return out
    out.visual = trimesh.visual.TextureVisuals(
        material=trimesh.visual.material.PBRMaterial(**DEFAULT_MATERIAL))
    return out


# vertex colours multiply the base colour: white, and not metallic (glTF's default material is
# fully metallic, which most viewers show nearly black without an environment map)
COLOR_MATERIAL = {"name": "flow3d_vertex_colors", "pbrMetallicRoughness": {
    "baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0, "roughnessFactor": 0.9}}


def _add_color_material(glb: bytes) -> bytes:
    """A GLB (one JSON chunk, one binary chunk) with :data:`COLOR_MATERIAL` given to every
    primitive that has none (trimesh writes vertex-coloured meshes without a material)."""
    import json
    import struct

    magic, version, _ = struct.unpack_from("<4sII", glb, 0)
    json_len, json_type = struct.unpack_from("<I4s", glb, 12)
    if magic != b"glTF" or json_type != b"JSON":
        raise ValueError("not a GLB with a leading JSON chunk")
    doc = json.loads(glb[20 : 20 + json_len])
    rest = glb[20 + json_len :]
    materials = doc.setdefault("materials", [])
    materials.append(COLOR_MATERIAL)
    for mesh in doc.get("meshes", []):
        for prim in mesh.get("primitives", []):
            prim.setdefault("material", len(materials) - 1)
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)  # chunks are 4-byte aligned, JSON padded with spaces
    body = struct.pack("<I4s", len(text), b"JSON") + text + rest
    return struct.pack("<4sII", magic, version, 12 + len(body)) + body


def export_mesh(mesh, path: str | Path) -> Path:
    """Write GLB / OBJ / PLY / STL (chosen by suffix) atomically; returns the path. A GLB
    carries vertex normals and a default material (:data:`DEFAULT_MATERIAL`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_FORMATS:
        known = ", ".join(EXPORT_FORMATS)
        raise DataError(f"{path}: unsupported mesh format {suffix!r} (use {known})")
    if len(mesh.faces) == 0:
        raise DataError(f"{path}: refusing to write a mesh with no faces")
    with atomic_path(path) as tmp:
        if suffix == ".glb":
            data = _for_glb(mesh).export(file_type="glb", include_normals=True)
            if getattr(mesh.visual, "kind", None) == "vertex":
                data = _add_color_material(data)
            Path(tmp).write_bytes(data)
        else:
            _as_trimesh(mesh).export(tmp, file_type=suffix[1:])
    return path
