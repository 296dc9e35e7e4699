"""``robolearn inspect FILE.hdf5``: what a robomimic-style file is, and what a conversion keeps and drops.

:func:`describe_hdf5` reads the file's layout (:mod:`.robomimic_h5`) and opens it the way
``robolearn convert`` does, so every line about the conversion comes from the converter itself:
each obs key and per-demo dataset is shown with the LeRobot feature it becomes, or ``dropped``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robolearn.data.convert.episode import ConversionError
from robolearn.data.convert.robomimic_h5 import ArrayInfo, H5Layout, read_layout

KIND_TEXT = {
    "robomimic": "robomimic (robomimic / robosuite HDF5 layout)",
    "libero": "LIBERO (robomimic HDF5 layout with LIBERO's problem_info)",
    "unknown": "unknown layout (an HDF5 file without data/demo_* groups)",
}
_ENV_TYPES = {1: "robosuite", 2: "gym", 3: "iGibson"}


def _shape(info: ArrayInfo) -> str:
    return f"{info.dtype} {tuple(info.shape[1:])}"


def _target(key_map: dict[str, tuple[str, int, int | None]], path: str, why: dict[str, str]) -> str:
    hit = key_map.get(path)
    if hit is None:
        return f"dropped ({why.get(path, 'not imported')})"
    feature, start, stop = hit
    return f"-> {feature}" + ("" if stop is None else f"[{start}:{stop}]")


def _why_dropped(layout: H5Layout) -> dict[str, str]:
    why = {f"obs/{k}": "depth is not imported" for k in layout.obs if k.endswith("_depth")}
    for k in layout.top:
        why.setdefault(k, "no robolearn feature for it")
    return why


def describe_hdf5(path: str | Path, options: Any = None) -> list[str]:
    """Lines describing the HDF5 file at ``path`` and what ``robolearn convert`` would make of it.

    ``options`` (:class:`~robolearn.data.convert.ConvertOptions`) are those a conversion would get.
    Raises :class:`ConversionError` for files that are not HDF5.
    """
    import h5py

    from robolearn.data.convert.core import open_source

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ConversionError(f"{path}: cannot open as HDF5 ({str(exc).splitlines()[0][:160]})") from exc
    with f:
        layout = read_layout(f, path)
    lines = [f"file        {path}", f"layout      {KIND_TEXT[layout.kind]}"]
    if layout.kind == "unknown":
        lines.append(f"top level   {', '.join(layout.groups) or '(empty)'}")
        lines.append(
            "conversion  robolearn convert needs data/demo_<n>/{obs/..., actions} (robomimic's layout)"
        )
        return lines
    lengths = list(layout.lengths.values())
    shown = ", ".join(layout.demos[:6]) + (
        f", … {len(layout.demos) - 6} more" if len(layout.demos) > 6 else ""
    )
    lines.append(
        f"demos       {len(layout.demos)} ({shown})   frames {layout.total}   "
        f"length min/mean/max {min(lengths)}/{layout.total / len(lengths):.1f}/{max(lengths)}"
    )
    env = layout.env_args
    if env:
        kwargs = env.get("env_kwargs") or {}
        extra = {k: kwargs[k] for k in ("control_freq", "robots", "camera_names") if k in kwargs}
        etype = _ENV_TYPES.get(env.get("type"), env.get("type"))
        lines.append(f"env_args    env_name {env.get('env_name')!r}, type {etype}, " + ", ".join(
            f"{k} {v!r}" for k, v in extra.items()) + f" ({len(kwargs)} env_kwargs)")  # fmt: skip
    else:
        lines.append("env_args    none (pass --fps to convert)")
    masks = ", ".join(f"{k} ({len(v)} demos)" for k, v in layout.masks.items()) or "none"
    lines.append(f"masks       {masks}")
    if layout.attrs:
        lines.append(f"data attrs  {', '.join(layout.attrs)}")
    try:
        src = open_source(path, options=options)  # the source `robolearn convert` would use
    except ConversionError as exc:
        lines.append(f"conversion  fails: {exc}")
        return lines
    with src:
        if not hasattr(src, "key_map"):  # a converter that keeps no per-key record: show its features
            lines.append(
                f"conversion  -> LeRobot at {src.fps:g} fps, robot_type {src.robot_type!r}, features:"
            )
            lines.extend(f"  {k:<34} {s.dtype} {tuple(s.shape)}" for k, s in src.features.items())
            lines.extend(f"note        {note}" for note in src.notes)
            return lines
        key_map = src.key_map()
        why = _why_dropped(layout)
        lines.append("obs keys (per step)")
        for k, info in layout.obs.items():
            lines.append(f"  {k:<34} {_shape(info):<22} {_target(key_map, f'obs/{k}', why)}")
        lines.append("per-demo datasets")
        for k, info in layout.top.items():
            lines.append(f"  {k:<34} {_shape(info):<22} {_target(key_map, k, why)}")
        nxt = len(layout.next_obs)
        lines.append(
            f"next_obs    {nxt} keys: kept as obs shifted by one step plus each demo's last numeric row"
            if nxt
            else "next_obs    none (an export writes obs shifted by one step)"
        )
        attrs = [a for a in layout.demo_attrs if a != "num_samples"]
        kept = f"{', '.join(attrs)} kept" if attrs else "none"
        lines.append(f"demo attrs  {kept}; demo names kept (meta/source_episodes.jsonl)")
        lines.append(
            f"conversion  -> LeRobot at {src.fps:g} fps, robot_type {src.robot_type!r}, "
            f"{len(src.features)} features; masks -> robolearn.splits"
            + ("; data attrs -> robolearn.source.attrs" if layout.attrs else "")
        )
        tasks = list(dict.fromkeys(getattr(src, "_tasks", [])))  # the instruction each demo gets
        if tasks:
            more = f" … {len(tasks) - 3} more" if len(tasks) > 3 else ""
            lines.append(f"tasks       {len(tasks)}: " + "; ".join(repr(t) for t in tasks[:3]) + more)
        dropped = [p for p in [*(f"obs/{k}" for k in layout.obs), *layout.top] if p not in key_map]
        if any(len(i.shape) == 4 for i in layout.next_obs.values()):
            dropped.append("the camera frames of each demo's last next_obs (an export repeats the last obs)")
        lines.append(f"drops       {'; '.join(dropped) or 'nothing'}")
        for note in src.notes:
            lines.append(f"note        {note}")
    return lines
