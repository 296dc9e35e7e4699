"""Episode-aware windows over a LeRobot v3.0 dataset, as a map-style torch ``Dataset``.

Sample ``i`` is frame ``t`` of one episode (every frame is a sample, as in LeRobot). With an
observation horizon ``To`` and an action horizon ``Ta`` it returns::

    observation.*      frames t-(To-1) .. t                 (To, D) / images (To, 3, H, W) in [0, 1]
    action             frames t-(To-1) .. t-(To-1)+Ta-1     (Ta, Da)
    <key>_is_pad       True where a step fell outside the episode (bool, per step)
    task, index, episode_index, frame_index

The action chunk starts at the first observation step (diffusion_policy's and LeRobot's diffusion
convention). Steps outside the episode repeat the edge frame and are flagged in the mask.
``delta_timestamps`` (key -> offsets in seconds, LeRobot's semantics) replaces the horizons.

Nothing is loaded up front beyond the episode metadata: numeric columns come from the reader's
memory-mapped row groups, camera frames are decoded per window (one seek per video per window,
since a window's frames are consecutive). Readers and decoders reopen their files after a fork,
so ``DataLoader(num_workers=N)`` works; the dataset also pickles (spawn) by reopening on load.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from robolearn.data import layout
from robolearn.data.dataset_stats import compute_stats
from robolearn.data.reader import LeRobotReader
from robolearn.types import ACTION, EPISODE_INDEX, FRAME_INDEX, INDEX, TASK, TASK_INDEX, FeatureSpec

NORM_STATS = ("mean", "std", "min", "max", "q01", "q99")
"""The statistics :attr:`WindowedDataset.stats` returns per feature."""
_OBS_PREFIX = "observation."
_TOLERANCE_S = 1e-4  # LeRobot's tolerance for delta timestamps off the frame grid

ImageTransform = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- windows
def horizon_deltas(
    obs_keys: Sequence[str], action_keys: Sequence[str], obs_horizon: int, action_horizon: int
) -> dict[str, np.ndarray]:
    """Frame offsets for the horizon convention: observations ``1-To .. 0``, actions ``1-To .. 1-To+Ta-1``."""
    if obs_horizon < 1 or action_horizon < 1:
        raise ValueError(
            f"obs_horizon and action_horizon must be >= 1, found {obs_horizon} and {action_horizon}"
        )
    first = 1 - obs_horizon
    deltas = {k: np.arange(first, 1, dtype=np.int64) for k in obs_keys}
    deltas.update({k: np.arange(first, first + action_horizon, dtype=np.int64) for k in action_keys})
    return deltas


def deltas_from_timestamps(
    delta_timestamps: Mapping[str, Sequence[float]], fps: int, tolerance_s: float = _TOLERANCE_S
) -> dict[str, np.ndarray]:
    """LeRobot's ``delta_timestamps`` (seconds) -> frame offsets; each must lie on the 1/fps grid."""
    out: dict[str, np.ndarray] = {}
    for key, seconds in delta_timestamps.items():
        secs = np.asarray(list(seconds), dtype=np.float64)
        if secs.ndim != 1 or secs.size == 0:
            raise ValueError(
                f"delta_timestamps[{key!r}]: expected a non-empty list of seconds, found {seconds!r}"
            )
        frames = np.round(secs * fps)
        off = np.abs(secs - frames / fps)
        if np.any(off > tolerance_s):
            bad = float(secs[int(np.argmax(off))])
            raise ValueError(
                f"delta_timestamps[{key!r}]: {bad} s is not a multiple of 1/fps = {1 / fps:.6f} s "
                f"(fps {fps}, tolerance {tolerance_s} s)"
            )
        out[key] = frames.astype(np.int64)
    return out


def split_episodes(
    num_episodes: int, val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Deterministic split by episode: ``(train_ids, val_ids)``, each sorted, disjoint, covering all.

    At least one validation episode when ``val_fraction > 0`` and there are two episodes or more.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), found {val_fraction}")
    if num_episodes < 0:
        raise ValueError(f"num_episodes must be >= 0, found {num_episodes}")
    n_val = int(round(num_episodes * val_fraction))
    if val_fraction > 0 and num_episodes >= 2:
        n_val = min(max(n_val, 1), num_episodes - 1)
    perm = np.random.default_rng(seed).permutation(num_episodes)
    return sorted(int(e) for e in perm[n_val:]), sorted(int(e) for e in perm[:n_val])


