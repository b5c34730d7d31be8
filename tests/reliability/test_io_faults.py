"""The crash hook and the sweep of dead writers' temporaries in pipelines/io.py, on their own.

The crash tests rely on both; here each is pinned down in milliseconds: the hook kills
exactly at the named point, a temporary is removed only when its writer is dead, and
nothing else in the folder is touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.io import (
    FAULT_ENV,
    Fault,
    _exited,
    _held,
    _pid_alive,
    _restore_aside,
    atomic_dir,
    atomic_path,
    parse_fault,
    read_json,
    scratch_dir,
    sweep_stale,
    write_json_atomic,
)
from tests.project import ROOT, project_env

WRITE_TWICE = "from pipelines.io import write_json_atomic as w; import sys; w(sys.argv[1], 1); w(sys.argv[1], 2)"


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def test_fault_specs_parse_and_bad_ones_are_refused():
    assert parse_fault("written:records.parquet") == Fault("written", "records.parquet", 1, False)
    assert parse_fault("renamed:*/pairs/*.parquet:3:group") == Fault("renamed", "*/pairs/*.parquet", 3, True)
    for bad in ("records.parquet", "before:x", "open:x:1:everyone", "open:x:one"):
        with pytest.raises(ValueError):
            parse_fault(bad)


@pytest.mark.parametrize(("spec", "killed", "content", "temps"), [
    ("open:out.json:2", True, 1, 1),  # the second write dies with an empty temp beside the first file
    ("written:out.json:2", True, 1, 1),  # ... with a complete temp, not yet renamed
    ("renamed:out.json:2", True, 2, 0),  # ... after the rename: the new file is in place
    ("written:other.json", False, 2, 0),  # a fault for another file never fires
])
def test_the_hook_kills_at_the_named_write_and_point(tmp_path, spec, killed, content, temps):
    dest = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-c", WRITE_TWICE, str(dest)], cwd=ROOT,
                          env=project_env({FAULT_ENV: spec}), capture_output=True)
    assert proc.returncode == (-signal.SIGKILL if killed else 0)
    assert read_json(dest) == content
    assert len([p for p in tmp_path.iterdir() if p.name != "out.json"]) == temps
    write_json_atomic(dest, 3)  # the next write of the same file sweeps the dead writer's temp
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_sweep_removes_only_temporaries_of_dead_writers(tmp_path):
    dead = dead_pid()
    doomed = [tmp_path / f".out.json.{dead}.abcd_123.tmp", tmp_path / f".out.json.{dead}.zz9zz9zz.parquet"]
    kept = [
        tmp_path / f".out.json.{os.getpid()}.abcdefgh.tmp",  # a live writer (this process)
        tmp_path / f".out.json.5.{dead}.abcdefgh",  # the temp of another file, "out.json.5"
        tmp_path / f".other.json.{dead}.abcdefgh.tmp",
        tmp_path / "out.json",
        tmp_path / f"out.json.{dead}.abcdefgh.tmp",  # not hidden: not ours
    ]
    for path in doomed + kept:
        path.write_text("x")
    assert sorted(sweep_stale(tmp_path, "out.json")) == sorted(doomed)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in doomed)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_a_zombie_writer_counts_as_dead(tmp_path):
    """A killed writer nobody has reaped yet (PID 1 in a container may never) cannot rename its temp."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while not _exited(child.pid) and time.monotonic() < deadline:  # exited, not reaped: a zombie
        time.sleep(0.05)
    try:
        temp = tmp_path / f".out.json.{child.pid}.abcdefgh.tmp"
        temp.write_text("x")
        live = tmp_path / f".out.json.{os.getpid()}.abcdefgh.tmp"
        live.write_text("x")
        assert sweep_stale(tmp_path, "out.json") == [temp]
        assert live.exists()
    finally:
        child.wait()


def test_scratch_folders_of_dead_runs_are_removed(tmp_path):
    stale = tmp_path / f".ingest.{dead_pid()}.abcdefgh"
    (stale / "part").mkdir(parents=True)
    (stale / "part" / "interaction-00000.parquet").write_bytes(b"raw events")
    with scratch_dir(tmp_path, "ingest") as fresh:
        assert not stale.exists() and fresh.is_dir() and fresh.parent == tmp_path
    assert not fresh.exists()


HOLD_LOCK = (
    "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); "
    "print('locked', flush=True); time.sleep(120)"
)


