"""The VLA prefix: instruction tokens, image tokens and state tokens, and the language model over them.

Order: ``[instruction (left padded) | image tokens of every step and camera | state token per step]``.
With a causal LM the later tokens see the instruction, so image and state tokens become
instruction-aware; a learned position embedding marks each image/state slot (camera, patch, step).
With a sentence encoder (MiniLM) the instruction is one mean-pooled token embedded once per
distinct instruction, and the prefix goes to the action head as it is.

Shapes: B batch, To obs steps, C cameras, P tokens per image, L instruction tokens, E prefix width.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robolearn.policies.vla import backbones
from robolearn.policies.vla import tokenizer as toks
from robolearn.policies.vla.config import VLAConfig


@dataclass
class Prefix:
    """One encoded observation + instruction."""

    embeds: torch.Tensor
    """(B, L + F, E) input embeddings (instruction, then the F image/state tokens)."""
    mask: torch.Tensor
    """(B, L + F) bool: False at instruction padding."""
    hidden: torch.Tensor | None
    """(B, L + F, E) after the LM (causal_lm) or ``embeds`` (sentence_encoder); None if not run."""


def grid_side(num_tokens: int, field: str) -> int:
    """The side of the square grid that ``num_tokens`` tokens per image form; else an error naming ``field``."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"{field}: the tower's {num_tokens} tokens per image are not a square grid")
    return side


