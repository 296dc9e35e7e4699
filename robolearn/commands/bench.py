"""``robolearn bench NAME``: run a benchmark from the checkout's ``bench/`` folder.

Benchmarks print figures and ratios against the peer measured in the same run; they are not tests.
Each ``bench/<name>.py`` defines ``run(json_out=None, **kwargs) -> dict``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

from robolearn.cli import UserError

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
BENCHMARKS = {
    "sim": "env steps/s (state, 1 and 2 cameras) vs the raw physics limit and robosuite Lift",
    "data": "loader samples/s (1 process, 2 workers) vs lerobot and the raw PyAV floor; peak memory",
    "infer": "policy latency per chunk, p50/p99, one thread (flow-1 state, flow-4 and DDIM-10 image) "
    "vs lerobot's diffusion policy; VLA tiny, offline real-weights and 60M, flow vs token head",
    "deploy": "policy-server round trip vs a raw websocket, 100 Hz loop jitter, sync/async/RTC under "
    "injected delays on the real-time sim (--checkpoint), soak (--soak-minutes); bridges (zmq, zenoh, ROS 1) "
    "JointState/image latency, the twin's watchdog and 10,000 fuzzed outputs",
    "rl": "fine-tuning rollout env steps/s vs the raw env rate, PPO update time, ReinFlow vs DPPO per iteration",
}


# --quick: each benchmark's smallest meaningful run (the documented-commands test uses it).
QUICK: dict[str, dict] = {
    "sim": {"seconds": 0.3},
    "data": {"episodes": 4, "seconds": 0.5, "memory_frames": 20_000, "memory_seconds": 0.5},
    "infer": {"quick": True},
    "deploy": {"quick": True},
    "rl": {"quick": True},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "name", choices=sorted(BENCHMARKS), help="; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items())
    )
    p.add_argument("--json", type=Path, help="write the figures here as JSON")
    p.add_argument("--seconds", type=float, help="measuring time per figure (sim, data)")
    p.add_argument("--tasks", default="franka-lift", help="sim: comma-separated env names")
    p.add_argument("--checkpoint", type=Path, help="deploy: a franka-lift flow run (sync/async/RTC figures)")
    p.add_argument("--episodes", type=int, help="deploy: real-time episodes per mode and delay")
    p.add_argument("--soak-minutes", type=float, default=0.0, help="deploy: also soak the server this long")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and short timings (a smoke run: the figures are noisy, not for comparison)",
    )


def load_bench(name: str, required: bool = True):
    """Import ``bench/<name>.py`` by path (``bench/`` is a folder of scripts, not a package);
    None when it is absent and not ``required``."""
    path = BENCH_DIR / f"{name}.py"
    if not path.is_file():
        if not required:
            return None
        raise UserError(f"{path} not found: benchmarks run from a source checkout")
    spec = importlib.util.spec_from_file_location(f"robolearn_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args: argparse.Namespace) -> int:
    # One thread per process for torch-based benchmarks; said in every figure they print.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    module = load_bench(args.name)
    kwargs: dict = QUICK[args.name].copy() if args.quick else {}
    if args.seconds is not None:
        kwargs["seconds"] = args.seconds
    if args.name == "sim":
        kwargs["tasks"] = tuple(t for t in args.tasks.split(",") if t)
    elif args.name == "infer":
        kwargs.pop("seconds", None)
    elif args.name == "rl":
        kwargs["task"] = args.tasks.split(",")[0]
    elif args.name == "deploy":
        kwargs.update(checkpoint=args.checkpoint, episodes=args.episodes, soak_minutes=args.soak_minutes)
    module.run(json_out=str(args.json) if args.json else None, **kwargs)
    return 0
