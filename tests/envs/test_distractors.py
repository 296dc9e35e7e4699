"""Distractor cubes: scenes where only the instruction says which cube is the target.

The knob is ``extra: {distractors: N}`` on lift, push, pick-place and stack; ``N = 0`` (the default)
must leave every scene exactly as it was before the knob existed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from robolearn import types
from robolearn.envs import SUITES, env_config, make_env
from robolearn.envs.config import CUBE_COLOURS, SLOT_ENV_STATE_NAMES
from robolearn.envs.experts import make_expert, named_cubes, task_view
from robolearn.envs.franka.mjcf import scene_xml
from robolearn.envs.franka.placement import (
    DISTRACTOR_CLEARANCE,
    DISTRACTOR_SPACING,
    PUSH_LANE,
    TABLE_X,
    TABLE_Y,
    segment_dist,
)
from robolearn.envs.franka.tasks import COLOURS, StackTask
from robolearn.envs.recording import rollout

GOLDEN = json.loads((Path(__file__).parent / "default_scenes_03587a1.json").read_text())
TASKS = ("lift", "push", "pick-place", "stack")


def _slot(env_state: np.ndarray, colour: str) -> np.ndarray:
    i = CUBE_COLOURS.index(colour) * 8
    return env_state[i : i + 8]


@pytest.mark.parametrize("task", ["reach", *TASKS])
def test_default_scene_is_bit_identical_to_before_the_knob(task):
    """Same MJCF, same reset observation bit for bit, and the same state after replaying the 30
    actions that commit 03587a1's expert took (recorded then, so later expert changes do not matter).
    The replay is compared to 1e-6 so a CPU whose last-ulp float arithmetic differs does not fail
    it; any change to the scene or to the generator's draws moves it far more."""
    golden = GOLDEN[task]
    cfg = env_config(f"franka-{task}")
    assert cfg.extra == {} and cfg.distractors == 0
    env = make_env(f"franka-{task}", cfg)
    try:
        xml = scene_xml(env.arm, env.task.spec, cfg.physics_dt, cfg.image_size)
        assert hashlib.sha256(xml.encode()).hexdigest() == golden["xml_sha256"]
        for seed, want in golden["seeds"].items():
            obs, _ = env.reset(seed=int(seed))
            assert obs[types.TASK] == want["task"]
            np.testing.assert_array_equal(obs[types.OBS_ENV_STATE], np.float32(want["env_state"]))
            np.testing.assert_array_equal(obs[types.OBS_STATE], np.float32(want["state"]))
            for action in want["actions"]:
                obs, *_ = env.step(np.float32(action))
            np.testing.assert_allclose(obs[types.OBS_ENV_STATE], want["env_state_30"], rtol=0, atol=1e-6)
            np.testing.assert_allclose(obs[types.OBS_STATE], want["state_30"], rtol=0, atol=1e-6)
    finally:
        env.close()


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_distractor_scene_layout(task, n):
    cfg = env_config(f"franka-{task}", extra={"distractors": n})
    assert cfg.feature_names()[types.OBS_ENV_STATE] == SLOT_ENV_STATE_NAMES
    env = make_env(f"franka-{task}", cfg)
    try:
        assert env.observation_space[types.OBS_ENV_STATE].shape == (len(SLOT_ENV_STATE_NAMES),) == (52,)
        targets_seen = set()
        for seed in range(12):
            obs, _ = env.reset(seed=seed)
            es, instruction = obs[types.OBS_ENV_STATE], obs[types.TASK]
            cubes = env.task.state.cubes  # colour -> body
            named = named_cubes(task, instruction)
            targets_seen.add(named[0])
            assert len(cubes) == len(named) + n  # N extra cubes, colours distinct (dict keys)
            distractors = [c for c, body in cubes.items() if body.startswith("distractor_")]
            assert len(distractors) == n and not set(distractors) & set(env.task.state.colours)
            assert all(c not in instruction for c in distractors)  # the instruction names only the task's
            # Fixed colour slots: present flag and pose of each cube, whatever its role; zero otherwise.
            for colour in CUBE_COLOURS:
                slot = _slot(es, colour)
                if colour in cubes:
                    body = cubes[colour]
                    adr = env.task.h.cube_qpos[body]
                    assert slot[0] == 1.0
                    np.testing.assert_array_equal(slot[1:], np.float32(env.data.qpos[adr : adr + 7]))
                    rgba = env.model.geom_rgba[env.task.h.cube_geom[body]]
                    np.testing.assert_allclose(rgba, COLOURS[colour], atol=1e-6)
                else:
                    assert not slot.any()
            # The instruction's cubes are the task's own (cube_a, then cube_b for stack).
            assert [cubes[c] for c in named] == ["cube_a", "cube_b"][: len(named)]
            goal = es[-4:]
            if task in ("push", "pick-place"):
                assert goal[0] == 1.0
                np.testing.assert_array_equal(goal[1:], np.float32(env.model.site_pos[env.task.h.goal_site]))
            else:
                assert not goal.any()
            # Apart and on the reachable table.
            xy = {c: _slot(es, c)[1:3].astype(np.float64) for c in cubes}
            for c in distractors:
                assert TABLE_X[0] <= xy[c][0] <= TABLE_X[1] and TABLE_Y[0] <= xy[c][1] <= TABLE_Y[1]
                for other in cubes:
                    if other == c:
                        continue
                    least = DISTRACTOR_SPACING if other in distractors else DISTRACTOR_CLEARANCE
                    assert np.linalg.norm(xy[c] - xy[other]) >= least - 1e-6, (seed, c, other)
                if goal[0]:
                    assert np.linalg.norm(xy[c] - goal[1:3]) >= DISTRACTOR_CLEARANCE - 1e-6
                if task == "push":  # off the lane the pushed cube travels
                    cube = xy[named[0]]
                    u = (goal[1:3] - cube) / np.linalg.norm(goal[1:3] - cube)
                    assert segment_dist(xy[c], cube - 0.09 * u, goal[1:3] + 0.04 * u) >= PUSH_LANE - 1e-6
            # The task's own cubes sit where the scene without distractors puts them (same draws).
            np.testing.assert_array_equal(task_view(task, es, instruction)[:7], _plain(task, seed)[:7])
        # The target's slot changes from scene to scene: the layout does not say which cube it is.
        assert len(targets_seen) >= 3
    finally:
        env.close()


