"""Evaluate backbone sets (generated designs or real chains) with the same metrics.

Per structure: consecutive CA-CA distances (fraction within 3.80 +/- 0.20 A), clashes (CA
pairs with ``|i - j| >= 2`` closer than 3.0 A; real chains have none), radius of gyration
against the compact-globule law ``2.2 L^0.38`` A, DSSP 3-state fractions (pydssp by default;
mkdssp on request or, with ``ss_method="auto"``, when installed; or PyMOL's ``dss``, whose
looser helix criteria are what a PyMOL user sees), the fraction of residues in
*sterically valid* strands (DSSP strand residues with no non-adjacent CA within 3.8 A: pydssp
also calls two segments that overlap a strand pair, and a model's "strands" can all be of
that kind; in real chains every strand residue passes), novelty (highest TM-score
to a reference set, normalised by the design's length) and time per design (when a timings
file is present).
Per set: diversity (mean pairwise TM-score, the average of both normalisations) and the number
of clusters at TM 0.5 (greedy: the structure with most neighbours at TM >= 0.5 becomes a
centre and takes its neighbours, repeat; MaxCluster-like).

Costs are bounded and stated in the summary: diversity uses at most ``max_diversity`` designs
(random subset), novelty TM-aligns each design against at most ``max_reference`` references,
those closest to it by a cheap descriptor (length within 0.5-2x, SS fractions, Rg ratio and a
CA-distance histogram) — a prefilter that can miss the best match, so novelty is a lower bound
on the true maximum TM-score; ``max_reference=None`` aligns against every reference in the
length window (exact, slow: ~30 ms per alignment at 100 residues).

A design folder written with a motif (``motif.json``) also gets the motif's metrics in the
summary, and one written with fold plans (``topology.json``) how well the designs' DSSP
follows their plans. ``run_eval`` writes ``designs.csv``, ``reference.csv`` (when a
reference is given), ``summary.json`` and PNG plots, atomically.
"""

from __future__ import annotations

import csv
import functools
import io
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from flow3d.errors import DataError
from flow3d.io import atomic_path, atomic_write_text, check_output_dir, prepare_output_dir
from protein.constants import (
    CA_CA_IDEAL_ANG,
    CA_CA_TOL_ANG,
    LOCAL_TIGHT_ANG,
    PARTNER_RANGE_ANG,
    TM_CLUSTER,
)
from protein.data.filters import rg_scaling, secondary_structure, ss_fractions
from protein.data.structures import Structure, load_structures
from protein.metrics import (
    ca_ca_distances,
    ca_ca_valid,
    count_clashes,
    count_tight_local,
    local_distances,
    valid_strand_fraction,
)
from protein.pdbio import write_backbone_pdb
from protein.records import (
    read_motif_summary,
    read_timings,
    read_topology_summary,
    write_json,
)
from protein.settings import EvalSettings

__all__ = [
    "evaluate_designs",
    "format_summary",
    "run_eval",
    "structure_metrics",
    "tm_score",
]


# --- per-structure metrics ----------------------------------------------------------------
def _mkdssp_ss(coords: np.ndarray) -> str:
    """3-state SS from mkdssp run on a temporary poly-GLY PDB (H,G,I -> H; E,B -> E)."""
    with tempfile.TemporaryDirectory() as tmp:
        pdb = write_backbone_pdb(Path(tmp) / "x.pdb", coords)
        out = Path(tmp) / "x.dssp"
        proc = subprocess.run(["mkdssp", "--output-format", "dssp", str(pdb), str(out)],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not out.is_file():
            raise DataError(f"mkdssp failed: {proc.stderr.strip().splitlines()[:1]}")
        lines = out.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("  #  RESIDUE"))
    ss = "".join(ln[16] for ln in lines[start + 1:] if len(ln) > 16 and ln[13] != "!")
    return "".join("H" if s in "HGI" else "E" if s in "EB" else "-" for s in ss)


