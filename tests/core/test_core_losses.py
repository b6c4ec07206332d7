"""Velocity losses: MSE, pseudo-Huber, masks (mean over unmasked entries), time weights."""

import pytest
import torch
import torch.nn.functional as F

from flow3d.core.losses import time_weight, velocity_loss
from flow3d.errors import ConfigError


def _pair(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)


def test_mse_equals_mean_squared_error():
    p, u = _pair(4, 5, 3)
    torch.testing.assert_close(velocity_loss(p, u), F.mse_loss(p, u))


def test_masked_mse_is_mean_over_unmasked_entries_only():
    p, u = _pair(3, 6, 3)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0, :2] = mask[1, :5] = mask[2, 3] = True
    loss = velocity_loss(p, u, mask=mask)
    torch.testing.assert_close(loss, F.mse_loss(p[mask], u[mask]))
    p2 = p.clone()
    p2[~mask] = 1e6  # masked entries cannot matter
    torch.testing.assert_close(velocity_loss(p2, u, mask=mask), loss)


def test_weights_scale_per_sample():
    p, u = _pair(2, 4)
    w = torch.tensor([2.0, 0.0])
    expected = 2.0 * (p[0] - u[0]).square().sum() / p.numel()
    torch.testing.assert_close(velocity_loss(p, u, weight=w), expected)


def test_pseudo_huber_limits():
    p, u = _pair(3, 10)
    dist = (p - u).norm(dim=1)
    torch.testing.assert_close(
        velocity_loss(p, u, kind="pseudo_huber", huber_c=1e-8), dist.mean(), rtol=1e-5, atol=0
    )
    c = 1e4  # large c: ~ ||d||^2 / 2c
    torch.testing.assert_close(
        velocity_loss(p, u, kind="pseudo_huber", huber_c=c), (dist**2 / (2 * c)).mean(),
        rtol=1e-3, atol=0,
    )
    default_c = 0.00054 * 10**0.5
    torch.testing.assert_close(
        velocity_loss(p, u, kind="pseudo_huber"),
        (torch.sqrt(dist**2 + default_c**2) - default_c).mean(),
    )


def test_pseudo_huber_mask_sets_dimension_and_ignores_masked():
    p, u = _pair(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    p2 = p.clone()
    p2[0, 2:] += 100.0
    a = velocity_loss(p, u, kind="pseudo_huber", mask=mask)
    torch.testing.assert_close(velocity_loss(p2, u, kind="pseudo_huber", mask=mask), a)
    d0 = (p[0, :2] - u[0, :2]).square().sum()
    c0 = 0.00054 * 6**0.5
    d1 = (p[1] - u[1]).square().sum()
    c1 = 0.00054 * 12**0.5
    expected = ((d0 + c0**2).sqrt() - c0 + (d1 + c1**2).sqrt() - c1) / 2
    torch.testing.assert_close(a, expected)


def test_loss_gradients_flow_and_bad_input_raises():
    p, u = _pair(2, 3)
    p.requires_grad_(True)
    velocity_loss(p, u, kind="pseudo_huber").backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()
    with pytest.raises(ConfigError, match="unknown loss kind"):
        velocity_loss(p, u, kind="l1")
    with pytest.raises(ValueError, match="prefix"):
        velocity_loss(p, u, mask=torch.ones(3))
    with pytest.raises(ValueError, match="weight"):
        velocity_loss(p, u, weight=torch.ones(3))


def test_x1_time_weight_turns_velocity_loss_into_data_loss():
    g = torch.Generator().manual_seed(4)
    x_0, x_1 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    v_hat = torch.randn(6, 5, generator=g)
    t = torch.rand(6, generator=g) * 0.9
    x_t = t[:, None] * x_1 + (1 - t[:, None]) * x_0
    x1_hat = x_t + (1 - t[:, None]) * v_hat
    x0_hat = x_t - t[:, None] * v_hat
    n = x_1.numel()
    torch.testing.assert_close(velocity_loss(v_hat, x_1 - x_0, weight=time_weight(t, "x1")),
                               (x1_hat - x_1).square().sum() / n)
    torch.testing.assert_close(velocity_loss(v_hat, x_1 - x_0, weight=time_weight(t, "x0")),
                               (x0_hat - x_0).square().sum() / n)


def test_min_snr_weight():
    t = torch.tensor([0.1, 0.5, 0.9, 0.999])
    w = time_weight(t, "min_snr", gamma=5.0)
    snr = t**2 / (1 - t) ** 2
    torch.testing.assert_close(w, torch.minimum(snr, torch.tensor(5.0)) * (1 - t) ** 2)
    assert torch.equal(time_weight(t), torch.ones(4))
    with pytest.raises(ConfigError, match="unknown time weight"):
        time_weight(t, "snr")
