"""Fakes for the dataset tests: tiny deterministic episodes, a writer helper, parquet surgery.

Tests reach the helpers through the ``lr`` fixture (a namespace), never by importing this module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from robolearn.types import FeatureSpec

FPS = 10
H, W = 24, 32
STATE, ACTION, REWARD = "observation.state", "action", "next.reward"
FRONT, WRIST = "observation.images.front", "observation.images.wrist"


def features(cameras: tuple[str, ...] = (FRONT,), dtype: str = "video") -> dict[str, FeatureSpec]:
    out = {
        STATE: FeatureSpec("float32", (4,), ("x", "y", "z", "g")),
        ACTION: FeatureSpec("float32", (2,)),
        REWARD: FeatureSpec("float32", (1,)),
    }
    for cam in cameras:
        out[cam] = FeatureSpec(dtype, (H, W, 3))
    return out


def smooth_image(ep: int, i: int, cam: int = 0) -> np.ndarray:
    """A smooth gradient plus a soft moving blob: easy for lossy codecs, different on every frame."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    cx, cy = 4 + (i * 2 + ep * 5) % (W - 8), H / 2
    blob = 120 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 30.0)
    r = 40 + 4 * x + blob
    g = 60 + 5 * y + 20 * cam
    b = 200 - 3 * x + 10 * (ep % 3)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def frame(ep: int, i: int, cameras=(FRONT,)) -> dict[str, np.ndarray]:
    """Frame ``i`` of episode ``ep``: numeric values encode (ep, i) so round trips are checkable."""
    out = {
        STATE: np.array([ep, i, ep * 100 + i, 0.5], dtype=np.float32),
        ACTION: np.array([i * 0.1, -ep], dtype=np.float32),
        REWARD: np.float32(i == 4),
    }
    for c, cam in enumerate(cameras):
        out[cam] = smooth_image(ep, i, c)
    return out


def record(writer, lengths, first_ep: int = 0, cameras=(FRONT,), tasks=None) -> None:
    """Add and save episodes of the given lengths (episode numbers continue from ``first_ep``)."""
    for k, n in enumerate(lengths):
        ep = first_ep + k
        task = tasks[k] if tasks else f"pick the cube {ep % 2}"
        for i in range(n):
            writer.add_frame(frame(ep, i, cameras), task=task)
        writer.save_episode()


def rewrite_parquet(path: Path, column: str, edit) -> None:
    """Replace ``column`` by ``edit(list_of_python_values)`` keeping schema, metadata and row groups."""
    import pyarrow as pa

    pf = pq.ParquetFile(path)
    groups = [pf.read_row_group(i) for i in range(pf.num_row_groups)]
    schema = pf.schema_arrow
    pf.close()
    values = edit(pa.concat_tables(groups).column(column).to_pylist())
    start = 0
    with pq.ParquetWriter(path, schema) as w:
        for t in groups:
            part = pa.array(values[start : start + t.num_rows], type=schema.field(column).type)
            w.write_table(t.set_column(t.schema.get_field_index(column), column, part))
            start += t.num_rows


class Helpers:
    """What the ``lr`` fixture hands to tests."""

    FPS, H, W = FPS, H, W
    STATE, ACTION, REWARD, FRONT, WRIST = STATE, ACTION, REWARD, FRONT, WRIST
    features = staticmethod(features)
    smooth_image = staticmethod(smooth_image)
    frame = staticmethod(frame)
    record = staticmethod(record)
    rewrite_parquet = staticmethod(rewrite_parquet)


@pytest.fixture(scope="session")
def lr() -> type[Helpers]:
    return Helpers


@pytest.fixture
def new_dataset(tmp_path):
    """``new_dataset(lengths, **writer_kwargs) -> root``: a freshly written dataset."""
    from robolearn.data.writer import LeRobotWriter

    def make(lengths=(5, 7, 6), cameras=(FRONT,), name="ds", **kwargs) -> Path:
        root = tmp_path / name
        with LeRobotWriter(root, FPS, features(cameras, kwargs.pop("camera_dtype", "video")), **kwargs) as w:
            record(w, lengths, cameras=cameras)
        return root

    return make
