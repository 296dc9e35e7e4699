"""Checkpoint folders: ``config.json`` + ``model.safetensors`` + ``norm_stats.json``. No pickle.

``config.json`` is ``{"type": <registry name>, "format_version": 1, "robolearn_version": ...,
"config": {...full policy config...}}``, plus ``"source": {"envs": [<env name>, ...]}`` when the
training data recorded the env(s) it came from (:func:`record_source`, :func:`checkpoint_env`;
older checkpoints lack it and load unchanged); ``norm_stats.json`` holds the stats the policy was built
with (``{feature: {stat: list}}``); the normalizer buffers themselves are in the weights too.
A folder is written under a temporary name and renamed into place, so it is complete or absent.
Importing this module does not import torch.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import robolearn

if TYPE_CHECKING:  # torch stays out of imports so trainers and evaluators can read checkpoints cheaply
    import torch
    from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STATS_NAME = "norm_stats.json"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint folder is missing a file or a file is corrupt; the message names the file."""


def write_checkpoint(
    folder: str | Path,
    type_name: str,
    config: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    stats: Mapping[str, Mapping[str, np.ndarray]],
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write the three files (and ``extra_files``, name -> bytes, e.g. a VLA's tokenizer) into a
    temporary sibling folder, then rename it to ``folder`` (replacing an existing checkpoint folder)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        meta = {
            "type": type_name,
            "format_version": FORMAT_VERSION,
            "robolearn_version": robolearn.__version__,
            "config": dict(config),
        }
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2))
        plain_stats = {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}
        (tmp / STATS_NAME).write_text(json.dumps(plain_stats, indent=2))
        # clone: safetensors refuses tensors that share storage.
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing checkpoint file {path.name}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt {path.name}: {exc}") from None


def read_meta(folder: str | Path) -> tuple[str, dict[str, Any], dict[str, dict[str, np.ndarray]] | None]:
    """(type name, config dict, stats or None) from a checkpoint folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder not found")
    path = folder / CONFIG_NAME
    meta = _read_json(path)
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("type"), str)
        or not isinstance(meta.get("config"), dict)
    ):
        raise CheckpointError(
            f"{path}: expected {{'type': str, 'config': {{...}}}}, found {str(meta)[:80]!r}"
        )
    stats_path = folder / STATS_NAME
    raw = _read_json(stats_path)
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"{stats_path}: expected a mapping of feature -> stats, found {type(raw).__name__}"
        )
    try:
        stats = {k: {s: np.asarray(v, dtype=np.float64) for s, v in d.items()} for k, d in raw.items()}
    except (AttributeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{stats_path}: corrupt stats: {exc}") from None
    return meta["type"], meta["config"], (stats or None)


def checkpoint_input_features(folder: str | Path) -> dict[str, tuple[int, ...]]:
    """The ``input_features`` (key -> per-frame shape) and ``action`` shape of a checkpoint, read from
    its ``config.json`` alone, to check an env or dataset before loading any weights."""
    _, config, _ = read_meta(folder)
    try:
        feats = {k: tuple(int(d) for d in v) for k, v in config["input_features"].items()}
        feats["action"] = (int(config["action_dim"]),)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"{Path(folder) / CONFIG_NAME}: no valid input_features/action_dim: {exc}"
        ) from None
    return feats


def record_source(folder: str | Path, envs: Sequence[str]) -> None:
    """Record in ``folder/config.json`` the registered env(s) the training data came from (atomically:
    a temp file, then rename); an empty ``envs`` removes the record."""
    path = Path(folder) / CONFIG_NAME
    meta = _read_json(path)
    envs = [str(e) for e in envs]
    if envs:
        meta["source"] = {"envs": envs}
    else:
        meta.pop("source", None)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, path)


def checkpoint_envs(folder: str | Path) -> tuple[str, ...]:
    """Every env a checkpoint's training data came from, in the order recorded; ``()`` for a
    checkpoint that records none (trained on data without an env record, or before robolearn kept one)."""
    path = Path(folder) / CONFIG_NAME
    if not Path(folder).is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder not found")
    meta = _read_json(path)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(meta).__name__}")
    source = meta.get("source")
    if source is None:
        return ()
    envs = source.get("envs") if isinstance(source, dict) else None
    if not isinstance(envs, list) or not all(isinstance(e, str) and e for e in envs):
        raise CheckpointError(f"{path}: source: expected {{'envs': [env name, ...]}}, found {source!r}")
    return tuple(envs)


def checkpoint_env(folder: str | Path) -> str | None:
    """The env a checkpoint was trained for, the default of ``eval``/``finetune``/``serve``: its one
    recorded env, or None when it records none or several (see :func:`checkpoint_envs`)."""
    envs = checkpoint_envs(folder)
    return envs[0] if len(envs) == 1 else None


def load_weights(module: nn.Module, folder: str | Path) -> None:
    """Load ``model.safetensors`` into ``module``; every key must match in name and shape."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: missing checkpoint file {WEIGHTS_NAME}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: corrupt {WEIGHTS_NAME}: {exc}") from None
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, value in own.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{path}: tensor {key!r}: expected shape {tuple(value.shape)}, found {tuple(state[key].shape)}"
            )
    module.load_state_dict(state, strict=True)
