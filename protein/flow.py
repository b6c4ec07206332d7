"""ReQFlow on the shared core: the SE(3)^L frame flow for protein backbones.

Each residue is a rigid frame ``(x, r)``: a CA translation ``x`` in nanometres and a rotation
``r``. The flow runs on the product manifold ``Product([Euclidean(3), SO(3)])`` with state
``[B, L, 7]`` (quaternions) or ``[B, L, 12]`` (row-major rotation matrices, FrameFlow's
matrix geodesic, selectable with ``rot_path="matrix"``):

- translations: the rectified (linear) path ``x_t = t x_1 + (1 - t) x_0`` from a centred
  Gaussian prior ``x_0 ~ N(0, I)`` (nm), zero centre of mass (Yim et al. 2023, FrameFlow);
- rotations: the geodesic ``r_t = r_0 exp(t log(r_0^-1 r_1))`` from the uniform prior on SO(3).
  With quaternions this is ReQFlow's exponential-format SLERP (Yue et al. 2025, Eq. 6).

The network predicts the clean frames ``(x_1_hat, r_1_hat)``; velocities follow from them:

    v_x = (x_1_hat - x_t) / (1 - t),
    v_r = log(r_t^-1 r_1_hat) / (1 - t)        (linear rotation schedule, training)
    v_r = rate * log(r_t^-1 r_1_hat)           (exponential schedule at sampling, rate 10;
                                                 kappa(t) = 1 - exp(-rate t)).

The loss compares the translation and rotation vector fields scaled by ``1 / (1 - min(t, 0.9))``
(FrameFlow Eq. 9), plus optional backbone-atom and pairwise-distance losses for ``t > aux_t``
whose errors carry the same scale (as in FrameFlow's code; without it they are up to 100x
weaker than the translation term exactly where local geometry, CA-CA, is decided).
"""

from __future__ import annotations

import dataclasses
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from flow3d.core import so3
from flow3d.core.manifolds import Euclidean, Product, SO3Matrix, SO3Quaternion
from flow3d.core.paths import AffinePath, GeodesicPath
from flow3d.core.solvers import solve
from protein.constants import (
    ANG_TO_NM,
    CA_CA_IDEAL_NM,
    CLASH_GUIDANCE_DISTANCE_NM,
    LOCAL_SEPARATIONS,
    NM_TO_ANG,
    RG_EXPONENT,
    RG_PREFACTOR_ANG,
)
from protein.geometry import Rigid, backbone_from_frames, nonadjacent_pairs, superimpose
from protein.settings import SamplerSettings
from protein.sheets import helix_turns, sheet_iters, sheet_targets, steer_sheets
from protein.topology import ADJ_UNKNOWN, UNKNOWN

TRANS_PRIORS = ("fixed", "length")
ROT_PATHS = ("quaternion", "matrix")


def clash_energy(x: Tensor, pair: Tensor,
                 min_dist: float | Tensor = CLASH_GUIDANCE_DISTANCE_NM) -> Tensor:
    """``sum_ij pair_ij relu(min_dist - |x_i - x_j|)^2`` per example ``[B]`` (each pair twice),
    with a distance that has a gradient at 0. ``min_dist``: one distance, or one per pair
    (``[L, L]``, :func:`clash_floors`)."""
    d = (x[:, :, None] - x[:, None, :]).pow(2).sum(-1).add(1e-9).sqrt()  # [B, L, L]
    return (torch.relu(min_dist - d) ** 2 * pair).sum((1, 2))


