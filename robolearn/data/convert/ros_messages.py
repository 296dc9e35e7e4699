"""Turn deserialized ROS messages (from ``rosbags``) into numpy: vectors, camera frames, stamps.

No ROS installation is needed: ``rosbags`` deserializes ROS 1 and ROS 2 (CDR) messages into
dataclasses whose arrays are numpy arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robolearn.data.convert.episode import ConversionError
from robolearn.data.convert.ros_mapping import StreamSpec

_DEFAULT_FIELD = {
    "JointState": "position",
    "TwistStamped": "twist",
    "PoseStamped": "pose",
    "WrenchStamped": "wrench",
}
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1, "8UC3": 3, "8UC4": 4}


def short_type(msgtype: str) -> str:
    """``sensor_msgs/msg/JointState`` -> ``JointState``."""
    return msgtype.rsplit("/", 1)[-1]


def stamp_ns(msg: Any, receive_ns: int, use_header: bool) -> int:
    """The message's header stamp in ns, or the receive time when it has none (or zero)."""
    if use_header:
        header = getattr(msg, "header", None)
        stamp = getattr(header, "stamp", None)
        if stamp is not None:
            ns = int(stamp.sec) * 1_000_000_000 + int(getattr(stamp, "nanosec", 0))
            if ns > 0:
                return ns
    return receive_ns


def _flatten(obj: Any, where: str) -> np.ndarray:
    if isinstance(obj, np.ndarray):
        return obj.astype(np.float64).ravel()
    if isinstance(obj, bool | int | float | np.number):
        return np.array([float(obj)])
    if isinstance(obj, list | tuple):
        if not obj:
            return np.zeros(0)
        return np.concatenate([_flatten(o, where) for o in obj])
    for pair in (("linear", "angular"), ("position", "orientation"), ("force", "torque")):
        if all(hasattr(obj, p) for p in pair):
            return np.concatenate([_flatten(getattr(obj, p), where) for p in pair])
    if all(hasattr(obj, c) for c in "xyz"):
        comps = "xyzw" if hasattr(obj, "w") else "xyz"
        return np.array([float(getattr(obj, c)) for c in comps])
    if hasattr(obj, "data"):
        return _flatten(obj.data, where)
    raise ConversionError(
        f"{where}: cannot turn {type(obj).__name__} into numbers; set 'field' in the mapping"
    )


def default_field(msgtype: str, msg: Any) -> str | None:
    """The field read when the mapping names none."""
    name = short_type(msgtype)
    if name in _DEFAULT_FIELD:
        return _DEFAULT_FIELD[name]
    return "data" if hasattr(msg, "data") else None


def _get_path(msg: Any, path: str, where: str) -> Any:
    obj = msg
    for part in path.split("."):
        if not hasattr(obj, part):
            fields = [f for f in getattr(obj, "__dataclass_fields__", {}) if not f.startswith("__")]
            raise ConversionError(f"{where}: message has no field {part!r} (fields: {fields})")
        obj = getattr(obj, part)
    return obj


def vector(msg: Any, msgtype: str, spec: StreamSpec, where: str) -> np.ndarray:
    """One numeric sample (D,) float64 from ``msg`` as ``spec`` selects it."""
    path = spec.field if spec.field is not None else default_field(msgtype, msg)
    value = _get_path(msg, path, where) if path else msg
    if spec.joints is not None:
        names = list(getattr(msg, "name", []))
        if not names:
            raise ConversionError(f"{where}: 'joints' given but {short_type(msgtype)} has no 'name' list")
        arr = np.asarray(value, dtype=np.float64)
        if len(arr) != len(names):
            raise ConversionError(f"{where}: {path} has {len(arr)} values for {len(names)} joint names")
        missing = [j for j in spec.joints if j not in names]
        if missing:
            raise ConversionError(f"{where}: joint(s) {missing} not in message (have {names})")
        return arr[[names.index(j) for j in spec.joints]]
    return _flatten(value, where)


def _decode_compressed(fmt: str, data: np.ndarray, where: str) -> np.ndarray:
    import av

    fmt_l = fmt.lower()
    codec = "png" if "png" in fmt_l else "mjpeg" if ("jpeg" in fmt_l or "jpg" in fmt_l) else None
    if codec is None:
        raise ConversionError(f"{where}: CompressedImage format {fmt!r}; expected jpeg or png")
    try:
        ctx = av.CodecContext.create(codec, "r")
        frames = list(ctx.decode(av.Packet(bytes(data)))) or list(ctx.decode(None))
    except av.FFmpegError as exc:
        raise ConversionError(f"{where}: cannot decode {codec} image ({exc})") from exc
    if not frames:
        raise ConversionError(f"{where}: {codec} image decoded to no frame")
    return frames[0].to_ndarray(format="rgb24")


def image(msg: Any, msgtype: str, where: str) -> np.ndarray:
    """One camera frame as uint8 (H, W, 3) RGB from a sensor_msgs Image or CompressedImage."""
    if short_type(msgtype) == "CompressedImage":
        return _decode_compressed(str(msg.format), msg.data, where)
    if short_type(msgtype) != "Image":
        raise ConversionError(
            f"{where}: camera topics must be sensor_msgs/Image or CompressedImage, found {msgtype}"
        )
    enc = str(msg.encoding)
    if enc not in _CHANNELS:
        raise ConversionError(f"{where}: image encoding {enc!r}; supported: {sorted(_CHANNELS)}")
    ch, h, w, step = _CHANNELS[enc], int(msg.height), int(msg.width), int(msg.step)
    buf = np.asarray(msg.data, dtype=np.uint8)
    if step < w * ch or len(buf) < h * step:
        raise ConversionError(f"{where}: image data has {len(buf)} bytes for {h}x{w} {enc} with step {step}")
    arr = buf[: h * step].reshape(h, step)[:, : w * ch].reshape(h, w, ch)
    if enc.startswith("bgr"):
        arr = arr[..., 2::-1]
    elif ch == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3])
