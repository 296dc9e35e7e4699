"""Build the MJCF of a Franka-class arm and its task scene from the hardware description.

The arm is primitive geoms (capsules and boxes) on the exact modified-DH kinematic chain: physics
speed matters more than meshes. Only the hand, the fingers, the objects and the table collide, and
the arm bodies are gravity-compensated, so position servos track without sag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robolearn.envs.franka.description import ArmDescription

# Position-servo gains per joint (N·m/rad, N·m·s/rad) and rough link masses (kg).
_KP = (4500, 4500, 3500, 3500, 2000, 2000, 2000)
_KV = (450, 450, 350, 350, 200, 200, 200)
_MASS = (2.9, 2.8, 2.3, 2.3, 2.5, 1.5, 0.5)
_RADIUS = (0.06, 0.06, 0.055, 0.055, 0.05, 0.045, 0.04)

FINGER_RANGE = 0.04
"""Travel of each finger (m); the gripper width is the sum of both."""
CUBE_HALF = 0.02
"""Half edge of the task cubes (m)."""


@dataclass(frozen=True)
class SceneSpec:
    """What a task puts on the table."""

    cubes: tuple[str, ...] = ()
    """Names of free-floating cubes (``cube_a``, ``cube_b``, then ``distractor_<k>``)."""
    target_site: bool = False
    """A floating sphere marker (reach target)."""
    goal_pad: bool = False
    """A flat disc on the table (push / place goal)."""


def _fmt(v) -> str:
    return " ".join(f"{x:.6g}" for x in np.ravel(v))


def _rotx_quat(alpha: float) -> np.ndarray:
    return np.array([np.cos(alpha / 2), np.sin(alpha / 2), 0.0, 0.0])


def _dh_offset(a: float, d: float, alpha: float) -> np.ndarray:
    """Origin of joint frame i in frame i-1 for a modified-DH row: RotX(alpha)·TransX(a)·TransZ(d)."""
    return np.array([a, -np.sin(alpha) * d, np.cos(alpha) * d])


def _segment_geom(name: str, end: np.ndarray, radius: float) -> str:
    """A non-colliding capsule from the body origin to ``end`` (a sphere when they coincide)."""
    common = f'name="{name}" contype="0" conaffinity="0" group="1" rgba="0.92 0.92 0.92 1"'
    if np.linalg.norm(end) < 1e-6:
        return f'<geom {common} type="sphere" size="{radius:.4g}"/>'
    return f'<geom {common} type="capsule" size="{radius:.4g}" fromto="0 0 0 {_fmt(end)}"/>'


def arm_xml(arm: ArmDescription) -> tuple[str, str]:
    """Return (worldbody XML of the arm, actuator XML)."""
    offsets = [_dh_offset(*row) for row in arm.dh]
    opened, closed = [], []
    opened.append(f'<body name="link0" pos="0 0 0">{_segment_geom("link0_geom", offsets[0], 0.07)}')
    closed.append("</body>")
    for i in range(7):
        a, d, alpha = arm.dh[i]
        end = offsets[i + 1] if i < 6 else np.array([0.0, 0.0, arm.flange_d])
        mass = _MASS[i]
        inertia = 0.4 * mass * _RADIUS[i] ** 2 + mass * float(np.dot(end, end)) / 12.0
        opened.append(
            f'<body name="link{i + 1}" pos="{_fmt(offsets[i])}" quat="{_fmt(_rotx_quat(alpha))}" gravcomp="1">'
            f'<inertial pos="{_fmt(end / 2)}" mass="{mass}" diaginertia="{inertia:.4g} {inertia:.4g} {inertia:.4g}"/>'
            f'<joint name="joint{i + 1}" axis="0 0 1" range="{arm.q_min[i]:.5f} {arm.q_max[i]:.5f}" '
            f'armature="0.1" damping="1"/>'
            f"{_segment_geom(f'link{i + 1}_geom', end, _RADIUS[i])}"
        )
        closed.append("</body>")
    hq = np.array([np.cos(arm.hand_yaw / 2), 0.0, 0.0, np.sin(arm.hand_yaw / 2)])
    finger_z = arm.tcp_d - 0.045  # finger pads are centred on the TCP
    pad = 'type="box" size="0.011 0.007 0.02" friction="1.5 0.01 0.0002" condim="4" rgba="0.2 0.2 0.2 1"'
    opened.append(
        f'<body name="hand" pos="0 0 {arm.flange_d}" quat="{_fmt(hq)}" gravcomp="1">'
        '<inertial pos="0 0 0.04" mass="0.73" diaginertia="0.003 0.003 0.001"/>'
        '<geom name="hand_geom" type="box" size="0.02 0.09 0.025" pos="0 0 0.03" rgba="0.95 0.95 0.95 1"/>'
        f'<site name="tcp" pos="0 0 {arm.tcp_d}" size="0.006" rgba="1 0 0 0.5" group="3"/>'
        '<camera name="wrist" pos="0.075 0 0.03" xyaxes="0 -1 0 -0.97 0 0.24" fovy="75"/>'
        f'<body name="finger_left" pos="0 0 {finger_z:.4f}" gravcomp="1">'
        '<inertial pos="0 0.007 0.045" mass="0.05" diaginertia="1e-5 1e-5 1e-5"/>'
        f'<joint name="finger_left" type="slide" axis="0 1 0" range="0 {FINGER_RANGE}" armature="0.05" damping="2"/>'
        f'<geom name="pad_left" pos="0 0.007 0.045" {pad}/></body>'
        f'<body name="finger_right" pos="0 0 {finger_z:.4f}" gravcomp="1">'
        '<inertial pos="0 -0.007 0.045" mass="0.05" diaginertia="1e-5 1e-5 1e-5"/>'
        f'<joint name="finger_right" type="slide" axis="0 -1 0" range="0 {FINGER_RANGE}" armature="0.05" damping="2"/>'
        f'<geom name="pad_right" pos="0 -0.007 0.045" {pad}/></body>'
    )
    closed.append("</body>")
    body = "".join(opened) + "".join(reversed(closed))
    actuators = [
        f'<position name="act{i + 1}" joint="joint{i + 1}" kp="{_KP[i]}" kv="{_KV[i]}" '
        f'ctrlrange="{arm.q_min[i]:.5f} {arm.q_max[i]:.5f}" forcerange="{-arm.tau_max[i]} {arm.tau_max[i]}"/>'
        for i in range(7)
    ]
    half_force = arm.gripper_max_force / 2
    for side in ("left", "right"):
        actuators.append(
            f'<position name="act_finger_{side}" joint="finger_{side}" kp="800" kv="20" '
            f'ctrlrange="0 {FINGER_RANGE}" forcerange="{-half_force} {half_force}"/>'
        )
    return body, "".join(actuators)


def _look_at_xyaxes(pos: np.ndarray, target: np.ndarray) -> str:
    """MJCF ``xyaxes`` for a camera at ``pos`` looking at ``target`` with world z up."""
    back = pos - target
    back /= np.linalg.norm(back)
    x = np.cross([0.0, 0.0, 1.0], back)
    x /= np.linalg.norm(x)
    y = np.cross(back, x)
    return _fmt(np.concatenate([x, y]))


def scene_xml(arm: ArmDescription, spec: SceneSpec, physics_dt: float, image_size: tuple[int, int]) -> str:
    """The whole MJCF document for one task."""
    body, actuators = arm_xml(arm)
    objects = []
    for name in spec.cubes:
        objects.append(
            f'<body name="{name}" pos="0.5 0 {CUBE_HALF}"><freejoint name="{name}_joint"/>'
            f'<geom name="{name}_geom" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" mass="0.05" '
            'friction="1.5 0.01 0.0002" condim="4" rgba="1 0 0 1"/></body>'
        )
    if spec.target_site:
        objects.append('<site name="target" pos="0.5 0 0.2" size="0.02" rgba="0 1 0 0.6" group="2"/>')
    if spec.goal_pad:
        objects.append(
            '<site name="goal" type="cylinder" pos="0.5 0 0.0005" size="0.05 0.0005" rgba="0 1 0 0.5" group="2"/>'
        )
    front_pos = np.array([1.0, 0.0, 0.42])
    front = _look_at_xyaxes(front_pos, np.array([0.45, 0.0, 0.08]))
    h, w = image_size
    return f"""<mujoco model="franka_{arm.name}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{physics_dt}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <quality shadowsize="0" offsamples="0" numslices="12" numstacks="8" numquads="1"/>
    <global offwidth="{max(w, 640)}" offheight="{max(h, 480)}"/>
  </visual>
  <statistic center="0.45 0 0.2" extent="0.9"/>
  <worldbody>
    <light name="top" pos="0.5 0 1.5" dir="0 0 -1" directional="true" castshadow="false" diffuse="0.8 0.8 0.8"/>
    <geom name="table" type="plane" size="1.2 1.2 0.02" rgba="0.55 0.45 0.35 1" friction="1 0.005 0.0001"/>
    <camera name="front" pos="{_fmt(front_pos)}" xyaxes="{front}" fovy="45"/>
    {body}
    {"".join(objects)}
  </worldbody>
  <actuator>{actuators}</actuator>
</mujoco>"""
