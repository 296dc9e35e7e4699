"""ROS bag / MCAP import: real bags written here (MCAP, ROS 2 sqlite, ROS 1), resampled, checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from robolearn.data.convert import (
    ConversionError,
    ConvertOptions,
    convert,
    detect_format,
    open_source,
    parse_mapping,
)
from robolearn.data.convert.resample import AlignStats, frame_grid, interpolate, select

pytest.importorskip("rosbags")

REPO = Path(__file__).resolve().parents[2]
FRANKA_MAPPING = REPO / "datasets" / "ros_franka_mapping.yaml"
ARM = [f"panda_joint{i}" for i in range(1, 8)]
FINGERS = ["panda_finger_joint1", "panda_finger_joint2"]
BASE_NS = 1_700_000_000 * 10**9
H, W = 8, 12
# (start, stop) of the recorded segments in seconds; the 1.5 s silence splits episodes on gaps.
SEGMENTS = [(0.0, 1.5), (3.0, 4.2)]


# -- building real bags ---------------------------------------------------------------------------
def _png(value: int) -> bytes:
    import av

    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = W, H, "rgb24"
    frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), value, np.uint8), format="rgb24")
    return b"".join(bytes(p) for p in ctx.encode(frame)) + b"".join(bytes(p) for p in ctx.encode(None))


def _messages(segments=SEGMENTS, markers: list[str] | None = None):
    """(topic, msgtype, receive_ns, stamp_ns, payload) sorted by receive time.

    Values encode their own stamp so resampling can be checked: arm position j = t + 0.1 j,
    velocity = -t, finger = t, command j = t + j; camera pixels = message index.
    """
    out = []

    def every(rate, topic, msgtype, make, lag=0.0):
        for a, b in segments:
            for t in np.arange(a, b + 1e-9, 1.0 / rate):
                out.append((topic, msgtype, t, t - lag, make))

    every(50, "/franka_state_controller/joint_states", "sensor_msgs/msg/JointState", "arm")
    every(20, "/franka_gripper/joint_states", "sensor_msgs/msg/JointState", "fingers")
    every(15, "/camera/color/image_raw", "sensor_msgs/msg/Image", "image", lag=0.004)
    every(10, "/wrist_camera/color/image_raw/compressed", "sensor_msgs/msg/CompressedImage", "png")
    every(30, "/joint_position_controller/command", "std_msgs/msg/Float64MultiArray", "command")
    for (a, _), text in zip(segments, markers or [], strict=False):
        out.append(("/episode", "std_msgs/msg/String", a - 0.01, a - 0.01, ("marker", text)))
    out.sort(key=lambda m: m[2])
    counters: dict[str, int] = {}
    for topic, msgtype, recv, stamp, make in out:
        i = counters[topic] = counters.get(topic, -1) + 1
        yield topic, msgtype, BASE_NS + round(recv * 1e9), BASE_NS + round(stamp * 1e9), (make, i, stamp)


def _build(ts, ros1: bool, payload, stamp_ns: int):
    T = ts.types
    kind, i, t = payload
    stamp = T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    hdr = T["std_msgs/msg/Header"]
    header = hdr(seq=i, stamp=stamp, frame_id="") if ros1 else hdr(stamp=stamp, frame_id="")
    empty = np.zeros(0)
    if kind == "arm":
        pos = np.array([t + 0.1 * j for j in range(7)])
        # Joint order in the message differs from the mapping's, to prove selection by name.
        return T["sensor_msgs/msg/JointState"](
            header=header, name=ARM[::-1], position=pos[::-1].copy(), velocity=np.full(7, -t), effort=empty
        )
    if kind == "fingers":
        return T["sensor_msgs/msg/JointState"](
            header=header, name=FINGERS, position=np.array([t, t]), velocity=empty, effort=empty
        )
    if kind == "image":
        data = np.full(H * W * 3, i % 256, np.uint8)
        return T["sensor_msgs/msg/Image"](
            header=header, height=H, width=W, encoding="rgb8", is_bigendian=0, step=W * 3, data=data
        )
    if kind == "png":
        return T["sensor_msgs/msg/CompressedImage"](
            header=header, format="png", data=np.frombuffer(_png(i % 256), np.uint8)
        )
    if kind == "command":
        layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
        return T["std_msgs/msg/Float64MultiArray"](layout=layout, data=np.array([t + j for j in range(8)]))
    return T["std_msgs/msg/String"](data=kind[1])


def write_mcap(path: Path, **kw) -> Path:
    """A bare MCAP written with the ``mcap`` library (ROS 2 msgdef schemas, CDR messages)."""
    from mcap.writer import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    with open(path, "wb") as f:
        w = Writer(f)
        w.start(profile="ros2", library="robolearn-test")
        channels: dict[str, int] = {}
        for topic, msgtype, recv, stamp, payload in _messages(**kw):
            if topic not in channels:
                schema = w.register_schema(
                    msgtype, "ros2msg", ts.generate_msgdef(msgtype, ros_version=2)[0].encode()
                )
                channels[topic] = w.register_channel(topic, "cdr", schema)
            data = bytes(ts.serialize_cdr(_build(ts, False, payload, stamp), msgtype))
            w.add_message(channels[topic], log_time=recv, data=data, publish_time=recv)
        w.finish()
    return path


def write_rosbag2(path: Path, storage: str = "sqlite3", **kw) -> Path:
    """A ROS 2 bag directory (``sqlite3`` .db3 or ``mcap`` storage) written with ``rosbags``."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conns: dict[str, object] = {}
        for topic, msgtype, recv, stamp, payload in _messages(**kw):
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=ts)
            w.write(conns[topic], recv, ts.serialize_cdr(_build(ts, False, payload, stamp), msgtype))
    return path


