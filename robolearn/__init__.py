"""robolearn: teach Franka-class robot arms manipulation skills.

The Python API (the names below import lazily, so ``import robolearn`` stays light)::

    import robolearn

    robolearn.register_env("my-task", MyTaskConfig, build_my_task)   # your own gymnasium env
    env = robolearn.make_env("my-task")
    robolearn.record_episodes(env, my_scripted_policy, "datasets/my-task", episodes=100)
    cfg = robolearn.recipe("datasets/my-task", "flow", steps=2000)  # the measured default recipe
    summary = robolearn.train_policy(cfg, "datasets/my-task", "runs/my-task")
    policy = robolearn.load_policy("runs/my-task")
    result = robolearn.evaluate(policy, "my-task", episodes=50)
    print(result.success_rate, result.held_success_rate)

See ``examples/own_env.py`` for all of it on a small env written from scratch.
"""

__version__ = "0.1.0"

import os as _os

# Offscreen rendering through EGL unless the user chose a backend; must precede any mujoco import.
_os.environ.setdefault("MUJOCO_GL", "egl")
# Mesa's software rasterizer (llvmpipe) spends more time syncing its worker threads than drawing a
# 96x96 policy image: rendering in the calling thread made frames 1.3-1.7x faster here. GPU drivers
# ignore it; set LP_NUM_THREADS yourself for large software-rendered frames.
_os.environ.setdefault("LP_NUM_THREADS", "0")
# OpenMP threads that spin while waiting for work turn any other busy process on a small machine into
# a 5-60x slowdown of torch: measured here, diffusion training on 2 cores next to one other job ran at
# 1 step/s with the default (active) wait and 19.8 steps/s with passive waiting. It must be set before
# torch loads its OpenMP runtime; a value the user exported stands.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_EXPORTS = {
    "register_env": "robolearn.envs",
    "make_env": "robolearn.envs",
    "env_config": "robolearn.envs",
    "record_episodes": "robolearn.data.record",
    "RecordSummary": "robolearn.data.record",
    "TrainConfig": "robolearn.train.config",
    "train_policy": "robolearn.train.trainer",
    "recipe": "robolearn.train.recipes",
    "load_policy": "robolearn.policies",
    "evaluate": "robolearn.eval.evaluate",
    "EvalResult": "robolearn.eval.evaluate",
}
__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'robolearn' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
