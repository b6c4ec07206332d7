"""SDEdit and FlowEdit on analytic Gaussian rectified flows."""

import pytest
import torch

from flow3d.core.editing import flowedit, sdedit
from flow3d.core.solvers import solve


def isotropic_gaussian_velocity(mu):
    """Rectified flow N(0, I) -> N(mu, I): v = mu + k_t (x - t mu), k_t = (2t - 1) / r_t^2,
    r_t^2 = t^2 + (1 - t)^2. Its flow map is x_t = t mu + r_t x_0."""

    def velocity(x, t):
        t = torch.as_tensor(t, dtype=x.dtype)
        return mu + (2 * t - 1) / (t**2 + (1 - t) ** 2) * (x - t * mu)

    return velocity


MU_A, MU_B = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([-1.0, 1.0, 3.0])


def test_sdedit_strength_zero_returns_the_input():
    calls = []
    v = lambda x, t: calls.append(1) or x  # noqa: E731
    x = torch.randn(4, 3)
    out = sdedit(v, x, 0.0, steps=10)
    assert torch.equal(out.x, x) and out.nfe == 0 and not calls


def test_sdedit_strength_one_is_plain_sampling_from_the_same_noise():
    v = isotropic_gaussian_velocity(MU_A)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(6, 3, generator=g)
    out = sdedit(v, torch.randn(6, 3, generator=g), 1.0, steps=8, method="midpoint", noise=noise)
    torch.testing.assert_close(out.x, solve(v, noise, method="midpoint", steps=8).x)
    assert out.nfe == 16


def test_sdedit_partial_strength_lands_on_the_target_distribution_near_the_input():
    v = isotropic_gaussian_velocity(MU_B)
    g = torch.Generator().manual_seed(1)
    x = MU_A + torch.randn(4000, 3, generator=g)  # "images" from another distribution
    out = sdedit(v, x, 0.5, steps=20, method="heun", generator=g)
    assert out.times[0] == pytest.approx(0.5) and out.times[-1] == 1.0
    # x_0.5 = 0.5 x + 0.5 eps ~ N(0.5 mu_A, 0.5); the exact flow from 0.5 to 1 maps
    # y -> mu_B + (y - 0.5 mu_B) / r_0.5 with r_0.5 = sqrt(0.5): mean mu_B + (mu_A - mu_B)/sqrt2
    expected_mean = MU_B + (MU_A - MU_B) / 2**0.5
    torch.testing.assert_close(out.x.mean(0), expected_mean, atol=0.06, rtol=0)
    corr = torch.corrcoef(torch.stack([x[:, 0], out.x[:, 0]]))[0, 1]
    assert corr > 0.6  # the edit stays close to its input
    with pytest.raises(ValueError, match="strength"):
        sdedit(v, x, 1.5, steps=4)


def test_flowedit_with_identical_fields_returns_the_input_exactly():
    v = isotropic_gaussian_velocity(MU_A)
    x = torch.randn(5, 3)
    for method in ("euler", "midpoint"):
        out = flowedit(v, v, x, steps=20, n_max=15, n_avg=2, method=method,
                       generator=torch.Generator().manual_seed(2))  # fmt: skip
        assert torch.equal(out, x)


def test_flowedit_shifts_between_gaussians_exactly():
    """For N(mu_a, I) -> N(mu_b, I) the noise cancels in v_b(z_tar) - v_a(z_src), and the edit
    ODE d' = (mu_b - mu_a)(1 - k_t t) + k_t d has the solution d = t (mu_b - mu_a), which Euler
    integrates exactly: a full-range edit moves every point by mu_b - mu_a."""
    x = MU_A + torch.randn(10, 3, dtype=torch.float64)
    out = flowedit(isotropic_gaussian_velocity(MU_A.double()),
                   isotropic_gaussian_velocity(MU_B.double()), x, steps=25, n_max=25,
                   generator=torch.Generator().manual_seed(3))  # fmt: skip
    torch.testing.assert_close(out - x, (MU_B - MU_A).double().expand(10, 3))


def test_flowedit_partial_edit_and_target_sampling_tail():
    """Starting at t_s = 1 - n_max/steps the same ODE gives d(1) = (1 - t_s / r(t_s)) dmu
    (d - t dmu decays like r_t / r_{t_s}); with n_min > 0 the last steps sample v_target."""
    va = isotropic_gaussian_velocity(MU_A.double())
    vb = isotropic_gaussian_velocity(MU_B.double())
    x = MU_A + torch.randn(10, 3, dtype=torch.float64)
    steps, n_max = 40, 20
    t_s = 1 - n_max / steps
    r_s = (t_s**2 + (1 - t_s) ** 2) ** 0.5
    out = flowedit(va, vb, x, steps=steps, n_max=n_max, method="rk4",
                   generator=torch.Generator().manual_seed(4))  # fmt: skip
    expected = (1 - t_s / r_s) * (MU_B - MU_A).double()
    torch.testing.assert_close(out - x, expected.expand(10, 3), atol=1e-6, rtol=0)
    tail = flowedit(va, vb, x, steps=steps, n_max=n_max, n_min=10,
                    generator=torch.Generator().manual_seed(4))  # fmt: skip
    assert tail.shape == x.shape and torch.isfinite(tail).all()
    assert (tail - x).mean(0) @ (MU_B - MU_A).double() > 0  # moved towards the target
    with pytest.raises(ValueError, match="n_min < n_max"):
        flowedit(va, vb, x, steps=10, n_max=5, n_min=5)
