"""Merge several LeRobot v3.0 datasets into one (``robolearn merge IN... OUT``).

What the merged dataset holds:

- every episode of every input, in input order, re-indexed from 0 (frames, ``index`` and the
  episode metadata follow); the tasks table is the union of the inputs' instructions, and each
  frame keeps its own instruction;
- camera features decoded from the inputs and encoded again with the first input's codec (a
  video segment cannot be cut out of a shared mp4 file without re-encoding); numeric columns are
  copied exactly, and ``meta/stats.json`` is recomputed from the frames written;
- each episode's ``seed`` and source ``env`` (the ``meta/episodes`` columns), where every input
  records them: the env comes from an input's ``env`` column or, for a single-env dataset, from its
  ``info.json`` ``robolearn.env``;
- ``info.json`` ``robolearn.env``: the union of the inputs' envs (one name stays a name), with
  ``robolearn.env_config`` the config of each.

The inputs must have identical features and one fps; an env recorded by two inputs must carry the
same config, and a seed may appear once per env. Any violation is an error naming both datasets
and what differs. The output is written into a temporary sibling folder and renamed into place
when complete: an interrupted or failed merge leaves no ``OUT``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robolearn.data import layout
from robolearn.data.errors import DatasetError

_COMMIT_EVERY = 16


class MergeError(ValueError):
    """The inputs cannot be merged; the message names the datasets and what differs."""


@dataclass
class MergeSummary:
    """What :func:`merge_datasets` wrote."""

    out: Path
    episodes: int
    frames: int
    inputs: int
    envs: list[str] = field(default_factory=list)
    tasks: int = 0
    seeds: bool = False
    """Whether the merged episodes record their seeds (every input did)."""


def spec_difference(a, b) -> tuple[str, str] | None:
    """None when feature specs ``a`` and ``b`` agree (dtype, shape, and element names where both
    declare them); else how each reads, with the element names only when they are what differs."""
    if a is None or b is None:
        if a is b:
            return None
        return tuple("absent" if s is None else f"{s.dtype} {list(s.shape)}" for s in (a, b))
    if (a.dtype, tuple(a.shape)) != (b.dtype, tuple(b.shape)):
        return f"{a.dtype} {list(a.shape)}", f"{b.dtype} {list(b.shape)}"
    if a.names and b.names and tuple(a.names) != tuple(b.names):
        return f"named {list(a.names)}", f"named {list(b.names)}"
    return None


def _source(info: dict) -> tuple[list[str], dict[str, dict]]:
    """(envs, env -> config) an ``info.json`` records (empty for data without a source block)."""
    block = info.get("robolearn")
    env = block.get("env") if isinstance(block, dict) else None
    if env is None:
        return [], {}
    if isinstance(env, str):
        return [env], {env: dict(block.get("env_config") or {})}
    configs = block.get("env_config") or {}
    return list(env), {e: dict(configs.get(e) or {}) for e in env}


@dataclass
class _Input:
    path: Path
    reader: Any
    envs: list[str]
    configs: dict[str, dict]

    def episode_env(self, ep: int) -> str | None:
        env = self.reader.episode_meta(ep).get("env")
        if env is not None:
            return str(env)
        return self.envs[0] if len(self.envs) == 1 else None

    def episode_seed(self, ep: int) -> int | None:
        seed = self.reader.episode_meta(ep).get("seed")
        return None if seed is None else int(seed)


def _open_inputs(paths: Sequence[Path]) -> list[_Input]:
    from robolearn.data.reader import LeRobotReader

    inputs = []
    for path in paths:
        try:
            reader = LeRobotReader(path)
        except DatasetError as exc:
            raise MergeError(f"{path}: {exc}") from None
        envs, configs = _source(reader.info)
        inputs.append(_Input(path, reader, envs, configs))
    return inputs


def _user_features(reader) -> dict:
    return {k: s for k, s in reader.features.items() if k not in layout.BOOKKEEPING}


def check_compatible(inputs: list[_Input]) -> None:
    """Features, fps, env configs and (env, seed) pairs must agree; :class:`MergeError` otherwise."""
    first = inputs[0]
    base = _user_features(first.reader)
    configs: dict[str, tuple[Path, dict]] = {}
    for inp in inputs:
        feats = _user_features(inp.reader)
        for key in sorted(set(base) | set(feats)):
            diff = spec_difference(base.get(key), feats.get(key))
            if diff:
                raise MergeError(
                    f"feature {key!r} is {diff[0]} in {first.path} but {diff[1]} in {inp.path}: "
                    "merged datasets need identical features"
                )
        if inp.reader.fps != first.reader.fps:
            raise MergeError(f"fps is {first.reader.fps} in {first.path} but {inp.reader.fps} in {inp.path}")
        for env, cfg in inp.configs.items():
            if env in configs and configs[env][1] != cfg:
                other, old = configs[env]
                key = next(k for k in sorted(set(old) | set(cfg)) if old.get(k) != cfg.get(k))
                raise MergeError(
                    f"{env} is recorded with env config {key}={old.get(key)!r} in {other} but "
                    f"{cfg.get(key)!r} in {inp.path}: one env, one config"
                )
            configs.setdefault(env, (inp.path, cfg))
    seen: dict[tuple[str | None, int], tuple[Path, int]] = {}
    for inp in inputs:
        for ep in range(inp.reader.num_episodes):
            seed = inp.episode_seed(ep)
            if seed is None:
                continue
            key = (inp.episode_env(ep), seed)
            if key in seen:
                where, other_ep = seen[key]
                env = f" of {key[0]}" if key[0] else ""
                raise MergeError(
                    f"seed {seed}{env} is in {where} (episode {other_ep}) and in {inp.path} (episode {ep}): "
                    "a seed names one episode; merge datasets collected from disjoint seeds (collect --seed N)"
                )
            seen[key] = (inp.path, ep)


def _codec(inputs: list[_Input]) -> str | None:
    from robolearn.data.video import ENCODERS

    info = inputs[0].reader.info
    for key in layout.video_keys(info):
        codec = info["features"][key].get("info", {}).get("video.codec")
        if codec:
            return ENCODERS.get(codec, codec)
    return None


def merge_datasets(
    inputs: Sequence[str | Path], out: str | Path, *, overwrite: bool = False, progress: bool = True
) -> MergeSummary:
    """Write the datasets ``inputs`` as one LeRobot v3.0 dataset at ``out`` (module docstring)."""
    from robolearn.data.convert.atomic import atomic_output
    from robolearn.data.convert.episode import ConversionError
    from robolearn.data.writer import LeRobotWriter
    from robolearn.progress import progress as show_progress

    paths, out = [Path(p) for p in inputs], Path(out)
    if len(paths) < 2:
        raise MergeError(f"merge needs at least two input datasets, found {len(paths)}")
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise MergeError(f"an input dataset is given twice: {', '.join(map(str, paths))}")
    if out.resolve() in resolved:
        raise MergeError(f"{out}: the output must not be one of the inputs")
    opened = _open_inputs(paths)
    try:
        check_compatible(opened)
        envs = list(dict.fromkeys(e for inp in opened for e in inp.envs))
        configs = {e: cfg for inp in opened for e, cfg in inp.configs.items()}
        counts = [inp.reader.num_episodes for inp in opened]
        per_ep_env = len(envs) > 1 and all(
            inp.episode_env(ep) is not None for inp in opened for ep in range(inp.reader.num_episodes)
        )
        seeds = all(
            inp.episode_seed(ep) is not None for inp in opened for ep in range(inp.reader.num_episodes)
        )
        robots = {inp.reader.robot_type for inp in opened}
        first = opened[0].reader
        source: dict[str, Any] = {}
        if len(envs) == 1:
            source = {"env": envs[0], "env_config": configs[envs[0]]}
        elif envs:
            source = {"env": envs, "env_config": configs}
        bar = show_progress(total=sum(counts), desc="merge", unit="ep", enabled=progress)
        frames = 0
        try:
            with atomic_output(out, overwrite=overwrite) as tmp:
                feats = _user_features(first)
                writer = LeRobotWriter(tmp, fps=first.fps, features=feats,
                                       robot_type=robots.pop() if len(robots) == 1 else None,
                                       use_videos=not any(s.dtype == "image" for s in feats.values()),
                                       vcodec=_codec(opened), commit_every=_COMMIT_EVERY, **source)  # fmt: skip
                with writer:
                    for inp in opened:
                        for ep in range(inp.reader.num_episodes):
                            frames += _copy_episode(inp, ep, writer, seeds, per_ep_env)
                            bar.update(1)
        except ConversionError as exc:
            raise MergeError(str(exc)) from None
        finally:
            bar.close()
        tasks = len(dict.fromkeys(t for inp in opened for t in inp.reader.tasks))
        return MergeSummary(out, sum(counts), frames, len(opened), envs, tasks, seeds)
    finally:
        for inp in opened:
            inp.reader.close()


def _copy_episode(inp: _Input, ep: int, writer, seeds: bool, per_ep_env: bool) -> int:
    """Append episode ``ep`` of ``inp`` to ``writer``; returns its frame count."""
    reader = inp.reader
    feats = _user_features(reader)
    numeric = [k for k in feats if k in reader.numeric_keys]
    cols = reader.episode_columns(ep, [*numeric, "task_index"])
    n = int(reader.episode_lengths[ep])
    cams = {
        k: reader.frames(ep, k, np.arange(n)) for k, s in feats.items() if s.dtype in layout.VISUAL_DTYPES
    }
    task_index = np.asarray(cols["task_index"]).reshape(-1)
    for t in range(n):
        frame = {k: np.asarray(cols[k][t]).reshape(feats[k].shape) for k in numeric}
        frame.update({k: v[t] for k, v in cams.items()})
        writer.add_frame(frame, task=reader.task(int(task_index[t])))
    try:
        writer.save_episode(
            seed=inp.episode_seed(ep) if seeds else None, env=inp.episode_env(ep) if per_ep_env else None
        )
    except ValueError as exc:
        raise MergeError(f"{inp.path} episode {ep}: {exc}") from None
    return n


def summary_json(summary: MergeSummary) -> dict[str, Any]:
    """The summary as plain JSON types."""
    return {**summary.__dict__, "out": str(summary.out)}


__all__ = [
    "MergeError",
    "MergeSummary",
    "check_compatible",
    "merge_datasets",
    "spec_difference",
    "summary_json",
]
