"""Registry, strict config, CLI wiring and the top-level layout rules."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from robolearn.config import ConfigError, from_dict, load_config
from robolearn.envs import ENVS, env_config
from robolearn.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Inner:
    rate: float = 1.0


@dataclass
class Outer:
    name: str = "x"
    steps: int = 3
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, int] = (1, 2)
    inner: Inner = field(default_factory=Inner)


def test_config_types_and_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("steps: 5\ninner:\n  rate: 2\nsizes: [3, 4]\n")
    cfg = load_config(Outer, preset, ["mode=b", "inner.rate=0.5"])
    assert cfg == Outer(steps=5, mode="b", sizes=(3, 4), inner=Inner(rate=0.5))
    # YAML 1.1 reads 1e-4 (no dot) as a string; a float field still takes it
    assert load_config(Outer, None, ["inner.rate=1e-4"]).inner.rate == 1e-4
    preset.write_text("inner:\n  rate: 3E+2\n")
    assert load_config(Outer, preset).inner.rate == 300.0


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("stepz: 5\n", "unknown key 'stepz'"),
        ("steps: five\n", "steps: expected int, found 'five'"),
        ("mode: c\n", "mode: expected one of 'a', 'b'"),
        ("inner:\n  rte: 1\n", "unknown key 'inner.rte'"),
        ("sizes: [1]\n", "sizes: expected 2 items"),
        ("steps: true\n", "steps: expected int"),
        ("inner:\n  rate: fast\n", "inner.rate: expected float, found 'fast'"),
    ],
)
def test_config_errors_name_key_and_file(tmp_path, yaml_text, message):
    preset = tmp_path / "bad.yaml"
    preset.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(Outer, preset)
    assert str(preset) in str(err.value)


def test_env_presets_load_strictly():
    for preset in sorted((ROOT / "envs").glob("franka-*.yaml")):
        name = "franka-" + preset.stem.removeprefix("franka-").removesuffix("-cameras")
        cfg = env_config(name, preset)
        assert cfg.task == name.removeprefix("franka-")
    with pytest.raises(ConfigError, match="unknown key 'camras'"):
        from_dict(type(env_config("franka-lift")), {"camras": []}, source="x.yaml")


def test_registry_lazy_and_errors():
    reg = Registry("thing")
    reg.register("a", Inner, "robolearn.envs.franka.env:FrankaEnv")
    assert reg.names() == ["a"] and "a" in reg
    with pytest.raises(KeyError, match="unknown thing 'b'; registered: a"):
        reg.get("b")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", Inner, "x:y")
    # Listing envs must not import mujoco (heavy code is imported lazily).
    code = "import sys, robolearn.envs as e; e.ENVS.names(); print('mujoco' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert "franka-lift" in ENVS


def test_top_level_folders_are_not_packages():
    for folder in ("envs", "datasets", "policies", "deploy", "hardware", "bench"):
        assert not (ROOT / folder / "__init__.py").exists(), folder


def test_import_datasets_resolves_to_hugging_face():
    """Our top-level ``datasets/`` folder must never shadow Hugging Face's library, even from the repo root."""
    pytest.importorskip("datasets", reason="the dev extra installs Hugging Face datasets for this check")
    code = "import datasets; print(datasets.__file__); print(hasattr(datasets, 'load_dataset'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    origin, has_api = out.stdout.split()
    assert "site-packages" in origin and not origin.startswith(str(ROOT / "datasets"))
    assert has_api == "True"


def test_cli_help_lists_only_working_commands():
    out = subprocess.run(
        [sys.executable, "-m", "robolearn.cli", "--help"], capture_output=True, text=True, check=True
    )
    for cmd in ("quickstart", "collect", "bench"):
        assert cmd in out.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "robolearn.cli",
            "collect",
            "--env",
            "franka-nope",
            "--out",
            "/tmp/x",
            "--episodes",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown env 'franka-nope'" in bad.stderr
