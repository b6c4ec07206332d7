"""Guidance wrappers and hooks: CFG, FlowChef, optimiser guidance, inpainting."""

import pytest
import torch

from flow3d.core.guidance import (
    ClassifierFreeGuidance,
    FlowChef,
    Inpainting,
    OptimizerGuidance,
    renoise,
)
from flow3d.core.paths import expand_time
from flow3d.core.solvers import solve


def gaussian_velocity(mu, scales):
    """Marginal rectified-flow velocity from N(0, I) to N(mu, diag(scales^2)):
    mu + k_t (x - t mu), k_t = (t s^2 - (1 - t)) / (t^2 s^2 + (1 - t)^2)."""

    def velocity(x, t):
        t = torch.as_tensor(t, dtype=x.dtype)
        t = t.reshape(-1, *([1] * (x.ndim - 1))) if t.ndim else t
        k = (t * scales**2 - (1 - t)) / (t**2 * scales**2 + (1 - t) ** 2)
        return mu + k * (x - t * mu)

    return velocity


class Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


# ---- classifier-free guidance -------------------------------------------------------------


def _fields():
    cond = Counting(lambda x, t: 2.0 * x + expand_time(t, x))
    uncond = Counting(lambda x, t: -x)
    return cond, uncond


def test_cfg_weight_zero_is_the_conditional_field():
    cond, uncond = _fields()
    x, t = torch.randn(4, 3, 5), torch.tensor(0.3)
    assert torch.equal(ClassifierFreeGuidance(cond, uncond, 0.0)(x, t), cond(x, t))


def test_cfg_formula_and_interval():
    cond, uncond = _fields()
    x = torch.randn(4, 3)
    cfg = ClassifierFreeGuidance(cond, uncond, weight=2.5, interval=(0.2, 0.8))
    t = torch.tensor(0.5)
    torch.testing.assert_close(cfg(x, t), cond(x, t) + 2.5 * (cond(x, t) - uncond(x, t)))
    before = uncond.calls
    outside = cfg(x, torch.tensor(0.9))
    assert torch.equal(outside, cond(x, torch.tensor(0.9))) and uncond.calls == before
    # per-sample times (training-style calls): only the in-interval rows are guided
    tb = torch.tensor([0.1, 0.5, 0.7, 0.95])
    out = cfg(x, tb)
    full = cond(x, tb) + 2.5 * (cond(x, tb) - uncond(x, tb))
    torch.testing.assert_close(out[1:3], full[1:3])
    torch.testing.assert_close(out[[0, 3]], cond(x, tb)[[0, 3]])


def test_cfg_channel_groups_get_their_own_weights():
    cond, uncond = _fields()
    x = torch.randn(2, 6, 4, 4)  # e.g. RGB + depth + 2 pose channels
    t = torch.tensor(0.4)
    groups = [(slice(0, 3), 7.0), (3, 2.0), ([4, 5], 0.0)]
    out = ClassifierFreeGuidance(cond, uncond, weight=1.0, groups=groups)(x, t)
    diff = cond(x, t) - uncond(x, t)
    torch.testing.assert_close(out[:, :3], cond(x, t)[:, :3] + 7.0 * diff[:, :3])
    torch.testing.assert_close(out[:, 3], cond(x, t)[:, 3] + 2.0 * diff[:, 3])
    assert torch.equal(out[:, 4:], cond(x, t)[:, 4:])
    # channels outside every group use the global weight
    out2 = ClassifierFreeGuidance(cond, uncond, weight=1.5, groups=[(0, 3.0)])(x, t)
    torch.testing.assert_close(out2[:, 1:], cond(x, t)[:, 1:] + 1.5 * diff[:, 1:])
    with pytest.raises(ValueError, match="overlaps"):
        ClassifierFreeGuidance(cond, uncond, groups=[(slice(0, 3), 1.0), (2, 1.0)])(x, t)
    with pytest.raises(ValueError, match="interval"):
        ClassifierFreeGuidance(cond, uncond, interval=(0.8, 0.2))


