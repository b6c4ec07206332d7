"""Surface extraction from an SDF callable: dense and sparse hierarchical marching cubes.

``sdf_fn(points[N, 3] torch float32) -> [N]`` (negative inside) is evaluated on the regular grid
``x_i = -b + 2 b i / R, i = 0..R`` (``R = resolution`` cells per axis, ``(R + 1)^3`` points).

Hierarchical extraction (the coarse-to-fine decode of TRELLIS / Hunyuan3D-2 / TripoSG): evaluate a
coarse grid, keep the cells where the surface may pass (a sign change, or a corner closer to the
surface than half a cell diagonal, which never misses a surface of a true SDF), dilate that set by
``band`` cells, split each kept cell into 8 and evaluate only the new corners; repeat until the
cell size is ``2b / R``. Marching cubes (Lewiner, scikit-image) then runs block by block on the
sign-change cells only, so memory is bounded by the band, not by ``R^3``. Dense extraction runs
the same marching-cubes code on the full grid, so both give the same triangles wherever the band
contains the surface.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

SdfFn = Callable[[torch.Tensor], torch.Tensor]

# The 8 corners of a unit cell, and the 3^3 lattice of a cell split in two along each axis.
_CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.int64)
# Points of the half-step lattice of a cell that are not corners of the cell itself (19 of 27):
# the corners are already known from the coarser level.
_NEW_POINTS = np.array(
    [[i, j, k] for i in (0, 1, 2) for j in (0, 1, 2) for k in (0, 1, 2) if 1 in (i, j, k)],
    dtype=np.int64,
)


@dataclass(frozen=True)
class ExtractBudget:
    """How much work extraction does at once, and where: ``chunk`` caps the points of one
    sdf_fn call (decoder memory), ``max_batch_points`` the candidate points materialised at
    once on the host, ``block`` the marching-cubes block edge in cells; ``device`` is where
    the points are sent (default: the CPU)."""

    chunk: int = 262_144
    max_batch_points: int = 262_144
    block: int = 64
    device: str | torch.device | None = None


@dataclass
class ExtractResult:
    """vertices [V, 3] float32 (in the sdf_fn's coordinates), faces [F, 3] int64 (outward)."""

    vertices: np.ndarray
    faces: np.ndarray
    n_queries: int
    resolution: int
    seconds: float = 0.0
    queries_per_level: list[int] = field(default_factory=list)
    n_cells: int = 0  # cells marching cubes ran on

    @property
    def mesh(self):
        """The result as a ``trimesh.Trimesh`` (not re-processed)."""
        import trimesh

        return trimesh.Trimesh(self.vertices, self.faces, process=False)


# ---- helpers ---------------------------------------------------------------------------------
def _keys(idx: np.ndarray, n: int) -> np.ndarray:
    """Linear keys of grid indices idx [M, 3] on an n^3 point grid -> [M] int64."""
    return (idx[:, 0] * n + idx[:, 1]) * n + idx[:, 2]


def _unique(keys: np.ndarray) -> np.ndarray:
    """Sorted unique int64 keys (sort-based: numpy 2's hash-based np.unique is ~50x slower
    on millions of int64 keys)."""
    s = np.sort(keys)
    return s[np.r_[True, s[1:] != s[:-1]]] if len(s) else s


def _edge_keys(v: np.ndarray, n: int) -> np.ndarray:
    """Identify marching-cubes vertices [M, 3] (grid units) by the grid edge they lie on.

    A vertex is ``lower point + t * axis`` with integer coordinates on the other two axes, so
    ``key = 3 * point key + axis`` is exact: the same edge gives the same key in every block.
    A vertex sitting on a grid point gets that point's key with axis 0.
    """
    r = np.round(v)
    off = np.abs(v - r)  # [M, 3]
    axis = np.argmax(off, axis=1)
    on_point = off.max(axis=1) < 1e-6
    lower = r.astype(np.int64)
    rows = np.arange(len(v))
    lower[rows, axis] = np.floor(v[rows, axis]).astype(np.int64)
    lower[on_point] = r[on_point].astype(np.int64)
    axis[on_point] = 0
    return _keys(lower, n) * 3 + axis


def _unique_inverse(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the first occurrence of each distinct key, element -> distinct id)."""
    order = np.argsort(keys, kind="stable")
    s = keys[order]
    new = np.r_[True, s[1:] != s[:-1]]
    inverse = np.empty(len(keys), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return order[new], inverse


def _unkey(keys: np.ndarray, n: int) -> np.ndarray:
    return np.stack([keys // (n * n), (keys // n) % n, keys % n], axis=1)


def _evaluate(
    sdf_fn: SdfFn,
    idx: np.ndarray,
    resolution: int,
    bounds: float,
    chunk: int,
    device,
    close_boundary: bool = True,
) -> np.ndarray:
    """sdf at grid indices idx [M, 3] -> [M] float32, in calls of at most ``chunk`` points.

    close_boundary: points on the faces of the box count as outside (max(s, 1e-6)), so a solid
    cut by the box is capped there and the extracted mesh is always closed.
    """
    out = np.empty(len(idx), dtype=np.float32)
    scale = 2.0 * bounds / resolution
    with torch.no_grad():
        for i in range(0, len(idx), chunk):
            pts = torch.from_numpy(idx[i : i + chunk].astype(np.float32) * scale - bounds)
            s = sdf_fn(pts.to(device)).reshape(-1)  # [m]
            if s.shape[0] != pts.shape[0]:
                raise ValueError(f"sdf_fn returned {s.shape[0]} values for {pts.shape[0]} points")
            out[i : i + chunk] = s.float().cpu().numpy()
    if not np.isfinite(out).all():
        raise ValueError("sdf_fn returned NaN or inf values")
    if close_boundary:
        on_face = ((idx == 0) | (idx == resolution)).any(axis=1)
        out[on_face] = np.maximum(out[on_face], 1e-6)
    return out


class _PointStore:
    """Sparse map from fine-grid point keys to sdf values (sorted arrays)."""

    def __init__(self):
        self.keys = np.empty(0, dtype=np.int64)
        self.vals = np.empty(0, dtype=np.float32)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.keys, keys).clip(max=max(len(self.keys) - 1, 0))
        return (self.keys[pos] == keys) if len(self.keys) else np.zeros(len(keys), bool)

    def add(self, keys: np.ndarray, vals: np.ndarray) -> None:
        """Merge new points; a key given twice (batch seams) keeps its first value."""
        k = np.concatenate([self.keys, keys])
        order = np.argsort(k, kind="stable")
        k, v = k[order], np.concatenate([self.vals, vals])[order]
        first = np.r_[True, k[1:] != k[:-1]] if len(k) else np.zeros(0, bool)
        self.keys, self.vals = k[first], v[first]

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.keys, keys).clip(max=len(self.keys) - 1)
        if not np.array_equal(self.keys[pos], keys):
            raise AssertionError("grid point looked up before it was evaluated")
        return self.vals[pos]


def _marching_cubes_cells(
    lookup: Callable[[np.ndarray], np.ndarray],
    cells: np.ndarray,
    resolution: int,
    bounds: float,
    block: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes on the unit cells with lower corners cells [M, 3] (all corners known).

    Cells are grouped into blocks of ``block^3`` cells; each block is a small dense volume
    where only the listed cells are processed (scikit-image's ``mask`` enables the cube whose
    lower corner is c when mask[c + 1] is set). Vertices shared across blocks are merged.
    """
    from skimage.measure import marching_cubes

    n = resolution + 1
    if len(cells) == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    bid = cells // block  # [M, 3]
    bkey = _keys(bid, n)
    order = np.argsort(bkey, kind="stable")
    cells, bkey = cells[order], bkey[order]
    starts = np.flatnonzero(np.r_[True, bkey[1:] != bkey[:-1]])
    ends = np.r_[starts[1:], len(cells)]
    verts, faces, offset = [], [], 0
    for s, e in zip(starts, ends):
        c = cells[s:e]  # [m, 3]
        origin = (c[0] // block) * block  # [3]
        size = np.minimum(block, resolution - origin) + 1  # points per axis in this block
        vol = np.ones(tuple(size), dtype=np.float32)  # unknown points: any value (masked out)
        corners = (c[:, None, :] + _CORNERS[None]).reshape(-1, 3)  # [m*8, 3]
        local = corners - origin
        vol[local[:, 0], local[:, 1], local[:, 2]] = -lookup(corners)  # solid = above level
        mask = np.zeros(tuple(size), dtype=bool)
        lc = c - origin + 1
        mask[lc[:, 0], lc[:, 1], lc[:, 2]] = True
        try:
            v, f, _, _ = marching_cubes(vol, 0.0, mask=mask, allow_degenerate=False)
        except RuntimeError:  # no surface in this block (cells touching 0 only at a corner)
            continue
        verts.append(v.astype(np.float64) + origin)
        faces.append(f[:, ::-1].astype(np.int64) + offset)  # reversed winding: outward normals
        offset += len(v)
    if not verts:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    v = np.concatenate(verts)  # [V, 3] grid units
    f = np.concatenate(faces)  # [F, 3]
    # Merge duplicates on block seams: both blocks put a vertex on the same grid edge.
    first, inverse = _unique_inverse(_edge_keys(v, n))
    v, f = v[first], inverse[f]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    world = (v * (2.0 * bounds / resolution) - bounds).astype(np.float32)
    return world, f


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate cell arrays [m, 3]; an empty list gives an empty [0, 3] array."""
    return np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.int64)


def _sign_change(vals8: np.ndarray) -> np.ndarray:
    """Cells whose corner values [M, 8] straddle 0."""
    return (vals8.min(axis=1) <= 0.0) & (vals8.max(axis=1) >= 0.0)


# ---- dense -----------------------------------------------------------------------------------
def extract_dense(
    sdf_fn: SdfFn,
    resolution: int,
    bounds: float = 1.0,
    *,
    close_boundary: bool = True,
    budget: ExtractBudget = ExtractBudget(),
) -> ExtractResult:
    """Evaluate all (R + 1)^3 grid points, then marching cubes on the sign-change cells."""
    chunk, block, device = budget.chunk, budget.block, budget.device
    t_start = time.perf_counter()
    n = resolution + 1
    vol = np.empty(n**3, dtype=np.float32)  # [n^3] row-major (i, j, k)
    slab = max(chunk, n * n)
    for i in range(0, n**3, slab):
        keys = np.arange(i, min(i + slab, n**3), dtype=np.int64)
        vol[i : i + len(keys)] = _evaluate(
            sdf_fn, _unkey(keys, n), resolution, bounds, chunk, device or "cpu", close_boundary
        )
    vol = vol.reshape(n, n, n)
    cells = []
    for i in range(resolution):  # one x-slab at a time keeps the 8-corner views small
        a, b = vol[i], vol[i + 1]
        corners = [a[:-1, :-1], a[1:, :-1], a[:-1, 1:], a[1:, 1:]]
        corners += [b[:-1, :-1], b[1:, :-1], b[:-1, 1:], b[1:, 1:]]
        lo = np.minimum.reduce(corners)
        hi = np.maximum.reduce(corners)
        jk = np.argwhere((lo <= 0) & (hi >= 0))
        cells.append(np.concatenate([np.full((len(jk), 1), i), jk], axis=1))
    cells = np.concatenate(cells).astype(np.int64)
    v, f = _marching_cubes_cells(
        lambda idx: vol[idx[:, 0], idx[:, 1], idx[:, 2]], cells, resolution, bounds, block
    )
    return ExtractResult(
        v, f, n_queries=n**3, resolution=resolution, seconds=time.perf_counter() - t_start,
        queries_per_level=[n**3], n_cells=len(cells),
    )


# ---- hierarchical ----------------------------------------------------------------------------
def _dilate(cells: np.ndarray, band: int, step: int, resolution: int) -> np.ndarray:
    """Grow a set of cells (lower corners, multiples of step) by ``band`` cells per axis.

    Separable (x, then y, then z) so memory is 3x the set, not 27x.
    """
    n = resolution + 1
    hi = resolution - step
    for axis in range(3):
        parts = []
        for d in range(-band, band + 1):
            c = cells.copy()
            c[:, axis] += d * step
            parts.append(c[(c[:, axis] >= 0) & (c[:, axis] <= hi)])
        cells = _unkey(_unique(_keys(np.concatenate(parts), n)), n)
    return cells


def extract_hierarchical(
    sdf_fn: SdfFn,
    resolution: int,
    *,
    coarse: int = 32,
    band: int = 1,
    bounds: float = 1.0,
    near: float = math.sqrt(3.0) / 2.0,
    close_boundary: bool = True,
    budget: ExtractBudget = ExtractBudget(),
    start_cells: np.ndarray | None = None,
) -> ExtractResult:
    """Sparse coarse-to-fine extraction; same triangles as :func:`extract_dense` at ``resolution``.

    resolution = coarse * 2^k cells per axis. A cell is refined when its corners change sign or
    min |sdf| < near * cell size; the refined set is dilated by ``band`` cells.
    ``close_boundary`` caps solids cut by the box (see :func:`extract_dense`'s twin rule);
    ``budget`` bounds memory (:class:`ExtractBudget`). ``start_cells`` ([M, 3] indices on the
    coarse grid): start from these coarse cells instead of the whole coarse grid (the active
    voxels of a sparse-voxel latent); the caller must make sure the surface lies in them.
    """
    chunk, max_batch_points, block = budget.chunk, budget.max_batch_points, budget.block
    levels = math.log2(resolution / coarse) if coarse > 0 else -1
    if levels < 0 or levels != int(levels):
        raise ValueError(f"resolution {resolution} must be coarse ({coarse}) times a power of 2")
    if band < 0:
        raise ValueError(f"band must be >= 0, got {band}")
    t_start = time.perf_counter()
    device = budget.device or "cpu"
    n = resolution + 1
    step = resolution // coarse
    h_world = 2.0 * bounds / resolution
    store = _PointStore()

    def evaluate_new(batches) -> int:
        """Evaluate the points in ``batches`` ([m, 3] each) not yet in the store, each once."""
        parts = []
        for points in batches:
            keys = _unique(_keys(points, n))
            parts.append(keys[~store.contains(keys)])
        new = _unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
        if len(new) == 0:
            return 0
        vals = np.empty(len(new), dtype=np.float32)
        for i in range(0, len(new), max_batch_points):
            vals[i : i + max_batch_points] = _evaluate(
                sdf_fn, _unkey(new[i : i + max_batch_points], n), resolution, bounds, chunk,
                device, close_boundary,
            )
        store.add(new, vals)
        return len(new)

    def expand(cells: np.ndarray, offsets: np.ndarray, scale: int):
        """Batches of (cells + scale * offsets) points, each about max_batch_points long."""
        per = max(1, max_batch_points // len(offsets))
        for i in range(0, len(cells), per):
            yield (cells[i : i + per, None, :] + scale * offsets).reshape(-1, 3)

    if start_cells is None:
        axis = np.arange(0, resolution + 1, step, dtype=np.int64)
        grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        per_level = [evaluate_new([grid])]
        cells = grid[(grid < resolution).all(axis=1)]  # [M, 3] lower corners at this level
    else:
        cells = np.asarray(start_cells, dtype=np.int64).reshape(-1, 3) * step
        cells = cells[((cells >= 0) & (cells < resolution)).all(axis=1)]
        if len(cells) == 0:
            raise ValueError("start_cells holds no cell inside the grid")
        per_level = [evaluate_new([(cells[:, None, :] + step * _CORNERS).reshape(-1, 3)])]
    parents = None  # kept cells of the previous level; their children are this level's cells
    while True:
        # Cells of this level, in batches: the coarse grid, or the 8 children of each parent.
        source = [cells] if parents is None else expand(parents, _CORNERS, step)
        keep_parts, cross_parts = [], []
        for part in source:
            vals8 = store.lookup(_keys((part[:, None, :] + step * _CORNERS).reshape(-1, 3), n))
            vals8 = vals8.reshape(-1, 8)
            crossing = _sign_change(vals8)
            cross_parts.append(part[crossing])
            if step > 1:
                close = np.abs(vals8).min(axis=1) < near * step * h_world
                keep_parts.append(part[crossing | close])
        if step == 1:
            cells = _cat(cross_parts)
            break
        kept = _dilate(_cat(keep_parts), band, step, resolution)  # sorted by key
        if len(kept) == 0:  # no surface anywhere
            cells = kept
            break
        if parents is None and start_cells is not None:
            # Dilation can leave the start cells: evaluate the new cells' corners.
            per_level[-1] += evaluate_new(expand(kept, _CORNERS, step))
        if parents is not None:
            # Dilation can reach cells whose parent was not refined: evaluate their corners.
            parent_keys = _keys((kept // (2 * step)) * (2 * step), n)
            known = np.searchsorted(_keys(parents, n), parent_keys).clip(max=len(parents) - 1)
            missing = _keys(parents, n)[known] != parent_keys
            if missing.any():
                per_level[-1] += evaluate_new(expand(kept[missing], _CORNERS, step))
        half = step // 2
        per_level.append(evaluate_new(expand(kept, _NEW_POINTS, half)))
        parents, step = kept, half
    v, f = _marching_cubes_cells(
        lambda idx: store.lookup(_keys(idx, n)), cells, resolution, bounds, block
    )
    return ExtractResult(
        v, f, n_queries=int(sum(per_level)), resolution=resolution,
        seconds=time.perf_counter() - t_start, queries_per_level=per_level, n_cells=len(cells),
    )
