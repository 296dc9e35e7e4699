"""Feature statistics over any subset of a LeRobot v3.0 dataset's episodes (a train split, a merge),
aggregated as LeRobot aggregates them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from robolearn.data import layout
from robolearn.data import stats as stats_mod
from robolearn.data.episodes import episode_files
from robolearn.data.reader import LeRobotReader


def _stored_episode_stats(
    root: Path, episodes: set[int], keys: Sequence[str]
) -> dict[int, dict[str, stats_mod.Stats]]:
    """Per-episode stats kept in ``meta/episodes`` (``stats/<key>/<stat>``), read one file at a time."""
    found: dict[int, dict[str, stats_mod.Stats]] = {}
    for path in episode_files(root):
        names = pq.read_schema(path).names
        cols = [n for n in names if n.startswith("stats/") and n[len("stats/") :].rpartition("/")[0] in keys]
        if not cols:
            continue
        table = pq.read_table(path, columns=["episode_index", *cols])
        eps = table.column("episode_index").to_numpy()
        for row in np.flatnonzero(np.isin(eps, list(episodes))):
            found[int(eps[row])] = stats_mod.unflatten_episode(table.slice(int(row), 1).to_pylist()[0])
    return found


def _episode_stats_from_data(reader: LeRobotReader, episode: int, key: str) -> stats_mod.Stats:
    if key in reader.numeric_keys:
        return stats_mod.numeric_stats(reader.episode_columns(episode, [key])[key])
    acc = stats_mod.ImageStats()
    for img in reader.frames(episode, key, np.arange(int(reader.episode_lengths[episode]))):
        acc.update(img)
    return acc.result()


def compute_stats(
    root: str | Path,
    episodes: Sequence[int] | None = None,
    keys: Sequence[str] | None = None,
    *,
    from_data: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """Stats of ``keys`` (default: every non-bookkeeping feature) over ``episodes`` (default: all).

    Streams episode by episode and aggregates with LeRobot's formulas (count-weighted mean, pooled
    variance, min of mins, max of maxes, count-weighted quantiles), so the result over all
    episodes equals ``meta/stats.json``. Per-episode stats come from ``meta/episodes`` where the
    writer stored them; ``from_data=True`` (or a missing column) recomputes numeric ones from the
    data columns and image ones by decoding the episode. Arrays follow ``stats.json``'s shapes.
    """
    reader = LeRobotReader(root)
    try:
        eps = list(range(reader.num_episodes)) if episodes is None else [int(e) for e in episodes]
        bad = [e for e in eps if not 0 <= e < reader.num_episodes]
        if bad:
            raise IndexError(f"{root}: episode {bad[0]} out of range (dataset has {reader.num_episodes})")
        if not eps:
            raise ValueError("compute_stats: no episodes selected")
        if keys is None:
            keys = [k for k in reader.features if k not in layout.BOOKKEEPING]
        missing = [k for k in keys if k not in reader.features]
        if missing:
            raise KeyError(f"{root}: no feature {missing[0]!r} (features: {sorted(reader.features)})")
        numeric = [k for k in keys if k in reader.numeric_keys]
        stored = _stored_episode_stats(
            Path(root), set(eps), [k for k in keys if not (from_data and k in numeric)]
        )
        parts: dict[str, list[stats_mod.Stats]] = {k: [] for k in keys}
        for ep in eps:
            have = stored.get(ep, {})
            for key in keys:
                st = have.get(key)
                parts[key].append(st if st is not None else _episode_stats_from_data(reader, ep, key))
        return {k: stats_mod.aggregate(v) for k, v in parts.items()}
    finally:
        reader.close()


__all__ = ["compute_stats"]
