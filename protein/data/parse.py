"""Read protein backbones (N, CA, C, O) from PDB and mmCIF files, plain or gzipped.

Real files are messy; the rules applied here, in order:

- only the first model is read (NMR ensembles, multi-model files);
- alternate locations: each atom keeps the location with the highest occupancy;
- hydrogens and side chains are ignored (only N, CA, C and O are read);
- waters and ligands (HETATM) are dropped; a HETATM residue is kept as a non-standard amino
  acid (``X`` in the sequence, e.g. MSE, SEP) when it has N, CA and C and is peptide-bonded to
  a neighbour in the chain;
- residues lacking N, CA or C are dropped and counted; a missing O is stored as NaN;
- chain breaks (C(i)-N(i+1) > ``break_distance``, 2.0 A) either split the chain into segments
  (``break_policy="split"``) or reject the chain (``break_policy="filter"``).

``parse_structure`` raises ``DataError`` (naming the file) when the file cannot be used at all;
per-chain problems are collected as one-line reasons in ``ParseResult.skipped``.
"""

from __future__ import annotations

import gzip
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flow3d.errors import DataError
from protein.constants import PEPTIDE_BOND_MAX_ANG

BACKBONE_ATOMS = ("N", "CA", "C", "O")

# Three-letter -> one-letter for the 20 standard amino acids; anything else is "X".
THREE_TO_ONE = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E",
    "GLY": "G", "HIS": "H", "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F",
    "PRO": "P", "SER": "S", "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V",
}  # fmt: skip
ONE_TO_THREE = {v: k for k, v in THREE_TO_ONE.items()}
# Integer codes used by the dataset: index in this alphabet, 20 = X (unknown / non-standard).
RESTYPES = "ARNDCQEGHILKMFPSTWYV"
RESTYPE_X = 20

PDB_SUFFIXES = (".pdb", ".ent", ".pdb1")
CIF_SUFFIXES = (".cif", ".mmcif")
BREAK_POLICIES = ("split", "filter")


@dataclass
class Chain:
    """One protein chain (or one unbroken segment of it) as backbone coordinates.

    ``coords`` is float32 [L, 4, 3] in angstrom, atoms in ``BACKBONE_ATOMS`` order; O may be NaN.
    """

    source: str
    chain_id: str
    sequence: str
    coords: np.ndarray  # [L, 4, 3] float32, angstrom
    res_numbers: np.ndarray  # [L] int32, author residue numbers
    insertion_codes: list[str]  # [L], "" when none
    segment: int = 0  # index of the segment when a broken chain was split
    n_dropped: int = 0  # residues of this chain dropped for missing N, CA or C

    def __post_init__(self) -> None:
        n = len(self.sequence)
        if self.coords.shape != (n, 4, 3):
            raise ValueError(f"coords shape {self.coords.shape} does not match length {n}")
        if len(self.res_numbers) != n or len(self.insertion_codes) != n:
            raise ValueError("res_numbers / insertion_codes do not match the sequence length")

    def __len__(self) -> int:
        return len(self.sequence)

    @property
    def name(self) -> str:
        """A readable unique id: ``<file stem>_<chain>`` plus ``.<segment>`` when split."""
        stem = Path(self.source).name
        for suffix in (".gz", *PDB_SUFFIXES, *CIF_SUFFIXES):
            stem = stem.removesuffix(suffix)
        cid = self.chain_id.strip() or "_"
        return f"{stem}_{cid}" + (f".{self.segment}" if self.segment else "")

    @property
    def aatype(self) -> np.ndarray:
        """Residue types as integers [L] (``RESTYPES`` index, 20 for X)."""
        return sequence_to_aatype(self.sequence)


@dataclass
class ParseResult:
    """What ``parse_structure`` found: usable chains and one-line reasons for the rest."""

    chains: list[Chain] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    n_dropped_residues: int = 0  # residues dropped for lacking N, CA or C, over all chains


