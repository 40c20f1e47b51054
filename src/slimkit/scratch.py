"""Scratch folders that do not outlive their process, even one killed with `kill -9`.

Every scratch folder slimkit makes holds an owner file naming the process (pid, its start time and the boot
it started in, so a reused pid is not mistaken for the owner). A folder is removed when the interpreter exits
normally; a process that dies without exiting normally (SIGKILL, SIGTERM, power loss) leaves it behind, and the
next slimkit run reclaims it when it makes scratch of its own. The scratch of a live process, or of one whose
liveness cannot be told, is never touched; nor is a folder without a readable owner file, or another user's.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

OWNER_FILE = ".slimkit-owner"
# Every slimkit scratch folder name starts with this; reclaiming looks only at these.
SCRATCH_PREFIX = "slimkit-"

_owned: dict[str, int] = {}  # scratch folders this process made (path -> pid that made them)
_lock = threading.Lock()
_atexit_registered = False


def make_scratch(prefix: str = "slimkit-work-", tmpdir: str | Path | None = None) -> Path:
    """A new, empty scratch folder in the temp directory, owned by this process.

    Folders left by dead slimkit processes are reclaimed first. The folder is removed at normal interpreter
    exit (or earlier by `remove_scratch`); callers may remove it sooner themselves.
    """
    if not prefix.startswith(SCRATCH_PREFIX):
        raise ValueError(f"scratch prefix must start with {SCRATCH_PREFIX!r}: {prefix!r}")
    root = Path(tmpdir) if tmpdir is not None else Path(tempfile.gettempdir())
    reclaim_dead_scratch(root)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        _write_owner(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    _register(folder)
    return folder


@contextlib.contextmanager
def scratch_dir(prefix: str = "slimkit-tmp-", tmpdir: str | Path | None = None) -> Iterator[Path]:
    """`make_scratch` as a context manager that removes the folder on leaving (like TemporaryDirectory)."""
    folder = make_scratch(prefix, tmpdir)
    try:
        yield folder
    finally:
        remove_scratch(folder)


def remove_scratch(folder: str | Path) -> None:
    """Delete a scratch folder this process made (a no-op if it is already gone)."""
    key = str(folder)
    with _lock:
        _owned.pop(key, None)
    shutil.rmtree(key, ignore_errors=True)


def reclaim_dead_scratch(tmpdir: str | Path | None = None) -> list[Path]:
    """Delete the scratch folders in `tmpdir` (default: the temp directory) whose owner process is dead.

    Returns the folders deleted. Only this user's `slimkit-*` folders with a readable owner file are candidates.
    """
    root = Path(tmpdir) if tmpdir is not None else Path(tempfile.gettempdir())
    reclaimed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return reclaimed
    uid = os.getuid() if hasattr(os, "getuid") else None
    for entry in entries:
        if not entry.name.startswith(SCRATCH_PREFIX):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if uid is not None and entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        owner = read_owner(Path(entry.path))
        if owner is None or owner_alive(owner):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.lexists(entry.path):
            reclaimed.append(Path(entry.path))
    return reclaimed


# --- owner identity -----------------------------------------------------------------------------------------

def process_identity(pid: int | None = None) -> dict:
    """What the owner file records: the pid, when that process started, and which boot it belongs to."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "start": _start_time(pid), "boot": _boot_id()}


def read_owner(folder: Path) -> dict | None:
    """The owner record of a scratch folder; None if it has none or it cannot be read (then it is left alone)."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int) or owner["pid"] <= 0:
        return None
    return owner


def owner_alive(owner: dict) -> bool:
    """Whether the process an owner record names is still running. When in doubt, it counts as alive."""
    boot = _boot_id()
    if owner.get("boot") and boot and owner["boot"] != boot:
        return False  # it ran before the last reboot
    pid = owner["pid"]
    if os.name == "nt":  # os.kill(pid, 0) would signal the process there; no safe check without psutil
        return _alive_psutil(pid, owner.get("start"))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists but belongs to someone else
        return True
    stat = _proc_stat(pid)
    if stat is not None and stat[0] in ("Z", "X"):
        return False  # a zombie cannot use its scratch any more
    start = owner.get("start")
    now = stat[1] if stat is not None else None
    if start is not None and now is not None and start != now:
        return False  # the pid was reused by a newer process
    return True


def _write_owner(folder: Path) -> None:
    # Written under a temporary name and renamed, so a reclaimer never reads a half-written record.
    tmp = folder / f"{OWNER_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(process_identity()))
    os.replace(tmp, folder / OWNER_FILE)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) from /proc/<pid>/stat; None where there is no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may contain spaces and parentheses
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _start_time(pid: int) -> int | float | None:
    stat = _proc_stat(pid)
    if stat is not None:
        return stat[1]
    try:
        import psutil  # type: ignore[import-not-found]

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def _alive_psutil(pid: int, start) -> bool:
    try:
        import psutil  # type: ignore[import-not-found]
    except ImportError:
        return True
    try:
        process = psutil.Process(pid)
        return start is None or process.create_time() == start
    except psutil.NoSuchProcess:
        return False
    except Exception:
        return True


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


# --- removal at exit ---------------------------------------------------------------------------------------

def _register(folder: Path) -> None:
    global _atexit_registered
    with _lock:
        _owned[str(folder)] = os.getpid()
        if not _atexit_registered:
            atexit.register(_remove_owned)
            _atexit_registered = True


def _remove_owned() -> None:
    """At interpreter exit: remove this process's scratch (a forked child that exits leaves its parent's alone)."""
    pid = os.getpid()
    with _lock:
        mine = [path for path, owner in _owned.items() if owner == pid]
        for path in mine:
            _owned.pop(path, None)
    for path in mine:
        shutil.rmtree(path, ignore_errors=True)
