"""EMA: the update equation, the warm-up schedule and state round trips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flow3d.engine.ema import EMA


def test_update_is_the_ema_equation():
    model = nn.Linear(3, 2)
    ema = EMA(model, decay=0.9, warmup=False)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, step=0)
    for k, v in model.state_dict().items():
        assert torch.allclose(ema.shadow[k], 0.9 * start[k] + 0.1 * v)


def test_warmup_decay_schedule():
    ema = EMA(nn.Linear(1, 1), decay=0.999, warmup=True)
    assert ema.decay_at(0) == pytest.approx(0.1)
    assert ema.decay_at(10) == pytest.approx(11 / 20)
    assert ema.decay_at(10**6) == 0.999
    assert [ema.decay_at(k) for k in range(5)] == sorted(ema.decay_at(k) for k in range(5))
    assert EMA(nn.Linear(1, 1), decay=0.5, warmup=False).decay_at(0) == 0.5


def test_converges_to_constant_weights_and_copies_back():
    model = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4))
    ema = EMA(model, decay=0.5, warmup=False)
    target = {k: torch.full_like(v, 2.0) if v.is_floating_point() else v + 3
              for k, v in model.state_dict().items()}
    model.load_state_dict(target)
    for step in range(60):
        ema.update(model, step)
    other = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4))
    ema.copy_to(other)
    for k, v in other.state_dict().items():
        assert torch.allclose(v, target[k].to(v.dtype)), k


def test_state_round_trip_and_key_check():
    model = nn.Linear(2, 2)
    ema = EMA(model)
    state = {k: v + 1 for k, v in ema.state_dict().items()}
    ema.load_state_dict(state)
    assert all(torch.equal(ema.shadow[k], state[k]) for k in state)
    with pytest.raises(KeyError):
        ema.load_state_dict({"weight": state["weight"]})
    with pytest.raises(ValueError):
        EMA(model, decay=1.5)
