"""Every protein command on every family of bad input: one line naming the culprit, exit 2,
nothing written (``tests/contract.py``); and outputs that are never mixed, partial or lost.

Families: bad output paths (read-only, a file where a folder goes, an empty string, a non-empty
folder without --overwrite/--resume), bad numbers (NaN, zero, negative, huge), bad files
(missing, empty, binary, truncated, corrupt gzip) and wrong types. Then --overwrite, --resume
(bit-identical to an uninterrupted run) and runs killed part-way.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from contract import assert_user_error, run

import protein.design
from protein.data import parse_structure

ROOT = Path(__file__).resolve().parents[2]
MOTIF = ROOT / "examples" / "protein" / "hairpin_3gknA.pdb"
READ_ONLY = Path("/proc/flow3d-contract")  # /proc takes no new files, not even from root
DATA = ROOT.parent / "shared" / "data" / "proteins"
TINY = ["--length", "24", "--num", "3", "--batch-size", "2", "--steps", "3", "--seed", "5"]


@pytest.fixture
def bad(tmp_path) -> dict[str, Path]:
    """Bad input files and folders, next to one another in ``tmp_path / "in"``."""
    d = tmp_path / "in"
    d.mkdir()
    files = {
        "empty": d / "empty.pdb",
        "binary": d / "binary.pdb",
        "truncated": d / "truncated.pdb",
        "gz": d / "corrupt.pdb.gz",
        "text": d / "notes.txt",
    }
    files["empty"].write_text("")
    files["binary"].write_bytes(bytes(range(256)) * 4)
    text = MOTIF.read_text()
    files["truncated"].write_text(text[: len(text) // 3])  # cut inside an ATOM record
    files["gz"].write_bytes(gzip.compress(text.encode())[:200])  # cut inside the stream
    files["text"].write_text("not a folder")
    for name in ("junk", "empty_dir", "full"):
        (d / name).mkdir()
        files[name] = d / name
    for key in ("empty", "binary", "truncated", "gz"):
        shutil.copy(files[key], files["junk"] / files[key].name)
    (files["full"] / "earlier.pdb").write_text(text)
    return files


def _design(out, *args) -> list[str]:
    return ["protein", "design", "--out", str(out), "--no-progress", *map(str, args)]


# ---- protein design ------------------------------------------------------------------------------
OUTPUT_CASES = {
    "read-only": (lambda t, b: READ_ONLY / "designs", ["--out", "/proc"]),
    "file as folder": (lambda t, b: b["text"], ["--out", "is a file"]),
    "empty string": (lambda t, b: "", ["--out", "empty string"]),
    "not empty": (lambda t, b: b["full"], ["--out", "--overwrite", "--resume"]),
}


def _watch(out, tmp_path: Path) -> list[Path]:
    """What must stay unchanged: the inputs; for an existing output folder, what it holds
    (checking that it is writable touches the folder itself)."""
    return [Path(out)] if str(out) and Path(out).is_dir() else [tmp_path]


@pytest.mark.parametrize("case", OUTPUT_CASES)
def test_design_refuses_bad_output_paths(case, tmp_path, bad, capsys):
    out, mentions = OUTPUT_CASES[case]
    out = out(tmp_path, bad)
    assert_user_error(_design(out, *TINY), capsys, mentions, watch=_watch(out, tmp_path))


NUMBER_CASES = [
    (["--steps", "0"], ["--steps = 0: must be at least 1"]),
    (["--steps", "-5"], ["--steps", "at least 1"]),
    (["--steps", "nan"], ["--steps", "nan"]),
    (["--steps", "1e9"], ["--steps", "at most 10000"]),
    (["--num", "0"], ["--num", "at least 1"]),
    (["--num", "1e6"], ["--num", "at most 10000"]),
    (["--num", "1.5"], ["--num"]),
    (["--length", "1"], ["--length", "at least 2"]),
    (["--length", "100000"], ["--length", "at most 9999"]),
    (["--lengths", "60,60"], ["--lengths", "once"]),
    (["--lengths", ","], ["--lengths"]),
    (["--seed", "-1"], ["--seed", "at least 0"]),
    (["--clash-guidance", "nan"], ["--clash-guidance", "finite"]),
    (["--clash-guidance", "2"], ["--clash-guidance", "at most 1"]),
    (["--rot-rate", "0"], ["--rot-rate", "above 0"]),
    (["--rot-rate", "inf"], ["--rot-rate", "finite"]),
    (["--guidance-iters", "0"], ["--guidance-iters", "at least 1"]),
    (["--trans-noise", "wide"], ["--trans-noise", "model, length"]),
    (["--trans-noise-scale", "0"], ["--trans-noise-scale", "above 0"]),
    (["--trans-noise-scale", "nan"], ["--trans-noise-scale", "finite"]),
    (["--local-min-dist", "5,4.8"], ["--local-min-dist", "5,4.8,5 or 0"]),
    (["--local-min-dist", "5,x,5"], ["--local-min-dist", "5,x,5"]),
    (["--local-min-dist", "9"], ["--local-min-dist", "at most 8"]),
    (["--batch-size", "-2"], ["--batch-size", "at least 1"]),
]


@pytest.mark.parametrize("args,mentions", NUMBER_CASES, ids=lambda v: " ".join(v))
def test_design_refuses_bad_numbers_before_loading_anything(args, mentions, tmp_path, capsys,
                                                             monkeypatch):
    def no_loading(*a, **k):
        raise AssertionError("the checkpoint was loaded before the settings were checked")

    monkeypatch.setattr(protein.design, "load_designer", no_loading)
    out = tmp_path / "out"
    assert_user_error(_design(out, *args), capsys, mentions, watch=[tmp_path])
    assert not out.exists()


def test_design_refuses_a_batch_that_cannot_fit_in_memory(tmp_path, capsys):
    """9999 residues x 16 designs needs terabytes for the pair features: refused with the
    estimate and the limit, after loading the checkpoint (its sizes decide) but before
    sampling."""
    line = assert_user_error(_design(tmp_path / "out", "--no-plan", "--length", "9999",
                                     "--num", "16"),
                             capsys, ["--length 9999", "residue-pair features", "memory"],
                             watch=[tmp_path])
    assert "TB" in line


WRONG_TYPE_CASES = [
    (["--steps", "abc"], ["--steps", "abc"]),
    (["--lengths", "a,b"], ["--lengths"]),
    (["--length", "60", "--lengths", "60,80"], ["--lengths", "--length"]),
    (["--format", "xyz"], ["--format", "pdb, cif"]),
    (["--method", "magic"], ["--method", "euler"]),
    (["--residue", "TRP"], ["--residue", "GLY"]),
    (["--device", "banana"], ["--device banana"]),
    (["--overwrite", "--resume"], ["--overwrite", "--resume"]),
    (["--checkpoint", ""], ["--checkpoint", "empty string"]),
]


@pytest.mark.parametrize("args,mentions", WRONG_TYPE_CASES, ids=lambda v: " ".join(v))
def test_design_refuses_wrong_types_and_choices(args, mentions, tmp_path, capsys):
    assert_user_error(_design(tmp_path / "out", *args), capsys, mentions, watch=[tmp_path])


@pytest.mark.parametrize("key", ["missing", "empty", "binary", "truncated", "gz", "empty_dir"])
def test_design_refuses_bad_motif_and_topology_files(key, tmp_path, bad, capsys):
    path = tmp_path / "in" / "missing.pdb" if key == "missing" else bad[key]
    out = tmp_path / "out"
    assert_user_error(_design(out, "--length", "40", "--motif", path, "--motif-segments",
                              "A107-112@5"), capsys, [path], watch=[tmp_path])
    assert_user_error(_design(out, "--topology", path), capsys, [path], watch=[tmp_path])


@pytest.mark.parametrize("args,mentions", [
    (["--motif", MOTIF, "--motif-segments", "A107-112"], ["A107-112", "CHAIN"]),
    (["--motif", MOTIF, "--motif-segments", ""], ["--motif-segments", "empty string"]),
    (["--motif", MOTIF], ["--motif", "--motif-segments"]),
    (["--motif", MOTIF, "--motif-segments", "A1-5@3"], [MOTIF, "A1"]),
    (["--motif", MOTIF, "--motif-segments", "Z107-112@3"], [MOTIF, "'Z'"]),
    (["--ss", ""], ["--ss", "empty string"]),
    (["--ss", "HHXX"], ["HHXX", "H, E, L"]),
    (["--ss", "HHHHHHHH", "--length", "20"], ["--length", "--ss"]),
    (["--ss", "HHHHHHHH", "--topology", MOTIF], ["--ss", "--topology"]),
    (["--ss", "HHHHHHHH", "--motif", MOTIF, "--motif-segments", "A107-112@2"],
     ["--motif", "--ss"]),
    (["--topology", f"{MOTIF}:Z"], [MOTIF, "'Z'"]),
    (["--ss", "HHHHHHHH", "--checkpoint", "checkpoints/protein/tiny"], ["--ss", "fold plans"]),
], ids=lambda v: " ".join(map(str, v)).replace(str(ROOT), "."))
def test_design_refuses_bad_motifs_and_fold_plans(args, mentions, tmp_path, capsys,
                                                  monkeypatch):
    monkeypatch.chdir(ROOT)  # --checkpoint checkpoints/protein/tiny is relative
    assert_user_error(_design(tmp_path / "out", *args), capsys, mentions, watch=[tmp_path])


@pytest.mark.parametrize("key", ["junk", "empty_dir", "missing"])
def test_design_refuses_a_reference_set_with_no_chains(key, tmp_path, bad, capsys):
    path = tmp_path / "in" / "missing" if key == "missing" else bad[key]
    assert_user_error(_design(tmp_path / "out", "--length", "30", "--topology-from", path),
                      capsys, [path], watch=[tmp_path])


@pytest.mark.parametrize("key", ["missing", "text", "full"])
def test_design_refuses_a_checkpoint_that_is_not_one(key, tmp_path, bad, capsys):
    path = tmp_path / "in" / "nope" if key == "missing" else bad[key]
    assert_user_error(_design(tmp_path / "out", *TINY, "--checkpoint", path), capsys, [path],
                      watch=[tmp_path])


def test_design_warns_when_a_run_will_take_hours(tmp_path, capsys, monkeypatch):
    """A run estimated at hours is not refused: one warning line on stderr, then it runs (here
    it stops at the first batch, through a refusal to sample)."""
    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(protein.design.DesignRun, "execute", stop)
    code, _, err = run(_design(tmp_path / "out", "--no-plan", "--length", "2000", "--num", "50",
                               "--steps", "200", "--batch-size", "1"), capsys)
    lines = err.strip().splitlines()
    assert code == 130 and lines[0].startswith("flow3d: warning: this run may take about")
    assert "days" in lines[0] or "hours" in lines[0]
    assert not (tmp_path / "out").exists()


# ---- protein eval -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def designs(tmp_path_factory) -> Path:
    """A small design folder written by the command (bundled checkpoint)."""
    out = tmp_path_factory.mktemp("eval") / "designs"
    code = run(_design(out, *TINY), _NoCapture())[0]
    assert code == 0
    return out


class _NoCapture:
    """``contract.run`` outside a test: nothing to capture."""

    @staticmethod
    def readouterr():
        return "", ""


def _eval(designs, *args) -> list[str]:
    return ["protein", "eval", str(designs), "--no-progress", *map(str, args)]


@pytest.mark.parametrize("case", OUTPUT_CASES)
def test_eval_refuses_bad_output_paths(case, designs, tmp_path, bad, capsys):
    out, mentions = OUTPUT_CASES[case]
    out = out(tmp_path, bad)
    mentions = [m for m in mentions if m != "--resume"]  # eval has no --resume
    assert_user_error(_eval(designs, "--out", out), capsys, mentions,
                      watch=[*_watch(out, tmp_path), designs])


def test_eval_never_writes_into_what_it_evaluates(designs, tmp_path, capsys):
    """--overwrite empties the output folder: never the one that holds the inputs."""
    assert_user_error(_eval(designs, "--out", designs, "--overwrite"), capsys,
                      ["--out", "holds the designs"], watch=[designs])
    shutil.copytree(designs, tmp_path / "reference")
    assert_user_error(_eval(designs, "--reference", tmp_path / "reference", "--out", tmp_path,
                            "--overwrite"), capsys, ["--out", "holds the reference"],
                      watch=[designs, tmp_path])


@pytest.mark.parametrize("args,mentions", [
    (["--max-diversity", "0"], ["--max-diversity", "at least 1"]),
    (["--max-diversity", "1e9"], ["--max-diversity", "at most"]),
    (["--max-reference", "-1"], ["--max-reference", "at least 0"]),
    (["--limit", "0"], ["--limit", "at least 1"]),
    (["--limit", "nan"], ["--limit", "nan"]),
    (["--reference-limit", "-3"], ["--reference-limit"]),
    (["--seed", "-1"], ["--seed"]),
    (["--ss-method", "stride"], ["--ss-method", "pydssp"]),
], ids=lambda v: " ".join(v))
def test_eval_refuses_bad_numbers_and_choices(args, mentions, designs, tmp_path, capsys):
    assert_user_error(_eval(designs, "--out", tmp_path / "e", *args), capsys, mentions,
                      watch=[tmp_path, designs])


@pytest.mark.parametrize("key", ["missing", "empty_dir", "junk", "binary", "truncated", "gz",
                                 "empty"])
def test_eval_refuses_inputs_with_nothing_usable(key, tmp_path, bad, designs, capsys):
    path = tmp_path / "in" / "missing" if key == "missing" else bad[key]
    assert_user_error(_eval(path, "--out", tmp_path / "e"), capsys, [path], watch=[tmp_path])
    assert_user_error(_eval(designs, "--reference", path, "--out", tmp_path / "e"), capsys,
                      [path], watch=[tmp_path, designs])


@pytest.mark.parametrize("record", ["motif.json", "topology.json", "timings.json"])
@pytest.mark.parametrize("content", ["", "{\"designs\": ", "\x00\x01binary", "[1, 2]"])
def test_eval_refuses_a_broken_record_before_the_long_part(record, content, designs, tmp_path,
                                                           capsys):
    folder = tmp_path / "designs"
    shutil.copytree(designs, folder)
    (folder / record).write_text(content)
    assert_user_error(_eval(folder, "--out", tmp_path / "e"), capsys, [record],
                      watch=[tmp_path])


def test_eval_says_what_it_skipped_and_never_reads_temporaries(designs, bad, tmp_path, capsys):
    folder = tmp_path / "designs"
    shutil.copytree(designs, folder)
    for key in ("binary", "truncated", "gz"):
        shutil.copy(bad[key], folder / bad[key].name)
    # what a writer killed mid-file leaves: a temporary with half a design in it
    good = next(folder.glob("*.pdb")).read_text()
    (folder / ".len024_009.pdb.k1ll3d.tmp.pdb").write_text(good[: len(good) // 2])
    code, out, err = run(_eval(folder, "--out", tmp_path / "e"), capsys)
    assert code == 0, err
    skipped = [ln for ln in err.splitlines() if ln.startswith("flow3d: warning: skipped")]
    assert len(skipped) == 3 and "Traceback" not in err
    for key in ("binary", "truncated", "gz"):
        assert sum(bad[key].name in ln for ln in skipped) == 1
    assert not any(".tmp" in ln for ln in err.splitlines())
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["n"] == 3 and len(summary["unreadable"]) == 3


# ---- protein cache ------------------------------------------------------------------------------
def _cache(recipe, *overrides) -> list[str]:
    return ["protein", "cache", str(recipe), *map(str, overrides)]


@pytest.fixture
def recipe(tmp_path) -> Path:
    """The tiny recipe reading three real chains into a cache under tmp_path."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(MOTIF, src / MOTIF.name)
    text = (ROOT / "recipes" / "protein" / "tiny.yaml").read_text()
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("override,mentions", [
    (f"data.cache_dir={READ_ONLY}", ["data.cache_dir", "/proc"]),
    ("data.cache_dir=''", ["cache_dir", "empty string"]),
    ("data.workers=0", ["workers", "at least 1"]),
    ("data.workers=abc", ["workers", "abc"]),
    ("data.max_len=-5", ["max_len", "at least 1"]),
    ("data.max_len=.nan", ["max_len"]),
    ("data.max_coil_fraction=.nan", ["max_coil_fraction", "finite"]),
    ("data.rg_quantile=2", ["rg_quantile", "at most 1"]),
    ("data.max_residues_sq=0", ["max_residues_sq"]),
    ("data.break_policy=glue", ["break_policy", "split"]),
    ("data.sources=[]", ["sources"]),
    ("data.nonsense=1", ["data.nonsense"]),
], ids=lambda v: v if isinstance(v, str) else "")
def test_cache_refuses_bad_settings(override, mentions, recipe, tmp_path, capsys):
    src = f"data.sources=[{tmp_path / 'src'}]"
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    assert_user_error(_cache(recipe, src, cache, override), capsys, mentions, watch=[tmp_path])


