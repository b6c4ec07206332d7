"""Backbone PDB / mmCIF writing: round trip through the parser, MODEL records, mkdssp."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

from flow3d.errors import DataError
from protein.data import parse_structure, shared_protein_dir
from protein.pdbio import write_backbone, write_backbone_cif, write_backbone_pdb

DATA = shared_protein_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="real data ../shared/data/proteins absent")


def _real_chain():
    return parse_structure(DATA / "ts50_pydssp" / "pdb" / "1ahsA.pdb").chains[0]


@needs_data
@pytest.mark.parametrize("suffix", [".pdb", ".cif"])
@pytest.mark.parametrize("residue", ["GLY", "ALA"])
def test_round_trip(tmp_path, suffix, residue):
    chain = _real_chain()
    path = write_backbone(tmp_path / f"design{suffix}", chain.coords, residue=residue)
    back = parse_structure(path).chains[0]
    assert len(back) == len(chain)
    assert back.sequence == ("G" if residue == "GLY" else "A") * len(chain)
    assert np.allclose(back.coords, chain.coords, atol=1e-3, equal_nan=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("models", [1, 3])
def test_biopython_reads_the_pdb_without_warnings(tmp_path, models):
    """Every record is one biopython knows (an unpadded END used to warn on each file)."""
    import warnings

    from Bio.PDB import PDBParser

    atoms = np.random.default_rng(0).normal(size=(models, 12, 4, 3)) * 5
    path = write_backbone_pdb(tmp_path / "x.pdb", atoms if models > 1 else atoms[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any PDBConstructionWarning fails the test
        structure = PDBParser().get_structure("x", str(path))
    assert len(structure) == models and len(list(structure[0].get_residues())) == 12


@needs_data
def test_pdb_records_and_alanine_cb(tmp_path):
    chain = _real_chain()
    path = write_backbone_pdb(tmp_path / "a.pdb", torch.tensor(chain.coords), residue="ALA")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("HEADER") and lines[1].startswith("CRYST1")
    assert lines[-1].rstrip() == "END"
    atoms = [ln for ln in lines if ln.startswith("ATOM")]
    assert all(len(ln) == 78 for ln in atoms)
    cb = np.array([[float(ln[30:38]), float(ln[38:46]), float(ln[46:54])]
                   for ln in atoms if ln[12:16] == " CB "])
    assert len(cb) == len(chain)
    assert np.allclose(np.linalg.norm(cb - chain.coords[:, 1], axis=-1), 1.527, atol=2e-3)


@needs_data
@pytest.mark.parametrize("suffix", [".pdb", ".cif"])
def test_per_residue_names_round_trip(tmp_path, suffix):
    """The chain's own sequence written back: names read back, a C-beta on all but GLY."""
    from protein.data.parse import ONE_TO_THREE

    chain = _real_chain()
    names = [ONE_TO_THREE.get(a, "GLY") for a in chain.sequence]
    path = write_backbone(tmp_path / f"seq{suffix}", chain.coords, residue=names)
    back = parse_structure(path).chains[0]
    assert back.sequence == "".join(a if a in ONE_TO_THREE else "G" for a in chain.sequence)
    assert np.allclose(back.coords, chain.coords, atol=1e-3, equal_nan=True)
    if suffix == ".pdb":
        cb = [ln for ln in path.read_text().splitlines() if ln[12:16] == " CB "]
        assert len(cb) == sum(n != "GLY" for n in names)
    with pytest.raises(ValueError, match="residue names for"):
        write_backbone(tmp_path / f"short{suffix}", chain.coords, residue=names[:-1])
    with pytest.raises(ValueError, match="not standard"):
        write_backbone(tmp_path / f"odd{suffix}", chain.coords, residue=["MSE"] * len(names))


def test_trajectory_as_models(tmp_path):
    g = np.random.default_rng(0)
    traj = g.normal(size=(3, 5, 4, 3)) * 5
    path = write_backbone_pdb(tmp_path / "traj.pdb", traj)
    text = path.read_text()
    assert text.count("MODEL ") == 3 and text.count("ENDMDL") == 3
    first = parse_structure(path, break_distance=np.inf).chains[0]
    assert np.allclose(first.coords, traj[0], atol=1e-3)
    cif = write_backbone_cif(tmp_path / "traj.cif", traj)
    back = parse_structure(cif, break_distance=np.inf).chains[0]
    assert np.allclose(back.coords, traj[0], atol=1e-3)


def test_missing_oxygen_is_left_out(tmp_path):
    atoms = np.random.default_rng(1).normal(size=(4, 4, 3)) * 5
    atoms[2, 3] = np.nan
    path = write_backbone_pdb(tmp_path / "o.pdb", atoms)
    assert sum(ln[12:16] == " O  " for ln in path.read_text().splitlines()) == 3


def test_bad_input(tmp_path):
    with pytest.raises(DataError, match="bad.pdb"):
        write_backbone_pdb(tmp_path / "bad.pdb", np.zeros((5, 3, 3)))
    nan = np.zeros((5, 4, 3))
    nan[1, 1] = np.nan
    with pytest.raises(DataError, match="not finite"):
        write_backbone_pdb(tmp_path / "nan.pdb", nan)
    with pytest.raises(ValueError):
        write_backbone_pdb(tmp_path / "x.pdb", np.zeros((5, 4, 3)), residue="TRP")
    assert not (tmp_path / "bad.pdb").exists()


@needs_data
@pytest.mark.skipif(shutil.which("mkdssp") is None, reason="mkdssp (apt package dssp) absent")
@pytest.mark.parametrize("suffix", [".pdb", ".cif"])
@pytest.mark.parametrize("named", [False, True])
def test_mkdssp_reads_our_files(tmp_path, suffix, named):
    from protein.data.parse import ONE_TO_THREE

    chain = _real_chain()
    names = [ONE_TO_THREE.get(a, "GLY") for a in chain.sequence] if named else "GLY"
    path = write_backbone(tmp_path / f"d{suffix}", chain.coords, residue=names)
    out = tmp_path / "d.dssp"
    proc = subprocess.run(["mkdssp", "--output-format", "dssp", str(path), str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("  #  RESIDUE"))
    ss = "".join(ln[16] for ln in lines[start + 1:] if ln[13] != "!")
    assert len(ss) == len(chain)
    assert "H" in ss or "E" in ss
