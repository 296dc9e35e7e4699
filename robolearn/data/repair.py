"""Cut away what an interrupted writer left beyond the last commit (``info.json``'s totals).

The writer replaces files atomically and ``info.json`` last, so after a crash the committed
dataset is intact and the leftovers are: scratch files, rows/episodes/tasks past the totals, video
time past the last committed episode, and whole files a rollover had started. Anything *missing*
below the totals is real corruption and raises :class:`DatasetError` instead.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from robolearn.data import layout, stats
from robolearn.data.episodes import EpisodeIndex, episode_files, read_tasks, write_tasks
from robolearn.data.errors import DatasetError
from robolearn.data.fsio import TMP_DIRNAME, atomic_path, write_json_atomic
from robolearn.data.video import remux, video_duration

log = logging.getLogger(__name__)
_CHUNK_FILE = re.compile(r"chunk-(\d+)/file-(\d+)\.(parquet|mp4)$")


def _loc(path: Path) -> tuple[int, int] | None:
    m = _CHUNK_FILE.search(path.as_posix())
    return (int(m.group(1)), int(m.group(2))) if m else None


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _drop_rows(root: Path, path: Path, column: str, limit: int) -> int:
    """Rewrite ``path`` without rows whose ``column`` >= ``limit``; returns rows dropped (-1: file deleted)."""
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001
        raise DatasetError(f"unreadable parquet: {exc}", file=_rel(root, path)) from exc
    keep = pc.less(table.column(column), limit)
    kept = table.filter(keep)
    dropped = table.num_rows - kept.num_rows
    if dropped == 0:
        return 0
    if kept.num_rows == 0:
        path.unlink()
        return -1
    pf = pq.ParquetFile(path)
    with atomic_path(root, path) as tmp, pq.ParquetWriter(tmp, pf.schema_arrow, compression="snappy") as w:
        for rg in range(pf.num_row_groups):  # keep one row group per episode
            part = pf.read_row_group(rg)
            part = part.filter(pc.less(part.column(column), limit))
            if part.num_rows:
                w.write_table(part)
    return dropped


def _prune_series(
    root: Path, files: list[Path], used: set[tuple[int, int]], what: str, msgs: list[str]
) -> None:
    """Delete files a rollover started after the last committed location."""
    last = max(used) if used else (-1, -1)
    for path in files:
        loc = _loc(path)
        if loc is None or loc in used:
            continue
        if loc > last:
            path.unlink()
            msgs.append(
                f"{_rel(root, path)}: removed {what} file with no committed episode (interrupted write)"
            )
        else:
            msgs.append(f"{_rel(root, path)}: {what} file is referenced by no episode (left in place)")


def repair(root: str | Path) -> list[str]:
    """Bring the files back to the last commit; returns (and logs) one message per change."""
    root = Path(root)
    msgs: list[str] = []
    scratch = root / TMP_DIRNAME
    if scratch.is_dir():
        leftovers = list(scratch.iterdir())
        shutil.rmtree(scratch)
        if leftovers:
            msgs.append(f"{TMP_DIRNAME}/: removed {len(leftovers)} temporary file(s) of an interrupted write")
    info = layout.load_info(root)
    n_ep, n_frames, n_tasks = (
        int(info["total_episodes"]),
        int(info["total_frames"]),
        int(info.get("total_tasks", 0)),
    )

    if len(read_tasks(root)) > n_tasks:
        tasks = read_tasks(root)
        write_tasks(root, tasks[:n_tasks])
        msgs.append(f"{layout.TASKS_PATH}: dropped {len(tasks) - n_tasks} uncommitted task(s)")

    for path in episode_files(root):
        dropped = _drop_rows(root, path, "episode_index", n_ep)
        if dropped:
            what = "removed the file" if dropped < 0 else f"dropped {dropped} row(s)"
            msgs.append(f"{_rel(root, path)}: {what} of uncommitted episodes")
    index = EpisodeIndex.load(root)
    if index.num_episodes != n_ep or index.num_frames != n_frames:
        raise DatasetError(
            f"episode metadata holds {index.num_episodes} episodes / {index.num_frames} frames, "
            f"info.json says {n_ep} / {n_frames}",
            file=layout.EPISODES_DIR,
        )
    cols = index.columns

    def used(prefix: str) -> set[tuple[int, int]]:
        if n_ep == 0:
            return set()
        return set(
            zip(cols[f"{prefix}/chunk_index"].tolist(), cols[f"{prefix}/file_index"].tolist(), strict=True)
        )

    _prune_series(root, episode_files(root), used("meta/episodes"), "episode metadata", msgs)
    data_files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    _prune_series(root, data_files, used("data"), "data", msgs)
    data_used = used("data")
    for path in sorted((root / "data").glob("chunk-*/file-*.parquet")):
        dropped = _drop_rows(root, path, "index", n_frames) if _loc(path) in data_used else 0
        if dropped:
            msgs.append(f"{_rel(root, path)}: dropped {dropped} row(s) of uncommitted frames")

    fps = float(info["fps"])
    for key in layout.video_keys(info):
        files = sorted((root / "videos" / key).glob("chunk-*/file-*.mp4"))
        _prune_series(root, files, used(f"videos/{key}"), "video", msgs)
        if n_ep == 0:
            continue
        chunk, file, to_ts = (
            cols[f"videos/{key}/{c}"] for c in ("chunk_index", "file_index", "to_timestamp")
        )
        for loc in sorted(used(f"videos/{key}")):
            path = root / layout.video_relpath(info, key, *loc)
            end = float(to_ts[(chunk == loc[0]) & (file == loc[1])].max())
            if not path.exists():
                raise DatasetError("video file missing", file=_rel(root, path))
            duration = video_duration(path)
            if duration > end + 0.5 / fps:
                with atomic_path(root, path) as tmp:
                    remux([path], tmp, end_s=end)
                msgs.append(f"{_rel(root, path)}: cut {duration - end:.3f}s of uncommitted video")

    stats_path = root / layout.STATS_PATH
    recomputed = _recompute_stats(root) if n_ep and _stats_stale(stats_path, n_frames) else None
    if recomputed:
        write_json_atomic(root, stats_path, stats.to_json(recomputed))
        msgs.append(
            f"{layout.STATS_PATH}: recomputed from the per-episode stats of {n_ep} committed episodes"
        )
    for m in msgs:
        log.warning("repaired %s: %s", root, m)
    return msgs


def _stats_stale(path: Path, n_frames: int) -> bool:
    """Missing, unreadable, or counting other frames than the commit (``index`` has one count per frame)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    try:
        return int(np.asarray(data["index"]["count"]).reshape(-1)[0]) != n_frames
    except (KeyError, IndexError, TypeError, ValueError):
        return False  # a dataset without index stats: nothing to compare against


def _recompute_stats(root: Path) -> dict[str, stats.Stats]:
    """Aggregate the ``stats/...`` columns of every committed episode."""
    running: dict[str, stats.Stats] | None = None
    for path in episode_files(root):
        for row in pq.read_table(path).to_pylist():
            running = stats.merge(running, stats.unflatten_episode(row))
    return running or {}
