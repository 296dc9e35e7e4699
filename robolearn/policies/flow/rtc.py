"""Real-time chunking (RTC) for flow policies: Black, Galliker & Levine 2025, arXiv 2506.07339.

While the robot executes chunk A_prev, the next chunk is sampled so that it agrees with what will
execute anyway: the first ``d`` actions (the inference delay, in control steps) are frozen, the
overlap after them is softly inpainted, and the tail is free. Each Euler step of the flow adds a
ΠGDM-style guidance term to the velocity (the paper's Algorithm 1):

    Â¹(A)  = A + (1 − τ)·v(A, o, τ)                  predicted clean chunk at time τ
    e      = (Y − Â¹(A)) · diag(W)                   weighted error against the frozen actions Y
    g      = eᵀ ∂Â¹/∂A                               one vector-Jacobian product through the network
    A     += Δ·(v + min(β, (1 − τ)/(τ·r_τ²))·g),     r_τ² = (1 − τ)² / (τ² + (1 − τ)²)

with τ = 0 noise and τ = 1 data (the FlowPolicy convention), the weight clipped at β (infinite at
τ = 0 before clipping) and the soft mask (paper eq. 5), over chunk steps i measured from "now":

    W_i = 1                                 i < d
    W_i = c_i·(e^{c_i} − 1)/(e − 1)         d ≤ i < H − s,   c_i = (H − s − i)/(H − s − d + 1)
    W_i = 0                                 i ≥ H − s

where s is the execution horizon (steps between chunk starts). Guidance works in the policy's
normalized action space; the result is clipped and unnormalized like any sample. No retraining.

Alignment: a chunk's step ``exec_start = To − 1`` is the observation's time (earlier steps are the
past of the observation window and never execute), so ``prev_actions[j]`` (the action that will
execute j control steps after the observation was taken) is aligned with chunk step
``exec_start + j``, and the mask above is laid over chunk steps ``exec_start ...``; the past steps
get weight 0. This module imports torch: only the policy server uses it.

Shapes: B batch, H horizon, Da action dim, n left-over actions, K Euler steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from robolearn.types import ACTION

SCHEDULES = ("exp", "linear", "ones", "zeros")
"""Mask schedules over the overlap region: the paper's exponential one, and the ablations."""


