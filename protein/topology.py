"""Fold (topology) conditioning: a secondary-structure plan and a block adjacency.

RFdiffusion-style fold conditioning (Watson et al. 2023) tells the network, per residue,
whether it should be helix, strand or loop, and, per pair of secondary-structure elements,
whether the two pack against each other. Given the plan, the network no longer has to decide
mid-path which residues pair into a sheet; it only has to build the geometry.

    codes: [L] int   0 = helix (H), 1 = strand (E), 2 = loop (L), 3 = unknown (masked)
    adj:   [L, L] int  0 = the two residues' elements do not pack, 1 = they do,
                       2 = unknown (either residue is loop, or the plan says nothing)

A plan comes from a real chain (:meth:`Topology.from_coords`: pydssp, then elements in contact
are adjacent), from a file (:func:`load_topology`), from a string of H/E/L
(:meth:`Topology.from_string`, adjacency unknown), or is drawn from a reference set and cropped
to the requested length (:func:`draw_topologies`). Training sees plans of the training chains,
with all of it or only the adjacency hidden at random (``FlowSettings.topology_drop``), so the
same network also designs without one.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flow3d.errors import ConfigError, DataError
from protein.constants import CONTACT_DISTANCE_ANG, CONTACT_PAIRS, PARTNER_RANGE_ANG
from protein.data.filters import chain_stats, rg_scaling, secondary_structure
from protein.data.parse import parse_structure
from protein.data.structures import load_structures

HELIX, STRAND, LOOP, UNKNOWN = 0, 1, 2, 3
NOT_ADJACENT, ADJACENT, ADJ_UNKNOWN = 0, 1, 2
PLAN_LETTERS = "HEL"  # code -> letter (``-`` and ``C`` also read as loop)
MIN_ELEMENT = 2  # runs of H or E shorter than this count as loop
DRAW_SPANS = (1.3, 1.5)  # draw_topologies prefers chains up to these times the length ...
DRAW_MIN_CHOICES = 10  # ... taking the first span with this many chains


@dataclass(frozen=True)
class Topology:
    """A fold plan for ``L`` residues: ``codes [L]`` and ``adj [L, L]`` (see the module)."""

    codes: np.ndarray
    adj: np.ndarray
    source: str = ""

    def __post_init__(self):
        n = len(self.codes)
        if self.adj.shape != (n, n):
            raise ValueError(f"adjacency must be [{n}, {n}], got {list(self.adj.shape)}")

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def string(self) -> str:
        """The plan as H/E/L letters (``?`` for unknown)."""
        return "".join((PLAN_LETTERS + "?")[int(c)] for c in self.codes)

    @classmethod
    def from_string(cls, plan: str, source: str = "") -> Topology:
        """A plan from letters: H helix, E strand, L (or ``-``/``C``) loop, ``?`` unknown;
        the adjacency is unknown."""
        table = {"H": HELIX, "E": STRAND, "L": LOOP, "-": LOOP, "C": LOOP, "?": UNKNOWN}
        bad = sorted({c for c in plan.upper() if c not in table})
        if not plan or bad:
            raise ConfigError(f"secondary-structure plan {plan!r}: use H, E, L (or -) and ?"
                              + (f", not {''.join(bad)!r}" if bad else ""))
        codes = np.array([table[c] for c in plan.upper()], dtype=np.int64)
        adj = np.full((len(codes), len(codes)), ADJ_UNKNOWN, dtype=np.int64)
        return cls(codes, adj, source or "string")

    @classmethod
    def from_ss(cls, ss: str, ca: np.ndarray, source: str = "") -> Topology:
        """A plan from a DSSP 3-state string and the CA coordinates ``[L, 3]`` (angstrom)."""
        codes = dssp_codes(ss)
        elements = []
        for start, end, code in _elements(codes):
            if end - start < MIN_ELEMENT:
                codes[start:end] = LOOP
            else:
                elements.append((start, end, code))
        adj = block_adjacency(np.asarray(ca, dtype=np.float64), elements, len(codes))
        return cls(codes, adj, source)

    @classmethod
    def from_coords(cls, coords: np.ndarray, source: str = "") -> Topology:
        """A plan from a backbone ``[L, 4, 3]`` (N, CA, C, O; angstrom): pydssp, then
        elements with :data:`~protein.constants.CONTACT_PAIRS` CA pairs under
        :data:`~protein.constants.CONTACT_DISTANCE_ANG` pack."""
        coords = np.asarray(coords, dtype=np.float64)
        return cls.from_ss(secondary_structure(coords), coords[:, 1], source)

    def crop(self, start: int, length: int) -> Topology:
        """Residues ``start .. start + length`` (elements cut at the ends stay as they are)."""
        if start < 0 or start + length > len(self):
            raise ValueError(f"crop {start}+{length} outside a plan of {len(self)} residues")
        sl = slice(start, start + length)
        return Topology(self.codes[sl].copy(), self.adj[sl, sl].copy(),
                        f"{self.source}[{start + 1}-{start + length}]")

    def masked(self, keep_adjacency: bool = True) -> Topology:
        """The same plan with the adjacency (or everything) unknown."""
        adj = np.full_like(self.adj, ADJ_UNKNOWN)
        if keep_adjacency:
            return Topology(self.codes.copy(), adj, self.source)
        return Topology(np.full_like(self.codes, UNKNOWN), adj, self.source)

    def agreement(self, ss: str | np.ndarray, code: int | None = None) -> float:
        """Fraction of the planned (not unknown) residues whose DSSP letter (or
        :func:`dssp_codes` code) matches the plan; with ``code`` only over the residues
        planned as that (e.g. :data:`STRAND`)."""
        got = dssp_codes(ss) if isinstance(ss, str) else ss
        if len(got) != len(self.codes):
            raise ValueError(f"plan of {len(self.codes)} residues, structure of {len(got)}")
        known = self.codes != UNKNOWN if code is None else self.codes == code
        return float((got[known] == self.codes[known]).mean()) if known.any() else float("nan")

    def scores(self, ss: str, ca: np.ndarray) -> dict:
        """How a structure (DSSP string, CAs ``[L, 3]`` angstrom) follows the plan: overall,
        helix and strand agreement, and for residues planned in strands that pair with
        another strand, the fraction whose nearest planned partner CA is within
        :data:`~protein.constants.PARTNER_RANGE_ANG` (real sheets: 4.4-5.5 A; closer is two
        strands on top of each other)."""
        ca = np.asarray(ca, dtype=np.float64)
        pair = ((self.adj == ADJACENT) & (self.codes[:, None] == STRAND)
                & (self.codes[None, :] == STRAND))
        rows = pair.any(1)
        partner = float("nan")
        if rows.any():
            d = np.linalg.norm(ca[rows][:, None] - ca[None], axis=-1)
            near = np.where(pair[rows], d, np.inf).min(1)
            lo, hi = PARTNER_RANGE_ANG
            partner = float(((near >= lo) & (near <= hi)).mean())
        got = dssp_codes(ss)
        return {"agreement": self.agreement(got), "helix_agreement": self.agreement(got, HELIX),
                "strand_agreement": self.agreement(got, STRAND),
                "paired_strand_residues": int(rows.sum()), "partner_in_range": partner}


def dssp_codes(ss: str) -> np.ndarray:
    """Plan codes ``[L]`` of a DSSP 3-state string (H helix, E strand, anything else loop)."""
    return np.array([{"H": HELIX, "E": STRAND}.get(c, LOOP) for c in ss], dtype=np.int64)


def _elements(codes: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal runs ``(start, end, code)`` of helix or strand residues."""
    out, start = [], 0
    for i in range(1, len(codes) + 1):
        if i == len(codes) or codes[i] != codes[start]:
            if codes[start] in (HELIX, STRAND):
                out.append((start, i, int(codes[start])))
            start = i
    return out