class KeypointTokens(nn.Module):
    """Spatial-softmax keypoints as tokens: grid tokens (N, P = s·s, C) -> (N, K, C + 2).

    A 1x1 projection scores every position for each of K keypoints; the softmax over positions gives
    the keypoint's expected (x, y) in [-1, 1] and the attention-weighted features (what it found).
    With ``cond_dim`` the instruction shifts each keypoint's query (FiLM-style, as RT-1 conditions its
    EfficientNet on the instruction), so what a keypoint looks for, e.g. the red cube, follows the
    words; that shift starts at zero.
    """

    def __init__(self, channels: int, num_tokens: int, keypoints: int, cond_dim: int = 0) -> None:
        super().__init__()
        side = grid_side(num_tokens, "vision.keypoints")
        self.score = nn.Linear(channels, keypoints)
        # a learned sharpness per keypoint, starting at 10: on unit-scale frozen features the plain
        # scores (std ~0.5) leave the softmax nearly uniform over the grid, and at Adam's step size
        # the projection alone takes many thousands of steps to grow peaky
        self.log_sharpness = nn.Parameter(torch.full((keypoints,), math.log(10.0)))
        self.cond: nn.Linear | None = None
        if cond_dim > 0:
            self.cond = nn.Linear(cond_dim, keypoints * channels)
            nn.init.zeros_(self.cond.weight)
            nn.init.zeros_(self.cond.bias)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], -1), persistent=False)
        self.out_dim = channels + 2

    def forward(self, tokens: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens`` (N, P, C), ``cond`` (N, cond_dim) with ``cond_dim``."""
        scores = self.score(tokens)  # (N, P, K)
        if self.cond is not None and cond is not None:
            n, _, c = tokens.shape
            scores = scores + tokens @ self.cond(cond).view(n, -1, c).transpose(1, 2)
        weights = torch.softmax((scores * self.log_sharpness.exp()).transpose(1, 2), dim=-1)  # (N, K, P)
        return torch.cat([weights @ self.grid.to(tokens.dtype), weights @ tokens], dim=-1)


class FeatureAdapter(nn.Module):
    """Trainable FiLM-conditioned convolutions over a token grid: (N, P = s·s, C) -> (N, P, W).

    Each layer is a 3x3 conv, GroupNorm, a per-channel scale and shift from the instruction
    (``x·(1 + γ) + β``, zero at the start) and GELU. With ``shift`` > 0, training translates the grid
    by a random offset of up to ``shift`` cells first (bilinear, border values repeated).
    """

    def __init__(
        self, channels: int, num_tokens: int, width: int, layers: int, cond_dim: int, shift: float
    ) -> None:
        super().__init__()
        self.side = grid_side(num_tokens, "vision.adapter")
        self.shift = shift
        self.convs = nn.ModuleList(
            nn.Conv2d(channels if i == 0 else width, width, 3, padding=1) for i in range(layers)
        )
        self.norms = nn.ModuleList(nn.GroupNorm(math.gcd(8, width), width) for _ in range(layers))
        self.films = (
            nn.ModuleList(nn.Linear(cond_dim, 2 * width) for _ in range(layers)) if cond_dim else None
        )
        for film in self.films or ():
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
        self.out_dim = width

    def _shifted(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        offset = (torch.rand(n, 2, device=x.device, dtype=x.dtype) * 2 - 1) * (2 * self.shift / self.side)
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, :, 2] = offset
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def forward(self, tokens: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens`` (N, P, C), ``cond`` (N, cond_dim) with ``cond_dim``."""
        n, p, c = tokens.shape
        x = tokens.transpose(1, 2).reshape(n, c, self.side, self.side)
        if self.training and self.shift > 0:
            x = self._shifted(x)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = norm(conv(x))
            if self.films is not None and cond is not None:
                gamma, beta = self.films[i](cond).chunk(2, dim=-1)
                x = x * (1 + gamma[..., None, None]) + beta[..., None, None]
            x = F.gelu(x)
        return x.flatten(2).transpose(1, 2)


class PrefixEncoder(nn.Module):
    """Normalized observations + instructions -> :class:`Prefix`."""

    def __init__(
        self,
        cfg: VLAConfig,
        image_shapes: Mapping[str, tuple[int, int, int]],
        state_dim: int,
    ) -> None:
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
            self.img_proj = nn.Sequential(
                nn.Linear(token_dim, self.width), nn.GELU(), nn.Linear(self.width, self.width)
            )
        self.has_state = state_dim > 0
        if self.has_state:
            self.state_proj = nn.Linear(state_dim, self.width)
        to = cfg.n_obs_steps
        self.num_fixed = to * (len(self.image_keys) * self.tokens_per_image + int(self.has_state))
        self.pos = nn.Parameter(torch.randn(1, max(self.num_fixed, 1), self.width) * 0.02)
        self.cache_frozen = bool(
            self.tower is not None and cfg.vision.freeze and cfg.vision.train_last_layers == 0
        )
        self._feature_cache: dict[tuple[int, int], torch.Tensor] = {}
        self._cache_bytes = 0
        self.train()  # frozen backbones start in eval mode, as train() keeps them

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
        b, to = images[0].shape[:2]
        use_cache = cache_keys is not None and self.cache_frozen and self.cfg.feature_cache_mb > 0
        todo = list(range(b))
        out: list[torch.Tensor | None] = [None] * b
        if use_cache:
            for i, key in enumerate(cache_keys):
                hit = self._feature_cache.get(key)
                if hit is not None:
                    out[i] = hit
            todo = [i for i in range(b) if out[i] is None]
        if todo:
            x = torch.stack([img[todo] for img in images], dim=2).flatten(0, 2)  # (b'·To·C, 3, H, W)
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cache_frozen):
                feats = self._pool(self.tower(x))
            feats = feats.view(len(todo), to, len(images), *feats.shape[1:])
            if not use_cache:
                return feats
            for j, i in enumerate(todo):  # the cached (float16) copy where kept: every visit sees the same
                out[i] = self._remember(cache_keys[i], feats[j])
        dtype = next(iter(self.img_proj.parameters())).dtype
        return torch.stack([o.to(dtype) for o in out])

    def pixels_needed(self, keys: Sequence[tuple[int, int]]) -> list[bool]:
        """Per training frame key: False where no camera pixels are used (no tower, or its features
        are cached; the cache only grows, so a False stays False)."""
        if self.tower is None:
            return [False] * len(keys)
        if not (self.cache_frozen and self.cfg.feature_cache_mb > 0):
            return [True] * len(keys)
        return [key not in self._feature_cache for key in keys]

    def _remember(self, key: tuple[int, int], feats: torch.Tensor) -> torch.Tensor:
        """Cache ``feats`` under ``key`` while the budget lasts; returns what later visits will see."""
        size = feats.numel() * 2
        if self._cache_bytes + size > self.cfg.feature_cache_mb * 2**20:
            return feats
        self._feature_cache[key] = feats.detach().to(torch.float16)
        self._cache_bytes += size
        return self._feature_cache[key]

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
            feats = self.token_norm(self.image_features([obs[k] for k in self.image_keys], cache_keys))
            if self.adapter is not None or self.keypoints is not None:  # trainable: after the cache
                m = instr_mask[..., None].to(instr.dtype)  # the instruction's mean token conditions them
                cond = ((instr * m).sum(1) / m.sum(1).clamp_min(1.0)).to(feats.dtype)
                cond = cond.repeat_interleave(feats.shape[1] * feats.shape[2], 0)
                lead, flat = feats.shape[:3], feats.flatten(0, 2)
                if self.adapter is not None:
                    flat = self.adapter(flat, cond)
                if self.keypoints is not None:
                    flat = self.keypoints(flat, cond)
                feats = flat.view(*lead, *flat.shape[1:])
            parts.append(self.img_proj(feats).flatten(1, 3))  # (B, To·C·P, E)
        if self.has_state:
            parts.append(self.state_proj(state))
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
