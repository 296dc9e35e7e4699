"""``robolearn collect --env SUITE`` (or ``--env A,B,...``): ``--episodes`` per env into one dataset.

The envs must produce the same features (dtype, shape and element names of every observation and
the action) at the same rate, so their frames share one table; the language suite's envs do by
design. ``meta/info.json`` records the envs (``robolearn.env`` is the list, ``robolearn.env_config``
maps each to its config) and every episode its source env and seed (``env`` and ``seed`` columns of
``meta/episodes``). Seeds count per env: each env starts at seed 0 in a new dataset, and a rerun on
the same ``--out`` continues each env after its own largest seed, so a killed run rerun duplicates
nothing. The envs are collected one after the other, each committed episode by episode.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from robolearn.errors import UserError


def _sub_args(args: argparse.Namespace, env: str) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "env": env})


def _probe(name: str, sub: argparse.Namespace, config: Any) -> tuple[dict, float]:
    """Build ``name`` once: its dataset features and control rate, and check its expert."""
    from robolearn.commands import collect_sources
    from robolearn.envs import make_env
    from robolearn.envs.recording import env_features

    env = make_env(name, config)
    try:
        fps = float((env.metadata or {}).get("render_fps") or getattr(config, "control_hz", 0) or 0)
        if fps <= 0:
            raise UserError(f"{name}: the env reports no control rate (metadata['render_fps'])")
        collect_sources.check_policy(env, config, sub)
        return env_features(env, executed_action=sub.expert_noise > 0), fps
    finally:
        env.close()


def _check_shared(names: tuple[str, ...], features: dict[str, dict], rates: dict[str, float]) -> None:
    from robolearn.data.merge import spec_difference

    first = names[0]
    for name in names[1:]:
        if rates[name] != rates[first]:
            raise UserError(
                f"{first} runs at {rates[first]:g} Hz, {name} at {rates[name]:g} Hz: one dataset has one fps"
            )
        for key in sorted(set(features[first]) | set(features[name])):
            diff = spec_difference(features[first].get(key), features[name].get(key))
            if diff:
                raise UserError(
                    f"feature {key!r} is {diff[0]} in {first}, {diff[1]} in {name}: "
                    "envs collected into one dataset need the same features"
                )


def _open(args: argparse.Namespace, names: tuple[str, ...], configs: dict, features: dict, fps: float):
    """A writer on ``--out``: new, or the existing dataset when it records these envs and configs."""
    from robolearn.config import to_dict
    from robolearn.data.errors import DatasetError
    from robolearn.data.merge import spec_difference
    from robolearn.data.writer import LeRobotWriter
    from robolearn.envs.catalog import robot_type

    env_cfgs = {n: json.loads(json.dumps(to_dict(configs[n]))) for n in names}
    out = args.out
    if not (out.exists() and any(out.iterdir())):
        return LeRobotWriter(out, fps=int(round(fps)), features=features, robot_type=robot_type(configs[names[0]]),
                             env=list(names), env_config=env_cfgs)  # fmt: skip
    try:
        writer = LeRobotWriter.open(out)
    except (DatasetError, FileNotFoundError) as exc:
        raise UserError(f"{out}: cannot append to it ({exc}); choose a new --out") from None
    source = writer.info.get("robolearn") or {}
    if source.get("env") != list(names):
        raise UserError(
            f"{out}: the dataset records env {source.get('env')!r}, this run is {list(names)!r}; choose a new --out"
        )
    recorded = source.get("env_config") or {}
    for name in names:
        old, new = recorded.get(name, {}), env_cfgs[name]
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                raise UserError(
                    f"{out}: {name} was recorded with env config {key}={old.get(key)!r}, this run has "
                    f"{new.get(key)!r}; collect with the same settings or into a new --out"
                )
    for key in sorted(set(writer.features) | set(features)):
        diff = spec_difference(writer.features.get(key), features.get(key))
        if diff:
            raise UserError(f"{out}: feature {key!r} is {diff[0]} there, {diff[1]} here; choose a new --out")
    if writer.env_seeds(names[0]) is None:
        raise UserError(
            f"{out}: its episodes record no seeds, so resuming could repeat them; choose a new --out"
        )
    return writer


def run_many(args: argparse.Namespace, names: tuple[str, ...]) -> int:
    """Collect ``args.episodes`` expert episodes of every env in ``names`` into ``args.out``."""
    from robolearn.commands import collect, collect_sources
    from robolearn.data.writer import LeRobotWriter
    from robolearn.envs import make_env

    if args.teleop:
        raise UserError(
            f"--teleop drives one env; {args.env!r} names {len(names)}: pick one of {', '.join(names)}"
        )
    subs = {n: _sub_args(args, n) for n in names}
    configs = {n: collect._config(subs[n]) for n in names}
    if args.expert:
        from robolearn.envs.expert_plugin import ExpertSpecError, load_factory

        try:
            load_factory(args.expert)
        except ExpertSpecError as exc:
            raise UserError(str(exc)) from None
    probed = {n: _probe(n, subs[n], configs[n]) for n in names}
    features = {n: f for n, (f, _) in probed.items()}
    rates = {n: r for n, (_, r) in probed.items()}
    _check_shared(names, features, rates)
    writer = _open(args, names, configs, features[names[0]], rates[names[0]])
    per_env: dict[str, dict] = {}
    for name in names:
        if writer is None:  # the previous env's _record finalized it
            writer = LeRobotWriter.open(args.out)
        sub = subs[name]
        taken = writer.env_seeds(name) or {}
        try:
            first = collect._first_seed(sub, taken)
        except UserError as exc:  # seeds count per env: say which one clashed
            raise UserError(f"{name}: {exc}") from None
        env = make_env(name, configs[name])
        try:
            per_env[name] = collect._record(
                sub, writer, collect_sources.expert_stream(env, sub, configs[name], first), taken, env=name
            )
        finally:
            env.close()
        writer = None
    return _report(args, names, per_env)


def _report(args: argparse.Namespace, names: tuple[str, ...], per_env: dict[str, dict]) -> int:
    import sys

    attempts = sum(s["attempts"] for s in per_env.values())
    wins = sum(s["success_rate"] * s["attempts"] for s in per_env.values())
    summary = {
        "episodes": sum(s["episodes"] for s in per_env.values()),
        "frames": sum(s["frames"] for s in per_env.values()),
        "success_rate": wins / attempts if attempts else 0.0,
        "seeds": [seed for n in names for seed in per_env[n]["seeds"]],
        "envs": {
            n: {k: per_env[n][k] for k in ("episodes", "frames", "success_rate", "seeds")} for n in names
        },
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    short = []
    for n in names:
        s = per_env[n]
        short.append(f"{n} {s['episodes']} ({100 * s['success_rate']:.1f}% expert success)")
        if s["episodes"] < args.episodes:
            print(f"warning: {n}: only {s['episodes']}/{args.episodes} successful episodes after "
                  f"{s['attempts']} attempts", file=sys.stderr)  # fmt: skip
    print(
        f"collected {summary['episodes']} episodes, {summary['frames']} frames from {len(names)} envs into "
        f"{args.out}: {', '.join(short)}"
    )
    return 1 if any(per_env[n]["episodes"] < args.episodes for n in names) else 0
