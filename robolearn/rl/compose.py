"""Policy composition (GPC, Wang et al. 2025): mix two generative policies at every denoising step.

:class:`ComposedPolicy` runs ONE sampling chain for two pretrained policies of the same kind. At each
step both networks see the same current sample x (each conditioned on its own encoding of the same
observation, through its own normalizer and encoder), and the chain follows their convex mix:

- flow: v = w·v_A(x, t) + (1 − w)·v_B(x, t), then the Euler step x += Δ·v on the shared grid t_k = k/K;
  a ``prediction: sample`` network contributes its velocity (â − x)/(1 − t), so both mix as velocities;
- diffusion: out = w·out_A + (1 − w)·out_B in A's prediction space (B's clean-chunk prediction is
  turned into ε, or its ε into a clean chunk, through ᾱ_t when the two differ), then one step of A's
  scheduler (which B's must equal).

Both chains start from the same noise, so ``weight=1`` gives exactly A's chunk and ``weight=0``
exactly B's (bit for bit when the prediction types agree). The mix is done in one normalized action
space: the two action normalizations must agree, since each policy's noise prior N(0, I) lives in
its own normalized space and no affine map carries one chain onto the other; the error names the
dimension. Horizons, observation steps, executed steps, action dim and the step schedule must agree
too (errors name the field). The weights are never touched; no flow velocity is exposed, so a server
offers no RTC guidance for a composed policy. :func:`search_weights` evaluates a grid of weights in
closed loop on the same seeds and picks the best.

Shapes: B batch, K samples, H horizon, Da action dim, To observation steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from robolearn.rl.wrapper import ChunkPolicyWrapper
from robolearn.types import ACTION

KINDS = ("flow", "diffusion")
SHARED_FIELDS = ("horizon", "n_obs_steps", "n_action_steps", "action_dim", "num_inference_steps")
FLOW_FIELDS = ("clip_sample", "clip_range")
DIFFUSION_FIELDS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "clip_sample",
                    "clip_sample_range", "inference_scheduler")  # fmt: skip


def check_composable(policy_a: Any, policy_b: Any) -> str:
    """The kind (``flow`` or ``diffusion``) both policies are; a ``ValueError`` naming the first field
    (or action dimension) on which they disagree."""
    kind_a, kind_b = (str(getattr(p, "name", "")) for p in (policy_a, policy_b))
    for label, kind in (("A", kind_a), ("B", kind_b)):
        if kind not in KINDS:
            raise ValueError(f"policy {label}: type {kind!r} cannot be composed (expected flow or diffusion)")
    if kind_a != kind_b:
        raise ValueError(f"type: A is {kind_a!r}, B is {kind_b!r}; both must be flow or both diffusion")
    ca, cb = policy_a.config, policy_b.config
    for name in SHARED_FIELDS + (FLOW_FIELDS if kind_a == "flow" else DIFFUSION_FIELDS):
        if getattr(ca, name) != getattr(cb, name):
            raise ValueError(f"config.{name}: A has {getattr(ca, name)!r}, B has {getattr(cb, name)!r}")
    for key in set(ca.input_features) & set(cb.input_features):
        if tuple(ca.input_features[key]) != tuple(cb.input_features[key]):
            raise ValueError(
                f"input feature {key!r}: A takes {tuple(ca.input_features[key])}, "
                f"B takes {tuple(cb.input_features[key])}"
            )
    # The same normalized action <=> the same affine map raw -> normalized (scale and offset per dim).
    maps = []
    for policy in (policy_a, policy_b):
        zero = torch.zeros(1, ca.action_dim, device=policy.device)
        offset = policy.normalizer.normalize(ACTION, zero)[0].cpu()
        maps.append((policy.normalizer.normalize(ACTION, zero + 1.0)[0].cpu() - offset, offset))
    (scale_a, offset_a), (scale_b, offset_b) = maps
    bad = ~(
        torch.isclose(scale_a, scale_b, rtol=1e-5, atol=1e-6)
        & torch.isclose(offset_a, offset_b, rtol=1e-5, atol=1e-6)
    )
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"norm_stats {ACTION!r} dim {i}: A normalizes a as {scale_a[i].item():.6g}·a + "
            f"{offset_a[i].item():.6g}, B as {scale_b[i].item():.6g}·a + {offset_b[i].item():.6g}; "
            "composition needs one normalized action space"
        )
    return kind_a


class ComposedPolicy(ChunkPolicyWrapper):
    """``weight``·A + (1 − ``weight``)·B at every denoising step (module docstring).

    It has the Policy interface (``config``, ``input_features``, ``check_features``,
    ``predict_action_chunk``, ``select_action``, ``reset``), so ``eval`` uses it as any policy. Its
    ``config`` is A's with B's observation features added. Noise is drawn from ``generator`` when
    given (so a weight search can give every weight the same noise stream), else torch's global RNG.
    """

    def __init__(
        self, policy_a: Any, policy_b: Any, weight: float, generator: torch.Generator | None = None
    ) -> None:
        weight = float(weight)
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight: expected in [0, 1], found {weight}")
        kind = check_composable(policy_a, policy_b)
        super().__init__(policy_a.config, policy_b.config.input_features)
        self.kind = kind
        self.policy_a, self.policy_b, self.weight, self.generator = policy_a, policy_b, weight, generator
        self.name = f"composed-{self.kind}"

    # ----------------------------------------------------------------------------- description
    @property
    def device(self) -> torch.device:
        return self.policy_a.device

    def check_features(self, found: Mapping[str, Any], source: str = "dataset") -> None:
        """Both policies' checks (names the first mismatch)."""
        self.policy_a.check_features(found, source)
        self.policy_b.check_features(found, source)

    # ----------------------------------------------------------------------------- sampling
    def _mix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # 1·a + 0·b is a exactly (and 0·a + 1·b is b), so the end weights reproduce A and B.
        return self.weight * a + (1.0 - self.weight) * b

    def velocity(self, x: torch.Tensor, t: torch.Tensor | float, cond_a: torch.Tensor,
                 cond_b: torch.Tensor, dt: float) -> torch.Tensor:  # fmt: skip
        """The mixed flow velocity at x (N, H, Da), time t, for A's and B's features (N, To, Do)."""
        a, b = self.policy_a, self.policy_b
        va = a.velocity(x, t, cond_a, dt if a.config.shortcut else None)
        vb = b.velocity(x.to(b.device), t, cond_b, dt if b.config.shortcut else None).to(x.device)
        return self._mix(va, vb)

    def _sample_flow(self, cond_a: torch.Tensor, cond_b: torch.Tensor, x: torch.Tensor,
                     num_steps: int | None) -> torch.Tensor:  # fmt: skip
        k = num_steps or self.config.num_inference_steps
        grid, dt = self.policy_a.time_grid(k), 1.0 / k
        for i in range(k):
            x = x + dt * self.velocity(x, grid[i], cond_a, cond_b, dt)
        return self.policy_a._clip(x)

    def _sample_diffusion(self, cond_a: torch.Tensor, cond_b: torch.Tensor, x: torch.Tensor,
                          generator: torch.Generator | None) -> torch.Tensor:  # fmt: skip
        a, b = self.policy_a, self.policy_b
        scheduler = a.infer_scheduler
        kind_a, kind_b = a.config.prediction_type, b.config.prediction_type
        n = x.shape[0]
        for t in a._timesteps:
            tt = torch.full((n,), float(t), device=x.device)
            out_a = a.denoiser(x, tt, cond_a)
            out_b = b.denoiser(x.to(b.device), tt.to(b.device), cond_b).to(x.device)
            if kind_a != kind_b:
                alpha = scheduler.alphas_cumprod[t].to(x.device, x.dtype)
                if kind_a == "epsilon":  # B predicted the clean chunk: its ε
                    out_b = (x - alpha.sqrt() * out_b) / (1 - alpha).sqrt()
                else:  # B predicted ε: its clean chunk
                    out_b = (x - (1 - alpha).sqrt() * out_b) / alpha.sqrt()
            x = scheduler.step(self._mix(out_a, out_b), t, x, generator=generator, return_dict=False)[0]
        return x

    @torch.inference_mode()
    def predict_action_chunk(
        self, obs: Mapping[str, Any], noise: torch.Tensor | None = None, num_samples: int | None = None,
        num_steps: int | None = None, generator: torch.Generator | None = None, **kwargs: Any,
    ) -> torch.Tensor:  # fmt: skip
        """The composed chunk (B, H, Da) raw, or (B, K, H, Da) with ``num_samples=K``.

        ``noise``: (B, H, Da) or (B, K, H, Da) in the shared normalized space (drawn when None, from
        ``generator``, else the wrapper's). ``num_steps`` overrides K Euler steps (flow). Other keyword
        arguments (``adaptive``) are ignored: the composed chain always runs the fixed step grid.
        """
        a, b = self.policy_a, self.policy_b
        cond_a = a.encode_obs(obs)
        cond_b = b.encode_obs({k: v.to(b.device) if torch.is_tensor(v) else v for k, v in obs.items()})
        n = cond_a.shape[0]
        chunk = (self.config.horizon, self.config.action_dim)
        if noise is not None:
            expected = (n, *chunk) if num_samples is None else (n, num_samples, *chunk)
            if tuple(noise.shape) != expected:
                raise ValueError(f"noise: expected shape {expected}, found {tuple(noise.shape)}")
        if num_samples is not None:
            cond_a = cond_a.repeat_interleave(num_samples, dim=0)
            cond_b = cond_b.repeat_interleave(num_samples, dim=0)
            if noise is not None:
                noise = noise.reshape(n * num_samples, *chunk)
        gen = generator if generator is not None else self.generator
        x = a._noise(cond_a.shape[0], gen) if noise is None else noise.to(a.device)
        if self.kind == "flow":
            y = self._sample_flow(cond_a, cond_b.to(b.device), x, num_steps)
        else:
            y = self._sample_diffusion(cond_a, cond_b, x, gen)
        actions = a.normalizer.unnormalize(ACTION, y)
        return actions if num_samples is None else actions.view(n, num_samples, *chunk)

    def _reset_wrapped(self) -> None:
        self.policy_a.reset()
        self.policy_b.reset()


