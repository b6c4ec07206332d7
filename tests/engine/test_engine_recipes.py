"""Every recipe under recipes/ loads into typed dataclasses (heads not importable are skipped
with the reason), and the head registry's contract holds for every importable head."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from flow3d.engine.config import load_recipe, recipe_from_dict, recipe_to_dict
from flow3d.engine.head import Head
from flow3d.engine.heads import HEADS, HeadUnavailableError, get_head

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("**/*.yaml"))


def test_there_are_recipes():
    assert any(p.parent.name == "toy" for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(ROOT)) for p in RECIPES])
def test_recipe_loads(path):
    try:
        recipe = load_recipe(path)
    except HeadUnavailableError as e:
        pytest.skip(str(e))
    assert path.parent.name == recipe.head.split("_")[0], "recipes/<head>/ holds that head"
    assert recipe_from_dict(recipe_to_dict(recipe)) == recipe.replace(name=recipe.name)
    for section in (recipe.model, recipe.data, recipe.sample):
        assert dataclasses.is_dataclass(section)
        assert section.__dataclass_params__.frozen


@pytest.mark.parametrize("name", sorted(HEADS))
def test_registered_heads_follow_the_protocol(name):
    try:
        cls = get_head(name)
    except HeadUnavailableError as e:
        pytest.skip(str(e))
    assert issubclass(cls, Head)
    for attr in ("model_config", "data_config", "sample_config"):
        section = getattr(cls, attr)
        assert dataclasses.is_dataclass(section) and section.__dataclass_params__.frozen
