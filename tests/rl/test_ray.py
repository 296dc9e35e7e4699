"""The Ray path: env copies on Ray actors give the same data as the process backend, and evaluation
and fine-tuning on them give the same results as without Ray.

One local Ray instance with 2 CPUs (``ray.init(num_cpus=2)``, no dashboard) serves every test here:
the module fixture starts it, shuts it down at the end and checks by PID that no Ray process (GCS,
raylet, actor workers) is left. Other drivers (the CLI run in a subprocess) join it by its address,
as a user joins a cluster.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import ray
import torch
from same_outputs import assert_same

from robolearn.cli import main
from robolearn.envs import env_config, make_env
from robolearn.eval.evaluate import evaluate
from robolearn.rl.ray_envs import RayVectorEnv
from robolearn.rl.vector import make_rollout_envs
from robolearn.types import ACTION, OBS_ENV_STATE, OBS_STATE

ROOT = Path(__file__).resolve().parents[2]


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance with 2 CPUs for the whole module; ``.address`` joins it, and tests add
    the PIDs of the actors they start to ``.pids`` so that teardown checks them too."""
    # Ray's processes inherit this environment: its actors find toy_tasks (the toy task's config
    # class, which they unpickle) as a user's actors find a plugin on PYTHONPATH.
    here = str(Path(__file__).resolve().parent)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
        ctx = ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    node = ray._private.worker._global_node
    pids = {p.process.pid for procs in node.all_processes.values() for p in procs}
    assert pids, "Ray reported no processes"
    cluster = SimpleNamespace(address=ctx.address_info["address"], pids=pids)
    try:
        yield cluster
    finally:
        cluster.pids |= {p for p in _descendants(os.getpid()) if _is_ray(p)}
        ray.shutdown()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(_alive(p) for p in cluster.pids):
            time.sleep(0.2)
        left = sorted(p for p in cluster.pids if _alive(p))
        assert not left, f"Ray processes left after ray.shutdown(): {left}"


def _is_ray(pid: int) -> bool:
    try:
        return b"ray" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_ray_vector_env_matches_the_process_backend(ray_cluster):
    # Chunked (To=2, 4 actions per call) copies with same-step autoreset, as fine-tuning uses them;
    # a 15-step cap makes episodes end inside chunks, so final_obs/final_info are compared too.
    cfg = env_config("franka-lift", max_episode_steps=15)
    kw = {"obs_steps": 2, "action_steps": 4}
    local = make_rollout_envs("franka-lift", cfg, 3, backend="process", **kw)
    remote = make_rollout_envs("franka-lift", cfg, 3, backend="ray", ray_address=ray_cluster.address, **kw)
    try:
        assert isinstance(remote, RayVectorEnv) and remote.num_envs == 3
        assert remote.single_observation_space == local.single_observation_space
        assert remote.single_action_space == local.single_action_space
        pids = remote.pids()
        ray_cluster.pids |= set(pids)
        assert len(set(pids)) == 2 and os.getpid() not in pids  # one actor per CPU, none in this process
        assert_same(local.reset(seed=[11, 12, 13]), remote.reset(seed=[11, 12, 13]))
        rng = np.random.default_rng(0)
        ended = 0
        for _ in range(10):
            actions = rng.uniform(-1, 1, (3, 4, 7)).astype(np.float32)
            out_local, out_remote = local.step(actions), remote.step(actions)
            assert_same(out_local, out_remote)
            obs, reward, terminated, truncated, info = out_remote
            assert obs[OBS_STATE].shape == (3, 2, 22) and len(obs["task"]) == 3 and reward.dtype == np.float64
            ended += int((terminated | truncated).sum())
            if (terminated | truncated).any():
                assert info["_final_obs"].tolist() == (terminated | truncated).tolist()
        assert ended >= 3
    finally:
        local.close()
        remote.close()


