"""Training-free guidance for flows: wrappers around ``velocity(x, t)`` and solver hooks.

Each piece composes with any solver of :mod:`flow3d.core.solvers`:

- velocity wrappers (:class:`ClassifierFreeGuidance`, :class:`ClassifierGuidance`,
  :class:`FlowChef`) are themselves velocity callables, passed as ``solve(wrapper, x_0, ...)``;
- hooks (:class:`OptimizerGuidance`, :class:`Inpainting`) are ``hook(x, t_next, step) -> x``
  callables, passed as ``solve(..., hooks=[hook])`` and applied after every solver step.

``t`` follows the solver: a 0-dim tensor (or a ``[B]`` tensor when a wrapper is called from
training code). ``interval=(lo, hi)`` limits a guidance to ``lo <= t <= hi``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from flow3d.core.paths import expand_time
from flow3d.core.schedulers import LinearScheduler, Scheduler

__all__ = ["ClassifierFreeGuidance", "ClassifierGuidance", "FlowChef", "Inpainting",
           "OptimizerGuidance", "ProjectPrediction", "renoise"]

Velocity = Callable[[Tensor, Tensor], Tensor]


def _check_interval(interval: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in interval)
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"interval must satisfy 0 <= lo <= hi <= 1, got {interval}")
    return lo, hi


def _rows(v: Tensor, like: Tensor) -> Tensor:
    """A per-sample ``[B]`` tensor reshaped to broadcast over ``like [B, ...]`` (dtype kept)."""
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def _active(t: Tensor, interval: tuple[float, float]) -> Tensor:
    """Bool tensor of ``t``'s shape: is the guidance on at ``t``?"""
    t = torch.as_tensor(t)
    return (t >= interval[0]) & (t <= interval[1])


# ---- classifier-free guidance ---------------------------------------------------------------


class ClassifierFreeGuidance:
    """``v = v_c + w (v_c - v_u)`` (Ho & Salimans 2022, in the velocity form used by SD3);
    ``w = 0`` is the conditional field itself.

    - ``cond(x, t)``, ``uncond(x, t)``: the conditional and unconditional fields (conditions
      bound by closure).
    - ``interval``: guidance is on only for ``interval[0] <= t <= interval[1]`` (Kynkäänniemi
      et al. 2024, "Applying Guidance in a Limited Interval"); elsewhere ``v = v_c`` and the
      unconditional field is not evaluated (for a scalar ``t``).
    - ``groups``: per-channel weights along dim 1, ``[(index | slice | list, weight), ...]``
      (SplatFlow guides image, depth and pose channels with separate weights); channels in no
      group use ``weight``. Groups must not overlap. ``channel_dim``: the dimension the groups
      index (1 for ``[B, C, ...]`` states; -1 for token states ``[B, M, C]``).
    """

    def __init__(
        self,
        cond: Velocity,
        uncond: Velocity,
        weight: float = 0.0,
        interval: tuple[float, float] = (0.0, 1.0),
        groups: Sequence[tuple[int | slice | Sequence[int], float]] | None = None,
        channel_dim: int = 1,
    ):
        self.cond, self.uncond = cond, uncond
        self.weight = float(weight)
        self.channel_dim = int(channel_dim)
        self.interval = _check_interval(interval)
        self.groups = list(groups) if groups else []
        self._cache: dict[tuple, Tensor] = {}

    def channel_weights(self, v: Tensor) -> Tensor:
        """Weights broadcastable to ``v``: ``[C, 1, ...]`` (as many 1s as dimensions after the
        channel one) with groups, else 0-dim."""
        key = (v.shape[1:], v.dtype, v.device)
        if key not in self._cache:
            self._cache[key] = self._build_weights(v)
        return self._cache[key]

    def _build_weights(self, v: Tensor) -> Tensor:
        if not self.groups:
            return torch.tensor(self.weight, dtype=v.dtype, device=v.device)
        dim = self.channel_dim % v.ndim if v.ndim else 0
        if v.ndim < 2 or dim == 0:
            raise ValueError(f"channel groups need a state with batch and channel dimensions "
                             f"(channel_dim {self.channel_dim}), got {tuple(v.shape)}")
        n = v.shape[dim]
        w = torch.full((n,), self.weight, dtype=v.dtype, device=v.device)
        taken = torch.zeros(n, dtype=torch.bool, device=v.device)
        for index, weight in self.groups:
            if isinstance(index, int) and not -n <= index < n:
                raise ValueError(f"channel group {index} outside dim {dim} of size {n}")
            sel = torch.zeros_like(taken)
            sel[index] = True
            if (sel & taken).any():
                raise ValueError(f"channel group {index!r} overlaps an earlier group")
            taken |= sel
            w[sel] = float(weight)
        return w.reshape(-1, *([1] * (v.ndim - 1 - dim)))

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        v_c = self.cond(x, t)  # [B, ...]
        on = _active(t, self.interval)
        if on.ndim == 0 and not bool(on):
            return v_c
        v_u = self.uncond(x, t)
        guided = v_c + self.channel_weights(v_c) * (v_c - v_u)
        if on.ndim == 0:
            return guided
        return torch.where(_rows(on, v_c), guided, v_c)


