"""The LeRobot v3.0 layout: paths, ``meta/info.json``, chunk/file index math, parquet schemas.

Everything here mirrors what lerobot 0.4.x writes, field for field::

    meta/info.json  meta/stats.json  meta/tasks.parquet
    meta/episodes/chunk-000/file-000.parquet        one row per episode (locations + per-episode stats)
    data/chunk-000/file-000.parquet                 many episodes per file, one row group per episode
    videos/<key>/chunk-000/file-000.mp4             many episodes per file, located by timestamps
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from robolearn.data.errors import DatasetError
from robolearn.types import (
    EPISODE_INDEX,
    FRAME_INDEX,
    INDEX,
    TASK_INDEX,
    TIMESTAMP,
    FeatureSpec,
)

CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNK_SIZE = 1000
"""Max number of files per ``chunk-XXX`` folder."""
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE_PATTERN + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"

BOOKKEEPING: dict[str, FeatureSpec] = {
    TIMESTAMP: FeatureSpec("float32", (1,)),
    FRAME_INDEX: FeatureSpec("int64", (1,)),
    EPISODE_INDEX: FeatureSpec("int64", (1,)),
    INDEX: FeatureSpec("int64", (1,)),
    TASK_INDEX: FeatureSpec("int64", (1,)),
}
"""Per-frame columns the writer fills in, in the order LeRobot appends them to the features."""

VISUAL_DTYPES = ("video", "image")
REQUIRED_INFO_KEYS = ("codebase_version", "fps", "features", "total_episodes", "total_frames", "data_path")


def next_chunk_file(chunk_index: int, file_index: int, chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) after ``(chunk_index, file_index)``: a chunk folder holds ``chunks_size`` files."""
    if file_index >= chunks_size - 1:
        return chunk_index + 1, 0
    return chunk_index, file_index + 1


def data_relpath(info: dict, chunk_index: int, file_index: int) -> str:
    return info.get("data_path", DATA_PATH).format(chunk_index=chunk_index, file_index=file_index)


def video_relpath(info: dict, video_key: str, chunk_index: int, file_index: int) -> str:
    template = info.get("video_path") or VIDEO_PATH
    return template.format(video_key=video_key, chunk_index=chunk_index, file_index=file_index)


def episodes_relpath(chunk_index: int, file_index: int) -> str:
    return EPISODES_PATH.format(chunk_index=chunk_index, file_index=file_index)


def features_to_info(features: dict[str, FeatureSpec], use_videos: bool) -> dict[str, dict]:
    """User features + bookkeeping as ``info.json`` writes them; images become ``video`` with videos on."""
    out: dict[str, dict] = {}
    for key, spec in features.items():
        if "/" in key:
            raise ValueError(f"feature names must not contain '/': {key!r}")
        if key in BOOKKEEPING:
            raise ValueError(f"feature {key!r} is filled in by the writer; do not declare it")
        if spec.dtype in VISUAL_DTYPES:
            if len(spec.shape) != 3 or spec.shape[2] != 3:
                raise ValueError(f"feature {key!r}: images must be (H, W, 3), got {spec.shape}")
            spec = FeatureSpec("video" if use_videos else "image", tuple(spec.shape))
        out[key] = spec.to_json()
    for key, spec in BOOKKEEPING.items():
        out[key] = spec.to_json()
    return out


def spec_from_info(entry: dict) -> FeatureSpec:
    """An ``info.json`` feature entry back to a :class:`FeatureSpec`."""
    names = entry.get("names")
    if isinstance(names, dict):  # some LeRobot datasets nest names per axis: {"motors": [...]}
        names = next(iter(names.values()), None)
    if entry["dtype"] in VISUAL_DTYPES or not isinstance(names, list):
        names = None
    return FeatureSpec(entry["dtype"], tuple(int(s) for s in entry["shape"]), tuple(names) if names else None)


def new_info(
    fps: int,
    features: dict[str, dict],
    *,
    robot_type: str | None,
    use_videos: bool,
    chunks_size: int = DEFAULT_CHUNK_SIZE,
    data_files_size_in_mb: int = DEFAULT_DATA_FILE_SIZE_IN_MB,
    video_files_size_in_mb: int = DEFAULT_VIDEO_FILE_SIZE_IN_MB,
) -> dict[str, Any]:
    """An empty dataset's ``info.json`` (same keys, same order as LeRobot's)."""
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": 0,
        "total_frames": 0,
        "total_tasks": 0,
        "chunks_size": chunks_size,
        "data_files_size_in_mb": data_files_size_in_mb,
        "video_files_size_in_mb": video_files_size_in_mb,
        "fps": fps,
        "splits": {},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if use_videos else None,
        "features": features,
    }


