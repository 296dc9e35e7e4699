"""Training logs: ``metrics.jsonl`` (what the report plots), TensorBoard, optional wandb."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append-only metric rows; a resumed run drops rows past its resume step first."""

    def __init__(self, run: Path, enabled: bool = True, wandb: bool = False, resume_step: int = 0):
        self.enabled = enabled
        self.path = run / "metrics.jsonl"
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        if self.path.exists():
            keep = [
                ln
                for ln in self.path.read_text().splitlines()
                if ln and json.loads(ln)["step"] <= resume_step
            ]
            self.path.write_text("".join(ln + "\n" for ln in keep))
        self._file = self.path.open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run / "tensorboard"), purge_step=resume_step or None)
        except ImportError:  # tensorboard is optional
            self._tb = None
        if wandb:
            import wandb as wb

            self._wandb = wb.init(project="robolearn", dir=str(run), resume="allow")

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        step = row["step"]
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                if self._tb is not None:
                    self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(row, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    path = Path(run) / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln] if path.exists() else []