# ---- classifier guidance ---------------------------------------------------------------------


class ClassifierGuidance:
    """Steer a flow towards a class with a classifier of the *noisy* state (Dhariwal & Nichol
    2021, "Diffusion Models Beat GANs on Image Synthesis", classifier guidance), in the
    velocity form of the linear path ``x_t = t x_1 + (1 - t) x_0``, ``x_0 ~ N(0, I)``:

        v_w(x, t) = v(x, t) + w (1 - t) / t * grad_x log p(c | x_t = x)

    Why this form: Tweedie gives ``v(x, t) = x / t + (1 - t) / t * grad_x log p_t(x)`` for
    the marginal field, and the same for the field of the class (``p_t(x | c)``); the two
    differ by ``(1 - t) / t * grad_x log p(c | x_t = x)``. So ``w = 1`` with the exact
    posterior turns the unconditional field into the class's exactly (and a class-conditional
    field into a sharper one); ``w > 1`` sharpens further, as in the reference.

    - ``log_prob(x, t)``: ``[B]`` log-probabilities of each sample's requested class given the
      noisy state (the classes bound by closure); differentiated here, so ``velocity`` never
      is (one classifier backward pass per call, no network Jacobian).
    - ``interval``: on only for ``interval[0] <= t <= interval[1]``.
    - ``t_min``: the factor ``(1 - t) / t`` is taken at ``max(t, t_min)``: it diverges at
      ``t = 0``, where the exact posterior's gradient vanishes with it but a learned one's
      need not.
    """

    def __init__(
        self,
        velocity: Velocity,
        log_prob: Callable[[Tensor, Tensor], Tensor],
        scale: float,
        interval: tuple[float, float] = (0.0, 1.0),
        t_min: float = 0.05,
    ):
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        if not 0.0 < t_min <= 1.0:
            raise ValueError(f"t_min must be in (0, 1], got {t_min}")
        self.velocity, self.log_prob, self.scale = velocity, log_prob, float(scale)
        self.interval, self.t_min = _check_interval(interval), float(t_min)

    def gradient(self, x: Tensor, t: Tensor) -> Tensor:
        """``grad_x log p(c | x_t = x)`` summed over the batch's own classes (shape of x)."""
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_prob(z, t).sum(), z)
        return grad

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        v = self.velocity(x, t)
        on = _active(t, self.interval)
        if self.scale == 0.0 or (on.ndim == 0 and not bool(on)):
            return v
        t_b = expand_time(torch.as_tensor(t, dtype=x.dtype, device=x.device), x)
        factor = (1.0 - t_b) / t_b.clamp_min(self.t_min)
        step = self.scale * factor * self.gradient(x, t).to(v.dtype)
        if on.ndim != 0:
            step = step * _rows(on, step)
        return v + step


# ---- FlowChef --------------------------------------------------------------------------------


