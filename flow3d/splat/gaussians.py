"""``Gaussians``: a tensor-like batch of 3D Gaussians (one row each), the state every splat
tool reads and writes.

Parameters are stored unconstrained, as the 3DGS optimiser sees them: log-scales, opacity
logits, possibly unnormalised quaternions. Properties give the activated values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from flow3d.core import so3
from flow3d.errors import DataError
from flow3d.splat import sh


@dataclass(frozen=True)
class Gaussians:
    """N Gaussians: ``means [N, 3]``, ``quats [N, 4]`` (w, x, y, z), ``log_scales [N, 3]``,
    ``opacity_logits [N]``, ``sh [N, K, 3]`` (K = 1, 4, 9 or 16: SH degree 0-3)."""

    means: Tensor
    quats: Tensor
    log_scales: Tensor
    opacity_logits: Tensor
    sh: Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        shapes = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3),
                  "opacity_logits": (n,)}
        for name, shape in shapes.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"Gaussians.{name}: shape {got}, expected {shape}")
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise ValueError(f"Gaussians.sh: shape {tuple(self.sh.shape)}, expected [N, K, 3]")
        sh.degree_of(self.sh.shape[1])

    # ---- construction --------------------------------------------------------------------
    @staticmethod
    def empty(sh_degree: int = 0, dtype: torch.dtype = torch.float32) -> Gaussians:
        return Gaussians(torch.zeros(0, 3, dtype=dtype), torch.zeros(0, 4, dtype=dtype),
                         torch.zeros(0, 3, dtype=dtype), torch.zeros(0, dtype=dtype),
                         torch.zeros(0, sh.num_coeffs(sh_degree), 3, dtype=dtype))

    @staticmethod
    def from_points(points: Tensor, colors: Tensor | None = None, *, scale: float = 0.01,
                    opacity: float = 0.1, sh_degree: int = 0) -> Gaussians:
        """Isotropic Gaussians at ``points [N, 3]`` with ``colors [N, 3]`` in [0, 1]."""
        n = points.shape[0]
        dtype = points.dtype
        coeffs = torch.zeros(n, sh.num_coeffs(sh_degree), 3, dtype=dtype)
        if colors is not None:
            coeffs[:, 0] = sh.rgb_to_sh0(colors.to(dtype))
        quats = torch.zeros(n, 4, dtype=dtype)
        quats[:, 0] = 1.0
        log_scales = torch.full((n, 3), float(torch.tensor(scale).log()), dtype=dtype)
        logit = float(torch.logit(torch.tensor(opacity, dtype=torch.float64)))
        return Gaussians(points.clone(), quats, log_scales, torch.full((n,), logit, dtype=dtype),
                         coeffs)

    @staticmethod
    def cat(items: Sequence[Gaussians]) -> Gaussians:
        if not items:
            raise ValueError("Gaussians.cat: nothing to concatenate")
        k = max(g.sh.shape[1] for g in items)
        return Gaussians(*(torch.cat([getattr(g, f.name) for g in items]) for f in fields(
            Gaussians) if f.name != "sh"), torch.cat([g.with_sh_degree(sh.degree_of(k)).sh
                                                      for g in items]))

    # ---- activated values ----------------------------------------------------------------
    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return sh.degree_of(self.sh.shape[1])

    @property
    def scales(self) -> Tensor:  # [N, 3]
        return self.log_scales.exp()

    @property
    def opacities(self) -> Tensor:  # [N]
        return torch.sigmoid(self.opacity_logits)

    @property
    def unit_quats(self) -> Tensor:  # [N, 4]
        return self.quats / self.quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    @property
    def rotmats(self) -> Tensor:  # [N, 3, 3]
        return so3.quat_to_rotmat(self.unit_quats)

    def covariances(self) -> Tensor:
        """World-space covariances ``R S S^T R^T``: ``[N, 3, 3]``."""
        m = self.rotmats * self.scales.unsqueeze(-2)  # R @ diag(s)
        return m @ m.transpose(-1, -2)

    def smoothed(self, variance: Tensor | float) -> Gaussians:
        """The Gaussians convolved with an isotropic Gaussian of ``variance`` (per row ``[N]``
        or one number, world units^2): covariance ``+ variance I``. An isotropic term commutes
        with the rotation, so only the scales change, to ``sqrt(s^2 + variance)``; opacity is
        kept (the rasterizer's 2D low-pass keeps it too: :mod:`flow3d.splat.lowpass`)."""
        v = torch.as_tensor(variance, dtype=self.dtype, device=self.device)
        if bool((v < 0).any()):
            raise ValueError("Gaussians.smoothed: variance must be >= 0")
        v = v.reshape(-1, 1) if v.ndim else v
        log_scales = 0.5 * torch.log(torch.exp(2 * self.log_scales) + v)
        return Gaussians(self.means, self.quats, log_scales, self.opacity_logits, self.sh)

    @property
    def dc_colors(self) -> Tensor:  # [N, 3]: the view-independent colour
        return (self.sh[:, 0] * sh.C0 + 0.5).clamp_min(0.0)

    # ---- tensor-like behaviour -----------------------------------------------------------
    def _map(self, fn) -> Gaussians:
        return Gaussians(*(fn(getattr(self, f.name)) for f in fields(self)))

    def __getitem__(self, index) -> Gaussians:
        """Rows by int, slice, index tensor or boolean mask ``[N]``."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return self._map(lambda t: t[index])

    def to(self, *args, **kwargs) -> Gaussians:
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> Gaussians:
        return self._map(lambda t: t.detach())

    def clone(self) -> Gaussians:
        return self._map(lambda t: t.clone())

    def requires_grad_(self, flag: bool = True) -> Gaussians:
        for f in fields(self):
            getattr(self, f.name).requires_grad_(flag)
        return self

    def parameters(self) -> list[Tensor]:
        return [getattr(self, f.name) for f in fields(self)]

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def with_sh_degree(self, degree: int) -> Gaussians:
        """Truncate or zero-pad the SH bands to ``degree``."""
        k, n = self.sh.shape[1], sh.num_coeffs(degree)
        if n <= k:
            coeffs = self.sh[:, :n]
        else:
            coeffs = torch.cat([self.sh, self.sh.new_zeros(len(self), n - k, 3)], dim=1)
        return Gaussians(self.means, self.quats, self.log_scales, self.opacity_logits, coeffs)

    def transform(self, rotation: Tensor, translation: Tensor | None = None,
                  scale: float = 1.0) -> Gaussians:
        """The scene moved by ``x -> scale * R x + t``: means, orientations, sizes and the
        view-dependent colour (SH bands rotated exactly, every degree up to 3)."""
        r = rotation.to(self.dtype)
        if r.shape != (3, 3) or not torch.allclose(r @ r.T, torch.eye(3, dtype=r.dtype),
                                                   atol=1e-4):
            raise ValueError("Gaussians.transform: rotation must be a 3x3 rotation matrix")
        if scale <= 0:
            raise ValueError(f"Gaussians.transform: scale {scale} must be positive")
        t = torch.zeros(3, dtype=self.dtype) if translation is None else translation.to(self.dtype)
        means = scale * self.means @ r.T + t
        q_r = so3.rotmat_to_quat(r).to(self.dtype)
        quats = so3.quat_mul(q_r.expand_as(self.quats), self.unit_quats)
        log_scales = self.log_scales + torch.log(torch.tensor(scale, dtype=self.dtype))
        m = sh.sh_rotation(r, self.sh_degree).to(self.dtype)
        coeffs = torch.einsum("ij,njc->nic", m, self.sh)
        return Gaussians(means, quats, log_scales, self.opacity_logits, coeffs)

    def check_finite(self, where: str = "Gaussians") -> Gaussians:
        """Raise a one-line DataError naming ``where`` if any parameter is NaN or infinite."""
        for f in fields(self):
            value = getattr(self, f.name)
            bad = ~torch.isfinite(value)
            if bad.any():
                rows = bad.reshape(len(self), -1).any(-1).nonzero().flatten()
                raise DataError(f"{where}: {f.name} has NaN or infinite values in "
                                f"{len(rows)} Gaussians (first: row {int(rows[0])})")
        if (self.quats.norm(dim=-1) < 1e-12).any():
            raise DataError(f"{where}: some quaternions are zero")
        return self
