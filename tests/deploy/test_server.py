"""The policy server: metadata, replies, /healthz, API key, bad frames, batching, a real checkpoint, the CLI."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from robolearn.config import ConfigError
from robolearn.deploy import protocol
from robolearn.deploy.keymap import DEFAULT_KEYS, KeyMap, SiteConfig, load_site
from robolearn.deploy.server import PolicyServer
from robolearn.deploy.wire import packb, unpackb

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def _client(url: str, api_key: str | None = None):
    """A connection as openpi's client opens it, and the metadata frame it receives first."""
    headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
    with connect(url, compression=None, max_size=None, additional_headers=headers, open_timeout=30) as ws:
        yield ws, unpackb(ws.recv(timeout=30))


def _ask(ws, obs):
    ws.send(packb(obs))
    reply = ws.recv(timeout=60)
    return reply if isinstance(reply, str) else unpackb(reply)


def _obs(state0=1.0, state_dim=4, image=(8, 6, 3)):
    obs = {"observation/state": np.full(state_dim, state0, np.float32)}
    if image is not None:
        obs["observation/image"] = np.zeros(image, np.uint8)
    return obs


@pytest.fixture
def served(fake_policy_factory):
    """``start(**server_kwargs) -> (server, policy)`` for a fake policy with a state and a (3, 8, 6) image."""
    servers = []

    def start(policy=None, **kwargs):
        policy = policy or fake_policy_factory(image_shape=(3, 8, 6))
        server = PolicyServer(policy, **kwargs).start()
        servers.append(server)
        return server, policy

    yield start
    for server in servers:
        server.stop()


def test_metadata_frame_comes_first_and_declares_the_wire(served):
    server, _ = served(site="franka-sim", fps=20)
    with _client(server.url) as (_, md):
        pass
    assert md == {
        "protocol": "robolearn-openpi/1",
        "policy_type": "fake",
        "site": "franka-sim",
        "features": {
            "observation/state": {"shape": [4], "dtype": "float32"},
            "observation/image": {"shape": [8, 6, 3], "dtype": "uint8"},  # openpi's (H, W, 3)
        },
        "n_obs_steps": 2,
        "action_horizon": 9,  # H = 10 minus the one past step of the 2-frame window
        "action_dim": 3,
        "n_action_steps": 4,
        "fps": 20.0,
        "supports_rtc": False,
        "prompt_key": "prompt",
    }
    assert server.host == "127.0.0.1" and server.url == f"ws://127.0.0.1:{server.port}"


def test_infer_single_frame_and_window(served):
    server, policy = served()
    with _client(server.url) as (ws, md):
        _check_infer(ws, md, policy)


def _check_infer(ws, md, policy):
    reply = _ask(ws, {**_obs(2.5), "prompt": "lift the cube", "seq": 7, "obs_timestamp": 12.5})
    actions = reply["actions"]
    assert actions.shape == (md["action_horizon"], md["action_dim"]) and actions.dtype == np.float32
    # One frame stands for a window of copies: newest and oldest state are both 2.5.
    np.testing.assert_array_equal(actions[:, 0], 2.5)
    np.testing.assert_array_equal(actions[:, 1], 2.5)
    np.testing.assert_array_equal(actions[:, 2], np.arange(1, 10))  # the past step is cut off
    assert reply["seq"] == 7 and reply["obs_timestamp"] == 12.5
    timing = reply["server_timing"]
    assert {"infer_ms", "queue_ms", "decode_ms", "batch_size", "server_ms"} <= set(timing)
    assert all(type(v) is float for v in timing.values()) and timing["batch_size"] == 1.0
    # The ActionChunkBroker contract: every ndarray has H first; other fields are plain scalars.
    assert all(v.shape[0] == md["action_horizon"] for v in reply.values() if isinstance(v, np.ndarray))
    assert policy.shapes[-1] == {"observation.state": (1, 2, 4), "observation.images.front": (1, 2, 3, 8, 6)}

    window = {
        "observation/state": np.array([[1.0] * 4, [3.0] * 4]),
        "observation/image": np.zeros((2, 8, 6, 3), np.uint8),
    }
    reply = _ask(ws, window)
    np.testing.assert_array_equal(reply["actions"][:, 0], 3.0)  # newest frame last
    np.testing.assert_array_equal(reply["actions"][:, 1], 1.0)
    assert "seq" not in reply and "prev_total_ms" in reply["server_timing"]


