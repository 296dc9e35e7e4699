"""LIBERO demo files: instruction from problem_info, upright cameras, camera names, state mapping, training.

Real LIBERO files cannot be downloaded here, so each test writes a small file in the exact layout
of LIBERO's ``scripts/create_dataset.py`` (attributes, obs keys, dtypes, per-demo attributes).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from robolearn.data.convert import ConversionError, ConvertOptions, convert, detect_format, open_source
from robolearn.data.convert.libero import DEFAULT_MAPPING, LiberoMapping, parse_libero_mapping
from robolearn.envs.adapters.libero import LIBERO_STATE_NAMES

REPO = Path(__file__).resolve().parents[2]
BDDL_TEXT = "pick the akita black bowl between the plate and the ramekin and place it on the plate"
"""What LIBERO's files hold: the BDDL file's ``:language``, lowercased by LIBERO's BDDL parser."""
BDDL = "chiliocosm/bddl_files/libero_spatial/pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate.bddl"  # noqa: E501


def true_image(h: int, w: int, t: int) -> np.ndarray:
    """An upright frame no flip or mirror leaves unchanged: a red block top-left, green rising to the right."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2, 0] = 255
    img[:, :, 1] = np.linspace(0, 250, w, dtype=np.uint8)[None, :]
    img[:, :, 2] = 10 * t
    return img


def libero_hdf5(
    path: Path, lengths=(6, 9), size: int = 32, convention: str = "opengl", seed: int = 0
) -> dict:
    """A LIBERO demo file as create_dataset.py writes it; returns the arrays per demo for comparison."""
    rng = np.random.default_rng(seed)
    arrays = {}
    env_kwargs = {"robots": ["Panda"], "controller_configs": {"type": "OSC_POSE"}, "control_freq": 20,
                  "camera_heights": size, "camera_widths": size, "bddl_file_name": BDDL}  # fmt: skip
    with h5py.File(path, "w") as f:
        grp = f.create_group("data")
        grp.attrs["env_name"] = "Libero_Tabletop_Manipulation"
        grp.attrs["problem_info"] = json.dumps({"problem_name": "libero_tabletop_manipulation",
                                                "domain_name": "robosuite", "language_instruction": BDDL_TEXT})  # fmt: skip
        grp.attrs["macros_image_convention"] = convention
        grp.attrs["bddl_file_name"] = BDDL
        grp.attrs["bddl_file_content"] = "(define (problem LIBERO_Tabletop_Manipulation) ...)"
        grp.attrs["env_args"] = json.dumps({"type": 1, "env_name": "Libero_Tabletop_Manipulation",
                                            "problem_name": "libero_tabletop_manipulation", "bddl_file": BDDL,
                                            "env_kwargs": env_kwargs})  # fmt: skip
        total = 0
        for i, n in enumerate(lengths):
            ee_pos, ee_ori = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
            frames = np.stack([true_image(size, size, t) for t in range(n)])
            stored = frames[:, ::-1] if convention == "opengl" else frames
            demo = {
                "obs/gripper_states": rng.uniform(-0.04, 0.04, (n, 2)),
                "obs/joint_states": rng.normal(size=(n, 7)),
                "obs/ee_states": np.hstack([ee_pos, ee_ori]),
                "obs/ee_pos": ee_pos,
                "obs/ee_ori": ee_ori,
                "obs/agentview_rgb": stored,
                "obs/eye_in_hand_rgb": stored[:, :, ::-1],  # a different (mirrored) view
                "actions": rng.uniform(-1, 1, (n, 7)),
                "states": rng.normal(size=(n, 47)),
                "robot_states": rng.normal(size=(n, 9)),
                "rewards": np.eye(1, n, n - 1, dtype=np.uint8)[0],
                "dones": np.eye(1, n, n - 1, dtype=np.uint8)[0],
            }
            g = grp.create_group(f"demo_{i}")
            for key, arr in demo.items():
                g.create_dataset(key, data=arr)
            g.attrs["num_samples"] = n
            g.attrs["model_file"] = "<mujoco model='libero'/>"
            g.attrs["init_state"] = demo["states"][0]
            arrays[f"demo_{i}"] = {**demo, "upright": frames}
            total += n
        grp.attrs["num_demos"] = len(lengths)
        grp.attrs["total"] = total
    return arrays


def _episodes(path: Path) -> list:
    with open_source(path) as src:
        return list(src.episodes())


def test_detected_and_read_with_instruction_cameras_state_and_upright_images(tmp_path):
    path = tmp_path / "libero_demo.hdf5"
    arrays = libero_hdf5(path)
    assert detect_format(path) == "libero"
    with open_source(path) as src:
        assert src.fps == 20 and src.robot_type == "panda" and src.num_episodes == 2
        assert sorted(k for k in src.features if "images" in k) == [
            "observation.images.agentview", "observation.images.wrist"]  # fmt: skip
        assert src.features["observation.state"].names == LIBERO_STATE_NAMES  # the libero-* envs' layout
        assert src.features["observation.state"].shape == (8,)
        assert src.origin["source"]["attrs"]["macros_image_convention"] == "opengl"
        eps = list(src.episodes())
    for ep, (name, a) in zip(eps, arrays.items(), strict=True):
        assert ep.task == BDDL_TEXT and ep.meta["demo"] == name
        state = np.hstack([a["obs/ee_pos"], a["obs/ee_ori"], a["obs/gripper_states"]])
        np.testing.assert_array_equal(ep.frames["observation.state"], state)
        np.testing.assert_array_equal(ep.frames["action"], a["actions"])
        np.testing.assert_array_equal(ep.frames["observation.sim_state"], a["states"])
        np.testing.assert_array_equal(ep.frames["observation.joint_states"], a["obs/joint_states"])
        np.testing.assert_array_equal(ep.frames["observation.images.agentview"], a["upright"])
        np.testing.assert_array_equal(ep.frames["observation.images.wrist"], a["upright"][:, :, ::-1])
        assert (
            ep.frames["next.done"].dtype == bool
            and ep.frames["next.done"][-1]
            and not ep.frames["next.done"][0]
        )


def test_opencv_files_are_already_upright(tmp_path):
    path = tmp_path / "opencv.hdf5"
    arrays = libero_hdf5(path, lengths=(4,), convention="opencv")
    (ep,) = _episodes(path)
    np.testing.assert_array_equal(ep.frames["observation.images.agentview"], arrays["demo_0"]["upright"])


def test_convert_to_lerobot_keeps_orientation_task_and_state_names(tmp_path, capsys):
    from robolearn.cli import main

    path = tmp_path / "libero_demo.hdf5"
    libero_hdf5(path, size=48)
    out = tmp_path / "ds"
    assert main(["convert", str(path), str(out), "--to", "lerobot"]) == 0
    assert "libero" in capsys.readouterr().out
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["fps"] == 20 and info["robot_type"] == "panda"
    assert info["features"]["observation.state"]["names"] == list(LIBERO_STATE_NAMES)
    assert not any(k.endswith("_rgb") for k in info["features"])
    eps = _episodes(out)
    assert {ep.task for ep in eps} == {BDDL_TEXT}
    img = eps[1].frames["observation.images.agentview"][3].astype(float)  # decoded from the video
    h, w = img.shape[:2]
    red = img[..., 0]
    assert red[: h // 2 - 4, : w // 2 - 4].mean() > 200  # the block is top-left: upright, not mirrored
    assert red[h // 2 + 4 :, :].mean() < 50 and red[:, w // 2 + 4 :].mean() < 50
    green = img[..., 1].mean(axis=0)
    assert green[-4:].mean() > green[:4].mean() + 150


def test_mapping_file_in_datasets_is_the_default():
    path = REPO / "datasets" / "libero_mapping.yaml"
    from_file = parse_libero_mapping(yaml.safe_load(path.read_text()), str(path))
    default = parse_libero_mapping(DEFAULT_MAPPING)
    assert isinstance(from_file, LiberoMapping)
    assert (from_file.features, from_file.optional, from_file.robot_type, from_file.fps) == (
        default.features, default.optional, default.robot_type, default.fps)  # fmt: skip


def test_custom_mapping_and_task_override(tmp_path):
    path = tmp_path / "libero_demo.hdf5"
    arrays = libero_hdf5(path, lengths=(5,))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(yaml.safe_dump({"features": {"observation.state": ["obs/joint_states", "obs/gripper_states"],
                                                    "observation.images.front": "obs/agentview_rgb",
                                                    "action": "actions"}}))  # fmt: skip
    opts = ConvertOptions(mapping=str(mapping), task="pick up the black bowl")
    with open_source(path, options=opts) as src:
        assert set(src.features) == {"observation.state", "observation.images.front", "action"}
        assert src.features["observation.state"].names[:2] == ("joint_states.0", "joint_states.1")
        assert any("not imported" in n and "obs/ee_pos" in n for n in src.notes)
        (ep,) = list(src.episodes())
    assert ep.task == "pick up the black bowl"
    np.testing.assert_array_equal(
        ep.frames["observation.state"],
        np.hstack([arrays["demo_0"]["obs/joint_states"], arrays["demo_0"]["obs/gripper_states"]]),
    )


def test_bad_files_and_mappings_name_what_is_wrong(tmp_path):
    path = tmp_path / "libero_demo.hdf5"
    libero_hdf5(path, lengths=(3,))
    with h5py.File(path, "a") as f:
        del f["data/demo_0/obs/ee_ori"]
    with pytest.raises(ConversionError, match=r"demo_0: observation.state needs 'obs/ee_ori'"):
        open_source(path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("features: {action: actions}\ncameras: 2\n")
    with pytest.raises(ConversionError, match=r"bad.yaml: unknown key\(s\) \['cameras'\]"):
        open_source(path, options=ConvertOptions(mapping=str(bad)))
    other = tmp_path / "noinstr.hdf5"
    libero_hdf5(other, lengths=(3,))
    with h5py.File(other, "a") as f:
        f["data"].attrs["problem_info"] = json.dumps({"problem_name": "x"})
    with pytest.raises(ConversionError, match="problem_info has no language_instruction"):
        open_source(other)
    assert _episodes_with_task(other, "put the bowl away") == {"put the bowl away"}
    with h5py.File(other, "a") as f:
        f["data"].attrs["macros_image_convention"] = "directx"
    with pytest.raises(ConversionError, match="macros_image_convention is 'directx'"):
        open_source(other)


def _episodes_with_task(path: Path, task: str) -> set[str]:
    with open_source(path, options=ConvertOptions(task=task)) as src:
        return {ep.task for ep in src.episodes()}


def test_converted_libero_trains_a_policy_with_the_instruction_as_task(tmp_path):
    """The import feeds training: a small VLA conditioned on the file's instruction, a few steps."""
    import torch

    from robolearn.policies import load_policy
    from robolearn.train.config import TrainConfig
    from robolearn.train.logging import read_metrics
    from robolearn.train.trainer import train_policy

    torch.set_num_threads(1)
    path = tmp_path / "libero_demo.hdf5"
    libero_hdf5(path, lengths=(12, 14, 12, 13), size=32)
    ds = tmp_path / "ds"
    convert(path, ds, to="lerobot", progress=False)
    cfg = TrainConfig(policy="vla", policy_config=VLA_SMALL, steps=30, batch_size=8, lr=1e-3, warmup_steps=2,
                      log_every=1, save_every=30, val_fraction=0.25, seed=0)  # fmt: skip
    run = tmp_path / "run"
    train_policy(cfg, ds, run)
    losses = [r["loss"] for r in read_metrics(run) if "loss" in r]
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    policy = load_policy(run)
    assert set(policy.input_features) >= {"observation.images.agentview", "observation.images.wrist",
                                          "observation.state"}  # fmt: skip
    # The VLA's word tokenizer is fitted on the training tasks: it knows every word of the instruction.
    vocab = json.loads((run / "tokenizer.json").read_text())["model"]["vocab"]
    assert all(word in vocab for word in BDDL_TEXT.lower().split())


VLA_SMALL = {
    "obs_keys": ["observation.state", "observation.images.agentview", "observation.images.wrist"],
    "n_obs_steps": 1,
    "horizon": 8,
    "n_action_steps": 4,
}


def test_inspect_says_what_the_libero_conversion_keeps(tmp_path, capsys):
    from robolearn.cli import main

    path = tmp_path / "libero_demo.hdf5"
    libero_hdf5(path, lengths=(3,))
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "LIBERO" in out and BDDL_TEXT in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert lines["ee_pos"].endswith("-> observation.state[0:3]")
    assert lines["gripper_states"].endswith("-> observation.state[6:8]")
    assert lines["eye_in_hand_rgb"].endswith("-> observation.images.wrist")
    assert "dropped" in lines["robot_states"]
