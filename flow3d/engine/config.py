"""Recipes: one YAML file per run, loaded into typed, frozen dataclasses.

A recipe has a ``head`` name, the head's own ``model`` / ``data`` / ``sample`` sections (frozen
dataclasses named by the head class, see :mod:`flow3d.engine.head`) and the engine's ``flow``
and ``trainer`` sections defined here. Unknown or mistyped keys are a one-line
:class:`~flow3d.errors.ConfigError` naming the key and suggesting the closest valid one;
command-line overrides ``section.key=value`` are typed by the dataclass field they set.

    recipe = load_recipe("recipes/toy/eight_gaussians.yaml", ["trainer.max_steps=200"])
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from flow3d.engine.heads import get_head
from flow3d.engine.keys import suggest
from flow3d.engine.typed import coerce, from_dict, hints
from flow3d.errors import ConfigError
from flow3d.io import atomic_write_text
from flow3d.options import check_float, check_int

__all__ = [
    "FlowConfig",
    "LossConfig",
    "Recipe",
    "TimeSamplerConfig",
    "TrainerConfig",
    "dump_recipe",
    "from_dict",
    "load_recipe",
    "recipe_from_dict",
    "recipe_to_dict",
]


# Bounds of the trainer section: wide enough for any real run, tight enough that a typo
# (1e20 steps, lr 1e38) is an error before the first step, not an overflow after hours.
MAX_STEPS = 10**9
MAX_SEED = 2**63 - 1
MAX_LR = 1.0  # AdamW steps larger than 1 per unit gradient diverge for any network


@dataclasses.dataclass(frozen=True)
class TimeSamplerConfig:
    """Training-time distribution, see :func:`flow3d.core.time.build_time_sampler`."""

    name: str = "uniform"  # "uniform" | "logit_normal" | "mode" | "u_shaped"
    mean: float = 0.0  # logit_normal
    std: float = 1.0  # logit_normal
    scale: float = 1.29  # mode
    a: float = 4.0  # u_shaped


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Velocity loss, see :func:`flow3d.core.losses.velocity_loss`."""

    kind: str = "mse"  # "mse" | "pseudo_huber"
    huber_c: float | None = None
    time_weight: str = "none"


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """The flow-matching choices a head reads when it builds its path and loss."""

    scheduler: str = "linear"  # "linear" | "cosine" | "vp"
    time_sampler: TimeSamplerConfig = TimeSamplerConfig()
    loss: LossConfig = LossConfig()
    coupling: str = "independent"  # "independent" | "ot"


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """Optimisation, logging, checkpointing and scale-out (Lightning strategies)."""

    max_steps: int = 1000
    batch_size: int = 64  # per device
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    grad_clip: float | None = 1.0
    accumulate: int = 1
    precision: str = "32"  # Lightning precision: "32", "bf16-mixed", "16-mixed", ...
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    accelerator: str = "cpu"
    seed: int = 0
    ckpt_every: int = 500
    log_every: int = 50
    out_dir: str = "runs/default"
    num_workers: int = 0
    init_from: str | None = None  # checkpoint dir to start from (fine-tuning, reflow)
    # parameters of the model that init_from lacks keep their initialisation (a new input
    # branch added for fine-tuning); any other mismatch is still an error
    init_new: tuple[str, ...] = ()  # name prefixes, e.g. ["node_embed.ss_embed"]
    progress: bool = True
    bundle_to: str | None = None  # at the end, a slim EMA-only copy here (bundle_checkpoint)
    bundle_half: bool = False  # ... with float16 weights
    tf32: bool = True  # on CUDA, float32 matmuls use TF32 tensor cores (~10 bits of mantissa)

    def __post_init__(self):
        """Every value is checked once, here, so a bad override fails before any work."""
        name = "trainer.{}".format
        for key in ("max_steps", "ckpt_every", "log_every"):
            check_int(getattr(self, key), name(key), lo=1, hi=MAX_STEPS)
        check_int(self.warmup_steps, name("warmup_steps"), lo=0, hi=MAX_STEPS)
        check_int(self.batch_size, name("batch_size"), lo=1, hi=1 << 20)
        check_int(self.accumulate, name("accumulate"), lo=1, hi=1 << 16)
        check_int(self.devices, name("devices"), lo=1, hi=1 << 12)
        check_int(self.num_nodes, name("num_nodes"), lo=1, hi=1 << 12)
        check_int(self.num_workers, name("num_workers"), lo=0, hi=1 << 10)
        check_int(self.seed, name("seed"), lo=0, hi=MAX_SEED)
        check_float(self.lr, name("lr"), lo=0.0, hi=MAX_LR, lo_open=True)
        # AdamW shrinks weights by lr * weight_decay per step: above 1 they change sign
        check_float(self.weight_decay, name("weight_decay"), lo=0.0, hi=1.0 / self.lr)
        check_float(self.min_lr_ratio, name("min_lr_ratio"), lo=0.0, hi=1.0)
        check_float(self.ema_decay, name("ema_decay"), lo=0.0, hi=1.0)
        if self.grad_clip is not None:
            check_float(self.grad_clip, name("grad_clip"), lo=0.0, hi=1e6, lo_open=True)
        if not str(self.out_dir).strip():
            raise ConfigError("trainer.out_dir: an output folder is required (got '')")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A complete run: which head, its sections, the flow choices and the trainer."""

    head: str
    model: Any
    data: Any
    sample: Any
    flow: FlowConfig = FlowConfig()
    trainer: TrainerConfig = TrainerConfig()
    name: str = ""

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)


_SECTIONS = ("head", "name", "model", "data", "sample", "flow", "trainer")


def recipe_from_dict(raw: Mapping[str, Any], *, where: str = "recipe") -> Recipe:
    """Build a :class:`Recipe` from a plain mapping (a parsed YAML file)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: a recipe must be a YAML mapping, got {type(raw).__name__}")
    for key in raw:
        if key not in _SECTIONS:
            raise ConfigError(f"{where}: unknown key {key!r}" + suggest(str(key), _SECTIONS))
    if "head" not in raw:
        raise ConfigError(f"{where}: missing required key 'head'")
    head_cls = get_head(str(raw["head"]), where=where)
    sections = {
        "model": head_cls.model_config,
        "data": head_cls.data_config,
        "sample": head_cls.sample_config,
        "flow": FlowConfig,
        "trainer": TrainerConfig,
    }
    kwargs: dict[str, Any] = {"head": str(raw["head"])}
    for key, cls in sections.items():
        value = raw.get(key) or {}
        kwargs[key] = from_dict(cls, value, prefix=f"{key}.", where=where)
    kwargs["name"] = coerce(raw.get("name", ""), str, "name", where)
    return Recipe(**kwargs)


