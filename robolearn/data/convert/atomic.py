"""All-or-nothing outputs: write beside the target, rename into place at the end."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from robolearn.data.convert.episode import ConversionError


def remove_path(path: Path) -> None:
    """Delete a file or a directory tree, if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextmanager
def atomic_output(dst: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``dst`` to write into; move it to ``dst`` only on success.

    The temporary path (``.tmp-<id>-<name>`` in the same directory, so the rename never crosses
    file systems, and ending like ``dst`` so writers that look at the suffix see the same one)
    does not exist when yielded: the caller creates a file or a directory there. On
    any exception it is removed and ``dst`` is left as it was. An existing ``dst`` is an error
    unless ``overwrite``; it is then replaced only after the new output is complete.
    """
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise ConversionError(f"{dst} exists; pass --overwrite to replace it")
    if not dst.parent.exists():
        raise ConversionError(f"{dst}: parent directory {dst.parent} does not exist")
    token = uuid.uuid4().hex[:8]
    tmp = dst.parent / f".tmp-{token}-{dst.name}"
    try:
        yield tmp
        if not tmp.exists():
            raise ConversionError(f"{dst}: the converter wrote nothing")
        if dst.exists():
            old = dst.parent / f".old-{token}-{dst.name}"
            os.replace(dst, old)
            os.replace(tmp, dst)
            remove_path(old)
        else:
            os.replace(tmp, dst)
    except BaseException:
        remove_path(tmp)
        raise
