"""The topic names a robot cell serves (the sim twin and the real-arm driver serve the same ones)."""

from __future__ import annotations

__all__ = ["ARM_JOINTS", "COMMAND_MODES", "FINGER_JOINTS", "image_topic", "topic_names"]

ARM_JOINTS = tuple(f"fr3_joint{i}" for i in range(1, 8))
"""``joint_states`` names of the seven arm joints."""
FINGER_JOINTS = ("fr3_finger_joint1", "fr3_finger_joint2")
"""``joint_states`` names of the two fingers (each at half the opening, m)."""
COMMAND_MODES = ("ee_delta", "joint_position")
"""``command/<mode>`` topics the robot side takes commands on."""


def topic_names(namespace: str = "/robolearn") -> dict[str, str]:
    """Short name -> full topic name under ``namespace``: ``joint_states``, ``tcp_pose``,
    ``joint_target``, ``environment_state``, ``status``, ``estop``, ``command/ee_delta``,
    ``command/joint_position``."""
    ns = namespace.rstrip("/")
    names = ("joint_states", "tcp_pose", "joint_target", "environment_state", "status", "estop")
    out = {n: f"{ns}/{n}" for n in names}
    out.update({f"command/{m}": f"{ns}/command/{m}" for m in COMMAND_MODES})
    return out


def image_topic(namespace: str, camera: str) -> str:
    """The topic of camera ``camera``'s images."""
    return f"{namespace.rstrip('/')}/cameras/{camera}/image_raw"