def test_cache_refuses_a_file_as_cache_folder_and_missing_sources(recipe, tmp_path, bad,
                                                                   capsys):
    src = f"data.sources=[{tmp_path / 'src'}]"
    assert_user_error(_cache(recipe, src, f"data.cache_dir={bad['text']}"), capsys,
                      ["data.cache_dir", "is a file"], watch=[tmp_path])
    missing = tmp_path / "no_such_source"
    assert_user_error(_cache(recipe, f"data.sources=[{missing}]",
                             f"data.cache_dir={tmp_path / 'cache'}"), capsys, [missing],
                      watch=[tmp_path])


@pytest.mark.parametrize("key", ["missing", "empty", "binary", "truncated", "toy"])
def test_cache_refuses_bad_recipe_files(key, tmp_path, capsys):
    path = tmp_path / f"{key}.yaml"
    text = (ROOT / "recipes" / "protein" / "tiny.yaml").read_text()
    if key == "empty":
        path.write_text("")
    elif key == "binary":
        path.write_bytes(b"\xff\xfe\x00\x01" * 64)
    elif key == "truncated":
        path.write_text(text[: text.index("model:") + 30] + "\n  node_dim: [1, 2\n")
    elif key == "toy":
        shutil.copy(ROOT / "recipes" / "toy" / "eight_gaussians.yaml", path)
    assert_user_error(_cache(path), capsys, [path], watch=[tmp_path])


