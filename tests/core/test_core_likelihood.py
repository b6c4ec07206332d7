"""Likelihood by the instantaneous change of variables against a closed-form Gaussian flow."""

import pytest
import torch

from flow3d.core.analytic import GaussianFlow, GaussianMixtureFlow
from flow3d.core.likelihood import divergence, log_likelihood, standard_normal_log_prob


def _setup(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([1.0, -2.0, 0.5], dtype=dtype)
    scales = torch.tensor([0.5, 1.5, 2.0], dtype=dtype)
    rot, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=dtype))
    flow = GaussianFlow(mu, rot @ torch.diag(scales**2) @ rot.T)  # full covariance
    x_1 = flow.sample(16, generator=g, dtype=dtype)
    return flow.velocity, lambda x: flow.log_prob(x).to(x.dtype), x_1


def test_exact_divergence_matches_trace_of_jacobian():
    w = torch.randn(4, 4, dtype=torch.float64)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    v = torch.tanh(x @ w)
    jac = torch.autograd.functional.jacobian(lambda y: torch.tanh(y @ w).sum(0), x)  # [4, 5, 4]
    expected = torch.einsum("ibi->b", jac)
    torch.testing.assert_close(divergence(v, x), expected)


def test_log_likelihood_matches_closed_form_gaussian():
    velocity, log_prob, x_1 = _setup()
    out = log_likelihood(velocity, x_1, method="rk4", steps=12)
    torch.testing.assert_close(out.log_prob, log_prob(x_1), atol=1e-4, rtol=0)
    assert out.nfe == 4 * 12 and out.x_0.shape == x_1.shape
    torch.testing.assert_close(out.log_p0, standard_normal_log_prob(out.x_0))


def test_log_likelihood_wrong_field_is_detected():
    velocity, log_prob, x_1 = _setup()
    wrong = lambda x, t: 1.1 * velocity(x, t)  # noqa: E731
    out = log_likelihood(wrong, x_1, method="rk4", steps=8)
    assert (out.log_prob - log_prob(x_1)).abs().max() > 1e-2


def test_log_likelihood_of_a_gaussian_mixture():
    """Eight Gaussians on a ring: the flow's density equals the mixture's exact log-density."""
    flow = GaussianMixtureFlow.ring(k=8, radius=2.0, std=0.5)
    x_1 = flow.sample(6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x_1 = torch.cat([x_1, torch.tensor([[0.0, 0.0], [3.0, 3.0]], dtype=torch.float64)])
    out = log_likelihood(flow.velocity, x_1, method="dopri5", steps=None, atol=1e-5, rtol=1e-5)
    # measured: max error 1.9e-4 at 50 NFE (3.6e-7 at tolerance 1e-7, 110 NFE)
    torch.testing.assert_close(out.log_prob, flow.log_prob(x_1), atol=1e-3, rtol=0)


@pytest.mark.parametrize("estimator", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(estimator):
    """Replicate one point 128 times with independent probes: the estimates scatter around
    the exact value with mean within 4 standard errors, and are not all equal."""
    velocity, log_prob, x_1 = _setup()
    x = x_1[:1].expand(128, 3).clone()
    g = torch.Generator().manual_seed(5)
    out = log_likelihood(velocity, x, method="midpoint", steps=16, estimator=estimator,
                         generator=g)  # fmt: skip
    exact = log_likelihood(velocity, x_1[:1], method="midpoint", steps=16).log_prob
    est = out.log_prob
    assert est.std() > 1e-3
    assert abs(est.mean() - exact[0]) < 4 * est.std() / 128**0.5 + 1e-6
    torch.testing.assert_close(exact, log_prob(x_1[:1]), atol=1e-2, rtol=0)


def test_log_likelihood_float32_and_bad_probe_kind():
    velocity, log_prob, x_1 = _setup(torch.float32)
    out = log_likelihood(velocity, x_1, method="rk4", steps=8)
    assert out.log_prob.dtype == torch.float32
    torch.testing.assert_close(out.log_prob, log_prob(x_1), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="probe kind"):
        log_likelihood(velocity, x_1, estimator="normal")