# PyMOL's dss on one backbone file: H (helix), S (sheet), L or "" (loop) per CA
_PYMOL_DSS = """
import sys
from pymol import cmd
cmd.load(sys.argv[1], "design")
cmd.dss("design")
out = []
cmd.iterate("design and name CA", "out.append(ss or 'L')", space={"out": out})
print("SS:" + "".join(out))
"""


@functools.lru_cache(maxsize=1)
def pymol_python() -> str | None:
    """A Python interpreter that imports PyMOL: this one, or the system's (Debian's ``pymol``
    package installs it for /usr/bin/python3 only). None when there is none."""
    for exe in (sys.executable, "/usr/bin/python3"):
        if Path(exe).is_file():
            try:
                ok = subprocess.run([exe, "-c", "import pymol.cmd"], capture_output=True,
                                    timeout=60).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            if ok:
                return exe
    return None


def _pymol_ss(coords: np.ndarray) -> str:
    """3-state SS from PyMOL's ``dss`` on a temporary poly-GLY PDB (H -> H, S -> E)."""
    exe = pymol_python()
    if exe is None:
        raise DataError("--ss-method pymol: PyMOL is not installed (apt-get install pymol)")
    with tempfile.TemporaryDirectory() as tmp:
        pdb = write_backbone_pdb(Path(tmp) / "x.pdb", coords)
        proc = subprocess.run([exe, "-c", _PYMOL_DSS, str(pdb)],
                              capture_output=True, text=True, timeout=120)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("SS:")), None)
    if proc.returncode != 0 or line is None:
        raise DataError(f"PyMOL dss failed: {proc.stderr.strip().splitlines()[-1:]}")
    return "".join("H" if c == "H" else "E" if c == "S" else "-" for c in line[3:])


def resolve_ss_method(method: str) -> str:
    if method == "auto":
        return "mkdssp" if shutil.which("mkdssp") else "pydssp"
    if method == "mkdssp" and not shutil.which("mkdssp"):
        raise DataError("--ss-method mkdssp: mkdssp is not installed (apt-get install dssp); "
                        "use pydssp")
    if method == "pymol" and pymol_python() is None:
        raise DataError("--ss-method pymol: PyMOL is not installed (apt-get install pymol); "
                        "use pydssp")
    return method


def structure_metrics(s: Structure, ss_method: str = "pydssp") -> dict:
    """CA-CA, clash, Rg and SS metrics of one structure (one CSV row)."""
    ca = s.coords[:, 1].astype(np.float64)
    d = ca_ca_distances(ca)
    valid = ca_ca_valid(d)
    rg = float(np.sqrt(((ca - ca.mean(0)) ** 2).sum(-1).mean()))
    tight, n_local = count_tight_local(ca)
    if s.helix is not None and ss_method == "pydssp" and s.strand == 0:
        helix, strand, coil = s.helix, s.strand, s.coil  # cached, and no strand to check
        strand_valid = 0.0
    else:
        assign = {"mkdssp": _mkdssp_ss, "pymol": _pymol_ss}.get(ss_method, secondary_structure)
        ss = assign(s.coords)
        helix, strand, coil = ss_fractions(ss)
        # mkdssp can drop residues it cannot read; then the check has no per-residue labels
        strand_valid = valid_strand_fraction(ss, ca) if len(ss) == len(ca) else float("nan")
    return {
        "name": s.name,
        "path": s.path,
        "length": len(s),
        "ca_ca_mean": float(d.mean()) if len(d) else float("nan"),
        "ca_ca_max": float(d.max()) if len(d) else float("nan"),
        "ca_ca_valid_fraction": float(valid.mean()) if len(d) else float("nan"),
        "n_ca_ca_valid": int(valid.sum()),
        "n_ca_ca": len(d),
        "n_clashes": count_clashes(ca),
        "n_tight_local": tight,
        "n_local": n_local,
        "rg": rg,
        "rg_ratio": rg / float(rg_scaling(len(s))),
        "helix": helix,
        "strand": strand,
        "strand_valid": strand_valid,
        "coil": coil,
        "helix_strand": helix + strand,
        "ss_method": ss_method,
    }


