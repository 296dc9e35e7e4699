"""Crash-safe file writes: write a temporary file, fsync it, rename it over the target, fsync the folder.

Temporary files live in ``<root>/.robolearn_tmp/`` (same filesystem as the dataset, so ``os.replace`` is
atomic). Anything left there after a crash is garbage and is removed when the dataset is reopened.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_DIRNAME = ".robolearn_tmp"


def tmp_dir(root: Path) -> Path:
    """The dataset's scratch folder (created on demand)."""
    path = Path(root) / TMP_DIRNAME
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_tmp_path(root: Path, name: str) -> Path:
    """A fresh, unused path in the scratch folder whose name ends like ``name`` (keeps the suffix)."""
    return tmp_dir(root) / f"{uuid.uuid4().hex[:12]}-{Path(name).name}"


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit_file(tmp: Path, target: Path) -> None:
    """fsync ``tmp``, rename it onto ``target`` atomically and fsync ``target``'s folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fsync_file(tmp)
    os.replace(tmp, target)
    fsync_dir(target.parent)


@contextmanager
def atomic_path(root: Path, target: Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``target`` atomically, on error it is deleted."""
    tmp = new_tmp_path(root, target.name)
    try:
        yield tmp
        commit_file(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(root: Path, target: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``target`` atomically."""
    with atomic_path(root, target) as tmp:
        write(tmp)


def write_json_atomic(root: Path, target: Path, data: Any) -> None:
    """JSON with 4-space indent and raw UTF-8, as LeRobot writes its metadata."""

    def _write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=4, ensure_ascii=False)

    write_atomic(root, target, _write)
