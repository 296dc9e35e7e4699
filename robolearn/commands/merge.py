"""``robolearn merge IN... OUT``: several LeRobot v3.0 datasets into one (multi-task training data).

Episodes are re-indexed in input order, the tasks table is merged, camera videos are re-encoded,
each episode keeps its seed and source env, and ``info.json`` records the union of the inputs'
envs. Mismatched features, fps, env configs or a seed that two inputs both use are errors naming
both datasets. The output appears only when complete (see :mod:`robolearn.data.merge`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from robolearn.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="input datasets, then the output folder"
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument(
        "--json", type=Path, help='write {"episodes", "frames", "inputs", "envs", "tasks", "seeds"} here'
    )


def run(args: argparse.Namespace) -> int:
    from robolearn.data.convert.episode import ConversionError
    from robolearn.data.merge import MergeError, merge_datasets, summary_json

    if len(args.paths) < 3:
        raise UserError(
            f"expected at least two input datasets and an output, found {len(args.paths)} path(s)"
        )
    *inputs, out = args.paths
    for path in inputs:
        if not (path / "meta" / "info.json").is_file():
            raise UserError(f"{path}: not a LeRobot v3.0 dataset (meta/info.json missing)")
    try:
        summary = merge_datasets(inputs, out, overwrite=args.overwrite, progress=sys.stderr.isatty())
    except (MergeError, ConversionError) as exc:
        raise UserError(str(exc)) from None
    if args.json:
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps(summary_json(summary), indent=2))
        tmp.replace(args.json)
    envs = f", envs {', '.join(summary.envs)}" if summary.envs else ""
    print(
        f"merged {summary.episodes} episodes, {summary.frames} frames from {summary.inputs} datasets into {out} "
        f"({summary.tasks} tasks{envs}{'' if summary.seeds else '; no seeds: not every input records them'})"
    )
    return 0
