"""The ``robolearn`` command: one entry point, one module per subcommand.

Each module in :mod:`robolearn.commands` defines ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; it is imported only when its subcommand runs, so ``robolearn --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> module under robolearn.commands. Only commands that work end to end are listed.
COMMANDS: dict[str, str] = {
    "quickstart": "quickstart",
    "envs": "envs",
    "collect": "collect",
    "convert": "convert",
    "merge": "merge",
    "inspect": "inspect",
    "train": "train",
    "eval": "eval",
    "finetune": "finetune",
    "train-critic": "train_critic",
    "steer": "steer",
    "compose": "compose",
    "bench": "bench",
    "serve": "serve",
    "run": "run",
    "franka-driver": "franka_driver",
    "sim-robot": "sim_robot",
}

_HELP = {
    "quickstart": "run the main job end to end on the embedded default",
    "envs": "list the registered envs: observations, actions, rates, instructions",
    "collect": "record scripted-expert, user-expert or teleoperated episodes",
    "convert": "convert datasets between LeRobot v3.0, zarr, robomimic HDF5 and ROS bags / MCAP",
    "merge": "merge several datasets into one (re-indexed, tasks merged, seeds and envs kept)",
    "inspect": "validate a dataset and print its features, episodes and stats",
    "train": "imitation-learn a policy from a dataset",
    "eval": "closed-loop success rate of a checkpoint in simulation",
    "finetune": "RL fine-tuning: ReinFlow (flow) or DPPO (diffusion) with sparse success rewards",
    "train-critic": "train a Q(s, action chunk) critic offline (Cal-QL or IQL) for V-GPS steering",
    "steer": "evaluate a policy steered by a critic (V-GPS) against it unsteered",
    "compose": "mix two flow or two diffusion checkpoints at every step (GPC) and search the weight",
    "bench": "benchmarks against peers measured in the same run",
    "serve": "serve a checkpoint to robots over openpi's websocket protocol",
    "run": "drive a robot (the real-time sim, or one behind a ROS 1 / Zenoh / ZeroMQ bridge) from a policy server",
    "franka-driver": "drive a real Franka arm (pylibfranka, 1 kHz) behind a ROS 1, Zenoh or ZeroMQ bridge",
    "sim-robot": "the embedded sim in real time behind a ROS 1, Zenoh or ZeroMQ bridge (the sim twin)",
}


from robolearn.errors import UserError  # noqa: E402  (re-exported: commands raise it)

__all__ = ["UserError", "main"]


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robolearn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen subcommand's module is imported (its arguments are needed to parse).
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=_HELP.get(name, ""))
        if name == chosen:
            mod = importlib.import_module(f"robolearn.commands.{module}")
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def _quiet_closed_stdout() -> None:
    """After a reader closed our stdout (``robolearn inspect D | head``): point it at /dev/null so the
    interpreter's final flush does not print a second error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (embedded use, tests)
        pass
    finally:
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; behaves like a Unix tool.

    Exit status: the command's own (0 on success), 2 on bad input (one line naming what is wrong),
    2 also when an optional extra is missing (naming it), 130 on Ctrl-C (one line, no traceback; writers keep what they had committed and leave no
    half-written files), 141 when stdout's reader went away (quietly, as ``yes | head`` does).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), "")
    try:
        args = build_parser(argv).parse_args(argv)
        status = int(args._run(args) or 0)
        sys.stdout.flush()  # here, not at exit, so that a reader that went away is handled below
        return status
    except UserError as exc:
        print(f"robolearn {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"robolearn {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _quiet_closed_stdout()
        return 141
    except ModuleNotFoundError as exc:
        from robolearn.extras import missing_module_message

        message = missing_module_message(exc)
        if message is None:
            raise
        print(f"robolearn {command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
