"""Checkpoints: a directory of safetensors + JSON + YAML, written atomically, never pickled.

    <ckpt>/weights.safetensors        model state_dict
    <ckpt>/ema.safetensors            EMA state_dict (what ``load_model`` samples with);
                                      absent in a bundled checkpoint, whose weights are the EMA
    <ckpt>/train_state.safetensors    optimiser tensors (``opt/<param>/<name>``), RNG state
    <ckpt>/train_state.json           step, optimiser param groups + scalar state, metrics
    <ckpt>/recipe.yaml                the resolved recipe (every default filled in)

The whole directory is built under a temporary name and renamed into place
(:func:`flow3d.io.atomic_dir`), so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from flow3d.engine.config import Recipe, dump_recipe, recipe_from_dict
from flow3d.engine.head import Head
from flow3d.engine.heads import get_head
from flow3d.errors import DataError
from flow3d.io import atomic_dir

__all__ = [
    "CHECKPOINT_FILES",
    "bundle_checkpoint",
    "ema_file",
    "LoadedModel",
    "find_checkpoint",
    "latest_checkpoint",
    "load_frozen",
    "load_model",
    "optimizer_state_from_flat",
    "optimizer_state_to_flat",
    "read_checkpoint",
    "resolve_path",
    "write_checkpoint",
]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FORMAT_VERSION = 1
CHECKPOINT_FILES = (  # every checkpoint has these; ema.safetensors too unless bundled
    "weights.safetensors",
    "train_state.safetensors",
    "train_state.json",
    "recipe.yaml",
)


def _tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage (tied weights); contiguous CPU copies are always safe.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


# ---- optimiser state without pickle --------------------------------------------------------
def optimizer_state_to_flat(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into safetensors tensors and JSON-able metadata."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, per_param in state["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt/{pid}/{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
        for g in state["param_groups"]
    ]
    return _tensors(tensors), {"param_groups": groups, "scalars": scalars}


def optimizer_state_from_flat(tensors: Mapping[str, torch.Tensor], meta: Mapping) -> dict:
    """Inverse of :func:`optimizer_state_to_flat`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        m = re.fullmatch(r"opt/(\d+)/(.+)", key)
        if m:
            state.setdefault(int(m.group(1)), {})[m.group(2)] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


