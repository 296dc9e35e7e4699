"""Robot-cell configs (``deploy/cells/<cell>.yaml``): the bridge a cell speaks and its safety limits.

::

    name: franka-sim
    hardware: fr3                 # hardware/franka/fr3.yaml: the arm's own limits
    bridge: {backend: zmq, host: 127.0.0.1, port: 7447, namespace: /robolearn, joint_state_hz: 100}
    safety: {max_joint_step: 0.2, workspace_low: [...], workspace_high: [...], ...}

Loading is strict (an unknown key is an error naming the file) and the safety section is checked
against the hardware's limits (:class:`robolearn.deploy.safety.SafetyLimits`). Used by the sim twin
(``robolearn sim-robot``), the bridged robot (``robolearn run --robot ros1|zenoh|zmq``) and the
robot-PC driver. numpy-light, torch-free, mujoco-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from robolearn.config import ConfigError, load_config
from robolearn.deploy.safety import SafetyLimits

__all__ = ["BACKENDS", "DEFAULT_CELL", "BridgeSettings", "CellConfig", "load_cell"]

DEFAULT_CELL = Path(__file__).resolve().parents[2] / "deploy" / "cells" / "franka-sim.yaml"
"""The cell config shipped for the embedded Franka behind a bridge."""

BACKENDS = ("inproc", "zmq", "zenoh", "ros1")


@dataclass
class BridgeSettings:
    """Where a cell's topics live."""

    backend: str = "zmq"
    """``zmq`` | ``zenoh`` | ``ros1`` | ``inproc``."""
    host: str = "127.0.0.1"
    """Address the robot side binds (zmq, zenoh) or the rosmaster's host (ros1)."""
    port: int = 7447
    """zmq: the robot side's PUB port (its request/reply port is ``port + 1``, the command SUB port
    ``port + 2``); zenoh: the listen port; ros1: the rosmaster port."""
    namespace: str = "/robolearn"
    """Prefix of every topic name."""
    joint_state_hz: float = 100.0
    """Rate the robot side publishes joint states at."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"bridge.backend: expected one of {BACKENDS}, found {self.backend!r}")
        if not 0 < self.port < 65534:
            raise ConfigError(f"bridge.port: expected 1..65533, found {self.port}")
        if self.joint_state_hz <= 0:
            raise ConfigError(f"bridge.joint_state_hz: expected > 0, found {self.joint_state_hz}")


@dataclass
class CellConfig:
    """One robot cell: its arm, its bridge, its safety limits."""

    name: str = "franka-sim"
    """A label for the cell."""
    hardware: str = "fr3"
    """Arm description in ``hardware/franka/<name>.yaml``."""
    bridge: BridgeSettings = field(default_factory=BridgeSettings)
    safety: SafetyLimits = field(default_factory=SafetyLimits)


def load_cell(path: str | Path | None = None) -> CellConfig:
    """Read and check a cell config (default: ``deploy/cells/franka-sim.yaml``, or the built-in
    defaults when the file is not shipped)."""
    if path is None:
        if not DEFAULT_CELL.is_file():
            return CellConfig()
        path = DEFAULT_CELL
    cell = load_config(CellConfig, path)
    if cell.safety.hardware != cell.hardware:
        raise ConfigError(
            f"{path}: safety.hardware {cell.safety.hardware!r} differs from hardware {cell.hardware!r}"
        )
    cell.safety._source = str(path)
    cell.safety.resolve()
    return cell
