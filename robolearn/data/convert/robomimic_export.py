"""Write any episode source as a robomimic HDF5 file that robomimic's offline-RL settings load.

Per demo: ``obs/<key>`` and ``next_obs/<key>`` (obs shifted by one step; the last row is the
source's final ``next_obs`` where an import kept it, else the last obs repeated — robomimic's
algorithms mask that row out with ``dones``), ``actions``, ``rewards``, ``dones`` (int64, the last
step done when the source records none), ``states`` from ``observation.sim_state`` where the source
has it, ``num_samples`` and the demo's recorded attributes (``model_file``). File level:
``mask/train`` and ``mask/valid`` from the dataset's split (:mod:`robolearn.data.splits`: the one
it records, else the one ``robolearn train`` holds out) plus any other recorded mask, and
``env_args`` naming the registered env with its control rate and kwargs:
``{"env_name": "franka-lift", "type": 2, "env_kwargs": {...env config..., "control_freq": 20}}``
(an imported robomimic file's own ``env_args`` are written back unchanged).

Key names: the import's recorded mapping where there is one, else ``observation.state`` whose
``names`` read ``<key>.<i>`` is split back into ``obs/<key>``; otherwise
``observation.state`` -> ``obs/state``, ``observation.environment_state`` -> ``obs/object``,
``observation.images.<cam>`` -> ``obs/<cam>_image``, ``observation.<k>`` -> ``obs/<k>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from robolearn.data.convert.episode import ConversionError, Episode, EpisodeSource, check_episode, is_visual
from robolearn.data.convert.robomimic_format import ATTR, TOP, split_names
from robolearn.types import OBS_ENV_STATE, OBS_IMAGE_PREFIX, OBS_STATE

GYM_ENV_TYPE = 2
"""robomimic's ``EnvType.GYM_TYPE``: an env made by name with ``env_kwargs`` (1 is robosuite)."""
_DEMO = re.compile(r"^demo_\d+$")


def feature_to_h5(key: str) -> str:
    """Where a robolearn feature lives inside ``data/demo_<n>/`` when nothing else says."""
    if key in TOP:
        return TOP[key]
    if key == OBS_STATE:
        return "obs/state"
    if key == OBS_ENV_STATE:
        return "obs/object"
    if key.startswith(OBS_IMAGE_PREFIX):
        return f"obs/{key[len(OBS_IMAGE_PREFIX) :]}_image"
    if key.startswith("observation."):
        return f"obs/{key[len('observation.') :]}"
    return key.replace(".", "_").replace("/", "_")


def h5_keys(source: EpisodeSource) -> dict[str, list[tuple[str, int | None]]]:
    """feature -> ``[(h5 path, columns or None for all), ...]`` for every feature of ``source``."""
    block = source.origin.get("source") or {}
    recorded = block.get("keys") if block.get("format") == "robomimic" else None
    out: dict[str, list[tuple[str, int | None]]] = {}
    for key, spec in source.features.items():
        size = int(np.prod(spec.shape))
        parts = [(p, w) for p, w in (recorded or {}).get(key, [])]
        if len(parts) > 1 and sum(w or 0 for _, w in parts) != size:
            parts = []
        if not parts and key.startswith("observation.") and not is_visual(spec):
            groups = split_names(spec.names)
            if groups and len(spec.shape) == 1 and (len(groups) > 1 or key in (OBS_STATE, OBS_ENV_STATE)):
                parts = [(f"obs/{k}", w) for k, w in groups]
        out[key] = parts or [(feature_to_h5(key), None)]
    paths = [p for parts in out.values() for p, _ in parts]
    if len(set(paths)) != len(paths):
        raise ConversionError(f"{source.path}: feature keys collide after renaming for robomimic: {out}")
    return out


def env_args_of(source: EpisodeSource) -> dict[str, Any]:
    """robomimic ``env_args`` for ``source``: an import's own, else the registered env's."""
    block = source.origin.get("source") or {}
    if block.get("format") == "robomimic" and block.get("env_args"):
        return block["env_args"]
    env, config = source.origin.get("env"), source.origin.get("env_config") or {}
    if isinstance(env, str):
        return {"env_name": env, "type": GYM_ENV_TYPE, "env_kwargs": {**config, "control_freq": source.fps}}
    if isinstance(env, list):
        kwargs = {"control_freq": source.fps, "env_configs": config}
        return {"env_name": ",".join(env), "type": GYM_ENV_TYPE, "env_kwargs": kwargs}
    return {"env_name": "unknown", "type": GYM_ENV_TYPE, "env_kwargs": {"control_freq": source.fps}}


