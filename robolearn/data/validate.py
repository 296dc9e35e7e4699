"""Check a LeRobot v3.0 dataset on disk: every problem names its file, episode and field.

Covers: unreadable/truncated parquet, missing or short mp4 files, NaN/inf values, shapes and
dtypes that disagree with ``info.json``, timestamps off the ``1/fps`` grid, episode index and
length inconsistencies, and leftovers of an interrupted write (reported as warnings).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robolearn.data import layout
from robolearn.data.episodes import EpisodeIndex, read_tasks
from robolearn.data.errors import DatasetError, Problem
from robolearn.data.fsio import TMP_DIRNAME
from robolearn.data.reader import column_to_numpy
from robolearn.data.video import frame_times

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` after each data or video file."""


def _episodes_by_file(index: EpisodeIndex, prefix: str) -> dict[tuple[int, int], list[int]]:
    out: dict[tuple[int, int], list[int]] = {}
    chunks, files = index.columns[f"{prefix}/chunk_index"], index.columns[f"{prefix}/file_index"]
    for ep, loc in enumerate(zip(chunks.tolist(), files.tolist(), strict=True)):
        out.setdefault(loc, []).append(ep)
    return out


def _column_shape(typ: pa.DataType) -> tuple[tuple[int, ...], pa.DataType]:
    shape = []
    while pa.types.is_fixed_size_list(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ):
        shape.append(typ.list_size if pa.types.is_fixed_size_list(typ) else -1)
        typ = typ.value_type
    return tuple(shape), typ


def _check_schema(rel: str, ep: int, schema: pa.Schema, info: dict, out: list[Problem]) -> None:
    for key, ft in info["features"].items():
        if ft["dtype"] == "video":
            continue
        if key not in schema.names:
            out.append(Problem(rel, "column missing", ep, key))
            continue
        if ft["dtype"] == "image":
            continue
        shape, base = _column_shape(schema.field(key).type)
        expected = tuple(ft["shape"])
        same_shape = (
            shape == expected
            or (expected == (1,) and shape == ())
            or (-1 in shape and len(shape) == len(expected))
        )
        same_dtype = ft["dtype"] == "string" or (
            pa.types.is_primitive(base) and base.to_pandas_dtype() == np.dtype(ft["dtype"])
        )
        if not same_shape or not same_dtype:
            found = f"{base} {list(shape) if shape else [1]}"
            out.append(
                Problem(rel, f"column is {found}, info.json says {ft['dtype']} {list(expected)}", ep, key)
            )


def _check_rows(
    rel: str,
    ep: int,
    cols: dict[str, np.ndarray],
    start: int,
    fps: int,
    info: dict,
    n_tasks: int,
    out: list[Problem],
) -> None:
    n = len(cols["index"]) if "index" in cols else 0

    def expect(field: str, want: np.ndarray) -> None:
        got = cols.get(field)
        if got is None or got.shape != want.shape:
            return
        bad = np.flatnonzero(got != want)
        if bad.size:
            i = int(bad[0])
            out.append(Problem(rel, f"frame {i}: {got[i]} where {want[i]} was expected", ep, field))

    expect("episode_index", np.full(n, ep))
    expect("frame_index", np.arange(n))
    expect("index", np.arange(start, start + n))
    ts = cols.get("timestamp")
    if ts is not None and n:
        ts = ts.astype(np.float64)
        tol = 1e-4 + np.abs(ts) * np.finfo(np.float32).eps
        off = np.abs(ts * fps - np.round(ts * fps)) / fps > tol
        steps = np.abs(np.diff(ts) - 1.0 / fps) > 2 * tol[1:]
        bad = np.flatnonzero(off | np.concatenate([[False], steps]))
        if bad.size:
            i = int(bad[0])
            out.append(Problem(rel, f"frame {i}: t={ts[i]:.6f}s is off the 1/{fps}s grid", ep, "timestamp"))
    ti = cols.get("task_index")
    if ti is not None and n and (ti.min() < 0 or ti.max() >= n_tasks):
        out.append(
            Problem(
                rel,
                f"task_index {int(ti.max())} not in meta/tasks.parquet ({n_tasks} tasks)",
                ep,
                "task_index",
            )
        )
    for key, arr in cols.items():
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
            i = int(np.flatnonzero(bad)[0])
            what = "NaN" if np.isnan(arr[i]).any() else "inf"
            out.append(Problem(rel, f"{what} at frame {i} ({int(bad.sum())} bad frame(s))", ep, key))


