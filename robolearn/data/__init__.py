"""Datasets: the native LeRobot v3.0 format (writer, reader, validation), video I/O, converters.

Names are imported lazily so that ``import robolearn.data`` stays cheap (no pyarrow or PyAV).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LeRobotWriter": "robolearn.data.writer",
    "LeRobotReader": "robolearn.data.reader",
    "LeRobotDatasetReader": "robolearn.data.reader",
    "VideoDecoder": "robolearn.data.video",
    "validate": "robolearn.data.validate",
    "check": "robolearn.data.validate",
    "repair": "robolearn.data.repair",
    "DatasetError": "robolearn.data.errors",
    "Problem": "robolearn.data.errors",
    "record_episodes": "robolearn.data.record",
    "RecordSummary": "robolearn.data.record",
    "env_features": "robolearn.envs.recording",
    "rollout": "robolearn.envs.recording",
    "Episode": "robolearn.envs.recording",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'robolearn.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