def _hold_lock(path: Path) -> subprocess.Popen[str]:
    """A live process holding the flock of ``path``, as a writer in another container would."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_locked_temporary_is_kept_whatever_its_pid_says(tmp_path):
    """A writer in another PID namespace (a second container on the same volume): its pid
    is dead here, but the kernel still shows its lock, so its temporaries stay until it dies."""
    dead = dead_pid()
    temp = tmp_path / f".out.json.{dead}.abcdefgh.tmp"
    temp.write_text("x")
    new = tmp_path / f".model.{dead}.abcdefgh"  # a folder writer between its two renames
    new.mkdir()
    aside = tmp_path / f".model.{dead}.abcdefgh.old"
    aside.mkdir()
    holders = [_hold_lock(temp), _hold_lock(new)]
    try:
        assert sweep_stale(tmp_path, "out.json") == []
        assert sweep_stale(tmp_path, "model") == []
        assert _restore_aside(tmp_path / "model") is None  # not put back under a live writer
        assert temp.exists() and new.exists() and aside.exists()
    finally:
        for proc in holders:
            proc.kill()
            proc.wait()
    assert sweep_stale(tmp_path, "out.json") == [temp]
    assert _restore_aside(tmp_path / "model") == tmp_path / "model"
    assert sweep_stale(tmp_path, "model") == [new]


NAMESPACED_WRITER = """
import sys
from pathlib import Path
from pipelines.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("new")
    print(tmp.name, flush=True)
    sys.stdin.readline()  # until the test has swept
"""


def _unshare_pid() -> list[str] | None:
    """The command prefix for a new PID namespace, None where this machine refuses one (not root)."""
    prefix = ["unshare", "--pid", "--fork", "--mount-proc"]
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return None
    return prefix if ok else None


def test_a_writer_in_another_pid_namespace_keeps_its_temporary(tmp_path):
    """The real thing: the writer runs in its own PID namespace with a pid that is dead here."""
    prefix = _unshare_pid()
    if prefix is None:
        pytest.skip("unshare --pid is not allowed here (needs root)")
    dest = tmp_path / "out.json"
    script = f"echo 99990 > /proc/sys/kernel/ns_last_pid; {sys.executable} -c '{NAMESPACED_WRITER}' {dest}"
    writer = subprocess.Popen([*prefix, "sh", "-c", script], cwd=ROOT, env=project_env(), text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert writer.stdin is not None and writer.stdout is not None
    temp = tmp_path / writer.stdout.readline().strip()
    pid = int(temp.name.split(".")[3])
    try:
        assert temp.exists() and pid > 99990 and not _pid_alive(pid)  # its pid means nothing here
        assert sweep_stale(tmp_path, "out.json") == []
    finally:
        writer.communicate("go\n", timeout=60)
    assert writer.returncode == 0 and dest.read_text() == "new"


def test_writers_hold_the_lock_of_their_temporaries_while_they_work(tmp_path):
    with atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("1")
        assert _held(tmp)
    assert not _held(tmp_path / "out.json")  # released when the write is over
    with atomic_dir(tmp_path / "model") as folder:
        assert _held(folder)
    assert not _held(tmp_path / "model")
    with scratch_dir(tmp_path, "ingest") as folder:
        assert _held(folder)


WRITE_DIR_TWICE = """
import sys
from pathlib import Path
from pipelines.io import atomic_dir
for n in (1, 2):
    with atomic_dir(sys.argv[1]) as tmp:
        (Path(tmp) / "a.txt").write_text(str(n))
        (Path(tmp) / "b.txt").write_text(str(n))
"""


@pytest.mark.parametrize(("spec", "visible"), [
    ("written:model:2", "1"),  # the new folder complete, not swapped in: the old one stays
    ("aside:model:1", "1"),  # the old folder renamed aside, the new one not in place: absent until repaired
    ("renamed:model:2", "2"),  # the new folder in place, the old one not yet removed
])
def test_a_killed_folder_swap_is_repaired_by_the_next_write(tmp_path, spec, visible):
    from pipelines.io import atomic_dir

    dest = tmp_path / "model"
    if spec.startswith("aside"):  # the first write must find an old folder to set aside
        with atomic_dir(dest) as tmp:
            for name in ("a.txt", "b.txt"):
                (tmp / name).write_text("1")
    proc = subprocess.run([sys.executable, "-c", WRITE_DIR_TWICE, str(dest)], cwd=ROOT,
                          env=project_env({FAULT_ENV: spec}), capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    if spec.startswith("aside"):
        assert not dest.exists()  # never a partial folder: absent, and the old one kept aside
    else:
        assert {p.read_text() for p in dest.iterdir()} == {visible}  # whole: both files one version
    with atomic_dir(dest) as tmp:  # the next write puts the old version back and sweeps the rest
        assert tmp.parent == tmp_path and dest.is_dir()
        (tmp / "a.txt").write_text("3")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in dest.iterdir()] == ["a.txt"]
