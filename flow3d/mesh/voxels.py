"""Sparse voxel sets in plain PyTorch: active voxels of a shape, sorted-key neighbour gather.

A batch of sparse voxel sets is ``coords: [M, 3]`` integer voxel indices in ``[0, R)`` and
``batch: [M]`` the shape each voxel belongs to. Each voxel has the linear key

    key = ((b * R + x) * R + y) * R + z

and :class:`SparseVoxels` keeps the keys sorted, so looking a voxel up is a binary search
(``torch.searchsorted``) and a neighbour table ``[M, K]`` (-1 where the neighbour is not active)
costs ``K`` searches of ``M`` keys. This is the hash-free form of the neighbour maps of
spconv/torchsparse (Tang et al. 2022), which need CUDA; :func:`neighbor_index_dense` is its slow
twin (a dense ``[B, R, R, R]`` index grid) for tests.

The grid spans ``[-bounds, bounds]^3`` of the normalised frame (bounding-box centre at the
origin, longest side spanning [-1, 1]) with voxel size ``h = 2 bounds / R``; the default
``bounds = 1.125`` leaves 1.8 voxels at 32^3 between the unit box and the grid's faces, so a
surface dilated by one voxel never reaches them (nothing is cut by the box).

Active voxels of a shape (:func:`active_voxels`), as issue 15's prototype measured:

* the surface shell: voxels holding a surface sample, dilated by ``dilation`` voxels
  (26-neighbourhood);
* plus the voxels of the target SDF's own zero level set: the corners of a voxel change sign, or
  one is closer to the zero level set than half a voxel diagonal. The target solid fills holes
  (winding numbers), so its surface crosses voxels that hold no mesh surface; without them the
  shell leaks through a hole wider than the dilation and inside joins outside.

The complement of the active set splits into the component touching the grid's border
(outside, label 0) and enclosed components (inside, label -1): :func:`voxel_labels`. The
decoder's field is defined inside active voxels only; extraction gives every other point the
sign of its component, which makes the extracted surface closed.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DEFAULT_BOUNDS",
    "DENSE_TABLE_MAX",
    "OFFSETS_3X3X3",
    "SparseVoxels",
    "active_voxels",
    "neighbor_index_dense",
    "points_to_voxels",
    "voxel_keys",
    "voxel_labels",
    "voxel_size",
]

DEFAULT_BOUNDS = 1.125
DENSE_TABLE_MAX = 1 << 24  # entries of the dense lookup table (128 MiB of int64 at most)
# The 27 offsets of a 3x3x3 neighbourhood, the centre (0, 0, 0) at index 13.
OFFSETS_3X3X3 = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)), dtype=torch.long)


def voxel_size(resolution: int, bounds: float = DEFAULT_BOUNDS) -> float:
    return 2.0 * bounds / resolution


def voxel_keys(coords: Tensor, batch: Tensor, resolution: int) -> Tensor:
    """Linear keys ``[M]`` (int64) of ``coords: [M, 3]`` in shapes ``batch: [M]``."""
    c = coords.long()
    return ((batch.long() * resolution + c[:, 0]) * resolution + c[:, 1]) * resolution + c[:, 2]


def points_to_voxels(points: Tensor, resolution: int, bounds: float = DEFAULT_BOUNDS) -> Tensor:
    """Integer voxel ``[N, 3]`` holding each point ``[N, 3]`` (not clipped to the grid)."""
    return torch.floor((points + bounds) / voxel_size(resolution, bounds)).long()


class SparseVoxels:
    """A batch of sparse voxel sets with sorted keys for lookup and cached neighbour tables.

    ``coords: [M, 3]`` long in ``[0, R)``, ``batch: [M]`` long in ``[0, B)``; rows are kept in
    the given order (features ``[M, C]`` line up with them); duplicates are an error.
    """

    def __init__(self, coords: Tensor, batch: Tensor, resolution: int, num_shapes: int | None
                 = None):
        if coords.ndim != 2 or coords.shape[1] != 3 or batch.shape != coords.shape[:1]:
            raise ValueError(f"coords must be [M, 3] and batch [M]: {coords.shape}/{batch.shape}")
        if len(coords) and (coords.min() < 0 or coords.max() >= resolution):
            raise ValueError(f"voxel coords outside [0, {resolution})")
        self.coords, self.batch, self.resolution = coords.long(), batch.long(), resolution
        self.num_shapes = num_shapes if num_shapes is not None else (
            int(batch.max()) + 1 if len(batch) else 0)
        keys = voxel_keys(self.coords, self.batch, resolution)
        self.sorted_keys, self.order = torch.sort(keys)
        if len(keys) > 1 and (self.sorted_keys[1:] == self.sorted_keys[:-1]).any():
            raise ValueError("duplicate voxels in a sparse voxel set")
        self._neighbors: dict[tuple, Tensor] = {}
        self._table: Tensor | None = None
        self._enclosed: Tensor | None = None

    def __len__(self) -> int:
        return len(self.coords)

    def lookup(self, coords: Tensor, batch: Tensor, *, dense: bool | None = None) -> Tensor:
        """Row index ``[N]`` of each voxel ``coords: [N, 3]`` of shape ``batch: [N]``; -1 if
        it is not active or lies outside the grid.

        ``dense``: index a dense ``[B * R^3]`` table of rows (built once; the fast path, used
        by default while the table has at most :data:`DENSE_TABLE_MAX` entries) instead of the
        binary search over sorted keys (any R)."""
        R = self.resolution
        inside = ((coords >= 0) & (coords < R)).all(-1) & (batch >= 0) & (batch < self.num_shapes)
        keys = voxel_keys(coords.clamp(0, R - 1), batch.clamp(0, max(self.num_shapes - 1, 0)), R)
        if dense is None:
            dense = self.num_shapes * R**3 <= DENSE_TABLE_MAX
        if dense:
            if self._table is None:
                self._table = torch.full((self.num_shapes * R**3,), -1, dtype=torch.long,
                                         device=keys.device)
                self._table[self.sorted_keys] = self.order
            return torch.where(inside, self._table[keys], torch.full_like(keys, -1))
        if len(self.sorted_keys) == 0:
            return torch.full_like(keys, -1)
        pos = torch.searchsorted(self.sorted_keys, keys).clamp(max=len(self.sorted_keys) - 1)
        found = (self.sorted_keys[pos] == keys) & inside
        return torch.where(found, self.order[pos], torch.full_like(pos, -1))

    def enclosed(self, coords: Tensor, batch: Tensor) -> Tensor:
        """``[N]`` bool: the voxel is inactive and enclosed by active voxels (label -1 of
        :func:`voxel_labels`); False for active voxels, outside ones and off-grid ones."""
        R = self.resolution
        if self._enclosed is None:
            grids = [torch.from_numpy(voxel_labels(self.coords[self.batch == b].cpu().numpy(), R)
                                      == -1) for b in range(self.num_shapes)]
            self._enclosed = (torch.stack(grids).reshape(-1) if grids else
                              torch.zeros(0, dtype=torch.bool)).to(coords.device)
        inside = ((coords >= 0) & (coords < R)).all(-1) & (batch >= 0) & (batch < self.num_shapes)
        keys = voxel_keys(coords.clamp(0, R - 1), batch.clamp(0, max(self.num_shapes - 1, 0)), R)
        if len(self._enclosed) == 0:
            return torch.zeros_like(inside)
        return inside & self._enclosed[keys]

    def set_labels(self, labels: np.ndarray) -> SparseVoxels:
        """Use ``labels: [R, R, R]`` (one shape; :func:`voxel_labels` form) for
        :meth:`enclosed` instead of this set's own components: an edit keeps the input's
        inside/outside outside its box, so that a box that opens the shell does not turn the
        interior into the outside far from the box."""
        if self.num_shapes != 1 or labels.shape != (self.resolution,) * 3:
            raise ValueError("set_labels takes one shape's [R, R, R] labels")
        self._enclosed = torch.from_numpy(np.asarray(labels) == -1).reshape(-1).to(
            self.coords.device)
        return self

    def neighbors(self, offsets: Tensor = OFFSETS_3X3X3) -> Tensor:
        """``[M, K]`` row of the voxel at ``coords + offsets[k]``, -1 where not active."""
        key = tuple(offsets.flatten().tolist())
        if key not in self._neighbors:
            c = self.coords[:, None, :] + offsets.to(self.coords.device)[None]  # [M, K, 3]
            b = self.batch[:, None].expand(-1, len(offsets))
            self._neighbors[key] = self.lookup(c.reshape(-1, 3), b.reshape(-1)).view(
                len(self), len(offsets))
        return self._neighbors[key]

    def coarsen(self) -> tuple[SparseVoxels, Tensor]:
        """The parent voxels at half the resolution (``coords // 2``, each once, sorted by
        key) and ``parent: [M]``, the row of every voxel's parent in them (the down- and
        up-sampling of a sparse U-Net: pool children into ``parent``, gather them back)."""
        if self.resolution % 2:
            raise ValueError(f"cannot halve an odd resolution {self.resolution}")
        R = self.resolution // 2
        keys = voxel_keys(self.coords // 2, self.batch, R)
        unique, parent = torch.unique(keys, sorted=True, return_inverse=True)
        z = unique % R
        y = unique // R % R
        x = unique // (R * R) % R
        b = unique // (R**3)
        coarse = SparseVoxels(torch.stack([x, y, z], 1), b, R, self.num_shapes)
        return coarse, parent

    def to(self, device) -> SparseVoxels:
        return SparseVoxels(self.coords.to(device), self.batch.to(device), self.resolution,
                            self.num_shapes)


def neighbor_index_dense(coords: Tensor, batch: Tensor, resolution: int,
                         offsets: Tensor = OFFSETS_3X3X3) -> Tensor:
    """Slow twin of :meth:`SparseVoxels.neighbors`: a dense ``[B, R, R, R]`` grid of rows."""
    R = resolution
    B = int(batch.max()) + 1 if len(batch) else 0
    grid = torch.full((B, R + 2, R + 2, R + 2), -1, dtype=torch.long)  # one padding layer
    c = coords.long() + 1
    grid[batch, c[:, 0], c[:, 1], c[:, 2]] = torch.arange(len(coords))
    out = torch.empty(len(coords), len(offsets), dtype=torch.long)
    for k, o in enumerate(offsets.tolist()):
        out[:, k] = grid[batch, c[:, 0] + o[0], c[:, 1] + o[1], c[:, 2] + o[2]]
    return out


# ---- active voxels of a shape ----------------------------------------------------------------
def _dilate_dense(occ: np.ndarray, steps: int) -> np.ndarray:
    """Dilate a boolean ``[R, R, R]`` grid by ``steps`` voxels (26-neighbourhood)."""
    from scipy.ndimage import binary_dilation

    if steps <= 0:
        return occ
    return binary_dilation(occ, structure=np.ones((3, 3, 3), bool), iterations=steps)


def corner_points(resolution: int, bounds: float = DEFAULT_BOUNDS) -> np.ndarray:
    """The ``(R + 1)^3`` voxel corners ``[(R+1)^3, 3]`` (row-major i, j, k)."""
    axis = np.linspace(-bounds, bounds, resolution + 1)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)


def zero_level_voxels(corner_sdf: np.ndarray, resolution: int, bounds: float = DEFAULT_BOUNDS
                      ) -> np.ndarray:
    """Voxels ``[R, R, R]`` bool that the zero level set of an SDF may cross: the corners
    (``corner_sdf: [(R+1)^3]``) change sign, or one is within half a voxel diagonal of 0."""
    n = resolution + 1
    s = corner_sdf.reshape(n, n, n)
    corners = [s[i : i + resolution, j : j + resolution, k : k + resolution]
               for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    lo, hi = np.minimum.reduce(corners), np.maximum.reduce(corners)
    near = np.minimum.reduce([np.abs(c) for c in corners])
    h = voxel_size(resolution, bounds)
    return ((lo <= 0) & (hi >= 0)) | (near < 0.5 * np.sqrt(3.0) * h)


def active_voxels(
    surface_points: np.ndarray,
    resolution: int = 32,
    bounds: float = DEFAULT_BOUNDS,
    *,
    dilation: int = 1,
    corner_sdf: np.ndarray | None = None,
) -> np.ndarray:
    """Active voxels ``[M, 3]`` int64 (sorted by key) of one normalised shape.

    ``surface_points: [N, 3]`` dense surface samples (the shell: voxels holding one, dilated by
    ``dilation``); ``corner_sdf: [(R+1)^3]`` the target SDF at :func:`corner_points` (adds the
    zero-level-set voxels; see the module docstring). Raises ``ValueError`` when a point lies
    outside the grid (the shape was not normalised).
    """
    R = resolution
    pts = np.asarray(surface_points, dtype=np.float64).reshape(-1, 3)
    if len(pts) == 0 or not np.isfinite(pts).all():
        raise ValueError("active_voxels needs finite surface points")
    idx = np.floor((pts + bounds) / voxel_size(R, bounds)).astype(np.int64)
    if idx.min() < 0 or idx.max() >= R:
        raise ValueError(f"surface points outside the voxel grid [-{bounds}, {bounds}]^3")
    occ = np.zeros((R, R, R), dtype=bool)
    occ[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    occ = _dilate_dense(occ, dilation)
    if corner_sdf is not None:
        occ |= zero_level_voxels(np.asarray(corner_sdf), R, bounds)
    # argwhere is row-major (sorted by key) but returns a transposed view: make it C-contiguous
    return np.ascontiguousarray(np.argwhere(occ), dtype=np.int64)


def shape_active_voxels(mesh, resolution: int = 32, bounds: float = DEFAULT_BOUNDS, *,
                        n_points: int = 200_000, seed: int = 0) -> np.ndarray:
    """:func:`active_voxels` of a normalised trimesh: dense surface samples for the shell and
    the target SDF (:func:`flow3d.mesh.sdf.mesh_sdf`) at the voxel corners."""
    from flow3d.mesh.data import sample_surface
    from flow3d.mesh.sdf import mesh_sdf

    pts, _ = sample_surface(mesh, n_points, np.random.default_rng(seed))
    # vertices too: a thin part narrower than the sampling density still owns its voxels
    pts = np.concatenate([pts, np.asarray(mesh.vertices, dtype=np.float32)])
    corner_sdf = mesh_sdf(mesh, corner_points(resolution, bounds))
    return active_voxels(pts, resolution, bounds, corner_sdf=corner_sdf)


def voxel_labels(coords: np.ndarray, resolution: int) -> np.ndarray:
    """``[R, R, R]`` int8: 1 active, 0 outside (inactive and connected to the grid's border),
    -1 inside (inactive and enclosed by active voxels). Components are 6-connected, so two
    inactive regions that meet only along an edge or a corner stay apart."""
    from scipy.ndimage import label

    R = resolution
    occ = np.zeros((R + 2, R + 2, R + 2), dtype=bool)  # a border layer that is always outside
    c = np.asarray(coords, dtype=np.int64).reshape(-1, 3) + 1
    occ[c[:, 0], c[:, 1], c[:, 2]] = True
    comp, _ = label(~occ)
    outside = comp == comp[0, 0, 0]
    lab = np.where(occ, 1, np.where(outside, 0, -1)).astype(np.int8)
    return lab[1:-1, 1:-1, 1:-1]