class FlowChef:
    """Steer a rectified flow with a loss on its predicted data, without backpropagating
    through the network (Patel et al. 2024, "Steering Rectified Flow Models in the Vector Field
    for Controlled Image Generation", FlowChef, Alg. 1).

    At ``(x_t, t)``: ``v = velocity(x_t, t)``, ``x1_hat = x_t + (1 - t) v`` and
    ``g = grad L(x1_hat)`` taken at ``x1_hat`` (the Jacobian ``d x1_hat / d x_t`` is replaced
    by the identity: gradient skipping). The steered field is ``v - step_size * g``, so a
    solver step of size ``h`` moves ``x_t`` by ``-h step_size g`` before the flow step, as in
    FlowChef's update. ``loss(x1_hat)`` returns a scalar or per-sample losses (summed).
    """

    def __init__(
        self,
        velocity: Velocity,
        loss: Callable[[Tensor], Tensor],
        step_size: float,
        interval: tuple[float, float] = (0.0, 1.0),
    ):
        if step_size < 0:
            raise ValueError(f"step_size must be >= 0, got {step_size}")
        self.velocity, self.loss, self.step_size = velocity, loss, float(step_size)
        self.interval = _check_interval(interval)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        v = self.velocity(x, t)
        on = _active(t, self.interval)
        if on.ndim == 0 and not bool(on):
            return v
        t_b = expand_time(torch.as_tensor(t, dtype=x.dtype, device=x.device), x)
        with torch.enable_grad():
            x1_hat = (x + (1.0 - t_b) * v).detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.loss(x1_hat).sum(), x1_hat)
        if on.ndim != 0:
            grad = grad * _rows(on, grad)
        return v - self.step_size * grad


# ---- optimiser guidance ----------------------------------------------------------------------

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


class OptimizerGuidance:
    """Interleave ``steps`` optimiser steps on a differentiable loss with the flow steps, and
    keep the best iterate (GuideFlow3D, Yin et al. 2025, "optimization-guided rectified flow").

    Used as a solver hook: after a flow step lands on ``(x, t_next)`` (every ``every``-th step,
    inside ``interval``), run Adam or SGD on a copy of ``x`` minimising

    - ``target="state"``: ``loss(x)``, or
    - ``target="x1"``: ``loss(x + (1 - t) velocity(x, t))`` (full backpropagation through
      ``velocity``, which must then be given), or
    - ``target="x1_skip"``: ``loss(z + (1 - t) v)`` with ``v = velocity(x, t)`` evaluated once
      at the hook's start and held fixed (gradient skipping, as :class:`FlowChef`: the
      Jacobian of the prediction is taken as the identity): the loss of the predicted data for
      one velocity evaluation per hook call and no backpropagation through the network,

    and return, per sample, the iterate with the lowest loss (the start included, so the loss
    never rises). ``loss`` returns ``[B]`` per-sample losses or a scalar (then the whole batch
    is kept or rejected together). ``manifold`` (optional) projects iterates with ``projx``.
    ``nfe`` counts the velocity evaluations spent.
    """

    def __init__(
        self,
        loss: Callable[[Tensor], Tensor],
        *,
        steps: int = 5,
        lr: float = 0.05,
        optimizer: str = "adam",
        target: str = "state",
        velocity: Velocity | None = None,
        interval: tuple[float, float] = (0.0, 1.0),
        every: int = 1,
        manifold=None,
    ):
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose from {list(_OPTIMIZERS)}")
        if target not in ("state", "x1", "x1_skip"):
            raise ValueError(f"target must be 'state', 'x1' or 'x1_skip', got {target!r}")
        if target != "state" and velocity is None:
            raise ValueError(f"target={target!r} needs the velocity to predict x1")
        if steps < 1 or every < 1:
            raise ValueError(f"steps and every must be >= 1, got {steps}, {every}")
        self.loss, self.steps, self.lr = loss, int(steps), float(lr)
        self.optimizer, self.target, self.velocity = optimizer, target, velocity
        self.interval, self.every, self.manifold = _check_interval(interval), int(every), manifold
        self.nfe = 0

    def _per_sample(self, z: Tensor, t: Tensor, shift: Tensor | None = None) -> Tensor:
        if self.target == "x1":
            self.nfe += 1
            z = z + (1.0 - expand_time(t, z)) * self.velocity(z, t)
        elif shift is not None:
            z = z + shift
        loss = self.loss(z)
        return loss.reshape(1).expand(z.shape[0]) if loss.ndim == 0 else loss

    def __call__(self, x: Tensor, t_next: Tensor, step: int) -> Tensor:
        if step % self.every or not bool(_active(t_next, self.interval).all()):
            return x
        t = torch.as_tensor(t_next, dtype=x.dtype, device=x.device)
        z = x.detach().clone().requires_grad_(True)
        opt = _OPTIMIZERS[self.optimizer]([z], lr=self.lr)
        best, best_loss = x.detach().clone(), None
        shift = None
        if self.target == "x1_skip":
            with torch.no_grad():
                shift = (1.0 - expand_time(t, x)) * self.velocity(x.detach(), t)
            self.nfe += 1
        with torch.enable_grad():
            for i in range(self.steps + 1):
                loss = self._per_sample(z, t, shift)  # [B], the loss of the current iterate
                with torch.no_grad():
                    if best_loss is None:
                        best_loss = loss.detach().clone()
                    better = loss < best_loss
                    best_loss = torch.where(better, loss, best_loss)
                    best = torch.where(_rows(better, best), z.detach(), best)
                if i == self.steps:
                    break
                opt.zero_grad()
                loss.sum().backward()
                opt.step()
                if self.manifold is not None:
                    with torch.no_grad():
                        z.copy_(self.manifold.projx(z))
        return best


