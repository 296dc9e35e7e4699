"""Object-centric state tokens of the VLA (``object_tokens``): one token per object slot through one
shared MLP, the rest of the state one token; a trained policy reads the pose of the object the
instruction names; bad layouts are refused with the field named."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from robolearn.policies import load_policy  # noqa: E402
from robolearn.policies.vla.config import (  # noqa: E402
    ExpertConfig,
    LanguageConfig,
    ObjectTokensConfig,
    VisionTowerConfig,
    VLAConfig,
)
from robolearn.registry import POLICIES  # noqa: E402
from robolearn.types import ACTION, OBS_ENV_STATE, OBS_STATE, FeatureSpec  # noqa: E402

torch.set_num_threads(1)
DS, DA, H = 4, 2, 8
SLOTS, SIZE, GOAL = 2, 3, 2  # environment state: 2 objects (present, x, y), then a 2-d goal
TINY_LM = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=2, max_position_embeddings=128, vocab_size=300, tie_word_embeddings=False)  # fmt: skip
INSTRUCTIONS = ("lift the red cube", "lift the blue cube")


def build(count: int = SLOTS, seed: int = 0, **objects):
    cfg = VLAConfig(
        horizon=H, n_obs_steps=1, n_action_steps=4, num_inference_steps=4,
        vision=VisionTowerConfig(kind="none"),
        language=LanguageConfig(hf_config=dict(TINY_LM), vocab_words=32),
        expert=ExpertConfig(width=32, layers=2, heads=2),
        object_tokens=ObjectTokensConfig(count=count, size=objects.pop("size", SIZE), **objects),
    )  # fmt: skip
    feats = {
        OBS_STATE: FeatureSpec("float32", (DS,)),
        OBS_ENV_STATE: FeatureSpec("float32", (SLOTS * SIZE + GOAL,)),
        ACTION: FeatureSpec("float32", (DA,)),
    }
    torch.manual_seed(seed)
    policy = POLICIES.build("vla", cfg, features=feats, stats=None)
    policy.fit_instructions(INSTRUCTIONS)
    return policy


def scenes(n: int, seed: int = 0) -> dict:
    """Two objects at random places; the action chunk is the named one's (x, y) at every step."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, SLOTS, 2, generator=g) * 1.6 - 0.8
    env = torch.cat([torch.ones(n, SLOTS, 1), xy], -1).flatten(1)
    env = torch.cat([env, torch.zeros(n, GOAL)], -1)[:, None]
    target = torch.arange(n) % 2
    return {
        OBS_STATE: torch.rand(n, 1, DS, generator=g) * 0.2,
        OBS_ENV_STATE: env,
        ACTION: xy[torch.arange(n), target][:, None].expand(n, H, DA).clone(),
        f"{ACTION}_is_pad": torch.zeros(n, H, dtype=torch.bool),
        "task": [INSTRUCTIONS[int(i)] for i in target],
        "xy": xy,
    }


def test_one_token_per_object_each_from_its_own_slot_only():
    policy = build()
    assert policy.prefix.num_fixed == 1 + SLOTS  # the rest of the state (proprio + goal), then the objects
    b = scenes(4)
    obs = {k: b[k] for k in (OBS_STATE, OBS_ENV_STATE, "task")}
    with torch.no_grad():
        before = policy._prefix(obs, run_lm=False).embeds
        moved = dict(obs, **{OBS_ENV_STATE: obs[OBS_ENV_STATE].clone()})
        moved[OBS_ENV_STATE][..., SIZE + 1] += 0.5  # object 1's x
        after = policy._prefix(moved, run_lm=False).embeds
    changed = (after - before).abs().amax(dim=(0, 2)) > 0
    n_instr = before.shape[1] - policy.prefix.num_fixed
    assert changed.tolist() == [False] * n_instr + [False, False, True]
    # one MLP for every slot: the same values in slot 0 and slot 1 give tokens that differ only by
    # the slots' position embeddings
    same = dict(obs, **{OBS_ENV_STATE: obs[OBS_ENV_STATE].clone()})
    same[OBS_ENV_STATE][..., SIZE : 2 * SIZE] = same[OBS_ENV_STATE][..., :SIZE]
    with torch.no_grad():
        tok = policy._prefix(same, run_lm=False).embeds[:, -SLOTS:] - policy.prefix.pos[:, -SLOTS:]
    assert torch.allclose(tok[:, 0], tok[:, 1], atol=1e-6)


def test_a_trained_policy_reads_the_named_objects_pose(tmp_path):
    policy = build()
    b = scenes(64)
    train_batch = {k: v for k, v in b.items() if k != "xy"}
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    policy.train()
    for _ in range(300):
        loss, _ = policy.compute_loss(train_batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.eval()
    test = scenes(32, seed=1)  # unseen scenes
    obs = {k: test[k] for k in (OBS_STATE, OBS_ENV_STATE)}
    noise = torch.zeros(32, H, DA)
    for name, slot in ((INSTRUCTIONS[0], 0), (INSTRUCTIONS[1], 1)):
        pred = policy.predict_action_chunk({**obs, "task": name}, noise=noise).mean(1)
        to_named = (pred - test["xy"][:, slot]).norm(dim=-1).mean()
        to_other = (pred - test["xy"][:, 1 - slot]).norm(dim=-1).mean()
        assert to_named < 0.5 * to_other, (name, to_named, to_other)
    loaded = load_policy(policy.save_pretrained(tmp_path / "ckpt"))
    again = loaded.predict_action_chunk({**obs, "task": INSTRUCTIONS[1]}, noise=noise)
    assert torch.allclose(
        again, policy.predict_action_chunk({**obs, "task": INSTRUCTIONS[1]}, noise=noise), atol=1e-5
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(key="observation.missing"), "object_tokens.key"),
        (dict(count=3), "do not fit"),
        (dict(offset=3), "do not fit"),
    ],
)
def test_a_layout_that_does_not_fit_is_refused(kwargs, message):
    count = kwargs.pop("count", SLOTS)
    with pytest.raises(ValueError, match=message):
        build(count, **kwargs)
