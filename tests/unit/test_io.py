"""Atomic writes: the destination is either the old complete file or the new one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import polars as pl
import pytest

from pipelines import io
from pipelines.io import atomic_dir, atomic_path, read_json, write_json_atomic, write_parquet_atomic


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    dest = tmp_path / "out.json"
    write_json_atomic(dest, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("crash mid-write")
    assert read_json(dest) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_json_is_stable_bytes(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json_atomic(a, {"b": 1, "a": [1, 2]})
    write_json_atomic(b, {"a": [1, 2], "b": 1})
    assert a.read_bytes() == b.read_bytes()


def test_parquet_lazy_and_eager_give_same_rows(tmp_path):
    df = pl.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})
    write_parquet_atomic(df, tmp_path / "e.parquet")
    write_parquet_atomic(df.lazy().filter(pl.col("x") > 1), tmp_path / "l.parquet")
    assert pl.read_parquet(tmp_path / "e.parquet").equals(df)
    assert pl.read_parquet(tmp_path / "l.parquet")["x"].to_list() == [2, 3]


# --------------------------------------------------------------------------- durability


def _spy_fsync_and_replace(monkeypatch) -> list[tuple]:
    """Record, in order, each fsync (by inode: a rename keeps it) and each rename."""
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync", (st.st_dev, st.st_ino)))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        events.append(("replace", Path(src), Path(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_atomic_dir_fsyncs_every_file_and_folder_before_the_rename(tmp_path, monkeypatch, existing):
    dest = tmp_path / "model"
    if existing:
        with atomic_dir(dest) as tmp:
            (tmp / "old.bin").write_bytes(b"old")
    events = _spy_fsync_and_replace(monkeypatch)
    with atomic_dir(dest) as tmp:
        (tmp / "weights.safetensors").write_bytes(b"\1" * 4096)
        (tmp / "sub" / "deeper").mkdir(parents=True)
        (tmp / "sub" / "config.json").write_text("{}")
        (tmp / "sub" / "deeper" / "empty.txt").write_text("")
    publish = max(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == dest)
    synced_before = {e[1] for e in events[:publish] if e[0] == "fsync"}
    published = [dest, *(Path(d, n) for d, dirs, files in os.walk(dest) for n in [*dirs, *files])]
    assert len(published) == 6
    for path in published:
        st = os.stat(path)
        assert (st.st_dev, st.st_ino) in synced_before, path.relative_to(tmp_path)
    st = os.stat(tmp_path)
    assert ("fsync", (st.st_dev, st.st_ino)) in events[publish:]  # the rename itself is made durable
    # a folder's entries are synced after what they name: the folder itself comes last
    order = [e[1] for e in events[:publish] if e[0] == "fsync"]
    inode = {p: (os.stat(p).st_dev, os.stat(p).st_ino) for p in published}
    assert order[-1] == inode[dest]
    assert order.index(inode[dest / "sub" / "deeper" / "empty.txt"]) < order.index(inode[dest / "sub" / "deeper"])
    assert order.index(inode[dest / "sub" / "deeper"]) < order.index(inode[dest / "sub"])


def test_atomic_dir_leaves_links_and_fifos_alone(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    dest = tmp_path / "model"
    with atomic_dir(dest) as tmp:
        (tmp / "link").symlink_to(outside)
        (tmp / "dangling").symlink_to(tmp_path / "nowhere")
        if hasattr(os, "mkfifo"):
            os.mkfifo(tmp / "pipe")  # opening it to fsync would block forever
    assert (dest / "link").read_text() == "x"
    assert (dest / "dangling").is_symlink()


def test_a_failed_fsync_publishes_nothing(tmp_path, monkeypatch):
    dest = tmp_path / "model"
    with atomic_dir(dest) as tmp:
        (tmp / "v").write_text("1")

    def broken(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="Input/output"), atomic_dir(dest) as tmp:
        (tmp / "v").write_text("2")
    assert (dest / "v").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _real_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="no /proc")
@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_umask_is_read_without_ever_changing_it(monkeypatch, mask):
    before = os.umask(mask)
    try:
        def forbidden(*_args):
            raise AssertionError("os.umask called: it changes the umask of every thread")

        with monkeypatch.context() as m:
            m.setattr(os, "umask", forbidden)
            assert io._umask() == mask
    finally:
        os.umask(before)


def test_umask_falls_back_where_proc_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "_PROC_STATUS", str(tmp_path / "no-proc" / "status"))
    mask = _real_umask()
    assert io._umask() == mask
    assert _real_umask() == mask


def test_published_files_and_folders_follow_the_umask(tmp_path):
    before = os.umask(0o027)
    try:
        write_json_atomic(tmp_path / "a.json", {})
        with atomic_dir(tmp_path / "m") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o750


def test_exclusive_lock_is_taken_once_and_freed_when_the_block_ends(tmp_path):
    from pipelines.io import exclusive_lock, is_locked

    lock = tmp_path / "sub" / ".lock"
    assert not is_locked(lock)
    with exclusive_lock(lock) as first:
        assert first and is_locked(lock)
        with exclusive_lock(lock) as second:  # another open file description: what another process sees
            assert not second
    assert not is_locked(lock)
    with exclusive_lock(lock) as again:
        assert again