def test_healthz_and_api_key(served):
    server, _ = served(api_key="s3cret")
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as resp:
        assert resp.status == 200 and resp.read() == b"ok\n"
    with _client(server.url, api_key="s3cret") as (ws, _):
        assert _ask(ws, _obs())["actions"].shape == (9, 3)
    for key in (None, "wrong"):
        with pytest.raises(InvalidStatus) as info, _client(server.url, api_key=key):
            pass
        assert info.value.response.status_code == 401
    with pytest.raises(urllib.error.HTTPError) as info:  # a plain HTTP GET of the websocket path
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=10)
    assert info.value.code == 401
    info.value.close()  # an open response socket would hold the server's close for its 10 s timeout


BAD_FRAMES = [
    ({"observation/image": np.zeros((8, 6, 3), np.uint8)}, "'observation/state': missing"),
    ({**_obs(), "observation/state": np.zeros(5, np.float32)}, "'observation/state': expected an ndarray of shape [4]"),
    ({**_obs(), "observation/state": [1.0, 2.0, 3.0, 4.0]}, "'observation/state': expected an ndarray"),
    ({**_obs(), "observation/state": np.array([1, np.nan, 0, 0])}, "'observation/state': holds NaN"),
    ({**_obs(), "observation/state": np.array([1e300, 0, 0, 0])}, "'observation/state': holds NaN or inf"),
    ({**_obs(), "observation/state": np.array(["a", "b", "c", "d"])}, "'observation/state': expected a float"),
    ({**_obs(), "observation/image": np.zeros((8, 6, 3), np.float32)}, "'observation/image': expected dtype uint8"),
    ({**_obs(), "observation/image": np.zeros((6, 8, 3), np.uint8)}, "'observation/image': expected an ndarray of shape [8, 6, 3]"),
    ({**_obs(), "observation/bogus": 1}, "'observation/bogus': unknown key"),
    ({**_obs(), "prompt": 3}, "'prompt': expected a str"),
    ({**_obs(), "seq": "one"}, "'seq': expected an int"),
    ({**_obs(), "inference_delay": 99}, "'inference_delay': expected an int in [0, 9]"),
    ({**_obs(), "prev_actions": np.zeros((3, 2), np.float32)}, "'prev_actions': expected a float array of shape [n, 3]"),
    ({**_obs(), "rtc": True, "prev_actions": np.zeros((3, 3)), "inference_delay": 1}, "'rtc': this server's policy (fake) is not a flow policy"),
    ([1, 2, 3], "expected a map"),
]  # fmt: skip


def test_bad_frames_get_an_error_naming_the_key_and_the_server_keeps_serving(served):
    server, _ = served()
    with _client(server.url) as (ws, _), _client(server.url) as (other, _):
        _check_bad_frames(ws, other)


def _check_bad_frames(ws, other):
    for frame, message in BAD_FRAMES:
        reply = _ask(ws, frame)
        assert isinstance(reply, str) and message in reply, (message, reply)
        assert reply.startswith("robolearn serve: bad request: ")
    raw = packb(_obs())
    for blob, message in [
        (raw[:-3], "malformed msgpack"),
        (raw + b"\x00", "malformed"),
        (b"\xc1", "malformed"),
    ]:
        ws.send(blob)
        assert message in ws.recv(timeout=30)
    ws.send("a text frame")
    assert "expected a binary msgpack frame" in ws.recv(timeout=30)
    obj = b"\x81\xa1x\x84\xc4\x0b__ndarray__\xc3\xc4\x04data\xc4\x01\x00\xc4\x05dtype\xa2|O\xc4\x05shape\x91\x01"
    ws.send(obj)  # an object-dtype array: refused, never unpickled
    assert "'x': ndarray: object dtype '|O' is not allowed" in ws.recv(timeout=30)
    # The same connection and another client are still served.
    assert _ask(ws, _obs(4.0))["actions"][0, 0] == 4.0
    assert _ask(other, _obs(5.0))["actions"][0, 0] == 5.0


