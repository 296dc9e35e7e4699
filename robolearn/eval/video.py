"""Write rollout frames to MP4 with PyAV (H.264 when available, else VP9), browser-playable."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np


def _codec() -> str:
    for name in ("libx264", "libvpx-vp9", "mpeg4"):
        if name in av.codecs_available:
            return name
    raise RuntimeError("PyAV has no usable video encoder (libx264, libvpx-vp9 or mpeg4)")


def write_mp4(path: str | Path, frames: list[np.ndarray] | np.ndarray, fps: int) -> Path:
    """Encode uint8 (H, W, 3) frames to ``path`` atomically (temp file, then rename)."""
    path = Path(path)
    if len(frames) == 0:
        raise ValueError(f"{path}: no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    h, w = frames[0].shape[:2]
    codec = _codec()
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=int(fps))
        stream.width, stream.height = w - w % 2, h - h % 2
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "23", "preset": "veryfast", "movflags": "+faststart"}
        for img in frames:
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(img[: stream.height, : stream.width]), format="rgb24"
            )
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path
