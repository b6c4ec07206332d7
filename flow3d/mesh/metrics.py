"""Mesh reconstruction metrics: Chamfer-L1/L2, F-score, normal consistency, volume IoU.

Both meshes are first put in one frame (``frame``, see :data:`FRAMES`); the ground truth is
always normalised (bounding-box centre at the origin, longest side spanning [-1, 1]):

* ``"normalized"``: the prediction is taken as it is. A generated mesh is produced in exactly
  that frame (the model was trained on normalised meshes), so its size and place are part of
  what is scored. The default of ``flow3d mesh eval``.
* ``"each"``: the prediction is normalised on its own as well, for a prediction in some other
  coordinates; errors of scale and position are forgiven.
* ``"gt"``: the prediction gets the ground truth's translation and scale, for meshes in one
  coordinate system (a reconstruction in the input's frame, a registered scan).

Then ``n_points`` surface points with face normals are drawn from each (same seed for both, so
a mesh against itself scores exactly Chamfer 0 and F-score 1). With d_PG the distance from each
predicted point to the nearest GT point and d_GP the reverse (scipy cKDTree):

    chamfer_l1 = (mean d_PG + mean d_GP) / 2,   chamfer_l2 = (mean d_PG^2 + mean d_GP^2) / 2
    fscore@tau = 2 P R / (P + R),  P = mean[d_PG < tau],  R = mean[d_GP < tau]
    normal_consistency = (mean |n_P . n_G(nn)| + mean |n_G . n_P(nn)|) / 2  (unsigned normals)
    volume_iou = |A and B| / |A or B| over ``n_volume`` uniform points in a box holding both

(Chamfer/F-score as in Tatarchenko et al. 2019, "What do single-view 3D reconstruction networks
learn?"; normal consistency and IoU as in Mescheder et al. 2019, Occupancy Networks.)
Occupancy is the generalised winding number (|w| > 1/2); meshes that are not watertight also get
the ``eps`` shell of :func:`flow3d.mesh.sdf.mesh_sdf`, so open ground truths still have a volume.
"""

from __future__ import annotations

import numpy as np

from flow3d.errors import DataError
from flow3d.mesh.data import normalize_mesh, sample_surface
from flow3d.mesh.sdf import SHELL_EPS, mesh_occupancy

FSCORE_TAUS = (0.01, 0.02, 0.05)
FRAMES = {
    "normalized": "ground truth normalised to centre 0 and longest side 2; prediction as is",
    "each": "each mesh normalised on its own to centre 0 and longest side 2",
    "gt": "both meshes through the ground truth's normalisation",
}


def _fscore(d_pg: np.ndarray, d_gp: np.ndarray, tau: float) -> float:
    p, r = float((d_pg < tau).mean()), float((d_gp < tau).mean())
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def mesh_metrics(
    pred,
    gt,
    n_points: int = 100_000,
    seed: int = 0,
    *,
    n_volume: int = 100_000,
    taus: tuple[float, ...] = FSCORE_TAUS,
    eps: float = SHELL_EPS,
    frame: str = "gt",
) -> dict[str, float]:
    """Compare two trimesh meshes in ``frame`` (see the module docstring for the frames and
    the definitions).

    Keys: chamfer_l1, chamfer_l2, fscore@0.01, fscore@0.02, fscore@0.05, normal_consistency,
    volume_iou (omitted when ``n_volume == 0``).
    """
    from scipy.spatial import cKDTree  # heavy: imported when scoring

    for name, m in (("prediction", pred), ("ground truth", gt)):
        if m is None or len(m.faces) == 0:
            raise DataError(f"{name} mesh has no faces: cannot compute metrics")
        if m.area <= 0:
            raise DataError(f"{name} mesh has zero surface area: cannot compute metrics")
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {sorted(FRAMES)}, got {frame!r}")
    gt_n, norm = normalize_mesh(gt)
    pred_n = {"gt": norm.apply, "each": lambda m: normalize_mesh(m)[0],
              "normalized": lambda m: m}[frame](pred)
    p_pts, p_nrm = sample_surface(pred_n, n_points, np.random.default_rng(seed))  # [n, 3] x2
    g_pts, g_nrm = sample_surface(gt_n, n_points, np.random.default_rng(seed))
    d_pg, i_pg = cKDTree(g_pts).query(p_pts, workers=1)  # [n]
    d_gp, i_gp = cKDTree(p_pts).query(g_pts, workers=1)
    out = {
        "chamfer_l1": float(0.5 * (d_pg.mean() + d_gp.mean())),
        "chamfer_l2": float(0.5 * ((d_pg**2).mean() + (d_gp**2).mean())),
    }
    for tau in taus:
        out[f"fscore@{tau:g}"] = _fscore(d_pg, d_gp, tau)
    nc_pg = np.abs(np.sum(p_nrm * g_nrm[i_pg], axis=1)).mean()
    nc_gp = np.abs(np.sum(g_nrm * p_nrm[i_gp], axis=1)).mean()
    out["normal_consistency"] = float(0.5 * (nc_pg + nc_gp))
    if n_volume:
        lo = np.minimum(gt_n.bounds[0], pred_n.bounds[0]) - 2 * eps  # box holding both solids
        hi = np.maximum(gt_n.bounds[1], pred_n.bounds[1]) + 2 * eps
        q = np.random.default_rng(seed + 1).uniform(lo, hi, size=(n_volume, 3))
        # A watertight mesh is its own solid; only open meshes get the eps shell, so a
        # prediction extracted from the GT's target solid scores IoU ~1 against it.
        a = mesh_occupancy(pred_n, q, 0.0 if pred_n.is_watertight else eps)
        b = mesh_occupancy(gt_n, q, 0.0 if gt_n.is_watertight else eps)
        union = np.logical_or(a, b).sum()
        out["volume_iou"] = float(np.logical_and(a, b).sum() / union) if union else 1.0
    return out


def format_metrics(metrics: dict[str, float]) -> str:
    """One markdown table row per metric."""
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.5f} |" for k, v in metrics.items()]
    return "\n".join(lines)