# --------------------------------------------------------------------------------- weight search
DEFAULT_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class WeightSearch:
    """Closed-loop results per weight (the same env seeds and noise stream for each) and the best."""

    weights: list[float]
    results: list[Any]
    """One :class:`robolearn.eval.evaluate.EvalResult` per weight."""
    best: int = 0
    """Index of the best weight: highest held success, then first success, then mean return."""

    @property
    def best_weight(self) -> float:
        return self.weights[self.best]

    def to_json(self) -> dict[str, Any]:
        keys = ("success_rate", "ci95", "held_success_rate", "held_ci95", "hold_steps", "episodes",
                "mean_return", "latency_ms")  # fmt: skip
        runs = []
        for w, r in zip(self.weights, self.results, strict=True):
            out = r.to_json()
            runs.append({"weight": w, **{k: out[k] for k in keys}})
        return {"weights": self.weights, "runs": runs, "best_weight": self.best_weight}


def best_index(results: Sequence[Any]) -> int:
    """The result with the highest held success, ties broken by first success, then mean return
    (the first such in the grid)."""

    def key(i: int) -> tuple[float, float, float]:
        r = results[i]
        return (r.held_success_rate, r.success_rate, r.mean_return)

    return max(range(len(results)), key=lambda i: (key(i), -i))


