"""Fuzzing the policy server: 10,000 hostile frames never crash it or stop it serving another client.

Frames: observations with wrong types, wrong and huge shapes, refused and unknown dtypes, NaN and
inf, hand-made numpy-extension maps whose sizes lie, truncated and bit-flipped msgpack, random
bytes and text frames. Each gets an error reply (a str) or, when it happens to be valid, a proper
reply; the same connection stays open. A cheap fake policy keeps it fast.
"""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from robolearn.deploy.server import PolicyServer
from robolearn.deploy.wire import packb, unpackb

KEYS = ["observation/state", "observation/image", "observation/wrist_image", "prompt", "seq", "obs_timestamp",
        "inference_delay", "prev_actions", "rtc"]  # fmt: skip
DTYPES = [
    "|b1",
    "|u1",
    "|i1",
    "<i4",
    "<i8",
    "<u8",
    "<f2",
    "<f4",
    "<f8",
    ">f8",
    "<U3",
    "|S2",
    "<m8[s]",
    "<M8[D]",
]
BAD_DTYPES = ["|O", "|V4", "<c8", "<c16", "<i4,<f4", "(2,)<f4", "zz", "", "<f3", "O8"]
INTS = st.integers(-(2**63), 2**64 - 1)  # msgpack's range
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, st.text(max_size=8),
                    st.binary(max_size=8))  # fmt: skip


@st.composite
def arrays(draw):
    """Real arrays: often the declared shapes (4,), (2, 4), (8, 6, 3), else anything small."""
    shape = draw(st.one_of(st.sampled_from([(4,), (2, 4), (8, 6, 3), (2, 8, 6, 3), (3,), (), (0,), (5, 3)]),
                           st.lists(st.integers(0, 4), max_size=4).map(tuple)))  # fmt: skip
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    n = math.prod(shape)
    if dtype.kind == "f":
        values = draw(st.lists(FLOATS, min_size=n, max_size=n))
        with np.errstate(over="ignore", invalid="ignore"):
            return np.array(values, dtype=np.float64).astype(dtype).reshape(shape)
    raw = draw(st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize))
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


@st.composite
def fake_array_maps(draw):
    """Hand-made ``__ndarray__`` / ``__npgeneric__`` maps that lie: huge shapes, wrong sizes, bad dtypes."""
    dtype = draw(st.one_of(st.sampled_from(DTYPES + BAD_DTYPES), st.text(max_size=6), INTS, st.none()))
    if draw(st.booleans()):
        return {b"__npgeneric__": True, b"data": draw(SCALARS), b"dtype": dtype}
    shape = draw(st.one_of(st.lists(st.integers(-3, 2**62), max_size=6), st.lists(st.integers(0, 2**20), max_size=3),
                           st.just([2**31, 2**31, 2**31]), SCALARS))  # fmt: skip
    data = draw(st.one_of(st.binary(max_size=64), st.text(max_size=4), INTS))
    out = {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}
    for key in draw(st.lists(st.sampled_from([b"data", b"dtype", b"shape"]), max_size=2)):
        out.pop(key, None)
    return out


VALUES = st.recursive(
    st.one_of(SCALARS, arrays(), fake_array_maps()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def observations(draw):
    """A near-valid observation with some keys dropped, replaced or added."""
    obs = {"observation/state": np.ones(4, np.float32), "observation/image": np.zeros((8, 6, 3), np.uint8)}
    for key in draw(st.lists(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), max_size=4)):
        obs[key] = draw(VALUES)
    for key in draw(st.lists(st.sampled_from(list(obs)), max_size=2)):
        obs.pop(key, None)
    return obs


def _pack_raw(obj) -> bytes:
    try:
        return packb(obj)
    except Exception:  # noqa: BLE001  (hand-made maps go out through plain msgpack)
        return msgpack.packb(obj, use_bin_type=True, default=lambda o: o.tobytes())


@st.composite
def frame_sets(draw):
    """Four frames per example: a packed observation (or any value), a truncated and a bit-flipped copy
    of it, and random bytes or text. The copies come from a drawn seed: cheaper to generate than four
    independent draws, so 10,000 frames stay well under a minute."""
    base = _pack_raw(draw(observations()) if draw(st.integers(0, 3)) else draw(VALUES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    flipped = bytearray(base)
    for i in rng.integers(0, len(flipped), size=int(rng.integers(1, 5))):
        flipped[i] ^= int(rng.integers(1, 256))
    noise = rng.integers(0, 256, size=int(rng.integers(0, 256)), dtype=np.uint8).tobytes()
    return [
        base,
        base[: int(rng.integers(0, len(base)))],
        bytes(flipped),
        noise if rng.random() < 0.8 else base.hex(),
    ]


@pytest.fixture(scope="module")
def server():
    import types

    class Cheap:
        name = "cheap"
        config = types.SimpleNamespace(
            input_features={"observation.state": (4,), "observation.images.front": (3, 8, 6)},
            n_obs_steps=2, horizon=6, exec_start=1, action_dim=3, n_action_steps=3,
        )  # fmt: skip

        def predict_action_chunk(self, batch):
            b = batch["observation.state"].shape[0]
            return batch["observation.state"][:, -1:, :3].expand(b, 6, 3).clone()

    # No keepalive pings: they draw from `random`, which hypothesis watches during generation.
    with PolicyServer(Cheap(), batch_window_ms=0, ping_interval=None) as srv:
        yield srv


def _good_obs(value: float) -> dict:
    return {
        "observation/state": np.full(4, value, np.float32),
        "observation/image": np.zeros((8, 6, 3), np.uint8),
    }


def test_ten_thousand_fuzzed_frames(server):
    sent = []
    with (
        connect(server.url, max_size=None, ping_interval=None) as fuzz,
        connect(server.url, max_size=None, ping_interval=None) as other,
    ):
        assert unpackb(fuzz.recv(timeout=30))["action_horizon"] == 5
        unpackb(other.recv(timeout=30))

        @settings(max_examples=2_500, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(frame_sets())
        def check(frames):
            for frame in frames:  # pipelined: the server answers a connection's frames in order
                fuzz.send(frame)
            for _ in frames:
                reply = fuzz.recv(timeout=30)
                if not isinstance(reply, str):
                    assert unpackb(reply)["actions"].shape == (5, 3)
            before = len(sent)
            sent.extend(len(f) for f in frames)
            if len(sent) // 1000 > before // 1000:  # the other client is served all along
                other.send(packb(_good_obs(len(sent))))
                assert unpackb(other.recv(timeout=30))["actions"][0, 0] == len(sent)

        check()
        assert len(sent) >= 10_000
        fuzz.send(packb(_good_obs(7.0)))  # the fuzzed connection itself is still open and served
        assert unpackb(fuzz.recv(timeout=30))["actions"][0, 0] == 7.0


def test_an_oversized_frame_closes_only_its_own_connection(server):
    with (
        connect(server.url, max_size=None, ping_interval=None) as big,
        connect(server.url, max_size=None, ping_interval=None) as other,
    ):
        big.recv(timeout=30)
        other.recv(timeout=30)
        big.send(b"\x00" * (server.max_frame_bytes + 1))
        with pytest.raises(ConnectionClosed) as info:
            big.recv(timeout=30)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009  # message too big
        other.send(packb(_good_obs(3.0)))
        assert unpackb(other.recv(timeout=30))["actions"][0, 0] == 3.0
