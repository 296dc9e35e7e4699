"""A short closed loop: ``robolearn serve`` a trained reach policy, ``robolearn run`` the sim robot on it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _run(url: str, tmp_path, *extra: str) -> tuple[dict, subprocess.CompletedProcess]:
    out = tmp_path / "run.json"
    cmd = [sys.executable, "-m", "robolearn.cli", "run", "--server", url, "--task", "franka-reach",
           "--episodes", "5", "--json", str(out), "--request-timeout", "10", *extra]  # fmt: skip
    # (a 10 s request timeout: on a loaded 2-core CI machine a slow reply is not a stalled server)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc


@pytest.mark.parametrize(
    "extra", [("--record", "REC"), ("--merge", "ensemble", "--rtc")], ids=["latest+record", "ensemble+rtc"]
)
def test_trained_policy_succeeds_through_serve_and_run(
    reach_flow_run, serve_process, unused_port, tmp_path, extra
):
    server = serve_process(reach_flow_run, unused_port).start()
    rec = tmp_path / "rec"
    extra = tuple(str(rec) if x == "REC" else x for x in extra)
    summary, proc = _run(server.url, tmp_path, *extra)
    assert summary["episodes"] == 5 and summary["faults"] == 0, (summary["rtt_ms"], proc.stdout[-1500:])
    assert summary["success_rate"] >= 0.8, summary["per_episode"]
    assert [e["seed"] for e in summary["per_episode"]] == list(range(1_000_000, 1_000_005))
    assert summary["rtt_ms"]["p50"] > 0 and summary["jitter"]["ticks"] > 0
    assert summary["rtc"] == ("--rtc" in extra)
    assert "first success" in proc.stdout and "jitter" in proc.stdout
    if "--record" in extra:
        from robolearn.data.reader import LeRobotReader

        ds = LeRobotReader(rec)
        assert ds.num_episodes == 5
        lengths = [e["steps"] for e in summary["per_episode"]]
        assert ds.num_frames == sum(lengths)
        info = json.loads((rec / "meta" / "info.json").read_text())
        assert info["robolearn"]["env"] == "franka-reach" and info["fps"] == 20


def test_run_bad_input_is_one_line(unused_port, tmp_path, capsys):
    from robolearn.cli import main

    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("")
    cases = [
        (["--server", "http://x", "--task", "franka-reach"], "--server must be a ws://"),
        (["--server", "ws://127.0.0.1:1", "--task", "franka-nope"], "--task: unknown env 'franka-nope'"),
        (
            ["--server", f"ws://127.0.0.1:{unused_port}", "--connect-timeout", "0.3"],
            "no policy server answered",
        ),
        (["--server", "ws://127.0.0.1:1", "--record", str(full)], "exists and is not empty"),
        (["--server", "ws://127.0.0.1:1", "--episodes", "0"], "--episodes must be >= 1"),
    ]
    for argv, message in cases:
        assert main(["run", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