def _check_data(root: Path, info: dict, index: EpisodeIndex, n_tasks: int, out: list[Problem], tick) -> None:
    for loc, eps in _episodes_by_file(index, "data").items():
        rel = layout.data_relpath(info, *loc)
        tick()
        first = int(index.columns["dataset_from_index"][eps[0]])
        expected = int(index.columns["dataset_to_index"][eps[-1]]) - first
        if not (root / rel).is_file():
            out.append(Problem(rel, f"data file missing (episodes {eps[0]}..{eps[-1]})", eps[0]))
            continue
        try:
            table = pq.read_table(root / rel)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises OSError or ArrowInvalid for truncation
            out.append(Problem(rel, f"unreadable parquet (truncated or corrupt): {exc}", eps[0]))
            continue
        _check_schema(rel, eps[0], table.schema, info, out)
        if table.num_rows < expected:
            out.append(Problem(rel, f"{table.num_rows} rows, episode metadata expects {expected}", eps[-1]))
            continue
        if table.num_rows > expected:
            out.append(
                Problem(
                    rel,
                    f"{table.num_rows - expected} row(s) past the last episode: leftover of an "
                    "interrupted write (LeRobotWriter.open repairs it)",
                    eps[-1],
                    severity="warning",
                )
            )
        keys = [
            k
            for k, ft in info["features"].items()
            if ft["dtype"] not in layout.VISUAL_DTYPES and k in table.column_names
        ]
        cols = {}
        for k in keys:
            try:
                cols[k] = column_to_numpy(table.column(k))
            except ValueError as exc:
                out.append(Problem(rel, str(exc), eps[0], k))
        for ep in eps:
            lo = int(index.columns["dataset_from_index"][ep])
            hi = int(index.columns["dataset_to_index"][ep])
            part = {k: v[lo - first : hi - first] for k, v in cols.items()}
            _check_rows(rel, ep, part, lo, int(info["fps"]), info, n_tasks, out)


def _check_videos(root: Path, info: dict, index: EpisodeIndex, out: list[Problem], tick) -> None:
    fps = float(info["fps"])
    tol = 0.5 / fps
    for key in layout.video_keys(info):
        if f"videos/{key}/chunk_index" not in index.columns:
            out.append(Problem(layout.EPISODES_DIR, "no video location columns", None, key))
            continue
        h, w = info["features"][key]["shape"][:2]
        for loc, eps in _episodes_by_file(index, f"videos/{key}").items():
            rel = layout.video_relpath(info, key, *loc)
            tick()
            if not (root / rel).is_file():
                out.append(Problem(rel, f"video file missing (episodes {eps[0]}..{eps[-1]})", eps[0], key))
                continue
            try:
                with av.open(str(root / rel)) as c:
                    stream = c.streams.video[0]
                    size = (stream.height, stream.width)
                times = frame_times(root / rel)
            except (av.FFmpegError, IndexError, OSError) as exc:
                out.append(Problem(rel, f"unreadable video: {exc}", eps[0], key))
                continue
            if size != (h, w):
                out.append(
                    Problem(rel, f"frames are {size[0]}x{size[1]}, info.json says {h}x{w}", eps[0], key)
                )
            for ep in eps:
                begin = float(index.columns[f"videos/{key}/from_timestamp"][ep])
                end = float(index.columns[f"videos/{key}/to_timestamp"][ep])
                n = int(((times >= begin - tol) & (times < end - tol)).sum())
                length = int(index.columns["length"][ep])
                if n != length:
                    out.append(
                        Problem(
                            rel,
                            f"{n} frames in [{begin:.3f}s, {end:.3f}s), the episode has {length} "
                            "(short or truncated mp4?)",
                            ep,
                            key,
                        )
                    )
            last_end = float(index.columns[f"videos/{key}/to_timestamp"][eps[-1]])
            if times.size and times[-1] >= last_end - tol:
                extra = int((times >= last_end - tol).sum())
                out.append(
                    Problem(
                        rel,
                        f"{extra} frame(s) past the last episode: leftover of an interrupted "
                        "write (LeRobotWriter.open repairs it)",
                        eps[-1],
                        key,
                        "warning",
                    )
                )