def test_cfg_channel_groups_on_the_last_dimension_of_token_states():
    """Token states ``[B, M, C]`` (channels last) group along ``channel_dim=-1``, and give the
    same result as the channels-first layout transposed."""
    cond, uncond = _fields()
    x = torch.randn(2, 5, 6)
    t = torch.tensor(0.3)
    groups = [(slice(0, 3), 7.0), (3, 2.0)]
    last = ClassifierFreeGuidance(cond, uncond, weight=0.5, groups=groups, channel_dim=-1)
    diff = cond(x, t) - uncond(x, t)
    out = last(x, t)
    torch.testing.assert_close(out[..., :3], cond(x, t)[..., :3] + 7.0 * diff[..., :3])
    torch.testing.assert_close(out[..., 3], cond(x, t)[..., 3] + 2.0 * diff[..., 3])
    torch.testing.assert_close(out[..., 4:], cond(x, t)[..., 4:] + 0.5 * diff[..., 4:])
    first = ClassifierFreeGuidance(cond, uncond, weight=0.5, groups=groups)
    xt = x.transpose(1, 2).contiguous()
    torch.testing.assert_close(first(xt, t).transpose(1, 2), out)
    with pytest.raises(ValueError, match="outside dim 2"):
        ClassifierFreeGuidance(cond, uncond, groups=[(6, 1.0)], channel_dim=-1)(x, t)
    with pytest.raises(ValueError, match="channel dimensions"):
        ClassifierFreeGuidance(cond, uncond, groups=[(0, 1.0)], channel_dim=0)(x, t)


def test_cfg_composes_with_solvers():
    mu_c, mu_u, s = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 0.0]), torch.ones(2)
    cfg = ClassifierFreeGuidance(gaussian_velocity(mu_c, s), gaussian_velocity(mu_u, s), 1.0)
    x_0 = torch.zeros(1, 2)
    for method in ("euler", "midpoint", "rk4"):
        x = solve(cfg, x_0, method=method, steps=16).x
        # v = 2 v_c - v_u; from x_0 = 0 both fields move the mean linearly: x_1 = 2 mu_c - mu_u
        torch.testing.assert_close(x, (2 * mu_c - mu_u)[None], atol=1e-5, rtol=0)


# ---- FlowChef --------------------------------------------------------------------------------


def test_flowchef_cuts_measurement_error_10x_on_a_linear_inverse_problem():
    g = torch.Generator().manual_seed(0)
    dim, batch = 8, 64
    mu = torch.linspace(-1, 1, dim)
    scales = torch.linspace(0.5, 1.5, dim)
    prior = gaussian_velocity(mu, scales)
    observed = torch.tensor([0, 3, 6])  # y = A x_1 observes three coordinates
    x_true = mu + scales * torch.randn(batch, dim, generator=g)
    y = x_true[:, observed]

    def measurement_loss(x1):  # per sample ||A x1 - y||^2
        return (x1[:, observed] - y).square().sum(1)

    x_0 = torch.randn(batch, dim, generator=g)
    plain = solve(prior, x_0, method="euler", steps=50).x
    chef = FlowChef(prior, measurement_loss, step_size=10.0)
    guided = solve(chef, x_0, method="euler", steps=50).x
    err_plain = measurement_loss(plain).sqrt().mean()
    err_guided = measurement_loss(guided).sqrt().mean()
    assert err_guided * 10 < err_plain, (float(err_plain), float(err_guided))
    # unobserved coordinates still follow the prior (the guidance does not blow them up)
    free = [i for i in range(dim) if i not in observed.tolist()]
    assert guided[:, free].std(0).max() < 2 * scales[free].max()


def test_flowchef_skips_the_network_jacobian_and_respects_interval():
    calls = []

    def velocity(x, t):
        calls.append(x.requires_grad)
        return -x

    chef = FlowChef(velocity, lambda x1: x1.square().sum(1), 0.5, interval=(0.0, 0.5))
    x = torch.ones(2, 3)
    out = chef(x, torch.tensor(0.2))
    # x1_hat = x + 0.8 (-x) = 0.2; grad = 2 * 0.2 = 0.4 -> v - 0.5 * 0.4
    torch.testing.assert_close(out, -x - 0.2)
    assert calls == [False]  # the network is never differentiated
    assert torch.equal(chef(x, torch.tensor(0.7)), -x)


# ---- optimiser guidance ----------------------------------------------------------------------


def test_optimizer_guidance_lowers_its_loss_and_keeps_the_best():
    g = torch.Generator().manual_seed(1)
    target = torch.tensor([2.0, -1.0])
    prior = gaussian_velocity(torch.zeros(2), torch.ones(2))

    def loss(x):
        return (x - target).square().sum(1)

    x_0 = torch.randn(32, 2, generator=g)
    plain = solve(prior, x_0, method="euler", steps=20).x
    hook = OptimizerGuidance(loss, steps=3, lr=0.1, interval=(0.5, 1.0))
    guided = solve(prior, x_0, method="euler", steps=20, hooks=[hook]).x
    assert loss(guided).mean() < 0.5 * loss(plain).mean()
    # keep-the-best: with a wild learning rate SGD overshoots, yet no sample gets worse
    wild = OptimizerGuidance(loss, steps=4, lr=5.0, optimizer="sgd")
    x = torch.randn(16, 2, generator=g)
    out = wild(x, torch.tensor(1.0), 0)
    assert (loss(out) <= loss(x) + 1e-6).all()


