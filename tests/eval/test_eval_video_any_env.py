"""``eval --video`` for a policy that consumes no camera, on the peer adapters (skipped without them)."""

from __future__ import annotations

import numpy as np
import pytest

from robolearn.cli import main
from robolearn.envs import ENVS
from robolearn.types import ACTION, OBS_ENV_STATE, OBS_STATE, TASK, FeatureSpec, is_image_key


def _random_state_checkpoint(folder, env_name: str):
    """A randomly initialised state-only flow policy with the features of ``env_name``, saved."""
    import torch

    from robolearn.envs import make_env
    from robolearn.eval.evaluate import env_feature_shapes
    from robolearn.policies import DenoiserConfig, FlowConfig
    from robolearn.registry import POLICIES

    env = make_env(env_name)
    try:
        shapes = env_feature_shapes(env)
    finally:
        env.close()
    features = {k: FeatureSpec("float32", shapes[k]) for k in (OBS_STATE, OBS_ENV_STATE, ACTION)}
    stats = {k: {"mean": np.zeros(s.shape), "std": np.ones(s.shape), "min": -np.ones(s.shape),
                 "max": np.ones(s.shape)} for k, s in features.items()}  # fmt: skip
    torch.manual_seed(0)
    cfg = FlowConfig(horizon=8, n_obs_steps=2, n_action_steps=4, num_inference_steps=2,
                     denoiser=DenoiserConfig(kind="mlp", mlp_dims=(32, 32)))  # fmt: skip
    return POLICIES.build("flow", cfg, features=features, stats=stats).save_pretrained(folder)


@pytest.mark.parametrize(
    ("module", "env_name", "steps"),
    [
        ("robosuite", "robosuite-lift", 8),
        ("metaworld", "metaworld-reach", 6),
        ("gym_hil", "gym-hil-pick-cube", 5),
    ],
)
def test_eval_video_for_state_only_policy(module, env_name, steps, tmp_path):
    pytest.importorskip(module)
    import av

    ckpt = _random_state_checkpoint(tmp_path / "ckpt", env_name)
    videos = tmp_path / "videos"
    rc = main(["eval", "--checkpoint", str(ckpt), "--env", env_name, "--episodes", "1", "--num-envs", "1",
               "--set", f"max_episode_steps={steps}", "--video", str(videos), "--video-episodes", "1"])  # fmt: skip
    assert rc == 0
    (mp4,) = videos.glob("*.mp4")
    with av.open(str(mp4)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == steps + 1  # the reset frame, then one per step
    assert frames[0].shape == (96, 96, 3)
    assert frames[0].std() > 5  # a scene, not a blank frame


def _buildable(name: str) -> bool:
    try:
        ENVS.get(name).load_builder()
    except ImportError:  # the peer simulator's extra is not installed
        return False
    return True


def _shipped(name: str) -> bool:
    """Registered by robolearn itself, not by a test module (tests/rl registers a render-less toy task,
    and whether it is in the registry here depends on which test files were collected first)."""
    builder = ENVS.get(name).builder
    return isinstance(builder, str) and builder.startswith("robolearn.")


# LIBERO's 40 tasks share one adapter and each scene takes seconds to build: task 0 of each suite.
FILMED = [n for n in ENVS.names() if _shipped(n) and (not n.startswith("libero-") or n.endswith("-0"))]


@pytest.mark.parametrize("env_name", FILMED)
def test_every_env_films_without_a_camera_in_the_observation(env_name):
    if not _buildable(env_name):
        pytest.skip(f"{env_name}: its extra is not installed")
    from robolearn.envs import make_env

    plain, filmed = make_env(env_name), make_env(env_name, render_mode="rgb_array")
    try:
        assert filmed.observation_space.keys() == plain.observation_space.keys()
        assert not any(is_image_key(k) for k in filmed.observation_space.keys())
        assert plain.render() is None
        a, _ = plain.reset(seed=3)
        b, _ = filmed.reset(seed=3)
        assert a.keys() == b.keys()
        for k in a:
            if k != TASK:
                np.testing.assert_array_equal(a[k], b[k])
        first = filmed.render()
        assert first.ndim == 3 and first.shape[2] == 3 and first.dtype == np.uint8 and first.std() > 5
        for _ in range(3):
            filmed.step(np.ones(filmed.action_space.shape, dtype=np.float32))
        assert not np.array_equal(filmed.render(), first)  # the arm moved
    finally:
        plain.close()
        filmed.close()