def write_rosbag1(path: Path, **kw) -> Path:
    """A ROS 1 bag written with ``rosbags.rosbag1.Writer``."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS1_NOETIC)
    with Writer(path) as w:
        conns: dict[str, object] = {}
        for topic, msgtype, recv, stamp, payload in _messages(**kw):
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=ts)
            w.write(conns[topic], recv, ts.serialize_ros1(_build(ts, True, payload, stamp), msgtype))
    return path


def _episodes(path: Path, **opts) -> tuple[object, list]:
    src = open_source(path, options=ConvertOptions(**opts))
    with src:
        eps = list(src.episodes())
    return src, eps


def _mapping(**changes) -> dict:
    raw = yaml.safe_load(FRANKA_MAPPING.read_text())
    raw.update(changes)
    return raw


# -- resampling -----------------------------------------------------------------------------------
def test_select_and_stats_count_dropped_and_duplicated():
    times = np.array([0.0, 0.04, 0.1, 0.35, 0.4])
    grid = frame_grid(0.0, 0.4, 10.0)
    assert np.allclose(grid, [0.0, 0.1, 0.2, 0.3, 0.4])
    near = select(times, grid, "nearest")
    assert near.tolist() == [0, 2, 2, 3, 4]
    assert select(times, grid, "previous").tolist() == [0, 2, 2, 2, 4]
    stats = AlignStats("/x", "nearest")
    offsets = stats.add(times, grid, near)
    assert np.allclose(offsets, [0, 0, 0.1, 0.05, 0])
    assert stats.duplicated == 1 and stats.dropped == 1  # t=0.04 unused, t=0.1 used twice
    assert "max   100.0 ms" in stats.line() and "dropped 1" in stats.line()
    vals = interpolate(times, np.stack([times, -times], 1), grid)
    assert np.allclose(vals[:, 0], grid) and np.allclose(vals[:, 1], -grid)


# -- formats --------------------------------------------------------------------------------------
def test_bare_mcap_with_shipped_franka_mapping(tmp_path):
    bag = write_mcap(tmp_path / "run.mcap")
    assert detect_format(bag) == "rosbag"
    src, eps = _episodes(bag, mapping=FRANKA_MAPPING)
    assert len(eps) == 2  # split on the 1.5 s gap
    assert src.fps == 10 and src.robot_type == "franka"
    assert src.features["observation.state"].shape == (16,)
    assert src.features["observation.state"].names[0] == "panda_joint1.position"
    assert src.features["observation.images.front"].shape == (H, W, 3)
    for ep, (a, b) in zip(eps, SEGMENTS, strict=True):
        state, action = ep.frames["observation.state"], ep.frames["action"]
        assert state.dtype == np.float32 and action.shape[1] == 8
        n = len(ep)
        assert abs(n - (b - a) * 10) <= 1
        t = state[:, 0]  # arm joint 1 position == its stamp
        assert np.allclose(state[:, 1] - t, 0.1, atol=1e-5)  # picked by name, not by message order
        assert np.allclose(state[:, 7], -t, atol=1e-5)  # velocity block
        grid = t[0] + np.arange(n) / 10
        assert np.abs(t - grid).max() <= 0.5 / 50 + 1e-5  # nearest 50 Hz message
        assert np.all(action[:, 0] <= grid + 1e-5)  # "previous": never a future command
        assert np.all(grid - action[:, 0] < 1 / 30 + 1e-5)
        # Camera pixels hold the message index; frames track 15 Hz and 10 Hz streams in order.
        front, wrist = ep.frames["observation.images.front"], ep.frames["observation.images.wrist"]
        assert front.dtype == np.uint8 and front.shape == (n, H, W, 3)
        assert np.all(np.diff(front[:, 0, 0, 0].astype(int)) >= 0)
        assert np.all(np.diff(wrist[:, 0, 0, 0].astype(int)) == 1)  # 10 Hz camera at 10 fps: each once
        assert (front == front[:, :1, :1, :1]).all()
    text = "\n".join(src.notes)
    assert "/franka_state_controller/joint_states.position" in text and "dropped" in text


def test_bare_mcap_to_lerobot(tmp_path):
    from robolearn.data.reader import LeRobotReader

    bag = write_mcap(tmp_path / "run.mcap")
    summary = convert(
        bag, tmp_path / "ds", to="lerobot", options=ConvertOptions(mapping=FRANKA_MAPPING), progress=False
    )
    assert summary.episodes == 2 and summary.cameras == 2 and summary.numeric_features == 2
    assert any("wrist_camera" in n and "max" in n for n in summary.notes)
    _, eps = _episodes(bag, mapping=FRANKA_MAPPING)
    with LeRobotReader(tmp_path / "ds") as r:
        assert r.fps == 10 and r.robot_type == "franka" and r.tasks == ["pick up the cube"]
        assert r.features["observation.state"].names[-1] == "panda_finger_joint2.position"
        for i, ep in enumerate(eps):
            cols = r.episode_columns(i)
            assert np.array_equal(cols["observation.state"], ep.frames["observation.state"])
            assert np.array_equal(cols["action"], ep.frames["action"])
            frames = r.frames(i, "observation.images.front", np.arange(len(ep)))
            assert np.abs(frames.astype(int) - ep.frames["observation.images.front"]).mean() < 4


def test_rosbag1_interpolated_state_is_exact(tmp_path):
    bag = write_rosbag1(tmp_path / "run.bag")
    mapping = _mapping(alignment="interpolate", episodes={"split": "whole"}, max_offset_s=None)
    src, eps = _episodes(bag, mapping=parse_mapping(mapping))
    assert len(eps) == 1  # whole bag = one episode, the gap is inside it
    state = eps[0].frames["observation.state"]
    assert np.allclose(np.diff(state[:, 0]), 0.1, atol=1e-5)  # linear in time: interpolation is exact
    assert any("interpolate" in n for n in src.notes)
    summary = convert(
        bag,
        tmp_path / "ds",
        to="lerobot",
        options=ConvertOptions(mapping=parse_mapping(mapping)),
        progress=False,
    )
    assert summary.episodes == 1 and summary.frames == len(eps[0])
    from robolearn.data.reader import LeRobotReader

    with LeRobotReader(tmp_path / "ds") as r:
        assert np.array_equal(r.episode_columns(0)["observation.state"], state)


@pytest.mark.parametrize("storage,suffix", [("sqlite3", ".db3"), ("mcap", ".mcap")])
def test_rosbag2_dir_split_on_string_topic_sets_task(tmp_path, storage, suffix):
    bag = write_rosbag2(tmp_path / "bag2", storage, markers=["open the drawer", "close the drawer"])
    assert detect_format(bag) == "rosbag"
    mapping = _mapping(episodes={"split": "topic", "topic": "/episode"})
    out = tmp_path / "out.zarr"
    summary = convert(
        bag, out, to="zarr", options=ConvertOptions(mapping=parse_mapping(mapping)), progress=False
    )
    assert summary.episodes == 2 and summary.cameras == 2
    with open_source(out) as back:
        assert [ep.task for ep in back.episodes()] == ["open the drawer", "close the drawer"]
    # The storage file inside the bag directory opens too.
    _, eps = _episodes(next(bag.glob(f"*{suffix}")), mapping=parse_mapping(mapping))
    assert len(eps) == 2


# -- errors ---------------------------------------------------------------------------------------
def test_missing_topic_is_named_and_nothing_is_written(tmp_path):
    bag = write_mcap(tmp_path / "run.mcap")
    mapping = _mapping()
    mapping["features"]["action"] = {"topic": "/cartesian_command"}
    out = tmp_path / "out"
    with pytest.raises(
        ConversionError, match=r"run\.mcap: topic '/cartesian_command' \(feature 'action'\) is not in the bag"
    ):
        convert(bag, out, to="zarr", options=ConvertOptions(mapping=parse_mapping(mapping)), progress=False)
    assert list(tmp_path.iterdir()) == [bag]


def test_corrupt_mcap_names_the_file(tmp_path):
    good = write_mcap(tmp_path / "good.mcap").read_bytes()
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(good[: len(good) // 3])
    with pytest.raises(ConversionError, match=r"bad\.mcap"):
        convert(
            bad,
            tmp_path / "out.zarr",
            to="zarr",
            options=ConvertOptions(mapping=FRANKA_MAPPING),
            progress=False,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mcap", "good.mcap"]


def test_stale_stream_fails_max_offset(tmp_path):
    bag = write_mcap(tmp_path / "run.mcap")
    mapping = _mapping(max_offset_s=0.01, episodes={"split": "whole"})
    with pytest.raises(ConversionError, match=r"episode 0: .*no message within 0.01s"):
        _episodes(bag, mapping=parse_mapping(mapping))


def test_mapping_errors_name_the_key(tmp_path):
    with pytest.raises(ConversionError, match=r"unknown key\(s\) \['fsp'\]"):
        parse_mapping({"fsp": 10, "features": {"action": "/a"}})
    with pytest.raises(ConversionError, match="camera; use alignment nearest"):
        parse_mapping(
            {"fps": 10, "features": {"observation.images.x": {"topic": "/c", "alignment": "interpolate"}}}
        )
    bag = write_mcap(tmp_path / "run.mcap")
    with pytest.raises(
        ConversionError, match=r"needs a topic mapping.*/camera/color/image_raw \[sensor_msgs/msg/Image\]"
    ):
        convert(bag, tmp_path / "o", to="zarr", progress=False)


def test_joint_missing_from_message_is_named(tmp_path):
    bag = write_mcap(tmp_path / "run.mcap")
    mapping = _mapping()
    mapping["features"]["observation.state"][0]["joints"] = ["panda_joint1", "fr3_joint9"]
    with pytest.raises(
        ConversionError, match=r"topic /franka_state_controller/joint_states: joint\(s\) \['fr3_joint9'\]"
    ):
        _episodes(bag, mapping=parse_mapping(mapping))


def test_compressed_image_reader_helper_roundtrip():
    from robolearn.data.convert.ros_messages import _decode_compressed

    img = _decode_compressed("rgb8; png compressed bgr8", np.frombuffer(_png(77), np.uint8), "t")
    assert img.shape == (H, W, 3) and (img == 77).all()
    with pytest.raises(ConversionError, match="format 'tiff'"):
        _decode_compressed("tiff", np.zeros(4, np.uint8), "t")