def test_cache_help_describes_every_argument(capsys):
    code, out, _ = run(["protein", "cache", "--help"], capsys)
    assert code == 0
    for arg in ("recipe", "KEY=VALUE", "--force"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(arg))
        assert len(line.split()) > 2, line  # a description follows the name
    assert "(default:" in out


@pytest.mark.parametrize("command", ["design", "eval", "cache"])
def test_help_shows_defaults(command, capsys):
    code, out, _ = run(["protein", command, "--help"], capsys)
    assert code == 0 and "(default:" in out


# ---- outputs that are never mixed, partial or lost ----------------------------------------------
RUN = ["--length", "24", "--num", "5", "--batch-size", "2", "--steps", "4", "--seed", "7",
       "--motif", MOTIF, "--motif-segments", "A107-112@3-10", "--trajectory"]


def _atoms(path: Path) -> list[str]:
    """A design file without its HEADER (which carries the date)."""
    return [ln for ln in path.read_text().splitlines() if not ln.startswith("HEADER")]


def _same_run(a: Path, b: Path) -> None:
    """Folders ``a`` and ``b`` (and their trajectories) hold the same designs and records."""
    for folder_a, folder_b in ((a, b), (a.parent / f"{a.name}_trajectories",
                                        b.parent / f"{b.name}_trajectories")):
        names = sorted(p.name for p in folder_a.iterdir())
        assert names == sorted(p.name for p in folder_b.iterdir())
        for name in names:
            if name.endswith(".pdb"):
                assert _atoms(folder_a / name) == _atoms(folder_b / name), name
    for record in ("run.json", "motif.json"):
        assert (a / record).read_text() == (b / record).read_text(), record
    timings = [json.loads((f / "timings.json").read_text()) for f in (a, b)]
    assert list(timings[0]) == list(timings[1])  # same designs, in the run's order


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "designs"
    assert run(_design(out, *RUN), _NoCapture())[0] == 0
    return out


