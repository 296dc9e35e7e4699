"""A tiny scripted-expert dataset shared by the trainer and eval tests."""

from __future__ import annotations

import argparse

import pytest


@pytest.fixture(scope="session")
def lift_dataset(tmp_path_factory):
    from robolearn.commands import collect

    out = tmp_path_factory.mktemp("lift") / "ds"
    args = argparse.Namespace(env="franka-lift", episodes=6, out=out, cameras="", image_size="96x96", preset=None,
                              overrides=[], seed=0, workers=1, keep_failed=False, teleop=None, json=None)  # fmt: skip
    assert collect.run(args) == 0
    return out
