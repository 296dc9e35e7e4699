"""The Franka arm description (``hardware/franka/<name>.yaml``): kinematics, limits and rates.

Shared by the embedded simulation and the robot-side driver, so both enforce the same limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

HARDWARE_DIR = Path(__file__).resolve().parents[3] / "hardware"


@dataclass(frozen=True)
class ArmDescription:
    name: str
    dh: np.ndarray
    """(7, 3) modified-DH rows [a, d, alpha]; theta = q_i."""
    flange_d: float
    hand_yaw: float
    tcp_d: float
    q_min: np.ndarray
    q_max: np.ndarray
    dq_max: np.ndarray
    ddq_max: np.ndarray
    tau_max: np.ndarray
    q_home: np.ndarray
    cartesian_v_max: float
    cartesian_omega_max: float
    gripper_max_width: float
    gripper_max_speed: float
    gripper_max_force: float
    robot_hz: float


@lru_cache(maxsize=8)
def load_arm(name: str = "fr3") -> ArmDescription:
    """Read ``hardware/franka/<name>.yaml``; errors name the file and the missing field."""
    path = HARDWARE_DIR / "franka" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"arm description {path} not found (robolearn must run from a source checkout)"
        )
    raw = yaml.safe_load(path.read_text())
    try:
        j = raw["joints"]
        arm = ArmDescription(
            name=raw["name"],
            dh=np.asarray(raw["dh"], dtype=np.float64),
            flange_d=float(raw["flange_d"]),
            hand_yaw=float(raw["hand_yaw"]),
            tcp_d=float(raw["tcp_d"]),
            q_min=np.asarray(j["q_min"], dtype=np.float64),
            q_max=np.asarray(j["q_max"], dtype=np.float64),
            dq_max=np.asarray(j["dq_max"], dtype=np.float64),
            ddq_max=np.asarray(j["ddq_max"], dtype=np.float64),
            tau_max=np.asarray(j["tau_max"], dtype=np.float64),
            q_home=np.asarray(j["home"], dtype=np.float64),
            cartesian_v_max=float(raw["cartesian"]["v_max"]),
            cartesian_omega_max=float(raw["cartesian"]["omega_max"]),
            gripper_max_width=float(raw["gripper"]["max_width"]),
            gripper_max_speed=float(raw["gripper"]["max_speed"]),
            gripper_max_force=float(raw["gripper"]["max_force"]),
            robot_hz=float(raw["rates"]["robot_hz"]),
        )
    except KeyError as exc:
        raise ValueError(f"{path}: missing field {exc.args[0]!r}") from None
    for field_name in ("q_min", "q_max", "dq_max", "q_home"):
        if getattr(arm, field_name).shape != (7,):
            raise ValueError(f"{path}: {field_name} must have 7 entries")
    if arm.dh.shape != (7, 3):
        raise ValueError(f"{path}: dh must be 7 rows of [a, d, alpha], found shape {arm.dh.shape}")
    return arm
