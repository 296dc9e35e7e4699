"""Typed messages shaped like ROS 2's, an envelope, and the byte codec the non-ROS backends use.

Field names follow ``sensor_msgs``, ``geometry_msgs``, ``trajectory_msgs``, ``std_msgs`` and
``tf2_msgs`` (numeric arrays are numpy arrays, not lists). Every message travels in an
:class:`Envelope`: a per-publisher sequence number, the publish time and the source time (when
the data was measured; ``header.stamp`` in ROS), both ``time.time()`` seconds, so two machines with
synchronized clocks can measure latency. The codec is msgpack with arrays as raw little-endian
bytes: never pickle. numpy-only; no ROS needed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

__all__ = [
    "MESSAGE_TYPES",
    "Envelope",
    "Float64MultiArray",
    "Header",
    "Image",
    "JointState",
    "JointTrajectory",
    "JointTrajectoryPoint",
    "PoseStamped",
    "StringMsg",
    "TFMessage",
    "TransformStamped",
    "decode",
    "encode",
]


def _f64(x: Any = ()) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


@dataclass
class Header:
    """``std_msgs/Header``: the source stamp (``time.time()`` s) and the frame."""

    stamp: float = 0.0
    frame_id: str = ""


@dataclass
class JointState:
    """``sensor_msgs/JointState``: names and positions (rad or m), velocities, efforts."""

    header: Header = field(default_factory=Header)
    name: list[str] = field(default_factory=list)
    position: np.ndarray = field(default_factory=_f64)
    velocity: np.ndarray = field(default_factory=_f64)
    effort: np.ndarray = field(default_factory=_f64)


@dataclass
class Image:
    """``sensor_msgs/Image``; :meth:`from_array` / :meth:`to_array` for uint8 (H, W, 3) ``rgb8``."""

    header: Header = field(default_factory=Header)
    height: int = 0
    width: int = 0
    encoding: str = "rgb8"
    is_bigendian: int = 0
    step: int = 0
    data: bytes = b""

    @classmethod
    def from_array(cls, img: np.ndarray, header: Header | None = None) -> Image:
        """An ``rgb8`` image from a uint8 (H, W, 3) array."""
        arr = np.ascontiguousarray(img, dtype=np.uint8)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"Image.from_array: expected (H, W, 3) uint8, found {arr.shape}")
        h, w, _ = arr.shape
        return cls(header or Header(), h, w, "rgb8", 0, 3 * w, arr.tobytes())

    def to_array(self) -> np.ndarray:
        """The image as uint8 (H, W, 3) (``rgb8`` only)."""
        if self.encoding != "rgb8":
            raise ValueError(f"Image.to_array: only rgb8 is supported, found {self.encoding!r}")
        rows = np.frombuffer(self.data, dtype=np.uint8).reshape(self.height, self.step)
        return rows[:, : 3 * self.width].reshape(self.height, self.width, 3)


@dataclass
class PoseStamped:
    """``geometry_msgs/PoseStamped``: position (3,) and orientation quaternion (x, y, z, w)."""

    header: Header = field(default_factory=Header)
    position: np.ndarray = field(default_factory=lambda: np.zeros(3))
    orientation: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 0.0, 1.0]))


@dataclass
class JointTrajectoryPoint:
    """``trajectory_msgs/JointTrajectoryPoint``."""

    positions: np.ndarray = field(default_factory=_f64)
    velocities: np.ndarray = field(default_factory=_f64)
    accelerations: np.ndarray = field(default_factory=_f64)
    effort: np.ndarray = field(default_factory=_f64)
    time_from_start: float = 0.0


@dataclass
class JointTrajectory:
    """``trajectory_msgs/JointTrajectory``."""

    header: Header = field(default_factory=Header)
    joint_names: list[str] = field(default_factory=list)
    points: list[JointTrajectoryPoint] = field(default_factory=list)


@dataclass
class Float64MultiArray:
    """``std_msgs/Float64MultiArray`` (one dimension, labelled ``label``)."""

    data: np.ndarray = field(default_factory=_f64)
    label: str = ""


@dataclass
class TransformStamped:
    """``geometry_msgs/TransformStamped``: translation (3,) and rotation (x, y, z, w)."""

    header: Header = field(default_factory=Header)
    child_frame_id: str = ""
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rotation: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 0.0, 1.0]))


@dataclass
class TFMessage:
    """``tf2_msgs/TFMessage``."""

    transforms: list[TransformStamped] = field(default_factory=list)


@dataclass
class StringMsg:
    """``std_msgs/String`` (status and request/reply payloads, JSON text)."""

    data: str = ""


MESSAGE_TYPES: dict[str, type] = {
    c.__name__: c
    for c in (
        Header,
        JointState,
        Image,
        PoseStamped,
        JointTrajectoryPoint,
        JointTrajectory,
        Float64MultiArray,
        TransformStamped,
        TFMessage,
        StringMsg,
    )
}


@dataclass
class Envelope:
    """A received (or outgoing) message with its delivery metadata."""

    msg: Any
    seq: int = 0
    """Per-publisher sequence number, from 1."""
    publish_time: float = 0.0
    """``time.time()`` at publish (ROS 1 carries none on the wire: there it equals ``source_time``)."""
    source_time: float = 0.0
    """``time.time()`` at which the data was measured (``header.stamp``)."""
    receive_time: float = 0.0
    """``time.time()`` at which the subscriber's backend took it in."""


_ND = 1  # msgpack ext code of a numpy array


def _pack(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        head = msgpack.packb([arr.dtype.str, list(arr.shape)])
        return msgpack.ExtType(_ND, head + arr.tobytes())
    if dataclasses.is_dataclass(obj):
        return {"_t": type(obj).__name__, **{f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}}
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _ext(code: int, data: bytes) -> Any:
    if code != _ND:
        return msgpack.ExtType(code, data)
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    dtype, shape = unpacker.unpack()
    return np.frombuffer(data[unpacker.tell() :], dtype=np.dtype(dtype)).reshape(shape)


def _hook(d: dict) -> Any:
    name = d.pop("_t", None)
    if name is None:
        return d
    cls = MESSAGE_TYPES.get(name)
    if cls is None:
        raise ValueError(f"unknown message type {name!r}")
    return cls(**d)


def encode(env: Envelope) -> bytes:
    """An envelope as msgpack bytes (arrays as raw bytes; no pickle)."""
    return msgpack.packb(
        [env.seq, env.publish_time, env.source_time, env.msg], default=_pack, use_bin_type=True
    )


def decode(data: bytes) -> Envelope:
    """The inverse of :func:`encode`; ``ValueError`` on bytes that are not an envelope."""
    try:
        seq, pub, src, msg = msgpack.unpackb(data, ext_hook=_ext, object_hook=_hook, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"not a robolearn topic message: {exc}") from None
    return Envelope(msg, int(seq), float(pub), float(src))
