"""``robolearn collect --env franka-language``: N expert episodes per task into one dataset."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from robolearn import types
from robolearn.cli import main
from robolearn.data.reader import LeRobotReader
from robolearn.envs import SUITES
from robolearn.envs.config import SLOT_ENV_STATE_NAMES
from robolearn.envs.experts import named_cubes

LANGUAGE = SUITES.expand("franka-language")


def _episodes(root) -> list[dict]:
    files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    return [r for f in files for r in pq.read_table(f, columns=["env", "seed", "tasks"]).to_pylist()]


@pytest.fixture(scope="module")
def suite_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "lang"
    js = out.parent / "collect.json"
    assert (
        main(["collect", "--env", "franka-language", "--episodes", "2", "--out", str(out), "--json", str(js)])
        == 0
    )
    return out, json.loads(js.read_text())


def test_suite_collects_each_env_into_one_dataset(suite_dataset):
    out, summary = suite_dataset
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["robolearn"]["env"] == list(LANGUAGE)
    assert sorted(info["robolearn"]["env_config"]) == sorted(LANGUAGE)
    assert info["robolearn"]["env_config"]["franka-push-d2"]["extra"] == {"distractors": 2.0}
    assert info["features"][types.OBS_ENV_STATE]["names"] == list(SLOT_ENV_STATE_NAMES)
    rows = _episodes(out)
    assert [r["env"] for r in rows] == [e for e in LANGUAGE for _ in range(2)]
    assert [r["seed"] for r in rows] == [0, 1] * 4  # seeds count per env
    for row in rows:  # each episode's instruction is its task's, naming cubes on the table
        task = row["env"].removeprefix("franka-").removesuffix("-d2")
        assert named_cubes(task, row["tasks"][0])
    assert summary["episodes"] == 8 and summary["success_rate"] == 1.0
    assert {e: s["seeds"] for e, s in summary["envs"].items()} == {e: [0, 1] for e in LANGUAGE}
    reader = LeRobotReader(out)
    assert reader.num_episodes == 8
    last = reader.episode_columns(7)
    assert last[types.SUCCESS][-1] and last[types.OBS_ENV_STATE].shape[1] == 52


def test_rerun_continues_each_env_after_its_own_seeds(suite_dataset, tmp_path, capsys):
    import shutil

    out = tmp_path / "lang"
    shutil.copytree(suite_dataset[0], out)
    assert main(["collect", "--env", "franka-language", "--episodes", "1", "--out", str(out)]) == 0
    rows = _episodes(out)
    assert [(r["env"], r["seed"]) for r in rows[8:]] == [(e, 2) for e in LANGUAGE]
    # A seed already there, for any env of the suite, is an error before anything is written.
    assert (
        main(["collect", "--env", "franka-language", "--episodes", "1", "--seed", "1", "--out", str(out)])
        == 2
    )
    assert (
        "franka-lift-d2: " in (err := capsys.readouterr().err) and "seed 1 is already in the dataset" in err
    )
    assert len(_episodes(out)) == 12
    # Another env list, or other settings, do not go into this dataset.
    assert (
        main(["collect", "--env", "franka-lift-d2,franka-push-d2", "--episodes", "1", "--out", str(out)]) == 2
    )
    assert "the dataset records env" in capsys.readouterr().err
    assert main(["collect", "--env", "franka-language", "--episodes", "1", "--out", str(out),
                 "--set", "max_episode_steps=90"]) == 2  # fmt: skip
    assert "max_episode_steps=" in capsys.readouterr().err


def test_envs_with_different_features_do_not_share_a_dataset(tmp_path, capsys):
    out = tmp_path / "mixed"
    assert main(["collect", "--env", "franka-lift,franka-push", "--episodes", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'observation.environment_state' is float32 [7] in franka-lift, float32 [10] in franka-push" in err
    assert not out.exists()
    assert main(["collect", "--env", "franka-language", "--teleop", "keyboard", "--out", str(out)]) == 2
    assert "--teleop drives one env" in capsys.readouterr().err
    assert main(["collect", "--env", "franka-lift,franka-nope", "--out", str(out)]) == 2
    assert "unknown env 'franka-nope'" in capsys.readouterr().err


def test_a_list_of_envs_with_workers(tmp_path):
    out = tmp_path / "two"
    args = ["collect", "--env", "franka-lift-d2,franka-stack-d2", "--episodes", "2", "--workers", "2"]
    assert main([*args, "--out", str(out)]) == 0
    rows = _episodes(out)
    assert [(r["env"], r["seed"]) for r in rows] == [
        ("franka-lift-d2", 0), ("franka-lift-d2", 1), ("franka-stack-d2", 0), ("franka-stack-d2", 1)
    ]  # fmt: skip
    reader = LeRobotReader(out)
    first = reader.episode_columns(0)[types.OBS_ENV_STATE]
    # Three cubes on the table in lift-d2: three present flags set, the goal slot empty.
    assert int(first[0, [8 * k for k in range(6)]].sum()) == 3 and not np.any(first[:, -4:])
