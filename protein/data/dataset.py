"""Training items from the cache: residue frames in nanometres, padded batches by length.

An item is one chain as SE(3) frames (``protein.geometry``, AF2 convention) with translations
in nanometres centred on the CA centroid, the representation ReQFlow / FrameFlow train on.
Batches group chains of similar length under a residues-squared budget (attention and pair
features cost ``O(L^2)``), so a batch holds many short chains or a few long ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from protein.constants import ANG_TO_NM
from protein.data.cache import ProteinCache
from protein.data.parse import RESTYPE_X
from protein.geometry import ca_centre, frames_from_backbone
from protein.topology import ADJ_UNKNOWN, UNKNOWN, Topology

__all__ = ["LengthBatchSampler", "ProteinDataset", "collate_padded", "length_batches"]


class ProteinDataset(torch.utils.data.Dataset):
    """Items ``dict(trans [L, 3] nm centred, quats [L, 4], atoms [L, 4, 3] nm centred,
    res_idx [L], seq [L] ints (RESTYPES index, 20 = X), length, name)``.

    ``indices`` optionally restricts the dataset to a subset of the cache (train/val split).
    ``topology=True`` adds each chain's fold plan (:class:`protein.topology.Topology`, computed
    once here): ``ss [L]`` codes and ``adj [L, L]`` block adjacency.
    """

    def __init__(self, cache: ProteinCache, indices: Sequence[int] | None = None, *,
                 topology: bool = False):
        self.cache = cache
        self.indices = np.arange(len(cache)) if indices is None else np.asarray(indices)
        self.lengths = cache.lengths[self.indices]  # [n]
        self.topologies = None
        if topology:
            self.topologies = [Topology.from_coords(np.asarray(cache[int(i)].coords))
                               for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        chain = self.cache[int(self.indices[i])]
        atoms = torch.from_numpy(np.array(chain.coords)).to(torch.float32) * ANG_TO_NM  # [L,4,3]
        _, centroid = ca_centre(atoms[:, 1])  # [3]
        atoms = atoms - centroid
        rigid = frames_from_backbone(atoms[:, 0], atoms[:, 1], atoms[:, 2])
        n = len(chain)
        item = {
            "trans": rigid.trans,  # [L, 3] nm
            "quats": rigid.rots,  # [L, 4] (w, x, y, z), w >= 0
            "atoms": atoms,  # [L, 4, 3] nm, N CA C O
            "res_idx": torch.arange(n, dtype=torch.long),  # [L]
            "seq": torch.from_numpy(np.array(chain.aatype)).long(),  # [L]
            "length": n,
            "name": chain.name,
        }
        if self.topologies is not None:
            item["ss"] = torch.from_numpy(self.topologies[i].codes)
            item["adj"] = torch.from_numpy(self.topologies[i].adj)
        return item


def collate_padded(items: list[dict]) -> dict:
    """Pad items to the longest: frames pad with identity, ``mask`` [B, Lmax] float (1 = real).

    Returns ``trans [B, Lmax, 3]``, ``quats [B, Lmax, 4]``, ``atoms [B, Lmax, 4, 3]``,
    ``res_idx [B, Lmax]``, ``seq [B, Lmax]`` (pad 20 = X), ``mask``, ``length [B]``, ``name``;
    with fold plans in the items also ``ss [B, Lmax]`` and ``adj [B, Lmax, Lmax]`` (padding
    unknown).
    """
    if not items:
        raise ValueError("collate_padded needs at least one item")
    b = len(items)
    lmax = max(int(it["length"]) for it in items)
    dtype = items[0]["trans"].dtype
    trans = torch.zeros(b, lmax, 3, dtype=dtype)
    quats = torch.zeros(b, lmax, 4, dtype=dtype)
    quats[..., 0] = 1.0
    atoms = torch.zeros(b, lmax, 4, 3, dtype=dtype)
    res_idx = torch.zeros(b, lmax, dtype=torch.long)
    seq = torch.full((b, lmax), RESTYPE_X, dtype=torch.long)
    mask = torch.zeros(b, lmax, dtype=dtype)
    for k, it in enumerate(items):
        n = int(it["length"])
        trans[k, :n] = it["trans"]
        quats[k, :n] = it["quats"]
        if "atoms" in it:
            atoms[k, :n] = it["atoms"]
        res_idx[k, :n] = it["res_idx"]
        seq[k, :n] = it["seq"]
        mask[k, :n] = 1.0
    batch = {
        "trans": trans, "quats": quats, "atoms": atoms, "res_idx": res_idx, "seq": seq,
        "mask": mask, "length": torch.tensor([int(it["length"]) for it in items]),
        "name": [it.get("name", "") for it in items],
    }
    if "ss" in items[0]:
        batch["ss"] = torch.full((b, lmax), UNKNOWN, dtype=torch.long)
        batch["adj"] = torch.full((b, lmax, lmax), ADJ_UNKNOWN, dtype=torch.long)
        for k, it in enumerate(items):
            n = int(it["length"])
            batch["ss"][k, :n] = it["ss"]
            batch["adj"][k, :n, :n] = it["adj"]
    return batch


def length_batches(
    lengths: Sequence[int] | np.ndarray, rng: np.random.Generator, max_residues_sq: int
) -> list[list[int]]:
    """Group indices into batches of similar length with ``sum(L^2) <= max_residues_sq``.

    Indices are sorted by length with random tie-breaking (so equal-length chains mix between
    epochs), cut greedily into batches under the budget, and the batch order is shuffled.
    A chain longer than ``sqrt(max_residues_sq)`` gets a batch of its own. Every index appears
    exactly once.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if max_residues_sq <= 0:
        raise ValueError(f"max_residues_sq must be positive, got {max_residues_sq}")
    order = np.lexsort((rng.random(len(lengths)), lengths))  # by length, random ties
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in order:
        cost = int(lengths[i]) ** 2
        if current and used + cost > max_residues_sq:
            batches.append(current)
            current, used = [], 0
        current.append(int(i))
        used += cost
    if current:
        batches.append(current)
    perm = rng.permutation(len(batches))
    return [batches[k] for k in perm]


class LengthBatchSampler(torch.utils.data.Sampler):
    """``batch_sampler`` for a DataLoader: fresh ``length_batches`` every epoch (seeded)."""

    def __init__(self, lengths: Sequence[int] | np.ndarray, max_residues_sq: int, seed: int = 0):
        self.lengths = np.asarray(lengths)
        self.max_residues_sq = max_residues_sq
        self.seed = seed
        self.epoch = 0
        self._n = len(length_batches(self.lengths, np.random.default_rng(seed), max_residues_sq))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        yield from length_batches(self.lengths, rng, self.max_residues_sq)

    def __len__(self) -> int:
        return self._n


