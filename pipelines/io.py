"""Atomic file writes and small readers shared by every stage.

Every stage writes its outputs through these helpers: the bytes go to a temporary
file in the destination folder, are flushed and fsynced, and are then renamed over
the final name. A crash leaves either the old complete file or the new one, never a
partial one, and a rerun simply overwrites.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it over ``dest`` on success.

    Why: writers that insist on a path (pyarrow, polars sinks, matplotlib) can still
    be made atomic. On an exception the temporary file is removed and ``dest`` is
    left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or ".tmp", dir=dest.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are ordinary files
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
        _fsync_dir(dest.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
