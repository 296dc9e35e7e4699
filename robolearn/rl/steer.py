"""V-GPS (Nakamoto et al., 2024): steer any policy with a critic at run time, weights untouched.

:class:`SteeredPolicy` wraps a policy and a :class:`~robolearn.rl.critic.ChunkCritic`. Each chunk
request samples K chunks in ONE batched policy call (``predict_action_chunk(obs, num_samples=K)``,
which every policy has), scores the part of each chunk that will be executed (from ``exec_start``,
the critic's ``chunk`` actions) with min(Q1, Q2), and returns the argmax, or a sample from
softmax(Q / temperature). It has the Policy interface (``config``, ``input_features``,
``predict_action_chunk``, ``select_action``, ``reset``), so ``eval``, ``steer`` and ``serve`` use it as
they use any policy. Its ``config`` is the wrapped policy's with the critic's observation features
added to ``input_features`` (an env or client sends both). A deterministic policy (``mlp``) returns
K identical chunks, so steering it changes nothing. The wrapper exposes no flow velocity, so a
server does not offer RTC guidance for a steered policy (guidance would bypass the critic).

Shapes: B batch, K samples, H horizon, Da action dim, To observation steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from robolearn.rl.critic import ChunkCritic
from robolearn.rl.wrapper import ChunkPolicyWrapper


class SteeredPolicy(ChunkPolicyWrapper):
    """``policy`` steered by ``critic`` over ``num_samples`` candidate chunks (module docstring).

    ``temperature=None`` (or 0) executes the argmax; a positive one samples softmax(Q / T), drawn
    from ``generator`` when given. After each call ``last_scores`` (B, K) and ``last_index`` (B,)
    hold what was scored and chosen.
    """

    def __init__(
        self,
        policy: Any,
        critic: ChunkCritic,
        num_samples: int = 10,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, found {num_samples}")
        if temperature is not None and temperature < 0:
            raise ValueError(f"temperature must be >= 0, found {temperature}")
        cfg = policy.config
        if critic.config.action_dim != cfg.action_dim:
            raise ValueError(
                f"critic action_dim {critic.config.action_dim} != policy action_dim {cfg.action_dim}"
            )
        room = cfg.horizon - cfg.exec_start
        if critic.config.chunk > room:
            raise ValueError(
                f"critic chunk {critic.config.chunk} is longer than the policy's executable chunk "
                f"(horizon {cfg.horizon} - exec_start {cfg.exec_start} = {room})"
            )
        super().__init__(cfg, critic.input_features)
        self.policy, self.critic = policy, critic
        self.num_samples, self.temperature, self.generator = num_samples, temperature, generator
        self.name = str(getattr(policy, "name", "") or type(policy).__name__)
        self.last_scores: torch.Tensor | None = None
        self.last_index: torch.Tensor | None = None

    # ----------------------------------------------------------------------------- description
    @property
    def device(self) -> torch.device:
        return getattr(self.policy, "device", self.critic.device)

    def check_features(self, found: Mapping[str, Any], source: str = "dataset") -> None:
        """The wrapped policy's check, plus the critic's features (names the first mismatch)."""
        from robolearn.policies.common.features import check_features

        self.policy.check_features(found, source)
        check_features(self.critic.input_features, found, source)

    # ----------------------------------------------------------------------------- inference
    @torch.inference_mode()
    def predict_action_chunk(
        self, obs: Mapping[str, Any], noise: torch.Tensor | None = None, num_samples: int | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:  # fmt: skip
        """The steered chunk (B, H, Da) raw, or (B, M, H, Da) with ``num_samples=M`` (M steered
        chunks, each the best of K). ``noise``: (B, K, H, Da) or (B, M, K, H, Da) for the candidates;
        other keyword arguments go to the policy's sampler."""
        k, m = self.num_samples, num_samples or 1
        if noise is not None:
            noise = noise.reshape(noise.shape[0], m * k, *noise.shape[-2:])
        samples = self.policy.predict_action_chunk(obs, noise=noise, num_samples=m * k, **kwargs)
        b = samples.shape[0]
        start = self.config.exec_start
        flat = samples.reshape(b * m, k, *samples.shape[2:])
        crit_obs = {key: _repeat(obs[key], m) for key in self.critic.input_features}
        scores = self.critic.score(crit_obs, flat[:, :, start:])  # (B*M, K)
        if not self.temperature:
            index = scores.argmax(dim=1)
        else:
            probs = torch.softmax(scores / self.temperature, dim=1)
            index = torch.multinomial(probs, 1, generator=self.generator).squeeze(1)
        chosen = flat[torch.arange(b * m, device=flat.device), index]
        self.last_scores = scores.reshape(b, m, k) if num_samples else scores
        self.last_index = index.reshape(b, m) if num_samples else index
        return chosen.reshape(b, m, *chosen.shape[1:]) if num_samples else chosen

    def _reset_wrapped(self) -> None:
        self.policy.reset()


def _repeat(x: Any, m: int) -> Any:
    """Each observation repeated ``m`` times along the batch (for M steered chunks per observation)."""
    if m == 1:
        return x
    return torch.as_tensor(x).repeat_interleave(m, dim=0)


__all__ = ["SteeredPolicy"]
