"""flow3d.core.analytic: the closed-form field really is the marginal rectified-flow velocity."""

import math

import pytest
import torch

from flow3d.core.analytic import GaussianFlow, GaussianMixtureFlow

F64 = torch.float64


def _anisotropic_mixture() -> GaussianMixtureFlow:
    g = torch.Generator().manual_seed(0)
    means = 2.0 * torch.randn(3, 2, generator=g, dtype=F64)
    A = torch.randn(3, 2, 2, generator=g, dtype=F64)
    covs = A @ A.transpose(-1, -2) + 0.1 * torch.eye(2, dtype=F64)
    return GaussianMixtureFlow(means, covs, weights=torch.tensor([0.5, 0.3, 0.2]))


@pytest.mark.parametrize("t", [0.05, 0.4, 0.9])
def test_continuity_equation_holds(t):
    """d p_t / dt + div(p_t v_t) = 0: the field transports the marginals of the path."""
    flow = _anisotropic_mixture()
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    h = 1e-5
    dp_dt = (flow.log_prob(x, t + h).exp() - flow.log_prob(x, t - h).exp()) / (2 * h)
    div = torch.zeros(20, dtype=F64)
    for i in range(2):
        e = torch.zeros(2, dtype=F64)
        e[i] = h
        flux_p = flow.log_prob(x + e, t).exp() * flow(x + e, t)[:, i]
        flux_m = flow.log_prob(x - e, t).exp() * flow(x - e, t)[:, i]
        div += (flux_p - flux_m) / (2 * h)
    scale = dp_dt.abs().max()
    assert ((dp_dt + div).abs() / scale).max() < 1e-5


def test_velocity_matches_monte_carlo_conditional_expectation():
    """At t = 0 the posterior is the prior: v(x, 0) = E[x_1] - x."""
    flow = _anisotropic_mixture()
    x = torch.randn(10, 2, dtype=F64)
    mean = (flow.weights[:, None] * flow.means).sum(0)
    assert torch.allclose(flow(x, 0.0), mean - x, atol=1e-12)
    # batched times equal scalar times row by row
    t = torch.linspace(0.1, 0.9, 10, dtype=F64)
    rows = torch.stack([flow(x[i : i + 1], t[i])[0] for i in range(10)])
    assert torch.allclose(flow(x, t), rows, atol=1e-12)


def test_log_prob_is_normalised_and_matches_samples():
    flow = _anisotropic_mixture()
    # integrate exp(log p_1) on a grid
    lin = torch.linspace(-12, 12, 481, dtype=F64)
    xx, yy = torch.meshgrid(lin, lin, indexing="ij")
    pts = torch.stack([xx, yy], -1).reshape(-1, 2)
    mass = flow.log_prob(pts).exp().sum() * (lin[1] - lin[0]) ** 2
    assert abs(mass.item() - 1) < 1e-4
    s = flow.sample(200_000, generator=torch.Generator().manual_seed(2), dtype=F64)
    mean = (flow.weights[:, None] * flow.means).sum(0)
    assert torch.allclose(s.mean(0), mean, atol=0.03)
    # at t = 0 the marginal is the source N(0, I)
    z = torch.randn(5, 2, dtype=F64)
    assert torch.allclose(flow.log_prob(z, 0.0), -0.5 * (z**2).sum(-1) - math.log(2 * math.pi))


def test_reference_endpoint_transports_source_to_target():
    flow = GaussianMixtureFlow.ring(k=4, radius=3.0, std=0.3)
    x0 = flow.sample_source(200, generator=torch.Generator().manual_seed(3), dtype=F64)
    x1 = flow.endpoint(x0)
    # every endpoint lands near one of the component means; all components are hit
    d = torch.cdist(x1, flow.means)
    assert (d.min(-1).values < 4 * 0.3).float().mean() > 0.97
    counts = torch.bincount(d.argmin(-1), minlength=4)
    assert (counts > 30).all(), counts
    # target log-likelihood of the pushed samples is close to the target's own entropy
    s = flow.sample(2000, generator=torch.Generator().manual_seed(4), dtype=F64)
    assert abs(flow.log_prob(x1).mean() - flow.log_prob(s).mean()) < 0.2


def test_gaussian_flow_velocity_is_derivative_of_flow_map():
    flow = GaussianFlow(torch.tensor([1.0, -1.0]), torch.tensor([[2.0, 0.3], [0.3, 0.5]]))
    x0 = torch.randn(16, 2, dtype=F64)
    for t in (0.0, 0.5, 0.99):
        h = 1e-6
        xt = flow.endpoint(x0, 0.0, t)
        fd = (flow.endpoint(x0, 0.0, t + h) - flow.endpoint(x0, 0.0, t - h)) / (2 * h)
        assert torch.allclose(flow(xt, t), fd, atol=1e-7)


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixtureFlow(torch.zeros(1, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"\[K, D, D\]"):
        GaussianMixtureFlow(torch.zeros(2, 2), torch.eye(2))
    with pytest.raises(ValueError, match="last dimension 2"):
        GaussianMixtureFlow.ring()(torch.zeros(3, 3), 0.5)
