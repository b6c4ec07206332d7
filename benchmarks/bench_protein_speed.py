"""Protein sampler speed at ReQFlow's base size: our pair-feature fast path against our plain
reference path (the slow twin), optionally against the reference ReQFlow, side by side in one
process, same torch, one thread, interleaved runs (the order reversed on every other rep),
process CPU time and wall time, medians.

    python -m benchmarks.bench_protein_speed [--configs fwd100,fwd300,s100x10] \
        [--variants plain,fast,bf16] [--reqflow DIR] [--out results.jsonl]

Variants (all the same ``recipes/protein/base.yaml`` model, untrained weights, seed 0):
  plain   ``model.fast = False``: the straightforward code (concatenated pair inputs)
  fast    the factorised pair updates in float32 (``model.pair_precision: fp32``: exact)
  bf16    the fast path with ``model.pair_precision: bf16`` (pair products in bfloat16, in
          sampling and training; what the default ``auto`` does on a CPU with AMX-BF16)
  reqflow ReQFlow's FlowModel from ``DIR/configs/inference_unconditional.yaml`` sampled as
          its ``predict_step`` does (``Interpolant.sample``), when ``--reqflow DIR`` is given
          (DIR: a ReQFlow source tree; its imports need hydra-core, omegaconf, einops,
          dm-tree, biopython and a ``torch_scatter`` stub, see
          ../shared/anchors/reqflow_speed/README.md; the run must start in DIR's parent-free
          environment, this script puts DIR on sys.path and chdirs there).
Configurations: ``fwdL`` one forward pass (no grad, self-conditioning input given) at length
L; ``sLxN`` one design of length L with N Euler steps (self-conditioning, exponential rotation
schedule at rate 10, as the recipe); ``trainBxL`` one training step at batch B, length L on
random frames: forward + backward of a mean-squared error on the predicted translations +
AdamW (the same proxy on both sides, so the network's cost is what is compared); the bf16
variant trains with its bfloat16 pair products (float32 weights and optimiser), as
``flow3d train`` does with ``model.pair_precision: bf16`` or ``auto`` on AMX.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="fwd100,fwd300,s100x10")
    p.add_argument("--variants", default="plain,fast,bf16")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reqflow", default=None, help="ReQFlow source tree (adds 'reqflow')")
    p.add_argument("--out", default=None, help="append JSON lines here")
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    from flow3d.engine.config import load_recipe
    from protein.head import ProteinHead
    from protein.settings import SamplerSettings

    out = open(args.out, "a") if args.out else None  # noqa: SIM115 (appended to per record)

    def log(rec):
        rec["load1"] = round(os.getloadavg()[0], 2)
        line = json.dumps(rec)
        print(line, file=sys.stderr, flush=True)  # stdout: the markdown section only
        if out:
            out.write(line + "\n")
            out.flush()

    variants = args.variants.split(",")
    if args.reqflow:
        variants.append("reqflow")
    head = ProteinHead(load_recipe(ROOT / "recipes" / "protein" / "base.yaml"))
    models = {}
    for v in variants:
        if v == "reqflow":
            continue
        torch.manual_seed(0)
        m = head.build_model().eval()
        m.fast = v != "plain"
        m.set_pair_precision("bf16" if v == "bf16" else "fp32")
        models[v] = m
    ref = interpolant_cls = icfg = None
    if "reqflow" in variants:
        here = os.getcwd()
        sys.path.insert(0, os.path.abspath(args.reqflow))
        os.chdir(args.reqflow)
        from data.interpolant import Interpolant as interpolant_cls  # noqa: N813
        from hydra import compose, initialize_config_dir
        from models.flow_model import FlowModel

        with initialize_config_dir(config_dir=os.path.abspath("configs"), version_base=None):
            cfg = compose("inference_unconditional")
        torch.manual_seed(0)
        ref = FlowModel(cfg.model).eval()
        icfg = cfg.inference.interpolant
        os.chdir(here)
    log({"event": "setup", "torch": torch.__version__, "threads": torch.get_num_threads(),
         "variants": variants,
         "params": {v: sum(p.numel() for p in m.parameters())
                    for v, m in {**models, **({"reqflow": ref} if ref else {})}.items()}})

    def fwd_inputs(L, B=1, seed=0):
        g = torch.Generator().manual_seed(seed)
        trans = torch.randn(B, L, 3, generator=g)
        quats = torch.nn.functional.normalize(torch.randn(B, L, 4, generator=g), dim=-1)
        sc = torch.randn(B, L, 3, generator=g)
        mask = torch.ones(B, L)
        ours = (trans, quats, torch.full((B,), 0.5), mask, torch.arange(L).expand(B, L), sc)
        theirs = {"res_mask": mask, "diffuse_mask": mask,
                  "res_idx": torch.arange(L, dtype=torch.float32).expand(B, L),
                  "trans_t": trans * 10.0, "rotquats_t": quats, "t": torch.full((B, 1), 0.5),
                  "so3_t": torch.full((B, 1), 0.5), "r3_t": torch.full((B, 1), 0.5),
                  "trans_sc": sc * 10.0}
        return ours, theirs

    def runner(v, name):
        if name.startswith("fwd"):
            L = int(name[3:])
            oa, rb = fwd_inputs(L)
            if v == "reqflow":
                return lambda: ref(rb)["pred_trans"]
            return lambda: models[v](*oa)["trans"]
        if name.startswith("train"):
            B, L = (int(x) for x in name[5:].split("x"))
            oa, rb = fwd_inputs(L, B)
            net = ref if v == "reqflow" else models[v]
            # the recipes' lr: a tiny one (1e-12) leaves the zero-initialised layers at
            # about 1e-12, and the backward pass then runs on subnormal floats and slows
            # down step after step (ReQFlow's backward from 1.6 to 9.5 s in six steps)
            opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

            def step():
                net.train()
                with torch.enable_grad():
                    pred = net(rb)["pred_trans"] / 10.0 if v == "reqflow" else net(*oa)["trans"]
                    loss = ((pred - oa[0]) ** 2).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                net.eval()
                return pred.detach()

            return step
        L, N = (int(x) for x in name[1:].split("x"))
        if v == "reqflow":
            def sample_ref():
                torch.manual_seed(0)
                icfg.sampling.num_timesteps = N
                interp = interpolant_cls(icfg)
                interp.set_device("cpu")
                traj, *_ = interp.sample(1, L, ref, trans_1=None, rotmats_1=None,
                                         diffuse_mask=torch.ones(1, L))
                return traj[-1][0]

            return sample_ref
        settings = SamplerSettings(steps=N).resolved(head.recipe.sample)

        def sample_ours():
            g = torch.Generator().manual_seed(0)
            return head.flow.sample(models[v], 1, L, settings, generator=g).trans

        return sample_ours

    summary = {}
    for name in args.configs.split(","):
        fns = {v: runner(v, name) for v in variants}
        warm = f"{name.split('x')[0]}x2" if name.startswith("s") else name  # 2: ReQFlow's least
        with torch.no_grad():
            for v in variants:  # warm-up
                runner(v, warm)()
            cpu = {v: [] for v in variants}
            wall = {v: [] for v in variants}
            for r in range(args.reps):
                order = variants if r % 2 == 0 else variants[::-1]
                for v in order:
                    t0, c0 = time.perf_counter(), time.process_time()
                    res = fns[v]()
                    dt, dc = time.perf_counter() - t0, time.process_time() - c0
                    assert torch.isfinite(res).all()
                    cpu[v].append(dc)
                    wall[v].append(dt)
                    log({"event": "run", "config": name, "rep": r, "variant": v,
                         "cpu_s": round(dc, 4), "wall_s": round(dt, 4)})
        med = {v: statistics.median(cpu[v]) for v in variants}
        medw = {v: statistics.median(wall[v]) for v in variants}
        summary[name] = {"cpu_median_s": med, "wall_median_s": medw}
        log({"event": "summary", "config": name, "reps": args.reps, "cpu_median_s": med,
             "wall_median_s": medw})
    base = "reqflow" if "reqflow" in variants else variants[0]
    print("## Protein sampler speed: fast path, bf16 pairs, plain twin (bench_protein_speed)\n")
    n_params = sum(p.numel() for p in next(iter(models.values())).parameters())
    print(f"`python -m benchmarks.bench_protein_speed {' '.join(argv or sys.argv[1:])}`: "
          f"`recipes/protein/base.yaml` ({n_params:,} parameters, untrained), "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, "
          f"process CPU seconds, median of {args.reps} interleaved runs; load average "
          f"{os.getloadavg()[0]:.1f} at the end (a shared machine). Variants: see the script's "
          "docstring; fwdL = one forward, sLxN = one design of length L in N Euler steps, "
          "trainBxL = forward + backward + AdamW at batch B.")
    print(f"\n| configuration | {' | '.join(f'{v} CPU s' for v in variants)} | "
          f"{' | '.join(f'{v} / {base}' for v in variants if v != base)} |")
    print("|---" * (1 + 2 * len(variants) - 1) + "|")
    for name, s in summary.items():
        m = s["cpu_median_s"]
        cells = [f"{m[v]:.3f}" for v in variants]
        ratios = [f"{m[v] / m[base]:.2f}" for v in variants if v != base]
        print(f"| {name} | {' | '.join(cells)} | {' | '.join(ratios)} |")
    if out:
        out.close()
    return summary


if __name__ == "__main__":
    main()
