"""The Lightning module every head trains through.

It owns what is common to all heads: the optimiser (AdamW), the learning-rate schedule
(linear warm-up then cosine to ``min_lr_ratio``), the EMA, per-step seeding, the step-indexed
data loader, logging and checkpoints. The head owns the network and the loss. Gradient
clipping, accumulation, precision and the DDP/FSDP strategy are Lightning's (set by
:func:`flow3d.engine.train.train` from the recipe).
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from safetensors.torch import load_file

from flow3d.engine.checkpoint import (
    ema_file,
    latest_checkpoint,
    optimizer_state_from_flat,
    read_train_state,
    write_checkpoint,
)
from flow3d.engine.config import Recipe
from flow3d.engine.data import StepBatchSampler, epoch_rng
from flow3d.engine.ema import EMA
from flow3d.engine.head import Head
from flow3d.errors import DataError, TrainingError

__all__ = ["FlowModule", "learning_rate", "step_seed"]


def step_seed(seed: int, step: int, rank: int, micro: int = 0) -> int:
    """A 63-bit seed for (recipe seed, optimiser step, rank, micro-batch): independent
    streams per step, identical after a resume."""
    state = np.random.SeedSequence([int(seed), int(step), int(rank), int(micro)]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def learning_rate(step: int, cfg) -> float:
    """LR for optimiser step ``step`` (0-based): linear warm-up over ``warmup_steps``, then
    constant or half-cosine from ``lr`` down to ``lr * min_lr_ratio`` at ``max_steps``."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    scale = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * scale


