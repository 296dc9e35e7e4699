"""The one Policy interface every policy implements, and checkpoint loading.

Shapes: B batch, To observation steps, H (= Ta) action horizon, Da action dim, Do per-step
observation features, K samples per observation.

A batch is a dict of tensors: ``observation.state`` (B, To, Ds), optionally
``observation.environment_state`` (B, To, De) and ``observation.images.<cam>`` (B, To, 3, H, W)
float in [0, 1] (uint8 accepted), ``action`` (B, H, Da) raw units, ``action_is_pad`` (B, H) bool.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from robolearn.config import ConfigError, from_dict, to_dict
from robolearn.policies.checkpoint import CheckpointError, load_weights, read_meta, write_checkpoint
from robolearn.policies.common.config import PolicyConfig
from robolearn.policies.common.encoders import ObsEncoder
from robolearn.policies.common.features import (
    FeatureMismatchError,
    action_dim_of,
    check_features,
    select_input_features,
)
from robolearn.policies.common.normalize import Normalizer, clean_stats
from robolearn.types import ACTION, is_image_key

Batch = Mapping[str, Any]


class Policy(nn.Module, ABC):
    """Base class: normalization, observation encoding, chunk execution, checkpoints.

    Subclasses set ``name`` (the registry name) and implement :meth:`compute_loss` and
    :meth:`_sample`. Build one with ``features`` (dataset features, key -> shape or FeatureSpec) and
    ``stats`` (``{key: {"mean"|"std"|"min"|"max": array}}``); ``stats=None`` means identity
    normalization. ``load_pretrained=False`` skips loading pretrained encoder weights (a checkpoint
    provides all weights).
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        config: PolicyConfig,
        features: Mapping[str, Any] | None = None,
        stats: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        load_pretrained: bool = True,
    ) -> None:
        super().__init__()
        config = copy.deepcopy(config)
        if features is not None:
            config.input_features = select_input_features(features, config.obs_keys)
            config.action_dim = action_dim_of(features)
        if not config.input_features:
            raise ConfigError("input_features: empty; build the policy with features= (the dataset features)")
        if config.action_dim <= 0:
            raise ConfigError(f"action_dim: expected > 0, found {config.action_dim}; build with features=")
        config.input_features = {k: tuple(v) for k, v in config.input_features.items()}
        self.config = config
        all_features = {**config.input_features, ACTION: (config.action_dim,)}
        modes = {
            k: (config.image_norm if is_image_key(k) else config.state_norm) for k in config.input_features
        }
        modes[ACTION] = config.action_norm
        self.normalizer = Normalizer(all_features, modes, stats)
        self.stats = clean_stats(stats, list(all_features))
        self.obs_encoder = self._build_obs_encoder(load_pretrained)
        self._feature_items = [(k, torch.Size(v), is_image_key(k)) for k, v in config.input_features.items()]
        self._action_queue: deque[torch.Tensor] = deque()
        self._feature_history: deque[torch.Tensor | None] = deque()

    def _build_obs_encoder(self, load_pretrained: bool) -> ObsEncoder:
        """The per-step observation encoder (VLAs keep only the state part: cameras go to their tower)."""
        return ObsEncoder(self.config.obs_encoder, self.config.input_features, load_pretrained)

    # ----------------------------------------------------------------------------- description
    @property
    def input_features(self) -> dict[str, tuple[int, ...]]:
        """Observation key -> per-frame shape ((D,) or (C, H, W)) this policy consumes."""
        return dict(self.config.input_features)

    @property
    def action_dim(self) -> int:
        """Da."""
        return self.config.action_dim

    def check_features(self, found: Mapping[str, Any], source: str = "dataset") -> None:
        """Raise :class:`FeatureMismatchError` naming each input (and ``action``) feature that
        ``found`` lacks or shapes differently. Images may be given (H, W, C) or (C, H, W)."""
        expected = dict(self.config.input_features)
        if ACTION in found:
            expected[ACTION] = (self.config.action_dim,)
        check_features(expected, found, source)

    @property
    def device(self) -> torch.device:
        return self.normalizer.scale_0.device

    # ----------------------------------------------------------------------------- observations
    def _normalized_obs(self, obs: Batch, steps: int | None = None) -> dict[str, torch.Tensor]:
        """Check and normalize each input feature; keep its last ``steps`` (default To) frames."""
        to = self.config.n_obs_steps if steps is None else steps
        out = {}
        for key, shape, is_image in self._feature_items:
            x = obs.get(key)
            if x is None:
                raise FeatureMismatchError(
                    f"observation feature {key!r}: expected shape (B, {to}, *{tuple(shape)}), found missing"
                )
            if x.dim() != len(shape) + 2 or x.shape[2:] != shape or x.shape[1] < to:
                raise FeatureMismatchError(
                    f"observation feature {key!r}: expected shape (B, {to}, *{tuple(shape)}), found {tuple(x.shape)}"
                )
            if x.shape[1] > to:
                x = x[:, -to:]
            if is_image and x.dtype == torch.uint8:
                x = x.float() / 255.0
            out[key] = self.normalizer.normalize(key, x)
        return out

    def encode_obs(self, obs: Batch) -> torch.Tensor:
        """Observation dict (each (B, To, ...), raw units) -> features (B, To, Do)."""
        return self.obs_encoder(self._normalized_obs(obs))

    # ----------------------------------------------------------------------------- training
    @abstractmethod
    def compute_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar training loss and float metrics for one batch."""

    def _normalized_action(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Action (B, H, Da) normalized, and the padding mask (B, H) or None."""
        action = batch.get(ACTION)
        expected = (self.config.horizon, self.config.action_dim)
        if action is None or action.dim() != 3 or tuple(action.shape[1:]) != expected:
            found = "missing" if action is None else tuple(action.shape)
            raise FeatureMismatchError(
                f"batch feature {ACTION!r}: expected shape (B, *{expected}), found {found}"
            )
        is_pad = batch.get(f"{ACTION}_is_pad")
        return self.normalizer.normalize(ACTION, action), is_pad

    # ----------------------------------------------------------------------------- inference
    @abstractmethod
    def _sample(self, cond: torch.Tensor, noise: torch.Tensor | None, **kwargs: Any) -> torch.Tensor:
        """Observation features (N, To, Do) -> normalized action chunks (N, H, Da)."""

    def _noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        shape = (n, self.config.horizon, self.config.action_dim)
        return torch.randn(shape, generator=generator, device=self.device)

    @torch.inference_mode()
    def predict_action_chunk(
        self, obs: Batch, noise: torch.Tensor | None = None, num_samples: int | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Action chunks in raw units: (B, H, Da), or (B, K, H, Da) with ``num_samples=K``.

        ``obs``: each feature (B, To, ...). ``noise``: initial noise (B, H, Da) or (B, K, H, Da) in
        normalized units (drawn when None). The K samples share one observation encoding and run
        as one batch of B·K. Extra keyword arguments go to the sampler (flow: ``num_steps``,
        ``adaptive``, ``generator``; diffusion: ``generator``). Runs under ``torch.inference_mode``;
        call ``eval()`` first (training mode crops images at random).
        """
        return self._chunk_from_features(self.encode_obs(obs), noise, num_samples, **kwargs)

    def _chunk_from_features(
        self, cond: torch.Tensor, noise: torch.Tensor | None, num_samples: int | None, **kwargs: Any
    ) -> torch.Tensor:
        b = cond.shape[0]
        if noise is not None:
            chunk = (self.config.horizon, self.config.action_dim)
            expected = (b, *chunk) if num_samples is None else (b, num_samples, *chunk)
            if tuple(noise.shape) != expected:
                raise ValueError(f"noise: expected shape {expected}, found {tuple(noise.shape)}")
        if num_samples is not None:
            cond = cond.repeat_interleave(num_samples, dim=0)
            if noise is not None:
                noise = noise.reshape(b * num_samples, *noise.shape[2:])
        actions = self.normalizer.unnormalize(ACTION, self._sample(cond, noise, **kwargs))
        if num_samples is not None:
            actions = actions.view(b, num_samples, *actions.shape[1:])
        return actions

    def reset(self) -> None:
        """Forget queued actions and observation history (call at episode start)."""
        self._action_queue.clear()
        self._feature_history.clear()

    def _is_single_frame(self, obs: Batch) -> bool:
        key, shape, _ = self._feature_items[0]
        x = obs.get(key)
        if x is None:
            raise FeatureMismatchError(f"observation feature {key!r}: missing")
        return x.dim() == len(shape) + 1

    @torch.inference_mode()
    def select_action(self, obs: Batch) -> torch.Tensor:
        """The action (B, Da) to execute now, in raw units.

        ``obs`` holds either the current frame only (each feature (B, ...)) — the policy keeps the
        features of the last To frames itself, repeating the first frame after :meth:`reset` — or
        the full window (B, To, ...). A chunk is predicted when the queue is empty; its actions
        ``[To-1, To-1+n_action_steps)`` are executed one per call. A frame is encoded only if it
        will be inside the window of the next chunk, in the call that receives it, so the call
        that predicts encodes one frame rather than To.
        """
        queued = len(self._action_queue)
        if not self._is_single_frame(obs):
            if not queued:
                self._enqueue(self.predict_action_chunk(obs))
            return self._action_queue.popleft()
        to = self.config.n_obs_steps
        history = self._feature_history
        feats = None
        if queued == 0 or queued <= to - 1 or not history:
            frame = {key: obs[key].unsqueeze(1) for key, _, _ in self._feature_items}
            feats = self.obs_encoder(self._normalized_obs(frame, steps=1))  # (B, 1, Do)
        if not history:
            history.extend([feats] * to)
        else:
            history.append(feats)
            while len(history) > to:
                history.popleft()
        if queued:
            return self._action_queue.popleft()
        self._enqueue(self._chunk_from_features(torch.cat(tuple(history), dim=1), None, None))
        return self._action_queue.popleft()

    def _enqueue(self, chunk: torch.Tensor) -> None:
        start = self.config.exec_start
        self._action_queue.extend(chunk[:, start : start + self.config.n_action_steps].unbind(1))

    # ----------------------------------------------------------------------------- checkpoints
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``norm_stats.json`` into ``folder``
        (atomically: written under a temporary name, then renamed)."""
        return write_checkpoint(folder, self.name, to_dict(self.config), self.state_dict(), self.stats,
                                extra_files=self.checkpoint_files())  # fmt: skip

    def checkpoint_files(self) -> dict[str, bytes]:
        """More files for the checkpoint folder, name -> content (a VLA's tokenizer); none by default."""
        return {}

    def load_checkpoint_files(self, folder: Path) -> None:
        """Read back what :meth:`checkpoint_files` wrote (called by :func:`load_policy`)."""

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> Policy:
        """Rebuild a policy from a checkpoint folder alone (any registered type when called on
        :class:`Policy`; the class's own type otherwise)."""
        policy = load_policy(folder, device=device)
        if cls is not Policy and not isinstance(policy, cls):
            raise CheckpointError(
                f"{Path(folder) / 'config.json'}: type {policy.name!r} is not a {cls.__name__}"
            )
        return policy


def load_policy(folder: str | Path, device: str | torch.device = "cpu") -> Policy:
    """Read the type from ``folder/config.json``, build it through the ``POLICIES`` registry and load
    the weights. Errors name the file that is missing or corrupt."""
    import robolearn.policies  # noqa: F401  (registers the built-in policies)
    from robolearn.registry import POLICIES

    folder = Path(folder)
    type_name, config_dict, stats = read_meta(folder)
    config_path = folder / "config.json"
    if type_name not in POLICIES:
        raise CheckpointError(
            f"{config_path}: unknown policy type {type_name!r} (registered: {POLICIES.names()})"
        )
    entry = POLICIES.get(type_name)
    try:
        config = from_dict(entry.config_cls, config_dict, source=str(config_path), prefix="config.")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        policy = entry.load_builder()(config, stats=stats, load_pretrained=False)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(
            f"{folder}: cannot rebuild the policy from config.json and norm_stats.json: {exc}"
        ) from None
    load_weights(policy, folder)
    policy.load_checkpoint_files(folder)
    return policy.to(device).eval()
