"""Flows whose marginal velocity is known in closed form: ground truth for solver tests.

Source ``x_0 ~ N(0, I)``, target ``x_1 ~ sum_k pi_k N(mu_k, S_k)``, independent coupling and
the linear (rectified) path ``x_t = t x_1 + (1 - t) x_0``. Given component ``k``, ``x_t`` and
``u = x_1 - x_0`` are jointly Gaussian:

    x_t | k ~ N(t mu_k, C_k(t)),        C_k(t) = t^2 S_k + (1 - t)^2 I
    Cov(u, x_t | k) = t S_k - (1 - t) I
    E[u | x_t, k] = mu_k + (t S_k - (1 - t) I) C_k(t)^{-1} (x_t - t mu_k)

and the marginal velocity (Liu et al. 2023; Lipman et al. 2023, eq. 8) is the posterior mixture
``v(x, t) = sum_k w_k(x, t) E[u | x_t = x, k]`` with ``w_k ~ pi_k N(x; t mu_k, C_k(t))``.
The ODE ``dx/dt = v`` transports ``N(0, I)`` to the mixture; its endpoint has no closed form
for ``K > 1`` and is computed by :meth:`GaussianMixtureFlow.endpoint` in float64 with scipy's
DOP853 at tight tolerances (an integrator independent of :mod:`flow3d.core.solvers`).

For one Gaussian the flow map is affine and exact (:class:`GaussianFlow`):
``x_t = t mu + A_t x_0`` with ``A_t = (t^2 S + (1 - t)^2 I)^{1/2}`` (``A_t`` commutes with
``S``; differentiate ``A_t^2 = C(t)`` to recover the velocity above).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["GaussianFlow", "GaussianMixtureFlow"]

F64 = torch.float64


class GaussianMixtureFlow:
    """Exact rectified-flow velocity from ``N(0, I)`` to a Gaussian mixture in ``R^D``.

    Args:
        means: ``[K, D]`` component means ``mu_k``.
        covs: ``[K, D, D]`` symmetric positive-definite covariances ``S_k``.
        weights: ``[K]`` mixture weights (normalised here); uniform if omitted.

    The instance is a velocity callable: ``flow(x, t)`` with ``x: [..., D]`` and ``t`` a
    number, a 0-dim tensor or a tensor of the leading shape of ``x``; it is evaluated in float64
    and returned in ``x``'s dtype.
    """

    def __init__(self, means: Tensor, covs: Tensor, weights: Tensor | None = None):
        means = torch.as_tensor(means, dtype=F64).detach().cpu()
        covs = torch.as_tensor(covs, dtype=F64).detach().cpu()
        if means.ndim != 2:
            raise ValueError(f"means must be [K, D], got shape {tuple(means.shape)}")
        k, d = means.shape
        if covs.shape != (k, d, d):
            raise ValueError(f"covs must be [K, D, D] = [{k}, {d}, {d}], got {tuple(covs.shape)}")
        if not torch.allclose(covs, covs.transpose(-1, -2)):
            raise ValueError("covs must be symmetric")
        chol, info = torch.linalg.cholesky_ex(covs)
        if (info != 0).any():
            raise ValueError("covs must be positive definite")
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=F64)
        weights = torch.as_tensor(weights, dtype=F64).detach().cpu()
        if weights.shape != (k,) or (weights <= 0).any():
            raise ValueError(f"weights must be [K] = [{k}] and positive")
        self.means = means  # [K, D]
        self.covs = covs  # [K, D, D]
        self.chol = chol  # [K, D, D]
        self.weights = weights / weights.sum()  # [K]
        self.dim = d

    # ---- constructors ------------------------------------------------------------------
    @classmethod
    def isotropic(
        cls, means: Tensor, std: float | Tensor, weights: Tensor | None = None
    ) -> GaussianMixtureFlow:
        """Components ``N(mu_k, std_k^2 I)``; ``std`` a number or ``[K]``."""
        means = torch.as_tensor(means, dtype=F64)
        k, d = means.shape
        std = torch.as_tensor(std, dtype=F64).expand(k)
        covs = std[:, None, None] ** 2 * torch.eye(d, dtype=F64)
        return cls(means, covs, weights)

    @classmethod
    def ring(
        cls, k: int = 8, radius: float = 2.0, std: float = 0.5, dim: int = 2
    ) -> GaussianMixtureFlow:
        """``k`` equal components on a circle in the first two coordinates (eight Gaussians)."""
        angle = torch.arange(k, dtype=F64) * (2 * math.pi / k)
        means = torch.zeros(k, dim, dtype=F64)
        means[:, 0], means[:, 1] = radius * torch.cos(angle), radius * torch.sin(angle)
        return cls.isotropic(means, std)

    # ---- the field ---------------------------------------------------------------------
    def _components(self, x: Tensor, t) -> tuple[Tensor, Tensor, Tensor]:
        """Per-component (log N(x; t mu_k, C_k), E[u | x, k], t) in float64 on x's device."""
        x = x.to(F64)
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must have last dimension {self.dim}, got {tuple(x.shape)}")
        lead = x.shape[:-1]
        t = torch.as_tensor(t, dtype=F64, device=x.device)
        if t.ndim > 0:  # [B] times for [B, ...] states
            t = t.reshape(*t.shape, *([1] * (len(lead) - t.ndim))).expand(lead)
        mu = self.means.to(x.device)  # [K, D]
        S = self.covs.to(x.device)  # [K, D, D]
        eye = torch.eye(self.dim, dtype=F64, device=x.device)
        tt = t[..., None, None, None]  # [..., 1, 1, 1]
        C = tt**2 * S + (1 - tt) ** 2 * eye  # [..., K, D, D]
        L = torch.linalg.cholesky(C)
        diff = x[..., None, :] - t[..., None, None] * mu  # [..., K, D]
        z = torch.cholesky_solve(diff.unsqueeze(-1), L)  # [..., K, D, 1] = C^-1 (x - t mu)
        maha = (diff.unsqueeze(-1) * z).sum((-1, -2))  # [..., K]
        logdet = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)  # [..., K]
        log_n = -0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))
        cross = tt * S - (1 - tt) * eye  # [..., K, D, D] = Cov(u, x_t | k)
        e_u = mu + (cross @ z).squeeze(-1)  # [..., K, D]
        return log_n, e_u, t

    def velocity(self, x: Tensor, t) -> Tensor:
        """Exact marginal velocity ``E[x_1 - x_0 | x_t = x]``, shape of ``x``."""
        log_n, e_u, _ = self._components(x, t)
        logw = torch.log(self.weights.to(x.device)) + log_n  # [..., K]
        w = torch.softmax(logw, dim=-1)
        return (w.unsqueeze(-1) * e_u).sum(-2).to(x.dtype)

    __call__ = velocity

    def log_prob(self, x: Tensor, t=1.0) -> Tensor:
        """Exact log-density of the marginal ``p_t`` (``t = 1``: the target), shape ``[...]``."""
        log_n, _, _ = self._components(x, t)
        return torch.logsumexp(torch.log(self.weights.to(x.device)) + log_n, dim=-1)

    # ---- sampling ----------------------------------------------------------------------
    def sample(
        self, n: int, *, generator=None, device=None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """``n`` samples of the target mixture, ``[n, D]``."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # [n]
        eps = torch.randn(n, self.dim, 1, generator=generator, dtype=F64)
        x = self.means[comp] + (self.chol[comp] @ eps).squeeze(-1)
        return x.to(device=device, dtype=dtype)

    def sample_source(
        self, n: int, *, generator=None, device=None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """``n`` samples of ``N(0, I)``, ``[n, D]``."""
        return torch.randn(n, self.dim, generator=generator, dtype=dtype).to(device)

    # ---- reference solution ------------------------------------------------------------
    def endpoint(
        self, x: Tensor, t0: float = 0.0, t1: float = 1.0, *, rtol: float = 1e-12,
        atol: float = 1e-12,
    ) -> Tensor:  # fmt: skip
        """The ODE solution at ``t1`` from ``x`` at ``t0`` (float64, ``[..., D]``).

        Integrated with scipy's DOP853 (an 8th-order method independent of flow3d's solvers)
        at ``rtol = atol = 1e-12``; accurate to about 1e-10 for well-conditioned mixtures.
        """
        from scipy.integrate import solve_ivp

        shape = x.shape
        y0 = x.detach().to(F64).cpu().reshape(-1).numpy()

        def rhs(t, y):
            yt = torch.from_numpy(y).reshape(shape)
            return self.velocity(yt, float(t)).reshape(-1).numpy()

        sol = solve_ivp(rhs, (float(t0), float(t1)), y0, method="DOP853", rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"reference integration failed: {sol.message}")
        return torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).reshape(shape)


class GaussianFlow(GaussianMixtureFlow):
    """One Gaussian target ``N(mean, cov)``: the flow map is closed form.

    ``x_{t1} = t1 mu + A_{t1} A_{t0}^{-1} (x_{t0} - t0 mu)`` with
    ``A_t = U diag(sqrt(t^2 lambda + (1 - t)^2)) U^T`` for ``cov = U diag(lambda) U^T``.
    """

    def __init__(self, mean: Tensor, cov: Tensor):
        mean = torch.as_tensor(mean, dtype=F64)
        cov = torch.as_tensor(cov, dtype=F64)
        super().__init__(mean[None], cov[None])
        self.mean = self.means[0]  # [D]
        self.cov = self.covs[0]  # [D, D]
        self._lam, self._U = torch.linalg.eigh(self.cov)

    def _sqrt_c(self, t: float) -> Tensor:
        """``A_t = C(t)^{1/2}``, ``[D, D]``."""
        s = torch.sqrt(t * t * self._lam + (1.0 - t) ** 2)
        return (self._U * s) @ self._U.T

    def endpoint(self, x: Tensor, t0: float = 0.0, t1: float = 1.0, **_) -> Tensor:
        """Exact flow map from ``t0`` to ``t1`` (float64, ``[..., D]``)."""
        x = x.detach().to(F64).cpu()
        m = torch.linalg.solve(self._sqrt_c(float(t0)), self._sqrt_c(float(t1)).T).T
        return float(t1) * self.mean + (x - float(t0) * self.mean) @ m.T
