"""Surface extraction: hierarchical == dense on analytic SDFs, at a fraction of the queries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from flow3d.mesh.extract import ExtractBudget, extract_dense, extract_hierarchical
from flow3d.mesh.sdf import ANALYTIC_SDFS, sphere_sdf


def _chamfer_l1(a: np.ndarray, b: np.ndarray) -> float:
    return 0.5 * (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


@pytest.mark.parametrize("name", sorted(ANALYTIC_SDFS))
def test_hierarchical_matches_dense(name):
    fn = ANALYTIC_SDFS[name]
    dense = extract_dense(fn, 128)
    sparse = extract_hierarchical(fn, 128, coarse=16, budget=ExtractBudget(block=32))
    assert len(dense.faces) > 1000
    assert sparse.vertices.shape == dense.vertices.shape
    assert sparse.faces.shape == dense.faces.shape
    assert _chamfer_l1(sparse.vertices, dense.vertices) < 1e-6
    assert sparse.n_queries < 0.15 * dense.n_queries
    mesh = sparse.mesh
    assert mesh.is_watertight and mesh.volume > 0  # closed, outward-facing


def test_sphere_geometry_and_orientation():
    res = extract_hierarchical(lambda p: sphere_sdf(p, 0.6), 64, coarse=16)
    r = np.linalg.norm(res.vertices, axis=1)
    assert np.abs(r - 0.6).max() < 2.0 / 64 * 0.1
    assert abs(res.mesh.volume - 4 / 3 * np.pi * 0.6**3) < 0.01
    # face normals point away from the centre
    mesh = res.mesh
    assert (np.sum(mesh.face_normals * mesh.triangles_center, axis=1) > 0).all()


def test_query_budget_at_256_and_chunked_calls():
    calls = []

    def fn(p: torch.Tensor) -> torch.Tensor:
        calls.append(len(p))
        return ANALYTIC_SDFS["torus"](p)

    res = extract_hierarchical(fn, 256, coarse=32, budget=ExtractBudget(chunk=50_000))
    assert max(calls) <= 50_000
    assert res.n_queries == sum(calls) == sum(res.queries_per_level)
    assert res.n_queries <= 0.10 * 257**3
    on_surface = ANALYTIC_SDFS["torus"](torch.from_numpy(res.vertices)).abs()
    assert on_surface.max() < 2.0 / 256 * 0.05
    assert res.mesh.is_watertight


def test_thin_feature_missed_by_coarse_grid_is_found():
    # a sphere far smaller than a coarse cell: no coarse corner changes sign
    def tiny(p):
        return sphere_sdf(p, 0.03, (0.31, -0.17, 0.05))

    res = extract_hierarchical(tiny, 128, coarse=8)
    assert len(res.faces) > 20
    assert np.abs(np.linalg.norm(res.vertices - [0.31, -0.17, 0.05], axis=1) - 0.03).max() < 0.01


def test_bad_arguments():
    with pytest.raises(ValueError, match="power of 2"):
        extract_hierarchical(ANALYTIC_SDFS["sphere"], 100, coarse=32)
    with pytest.raises(ValueError, match="NaN"):
        extract_dense(lambda p: torch.full((len(p),), float("nan")), 8)
    empty = extract_hierarchical(lambda p: torch.ones(len(p)), 64, coarse=16)
    assert empty.faces.shape == (0, 3) and empty.n_queries == 17**3


def test_solid_cut_by_the_box_is_capped_and_closed():
    def big(p):
        return sphere_sdf(p, 1.3)

    sparse = extract_hierarchical(big, 64, coarse=16)
    dense = extract_dense(big, 64)
    assert sparse.faces.shape == dense.faces.shape
    assert sparse.mesh.is_watertight and sparse.mesh.volume > 0
    assert np.abs(sparse.vertices).max() <= 1.0 + 1e-6
    opened = extract_dense(big, 32, close_boundary=False)
    assert not opened.mesh.is_watertight


def test_matches_dense_on_a_neural_sdf():
    # a decoder-like field: not an exact SDF (a sphere perturbed by a random 2-layer MLP)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))

    def fn(p: torch.Tensor) -> torch.Tensor:
        return sphere_sdf(p, 0.55) + 0.15 * mlp(3 * p).squeeze(-1)

    dense = extract_dense(fn, 128)
    sparse = extract_hierarchical(fn, 128, coarse=16, band=1)
    assert sparse.faces.shape == dense.faces.shape
    assert _chamfer_l1(sparse.vertices, dense.vertices) < 1e-6
    assert sparse.n_queries < 0.2 * dense.n_queries