def test_optimizer_guidance_on_predicted_x1():
    prior = gaussian_velocity(torch.zeros(2), torch.ones(2))
    target = torch.tensor([1.0, 1.0])
    hook = OptimizerGuidance(lambda x1: (x1 - target).square().sum(1), steps=5, lr=0.2,
                             target="x1", velocity=prior)  # fmt: skip
    x, t = torch.zeros(4, 2), torch.tensor(0.5)
    before = (x + 0.5 * prior(x, t) - target).square().sum(1)
    out = hook(x, t, 0)
    after = (out + 0.5 * prior(out, t) - target).square().sum(1)
    assert (after < 0.5 * before).all() and hook.nfe == 6
    with pytest.raises(ValueError, match="needs the velocity"):
        OptimizerGuidance(lambda x: x.sum(), target="x1")


def test_optimizer_guidance_x1_skip_is_the_state_loss_shifted_by_one_velocity():
    """``x1_skip`` = ``state`` guidance on ``loss(z + (1 - t) v(x, t))`` with ``v`` held at the
    hook's start: the same iterates, one velocity evaluation per call, never a worse loss."""
    prior = gaussian_velocity(torch.zeros(3), 2.0 * torch.ones(3))
    target = torch.tensor([1.0, -1.0, 0.5])
    x, t = torch.randn(5, 3, generator=torch.Generator().manual_seed(3)), torch.tensor(0.3)

    def loss(x1):
        return (x1 - target).square().sum(1)

    skip = OptimizerGuidance(loss, steps=4, lr=0.1, optimizer="adamw", target="x1_skip",
                             velocity=prior)
    shift = 0.7 * prior(x, t)
    state = OptimizerGuidance(lambda z: loss(z + shift), steps=4, lr=0.1, optimizer="adamw")
    out = skip(x, t, 0)
    torch.testing.assert_close(out, state(x, t, 0))
    assert skip.nfe == 1
    assert (loss(out + shift) < loss(x + shift)).all()
    with pytest.raises(ValueError, match="needs the velocity"):
        OptimizerGuidance(loss, target="x1_skip")


# ---- inpainting ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
@pytest.mark.parametrize("resample", [0, 2])
def test_inpainting_keeps_known_entries_exactly_at_t1(method, resample):
    g = torch.Generator().manual_seed(2)
    prior = gaussian_velocity(torch.zeros(3, 4), torch.ones(3, 4))
    known = torch.randn(5, 3, 4, generator=g)
    mask = torch.rand(5, 3, 4, generator=g) < 0.4
    hook = Inpainting(known, mask, resample=resample, jump=0.1, velocity=prior, generator=g)
    x = solve(prior, torch.randn(5, 3, 4, generator=g), method=method, steps=10,
              hooks=[hook]).x  # fmt: skip
    assert torch.equal(x[mask], known[mask])
    assert not torch.equal(x[~mask], known[~mask])
    assert hook.nfe == 9 * resample  # one Euler step per jump; none after the last step


def test_inpainting_with_resampling_matches_the_conditional_mean_better():
    """Correlated 2D Gaussian, x[0] known: the exact conditional mean of x[1] is rho * x[0].
    Plain replacement is biased towards the prior; RePaint-style resampling reduces the bias."""
    rho = 0.95
    cov = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)
    evals, rot = torch.linalg.eigh(cov)
    scales = evals.sqrt()

    def prior(x, t):
        t = torch.as_tensor(t, dtype=x.dtype)
        k = (t * scales**2 - (1 - t)) / (t**2 * scales**2 + (1 - t) ** 2)
        return ((x @ rot) * k) @ rot.T

    g = torch.Generator().manual_seed(3)
    n = 500
    known = torch.zeros(n, 2, dtype=torch.float64)
    known[:, 0] = 1.5
    mask = torch.tensor([True, False]).expand(n, 2)
    x_0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    errors, stds = [], []
    for resample in (0, 5):
        hook = Inpainting(known, mask, resample=resample, jump=0.1, velocity=prior,
                          generator=torch.Generator().manual_seed(4))  # fmt: skip
        x = solve(prior, x_0, method="euler", steps=20, hooks=[hook]).x
        errors.append(abs(float(x[:, 1].mean()) - rho * 1.5))
        stds.append(float(x[:, 1].std()))
    # measured: mean error 0.62 -> 0.05, std 0.53 -> 0.30 (exact conditional std 0.31)
    assert errors[1] < 0.25 * errors[0], errors
    assert abs(stds[1] - (1 - rho**2) ** 0.5) < 0.05 < abs(stds[0] - (1 - rho**2) ** 0.5), stds


