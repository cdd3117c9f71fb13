"""The out directory of a run: checked before any work, locked while a run writes there, its
settings kept for ``--resume``, its finished cells read back.

A run holds an exclusive ``flock`` on OUT while it works, so a second run on the same OUT is
refused. A kill can leave hidden ``.NAME.tmp`` files of unfinished atomic writes; they never
match ``*.json``, so they are ignored, and ``--resume`` deletes them.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

from benchmark.cells import cell_filename
from benchmark.core.atomic import write_json_atomic
from benchmark.core.errors import BadInput
from benchmark.results.records import RECORD_SCHEMA
from benchmark.spec import Suite

CELLS_DIR = "cells"
SETTINGS_FILE = "settings.json"
MIN_FREE_BYTES = 1 << 20   # refuse to start on a disk with less room than this


def load_cells(out: Path) -> dict[str, dict]:
    """Finished cell records on disk, by cell id; unreadable or invalid files are ignored."""
    import jsonschema
    records = {}
    folder = out / CELLS_DIR
    if not folder.is_dir():
        return records
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            jsonschema.validate(record, RECORD_SCHEMA)
        except (OSError, ValueError, jsonschema.ValidationError):
            continue
        if cell_filename(record["cell_id"]) == path.name:
            records[record["cell_id"]] = record
    return records


class OutLock:
    """An exclusive ``flock`` on the out directory, held while a run writes there."""

    def __init__(self, out: Path):
        self.fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise BadInput(f"another run is writing to --out '{out}': wait for it to finish, "
                           f"or choose another --out directory") from None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None


def prepare_out(out: Path, resume: bool) -> OutLock:
    """Check the out directory before any work: writable, with free space, not in use by another
    run, and not silently overwritten. Returns the lock to release when the run ends."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out '{out}' is a file: pass a directory")
    if out.exists() and any(out.iterdir()) and not resume:
        raise BadInput(f"--out '{out}' already holds results: pass --resume to continue that run, "
                       f"or choose a new --out directory")
    lock, created = None, not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = OutLock(out)
        (out / CELLS_DIR).mkdir(exist_ok=True)
        probe = out / ".write-probe.tmp"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
        stats = os.statvfs(out)
        free = stats.f_bavail * stats.f_frsize
        if free < MIN_FREE_BYTES:
            raise BadInput(f"--out '{out}' has only {free // 1024} KiB free: free some space or choose "
                           f"another --out directory")
    except (OSError, BadInput) as exc:
        if lock is not None:
            lock.release()
        if created:  # leave no trace of a run that never started
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(exc, BadInput):
            raise
        raise BadInput(f"cannot write to --out '{out}' ({exc.strerror}): choose a writable directory "
                       f"with free space") from None
    if resume:  # leftovers of atomic writes cut short by a kill (this run holds the lock)
        for tmp in [*out.glob(".*.tmp"), *(out / CELLS_DIR).glob(".*.tmp")]:
            tmp.unlink(missing_ok=True)
    return lock


def check_settings(out: Path, suite: Suite) -> None:
    """Refuse to mix cells made under different settings in one OUT (BadInput, nothing written).

    A cell id names the model, attack, defense and seed, not the data and training settings
    every cell depends on; they are kept in ``OUT/settings.json`` when a run starts (or when a
    run from before this file existed is resumed), and a ``--resume`` with other ones is refused
    instead of silently mixing two grids."""
    settings = json.loads(json.dumps({"dataset": suite.dataset, "rating_threshold": suite.rating_threshold,
                                      "training": suite.training, "model_params": suite.model_params,
                                      "targets": suite.targets}))
    path = out / SETTINGS_FILE
    if not path.exists():
        write_json_atomic(path, settings)
        return
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        earlier = None
    if not isinstance(earlier, dict):
        raise BadInput(f"cannot read the settings in {path}: --resume needs the settings of the run "
                       f"it continues; choose a new --out")
    changed = [key for key in settings if earlier.get(key) != settings[key]]
    if changed:
        key = changed[0]
        raise BadInput(f"--out '{out}' was run with other settings ({key}: {_brief(earlier.get(key))} "
                       f"there, {_brief(settings[key])} now): --resume continues a run with its own "
                       f"settings; use them again or choose a new --out")


def _brief(value, limit: int = 120) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."
