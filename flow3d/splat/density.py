"""Trainable Gaussians with their Adam state, and 3DGS adaptive density control.

:class:`SplatParams` holds the parameters as leaf tensors (SH split into the DC band and the
rest, which learn at different rates), one Adam per parameter (eps 1e-15, as 3DGS), and the
densification statistics. Every change of the set of Gaussians (clone, split, prune) goes
through :meth:`SplatParams.rebuild`, which carries each kept Gaussian's Adam moments along and
gives new ones zero moments, so the optimiser never sees stale rows.

Adaptive density control (Kerbl et al. 2023, Sec. 5.2; thresholds as in gsplat's default
strategy): Gaussians whose mean screen-space positional gradient (in NDC units: pixel gradient
times W/2, H/2 and the number of cameras per step) exceeds ``grad_threshold`` are

- cloned when small (largest scale <= ``clone_scale`` x scene extent): a copy in place;
- split when large: replaced by two drawn from the Gaussian itself, scales divided by 1.6;

then Gaussians with opacity < ``prune_opacity`` are removed, and (``prune_big``) those larger
than ``prune_scale`` x extent in the world or ``prune_screen`` x image size on screen.
Every ``opacity_reset_every`` steps opacities are clamped to at most twice ``prune_opacity``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flow3d.core import so3
from flow3d.splat.gaussians import Gaussians
from flow3d.splat.project import Projected

PARAM_NAMES = ("means", "quats", "log_scales", "opacity_logits", "sh0", "shN")


@dataclass(frozen=True)
class DensityControl:
    grad_threshold: float = 2e-4
    clone_scale: float = 0.01  # x scene extent: at most this large -> clone, else split
    split_factor: float = 1.6
    prune_opacity: float = 0.005
    prune_scale: float = 0.1  # x scene extent
    prune_screen: float = 0.15  # x max(W, H)
    max_gaussians: int = 1_000_000


class SplatParams:
    """Parameters ``means [N, 3], quats [N, 4], log_scales [N, 3], opacity_logits [N],
    sh0 [N, 1, 3], shN [N, K - 1, 3]`` with one Adam each, and per-Gaussian statistics
    ``grad2d [N]`` (summed NDC gradient norms), ``count [N]`` (views seen in) and
    ``radii2d [N]`` (largest screen radius / image size)."""

    def __init__(self, gaussians: Gaussians, lrs: dict[str, float]):
        g = gaussians.detach()
        values = {"means": g.means, "quats": g.quats, "log_scales": g.log_scales,
                  "opacity_logits": g.opacity_logits, "sh0": g.sh[:, :1], "shN": g.sh[:, 1:]}
        self.params = {k: v.clone().contiguous().requires_grad_(True) for k, v in values.items()}
        self.optimizers = {k: torch.optim.Adam([p], lr=lrs[k], eps=1e-15)
                           for k, p in self.params.items()}
        self.reset_stats()

    def __len__(self) -> int:
        return self.params["means"].shape[0]

    def gaussians(self) -> Gaussians:
        p = self.params
        return Gaussians(p["means"], p["quats"], p["log_scales"], p["opacity_logits"],
                         torch.cat([p["sh0"], p["shN"]], dim=1))

    def reset_stats(self) -> None:
        n = len(self)
        self.grad2d = torch.zeros(n)
        self.count = torch.zeros(n)
        self.radii2d = torch.zeros(n)

    # ---- optimisation ---------------------------------------------------------------------
    def set_lr(self, name: str, lr: float) -> None:
        for group in self.optimizers[name].param_groups:
            group["lr"] = lr

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)

    def accumulate(self, projected: Projected, width: int, height: int) -> None:
        """Add this step's screen-space gradient norms (``projected.means2d`` must have had
        ``retain_grad()`` before backward) for the Gaussians visible in each camera."""
        grad = projected.means2d.grad  # [C, N, 2]
        if grad is None:
            return
        c = grad.shape[0]
        scale = torch.tensor([width / 2.0 * c, height / 2.0 * c], dtype=grad.dtype)
        norms = (grad.detach() * scale).norm(dim=-1)  # [C, N]
        visible = (projected.radii > 0).all(-1)  # [C, N]
        self.grad2d += torch.where(visible, norms, torch.zeros_like(norms)).sum(0)
        self.count += visible.sum(0).to(self.count.dtype)
        radii = projected.radii.max(-1).values.to(torch.float32) / max(width, height)
        self.radii2d = torch.maximum(self.radii2d, radii.max(0).values)

    # ---- changing the set -----------------------------------------------------------------
    @torch.no_grad()
    def rebuild(self, keep: Tensor, new: dict[str, Tensor] | None = None) -> None:
        """Keep rows ``keep`` (indices or a mask) and append ``new`` rows (every parameter),
        carrying Adam moments and statistics along (zero for new rows)."""
        if keep.dtype == torch.bool:
            keep = keep.nonzero().flatten()
        added = 0 if new is None else new["means"].shape[0]
        for name, p in list(self.params.items()):
            rows = p.detach()[keep]
            if added:
                rows = torch.cat([rows, new[name].to(p.dtype)])
            q = rows.contiguous().requires_grad_(True)
            opt = self.optimizers[name]
            state = opt.state.pop(p, None)
            if state:
                for key in ("exp_avg", "exp_avg_sq"):
                    v = state[key][keep]
                    state[key] = torch.cat([v, v.new_zeros(added, *v.shape[1:])]) if added \
                        else v
                opt.state[q] = state
            opt.param_groups[0]["params"] = [q]
            self.params[name] = q

        def extend(t: Tensor) -> Tensor:
            return torch.cat([t[keep], t.new_zeros(added)])

        self.grad2d, self.count, self.radii2d = (extend(t) for t in
                                                 (self.grad2d, self.count, self.radii2d))

    # ---- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"params": {k: v.detach().clone() for k, v in self.params.items()},
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "stats": {"grad2d": self.grad2d, "count": self.count, "radii2d": self.radii2d}}

    def load_state_dict(self, state: dict) -> None:
        for name, value in state["params"].items():
            q = value.clone().contiguous().requires_grad_(True)
            self.params[name] = q
            opt = self.optimizers[name]
            opt.state.clear()
            opt.param_groups[0]["params"] = [q]
            opt.load_state_dict(state["optimizers"][name])
        stats = state["stats"]
        self.grad2d, self.count, self.radii2d = stats["grad2d"], stats["count"], stats["radii2d"]


# ---- adaptive density control ----------------------------------------------------------------
@torch.no_grad()
def densify(params: SplatParams, control: DensityControl, extent: float,
            generator: torch.Generator | None = None) -> dict[str, int]:
    """Clone and split (see the module docstring); returns how many of each."""
    n = len(params)
    mean_grad = params.grad2d / params.count.clamp_min(1)
    grow = mean_grad > control.grad_threshold  # [N]
    big = params.params["log_scales"].exp().max(-1).values > control.clone_scale * extent
    clone, split = grow & ~big, grow & big
    budget = max(0, control.max_gaussians - n)  # each clone or split adds one Gaussian
    if int(grow.sum()) > budget:  # keep the strongest candidates within the cap
        order = torch.argsort(torch.where(grow, mean_grad, torch.full_like(mean_grad, -1.0)),
                              descending=True)
        chosen = torch.zeros_like(grow)
        chosen[order[:budget]] = True
        clone, split = clone & chosen, split & chosen
    p = {k: v.detach() for k, v in params.params.items()}
    new = {k: [v[clone]] for k, v in p.items()}
    if split.any():
        idx = split.nonzero().flatten()
        scales = p["log_scales"][idx].exp()  # [S, 3]
        quats = p["quats"][idx]
        rot = so3.quat_to_rotmat(quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        noise = torch.randn(2, len(idx), 3, generator=generator, dtype=scales.dtype)
        offsets = torch.einsum("sij,ksj->ksi", rot, noise * scales)  # [2, S, 3]
        for k, v in p.items():
            rows = v[idx].repeat(2, *([1] * (v.ndim - 1)))
            if k == "means":
                rows = rows + offsets.reshape(-1, 3)
            elif k == "log_scales":
                rows = rows - math.log(control.split_factor)
            new[k].append(rows)
    new_rows = {k: torch.cat(v) for k, v in new.items()}
    params.rebuild(~split, new_rows)
    return {"cloned": int(clone.sum()), "split": int(split.sum())}


@torch.no_grad()
def prune(params: SplatParams, control: DensityControl, extent: float, *,
          prune_big: bool) -> int:
    """Remove transparent Gaussians (and, with ``prune_big``, huge ones); returns how many."""
    p = params.params
    drop = torch.sigmoid(p["opacity_logits"]) < control.prune_opacity
    if prune_big:
        drop |= p["log_scales"].exp().max(-1).values > control.prune_scale * extent
        drop |= params.radii2d > control.prune_screen
    if drop.all():  # never remove every Gaussian: keep the most opaque one
        drop[torch.argmax(p["opacity_logits"])] = False
    if drop.any():
        params.rebuild(~drop)
    return int(drop.sum())


@torch.no_grad()
def reset_opacity(params: SplatParams, control: DensityControl) -> None:
    """Clamp opacities to at most ``2 prune_opacity`` (3DGS: 0.01) and zero their moments."""
    p = params.params["opacity_logits"]
    ceiling = math.log(2 * control.prune_opacity / (1 - 2 * control.prune_opacity))
    p.clamp_(max=ceiling)
    state = params.optimizers["opacity_logits"].state.get(p)
    if state:
        state["exp_avg"].zero_()
        state["exp_avg_sq"].zero_()


def initial_log_scales(points: Tensor, k: int = 3, chunk: int = 2048) -> Tensor:
    """3DGS initial scales: log of the RMS distance to the ``k`` nearest other points,
    isotropic ``[N, 3]``."""
    n = points.shape[0]
    if n < 2:
        return torch.full((n, 3), math.log(0.01))
    k = min(k, n - 1)
    out = []
    for start in range(0, n, chunk):
        d2 = torch.cdist(points[start:start + chunk], points).square()  # [c, N]
        d2[torch.arange(d2.shape[0]), torch.arange(start, start + d2.shape[0])] = math.inf
        near = d2.topk(k, dim=1, largest=False).values
        out.append(near.mean(1).clamp_min(1e-14).sqrt())
    return torch.cat(out).log().unsqueeze(-1).expand(-1, 3).contiguous()
