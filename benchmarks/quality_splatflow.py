"""SplatFlow on held-out scenes (issue 16): novel views, poses, editing, generation, speed.

    python -m benchmarks.quality_splatflow [--scenes 30] [--per-class 2] [--steps 50]
        [--flow checkpoints/splat/mvflow_class] [--tasks complete,poses,edit,generate]

Scenes: the held-out split of the splat scene cache (CAPOD meshes never trained on, one painting
per mesh, 8 views at 64^2). Models: the bundled multi-view flow, GSDecoder and classifier
(``checkpoints/splat/``). Every task runs the same code as its command
(:func:`flow3d.splat.splatflow.synthesize`).

* **Novel views, half known** (``complete``, views 0, 2, 4, 6 given with their cameras, the
  other four generated at their cameras): PSNR of the generated views against the true renders
  (whole image, black background, and object pixels only), and of the GSDecoder scene decoded
  from all eight re-rendered at the novel cameras; the default (known views warped, the rest
  completed by SDEdit from strength 0.3), from noise (strength 1), and SplatFlow's way (no
  warp: the novel views generated whole). Baseline: the GSDecoder from the four known views
  alone, rendered at the novel cameras (no generation).
* **Poses** (``poses``, every view's colour and depth given, rays generated), in the protocol
  of RelPose++ and Ray Diffusion, whose thresholds the bars use: the share of view pairs whose
  relative rotation is within 15 degrees, and of camera centres within 0.1 of the scene scale
  after the best similarity alignment; and, stricter, each camera in the object's own frame
  (no alignment; the unit box is the scale).
* **Editing** (``edit``): the object's bounding box in every view (2 pixels wider) is
  regenerated as another class (class + 7 mod 15); PSNR of the unmasked pixels against the input
  and the classifier's rate of recognising the requested class.
* **Generation** (``generate``, ``--per-class`` seeds per class): the classifier's rate of
  recognising the requested class, and the GSDecoder's re-render of the generated views at the
  fitted cameras against those views (multi-view consistency); seconds per scene (flow +
  decoder, one thread).
* The classifier's accuracy on the real held-out scenes, for reference.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

CKPT = Path("checkpoints/splat")
TASKS = ("complete", "poses", "edit", "generate")


def _psnr(a, b, where=None) -> float:
    """PSNR (:func:`flow3d.splat.metrics.psnr`) over all pixels or those ``where`` is set."""
    from flow3d.splat.metrics import psnr

    return psnr(a, b) if where is None else psnr(a[where], b[where])


def _settings(task: str, label: str | None, steps: int, seed: int = 0, known=(),
              cfg: float = 2.0):
    from flow3d.splat.splatflow import SplatFlowSettings

    return SplatFlowSettings(task=task, out=Path("unused"), dataset=Path("unused"),
                             label=label, known=known, masks=Path("unused"), steps=steps,
                             seed=seed, cfg=cfg)


def _run(models, lay, known, settings, failures: list):
    """``synthesize``, or None (counted in ``failures``) when no camera fits the generated
    rays: a failed scene, scored as such."""
    from flow3d.errors import DataError
    from flow3d.splat.splatflow import synthesize

    try:
        return synthesize(models, lay, known, settings)
    except DataError as e:
        failures.append(str(e))
        return None


def _db(values) -> str:
    """PSNRs summarised: identical everywhere, or the mean and the worst."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return f"identical in all {len(values)} (infinite PSNR)"
    return (f"{np.mean(finite):.1f} dB mean over the {len(finite)} not identical, worst "
            f"{np.min(finite):.1f} dB ({len(values) - len(finite)} identical)")


