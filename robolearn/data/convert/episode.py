"""The in-memory episode that every converter reads into and writes from.

A source format (LeRobot, zarr, robomimic, ROS bag) is opened as an :class:`EpisodeSource`, which
knows the frame rate and the features up front and then yields one :class:`Episode` at a time, so a
conversion holds at most one episode in memory. Writers take any source.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robolearn.types import FeatureSpec, is_image_key

BOOKKEEPING_KEYS = frozenset({"timestamp", "frame_index", "episode_index", "index", "task_index"})
"""Per-frame columns that a LeRobot writer derives itself; converters never carry them over."""


class ConversionError(Exception):
    """Bad or unsupported input to a converter; the message names the file and the field."""


@dataclass
class Episode:
    """One episode: every feature as a time-major array, plus its language instruction.

    ``frames[key]`` has shape (T, *feature.shape); images are uint8 (T, H, W, 3).
    """

    frames: dict[str, np.ndarray]
    task: str
    meta: dict = field(default_factory=dict)
    """What a format records per episode beside its frames, kept for the way back: ``demo`` (its
    robomimic name), ``attrs`` (its HDF5 attributes, e.g. ``model_file``) and ``final_next_obs``
    (``{h5 obs key: last next_obs row}``, the one ``next_obs`` row that is not a later obs)."""

    def __len__(self) -> int:
        return len(next(iter(self.frames.values()))) if self.frames else 0


def is_visual(spec: FeatureSpec) -> bool:
    """True for camera features (stored as images or video)."""
    return spec.dtype in ("image", "video")


def numpy_dtype(spec: FeatureSpec) -> np.dtype:
    """The numpy dtype of one frame of ``spec`` (uint8 for cameras)."""
    return np.dtype(np.uint8) if is_visual(spec) else np.dtype(spec.dtype)


def image_spec(shape: tuple[int, ...]) -> FeatureSpec:
    """A camera feature of frame shape (H, W, C)."""
    return FeatureSpec("video", tuple(int(s) for s in shape))


def array_spec(arr: np.ndarray, names: tuple[str, ...] | None = None) -> FeatureSpec:
    """The feature spec of a time-major array (T, *shape)."""
    return FeatureSpec(str(arr.dtype), scalar_shape(tuple(int(s) for s in arr.shape[1:])), names)


def looks_like_image(arr_shape: tuple[int, ...]) -> bool:
    """(T, H, W, C) with C in 1, 3 or 4: what zarr and HDF5 datasets use for cameras."""
    return len(arr_shape) == 4 and arr_shape[-1] in (1, 3, 4) and arr_shape[1] > 4 and arr_shape[2] > 4


def to_uint8_images(arr: np.ndarray, where: str, scale: float = 1.0) -> np.ndarray:
    """Camera frames as uint8 (T, H, W, 3).

    Non-uint8 frames are multiplied by ``scale`` (255 for float frames in [0, 1]; 1 for frames in
    [0, 255], as diffusion_policy's Push-T zarr stores ``img``), rounded and clipped. One channel
    is repeated to three; alpha is dropped.
    """
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number):
            raise ConversionError(f"{where}: camera frames have dtype {arr.dtype}, expected uint8 or float")
        arr = np.clip(np.rint(arr.astype(np.float32) * scale), 0, 255).astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


def scalar_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """LeRobot stores per-frame scalars with shape (1,), not (): ``()`` -> ``(1,)``."""
    return tuple(shape) if len(shape) else (1,)


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def check_episode(ep: Episode, features: dict[str, FeatureSpec], where: str) -> None:
    """Raise :class:`ConversionError` unless ``ep`` holds every feature, with equal lengths and shapes.

    Arrays whose frame shape differs from the spec only by size-1 axes ((T,) for a (1,) feature)
    are reshaped in place. ``where`` names the file and episode, e.g. ``"demo.hdf5 demo_3"``.
    """
    for key, spec in features.items():
        arr = ep.frames.get(key)
        if arr is not None and arr.ndim >= 1 and tuple(arr.shape[1:]) != tuple(spec.shape):
            if _squeezed(arr.shape[1:]) == _squeezed(spec.shape):
                ep.frames[key] = arr.reshape(len(arr), *spec.shape)
    missing = [k for k in features if k not in ep.frames]
    if missing:
        raise ConversionError(f"{where}: missing feature(s) {missing}")
    lengths = {k: len(ep.frames[k]) for k in features}
    if len(set(lengths.values())) > 1:
        raise ConversionError(f"{where}: features have different lengths {lengths}")
    if not lengths or next(iter(lengths.values())) == 0:
        raise ConversionError(f"{where}: episode has no frames")
    for key, spec in features.items():
        got = tuple(ep.frames[key].shape[1:])
        if got != tuple(spec.shape):
            raise ConversionError(
                f"{where}: feature {key!r} has frame shape {got}, expected {tuple(spec.shape)}"
            )
        if is_image_key(key) and ep.frames[key].dtype != np.uint8:
            raise ConversionError(f"{where}: camera {key!r} has dtype {ep.frames[key].dtype}, expected uint8")


@dataclass
class EpisodeSource(ABC):
    """An opened input dataset: frame rate and features known up front, episodes read one by one."""

    path: Path
    fps: float = 0.0
    features: dict[str, FeatureSpec] = field(default_factory=dict)
    robot_type: str | None = None
    num_episodes: int = 0
    notes: list[str] = field(default_factory=list)
    """Lines for the conversion report (alignment statistics, key mapping, guesses made)."""
    origin: dict = field(default_factory=dict)
    """Where the data came from, as ``info.json``'s ``robolearn`` block records it: ``env`` and
    ``env_config`` (a registered env) and/or ``source`` (an imported file: ``format``, ``file``,
    ``env_args``, ``attrs``, ``keys``); empty when unknown."""
    splits: dict[str, list[int]] = field(default_factory=dict)
    """Recorded episode splits (``{"train": [...], "valid": [...]}``, robomimic's masks), by
    episode index in :meth:`episodes` order; empty when the source records none."""

    format_name = "?"

    @abstractmethod
    def episodes(self) -> Iterator[Episode]:
        """Yield each episode in order; each is checked against :attr:`features` by the writer."""

    def close(self) -> None:  # noqa: B027 - optional hook; sources without files keep it
        """Release open files."""

    def __enter__(self) -> EpisodeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class InMemorySource(EpisodeSource):
    """A source over episodes already in memory (tests, and programmatic conversions)."""

    episode_list: list[Episode] = field(default_factory=list)

    format_name = "memory"

    def __post_init__(self) -> None:
        self.num_episodes = len(self.episode_list)

    def episodes(self) -> Iterator[Episode]:
        yield from self.episode_list