def sequence_to_aatype(sequence: str) -> np.ndarray:
    """One-letter sequence -> int64 [L] codes (``RESTYPES`` index, ``RESTYPE_X`` otherwise)."""
    lookup = {a: i for i, a in enumerate(RESTYPES)}
    return np.array([lookup.get(a, RESTYPE_X) for a in sequence], dtype=np.int64)


def _detect_format(path: Path, text: str) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(CIF_SUFFIXES):
        return "cif"
    if name.endswith(PDB_SUFFIXES):
        return "pdb"
    head = text.lstrip()[:2000]
    if head.startswith("data_") or "\n_atom_site." in head:
        return "cif"
    return "pdb"


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a PDB or mmCIF file")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot decompress ({exc})") from exc
    if not raw.strip():
        raise DataError(f"{path}: empty file")
    if b"\x00" in raw[:4096]:
        raise DataError(f"{path}: binary content, not a PDB or mmCIF text file")
    return raw.decode("utf-8", errors="replace")


def _load_model(path: Path, text: str):
    """Parse with biopython (imported lazily) and return the first model, or raise DataError."""
    try:
        from Bio.PDB import MMCIFParser, PDBParser
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DataError(
            f"{path}: reading structures needs biopython: pip install 'flow3d[protein]'"
        ) from exc
    fmt = _detect_format(path, text)
    if fmt == "pdb":
        _check_coordinates(path, text)
    parser = MMCIFParser(QUIET=True) if fmt == "cif" else PDBParser(QUIET=True, PERMISSIVE=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = parser.get_structure(path.name, io.StringIO(text))
    except Exception as exc:  # biopython raises many types on malformed input
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot parse as {fmt.upper()}: {msg}") from exc
    models = list(structure)
    if not models:
        raise DataError(f"{path}: no atoms found (not a {fmt.upper()} file?)")
    return models[0]


def _check_coordinates(path: Path, text: str) -> None:
    """Refuse a PDB file with an ATOM/HETATM record cut before its coordinates end (column
    54): a truncated file, which would otherwise read as a shorter chain."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(("ATOM", "HETATM")) and len(line.rstrip()) < 54:
            raise DataError(f"{path}: line {number}: {line[:6].strip()} record without all its "
                            "coordinates (a truncated file?)")


def _best_atom(residue, name: str):
    """The atom ``name`` of ``residue`` at its highest-occupancy alternate location, or None."""
    if name not in residue:
        return None
    atom = residue[name]
    if atom.is_disordered():
        children = list(atom.child_dict.values())
        atom = max(children, key=lambda a: (a.get_occupancy() or 0.0))
    return atom


def _best_residue(residue):
    """For point mutations (several residue names at one position) keep the most occupied."""
    if residue.is_disordered() == 2:  # DisorderedResidue
        children = list(residue.child_dict.values())

        def occupancy(r):
            return float(np.mean([a.get_occupancy() or 0.0 for a in r.get_unpacked_list()]))

        return max(children, key=occupancy)
    return residue


def _residue_backbone(residue) -> np.ndarray | None:
    """[4, 3] N, CA, C, O (O NaN if missing), or None when N, CA or C is absent."""
    out = np.full((4, 3), np.nan, dtype=np.float32)
    for k, name in enumerate(BACKBONE_ATOMS):
        atom = _best_atom(residue, name)
        if atom is not None:
            out[k] = atom.get_coord()
    if not np.isfinite(out[:3]).all():
        return None
    return out


def _split_at_breaks(coords: np.ndarray, break_distance: float) -> list[tuple[int, int]]:
    """[start, end) index ranges of unbroken segments: C(i)-N(i+1) <= break_distance."""
    if len(coords) < 2:
        return [(0, len(coords))]
    gaps = np.linalg.norm(coords[1:, 0] - coords[:-1, 2], axis=-1)  # [L-1] C(i) -> N(i+1)
    cuts = np.nonzero(gaps > break_distance)[0] + 1
    bounds = [0, *cuts.tolist(), len(coords)]
    return list(zip(bounds[:-1], bounds[1:]))


def _chain_residues(chain) -> tuple[list, int]:
    """Amino-acid residues of a biopython chain with their backbone; count dropped ones."""
    rows = []  # (resname, hetero, resseq, icode, backbone [4, 3])
    n_dropped = 0
    for residue in chain:
        residue = _best_residue(residue)
        het, resseq, icode = residue.id
        resname = residue.get_resname().strip().upper()
        if het == "W" or resname in ("HOH", "WAT", "DOD"):
            continue
        standard = resname in THREE_TO_ONE or resname == "UNK"
        backbone = _residue_backbone(residue)
        if backbone is None:
            # Only amino acids count as "dropped"; ligands and nucleotides are silently ignored.
            if standard and het == " ":
                n_dropped += 1
            continue
        rows.append((resname, het != " " or not standard, resseq, icode.strip(), backbone))
    # Keep a non-standard / HETATM residue only if it is peptide-bonded to a neighbour.
    keep = []
    for i, row in enumerate(rows):
        if not row[1]:
            keep.append(row)
            continue
        bonded = False
        if i > 0:
            bonded |= np.linalg.norm(rows[i - 1][4][2] - row[4][0]) <= PEPTIDE_BOND_MAX_ANG
        if i + 1 < len(rows):
            bonded |= np.linalg.norm(row[4][2] - rows[i + 1][4][0]) <= PEPTIDE_BOND_MAX_ANG
        if bonded:
            keep.append(row)
    return keep, n_dropped


def parse_structure(
    path: str | Path,
    *,
    break_policy: str = "split",
    break_distance: float = PEPTIDE_BOND_MAX_ANG,
    min_length: int = 1,
) -> ParseResult:
    """Read every protein chain of the first model of a PDB/mmCIF file (``.gz`` allowed).

    Args:
        path: the structure file.
        break_policy: ``"split"`` cuts a chain at each break into segments; ``"filter"`` drops a
            chain that has any break (reason recorded in ``skipped``).
        break_distance: C(i)-N(i+1) distance in angstrom above which the chain is broken.
        min_length: segments shorter than this are skipped (with a reason).

    Raises:
        DataError: the file is missing, empty, not a structure, or has no protein chain.
    """
    if break_policy not in BREAK_POLICIES:
        raise ValueError(f"break_policy must be one of {BREAK_POLICIES}, got {break_policy!r}")
    path = Path(path)
    text = _read_text(path)
    model = _load_model(path, text)
    result = ParseResult()
    for bio_chain in model:
        cid = bio_chain.id
        label = f"{path.name} chain {cid.strip() or '_'!r}"
        rows, n_dropped = _chain_residues(bio_chain)
        result.n_dropped_residues += n_dropped
        if not rows:
            result.skipped.append(f"{label}: no amino-acid residue with N, CA and C")
            continue
        coords = np.stack([r[4] for r in rows]).astype(np.float32)  # [L, 4, 3]
        seq = "".join("X" if r[1] else THREE_TO_ONE.get(r[0], "X") for r in rows)
        resnum = np.array([r[2] for r in rows], dtype=np.int32)
        icodes = [r[3] for r in rows]
        segments = _split_at_breaks(coords, break_distance)
        if len(segments) > 1 and break_policy == "filter":
            s = segments[1][0]
            gap = float(np.linalg.norm(coords[s, 0] - coords[s - 1, 2]))
            result.skipped.append(
                f"{label}: chain break after residue {resnum[s - 1]}{icodes[s - 1]} "
                f"(C-N {gap:.1f} A) and break_policy='filter'"
            )
            continue
        for k, (a, b) in enumerate(segments):
            if b - a < min_length:
                result.skipped.append(
                    f"{label} segment {k}: {b - a} residues < min_length {min_length}"
                )
                continue
            result.chains.append(
                Chain(
                    source=str(path),
                    chain_id=cid,
                    sequence=seq[a:b],
                    coords=coords[a:b].copy(),
                    res_numbers=resnum[a:b].copy(),
                    insertion_codes=icodes[a:b],
                    segment=k,
                    n_dropped=n_dropped if k == 0 else 0,
                )
            )
    if not result.chains:
        why = "; ".join(result.skipped) if result.skipped else "no chains"
        raise DataError(f"{path}: no usable protein chain ({why})")
    return result
