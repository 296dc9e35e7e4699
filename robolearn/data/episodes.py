"""``meta/episodes/*.parquet`` and ``meta/tasks.parquet``: reading, appending, task lists.

:class:`EpisodeIndex` holds the small per-episode columns (lengths, index ranges, file locations)
as numpy arrays; the ``stats/...`` columns stay on disk until asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robolearn.data import layout
from robolearn.data.errors import DatasetError
from robolearn.data.fsio import atomic_path


@dataclass
class Cursor:
    """Where the next episode goes in one file series (data, one video key, episode metadata)."""

    chunk: int = 0
    file: int = 0
    used: bool = False
    """The current file exists and holds committed episodes (appending rewrites it)."""
    nbytes: float = 0.0
    items: int = 0
    """Frames (data) or rows (metadata) in the current file."""

    def advance(self, chunks_size: int) -> None:
        self.chunk, self.file = layout.next_chunk_file(self.chunk, self.file, chunks_size)
        self.used, self.nbytes, self.items = False, 0.0, 0

    def rollover(self, add_bytes: float, limit_bytes: float, chunks_size: int) -> None:
        """LeRobot's rule: start a new file when this one would reach the size limit."""
        if self.used and self.nbytes + add_bytes >= limit_bytes:
            self.advance(chunks_size)


def episode_files(root: Path) -> list[Path]:
    return sorted((Path(root) / layout.EPISODES_DIR).glob("chunk-*/file-*.parquet"))


def read_tasks(root: Path) -> list[str]:
    """Task strings ordered by ``task_index`` (LeRobot stores them as the pandas index)."""
    import pandas as pd

    path = Path(root) / layout.TASKS_PATH
    if not path.exists():
        return []
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types on corrupt files
        raise DatasetError(f"unreadable parquet: {exc}", file=layout.TASKS_PATH) from exc
    if "task" in df.columns:  # tolerate a plain column as well as the index
        df = df.set_index("task")
    df = df.sort_values("task_index")
    if not np.array_equal(df["task_index"].to_numpy(), np.arange(len(df))):
        raise DatasetError("task_index is not 0..N-1", file=layout.TASKS_PATH)
    return [str(t) for t in df.index]


def write_tasks(root: Path, tasks: list[str]) -> None:
    """Atomically write ``meta/tasks.parquet`` exactly as LeRobot does (pandas index = task)."""
    import pandas as pd

    # object dtype: pandas 3 would otherwise store its new string dtype as large_string
    index = pd.Index(list(tasks), dtype=object)
    df = pd.DataFrame({"task_index": np.arange(len(tasks), dtype=np.int64)}, index=index)
    with atomic_path(root, Path(root) / layout.TASKS_PATH) as tmp:
        df.to_parquet(tmp)


