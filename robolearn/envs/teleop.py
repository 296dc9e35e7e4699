"""Keyboard teleoperation: keys -> ``ee_delta`` actions, from a terminal or driven programmatically.

Keys (one key = one control step of motion):

====== ============================  ====== ==========================
key    motion                         key    command
====== ============================  ====== ==========================
w / s  +x / -x (away / toward base)   space  toggle gripper open/close
a / d  +y / -y                        ``\\n`` end episode and save it
r / f  up / down                      x      discard the episode
q / e  yaw left / right               ``.``  wait one step (no motion)
====== ============================  ====== ==========================

Any other key is ignored. ``Esc`` (or end of input) stops the session.
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np

_MOTION = {
    "w": (0, 1.0), "s": (0, -1.0),
    "a": (1, 1.0), "d": (1, -1.0),
    "r": (2, 1.0), "f": (2, -1.0),
    "q": (5, 1.0), "e": (5, -1.0),
}  # fmt: skip


@dataclass
class TeleopEvent:
    """What one key means: an action to step with, or a command (``save``, ``discard``, ``quit``)."""

    action: np.ndarray | None = None
    command: str | None = None


class KeyboardTeleop:
    """Stateful key -> action mapper; the gripper state persists between keys."""

    def __init__(self, speed: float = 0.5):
        self.speed = speed
        self.gripper = -1.0

    def reset(self) -> None:
        self.gripper = -1.0

    def event(self, key: str) -> TeleopEvent | None:
        """The event for one key, or None for keys that mean nothing."""
        if key in ("\n", "\r"):
            return TeleopEvent(command="save")
        if key == "x":
            return TeleopEvent(command="discard")
        if key == "\x1b":
            return TeleopEvent(command="quit")
        action = np.zeros(7, dtype=np.float32)
        if key == " ":
            self.gripper = -self.gripper
        elif key in _MOTION:
            axis, sign = _MOTION[key]
            action[axis] = sign * self.speed
        elif key != ".":
            return None
        action[6] = self.gripper
        return TeleopEvent(action=action)

    def events(self, keys: Iterator[str]) -> Iterator[TeleopEvent]:
        for key in keys:
            ev = self.event(key)
            if ev is not None:
                yield ev


def stream_keys(stream: IO[str], tick: float | None = None) -> Iterator[str]:
    """Keys from ``stream``. On a terminal, read unbuffered and emit ``.`` every ``tick`` seconds
    without a key (real-time control); from a pipe or file, every character is one step."""
    if not stream.isatty():
        while True:
            ch = stream.read(1)
            if not ch:
                return
            yield ch
        return
    import termios
    import tty

    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        while True:
            ready, _, _ = select.select([fd], [], [], tick)
            if not ready:
                yield "."
                continue
            ch = os.read(fd, 1).decode(errors="ignore")
            if not ch:
                return
            yield ch
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def print_help(out: IO[str] = sys.stderr) -> None:
    print(__doc__.split("\n\n", 1)[1], file=out)
