"""LIBERO env contract (extra ``libero``): registration, spaces, seeds as stored initial states, success
from the sim, upright cameras, and ``robolearn eval`` over LIBERO tasks with per-task success.

Building a LIBERO scene takes seconds and a camera step ~0.1 s here, so these run few steps on
small images and are marked slow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from robolearn.envs import ENVS, SUITES, env_config, make_env
from robolearn.envs.adapters.libero import LIBERO_STATE_NAMES, LIBERO_SUITES, LiberoConfig, task_instruction
from robolearn.types import OBS_STATE, TASK, image_key

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("libero", reason="needs the libero extra")
pytestmark = pytest.mark.slow

CONTRACT_TASKS = ["libero-spatial-0", "libero-object-0", "libero-goal-3", "libero-10-4"]
"""A tabletop, a floor scene (the NullMount fix), a kitchen goal task and a living-room long task."""


def _small(name: str, **fields) -> LiberoConfig:
    """Two 32x32 cameras and 3 settling steps (of 10) after each reset: the contract, quickly."""
    return env_config(name, cameras=("agentview", "wrist"), image_size=(32, 32), settle_steps=3, **fields)


def test_every_suite_task_is_registered_as_in_the_installed_benchmark(capsys):
    from robolearn.envs.adapters.libero_env import prepare_libero

    prepare_libero()
    from libero.libero import benchmark

    names = benchmark.get_benchmark_dict()
    for suite, tasks in LIBERO_SUITES.items():
        bench = names[suite]()
        assert tuple(t.name for t in bench.tasks) == tasks
        assert [t.language for t in bench.tasks] == [task_instruction(t) for t in tasks]
        env_names = [f"{suite.replace('_', '-')}-{i}" for i in range(10)]
        assert SUITES.expand(suite.replace("_", "-")) == tuple(env_names)
        for i, name in enumerate(env_names):
            assert ENVS.get(name).defaults == {"suite": suite, "task_id": i}


def _mujoco_view(env, camera: str, size: int) -> np.ndarray:
    """``camera`` of the env's current state through ``mujoco.Renderer`` (upright by construction)."""
    import mujoco

    sim = env._env.sim
    with mujoco.Renderer(sim.model._model, size, size) as renderer:
        renderer.update_scene(sim.data._data, camera=camera)
        return renderer.render()


@pytest.fixture(scope="module", params=CONTRACT_TASKS)
def env(request):
    env = make_env(request.param, _small(request.param))
    yield env
    env.close()


def test_reset_step_spaces_seeds_and_cameras(env):
    cfg = env.config
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs), {k: getattr(v, "shape", v) for k, v in obs.items()}
    assert obs[OBS_STATE].shape == (len(LIBERO_STATE_NAMES),) and np.all(np.isfinite(obs[OBS_STATE]))
    assert obs[TASK] == task_instruction(cfg.task_name) and info["is_success"] is False
    assert info["init_state"] == 3 and env.num_init_states == 50
    for cam in ("agentview", "wrist"):
        img = obs[image_key(cam)]
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and img.std() > 5
    # Upright: MuJoCo's own renderer (rows top first) draws the same camera of the same state alike.
    # (Textures may differ in that second GL context, so the layouts are compared, not the colours.)
    view = obs[image_key("agentview")].astype(float).mean(-1)
    ref = _mujoco_view(env, "agentview", 32).astype(float).mean(-1)

    def corr(a: np.ndarray) -> float:
        return float(np.corrcoef(a.ravel(), ref.ravel())[0, 1])

    assert corr(view) > max(corr(view[::-1]), corr(view[:, ::-1]), corr(view[::-1, ::-1])) + 0.1
    state = obs[OBS_STATE].copy()
    rng = np.random.default_rng(0)
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
        assert env.observation_space.contains(obs)
        assert reward in (0.0, 1.0) and isinstance(info["is_success"], bool) and not truncated
    again, _ = env.reset(seed=3)
    np.testing.assert_array_equal(again[OBS_STATE], state)
    wrapped, info = env.reset(seed=53)  # seeds wrap around the 50 stored initial states
    assert info["init_state"] == 3
    np.testing.assert_array_equal(wrapped[OBS_STATE], state)
    other, _ = env.reset(seed=4)
    assert not np.array_equal(other[OBS_STATE], state) or not np.array_equal(
        other[image_key("agentview")], again[image_key("agentview")]
    )
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        env.step(np.zeros(6))
    *_, info = env.step(np.full(7, 3.0))
    assert info["action_clipped"] is True