def clash_floors(length: int, local_min_dist: Sequence[float] = (), *,
                 min_dist: float = CLASH_GUIDANCE_DISTANCE_NM, like: Tensor | None = None
                 ) -> Tensor:
    """The closest each CA pair may come under clash guidance, ``[L, L]`` nm: ``min_dist``
    for every pair, raised for pairs ``k`` residues apart to ``local_min_dist[k - 2]``
    (angstrom; one value per :data:`~protein.constants.LOCAL_SEPARATIONS`, 0 = no floor
    of its own). Real chains keep these local pairs apart through their bond angles and
    torsions, which a CA-only steric term does not see."""
    kw = {} if like is None else {"dtype": like.dtype, "device": like.device}
    idx = torch.arange(length, device=kw.get("device"))
    sep = (idx[:, None] - idx[None, :]).abs()
    floors = torch.full((length, length), float(min_dist), **kw)
    for k, d_ang in zip(LOCAL_SEPARATIONS, local_min_dist, strict=False):
        if d_ang > 0:
            floors = torch.where(sep == k, floors.clamp_min(d_ang * ANG_TO_NM), floors)
    return floors


# ---- representation helpers ----------------------------------------------------------------
def rot_manifold(rot_path: str):
    """The rotation manifold of a path name: SO3Quaternion (ReQFlow) or SO3Matrix (FrameFlow)."""
    if rot_path == "quaternion":
        return SO3Quaternion()
    if rot_path == "matrix":
        return SO3Matrix()
    raise ValueError(f"rot_path must be one of {ROT_PATHS}, got {rot_path!r}")


def quats_to_points(quats: Tensor, rot_path: str) -> Tensor:
    """``[..., 4]`` quaternions -> manifold points (``[..., 4]`` or flattened ``[..., 9]``)."""
    if rot_path == "quaternion":
        return quats
    R = so3.quat_to_rotmat(quats)
    return R.reshape(*R.shape[:-2], 9)


def points_to_quats(points: Tensor, rot_path: str) -> Tensor:
    """Inverse of :func:`quats_to_points`."""
    if rot_path == "quaternion":
        return so3.quat_normalize(points)
    return so3.rotmat_to_quat(points.reshape(*points.shape[:-1], 3, 3))


def motif_mask(positions: Tensor, mask: Tensor) -> Tensor:
    """``[B, L]`` bool, true at the motif ``positions [B, M]``."""
    out = torch.zeros_like(mask, dtype=torch.bool)
    return out.scatter(1, positions.to(mask.device), True)


def _motif_positions(motif, positions: Tensor | None, batch: int) -> Tensor:
    """``[B, M]`` positions: those given, else the motif's own (fixed) ones for every design."""
    if positions is None:
        return motif.positions[None].expand(batch, -1)
    if positions.shape != (batch, len(motif)):
        raise ValueError(f"motif positions must be [{batch}, {len(motif)}], got "
                         f"{tuple(positions.shape)}")
    return positions


def masked_centre(x: Tensor, mask: Tensor) -> Tensor:
    """Subtract the masked centre of mass: ``x [B, L, 3]``, ``mask [B, L]``."""
    m = mask[..., None].to(x.dtype)
    com = (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)
    return (x - com) * m


@dataclass(frozen=True)
class Condition:
    """What a batch is conditioned on besides its noisy frames (all optional): the residues
    (``mask [B, L]``, default all present; ``res_idx [B, L]``, default ``0..L-1``), a motif
    to scaffold (:class:`protein.motif.Motif`) at ``motif_positions [B, M]`` (default its own
    positions), and fold plans ``ss [B, L]``, ``adj [B, L, L]`` (:mod:`protein.topology`)."""

    mask: Tensor | None = None
    res_idx: Tensor | None = None
    motif: Any = None
    motif_positions: Tensor | None = None
    ss: Tensor | None = None
    adj: Tensor | None = None


