"""``robolearn envs``: every registered env with its features, element names, rate, cap and instruction."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from robolearn.cli import main
from robolearn.envs import ENVS
from robolearn.envs.adapters import METAWORLD_ENV_STATE_NAMES, ROBOSUITE_ENV_STATE_NAMES
from robolearn.envs.config import ENV_STATE_NAMES
from robolearn.registry import Entry
from robolearn.types import STATE_NAMES


def registered_names() -> list[str]:
    """The envs a fresh interpreter registers: other tests register toy envs in this process."""
    code = "import json; from robolearn.envs import ENVS; print(json.dumps(ENVS.names()))"
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def listing(tmp_path_factory):
    """One full listing (text on stdout, JSON in a file): it builds every env once."""
    path = tmp_path_factory.mktemp("envs") / "envs.json"
    cmd = [sys.executable, "-m", "robolearn.cli", "envs", "--json", str(path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return res.stdout, json.loads(path.read_text()), res.stderr


def test_text_lists_every_registered_env(listing):
    text, _, stderr = listing
    for name in registered_names():
        assert f"\n{name}: " in f"\n{text}", name
    assert "[robosuite" not in stderr
    block = f"\n{text}".split("\nfranka-lift: ")[1].split("\n\n")[0]
    assert "robot franka_fr3, 20 Hz, 100 steps per episode, expert PickExpert" in block
    assert "instruction: lift the {colour} cube" in block
    assert (
        "cube_x cube_y cube_z cube_qw" in block and "dx dy dz droll dpitch dyaw gripper in [-1, 1]" in block
    )


def test_json_has_features_with_element_names(listing):
    _, data, _ = listing
    assert sorted(data) == registered_names()
    lift = data["franka-lift"]
    assert (
        lift["control_hz"] == 20 and lift["max_episode_steps"] == 100 and lift["robot_type"] == "franka_fr3"
    )
    assert lift["features"]["observation.state"]["names"] == list(STATE_NAMES)
    assert lift["features"]["observation.environment_state"]["names"] == list(ENV_STATE_NAMES["lift"])
    assert lift["features"]["action"] == {
        "dtype": "float32", "shape": [7], "names": ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"],
        "low": -1.0, "high": 1.0,
    }  # fmt: skip
    for name, info in data.items():
        assert info["not_installed"] is None, name  # the dev venv has every extra
        state_dim = 8 if name.startswith("libero-") else 22  # LIBERO's own state: ee pos, axis-angle, fingers
        assert info["features"]["observation.state"]["shape"] == [state_dim]
        assert info["instruction"] and info["control_hz"] > 0 and info["max_episode_steps"] > 0
    stack = data["robosuite-stack"]
    assert stack["features"]["observation.environment_state"]["names"] == list(
        ROBOSUITE_ENV_STATE_NAMES["Stack"]
    )
    assert stack["robot_type"] == "panda" and stack["expert"] is None and stack["max_episode_steps"] == 400
    libero = data["libero-object-3"]
    assert (libero["control_hz"], libero["robot_type"], libero["max_episode_steps"]) == (20, "panda", 280)
    assert libero["instruction"] == "pick up the bbq sauce and place it in the basket"
    reach = data["metaworld-reach"]
    assert reach["features"]["observation.environment_state"]["names"] == list(METAWORLD_ENV_STATE_NAMES)
    assert reach["features"]["action"]["names"] == ["dx", "dy", "dz", "gripper"]
    assert (reach["control_hz"], reach["robot_type"], reach["expert"]) == (80, "sawyer", "MetaWorldExpert")


def test_one_env_in_detail_with_overrides(capsys):
    pytest.importorskip("metaworld")
    assert main(["envs", "metaworld-push", "--set", "max_episode_steps=120"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("metaworld-push: ") and "120 steps per episode" in out
    assert "  max_episode_steps = 120" in out
    assert "observation.environment_state: float32 (17,)" in out
    assert "   14  goal_x" in out and "    3  gripper" in out


def test_json_to_stdout(capsys):
    assert main(["envs", "franka-reach", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["franka-reach"]["features"]["observation.environment_state"]["names"] == [
        "target_x",
        "target_y",
        "target_z",
    ]


def test_env_whose_extra_is_missing_is_listed_from_the_registry(monkeypatch, capsys):
    from robolearn.envs.config import FrankaTaskConfig

    entry = Entry(
        "fake-missing", FrankaTaskConfig, "robolearn_no_such_extra_module:build", {}, "a fake adapter"
    )
    monkeypatch.setitem(ENVS._entries, "fake-missing", entry)
    assert main(["envs", "fake-missing"]) == 0
    out = capsys.readouterr().out
    assert "fake-missing: a fake adapter" in out
    assert "not installed (no module 'robolearn_no_such_extra_module')" in out
    assert "  control_hz = 20.0" in out  # what the registry knows, without building


def test_unknown_env_is_a_one_line_error(capsys):
    assert main(["envs", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown env 'nope'" in err[0] and "franka-lift" in err[0]
