"""The one atomic writer: a reader never sees half a file, and a killed run leaves only a temporary.

Every write goes to a temporary file beside the target (``.NAME.fr-shield-part-PID``: one per
process, so concurrent jobs writing the same cache never share one), is flushed to disk, then
renamed over the target. ``remove_stale_parts`` clears what a killed run left behind.
"""

from __future__ import annotations

import os
from pathlib import Path

PART_MARK = ".fr-shield-part-"


def part_path(target: Path) -> Path:
    return target.with_name(f".{target.name}{PART_MARK}{os.getpid()}")


def is_part_file(path: Path) -> bool:
    return path.name.startswith(".") and PART_MARK in path.name


def write_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a temporary file and a rename; no half file, ever."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = part_path(target)
    try:
        with open(partial, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    finally:
        if partial.exists():
            partial.unlink()


def remove_stale_parts(folder: Path) -> list[Path]:
    """Temporary files left by a run that was killed (SIGKILL, power cut): removed before resuming."""
    removed = []
    if folder.is_dir():
        for path in folder.rglob(f"*{PART_MARK}*"):
            if path.is_file() and is_part_file(path):
                path.unlink()
                removed.append(path)
    return removed
