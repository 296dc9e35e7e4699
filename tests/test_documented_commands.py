"""Every command in the README's command table runs on a core install, at tiny sizes.

The optional extras (robosuite, Meta-World, gym-hil, lerobot, Zenoh, playwright, ...) are hidden
from the interpreter by ``tests/core_install/sitecustomize.py``, so each command sees what
``./bootstrap`` alone leaves behind. Each must succeed; a command that needs an extra must instead
fail with one line naming it (exit status 2), never a traceback. A README row with no tiny run
below fails the test, so a newly documented command gets covered here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from robolearn.data.reader import LeRobotReader

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = "robosuite,metaworld,gym_hil,lerobot,zenoh,mink,playwright,datasets,ray,pylibfranka,franky,ruckig,zmq,rospy,rosgraph"


def readme_rows() -> list[str]:
    """The backticked commands of the README's ``## Commands`` table, one per row."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(robolearn [^`]+)`", section, flags=re.M)


def row_key(row: str) -> str:
    """``robolearn collect --env ... --teleop keyboard ...`` -> ``collect --teleop`` (likewise ``--expert``);
    else the subcommand."""
    words = row.split()
    mode = next((w for w in ("--teleop", "--expert") if w in words), None)
    return f"{words[1]} {mode}" if mode else words[1]


def robolearn(*args: str, stdin: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests" / "core_install"), "ROBOLEARN_HIDE_MODULES": HIDDEN,
           "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "robolearn.cli", *args]
    res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert "Traceback" not in res.stderr, f"{' '.join(args)}:\n{res.stderr[-3000:]}"
    if res.returncode != 0:
        last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""
        assert res.returncode == 2 and last.startswith(f"robolearn {args[0]}: error: "), (
            f"{' '.join(args)} exited {res.returncode}:\n{res.stderr[-3000:]}"
        )
    return res


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """These commands need no extra: they must succeed on a core install."""
    assert res.returncode == 0, f"{res.args}:\n{res.stderr[-3000:]}"
    return res


def reach_expert(env):
    """A user's scripted policy for ``collect --expert``: servo the TCP onto franka-reach's ball."""
    import numpy as np

    def policy(obs: dict) -> np.ndarray:
        tcp, ball = obs["observation.state"][15:18], obs["observation.environment_state"][:3]
        action = np.zeros(env.action_space.shape, dtype=np.float32)
        action[:3] = np.clip((ball - tcp) / 0.05, -1.0, 1.0)
        return action

    return policy


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, Path]:
    """A tiny dataset and a tiny trained run, shared by the rows that need them."""
    tmp = tmp_path_factory.mktemp("documented")
    ds = tmp / "ds"
    ok(robolearn("collect", "--env", "franka-lift", "--episodes", "3", "--out", str(ds)))
    run = tmp / "run"
    ok(robolearn("train", "--policy", "flow", "--dataset", str(ds), "--out", str(run), "--set", "steps=4"))
    return {"tmp": tmp, "dataset": ds, "run": run}


def run_quickstart(w):
    rep = w["tmp"] / "report"
    ok(robolearn("quickstart", "--episodes", "3", "--train-steps", "4", "--eval-episodes", "2",
                 "--out", str(w["tmp"] / "qs"), "--report", str(rep), "--threads", "1"))  # fmt: skip
    assert (rep / "index.html").is_file()


def run_collect(w):
    out, js = w["tmp"] / "cams", w["tmp"] / "collect.json"
    ok(robolearn("collect", "--env", "franka-reach", "--episodes", "2", "--out", str(out), "--cameras", "front,wrist",
                 "--expert-noise", "0.2", "--workers", "2", "--json", str(js)))  # fmt: skip
    assert json.loads(js.read_text())["episodes"] == 2


def run_collect_teleop(w):
    out = w["tmp"] / "teleop"
    res = ok(robolearn("collect", "--env", "franka-lift", "--teleop", "keyboard", "--out", str(out),
                       stdin="wwwwaaff \n\x1b"))  # fmt: skip
    assert "collected 1 episodes" in res.stdout


def run_collect_expert(w):
    out = w["tmp"] / "own_expert"
    ok(robolearn("collect", "--env", "franka-reach", "--expert", "tests.test_documented_commands:reach_expert",
                 "--episodes", "2", "--out", str(out)))  # fmt: skip
    assert (out / "meta" / "info.json").is_file()
    # robosuite is an extra: on a core install the README's example names it in one line.
    res = robolearn("collect", "--env", "robosuite-lift", "--expert", "tests.envs.user_experts:RobosuiteLiftExpert",
                    "--episodes", "1", "--out", str(w["tmp"] / "rs"))  # fmt: skip
    assert res.returncode == 2 and "robosuite extra" in res.stderr
    assert not (w["tmp"] / "rs").exists()


def run_envs(w):
    res = ok(robolearn("envs"))
    assert "franka-lift" in res.stdout and "cube_x" in res.stdout
    js = w["tmp"] / "envs.json"
    ok(robolearn("envs", "--json", str(js)))
    assert json.loads(js.read_text())
    res = ok(robolearn("envs", "robosuite-lift"))
    assert "not installed" in res.stdout and "robosuite" in res.stdout


