"""Motif scaffolding: segment specs, motif files, superposition, and designs that hold a motif."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flow3d.cli import main
from flow3d.core import so3
from flow3d.errors import ConfigError, DataError
from protein.constants import NM_TO_ANG
from protein.flow import ProteinFlow
from protein.geometry import Rigid, backbone_from_frames, superimpose
from protein.motif import load_motif, motif_metrics, parse_segments
from protein.pdbio import write_backbone_pdb


@pytest.fixture(scope="module")
def source_pdb(tmp_path_factory) -> Path:
    """A 40-residue backbone drawn by the bundled default and written as chain B, residues
    1..40 (so the tests need no shared data)."""
    from protein.design import load_designer

    d = load_designer().sample(1, seed=3, lengths=(40,), steps=10)[0]
    return write_backbone_pdb(tmp_path_factory.mktemp("motif") / "src.pdb", d.atoms, chain="B")


def test_parse_segments_and_errors():
    segs = parse_segments("A10-25@30, B5@60")
    assert [(s.chain, s.first, s.last, s.at, len(s)) for s in segs] == [
        ("A", 10, 25, 30, 16), ("B", 5, 5, 60, 1)]
    assert str(segs[0]) == "A10-25@30"
    ranged = parse_segments("A10-25@20-40,B1-3@57")
    assert str(ranged[0]) == "A10-25@20-40" and ranged[0].last_start == 40
    for bad, msg in (("A10-25", "expected CHAIN"), ("A25-10@3", "before the first"),
                     ("A1-5@0", "start at 1"), ("A1-5@10,B1-3@12", "overlap"),
                     ("A1-5@10-8", "range ends before"), ("A1-5@1-10,B1-3@12", "overlap")):
        with pytest.raises(ConfigError, match=msg):
            parse_segments(bad)


@pytest.mark.parametrize("shape", [(7, 3), (4, 9, 3), (2, 3, 5, 3)])
def test_superimpose_recovers_a_rigid_motion(shape):
    g = torch.Generator().manual_seed(0)
    src = torch.randn(*shape, dtype=torch.float64, generator=g)
    batch = shape[:-2]
    rot = so3.quat_to_rotmat(so3.random_quat(batch, generator=g).double())
    shift = torch.randn(*batch, 3, dtype=torch.float64, generator=g)
    dst = src @ rot.transpose(-1, -2) + shift[..., None, :]
    r, t = superimpose(src, dst)
    torch.testing.assert_close(r, rot)
    torch.testing.assert_close(t, shift)
    # a mirror image has no proper superposition: the answer stays a rotation, with residue
    mirrored = dst * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    r, t = superimpose(src, mirrored)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(batch, dtype=torch.float64))
    assert (src @ r.transpose(-1, -2) + t[..., None, :] - mirrored).abs().max() > 0.1
    with pytest.raises(ValueError, match="N >= 3"):
        superimpose(src[..., :2, :], dst[..., :2, :])


def test_load_motif_frames_rebuild_the_segments(source_pdb):
    motif = load_motif(source_pdb, "B21-30@41,B3-8@5")
    assert len(motif) == 16 and motif.min_length == 50 and motif.spec == "B21-30@41,B3-8@5"
    assert motif.positions.tolist() == [*range(4, 10), *range(40, 50)]  # sorted by position
    assert abs(float(motif.trans.mean(0).abs().max())) < 1e-6  # centred, nm
    rebuilt = backbone_from_frames(Rigid(motif.quats.double(), motif.trans.double() * NM_TO_ANG))
    ref = torch.from_numpy(motif.atoms[:, :3]).double()
    ref = ref - ref[:, 1].mean(0)
    # N, CA, C from ideal geometry: the file's own backbone was ideal too
    assert float((rebuilt[:, :3] - ref).norm(dim=-1).max()) < 0.05
    with pytest.raises(ConfigError, match="at least 50 residues"):
        motif.check_length(49)


def test_load_motif_errors_name_the_file(source_pdb, tmp_path):
    with pytest.raises(DataError, match="residue B41 is missing"):
        load_motif(source_pdb, "B35-41@1")
    with pytest.raises(DataError, match=r"no protein chain 'A'.*chains: B"):
        load_motif(source_pdb, "A1-5@1")
    with pytest.raises(ConfigError, match="at least 3 residues"):
        load_motif(source_pdb, "B5-6@1")
    with pytest.raises(DataError, match="motif file not found"):
        load_motif(tmp_path / "nope.pdb", "A1-5@1")


def test_place_motif_is_one_rigid_motion_of_the_motif(source_pdb):
    motif = load_motif(source_pdb, "B5-14@3")
    g = torch.Generator().manual_seed(1)
    trans = torch.randn(3, 20, 3, generator=g)
    quats = so3.random_quat((3, 20), generator=g)
    new_t, new_q = ProteinFlow.place_motif(trans, quats, motif)
    pos = motif.positions
    rest = torch.ones(20, dtype=torch.bool)
    rest[pos] = False
    assert torch.equal(new_t[:, rest], trans[:, rest])
    assert torch.equal(new_q[:, rest], quats[:, rest])
    r, t = superimpose(motif.trans.expand(3, -1, -1), new_t[:, pos])
    placed = motif.trans @ r.transpose(-1, -2) + t[:, None]
    torch.testing.assert_close(placed, new_t[:, pos], atol=1e-5, rtol=0)
    # every motif frame turned by the same rotation
    rel = so3.quat_to_rotmat(new_q[:, pos]) @ so3.quat_to_rotmat(motif.quats).transpose(-1, -2)
    torch.testing.assert_close(rel, r[:, None].expand_as(rel), atol=1e-5, rtol=0)
    # a prediction that already holds the motif is left as it is
    again_t, again_q = ProteinFlow.place_motif(new_t, new_q, motif)
    torch.testing.assert_close(again_t, new_t, atol=1e-5, rtol=0)
    torch.testing.assert_close(so3.quat_to_rotmat(again_q), so3.quat_to_rotmat(new_q),
                               atol=1e-5, rtol=0)


def test_bundled_default_scaffolds_a_motif(source_pdb):
    """Designs around a motif keep it (up to the ideal N/C rebuild) and connect to it: the
    junction CA-CA distances are bond-like (0.94-1.00 within 3.8 +/- 0.2 A on five TS50
    motifs at 50 steps; docs/benchmarks.md, quality_motif)."""
    from protein.design import load_designer

    motif = load_motif(source_pdb, "B10-22@15")
    designs = load_designer().sample(4, seed=0, lengths=(50,), steps=20, motif=motif)
    metrics = [motif_metrics(d.atoms, motif) for d in designs]
    assert all(m["motif_rmsd"] < 0.1 for m in metrics)
    junctions = np.concatenate([m["junction_ca_ca"] for m in metrics])
    assert len(junctions) == 8 and (np.abs(junctions - 3.8) <= 0.2).mean() >= 0.75
    scaffolds = np.stack([d.atoms[:14, 1] for d in designs])
    assert np.ptp(scaffolds, axis=0).max() > 1.0  # the scaffold is generated, not copied
    with pytest.raises(ConfigError, match="at least 27 residues"):
        load_designer().sample(1, lengths=(26,), steps=2, motif=motif)


def test_cli_design_with_motif(source_pdb, tmp_path, capsys):
    out = tmp_path / "m"
    rc = main(["protein", "design", "--length", "45", "--num", "2", "--steps", "10",
               "--motif", str(source_pdb), "--motif-segments", "B3-12@20", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    record = json.loads((out / "motif.json").read_text())
    assert record["segments"] == "B3-12@20" and record["positions"] == list(range(20, 30))
    assert record["sequence"] == "G" * 10  # the source file is poly-GLY
    assert set(record["designs"]) == {"len045_000", "len045_001"}
    assert record["mean"]["motif_rmsd"] < 0.1
    assert "motif B3-12@20" in capsys.readouterr().out
    # eval of that folder reports the motif too; a broken motif.json is a one-line error
    assert main(["protein", "eval", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["motif"]["segments"] == "B3-12@20" and summary["motif"]["n"] == 2
    assert "motif B3-12@20: RMSD" in capsys.readouterr().out
    (out / "motif.json").write_text('{"designs": 3}')
    assert main(["protein", "eval", str(out), "--overwrite", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "motif.json: not a motif record" in err and len(err.splitlines()) == 1
    for args, msg in ((["--motif-segments", "B3-12@40"], "at least 49 residues"),
                      (["--motif-segments", "B3-12"], "expected CHAIN"),
                      ([], "go together")):
        bad = tmp_path / "bad"
        rc = main(["protein", "design", "--length", "45", "--motif", str(source_pdb), *args,
                   "--out", str(bad), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and msg in err and len(err.splitlines()) == 1
        assert not bad.exists()


def test_protein_demo_scaffolds_the_bundled_hairpin(tmp_path):
    from protein.design import DEMO_MOTIF, demo

    assert DEMO_MOTIF[0].is_file()  # shipped in examples/protein, no shared data needed
    summary = demo(tmp_path, num=1, lengths=(40,), steps=5, progress=False)
    record = json.loads((tmp_path / "motif" / "motif.json").read_text())
    assert record["sequence"] == "VIKEKNMYGKQVLGIE" and record["positions"][0] == 30
    assert summary["motif"] == record["mean"] and record["mean"]["motif_rmsd"] < 0.1
    assert (tmp_path / "eval" / "summary.json").is_file()


def test_motif_sampling_runs_more_guidance_iterations(source_pdb, monkeypatch):
    """Clash guidance takes sample.guidance_iters steps per evaluation (the bundled
    default's: 30), and sample.motif_guidance_iters (30) when a motif is scaffolded; both can
    be overridden, each only for its own case."""
    from protein.design import load_designer

    seen = []
    real = ProteinFlow.steer_clashes

    def spy(trans, mask, strength, **kw):
        seen.append(kw["iters"])
        return real(trans, mask, strength, **kw)

    monkeypatch.setattr(ProteinFlow, "steer_clashes", staticmethod(spy))
    loaded = load_designer()
    motif = load_motif(source_pdb, "B1-8@3")
    for kwargs, iters in (({}, 30), ({"motif": motif}, 30), ({"guidance_iters": 4}, 4),
                          ({"motif_guidance_iters": 5}, 30),
                          ({"motif": motif, "motif_guidance_iters": 5}, 5)):
        seen.clear()
        loaded.sample(1, lengths=(20,), steps=3, **kwargs)
        assert seen and set(seen) == {iters}
    with pytest.raises(ConfigError, match="at least 1"):
        loaded.sample(1, lengths=(20,), steps=3, guidance_iters=0)


def test_ranged_segments_draw_a_placement_per_design(source_pdb, tmp_path):
    """``B3-8@5-12`` puts the segment's start anywhere in 5..12 (1-based), per design; the
    fixed segment stays put; every design holds the motif at its own positions."""
    motif = load_motif(source_pdb, "B20-27@30,B3-8@5-12")
    assert not motif.placed and motif.min_length == 37
    draws = motif.draw_positions(200, torch.Generator().manual_seed(0))  # [200, 14]
    starts = draws[:, 0] + 1
    assert set(starts.tolist()) == set(range(5, 13))
    assert torch.equal(draws[:, :6] - draws[:, :1], torch.arange(6).expand(200, -1))
    assert torch.equal(draws[:, 6:], motif.positions[6:].expand(200, -1))  # B20-27@30 fixed
    again = motif.draw_positions(200, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)

    out = tmp_path / "ranged"
    assert main(["protein", "design", "--length", "45", "--num", "4", "--steps", "10",
                 "--motif", str(source_pdb), "--motif-segments", "B20-27@30,B3-8@5-12",
                 "--out", str(out), "--no-progress"]) == 0
    record = json.loads((out / "motif.json").read_text())
    assert record["positions"] is None
    firsts = []
    for m in record["designs"].values():
        assert m["motif_rmsd"] < 0.1 and len(m["positions"]) == 14
        assert m["positions"][6:] == list(range(30, 38))
        firsts.append(m["positions"][0])
    assert all(5 <= f <= 12 for f in firsts) and len(set(firsts)) > 1


def test_designs_carry_the_motif_residue_names(tmp_path):
    """The written files name the motif residues as in the motif file (GLY elsewhere), so a
    sequence designer can keep them fixed."""
    from protein.data import parse_structure
    from protein.design import DEMO_MOTIF, design
    from protein.settings import DesignSettings, SamplerSettings

    settings = DesignSettings(lengths=(40,), num=2, sampler=SamplerSettings(steps=5),
                              motif=str(DEMO_MOTIF[0]), motif_segments="A107-122@5-20")
    report = design(settings, tmp_path / "d")
    for d in report.designs:
        back = parse_structure(tmp_path / "d" / f"{d.name}.pdb", break_distance=np.inf)
        seq = back.chains[0].sequence
        start = int(d.motif_positions[0])
        assert seq[start:start + 16] == "VIKEKNMYGKQVLGIE"
        assert set(seq[:start] + seq[start + 16:]) == {"G"}