def test_resume_after_lost_outputs_is_bit_identical(uninterrupted, tmp_path, capsys):
    """Delete a design, a trajectory and a record entry (what a kill between them leaves):
    --resume makes exactly those again, and the folder equals an uninterrupted run's."""
    out = tmp_path / "designs"
    shutil.copytree(uninterrupted, out)
    shutil.copytree(uninterrupted.parent / "designs_trajectories",
                    tmp_path / "designs_trajectories")
    (out / "len024_003.pdb").unlink()
    (tmp_path / "designs_trajectories" / "len024_000_traj.pdb").unlink()
    timings = json.loads((out / "timings.json").read_text())
    del timings["len024_004"]
    (out / "timings.json").write_text(json.dumps(timings))
    (out / ".len024_004.pdb.x1y2.tmp.pdb").write_text("ATOM  half a design")  # a stale temp
    code, printed, err = run(_design(out, *RUN, "--resume"), capsys)
    assert code == 0, err
    assert "2 kept from the earlier run" in printed  # batch 0-1 redone for 0's trajectory
    _same_run(uninterrupted, out)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_resume_refuses_other_settings_and_foreign_folders(uninterrupted, tmp_path, capsys):
    out = tmp_path / "designs"
    shutil.copytree(uninterrupted, out)
    args = [a if a != "4" else "5" for a in map(str, RUN)]  # --steps 5
    assert_user_error(_design(out, *args, "--resume"), capsys,
                      ["--resume", "--steps 4", "5", "--overwrite"], watch=[out])
    assert_user_error(_design(out, *RUN, "--seed", "8", "--resume"), capsys,
                      ["--seed 7", "8"], watch=[out])
    (out / "run.json").write_text("{\"settings\": ")
    assert_user_error(_design(out, *RUN, "--resume"), capsys, ["run.json"], watch=[out])
    (out / "run.json").unlink()
    assert_user_error(_design(out, *RUN, "--resume"), capsys, ["--resume", "run.json"],
                      watch=[out])


