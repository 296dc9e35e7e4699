"""PyAV encoding settings, lossless concatenation and the cached, fork-safe decoder."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest

from robolearn.data.video import (
    EpisodeVideoEncoder,
    FrameTimestampError,
    VideoDecoder,
    decode_image,
    encode_png,
    encoder_options,
    frame_times,
    pick_encoder,
    remux,
    video_duration,
    video_info,
)

FPS = 10


def _flat(value: int) -> np.ndarray:
    return np.full((16, 24, 3), value, dtype=np.uint8)


def _encode(path, values, encoder="libx264"):
    enc = EpisodeVideoEncoder(path, FPS, encoder, 24, 16)
    for v in values:
        enc.add(_flat(v))
    assert enc.close() == len(values)
    return path


@pytest.fixture(scope="module")
def joined(tmp_path_factory):
    """Three episodes (4, 6, 5 frames) concatenated: frame k of episode e has gray level 100*e + 10*k."""
    d = tmp_path_factory.mktemp("video")
    parts = [_encode(d / f"e{e}.mp4", [100 * e + 10 * k for k in range(n)]) for e, n in enumerate((4, 6, 5))]
    bounds = remux(parts, d / "joined.mp4")
    return d / "joined.mp4", bounds


def test_lerobot_encoder_defaults():
    assert pick_encoder(None) == ("libsvtav1" if "libsvtav1" in av.codecs_available else "libx264")
    assert pick_encoder("h264") == "libx264"
    assert encoder_options("libsvtav1") == {"g": "2", "crf": "30", "preset": "12"}
    assert encoder_options("libx264") == {"g": "2", "crf": "30"}
    with pytest.raises(ValueError, match="not available"):
        pick_encoder("no-such-codec")
    with pytest.raises(ValueError, match="even"):
        EpisodeVideoEncoder("unused.mp4", FPS, "libx264", 23, 16)


def test_encoded_stream_properties(tmp_path):
    path = _encode(tmp_path / "a.mp4", range(0, 60, 10), encoder=pick_encoder(None))
    info = video_info(path)
    assert (info["video.width"], info["video.height"], info["video.fps"]) == (24, 16, FPS)
    assert info["video.pix_fmt"] == "yuv420p" and info["has_audio"] is False
    assert video_duration(path) == pytest.approx(0.6)
    with av.open(str(path)) as c:
        keyframes = [p.is_keyframe for p in c.demux(c.streams.video[0]) if p.dts is not None]
    assert keyframes[::2] == [True] * 3  # g=2: a keyframe every other frame


def test_remux_boundaries_and_frame_times(joined):
    path, bounds = joined
    assert bounds == pytest.approx([0.0, 0.4, 1.0, 1.5])
    np.testing.assert_allclose(frame_times(path), np.arange(15) / FPS, atol=1e-6)
    assert video_duration(path) == pytest.approx(1.5)


def test_decoder_frames_by_timestamp(joined):
    path, _ = joined
    dec = VideoDecoder()
    want = {0.0: 0, 0.3: 30, 0.4: 100, 0.9: 150, 1.4: 240, 1.0: 200}
    ts = [1.4, 0.0, 0.9, 0.3, 0.4, 0.3, 1.0]
    frames = dec.get_frames(path, ts)
    assert frames.shape == (7, 16, 24, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(frames.reshape(7, -1).mean(axis=1), [want[t] for t in ts], atol=3)
    # a timestamp within half a frame period still matches; one past the end does not
    assert abs(dec.get_frames(path, [0.33])[0].mean() - 30) < 3
    with pytest.raises(FrameTimestampError, match="past the end"):
        dec.get_frames(path, [1.6])
    with pytest.raises(FrameTimestampError, match=r"no frame within"):
        dec.get_frames(path, [0.35], tolerance_s=0.01)


def test_decoder_caches_open_files(joined, tmp_path):
    path, _ = joined
    other = _encode(tmp_path / "o.mp4", [50, 60])
    dec = VideoDecoder(max_open=1)
    dec.get_frames(path, [0.0])
    first = dec._open[str(path)][0]
    dec.get_frames(path, [1.0])
    assert dec._open[str(path)][0] is first  # reused, not reopened
    dec.get_frames(other, [0.1])
    assert list(dec._open) == [str(other)]  # LRU evicted the first file
    dec.close()
    assert not dec._open


def test_decoder_is_fork_safe(joined):
    path, _ = joined
    dec = VideoDecoder()
    parent_before = dec.get_frames(path, [0.5, 1.2]).mean(axis=(1, 2, 3))
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must reopen its own container, not reuse the parent's file offsets
        try:
            means = dec.get_frames(path, [1.2, 0.1, 0.5]).mean(axis=(1, 2, 3))
            ok = dec._pid == os.getpid() and np.allclose(means, [220, 10, 110], atol=3)
            os.write(write_fd, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    assert os.read(read_fd, 1) == b"1"
    os.close(read_fd)
    np.testing.assert_allclose(dec.get_frames(path, [0.5, 1.2]).mean(axis=(1, 2, 3)), parent_before)


def test_remux_can_cut_the_tail(joined, tmp_path):
    path, bounds = joined
    cut = tmp_path / "cut.mp4"
    remux([path], cut, end_s=bounds[2])
    assert len(frame_times(cut)) == 10
    assert video_duration(cut) == pytest.approx(1.0)


def test_png_round_trip():
    img = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    data = encode_png(img)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(decode_image(data), img)