def _read_meta_table(path: Path, root: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except Exception as exc:  # noqa: BLE001
        raise DatasetError(f"unreadable parquet: {exc}", file=path.relative_to(root).as_posix()) from exc


class EpisodeIndex:
    """Per-episode locations of a dataset, from its episode metadata (stats columns excluded)."""

    def __init__(
        self, root: Path | None, columns: dict[str, np.ndarray], tasks_per_episode: list, tasks: list[str]
    ):
        self.root = root
        self.columns = columns
        self.episode_tasks = tasks_per_episode
        self.tasks = tasks
        self.extra_episodes = 0

    @classmethod
    def empty(cls) -> EpisodeIndex:
        return cls(None, {}, [], [])

    @classmethod
    def load(cls, root: Path, info: dict | None = None) -> EpisodeIndex:
        """Read every ``meta/episodes`` file.

        With ``info``, only what ``info.json`` committed is kept (its ``total_episodes`` and
        ``total_tasks``); ``extra_episodes`` counts the rows beyond, left by an unfinished commit.
        """
        root = Path(root)
        tables = []
        for path in episode_files(root):
            try:
                names = pq.read_schema(path).names
            except Exception as exc:  # noqa: BLE001 - truncated files raise ArrowInvalid or OSError
                raise DatasetError(
                    f"unreadable parquet: {exc}", file=path.relative_to(root).as_posix()
                ) from exc
            tables.append(_read_meta_table(path, root, [n for n in names if not n.startswith("stats/")]))
        cols: dict[str, list] = {}
        tasks_per_episode: list = []
        for t in tables:
            for name in t.column_names:
                if name == "tasks":
                    tasks_per_episode.extend(t.column(name).to_pylist())
                else:
                    cols.setdefault(name, []).append(t.column(name).to_numpy())
        arrays = {k: np.concatenate(v) for k, v in cols.items()}
        tasks = read_tasks(root)
        extra = 0
        if info is not None:
            limit = int(info["total_episodes"])
            extra = max(0, len(tasks_per_episode) - limit)
            arrays = {k: v[:limit] for k, v in arrays.items()}
            tasks_per_episode = tasks_per_episode[:limit]
            tasks = tasks[: int(info.get("total_tasks", len(tasks)))]
        index = cls(root, arrays, tasks_per_episode, tasks)
        index.extra_episodes = extra
        ep = index.columns.get("episode_index")
        if ep is not None and not np.array_equal(ep, np.arange(len(ep))):
            raise DatasetError(
                f"episode_index column is not 0..{len(ep) - 1} in order", file=layout.EPISODES_DIR
            )
        return index

    @property
    def num_episodes(self) -> int:
        ep = self.columns.get("episode_index")
        return 0 if ep is None else len(ep)

    @property
    def num_frames(self) -> int:
        to = self.columns.get("dataset_to_index")
        return int(to[-1]) if to is not None and len(to) else 0

    def row(self, episode: int) -> dict[str, Any]:
        if not 0 <= episode < self.num_episodes:
            raise IndexError(f"episode {episode} out of range (dataset has {self.num_episodes})")
        # numpy scalars become Python ones; string columns (``env``) hold Python str already
        out: dict[str, Any] = {
            k: (v[episode].item() if isinstance(v[episode], np.generic) else v[episode])
            for k, v in self.columns.items()
        }
        out["tasks"] = list(self.episode_tasks[episode])
        return out

    def cursor(self, series: str) -> Cursor:
        """Cursor at the last committed file of ``series``: ``data``, ``meta`` or ``videos/<key>``."""
        if self.num_episodes == 0 or self.root is None:
            return Cursor()
        prefix = "meta/episodes" if series == "meta" else series
        chunk = int(self.columns[f"{prefix}/chunk_index"][-1])
        file = int(self.columns[f"{prefix}/file_index"][-1])
        same = (self.columns[f"{prefix}/chunk_index"] == chunk) & (
            self.columns[f"{prefix}/file_index"] == file
        )
        if series == "data":
            path, items = layout.DATA_PATH, int(self.columns["length"][same].sum())
        elif series == "meta":
            path, items = layout.EPISODES_PATH, int(same.sum())
        else:
            path, items = layout.VIDEO_PATH, int(self.columns["length"][same].sum())
        rel = path.format(video_key=series.partition("/")[2], chunk_index=chunk, file_index=file)
        full = self.root / rel
        return Cursor(chunk, file, True, float(full.stat().st_size) if full.exists() else 0.0, items)

    def append(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            for k, v in row.items():
                if k == "tasks":
                    self.episode_tasks.append(list(v))
                elif not k.startswith("stats/"):
                    old = self.columns.get(k)
                    new = np.asarray([v])
                    self.columns[k] = new if old is None else np.concatenate([old, new])


def append_episode_rows(
    root: Path,
    cursor: Cursor,
    rows: list[dict[str, Any]],
    index: EpisodeIndex,
    chunks_size: int,
    limit_bytes: float,
) -> None:
    """Add rows to the episode metadata files (rewriting the current one atomically), then to ``index``."""
    index.root = Path(root)
    groups: list[tuple[tuple[int, int, bool], list[dict]]] = []
    for row in rows:
        per_row = cursor.nbytes / cursor.items if cursor.items else 0.0
        cursor.rollover(per_row, limit_bytes, chunks_size)
        row["meta/episodes/chunk_index"] = cursor.chunk
        row["meta/episodes/file_index"] = cursor.file
        key = (cursor.chunk, cursor.file, cursor.used)
        if not groups or groups[-1][0] != key:
            groups.append((key, []))
        groups[-1][1].append(row)
        cursor.used, cursor.items = True, cursor.items + 1
    for (chunk, file, existed), group in groups:
        target = Path(root) / layout.episodes_relpath(chunk, file)
        new = pa.Table.from_pylist(group)
        if existed:
            old = _read_meta_table(target, Path(root))
            try:
                new = pa.concat_tables([old, new.select(old.column_names).cast(old.schema)])
            except (pa.ArrowInvalid, KeyError, ValueError) as exc:
                raise DatasetError(
                    f"cannot append episodes: columns differ ({exc})", file=str(target)
                ) from exc
        with atomic_path(root, target) as tmp:
            pq.write_table(new, tmp, compression="snappy", use_dictionary=True)
        cursor.nbytes = float(target.stat().st_size)
    index.append(rows)


def append_parquet(
    root: Path, target: Path, tables: list[pa.Table], schema: pa.Schema, existing: bool
) -> None:
    """(Re)write ``target`` = its current row groups + ``tables``, one row group per episode."""
    with atomic_path(root, target) as tmp:
        old = pq.ParquetFile(target, memory_map=True) if existing else None
        file_schema = old.schema_arrow if old is not None else schema
        with pq.ParquetWriter(tmp, file_schema, compression="snappy", use_dictionary=True) as w:
            if old is not None:
                for rg in range(old.num_row_groups):
                    w.write_table(old.read_row_group(rg))
            for table in tables:
                w.write_table(table if table.schema.equals(file_schema) else table.cast(file_schema))
        if old is not None:
            old.close()


class FileGroups(list):
    """Consecutive items grouped by the (chunk, file, existed) of the file they go to."""

    def add(self, cur: Cursor, item: Any) -> None:
        key = (cur.chunk, cur.file, cur.used)
        if not self or self[-1][0] != key:
            self.append((key, []))
        self[-1][1].append(item)
