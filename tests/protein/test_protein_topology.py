"""Fold conditioning: plans from structures and strings, the trunk's plan inputs, condition
dropout, weights loaded into a model with a new branch, and designs that follow a plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flow3d.cli import main
from flow3d.engine.module import _load_weights
from flow3d.errors import ConfigError, DataError
from protein.data import shared_protein_dir
from protein.flow import FlowSettings, ProteinFlow
from protein.model.trunk import IPATrunk, TrunkConfig
from protein.topology import (
    ADJ_UNKNOWN,
    ADJACENT,
    HELIX,
    LOOP,
    NOT_ADJACENT,
    STRAND,
    UNKNOWN,
    Topology,
    draw_topologies,
    load_plans,
    load_topology,
    reference_topologies,
    save_plans,
    summarize_scores,
)

TINY = dict(num_blocks=2, node_dim=32, edge_dim=16, ipa_head_dim=8, num_heads=2,
            num_qk_points=4, num_v_points=4, seq_layers=1, seq_heads=2)


def hairpin_and_helix() -> tuple[str, np.ndarray]:
    """CA trace: strand 0-5, turn 6-7, strand 8-13 (antiparallel, 4.8 A apart), loop, and a
    helix-labelled run 20-27 far away."""
    ca = np.zeros((28, 3))
    ca[0:6, 0] = np.arange(6) * 3.3
    ca[6:8] = [[5 * 3.3 + 1.5, 2.4, 0.0], [5 * 3.3 + 1.5, 2.4, 0.0]]
    ca[8:14, 0] = (5 - np.arange(6)) * 3.3
    ca[8:14, 1] = 4.8
    ca[14:20] = ca[13] + np.arange(1, 7)[:, None] * [0.0, 0.0, 3.8]
    ca[20:28] = ca[19] + np.arange(1, 9)[:, None] * [0.0, 0.0, 1.5]
    ss = "EEEEEE--EEEEEE------HHHHHHHH"
    return ss, ca


def test_plan_from_secondary_structure_and_contacts():
    ss, ca = hairpin_and_helix()
    topo = Topology.from_ss(ss, ca, "toy")
    assert topo.string == "EEEEEELLEEEEEELLLLLLHHHHHHHH"
    assert topo.codes[0] == STRAND and topo.codes[6] == LOOP and topo.codes[25] == HELIX
    adj = topo.adj
    assert (adj == adj.T).all()
    assert (adj[0:6, 8:14] == ADJACENT).all()  # the two strands pair
    assert (adj[0:6, 20:28] == NOT_ADJACENT).all() and (adj[8:14, 20:28] == NOT_ADJACENT).all()
    assert (adj[0:6, 0:6] == NOT_ADJACENT).all()  # an element with itself
    assert (adj[6] == ADJ_UNKNOWN).all() and (adj[:, 15] == ADJ_UNKNOWN).all()  # loops
    # a lone strand residue is loop, not an element
    lone = Topology.from_ss("--E---", np.arange(18.0).reshape(6, 3), "x")
    assert lone.string == "LLLLLL" and (lone.adj == ADJ_UNKNOWN).all()


def test_plan_from_string_crop_mask_and_agreement():
    topo = Topology.from_string("hhhL-C?EE")
    assert topo.string == "HHHLLL?EE" and (topo.adj == ADJ_UNKNOWN).all()
    assert topo.codes[6] == UNKNOWN
    assert topo.agreement("HHH---EE-") == pytest.approx(7 / 8)  # "?" not counted
    sub = Topology.from_ss(*hairpin_and_helix()).crop(4, 10)
    assert len(sub) == 10 and sub.string == "EELLEEEEEE" and sub.adj[0, 5] == ADJACENT
    assert sub.masked().string == sub.string and (sub.masked().adj == ADJ_UNKNOWN).all()
    assert (sub.masked(keep_adjacency=False).codes == UNKNOWN).all()
    for bad in ("", "HHXE"):
        with pytest.raises(ConfigError, match="plan"):
            Topology.from_string(bad)
    with pytest.raises(ValueError, match="outside"):
        sub.crop(5, 6)
    with pytest.raises(ValueError, match="plan of 9"):
        topo.agreement("HHH")


def test_scores_tell_a_sheet_from_stacked_strands():
    ss, ca = hairpin_and_helix()
    topo = Topology.from_ss(ss, ca)
    good = topo.scores(ss, ca)
    assert good["agreement"] == 1.0 and good["strand_agreement"] == 1.0
    assert good["paired_strand_residues"] == 12 and good["partner_in_range"] == 1.0
    stacked = ca.copy()
    stacked[8:14, 1] = 1.5  # the second strand on top of the first
    bad = topo.scores("------" + ss[6:], stacked)
    assert bad["partner_in_range"] == 0.0 and bad["strand_agreement"] == 0.5
    assert bad["helix_agreement"] == 1.0
    none = Topology.from_string("HHHHLL").scores("HH----", np.zeros((6, 3)))
    assert none["paired_strand_residues"] == 0 and np.isnan(none["partner_in_range"])
    assert np.isnan(none["strand_agreement"]) and none["helix_agreement"] == 0.5
    mean = summarize_scores([good, bad, none])
    assert mean["n"] == 3 and mean["partner_in_range"] == 0.5  # weighted by residues
    assert mean["strand_agreement"] == 0.75  # NaN skipped


def test_draw_topologies_crops_seeded_plans():
    pool = [Topology.from_string("H" * 50 + "E" * 30), Topology.from_string("E" * 120),
            Topology.from_string("L" * 40)]
    a = draw_topologies(pool, 60, 5, np.random.default_rng(3))
    b = draw_topologies(pool, 60, 5, np.random.default_rng(3))
    assert [len(t) for t in a] == [60] * 5 and [t.string for t in a] == [t.string for t in b]
    assert all("L" not in t.string for t in a)  # the 40-residue chain is too short
    assert {t.source.split("[")[0] for t in a} == {"string"}
    with pytest.raises(DataError, match="no reference chain has 200"):
        draw_topologies(pool, 200, 1, np.random.default_rng(0))


def test_draw_topologies_prefers_chains_close_to_the_length():
    def pool(**counts):  # e.g. h70=12: twelve 70-residue helices
        return [Topology.from_string("H" * int(k[1:]), k) for k, n in counts.items()
                for _ in range(n)]

    def drawn(p):
        return {t.source.split("[")[0] for t in draw_topologies(p, 60, 200,
                                                                  np.random.default_rng(0))}

    assert drawn(pool(h70=12, h88=12, h200=5)) == {"h70"}  # up to 1.3x: enough of them
    assert drawn(pool(h70=5, h88=12, h200=5)) == {"h70", "h88"}  # too few: up to 1.5x
    assert drawn(pool(h70=3, h200=5)) == {"h70"}  # the widest span with any
    assert drawn(pool(h200=5)) == {"h200"}  # else every chain long enough


@pytest.mark.skipif(shared_protein_dir() is None, reason="needs ../shared/data/proteins")
def test_real_strands_have_partners_in_their_plan():
    folder = shared_protein_dir() / "ts50_pydssp" / "pdb"
    files = sorted(folder.glob("*.pdb"))[:12]
    strands = paired = 0
    for f in files:
        topo = load_topology(f)
        is_e = topo.codes == STRAND
        strands += int(is_e.sum())
        paired += int(((topo.adj == ADJACENT).any(1) & is_e).sum())
        assert (topo.adj == topo.adj.T).all()
    assert strands > 100
    assert paired / strands > 0.9  # strand residues sit in elements that pair with another
    with pytest.raises(DataError, match="no chain 'Z'"):
        load_topology(f"{files[0]}:Z")
    with pytest.raises(DataError, match="topology file not found"):
        load_topology(folder / "missing.pdb")


@pytest.mark.skipif(shared_protein_dir() is None, reason="needs ../shared/data/proteins")
def test_plan_library_round_trips_real_plans(tmp_path):
    folder = shared_protein_dir() / "ts50_pydssp" / "pdb"
    plans = [load_topology(f) for f in sorted(folder.glob("*.pdb"))[:10]]
    ss, ca = hairpin_and_helix()
    plans.append(Topology.from_ss(ss, ca, "toy"))  # short elements and a loop-only tail
    plans.append(Topology.from_string("L" * 20, "all loop"))
    path = tmp_path / "plans.npz"
    save_plans(plans, path)
    for how in (load_plans(path), reference_topologies(path)):
        assert len(how) == len(plans)
        for a, b in zip(plans, how, strict=True):
            assert a.source == b.source
            np.testing.assert_array_equal(a.codes, b.codes)
            np.testing.assert_array_equal(a.adj, b.adj)
    assert [t.source for t in reference_topologies(path, limit=3)] == [
        t.source for t in plans[:3]]
    assert path.stat().st_size < 200 * len(plans)  # elements and their pairs, not L^2


@pytest.mark.skipif(shared_protein_dir() is None, reason="needs ../shared/data/proteins")
def test_plans_of_compact_chains_and_the_cli_that_writes_them(tmp_path, capsys):
    from protein.data.structures import load_structures
    from protein.topology import rg_ratio

    folder = tmp_path / "chains"
    folder.mkdir()
    for f in sorted((shared_protein_dir() / "ts50_pydssp" / "pdb").glob("*.pdb"))[:12]:
        (folder / f.name).write_bytes(f.read_bytes())
    structures, _ = load_structures(folder)
    ratios = {s.name: rg_ratio(s.coords) for s in structures}
    cap = float(np.median(list(ratios.values())))
    kept = reference_topologies(folder, max_rg_ratio=cap)
    assert {t.source for t in kept} == {n for n, r in ratios.items() if r <= cap}
    assert 0 < len(kept) < len(structures)
    with pytest.raises(DataError, match="no chains .* with Rg at most 0.5x"):
        reference_topologies(folder, max_rg_ratio=0.5)
    out = tmp_path / "lib.npz"
    assert main(["protein", "plans", str(folder), "--out", str(out),
                 "--max-rg-ratio", str(cap)]) == 0
    assert [t.string for t in load_plans(out)] == [t.string for t in kept]
    assert f"{len(kept)} fold plans" in capsys.readouterr().out
    before = out.read_bytes()
    for args, says in ((["--out", str(out)], "file exists"),
                       (["--out", str(tmp_path / "lib.txt")], "unsupported extension"),
                       (["--out", str(out), "--overwrite", "--max-rg-ratio", "0.5"],
                        "no chains")):
        assert main(["protein", "plans", str(folder), *args]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == before and not (tmp_path / "lib.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chains", "lib.npz"]  # no leftovers


def test_plan_library_refuses_what_it_cannot_store_or_read(tmp_path):
    odd = Topology.from_string("EEEELLEEEE")  # adjacency unknown between strands: no elements
    with pytest.raises(ValueError, match="not one of elements"):
        save_plans([odd], tmp_path / "odd.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz: not a plan library"):
        load_plans(bad)


def test_trunk_plan_inputs_start_as_a_no_op_and_then_condition():
    torch.manual_seed(0)
    plain = IPATrunk(TrunkConfig(**TINY))
    with torch.no_grad():  # the backbone updates start at zero: give the output a say
        for block in plain.blocks:
            block["bb_update"].linear.weight.normal_(std=0.1)
    cond = IPATrunk(TrunkConfig(**TINY, topology=True))
    _load_weights(cond, plain.state_dict(), "test",
                  ("node_embed.ss_embed", "edge_embed.adj_embed"))
    g = torch.Generator().manual_seed(1)
    trans, quats = torch.randn(2, 12, 3, generator=g), torch.randn(2, 12, 4, generator=g)
    quats = quats / quats.norm(dim=-1, keepdim=True)
    t = torch.tensor([0.3, 0.8])
    ss = torch.randint(0, 4, (2, 12), generator=g)
    adj = torch.randint(0, 3, (2, 12, 12), generator=g)
    base = plain(trans, quats, t)["trans"]
    torch.testing.assert_close(cond(trans, quats, t, ss=ss, adj=adj)["trans"], base)
    with torch.no_grad():
        cond.node_embed.ss_embed.weight.normal_()
        cond.edge_embed.adj_embed.weight.normal_()
    unknown = cond(trans, quats, t, ss=torch.full_like(ss, UNKNOWN),
                   adj=torch.full_like(adj, ADJ_UNKNOWN))["trans"]
    torch.testing.assert_close(cond(trans, quats, t)["trans"], unknown)  # None = unknown
    assert (cond(trans, quats, t, ss=ss, adj=adj)["trans"] - unknown).abs().max() > 1e-3
    with pytest.raises(ValueError, match="without topology"):
        plain(trans, quats, t, ss=ss)
    with pytest.raises(ValueError, match="must be"):
        cond(trans, quats, t, ss=ss[:, :5])


def test_new_branch_prefixes_only_excuse_those_parameters():
    plain = IPATrunk(TrunkConfig(**TINY))
    cond = IPATrunk(TrunkConfig(**TINY, topology=True))
    with pytest.raises(DataError, match="init_from=x: weights do not match"):
        _load_weights(cond, plain.state_dict(), "init_from=x")
    with pytest.raises(DataError, match="weights do not match"):
        _load_weights(cond, plain.state_dict(), "init_from=x", ("node_embed.ss_embed",))
    weights = dict(plain.state_dict())
    weights.pop("node_embed.proj.weight")
    with pytest.raises(DataError, match="weights do not match"):
        _load_weights(cond, weights, "x", ("node_embed.ss_embed", "edge_embed.adj_embed"))


def test_condition_dropout_rates():
    flow = ProteinFlow(FlowSettings(topology_drop=0.3, adjacency_drop=0.2))
    ss = torch.zeros(4000, 3, dtype=torch.long)
    adj = torch.ones(4000, 3, 3, dtype=torch.long)
    out = flow.drop_topology(ss, adj, torch.Generator().manual_seed(0))
    hidden_all = (out["ss"] == UNKNOWN).all(1)
    hidden_adj = (out["adj"] == ADJ_UNKNOWN).all(-1).all(-1)
    assert abs(hidden_all.float().mean().item() - 0.3) < 0.03
    assert (hidden_adj[hidden_all]).all()  # no plan, no adjacency
    assert abs(hidden_adj[~hidden_all].float().mean().item() - 0.2) < 0.03
    assert (out["ss"][~hidden_all] == 0).all() and (out["adj"][~hidden_adj] == 1).all()


def test_dataset_items_carry_plans_and_collate_pads_them(tmp_path):
    from protein.data.dataset import collate_padded

    ss, ca = hairpin_and_helix()
    items = []
    for n in (28, 20):
        topo = Topology.from_ss(ss[:n], ca[:n])
        items.append({"trans": torch.zeros(n, 3), "quats": torch.zeros(n, 4),
                      "res_idx": torch.arange(n), "seq": torch.zeros(n, dtype=torch.long),
                      "length": n, "ss": torch.from_numpy(topo.codes),
                      "adj": torch.from_numpy(topo.adj)})
    batch = collate_padded(items)
    assert batch["ss"].shape == (2, 28) and batch["adj"].shape == (2, 28, 28)
    assert (batch["ss"][1, 20:] == UNKNOWN).all() and (batch["adj"][1, 20:] == ADJ_UNKNOWN).all()
    assert (batch["adj"][1, :, 20:] == ADJ_UNKNOWN).all()
    assert batch["adj"][1, 0, 8] == ADJACENT


def test_cli_designs_follow_a_plan(tmp_path, capsys):
    plan = "L" + "E" * 7 + "LL" + "E" * 7 + "LLL" + "H" * 14 + "LL" + "E" * 6 + "L"
    out = tmp_path / "fold"
    code = main(["protein", "design", "--ss", plan, "--num", "2", "--steps", "8", "--seed", "1",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    assert len(list(out.glob("len043_*.pdb"))) == 2
    record = json.loads((out / "topology.json").read_text())
    assert set(record["designs"]) == {"len043_000", "len043_001"}
    d = record["designs"]["len043_000"]
    assert d["plan"] == plan and len(d["dssp"]) == len(plan) and 0.0 <= d["agreement"] <= 1.0
    assert record["mean"]["n"] == 2 and d["paired_strand_residues"] == 0  # no adjacency given
    assert "fold plans followed" in capsys.readouterr().out
    assert main(["protein", "eval", str(out), "--out", str(tmp_path / "ev")]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["topology"]["n"] == 2 and summary["topology"]["sources"] == 1
    assert summary["topology"]["agreement"] == pytest.approx(
        np.mean([v["agreement"] for v in record["designs"].values()]))
    assert "fold plans (1 sources)" in capsys.readouterr().out
    # a plan from a file sets the length
    design = next(out.glob("*.pdb"))
    code = main(["protein", "design", "--topology", str(design), "--num", "1", "--steps", "4",
                 "--out", str(tmp_path / "f2"), "--no-progress"])
    assert code == 0 and (tmp_path / "f2" / "len043_000.pdb").is_file()


def test_cli_plan_errors(tmp_path, capsys):
    for args, msg in (
        (["--ss", "HHHH", "--topology", "x.pdb"], "give one fold plan option"),
        (["--ss", "HHXX"], "plan 'HHXX'"),
        (["--ss", "H" * 30, "--checkpoint", "checkpoints/protein/tiny_reflow_guided"],
         "trained without fold plans"),
        (["--topology", str(tmp_path / "none.pdb")], "topology file not found"),
    ):
        out = tmp_path / "never"
        assert main(["protein", "design", *args, "--num", "1", "--steps", "2", "--out",
                     str(out), "--no-progress"]) == 2
        assert msg in capsys.readouterr().err
        assert not out.exists()


def test_bundled_plan_library_holds_the_training_plans():
    """The fold-plan checkpoint bundles the plans of its compact training chains (what `flow3d
    protein plans recipes/protein/topology.yaml` writes): strands included, none shorter
    than the recipe's min_len, and equal to the cache's plans where the cache is built."""
    from protein.design import PLAN_LIBRARY, TOPOLOGY_CHECKPOINT, load_designer

    plans = load_plans(TOPOLOGY_CHECKPOINT / PLAN_LIBRARY)
    recipe = load_designer(TOPOLOGY_CHECKPOINT).recipe
    assert len(plans) > 200 and min(len(t) for t in plans) >= recipe.data.min_len
    strand = np.concatenate([t.codes for t in plans]) == STRAND
    assert 0.2 < strand.mean() < 0.4
    assert all((t.adj == ADJACENT).any() for t in plans if (t.codes == STRAND).sum() > 10)
    cache = load_designer(TOPOLOGY_CHECKPOINT).head.cache_path()
    if cache.is_dir():
        fresh = reference_topologies(cache, max_rg_ratio=1.1)
        assert [t.string for t in fresh] == [t.string for t in plans]
        assert len(reference_topologies(cache)) > len(plans)  # the open chains left out


def test_design_draws_plans_from_the_library_unless_told_not_to(tmp_path):
    from dataclasses import replace

    from protein.design import (
        DEFAULT_CHECKPOINT,
        PLAN_LIBRARY,
        TOPOLOGY_CHECKPOINT,
        prepare_design,
        with_plan_library,
    )
    from protein.settings import DesignSettings, SamplerSettings

    s = DesignSettings(lengths=(40,), num=2, sampler=SamplerSettings(steps=2))
    drawn = with_plan_library(s)
    assert drawn.topology_from == str((TOPOLOGY_CHECKPOINT / PLAN_LIBRARY).resolve())
    for plain in (replace(s, no_plan=True), replace(s, checkpoint=str(DEFAULT_CHECKPOINT)),
                  replace(s, ss="H" * 40)):
        assert with_plan_library(plain) == plain  # told not to, no library, or a plan given
    # the checkpoint found as the loader finds it: relative to the project root from another
    # folder, or a run folder whose latest checkpoint (or the folder itself) holds plans.npz
    import os
    import shutil

    from flow3d.engine.checkpoint import CHECKPOINT_FILES

    here = os.getcwd()
    try:
        os.chdir(tmp_path)
        relative = replace(s, checkpoint="checkpoints/protein/tiny_topology")
        assert with_plan_library(relative).topology_from == drawn.topology_from
        run = prepare_design(relative, tmp_path / "c")  # and the loader finds it too
        assert Path(run.loaded.path).resolve() == TOPOLOGY_CHECKPOINT.resolve()
        assert run.settings.topology_from == drawn.topology_from
        for missing in ("no/such/folder", "recipes"):  # not there; not a checkpoint
            with pytest.raises(DataError, match=f"^--checkpoint .*{missing}"):
                with_plan_library(replace(s, checkpoint=missing))
    finally:
        os.chdir(here)
    last = tmp_path / "run" / "checkpoints" / "last"
    last.mkdir(parents=True)
    for name in CHECKPOINT_FILES:
        shutil.copy(TOPOLOGY_CHECKPOINT / name, last / name)
    in_run = replace(s, checkpoint=str(tmp_path / "run"))
    assert with_plan_library(in_run) == in_run  # no library anywhere: no plans
    shutil.copy(TOPOLOGY_CHECKPOINT / PLAN_LIBRARY, tmp_path / "run" / PLAN_LIBRARY)
    assert with_plan_library(in_run).topology_from == str(tmp_path / "run" / PLAN_LIBRARY)
    shutil.copy(TOPOLOGY_CHECKPOINT / PLAN_LIBRARY, last / PLAN_LIBRARY)
    assert with_plan_library(in_run).topology_from == str(last / PLAN_LIBRARY)
    run = prepare_design(s, tmp_path / "a")
    assert Path(run.loaded.path).resolve() == TOPOLOGY_CHECKPOINT.resolve()
    assert isinstance(run.plan, list) and run.settings.sampler.sheet_guidance == 1.0
    assert run.settings.topology_from == drawn.topology_from
    plain = prepare_design(replace(s, no_plan=True), tmp_path / "b")
    assert Path(plain.loaded.path).resolve() == DEFAULT_CHECKPOINT.resolve()
    assert plain.plan is None and plain.settings.sampler.sheet_guidance == 0.0
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match="--no-plan and --ss: give one"):
        DesignSettings(ss="HHHH", no_plan=True)


def test_cli_default_design_records_drawn_plans_and_resumes(tmp_path, capsys):
    out = tmp_path / "d"
    args = ["protein", "design", "--length", "40", "--num", "2", "--steps", "3",
            "--sheet-guidance", "0", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["topology_from"].endswith("tiny_topology/plans.npz")
    plans = json.loads((out / "topology.json").read_text())
    assert plans["mean"]["n"] == 2 and "fold plans followed" in capsys.readouterr().out
    assert main([*args, "--resume"]) == 0  # the same run: nothing left to make
    assert main([*args[:-3], "--no-plan", "--out", str(out), "--resume"]) == 2
    assert "that run used" in capsys.readouterr().err  # a planned run is not resumed plain


def test_a_run_steered_by_older_sheet_guidance_is_not_resumed(tmp_path, capsys):
    """run.json records what sheet guidance did (protein.sheets.guidance_record); a run
    written before that record, or with other weights, is refused on --resume rather than
    finished with designs steered differently; the same code resumes it."""
    out = tmp_path / "d"
    args = ["protein", "design", "--lengths", "40,44", "--num", "1", "--steps", "3",
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    run_file = out / "run.json"
    run = json.loads(run_file.read_text())
    assert run["sheet_guidance_code"]["helix"] > 0 and run["settings"]["topology_from"]
    (out / "len044_000.pdb").unlink()  # an interrupted run: one design left to make
    capsys.readouterr()
    for old in ({k: v for k, v in run.items() if k != "sheet_guidance_code"},
                {**run, "sheet_guidance_code": {**run["sheet_guidance_code"], "torsion": 0.0}}):
        run_file.write_text(json.dumps(old))
        assert main([*args, "--resume"]) == 2
        err = capsys.readouterr().err
        assert "sheet guidance had" in err and len(err.strip().splitlines()) == 1
        assert not (out / "len044_000.pdb").exists()
    run_file.write_text(json.dumps(run))
    assert main([*args, "--resume"]) == 0 and (out / "len044_000.pdb").is_file()


def test_drawn_plans_too_short_or_a_broken_library_are_refused_before_writing(tmp_path,
                                                                               capsys):
    out = tmp_path / "o"
    assert main(["protein", "design", "--lengths", "20,200", "--num", "1", "--steps", "1",
                 "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--lengths 200" in err and "--no-plan" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    empty = tmp_path / "empty.npz"
    save_plans([], empty)
    with pytest.raises(DataError, match="empty plan library"):
        reference_topologies(empty)
    cut = tmp_path / "cut.npz"
    save_plans([Topology.from_string("L" * 30)], cut)
    cut.write_bytes(cut.read_bytes()[:40])
    with pytest.raises(DataError, match="not a plan library"):
        load_plans(cut)
