"""Backbone quality metrics of one structure, on CA traces in angstrom (numpy).

Used by ``flow3d protein eval`` (:mod:`protein.eval`), by the motif and reflow-pair records
and by the tests: consecutive CA-CA distances and the fraction that is bond-like, steric CA-CA
clashes, and the fraction of residues in strands that have room for a partner.
"""

from __future__ import annotations

import numpy as np

from protein.constants import (
    CA_CA_IDEAL_ANG,
    CA_CA_TOL_ANG,
    CLASH_DISTANCE_ANG,
    CLASH_MIN_SEPARATION,
    LOCAL_SEPARATIONS,
    LOCAL_TIGHT_ANG,
    STRAND_MIN_CA_DISTANCE_ANG,
)

__all__ = ["ca_ca_distances", "ca_ca_valid", "ca_ca_valid_fraction", "count_clashes",
           "count_tight_local", "local_distances", "valid_strand_fraction"]


def ca_ca_distances(ca: np.ndarray) -> np.ndarray:
    """Consecutive CA-CA distances ``[L - 1]`` of a CA trace ``[L, 3]``."""
    return np.linalg.norm(np.diff(np.asarray(ca), axis=0), axis=-1)


def ca_ca_valid(distances: np.ndarray) -> np.ndarray:
    """Which CA-CA distances are bond-like: within ``CA_CA_IDEAL_ANG +/- CA_CA_TOL_ANG``."""
    return np.abs(np.asarray(distances) - CA_CA_IDEAL_ANG) <= CA_CA_TOL_ANG


def ca_ca_valid_fraction(ca: np.ndarray) -> float:
    """Fraction of consecutive CA-CA distances of ``ca [L, 3]`` that are bond-like (1.0 for a
    single residue)."""
    d = ca_ca_distances(np.asarray(ca, dtype=np.float64))
    return float(ca_ca_valid(d).mean()) if len(d) else 1.0


def count_clashes(ca: np.ndarray, threshold: float = CLASH_DISTANCE_ANG,
                  min_separation: int = CLASH_MIN_SEPARATION) -> int:
    """Number of CA pairs ``i < j`` with ``j - i >= min_separation`` closer than ``threshold``."""
    d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)  # [L, L]
    i, j = np.triu_indices(len(ca), k=min_separation)
    return int((d[i, j] < threshold).sum())


def local_distances(ca: np.ndarray, k: int) -> np.ndarray:
    """CA(i)-CA(i+k) distances ``[L - k]`` of a CA trace ``[L, 3]`` (empty when ``L <= k``)."""
    ca = np.asarray(ca, dtype=np.float64)
    return np.linalg.norm(ca[k:] - ca[:-k], axis=-1) if len(ca) > k else np.zeros(0)


def count_tight_local(ca: np.ndarray, threshold: float = LOCAL_TIGHT_ANG) -> tuple[int, int]:
    """``(tight, pairs)``: of the CA pairs 2, 3 and 4 residues apart in ``ca [L, 3]``, how many
    there are and how many are closer than ``threshold`` (a helix folded onto itself; real
    chains: 0.01-0.02%)."""
    d = [local_distances(ca, k) for k in LOCAL_SEPARATIONS]
    return sum(int((x < threshold).sum()) for x in d), sum(len(x) for x in d)


def valid_strand_fraction(ss: str, ca: np.ndarray,
                          min_distance: float = STRAND_MIN_CA_DISTANCE_ANG) -> float:
    """Fraction of residues that are DSSP strand (``E``) and have no CA at ``|i - j| >= 2``
    closer than ``min_distance``: strands whose partner is really beside them, not passing
    through them (DSSP's H-bond energy is also satisfied by overlapping segments)."""
    if len(ss) != len(ca):
        raise ValueError(f"secondary structure has {len(ss)} residues, CA trace {len(ca)}")
    if not len(ca):
        return float("nan")
    strand = np.frombuffer(ss.encode(), dtype=np.uint8) == ord("E")
    if not strand.any():
        return 0.0
    d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)  # [L, L]
    sep = np.abs(np.arange(len(ca))[:, None] - np.arange(len(ca))[None])
    d[sep < CLASH_MIN_SEPARATION] = np.inf
    return float((strand & (d.min(1) >= min_distance)).mean())