# --------------------------------------------------------------------------- dataset
def _row_groups_in(root: Path, cache_mb: float) -> int:
    """How many decoded row groups (episodes, every non-video column) fit in ``cache_mb``."""
    info = layout.load_info(root)
    per_frame = 0
    for ft in info["features"].values():
        if ft["dtype"] != "video":
            size = np.dtype("uint8" if ft["dtype"] == "image" else ft["dtype"]).itemsize
            per_frame += size * int(np.prod(ft["shape"]))
    per_group = per_frame * max(1.0, int(info["total_frames"]) / max(1, int(info["total_episodes"])))
    return int(min(max(cache_mb * 2**20 / per_group, 4), 1_000_000))


class WindowedDataset(Dataset):
    """Windows of observations and action chunks around every frame of the chosen episodes.

    Args:
        root: dataset folder (LeRobot v3.0).
        obs_horizon: ``To``, observation frames ending at the current frame ``t``.
        action_horizon: ``Ta``, action steps starting at ``t - (To - 1)``.
        obs_keys: observation features to return (default: every ``observation.*`` feature).
        action_key: the action feature (``None``: no actions, e.g. for an encoder-only dataset).
        episodes: a subset of episode indices (default: all); samples follow this order.
        delta_timestamps: ``{key: [seconds, ...]}`` as in LeRobot; replaces the horizons. Keys in it
            are windowed; the other requested keys come back as the current frame only (no time axis,
            no mask), as LeRobot does.
        image_transform: applied to each camera's ``(To, 3, H, W)`` float window (e.g. from
            :mod:`robolearn.data.transforms`); randomness from torch's global generator, which
            DataLoader seeds per worker.
        extra_keys: more features to return (e.g. ``next.reward``); they take the action window.
        cache_mb: per-process budget for decoded numeric row groups (one per episode, LRU), the only
            memory that grows with the dataset besides the memory-mapped files; each DataLoader
            worker has its own.
        video_cache_mb: per-process budget for decoded camera frames (uint8, whole episodes, LRU).
            0 (default) seeks and decodes the frames of every sample; a budget that holds the
            dataset decodes each episode once, which is what image training on a CPU wants
            (a 96x96 camera costs 27 KB a frame).
    """

    def __init__(
        self,
        root: str | Path,
        obs_horizon: int = 2,
        action_horizon: int = 16,
        obs_keys: Sequence[str] | None = None,
        action_key: str | None = ACTION,
        episodes: Sequence[int] | None = None,
        delta_timestamps: Mapping[str, Sequence[float]] | None = None,
        image_transform: ImageTransform | None = None,
        extra_keys: Sequence[str] = (),
        cache_mb: float = 256.0,
        video_cache_mb: float = 0.0,
    ):
        self.root = Path(root)
        self._args = dict(obs_horizon=obs_horizon, action_horizon=action_horizon, obs_keys=obs_keys,
                          action_key=action_key, delta_timestamps=delta_timestamps,
                          image_transform=image_transform, extra_keys=tuple(extra_keys), cache_mb=cache_mb,
                          video_cache_mb=video_cache_mb)  # fmt: skip
        self.reader = reader = LeRobotReader(self.root, cache_row_groups=_row_groups_in(self.root, cache_mb))
        self.fps = reader.fps
        if obs_keys is None:
            obs_keys = [k for k in reader.features if k.startswith(_OBS_PREFIX)]
        act = [] if action_key is None else [action_key]
        if delta_timestamps is not None:
            self.delta_indices = deltas_from_timestamps(delta_timestamps, self.fps)
        else:
            self.delta_indices = horizon_deltas(obs_keys, [*act, *extra_keys], obs_horizon, action_horizon)
        self.keys: list[str] = list(dict.fromkeys([*obs_keys, *act, *extra_keys, *self.delta_indices]))
        for key in self.keys:
            if key not in reader.features or key in layout.BOOKKEEPING:
                usable = sorted(k for k in reader.features if k not in layout.BOOKKEEPING)
                raise KeyError(f"{self.root}: no windowable feature {key!r} (features: {usable})")
        self.image_transform = image_transform
        self._video = [k for k in self.keys if reader.features[k].dtype == "video"]
        self._png = [k for k in self.keys if reader.features[k].dtype == "image"]
        self._numeric = [k for k in self.keys if k in reader.numeric_keys]
        self._select_episodes(episodes)
        self._stats: dict[str, dict[str, np.ndarray]] | None = None
        self._video_budget = int(video_cache_mb * 2**20)
        self._video_cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._video_bytes = 0

    def _select_episodes(self, episodes: Sequence[int] | None) -> None:
        r = self.reader
        eps = (
            np.arange(r.num_episodes, dtype=np.int64)
            if episodes is None
            else np.asarray(list(episodes), np.int64)
        )
        if eps.size and (eps.min() < 0 or eps.max() >= r.num_episodes):
            bad = int(eps[(eps < 0) | (eps >= r.num_episodes)][0])
            raise IndexError(f"{self.root}: episode {bad} out of range (dataset has {r.num_episodes})")
        if len(np.unique(eps)) != len(eps):
            raise ValueError(f"episodes: duplicates in {eps.tolist()}")
        self.episodes: list[int] = eps.tolist()
        self._subset = episodes is not None and sorted(self.episodes) != list(range(r.num_episodes))
        self._from = r.episode_from[eps]
        self._len = r.episode_lengths[eps]
        self._cum = np.concatenate([[0], np.cumsum(self._len)]).astype(np.int64)
        # Per-key video location of each selected episode: (file path, start time in that file).
        self._vid_paths: dict[str, list[str]] = {k: [] for k in self._video}
        self._vid_t0: dict[str, np.ndarray] = {}
        for key in self._video:
            t0 = []
            for ep in self.episodes:
                t0.append(float(r.episode_meta(ep)[f"videos/{key}/from_timestamp"]))
                self._vid_paths[key].append(str(r.video_path(ep, key)))
            self._vid_t0[key] = np.asarray(t0, dtype=np.float64)

    # ------------------------------------------------------------------ description
    @property
    def features(self) -> dict[str, FeatureSpec]:
        """Per-frame specs of the returned features (cameras channel-last as stored: ``(H, W, 3)``)."""
        return {k: self.reader.features[k] for k in self.keys}

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        return int(self._cum[-1])

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """Normalization stats ``{key: {mean, std, min, max, q01, q99}}`` of the returned features.

        From ``meta/stats.json`` when every episode is used; over the chosen episodes only
        (:func:`compute_stats`, computed once) for a subset such as a train split.
        """
        if self._stats is None:
            full = None if self._subset else self.reader.stats
            if full is None or any(k not in full for k in self.keys):
                full = compute_stats(self.root, self.episodes, self.keys)
            self._stats = {
                k: {s: np.asarray(full[k][s]) for s in NORM_STATS if s in full[k]} for k in self.keys
            }
        return self._stats

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[WindowedDataset, WindowedDataset]:
        """Two datasets with this configuration over disjoint episodes: the split the dataset records
        (:mod:`robolearn.data.splits`, e.g. an imported robomimic file's masks) when this covers every
        episode, else :func:`split_episodes`."""
        if self._subset:
            train, val = split_episodes(self.num_episodes, val_fraction, seed)
        else:
            from robolearn.data.splits import dataset_split

            train, val = dataset_split(self.reader.info, self.num_episodes, val_fraction, seed)
        pick = self.episodes
        return (WindowedDataset(self.root, episodes=[pick[i] for i in train], **self._args),
                WindowedDataset(self.root, episodes=[pick[i] for i in val], **self._args))  # fmt: skip

    def _locate(self, i: int) -> tuple[int, int]:
        """Sample ``i`` -> (position in :attr:`episodes`, frame within the episode)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} out of range (dataset has {n})")
        i = i + n if i < 0 else i
        k = int(np.searchsorted(self._cum, i, side="right")) - 1
        return k, i - int(self._cum[k])

    def locate(self, i: int) -> tuple[int, int]:
        """Sample ``i`` -> (episode index in the dataset, frame index within the episode)."""
        k, t = self._locate(i)
        return self.episodes[k], t

    def __len__(self) -> int:
        return self.num_frames

    # ------------------------------------------------------------------ samples
    def __getitem__(self, i: int) -> dict[str, Any]:
        """Sample ``i``: numeric windows float32 ``(T, *shape)`` (e.g. state ``(To, Do)``, action
        ``(Ta, Da)``), cameras float32 ``(To, 3, H, W)`` in [0, 1], ``<key>_is_pad`` bool ``(T,)``,
        ``task`` (str) and int64 scalars ``index``, ``episode_index``, ``frame_index``.
        Integer features keep int64; bool features become float32 0/1."""
        return self.sample(i)

    def frame_key(self, i: int) -> tuple[int, int]:
        """(0, dataset frame ``index``) of sample ``i``: the key a model caches per-frame work under."""
        k, t = self._locate(int(i))
        return 0, int(self._from[k]) + t

    def sample(self, i: int, images: bool = True) -> dict[str, Any]:
        """Sample ``i`` as :meth:`__getitem__`; ``images=False`` decodes no camera frame and returns
        zeros of the camera shapes instead (for a model that has what it needs from them cached).
        With an ``image_transform`` (which may change the shape) frames are decoded regardless."""
        k, t = self._locate(int(i))
        images = images or self.image_transform is not None
        ep = self.episodes[k]
        length, start = int(self._len[k]), int(self._from[k])
        steps: dict[str, np.ndarray] = {}
        out: dict[str, Any] = {}
        for key in self.keys:
            deltas = self.delta_indices.get(key)
            raw = np.array([t], np.int64) if deltas is None else t + deltas
            steps[key] = np.clip(raw, 0, length - 1)
            if deltas is not None:
                out[f"{key}_is_pad"] = torch.from_numpy((raw < 0) | (raw >= length))
        self._read_numeric(out, steps, t, start)
        if not images:
            for key in (*self._video, *self._png):
                h, w, c = self.reader.features[key].shape
                x = torch.zeros(len(steps[key]), c, h, w)
                out[key] = x if key in self.delta_indices else x[0]
        for key in self._video if images else ():
            if self._video_budget:
                frames = self._episode_frames(key, k)[steps[key]]
            else:
                ts = self._vid_t0[key][k] + steps[key] / self.fps
                frames = self.reader.decoder.get_frames(
                    self._vid_paths[key][k], ts, tolerance_s=0.5 / self.fps
                )
            out[key] = self._images(key, frames)
        for key in self._png if images else ():
            out[key] = self._images(key, self.reader.frames(ep, key, steps[key]))
        out[EPISODE_INDEX] = torch.tensor(ep, dtype=torch.int64)
        out[FRAME_INDEX] = torch.tensor(t, dtype=torch.int64)
        out[INDEX] = torch.tensor(start + t, dtype=torch.int64)
        return out

    def _read_numeric(self, out: dict[str, Any], steps: dict[str, np.ndarray], t: int, start: int) -> None:
        """One contiguous row read covering every numeric window and the current frame."""
        lo = min([t, *(int(steps[k].min()) for k in self._numeric)])
        hi = max([t, *(int(steps[k].max()) for k in self._numeric)]) + 1
        rows = self.reader.rows(start + lo, start + hi, [*self._numeric, TASK_INDEX])
        for key in self._numeric:
            spec = self.reader.features[key]
            arr = rows[key][steps[key] - lo].reshape(len(steps[key]), *spec.shape)
            if arr.dtype.kind in "fb":
                arr = arr.astype(np.float32, copy=False)
            tensor = torch.from_numpy(np.ascontiguousarray(arr))
            out[key] = tensor if key in self.delta_indices else tensor[0]
        out[TASK] = self.reader.task(int(rows[TASK_INDEX][t - lo]))

    def _episode_frames(self, key: str, k: int) -> np.ndarray:
        """Every decoded frame (L, H, W, 3) of camera ``key`` in selected episode ``k``, LRU-cached."""
        frames = self._video_cache.get((key, k))
        if frames is not None:
            self._video_cache.move_to_end((key, k))
            return frames
        ts = self._vid_t0[key][k] + np.arange(int(self._len[k])) / self.fps
        frames = self.reader.decoder.get_frames(self._vid_paths[key][k], ts, tolerance_s=0.5 / self.fps)
        self._video_cache[(key, k)] = frames
        self._video_bytes += frames.nbytes
        while self._video_bytes > self._video_budget and len(self._video_cache) > 1:
            _, old = self._video_cache.popitem(last=False)
            self._video_bytes -= old.nbytes
        return frames

    def _images(self, key: str, frames: np.ndarray) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)`` -> float ``(T, 3, H, W)`` in [0, 1], transformed; ``(3, H, W)`` unwindowed."""
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)
        if self.image_transform is not None:
            x = self.image_transform(x)
        return x if key in self.delta_indices else x[0]

    # ------------------------------------------------------------------ pickling (spawn workers)
    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "episodes": self.episodes, "args": self._args, "stats": self._stats}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], episodes=state["episodes"], **state["args"])
        self._stats = state["stats"]

    def close(self) -> None:
        """Release open files and decoders (reopened on the next access)."""
        self.reader.close()

    def __repr__(self) -> str:
        return (f"WindowedDataset({str(self.root)!r}, episodes={self.num_episodes}, samples={len(self)}, "
                f"windows={ {k: v.tolist() for k, v in self.delta_indices.items()} })")  # fmt: skip
