"""Sets of structures to evaluate or draw fold plans from: a folder, a list of files or a cache.

Unlike the training pipeline (:mod:`protein.data.cache`), chains are not split at breaks and
not filtered: a broken design must show up in the metrics. Files that cannot be read are
reported (one line each), not fatal; temporaries of an interrupted writer are never read
(:func:`protein.data.find_structure_files` skips them).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flow3d.errors import DataError
from protein.data import find_structure_files
from protein.data.cache import is_cache, load_cache
from protein.data.parse import parse_structure

__all__ = ["Structure", "load_structures"]


@dataclass
class Structure:
    """One backbone to evaluate: ``coords`` [L, 4, 3] angstrom (O may be NaN)."""

    name: str
    path: str
    coords: np.ndarray
    sequence: str
    helix: float | None = None  # precomputed DSSP fractions (cache), else computed
    strand: float | None = None
    coil: float | None = None

    def __len__(self) -> int:
        return len(self.coords)


def load_structures(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    limit: int | None = None,
    seed: int = 0,
) -> tuple[list[Structure], list[str]]:
    """Structures from a directory of PDB/mmCIF files, a list of files, or a protein cache.

    Every chain of a file is one structure; chains are not split at breaks (a broken design
    must show up in the CA-CA metric). ``limit`` takes a seeded random subset. Returns the
    structures and one-line reasons for the files that could not be read.
    """
    if isinstance(source, (str, os.PathLike)) and is_cache(source):
        return _from_cache(source, limit, seed), []
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise DataError(f"{path}: no such file or directory")
        files = find_structure_files(path)
        if not files:
            raise DataError(f"{path}: no PDB/mmCIF files found")
    else:
        files = [Path(p) for p in source]
    if limit is not None and limit < len(files):
        pick = np.random.default_rng(seed).choice(len(files), limit, replace=False)
        files = [files[i] for i in sorted(pick)]
    structures, errors = [], []
    for f in files:
        try:
            res = parse_structure(f, break_distance=math.inf)
        except DataError as exc:
            errors.append(str(exc))
            continue
        many = len(res.chains) > 1
        for ch in res.chains:
            name = ch.name if many else f.name.split(".")[0]
            structures.append(Structure(name, str(f), ch.coords, ch.sequence))
    if limit is not None and len(structures) > limit:
        structures = structures[:limit]
    return structures, errors


def _from_cache(source: str | os.PathLike, limit: int | None, seed: int) -> list[Structure]:
    cache = load_cache(source)
    idx = np.arange(len(cache))
    if limit is not None and limit < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
    out = []
    for i in idx:
        ch = cache[int(i)]
        out.append(Structure(ch.name, ch.source, np.asarray(ch.coords), ch.sequence,
                             ch.stats.helix_fraction, ch.stats.strand_fraction,
                             ch.stats.coil_fraction))
    return out
