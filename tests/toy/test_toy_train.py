"""The toy recipe end to end through the command line: train, sample, eval, reflow.

Stated results (default suite, tiny settings below; 2000 samples vs 2000 target samples,
whose own noise floor is about 0.002):
- after 800 steps the 50-step Euler samples are within energy distance 0.04 of the target
  (measured 0.022);
- one reflow round (4000 pairs, 300 steps) at least halves the energy distance of 2-step
  Euler samples (measured 0.188 -> 0.030).
The full recipes (slow tests) reach < 0.01 and a > 3x 2-step improvement.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flow3d.cli import main
from flow3d.engine.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes" / "toy"
FAST = ["data.num_train=8000", "trainer.progress=false",
        "trainer.batch_size=256"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP on a shared CPU: more threads only contend
    out = tmp_path_factory.mktemp("toy")
    code = main(["train", str(RECIPES / "eight_gaussians.yaml"), *FAST,
                 "trainer.max_steps=800", "trainer.ckpt_every=400", f"trainer.out_dir={out}"])
    assert code == 0
    yield out
    torch.set_num_threads(threads)


def _eval(ckpt, capsys, *extra) -> dict:
    capsys.readouterr()
    assert main(["eval", str(ckpt), *extra]) == 0
    return json.loads(capsys.readouterr().out)["metrics"]


def test_trained_toy_reaches_stated_distance(trained, capsys):
    metrics = _eval(trained, capsys, "--steps", "50")
    print("toy 800 steps, 50 Euler steps:", metrics)
    assert metrics["energy_distance"] < 0.04, metrics


def test_sample_command_writes_npy_and_png(trained, tmp_path, capsys):
    assert main(["sample", str(trained), "--num", "300", "--out", str(tmp_path),
                 "--steps", "8", "--method", "heun", "--seed", "4"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "samples.npy"), str(tmp_path / "samples.png")]
    x = np.load(tmp_path / "samples.npy")
    assert x.shape == (300, 2) and np.isfinite(x).all()
    same = load_model(trained).sample(300, seed=4, steps=8, method="heun")
    np.testing.assert_allclose(x, same.numpy(), rtol=1e-6, atol=1e-6)


def test_reflow_improves_two_step_samples(trained, tmp_path, capsys):
    before = _eval(trained, capsys, "--steps", "2")
    code = main(["train", str(RECIPES / "eight_gaussians_reflow.yaml"), *FAST,
                 f"trainer.init_from={trained / 'checkpoints' / 'last'}",
                 "data.reflow.num_pairs=4000", "data.reflow.steps=40",
                 f"data.reflow.pairs_dir={tmp_path / 'pairs'}", "trainer.max_steps=300",
                 f"trainer.out_dir={tmp_path / 'run'}"])
    assert code == 0
    assert (tmp_path / "pairs" / "manifest.json").is_file()
    after = _eval(tmp_path / "run", capsys, "--steps", "2")
    print("2-step before reflow:", before, "after:", after)
    assert after["energy_distance"] < 0.5 * before["energy_distance"], (before, after)


@pytest.mark.slow
def test_full_recipes_reach_stated_numbers(tmp_path, capsys):
    base, rf = tmp_path / "base", tmp_path / "reflow"
    assert main(["train", str(RECIPES / "eight_gaussians.yaml"), "trainer.progress=false",
                 f"trainer.out_dir={base}"]) == 0
    assert _eval(base, capsys)["energy_distance"] < 0.01
    assert main(["train", str(RECIPES / "eight_gaussians_reflow.yaml"), "trainer.progress=false",
                 f"trainer.init_from={base / 'checkpoints' / 'last'}",
                 f"data.reflow.pairs_dir={rf / 'pairs'}", f"trainer.out_dir={rf}"]) == 0
    before = _eval(base, capsys, "--steps", "2")["energy_distance"]
    after = _eval(rf, capsys, "--steps", "2")["energy_distance"]
    assert after < before / 3, (before, after)
