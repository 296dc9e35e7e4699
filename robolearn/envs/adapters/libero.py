"""LIBERO's four benchmark suites as robolearn envs: the light half (config, task tables, names).

The env itself (rpent-libero 0.2.0, LIBERO on robosuite 1.5) lives in
:mod:`robolearn.envs.adapters.libero_env`; this module imports neither, so the registry can list
and validate the 40 tasks on a core install. Registered names: ``libero-spatial-0`` ...
``libero-spatial-9``, likewise ``libero-object-N``, ``libero-goal-N`` and ``libero-10-N``, and one
suite per benchmark (``libero-spatial``, ``libero-object``, ``libero-goal``, ``libero-10``), so
``robolearn eval --env libero-spatial`` scores a whole suite with per-task success.

Conventions (the same as the LIBERO import, :mod:`robolearn.data.convert.libero`, so a policy
trained on converted LIBERO demos runs here unchanged):

- ``observation.state`` (8,) float32: end-effector position (3, world frame, robosuite's
  ``robot0_eef_pos``), end-effector orientation as an axis-angle vector (3), the two finger joint
  positions (2) - LIBERO's ``ee_pos``, ``ee_ori``, ``gripper_states`` (openpi's and LeRobot's
  LIBERO state);
- ``observation.images.agentview`` / ``observation.images.wrist`` uint8 (H, W, 3), upright;
- ``task``: the benchmark's instruction for the task;
- action (7,): OSC_POSE deltas [dx, dy, dz, droll, dpitch, dyaw, gripper] in [-1, 1], gripper
  -1 open, +1 close, 20 Hz - exactly what LIBERO's demos record in ``actions``;
- ``reset(seed=s)`` starts from LIBERO's stored initial state number ``s % 50`` (every task ships
  50), so seeds 0-49 are the benchmark's own episodes;
- ``info["is_success"]`` is LIBERO's own goal check (the task's BDDL goal predicates).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from robolearn.types import ACTION, EE_DELTA_ACTION_NAMES, OBS_STATE

LIBERO_SUITES: dict[str, tuple[str, ...]] = {
    "libero_spatial": tuple(
        f"pick_up_the_black_bowl_{where}_and_place_it_on_the_plate"
        for where in (
            "between_the_plate_and_the_ramekin", "next_to_the_ramekin", "from_table_center",
            "on_the_cookie_box", "in_the_top_drawer_of_the_wooden_cabinet", "on_the_ramekin",
            "next_to_the_cookie_box", "on_the_stove", "next_to_the_plate", "on_the_wooden_cabinet",
        )
    ),
    "libero_object": tuple(
        f"pick_up_the_{thing}_and_place_it_in_the_basket"
        for thing in (
            "alphabet_soup", "cream_cheese", "salad_dressing", "bbq_sauce", "ketchup", "tomato_sauce",
            "butter", "milk", "chocolate_pudding", "orange_juice",
        )
    ),
    "libero_goal": (
        "open_the_middle_drawer_of_the_cabinet", "put_the_bowl_on_the_stove",
        "put_the_wine_bottle_on_top_of_the_cabinet", "open_the_top_drawer_and_put_the_bowl_inside",
        "put_the_bowl_on_top_of_the_cabinet", "push_the_plate_to_the_front_of_the_stove",
        "put_the_cream_cheese_in_the_bowl", "turn_on_the_stove", "put_the_bowl_on_the_plate",
        "put_the_wine_bottle_on_the_rack",
    ),
    "libero_10": (
        "LIVING_ROOM_SCENE2_put_both_the_alphabet_soup_and_the_tomato_sauce_in_the_basket",
        "LIVING_ROOM_SCENE2_put_both_the_cream_cheese_box_and_the_butter_in_the_basket",
        "KITCHEN_SCENE3_turn_on_the_stove_and_put_the_moka_pot_on_it",
        "KITCHEN_SCENE4_put_the_black_bowl_in_the_bottom_drawer_of_the_cabinet_and_close_it",
        "LIVING_ROOM_SCENE5_put_the_white_mug_on_the_left_plate_and_put_the_yellow_and_white_mug_on_the_right_plate",
        "STUDY_SCENE1_pick_up_the_book_and_place_it_in_the_back_compartment_of_the_caddy",
        "LIVING_ROOM_SCENE6_put_the_white_mug_on_the_plate_and_put_the_chocolate_pudding_to_the_right_of_the_plate",
        "LIVING_ROOM_SCENE1_put_both_the_alphabet_soup_and_the_cream_cheese_box_in_the_basket",
        "KITCHEN_SCENE8_put_both_moka_pots_on_the_stove",
        "KITCHEN_SCENE6_put_the_yellow_and_white_mug_in_the_microwave_and_close_it",
    ),
}  # fmt: skip
"""Each suite's task (BDDL file) names in LIBERO's benchmark order (task ids 0-9); a test checks
them against the installed package's ``libero.libero.benchmark``."""

