"""Fakes for the RL tests: the tiny ``toy-reach1d`` task and tiny untrained policies (toy_tasks.py)."""

from __future__ import annotations

import sys
from pathlib import Path

# toy_tasks must be importable by name: spawned env workers unpickle its config class by module path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import toy_tasks  # noqa: E402, F401  (registers toy-reach1d)
