"""Design protein backbones with a trained checkpoint (the bundled one by default).

    from protein.design import design
    from protein.settings import DesignSettings, SamplerSettings
    report = design(DesignSettings(lengths=(60, 100), num=8, seed=0,
                                   sampler=SamplerSettings(steps=50)), "designs/")

A run is checked before anything is sampled or written (:func:`prepare_design`): the settings
(:class:`protein.settings.DesignSettings`), the output folder (empty, or ``overwrite`` to empty
it, or ``resume``), the motif and fold-plan files, the checkpoint, and whether a batch fits in
memory (:func:`protein.budget.check_budget`). It then writes ``run.json`` (the resolved
settings), and each design as soon as its batch is complete (atomically), followed by the
records (:mod:`protein.records`). A run that is killed leaves complete designs and records;
``resume`` continues it with the same settings and makes exactly the designs an uninterrupted
run would have made (each batch draws from its own seeded stream).

``demo(out_dir)`` is what ``make demo`` runs: a few designs with the bundled checkpoint,
evaluated (CA-CA, clashes, secondary structure, diversity, novelty against real chains) into
PDB files, ``designs.csv``, ``summary.json`` and PNG plots.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from flow3d.engine.checkpoint import LoadedModel, find_checkpoint, load_model, resolve_path
from flow3d.engine.checkpoint import bundle_checkpoint as _bundle
from flow3d.errors import ConfigError, DataError
from flow3d.io import check_output_dir, is_temporary, prepare_output_dir
from protein.budget import check_budget
from protein.eval import run_eval
from protein.head import design_name, trajectory_dir, write_design
from protein.motif import Motif, load_motif
from protein.records import RUN_FILE, DesignRecords, read_json, write_json
from protein.settings import DesignSettings, EvalSettings, SamplerSettings
from protein.sheets import guidance_record
from protein.topology import Topology, load_topology, reference_topologies

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# the bundled plan-free checkpoint (flow3d protein design --no-plan, motif scaffolding)
DEFAULT_CHECKPOINT = PROJECT_ROOT / "checkpoints" / "protein" / "tiny_reflow_guided"
# the bundled checkpoint trained with fold plans: what `flow3d protein design` uses
TOPOLOGY_CHECKPOINT = PROJECT_ROOT / "checkpoints" / "protein" / "tiny_topology"
# a checkpoint's fold plans to draw from when a design is given none (protein.topology
# save_plans; `flow3d protein plans` writes it)
PLAN_LIBRARY = "plans.npz"
REAL_REFERENCE = PROJECT_ROOT / ".." / "shared" / "data" / "proteins" / "ts50_pydssp" / "pdb"
# A real beta hairpin (TS50 3gknA, residues A107-122) for the motif-scaffolding demo
DEMO_MOTIF = (PROJECT_ROOT / "examples" / "protein" / "hairpin_3gknA.pdb", "A107-122@30", 80)


@dataclass
class DesignReport:
    """What a run wrote: every design file of the folder (``paths``, earlier ones of a
    resumed run included), the designs made by this call, its wall time, the checkpoint, how
    many designs were already complete, and the motif.json / topology.json records."""

    out_dir: Path
    paths: list[Path]
    designs: list
    seconds: float
    checkpoint: Path
    resumed: int = 0
    motif: dict | None = None  # motif.json's content when a motif was scaffolded
    topology: dict | None = None  # topology.json's content when designs followed fold plans


def load_designer(checkpoint: str | Path | None = None, *, ema: bool = True,
                  device: str = "cpu") -> LoadedModel:
    """Load a protein checkpoint (default: the bundled
    ``checkpoints/protein/tiny_reflow_guided``)."""
    path = resolve_path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    if not path.exists():  # relative paths are also looked up from the project root
        raise DataError(f"--checkpoint {checkpoint}: checkpoint not found")
    loaded = load_model(path, ema=ema, device=device)
    if loaded.recipe.head != "protein":
        raise ConfigError(f"--checkpoint {path}: a {loaded.recipe.head!r} checkpoint, not a "
                          "protein one")
    return loaded


@dataclass
class DesignRun:
    """A checked design run (:func:`prepare_design`); nothing is written until
    :meth:`execute`. ``settings`` are resolved; ``previous`` holds the records of the designs
    an earlier run completed (``resume``); ``warning`` is one line to show the user (a run
    that will take hours), or ``None``."""

    settings: DesignSettings
    out: Path
    loaded: LoadedModel
    motif: Motif | None = None
    plan: Topology | list[Topology] | None = None
    previous: DesignRecords = field(default_factory=DesignRecords)
    overwrite: bool = False
    warning: str | None = None

    def execute(self, progress: bool = False) -> DesignReport:
        """Create (or empty) the folder, write ``run.json``, then every missing design as
        soon as its batch is complete, each batch followed by the records."""
        s, out = self.settings, self.out
        prepare_output_dir(out, overwrite=self.overwrite)
        if s.trajectory:
            prepare_output_dir(trajectory_dir(out), overwrite=self.overwrite)
        record = {"command": "flow3d protein design", "checkpoint_step": self.loaded.step,
                  "settings": s.to_dict()}
        if _steers_sheets(s):
            record["sheet_guidance_code"] = guidance_record()
        write_json(out / RUN_FILE, record)
        order = [design_name(length, i) for length, i in s.names()]
        records = self.previous.only(order)
        resumed = len(records.timings)
        todo = [(length, start, size) for length, start, size in s.batches()
                if not all(records.complete(design_name(length, start + k))
                           for k in range(size))]
        designs: list = []
        bar = _Progress(progress, s, len(todo), resumed)
        written = {"motif": None, "topology": None}
        start = time.perf_counter()
        try:
            for batch in self.loaded.head.generate(
                    self.loaded.model, s, motif=self.motif, topology=self.plan, batches=todo,
                    on_step=bar.step):
                for d in batch:
                    if records.complete(d.name):  # kept from the earlier run
                        continue
                    write_design(d, out, fmt=s.format, residue=s.residue)
                    records.add(d, self.motif)
                    designs.append(d)
                written = records.write(out, order, self.motif)
                bar.written(len(records.timings))
            if not todo:  # nothing left to make: the records are complete already
                written = records.write(out, order, self.motif)
        finally:
            bar.close()
        return DesignReport(out, [out / f"{name}.{s.format}" for name in order], designs,
                            time.perf_counter() - start, Path(s.checkpoint), resumed,
                            written["motif"], written["topology"])


class _Progress:
    """A progress bar over solver steps (fixed-step methods), with the designs written."""

    def __init__(self, enabled: bool, settings: DesignSettings, batches: int, done: int):
        fixed = settings.sampler.method != "dopri5"
        self.total = len(settings.names())
        self.bar = tqdm(total=batches * settings.sampler.steps if fixed else None,
                        desc="designing", unit="step", disable=not enabled)
        self.written(done)

    def step(self) -> None:
        self.bar.update(1)

    def written(self, n: int) -> None:
        self.bar.set_postfix_str(f"{n}/{self.total} designs written", refresh=False)

    def close(self) -> None:
        self.bar.close()


def prepare_design(settings: DesignSettings, out_dir: str | Path | None, *,
                   overwrite: bool = False, resume: bool = False,
                   device: str = "cpu") -> DesignRun:
    """Check a run before any sampling: the output folder (the output rule of
    :mod:`flow3d.io`; ``resume`` continues the run recorded in its ``run.json``), the fold
    plan and motif files, the checkpoint (loaded), the resolved settings against an earlier
    run's, and the memory a batch needs. Raises a one-line error naming the option at
    fault; writes nothing."""
    if overwrite and resume:
        raise ConfigError("--overwrite and --resume: give one (replace the folder's designs, "
                          "or continue the run in it)")
    _check_device(device)
    settings = with_plan_library(settings)
    if (settings.sampler.sheet_guidance or 0) > 0 and not settings.plan_options():
        why = "leave --no-plan out" if settings.no_plan else "or a checkpoint with plans.npz"
        raise ConfigError("--sheet-guidance: it steers the strands and helices of a fold "
                          f"plan; give --topology-from, --topology or --ss ({why})")
    out = check_output_dir(out_dir, "--out", overwrite=overwrite, resume=resume,
                           resumable=True)
    if settings.trajectory:
        check_output_dir(trajectory_dir(out), "--trajectory", overwrite=overwrite,
                         resume=resume, resumable=True)
    earlier = _earlier_run(out) if resume else None
    plan = _fold_plan(settings)
    motif = None if settings.motif is None else load_motif(settings.motif,
                                                          settings.motif_segments)
    default = DEFAULT_CHECKPOINT if plan is None else TOPOLOGY_CHECKPOINT
    loaded = load_designer(settings.checkpoint or default, ema=settings.ema, device=device)
    if settings.pair_precision is not None:
        loaded.model.set_pair_precision(settings.pair_precision)
    resolved = settings.resolved(loaded.recipe.sample, Path(loaded.path).resolve(),
                                 plan_length=len(plan) if isinstance(plan, Topology) else None)
    if plan is not None and not loaded.recipe.model.topology:
        raise ConfigError(f"--checkpoint {resolved.checkpoint}: trained without fold plans "
                          f"(model.topology is false), so {settings.plan_options()[0]} cannot "
                          "be followed; use checkpoints/protein/tiny_topology")
    if motif is not None:
        for length in resolved.lengths:
            motif.check_length(length)
    longest = max((len(t) for t in plan), default=0) if isinstance(plan, list) else None
    if longest is not None and max(resolved.lengths) > longest:
        option = "--length" if len(resolved.lengths) == 1 else "--lengths"
        raise ConfigError(f"{option} {max(resolved.lengths)}: the plans drawn from "
                          f"{resolved.topology_from} go up to {longest} residues; pass "
                          "--no-plan or --topology-from with longer chains")
    warning = check_budget(resolved, loaded.recipe.model, device)
    previous = DesignRecords.empty(motif=motif is not None, topology=plan is not None)
    if earlier is not None:
        _same_run(resolved, earlier, out)
        previous = _complete_designs(out, resolved)
    return DesignRun(resolved, out, loaded, motif, plan, previous, overwrite, warning)


def design(settings: DesignSettings, out_dir: str | Path, *, overwrite: bool = False,
           resume: bool = False, device: str = "cpu", progress: bool = False) -> DesignReport:
    """Check (:func:`prepare_design`) and run a design job; see the module docstring.

    Files: ``len{L}_{i}.pdb`` (or ``.cif``) with N, CA, C, O, HEADER and CRYST1,
    ``run.json``, ``timings.json``; with ``settings.trajectory`` the solver path as MODEL
    records in ``<out_dir>_trajectories/``; with a motif ``motif.json``
    (:func:`protein.motif.motif_metrics` per design); with fold plans ``topology.json`` (every
    design's plan and how well its DSSP follows it)."""
    run = prepare_design(settings, out_dir, overwrite=overwrite, resume=resume, device=device)
    if run.warning:
        warnings.warn(run.warning, stacklevel=2)
    return run.execute(progress=progress)


def _check_device(device: str) -> None:
    try:
        torch.empty(0, device=torch.device(device))
    except (RuntimeError, AssertionError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--device {device}: not usable here ({first})") from None


def _earlier_run(out: Path) -> dict | None:
    """The ``run.json`` of the run ``--resume`` continues; ``None`` for an empty or missing
    folder (a resumed run that never started starts now)."""
    path = out / RUN_FILE
    if path.is_file():
        record = read_json(path, "design run record")
        if not isinstance(record.get("settings"), dict):
            raise DataError(f"{path}: not a design run record (no \"settings\" object)")
        return record
    if out.is_dir() and any(not is_temporary(c) for c in out.iterdir()):
        raise DataError(f"--resume {out}: no {RUN_FILE}, so not a run of flow3d protein design "
                        "to continue; pass --overwrite to replace its contents")
    return None


def _same_run(settings: DesignSettings, earlier: dict, out: Path) -> None:
    """Refuse to resume a run made with other settings (one line naming the first)."""
    try:
        before = DesignSettings.from_dict(earlier["settings"])
    except (ConfigError, TypeError) as e:
        raise DataError(f"{out / RUN_FILE}: unreadable design settings ({e})") from None
    diffs = settings.differences(before)
    if diffs:
        option, now, then = diffs[0]
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise ConfigError(f"--resume {out}: that run used {option} {then}, this one {now}"
                          f"{more}; resume with the same settings or pass --overwrite")
    if not _steers_sheets(settings):
        return
    then, now = earlier.get("sheet_guidance_code") or {}, guidance_record()
    changed = next((k for k in now if then.get(k) != now[k]), None)
    if changed is not None:
        raise ConfigError(f"--resume {out}: that run's sheet guidance had {changed} "
                          f"{then.get(changed, '(not recorded)')}, this flow3d's {now[changed]}, "
                          "so its designs would not match these; pass --overwrite or a new --out")


def _steers_sheets(settings: DesignSettings) -> bool:
    """Whether a resolved run follows fold plans with sheet guidance on."""
    return (settings.sampler.sheet_guidance or 0) > 0 and bool(settings.plan_options())


def _complete_designs(out: Path, settings: DesignSettings) -> DesignRecords:
    """The records of the designs an earlier run completed: structure file (and trajectory)
    present and an entry in every record. The others are made again."""
    records = DesignRecords.read(out, motif=settings.motif is not None,
                                 topology=bool(settings.plan_options()))
    done = []
    for length, i in settings.names():
        name = design_name(length, i)
        files = [out / f"{name}.{settings.format}"]
        if settings.trajectory:
            files.append(trajectory_dir(out) / f"{name}_traj.pdb")
        if records.complete(name) and all(f.is_file() for f in files):
            done.append(name)
    return records.only(done)


def with_plan_library(settings: DesignSettings) -> DesignSettings:
    """The settings to run: a design given no fold plan (and no motif, no ``--no-plan``)
    draws its plan from the checkpoint's plan library (:data:`PLAN_LIBRARY`; the bundled
    fold-plan model's when no checkpoint is named), recorded as ``topology_from``. A
    checkpoint without a library designs without plans, as before. ``--checkpoint`` is found
    as the model loader finds it (:func:`flow3d.engine.checkpoint.find_checkpoint`: a run
    folder means its latest checkpoint; a relative path is also looked up from the project
    root); the library sits in the checkpoint's folder or in the folder named."""
    if settings.plan_options() or settings.motif is not None or settings.no_plan:
        return settings
    folders = [TOPOLOGY_CHECKPOINT]
    if settings.checkpoint:
        try:
            found = find_checkpoint(settings.checkpoint)
        except FileNotFoundError:
            raise DataError(f"--checkpoint {settings.checkpoint}: checkpoint not found") from None
        except DataError as e:
            raise DataError(f"--checkpoint {e}") from None
        folders = [found, resolve_path(settings.checkpoint)]
    library = next((f / PLAN_LIBRARY for f in folders if (f / PLAN_LIBRARY).is_file()), None)
    if library is None:
        return settings
    return replace(settings, topology_from=str(library.resolve()))


def _fold_plan(settings: DesignSettings) -> Topology | list[Topology] | None:
    """The fold plan(s) asked for: a Topology, a list to draw from, or None."""
    if settings.ss is not None:
        return Topology.from_string(settings.ss)
    if settings.topology is not None:
        return load_topology(settings.topology)
    if settings.topology_from is not None:
        return reference_topologies(settings.topology_from)
    return None


def demo(out_dir: str | Path, *, num: int = 3, lengths: Sequence[int] = (60, 100),
         steps: int = 50, seed: int = 0, progress: bool = True) -> dict:
    """``make demo``: design a few backbones as ``flow3d protein design`` does by default
    (plans drawn from the fold-plan checkpoint's library, sheet guidance) and evaluate them
    against real chains (TS50) when the shared data is present, then scaffold a real beta
    hairpin (``examples/protein``) into ``out_dir/motif`` (PDB files and ``motif.json``).
    A demo replaces its own earlier output. Returns the eval summary."""
    out_dir = Path(out_dir)
    sampler = SamplerSettings(steps=steps)
    report = design(DesignSettings(lengths=tuple(lengths), num=num, seed=seed, sampler=sampler),
                    out_dir / "designs", overwrite=True, progress=progress)
    reference = str(REAL_REFERENCE) if REAL_REFERENCE.is_dir() else None
    summary = run_eval(EvalSettings(str(report.out_dir), reference, str(out_dir / "eval"),
                                    max_reference=16, reference_limit=20),
                       overwrite=True, progress=progress)
    summary["design_seconds"] = report.seconds
    motif_file, segments, length = DEMO_MOTIF
    scaffolds = design(DesignSettings(lengths=(length,), num=num, seed=seed, sampler=sampler,
                                      motif=str(motif_file), motif_segments=segments),
                       out_dir / "motif", overwrite=True, progress=progress)
    summary["motif"] = scaffolds.motif["mean"]
    return summary


def bundle_checkpoint(src: str | Path, dest: str | Path = DEFAULT_CHECKPOINT, *,
                      half: bool = False) -> Path:
    """A slim, ready-to-sample copy of a training checkpoint (EMA weights, recipe, step; see
    :func:`flow3d.engine.checkpoint.bundle_checkpoint`)."""
    return _bundle(src, dest, half=half)

