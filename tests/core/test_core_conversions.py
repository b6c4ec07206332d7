"""Conversions between velocity / x1 / x0 predictions and from the diffusers/SD3 convention."""

import pytest
import torch

from flow3d.core.conversions import (
    PREDICTIONS,
    as_velocity,
    convert_prediction,
    from_sigma_model,
    to_sigma_model,
)
from flow3d.core.paths import AffinePath
from flow3d.core.schedulers import CosineScheduler, LinearScheduler, VPScheduler
from flow3d.errors import ConfigError

SCHEDS = [LinearScheduler(), CosineScheduler(), VPScheduler()]


def _sample(sched, seed=0, b=6):
    g = torch.Generator().manual_seed(seed)
    x_0 = torch.randn(b, 3, 2, generator=g, dtype=torch.float64)
    x_1 = torch.randn(b, 3, 2, generator=g, dtype=torch.float64)
    t = torch.rand(b, generator=g, dtype=torch.float64) * 0.9 + 0.05
    return AffinePath(sched).sample(x_0, x_1, t)


@pytest.mark.parametrize("sched", SCHEDS, ids=lambda s: s.name)
def test_conversions_recover_the_true_endpoints(sched):
    s = _sample(sched)
    truth = {"velocity": s.dx_t, "x1": s.x_1, "x0": s.x_0}
    for src in PREDICTIONS:
        for dst in PREDICTIONS:
            out = convert_prediction(truth[src], s.x_t, s.t, src=src, dst=dst, scheduler=sched)
            torch.testing.assert_close(out, truth[dst], rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("sched", SCHEDS, ids=lambda s: s.name)
def test_round_trips_on_arbitrary_predictions(sched):
    s = _sample(sched, seed=1)
    pred = torch.randn_like(s.x_t)  # not consistent with any pair: pure algebra
    for a in PREDICTIONS:
        for b in PREDICTIONS:
            there = convert_prediction(pred, s.x_t, s.t, src=a, dst=b, scheduler=sched)
            back = convert_prediction(there, s.x_t, s.t, src=b, dst=a, scheduler=sched)
            torch.testing.assert_close(back, pred, rtol=1e-7, atol=1e-7)


def test_linear_closed_forms_and_scalar_time():
    x_t, v = torch.randn(4, 3), torch.randn(4, 3)
    t = torch.tensor(0.3)
    torch.testing.assert_close(convert_prediction(v, x_t, t, src="velocity", dst="x1"),
                               x_t + 0.7 * v)
    torch.testing.assert_close(convert_prediction(v, x_t, 0.3, src="velocity", dst="x0"),
                               x_t - 0.3 * v)


def test_as_velocity_wraps_x1_and_x0_models():
    s = _sample(LinearScheduler(), seed=2)
    x1_model = lambda x, t: s.x_1  # noqa: E731 - an oracle data predictor
    x0_model = lambda x, t: s.x_0  # noqa: E731
    torch.testing.assert_close(as_velocity(x1_model, "x1")(s.x_t, s.t), s.dx_t)
    torch.testing.assert_close(as_velocity(x0_model, "x0")(s.x_t, s.t), s.dx_t)
    with pytest.raises(ConfigError, match="unknown prediction kind 'eps'"):
        as_velocity(x1_model, "eps")


def test_sd3_flow_model_becomes_our_velocity():
    s = _sample(LinearScheduler(), seed=3)
    seen = {}

    def sd3_oracle(x, timestep):  # diffusers convention: x = (1 - sigma) data + sigma noise
        seen["timestep"] = timestep
        sigma = (timestep / 1000.0).reshape(-1, 1, 1)
        torch.testing.assert_close(x, (1 - sigma) * s.x_1 + sigma * s.x_0)
        return s.x_0 - s.x_1  # noise - data

    v = from_sigma_model(sd3_oracle)(s.x_t, s.t)
    torch.testing.assert_close(v, s.dx_t)
    torch.testing.assert_close(seen["timestep"], 1000.0 * (1 - s.t))
    data_model = lambda x, ts: s.x_1  # noqa: E731
    noise_model = lambda x, ts: s.x_0  # noqa: E731
    torch.testing.assert_close(from_sigma_model(data_model, prediction="data")(s.x_t, s.t),
                               s.dx_t)
    torch.testing.assert_close(from_sigma_model(noise_model, prediction="noise")(s.x_t, s.t),
                               s.dx_t)


def test_sigma_model_round_trip_and_euler_agreement():
    """A diffusers-style Euler loop over sigmas 1 -> 0 with the converted model equals our
    Euler loop over t 0 -> 1 step for step."""
    w = torch.randn(2, 2, dtype=torch.float64)
    ours = lambda x, t: x @ w * (1 + t)  # noqa: E731
    sd3 = to_sigma_model(ours)
    back = from_sigma_model(sd3)
    x = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(back(x, torch.tensor(0.25)), ours(x, torch.tensor(0.25)))
    ts = torch.linspace(0, 1, 11, dtype=torch.float64)
    a, b = x.clone(), x.clone()
    for i in range(10):
        a = a + (ts[i + 1] - ts[i]) * ours(a, ts[i])
        sigma, sigma_next = 1 - ts[i], 1 - ts[i + 1]
        b = b + (sigma_next - sigma) * sd3(b, 1000 * sigma)
    torch.testing.assert_close(a, b)
    with pytest.raises(ConfigError, match="sigma-model prediction"):
        from_sigma_model(sd3, prediction="epsilon")
