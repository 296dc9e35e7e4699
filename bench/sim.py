"""``robolearn bench sim``: env steps/s of the embedded Franka tasks against the physics limit and peers.

Reports, per task: control steps/s with state observations, with one and with two 96x96 cameras,
and the raw ``mj_step`` rate of the task's own model (so the env overhead is visible as a ratio of
``raw / substeps``). When robosuite is installed, its Lift is measured in the same run under the
same 20 Hz control, and the ratios are printed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from robolearn.envs import env_config, make_env  # noqa: E402

MISSING_PEER_HINT = "the robosuite extra: ./bootstrap dev, or pip install 'robolearn[robosuite]' then --no-deps robosuite==1.5.2 mink==0.0.5"


def _rate(env, seconds: float, seed: int = 0) -> float:
    """Env steps/s under random actions, resetting at episode end (reset time included)."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    low, high = env.action_space.low, env.action_space.high
    actions = rng.uniform(low, high, size=(512, *env.action_space.shape)).astype(np.float32)
    steps, start = 0, time.perf_counter()
    while True:
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            steps += 1
            if terminated or truncated:
                env.reset()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return steps / elapsed


def raw_physics_rate(env, seconds: float) -> float:
    """``mj_step`` calls/s of the env's own model and state, in C (``nstep`` batches)."""
    env.reset(seed=0)
    model, data = env.model, env.data
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        mujoco.mj_step(model, data, nstep=500)
        steps += 500
    return steps / (time.perf_counter() - start)


def measure_task(task: str, seconds: float = 2.0) -> dict:
    out: dict = {"task": task}
    env = make_env(task)
    out["substeps"] = env.n_substeps
    out["raw_mj_step_per_s"] = raw_physics_rate(env, seconds)
    out["physics_limit_steps_per_s"] = out["raw_mj_step_per_s"] / env.n_substeps
    out["state_steps_per_s"] = _rate(env, seconds)
    out["fraction_of_physics_limit"] = out["state_steps_per_s"] / out["physics_limit_steps_per_s"]
    env.close()
    for label, cams in (("one_camera", ("front",)), ("two_cameras", ("front", "wrist"))):
        env = make_env(task, env_config(task, cameras=cams, image_size=(96, 96)))
        out[f"{label}_steps_per_s"] = _rate(env, seconds)
        env.close()
    return out


def run(json_out: str | None = None, tasks: tuple[str, ...] = ("franka-lift",), seconds: float = 2.0) -> dict:
    """Measure ``tasks`` (and robosuite Lift when installed); print a table; optionally write JSON."""
    report: dict = {"tasks": [measure_task(t, seconds) for t in tasks], "peers": {}}
    from robolearn.commands.bench import load_bench

    sim_peers = load_bench("sim_peers", required=False)
    if sim_peers is not None:
        for cam in (False, True):
            res = sim_peers.measure_robosuite_lift(seconds=seconds, camera=cam)
            if res is not None:
                report["peers"]["robosuite_lift" + ("_one_camera" if cam else "")] = res
    _print(report)
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2))
    return report


def _print(report: dict) -> None:
    print("robolearn bench sim  (20 Hz control, random actions, one process)")
    for r in report["tasks"]:
        print(
            f"  {r['task']:<18} state {r['state_steps_per_s']:8.0f} steps/s"
            f"  | 1 cam {r['one_camera_steps_per_s']:6.0f} | 2 cams {r['two_cameras_steps_per_s']:6.0f}"
            f"  | raw mj_step {r['raw_mj_step_per_s']:8.0f}/s ÷ {r['substeps']} = {r['physics_limit_steps_per_s']:6.0f}"
            f"  -> {100 * r['fraction_of_physics_limit']:.0f}% of the physics limit"
        )
    peers = report["peers"]
    measured = {k: v for k, v in peers.items() if v.get("steps_per_s") is not None}
    if not measured:
        print(f"  peer robosuite: not installed, no ratio ({MISSING_PEER_HINT})")
        return
    lift = next((r for r in report["tasks"] if r["task"] == "franka-lift"), report["tasks"][0])
    for key, ours in (
        ("robosuite_lift", "state_steps_per_s"),
        ("robosuite_lift_one_camera", "one_camera_steps_per_s"),
    ):
        if key in measured:
            theirs = measured[key]["steps_per_s"]
            print(
                f"  {key:<28} {theirs:8.1f} steps/s  -> robolearn {lift['task']} is {lift[ours] / theirs:.1f}x"
            )
