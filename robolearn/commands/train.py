"""``robolearn train``: imitation-learn a registered policy from a LeRobot v3.0 dataset.

Multi-process / multi-GPU / multi-node: launch the same command through accelerate, e.g.
``accelerate launch --num_processes 2 -m robolearn.cli train --policy flow --dataset D --out RUN``
(each process draws its own slice of every global batch).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from robolearn.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", help="registered policy: flow, diffusion, mlp, vla (overrides the preset's)")
    p.add_argument("--dataset", required=True, type=Path, action="append",
                   help="LeRobot v3.0 dataset folder; repeat it to train on several with identical features "
                        "(each split into train/val on its own, stats combined, instructions merged)")  # fmt: skip
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, logs, final checkpoint)")
    p.add_argument(
        "--preset",
        type=Path,
        help="training preset YAML, e.g. policies/flow_unet_gpu.yaml (default: the policy's measured recipe "
        "for the dataset's observations, policies/<policy>_state.yaml or policies/<policy>_image.yaml)",
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a TrainConfig field, e.g. steps=500 or policy_config.horizon=16")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue from the latest RUN/checkpoints/STEP")


def load_train_config(preset: Path | None, overrides: list[str], policy: str | None):
    from robolearn.config import load_config
    from robolearn.train.config import TrainConfig

    extra = list(overrides) + ([f"policy={policy}"] if policy else [])
    return load_config(TrainConfig, preset, extra)


def resolve_train_config(dataset: Path, preset: Path | None, overrides: list[str], policy: str | None):
    """The run's TrainConfig and where it came from: ``preset`` when given, else the measured default
    recipe for ``policy`` (default flow) on the dataset's observations (see robolearn.train.recipes)."""
    from robolearn.train import recipes

    if preset is not None:
        return load_train_config(preset, overrides, policy), str(preset)
    name = policy or "flow"
    cfg, path, kind = recipes.load_recipe(dataset, name, overrides)
    inputs = cfg.policy_config.get("obs_keys") or "every observation feature"
    print(
        f"train: no --preset given: {kind} observations, so the {name} recipe {path.name} "
        f"({cfg.steps} steps, batch {cfg.batch_size}; inputs: {', '.join(inputs) if isinstance(inputs, list) else inputs})",
        flush=True,
    )
    return cfg, str(path)


def run(args: argparse.Namespace) -> int:
    from robolearn.config import ConfigError
    from robolearn.data.errors import DatasetError
    from robolearn.policies import FeatureMismatchError
    from robolearn.train.trainer import Trainer, TrainingDiverged

    datasets = list(args.dataset) if isinstance(args.dataset, list) else [args.dataset]
    for dataset in datasets:
        if not (dataset / "meta" / "info.json").is_file():
            raise UserError(f"{dataset}: not a LeRobot v3.0 dataset (meta/info.json missing)")
    if len({d.resolve() for d in datasets}) != len(datasets):
        raise UserError(f"--dataset: a dataset is given twice ({', '.join(map(str, datasets))})")
    try:
        cfg, source = resolve_train_config(datasets[0], args.preset, args.overrides, args.policy)
        trainer = Trainer(cfg, datasets, args.out, resume=args.resume, source=source)
        summary = trainer.fit()
    except (ConfigError, FeatureMismatchError, DatasetError, FileExistsError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    except TrainingDiverged as exc:
        raise UserError(f"training diverged: {exc}") from None
    print(
        f"trained {cfg.policy} for {summary.steps} steps in {summary.seconds:.0f}s "
        f"(final loss {summary.final_loss:.4f}); checkpoint: {summary.checkpoint}"
    )
    return 0
