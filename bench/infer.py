"""Policy inference latency per action chunk, one CPU thread (``torch.set_num_threads(1)``).

Cases (batch 1, To = 2, H = 16, Da = 7, state 22 + environment state 10):

- flow 1-step, state policy (MLP velocity net; and the small UNet for reference)   goal <= 1 ms
- image policy, ResNet-18 encoder shared by front + wrist 96x96 cameras, small UNet:
  flow 4 steps (goal <= 40 ms) and DDIM 10 steps (goal <= 130 ms), each measured two ways:
  ``predict_action_chunk`` on a full To-frame window (encodes To x 2 images) and the chunk step of
  ``select_action`` on single frames (the policy caches the previous frame's features, so it
  encodes 2 images)
- the peer: lerobot's ``DiffusionPolicy`` (real torchvision ResNet-18, diffusers DDIM) configured
  like our DDIM-10 image case, its ``select_action`` chunk step and ``predict_action_chunk``, with
  the ratios to ours. lerobot 0.4.4 re-encodes all To frames at every chunk (no feature cache), so
  its ``select_action`` does the work of our full-window case; both ratios are printed.

The peer runs in its own process (``python bench/infer.py --stage lerobot '{json}'``), in this
Python when it imports lerobot's diffusion policy, else in ``$ROBOLEARN_LEROBOT_INFER_PYTHON``
(default ``/tmp/lerobot-infer-venv/bin/python``); absent both, it is skipped with the reason. It
is timed in rounds that alternate with rounds of our DDIM-10 policy (one waits while the other
runs), and the ratios come from those paired figures, so a change in machine load hits both.
The venv for bench/data.py (``$ROBOLEARN_LEROBOT_PYTHON``) cannot serve: it has no torchvision.
PyPI's torchvision is a CUDA build whose ``_C`` links ``libtorch_cuda``, so it does not import
beside the ``2.13.0+cpu`` torch here; its CUDA twin ``torch==2.13.0`` from PyPI does, and runs on a
CPU-only machine. It is built from the same commit and oneDNN as ``2.13.0+cpu`` (the JSON records
both git versions), so the CPU kernels compare. Recipe (about 5 GB, mostly CUDA libraries)::

    python3.11 -m venv /tmp/lerobot-infer-venv && cd /tmp/lerobot-infer-venv
    # --isolated: ignore this machine's pip config, whose find-links would pick the +cpu torch
    bin/pip install --isolated torch==2.13.0 torchvision==0.28.0
    bin/pip install --no-deps lerobot==0.4.4     # it pins torch<2.11; 2.13 runs its policy fine
    bin/pip install "diffusers<0.36" "huggingface-hub<0.36" "einops<0.9" draccus==0.10.0 \\
        safetensors "packaging<26" termcolor "deepdiff<9" jsonlines "datasets<5" pandas pyarrow \\
        "av<16" accelerate imageio "pyserial<4"

The VLA cases (tiny, offline real-weights and 60M recipes, and the flow / token head cost ratio)
come from ``bench/infer_vla.py`` and are printed after these.

Run: ``robolearn bench infer [--json OUT]``, ``python bench/infer.py [--json OUT] [--quick]`` or
``run(json_out=...)``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

# robolearn is imported inside functions: the lerobot stage runs in an interpreter without it.
DS, DE, DA, TO, H, N_EXEC = 22, 10, 7, 2, 16, 8
UNET_DOWN_DIMS, UNET_TIME_DIM, UNET_KERNEL, UNET_GROUPS = (32, 64, 128), 32, 5, 8
STATE_MLP_DIMS = (256, 256, 256)
CAMS = ("front", "wrist")
IMAGE_SHAPE = (3, 96, 96)
CROP = (84, 84)
"""Centre crop of the 96x96 images at inference (diffusion policy's recipe for 96x96 inputs)."""
KEYPOINTS, DDIM_STEPS, TRAIN_TIMESTEPS = 32, 10, 100
_LEROBOT_INFER_VENV = Path("/tmp/lerobot-infer-venv/bin/python")


def _features(images: bool) -> dict[str, tuple[int, ...]]:
    feats = {"observation.state": (DS,), "observation.environment_state": (DE,), "action": (DA,)}
    if images:
        feats.update({f"observation.images.{c}": IMAGE_SHAPE for c in CAMS})
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


def _summary(times: list[float]) -> dict[str, float]:
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "n": len(times),
    }