def search_weights(
    policy_a: Any,
    policy_b: Any,
    env_name: str,
    weights: Iterable[float] = DEFAULT_WEIGHTS,
    env_config: Any = None,
    episodes: int = 50,
    hold_steps: int = 20,
    num_envs: int = 4,
    seed: int | None = None,
    noise_seed: int = 0,
    progress: bool = True,
    on_result: Any = None,
) -> WeightSearch:
    """Evaluate :class:`ComposedPolicy` (A, B, w) for each w with :func:`robolearn.eval.evaluate.evaluate`.

    Every weight runs the same env seeds (from ``seed``, default eval's) and draws its noise from a
    generator re-seeded with ``noise_seed``, so the weights differ in the mix alone. ``on_result(w,
    result)`` is called after each weight (a CLI prints its row). Raises ``ValueError`` for a weight
    outside [0, 1] or policies that cannot be composed, before any rollout.
    """
    from robolearn.eval import EVAL_SEED_BASE
    from robolearn.eval.evaluate import evaluate, policy_env_config

    grid = [float(w) for w in weights]
    if not grid:
        raise ValueError("weights: expected at least one weight")
    device = policy_a.device
    composed = [ComposedPolicy(policy_a, policy_b, w, torch.Generator(device)) for w in grid]
    cfg = env_config if env_config is not None else policy_env_config(composed[0], env_name)
    results = []
    for w, policy in zip(grid, composed, strict=True):
        policy.generator.manual_seed(noise_seed)
        result = evaluate(policy, env_name, cfg, episodes=episodes, num_envs=num_envs, hold_steps=hold_steps,
                          seed_base=EVAL_SEED_BASE if seed is None else seed, progress=progress)  # fmt: skip
        results.append(result)
        if on_result is not None:
            on_result(w, result)
    return WeightSearch(grid, results, best_index(results))


__all__ = ["DEFAULT_WEIGHTS", "ComposedPolicy", "WeightSearch", "best_index", "check_composable",
           "search_weights"]  # fmt: skip
