"""Which chains to train on: length range, coil fraction, compactness, duplicates.

Defaults follow FrameFlow / ReQFlow's PDB filtering (Yim et al. 2023; Yue et al. 2025):
60-256 residues (ReQFlow trains to 512; 256 keeps CPU training feasible), at most 50% coil
(DSSP loop), radius of gyration below the 0.96 quantile for the chain's length, identical
sequences kept once.

The per-length Rg quantile: with ~1000 chains there are too few per length to take raw
quantiles, so Rg is normalised by the compact-globule scaling law ``Rg ~ 2.2 L^0.38``
(Skolnick et al. 1997) and the quantile is taken of ``Rg / (2.2 L^0.38)`` over the chains
that pass the other filters; that is the per-length quantile under the power law.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from flow3d.errors import ConfigError
from protein.constants import RG_EXPONENT, RG_PREFACTOR_ANG
from protein.data.parse import Chain
from protein.geometry import complete_oxygens, radius_of_gyration

__all__ = [
    "ChainStats",
    "FilterConfig",
    "apply_filters",
    "chain_stats",
    "rg_scaling",
    "secondary_structure",
    "ss_fractions",
]


@dataclass(frozen=True)
class FilterConfig:
    """Chain filters; ``None`` disables a criterion."""

    min_len: int | None = 60
    max_len: int | None = 256
    max_coil_fraction: float | None = 0.5
    rg_quantile: float | None = 0.96
    dedup: bool = True

    def __post_init__(self) -> None:
        if self.min_len is not None and self.max_len is not None and self.min_len > self.max_len:
            raise ConfigError(f"filters: min_len {self.min_len} > max_len {self.max_len}")
        if self.max_coil_fraction is not None and not 0.0 <= self.max_coil_fraction <= 1.0:
            raise ConfigError(f"filters: max_coil_fraction must be in [0, 1], got "
                              f"{self.max_coil_fraction}")
        if self.rg_quantile is not None and not 0.0 < self.rg_quantile <= 1.0:
            raise ConfigError(f"filters: rg_quantile must be in (0, 1], got {self.rg_quantile}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ChainStats:
    length: int
    rg: float  # angstrom, over CA
    helix_fraction: float
    strand_fraction: float
    coil_fraction: float


def secondary_structure(coords) -> str:
    """DSSP 3-state string (``H`` helix, ``E`` strand, ``-`` loop) of a backbone ``[L, 4, 3]``.

    Uses pydssp (a pure numpy re-implementation of DSSP's H-bond rules, Kabsch & Sander 1983);
    a missing O is first rebuilt from the frames.
    """
    try:
        import pydssp
    except ImportError as exc:  # pragma: no cover - depends on the environment
        msg = "secondary structure needs pydssp: pip install 'flow3d[protein]'"
        raise ImportError(msg) from exc
    x = torch.as_tensor(np.asarray(coords), dtype=torch.float64)
    if len(x) < 3:
        return "-" * len(x)
    x = complete_oxygens(x).numpy()
    return "".join(pydssp.assign(x, out_type="c3").tolist())


def ss_fractions(ss: str) -> tuple[float, float, float]:
    """(helix, strand, coil) fractions of a DSSP 3-state string."""
    n = max(len(ss), 1)
    return ss.count("H") / n, ss.count("E") / n, ss.count("-") / n


def rg_scaling(length) -> np.ndarray:
    """Expected Rg (angstrom) of a compact chain of ``length`` residues: ``2.2 L^0.38``."""
    return RG_PREFACTOR_ANG * np.asarray(length, dtype=np.float64) ** RG_EXPONENT


def chain_stats(coords) -> ChainStats:
    """Length, CA radius of gyration and DSSP fractions of a backbone ``[L, 4, 3]``."""
    coords = np.asarray(coords)
    ca = torch.as_tensor(coords[:, 1], dtype=torch.float64)
    helix, strand, coil = ss_fractions(secondary_structure(coords))
    return ChainStats(len(coords), float(radius_of_gyration(ca)), helix, strand, coil)


def apply_filters(
    chains: list[Chain], config: FilterConfig, stats: list[ChainStats] | None = None
) -> tuple[list[int], list[str]]:
    """Indices of the chains that pass, and one-line reasons for those that do not.

    ``stats`` (``chain_stats`` per chain) may be passed to avoid recomputing DSSP.
    """
    reasons: list[str] = []
    candidates: list[int] = []
    seen: dict[str, str] = {}
    order = sorted(range(len(chains)), key=lambda i: (chains[i].source, chains[i].name))
    for i in order:
        ch = chains[i]
        n = len(ch)
        if config.min_len is not None and n < config.min_len:
            reasons.append(f"{ch.name}: length {n} < min_len {config.min_len}")
            continue
        if config.max_len is not None and n > config.max_len:
            reasons.append(f"{ch.name}: length {n} > max_len {config.max_len}")
            continue
        if config.dedup:
            if ch.sequence in seen:
                reasons.append(f"{ch.name}: duplicate sequence of {seen[ch.sequence]}")
                continue
            seen[ch.sequence] = ch.name
        candidates.append(i)
    if stats is None:
        stats = [None] * len(chains)
    for i in candidates:
        if stats[i] is None:
            stats[i] = chain_stats(chains[i].coords)
    kept = []
    max_coil = config.max_coil_fraction
    for i in candidates:
        if max_coil is not None and stats[i].coil_fraction > max_coil:
            reasons.append(f"{chains[i].name}: coil fraction {stats[i].coil_fraction:.2f} > "
                           f"{config.max_coil_fraction}")
            continue
        kept.append(i)
    if config.rg_quantile is not None and config.rg_quantile < 1.0 and kept:
        score = np.array([stats[i].rg for i in kept]) / rg_scaling([stats[i].length for i in kept])
        limit = float(np.quantile(score, config.rg_quantile))
        for i, s in zip(kept, score):
            if s > limit:
                reasons.append(f"{chains[i].name}: Rg {stats[i].rg:.1f} A is above the "
                               f"{config.rg_quantile} quantile for length {stats[i].length}")
        kept = [i for i, s in zip(kept, score) if s <= limit]
    return sorted(kept), reasons