# --- set metrics ------------------------------------------------------------------------------
def tm_score(a: Structure, b: Structure) -> tuple[float, float]:
    """TM-align of CA traces: (TM normalised by ``a``'s length, by ``b``'s length)."""
    from tmtools import tm_align

    ca_a = np.ascontiguousarray(a.coords[:, 1], dtype=np.float64)
    ca_b = np.ascontiguousarray(b.coords[:, 1], dtype=np.float64)
    res = tm_align(ca_a, ca_b, "A" * len(ca_a), "A" * len(ca_b))
    return float(res.tm_norm_chain1), float(res.tm_norm_chain2)


def greedy_clusters(sim: np.ndarray, threshold: float = TM_CLUSTER) -> list[list[int]]:
    """Greedy centre clustering of a symmetric similarity matrix at ``threshold``."""
    n = len(sim)
    left = set(range(n))
    adj = sim >= threshold
    clusters = []
    while left:
        rest = sorted(left)
        counts = adj[np.ix_(rest, rest)].sum(1)
        centre = rest[int(np.argmax(counts))]
        members = [j for j in rest if adj[centre, j]]
        members = sorted(set(members) | {centre})
        clusters.append(members)
        left -= set(members)
    return clusters


def _diversity(structures: list[Structure], max_designs: int, rng, bar) -> dict:
    idx = np.arange(len(structures))
    if len(idx) > max_designs:
        idx = np.sort(rng.choice(idx, max_designs, replace=False))
    sub = [structures[i] for i in idx]
    n = len(sub)
    sim = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            t1, t2 = tm_score(sub[i], sub[j])
            sim[i, j] = sim[j, i] = 0.5 * (t1 + t2)
            bar.update(1)
    iu = np.triu_indices(n, k=1)
    lengths = np.array([len(s) for s in sub])
    same = lengths[iu[0]] == lengths[iu[1]]
    by_length = {}
    for L in sorted(set(lengths.tolist())):
        k = np.nonzero(lengths == L)[0]
        if len(k) > 1:
            block = sim[np.ix_(k, k)]
            by_length[str(L)] = {
                "n": len(k),
                "mean_pairwise_tm": float(block[np.triu_indices(len(k), 1)].mean()),
                "n_clusters": len(greedy_clusters(block)),
            }
    return {
        "n_used": n,
        "mean_pairwise_tm": float(sim[iu].mean()) if n > 1 else float("nan"),
        "mean_pairwise_tm_same_length": float(sim[iu][same].mean()) if same.any() else None,
        "n_clusters": len(greedy_clusters(sim)),
        "cluster_fraction": len(greedy_clusters(sim)) / n if n else float("nan"),
        "by_length": by_length,
    }


def _descriptor(s: Structure, row: dict) -> np.ndarray:
    """Cheap fold descriptor: SS fractions, Rg ratio, normalised CA-distance histogram."""
    ca = s.coords[:, 1].astype(np.float64)
    d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)[np.triu_indices(len(ca), 1)]
    hist = np.histogram(d, bins=np.arange(0.0, 42.0, 3.0))[0].astype(np.float64)
    hist /= max(hist.sum(), 1.0)
    return np.concatenate([[row["helix"], row["strand"], row["rg_ratio"]], 3.0 * hist])


def _novelty(designs, design_rows, refs, ref_rows, max_reference, bar) -> list[tuple]:
    ref_len = np.array([len(r) for r in refs])
    ref_desc = np.stack([_descriptor(r, row) for r, row in zip(refs, ref_rows)])
    out = []
    for s, row in zip(designs, design_rows):
        L = len(s)
        window = np.nonzero((ref_len >= 0.5 * L) & (ref_len <= 2.0 * L))[0]
        if len(window) == 0:
            out.append((float("nan"), "", 0))
            continue
        dist = np.linalg.norm(ref_desc[window] - _descriptor(s, row), axis=-1)
        pick = window[np.argsort(dist, kind="stable")[:max_reference]]  # None: all
        best, best_name = -1.0, ""
        for k in pick:
            tm = tm_score(s, refs[k])[0]
            if tm > best:
                best, best_name = tm, refs[k].name
        bar.update(1)
        out.append((best, best_name, len(pick)))
    return out