def _times(fn: Callable[[], Any], n: int, warmup: int) -> list[float]:
    """Milliseconds of ``n`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _chunk_times(policy, frame: dict[str, torch.Tensor], n_exec: int, n: int) -> list[float]:
    """Milliseconds of the ``select_action`` calls that predict a chunk (calls n_exec, 2·n_exec, ...
    after a reset), fed one single frame (B, ...) per call; the first (cold) chunk is skipped.
    Works for robolearn's and lerobot's policies alike."""
    times = []
    policy.reset()
    for i in range((n + 1) * n_exec):
        t0 = time.perf_counter()
        policy.select_action(frame)
        if i % n_exec == 0 and i:
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def _build(name: str, cfg, images: bool):
    from robolearn.registry import POLICIES

    feats = _features(images)
    torch.manual_seed(0)
    return POLICIES.build(name, cfg, features=feats, stats=_stats(feats)).eval(), feats


# --------------------------------------------------------------------------- lerobot peer (own process)
def _lerobot_settings() -> dict[str, Any]:
    """lerobot ``DiffusionConfig`` fields matched to our DDIM-10 image case (printed and saved)."""
    return {
        "n_obs_steps": TO, "horizon": H, "n_action_steps": N_EXEC,
        "vision_backbone": "resnet18", "pretrained_backbone_weights": None, "use_group_norm": True,
        "crop_shape": CROP, "spatial_softmax_num_keypoints": KEYPOINTS,
        "use_separate_rgb_encoder_per_camera": False,
        "down_dims": UNET_DOWN_DIMS, "kernel_size": UNET_KERNEL, "n_groups": UNET_GROUPS,
        "diffusion_step_embed_dim": UNET_TIME_DIM, "use_film_scale_modulation": True,
        "noise_scheduler_type": "DDIM", "num_train_timesteps": TRAIN_TIMESTEPS,
        "num_inference_steps": DDIM_STEPS,
    }  # fmt: skip


def stage_lerobot(reps: int, warmup: int, rounds: int) -> dict[str, Any]:
    """Build lerobot's DiffusionPolicy (random init), print ``{"ready": true}``, then per line read
    from stdin (at most ``rounds``) time ``reps`` chunks of ``select_action`` and of
    ``predict_action_chunk`` and print their milliseconds as one JSON line. Returns the metadata."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)
    try:
        import lerobot
        import torchvision
        from lerobot.configs.types import FeatureType, PolicyFeature
        from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
        from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    except Exception as exc:  # noqa: BLE001 - report why the peer cannot run
        return {"skipped": f"lerobot's diffusion policy does not import in {sys.executable}: {exc!r}"}
    inputs = {
        "observation.state": PolicyFeature(FeatureType.STATE, (DS,)),
        "observation.environment_state": PolicyFeature(FeatureType.ENV, (DE,)),
        **{f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, IMAGE_SHAPE) for c in CAMS},
    }
    settings = _lerobot_settings()
    cfg = DiffusionConfig(
        input_features=inputs,
        output_features={"action": PolicyFeature(FeatureType.ACTION, (DA,))},
        device="cpu",
        **settings,
    )
    torch.manual_seed(0)
    policy = DiffusionPolicy(cfg).eval()
    backbone = policy.diffusion.rgb_encoder.backbone
    frame = {
        "observation.state": torch.randn(1, DS),
        "observation.environment_state": torch.randn(1, DE),
        **{f"observation.images.{c}": torch.rand(1, *IMAGE_SHAPE) for c in CAMS},
    }
    # predict_action_chunk stacks the To frames queued by select_action; the batch only names the
    # queues (state, environment state and the stacked "observation.images").
    names = {"observation.state": None, "observation.environment_state": None, "observation.images": None}
    # inference_mode, as our policies use internally (lerobot's own calls use no_grad).
    with torch.inference_mode():
        _chunk_times(policy, frame, cfg.n_action_steps, warmup)
        _times(lambda: policy.predict_action_chunk(names), 0, warmup)
        print(json.dumps({"ready": True}), flush=True)
        for _ in range(rounds):
            if not sys.stdin.readline():
                break
            select = _chunk_times(policy, frame, cfg.n_action_steps, reps)
            window = _times(lambda: policy.predict_action_chunk(names), reps, 1)
            print(json.dumps({"select_action": select, "predict_action_chunk": window}), flush=True)
    return {
        "settings": settings,
        "normalization": "outside the policy in lerobot 0.4 (processor pipeline): not timed",
        "backbone": f"torchvision resnet18 ({type(backbone[1]).__name__}), random init",
        "lerobot": lerobot.__version__,
        "torchvision": torchvision.__version__,
        "torch": torch.__version__,
        "torch_git": torch.version.git_version,
        "python": sys.executable,
    }


STAGES = {"lerobot": stage_lerobot}


def _lerobot_python() -> str | None:
    if all(importlib.util.find_spec(m) for m in ("lerobot", "torchvision", "diffusers")):
        return sys.executable
    named = os.environ.get("ROBOLEARN_LEROBOT_INFER_PYTHON")
    if named:
        return named
    return str(_LEROBOT_INFER_VENV) if _LEROBOT_INFER_VENV.exists() else None


