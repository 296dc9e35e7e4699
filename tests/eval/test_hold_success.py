"""The two success figures: first success, and success still held ``hold_steps`` later."""

from __future__ import annotations

import json

import pytest

from robolearn.cli import main
from robolearn.envs import env_config
from robolearn.eval.evaluate import evaluate
from robolearn.eval.metrics import wilson_interval


def test_reach_then_leave_counts_first_but_not_held(scripted_reach):
    res = evaluate(scripted_reach(leave=True), "franka-reach", episodes=3, num_envs=2, hold_steps=5,
                   progress=False)  # fmt: skip
    assert res.success_rate == 1.0 and res.held_success_rate == 0.0
    assert res.ci95 == wilson_interval(3, 3) and res.held_ci95 == wilson_interval(0, 3)
    assert res.hold_steps == 5
    for ep in res.per_episode:
        assert ep.success and not ep.held
        assert ep.first_success_step is not None and ep.length == ep.first_success_step + 5


def test_reach_and_stay_is_held(scripted_reach):
    res = evaluate(scripted_reach(leave=False), "franka-reach", episodes=3, num_envs=2, hold_steps=5,
                   progress=False)  # fmt: skip
    assert res.success_rate == 1.0 and res.held_success_rate == 1.0
    assert all(ep.held and ep.length == ep.first_success_step + 5 for ep in res.per_episode)


def test_hold_steps_zero_stops_at_first_success(scripted_reach):
    res = evaluate(scripted_reach(leave=True), "franka-reach", episodes=2, num_envs=1, hold_steps=0,
                   progress=False)  # fmt: skip
    assert res.success_rate == res.held_success_rate == 1.0
    assert all(ep.held and ep.length == ep.first_success_step for ep in res.per_episode)


def test_env_cap_ends_the_hold_early(scripted_reach):
    # A cap past the first success but short of the hold: the cap's step judges "held".
    full = evaluate(scripted_reach(leave=False), "franka-reach", episodes=2, hold_steps=0, progress=False)
    cap = max(ep.first_success_step for ep in full.per_episode) + 2
    cfg = env_config("franka-reach", max_episode_steps=cap)
    res = evaluate(
        scripted_reach(leave=False), "franka-reach", cfg, episodes=2, hold_steps=50, progress=False
    )
    assert res.held_success_rate == 1.0 and all(ep.length == cap for ep in res.per_episode)


def test_env_config_keeps_terminate_on_success_from_ending_the_hold(scripted_reach):
    cfg = env_config("franka-reach", terminate_on_success=True)
    res = evaluate(scripted_reach(leave=True), "franka-reach", cfg, episodes=1, hold_steps=4, progress=False)
    assert cfg.terminate_on_success  # the caller's config is not modified
    ep = res.per_episode[0]
    assert ep.success and not ep.held and ep.length == ep.first_success_step + 4


def test_negative_hold_steps_rejected(scripted_reach):
    with pytest.raises(ValueError, match="hold_steps"):
        evaluate(scripted_reach(leave=True), "franka-reach", episodes=1, hold_steps=-1, progress=False)


def test_eval_cli_reports_both_figures(lift_dataset, tmp_path, capsys):
    from robolearn.train.config import TrainConfig
    from robolearn.train.trainer import Trainer

    run = tmp_path / "run"
    cfg = TrainConfig(policy="flow", policy_config={"denoiser": {"kind": "mlp", "mlp_dims": [32, 32]}},
                      steps=2, batch_size=8, save_every=2, log_every=1)  # fmt: skip
    Trainer(cfg, lift_dataset, run, progress=False).fit()
    out = tmp_path / "eval.json"
    rc = main(["eval", "--checkpoint", str(run), "--env", "franka-lift", "--episodes", "2", "--hold-steps", "7",
               "--set", "max_episode_steps=12", "--json", str(out)])  # fmt: skip
    assert rc == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("franka-lift: first success ") and " held 7 steps " in line
    data = json.loads(out.read_text())
    assert set(data) >= {"success_rate", "ci95", "held_success_rate", "held_ci95", "hold_steps", "episodes",
                         "mean_return", "latency_ms", "per_episode"}  # fmt: skip
    assert data["hold_steps"] == 7 and data["episodes"] == 2 and len(data["held_ci95"]) == 2
    for ep in data["per_episode"]:
        assert set(ep) >= {"seed", "success", "held", "first_success_step", "length", "ret"}
        assert ep["length"] <= 12
    assert main(["eval", "--checkpoint", str(run), "--env", "franka-lift", "--hold-steps", "-1"]) == 2
    assert "--hold-steps must be >= 0" in capsys.readouterr().err
