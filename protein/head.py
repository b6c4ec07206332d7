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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flow3d.engine.head import Head
from flow3d.errors import ConfigError, DataError
from flow3d.io import atomic_write_text
from protein.flow import ROT_SCHEDULES, FlowSettings, ProteinFlow
from protein.model import IPATrunk, TrunkConfig

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


@dataclass(frozen=True)
class ProteinSampleConfig:
    """Defaults of ``head.sample`` / ``flow3d protein design``."""

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
    batch_size: int = 16
    residue: str = "GLY"  # "GLY" | "ALA" in written PDB files
    format: str = "pdb"  # "pdb" | "cif"

    def __post_init__(self):
        if self.rot_schedule not in ROT_SCHEDULES:
            raise ValueError(f"rot_schedule must be one of {ROT_SCHEDULES}")
        if any(n < 2 for n in self.lengths):
            raise ValueError("lengths must be at least 2 residues")
        if self.format not in ("pdb", "cif"):
            raise ValueError("format must be 'pdb' or 'cif'")
        if min(self.guidance_iters, self.motif_guidance_iters) < 1:
            raise ValueError("guidance_iters and motif_guidance_iters must be at least 1")


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
        return f"len{self.length:03d}_{self.index:03d}"


def _plans(topology, length: int, num: int, seed: int):
    """Fold plans for ``num`` designs of ``length``: none, one plan for all, or drawn from a
    pool (seeded)."""
    from protein.topology import Topology, draw_topologies

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
    from protein.geometry import NM_TO_ANG, Rigid, backbone_from_frames

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

    def filters(self):
        from protein.data.filters import FilterConfig

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
        from protein.data.cache import build_cache

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
        from protein.data.cache import load_cache
        from protein.data.dataset import ProteinDataset

        if self.recipe.data.reflow is not None:
            return ReflowFrames(self.reflow_pairs(), self.recipe.model.flow.rot_path)

        ds = ProteinDataset(load_cache(self.build_cache()), topology=self.recipe.model.topology)
        if len(ds) == 0:
            raise DataError(f"{self.cache_path()}: no chains passed the filters")
        return ds

    def collate(self, items: Sequence[Any]) -> Any:
        from protein.data.dataset import collate_padded

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

    def _generate_pairs(self, teacher: str, length: int, out: Path) -> None:
        from flow3d.core.reflow import generate_pairs
        from flow3d.engine.checkpoint import load_model
        from protein.flow import quats_to_points

        cfg = self.recipe.data.reflow
        loaded = load_model(resolve_path(teacher), ema=True)
        flow: ProteinFlow = loaded.head.flow
        sample = loaded.recipe.sample
        velocity = flow.velocity_fn(
            loaded.model, rot_schedule=sample.rot_schedule,
            rot_rate=sample.rot_rate if cfg.rot_rate is None else cfg.rot_rate,
            clash_guidance=cfg.clash_guidance, guidance_window=cfg.guidance_window,
            guidance_iters=sample.guidance_iters, steps=cfg.steps,
        )  # fmt: skip

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
        from flow3d.core.reflow import ReflowPairs
        from protein.data.filters import secondary_structure, ss_fractions
        from protein.eval import count_clashes, valid_strand_fraction
        from protein.flow import points_to_quats

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
            metrics["ca_valid_fraction"].append(ca_ca_valid_fraction(atoms[:, 1]))
            metrics["clashes"].append(count_clashes(coords[:, 1]))
            metrics["helix"].append(helix)
            metrics["strand"].append(strand)
            metrics["strand_valid"].append(valid_strand_fraction(ss, coords[:, 1]))
            metrics["helix_strand"].append(helix + strand)
        atomic_write_text(out / "metrics.json",
                          json.dumps({**(info or {}), **metrics}, indent=1) + "\n")

    def epoch_batches(self, dataset, rng: np.random.Generator, batch_size: int):
        """Length-bucketed batches under the residues^2 budget, at most ``batch_size`` each."""
        from protein.data.dataset import length_batches

        lengths = _dataset_lengths(dataset)
        batches = length_batches(lengths, rng, self.recipe.data.max_residues_sq)
        out = []
        for b in batches:
            out.extend(b[i : i + batch_size] for i in range(0, len(b), batch_size))
        return out

    # ---- training --------------------------------------------------------------------------
    def time_sampler(self):
        if self._time_sampler is None:
            from flow3d.core.time import build_time_sampler

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
        """``num`` designs per length in ``sample.lengths`` -> ``list[Design]``.

        Overrides: any :class:`ProteinSampleConfig` field plus ``trajectory=True``,
        ``motif`` (a :class:`protein.motif.Motif` to scaffold in every design) and
        ``topology``: a :class:`protein.topology.Topology` fold plan for every design (its
        length must be in ``lengths``), or a list of them to draw from, cropped to each length
        (:func:`protein.topology.draw_topologies`, seeded like the noise). Fold plans need a
        trunk built with ``model.topology``.
        """
        trajectory = bool(overrides.pop("trajectory", False))
        progress = overrides.pop("progress", None)
        motif = overrides.pop("motif", None)
        topology = overrides.pop("topology", None)
        if topology is not None and not self.recipe.model.topology:
            raise ConfigError("this checkpoint was trained without fold plans (model.topology "
                              "is false); use checkpoints/protein/tiny_topology")
        try:
            cfg = dataclasses.replace(self.recipe.sample, **overrides)
        except TypeError as e:
            raise ConfigError(f"sample overrides: {e}") from None
        except ValueError as e:
            raise ConfigError(f"sample: {e}") from None
        num = cfg.num if num is None else num
        iters = cfg.guidance_iters
        if motif is not None:
            iters = cfg.motif_guidance_iters
            for length in cfg.lengths:
                motif.check_length(length)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        designs: list[Design] = []
        try:
            for length in cfg.lengths:
                done = 0
                while done < num:
                    b = min(cfg.batch_size, num - done)
                    # One generator per (seed, length, batch): designs do not depend on the
                    # other lengths asked for in the same call.
                    stream = int(seed) * 1_000_003 + length * 1009 + done
                    g = torch.Generator(device="cpu").manual_seed(stream)
                    # motif placements and fold plans draw from streams of their own, so the
                    # noise is the same with or without them
                    pos = None
                    if motif is not None:
                        g_pos = torch.Generator(device="cpu").manual_seed(stream + 500_009)
                        pos = motif.draw_positions(b, g_pos).to(device)
                    plans = _plans(topology, length, b, stream + 700_001)
                    cond = {}
                    if plans is not None:
                        cond = {"ss": torch.from_numpy(np.stack([p.codes for p in plans])),
                                "adj": torch.from_numpy(np.stack([p.adj for p in plans]))}
                        cond = {k: v.to(device) for k, v in cond.items()}
                    res = self.flow.sample(
                        model, b, length, steps=cfg.steps, method=cfg.method,
                        rot_schedule=cfg.rot_schedule, rot_rate=cfg.rot_rate, generator=g,
                        trajectory=trajectory, device=device, clash_guidance=cfg.clash_guidance,
                        guidance_window=cfg.guidance_window, guidance_iters=iters, motif=motif,
                        motif_positions=pos, **cond,
                    )  # fmt: skip
                    atoms = frames_to_atoms(res.trans, res.quats).float().cpu().numpy()
                    traj = None
                    if res.trajectory is not None:
                        traj = torch.stack(
                            [frames_to_atoms(tr, q) for tr, q in res.trajectory], dim=1
                        ).float().cpu().numpy()  # [b, T, L, 4, 3]
                    for i in range(b):
                        designs.append(
                            Design(
                                length=length,
                                atoms=atoms[i],
                                trans=res.trans[i].cpu().numpy(),
                                quats=res.quats[i].cpu().numpy(),
                                seconds=res.seconds / b,
                                seed=int(seed),
                                index=done + i,
                                trajectory=None if traj is None else traj[i],
                                motif_positions=None if pos is None else pos[i].cpu().numpy(),
                                residues=None if pos is None else _motif_residue_names(
                                    motif, pos[i].tolist(), length, cfg.residue),
                                topology=None if plans is None else plans[i],
                            )
                        )
                    if progress is not None:
                        progress(b)
                    done += b
        finally:
            model.train(was_training)
        return designs

    def save_samples(self, samples: Sequence[Design], out_dir: Path, *, fmt: str | None = None):
        """One PDB (or mmCIF) per design, ``timings.json`` (seconds per design, read by
        ``flow3d protein eval``) and, for designs with a trajectory, ``<out>_trajectories/
        <name>_traj.pdb`` with one MODEL record per solver step (t = 0 ... 1)."""
        from protein.pdbio import write_backbone_cif, write_backbone_pdb

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        fmt = fmt or self.recipe.sample.format
        residue = self.recipe.sample.residue
        paths: list[Path] = []
        timings = {}
        for d in samples:
            header = f"FLOW3D DESIGN {d.name} SEED {d.seed}"
            names = d.residues or residue
            if fmt == "cif":
                p = out_dir / f"{d.name}.cif"
                write_backbone_cif(p, d.atoms, residue=names, header=header)
            else:
                p = out_dir / f"{d.name}.pdb"
                write_backbone_pdb(p, d.atoms, residue=names, header=header)
            paths.append(p)
            timings[d.name] = d.seconds
            if d.trajectory is not None:  # beside, not inside: eval reads every file in out_dir
                tp = trajectory_dir(out_dir) / f"{d.name}_traj.pdb"
                write_backbone_pdb(tp, d.trajectory, residue=names, header=header)
                paths.append(tp)
        atomic_write_text(out_dir / "timings.json", json.dumps(timings, indent=1) + "\n")
        return paths