def _reply(proc: subprocess.Popen, err, python: str) -> dict[str, Any]:
    """The next JSON line the stage prints, or a skip naming the stage's error (from file ``err``)."""
    for line in proc.stdout:
        if line.startswith("{"):
            return json.loads(line)
    code = proc.wait()
    err.seek(0)
    tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
    return {"skipped": f"the lerobot stage failed in {python} (exit {code}): {' | '.join(tail)}"}


def _lerobot_case(ours: dict[str, Callable[[], list[float]]], rounds: int, reps: int) -> dict[str, Any]:
    """lerobot's figures, measured in rounds alternating with ``ours`` (name -> one round of our
    timings), so both see the same machine load; the stage process waits while ours run."""
    python = _lerobot_python()
    if python is None:
        return {
            "skipped": f"lerobot's diffusion policy is not importable here and {_LEROBOT_INFER_VENV} does not "
            "exist (set $ROBOLEARN_LEROBOT_INFER_PYTHON; recipe in bench/infer.py)"
        }
    if not Path(python).exists():
        return {"skipped": f"$ROBOLEARN_LEROBOT_INFER_PYTHON={python} does not exist"}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    args = json.dumps({"reps": reps, "warmup": 3, "rounds": rounds})
    cmd = [python, str(Path(__file__).resolve()), "--stage", "lerobot", args]
    theirs: dict[str, list[float]] = {"select_action": [], "predict_action_chunk": []}
    mine: dict[str, list[float]] = {name: [] for name in ours}
    with (
        tempfile.TemporaryFile() as err,
        subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env
        ) as proc,
    ):
        reply = _reply(proc, err, python)
        for _ in range(rounds if "ready" in reply else 0):
            for name, measure in ours.items():
                mine[name] += measure()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            reply = _reply(proc, err, python)
            if "skipped" in reply:
                break
            for key in theirs:
                theirs[key] += reply[key]
        if "skipped" not in reply:
            proc.stdin.close()
            reply = _reply(proc, err, python)
    if "skipped" in reply:
        return reply
    return {
        **{key: _summary(t) for key, t in theirs.items()},
        **{f"robolearn_{name}": _summary(t) for name, t in mine.items()},
        "rounds": rounds,
        **reply,
    }


# --------------------------------------------------------------------------- the run
def run(json_out: str | Path | None = None, quick: bool = False) -> dict[str, Any]:
    """Measure every case, print a table, optionally write JSON; returns the results dict."""
    from robolearn.policies import (
        DenoiserConfig,
        DiffusionConfig,
        FlowConfig,
        ImageEncoderConfig,
        ObsEncoderConfig,
    )

    torch.set_num_threads(1)
    reps = (20, 5) if quick else (300, 30)
    small_unet = DenoiserConfig(
        kind="unet", down_dims=UNET_DOWN_DIMS, time_embed_dim=UNET_TIME_DIM,
        kernel_size=UNET_KERNEL, n_groups=UNET_GROUPS,
    )  # fmt: skip
    state_mlp = DenoiserConfig(kind="mlp", mlp_dims=STATE_MLP_DIMS, time_embed_dim=64)
    results: dict[str, Any] = {
        "threads": "torch.set_num_threads(1)",
        "torch": torch.__version__,
        "torch_git": torch.version.git_version,
        "machine": platform.processor() or platform.machine(),
        "load_average": list(os.getloadavg()),
        "setup": (
            f"batch 1, To={TO}, H={H}, Da={DA}, state {DS}+{DE}; state flow: MLP velocity net "
            f"{STATE_MLP_DIMS} or UNet {UNET_DOWN_DIMS}; image: 2 cameras 96x96 centre-cropped "
            f"to {CROP[0]}x{CROP[1]}, one ResNet-18 (GroupNorm) for both, UNet {UNET_DOWN_DIMS}"
        ),
        "cases": {},
    }
    cases = results["cases"]
    # Policies are built outside inference mode; predict_action_chunk / select_action enter it themselves.
    for label, denoiser in (("flow1_state_mlp", state_mlp), ("flow1_state_unet_small", small_unet)):
        policy, feats = _build("flow", FlowConfig(denoiser=denoiser, num_inference_steps=1), images=False)
        obs = _obs(feats, TO)
        cases[label] = _summary(_times(lambda p=policy, o=obs: p.predict_action_chunk(o), reps[0], 20))
        cases[label]["goal_ms"] = 1.0
    image = ImageEncoderConfig(backbone="resnet18", shared=True, crop_shape=CROP, num_keypoints=KEYPOINTS)
    encoder = ObsEncoderConfig(image=image)
    image_cases = (
        (
            "flow4_image",
            "flow",
            FlowConfig(denoiser=small_unet, num_inference_steps=4, obs_encoder=encoder),
            40.0,
        ),
        (
            "ddim10_image",
            "diffusion",
            DiffusionConfig(
                denoiser=small_unet,
                obs_encoder=encoder,
                num_inference_steps=DDIM_STEPS,
                num_train_timesteps=TRAIN_TIMESTEPS,
                inference_scheduler="ddim",
            ),
            130.0,
        ),  # fmt: skip
    )
    for label, name, cfg, goal in image_cases:
        policy, feats = _build(name, cfg, images=True)
        obs, frame, n_exec = _obs(feats, TO), _obs(feats, None), policy.config.n_action_steps
        window = _times(lambda p=policy, o=obs: p.predict_action_chunk(o), reps[1], 3)
        cases[f"{label}_window"] = {**_summary(window), "goal_ms": goal}
        step = _chunk_times(policy, frame, n_exec, reps[1])
        cases[f"{label}_select_action"] = {**_summary(step), "goal_ms": goal}
    # The peer against the last case (DDIM-10), in alternating rounds of `peer_reps` chunks each.
    rounds, peer_reps = (1, 5) if quick else (6, 5)
    ours = {
        "select_action": lambda p=policy, f=frame, n=n_exec: _chunk_times(p, f, n, peer_reps),
        "window": lambda p=policy, o=obs: _times(lambda: p.predict_action_chunk(o), peer_reps, 1),
    }
    results["lerobot"] = _lerobot_case(ours, rounds, peer_reps)
    _ratios(results)
    _print(results)
    vla = _vla_bench()
    results["vla"] = vla.run_vla(quick)
    vla.print_vla(results["vla"])
    if json_out is not None:
        Path(json_out).write_text(json.dumps(results, indent=2))
    return results


