"""``validate``: every corruption is found and named by file, episode and field."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from robolearn.data.errors import DatasetError
from robolearn.data.validate import check, validate
from robolearn.data.video import remux

DATA = "data/chunk-000/file-000.parquet"
META = "meta/episodes/chunk-000/file-000.parquet"
VIDEO = "videos/observation.images.front/chunk-000/file-000.mp4"


def _errors(root):
    return [p for p in validate(root) if p.severity == "error"]


def _only(root, file, episode, field=None):
    problems = _errors(root)
    assert problems, "corruption not detected"
    p = problems[0]
    assert (p.file, p.episode, p.field) == (file, episode, field), problems
    return p


@pytest.fixture
def root(new_dataset):
    return new_dataset((5, 7, 6))


def test_clean_dataset_has_no_problems(root):
    assert validate(root) == []
    assert check(root) == []


def test_truncated_parquet(root):
    path = root / DATA
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    p = _only(root, DATA, 0)
    assert "unreadable parquet" in p.message
    with pytest.raises(DatasetError) as exc:
        check(root)
    assert str(exc.value).startswith(f"{DATA}: episode 0: unreadable parquet")


def test_truncated_episode_metadata(root):
    path = root / META
    path.write_bytes(path.read_bytes()[:100])
    problems = validate(root)
    assert problems[0].file == META and "unreadable parquet" in problems[0].message


def test_missing_mp4(root):
    (root / VIDEO).unlink()
    p = _only(root, VIDEO, 0, "observation.images.front")
    assert "video file missing (episodes 0..2)" in p.message


def test_short_mp4(root, tmp_path):
    cut = tmp_path / "cut.mp4"
    remux([root / VIDEO], cut, end_s=1.6)  # drop the last two frames of episode 2
    cut.replace(root / VIDEO)
    p = _only(root, VIDEO, 2, "observation.images.front")
    assert "4 frames in [1.200s, 1.800s), the episode has 6" in p.message


def test_byte_truncated_mp4(root):
    path = root / VIDEO
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.8)])
    problems = _errors(root)
    assert problems and all(p.file == VIDEO for p in problems)
    assert problems[-1].episode == 2


@pytest.mark.parametrize("bad, word", [(float("nan"), "NaN"), (float("inf"), "inf")])
def test_non_finite_values(root, lr, bad, word):
    def edit(values):
        values[5 + 2][1] = bad  # episode 1, frame 2
        return values

    lr.rewrite_parquet(root / DATA, lr.ACTION, edit)
    p = _only(root, DATA, 1, lr.ACTION)
    assert p.message.startswith(f"{word} at frame 2")


def test_shape_mismatch_with_info(root, lr):
    info_path = root / "meta/info.json"
    info = json.loads(info_path.read_text())
    info["features"][lr.STATE]["shape"] = [5]
    info_path.write_text(json.dumps(info, indent=4))
    p = _only(root, DATA, 0, lr.STATE)
    assert "info.json says float32 [5]" in p.message and "[4]" in p.message


def test_dtype_mismatch_with_info(root, lr):
    info_path = root / "meta/info.json"
    info = json.loads(info_path.read_text())
    info["features"]["index"]["dtype"] = "float32"
    info_path.write_text(json.dumps(info, indent=4))
    p = _only(root, DATA, 0, "index")
    assert "info.json says float32 [1]" in p.message


def test_off_grid_timestamps(root, lr):
    def edit(values):
        values[12 + 3] += 0.013  # episode 2, frame 3
        return values

    lr.rewrite_parquet(root / DATA, "timestamp", edit)
    p = _only(root, DATA, 2, "timestamp")
    assert p.message == "frame 3: t=0.313000s is off the 1/10s grid"


def test_episode_index_inconsistent_with_rows(root, lr):
    def edit(values):
        values[5 + 1] = 2  # a row of episode 1 claims episode 2
        return values

    lr.rewrite_parquet(root / DATA, "episode_index", edit)
    p = _only(root, DATA, 1, "episode_index")
    assert p.message == "frame 1: 2 where 1 was expected"


def test_episode_length_inconsistent(root, lr):
    def edit(values):
        values[1] = 8
        return values

    lr.rewrite_parquet(root / META, "length", edit)
    p = _only(root, "meta/episodes", 1, "length")
    assert p.message == "length 8 but index range [5, 12)"


def test_missing_rows(root, lr):
    pf = pq.ParquetFile(root / DATA)
    kept = [pf.read_row_group(i) for i in range(2)]
    with pq.ParquetWriter(root / DATA, pf.schema_arrow) as w:
        for t in kept:
            w.write_table(t)
    p = _only(root, DATA, 2)
    assert p.message == "12 rows, episode metadata expects 18"


def test_totals_in_info(root):
    info_path = root / "meta/info.json"
    info = json.loads(info_path.read_text())
    info["total_frames"] = 20
    info_path.write_text(json.dumps(info))
    p = _errors(root)[0]
    assert (p.file, p.field) == ("meta/info.json", "total_frames")
    assert p.message == "total_frames is 20, episodes end at 18"


def test_not_a_dataset(tmp_path):
    problems = validate(tmp_path)
    assert problems[0].file == "meta/info.json" and "not a LeRobot dataset" in problems[0].message
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta/info.json").write_text("{broken")
    assert "invalid JSON" in validate(tmp_path)[0].message


def test_stats_problems_are_reported(root, lr):
    path = root / "meta/stats.json"
    stats = json.loads(path.read_text())
    stats[lr.STATE]["mean"][0] = None
    del stats[lr.ACTION]
    path.write_text(json.dumps(stats))
    problems = validate(root)
    assert any(p.field == lr.STATE and p.severity == "error" and "'mean'" in p.message for p in problems)
    assert any(p.field == lr.ACTION and p.severity == "warning" for p in problems)
    np.testing.assert_equal(len(_errors(root)), 1)
