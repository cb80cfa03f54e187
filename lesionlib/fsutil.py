"""Writing files so that a crash never leaves a half-written one where a whole one is expected."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0o022)  # read the process's umask (the call sets it), then put it back
os.umask(_UMASK)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name ends like the target (".tmp.keras"): some writers check the suffix.
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                    suffix=f".tmp{target.suffix}")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes files private (0600); undo that
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield a new empty folder beside ``target``; it replaces ``target`` (and all of its
    contents) only if the block succeeds. Readers may find no folder for an instant (two
    renames), never a half-written one; if the swap fails, the old folder is put back."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    old = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.old"
    try:
        yield temporary
        os.chmod(temporary, 0o777 & ~_UMASK)  # mkdtemp makes folders private (0700); undo that
        if target.exists():
            os.replace(target, old)
        try:
            os.replace(temporary, target)
        except BaseException:
            if old.exists():
                os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def write_atomic(target: Path, writer: Callable[[IO[str]], Any]) -> None:
    """Write a text file through ``writer(handle)``, atomically."""
    with atomic_path(target) as temporary, temporary.open("w", encoding="utf-8", newline="") as out:
        writer(out)


def write_text_atomic(target: Path, text: str) -> None:
    write_atomic(target, lambda out: out.write(text))


def write_json_atomic(target: Path, data: Any) -> None:
    write_atomic(target, lambda out: json.dump(data, out, indent=2, sort_keys=True, default=str))


def copy_atomic(source: Path, target: Path) -> None:
    """Copy ``source``'s bytes to ``target`` atomically."""
    with atomic_path(target) as temporary:
        shutil.copyfile(source, temporary)


def safe_name(name: str) -> str:
    """``name`` usable as one file name: only letters, digits, ``.``, ``_`` and ``-``; no leading dot."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", str(name)).lstrip(".")
    return cleaned or "_"


def save_figure(figure, target: Path) -> Path:
    """Save a matplotlib figure as a PNG at ``target``, atomically."""
    with atomic_path(target) as temporary:
        figure.savefig(temporary, format="png", bbox_inches="tight")
    return target
