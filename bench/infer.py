"""Policy inference latency per action chunk, one CPU thread (``torch.set_num_threads(1)``).

Cases (batch 1, To = 2, H = 16, Da = 7, state 22 + environment state 10):

- flow 1-step, state policy (MLP velocity net; and the small UNet for reference)   goal <= 1 ms
- image policy, ResNet-18 encoder shared by front + wrist 96x96 cameras, small UNet:
  flow 4 steps (goal <= 40 ms) and DDIM 10 steps (goal <= 130 ms), each measured two ways:
  ``predict_action_chunk`` on a full To-frame window (encodes To x 2 images) and the chunk step of
  ``select_action`` on single frames (the policy caches the previous frame's features, so it
  encodes 2 images)
- lerobot's diffusion policy ``select_action`` for the ratio, where ``lerobot`` is importable.

Run: ``python bench/infer.py [--json OUT]`` or ``run(json_out=...)``; the lead wires ``robolearn bench infer``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robolearn.policies import (
    DenoiserConfig,
    DiffusionConfig,
    FlowConfig,
    ImageEncoderConfig,
    ObsEncoderConfig,
)
from robolearn.registry import POLICIES

DS, DE, DA, TO, H = 22, 10, 7, 2, 16
SMALL_UNET = DenoiserConfig(kind="unet", down_dims=(32, 64, 128), time_embed_dim=32)
STATE_MLP = DenoiserConfig(kind="mlp", mlp_dims=(256, 256, 256), time_embed_dim=64)
CAMS = ("front", "wrist")
CROP = (84, 84)
"""Centre crop of the 96x96 images at inference (diffusion policy's recipe for 96x96 inputs)."""


def _features(images: bool) -> dict[str, tuple[int, ...]]:
    feats = {"observation.state": (DS,), "observation.environment_state": (DE,), "action": (DA,)}
    if images:
        feats.update({f"observation.images.{c}": (3, 96, 96) for c in CAMS})
    return feats


def _stats(feats: dict[str, tuple[int, ...]]) -> dict[str, dict[str, np.ndarray]]:
    return {
        k: {"min": -np.ones(s[0]), "max": np.ones(s[0]), "mean": np.zeros(s[0]), "std": np.ones(s[0])}
        for k, s in feats.items()
        if len(s) == 1
    }


def _obs(feats: dict[str, tuple[int, ...]], steps: int | None) -> dict[str, torch.Tensor]:
    """One observation: (1, To, ...) per feature, or a single frame (1, ...) when ``steps`` is None."""
    lead = (1,) if steps is None else (1, steps)
    return {
        k: (torch.rand if len(s) == 3 else torch.randn)(*lead, *s) for k, s in feats.items() if k != "action"
    }


def _percentiles(fn: Callable[[], Any], n: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)), "n": n}


def _chunk_step(policy, feats, n: int) -> dict[str, float]:
    """Latency of the select_action calls that predict a chunk (calls 0, n_exec, 2·n_exec, ... after
    a reset), fed single frames; the first (cold) chunk is skipped."""
    frame = _obs(feats, None)
    n_exec = policy.config.n_action_steps
    times = []
    policy.reset()
    for i in range((n + 1) * n_exec):
        t0 = time.perf_counter()
        policy.select_action(frame)
        if i % n_exec == 0 and i:
            times.append((time.perf_counter() - t0) * 1e3)
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "n": len(times),
    }


def _build(name: str, cfg, images: bool):
    feats = _features(images)
    torch.manual_seed(0)
    return POLICIES.build(name, cfg, features=feats, stats=_stats(feats)).eval(), feats