def test_success_comes_from_the_sim_goal_check():
    """Opening the middle drawer by hand satisfies libero-goal-0's BDDL goal on the next step."""
    env = make_env("libero-goal-0")
    try:
        env.reset(seed=0)
        obs, reward, terminated, _, info = env.step(np.zeros(7))
        assert not info["is_success"] and reward == 0.0 and not terminated
        sim = env._env.sim
        joint = sim.model.joint_name2id("wooden_cabinet_1_middle_level")
        sim.data.qpos[sim.model.jnt_qposadr[joint]] = sim.model.jnt_range[joint][0]  # fully open
        sim.forward()
        obs, reward, terminated, _, info = env.step(np.zeros(7))
        assert info["is_success"] and reward == 1.0 and terminated
    finally:
        env.close()


def test_bddl_instruction_and_episode_budget():
    cfg = env_config("libero-spatial-0", instruction="bddl")
    env = make_env("libero-spatial-0", cfg)
    try:
        assert (
            env.instruction
            == "pick the akita black bowl between the plate and the ramekin and place it on the plate"
        )
        assert env.max_episode_steps == 220
    finally:
        env.close()
    with pytest.raises(ValueError, match="task_id must be in"):
        LiberoConfig(suite="libero_goal", task_id=10)


@pytest.fixture(scope="module")
def state_checkpoint(tmp_path_factory):
    """A tiny flow policy on LIBERO's 8-D state and 7-D action (no camera: the eval is quick)."""
    import torch

    from robolearn.data.convert import Episode, InMemorySource, write_episodes
    from robolearn.train.config import TrainConfig
    from robolearn.train.trainer import train_policy
    from robolearn.types import FeatureSpec

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("libero_ckpt")
    rng = np.random.default_rng(0)
    features = {
        OBS_STATE: FeatureSpec("float32", (8,), LIBERO_STATE_NAMES),
        "action": FeatureSpec("float32", (7,)),
    }
    eps = [Episode({OBS_STATE: rng.normal(size=(20, 8)).astype(np.float32),
                    "action": rng.uniform(-1, 1, (20, 7)).astype(np.float32)}, task_instruction(LIBERO_SUITES["libero_spatial"][0]))
           for _ in range(4)]  # fmt: skip
    src = InMemorySource(Path("memory"), fps=20.0, features=features, robot_type="panda", episode_list=eps)
    (root / "ds").mkdir()
    write_episodes(src, root / "ds" / "d", "lerobot", iter(eps))
    cfg = TrainConfig(policy="flow", policy_config={"n_obs_steps": 1, "horizon": 8, "n_action_steps": 4,
                                                    "denoiser": {"kind": "mlp", "mlp_dims": [32, 32]}},
                      steps=4, batch_size=8, log_every=1, save_every=4, val_fraction=0.25)  # fmt: skip
    train_policy(cfg, root / "ds" / "d", root / "run")
    return root / "run"


def test_eval_over_libero_tasks_reports_per_task_success(state_checkpoint, tmp_path, capsys):
    from robolearn.cli import main

    out = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(state_checkpoint), "--env", "libero-spatial-0,libero-object-1", "--episodes", "2",
            "--num-envs", "1", "--hold-steps", "0", "--set", "max_episode_steps=3", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "libero-spatial-0" in text and "libero-object-1" in text and "average" in text
    data = json.loads(out.read_text())
    assert set(data["tasks"]) == {"libero-spatial-0", "libero-object-1"}
    for task in data["tasks"].values():
        assert task["episodes"] == 2 and 0.0 <= task["success_rate"] <= 1.0
    seeds = sorted(ep["seed"] for ep in data["per_episode"] if ep["env"] == "libero-spatial-0")
    assert len(seeds) == 2 and seeds[0] != seeds[1]
