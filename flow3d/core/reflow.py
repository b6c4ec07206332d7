"""Reflow (rectification): pairs ``(x_0, x_1 = Phi(x_0))`` from a trained flow, on disk.

Liu et al. 2023 ("Flow Straight and Fast", Alg. 1): integrating a trained velocity from noise
``x_0`` gives a deterministic coupling ``(x_0, x_1)``; training a new flow on the straight
paths between these pairs (the usual path and loss, with the pairs instead of an independent
coupling) straightens trajectories, so few solver steps suffice ("2-rectified flow"; Lee et
al. 2024 show one round is enough).

:func:`generate_pairs` writes the pairs as safetensors shards plus ``manifest.json``; the
whole folder is built under a temporary name and swapped into place, so an interrupted run
never leaves a partial dataset. :class:`ReflowPairs` is a map-style dataset over it that
loads shards lazily. States may be manifold points (e.g. quaternions): points are stored.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flow3d.core.solvers import solve
from flow3d.errors import DataError
from flow3d.io import atomic_dir, atomic_path, atomic_write_text

__all__ = ["MANIFEST", "ReflowPairs", "generate_pairs"]

MANIFEST = "manifest.json"
_FORMAT = "flow3d-reflow-pairs"
_VERSION = 1


def _shard_generator(seed: int, shard: int) -> torch.Generator:
    """An independent stream per (seed, shard): shards can be regenerated alone."""
    state = np.random.SeedSequence([int(seed), int(shard)]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]) & ((1 << 63) - 1))


def generate_pairs(
    velocity: Callable[[Tensor, Tensor], Tensor],
    noise_fn: Callable[[int, torch.Generator], Tensor],
    num: int,
    out_dir: str | os.PathLike,
    *,
    shard_size: int = 4096,
    batch_size: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    **solve_kwargs,
) -> Path:
    """Draw ``num`` noise states, integrate each to ``t = 1``, save the pairs; return the
    manifest path.

    ``noise_fn(n, generator) -> x_0 [n, ...]`` draws source states on the CPU (seeded per shard
    from ``seed``, so the output is a function of the arguments only). ``solve_kwargs`` go to
    :func:`flow3d.core.solvers.solve` (``method="euler"``; ``steps=100`` unless a ``grid`` is
    given; ``manifold``, ``progress``, ...) and are recorded in the manifest; ``batch_size``
    (default ``shard_size``) bounds the states integrated at once on ``device``.
    """
    if num < 1 or shard_size < 1:
        raise ValueError(f"num and shard_size must be >= 1, got {num}, {shard_size}")
    from safetensors.torch import save_file

    batch_size = batch_size or shard_size
    solve_kwargs.setdefault("method", "euler")
    if solve_kwargs.get("grid") is None:
        solve_kwargs.pop("grid", None)
        solve_kwargs.setdefault("steps", 100)
    else:
        solve_kwargs.pop("steps", None)
    method, steps = solve_kwargs["method"], solve_kwargs.get("steps")
    grid, manifold = solve_kwargs.get("grid"), solve_kwargs.get("manifold")
    out_dir = Path(out_dir)
    shards, shape, dtype = [], None, None
    with atomic_dir(out_dir) as tmp:
        for shard, start in enumerate(range(0, num, shard_size)):
            n = min(shard_size, num - start)
            x_0 = noise_fn(n, _shard_generator(seed, shard)).detach().cpu().contiguous()
            if x_0.shape[0] != n:
                raise ValueError(f"noise_fn returned {x_0.shape[0]} states, asked for {n}")
            shape, dtype = list(x_0.shape[1:]), str(x_0.dtype).removeprefix("torch.")
            parts = []
            for b in range(0, n, batch_size):
                x = x_0[b : b + batch_size].to(device)
                parts.append(solve(velocity, x, **solve_kwargs).x.cpu())
            x_1 = torch.cat(parts).contiguous()
            if not torch.isfinite(x_1).all():
                raise ValueError(f"shard {shard}: the velocity produced non-finite states")
            name = f"shard_{shard:05d}.safetensors"
            with atomic_path(tmp / name) as p:
                save_file({"x_0": x_0, "x_1": x_1}, str(p))
            shards.append({"file": name, "num": n})
        manifest = {
            "format": _FORMAT, "version": _VERSION, "num": num, "shard_size": shard_size,
            "shape": shape, "dtype": dtype, "method": method,
            "steps": None if grid is not None else steps,
            "grid": None if grid is None else [float(t) for t in grid], "seed": seed,
            "manifold": None if manifold is None else repr(manifold), "shards": shards,
        }  # fmt: skip
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return out_dir / MANIFEST


class ReflowPairs(torch.utils.data.Dataset):
    """Map-style dataset over a folder written by :func:`generate_pairs`.

    ``pairs[i] -> {"x_0": Tensor[...], "x_1": Tensor[...]}``. Shards are read on first use and
    the ``cache_shards`` most recently used are kept in memory. ``manifest`` holds the
    generation settings.
    """

    def __init__(self, out_dir: str | os.PathLike, *, cache_shards: int = 2):
        self.root = Path(out_dir)
        path = self.root / MANIFEST
        if not path.is_file():
            raise DataError(f"{path}: no reflow manifest (write one with generate_pairs)")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            shards = manifest["shards"]
            counts = [int(s["num"]) for s in shards]
            files = [self.root / s["file"] for s in shards]
            ok = manifest.get("format") == _FORMAT and sum(counts) == int(manifest["num"])
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: malformed reflow manifest ({e})") from None
        if not ok:
            raise DataError(f"{path}: not a consistent {_FORMAT} manifest")
        for f in files:
            if not f.is_file():
                raise DataError(f"{f}: reflow shard listed in {path} is missing")
        self.manifest = manifest
        self._files = files
        self._starts = np.cumsum([0, *counts])  # [S + 1]
        self._cache: OrderedDict[int, dict[str, Tensor]] = OrderedDict()
        self._cache_shards = max(1, int(cache_shards))
        self.loads = 0  # shard reads so far (for tests and profiling)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _shard(self, k: int) -> dict[str, Tensor]:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        from safetensors.torch import load_file

        f = self._files[k]
        try:
            data = load_file(str(f))
        except Exception as e:  # safetensors raises its own error types
            raise DataError(f"{f}: cannot read reflow shard ({e})") from None
        n = int(self._starts[k + 1] - self._starts[k])
        if set(data) != {"x_0", "x_1"} or any(data[key].shape[0] != n for key in data):
            raise DataError(f"{f}: expected tensors x_0, x_1 with {n} rows")
        self.loads += 1
        self._cache[k] = data
        if len(self._cache) > self._cache_shards:
            self._cache.popitem(last=False)
        return data

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} reflow pairs")
        i %= n
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        data = self._shard(k)
        j = i - int(self._starts[k])
        return {"x_0": data["x_0"][j], "x_1": data["x_1"][j]}
