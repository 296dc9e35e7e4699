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


ROBOSUITE_DEMOS = {"demo_0": 6, "demo_3": 5, "demo_7": 7}
"""Demo name -> length of :func:`robosuite_hdf5`'s file (ids not 0..n-1, as after filtering)."""


def robosuite_hdf5(path: Path, demos: dict[str, int] = ROBOSUITE_DEMOS, image: int = 16) -> dict:
    """A robomimic file in robosuite's layout: ``robot0_*`` keys, ``object``, two cameras, depth,
    ``next_obs`` (obs shifted, with a genuine last row), ``states``, ``model_file``, ``mask/*``.

    Returns ``{demo: {h5 path: array}}`` plus ``"_attrs"`` (``env_args``) and ``"_masks"``.
    """
    import json

    import h5py

    rng = np.random.default_rng(7)
    widths = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "robot0_joint_pos": 7,
              "robot0_joint_vel": 7, "object": 10}  # fmt: skip
    env_args = {"env_name": "Lift", "type": 1, "env_kwargs": {"robots": ["Panda"], "control_freq": 20,
                "controller_configs": {"type": "OSC_POSE"}, "camera_names": ["agentview", "robot0_eye_in_hand"]}}  # fmt: skip
    masks = {"train": ["demo_0", "demo_7"], "valid": ["demo_3"], "20_percent": ["demo_3"]}
    out: dict = {"_attrs": {"env_args": env_args}, "_masks": masks}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for d, (name, n) in enumerate(demos.items()):
            g = data.create_group(name)
            obs = {k: rng.normal(size=(n + 1, w)) for k, w in widths.items()}
            for c, cam in enumerate(("agentview", "robot0_eye_in_hand")):
                frames = [smooth_image(d, i, c)[:image, :image] for i in range(n + 1)]
                obs[f"{cam}_image"] = np.stack(frames)
            obs["agentview_depth"] = rng.random((n + 1, image, image, 1)).astype(np.float32)
            a = {f"obs/{k}": v[:n] for k, v in obs.items()}
            a.update({f"next_obs/{k}": v[1:] for k, v in obs.items()})
            a["actions"] = rng.uniform(-1, 1, (n, 7))
            a["rewards"] = (np.arange(n) == n - 1).astype(np.float64)
            a["dones"] = np.eye(n, dtype=np.int64)[-1]
            a["states"] = rng.normal(size=(n, 32))
            for k, v in a.items():
                g.create_dataset(k, data=v)
            g.attrs["num_samples"] = n
            g.attrs["model_file"] = f"<mujoco model='lift-{name}'><worldbody/></mujoco>"
            out[name] = a
        data.attrs["total"] = sum(demos.values())
        data.attrs["env_args"] = json.dumps(env_args)
        for k, names in masks.items():
            f.create_dataset(f"mask/{k}", data=np.array(names, dtype="S"))
    return out


@pytest.fixture
def robosuite_file(tmp_path) -> tuple[Path, dict]:
    """``(path, arrays)`` of a fresh :func:`robosuite_hdf5` file."""
    path = tmp_path / "lift_ph.hdf5"
    return path, robosuite_hdf5(path)
