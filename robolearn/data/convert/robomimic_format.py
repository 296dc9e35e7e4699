"""robomimic's HDF5 layout, read and written.

Layout: ``data/demo_<n>/{obs/<key>, actions, rewards, dones}``, per-demo attribute
``num_samples``, ``data`` attributes ``total`` and ``env_args`` (a JSON string with ``env_name``,
``type``, ``env_kwargs``), optional ``mask/<filter_key>`` lists of demo names. ``next_obs`` is
neither read nor written (behaviour cloning does not load it: ``hdf5_load_next_obs=False``).

Reading a foreign file maps keys like this:

* ``observation.state`` = concatenation of ``state_keys`` (default ``robot0_eef_pos``,
  ``robot0_eef_quat``, ``robot0_gripper_qpos``, those present), dtype kept (robomimic stores
  float64); ``names`` label each element (``robot0_eef_pos_0`` ...) so every column's origin shows;
* ``object`` -> ``observation.environment_state``;
* ``<cam>_image`` (T, H, W, 3) -> ``observation.images.<cam>``; ``*_depth`` is skipped (noted);
* every other obs key ``k`` -> ``observation.k``;
* ``actions`` -> ``action``, ``rewards`` -> ``next.reward``, ``dones`` -> ``next.done`` (bool).

Writing uses the reverse names (``observation.state`` -> ``obs/state``, cameras ->
``obs/<cam>_image``, ``observation.environment_state`` -> ``obs/object``) and stores the exact
mapping, fps, feature specs and tasks in the ``data`` attribute ``robolearn`` (JSON), so reading
our own output back is lossless. ``rewards``/``dones`` are always written (zeros / done at the last
step when the source has none) because robomimic's default ``dataset_keys`` loads them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robolearn.data.convert.episode import (
    ConversionError,
    Episode,
    EpisodeSource,
    check_episode,
    image_spec,
    is_visual,
    looks_like_image,
    scalar_shape,
    to_uint8_images,
)
from robolearn.types import (
    ACTION,
    DONE,
    OBS_ENV_STATE,
    OBS_IMAGE_PREFIX,
    OBS_STATE,
    REWARD,
    FeatureSpec,
    image_key,
)

ATTR = "robolearn"
DEFAULT_STATE_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
_TOP = {ACTION: "actions", REWARD: "rewards", DONE: "dones"}


def _demo_sort_key(name: str) -> tuple[int, str]:
    m = re.search(r"(\d+)$", name)
    return (int(m.group(1)) if m else 1 << 62, name)


def feature_to_h5(key: str) -> str:
    """Where a robolearn feature lives inside ``data/demo_<n>/`` when we write it."""
    if key in _TOP:
        return _TOP[key]
    if key == OBS_STATE:
        return "obs/state"
    if key == OBS_ENV_STATE:
        return "obs/object"
    if key.startswith(OBS_IMAGE_PREFIX):
        return f"obs/{key[len(OBS_IMAGE_PREFIX) :]}_image"
    if key.startswith("observation."):
        return f"obs/{key[len('observation.') :]}"
    return key.replace(".", "_").replace("/", "_")


@dataclass
class RobomimicSource(EpisodeSource):
    """A robomimic HDF5 file opened for conversion.

    ``state_keys`` picks the obs keys concatenated into ``observation.state`` (foreign files only);
    ``filter_key`` reads only the demos listed in ``mask/<filter_key>``; ``fps`` and ``task`` fill
    in what the file does not record.
    """

    task: str | None = None
    state_keys: tuple[str, ...] = DEFAULT_STATE_KEYS
    filter_key: str | None = None
    env_args: dict[str, Any] = field(default_factory=dict)
    _file: Any = None
    _demos: list[str] = field(default_factory=list)
    _paths: dict[str, tuple[str, ...]] = field(default_factory=dict)  # feature -> h5 paths (concatenated)
    _tasks: list[str] = field(default_factory=list)

    format_name = "robomimic"

    def __post_init__(self) -> None:
        import h5py

        if self.path.is_dir():
            raise ConversionError(f"{self.path}: is a directory, not a robomimic HDF5 file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            reason = str(exc).splitlines()[0][:160]
            raise ConversionError(f"{self.path}: cannot open as HDF5 ({reason})") from exc
        try:
            self._load_meta()
        except BaseException:
            self.close()
            raise

    def _load_meta(self) -> None:
        f, p = self._file, self.path
        if "data" not in f:
            raise ConversionError(f"{p}: no 'data' group (not a robomimic dataset)")
        data = f["data"]
        demos = sorted((k for k in data.keys() if k.startswith("demo")), key=_demo_sort_key)
        if self.filter_key is not None:
            if f"mask/{self.filter_key}" not in f:
                raise ConversionError(f"{p}: no filter key mask/{self.filter_key}")
            keep = {x.decode() if isinstance(x, bytes) else str(x) for x in f[f"mask/{self.filter_key}"][:]}
            demos = [d for d in demos if d in keep]
        if not demos:
            raise ConversionError(f"{p}: no demos under data/")
        self._demos = demos
        try:
            self.env_args = json.loads(data.attrs.get("env_args", "{}"))
        except (TypeError, json.JSONDecodeError) as exc:
            raise ConversionError(f"{p}: data attribute env_args is not valid JSON ({exc})") from exc
        info = json.loads(data.attrs[ATTR]) if ATTR in data.attrs else None
        first = data[demos[0]]
        if info:
            self._paths = {k: (v,) for k, v in info["keys"].items()}
            for k, s in info["features"].items():
                names = None if s["dtype"] in ("image", "video") or not s.get("names") else tuple(s["names"])
                self.features[k] = FeatureSpec(s["dtype"], tuple(s["shape"]), names)
        else:
            self._map_foreign(first)
        fps = (info or {}).get("fps") or self.fps or self.env_args.get("env_kwargs", {}).get("control_freq")
        if not fps:
            raise ConversionError(
                f"{p}: the file records no frame rate (no env_kwargs.control_freq); pass --fps"
            )
        self.fps = float(fps)
        self.robot_type = (info or {}).get("robot_type") or self.robot_type
        if info and len(info.get("episode_tasks", [])) == len(data.keys()):
            by_demo = dict(zip(sorted(data.keys(), key=_demo_sort_key), info["episode_tasks"], strict=True))
            self._tasks = [info["tasks"][by_demo[d]] for d in demos]
        else:
            default = self.task or self.env_args.get("env_name") or p.stem
            self._tasks = [default] * len(demos)
            if not self.task:
                self.notes.append(f"{p.name}: no task recorded; using {default!r} (pass --task)")
        self.num_episodes = len(demos)

    def _map_foreign(self, demo: Any) -> None:
        where = f"{self.path} {demo.name.rsplit('/', 1)[-1]}"
        if "actions" not in demo:
            raise ConversionError(f"{where}: missing 'actions'")
        obs = demo["obs"] if "obs" in demo else {}
        state = [k for k in self.state_keys if k in obs]
        if self.state_keys != DEFAULT_STATE_KEYS and len(state) < len(self.state_keys):
            absent = [k for k in self.state_keys if k not in obs]
            raise ConversionError(f"{where}: state key(s) {absent} not in obs (have {sorted(obs.keys())})")
        if state:
            names = tuple(f"{k}_{i}" for k in state for i in range(int(np.prod(obs[k].shape[1:]))))
            dtype = np.result_type(*(obs[k].dtype for k in state))
            self._paths[OBS_STATE] = tuple(f"obs/{k}" for k in state)
            self.features[OBS_STATE] = FeatureSpec(str(dtype), (len(names),), names)
        for k in sorted(obs.keys()):
            if k in state:
                continue
            if k.endswith("_depth"):
                self.notes.append(f"{self.path.name}: skipped depth obs {k!r}")
                continue
            shape = tuple(obs[k].shape)
            if looks_like_image(shape):
                ours = image_key(k[: -len("_image")] if k.endswith("_image") else k)
                self.features[ours] = image_spec((*shape[1:3], 3))
            else:
                ours = OBS_ENV_STATE if k == "object" else f"observation.{k}"
                self.features[ours] = FeatureSpec(str(obs[k].dtype), scalar_shape(shape[1:]))
            self._paths[ours] = (f"obs/{k}",)
        for ours, name in _TOP.items():
            if name in demo:
                dtype = "bool" if ours == DONE else str(demo[name].dtype)
                self.features[ours] = FeatureSpec(dtype, scalar_shape(tuple(demo[name].shape[1:])))
                self._paths[ours] = (name,)

    def episodes(self) -> Iterator[Episode]:
        data = self._file["data"]
        for name, task in zip(self._demos, self._tasks, strict=True):
            demo = data[name]
            where = f"{self.path} {name}"
            frames: dict[str, np.ndarray] = {}
            for ours, paths in self._paths.items():
                parts = []
                for path in paths:
                    if path not in demo:
                        raise ConversionError(f"{where}: missing {path!r}")
                    arr = np.asarray(demo[path][()])
                    parts.append(arr.reshape(len(arr), -1) if len(paths) > 1 else arr)
                spec = self.features[ours]
                arr = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
                frames[ours] = (
                    to_uint8_images(arr, f"{where} {paths[0]}")
                    if is_visual(spec)
                    else arr.astype(spec.dtype, copy=False)
                )
            n = demo.attrs.get("num_samples")
            if n is not None and ACTION in frames and int(n) != len(frames[ACTION]):
                raise ConversionError(
                    f"{where}: num_samples is {int(n)} but actions has {len(frames[ACTION])} rows"
                )
            yield Episode(frames, task)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_robomimic(source: EpisodeSource, out: Path, episodes: Iterator[Episode] | None = None) -> int:
    """Write ``source`` as a robomimic HDF5 file at ``out``; returns the number of frames written.

    Cameras are gzip-compressed uint8 (T, H, W, 3) chunked per frame; ``env_args`` is the source's
    when it came from robomimic, else ``{"env_name": robot_type, "type": 2, "env_kwargs": {}}``.
    """
    import h5py

    keys = {k: feature_to_h5(k) for k in source.features}
    if len(set(keys.values())) != len(keys):
        raise ConversionError(f"{out}: feature keys collide after renaming for robomimic: {keys}")
    env_args = getattr(source, "env_args", None) or {
        "env_name": source.robot_type or "unknown",
        "type": 2,
        "env_kwargs": {},
    }
    tasks: list[str] = []
    episode_tasks: list[int] = []
    total = 0
    with h5py.File(out, "w") as f:
        data = f.create_group("data")
        for i, ep in enumerate(episodes if episodes is not None else source.episodes()):
            check_episode(ep, source.features, f"{source.path} episode {i}")
            demo = data.create_group(f"demo_{i}")
            n = len(ep)
            for key, path in keys.items():
                arr = np.asarray(ep.frames[key])
                if is_visual(source.features[key]):
                    demo.create_dataset(
                        path, data=arr, chunks=(1, *arr.shape[1:]), compression="gzip", compression_opts=4
                    )
                else:
                    arr = arr.astype(source.features[key].dtype, copy=False)
                    if path in ("rewards", "dones") and arr.ndim == 2 and arr.shape[1] == 1:
                        arr = arr[:, 0]  # robomimic keeps these (T,)
                    demo.create_dataset(path, data=arr)
            if "rewards" not in demo:
                demo.create_dataset("rewards", data=np.zeros(n, dtype=np.float32))
            if "dones" not in demo:
                dones = np.zeros(n, dtype=np.int64)
                dones[-1] = 1
                demo.create_dataset("dones", data=dones)
            demo.attrs["num_samples"] = n
            total += n
            if ep.task not in tasks:
                tasks.append(ep.task)
            episode_tasks.append(tasks.index(ep.task))
        if not episode_tasks:
            raise ConversionError(f"{source.path}: no episodes to write")
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps(env_args)
        data.attrs[ATTR] = json.dumps(
            {
                "fps": source.fps,
                "robot_type": source.robot_type,
                "keys": {k: p for k, p in keys.items()},
                "features": {k: s.to_json() for k, s in source.features.items()},
                "tasks": tasks,
                "episode_tasks": episode_tasks,
            }
        )
    return total
