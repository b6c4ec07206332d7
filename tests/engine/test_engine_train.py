"""The Lightning engine end to end on the tiny toy head: exact resume after SIGKILL, NaN stop,
2-process DDP with identical weights, accumulation, LR schedule, per-step seeding."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from flow3d.engine.checkpoint import latest_checkpoint, load_model
from flow3d.engine.config import TrainerConfig, load_recipe
from flow3d.engine.module import learning_rate, step_seed
from flow3d.engine.train import train
from flow3d.errors import ConfigError, TrainingError

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "toy" / "eight_gaussians.yaml"
TINY = ["model.width=32", "model.depth=2", "data.num_train=1000", "trainer.batch_size=64",
        "trainer.progress=false", "trainer.lr=3e-3", "trainer.warmup_steps=5",
        "trainer.ema_decay=0.9"]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _losses(out_dir: Path) -> dict[int, float]:
    """step -> logged train/loss, across every CSV version of the run (later ones win)."""
    rows: dict[int, float] = {}
    for f in sorted((out_dir / "logs" / "csv").glob("version_*/metrics.csv"),
                    key=lambda p: int(p.parent.name.split("_")[1])):
        with f.open() as fh:
            for row in csv.DictReader(fh):
                if row.get("train/loss"):
                    rows[int(row["step"])] = float(row["train/loss"])
    return rows


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    steps, every, kill_at = 40, 10, 27  # last checkpoint before the kill: step 20
    common = [*TINY, f"trainer.max_steps={steps}", f"trainer.ckpt_every={every}",
              "trainer.log_every=1"]
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    ref = train(load_recipe(RECIPE, [*common, f"trainer.out_dir={ref_dir}"]))

    # a real process, killed with SIGKILL from inside the loss of micro-step `kill_at`
    script = textwrap.dedent(f"""
        import os, signal, sys
        from flow3d.toy.head import ToyHead
        original, calls = ToyHead.loss, [0]
        def loss(self, *args):
            calls[0] += 1
            if calls[0] == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, *args)
        ToyHead.loss = loss
        from flow3d.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    argv = ["train", str(RECIPE), *common, f"trainer.out_dir={run_dir}"]
    proc = subprocess.run([sys.executable, "-c", script, *argv], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    last = latest_checkpoint(run_dir / "checkpoints")
    assert json.loads((last / "train_state.json").read_text())["step"] == 20

    resumed = subprocess.run([sys.executable, "-m", "flow3d", *argv, "--resume"], env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    want, got = _losses(ref_dir), _losses(run_dir)
    assert sorted(want) == list(range(1, steps + 1))
    assert sorted(got) == list(range(1, steps + 1))
    for step in range(21, steps + 1):
        assert got[step] == pytest.approx(want[step], rel=1e-5, abs=1e-7), step
    a = load_model(ref, ema=False).model.state_dict()
    b = load_model(run_dir, ema=False).model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


class _NaNAfter:
    """A loss wrapper that returns NaN from the `n`-th call on."""

    def __init__(self, original, n):
        self.original, self.n, self.calls = original, n, 0

    def __call__(self, head, model, batch, generator):
        self.calls += 1
        out = self.original(head, model, batch, generator)
        if self.calls >= self.n:
            out["loss"] = out["loss"] * float("nan")
        return out


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from flow3d.toy.head import ToyHead

    wrapper = _NaNAfter(ToyHead.loss, 8)
    monkeypatch.setattr(ToyHead, "loss", lambda self, *a: wrapper(self, *a))
    recipe = load_recipe(RECIPE, [*TINY, "trainer.max_steps=20", "trainer.ckpt_every=5",
                                  f"trainer.out_dir={tmp_path}"])
    with pytest.raises(TrainingError, match="loss is nan at step 7") as info:
        train(recipe)
    assert "\n" not in str(info.value)
    last = latest_checkpoint(tmp_path / "checkpoints")
    assert json.loads((last / "train_state.json").read_text())["step"] == 5
    weights = load_model(last, ema=False).model.state_dict()
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_nan_loss_through_cli_is_one_line(tmp_path, monkeypatch, capsys):
    from flow3d.cli import main
    from flow3d.toy.head import ToyHead

    wrapper = _NaNAfter(ToyHead.loss, 1)
    monkeypatch.setattr(ToyHead, "loss", lambda self, *a: wrapper(self, *a))
    code = main(["train", str(RECIPE), *TINY, "trainer.max_steps=3",
                 f"trainer.out_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("flow3d: error: loss is nan at step 0")
    assert "Traceback" not in err


def test_two_process_ddp_keeps_ranks_identical(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "flow3d", "train", str(RECIPE), *TINY, "trainer.devices=2",
         "trainer.strategy=ddp", "trainer.max_steps=4", "trainer.ckpt_every=2",
         f"trainer.out_dir={tmp_path}"],
        env=_env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("checkpoint:") == 1  # only rank 0 reports
    for name in ("step_0000002", "last"):
        meta = json.loads((tmp_path / "checkpoints" / name / "train_state.json").read_text())
        assert meta["world_size"] == 2
        prints = meta["rank_fingerprints"]
        assert len(prints) == 2 and prints[0] == prints[1]
    assert meta["step"] == 4


def test_accumulation_and_bf16_train(tmp_path):
    recipe = load_recipe(RECIPE, [*TINY, "trainer.max_steps=6", "trainer.accumulate=2",
                                  "trainer.precision=bf16-mixed", "trainer.log_every=1",
                                  f"trainer.out_dir={tmp_path}"])
    last = train(recipe)
    meta = json.loads((last / "train_state.json").read_text())
    assert meta["step"] == 6
    losses = _losses(tmp_path)
    assert sorted(losses) == list(range(1, 7))
    assert all(v == v and v < 100 for v in losses.values())
    # training further from `last` with a larger budget continues the step count
    more = train(recipe.replace(trainer=recipe.trainer.__class__(
        **{**recipe.trainer.__dict__, "max_steps": 8})), resume="auto")
    assert json.loads((more / "train_state.json").read_text())["step"] == 8


def test_init_from_starts_from_checkpoint_weights(tmp_path):
    first = train(load_recipe(RECIPE, [*TINY, "trainer.max_steps=3",
                                       f"trainer.out_dir={tmp_path / 'a'}"]))
    recipe = load_recipe(RECIPE, [*TINY, "trainer.max_steps=1", "trainer.lr=1e-12",
                                  "trainer.warmup_steps=0", f"trainer.init_from={first}",
                                  f"trainer.out_dir={tmp_path / 'b'}"])
    second = train(recipe)
    a = load_model(first, ema=True).model.state_dict()
    b = load_model(second, ema=False).model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("override", "expected"), [
    ("trainer.max_steps=0", "trainer.max_steps = 0: must be at least 1"),
    ("trainer.max_steps=1e20", "trainer.max_steps = 100000000000000000000: must be at most"),
    ("trainer.lr=nan", "trainer.lr = nan: must be a finite number"),
    ("trainer.lr=1e38", "trainer.lr = 1e+38: must be at most 1"),
    ("trainer.lr=0", "trainer.lr = 0: must be above 0"),
    ("trainer.batch_size=-2", "trainer.batch_size = -2: must be at least 1"),
    ("trainer.ema_decay=1.5", "trainer.ema_decay = 1.5: must be at most 1"),
    ("trainer.out_dir=''", "trainer.out_dir: an output folder is required"),
    ("model.width=-4", "model.width = -4: must be at least 1"),
    ("data.std=inf", "data.std = inf: must be a finite number"),
    ("sample.steps=0", "sample.steps = 0: must be at least 1"),
    ("sample.method=eulr", "sample.method = 'eulr': not a solver (did you mean 'euler'?)"),
])
def test_bad_recipe_values_are_config_errors_when_loaded(override, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)) as info:
        load_recipe(RECIPE, [*TINY, override])
    assert str(info.value).startswith(f"{RECIPE}: ") and "\n" not in str(info.value)


def test_learning_rate_schedule():
    cfg = TrainerConfig(lr=1.0, max_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [learning_rate(s, cfg) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5)
    assert learning_rate(110, cfg) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    const = TrainerConfig(lr=0.5, lr_schedule="constant")
    assert learning_rate(999, const) == 0.5


def test_step_seeds_are_distinct_and_reproducible():
    seeds = {step_seed(0, s, r, m) for s in range(50) for r in range(4) for m in range(2)}
    assert len(seeds) == 400
    assert step_seed(1, 2, 3, 0) == step_seed(1, 2, 3, 0) != step_seed(2, 2, 3, 0)


def test_resume_or_init_with_another_model_is_a_data_error(tmp_path):
    from flow3d.errors import DataError

    first = train(load_recipe(RECIPE, [*TINY, "trainer.max_steps=2",
                                       f"trainer.out_dir={tmp_path / 'a'}"]))
    wider = [*TINY, "model.width=48", "trainer.max_steps=4"]
    with pytest.raises(DataError, match="do not match"):
        train(load_recipe(RECIPE, [*wider, f"trainer.out_dir={tmp_path / 'a'}"]), resume=first)
    with pytest.raises(DataError, match="trainer.init_from=.*do not match"):
        train(load_recipe(RECIPE, [*wider, f"trainer.init_from={first}",
                                   f"trainer.out_dir={tmp_path / 'b'}"]))


@pytest.mark.parametrize(("override", "expected"), [
    ("trainer.strategy=dpp", "invalid strategy"),
    ("trainer.precision=17", "Precision '17' is invalid"),
])
def test_lightning_rejections_are_config_errors(tmp_path, override, expected):
    recipe = load_recipe(RECIPE, [*TINY, override, f"trainer.out_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=expected):
        train(recipe)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_and_samples_on_gpu_with_bf16(tmp_path):
    recipe = load_recipe(RECIPE, [*TINY, "trainer.accelerator=gpu", "trainer.precision=bf16-mixed",
                                  "trainer.max_steps=5", f"trainer.out_dir={tmp_path}"])
    last = train(recipe)
    loaded = load_model(last, device="cuda")
    x = loaded.sample(64, steps=4)
    assert x.shape == (64, 2) and torch.isfinite(x).all()
