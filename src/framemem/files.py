"""Atomic writes: a file holds either its old or its new content, never half of one.

A run killed mid-write (training resumes after exactly that) must not leave a torn
log, config, report or image behind. Each writer fills a hidden temporary file in the
same folder and renames it over the target (`os.replace`, atomic on POSIX and Windows).
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Iterator

from .errors import FrameMemError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that pick a format
    by extension still do); it replaces `path` if the block completes, else it is removed."""
    path = Path(path)
    if path.is_dir():
        raise FrameMemError(f"{path} is a folder: name a file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.stem, path.suffix)
    tmp = path.with_name(temporary_name(path.stem, path.suffix))
    try:
        yield tmp
        default_permissions(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def temporary_name(stem: str, suffix: str = "") -> str:
    """The hidden name a write to `stem + suffix` fills first: it names this machine and
    process, so a later write can tell a killed writer's leftovers from a live one's."""
    return f".{stem}.tmp-{socket.gethostname()}-{os.getpid()}{suffix}"


def remove_stale_temporaries(folder: Path, stem: str, suffix: str = "") -> None:
    """Delete what killed writes to `stem + suffix` left in `folder`: temporaries of this
    machine whose process is gone (another machine's, on a shared disk, are left alone)."""
    pattern = re.compile(rf"\.{re.escape(stem)}\.tmp-{re.escape(socket.gethostname())}-(\d+){re.escape(suffix)}")
    for item in folder.glob(f".{glob.escape(stem)}.tmp-*"):
        match = pattern.fullmatch(item.name)
        if not match or _alive(int(match.group(1))):
            continue
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def default_permissions(path: str | Path) -> None:
    """Give `path` (a file, or a folder and all it holds) the permissions the user's umask
    gives a new file, before it is renamed into place. Temporary folders (`mkdtemp`) and
    safetensors files are created private (0700 / 0600); a model, cache or checkpoint
    written for a shared cluster must not be readable by its owner only."""
    mask = os.umask(0)
    os.umask(mask)
    path = Path(path)
    if not path.exists():
        return
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if not item.is_symlink():
            os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data, indent: int | None = 2) -> None:
    write_text(path, json.dumps(data, indent=indent) + "\n")


def save_image(image, path: str | Path, **options) -> None:
    """Save a PIL image or a matplotlib figure; `options` go to `.save` / `.savefig`."""
    with atomic_path(path) as tmp:
        (image.savefig if hasattr(image, "savefig") else image.save)(tmp, **options)


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines file such as a run's log.jsonl. Appends are the one write
    here that is not atomic, so a last line that is not JSON is left out: a run may be
    writing it right now, or a kill tore it. A bad line anywhere else is an error."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise FrameMemError(f"{path}: line {number} is not JSON (the file is damaged)") from None
    return records
