"""The process backend's pool: several envs per worker process give exactly the data of gymnasium's
vector envs, an env's error names the env, a dead worker raises instead of hanging, and closing (or
Ctrl-C) leaves no worker process behind (checked by PID)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from same_outputs import assert_same
from toy_tasks import NAME, ToyConfig

from robolearn.envs import env_config, make_env
from robolearn.rl.env_pool import EnvWorkerError, PooledVectorEnv, ProcessEnvPool
from robolearn.rl.vector import env_factory, make_rollout_envs

SAME, NEXT = gym.vector.AutoresetMode.SAME_STEP, gym.vector.AutoresetMode.NEXT_STEP
HERE = Path(__file__).resolve().parent


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _gone(pids: list[int], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return not any(_alive(p) for p in pids)


def _trace(envs, seeds: list[int], actions: np.ndarray, close: bool = True) -> list:
    """``reset(seeds)`` then one ``step`` per row of ``actions``: every output, in order."""
    try:
        out = [envs.reset(seed=seeds)]
        out += [envs.step(a) for a in actions]
        return out
    finally:
        if close:
            envs.close()


def _ended(trace: list) -> int:
    return sum(int((step[2] | step[3]).sum()) for step in trace[1:])


def test_four_envs_on_two_workers_match_async_and_sync_vector_envs():
    # Chunked toy copies (To=2, 2 actions a call) with same-step autoreset, as fine-tuning uses them;
    # the 3-step cap ends episodes inside chunks, so final_obs / final_info are compared as well.
    factory = env_factory(NAME, ToyConfig(max_episode_steps=3), obs_steps=2, action_steps=2)
    actions = np.random.default_rng(0).uniform(-1, 1, (10, 4, 2, 1)).astype(np.float32)
    seeds = [7, 8, 9, 10]
    pooled = PooledVectorEnv(ProcessEnvPool(factory, 4, num_workers=2), 4, autoreset_mode=SAME)
    pids = pooled.pids()
    assert len(set(pids)) == 2 and os.getpid() not in pids
    ours = _trace(pooled, seeds, actions)
    assert _gone(pids), "worker processes left after close()"
    fns = [factory] * 4
    async_ = _trace(gym.vector.AsyncVectorEnv(fns, shared_memory=False, context="spawn", autoreset_mode=SAME),
                    seeds, actions)  # fmt: skip
    sync = _trace(gym.vector.SyncVectorEnv(fns, autoreset_mode=SAME), seeds, actions)
    assert_same(ours, async_)
    assert_same(ours, sync)
    assert _ended(ours) >= 8 and any("final_obs" in step[4] for step in ours[1:])
    assert (
        ours[1][0]["observation.state"].shape == (4, 2, 2)
        and list(ours[1][0]["task"]) == ["reach the goal"] * 4
    )


def test_next_step_autoreset_reset_mask_and_uneven_blocks_match_gymnasium():
    factory = env_factory(NAME, ToyConfig(max_episode_steps=2))
    local = gym.vector.SyncVectorEnv([factory] * 3, autoreset_mode=NEXT)
    pooled = PooledVectorEnv(
        ProcessEnvPool(factory, 3, num_workers=2), 3, autoreset_mode=NEXT
    )  # blocks 2 + 1
    try:
        assert_same(local.reset(seed=5), pooled.reset(seed=5))
        rng = np.random.default_rng(1)
        for step in range(7):
            actions = rng.uniform(-1, 1, (3, 1)).astype(np.float32)
            assert_same(local.step(actions), pooled.step(actions))
            if step == 3:
                mask = {"reset_mask": np.array([False, True, True])}
                assert_same(local.reset(seed=[1, 2, 3], options=dict(mask)),
                            pooled.reset(seed=[1, 2, 3], options=dict(mask)))  # fmt: skip
    finally:
        local.close()
        pooled.close()


def test_chunked_franka_lift_matches_async_vector_env():
    # As the lead's fine-tuning runs it: To=2, 4-action chunks; a 15-step cap ends each episode.
    cfg = env_config("franka-lift", max_episode_steps=15)
    factory = env_factory("franka-lift", cfg, obs_steps=2, action_steps=4)
    actions = np.random.default_rng(2).uniform(-1, 1, (6, 4, 4, 7)).astype(np.float32)
    seeds = [11, 12, 13, 14]
    pooled = PooledVectorEnv(ProcessEnvPool(factory, 4, num_workers=2), 4, autoreset_mode=SAME)
    ours = _trace(pooled, seeds, actions)
    async_ = _trace(gym.vector.AsyncVectorEnv([factory] * 4, shared_memory=False, context="spawn",
                                              autoreset_mode=SAME), seeds, actions)  # fmt: skip
    assert_same(ours, async_)
    assert _ended(ours) >= 4 and ours[1][0]["observation.state"].shape == (4, 2, 22)


def test_process_backend_puts_one_worker_per_core():
    envs = make_rollout_envs(NAME, ToyConfig(), 5, backend="process", action_steps=2)
    try:
        assert isinstance(envs, PooledVectorEnv) and envs.num_envs == 5
        pids = envs.pids()
        assert len(set(pids)) == min(5, os.cpu_count() or 1)
        obs, _ = envs.reset(seed=[0, 1, 2, 3, 4])
        assert obs["observation.state"].shape == (5, 1, 2)  # chunked: a window of To = 1 frame
    finally:
        envs.close()
    assert _gone(pids)


class _Faulty(gym.Wrapper):
    """The toy env, raising on action 0.25 and killing its worker process on action -0.25."""

    def step(self, action):
        if float(action[0]) == 0.25:
            raise ValueError("the sim diverged")
        if float(action[0]) == -0.25:
            os._exit(3)
        return self.env.step(action)


def faulty_env() -> gym.Env:
    """Picklable builder (spawned workers import this module by name, as they do toy_tasks)."""
    return _Faulty(make_env(NAME, ToyConfig()))


def broken_env() -> gym.Env:
    """A builder that fails, as a missing asset or renderer would."""
    raise OSError("no EGL display")


def test_an_env_error_names_the_env_and_a_dead_worker_raises_instead_of_hanging():
    pool = ProcessEnvPool(faulty_env, 4, num_workers=2)
    envs = PooledVectorEnv(pool, 4, autoreset_mode=SAME)
    pids = envs.pids()
    try:
        envs.reset(seed=0)
        actions = np.zeros((4, 1), np.float32)
        actions[3] = 0.25
        with pytest.raises(
            EnvWorkerError, match=r"env 3 raised in 'step-same': ValueError: the sim diverged"
        ) as err:
            envs.step(actions)
        assert err.value.index == 3 and "worker traceback" in "".join(err.value.__notes__)
        obs, *_ = envs.step(np.zeros((4, 1), np.float32))  # the other envs and workers carry on
        assert obs["observation.state"].shape == (4, 2)
        actions[:] = 0.0
        actions[1] = -0.25
        with pytest.raises(
            RuntimeError, match=r"env worker 0 \(envs 0-1, pid \d+\) exited with code 3 during 'step-same'"
        ):
            envs.step(actions)
        with pytest.raises(RuntimeError, match="unusable"):
            envs.step(np.zeros((4, 1), np.float32))
    finally:
        envs.close()
    assert _gone(pids)


def _children() -> set[int]:
    """This process's live child processes (from /proc), but multiprocessing's resource tracker: it
    starts with the first spawned process and lives on by design."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            tracker = b"resource_tracker" in (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and not tracker and _alive(int(entry.name)):
            out.add(int(entry.name))
    return out


