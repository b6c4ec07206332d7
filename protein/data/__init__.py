"""Protein data pipeline: parse real structures, filter, cache, and serve training items.

``parse`` reads PDB/mmCIF files into backbone ``Chain`` records, ``filters`` decides which
chains to train on, ``cache`` stores the kept chains once in safetensors, ``dataset`` turns
them into frames (nanometres, centred) and length-bucketed batches.
"""

from __future__ import annotations

from pathlib import Path

from flow3d.io import is_temporary
from protein.data.parse import (
    BACKBONE_ATOMS,
    RESTYPE_X,
    RESTYPES,
    Chain,
    ParseResult,
    parse_structure,
    sequence_to_aatype,
)

__all__ = [
    "BACKBONE_ATOMS",
    "RESTYPES",
    "RESTYPE_X",
    "Chain",
    "ParseResult",
    "find_structure_files",
    "parse_structure",
    "sequence_to_aatype",
    "shared_protein_dir",
]

STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".pdb.gz", ".ent.gz", ".cif.gz",
                      ".mmcif.gz")


def shared_protein_dir() -> Path | None:
    """The real protein set ``../shared/data/proteins`` next to the project root, if present."""
    root = Path(__file__).resolve().parents[2]
    path = root.parent / "shared" / "data" / "proteins"
    return path if path.is_dir() else None


def find_structure_files(root: str | Path) -> list[Path]:
    """All PDB/mmCIF files (plain or .gz) under ``root`` (or ``[root]`` for a file), sorted;
    temporaries of an interrupted writer (:func:`flow3d.io.is_temporary`) are not files to read."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.name.lower().endswith(STRUCTURE_SUFFIXES)
        and not any(is_temporary(part) for part in p.relative_to(root).parts)
    )