def _vla_bench():
    """``bench/infer_vla.py``, imported by path (``bench/`` is a folder of scripts)."""
    path = Path(__file__).with_name("infer_vla.py")
    spec = importlib.util.spec_from_file_location("robolearn_bench_infer_vla", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ratios(results: dict[str, Any]) -> None:
    """lerobot p50 / robolearn DDIM-10 p50 for the same call, from the alternating rounds (> 1:
    robolearn is faster)."""
    peer = results["lerobot"]
    if "skipped" in peer:
        return
    pairs = {
        "select_action_lerobot_over_ddim10": ("select_action", "robolearn_select_action"),
        "window_lerobot_over_ddim10": ("predict_action_chunk", "robolearn_window"),
    }
    results["ratios"] = {
        name: peer[theirs]["p50_ms"] / peer[ours]["p50_ms"] for name, (theirs, ours) in pairs.items()
    }


def _line(label: str, r: dict[str, Any]) -> str:
    goal = f"  goal <= {r['goal_ms']:g} ms" if "goal_ms" in r else ""
    return f"  {label:46s} p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  (n={r['n']}){goal}"


def _print(results: dict[str, Any]) -> None:
    print(f"policy inference latency per chunk, {results['threads']} (torch {results['torch']})")
    print(f"  {results['setup']}")
    for label, r in results["cases"].items():
        print(_line(label, r))
    peer = results["lerobot"]
    if "skipped" in peer:
        print(f"  lerobot diffusion policy: skipped: {peer['skipped']}")
        return
    print(
        f"  lerobot {peer['lerobot']} DiffusionPolicy (torch {peer['torch']}, torchvision {peer['torchvision']}, "
        f"{peer['backbone']}; same torch commit as ours: {peer['torch_git'] == results['torch_git']})"
    )
    print("    settings: " + ", ".join(f"{k}={v}" for k, v in peer["settings"].items()))
    print(
        f"    environment state {DE}-D (FeatureType.ENV), in the condition as in ours; normalization: {peer['normalization']}"
    )
    ratios = results["ratios"]
    print(
        f"    alternating rounds: {peer['rounds']} x {peer['select_action']['n'] // peer['rounds']} chunks each side"
    )
    print(_line("lerobot select_action (chunk step, To frames)", peer["select_action"]))
    print(_line("  robolearn ddim10 select_action (1 new frame)", peer["robolearn_select_action"]))
    print(f"    ratio lerobot / robolearn p50: {ratios['select_action_lerobot_over_ddim10']:.2f}x")
    print(_line("lerobot predict_action_chunk (To frames)", peer["predict_action_chunk"]))
    print(_line("  robolearn ddim10 window (To frames)", peer["robolearn_window"]))
    print(f"    ratio lerobot / robolearn p50: {ratios['window_lerobot_over_ddim10']:.2f}x")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--stage":
        print(json.dumps(STAGES[sys.argv[2]](**json.loads(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write results to this JSON file")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    args = parser.parse_args()
    run(args.json, quick=args.quick)


if __name__ == "__main__":
    main()
