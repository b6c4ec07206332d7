"""Sheet guidance (protein.sheets): DSSP's H-bond energy and bridges, the energy's gradients,
and steering that turns broken sheets back into H-bonded ones."""

from __future__ import annotations

import pytest
import torch
from pydssp import pydssp_torch

from flow3d.cli import main
from flow3d.core import so3
from protein.data import shared_protein_dir
from protein.data.parse import parse_structure
from protein.flow import Condition, ProteinFlow
from protein.geometry import Rigid, backbone_from_frames, frames_from_backbone
from protein.head import ProteinSampleConfig
from protein.settings import SamplerSettings
from protein.sheets import (
    SHEET_ITERS,
    SHEET_LATE_ITERS,
    SHEET_START,
    SheetTerms,
    backbone_torsions,
    bridge_map,
    hbond_energy,
    helix_turns,
    sheet_energy,
    sheet_iters,
    sheet_targets,
    steer_sheets,
)
from protein.topology import ADJ_UNKNOWN, ADJACENT, HELIX, LOOP, NOT_ADJACENT, STRAND, load_topology

needs_data = pytest.mark.skipif(shared_protein_dir() is None,
                                reason="needs ../shared/data/proteins")


def _real(name: str) -> tuple[torch.Tensor, object]:
    """Backbone atoms [L, 4, 3] (angstrom) of a TS50 chain and its fold plan."""
    path = shared_protein_dir() / "ts50_pydssp" / "pdb" / name
    chain = parse_structure(path, break_distance=float("inf")).chains[0]
    return torch.tensor(chain.coords, dtype=torch.float64), load_topology(path)


def _frames(atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rigid = frames_from_backbone(atoms[:, 0], atoms[:, 1], atoms[:, 2])
    return rigid.trans[None] * 0.1, rigid.rots[None]  # nm, [1, L, 4]


def _bonded(trans: torch.Tensor) -> float:
    """Fraction of CA-CA bonds within 3.8 +/- 0.2 A."""
    ca = trans[0] * 10.0
    return float((((ca[1:] - ca[:-1]).norm(dim=-1) - 3.8).abs() < 0.2).float().mean())


def _strands(trans: torch.Tensor, quats: torch.Tensor) -> int:
    atoms = backbone_from_frames(Rigid(quats, trans * 10.0))[0]
    return int(pydssp_torch.assign(atoms.float())[:, 2].sum())


@needs_data
@pytest.mark.parametrize("name", ["1i8nA.pdb", "1ahsA.pdb", "1pdoA.pdb"])
def test_energy_and_bridges_are_pydssps(name):
    """The H-bond energy is pydssp's (the evaluation's DSSP) to float precision, and its
    bridges from pydssp's own H-bonds give exactly pydssp's strand residues."""
    atoms, _ = _real(name)
    L = len(atoms)
    theirs = pydssp_torch.get_hbond_map(atoms.float(), return_e=True)[0].double()
    ours = hbond_energy(atoms)
    # pydssp leaves the last residue's C=O out (column L-1) and residue 0 has no N-H
    torch.testing.assert_close(ours[:, : L - 1], theirs[:, : L - 1], atol=2e-4, rtol=1e-4)
    assert (ours[0] == 0).all()
    hb = (pydssp_torch.get_hbond_map(atoms.float()) > 0).double()  # DSSP's E < -0.5
    strand = (bridge_map(hb) > 0.5).any(-1)
    expected = pydssp_torch.assign(atoms.float())[:, 2]
    assert int(expected.sum()) >= 10 and torch.equal(strand, expected)


def _mkdssp_best_donor_bonds(atoms: torch.Tensor) -> dict[int, tuple[int, float]]:
    """mkdssp's best N-H-->O bond of each residue: {donor: (acceptor, kcal/mol to 0.1)}."""
    import subprocess
    import tempfile
    from pathlib import Path

    from protein.pdbio import write_backbone_pdb

    with tempfile.TemporaryDirectory() as tmp:
        pdb = write_backbone_pdb(Path(tmp) / "x.pdb", atoms.numpy())
        out = Path(tmp) / "x.dssp"
        subprocess.run(["mkdssp", "--output-format", "dssp", str(pdb), str(out)], check=True,
                       capture_output=True)
        lines = out.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("  #  RESIDUE"))
    best = {}
    for k, ln in enumerate(lines[start + 1:]):
        bonds = [ln[39:50], ln[61:72]]  # the two N-H-->O columns: "offset,energy"
        pairs = [(int(b.split(",")[0]), float(b.split(",")[1])) for b in bonds]
        offset, energy = min(pairs, key=lambda p: p[1])
        if offset != 0:
            best[k] = (k + offset, energy)
    return best


