"""LIBERO's demo files (robomimic-style HDF5) imported with their instruction, upright images and a state mapping.

A LIBERO file (``scripts/create_dataset.py`` in LIBERO) is robomimic's layout plus ``data``
attributes that say what the robomimic reader cannot know: ``problem_info`` (JSON with
``language_instruction``), ``macros_image_convention`` (robosuite's: ``opengl`` means the frames
are stored bottom row first, i.e. upside down), ``bddl_file_name``, ``env_args`` (its
``env_kwargs.control_freq`` is the frame rate). The file is read through the layout layer
:mod:`robolearn.data.convert.robomimic_h5`; this module decides the features:

- ``task`` = ``problem_info.language_instruction`` (the BDDL file's ``:language`` text; the
  ``libero-*`` envs give it with ``--set instruction=bddl``);
- cameras renamed and turned upright: ``obs/agentview_rgb`` -> ``observation.images.agentview``,
  ``obs/eye_in_hand_rgb`` -> ``observation.images.wrist``, flipped top to bottom for ``opengl``;
- every feature as the mapping says (default :data:`DEFAULT_MAPPING`, the same as
  ``datasets/libero_mapping.yaml``): ``observation.state`` = ``ee_pos``, ``ee_ori``,
  ``gripper_states`` (8), element names ``<key>.<i>`` so the layout is in ``info.json``;
- ``mask/*`` becomes the dataset split; demo names and the file's attributes go into ``origin``.

Mapping YAML: ``robot_type``, ``fps`` (when ``env_args`` has no ``control_freq``), ``features``
(required) and ``optional`` (kept when present), each ``{feature key: path or [paths]}`` with paths
relative to ``data/demo_<n>/`` (``obs/ee_pos``, ``actions``, ``states``); a list is concatenated
in order; a camera takes exactly one path. Unknown keys are errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

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
from robolearn.data.convert.robomimic_h5 import H5Layout, read_demo, read_layout
from robolearn.types import DONE, REWARD, FeatureSpec, is_image_key

DEFAULT_MAPPING: dict[str, Any] = {
    "robot_type": "panda",
    "fps": 20,
    "features": {
        "observation.state": ["obs/ee_pos", "obs/ee_ori", "obs/gripper_states"],
        "observation.images.agentview": "obs/agentview_rgb",
        "observation.images.wrist": "obs/eye_in_hand_rgb",
        "action": "actions",
    },
    "optional": {
        "observation.joint_states": "obs/joint_states",
        "observation.sim_state": "states",
        "next.reward": "rewards",
        "next.done": "dones",
    },
}
"""The mapping used when none is given; ``datasets/libero_mapping.yaml`` holds the same (a test checks)."""
IMAGE_CONVENTIONS = ("opengl", "opencv")
"""robosuite's ``macros.IMAGE_CONVENTION`` values: ``opengl`` frames are stored upside down."""
_ATTRS_KEPT = ("problem_info", "bddl_file_name", "macros_image_convention", "env_name", "num_demos")


@dataclass(frozen=True)
class LiberoMapping:
    """Which per-demo datasets make which feature (``features`` required, ``optional`` if present)."""

    features: dict[str, tuple[str, ...]]
    optional: dict[str, tuple[str, ...]] = field(default_factory=dict)
    robot_type: str | None = "panda"
    fps: float | None = 20.0
    source: str = "<default LIBERO mapping>"


def parse_libero_mapping(raw: Any, where: str = "<mapping>") -> LiberoMapping:
    """Validate a mapping dict (as loaded from YAML); errors name ``where`` and the bad key."""
    if not isinstance(raw, dict):
        raise ConversionError(f"{where}: expected a mapping, found {type(raw).__name__}")
    unknown = sorted(set(raw) - {"robot_type", "fps", "features", "optional"})
    if unknown:
        raise ConversionError(
            f"{where}: unknown key(s) {unknown}; allowed: fps, features, optional, robot_type"
        )
    fps = raw.get("fps")
    if fps is not None and (not isinstance(fps, int | float) or fps <= 0):
        raise ConversionError(f"{where}: 'fps' must be a positive number, found {fps!r}")

    def _group(name: str) -> dict[str, tuple[str, ...]]:
        group = raw.get(name) or {}
        if not isinstance(group, dict):
            raise ConversionError(f"{where}: '{name}' must map feature keys to dataset paths")
        out = {}
        for key, val in group.items():
            paths = tuple(val) if isinstance(val, list) else (val,)
            if not paths or not all(isinstance(p, str) and p for p in paths):
                raise ConversionError(
                    f"{where}: {name}.{key} must be a path or a list of paths, found {val!r}"
                )
            if is_image_key(str(key)) and len(paths) != 1:
                raise ConversionError(
                    f"{where}: camera {name}.{key} takes exactly one path, found {len(paths)}"
                )
            out[str(key)] = paths
        return out

    features, optional = _group("features"), _group("optional")
    if not features:
        raise ConversionError(f"{where}: 'features' lists no feature")
    both = sorted(set(features) & set(optional))
    if both:
        raise ConversionError(f"{where}: {both} listed under both features and optional")
    return LiberoMapping(features, optional, raw.get("robot_type"), float(fps) if fps else None, where)


