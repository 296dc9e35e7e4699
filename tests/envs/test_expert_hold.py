"""Success you can trust: the scripted experts finish the task and hold it, and recordings run past
the first success (``rollout(post_success_steps=N)``, ``robolearn collect --post-success-steps``)."""

from __future__ import annotations

import numpy as np
import pytest

from robolearn import types
from robolearn.envs import env_config, make_env
from robolearn.envs.experts import make_expert
from robolearn.envs.recording import POST_SUCCESS_STEPS, rollout

TASKS = ("reach", "lift", "push", "stack", "pick-place")


def _successes(episode) -> list[bool]:
    return [bool(f[types.SUCCESS][0]) for f in episode.frames]


def _dones(episode) -> list[bool]:
    return [bool(f[types.DONE][0]) for f in episode.frames]


@pytest.mark.parametrize("task", TASKS)
def test_expert_holds_success_past_first_success(task):
    cfg = env_config(f"franka-{task}")
    env = make_env(f"franka-{task}", cfg)
    expert = make_expert(cfg)
    try:
        for seed in range(3):
            ep = rollout(env, expert, seed, expert.reset, post_success_steps=20)
            assert ep.first_success is not None, f"{task} seed {seed}: never succeeded"
            assert len(ep) == ep.first_success + 21
            # Finished, not just reached: success stays true on every frame after the first.
            assert all(_successes(ep)[ep.first_success :]), f"{task} seed {seed}: {_successes(ep)}"
            assert ep.success
    finally:
        env.close()


@pytest.mark.parametrize("task", ["push", "stack"])
def test_noisy_expert_still_holds_at_the_end(task):
    """DART noise (the push and stack recipes' 0.2) perturbs the release and back-off too."""
    cfg = env_config(f"franka-{task}")
    env = make_env(f"franka-{task}", cfg)
    expert = make_expert(cfg)
    try:
        held = [
            rollout(env, expert, seed, expert.reset, 0.2, post_success_steps=20).success for seed in range(4)
        ]
    finally:
        env.close()
    assert held == [True] * 4


def test_push_expert_stops_pushing_and_backs_off():
    """After success the pusher opens, draws back and rises; the cube stays where it was left."""
    cfg = env_config("franka-push")
    env = make_env("franka-push", cfg)
    expert = make_expert(cfg)
    try:
        ep = rollout(env, expert, 1, expert.reset, post_success_steps=40)
    finally:
        env.close()
    env_state = np.stack([f[types.OBS_ENV_STATE] for f in ep.frames])
    state = np.stack([f[types.OBS_STATE] for f in ep.frames])
    goal_dist = np.linalg.norm(env_state[:, :2] - env_state[:, 7:9], axis=1)
    assert goal_dist[-1] < 0.5 * cfg.extra.get("success_dist", 0.05)
    assert np.abs(env_state[-10:, :3] - env_state[-1, :3]).max() < 1e-3  # the cube is at rest
    tcp, cube = state[-1, 15:18], env_state[-1, :3]
    assert tcp[2] > cube[2] + 0.05  # the hand is clear above the table
    assert np.abs(ep.frames[-1][types.ACTION][:3]).max() < 0.1  # and waits


@pytest.mark.parametrize("task", ["stack", "pick-place"])
def test_place_experts_let_go_and_back_off_upward(task):
    cfg = env_config(f"franka-{task}")
    env = make_env(f"franka-{task}", cfg)
    expert = make_expert(cfg)
    try:
        ep = rollout(env, expert, 2, expert.reset, post_success_steps=30)
    finally:
        env.close()
    last = ep.frames[-1]
    state, cube = last[types.OBS_STATE], last[types.OBS_ENV_STATE][:3]
    assert state[14] > 0.07  # open
    assert state[17] > cube[2] + 0.07  # above the cube, pads clear of it
    assert np.linalg.norm(state[15:17] - cube[:2]) < 0.02  # straight above it
    assert last[types.ACTION][6] == -1.0


def test_rollout_records_post_success_frames_then_stops():
    cfg = env_config("franka-reach")
    assert cfg.terminate_on_success  # the env ends episodes on success by default ...
    env = make_env("franka-reach", cfg)
    expert = make_expert(cfg)
    try:
        ep = rollout(env, expert, 4, expert.reset, post_success_steps=7)
        assert cfg.terminate_on_success  # ... and gets that back after the rollout
        k = ep.first_success
        assert k is not None and _successes(ep).index(True) == k
        assert len(ep) == k + 1 + 7
        assert _dones(ep) == [False] * (len(ep) - 1) + [True]
        # Deterministic: the frames up to the first success are those of a run that stops there.
        at_success = rollout(env, expert, 4, expert.reset, post_success_steps=0)
        assert len(at_success) == k + 1 and at_success.success and _dones(at_success)[-1]
        np.testing.assert_array_equal(at_success.frames[-1][types.ACTION], ep.frames[k][types.ACTION])
        # None: the env ends the episode on its own terms (here: on success).
        own = rollout(env, expert, 4, expert.reset, post_success_steps=None)
        assert len(own) == k + 1
        # The env's cap ends an episode whose post-success window would run past it.
        capped = rollout(env, expert, 4, expert.reset, post_success_steps=10_000)
        assert len(capped) == env.max_episode_steps and _dones(capped)[-1] and capped.success
        with pytest.raises(ValueError, match="post_success_steps"):
            rollout(env, expert, 4, expert.reset, post_success_steps=-1)
    finally:
        env.close()


def test_rollout_default_and_a_failed_episode():
    assert POST_SUCCESS_STEPS == 25
    cfg = env_config("franka-lift", max_episode_steps=15)  # too short to lift
    env = make_env("franka-lift", cfg)
    expert = make_expert(cfg)
    try:
        ep = rollout(env, expert, 0, expert.reset)
    finally:
        env.close()
    assert ep.first_success is None and not ep.success
    assert len(ep) == 15 and _dones(ep)[-1]


@pytest.mark.parametrize("workers", [1, 2])
def test_collected_episodes_end_held_after_post_success_frames(tmp_path, workers):
    from robolearn.commands import collect
    from robolearn.data.reader import LeRobotReader

    out = tmp_path / "ds"
    args = collect.default_args(
        env="franka-lift", episodes=2, out=out, post_success_steps=12, workers=workers
    )
    assert collect.run(args) == 0
    reader = LeRobotReader(out)
    assert reader.num_episodes == 2
    for i in range(2):
        cols = reader.episode_columns(i)
        success, done = cols[types.SUCCESS].ravel(), cols[types.DONE].ravel()
        assert success[-1] and not success[0]
        first = int(np.argmax(success))
        assert len(success) - 1 - first == 12  # 12 frames recorded past the first success
        assert done[-1] and not done[:-1].any()


def test_collect_rejects_negative_post_success_steps(tmp_path):
    from robolearn.commands import collect
    from robolearn.errors import UserError

    args = collect.default_args(env="franka-reach", episodes=1, out=tmp_path / "ds", post_success_steps=-3)
    with pytest.raises(UserError, match="--post-success-steps must be >= 0, found -3"):
        collect.run(args)
    assert not (tmp_path / "ds").exists()