def prefix_weights(start: int, end: int, total: int, schedule: str = "exp") -> np.ndarray:
    """The soft mask W (total,) float32: 1 before ``start`` (= d), decaying over [start, end)
    (end = H − s), 0 from ``end`` on. ``end < start`` pulls ``start`` down to ``end`` (nothing past
    the end of the previous chunk can be frozen). ``schedule``: "exp" (the paper), "linear",
    "ones" (guide everything before ``end``), "zeros" (hard prefix only)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {SCHEDULES}, found {schedule!r}")
    if total < 0 or start < 0 or end < 0:
        raise ValueError(f"prefix_weights: expected start, end, total >= 0, found {start}, {end}, {total}")
    end = min(end, total)
    start = min(start, end)
    i = np.arange(total, dtype=np.float64)
    if schedule == "ones":
        w = np.ones(total)
    elif schedule == "zeros":
        w = (i < start).astype(np.float64)
    else:
        c = np.clip((end - i) / (end - start + 1), 0.0, 1.0)
        w = np.where(i < start, 1.0, c * np.expm1(c) / (math.e - 1) if schedule == "exp" else c)
    return np.where(i >= end, 0.0, w).astype(np.float32)


def guidance_weight(tau: float, beta: float) -> float:
    """min(β, (1 − τ)/(τ·r_τ²)) with r_τ² = (1 − τ)²/(τ² + (1 − τ)²); β at τ = 0."""
    if beta < 0:
        raise ValueError(f"beta: expected >= 0, found {beta}")
    if tau <= 0.0:
        return float(beta)
    if tau >= 1.0:
        return 0.0
    return float(min(beta, (tau**2 + (1 - tau) ** 2) / (tau * (1 - tau))))


def _tensor(x: Any) -> torch.Tensor:
    """float32 tensor; numpy input is copied (wire arrays are read-only views of the frame)."""
    if isinstance(x, torch.Tensor):
        return x.float()
    return torch.from_numpy(np.array(x, dtype=np.float32))


def _as_batch_lists(
    prev_actions: Any, inference_delay: int | Sequence[int], b: int
) -> tuple[list[torch.Tensor], list[int]]:
    """Per-sample left-overs [(n_b, Da)] and delays [d_b] from a shared or per-sample form."""
    if isinstance(prev_actions, (torch.Tensor, np.ndarray)):
        prev = _tensor(prev_actions)
        if prev.dim() == 2:
            prev = prev.unsqueeze(0).expand(b, *prev.shape)
        if prev.dim() != 3 or prev.shape[0] != b:
            raise ValueError(
                f"prev_actions: expected shape (n, Da) or ({b}, n, Da), found {tuple(prev.shape)}"
            )
        prevs = list(prev.unbind(0))
    else:
        prevs = [_tensor(p) for p in prev_actions]
        if len(prevs) != b:
            raise ValueError(f"prev_actions: expected {b} per-sample arrays, found {len(prevs)}")
    delays = (
        [int(inference_delay)] * b if np.ndim(inference_delay) == 0 else [int(d) for d in inference_delay]
    )
    if len(delays) != b:
        raise ValueError(f"inference_delay: expected {b} values, found {len(delays)}")
    return prevs, delays


def rtc_mask(
    h: int,
    exec_start: int,
    prev_lengths: Sequence[int],
    delays: Sequence[int],
    execution_horizon: int | None = None,
    schedule: str = "exp",
) -> np.ndarray:
    """(B, H) guidance weights over chunk steps: the paper's mask over steps ``exec_start ...`` with
    H' = H − exec_start executable steps, d = each delay and end = min(H' − s, n_b) (the previous
    chunk ends after its n_b left-over actions; s = ``execution_horizon``, absent = no bound)."""
    he = h - exec_start
    rows = []
    for n, d in zip(prev_lengths, delays, strict=True):
        if d < 0:
            raise ValueError(f"inference_delay: expected >= 0, found {d}")
        end = min(he, n) if execution_horizon is None else min(he - execution_horizon, n)
        row = np.zeros(h, dtype=np.float32)
        row[exec_start:] = prefix_weights(d, max(end, 0), he, schedule)
        rows.append(row)
    return np.stack(rows)


def guided_chunk(
    policy: Any,
    batch: dict[str, torch.Tensor],
    prev_actions: Any,
    inference_delay: int | Sequence[int],
    execution_horizon: int | None = None,
    beta: float = 5.0,
    num_steps: int | None = None,
    schedule: str = "exp",
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample action chunks (B, H, Da), raw units, inpainted to agree with ``prev_actions``.

    ``policy``: a FlowPolicy (``velocity``, ``time_grid``, normalizer inside), in eval mode.
    ``batch``: the observation window, each feature (B, To, ...), as for ``predict_action_chunk``.
    ``prev_actions``: raw actions that will execute from the observation's time on, (n, Da) shared,
    (B, n, Da), or a sequence of B arrays (n_b, Da) when clients' left-overs differ in length;
    ``inference_delay``: d, int or B ints, the actions that execute before this chunk can start.
    ``execution_horizon``: s in the paper (the mask is 0 from H − s on); None bounds the overlap by
    the left-over's length alone. ``beta``: the guidance-weight clip. ``schedule``: the mask
    (:func:`prefix_weights`). ``noise``: (B, H, Da) normalized initial noise (drawn when None).
    Runs its own autograd (safe to call from inside ``torch.inference_mode``).
    """
    if not all(hasattr(policy, a) for a in ("velocity", "time_grid", "config", "normalizer")):
        raise TypeError(f"guided_chunk: needs a flow policy (velocity field), found {type(policy).__name__}")
    cfg = policy.config
    h, da = cfg.horizon, cfg.action_dim
    with torch.inference_mode(False), torch.no_grad():
        # Inference tensors cannot enter an autograd graph: clone the inputs out of inference mode.
        obs = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        cond = policy.encode_obs(obs)
        b, device = cond.shape[0], cond.device
        prevs, delays = _as_batch_lists(prev_actions, inference_delay, b)
        for i, p in enumerate(prevs):
            if p.dim() != 2 or p.shape[1] != da:
                raise ValueError(f"prev_actions[{i}]: expected shape (n, {da}), found {tuple(p.shape)}")
        mask = torch.from_numpy(
            rtc_mask(h, cfg.exec_start, [len(p) for p in prevs], delays, execution_horizon, schedule)
        ).to(device)
        target = torch.zeros(b, h, da, device=device)
        for i, p in enumerate(prevs):
            n = min(len(p), h - cfg.exec_start)
            if n:
                y = p[:n].to(device=device, dtype=torch.float32)
                target[i, cfg.exec_start : cfg.exec_start + n] = policy.normalizer.normalize(ACTION, y)
        weighted = mask[..., None]
        k = num_steps or cfg.num_inference_steps
        if noise is None:
            noise = torch.randn((b, h, da), generator=generator, device=device)
        elif tuple(noise.shape) != (b, h, da):
            raise ValueError(f"noise: expected shape {(b, h, da)}, found {tuple(noise.shape)}")
        x = noise.clone().to(device)
        grid = policy.time_grid(k)
        dt = 1.0 / k
        step = dt if getattr(cfg, "shortcut", False) else None
        guided = beta > 0 and bool(mask.any())
        for j in range(k):
            tau = float(grid[j])
            if not guided:  # nothing to agree with: the plain Euler step, without the VJP
                x = x + dt * policy.velocity(x, grid[j], cond, step)
                continue
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                v = policy.velocity(xg, grid[j], cond, step)
                clean = xg + (1.0 - tau) * v
                err = (target - clean.detach()) * weighted
                (g,) = torch.autograd.grad(clean, xg, grad_outputs=err)
            x = x + dt * (v.detach() + guidance_weight(tau, beta) * g)
        if getattr(cfg, "clip_sample", True):
            x = x.clamp(-cfg.clip_range, cfg.clip_range)
        return policy.normalizer.unnormalize(ACTION, x)


__all__ = ["SCHEDULES", "guidance_weight", "guided_chunk", "prefix_weights", "rtc_mask"]
