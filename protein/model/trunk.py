"""The ReQFlow / FrameFlow frame denoiser: an IPA trunk that predicts clean frames.

Input: noisy frames ``(trans_t [B, L, 3] nm, quats_t [B, L, 4] wxyz)`` at flow time ``t``, a
residue mask and (self-conditioning) the translations predicted on a previous pass. Output:
the predicted clean frames ``(trans_1, quats_1)``. Each block is

    s <- LN(s + IPA(s, z, T));  s <- s + Transformer(s);  s <- Transition(s)
    T <- T o BackboneUpdate(s);  z <- EdgeTransition(s, z)   (not after the last block)

(Yim et al. 2023 "FrameFlow", Yue et al. 2025 "ReQFlow"; IPA and the backbone update are
AlphaFold2 Alg. 22 and 23). The flow velocity is derived from the prediction in
:mod:`protein.flow`, so the network itself never divides by ``1 - t``.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from flow3d.core.so3 import quat_normalize
from protein.geometry import Rigid
from protein.model.embed import EdgeEmbedder, NodeEmbedder, _add_ij
from protein.model.ipa import InvariantPointAttention

PAIR_PRECISIONS = ("auto", "fp32", "bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_amx_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in AMX tiles (Linux ``amx_bf16`` flag),
    where bfloat16 pair products are measured 2-3x faster than float32 (docs/benchmarks.md,
    protein_speed; the products go through oneDNN, so a torch built without it counts as
    False too). Unknown (another OS, no /proc): False."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return "amx_bf16" in line.split(":", 1)[-1].split()
    return False


def pair_dtype(precision: str, device: torch.device, dtype: torch.dtype) -> torch.dtype | None:
    """The dtype of the pair products for a model running in ``dtype`` on ``device``: None
    (the model's own dtype) or bfloat16. ``"auto"`` is bfloat16 only where it was measured
    faster (a float32 model on a CPU with AMX-BF16) and float32 elsewhere; non-float32
    models (float64 in tests) always use their own dtype."""
    if dtype != torch.float32 or precision == "fp32":
        return None
    if precision == "bf16" or (device.type == "cpu" and cpu_has_amx_bf16()):
        return torch.bfloat16
    return None


@dataclass(frozen=True)
class TrunkConfig:
    """Sizes of the IPA trunk. ``base`` (ReQFlow): 6 blocks, node 256, edge 128, 8 heads,
    8 query/key points, 12 value points, a 2-layer sequence transformer."""

    num_blocks: int = 6
    node_dim: int = 256
    edge_dim: int = 128
    ipa_head_dim: int = 128
    num_heads: int = 8
    num_qk_points: int = 8
    num_v_points: int = 12
    seq_layers: int = 2
    seq_heads: int = 4
    max_relpos: int = 32
    dropout: float = 0.0
    topology: bool = False  # fold conditioning inputs (protein.topology): ss [B, L], adj [B, L, L]
    # the dtype of the matrix products over all L^2 residue pairs (the edge embedder's and the
    # edge transitions' MLPs), in sampling and in training: "fp32" (the model's own dtype,
    # exact), "bf16" (bfloat16 products, float32 weights and everything else: 2-3x faster on
    # CPUs with AMX; designs change within a stated tolerance, see
    # tests/protein/test_protein_speedups.py), or "auto": bf16 on a CPU with AMX-BF16, fp32
    # elsewhere (see pair_dtype). float64 models always use their own dtype.
    pair_precision: str = "auto"

    def __post_init__(self):
        if self.pair_precision not in PAIR_PRECISIONS:
            raise ValueError(f"pair_precision must be one of {PAIR_PRECISIONS}, "
                             f"got {self.pair_precision!r}")


class NodeTransition(nn.Module):
    """Residual 3-layer MLP with LayerNorm (AlphaFold2 Alg. 23 line 9)."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, s: Tensor) -> Tensor:
        return self.norm(s + self.mlp(s))


class EdgeTransition(nn.Module):
    """Update pair features from the node features of both ends: ``z_ij <- LN(z_ij +
    MLP([z_ij, p_i, p_j]))``."""

    def __init__(self, node_dim: int, edge_dim: int):
        super().__init__()
        bias = node_dim // 2
        self.node_proj = nn.Linear(node_dim, bias)
        hidden = edge_dim + 2 * bias
        self.mlp = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.out = nn.Linear(hidden, edge_dim)
        self.norm = nn.LayerNorm(edge_dim)

    def forward(self, s: Tensor, z: Tensor, mask: Tensor, *, fast: bool = False,
                pair_dtype: torch.dtype | None = None, full_mask: bool = False) -> Tensor:
        if fast:
            return self._forward_fast(s, z, mask, pair_dtype, full_mask)
        B, L, _ = s.shape
        p = self.node_proj(s)
        feats = torch.cat(
            [z, p[:, :, None, :].expand(B, L, L, -1), p[:, None, :, :].expand(B, L, L, -1)], -1
        )
        z = self.norm(z + self.out(self.mlp(feats)))
        return z * (mask[:, :, None] * mask[:, None, :])[..., None]

    def _forward_fast(self, s, z, mask, pair_dtype, full_mask):
        """The same function without the ``[B, L, L, edge + 2 * bias]`` concatenation: the
        first Linear on ``[z_ij, p_i, p_j]`` is ``W_z z_ij + (W_i p_i + b) + W_j p_j`` (its
        weight sliced at run time), the node parts computed per residue and broadcast.
        ``pair_dtype`` (bfloat16): the pair products in that dtype (an approximation)."""
        lin0, lin1 = self.mlp[0], self.mlp[2]
        E, nb = z.shape[-1], self.node_proj.out_features
        W = lin0.weight
        p = self.node_proj(s)  # [B, L, nb]
        a_i = nn.functional.linear(p, W[:, E:E + nb], lin0.bias)  # [B, L, hidden]
        a_j = nn.functional.linear(p, W[:, E + nb:])
        pd = pair_dtype or z.dtype
        # a contiguous copy of the weight slice: MKL's product with the strided one is slower
        h = nn.functional.linear(z.to(pd), W[:, :E].to(pd).contiguous())  # [B, L, L, hidden]
        # out of place under autograd: the in-place ReLU's backward costs extra copies
        relu = torch.relu if torch.is_grad_enabled() else torch.relu_
        h = relu(_add_ij(h, a_i, a_j))
        h = relu(nn.functional.linear(h, lin1.weight.to(pd), lin1.bias.to(pd)))
        out = nn.functional.linear(h, self.out.weight.to(pd), self.out.bias.to(pd))
        z = self.norm(z + out.to(z.dtype))
        if full_mask:
            return z
        return z * (mask[:, :, None] * mask[:, None, :])[..., None]


class BackboneUpdate(nn.Module):
    """AlphaFold2 Alg. 23: ``(b, c, d, t) = Linear(s)``; the quaternion update is
    ``normalise(1, b, c, d)`` and the translation update is in the local frame.
    Zero-initialised, so an untrained trunk returns its input frames."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 6)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, s: Tensor, rigid: Rigid, mask: Tensor) -> Rigid:
        upd = self.linear(s) * mask[..., None]  # [B, L, 6]
        q_upd = torch.cat([torch.ones_like(upd[..., :1]), upd[..., :3]], dim=-1)
        return rigid.compose(Rigid(quat_normalize(q_upd), upd[..., 3:]))


class IPATrunk(nn.Module):
    """Predicts clean frames from noisy frames (see the module docstring)."""

    def __init__(self, cfg: TrunkConfig):
        super().__init__()
        self.cfg = cfg
        # True: the factorised pair updates (same parameters, the same function up to float
        # rounding); False: the plain reference path, kept as the slow twin for tests.
        self.fast = True
        self.node_embed = NodeEmbedder(cfg.node_dim, topology=cfg.topology)
        self.edge_embed = EdgeEmbedder(cfg.node_dim, cfg.edge_dim, max_relpos=cfg.max_relpos,
                                       topology=cfg.topology)
        self.blocks = nn.ModuleList()
        for i in range(cfg.num_blocks):
            layer = nn.TransformerEncoderLayer(
                d_model=cfg.node_dim,
                nhead=cfg.seq_heads,
                dim_feedforward=cfg.node_dim,
                dropout=cfg.dropout,
                batch_first=True,
                norm_first=False,
            )
            block = nn.ModuleDict(
                {
                    "ipa": InvariantPointAttention(
                        cfg.node_dim,
                        cfg.edge_dim,
                        cfg.ipa_head_dim,
                        cfg.num_heads,
                        cfg.num_qk_points,
                        cfg.num_v_points,
                    ),
                    "ipa_norm": nn.LayerNorm(cfg.node_dim),
                    "seq": nn.TransformerEncoder(
                        layer, cfg.seq_layers, enable_nested_tensor=False
                    ),
                    "seq_out": nn.Linear(cfg.node_dim, cfg.node_dim),
                    "transition": NodeTransition(cfg.node_dim),
                    "bb_update": BackboneUpdate(cfg.node_dim),
                }
            )
            if i < cfg.num_blocks - 1:
                block["edge_transition"] = EdgeTransition(cfg.node_dim, cfg.edge_dim)
            self.blocks.append(block)

    def set_pair_precision(self, precision: str) -> IPATrunk:
        """Switch the pair products' precision ("auto" | "fp32" | "bf16"; see
        :class:`TrunkConfig`); the parameters are untouched. Returns the trunk."""
        self.cfg = dataclasses.replace(self.cfg, pair_precision=precision)
        return self

    def forward(
        self,
        trans_t: Tensor,  # [B, L, 3] nm
        quats_t: Tensor,  # [B, L, 4]
        t: Tensor,  # [B] or 0-dim
        mask: Tensor | None = None,  # [B, L]
        res_idx: Tensor | None = None,  # [B, L]
        trans_sc: Tensor | None = None,  # [B, L, 3] self-conditioning
        ss: Tensor | None = None,  # [B, L] fold plan codes (cfg.topology; None: unknown)
        adj: Tensor | None = None,  # [B, L, L] block adjacency codes
    ) -> dict[str, Tensor]:
        B, L, _ = trans_t.shape
        dtype = trans_t.dtype
        if mask is None:
            mask = torch.ones(B, L, device=trans_t.device, dtype=dtype)
        mask = mask.to(dtype)
        if res_idx is None:
            res_idx = torch.arange(L, device=trans_t.device).expand(B, L)
        if trans_sc is None:
            trans_sc = torch.zeros_like(trans_t)
        t = torch.as_tensor(t, device=trans_t.device, dtype=dtype)
        t = t.expand(B) if t.dim() == 0 else t.reshape(B)

        if not self.cfg.topology and (ss is not None or adj is not None):
            raise ValueError("this trunk was built without topology inputs (topology=False)")
        s = self.node_embed(res_idx, t, mask, ss)  # [B, L, C]
        fast = {}
        if self.fast:
            pd = pair_dtype(self.cfg.pair_precision, trans_t.device, dtype)
            fast = {"fast": True, "pair_dtype": pd, "full_mask": bool((mask == 1).all())}
        z = self.edge_embed(s, trans_t, trans_sc, res_idx, mask, adj, **fast)  # [B, L, L, E]
        rigid = Rigid(quats_t, trans_t)
        pad = mask < 0.5
        for block in self.blocks:
            s = block["ipa_norm"](s + block["ipa"](s, z, rigid, mask))
            seq = block["seq"](s, src_key_padding_mask=pad)
            s = block["transition"](s + block["seq_out"](seq)) * mask[..., None]
            rigid = block["bb_update"](s, rigid, mask)
            if "edge_transition" in block:
                z = block["edge_transition"](s, z, mask, **fast)
        return {"trans": rigid.trans, "quats": rigid.rots, "node": s}