def test_policy_failure_answers_its_request_and_the_server_goes_on(served, fake_policy_factory):
    server, _ = served(fake_policy_factory(image_shape=(3, 8, 6), fail_value=-1.0))
    with _client(server.url) as (ws, _):
        reply = _ask(ws, _obs(-1.0))
        assert (
            isinstance(reply, str)
            and "policy call failed: RuntimeError: the fake policy was asked to fail" in reply
        )
        assert _ask(ws, _obs(1.0))["actions"][0, 0] == 1.0


def test_warm_up_calls_the_policy_once_on_a_blank_window_and_raises_on_failure(fake_policy_factory):
    policy = fake_policy_factory(image_shape=(3, 8, 6))
    server = PolicyServer(policy)
    try:
        took = server.warm_up()
        assert set(took) == {"predict"} and took["predict"] > 0  # the fake has no velocity field: no RTC
        assert policy.calls == [1] and server.calls == 0
        assert policy.shapes == [
            {"observation.state": (1, 2, 4), "observation.images.front": (1, 2, 3, 8, 6)}
        ]
    finally:
        server.stop()
    failing = PolicyServer(fake_policy_factory(fail_value=0.0))  # the blank window's state is all zeros
    with pytest.raises(RuntimeError, match="warm-up .predict.*the fake policy was asked to fail"):
        failing.warm_up()
    failing.stop()


