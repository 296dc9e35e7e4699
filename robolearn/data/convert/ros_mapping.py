"""The YAML file that says how a ROS bag becomes a dataset (see ``datasets/ros_franka_mapping.yaml``).

.. code-block:: yaml

    fps: 10                      # frame rate of the dataset (required)
    task: pick up the red cube   # instruction for every episode (a String split topic overrides it)
    robot_type: franka
    time: header                 # header (header.stamp, receive time when absent/zero) | receive
    alignment: nearest           # default: nearest | previous | interpolate (cameras then use nearest)
    max_offset_s: 0.25           # optional: fail when a frame's nearest message is further away
    episodes:
      split: whole               # whole | gap | topic
      gap_s: 1.0                 # gap: a silence longer than this on `reference` ends an episode
      reference: /joint_states   # gap: default the first stream's topic
      topic: /episode            # topic: String (text = task) or any message starts an episode;
                                 #        Bool true starts, false stops one
      min_frames: 2              # shorter episodes are skipped (and reported)
    features:
      observation.state:         # one stream, or a list concatenated in order
        - {topic: /joint_states, field: position, joints: [panda_joint1, panda_joint2]}
        - {topic: /joint_states, field: velocity}
      observation.images.front: {topic: /camera/front/image_raw}
      action: {topic: /joint_command, alignment: previous}

Unknown keys are errors. ``field`` is a dotted attribute path into the message; each type has a
default (JointState: ``position``, ``*MultiArray``/``Float64``/``Bool``: ``data``, TwistStamped:
``twist``, PoseStamped: ``pose``, otherwise the whole message). Vectors and quaternions flatten to
their x, y, z (, w); a Twist to linear + angular (6); a Pose to position + orientation (7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robolearn.data.convert.episode import ConversionError
from robolearn.types import is_image_key

ALIGNMENTS = ("nearest", "previous", "interpolate")
SPLITS = ("whole", "gap", "topic")


@dataclass(frozen=True)
class StreamSpec:
    """One topic (and field) feeding part of a feature."""

    topic: str
    field: str | None = None
    """Dotted path into the message; None picks the type's default."""
    joints: tuple[str, ...] | None = None
    """JointState only: pick and order joints by name."""
    alignment: str = "nearest"
    """How the stream is resampled onto the frame grid."""

    def label(self) -> str:
        return f"{self.topic}.{self.field}" if self.field else self.topic


@dataclass(frozen=True)
class EpisodeSplit:
    """How the bag is cut into episodes."""

    split: str = "whole"
    gap_s: float = 1.0
    reference: str | None = None
    topic: str | None = None
    min_frames: int = 2


@dataclass(frozen=True)
class RosMapping:
    """The parsed mapping: which streams make which feature, at what rate, cut how."""

    fps: float
    features: dict[str, tuple[StreamSpec, ...]]
    task: str = ""
    robot_type: str | None = None
    time: str = "header"
    alignment: str = "nearest"
    max_offset_s: float | None = None
    episodes: EpisodeSplit = field(default_factory=EpisodeSplit)
    source: str = "<mapping>"

    def topics(self) -> list[str]:
        """Every topic the mapping reads, in first-use order (split topic last)."""
        out: list[str] = []
        for streams in self.features.values():
            for s in streams:
                if s.topic not in out:
                    out.append(s.topic)
        return out


def _check_keys(d: Any, allowed: set[str], where: str) -> dict:
    if not isinstance(d, dict):
        raise ConversionError(f"{where}: expected a mapping, found {type(d).__name__}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ConversionError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return d


def _stream(d: Any, key: str, default_align: str, where: str) -> StreamSpec:
    if isinstance(d, str):
        d = {"topic": d}
    d = _check_keys(d, {"topic", "field", "joints", "alignment"}, f"{where} features.{key}")
    if "topic" not in d:
        raise ConversionError(f"{where}: features.{key} needs a 'topic'")
    if is_image_key(key) and "alignment" not in d and default_align == "interpolate":
        default_align = "nearest"  # frames cannot be blended; the file-wide default is for numbers
    align = d.get("alignment", default_align)
    if align not in ALIGNMENTS:
        raise ConversionError(f"{where}: features.{key} alignment {align!r}; expected one of {ALIGNMENTS}")
    if is_image_key(key) and align == "interpolate":
        raise ConversionError(f"{where}: features.{key} is a camera; use alignment nearest or previous")
    joints = d.get("joints")
    return StreamSpec(
        topic=str(d["topic"]),
        field=d.get("field"),
        joints=tuple(str(j) for j in joints) if joints else None,
        alignment=align,
    )


def parse_mapping(raw: dict, where: str = "<mapping>") -> RosMapping:
    """Validate a mapping dict (as loaded from YAML); errors name ``where`` and the bad key."""
    raw = _check_keys(
        raw, {"fps", "task", "robot_type", "time", "alignment", "max_offset_s", "episodes", "features"}, where
    )
    if not isinstance(raw.get("fps"), int | float) or raw["fps"] <= 0:
        raise ConversionError(f"{where}: 'fps' must be a positive number, found {raw.get('fps')!r}")
    align = raw.get("alignment", "nearest")
    if align not in ALIGNMENTS:
        raise ConversionError(f"{where}: alignment {align!r}; expected one of {ALIGNMENTS}")
    time = raw.get("time", "header")
    if time not in ("header", "receive"):
        raise ConversionError(f"{where}: time {time!r}; expected header or receive")
    feats = raw.get("features")
    if not isinstance(feats, dict) or not feats:
        raise ConversionError(f"{where}: 'features' must map feature keys to topics")
    features: dict[str, tuple[StreamSpec, ...]] = {}
    for key, val in feats.items():
        items = val if isinstance(val, list) else [val]
        if not items:
            raise ConversionError(f"{where}: features.{key} lists no topics")
        if is_image_key(key) and len(items) != 1:
            raise ConversionError(f"{where}: camera features.{key} takes exactly one topic")
        features[str(key)] = tuple(_stream(v, key, align, where) for v in items)
    ep = _check_keys(
        raw.get("episodes", {}), {"split", "gap_s", "reference", "topic", "min_frames"}, f"{where} episodes"
    )
    split = EpisodeSplit(
        split=ep.get("split", "whole"),
        gap_s=float(ep.get("gap_s", 1.0)),
        reference=ep.get("reference"),
        topic=ep.get("topic"),
        min_frames=int(ep.get("min_frames", 2)),
    )
    if split.split not in SPLITS:
        raise ConversionError(f"{where}: episodes.split {split.split!r}; expected one of {SPLITS}")
    if split.split == "topic" and not split.topic:
        raise ConversionError(f"{where}: episodes.split is 'topic' but episodes.topic is not set")
    max_off = raw.get("max_offset_s")
    return RosMapping(
        fps=float(raw["fps"]),
        features=features,
        task=str(raw.get("task", "")),
        robot_type=raw.get("robot_type"),
        time=time,
        alignment=align,
        max_offset_s=float(max_off) if max_off is not None else None,
        episodes=split,
        source=where,
    )


def load_mapping(path: str | Path) -> RosMapping:
    """Read and validate a mapping YAML file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConversionError(f"{path}: cannot read mapping ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConversionError(f"{path}: invalid YAML ({exc})") from exc
    return parse_mapping(raw, str(path))