def test_an_env_that_fails_to_build_is_reported_and_nothing_is_left():
    before = _children()
    with pytest.raises(
        EnvWorkerError, match=r"env worker 0 failed to build envs 0-1: OSError: no EGL display"
    ):
        ProcessEnvPool(broken_env, 3, num_workers=2)
    assert _children() <= before


def test_ctrl_c_interrupts_the_caller_and_close_ends_the_workers():
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        import numpy as np
        from toy_tasks import NAME, ToyConfig
        from robolearn.rl.vector import make_rollout_envs

        envs = make_rollout_envs(NAME, ToyConfig(), 4, backend="process")
        print(*envs.pids(), flush=True)
        try:
            envs.reset(seed=0)
            while True:
                envs.step(np.zeros((4, 1), np.float32))
        finally:
            envs.close()
            print("closed", flush=True)
    """)
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}
    # Its own session: the signal goes to the whole process group, as a terminal's Ctrl-C does.
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)  # fmt: skip
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == min(4, os.cpu_count() or 1), proc.stderr.read()
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "closed" in out and err.strip().splitlines()[-1] == "KeyboardInterrupt", err[-2000:]
    assert err.count("Traceback") == 1, err[-2000:]  # the caller's; the workers ignored the signal
    assert _gone(pids), "worker processes left after Ctrl-C"
