"""Motif scaffolding with the bundled protein checkpoint: how designs hold real motifs.

    python -m benchmarks.quality_motif [--num 8] [--steps 50] [--seed 0] [--json out.json]

Five motifs cut from TS50 chains (../shared/data/proteins/ts50_pydssp/pdb): a helix, a strand
plus a helix placed 30 residues apart, two beta hairpins and a coil loop. For each, ``--num``
designs (the default sampler: clash guidance on) and, per motif, the mean motif RMSD, the
fraction of junction CA-CA distances within 3.8 +/- 0.2 A, motif-scaffold clashes (CA pairs
under 3.0 A), the whole design's CA-CA validity and clashes, whether the motif keeps its
secondary structure in the design (pydssp, motif residues only, against the motif in its
native chain) and seconds per design. Prints a markdown table (recorded in
docs/benchmarks.md, quality_motif). About a minute on this 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TS50 = ROOT / ".." / "shared" / "data" / "proteins" / "ts50_pydssp" / "pdb"
MOTIFS = (  # (what, file, segments, design length)
    ("helix (13)", "1pdoA.pdb", "A13-25@20", 80),
    ("strand (5) + helix (13)", "1pdoA.pdb", "A4-8@10,A13-25@40", 90),
    ("beta hairpin (16)", "3gknA.pdb", "A107-122@30", 80),
    ("beta hairpin (18)", "2qdlA.pdb", "A81-98@40", 100),
    ("coil loop (11)", "1v7mV.pdb", "V28-38@30", 70),
)


def _native_ss(motif) -> str:
    """pydssp of the motif residues inside their own chain (their native context)."""
    from protein.data import parse_structure
    from protein.data.filters import secondary_structure

    chains = {c.chain_id: c for c in parse_structure(motif.source).chains}
    ss_of = {cid: secondary_structure(c.coords) for cid, c in chains.items()
             if cid in {seg.chain for seg in motif.segments}}
    out = []
    for seg in motif.segments:
        ch, ss = chains[seg.chain], ss_of[seg.chain]
        idx = [int(np.nonzero(ch.res_numbers == n)[0][0]) for n in range(seg.first, seg.last + 1)]
        out.append((seg.at, "".join(ss[i] for i in idx)))
    return "".join(s for _, s in sorted(out))


def run(num: int, steps: int, seed: int) -> list[dict]:
    from protein.data.filters import secondary_structure
    from protein.design import load_designer
    from protein.metrics import ca_ca_valid_fraction, count_clashes
    from protein.motif import load_motif, motif_metrics, summarize_motif_metrics

    loaded = load_designer()
    rows = []
    for what, fname, spec, length in MOTIFS:
        motif = load_motif(TS50 / fname, spec)
        native = _native_ss(motif)
        start = time.perf_counter()
        designs = loaded.sample(num, seed=seed, lengths=(length,), steps=steps, motif=motif)
        seconds = (time.perf_counter() - start) / num
        per = [motif_metrics(d.atoms, motif, d.motif_positions) for d in designs]
        junctions = np.concatenate([m["junction_ca_ca"] for m in per])  # for their range
        ca_valid, clashes, kept = [], [], []
        for d in designs:
            ca = d.atoms[:, 1].astype(np.float64)
            ca_valid.append(ca_ca_valid_fraction(ca))
            clashes.append(count_clashes(ca))
            ss = secondary_structure(d.atoms)
            kept.append(np.mean([ss[p] == n for p, n in zip(d.motif_positions.tolist(), native)]))
        rows.append({
            "motif": what, "file": fname, "segments": spec, "length": length,
            "native_ss": native,
            **summarize_motif_metrics(per),
            "junction_range": [float(junctions.min()), float(junctions.max())],
            "ca_ca_valid": float(np.mean(ca_valid)),
            "clashes": float(np.mean(clashes)),
            "motif_ss_kept": float(np.mean(kept)),
            "seconds_per_design": seconds,
        })  # fmt: skip
    return rows


def table(rows: list[dict], num: int, steps: int, seed: int) -> str:
    lines = [f"{num} designs per motif, {steps} steps, seed {seed}, the bundled default "
             "(clash guidance on):", "",
             "| motif | segments (file) | length | motif RMSD (A) | junction CA-CA valid "
             "(range, A) | motif-scaffold clashes | CA-CA valid | clashes | motif SS kept | "
             "s / design |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["junction_range"]
        lines.append(
            f"| {r['motif']} `{r['native_ss']}` | {r['segments']} ({r['file']}) | {r['length']} "
            f"| {r['motif_rmsd']:.3f} | {r['junction_valid']:.2f} ({lo:.2f}-{hi:.2f}) | "
            f"{r['motif_scaffold_clashes']:.2f} | {r['ca_ca_valid']:.3f} | {r['clashes']:.2f} | "
            f"{r['motif_ss_kept']:.2f} | {r['seconds_per_design']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    if not TS50.is_dir():
        raise SystemExit(f"{TS50}: the TS50 chains are needed (../shared/data)")
    rows = run(args.num, args.steps, args.seed)
    print(table(rows, args.num, args.steps, args.seed))  # noqa: T201 - a report script
    if args.json:
        from flow3d.io import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
