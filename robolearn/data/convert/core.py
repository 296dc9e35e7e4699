"""``convert(src, dst, to=...)``: open any supported input, write any supported output, atomically."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from robolearn.data.convert.atomic import atomic_output
from robolearn.data.convert.detect import FORMATS, OUTPUT_FORMATS, detect_format
from robolearn.data.convert.episode import ConversionError, Episode, EpisodeSource, is_visual
from robolearn.data.convert.ros_mapping import RosMapping, load_mapping


@dataclass
class ConvertOptions:
    """What a source format may not record itself; ignored where the input records it."""

    fps: float | None = None
    """Frame rate for zarr / robomimic inputs that store none."""
    task: str | None = None
    """Instruction for inputs that store none (zarr, robomimic)."""
    mapping: RosMapping | str | Path | None = None
    """ROS inputs: the topic mapping (a parsed one, or a YAML path)."""
    state_keys: tuple[str, ...] | None = None
    """robomimic inputs: obs keys concatenated into ``observation.state``."""
    filter_key: str | None = None
    """robomimic inputs: read only the demos in ``mask/<filter_key>``."""
    val_fraction: float | None = None
    """robomimic outputs: share of episodes in ``mask/valid`` when the input records no split
    (default: ``robolearn train``'s, so the mask holds the episodes it holds out)."""


@dataclass
class ConvertSummary:
    """What a conversion did; :meth:`line` is the one-line report, :attr:`notes` the details."""

    src: Path
    dst: Path
    src_format: str
    dst_format: str
    episodes: int = 0
    frames: int = 0
    fps: float = 0.0
    numeric_features: int = 0
    cameras: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"converted {self.episodes} episodes, {self.frames} frames at {self.fps:g} fps "
            f"({self.numeric_features} numeric features, {self.cameras} cameras) "
            f"{self.src_format} {self.src} -> {self.dst_format} {self.dst} in {self.seconds:.1f} s"
        )


def open_source(
    path: str | Path, fmt: str | None = None, options: ConvertOptions | None = None, progress: bool = False
) -> EpisodeSource:
    """Open ``path`` as an :class:`EpisodeSource` (format detected unless ``fmt`` is given).

    ``progress`` shows a bar for sources that index their input first (ROS bags).
    """
    path = Path(path)
    opts = options or ConvertOptions()
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ConversionError(f"unknown input format {fmt!r}; expected one of {FORMATS}")
    if not path.exists():
        raise ConversionError(f"{path}: no such file or directory")
    if fmt == "lerobot":
        from robolearn.data.convert.lerobot_format import LeRobotSource

        return LeRobotSource(path)
    if fmt == "zarr":
        from robolearn.data.convert.zarr_format import ZarrSource

        return ZarrSource(path, fps=opts.fps or 0.0, task=opts.task)
    if fmt == "libero":
        from robolearn.data.convert.libero import LiberoSource, load_libero_mapping

        mapping = load_libero_mapping(opts.mapping) if isinstance(opts.mapping, str | Path) else None
        return LiberoSource(
            path, fps=opts.fps or 0.0, task=opts.task, mapping=mapping, filter_key=opts.filter_key
        )
    if fmt == "robomimic":
        from robolearn.data.convert.robomimic_format import DEFAULT_STATE_KEYS, RobomimicSource

        return RobomimicSource(
            path,
            fps=opts.fps or 0.0,
            task=opts.task,
            state_keys=tuple(opts.state_keys or DEFAULT_STATE_KEYS),
            filter_key=opts.filter_key,
        )
    from robolearn.data.convert.rosbag_source import RosbagSource

    mapping = opts.mapping
    if mapping is None:
        raise ConversionError(
            f"{path}: reading a ROS bag needs a topic mapping; pass --mapping FILE.yaml{_topics_hint(path)}"
        )
    if not isinstance(mapping, RosMapping):
        mapping = load_mapping(mapping)
    return RosbagSource(path, mapping=mapping, progress=progress)


def _topics_hint(path: Path) -> str:
    """`` (topics: /a (type), ...)`` when the bag can be listed; empty otherwise."""
    try:
        from rosbags.highlevel import AnyReader

        from robolearn.data.convert.rosbag_source import bag_paths

        with AnyReader(bag_paths(path)) as reader:
            topics = sorted({(c.topic, c.msgtype) for c in reader.connections})
    except Exception:
        return ""
    return " (topics in the bag: " + ", ".join(f"{t} [{ty}]" for t, ty in topics) + ")"


def write_episodes(
    source: EpisodeSource,
    out: Path,
    to: str,
    episodes: Iterator[Episode],
    options: ConvertOptions | None = None,
) -> int:
    """Write ``episodes`` of ``source`` to a fresh path ``out`` in format ``to``; returns frames written."""
    if to == "zarr":
        from robolearn.data.convert.zarr_format import write_zarr

        return write_zarr(source, out, episodes)
    if to == "robomimic":
        from robolearn.data.convert.robomimic_export import write_robomimic

        return write_robomimic(source, out, episodes, val_fraction=(options or ConvertOptions()).val_fraction)
    if to == "lerobot":
        from robolearn.data.convert.lerobot_format import write_lerobot

        return write_lerobot(source, out, episodes)
    raise ConversionError(f"unknown output format {to!r}; expected one of {OUTPUT_FORMATS}")


def convert(
    src: str | Path,
    dst: str | Path,
    to: str,
    *,
    from_format: str | None = None,
    options: ConvertOptions | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ConvertSummary:
    """Convert the dataset at ``src`` into format ``to`` at ``dst``.

    ``dst`` appears only when the whole conversion succeeded: everything is written to a hidden
    sibling first and renamed at the end; on error the sibling is removed. An existing ``dst`` is
    an error unless ``overwrite``. Raises :class:`ConversionError` (naming file, episode, field or
    topic) on bad input.
    """
    from robolearn.progress import progress as show_progress

    src, dst = Path(src), Path(dst)
    if to not in OUTPUT_FORMATS:
        raise ConversionError(f"unknown output format {to!r}; expected one of {OUTPUT_FORMATS}")
    if src.resolve() == dst.resolve():
        raise ConversionError(f"{dst}: output must differ from the input")
    t_start = time.perf_counter()
    with (
        atomic_output(dst, overwrite=overwrite) as tmp,
        open_source(src, from_format, options, progress) as source,
    ):
        bar = show_progress(
            total=source.num_episodes, unit="ep", desc=f"{source.format_name} -> {to}", enabled=progress
        )
        counted: list[int] = []

        def _stream() -> Iterator[Episode]:
            for ep in source.episodes():
                counted.append(len(ep))
                yield ep
                bar.update(1)

        try:
            frames = write_episodes(source, tmp, to, _stream(), options)
        finally:
            bar.close()
        summary = ConvertSummary(
            src=src,
            dst=dst,
            src_format=source.format_name,
            dst_format=to,
            episodes=len(counted),
            frames=frames,
            fps=source.fps,
            numeric_features=sum(not is_visual(s) for s in source.features.values()),
            cameras=sum(is_visual(s) for s in source.features.values()),
            notes=list(source.notes),
        )
    summary.seconds = time.perf_counter() - t_start
    return summary
