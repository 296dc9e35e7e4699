"""robolearn: teach Franka-class robot arms manipulation skills."""

__version__ = "0.1.0"

import os as _os

# Offscreen rendering through EGL unless the user chose a backend; must precede any mujoco import.
_os.environ.setdefault("MUJOCO_GL", "egl")
