"""The trunk's fast path (factorised pair updates, cached relative-position term, no subnormal
distogram values, pair mask skipped when every residue is present) against the plain code kept
as its slow twin (``model.fast = False``), and the opt-in bfloat16 pair precision.

Stated tolerances (measured values in brackets, this CPU, torch 2.13):
- fast vs plain, float32: every forward output within 2e-5 absolute (nm for translations,
  quaternion components, node features) [2e-6]; designs of a fixed seed from the bundled
  ``tiny`` checkpoint within 1e-3 A at every CA [1.4e-4 A at L = 100, 50 steps];
- fast vs plain, float64: within 1e-9 (the same function; only the summation order differs);
- bf16 pair precision vs plain: forward outputs within 2e-2 [5e-3]; designs within 0.25 A CA
  RMSD and 1.5 A at any CA [0.05-0.08 A RMSD, 0.5 A max at L = 100, 50 steps]; in training,
  the gradient within 5% of the float32 one (relative norm of the difference) and cosine
  >= 0.998 [0.2%, cosine 1.0000 on the test's model].
- ``pair_precision: auto`` (the default) is bf16 on a CPU with AMX-BF16, fp32 elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flow3d.core import so3
from protein.model import IPATrunk, TrunkConfig

ROOT = Path(__file__).resolve().parents[2]
TINY_CKPT = ROOT / "checkpoints" / "protein" / "tiny"
SMALL = TrunkConfig(
    num_blocks=3, node_dim=32, edge_dim=16, ipa_head_dim=8, num_heads=2,
    num_qk_points=4, num_v_points=4, seq_layers=1, seq_heads=2,
)  # fmt: skip


def _randomise(model: torch.nn.Module, seed: int = 0, scale: float = 0.02) -> None:
    """Replace the zero-initialised layers so that every path changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _inputs(B, L, pad=0, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    trans = torch.randn(B, L, 3, generator=g, dtype=dtype)
    quats = so3.random_quat((B, L), generator=g, dtype=dtype)
    sc = torch.randn(B, L, 3, generator=g, dtype=dtype)
    mask = torch.ones(B, L, dtype=dtype)
    if pad:
        mask[-1, -pad:] = 0
    t = torch.rand(B, generator=g, dtype=dtype)
    return trans, quats, t, mask, None, sc


def _run(model, args, fast, precision="fp32"):
    model.fast = fast
    model.set_pair_precision(precision)
    with torch.no_grad():
        return model(*args)


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in ("trans", "quats", "node"))


@pytest.fixture(scope="module")
def base_model():
    torch.manual_seed(0)
    model = IPATrunk(TrunkConfig()).eval()  # ReQFlow's base size, untrained
    _randomise(model)
    return model


@pytest.mark.parametrize("B,L,pad", [(1, 32, 0), (2, 24, 5)])
def test_fast_path_matches_plain_base_size(base_model, B, L, pad):
    args = _inputs(B, L, pad)
    plain = _run(base_model, args, fast=False)
    fast = _run(base_model, args, fast=True)
    assert _max_diff(fast, plain) < 2e-5
    again = _run(base_model, args, fast=True)  # second call: relative-position term cached
    assert _max_diff(again, fast) == 0.0
    bf16 = _run(base_model, args, fast=True, precision="bf16")
    assert 0.0 < _max_diff(bf16, plain) < 2e-2
    base_model.set_pair_precision("fp32")


def test_fast_path_matches_plain_float64_and_gradients():
    torch.manual_seed(0)
    model = IPATrunk(SMALL).double()
    _randomise(model, scale=0.1)
    args = _inputs(2, 10, pad=3, dtype=torch.float64)
    outs, grads = {}, {}
    for fast in (False, True):
        model.fast = fast
        model.zero_grad()
        out = model(*args)
        (out["trans"].square().sum() + out["node"].sum()).backward()
        outs[fast] = {k: v.detach() for k, v in out.items()}
        grads[fast] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert _max_diff(outs[True], outs[False]) < 1e-9
    assert grads[True].keys() == grads[False].keys()
    for n in grads[False]:
        torch.testing.assert_close(grads[True][n], grads[False][n], rtol=1e-7, atol=1e-9, msg=n)
    # bf16 applies only to float32 models: float64 stays exact
    model.set_pair_precision("bf16")
    with torch.no_grad():
        assert _max_diff(model(*args), outs[False]) < 1e-9


def test_fast_path_matches_plain_with_fold_plans():
    import dataclasses

    torch.manual_seed(0)
    model = IPATrunk(dataclasses.replace(SMALL, topology=True, pair_precision="fp32")).eval()
    _randomise(model)
    args = _inputs(2, 14, pad=2)
    g = torch.Generator().manual_seed(3)
    plan = {"ss": torch.randint(0, 4, (2, 14), generator=g),
            "adj": torch.randint(0, 3, (2, 14, 14), generator=g)}
    model.fast = False
    with torch.no_grad():
        plain = model(*args, **plan)
        model.fast = True
        fast = model(*args, **plan)
    assert _max_diff(fast, plain) < 2e-5


