"""bench/infer.py: the lerobot peer is skipped with a reason when it cannot run; the report's ratios
and table come out of a results dict (no timings asserted)."""

from __future__ import annotations

import importlib.util

import pytest

from robolearn.commands.bench import load_bench


@pytest.fixture
def infer():
    return load_bench("infer")


def test_missing_peer_interpreter_is_a_skip(infer, monkeypatch, tmp_path):
    monkeypatch.setattr(infer, "_LEROBOT_INFER_VENV", tmp_path / "none" / "python")
    monkeypatch.delenv("ROBOLEARN_LEROBOT_INFER_PYTHON", raising=False)
    monkeypatch.setattr(infer.importlib.util, "find_spec", lambda name: None)
    assert "ROBOLEARN_LEROBOT_INFER_PYTHON" in infer._lerobot_case({}, 1, 1)["skipped"]
    monkeypatch.setenv("ROBOLEARN_LEROBOT_INFER_PYTHON", str(tmp_path / "nope"))
    assert "does not exist" in infer._lerobot_case({}, 1, 1)["skipped"]
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'no lerobot here' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("ROBOLEARN_LEROBOT_INFER_PYTHON", str(broken))
    skipped = infer._lerobot_case({"select_action": lambda: [1.0]}, 2, 1)["skipped"]
    assert "exit 3" in skipped and "no lerobot here" in skipped


@pytest.mark.skipif(
    all(importlib.util.find_spec(m) for m in ("lerobot", "torchvision", "diffusers")),
    reason="lerobot's diffusion policy may import here",
)
def test_stage_reports_why_lerobot_cannot_run(infer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "does not import" in infer.stage_lerobot(reps=1, warmup=0, rounds=1)["skipped"]


def test_ratios_and_table(infer, capsys):
    fig = {"p50_ms": 10.0, "p99_ms": 12.0, "n": 6}
    results = {
        "threads": "torch.set_num_threads(1)", "torch": "2", "torch_git": "abc", "setup": "s", "cases": {},
        "lerobot": {
            "select_action": {**fig, "p50_ms": 20.0}, "predict_action_chunk": {**fig, "p50_ms": 15.0},
            "robolearn_select_action": {**fig, "p50_ms": 5.0}, "robolearn_window": dict(fig), "rounds": 2,
            "settings": infer._lerobot_settings(), "normalization": "n", "backbone": "b", "lerobot": "0.4.4",
            "torchvision": "0.28.0", "torch": "2", "torch_git": "abc",
        },
    }  # fmt: skip
    infer._ratios(results)
    assert results["ratios"] == {"select_action_lerobot_over_ddim10": 4.0, "window_lerobot_over_ddim10": 1.5}
    infer._print(results)
    out = capsys.readouterr().out
    assert "4.00x" in out and "num_inference_steps=10" in out and "same torch commit as ours: True" in out
