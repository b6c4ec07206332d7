"""One frozen settings object per protein task, validated once, with errors naming the option.

``flow3d protein design`` builds one :class:`DesignSettings` from its flags (``protein/cli.py``)
and ``flow3d protein eval`` one :class:`EvalSettings`; Python callers build the same objects.
Each checks its values in ``__post_init__`` and raises a one-line
:class:`~flow3d.errors.ConfigError` that names the command-line option, e.g. ``--steps = 0:
must be at least 1``, before any checkpoint is read or any file written.

Sampling settings left ``None`` mean "what the checkpoint's recipe says" (its ``sample``
section, :class:`protein.head.ProteinSampleConfig`): :meth:`DesignSettings.resolved` fills them
in once the checkpoint is loaded. The resolved object is what the sampler receives
(:class:`SamplerSettings` for the flow) and what a design folder records in ``run.json``, so
``--resume`` can tell whether it continues the same run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flow3d.core.solvers import SOLVERS
from flow3d.errors import ConfigError
from flow3d.options import check_float, check_int
from protein.constants import LOCAL_MIN_DIST_MAX_ANG, LOCAL_SEPARATIONS
from protein.model.trunk import PAIR_PRECISIONS

__all__ = ["DesignSettings", "EvalSettings", "SamplerSettings"]

# Bounds of the command-line numbers; each refuses values that could only be a typo.
STEPS_MAX = 10_000  # solver steps (the bundled models need 10-100)
NUM_MAX = 10_000  # designs per length
LENGTH_MIN = 2
LENGTH_MAX = 9_999  # PDB residue numbers have four columns
LENGTHS_MAX = 100  # different lengths in one run
BATCH_MAX = 4_096
GUIDANCE_ITERS_MAX = 1_000
ROT_RATE_MAX = 1_000.0
SEED_MAX = 2**32 - 1
DIVERSITY_MAX = 2_000  # designs TM-aligned pairwise: n^2 / 2 alignments of ~30 ms
DEFAULT_LENGTHS = (100,)
DEFAULT_STEPS = 50  # the command line's default (the bundled recipes say the same)

ROT_SCHEDULES = ("exp", "linear")
TRANS_NOISES = ("model", "length")  # protein.flow.ProteinFlow.trans_std
TRANS_NOISE_SCALE_MAX = 10.0
SHEET_GUIDANCE_MAX = 10.0  # x the tuned sheet energy (protein.sheets); 1 is the tuned one
RESIDUES = ("GLY", "ALA")
FORMATS = ("pdb", "cif")
SS_METHODS = ("pydssp", "mkdssp", "pymol", "auto")


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # frozen: store the checked (normalised) value


def _choice(value: Any, option: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{option} {value!r}: use one of {', '.join(choices)}")


def _text(value: Any, option: str, what: str = "a path") -> None:
    if not isinstance(value, str | Path):
        raise ConfigError(f"{option} = {value!r}: expected {what}")
    if not str(value).strip():
        raise ConfigError(f"{option}: {what} is required (got an empty string)")


def _flag(value: Any, option: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{option} = {value!r}: expected true or false")


@dataclass(frozen=True)
class SamplerSettings:
    """How the flow integrates each batch (:meth:`protein.flow.ProteinFlow.sample`).

    ``None`` fields are the checkpoint's (:meth:`resolved`); the flow needs them all set.
    ``rot_schedule`` and ``guidance_window`` have no command-line flag (recipe keys).
    """

    steps: int | None = None
    method: str | None = None  # a flow3d.core.solvers method
    rot_schedule: str | None = None  # "exp" (ReQFlow/FrameFlow sampling) | "linear"
    rot_rate: float | None = None  # exponential schedule rate (capped at steps)
    clash_guidance: float | None = None  # strength in [0, 1]; 0 = off
    guidance_window: tuple[float, float] | None = None  # times t at which guidance acts
    guidance_iters: int | None = None  # gradient steps of clash guidance per evaluation
    # the translation noise sampling starts from: "model", the prior the model was trained
    # with; "length", a cloud whose Rg follows the real chains' law at each length; either
    # times trans_noise_scale (protein.flow.ProteinFlow.trans_std)
    trans_noise: str | None = None
    trans_noise_scale: float | None = None
    # clash guidance's floors for CA pairs 2, 3, 4 residues apart, angstrom (0: none of its
    # own); protein.flow.clash_floors
    local_min_dist: tuple[float, ...] | None = None
    # > 0: steer planned strand pairs into H-bonded sheets (protein.sheets; fold plans only)
    sheet_guidance: float | None = None

    def __post_init__(self) -> None:
        if self.steps is not None:
            _set(self, "steps", check_int(self.steps, "--steps", lo=1, hi=STEPS_MAX))
        if self.method is not None:
            _choice(self.method, "--method", SOLVERS)
        if self.rot_schedule is not None:
            _choice(self.rot_schedule, "sample.rot_schedule", ROT_SCHEDULES)
        if self.rot_rate is not None:
            _set(self, "rot_rate", check_float(self.rot_rate, "--rot-rate", lo=0.0,
                                               hi=ROT_RATE_MAX, lo_open=True))
        if self.clash_guidance is not None:
            _set(self, "clash_guidance",
                 check_float(self.clash_guidance, "--clash-guidance", lo=0.0, hi=1.0))
        if self.guidance_window is not None:
            _set(self, "guidance_window", _window(self.guidance_window))
        if self.guidance_iters is not None:
            _set(self, "guidance_iters", check_int(self.guidance_iters, "--guidance-iters",
                                                   lo=1, hi=GUIDANCE_ITERS_MAX))
        if self.trans_noise is not None:
            _choice(self.trans_noise, "--trans-noise", TRANS_NOISES)
        if self.trans_noise_scale is not None:
            _set(self, "trans_noise_scale",
                 check_float(self.trans_noise_scale, "--trans-noise-scale", lo=0.0,
                             hi=TRANS_NOISE_SCALE_MAX, lo_open=True))
        if self.local_min_dist is not None:
            _set(self, "local_min_dist", local_min_dist(self.local_min_dist))
        if self.sheet_guidance is not None:
            _set(self, "sheet_guidance", check_float(self.sheet_guidance, "--sheet-guidance",
                                                     lo=0.0, hi=SHEET_GUIDANCE_MAX))

    @property
    def is_resolved(self) -> bool:
        return all(getattr(self, f.name) is not None for f in dataclasses.fields(self))

    def resolved(self, defaults: Any, *, motif: bool = False) -> SamplerSettings:
        """Fill the unset fields from a recipe's ``sample`` section ``defaults``; with a
        ``motif``, clash guidance takes ``defaults.motif_guidance_iters`` steps."""
        fill = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is None}
        if self.guidance_iters is None and motif:
            fill["guidance_iters"] = defaults.motif_guidance_iters
        return dataclasses.replace(self, **fill)


def local_min_dist(value: Any, option: str = "--local-min-dist") -> tuple[float, ...]:
    """One floor per :data:`~protein.constants.LOCAL_SEPARATIONS` (angstrom, 0 = none), from
    one number for all of them or one each."""
    n = len(LOCAL_SEPARATIONS)
    values = [value] * n if isinstance(value, int | float) else value
    if isinstance(values, str) or not hasattr(values, "__len__") or len(values) != n:
        raise ConfigError(f"{option} = {value!r}: expected {n} distances in angstrom (CA pairs "
                          f"{', '.join(map(str, LOCAL_SEPARATIONS))} apart; 0 = none)")
    return tuple(check_float(v, option, lo=0.0, hi=LOCAL_MIN_DIST_MAX_ANG) for v in values)


def _window(value: Any) -> tuple[float, float]:
    try:
        start, end = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"sample.guidance_window = {value!r}: expected [start, end]") from None
    if not 0.0 <= start < end <= 1.0:
        raise ConfigError(f"sample.guidance_window = [{start:g}, {end:g}]: must satisfy "
                          "0 <= start < end <= 1")
    return start, end


@dataclass(frozen=True)
class DesignSettings:
    """Everything that decides what ``flow3d protein design`` writes (one field per flag).

    ``lengths`` ``None``: 100 residues, or the fold plan's length (``--ss``, ``--topology``).
    ``batch_size``, ``residue``, ``checkpoint`` and the ``sampler`` fields ``None``: the
    checkpoint's recipe (``checkpoint`` ``None``: the bundled fold-plan model, which draws a
    plan for each design from its plan library unless ``ss``/``topology``/``topology_from``
    give one; with ``no_plan`` or a motif, the bundled plan-free model). Designs of one batch
    share a
    random stream seeded by ``(seed, length, first index)``, so ``batch_size`` is part of
    what a run is. File fields (``motif``, ``topology``, ...) are paths as given.
    """

    lengths: tuple[int, ...] | None = None
    num: int = 8  # designs per length
    seed: int = 0
    sampler: SamplerSettings = SamplerSettings(steps=DEFAULT_STEPS)
    batch_size: int | None = None
    residue: str | None = None  # "GLY" | "ALA" in the written files
    format: str = "pdb"  # "pdb" | "cif"
    trajectory: bool = False  # also write each solver path (<out>_trajectories/)
    motif: str | None = None  # a PDB/mmCIF file, with motif_segments (protein.motif)
    motif_segments: str | None = None
    ss: str | None = None  # fold plans (protein.topology): a plan string, ...
    topology: str | None = None  # ... a chain to follow (FILE[:CHAIN]), ...
    topology_from: str | None = None  # ... or a reference set to draw plans from
    # no plan at all: without the options above, design draws plans from the checkpoint's
    # plan library (protein.design.PLAN_LIBRARY) unless this is set
    no_plan: bool = False
    checkpoint: str | None = None
    ema: bool = True
    # the trunk's pair products, "auto" | "fp32" | "bf16" (protein.model.TrunkConfig.
    # pair_precision); None: the checkpoint recipe's ("auto" unless it says otherwise)
    pair_precision: str | None = None

    def __post_init__(self) -> None:
        if self.pair_precision is not None:
            _choice(self.pair_precision, "--pair-precision", PAIR_PRECISIONS)
        if self.lengths is not None:
            _set(self, "lengths", _lengths(self.lengths))
        _set(self, "num", check_int(self.num, "--num", lo=1, hi=NUM_MAX))
        _set(self, "seed", check_int(self.seed, "--seed", lo=0, hi=SEED_MAX))
        if not isinstance(self.sampler, SamplerSettings):
            raise ConfigError(f"sampler = {self.sampler!r}: expected SamplerSettings")
        if self.batch_size is not None:
            _set(self, "batch_size", check_int(self.batch_size, "--batch-size", lo=1,
                                               hi=BATCH_MAX))
        if self.residue is not None:
            _choice(self.residue, "--residue", RESIDUES)
        _choice(self.format, "--format", FORMATS)
        _flag(self.trajectory, "--trajectory")
        _flag(self.ema, "--no-ema")
        _flag(self.no_plan, "--no-plan")
        for option, value, what in self._texts():
            if value is not None:
                _text(value, option, what)
        if (self.motif is None) != (self.motif_segments is None):
            raise ConfigError("--motif FILE and --motif-segments SPEC go together")
        plans = self.plan_options()
        if len(plans) > 1:
            raise ConfigError(f"{' and '.join(plans)}: give one fold plan option")
        if plans and self.no_plan:
            raise ConfigError(f"--no-plan and {plans[0]}: give one")
        if plans and self.motif is not None:
            raise ConfigError(f"--motif and {plans[0]}: motifs and fold plans cannot be "
                              "combined yet")

    def _texts(self) -> list[tuple[str, Any, str]]:
        return [("--motif", self.motif, "a file"),
                ("--motif-segments", self.motif_segments, "a segment list"),
                ("--ss", self.ss, "a plan string"), ("--topology", self.topology, "a file"),
                ("--topology-from", self.topology_from, "a folder or cache"),
                ("--checkpoint", self.checkpoint, "a checkpoint folder")]

    def plan_options(self) -> list[str]:
        """The fold plan options given (at most one once validated)."""
        return [o for o, v in (("--ss", self.ss), ("--topology", self.topology),
                               ("--topology-from", self.topology_from)) if v is not None]

    @property
    def is_resolved(self) -> bool:
        """Ready to sample: lengths, sampler, batch size and residue set."""
        return (self.lengths is not None and self.sampler.is_resolved
                and None not in (self.batch_size, self.residue))

    def resolved(self, defaults: Any, checkpoint: str | Path,
                 plan_length: int | None = None) -> DesignSettings:
        """The settings with every ``None`` filled in: the sampler, batch size and residue
        from a recipe's ``sample`` section ``defaults``, the ``checkpoint`` path used, and the
        lengths (``plan_length``: a fold plan's own length, which ``lengths`` must not
        contradict)."""
        lengths = self.lengths
        if plan_length is not None:
            if lengths is not None and lengths != (plan_length,):
                raise ConfigError(f"--length {','.join(map(str, lengths))}: "
                                  f"{self.plan_options()[0]} sets the length "
                                  f"({plan_length} residues); leave --length out")
            lengths = (plan_length,)
        return dataclasses.replace(
            self,
            lengths=lengths or DEFAULT_LENGTHS,
            sampler=self.sampler.resolved(defaults, motif=self.motif is not None),
            batch_size=defaults.batch_size if self.batch_size is None else self.batch_size,
            residue=defaults.residue if self.residue is None else self.residue,
            checkpoint=str(checkpoint),
        )

    def names(self) -> list[tuple[int, int]]:
        """``(length, index)`` of every design, in the order a run makes them."""
        return [(length, i) for length in self.lengths for i in range(self.num)]

    def batches(self) -> list[tuple[int, int, int]]:
        """``(length, first index, size)`` of every batch, in the order a run samples them."""
        return [(length, start, min(self.batch_size, self.num - start))
                for length in self.lengths for start in range(0, self.num, self.batch_size)]

    def to_dict(self) -> dict:
        """JSON-ready (``run.json``): tuples as lists, the sampler as a nested mapping."""
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> DesignSettings:
        """Inverse of :meth:`to_dict` (what ``--resume`` reads back)."""
        data = dict(data)
        sampler = dict(data.pop("sampler", {}))
        if sampler and "trans_noise" not in sampler:
            # written before the setting existed: such runs started from the model's noise
            sampler.update(trans_noise="model", trans_noise_scale=1.0)
        if sampler and "local_min_dist" not in sampler:  # likewise: no local floors then
            sampler["local_min_dist"] = (0.0,) * len(LOCAL_SEPARATIONS)
        if sampler and "sheet_guidance" not in sampler:  # likewise: no sheet guidance then
            sampler["sheet_guidance"] = 0.0
        if "no_plan" not in data:  # written before design drew plans by default: a run
            # without any plan (and no motif) is what --no-plan now makes
            data["no_plan"] = data.get("motif") is None and not any(
                data.get(k) for k in ("ss", "topology", "topology_from"))
        if sampler.get("local_min_dist") is not None:
            sampler["local_min_dist"] = tuple(sampler["local_min_dist"])
        if sampler.get("guidance_window") is not None:
            sampler["guidance_window"] = tuple(sampler["guidance_window"])
        if data.get("lengths") is not None:
            data["lengths"] = tuple(data["lengths"])
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown design setting {unknown[0]!r}")
        return cls(sampler=SamplerSettings(**sampler), **data)

    def differences(self, other: DesignSettings) -> list[tuple[str, str, str]]:
        """``(option, this value, other's value)`` for every setting that differs."""
        mine, theirs = _flat(self.to_dict()), _flat(other.to_dict())
        return [(OPTION_NAMES.get(k, k), _show(mine.get(k)), _show(theirs.get(k)))
                for k in mine if mine.get(k) != theirs.get(k)]


OPTION_NAMES = {
    "lengths": "--length", "num": "--num", "seed": "--seed", "sampler.steps": "--steps",
    "sampler.method": "--method", "sampler.rot_schedule": "sample.rot_schedule",
    "sampler.rot_rate": "--rot-rate", "sampler.clash_guidance": "--clash-guidance",
    "sampler.guidance_window": "sample.guidance_window",
    "sampler.guidance_iters": "--guidance-iters", "sampler.trans_noise": "--trans-noise",
    "sampler.trans_noise_scale": "--trans-noise-scale",
    "sampler.local_min_dist": "--local-min-dist", "sampler.sheet_guidance": "--sheet-guidance",
    "batch_size": "--batch-size",
    "residue": "--residue", "format": "--format", "trajectory": "--trajectory",
    "motif": "--motif", "motif_segments": "--motif-segments", "ss": "--ss",
    "topology": "--topology", "topology_from": "--topology-from", "no_plan": "--no-plan",
    "checkpoint": "--checkpoint", "ema": "--no-ema", "pair_precision": "--pair-precision",
}  # fmt: skip


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "(unset)" if value is None else str(value)


def _lengths(value: Any) -> tuple[int, ...]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = (value,)
    try:
        values = tuple(value)
    except TypeError:
        raise ConfigError(f"--lengths = {value!r}: expected whole numbers") from None
    if not values:
        raise ConfigError("--lengths: give at least one length")
    if len(values) > LENGTHS_MAX:
        raise ConfigError(f"--lengths: {len(values)} lengths; at most {LENGTHS_MAX}")
    option = "--length" if len(values) == 1 else "--lengths"
    try:
        values = tuple(check_int(v, option, lo=LENGTH_MIN, hi=LENGTH_MAX) for v in values)
    except ConfigError as e:
        why = " (PDB residue numbers have four digits)" if "at most" in str(e) else ""
        raise ConfigError(f"{e}{why}") from None
    if len(set(values)) != len(values):
        raise ConfigError(f"--lengths {','.join(map(str, values))}: give each length once "
                          "(--num sets the designs per length)")
    return values


def json_ready(x: Any) -> Any:
    """Tuples as lists, recursively (JSON has no tuples; what a file gives back)."""
    if isinstance(x, dict):
        return {k: json_ready(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_ready(v) for v in x]
    return x


@dataclass(frozen=True)
class EvalSettings:
    """What ``flow3d protein eval`` evaluates and how (one field per flag).

    ``designs``: a folder of PDB/mmCIF files, a file or a protein cache; ``reference``: real
    structures to compare with (novelty, side-by-side metrics); ``out``: the output folder
    (``None``: :attr:`out_dir`). Costs are bounded: novelty TM-aligns each design against at
    most ``max_reference`` prefiltered references (0: all in the length window, exact and
    slow), diversity uses at most ``max_diversity`` designs; ``limit`` and
    ``reference_limit`` take seeded random subsets.
    """

    designs: str
    reference: str | None = None
    out: str | None = None
    ss_method: str = "pydssp"  # "pydssp" | "mkdssp" | "pymol" | "auto"
    max_reference: int = 32
    max_diversity: int = 64
    reference_limit: int | None = None
    limit: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _text(self.designs, "designs", "a folder or file")
        for option, value in (("--reference", self.reference), ("--out", self.out)):
            if value is not None:
                _text(value, option)
        _choice(self.ss_method, "--ss-method", SS_METHODS)
        _set(self, "max_reference", check_int(self.max_reference, "--max-reference", lo=0))
        _set(self, "max_diversity", check_int(self.max_diversity, "--max-diversity", lo=1,
                                              hi=DIVERSITY_MAX))
        for name in ("reference_limit", "limit"):
            value = getattr(self, name)
            if value is not None:
                _set(self, name, check_int(value, f"--{name.replace('_', '-')}", lo=1))
        _set(self, "seed", check_int(self.seed, "--seed", lo=0, hi=SEED_MAX))

    @property
    def out_dir(self) -> Path:
        """``out``, else ``DESIGNS/eval`` (``NAME_eval`` beside a single design file)."""
        if self.out is not None:
            return Path(self.out)
        designs = Path(self.designs)
        if designs.is_file():
            return designs.with_name(f"{designs.name.split('.')[0]}_eval")
        return designs / "eval"
