"""Checkpoints: pickle-free optimiser state, atomic writes, latest selection, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from flow3d.engine import checkpoint as ck
from flow3d.engine.config import load_recipe
from flow3d.errors import DataError


def _adam_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 3)).square().mean().backward()
        opt.step()
    return model, opt


def test_optimizer_state_round_trip_without_pickle(tmp_path):
    from safetensors.torch import load_file, save_file

    model, opt = _adam_state()
    tensors, meta = ck.optimizer_state_to_flat(opt.state_dict())
    save_file(tensors, str(tmp_path / "t.safetensors"))
    (tmp_path / "m.json").write_text(json.dumps(meta))
    state = ck.optimizer_state_from_flat(load_file(str(tmp_path / "t.safetensors")),
                                         json.loads((tmp_path / "m.json").read_text()))
    opt2 = torch.optim.AdamW(model.parameters(), lr=1.0)
    opt2.load_state_dict(state)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid, per in a["state"].items():
        for k, v in per.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["state"][pid][k]))


@pytest.fixture
def recipe(tmp_path):
    return load_recipe("recipes/toy/eight_gaussians.yaml",
                       [f"trainer.out_dir={tmp_path}", "model.width=8", "model.depth=1"])


def _write(path, recipe, step, scale=1.0):
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(scale)
    return ck.write_checkpoint(path, model_state=model.state_dict(), ema_state=None,
                               recipe=recipe, step=step)


def test_crash_during_write_keeps_previous_checkpoint(tmp_path, recipe, monkeypatch):
    good = _write(tmp_path / "last", recipe, step=5, scale=1.0)
    calls = []

    def dying_save(tensors, filename, *a, **k):
        calls.append(filename)
        if len(calls) == 2:
            raise OSError("disk full (simulated crash)")
        from safetensors.torch import save_file

        return save_file(tensors, filename, *a, **k)

    monkeypatch.setattr(ck, "save_file", dying_save)
    with pytest.raises(OSError, match="simulated"):
        _write(tmp_path / "last", recipe, step=6, scale=2.0)
    assert json.loads((good / "train_state.json").read_text())["step"] == 5
    weights = ck.load_file(str(good / "weights.safetensors"))
    assert torch.all(weights["weight"] == 1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no temp dirs left


def test_latest_checkpoint_prefers_highest_step(tmp_path, recipe):
    root = tmp_path / "checkpoints"
    assert ck.latest_checkpoint(root) is None
    _write(root / "step_0000010", recipe, 10)
    _write(root / "last", recipe, 20)
    _write(root / "step_0000020", recipe, 20)
    (root / "step_0000030").mkdir()  # incomplete: ignored
    assert ck.latest_checkpoint(root) == root / "last"
    assert ck.find_checkpoint(tmp_path) == root / "last"


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        ck.load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a flow3d checkpoint"):
        ck.load_model(tmp_path / "empty")


@pytest.mark.parametrize("name, what", [("ema.safetensors", "unreadable weights"),
                                        ("train_state.safetensors", "unreadable train state")])
def test_truncated_checkpoint_files_are_data_errors(tmp_path, recipe, name, what):
    path = _write(tmp_path / "c", recipe, 1)
    f = path / name
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # a copy cut short
    with pytest.raises(DataError, match=what):
        ck.read_checkpoint(path)


def test_mismatched_weights_are_a_data_error(tmp_path, recipe):
    path = _write(tmp_path / "c", recipe, 1)  # a Linear(2, 2), not the recipe's MLP
    with pytest.raises(DataError, match="do not match"):
        ck.load_model(path)


@pytest.mark.parametrize("half", [False, True])
def test_bundle_keeps_the_ema_once_and_samples_like_the_source(tmp_path, recipe, half):
    from flow3d.engine.heads import get_head

    model = get_head(recipe.head)(recipe).build_model()
    ema = {k: v + 0.01 for k, v in model.state_dict().items()}  # EMA differs from the weights
    src = ck.write_checkpoint(tmp_path / "src", model_state=model.state_dict(), ema_state=ema,
                              recipe=recipe, step=7)
    dest = ck.bundle_checkpoint(src, tmp_path / "slim", half=half)
    assert not (dest / "ema.safetensors").exists()
    stored = ck.load_file(str(dest / "weights.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.float16 if half else torch.float32}
    size = (dest / "weights.safetensors").stat().st_size
    assert size < (0.6 if half else 1.1) * (src / "ema.safetensors").stat().st_size
    _, weights, meta = ck.read_checkpoint(dest)  # float32 again, the EMA of the source
    assert meta["step"] == 7 and meta["weights_dtype"] == ("float16" if half else "float32")
    for k, v in ema.items():
        assert weights[k].dtype == torch.float32
        tol = 1e-3 if half else 0.0
        torch.testing.assert_close(weights[k], v, atol=tol, rtol=tol)
    a = ck.load_model(src).sample(16, seed=0, steps=4)
    b = ck.load_model(dest).sample(16, seed=0, steps=4)
    torch.testing.assert_close(a, b, atol=2e-2 if half else 0.0, rtol=0.0)


def test_training_bundles_at_the_end_when_asked(tmp_path, recipe):
    from flow3d.engine.train import train

    r = load_recipe("recipes/toy/eight_gaussians.yaml", [
        f"trainer.out_dir={tmp_path / 'run'}", "model.width=8", "model.depth=1",
        "trainer.max_steps=3", "trainer.ckpt_every=3", "trainer.progress=false",
        f"trainer.bundle_to={tmp_path / 'bundled'}", "trainer.bundle_half=true"])
    last = train(r)
    _, ema, _ = ck.read_checkpoint(last)
    _, bundled, meta = ck.read_checkpoint(tmp_path / "bundled")
    assert meta["step"] == 3 and not (tmp_path / "bundled" / "ema.safetensors").exists()
    for k in ema:
        torch.testing.assert_close(bundled[k], ema[k], atol=1e-3, rtol=1e-3)


def test_load_frozen_checks_the_head_and_freezes(tmp_path):
    from flow3d.engine.checkpoint import load_frozen
    from flow3d.errors import ConfigError, DataError

    root = Path(__file__).resolve().parents[2] / "checkpoints" / "toy" / "eight_gaussians"
    model = load_frozen(root, "toy", "toy flow")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    with pytest.raises(ConfigError, match="not mesh_svae"):
        load_frozen(root, "mesh_svae", "sparse VAE")
    with pytest.raises(DataError, match="sparse VAE checkpoint not found"):
        load_frozen(tmp_path / "none", "mesh_svae", "sparse VAE")
