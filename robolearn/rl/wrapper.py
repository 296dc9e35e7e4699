"""The part of the Policy interface that a policy wrapper (steering, composition) shares.

:class:`ChunkPolicyWrapper` holds a ``config`` (the wrapped policy's, with extra observation features
merged in), answers ``input_features`` and ``action_dim`` from it, and turns ``predict_action_chunk``
into ``select_action``: it keeps the last To frames (the first repeated after :meth:`reset`), asks for
a chunk when its queue is empty and executes ``[exec_start, exec_start + n_action_steps)`` of it.
Subclasses implement ``predict_action_chunk`` and :meth:`_reset_wrapped`.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class ChunkPolicyWrapper(nn.Module):
    """Base of policy wrappers: ``config`` is a copy of ``base_config`` whose ``input_features`` also
    hold ``extra_features`` not already there."""

    def __init__(self, base_config: Any, extra_features: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = copy.deepcopy(base_config)
        extra = {k: tuple(v) for k, v in extra_features.items() if k not in base_config.input_features}
        self.config.input_features = {**dict(base_config.input_features), **extra}
        self._queue: deque[torch.Tensor] = deque()
        self._frames: deque[dict[str, torch.Tensor]] = deque()

    @property
    def input_features(self) -> dict[str, tuple[int, ...]]:
        """The wrapped policy's observation features plus the extra ones."""
        return dict(self.config.input_features)

    @property
    def action_dim(self) -> int:
        return self.config.action_dim

    @torch.inference_mode()
    def select_action(self, obs: Mapping[str, Any]) -> torch.Tensor:
        """The action (B, Da) to execute now. ``obs``: full windows (B, To, ...) or the current frame
        (B, ...), of which the last To are kept (the first repeated after :meth:`reset`)."""
        key, shape = next(iter(self.config.input_features.items()))
        to = self.config.n_obs_steps
        if obs[key].dim() == len(shape) + 1:
            frame = {k: obs[k] for k in self.config.input_features}
            self._frames.extend([frame] * (to if not self._frames else 1))
            while len(self._frames) > to:
                self._frames.popleft()
            window = {k: torch.stack([f[k] for f in self._frames], dim=1) for k in frame}
        else:
            window = obs
        if not self._queue:
            chunk = self.predict_action_chunk(window)
            start = self.config.exec_start
            self._queue.extend(chunk[:, start : start + self.config.n_action_steps].unbind(1))
        return self._queue.popleft()

    def reset(self) -> None:
        """Reset the wrapped policies and forget queued actions and frames."""
        self._reset_wrapped()
        self._queue.clear()
        self._frames.clear()

    def _reset_wrapped(self) -> None:
        """Reset the wrapped policies (each subclass names its own)."""
        raise NotImplementedError(f"{type(self).__name__} must reset the policies it wraps")


__all__ = ["ChunkPolicyWrapper"]
