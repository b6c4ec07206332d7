"""Settings objects (validated once, resolved against a recipe, recorded for --resume), the
run's memory and time budget, strict-JSON records and per-step progress."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from flow3d.errors import ConfigError
from protein.budget import batch_memory_bytes, check_budget, estimate_seconds, pair_floats
from protein.head import ProteinSampleConfig
from protein.model import TrunkConfig
from protein.records import jsonable, write_json
from protein.settings import DesignSettings, EvalSettings, SamplerSettings

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = TrunkConfig(num_blocks=4, node_dim=64, edge_dim=32, ipa_head_dim=16, num_heads=4,
                      num_qk_points=8, num_v_points=8, seq_layers=1, seq_heads=4)


def test_settings_are_frozen_and_normalised():
    s = DesignSettings(lengths=[60.0, 80], num=8.0, sampler=SamplerSettings(steps=1e3))
    assert s.lengths == (60, 80) and s.num == 8 and s.sampler.steps == 1000
    assert isinstance(s.num, int) and isinstance(s.sampler.steps, int)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.num = 3


@pytest.mark.parametrize("make,message", [
    (lambda: SamplerSettings(steps=0), "--steps = 0: must be at least 1"),
    (lambda: SamplerSettings(steps=True), "--steps = True: expected a whole number"),
    (lambda: SamplerSettings(clash_guidance=float("nan")), "--clash-guidance = nan"),
    (lambda: SamplerSettings(rot_schedule="cosine"), "sample.rot_schedule 'cosine'"),
    (lambda: SamplerSettings(guidance_window=(0.2,)), "sample.guidance_window"),
    (lambda: DesignSettings(lengths=()), "--lengths: give at least one length"),
    (lambda: DesignSettings(lengths=(10, 10)), "give each length once"),
    (lambda: DesignSettings(num=10_001), "--num = 10001: must be at most 10000"),
    (lambda: DesignSettings(trajectory="yes"), "--trajectory = 'yes'"),
    (lambda: DesignSettings(motif="m.pdb"), "--motif FILE and --motif-segments SPEC"),
    (lambda: DesignSettings(topology="", ss=None), "--topology: a file is required"),
    (lambda: DesignSettings(sampler={"steps": 3}), "expected SamplerSettings"),
    (lambda: SamplerSettings(trans_noise="wide"), "--trans-noise 'wide': use one of"),
    (lambda: SamplerSettings(trans_noise_scale=0.0), "--trans-noise-scale = 0"),
    (lambda: SamplerSettings(trans_noise_scale=float("nan")), "--trans-noise-scale"),
    (lambda: SamplerSettings(local_min_dist=(5.0, 4.8)), "--local-min-dist = (5.0, 4.8): "
                                                          "expected 3 distances"),
    (lambda: SamplerSettings(local_min_dist=(5.0, -1.0, 5.0)), "--local-min-dist = -1: must be"),
    (lambda: SamplerSettings(local_min_dist=9.0), "--local-min-dist = 9: must be at most 8"),
    (lambda: SamplerSettings(local_min_dist="5"), "--local-min-dist = '5': expected 3"),
    (lambda: EvalSettings(""), "designs: a folder or file is required"),
    (lambda: EvalSettings("d", out=""), "--out: a path is required"),
    (lambda: EvalSettings("d", max_diversity=0), "--max-diversity = 0"),
])
def test_settings_errors_name_the_option(make, message):
    with pytest.raises(ConfigError) as info:
        make()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_resolved_takes_the_recipe_for_what_was_not_given():
    recipe = ProteinSampleConfig(method="midpoint", rot_rate=40.0, clash_guidance=1.0,
                                 guidance_iters=10, motif_guidance_iters=30, batch_size=4)
    given = DesignSettings(sampler=SamplerSettings(steps=10, clash_guidance=0.0))
    assert not given.is_resolved
    s = given.resolved(recipe, "ckpt")
    assert s.is_resolved and s.lengths == (100,) and s.batch_size == 4 and s.residue == "GLY"
    assert s.sampler == SamplerSettings(steps=10, method="midpoint", rot_schedule="exp",
                                        rot_rate=40.0, clash_guidance=0.0,
                                        guidance_window=(0.5, 1.0), guidance_iters=10,
                                        trans_noise="model", trans_noise_scale=1.0,
                                        local_min_dist=(0.0, 0.0, 0.0),
                                        sheet_guidance=0.0)
    # a motif takes the recipe's motif_guidance_iters unless --guidance-iters is given
    motif = dataclasses.replace(given, motif="m.pdb", motif_segments="A1-3@2")
    assert motif.resolved(recipe, "ckpt").sampler.guidance_iters == 30
    mine = dataclasses.replace(motif, sampler=SamplerSettings(steps=10, guidance_iters=4))
    assert mine.resolved(recipe, "ckpt").sampler.guidance_iters == 4
    # a fold plan sets the length, and a different --length is an error
    plan = DesignSettings(ss="HHHHLLLL")
    assert plan.resolved(recipe, "ckpt", plan_length=8).lengths == (8,)
    with pytest.raises(ConfigError, match="--length 9: --ss sets the length"):
        dataclasses.replace(plan, lengths=(9,)).resolved(recipe, "ckpt", plan_length=8)


def test_run_record_round_trip_and_differences():
    s = DesignSettings(lengths=(30, 40), num=3, seed=2, sampler=SamplerSettings(steps=7)) \
        .resolved(ProteinSampleConfig(), "/x/ckpt")
    back = DesignSettings.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and not s.differences(back)
    other = dataclasses.replace(s, seed=3, sampler=dataclasses.replace(s.sampler, steps=9))
    assert other.differences(s) == [("--seed", "3", "2"), ("--steps", "9", "7")]
    with pytest.raises(ConfigError, match="unknown design setting 'colour'"):
        DesignSettings.from_dict({**s.to_dict(), "colour": "red"})


def test_batches_follow_the_batch_size():
    s = DesignSettings(lengths=(30, 40), num=5).resolved(
        ProteinSampleConfig(batch_size=2), "ckpt")
    assert s.batches() == [(30, 0, 2), (30, 2, 2), (30, 4, 1), (40, 0, 2), (40, 2, 2),
                           (40, 4, 1)]
    assert len(s.names()) == 10


def test_pair_memory_estimate_matches_the_measured_peak():
    """1.4-1.6 kB per residue pair measured for the bundled model at 300 and 600 residues."""
    assert 1400 <= pair_floats(BUNDLED) * 4 <= 1700
    assert batch_memory_bytes(BUNDLED, 2, 600) == 2 * 600**2 * pair_floats(BUNDLED) * 4
    big = TrunkConfig()  # ReQFlow's base: wider pair features
    assert pair_floats(big) > 3 * pair_floats(BUNDLED)


def test_budget_refuses_what_cannot_fit_and_warns_about_hours(monkeypatch):
    import protein.budget as budget

    settings = DesignSettings(lengths=(400,), num=16).resolved(ProteinSampleConfig(), "c")
    monkeypatch.setattr(budget, "memory_limit_bytes", lambda device: (2 * 10**9, "test"))
    with pytest.raises(ConfigError, match=r"--length 400: a batch of 16 .* use --batch-size 7"):
        check_budget(settings, BUNDLED)
    small = dataclasses.replace(settings, batch_size=4)
    assert check_budget(small, BUNDLED) is None  # fits, and minutes at most
    long = dataclasses.replace(small, num=500, sampler=dataclasses.replace(small.sampler,
                                                                          steps=500))
    assert estimate_seconds(long, BUNDLED) > 3600
    warning = check_budget(long, BUNDLED)
    assert warning.startswith("this run may take about") and "\n" not in warning
    assert check_budget(long, BUNDLED, "meta") is None  # only CPU runs are timed
    # sheet guidance adds its gradient steps, only where a fold plan gives it strands
    sheets = dataclasses.replace(small.sampler, sheet_guidance=1.0)
    planned = dataclasses.replace(small, sampler=sheets, topology_from="plans/")
    assert estimate_seconds(planned, BUNDLED) > 2 * estimate_seconds(small, BUNDLED)
    unplanned = dataclasses.replace(small, sampler=sheets)
    assert estimate_seconds(unplanned, BUNDLED) == estimate_seconds(small, BUNDLED)


def test_records_are_strict_json(tmp_path):
    data = {"a": float("nan"), "b": [1.0, float("inf")], "c": (1, 2)}
    assert jsonable(data) == {"a": None, "b": [1.0, None], "c": [1, 2]}
    write_json(tmp_path / "r.json", data)
    json.loads((tmp_path / "r.json").read_text(), parse_constant=_refuse)


def _refuse(name):
    raise AssertionError(f"{name} in strict JSON")


def test_design_records_have_no_nan_and_progress_advances_per_step(tmp_path):
    """A fold-plan run writes topology.json with null where a score is undefined (a plan
    without helices has no helix agreement), and the progress callback runs once per solver
    step of every batch."""
    from protein.design import prepare_design

    settings = DesignSettings(ss="LEEEEELLLLEEEEEL", num=3, sampler=SamplerSettings(steps=4),
                              batch_size=2)
    run = prepare_design(settings, tmp_path / "plans")
    steps = []
    head = run.loaded.head
    real = head.generate

    def counting(*args, **kwargs):
        inner = kwargs.pop("on_step")
        return real(*args, **kwargs, on_step=lambda: (steps.append(1), inner()))

    head.generate = counting
    report = run.execute()
    assert len(steps) == 2 * 4  # two batches of four steps
    text = (tmp_path / "plans" / "topology.json").read_text()
    record = json.loads(text, parse_constant=_refuse)
    assert record["designs"]["len016_000"]["helix_agreement"] is None
    assert report.topology == record


def test_a_run_from_before_the_noise_setting_reads_back_as_the_models_noise():
    """``run.json`` files written before ``trans_noise`` existed sampled from the model's own
    prior: read back so, a resume under the new default is refused naming --trans-noise."""
    old = DesignSettings(sampler=SamplerSettings(steps=10)).to_dict()
    for key in ("trans_noise", "trans_noise_scale"):
        old["sampler"].pop(key)
    back = DesignSettings.from_dict(old)
    assert (back.sampler.trans_noise, back.sampler.trans_noise_scale) == ("model", 1.0)
    new = DesignSettings(sampler=SamplerSettings(steps=10, trans_noise="length"))
    assert ("--trans-noise", "model", "length") in back.differences(new)


def test_local_floors_are_three_distances_and_old_runs_had_none():
    assert SamplerSettings(local_min_dist=0).local_min_dist == (0.0, 0.0, 0.0)
    assert SamplerSettings(local_min_dist=[5, 4.8, 5]).local_min_dist == (5.0, 4.8, 5.0)
    old = DesignSettings(sampler=SamplerSettings(steps=10)).to_dict()
    old["sampler"].pop("local_min_dist")
    back = DesignSettings.from_dict(old)
    assert back.sampler.local_min_dist == (0.0, 0.0, 0.0)
    new = DesignSettings(sampler=SamplerSettings(steps=10, local_min_dist=(5, 4.8, 5)))
    assert ("--local-min-dist", "0.0,0.0,0.0", "5.0,4.8,5.0") in back.differences(new)
    # what a run records reads back as itself
    assert DesignSettings.from_dict(json.loads(json.dumps(new.to_dict()))) == new


def test_sheet_guidance_is_a_strength_and_old_runs_had_none():
    assert SamplerSettings(sheet_guidance=1).sheet_guidance == 1.0
    for bad in (-0.5, 11.0, "on"):
        with pytest.raises(ConfigError, match="--sheet-guidance"):
            SamplerSettings(sheet_guidance=bad)
    old = DesignSettings(sampler=SamplerSettings(steps=10)).to_dict()
    old["sampler"].pop("sheet_guidance")
    back = DesignSettings.from_dict(old)
    assert back.sampler.sheet_guidance == 0.0
    new = DesignSettings(sampler=SamplerSettings(steps=10, sheet_guidance=1.0))
    assert ("--sheet-guidance", "0.0", "1.0") in back.differences(new)


def test_runs_from_before_drawn_plans_resume_as_no_plan_runs():
    old = DesignSettings(sampler=SamplerSettings(steps=10)).to_dict()
    old.pop("no_plan")
    assert DesignSettings.from_dict(old).no_plan  # it had no plan: --no-plan resumes it
    planned = DesignSettings(ss="HHHH", sampler=SamplerSettings(steps=10)).to_dict()
    planned.pop("no_plan")
    assert not DesignSettings.from_dict(planned).no_plan
    assert not DesignSettings.from_dict(DesignSettings().to_dict()).no_plan  # new runs: as written
