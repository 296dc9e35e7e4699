"""The VLA prefix: instruction tokens, image tokens and state tokens, and the language model over them.

Order: ``[instruction (left padded) | image tokens of every step and camera | state token per step
(then, with ``object_tokens``, one token per object and step)]``.
With a causal LM the later tokens see the instruction, so image and state tokens become
instruction-aware; a learned position embedding marks each image/state slot (camera, patch, step).
With a sentence encoder (MiniLM) the instruction is one mean-pooled token embedded once per
distinct instruction, and the prefix goes to the action head as it is.

Shapes: B batch, To obs steps, C cameras, P tokens per image, L instruction tokens, E prefix width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robolearn.policies.vla import backbones
from robolearn.policies.vla import tokenizer as toks
from robolearn.policies.vla.config import VLAConfig
from robolearn.policies.vla.spatial import FeatureAdapter, KeypointTokens, PixelKeypoints


@dataclass
class Prefix:
    """One encoded observation + instruction."""

    embeds: torch.Tensor
    """(B, L + F, E) input embeddings (instruction, then the F image/state tokens)."""
    mask: torch.Tensor
    """(B, L + F) bool: False at instruction padding."""
    hidden: torch.Tensor | None
    """(B, L + F, E) after the LM (causal_lm) or ``embeds`` (sentence_encoder); None if not run."""


class PrefixEncoder(nn.Module):
    """Normalized observations + instructions -> :class:`Prefix`."""

    def __init__(
        self,
        cfg: VLAConfig,
        image_shapes: Mapping[str, tuple[int, int, int]],
        state_dim: int,
        objects: tuple[int, int, int] | None = None,
    ) -> None:
        """``objects``: (start, count, size) of the object-centric state tokens in the state vector."""
        super().__init__()
        self.cfg = cfg
        lang = cfg.language
        self.causal = lang.kind == "causal_lm"
        vocab = len(toks.SPECIALS) + lang.vocab_words + cfg.n_bins
        self.lm = backbones.language_model(lang, vocab)  # random init: see load_pretrained_backbones
        self.word_level = not lang.pretrained
        self.tokenizer = toks.word_tokenizer((), lang.vocab_words)
        self.pad_id = toks.pad_id_of(self.tokenizer)
        lm_width = int(self.lm.config.hidden_size)
        self.width = lm_width if self.causal else (cfg.width or cfg.expert.width)
        self.instr_proj = nn.Identity() if self.causal else nn.Linear(lm_width, self.width)
        if lang.lora_rank > 0:
            backbones.add_lora(self.lm, lang)
        elif lang.freeze:
            backbones.freeze(self.lm, backbones.lm_layers(self.lm), lang.train_last_layers)
        self._instr_cache: dict[str, torch.Tensor] = {}
        # A frozen sentence encoder's embeddings of one task's instructions are ~0.95 cosine-similar
        # ("lift the red cube" / "... green ..."): centred on the training instructions' mean and
        # scaled to unit RMS (fit_instructions), what tells them apart is what reaches the policy.
        self.register_buffer("instr_mean", torch.zeros(lm_width))
        self.register_buffer("instr_scale", torch.ones(()))

        self.image_keys = sorted(image_shapes) if cfg.vision.kind != "none" else []
        self.tower: nn.Module | None = None
        self.pixels: PixelKeypoints | None = None
        self.tokens_per_image = 0
        if self.image_keys:
            shapes = {tuple(image_shapes[k]) for k in self.image_keys}
            if len(shapes) > 1:
                raise ValueError(
                    f"vision: cameras have different shapes {sorted(shapes)}; the tower is shared"
                )
            self.image_shape = shapes.pop()
            self.tower = backbones.vision_tower(cfg.vision, self.image_shape)
            if cfg.vision.freeze:
                backbones.freeze(self.tower, self.tower.layers(), cfg.vision.train_last_layers)
            self.tokens_per_image = self._probe(tuple(image_shapes[self.image_keys[0]]))
            token_dim = self.tower.out_dim
            # frozen conv features are O(10) (EfficientNet's map reaches ~50): normalized per token, so
            # the keypoint scores and the projector start from unit-scale inputs
            self.token_norm = nn.LayerNorm(token_dim)
            cond = self.width if cfg.vision.keypoints_follow_instruction else 0
            self.adapter: FeatureAdapter | None = None
            if cfg.vision.adapter > 0:
                v = cfg.vision
                self.adapter = FeatureAdapter(
                    token_dim, self.tokens_per_image, v.adapter, v.adapter_layers, cond, v.feature_shift
                )
                token_dim = self.adapter.out_dim
            self.keypoints: KeypointTokens | None = None
            if cfg.vision.keypoints > 0:
                self.keypoints = KeypointTokens(token_dim, self.tokens_per_image, cfg.vision.keypoints, cond)
                self.tokens_per_image, token_dim = cfg.vision.keypoints, self.keypoints.out_dim
            self.img_proj = self._projector(token_dim)
            if cfg.vision.pixel_keypoints > 0:
                v = cfg.vision
                self.pixels = PixelKeypoints(v.pixel_grid, v.pixel_keypoints, v.pixel_hidden, cond)
                self.pix_proj = self._projector(self.pixels.out_dim)
        self.objects = objects
        self.rest_dim = state_dim - (objects[1] * objects[2] if objects else 0)
        self.has_state = state_dim > 0
        if self.rest_dim > 0:
            self.state_proj = nn.Linear(self.rest_dim, self.width)
        if objects:  # one MLP shared by every object slot
            self.object_proj = self._projector(objects[2])
        to = cfg.n_obs_steps
        per_image = self.tokens_per_image + (cfg.vision.pixel_keypoints if self.image_keys else 0)
        state_tokens = int(self.rest_dim > 0) + (objects[1] if objects else 0)
        self.num_fixed = to * (len(self.image_keys) * per_image + state_tokens)
        self.pos = nn.Parameter(torch.randn(1, max(self.num_fixed, 1), self.width) * 0.02)
        self.cache_frozen = bool(
            self.tower is not None and cfg.vision.freeze and cfg.vision.train_last_layers == 0
        )
        self._feature_cache: dict[tuple[int, int], torch.Tensor] = {}
        self._pixel_cache: dict[tuple[int, int], torch.Tensor] = {}
        self._cache_bytes = 0
        self.train()  # frozen backbones start in eval mode, as train() keeps them

    def _projector(self, in_dim: int) -> nn.Sequential:
        """Image tokens (..., in_dim) -> prefix width: Linear, GELU, Linear."""
        return nn.Sequential(nn.Linear(in_dim, self.width), nn.GELU(), nn.Linear(self.width, self.width))

    def load_pretrained_backbones(self) -> None:
        """Copy the ``pretrained`` weights (and tokenizer) of each backbone into the built modules; the
        config must have been resolved by :func:`backbones.resolve_configs` before building."""
        if self.tower is not None and self.cfg.vision.pretrained:
            backbones.load_pretrained_tower(self.tower, self.cfg.vision, self.image_shape)
        if self.cfg.language.pretrained:
            self.tokenizer = backbones.load_pretrained_language(self.lm, self.cfg.language)
            self.pad_id = toks.pad_id_of(self.tokenizer)

    # ------------------------------------------------------------------------------ pieces
    @torch.no_grad()
    def _probe(self, shape: tuple[int, int, int]) -> int:
        was = self.tower.training
        self.tower.eval()
        n = self._pool(self.tower(torch.zeros(1, *shape))).shape[1]
        self.tower.train(was)
        return n

    def _pool(self, tokens: torch.Tensor) -> torch.Tensor:
        grid = self.cfg.vision.token_grid
        n, p, e = tokens.shape
        side = math.isqrt(p)
        if grid <= 0 or side * side != p or grid >= side:
            return tokens
        fmap = tokens.transpose(1, 2).reshape(n, e, side, side)
        return F.adaptive_avg_pool2d(fmap, grid).flatten(2).transpose(1, 2)

    def train(self, mode: bool = True) -> PrefixEncoder:
        super().train(mode)
        if self.cache_frozen:  # frozen BatchNorm statistics stay as loaded
            self.tower.eval()
        if not any(p.requires_grad for p in self.lm.parameters()):
            self.lm.eval()  # a frozen encoder embeds without dropout (its embeddings are cached)
        return self

    def fit_instructions(self, texts: Sequence[str]) -> None:
        """Build the word-level tokenizer from the training instructions (random-init language model
        only, and only once: a fitted or pretrained tokenizer is kept)."""
        if self.word_level and toks.is_unfitted_word_tokenizer(self.tokenizer):
            self.tokenizer = toks.word_tokenizer(texts, self.cfg.language.vocab_words)
        distinct = sorted(set(texts))
        if self.causal or self._lm_trains() or len(distinct) < 2:
            return
        with torch.no_grad():
            emb = self._sentence_embed(distinct, self.instr_mean.device)
            self.instr_mean.copy_(emb.mean(0))
            self.instr_scale.copy_((emb - emb.mean(0)).pow(2).sum(-1).mean().sqrt().clamp_min(1e-6))

    def _lm_trains(self) -> bool:
        return any(p.requires_grad for p in self.lm.parameters())

    def image_features(
        self, images: Sequence[torch.Tensor], cache_keys: Sequence[tuple[int, int]] | None = None
    ) -> torch.Tensor:
        """Per camera (B, To, 3, H, W) normalized -> tower tokens (B, To, C, P, Ev). Frozen towers with
        ``cache_keys`` (dataset, frame index) reuse features cached on an earlier visit."""

        def tower(x: torch.Tensor) -> torch.Tensor:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cache_frozen):
                return self._pool(self.tower(x))

        return self._cached(images, cache_keys, self._feature_cache, tower)

    def pixel_cells(
        self, images: Sequence[torch.Tensor], cache_keys: Sequence[tuple[int, int]] | None = None
    ) -> torch.Tensor:
        """Per camera (B, To, 3, H, W) normalized -> the pixel keypoints' pooled cells (B, To, C, g·g, 3),
        cached beside the tower's features."""
        return self._cached(images, cache_keys, self._pixel_cache, self.pixels.pool)

    def cache_images(self, images: Sequence[torch.Tensor], cache_keys: Sequence[tuple[int, int]]) -> None:
        """Fill the caches (tower features, pixel cells) for the frames ``cache_keys``."""
        self.image_features(images, cache_keys)
        if self.pixels is not None:
            self.pixel_cells(images, cache_keys)

    def _cached(
        self,
        images: Sequence[torch.Tensor],
        cache_keys: Sequence[tuple[int, int]] | None,
        cache: dict[tuple[int, int], torch.Tensor],
        compute: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """``compute`` over each camera image (b'·To·C, 3, H, W) -> (b'·To·C, P, E), stacked to
        (B, To, C, P, E); with the frozen cache on, frames found in ``cache`` skip it."""
        b, to = images[0].shape[:2]
        use_cache = cache_keys is not None and self.cache_frozen and self.cfg.feature_cache_mb > 0
        todo = list(range(b))
        out: list[torch.Tensor | None] = [None] * b
        if use_cache:
            for i, key in enumerate(cache_keys):
                hit = cache.get(key)
                if hit is not None:
                    out[i] = hit
            todo = [i for i in range(b) if out[i] is None]
        if todo:
            x = torch.stack([img[todo] for img in images], dim=2).flatten(0, 2)  # (b'·To·C, 3, H, W)
            feats = compute(x)
            feats = feats.view(len(todo), to, len(images), *feats.shape[1:])
            if not use_cache:
                return feats
            for j, i in enumerate(todo):  # the cached (float16) copy where kept: every visit sees the same
                out[i] = self._remember(cache, cache_keys[i], feats[j])
        dtype = next(iter(self.img_proj.parameters())).dtype
        return torch.stack([o.to(dtype) for o in out])

    def pixels_needed(self, keys: Sequence[tuple[int, int]]) -> list[bool]:
        """Per training frame key: False where no camera pixels are used (no tower, or its features
        and pixel cells are cached; the caches only grow, so a False stays False)."""
        if self.tower is None:
            return [False] * len(keys)
        if not (self.cache_frozen and self.cfg.feature_cache_mb > 0):
            return [True] * len(keys)
        pixels = self.pixels is not None
        return [key not in self._feature_cache or (pixels and key not in self._pixel_cache) for key in keys]

    def _remember(self, cache: dict, key: tuple[int, int], feats: torch.Tensor) -> torch.Tensor:
        """Cache ``feats`` under ``key`` while the budget lasts; returns what later visits will see."""
        size = feats.numel() * 2
        if self._cache_bytes + size > self.cfg.feature_cache_mb * 2**20:
            return feats
        cache[key] = feats.detach().to(torch.float16)
        self._cache_bytes += size
        return cache[key]

    def instruction_tokens(
        self, tasks: Sequence[str], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Instructions -> (embeddings (B, L, E), mask (B, L))."""
        if self.causal:
            ids, mask = toks.encode(self.tokenizer, tasks, self.cfg.language.max_tokens, self.pad_id)
            return self.lm.get_input_embeddings()(ids.to(device)), mask.to(device)
        frozen = not any(p.requires_grad for p in self.lm.parameters())
        missing = sorted({t for t in tasks if t not in self._instr_cache}) if frozen else sorted(set(tasks))
        fresh = dict(zip(missing, self._sentence_embed(missing, device), strict=True)) if missing else {}
        if frozen:
            self._instr_cache.update({k: v.detach() for k, v in fresh.items()})
            fresh = self._instr_cache
        emb = torch.stack([fresh[t].to(device) for t in tasks])[:, None]
        if frozen:
            emb = (emb - self.instr_mean) / self.instr_scale
        return self.instr_proj(emb), torch.ones(len(tasks), 1, dtype=torch.bool, device=device)

    def _sentence_embed(self, texts: list[str], device: torch.device) -> torch.Tensor:
        """Mean of the encoder's token states over real tokens (sentence-transformers pooling): (n, Eh)."""
        ids, mask = toks.encode(self.tokenizer, texts, self.cfg.language.max_tokens, self.pad_id)
        ids, mask = ids.to(device), mask.to(device)
        with torch.set_grad_enabled(
            torch.is_grad_enabled() and any(p.requires_grad for p in self.lm.parameters())
        ):
            hidden = self.lm(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        m = mask[..., None].to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)

    def _state_tokens(self, state: torch.Tensor) -> list[torch.Tensor]:
        """(B, To, Ds) -> the state token per step (B, To, E), then with ``objects`` one token per
        object and step (B, To·count, E)."""
        if self.objects is None:
            return [self.state_proj(state)]
        start, count, size = self.objects
        end = start + count * size
        out = []
        if self.rest_dim > 0:
            out.append(self.state_proj(torch.cat([state[..., :start], state[..., end:]], -1)))
        objs = state[..., start:end].unflatten(-1, (count, size))  # (B, To, count, size)
        out.append(self.object_proj(objs).flatten(1, 2))
        return out

    # ------------------------------------------------------------------------------ the prefix
    def forward(
        self,
        obs: Mapping[str, torch.Tensor],
        state: torch.Tensor | None,
        tasks: Sequence[str],
        cache_keys: Sequence[tuple[int, int]] | None = None,
        run_lm: bool = True,
    ) -> Prefix:
        """``obs`` normalized images (B, To, 3, H, W) by key, ``state`` (B, To, Ds') encoded state or
        None, one instruction per sample."""
        parts: list[torch.Tensor] = []
        b = len(tasks)
        device = self.pos.device
        instr, instr_mask = self.instruction_tokens(tasks, device)
        if self.image_keys:
            images = [obs[k] for k in self.image_keys]
            feats = self.token_norm(self.image_features(images, cache_keys))
            cond = None
            if self.adapter is not None or self.keypoints is not None or self.pixels is not None:
                m = instr_mask[..., None].to(instr.dtype)  # the instruction's mean token conditions them
                cond = ((instr * m).sum(1) / m.sum(1).clamp_min(1.0)).to(feats.dtype)
                cond = cond.repeat_interleave(feats.shape[1] * feats.shape[2], 0)
            if self.adapter is not None or self.keypoints is not None:  # trainable: after the cache
                lead, flat = feats.shape[:3], feats.flatten(0, 2)
                if self.adapter is not None:
                    flat = self.adapter(flat, cond)
                if self.keypoints is not None:
                    flat = self.keypoints(flat, cond)
                feats = flat.view(*lead, *flat.shape[1:])
            parts.append(self.img_proj(feats).flatten(1, 3))  # (B, To·C·P, E)
            if self.pixels is not None:
                cells = self.pixel_cells(images, cache_keys)
                points = self.pixels(cells.flatten(0, 2).to(feats.dtype), cond)
                parts.append(self.pix_proj(points.view(*cells.shape[:3], *points.shape[1:])).flatten(1, 3))
        if self.has_state:
            parts.extend(self._state_tokens(state))
        fixed = torch.cat(parts, dim=1) + self.pos[:, : self.num_fixed]
        embeds = torch.cat([instr.to(fixed.dtype), fixed], dim=1)
        mask = torch.cat(
            [instr_mask, torch.ones(b, fixed.shape[1], dtype=torch.bool, device=fixed.device)], 1
        )
        if not self.causal:
            return Prefix(embeds, mask, embeds)
        hidden = None
        if run_lm:
            hidden = self.lm.get_decoder()(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state
        return Prefix(embeds, mask, hidden)
