"""``train(recipe)``: build the head, the Lightning trainer and the module; resume exactly.

    from flow3d.engine.config import load_recipe
    from flow3d.engine.train import train
    ckpt = train(load_recipe("recipes/toy/eight_gaussians.yaml"), resume="auto")

Scale-out is Lightning's: ``trainer.devices=N`` (``strategy=ddp``; gloo on CPU), multi-node
from torchrun or SLURM environment variables with ``trainer.num_nodes``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

import torch

from flow3d.engine.checkpoint import (
    bundle_checkpoint,
    find_checkpoint,
    latest_checkpoint,
    read_checkpoint,
)
from flow3d.engine.config import Recipe
from flow3d.engine.heads import get_head
from flow3d.errors import ConfigError

__all__ = ["checkpoint_root", "is_rank_zero", "train"]


def checkpoint_root(recipe: Recipe) -> Path:
    return Path(recipe.trainer.out_dir) / "checkpoints"


def _check(recipe: Recipe) -> None:
    cfg = recipe.trainer
    positive = ("max_steps", "batch_size", "accumulate", "devices", "num_nodes", "ckpt_every",
                "log_every")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"trainer.{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.lr <= 0:
        raise ConfigError(f"trainer.lr must be > 0, got {cfg.lr}")
    if cfg.grad_clip is not None and cfg.grad_clip <= 0:
        raise ConfigError(f"trainer.grad_clip must be > 0 or null, got {cfg.grad_clip}")
    if not 0.0 <= cfg.ema_decay <= 1.0:
        raise ConfigError(f"trainer.ema_decay must be in [0, 1], got {cfg.ema_decay}")


def _resume_path(recipe: Recipe, resume: str | os.PathLike | None) -> Path | None:
    if resume is None:
        return None
    if str(resume) == "auto":
        return latest_checkpoint(checkpoint_root(recipe))
    return find_checkpoint(resume)


def is_rank_zero() -> bool:
    """True on the process that reports (rank 0, or the only process)."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def train(recipe: Recipe, *, resume: str | os.PathLike | None = None) -> Path:
    """Train ``recipe`` and return its ``checkpoints/last`` directory.

    ``resume``: None (start fresh), ``"auto"`` (latest checkpoint under the run's out_dir, or
    fresh when there is none) or a checkpoint path. The run continues with exactly the batches,
    noise and optimiser state of an uninterrupted run.
    """
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from flow3d.engine.module import FlowModule

    _check(recipe)
    cfg = recipe.trainer
    root = checkpoint_root(recipe)
    start = _resume_path(recipe, resume)
    init_weights = None
    if start is None and cfg.init_from:
        _, init_weights, _ = read_checkpoint(cfg.init_from, ema=True)
    head = get_head(recipe.head)(recipe)
    module = FlowModule(head, recipe, ckpt_root=root, resume_from=start, init_weights=init_weights)
    remaining = cfg.max_steps - module.step
    if remaining <= 0:
        return root / "last" if (root / "last").is_dir() else start

    logs = Path(cfg.out_dir) / "logs"
    loggers = [CSVLogger(str(logs), name="csv")]
    # tensorboard is a dependency, but a broken install should not stop training: keep CSV
    with contextlib.suppress(ModuleNotFoundError):
        loggers.append(TensorBoardLogger(str(logs), name="tb", default_hp_metric=False))
    strategy = cfg.strategy
    if strategy == "auto" and cfg.devices * cfg.num_nodes > 1:
        strategy = "ddp"
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        trainer = L.Trainer(
            accelerator=cfg.accelerator,
            devices=cfg.devices,
            num_nodes=cfg.num_nodes,
            strategy=strategy,
            precision=cfg.precision,
            max_steps=remaining,
            max_epochs=-1,
            accumulate_grad_batches=cfg.accumulate,
            gradient_clip_val=cfg.grad_clip,
            logger=loggers,
            log_every_n_steps=cfg.log_every,
            enable_checkpointing=False,
            enable_progress_bar=cfg.progress,
            enable_model_summary=False,
            use_distributed_sampler=False,
            num_sanity_val_steps=0,
            default_root_dir=cfg.out_dir,
        )
    except (MisconfigurationException, ValueError) as e:
        # Lightning rejects the trainer section (precision, strategy, accelerator, devices)
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"recipe {recipe.name or recipe.head!r}: trainer: {first}") from None

    with warnings.catch_warnings():
        # we log and seed ourselves; these Lightning hints do not apply
        for pattern in (".*does not have many workers.*", ".*smaller than the logging interval.*",
                        ".*LeafSpec.*", ".*all_gather is deprecated.*"):
            warnings.filterwarnings("ignore", pattern)
        torch.manual_seed(cfg.seed)
        precision = torch.get_float32_matmul_precision()
        if torch.cuda.is_available():
            torch.set_float32_matmul_precision("high" if cfg.tf32 else "highest")
        try:
            trainer.fit(module)
        finally:  # the caller's process-wide setting is theirs
            torch.set_float32_matmul_precision(precision)
    if cfg.bundle_to and trainer.is_global_zero:
        bundle_checkpoint(root / "last", cfg.bundle_to, half=cfg.bundle_half)
    return root / "last"
