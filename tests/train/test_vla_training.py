"""Training a VLA with frozen backbones: the EMA tracks only trainable parameters (checkpoints stay
complete), and camera frames whose frozen features are cached are not decoded again."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from robolearn.policies import load_policy  # noqa: E402
from robolearn.train.config import TrainConfig  # noqa: E402
from robolearn.train.logging import read_metrics  # noqa: E402
from robolearn.train.state import ema_parameters  # noqa: E402
from robolearn.train.trainer import Trainer  # noqa: E402
from robolearn.types import FeatureSpec  # noqa: E402

torch.set_num_threads(1)
CAMS = ("observation.images.front", "observation.images.wrist")
EPISODES, LENGTH, SIDE = 2, 6, 16
VLA = {
    "n_obs_steps": 1, "horizon": 4, "n_action_steps": 2, "num_inference_steps": 2,
    "vision": {"kind": "siglip", "freeze": True,
               "hf_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "patch_size": 8, "image_size": SIDE}},
    "language": {"vocab_words": 16, "freeze": True,
                 "hf_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                               "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 64,
                               "max_position_embeddings": 64, "tie_word_embeddings": False}},
    "expert": {"width": 16, "layers": 1, "heads": 2},
}  # fmt: skip


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def camera_dataset(tmp_path_factory):
    """Two 6-frame episodes with two 16x16 video cameras, written by the dataset writer."""
    from robolearn.data.writer import LeRobotWriter

    root = tmp_path_factory.mktemp("vla") / "ds"
    feats = {"observation.state": FeatureSpec("float32", (4,)), "action": FeatureSpec("float32", (2,))}
    feats.update({cam: FeatureSpec("video", (SIDE, SIDE, 3)) for cam in CAMS})
    rng = np.random.default_rng(0)
    with LeRobotWriter(root, 10, feats) as w:
        for ep in range(EPISODES):
            for i in range(LENGTH):
                state = rng.uniform(-1, 1, 4).astype(np.float32)
                frame = {"observation.state": state, "action": state[:2] * 0.5}
                for c, cam in enumerate(CAMS):
                    frame[cam] = np.full((SIDE, SIDE, 3), 20 + 30 * i + 40 * c + 15 * ep, np.uint8)
                w.add_frame(frame, task=f"lift the cube {ep}")
            w.save_episode()
    return root


def _cfg(**kw) -> TrainConfig:
    base = dict(policy="vla", policy_config=VLA, steps=9, batch_size=4, lr=3e-3, warmup_steps=1, log_every=1,
                save_every=9, val_fraction=0.0, ema_decay=0.9, seed=1)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_ema_tracks_only_trainable_parameters_and_checkpoints_stay_complete(camera_dataset, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(_cfg(steps=6, save_every=6), camera_dataset, run, progress=False)
    policy = trainer.policy
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    frozen = [n for n, p in policy.named_parameters() if not p.requires_grad]
    assert trainable and frozen and any(n.startswith("prefix.tower.") for n in frozen)
    assert len(ema_parameters(policy)) == len(trainable)
    trainer.fit()

    state = run / "checkpoints" / "6" / "training_state"
    shadow = load_file(str(state / "ema.safetensors"))
    assert len(shadow) == len(trainable)  # the EMA holds no frozen tensor
    raw = load_file(str(state / "model_raw.safetensors"))
    saved = load_file(str(run / "model.safetensors"))
    assert set(saved) == set(policy.state_dict())  # complete: every frozen weight is written
    for name in frozen:
        assert torch.equal(saved[name], before[name]) and torch.equal(raw[name], before[name])
    moved = 0
    for i, name in enumerate(trainable):
        assert torch.equal(saved[name], shadow[f"shadow.{i}"])  # the checkpoint holds the EMA
        moved += not torch.equal(saved[name], raw[name])
    assert moved > len(trainable) // 2  # ... which lags the raw weights

    loaded = load_policy(run)
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, saved[name])
    obs = {"observation.state": torch.rand(2, 1, 4), "task": ["lift the cube 0", "lift the cube 1"]}
    obs.update({cam: torch.rand(2, 1, 3, SIDE, SIDE) for cam in CAMS})
    noise = torch.randn(2, 4, 2)
    with torch.no_grad():  # the trained policy with the EMA swapped in for its trainable weights only
        params = dict(policy.named_parameters())
        for i, name in enumerate(trainable):
            params[name].copy_(shadow[f"shadow.{i}"])
    policy.eval()
    want = policy.predict_action_chunk(obs, noise=noise)
    assert torch.equal(loaded.predict_action_chunk(obs, noise=noise), want)

    # resuming restores the trainable-only EMA and continues
    Trainer(_cfg(steps=8, save_every=6), camera_dataset, run, resume=True, progress=False).fit()
    assert len(load_file(str(run / "checkpoints" / "8" / "training_state" / "ema.safetensors"))) == len(
        trainable
    )


def test_cached_frames_are_not_decoded_again_and_training_is_unchanged(camera_dataset, tmp_path, monkeypatch):
    from robolearn.data.video import VideoDecoder

    decoded: list[int] = []
    original = VideoDecoder.get_frames

    def counting(self, path, timestamps, tolerance_s=None):
        decoded.append(len(timestamps))
        return original(self, path, timestamps, tolerance_s=tolerance_s)

    monkeypatch.setattr(VideoDecoder, "get_frames", counting)
    frames = EPISODES * LENGTH  # one epoch = 3 steps of 4 samples; 9 steps = 3 epochs
    runs = {}
    for skip in (True, False):
        decoded.clear()
        trainer = Trainer(_cfg(), camera_dataset, tmp_path / f"skip-{skip}", progress=False)
        trainer.skip_cached_pixels = skip
        trainer.fit()
        runs[skip] = (
            sum(decoded),
            [r["loss"] for r in read_metrics(tmp_path / f"skip-{skip}") if "loss" in r],
        )
        cache = trainer.policy.prefix._feature_cache
        assert len(cache) == frames
    # the cache is filled by one ordered pass before the first step; without skipping, every
    # training visit decodes both cameras again
    assert runs[False][0] == 4 * frames * len(CAMS)
    assert runs[True][0] == frames * len(CAMS)  # only the warm-up pass decodes
    assert len(runs[True][1]) == 9 and runs[True][1] == runs[False][1]
    a, b = (load_file(str(tmp_path / f"skip-{s}" / "model.safetensors")) for s in (True, False))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_skipped_frame_without_cached_features_is_an_error():
    from robolearn.train.skip_decode import PIXELS_SKIPPED

    cfg = TrainConfig(policy="vla", policy_config=VLA)
    from robolearn.train.trainer import build_policy

    feats = {"observation.state": FeatureSpec("float32", (4,)), "action": FeatureSpec("float32", (2,))}
    feats.update({cam: FeatureSpec("video", (SIDE, SIDE, 3)) for cam in CAMS})
    policy = build_policy(cfg, feats, None, "test").train()
    batch = {"observation.state": torch.rand(2, 1, 4), "action": torch.rand(2, 4, 2), "task": ["a", "b"],
             "index": torch.tensor([0, 1]), PIXELS_SKIPPED: torch.tensor([False, True])}  # fmt: skip
    batch.update({cam: torch.zeros(2, 1, 3, SIDE, SIDE) for cam in CAMS})
    assert policy.pixels_needed([(0, 0), (0, 1)]) == [True, True]
    with pytest.raises(RuntimeError, match="not cached"):
        policy.compute_loss(batch)
    batch[PIXELS_SKIPPED] = torch.tensor([False, False])
    policy.compute_loss(batch)
    assert policy.pixels_needed([(0, 0), (0, 1), (0, 2)]) == [False, False, True]


def test_the_warm_up_pass_goes_in_order_and_stops_when_the_cache_is_full():
    from robolearn.train.skip_decode import warm_feature_cache

    class Frames(torch.utils.data.Dataset):
        def __len__(self):
            return 20

        def __getitem__(self, i):
            return {"index": torch.tensor(100 + i)}

        def frame_key(self, i):
            return 0, 100 + i

    class Cache:  # holds 10 frames, like a feature_cache_mb budget
        training = False

        def __init__(self):
            self.keys, self.seen = {(0, 103)}, []

        def pixels_needed(self, keys):
            return [k not in self.keys for k in keys]

        def cache_frame_features(self, batch):
            for i in batch["index"].tolist():
                self.seen.append(i)
                if len(self.keys) < 10:
                    self.keys.add((0, i))

        def train(self, mode=True):
            self.training = mode

    policy = Cache()
    done = warm_feature_cache(policy, Frames(), 4, 0, torch.device("cpu"), show=False)
    # frame 103 was cached already; batches of 4 in dataset order until one finds the budget full
    assert policy.seen == [100, 101, 102, 104, 105, 106, 107, 108, 109, 110, 111, 112] and done == 12
    assert len(policy.keys) == 10 and policy.training is False
