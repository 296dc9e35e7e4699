"""The HTML run report: PNG plots (training curve, success rate, latency) and rollout videos.

A report is a list of sections; later stages (RL fine-tuning, steering) append their own.
Everything is written into one folder with relative links, so it can be zipped or served as is.
"""

from __future__ import annotations

import html
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@dataclass
class Section:
    title: str
    text: str = ""
    images: list[str] = field(default_factory=list)
    """File names (PNG) inside the report folder."""
    videos: list[str] = field(default_factory=list)
    """File names (MP4) inside the report folder."""
    table: dict[str, str] = field(default_factory=dict)
    grid: list[list[str]] = field(default_factory=list)
    """A table with columns: the first row is the header."""


def plot_training_curve(rows: list[dict[str, Any]], path: Path) -> Path:
    train = [(r["step"], r["loss_avg"]) for r in rows if "loss_avg" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=False), label="train loss")
    if val:
        ax.plot(*zip(*val, strict=False), "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Training curve")
    return _save(fig, path)


SUCCESS_COLORS = ("#3a7dc9", "#2f9e6b")
"""Bar colours, cycled: first success, then held success."""


def plot_success(
    labels: list[str], rates: list[float], cis: list[tuple[float, float]], path: Path,
    title: str = "Closed-loop success (95% Wilson interval)",
) -> Path:  # fmt: skip
    """One bar per rate (0-1) with its interval; colours cycle through :data:`SUCCESS_COLORS`."""
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    lows = [100 * (r - lo) for r, (lo, _) in zip(rates, cis, strict=False)]
    highs = [100 * (hi - r) for r, (_, hi) in zip(rates, cis, strict=False)]
    colors = [SUCCESS_COLORS[i % len(SUCCESS_COLORS)] for i in range(len(rates))]
    ax.bar(labels, [100 * r for r in rates], yerr=[lows, highs], capsize=6, color=colors)
    ax.set_ylim(0, 105)
    ax.set_ylabel("success rate (%)")
    ax.set_title(title)
    for i, r in enumerate(rates):
        ax.text(i, 100 * r + 2, f"{100 * r:.0f}%", ha="center")
    return _save(fig, path)


def success_table(result: Any) -> dict[str, str]:
    """Report table rows for both figures of an :class:`robolearn.eval.evaluate.EvalResult`."""

    def rate(r: float, ci: tuple[float, float]) -> str:
        return f"{100 * r:.1f}% (95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f}%, {result.episodes} episodes)"

    return {
        "success rate (first success)": rate(result.success_rate, result.ci95),
        f"success rate (held {result.hold_steps} steps past it)": rate(
            result.held_success_rate, result.held_ci95
        ),
    }


def plot_eval_success(result: Any, path: Path, title: str) -> Path:
    """Both figures of an ``EvalResult`` side by side (first success, held)."""
    labels = ["first success", f"held {result.hold_steps} steps"]
    return plot_success(labels, [result.success_rate, result.held_success_rate], [result.ci95, result.held_ci95],
                        path, title)  # fmt: skip


def plot_latency(latency_ms: dict[str, float], path: Path, title: str = "Policy latency per call") -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    keys = [k for k in ("p50", "p99") if k in latency_ms]
    ax.bar(keys, [latency_ms[k] for k in keys], color="#d9822b")
    for i, k in enumerate(keys):
        ax.text(i, latency_ms[k], f"{latency_ms[k]:.2f} ms", ha="center", va="bottom")
    ax.set_ylabel("ms")
    ax.set_title(title)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(folder: str | Path, title: str, sections: list[Section]) -> Path:
    """Write ``folder/index.html`` (atomically) linking the sections' files, which must be in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}"
        "img,video{max-width:100%;border:1px solid #ddd;margin:.5em 0}table{border-collapse:collapse}"
        "td,th{padding:.2em .8em;border-bottom:1px solid #eee;text-align:left}h2{margin-top:1.6em}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for s in sections:
        parts.append(f"<section><h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p>{html.escape(s.text)}</p>")
        if s.grid:
            head = "".join(f"<th>{html.escape(c)}</th>" for c in s.grid[0])
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in s.grid[1:]
            )
            parts.append(f"<table class='grid'><tr>{head}</tr>{body}</table>")
        if s.table:
            rows = "".join(
                f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in s.table.items()
            )
            parts.append(f"<table>{rows}</table>")
        for img in s.images:
            parts.append(f"<img src='{html.escape(img)}' alt='{html.escape(Path(img).stem)}'>")
        for vid in s.videos:
            parts.append(
                f"<video controls muted loop playsinline preload='auto' src='{html.escape(vid)}'></video>"
            )
        parts.append("</section>")
    parts.append("</body></html>")
    tmp = folder / ".index.html.tmp"
    tmp.write_text("\n".join(parts))
    os.replace(tmp, folder / "index.html")
    return folder / "index.html"


def copy_into(folder: Path, src: str | Path) -> str:
    """Copy ``src`` into the report folder; returns its name there."""
    src = Path(src)
    shutil.copyfile(src, folder / src.name)
    return src.name
