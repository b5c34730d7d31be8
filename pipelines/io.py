"""Atomic file writes and small readers shared by every stage.

Every stage writes its outputs through these helpers: the bytes go to a temporary
file in the destination folder, are flushed and fsynced, and are then renamed over
the final name. A crash leaves either the old complete file or the new one, never a
partial one, and a rerun simply overwrites.

A writer killed outright (SIGKILL, the OOM killer) runs no cleanup and leaves its
temporary file behind; temporary names carry the writer's pid, the writer holds an
``flock`` on its temporary while it works, and the next write of the same destination
removes those whose writer is dead (pid gone and lock free), so crashes do not
accumulate partial files inside a stage's output folder (which DVC would otherwise hash
and cache). The lock is what makes this safe across PID namespaces: a writer in
another container sharing the volume has a pid that means nothing here, but the
kernel still shows its lock.

``PREFPIPE_FAULT`` is a test hook (see :func:`parse_fault`): it makes the process kill
itself at a named point of an atomic write, so tests/reliability can crash a stage at a
chosen instant rather than at a lucky moment. Unset, it costs one environment lookup.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import json
import os
import re
import shutil
import signal
import stat
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

ASIDE_SUFFIX = ".old"
"""Suffix of the old version of a folder that :func:`atomic_dir` renames aside."""
FAULT_ENV = "PREFPIPE_FAULT"
FAULT_POINTS = ("open", "written", "aside", "renamed")
"""Where an atomic write can be crashed: temp created (empty), temp complete and fsynced
but not renamed, (folders only) the old version renamed aside but the new one not yet in
place, new file renamed into place (directory entry not yet synced)."""


@dataclass(frozen=True)
class Fault:
    """A crash to inject: at ``point`` of the ``nth`` write whose destination matches ``pattern``."""

    point: str
    pattern: str
    nth: int = 1
    group: bool = False  # kill the whole process group (the DVC parent too), as Airflow stops a task


def parse_fault(spec: str) -> Fault:
    """``POINT:GLOB[:N[:group]]`` -> Fault; GLOB matches the destination's name or whole path.

    Example: ``PREFPIPE_FAULT=written:records.parquet:1`` SIGKILLs the process once the
    first ``records.parquet`` it writes is complete on disk but not yet renamed.
    """
    parts = spec.split(":")
    if len(parts) < 2 or parts[0] not in FAULT_POINTS or (len(parts) > 3 and parts[3] != "group"):
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected POINT:GLOB[:N[:group]], POINT in {FAULT_POINTS}")
    return Fault(parts[0], parts[1], int(parts[2]) if len(parts) > 2 else 1, len(parts) > 3)


_fault_hits: Counter[str] = Counter()
"""Matching writes seen so far in this process, per point (the hook's only state)."""


def _maybe_crash(point: str, dest: Path) -> None:
    """SIGKILL this process (or its group) when ``PREFPIPE_FAULT`` names this write."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    fault = parse_fault(spec)
    if fault.point != point or not (
        fnmatch.fnmatch(dest.name, fault.pattern) or fnmatch.fnmatch(dest.as_posix(), fault.pattern)
    ):
        return
    _fault_hits[point] += 1
    if _fault_hits[point] == fault.nth:
        if fault.group:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    """True unless no live process has this pid (a reused pid counts as alive).

    A zombie is dead: it has exited, so it can never rename its temp.
    Why it matters: a stage SIGKILLed together with its parent (DVC, an Airflow task
    runner) is reparented to PID 1, and a container's PID 1 may reap it late or never.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return not _exited(pid)


def _exited(pid: int) -> bool:
    """The main thread of ``pid`` has exited (Linux /proc; False where that cannot be read).

    Why the main thread is enough: a killed process's other threads may take a moment
    more to tear down, and a Python process never outlives its main thread (the
    interpreter waits for its other threads before that thread ends).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        after_comm = stat.rindex(b")") + 2  # the state field follows "(comm) "
        state = stat[after_comm : after_comm + 1]
    except (OSError, ValueError):
        return False
    return state in (b"Z", b"X")


def _hold(path: Path) -> int | None:
    """Open ``path`` and take an exclusive ``flock`` on it; the lock lasts while the fd is open.

    Why: the kernel releases it when the writer dies however it dies, and shows it to
    every process on the host, whatever PID namespace it is in. None where the file
    system has no flock (the pid rule alone then decides, as before).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        os.close(fd)
        return None
    return fd


def _release(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def _taken_elsewhere(fd: int) -> bool:
    """Try to ``flock`` ``fd`` without waiting: True when another holder has it.

    False when this fd now holds it, or when the file system has no flock.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        return err.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    return False


def _held(path: Path) -> bool:
    """Some live process holds the ``flock`` of ``path`` (see :func:`_hold`).

    False when the lock is free, the path is gone, or locks cannot be taken there.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        return _taken_elsewhere(fd)
    finally:
        os.close(fd)


def is_locked(path: str | Path) -> bool:
    """Some live process holds ``path`` with :func:`exclusive_lock` (or a writer's :func:`_hold`)."""
    return _held(Path(path))


@contextlib.contextmanager
def exclusive_lock(path: str | Path) -> Iterator[bool]:
    """Try to hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    Yields True when this process holds it, False when another live process does (no
    waiting). Why flock: the kernel drops it when the holder dies, however it dies, so a
    killed run never leaves a lock behind. Where the file system has no flock, True.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        yield not _taken_elsewhere(fd)
    finally:
        os.close(fd)


def _writer_gone(path: Path, pid: int) -> bool:
    """The writer of temporary ``path`` (pid ``pid``) can never rename it again.

    An old folder put aside (``.NAME.PID.XXXXXXXX.old``, see :func:`atomic_dir`) is not
    locked itself: its writer holds the lock of the new folder of the same name.
    """
    return not _pid_alive(pid) and not _held(path.with_name(path.name.removesuffix(ASIDE_SUFFIX)))


def sweep_stale(folder: Path, name: str) -> list[Path]:
    """Remove temporaries (files or folders) of ``name`` left in ``folder`` by dead writers.

    Why by pid and lock: a live writer of the same destination in another process must
    keep its temp; only one whose process no longer exists can be sure never to rename
    it. A reused pid errs on the safe side (the temp stays). A pid means nothing in
    another PID namespace (a second container on the same volume), so a temp whose pid
    looks dead is also kept while someone holds its lock.
    """
    pattern = re.compile(rf"\.{re.escape(name)}\.(\d+)\.[a-z0-9_]{{8}}(\.[A-Za-z0-9]+)?")
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = pattern.fullmatch(path.name)
        if match is None or not _writer_gone(path, int(match.group(1))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
    return removed


def _new_scratch_dir(parent: str | Path, name: str) -> tuple[Path, int | None]:
    """A fresh folder ``parent/.NAME.PID.XXXXXXXX``, locked; scratch of dead runs is removed first."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(parent, name)
    path = Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", dir=parent))
    return path, _hold(path)


@contextlib.contextmanager
def scratch_dir(parent: str | Path, name: str) -> Iterator[Path]:
    """A private folder ``parent/.NAME.PID.XXXXXXXX`` for the block, removed after it.

    A run killed before the removal leaves it for the next one to sweep; while the run
    lives, its lock keeps any other process's sweep away from it.
    """
    path, lock = _new_scratch_dir(parent, name)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        _release(lock)


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it over ``dest`` on success.

    Why: writers that insist on a path (pyarrow, polars sinks, matplotlib) can still
    be made atomic. On an exception the temporary file is removed and ``dest`` is
    left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(dest.parent, dest.name)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{dest.name}.{os.getpid()}.", suffix=suffix or ".tmp", dir=dest.parent
    )
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are ordinary files
    with contextlib.suppress(OSError):  # no flock on this file system: the pid rule alone
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until the end: other writers' sweeps keep off
    tmp_path = Path(tmp)
    try:
        _maybe_crash("open", dest)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        _maybe_crash("written", dest)
        os.replace(tmp_path, dest)
        _maybe_crash("renamed", dest)
        _fsync_dir(dest.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
        os.close(fd)


def _restore_aside(dest: Path) -> Path | None:
    """Put back the old version a folder writer killed between its two renames left aside.

    Why: :func:`atomic_dir` renames the old folder away before renaming the new one in;
    a SIGKILL between the two leaves no ``dest`` at all, only ``.NAME.PID.XXXXXXXX.old``.
    Until the next write restores it, readers see the output as absent, never partial.
    A writer that is still between its renames holds the lock of its new folder, which
    keeps this away from it.
    """
    if dest.exists() or not dest.parent.is_dir():
        return None
    pattern = re.compile(rf"\.{re.escape(dest.name)}\.(\d+)\.[a-z0-9_]{{8}}\.old")
    for path in sorted(dest.parent.iterdir()):
        match = pattern.fullmatch(path.name)
        if match and _writer_gone(path, int(match.group(1))):
            os.replace(path, dest)
            return dest
    return None


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success swap it in place of ``dest``.

    Why: a model folder has many files, and a reader (or DVC) must never see half of
    them. The old folder is renamed aside first and removed only after the new one is in
    place; a writer killed in between is repaired by the next write (the old version is
    put back, then the dead writer's temporaries are swept). On an exception ``dest``
    keeps its old content.
    """
    dest = Path(dest)
    _restore_aside(dest)
    tmp, lock = _new_scratch_dir(dest.parent, dest.name)  # sweeps dead writers' temporaries first
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; outputs are ordinary folders
    try:
        _maybe_crash("open", dest)
        yield tmp
        _fsync_tree(tmp)
        _maybe_crash("written", dest)
        old = None
        if dest.exists():
            old = tmp.with_name(tmp.name + ASIDE_SUFFIX)
            os.replace(dest, old)
            try:
                _maybe_crash("aside", dest)
                os.replace(tmp, dest)
            except BaseException:
                os.replace(old, dest)
                raise
        else:
            os.replace(tmp, dest)
        _maybe_crash("renamed", dest)
        _fsync_dir(dest.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        _release(lock)


_PROC_STATUS = "/proc/self/status"


def _umask() -> int:
    """The process umask, read without changing it.

    Why not ``os.umask(0)`` then back: for that instant the umask of the whole process is
    0, and a file another thread creates then is world-writable. Linux (4.7+) shows the
    umask as the ``Umask:`` line of /proc/self/status; only where that cannot be read is
    the swap used (racy, as it always was there).
    """
    try:
        with open(_PROC_STATUS, "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: str) -> None:
    """Flush one regular file's data to disk (an error propagates: the write is not durable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except PermissionError:  # a file its writer made write-only can still be synced through a write fd
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every regular file and folder under ``root`` bottom-up, ``root`` itself last.

    Why: :func:`atomic_dir` publishes a whole folder with one rename. Syncing only the
    parent makes the rename durable but not what it points at: after a power loss the
    model folder could be in place with empty or partial files. Each file's data, each
    folder's entries, then the rename. Symlinks, FIFOs and devices are left alone (a
    link is an entry of its folder; opening a FIFO would block).
    """
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                _fsync_file(path)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX needs the directory entry synced too)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_atomic(dest: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text_atomic(dest: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``dest`` atomically."""
    return write_bytes_atomic(dest, text.encode("utf-8"))


def write_json_atomic(dest: str | Path, obj: Any) -> Path:
    """Write ``obj`` as stable, indented JSON (sorted keys, so reruns are byte-identical)."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    return write_text_atomic(dest, text)


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_parquet_atomic(df: pl.DataFrame | pl.LazyFrame, dest: str | Path) -> Path:
    """Write a frame to Parquet atomically; a LazyFrame is streamed with ``sink_parquet``.

    Statistics are written and compression is zstd; no wall-clock metadata goes into
    the file, so the same rows give the same bytes on a rerun.
    """
    with atomic_path(dest, suffix=".parquet") as tmp:
        if isinstance(df, pl.LazyFrame):
            df.sink_parquet(tmp, compression="zstd", statistics=True)
        else:
            df.write_parquet(tmp, compression="zstd", statistics=True)
    return Path(dest)