def _attr(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (dict, list)) else value


def _demo_name(ep: Episode, i: int, used: set[str]) -> str:
    name = ep.meta.get("demo")
    if not (isinstance(name, str) and _DEMO.match(name)) or name in used:
        name = f"demo_{i}"
        while name in used:
            name += "0"
    used.add(name)
    return name


def _write_obs(demo: Any, key: str, arr: np.ndarray, final: Any, image: bool) -> None:
    """``obs/<key>`` and its ``next_obs`` (shifted by one; the last row ``final`` if it fits)."""
    last = arr[-1:]
    if final is not None:
        cand = np.asarray(final, dtype=arr.dtype).reshape(arr.shape[1:])[None]
        last = cand if cand.shape == last.shape else last
    nxt = np.concatenate([arr[1:], last], axis=0)
    opts = dict(chunks=(1, *arr.shape[1:]), compression="gzip", compression_opts=4) if image else {}
    demo.create_dataset(f"obs/{key}", data=arr, **opts)
    demo.create_dataset(f"next_obs/{key}", data=nxt, **opts)


def write_robomimic(
    source: EpisodeSource,
    out: Path,
    episodes: Iterator[Episode] | None = None,
    *,
    val_fraction: float | None = None,
) -> int:
    """Write ``source`` as a robomimic HDF5 file at ``out``; returns the number of frames written.

    ``val_fraction`` sizes ``mask/valid`` when the source records no split (default: ``robolearn
    train``'s). Cameras are gzip-compressed uint8 (T, H, W, 3) chunked per frame.
    """
    import h5py

    from robolearn.data.splits import train_valid

    keys = h5_keys(source)
    tasks: list[str] = []
    episode_tasks: list[int] = []
    names: list[str] = []
    total = 0
    with h5py.File(out, "w") as f:
        data = f.create_group("data")
        for i, ep in enumerate(episodes if episodes is not None else source.episodes()):
            check_episode(ep, source.features, f"{source.path} episode {i}")
            name = _demo_name(ep, i, set(names))
            names.append(name)
            demo = data.create_group(name)
            final = ep.meta.get("final_next_obs") or {}
            for key, parts in keys.items():
                spec = source.features[key]
                arr = np.asarray(ep.frames[key])
                if is_visual(spec):
                    _write_obs(demo, parts[0][0][len("obs/") :], arr, None, image=True)
                    continue
                arr = arr.astype(spec.dtype, copy=False)
                start = 0
                for path, width in parts:
                    part = arr if width is None else arr.reshape(len(arr), -1)[:, start : start + width]
                    start += width or 0
                    if path.startswith("obs/"):
                        _write_obs(demo, path[4:], part, final.get(path[4:]), image=False)
                    elif path in ("rewards", "dones"):
                        flat = part.reshape(len(part))  # robomimic keeps these (T,)
                        demo.create_dataset(path, data=flat.astype(np.int64) if path == "dones" else flat)
                    else:
                        demo.create_dataset(path, data=part)
            n = len(ep)
            if "rewards" not in demo:
                demo.create_dataset("rewards", data=np.zeros(n, dtype=np.float32))
            if "dones" not in demo:
                demo.create_dataset("dones", data=np.eye(n, dtype=np.int64)[-1])
            demo.attrs["num_samples"] = n
            for k, v in (ep.meta.get("attrs") or {}).items():
                demo.attrs[k] = _attr(v)
            total += n
            if ep.task not in tasks:
                tasks.append(ep.task)
            episode_tasks.append(tasks.index(ep.task))
        if not names:
            raise ConversionError(f"{source.path}: no episodes to write")
        for mask, ids in sorted(train_valid(source.splits, len(names), val_fraction).items()):
            f.create_dataset(f"mask/{mask}", data=np.array([names[i] for i in ids], dtype="S"))
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps(env_args_of(source))
        for k, v in ((source.origin.get("source") or {}).get("attrs") or {}).items():
            data.attrs[k] = _attr(v)
        data.attrs[ATTR] = json.dumps(
            {
                "fps": source.fps,
                "robot_type": source.robot_type,
                "keys": {k: [[p, w] for p, w in parts] for k, parts in keys.items()},
                "features": {k: s.to_json() for k, s in source.features.items()},
                "tasks": tasks,
                "episode_tasks": episode_tasks,
                "origin": source.origin,
            }
        )
    return total
