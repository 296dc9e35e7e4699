"""The main job end to end at toy scale, and its report rendered in headless Chromium; the RL stages
(``--stages all``) at toy scale, their report rows checked against the JSON files they wrote."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import pytest

from robolearn.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_quickstart_pipeline_and_report_renders(tmp_path, capsys):
    report = tmp_path / "report"
    rc = main(["quickstart", "--episodes", "4", "--train-steps", "6", "--eval-episodes", "2",
               "--out", str(tmp_path / "work"), "--report", str(report), "--threads", "1"])  # fmt: skip
    assert rc == 0
    index = report / "index.html"
    assert index.is_file()
    # The default stages are the imitation job alone: four stages, no RL outputs or rows.
    printed = capsys.readouterr().out
    assert re.findall(r"^== (\d+/\d+)", printed, re.M) == ["1/4", "2/4", "3/4", "4/4"]
    assert "fine-tuned" not in index.read_text() and "steered" not in printed
    assert "<td>time: total</td>" in index.read_text()
    assert not (tmp_path / "work" / "rl.json").exists() and not (tmp_path / "work" / "weak").exists()
    for png in ("training_curve.png", "success_rate.png", "latency.png"):
        assert (report / png).stat().st_size > 1000
    videos = list((report / "videos").glob("*.mp4"))
    assert len(videos) == 1
    if CHROMIUM is None:
        pytest.skip("chromium not installed (./bootstrap dev installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        try:
            page = browser.new_page()
            page.goto(Path(index).resolve().as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
            assert len(images) == 3 and all(done and width > 100 for done, width in images), images
            page.wait_for_function("document.querySelector('video').readyState >= 2", timeout=20000)
            width = page.eval_on_selector("video", "v => v.videoWidth")
            assert width > 100
            assert "success" in page.inner_text("body").lower()
        finally:
            browser.close()


TINY_RL = ["--weak-steps", "4", "--weak-checkpoint", "2", "--rl-eval-episodes", "2", "--finetune-iterations", "1",
           "--finetune-set", "n_steps=2", "--finetune-set", "num_envs=1", "--record-episodes", "2",
           "--critic-steps", "5", "--samples", "2"]  # fmt: skip


def _grid_rows(page: str) -> dict[str, list[str]]:
    """Report grid rows by their first cell, unescaped."""
    rows = {}
    for tr in re.findall(r"<tr>(.*?)</tr>", page):
        cells = [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", tr)]
        if cells:
            rows[cells[0]] = cells[1:]
    return rows


def test_quickstart_all_stages_rows_match_their_json(tmp_path, capsys):
    work, report = tmp_path / "work", tmp_path / "report"
    rc = main(["quickstart", "--stages", "all", "--episodes", "4", "--train-steps", "6", "--eval-episodes", "2",
               "--out", str(work), "--report", str(report), "--threads", "1", *TINY_RL])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert re.findall(r"^== (\d+)/11", printed, re.M) == [str(i) for i in range(1, 12)]
    data = json.loads((work / "rl.json").read_text())
    evals = {k: json.loads((work / f"eval_{k}.json").read_text()) for k in ("weak", "finetuned", "steered")}
    ft, st = data["fine-tuned"], data["steered"]
    # Each row's figures are those of the evaluation files, before from the same start for both rows.
    for row, before, after in ((ft, "weak", "finetuned"), (st, "weak", "steered")):
        for key in ("success_rate", "held_success_rate", "ci95", "held_ci95", "episodes", "latency_ms"):
            assert row["before"][key] == evals[before][key] and row["after"][key] == evals[after][key], key
        assert row["after"]["episodes"] == 2
    # The same seeds for before and after; the critic's rollouts on seeds disjoint from them.
    seeds = {k: [e["seed"] for e in v["per_episode"]] for k, v in evals.items()}
    assert sorted(seeds["weak"]) == sorted(seeds["finetuned"]) == sorted(seeds["steered"])
    recorded = [e["seed"] for e in json.loads((work / "eval_record.json").read_text())["per_episode"]]
    assert len(recorded) == 2 and min(recorded) >= 2_000_000 and not set(recorded) & set(seeds["weak"])
    # The fine-tuning run took one iteration and left a plain checkpoint; its env steps are the run's own.
    ckpt = work / "finetune" / "checkpoints" / "1"
    state = json.loads((ckpt / "training_state" / "rl_state.json").read_text())
    assert ft["iterations"] == 1 and ft["env_steps"] == state["env_steps"] > 0
    for folder in (ckpt, work / "finetune", work / "critic"):
        assert (folder / "model.safetensors").is_file(), folder
    assert st["samples"] == 2 and st["critic_algo"] == "iql"
    assert st["added_latency_ms_p50"] == pytest.approx(
        evals["steered"]["latency_ms"]["p50"] - evals["weak"]["latency_ms"]["p50"]
    )
    assert set(data["timings"]) == {"weak train", "weak eval", "fine-tune", "fine-tuned eval", "record", "critic",
                                    "steered eval"}  # fmt: skip

    def change(row, key):
        return f"{100 * row['before'][key]:.1f}% → {100 * row['after'][key]:.1f}%"

    page = (report / "index.html").read_text()
    rows = _grid_rows(page)
    for name, row in (("fine-tuned", ft), ("steered", st)):
        assert rows[name][:2] == [change(row, "success_rate"), change(row, "held_success_rate")], rows[name]
    assert f"{ft['env_steps']:,} env steps" in rows["fine-tuned"][2]
    assert "K=2" in rows["steered"][2] and f"{st['added_latency_ms_p50']:+.2f} ms" in rows["steered"][2]
    for stage in [*data["timings"], "total (imitation and RL stages)"]:
        assert f"time: {stage}" in rows
    assert (report / "rl_success.png").stat().st_size > 1000
    # The final summary prints both rows with the same figures.
    summary = printed[printed.index("quickstart done") :]
    for name, row in (("fine-tuned", ft), ("steered", st)):
        line = next(ln for ln in summary.splitlines() if ln.strip().startswith(name))
        assert f"first {change(row, 'success_rate')}, held {change(row, 'held_success_rate')}" in line


def test_quickstart_all_stages_rejects_overlapping_record_seeds(tmp_path, capsys):
    rc = main(["quickstart", "--stages", "all", "--record-seed", "1000050", "--out", str(tmp_path / "w"),
               "--report", str(tmp_path / "r")])  # fmt: skip
    assert rc == 2
    assert "--record-seed 1000050" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
