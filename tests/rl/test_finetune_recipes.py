"""Every fine-tuning recipe (``policies/reinflow_*.yaml``, ``policies/dppo_*.yaml``) loads strictly, names
its own algorithm and a real env, and an unknown key is an error naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from robolearn.commands.finetune import default_preset
from robolearn.config import ConfigError, load_config
from robolearn.envs import ENVS
from robolearn.rl.config import FinetuneConfig

POLICIES = Path(__file__).resolve().parents[2] / "policies"
RECIPES = sorted([*POLICIES.glob("reinflow_*.yaml"), *POLICIES.glob("dppo_*.yaml")])


def test_there_are_recipes_for_both_algorithms():
    names = {p.stem.split("_")[0] for p in RECIPES}
    assert names == {"reinflow", "dppo"}


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_loads_strictly(recipe):
    cfg = load_config(FinetuneConfig, recipe, [])
    algorithm, task = recipe.stem.split("_", 1)
    assert cfg.algorithm == algorithm
    assert f"franka-{task}" in ENVS
    assert default_preset(algorithm, f"franka-{task}") == recipe
    assert cfg.ppo.clip == 0.01 and cfg.ppo.gae_lambda == 0.95


def test_unknown_key_is_an_error_naming_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithm: reinflow\nppo:\n  clip_range: 0.2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*clip_range|clip_range.*bad\.yaml"):
        load_config(FinetuneConfig, bad, [])
