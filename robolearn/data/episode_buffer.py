"""The episode a :class:`~robolearn.data.writer.LeRobotWriter` is recording, before it is saved.

Frames are checked whole before anything of them is kept, so a bad frame raises and leaves the
episode as it was. Camera frames go straight into a per-episode mp4 under ``.robolearn_tmp/``
(or into PNG bytes for ``image`` features); numeric features stay in memory until
:meth:`EpisodeBuffer.close` turns them into one parquet table with the bookkeeping columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from robolearn.data import layout, stats
from robolearn.data.fsio import new_tmp_path
from robolearn.data.video import EpisodeVideoEncoder, encode_png
from robolearn.types import EPISODE_INDEX, FRAME_INDEX, INDEX, TASK_INDEX, TIMESTAMP, FeatureSpec


@dataclass
class ClosedEpisode:
    """A recorded episode, ready to be committed."""

    length: int
    tasks: list[str]
    """Its distinct task strings, in the order they first appear."""
    table: pa.Table
    videos: dict[str, Path]
    """Camera key -> the episode's own mp4 under ``.robolearn_tmp/``."""
    stats: dict[str, stats.Stats]


class EpisodeBuffer:
    """The frames of one open episode: numeric columns in memory, videos encoded as they come."""

    def __init__(self, root: Path, fps: int, features: dict[str, FeatureSpec], encoder: Any, episode: int):
        self.root, self.fps, self.features, self.episode = root, fps, features, episode
        self._encoder = encoder
        self._columns: dict[str, list] = {k: [] for k, s in features.items() if s.dtype != "video"}
        self._tasks: list[str] = []
        self._videos: dict[str, EpisodeVideoEncoder] = {}
        self._image_stats = {
            k: stats.ImageStats() for k, s in features.items() if s.dtype in layout.VISUAL_DTYPES
        }

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, frame: dict[str, Any], task: str) -> None:
        """Append one frame; ``frame`` holds every feature and nothing else."""
        if not isinstance(task, str) or not task:
            raise ValueError(f"task must be a non-empty string, got {task!r}")
        missing, extra = set(self.features) - set(frame), set(frame) - set(self.features)
        if missing or extra:
            raise ValueError(f"frame keys mismatch: missing {sorted(missing)}, unexpected {sorted(extra)}")
        checked = {key: self._checked(key, spec, frame[key]) for key, spec in self.features.items()}
        for key, value in checked.items():
            spec = self.features[key]
            if spec.dtype in layout.VISUAL_DTYPES:
                self._image_stats[key].update(value)
            if spec.dtype == "video":
                self._video(key, spec).add(value)
            elif spec.dtype == "image":
                self._columns[key].append(encode_png(value))
            else:
                self._columns[key].append(value)
        self._tasks.append(task)

    def _checked(self, key: str, spec: FeatureSpec, raw: Any) -> np.ndarray:
        value, n = np.asarray(raw), len(self._tasks)
        if spec.dtype in layout.VISUAL_DTYPES:
            if value.dtype != np.uint8 or value.shape != tuple(spec.shape):
                raise ValueError(
                    f"feature {key!r} frame {n}: expected uint8 {tuple(spec.shape)}, got {value.dtype} {value.shape}"
                )
            return value
        if value.shape != tuple(spec.shape) and not (spec.shape == (1,) and value.shape == ()):
            raise ValueError(f"feature {key!r} frame {n}: shape {value.shape}, expected {tuple(spec.shape)}")
        value = value.astype(spec.dtype, copy=False)
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise ValueError(f"feature {key!r} frame {n}: non-finite value {value.tolist()}")
        return value.reshape(spec.shape)

    def _video(self, key: str, spec: FeatureSpec) -> EpisodeVideoEncoder:
        enc = self._videos.get(key)
        if enc is None:
            path = new_tmp_path(self.root, f"episode-{self.episode:06d}-{key}.mp4")
            enc = self._videos[key] = EpisodeVideoEncoder(
                path, self.fps, self._encoder, spec.shape[1], spec.shape[0]
            )
        return enc

    def abort(self) -> None:
        """Drop the frames and the half-written videos."""
        for enc in self._videos.values():
            enc.abort()
        self._videos = {}

    def close(
        self, first_frame: int, task_index: dict[str, int], info_features: dict[str, dict], schema: pa.Schema
    ) -> ClosedEpisode:
        """Finish the videos and build the episode's table; its frames get global indices from
        ``first_frame``, and task strings not yet in ``task_index`` are added to it. The caller checks
        that the episode has frames."""
        n = len(self._tasks)
        videos = {}
        for key, enc in self._videos.items():
            written = enc.close()
            if written != n:
                raise RuntimeError(f"video {key!r}: encoded {written} frames, episode has {n}")
            videos[key] = enc.path
        for task in self._tasks:
            task_index.setdefault(task, len(task_index))
        columns = {
            k: (np.stack(v) if v and not isinstance(v[0], bytes) else v) for k, v in self._columns.items()
        }
        frame_index = np.arange(n, dtype=np.int64)
        columns[TIMESTAMP] = (frame_index / self.fps).astype(np.float32)
        columns[FRAME_INDEX] = frame_index
        columns[EPISODE_INDEX] = np.full(n, self.episode, dtype=np.int64)
        columns[INDEX] = np.arange(first_frame, first_frame + n, dtype=np.int64)
        columns[TASK_INDEX] = np.array([task_index[t] for t in self._tasks], dtype=np.int64)
        episode_stats = {
            key: self._image_stats[key].result()
            if ft["dtype"] in layout.VISUAL_DTYPES
            else stats.numeric_stats(columns[key])
            for key, ft in info_features.items()
        }
        table = layout.episode_table(columns, schema)
        return ClosedEpisode(n, list(dict.fromkeys(self._tasks)), table, videos, episode_stats)