def _mean(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return float(np.mean(vals)) if vals else float("nan")


def _ratio(rows: list[dict], num: str, den: str) -> float:
    """Pooled ``sum(num) / sum(den)`` over the rows (nan when there is nothing to count)."""
    total = sum(r[den] for r in rows)
    return sum(r[num] for r in rows) / total if total else float("nan")


def _set_summary(rows: list[dict]) -> dict:
    n_valid = sum(r["n_ca_ca_valid"] for r in rows)
    n_pairs = sum(r["n_ca_ca"] for r in rows)
    return {
        "n": len(rows),
        "ca_ca_valid_fraction": n_valid / n_pairs if n_pairs else float("nan"),
        "ca_ca_mean": _mean(rows, "ca_ca_mean"),
        "clashes_per_structure": _mean(rows, "n_clashes"),
        "tight_local_fraction": _ratio(rows, "n_tight_local", "n_local"),
        "rg_ratio_mean": _mean(rows, "rg_ratio"),
        "helix": _mean(rows, "helix"),
        "strand": _mean(rows, "strand"),
        "strand_valid": _mean(rows, "strand_valid"),
        "coil": _mean(rows, "coil"),
        "helix_strand": _mean(rows, "helix_strand"),
    }


def evaluate_designs(settings: EvalSettings, *, progress: bool = True,
                     warn: Callable[[str], None] | None = None) -> tuple[list[dict], dict]:
    """Metrics per design and a summary of ``settings.designs`` (and of the reference set,
    when given: ``summary["reference"]``, at most ``reference_limit`` chains, for a
    side-by-side view). ``ss_method``: ``"pydssp"`` (default: fast, pure numpy, the same
    everywhere), ``"mkdssp"`` (the reference DSSP binary, ~0.25 s per structure) or
    ``"auto"`` (mkdssp when installed); designs and references always use the same method.

    Files that cannot be read are skipped and listed in ``summary["unreadable"]`` (and told
    to ``warn`` one line each, once something usable is known to remain); with nothing
    readable left, a one-line DataError.
    """
    rows, summary, _ = _evaluate(settings, progress, warn)
    return rows, summary


def _load(source, what: str, limit: int | None, seed: int) -> tuple[list, list[str]]:
    structures, errors = load_structures(source, limit=limit, seed=seed)
    if not structures:
        why = f" ({len(errors)} skipped: {errors[0]})" if errors else ""
        raise DataError(f"{source}: no readable {what}{why}")
    return structures, errors


def _evaluate(settings: EvalSettings, progress: bool, warn):
    """``evaluate_designs`` plus what the plots need: (rows, summary, extras)."""
    s = settings
    method = resolve_ss_method(s.ss_method)
    rng = np.random.default_rng(s.seed)
    structures, errors = _load(s.designs, "design", s.limit, s.seed)
    refs, ref_errors, ref_rows = [], [], []
    if s.reference is not None:
        refs, ref_errors = _load(s.reference, "reference structure", s.reference_limit,
                                 s.seed + 1)
    timings, motif, plans = {}, None, None
    folder = Path(s.designs)
    if folder.is_dir():  # the records of a design folder, read before the long part
        names = {st.name for st in structures}
        timings = read_timings(folder)
        motif = read_motif_summary(folder, names)
        plans = read_topology_summary(folder, names)
    for reason in errors + ref_errors if warn is not None else ():
        warn(f"skipped {reason}")
    max_reference = s.max_reference or None  # 0: every reference in the length window
    n = min(len(structures), s.max_diversity)
    work = len(structures) + len(refs) + n * (n - 1) // 2 + (len(structures) if refs else 0)
    with tqdm(total=work, desc="protein eval", unit="op", disable=not progress) as bar:
        rows = []
        for st in structures:
            rows.append(structure_metrics(st, method))
            bar.update(1)
        for r in refs:
            ref_rows.append(structure_metrics(r, method))
            bar.update(1)
        diversity = _diversity(structures, s.max_diversity, rng, bar)
        if refs:
            for row, (tm, name, k) in zip(rows, _novelty(structures, rows, refs, ref_rows,
                                                         max_reference, bar)):
                row["novelty_tm"], row["novelty_ref"], row["novelty_n_compared"] = tm, name, k
    for row in rows:
        key = Path(row["path"]).name.split(".")[0]
        row["time_s"] = timings.get(row["name"], timings.get(key))
    summary = {
        "designs": str(s.designs),
        "ss_method": method,
        **_set_summary(rows),
        "diversity": diversity,
        "by_length": {
            str(L): _set_summary([r for r in rows if r["length"] == L])
            for L in sorted({r["length"] for r in rows})
        } if len({r["length"] for r in rows}) <= 20 else {},
        "unreadable": errors,
    }
    if motif is not None:
        summary["motif"] = motif
    if plans is not None:
        summary["topology"] = plans
    times = [r["time_s"] for r in rows if r["time_s"] is not None]
    summary["time_per_design_s"] = float(np.mean(times)) if times else None
    if refs:
        novelty = [r["novelty_tm"] for r in rows if np.isfinite(r["novelty_tm"])]
        summary["novelty"] = {
            "median_tm": float(np.median(novelty)) if novelty else float("nan"),
            "mean_tm": float(np.mean(novelty)) if novelty else float("nan"),
            "max_reference_per_design": max_reference,  # None: every reference in the window
            "mean_compared_per_design": _mean(rows, "novelty_n_compared"),
            "prefilter": "length 0.5-2x, nearest by SS/Rg/CA-distance-histogram descriptor",
        }
        summary["reference"] = {"source": str(s.reference), **_set_summary(ref_rows),
                                "unreadable": ref_errors}
    extras = {
        "ref_rows": ref_rows,
        "design_ca": np.concatenate([ca_ca_distances(st.coords[:, 1]) for st in structures]),
        "ref_ca": np.concatenate([ca_ca_distances(r.coords[:, 1]) for r in refs])
        if refs else np.array([]),
        # CA(i)-CA(i+3): a helix's 5.0-5.4 A, under 4.2 A when wound too tight
        "design_i3": np.concatenate([local_distances(st.coords[:, 1], 3) for st in structures]),
        "ref_i3": np.concatenate([local_distances(r.coords[:, 1], 3) for r in refs])
        if refs else np.array([]),
    }
    return rows, summary, extras


# --- output ------------------------------------------------------------------------------
CSV_COLUMNS = ("name", "path", "length", "ca_ca_mean", "ca_ca_max", "ca_ca_valid_fraction",
               "n_clashes", "n_tight_local", "n_local", "rg", "rg_ratio", "helix", "strand",
               "strand_valid", "coil", "helix_strand", "ss_method", "novelty_tm", "novelty_ref",
               "novelty_n_compared", "time_s")


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v)
                         for k, v in row.items() if k in CSV_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def _savefig(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def _plots(out_dir: Path, structures_rows: list[dict], ref_rows: list[dict],
           extras: dict) -> list[str]:
    design_ca, ref_ca = extras["design_ca"], extras["ref_ca"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    # CA-CA histogram
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(2.5, 5.0, 51)
    ax.hist(np.clip(design_ca, 2.5, 5.0), bins=bins, density=True, alpha=0.6, label="designs")
    if len(ref_ca):
        ax.hist(np.clip(ref_ca, 2.5, 5.0), bins=bins, density=True, alpha=0.5, label="reference")
    ax.axvspan(CA_CA_IDEAL_ANG - CA_CA_TOL_ANG, CA_CA_IDEAL_ANG + CA_CA_TOL_ANG, color="grey",
               alpha=0.2)
    ax.set_xlabel("consecutive CA-CA distance (A)")
    ax.set_ylabel("density")
    ax.legend()
    _savefig(fig, out_dir / "ca_ca_hist.png")
    plt.close(fig)
    written.append("ca_ca_hist.png")
    # CA(i)-CA(i+3): where helices wound too tight show up (under LOCAL_TIGHT_ANG)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(3.0, 11.0, 81)
    for key, label, alpha in (("design_i3", "designs", 0.6), ("ref_i3", "reference", 0.5)):
        if len(extras[key]):
            ax.hist(np.clip(extras[key], 3.0, 11.0), bins=bins, density=True, alpha=alpha,
                    label=label)
    ax.axvline(LOCAL_TIGHT_ANG, color="k", ls="--", lw=1, label=f"{LOCAL_TIGHT_ANG:g} A")
    ax.set_xlabel("CA(i)-CA(i+3) distance (A)")
    ax.set_ylabel("density")
    ax.legend()
    _savefig(fig, out_dir / "ca_i3_hist.png")
    plt.close(fig)
    written.append("ca_i3_hist.png")
    # Rg vs length
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if ref_rows:
        ax.scatter([r["length"] for r in ref_rows], [r["rg"] for r in ref_rows], s=6,
                   alpha=0.4, label="reference", color="grey")
    ax.scatter([r["length"] for r in structures_rows], [r["rg"] for r in structures_rows],
               s=10, alpha=0.8, label="designs")
    lengths = [r["length"] for r in structures_rows + ref_rows]
    grid = np.linspace(max(min(lengths), 10), max(lengths), 100)
    if len(ref_rows) >= 5:
        lr = np.log([r["length"] for r in ref_rows])
        lg = np.log([r["rg"] for r in ref_rows])
        b, a = np.polyfit(lr, lg, 1)
        ax.plot(grid, np.exp(a) * grid**b, "k--", label=f"real trend {np.exp(a):.2f} L^{b:.2f}")
    else:
        ax.plot(grid, rg_scaling(grid), "k--", label="2.2 L^0.38")
    ax.set_xlabel("length (residues)")
    ax.set_ylabel("radius of gyration (A)")
    ax.legend(fontsize=8)
    _savefig(fig, out_dir / "rg_vs_length.png")
    plt.close(fig)
    written.append("rg_vs_length.png")
    # SS fractions
    fig, ax = plt.subplots(figsize=(5, 3.5))
    keys = ("helix", "strand", "strand_valid", "coil")
    x = np.arange(len(keys))
    shift = 0.2 if ref_rows else 0.0
    ax.bar(x - shift, [_mean(structures_rows, k) for k in keys], 0.4, label="designs")
    if ref_rows:
        ax.bar(x + 0.2, [_mean(ref_rows, k) for k in keys], 0.4, label="reference")
    ax.set_xticks(x, ["helix", "strand", "strand\n(no CA < 3.8 A)", "coil"])
    ax.set_ylabel("mean fraction")
    ax.legend()
    _savefig(fig, out_dir / "ss_fractions.png")
    plt.close(fig)
    written.append("ss_fractions.png")
    return written


def check_eval_output(settings: EvalSettings, overwrite: bool = False) -> Path:
    """Apply the output rule to ``settings.out_dir`` before any work (see
    :func:`flow3d.io.check_output_dir`), and refuse a folder that is, or holds, the designs
    or the reference set: ``--overwrite`` empties it first."""
    out = check_output_dir(settings.out_dir, "--out", overwrite=overwrite)
    for option, source in (("designs", settings.designs), ("--reference", settings.reference)):
        if source is None:
            continue
        src = Path(source).resolve()
        if out.resolve() == src or out.resolve() in src.parents:
            raise DataError(f"--out {out}: holds the {option.lstrip('-')} it would evaluate "
                            f"({source}); choose another folder")
    return out


def run_eval(settings: EvalSettings, *, overwrite: bool = False, progress: bool = True,
             warn: Callable[[str], None] | None = None) -> dict:
    """Evaluate ``settings.designs`` (against ``settings.reference``) and write CSV, JSON and
    PNG plots to ``settings.out_dir`` (refused when it is not empty, unless ``overwrite``:
    then it is emptied first). Files: ``designs.csv``, ``reference.csv`` (with a
    reference), ``summary.json`` (strict JSON: NaN as null), ``ca_ca_hist.png``,
    ``rg_vs_length.png``, ``ss_fractions.png``. ``warn``: see :func:`evaluate_designs`.
    Returns the summary."""
    out_dir = check_eval_output(settings, overwrite)
    rows, summary, extras = _evaluate(settings, progress, warn)
    ref_rows = extras["ref_rows"]
    prepare_output_dir(out_dir, overwrite=overwrite)
    _write_csv(out_dir / "designs.csv", rows)
    if ref_rows:
        _write_csv(out_dir / "reference.csv", ref_rows)
    summary["plots"] = _plots(out_dir, rows, ref_rows, extras)
    write_json(out_dir / "summary.json", summary)
    return summary


def format_summary(summary: dict) -> str:
    """A short human-readable table of the summary (designs next to the reference)."""
    ref = summary.get("reference", {})
    keys = (("structures", "n", "{:.0f}"),
            ("CA-CA within 3.8+/-0.2 A", "ca_ca_valid_fraction", "{:.3f}"),
            ("clashes per structure", "clashes_per_structure", "{:.2f}"),
            ("CA i..i+4 under 4.2 A", "tight_local_fraction", "{:.4f}"),
            ("Rg / (2.2 L^0.38)", "rg_ratio_mean", "{:.3f}"),
            ("helix", "helix", "{:.3f}"), ("strand", "strand", "{:.3f}"),
            ("strand, no CA within 3.8 A", "strand_valid", "{:.3f}"),
            ("helix + strand", "helix_strand", "{:.3f}"))

    def fmt(d, k, f):
        v = d.get(k)
        return f.format(v) if isinstance(v, (int, float)) and np.isfinite(v) else "-"

    lines = [f"{'metric':<28}{'designs':>10}{'reference':>11}"]
    lines += [f"{label:<28}{fmt(summary, k, f):>10}{fmt(ref, k, f):>11}" for label, k, f in keys]
    div = summary.get("diversity", {})
    lines.append(f"{'mean pairwise TM':<28}{fmt(div, 'mean_pairwise_tm', '{:.3f}'):>10}")
    lines.append(f"{'clusters at TM 0.5':<28}{fmt(div, 'n_clusters', '{:.0f}'):>10}")
    if "novelty" in summary:
        novelty = fmt(summary["novelty"], "median_tm", "{:.3f}")
        lines.append(f"{'median novelty TM':<28}{novelty:>10}")
    motif = summary.get("motif")
    if motif and motif.get("n"):
        lines.append(f"motif {motif['segments']}: RMSD {motif['motif_rmsd']:.2f} A, junction "
                     f"CA-CA valid {fmt(motif, 'junction_valid', '{:.2f}')}, motif-scaffold "
                     f"clashes {motif['motif_scaffold_clashes']:.2f} per design")
    plans = summary.get("topology")
    if plans and plans.get("n"):
        lo, hi = PARTNER_RANGE_ANG
        lines.append(f"fold plans ({plans['sources']} sources): DSSP agrees on "
                     f"{fmt(plans, 'agreement', '{:.3f}')} of planned residues (helix "
                     f"{fmt(plans, 'helix_agreement', '{:.3f}')}, strand "
                     f"{fmt(plans, 'strand_agreement', '{:.3f}')}); paired strands with the "
                     f"partner {lo}-{hi} A away {fmt(plans, 'partner_in_range', '{:.3f}')}")
    if summary.get("time_per_design_s") is not None:
        lines.append(f"{'seconds per design':<28}{summary['time_per_design_s']:>10.3f}")
    lines.append(f"(secondary structure: {summary.get('ss_method')})")
    return "\n".join(lines)
