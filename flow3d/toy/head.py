"""The 2D toy head: the worked example of how a domain plugs into the engine.

A head names three frozen dataclasses (the recipe's ``model``, ``data`` and ``sample``
sections) and implements four methods: ``build_model``, ``train_dataset``, ``loss`` and
``sample``. Everything else (optimiser, EMA, checkpoints, resume, DDP, logging, the command
line) is the engine's. Rectified flow (Liu et al. 2023): ``x_0 ~ N(0, I)``, ``x_1 ~`` target,
``x_t = t x_1 + (1 - t) x_0`` and the network regresses ``dx_t = x_1 - x_0``.

With ``data.reflow`` set, training pairs ``(x_0, x_1)`` come from a teacher checkpoint
(:mod:`flow3d.engine.reflow`) instead of independent noise: one round of rectification, which
straightens the flow so that 1-2 step sampling works.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flow3d.core.solvers import solve
from flow3d.core.time import time_grid
from flow3d.engine.flow import affine_path, couple, flow_loss, time_sampler
from flow3d.engine.head import Head
from flow3d.engine.keys import check_method, suggest
from flow3d.engine.reflow import ReflowConfig, ensure_pairs, reflow_dataset
from flow3d.errors import ConfigError
from flow3d.io import atomic_path
from flow3d.options import check_float, check_int
from flow3d.toy.metrics import energy_distance, mmd_rbf
from flow3d.toy.model import VelocityMLP
from flow3d.toy.targets import TARGETS, sample_target

__all__ = ["ToyDataConfig", "ToyHead", "ToyModelConfig", "ToySampleConfig"]


@dataclasses.dataclass(frozen=True)
class ToyModelConfig:
    width: int = 128
    depth: int = 3
    num_freqs: int = 16

    def __post_init__(self):
        check_int(self.width, "model.width", lo=1, hi=1 << 16)
        check_int(self.depth, "model.depth", lo=1, hi=256)
        check_int(self.num_freqs, "model.num_freqs", lo=0, hi=64)


@dataclasses.dataclass(frozen=True)
class ToyDataConfig:
    target: str = "eight_gaussians"  # see flow3d.toy.targets.TARGETS
    num_train: int = 20000  # a fixed training set drawn once with `seed`
    radius: float = 3.0
    std: float = 0.15
    seed: int = 0
    reflow: ReflowConfig | None = None  # train on teacher pairs (rectification)

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ConfigError(f"data.target = {self.target!r}: not a toy target"
                              + suggest(self.target, sorted(TARGETS)))
        check_int(self.num_train, "data.num_train", lo=2, hi=10**8)
        check_float(self.radius, "data.radius", lo=0.0, hi=1e6, lo_open=True)
        check_float(self.std, "data.std", lo=0.0, hi=1e6, lo_open=True)
        check_int(self.seed, "data.seed", lo=0, hi=2**63 - 1)


@dataclasses.dataclass(frozen=True)
class ToySampleConfig:
    num: int = 2000
    steps: int = 50
    method: str = "euler"  # any flow3d.core.solvers method
    shift: float | None = None  # SD3 time shift of the grid
    eval_num: int = 2000  # target samples the metrics compare against
    eval_seed: int = 12345

    def __post_init__(self):
        check_int(self.num, "sample.num", lo=1, hi=10**8)
        check_int(self.steps, "sample.steps", lo=1, hi=10**5)
        check_method(self.method, "sample.method")
        if self.shift is not None:
            check_float(self.shift, "sample.shift", lo=0.0, hi=1e3, lo_open=True)
        check_int(self.eval_num, "sample.eval_num", lo=2, hi=10**8)
        check_int(self.eval_seed, "sample.eval_seed", lo=0, hi=2**63 - 1)


class _Points(torch.utils.data.Dataset):
    def __init__(self, x_1: Tensor):  # x_1: [N, 2]
        self.x_1 = x_1

    def __len__(self) -> int:
        return len(self.x_1)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"x_1": self.x_1[i]}


class ToyHead(Head):
    """Rectified flow on a 2D target with an MLP velocity."""

    name = "toy"
    model_config = ToyModelConfig
    data_config = ToyDataConfig
    sample_config = ToySampleConfig

    dim = 2

    def build_model(self) -> nn.Module:
        m = self.recipe.model
        return VelocityMLP(self.dim, m.width, m.depth, m.num_freqs)

    # ---- data --------------------------------------------------------------------------
    def target(self, n: int, seed: int) -> Tensor:
        d = self.recipe.data
        return sample_target(d.target, n, seed=seed, radius=d.radius, std=d.std)

    def prepare_data(self) -> None:
        d = self.recipe.data
        if d.reflow is not None:
            ensure_pairs(self, d.reflow, init_from=self.recipe.trainer.init_from)

    def train_dataset(self) -> torch.utils.data.Dataset:
        d = self.recipe.data
        if d.reflow is not None:
            return reflow_dataset(self, d.reflow, init_from=self.recipe.trainer.init_from)
        return _Points(self.target(d.num_train, d.seed))

    # ---- training ----------------------------------------------------------------------
    def source(self, num: int, generator: torch.Generator, device=None) -> Tensor:
        """``x_0 ~ N(0, I)``: ``[num, 2]``."""
        return torch.randn(num, self.dim, generator=generator, device=device)

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        flow = self.recipe.flow
        x_1 = batch["x_1"]  # [B, 2]
        b = x_1.shape[0]
        if "x_0" in batch:  # reflow pairs: keep the teacher's coupling
            x_0 = batch["x_0"]
        else:
            x_0 = self.source(b, generator, x_1.device)
            x_0, x_1 = couple(flow, x_0, x_1)
        t = time_sampler(flow).sample(b, generator=generator, device=x_1.device)  # [B]
        ps = affine_path(flow).sample(x_0, x_1, t)
        loss = flow_loss(flow, model(ps.x_t, t), ps.dx_t, t)
        return {"loss": loss}

    # ---- sampling ----------------------------------------------------------------------
    def velocity_field(self, model: nn.Module):
        """The callable ``v(x, t)`` the solvers integrate (conditioning would be bound here)."""
        return lambda x, t: model(x, t)

    def solve_from(self, model: nn.Module, x_0: Tensor, cfg: ToySampleConfig) -> Tensor:
        grid = time_grid(cfg.steps, shift=cfg.shift).to(x_0.device)
        return solve(self.velocity_field(model), x_0, method=cfg.method, grid=grid).x

    @torch.no_grad()
    def sample(self, model: nn.Module, num: int, *, seed: int = 0, **overrides: Any) -> Tensor:
        """``num`` samples ``[num, 2]`` integrated from ``t = 0`` to ``1``."""
        cfg = self.sample_settings(**overrides)
        device = next(model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(int(seed))
        x_0 = self.source(num, generator, device)
        was_training = model.training
        model.eval()
        try:
            return self.solve_from(model, x_0, cfg).float().cpu()
        finally:
            model.train(was_training)

    def evaluate(self, samples: Tensor) -> dict[str, float]:
        """Distances between ``samples`` and fresh target samples (lower is better)."""
        cfg = self.recipe.sample
        ref = self.target(cfg.eval_num, cfg.eval_seed)
        return {"energy_distance": energy_distance(samples, ref), "mmd": mmd_rbf(samples, ref)}

    def save_samples(self, samples: Tensor, out_dir: Path) -> list[Path]:
        """``samples.npy`` (float32 ``[N, 2]``) and ``samples.png`` (scatter over target)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir = Path(out_dir)
        npy, png = out_dir / "samples.npy", out_dir / "samples.png"
        with atomic_path(npy) as tmp:
            np.save(tmp, samples.numpy().astype(np.float32))
        ref = self.target(len(samples), self.recipe.sample.eval_seed).numpy()
        fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
        ax.scatter(ref[:, 0], ref[:, 1], s=2, c="0.75", label="target")
        ax.scatter(samples[:, 0], samples[:, 1], s=2, c="tab:blue", label="samples")
        lim = 1.5 * self.recipe.data.radius
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=self.recipe.name)
        ax.legend(loc="upper right", markerscale=4, fontsize=7)
        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
        plt.close(fig)
        return [npy, png]
