"""Scripted experts for the embedded Franka tasks.

Each expert is a small closed-loop state machine over the observation (``observation.state`` and
``observation.environment_state``) that emits ``ee_delta`` actions; it re-plans from what it sees
every step, so a slipped grasp or a drifting cube is recovered rather than replayed.

With distractors (``extra: {distractors: N}``) an expert reads the target's colour from the
instruction in ``obs["task"]`` and picks that cube out of the colour-slot environment state
(:func:`task_view`); the state machines themselves are the same.

They also finish the task, for demos that run past the first success (``rollout(post_success_steps=)``):
reach stays on the target, lift holds the cube up, push stops, draws back and rises, pick-place and
stack let go and back off upward without disturbing the cube, and wait there.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from robolearn import types
from robolearn.envs.config import CUBE_COLOURS, SLOT_FIELDS, FrankaTaskConfig
from robolearn.envs.expert_geometry import cube_yaw, hand_yaw, mat_to_quat, nearest_yaw, quat_to_mat
from robolearn.envs.franka.controller import quat_to_rotvec
from robolearn.envs.franka.mjcf import CUBE_HALF

OPEN, CLOSE = -1.0, 1.0
GRASP_Z = 0.025
"""TCP height for grasping a cube resting on the table (pads just clear the table)."""


_NAMED_CUBE = re.compile(r"\b(\w+) cube\b")
_CUBES_NAMED = {"lift": 1, "push": 1, "pick-place": 1, "stack": 2}


def named_cubes(task: str, instruction: str) -> list[str]:
    """The cube colours ``instruction`` names, in its order ("put the red cube on the blue cube" ->
    red, blue); ``ValueError`` when they are not the one (two for stack) colours the task expects."""
    colours = _NAMED_CUBE.findall(instruction)
    if len(colours) != _CUBES_NAMED[task] or not all(c in CUBE_COLOURS for c in colours):
        raise ValueError(f"{task}: cannot tell the target cube from the instruction {instruction!r}")
    return colours


def task_view(task: str, env_state: np.ndarray, instruction: str) -> np.ndarray:
    """The task's own environment state (the layout without distractors, as in
    :data:`robolearn.envs.config.ENV_STATE_NAMES`) from the colour-slot layout of a scene with
    distractors: the pose (7) of each cube the instruction names, then the goal's position (3)
    for push and pick-place."""
    width = len(SLOT_FIELDS)
    parts = []
    for colour in named_cubes(task, instruction):
        slot = env_state[CUBE_COLOURS.index(colour) * width : (CUBE_COLOURS.index(colour) + 1) * width]
        if slot[0] != 1.0:
            raise ValueError(
                f"{task}: the instruction {instruction!r} names a {colour} cube, none is on the table"
            )
        parts.append(slot[1:])
    if task in ("push", "pick-place"):
        parts.append(env_state[-3:])
    return np.concatenate(parts)


class ScriptedExpert(ABC):
    """Base: phase bookkeeping and the pose servo shared by every task."""

    def __init__(
        self, config: FrankaTaskConfig, gain: float = 0.9, noise: float = 0.0, seed: int | None = None
    ):
        if config.control_mode != "ee_delta":
            raise ValueError("scripted experts emit ee_delta actions; set control_mode: ee_delta")
        self.cfg = config
        self.slotted = config.distractors > 0
        self.gain = gain
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        self.phase = 0
        self.timer = 0

    def _goto(self, phase: int) -> None:
        self.phase, self.timer = phase, 0

    def servo(
        self, state: np.ndarray, target: np.ndarray, yaw: float, grip: float, speed: float = 1.0
    ) -> np.ndarray:
        """Action that moves the TCP toward ``target`` (3,) pointing down with hand yaw ``yaw``."""
        tcp, rot = state[15:18], quat_to_mat(state[18:22])
        c, s = math.cos(yaw), math.sin(yaw)
        desired = np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])  # Rz(yaw) @ diag(1, -1, -1)
        rot_err = quat_to_rotvec(mat_to_quat(desired @ rot.T))
        act = np.empty(7)
        act[:3] = np.clip(self.gain * (target - tcp) / self.cfg.max_ee_step, -speed, speed)
        act[3:6] = np.clip(self.gain * rot_err / self.cfg.max_ee_rot_step, -1.0, 1.0)
        act[6] = grip
        if self.noise:
            act[:6] += self.rng.normal(0.0, self.noise, 6)
        return np.clip(act, -1.0, 1.0).astype(np.float32)

    def __call__(self, obs: dict) -> np.ndarray:
        self.timer += 1
        env = np.asarray(obs[types.OBS_ENV_STATE], np.float64)
        if self.slotted:
            env = task_view(self.cfg.task, env, str(obs[types.TASK]))
        return self.act(np.asarray(obs[types.OBS_STATE], np.float64), env)

    @abstractmethod
    def act(self, state: np.ndarray, env: np.ndarray) -> np.ndarray:
        """Action (7,) from the robot state (22,) and the task's environment state."""


