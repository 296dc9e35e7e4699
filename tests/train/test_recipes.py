"""Default recipes: ``train --policy P`` without ``--preset`` takes P's measured recipe for the dataset's
observation kind; every registered policy has one for state and for images."""

from __future__ import annotations

import pytest

import robolearn.policies  # noqa: F401  (registers policies)
from robolearn.commands.train import resolve_train_config
from robolearn.registry import POLICIES
from robolearn.train import recipes
from robolearn.types import FeatureSpec

STATE = {"observation.state": FeatureSpec("float32", (22,)), "action": FeatureSpec("float32", (7,))}
IMAGES = {**STATE, "observation.images.agentview": FeatureSpec("video", (84, 84, 3)),
          "observation.environment_state": FeatureSpec("float32", (10,))}  # fmt: skip


def test_observation_kind():
    assert recipes.observation_kind(STATE) == "state"
    assert recipes.observation_kind(IMAGES) == "image"


@pytest.mark.parametrize("policy", POLICIES.names())
@pytest.mark.parametrize("kind", ["state", "image"])
def test_every_registered_policy_has_a_recipe_per_kind(policy, kind):
    from robolearn.commands.train import load_train_config

    path = recipes.recipe_path(policy, kind)
    cfg = load_train_config(path, [], None)
    assert cfg.policy == policy
    if kind == "image":  # image recipes never feed the simulator's object state to the policy
        assert "observation.environment_state" not in cfg.policy_config["obs_keys"]


def test_missing_recipe_names_the_file_and_the_alternatives():
    with pytest.raises(FileNotFoundError, match=r"no default recipe for policy 'nope' on state.*flow_state"):
        recipes.recipe_path("nope", "state")


def test_state_dataset_gets_the_state_recipe(lift_dataset, capsys):
    cfg, source = resolve_train_config(lift_dataset, None, ["steps=7"], "diffusion")
    assert source.endswith("policies/diffusion_state.yaml")
    assert cfg.policy == "diffusion" and cfg.steps == 7
    assert cfg.policy_config["denoiser"]["kind"] == "mlp"
    assert "diffusion_state.yaml" in capsys.readouterr().out


def test_image_recipe_is_pointed_at_the_dataset_cameras():
    path, kind = recipes.default_recipe("flow", IMAGES)
    assert (path.name, kind) == ("flow_image.yaml", "image")
    from robolearn.commands.train import load_train_config

    cfg = load_train_config(path, [], None)
    recipes.adapt_to_dataset(cfg, kind, IMAGES, set())
    assert cfg.policy_config["obs_keys"] == ["observation.state", "observation.images.agentview"]
    cfg = load_train_config(path, [], None)
    recipes.adapt_to_dataset(cfg, kind, IMAGES, {"policy_config.obs_keys"})
    assert "observation.images.wrist" in cfg.policy_config["obs_keys"]  # the user's choice stands
