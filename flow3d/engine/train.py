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
import shutil
import warnings
from pathlib import Path

import torch

from flow3d.engine.checkpoint import (
    bundle_checkpoint,
    find_checkpoint,
    latest_checkpoint,
    read_checkpoint,
    read_train_state,
)
from flow3d.engine.config import Recipe
from flow3d.engine.heads import get_head
from flow3d.errors import ConfigError, DataError
from flow3d.io import check_output_dir, prepare_output_dir

__all__ = ["check_run_dir", "checkpoint_root", "is_rank_zero", "resume_checkpoint", "train"]


def checkpoint_root(recipe: Recipe) -> Path:
    return Path(recipe.trainer.out_dir) / "checkpoints"


def resume_checkpoint(recipe: Recipe, resume: str | os.PathLike | None) -> Path | None:
    """The checkpoint a run continues from: None for a fresh run, the latest one under the
    run's ``checkpoints/`` for ``"auto"`` (None when there is none yet), else ``resume``."""
    if resume is None:
        return None
    if str(resume) == "auto":
        return latest_checkpoint(checkpoint_root(recipe))
    return find_checkpoint(resume)


def check_run_dir(recipe: Recipe, *, resume: bool = False, overwrite: bool = False) -> Path:
    """The output rule (:mod:`flow3d.io`) for ``trainer.out_dir`` and ``trainer.bundle_to``:
    a folder holding an earlier run is refused unless the run resumes it or replaces it.
    Writes nothing."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in trainer.out_dir and --overwrite "
                          "replaces it: give one of them")
    cfg = recipe.trainer
    out = check_output_dir(cfg.out_dir, "trainer.out_dir", overwrite=overwrite, resume=resume,
                           resumable=True)
    if cfg.bundle_to:
        bundle = Path(cfg.bundle_to)
        if bundle.exists() and not (overwrite or resume):
            raise DataError(f"trainer.bundle_to {bundle}: exists; pass --overwrite to replace "
                            "it or --resume to continue the run that wrote it")
        check_output_dir(bundle, "trainer.bundle_to", overwrite=True)
    return out


def is_rank_zero() -> bool:
    """True on the process that reports (rank 0, or the only process)."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def train(recipe: Recipe, *, resume: str | os.PathLike | None = None,
          overwrite: bool = False) -> Path:
    """Train ``recipe`` and return its ``checkpoints/last`` directory.

    ``resume``: None (start fresh), ``"auto"`` (latest checkpoint under the run's out_dir, or
    fresh when there is none) or a checkpoint path. The run continues with exactly the batches,
    noise and optimiser state of an uninterrupted run. A fresh run refuses an ``out_dir`` that
    holds files unless ``overwrite`` (which empties it first), so runs are never mixed. A run
    that fails before writing a checkpoint removes the log folders it created.
    """
    cfg = recipe.trainer
    # DDP ranks > 0 are started by rank 0's trainer, after it has prepared the folder
    lead = is_rank_zero()
    out = Path(cfg.out_dir)
    if lead:
        check_run_dir(recipe, resume=resume is not None, overwrite=overwrite)
    root = checkpoint_root(recipe)
    start = resume_checkpoint(recipe, resume)
    init_weights = None
    if start is None and cfg.init_from:
        _, init_weights, _ = read_checkpoint(cfg.init_from, ema=True)
    head = get_head(recipe.head)(recipe)
    created = not out.exists()
    if lead:
        prepare_output_dir(out, overwrite=overwrite)
    logs_before = _log_versions(out)
    step_before = _latest_step(root)
    try:
        return _fit(recipe, head, start, init_weights)
    except BaseException:
        if lead and _latest_step(root) == step_before:
            _remove_new_logs(out, logs_before, created)
        raise


def _log_versions(out: Path) -> set[Path]:
    return set((out / "logs").glob("*/version_*"))


def _latest_step(root: Path) -> int | None:
    last = latest_checkpoint(root)
    return None if last is None else int(read_train_state(last)[0].get("step", 0))


def _remove_new_logs(out: Path, before: set[Path], created: bool) -> None:
    """After a run that wrote no checkpoint: its log versions (and the folders it created
    for them) go, so a failed start leaves nothing that looks like a run."""
    for version in _log_versions(out) - before:
        shutil.rmtree(version, ignore_errors=True)
    for folder in (out / "logs" / "csv", out / "logs" / "tb", out / "logs", out / "checkpoints",
                   *([out] if created else [])):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty


def _fit(recipe: Recipe, head, start: Path | None, init_weights) -> Path:
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from flow3d.engine.module import FlowModule

    cfg = recipe.trainer
    root = checkpoint_root(recipe)
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