def test_next_step_autoreset_and_reset_mask_match_gymnasium(ray_cluster):
    cfg = env_config("franka-reach", max_episode_steps=3)
    fns = [lambda: make_env("franka-reach", cfg) for _ in range(3)]
    local = gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    remote = RayVectorEnv("franka-reach", cfg, 3, num_workers=2, autoreset_mode="NextStep")
    try:
        assert_same(local.reset(seed=5), remote.reset(seed=5))
        rng = np.random.default_rng(1)
        for step in range(8):
            actions = rng.uniform(-1, 1, (3, 7)).astype(np.float32)
            assert_same(local.step(actions), remote.step(actions))
            if step == 4:
                mask = {"reset_mask": np.array([True, False, True])}
                assert_same(local.reset(seed=[1, 2, 3], options=dict(mask)),
                            remote.reset(seed=[1, 2, 3], options=dict(mask)))  # fmt: skip
        assert len(remote.render()) == 3
    finally:
        local.close()
        remote.close()


class ReachThenLeave:
    """A scripted franka-reach "policy" (To = Ta = 1): servo the TCP onto the ball, then rise away
    from it, so episodes reach success but do not hold it. The ball keys its per-episode memory."""

    def __init__(self):
        self.config = SimpleNamespace(n_obs_steps=1, exec_start=0, n_action_steps=1)
        self.input_features = {OBS_STATE: (22,), OBS_ENV_STATE: (3,)}
        self._reached: set[bytes] = set()

    def check_features(self, found: dict, source: str = "env") -> None:
        assert tuple(found[ACTION]) == (7,), source

    def eval(self) -> ReachThenLeave:
        return self

    def predict_action_chunk(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        tcp, ball = obs[OBS_STATE][:, -1, 15:18].double().numpy(), obs[OBS_ENV_STATE][:, -1].double().numpy()
        actions = np.zeros((len(tcp), 1, 7), dtype=np.float32)
        for i, (p, b) in enumerate(zip(tcp, ball, strict=True)):
            key = b.astype(np.float32).tobytes()
            if np.linalg.norm(b - p) < 0.015:
                self._reached.add(key)
            if key in self._reached:
                actions[i, 0, 2] = 1.0
            else:
                actions[i, 0, :3] = np.clip((b - p) / 0.05, -1.0, 1.0)
        return torch.from_numpy(actions)


def test_eval_on_ray_gives_the_in_process_results(ray_cluster, tmp_path):
    kw = {"episodes": 5, "num_envs": 2, "hold_steps": 4, "progress": False}
    local = evaluate(ReachThenLeave(), "franka-reach", **kw)
    remote = evaluate(ReachThenLeave(), "franka-reach", **kw, ray_address=ray_cluster.address,
                      video_dir=tmp_path, video_episodes=1)  # fmt: skip
    assert remote.per_episode == local.per_episode
    assert (
        (remote.success_rate, remote.held_success_rate)
        == (local.success_rate, local.held_success_rate)
        == (1, 0)
    )
    assert remote.mean_return == local.mean_return and remote.policy_calls == local.policy_calls
    assert len(remote.videos) == 1 and Path(remote.videos[0]).stat().st_size > 0  # frames rendered on actors
    assert ray.is_initialized()  # evaluate left the caller's Ray up


def test_suite_eval_on_ray_gives_the_in_process_figures(ray_cluster):
    from robolearn.eval.suite import evaluate_suite

    kw = {"num_envs": 2, "hold_steps": 2, "progress": False}
    local = evaluate_suite(ReachThenLeave(), ["franka-reach"], 2, **kw)
    remote = evaluate_suite(ReachThenLeave(), ["franka-reach"], 2, **kw, ray_address=ray_cluster.address)
    figures = [r.to_json() for r in (local, remote)]
    for f in figures:  # policy latency is the one figure that differs from run to run
        f["tasks"]["franka-reach"].pop("latency_ms")
    assert figures[0] == figures[1] and len(figures[0]["per_episode"]) == 2


def _tiny_mlp_checkpoint(folder: Path) -> Path:
    """A loaded policy for franka-reach: an untrained MLP (deterministic, unlike sampling policies)."""
    from robolearn.policies.mlp.config import MLPConfig
    from robolearn.policies.mlp.model import MLPPolicy

    torch.manual_seed(0)
    features = {OBS_STATE: (22,), OBS_ENV_STATE: (3,), ACTION: (7,)}
    policy = MLPPolicy(
        MLPConfig(n_obs_steps=2, horizon=4, n_action_steps=2, hidden_dims=(32,)), features=features
    )
    return policy.save_pretrained(folder)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "robolearn.cli", *args], capture_output=True, text=True,
                          timeout=600, env=full_env, cwd=ROOT)  # fmt: skip


