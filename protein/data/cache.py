"""Build the preprocessed protein cache once; load it fast for training and evaluation.

Layout (a directory, swapped into place atomically):

- ``backbones.safetensors``: all kept chains concatenated — ``coords`` [N, 4, 3] float32
  (angstrom, missing O rebuilt), ``aatype`` [N] int64, ``res_numbers`` [N] int32, ``offsets``
  [n + 1] int64 (chain ``i`` is rows ``offsets[i]:offsets[i + 1]``), and per-chain ``rg``,
  ``helix``, ``strand``, ``coil`` [n] float32;
- ``meta.json``: names, sources, chain ids, sequences, the filter config and the build report
  (files read, chains kept, every skipped file/chain with its reason).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from flow3d.errors import DataError
from flow3d.io import atomic_dir
from protein.data import find_structure_files
from protein.data.filters import ChainStats, FilterConfig, apply_filters, chain_stats
from protein.data.parse import Chain, parse_structure, sequence_to_aatype
from protein.geometry import complete_oxygens

__all__ = [
    "CacheReport", "CachedChain", "ProteinCache", "build_cache", "is_cache", "load_cache",
]

CACHE_VERSION = 1
ARRAYS_FILE = "backbones.safetensors"
META_FILE = "meta.json"


@dataclass
class CacheReport:
    """What a build did: counts and a one-line reason for everything left out."""

    n_files: int = 0
    n_chains_parsed: int = 0
    kept: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    n_dropped_residues: int = 0

    def summary(self) -> str:
        return (f"{len(self.kept)} chains kept from {self.n_files} files "
                f"({self.n_chains_parsed} chains parsed, {len(self.skipped)} skipped, "
                f"{self.n_dropped_residues} residues dropped for missing N/CA/C)")


@dataclass(frozen=True)
class CachedChain:
    name: str
    source: str
    chain_id: str
    sequence: str
    coords: np.ndarray  # [L, 4, 3] float32 angstrom
    aatype: np.ndarray  # [L] int64
    res_numbers: np.ndarray  # [L] int32
    stats: ChainStats

    def __len__(self) -> int:
        return len(self.sequence)


def _process_file(args: tuple[str, str]):
    """Worker: parse one file and compute stats; never raises for bad input."""
    path, break_policy = args
    try:
        res = parse_structure(path, break_policy=break_policy)
    except DataError as exc:
        return [], [], [str(exc)], 0
    chains, stats = [], []
    for ch in res.chains:
        coords = complete_oxygens(torch.from_numpy(ch.coords).double()).float().numpy()
        ch.coords = np.ascontiguousarray(coords)
        chains.append(ch)
        stats.append(chain_stats(ch.coords))
    return chains, stats, res.skipped, res.n_dropped_residues


def build_cache(
    sources: list[str | os.PathLike],
    cache_path: str | os.PathLike,
    filters: FilterConfig | None = None,
    *,
    workers: int = 1,
    break_policy: str = "split",
    progress: bool = True,
) -> CacheReport:
    """Parse every structure file in ``sources`` (files or directories), filter, store.

    Bad files and rejected chains never stop the build; they are listed with a reason in the
    report (and in ``meta.json``). Raises ``DataError`` when no file is found or nothing is
    kept.
    """
    filters = filters or FilterConfig()
    files: list[Path] = []
    for src in sources:
        src = Path(src)
        if not src.exists():
            raise DataError(f"{src}: no such file or directory")
        files.extend(find_structure_files(src))
    if not files:
        raise DataError(f"{', '.join(map(str, sources))}: no PDB/mmCIF files found")
    report = CacheReport(n_files=len(files))
    chains: list[Chain] = []
    stats: list[ChainStats] = []
    jobs = [(str(f), break_policy) for f in files]
    bar = dict(total=len(jobs), desc="protein cache", unit="file", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(tqdm(pool.map(_process_file, jobs, chunksize=4), **bar))
    else:
        results = [_process_file(j) for j in tqdm(jobs, **bar)]
    for ch, st, skipped, dropped in results:
        chains.extend(ch)
        stats.extend(st)
        report.skipped.extend(skipped)
        report.n_dropped_residues += dropped
    report.n_chains_parsed = len(chains)
    kept, reasons = apply_filters(chains, filters, stats)
    report.skipped.extend(reasons)
    if not kept:
        raise DataError(f"{cache_path}: no chain passed the filters ({len(chains)} parsed)")
    report.kept = _unique_names([chains[i].name for i in kept])
    _write_cache(Path(cache_path), [chains[i] for i in kept], [stats[i] for i in kept],
                 filters, report)
    return report


def _unique_names(names: list[str]) -> list[str]:
    """Chain names are file-stem based; files of the same name in different folders get
    ``~2``, ``~3`` ... so that every cached chain has its own name."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}~{seen[n]}")
    return out


