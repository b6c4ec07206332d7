"""Residue frames and backbone reconstruction: group laws, conventions, real-chain round trip."""

from __future__ import annotations

import math

import pytest
import torch

from flow3d.core.so3 import quat_to_rotmat, random_quat
from protein.constants import ANG_TO_NM, NM_TO_ANG
from protein.data import find_structure_files, parse_structure, shared_protein_dir
from protein.geometry import (
    Rigid,
    backbone_from_frames,
    backbone_local_coords,
    ca_centre,
    dihedral,
    frames_from_backbone,
    ideal_cb,
    place_atom,
    psi_from_frames,
)

DATA = shared_protein_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="real data ../shared/data/proteins absent")


def _t(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


def _eye(*shape: int) -> torch.Tensor:
    return torch.eye(3, dtype=torch.float64).expand(*shape)


def _random_rigid(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    rots = random_quat(shape, generator=g, dtype=dtype)
    trans = torch.randn(*shape, 3, generator=g, dtype=dtype) * 5
    return Rigid(rots, trans)


def test_units():
    assert pytest.approx(1.0) == ANG_TO_NM * NM_TO_ANG


def test_rigid_group_laws():
    a, b, c = _random_rigid(5, 7, seed=0), _random_rigid(5, 7, seed=1), _random_rigid(7, seed=2)
    x = torch.randn(5, 7, 3, dtype=torch.float64)
    # compose == apply in sequence; broadcasting over leading dims
    assert torch.allclose(a.compose(b).apply(x), a.apply(b.apply(x)), atol=1e-10)
    ab_c = a.compose(b).compose(c[None].to(torch.float64))
    a_bc = a.compose(b.compose(c[None]))
    assert torch.allclose(ab_c.apply(x), a_bc.apply(x), atol=1e-10)
    # inverse
    assert torch.allclose(a.invert_apply(a.apply(x)), x, atol=1e-10)
    assert torch.allclose(a.invert().apply(x), a.invert_apply(x), atol=1e-10)
    ident = a.compose(a.invert())
    assert torch.allclose(ident.trans, torch.zeros_like(ident.trans), atol=1e-10)
    assert torch.allclose(quat_to_rotmat(ident.rots), _eye(5, 7, 3, 3), atol=1e-10)
    # identity acts trivially
    e = Rigid.identity((5, 7), dtype=torch.float64)
    assert torch.allclose(e.apply(x), x) and e.shape == (5, 7)


def test_rigid_tensor_like():
    r = _random_rigid(4, 6)
    assert r.shape == (4, 6) and len(r) == 4
    assert r[1].shape == (6,)
    assert r[:, 2:5].shape == (4, 3)
    assert r[..., None].shape == (4, 6, 1)
    assert r.unsqueeze(-1).shape == (4, 6, 1)
    assert r.to(torch.float32).dtype == torch.float32
    x7 = r.to_tensor_7()
    assert x7.shape == (4, 6, 7)
    back = Rigid.from_tensor_7(x7)
    assert torch.allclose(back.rots, r.rots) and torch.allclose(back.trans, r.trans)
    assert Rigid.cat([r, r], dim=1).shape == (4, 12)
    assert Rigid.stack([r, r], dim=-1).shape == (4, 6, 2)
    # apply to several atoms per residue via an added axis
    atoms = torch.randn(4, 6, 5, 3, dtype=torch.float64)
    out = r[..., None].apply(atoms)
    assert out.shape == (4, 6, 5, 3)
    assert torch.allclose(out[:, :, 3], r.apply(atoms[:, :, 3]))
    with pytest.raises(ValueError):
        Rigid(torch.zeros(3, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError):
        Rigid.from_tensor_7(torch.zeros(3, 6))


def test_frames_convention():
    g = torch.Generator().manual_seed(3)
    n, ca, c = torch.randn(3, 10, 3, generator=g, dtype=torch.float64).unbind(0)
    r = frames_from_backbone(n, ca, c)
    R = r.rotmats()
    assert torch.allclose(R.transpose(-1, -2) @ R, _eye(10, 3, 3), atol=1e-10)
    assert torch.allclose(torch.linalg.det(R), torch.ones(10, dtype=torch.float64))
    assert torch.allclose(r.trans, ca)
    c_loc, n_loc = r.invert_apply(c), r.invert_apply(n)
    assert torch.allclose(c_loc[:, 1:], torch.zeros(10, 2, dtype=torch.float64), atol=1e-10)
    assert (c_loc[:, 0] > 0).all()  # x-axis along CA->C
    assert torch.allclose(n_loc[:, 2], torch.zeros(10, dtype=torch.float64), atol=1e-10)
    assert (n_loc[:, 1] > 0).all()  # N in the xy-plane, positive y


@pytest.mark.parametrize("torsion", [-3.0, -1.2, 0.0, 0.7, 2.9])
def test_place_atom_inverts_dihedral(torsion):
    g = torch.Generator().manual_seed(4)
    a, b, c = torch.randn(3, 8, 3, generator=g, dtype=torch.float64).unbind(0)
    d = place_atom(a, b, c, 1.5, 2.0, torsion)
    assert torch.allclose((d - c).norm(dim=-1), torch.full((8,), 1.5, dtype=torch.float64))
    cos_angle = ((b - c) * (d - c)).sum(-1) / ((b - c).norm(dim=-1) * 1.5)
    assert torch.allclose(torch.acos(cos_angle), torch.full((8,), 2.0, dtype=torch.float64))
    got = dihedral(a, b, c, d)
    diff = torch.remainder(got - torsion + math.pi, 2 * math.pi) - math.pi
    assert diff.abs().max() < 1e-9


def test_ideal_backbone_geometry():
    r = _random_rigid(2, 12, seed=5)
    atoms = backbone_from_frames(r)  # [2, 12, 4, 3], alanine ideal geometry
    n, ca, c, o = atoms.unbind(-2)
    assert atoms.shape == (2, 12, 4, 3)
    assert torch.allclose((n - ca).norm(dim=-1), _t(1.4603), atol=1e-3)
    assert torch.allclose((c - ca).norm(dim=-1), _t(1.526))
    assert torch.allclose((o - c).norm(dim=-1), _t(1.2338), atol=1e-3)
    cos = ((n - ca) * (c - ca)).sum(-1) / ((n - ca).norm(dim=-1) * (c - ca).norm(dim=-1))
    assert torch.allclose(torch.rad2deg(torch.acos(cos)), _t(111.0), atol=0.5)
    # frames rebuilt from rebuilt atoms are the same frames (idempotent)
    r2 = frames_from_backbone(n, ca, c)
    assert torch.allclose(r2.rotmats(), r.rotmats(), atol=1e-8)
    # psi given explicitly: torsion N-CA-C-O = psi + pi
    psi = torch.linspace(-3, 3, 12, dtype=torch.float64).expand(2, 12)
    o2 = backbone_from_frames(r, psi)[..., 3, :]
    got = dihedral(n, ca, c, o2)
    diff = torch.remainder(got - psi, 2 * math.pi) - math.pi
    assert diff.abs().max() < 1e-8


def test_ideal_cb_is_chiral():
    r = _random_rigid(6, seed=6)
    n, ca, c, _ = backbone_from_frames(r).unbind(-2)
    cb = ideal_cb(n, ca, c)
    assert torch.allclose((cb - ca).norm(dim=-1), _t(1.5267), atol=1e-3)
    # L-amino acids: the torsion N-CA-C-CB is about -123 degrees (measured on real chains)
    torsion = torch.rad2deg(dihedral(n, ca, c, cb))
    assert torch.allclose(torsion, _t(-122.7), atol=1.0)


def test_ca_centre_masked():
    x = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    centred, centroid = ca_centre(x, mask)
    assert torch.allclose(centroid[0], x[0, :3].mean(0), atol=1e-6)
    assert torch.allclose(centred[0, :3].sum(0), torch.zeros(3), atol=1e-5)
    assert (centred[0, 3:] == 0).all()
    assert torch.allclose(ca_centre(x)[1], x.mean(1))


def test_psi_from_frames_handles_ends_and_mask():
    r = _random_rigid(7, seed=7)
    psi = psi_from_frames(r)
    assert psi.shape == (7,)
    assert psi[-1] == psi[-2]  # last residue copies its predecessor
    mask = torch.tensor([1, 1, 1, 1, 0, 0, 0])
    psi_m = psi_from_frames(r, mask=mask)
    assert torch.allclose(psi_m[:3], psi[:3]) and psi_m[3] == psi_m[2]


@needs_data
def test_round_trip_on_real_chains():
    """atoms -> frames -> atoms on real chains: CA exact; N/C with ideal geometry within the
    spread of real bond geometry; exact (< 0.01 A) with the stored local coordinates."""
    files = find_structure_files(DATA / "ts50_pydssp" / "pdb")[:10]
    n_err, c_err, o_err = [], [], []
    for f in files:
        chain = parse_structure(f).chains[0]
        x = torch.tensor(chain.coords, dtype=torch.float32)  # [L, 4, 3]
        aa = torch.tensor(chain.aatype)
        r = frames_from_backbone(x[:, 0], x[:, 1], x[:, 2])
        ideal = backbone_from_frames(r, aatype=aa)
        err = (ideal - x).norm(dim=-1)  # [L, 4]
        assert err[:, 1].max() < 1e-4  # CA is the frame origin
        n_err.append(err[:, 0])
        c_err.append(err[:, 2])
        finite = torch.isfinite(err[:-1, 3])  # the last residue's O has no successor
        o_err.append(err[:-1, 3][finite])
        local = backbone_local_coords(r, x[:, 0], x[:, 2])
        exact = backbone_from_frames(r, aatype=aa, local=local)
        assert (exact[:, :3] - x[:, :3]).norm(dim=-1).max() < 0.01
    n_err, c_err, o_err = torch.cat(n_err), torch.cat(c_err), torch.cat(o_err)
    # Ideal geometry vs real chains (measured: N mean ~0.06 A, C mean ~0.007 A, O ~0.07 A).
    assert n_err.mean() < 0.1 and n_err.max() < 0.5
    assert c_err.mean() < 0.02 and c_err.max() < 0.1
    assert o_err.median() < 0.15


def test_backbone_gradients_finite_with_padding_and_degenerate_frames():
    """The auxiliary atom loss backpropagates through backbone_from_frames: padding frames
    (identity at the origin) and coincident frames must not produce NaN gradients."""
    q = random_quat((2, 6), generator=torch.Generator().manual_seed(8))
    t = torch.randn(2, 6, 3) * 5
    q[1, 3:] = torch.tensor([1.0, 0, 0, 0])
    t[1, 3:] = 0.0
    q.requires_grad_()
    t.requires_grad_()
    mask = torch.ones(2, 6)
    mask[1, 3:] = 0
    (backbone_from_frames(Rigid(q, t), mask=mask) ** 2).sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(t.grad).all()
    q2 = torch.tensor([1.0, 0, 0, 0]).repeat(1, 4, 1).requires_grad_()
    t2 = torch.zeros(1, 4, 3, requires_grad=True)
    (backbone_from_frames(Rigid(q2, t2)) ** 2).sum().backward()
    assert torch.isfinite(q2.grad).all() and torch.isfinite(t2.grad).all()