def _check_episodes(
    info: dict, index: EpisodeIndex, n_tasks: int, tasks: list[str], out: list[Problem]
) -> None:
    meta = layout.EPISODES_DIR
    n_ep = index.num_episodes
    if n_ep != int(info["total_episodes"]):
        out.append(
            Problem(
                layout.INFO_PATH,
                f"total_episodes is {info['total_episodes']}, meta/episodes has {n_ep}",
                field="total_episodes",
            )
        )
    if n_ep == 0:
        return
    lengths = index.columns["length"]
    lo, hi = index.columns["dataset_from_index"], index.columns["dataset_to_index"]
    for ep in range(n_ep):
        if hi[ep] - lo[ep] != lengths[ep]:
            out.append(
                Problem(meta, f"length {lengths[ep]} but index range [{lo[ep]}, {hi[ep]})", ep, "length")
            )
        want_lo = 0 if ep == 0 else hi[ep - 1]
        if lo[ep] != want_lo:
            out.append(
                Problem(meta, f"dataset_from_index {lo[ep]}, expected {want_lo}", ep, "dataset_from_index")
            )
        for task in index.episode_tasks[ep] or []:
            if task not in tasks:
                out.append(Problem(meta, f"task {task!r} is not in meta/tasks.parquet", ep, "tasks"))
    if int(hi[-1]) != int(info["total_frames"]):
        out.append(
            Problem(
                layout.INFO_PATH,
                f"total_frames is {info['total_frames']}, episodes end at {hi[-1]}",
                field="total_frames",
            )
        )
    if n_tasks != int(info.get("total_tasks", n_tasks)):
        out.append(
            Problem(
                layout.INFO_PATH,
                f"total_tasks is {info['total_tasks']}, meta/tasks.parquet has {n_tasks}",
                field="total_tasks",
            )
        )


def _check_stats(root: Path, info: dict, out: list[Problem]) -> None:
    import json

    path = root / layout.STATS_PATH
    if not path.exists():
        out.append(Problem(layout.STATS_PATH, "missing (normalization needs it)", severity="warning"))
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        out.append(Problem(layout.STATS_PATH, f"invalid JSON: {exc}"))
        return
    for key in info["features"]:
        if key not in data:
            out.append(Problem(layout.STATS_PATH, "no stats for this feature", field=key, severity="warning"))
            continue
        for stat in ("mean", "std", "min", "max"):
            value = np.asarray(data[key].get(stat, np.nan), dtype=np.float64)
            if not np.all(np.isfinite(value)):
                out.append(Problem(layout.STATS_PATH, f"'{stat}' is missing or not finite", field=key))


def validate(root: str | Path, *, videos: bool = True, progress: Progress | None = None) -> list[Problem]:
    """All problems found in the dataset at ``root`` (empty list: valid). Reads every data file."""
    root = Path(root)
    out: list[Problem] = []
    try:
        info = layout.load_info(root)
        index = EpisodeIndex.load(root, info)
    except DatasetError as exc:
        return exc.problems
    if index.extra_episodes:
        out.append(
            Problem(
                layout.EPISODES_DIR,
                f"{index.extra_episodes} episode row(s) past info.json's total_episodes: "
                "leftover of an interrupted write (LeRobotWriter.open repairs it)",
                severity="warning",
            )
        )
    if (root / TMP_DIRNAME).is_dir() and any((root / TMP_DIRNAME).iterdir()):
        out.append(Problem(TMP_DIRNAME, "temporary files of an interrupted write", severity="warning"))
    tasks = index.tasks
    if len(read_tasks(root)) > len(tasks):
        out.append(
            Problem(
                layout.TASKS_PATH,
                "tasks past info.json's total_tasks: leftover of an interrupted write",
                severity="warning",
            )
        )
    _check_episodes(info, index, len(tasks), tasks, out)
    if index.num_episodes == 0:
        return out
    n_videos = (
        sum(
            len(_episodes_by_file(index, f"videos/{k}"))
            for k in layout.video_keys(info)
            if f"videos/{k}/chunk_index" in index.columns
        )
        if videos
        else 0
    )
    total, done = len(_episodes_by_file(index, "data")) + n_videos, [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    _check_data(root, info, index, len(tasks), out, tick)
    if videos:
        _check_videos(root, info, index, out, tick)
    _check_stats(root, info, out)
    return out


def check(root: str | Path, *, videos: bool = True) -> list[Problem]:
    """Like :func:`validate` but raises :class:`DatasetError` on errors; returns the warnings."""
    problems = validate(root, videos=videos)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DatasetError(errors)
    return problems
