"""``robolearn envs``: list the registered envs, what they observe and accept, and how fast they run.

Each env is built once with its default config (``--set`` overrides apply with a NAME) to read its
real observation and action spaces; element names come from the config (see
:mod:`robolearn.envs.catalog`). An env whose optional extra is missing is listed from the registry
alone, with a one-line note.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from robolearn.cli import UserError
from robolearn.types import ACTION, OBS_ENV_STATE, OBS_STATE, STATE_NAMES, is_image_key

WIDTH = 100
STATE_SHORT = "q1..q7 dq1..dq7 gripper_width tcp_x tcp_y tcp_z tcp_qw tcp_qx tcp_qy tcp_qz"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="show one env in detail (every element name, every config field)")
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        type=str,
        metavar="FILE",
        help="also write the listing as JSON to FILE; without FILE, print only the JSON",
    )
    p.add_argument("--preset", type=Path, help="with NAME: env preset YAML applied to its config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="with NAME: override a config field (repeatable)")  # fmt: skip


def _extra_hint(module: str) -> str:
    """``pip install`` hint for a missing module when a robolearn extra of that name exists."""
    from importlib import metadata

    try:
        extras = set(metadata.metadata("robolearn").get_all("Provides-Extra") or [])
    except metadata.PackageNotFoundError:
        extras = set()
    extra = module.replace("_", "-")
    return f"; install the robolearn[{extra}] extra" if extra in extras else ""


def _wrap(label: str, words: list[str], indent: int) -> list[str]:
    text = " ".join(words)
    return textwrap.wrap(text, WIDTH, initial_indent=label, subsequent_indent=" " * indent) or [label]


def _shape(feature) -> str:
    return "(" + ", ".join(str(s) for s in feature.shape) + ("," if len(feature.shape) == 1 else "") + ")"


def _rate_line(info) -> str:
    parts = [f"robot {info.robot_type or 'unknown'}"]
    if info.control_hz:
        parts.append(f"{info.control_hz:g} Hz")
    if info.max_episode_steps:
        parts.append(f"{info.max_episode_steps} steps per episode")
    if not info.not_installed:
        parts.append(f"expert {info.expert}" if info.expert else "no shipped expert (collect --expert)")
    return "  " + ", ".join(parts)


def _ordered(features: list) -> list:
    """State first, then environment state, cameras, anything else, and the action last."""
    rank = {OBS_STATE: 0, OBS_ENV_STATE: 1, ACTION: 4}
    return sorted(features, key=lambda f: (rank.get(f.key, 2 if is_image_key(f.key) else 3), f.key))


def _summary(info) -> list[str]:
    lines = [f"{info.name}: {info.description}" if info.description else info.name, _rate_line(info)]
    if info.not_installed:
        lines.append(f"  not installed (no module {info.not_installed!r}{_extra_hint(info.not_installed)})")
        return lines
    if info.instruction:
        lines.append(f"  instruction: {info.instruction}")
    features = _ordered(info.features)
    key_w = max(len(f.key) for f in features) + 2
    type_w = max(len(f"{f.dtype} {_shape(f)}") for f in features) + 2
    for f in features:
        label = f"  {f.key:<{key_w}}{f'{f.dtype} {_shape(f)}':<{type_w}}"
        # The 22-D state is the same in every env: abbreviate it here (NAME shows every element).
        words = [STATE_SHORT] if f.names == STATE_NAMES else list(f.names or [])
        if f.low is not None and f.high is not None:
            words.append(f"in [{f.low:g}, {f.high:g}]")
        lines.extend(_wrap(label, words, len(label)))
    return lines


def _detail(info) -> list[str]:
    lines = [f"{info.name}: {info.description}", _rate_line(info)]
    if info.not_installed:
        lines.append(f"  not installed (no module {info.not_installed!r}{_extra_hint(info.not_installed)})")
    if info.instruction:
        lines.append(f"  instruction: {info.instruction}")
    lines.append("config (change with --set KEY=VALUE):")
    lines.extend(f"  {k} = {json.dumps(v)}" for k, v in info.config.items())
    for f in _ordered(info.features):
        bounds = f" in [{f.low:g}, {f.high:g}]" if f.low is not None and f.high is not None else ""
        lines.append(f"{f.key}: {f.dtype} {_shape(f)}{bounds}")
        lines.extend(f"  {i:>3}  {n}" for i, n in enumerate(f.names or []))
    return lines


def run(args: argparse.Namespace) -> int:
    from robolearn.config import ConfigError
    from robolearn.envs import ENVS, SUITES, env_config
    from robolearn.envs.catalog import describe

    if args.name is None and (args.preset or args.overrides):
        raise UserError("--preset and --set need an env NAME")
    suite = SUITES.get(args.name) if args.name in SUITES else None
    names = list(suite.envs) if suite else [args.name] if args.name else ENVS.names()
    detail = bool(args.name) and suite is None
    infos = []
    for name in names:
        try:
            config = env_config(name, args.preset, args.overrides)
        except (ConfigError, KeyError, ValueError) as exc:
            raise UserError(str(exc).strip("'\"")) from None
        info = describe(name, config)
        infos.append(info)
        if args.json != "-":
            print("\n".join(_detail(info) if detail else _summary(info)), flush=True)
            if not detail:
                print()
    if args.json != "-" and not detail:
        shown = [suite] if suite else [SUITES.get(n) for n in SUITES.names()]
        if shown:
            print("suites (collect, train and eval take one name for all its envs):")
        for s in shown:
            print(f"  {s.name}: {', '.join(s.envs)}" + (f" ({s.description})" if s.description else ""))
    if args.json is not None:
        text = json.dumps({i.name: i.to_json() for i in infos}, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
            print(f"wrote {len(infos)} envs to {args.json}", file=sys.stderr)
    return 0