def test_two_clients_are_batched_into_one_policy_call(served, fake_policy_factory):
    # A long window: the batch goes as soon as both connected clients are waiting, never by timeout.
    server, policy = served(fake_policy_factory(image_shape=(3, 8, 6)), batch_window_ms=20_000)
    replies = {}

    def ask(name, ws, value):
        replies[name] = _ask(ws, _obs(value))

    with _client(server.url) as (a, _), _client(server.url) as (b, _):
        threads = [
            threading.Thread(target=ask, args=(n, ws, v)) for n, ws, v in (("a", a, 1.0), ("b", b, 2.0))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert policy.calls == [2] and server.calls == 1
    assert replies["a"]["actions"][0, 0] == 1.0 and replies["b"]["actions"][0, 0] == 2.0  # each its own
    assert replies["a"]["server_timing"]["batch_size"] == replies["b"]["server_timing"]["batch_size"] == 2.0


def test_the_loop_keeps_answering_while_the_policy_runs(served, fake_policy_factory):
    gate = threading.Event()
    server, policy = served(fake_policy_factory(image_shape=(3, 8, 6), gate=gate), batch_window_ms=0)
    with _client(server.url) as (slow, _):
        slow.send(packb(_obs(1.0)))  # held inside the policy call until the gate opens
        with _client(server.url) as (other, md):  # a new client still gets its metadata ...
            assert md["action_horizon"] == 9
            assert "missing" in _ask(other, {})  # ... and its error replies
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as resp:
            assert resp.status == 200
        gate.set()
        assert unpackb(slow.recv(timeout=60))["actions"][0, 0] == 1.0


def test_a_busy_port_is_an_error_at_start(served, fake_policy_factory):
    server, _ = served()
    with pytest.raises(OSError):
        PolicyServer(fake_policy_factory(), port=server.port).start()


def test_parse_request_keeps_site_keys_the_policy_does_not_use(fake_policy_factory):
    from robolearn.deploy.server import spec_for_policy

    spec = spec_for_policy(fake_policy_factory(), KeyMap())  # state only
    assert "observation/image" in spec.ignored_keys and "observation/wrist_image" in spec.ignored_keys
    req = protocol.parse_request({**_obs(), "observation/wrist_image": np.zeros((2, 2, 3), np.uint8)}, spec)
    assert list(req.windows) == ["observation.state"] and req.windows["observation.state"].shape == (2, 4)
    with pytest.raises(protocol.ProtocolError, match="mixes single frames"):
        spec2 = spec_for_policy(fake_policy_factory(image_shape=(3, 8, 6)), KeyMap())
        protocol.parse_request(
            {"observation/state": np.zeros((2, 4)), "observation/image": np.zeros((8, 6, 3), np.uint8)}, spec2
        )


def test_site_config_loads_strictly(tmp_path):
    site = load_site()
    assert site.keys == DEFAULT_KEYS and site.name == "franka-sim" and site.batch_window_ms == 2.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkeyz: {}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'keyz'"):
        load_site(bad)
    with pytest.raises(ConfigError, match="both map to 'observation.state'"):
        SiteConfig(keys={"a": "observation.state", "b": "observation.state"})
    renamed = KeyMap({"cam/top": "observation.images.front"})
    assert renamed.to_wire("observation.images.front") == "cam/top"
    assert renamed.to_wire("observation.state") == "observation.state"  # unnamed: its own name


def test_real_flow_checkpoint_plain_and_rtc(tiny_flow_run):
    from robolearn.policies import load_policy

    policy = load_policy(tiny_flow_run)
    expected = {
        KeyMap().to_wire(k): {"shape": list(v), "dtype": "float32"} for k, v in policy.input_features.items()
    }
    assert "observation/state" in expected
    server = PolicyServer(policy, KeyMap(), batch_window_ms=0)
    assert set(server.warm_up()) == {"predict", "rtc"} and server.calls == 0
    with server, _client(server.url) as (ws, md):
        assert md["policy_type"] == "flow" and md["supports_rtc"] is True and md["features"] == expected
        h, da = md["action_horizon"], md["action_dim"]
        assert (h, da) == (policy.config.horizon - policy.config.n_obs_steps + 1, policy.action_dim)
        obs = {k: np.zeros(v["shape"], np.float32) for k, v in md["features"].items()}
        plain = _ask(ws, obs)
        assert plain["actions"].shape == (h, da) and np.isfinite(plain["actions"]).all()
        prev = plain["actions"][4:]
        rtc = _ask(ws, {**obs, "rtc": True, "prev_actions": prev, "inference_delay": 2})
        assert not isinstance(rtc, str), rtc
        assert rtc["actions"].shape == (h, da) and np.isfinite(rtc["actions"]).all()


def _serve_cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "robolearn.cli", "serve", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _url_of(proc: subprocess.Popen) -> str:
    """The URL the server prints; the info line before it must say the policy warmed up (both paths)."""
    info = ""
    for line in proc.stdout:
        if line.startswith("robolearn serve: flow policy"):
            info = line
        if "listening on " in line:
            assert "warm-up predict" in info and " ms, rtc " in info, info
            return line.split("listening on ", 1)[1].split()[0]
    raise AssertionError(f"robolearn serve printed no URL: {proc.stderr.read()[-2000:]}")


def test_serve_command_runs_and_ctrl_c_stops_it_cleanly(tiny_flow_run):
    proc = _serve_cli("--checkpoint", str(tiny_flow_run), "--port", "0", "--quiet")
    try:
        url = _url_of(proc)
        assert url.startswith("ws://127.0.0.1:")
        with _client(url) as (ws, md):
            assert md["fps"] == 20.0 and md["site"] == "franka-sim"
            obs = {k: np.zeros(v["shape"], np.float32) for k, v in md["features"].items()}
            assert _ask(ws, obs)["actions"].shape == (md["action_horizon"], md["action_dim"])
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (
        proc.returncode == 130
        and "Traceback" not in err
        and err.strip().endswith("robolearn serve: interrupted")
    )


def test_serve_command_bad_input_is_one_line(tmp_path):
    bad_site = tmp_path / "site.yaml"
    bad_site.write_text("batch_window: 3\n")
    for args, message in [
        (["--checkpoint", str(tmp_path / "missing")], "missing"),
        (["--checkpoint", str(tmp_path), "--site", str(bad_site)], "unknown key 'batch_window'"),
    ]:
        res = subprocess.run([sys.executable, "-m", "robolearn.cli", "serve", *args], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and message in lines[0], res.stderr
