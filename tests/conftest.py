"""Shared fixtures. Tests run single-threaded torch and offscreen EGL rendering."""

from __future__ import annotations

import os
import signal

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")

# A shell starts background jobs (`.ci/run &`, nohup) with SIGINT ignored, and children inherit an
# ignored signal across exec. The Ctrl-C tests send SIGINT to commands as a terminal would to a
# foreground job, so give this process a handler: exec resets handled signals to their default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

try:  # torch is optional for the env tests
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def lift_dataset(tmp_path_factory):
    """Six scripted-expert franka-lift episodes (state only), shared by the trainer and eval tests."""
    from robolearn.commands import collect

    out = tmp_path_factory.mktemp("lift") / "ds"
    assert collect.run(collect.default_args(env="franka-lift", episodes=6, out=out)) == 0
    return out
