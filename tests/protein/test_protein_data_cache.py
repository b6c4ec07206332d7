"""Filters, the safetensors cache and the training dataset / length batching."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flow3d.errors import ConfigError, DataError
from protein.constants import NM_TO_ANG
from protein.data import parse_structure, shared_protein_dir
from protein.data.cache import build_cache, load_cache
from protein.data.dataset import (
    LengthBatchSampler,
    ProteinDataset,
    collate_padded,
    length_batches,
)
from protein.data.filters import (
    FilterConfig,
    apply_filters,
    chain_stats,
    secondary_structure,
)
from protein.geometry import Rigid, backbone_from_frames

DATA = shared_protein_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="real data ../shared/data/proteins absent")


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    """Cache of the TS50 set plus a few garbage files (kept small: ~3 s)."""
    if DATA is None:
        pytest.skip("real data ../shared/data/proteins absent")
    extra = tmp_path_factory.mktemp("junk")
    (extra / "empty.pdb").write_text("")
    (extra / "words.cif").write_text("hello\n")
    out = tmp_path_factory.mktemp("cache") / "ts50"
    report = build_cache([DATA / "ts50_pydssp" / "pdb", extra], out, FilterConfig(),
                         progress=False)
    return out, report


@needs_data
def test_secondary_structure_matches_reference_dssp():
    """pydssp on our parsed backbones agrees with the reference DSSP files shipped with TS50."""
    agree = []
    for name in ("1ahsA", "1bvyF", "1dx5I", "1eteA"):
        chain = parse_structure(DATA / "ts50_pydssp" / "pdb" / f"{name}.pdb").chains[0]
        ours = secondary_structure(chain.coords)
        lines = (DATA / "ts50_pydssp" / "dssp" / f"{name}.dssp").read_text().splitlines()
        start = next(i for i, ln in enumerate(lines) if ln.startswith("  #  RESIDUE"))
        ref = "".join(ln[16] for ln in lines[start + 1:] if ln[13] != "!")
        ref3 = "".join("H" if s in "HGI" else "E" if s in "EB" else "-" for s in ref)
        assert len(ref3) == len(ours)
        agree.append(np.mean([a == b for a, b in zip(ours, ref3)]))
    assert np.mean(agree) > 0.85


@needs_data
def test_filters_reasons_and_dedup():
    chains = parse_structure(DATA / "ts50_pydssp" / "pdb" / "1eteA.pdb").chains * 2
    kept, reasons = apply_filters(chains, FilterConfig(min_len=10, rg_quantile=None))
    assert len(kept) == 1 and "duplicate" in reasons[0]
    kept, reasons = apply_filters(chains, FilterConfig(min_len=500, max_len=600))
    assert kept == [] and all("min_len" in r for r in reasons)
    kept, _ = apply_filters(chains, FilterConfig(dedup=False, max_coil_fraction=None,
                                                 rg_quantile=None))
    assert kept == [0, 1]
    kept, reasons = apply_filters(chains[:1], FilterConfig(max_coil_fraction=0.0))
    assert kept == [] and "coil fraction" in reasons[0]
    with pytest.raises(ConfigError):
        FilterConfig(min_len=100, max_len=50)
    with pytest.raises(ConfigError):
        FilterConfig(rg_quantile=1.5)


def test_rg_filter_drops_extended_chains():
    from protein.data.parse import Chain

    rng = np.random.default_rng(0)
    chains = []
    for k in range(30):
        L = 80
        scale = 1.0 if k < 29 else 4.0  # the last one is 4x less compact
        ca = rng.normal(size=(L, 3)) * 6.0 * scale
        coords = np.repeat(ca[:, None], 4, axis=1) + rng.normal(size=(L, 4, 3)) * 0.5
        chains.append(Chain("x.pdb", chr(65 + k % 26), "A" * (L - 1) + chr(65 + k % 26),
                            coords.astype(np.float32), np.arange(L), [""] * L, segment=k))
    stats = [chain_stats(c.coords) for c in chains]
    cfg = FilterConfig(max_coil_fraction=None, rg_quantile=0.96, dedup=False)
    kept, reasons = apply_filters(chains, cfg, stats)
    assert 29 not in kept and any("Rg" in r for r in reasons)
    assert len(kept) >= 27


@needs_data
def test_cache_build_and_load(small_cache):
    path, report = small_cache
    assert report.n_files == 52
    assert any("empty.pdb" in s for s in report.skipped)
    assert any("words.cif" in s for s in report.skipped)
    cache = load_cache(path)
    assert len(cache) == len(report.kept) > 30
    meta = json.loads((path / "meta.json").read_text())
    assert meta["filters"]["min_len"] == 60 and meta["report"]["n_kept"] == len(cache)
    for i in (0, len(cache) - 1):
        ch = cache[i]
        assert ch.coords.shape == (len(ch), 4, 3) and np.isfinite(ch.coords).all()
        assert 60 <= len(ch) <= 256 and ch.stats.coil_fraction <= 0.5
        src = [c for c in parse_structure(ch.source).chains if c.name == ch.name][0]
        assert np.allclose(ch.coords[:, :3], src.coords[:, :3])
    assert cache.lengths.sum() == cache.offsets[-1]


def test_cache_errors(tmp_path):
    with pytest.raises(DataError, match="not a protein cache"):
        load_cache(tmp_path)
    (tmp_path / "backbones.safetensors").write_bytes(b"garbage")
    (tmp_path / "meta.json").write_text("{}")
    with pytest.raises(DataError, match="corrupt|version"):
        load_cache(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        build_cache([tmp_path / "nope"], tmp_path / "c")
    with pytest.raises(DataError, match="no PDB/mmCIF"):
        build_cache([tmp_path], tmp_path / "c")


@needs_data
def test_dataset_items_are_centred_frames(small_cache):
    ds = ProteinDataset(load_cache(small_cache[0]))
    item = ds[3]
    n = item["length"]
    assert item["trans"].shape == (n, 3) and item["quats"].shape == (n, 4)
    assert item["res_idx"].tolist() == list(range(n)) and item["seq"].max() <= 20
    assert torch.allclose(item["trans"].mean(0), torch.zeros(3), atol=1e-5)
    assert item["trans"].abs().max() < 10.0  # nanometres: proteins here are < 10 nm across
    assert torch.allclose(item["quats"].norm(dim=-1), torch.ones(n), atol=1e-5)
    # frames -> atoms reproduces the stored CA exactly and N within ideal-geometry error
    rigid = Rigid(item["quats"], item["trans"]).scale_translation(NM_TO_ANG)
    atoms = backbone_from_frames(rigid, aatype=item["seq"])
    err = (atoms - item["atoms"] * NM_TO_ANG).norm(dim=-1)  # [L, 4] angstrom
    assert err[:, 1].max() < 1e-3 and err[:, 0].mean() < 0.1


@needs_data
def test_collate_padded(small_cache):
    ds = ProteinDataset(load_cache(small_cache[0]))
    items = [ds[i] for i in range(3)]
    batch = collate_padded(items)
    lmax = max(it["length"] for it in items)
    assert batch["trans"].shape == (3, lmax, 3) and batch["mask"].shape == (3, lmax)
    for k, it in enumerate(items):
        n = it["length"]
        assert batch["mask"][k].sum() == n
        assert torch.equal(batch["trans"][k, :n], it["trans"])
        assert (batch["quats"][k, n:] == torch.tensor([1.0, 0, 0, 0])).all()
    with pytest.raises(ValueError):
        collate_padded([])


def test_length_batches_budget_and_coverage():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 300, size=500)
    budget = 400**2
    batches = length_batches(lengths, np.random.default_rng(1), budget)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(500))
    for b in batches:
        assert sum(int(lengths[i]) ** 2 for i in b) <= budget
        assert np.ptp(lengths[b]) <= 60  # similar lengths together
    # a chain over the budget still gets a batch of its own
    assert length_batches([10, 1000], np.random.default_rng(0), 100**2) in ([[0], [1]],
                                                                          [[1], [0]])
    # different epochs, different batches; same seed, same batches
    s = LengthBatchSampler(lengths, budget, seed=3)
    e0, e1 = list(s), list(s)
    assert e0 != e1 and len(e0) == len(s)
    assert list(LengthBatchSampler(lengths, budget, seed=3)) == e0


def test_cached_names_are_unique():
    from protein.data.cache import _unique_names

    assert _unique_names(["1tib_A", "x_B", "1tib_A", "1tib_A"]) == [
        "1tib_A", "x_B", "1tib_A~2", "1tib_A~3"]
