"""GSDecoder on held-out scenes (issue 16): PSNR / SSIM on views it was not given.

    python -m benchmarks.quality_splat_decoder [--ckpt checkpoints/splat/gsdecoder]
        [--given 0,2,4,6] [--max-scenes 60] [--refine 100] [--split heldout]

Scenes are the held-out split of ``recipes/splat/gsdecoder.yaml``'s data (CAPOD meshes never
trained on, 2 paintings each, 8 views at 64^2 on a black background). The decoder is given
the views ``--given`` and its Gaussians are rendered (CPU rasterizer) at every camera.
Reported, per scene then averaged: PSNR and SSIM over the whole image on the views it was
*not* given (the bar) and on the views it was given (re-rendering), and PSNR over object
pixels only (the true mask or the render's alpha > 0.5): on a black background most pixels
are trivially right, so this is the harder number. Baseline: plain unprojection (one opaque
Gaussian per pixel with depth, pixel-sized, the pixel's colour: the decoder with its last
layer at zero). A decoder with the coverage channel is given the views' true coverage, and
scored again with it binary (``depth > 0``: what it gets from generated views). ``--refine N``
adds the decoder's Gaussians fitted N steps to the given views (:func:`flow3d.splat.fit.polish`,
``flow3d splat reconstruct --refine``). ``--split train`` scores training scenes instead (for
choosing settings without looking at the held-out ones). ``--upscale F`` also renders each
scene's mesh again at F times the size (same painting, same cameras) and scores the decoded
scene rendered at that size: the decoder's Gaussians as they come out (its low-pass), as
``flow3d splat reconstruct`` writes them (the low-pass baked in: :mod:`flow3d.splat.lowpass`;
rendered with 3DGS's 0.3 px^2 at the larger size, as viewers do), against the render at the
cached size upsampled bilinearly.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def score(model, batch, given: list[int], mode: str = "decoder", refine=None) -> dict:
    """Metrics of one scene (``batch`` of one) decoded from ``given`` views; ``mode``: decoder,
    zero (its last layer at zero: unprojection) or binary (binary coverage)."""
    from flow3d.splat.decoder import decoder_inputs, pixel_gaussians, view_inputs
    from flow3d.splat.fit import polish
    from flow3d.splat.metrics import psnr, ssim
    from flow3d.splat.render import render

    views = batch.views(given)
    cams = views.cameras(0)
    cfg = model.cfg
    depth, cov = decoder_inputs(cfg, views.rgb[0], views.depth[0],
                                None if mode == "binary" else views.mask[0])
    x = view_inputs(views.rgb[0], depth, cams, cfg.near, cfg.far, cov)
    t0 = time.perf_counter()
    with torch.no_grad():
        params = model(x.unsqueeze(0))[0]
        if mode == "zero":
            params = torch.zeros_like(params)
        g = pixel_gaussians(params, views.rgb[0], depth, cams, cov)
        if refine is not None:
            g = polish(g, cams, views.rgb[0] * views.mask[0], views.mask[0], refine,
                       cfg.render_settings())
        decode_s = time.perf_counter() - t0
        out = render(g, batch.cameras(0), settings=cfg.render_settings())
    target = batch.rgb[0] * batch.mask[0]
    rgb = out.rgb.clamp(0, 1)
    novel = [v for v in range(batch.rgb.shape[1]) if v not in given]
    res = {"decode_s": decode_s, "gaussians": len(g)}
    for name, idx in (("novel", novel), ("given", given)):
        if not idx:
            continue
        a, b = rgb[idx], target[idx]
        obj = ((batch.mask[0][idx] > 0) | (out.alpha[idx] > 0.5)).expand_as(a)
        res[f"{name}_psnr"] = psnr(a, b)
        res[f"{name}_ssim"] = float(ssim(a, b))
        res[f"{name}_psnr_obj"] = psnr(a[obj], b[obj])
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default="checkpoints/splat/gsdecoder")
    p.add_argument("--given", default="0,2,4,6", help="views given to the decoder")
    p.add_argument("--max-scenes", type=int, default=60)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--refine", type=int, default=0, help="also score N refinement steps")
    p.add_argument("--split", default="heldout", choices=("heldout", "train"))
    p.add_argument("--upscale", type=int, default=0,
                   help="also score the decoded scenes rendered at this many times the size")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from flow3d.engine.checkpoint import load_model
    from flow3d.splat.fit import PolishSettings
    from flow3d.splat.scenes import load_scenes

    given = [int(v) for v in args.given.split(",")]
    loaded = load_model(args.ckpt, head_name="splat_decoder")
    model, head = loaded.model.eval(), loaded.head
    scenes = load_scenes(head.recipe.data, args.split)
    n = min(args.max_scenes, len(scenes))
    runs = {"unprojection (no network)": ("zero", None), "GSDecoder": ("decoder", None)}
    if model.cfg.coverage:
        runs["GSDecoder, binary coverage"] = ("binary", None)
    if args.refine:
        runs[f"GSDecoder + {args.refine} refinement steps"] = (
            "decoder", PolishSettings(steps=args.refine))
    rows = {name: [] for name in runs}
    for i in range(n):
        batch = scenes.batch([i])
        for name, (mode, refine) in runs.items():
            rows[name].append(score(model, batch, given, mode, refine))
    keys = ("novel_psnr", "novel_ssim", "novel_psnr_obj", "given_psnr", "given_psnr_obj")
    d = head.recipe.data
    out = ["## SplatFlow GSDecoder on held-out scenes (quality_splat_decoder)", "",
           f"`python -m benchmarks.quality_splat_decoder --ckpt {args.ckpt} --given "
           f"{args.given} --max-scenes {args.max_scenes} --refine {args.refine} --split "
           f"{args.split}`: {n} {args.split} scenes "
           f"({len(set(scenes.mesh_ids[:n]))} CAPOD meshes), {d.views} views "
           f"at {d.size}^2, given views {given}, the rest novel; black background.", "",
           "| method | novel PSNR | novel SSIM | novel PSNR, object pixels | given PSNR | "
           "given PSNR, object pixels | scenes with novel PSNR >= 26.8 |",
           "|---|---|---|---|---|---|---|"]
    for name, rs in rows.items():
        vals = [np.mean([r[k] for r in rs]) for k in keys]
        hit = np.mean([r["novel_psnr"] >= 26.8 for r in rs])
        out.append(f"| {name} | " + " | ".join(f"{v:.3f}" if "ssim" in k else f"{v:.2f}"
                                              for k, v in zip(keys, vals)) + f" | {hit:.0%} |")
    out.append("")
    for name, rs in rows.items():
        if name.startswith("GSDecoder"):
            out.append(f"{name}: {np.median([r['decode_s'] for r in rs]) * 1000:.0f} ms per "
                       f"scene (median, one thread), {np.median([r['gaussians'] for r in rs]):.0f}"
                       f" Gaussians (median).")
    if args.upscale > 1:
        out += [""] + upscaled(model, scenes, head.recipe.data, args.split, n, given,
                               args.upscale)
    print("\n".join(out))
    return 0


def upscaled(model, scenes, d, split: str, n: int, given: list[int], factor: int) -> list[str]:
    """``--upscale``: the decoded scenes rendered at ``factor`` x the size (module docstring)."""
    import torch.nn.functional as F

    from flow3d.splat.decoder import decode_scene
    from flow3d.splat.lowpass import bake_low_pass
    from flow3d.splat.metrics import psnr
    from flow3d.splat.render import RenderSettings, render
    from flow3d.splat.scenes import render_painting

    look = model.cfg.render_settings()
    methods = (f"decoder's Gaussians (its low-pass, eps2d {look.eps2d:g})",
               "low-pass baked (as written; eps2d 0.3)",
               f"the {d.size}^2 render upsampled bilinearly")
    rows = {m: {"novel": [], "given": []} for m in methods}
    for i in range(n):
        batch = scenes.batch([i])
        mesh = scenes.mesh_ids[i]
        painting = scenes.mesh_ids[:i].count(mesh)
        hi = render_painting(d, split, mesh, painting, d.size * factor)
        cams = batch.cameras(0)
        if float((hi["viewmats"] - batch.viewmats[0]).abs().max()) > 1e-4:
            raise RuntimeError(f"{mesh}: the re-rendered cameras are not the cached ones")
        truth = (hi["rgb"].float() / 255) * (hi["mask"].float() / 255)[..., None]  # uint8
        views = batch.views(given)
        with torch.no_grad():
            g = decode_scene(model, views.rgb[0], views.depth[0], cams[given], views.mask[0])
            big = cams.resized(factor)
            native = render(g, cams, settings=look).rgb.clamp(0, 1)
            renders = {methods[0]: render(g, big, settings=look).rgb,
                       methods[1]: render(bake_low_pass(g, cams[given], look.eps2d), big,
                                          settings=RenderSettings(eps2d=0.3)).rgb,
                       methods[2]: F.interpolate(native.permute(0, 3, 1, 2),
                                                 scale_factor=factor, mode="bilinear",
                                                 align_corners=False).permute(0, 2, 3, 1)}
        novel = [v for v in range(batch.rgb.shape[1]) if v not in given]
        for m, r in renders.items():
            r = r.clamp(0, 1)
            rows[m]["novel"].append(psnr(r[novel], truth[novel]))
            rows[m]["given"].append(psnr(r[given], truth[given]))
    out = [f"At {factor}x the size ({d.size * factor}^2; each scene's mesh rendered again with "
           f"the same painting and cameras; `--upscale {factor}`), {n} scenes:", "",
           f"| rendered at {d.size * factor}^2 | novel PSNR | given PSNR |", "|---|---|---|"]
    for m, r in rows.items():
        out.append(f"| {m} | {np.mean(r['novel']):.2f} | {np.mean(r['given']):.2f} |")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
