"""``robolearn train-critic``: an offline Q(s, a_chunk) critic for V-GPS steering (Cal-QL or IQL).

Trains on any LeRobot v3.0 datasets with ``next.success`` (demos from ``collect``, rollouts from
``eval --record``), with the sparse success reward; DART demos contribute their executed actions
(``action.executed``). ``--set key=value`` overrides a :class:`robolearn.rl.critic.CriticConfig`
field (``steps``, ``chunk``, ``discount``, ``cql_alpha``, ``reward`` ...). The output is a critic
folder (``config.json`` + ``model.safetensors`` + ``norm_stats.json``) that ``eval --critic``,
``steer`` and ``serve --critic`` load.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from robolearn.errors import UserError

HELP = "train a Q(s, action chunk) critic offline (Cal-QL or IQL) for V-GPS steering"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, action="append", type=Path,
                   help="dataset folder (repeatable: demos plus eval --record rollouts)")  # fmt: skip
    p.add_argument("--out", required=True, type=Path, help="critic folder to write")
    p.add_argument("--algo", choices=["calql", "iql"], help="offline RL algorithm (default calql)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a critic config field, e.g. steps=2000")  # fmt: skip
    p.add_argument("--json", type=Path, help="write the training summary here")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")


def run(args: argparse.Namespace) -> int:
    import torch

    from robolearn.config import ConfigError, load_config
    from robolearn.data.errors import DatasetError
    from robolearn.rl.critic import CriticConfig
    from robolearn.rl.critic_train import train_critic

    torch.set_num_threads(args.threads)
    for root in args.dataset:
        if not (root / "meta" / "info.json").is_file():
            raise UserError(f"--dataset {root}: not a dataset (no meta/info.json)")
    overrides = list(args.overrides) + ([f"algo={args.algo}"] if args.algo else [])
    try:
        config = load_config(CriticConfig, overrides=overrides)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    try:
        _, summary = train_critic(args.dataset, config, out=args.out)
    except (ValueError, DatasetError, KeyError) as exc:
        raise UserError(str(exc).strip("'\"")) from None
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    ranks = ""
    if "q_success_episodes" in summary and "q_failed_episodes" in summary:
        ranks = (f", mean Q of chunks from successful episodes {summary['q_success_episodes']:.3f} vs failed "
                 f"{summary['q_failed_episodes']:.3f}")  # fmt: skip
    print(
        f"critic ({config.algo}, {config.steps} steps) on {summary['transitions']} chunk transitions from "
        f"{summary['episodes']} episodes written to {args.out}{ranks}"
    )
    return 0