def test_relative_position_cache_follows_indices_and_weights():
    torch.manual_seed(0)
    model = IPATrunk(SMALL).eval()
    _randomise(model)
    args = list(_inputs(1, 12))
    _run(model, args, fast=True)
    args[4] = torch.arange(12)[None] * 2  # other residue indices: the cache must not be reused
    assert _max_diff(_run(model, args, fast=True), _run(model, args, fast=False)) < 2e-5
    with torch.no_grad():  # an in-place weight update (an optimiser step) invalidates it too
        model.edge_embed.mlp[0].weight.mul_(1.5)
    assert _max_diff(_run(model, args, fast=True), _run(model, args, fast=False)) < 2e-5


def test_pair_precision_is_checked_and_a_recipe_key():
    from flow3d.engine.config import load_recipe
    from flow3d.errors import ConfigError
    from protein.head import ProteinHead

    with pytest.raises(ValueError, match="pair_precision"):
        TrunkConfig(pair_precision="fp16")
    base = ROOT / "recipes" / "protein" / "base.yaml"
    recipe = load_recipe(base, ["model.pair_precision=bf16"])
    assert ProteinHead(recipe).build_model().cfg.pair_precision == "bf16"
    assert ProteinHead(load_recipe(base)).build_model().cfg.pair_precision == "auto"
    with pytest.raises(ConfigError, match="pair_precision"):
        load_recipe(base, ["model.pair_precision=fp16"])


def test_auto_precision_follows_the_hardware(monkeypatch):
    from protein.model import trunk

    cpu, f32, bf16 = torch.device("cpu"), torch.float32, torch.bfloat16
    for amx in (True, False):
        monkeypatch.setattr(trunk, "cpu_has_amx_bf16", lambda amx=amx: amx)
        assert trunk.pair_dtype("auto", cpu, f32) == (bf16 if amx else None)
        assert trunk.pair_dtype("bf16", cpu, f32) == bf16  # asked for: always
        assert trunk.pair_dtype("fp32", cpu, f32) is None
        assert trunk.pair_dtype("bf16", cpu, torch.float64) is None
        # not measured on GPUs: auto keeps their float32 (TF32 where the trainer allows it)
        assert trunk.pair_dtype("auto", torch.device("cuda"), f32) is None
    monkeypatch.undo()
    trunk.cpu_has_amx_bf16.cache_clear()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    expected = " amx_bf16" in flags and torch.backends.mkldnn.is_available()
    assert trunk.cpu_has_amx_bf16() == expected


def test_bf16_pairs_train_with_gradients_close_to_float32():
    """bf16 pair products apply in training too (float32 weights, bf16 products): the
    gradient of every parameter stays close to the float32 one."""
    torch.manual_seed(0)
    model = IPATrunk(dataclasses_replace(SMALL, node_dim=64, edge_dim=32)).train()
    _randomise(model, scale=0.05)
    args = _inputs(2, 20, pad=4)
    grads = {}
    for precision in ("fp32", "bf16"):
        model.set_pair_precision(precision)
        model.zero_grad()
        out = model(*args)
        (out["trans"].square().sum() + out["quats"][..., 1:].sum()).backward()
        grads[precision] = torch.cat([p.grad.flatten() for p in model.parameters()
                                      if p.grad is not None])
    a, b = grads["fp32"], grads["bf16"]
    assert not torch.equal(a, b)  # the bf16 path really ran
    assert (b - a).norm() / a.norm() < 0.05
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.998


def dataclasses_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def _designs(loaded, fast, precision, L=48, steps=10, num=2):
    from protein.settings import SamplerSettings

    model, head = loaded.model, loaded.head
    model.fast = fast
    model.set_pair_precision(precision)
    settings = SamplerSettings(steps=steps).resolved(head.recipe.sample)
    g = torch.Generator().manual_seed(0)
    out = head.flow.sample(model, num, L, settings, generator=g)
    return out.trans * 10.0  # angstrom


def test_bundled_tiny_checkpoint_designs_unchanged():
    from flow3d.engine.checkpoint import load_model

    loaded = load_model(TINY_CKPT)  # strict state-dict load: the layout is unchanged
    plain = _designs(loaded, fast=False, precision="fp32")
    fast = _designs(loaded, fast=True, precision="fp32")
    assert (fast - plain).norm(dim=-1).max() < 1e-3
    bf16 = _designs(loaded, fast=True, precision="bf16")
    dev = (bf16 - plain).norm(dim=-1)
    assert dev.pow(2).mean().sqrt() < 0.25 and dev.max() < 1.5


def test_design_pair_precision_option(tmp_path):
    import argparse

    from flow3d.errors import ConfigError
    from protein.cli import design_settings, register
    from protein.design import prepare_design
    from protein.settings import DesignSettings, SamplerSettings

    with pytest.raises(ConfigError, match="--pair-precision"):
        DesignSettings(pair_precision="fp16")
    settings = DesignSettings(lengths=(30,), num=1, sampler=SamplerSettings(steps=2),
                              checkpoint=str(TINY_CKPT), pair_precision="bf16")
    run = prepare_design(settings, tmp_path / "out")
    assert run.loaded.model.cfg.pair_precision == "bf16"
    assert DesignSettings.from_dict(run.settings.to_dict()) == run.settings  # run.json
    other = DesignSettings.from_dict({**run.settings.to_dict(), "pair_precision": None})
    assert ("--pair-precision", "bf16", "(unset)") in run.settings.differences(other)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["protein", "design", "--out", str(tmp_path / "o"),
                              "--pair-precision", "bf16"])
    assert design_settings(args).pair_precision == "bf16"
    with pytest.raises(SystemExit):
        parser.parse_args(["protein", "design", "--out", "o", "--pair-precision", "fp16"])
