"""``robolearn inspect DIR``: validate a LeRobot v3.0 dataset and summarize it; ``--video`` renders episodes.

``robolearn inspect FILE.hdf5`` says what a robomimic-style file is (robomimic, LIBERO or unknown
layout): its demos, keys, shapes, masks and ``env_args``, and what ``robolearn convert`` keeps and
drops (:mod:`robolearn.data.convert.inspect_h5`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from robolearn.cli import UserError

HELP = "dataset summary, validation, stats; --video to render episodes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``inspect``'s arguments on its subparser."""
    parser.add_argument(
        "dir", type=Path, help="dataset root (holds meta/info.json), or a robomimic / LIBERO .hdf5 file"
    )
    parser.add_argument(
        "--video", type=Path, metavar="OUT_DIR", help="render episodes (cameras side by side) to mp4"
    )
    parser.add_argument(
        "--episodes", default=None, help="episodes to list/render, e.g. 0,1 or 2-5 (default: all)"
    )
    parser.add_argument(
        "--no-video-check", action="store_true", help="skip reading the mp4 files while validating"
    )
    parser.add_argument(
        "--repair",
        action="store_true",
        help="first cut away leftovers of an interrupted recording (modifies DIR)",
    )


def parse_episodes(text: str | None, num_episodes: int) -> list[int] | None:
    """``"0,2-4"`` -> ``[0, 2, 3, 4]``; ``None`` stays ``None`` (all). Raises UserError when out of range."""
    if text is None:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError as exc:
        raise UserError(
            f"--episodes {text!r}: expected comma-separated indices or ranges like 0,2-4"
        ) from exc
    bad = [e for e in out if not 0 <= e < num_episodes]
    if bad:
        raise UserError(f"--episodes: {bad[0]} out of range (dataset has {num_episodes} episodes)")
    return out


def _fmt(value: np.ndarray, width: int = 6) -> str:
    flat = np.asarray(value, dtype=np.float64).reshape(-1)
    shown = " ".join(f"{v:.3g}" for v in flat[:width])
    return f"[{shown}{' …' if flat.size > width else ''}]"


def _progress(desc: str, total: int):
    from robolearn.progress import progress

    return progress(total=total, desc=desc, unit="file", leave=False)


def run(args: argparse.Namespace) -> int:
    """Validate, print the summary, optionally render videos; exit status 2 on a corrupt dataset."""
    from robolearn.data.errors import DatasetError
    from robolearn.data.reader import LeRobotReader
    from robolearn.data.repair import repair
    from robolearn.data.validate import validate

    root: Path = args.dir
    if root.is_file():
        return _inspect_file(args)
    if not root.is_dir():
        raise UserError(f"{root}: no such directory")
    if not (root / "meta" / "info.json").is_file():
        raise UserError(f"{root}: not a LeRobot dataset (no meta/info.json)")
    try:
        if args.repair:
            for msg in repair(root):
                print(f"repaired: {msg}", file=sys.stderr)
        bar = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = _progress("validating", total)
            bar.update(1)

        problems = validate(root, videos=not args.no_video_check, progress=progress)
        if bar is not None:
            bar.close()
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            raise DatasetError(errors)
        for p in problems:
            print(f"warning: {p}", file=sys.stderr)
        reader = LeRobotReader(root)
    except DatasetError as exc:
        raise UserError(f"{root}: {exc}") from exc
    selected = parse_episodes(args.episodes, reader.num_episodes)
    _print_summary(reader, selected)
    if args.video is not None:
        render_episodes(
            reader, selected if selected is not None else list(range(reader.num_episodes)), args.video
        )
    cams = len(reader.video_keys) + len(reader.image_keys)
    print(
        f"{root}: valid LeRobot {reader.info['codebase_version']} dataset: {reader.num_episodes} episodes, "
        f"{reader.num_frames} frames, {reader.fps} fps, {cams} camera(s), {len(reader.tasks)} task(s)"
        + (f", {len(problems)} warning(s)" if problems else "")
    )
    return 0


