"""Protein head benchmark: time per design, training throughput, sampling profile.

    python -m benchmarks.bench_protein [--quick] [--threads 1] [--device cuda]

Prints a markdown section (recorded in docs/benchmarks.md by ``benchmarks.run_all``):
- seconds per design for lengths 100 and 300 at 10, 50 and 200 Euler steps, batch 1 and 16,
  for the ``tiny`` and ``base`` (ReQFlow size, 16.7M) models. A configuration is solved for
  real when its estimated cost is under ``--budget`` seconds; otherwise its time is the
  measured seconds per network evaluation times the steps (marked "est."), which is exact up
  to the solver's own overhead (measured below to be a few percent);
- training throughput in residues per second (loss + backward + AdamW step, self-conditioning
  and auxiliary losses as in the recipe) on a batch of real-length chains;
- a profile of a 50-step solve: the share of wall time spent inside the network.
Timings depend on weights only through their size, so untrained weights are used for ``base``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from flow3d.engine.config import load_recipe
from protein.head import ProteinHead, ProteinSampleConfig
from protein.settings import SamplerSettings

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "protein"


class TimedModel(torch.nn.Module):
    """Wraps a model and accumulates the wall time of its forward passes."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.seconds = 0.0
        self.calls = 0

    def forward(self, *args, **kwargs):
        _sync()
        start = time.perf_counter()
        out = self.model(*args, **kwargs)
        _sync()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


DEVICE = torch.device("cpu")  # --device


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _head(name: str) -> tuple[ProteinHead, torch.nn.Module]:
    head = ProteinHead(load_recipe(RECIPES / f"{name}.yaml"))
    torch.manual_seed(0)
    return head, head.build_model().eval().to(DEVICE)


def _solve_seconds(head, model, batch: int, length: int, steps: int) -> float:
    g = torch.Generator(device=DEVICE).manual_seed(0)
    _sync()
    start = time.perf_counter()
    settings = SamplerSettings(steps=steps).resolved(ProteinSampleConfig())  # flow defaults
    head.flow.sample(model, batch, length, settings, generator=g, device=DEVICE)
    _sync()
    return time.perf_counter() - start


def sec_per_nfe(head, model, batch: int, length: int, reps: int = 2) -> float:
    _solve_seconds(head, model, batch, length, 1)  # warm-up
    return min(_solve_seconds(head, model, batch, length, 1) for _ in range(reps))


def design_times(models, lengths, steps_list, batches, budget: float) -> list[str]:
    rows = ["| model | length | batch | steps | s / design | s / batch | how |",
            "|---|---|---|---|---|---|---|"]
    for name, (head, model) in models.items():
        for length in lengths:
            for batch in batches:
                nfe = sec_per_nfe(head, model, batch, length)
                for steps in steps_list:
                    if nfe * steps <= budget:
                        total = _solve_seconds(head, model, batch, length, steps)
                        how = "measured"
                    else:
                        total = nfe * steps
                        how = "est. (s/NFE x steps)"
                    rows.append(f"| {name} | {length} | {batch} | {steps} | "
                                f"{total / batch:.3f} | {total:.2f} | {how} |")
    return rows


def train_throughput(name: str, lengths: list[int], steps: int = 3) -> tuple[float, int]:
    head, model = _head(name)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    items = []
    for n in lengths:
        trans = torch.randn(n, 3, generator=g)
        items.append({"trans": trans - trans.mean(0), "quats": torch.nn.functional.normalize(
            torch.randn(n, 4, generator=g), dim=-1), "res_idx": torch.arange(n),
            "seq": torch.zeros(n, dtype=torch.long), "length": n, "name": "x"})
    batch = {k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in head.collate(items).items()}
    times = []
    for i in range(steps + 1):
        _sync()
        start = time.perf_counter()
        loss = head.loss(model, batch, torch.Generator(device=DEVICE).manual_seed(i))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        _sync()
        times.append(time.perf_counter() - start)
    residues = sum(lengths)
    return residues / min(times[1:]), residues


def profile(head, model, length: int = 100, steps: int = 50, batch: int = 1) -> tuple:
    timed = TimedModel(model)
    total = _solve_seconds(head, timed, batch, length, steps)
    return timed.seconds / total, total, timed.calls


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny model, length 100 only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget", type=float, default=60.0,
                        help="solve for real when the estimate is under this many seconds")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    names = ["tiny"] if args.quick else ["tiny", "base"]
    models = {n: _head(n) for n in names}
    lengths = [100] if args.quick else [100, 300]
    import os

    print("## Protein backbones (ReQFlow head)\n")
    load = os.getloadavg()[0]
    where = (f"CPU (load average {load:.1f} on {os.cpu_count()} cores while measuring: timings "
             f"on a shared machine are upper bounds), {args.threads} thread(s)")
    if DEVICE.type == "cuda":
        where = f"{torch.cuda.get_device_name(DEVICE)} (one GPU)"
    print(f"{where}, float32, Euler, "
          "exponential rotation schedule, self-conditioning on; parameters: "
          + ", ".join(f"{n} {sum(p.numel() for p in m.parameters()) / 1e6:.2f}M"
                      for n, (_, m) in models.items()) + ".\n")
    print("### Time per design\n")
    print("\n".join(design_times(models, lengths, [10, 50, 200], [1, 16], args.budget)))
    print("\n### Training throughput\n")
    print("| model | batch (lengths) | residues / s |\n|---|---|---|")
    for n in names:
        lens = [100, 100, 100, 100] if n == "tiny" else [100, 100]
        rate, _ = train_throughput(n, lens)
        print(f"| {n} | {lens} | {rate:.0f} |")
    print("\n### Sampling profile\n")
    print("| model | length | steps | network share of solve time | solve s | NFE |\n"
          "|---|---|---|---|---|---|")
    for n, (head, model) in models.items():
        share, total, calls = profile(head, model)
        print(f"| {n} | 100 | 50 | {100 * share:.1f}% | {total:.2f} | {calls} |")


if __name__ == "__main__":
    main()