def block_adjacency(ca: np.ndarray, elements: list[tuple[int, int, int]], n: int,
                    cutoff: float = CONTACT_DISTANCE_ANG, min_pairs: int = CONTACT_PAIRS
                    ) -> np.ndarray:
    """``[n, n]`` adjacency of residues from their elements' contacts: 1 where the two
    residues lie in different elements with at least ``min_pairs`` CA pairs under ``cutoff``
    angstrom, 0 between residues of elements that do not pack, 2 where either is loop."""
    dist = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
    packed = [(a, b) for a, (s1, e1, _) in enumerate(elements)
              for b, (s2, e2, _) in enumerate(elements[a + 1:], start=a + 1)
              if int((dist[s1:e1, s2:e2] < cutoff).sum()) >= min_pairs]
    return _element_adjacency(elements, n, packed)


def load_topology(spec: str | os.PathLike) -> Topology:
    """A plan from ``FILE`` (a PDB/mmCIF file: its first chain) or ``FILE:CHAIN``; the chain
    is not split at breaks (DSSP sees a loop there)."""
    spec = str(spec)
    path_str, chain = spec, None
    if not Path(spec).exists() and ":" in spec:
        path_str, chain = spec.rsplit(":", 1)
    path = Path(path_str)
    if not path.is_file():
        raise DataError(f"{path}: topology file not found")
    result = parse_structure(path, break_distance=float("inf"))  # a plan spans breaks
    chains = [c for c in result.chains if chain is None or c.chain_id == chain]
    if not chains:
        have = sorted({c.chain_id for c in result.chains})
        why = f"no chain {chain!r} (has {', '.join(have)})" if have else "no usable chain"
        raise DataError(f"{path}: {why}")
    c = chains[0]
    return Topology.from_coords(np.asarray(c.coords), f"{path.name}:{c.chain_id}")