# ---- inpainting ------------------------------------------------------------------------------


def renoise(
    x_t: Tensor,
    t: Tensor | float,
    s: Tensor | float,
    *,
    scheduler: Scheduler | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Move ``x_t`` back to an earlier time ``s <= t`` of the affine path by adding noise:
    ``x_s = (alpha_s / alpha_t) x_t + sqrt(sigma_s^2 - (alpha_s sigma_t / alpha_t)^2) eps``.

    If ``x_t = alpha_t x_1 + sigma_t x_0`` with Gaussian ``x_0``, then ``x_s`` has the path's
    marginal at ``s`` given ``x_1`` (the flow analogue of RePaint's forward jump, Lugmayr et
    al. 2022, Alg. 1 line 12).
    """
    scheduler = scheduler if scheduler is not None else LinearScheduler()
    ct = scheduler(torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device))
    cs = scheduler(torch.as_tensor(s, dtype=x_t.dtype, device=x_t.device))
    ratio = cs.alpha_t / ct.alpha_t.clamp_min(1e-12)
    std = (cs.sigma_t**2 - (ratio * ct.sigma_t) ** 2).clamp_min(0.0).sqrt()
    eps = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype, device=x_t.device)
    return ratio * x_t + std * eps


class Inpainting:
    """Replacement inpainting (RePaint-style, Lugmayr et al. 2022) as a solver hook.

    After each step to ``t_next`` the known entries (``mask`` true) are replaced by the known
    data noised along the path, ``alpha_t known + sigma_t eps`` with fresh noise; at
    ``t_next = 1`` they are set to ``known`` exactly. With ``resample = r > 0`` (and
    ``velocity``), each step is followed by ``r`` jumps: renoise back to ``t_next - jump``
    (:func:`renoise`), integrate forward again with ``jump_steps`` Euler steps, replace again,
    which harmonises the generated entries with the known ones. ``mask`` and ``known`` must
    broadcast against the state.
    """

    def __init__(
        self,
        known: Tensor,
        mask: Tensor,
        *,
        scheduler: Scheduler | None = None,
        resample: int = 0,
        jump: float = 0.05,
        jump_steps: int = 1,
        velocity: Velocity | None = None,
        generator: torch.Generator | None = None,
    ):
        if resample < 0 or jump_steps < 1 or not 0.0 < jump <= 1.0:
            raise ValueError(
                f"need resample >= 0, jump_steps >= 1, 0 < jump <= 1; got {resample}, "
                f"{jump_steps}, {jump}"
            )
        if resample and velocity is None:
            raise ValueError("resampling jumps need the velocity to integrate forward again")
        self.known, self.mask = known, mask.bool()
        self.scheduler = scheduler if scheduler is not None else LinearScheduler()
        self.resample, self.jump, self.jump_steps = int(resample), float(jump), int(jump_steps)
        self.velocity, self.generator = velocity, generator
        self.nfe = 0

    def replace(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Known entries of ``x`` set to the known data at path time ``t``."""
        t = float(t)
        if t >= 1.0:
            known_t = self.known.to(x.dtype).expand_as(x)
        else:
            c = self.scheduler(torch.tensor(t, dtype=x.dtype, device=x.device))
            eps = torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)
            known_t = c.alpha_t * self.known + c.sigma_t * eps
        return torch.where(self.mask, known_t, x)

    def __call__(self, x: Tensor, t_next: Tensor, step: int) -> Tensor:
        t = float(t_next)
        x = self.replace(x, t)
        if t >= 1.0:
            return x
        for _ in range(self.resample):
            s = max(t - self.jump, 0.0)
            x = renoise(x, t, s, scheduler=self.scheduler, generator=self.generator)
            h = (t - s) / self.jump_steps
            for k in range(self.jump_steps):
                tk = torch.tensor(s + k * h, dtype=torch.float32, device=x.device)
                x = x + h * self.velocity(x, tk)
                self.nfe += 1
            x = self.replace(x, t)
        return x


