"""``flow3d train | sample | eval`` against the families of bad input: one line naming the
option, key or file, exit status 2, nothing written.

Families: bad recipes (binary, gzip, empty, truncated, not a mapping), bad values (NaN, zero,
negative, huge, the wrong type), bad output paths (a file where a folder goes, empty,
unwritable, holding an earlier run), bad checkpoints and bad sampling options.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from contract import assert_user_error

from flow3d.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "toy" / "eight_gaussians.yaml"
CKPT = ROOT / "checkpoints" / "toy" / "eight_gaussians"
TINY = ["model.width=8", "model.depth=1", "data.num_train=200", "trainer.batch_size=32",
        "trainer.progress=false", "trainer.max_steps=2", "trainer.ckpt_every=2",
        "trainer.log_every=1"]


# ---- train: recipe files -----------------------------------------------------------------------
def _recipes(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    text = RECIPE.read_bytes()
    made = {
        "binary.yaml": (bytes(range(256)) * 4, "not a text file"),
        "recipe.yaml.gz": (gzip.compress(text), "gzip-compressed"),
        "empty.yaml": (b"", "empty recipe"),
        "cut.yaml": (b"head: toy\nmodel: {width: 8\n", "not valid YAML"),
        "list.yaml": (b"- head\n- toy\n", "must be a YAML mapping"),
        "nul.yaml": (b"head: toy\x00\n", "NUL"),
    }
    out = {}
    for name, (data, says) in made.items():
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(data)
        out[name] = (tmp_path / "in" / name, says)
    return out


@pytest.mark.parametrize("name", ["binary.yaml", "recipe.yaml.gz", "empty.yaml", "cut.yaml",
                                  "list.yaml", "nul.yaml"])
def test_train_bad_recipe_files(name, tmp_path, capsys):
    path, says = _recipes(tmp_path)[name]
    assert_user_error(["train", path, f"trainer.out_dir={tmp_path / 'run'}"], capsys,
                      mentions=[name, says], watch=[tmp_path])


def test_train_missing_recipe_or_a_folder(tmp_path, capsys):
    assert_user_error(["train", tmp_path / "none.yaml"], capsys,
                      mentions=["none.yaml: recipe file not found"], watch=[tmp_path])
    assert_user_error(["train", tmp_path], capsys, mentions=["is a folder"], watch=[tmp_path])


# ---- train: values -----------------------------------------------------------------------------
@pytest.mark.parametrize(("override", "says"), [
    ("model.width=-4", "model.width = -4: must be at least 1"),
    ("model.width=abc", "model.width = 'abc' must be an integer"),
    ("model.depth=0", "model.depth = 0"),
    ("trainer.lr=nan", "trainer.lr = nan: must be a finite number"),
    ("trainer.lr=1e38", "trainer.lr = 1e+38: must be at most 1"),
    ("trainer.lr=-0.1", "trainer.lr"),
    ("trainer.max_steps=1e20", "trainer.max_steps = 100000000000000000000: must be at most"),
    ("trainer.max_steps=0", "trainer.max_steps = 0"),
    ("trainer.batch_size=-1", "trainer.batch_size"),
    ("trainer.weight_decay=inf", "trainer.weight_decay"),
    ("trainer.seed=-3", "trainer.seed"),
    ("trainer.grad_clip=nan", "trainer.grad_clip"),
    ("data.std=0", "data.std = 0: must be above 0"),
    ("data.target=nine_gaussians", "did you mean 'eight_gaussians'"),
    ("sample.steps=-1", "sample.steps"),
    ("sample.method=rk5", "sample.method"),
    ("trainer.max_step=3", "did you mean 'trainer.max_steps'"),
])
def test_train_bad_values(override, says, tmp_path, capsys):
    assert_user_error(["train", RECIPE, *TINY, override, f"trainer.out_dir={tmp_path / 'run'}"],
                      capsys, mentions=[says], watch=[tmp_path])


# ---- train: the run folder ---------------------------------------------------------------------
def test_train_out_dir_that_is_a_file_empty_or_unwritable(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out_dir, says in [(tmp_path / "file", "is a file, not a folder"),
                          (tmp_path / "file" / "run", "is a file"),
                          ("''", "trainer.out_dir: an output folder is required"),
                          ("/proc/flow3d_run", "cannot write")]:
        assert_user_error(["train", RECIPE, *TINY, f"trainer.out_dir={out_dir}"], capsys,
                          mentions=["trainer.out_dir", says], watch=[tmp_path])


def test_train_refuses_an_earlier_run_resumes_or_overwrites_it(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", str(RECIPE), *TINY, f"trainer.out_dir={run}"]
    assert main(argv) == 0
    capsys.readouterr()
    # (the run folder's own mtime is not watched: the writability probe touches it)
    assert_user_error(argv, capsys, mentions=["trainer.out_dir", "--overwrite", "--resume"],
                      watch=[run])
    assert_user_error([*argv, "--resume", "--overwrite"], capsys,
                      mentions=["--resume", "--overwrite"], watch=[run])
    # --resume says where it continues from (here: already at max_steps)
    assert main([*argv, "trainer.max_steps=3", "--resume"]) == 0
    out = capsys.readouterr().out
    assert f"resuming from {run / 'checkpoints' / 'last'} at step 2 of 3" in out
    # --overwrite starts again in an emptied folder
    (run / "stale.txt").write_text("from before")
    assert main([*argv, "--overwrite"]) == 0
    assert not (run / "stale.txt").exists()
    meta = json.loads((run / "checkpoints" / "last" / "train_state.json").read_text())
    assert meta["step"] == 2


def test_train_resume_without_a_checkpoint_says_so(tmp_path, capsys):
    run = tmp_path / "fresh"
    assert main(["train", str(RECIPE), *TINY, "trainer.max_steps=1",
                 f"trainer.out_dir={run}", "--resume"]) == 0
    assert "no checkpoint under" in capsys.readouterr().out


def test_train_bundle_to_that_exists_needs_overwrite(tmp_path, capsys):
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "weights.safetensors").write_text("x")
    assert_user_error(["train", RECIPE, *TINY, f"trainer.out_dir={tmp_path / 'run'}",
                       f"trainer.bundle_to={tmp_path / 'bundle'}"], capsys,
                      mentions=["trainer.bundle_to", "--overwrite"], watch=[tmp_path])


class _NaNLoss:
    def __init__(self, original):
        self.original = original

    def __call__(self, head, model, batch, generator):
        out = self.original(head, model, batch, generator)
        out["loss"] = out["loss"] * float("nan")
        return out


def test_nan_at_the_first_step_names_no_checkpoint_and_leaves_nothing(tmp_path, monkeypatch,
                                                                     capsys):
    from flow3d.toy.head import ToyHead

    wrapper = _NaNLoss(ToyHead.loss)
    monkeypatch.setattr(ToyHead, "loss", lambda self, *a: wrapper(self, *a))
    run = tmp_path / "run"
    line = assert_user_error(["train", RECIPE, *TINY, f"trainer.out_dir={run}"], capsys,
                             mentions=["loss is nan at step 0", "no checkpoint was written"],
                             watch=[])
    assert "checkpoints" not in line
    assert not run.exists(), sorted(p.name for p in run.rglob("*"))  # no logs/tb left behind


def test_nan_later_names_the_checkpoint_that_exists(tmp_path, monkeypatch, capsys):
    from flow3d.toy.head import ToyHead

    original, calls = ToyHead.loss, [0]

    def loss(self, model, batch, generator):
        calls[0] += 1
        out = original(self, model, batch, generator)
        if calls[0] > 2:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(ToyHead, "loss", loss)
    run = tmp_path / "run"
    code = main(["train", str(RECIPE), *TINY, "trainer.max_steps=4", f"trainer.out_dir={run}"])
    err = capsys.readouterr().err
    assert code == 2 and "loss is nan at step 2" in err
    named = err.split("the last good checkpoint is ")[1].strip()
    assert json.loads((Path(named) / "train_state.json").read_text())["step"] == 2
    assert (run / "logs").is_dir()  # a run with checkpoints keeps its logs


# ---- sample and eval ---------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "says"), [
    (["--num", "0"], "--num = 0: must be at least 1"),
    (["--num", "-5"], "--num = -5"),
    (["--num", "1e12"], "--num"),
    (["--num", "lots"], "--num"),
    (["--steps", "0"], "--steps = 0: must be at least 1"),
    (["--steps", "-5"], "--steps = -5"),
    (["--steps", "1e9"], "--steps"),
    (["--shift", "nan"], "--shift = nan: must be a finite number"),
    (["--shift", "0"], "--shift = 0: must be above 0"),
    (["--seed", "-1"], "--seed = -1"),
    (["--method", "eulr"], "did you mean 'euler'"),
    (["--device", "tpu:9"], "--device"),
    (["--set", "stepz=3"], "did you mean 'sample.steps'"),
    (["--set", "eval_num=0"], "sample.eval_num = 0"),
    (["--set", "nokey"], "--set 'nokey': expected key=value"),
])
def test_sample_and_eval_bad_options(args, says, tmp_path, capsys):
    num = [] if "--num" in args else ["--num", "10"]
    assert_user_error(["sample", CKPT, *num, "--out", tmp_path / "s", *args], capsys,
                      mentions=[says], watch=[tmp_path])
    assert_user_error(["eval", CKPT, *num, "--json", tmp_path / "r.json", *args], capsys,
                      mentions=[says], watch=[tmp_path])


def test_sample_bad_output_folders(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.npy").write_text("x")
    for out, says in [(tmp_path / "file", "is a file, not a folder"),
                      (tmp_path / "file" / "s", "is a file"),
                      ("", "an output path is required"),
                      ("/proc/flow3d_samples", "cannot write")]:
        assert_user_error(["sample", CKPT, "--num", "10", "--out", out], capsys,
                          mentions=["--out", says], watch=[tmp_path])
    # (the folder's own mtime is not watched: the writability probe touches it)
    assert_user_error(["sample", CKPT, "--num", "10", "--out", tmp_path / "full"], capsys,
                      mentions=["--out", "folder is not empty (1 entries); pass --overwrite"],
                      watch=[tmp_path / "full"])


def test_sample_overwrite_replaces_the_whole_folder(tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    (out / "old.npy").write_text("x")
    assert main(["sample", str(CKPT), "--num", "10", "--out", str(out), "--steps", "2",
                 "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["samples.npy", "samples.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


def test_eval_bad_json_outputs(tmp_path, capsys):
    (tmp_path / "r.json").write_text("{}")
    (tmp_path / "dir.json").mkdir()
    for out, says in [(tmp_path / "r.json", "file exists; pass --overwrite"),
                      (tmp_path / "dir.json", "is a folder"),
                      (tmp_path / "r.txt", "unsupported extension"),
                      ("", "an output path is required")]:
        assert_user_error(["eval", CKPT, "--num", "10", "--json", out], capsys,
                          mentions=["--json", says], watch=[tmp_path])


def test_bad_checkpoints(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    for name in ("weights.safetensors", "train_state.safetensors", "train_state.json"):
        (tmp_path / "broken" / name).write_bytes(b"\x00garbage")
    (tmp_path / "broken" / "recipe.yaml").write_bytes(b"head: [unclosed\n")
    for ckpt, says in [(tmp_path / "missing", "checkpoint not found"),
                       (tmp_path / "empty", "not a flow3d checkpoint"),
                       (tmp_path / "broken", "unreadable recipe")]:
        for cmd in (["sample", ckpt, "--num", "3", "--out", tmp_path / "s"],
                    ["eval", ckpt, "--num", "3"]):
            assert_user_error(cmd, capsys, mentions=[ckpt.name, says], watch=[tmp_path])


def test_train_overrides_may_follow_the_flags(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", str(RECIPE), *TINY[:-3], f"trainer.out_dir={run}"]
    assert main([*argv, "--overwrite", "trainer.max_steps=1"]) == 0
    assert main([*argv, "--resume", "trainer.max_steps=2"]) == 0
    out = capsys.readouterr().out
    assert "resuming from" in out and "at step 1 of 2" in out
    assert_user_error([*argv, "--resume", "--bogus"], capsys, mentions=["--bogus"], watch=[run])