def save_plans(plans: list[Topology], path: str | os.PathLike) -> None:
    """Write plans to a compact ``.npz`` plan library (what a checkpoint bundles as
    :data:`PLAN_LIBRARY`): every plan's codes, and which pairs of its elements pack. Only plans
    whose adjacency follows from their elements (:meth:`Topology.from_ss`) can be stored."""
    codes, offsets, pairs, names = [], [0], [], []
    for k, t in enumerate(plans):
        elements = _elements(t.codes)
        packed = [(a, b) for a in range(len(elements)) for b in range(a + 1, len(elements))
                  if t.adj[elements[a][0], elements[b][0]] == ADJACENT]
        if not np.array_equal(_element_adjacency(elements, len(t), packed), t.adj):
            raise ValueError(f"plan {t.source or k}: its adjacency is not one of elements")
        pairs.extend((k, a, b) for a, b in packed)
        codes.append(t.codes.astype(np.int8))
        offsets.append(offsets[-1] + len(t))
        names.append(t.source)
    np.savez_compressed(path, codes=np.concatenate(codes) if codes else np.zeros(0, np.int8),
                        offsets=np.asarray(offsets, dtype=np.int64),
                        pairs=np.asarray(pairs, dtype=np.int32).reshape(-1, 3),
                        names=np.asarray(names, dtype=str))


