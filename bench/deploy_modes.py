"""Synchronous chunking, async latest-only and RTC on the real-time sim robot, under injected delays.

Used by ``bench/deploy.py`` (``robolearn bench deploy``). The policy server runs in this process
with a trained flow checkpoint whose observation encoding is preceded by a sleep of ``delay`` ms in
every request (the injected inference delay, on the server side, so every mode pays it the same
way). The sim robot runs franka-lift in real time at its control rate; one control thread ticks on
the robot's grid (:class:`robolearn.deploy.loop.RateLoop`, half a period after each robot tick).

- **sync**: ask for a chunk, wait for it while the robot holds still, execute its first
  ``n_action_steps`` actions, ask again (what ``robolearn eval`` does, with the wait made visible).
- **async** (latest-only): :class:`robolearn.deploy.runner.Runner` (what ``robolearn run`` drives),
  whose chunk queue asks for the next chunk when the current one is half executed; the reply
  replaces the plan, minus the actions whose time passed while it was computed.
- **rtc**: the same Runner with ``rtc=True``: each request carries the left-over plan and the
  measured delay, and the server inpaints the new chunk to agree with the actions that execute
  meanwhile (:mod:`robolearn.policies.flow.rtc`).

Per mode and delay, over the same seeds: success (first success, as ``robolearn eval``), held
success, ticks and seconds to first success (successful episodes), hold ticks (the robot held for
want of a policy action), the measured delay in ticks, and the mean jump between consecutive executed
actions (RTC's claim is smoothness at chunk switches).
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

MODES = ("sync", "async", "rtc")


def _delayed(policy, delay_s: float):
    """``policy`` with a sleep before each observation encoding (once per request, plain or RTC)."""
    encode = type(policy).encode_obs.__get__(policy)

    def slow_encode(obs):
        time.sleep(delay_s)
        return encode(obs)

    policy.encode_obs = slow_encode  # the instance attribute shadows the method
    return policy


def _sync_episode(robot, client, seed: int) -> dict[str, Any]:
    """Synchronous chunking: block on each chunk (the robot holds), then execute n_action_steps."""
    from robolearn.deploy.client import ObservationWindow
    from robolearn.deploy.loop import RateLoop

    meta = client.metadata
    n_exec = int(meta["n_action_steps"])
    obs = robot.reset(seed)
    window = ObservationWindow(meta, robot.observation_features)
    plan: deque[np.ndarray] = deque()
    delays, seq = [], 0
    loop = RateLoop(robot.control_hz)
    loop.start(at=obs["timestamp"] + 0.5 / robot.control_hz)
    while True:
        loop.wait()
        obs = robot.get_observation()
        if robot.episode.done:
            break
        window.push(obs)
        if not plan:
            before = robot.episode.steps
            seq += 1
            reply = client.infer(window.request(), seq=seq)
            if reply.error is not None:
                raise RuntimeError(f"sync: the server refused a request: {reply.error}")
            robot.advance()
            delays.append(robot.episode.steps - before)
            plan.extend(reply.actions[:n_exec])
        robot.send_action(plan.popleft())
    robot.stop()
    return {"delays": delays}


def run_episode(robot, client, mode: str, seed: int) -> dict[str, Any]:
    """One real-time episode of ``mode``; the robot's own episode record decides success."""
    from robolearn.deploy.runner import Runner

    if mode == "sync":
        delays, sent_holds = _sync_episode(robot, client, seed)["delays"], 0
    else:
        runner = Runner(robot, client, merge="latest", rtc=mode == "rtc", request_timeout=5.0)
        report = runner.run_episode(seed)
        delays, sent_holds = report.delays, report.holds
    ep = robot.episode
    sent = np.array([r.action for r in robot.action_log if r.source == "sent"], dtype=np.float64)
    jump = float(np.linalg.norm(np.diff(sent, axis=0), axis=1).mean()) if len(sent) > 1 else 0.0
    return {"seed": seed, "success": ep.success, "held": ep.held, "first_success_step": ep.first_success_step,
            "steps": ep.steps, "hold_ticks": ep.idle_ticks + sent_holds, "delay_ticks": float(np.mean(delays)) if delays else 0.0,
            "action_jump": jump, "hz": robot.control_hz}  # fmt: skip


def _summary(eps: list[dict[str, Any]]) -> dict[str, Any]:
    wins = [e for e in eps if e["success"]]
    steps = [e["first_success_step"] for e in wins]
    hz = eps[0]["hz"]
    return {
        "episodes": len(eps),
        "success_rate": len(wins) / len(eps),
        "held_success_rate": sum(e["held"] for e in eps) / len(eps),
        "steps_to_success_mean": float(np.mean(steps)) if steps else None,
        "seconds_to_success_mean": float(np.mean(steps)) / hz if steps else None,
        "hold_ticks_mean": float(np.mean([e["hold_ticks"] for e in eps])),
        "delay_ticks_mean": float(np.mean([e["delay_ticks"] for e in eps])),
        "action_jump_mean": float(np.mean([e["action_jump"] for e in eps])),
        "per_episode": eps,
    }


