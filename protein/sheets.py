"""Sheet guidance: steer predicted frames until a fold plan's strands and helices are H-bonded.

A fold-plan model (:mod:`protein.topology`) learns *where* a planned strand's partner goes,
but not to the angstrom and degree that separate a beta sheet from two strands lying on top of
each other or side by side without H-bonds (``docs/benchmarks.md``, "Fold conditioning"). A
sheet is a pattern of backbone H-bonds, and DSSP's definition of one is differentiable once its
hard cut-offs are softened. Sheet guidance is an inference-time energy on the predicted frames
(like clash guidance, :meth:`protein.flow.ProteinFlow.steer_clashes`, but on rotations too):

- H-bonds: the Kabsch-Sander electrostatic energy :func:`hbond_energy` between the N-H of each
  planned strand residue and the C=O of its best partner on a strand the plan pairs it with
  (and the same for each C=O), clamped at the energy of a good H-bond;
- bridges: DSSP's four bridge patterns (two antiparallel, two parallel; :func:`bridge_map`)
  scored on soft H-bonds, so the bonds form in pairs that DSSP calls a ladder;
- partners: the nearest planned partner CA within 5.5 A, and none closer than 4.4 A (real
  sheets: 4.4-5.5 A), and no other CA pair closer than 3.8 A;
- the chain: C(i)-N(i+1) at 1.33 A and CA(i)-CA(i+1) at 3.8 A, so rotating a frame does not
  break its peptide bonds;
- helices: the i -> i+4 H-bonds (DSSP's 4-turns) each planned helix needs (:func:`helix_turns`);
- torsions: phi/psi of planned strand residues near beta (-120, 130 degrees) and of planned
  helix residues near alpha (-63, -42). Without it, about half of the residues pydssp
  called strand had beta phi/psi (phi < -90 and psi > 90 or < -150; TS50 chains: 81%), and
  PyMOL's ``dss``, which reads torsions, called 0.04 of the designs strand
  (``docs/benchmarks.md``, sessions 28 and 29).

:func:`steer_sheets` takes gradient steps on translations and rotations together, each move
capped per residue; the flow calls it on every prediction from ``SHEET_START`` on, with more
steps in the last fifth of the path (:data:`SHEET_ITERS`, :data:`SHEET_LATE_ITERS`). An H-bond
counts with the amide H placed both ways DSSP programs place it (:data:`HBOND_PLACEMENT`): on
the bisector of C(i-1)->N and CA->N (pydssp, the evaluation's default) and along the previous
C=O (DSSP itself, mkdssp). With pydssp's placement alone the guidance made bonds on twisted
peptides that mkdssp did not see (``docs/benchmarks.md``, session 28).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from flow3d.core import so3
from protein.constants import CA_CA_IDEAL_ANG, NM_TO_ANG, STRAND_MIN_CA_DISTANCE_ANG
from protein.geometry import Rigid, backbone_from_frames, dihedral, nonadjacent_pairs
from protein.topology import ADJ_UNKNOWN, ADJACENT, HELIX, STRAND

# Kabsch & Sander (1983): E = q1 q2 f (1/r_ON + 1/r_CH - 1/r_OH - 1/r_CN), kcal/mol, angstrom
HBOND_Q1Q2 = 0.084
HBOND_F = 332.0
NH_BOND_ANG = {"bisector": 1.01, "carbonyl": 1.0}  # amide N-H: pydssp's, DSSP's (mkdssp)
PEPTIDE_CN_ANG = 1.33
PARTNER_NEAR_ANG = 4.4  # true strand partners: 4.4-5.5 A (see protein.constants)
PARTNER_FAR_ANG = 5.5
STRAND_PHI = math.radians(-120.0)  # beta-sheet phi/psi (real strands: median -119, 134 deg)
STRAND_PSI = math.radians(130.0)
HELIX_PHI = math.radians(-63.0)  # alpha helix (real helices: -63, -42 deg)
HELIX_PSI = math.radians(-42.0)
MIN_SEPARATION = 3  # residues this close in sequence never pair (DSSP skips i, i+1, i+2)
# a translation step is rate x this x the energy's gradient in nm (the energy is in angstrom
# units, so its gradient in nm is 10x and more larger than a rotation's per radian)
TRANS_STEP_NM2 = 0.01

# When the flow steers (t in [SHEET_START, 1)), how many steps, and more at the end
# (tuned on fold plans of training chains: 32 designs of length 80 and 16 of length 150,
# seeds 1 and 2; docs/benchmarks.md, "Sheet guidance")
# H-bonds the guidance makes: "both" (pydssp's bisector H and DSSP's carbonyl H must each see
# them) or one placement (hbond_energy)
HBOND_PLACEMENT = "both"
# Bump on any change to the energy that the constants recorded by guidance_record do not show
# (a new term, a clamp, a width): a design run resumes only with the same guidance.
# 1: sessions 27-28 (strands only; not recorded then); 2: helix turns and torsions
GUIDANCE_VERSION = 2
SHEET_START = 0.2
SHEET_ITERS = 30
SHEET_LATE_T = 0.8
SHEET_LATE_ITERS = 500


@dataclass(frozen=True)
class SheetTerms:
    """Weights of the sheet energy (:func:`sheet_energy`) and the step rule of
    :func:`steer_sheets`: ``rate`` times the gradient, each residue's move capped at
    ``max_move_nm`` and ``max_turn_rad`` per step."""

    hbond: float = 1.0  # kcal/mol: best partner per N-H and per C=O
    bridge: float = 3.0  # per residue, soft bridge score in [0, 1]
    pull: float = 1.0  # per A^2 beyond PARTNER_FAR_ANG
    push: float = 3.0  # per A^2 under PARTNER_NEAR_ANG
    clash: float = 3.0  # per A^2 under 3.8 A, any pair |i - j| >= 2
    chain: float = 10.0  # per A^2 off the peptide C-N and CA-CA bonds
    helix: float = 2.0  # kcal/mol: each i -> i+4 H-bond a planned helix needs (helix_turns)
    torsion: float = 5.0  # per planned strand / helix residue: 2 - cos(d phi) - cos(d psi)
    rate: float = 0.5
    max_move_nm: float = 0.02
    max_turn_rad: float = 0.03


def hydrogens(atoms: Tensor, placement: str = "bisector") -> Tensor:
    """Backbone amide H ``[..., L, 3]`` of atoms N, CA, C, O ``[..., L, 4, 3]`` (angstrom),
    from N: 1.01 A on the bisector of C(i-1)->N(i) and CA(i)->N(i) (``"bisector"``, as pydssp
    places it), or 1.0 A along O(i-1)->C(i-1) (``"carbonyl"``, as DSSP itself and mkdssp do). On a
    flat peptide the two nearly coincide; on a twisted one they do not. Residue 0 has no
    C(i-1); its row is its N (it is never a donor)."""
    n, ca, c, o = (atoms[..., k, :] for k in range(4))
    if placement == "bisector":
        from_c = _unit(n[..., 1:, :] - c[..., :-1, :])
        direction = _unit(from_c + _unit(n[..., 1:, :] - ca[..., 1:, :]))
    elif placement == "carbonyl":
        direction = _unit(c[..., :-1, :] - o[..., :-1, :])
    else:
        raise ValueError(f"placement {placement!r}: bisector or carbonyl")
    h = n[..., 1:, :] + NH_BOND_ANG[placement] * direction
    return torch.cat([n[..., :1, :], h], dim=-2)


def hbond_energy(atoms: Tensor, placement: str = "bisector") -> Tensor:
    """Electrostatic H-bond energy ``[..., L, L]`` (kcal/mol) of backbones ``[..., L, 4, 3]``
    (angstrom): entry ``[i, j]`` is the N-H of residue ``i`` (donor) to the C=O of ``j``
    (acceptor), the H placed as :func:`hydrogens` says (``"both"``: the weaker of the two
    placements' energies, an H-bond only where pydssp and mkdssp would both see one). Row 0
    (no H) is 0; nothing is masked by sequence separation."""
    if placement == "both":
        return torch.maximum(hbond_energy(atoms, "bisector"), hbond_energy(atoms, "carbonyl"))
    n, c, o = atoms[..., 0, :], atoms[..., 2, :], atoms[..., 3, :]
    h = hydrogens(atoms, placement)

    def inv(a: Tensor, b: Tensor) -> Tensor:  # 1 / |a_i - b_j|, [..., L, L]
        return 1.0 / (a[..., :, None, :] - b[..., None, :, :]).norm(dim=-1).clamp_min(0.5)

    e = HBOND_Q1Q2 * HBOND_F * (inv(n, o) + inv(h, c) - inv(h, o) - inv(n, c))
    first = torch.zeros_like(e[..., :1, :])
    return torch.cat([first, e[..., 1:, :]], dim=-2)


def soft_hbonds(e: Tensor, width: float = 0.3) -> Tensor:
    """H-bonds in (0, 1) from energies: 0.5 at -1 kcal/mol (DSSP's cut-off is -0.5), close to
    1 below -2. Unlike a clamp, the sigmoid has a gradient from afar."""
    return torch.sigmoid((-1.0 - e) / width)


def _shift(x: Tensor, di: int, dj: int) -> Tensor:
    """``out[..., i, j] = x[..., i + di, j + dj]`` (0 where that is outside)."""
    L = x.shape[-1]
    out = torch.zeros_like(x)
    i0, i1, j0, j1 = max(0, -di), min(L, L - di), max(0, -dj), min(L, L - dj)
    out[..., i0:i1, j0:j1] = x[..., i0 + di:i1 + di, j0 + dj:j1 + dj]
    return out


def bridge_map(hb: Tensor, mask: Tensor | None = None) -> Tensor:
    """DSSP's bridges ``[..., L, L]`` from H-bonds ``hb [..., L, L]`` (``hb[i, j]``: N-H of i
    to C=O of j, in [0, 1]; products are a soft AND). With DSSP's ``Hbond(a, b)``, C=O of a
    to N-H of b, i.e. ``hb[b, a]``, residues i and j bridge when

    - antiparallel: Hbond(i, j) and Hbond(j, i), or Hbond(i-1, j+1) and Hbond(j-1, i+1);
    - parallel: Hbond(i-1, j) and Hbond(j, i+1), or Hbond(j-1, i) and Hbond(i, j+1).

    The map is the largest of the four. As in pydssp, a residue without both neighbours (a
    chain end; ``mask [..., L]`` marks real residues) bridges with nothing, and padding has no
    H-bonds; with 0/1 H-bonds this is pydssp's bridge table, and a residue in any bridge is a
    strand residue."""
    inner = torch.ones(hb.shape[:-1], dtype=hb.dtype, device=hb.device)  # [..., L]
    if mask is not None:
        m = mask.to(hb.dtype)
        hb = hb * m[..., :, None] * m[..., None, :]
        inner = m.clone()
        inner[..., 1:-1] = m[..., :-2] * m[..., 1:-1] * m[..., 2:]
    inner[..., 0] = 0.0
    inner[..., -1] = 0.0
    hbt = hb.transpose(-1, -2)  # hbt[i, j] = hb[j, i]
    anti = torch.maximum(hb * hbt, _shift(hb, 1, -1) * _shift(hbt, -1, 1))
    par = torch.maximum(_shift(hbt, -1, 0) * _shift(hb, 1, 0),
                        _shift(hb, 0, -1) * _shift(hbt, 0, 1))
    return torch.maximum(anti, par) * inner[..., :, None] * inner[..., None, :]


def sheet_targets(ss: Tensor, adj: Tensor, mask: Tensor | None = None) -> Tensor:
    """Residue pairs ``[B, L, L]`` (bool) a fold plan wants paired: both planned strand
    (``ss [B, L]``), on elements the block adjacency (``adj [B, L, L]``) packs together, or
    whose adjacency is unknown (a plan string: any two different strands), at least
    :data:`MIN_SEPARATION` apart."""
    strand = ss == STRAND
    if mask is not None:
        strand = strand & mask.bool()
    both = strand[:, :, None] & strand[:, None, :]
    # elements: runs of one code; an unknown adjacency pairs different elements only
    element = torch.cumsum(torch.cat([torch.ones_like(ss[:, :1]), (ss[:, 1:] != ss[:, :-1])
                                      .to(ss)], dim=1), dim=1)
    same = element[:, :, None] == element[:, None, :]
    packs = (adj == ADJACENT) | ((adj == ADJ_UNKNOWN) & ~same)
    idx = torch.arange(ss.shape[-1], device=ss.device)
    far = (idx[:, None] - idx[None, :]).abs() >= MIN_SEPARATION
    return both & packs & far


def helix_turns(ss: Tensor, mask: Tensor | None = None) -> Tensor:
    """The i -> i+4 H-bonds a fold plan's helices need, ``[B, L]`` (bool): entry ``k`` is the
    C=O of ``k`` to the N-H of ``k + 4`` (DSSP's 4-turn at ``k``). DSSP calls residues
    ``k+1..k+4`` helix when the turns at ``k`` and ``k+1`` are both there, so a planned helix
    ``a..b`` needs the turns ``a-1..b-3``: every ``k`` whose ``k+1..k+3`` are planned helix
    (the turns at its ends bond to the residues just outside it)."""
    helix = ss == HELIX
    if mask is not None:
        helix = helix & mask.bool()
    L = ss.shape[-1]
    turns = torch.zeros_like(helix)
    if L >= 5:
        inside = helix[:, 1:L - 3] & helix[:, 2:L - 2] & helix[:, 3:L - 1]  # k = 0..L-5
        turns[:, :L - 4] = inside
        if mask is not None:  # both ends of the bond present
            m = mask.bool()
            turns[:, :L - 4] &= m[:, :L - 4] & m[:, 4:]
    return turns


def _turn_residues(turns: Tensor, dtype: torch.dtype) -> Tensor:
    """Residues ``[B, L]`` (float) inside the 4-turns ``turns [B, L]`` (:func:`helix_turns`):
    ``k+1..k+3`` of each turn ``k``, the residues DSSP's helix puts between the bonded pair."""
    t = turns.to(dtype)
    inside = torch.zeros_like(t)
    for shift in (1, 2, 3):
        inside[:, shift:] = torch.maximum(inside[:, shift:], t[:, :-shift])
    return inside


def backbone_torsions(atoms: Tensor) -> tuple[Tensor, Tensor]:
    """Backbone phi and psi ``[..., L]`` (radians) of atoms N, CA, C, O ``[..., L, 4, 3]``;
    phi of the first residue and psi of the last are 0 (they have no neighbour)."""
    n, ca, c = atoms[..., 0, :], atoms[..., 1, :], atoms[..., 2, :]
    phi = dihedral(c[..., :-1, :], n[..., 1:, :], ca[..., 1:, :], c[..., 1:, :])
    psi = dihedral(n[..., :-1, :], ca[..., :-1, :], c[..., :-1, :], n[..., 1:, :])
    zero = torch.zeros_like(phi[..., :1])
    return torch.cat([zero, phi], dim=-1), torch.cat([psi, zero], dim=-1)


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def _softmin(x: Tensor, dim: int, temperature: float) -> Tensor:
    return -temperature * torch.logsumexp(-x / temperature, dim=dim)


def sheet_energy(trans: Tensor, quats: Tensor, targets: Tensor, mask: Tensor,
                 terms: SheetTerms = SheetTerms(), helix: Tensor | None = None) -> Tensor:
    """The sheet energy (see the module) of frames ``trans [B, L, 3]`` (nm), ``quats [B, L,
    4]``, summed over the batch: pairs ``targets [B, L, L]`` (:func:`sheet_targets`) are to
    bridge; ``mask [B, L]`` marks real residues; ``helix [B, L]`` (:func:`helix_turns`): the
    i -> i+4 H-bonds planned helices need (``terms.helix`` weighs them)."""
    atoms = backbone_from_frames(Rigid(quats, trans * NM_TO_ANG), mask=mask)  # [B, L, 4, 3]
    m = mask.to(trans.dtype)
    e = hbond_energy(atoms, HBOND_PLACEMENT)
    paired = targets.any(-1).to(e.dtype)  # [B, L]: residues with a planned partner
    e_t = torch.where(targets, e, torch.full_like(e, 10.0))
    donor = _softmin(e_t, -1, 0.5).clamp_min(-3.0)  # best acceptor of each N-H
    acceptor = _softmin(e_t, -2, 0.5).clamp_min(-3.0)  # best donor to each C=O
    energy = terms.hbond * ((donor + acceptor) * paired).sum()
    if helix is not None and terms.helix > 0 and e.shape[-1] > 4:
        turn = torch.diagonal(e, offset=-4, dim1=-2, dim2=-1)  # [B, L-4]: C=O k, N-H k+4
        energy = energy + terms.helix * (turn.clamp_min(-3.0)
                                         * helix[:, :-4].to(e.dtype)).sum()
    if terms.torsion > 0:  # planned strands beta, planned helices alpha (phi, psi)
        phi, psi = backbone_torsions(atoms)
        inner = torch.zeros_like(m)
        inner[:, 1:-1] = m[:, :-2] * m[:, 2:]
        beta = 2.0 - torch.cos(phi - STRAND_PHI) - torch.cos(psi - STRAND_PSI)
        energy = energy + terms.torsion * (beta * paired * inner).sum()
        if helix is not None:
            alpha = 2.0 - torch.cos(phi - HELIX_PHI) - torch.cos(psi - HELIX_PSI)
            energy = energy + terms.torsion * (alpha * _turn_residues(helix, m.dtype) * inner).sum()
    bridges = bridge_map(soft_hbonds(e), mask) / 0.1
    bridges = torch.where(targets, bridges, torch.full_like(e, -1e4))  # finite: no NaN grads
    best = 0.1 * torch.logsumexp(bridges, dim=-1)  # soft max over the planned partners
    energy = energy - terms.bridge * torch.where(paired > 0, best, torch.zeros_like(best)).sum()
    ca = atoms[..., 1, :]
    d = torch.cdist(ca, ca)
    nearest = _softmin(torch.where(targets, d, torch.full_like(d, 1e3)), -1, 0.5)
    energy = energy + terms.pull * (torch.relu(nearest - PARTNER_FAR_ANG) ** 2 * paired).sum()
    energy = energy + terms.push * (torch.relu(PARTNER_NEAR_ANG - d) ** 2 * targets).sum()
    energy = energy + terms.clash * (torch.relu(STRAND_MIN_CA_DISTANCE_ANG - d) ** 2
                                     * nonadjacent_pairs(m)).sum() / 2
    link = m[:, 1:] * m[:, :-1]
    cn = (atoms[:, 1:, 0] - atoms[:, :-1, 2]).norm(dim=-1)
    caca = (ca[:, 1:] - ca[:, :-1]).norm(dim=-1)
    return energy + terms.chain * ((((cn - PEPTIDE_CN_ANG) ** 2)
                                    + (caca - CA_CA_IDEAL_ANG) ** 2) * link).sum()


def steer_sheets(trans: Tensor, quats: Tensor, targets: Tensor, mask: Tensor, *,
                 strength: float = 1.0, iters: int = SHEET_ITERS,
                 frozen: Tensor | None = None, helix: Tensor | None = None,
                 terms: SheetTerms = SheetTerms()) -> tuple[Tensor, Tensor]:
    """``iters`` gradient steps of ``strength`` x :func:`sheet_energy` on predicted frames
    ``trans [B, L, 3]`` (nm) and ``quats [B, L, 4]``: a translation step and a rotation
    (a body-frame rotation vector) per residue, each capped (``terms``). Gradients are taken
    at the prediction only, as in clash guidance. ``frozen [B, L]`` (bool): residues that do
    not move (a motif). ``helix [B, L]`` (:func:`helix_turns`): the planned helices' H-bonds;
    a design moves when it has strand pairs, or helix turns and a helix or torsion weight.
    Returns the steered ``(trans, quats)``."""
    acts = targets.flatten(1).any(1)  # designs with something to steer
    if helix is not None and (terms.helix > 0 or terms.torsion > 0):
        acts = acts | helix.any(1)
    else:
        helix = None
    if strength <= 0 or not bool(acts.any()):
        return trans, quats
    movable = mask.to(trans.dtype)
    if frozen is not None:
        movable = movable * (~frozen).to(movable)
    movable = (movable * acts.to(movable)[:, None])[..., None]
    x, q = trans.detach(), quats.detach()
    for _ in range(iters):
        with torch.enable_grad():
            dx = torch.zeros_like(x, requires_grad=True)
            w = torch.zeros_like(x, requires_grad=True)
            turned = so3.quat_mul(q, so3.quat_exp(w))
            energy = strength * sheet_energy(x + dx, turned, targets, mask, terms, helix)
            gx, gw = torch.autograd.grad(energy, (dx, w))
        move = _capped(terms.rate * TRANS_STEP_NM2 * gx, terms.max_move_nm) * movable
        turn = _capped(terms.rate * gw, terms.max_turn_rad) * movable
        x = (x - move).detach()
        turned = so3.quat_normalize(so3.quat_mul(q, so3.quat_exp(-turn)))
        q = torch.where(movable > 0, turned, q).detach()  # frozen rotations stay exact
    return x, q


def _capped(step: Tensor, cap: float) -> Tensor:
    return step * (cap / step.norm(dim=-1, keepdim=True).clamp_min(cap))


def guidance_record() -> dict:
    """What sheet guidance does beyond its strength: the energy's weights, the H placement
    and the schedule. A design run records it, so ``--resume`` does not mix designs steered
    by different code."""
    return {"version": GUIDANCE_VERSION, **asdict(SheetTerms()),
            "hbond_placement": HBOND_PLACEMENT, "nh_bond_ang": dict(NH_BOND_ANG),
            "start": SHEET_START, "iters": SHEET_ITERS, "late_t": SHEET_LATE_T,
            "late_iters": SHEET_LATE_ITERS, "trans_step_nm2": TRANS_STEP_NM2,
            "partner_ang": [PARTNER_NEAR_ANG, PARTNER_FAR_ANG],
            "min_separation": MIN_SEPARATION,
            "torsions_deg": [round(math.degrees(a), 6) for a in
                             (STRAND_PHI, STRAND_PSI, HELIX_PHI, HELIX_PSI)]}


def sheet_iters(t: float) -> int:
    """Steps of sheet guidance at time ``t`` (0 before :data:`SHEET_START`)."""
    if t < SHEET_START:
        return 0
    return SHEET_LATE_ITERS if t >= SHEET_LATE_T else SHEET_ITERS