def test_renoise_has_the_path_marginal():
    g = torch.Generator().manual_seed(5)
    x_1 = torch.full((20000, 1), 2.0)
    t, s = 0.8, 0.3
    x_t = t * x_1 + (1 - t) * torch.randn(20000, 1, generator=g)
    x_s = renoise(x_t, t, s, generator=g)
    assert abs(float(x_s.mean()) - s * 2.0) < 0.02
    assert abs(float(x_s.std()) - (1 - s)) < 0.02


def test_optimizer_guidance_projects_manifold_states():
    from flow3d.core.manifolds import SO3Quaternion

    so3 = SO3Quaternion()
    g = torch.Generator().manual_seed(6)
    q = torch.randn(8, 4, generator=g)
    q = q / q.norm(dim=-1, keepdim=True)
    goal = torch.tensor([1.0, 0.0, 0.0, 0.0])

    def loss(z):  # 1 - |<q, goal>|: zero at the goal rotation (either sign)
        return 1 - (z * goal).sum(-1).abs() / z.norm(dim=-1)

    hook = OptimizerGuidance(loss, steps=10, lr=0.1, manifold=so3)
    out = hook(q, torch.tensor(1.0), 0)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(8))
    assert (loss(out) < loss(q)).all()


def test_inpainting_composes_with_the_adaptive_solver():
    g = torch.Generator().manual_seed(7)
    prior = gaussian_velocity(torch.zeros(6), torch.ones(6))
    known = torch.randn(4, 6, generator=g)
    mask = torch.tensor([True, False, True, False, False, True])
    hook = Inpainting(known, mask, resample=1, jump=0.1, velocity=prior, generator=g)
    out = solve(prior, torch.randn(4, 6, generator=g), method="dopri5", hooks=[hook])
    assert torch.equal(out.x[:, mask], known[:, mask]) and out.times[-1] == 1.0


def test_project_prediction_moves_only_the_predicted_data():
    """For a point mass at mu (linear path: v = (mu - x) / (1 - t)) the prediction is mu: the
    hook rebuilds the state from project(mu) and the noise the state carries; identity leaves
    the state alone (cosine path too); late steps and t = 1 are untouched."""
    from flow3d.core.guidance import ProjectPrediction
    from flow3d.core.schedulers import CosineScheduler

    mu = torch.tensor([[2.0, -1.0, 0.5]])

    def v(x, t):
        return (mu - x) / (1 - t)

    x = torch.tensor([[0.3, 0.1, -0.2]])
    shift = torch.tensor([[1.0, 0.0, 0.0]])
    hook = ProjectPrediction(v, lambda x1: x1 + shift, t_max=0.5)
    t = 0.2
    x0 = x - t * v(x, torch.tensor(t))
    torch.testing.assert_close(x0, (x - t * mu) / (1 - t))
    out = hook(x, torch.tensor(t), 0)
    torch.testing.assert_close(out, t * (mu + shift) + (1 - t) * x0)
    assert hook.nfe == 1
    assert torch.equal(hook(x, torch.tensor(0.7), 1), x) and hook.nfe == 1
    assert torch.equal(hook(x, torch.tensor(1.0), 2), x)
    for sched in (None, CosineScheduler()):
        same = ProjectPrediction(lambda x, t: torch.sin(x) + t, lambda x1: x1, scheduler=sched)
        torch.testing.assert_close(same(x, torch.tensor(0.1), 0), x)
    with pytest.raises(ValueError, match="t_max"):
        ProjectPrediction(v, lambda x1: x1, t_max=1.5)


# ---- classifier guidance ------------------------------------------------------------------


