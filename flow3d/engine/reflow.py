"""Reflow for any head: make ``(x_0, x_1)`` pairs with a teacher checkpoint, train on them.

One round of rectification (Liu et al. 2023, "Flow Straight and Fast", Alg. 1): integrate the
teacher ODE from noise ``x_0`` to ``x_1 = Phi(x_0)``, then fit a new flow to the deterministic
coupling ``(x_0, x_1)``. Its paths cross less, so few-step samples improve.

A head opts in by adding ``reflow: ReflowConfig | None = None`` to its data config and, when
it is set, returning :func:`reflow_dataset` from ``train_dataset``; its batches then carry
``x_0`` and ``x_1`` and its ``loss`` uses the given ``x_0`` instead of fresh noise. The head
provides ``source(num, generator, device) -> x_0``, ``velocity_field(model) -> v(x, t)`` and
``sample_settings(**overrides)`` (with ``steps`` / ``method`` / ``shift``) for the teacher.
The pairs are written once as safetensors shards (:mod:`flow3d.core.reflow`) and reused; the
teacher is the checkpoint's own head and EMA weights, so any head with those three methods
can be distilled.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from flow3d.core.reflow import MANIFEST, ReflowPairs, generate_pairs
from flow3d.core.time import time_grid
from flow3d.engine.checkpoint import load_model
from flow3d.engine.keys import check_method
from flow3d.errors import ConfigError
from flow3d.options import check_int

__all__ = ["ReflowConfig", "ensure_pairs", "reflow_dataset"]


@dataclasses.dataclass(frozen=True)
class ReflowConfig:
    """Where the pairs live and how the teacher makes them."""

    pairs_dir: str  # shards are generated here when it holds none yet
    teacher: str | None = None  # checkpoint; default: trainer.init_from
    num_pairs: int = 20000
    steps: int = 100  # teacher solver steps (accurate: the pairs are the target coupling)
    method: str = "midpoint"
    seed: int = 0
    batch_size: int = 4096  # teacher batch per solve
    shard_size: int = 50000  # pairs per shard file

    def __post_init__(self):
        name = "data.reflow.{}".format
        if not str(self.pairs_dir).strip():
            raise ConfigError("data.reflow.pairs_dir: a folder is required (got '')")
        for key, hi in (("num_pairs", 10**9), ("steps", 10**5), ("batch_size", 1 << 24),
                        ("shard_size", 1 << 24)):
            check_int(getattr(self, key), name(key), lo=1, hi=hi)
        check_int(self.seed, name("seed"), lo=0, hi=2**63 - 1)
        check_method(self.method, name("method"))


def _generate(cfg: ReflowConfig, teacher: str, out: Path) -> None:
    loaded = load_model(teacher, ema=True)
    settings = loaded.head.sample_settings(steps=cfg.steps, method=cfg.method)
    grid = time_grid(settings.steps, shift=getattr(settings, "shift", None))

    def noise(n: int, generator: torch.Generator) -> torch.Tensor:
        return loaded.head.source(n, generator, None)

    with torch.no_grad():
        generate_pairs(
            loaded.head.velocity_field(loaded.model),
            noise,
            cfg.num_pairs,
            out,
            shard_size=cfg.shard_size,
            batch_size=cfg.batch_size,
            method=settings.method,
            grid=grid,
            seed=cfg.seed,
        )


def ensure_pairs(head, cfg: ReflowConfig, *, init_from: str | None = None) -> Path:
    """Generate the pairs under ``cfg.pairs_dir`` unless shards are already there."""
    out = Path(cfg.pairs_dir)
    if not (out / MANIFEST).is_file():
        teacher = cfg.teacher or init_from
        if not teacher:
            raise ConfigError(
                f"data.reflow: {out} holds no pairs and no teacher is set "
                "(data.reflow.teacher or trainer.init_from)"
            )
        _generate(cfg, teacher, out)
    return out


def reflow_dataset(head, cfg: ReflowConfig, *, init_from: str | None = None):
    """The pairs dataset (items ``{"x_0", "x_1"}``), generated from the teacher if needed.

    The engine calls ``head.prepare_data()`` on one process first (Lightning's
    ``prepare_data``), so under DDP only that process generates."""
    return ReflowPairs(ensure_pairs(head, cfg, init_from=init_from))