def _near(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    return bool(np.linalg.norm(a - b) < tol)


class ReachExpert(ScriptedExpert):
    def act(self, state, env):
        return self.servo(state, env[:3], 0.0, OPEN)


class PickExpert(ScriptedExpert):
    """Grasp ``cube_a`` (env[:7]) then hand over to :meth:`after_grasp`. Phases 0-3 are the pick."""

    lift_z = 0.25

    def act(self, state, env):
        tcp, width = state[15:18], state[14]
        cube = env[:3]
        yaw = nearest_yaw(cube_yaw(env[3:7]), math.pi / 2, hand_yaw(state))
        hover = np.array([cube[0], cube[1], cube[2] + 0.08])
        grasp = np.array([cube[0], cube[1], max(cube[2] + 0.005, GRASP_Z)])
        if self.phase == 0:  # hover above the cube, open, aligned
            if _near(tcp[:2], cube[:2], 0.012) and abs(tcp[2] - hover[2]) < 0.03:
                self._goto(1)
            return self.servo(state, hover, yaw, OPEN)
        if self.phase == 1:  # descend
            if _near(tcp, grasp, 0.01):
                self._goto(2)
            if not _near(tcp[:2], cube[:2], 0.03):
                self._goto(0)
            return self.servo(state, grasp, yaw, OPEN, speed=0.6)
        if self.phase == 2:  # close
            if self.timer > 10:
                self._goto(3)
            return self.servo(state, grasp, yaw, CLOSE)
        held = _near(tcp, cube, 0.035) and width > 0.02
        if not held:
            self._goto(0)
            return self.servo(state, hover, yaw, OPEN)
        return self.after_grasp(state, env, tcp, yaw)

    def after_grasp(self, state, env, tcp, yaw):
        target = np.array([tcp[0], tcp[1], self.lift_z])
        return self.servo(state, target, yaw, CLOSE, speed=0.6)


class PlaceExpert(PickExpert):
    """Pick ``cube_a``, carry it above ``place_xy`` and set it down at ``place_z`` (TCP height), let go
    (phase 5) and back off upward (phase 6), then wait above it; pick it again if it is knocked off."""

    retreat_dz = 0.1
    """TCP height above the placed cube's centre where the expert waits once it has let go."""
    clear_dz = 0.05
    """TCP height above the cube's centre at which the pads (2 cm below the TCP) are clear of it."""

    def reset(self) -> None:
        super().reset()
        self.release_pose = (np.zeros(3), 0.0)
        """TCP position and hand yaw when the expert began to let go."""

    @abstractmethod
    def place_target(self, env) -> tuple[np.ndarray, float]:
        """Where to set the held cube down: (xy (2,), height of the cube's centre)."""

    def act(self, state, env):
        if self.phase >= 5:
            return self.release(state, env)
        return super().act(state, env)

    def _tcp_goal(self, tcp, env) -> tuple[np.ndarray, float]:
        """TCP xy and height that put the held cube (not the TCP) on the place target: the grasp
        may be off-centre or low on the cube."""
        xy, place_z = self.place_target(env)
        return xy + (tcp[:2] - env[:2]), place_z + (tcp[2] - env[2])

    def after_grasp(self, state, env, tcp, yaw):
        xy, place_z = self._tcp_goal(tcp, env)
        carry_z = place_z + 0.06
        if self.phase == 3:  # lift and carry
            target = np.array([xy[0], xy[1], carry_z])
            if tcp[2] < carry_z - 0.03:
                target[:2] = tcp[:2]  # clear the table before moving sideways
            if _near(tcp[:2], xy, 0.008) and abs(tcp[2] - carry_z) < 0.02:
                self._goto(4)
            return self.servo(state, target, yaw, CLOSE, speed=0.7)
        # phase 4: lower onto the target; release only when centred, climb back if pushed off line
        target = np.array([xy[0], xy[1], place_z])
        if not _near(tcp[:2], xy, 0.02):
            self._goto(3)
        elif abs(tcp[2] - place_z) < 0.006 and _near(tcp[:2], xy, 0.005):
            self._goto(5)
            # While the pads still hold it the cube moves with the hand, so no target relative to the
            # cube can pin the hand: it holds the pose it let go at until the pads are open.
            self.release_pose = (tcp.copy(), hand_yaw(state))
        return self.servo(state, target, yaw, CLOSE, speed=0.4)

    @abstractmethod
    def placed(self, env) -> bool:
        """Whether ``cube_a`` still rests where the task wants it (the success test, gripper aside)."""

    def release(self, state, env):
        tcp, cube = state[15:18], env[:3]
        held_at, yaw = self.release_pose  # the hand does not turn while the pads straddle the cube
        if self.phase == 5:  # open fully before climbing, or the pads drag the cube along
            if state[14] > 0.07 or self.timer > 30:
                self._goto(6)
            return self.servo(state, held_at, yaw, OPEN, speed=0.3)
        if tcp[2] > cube[2] + self.clear_dz and not self.placed(env):
            self._goto(0)  # knocked off after letting go: pick it up again
            return super().act(state, env)
        # Back off straight up, centred over the cube, at full speed: the fewer steps the pads spend
        # beside it, the fewer chances a sideways slip has to brush it. Then wait there.
        target = np.array([cube[0], cube[1], cube[2] + self.retreat_dz])
        return self.servo(state, target, yaw, OPEN)


class PickPlaceExpert(PlaceExpert):
    def place_target(self, env):
        return env[7:9], CUBE_HALF + 0.004

    def placed(self, env):
        dist = float(np.linalg.norm(env[:2] - env[7:9]))
        return dist < self.cfg.extra.get("success_dist", 0.04) and env[2] < CUBE_HALF + 0.01


class StackExpert(PlaceExpert):
    def place_target(self, env):
        base = env[7:10]
        return base[:2], base[2] + 2 * CUBE_HALF + 0.004

    def placed(self, env):
        dist = float(np.linalg.norm(env[:2] - env[7:9]))
        on_top = abs(env[2] - env[9] - 2 * CUBE_HALF) < 0.008
        return dist < self.cfg.extra.get("success_xy", 0.02) and on_top


class PushExpert(ScriptedExpert):
    """Push ``cube_a`` toward the goal with the closed gripper, steering onto the cube-goal line every
    step; back off and re-approach when the cube slips sideways off the pusher. Once the cube is well
    inside the goal it stops pushing, draws back from the cube, rises and waits (phase 3)."""

    push_z = 0.021
    contact = CUBE_HALF + 0.011
    """TCP-to-cube-centre distance at contact (cube half edge + pad half depth)."""
    done_frac = 0.4
    """Stop pushing when the cube is within this fraction of the goal's success radius of its centre."""
    redo_frac = 0.8
    """While waiting, push again if the cube lies beyond this fraction of the success radius."""
    wait_z = 0.1
    """TCP height where the pusher waits once done."""

    def act(self, state, env):
        tcp = state[15:18]
        cube, goal = env[:2], env[7:9]
        to_goal = goal - cube
        radius = self.cfg.extra.get("success_dist", 0.05)
        goal_dist = float(np.linalg.norm(to_goal))
        if self.phase == 3:
            if goal_dist > self.redo_frac * radius:
                self._goto(0)
            else:
                return self.back_off(state, cube)
        if self.phase == 2 and goal_dist < self.done_frac * radius:
            self._goto(3)
            return self.back_off(state, cube)
        u = to_goal / max(goal_dist, 1e-6)
        yaw = nearest_yaw(math.atan2(u[1], u[0]), math.pi, hand_yaw(state))
        behind = cube - u * (self.contact + 0.025)
        rel = cube - tcp[:2]
        lateral = abs(u[0] * rel[1] - u[1] * rel[0])
        if self.phase == 0:  # rise, then hover over the pre-push point
            if tcp[2] < 0.07 and not _near(tcp[:2], behind, 0.03):
                return self.servo(state, np.array([tcp[0], tcp[1], 0.1]), yaw, CLOSE)
            if _near(tcp[:2], behind, 0.01):
                self._goto(1)
            return self.servo(state, np.array([behind[0], behind[1], 0.1]), yaw, CLOSE)
        if self.phase == 1:  # lower behind the cube
            if abs(tcp[2] - self.push_z) < 0.008:
                self._goto(2)
            return self.servo(state, np.array([behind[0], behind[1], self.push_z]), yaw, CLOSE, speed=0.6)
        if lateral > 0.025 or float(np.dot(rel, u)) < 0.015:  # lost the cube: back off and re-approach
            self._goto(0)
            return self.servo(state, np.array([tcp[0], tcp[1], 0.1]), yaw, CLOSE)
        # Lead the cube along the line: a point just inside contact, behind the cube's current centre.
        target = cube - u * (self.contact - 0.02)
        return self.servo(state, np.array([target[0], target[1], self.push_z]), yaw, CLOSE, speed=0.35)

    def back_off(self, state: np.ndarray, cube: np.ndarray) -> np.ndarray:
        """Open the fingers, draw the pusher straight back from the cube at table height, then rise
        and wait. A cube corner can wedge between the closed pads: opening frees it, and rising while
        the pads touch the cube would lift it along with them."""
        tcp = state[15:18]
        away = tcp[:2] - cube
        gap = float(np.linalg.norm(away))
        away = away / max(gap, 1e-6)
        if state[14] < 0.03 and self.timer <= 10:  # let the fingers part before moving
            xy, z = tcp[:2], tcp[2]
        else:
            xy = cube + away * (self.contact + 0.03)
            z = self.wait_z if gap > self.contact + 0.015 else tcp[2]
        return self.servo(state, np.array([xy[0], xy[1], z]), hand_yaw(state), OPEN, speed=0.5)


EXPERTS: dict[str, type[ScriptedExpert]] = {
    "reach": ReachExpert,
    "lift": PickExpert,
    "push": PushExpert,
    "pick-place": PickPlaceExpert,
    "stack": StackExpert,
}


class NoExpertError(LookupError):
    """The env has no shipped scripted expert (``robolearn collect --expert`` plugs in one)."""


def make_expert(config: Any, **kwargs: Any) -> Callable[[dict], np.ndarray]:
    """The shipped scripted expert for an env config: a callable obs -> action, maybe with ``reset()``.

    Embedded Franka tasks: the :data:`EXPERTS` state machines (``kwargs`` go to them). Meta-World:
    its shipped per-task policy. gym-hil PickCube: its adapter's expert. Raises
    :class:`NoExpertError` for any other config (robosuite ships no scripted policies).
    """
    from robolearn.envs.adapters import GymHilConfig, MetaWorldConfig

    if isinstance(config, FrankaTaskConfig):
        return EXPERTS[config.task](config, **kwargs)
    if isinstance(config, MetaWorldConfig):
        from robolearn.envs.adapters.metaworld_env import MetaWorldExpert

        try:
            return MetaWorldExpert(config.task)
        except ValueError as exc:
            raise NoExpertError(str(exc)) from None
    if isinstance(config, GymHilConfig):
        from robolearn.envs.adapters.gym_hil_env import scripted_expert

        try:
            return scripted_expert(config)
        except ValueError as exc:
            raise NoExpertError(str(exc)) from None
    raise NoExpertError(f"no scripted expert ships for {type(config).__name__} envs")