def _write_cache(path: Path, chains: list[Chain], stats: list[ChainStats],
                 filters: FilterConfig, report: CacheReport) -> None:
    lengths = np.array([len(c) for c in chains], dtype=np.int64)
    arrays = {
        "coords": np.concatenate([c.coords for c in chains]).astype(np.float32),
        "aatype": np.concatenate([c.aatype for c in chains]).astype(np.int64),
        "res_numbers": np.concatenate([c.res_numbers for c in chains]).astype(np.int32),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "rg": np.array([s.rg for s in stats], dtype=np.float32),
        "helix": np.array([s.helix_fraction for s in stats], dtype=np.float32),
        "strand": np.array([s.strand_fraction for s in stats], dtype=np.float32),
        "coil": np.array([s.coil_fraction for s in stats], dtype=np.float32),
    }
    meta = {
        "version": CACHE_VERSION,
        "names": report.kept,
        "sources": [c.source for c in chains],
        "chain_ids": [c.chain_id for c in chains],
        "sequences": [c.sequence for c in chains],
        "filters": filters.to_dict(),
        "report": {
            "n_files": report.n_files,
            "n_chains_parsed": report.n_chains_parsed,
            "n_kept": len(report.kept),
            "n_dropped_residues": report.n_dropped_residues,
            "skipped": report.skipped,
        },
    }
    with atomic_dir(path) as tmp:
        save_file(arrays, str(tmp / ARRAYS_FILE))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def is_cache(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a directory written by ``build_cache``."""
    path = Path(path)
    return (path / ARRAYS_FILE).is_file() and (path / META_FILE).is_file()


class ProteinCache:
    """Read-only view of a built cache: ``len``, ``cache[i] -> CachedChain``, ``lengths``."""

    def __init__(self, path: Path, arrays: dict[str, np.ndarray], meta: dict):
        self.path = path
        self.meta = meta
        self._arrays = arrays
        self.offsets = arrays["offsets"]
        self.lengths = np.diff(self.offsets)  # [n]
        self.names: list[str] = meta["names"]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> CachedChain:
        if not -len(self) <= i < len(self):
            raise IndexError(f"cache index {i} out of range for {len(self)} chains")
        i = i % len(self)
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        arr = self._arrays
        stats = ChainStats(b - a, float(arr["rg"][i]), float(arr["helix"][i]),
                           float(arr["strand"][i]), float(arr["coil"][i]))
        return CachedChain(
            name=self.names[i],
            source=self.meta["sources"][i],
            chain_id=self.meta["chain_ids"][i],
            sequence=self.meta["sequences"][i],
            coords=arr["coords"][a:b],
            aatype=arr["aatype"][a:b],
            res_numbers=arr["res_numbers"][a:b],
            stats=stats,
        )

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"ProteinCache({self.path}, {len(self)} chains, {int(self.lengths.sum())} residues)"


def load_cache(path: str | os.PathLike) -> ProteinCache:
    """Open a cache directory written by ``build_cache``; ``DataError`` if it is not one."""
    path = Path(path)
    arrays_file, meta_file = path / ARRAYS_FILE, path / META_FILE
    if not arrays_file.is_file() or not meta_file.is_file():
        raise DataError(f"{path}: not a protein cache (expected {ARRAYS_FILE} and {META_FILE}; "
                        f"build one with build_cache)")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        arrays = load_file(str(arrays_file))
    except (json.JSONDecodeError, SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path}: corrupt protein cache ({exc})") from exc
    if meta.get("version") != CACHE_VERSION:
        raise DataError(f"{path}: cache version {meta.get('version')} != {CACHE_VERSION}; "
                        f"rebuild it")
    need = {"coords", "aatype", "res_numbers", "offsets", "rg", "helix", "strand", "coil"}
    if missing := need - set(arrays):
        raise DataError(f"{path}: protein cache lacks arrays {sorted(missing)}")
    n = len(meta["names"])
    if len(arrays["offsets"]) != n + 1 or arrays["offsets"][-1] != len(arrays["coords"]):
        raise DataError(f"{path}: protein cache offsets do not match its arrays")
    if not np.array_equal(sequence_to_aatype("".join(meta["sequences"])), arrays["aatype"]):
        raise DataError(f"{path}: protein cache sequences do not match aatype")
    return ProteinCache(path, arrays, meta)
