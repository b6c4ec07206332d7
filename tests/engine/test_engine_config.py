"""Recipes: typed loading, overrides, one-line errors with suggestions, round trip."""

from __future__ import annotations

import dataclasses
import sys
import types

import pytest
import yaml

from flow3d.engine import config as cfg
from flow3d.engine.head import Head
from flow3d.engine.heads import HEADS, HeadUnavailableError, get_head
from flow3d.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class _Model:
    width: int = 32
    depth: int = 2
    dims: tuple[int, ...] = (1, 2)


@dataclasses.dataclass(frozen=True)
class _Data:
    path: str = "x"
    limit: int | None = None


@dataclasses.dataclass(frozen=True)
class _Sample:
    steps: int = 10
    method: str = "euler"


class _DummyHead(Head):
    name = "dummy"
    model_config = _Model
    data_config = _Data
    sample_config = _Sample

    def build_model(self):
        raise NotImplementedError

    def train_dataset(self):
        raise NotImplementedError

    def loss(self, model, batch, generator):
        raise NotImplementedError

    def sample(self, model, num, *, seed=0, **overrides):
        raise NotImplementedError


@pytest.fixture(autouse=True)
def dummy_head(monkeypatch):
    module = types.ModuleType("_flow3d_test_dummy_head")
    module.DummyHead = _DummyHead
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(HEADS, "dummy", f"{module.__name__}:DummyHead")


def _write(tmp_path, data, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_load_defaults_and_types(tmp_path):
    path = _write(tmp_path, {"head": "dummy", "model": {"width": 64, "dims": [3, 4]},
                             "trainer": {"lr": 1, "precision": 32}})
    r = cfg.load_recipe(path)
    assert r.model == _Model(width=64, dims=(3, 4))
    assert r.trainer.lr == 1.0 and isinstance(r.trainer.lr, float)
    assert r.trainer.precision == "32"
    assert r.data == _Data() and r.sample == _Sample() and r.flow == cfg.FlowConfig()
    assert r.name == "r"
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.trainer.lr = 3.0  # type: ignore[misc]


def test_overrides_are_typed(tmp_path):
    path = _write(tmp_path, {"head": "dummy"})
    r = cfg.load_recipe(path, ["trainer.max_steps=200", "flow.time_sampler.name=logit_normal",
                               "data.limit=5", "sample.method=rk4", "trainer.grad_clip=null"])
    assert r.trainer.max_steps == 200
    assert r.flow.time_sampler.name == "logit_normal"
    assert r.data.limit == 5 and r.sample.method == "rk4" and r.trainer.grad_clip is None


@pytest.mark.parametrize(
    ("data", "overrides", "expected"),
    [
        ({"head": "dummy", "trainer": {"max_step": 3}}, [], "did you mean 'trainer.max_steps'"),
        ({"head": "dummy", "modle": {}}, [], "did you mean 'model'"),
        ({"head": "dummy"}, ["trainer.max_step=3"], "did you mean 'trainer.max_steps'"),
        ({"head": "dummy"}, ["flow.time_sampler.nmae=x"], "'flow.time_sampler.name'"),
        ({"head": "dummy"}, ["trainer.max_steps=abc"], "trainer.max_steps = 'abc' must be an int"),
        ({"head": "dummy"}, ["trainer.lr_schedule=cosin"], "did you mean 'cosine'"),
        ({"head": "dummy"}, ["trainer.max_steps"], "expected key=value"),
        ({"head": "dumy"}, [], "did you mean 'dummy'"),
        ({"model": {}}, [], "missing required key 'head'"),
        ({"head": "dummy", "trainer": {"ema_warmup": "yes"}}, [], "must be true or false"),
        ({"head": "dummy", "trainer": 3}, [], "trainer must be a mapping"),
    ],
)
def test_errors_are_one_line_with_suggestion(tmp_path, data, overrides, expected):
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        cfg.load_recipe(path, overrides)
    message = str(info.value)
    assert expected in message and "\n" not in message
    assert str(path) in message or "override" in message


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        cfg.load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("head: [dummy\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        cfg.load_recipe(bad)


def test_dump_round_trip(tmp_path):
    path = _write(tmp_path, {"head": "dummy", "name": "n", "model": {"dims": [5]}})
    r = cfg.load_recipe(path, ["trainer.seed=7"])
    out = tmp_path / "out" / "recipe.yaml"
    cfg.dump_recipe(r, out)
    assert cfg.load_recipe(out) == r
    assert cfg.recipe_to_dict(r)["trainer"]["seed"] == 7


def test_unimportable_head_names_extra(monkeypatch):
    monkeypatch.setitem(HEADS, "ghost", "flow3d_no_such_module.head:Ghost")
    with pytest.raises(HeadUnavailableError, match="cannot be imported"):
        get_head("ghost")
    with pytest.raises(ConfigError, match="did you mean 'dummy'"):
        get_head("dumm")
