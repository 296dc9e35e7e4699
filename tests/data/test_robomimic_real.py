"""The robomimic export, loaded by the real robomimic 0.3.0 the way its offline-RL training loads it.

robomimic goes into a side venv (``robomimic==0.3.0 --no-deps`` with numpy, h5py, tqdm, termcolor,
six, matplotlib, psutil, imageio and the CPU ``torch==2.13.0``), created once and cached under
``~/.cache/robolearn/robomimic-<key>-venv``; without a reachable package index (and no cached venv)
the test is skipped.

torchvision: robomimic imports it (for its vision backbones) from ``robomimic.models``, which its
training utilities import. The only torchvision wheels here (0.28.0, 0.29.x) are CUDA builds that
need ``libtorch_cuda`` — a CUDA torch 2.14.1 plus 2.2 GB of NVIDIA wheels — and no CPU build is
reachable. So the script runs with a stand-in ``torchvision`` package (written by this test) whose
every function raises: the dataset, config, file and training-utility code under test never calls
torchvision, and anything that did would fail loudly rather than run on a fake.

The script builds each offline-RL algorithm's config (IQL, CQL, TD3-BC, BCQ) with validation on,
loads train and valid through ``TrainUtils.load_data_for_training`` (``SequenceDataset`` with the
config's ``load_next_obs=True``, ``dataset_keys`` and filter keys ``train`` / ``valid``), reads
every sample, and dumps them; the test checks each value against the LeRobot source. Then
robomimic's IQL trains three short epochs on the file and its critic loss must fall.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

REQUIREMENTS = [
    "torch==2.13.0",
    "numpy",
    "h5py",
    "tqdm",
    "termcolor",
    "six",
    "matplotlib",
    "psutil",
    "imageio",
]
ROBOMIMIC = "robomimic==0.3.0"
NETWORK_ERRORS = ("NewConnectionError", "Network is unreachable", "Temporary failure in name resolution",
                  "ProxyError", "ConnectTimeoutError", "Max retries exceeded", "No matching distribution")  # fmt: skip

pytestmark = pytest.mark.slow

STANDIN = {
    "__init__.py": '"""Stand-in: no CPU torchvision for this torch exists here; every use raises."""\n'
    '__version__ = "0+standin"\n',
    "transforms/__init__.py": "def _unavailable(*args, **kwargs):\n"
    "    raise RuntimeError('torchvision stand-in: vision transforms are not available in this venv')\n\n"
    "Lambda = Compose = Resize = CenterCrop = Normalize = _unavailable\n",
    "transforms/functional.py": "def __getattr__(name):\n"
    "    raise RuntimeError(f'torchvision stand-in: transforms.functional.{name} is not available')\n",
    "models.py": "def __getattr__(name):\n"
    "    raise RuntimeError(f'torchvision stand-in: models.{name} is not available')\n",
}

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import robomimic.utils.file_utils as FileUtils
    import robomimic.utils.obs_utils as ObsUtils
    import robomimic.utils.train_utils as TrainUtils
    from robomimic.config import config_factory
    from robomimic.utils.dataset import SequenceDataset

    path, low_dim, rgb, dump = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(","), sys.argv[4]
    out = {"env_meta": FileUtils.get_env_metadata_from_dataset(path), "algos": {}}
    samples = {}
    for algo in ("iql", "cql", "td3_bc", "bcq"):
        config = config_factory(algo)
        with config.values_unlocked():
            config.train.data = path
            # TD3-BC's own settings normalize obs, which robomimic allows only without validation
            config.experiment.validate = not config.train.hdf5_normalize_obs
            config.train.hdf5_filter_key = "train"
            config.train.hdf5_validation_filter_key = "valid" if config.experiment.validate else None
            config.observation.modalities.obs.low_dim = low_dim
            # robomimic 0.3.0 normalizes raw HWC frames against stats of processed CHW ones (an
            # assertion fails), so the obs-normalizing TD3-BC settings run on low-dim obs, as its own
            # configs do
            config.observation.modalities.obs.rgb = [] if config.train.hdf5_normalize_obs else rgb
        ObsUtils.initialize_obs_utils_with_config(config)
        meta = FileUtils.get_shape_metadata_from_dataset(path, config.all_obs_keys, verbose=False)
        train, valid = TrainUtils.load_data_for_training(config, obs_keys=meta["all_obs_keys"])
        row = {"load_next_obs": config.train.hdf5_load_next_obs, "dataset_keys": list(config.train.dataset_keys),
               "ac_dim": meta["ac_dim"], "shapes": {k: list(v) for k, v in meta["all_shapes"].items()},
               "validate": config.experiment.validate}
        if config.train.hdf5_normalize_obs:
            stats = train.get_obs_normalization_stats()
            row["norm_mean"] = {k: np.asarray(v["mean"]).reshape(-1).tolist() for k, v in stats.items()}
        for split, ds in (("train", train), ("valid", valid)):
            if ds is None:
                continue
            row[split] = {"demos": list(ds.demos), "len": len(ds)}
            for i in range(len(ds)):
                item = ds[i]
                demo = ds._index_to_demo_id[i]
                t = i - ds._demo_id_to_start_indices[demo]
                if algo == "iql":
                    for part in ("obs", "next_obs"):
                        for k, v in item[part].items():
                            samples[f"{demo}/{t}/{part}/{k}"] = np.asarray(v)[0]
                    for k in ("actions", "rewards", "dones"):
                        samples[f"{demo}/{t}/{k}"] = np.asarray(item[k])[0]
        out["algos"][algo] = row
    plain = SequenceDataset(hdf5_path=path, obs_keys=low_dim, dataset_keys=("actions", "rewards", "dones"),
                            load_next_obs=True, filter_by_attribute="valid", hdf5_cache_mode=None)
    item = plain[len(plain) - 1]
    out["plain"] = {"len": len(plain), "next_obs_keys": sorted(item["next_obs"])}
    np.savez(dump, **samples)

    # IQL itself, three short epochs on the train demos (low-dim: its vision encoders need torchvision)
    import torch
    from robomimic.algo import algo_factory

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = config_factory("iql")
    with config.values_unlocked():
        config.train.data, config.train.hdf5_filter_key = path, "train"
        config.observation.modalities.obs.low_dim, config.observation.modalities.obs.rgb = low_dim, []
        config.algo.actor.layer_dims = config.algo.critic.layer_dims = (64, 64)
        for part in ("critic", "vf", "actor"):
            config.algo.optim_params[part].learning_rate.initial = 1e-3
    ObsUtils.initialize_obs_utils_with_config(config)
    meta = FileUtils.get_shape_metadata_from_dataset(path, config.all_obs_keys, verbose=False)
    model = algo_factory(config.algo_name, config, obs_key_shapes=meta["all_shapes"], ac_dim=meta["ac_dim"],
                         device=torch.device("cpu"))
    train, _ = TrainUtils.load_data_for_training(config, obs_keys=meta["all_obs_keys"])
    loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True, num_workers=0, drop_last=True)
    logs = [TrainUtils.run_epoch(model=model, data_loader=loader, epoch=e, num_steps=25) for e in (1, 2, 3)]
    out["iql_losses"] = {k: [float(log[k]) for log in logs] for k in logs[0] if k.endswith("loss")}
    print("RESULT " + json.dumps(out))
    """
)


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robolearn"


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--timeout", "30", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1800)