def _inspect_file(args: argparse.Namespace) -> int:
    """Describe an HDF5 demo file (the LeRobot-only options do not apply to it)."""
    from robolearn.data.convert import ConversionError
    from robolearn.data.convert.inspect_h5 import describe_hdf5

    used = [flag for flag, on in (("--video", args.video), ("--episodes", args.episodes), ("--repair", args.repair))
            if on]  # fmt: skip
    if used:
        raise UserError(
            f"{args.dir}: {used[0]} works on LeRobot datasets; convert the file first (robolearn convert)"
        )
    try:
        print("\n".join(describe_hdf5(args.dir)))
    except ConversionError as exc:
        raise UserError(str(exc)) from exc
    return 0


def _print_summary(reader, selected: list[int] | None) -> None:
    info = reader.info
    seconds = reader.num_frames / reader.fps if reader.fps else 0.0
    print(f"dataset     {reader.root}")
    print(
        f"format      LeRobot {info['codebase_version']}   robot {info.get('robot_type')}   fps {reader.fps}"
    )
    print(f"episodes    {reader.num_episodes}   frames {reader.num_frames}   ({seconds:.1f} s)")
    print("features")
    for key, spec in reader.features.items():
        extra = ""
        vinfo = info["features"][key].get("info")
        if vinfo:
            extra = f"   {vinfo.get('video.codec')} {vinfo.get('video.pix_fmt')}"
        print(f"  {key:<36} {spec.dtype:<8} {tuple(spec.shape)}{extra}")
    print(f"tasks       {len(reader.tasks)}")
    for i, task in enumerate(reader.tasks[:10]):
        print(f"  [{i}] {task}")
    if len(reader.tasks) > 10:
        print(f"  … {len(reader.tasks) - 10} more")
    eps = selected if selected is not None else list(range(min(reader.num_episodes, 10)))
    print("episodes (index, frames, seconds, tasks)")
    for ep in eps:
        meta = reader.episode_meta(ep)
        print(
            f"  {ep:>6} {meta['length']:>7} {meta['length'] / reader.fps:>8.2f}   {'; '.join(meta['tasks'])}"
        )
    if selected is None and reader.num_episodes > len(eps):
        print(f"  … {reader.num_episodes - len(eps)} more (use --episodes)")
    stats = reader.stats
    if stats:
        print("stats (mean / std / min / max)")
        for key in reader.features:
            s = stats.get(key)
            if s is not None:
                print(
                    f"  {key:<36} {_fmt(s['mean'])} / {_fmt(s['std'])} / {_fmt(s['min'])} / {_fmt(s['max'])}"
                )


def render_episodes(reader, episodes: list[int], out_dir: Path, chunk: int = 64) -> list[Path]:
    """Write ``episode_XXXXXX.mp4`` per episode under ``out_dir``: every camera side by side."""
    from robolearn.data.video import EpisodeVideoEncoder, pick_encoder

    cams = reader.video_keys + reader.image_keys
    if not cams:
        raise UserError(f"{reader.root}: --video needs camera features; this dataset has none")
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = "libx264" if _has("libx264") else pick_encoder(None)
    height = max(reader.features[k].shape[0] for k in cams)
    width = sum(reader.features[k].shape[1] for k in cams)
    height, width = height + height % 2, width + width % 2
    written = []
    from robolearn.progress import progress

    total = int(sum(reader.episode_lengths[e] for e in episodes))
    with progress(total=total, desc="rendering", unit="frame", leave=False) as bar:
        for ep in episodes:
            target = out_dir / f"episode_{ep:06d}.mp4"
            tmp = out_dir / f".{target.name}.{os.getpid()}.tmp.mp4"
            enc = EpisodeVideoEncoder(tmp, reader.fps, encoder, width, height)
            try:
                n = int(reader.episode_lengths[ep])
                for start in range(0, n, chunk):
                    idx = np.arange(start, min(n, start + chunk))
                    canvas = np.zeros((len(idx), height, width, 3), dtype=np.uint8)
                    x = 0
                    for key in cams:
                        frames = reader.frames(ep, key, idx)
                        canvas[:, : frames.shape[1], x : x + frames.shape[2]] = frames
                        x += frames.shape[2]
                    for img in canvas:
                        enc.add(img)
                    bar.update(len(idx))
                enc.close()
                os.replace(tmp, target)
            except BaseException:
                enc.abort()
                raise
            written.append(target)
            print(f"wrote {target}")
    return written


def _has(encoder: str) -> bool:
    from robolearn.data.video import encoder_available

    return encoder_available(encoder)