def _plain(task: str, seed: int) -> np.ndarray:
    env = make_env(f"franka-{task}")
    try:
        return env.reset(seed=seed)[0][types.OBS_ENV_STATE]
    finally:
        env.close()


def test_bad_distractor_counts_are_errors():
    """Checked where the config is made (so every command reports it in one line), and by the task."""
    with pytest.raises(ValueError, match=r"task 'reach' takes no distractors \(tasks with distractors: lift"):
        env_config("franka-reach", extra={"distractors": 1})
    with pytest.raises(ValueError, match=r"extra.distractors must be a whole number 0..3, found 2.5"):
        env_config("franka-lift", extra={"distractors": 2.5})
    with pytest.raises(ValueError, match=r"whole number 0..3, found 4"):
        env_config("franka-push", overrides=["extra.distractors=4"])
    with pytest.raises(
        ValueError, match=r"task 'stack': extra.distractors must be a whole number 0..3, found -1"
    ):
        StackTask({"distractors": -1})
    with pytest.raises(ValueError, match="unknown extra key 'distractor'.*'distractors'"):
        make_env("franka-lift", env_config("franka-lift", extra={"distractor": 1}))
    assert env_config("franka-stack", overrides=["extra.distractors=3"]).distractors == 3


def test_the_language_suite():
    envs = SUITES.expand("franka-language")
    assert envs == ("franka-lift-d2", "franka-push-d2", "franka-pick-place-d2", "franka-stack-d2")
    layouts = set()
    for name in envs:
        cfg = env_config(name)
        assert cfg.distractors == 2
        layouts.add(tuple(cfg.feature_names()[types.OBS_ENV_STATE]))
    assert layouts == {SLOT_ENV_STATE_NAMES}  # one shared layout: the demos go into one dataset
    assert SUITES.expand("franka-lift,franka-language,franka-lift") == ("franka-lift", *envs)
    with pytest.raises(KeyError, match=r"unknown env 'franka-nope' \(nor a suite\); suites: franka-language"):
        SUITES.expand("franka-lift,franka-nope")