def _class_name(i: int) -> str:
    from flow3d.mesh.data import CAPOD_CLASSES

    return CAPOD_CLASSES[i].lower()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=30)
    p.add_argument("--per-class", type=int, default=2)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--flow", default=str(CKPT / "mvflow_class"))
    p.add_argument("--decoder", default=str(CKPT / "gsdecoder"))
    p.add_argument("--classifier", default=str(CKPT / "classifier"))
    p.add_argument("--tasks", default=",".join(TASKS),
                   help=f"which parts to run (of {','.join(TASKS)})")
    p.add_argument("--cfg", type=float, default=2.0, help="guidance on colour and depth "
                   "(generate and edit; the commands' default)")
    args = p.parse_args(argv)
    tasks = set(args.tasks.split(","))
    if tasks - set(TASKS):
        p.error(f"--tasks: unknown {sorted(tasks - set(TASKS))}; choose from {TASKS}")
    torch.set_num_threads(args.threads)
    from flow3d.engine.checkpoint import load_frozen, load_model
    from flow3d.splat.decoder import decode_scene
    from flow3d.splat.mvflow import SceneLayout
    from flow3d.splat.rays import pose_errors, relative_rotation_errors_deg, scene_scale
    from flow3d.splat.render import render
    from flow3d.splat.scenes import load_scenes
    from flow3d.splat.splatflow import DEFAULT_STRENGTH, Models, known_state

    flow = load_model(args.flow)
    models = Models(flow.model.eval(), flow.head, load_frozen(args.decoder, "splat_decoder",
                                                              "GSDecoder"))
    judge = load_frozen(args.classifier, "splat_classifier", "classifier")
    m = flow.recipe.model
    look = models.decoder.cfg.render_settings()  # how the decoder's Gaussians are rendered
    lay = SceneLayout(m.views, m.size, m.patch, m.near, m.far)
    scenes = load_scenes(flow.recipe.data, "heldout")
    first = sorted({ids: i for i, ids in reversed(list(enumerate(scenes.mesh_ids)))}.values())
    rows = first[: args.scenes]
    out = ["## SplatFlow on held-out scenes (quality_splatflow)", "",
           f"`python -m benchmarks.quality_splatflow --scenes {args.scenes} --per-class "
           f"{args.per_class} --steps {args.steps} --cfg {args.cfg:g} --flow {args.flow} --tasks "
           f"{args.tasks}`: "
           f"{len(rows)} held-out scenes (one painting "
           f"of each of {len(rows)} CAPOD meshes never trained on), {m.views} views at "
           f"{m.size}^2, {args.steps} Euler steps.", ""]

    # reference: the classifier on real scenes
    with torch.no_grad():
        real = [int(judge(scenes.batch([i]).rgb, scenes.batch([i]).depth).argmax())
                == int(scenes.label[i]) for i in rows]
    out.append(f"Classifier on the real held-out scenes: {np.mean(real):.0%} correct.")
    failed: list[str] = []
    out.append("")

    # novel views, half known: completed with the known views' Gaussians warped (default) and
    # generated whole (SplatFlow's way)
    known_views, novel = [0, 2, 4, 6], [1, 3, 5, 7]
    configs = {f"complete: known views warped, the rest generated from strength "
               f"{DEFAULT_STRENGTH:g} (default)": (True, None),
               "complete --strength 1: known views warped, the rest generated from noise":
               (True, 1.0),
               "complete --no-warp: novel views generated whole (SplatFlow)": (False, None)}
    res = {name: ([], [], []) for name in configs}
    base_p = []
    for i in rows if "complete" in tasks else []:
        b = scenes.batch([i])
        cams = b.cameras(0)
        k = known_state(lay, "complete", rgb=b.rgb * (b.depth > 0), depth=b.depth, K=b.K,
                        viewmats=b.viewmats, num_views=m.views, known=known_views,
                        cameras=cams)
        truth = (b.rgb * b.mask)[0]
        for name, (warp, strength) in configs.items():
            s = dataclasses.replace(_settings("complete", None, args.steps,
                                              known=tuple(known_views)), warp=warp,
                                    strength=strength)
            r = _run(models, lay, k, s, failed)
            if r is None:
                continue
            obj = (b.mask[0] > 0) | (r.depth > 0)
            gen_p, gen_po, dec_p = res[name]
            gen_p.append(_psnr(r.rgb[novel], truth[novel]))
            gen_po.append(_psnr(r.rgb[novel], truth[novel], obj[novel].expand_as(r.rgb[novel])))
            with torch.no_grad():
                dec = render(r.scene, cams[novel], settings=look).rgb.clamp(0, 1)
            dec_p.append(_psnr(dec, truth[novel]))
        with torch.no_grad():
            only = decode_scene(models.decoder, b.rgb[0, known_views],
                                b.depth[0, known_views], cams[known_views])
            base = render(only, cams[novel], settings=look).rgb.clamp(0, 1)
        base_p.append(_psnr(base, truth[novel]))
    if "complete" in tasks:
        out += ["### Novel views with half of the views known (bar >= 22 dB)", "",
                "| method | PSNR of the 4 novel views | object pixels | GSDecoder of all 8, "
                "rendered at the novel cameras |", "|---|---|---|---|"]
        for name, (gen_p, gen_po, dec_p) in res.items():
            out.append(f"| {name} | {np.mean(gen_p):.2f} | {np.mean(gen_po):.2f} | "
                       f"{np.mean(dec_p):.2f} |")
        out += [f"| GSDecoder of the 4 known only (no generation) | {np.mean(base_p):.2f} | | "
                "|", ""]

    # poses: RelPose++ / Ray Diffusion's protocol (relative rotations of every pair of views;
    # centres after the best similarity, over the scene scale), and the object's own frame
    if "poses" in tasks:
        rel, cen, rot_abs, cen_abs, per_scene = [], [], [], [], []
        for i in rows:
            b = scenes.batch([i])
            true = b.cameras(0)
            k = known_state(lay, "poses", rgb=b.rgb * (b.depth > 0), depth=b.depth, K=b.K,
                            viewmats=b.viewmats, num_views=m.views, cameras=true)
            r = _run(models, lay, k, _settings("poses", None, args.steps), failed)
            pairs = m.views * (m.views - 1) // 2
            if r is None:  # no cameras: every one wrong
                rel += [180.0] * pairs
                cen += [math.inf] * m.views
                rot_abs += [180.0] * m.views
                cen_abs += [math.inf] * m.views
                per_scene.append((0.0, 0.0))
                continue
            e_rel = relative_rotation_errors_deg(r.fitted, true)
            try:
                e_cen = pose_errors(r.fitted, true, align=True, scale=scene_scale(true))["center"]
            except ValueError:  # centres on a line: no similarity, every one wrong
                e_cen = torch.full((m.views,), math.inf)
            e_abs = pose_errors(r.fitted, true, align=False)
            rel += e_rel.tolist()
            cen += e_cen.tolist()
            rot_abs += e_abs["rotation_deg"].tolist()
            cen_abs += e_abs["center"].tolist()
            per_scene.append((float((e_rel < 15).double().mean()),
                              float((e_cen < 0.1).double().mean())))
        rel, cen = np.array(rel), np.array(cen)
        rot_abs, cen_abs = np.array(rot_abs), np.array(cen_abs)
        out += ["### Pose estimation (bars: rotation within 15 degrees for >= 60%, centre within "
                "0.1 for >= 90%)", "",
                "Colour and depth of all 8 views given, rays generated, cameras fitted. "
                "RelPose++ / Ray Diffusion's protocol: rotation = the relative rotation of every "
                "pair of views; centre = after the similarity that best aligns the centres "
                "(Umeyama), over the scene scale (centroid of the true centres to the farthest). "
                "Object frame: each camera against the true one, no alignment (unit box).", "",
                "| protocol | rotation < 15 deg | centre < 0.1 | median rotation error | median "
                "centre error |", "|---|---|---|---|---|",
                f"| RelPose++ ({len(rel)} pairs, {len(cen)} cameras) | {np.mean(rel < 15):.0%} | "
                f"{np.mean(cen < 0.1):.0%} | {np.median(rel):.1f} deg | {np.median(cen):.3f} |",
                f"| object frame ({len(rot_abs)} cameras) | {np.mean(rot_abs < 15):.0%} | "
                f"{np.mean(cen_abs < 0.1):.0%} | {np.median(rot_abs):.1f} deg | "
                f"{np.median(cen_abs):.3f} |", "",
                f"Per scene (RelPose++): median share of pairs within 15 deg "
                f"{np.median([a for a, _ in per_scene]):.0%}, of centres within 0.1 "
                f"{np.median([c for _, c in per_scene]):.0%}.", ""]

    # editing
    if "edit" in tasks:
        kept, hit = [], []
        for i in rows:
            b = scenes.batch([i])
            fg = b.mask[0, ..., 0] > 0
            box = torch.zeros_like(fg)
            for v in range(m.views):
                ys, xs = torch.nonzero(fg[v], as_tuple=True)
                if len(ys):
                    box[v, max(int(ys.min()) - 2, 0): int(ys.max()) + 3,
                        max(int(xs.min()) - 2, 0): int(xs.max()) + 3] = True
            target = (int(b.label[0]) + 7) % 15
            k = known_state(lay, "edit", rgb=b.rgb * (b.depth > 0), depth=b.depth, K=b.K,
                            viewmats=b.viewmats, num_views=m.views, edit_mask=box,
                            cameras=b.cameras(0))
            r = _run(models, lay, k, _settings("edit", _class_name(target), args.steps,
                                                   cfg=args.cfg), failed)
            if r is None:
                hit.append(False)
                continue
            keep = (~box)[..., None].expand_as(r.rgb)
            kept.append(_psnr(r.rgb, (b.rgb * (b.depth > 0))[0], keep))
            with torch.no_grad():
                hit.append(int(judge(r.rgb[None], r.depth[None]).argmax()) == target)
        out += ["### Editing (bars: unmasked >= 35 dB, requested class recognised in >= 70%)", "",
                f"Unmasked pixels against the input: {_db(kept)}; requested class recognised in "
                f"{np.mean(hit):.0%} of {len(hit)} edits.", ""]

    # generation
    if "generate" in tasks:
        hit, cons, secs = [], [], []
        for c in range(m.num_classes):
            for seed in range(args.per_class):
                t0 = time.perf_counter()
                r = _run(models, lay, known_state(lay, "generate"),
                         _settings("generate", _class_name(c), args.steps, seed,
                                   cfg=args.cfg), failed)
                if r is None:
                    hit.append(False)
                    continue
                secs.append(time.perf_counter() - t0)
                with torch.no_grad():
                    hit.append(int(judge(r.rgb[None], r.depth[None]).argmax()) == c)
                    re = render(r.scene, r.cameras, settings=look).rgb.clamp(0, 1)
                cons.append(_psnr(re, r.rgb))
        out += ["### Generation (bars: class recognised >= 80%, re-render >= 25 dB, <= 60 s)", "",
                f"{len(hit)} scenes ({args.per_class} seeds x {m.num_classes} classes): requested "
                f"class recognised in {np.mean(hit):.0%}; GSDecoder re-render of the generated "
                f"views at their fitted cameras {np.mean(cons):.2f} dB (min {np.min(cons):.2f}); "
                f"{np.median(secs):.1f} s per scene (median, flow + cameras + decoder, one "
                f"thread; max {np.max(secs):.1f} s).", "",
                f"Runs where no camera fitted the generated rays (scored as failures): "
                f"{len(failed)}."]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
