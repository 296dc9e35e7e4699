"""ROS 1 ``.bag``, ROS 2 bag directories (``.db3`` / ``.mcap``) and bare MCAP files as episodes.

Reading uses ``rosbags`` (no ROS install). A :class:`~robolearn.data.convert.ros_mapping.RosMapping`
says which topics feed which features. The bag is read twice: pass 1 decodes every numeric message
and only the times of camera messages; pass 2, per episode, decodes just the camera frames that the
frame grid uses, so memory holds one episode of images at a time.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robolearn.data.convert import ros_messages as rm
from robolearn.data.convert.episode import ConversionError, Episode, EpisodeSource, image_spec
from robolearn.data.convert.resample import AlignStats, frame_grid, interpolate, select
from robolearn.data.convert.ros_mapping import RosMapping, StreamSpec
from robolearn.types import FeatureSpec, is_image_key


@dataclass
class _Stream:
    """One mapped (topic, field): its messages' times and values (or frame ordinals)."""

    feature: str
    spec: StreamSpec
    msgtype: str = ""
    times: Any = field(default_factory=list)  # list during pass 1, then sorted np.ndarray (s)
    values: Any = field(default_factory=list)  # numeric: (N, D) after pass 1
    ordinals: Any = field(default_factory=list)  # camera: message ordinal within its topic
    names: tuple[str, ...] | None = None
    frame_shape: tuple[int, ...] | None = None
    stats: AlignStats | None = None

    @property
    def is_image(self) -> bool:
        return is_image_key(self.feature)


def bag_paths(path: Path) -> list[Path]:
    """What ``rosbags.highlevel.AnyReader`` opens for ``path`` (a .db3 inside a bag means the bag)."""
    if path.suffix == ".db3" and (path.parent / "metadata.yaml").exists():
        return [path.parent]
    return [path]


