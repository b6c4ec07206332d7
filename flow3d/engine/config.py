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
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from flow3d.errors import ConfigError
from flow3d.io import atomic_write_text

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


# ---- typed construction --------------------------------------------------------------------
def _suggest(key: str, valid: Sequence[str], prefix: str = "") -> str:
    """`` (did you mean 'trainer.max_steps'?)`` or the list of valid keys."""
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    if close:
        return f" (did you mean {prefix + close[0]!r}?)"
    return f" (valid keys: {', '.join(prefix + v for v in valid)})"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; convert lists to tuples and dicts to
    dataclasses. Raises ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if len(errors) == 1 else ConfigError(
            f"{where}: {key} = {value!r} is not a {_type_name(tp)}"
        )
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{where}: {key} = {value!r} is not one of {', '.join(map(repr, args))}"
                + _suggest(str(value), [str(a) for a in args])
            )
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.", where=where)
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key} = {value!r} must be a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: {key} needs {len(args)} items, got {len(value)}")
            pairs = enumerate(zip(value, args))
            items = [_coerce(v, a, f"{key}[{i}]", where) for i, (v, a) in pairs]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{key}[{i}]", where) for i, v in enumerate(value)]
        return list(items) if origin is list or tp is list else tuple(items)
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key} = {value!r} must be a mapping")
        return dict(value)
    if value is None:
        raise ConfigError(f"{where}: {key} must be a {_type_name(tp)}, got null")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} = {value!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: {key} = {value!r} must be an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key} = {value!r} must be a number")
        return float(value)
    if tp is str:
        # YAML reads `precision: 32` or `name: 2024` as numbers; they are meant as text.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} = {value!r} must be a string")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: {key} = {value!r} must be a {_type_name(tp)}")
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type, data: Mapping[str, Any], *, prefix: str = "", where: str = "recipe"):
    """Build frozen dataclass ``cls`` from a mapping; unknown keys, wrong types and missing
    required fields raise a one-line ConfigError naming ``prefix + key`` and ``where``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'recipe'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"{where}: unknown key {prefix + str(key)!r}"
                + _suggest(str(key), list(fields), prefix)
            )
        kwargs[key] = _coerce(value, hints[key], prefix + key, where)
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in kwargs:
            raise ConfigError(f"{where}: missing required key {prefix + name!r}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # a __post_init__ check of the head's dataclass
        raise ConfigError(f"{where}: {prefix.rstrip('.') or cls.__name__}: {e}") from None


def recipe_from_dict(raw: Mapping[str, Any], *, where: str = "recipe") -> Recipe:
    """Build a :class:`Recipe` from a plain mapping (a parsed YAML file)."""
    from flow3d.engine.heads import get_head

    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: a recipe must be a YAML mapping, got {type(raw).__name__}")
    for key in raw:
        if key not in _SECTIONS:
            raise ConfigError(f"{where}: unknown key {key!r}" + _suggest(str(key), _SECTIONS))
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
    kwargs["name"] = _coerce(raw.get("name", ""), str, "name", where)
    return Recipe(**kwargs)


# ---- overrides -----------------------------------------------------------------------------
def _section_types(head: str | None, where: str) -> dict[str, Any]:
    types_: dict[str, Any] = {"head": str, "name": str}
    types_.update(flow=FlowConfig, trainer=TrainerConfig)
    if head is not None:
        from flow3d.engine.heads import get_head

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
                node_type = _hints(node_type)
            else:
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:depth])} has no sub-keys")
            if part not in valid:
                prefix = ".".join(parts[:depth]) + "." if depth else ""
                hint = _suggest(part, valid, prefix)
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
        raise ConfigError(f"{path}: recipe file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
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
