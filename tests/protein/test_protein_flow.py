"""The protein frame flow: path endpoints, loss, sampler and SE(3) behaviour of velocities."""

from __future__ import annotations

import pytest
import torch

from flow3d.core import so3
from flow3d.errors import ConfigError
from protein.flow import Condition, FlowSettings, ProteinFlow, clash_floors, masked_centre
from protein.head import ProteinSampleConfig
from protein.model import IPATrunk, TrunkConfig
from protein.settings import SamplerSettings

TINY = TrunkConfig(
    num_blocks=2, node_dim=32, edge_dim=16, ipa_head_dim=8, num_heads=2,
    num_qk_points=4, num_v_points=4, seq_layers=1, seq_heads=2,
)  # fmt: skip


def _settings(**changes) -> SamplerSettings:
    """Sampler settings with the recipe defaults (ProteinSampleConfig) for the rest."""
    return SamplerSettings(**changes).resolved(ProteinSampleConfig())


class Oracle(torch.nn.Module):
    """Predicts the true clean frames whatever the input (the ideal denoiser)."""

    def __init__(self, trans_1, quats_1):
        super().__init__()
        self.trans_1, self.quats_1 = trans_1, quats_1
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, trans_t, quats_t, t, mask=None, res_idx=None, trans_sc=None):
        return {"trans": self.trans_1 + 0 * self.dummy, "quats": self.quats_1}


def _data(B=3, L=7, dtype=torch.float32, seed=100):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, L, dtype=dtype)
    trans = masked_centre(torch.randn(B, L, 3, generator=g, dtype=dtype), mask)
    quats = so3.random_quat((B, L), generator=g, dtype=dtype)
    return {"trans": trans, "quats": quats, "mask": mask, "res_idx": torch.arange(L).expand(B, L)}


