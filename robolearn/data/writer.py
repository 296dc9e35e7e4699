"""Record episodes into a LeRobot v3.0 dataset, crash-safely.

Source metadata (robolearn's additions; lerobot ignores both, so datasets stay lerobot-readable):

- ``meta/info.json`` may hold a top-level ``"robolearn"`` block naming the registered env the
  episodes came from: ``{"env": "franka-lift", "env_config": {...every field of that env's config
  class, as robolearn.config.to_dict writes it...}}``. It is written when the writer is given
  ``env=`` (``robolearn collect`` always does) and absent otherwise. A dataset of several envs (a
  suite, a merge) has ``{"env": [names...], "env_config": {name: {...config...}}}``.
  ``robot_type`` is the arm's LeRobot robot type (``franka_fr3``, ``panda``, ``sawyer``), ``null``
  when unknown.
- ``meta/episodes/*.parquet`` may hold an int64 ``seed`` column: the ``env.reset(seed=...)`` of
  each episode, and a string ``env`` column: the registered env it came from. A dataset records a
  seed (an env) for every episode or for none (decided by its first episode), and no seed twice
  for one env.

Commit protocol (one commit per ``save_episode``, or per ``commit_every`` episodes): every file that
changes is rewritten under ``.robolearn_tmp/``, fsynced and renamed over its target, in this order:
data parquet, videos, ``tasks.parquet``, episodes parquet, ``stats.json`` and, last, ``info.json``.
``info.json``'s totals are the commit point: after a ``kill -9`` anything beyond them (rows, video
time, episode rows, tasks, new files) is a leftover that :meth:`LeRobotWriter.open` cuts away.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robolearn.data import layout, stats
from robolearn.data.episode_buffer import ClosedEpisode, EpisodeBuffer
from robolearn.data.episodes import EpisodeIndex, FileGroups, append_episode_rows, append_parquet, write_tasks
from robolearn.data.fsio import atomic_path, write_json_atomic
from robolearn.data.repair import repair
from robolearn.data.video import ENCODERS, pick_encoder, remux, video_info
from robolearn.types import FeatureSpec

log = logging.getLogger(__name__)
_MB = 1024**2
SOURCE_KEY = "robolearn"
"""Top-level ``info.json`` key of the source-env block: ``{"env": str, "env_config": dict}``."""


@dataclass
class _Saved:
    """An episode saved by the user and waiting for the next commit."""

    index: int
    seed: int | None
    env: str | None
    episode: ClosedEpisode


class LeRobotWriter:
    """Writes episodes frame by frame into a new or existing LeRobot v3.0 dataset.

    ``features`` are the user features (bookkeeping columns are added); camera features are
    ``FeatureSpec("video" | "image", (H, W, 3))`` and take uint8 frames; they are stored as mp4
    (``use_videos=True``) or as PNG in the parquet files. ``vcodec=None`` picks libsvtav1, else
    libx264. A commit rewrites the current data parquet file and remuxes (no re-encoding) the
    current mp4 of each camera, as LeRobot does for its videos; ``commit_every > 1`` batches that
    work for bulk conversion (a crash then also loses the saved-but-uncommitted episodes).

    ``robot_type`` is LeRobot's robot label (None when unknown); ``env`` and ``env_config`` record
    the source env in ``info.json`` (see the module docstring for the exact keys).
    """

    def __init__(
        self,
        root: str | Path,
        fps: int,
        features: dict[str, FeatureSpec],
        robot_type: str | None = None,
        use_videos: bool = True,
        vcodec: str | None = None,
        *,
        env: str | list[str] | None = None,
        env_config: dict[str, Any] | None = None,
        chunks_size: int = layout.DEFAULT_CHUNK_SIZE,
        data_files_size_in_mb: int = layout.DEFAULT_DATA_FILE_SIZE_IN_MB,
        video_files_size_in_mb: int = layout.DEFAULT_VIDEO_FILE_SIZE_IN_MB,
        commit_every: int = 1,
    ):
        root = Path(root)
        if (root / layout.INFO_PATH).exists():
            raise FileExistsError(f"{root} already holds a dataset; use LeRobotWriter.open() to append")
        if root.exists() and any(p.name != ".robolearn_tmp" for p in root.iterdir()):
            raise FileExistsError(f"{root} exists and is not empty")
        info_features = layout.features_to_info(features, use_videos)
        info = layout.new_info(
            int(fps),
            info_features,
            robot_type=robot_type,
            use_videos=use_videos,
            chunks_size=chunks_size,
            data_files_size_in_mb=data_files_size_in_mb,
            video_files_size_in_mb=video_files_size_in_mb,
        )
        if isinstance(env, (list, tuple)):
            info[SOURCE_KEY] = {"env": [str(e) for e in env], "env_config": dict(env_config or {})}
        elif env is not None:
            info[SOURCE_KEY] = {"env": str(env), "env_config": dict(env_config or {})}
        elif env_config is not None:
            raise ValueError("env_config needs env: the name of the registered env it configures")
        has_video = any(ft["dtype"] == "video" for ft in info_features.values())
        for key, ft in info_features.items():
            h, w = ft["shape"][:2] if ft["dtype"] == "video" else (4, 4)
            if h % 2 or w % 2 or min(h, w) < 4:
                raise ValueError(
                    f"feature {key!r}: video frames must have even height and width >= 4, got {h}x{w}"
                )
        encoder = pick_encoder(vcodec) if has_video else None
        root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(root, root / layout.INFO_PATH, info)
        self._setup(root, info, encoder, commit_every, EpisodeIndex.empty(), {}, None)
        self.repairs: list[str] = []

    @classmethod
    def open(cls, root: str | Path, *, vcodec: str | None = None, commit_every: int = 1) -> LeRobotWriter:
        """Append to an existing dataset, first repairing what an interrupted writer left behind.

        The repair messages are logged and kept in ``writer.repairs``.
        """
        root = Path(root)
        messages = repair(root)
        info = layout.load_info(root)
        index = EpisodeIndex.load(root)
        encoder = None
        vkeys = layout.video_keys(info)
        if vkeys:
            codec = info["features"][vkeys[0]].get("info", {}).get("video.codec")
            encoder = pick_encoder(vcodec or ENCODERS.get(codec, codec))
        saved_stats = layout.load_stats_json(root)
        running = None if saved_stats is None else stats.from_json(saved_stats)
        tasks = dict(zip(index.tasks, range(len(index.tasks)), strict=True))
        self = cls.__new__(cls)
        self._setup(root, info, encoder, commit_every, index, tasks, running)
        self.repairs = messages
        return self

    def _setup(self, root, info, encoder, commit_every, index, tasks, running) -> None:
        self.root, self.info, self.fps = root, info, int(info["fps"])
        self.features = {
            k: layout.spec_from_info(ft) for k, ft in info["features"].items() if k not in layout.BOOKKEEPING
        }
        self._video_keys = [k for k, s in self.features.items() if s.dtype == "video"]
        self._encoder = encoder
        self._commit_every = max(1, int(commit_every))
        self._schema = layout.data_schema(info["features"])
        self._tasks: dict[str, int] = tasks
        self._stats = running
        self._index = index
        self._num_episodes, self._num_frames = int(info["total_episodes"]), int(info["total_frames"])
        self._data = index.cursor("data")
        self._meta = index.cursor("meta")
        self._vids = {k: index.cursor(f"videos/{k}") for k in self._video_keys}
        self._pending: list[_Saved] = []
        self._closed = self._failed = False
        seeds, envs = index.columns.get("seed"), index.columns.get("env")
        self._seed_episode: dict[tuple[str | None, int], int] = (
            {}
            if seeds is None
            else {(None if envs is None else str(envs[i]), int(s)): i for i, s in enumerate(seeds)}
        )
        self._records_seeds: bool | None = None if index.num_episodes == 0 else seeds is not None
        self._records_envs: bool | None = None if index.num_episodes == 0 else envs is not None
        self._reset_buffer()

    # ------------------------------------------------------------------ recording
    def _reset_buffer(self) -> None:
        self._open_episode = EpisodeBuffer(
            self.root, self.fps, self.features, self._encoder, self._num_episodes
        )

    @property
    def num_episodes(self) -> int:
        """Episodes saved so far (committed or waiting for the next commit)."""
        return self._num_episodes

    @property
    def num_frames(self) -> int:
        return self._num_frames

    @property
    def source_env(self) -> str | None:
        """The registered env recorded in ``info.json`` (``robolearn.env``), if any."""
        return self.info.get(SOURCE_KEY, {}).get("env")

    @property
    def seeds(self) -> dict[int, int] | None:
        """Recorded seed -> episode index for every saved episode; None if the dataset records none
        or records a source env per episode (then see :meth:`env_seeds`)."""
        if self._records_seeds is False or self._records_envs:
            return None
        return {seed: ep for (_, seed), ep in self._seed_episode.items()}

    def env_seeds(self, env: str) -> dict[int, int] | None:
        """Recorded seed -> episode index of the episodes that came from ``env`` (a dataset with a
        source env per episode); None if the dataset records no seeds."""
        if self._records_seeds is False:
            return None
        return {seed: ep for (name, seed), ep in self._seed_episode.items() if name == env}

    @property
    def episode_frames(self) -> int:
        """Frames added to the open episode."""
        return len(self._open_episode)

    def add_frame(self, frame: dict[str, np.ndarray | float], task: str) -> None:
        """Append one frame of the open episode; ``frame`` holds every user feature, nothing else.

        A frame that fails a check raises ``ValueError`` and leaves the open episode as it was.
        """
        if self._closed or self._failed:
            raise RuntimeError(
                "writer is finalized" if self._closed else "an earlier commit failed; reopen the dataset"
            )
        self._open_episode.add(frame, task)

    def discard_episode(self) -> None:
        """Drop the open episode's frames."""
        self._open_episode.abort()
        self._reset_buffer()

    def save_episode(self, seed: int | None = None, env: str | None = None) -> int:
        """Close the open episode; returns its index. It is on disk once committed (see ``commit_every``).

        ``seed``: the ``reset(seed=...)`` the episode started from, recorded per episode; ``env``: the
        registered env it came from (datasets of several envs). Raises ``ValueError`` (keeping the
        open episode) when the seed is already in the dataset for that env, or when this episode
        gives a seed (an env) and earlier ones did not, or the other way round.
        """
        if len(self._open_episode) == 0:
            raise ValueError("save_episode(): the episode has no frames")
        ep = self._num_episodes
        self._check_env(env)
        self._check_seed(seed, env)
        closed = self._open_episode.close(self._num_frames, self._tasks, self.info["features"], self._schema)
        seed = None if seed is None else int(seed)
        env = None if env is None else str(env)
        self._pending.append(_Saved(ep, seed, env, closed))
        self._records_seeds = seed is not None
        self._records_envs = env is not None
        if seed is not None:
            self._seed_episode[(env, seed)] = ep
        self._num_episodes += 1
        self._num_frames += closed.length
        self._reset_buffer()
        if len(self._pending) >= self._commit_every:
            self.commit()
        return ep

    def _check_env(self, env: str | None) -> None:
        if env is None and self._records_envs:
            raise ValueError(f"{self.root}: its episodes record their source env; pass save_episode(env=...)")
        if env is not None and self._records_envs is False:
            raise ValueError(f"{self.root}: its episodes record no source env; save this one without env=")

    def _check_seed(self, seed: int | None, env: str | None = None) -> None:
        if seed is None:
            if self._records_seeds:
                raise ValueError(f"{self.root}: its episodes record their seed; pass save_episode(seed=...)")
            return
        if self._records_seeds is False:
            raise ValueError(f"{self.root}: its episodes record no seed; save this one without seed=")
        key = (None if env is None else str(env), int(seed))
        if key in self._seed_episode:
            where = f" of {env}" if env is not None else ""
            raise ValueError(
                f"{self.root}: seed {int(seed)}{where} is already in the dataset (episode {self._seed_episode[key]})"
            )

    # ------------------------------------------------------------------ committing
    def commit(self) -> None:
        """Write every saved episode to disk (no-op when none waits).

        If it fails midway the writer refuses further work: reopen the dataset with
        :meth:`open`, which cuts what the failed commit left behind.
        """
        if self._failed:
            raise RuntimeError(f"{self.root}: an earlier commit failed; reopen with LeRobotWriter.open()")
        if not self._pending:
            return
        try:
            self._commit()
        except BaseException:
            self._failed = True
            raise

    def _commit(self) -> None:
        pending, info, root = self._pending, self.info, self.root
        rows = [
            {"episode_index": p.index, "tasks": p.episode.tasks, "length": p.episode.length} for p in pending
        ]
        if self._records_seeds:
            for row, p in zip(rows, pending, strict=True):
                row["seed"] = p.seed
        if self._records_envs:
            for row, p in zip(rows, pending, strict=True):
                row["env"] = p.env
        self._commit_data(pending, rows)
        for key in self._video_keys:
            self._commit_video(key, pending, rows)
        for row, p in zip(rows, pending, strict=True):
            row.update(stats.flatten_episode(p.episode.stats))
        if len(self._tasks) > int(info["total_tasks"]):
            write_tasks(root, list(self._tasks))
        append_episode_rows(root, self._meta, rows, self._index, self._chunks, self._limit("data"))
        for p in pending:
            self._stats = stats.merge(self._stats, p.episode.stats)
        write_json_atomic(root, root / layout.STATS_PATH, stats.to_json(self._stats))
        info["total_episodes"] = self._index.num_episodes
        info["total_frames"] = self._index.num_frames
        info["total_tasks"] = len(self._tasks)
        info["splits"] = {"train": f"0:{info['total_episodes']}"}
        _before_commit_point()
        write_json_atomic(root, root / layout.INFO_PATH, info)  # the commit point
        for p in pending:
            for path in p.episode.videos.values():
                path.unlink(missing_ok=True)
        self._pending = []

    @property
    def _chunks(self) -> int:
        return int(self.info["chunks_size"])

    def _limit(self, kind: str) -> float:
        return float(self.info[f"{kind}_files_size_in_mb"]) * _MB

    def _commit_data(self, pending: list[_Saved], rows: list[dict]) -> None:
        cur, groups = self._data, FileGroups()
        start = self._index.num_frames
        for p, row in zip(pending, rows, strict=True):
            length = p.episode.length
            per_frame = cur.nbytes / cur.items if cur.items else p.episode.table.nbytes / length
            cur.rollover(per_frame * length, self._limit("data"), self._chunks)
            groups.add(cur, p.episode.table)
            row.update(
                {
                    "data/chunk_index": cur.chunk,
                    "data/file_index": cur.file,
                    "dataset_from_index": start,
                    "dataset_to_index": start + length,
                }
            )
            start += length
            cur.used, cur.items, cur.nbytes = True, cur.items + length, cur.nbytes + per_frame * length
        for (chunk, file, existed), tables in groups:
            target = self.root / layout.data_relpath(self.info, chunk, file)
            append_parquet(self.root, target, tables, self._schema, existing=existed)
            cur.nbytes = float(target.stat().st_size)  # the last group is the current file

    def _commit_video(self, key: str, pending: list[_Saved], rows: list[dict]) -> None:
        cur, groups = self._vids[key], FileGroups()
        for p, row in zip(pending, rows, strict=True):
            size = p.episode.videos[key].stat().st_size
            cur.rollover(size, self._limit("video"), self._chunks)
            groups.add(cur, (p.episode.videos[key], row))
            cur.used, cur.nbytes = True, cur.nbytes + size
        for (chunk, file, existed), items in groups:
            target = self.root / layout.video_relpath(self.info, key, chunk, file)
            with atomic_path(self.root, target) as tmp:
                bounds = remux(([target] if existed else []) + [path for path, _ in items], tmp)
            bounds = bounds[len(bounds) - len(items) - 1 :]  # skip the episodes already in the file
            for i, (_, row) in enumerate(items):
                row.update(
                    {
                        f"videos/{key}/chunk_index": chunk,
                        f"videos/{key}/file_index": file,
                        f"videos/{key}/from_timestamp": bounds[i],
                        f"videos/{key}/to_timestamp": bounds[i + 1],
                    }
                )
            cur.nbytes = float(target.stat().st_size)
        if "info" not in self.info["features"][key]:
            row = rows[0]
            first = layout.video_relpath(
                self.info, key, row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"]
            )
            self.info["features"][key]["info"] = video_info(self.root / first)

    # ------------------------------------------------------------------ closing
    def finalize(self) -> None:
        """Commit what was saved; an open, unsaved episode is discarded (with a warning)."""
        if self._closed or self._failed:
            self._closed = True
            return
        if len(self._open_episode):
            log.warning(
                "finalize(): discarding the open episode (%d frames never saved)", len(self._open_episode)
            )
            self.discard_episode()
        self.commit()
        self._closed = True

    def __enter__(self) -> LeRobotWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finalize()


def _before_commit_point() -> None:
    """Hook run just before ``info.json`` is replaced; crash tests patch it to ``kill -9`` there."""
