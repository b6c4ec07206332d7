"""Design protein backbones with a trained checkpoint (the bundled one by default).

    from protein.design import design
    report = design("designs/", lengths=(60, 100), num=8, steps=50, seed=0)

``demo(out_dir)`` is what ``make demo`` runs: a few designs with the bundled checkpoint,
evaluated (CA-CA, clashes, secondary structure, diversity, novelty against real chains) into
PDB files, ``designs.csv``, ``summary.json`` and PNG plots.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flow3d.errors import ConfigError, DataError
from flow3d.io import atomic_write_text

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = PROJECT_ROOT / "checkpoints" / "protein" / "tiny_reflow_guided"
# the bundled checkpoint trained with fold plans (--ss, --topology, --topology-from)
TOPOLOGY_CHECKPOINT = PROJECT_ROOT / "checkpoints" / "protein" / "tiny_topology"
REAL_REFERENCE = PROJECT_ROOT / ".." / "shared" / "data" / "proteins" / "ts50_pydssp" / "pdb"
# A real beta hairpin (TS50 3gknA, residues A107-122) for the motif-scaffolding demo
DEMO_MOTIF = (PROJECT_ROOT / "examples" / "protein" / "hairpin_3gknA.pdb", "A107-122@30", 80)


@dataclass
class DesignReport:
    """What :func:`design` wrote: design files (and trajectories), the designs, wall time."""

    out_dir: Path
    paths: list[Path]
    designs: list
    seconds: float
    checkpoint: Path
    motif: dict | None = None  # motif.json's content when a motif was scaffolded
    topology: dict | None = None  # topology.json's content when designs followed fold plans


def load_designer(checkpoint: str | Path | None = None, *, ema: bool = True, device="cpu"):
    """Load a protein checkpoint (default: the bundled
    ``checkpoints/protein/tiny_reflow_guided``)."""
    from flow3d.engine.checkpoint import load_model

    path = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    if not path.exists():
        raise DataError(f"{path}: checkpoint not found")
    loaded = load_model(path, ema=ema, device=device)
    if loaded.recipe.head != "protein":
        raise ConfigError(f"{path}: a {loaded.recipe.head!r} checkpoint, not a protein one")
    return loaded


def design(
    out_dir: str | Path,
    *,
    lengths: Sequence[int] = (100,),
    num: int = 8,
    steps: int = 50,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    fmt: str = "pdb",
    trajectory: bool = False,
    method: str | None = None,
    rot_rate: float | None = None,
    clash_guidance: float | None = None,
    guidance_iters: int | None = None,
    residue: str | None = None,
    batch_size: int | None = None,
    ema: bool = True,
    device: str = "cpu",
    progress: bool = False,
    motif: str | Path | None = None,
    motif_segments: str | None = None,
    ss: str | None = None,
    topology: str | Path | None = None,
    topology_from: str | Path | None = None,
) -> DesignReport:
    """Design ``num`` backbones per length and write them to ``out_dir``.

    Files: ``len{L}_{i}.pdb`` (or ``.cif``) with N, CA, C, O, HEADER and CRYST1;
    ``timings.json``; with ``trajectory`` the solver path as MODEL records in
    ``<out_dir>_trajectories/``. With ``motif`` (a PDB/mmCIF file) and ``motif_segments``
    (e.g. ``"A10-25@30"``, see :mod:`protein.motif`) every design scaffolds those residues,
    and ``motif.json`` records how each design holds them (:func:`protein.motif.motif_metrics`).

    Fold conditioning (:mod:`protein.topology`; one of the three; the default checkpoint is
    then the bundled ``tiny_topology``): ``ss`` a plan string of H/E/L (its length is the
    design length), ``topology`` a PDB/mmCIF file (``FILE`` or ``FILE:CHAIN``) whose
    secondary structure and element contacts every design follows (its length too), or
    ``topology_from`` a reference set (folder of structures or protein cache) from which each
    design draws a plan cropped to its length. ``topology.json`` records every design's plan
    and how well its DSSP follows it.
    """
    lengths = tuple(int(n) for n in lengths)
    if num < 1:
        raise ConfigError(f"--num must be at least 1, got {num}")
    if steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {steps}")
    if not lengths or min(lengths) < 2:
        raise ConfigError(f"lengths must be at least 2 residues, got {list(lengths)}")
    if clash_guidance is not None and not 0.0 <= clash_guidance <= 1.0:
        raise ConfigError(f"--clash-guidance must be in [0, 1], got {clash_guidance}")
    if guidance_iters is not None and guidance_iters < 1:
        raise ConfigError(f"--guidance-iters must be at least 1, got {guidance_iters}")
    if fmt not in ("pdb", "cif"):
        raise ConfigError(f"--format must be pdb or cif, got {fmt!r}")
    if (motif is None) != (motif_segments is None):
        raise ConfigError("--motif FILE and --motif-segments SPEC go together")
    plan = _fold_plan(ss, topology, topology_from)
    if plan is not None:
        if motif is not None:
            raise ConfigError("--motif and fold plans (--ss/--topology/--topology-from) cannot "
                              "be combined yet")
        if not isinstance(plan, list):
            lengths = (len(plan),)
        checkpoint = TOPOLOGY_CHECKPOINT if checkpoint is None else checkpoint
    motif_obj = None
    if motif is not None:
        from protein.motif import load_motif

        motif_obj = load_motif(motif, motif_segments)  # sampling checks it fits the lengths
    loaded = load_designer(checkpoint, ema=ema, device=device)
    overrides: dict = {"lengths": lengths, "steps": steps, "format": fmt}
    for key, value in (("method", method), ("rot_rate", rot_rate), ("residue", residue),
                       ("batch_size", batch_size), ("clash_guidance", clash_guidance),
                       ("guidance_iters", guidance_iters),
                       ("motif_guidance_iters", guidance_iters)):
        if value is not None:
            overrides[key] = value
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num * len(lengths), desc="designs", unit="design")
        overrides["progress"] = bar.update
    start = time.perf_counter()
    try:
        designs = loaded.sample(num, seed=seed, trajectory=trajectory, motif=motif_obj,
                                topology=plan, **overrides)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    head = loaded.head
    head.recipe = head.recipe.replace(sample=_replace(head.recipe.sample, overrides))
    paths = head.save_samples(designs, Path(out_dir), fmt=fmt)
    record = None
    if motif_obj is not None:
        record = _motif_record(designs, motif_obj)
        atomic_write_text(Path(out_dir) / "motif.json", json.dumps(record, indent=1) + "\n")
    plans = None
    if plan is not None:
        plans = _topology_record(designs)
        atomic_write_text(Path(out_dir) / "topology.json", json.dumps(plans, indent=1) + "\n")
    return DesignReport(Path(out_dir), paths, designs, seconds, Path(loaded.path), record,
                        plans)


def _fold_plan(ss, topology, topology_from):
    """The fold plan(s) asked for: a Topology, a list to draw from, or None."""
    from protein.topology import Topology, load_topology, reference_topologies

    given = [name for name, v in (("--ss", ss), ("--topology", topology),
                                  ("--topology-from", topology_from)) if v is not None]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)}: give one fold plan option")
    if ss is not None:
        return Topology.from_string(ss)
    if topology is not None:
        return load_topology(topology)
    if topology_from is not None:
        return reference_topologies(topology_from)
    return None


def _topology_record(designs) -> dict:
    """topology.json: per design its plan (H/E/L), where it came from, and how its DSSP
    (pydssp) and CAs follow it (:meth:`protein.topology.Topology.scores`)."""
    from protein.data.filters import secondary_structure
    from protein.topology import summarize_scores

    per = {}
    for d in designs:
        ss = secondary_structure(d.atoms)
        per[d.name] = {"source": d.topology.source, "plan": d.topology.string, "dssp": ss,
                       **d.topology.scores(ss, d.atoms[:, 1])}
    return {"mean": summarize_scores(list(per.values())), "designs": per}


def _motif_record(designs, motif) -> dict:
    """motif.json: the motif, and per design (and on average) how the design holds it."""
    import numpy as np

    from protein.motif import motif_metrics, summarize_motif_metrics

    per = {}
    for d in designs:
        per[d.name] = motif_metrics(d.atoms, motif, d.motif_positions)
        per[d.name]["positions"] = (np.asarray(d.motif_positions) + 1).tolist()  # 1-based
    return {
        "source": motif.source,
        "segments": motif.spec,
        # 1-based, as in the PDB files (each design's own under "designs" when drawn)
        "positions": (motif.positions + 1).tolist() if motif.placed else None,
        "sequence": motif.sequence,  # the motif's residues at those positions
        "mean": summarize_motif_metrics(list(per.values())),
        "designs": per,
    }


def _replace(cfg, overrides: dict):
    import dataclasses

    keep = {k: v for k, v in overrides.items() if k in {f.name for f in dataclasses.fields(cfg)}}
    return dataclasses.replace(cfg, **keep)


def demo(out_dir: str | Path, *, num: int = 3, lengths: Sequence[int] = (60, 100),
         steps: int = 50, seed: int = 0, progress: bool = True) -> dict:
    """``make demo``: design a few backbones with the bundled checkpoint and evaluate them
    against real chains (TS50) when the shared data is present, then scaffold a real beta
    hairpin (``examples/protein``) into ``out_dir/motif`` (PDB files and ``motif.json``).
    Returns the eval summary."""
    from protein.eval import run_eval

    out_dir = Path(out_dir)
    report = design(out_dir / "designs", lengths=lengths, num=num, steps=steps, seed=seed,
                    progress=progress)
    reference = REAL_REFERENCE if REAL_REFERENCE.is_dir() else None
    summary = run_eval(report.out_dir, reference, out_dir / "eval", max_reference=16,
                       reference_limit=20, progress=progress)
    summary["design_seconds"] = report.seconds
    motif_file, segments, length = DEMO_MOTIF
    scaffolds = design(out_dir / "motif", lengths=(length,), num=num, steps=steps, seed=seed,
                       motif=motif_file, motif_segments=segments, progress=progress)
    summary["motif"] = scaffolds.motif["mean"]
    return summary


def bundle_checkpoint(src: str | Path, dest: str | Path = DEFAULT_CHECKPOINT, *,
                      half: bool = False) -> Path:
    """A slim, ready-to-sample copy of a training checkpoint (EMA weights, recipe, step; see
    :func:`flow3d.engine.checkpoint.bundle_checkpoint`)."""
    from flow3d.engine.checkpoint import bundle_checkpoint as bundle

    return bundle(src, dest, half=half)
