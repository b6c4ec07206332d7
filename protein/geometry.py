"""Residue frames and backbone atoms: the SE(3) geometry of a protein backbone.

Each residue is a rigid frame ``T = (R, t)`` in the AlphaFold / OpenFold convention (Jumper et
al. 2021, supplement Alg. 21 "rigidFrom3Points"): the origin ``t`` is CA, the x-axis points
along CA->C, N lies in the xy-plane with positive y (Gram-Schmidt), ``z = x cross y``. A local
point ``p`` maps to the global ``R p + t``. Rotations are unit quaternions ``(w, x, y, z)``
(``flow3d.core.so3``); the ``[..., 7]`` state ``cat(trans, quat)`` is a point of
``Product([Euclidean(3), SO3Quaternion()])``.

Atoms are rebuilt from frames with ideal geometry: per residue type, the local N and C positions
of Engh & Huber (1991) as tabulated by AlphaFold/OpenFold (``rigid_group_atom_positions``,
backbone group); O from the psi torsion with the ideal C=O bond and CA-C=O angle.

Units: the geometry is unit-agnostic except the ideal coordinates, which are in angstrom. The
models work in nanometres (``protein.constants.ANG_TO_NM``), the files in angstrom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from flow3d.core.so3 import (
    quat_conj,
    quat_mul,
    quat_normalize,
    quat_to_rotmat,
    rotmat_to_quat,
)

__all__ = [
    "Rigid",
    "backbone_from_frames",
    "ca_centre",
    "complete_oxygens",
    "dihedral",
    "frames_from_backbone",
    "backbone_local_coords",
    "ideal_cb",
    "nonadjacent_pairs",
    "place_atom",
    "psi_from_frames",
    "radius_of_gyration",
    "superimpose",
]

# Ideal backbone geometry per residue type, angstrom, from the literature values of Engh & Huber
# (1991) as tabulated in AlphaFold / OpenFold (residue_constants.rigid_group_atom_positions):
# (N_x, N_y) and C_x in the backbone frame (N_z = C_y = C_z = 0), and O in the psi frame,
# (O_x, O_y), which fixes |C=O| and the angle CA-C=O. Order = protein.data.parse.RESTYPES;
# the last row (X, unknown) uses ALA's values.
_IDEAL = {
    #      N_x     N_y    C_x    O_x    O_y
    "A": (-0.525, 1.363, 1.526, 0.627, 1.062),
    "R": (-0.524, 1.362, 1.525, 0.626, 1.062),
    "N": (-0.536, 1.357, 1.526, 0.625, 1.062),
    "D": (-0.525, 1.362, 1.527, 0.626, 1.062),
    "C": (-0.522, 1.362, 1.524, 0.625, 1.062),
    "Q": (-0.526, 1.361, 1.526, 0.626, 1.062),
    "E": (-0.528, 1.361, 1.526, 0.626, 1.062),
    "G": (-0.572, 1.337, 1.517, 0.626, 1.062),
    "H": (-0.527, 1.360, 1.525, 0.625, 1.063),
    "I": (-0.493, 1.373, 1.527, 0.627, 1.062),
    "L": (-0.520, 1.363, 1.525, 0.625, 1.063),
    "K": (-0.526, 1.362, 1.526, 0.626, 1.062),
    "M": (-0.521, 1.364, 1.525, 0.625, 1.062),
    "F": (-0.518, 1.363, 1.524, 0.626, 1.062),
    "P": (-0.566, 1.351, 1.527, 0.621, 1.066),
    "S": (-0.529, 1.360, 1.525, 0.626, 1.062),
    "T": (-0.517, 1.364, 1.526, 0.626, 1.062),
    "W": (-0.521, 1.363, 1.525, 0.627, 1.062),
    "Y": (-0.522, 1.362, 1.524, 0.627, 1.062),
    "V": (-0.494, 1.373, 1.527, 0.627, 1.062),
}
_IDEAL_TABLE = torch.tensor([*_IDEAL.values(), _IDEAL["A"]], dtype=torch.float64)  # [21, 5]
# Ideal CB of ALA in the backbone frame (same source); used for poly-alanine output.
IDEAL_CB_LOCAL = (-0.529, -0.774, -1.205)
# The residue type used when no sequence is given (designs are sequence-free): alanine.
DEFAULT_RESTYPE = 0


class Rigid:
    """A batch of rigid transforms ``x -> R x + t`` with leading shape ``[...]``.

    ``rots``: unit quaternions ``[..., 4]`` (w, x, y, z); ``trans``: ``[..., 3]``. Tensor-like:
    indexing, ``.to``, ``.shape`` act on the leading dims (OpenFold's ``Rigid`` design).
    """

    __slots__ = ("rots", "trans")

    def __init__(self, rots: Tensor, trans: Tensor):
        if rots.shape[-1:] != (4,) or trans.shape[-1:] != (3,):
            raise ValueError(
                f"Rigid needs rots [..., 4] and trans [..., 3], got {tuple(rots.shape)} and "
                f"{tuple(trans.shape)}"
            )
        if rots.shape[:-1] != trans.shape[:-1]:
            raise ValueError(
                f"Rigid rots and trans leading shapes differ: {tuple(rots.shape[:-1])} vs "
                f"{tuple(trans.shape[:-1])}"
            )
        self.rots = rots  # [..., 4]
        self.trans = trans  # [..., 3]

    # --- construction -------------------------------------------------------------------
    @classmethod
    def identity(
        cls,
        shape: Sequence[int] | int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Rigid:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        rots = torch.zeros(*shape, 4, device=device, dtype=dtype)
        rots[..., 0] = 1.0
        return cls(rots, torch.zeros(*shape, 3, device=device, dtype=dtype))

    @classmethod
    def from_tensor_7(cls, x: Tensor, *, normalize: bool = True) -> Rigid:
        """``[..., 7] = cat(trans, quat)`` -> Rigid (the Product(Euclidean(3), SO3) point)."""
        if x.shape[-1] != 7:
            raise ValueError(f"from_tensor_7 needs [..., 7], got {tuple(x.shape)}")
        rots = x[..., 3:]
        return cls(quat_normalize(rots) if normalize else rots, x[..., :3])

    def to_tensor_7(self) -> Tensor:
        """``cat(trans, quat)`` ``[..., 7]``."""
        return torch.cat([self.trans, self.rots], dim=-1)

    @staticmethod
    def cat(rigids: Sequence[Rigid], dim: int = 0) -> Rigid:
        dim = _leading_dim(dim, len(rigids[0].shape))
        return Rigid(
            torch.cat([r.rots for r in rigids], dim=dim),
            torch.cat([r.trans for r in rigids], dim=dim),
        )

    @staticmethod
    def stack(rigids: Sequence[Rigid], dim: int = 0) -> Rigid:
        dim = _leading_dim(dim, len(rigids[0].shape) + 1)
        return Rigid(
            torch.stack([r.rots for r in rigids], dim=dim),
            torch.stack([r.trans for r in rigids], dim=dim),
        )

    # --- tensor-like --------------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return self.trans.shape[:-1]

    @property
    def device(self) -> torch.device:
        return self.trans.device

    @property
    def dtype(self) -> torch.dtype:
        return self.trans.dtype

    def __getitem__(self, idx) -> Rigid:
        idx = idx if isinstance(idx, tuple) else (idx,)
        return Rigid(self.rots[(*idx, slice(None))], self.trans[(*idx, slice(None))])

    def __len__(self) -> int:
        return self.shape[0]

    def to(self, *args, **kwargs) -> Rigid:
        return Rigid(self.rots.to(*args, **kwargs), self.trans.to(*args, **kwargs))

    def unsqueeze(self, dim: int) -> Rigid:
        dim = _leading_dim(dim, len(self.shape) + 1)
        return Rigid(self.rots.unsqueeze(dim), self.trans.unsqueeze(dim))

    def __repr__(self) -> str:
        return f"Rigid(shape={tuple(self.shape)}, dtype={self.dtype}, device={self.device})"

    # --- group operations ---------------------------------------------------------------
    def rotmats(self) -> Tensor:
        """Rotation matrices ``[..., 3, 3]`` (columns are the local axes in global coords)."""
        return quat_to_rotmat(self.rots)

    def compose(self, other: Rigid) -> Rigid:
        """``self o other``: ``x -> R1 (R2 x + t2) + t1`` (apply ``other`` first)."""
        rots = quat_normalize(quat_mul(self.rots, other.rots))
        return Rigid(rots, self.apply(other.trans))

    def apply(self, x: Tensor) -> Tensor:
        """Local -> global: ``R x + t`` for points ``x: [..., 3]`` broadcast against the shape."""
        R = self.rotmats()  # [..., 3, 3]
        return (R @ x.unsqueeze(-1)).squeeze(-1) + self.trans

    def invert_apply(self, x: Tensor) -> Tensor:
        """Global -> local: ``R^T (x - t)``."""
        R = self.rotmats()
        return (R.transpose(-1, -2) @ (x - self.trans).unsqueeze(-1)).squeeze(-1)

    def invert(self) -> Rigid:
        """``T^-1 = (R^T, -R^T t)``."""
        rots = quat_conj(self.rots)
        R_inv = quat_to_rotmat(rots)
        return Rigid(rots, -(R_inv @ self.trans.unsqueeze(-1)).squeeze(-1))

    def scale_translation(self, factor: float) -> Rigid:
        """Change length units, e.g. ``rigid.scale_translation(ANG_TO_NM)``."""
        return Rigid(self.rots, self.trans * factor)


def _leading_dim(dim: int, ndim: int) -> int:
    """Map a (possibly negative) dim over the leading shape to a non-negative tensor dim."""
    if not -ndim <= dim < ndim:
        raise IndexError(f"dim {dim} out of range for {ndim} leading dims")
    return dim % ndim


def _unit(v: Tensor, eps: float = 1e-8) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)


def frames_from_backbone(n: Tensor, ca: Tensor, c: Tensor, eps: float = 1e-8) -> Rigid:
    """Residue frames from N, CA, C positions ``[..., 3]`` (AF2 supplement Alg. 21).

    ``e1 = (C - CA)/|C - CA|``; ``e2`` = unit part of ``N - CA`` orthogonal to ``e1``;
    ``e3 = e1 x e2``; ``R = [e1 e2 e3]`` (columns), ``t = CA``.
    """
    e1 = _unit(c - ca, eps)  # [..., 3]
    u2 = n - ca
    e2 = _unit(u2 - (u2 * e1).sum(-1, keepdim=True) * e1, eps)
    e3 = torch.linalg.cross(e1, e2, dim=-1)
    R = torch.stack([e1, e2, e3], dim=-1)  # [..., 3, 3], columns e1 e2 e3
    return Rigid(rotmat_to_quat(R), ca)


def dihedral(a: Tensor, b: Tensor, c: Tensor, d: Tensor) -> Tensor:
    """Torsion angle ``a-b-c-d`` in ``(-pi, pi]`` (IUPAC sign), positions ``[..., 3]``."""
    b0 = a - b
    b1 = _unit(c - b)
    b2 = d - c
    v = b0 - (b0 * b1).sum(-1, keepdim=True) * b1
    w = b2 - (b2 * b1).sum(-1, keepdim=True) * b1
    x = (v * w).sum(-1)
    y = (torch.linalg.cross(b1, v, dim=-1) * w).sum(-1)
    return torch.atan2(y, x)


def place_atom(
    a: Tensor, b: Tensor, c: Tensor, bond: Tensor | float, angle: Tensor | float,
    torsion: Tensor | float,
) -> Tensor:
    """Position ``d`` with ``|c - d| = bond``, angle ``b-c-d = angle`` and torsion ``a-b-c-d``.

    The natural extension reference frame method (NeRF; Parsons et al. 2005, J. Comput. Chem.).
    Angles in radians, positions ``[..., 3]``; scalars or tensors broadcast.
    """
    bond, angle, torsion = (torch.as_tensor(v, dtype=c.dtype, device=c.device)
                            for v in (bond, angle, torsion))
    bc = _unit(c - b)
    nrm = _unit(torch.linalg.cross(b - a, bc, dim=-1))
    m = torch.linalg.cross(nrm, bc, dim=-1)
    d_x = -bond * torch.cos(angle)
    d_y = bond * torch.sin(angle) * torch.cos(torsion)
    d_z = bond * torch.sin(angle) * torch.sin(torsion)
    return c + d_x[..., None] * bc + d_y[..., None] * m + d_z[..., None] * nrm


def _ideal(aatype: Tensor | None, shape: torch.Size, like: Tensor) -> Tensor:
    """Ideal geometry rows ``[..., 5]`` for residue types ``aatype`` (default alanine)."""
    table = _IDEAL_TABLE.to(device=like.device, dtype=like.dtype)
    if aatype is None:
        return table[DEFAULT_RESTYPE].expand(*shape, 5)
    return table[aatype.long().clamp(0, table.shape[0] - 1)].expand(*shape, 5)


def _n_c_local(ideal: Tensor) -> tuple[Tensor, Tensor]:
    zero = torch.zeros_like(ideal[..., 0])
    n_local = torch.stack([ideal[..., 0], ideal[..., 1], zero], dim=-1)  # [..., 3]
    c_local = torch.stack([ideal[..., 2], zero, zero], dim=-1)
    return n_local, c_local


def backbone_local_coords(rigid: Rigid, n: Tensor, c: Tensor) -> Tensor:
    """The 3 internal coordinates a frame does not fix: ``(N_x, N_y, C_x)`` ``[..., 3]``.

    N and C positions in the residue's own frame (``N_z = C_y = C_z = 0`` by construction).
    Passing them as ``local=`` to ``backbone_from_frames`` makes the atom -> frame -> atom
    round trip exact for real chains, where ideal geometry is off by ~0.05 A for N.
    """
    n_loc = rigid.invert_apply(n)  # [..., 3]
    c_loc = rigid.invert_apply(c)
    return torch.stack([n_loc[..., 0], n_loc[..., 1], c_loc[..., 0]], dim=-1)


def _local_n_c(rigid: Rigid, aatype: Tensor | None, local: Tensor | None):
    """Ideal rows ``[..., 5]`` and local N, C ``[..., 3]`` (from ``local`` when given)."""
    ideal = _ideal(aatype, rigid.shape, rigid.trans)
    if local is not None:
        ideal = torch.cat([local.to(ideal.dtype), ideal[..., 3:]], dim=-1)
    return (ideal, *_n_c_local(ideal))


def psi_from_frames(
    rigid: Rigid,
    *,
    aatype: Tensor | None = None,
    mask: Tensor | None = None,
    local: Tensor | None = None,
) -> Tensor:
    """Backbone psi ``N(i)-CA(i)-C(i)-N(i+1)`` ``[..., L]`` from ideal atoms of the frames.

    Residues without a valid successor (chain end, padding: ``mask`` ``[..., L]``) copy the
    psi of their predecessor when it has one, else use 0; the copy only affects O placement.
    """
    _, n_local, c_local = _local_n_c(rigid, aatype, local)
    n = rigid.apply(n_local)  # [..., L, 3]
    c = rigid.apply(c_local)
    ca = rigid.trans
    psi = dihedral(n[..., :-1, :], ca[..., :-1, :], c[..., :-1, :], n[..., 1:, :])  # [..., L-1]
    psi = torch.cat([psi, torch.zeros_like(psi[..., :1])], dim=-1)  # [..., L]
    has_next = torch.ones_like(psi, dtype=torch.bool)
    has_next[..., -1] = False
    if mask is not None:
        m = mask.bool()
        has_next[..., :-1] &= m[..., :-1] & m[..., 1:]
    prev_psi = torch.cat([torch.zeros_like(psi[..., :1]), psi[..., :-1]], dim=-1)
    prev_ok = torch.cat([torch.zeros_like(has_next[..., :1]), has_next[..., :-1]], dim=-1)
    fallback = torch.where(prev_ok, prev_psi, torch.zeros_like(psi))
    return torch.where(has_next, psi, fallback)


def backbone_from_frames(
    rigid: Rigid,
    psi: Tensor | None = None,
    *,
    aatype: Tensor | None = None,
    mask: Tensor | None = None,
    local: Tensor | None = None,
) -> Tensor:
    """Backbone atoms N, CA, C, O ``[..., L, 4, 3]`` from residue frames ``rigid`` ``[..., L]``.

    N and C come from ideal local coordinates of each residue type (``aatype`` ``[..., L]``,
    default alanine), CA is the frame origin. O is placed with the ideal C=O bond and CA-C=O
    angle at torsion ``N-CA-C-O = psi + pi`` (O is trans to N(i+1) in the peptide plane).
    ``psi`` ``[..., L]`` (radians) when given, else measured from the next residue's ideal N
    (``psi_from_frames``; the chain's last residue copies its predecessor's psi).
    ``local`` ``[..., L, 3]`` (``backbone_local_coords``) replaces the ideal N and C.
    Lengths are in the units of ``rigid.trans``, assumed angstrom (scale first for nm).
    """
    ideal, n_local, c_local = _local_n_c(rigid, aatype, local)  # [..., L, 5], [..., L, 3]
    n = rigid.apply(n_local)  # [..., L, 3]
    ca = rigid.trans
    c = rigid.apply(c_local)
    if psi is None:
        psi = psi_from_frames(rigid, aatype=aatype, mask=mask, local=local)
    o_bond = ideal[..., 3:5].norm(dim=-1)  # |C=O|
    o_angle = math.pi - torch.atan2(ideal[..., 4], ideal[..., 3])  # angle CA-C=O
    o = place_atom(n, ca, c, o_bond, o_angle, psi + math.pi)
    return torch.stack([n, ca, c, o], dim=-2)


def ideal_cb(n: Tensor, ca: Tensor, c: Tensor) -> Tensor:
    """Ideal C-beta ``[..., 3]`` of alanine placed in the frame of N, CA, C (angstrom)."""
    rigid = frames_from_backbone(n, ca, c)
    cb_local = torch.tensor(IDEAL_CB_LOCAL, dtype=ca.dtype, device=ca.device)
    return rigid.apply(cb_local)


def nonadjacent_pairs(mask: Tensor) -> Tensor:
    """``[B, L, L]`` weights of residue pairs ``|i - j| >= 2`` that are both present."""
    idx = torch.arange(mask.shape[1], device=mask.device)
    far = ((idx[:, None] - idx[None, :]).abs() >= 2).to(mask.dtype)
    return mask[:, :, None] * mask[:, None, :] * far


def ca_centre(ca: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Centre positions on their (masked) mean: returns ``(ca - centroid, centroid)``.

    ``ca``: ``[..., L, 3]``; ``mask``: ``[..., L]`` (1 = real residue); ``centroid``:
    ``[..., 3]``. Apply the same shift to frame origins: ``rigid.trans - centroid[..., None, :]``.
    """
    if mask is None:
        centroid = ca.mean(dim=-2)
    else:
        m = mask.to(ca.dtype).unsqueeze(-1)  # [..., L, 1]
        centroid = (ca * m).sum(-2) / m.sum(-2).clamp_min(1.0)
    centred = ca - centroid.unsqueeze(-2)
    if mask is not None:
        centred = centred * mask.to(ca.dtype).unsqueeze(-1)
    return centred, centroid


def complete_oxygens(atoms: Tensor) -> Tensor:
    """Fill NaN O positions of real backbones ``[..., L, 4, 3]`` (angstrom) from the frames.

    psi is measured on the real atoms (N(i+1) of the next residue; the last residue copies its
    predecessor) and O is placed with ideal geometry; present O atoms are kept as they are.
    """
    n, ca, c, o = atoms.unbind(-2)
    missing = ~torch.isfinite(o).all(-1)  # [..., L]
    if not missing.any():
        return atoms
    rigid = frames_from_backbone(n, ca, c)
    local = backbone_local_coords(rigid, n, c)
    psi = psi_from_frames(rigid, local=local)
    rebuilt = backbone_from_frames(rigid, psi, local=local)[..., 3, :]
    o = torch.where(missing[..., None], rebuilt, o)
    return torch.stack([n, ca, c, o], dim=-2)


def radius_of_gyration(ca: Tensor, mask: Tensor | None = None) -> Tensor:
    """``sqrt(mean |x_i - mean x|^2)`` over (masked) CA positions ``[..., L, 3]`` -> ``[...]``."""
    centred, _ = ca_centre(ca, mask)
    sq = (centred**2).sum(-1)  # [..., L]
    if mask is None:
        return sq.mean(-1).sqrt()
    m = mask.to(ca.dtype)
    return ((sq * m).sum(-1) / m.sum(-1).clamp_min(1.0)).sqrt()


def superimpose(src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor]:
    """The proper rigid motion ``(R [..., 3, 3], t [..., 3])`` that minimises
    ``sum_i |R src_i + t - dst_i|^2`` for point sets ``[..., N, 3]`` (Kabsch 1976: SVD of the
    cross-covariance, with the reflection case flipped)."""
    if src.shape != dst.shape or src.shape[-1] != 3 or src.shape[-2] < 3:
        raise ValueError(f"superimpose needs two [..., N >= 3, 3] sets, got {tuple(src.shape)} "
                         f"and {tuple(dst.shape)}")
    mu_s, mu_d = src.mean(-2, keepdim=True), dst.mean(-2, keepdim=True)
    h = (src - mu_s).transpose(-1, -2) @ (dst - mu_d)  # [..., 3, 3]
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(vt.transpose(-1, -2) @ u.transpose(-1, -2)))
    flip = torch.ones_like(h[..., 0])  # [..., 3]
    flip[..., 2] = torch.where(d == 0, torch.ones_like(d), d)
    rot = vt.transpose(-1, -2) @ torch.diag_embed(flip) @ u.transpose(-1, -2)
    trans = mu_d[..., 0, :] - (rot @ mu_s[..., 0, :, None])[..., 0]
    return rot, trans
