"""Read robomimic-style HDF5 files (robomimic, robosuite, LIBERO) as plain per-demo arrays.

This layer knows the file layout only, not robolearn's feature names: :func:`read_layout` lists
what a file holds (demos, obs keys with shapes and dtypes, ``next_obs``, top-level datasets such
as ``states``, masks, ``env_args`` and the other ``data`` attributes) and :func:`read_demo` loads
one demo's arrays and attributes. The importer (:mod:`robolearn.data.convert.robomimic_format`),
``robolearn inspect FILE.hdf5`` and dataset-specific importers (LIBERO) build on it::

    with h5py.File(path, "r") as f:
        layout = read_layout(f, path)
        demo = read_demo(f, layout.demos[0])
        demo.obs["robot0_eef_pos"]          # (T, 3) float64, as stored
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robolearn.data.convert.episode import ConversionError

DEMO_NAME = re.compile(r"^demo_(\d+)$")
"""robomimic's demo group names; its SequenceDataset sorts demos by the number after ``demo_``."""
LIBERO_ATTRS = ("problem_info", "bddl_file_name", "macros_image_convention")
"""``data`` attributes that only LIBERO's demo files carry."""


@dataclass(frozen=True)
class ArrayInfo:
    """Shape (T, ...) and dtype of one dataset in the first demo."""

    shape: tuple[int, ...]
    dtype: str


@dataclass
class H5Layout:
    """What a robomimic-style file holds, from its ``data`` attributes and its first demo.

    ``kind`` is ``"robomimic"`` (robomimic / robosuite layout), ``"libero"`` (robomimic layout plus
    LIBERO's ``problem_info`` attributes) or ``"unknown"`` (an HDF5 file without ``data/demo_*``).
    """

    path: Path
    kind: str
    demos: list[str] = field(default_factory=list)
    lengths: dict[str, int] = field(default_factory=dict)
    obs: dict[str, ArrayInfo] = field(default_factory=dict)
    next_obs: dict[str, ArrayInfo] = field(default_factory=dict)
    top: dict[str, ArrayInfo] = field(default_factory=dict)
    """Per-step datasets beside ``obs``: ``actions``, ``rewards``, ``dones``, ``states``, ..."""
    demo_attrs: tuple[str, ...] = ()
    """Attribute names of the first demo group (``num_samples``, ``model_file``, ``ep_meta``)."""
    masks: dict[str, list[str]] = field(default_factory=dict)
    env_args: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    """The other ``data`` attributes (JSON strings decoded where they parse), e.g. LIBERO's
    ``problem_info``; ``total``, ``env_args`` and robolearn's own attribute are not repeated here."""
    groups: tuple[str, ...] = ()
    """Top-level groups and datasets of the file (``data``, ``mask``, ...)."""

    @property
    def total(self) -> int:
        """Frames over all demos."""
        return int(sum(self.lengths.values()))


@dataclass
class H5Demo:
    """One demo's arrays as stored (time-major) and its attributes."""

    name: str
    obs: dict[str, np.ndarray]
    next_obs: dict[str, np.ndarray]
    top: dict[str, np.ndarray]
    attrs: dict[str, Any]

    def __len__(self) -> int:
        arr = self.top.get("actions")
        if arr is None:
            arr = next(iter(self.obs.values()), np.zeros(0))
        return len(arr)


def demo_sort_key(name: str) -> tuple[int, str]:
    """Numeric order of ``demo_<n>`` names (``demo_2`` before ``demo_10``); others go last."""
    m = re.search(r"(\d+)$", name)
    return (int(m.group(1)) if m else 1 << 62, name)


def attr_value(value: Any) -> Any:
    """An HDF5 attribute as plain Python: bytes -> str, numpy scalars/arrays -> Python values."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [attr_value(v) for v in value.tolist()] if value.dtype.kind in "OSU" else value.tolist()
    return value


def _json_or_text(value: Any) -> Any:
    value = attr_value(value)
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _infos(group: Any) -> dict[str, ArrayInfo]:
    return {
        k: ArrayInfo(tuple(int(s) for s in v.shape), str(v.dtype))
        for k, v in group.items()
        if hasattr(v, "shape")
    }


def _names(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1).tolist()]


def read_layout(f: Any, path: str | Path, robolearn_attr: str = "robolearn") -> H5Layout:
    """The layout of an open ``h5py.File`` ``f`` (read from ``path``); never loads frame data.

    Raises :class:`ConversionError` naming the file when ``env_args`` is not valid JSON.
    """
    path = Path(path)
    layout = H5Layout(path=path, kind="unknown", groups=tuple(sorted(f.keys())))
    data = f.get("data")
    if data is None or not hasattr(data, "keys"):
        return layout
    demos = sorted((k for k in data.keys() if k.startswith("demo")), key=demo_sort_key)
    if not demos:
        return layout
    layout.demos = demos
    for name in demos:
        g = data[name]
        n = g.attrs.get("num_samples")
        if n is None:
            n = len(g["actions"]) if "actions" in g else 0
        layout.lengths[name] = int(n)
    first = data[demos[0]]
    if "obs" in first:
        layout.obs = _infos(first["obs"])
    if "next_obs" in first:
        layout.next_obs = _infos(first["next_obs"])
    layout.top = {k: v for k, v in _infos(first).items()}
    layout.demo_attrs = tuple(sorted(first.attrs.keys()))
    if "mask" in f:
        layout.masks = {k: _names(v[()]) for k, v in f["mask"].items()}
    raw = data.attrs.get("env_args")
    if raw is not None:
        try:
            layout.env_args = json.loads(attr_value(raw))
        except (TypeError, json.JSONDecodeError) as exc:
            raise ConversionError(f"{path}: data attribute env_args is not valid JSON ({exc})") from exc
    skip = {"total", "env_args", robolearn_attr}
    layout.attrs = {k: _json_or_text(v) for k, v in data.attrs.items() if k not in skip}
    is_libero = any(k in data.attrs for k in LIBERO_ATTRS)
    layout.kind = "libero" if is_libero else "robomimic"
    return layout


def read_demo(f: Any, name: str, obs_keys: list[str] | None = None, next_obs: bool = True) -> H5Demo:
    """Load demo ``data/<name>`` of the open file ``f``: ``obs`` (only ``obs_keys`` if given),
    ``next_obs`` (same keys; skipped when ``next_obs`` is False), every other per-step dataset and
    the demo's attributes (bytes decoded)."""
    g = f["data"][name]

    def _group(sub: str) -> dict[str, np.ndarray]:
        if sub not in g:
            return {}
        keys = [k for k in g[sub].keys() if obs_keys is None or k in obs_keys]
        return {k: np.asarray(g[sub][k][()]) for k in keys}

    top = {k: np.asarray(v[()]) for k, v in g.items() if hasattr(v, "shape")}
    attrs = {k: attr_value(v) for k, v in g.attrs.items()}
    return H5Demo(name, _group("obs"), _group("next_obs") if next_obs else {}, top, attrs)


def next_obs_is_shift(obs: np.ndarray, nxt: np.ndarray) -> bool:
    """True when ``next_obs[t] == obs[t + 1]`` for every t but the last (how robomimic builds it)."""
    return obs.shape == nxt.shape and np.array_equal(obs[1:], nxt[:-1])
