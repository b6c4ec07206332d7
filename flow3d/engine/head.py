"""The head protocol: what a domain (toy 2D, protein backbones, meshes) gives the engine.

The engine (Lightning module, recipes, checkpoints, command line) is generic; a head supplies
its typed recipe sections, its network, its data, its loss and its sampler. A head never
writes a training loop. See ``flow3d/toy/head.py`` for the worked example.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from flow3d.engine import typed


class Head(abc.ABC):
    """A domain plugged into the engine.

    Class attributes name the frozen dataclasses that type the recipe's ``model``, ``data`` and
    ``sample`` sections; the engine builds them from YAML and rejects unknown keys.
    ``recipe`` is a :class:`flow3d.engine.config.Recipe` whose ``model``/``data``/``sample``
    fields are instances of those dataclasses.
    """

    name: ClassVar[str]
    model_config: ClassVar[type]
    data_config: ClassVar[type]
    sample_config: ClassVar[type]

    def __init__(self, recipe: Any):
        self.recipe = recipe

    # ---- model -------------------------------------------------------------------------
    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """Build the network from ``self.recipe.model`` (randomly initialised)."""

    # ---- data --------------------------------------------------------------------------
    @abc.abstractmethod
    def train_dataset(self) -> torch.utils.data.Dataset:
        """A map-style dataset of training items (built or loaded from a cache)."""

    def collate(self, items: Sequence[Any]) -> Any:
        """Turn a list of dataset items into a batch (default: torch's default_collate)."""
        return torch.utils.data.default_collate(list(items))

    def epoch_batches(
        self, dataset: torch.utils.data.Dataset, rng: np.random.Generator, batch_size: int
    ) -> list[list[int]]:
        """One epoch as a list of index batches, drawn with ``rng`` only.

        The engine seeds ``rng`` from (recipe seed, epoch) so that any global step can be
        resumed exactly; override for length bucketing (the protein head does).
        """
        order = rng.permutation(len(dataset))
        n = len(order) // batch_size * batch_size or len(order)
        return [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]

    # ---- training ----------------------------------------------------------------------
    @abc.abstractmethod
    def loss(
        self, model: nn.Module, batch: Any, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Flow-matching loss on one batch. Must return a dict with a scalar ``"loss"``.

        All randomness (noise, times) must come from ``generator``, which the engine seeds
        per (seed, global step, rank): this is what makes resume exact.
        """

    # ---- sampling ----------------------------------------------------------------------
    @abc.abstractmethod
    def sample(self, model: nn.Module, num: int, *, seed: int = 0, **overrides: Any) -> Any:
        """Draw ``num`` samples with the trained ``model``; ``overrides`` replace fields of
        ``self.recipe.sample`` (e.g. ``steps=10``)."""

    def sample_settings(self, **overrides: Any) -> Any:
        """``self.recipe.sample`` with ``overrides`` (e.g. ``steps=10``), typed and checked
        like the recipe: an unknown key or a bad value is a one-line ConfigError."""
        return typed.replace(self.recipe.sample, overrides, prefix="sample.",
                             where="sample override")

    def save_samples(self, samples: Any, out_dir: Path) -> list[Path]:
        """Write samples to ``out_dir`` atomically; return the written paths."""
        raise NotImplementedError(f"head {self.name!r} does not save samples")


# Optional methods the engine uses when a head defines them (duck-typed, not abstract):
#   prepare_data() -> None
#       Build caches once, on one process, before any rank reads them (Lightning's hook).
#   evaluate(samples) -> dict[str, float]
#       Score samples against the target; used by `flow3d eval`.
#   source(num, generator, device) -> Tensor                      (reflow)
#   velocity_field(model) -> Callable[[Tensor, Tensor], Tensor]   (reflow)
#       Together with sample_settings (above) these let flow3d.engine.reflow draw
#       (x_0, x_1) teacher pairs from a trained model with any solver and retrain on them,
#       for any head.
