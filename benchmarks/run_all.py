"""Run every benchmark script and record its markdown output in docs/benchmarks.md.

Each ``benchmarks/bench_*.py`` (and ``accuracy_table.py``) prints a markdown section on stdout.
This driver runs them one after another in fresh processes, stamps the machine and the date,
and rewrites the results file atomically. ``python -m benchmarks.run_all [--only NAME ...]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from flow3d.io import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "benchmarks.md"


def stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def machine_line() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


MARK = "<!-- bench:{} -->"


def previous_sections() -> dict[str, str]:
    """Sections of the last results file, so a partial run keeps the others."""
    if not RESULTS.exists():
        return {}
    text = RESULTS.read_text()
    found = re.findall(r"<!-- bench:(\w+) -->\n(.*?)(?=<!-- bench:|\Z)", text, flags=re.S)
    return {name: body.rstrip() + "\n" for name, body in found}


def discover() -> list[Path]:
    here = ROOT / "benchmarks"
    return sorted(p for p in here.glob("*.py") if p.name.startswith(("bench_", "accuracy_")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, help="benchmark file stems to run")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per benchmark")
    args = parser.parse_args(argv)
    scripts = [p for p in discover() if args.only is None or p.stem in args.only]
    sections = previous_sections()
    failed = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{script.stem}"],
            cwd=ROOT, capture_output=True, text=True, timeout=args.timeout,
        )
        took = time.perf_counter() - start
        print(proc.stdout, flush=True)
        if proc.returncode != 0:
            failed.append(script.name)
            print(proc.stderr[-4000:], file=sys.stderr)
            sections[script.stem] = f"## {script.stem}\n\nFAILED (exit {proc.returncode}).\n"
            continue
        sections[script.stem] = (
            proc.stdout.strip() + f"\n\n_{script.name}: {took:.0f} s wall, run {stamp()}._\n"
        )
    header = (
        "# Benchmarks\n\n"
        "Written by `make bench` (`python -m benchmarks.run_all`), which keeps every section it\n"
        "does not rerun. Sections named `quality_*` record model-quality measurements from the\n"
        "commands they state (too long for `make bench`). Each section says when it was run.\n\n"
        f"- Machine: {machine_line()}\n- Last update: {stamp()}\n\n"
    )
    body = "\n".join(MARK.format(name) + "\n" + text for name, text in sorted(sections.items()))
    atomic_write_text(RESULTS, header + body)
    print(f"wrote {RESULTS}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
