"""robolearn: teach Franka-class robot arms manipulation skills."""

__version__ = "0.1.0"

import os as _os

# Offscreen rendering through EGL unless the user chose a backend; must precede any mujoco import.
_os.environ.setdefault("MUJOCO_GL", "egl")
# Mesa's software rasterizer (llvmpipe) spends more time syncing its worker threads than drawing a
# 96x96 policy image: rendering in the calling thread made frames 1.3-1.7x faster here. GPU drivers
# ignore it; set LP_NUM_THREADS yourself for large software-rendered frames.
_os.environ.setdefault("LP_NUM_THREADS", "0")
