"""Video I/O with PyAV: LeRobot's encoder settings, lossless concatenation, a fast fork-safe decoder.

Encoding uses LeRobot 0.4.x's defaults: ``libsvtav1`` (preset 12), ``yuv420p``, GOP ``g=2``,
``crf=30``. Where this FFmpeg build has no ``libsvtav1`` the writer falls back to H.264
(``libx264``, same ``g``/``crf``); ``info.json`` records the codec actually used.
"""

from __future__ import annotations

import io
import logging
import os
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole config to stderr at level 3

log = logging.getLogger(__name__)

# canonical codec name (what info.json records) -> encoder
ENCODERS = {"av1": "libsvtav1", "h264": "libx264", "hevc": "libx265"}
_ALIASES = {
    "libsvtav1": "libsvtav1",
    "av1": "libsvtav1",
    "libx264": "libx264",
    "h264": "libx264",
    "hevc": "libx265",
    "libx265": "libx265",
}


class FrameTimestampError(ValueError):
    """A requested timestamp has no frame within tolerance in the video."""


def encoder_available(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - PyAV raises several types for unknown codecs
        return False
    return True


def pick_encoder(vcodec: str | None = None) -> str:
    """Encoder to use: ``None``/``"auto"`` means libsvtav1 when available, else libx264."""
    if vcodec in (None, "auto"):
        for name in ("libsvtav1", "libx264"):
            if encoder_available(name):
                return name
        raise RuntimeError("this FFmpeg build has neither libsvtav1 nor libx264")
    name = _ALIASES.get(vcodec, vcodec)
    if not encoder_available(name):
        raise ValueError(f"video encoder {vcodec!r} is not available in this PyAV/FFmpeg build")
    return name


def encoder_options(encoder: str, g: int = 2, crf: int = 30, preset: int | None = None) -> dict[str, str]:
    """Codec options LeRobot passes for its software encoders."""
    opts = {"g": str(g), "crf": str(crf)}
    if encoder == "libsvtav1":
        opts["preset"] = str(12 if preset is None else preset)
    return opts


class EpisodeVideoEncoder:
    """Streams uint8 ``(H, W, 3)`` frames of one camera and episode into an mp4 file."""

    def __init__(self, path: Path, fps: int, encoder: str, width: int, height: int):
        if width % 2 or height % 2:
            raise ValueError(f"yuv420p video needs even width and height, got {width}x{height}")
        self.path = Path(path)
        self.frames = 0
        self._container = av.open(str(self.path), "w")
        self._stream = self._container.add_stream(encoder, rate=fps, options=encoder_options(encoder))
        self._stream.pix_fmt = "yuv420p"
        self._stream.width, self._stream.height = width, height

    def add(self, img: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> int:
        """Flush and close; returns the number of frames written."""
        if self._container is not None:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            self._container = None
        return self.frames

    def abort(self) -> None:
        """Close without caring about the output and delete it."""
        if self._container is not None:
            try:
                self._stream.encode(None)  # drain the encoder (SVT-AV1 complains when torn down unflushed)
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away
                pass
            self._container = None
        self.path.unlink(missing_ok=True)


def video_duration(path: Path) -> float:
    """Duration in seconds of the first video stream (LeRobot's ``get_video_duration_in_s``)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.duration is not None:
            return float(stream.duration * stream.time_base)
        return float(container.duration / av.time_base)


def video_info(path: Path) -> dict:
    """The ``info`` dict LeRobot stores under a video feature in ``info.json``."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pix_fmt = stream.pix_fmt or ""
        channels = 1 if "gray" in pix_fmt else 4 if ("rgba" in pix_fmt or "yuva" in pix_fmt) else 3
        info = {
            "video.height": stream.height,
            "video.width": stream.width,
            "video.codec": stream.codec.canonical_name,
            "video.pix_fmt": pix_fmt,
            "video.is_depth_map": False,
            "video.fps": int(stream.base_rate),
            "video.channels": channels,
        }
        audio = container.streams.audio
        if audio:
            a = audio[0]
            info.update(
                {
                    "audio.channels": a.channels,
                    "audio.codec": a.codec.canonical_name,
                    "audio.bit_rate": a.bit_rate,
                    "audio.sample_rate": a.sample_rate,
                    "audio.bit_depth": a.format.bits,
                    "audio.channel_layout": a.layout.name,
                }
            )
        info["has_audio"] = bool(audio)
    return info


def frame_times(path: Path) -> np.ndarray:
    """Presentation times (s) of every frame, sorted, read from packets without decoding."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = [p.pts for p in container.demux(stream) if p.pts is not None]
        return np.sort(np.asarray(pts, dtype=np.float64)) * float(stream.time_base)


def remux(inputs: list[Path], out: Path, end_s: float | None = None) -> list[float]:
    """Concatenate mp4 files without re-encoding (optionally dropping frames at or after ``end_s``).

    Returns the ``len(inputs) + 1`` boundaries, in seconds, of the inputs in the output: input ``i``
    spans ``[bounds[i], bounds[i + 1])`` (LeRobot's from/to timestamps: cumulative durations).
    """
    starts: list[float] = []
    offset = Fraction(0)
    with av.open(str(out), "w", options={"movflags": "faststart"}) as oc:
        ost, out_tb = None, None
        for path in inputs:
            starts.append(float(offset))
            with av.open(str(path)) as ic:
                ist = ic.streams.video[0]
                if ost is None:
                    ost = oc.add_stream_from_template(ist, opaque=True)
                    ost.time_base = out_tb = ist.time_base
                in_tb = ist.time_base
                shift = int(round(offset / out_tb))
                for packet in ic.demux(ist):
                    if packet.dts is None:  # demuxer flush packet
                        continue
                    if end_s is not None and packet.pts is not None and packet.pts * in_tb >= end_s - 1e-6:
                        continue
                    if in_tb != out_tb:
                        packet.pts = (
                            int(round(packet.pts * in_tb / out_tb)) if packet.pts is not None else None
                        )
                        packet.dts = int(round(packet.dts * in_tb / out_tb))
                        packet.duration = int(round(packet.duration * in_tb / out_tb))
                    if packet.pts is not None:
                        packet.pts += shift
                    packet.dts += shift
                    packet.stream = ost
                    oc.mux(packet)
                duration = (
                    ist.duration * in_tb if ist.duration is not None else Fraction(ic.duration, av.time_base)
                )
                offset += duration
    return [*starts, float(offset)]


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of a uint8 ``(H, W, 3)`` image (LeRobot's ``image`` features embed these in parquet)."""
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = img.shape[1], img.shape[0], "rgb24"
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
    return b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])


def decode_image(data: bytes) -> np.ndarray:
    """Decode PNG/JPEG bytes to uint8 ``(H, W, 3)``."""
    with av.open(io.BytesIO(data)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


_FORK_ORPHANS: list = []
"""Objects inherited across ``fork`` that must not be freed in the child (see VideoDecoder)."""


class VideoDecoder:
    """Decodes frames by timestamp, keeping files open between calls.

    Open containers are cached per process (up to ``max_open``, least recently used closed first);
    after a ``fork`` the child drops the parent's handles and reopens its own, so DataLoader workers
    are safe. A call seeks once per cluster of nearby timestamps and decodes forward through the
    cluster in one pass.
    """

    def __init__(self, max_open: int = 32, threads: int = 1, seek_gap_frames: int = 8):
        self.max_open = max_open
        self.threads = threads
        self.seek_gap_frames = seek_gap_frames
        self._open: OrderedDict[str, tuple] = OrderedDict()
        self._pid = os.getpid()
        # One reusable swscale context: building a converter per frame cost most of a sample's time.
        self._reformatter = av.video.reformatter.VideoReformatter()

    def _container(self, path: Path) -> tuple:
        if os.getpid() != self._pid:  # forked: never touch the parent's file offsets
            self._open = OrderedDict()
            self._pid = os.getpid()
            # The parent's swscale context owns worker threads that do not exist in this child:
            # freeing it here would join them forever, so it is parked (never freed) and replaced.
            _FORK_ORPHANS.append(self._reformatter)
            self._reformatter = av.video.reformatter.VideoReformatter()
        key = str(path)
        entry = self._open.get(key)
        if entry is None:
            container = av.open(key)
            stream = container.streams.video[0]
            stream.codec_context.thread_count = self.threads
            rate = stream.average_rate or stream.base_rate
            entry = (container, stream, float(rate), stream.time_base)
            self._open[key] = entry
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)[1][0].close()
        else:
            self._open.move_to_end(key)
        return entry

    def get_frames(self, path: Path | str, timestamps, tolerance_s: float | None = None) -> np.ndarray:
        """Frames nearest to ``timestamps`` (s): uint8 ``(N, H, W, 3)``, in the order asked.

        A frame matches when it lies within ``tolerance_s`` (default half a frame period, 1/(2·fps));
        otherwise :class:`FrameTimestampError` names the file and the timestamp.
        """
        ts = np.atleast_1d(np.asarray(timestamps, dtype=np.float64))
        container, stream, fps, tb = self._container(Path(path))
        tol = 0.5 / fps if tolerance_s is None else tolerance_s
        targets = np.unique(ts)
        found: dict[float, np.ndarray] = {}
        i = 0
        while i < len(targets):
            container.seek(max(0, int((targets[i] - tol) / tb)), stream=stream, backward=True)
            i = self._decode_run(container, stream, targets, i, tol, fps, found, path)
        return np.stack([found[t] for t in ts])

    def _decode_run(self, container, stream, targets, i, tol, fps, found, path) -> int:
        """Decode forward from the last seek, filling ``found`` while targets stay close together."""
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * frame.time_base)
            if t > targets[i] + tol:
                raise FrameTimestampError(
                    f"{path}: no frame within {tol:.4f}s of t={targets[i]:.4f}s (nearest decoded {t:.4f}s)"
                )
            if t < targets[i] - tol:
                continue
            img = self._reformatter.reformat(frame, format="rgb24").to_ndarray()
            while i < len(targets) and abs(t - targets[i]) <= tol:
                found[targets[i]] = img
                i += 1
            if i >= len(targets) or targets[i] - t > self.seek_gap_frames / fps:
                return i  # done, or the next target is far: seeking beats decoding the gap
        raise FrameTimestampError(f"{path}: t={targets[i]:.4f}s is past the end of the video")

    def close(self) -> None:
        """Close every cached container (only those this process opened)."""
        if os.getpid() == self._pid:
            for entry in self._open.values():
                entry[0].close()
        self._open.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
