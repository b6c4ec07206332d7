"""The protein head through the engine: real data cache, batches, loss, train, load, sample."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flow3d.engine.config import from_dict, recipe_from_dict
from protein.head import ProteinHead, ProteinReflowConfig, trajectory_dir

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "proteins"
TS50 = DATA / "ts50_pydssp" / "pdb"
pytestmark = pytest.mark.skipif(not TS50.is_dir(), reason=f"real data not found at {TS50}")

TINY_MODEL = {
    "num_blocks": 1, "node_dim": 32, "edge_dim": 16, "ipa_head_dim": 8, "num_heads": 2,
    "num_qk_points": 4, "num_v_points": 4, "seq_layers": 1, "seq_heads": 2,
}  # fmt: skip


def _recipe(tmp_path: Path, **trainer):
    src = tmp_path / "pdb"
    src.mkdir(exist_ok=True)
    for f in sorted(TS50.iterdir())[:4]:
        shutil.copy(f, src / f.name)
    raw = {
        "head": "protein",
        "name": "protein_test",
        "model": TINY_MODEL,
        "data": {
            "sources": [str(src)], "cache_dir": str(tmp_path / "cache"), "min_len": 40,
            "max_len": 200, "max_coil_fraction": 1.0, "rg_quantile": None,
            "max_residues_sq": 30000,
        },
        "sample": {"num": 2, "lengths": [12], "steps": 3},
        "trainer": {
            "max_steps": 2, "batch_size": 2, "lr": 1e-3, "ckpt_every": 2, "log_every": 1,
            "out_dir": str(tmp_path / "run"), "progress": False, **trainer,
        },
    }  # fmt: skip
    return recipe_from_dict(raw)


def test_protein_head_data_batches_loss_and_sampling(tmp_path):
    head = ProteinHead(_recipe(tmp_path))
    ds = head.train_dataset()
    assert 1 <= len(ds) <= 8
    batches = head.epoch_batches(ds, np.random.default_rng(0), batch_size=2)
    assert sorted(i for b in batches for i in b) == list(range(len(ds)))
    assert all(len(b) <= 2 for b in batches)
    batch = head.collate([ds[i] for i in batches[0]])
    model = head.build_model()
    out = head.loss(model, batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # same generator -> same loss (exact resume relies on it)
    again = head.loss(model, batch, torch.Generator().manual_seed(0))["loss"].detach()
    assert float(again) == pytest.approx(float(out["loss"].detach()), rel=1e-6)

    designs = head.sample(model, 2, seed=1, lengths=(12, 15), trajectory=True)
    assert [d.length for d in designs] == [12, 12, 15, 15]
    assert designs[0].atoms.shape == (12, 4, 3) and np.isfinite(designs[0].atoms).all()
    assert designs[0].trajectory.shape == (4, 12, 4, 3)  # t = 0, 1/3, 2/3, 1
    again = head.sample(model, 2, seed=1, lengths=(12,))
    np.testing.assert_allclose(again[1].atoms, designs[1].atoms, atol=1e-5)
    paths = head.save_samples(designs, tmp_path / "designs")
    pdbs = sorted((tmp_path / "designs").glob("*.pdb"))
    assert len(pdbs) == 4 and len(paths) == 8
    text = pdbs[0].read_text()
    assert text.startswith("HEADER") and "CRYST1" in text and " CA  GLY A" in text
    timings = json.loads((tmp_path / "designs" / "timings.json").read_text())
    assert set(timings) == {p.stem for p in pdbs}
    traj = (trajectory_dir(tmp_path / "designs") / "len012_000_traj.pdb").read_text()
    assert traj.count("MODEL") == 4

    from protein.data.parse import parse_structure

    chain = parse_structure(pdbs[0], break_distance=float("inf")).chains[0]  # untrained
    np.testing.assert_allclose(chain.coords[:, :3], designs[0].atoms[:, :3], atol=1e-3)


def test_protein_head_trains_with_engine_and_loads(tmp_path):
    import flow3d
    from flow3d.engine.train import train

    ckpt = train(_recipe(tmp_path))
    loaded = flow3d.load(ckpt)
    designs = loaded.sample(1, seed=0, steps=2)
    assert len(designs) == 1 and designs[0].atoms.shape == (12, 4, 3)
    assert np.isfinite(designs[0].atoms).all()


def test_protein_head_reflow_pairs_generated_filtered_and_trained_on(tmp_path):
    from flow3d.engine.checkpoint import write_checkpoint
    from flow3d.errors import ConfigError, DataError

    base = _recipe(tmp_path)
    torch.manual_seed(0)
    state = ProteinHead(base).build_model().state_dict()
    teacher = write_checkpoint(tmp_path / "teacher", model_state=state, ema_state=state,
                               recipe=base, step=1)
    reflow = {"pairs_dir": str(tmp_path / "pairs"), "teacher": str(teacher),
              "lengths": [10, 13], "num_per_length": 3, "steps": 2, "batch_size": 2,
              "min_ca_valid": 0.0}
    recipe = base.replace(data=dataclasses.replace(base.data, reflow=from_dict(
        ProteinReflowConfig, reflow)))
    head = ProteinHead(recipe)
    ds = head.train_dataset()
    assert len(ds) == 6 and sorted(set(ds.lengths.tolist())) == [10, 13]
    kept = json.loads((tmp_path / "pairs" / "len013" / "kept.json").read_text())
    assert kept["kept"] == [0, 1, 2] and len(kept["ca_valid_fraction"]) == 3
    batches = head.epoch_batches(ds, np.random.default_rng(0), batch_size=4)
    batch = head.collate([ds[i] for i in batches[0]])
    assert batch["trans_0"].shape == batch["trans"].shape
    loss = head.loss(head.build_model(), batch, torch.Generator().manual_seed(0))["loss"]
    assert torch.isfinite(loss)
    # the pair's source is the noise the teacher integrated: t = 0 reproduces it exactly
    item = ds[0]
    flow = head.flow
    t0 = torch.zeros(1)
    tr, q, _ = flow.interpolate(item["trans_0"][None], item["quats_0"][None],
                                item["trans"][None], item["quats"][None], t0)
    torch.testing.assert_close(tr[0], item["trans_0"])
    # a validity threshold nobody passes: a clear error, not an empty dataset
    strict = dict(reflow, pairs_dir=str(tmp_path / "pairs2"), min_ca_valid=1.01)
    recipe2 = base.replace(data=dataclasses.replace(base.data, reflow=from_dict(
        ProteinReflowConfig, strict)))
    with pytest.raises(DataError, match="no reflow pair"):
        ProteinHead(recipe2).train_dataset()
    # a student whose translation prior is not the teacher's is refused before any pair
    other = recipe.replace(model=dataclasses.replace(recipe.model, flow=dataclasses.replace(
        recipe.model.flow, trans_prior="length")))
    other = other.replace(data=dataclasses.replace(other.data, reflow=from_dict(
        ProteinReflowConfig, dict(reflow, pairs_dir=str(tmp_path / "pairs3")))))
    with pytest.raises(ConfigError, match="model.flow.trans_prior = 'length' but the reflow"):
        ProteinHead(other).train_dataset()
    assert not (tmp_path / "pairs3").exists()


def test_protein_reflow_guided_teacher_and_clash_filter(tmp_path):
    """A clash-guided teacher ends elsewhere than the same teacher unguided from the same
    noise (the guidance acts during pair generation; that it removes clashes is tested on an
    oracle in test_protein_flow.py), and ``max_clashes`` keeps exactly the pairs at or under
    the limit, counted on the stored backbones."""
    from flow3d.core.reflow import ReflowPairs
    from flow3d.engine.checkpoint import write_checkpoint
    from protein.eval import count_clashes
    from protein.flow import points_to_quats
    from protein.head import frames_to_atoms

    base = _recipe(tmp_path)
    torch.manual_seed(0)
    state = ProteinHead(base).build_model().state_dict()
    teacher = write_checkpoint(tmp_path / "teacher", model_state=state, ema_state=state,
                               recipe=base, step=1)

    def pairs(name, **extra):
        cfg = {"pairs_dir": str(tmp_path / name), "teacher": str(teacher), "lengths": [24],
               "num_per_length": 4, "steps": 4, "batch_size": 4, "min_ca_valid": 0.0, **extra}
        recipe = base.replace(data=dataclasses.replace(base.data, reflow=from_dict(
            ProteinReflowConfig, cfg)))
        head = ProteinHead(recipe)
        (out,) = head.reflow_pairs()
        info = json.loads((out / "kept.json").read_text())
        stored = ReflowPairs(out)
        counts = []
        for i in range(len(stored)):
            tr, rot = head.flow.manifold.split_point(stored[i]["x_1"])
            ca = frames_to_atoms(tr, points_to_quats(rot, head.flow.s.rot_path))[:, 1]
            counts.append(count_clashes(ca.double().numpy()))
        assert info["clashes"] == counts
        return info, stored

    plain, plain_pairs = pairs("plain")
    guided, guided_pairs = pairs("guided", clash_guidance=1.0, guidance_window=[0.0, 1.0])
    # same noise, different ends: the guidance acted
    torch.testing.assert_close(plain_pairs[0]["x_0"], guided_pairs[0]["x_0"])
    assert not torch.allclose(plain_pairs[0]["x_1"], guided_pairs[0]["x_1"])
    assert guided["clash_guidance"] == 1.0 and plain["kept"] == [0, 1, 2, 3]
    counts = guided["clashes"]
    assert len(set(counts)) > 1  # else the filter below could not be told from keep-all
    limit = sorted(counts)[1]
    # a new threshold on the same pairs: re-filtered from the recorded metrics, not redrawn
    shard = next((tmp_path / "guided" / "len024").glob("*.safetensors"))
    stamp = shard.stat().st_mtime_ns
    strict, _ = pairs("guided", clash_guidance=1.0, guidance_window=[0.0, 1.0],
                      max_clashes=limit)
    assert shard.stat().st_mtime_ns == stamp and strict["clashes"] == counts
    assert strict["kept"] == [i for i, c in enumerate(counts) if c <= limit]
    assert 0 < len(strict["kept"]) < 4
    ss = guided["helix_strand"]
    assert len(ss) == 4 and all(0.0 <= v <= 1.0 for v in ss)
    assert all(0.0 <= v <= s for v, s in zip(guided["strand_valid"], guided["strand"]))
    picky, _ = pairs("guided", clash_guidance=1.0, guidance_window=[0.0, 1.0],
                     min_helix_strand=max(ss) + 0.01)
    assert picky["kept"] == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_protein_trains_on_gpu_and_the_trunk_matches_cpu(tmp_path):
    """Two engine steps on CUDA (the loss draws every random number on the device's
    generator), then the trained trunk gives the CPU's frames on CUDA."""
    import copy

    from flow3d.engine.checkpoint import load_model
    from flow3d.engine.train import train

    last = train(_recipe(tmp_path, accelerator="gpu", max_steps=2))
    model = load_model(last).model
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(2, 24)
    mask[1, 20:] = 0.0
    trans, quats = ProteinHead(_recipe(tmp_path)).flow.prior(mask, g)
    inputs = (trans, quats, torch.tensor([0.3, 0.8]), mask, torch.arange(24).expand(2, 24))
    ref = model(*inputs)
    out = copy.deepcopy(model).cuda()(*(x.cuda() for x in inputs))
    for key in ("trans", "quats"):
        torch.testing.assert_close(out[key].cpu(), ref[key], atol=2e-4, rtol=1e-3)
