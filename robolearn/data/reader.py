"""Random access to a LeRobot v3.0 dataset (ours or one written by lerobot 0.4.x) without loading it.

Numeric columns are read per parquet row group (LeRobot writes one per episode) from memory-mapped
files, with a small per-process LRU cache of decoded row groups, so a sampler can fetch windows
of a dataset larger than RAM. Video frames come from a :class:`~robolearn.data.video.VideoDecoder`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robolearn.data import layout
from robolearn.data import stats as stats_mod
from robolearn.data.episodes import EpisodeIndex
from robolearn.data.errors import DatasetError
from robolearn.data.video import VideoDecoder, decode_image
from robolearn.types import FeatureSpec


def column_to_numpy(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Arrow column -> numpy: scalars ``(N,)``, (nested) lists ``(N, *shape)``; image structs -> object array."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    shape: list[int] = []
    while (
        pa.types.is_fixed_size_list(arr.type)
        or pa.types.is_list(arr.type)
        or pa.types.is_large_list(arr.type)
    ):
        if pa.types.is_fixed_size_list(arr.type):
            size = arr.type.list_size
        else:
            lengths = np.diff(np.asarray(arr.offsets))
            size = int(lengths[0]) if len(lengths) else 0
            if len(lengths) and not np.all(lengths == size):
                raise ValueError("ragged list column")
        shape.append(size)
        arr = arr.flatten()
    if pa.types.is_struct(arr.type):
        return np.asarray(arr.field("bytes").to_pylist(), dtype=object)
    return arr.to_numpy(zero_copy_only=False).reshape(n, *shape)


class _DataFile:
    """One data parquet file: memory-mapped, with the global ``index`` of each row group's first row."""

    def __init__(self, path: Path, first_index: int):
        self.path = path
        # Plain reads, not a memory map: mapped pages would count against the process's memory for
        # datasets larger than RAM; the decoded row-group cache is what makes access fast.
        self.pf = pq.ParquetFile(path, memory_map=False)
        sizes = [self.pf.metadata.row_group(i).num_rows for i in range(self.pf.num_row_groups)]
        self.starts = first_index + np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


