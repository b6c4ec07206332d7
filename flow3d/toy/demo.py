"""The toy head's demo: the eight-Gaussians flow and its one-round reflow (bundled checkpoints,
or trained now when absent), sampled, scored (energy distance, MMD) and saved under
``out_dir``: ``samples.npy``, ``samples.png``, ``reflow_2step/samples.png``, ``metrics.json``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from flow3d.engine.checkpoint import PROJECT_ROOT, load_model
from flow3d.engine.config import load_recipe
from flow3d.engine.train import train
from flow3d.io import atomic_write_text

__all__ = ["BUNDLED", "RECIPE", "demo"]

RECIPE = PROJECT_ROOT / "recipes" / "toy" / "eight_gaussians.yaml"
REFLOW_RECIPE = PROJECT_ROOT / "recipes" / "toy" / "eight_gaussians_reflow.yaml"
BUNDLED = PROJECT_ROOT / "checkpoints" / "toy" / "eight_gaussians"
BUNDLED_REFLOW = PROJECT_ROOT / "checkpoints" / "toy" / "eight_gaussians_reflow"

log = logging.getLogger(__name__)


def demo(out_dir: Path, *, steps: int | None = None) -> dict:
    """Run the toy demo; returns the metrics written to ``out_dir/metrics.json``.

    ``steps`` overrides both recipes' ``trainer.max_steps`` when training is needed.
    """
    out_dir = Path(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2D MLP: more threads only add contention
    try:
        return _demo(out_dir, steps)
    finally:
        torch.set_num_threads(threads)


def _checkpoint(bundled: Path, recipe: Path, run: Path, steps: int | None, *extra: str):
    if (bundled / "recipe.yaml").is_file():
        return bundled, "bundled checkpoint"
    overrides = [f"trainer.out_dir={run}", "trainer.progress=false", *extra]
    if steps is not None:
        overrides.append(f"trainer.max_steps={steps}")
    return train(load_recipe(recipe, overrides), overwrite=True), "trained now"  # its own folder


def _demo(out_dir: Path, steps: int | None) -> dict:
    ckpt, source = _checkpoint(BUNDLED, RECIPE, out_dir / "run", steps)
    base = load_model(ckpt)
    num = base.recipe.sample.num
    samples = base.sample(num, seed=0)
    paths = base.save_samples(samples, out_dir)
    metrics = {
        "checkpoint": str(ckpt),
        "source": source,
        "num_samples": num,
        f"{base.recipe.sample.steps}_step": base.head.evaluate(samples),
        "2_step": base.head.evaluate(base.sample(num, seed=0, steps=2)),
    }
    # one reflow round: the same flow made straight enough for 2 steps
    rf_ckpt, rf_source = _checkpoint(
        BUNDLED_REFLOW if source == "bundled checkpoint" else out_dir / "no_bundle",
        REFLOW_RECIPE, out_dir / "reflow_run", steps,
        f"trainer.init_from={ckpt}", f"data.reflow.pairs_dir={out_dir / 'reflow_run' / 'pairs'}",
    )
    reflow = load_model(rf_ckpt)
    rf_samples = reflow.sample(num, seed=0, steps=2)
    paths += reflow.save_samples(rf_samples, out_dir / "reflow_2step")
    metrics["reflow"] = {"checkpoint": str(rf_ckpt), "source": rf_source,
                         "2_step": reflow.head.evaluate(rf_samples)}
    metrics["files"] = [str(p) for p in paths]
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return metrics