def test_resume_of_a_run_that_never_started_starts_it(uninterrupted, tmp_path, capsys):
    out = tmp_path / "designs"
    code, _, err = run(_design(out, *RUN, "--resume"), capsys)
    assert code == 0, err
    _same_run(uninterrupted, out)


def test_overwrite_replaces_an_earlier_run_entirely(tmp_path, capsys):
    out = tmp_path / "designs"
    assert run(_design(out, "--length", "20", "--num", "2", "--steps", "2"), capsys)[0] == 0
    (out / "stray.txt").write_text("from elsewhere")
    assert_user_error(_design(out, "--length", "22", "--num", "1", "--steps", "2"), capsys,
                      ["--out", "--overwrite"], watch=[out])
    code, _, err = run(_design(out, "--length", "22", "--num", "1", "--steps", "2",
                               "--overwrite"), capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["len022_000.pdb", "run.json",
                                                     "timings.json", "topology.json"]


def test_interrupted_run_leaves_complete_designs_and_resumes(uninterrupted, tmp_path, capsys,
                                                             monkeypatch):
    """Interrupted while writing the fourth design: the folder holds the previous state
    (complete files and records of the designs before) and no temporary; --resume completes
    it bit-identically."""
    from protein.head import write_design as real

    written = []

    def dies_on_the_fourth(d, out, **kw):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(d.name)
        return real(d, out, **kw)

    monkeypatch.setattr(protein.design, "write_design", dies_on_the_fourth)
    out = tmp_path / "designs"
    code, _, err = run(_design(out, *RUN), capsys)
    assert code == 130 and "interrupted" in err
    on_disk = sorted(p.name for p in out.glob("*.pdb"))
    assert on_disk == [f"{n}.pdb" for n in written]
    for name in on_disk:  # complete, and what the uninterrupted run wrote
        assert _atoms(out / name) == _atoms(uninterrupted / name)
        assert len(parse_structure(out / name, break_distance=math.inf).chains[0]) == 24
    assert sorted(json.loads((out / "timings.json").read_text())) == written[:2]  # batch 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(protein.design, "write_design", real)
    code, _, err = run(_design(out, *RUN, "--resume"), capsys)
    assert code == 0, err
    _same_run(uninterrupted, out)


@pytest.mark.slow
def test_killed_process_leaves_complete_files_and_resumes(uninterrupted, tmp_path, capsys):
    """SIGKILL (no cleanup at all) as soon as the first design appears: every design file is
    complete, and --resume ends where an uninterrupted run ends."""
    out = tmp_path / "designs"
    argv = [sys.executable, "-m", "flow3d", *_design(out, *RUN)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("len*.pdb")) and proc.poll() is None:
            assert time.monotonic() < deadline, "no design appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    for path in out.glob("len*.pdb"):
        assert _atoms(path) == _atoms(uninterrupted / path.name)
    code, _, err = run(_design(out, *RUN, "--resume"), capsys)
    assert code == 0, err
    _same_run(uninterrupted, out)


def test_resume_completes_drawn_fold_plans_bit_identically(tmp_path, capsys):
    """Plans drawn per batch from a reference set: a resumed run draws the same ones, and its
    topology.json equals an uninterrupted run's (strict JSON, null for undefined scores)."""
    pool = tmp_path / "pool"
    pool.mkdir()
    shutil.copy(MOTIF, pool / MOTIF.name)
    args = ["--length", "12", "--num", "3", "--batch-size", "1", "--steps", "3",
            "--topology-from", pool]
    whole, part = tmp_path / "whole", tmp_path / "part"
    for out in (whole, part):
        assert run(_design(out, *args), capsys)[0] == 0
    (part / "len012_001.pdb").unlink()
    record = json.loads((part / "topology.json").read_text())
    del record["designs"]["len012_002"]
    (part / "topology.json").write_text(json.dumps(record))
    code, printed, err = run(_design(part, *args, "--resume"), capsys)
    assert code == 0 and "1 kept" in printed, err
    assert (part / "topology.json").read_text() == (whole / "topology.json").read_text()
    for name in ("len012_001.pdb", "len012_002.pdb"):
        assert _atoms(part / name) == _atoms(whole / name)
    json.loads((whole / "topology.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"{c} in topology.json"))


# ---- protein plans -------------------------------------------------------------------------------
def _plans_cases(tmp_path: Path, bad: dict) -> dict:
    made = tmp_path / "made.npz"
    made.write_bytes(b"an earlier library")
    ts50 = DATA / "ts50_pydssp" / "pdb"
    return {
        "missing source": (["protein", "plans", str(tmp_path / "nowhere"), "--out",
                            str(tmp_path / "p.npz")], ["nowhere"]),
        "empty folder": (["protein", "plans", str(bad["empty_dir"]), "--out",
                          str(tmp_path / "p.npz")], ["empty_dir"]),
        "existing out": (["protein", "plans", str(ts50), "--out", str(made)],
                         ["--out", "--overwrite"]),
        "wrong suffix": (["protein", "plans", str(ts50), "--out", str(tmp_path / "p.json")],
                         ["--out", ".npz"]),
        "read-only out": (["protein", "plans", str(ts50), "--out",
                           str(READ_ONLY / "p.npz")], ["--out", "/proc"]),
        "nan cap": (["protein", "plans", str(ts50), "--out", str(tmp_path / "p.npz"),
                     "--max-rg-ratio", "nan"], ["--max-rg-ratio"]),
        "cap keeps nothing": (["protein", "plans", str(ts50), "--out",
                               str(tmp_path / "p.npz"), "--max-rg-ratio", "0.2"],
                              ["no chains", "0.2x"]),
        "not a protein recipe": (["protein", "plans", str(ROOT / "recipes" / "toy" /
                                                          "eight_gaussians.yaml"),
                                  "--out", str(tmp_path / "p.npz")], ["not 'protein'"]),
    }


@pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/data/proteins")
@pytest.mark.parametrize("case", ["missing source", "empty folder", "existing out",
                                  "wrong suffix", "read-only out", "nan cap",
                                  "cap keeps nothing", "not a protein recipe"])
def test_plans_refuses_bad_input_and_writes_nothing(case, tmp_path, bad, capsys):
    argv, mentions = _plans_cases(tmp_path, bad)[case]
    assert_user_error(argv, capsys, mentions, watch=[tmp_path])
