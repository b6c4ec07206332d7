"""Write backbones as PDB or mmCIF files that PyMOL, DSSP (mkdssp) and ProteinMPNN read.

Atoms are ``[L, 4, 3]`` (N, CA, C, O) in angstrom, or ``[T, L, 4, 3]`` for a trajectory written
as MODEL records (PDB) / ``pdbx_PDB_model_num`` (mmCIF). Residues are poly-glycine or
poly-alanine (``residue="ALA"``), or one standard three-letter name per residue (a scaffolded
motif keeps its own); every residue but glycine gets an ideal C-beta from its N, CA, C frame
and no other side-chain atom. Atoms that are
NaN (e.g. a missing O) are left out. Files carry HEADER and CRYST1 records (mkdssp 4 refuses
PDB files without CRYST1) and are written atomically.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np
import torch

from flow3d.errors import DataError
from flow3d.io import atomic_write_text
from protein.data.parse import THREE_TO_ONE
from protein.geometry import ideal_cb

__all__ = ["backbone_atom_records", "residue_names", "write_backbone", "write_backbone_cif",
           "write_backbone_pdb"]

RESIDUES = ("GLY", "ALA")
_ATOM_NAMES = ("N", "CA", "C", "O", "CB")
_ELEMENTS = ("N", "C", "C", "O", "C")
CRYST1 = "CRYST1    1.000    1.000    1.000  90.00  90.00  90.00 P 1           1"


def _as_models(atoms, path) -> np.ndarray:
    """Validate atoms and return float64 ``[T, L, 4, 3]``."""
    if isinstance(atoms, torch.Tensor):
        atoms = atoms.detach().cpu().double().numpy()
    atoms = np.asarray(atoms, dtype=np.float64)
    if atoms.ndim == 3:
        atoms = atoms[None]
    if atoms.ndim != 4 or atoms.shape[-2:] != (4, 3) or atoms.shape[1] == 0:
        raise DataError(f"{path}: backbone atoms must be [L, 4, 3] or [T, L, 4, 3], "
                        f"got {tuple(atoms.shape)}")
    if not np.isfinite(atoms[..., :3, :]).all():
        raise DataError(f"{path}: N, CA or C coordinates are not finite")
    if np.abs(atoms[np.isfinite(atoms)]).max(initial=0.0) >= 1e4:
        raise DataError(f"{path}: coordinates too large for PDB columns (>= 10000 A)")
    return atoms


def residue_names(residue, length: int) -> list[str]:
    """``length`` three-letter names from ``"GLY"`` / ``"ALA"`` (every residue) or a sequence
    of standard names (one per residue)."""
    if isinstance(residue, str):
        if residue not in RESIDUES:
            raise ValueError(f"residue must be one of {RESIDUES}, got {residue!r}")
        return [residue] * length
    names = list(residue)
    if len(names) != length:
        raise ValueError(f"{len(names)} residue names for {length} residues")
    unknown = sorted({n for n in names if n not in THREE_TO_ONE})
    if unknown:
        raise ValueError(f"not standard amino-acid names: {unknown}")
    return names


def backbone_atom_records(atoms: np.ndarray, residue="GLY") -> list[tuple]:
    """Per model, the list of ``(res_index, atom_name, element, xyz)`` to write (NaN skipped;
    C-beta for every residue but glycine)."""
    names = residue_names(residue, atoms.shape[1])
    has_cb = np.array([n != "GLY" for n in names])
    models = []
    for coords in atoms:  # [L, 4, 3]
        if has_cb.any():
            t = torch.from_numpy(coords)
            cb = ideal_cb(t[:, 0], t[:, 1], t[:, 2]).numpy()  # [L, 3]
            cb[~has_cb] = np.nan
            coords = np.concatenate([coords, cb[:, None]], axis=1)  # [L, 5, 3]
        rows = []
        for i, res in enumerate(coords):
            for k, xyz in enumerate(res):
                if np.isfinite(xyz).all():
                    rows.append((i, _ATOM_NAMES[k], _ELEMENTS[k], xyz))
        models.append(rows)
    return models


def write_backbone_pdb(
    path: str | os.PathLike,
    atoms,
    *,
    residue="GLY",
    chain: str = "A",
    header: str = "DE NOVO PROTEIN",
) -> Path:
    """Write ``atoms`` ``[L, 4, 3]`` / ``[T, L, 4, 3]`` (angstrom) as a PDB file; returns path.
    ``residue``: ``"GLY"``, ``"ALA"`` or one three-letter name per residue."""
    path = Path(path)
    models_xyz = _as_models(atoms, path)
    models = backbone_atom_records(models_xyz, residue)
    names = residue_names(residue, models_xyz.shape[1])
    if len(chain) != 1:
        raise ValueError(f"chain must be one character, got {chain!r}")
    date = datetime.date.today().strftime("%d-%b-%y").upper()
    lines = [f"HEADER    {header[:40]:<40}{date:>9}   XXXX", CRYST1]
    multi = len(models) > 1
    for m, rows in enumerate(models):
        if multi:
            lines.append(f"MODEL     {m + 1:>4}")
        serial = 0
        for i, name, element, (x, y, z) in rows:
            serial += 1
            atom_name = f" {name:<3}" if len(name) < 4 else name
            lines.append(
                f"ATOM  {serial:>5} {atom_name} {names[i]} {chain}{i + 1:>4}    "
                f"{x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{0.0:6.2f}          {element:>2}"
            )
        last = rows[-1][0] + 1
        lines.append(f"TER   {serial + 1:>5}      {names[last - 1]} {chain}{last:>4}")
        if multi:
            lines.append("ENDMDL")
    lines.append(f"{'END':<80}")  # a fixed-width record: biopython reads columns 1-6
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def write_backbone_cif(
    path: str | os.PathLike,
    atoms,
    *,
    residue="GLY",
    chain: str = "A",
    header: str = "DE NOVO PROTEIN",
) -> Path:
    """Write ``atoms`` as an mmCIF file (``_atom_site`` loop, plus cell and symmetry);
    ``residue`` as in :func:`write_backbone_pdb`."""
    path = Path(path)
    models_xyz = _as_models(atoms, path)
    models = backbone_atom_records(models_xyz, residue)
    names = residue_names(residue, models_xyz.shape[1])
    name = path.name.split(".")[0] or "design"
    n_res = max(r[0] for r in models[0]) + 1
    lines = [
        f"data_{name}",
        "#",
        f"_entry.id {name}",
        f"_struct_keywords.entry_id {name}",
        f"_struct_keywords.pdbx_keywords '{header}'",
        "#",
        f"_cell.entry_id {name}",
        "_cell.length_a 1.000", "_cell.length_b 1.000", "_cell.length_c 1.000",
        "_cell.angle_alpha 90.00", "_cell.angle_beta 90.00", "_cell.angle_gamma 90.00",
        "#",
        f"_symmetry.entry_id {name}",
        "_symmetry.space_group_name_H-M 'P 1'",
        "#",
        "_entity.id 1", "_entity.type polymer",
        "#",
        "_entity_poly.entity_id 1", "_entity_poly.type 'polypeptide(L)'",
        "#",
        "_struct_asym.id " + chain, "_struct_asym.entity_id 1",
        "#",
        "loop_", "_chem_comp.id", "_chem_comp.type",
        *(f"{n} '{'peptide linking' if n == 'GLY' else 'L-peptide linking'}'"
          for n in sorted(set(names))),
        "#",
        "loop_", "_entity_poly_seq.entity_id", "_entity_poly_seq.num", "_entity_poly_seq.mon_id",
        *(f"1 {i + 1} {names[i]}" for i in range(n_res)),
        "#",
        "loop_",
        *(f"_pdbx_poly_seq_scheme.{k}" for k in (
            "asym_id", "entity_id", "seq_id", "mon_id", "ndb_seq_num", "pdb_seq_num",
            "auth_seq_num", "pdb_mon_id", "auth_mon_id", "pdb_strand_id", "pdb_ins_code",
            "hetero",
        )),
        *(f"{chain} 1 {i + 1} {names[i]} {i + 1} {i + 1} {i + 1} {names[i]} {names[i]} {chain} . n"
          for i in range(n_res)),
        "#",
        "loop_",
        *(f"_atom_site.{k}" for k in (
            "group_PDB", "id", "type_symbol", "label_atom_id", "label_alt_id", "label_comp_id",
            "label_asym_id", "label_entity_id", "label_seq_id", "pdbx_PDB_ins_code",
            "Cartn_x", "Cartn_y", "Cartn_z", "occupancy", "B_iso_or_equiv", "auth_seq_id",
            "auth_comp_id", "auth_asym_id", "auth_atom_id", "pdbx_PDB_model_num",
        )),
    ]
    serial = 0
    for m, rows in enumerate(models):
        for i, atom, element, (x, y, z) in rows:
            serial += 1
            lines.append(
                f"ATOM {serial} {element} {atom} . {names[i]} {chain} 1 {i + 1} ? "
                f"{x:.3f} {y:.3f} {z:.3f} 1.00 0.00 {i + 1} {names[i]} {chain} {atom} {m + 1}"
            )
    lines.append("#")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def write_backbone(path: str | os.PathLike, atoms, **kwargs) -> Path:
    """Write PDB or mmCIF by the suffix of ``path`` (``.cif`` / ``.mmcif`` -> mmCIF)."""
    if str(path).lower().endswith((".cif", ".mmcif")):
        return write_backbone_cif(path, atoms, **kwargs)
    return write_backbone_pdb(path, atoms, **kwargs)