def test_eval_cli_joins_a_cluster_and_matches_in_process(ray_cluster, tmp_path):
    ck = _tiny_mlp_checkpoint(tmp_path / "ck")
    args = ["eval", "--checkpoint", str(ck), "--env", "franka-reach", "--episodes", "3", "--num-envs", "2",
            "--hold-steps", "3", "--set", "max_episode_steps=12"]  # fmt: skip
    assert main([*args, "--json", str(tmp_path / "local.json")]) == 0
    res = _cli(*args, "--json", str(tmp_path / "ray.json"), "--ray", ray_cluster.address)
    assert res.returncode == 0, res.stderr[-3000:]
    local, remote = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("local", "ray"))
    assert remote["per_episode"] == local["per_episode"] and len(local["per_episode"]) == 3
    for key in ("success_rate", "held_success_rate", "mean_return", "episodes"):
        assert remote[key] == local[key], key
    assert ray.is_initialized()  # a driver that joined left the cluster running


def test_finetune_on_ray_runs_an_iteration_like_the_process_backend(ray_cluster, tmp_path):
    from toy_tasks import tiny_flow_policy

    from robolearn.policies import load_policy

    ck = tiny_flow_policy().save_pretrained(tmp_path / "ck")
    args = ["finetune", "reinflow", "--checkpoint", str(ck), "--env", "toy-reach1d", "--set", "iterations=1",
            "--set", "num_envs=2", "--set", "n_steps=6", "--set", "ppo.minibatch_size=6",
            "--set", "ppo.update_epochs=1", "--set", "save_every=1"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "ray"), "--ray", ray_cluster.address]) == 0
    assert main([*args, "--out", str(tmp_path / "process")]) == 0
    rows = {}
    for name in ("ray", "process"):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 1
        rows[name] = json.loads(lines[0])
    timing = {k for k in rows["ray"] if k.endswith("_s")}  # rollout_s, update_s, env_steps_per_s, ...
    same = {k: v for k, v in rows["ray"].items() if k not in timing}
    assert same == {k: rows["process"][k] for k in same}, "same seeds, same data, same update"
    assert rows["ray"]["env_steps"] > 0 and rows["ray"]["episodes"] > 0
    assert any(k.startswith("ppo/") for k in same)  # the update's figures are compared too
    assert load_policy(tmp_path / "ray").name == "flow"


@pytest.mark.parametrize(
    ("command", "ray_arg", "hide", "expected"),
    [
        ("eval", "auto", "ray", "no module 'ray': this needs the ray extra"),
        ("finetune", "auto", "ray", "no module 'ray': this needs the ray extra"),
        ("eval", "127.0.0.1:1", "", "--ray 127.0.0.1:1: no Ray cluster answers"),
    ],
)
def test_ray_problems_are_one_line(tmp_path, command, ray_arg, hide, expected):
    pre = ["reinflow"] if command == "finetune" else []
    post = ["--out", str(tmp_path / "out")] if command == "finetune" else []
    env = {"PYTHONPATH": str(ROOT / "tests" / "core_install"), "ROBOLEARN_HIDE_MODULES": hide}
    res = _cli(command, *pre, "--checkpoint", str(tmp_path / "ck"), "--env", "franka-reach", *post, "--ray", ray_arg,
               env=env)  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.stderr.strip().splitlines()[-1].startswith(f"robolearn {command}: error: {expected}")