def bench_modes(
    checkpoint: Path,
    episodes: int = 10,
    delays_ms: tuple[float, ...] = (0.0, 100.0, 300.0),
    modes: tuple[str, ...] = MODES,
    task: str | None = None,
    quick: bool = False,
) -> dict[str, Any]:
    """Every mode under every delay, ``episodes`` real-time episodes each on the same seeds, on
    ``task`` (default: the env the checkpoint was trained for, else franka-lift)."""
    import torch

    from robolearn.deploy.client import PolicyClient
    from robolearn.deploy.keymap import KeyMap
    from robolearn.deploy.server import PolicyServer
    from robolearn.deploy.sim_robot import SimRobot
    from robolearn.eval import EVAL_SEED_BASE
    from robolearn.eval.evaluate import policy_env_config
    from robolearn.policies import checkpoint_env
    from robolearn.policies.base import load_policy
    from robolearn.progress import progress

    torch.set_num_threads(1)
    policy = load_policy(checkpoint)
    task = task or checkpoint_env(checkpoint) or "franka-lift"
    if policy.name != "flow":
        return {"skipped": f"{checkpoint}: a {policy.name} policy; RTC needs a flow policy"}
    cfg = policy_env_config(policy, task)
    if quick and hasattr(cfg, "max_episode_steps"):
        cfg = dataclasses.replace(cfg, max_episode_steps=40)  # a smoke run: short episodes
    out: dict[str, Any] = {"checkpoint": str(checkpoint), "task": task, "episodes": episodes,
                           "n_action_steps": policy.config.n_action_steps, "horizon": policy.config.horizon,
                           "num_inference_steps": policy.config.num_inference_steps, "results": {}}  # fmt: skip
    seeds = [EVAL_SEED_BASE + i for i in range(episodes)]
    robot = SimRobot(task, config=cfg)
    bar = progress(total=len(delays_ms) * len(modes) * episodes, desc="bench deploy modes", unit="ep")
    try:
        robot.connect()
        out["hz"] = robot.control_hz
        for delay in delays_ms:
            server = PolicyServer(_delayed(load_policy(checkpoint), delay / 1e3), KeyMap())
            server.start()
            client = PolicyClient(server.url)
            try:
                client.start()
                for mode in modes:
                    eps = []
                    for s in seeds:
                        eps.append(run_episode(robot, client, mode, s))
                        bar.update(1)
                    out["results"][f"{mode}@{delay:g}ms"] = {"mode": mode, "delay_ms": delay, **_summary(eps)}
            finally:
                client.close()
                server.stop()
    finally:
        bar.close()
        robot.disconnect()
    _ratios(out)
    return out


def _ratios(out: dict[str, Any]) -> None:
    """Completion time of async and RTC relative to sync at the same delay."""
    res = out["results"]
    for r in res.values():
        sync = res.get(f"sync@{r['delay_ms']:g}ms")
        ok = sync and sync["seconds_to_success_mean"] and r["seconds_to_success_mean"]
        r["time_vs_sync"] = r["seconds_to_success_mean"] / sync["seconds_to_success_mean"] if ok else None


def print_modes(m: dict[str, Any]) -> None:
    """The table of :func:`bench_modes`' results."""
    if "skipped" in m:
        print(f"  modes: skipped: {m['skipped']}")
        return
    print(f"  sync / async latest-only / RTC on {m['task']} in real time ({m['hz']:.0f} Hz), {m['episodes']} episodes each, "
          f"same seeds; checkpoint {m['checkpoint']} (H={m['horizon']}, executes {m['n_action_steps']}, "
          f"K={m['num_inference_steps']}); injected server-side delay")  # fmt: skip
    print(f"    {'mode':<7}{'delay':>7}{'success':>9}{'held':>7}{'t->success':>12}{'vs sync':>9}"
          f"{'holds':>7}{'d (ticks)':>10}{'|Δa|':>8}")  # fmt: skip
    for r in m["results"].values():
        t = r["seconds_to_success_mean"]
        vs = r["time_vs_sync"]
        print(f"    {r['mode']:<7}{r['delay_ms']:>5.0f}ms{100 * r['success_rate']:>8.0f}%{100 * r['held_success_rate']:>6.0f}%"
              f"{(f'{t:.2f} s' if t else '-'):>12}{(f'{vs:.2f}x' if vs else '-'):>9}{r['hold_ticks_mean']:>7.1f}"
              f"{r['delay_ticks_mean']:>10.1f}{r['action_jump_mean']:>8.3f}")  # fmt: skip


__all__ = ["MODES", "bench_modes", "print_modes", "run_episode"]
