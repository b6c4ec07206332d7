"""The toy head's demo: train the eight-Gaussians recipe (unless a bundled checkpoint exists),
sample it, score it, and save the samples, plot and metrics under ``out_dir``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from flow3d.io import atomic_write_text

__all__ = ["BUNDLED", "RECIPE", "demo"]

_ROOT = Path(__file__).resolve().parents[2]
RECIPE = _ROOT / "recipes" / "toy" / "eight_gaussians.yaml"
BUNDLED = _ROOT / "checkpoints" / "toy" / "eight_gaussians"

log = logging.getLogger(__name__)


def demo(out_dir: Path, *, steps: int | None = None) -> dict:
    """Run the toy demo; returns the metrics written to ``out_dir/metrics.json``.

    ``steps`` overrides the recipe's ``trainer.max_steps`` when training is needed.
    """
    import torch

    out_dir = Path(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2D MLP: more threads only add contention
    try:
        return _demo(out_dir, steps)
    finally:
        torch.set_num_threads(threads)


def _demo(out_dir: Path, steps: int | None) -> dict:
    from flow3d.engine.checkpoint import load_model
    from flow3d.engine.config import load_recipe
    from flow3d.engine.train import train

    if (BUNDLED / "recipe.yaml").is_file():
        ckpt, source = BUNDLED, "bundled checkpoint"
    else:
        overrides = [f"trainer.out_dir={out_dir / 'run'}", "trainer.progress=false"]
        if steps is not None:
            overrides.append(f"trainer.max_steps={steps}")
        ckpt, source = train(load_recipe(RECIPE, overrides)), "trained now"
    loaded = load_model(ckpt)
    samples = loaded.sample(loaded.recipe.sample.num, seed=0)
    paths = loaded.save_samples(samples, out_dir)
    two_step = loaded.sample(loaded.recipe.sample.num, seed=0, steps=2)
    metrics = {
        "checkpoint": str(ckpt),
        "source": source,
        "num_samples": len(samples),
        f"{loaded.recipe.sample.steps}_step": loaded.head.evaluate(samples),
        "2_step": loaded.head.evaluate(two_step),
        "files": [str(p) for p in paths],
    }
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return metrics
