"""Class-conditional generation against the held-out meshes of the class: for each CAPOD
class, one mesh per generator (seed 0, 50 steps, ``--resolution``), scored against each
held-out mesh of its class; the best match counts (a class sample has no single right answer).

    python -m benchmarks.quality_mesh_class [--resolution 128] [--classes 0 8]
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.bench_mesh import CKPT, _or_none, _score, capod_files, class_of


def main() -> None:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--classes", type=int, nargs=2, default=(0, 15), help="first, end")
    args = p.parse_args()
    torch.set_num_threads(1)
    from flow3d.engine.checkpoint import load_model
    from flow3d.mesh.data import CAPOD_CLASSES, load_mesh, normalize_mesh
    from flow3d.mesh.pipeline import GenerateSettings, generate
    from flow3d.mesh.sparse_generate import load_two_stage

    _, held = capod_files()
    gens = {"two-stage (cfg 3)": (load_two_stage(CKPT / "structure_class", CKPT / "slat"), 3.0),
            "vector set (cfg 5)": (load_model(CKPT / "flow_class", head_name="mesh_flow"), 5.0)}
    rows: dict[str, list] = {k: [] for k in gens}
    for c, name in enumerate(CAPOD_CLASSES):
        if not args.classes[0] <= c < args.classes[1]:
            continue
        gts = [normalize_mesh(load_mesh(f))[0] for f in held if class_of(f) == c]
        for g, (models, cfg) in gens.items():
            s = GenerateSettings(label=name, steps=50, cfg=cfg, resolution=args.resolution)
            mesh = _or_none(generate, s, models=models)
            scores = [_score(mesh, gt) for gt in gts]
            rows[g].append(max(scores, key=lambda m: m["fscore@0.05"]))
            print(f"  {name} {g} {rows[g][-1]['fscore@0.05']:.3f}", flush=True)
    print("\n| generator | F@0.05 (best held-out mesh of the class) | F@0.02 | normal consistency "
          "| watertight | one piece |\n|---|---|---|---|---|---|")
    for g, r in rows.items():
        m = {k: float(np.mean([x[k] for x in r])) for k in r[0]}
        print(f"| {g} | {m['fscore@0.05']:.3f} | {m['fscore@0.02']:.3f} | "
              f"{m['normal_consistency']:.3f} | {m['watertight']:.2f} | {m['one_piece']:.2f} |")


if __name__ == "__main__":
    main()