# ---- overrides -----------------------------------------------------------------------------
def _section_types(head: str | None, where: str) -> dict[str, Any]:
    types_: dict[str, Any] = {"head": str, "name": str}
    types_.update(flow=FlowConfig, trainer=TrainerConfig)
    if head is not None:
        head_cls = get_head(head, where=where)
        types_.update(
            model=head_cls.model_config, data=head_cls.data_config, sample=head_cls.sample_config
        )
    return types_


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str], *, where: str) -> dict:
    """Set ``a.b.c=value`` entries in the raw mapping; ``value`` is parsed as YAML. Keys are
    checked against the dataclass tree first, so a typo names the override, not the file."""
    raw = _deep_copy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. trainer.max_steps=200")
        dotted, text = item.split("=", 1)
        dotted = dotted.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        parts = dotted.split(".")
        head = value if parts == ["head"] else raw.get("head")
        node_type: Any = _section_types(str(head) if head is not None else None, where)
        node: dict[str, Any] = raw
        for depth, part in enumerate(parts):
            here = ".".join(parts[: depth + 1])
            node_type = _unwrap_optional(node_type)
            if isinstance(node_type, dict):
                valid = list(node_type)
            elif dataclasses.is_dataclass(node_type):
                valid = [f.name for f in dataclasses.fields(node_type)]
                node_type = hints(node_type)
            else:
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:depth])} has no sub-keys")
            if part not in valid:
                prefix = ".".join(parts[:depth]) + "." if depth else ""
                hint = suggest(part, valid, prefix)
                raise ConfigError(f"override {item!r}: unknown key {here!r}{hint}")
            node_type = node_type[part]
            if depth == len(parts) - 1:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
    return raw


def _unwrap_optional(tp: Any) -> Any:
    """``Foo | None`` -> ``Foo`` when ``Foo`` is a dataclass (so ``a.b.c`` can reach into it)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        if len(inner) == 1:
            return inner[0]
    return tp


def _deep_copy(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _deep_copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_deep_copy(v) for v in x]
    return x


# ---- files ---------------------------------------------------------------------------------
def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe YAML file, apply ``section.key=value`` overrides, build the typed Recipe."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a recipe file" if path.is_dir() else "recipe file not found"
        raise ConfigError(f"{path}: {what}")
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        raise ConfigError(f"{path}: is gzip-compressed; a recipe is a YAML text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (binary data at byte {e.start}); a recipe "
                          "is a YAML text file") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text file (NUL bytes); a recipe is a YAML text file")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        at = f" at line {line + 1}" if line is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (binary content)") from None
    if raw is None:
        raise ConfigError(f"{path}: empty recipe")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides, where=str(path))
    recipe = recipe_from_dict(raw, where=str(path))
    if not recipe.name:
        recipe = recipe.replace(name=path.stem)
    return recipe


def _plain(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, Path):
        return str(x)
    return x


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The fully resolved recipe as plain YAML-able data (every default filled in)."""
    out = _plain(recipe)
    return {key: out[key] for key in _SECTIONS}


def dump_recipe(recipe: Recipe, path: str | Path | None = None) -> str:
    """YAML text of the resolved recipe; also written atomically to ``path`` when given."""
    text = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None)
    if path is not None:
        atomic_write_text(path, text)
    return text