LIBERO_EPISODE_STEPS: dict[str, int] = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
}
"""Per-suite step budget of the published LIBERO evaluations (openpi's and LeRobot's LIBERO eval
loops: the longest training demo of the suite plus a margin)."""

LIBERO_STATE_NAMES: tuple[str, ...] = (
    "ee_pos.0", "ee_pos.1", "ee_pos.2", "ee_ori.0", "ee_ori.1", "ee_ori.2", "gripper_states.0", "gripper_states.1",
)  # fmt: skip
"""Element names of the 8-D ``observation.state``: LIBERO's obs keys ``ee_pos`` (x, y, z), ``ee_ori``
(axis-angle x, y, z) and ``gripper_states`` (the two finger joints), as ``<key>.<i>`` - the names the
LIBERO import gives them, and the ones the robomimic export splits back into those keys."""

INIT_STATES_PER_TASK = 50
"""Every LIBERO task ships 50 initial states (its ``.pruned_init`` file)."""


def suite_env_prefix(suite: str) -> str:
    """``libero_spatial`` -> ``libero-spatial`` (registry names use dashes)."""
    return suite.replace("_", "-")


def task_instruction(task_name: str) -> str:
    """The benchmark's instruction for a task name, as ``libero.libero.benchmark`` derives it:
    underscores become spaces, and a ``KITCHEN_SCENE3_``-style scene prefix is dropped."""
    return " ".join(re.sub(r"^[A-Z_]*SCENE\d+_", "", task_name).split("_"))