class LeRobotReader:
    """Read-only view of a LeRobot v3.0 dataset at ``root``.

    Use :meth:`rows` / :meth:`episode_columns` for numeric data, :meth:`frames` for camera frames.
    Safe to use from forked DataLoader workers (files are reopened per process).
    """

    def __init__(self, root: str | Path, *, decoder: VideoDecoder | None = None, cache_row_groups: int = 64):
        self.root = Path(root)
        self.info: dict[str, Any] = layout.load_info(self.root)
        self.fps: int = int(self.info["fps"])
        self.features: dict[str, FeatureSpec] = {
            k: layout.spec_from_info(ft) for k, ft in self.info["features"].items()
        }
        # info.json is the commit point: rows a concurrent or interrupted writer added beyond it are ignored
        self._index = EpisodeIndex.load(self.root, self.info)
        if self._index.num_episodes != int(self.info["total_episodes"]):
            raise DatasetError(
                f"{self._index.num_episodes} episodes in meta/episodes, info.json says {self.info['total_episodes']}",
                file=layout.EPISODES_DIR,
            )
        self.tasks: list[str] = self._index.tasks
        self.video_keys: list[str] = layout.video_keys(self.info)
        self.numeric_keys: list[str] = [
            k for k, s in self.features.items() if s.dtype not in layout.VISUAL_DTYPES
        ]
        self.image_keys: list[str] = [k for k, s in self.features.items() if s.dtype == "image"]
        self.decoder = decoder or VideoDecoder()
        self._cache_size = cache_row_groups
        self._stats: dict | None = None
        self._reset_handles()
        cols = self._index.columns
        self.episode_from = cols.get("dataset_from_index", np.zeros(0, np.int64)).astype(np.int64)
        self.episode_to = cols.get("dataset_to_index", np.zeros(0, np.int64)).astype(np.int64)
        self._file_of_ep = (
            list(zip(cols["data/chunk_index"].tolist(), cols["data/file_index"].tolist(), strict=True))
            if self.num_episodes
            else []
        )
        firsts: dict[tuple[int, int], int] = {}
        for ep, loc in enumerate(self._file_of_ep):
            firsts.setdefault(loc, int(self.episode_from[ep]))
        self._file_locs = sorted(firsts, key=firsts.get)
        self._file_firsts = np.array([firsts[loc] for loc in self._file_locs], dtype=np.int64)

    def _reset_handles(self) -> None:
        self._pid = os.getpid()
        self._files: dict[tuple[int, int], _DataFile] = {}
        self._cache: OrderedDict[tuple, dict[str, np.ndarray]] = OrderedDict()

    # ------------------------------------------------------------------ metadata
    @property
    def num_episodes(self) -> int:
        return self._index.num_episodes

    @property
    def num_frames(self) -> int:
        return int(self.info["total_frames"])

    @property
    def robot_type(self) -> str | None:
        return self.info.get("robot_type")

    @property
    def episode_lengths(self) -> np.ndarray:
        return self.episode_to - self.episode_from

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]] | None:
        """``meta/stats.json`` as arrays (``None`` when the file is absent)."""
        if self._stats is None:
            raw = layout.load_stats_json(self.root)
            if raw is None:
                return None
            self._stats = stats_mod.from_json(raw)
        return self._stats

    def episode_meta(self, episode: int) -> dict[str, Any]:
        """The episode's metadata row (locations, length, tasks), without its stats columns."""
        return self._index.row(episode)

    def episode_stats(self, episode: int) -> dict[str, dict[str, np.ndarray]]:
        """The per-episode stats LeRobot keeps in the episodes parquet (``stats/<feature>/<stat>``)."""
        meta = self.episode_meta(episode)
        rel = layout.episodes_relpath(meta["meta/episodes/chunk_index"], meta["meta/episodes/file_index"])
        table = pq.read_table(self.root / rel)
        eps = table.column("episode_index").to_numpy()
        row = table.slice(int(np.flatnonzero(eps == episode)[0]), 1).to_pylist()[0]
        return stats_mod.unflatten_episode(row)

    def task(self, task_index: int) -> str:
        return self.tasks[int(task_index)]

    # ------------------------------------------------------------------ numeric data
    def _data_file(self, loc: tuple[int, int]) -> _DataFile:
        if os.getpid() != self._pid:
            self._reset_handles()
        f = self._files.get(loc)
        if f is None:
            path = self.root / layout.data_relpath(self.info, *loc)
            try:
                f = _DataFile(path, int(self._file_firsts[self._file_locs.index(loc)]))
            except (OSError, pa.ArrowInvalid) as exc:
                raise DatasetError(
                    f"unreadable parquet: {exc}", file=layout.data_relpath(self.info, *loc)
                ) from exc
            self._files[loc] = f
        return f

    def _row_group(self, loc: tuple[int, int], rg: int) -> dict[str, np.ndarray]:
        key = (loc, rg)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        table = self._data_file(loc).pf.read_row_group(rg)
        out = {
            name: column_to_numpy(table.column(name)) for name in table.column_names if name in self.features
        }
        self._cache[key] = out
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    def rows(self, start: int, stop: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """Rows ``[start, stop)`` of the dataset (global ``index``) for the non-video ``keys``.

        Returns ``(stop - start, *shape)`` arrays; features of shape ``(1,)`` come back ``(N,)`` as
        LeRobot stores them (scalar columns); ``image`` features come back as PNG bytes (objects).
        """
        if not 0 <= start <= stop <= self.num_frames:
            raise IndexError(f"rows [{start}, {stop}) out of range [0, {self.num_frames})")
        keys = list(self.numeric_keys + self.image_keys) if keys is None else list(keys)
        if start == stop:
            return {k: self._empty(k) for k in keys}
        parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        pos = start
        while pos < stop:
            fi = int(np.searchsorted(self._file_firsts, pos, side="right")) - 1
            loc = self._file_locs[fi]
            f = self._data_file(loc)
            rg = int(np.searchsorted(f.starts, pos, side="right")) - 1
            if rg >= len(f.starts) - 1:
                raise DatasetError(
                    f"row {pos} is past the end of the file", file=layout.data_relpath(self.info, *loc)
                )
            end = min(stop, int(f.starts[rg + 1]))
            block = self._row_group(loc, rg)
            lo, hi = pos - int(f.starts[rg]), end - int(f.starts[rg])
            for k in keys:
                if k not in block:
                    raise KeyError(f"{k!r} is not a column of {f.path.name} (columns: {sorted(block)})")
                parts[k].append(block[k][lo:hi])
            pos = end
        return {k: (v[0] if len(v) == 1 else np.concatenate(v)) for k, v in parts.items()}

    def _empty(self, key: str) -> np.ndarray:
        spec = self.features[key]
        if spec.dtype == "image":
            return np.empty(0, dtype=object)
        shape = () if tuple(spec.shape) == (1,) else tuple(spec.shape)
        return np.empty((0, *shape), dtype=spec.dtype)

    def episode_columns(self, episode: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """All non-video columns of one episode (see :meth:`rows` for shapes)."""
        if not 0 <= episode < self.num_episodes:
            raise IndexError(f"episode {episode} out of range (dataset has {self.num_episodes})")
        return self.rows(int(self.episode_from[episode]), int(self.episode_to[episode]), keys)

    # ------------------------------------------------------------------ frames
    def video_path(self, episode: int, key: str) -> Path:
        meta = self.episode_meta(episode)
        return self.root / layout.video_relpath(
            self.info, key, meta[f"videos/{key}/chunk_index"], meta[f"videos/{key}/file_index"]
        )

    def frames(self, episode: int, key: str, frame_indices) -> np.ndarray:
        """Camera frames of an episode: uint8 ``(N, H, W, 3)`` for ``frame_indices`` (within the episode)."""
        idx = np.atleast_1d(np.asarray(frame_indices, dtype=np.int64))
        length = int(self.episode_lengths[episode])
        if idx.size and (idx.min() < 0 or idx.max() >= length):
            raise IndexError(f"episode {episode} has {length} frames; asked for {idx.min()}..{idx.max()}")
        spec = self.features.get(key)
        if spec is None or spec.dtype not in layout.VISUAL_DTYPES:
            raise KeyError(f"{key!r} is not a camera feature (cameras: {self.video_keys + self.image_keys})")
        if spec.dtype == "image":
            start = int(self.episode_from[episode])
            data = [self.rows(start + int(i), start + int(i) + 1, [key])[key][0] for i in idx]
            return np.stack([decode_image(b) for b in data])
        meta = self.episode_meta(episode)
        timestamps = float(meta[f"videos/{key}/from_timestamp"]) + idx / self.fps
        return self.decoder.get_frames(self.video_path(episode, key), timestamps, tolerance_s=0.5 / self.fps)

    def close(self) -> None:
        """Release open files and decoders (the reader reopens them if used again)."""
        self.decoder.close()
        self._reset_handles()

    def __enter__(self) -> LeRobotReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"LeRobotReader({str(self.root)!r}, episodes={self.num_episodes}, frames={self.num_frames}, "
            f"fps={self.fps}, features={list(self.features)})"
        )


LeRobotDatasetReader = LeRobotReader
"""Alias under the name used in the design notes."""