def _lerobot_case() -> dict[str, Any]:
    if importlib.util.find_spec("lerobot") is None:
        return {"skipped": "lerobot is not installed (optional; pip install lerobot==0.4.4 on Python 3.11)"}
    try:  # lerobot 0.4.x layout
        from lerobot.configs.types import FeatureType, PolicyFeature
        from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig as LRConfig
        from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy as LRPolicy
    except Exception as exc:  # noqa: BLE001 - report any import problem as a skip
        return {"skipped": f"lerobot import failed: {exc}"}
    cfg = LRConfig(
        input_features={
            "observation.state": PolicyFeature(FeatureType.STATE, (DS,)),
            **{f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, 96, 96)) for c in CAMS},
        },
        output_features={"action": PolicyFeature(FeatureType.ACTION, (DA,))},
        crop_shape=CROP,
        pretrained_backbone_weights=None,
        down_dims=SMALL_UNET.down_dims,
        num_inference_steps=10,
        noise_scheduler_type="DDIM",
    )
    try:
        policy = LRPolicy(cfg).eval()
        frame = {
            "observation.state": torch.randn(1, DS),
            **{f"observation.images.{c}": torch.rand(1, 3, 96, 96) for c in CAMS},
        }
        times = []
        policy.reset()
        with torch.inference_mode():
            for i in range(31 * cfg.n_action_steps):
                t0 = time.perf_counter()
                policy.select_action(frame)
                if i % cfg.n_action_steps == 0 and i:
                    times.append((time.perf_counter() - t0) * 1e3)
    except Exception as exc:  # noqa: BLE001 - a peer that cannot run here is reported, not fatal
        return {"skipped": f"lerobot diffusion policy failed to run: {exc}"}
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "n": len(times),
    }


def run(json_out: str | Path | None = None, quick: bool = False) -> dict[str, Any]:
    """Measure every case, print a table, optionally write JSON; returns the results dict."""
    torch.set_num_threads(1)
    reps = (20, 5) if quick else (300, 30)
    results: dict[str, Any] = {
        "threads": "torch.set_num_threads(1)",
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "setup": (
            f"batch 1, To={TO}, H={H}, Da={DA}, state {DS}+{DE}; state flow: MLP velocity net "
            f"{STATE_MLP.mlp_dims} or UNet {SMALL_UNET.down_dims}; image: 2 cameras 96x96 centre-cropped "
            f"to {CROP[0]}x{CROP[1]}, one ResNet-18 (GroupNorm) for both, UNet {SMALL_UNET.down_dims}"
        ),
        "cases": {},
    }
    cases = results["cases"]
    # Policies are built outside inference mode; predict_action_chunk / select_action enter it themselves.
    for label, denoiser in (("flow1_state_mlp", STATE_MLP), ("flow1_state_unet_small", SMALL_UNET)):
        policy, feats = _build("flow", FlowConfig(denoiser=denoiser, num_inference_steps=1), images=False)
        obs = _obs(feats, TO)
        cases[label] = _percentiles(lambda p=policy, o=obs: p.predict_action_chunk(o), reps[0], 20)
        cases[label]["goal_ms"] = 1.0
    encoder = ObsEncoderConfig(image=ImageEncoderConfig(backbone="resnet18", shared=True, crop_shape=CROP))
    image_cases = (
        (
            "flow4_image",
            "flow",
            FlowConfig(denoiser=SMALL_UNET, num_inference_steps=4, obs_encoder=encoder),
            40.0,
        ),
        ("ddim10_image", "diffusion", DiffusionConfig(denoiser=SMALL_UNET, obs_encoder=encoder), 130.0),
    )
    for label, name, cfg, goal in image_cases:
        policy, feats = _build(name, cfg, images=True)
        obs = _obs(feats, TO)
        window = _percentiles(lambda p=policy, o=obs: p.predict_action_chunk(o), reps[1], 3)
        cases[f"{label}_window"] = {**window, "goal_ms": goal}
        cases[f"{label}_select_action"] = {**_chunk_step(policy, feats, reps[1]), "goal_ms": goal}
    cases["lerobot_diffusion_ddim10_select_action"] = _lerobot_case()
    _print(results)
    if json_out is not None:
        Path(json_out).write_text(json.dumps(results, indent=2))
    return results


def _print(results: dict[str, Any]) -> None:
    print(f"policy inference latency per chunk, {results['threads']} (torch {results['torch']})")
    print(f"  {results['setup']}")
    ours = results["cases"].get("ddim10_image_select_action", {})
    for label, r in results["cases"].items():
        if "skipped" in r:
            print(f"  {label:40s} skipped: {r['skipped']}")
            continue
        goal = f"  goal <= {r['goal_ms']:g} ms" if "goal_ms" in r else ""
        line = f"  {label:40s} p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  (n={r['n']}){goal}"
        if label.startswith("lerobot") and ours:
            line += f"  robolearn ddim10 select_action is {r['p50_ms'] / ours['p50_ms']:.2f}x faster"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write results to this JSON file")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    args = parser.parse_args()
    run(args.json, quick=args.quick)


if __name__ == "__main__":
    main()
