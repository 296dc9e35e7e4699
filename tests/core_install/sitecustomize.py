"""Makes this interpreter look like a core install: the optional extras cannot be imported.

Put this folder first on ``PYTHONPATH``; ``site`` imports it at start-up. The top-level modules
named in ``ROBOLEARN_HIDE_MODULES`` (comma-separated) then raise ``ModuleNotFoundError`` exactly as
they would where ``pip install robolearn`` left them out, and ``importlib.util.find_spec`` says
they are absent.
"""

import os
import sys

_HIDDEN = {m for m in os.environ.get("ROBOLEARN_HIDE_MODULES", "").split(",") if m}


class _Hiding:
    """Wraps one import finder: hidden top-level names are not found, the rest goes to the finder."""

    def __init__(self, inner):
        self._inner = inner

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in _HIDDEN:
            return None
        find = getattr(self._inner, "find_spec", None)
        return find(fullname, path, target) if find is not None else None

    def __getattr__(self, name):
        return getattr(self._inner, name)


if _HIDDEN:
    sys.meta_path[:] = [_Hiding(f) for f in sys.meta_path]