@pytest.mark.parametrize("rot_path", ["quaternion", "matrix"])
def test_protein_flow_interpolation_endpoints_and_paths_agree(rot_path):
    flow = ProteinFlow(FlowSettings(rot_path=rot_path))
    d = _data(dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    tr0, q0 = flow.prior(d["mask"].float(), g)
    tr0, q0 = tr0.double(), q0.double()
    for t_val, (tr_ref, q_ref) in ((0.0, (tr0, q0)), (1.0, (d["trans"], d["quats"]))):
        t = torch.full((3,), t_val, dtype=torch.float64)
        tr_t, q_t, _ = flow.interpolate(tr0, q0, d["trans"], d["quats"], t)
        torch.testing.assert_close(tr_t, tr_ref)
        torch.testing.assert_close(so3.quat_to_rotmat(q_t), so3.quat_to_rotmat(q_ref))
    # the quaternion SLERP and the matrix geodesic are the same curve on SO(3)
    t = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    other = ProteinFlow(FlowSettings(rot_path="matrix" if rot_path == "quaternion" else rot_path))
    _, q_a, vf_a = flow.interpolate(tr0, q0, d["trans"], d["quats"], t)
    _, q_b, vf_b = other.interpolate(tr0, q0, d["trans"], d["quats"], t)
    torch.testing.assert_close(so3.quat_to_rotmat(q_a), so3.quat_to_rotmat(q_b))
    torch.testing.assert_close(vf_a, vf_b)
    # rot_vf = log(r_t^-1 r_1) = (1 - t) x body-frame velocity of the geodesic (finite diff.)
    h = 1e-6
    _, q_h, _ = flow.interpolate(tr0, q0, d["trans"], d["quats"], t + h)
    fd = so3.quat_log(so3.quat_mul(so3.quat_conj(q_a), q_h)) / h
    torch.testing.assert_close(fd * (1 - t)[:, None, None], vf_a, atol=1e-5, rtol=1e-4)


def test_protein_flow_prior_is_centred_and_uniform_rotations_are_unit():
    flow = ProteinFlow()
    mask = torch.ones(4, 30)
    mask[1, 20:] = 0
    tr, q = flow.prior(mask, torch.Generator().manual_seed(0))
    com = (tr * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert com.abs().max() < 1e-5 and (tr[1, 20:] == 0).all()
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(4, 30))


@pytest.mark.parametrize("lengths", [(60,), (100, 40), (150, 300)])
def test_length_prior_follows_the_compact_globule_law(lengths):
    """``trans_prior: length``: the noise cloud's root-mean-square Rg is 2.2 L^0.38 A at each
    chain's own length (padded rows counted by their mask), centred like the fixed prior."""
    from protein.data.filters import rg_scaling

    flow = ProteinFlow(FlowSettings(trans_prior="length"))
    n = 3000
    L = max(lengths)
    mask = torch.zeros(n * len(lengths), L)
    for k, length in enumerate(lengths):
        mask[k * n:(k + 1) * n, :length] = 1
    tr, _ = flow.prior(mask, torch.Generator().manual_seed(0))
    com = (tr * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert com.abs().max() < 1e-5 and (tr[mask == 0] == 0).all()
    for k, length in enumerate(lengths):
        x = tr[k * n:(k + 1) * n, :length] * 10.0  # angstrom
        rg = x.pow(2).sum(-1).mean(-1)  # centred: mean squared distance to the centre
        assert abs(rg.mean().sqrt().item() / float(rg_scaling(length)) - 1) < 0.01
    fixed = ProteinFlow(FlowSettings(trans_prior_std=0.5))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a, _ = fixed.prior(mask[:4], g1)
    b = masked_centre(torch.randn(4, L, 3, generator=g2) * 0.5, mask[:4])
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # the fixed prior is unchanged
    with pytest.raises(ValueError, match="trans_prior"):
        FlowSettings(trans_prior="chroma")


def test_sampling_noise_can_start_from_the_length_law_or_a_scaled_prior():
    """``sample.trans_noise`` / ``trans_noise_scale``: a model trained with the fixed prior
    samples from the length law's cloud (the same numbers as a length-prior model's) or from
    its own prior scaled; the rotations drawn are the same either way."""
    fixed = ProteinFlow(FlowSettings(trans_prior_std=1.0))
    length = ProteinFlow(FlowSettings(trans_prior="length"))
    mask = torch.ones(3, 80)

    def draw(flow, noise):
        return flow.prior(mask, torch.Generator().manual_seed(4), noise)

    law, q_law = draw(fixed, ("length", 1.5))
    own, q_own = draw(length, ("model", 1.5))
    torch.testing.assert_close(law, own, rtol=0, atol=0)
    base, q_base = draw(fixed, ("model", 1.0))
    torch.testing.assert_close(draw(fixed, ("model", 2.0))[0], 2 * base)
    assert torch.equal(q_law, q_base) and torch.equal(q_own, q_base)
    torch.testing.assert_close(draw(fixed, ("length", 1.0))[0] * 1.5, law)


def test_protein_flow_loss_zero_for_oracle_and_trains_tiny_model():
    d = _data()
    flow = ProteinFlow(FlowSettings(aux_weight=0.25, aux_t=0.0))
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0.1, 0.5, 0.95])
    out = flow.loss(Oracle(d["trans"], d["quats"]), d, t, g)
    assert out["loss"] < 1e-8 and set(out) >= {"trans_loss", "rot_loss", "aux_loss"}
    torch.manual_seed(0)
    model = IPATrunk(TINY)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    t = torch.tensor([0.3, 0.6, 0.9])

    def fixed_noise() -> float:  # the noise the model is trained on
        with torch.no_grad():
            return float(flow.loss(model, d, t, torch.Generator().manual_seed(7))["loss"])

    before = fixed_noise()
    for _ in range(40):
        loss = flow.loss(model, d, t, torch.Generator().manual_seed(7))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_noise()
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize("rot_path", ["quaternion", "matrix"])
@pytest.mark.parametrize("rot_schedule", ["exp", "linear"])
def test_protein_flow_sampler_with_oracle_reaches_the_data(rot_path, rot_schedule):
    d = _data(B=2, L=9)
    flow = ProteinFlow(FlowSettings(rot_path=rot_path))
    res = flow.sample(
        Oracle(d["trans"], d["quats"]), 2, 9, _settings(steps=20, rot_schedule=rot_schedule),
        generator=torch.Generator().manual_seed(0), trajectory=True,
    )  # fmt: skip
    assert res.nfe == 20 and len(res.trajectory) == 21
    torch.testing.assert_close(res.trans, d["trans"], atol=1e-4, rtol=0)
    R, R_ref = so3.quat_to_rotmat(res.quats), so3.quat_to_rotmat(d["quats"])
    assert (R - R_ref).abs().max() < 1e-3