def run_convert(w):
    zarr, back, h5 = w["tmp"] / "d.zarr", w["tmp"] / "back", w["tmp"] / "d.hdf5"
    ok(robolearn("convert", str(w["dataset"]), str(zarr), "--to", "zarr"))
    ok(robolearn("convert", str(zarr), str(back), "--to", "lerobot"))
    ok(robolearn("convert", str(w["dataset"]), str(h5), "--to", "robomimic"))
    assert (back / "meta" / "info.json").is_file() and h5.stat().st_size > 0


def run_inspect(w):
    res = ok(robolearn("inspect", str(w["dataset"])))
    assert "episodes" in res.stdout
    h5 = w["tmp"] / "inspect.hdf5"
    ok(robolearn("convert", str(w["dataset"]), str(h5), "--to", "robomimic", "--overwrite"))
    res = ok(robolearn("inspect", str(h5)))
    assert "layout      robomimic" in res.stdout and "mask" in res.stdout


def run_train(w):
    out = w["tmp"] / "run_preset"
    ok(robolearn("train", "--policy", "diffusion", "--dataset", str(w["dataset"]), "--out", str(out),
                 "--preset", str(ROOT / "policies" / "diffusion_state.yaml"), "--set", "steps=3"))  # fmt: skip
    ok(robolearn("train", "--dataset", str(w["dataset"]), "--out", str(out), "--resume",
                 "--preset", str(ROOT / "policies" / "diffusion_state.yaml"), "--set", "steps=5"))  # fmt: skip
    assert (out / "model.safetensors").is_file()


def run_eval(w):
    js = w["tmp"] / "eval.json"
    ok(robolearn("eval", "--checkpoint", str(w["run"]), "--env", "franka-lift", "--episodes", "2",
                 "--json", str(js), "--video", str(w["tmp"] / "videos"), "--video-episodes", "1"))  # fmt: skip
    assert json.loads(js.read_text())["episodes"] == 2


def run_merge(w):
    """The language suite end to end: collect it, merge two collections, train on both, eval per task."""
    a, b, merged, run = (w["tmp"] / n for n in ("lang_a", "lang_b", "lang_merged", "lang_run"))
    ok(robolearn("collect", "--env", "franka-language", "--episodes", "1", "--out", str(a)))
    ok(robolearn("collect", "--env", "franka-lift-d2,franka-push-d2", "--episodes", "1", "--seed", "5",
                 "--out", str(b)))  # fmt: skip
    js = w["tmp"] / "merge.json"
    ok(robolearn("merge", str(a), str(b), str(merged), "--json", str(js)))
    assert json.loads(js.read_text())["episodes"] == 6
    ok(robolearn("train", "--dataset", str(a), "--dataset", str(b), "--out", str(run), "--set", "steps=2"))
    ev = w["tmp"] / "suite_eval.json"
    ok(robolearn("eval", "--checkpoint", str(run), "--episodes", "1", "--hold-steps", "0",
                 "--set", "max_episode_steps=5", "--json", str(ev)))  # fmt: skip
    assert sorted(json.loads(ev.read_text())["tasks"]) == sorted(
        ["franka-lift-d2", "franka-push-d2", "franka-pick-place-d2", "franka-stack-d2"]
    )


def run_bench(w):
    for name in ("sim", "data", "infer", "deploy", "rl"):
        res = ok(robolearn("bench", name, "--quick", "--json", str(w["tmp"] / f"bench_{name}.json")))
        assert json.loads((w["tmp"] / f"bench_{name}.json").read_text())
        if name == "sim":  # robosuite is hidden: the peer is named as missing in one line
            assert "peer robosuite: not installed" in res.stdout


def run_finetune(w):
    out = w["tmp"] / "finetuned"
    ok(robolearn("finetune", "reinflow", "--checkpoint", str(w["run"]), "--out", str(out), "--set", "iterations=1",
                 "--set", "n_steps=2", "--set", "num_envs=2", "--set", "ppo.minibatch_size=4"))  # fmt: skip
    ok(robolearn("eval", "--checkpoint", str(out), "--episodes", "1", "--hold-steps", "0"))


def _critic(w) -> Path:
    """A critic trained 3 steps on the demos plus 2 recorded rollouts of the tiny run (built once)."""
    if "critic" not in w:
        rec, critic = w["tmp"] / "rollouts", w["tmp"] / "critic"
        ok(robolearn("eval", "--checkpoint", str(w["run"]), "--episodes", "2", "--hold-steps", "2",
                     "--seed", "2000000", "--record", str(rec)))  # fmt: skip
        ok(robolearn("train-critic", "--dataset", str(w["dataset"]), "--dataset", str(rec), "--out", str(critic),
                     "--set", "steps=3", "--set", "batch_size=16"))  # fmt: skip
        w["critic"] = critic
    return w["critic"]


def run_train_critic(w):
    critic = _critic(w)
    assert sorted(p.name for p in critic.iterdir()) == ["config.json", "model.safetensors", "norm_stats.json"]