# ---- write / read --------------------------------------------------------------------------
def write_checkpoint(
    path: str | Path,
    *,
    model_state: Mapping[str, torch.Tensor],
    ema_state: Mapping[str, torch.Tensor] | None,
    recipe: Recipe,
    step: int,
    optimizer_state: Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
    info: Mapping[str, Any] | None = None,
    write_ema: bool = True,
) -> Path:
    """Write one checkpoint directory atomically; returns ``path``.

    ``write_ema=False`` leaves out ``ema.safetensors`` (a bundled checkpoint: ``model_state``
    already holds the EMA weights, and readers fall back to it)."""
    path = Path(path)
    train_tensors: dict[str, torch.Tensor] = dict(extra_tensors or {})
    meta: dict[str, Any] = {"format": FORMAT_VERSION, "step": int(step), **(info or {})}
    if optimizer_state is not None:
        opt_tensors, meta["optimizer"] = optimizer_state_to_flat(optimizer_state)
        train_tensors.update(opt_tensors)
    with atomic_dir(path) as tmp:
        save_file(_tensors(model_state), str(tmp / "weights.safetensors"))
        if write_ema:
            save_file(_tensors(ema_state if ema_state is not None else model_state),
                      str(tmp / "ema.safetensors"))
        save_file(_tensors(train_tensors), str(tmp / "train_state.safetensors"))
        (tmp / "train_state.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        dump_recipe(recipe, tmp / "recipe.yaml")
        _readable(tmp)
    return path


def _readable(folder: Path) -> None:
    """Temporary files are created owner-only; a checkpoint gets the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for f in folder.iterdir():
        os.chmod(f, 0o666 & ~umask)


def resolve_path(path: str | os.PathLike) -> Path:
    """A relative path as given when it exists from the working directory, else relative to
    the project root, where the bundled ``checkpoints/`` and ``recipes/`` live (so a recipe's
    ``data.vae: checkpoints/mesh/vae_cpu`` works from any directory)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    q = PROJECT_ROOT / p
    return q if q.exists() else p


def _is_checkpoint(path: Path) -> bool:
    return all((path / name).is_file() for name in CHECKPOINT_FILES)


def find_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint directory or a run directory (then its latest checkpoint); a
    relative path is also looked up from the project root (:func:`resolve_path`)."""
    path = resolve_path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    if _is_checkpoint(path):
        return path
    latest = latest_checkpoint(path / "checkpoints") if path.is_dir() else None
    if latest is None:
        missing = [n for n in CHECKPOINT_FILES if not (path / n).is_file()]
        raise DataError(f"{path}: not a flow3d checkpoint (missing {', '.join(missing)})")
    return latest


def read_train_state(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    path = Path(path)
    try:
        meta = json.loads((path / "train_state.json").read_text(encoding="utf-8"))
        tensors = load_file(str(path / "train_state.safetensors"))
    except (OSError, ValueError, SafetensorError) as e:  # missing, not JSON, truncated
        raise DataError(f"{path}: unreadable train state ({e})") from None
    return meta, tensors


def latest_checkpoint(root: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under ``root`` (``last``, ``step_*``,
    or a ``.last.old`` left by a crash during the final rename), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    best: tuple[int, int, Path] | None = None
    for child in root.iterdir():
        if not child.is_dir() or child.name.endswith(".tmp") or not _is_checkpoint(child):
            continue
        try:
            meta = json.loads((child / "train_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        rank = (int(meta.get("step", -1)), child.name == "last", child)
        if best is None or rank[:2] > best[:2]:
            best = rank
    return None if best is None else best[2]


def ema_file(path: str | Path) -> Path:
    """The file holding a checkpoint directory's EMA weights: ``ema.safetensors``, or
    ``weights.safetensors`` in a bundled checkpoint (whose weights are the EMA)."""
    path = Path(path)
    ema = path / "ema.safetensors"
    return ema if ema.is_file() else path / "weights.safetensors"


def read_recipe(path: str | Path) -> Recipe:
    """The recipe of a checkpoint directory, without reading its weights."""
    path = find_checkpoint(path)
    try:
        raw = yaml.safe_load((path / "recipe.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{path / 'recipe.yaml'}: unreadable recipe ({e})") from None
    return recipe_from_dict(raw, where=str(path / "recipe.yaml"))


def read_checkpoint(path: str | Path, *, ema: bool = True) -> tuple[Recipe, dict, dict]:
    """(recipe, weights, train meta) of a checkpoint directory."""
    path = find_checkpoint(path)
    recipe = read_recipe(path)
    weights_file = ema_file(path) if ema else path / "weights.safetensors"
    try:
        weights = load_file(str(weights_file))
    except (OSError, ValueError, SafetensorError) as e:  # missing, truncated, not safetensors
        raise DataError(f"{weights_file}: unreadable weights ({e})") from None
    # weights stored in half precision (bundle_checkpoint(half=True)) are used in float32
    weights = {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v
               for k, v in weights.items()}
    meta, _ = read_train_state(path)
    return recipe, weights, meta


def bundle_checkpoint(src: str | Path, dest: str | Path, *, half: bool = False) -> Path:
    """A slim, ready-to-sample copy of a training checkpoint: the EMA weights once (as
    ``weights.safetensors``; float16 when ``half``), the recipe and the step, without
    optimiser state. ``trainer.bundle_to`` in a recipe calls this at the end of training."""
    recipe, weights, meta = read_checkpoint(src, ema=True)
    if half:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    info = {"bundled_from": str(src), "metrics": meta.get("metrics", {}),
            "weights_dtype": "float16" if half else "float32"}
    return write_checkpoint(dest, model_state=weights, ema_state=None, recipe=recipe,
                            step=int(meta.get("step", 0)), info=info, write_ema=False)


# ---- ready-to-sample model -----------------------------------------------------------------
@dataclasses.dataclass
class LoadedModel:
    """A trained model with its head and recipe; ``sample`` delegates to ``head.sample``."""

    model: nn.Module
    head: Head
    recipe: Recipe
    path: Path | None = None
    step: int = 0

    def sample(self, num: int, seed: int = 0, **overrides: Any) -> Any:
        with torch.no_grad():
            return self.head.sample(self.model, num, seed=seed, **overrides)

    def save_samples(self, samples: Any, out_dir: str | Path) -> list[Path]:
        return self.head.save_samples(samples, Path(out_dir))


def load_model(path: str | Path, ema: bool = True, device: str = "cpu", *,
               head_name: str | None = None) -> LoadedModel:
    """Rebuild the head and network from a checkpoint directory and load its (EMA) weights.

    The one checkpoint loader: ``flow3d.load``, ``flow3d sample/eval``, the mesh pipelines (the
    latent flow and its VAE) and reflow teachers all come through here. ``head_name`` (e.g.
    ``"mesh_vae"``) refuses a checkpoint of another head with a one-line :class:`DataError`.
    """
    ckpt = find_checkpoint(path)
    recipe, weights, meta = read_checkpoint(ckpt, ema=ema)
    if head_name is not None and recipe.head != head_name:
        raise DataError(f"{ckpt}: a {recipe.head!r} checkpoint, not {head_name}")
    head = get_head(recipe.head, where=str(ckpt / "recipe.yaml"))(recipe)
    model = head.build_model()
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise DataError(f"{ckpt}: weights do not match the recipe's model ({first})") from None
    model.to(device).eval()
    return LoadedModel(model=model, head=head, recipe=recipe, path=ckpt, step=meta.get("step", 0))


def load_frozen(path: str | Path, head_name: str, what: str) -> nn.Module:
    """The network of a ``head_name`` checkpoint, in eval mode with gradients off: a frozen
    component read by another model or pipeline (a VAE under a flow). A missing checkpoint is
    a :class:`DataError` naming ``what``; one of another head is a :class:`ConfigError`."""
    from flow3d.errors import ConfigError

    try:
        loaded = load_model(path)
    except FileNotFoundError as e:
        raise DataError(f"{path}: {what} checkpoint not found") from e
    if loaded.recipe.head != head_name:
        raise ConfigError(f"{path}: is a {loaded.recipe.head!r} checkpoint, not {head_name}")
    model = loaded.model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
