"""Shared fixtures. Tests run single-threaded torch and offscreen EGL rendering."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:  # torch is optional for the env tests
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


import argparse  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def lift_dataset(tmp_path_factory):
    """Six scripted-expert franka-lift episodes (state only), shared by the trainer and eval tests."""
    from robolearn.commands import collect

    out = tmp_path_factory.mktemp("lift") / "ds"
    args = argparse.Namespace(env="franka-lift", episodes=6, out=out, cameras="", image_size="96x96", preset=None,
                              overrides=[], seed=0, workers=1, keep_failed=False, teleop=None, expert_noise=0.0, json=None)  # fmt: skip
    assert collect.run(args) == 0
    return out
