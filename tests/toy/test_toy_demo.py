"""The toy demo writes samples, a plot and metrics (bundled checkpoint, or a short run)."""

from __future__ import annotations

import json

import pytest

from flow3d.toy import demo


@pytest.mark.slow  # ~20 s; the same training paths run in test_toy_train.py
def test_toy_demo_writes_outputs(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "BUNDLED", tmp_path / "no_bundle")  # force the training path
    metrics = demo.demo(tmp_path / "out", steps=30)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["source"] == "trained now"
    assert (tmp_path / "out" / "samples.npy").is_file()
    assert (tmp_path / "out" / "samples.png").is_file()
    assert saved["50_step"]["energy_distance"] > 0  # 30 steps: far from converged, but finite
    assert saved["reflow"]["source"] == "trained now"
    assert (tmp_path / "out" / "reflow_2step" / "samples.png").is_file()


def test_toy_demo_uses_bundled_checkpoint_when_present(tmp_path):
    if not (demo.BUNDLED / "recipe.yaml").is_file():
        pytest.skip(f"no bundled toy checkpoint at {demo.BUNDLED}")
    metrics = demo.demo(tmp_path)
    assert metrics["source"] == metrics["reflow"]["source"] == "bundled checkpoint"
    assert metrics["50_step"]["energy_distance"] < 0.01  # the recipe's stated distance
    # measured: 2 Euler steps 0.104 before reflow, 0.0085 after
    assert metrics["reflow"]["2_step"]["energy_distance"] < metrics["2_step"]["energy_distance"] / 5
