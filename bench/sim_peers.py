"""Throughput of the peer simulators (robosuite, Meta-World), for ``robolearn bench sim`` to compare against.

Each ``measure_*`` steps one environment with uniform random actions for ``seconds`` of wall time
(after a short untimed warm-up that also pays numba's first-call compilation in robosuite),
resetting at the end of each episode, and returns a dict::

    {"name": str, "steps_per_s": float | None, "steps": int, "resets": int, "seconds": float,
     "control_hz": float, "obs": str, "version": str, "skipped": str | None}

``steps_per_s`` is ``None`` and ``skipped`` says why when the peer is not installed. Numbers are
one process on one core's worth of Python (MuJoCo is single-threaded here; no torch involved).
``adapter=True`` measures robolearn's adapter around the same peer instead of the peer itself.

Run ``python bench/sim_peers.py`` to print every variant.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

IMAGE_SIZE = 96
WARMUP_STEPS = 10


def _skipped(name: str, err: Exception) -> dict[str, Any]:
    return {
        "name": name,
        "steps_per_s": None,
        "steps": 0,
        "resets": 0,
        "seconds": 0.0,
        "control_hz": 0.0,
        "obs": "",
        "version": "",
        "skipped": f"not importable: {err}",
    }


def _run(
    step: Callable[[np.ndarray], bool], reset: Callable[[], None], action_dim: int, seconds: float
) -> tuple[int, int, float]:
    """Step with random actions for ``seconds``; ``step`` returns True at episode end."""
    rng = np.random.default_rng(0)
    reset()
    for _ in range(WARMUP_STEPS):
        if step(rng.uniform(-1, 1, action_dim)):
            reset()
    steps = resets = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        steps += 1
        if step(rng.uniform(-1, 1, action_dim)):
            reset()
            resets += 1
    return steps, resets, elapsed


def measure_robosuite_lift(
    seconds: float = 3.0,
    camera: bool = False,
    default_render: bool = False,
    adapter: bool = False,
    episode_steps: int = 200,
) -> dict[str, Any]:
    """robosuite 1.5 Lift (Panda, OSC_POSE delta, 20 Hz control, ``hard_reset=False``) env steps/s.

    ``camera``: also render ``agentview`` at 96×96 every step, with shadows and multisampling off
    unless ``default_render`` keeps robosuite's defaults (shadows on, 4× MSAA).
    """
    name = "robosuite Lift" + (" (robolearn adapter)" if adapter else "")
    try:
        import robosuite

        from robolearn.envs.adapters.robosuite_env import RobosuiteEnv, make_render_cheap, panda_osc_config
    except ImportError as err:
        return _skipped(name, err)

    if adapter:
        env = RobosuiteEnv(
            "Lift",
            cameras=("agentview",) if camera else (),
            image_size=(IMAGE_SIZE, IMAGE_SIZE),
            max_episode_steps=episode_steps,
            cheap_render=not default_render,
        )

        def step(a: np.ndarray) -> bool:
            _, _, terminated, truncated, _ = env.step(a)
            return terminated or truncated

        def reset() -> None:
            env.reset()

    else:
        env = robosuite.make(
            "Lift",
            robots="Panda",
            controller_configs=panda_osc_config(),
            has_renderer=False,
            has_offscreen_renderer=camera,
            use_camera_obs=camera,
            camera_names="agentview",
            camera_heights=IMAGE_SIZE,
            camera_widths=IMAGE_SIZE,
            control_freq=20,
            horizon=episode_steps,
            hard_reset=False,
        )
        if camera and not default_render:
            make_render_cheap(env)

        def step(a: np.ndarray) -> bool:
            return bool(env.step(a)[2])

        def reset() -> None:
            env.reset()

    try:
        steps, resets, elapsed = _run(step, reset, 7, seconds)
    finally:
        env.close()
    render = "robosuite default render" if default_render else "shadows/MSAA off"
    return {
        "name": name,
        "steps_per_s": steps / elapsed,
        "steps": steps,
        "resets": resets,
        "seconds": elapsed,
        "control_hz": 20.0,
        "obs": f"state + agentview {IMAGE_SIZE}x{IMAGE_SIZE} ({render})" if camera else "state",
        "version": robosuite.__version__,
        "skipped": None,
    }


def measure_metaworld(
    task: str = "pick-place-v3",
    seconds: float = 3.0,
    camera: bool = False,
    default_render: bool = False,
    adapter: bool = False,
) -> dict[str, Any]:
    """Meta-World v3 env steps/s (80 Hz control), made the documented way (``Meta-World/MT1``).

    ``camera``: also render the ``corner`` camera at 96×96 every step. The plain peer renders
    through gymnasium's MuJoCo renderer with the scene's own quality settings (shadows, 4× MSAA);
    the adapter turns both off unless ``default_render``.
    """
    name = f"Meta-World {task}" + (" (robolearn adapter)" if adapter else "")
    try:
        from importlib.metadata import version

        import gymnasium as gym
        import metaworld  # noqa: F401  (registers the Meta-World/* ids)

        from robolearn.envs.adapters.metaworld_env import MetaWorldEnv
    except ImportError as err:
        return _skipped(name, err)

    if adapter:
        env = MetaWorldEnv(
            task,
            cameras=("corner",) if camera else (),
            image_size=(IMAGE_SIZE, IMAGE_SIZE),
            terminate_on_success=False,
            cheap_render=not default_render,
        )
    else:
        kwargs: dict[str, Any] = {"env_name": task, "seed": 0, "disable_env_checker": True}
        if camera:
            kwargs |= {
                "render_mode": "rgb_array",
                "camera_name": "corner",
                "width": IMAGE_SIZE,
                "height": IMAGE_SIZE,
            }
        env = gym.make("Meta-World/MT1", **kwargs)

    def step(a: np.ndarray) -> bool:
        _, _, terminated, truncated, _ = env.step(a.astype(np.float32))
        if camera and not adapter:
            env.render()
        return terminated or truncated

    def reset() -> None:
        env.reset()

    try:
        steps, resets, elapsed = _run(step, reset, 4, seconds)
    finally:
        env.close()
    if camera:
        render = "shadows/MSAA off" if adapter and not default_render else "default render"
        obs = f"state + corner {IMAGE_SIZE}x{IMAGE_SIZE} ({render})"
    else:
        obs = "state"
    return {
        "name": name,
        "steps_per_s": steps / elapsed,
        "steps": steps,
        "resets": resets,
        "seconds": elapsed,
        "control_hz": 80.0,
        "obs": obs,
        "version": version("metaworld"),
        "skipped": None,
    }


def main(seconds: float = 3.0) -> None:
    """Print every variant, one line each."""
    runs = [
        measure_robosuite_lift(seconds),
        measure_robosuite_lift(seconds, camera=True),
        measure_robosuite_lift(seconds, camera=True, default_render=True),
        measure_robosuite_lift(seconds, adapter=True),
        measure_robosuite_lift(seconds, camera=True, adapter=True),
        measure_metaworld("pick-place-v3", seconds),
        measure_metaworld("pick-place-v3", seconds, camera=True),
        measure_metaworld("pick-place-v3", seconds, adapter=True),
        measure_metaworld("pick-place-v3", seconds, camera=True, adapter=True),
    ]
    for r in runs:
        if r["skipped"]:
            print(f"{r['name']:<40} skipped: {r['skipped']}")
        else:
            print(
                f"{r['name']:<40} {r['steps_per_s']:8.1f} steps/s  {r['obs']}  ({r['steps']} steps, {r['resets']} resets)"
            )


if __name__ == "__main__":
    main()
