"""Exact-resume training state without pickle: tensors in safetensors, the rest in JSON.

``RUN/checkpoints/STEP/`` holds the policy checkpoint (EMA weights, loadable on its own) and
``training_state/`` with the raw weights, AdamW moments, EMA shadow, LR-scheduler counters, the
step, and every RNG state, so a resumed run continues the same loss curve.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE_DIR = "training_state"


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, entries in sd["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{name}"] = value.detach().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def ema_parameters(policy: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters the EMA tracks: the trainable ones. A frozen one never changes, so the model's
    own copy is its EMA, and checkpoints written with the EMA swapped in still hold it."""
    return [p for p in policy.parameters() if p.requires_grad]


def save_training_state(folder: Path, model: torch.nn.Module, optimizer, scheduler, ema, step: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().contiguous() for k, v in model.state_dict().items()},
        str(folder / "model_raw.safetensors"),
    )
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    save_file(opt_tensors, str(folder / "optimizer.safetensors"))
    rng = {"torch": torch.get_rng_state()}
    if ema is not None:
        save_file({f"shadow.{i}": p.detach().contiguous() for i, p in enumerate(ema.shadow_params)},
                  str(folder / "ema.safetensors"))  # fmt: skip
    save_file(rng, str(folder / "rng.safetensors"))
    np_state = np.random.get_state()
    meta = {
        "step": step,
        "optimizer": opt_meta,
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        "ema": None
        if ema is None
        else {"optimization_step": int(ema.optimization_step), "decay": float(ema.cur_decay_value or 0.0)},
        "python_random": _jsonable(random.getstate()),
        "numpy_random": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    (folder / "state.json").write_text(json.dumps(meta))


def load_training_state(folder: Path, model: torch.nn.Module, optimizer, scheduler, ema) -> int:
    """Restore everything :func:`save_training_state` wrote; returns the step to continue from."""
    meta = json.loads((folder / "state.json").read_text())
    model.load_state_dict(load_file(str(folder / "model_raw.safetensors")))
    optimizer.load_state_dict(
        _unflatten_optimizer(load_file(str(folder / "optimizer.safetensors")), meta["optimizer"])
    )
    # LambdaLR keeps its lambdas (plain functions, rebuilt from the config) out of the saved state.
    scheduler.load_state_dict({**meta["scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
    if ema is not None and meta["ema"] is not None:
        shadow = load_file(str(folder / "ema.safetensors"))
        shadows = [shadow[f"shadow.{i}"].clone() for i in range(len(shadow))]
        params = list(model.parameters())
        if len(shadows) != len(ema.shadow_params) and len(shadows) == len(params):
            # written when the EMA tracked frozen parameters too: keep the trainable ones' shadows
            shadows = [s for s, p in zip(shadows, params, strict=True) if p.requires_grad]
        if len(shadows) != len(ema.shadow_params):
            raise ValueError(
                f"{folder / 'ema.safetensors'}: {len(shadows)} EMA tensors, the model trains {len(ema.shadow_params)}"
            )
        ema.shadow_params = shadows
        ema.optimization_step = meta["ema"]["optimization_step"]
    torch.set_rng_state(load_file(str(folder / "rng.safetensors"))["torch"])
    random.setstate(_tupled(meta["python_random"]))
    np_state = meta["numpy_random"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    return int(meta["step"])


def _jsonable(x):
    return [_jsonable(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tupled(x):
    return tuple(_tupled(v) for v in x) if isinstance(x, list) else x


def latest_checkpoint(run: Path) -> Path | None:
    """``RUN/checkpoints/<largest STEP>`` that holds a complete training state, or None."""
    ckpts = run / "checkpoints"
    if not ckpts.is_dir():
        return None
    done = [p for p in ckpts.iterdir() if p.name.isdigit() and (p / STATE_DIR / "state.json").is_file()]
    return max(done, key=lambda p: int(p.name), default=None)
