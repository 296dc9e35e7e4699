"""diffusion_policy's zarr ReplayBuffer layout, read and written.

Layout: ``data/<key>`` arrays with time as the first axis (all episodes concatenated) and
``meta/episode_ends`` (int64, cumulative end index of each episode). A directory or a ``.zip``
(zarr ZipStore), both in zarr format 2 so that diffusion_policy (zarr 2.x) opens what we write.

Key mapping (zarr ``data/`` name <-> robolearn feature key):

=======================================  =========================================
zarr                                     robolearn
=======================================  =========================================
``action``                               ``action``
``state`` (else ``agent_pos``)           ``observation.state``
``environment_state``                    ``observation.environment_state``
``reward`` / ``done`` / ``success``      ``next.reward`` / ``next.done`` / ``next.success``
(T, H, W, C) arrays, e.g. ``camera0_rgb``  ``observation.images.camera0`` (suffix ``_rgb``/``_image``
                                         dropped; ``img`` -> ``image``); float frames -> uint8
any other array ``foo``                  ``observation.foo``
=======================================  =========================================

On write the reverse names are used, and the exact mapping plus fps, feature specs and tasks go
into the root attribute ``robolearn``, so reading our own output back is lossless.
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robolearn.data.convert.atomic import remove_path
from robolearn.data.convert.episode import (
    ConversionError,
    Episode,
    EpisodeSource,
    array_spec,
    check_episode,
    image_spec,
    is_visual,
    looks_like_image,
    to_uint8_images,
)
from robolearn.types import ACTION, DONE, OBS_ENV_STATE, OBS_STATE, REWARD, SUCCESS, FeatureSpec, image_key

ATTR = "robolearn"
_FIXED = {
    ACTION: "action",
    OBS_STATE: "state",
    OBS_ENV_STATE: "environment_state",
    REWARD: "reward",
    DONE: "done",
    SUCCESS: "success",
}
_READ_ALIASES = {"agent_pos": OBS_STATE, "robot_state": OBS_STATE}
_TARGET_CHUNK_BYTES = 2_000_000


def _camera_name(zkey: str) -> str:
    if zkey == "img":
        return "image"
    for suffix in ("_rgb", "_image"):
        if zkey.endswith(suffix) and len(zkey) > len(suffix):
            return zkey[: -len(suffix)]
    return zkey


def zarr_key_to_feature(zkey: str, shape: tuple[int, ...]) -> str:
    """The robolearn key for a foreign ``data/<zkey>`` array of full shape (T, ...)."""
    for ours, theirs in _FIXED.items():
        if zkey == theirs:
            return ours
    if zkey in _READ_ALIASES:
        return _READ_ALIASES[zkey]
    if looks_like_image(shape):
        return image_key(_camera_name(zkey))
    return f"observation.{zkey}"


def feature_to_zarr_key(key: str) -> str:
    """The ``data/`` name we write for a robolearn feature key."""
    if key in _FIXED:
        return _FIXED[key]
    for prefix in ("observation.images.", "observation."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key.replace(".", "_")


def _open_group(path: Path, mode: str) -> tuple[Any, Any]:
    import zarr

    store = None
    if path.suffix == ".zip" and mode == "r":
        store = zarr.storage.ZipStore(str(path), mode="r")
        target: Any = store
    else:
        target = str(path)
    try:
        if mode == "r":
            group = zarr.open_group(target, mode="r")
        else:
            group = zarr.open_group(target, mode="w", zarr_format=2)
    except Exception as exc:
        if store is not None:
            with contextlib.suppress(Exception):  # a ZipStore that never opened cannot close
                store.close()
        raise ConversionError(f"{path}: cannot open as zarr ({type(exc).__name__}: {exc})") from exc
    return group, store


@dataclass
class ZarrSource(EpisodeSource):
    """A diffusion_policy zarr replay buffer opened for conversion.

    ``fps`` and ``task`` fill in what foreign zarrs do not record (their root has no ``robolearn``
    attribute); without a recorded or given fps opening fails.
    """

    task: str | None = None
    _group: Any = None
    _store: Any = None
    _keys: dict[str, str] = field(default_factory=dict)  # feature key -> data/ name
    _ends: np.ndarray | None = None
    _episode_tasks: list[str] = field(default_factory=list)
    _scales: dict[str, float] = field(default_factory=dict)

    format_name = "zarr"

    def __post_init__(self) -> None:
        self._group, self._store = _open_group(self.path, "r")
        try:
            self._load_meta()
        except BaseException:
            self.close()
            raise

    def _load_meta(self) -> None:
        g, p = self._group, self.path
        if "data" not in g or "meta" not in g or "episode_ends" not in g["meta"]:
            raise ConversionError(f"{p}: not a replay buffer (expected groups data/ and meta/episode_ends)")
        ends = np.asarray(g["meta"]["episode_ends"][:], dtype=np.int64)
        if len(ends) == 0:
            raise ConversionError(f"{p}: meta/episode_ends is empty (no episodes)")
        if np.any(np.diff(np.concatenate([[0], ends])) <= 0):
            raise ConversionError(
                f"{p}: meta/episode_ends must be strictly increasing, found {ends.tolist()[:10]}"
            )
        self._ends = ends
        info = dict(g.attrs).get(ATTR) or {}
        total = int(ends[-1])
        recorded: dict[str, str] = info.get("keys") or {}  # zarr name -> feature key
        self._keys = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for zkey in sorted(g["data"].keys()):
            arr = g["data"][zkey]
            if arr.shape[0] < total:
                raise ConversionError(
                    f"{p}: data/{zkey} has {arr.shape[0]} frames, expected {total} (meta/episode_ends[-1])"
                )
            ours = recorded.get(zkey) or zarr_key_to_feature(zkey, arr.shape)
            if ours in self._keys:
                ours = f"observation.{zkey}"
            self._keys[ours] = zkey
            shapes[ours] = tuple(arr.shape)
        if ACTION not in self._keys:
            self.notes.append(f"{p.name}: no data/action array")
        specs = info.get("features") or {}
        for ours, zkey in self._keys.items():
            if ours in specs:
                s = specs[ours]
                self.features[ours] = FeatureSpec(s["dtype"], tuple(s["shape"]), _names(s))
            elif looks_like_image(shapes[ours]):
                self.features[ours] = image_spec((*shapes[ours][1:3], 3))
            else:
                self.features[ours] = array_spec(np.empty((0, *shapes[ours][1:]), g["data"][zkey].dtype))
        fps = info.get("fps") or self.fps
        if not fps:
            raise ConversionError(f"{p}: the zarr does not record a frame rate; pass --fps")
        self.fps = float(fps)
        self.robot_type = info.get("robot_type") or self.robot_type
        tasks = info.get("tasks")
        index = info.get("episode_tasks")
        if tasks and index and len(index) == len(ends):
            self._episode_tasks = [tasks[i] for i in index]
        else:
            default = self.task or p.name.split(".")[0]
            self._episode_tasks = [default] * len(ends)
            if not self.task:
                self.notes.append(f"{p.name}: no task recorded; using {default!r} (pass --task)")
        self.num_episodes = len(ends)

    def episodes(self) -> Iterator[Episode]:
        assert self._ends is not None
        start = 0
        for i, end in enumerate(self._ends.tolist()):
            frames: dict[str, np.ndarray] = {}
            for ours, zkey in self._keys.items():
                arr = np.asarray(self._group["data"][zkey][start:end])
                if is_visual(self.features[ours]):
                    arr = to_uint8_images(arr, f"{self.path} data/{zkey}", self._float_scale(zkey))
                frames[ours] = arr
            start = end
            yield Episode(frames, self._episode_tasks[i])

    def _float_scale(self, zkey: str) -> float:
        """255 when a float camera array holds [0, 1] values, else 1; judged once on its head."""
        arr = self._group["data"][zkey]
        if not np.issubdtype(arr.dtype, np.floating):
            return 1.0
        if zkey not in self._scales:
            head = np.asarray(arr[: min(arr.shape[0], 64)])
            self._scales[zkey] = 255.0 if head.size and float(head.max()) <= 1.0 + 1e-6 else 1.0
        return self._scales[zkey]

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def _names(spec: dict) -> tuple[str, ...] | None:
    names = spec.get("names")
    if spec.get("dtype") in ("image", "video") or not names:
        return None
    return tuple(names)


def _chunk_len(frame_shape: tuple[int, ...], dtype: np.dtype) -> int:
    frame_bytes = max(1, int(np.prod(frame_shape, dtype=np.int64)) * dtype.itemsize)
    return int(min(10_000, max(1, _TARGET_CHUNK_BYTES // frame_bytes)))


def write_zarr(source: EpisodeSource, out: Path, episodes: Iterator[Episode] | None = None) -> int:
    """Write ``source`` as a replay buffer at ``out`` (a new directory, or a ``.zip`` file).

    Cameras are uint8 (T, H, W, 3) arrays chunked along time and compressed with Blosc-LZ4, as
    diffusion_policy does by default. Returns the number of frames written.
    """
    if out.suffix == ".zip":
        # Chunks are rewritten as episodes are appended, and a zip cannot replace a member: write a
        # directory store beside the zip, then pack it (stored, the chunks are compressed already).
        staging = out.with_name(out.name + ".staging")
        try:
            total = write_zarr(source, staging, episodes)
            with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for f in sorted(staging.rglob("*")):
                    if f.is_file():
                        zf.write(f, f.relative_to(staging).as_posix())
        finally:
            remove_path(staging)
        return total
    import numcodecs

    group, store = _open_group(out, "w")
    try:
        data, meta = group.create_group("data"), group.create_group("meta")
        keys = {k: feature_to_zarr_key(k) for k in source.features}
        if len(set(keys.values())) != len(keys):
            raise ConversionError(f"{out}: feature keys collide after renaming for zarr: {keys}")
        compressor = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.NOSHUFFLE)
        arrays = {}
        for key, spec in source.features.items():
            dtype = np.dtype(np.uint8) if is_visual(spec) else np.dtype(spec.dtype)
            arrays[key] = data.create_array(
                keys[key],
                shape=(0, *spec.shape),
                chunks=(_chunk_len(spec.shape, dtype), *spec.shape),
                dtype=dtype,
                compressors=compressor,
            )
        ends: list[int] = []
        tasks: list[str] = []
        episode_tasks: list[int] = []
        total = 0
        for i, ep in enumerate(episodes if episodes is not None else source.episodes()):
            check_episode(ep, source.features, f"{source.path} episode {i}")
            for key, arr in arrays.items():
                arr.append(np.asarray(ep.frames[key], dtype=arr.dtype))
            total += len(ep)
            ends.append(total)
            if ep.task not in tasks:
                tasks.append(ep.task)
            episode_tasks.append(tasks.index(ep.task))
        if not ends:
            raise ConversionError(f"{source.path}: no episodes to write")
        meta.create_array("episode_ends", data=np.asarray(ends, dtype=np.int64), compressors=None)
        group.attrs[ATTR] = {
            "fps": source.fps,
            "robot_type": source.robot_type,
            "keys": {z: k for k, z in keys.items()},
            "features": {k: s.to_json() for k, s in source.features.items()},
            "tasks": tasks,
            "episode_tasks": episode_tasks,
        }
    finally:
        if store is not None:
            store.close()
    return total
