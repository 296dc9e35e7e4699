"""The real client: ``openpi-client`` 0.1.2 from PyPI drives ``robolearn serve`` unchanged.

openpi-client pins ``numpy<2`` (robolearn needs numpy 2) and misses its ``typing_extensions``
dependency, so it runs from its own venv, created once and cached under
``~/.cache/robolearn/openpi-client-0.1.2-venv``. The server is the real command in a subprocess
on 127.0.0.1, stopped by PID (SIGTERM). Without a reachable package index the test is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSION = "0.1.2"
REQUIREMENTS = [f"openpi-client=={VERSION}", "typing_extensions"]
NETWORK_ERRORS = ("NewConnectionError", "Network is unreachable", "Temporary failure in name resolution",
                  "ProxyError", "ConnectTimeoutError", "Max retries exceeded", "No matching distribution")  # fmt: skip

pytestmark = pytest.mark.slow

CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from openpi_client import action_chunk_broker, websocket_client_policy

    url, key = sys.argv[1], sys.argv[2]
    out = {"numpy": np.__version__}
    policy = websocket_client_policy.WebsocketClientPolicy(host=url, api_key=key)
    md = policy.get_server_metadata()
    out["metadata"] = md
    obs = {k: np.zeros(v["shape"], dtype=v["dtype"]) for k, v in md["features"].items()}
    obs[md["prompt_key"]] = "lift the cube"
    reply = policy.infer(obs)
    out["actions_shape"] = list(reply["actions"].shape)
    out["actions_finite"] = bool(np.isfinite(reply["actions"]).all())
    out["timing"] = {k: type(v).__name__ for k, v in reply["server_timing"].items()}

    replies = []

    class Recorder:  # the broker's inner policy: remembers each whole chunk the server sent
        def infer(self, o):
            replies.append(policy.infer(o))
            return replies[-1]

        def reset(self):
            pass

    h = md["action_horizon"]
    broker = action_chunk_broker.ActionChunkBroker(Recorder(), action_horizon=h)
    steps = [broker.infer(obs) for _ in range(h + 2)]
    out["broker_calls"] = len(replies)
    out["broker_shapes"] = sorted({tuple(s["actions"].shape) for s in steps})
    out["broker_plays_the_chunk"] = bool(
        all(np.array_equal(steps[i]["actions"], replies[0]["actions"][i]) for i in range(h))
        and np.array_equal(steps[h]["actions"], replies[1]["actions"][0])
    )

    bad = dict(obs)
    bad[next(iter(md["features"]))] = np.zeros(3, np.float32)
    try:
        policy.infer(bad)
        out["bad_error"] = None
    except RuntimeError as exc:
        out["bad_error"] = str(exc)
    out["after_bad_shape"] = list(policy.infer(obs)["actions"].shape)

    try:
        websocket_client_policy.WebsocketClientPolicy(host=url, api_key="wrong-key")
        out["wrong_key"] = "accepted"
    except Exception as exc:
        out["wrong_key"] = type(exc).__name__ + ": " + str(exc)
    print("RESULT " + json.dumps(out))
    """
)


def _client_venv() -> Path:
    """The cached venv with openpi-client; built (atomically: temp folder, then rename) if missing."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robolearn"
    venv = cache / f"openpi-client-{VERSION}-venv"
    python = venv / "bin" / "python"
    if (venv / ".complete").is_file() and python.exists():
        return venv
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".openpi-client-{VERSION}-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True, timeout=300)
        res = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                              "--timeout", "30", *REQUIREMENTS], capture_output=True, text=True, timeout=900)  # fmt: skip
        if res.returncode != 0:
            tail = (res.stdout + res.stderr).strip().splitlines()[-1:] or ["(no output)"]
            if any(e in res.stdout + res.stderr for e in NETWORK_ERRORS):
                pytest.skip(f"pip cannot reach the package index to install openpi-client: {tail[0]}")
            raise AssertionError(f"pip install {' '.join(REQUIREMENTS)} failed:\n{res.stderr[-3000:]}")
        (tmp / ".complete").write_text(" ".join(REQUIREMENTS) + "\n")
        if venv.exists():
            shutil.rmtree(venv)
        tmp.rename(venv)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # Only `bin/python -m ...` is used: the venv's entry-point scripts name the temporary path.
    return venv


def test_openpi_client_drives_robolearn_serve(tiny_flow_run, tmp_path):
    venv = _client_venv()
    python = venv / "bin" / "python"
    check = subprocess.run([str(python), "-c", "import openpi_client, numpy; print(numpy.__version__)"],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert check.returncode == 0 and check.stdout.startswith("1."), check.stderr

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "robolearn.cli", "serve", "--checkpoint", str(tiny_flow_run), "--port", "0",
           "--api-key", "k3y", "--quiet"]  # fmt: skip
    server = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        url = next(
            (
                line.split("listening on ", 1)[1].split()[0]
                for line in server.stdout
                if "listening on " in line
            ),
            None,
        )
        assert url is not None, server.stderr.read()[-2000:]
        port = url.rsplit(":", 1)[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            assert resp.status == 200 and resp.read() == b"ok\n"
        script = tmp_path / "client.py"
        script.write_text(CLIENT_SCRIPT)
        res = subprocess.run([str(python), str(script), url, "k3y"], capture_output=True, text=True, timeout=300,
                             env={"PATH": os.environ.get("PATH", ""), "HOME": str(Path.home())})  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
        out = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("RESULT "))[7:])
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, err = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode == 0 and "Traceback" not in err, err[-3000:]

    md = out["metadata"]
    h, da = md["action_horizon"], md["action_dim"]
    assert out["numpy"].startswith("1.")
    assert md["protocol"] == "robolearn-openpi/1" and md["policy_type"] == "flow" and md["fps"] == 20.0
    assert "observation/state" in md["features"]
    assert out["actions_shape"] == [h, da] and out["actions_finite"]
    assert set(out["timing"].values()) == {"float"} and "infer_ms" in out["timing"]
    assert out["broker_shapes"] == [[da]] and out["broker_calls"] == 2  # one action per step, H steps a chunk
    assert out["broker_plays_the_chunk"]
    first = next(iter(md["features"]))
    assert out["bad_error"] is not None and f"'{first}': expected an ndarray of shape" in out["bad_error"]
    assert out["after_bad_shape"] == [h, da]  # the connection survived the error reply
    assert "401" in out["wrong_key"]
