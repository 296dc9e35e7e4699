"""LeRobot v3.0 datasets on either side of a conversion, through robolearn's own writer and reader.

Besides the frames, a conversion keeps where the data came from: ``meta/info.json``'s
``robolearn`` block holds the source env (``env``, ``env_config``), an imported file's ``source``
(format, file name, ``env_args``, attributes, key mapping) and the recorded ``splits``; what a
source records per episode (robomimic demo name, demo attributes such as ``model_file``, the final
``next_obs`` row) goes to ``meta/source_episodes.jsonl``, one JSON object per episode.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robolearn.data.convert.episode import (
    BOOKKEEPING_KEYS,
    ConversionError,
    Episode,
    EpisodeSource,
    check_episode,
    is_visual,
)
from robolearn.types import FeatureSpec

_COMMIT_EVERY = 64
EPISODE_META_PATH = "meta/source_episodes.jsonl"
"""Per-episode source records (:attr:`Episode.meta`), one JSON line per episode, in episode order."""


@dataclass
class LeRobotSource(EpisodeSource):
    """A LeRobot v3.0 dataset directory opened for conversion (cameras decoded from video)."""

    _reader: Any = None
    _meta: list = None  # type: ignore[assignment]

    format_name = "lerobot"

    def __post_init__(self) -> None:
        from robolearn.data.errors import DatasetError
        from robolearn.data.reader import LeRobotReader

        try:
            self._reader = LeRobotReader(self.path)
        except DatasetError as exc:
            raise ConversionError(f"{self.path}: {exc}") from exc
        r = self._reader
        self.features = {k: s for k, s in r.features.items() if k not in BOOKKEEPING_KEYS}
        self.fps = float(r.fps)
        self.robot_type = getattr(r, "robot_type", None)
        self.num_episodes = int(r.num_episodes)
        from robolearn.data.splits import recorded_splits

        block = r.info.get("robolearn")
        self.origin = {k: v for k, v in block.items() if k != "splits"} if isinstance(block, dict) else {}
        self.splits = recorded_splits(r.info)
        self._meta = _read_episode_meta(self.path / EPISODE_META_PATH, self.num_episodes)

    def episodes(self) -> Iterator[Episode]:
        r = self._reader
        tasks = list(r.tasks)
        for i in range(self.num_episodes):
            cols = r.episode_columns(i)
            n = len(cols["frame_index"]) if "frame_index" in cols else len(next(iter(cols.values())))
            frames: dict[str, np.ndarray] = {}
            for key, spec in self.features.items():
                if is_visual(spec):
                    frames[key] = np.asarray(r.frames(i, key, np.arange(n)))
                else:
                    frames[key] = np.asarray(cols[key])
            task_index = int(np.asarray(cols["task_index"]).reshape(-1)[0]) if "task_index" in cols else 0
            meta = self._meta[i] if i < len(self._meta) else {}
            yield Episode(frames, tasks[task_index] if tasks else "", meta)

    def close(self) -> None:
        if self._reader is not None and hasattr(self._reader, "close"):
            self._reader.close()
        self._reader = None


def write_lerobot(source: EpisodeSource, out: Path, episodes: Iterator[Episode] | None = None) -> int:
    """Write ``source`` as a LeRobot v3.0 dataset at ``out`` (cameras as video); returns frames written.

    Episodes are committed in batches (``commit_every``): the output only appears, renamed into
    place, once the whole conversion succeeded, so per-episode crash safety buys nothing here.
    """
    from robolearn.data.writer import LeRobotWriter

    fps = int(round(source.fps))
    if abs(fps - source.fps) > 1e-6 or fps <= 0:
        raise ConversionError(
            f"{source.path}: LeRobot datasets need an integer fps, source has {source.fps:g}"
        )
    features = {k: FeatureSpec("video", s.shape) if is_visual(s) else s for k, s in source.features.items()}
    total = 0
    env = source.origin.get("env")
    writer = LeRobotWriter(
        out,
        fps=fps,
        features=features,
        robot_type=source.robot_type,
        use_videos=True,
        commit_every=_COMMIT_EVERY,
        env=env,
        env_config=source.origin.get("env_config") if env is not None else None,
    )
    metas: list[dict] = []
    with writer:
        for i, ep in enumerate(episodes if episodes is not None else source.episodes()):
            where = f"{source.path} episode {i}"
            check_episode(ep, source.features, where)
            if not ep.task:
                raise ConversionError(f"{where}: empty task (LeRobot needs an instruction); pass --task")
            try:
                for t in range(len(ep)):
                    writer.add_frame({k: v[t] for k, v in ep.frames.items() if k in features}, task=ep.task)
                writer.save_episode()
            except ValueError as exc:
                raise ConversionError(f"{where}: {exc}") from exc
            metas.append(ep.meta)
            total += len(ep)
        if total == 0:
            raise ConversionError(f"{source.path}: no episodes to write")
    _record_origin(out, source, metas)
    return total


def _record_origin(out: Path, source: EpisodeSource, metas: list[dict]) -> None:
    """Add the source's ``source`` block and splits to ``info.json``; per-episode records beside it."""
    from robolearn.data import layout
    from robolearn.data.fsio import write_json_atomic
    from robolearn.data.writer import SOURCE_KEY

    extra = {k: v for k, v in source.origin.items() if k not in ("env", "env_config", "splits")}
    splits = {k: [i for i in v if 0 <= i < len(metas)] for k, v in source.splits.items()}
    if extra or splits:
        info = layout.load_info(out)
        block = info.setdefault(SOURCE_KEY, {})
        block.update(extra)
        if splits:
            block["splits"] = splits
        write_json_atomic(out, out / layout.INFO_PATH, info)
    if any(metas):
        lines = "".join(json.dumps(m, separators=(",", ":")) + "\n" for m in metas)
        (out / EPISODE_META_PATH).write_text(lines, encoding="utf-8")


def _read_episode_meta(path: Path, num_episodes: int) -> list[dict]:
    if not path.is_file():
        return []
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise ConversionError(f"{path}: invalid JSON line ({exc})") from exc
    if len(rows) != num_episodes:
        raise ConversionError(f"{path}: {len(rows)} lines for {num_episodes} episodes")
    return rows
