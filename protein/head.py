"""The protein head: ReQFlow backbone generation plugged into the flow3d engine.

Recipe sections (frozen dataclasses): ``model`` (:class:`ProteinModelConfig`, the IPA trunk
sizes and the flow settings), ``data`` (:class:`ProteinDataConfig`, sources, filters, cache and
the residues-squared batch budget) and ``sample`` (:class:`ProteinSampleConfig`, lengths,
steps, solver and rotation schedule). Training items are frames from the protein-data cache;
sampling integrates :class:`protein.flow.ProteinFlow` with the core solvers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flow3d.core.reflow import ReflowPairs, generate_pairs
from flow3d.core.time import build_time_sampler
from flow3d.engine.checkpoint import load_model, read_recipe
from flow3d.engine.head import Head
from flow3d.errors import ConfigError, DataError
from flow3d.io import atomic_write_text
from flow3d.options import check_float, check_int
from protein.constants import NM_TO_ANG
from protein.data.cache import build_cache, load_cache
from protein.data.dataset import ProteinDataset, collate_padded, length_batches
from protein.data.filters import FilterConfig, secondary_structure, ss_fractions
from protein.data.parse import BREAK_POLICIES, ONE_TO_THREE
from protein.flow import Condition, FlowSettings, ProteinFlow, points_to_quats, quats_to_points
from protein.geometry import Rigid, backbone_from_frames
from protein.metrics import ca_ca_valid_fraction, count_clashes, valid_strand_fraction
from protein.model import IPATrunk, TrunkConfig
from protein.pdbio import write_backbone_cif, write_backbone_pdb
from protein.settings import DesignSettings, SamplerSettings
from protein.topology import Topology, draw_topologies

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "../shared/data/proteins"


@dataclass(frozen=True)
class ProteinModelConfig(TrunkConfig):
    """IPA trunk sizes (the fields of :class:`TrunkConfig`; defaults: ReQFlow's ``base``,
    16.7M parameters) plus the flow settings."""

    flow: FlowSettings = FlowSettings()

    def trunk(self) -> TrunkConfig:
        names = {f.name for f in dataclasses.fields(TrunkConfig)}
        return TrunkConfig(**{k: getattr(self, k) for k in names})


@dataclass(frozen=True)
class ProteinReflowConfig:
    """Reflow (rectification, Liu et al. 2023): the teacher integrates prior noise to
    backbones at each length; pairs whose backbone fails the checks are dropped.

    The teacher samples with its own recipe's rotation schedule unless ``rot_rate`` is set,
    and may sample with clash guidance (``clash_guidance``/``guidance_window``, as in
    ``sample``): the student then learns guided, clash-free backbones as its own unguided
    field (distilling the inference-time prior into the model). ``max_clashes`` drops pairs
    whose backbone has more CA-CA clashes (pairs under 3.0 A, ``|i - j| >= 2``);
    ``min_helix_strand`` those with less helix + strand (pydssp). The checks are re-applied
    to the recorded metrics on every run, so changing a threshold needs no new pairs.
    """

    pairs_dir: str
    teacher: str | None = None  # checkpoint; default: trainer.init_from
    lengths: tuple[int, ...] = (60, 100, 150)
    num_per_length: int = 64
    steps: int = 100
    method: str = "euler"
    seed: int = 0
    batch_size: int = 16
    min_ca_valid: float = 0.9  # keep pairs with >= this fraction of CA-CA in 3.8 +/- 0.2 A
    max_clashes: int | None = None  # keep pairs with <= this many clashes (null: no check)
    min_helix_strand: float | None = None  # keep pairs with >= this helix + strand fraction
    rot_rate: float | None = None  # teacher's exponential rotation rate (null: its recipe's)
    clash_guidance: float = 0.0  # teacher samples with clash guidance of this strength
    guidance_window: tuple[float, float] = (0.5, 1.0)


@dataclass(frozen=True)
class ProteinDataConfig:
    """Where training chains come from and how they are filtered and batched."""

    sources: tuple[str, ...] = (DEFAULT_DATA,)
    cache_dir: str = ".cache/protein"
    min_len: int | None = 60  # null disables a filter
    max_len: int | None = 256
    max_coil_fraction: float | None = 0.5
    rg_quantile: float | None = 0.96
    dedup: bool = True
    break_policy: str = "split"
    max_residues_sq: int = 200_000  # per batch: sum of L^2 (ReQFlow-like length batching)
    workers: int = 1
    reflow: ProteinReflowConfig | None = None  # set: train on teacher pairs instead

    def __post_init__(self):
        try:
            for name in ("min_len", "max_len"):
                if getattr(self, name) is not None:
                    check_int(getattr(self, name), name, lo=1)
            if None not in (self.min_len, self.max_len) and self.max_len < self.min_len:
                raise ConfigError(f"max_len = {self.max_len}: below min_len = {self.min_len}")
            if self.max_coil_fraction is not None:
                check_float(self.max_coil_fraction, "max_coil_fraction", lo=0.0, hi=1.0)
            if self.rg_quantile is not None:
                check_float(self.rg_quantile, "rg_quantile", lo=0.0, hi=1.0, lo_open=True)
            check_int(self.max_residues_sq, "max_residues_sq", lo=1)
            check_int(self.workers, "workers", lo=1, hi=1024)
            if self.break_policy not in BREAK_POLICIES:
                raise ConfigError(f"break_policy {self.break_policy!r}: use one of "
                                  f"{', '.join(BREAK_POLICIES)}")
            if not self.sources or not all(str(s).strip() for s in self.sources):
                raise ConfigError(f"sources = {list(self.sources)}: give one or more folders")
            if not str(self.cache_dir).strip():
                raise ConfigError("cache_dir: a folder is required (got an empty string)")
        except ConfigError as e:  # the recipe loader names the file and section
            raise ValueError(str(e)) from None


@dataclass(frozen=True)
class ProteinSampleConfig:
    """The checkpoint's sampling defaults: what ``head.sample`` uses and what
    ``flow3d protein design`` takes for every flag it is not given
    (:meth:`protein.settings.DesignSettings.resolved`). Checked by the same code as the
    command line's settings."""

    num: int = 8  # designs per length
    lengths: tuple[int, ...] = (100,)
    steps: int = 50
    method: str = "euler"
    rot_schedule: str = "exp"  # "exp" (ReQFlow/FrameFlow sampling) | "linear"
    rot_rate: float = 10.0
    clash_guidance: float = 0.0  # > 0: steer predicted CAs away from clashes (flow.steer_clashes)
    guidance_window: tuple[float, float] = (0.5, 1.0)  # times t at which clash guidance acts
    guidance_iters: int = 10  # gradient steps of clash guidance per network evaluation
    # ... when scaffolding a motif: its fixed ends need more steps to bond to the scaffold
    # (30 vs 10 on five TS50 motifs: junctions within 3.8 +/- 0.2 A 0.94 vs 0.80)
    motif_guidance_iters: int = 30
    # translation noise to start from: the model's prior ("model") or the Rg law's
    # ("length"), times trans_noise_scale (protein.settings.SamplerSettings)
    trans_noise: str = "model"
    trans_noise_scale: float = 1.0
    # clash guidance's own floors for CA pairs 2, 3, 4 apart (angstrom; 0 = none): real
    # chains never fold that close (protein.constants.LOCAL_SEPARATIONS)
    local_min_dist: tuple[float, ...] = (0.0, 0.0, 0.0)
    # > 0: with a fold plan, steer planned strand pairs into H-bonded sheets (protein.sheets)
    sheet_guidance: float = 0.0
    batch_size: int = 16
    residue: str = "GLY"  # "GLY" | "ALA" in written PDB files
    format: str = "pdb"  # "pdb" | "cif"

    def __post_init__(self):
        try:
            DesignSettings(lengths=self.lengths, num=self.num, batch_size=self.batch_size,
                           residue=self.residue, format=self.format,
                           sampler=SamplerSettings(guidance_iters=self.motif_guidance_iters))
            SamplerSettings(**{f.name: getattr(self, f.name)
                               for f in dataclasses.fields(SamplerSettings)})
        except ConfigError as e:  # the recipe loader names the file and section
            raise ValueError(str(e)) from None