class ProjectPrediction:
    """Solver hook: while ``t <= t_max``, move the state so that its predicted data lies in a
    constraint set (SplatFlow's "stop-ray": generated camera rays replaced by the rays of the
    nearest consistent cameras during the first steps).

    After each step to ``t`` (an affine path ``x_t = alpha_t x_1 + sigma_t x_0``): the
    prediction ``x1_hat`` and the matching noise ``x0_hat`` are read off the velocity
    (``v = d_alpha x_1 + d_sigma x_0``, two equations, two unknowns), ``x1_hat`` is replaced by
    ``project(x1_hat)``, and the state rebuilt as ``alpha_t project(x1_hat) + sigma_t x0_hat``:
    the noise the solver has accumulated is kept, only the predicted data moves. One velocity
    call per projected step; ``project`` must return a tensor of ``x``'s shape.
    """

    def __init__(self, velocity: Velocity, project: Callable[[Tensor], Tensor], *,
                 t_max: float = 0.25, scheduler: Scheduler | None = None):
        if not 0.0 <= t_max <= 1.0:
            raise ValueError(f"t_max must lie in [0, 1], got {t_max}")
        self.velocity, self.project, self.t_max = velocity, project, float(t_max)
        self.scheduler = scheduler if scheduler is not None else LinearScheduler()
        self.nfe = 0

    def predict(self, x: Tensor, t: float) -> tuple[Tensor, Tensor]:
        """``(x1_hat, x0_hat)`` at path time ``t`` from the velocity."""
        from flow3d.core.conversions import convert_prediction

        tt = torch.tensor(t, dtype=x.dtype, device=x.device)
        v = self.velocity(x, tt)
        self.nfe += 1
        return tuple(convert_prediction(v, x, tt, src="velocity", dst=kind,
                                        scheduler=self.scheduler) for kind in ("x1", "x0"))

    def __call__(self, x: Tensor, t_next: Tensor, step: int) -> Tensor:
        t = float(t_next)
        if t > self.t_max or t >= 1.0:
            return x
        x1, x0 = self.predict(x, t)
        c = self.scheduler(torch.tensor(t, dtype=x.dtype, device=x.device))
        return c.alpha_t * self.project(x1) + c.sigma_t * x0