def weights_fingerprint(model: torch.nn.Module) -> int:
    """A 62-bit hash of the exact bytes of every parameter (to compare ranks)."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") >> 2


def _load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str,
                  new: tuple[str, ...] = ()) -> None:
    """Load ``weights`` strictly, except that parameters named by a prefix in ``new`` may be
    absent from them (they keep the model's initialisation)."""
    if new:
        own = model.state_dict()
        keep = [k for k in own if k not in weights and k.startswith(tuple(new))]
        weights = {**weights, **{k: own[k] for k in keep}}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise DataError(f"{source}: weights do not match the recipe's model ({first})") from None


class FlowModule(L.LightningModule):
    """Trains ``head.build_model()`` with ``head.loss``; writes checkpoints to ``ckpt_root``."""

    def __init__(
        self,
        head: Head,
        recipe: Recipe,
        *,
        ckpt_root: Path,
        resume_from: Path | None = None,
        init_weights: dict[str, torch.Tensor] | None = None,
    ):
        super().__init__()
        self.head = head
        self.recipe = recipe
        self.cfg = recipe.trainer
        self.ckpt_root = Path(ckpt_root)
        torch.manual_seed(self.cfg.seed)  # identical initialisation on every rank
        self.model = head.build_model()
        if init_weights is not None:
            _load_weights(self.model, init_weights, f"trainer.init_from={self.cfg.init_from}",
                          tuple(self.cfg.init_new))
        self.ema = EMA(self.model, self.cfg.ema_decay, self.cfg.ema_warmup)
        self.step = 0  # optimiser steps taken (global, survives resume)
        self._resume_meta: dict[str, Any] | None = None
        self._resume_tensors: dict[str, torch.Tensor] | None = None
        self._dataset = None
        self._micro_losses: list[dict[str, float]] = []
        self._t_last = time.perf_counter()
        if resume_from is not None:
            self._load_resume(Path(resume_from))

    # ---- resume ----------------------------------------------------------------------------
    def _load_resume(self, path: Path) -> None:
        meta, tensors = read_train_state(path)
        _load_weights(self.model, load_file(str(path / "weights.safetensors")), str(path))
        self.ema.load_state_dict(load_file(str(ema_file(path))))
        self.step = int(meta["step"])
        self._resume_meta, self._resume_tensors = meta, tensors

    def on_fit_start(self) -> None:
        self.ema.to(self.device)
        if self._resume_meta is not None and "optimizer" in self._resume_meta:
            opt = self.trainer.optimizers[0]
            opt.load_state_dict(
                optimizer_state_from_flat(self._resume_tensors, self._resume_meta["optimizer"])
            )
        if self._resume_tensors is not None and "rng/torch" in self._resume_tensors:
            torch.set_rng_state(self._resume_tensors["rng/torch"])
        self._resume_meta = self._resume_tensors = None

    # ---- data ------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Once per node before training (downloads, caches, reflow pairs): the head's
        optional ``prepare_data()``."""
        prepare = getattr(self.head, "prepare_data", None)
        if prepare is not None:
            prepare()

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        if self._dataset is None:
            self._dataset = self.head.train_dataset()
        dataset, cfg = self._dataset, self.cfg
        sampler = StepBatchSampler(
            lambda epoch: self.head.epoch_batches(
                dataset, epoch_rng(cfg.seed, epoch), cfg.batch_size
            ),
            start=self.step * cfg.accumulate,
            stop=cfg.max_steps * cfg.accumulate,
            rank=self.trainer.global_rank,
            world_size=self.trainer.world_size,
        )
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.head.collate,
            num_workers=cfg.num_workers,
            persistent_workers=cfg.num_workers > 0,
        )

    # ---- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay}]
        if no_decay:  # biases and norms are not decayed
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return torch.optim.AdamW(groups, lr=learning_rate(self.step, self.cfg))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        micro = batch_idx % self.cfg.accumulate
        seed = step_seed(self.cfg.seed, self.step, self.global_rank, micro)
        torch.manual_seed(seed)  # dropout and any stray global randomness
        generator = torch.Generator(device=self.device).manual_seed(seed)
        out = self.head.loss(self.model, batch, generator)
        loss = out["loss"]
        finite = bool(torch.isfinite(loss.detach()).all())
        if self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            last = latest_checkpoint(self.ckpt_root)
            kept = (f"the last good checkpoint is {last}" if last is not None
                    else "no checkpoint was written")
            raise TrainingError(
                f"loss is {loss.detach().item()} at step {self.step} "
                f"(recipe {self.recipe.name or self.recipe.head}); training stopped, {kept}"
            )
        self._micro_losses.append({k: float(v.detach()) for k, v in out.items()})
        self.log("loss", loss.detach(), prog_bar=True, logger=False, on_step=True)
        return loss  # Lightning divides by accumulate_grad_batches

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        lr = learning_rate(self.step, self.cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step(closure=optimizer_closure)
        self.ema.update(self.model, self.step)
        self.step += 1
        self._after_step(lr)

    # ---- logging and checkpoints -----------------------------------------------------------
    def _after_step(self, lr: float) -> None:
        cfg = self.cfg
        if self._micro_losses and (self.step % cfg.log_every == 0 or self.step == cfg.max_steps):
            keys = self._micro_losses[-1].keys()
            metrics = {
                f"train/{k}": float(np.mean([m[k] for m in self._micro_losses if k in m]))
                for k in keys
            }
            now = time.perf_counter()
            metrics["train/lr"] = lr
            metrics["train/sec_per_step"] = (now - self._t_last) / cfg.log_every
            self._t_last = now
            for logger in self.loggers:
                logger.log_metrics(metrics, step=self.step)
        self._micro_losses = []
        if self.step % cfg.ckpt_every == 0 or self.step == cfg.max_steps:
            self.save_checkpoint(periodic=self.step % cfg.ckpt_every == 0)

    def save_checkpoint(self, *, periodic: bool) -> Path:
        """Write ``last`` (and ``step_<N>`` when ``periodic``) from rank 0; all ranks first
        compare weight fingerprints so a desynchronised DDP run is caught, not saved."""
        fingerprint = weights_fingerprint(self.model)
        prints = [fingerprint]
        if self.trainer.world_size > 1:
            gathered = self.all_gather(torch.tensor(fingerprint, dtype=torch.int64, device="cpu"))
            prints = [int(v) for v in gathered.reshape(-1).tolist()]
            if len(set(prints)) != 1:
                raise TrainingError(f"ranks hold different weights at step {self.step}: {prints}")
        last = self.ckpt_root / "last"
        if self.global_rank == 0:
            info = {
                "world_size": self.trainer.world_size,
                "rank_fingerprints": prints,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            kwargs = dict(
                model_state=self.model.state_dict(),
                ema_state=self.ema.state_dict(),
                recipe=self.recipe,
                step=self.step,
                optimizer_state=self.trainer.optimizers[0].state_dict(),
                extra_tensors={"rng/torch": torch.get_rng_state()},
                info=info,
            )
            if periodic:
                write_checkpoint(self.ckpt_root / f"step_{self.step:07d}", **kwargs)
            write_checkpoint(last, **kwargs)
            for logger in self.loggers:
                logger.save()
        if self.trainer.world_size > 1:
            self.trainer.strategy.barrier("flow3d-checkpoint")
        return last
