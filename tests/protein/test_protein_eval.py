"""Design evaluation metrics, on synthetic chains with known answers and on real chains."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from flow3d.cli import main
from flow3d.errors import ConfigError, DataError
from protein.data import find_structure_files, parse_structure, shared_protein_dir
from protein.data.cache import build_cache
from protein.data.filters import FilterConfig
from protein.eval import evaluate_designs, greedy_clusters, run_eval
from protein.metrics import (
    ca_ca_distances,
    count_clashes,
    count_tight_local,
    valid_strand_fraction,
)
from protein.pdbio import write_backbone_pdb
from protein.settings import EvalSettings

DATA = shared_protein_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="real data ../shared/data/proteins absent")


def _line(n: int, spacing: float) -> np.ndarray:
    """A straight backbone [n, 4, 3] with CA spacing ``spacing`` (N, C, O offset slightly)."""
    ca = np.zeros((n, 3))
    ca[:, 0] = np.arange(n) * spacing
    offsets = np.array([[-0.5, 1.0, 0.0], [0, 0, 0], [0.5, 1.0, 0.0], [0.5, 2.0, 0.0]])
    return ca[:, None] + offsets[None]


def test_tight_local_pairs_known_answers():
    """CA pairs 2-4 apart under 4.2 A: none in an ideal helix (5.4 / 5.0 / 6.2 A), all 3- and
    4-apart pairs of one wound to a 0.9 A rise (3.6 / 3.7 A)."""
    def helix(rise):
        turn = np.deg2rad(100.0)
        r = np.sqrt(3.8**2 - rise**2) / (2 * np.sin(turn / 2))
        k = np.arange(12)
        return np.stack([r * np.cos(k * turn), r * np.sin(k * turn), rise * k], -1)

    assert count_tight_local(helix(1.5)) == (0, 10 + 9 + 8)
    assert count_tight_local(helix(0.9)) == (9 + 8, 10 + 9 + 8)
    assert count_tight_local(helix(1.5)[:2]) == (0, 0)  # no pair that far apart


def test_ca_ca_and_clashes_known_answers():
    straight = _line(10, 3.8)[:, 1]
    assert np.allclose(ca_ca_distances(straight), 3.8)
    assert count_clashes(straight) == 0
    squashed = _line(10, 1.0)[:, 1]
    # pairs with |i-j| >= 2 and distance < 3: only |i-j| == 2 (2.0 A): 8 of them
    assert count_clashes(squashed) == 8
    assert count_clashes(squashed, min_separation=3) == 0  # |i-j| = 3 is exactly 3.0 A


def test_valid_strand_fraction_known_answers():
    # two antiparallel CA lines (a hairpin without its turn) 4.8 A apart: true strand partners
    one = _line(6, 3.4)[:, 1]
    paired = np.concatenate([one, one[::-1] + [0.0, 4.8, 0.0]])  # [12, 3]
    assert valid_strand_fraction("E" * 12, paired) == 1.0
    assert valid_strand_fraction("-" + "E" * 10 + "-", paired) == 10 / 12
    assert valid_strand_fraction("H" * 12, paired) == 0.0
    # the same segments passing through each other (1.5 A apart): DSSP-like labels, not strands
    overlapping = np.concatenate([one, one[::-1] + [0.0, 1.5, 0.0]])
    assert valid_strand_fraction("E" * 12, overlapping) == 0.0
    # one residue pushed onto its partner spoils both ends of that pair only
    bent = paired.copy()
    bent[0] = paired[11] + [-1.0, 0.0, 1.0]  # 1.4 A from residue 11, 4.5 A from 10
    assert valid_strand_fraction("E" * 12, bent) == 10 / 12
    with pytest.raises(ValueError, match="12 residues"):
        valid_strand_fraction("E" * 12, paired[:5])


def test_greedy_clusters():
    sim = np.eye(5)
    sim[0, 1] = sim[1, 0] = sim[1, 2] = sim[2, 1] = 0.8  # 0-1-2 chain around centre 1
    clusters = greedy_clusters(sim, 0.5)
    assert sorted(map(sorted, clusters)) == [[0, 1, 2], [3], [4]]
    assert len(greedy_clusters(np.ones((4, 4)))) == 1


@pytest.fixture(scope="module")
def design_dir(tmp_path_factory):
    """Three real chains written as poly-GLY designs plus one squashed, clashing design."""
    if DATA is None:
        pytest.skip("real data ../shared/data/proteins absent")
    out = tmp_path_factory.mktemp("designs")
    files = find_structure_files(DATA / "kortemme_covariation")[:3]
    for f in files:
        chain = parse_structure(f).chains[0]
        write_backbone_pdb(out / f"{f.name.split('.')[0]}.pdb", chain.coords)
    write_backbone_pdb(out / "squashed.pdb", _line(60, 1.2))
    (out / "timings.json").write_text(json.dumps({"squashed.pdb": 0.5}))
    (out / "junk.pdb").write_text("not a protein\n")
    return out, files


@needs_data
def test_evaluate_designs_real_and_broken(design_dir, tmp_path):
    folder, files = design_dir
    reference = tmp_path / "reference"
    reference.mkdir()
    for f in files[:2]:
        shutil.copy(f, reference / f.name)
    warnings = []
    rows, summary = evaluate_designs(EvalSettings(str(folder), str(reference), max_reference=0),
                                     progress=False, warn=warnings.append)
    by_name = {r["name"]: r for r in rows}
    assert len(rows) == 4 and any("junk.pdb" in e for e in summary["unreadable"])
    assert len(warnings) == 1 and "skipped" in warnings[0] and "junk.pdb" in warnings[0]
    bad = by_name["squashed"]
    assert bad["ca_ca_valid_fraction"] == 0.0 and bad["n_clashes"] > 0
    # CAs 1.2 A apart: pairs 2 / 3 / 4 apart at 2.4 / 3.6 / 4.8 A, the first two tight
    assert (bad["n_tight_local"], bad["n_local"]) == (58 + 57, 58 + 57 + 56)
    assert bad["time_s"] == 0.5 and summary["time_per_design_s"] == 0.5
    real = [r for n, r in by_name.items() if n != "squashed"]
    assert bad["strand_valid"] == 0.0  # its spurious DSSP labels never count as strand
    for r in real:
        assert r["ca_ca_valid_fraction"] > 0.95 and r["n_clashes"] == 0
        assert r["strand_valid"] == r["strand"]  # every real strand residue has room
        assert 0.3 < r["helix_strand"] <= 1.0
        assert 0.8 < r["rg_ratio"] < 1.3
        assert r["n_tight_local"] <= 1 and r["n_local"] == 3 * r["length"] - 9
    pairs = sum(r["n_local"] for r in rows)
    assert summary["tight_local_fraction"] == sum(r["n_tight_local"] for r in rows) / pairs
    # the first two designs are copies of the references: novelty TM ~ 1
    copied = by_name[files[0].name.split(".")[0]]
    assert copied["novelty_tm"] > 0.99
    ref_len = [len(parse_structure(f).chains[0]) for f in files[:2]]
    window = sum(0.5 * copied["length"] <= n <= 2 * copied["length"] for n in ref_len)
    assert copied["novelty_n_compared"] == window
    assert summary["diversity"]["n_used"] == 4
    assert 0.0 < summary["diversity"]["mean_pairwise_tm"] < 0.6
    assert summary["reference"]["n"] == 2
    assert summary["reference"]["ca_ca_valid_fraction"] > 0.95


@needs_data
def test_run_eval_writes_outputs_and_reads_cache(design_dir, tmp_path):
    folder, files = design_dir
    cache = tmp_path / "cache"
    build_cache(files, cache, FilterConfig(min_len=40, max_coil_fraction=None, rg_quantile=None),
                progress=False)
    out = tmp_path / "eval"
    summary = run_eval(EvalSettings(str(folder), str(cache), str(out), max_reference=2),
                       progress=False)
    for name in ("designs.csv", "reference.csv", "summary.json", "ca_ca_hist.png",
                 "ca_i3_hist.png", "rg_vs_length.png", "ss_fractions.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["n"] == summary["n"] == 4
    assert on_disk["novelty"]["max_reference_per_design"] == 2
    with open(out / "designs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert {"ca_ca_valid_fraction", "strand_valid", "novelty_tm"} <= set(rows[0])
    # the cache itself can be evaluated as a design set (real data side by side)
    rows, summary = evaluate_designs(EvalSettings(str(cache)), progress=False)
    assert summary["n"] == 3 and "reference" not in summary
    # a second run into the same folder is refused unless it may replace it
    with pytest.raises(DataError, match="--overwrite"):
        run_eval(EvalSettings(str(folder), out=str(out)), progress=False)
    (out / "stale.txt").write_text("from an earlier run")
    run_eval(EvalSettings(str(folder), out=str(out)), overwrite=True, progress=False)
    assert not (out / "stale.txt").exists() and not (out / "reference.csv").exists()


@pytest.mark.skipif(shutil.which("mkdssp") is None, reason="mkdssp (apt package dssp) absent")
@needs_data
def test_mkdssp_and_pydssp_agree_roughly(design_dir):
    folder, _ = design_dir
    rows_p, _ = evaluate_designs(EvalSettings(str(folder), ss_method="pydssp",
                                              max_diversity=2), progress=False)
    rows_m, s_m = evaluate_designs(EvalSettings(str(folder), ss_method="mkdssp",
                                                max_diversity=2), progress=False)
    assert s_m["ss_method"] == "mkdssp"
    for a, b in zip(rows_p, rows_m):
        if a["name"] != "squashed":  # unphysical geometry: pydssp sees spurious H-bonds there
            assert abs(a["helix_strand"] - b["helix_strand"]) < 0.15


@needs_data
def test_pymol_dss_agrees_with_dssp_on_real_chains(design_dir, monkeypatch):
    """``--ss-method pymol`` runs PyMOL's dss (issue 18 compares its helix calls with DSSP's:
    on real chains they agree, on loose model helices PyMOL calls fewer)."""
    import protein.eval as ev

    folder, _ = design_dir
    if ev.pymol_python() is None:
        with pytest.raises(DataError, match="--ss-method pymol: PyMOL is not installed"):
            evaluate_designs(EvalSettings(str(folder), ss_method="pymol"), progress=False)
        pytest.skip("PyMOL (apt package pymol) absent")
    rows_y, s_y = evaluate_designs(EvalSettings(str(folder), ss_method="pymol",
                                                max_diversity=2), progress=False)
    rows_p, _ = evaluate_designs(EvalSettings(str(folder), ss_method="pydssp",
                                              max_diversity=2), progress=False)
    assert s_y["ss_method"] == "pymol"
    real = [(a, b) for a, b in zip(rows_y, rows_p) if a["name"] != "squashed"]
    assert real and all(a["helix"] + a["strand"] > 0.2 for a, _ in real)
    for a, b in real:
        assert abs(a["helix"] - b["helix"]) < 0.1 and abs(a["strand"] - b["strand"]) < 0.15
    # a missing PyMOL is a one-line error naming the option, before any work
    monkeypatch.setattr(ev, "pymol_python", lambda: None)
    with pytest.raises(DataError, match="--ss-method pymol: PyMOL is not installed"):
        evaluate_designs(EvalSettings(str(folder), ss_method="pymol"), progress=False)


def test_eval_errors(tmp_path):
    with pytest.raises(DataError, match="no PDB/mmCIF"):
        evaluate_designs(EvalSettings(str(tmp_path)), progress=False)
    with pytest.raises(DataError, match="no such file"):
        evaluate_designs(EvalSettings(str(tmp_path / "missing")), progress=False)
    (tmp_path / "bad.pdb").write_text("garbage\n")
    with pytest.raises(DataError, match="no readable design"):
        evaluate_designs(EvalSettings(str(tmp_path)), progress=False)
    with pytest.raises(ConfigError, match="--ss-method"):
        EvalSettings(str(tmp_path), ss_method="stride")


@needs_data
def test_cli_eval_prints_the_table_and_what_it_skipped(design_dir, tmp_path, capsys):
    folder, files = design_dir
    out = tmp_path / "ev"
    rc = main(["protein", "eval", str(folder), "--reference", str(files[0]), "--out", str(out),
               "--max-reference", "1", "--no-progress"])
    assert rc == 0 and (out / "summary.json").is_file()
    printed = capsys.readouterr()
    assert "CA-CA" in printed.out and "median novelty TM" in printed.out
    assert "seconds per design" in printed.out
    skipped = [ln for ln in printed.err.splitlines() if "skipped" in ln]
    assert len(skipped) == 1 and "junk.pdb" in skipped[0] and skipped[0].startswith("flow3d:")