def load_libero_mapping(path: str | Path) -> LiberoMapping:
    """Read and validate a LIBERO mapping YAML file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConversionError(f"{path}: cannot read mapping ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConversionError(f"{path}: invalid YAML ({exc})") from exc
    return parse_libero_mapping(raw, str(path))


def instruction_of(problem_info: Any, where: str) -> str:
    """``problem_info.language_instruction`` as one clean line (LIBERO stores a string; a word list is joined)."""
    if isinstance(problem_info, str):
        raise ConversionError(f"{where}: data attribute problem_info is not valid JSON")
    text = (problem_info or {}).get("language_instruction") if isinstance(problem_info, dict) else None
    if isinstance(text, list):
        text = " ".join(str(t) for t in text)
    if not isinstance(text, str) or not text.strip():
        raise ConversionError(f"{where}: problem_info has no language_instruction (pass --task)")
    return " ".join(text.split())


def upright(frames: np.ndarray, convention: str) -> np.ndarray:
    """Camera frames (T, H, W, C) the right way up: ``opengl`` ones are flipped top to bottom."""
    return np.ascontiguousarray(frames[:, ::-1]) if convention == "opengl" else frames


@dataclass
class LiberoSource(EpisodeSource):
    """A LIBERO HDF5 demo file opened for conversion (see the module docstring).

    ``mapping`` defaults to :data:`DEFAULT_MAPPING`; ``task`` replaces the file's instruction;
    ``filter_key`` reads only the demos in ``mask/<filter_key>``; ``fps`` fills in a missing rate.
    """

    task: str | None = None
    mapping: LiberoMapping | None = None
    filter_key: str | None = None
    env_args: dict[str, Any] = field(default_factory=dict)
    convention: str = "opengl"
    _file: Any = None
    _demos: list[str] = field(default_factory=list)
    _paths: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _task: str = ""

    format_name = "libero"

    def __post_init__(self) -> None:
        import h5py

        if self.path.is_dir():
            raise ConversionError(f"{self.path}: is a directory, not a LIBERO HDF5 file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise ConversionError(
                f"{self.path}: cannot open as HDF5 ({str(exc).splitlines()[0][:160]})"
            ) from exc
        try:
            self._load(read_layout(self._file, self.path))
        except BaseException:
            self.close()
            raise

    def _load(self, layout: H5Layout) -> None:
        p, m = self.path, self.mapping or parse_libero_mapping(DEFAULT_MAPPING, "<default LIBERO mapping>")
        if not layout.demos:
            raise ConversionError(f"{p}: no data/demo_* groups (not a LIBERO demo file)")
        if layout.kind != "libero":
            raise ConversionError(f"{p}: no problem_info / macros_image_convention attributes (not a LIBERO file); "
                                  "read it as robomimic")  # fmt: skip
        demos = list(layout.demos)
        if self.filter_key is not None:
            if self.filter_key not in layout.masks:
                raise ConversionError(
                    f"{p}: no filter key mask/{self.filter_key} (have {sorted(layout.masks)})"
                )
            keep = set(layout.masks[self.filter_key])
            demos = [d for d in demos if d in keep]
        if not demos:
            raise ConversionError(f"{p}: no demos to read")
        self._demos = demos
        self.env_args = dict(layout.env_args)
        attrs = layout.attrs
        self.convention = str(attrs.get("macros_image_convention", "opengl"))
        if "macros_image_convention" not in attrs:
            self.notes.append(
                f"{p.name}: no macros_image_convention; assuming LIBERO's default opengl (upside down)"
            )
        if self.convention not in IMAGE_CONVENTIONS:
            raise ConversionError(f"{p}: macros_image_convention is {self.convention!r}, expected one of "
                                  f"{IMAGE_CONVENTIONS}")  # fmt: skip
        self._task = self.task or instruction_of(attrs.get("problem_info"), str(p))
        kwargs = self.env_args.get("env_kwargs") or {}
        fps = kwargs.get("control_freq") or self.fps or m.fps
        if not fps:
            raise ConversionError(
                f"{p}: the file records no frame rate (no env_kwargs.control_freq); pass --fps"
            )
        self.fps = float(fps)
        self.robot_type = m.robot_type or _robot_of(kwargs)
        available = {f"obs/{k}": v for k, v in layout.obs.items()} | dict(layout.top)
        for group, required in ((m.features, True), (m.optional, False)):
            for key, paths in group.items():
                missing = [q for q in paths if q not in available]
                if missing and required:
                    raise ConversionError(f"{p} {demos[0]}: {key} needs {missing[0]!r}, which the file lacks "
                                          f"(have {sorted(available)}; mapping {m.source})")  # fmt: skip
                if missing:
                    continue
                self.features[key] = self._spec(key, paths, available, f"{p} {demos[0]}")
                self._paths[key] = paths
        used = {q for paths in self._paths.values() for q in paths}
        dropped = sorted(set(available) - used)
        self.notes.append(f"{p.name}: task {self._task!r}; images {self.convention} -> upright; "
                          f"state = {' + '.join(self._paths.get('observation.state', ()))}")  # fmt: skip
        if dropped:
            self.notes.append(f"{p.name}: not imported (not in the mapping): {', '.join(dropped)}")
        index = {d: i for i, d in enumerate(demos)}
        self.splits = {k: [index[d] for d in v if d in index] for k, v in layout.masks.items()}
        self.origin = {"source": {"format": "libero", "file": p.name, "env_args": self.env_args,
                                  "attrs": {k: attrs[k] for k in _ATTRS_KEPT if k in attrs},
                                  "keys": {k: list(v) for k, v in self._paths.items()}}}  # fmt: skip
        self.num_episodes = len(demos)

    def _spec(self, key: str, paths: tuple[str, ...], available: dict[str, Any], where: str) -> FeatureSpec:
        infos = [available[q] for q in paths]
        if is_image_key(key):
            shape = infos[0].shape
            if not looks_like_image(shape):
                raise ConversionError(
                    f"{where}: {paths[0]} has shape {shape}, expected camera frames (T, H, W, 3)"
                )
            return image_spec((*shape[1:3], 3))
        if key == DONE:
            return FeatureSpec("bool", (1,))
        if key == REWARD:
            return FeatureSpec("float32", (1,))
        if len(paths) == 1 and len(infos[0].shape) == 1:
            return FeatureSpec(infos[0].dtype, (1,))
        widths = [int(np.prod(i.shape[1:])) for i in infos]
        names = tuple(
            f"{q.rsplit('/', 1)[-1]}.{j}" for q, w in zip(paths, widths, strict=True) for j in range(w)
        )
        dtype = np.result_type(*(np.dtype(i.dtype) for i in infos))
        return FeatureSpec(str(dtype), scalar_shape((len(names),)), names)

    @property
    def _tasks(self) -> list[str]:
        """The instruction of each demo (one for the whole file), as ``robolearn inspect`` lists them."""
        return [self._task] * len(self._demos)

    def key_map(self) -> dict[str, tuple[str, int, int | None]]:
        """Demo path -> ``(feature, first column, end column or None for the whole feature)``."""
        out: dict[str, tuple[str, int, int | None]] = {}
        for key, paths in self._paths.items():
            names = self.features[key].names
            start = 0
            for q in paths:
                width = sum(1 for n in names or () if n.rsplit(".", 1)[0] == q.rsplit("/", 1)[-1])
                out[q] = (key, start, None if len(paths) == 1 else start + width)
                start += width
        return out

    def episodes(self) -> Iterator[Episode]:
        needed = sorted(
            {q[len("obs/") :] for paths in self._paths.values() for q in paths if q.startswith("obs/")}
        )
        for name in self._demos:
            demo = read_demo(self._file, name, obs_keys=needed, next_obs=False)
            where = f"{self.path} {name}"
            frames: dict[str, np.ndarray] = {}
            for key, paths in self._paths.items():
                parts = []
                for q in paths:
                    arr = demo.obs.get(q[4:]) if q.startswith("obs/") else demo.top.get(q)
                    if arr is None:
                        raise ConversionError(f"{where}: missing {q!r}")
                    parts.append(arr)
                spec = self.features[key]
                if is_visual(spec):
                    frames[key] = upright(to_uint8_images(parts[0], f"{where} {paths[0]}"), self.convention)
                    continue
                flat = [a.reshape(len(a), -1) for a in parts]
                if len({len(a) for a in flat}) > 1:
                    raise ConversionError(
                        f"{where}: {key} parts have different lengths {[len(a) for a in flat]}"
                    )
                frames[key] = np.concatenate(flat, axis=1).astype(spec.dtype, copy=False)
            yield Episode(frames, self._task, meta={"demo": name, "attrs": demo.attrs})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _robot_of(env_kwargs: dict[str, Any]) -> str | None:
    robots = env_kwargs.get("robots")
    name = robots[0] if isinstance(robots, list) and robots else robots
    return str(name).lower() if name else None


def is_libero_file(path: str | Path) -> bool:
    """Whether an HDF5 file carries LIBERO's ``data`` attributes (cheap: reads attributes only)."""
    import h5py

    from robolearn.data.convert.robomimic_h5 import LIBERO_ATTRS

    try:
        with h5py.File(path, "r") as f:
            data = f.get("data")
            return data is not None and any(k in data.attrs for k in LIBERO_ATTRS)
    except OSError:
        return False