def _venv() -> Path:
    """The cached robomimic venv; built (temp folder, then rename) if missing."""
    key = hashlib.sha256("\n".join([*REQUIREMENTS, ROBOMIMIC, sys.version]).encode()).hexdigest()[:12]
    cache = _cache_dir()
    venv = cache / f"robomimic-{key}-venv"
    if (venv / ".complete").is_file() and (venv / "bin" / "python").exists():
        return venv
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".robomimic-{key}-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True, timeout=300)
        python = tmp / "bin" / "python"
        for args in (REQUIREMENTS, ["--no-deps", ROBOMIMIC]):
            res = _pip(python, *args)
            if res.returncode != 0:
                text = res.stdout + res.stderr
                if any(e in text for e in NETWORK_ERRORS):
                    tail = text.strip().splitlines()[-1:] or ["(no output)"]
                    pytest.skip(f"pip cannot reach the package index for the robomimic venv: {tail[0]}")
                raise AssertionError(f"pip install {' '.join(args)} failed:\n{res.stderr[-3000:]}")
        (tmp / ".complete").write_text("\n".join([*REQUIREMENTS, ROBOMIMIC]) + "\n")
        if venv.exists():
            shutil.rmtree(venv)
        tmp.rename(venv)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return venv


def _standin(root: Path) -> Path:
    for rel, text in STANDIN.items():
        path = root / "torchvision" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _collect(tmp_path: Path) -> Path:
    out = tmp_path / "lift"
    cmd = [sys.executable, "-m", "robolearn.cli", "collect", "--env", "franka-lift", "--episodes", "3", "--out",
           str(out), "--cameras", "front", "--image-size", "32x32", "--record-sim-state"]  # fmt: skip
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "MUJOCO_GL": "egl"}
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_robomimic_offline_rl_settings_load_the_export(tmp_path):
    from robolearn.data.reader import LeRobotReader

    python = _venv() / "bin" / "python"
    src = _collect(tmp_path)
    h5 = tmp_path / "lift.hdf5"
    res = subprocess.run([sys.executable, "-m", "robolearn.cli", "convert", str(src), str(h5), "--to", "robomimic"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    script = tmp_path / "load.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(_standin(tmp_path / "standin"))
    dump = tmp_path / "samples.npz"
    res = subprocess.run([str(python), str(script), str(h5), "state,object", "front_image", str(dump)],
                         capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    out = json.loads(next(line for line in res.stdout.splitlines() if line.startswith("RESULT "))[7:])

    info = json.loads((src / "meta" / "info.json").read_text())
    env_meta = out["env_meta"]
    assert env_meta["env_name"] == "franka-lift" and env_meta["type"] == 2
    assert env_meta["env_kwargs"]["control_freq"] == 20
    assert env_meta["env_kwargs"]["task"] == info["robolearn"]["env_config"]["task"] == "lift"

    reader = LeRobotReader(src)
    lengths = [int(n) for n in reader.episode_lengths]
    train_eps = None
    for algo, row in out["algos"].items():
        assert row["load_next_obs"] is True, algo
        assert row["ac_dim"] == 7 and row["shapes"]["state"] == [22]
        assert row["shapes"].get("front_image", [3, 32, 32]) == [3, 32, 32] and (algo == "td3_bc") != (
            "front_image" in row["shapes"]
        )
        train = row["train"]["demos"]
        train_eps = [int(d[5:]) for d in train]
        assert row["train"]["len"] == sum(lengths[i] for i in train_eps), algo
        if algo == "td3_bc":  # its settings: obs normalized from the train demos, no validation
            assert not row["validate"] and "valid" not in row
            state = np.concatenate(
                [np.asarray(reader.episode_columns(i)["observation.state"]) for i in train_eps]
            )
            assert np.allclose(row["norm_mean"]["state"], state.mean(0), atol=1e-4)
            continue
        valid = row["valid"]["demos"]
        assert (
            row["validate"] and len(valid) == 1 and sorted(train + valid) == ["demo_0", "demo_1", "demo_2"]
        ), algo
        assert row["valid"]["len"] == lengths[int(valid[0][5:])], algo
    assert set(out["algos"]) == {"iql", "cql", "td3_bc", "bcq"}
    valid_ep = ({0, 1, 2} - set(train_eps)).pop()
    assert out["plain"] == {"len": lengths[valid_ep], "next_obs_keys": ["object", "state"]}

    losses = out["iql_losses"]  # robomimic's IQL trained on the export: its critic learns
    assert {"critic/critic1_loss", "vf/v_loss", "actor/loss"} <= set(losses)
    assert all(np.isfinite(v).all() for v in losses.values())
    assert losses["critic/critic1_loss"][-1] < losses["critic/critic1_loss"][0]

    samples = np.load(dump)
    keys = {"state": "observation.state", "object": "observation.environment_state"}
    checked = 0
    for ep, n in enumerate(lengths):
        cols = reader.episode_columns(ep)
        frames = np.asarray(reader.frames(ep, "observation.images.front", np.arange(n)))
        for t in range(n):
            base = f"demo_{ep}/{t}"
            nxt = min(t + 1, n - 1)
            for short, key in keys.items():
                col = np.asarray(cols[key])
                assert np.array_equal(samples[f"{base}/obs/{short}"], col[t]), (base, short)
                assert np.array_equal(samples[f"{base}/next_obs/{short}"], col[nxt]), (base, short)
            # SequenceDataset hands out frames as stored (uint8 HWC); the algorithms process them later
            assert np.array_equal(samples[f"{base}/obs/front_image"], frames[t]), base
            assert np.array_equal(samples[f"{base}/next_obs/front_image"], frames[nxt]), base
            assert np.array_equal(samples[f"{base}/actions"], np.asarray(cols["action"])[t])
            assert samples[f"{base}/rewards"] == np.asarray(cols["next.reward"]).reshape(-1)[t]
            assert samples[f"{base}/dones"] == float(np.asarray(cols["next.done"]).reshape(-1)[t])
            checked += 1
    assert checked == sum(lengths)

    import h5py

    with h5py.File(h5, "r") as f:
        for ep in range(len(lengths)):
            states = f[f"data/demo_{ep}/states"][()]
            assert states.dtype == np.float64
            assert np.array_equal(states, np.asarray(reader.episode_columns(ep)["observation.sim_state"]))
