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