def test_exponential_rotation_rate_is_capped_at_the_number_of_steps():
    """An Euler step of the exponential schedule moves ``rate * dt`` of the way to the
    predicted rotation: above 1 it overshoots. The sampler caps the rate at ``steps``, so with
    the oracle a 10-step solve at rate 40 ends on the data, as rate 10 does, while the
    uncapped field (through ``solve`` directly) ends far from it."""
    from flow3d.core.solvers import solve
    from protein.flow import quats_to_points

    d = _data(B=2, L=9, seed=3)
    flow = ProteinFlow(FlowSettings())
    oracle = Oracle(d["trans"], d["quats"])

    def gap(quats):  # rotation angle between the sampled and the true frames
        return so3.quat_angle(so3.quat_mul(so3.quat_inv(d["quats"]), so3.quat_normalize(quats)))

    for rate in (10.0, 40.0):
        res = flow.sample(oracle, 2, 9, _settings(steps=10, rot_rate=rate),
                          generator=torch.Generator().manual_seed(0))
        assert gap(res.quats).max() < 1e-3, rate
    trans_0, quats_0 = flow.prior(d["mask"][:, :9], torch.Generator().manual_seed(0))
    x0 = torch.cat([trans_0, quats_to_points(quats_0, "quaternion")], dim=-1)
    uncapped = _settings(steps=1000, rot_rate=40.0)  # the cap follows the settings' steps
    v = flow.velocity_fn(oracle, uncapped, Condition(mask=d["mask"], res_idx=d["res_idx"]))
    x1 = solve(v, x0, method="euler", steps=10, manifold=flow.manifold).x
    _, rot = flow.manifold.split_point(x1)
    assert gap(rot).mean() > 0.1