@dataclass
class Design:
    """One generated backbone: ``atoms [L, 4, 3]`` (N, CA, C, O) in angstrom, frames in nm,
    optional trajectory ``[T, L, 4, 3]`` (angstrom), wall-clock seconds per design, and the
    0-based positions ``[M]`` of a scaffolded motif."""

    length: int
    atoms: np.ndarray
    trans: np.ndarray
    quats: np.ndarray
    seconds: float
    seed: int
    index: int
    trajectory: np.ndarray | None = field(default=None)
    motif_positions: np.ndarray | None = field(default=None)
    residues: list[str] | None = field(default=None)  # per-residue names (a motif's own)
    topology: Any = field(default=None)  # the protein.topology.Topology it was designed to

    @property
    def name(self) -> str:
        return design_name(self.length, self.index)


def design_name(length: int, index: int) -> str:
    """The name (and file stem) of design ``index`` of ``length`` residues."""
    return f"len{length:03d}_{index:03d}"


def _plans(topology, length: int, num: int, seed: int):
    """Fold plans for ``num`` designs of ``length``: none, one plan for all, or drawn from a
    pool (seeded)."""
    if topology is None:
        return None
    if isinstance(topology, Topology):
        if len(topology) != length:
            raise ConfigError(f"the fold plan has {len(topology)} residues, designs {length}")
        return [topology] * num
    return draw_topologies(list(topology), length, num, np.random.default_rng(seed))