@dataclass(frozen=True)
class FlowSettings:
    """The protein flow's choices (the ``model.flow`` recipe section)."""

    rot_path: str = "quaternion"  # "quaternion" (ReQFlow) | "matrix" (FrameFlow)
    # translation noise: "fixed", a Gaussian of std trans_prior_std nm whatever the length
    # (ReQFlow, FrameFlow: its Rg is about 17 A at every length), or "length", a Gaussian
    # cloud whose expected Rg follows the compact-globule law 2.2 L^0.38 A at each chain's
    # length (times trans_prior_std), so that the prior already scales like the data
    # (Chroma's globular prior has the same aim)
    trans_prior: str = "fixed"
    trans_prior_std: float = 1.0  # nm ("fixed"), or a factor on the law's scale ("length")
    self_condition: bool = True
    self_condition_prob: float = 0.5
    trans_weight: float = 2.0
    rot_weight: float = 1.0
    aux_weight: float = 0.25  # backbone-atom + pairwise-distance losses
    aux_t: float = 0.5  # aux losses only for t > aux_t
    aux_time_scale: bool = True  # aux errors also scaled by 1 / (1 - min(t, 0.9)) (FrameFlow)
    clash_weight: float = 0.0  # steric term on predicted CAs (clash_loss), also for t > aux_t
    t_min: float = 0.01  # training times are drawn in [t_min, 1 - t_min]
    # fold conditioning (model.topology): per example, hide the whole plan with this
    # probability, else hide only the adjacency with ``adjacency_drop``
    topology_drop: float = 0.3
    adjacency_drop: float = 0.2

    def __post_init__(self):
        if self.rot_path not in ROT_PATHS:
            raise ValueError(f"rot_path must be one of {ROT_PATHS}, got {self.rot_path!r}")
        if self.trans_prior not in TRANS_PRIORS:
            raise ValueError(f"trans_prior must be one of {TRANS_PRIORS}, "
                             f"got {self.trans_prior!r}")