def load_plans(path: str | os.PathLike) -> list[Topology]:
    """The plans of a library written by :func:`save_plans` (exactly as they were saved)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            codes, offsets, pairs, names = (f[k] for k in ("codes", "offsets", "pairs", "names"))
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        raise DataError(f"{path}: not a plan library (write one with `flow3d protein "
                        "plans`)") from None
    by_plan: dict[int, list[tuple[int, int]]] = {}
    for k, a, b in pairs.tolist():
        by_plan.setdefault(k, []).append((a, b))
    out = []
    for k in range(len(offsets) - 1):
        c = codes[offsets[k]:offsets[k + 1]].astype(np.int64)
        elements = _elements(c)
        out.append(Topology(c, _element_adjacency(elements, len(c), by_plan.get(k, [])),
                            str(names[k])))
    return out


def _element_adjacency(elements: list[tuple[int, int, int]], n: int,
                       adjacent: list[tuple[int, int]]) -> np.ndarray:
    """``[n, n]`` adjacency with the element pairs ``adjacent`` packing (indices into
    ``elements``), every other pair of elements not, and loops unknown."""
    adj = np.full((n, n), ADJ_UNKNOWN, dtype=np.int64)
    for s1, e1, _ in elements:
        for s2, e2, _ in elements:
            adj[s1:e1, s2:e2] = NOT_ADJACENT
    for a, b in adjacent:
        (s1, e1, _), (s2, e2, _) = elements[a], elements[b]
        adj[s1:e1, s2:e2] = adj[s2:e2, s1:e1] = ADJACENT
    return adj


def reference_topologies(source: str | os.PathLike, limit: int | None = None, *,
                         max_rg_ratio: float | None = None) -> list[Topology]:
    """Plans of every chain of a reference set (a protein cache or a folder of structures),
    or of a plan library (``.npz``, :func:`save_plans`). ``max_rg_ratio``: only chains whose
    CA radius of gyration is at most that many times the compact-globule law
    (:func:`protein.data.filters.rg_scaling`); a library is taken as it was written."""
    if str(source).endswith(".npz") and Path(source).is_file():
        plans = load_plans(source)
        if not plans:
            raise DataError(f"{source}: an empty plan library")
        return plans[:limit] if limit is not None else plans
    structures, _ = load_structures(source, limit=limit)
    if max_rg_ratio is not None:
        structures = [s for s in structures if rg_ratio(s.coords) <= max_rg_ratio]
    if not structures:
        raise DataError(f"{source}: no chains to draw topologies from"
                        + (f" with Rg at most {max_rg_ratio:g}x the law" if max_rg_ratio else ""))
    return [Topology.from_coords(s.coords, s.name) for s in structures]


def rg_ratio(coords: np.ndarray) -> float:
    """CA radius of gyration of a backbone ``[L, 4, 3]`` over the compact-globule law."""
    return chain_stats(coords).rg / float(rg_scaling(len(coords)))


def draw_topologies(pool: list[Topology], length: int, num: int,
                    rng: np.random.Generator) -> list[Topology]:
    """``num`` plans of ``length`` residues: a random chain of the pool at least that long,
    cropped at a random start. A crop of a chain much longer than ``length`` is a fragment
    (its elements cut, its fold opened: crops of 1.5x-longer training chains have radii of
    gyration 1.15x the law at 60 residues, crops of 1.3x-longer ones 1.07x), so chains up to
    :data:`DRAW_SPANS` times ``length`` are preferred: the first span that offers
    :data:`DRAW_MIN_CHOICES` chains, else the widest that offers any, else every chain long
    enough."""
    long_enough = [t for t in pool if len(t) >= length]
    if not long_enough:
        raise DataError(f"no reference chain has {length} residues to draw a topology from "
                        f"(longest: {max(len(t) for t in pool)})")
    close: list[Topology] = []
    for span in DRAW_SPANS:
        close = [t for t in long_enough if len(t) <= span * length]
        if len(close) >= DRAW_MIN_CHOICES:
            break
    choices = close or long_enough
    out = []
    for _ in range(num):
        t = choices[int(rng.integers(len(choices)))]
        start = int(rng.integers(len(t) - length + 1))
        out.append(t.crop(start, length))
    return out


def summarize_scores(per: list[dict]) -> dict:
    """Means of :meth:`Topology.scores` over designs (NaN entries skipped; the partner range
    weighted by each design's paired strand residues)."""
    out: dict = {"n": len(per)}
    for key in ("agreement", "helix_agreement", "strand_agreement"):
        vals = [float(d[key]) for d in per if d.get(key) is not None and d[key] == d[key]]
        out[key] = float(np.mean(vals)) if vals else None
    weights = [(d["partner_in_range"], d["paired_strand_residues"]) for d in per
               if d.get("paired_strand_residues")]
    total = sum(w for _, w in weights)
    out["partner_in_range"] = (sum(v * w for v, w in weights) / total) if total else None
    return out
