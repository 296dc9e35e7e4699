"""robomimic's HDF5 layout, read (this module) and written (:mod:`.robomimic_export`).

Layout: ``data/demo_<n>/{obs/<key>, next_obs/<key>, actions, rewards, dones, states}``, per-demo
attributes ``num_samples`` (and robosuite's ``model_file``), ``data`` attributes ``total`` and
``env_args`` (JSON: ``env_name``, ``type``, ``env_kwargs``), ``mask/<filter_key>`` lists of demo
names (robomimic ships ``train`` and ``valid``). The raw file is read by :mod:`.robomimic_h5`.

Reading a foreign file keeps its names:

* ``observation.state`` = concatenation of ``state_keys`` (default ``robot0_eef_pos``,
  ``robot0_eef_quat``, ``robot0_gripper_qpos``, those present), dtype kept (robosuite stores
  float64); its ``names`` are ``<key>.<i>`` (``robot0_eef_pos.0`` ...), so the layout is in
  ``info.json`` and the export splits the vector back into those keys;
* ``object`` -> ``observation.environment_state`` (names ``object.<i>``);
* ``<cam>_image`` (T, H, W, 3) -> ``observation.images.<cam>``; ``*_depth`` is dropped (noted);
* every other obs key ``k`` -> ``observation.k``;
* ``actions`` -> ``action``, ``rewards`` -> ``next.reward``, ``dones`` -> ``next.done`` (bool),
  ``states`` (the simulator state) -> ``observation.sim_state`` (float64);
* ``next_obs``: robomimic builds it as obs shifted by one step, so it is not stored twice: only
  each demo's last numeric ``next_obs`` row goes into :attr:`Episode.meta` (a demo whose
  ``next_obs`` is not a shift is noted, and the export rebuilds it as one);
* demo names, demo attributes (``model_file``, ``ep_meta``), ``env_args``, the other ``data``
  attributes and the key mapping go into :attr:`EpisodeSource.origin` / :attr:`Episode.meta`;
  ``mask/*`` becomes :attr:`EpisodeSource.splits`; ``env_kwargs.robots`` gives ``robot_type``.

Our own output carries the ``data`` attribute ``robolearn`` (JSON: fps, feature specs, key
mapping, tasks, origin), so reading it back is lossless.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robolearn.data.convert.episode import (
    ConversionError,
    Episode,
    EpisodeSource,
    image_spec,
    is_visual,
    looks_like_image,
    scalar_shape,
    to_uint8_images,
)
from robolearn.data.convert.robomimic_h5 import H5Layout, next_obs_is_shift, read_layout
from robolearn.types import (
    ACTION,
    DONE,
    OBS_ENV_STATE,
    OBS_SIM_STATE,
    OBS_STATE,
    REWARD,
    FeatureSpec,
    image_key,
)

ATTR = "robolearn"
DEFAULT_STATE_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
TOP = {ACTION: "actions", REWARD: "rewards", DONE: "dones", OBS_SIM_STATE: "states"}
"""robolearn feature -> per-step dataset beside ``obs`` in a robomimic demo."""
_SUB_NAME = re.compile(r"^(.+)\.(\d+)$")


def sub_feature_names(key: str, width: int) -> tuple[str, ...]:
    """``("key.0", ..., "key.<width-1>")``: the element names that record where a column came from."""
    return tuple(f"{key}.{i}" for i in range(width))


def split_names(names: tuple[str, ...] | None) -> list[tuple[str, int]] | None:
    """``[(key, width), ...]`` when ``names`` is a run of ``<key>.0 .. <key>.<n-1>`` groups, else None."""
    if not names:
        return None
    groups: list[tuple[str, int]] = []
    for name in names:
        m = _SUB_NAME.match(name)
        if m is None:
            return None
        key, i = m.group(1), int(m.group(2))
        if groups and groups[-1][0] == key and groups[-1][1] == i:
            groups[-1] = (key, i + 1)
        elif i == 0 and all(k != key for k, _ in groups):
            groups.append((key, 1))
        else:
            return None
    return groups


def robot_type_of(env_args: dict[str, Any]) -> str | None:
    """LeRobot's ``robot_type`` from robosuite's ``env_kwargs.robots`` (``["Panda"]`` -> ``panda``)."""
    robots = (env_args.get("env_kwargs") or {}).get("robots")
    if isinstance(robots, str):
        robots = [robots]
    if isinstance(robots, list) and robots and all(isinstance(r, str) for r in robots):
        return ",".join(r.lower() for r in robots)
    return None


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


@dataclass
class RobomimicSource(EpisodeSource):
    """A robomimic HDF5 file opened for conversion.

    ``state_keys`` picks the obs keys concatenated into ``observation.state`` (foreign files only);
    ``filter_key`` reads only the demos listed in ``mask/<filter_key>``; ``fps`` and ``task`` fill
    in what the file does not record. :attr:`layout` is the file's raw layout.
    """

    task: str | None = None
    state_keys: tuple[str, ...] = DEFAULT_STATE_KEYS
    filter_key: str | None = None
    env_args: dict[str, Any] = field(default_factory=dict)
    layout: H5Layout | None = None
    _file: Any = None
    _demos: list[str] = field(default_factory=list)
    _paths: dict[str, tuple[tuple[str, int | None], ...]] = field(default_factory=dict)
    _tasks: list[str] = field(default_factory=list)
    _noted_shift: bool = False

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
        layout = self.layout = read_layout(f, p, ATTR)
        if "data" not in f:
            raise ConversionError(f"{p}: no 'data' group (not a robomimic dataset)")
        demos = list(layout.demos)
        if self.filter_key is not None:
            if self.filter_key not in layout.masks:
                raise ConversionError(
                    f"{p}: no filter key mask/{self.filter_key} (masks: {sorted(layout.masks)})"
                )
            keep = set(layout.masks[self.filter_key])
            demos = [d for d in demos if d in keep]
        if not demos:
            raise ConversionError(f"{p}: no demos under data/")
        self._demos = demos
        self.env_args = layout.env_args
        data = f["data"]
        info = json.loads(data.attrs[ATTR]) if ATTR in data.attrs else None
        if info:
            for k, paths in info["keys"].items():
                self._paths[k] = tuple(
                    (x, None) if isinstance(x, str) else (x[0], x[1]) for x in _as_list(paths)
                )
            for k, s in info["features"].items():
                names = None if s["dtype"] in ("image", "video") or not s.get("names") else tuple(s["names"])
                self.features[k] = FeatureSpec(s["dtype"], tuple(s["shape"]), names)
            self.origin = dict(info.get("origin") or {})
        else:
            self._map_foreign(layout, data[demos[0]])
            self.origin = {"source": self._source_block(layout)}
        fps = (
            (info or {}).get("fps") or self.fps or (self.env_args.get("env_kwargs") or {}).get("control_freq")
        )
        if not fps:
            raise ConversionError(
                f"{p}: the file records no frame rate (no env_kwargs.control_freq); pass --fps"
            )
        self.fps = float(fps)
        self.robot_type = (info or {}).get("robot_type") or robot_type_of(self.env_args) or self.robot_type
        position = {d: i for i, d in enumerate(demos)}
        self.splits = {
            name: [position[d] for d in names if d in position] for name, names in layout.masks.items()
        }
        if info and len(info.get("episode_tasks", [])) == len(layout.demos):
            by_demo = dict(zip(layout.demos, info["episode_tasks"], strict=True))
            self._tasks = [info["tasks"][by_demo[d]] for d in demos]
        else:
            default = self.task or self.env_args.get("env_name") or p.stem
            self._tasks = [default] * len(demos)
            if not self.task:
                self.notes.append(f"{p.name}: no task recorded; using {default!r} (pass --task)")
        self.num_episodes = len(demos)

    def _source_block(self, layout: H5Layout) -> dict[str, Any]:
        keys = {k: [list(x) for x in v] for k, v in self._paths.items()}
        attrs = {k: v for k, v in layout.attrs.items() if _jsonable(v)}
        return {
            "format": "robomimic",
            "file": self.path.name,
            "env_args": self.env_args,
            "attrs": attrs,
            "keys": keys,
        }

    def _map_foreign(self, layout: H5Layout, demo: Any) -> None:
        where = f"{self.path} {demo.name.rsplit('/', 1)[-1]}"
        if "actions" not in layout.top:
            raise ConversionError(f"{where}: missing 'actions'")
        obs = layout.obs
        state = [k for k in self.state_keys if k in obs]
        if self.state_keys != DEFAULT_STATE_KEYS and len(state) < len(self.state_keys):
            absent = [k for k in self.state_keys if k not in obs]
            raise ConversionError(f"{where}: state key(s) {absent} not in obs (have {sorted(obs)})")
        if state:
            widths = [int(np.prod(obs[k].shape[1:])) for k in state]
            names = tuple(n for k, w in zip(state, widths, strict=True) for n in sub_feature_names(k, w))
            dtype = np.result_type(*(obs[k].dtype for k in state))
            self._paths[OBS_STATE] = tuple((f"obs/{k}", w) for k, w in zip(state, widths, strict=True))
            self.features[OBS_STATE] = FeatureSpec(str(dtype), (len(names),), names)
        for k in sorted(obs):
            if k in state:
                continue
            if k.endswith("_depth"):
                self.notes.append(f"{self.path.name}: dropped depth obs {k!r}")
                continue
            shape = obs[k].shape
            if looks_like_image(shape):
                ours = image_key(k[: -len("_image")] if k.endswith("_image") else k)
                self.features[ours] = image_spec((*shape[1:3], 3))
            elif k == "object" and OBS_ENV_STATE not in self.features and len(shape) == 2:
                ours = OBS_ENV_STATE
                self.features[ours] = FeatureSpec(obs[k].dtype, (shape[1],), sub_feature_names(k, shape[1]))
            else:
                ours = f"observation.{k}"
                self.features[ours] = FeatureSpec(obs[k].dtype, scalar_shape(shape[1:]))
            if ours in self._paths:
                raise ConversionError(f"{where}: obs/{k} and {self._paths[ours][0][0]} both map to {ours!r}")
            self._paths[ours] = ((f"obs/{k}", None),)
        for ours, name in TOP.items():
            if name in layout.top:
                info = layout.top[name]
                dtype = "bool" if ours == DONE else ("float64" if ours == OBS_SIM_STATE else info.dtype)
                self.features[ours] = FeatureSpec(dtype, scalar_shape(info.shape[1:]))
                self._paths[ours] = ((name, None),)
        dropped = sorted(set(layout.top) - set(TOP.values()) - {"obs", "next_obs"})
        if dropped:
            self.notes.append(f"{self.path.name}: dropped per-demo datasets {dropped}")

    def key_map(self) -> dict[str, tuple[str, int, int | None]]:
        """h5 path inside a demo -> ``(feature, first column, end column or None for all)``."""
        out: dict[str, tuple[str, int, int | None]] = {}
        for ours, paths in self._paths.items():
            start = 0
            for path, width in paths:
                out[path] = (ours, start, None if width is None or len(paths) == 1 else start + width)
                start += width or 0
        return out

    def episodes(self) -> Iterator[Episode]:
        data = self._file["data"]
        for name, task in zip(self._demos, self._tasks, strict=True):
            demo = data[name]
            where = f"{self.path} {name}"
            frames: dict[str, np.ndarray] = {}
            for ours, paths in self._paths.items():
                parts = []
                for path, _ in paths:
                    if path not in demo:
                        raise ConversionError(f"{where}: missing {path!r}")
                    arr = np.asarray(demo[path][()])
                    parts.append(arr.reshape(len(arr), -1) if len(paths) > 1 else arr)
                spec = self.features[ours]
                arr = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
                frames[ours] = (
                    to_uint8_images(arr, f"{where} {paths[0][0]}")
                    if is_visual(spec)
                    else arr.astype(spec.dtype, copy=False)
                )
            n = demo.attrs.get("num_samples")
            if n is not None and ACTION in frames and int(n) != len(frames[ACTION]):
                raise ConversionError(
                    f"{where}: num_samples is {int(n)} but actions has {len(frames[ACTION])} rows"
                )
            yield Episode(frames, task, self._demo_meta(demo, name))

    def _demo_meta(self, demo: Any, name: str) -> dict[str, Any]:
        from robolearn.data.convert.robomimic_h5 import attr_value

        attrs = {k: attr_value(v) for k, v in demo.attrs.items() if k != "num_samples"}
        meta: dict[str, Any] = {"demo": name, "attrs": {k: v for k, v in attrs.items() if _jsonable(v)}}
        final: dict[str, list] = {}
        for ours, paths in self._paths.items():
            if is_visual(self.features[ours]):
                continue
            for path, _ in paths:
                key = path[len("obs/") :] if path.startswith("obs/") else None
                if key is None or f"next_obs/{key}" not in demo:
                    continue
                obs, nxt = np.asarray(demo[path][()]), np.asarray(demo[f"next_obs/{key}"][()])
                if next_obs_is_shift(obs, nxt):
                    final[key] = nxt[-1].tolist()
                elif not self._noted_shift:
                    self._noted_shift = True
                    self.notes.append(
                        f"{self.path.name} {name}: next_obs/{key} is not obs shifted by one step; "
                        "it is dropped (an export rebuilds next_obs as the shift)"
                    )
        if final:
            meta["final_next_obs"] = final
        return meta

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _as_list(paths: Any) -> list:
    return [paths] if isinstance(paths, str) else list(paths)


def write_robomimic(
    source: EpisodeSource, out, episodes: Iterator[Episode] | None = None, **kwargs: Any
) -> int:
    """Write ``source`` as a robomimic HDF5 file (see :func:`.robomimic_export.write_robomimic`)."""
    from robolearn.data.convert.robomimic_export import write_robomimic as write

    return write(source, out, episodes, **kwargs)