def _two_class_mixture():
    """Four 2-D Gaussians, classes {0, 1} and {2, 3}, and the exact fields of each class."""
    from flow3d.core.analytic import GaussianMixtureFlow

    means = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.5]])
    weights = torch.tensor([0.1, 0.3, 0.4, 0.2])
    std = torch.tensor([0.4, 0.6, 0.5, 0.3])
    full = GaussianMixtureFlow.isotropic(means, std, weights)
    classes = [GaussianMixtureFlow.isotropic(means[k], std[k], weights[k])
               for k in ([0, 1], [2, 3])]
    prior = torch.log(torch.tensor([0.4, 0.6], dtype=torch.float64))
    return full, classes, prior


def _posterior(full, classes, prior, label):
    """Exact ``log p(c | x_t = x)`` of class ``label`` (a number or ``[B]``)."""

    def log_prob(x, t):
        logs = torch.stack([prior[c] + classes[c].log_prob(x, t) for c in range(2)], -1)
        post = logs - full.log_prob(x, t)[..., None]
        lab = torch.as_tensor(label).expand(x.shape[0])
        return post.gather(-1, lab[:, None]).squeeze(-1)

    return log_prob


@pytest.mark.parametrize("t", [0.1, 0.4, 0.75, 0.95])
def test_classifier_guidance_with_the_exact_posterior_is_the_class_field(t):
    from flow3d.core.guidance import ClassifierGuidance

    full, classes, prior = _two_class_mixture()
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    for c in range(2):
        guided = ClassifierGuidance(full.velocity, _posterior(full, classes, prior, c), 1.0,
                                    t_min=1e-3)
        torch.testing.assert_close(guided(x, torch.tensor(t, dtype=torch.float64)),
                                   classes[c].velocity(x, t),
                                   rtol=1e-8, atol=1e-8)
    # per-sample classes and times ([B] t, as training code calls wrappers)
    labels = torch.arange(64) % 2
    tb = torch.full((64,), t, dtype=torch.float64)
    guided = ClassifierGuidance(full.velocity, _posterior(full, classes, prior, labels), 1.0,
                                t_min=1e-3)
    want = torch.where(labels[:, None].bool(), classes[1].velocity(x, t), classes[0].velocity(x, t))
    torch.testing.assert_close(guided(x, tb), want, rtol=1e-8, atol=1e-8)


def test_classifier_guidance_samples_the_class_and_sharpens_with_the_weight():
    from flow3d.core.guidance import ClassifierGuidance

    full, classes, prior = _two_class_mixture()
    x0 = torch.randn(400, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def share_of_class_0(scale):
        guided = ClassifierGuidance(full.velocity, _posterior(full, classes, prior, 0), scale,
                                    t_min=1e-3)
        x1 = solve(guided, x0, method="midpoint", steps=100).x
        post = _posterior(full, classes, prior, 0)(x1, torch.tensor(1.0))
        return float((post.exp() > 0.5).double().mean())

    unguided = share_of_class_0(0.0)
    assert abs(unguided - 0.4) < 0.08  # the prior's share
    assert share_of_class_0(1.0) > 0.97
    assert share_of_class_0(3.0) >= share_of_class_0(1.0)


def test_classifier_guidance_interval_t_min_and_errors():
    from flow3d.core.guidance import ClassifierGuidance

    calls = []

    def log_prob(x, t):
        calls.append(t)
        return (x * torch.tensor([1.0, -2.0])).sum(-1)  # gradient (1, -2) everywhere

    v = lambda x, t: torch.zeros_like(x)  # noqa: E731
    g = ClassifierGuidance(v, log_prob, 2.0, interval=(0.2, 0.8), t_min=0.25)
    x = torch.randn(3, 2)
    assert torch.equal(g(x, torch.tensor(0.9)), torch.zeros(3, 2)) and not calls
    torch.testing.assert_close(g(x, torch.tensor(0.5)), torch.tensor([2.0, -4.0]).expand(3, 2))
    # (1 - t) / max(t, t_min) at t = 0.2: 0.8 / 0.25
    torch.testing.assert_close(g(x, torch.tensor(0.2)),
                               2 * 3.2 * torch.tensor([1.0, -2.0]).expand(3, 2))
    # per-sample times: rows outside the interval are not moved
    out = g(x, torch.tensor([0.1, 0.5, 0.9]))
    assert torch.equal(out[0], torch.zeros(2)) and torch.equal(out[2], torch.zeros(2))
    with pytest.raises(ValueError, match="scale"):
        ClassifierGuidance(v, log_prob, -1.0)
    with pytest.raises(ValueError, match="t_min"):
        ClassifierGuidance(v, log_prob, 1.0, t_min=0.0)
