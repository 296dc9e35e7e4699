"""Vision-language-action policy: a pi0 / SmolVLA-style prefix and three action heads.

The prefix (:mod:`robolearn.policies.vla.prefix`) holds the instruction, image and state tokens,
run through the language model. Heads, on that same prefix:

- ``flow``: the action expert (:mod:`robolearn.policies.vla.expert`) is a velocity network for
  rectified flow (t = 0 noise, t = 1 data, x_t = t·a + (1−t)·x0, target a − x0); sampling runs K
  Euler steps with the prefix keys/values computed once per chunk.
- ``parallel``: the expert runs once from learned action queries and regresses the chunk with an L1
  loss (OpenVLA-OFT's parallel decoding).
- ``tokens``: each normalized action value becomes one of ``n_bins`` uniform bins, a token of the
  LM's vocabulary (the top ``n_bins`` ids, as OpenVLA); the LM predicts the H·Da tokens after the
  prefix autoregressively, trained with cross-entropy over the bin ids only.

Instructions come from ``obs["task"]`` / ``batch["task"]`` (a string or one per sample; missing:
the empty instruction). Shapes: B batch, To obs steps, H horizon, Da action dim, K samples.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robolearn.policies.base import Batch, Policy
from robolearn.policies.common.encoders import ObsEncoder
from robolearn.policies.common.features import FeatureMismatchError
from robolearn.policies.common.layers import TimeEmbedding, masked_mse
from robolearn.policies.vla import backbones
from robolearn.policies.vla import tokenizer as toks
from robolearn.policies.vla.config import VLAConfig
from robolearn.policies.vla.expert import ActionExpert, repeat_kv
from robolearn.policies.vla.prefix import Prefix, PrefixEncoder
from robolearn.types import ACTION, PIXELS_SKIPPED, TASK, is_image_key

TIME_SCALE = 1000.0


def task_list(obs: Batch, b: int) -> list[str]:
    """``obs["task"]`` as B strings (one string is shared; missing: empty instructions)."""
    task = obs.get(TASK)
    if task is None:
        return [""] * b
    if isinstance(task, str):
        return [task] * b
    tasks = [str(t) for t in task]
    if len(tasks) != b:
        raise FeatureMismatchError(f"observation 'task': expected {b} instructions, found {len(tasks)}")
    return tasks


class VLAPolicy(Policy):
    """See the module docstring and :class:`VLAConfig`."""

    name = "vla"
    config: VLAConfig

    def __init__(self, config: VLAConfig, features: Any = None, stats: Any = None) -> None:
        """Random-init backbones of the architecture in ``config`` (``hf_config``); ``pretrained`` is
        never read here (a fresh pretrained build goes through :meth:`from_backbones`, a checkpoint
        loads its own weights over these)."""
        super().__init__(config, features, stats, load_pretrained=False)  # its encoder has no images
        cfg = self.config
        images = {k: tuple(v) for k, v in cfg.input_features.items() if is_image_key(k)}
        state_dim = self.obs_encoder.out_dim if self.obs_encoder.vector_keys else 0
        self.prefix = PrefixEncoder(cfg, images, state_dim, self._object_slice())
        width, ex = self.prefix.width, cfg.expert
        if cfg.head == "tokens":
            vocab = int(self.prefix.lm.get_input_embeddings().weight.shape[0])
            if vocab < cfg.n_bins + len(toks.SPECIALS):
                raise ValueError(f"n_bins: {cfg.n_bins} bins do not fit the LM's vocabulary of {vocab}")
            self.bin_offset = vocab - cfg.n_bins
        else:
            self.expert = ActionExpert(
                ex.width, ex.layers, ex.heads, ex.mlp_ratio, width, cfg.horizon, cfg.action_dim
            )
            if cfg.head == "flow":
                self.action_in = nn.Linear(cfg.action_dim, ex.width)
                self.time_embed = TimeEmbedding(ex.width)
            else:
                self.queries = nn.Parameter(torch.randn(1, cfg.horizon, ex.width) * 0.02)
        self._frames: deque[dict[str, torch.Tensor]] = deque()
        self._cache_arg = "cache"
        if cfg.head == "tokens":
            params = inspect.signature(self.prefix.lm.get_decoder().forward).parameters
            self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def _object_slice(self) -> tuple[int, int, int] | None:
        """``object_tokens`` as (first element in the encoded state vector, count, size), or None."""
        ot, keys = self.config.object_tokens, self.obs_encoder.vector_keys
        if ot.count == 0:
            return None
        if ot.key not in keys:
            raise ValueError(
                f"object_tokens.key: {ot.key!r} is not a low-dim input of this policy (those: {keys})"
            )
        if not isinstance(self.obs_encoder.state_mlp, nn.Identity):
            raise ValueError(
                "object_tokens: needs obs_encoder.state_mlp_dims empty (objects are cut from the raw state)"
            )
        dim = self.config.input_features[ot.key][0]
        if ot.offset + ot.count * ot.size > dim:
            raise ValueError(
                f"object_tokens: {ot.count} objects of {ot.size} from element {ot.offset} do not fit {ot.key!r} ({dim} values)"
            )
        start = sum(self.config.input_features[k][0] for k in keys[: keys.index(ot.key)])
        return start + ot.offset, ot.count, ot.size

    @classmethod
    def from_backbones(cls, config: VLAConfig, features: Any = None, stats: Any = None) -> VLAPolicy:
        """A fresh policy with the ``pretrained`` backbones: their architectures are read into
        ``hf_config`` (so the checkpoint rebuilds offline), the policy is built from that config, then
        the pretrained weights and tokenizer are loaded into it."""
        config = copy.deepcopy(config)
        backbones.resolve_configs(config.vision, config.language)
        policy = cls(config, features, stats)
        policy.prefix.load_pretrained_backbones()
        return policy

    def _build_obs_encoder(self, load_pretrained: bool) -> ObsEncoder:
        vectors = {k: v for k, v in self.config.input_features.items() if not is_image_key(k)}
        return ObsEncoder(self.config.obs_encoder, vectors, load_pretrained)

    # ------------------------------------------------------------------------------ instructions
    def fit_instructions(self, texts: Sequence[str]) -> None:
        """Build the word-level tokenizer of a random-init LM from the training instructions (once)."""
        self.prefix.fit_instructions(texts)

    def checkpoint_files(self) -> dict[str, bytes]:
        return {toks.TOKENIZER_FILE: self.prefix.tokenizer.to_str().encode()}

    def load_checkpoint_files(self, folder: Path) -> None:
        path = Path(folder) / toks.TOKENIZER_FILE
        if not path.is_file():
            from robolearn.policies.checkpoint import CheckpointError

            raise CheckpointError(f"{path}: missing checkpoint file {toks.TOKENIZER_FILE}")
        self.prefix.tokenizer = toks.load_tokenizer(path)
        self.prefix.pad_id = toks.pad_id_of(self.prefix.tokenizer)

    # ------------------------------------------------------------------------------ prefix
    def _autocast(self) -> contextlib.AbstractContextManager:
        amp, dev = self.config.amp, self.device
        on = amp == "bf16" or (amp == "auto" and dev.type == "cuda" and torch.cuda.is_bf16_supported())
        return torch.autocast(dev.type, dtype=torch.bfloat16) if on else contextlib.nullcontext()

    def _prefix(self, obs: Batch, run_lm: bool = True, cache_keys: Any = None) -> Prefix:
        norm = self._normalized_obs(obs)
        first = norm[next(iter(norm))]
        state = None
        if self.prefix.has_state:
            state = self.obs_encoder({k: norm[k] for k in self.obs_encoder.vector_keys})
        return self.prefix(norm, state, task_list(obs, first.shape[0]), cache_keys, run_lm)

    @staticmethod
    def _cache_keys(batch: Batch) -> list[tuple[int, int]] | None:
        """(dataset, frame index) per training sample, the key of the frozen-feature cache."""
        index = batch.get("index")
        if not torch.is_tensor(index):
            return None
        ds = batch.get("dataset_index")
        ds = ds.tolist() if torch.is_tensor(ds) else [0] * len(index)
        return list(zip((int(d) for d in ds), (int(i) for i in index.tolist()), strict=True))

    def pixels_needed(self, keys: Sequence[tuple[int, int]]) -> list[bool]:
        """Per training frame key (dataset, index): False where training will not look at its camera
        pixels (the frozen tower's features are cached), so the loader may skip decoding them."""
        return self.prefix.pixels_needed(keys)

    @torch.no_grad()
    def cache_frame_features(self, batch: Batch) -> None:
        """Fill the frozen tower's feature cache with the training frames of ``batch`` (keyed by its
        ``index`` and ``dataset_index``), as their first training visit would."""
        keys = self._cache_keys(batch)
        if keys is None or not self.prefix.cache_frozen or not self.prefix.image_keys:
            return
        norm = self._normalized_obs(batch)
        with self._autocast():
            self.prefix.cache_images([norm[k] for k in self.prefix.image_keys], keys)

    # ------------------------------------------------------------------------------ heads
    def _velocity(self, x: torch.Tensor, t: torch.Tensor, kv: list) -> torch.Tensor:
        """Flow head output at (x_t (N, H, Da), t (N,)) as a velocity."""
        tokens = self.action_in(x) + self.time_embed(t * TIME_SCALE)[:, None]
        out = self.expert(tokens, kv).float()
        if self.config.prediction == "sample":
            return (out - x) / (1 - t).clamp_min(self.config.sample_t_floor)[:, None, None]
        return out

    def _bins(self, action: torch.Tensor) -> torch.Tensor:
        n = self.config.n_bins
        return ((action.clamp(-1, 1) + 1) / 2 * n).long().clamp(0, n - 1)

    def _bin_values(self, bins: torch.Tensor) -> torch.Tensor:
        return -1 + (bins.float() + 0.5) * (2.0 / self.config.n_bins)

    def _bin_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM hidden states (..., E) -> logits over the action-bin ids only (..., n_bins)."""
        head = self.prefix.lm.get_output_embeddings()
        w = head.weight[self.bin_offset :]
        bias = None if getattr(head, "bias", None) is None else head.bias[self.bin_offset :]
        return F.linear(hidden, w.to(hidden.dtype), None if bias is None else bias.to(hidden.dtype)).float()

    # ------------------------------------------------------------------------------ training
    def compute_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Flow-matching MSE, L1 (parallel) or bin cross-entropy (tokens); padded steps excluded."""
        cfg = self.config
        action, is_pad = self._normalized_action(batch)
        keys = self._cache_keys(batch) if self.training else None
        skipped = batch.get(PIXELS_SKIPPED)
        if torch.is_tensor(skipped) and skipped.any():
            needed = self.pixels_needed(keys or [(0, -1)] * len(skipped))
            if any(n and s for n, s in zip(needed, skipped.tolist(), strict=True)):
                raise RuntimeError("batch: camera frames were skipped whose features are not cached")
        with self._autocast():
            prefix = self._prefix(batch, run_lm=cfg.head != "tokens", cache_keys=keys)
            if cfg.head == "tokens":
                loss = self._token_loss(prefix, action, is_pad)
            else:
                kv = self.expert.prefix_kv(prefix.hidden, prefix.mask)
                if cfg.head == "flow":
                    x0 = torch.randn_like(action)
                    t = torch.rand(action.shape[0], device=action.device)
                    x_t = t[:, None, None] * action + (1 - t[:, None, None]) * x0
                    tokens = self.action_in(x_t) + self.time_embed(t * TIME_SCALE)[:, None]
                    pred = self.expert(tokens, kv).float()
                    target = action if cfg.prediction == "sample" else action - x0
                    loss = masked_mse(pred, target, is_pad)
                else:
                    pred = self.expert(self.queries.expand(action.shape[0], -1, -1), kv).float()
                    err = (pred - action).abs()
                    keep = (
                        torch.ones_like(err)
                        if is_pad is None
                        else (~is_pad).to(err.dtype)[..., None].expand_as(err)
                    )
                    loss = (err * keep).sum() / keep.sum().clamp_min(1.0)
        return loss, {"loss": loss.item(), f"{cfg.head}_loss": loss.item()}

    def _token_loss(self, prefix: Prefix, action: torch.Tensor, is_pad: torch.Tensor | None) -> torch.Tensor:
        b, h, da = action.shape
        target = self._bins(action).flatten(1)  # (B, H·Da)
        emb = self.prefix.lm.get_input_embeddings()
        acts = emb(target[:, :-1] + self.bin_offset).to(prefix.embeds.dtype)
        seq = torch.cat([prefix.embeds, acts], dim=1)
        mask = torch.cat([prefix.mask, torch.ones(b, acts.shape[1], dtype=torch.bool, device=seq.device)], 1)
        hidden = self.prefix.lm.get_decoder()(inputs_embeds=seq, attention_mask=mask.long()).last_hidden_state
        p = prefix.embeds.shape[1]
        logits = self._bin_logits(hidden[:, p - 1 :])  # position p-1+j predicts action token j
        ce = F.cross_entropy(logits.reshape(-1, self.config.n_bins), target.reshape(-1), reduction="none")
        keep = (
            torch.ones_like(ce)
            if is_pad is None
            else (~is_pad)[..., None].expand(b, h, da).reshape(-1).float()
        )
        return (ce * keep).sum() / keep.sum().clamp_min(1.0)

    # ------------------------------------------------------------------------------ inference
    @torch.inference_mode()
    def predict_action_chunk(
        self, obs: Batch, noise: torch.Tensor | None = None, num_samples: int | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Action chunks in raw units: (B, H, Da), or (B, K, H, Da) with ``num_samples=K`` (one prefix
        per observation). ``obs``: features (B, To, ...) and ``task`` (str or B strings). ``noise``
        (B, H, Da) or (B, K, H, Da), flow head only. ``num_steps=`` overrides the Euler steps."""
        with self._autocast():
            prefix = self._prefix(obs, run_lm=self.config.head != "tokens")
        return self._chunk_from_features(prefix, noise, num_samples, **kwargs)

    def _chunk_from_features(
        self, prefix: Prefix, noise: torch.Tensor | None, num_samples: int | None, **kwargs: Any
    ) -> torch.Tensor:
        cfg = self.config
        b, k = prefix.embeds.shape[0], num_samples or 1
        chunk = (cfg.horizon, cfg.action_dim)
        if noise is not None:
            expected = (b, *chunk) if num_samples is None else (b, num_samples, *chunk)
            if tuple(noise.shape) != expected:
                raise ValueError(f"noise: expected shape {expected}, found {tuple(noise.shape)}")
            noise = noise.reshape(b * k, *chunk)
        with self._autocast():
            if cfg.head == "tokens":
                x = self._decode_tokens(prefix, k, kwargs.get("temperature", cfg.token_temperature))
            else:
                kv = self.expert.prefix_kv(prefix.hidden, prefix.mask)
                kv = repeat_kv(kv, k) if k > 1 else kv
                if cfg.head == "parallel":
                    x = self.expert(self.queries.expand(b * k, -1, -1), kv).float()
                else:
                    x0 = torch.randn(b * k, *chunk, device=self.device) if noise is None else noise
                    x = self._integrate(x0, kv, kwargs.get("num_steps") or cfg.num_inference_steps)
        x = x.float().clamp(-cfg.clip_range, cfg.clip_range)
        actions = self.normalizer.unnormalize(ACTION, x)
        return actions if num_samples is None else actions.view(b, num_samples, *chunk)

    def _integrate(self, x: torch.Tensor, kv: list, num_steps: int) -> torch.Tensor:
        dt = 1.0 / num_steps
        for i in range(num_steps):
            t = torch.full((x.shape[0],), i * dt, device=x.device)
            x = x + dt * self._velocity(x, t, kv)
        return x

    def _decode_tokens(self, prefix: Prefix, k: int, temperature: float) -> torch.Tensor:
        """H·Da bins, one LM step each with its KV cache; (B·K, H, Da) normalized bin centres."""
        cfg = self.config
        embeds, mask = prefix.embeds, prefix.mask
        repeat = k if temperature > 0 else 1
        if repeat > 1:
            embeds, mask = embeds.repeat_interleave(repeat, 0), mask.repeat_interleave(repeat, 0)
        decoder, emb = self.prefix.lm.get_decoder(), self.prefix.lm.get_input_embeddings()
        out = decoder(inputs_embeds=embeds, attention_mask=mask.long(), use_cache=True)
        cache, hidden = getattr(out, self._cache_arg), out.last_hidden_state[:, -1]
        mask = mask.long()
        bins = []
        for step in range(cfg.horizon * cfg.action_dim):
            logits = self._bin_logits(hidden)
            if temperature > 0:
                nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1)[:, 0]
            else:
                nxt = logits.argmax(-1)
            bins.append(nxt)
            if step == cfg.horizon * cfg.action_dim - 1:
                break
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            token = emb((nxt + self.bin_offset)[:, None]).to(embeds.dtype)
            out = decoder(
                inputs_embeds=token, attention_mask=mask, use_cache=True, **{self._cache_arg: cache}
            )
            cache, hidden = getattr(out, self._cache_arg), out.last_hidden_state[:, -1]
        x = self._bin_values(torch.stack(bins, 1)).view(-1, cfg.horizon, cfg.action_dim)
        return x.repeat_interleave(k // repeat, 0) if k // repeat > 1 else x

    # ------------------------------------------------------------------------------ control loop
    def reset(self) -> None:
        super().reset()
        self._frames.clear()

    @torch.inference_mode()
    def select_action(self, obs: Batch) -> torch.Tensor:
        """The action (B, Da) to execute now; ``obs`` holds the current frame (B, ...) or a window
        (B, To, ...), and ``task``. The last To frames are kept (the first repeated after
        :meth:`reset`); a chunk is predicted from them when the queue is empty."""
        if not self._is_single_frame(obs):
            if not self._action_queue:
                self._enqueue(self.predict_action_chunk(obs))
            return self._action_queue.popleft()
        frame = {k: obs[k] for k, _, _ in self._feature_items}
        to = self.config.n_obs_steps
        if not self._frames:
            self._frames.extend([frame] * to)
        else:
            self._frames.append(frame)
            while len(self._frames) > to:
                self._frames.popleft()
        if not self._action_queue:
            window: dict[str, Any] = {k: torch.stack([f[k] for f in self._frames], 1) for k in frame}
            if TASK in obs:
                window[TASK] = obs[TASK]
            with self._autocast():
                prefix = self._prefix(window, run_lm=self.config.head != "tokens")
            self._enqueue(self._chunk_from_features(prefix, None, None))
        return self._action_queue.popleft()

    def _sample(self, cond: torch.Tensor, noise: torch.Tensor | None, **kwargs: Any) -> torch.Tensor:
        raise TypeError(
            "VLAPolicy samples from a prefix: call predict_action_chunk(obs) (obs['task'] = instruction)"
        )


def build(
    config: VLAConfig, features: Any = None, stats: Any = None, *, load_pretrained: bool = True
) -> VLAPolicy:
    """Registry builder for ``vla``: :meth:`VLAPolicy.from_backbones` (a fresh build) or, with
    ``load_pretrained=False`` (a checkpoint reload), the plain random-init constructor."""
    if load_pretrained:
        return VLAPolicy.from_backbones(config, features, stats)
    return VLAPolicy(config, features, stats)