def load_stats_json(root: Path) -> dict[str, Any] | None:
    """``meta/stats.json`` as JSON (``None`` when absent); raises :class:`DatasetError` naming it."""
    path = Path(root) / STATS_PATH
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"invalid JSON: {exc}", file=STATS_PATH) from exc


def load_info(root: Path) -> dict[str, Any]:
    """Read and sanity-check ``meta/info.json``; raises :class:`DatasetError` naming the field."""
    path = Path(root) / INFO_PATH
    if not path.is_file():
        raise DatasetError(f"not a LeRobot dataset (no {INFO_PATH} under {root})", file=INFO_PATH)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"invalid JSON: {exc}", file=INFO_PATH) from exc
    missing = [k for k in REQUIRED_INFO_KEYS if k not in info]
    if missing:
        raise DatasetError(f"missing keys {missing}", file=INFO_PATH)
    version = str(info["codebase_version"])
    if not version.startswith("v3."):
        raise DatasetError(
            f"codebase_version is {version!r}, expected 'v3.0' (convert older datasets with lerobot first)",
            file=INFO_PATH,
        )
    return info


def video_keys(info: dict) -> list[str]:
    return [k for k, ft in info["features"].items() if ft["dtype"] == "video"]


def numeric_keys(info: dict) -> list[str]:
    """Columns stored in the data parquet files, in feature order (everything but videos)."""
    return [k for k, ft in info["features"].items() if ft["dtype"] != "video"]


def arrow_type(spec: FeatureSpec) -> pa.DataType:
    """Arrow type of a parquet column, as HF ``datasets`` lays out LeRobot features.

    ``(1,)`` is a scalar column, ``(D,)`` a fixed-size list; more axes nest fixed-size lists.
    """
    if spec.dtype == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    base = pa.from_numpy_dtype(spec.dtype) if spec.dtype != "string" else pa.string()
    if tuple(spec.shape) == (1,):
        return base
    out = base
    for size in reversed(spec.shape):
        out = pa.list_(out, size)
    return out


def _hf_feature(spec: FeatureSpec) -> dict:
    if spec.dtype == "image":
        return {"_type": "Image"}
    value = {"dtype": spec.dtype, "_type": "Value"}
    if tuple(spec.shape) == (1,):
        return value
    out = value
    for size in reversed(spec.shape):
        out = {"feature": out, "length": size, "_type": "List"}
    return out


def data_schema(info_features: dict[str, dict]) -> pa.Schema:
    """Schema of the data parquet files, with the ``huggingface`` metadata ``datasets`` 4.x attaches."""
    specs = {k: spec_from_info(ft) for k, ft in info_features.items() if ft["dtype"] != "video"}
    hf = {"info": {"features": {k: _hf_feature(s) for k, s in specs.items()}}}
    fields = [pa.field(k, arrow_type(s)) for k, s in specs.items()]
    return pa.schema(fields, metadata={"huggingface": json.dumps(hf)})


def column_array(values, typ: pa.DataType) -> pa.Array:
    """numpy values -> arrow column of ``typ`` (scalar, nested fixed-size lists, or HF Image struct)."""
    if pa.types.is_struct(typ):  # HF Image: {bytes, path}
        return pa.array([{"bytes": b, "path": None} for b in values], type=typ)
    list_types = []
    inner = typ
    while pa.types.is_fixed_size_list(inner):
        list_types.append(inner)
        inner = inner.value_type
    out = pa.array(np.asarray(values).reshape(-1), type=inner)
    for t in reversed(list_types):
        out = pa.FixedSizeListArray.from_arrays(out, type=t)
    return out


def episode_table(columns: dict, schema: pa.Schema) -> pa.Table:
    """One episode's columns (numpy arrays, or PNG bytes for images) as a table of ``schema``."""
    return pa.Table.from_arrays([column_array(columns[f.name], f.type) for f in schema], schema=schema)