class ProteinFlow:
    """The frame flow: prior, interpolation, training loss and sampler (no parameters)."""

    def __init__(self, settings: FlowSettings | None = None):
        self.s = settings or FlowSettings()
        self.rot_manifold = rot_manifold(self.s.rot_path)
        self.manifold = Product([Euclidean(3), self.rot_manifold])
        self.trans_path = AffinePath()
        self.rot_geodesic = GeodesicPath(self.rot_manifold)

    # ---- prior and path -------------------------------------------------------------------
    def prior(
        self, mask: Tensor, generator: torch.Generator | None = None,
        noise: tuple[str, float] = ("model", 1.0),
    ) -> tuple[Tensor, Tensor]:
        """Centred Gaussian translations ``[B, L, 3]`` and uniform rotations ``[B, L, 4]``;
        ``noise``: the translations' std (:meth:`trans_std`; training always uses the model's
        own, sampling may start elsewhere)."""
        B, L = mask.shape
        trans = torch.randn(B, L, 3, generator=generator, device=mask.device)
        trans = masked_centre(trans * self.trans_std(mask, *noise), mask)
        quats = so3.random_quat((B, L), generator=generator, device=mask.device)
        return trans, quats

    def trans_std(self, mask: Tensor, kind: str = "model", scale: float = 1.0) -> Tensor | float:
        """Per-coordinate std (nm) of the translation noise, times ``scale``. ``kind``
        "model": the model's prior, a number (``trans_prior`` "fixed") or the law's below
        ("length"); "length": ``[B, 1, 1]``, a centred Gaussian cloud of n points with
        per-coordinate std s has E[Rg^2] = 3 s^2 (n - 1) / n, so s = Rg_law(n) / sqrt(3 (n -
        1) / n) with n the chain's present residues (the model's ``trans_prior_std`` applies
        to its own prior only)."""
        if kind == "model" and self.s.trans_prior == "fixed":
            return scale * self.s.trans_prior_std
        factor = scale * (self.s.trans_prior_std if kind == "model" else 1.0)
        n = mask.float().sum(1).clamp(min=2.0)
        rg_nm = RG_PREFACTOR_ANG * n.pow(RG_EXPONENT) * ANG_TO_NM
        return (factor * rg_nm / torch.sqrt(3.0 * (n - 1.0) / n))[:, None, None]

    def interpolate(self, trans_0, quats_0, trans_1, quats_1, t: Tensor):
        """Frames at time ``t [B]`` on the path, and the rotation target ``log(r_t^-1 r_1)``.

        Returns ``trans_t [B, L, 3]``, ``quats_t [B, L, 4]``, ``rot_vf [B, L, 3]``.
        """
        trans_t = self.trans_path.sample(trans_0, trans_1, t).x_t
        p0 = quats_to_points(quats_0, self.s.rot_path)
        p1 = quats_to_points(quats_1, self.s.rot_path)
        p_t = self.rot_geodesic.sample(p0, p1, t).x_t
        rot_vf = self.rot_manifold.logmap(p_t, p1)  # body-frame rotation vector
        return trans_t, points_to_quats(p_t, self.s.rot_path), rot_vf

    def rot_vf(self, quats_t: Tensor, quats_1: Tensor) -> Tensor:
        """``log(r_t^-1 r_1)`` through the chosen manifold ([..., 3])."""
        return self.rot_manifold.logmap(
            quats_to_points(quats_t, self.s.rot_path), quats_to_points(quats_1, self.s.rot_path)
        )

    # ---- training ---------------------------------------------------------------------------
    def loss(
        self, model: nn.Module, batch: dict, t: Tensor, generator: torch.Generator
    ) -> dict[str, Tensor]:
        """FrameFlow/ReQFlow loss on a padded batch (``trans [B, L, 3]`` nm, ``quats``,
        ``mask``, ``res_idx``); ``t [B]`` are the training times. With ``trans_0``/``quats_0``
        in the batch (reflow pairs) those are the source instead of fresh prior noise."""
        mask = batch["mask"].float()  # [B, L]
        trans_1 = masked_centre(batch["trans"].float(), mask)
        ident = torch.tensor([1.0, 0.0, 0.0, 0.0], device=mask.device)
        quats_1 = torch.where(mask[..., None] > 0, batch["quats"].float(), ident)
        res_idx = batch.get("res_idx")
        trans_0, quats_0 = self.prior(mask, generator)
        if "trans_0" in batch:  # reflow: the teacher's coupling replaces fresh noise
            trans_0 = masked_centre(batch["trans_0"].float(), mask)
            quats_0 = torch.where(mask[..., None] > 0, batch["quats_0"].float(), ident)
        t = t.clamp(self.s.t_min, 1.0 - self.s.t_min)
        trans_t, quats_t, rot_vf_gt = self.interpolate(trans_0, quats_0, trans_1, quats_1, t)

        cond = {}
        if "ss" in batch:
            cond = self.drop_topology(batch["ss"], batch["adj"], generator)
        trans_sc = torch.zeros_like(trans_t)
        use_sc = self.s.self_condition and (
            torch.rand((), generator=generator, device=generator.device).item()
            < self.s.self_condition_prob
        )
        if use_sc:
            with torch.no_grad():
                trans_sc = model(trans_t, quats_t, t, mask, res_idx, trans_sc,
                                 **cond)["trans"].detach()
        out = model(trans_t, quats_t, t, mask, res_idx, trans_sc, **cond)

        scale = 1.0 / (1.0 - torch.clamp(t, max=0.9))  # [B]
        n_res = mask.sum(1).clamp_min(1.0)  # [B]
        trans_err = (trans_1 - out["trans"]) * scale[:, None, None] * mask[..., None]
        trans_loss = (trans_err**2).sum((1, 2)) / (3 * n_res)  # [B]
        rot_err = (rot_vf_gt - self.rot_vf(quats_t, out["quats"])) * scale[:, None, None]
        rot_loss = ((rot_err * mask[..., None]) ** 2).sum((1, 2)) / (3 * n_res)
        total = self.s.trans_weight * trans_loss + self.s.rot_weight * rot_loss
        terms = {"trans_loss": trans_loss.mean(), "rot_loss": rot_loss.mean()}
        if self.s.aux_weight > 0:
            aux = self.aux_loss(out, trans_1, quats_1, mask)  # [B]
            if self.s.aux_time_scale:  # squared errors: the same 1/(1-t) on each error
                aux = aux * scale**2
            aux = aux * (t > self.s.aux_t).to(aux.dtype)
            total = total + self.s.aux_weight * aux
            terms["aux_loss"] = aux.mean()
        if self.s.clash_weight > 0:
            clash = self.clash_loss(out["trans"], trans_1, mask)
            clash = clash * (t > self.s.aux_t).to(clash.dtype)
            total = total + self.s.clash_weight * clash
            terms["clash_loss"] = clash.mean()
        terms["loss"] = total.mean()
        return terms

    def drop_topology(self, ss: Tensor, adj: Tensor, generator: torch.Generator) -> dict:
        """Condition dropout for fold plans ``ss [B, L]``, ``adj [B, L, L]``: per example the
        whole plan is hidden with ``topology_drop``, else the adjacency alone with
        ``adjacency_drop``, so one network samples with a full plan, with a secondary-structure
        string only, or with nothing."""
        u = torch.rand(ss.shape[0], 2, generator=generator, device=generator.device)
        u = u.to(ss.device)
        hide_all = u[:, 0] < self.s.topology_drop
        hide_adj = hide_all | (u[:, 1] < self.s.adjacency_drop)
        ss = torch.where(hide_all[:, None], torch.full_like(ss, UNKNOWN), ss)
        adj = torch.where(hide_adj[:, None, None], torch.full_like(adj, ADJ_UNKNOWN), adj)
        return {"ss": ss, "adj": adj}

    @staticmethod
    def clash_loss(trans: Tensor, trans_1: Tensor, mask: Tensor,
                   min_dist: float = CLASH_GUIDANCE_DISTANCE_NM) -> Tensor:
        """Steric penalty per example ``[B]`` (nm^2): ``relu(min_dist - d_ij)^2`` summed over
        predicted CA pairs ``|i - j| >= 2`` whose true distance is at least ``min_dist`` (the
        pairwise-distance aux loss only sees pairs closer than 0.6 nm in the data, so two
        segments that pass through each other in a prediction are otherwise not penalised),
        divided by the number of residues."""
        pair = nonadjacent_pairs(mask) * (torch.cdist(trans_1, trans_1) >= min_dist).to(mask)
        return clash_energy(trans, pair, min_dist) / mask.sum(1).clamp_min(1.0)

    @staticmethod
    def aux_loss(out: dict, trans_1: Tensor, quats_1: Tensor, mask: Tensor) -> Tensor:
        """Backbone-atom MSE plus pairwise-distance MSE (< 0.6 nm) of N, CA, C, O, in nm^2,
        per example ``[B]`` (FrameFlow Eq. 10-11)."""
        def atoms(quats: Tensor, trans: Tensor) -> Tensor:  # ideal geometry is in angstrom
            rigid = Rigid(quats, trans * NM_TO_ANG)
            return backbone_from_frames(rigid, mask=mask) * ANG_TO_NM  # [B, L, 4, 3] nm

        pred = atoms(out["quats"], out["trans"])
        gt = atoms(quats_1, trans_1)
        m = mask[..., None, None]
        n_res = mask.sum(1).clamp_min(1.0)
        bb = (((pred - gt) * m) ** 2).sum((1, 2, 3)) / (4 * 3 * n_res)
        B, L = mask.shape
        p, g = pred.reshape(B, L * 4, 3), gt.reshape(B, L * 4, 3)
        am = mask.repeat_interleave(4, dim=1)  # [B, 4L]
        dp, dg = torch.cdist(p, p), torch.cdist(g, g)
        pm = am[:, :, None] * am[:, None, :] * (dg < 0.6).to(dg.dtype)
        dist = (((dp - dg) * pm) ** 2).sum((1, 2)) / (pm.sum((1, 2)) - 4 * n_res).clamp_min(1.0)
        return bb + dist

    # ---- sampling -------------------------------------------------------------------------
    @staticmethod
    def steer_clashes(
        trans: Tensor, mask: Tensor, strength: float, *, iters: int = 10,
        min_dist: float = CLASH_GUIDANCE_DISTANCE_NM, bond: float = CA_CA_IDEAL_NM,
        frozen: Tensor | None = None, local_min_dist: Sequence[float] = (),
    ) -> Tensor:
        """Move predicted CA positions ``trans [B, L, 3]`` (nm) down the gradient of a
        physical prior: ``sum relu(min_dist - d_ij)^2`` over pairs ``|i - j| >= 2`` (steric
        clashes) plus ``sum (d_{i,i+1} - bond)^2`` (keep the chain's bonds). ``iters`` gradient
        steps; ``strength`` in (0, 1] is the fraction of the largest stable step, and each move
        is capped at 0.05 nm per residue. Gradients are taken at the prediction only
        (FlowChef-style gradient skipping, no backpropagation through the network).
        ``frozen [B, L]`` (bool): residues that do not move (a motif). ``local_min_dist``
        (angstrom, for pairs 2, 3, 4 apart; :func:`clash_floors`): the local chain's own
        floors, above ``min_dist``."""
        if strength <= 0:
            return trans
        if strength > 1:
            raise ValueError(f"clash guidance strength must be in [0, 1], got {strength}")
        pair = nonadjacent_pairs(mask)  # [B, L, L]
        link = mask[:, 1:] * mask[:, :-1]  # [B, L-1]
        movable = mask if frozen is None else mask * (~frozen).to(mask)
        x = trans.detach()
        floors = clash_floors(x.shape[1], local_min_dist, min_dist=min_dist, like=x)
        for _ in range(iters):
            with torch.enable_grad():
                x = x.requires_grad_(True)
                clash = clash_energy(x, pair, floors).sum() / 2  # each pair once
                b = (x[:, 1:] - x[:, :-1]).norm(dim=-1)  # [B, L-1]
                energy = clash + ((b - bond) ** 2 * link).sum()
                (grad,) = torch.autograd.grad(energy, x)
            # 0.2 nm^2 is the largest stable step of the bond term (each CA has two bonds)
            step = 0.2 * strength * grad * movable[..., None]
            step = step * (0.05 / step.norm(dim=-1, keepdim=True).clamp_min(0.05))
            x = (x - step).detach()
        return x

    def velocity_fn(
        self,
        model: nn.Module,
        settings: SamplerSettings,
        cond: Condition | None = None,
        *,
        self_condition: bool | None = None,
        min_one_minus_t: float = 1e-2,
    ) -> Callable[[Tensor, Tensor], Tensor]:
        """A ``velocity(x [B, L, 7|12], t) -> [B, L, 6]`` callable for the core solvers.

        ``settings`` (resolved :class:`protein.settings.SamplerSettings`): the rotation
        schedule and rate, clash guidance and the solver's step count. With the exponential
        schedule the rate is capped at ``settings.steps``: an Euler step moves each rotation
        ``rate * dt`` of the way to the predicted one, and above 1 it would overshoot it (at 10
        steps and rate 40, four times past the prediction); the translation step lands at most
        on its prediction in the same way (``dt / (1 - t)``).

        Self-conditioning: the translations predicted at the previous evaluation are fed back
        (held in the closure; it resets when time does not increase, i.e. at a new solve).
        ``cond.mask [B, L]`` must match the batch the solver passes. ``clash_guidance > 0``
        steers the predicted translations with :meth:`steer_clashes` while ``t`` is inside
        ``guidance_window = (start, end)`` (an inference-time physical prior, like
        RFdiffusion's potentials), with ``guidance_iters`` gradient steps per evaluation and
        the local chain's floors ``local_min_dist``. ``sheet_guidance > 0`` with a fold plan
        steers the predicted frames (before clash guidance) until the strands the plan pairs
        form DSSP bridges and its helices their i -> i+4 H-bonds, with beta and alpha
        phi/psi (:func:`protein.sheets.steer_sheets`, from :data:`protein.sheets.SHEET_START`
        on).

        ``cond.motif`` (:class:`protein.motif.Motif`): every prediction of the motif residues
        is replaced by the motif superimposed on it (:meth:`place_motif`), and clash guidance
        leaves them where they are, so the scaffold is predicted around a motif in the
        network's own pose. ``cond.motif_positions [B, M]``: where each design holds it
        (default: ``motif.positions`` for all). ``cond.ss [B, L]``, ``cond.adj [B, L, L]``: a
        fold plan (:mod:`protein.topology` codes) for a trunk built with ``topology=True``.
        """
        if not settings.is_resolved:
            raise ValueError(f"sampler settings must be resolved against a recipe: {settings}")
        cond = cond or Condition()
        rot_rate = float(settings.rot_rate)
        if settings.rot_schedule == "exp":
            rot_rate = min(rot_rate, float(settings.steps))
        g_start, g_end = settings.guidance_window
        strength, iters = settings.clash_guidance, settings.guidance_iters
        local = settings.local_min_dist
        use_sc = self.s.self_condition if self_condition is None else self_condition
        state: dict = {"trans_sc": None, "t": None}
        flow, motif, mask = self, cond.motif, cond.mask
        plan = {k: v for k, v in (("ss", cond.ss), ("adj", cond.adj)) if v is not None}
        sheets = settings.sheet_guidance
        pairs = turns = None  # residue pairs the plan wants bridged, helix H-bonds
        if sheets > 0 and cond.ss is not None and cond.adj is not None:
            pairs = sheet_targets(cond.ss, cond.adj, mask)
            turns = helix_turns(cond.ss, mask)

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            B = x.shape[0]
            trans_t, rot_t = flow.manifold.split_point(x)
            quats_t = points_to_quats(rot_t, flow.s.rot_path)
            t_b = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(B)
            t_now = float(t_b[0])
            sc = state["trans_sc"]
            # a new solve (time went back, or another batch): forget the old prediction
            if sc is None or sc.shape != trans_t.shape or t_now <= state["t"]:
                sc = None
            state["t"] = t_now
            sc = sc if use_sc else None
            m = mask if mask is not None else torch.ones_like(trans_t[..., 0])
            out = model(trans_t, quats_t, t_b, m, cond.res_idx, sc, **plan)
            pred, pred_q = out["trans"], out["quats"]
            pos = frozen = None
            if motif is not None:
                pos = _motif_positions(motif, cond.motif_positions, B)
                pred, pred_q = flow.place_motif(pred, pred_q, motif, pos)
                frozen = motif_mask(pos, m)
            iters_now = sheet_iters(t_now) if pairs is not None else 0
            if iters_now:  # the network sees the steered sheet (self-conditioning) next time
                pred, pred_q = steer_sheets(pred, pred_q, pairs, m, strength=sheets,
                                            iters=iters_now, frozen=frozen, helix=turns)
            state["trans_sc"] = pred
            if strength > 0 and g_start <= t_now < g_end:
                pred = flow.steer_clashes(pred, m, strength, iters=iters, frozen=frozen,
                                          local_min_dist=local)
            one_minus_t = (1.0 - t_b).clamp_min(min_one_minus_t)[:, None, None]
            v_trans = masked_centre((pred - trans_t) / one_minus_t, m)
            log = flow.rot_vf(quats_t, pred_q)  # [B, L, 3]
            v_rot = rot_rate * log if settings.rot_schedule == "exp" else log / one_minus_t
            return torch.cat([v_trans, v_rot * m[..., None]], dim=-1)

        return velocity

    @staticmethod
    def place_motif(trans: Tensor, quats: Tensor, motif,
                    positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Frames ``trans [B, L, 3]`` nm, ``quats [B, L, 4]`` with the motif residues
        (``positions [B, M]``, default ``motif.positions``) replaced by the motif frames
        (``motif.trans [M, 3]``, ``motif.quats [M, 4]``) under the rigid motion that best
        superimposes the motif's CAs on theirs (:func:`protein.geometry.superimpose`). The
        network is SE(3)-invariant, so the motif has no pose of its own: it takes the one the
        prediction gives it."""
        B = trans.shape[0]
        pos = _motif_positions(motif, positions, B).to(trans.device)  # [B, M]
        rows = torch.arange(B, device=trans.device)[:, None]
        m_trans = motif.trans.to(trans)[None].expand(B, -1, -1)  # [B, M, 3]
        rot, shift = superimpose(m_trans, trans[rows, pos])  # [B, 3, 3], [B, 3]
        trans, quats = trans.clone(), quats.clone()
        trans[rows, pos] = (rot[:, None] @ m_trans[..., None])[..., 0] + shift[:, None]
        q_rot = so3.rotmat_to_quat(rot)[:, None]  # [B, 1, 4]
        quats[rows, pos] = so3.quat_normalize(so3.quat_mul(q_rot, motif.quats.to(quats)[None]))
        return trans, quats

    @torch.no_grad()
    def sample(
        self,
        model: nn.Module,
        num: int,
        length: int,
        settings: SamplerSettings,
        *,
        cond: Condition | None = None,
        generator: torch.Generator | None = None,
        trajectory: bool = False,
        device: str | torch.device = "cpu",
        on_step: Callable[[], None] | None = None,
    ) -> SampleResult:
        """Draw ``num`` backbones of ``length`` residues in one batch (no padding) with the
        resolved sampler ``settings`` (see :meth:`velocity_fn`). ``cond``: a motif and its
        positions ``[num, M]`` and fold plans ``ss [num, L]``, ``adj [num, L, L]`` (the mask
        and residue index are the whole chain); at the end a motif is placed once more on the
        CAs the trajectory gave its residues. ``on_step()`` is called after every solver step
        (fixed-step methods; it does not change the result)."""
        mask = torch.ones(num, length, device=device)
        res_idx = torch.arange(length, device=device).expand(num, length)
        cond = dataclasses.replace(cond or Condition(), mask=mask, res_idx=res_idx)
        v = self.velocity_fn(model, settings, cond)  # checks that settings are resolved
        trans_0, quats_0 = self.prior(mask, generator,
                                      (settings.trans_noise, settings.trans_noise_scale))
        x0 = torch.cat([trans_0, quats_to_points(quats_0, self.s.rot_path)], dim=-1)
        hooks = []
        if on_step is not None and settings.method != "dopri5":  # dopri5 re-evaluates the
            def report(x: Tensor, t: Tensor, i: int) -> None:  # velocity after a hook
                on_step()  # and returns None: the state is left as it is

            hooks.append(report)
        start = _time.perf_counter()
        res = solve(
            v, x0, method=settings.method, steps=settings.steps, manifold=self.manifold,
            return_trajectory=trajectory, hooks=hooks,
        )  # fmt: skip
        elapsed = _time.perf_counter() - start
        trans, rot = self.manifold.split_point(res.x)
        if cond.motif is not None:  # the exponential schedule stops short of the last prediction
            trans, quats = self.place_motif(trans, points_to_quats(rot, self.s.rot_path),
                                            cond.motif, cond.motif_positions)
            rot = quats_to_points(quats, self.s.rot_path)
        traj = None
        if trajectory and res.trajectory is not None:
            traj = []
            for xk in res.trajectory:
                tk, rk = self.manifold.split_point(xk)
                traj.append((masked_centre(tk, mask), points_to_quats(rk, self.s.rot_path)))
        return SampleResult(
            trans=masked_centre(trans, mask),
            quats=points_to_quats(rot, self.s.rot_path),
            nfe=res.nfe,
            seconds=elapsed,
            trajectory=traj,
        )


@dataclass
class SampleResult:
    """Sampled frames of one batch: ``trans [B, L, 3]`` nm, ``quats [B, L, 4]``; optional
    per-step frames; number of network evaluations and wall time of the solve."""

    trans: Tensor
    quats: Tensor
    nfe: int
    seconds: float
    trajectory: list[tuple[Tensor, Tensor]] | None = field(default=None)
