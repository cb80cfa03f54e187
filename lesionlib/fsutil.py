"""Writing files so that a crash never leaves a half-written one where a whole one is expected.

Every temporary made here is named ``.<target>.lesionlib-<pid>-<random>.tmp<suffix>`` (files
and folders) or ``.<target>.lesionlib-<pid>-<random>.old`` (a folder being replaced), with the
writer's process id in it: when the next writer runs in that folder, the temporaries of
processes that no longer exist (killed with ``kill -9``, a crashed kernel) are removed, and an
``.old`` folder left between the two renames of :func:`atomic_folder` is put back if its
target is missing. A live process's temporaries and any file of another name are never touched.

File modes: temporaries are created with ``os.open(..., 0o666)`` and ``os.mkdir(..., 0o777)``,
so the kernel applies the process's umask (and default ACLs) itself; the umask is never read
or changed (``os.umask`` sets it while reading it, a race with other threads).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TAG = "lesionlib"
_TEMPORARY = re.compile(rf"^\.(?P<target>.+)\.{TAG}-(?P<pid>\d+)-[0-9a-f]{{8}}\.(?:tmp(?:\.[^/]*)?|old)$")
SWEEP_INTERVAL = 60.0  # seconds between sweeps of one folder by one process
_swept: dict[tuple[int, str], float] = {}  # (pid, folder) -> when this process last swept it


def _temporary_name(target: Path, ending: str) -> Path:
    return target.parent / f".{target.name}.{TAG}-{os.getpid()}-{secrets.token_hex(4)}.{ending}"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie, already ended, counts as gone)."""
    if pid <= 0:
        return True  # not a real process id: never treat its files as stale
    if os.name == "nt":
        return _windows_process_alive(pid)  # there os.kill(pid, 0) would end the process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _windows_process_alive(pid: int) -> bool:
    """Whether process ``pid`` is running, asked of Windows itself (OpenProcess)."""
    import ctypes  # Windows only: its kernel32 has no POSIX equivalent here

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: someone else's process
    try:
        code = ctypes.c_ulong()
        return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def sweep(folder: Path) -> list[Path]:
    """Remove the temporaries of ended processes in ``folder`` (see the module's docstring);
    return what was removed or put back. Never raises: a sweep must not stop a write."""
    folder = Path(folder)
    done: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return done
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if not match or int(match["pid"]) == os.getpid() or process_alive(int(match["pid"])):
            continue
        path = Path(entry.path)
        try:
            if entry.is_symlink():
                continue  # we never make links: not ours
            if entry.name.endswith(".old"):
                target = folder / match["target"]
                if entry.is_dir() and not os.path.lexists(target):
                    os.replace(path, target)  # killed between the two renames: put it back
                    done.append(target)
                    continue
            if entry.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            done.append(path)
        except OSError:
            continue
    return done


def _sweep_once(folder: Path) -> None:
    """:func:`sweep` ``folder`` unless this process did so in the last :data:`SWEEP_INTERVAL`
    seconds (a folder of thousands of images is written file by file)."""
    key = (os.getpid(), os.path.abspath(folder))
    now = time.monotonic()
    if now - _swept.get(key, -SWEEP_INTERVAL - 1) > SWEEP_INTERVAL:
        _swept[key] = now
        sweep(folder)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(target.parent)
    # The temporary name ends like the target (".tmp.keras"): some writers check the suffix.
    while True:
        temporary = _temporary_name(target, f"tmp{target.suffix}")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies
            break
        except FileExistsError:
            continue
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def temporary_folder(target: Path) -> Iterator[Path]:
    """Yield a new empty folder beside ``target`` (named for it), removed afterwards whatever
    happens; one left by a killed process is swept by the next writer in that folder."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(target.parent)
    while True:
        temporary = _temporary_name(target, "tmp")
        try:
            os.mkdir(temporary, 0o777)  # umask applies
            break
        except FileExistsError:
            continue
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield a new empty folder beside ``target``; it replaces ``target`` (and all of its
    contents) only if the block succeeds. Readers may find no folder for an instant (two
    renames), never a half-written one; if the swap fails, the old folder is put back."""
    target = Path(target)
    with temporary_folder(target) as temporary:
        old = _temporary_name(target, "old")
        yield temporary
        if target.exists():
            os.replace(target, old)
        try:
            os.replace(temporary, target)
        except BaseException:
            if old.exists():
                os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)


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