def run_steer(w):
    js = w["tmp"] / "steer.json"
    ok(robolearn("steer", "--checkpoint", str(w["run"]), "--critic", str(_critic(w)), "--samples", "1,4",
                 "--episodes", "1", "--hold-steps", "0", "--json", str(js)))  # fmt: skip
    assert set(json.loads(js.read_text())["runs"]) == {"unsteered", "K=1", "K=4"}


def run_compose(w):
    js = w["tmp"] / "compose.json"
    ok(robolearn("compose", "--checkpoint", str(w["run"]), "--checkpoint", str(w["run"]), "--weights", "0,0.5,1",
                 "--env", "franka-lift", "--episodes", "1", "--hold-steps", "0", "--json", str(js)))  # fmt: skip
    assert [r["weight"] for r in json.loads(js.read_text())["runs"]] == [0.0, 0.5, 1.0]
    res = robolearn("compose", "--checkpoint", str(w["run"]), "--checkpoint", str(w["run"]), "--weights", "1.5",
                    "--episodes", "1")  # fmt: skip
    assert res.returncode == 2 and "--weights" in res.stderr.strip().splitlines()[-1], res.stderr[-2000:]


def run_serve_and_run(w):
    """``serve`` in the background on a free port, ``run`` against it, both as a user starts them."""
    import signal
    import urllib.request

    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests" / "core_install"), "ROBOLEARN_HIDE_MODULES": HIDDEN,
           "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "robolearn.cli", "serve", "--checkpoint", str(w["run"]),
                               "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env, cwd=ROOT)  # fmt: skip
    try:
        url = ""
        while not url:
            line = server.stdout.readline()
            assert line, "robolearn serve exited before listening"
            url = next((tok for tok in line.split() if tok.startswith("ws://")), "")
        port = int(url.rsplit(":", 1)[1].strip("/"))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as reply:
            assert reply.status == 200
        here = Path(tempfile.mkdtemp(dir=w["tmp"]))  # serve and run both come here
        rec, js = here / "recorded", here / "run.json"
        ok(robolearn("run", "--server", url, "--robot", "sim", "--task", "franka-lift", "--episodes", "1",
                     "--record", str(rec), "--json", str(js), "--rt-priority", "0"))  # fmt: skip
        assert json.loads(js.read_text()) and LeRobotReader(rec).num_episodes == 1
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def run_franka_driver(w):
    # Needs the franka extra (pylibfranka, ruckig) and an arm: on a core install, one line naming it.
    # The driver against franky-sim: tests/deploy/franka.
    res = robolearn("franka-driver", "--robot-ip", "127.0.0.1", "--bridge", "zmq", "--duration", "1")
    assert res.returncode == 2 and "franka extra" in res.stderr.strip().splitlines()[-1], res.stderr[-2000:]


def run_sim_robot(w):
    # The bridges need their middleware (extras zmq / zenoh, Debian's rospy): on a core install each
    # names what is missing in one line. The twin over real middleware: tests/deploy/bridges.
    for bridge, extra in (("zmq", "zmq extra"), ("zenoh", "zenoh extra"), ("ros1", "ros1 extra")):
        res = robolearn("sim-robot", "--task", "franka-lift", "--bridge", bridge, "--duration", "1")
        assert res.returncode == 2 and extra in res.stderr.strip().splitlines()[-1], res.stderr[-2000:]
    res = robolearn("run", "--server", "ws://127.0.0.1:1", "--robot", "zmq", "--connect-timeout", "0.3")
    assert res.returncode == 2, res.stderr[-2000:]


def run_run_teleop(w):
    res = robolearn(
        "run", "--robot", "zmq", "--teleop", "keyboard", "--record", str(w["tmp"] / "tele"), stdin="\x1b"
    )
    assert res.returncode == 2 and "zmq extra" in res.stderr.strip().splitlines()[-1], res.stderr[-2000:]
    assert not (w["tmp"] / "tele").exists()


RUNS = {
    "quickstart": run_quickstart,
    "collect": run_collect,
    "collect --teleop": run_collect_teleop,
    "collect --expert": run_collect_expert,
    "envs": run_envs,
    "convert": run_convert,
    "merge": run_merge,
    "inspect": run_inspect,
    "train": run_train,
    "eval": run_eval,
    "train-critic": run_train_critic,
    "steer": run_steer,
    "compose": run_compose,
    "finetune": run_finetune,
    "bench": run_bench,
    "serve": run_serve_and_run,
    "run": run_serve_and_run,
    "franka-driver": run_franka_driver,
    "sim-robot": run_sim_robot,
    "run --teleop": run_run_teleop,
}


def test_every_documented_command_has_a_tiny_run():
    rows = [row_key(r) for r in readme_rows()]
    assert rows, "README.md has no ## Commands table"
    assert sorted(set(rows)) == sorted(RUNS), "README command table and RUNS differ"


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(RUNS))
def test_documented_command_runs_on_a_core_install(key, work):
    RUNS[key](work)
