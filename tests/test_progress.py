"""The one progress helper: plain lines off a terminal, a live bar on one."""

from __future__ import annotations

import io

from robolearn.progress import PlainProgress, format_duration, progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_carry_count_rate_and_eta(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("robolearn.progress.time.perf_counter", lambda: clock[0])
    out = io.StringIO()
    bar = PlainProgress(total=1000, desc="train flow", unit="step", file=out, interval=5.0)
    for _ in range(1000):
        clock[0] += 0.125  # 8 steps/s: 125 s in all
        bar.update(1)
    bar.set_postfix(loss="0.0100")
    bar.close()
    lines = out.getvalue().splitlines()
    # One line per 5 s (25 in 125 s) plus the final one; never one per update.
    assert 24 <= len(lines) <= 27
    assert lines[0] == "train flow: 40/1000 step (4%) 8 step/s, ETA 2m00s"
    assert lines[-1].startswith("train flow: 1000/1000 step (100%)")
    assert "took" in lines[-1] and lines[-1].endswith("loss=0.0100")
    assert "\r" not in out.getvalue()


def test_plain_progress_wraps_iterables_and_keeps_items():
    out = io.StringIO()
    items = list(progress(range(7), desc="x", unit="ep", file=out))
    assert items == list(range(7))
    assert out.getvalue().splitlines()[-1].startswith("x: 7/7 ep")


def test_terminal_gets_a_live_bar_and_disabled_prints_nothing():
    tty = _Tty()
    bar = progress(total=5, desc="live", file=tty)
    assert type(bar).__name__ == "tqdm"
    bar.update(5)
    bar.close()
    assert "\r" in tty.getvalue()

    quiet = io.StringIO()
    with progress(total=5, desc="off", file=quiet, enabled=False) as bar:
        bar.update(5)
    assert quiet.getvalue() == ""


def test_format_duration():
    assert format_duration(9.54) == "9.5s"
    assert format_duration(75) == "1m15s"
    assert format_duration(3725) == "1h02m"
    assert format_duration(float("inf")) == "?"
