"""``robolearn convert IN OUT --to lerobot|zarr|robomimic``: move datasets between formats.

Inputs: LeRobot v3 directories, diffusion_policy zarr (directory or .zip), robomimic HDF5, ROS 1
``.bag``, ROS 2 bag directories (``.db3`` / ``.mcap``) and bare ``.mcap`` files (with ``--mapping``).
"""

from __future__ import annotations

import argparse
import sys

HELP = "convert datasets between LeRobot v3, zarr, robomimic HDF5 (and import ROS bags / MCAP)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``convert`` options."""
    from robolearn.data.convert.detect import FORMATS, OUTPUT_FORMATS

    parser.add_argument("input", help="dataset to read (format detected from its content)")
    parser.add_argument("output", help="path to create (a .zip output makes a zipped zarr)")
    parser.add_argument("--to", required=True, choices=OUTPUT_FORMATS, help="output format")
    parser.add_argument("--from", dest="from_format", choices=FORMATS, help="force the input format")
    parser.add_argument(
        "--mapping",
        help="ROS inputs: topic mapping YAML (see datasets/ros_franka_mapping.yaml); LIBERO files: feature "
        "mapping YAML (default datasets/libero_mapping.yaml)",
    )
    parser.add_argument("--fps", type=float, help="frame rate, for zarr/robomimic inputs that record none")
    parser.add_argument("--task", help="language instruction, for inputs that record none")
    parser.add_argument(
        "--state-keys",
        help="robomimic inputs: comma-separated obs keys concatenated into observation.state "
        "(default robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos)",
    )
    parser.add_argument("--filter-key", help="robomimic inputs: convert only the demos in mask/<KEY>")
    parser.add_argument(
        "--val-fraction",
        type=float,
        help="robomimic outputs: share of episodes in mask/valid when the input records no split "
        "(default 0.05, the episodes robolearn train holds out)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or details")


def run(args: argparse.Namespace) -> int:
    """Convert, print the per-stream details (ROS alignment, guesses made) and a one-line summary."""
    from robolearn.cli import UserError
    from robolearn.data.convert import ConversionError, ConvertOptions, convert

    options = ConvertOptions(
        fps=args.fps,
        task=args.task,
        mapping=args.mapping,
        state_keys=tuple(k.strip() for k in args.state_keys.split(",") if k.strip())
        if args.state_keys
        else None,
        filter_key=args.filter_key,
        val_fraction=args.val_fraction,
    )
    if args.val_fraction is not None and not 0.0 <= args.val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in [0, 1), found {args.val_fraction}")
    try:
        summary = convert(
            args.input,
            args.output,
            args.to,
            from_format=args.from_format,
            options=options,
            overwrite=args.overwrite,
            progress=not args.quiet and sys.stderr.isatty(),
        )
    except ConversionError as exc:
        raise UserError(str(exc)) from exc
    if not args.quiet:
        for note in summary.notes:
            print(f"  {note}")
    print(summary.line())
    return 0
