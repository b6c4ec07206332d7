"""Invariant point attention (IPA), written for flow3d.

Jumper et al. 2021, "Highly accurate protein structure prediction with AlphaFold",
Supplement Alg. 22. Each residue carries a rigid frame ``T_i = (R_i, t_i)``. Queries, keys and
values are scalars *and* 3D points generated in the local frame and mapped to the global frame;
the attention logit between residues i and j is

    a_ij = w_L ( q_i.k_j / sqrt(c) + b_ij - (gamma_h w_C / 2) sum_p |T_i q_ip - T_j k_jp|^2 ),

with ``w_L = sqrt(1/3)``, ``w_C = sqrt(2 / (9 P_qk))`` and ``b_ij`` a linear map of the pair
features. Outputs are the attended scalars, the attended value points mapped *back* to the
local frame of i (plus their norms) and the attended pair features. Because only distances and
local-frame coordinates enter, the output is invariant to a global rotation/translation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from protein.geometry import Rigid


class InvariantPointAttention(nn.Module):
    """IPA (AlphaFold2 Alg. 22) over node features ``s [B, L, c_s]`` and pair features
    ``z [B, L, L, c_z]`` with residue frames ``rigid [B, L]`` (:class:`protein.geometry.Rigid`).
    """

    def __init__(
        self,
        c_s: int,
        c_z: int,
        c_hidden: int,
        num_heads: int,
        num_qk_points: int,
        num_v_points: int,
        inf: float = 1e5,
        eps: float = 1e-8,
    ):
        super().__init__()
        self.c_hidden, self.num_heads = c_hidden, num_heads
        self.num_qk_points, self.num_v_points = num_qk_points, num_v_points
        self.inf, self.eps = inf, eps
        H = num_heads
        self.linear_q = nn.Linear(c_s, H * c_hidden)
        self.linear_kv = nn.Linear(c_s, 2 * H * c_hidden)
        self.linear_q_points = nn.Linear(c_s, H * num_qk_points * 3)
        self.linear_kv_points = nn.Linear(c_s, H * (num_qk_points + num_v_points) * 3)
        self.linear_b = nn.Linear(c_z, H)
        self.down_z = nn.Linear(c_z, c_z // 4)
        # softplus(head_weights) = gamma_h, initialised so gamma_h = 1.
        self.head_weights = nn.Parameter(torch.full((H,), math.log(math.e - 1.0)))
        concat = H * (c_hidden + num_v_points * 4 + c_z // 4)
        self.linear_out = nn.Linear(concat, c_s)
        nn.init.zeros_(self.linear_out.weight)
        nn.init.zeros_(self.linear_out.bias)

    def forward(self, s: Tensor, z: Tensor, rigid: Rigid, mask: Tensor) -> Tensor:
        B, L, _ = s.shape
        points = rigid[..., None]  # [B, L, 1]: the same frame for every point of a residue
        H, C, Pq, Pv = self.num_heads, self.c_hidden, self.num_qk_points, self.num_v_points
        q = self.linear_q(s).view(B, L, H, C)
        k, v = self.linear_kv(s).view(B, L, H, 2 * C).split(C, dim=-1)  # [B, L, H, C] each

        q_pts = self.linear_q_points(s).view(B, L, H * Pq, 3)
        q_pts = points.apply(q_pts).view(B, L, H, Pq, 3)  # global frame
        kv_pts = self.linear_kv_points(s).view(B, L, H * (Pq + Pv), 3)
        kv_pts = points.apply(kv_pts).view(B, L, H, Pq + Pv, 3)
        k_pts, v_pts = kv_pts.split([Pq, Pv], dim=-2)  # [B, L, H, P, 3]

        # Scalar term: [B, H, L, L]
        logits = torch.einsum("bihc,bjhc->bhij", q, k) / math.sqrt(C)
        logits = logits + self.linear_b(z).permute(0, 3, 1, 2)
        # Point term: sum_p |q_ip - k_jp|^2 via |q|^2 + |k|^2 - 2 q.k (no [B,L,L,H,P,3] tensor).
        qf = q_pts.reshape(B, L, H, Pq * 3)
        kf = k_pts.reshape(B, L, H, Pq * 3)
        d2 = (
            (qf**2).sum(-1).permute(0, 2, 1)[:, :, :, None]
            + (kf**2).sum(-1).permute(0, 2, 1)[:, :, None, :]
            - 2.0 * torch.einsum("bihp,bjhp->bhij", qf, kf)
        )  # [B, H, L, L]
        gamma = nn.functional.softplus(self.head_weights).view(1, H, 1, 1)
        w_c = math.sqrt(2.0 / (9.0 * Pq))
        logits = logits - 0.5 * gamma * w_c * d2
        logits = logits * math.sqrt(1.0 / 3.0)
        pair_mask = mask[:, None, :, None] * mask[:, None, None, :]  # [B, 1, L, L]
        logits = logits - self.inf * (1.0 - pair_mask.to(logits.dtype))
        attn = torch.softmax(logits, dim=-1)  # [B, H, L, L]

        o = torch.einsum("bhij,bjhc->bihc", attn, v).reshape(B, L, H * C)
        o_pts = torch.einsum("bhij,bjhpx->bihpx", attn, v_pts)  # [B, L, H, Pv, 3] global
        o_pts = points.invert_apply(o_pts.reshape(B, L, H * Pv, 3))
        o_norm = torch.sqrt((o_pts**2).sum(-1) + self.eps)  # [B, L, H*Pv]
        o_pair = torch.einsum("bhij,bijc->bihc", attn, self.down_z(z)).reshape(B, L, -1)
        feats = torch.cat([o, o_pts.reshape(B, L, H * Pv * 3), o_norm, o_pair], dim=-1)
        return self.linear_out(feats) * mask[..., None]