@dataclass
class LiberoConfig:
    """One LIBERO task (a Panda in a LIBERO scene), OSC_POSE delta control at 20 Hz."""

    suite: Literal["libero_spatial", "libero_object", "libero_goal", "libero_10"] = "libero_spatial"
    """LIBERO benchmark suite."""
    task_id: int = 0
    """Task index in the suite (0-9, LIBERO's benchmark order)."""
    cameras: tuple[str, ...] = ()
    """Cameras rendered into ``observation.images.<name>``: ``agentview`` (LIBERO's front view) and
    ``wrist`` (``robot0_eye_in_hand``), the names the LIBERO import gives them; any other robosuite
    camera of the scene by its own name."""
    image_size: tuple[int, int] = (128, 128)
    """(height, width) of every camera image; LIBERO's demos are 128x128."""
    max_episode_steps: int = 0
    """Episode length in control steps; 0 takes the suite's budget (:data:`LIBERO_EPISODE_STEPS`)."""
    reward_type: Literal["sparse"] = "sparse"
    """LIBERO's reward is sparse only: 1 on a successful step, else 0."""
    terminate_on_success: bool = True
    """End the episode (``terminated=True``) on the first successful step."""
    control_hz: float = 20.0
    """Policy rate (Hz), robosuite's ``control_freq``; LIBERO's demos are recorded at 20."""
    settle_steps: int = 10
    """Steps of a still, open-gripper action run inside ``reset`` so the objects LIBERO drops into
    the scene come to rest (the published evaluations wait 10); not counted in the episode."""
    instruction: Literal["benchmark", "bddl"] = "benchmark"
    """``benchmark``: the suite's instruction (from the task name; what openpi, LeRobot and LIBERO's
    own evaluation prompt with); ``bddl``: the BDDL file's ``:language`` text, which is what LIBERO's
    HDF5 demos store in ``problem_info`` (so what a converted LIBERO dataset's ``task`` holds)."""
    cheap_render: bool = True
    """Turn off shadows and multisample anti-aliasing in the offscreen renderer (much faster frames)."""

    def __post_init__(self) -> None:
        if self.suite not in LIBERO_SUITES:
            raise ValueError(f"LiberoConfig.suite must be one of {tuple(LIBERO_SUITES)}; got {self.suite!r}")
        n = len(LIBERO_SUITES[self.suite])
        if not 0 <= int(self.task_id) < n:
            raise ValueError(
                f"LiberoConfig.task_id must be in [0, {n - 1}] for {self.suite}; got {self.task_id}"
            )
        self.cameras = tuple(self.cameras)
        self.image_size = tuple(self.image_size)
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"LiberoConfig.image_size must be (height, width); got {self.image_size!r}")
        if self.max_episode_steps < 0:
            raise ValueError(f"LiberoConfig.max_episode_steps must be >= 0; got {self.max_episode_steps}")
        if self.reward_type != "sparse":
            raise ValueError(f"LiberoConfig.reward_type must be 'sparse' (LIBERO has no dense reward); "
                             f"got {self.reward_type!r}")  # fmt: skip
        if not 0 < self.control_hz <= 500:
            raise ValueError(f"LiberoConfig.control_hz must be in (0, 500]; got {self.control_hz}")
        if self.settle_steps < 0:
            raise ValueError(f"LiberoConfig.settle_steps must be >= 0; got {self.settle_steps}")
        if self.instruction not in ("benchmark", "bddl"):
            raise ValueError(
                f"LiberoConfig.instruction must be 'benchmark' or 'bddl'; got {self.instruction!r}"
            )

    @property
    def task_name(self) -> str:
        """The task's BDDL name, e.g. ``pick_up_the_black_bowl_on_the_ramekin_and_place_it_on_the_plate``."""
        return LIBERO_SUITES[self.suite][self.task_id]

    @property
    def episode_steps(self) -> int:
        """``max_episode_steps``, or the suite's budget when it is 0."""
        return self.max_episode_steps or LIBERO_EPISODE_STEPS[self.suite]

    @property
    def robot_type(self) -> str:
        """LeRobot's ``robot_type`` of the arm (LIBERO's Panda)."""
        return "panda"

    def instruction_template(self) -> str:
        """The benchmark instruction (the ``bddl`` text is only known once the env is built)."""
        return task_instruction(self.task_name)

    def feature_names(self) -> dict[str, tuple[str, ...]]:
        """Element names of ``observation.state`` and ``action``."""
        return {OBS_STATE: LIBERO_STATE_NAMES, ACTION: EE_DELTA_ACTION_NAMES}


def registered_tasks() -> list[tuple[str, dict[str, object], str]]:
    """``(env name, config defaults, description)`` for every task of every suite."""
    out = []
    for suite, names in LIBERO_SUITES.items():
        for i, name in enumerate(names):
            desc = f"LIBERO {suite_env_prefix(suite)[len('libero-') :]} task {i}: {task_instruction(name)}"
            out.append((f"{suite_env_prefix(suite)}-{i}", {"suite": suite, "task_id": i}, desc))
    return out


__all__ = [
    "INIT_STATES_PER_TASK",
    "LIBERO_EPISODE_STEPS",
    "LIBERO_STATE_NAMES",
    "LIBERO_SUITES",
    "LiberoConfig",
    "registered_tasks",
    "suite_env_prefix",
    "task_instruction",
]