@dataclass
class RosbagSource(EpisodeSource):
    """A ROS bag opened for conversion with a topic mapping."""

    mapping: RosMapping | None = None
    progress: bool = False
    """Show a progress bar while indexing the bag (pass 1)."""
    _reader: Any = None
    _streams: list[_Stream] = field(default_factory=list)
    _topic_logtimes: dict[str, list[int]] = field(default_factory=dict)
    _markers: list[tuple[float, Any, str]] = field(default_factory=list)
    _windows: list[tuple[float, float, str]] = field(default_factory=list)
    _t0_ns: int = 0

    format_name = "rosbag"

    def __post_init__(self) -> None:
        if self.mapping is None:
            raise ConversionError(
                f"{self.path}: reading a ROS bag needs a topic mapping (--mapping FILE.yaml)"
            )
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        paths = bag_paths(self.path)
        store = Stores.ROS1_NOETIC if paths[0].suffix == ".bag" else Stores.LATEST
        try:
            self._reader = AnyReader(paths, default_typestore=get_typestore(store))
            self._reader.open()
        except Exception as exc:
            self._reader = None
            raise ConversionError(f"{self.path}: cannot read ROS bag ({type(exc).__name__}: {exc})") from exc
        try:
            self._pass1()
            self._make_windows()
        except BaseException:
            self.close()
            raise

    # -- pass 1 -----------------------------------------------------------------------------------
    def _connections(self, topic: str) -> list[Any]:
        return [c for c in self._reader.connections if c.topic == topic]

    def _pass1(self) -> None:
        m, p = self.mapping, self.path
        assert m is not None
        types = {c.topic: c.msgtype for c in self._reader.connections}
        listing = ", ".join(f"{t} ({ty})" for t, ty in sorted(types.items())) or "no topics"
        for key, specs in m.features.items():
            for spec in specs:
                if spec.topic not in types:
                    raise ConversionError(
                        f"{p}: topic {spec.topic!r} (feature {key!r}) is not in the bag; it has: {listing}"
                    )
                self._streams.append(
                    _Stream(key, spec, types[spec.topic], stats=AlignStats(spec.label(), spec.alignment))
                )
        split_topic = m.episodes.topic if m.episodes.split == "topic" else None
        if split_topic and split_topic not in types:
            raise ConversionError(
                f"{p}: episode split topic {split_topic!r} is not in the bag; it has: {listing}"
            )
        by_topic: dict[str, list[_Stream]] = {}
        for s in self._streams:
            by_topic.setdefault(s.spec.topic, []).append(s)
        topics = set(by_topic) | ({split_topic} if split_topic else set())
        conns = [c for c in self._reader.connections if c.topic in topics]
        use_header = m.time == "header"
        self._t0_ns = int(self._reader.start_time)
        counts: dict[str, int] = dict.fromkeys(topics, 0)
        from robolearn.progress import progress

        bar = progress(
            self._reader.messages(connections=conns),
            total=sum(int(c.msgcount) for c in conns),
            unit="msg",
            desc=f"indexing {p.name}",
            enabled=self.progress,
        )
        for conn, logtime, raw in bar:
            where = f"{p} topic {conn.topic}"
            try:
                msg = self._reader.deserialize(raw, conn.msgtype)
            except Exception as exc:
                raise ConversionError(f"{where}: cannot deserialize {conn.msgtype} ({exc})") from exc
            t = (rm.stamp_ns(msg, logtime, use_header) - self._t0_ns) * 1e-9
            if conn.topic == split_topic:
                self._markers.append((t, getattr(msg, "data", None), rm.short_type(conn.msgtype)))
            for s in by_topic.get(conn.topic, ()):
                self._take(s, msg, conn.msgtype, t, counts[conn.topic], where)
            self._topic_logtimes.setdefault(conn.topic, []).append(logtime)
            counts[conn.topic] += 1
        for s in self._streams:
            self._finish(s)

    def _take(self, s: _Stream, msg: Any, msgtype: str, t: float, ordinal: int, where: str) -> None:
        if s.is_image:
            if s.frame_shape is None:
                s.frame_shape = rm.image(msg, msgtype, where).shape
            s.ordinals.append(ordinal)
        else:
            value = rm.vector(msg, msgtype, s.spec, where)
            if len(value) == 0:
                raise ConversionError(
                    f"{where}: {s.spec.label()} is empty at t={t:.3f}s (no values to record)"
                )
            if s.values and len(value) != len(s.values[0]):
                raise ConversionError(
                    f"{where}: {s.spec.label()} has {len(value)} values at t={t:.3f}s, expected {len(s.values[0])}"
                )
            if not s.values:
                s.names = _names(msg, msgtype, s.spec, len(value))
            s.values.append(value)
        s.times.append(t)

    def _finish(self, s: _Stream) -> None:
        if not s.times:
            raise ConversionError(
                f"{self.path}: topic {s.spec.topic!r} (feature {s.feature!r}) has no messages"
            )
        order = np.argsort(np.asarray(s.times), kind="stable")
        s.times = np.asarray(s.times)[order]
        if s.is_image:
            s.ordinals = np.asarray(s.ordinals)[order]
        else:
            s.values = np.stack(s.values)[order]

    # -- episodes -----------------------------------------------------------------------------------
    def _raw_windows(self) -> list[tuple[float, float, str]]:
        m = self.mapping
        assert m is not None
        task = m.task
        start = min(float(s.times[0]) for s in self._streams)
        end = max(float(s.times[-1]) for s in self._streams)
        split = m.episodes
        if split.split == "whole":
            return [(start, end, task)]
        if split.split == "gap":
            ref_topic = split.reference or self._streams[0].spec.topic
            ref = next((s for s in self._streams if s.spec.topic == ref_topic), None)
            if ref is None:
                raise ConversionError(f"{m.source}: episodes.reference {ref_topic!r} is not a mapped topic")
            cuts = np.flatnonzero(np.diff(ref.times) > split.gap_s)
            bounds = np.concatenate([[0], cuts + 1, [len(ref.times)]])
            return [
                (float(ref.times[a]), float(ref.times[b - 1]), task)
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)
            ]
        out: list[tuple[float, float, str]] = []
        open_at: tuple[float, str] | None = None
        for t, data, kind in sorted(self._markers, key=lambda x: x[0]):
            if kind == "Bool":
                if data and open_at is None:
                    open_at = (t, task)
                elif not data and open_at is not None:
                    out.append((open_at[0], t, open_at[1]))
                    open_at = None
                continue
            if open_at is not None:
                out.append((open_at[0], t, open_at[1]))
            text = str(data).strip() if kind == "String" and data is not None else ""
            open_at = (t, text or task)
        if open_at is not None:
            out.append((open_at[0], end, open_at[1]))
        if not out:
            raise ConversionError(f"{self.path}: split topic {split.topic!r} marks no episode")
        return out

    def _make_windows(self) -> None:
        m = self.mapping
        assert m is not None
        if not m.task and not (m.episodes.split == "topic"):
            self.notes.append(f"{self.path.name}: the mapping sets no task; using {self.path.stem!r}")
        for k, (a, b, task) in enumerate(self._raw_windows()):
            task = task or m.task or self.path.stem
            # Frames span the time every stream has data. A message up to half a frame before the
            # window is close enough for nearest/interpolate ("previous" must not look ahead); the
            # end never passes b, where the next episode's messages may begin.
            half = 0.5 / m.fps
            lo, hi = a, b
            empty = None
            for s in self._streams:
                i, j = np.searchsorted(s.times, a - half, "left"), np.searchsorted(s.times, b, "right")
                if i >= j:
                    empty = s.spec.topic
                    break
                lead = 0.0 if s.spec.alignment == "previous" else half
                lo, hi = max(lo, float(s.times[i]) - lead), min(hi, float(s.times[j - 1]) + half)
            n = len(frame_grid(lo, hi, m.fps)) if empty is None else 0
            if empty is not None or n < m.episodes.min_frames:
                why = (
                    f"no messages on {empty}" if empty else f"{n} frames < min_frames {m.episodes.min_frames}"
                )
                self.notes.append(f"skipped episode window {k} [{a:.2f}s, {b:.2f}s]: {why}")
                continue
            self._windows.append((lo, hi, task))
        if not self._windows:
            raise ConversionError(f"{self.path}: no episode has data on every mapped topic")
        self.fps = m.fps
        self.robot_type = m.robot_type
        self.num_episodes = len(self._windows)
        for key in m.features:
            parts = [s for s in self._streams if s.feature == key]
            if is_image_key(key):
                self.features[key] = image_spec(parts[0].frame_shape or (0, 0, 3))
            else:
                names = tuple(n for s in parts for n in (s.names or ()))
                self.features[key] = FeatureSpec(
                    "float32", (sum(s.values.shape[1] for s in parts),), names or None
                )

    def episodes(self) -> Iterator[Episode]:
        m = self.mapping
        assert m is not None
        for s in self._streams:  # fresh statistics for each pass over the episodes
            s.stats = AlignStats(s.spec.label(), s.spec.alignment)
        for k, (a, b, task) in enumerate(self._windows):
            grid = frame_grid(a, b, m.fps)
            parts: dict[str, list[np.ndarray]] = {}
            for s in self._streams:
                mode = "nearest" if s.spec.alignment == "interpolate" else s.spec.alignment
                idx = select(s.times, grid, mode)
                assert s.stats is not None
                offsets = s.stats.add(s.times, grid, idx)
                if m.max_offset_s is not None and offsets.max() > m.max_offset_s:
                    at = float(grid[int(offsets.argmax())])
                    raise ConversionError(
                        f"{self.path} episode {k}: {s.spec.label()} has no message within {m.max_offset_s}s "
                        f"of frame t={at:.3f}s (nearest {offsets.max():.3f}s away)"
                    )
                if s.is_image:
                    value = self._load_frames(s, s.ordinals[idx], f"{self.path} episode {k}")
                elif s.spec.alignment == "interpolate":
                    value = interpolate(s.times, s.values, grid)
                else:
                    value = s.values[idx]
                parts.setdefault(s.feature, []).append(value)
            frames = {
                key: v[0] if is_image_key(key) else np.concatenate(v, axis=1).astype(np.float32)
                for key, v in parts.items()
            }
            yield Episode(frames, task)
        self.notes.extend(s.stats.line() for s in self._streams if s.stats is not None)

    def _load_frames(self, s: _Stream, ordinals: np.ndarray, where: str) -> np.ndarray:
        """Pass 2: decode the camera messages with these ordinals (T,) into (T, H, W, 3)."""
        logtimes = self._topic_logtimes[s.spec.topic]
        wanted = set(ordinals.tolist())
        lo, hi = logtimes[min(wanted)], logtimes[max(wanted)]
        ordinal = bisect.bisect_left(logtimes, lo)
        decoded: dict[int, np.ndarray] = {}
        for conn, _, raw in self._reader.messages(
            connections=self._connections(s.spec.topic), start=lo, stop=hi + 1
        ):
            if ordinal in wanted:
                img = rm.image(
                    self._reader.deserialize(raw, conn.msgtype), conn.msgtype, f"{where} topic {conn.topic}"
                )
                if img.shape != s.frame_shape:
                    raise ConversionError(
                        f"{where} topic {conn.topic}: frame shape {img.shape} differs from the first frame's {s.frame_shape}"
                    )
                decoded[ordinal] = img
            ordinal += 1
        missing = wanted - decoded.keys()
        if missing:
            raise ConversionError(
                f"{where} topic {s.spec.topic}: {len(missing)} camera message(s) could not be re-read"
            )
        return np.stack([decoded[o] for o in ordinals.tolist()])

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _names(msg: Any, msgtype: str, spec: StreamSpec, n: int) -> tuple[str, ...]:
    if spec.joints is not None:
        joints = spec.joints
    elif rm.short_type(msgtype) == "JointState" and len(getattr(msg, "name", [])) == n:
        joints = tuple(msg.name)
    else:
        return tuple(f"{spec.label()}_{i}" for i in range(n))
    suffix = spec.field or "position"
    return tuple(f"{j}.{suffix}" for j in joints)
