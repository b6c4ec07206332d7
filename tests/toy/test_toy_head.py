"""Toy head pieces: targets, distances, the velocity MLP, the loss contract, saving."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flow3d.engine.config import load_recipe
from flow3d.errors import ConfigError
from flow3d.toy.head import ToyHead
from flow3d.toy.metrics import energy_distance, mmd_rbf
from flow3d.toy.model import VelocityMLP
from flow3d.toy.targets import TARGETS, sample_target

RECIPE = "recipes/toy/eight_gaussians.yaml"


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_targets_are_seeded_and_bounded(name):
    x = sample_target(name, 500, seed=1)
    assert x.shape == (500, 2) and x.dtype == torch.float32
    assert torch.equal(x, sample_target(name, 500, seed=1))
    assert not torch.equal(x, sample_target(name, 500, seed=2))
    assert x.abs().max() < 3.0 * 1.5


def test_eight_gaussians_modes():
    x = sample_target("eight_gaussians", 4000, seed=0, radius=3.0, std=0.1).double()
    angle = torch.atan2(x[:, 1], x[:, 0]) / (2 * math.pi / 8)
    offset = (angle - angle.round()).abs()  # 1 sigma = 0.1 / 3 rad = 0.042 in these units
    assert offset.mean() < 0.05 and offset.max() < 0.3
    assert x.norm(dim=1).mean() == pytest.approx(3.0, abs=0.02)
    counts = torch.bincount(torch.remainder(angle.round().long(), 8), minlength=8)
    assert counts.min() > 400


def test_checkerboard_occupies_alternate_squares():
    x = sample_target("checkerboard", 4000, seed=0, radius=2.0, std=0.0)  # unit squares
    parity = torch.remainder(torch.floor(x[:, 0]) + torch.floor(x[:, 1]), 2)
    assert torch.all(parity == parity[0])


def test_unknown_target_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown toy target"):
        sample_target("nine_gaussians", 3)


def test_distances_are_near_zero_for_same_law_and_large_otherwise():
    a = sample_target("eight_gaussians", 1500, seed=1)
    b = sample_target("eight_gaussians", 1500, seed=2)
    noise = torch.randn(1500, 2, generator=torch.Generator().manual_seed(0))
    assert abs(energy_distance(a, b)) < 0.01 and abs(mmd_rbf(a, b)) < 0.01
    assert energy_distance(a, noise) > 0.5 and mmd_rbf(a, noise) > 0.5
    # energy distance of two point masses at distance d is 2 d
    p, q = torch.zeros(10, 2), torch.ones(10, 2)
    assert energy_distance(p, q) == pytest.approx(2 * math.sqrt(2), rel=0.1)
    with pytest.raises(ValueError):
        energy_distance(torch.zeros(5, 2), torch.zeros(5, 3))


def test_mlp_accepts_scalar_and_batched_time():
    model = VelocityMLP(width=16, depth=1, num_freqs=4)
    x = torch.randn(7, 2)
    v_scalar = model(x, torch.tensor(0.3))
    v_batch = model(x, torch.full((7,), 0.3))
    assert v_scalar.shape == (7, 2)
    torch.testing.assert_close(v_scalar, v_batch)


@pytest.fixture
def head():
    recipe = load_recipe(RECIPE, ["model.width=16", "model.depth=1", "data.num_train=64"])
    return ToyHead(recipe)


def test_loss_is_a_function_of_the_generator(head):
    torch.manual_seed(0)
    model = head.build_model()
    ds = head.train_dataset()
    batch = head.collate([ds[i] for i in range(16)])
    out1 = head.loss(model, batch, torch.Generator().manual_seed(5))
    out2 = head.loss(model, batch, torch.Generator().manual_seed(5))
    out3 = head.loss(model, batch, torch.Generator().manual_seed(6))
    assert out1["loss"].ndim == 0 and out1["loss"].requires_grad
    assert out1["loss"].item() == out2["loss"].item() != out3["loss"].item()


def test_sample_overrides_and_save(head, tmp_path):
    torch.manual_seed(0)
    model = head.build_model()
    x = head.sample(model, 50, seed=3, steps=3, method="midpoint")
    assert x.shape == (50, 2)
    torch.testing.assert_close(x, head.sample(model, 50, seed=3, steps=3, method="midpoint"))
    with pytest.raises(ConfigError, match="did you mean .sample.steps"):
        head.sample(model, 5, stepz=3)
    paths = head.save_samples(x, tmp_path / "out")
    assert [p.name for p in paths] == ["samples.npy", "samples.png"]
    np.testing.assert_array_equal(np.load(paths[0]), x.numpy())
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = head.evaluate(x)
    assert set(metrics) == {"energy_distance", "mmd"} and metrics["energy_distance"] > 0.1