def _motif_residue_names(motif, positions: list[int], length: int, residue: str) -> list[str]:
    """``residue`` everywhere but at the motif's positions, which keep their own residue
    names (non-standard ones, ``X``, fall back to ``residue``)."""
    from protein.data.parse import ONE_TO_THREE

    names = [residue] * length
    for p, aa in zip(positions, motif.sequence):
        names[p] = ONE_TO_THREE.get(aa, residue)
    return names


def ca_ca_valid_fraction(ca: torch.Tensor, ideal: float = 3.80, tol: float = 0.20) -> float:
    """Fraction of consecutive CA-CA distances (angstrom) within ``ideal +/- tol``."""
    d = torch.linalg.vector_norm(ca[1:] - ca[:-1], dim=-1)
    return float(((d - ideal).abs() <= tol).float().mean()) if len(d) else 1.0


class ReflowFrames(torch.utils.data.Dataset):
    """Kept reflow pairs of every length as protein items with a source: ``trans``/``quats``
    (the teacher's backbone), ``trans_0``/``quats_0`` (its noise), ``res_idx``, ``seq``."""

    def __init__(self, dirs: Sequence[Path], rot_path: str):
        from flow3d.core.reflow import ReflowPairs
        from protein.flow import ProteinFlow

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
        from protein.flow import points_to_quats

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
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}_trajectories"


def _cache_exists(path: Path) -> bool:
    return (path / "meta.json").is_file() and (path / "backbones.safetensors").is_file()


def _dataset_lengths(dataset) -> list[int]:
    lengths = getattr(dataset, "lengths", None)
    if lengths is not None:
        return [int(x) for x in lengths]
    return [int(dataset[i]["length"]) for i in range(len(dataset))]
