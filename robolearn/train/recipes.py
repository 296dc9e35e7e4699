"""Default training recipes: what ``robolearn train --policy P`` uses when no ``--preset`` is given.

A recipe is a preset YAML in the checkout's ``policies/`` folder, named ``<policy>_<kind>.yaml``,
where ``kind`` is what the dataset observes: ``state`` (vectors only) or ``image`` (any camera).
Each one is the recipe measured best for that policy and observation kind on a 2-core CPU machine
(its header says what it reached). The paper-sized networks (diffusion_policy's 1D UNet with
(256, 512, 1024) channels, ResNet-18 cameras) are the ``*_gpu.yaml`` presets, chosen explicitly.

The image recipes list their inputs in ``policy_config.obs_keys`` (proprioception and cameras, no
object state: an image policy must not see the simulator's object poses). When such a recipe is
picked for a dataset, its camera keys are replaced by the dataset's own cameras.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robolearn import types

POLICIES_DIR = Path(__file__).resolve().parents[2] / "policies"
"""The checkout's ``policies/`` folder (recipes are files, not code)."""


def observation_kind(features: dict[str, Any]) -> str:
    """``"image"`` when the dataset has a camera feature, else ``"state"``."""
    return "image" if any(types.is_image_key(k) for k in features) else "state"


def recipe_path(policy: str, kind: str) -> Path:
    """``policies/<policy>_<kind>.yaml``; ``FileNotFoundError`` naming what exists otherwise."""
    path = POLICIES_DIR / f"{policy}_{kind}.yaml"
    if path.is_file():
        return path
    if not POLICIES_DIR.is_dir():
        raise FileNotFoundError(
            f"{POLICIES_DIR}: default recipes live in a source checkout's policies/ folder; "
            "pass --preset FILE"
        )
    known = sorted(p.stem for p in POLICIES_DIR.glob("*_*.yaml") if not p.stem.endswith("_gpu"))
    raise FileNotFoundError(
        f"no default recipe for policy {policy!r} on {kind} observations ({path} missing); "
        f"recipes: {', '.join(known) or 'none'}; pass --preset FILE"
    )


def image_obs_keys(features: dict[str, Any]) -> list[str]:
    """Inputs of an image recipe on a dataset: its ``observation.state`` (if any) and every camera."""
    keys = [types.OBS_STATE] if types.OBS_STATE in features else []
    return keys + sorted(k for k in features if types.is_image_key(k))


def default_recipe(policy: str, features: dict[str, Any]) -> tuple[Path, str]:
    """The recipe file for ``policy`` on a dataset with ``features``, and its observation kind."""
    kind = observation_kind(features)
    return recipe_path(policy, kind), kind


def adapt_to_dataset(cfg: Any, kind: str, features: dict[str, Any], overridden: set[str]) -> None:
    """Point an image recipe's ``obs_keys`` at the dataset's cameras (unless the user set them)."""
    if kind == "image" and "policy_config.obs_keys" not in overridden:
        cfg.policy_config["obs_keys"] = image_obs_keys(features)


def load_recipe(
    dataset: str | Path, policy: str = "flow", overrides: list[str] | tuple[str, ...] = ()
) -> tuple[Any, Path, str]:
    """The default recipe of ``policy`` for the dataset at ``dataset``, as a strict ``TrainConfig``.

    Returns (config, recipe path, observation kind). ``overrides`` are ``"key=value"`` strings as on
    the command line (``"steps=500"``, ``"policy_config.horizon=16"``)."""
    from robolearn.config import load_config
    from robolearn.data.reader import LeRobotReader
    from robolearn.train.config import TrainConfig

    features = LeRobotReader(dataset).features
    path, kind = default_recipe(policy, features)
    cfg = load_config(TrainConfig, path, [*overrides, f"policy={policy}"])
    adapt_to_dataset(cfg, kind, features, {o.partition("=")[0].strip() for o in overrides})
    return cfg, path, kind


def recipe(dataset: str | Path, policy: str = "flow", **fields: Any) -> Any:
    """``TrainConfig`` of ``policy``'s measured recipe for ``dataset`` (see the module docstring), with
    ``fields`` replacing top-level fields, e.g. ``recipe("datasets/d", "flow", steps=500)``."""
    import dataclasses

    cfg, _, _ = load_recipe(dataset, policy)
    return dataclasses.replace(cfg, **fields) if fields else cfg


__all__ = [
    "POLICIES_DIR",
    "adapt_to_dataset",
    "default_recipe",
    "image_obs_keys",
    "observation_kind",
    "recipe_path",
]