def resolve_path(path: str | Path) -> Path:
    """A relative path as given if it exists from the working directory, else relative to
    the project root (so recipes work from any directory)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p


def frames_to_atoms(trans_nm: torch.Tensor, quats: torch.Tensor) -> torch.Tensor:
    """Frames (nm) -> backbone atoms ``[..., L, 4, 3]`` in angstrom (geometry's convention)."""
    return backbone_from_frames(Rigid(quats, trans_nm * NM_TO_ANG))


class ProteinHead(Head):
    """ReQFlow backbones: IPA trunk, SE(3) frame flow, length-bucketed real data."""

    name = "protein"
    model_config = ProteinModelConfig
    data_config = ProteinDataConfig
    sample_config = ProteinSampleConfig

    def __init__(self, recipe: Any):
        super().__init__(recipe)
        self.flow = ProteinFlow(recipe.model.flow)
        self._time_sampler = None

    # ---- model -----------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        return IPATrunk(self.recipe.model.trunk())

    # ---- data ------------------------------------------------------------------------------
    def cache_path(self) -> Path:
        """The cache file for these sources and filters (a hash of both names it)."""
        d = self.recipe.data
        skip = ("workers", "max_residues_sq", "reflow")
        key = {k: v for k, v in dataclasses.asdict(d).items() if k not in skip}
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
        return resolve_path(d.cache_dir) / f"proteins_{digest}"

    def filters(self) -> FilterConfig:
        d = self.recipe.data
        return FilterConfig(
            min_len=d.min_len,
            max_len=d.max_len,
            max_coil_fraction=d.max_coil_fraction,
            rg_quantile=d.rg_quantile,
            dedup=d.dedup,
        )

    def build_cache(self, *, force: bool = False):
        """Build (or reuse) the preprocessed cache; returns its path."""
        path = self.cache_path()
        if force or not _cache_exists(path):
            sources = [resolve_path(s) for s in self.recipe.data.sources]
            missing = [str(s) for s in sources if not s.exists()]
            if missing:
                raise DataError(f"{missing[0]}: protein data source not found")
            build_cache(
                sources,
                path,
                self.filters(),
                workers=self.recipe.data.workers,
                break_policy=self.recipe.data.break_policy,
            )
        return path

    def train_dataset(self) -> torch.utils.data.Dataset:
        if self.recipe.data.reflow is not None:
            return ReflowFrames(self.reflow_pairs(), self.recipe.model.flow.rot_path)

        ds = ProteinDataset(load_cache(self.build_cache()), topology=self.recipe.model.topology)
        if len(ds) == 0:
            raise DataError(f"{self.cache_path()}: no chains passed the filters")
        return ds

    def collate(self, items: Sequence[Any]) -> Any:
        batch = collate_padded(list(items))
        if "trans_0" in items[0]:  # reflow pairs: pad the sources like the targets
            B, L = batch["mask"].shape
            batch["trans_0"] = torch.zeros(B, L, 3)
            batch["quats_0"] = torch.zeros(B, L, 4)
            batch["quats_0"][..., 0] = 1.0
            for k, it in enumerate(items):
                n = int(it["length"])
                batch["trans_0"][k, :n] = it["trans_0"]
                batch["quats_0"][k, :n] = it["quats_0"]
        return batch

    # ---- reflow ----------------------------------------------------------------------------
    def reflow_pairs(self) -> list[Path]:
        """Generate (once) and filter the teacher's noise -> backbone pairs per length.

        Each ``pairs_dir/len{L}`` holds safetensors shards (:func:`flow3d.core.reflow.
        generate_pairs`, states ``[L, 7]``), ``metrics.json`` (per pair: fraction of CA-CA
        distances in 3.8 +/- 0.2 A, clashes, helix and strand fractions) and ``kept.json``:
        the metrics plus the indices that pass this recipe's checks (re-applied every run).
        """
        cfg = self.recipe.data.reflow
        teacher = cfg.teacher or self.recipe.trainer.init_from
        if teacher:
            self._check_teacher_prior(teacher)
        dirs = []
        for length in cfg.lengths:
            out = resolve_path(cfg.pairs_dir) / f"len{length:03d}"
            if not (out / "metrics.json").is_file():
                if not teacher:
                    raise ConfigError(
                        f"data.reflow: {out} holds no pairs and no teacher is set "
                        "(data.reflow.teacher or trainer.init_from)"
                    )
                self._generate_pairs(teacher, length, out)
            info = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
            keep = [
                i for i, (ca, clash, ss) in enumerate(zip(
                    info["ca_valid_fraction"], info["clashes"], info["helix_strand"]))
                if ca >= cfg.min_ca_valid
                and (cfg.max_clashes is None or clash <= cfg.max_clashes)
                and (cfg.min_helix_strand is None or ss >= cfg.min_helix_strand)
            ]  # fmt: skip
            checks = {k: getattr(cfg, k) for k in ("min_ca_valid", "max_clashes",
                                                     "min_helix_strand")}
            atomic_write_text(out / "kept.json",
                              json.dumps({"kept": keep, **checks, **info}, indent=1) + "\n")
            dirs.append(out)
        return dirs

    def _check_teacher_prior(self, teacher: str) -> None:
        """The student learns the teacher's noise -> backbone map, and samples from its own
        prior: both must draw the same translation noise."""
        mine, theirs = self.recipe.model.flow, read_recipe(resolve_path(teacher)).model.flow
        for key in ("trans_prior", "trans_prior_std"):
            if getattr(mine, key) != getattr(theirs, key):
                raise ConfigError(
                    f"model.flow.{key} = {getattr(mine, key)!r} but the reflow teacher "
                    f"{teacher} was trained with {getattr(theirs, key)!r}: set the same")

    def _generate_pairs(self, teacher: str, length: int, out: Path) -> None:
        cfg = self.recipe.data.reflow
        loaded = load_model(resolve_path(teacher), ema=True)
        flow: ProteinFlow = loaded.head.flow
        settings = SamplerSettings(
            steps=cfg.steps, method=cfg.method, rot_rate=cfg.rot_rate,
            clash_guidance=cfg.clash_guidance, guidance_window=cfg.guidance_window,
        ).resolved(loaded.recipe.sample)  # fmt: skip
        velocity = flow.velocity_fn(loaded.model, settings)

        def noise(n: int, generator: torch.Generator) -> torch.Tensor:
            trans, quats = flow.prior(torch.ones(n, length), generator)
            return torch.cat([trans, quats_to_points(quats, flow.s.rot_path)], dim=-1)

        with torch.no_grad():
            generate_pairs(
                velocity, noise, cfg.num_per_length, out, shard_size=cfg.num_per_length,
                batch_size=cfg.batch_size, method=cfg.method, steps=cfg.steps,
                seed=cfg.seed * 100_003 + length, manifold=flow.manifold,
            )  # fmt: skip
        info = {"teacher": str(teacher), "length": length, "steps": cfg.steps,
                "clash_guidance": cfg.clash_guidance}
        self.record_pair_metrics(out, info)

    def record_pair_metrics(self, out: Path, info: dict | None = None) -> None:
        """Write ``out/metrics.json``: CA-CA validity, clashes and SS of each pair's end."""
        flow = self.flow
        pairs = ReflowPairs(out)
        metrics: dict[str, list] = {"ca_valid_fraction": [], "clashes": [], "helix": [],
                                    "strand": [], "strand_valid": [], "helix_strand": []}
        for i in range(len(pairs)):
            trans, rot = flow.manifold.split_point(pairs[i]["x_1"])
            atoms = frames_to_atoms(trans, points_to_quats(rot, flow.s.rot_path))
            coords = atoms.double().numpy()
            ss = secondary_structure(coords)
            helix, strand, _ = ss_fractions(ss)
            metrics["ca_valid_fraction"].append(ca_ca_valid_fraction(coords[:, 1]))
            metrics["clashes"].append(count_clashes(coords[:, 1]))
            metrics["helix"].append(helix)
            metrics["strand"].append(strand)
            metrics["strand_valid"].append(valid_strand_fraction(ss, coords[:, 1]))
            metrics["helix_strand"].append(helix + strand)
        atomic_write_text(out / "metrics.json",
                          json.dumps({**(info or {}), **metrics}, indent=1) + "\n")

    def epoch_batches(self, dataset, rng: np.random.Generator, batch_size: int):
        """Length-bucketed batches under the residues^2 budget, at most ``batch_size`` each."""
        lengths = _dataset_lengths(dataset)
        batches = length_batches(lengths, rng, self.recipe.data.max_residues_sq)
        out = []
        for b in batches:
            out.extend(b[i : i + batch_size] for i in range(0, len(b), batch_size))
        return out

    # ---- training --------------------------------------------------------------------------
    def time_sampler(self):
        if self._time_sampler is None:
            ts = self.recipe.flow.time_sampler
            kwargs = {
                "uniform": {},
                "logit_normal": {"mean": ts.mean, "std": ts.std},
                "mode": {"scale": ts.scale},
                "u_shaped": {"a": ts.a},
            }.get(ts.name, {})
            self._time_sampler = build_time_sampler(ts.name, **kwargs)
        return self._time_sampler

    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator):
        B = batch["mask"].shape[0]
        t = self.time_sampler().sample(B, generator=generator, device=batch["mask"].device)
        return self.flow.loss(model, batch, t, generator)

    # ---- sampling --------------------------------------------------------------------------
    def sample(self, model: nn.Module, num: int | None = None, *, seed: int = 0, **overrides):
        """``num`` designs per length in ``sample.lengths`` -> ``list[Design]`` (the engine's
        generic entry: ``flow3d sample``, ``flow3d.load(...).sample``).

        Overrides: any :class:`ProteinSampleConfig` field plus ``trajectory=True``,
        ``motif`` (a :class:`protein.motif.Motif` to scaffold in every design) and
        ``topology``: a :class:`protein.topology.Topology` fold plan for every design (its
        length must be in ``lengths``), or a list of them to draw from, cropped to each length
        (:func:`protein.topology.draw_topologies`, seeded like the noise). Fold plans need a
        trunk built with ``model.topology``. ``flow3d protein design`` calls
        :meth:`generate` with its own :class:`protein.settings.DesignSettings` instead.
        """
        trajectory = bool(overrides.pop("trajectory", False))
        motif = overrides.pop("motif", None)
        topology = overrides.pop("topology", None)
        try:
            cfg = dataclasses.replace(self.recipe.sample, **overrides)
        except TypeError as e:
            raise ConfigError(f"sample overrides: {e}") from None
        except ValueError as e:
            raise ConfigError(f"sample: {e}") from None
        settings = DesignSettings(
            lengths=cfg.lengths, num=cfg.num if num is None else num, seed=seed,
            sampler=SamplerSettings(steps=cfg.steps).resolved(cfg, motif=motif is not None),
            batch_size=cfg.batch_size, residue=cfg.residue, format=cfg.format,
            trajectory=trajectory,
        )  # fmt: skip
        batches = self.generate(model, settings, motif=motif, topology=topology)
        return [d for batch in batches for d in batch]

    def generate(
        self,
        model: nn.Module,
        settings: DesignSettings,
        *,
        motif: Any = None,
        topology: Any = None,
        batches: Sequence[tuple[int, int, int]] | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> Iterator[list[Design]]:
        """Sample the designs of resolved ``settings`` batch by batch (``settings.batches()``,
        or the given ``(length, first index, size)`` subset of them), yielding each batch's
        designs as soon as they are complete. ``motif``: the loaded
        :class:`protein.motif.Motif`; ``topology``: a fold plan or a pool to draw from (see
        :meth:`sample`); ``on_step()``: called after every solver step.

        Each batch draws from its own generator seeded by ``(seed, length, first index)``, and
        motif placements and fold plans from streams of their own, so a batch comes out the
        same whichever other batches are sampled (``--resume`` relies on it)."""
        if not settings.is_resolved:
            raise ValueError("design settings must be resolved against the checkpoint's recipe")
        if topology is not None and not self.recipe.model.topology:
            raise ConfigError("this checkpoint was trained without fold plans (model.topology "
                              "is false); use checkpoints/protein/tiny_topology")
        if motif is not None:
            for length in settings.lengths:
                motif.check_length(length)
        was_training = model.training
        model.eval()
        try:
            for length, start, size in settings.batches() if batches is None else batches:
                yield self._sample_batch(model, settings, (length, start, size),
                                         (motif, topology), on_step)
        finally:
            model.train(was_training)

    def _sample_batch(self, model, settings: DesignSettings, batch: tuple[int, int, int],
                      conditions: tuple, on_step) -> list[Design]:
        (length, start, size), (motif, topology) = batch, conditions
        device = next(model.parameters()).device
        stream = settings.seed * 1_000_003 + length * 1009 + start
        g = torch.Generator(device="cpu").manual_seed(stream)
        # motif placements and fold plans draw from streams of their own, so the noise is the
        # same with or without them
        pos = None
        if motif is not None:
            g_pos = torch.Generator(device="cpu").manual_seed(stream + 500_009)
            pos = motif.draw_positions(size, g_pos).to(device)
        plans = _plans(topology, length, size, stream + 700_001)
        cond = Condition(motif=motif, motif_positions=pos)
        if plans is not None:
            cond = dataclasses.replace(
                cond, ss=torch.from_numpy(np.stack([p.codes for p in plans])).to(device),
                adj=torch.from_numpy(np.stack([p.adj for p in plans])).to(device))
        with torch.no_grad():
            res = self.flow.sample(model, size, length, settings.sampler, cond=cond,
                                   generator=g, trajectory=settings.trajectory, device=device,
                                   on_step=on_step)
        atoms = frames_to_atoms(res.trans, res.quats).float().cpu().numpy()
        traj = None
        if res.trajectory is not None:
            traj = torch.stack(
                [frames_to_atoms(tr, q) for tr, q in res.trajectory], dim=1
            ).float().cpu().numpy()  # [b, T, L, 4, 3]
        return [
            Design(
                length=length, atoms=atoms[i], trans=res.trans[i].cpu().numpy(),
                quats=res.quats[i].cpu().numpy(), seconds=res.seconds / size,
                seed=settings.seed, index=start + i,
                trajectory=None if traj is None else traj[i],
                motif_positions=None if pos is None else pos[i].cpu().numpy(),
                residues=None if pos is None else _motif_residue_names(
                    motif, pos[i].tolist(), length, settings.residue),
                topology=None if plans is None else plans[i],
            )
            for i in range(size)
        ]  # fmt: skip

    def save_samples(self, samples: Sequence[Design], out_dir: Path, *, fmt: str | None = None):
        """One PDB (or mmCIF) per design, ``timings.json`` (seconds per design, read by
        ``flow3d protein eval``) and, for designs with a trajectory, ``<out>_trajectories/
        <name>_traj.pdb`` with one MODEL record per solver step (t = 0 ... 1); format and
        residue names from the recipe's ``sample`` section."""
        out_dir = Path(out_dir)
        fmt = fmt or self.recipe.sample.format
        paths: list[Path] = []
        for d in samples:
            paths += write_design(d, out_dir, fmt=fmt, residue=self.recipe.sample.residue)
        timings = {d.name: d.seconds for d in samples}
        atomic_write_text(out_dir / "timings.json", json.dumps(timings, indent=1) + "\n")
        return paths


def write_design(d: Design, out_dir: Path, *, fmt: str = "pdb", residue: str = "GLY"
                 ) -> list[Path]:
    """Write one design atomically: ``out_dir/<name>.pdb`` (or ``.cif``), and with a
    trajectory ``<out>_trajectories/<name>_traj.pdb`` (beside ``out_dir``, not inside: eval
    reads every structure file in ``out_dir``). Returns the paths written."""
    header = f"FLOW3D DESIGN {d.name} SEED {d.seed}"
    names = d.residues or residue
    path = Path(out_dir) / f"{d.name}.{fmt}"
    writer = write_backbone_cif if fmt == "cif" else write_backbone_pdb
    paths = [writer(path, d.atoms, residue=names, header=header)]
    if d.trajectory is not None:
        tp = trajectory_dir(out_dir) / f"{d.name}_traj.pdb"
        paths.append(write_backbone_pdb(tp, d.trajectory, residue=names, header=header))
    return paths


def _motif_residue_names(motif, positions: list[int], length: int, residue: str) -> list[str]:
    """``residue`` everywhere but at the motif's positions, which keep their own residue
    names (non-standard ones, ``X``, fall back to ``residue``)."""
    names = [residue] * length
    for p, aa in zip(positions, motif.sequence):
        names[p] = ONE_TO_THREE.get(aa, residue)
    return names


class ReflowFrames(torch.utils.data.Dataset):
    """Kept reflow pairs of every length as protein items with a source: ``trans``/``quats``
    (the teacher's backbone), ``trans_0``/``quats_0`` (its noise), ``res_idx``, ``seq``."""

    def __init__(self, dirs: Sequence[Path], rot_path: str):
        self.flow = ProteinFlow(FlowSettings(rot_path=rot_path))
        self.items: list[tuple[ReflowPairs, int]] = []
        for d in dirs:
            pairs = ReflowPairs(d)
            kept = json.loads((Path(d) / "kept.json").read_text(encoding="utf-8"))["kept"]
            self.items += [(pairs, int(i)) for i in kept]
        if not self.items:
            raise DataError(f"{dirs[0] if dirs else 'reflow'}: no reflow pair passed the check")
        self.lengths = np.array([p[i]["x_0"].shape[0] for p, i in self.items])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict:
        pairs, i = self.items[k]
        pair = pairs[i]
        t0, r0 = self.flow.manifold.split_point(pair["x_0"].float())
        t1, r1 = self.flow.manifold.split_point(pair["x_1"].float())
        n = t0.shape[0]
        rot_path = self.flow.s.rot_path
        return {
            "trans": t1, "quats": points_to_quats(r1, rot_path),
            "trans_0": t0, "quats_0": points_to_quats(r0, rot_path),
            "res_idx": torch.arange(n), "seq": torch.zeros(n, dtype=torch.long), "length": n,
            "name": f"reflow_{k}",
        }  # fmt: skip


def trajectory_dir(out_dir: Path) -> Path:
    """Where ``save_samples`` writes trajectories: a sibling ``<out>_trajectories`` folder."""
    out_dir = Path(out_dir).resolve()  # "." and "designs/" have a name to extend
    return out_dir.parent / f"{out_dir.name}_trajectories"


def _cache_exists(path: Path) -> bool:
    return (path / "meta.json").is_file() and (path / "backbones.safetensors").is_file()


def _dataset_lengths(dataset) -> list[int]:
    lengths = getattr(dataset, "lengths", None)
    if lengths is not None:
        return [int(x) for x in lengths]
    return [int(dataset[i]["length"]) for i in range(len(dataset))]
