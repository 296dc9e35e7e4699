"""The embedded Franka tasks: scene contents, randomization, instruction, reward and success.

Each task reads and writes MuJoCo state through :class:`SceneHandles`; the env owns stepping.
Object positions and colours are drawn from the episode's seeded generator.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace

import mujoco
import numpy as np

from robolearn.envs.config import CUBE_COLOURS, SLOT_ENV_STATE_NAMES, SLOT_FIELDS, distractor_count
from robolearn.envs.franka.mjcf import CUBE_HALF, SceneSpec
from robolearn.envs.franka.placement import (
    DISTRACTOR_CLEARANCE,
    PUSH_LANE,
    TABLE_X,
    TABLE_Y,
    free_spot,
    random_yaw_quat,
    sample_xy,
)

COLOURS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.1, 0.1, 1.0),
    "green": (0.1, 0.7, 0.15, 1.0),
    "blue": (0.1, 0.25, 0.9, 1.0),
    "yellow": (0.95, 0.85, 0.1, 1.0),
    "purple": (0.55, 0.15, 0.75, 1.0),
    "orange": (1.0, 0.5, 0.05, 1.0),
}
_NAMES = tuple(COLOURS)
assert _NAMES == CUBE_COLOURS  # the distractor layout's slot order is the config's
OPEN_WIDTH = 0.06
"""Gripper width (m) above which a placed cube counts as released."""


class SceneHandles:
    """Index lookups into one compiled task model (done once per env)."""

    def __init__(self, model: mujoco.MjModel, spec: SceneSpec):
        def jid(name: str) -> int:
            return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)

        self.cube_qpos = {c: model.jnt_qposadr[jid(f"{c}_joint")] for c in spec.cubes}
        self.cube_qvel = {c: model.jnt_dofadr[jid(f"{c}_joint")] for c in spec.cubes}
        self.cube_geom = {
            c: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, f"{c}_geom") for c in spec.cubes
        }
        site = mujoco.mjtObj.mjOBJ_SITE
        self.target_site = mujoco.mj_name2id(model, site, "target") if spec.target_site else -1
        self.goal_site = mujoco.mj_name2id(model, site, "goal") if spec.goal_pad else -1

    def cube_pose(self, data: mujoco.MjData, cube: str) -> np.ndarray:
        """(7,) position + quaternion (w, x, y, z)."""
        a = self.cube_qpos[cube]
        return data.qpos[a : a + 7]


@dataclass
class TaskState:
    """Per-episode quantities: colours, instruction, initial heights."""

    instruction: str = ""
    colours: tuple[str, ...] = ()
    """The colours the instruction names (cubes, then the goal disc)."""
    cube_z0: float = CUBE_HALF
    cubes: dict[str, str] = field(default_factory=dict)
    """Colour -> cube body of every cube on the table this episode (distractors included)."""


class Task(ABC):
    """Base: subclasses set ``spec``, ``episode_steps``, ``env_state_dim`` and the four hooks.

    With ``extra["distractors"] = N`` (tasks in :data:`robolearn.envs.config.DISTRACTOR_TASKS`) the
    scene gains cubes ``distractor_0..N-1`` in colours the instruction does not name, placed after
    the task's own objects from the same generator (so N = 0 draws exactly what it always drew), and
    the environment state becomes the colour-slot layout (:data:`SLOT_ENV_STATE_NAMES`).
    """

    name = ""
    spec = SceneSpec()
    episode_steps = 100
    env_state_dim = 0

    def __init__(self, extra: dict[str, float]):
        unknown = set(extra) - set(self.knobs)
        if unknown:
            raise ValueError(
                f"task {self.name!r}: unknown extra key {sorted(unknown)[0]!r} (known: {sorted(self.knobs)})"
            )
        self.params = {**self.knobs, **extra}
        self.distractors = distractor_count(self.name, self.params)
        if self.distractors:
            extra_cubes = tuple(f"distractor_{k}" for k in range(self.distractors))
            self.spec = replace(self.spec, cubes=self.spec.cubes + extra_cubes)
            self.env_state_dim = len(SLOT_ENV_STATE_NAMES)
        self.swap_target = bool(self.params.get("swap_target", 0))
        if self.swap_target and not self.distractors:
            raise ValueError(f"task {self.name!r}: extra.swap_target needs extra.distractors >= 1")
        self.h: SceneHandles | None = None
        self.state = TaskState()
        self._placed: dict[str, str] = {}
        self._slots: list[tuple[int, int]] = []

    knobs: dict[str, float] = {}

    def bind(self, model: mujoco.MjModel) -> None:
        self.h = SceneHandles(model, self.spec)
        self.model = model

    def _place_cube(
        self, data: mujoco.MjData, cube: str, xy: np.ndarray, quat: np.ndarray, colour: str
    ) -> None:
        a = self.h.cube_qpos[cube]
        data.qpos[a : a + 3] = (xy[0], xy[1], CUBE_HALF)
        data.qpos[a + 3 : a + 7] = quat
        self.model.geom_rgba[self.h.cube_geom[cube]] = COLOURS[colour]
        self._placed[colour] = cube

    def reset_scene(self, rng: np.random.Generator, data: mujoco.MjData) -> None:
        """Draw the episode: the task's objects and instruction (:meth:`sample`), then any distractors."""
        self._placed = {}
        self.sample(rng, data)
        if self.distractors:
            self._sample_distractors(rng, data)
            if self.swap_target:
                self._swap_target(data)
        self.state.cubes = dict(self._placed)
        width = len(SLOT_FIELDS)
        self._slots = sorted(
            (CUBE_COLOURS.index(c) * width, int(self.h.cube_qpos[cube])) for c, cube in self._placed.items()
        )

    def _swap_target(self, data: mujoco.MjData) -> None:
        """The grounding probe (``extra.swap_target``): the target cube and ``distractor_0`` trade poses
        and colours, so the scene looks exactly as drawn, but the instruction now names the cube
        that was a distractor, and success is judged on that one."""
        a, b = self.h.cube_qpos["cube_a"], self.h.cube_qpos["distractor_0"]
        pose_a = data.qpos[a : a + 7].copy()
        data.qpos[a : a + 7] = data.qpos[b : b + 7]
        data.qpos[b : b + 7] = pose_a
        ga, gb = self.h.cube_geom["cube_a"], self.h.cube_geom["distractor_0"]
        self.model.geom_rgba[[ga, gb]] = self.model.geom_rgba[[gb, ga]]
        old = self.state.colours[0]
        new = next(c for c, cube in self._placed.items() if cube == "distractor_0")
        self._placed[old], self._placed[new] = "distractor_0", "cube_a"
        self.state.colours = (new, *self.state.colours[1:])
        self.state.instruction = re.sub(rf"\b{old}\b", new, self.state.instruction, count=1)

    def keep_clear(self, data: mujoco.MjData) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """Segments ``(a, b, radius)`` on the table (xy) that distractors stay out of: by default a
        disc of :data:`DISTRACTOR_CLEARANCE` around every cube placed so far and the goal."""
        zones = []
        for cube in self._placed.values():
            a = self.h.cube_qpos[cube]
            xy = data.qpos[a : a + 2].copy()
            zones.append((xy, xy, DISTRACTOR_CLEARANCE))
        if self.h.goal_site >= 0:
            goal = self.model.site_pos[self.h.goal_site, :2].copy()
            zones.append((goal, goal, DISTRACTOR_CLEARANCE))
        return zones

    def _sample_distractors(self, rng: np.random.Generator, data: mujoco.MjData) -> None:
        free = [c for c in CUBE_COLOURS if c not in self.state.colours]
        picks = rng.choice(len(free), size=self.distractors, replace=False)
        zones = self.keep_clear(data)
        for _ in range(50):  # restart the whole set when a late cube finds no room
            spots: list[np.ndarray] = []
            for _ in range(self.distractors):
                spot = free_spot(rng, zones, spots)
                if spot is None:
                    break
                spots.append(spot)
            if len(spots) == self.distractors:
                break
        else:
            raise RuntimeError(f"task {self.name!r}: no room for {self.distractors} distractors on the table")
        for k, (i, xy) in enumerate(zip(picks, spots, strict=True)):
            self._place_cube(data, f"distractor_{k}", xy, random_yaw_quat(rng), free[int(i)])

    def slot_state(self, data: mujoco.MjData, out: np.ndarray) -> None:
        """Write the colour-slot environment state (:data:`SLOT_ENV_STATE_NAMES`) into ``out`` (52,)."""
        out[:] = 0.0
        for base, adr in self._slots:
            out[base] = 1.0
            out[base + 1 : base + 8] = data.qpos[adr : adr + 7]
        if self.h.goal_site >= 0:
            out[-4] = 1.0
            out[-3:] = self.model.site_pos[self.h.goal_site]

    @abstractmethod
    def sample(self, rng: np.random.Generator, data: mujoco.MjData) -> None: ...

    @abstractmethod
    def env_state(self, data: mujoco.MjData, out: np.ndarray) -> None:
        """Write the task's object/goal state into ``out`` (env_state_dim,)."""
        ...

    @abstractmethod
    def success(self, data: mujoco.MjData, tcp: np.ndarray, width: float) -> bool: ...

    @abstractmethod
    def dense_reward(self, data: mujoco.MjData, tcp: np.ndarray, width: float) -> float: ...


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two short vectors (cheaper than np.linalg.norm on the hot path)."""
    return math.dist(a, b)


def _reach_term(d: float) -> float:
    return 1.0 - math.tanh(10.0 * d)


class ReachTask(Task):
    name = "reach"
    spec = SceneSpec(target_site=True)
    episode_steps = 80
    env_state_dim = 3
    knobs = {"success_dist": 0.025}

    def sample(self, rng, data):
        pos = np.array([rng.uniform(*TABLE_X), rng.uniform(*TABLE_Y), rng.uniform(0.05, 0.3)])
        self.model.site_pos[self.h.target_site] = pos
        colour = _NAMES[rng.integers(len(_NAMES))]
        self.model.site_rgba[self.h.target_site] = COLOURS[colour][:3] + (0.6,)
        self.state = TaskState(f"reach the {colour} ball", (colour,))

    def env_state(self, data, out):
        out[:] = self.model.site_pos[self.h.target_site]

    def _dist(self, tcp):
        return _dist(tcp, self.model.site_pos[self.h.target_site])

    def success(self, data, tcp, width):
        return self._dist(tcp) < self.params["success_dist"]

    def dense_reward(self, data, tcp, width):
        return _reach_term(self._dist(tcp))


class LiftTask(Task):
    name = "lift"
    spec = SceneSpec(cubes=("cube_a",))
    episode_steps = 100
    env_state_dim = 7
    knobs = {"success_height": 0.08, "distractors": 0.0, "swap_target": 0.0}

    def sample(self, rng, data):
        colour = _NAMES[rng.integers(len(_NAMES))]
        self._place_cube(data, "cube_a", sample_xy(rng, [], 0.0), random_yaw_quat(rng), colour)
        self.state = TaskState(f"lift the {colour} cube", (colour,))

    def env_state(self, data, out):
        if self.distractors:
            return self.slot_state(data, out)
        out[:] = self.h.cube_pose(data, "cube_a")

    def success(self, data, tcp, width):
        return self.h.cube_pose(data, "cube_a")[2] > self.state.cube_z0 + self.params["success_height"]

    def dense_reward(self, data, tcp, width):
        cube = self.h.cube_pose(data, "cube_a")
        lift = min(max((float(cube[2]) - self.state.cube_z0) / self.params["success_height"], 0.0), 1.0)
        return 0.5 * _reach_term(_dist(tcp, cube[:3])) + lift


class _GoalTask(Task):
    """A cube and a goal disc on the table (push, pick-place)."""

    spec = SceneSpec(cubes=("cube_a",), goal_pad=True)
    env_state_dim = 10
    min_goal_dist = 0.12
    verb = ""

    def sample(self, rng, data):
        i, j = rng.choice(len(_NAMES), size=2, replace=False)
        cube_xy = sample_xy(rng, [], 0.0)
        goal_xy = sample_xy(rng, [cube_xy], self.min_goal_dist)
        self._place_cube(data, "cube_a", cube_xy, random_yaw_quat(rng), _NAMES[i])
        self.model.site_pos[self.h.goal_site, :2] = goal_xy
        self.model.site_rgba[self.h.goal_site] = COLOURS[_NAMES[j]][:3] + (0.5,)
        self.state = TaskState(
            f"{self.verb} the {_NAMES[i]} cube to the {_NAMES[j]} circle", (_NAMES[i], _NAMES[j])
        )

    def env_state(self, data, out):
        if self.distractors:
            return self.slot_state(data, out)
        out[:7] = self.h.cube_pose(data, "cube_a")
        out[7:] = self.model.site_pos[self.h.goal_site]

    def _goal_dist(self, data):
        return _dist(self.h.cube_pose(data, "cube_a")[:2], self.model.site_pos[self.h.goal_site, :2])


class PushTask(_GoalTask):
    name = "push"
    episode_steps = 150
    verb = "push"
    knobs = {"success_dist": 0.05, "distractors": 0.0, "swap_target": 0.0}

    def keep_clear(self, data):
        # The pusher lowers behind the cube and drives it along the cube-goal line: keep that lane free.
        zones = super().keep_clear(data)
        cube, goal = self.h.cube_pose(data, "cube_a")[:2].copy(), self.model.site_pos[self.h.goal_site, :2]
        u = (goal - cube) / max(float(np.linalg.norm(goal - cube)), 1e-9)
        zones.append((cube - 0.09 * u, goal + 0.04 * u, PUSH_LANE))
        return zones

    def success(self, data, tcp, width):
        return self._goal_dist(data) < self.params["success_dist"]

    def dense_reward(self, data, tcp, width):
        cube = self.h.cube_pose(data, "cube_a")
        return 0.5 * _reach_term(_dist(tcp, cube[:3])) + _reach_term(self._goal_dist(data))


class PickPlaceTask(_GoalTask):
    name = "pick-place"
    episode_steps = 150
    verb = "put"
    min_goal_dist = 0.15
    knobs = {"success_dist": 0.04, "distractors": 0.0, "swap_target": 0.0}

    def sample(self, rng, data):
        super().sample(rng, data)
        self.state.instruction = self.state.instruction.replace(" to the ", " on the ")

    def success(self, data, tcp, width):
        resting = self.h.cube_pose(data, "cube_a")[2] < CUBE_HALF + 0.01
        return self._goal_dist(data) < self.params["success_dist"] and resting and width > OPEN_WIDTH

    def dense_reward(self, data, tcp, width):
        cube = self.h.cube_pose(data, "cube_a")
        carry = float(np.clip((cube[2] - CUBE_HALF) / 0.05, 0.0, 1.0))
        return 0.5 * _reach_term(_dist(tcp, cube[:3])) + 0.25 * carry + _reach_term(self._goal_dist(data))


class StackTask(Task):
    name = "stack"
    spec = SceneSpec(cubes=("cube_a", "cube_b"))
    episode_steps = 200
    env_state_dim = 14
    knobs = {"success_xy": 0.02, "distractors": 0.0, "swap_target": 0.0}

    def sample(self, rng, data):
        i, j = rng.choice(len(_NAMES), size=2, replace=False)
        a_xy = sample_xy(rng, [], 0.0)
        b_xy = sample_xy(rng, [a_xy], 0.1)
        self._place_cube(data, "cube_a", a_xy, random_yaw_quat(rng), _NAMES[i])
        self._place_cube(data, "cube_b", b_xy, random_yaw_quat(rng), _NAMES[j])
        self.state = TaskState(f"put the {_NAMES[i]} cube on the {_NAMES[j]} cube", (_NAMES[i], _NAMES[j]))

    def env_state(self, data, out):
        if self.distractors:
            return self.slot_state(data, out)
        out[:7] = self.h.cube_pose(data, "cube_a")
        out[7:] = self.h.cube_pose(data, "cube_b")

    def success(self, data, tcp, width):
        a, b = self.h.cube_pose(data, "cube_a"), self.h.cube_pose(data, "cube_b")
        on_top = abs(a[2] - b[2] - 2 * CUBE_HALF) < 0.008
        return bool(
            np.linalg.norm(a[:2] - b[:2]) < self.params["success_xy"] and on_top and width > OPEN_WIDTH
        )

    def dense_reward(self, data, tcp, width):
        a, b = self.h.cube_pose(data, "cube_a"), self.h.cube_pose(data, "cube_b")
        above = b[:3] + (0.0, 0.0, 2 * CUBE_HALF)
        return 0.5 * _reach_term(_dist(tcp, a[:3])) + _reach_term(_dist(a[:3], above))


TASKS: dict[str, type[Task]] = {t.name: t for t in (ReachTask, LiftTask, PushTask, PickPlaceTask, StackTask)}
