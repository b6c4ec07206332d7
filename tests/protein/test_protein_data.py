"""Parsing real, messy structure files and garbage input."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from flow3d.errors import DataError
from protein.data import find_structure_files, parse_structure, shared_protein_dir

DATA = shared_protein_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="real data ../shared/data/proteins absent")


def _pdb_lines(path) -> list[str]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return f.read().splitlines()


def _ca_lines(lines, chain=None):
    return [
        ln for ln in lines
        if ln.startswith("ATOM") and ln[12:16].strip() == "CA"
        and (chain is None or ln[21] == chain)
    ]


@needs_data
def test_single_chain_matches_raw_file():
    path = DATA / "ts50_pydssp" / "pdb" / "1ahsA.pdb"
    res = parse_structure(path)
    assert len(res.chains) == 1
    ch = res.chains[0]
    assert ch.coords.dtype == np.float32 and ch.coords.shape == (len(ch), 4, 3)
    ca = _ca_lines(_pdb_lines(path))
    assert len(ch) == len(ca)
    first = np.array([float(ca[0][30:38]), float(ca[0][38:46]), float(ca[0][46:54])])
    assert np.allclose(ch.coords[0, 1], first, atol=1e-3)
    assert ch.name == "1ahsA_A"
    assert set(ch.sequence) <= set("ARNDCQEGHILKMFPSTWYVX")


@needs_data
def test_several_chains_and_insertion_codes():
    path = DATA / "bm55_equidock" / "2FD6_r_u.pdb.gz"
    res = parse_structure(path)
    lines = _pdb_lines(path)
    chain_ids = {ln[21] for ln in _ca_lines(lines)}
    assert {c.chain_id for c in res.chains} == chain_ids
    icodes = [ic for c in res.chains for ic in c.insertion_codes if ic]
    assert icodes, "2FD6 has residues with insertion codes (e.g. 52A)"
    # every (chain, resseq, icode) with a CA appears exactly once
    keys = {(c.chain_id, int(n), ic) for c in res.chains
            for n, ic in zip(c.res_numbers, c.insertion_codes)}
    assert len(keys) == sum(len(c) for c in res.chains)


@needs_data
def test_altlocs_keep_highest_occupancy():
    path = DATA / "bm55_equidock" / "1US7_l_u.pdb.gz"
    lines = _pdb_lines(path)
    alt = [ln for ln in _ca_lines(lines) if ln[16] != " "]
    assert alt
    # group the CA alternatives of one residue, pick the highest occupancy (first on ties)
    key = (alt[0][21], int(alt[0][22:26]), alt[0][26].strip())
    group = [ln for ln in alt if (ln[21], int(ln[22:26]), ln[26].strip()) == key]
    best = max(group, key=lambda ln: float(ln[54:60]))
    want = np.array([float(best[30:38]), float(best[38:46]), float(best[46:54])])
    res = parse_structure(path)
    ch = next(c for c in res.chains if c.chain_id == key[0])
    i = next(i for i, (n, ic) in enumerate(zip(ch.res_numbers, ch.insertion_codes))
             if (n, ic) == key[1:])
    assert np.allclose(ch.coords[i, 1], want, atol=1e-3)


@needs_data
def test_hydrogens_and_hetatm_are_ignored():
    path = DATA / "kortemme_loop_modeling" / "12_res" / "rcsb" / "reference" / "1rcf.pdb.gz"
    lines = _pdb_lines(path)
    assert any(ln.startswith("ATOM") and ln[76:78].strip() == "H" for ln in lines)
    res = parse_structure(path)
    n_ca = len(_ca_lines(lines))
    assert sum(len(c) for c in res.chains) == n_ca
    assert all(np.isfinite(c.coords[:, :3]).all() for c in res.chains)


@needs_data
def test_selenomethionine_kept_as_x_and_waters_dropped():
    path = DATA / "bm55_equidock" / "3CPH_l_u.pdb.gz"
    lines = _pdb_lines(path)
    mse = [ln for ln in lines if ln.startswith("HETATM") and ln[17:20] == "MSE"]
    n_mse = len({(ln[21], ln[22:27]) for ln in mse})
    assert n_mse > 0
    res = parse_structure(path)
    seq = "".join(c.sequence for c in res.chains)
    assert seq.count("X") >= n_mse
    n_standard = len(_ca_lines(lines))
    assert sum(len(c) for c in res.chains) == n_standard + seq.count("X")


def _write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


@needs_data
def test_first_model_only(tmp_path):
    src = [ln for ln in _pdb_lines(DATA / "ts50_pydssp" / "pdb" / "1ahsA.pdb")
           if ln.startswith("ATOM")]
    shifted = [ln[:30] + f"{float(ln[30:38]) + 50:8.3f}" + ln[38:] for ln in src]
    path = _write(tmp_path, "nmr.pdb", ["MODEL        1", *src, "ENDMDL",
                                       "MODEL        2", *shifted, "ENDMDL", "END"])
    ch = parse_structure(path).chains[0]
    assert np.allclose(ch.coords[0, 1, 0], float(src[1][30:38]), atol=1e-3)


@needs_data
def test_missing_backbone_atom_drops_and_counts(tmp_path):
    src = [ln for ln in _pdb_lines(DATA / "ts50_pydssp" / "pdb" / "1ahsA.pdb")
           if ln.startswith("ATOM")]
    ca = _ca_lines(src)
    victim = ca[10]
    lines = [ln for ln in src if ln != victim]
    # also remove an O elsewhere: kept with NaN
    o_line = next(ln for ln in lines if ln[12:16].strip() == "O" and ln[22:26] == ca[30][22:26])
    lines.remove(o_line)
    res = parse_structure(_write(tmp_path, "gap.pdb", lines), break_policy="split")
    assert res.n_dropped_residues == 1
    assert len(res.chains) == 2  # dropping residue 11 breaks the chain there
    assert sum(len(c) for c in res.chains) == len(ca) - 1
    assert np.isnan(np.concatenate([c.coords[:, 3] for c in res.chains])).sum() == 3
    assert [c.segment for c in res.chains] == [0, 1]
    assert res.chains[1].name.endswith(".1")


@needs_data
def test_chain_break_policy(tmp_path):
    src = [ln for ln in _pdb_lines(DATA / "ts50_pydssp" / "pdb" / "1ahsA.pdb")
           if ln.startswith("ATOM")]
    resnums = sorted({int(ln[22:26]) for ln in src})
    cut = set(resnums[40:45])
    path = _write(tmp_path, "broken.pdb", [ln for ln in src if int(ln[22:26]) not in cut])
    split = parse_structure(path, break_policy="split")
    assert [len(c) for c in split.chains] == [40, len(resnums) - 45]
    assert split.n_dropped_residues == 0
    with pytest.raises(DataError, match="chain break"):
        parse_structure(path, break_policy="filter")
    short = parse_structure(path, min_length=50)
    assert len(short.chains) == 1 and "min_length" in short.skipped[0]
    with pytest.raises(ValueError):
        parse_structure(path, break_policy="bogus")


@needs_data
@pytest.mark.parametrize("gz", [False, True])
def test_mmcif_reads_like_pdb(tmp_path, gz):
    from Bio.PDB import MMCIFIO, PDBParser

    src = DATA / "ts50_pydssp" / "pdb" / "2cayA.pdb"
    structure = PDBParser(QUIET=True).get_structure("x", src)
    cif = tmp_path / "x.cif"
    io = MMCIFIO()
    io.set_structure(structure)
    io.save(str(cif))
    if gz:
        with open(cif, "rb") as f_in, gzip.open(tmp_path / "x.cif.gz", "wb") as f_out:
            shutil.copyfileobj(f_in, f_out)
        cif = tmp_path / "x.cif.gz"
    a = parse_structure(src).chains[0]
    b = parse_structure(cif).chains[0]
    assert a.sequence == b.sequence
    assert np.allclose(a.coords, b.coords, atol=1e-3, equal_nan=True)
    # content sniffing: a CIF file without its suffix
    plain = tmp_path / "noext"
    plain.write_bytes(gzip.decompress(cif.read_bytes()) if gz else cif.read_bytes())
    assert parse_structure(plain).chains[0].sequence == a.sequence


def test_garbage_input_gives_one_line_data_error(tmp_path):
    empty = tmp_path / "empty.pdb"
    empty.write_text("")
    text = tmp_path / "notes.pdb"
    text.write_text("this is not a structure\njust some words\n")
    trunc = tmp_path / "trunc.pdb.gz"
    trunc.write_bytes(gzip.compress(b"ATOM      1  N   ALA A   1      " * 200)[:60])
    binary = tmp_path / "blob.cif"
    binary.write_bytes(bytes(range(256)) * 4)
    badcif = tmp_path / "bad.cif"
    badcif.write_text("data_x\nloop_\n_atom_site.id\n_atom_site.Cartn_x\n1\n")
    for path in (empty, text, trunc, binary, badcif, tmp_path / "missing.pdb", tmp_path):
        with pytest.raises(DataError) as info:
            parse_structure(path)
        msg = str(info.value)
        assert path.name in msg and "\n" not in msg


def test_ligand_only_file_is_rejected(tmp_path):
    lines = [
        "HETATM    1  C1  LIG A   1       0.000   0.000   0.000  1.00  0.00           C",
        "HETATM    2  O   HOH A   2       3.000   0.000   0.000  1.00  0.00           O",
        "END",
    ]
    with pytest.raises(DataError, match="no usable protein chain"):
        parse_structure(_write(tmp_path, "lig.pdb", lines))


@needs_data
def test_every_real_file_parses_or_gives_a_reason():
    """A sample of every real subset: no crash; each file yields chains or a DataError."""
    files = find_structure_files(DATA)
    by_dir: dict[str, list] = {}
    for f in files:
        by_dir.setdefault(f.relative_to(DATA).parts[0], []).append(f)
    for group in by_dir.values():
        for f in group[:8]:
            try:
                res = parse_structure(f)
            except DataError as exc:
                assert f.name in str(exc)
                continue
            for c in res.chains:
                assert c.coords.shape == (len(c), 4, 3)
                assert np.isfinite(c.coords[:, :3]).all()
