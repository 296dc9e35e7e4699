"""``robolearn collect`` on the adapter envs: shipped experts, ``--expert`` user policies, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robolearn.cli import main
from robolearn.data.reader import LeRobotReader
from robolearn.envs.adapters import METAWORLD_ENV_STATE_NAMES, ROBOSUITE_ENV_STATE_NAMES
from robolearn.types import OBS_ENV_STATE

HERE = Path(__file__).resolve().parent  # user_experts.py lives here: the subprocesses run from this folder


def _collect(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "robolearn.cli", "collect", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=HERE)


def test_robosuite_lift_with_a_user_expert(tmp_path):
    pytest.importorskip("robosuite")
    out, js = tmp_path / "lift", tmp_path / "c.json"
    res = _collect("--env", "robosuite-lift", "--expert", "user_experts:RobosuiteLiftExpert", "--episodes", "2",
                   "--out", str(out), "--set", "max_episode_steps=120", "--json", str(js))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "[robosuite" not in res.stderr  # peers' log noise is filtered
    summary = json.loads(js.read_text())
    assert summary["episodes"] == 2 and summary["success_rate"] == 1.0 and summary["seeds"] == [0, 1]
    reader = LeRobotReader(out)
    assert reader.robot_type == "panda" and reader.fps == 20
    assert reader.info["robolearn"]["env"] == "robosuite-lift"
    assert reader.info["robolearn"]["env_config"]["max_episode_steps"] == 120
    assert reader.features[OBS_ENV_STATE].names == ROBOSUITE_ENV_STATE_NAMES["Lift"]
    cube_z = reader.episode_columns(1)[OBS_ENV_STATE][:, 2]
    assert cube_z[-1] > cube_z[0] + 0.04  # the user's expert really lifted the cube


def test_robosuite_without_expert_says_to_pass_one(tmp_path, capsys):
    pytest.importorskip("robosuite")
    out = tmp_path / "none"
    assert main(["collect", "--env", "robosuite-lift", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no scripted expert" in err[0] and "--expert" in err[0]
    assert not out.exists()  # nothing half-written


def test_metaworld_shipped_expert(tmp_path):
    pytest.importorskip("metaworld")
    out, js = tmp_path / "push", tmp_path / "c.json"
    res = _collect("--env", "metaworld-push", "--episodes", "3", "--out", str(out), "--json", str(js),
                   "--set", "max_episode_steps=250")  # fmt: skip
    assert res.returncode == 0, res.stderr
    summary = json.loads(js.read_text())
    assert summary["episodes"] == 3 and summary["success_rate"] == 1.0
    reader = LeRobotReader(out)
    assert reader.robot_type == "sawyer" and reader.fps == 80
    assert reader.features["action"].shape == (4,) and reader.features["action"].names[-1] == "gripper"
    assert reader.features[OBS_ENV_STATE].names == METAWORLD_ENV_STATE_NAMES
    for ep in range(3):
        assert reader.episode_columns(ep)["next.success"][-1]


def test_user_expert_in_a_spawned_worker_pool(tmp_path):
    pytest.importorskip("metaworld")
    out, js = tmp_path / "reach", tmp_path / "c.json"
    res = _collect("--env", "metaworld-reach", "--expert", "user_experts:make_reach_policy", "--workers", "2",
                   "--episodes", "4", "--out", str(out), "--json", str(js),
                   "--set", "max_episode_steps=100")  # fmt: skip
    assert res.returncode == 0, res.stderr
    summary = json.loads(js.read_text())
    assert summary["episodes"] == 4 and summary["success_rate"] == 1.0
    assert sorted(summary["seeds"]) == [0, 1, 2, 3]
    reader = LeRobotReader(out)
    for ep in range(4):
        cols = reader.episode_columns(ep)
        hand, goal = cols["observation.state"][-1, 15:18], cols[OBS_ENV_STATE][-1, 14:17]
        assert np.linalg.norm(hand - goal) < 0.05  # Meta-World reach's success radius
        np.testing.assert_array_equal(cols["action"][:, 3], 0.0)  # the user's policy, not Meta-World's


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("user_experts", "expected package.module:callable"),
        ("no_such_module_xyz:make", "cannot import module 'no_such_module_xyz'"),
        ("user_experts:nope", "has no attribute 'nope'"),
        ("user_experts:OSC_STEP", "is a float, not a callable"),
        ("user_experts:wrong_shape", "action of shape (5,)"),
    ],
)
def test_bad_expert_specs_are_one_line_errors(tmp_path, capsys, monkeypatch, spec, message):
    pytest.importorskip("metaworld")
    monkeypatch.chdir(HERE)  # user_experts resolves from the working directory, as on the command line
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(HERE))])
    out = tmp_path / "bad"
    assert main(["collect", "--env", "metaworld-reach", "--expert", spec, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and spec in err[0] and message in err[0], err
    assert not out.exists()


def test_expert_factory_signature_is_checked(tmp_path, monkeypatch):
    from robolearn.envs.expert_plugin import ExpertSpecError, build_policy

    (tmp_path / "my_policies.py").write_text("def no_env():\n    return None\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    with pytest.raises(ExpertSpecError, match="one argument, the env"):
        build_policy("my_policies:no_env", object())


def test_teleop_needs_an_ee_delta_action(tmp_path, capsys):
    pytest.importorskip("metaworld")
    assert (
        main(["collect", "--env", "metaworld-reach", "--teleop", "keyboard", "--out", str(tmp_path / "t")])
        == 2
    )
    err = capsys.readouterr().err
    assert "7-D ee_delta" in err and "(4,)" in err and "dx dy dz gripper" in err


def test_keyboard_teleop_drives_a_robosuite_arm(tmp_path):
    pytest.importorskip("robosuite")
    out = tmp_path / "tele"
    cmd = [sys.executable, "-m", "robolearn.cli", "collect", "--env", "robosuite-lift", "--teleop", "keyboard",
           "--out", str(out)]  # fmt: skip
    res = subprocess.run(cmd, input="rrrrrrrr\n", capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    reader = LeRobotReader(out)
    assert reader.episode_lengths.tolist() == [8]
    eef_z = reader.episode_columns(0)["observation.state"][:, 17]
    assert eef_z[-1] > eef_z[0] + 0.02  # "r" moves the hand up
