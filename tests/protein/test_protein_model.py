"""IPA trunk: sizes, masking and SE(3) equivariance (float64)."""

from __future__ import annotations

import pytest
import torch

from flow3d.core import so3
from protein.geometry import Rigid
from protein.model import InvariantPointAttention, IPATrunk, TrunkConfig

TINY = TrunkConfig(
    num_blocks=2, node_dim=32, edge_dim=16, ipa_head_dim=8, num_heads=2,
    num_qk_points=4, num_v_points=4, seq_layers=1, seq_heads=2,
)  # fmt: skip


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Replace the zero-initialised output layers so the test exercises every path."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.copy_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _inputs(B=2, L=12, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    trans = torch.randn(B, L, 3, generator=g, dtype=dtype)
    quats = so3.random_quat((B, L), generator=g, dtype=dtype)
    trans_sc = torch.randn(B, L, 3, generator=g, dtype=dtype)
    t = torch.rand(B, generator=g, dtype=dtype)
    return trans, quats, trans_sc, t


def test_protein_model_base_parameter_count_matches_reqflow():
    n = sum(p.numel() for p in IPATrunk(TrunkConfig()).parameters())
    assert abs(n - 16.7e6) / 16.7e6 < 0.02, n


def test_protein_model_shapes_and_identity_at_init():
    model = IPATrunk(TINY)
    trans, quats, _, t = _inputs(dtype=torch.float32)
    out = model(trans, quats, t)
    assert out["trans"].shape == trans.shape and out["quats"].shape == quats.shape
    # zero-initialised backbone updates: an untrained trunk returns its input frames
    torch.testing.assert_close(out["trans"], trans)
    torch.testing.assert_close(out["quats"], quats)
    # a 0-dim time broadcasts like a [B] time
    out0 = model(trans, quats, torch.tensor(0.3))
    out1 = model(trans, quats, torch.full((2,), 0.3))
    torch.testing.assert_close(out0["trans"], out1["trans"])


def test_protein_model_se3_equivariance_float64():
    torch.manual_seed(0)
    model = IPATrunk(TINY).double().eval()
    _randomise(model)
    trans, quats, trans_sc, t = _inputs()
    g = torch.Generator().manual_seed(1)
    q_g = so3.random_quat((), generator=g, dtype=torch.float64)  # a global rotation
    R_g = so3.quat_to_rotmat(q_g)
    shift = torch.randn(3, generator=g, dtype=torch.float64)
    out = model(trans, quats, t, trans_sc=trans_sc)
    trans2 = trans @ R_g.T + shift
    quats2 = so3.quat_mul(q_g.expand_as(quats), quats)
    sc2 = trans_sc @ R_g.T + shift
    out2 = model(trans2, quats2, t, trans_sc=sc2)
    assert (out["trans"] - trans).abs().max() > 1e-3  # the trunk really moves the frames
    torch.testing.assert_close(out2["trans"], out["trans"] @ R_g.T + shift, atol=1e-9, rtol=1e-9)
    expected_q = so3.quat_mul(q_g.expand_as(quats), out["quats"])
    torch.testing.assert_close(
        so3.quat_to_rotmat(out2["quats"]), so3.quat_to_rotmat(expected_q), atol=1e-9, rtol=1e-9
    )
    torch.testing.assert_close(out2["node"], out["node"], atol=1e-9, rtol=1e-9)


def test_protein_model_padding_does_not_change_real_residues():
    model = IPATrunk(TINY).double().eval()
    _randomise(model)
    trans, quats, _, t = _inputs(B=1, L=10)
    out = model(trans, quats, t)
    pad_t = torch.cat([trans, 5 * torch.randn(1, 4, 3, dtype=torch.float64)], 1)
    pad_q = torch.cat([quats, so3.random_quat((1, 4), dtype=torch.float64)], 1)
    mask = torch.cat([torch.ones(1, 10), torch.zeros(1, 4)], 1).double()
    res_idx = torch.arange(14)[None]
    out_p = model(pad_t, pad_q, t, mask, res_idx)
    torch.testing.assert_close(out_p["trans"][:, :10], out["trans"], atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("shape", [(1, 5), (3, 9)])
def test_protein_model_ipa_invariance_and_gradients(shape):
    B, L = shape
    ipa = InvariantPointAttention(16, 8, 8, 2, 3, 4).double()
    _randomise(ipa)
    g = torch.Generator().manual_seed(2)
    s = torch.randn(B, L, 16, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(B, L, L, 8, generator=g, dtype=torch.float64)
    q = so3.random_quat((B, L), generator=g, dtype=torch.float64)
    tr = torch.randn(B, L, 3, generator=g, dtype=torch.float64)
    mask = torch.ones(B, L, dtype=torch.float64)
    out = ipa(s, z, Rigid(q, tr), mask)
    q_g = so3.random_quat((), generator=g, dtype=torch.float64)
    moved = Rigid(q_g.expand(B, L, 4), torch.full((B, L, 3), 1.5, dtype=torch.float64))
    out2 = ipa(s, z, moved.compose(Rigid(q, tr)), mask)  # a global rotation and shift
    torch.testing.assert_close(out, out2, atol=1e-10, rtol=1e-10)
    out.square().sum().backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_protein_model_recipes_build_and_base_is_reqflow_size():
    from pathlib import Path

    from flow3d.engine.config import load_recipe
    from protein.head import ProteinHead

    root = Path(__file__).resolve().parents[2] / "recipes" / "protein"
    counts = {}
    for name in ("tiny", "base", "reflow"):
        recipe = load_recipe(root / f"{name}.yaml")
        model = ProteinHead(recipe).build_model()
        counts[name] = sum(p.numel() for p in model.parameters())
    assert abs(counts["base"] - 16.7e6) / 16.7e6 < 0.02
    assert counts["tiny"] == counts["reflow"] < 1e6  # reflow fine-tunes the tiny checkpoint