def test_protein_flow_velocity_transforms_under_se3_float64():
    torch.manual_seed(0)
    model = IPATrunk(TINY).double().eval()
    with torch.no_grad():  # non-trivial backbone updates
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.1)
    flow = ProteinFlow()
    d = _data(B=2, L=8, dtype=torch.float64)
    mask = d["mask"]
    g = torch.Generator().manual_seed(3)
    q_g = so3.random_quat((), generator=g, dtype=torch.float64)
    R_g = so3.quat_to_rotmat(q_g)
    shift = torch.randn(3, generator=g, dtype=torch.float64)
    t = torch.tensor(0.4, dtype=torch.float64)
    x = torch.cat([d["trans"], d["quats"]], -1)
    q2 = so3.quat_mul(q_g.expand_as(d["quats"]), d["quats"])
    x2 = torch.cat([d["trans"] @ R_g.T + shift, q2], -1)
    for schedule in ("exp", "linear"):
        settings, cond = _settings(rot_schedule=schedule), Condition(mask, d["res_idx"])
        v = flow.velocity_fn(model, settings, cond)(x, t)
        v2 = flow.velocity_fn(model, settings, cond)(x2, t)
        # translation velocities rotate with the frame; body-frame rotation velocities are invariant
        torch.testing.assert_close(v2[..., :3], v[..., :3] @ R_g.T, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(v2[..., 3:], v[..., 3:], atol=1e-9, rtol=1e-9)
        assert v[..., 3:].abs().max() > 1e-3


@pytest.mark.parametrize("t_val", [0.6, 0.95])
def test_protein_flow_aux_loss_carries_the_time_scale(t_val):
    """FrameFlow scales the backbone-atom and distance errors by 1 / (1 - min(t, 0.9)) like
    the vector fields; unscaled they are up to 100x too weak near t = 1, where CA-CA is set."""
    d = _data(B=2, L=9)
    g = torch.Generator().manual_seed(3)
    noisy = Oracle(d["trans"] + 0.05 * torch.randn(d["trans"].shape, generator=g), d["quats"])
    t = torch.full((2,), t_val)
    aux = {}
    for scaled in (False, True):
        flow = ProteinFlow(FlowSettings(aux_weight=1.0, aux_t=0.5, aux_time_scale=scaled))
        aux[scaled] = flow.loss(noisy, d, t, torch.Generator().manual_seed(0))["aux_loss"]
    assert aux[False] > 0
    scale = 1.0 / (1.0 - min(t_val, 0.9))
    torch.testing.assert_close(aux[True], aux[False] * scale**2, rtol=1e-5, atol=0)
    assert FlowSettings().aux_time_scale  # on by default, as in FrameFlow


def _ca_chain(L=12, seed=0):
    """A random-walk CA trace in nm with ideal 0.38 nm bonds, folded onto itself so that
    distant residues clash."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.nn.functional.normalize(torch.randn(L - 1, 3, generator=g, dtype=torch.float64),
                                          dim=-1) * 0.38
    x = torch.cat([torch.zeros(1, 3, dtype=torch.float64), steps.cumsum(0)])
    x[L // 2 :] += x[0] - x[L // 2] + 0.05  # the second half starts 0.09 nm from residue 0
    return x[None]


def test_clash_steering_removes_clashes_keeps_bonds_and_is_se3_equivariant():
    x = _ca_chain()
    mask = torch.ones(1, x.shape[1], dtype=x.dtype)
    idx = torch.arange(x.shape[1])
    far = (idx[:, None] - idx[None, :]).abs() >= 2

    def clashes(y):
        return int(((torch.cdist(y[0], y[0]) < 0.30) & far).sum() // 2)

    def bond_err(y):
        return float(((y[0, 1:] - y[0, :-1]).norm(dim=-1) - 0.38).abs().max())

    assert clashes(x) > 0
    y = ProteinFlow.steer_clashes(x, mask, 1.0, iters=200)
    assert clashes(y) == 0 and bond_err(y) < 0.02
    assert ProteinFlow.steer_clashes(x, mask, 0.0) is x  # off means untouched
    # a rigid motion of the input moves the output the same way (only distances enter)
    g = torch.Generator().manual_seed(1)
    R = so3.quat_to_rotmat(so3.random_quat((), generator=g, dtype=torch.float64))
    shift = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    y2 = ProteinFlow.steer_clashes(x @ R.T + shift, mask, 1.0, iters=200)
    torch.testing.assert_close(y2, y @ R.T + shift, atol=1e-9, rtol=0)
    # padded residues never move
    mask2 = mask.clone()
    mask2[0, -3:] = 0.0
    y3 = ProteinFlow.steer_clashes(x, mask2, 1.0, iters=20)
    torch.testing.assert_close(y3[0, -3:], x[0, -3:], atol=0, rtol=0)
    with pytest.raises(ValueError, match="strength"):
        ProteinFlow.steer_clashes(x, mask, 1.5)


def _helix_ca(n: int, rise_ang: float) -> torch.Tensor:
    """CA trace ``[1, n, 3]`` nm of a helix with 100 degrees a residue, the radius set so
    consecutive CAs are 3.80 A apart (rise 1.5 A: an ideal alpha helix)."""
    turn = torch.deg2rad(torch.tensor(100.0, dtype=torch.float64))
    radius = (3.80**2 - rise_ang**2) ** 0.5 / (2 * torch.sin(turn / 2))
    k = torch.arange(n, dtype=torch.float64)
    x = torch.stack([radius * torch.cos(k * turn), radius * torch.sin(k * turn), rise_ang * k], -1)
    return (x * 0.1)[None]


def _local_dist(x: torch.Tensor, k: int) -> torch.Tensor:
    return (x[0, k:] - x[0, :-k]).norm(dim=-1) * 10.0  # angstrom


def test_clash_floors_raise_only_the_local_pairs_asked_for():
    f = clash_floors(7, (5.0, 0.0, 4.6), min_dist=0.38)
    sep = (torch.arange(7)[:, None] - torch.arange(7)[None, :]).abs()
    torch.testing.assert_close(f, f.T)
    assert torch.allclose(f[sep == 2], torch.tensor(0.5)) and torch.allclose(f[sep == 4],
                                                                             torch.tensor(0.46))
    assert torch.allclose(f[(sep != 2) & (sep != 4)], torch.tensor(0.38))  # 3 apart: no floor
    # a floor under the clash distance does not lower it
    assert torch.allclose(clash_floors(5, (3.0, 3.0, 3.0), min_dist=0.38), torch.tensor(0.38))
    assert torch.equal(clash_floors(4, ()), clash_floors(4, (0.0, 0.0, 0.0)))


def test_local_floors_open_a_collapsed_helix_and_leave_an_ideal_one():
    """The sampled helices' defect: CA(i, i+3) folded to ~3.6 A (real chains: >= 4.5 A)."""
    mask = torch.ones(1, 16, dtype=torch.float64)
    floors = (5.0, 4.8, 5.0)
    ideal = _helix_ca(16, 1.5)
    assert _local_dist(ideal, 3).min() > 5.0 and _local_dist(ideal, 4).min() > 6.1
    # an ideal helix is under no floor: steering leaves it where it is
    y = ProteinFlow.steer_clashes(ideal, mask, 1.0, iters=30, local_min_dist=floors)
    torch.testing.assert_close(y, ideal, atol=1e-6, rtol=0)
    tight = _helix_ca(16, 0.9)
    assert _local_dist(tight, 3).max() < 3.7
    # plain clash guidance lifts them only to its 3.8 A clash distance ...
    kept = ProteinFlow.steer_clashes(tight, mask, 1.0, iters=200)
    assert _local_dist(kept, 3).max() < 3.9
    # ... the local floors open it, bonds kept
    opened = ProteinFlow.steer_clashes(tight, mask, 1.0, iters=200, local_min_dist=floors)
    for k, floor in zip((2, 3, 4), floors, strict=True):
        assert _local_dist(opened, k).min() > floor - 0.1, k
    assert ((_local_dist(opened, 1) - 3.8).abs() < 0.2).all()


def test_clash_guidance_with_an_oracle_of_clashing_frames_separates_them():
    """Sampling with a denoiser whose clean frames clash: guidance moves the output apart."""
    x = _ca_chain(L=10, seed=3).float()
    quats = so3.random_quat((1, 10), generator=torch.Generator().manual_seed(0))
    flow = ProteinFlow()
    oracle = Oracle(x, quats)
    plain = flow.sample(oracle, 1, 10, _settings(steps=10),
                        generator=torch.Generator().manual_seed(0))
    steered = flow.sample(oracle, 1, 10, _settings(steps=10, clash_guidance=1.0),
                          generator=torch.Generator().manual_seed(0))
    idx = torch.arange(10)
    far = (idx[:, None] - idx[None, :]).abs() >= 2

    def min_far(y):
        return float(torch.cdist(y[0], y[0])[far].min())

    assert min_far(plain.trans) < 0.2 and min_far(steered.trans) > min_far(plain.trans) + 0.05
    # the window bounds when it acts: the last Euler step (from t = 0.9) lands on the
    # prediction, so guidance that stops before it leaves the clashes in; one that only
    # covers it removes them
    early = flow.sample(oracle, 1, 10, _settings(steps=10, clash_guidance=1.0,
                                                 guidance_window=(0.0, 0.85)),
                        generator=torch.Generator().manual_seed(0))
    late = flow.sample(oracle, 1, 10, _settings(steps=10, clash_guidance=1.0,
                                                guidance_window=(0.85, 1.0)),
                       generator=torch.Generator().manual_seed(0))
    assert min_far(early.trans) < 0.2 < min_far(late.trans)
    with pytest.raises(ConfigError, match="guidance_window"):
        SamplerSettings(clash_guidance=1.0, guidance_window=(0.6, 0.4))
    with pytest.raises(ValueError, match="resolved"):  # the flow needs every setting
        flow.sample(oracle, 1, 10, SamplerSettings(steps=2))


def test_clash_loss_penalises_only_new_close_pairs_and_pushes_them_apart():
    x = _ca_chain(L=12).float()  # folded onto itself: distant residues 0.09 nm apart
    mask = torch.ones(1, 12)
    straight = torch.zeros(1, 12, 3)
    straight[0, :, 0] = torch.arange(12) * 0.38  # an extended chain: no close pairs
    assert ProteinFlow.clash_loss(straight, straight, mask).item() == 0.0
    # the same close pairs in the prediction and in the data are not penalised
    assert ProteinFlow.clash_loss(x, x, mask).item() == 0.0
    loss = ProteinFlow.clash_loss(x.clone().requires_grad_(True), straight, mask)
    assert loss.item() > 0
    y = x.clone().requires_grad_(True)
    ProteinFlow.clash_loss(y, straight, mask).sum().backward()
    with torch.no_grad():
        z = y - 0.5 * y.grad
    assert ProteinFlow.clash_loss(z, straight, mask).item() < loss.item()
    # padding never counts
    m2 = mask.clone()
    m2[0, 6:] = 0.0
    assert ProteinFlow.clash_loss(x, straight, m2).item() < loss.item()


def test_clash_weight_adds_a_logged_term_to_the_flow_loss():
    d = _data(B=2, L=9)
    model = IPATrunk(TINY)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0.7, 0.9])
    flow = ProteinFlow(FlowSettings(clash_weight=1.0))
    terms = flow.loss(model, d, t, g)
    assert "clash_loss" in terms and torch.isfinite(terms["loss"])
    assert "clash_loss" not in ProteinFlow().loss(model, d, t, torch.Generator().manual_seed(0))
