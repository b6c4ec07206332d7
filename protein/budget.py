"""What a design run will cost, estimated before it starts: memory refused, hours warned.

The trunk's residue-pair features (edge embedding, edge transitions, attention logits) grow
as ``batch x L^2`` and dominate both memory and time. :func:`pair_floats` counts the floats
per residue pair alive at the peak of one network evaluation from the model's sizes; it
matches the measured peak of the bundled ``tiny_reflow_guided`` (1.4-1.6 kB per pair at 300
and 600 residues) within 10%. A batch whose estimate exceeds the machine's memory
(:func:`memory_limit_bytes`) is refused; a run estimated to take more than
:data:`WARN_SECONDS` gets a one-line warning.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from flow3d.errors import ConfigError
from protein.settings import DesignSettings
from protein.sheets import sheet_iters

__all__ = ["batch_memory_bytes", "check_budget", "estimate_seconds", "memory_limit_bytes",
           "pair_floats"]

BYTES_PER_FLOAT = 4
DISTOGRAM_BINS = 22  # protein.model.embed.EdgeEmbedder's default
FALLBACK_MEMORY_BYTES = 16 * 2**30  # when the machine does not say (documented constant)
# Seconds per pair float per network evaluation on one CPU core, measured with the bundled
# tiny_reflow_guided (clash guidance on): 8e-6 s per design x residue^2 x step / 384 floats.
SECONDS_PER_PAIR_FLOAT = 2e-8
# Sheet guidance (protein.sheets), per residue pair and gradient step on one CPU core, with
# the H-bond energy taken both ways (session 28): 5,900 steps at 50 Euler steps (500 late)
# cost about 35 s per design of 150 residues (2.6e-7) and 10 s of 60 (4.7e-7: overheads)
SECONDS_PER_SHEET_PAIR_STEP = 3e-7
WARN_SECONDS = 3600.0
# network evaluations per solver step (dopri5: about six per accepted step)
EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4, "dopri5": 6}


def pair_floats(model: Any) -> int:
    """Floats per residue pair alive at once in one evaluation of an IPA trunk with the sizes
    of ``model`` (a :class:`protein.model.TrunkConfig`): the largest of the edge embedder
    (its concatenated inputs twice and two hidden layers), an edge transition (its
    ``edge + node`` wide input and hidden layers) and IPA (logits, distances and weights per
    head), plus the pair features themselves and masks."""
    feat = model.edge_dim // 2
    embed = 2 * (2 * feat + 2 * model.max_relpos + 1 + 2 * DISTOGRAM_BINS) + 2 * model.edge_dim
    transition = 3 * (model.edge_dim + model.node_dim) + 2 * model.edge_dim
    ipa = 4 * model.num_heads + 2 * model.seq_heads + model.edge_dim // 4
    return max(embed, transition, ipa) + model.edge_dim + 8


def batch_memory_bytes(model: Any, batch: int, length: int) -> int:
    """Peak bytes of the residue-pair features of one batch of ``length``-residue designs."""
    return batch * length * length * pair_floats(model) * BYTES_PER_FLOAT


def memory_limit_bytes(device: str | torch.device = "cpu") -> tuple[int, str]:
    """The memory a batch may use and where it comes from: the GPU's memory, else the
    machine's physical memory (else :data:`FALLBACK_MEMORY_BYTES`)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory, f"{device} memory"
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine's memory"
    except (ValueError, OSError, AttributeError):
        return FALLBACK_MEMORY_BYTES, "the assumed memory"


def estimate_seconds(settings: DesignSettings, model: Any) -> float:
    """Rough CPU time of a resolved run: evaluations x designs x L^2 x pair floats, plus
    the gradient steps of sheet guidance when it acts (a fold plan)."""
    s = settings.sampler
    per_step = EVALS_PER_STEP.get(s.method, 1)
    pairs = settings.num * sum(n * n for n in settings.lengths)
    seconds = s.steps * per_step * pairs * pair_floats(model) * SECONDS_PER_PAIR_FLOAT
    if s.sheet_guidance > 0 and settings.plan_options():
        steps = per_step * sum(sheet_iters(k / s.steps) for k in range(s.steps))
        seconds += steps * pairs * SECONDS_PER_SHEET_PAIR_STEP
    return seconds


def check_budget(settings: DesignSettings, model: Any,
                 device: str | torch.device = "cpu") -> str | None:
    """Refuse (ConfigError) a resolved run whose largest batch cannot fit in memory; return a
    one-line warning when it will plausibly take hours on a CPU, else ``None``."""
    batch = min(settings.batch_size, settings.num)
    length = max(settings.lengths)
    need = batch_memory_bytes(model, batch, length)
    limit, where = memory_limit_bytes(device)
    if need > limit:
        option = "--length" if len(settings.lengths) == 1 else "--lengths"
        fits = limit // batch_memory_bytes(model, 1, length)
        hint = f"use --batch-size {fits}" if 1 <= fits < batch else "design shorter chains"
        raise ConfigError(f"{option} {length}: a batch of {batch} needs about "
                          f"{_size(need)} for its residue-pair features, more than the "
                          f"{_size(limit)} of {where}; {hint}")
    if torch.device(device).type != "cpu":
        return None
    seconds = estimate_seconds(settings, model)
    if seconds > WARN_SECONDS:
        return (f"this run may take about {_duration(seconds)} on one CPU core "
                f"({len(settings.names())} designs of up to {length} residues, "
                f"{settings.sampler.steps} steps); lower --num, --steps or the length for a "
                "quicker run")
    return None


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    if hours < 48:
        return f"{math.ceil(hours)} hours"
    return f"{hours / 24:.0f} days"
