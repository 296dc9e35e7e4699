"""WindowedDataset: windows, pad masks, delta_timestamps, decoded images, workers, splits, stats.

The fixture dataset codes every value with its (episode, frame): state = [1000·ep + f, f, ep],
action = [1000·ep + f + 0.5, -f], reward = f, and each camera frame is one flat colour
(8·f, 255 - 8·f, 40·ep), so every window can be checked against hand-computed frame indices.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from robolearn.data.dataset_stats import compute_stats
from robolearn.data.reader import LeRobotReader
from robolearn.data.sampler import WindowedDataset, split_episodes
from robolearn.data.transforms import RandomShift
from robolearn.data.writer import LeRobotWriter
from robolearn.types import FeatureSpec

FPS, H, W = 10, 64, 64
LENGTHS = [6, 25, 3, 12]
TASKS = ["lift the cube", "push the cube", "lift the cube", "open the drawer"]
CAM = "observation.images.front"
STATE, ACTION, REWARD = "observation.state", "action", "next.reward"
FEATURES = {
    STATE: FeatureSpec("float32", (3,)),
    CAM: FeatureSpec("video", (H, W, 3)),
    ACTION: FeatureSpec("float32", (2,)),
    REWARD: FeatureSpec("float32", (1,)),
}


def colour(ep: int, f: int) -> np.ndarray:
    return np.array([8 * f, 255 - 8 * f, 40 * ep], dtype=np.float64)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sampler") / "coded"
    with LeRobotWriter(path, fps=FPS, features=FEATURES) as w:
        for ep, (n, task) in enumerate(zip(LENGTHS, TASKS, strict=True)):
            for f in range(n):
                img = np.broadcast_to(colour(ep, f).astype(np.uint8), (H, W, 3)).copy()
                w.add_frame({STATE: np.array([1000 * ep + f, f, ep], np.float32), CAM: img,
                             ACTION: np.array([1000 * ep + f + 0.5, -f], np.float32),
                             REWARD: np.array([f], np.float32)}, task=task)  # fmt: skip
            w.save_episode()
    return path


@pytest.fixture(scope="module")
def ds(root) -> WindowedDataset:
    return WindowedDataset(root, obs_horizon=2, action_horizon=16, extra_keys=(REWARD,))


def sample_index(ep: int, f: int) -> int:
    return sum(LENGTHS[:ep]) + f


def expected_window(ep: int, t: int, first: int, n: int) -> tuple[list[int], list[bool]]:
    """Frames first..first+n-1 relative to t, clamped into the episode, and their pad flags."""
    raw = [t + first + j for j in range(n)]
    return [min(max(r, 0), LENGTHS[ep] - 1) for r in raw], [not 0 <= r < LENGTHS[ep] for r in raw]


@pytest.mark.parametrize(("ep", "t"), [(1, 0), (1, 10), (1, 24), (0, 5), (2, 1), (3, 0)])
def test_window_contents_and_masks(ds, ep, t):
    item = ds[sample_index(ep, t)]
    obs_frames, obs_pad = expected_window(ep, t, -1, 2)
    act_frames, act_pad = expected_window(ep, t, -1, 16)
    assert item[STATE].dtype == torch.float32 and item[STATE].shape == (2, 3)
    assert item[STATE].tolist() == [[1000 * ep + f, f, ep] for f in obs_frames]
    assert item[ACTION].shape == (16, 2)
    assert item[ACTION].tolist() == [[1000 * ep + f + 0.5, -f] for f in act_frames]
    assert item[REWARD].tolist() == [[f] for f in act_frames]
    assert item[f"{STATE}_is_pad"].dtype == torch.bool
    assert item[f"{STATE}_is_pad"].tolist() == obs_pad == item[f"{CAM}_is_pad"].tolist()
    assert item[f"{ACTION}_is_pad"].tolist() == act_pad == item[f"{REWARD}_is_pad"].tolist()
    assert (int(item["episode_index"]), int(item["frame_index"])) == (ep, t)
    assert int(item["index"]) == sample_index(ep, t)
    assert item["task"] == TASKS[ep]


def test_hand_computed_edges(ds):
    """The same facts spelled out for one episode start and one end (episode 1, 25 frames)."""
    start, end = ds[sample_index(1, 0)], ds[sample_index(1, 24)]
    assert start[STATE][:, 0].tolist() == [1000, 1000]
    assert start[ACTION][:3, 0].tolist() == [1000.5, 1000.5, 1001.5]
    assert start["action_is_pad"].tolist() == [True] + [False] * 15
    assert end[STATE][:, 0].tolist() == [1023, 1024]
    assert end[ACTION][:, 0].tolist() == [1023.5] + [1024.5] * 15
    assert end["action_is_pad"].tolist() == [False, False] + [True] * 14


def test_images_match_what_was_written(ds):
    for ep, t in [(1, 0), (1, 13), (3, 11)]:
        item = ds[sample_index(ep, t)]
        img = item[CAM]
        assert img.dtype == torch.float32 and img.shape == (2, 3, H, W)
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
        frames, _ = expected_window(ep, t, -1, 2)
        for j, f in enumerate(frames):
            mean = img[j].mean(dim=(1, 2)).double().numpy() * 255
            np.testing.assert_allclose(mean, colour(ep, f), atol=4.0)  # codec tolerance, 8 levels apart


def test_len_locate_and_subset(root):
    sub = WindowedDataset(root, episodes=[3, 1])
    assert len(sub) == LENGTHS[3] + LENGTHS[1] and sub.num_episodes == 2
    assert sub.locate(0) == (3, 0) and sub.locate(LENGTHS[3]) == (1, 0) and sub.locate(-1) == (1, 24)
    assert int(sub[LENGTHS[3] + 2]["index"]) == sample_index(1, 2)
    with pytest.raises(IndexError):
        sub[len(sub)]
    with pytest.raises(IndexError, match="episode 9"):
        WindowedDataset(root, episodes=[9])


def test_delta_timestamps_equivalence(root, ds):
    dt = {STATE: [-0.1, 0.0], CAM: [-0.1, 0.0], ACTION: [(j - 1) / FPS for j in range(16)],
          REWARD: [(j - 1) / FPS for j in range(16)]}  # fmt: skip
    by_time = WindowedDataset(root, delta_timestamps=dt, extra_keys=(REWARD,))
    assert len(by_time) == len(ds)
    for i in [0, 5, 6, 20, 30, 33, len(ds) - 1]:
        a, b = ds[i], by_time[i]
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == b[key] if key == "task" else torch.equal(a[key], b[key]), key


def test_delta_timestamps_lerobot_semantics(root):
    """Keys outside delta_timestamps come back unwindowed; offsets may look ahead; off-grid is an error."""
    d = WindowedDataset(root, delta_timestamps={ACTION: [0.0, 0.2, 0.5]})
    item = d[sample_index(1, 22)]
    assert item[STATE].shape == (3,) and item[STATE].tolist() == [1022, 22, 1]
    assert item[CAM].shape == (3, H, W) and f"{STATE}_is_pad" not in item
    assert item[ACTION][:, 0].tolist() == [1022.5, 1024.5, 1024.5]
    assert item["action_is_pad"].tolist() == [False, False, True]
    with pytest.raises(ValueError, match=r"delta_timestamps\['action'\]: 0.05"):
        WindowedDataset(root, delta_timestamps={ACTION: [0.0, 0.05]})
    with pytest.raises(KeyError, match="observation.nope"):
        WindowedDataset(root, obs_keys=["observation.nope"])


def _collect(loader) -> list[dict]:
    return [batch for batch in loader]


def test_dataloader_two_workers_matches_one_process(ds):
    ds[7]  # the parent opens its decoders first: forked workers must not reuse them
    kw = dict(batch_size=5, shuffle=False)
    single = _collect(torch.utils.data.DataLoader(ds, num_workers=0, **kw))
    forked = _collect(torch.utils.data.DataLoader(ds, num_workers=2, **kw))
    assert len(single) == len(forked) == -(-len(ds) // 5)
    for a, b in zip(single, forked, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == b[key] if key == "task" else torch.equal(a[key], b[key]), key
    assert torch.equal(single[0][STATE], torch.stack([ds[i][STATE] for i in range(5)]))


def test_pickles_for_spawned_workers(root):
    sub = WindowedDataset(root, episodes=[1, 2], obs_horizon=3, action_horizon=4)
    clone = pickle.loads(pickle.dumps(sub))
    assert clone.episodes == [1, 2] and len(clone) == len(sub)
    a, b = sub[4], clone[4]
    assert all(torch.equal(a[k], b[k]) for k in a if k != "task")


def test_split_episodes_deterministic_and_disjoint():
    train, val = split_episodes(50, val_fraction=0.2, seed=3)
    assert (train, val) == split_episodes(50, val_fraction=0.2, seed=3)
    assert len(val) == 10 and not set(train) & set(val) and sorted(train + val) == list(range(50))
    assert split_episodes(50, 0.2, seed=4) != (train, val)
    assert len(split_episodes(3, 0.1)[1]) == 1  # at least one validation episode
    assert split_episodes(5, 0.0) == ([0, 1, 2, 3, 4], [])
    with pytest.raises(ValueError, match="val_fraction"):
        split_episodes(10, 1.0)


def test_dataset_split(ds):
    train, val = ds.split(val_fraction=0.25, seed=0)
    assert sorted(train.episodes + val.episodes) == [0, 1, 2, 3] and len(val.episodes) == 1
    assert len(train) + len(val) == len(ds)
    assert train.delta_indices.keys() == ds.delta_indices.keys()


def test_stats_full_match_stats_json(root, ds):
    with LeRobotReader(root) as r:
        stored = r.stats
    for key in (STATE, ACTION, CAM):
        for s in ("mean", "std", "min", "max", "q01", "q99"):
            np.testing.assert_allclose(ds.stats[key][s], stored[key][s], rtol=1e-6, atol=1e-9)
    assert set(ds.stats[STATE]) == {"mean", "std", "min", "max", "q01", "q99"}
    recomputed = compute_stats(root, keys=[STATE, ACTION])
    np.testing.assert_allclose(recomputed[STATE]["mean"], stored[STATE]["mean"], rtol=1e-6)


def test_stats_of_a_subset_use_only_its_episodes(root):
    sub = WindowedDataset(root, episodes=[1, 3])
    values = np.array([[1000 * ep + f, f, ep] for ep in (1, 3) for f in range(LENGTHS[ep])], dtype=np.float64)
    st = sub.stats[STATE]
    np.testing.assert_allclose(st["mean"], values.mean(0), rtol=1e-6)
    np.testing.assert_allclose(st["std"], values.std(0), rtol=1e-6)
    np.testing.assert_allclose(st["min"], values.min(0))
    np.testing.assert_allclose(st["max"], values.max(0))
    from_data = compute_stats(root, [1, 3], [STATE], from_data=True)[STATE]
    for s in ("mean", "std", "min", "max", "q01", "q99"):
        np.testing.assert_allclose(from_data[s], st[s], rtol=1e-6)


def test_image_transform_is_applied_to_each_camera_window(root):
    seen = []

    def invert(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return 1.0 - x

    plain = WindowedDataset(root)[sample_index(1, 5)][CAM]
    item = WindowedDataset(root, image_transform=invert)[sample_index(1, 5)]
    assert seen == [(2, 3, H, W)] and torch.allclose(item[CAM], 1.0 - plain)
    shifted = WindowedDataset(root, image_transform=RandomShift(pad=4))[sample_index(1, 5)][CAM]
    assert shifted.shape == (2, 3, H, W)


def test_video_cache_gives_the_same_samples_within_its_budget(root, ds):
    frame_bytes = H * W * 3
    # Room for the longest episode's frames of the one camera: the LRU evicts older episodes.
    budget_mb = max(LENGTHS) * frame_bytes / 2**20
    cached = WindowedDataset(
        root, obs_horizon=2, action_horizon=16, extra_keys=(REWARD,), video_cache_mb=budget_mb
    )
    for ep, t in [(1, 0), (1, 13), (3, 11), (0, 4), (2, 1), (1, 7)]:
        a, b = ds[sample_index(ep, t)], cached[sample_index(ep, t)]
        assert torch.equal(a[CAM], b[CAM]) and torch.equal(a[STATE], b[STATE])
        assert cached._video_bytes <= budget_mb * 2**20
    assert 1 <= len(cached._video_cache) < 4  # four episodes were touched