@pytest.mark.parametrize("task", TASKS)
def test_expert_finishes_the_named_cube_and_leaves_the_distractors(task):
    name = f"franka-{task}-d2"
    cfg = env_config(name)
    env, expert = make_env(name, cfg), make_expert(cfg)
    try:
        for seed in range(3):
            ep = rollout(env, expert, seed, expert.reset, post_success_steps=20)
            assert ep.first_success is not None and ep.success, (task, seed)
            es = np.stack([f[types.OBS_ENV_STATE] for f in ep.frames])
            for colour in CUBE_COLOURS:
                i = CUBE_COLOURS.index(colour) * 8
                if es[0, i] and colour not in named_cubes(task, ep.task):
                    assert np.abs(es[:, i + 1 : i + 4] - es[0, i + 1 : i + 4]).max() < 2e-3, (seed, colour)
    finally:
        env.close()


def test_same_scene_other_instruction_moves_the_other_cube():
    """The lift expert given another colour's instruction lifts that cube, not the scene's target."""
    cfg = env_config("franka-lift-d2")
    env, expert = make_env("franka-lift-d2", cfg), make_expert(cfg)
    try:
        obs, _ = env.reset(seed=4)
        (target,) = named_cubes("lift", obs[types.TASK])
        other = next(c for c, body in env.task.state.cubes.items() if body != "cube_a")
        swapped = obs[types.TASK].replace(target, other)
        expert.reset()
        for _ in range(60):
            obs, _, _, _, info = env.step(expert({**obs, types.TASK: swapped}))
        es = obs[types.OBS_ENV_STATE]
        assert _slot(es, other)[3] > 0.08  # the other cube is up in the hand
        assert abs(_slot(es, target)[3] - 0.02) < 2e-3 and not info["is_success"]
    finally:
        env.close()


@pytest.mark.parametrize("task", TASKS)
def test_swap_target_keeps_the_scene_and_names_the_other_cube(task):
    """The grounding probe: the same pixels and cube layout, another cube named, success on that one
    (the expert, which reads the instruction, still succeeds)."""
    name = f"franka-{task}-d2"
    base = env_config(name, cameras=("front",))
    swapped_cfg = env_config(name, cameras=("front",), overrides=["extra.swap_target=1"])
    plain, swapped = make_env(name, base), make_env(name, swapped_cfg)
    expert = make_expert(swapped_cfg)
    try:
        for seed in range(3):
            o0, _ = plain.reset(seed=seed)
            o1, _ = swapped.reset(seed=seed)
            assert np.array_equal(o0[types.image_key("front")], o1[types.image_key("front")])
            assert np.array_equal(o0[types.OBS_ENV_STATE], o1[types.OBS_ENV_STATE])  # the same colour slots
            was, now = named_cubes(task, o0[types.TASK]), named_cubes(task, o1[types.TASK])
            assert was[0] != now[0] and was[1:] == now[1:]
            assert plain.task.state.cubes[now[0]].startswith("distractor")
            assert swapped.task.state.cubes[now[0]] == "cube_a"
            ep = rollout(swapped, expert, seed, expert.reset, post_success_steps=20)
            assert ep.success, (task, seed)
            es = np.stack([f[types.OBS_ENV_STATE] for f in ep.frames])
            moved = np.abs(_slot(es[-1], now[0])[1:4] - _slot(es[0], now[0])[1:4]).max()
            still = np.abs(_slot(es[-1], was[0])[1:4] - _slot(es[0], was[0])[1:4]).max()
            # the formerly named cube stays put (push may graze it: distractors are kept off the
            # lane of the cube drawn as the target, and the swap moved it onto the other one's spot)
            assert moved > 0.03 and still < (0.015 if task == "push" else 2e-3), (seed, moved, still)
    finally:
        plain.close()
        swapped.close()
    with pytest.raises(ValueError, match="swap_target needs extra.distractors >= 1"):
        make_env("franka-lift", env_config("franka-lift", extra={"swap_target": 1}))


def test_stack_without_distractors_needs_the_instruction_from_images():
    """franka-stack draws both colours per episode: which cube goes on which is in the instruction
    (and in the state's cube_a-first order), never in a fixed colour a camera could learn."""
    env = make_env("franka-stack")
    try:
        pairs = set()
        for seed in range(40):
            obs, _ = env.reset(seed=seed)
            a, b = named_cubes("stack", obs[types.TASK])
            assert env.task.state.cubes == {a: "cube_a", b: "cube_b"}
            pairs.add((a, b))
        assert {a for a, _ in pairs} == set(CUBE_COLOURS) and any((b, a) in pairs for a, b in pairs)
    finally:
        env.close()
