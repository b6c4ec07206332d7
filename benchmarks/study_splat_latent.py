"""Would SplatFlow's flow be better in a latent space? How well a small per-view autoencoder
trained here keeps the views (issue 16: "a small image + depth autoencoder trained here, or
pixel space with patching if you measure that it is better at this size").

    python -m benchmarks.study_splat_latent [--channels 4,8,16] [--steps 1500] [--down 8]

The bundled flow works in pixel space (8x8 patches: tokens of 262 numbers through a 192-wide
DiT) and, after 1,600 CPU steps, its clean-scene predictions at ``t <= 0.5`` are 8x8 patches of
mean colour and its samples are scattered fragments. A latent flow would see tokens of ``C +
6`` numbers instead; what it could never produce is what the autoencoder loses. This study
trains, for each ``C``, a convolutional autoencoder on the training views of the scene cache
(``recipes/splat/mvflow_class.yaml``'s data: colour and disparity, 64^2, black background)
from ``64^2 x 4`` to ``(64 / down)^2 x C`` and back (L1 on colour and disparity, no KL: the
latent is normalised afterwards, as for the mesh VAE), then reports on the held-out views:
PSNR of the colour (whole image and object pixels), disparity error on the object, the
silhouette IoU of the decoded disparity, and the seconds it took. Throwaway models: nothing is
saved; the numbers go to docs/benchmarks.md. Reference row: the views average-pooled to the
latent's size and interpolated back (no network).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn


def _block(cin: int, cout: int, down: bool) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, 4, 2, 1) if down else nn.ConvTranspose2d(cin, cout, 4, 2, 1)
    return nn.Sequential(conv, nn.GroupNorm(8, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())


class ViewAutoencoder(nn.Module):
    """``[B, 4, S, S]`` (colour and disparity in [-1, 1]) -> ``[B, C, S / down, S / down]``
    -> back; widths double on the way down from 32."""

    def __init__(self, channels: int, down: int):
        super().__init__()
        stages = int(np.log2(down))
        widths = [32 * 2**i for i in range(stages)]
        enc, cin = [nn.Conv2d(4, widths[0], 3, padding=1), nn.SiLU()], widths[0]
        for w in widths:
            enc.append(_block(cin, w, True))
            cin = w
        enc.append(nn.Conv2d(cin, channels, 1))
        dec = [nn.Conv2d(channels, cin, 3, padding=1), nn.SiLU()]
        for w in reversed(widths):
            dec.append(_block(cin, w, False))
            cin = w
        dec.append(nn.Conv2d(cin, 4, 3, padding=1))
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.decoder(self.encoder(x)))


def _views(scenes, near: float, far: float) -> torch.Tensor:
    """Every view of a scene set as ``[N V, 4, S, S]`` in [-1, 1] (the flow's pixel channels)."""
    from flow3d.splat.decoder import disparity

    depth = scenes.depth.float().unsqueeze(-1)
    rgb = scenes.rgb.float() / 255 * (depth > 0)
    disp = disparity(depth, near, far).clamp(0, 1)
    x = torch.cat([2 * rgb - 1, 2 * disp - 1], -1)
    return x.reshape(-1, *x.shape[2:]).permute(0, 3, 1, 2).contiguous()


def _scores(model: ViewAutoencoder, x: torch.Tensor) -> dict:
    from flow3d.splat.metrics import psnr

    with torch.no_grad():
        y = torch.cat([model(x[i: i + 256]) for i in range(0, len(x), 256)])
    rgb_t, rgb_y = (x[:, :3] + 1) / 2, (y[:, :3] + 1) / 2
    obj = x[:, 3:] > -1 + 2 * 0.04  # the flow's background threshold on disparity
    pred_obj = y[:, 3:] > -1 + 2 * 0.04
    d_err = ((y[:, 3:] - x[:, 3:]).abs() / 2)[obj]
    inter = (obj & pred_obj).flatten(1).sum(1).float()
    union = (obj | pred_obj).flatten(1).sum(1).float().clamp_min(1)
    o = obj.expand_as(rgb_t)
    return {"psnr": psnr(rgb_y, rgb_t), "psnr_obj": psnr(rgb_y[o], rgb_t[o]),
            "disp_err": float(d_err.mean()), "iou": float((inter / union).mean())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", default="4,8,16")
    p.add_argument("--down", type=int, default=8)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--recipe", default="recipes/splat/mvflow_class.yaml")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from flow3d.engine.config import load_recipe
    from flow3d.splat.scenes import load_scenes

    recipe = load_recipe(args.recipe)
    m = recipe.model
    train = _views(load_scenes(recipe.data, "train"), m.near, m.far)
    held = _views(load_scenes(recipe.data, "heldout"), m.near, m.far)
    out = ["## Would the multi-view flow be better in a latent space? (study_splat_latent)", "",
           f"`python -m benchmarks.study_splat_latent --channels {args.channels} --down "
           f"{args.down} --steps {args.steps}`: per-view autoencoders trained on the "
           f"{len(train)} training views (batch {args.batch}, AdamW 1e-3, L1), scored on the "
           f"{len(held)} held-out views (64^2, CAPOD meshes never trained on).", "",
           "| latent | numbers per view | parameters | colour PSNR | object pixels | "
           "disparity error (object) | silhouette IoU | train minutes |",
           "|---|---|---|---|---|---|---|---|"]
    side = m.size // args.down

    class _Pool(nn.Module):  # no network: average pooling to the latent size and back
        def forward(self, x):
            small = nn.functional.avg_pool2d(x, args.down)
            return nn.functional.interpolate(small, scale_factor=args.down, mode="bilinear")

    s = _scores(_Pool(), held)
    out.append(f"| {side}^2 x 4, average pooling, bilinear back (no network) | {side * side * 4} "
               f"| 0 | {s['psnr']:.2f} | {s['psnr_obj']:.2f} | {s['disp_err']:.4f} | "
               f"{s['iou']:.3f} | 0 |")
    for c in (int(v) for v in args.channels.split(",")):
        torch.manual_seed(0)
        model = ViewAutoencoder(c, args.down)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            idx = torch.randint(len(train), (args.batch,), generator=g)
            x = train[idx]
            y = model(x)
            w = torch.tensor([1.0, 1.0, 1.0, 2.0]).view(1, 4, 1, 1)
            loss = ((y - x).abs() * w).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        minutes = (time.perf_counter() - t0) / 60
        s = _scores(model.eval(), held)
        n = sum(q.numel() for q in model.parameters())
        out.append(f"| {side}^2 x {c} | {side * side * c} | {n / 1e6:.2f}M | {s['psnr']:.2f} | "
                   f"{s['psnr_obj']:.2f} | {s['disp_err']:.4f} | {s['iou']:.3f} | "
                   f"{minutes:.1f} |")
        print(out[-1], flush=True)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
