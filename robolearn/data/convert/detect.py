"""Tell a dataset's format from its layout and magic bytes (not from its name alone)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from robolearn.data.convert.episode import ConversionError

FORMATS = ("lerobot", "zarr", "robomimic", "libero", "rosbag")
"""Input formats; ``rosbag`` covers ROS 1 ``.bag``, ROS 2 bag directories and bare ``.mcap``/``.db3``;
``libero`` is robomimic's HDF5 layout with LIBERO's ``problem_info`` attributes."""
OUTPUT_FORMATS = ("lerobot", "zarr", "robomimic")

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_MCAP_MAGIC = b"\x89MCAP0\r\n"
_ROSBAG1_MAGIC = b"#ROSBAG V2.0"
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _head(path: Path, n: int = 16) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as exc:
        raise ConversionError(f"{path}: cannot read ({exc.strerror})") from exc


def _zarr_dir(path: Path) -> bool:
    meta = path / "meta" / "episode_ends"
    return (
        (path / "data").is_dir()
        and meta.is_dir()
        and any((meta / m).exists() for m in (".zarray", "zarr.json"))
    )


def detect_format(path: str | Path) -> str:
    """One of :data:`FORMATS` for ``path``; raises :class:`ConversionError` saying what was seen."""
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "meta" / "info.json").is_file():
            return "lerobot"
        if _zarr_dir(path):
            return "zarr"
        if (path / "metadata.yaml").is_file() or any(path.glob("*.mcap")) or any(path.glob("*.db3")):
            return "rosbag"
        raise ConversionError(
            f"{path}: cannot tell the format of this directory (no meta/info.json, no zarr data/ + "
            "meta/episode_ends, no ROS 2 metadata.yaml); pass --from"
        )
    head = _head(path)
    if head.startswith(_HDF5_MAGIC):
        from robolearn.data.convert.libero import is_libero_file

        return "libero" if is_libero_file(path) else "robomimic"
    if head.startswith(_MCAP_MAGIC) or head.startswith(_ROSBAG1_MAGIC) or head.startswith(_SQLITE_MAGIC):
        return "rosbag"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
        if any(n.startswith("meta/episode_ends/") for n in names):
            return "zarr"
    hint = {".hdf5": "HDF5", ".h5": "HDF5", ".mcap": "MCAP", ".bag": "ROS 1 bag", ".zip": "zarr zip"}.get(
        path.suffix
    )
    what = f"its name says {hint} but its content does not match" if hint else "unknown content"
    raise ConversionError(f"{path}: cannot tell the format ({what}, first bytes {head[:8]!r}); pass --from")
