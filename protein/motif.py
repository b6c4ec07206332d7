"""Motif scaffolding: design a backbone around fixed segments of a real structure.

A motif is one or more contiguous segments of a PDB/mmCIF chain (a binding loop, a catalytic
helix, a hairpin) and the positions they take in the design. ``A10-25@30`` puts residues
10..25 (author numbering) of chain A at design positions 30..45 (1-based, as in the written
PDB file); several segments are separated by commas: ``A10-25@30,A40-45@70``. A range
``A10-25@20-40`` lets each design draw the segment's start in 20..40 (so the scaffold
lengths around it vary, like RFdiffusion's contigs); ranges must not allow two segments to
overlap.

The unconditional model scaffolds it without retraining: at every velocity evaluation the
network's prediction of the motif residues is replaced by the motif itself, superimposed on
that prediction (:meth:`protein.flow.ProteinFlow.place_motif`). The network is
SE(3)-invariant, so the motif has no pose of its own and takes the one the prediction gives
it; the scaffold is predicted around it and the trajectory carries both. Clash guidance leaves
the motif residues in place. A plain replacement of the noisy motif frames along their own
path (RePaint-style, the motif at the origin) left the scaffold disconnected: on one helix
motif its junction CA-CA distances ranged 1.5-7.9 A against 3.6-4.2 A with the superposition
(docs/benchmarks.md, quality_motif).

The motif keeps its internal geometry up to the ideal-geometry rebuild of N and C from the
frames (about 0.05 A); what shows whether the scaffold accommodates it are the bonds at the
junctions and clashes with the scaffold (:func:`motif_metrics`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flow3d.errors import ConfigError, DataError
from protein.constants import ANG_TO_NM, CLASH_DISTANCE_ANG
from protein.data.parse import parse_structure
from protein.geometry import frames_from_backbone, superimpose
from protein.metrics import ca_ca_valid

__all__ = ["Motif", "MotifSegment", "load_motif", "motif_from_atoms", "motif_metrics",
           "parse_segments", "summarize_motif_metrics"]

_SEGMENT = re.compile(r"^([A-Za-z0-9])(-?\d+)(?:-(-?\d+))?@(\d+)(?:-(\d+))?$")


@dataclass(frozen=True)
class MotifSegment:
    """Residues ``first..last`` (author numbers) of ``chain``, at design position ``at``
    (1-based) onwards; with ``at_max > at`` each design draws its start in ``at..at_max``."""

    chain: str
    first: int
    last: int
    at: int
    at_max: int | None = None  # None: fixed at ``at``

    def __len__(self) -> int:
        return self.last - self.first + 1

    @property
    def last_start(self) -> int:
        return self.at if self.at_max is None else self.at_max

    def __str__(self) -> str:
        where = f"{self.at}" if self.at_max is None else f"{self.at}-{self.at_max}"
        return f"{self.chain}{self.first}-{self.last}@{where}"


@dataclass
class Motif:
    """Motif frames ready for sampling: ``trans [M, 3]`` nm centred on the motif's CA
    centroid, ``quats [M, 4]``, ``positions [M]`` 0-based design indices (ascending; for a
    segment with a range of starts, its first one: :meth:`draw_positions` draws the rest),
    ``atoms [M, 4, 3]`` angstrom (N, CA, C, O; O may be NaN) as read, and their
    ``sequence`` (for a sequence designer's fixed positions)."""

    source: str
    segments: tuple[MotifSegment, ...]
    trans: Tensor
    quats: Tensor
    positions: Tensor
    atoms: np.ndarray
    sequence: str  # one-letter codes of the motif residues, in design order

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def min_length(self) -> int:
        """The shortest design that holds every segment wherever it is drawn."""
        return max(s.last_start - 1 + len(s) for s in self.segments) if self.segments \
            else int(self.positions.max()) + 1

    @property
    def placed(self) -> bool:
        """True when every segment has one position (nothing to draw)."""
        return all(s.last_start == s.at for s in self.segments)

    def draw_positions(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """``[num, M]`` 0-based design positions: ``positions`` with each segment shifted by
        a uniform draw in ``0..at_max - at`` (segments keep their order; they cannot overlap,
        :func:`parse_segments` checks the ranges)."""
        base = self.positions[None].expand(num, -1).clone()
        if self.placed:
            return base
        for seg in self.segments:
            if seg.last_start == seg.at:
                continue
            shift = torch.randint(0, seg.last_start - seg.at + 1, (num, 1), generator=generator)
            cols = (self.positions >= seg.at - 1) & (self.positions < seg.at - 1 + len(seg))
            base[:, cols] += shift
        return base

    def check_length(self, length: int) -> None:
        if length < self.min_length:
            raise ConfigError(f"motif {self.spec}: needs designs of at least "
                              f"{self.min_length} residues, got length {length}")

    @property
    def spec(self) -> str:
        return ",".join(str(s) for s in self.segments)


def parse_segments(spec: str) -> tuple[MotifSegment, ...]:
    """``"A10-25@30,B5-9@60"`` -> segments, checked for order and overlap in the design."""
    segments = []
    for part in (p.strip() for p in spec.split(",")):
        m = _SEGMENT.match(part)
        if not m:
            raise ConfigError(f"motif segment {part!r}: expected CHAIN FIRST-LAST@POSITION, "
                              "e.g. A10-25@30")
        chain, first, last, at = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
        at_max = None if m.group(5) is None else int(m.group(5))
        last = first if last is None else int(last)
        if last < first:
            raise ConfigError(f"motif segment {part!r}: last residue before the first")
        if at < 1:
            raise ConfigError(f"motif segment {part!r}: design positions start at 1")
        if at_max is not None and at_max < at:
            raise ConfigError(f"motif segment {part!r}: position range ends before it starts")
        segments.append(MotifSegment(chain, first, last, at, at_max))
    ordered = sorted(segments, key=lambda s: s.at)
    for a, b in zip(ordered, ordered[1:]):
        if a.last_start + len(a) > b.at:
            raise ConfigError(f"motif segments {a} and {b} can overlap in the design")
    return tuple(segments)


def load_motif(path: str | Path, spec: str) -> Motif:
    """Read the segments ``spec`` (see :func:`parse_segments`) from a PDB/mmCIF file."""
    segments = parse_segments(spec)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: motif file not found")
    chains = {ch.chain_id: ch for ch in parse_structure(path, break_distance=np.inf).chains}
    atoms, positions, letters = [], [], []
    for seg in segments:
        ch = chains.get(seg.chain)
        if ch is None:
            raise DataError(f"{path}: no protein chain {seg.chain!r} for motif segment {seg} "
                            f"(chains: {', '.join(sorted(chains)) or 'none'})")
        numbers = np.asarray(ch.res_numbers)
        plain = np.array([code == "" for code in ch.insertion_codes])
        for number in range(seg.first, seg.last + 1):
            hits = np.nonzero((numbers == number) & plain)[0]
            if len(hits) != 1:
                raise DataError(f"{path}: motif segment {seg}: residue {seg.chain}{number} is "
                                "missing or lacks N, CA or C")
            atoms.append(ch.coords[hits[0]])
            letters.append(ch.sequence[hits[0]])
        positions.extend(range(seg.at - 1, seg.at - 1 + len(seg)))
    if len(atoms) < 3:
        raise ConfigError(f"motif {spec!r}: needs at least 3 residues to have a pose, got "
                          f"{len(atoms)}")
    return motif_from_atoms(np.stack(atoms), positions, "".join(letters), source=str(path),
                            segments=segments)


def motif_from_atoms(atoms: np.ndarray, positions, sequence: str, *, source: str,
                     segments: tuple[MotifSegment, ...]) -> Motif:
    """A :class:`Motif` from backbone ``atoms [M, 4, 3]`` (angstrom) that go to the 0-based
    design ``positions`` (any order: they are sorted here)."""
    order = np.argsort(np.asarray(positions), kind="stable")
    atoms_a = np.asarray(atoms, dtype=np.float32)[order]  # [M, 4, 3]
    bb = torch.from_numpy(atoms_a).double()
    rigid = frames_from_backbone(bb[:, 0], bb[:, 1], bb[:, 2])
    trans = (rigid.trans - rigid.trans.mean(0)) * ANG_TO_NM
    return Motif(source, tuple(segments), trans.float(), rigid.rots.float(),
                 torch.as_tensor(np.asarray(positions)[order], dtype=torch.long), atoms_a,
                 "".join(sequence[i] for i in order))


def _superposed_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD of point sets ``[N, 3]`` after the optimal superposition of ``a`` onto ``b``."""
    ta, tb = torch.from_numpy(a).double(), torch.from_numpy(b).double()
    rot, shift = superimpose(ta, tb)
    return float(((ta @ rot.T + shift - tb) ** 2).sum(-1).mean().sqrt())


def motif_metrics(atoms: np.ndarray, motif: Motif, positions=None, *,
                  clash: float = CLASH_DISTANCE_ANG) -> dict:
    """How a design ``atoms [L, 4, 3]`` (angstrom) holds its motif at ``positions [M]``
    (0-based; default ``motif.positions``).

    ``motif_rmsd``: N/CA/C RMSD (A) of the motif residues to the motif after superposition;
    ``junction_ca_ca``: the CA-CA distances across each motif/scaffold boundary (ideal 3.80 A)
    and ``junction_valid`` the fraction within 3.80 +/- 0.20 A; ``motif_scaffold_clashes``:
    motif-scaffold CA pairs at ``|i - j| >= 2`` closer than ``clash`` A.
    """
    atoms = np.asarray(atoms, dtype=np.float64)
    pos = motif.positions.numpy() if positions is None else np.asarray(positions)
    in_motif = np.zeros(len(atoms), dtype=bool)
    in_motif[pos] = True
    rmsd = _superposed_rmsd(atoms[pos, :3].reshape(-1, 3), motif.atoms[:, :3].reshape(-1, 3))
    ca = atoms[:, 1]
    edges = np.nonzero(in_motif[:-1] != in_motif[1:])[0]  # bond i -> i+1 crosses a boundary
    junction = np.linalg.norm(ca[edges + 1] - ca[edges], axis=-1)
    d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
    idx = np.arange(len(ca))
    pair = in_motif[:, None] & ~in_motif[None] & (np.abs(idx[:, None] - idx[None]) >= 2)
    return {
        "motif_rmsd": rmsd,
        "junction_ca_ca": junction.round(3).tolist(),
        "junction_valid": _junction_valid(junction) if len(junction) else float("nan"),
        "motif_scaffold_clashes": int((d[pair] < clash).sum()),
    }


def _junction_valid(junction: np.ndarray) -> float:
    return float(ca_ca_valid(junction).mean())


def summarize_motif_metrics(per: list[dict]) -> dict:
    """Means over designs of :func:`motif_metrics` rows (junctions pooled); None when empty."""
    junctions = np.array([d for m in per for d in m["junction_ca_ca"]], dtype=np.float64)
    return {
        "motif_rmsd": float(np.mean([m["motif_rmsd"] for m in per])) if per else None,
        "junction_valid": _junction_valid(junctions) if len(junctions) else None,
        "motif_scaffold_clashes": float(np.mean([m["motif_scaffold_clashes"] for m in per]))
        if per else None,
    }  # fmt: skip
