"""Node and edge feature embedders for the IPA trunk (FrameFlow / ReQFlow style).

Node features: sinusoidal embeddings of the residue index and of the flow time ``t``.
Edge features: relative-position one-hot (clipped), the pairwise CA distogram of the noisy
frames and of the self-conditioning prediction, and the outer concatenation of node features.
All features depend only on distances and indices, hence are SE(3)-invariant.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from protein.topology import ADJ_UNKNOWN, UNKNOWN


def sinusoidal_embedding(x: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer sinusoidal embedding of a real-valued tensor ``x [...]`` -> ``[..., dim]``.

    ``emb_k = sin(x / P^{2k/dim})`` and ``cos(...)`` (Vaswani et al. 2017, Sec. 3.5).
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half
    )  # [half]
    args = x.float()[..., None] * freqs  # [..., half]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb.to(x.dtype if x.is_floating_point() else torch.float32)


def rbf_distogram(pos: Tensor, num_bins: int, max_dist: float, normal: bool = False) -> Tensor:
    """Soft distogram of pairwise distances: Gaussian RBFs on ``num_bins`` centres in
    ``[0, max_dist]``. ``pos [B, L, 3]`` -> ``[B, L, L, num_bins]``.

    ``normal``: exponents are capped at 80, so no value is a subnormal float (below 1.2e-38
    in float32; ``exp(-80)`` is 1.8e-34): matrix products over subnormal inputs run many times
    slower on x86 CPUs, and the change is far below float32 rounding of any sum it enters."""
    d = torch.linalg.vector_norm(pos[:, :, None, :] - pos[:, None, :, :], dim=-1)  # [B, L, L]
    centres = torch.linspace(0.0, max_dist, num_bins, device=pos.device, dtype=pos.dtype)
    width = max_dist / (num_bins - 1)
    arg = ((d[..., None] - centres) / width) ** 2
    if normal:
        arg = arg.clamp_(max=80.0) if not torch.is_grad_enabled() else arg.clamp(max=80.0)
    return torch.exp(-arg)


class NodeEmbedder(nn.Module):
    """``(res_idx [B, L], t [B], mask [B, L]) -> node features [B, L, node_dim]``.

    ``topology=True`` adds a learned embedding of a per-residue secondary-structure plan
    (``ss [B, L]``: :mod:`protein.topology` codes, 3 = unknown), zero-initialised so that a
    pretrained trunk starts out unchanged when the branch is added for fine-tuning.
    """

    def __init__(self, node_dim: int, index_dim: int = 128, time_dim: int = 128,
                 topology: bool = False):
        super().__init__()
        self.index_dim, self.time_dim = index_dim, time_dim
        self.proj = nn.Linear(index_dim + time_dim + 1, node_dim)
        self.ss_embed = _zero_embedding(UNKNOWN + 1, node_dim) if topology else None

    def forward(self, res_idx: Tensor, t: Tensor, mask: Tensor, ss: Tensor | None = None
                ) -> Tensor:
        B, L = mask.shape
        idx = sinusoidal_embedding(res_idx.float(), self.index_dim)  # [B, L, Di]
        temb = sinusoidal_embedding(t.float() * 1000.0, self.time_dim)  # [B, Dt]
        temb = temb[:, None, :].expand(B, L, -1)
        feats = torch.cat([idx, temb.to(idx.dtype), mask[..., None].to(idx.dtype)], dim=-1)
        out = self.proj(feats.to(self.proj.weight.dtype))
        if self.ss_embed is not None:
            out = out + self.ss_embed(_codes(ss, (B, L), UNKNOWN, mask.device))
        return out * mask[..., None]


def _zero_embedding(num: int, dim: int) -> nn.Embedding:
    emb = nn.Embedding(num, dim)
    nn.init.zeros_(emb.weight)
    return emb


def _codes(codes: Tensor | None, shape: tuple, unknown: int, device) -> Tensor:
    """Condition codes, or all ``unknown`` when there is no condition."""
    if codes is None:
        return torch.full(shape, unknown, dtype=torch.long, device=device)
    if tuple(codes.shape) != tuple(shape):
        raise ValueError(f"topology codes must be {list(shape)}, got {list(codes.shape)}")
    return codes.long()


class EdgeEmbedder(nn.Module):
    """``(node [B, L, C], trans [B, L, 3], trans_sc [B, L, 3], res_idx, mask) -> [B, L, L, E]``.

    Distances are in nanometres; the distogram spans 0-2 nm (0-20 A) like FrameFlow.
    ``topology=True`` adds a zero-initialised embedding of the block adjacency
    (``adj [B, L, L]``: 0 apart, 1 packed, 2 unknown; :mod:`protein.topology`).
    """

    def __init__(
        self,
        node_dim: int,
        edge_dim: int,
        max_relpos: int = 32,
        num_bins: int = 22,
        max_dist: float = 2.0,
        topology: bool = False,
    ):
        super().__init__()
        self.max_relpos, self.num_bins, self.max_dist = max_relpos, num_bins, max_dist
        feat_in = edge_dim // 2
        self.node_proj = nn.Linear(node_dim, feat_in)
        n_rel = 2 * max_relpos + 1
        in_dim = 2 * feat_in + n_rel + 2 * num_bins
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, edge_dim),
            nn.ReLU(),
            nn.Linear(edge_dim, edge_dim),
            nn.ReLU(),
            nn.Linear(edge_dim, edge_dim),
            nn.LayerNorm(edge_dim),
        )
        self.adj_embed = _zero_embedding(ADJ_UNKNOWN + 1, edge_dim) if topology else None
        self._rel_cache = None  # (key, res_idx, W_rel[:, rel] + b) of the last call, inference

    def forward(
        self, node: Tensor, trans: Tensor, trans_sc: Tensor, res_idx: Tensor, mask: Tensor,
        adj: Tensor | None = None, *, fast: bool = False, pair_dtype: torch.dtype | None = None,
        full_mask: bool = False,
    ) -> Tensor:
        """``fast``: the same function computed without the ``[B, L, L, in_dim]`` input
        (:meth:`_forward_fast`); ``pair_dtype``: the dtype of its pair MLP's matrix products
        (bfloat16: an approximation); ``full_mask``: every residue present (the pair mask
        multiply, a no-op then, is skipped)."""
        if fast:
            return self._forward_fast(node, trans, trans_sc, res_idx, mask, adj,
                                      pair_dtype, full_mask)
        B, L, _ = node.shape
        p = self.node_proj(node)  # [B, L, F]
        cross = torch.cat(
            [p[:, :, None, :].expand(B, L, L, -1), p[:, None, :, :].expand(B, L, L, -1)], dim=-1
        )  # [B, L, L, 2F]
        rel = (res_idx[:, :, None] - res_idx[:, None, :]).long()
        rel = rel.clamp(-self.max_relpos, self.max_relpos) + self.max_relpos
        rel_oh = nn.functional.one_hot(rel, 2 * self.max_relpos + 1).to(node.dtype)  # [B,L,L,R]
        dist = rbf_distogram(trans.to(node.dtype), self.num_bins, self.max_dist)
        dist_sc = rbf_distogram(trans_sc.to(node.dtype), self.num_bins, self.max_dist)
        feats = torch.cat([cross, rel_oh, dist, dist_sc], dim=-1)
        pair_mask = (mask[:, :, None] * mask[:, None, :])[..., None].to(node.dtype)
        out = self.mlp(feats)
        if self.adj_embed is not None:
            out = out + self.adj_embed(_codes(adj, (B, L, L), ADJ_UNKNOWN, node.device))
        return out * pair_mask

    # ---- fast path ---------------------------------------------------------------------------
    # The first Linear acts on concat(p_i, p_j, onehot(rel_ij), dist_ij, dist_sc_ij); it splits
    # exactly into W_i p_i + W_j p_j + W_rel[:, rel_ij] + W_d [dist, dist_sc] + b. The node parts
    # are computed per residue and broadcast, the one-hot product is a column lookup that
    # depends on the residue indices only (cached across calls at inference), so the only
    # product over all L^2 pairs left in the first layer is the 2 * num_bins distogram one.
    # The parameters are the same (the weight is sliced at run time).

    def _rel_term(self, res_idx: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """``W_rel[:, rel_ij] + b`` as ``[B or 1, L, L, E]``, cached at inference."""
        cache_ok = not torch.is_grad_enabled()
        key = (tuple(res_idx.shape), res_idx.device, weight.dtype, weight.data_ptr(),
               weight._version, bias._version)
        if cache_ok and self._rel_cache is not None:
            k, idx, val = self._rel_cache
            if k == key and torch.equal(idx, res_idx):
                return val
        idx = res_idx
        if idx.shape[0] > 1 and bool((idx == idx[:1]).all()):
            idx = idx[:1]  # the same chain indices for every example: one [1, L, L, E] term
        rel = (idx[:, :, None] - idx[:, None, :]).long()
        rel = rel.clamp(-self.max_relpos, self.max_relpos) + self.max_relpos
        val = weight.t()[rel] + bias  # [b, L, L, E]
        if cache_ok:
            self._rel_cache = (key, res_idx.clone(), val)
        return val

    def _forward_fast(self, node, trans, trans_sc, res_idx, mask, adj, pair_dtype, full_mask):
        B, L, _ = node.shape
        lin0, lin1, lin2, norm = self.mlp[0], self.mlp[2], self.mlp[4], self.mlp[5]
        W, F = lin0.weight, self.node_proj.out_features
        R = 2 * self.max_relpos + 1
        p = self.node_proj(node)  # [B, L, F]
        a_i = nn.functional.linear(p, W[:, :F])  # [B, L, E] (per residue: slices are fine)
        a_j = nn.functional.linear(p, W[:, F:2 * F])
        rel = self._rel_term(res_idx, W[:, 2 * F:2 * F + R], lin0.bias)  # [b, L, L, E]
        dist = rbf_distogram(trans.to(node.dtype), self.num_bins, self.max_dist, normal=True)
        dist_sc = rbf_distogram(trans_sc.to(node.dtype), self.num_bins, self.max_dist,
                                normal=True)
        dd = torch.cat([dist, dist_sc], dim=-1)  # [B, L, L, 2 * num_bins]
        pd = pair_dtype or node.dtype
        h = nn.functional.linear(dd.to(pd), W[:, 2 * F + R:].to(pd).contiguous())  # [B,L,L,E]
        h = h.add_(rel.to(pd))
        h = _add_ij(h, a_i, a_j)
        relu = torch.relu if torch.is_grad_enabled() else torch.relu_  # see EdgeTransition
        h = relu(h)
        h = relu(nn.functional.linear(h, lin1.weight.to(pd), lin1.bias.to(pd)))
        out = norm(nn.functional.linear(h, lin2.weight.to(pd), lin2.bias.to(pd)).to(node.dtype))
        if self.adj_embed is not None:
            out = out + self.adj_embed(_codes(adj, (B, L, L), ADJ_UNKNOWN, node.device))
        if full_mask:
            return out
        return out * (mask[:, :, None] * mask[:, None, :])[..., None].to(node.dtype)


def _add_ij(h: Tensor, a_i: Tensor, a_j: Tensor) -> Tensor:
    """``h [B, L, L, C] + a_i[:, :, None] + a_j[:, None]`` in ``h``'s dtype, in place (``h``
    is a fresh matrix product whose value no backward needs, so autograd allows it)."""
    return h.add_(a_i.to(h.dtype)[:, :, None, :]).add_(a_j.to(h.dtype)[:, None, :, :])