@needs_data
@pytest.mark.skipif(__import__("shutil").which("mkdssp") is None, reason="needs mkdssp")
def test_carbonyl_hydrogens_give_mkdssps_energies_and_both_is_the_weaker():
    """DSSP itself (mkdssp) puts the amide H along the previous C=O: with that placement the
    energies of mkdssp's own best bonds agree to within the rounding of its printed 0.1
    kcal/mol (with the H at 1.01 A instead of DSSP's 1.0 A, they differ by up to 0.09). On a real
    chain the two placements nearly agree; on a twisted peptide they do not, and "both" keeps
    the weaker bond, so sheet guidance cannot make an H-bond only one DSSP sees."""
    from protein.sheets import hydrogens

    atoms, _ = _real("1i8nA.pdb")
    carbonyl = hbond_energy(atoms, "carbonyl")
    checked = 0
    for donor, (acceptor, energy) in _mkdssp_best_donor_bonds(atoms).items():
        if energy < -0.5:
            assert abs(float(carbonyl[donor, acceptor]) - energy) < 0.06, (donor, acceptor)
            checked += 1
    assert checked > 30
    gap = (hydrogens(atoms, "bisector") - hydrogens(atoms, "carbonyl")).norm(dim=-1)[1:]
    assert float(gap.median()) < 0.15
    both = hbond_energy(atoms, "both")
    assert torch.equal(both, torch.maximum(hbond_energy(atoms), carbonyl))
    twisted = atoms.clone()  # turn residue 10's C=O about its CA-C axis: residue 11's H moves
    axis = torch.nn.functional.normalize(twisted[10, 2] - twisted[10, 1], dim=0)
    turn = so3.axis_angle_to_rotmat(axis * 1.2)
    twisted[10, 3] = twisted[10, 2] + turn @ (twisted[10, 3] - twisted[10, 2])
    gap = (hydrogens(twisted, "bisector") - hydrogens(twisted, "carbonyl")).norm(dim=-1)
    assert float(gap[11]) > 0.5 and float(gap[12]) < 0.15
    with pytest.raises(ValueError, match="bisector or carbonyl"):
        hydrogens(atoms, "middle")


def test_helix_turns_are_the_bonds_dssp_needs_for_a_planned_helix():
    """A planned helix a..b needs DSSP's 4-turns at a-1..b-3 (C=O of k to N-H of k+4): every
    k whose k+1..k+3 are planned helix. A helix of three has one turn (DSSP: a turn, not a
    helix); padding and chains under five residues have none."""
    H, E, C = HELIX, STRAND, LOOP
    ss = torch.tensor([[C, H, H, H, H, H, H, C, E, E, C, H, H, H, C, C]])
    got = helix_turns(ss)[0].nonzero().flatten().tolist()
    assert got == [0, 1, 2, 3, 10]
    mask = torch.ones(1, 16)
    mask[0, 5:] = 0.0  # residues 5.. are padding: the bond 0 -> 4 is the only one left
    assert helix_turns(ss, mask)[0].nonzero().flatten().tolist() == [0]
    assert not helix_turns(torch.full((1, 4), H)).any()


