"""Time samplers against their closed-form CDFs (KS tests, fixed seed) and inference grids."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from flow3d.core.time import (
    TIME_SAMPLERS,
    LogitNormalTime,
    ModeTime,
    UniformTime,
    UShapedTime,
    build_time_sampler,
    mode_transform,
    shift_time,
    time_grid,
)
from flow3d.errors import ConfigError

N = 20_000


def _draw(sampler, seed=0):
    return sampler.sample(N, generator=torch.Generator().manual_seed(seed)).double().numpy()


def _mode_cdf(scale):
    """CDF of t = 1 - f(u): P(t <= x) = f^{-1}(1 - x), f decreasing; inverted by bisection."""

    def cdf(x):
        x = np.asarray(x, dtype=np.float64)
        lo, hi = np.zeros_like(x), np.ones_like(x)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            f = mode_transform(torch.from_numpy(mid), scale).numpy()
            too_small_u = f > 1.0 - x
            lo, hi = np.where(too_small_u, mid, lo), np.where(too_small_u, hi, mid)
        return 0.5 * (lo + hi)

    return cdf


def _u_shaped_cdf(a):
    return lambda x: (np.sinh(a * (np.asarray(x) - 0.5)) + np.sinh(a / 2)) / (2 * np.sinh(a / 2))


CASES = [
    (UniformTime(), lambda x: np.clip(x, 0, 1)),
    (LogitNormalTime(0.0, 1.0), lambda x: stats.norm.cdf(np.log(x / (1 - x)))),
    (LogitNormalTime(-0.5, 0.7), lambda x: stats.norm.cdf((np.log(x / (1 - x)) + 0.5) / 0.7)),
    (ModeTime(1.29), _mode_cdf(1.29)),
    (ModeTime(-0.5), _mode_cdf(-0.5)),
    (UShapedTime(4.0), _u_shaped_cdf(4.0)),
    (UShapedTime(1.0), _u_shaped_cdf(1.0)),
]


@pytest.mark.parametrize("sampler,cdf", CASES, ids=lambda c: repr(c) if not callable(c) else "")
def test_sampler_matches_its_distribution(sampler, cdf):
    t = _draw(sampler)
    assert t.shape == (N,) and t.min() >= 0.0 and t.max() <= 1.0
    assert stats.kstest(t, cdf).pvalue > 1e-3


def test_ks_check_can_fail():
    """The KS check above has power: U-shaped samples are rejected as uniform, mode as
    logit-normal."""
    assert stats.kstest(_draw(UShapedTime(4.0)), lambda x: x).pvalue < 1e-6
    assert stats.kstest(_draw(ModeTime(1.29)), CASES[1][1]).pvalue < 1e-6


def test_u_shaped_density_shape():
    t = _draw(UShapedTime(4.0))
    ends = ((t < 0.1) | (t > 0.9)).mean()
    middle = ((t > 0.4) & (t < 0.6)).mean()
    assert ends > 2.5 * middle  # cosh(2) / 1 ~ 3.8 at the ends vs the middle
    assert abs(t.mean() - 0.5) < 0.01


def test_samplers_are_deterministic_and_build_by_name():
    for name, cls in TIME_SAMPLERS.items():
        s = build_time_sampler(name)
        assert isinstance(s, cls)
        a = s.sample(7, generator=torch.Generator().manual_seed(3))
        b = s.sample(7, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b) and a.dtype == torch.float32
    assert build_time_sampler("logit_normal", mean=0.3).mean == 0.3
    with pytest.raises(ConfigError, match="unknown time sampler 'unifrom'"):
        build_time_sampler("unifrom")
    with pytest.raises(ConfigError, match="time sampler 'mode'"):
        build_time_sampler("mode", mean=1.0)
    with pytest.raises(ConfigError, match="mode scale"):
        ModeTime(3.0)


# ---- grids ------------------------------------------------------------------------------


def test_uniform_grid_and_inversion_grid():
    g = time_grid(4)
    torch.testing.assert_close(g, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert g.dtype == torch.float32
    back = time_grid(4, t0=1.0, t1=0.0)
    torch.testing.assert_close(back, g.flip(0))


def test_steps_and_grid_together_is_an_error():
    with pytest.raises(ValueError, match="not both"):
        time_grid(10, grid=[0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="steps or an explicit grid"):
        time_grid()


@pytest.mark.parametrize(
    "grid,msg",
    [([0.0, 0.5, 0.4, 1.0], "monotone"), ([0.0, 0.5, 0.5, 1.0], "monotone"),
     ([-0.1, 1.0], r"\[0, 1\]"), ([0.0, float("nan")], r"\[0, 1\]"), ([0.5], "at least 2")],
)
def test_explicit_grid_validation(grid, msg):
    with pytest.raises(ValueError, match=msg):
        time_grid(grid=grid)


def test_explicit_grid_kept_and_descending_allowed():
    torch.testing.assert_close(time_grid(grid=[0.0, 0.1, 0.7, 1.0]),
                               torch.tensor([0.0, 0.1, 0.7, 1.0]))
    torch.testing.assert_close(time_grid(grid=[1.0, 0.2, 0.0]), torch.tensor([1.0, 0.2, 0.0]))


def test_shift_moves_steps_towards_noise_and_keeps_endpoints():
    g = time_grid(10, shift=3.0)
    assert g[0] == 0.0 and g[-1] == 1.0
    assert (g.diff() > 0).all()
    plain = time_grid(10)
    assert (g[1:-1] < plain[1:-1]).all()  # shift > 1: more steps at high noise (small t)
    # SD3 Eq. 23 on sigma = 1 - t
    sigma = 1 - plain.double()
    torch.testing.assert_close(g.double(), 1 - 3 * sigma / (1 + 2 * sigma), atol=1e-6, rtol=0)
    torch.testing.assert_close(shift_time(plain, 1.0), plain)


def test_resolution_dependent_shift():
    torch.testing.assert_close(time_grid(8, resolution=1024, base_resolution=256),
                               time_grid(8, shift=2.0))
    torch.testing.assert_close(time_grid(8, resolution=256), time_grid(8))
    with pytest.raises(ValueError, match="not both"):
        time_grid(8, shift=2.0, resolution=512)
    assert math.isclose(float(time_grid(8, resolution=64)[4]), 2 / 3, rel_tol=1e-6)