@needs_data
def test_planned_helix_turns_are_h_bonded_in_a_real_chain():
    """On a real chain, the turns its own plan asks for are H-bonds DSSP sees (both
    placements) at least 9 times in 10."""
    atoms, topo = _real("1pdoA.pdb")
    turns = helix_turns(torch.from_numpy(topo.codes)[None])[0]
    e = torch.diagonal(hbond_energy(atoms, "both"), offset=-4)  # e[k + 4, k]
    bonded = e[turns[:-4]] < -0.5
    assert len(bonded) >= 40 and float(bonded.double().mean()) >= 0.9


@needs_data
def test_backbone_torsions_are_biopythons_and_real_strands_are_beta():
    from Bio.PDB import PDBParser, PPBuilder

    path = shared_protein_dir() / "ts50_pydssp" / "pdb" / "1i8nA.pdb"
    (peptide,) = PPBuilder().build_peptides(PDBParser(QUIET=True).get_structure("x", path))
    expected = peptide.get_phi_psi_list()
    atoms, topo = _real("1i8nA.pdb")
    phi, psi = backbone_torsions(atoms)
    assert len(expected) == len(phi)
    want_phi = torch.tensor([a if a is not None else 0.0 for a, _ in expected])
    want_psi = torch.tensor([b if b is not None else 0.0 for _, b in expected])
    torch.testing.assert_close(phi.float(), want_phi.float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(psi.float(), want_psi.float(), atol=1e-4, rtol=0)
    strand = torch.from_numpy(topo.codes) == STRAND
    median = torch.rad2deg(torch.stack([phi[strand], psi[strand]])).median(dim=1).values
    assert abs(float(median[0]) + 120) < 10 and abs(float(median[1]) - 130) < 10


def test_bridge_patterns_on_a_hand_made_map():
    """One H-bond makes no bridge; the antiparallel and parallel pairs each make one."""
    L = 12

    def hb(*bonds):  # (donor N-H, acceptor C=O)
        m = torch.zeros(L, L)
        for d, a in bonds:
            m[d, a] = 1.0
        return m

    assert bridge_map(hb((2, 9))).sum() == 0
    # as in pydssp, chain ends (no neighbour on one side) and padding bridge with nothing
    assert bridge_map(hb((0, 8), (8, 0))).sum() == 0
    assert bridge_map(hb((3, 11), (11, 3))).sum() == 0
    mask = torch.ones(L)
    mask[10:] = 0  # residue 9 is now a chain end
    assert bridge_map(hb((2, 9), (9, 2)), mask).sum() == 0
    assert bridge_map(hb((2, 8), (8, 2)), mask)[2, 8] == 1
    anti = bridge_map(hb((2, 9), (9, 2)))  # Hbond(2, 9) and Hbond(9, 2): 2 and 9 bridge
    assert anti[2, 9] == 1 and anti[9, 2] == 1 and anti.sum() == 2
    # Hbond(i-1, j+1) and Hbond(j-1, i+1) with i = 3, j = 8: C=O 2 -> N-H 9, C=O 7 -> N-H 4
    anti2 = bridge_map(hb((9, 2), (4, 7)))
    assert anti2[3, 8] == 1 and anti2[8, 3] == 1
    # parallel: Hbond(i-1, j) and Hbond(j, i+1) with i = 3, j = 8: C=O 2 -> N-H 8,
    # C=O 8 -> N-H 4
    par = bridge_map(hb((8, 2), (4, 8)))
    assert par[3, 8] == 1 and par[8, 3] == 1 and par.sum() == 2


def test_targets_pair_planned_strands_on_packed_or_unknown_elements():
    ss = torch.tensor([[STRAND] * 4 + [LOOP] * 2 + [STRAND] * 4 + [HELIX] * 4 + [STRAND] * 2])
    L = ss.shape[1]
    adj = torch.full((1, L, L), NOT_ADJACENT)
    adj[0, :4, 6:10] = adj[0, 6:10, :4] = ADJACENT
    t = sheet_targets(ss, adj)
    assert t[0, 0, 9] and t[0, 9, 0] and t[0, 3, 6] and not t[0, 0, 14]  # not packed
    assert not t[0, 0, 2] and not t[0, 0, 10]  # too close in sequence; a helix
    assert torch.equal(t, t.transpose(1, 2))
    unknown = sheet_targets(ss, torch.full_like(adj, ADJ_UNKNOWN))  # a plan string
    assert unknown[0, 0, 14] and unknown[0, 6, 15] and not unknown[0, 10, 14]
    assert not unknown[0, 0, 3] and not unknown[0, 6, 9]  # a strand does not pair with itself
    mask = torch.ones(1, L)
    mask[0, 9] = 0
    assert not sheet_targets(ss, adj, mask)[0, :, 9].any()


def test_sheet_energy_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(0)
    L = 10
    x = torch.zeros(1, L, 3, dtype=torch.float64)
    x[0, :5, 0] = torch.arange(5) * 0.33
    x[0, 5:, 0] = (4 - torch.arange(5)) * 0.33
    x[0, 5:, 1] = 0.47  # a hairpin's two strands, 4.7 A apart
    x = x + 0.02 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    q = so3.random_quat((1, L), generator=g).double()
    ss = torch.tensor([[STRAND] * L])
    targets = sheet_targets(ss, torch.full((1, L, L), ADJACENT))
    mask = torch.ones(1, L, dtype=torch.float64)

    # with the helix and torsion terms too (the plan's middle four as a helix: two turns)
    plan = torch.tensor([[STRAND] * 3 + [HELIX] * 4 + [STRAND] * 3])
    every = SheetTerms(helix=1.0, torsion=1.0)
    for terms, helix in ((SheetTerms(), None), (every, helix_turns(plan))):
        def energy(dx, w, terms=terms, helix=helix):
            return sheet_energy(x + dx, so3.quat_mul(q, so3.quat_exp(w)), targets, mask,
                                terms, helix)

        dx = torch.zeros_like(x, requires_grad=True)
        w = torch.zeros_like(x, requires_grad=True)
        assert torch.autograd.gradcheck(energy, (dx, w), eps=1e-6, atol=1e-4, rtol=1e-3)


@needs_data
def test_steering_reforms_the_sheets_of_perturbed_real_chains():
    """Rotate each residue of two real beta chains by about 20 degrees and move it 0.3 A:
    DSSP loses almost all their strands. Steering brings back most of them (with the torsion
    term; half of them without it), and mends most of the chain's broken bonds (3 in 4 or
    more; 4 in 5 without the torsion term, which trades a little bond length for beta
    phi/psi); without a plan, or with strength 0, nothing moves."""
    for name in ("1i8nA.pdb", "1dx5I.pdb"):
        atoms, topo = _real(name)
        trans, quats = _frames(atoms.float())
        g = torch.Generator().manual_seed(0)
        turn = 0.35 * torch.randn(quats.shape[:-1] + (3,), generator=g)
        noisy_q = so3.quat_normalize(so3.quat_mul(quats, so3.quat_exp(turn)))
        noisy_t = trans + 0.03 * torch.randn(trans.shape, generator=g)
        mask = torch.ones(1, len(topo))
        targets = sheet_targets(torch.from_numpy(topo.codes)[None],
                                torch.from_numpy(topo.adj)[None], mask)
        real, noisy = _strands(trans, quats), _strands(noisy_t, noisy_q)
        steered_t, steered_q = steer_sheets(noisy_t, noisy_q, targets, mask, iters=150)
        steered = _strands(steered_t, steered_q)
        assert real >= 15 and noisy <= real // 3
        assert steered >= 0.8 * real, (name, real, noisy, steered)
        assert _bonded(steered_t) > max(_bonded(noisy_t) + 0.3, 0.74)  # the chain term mends
        plain_t, plain_q = steer_sheets(noisy_t, noisy_q, targets, mask, iters=150,
                                        terms=SheetTerms(torsion=0.0))
        assert noisy + real // 3 <= _strands(plain_t, plain_q) < steered
        assert _bonded(plain_t) > 0.8
        # nothing to steer: no planned pairs, or no strength
        none = torch.zeros_like(targets)
        assert steer_sheets(noisy_t, noisy_q, none, mask)[0] is noisy_t
        assert steer_sheets(noisy_t, noisy_q, targets, mask, strength=0.0)[1] is noisy_q


@needs_data
def test_steering_reforms_the_helices_of_a_perturbed_real_chain():
    """The same perturbation on a mostly helical chain: pydssp keeps less than half of its
    helix. The planned helices' i -> i+4 H-bonds alone bring back at least half of what was
    lost, and the default terms (with phi/psi held alpha) all but 3 residues of it."""
    atoms, topo = _real("1pdoA.pdb")
    trans, quats = _frames(atoms.float())
    g = torch.Generator().manual_seed(0)
    turn = 0.35 * torch.randn(quats.shape[:-1] + (3,), generator=g)
    noisy_q = so3.quat_normalize(so3.quat_mul(quats, so3.quat_exp(turn)))
    noisy_t = trans + 0.03 * torch.randn(trans.shape, generator=g)
    L = len(topo)
    mask = torch.ones(1, L)
    turns = helix_turns(torch.from_numpy(topo.codes)[None], mask)
    none = torch.zeros(1, L, L, dtype=torch.bool)  # no strand pairs: helices only

    def helix(t, q):
        return int(pydssp_torch.assign(backbone_from_frames(Rigid(q, t * 10.0))[0])[:, 1].sum())

    real, noisy = helix(trans, quats), helix(noisy_t, noisy_q)
    assert real >= 50 and noisy < real / 2

    def steered(terms):
        return helix(*steer_sheets(noisy_t, noisy_q, none, mask, iters=150, helix=turns,
                                   terms=terms))

    bonds_only = steered(SheetTerms(helix=1.0, torsion=0.0))
    assert bonds_only >= noisy + (real - noisy) // 2
    assert steered(SheetTerms()) >= real - 3
    # the helix and torsion weights off: nothing to steer, nothing moves; the torsion weight
    # alone still holds the helices' phi/psi
    assert steer_sheets(noisy_t, noisy_q, none, mask, helix=turns,
                        terms=SheetTerms(helix=0.0, torsion=0.0))[0] is noisy_t
    assert steered(SheetTerms(helix=0.0)) > noisy


def test_designs_of_a_batch_steer_independently():
    """A design whose plan has no strand pair and no helix is not moved, whatever its
    batch-mates' plans; a design's steering is the same alone and in a batch."""
    L = 10
    x = torch.zeros(2, L, 3)
    x[:, :5, 0] = torch.arange(5) * 0.33
    x[:, 5:, 0] = (4 - torch.arange(5)) * 0.33
    x[:, 5:, 1] = 0.6
    q = so3.random_quat((2, L), generator=torch.Generator().manual_seed(3))
    ss = torch.tensor([[STRAND] * L, [LOOP] * L])
    targets = sheet_targets(ss, torch.full((2, L, L), ADJACENT))
    mask = torch.ones(2, L)
    turns = helix_turns(ss, mask)
    y, r = steer_sheets(x, q, targets, mask, iters=5, helix=turns)
    assert torch.equal(y[1], x[1]) and torch.equal(r[1], q[1])
    helical = helix_turns(torch.tensor([[LOOP] * L, [HELIX] * L]), mask)
    assert not torch.equal(steer_sheets(x, q, targets, mask, iters=5, helix=helical)[0][1], x[1])
    alone_y, alone_r = steer_sheets(x[:1], q[:1], targets[:1], mask[:1], iters=5,
                                    helix=turns[:1])
    torch.testing.assert_close(y[:1], alone_y)
    torch.testing.assert_close(r[:1], alone_r)


def test_frozen_residues_do_not_move_and_the_schedule_has_a_late_phase():
    L = 10
    x = torch.zeros(1, L, 3)
    x[0, :5, 0] = torch.arange(5) * 0.33
    x[0, 5:, 0] = (4 - torch.arange(5)) * 0.33
    x[0, 5:, 1] = 0.6
    q = so3.random_quat((1, L), generator=torch.Generator().manual_seed(1))
    targets = sheet_targets(torch.tensor([[STRAND] * L]), torch.full((1, L, L), ADJACENT))
    frozen = torch.zeros(1, L, dtype=torch.bool)
    frozen[0, :3] = True
    y, r = steer_sheets(x, q, targets, torch.ones(1, L), iters=5, frozen=frozen)
    assert torch.equal(y[0, :3], x[0, :3]) and torch.equal(r[0, :3], q[0, :3])
    assert not torch.allclose(y[0, 3:], x[0, 3:])
    assert sheet_iters(SHEET_START - 0.01) == 0 and sheet_iters(SHEET_START) == SHEET_ITERS
    assert sheet_iters(0.99) == SHEET_LATE_ITERS > SHEET_ITERS


class _Hairpin(torch.nn.Module):
    """Predicts a fixed two-strand hairpin whatever the input (its rotations random, so no
    H-bonds): what sheet guidance has to fix."""

    def __init__(self):
        super().__init__()
        L = 10
        x = torch.zeros(1, L, 3)
        x[0, :5, 0] = torch.arange(5) * 0.33
        x[0, 5:, 0] = (4 - torch.arange(5)) * 0.33
        x[0, 5:, 1] = 0.48
        self.trans = x
        self.quats = so3.random_quat((1, L), generator=torch.Generator().manual_seed(2))
        self.calls: list[dict] = []

    def forward(self, trans, quats, t, mask, res_idx, sc, **plan):
        self.calls.append(plan)
        return {"trans": self.trans.expand_as(trans), "quats": self.quats.expand_as(quats)}


def test_sampling_steers_only_with_a_plan_and_a_strength():
    flow, L = ProteinFlow(), 10
    plan = torch.tensor([[STRAND] * L])
    cond = Condition(ss=plan, adj=torch.full((1, L, L), ADJACENT))

    def sample(strength, c):
        s = SamplerSettings(steps=6, sheet_guidance=strength).resolved(ProteinSampleConfig())
        return flow.sample(_Hairpin(), 1, L, s, cond=c,
                           generator=torch.Generator().manual_seed(0))

    plain, steered = sample(0.0, cond), sample(1.0, cond)
    # the oracle's hairpin has no H-bonds; the steered one bridges (DSSP: strand)
    assert _strands(plain.trans, plain.quats) == 0
    assert _strands(steered.trans, steered.quats) >= 2  # a bridge at least
    unplanned = sample(1.0, None)  # no plan: nothing to steer
    torch.testing.assert_close(unplanned.trans, plain.trans)
    torch.testing.assert_close(unplanned.quats, plain.quats)


def test_cli_sheet_guidance_needs_a_plan(tmp_path, capsys):
    out = tmp_path / "never"
    code = main(["protein", "design", "--no-plan", "--sheet-guidance", "1", "--num", "1",
                 "--steps", "2", "--out", str(out), "--no-progress"])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "--sheet-guidance" in err and "fold plan" in err and len(err.strip().splitlines()) == 1
    code = main(["protein", "design", "--ss", "LEEEEELLEEEEEL", "--sheet-guidance", "-1",
                 "--num", "1", "--steps", "2", "--out", str(out), "--no-progress"])
    assert code == 2 and not out.exists() and "--sheet-guidance" in capsys.readouterr().err
