"""Atomic writes: the destination is either the old complete file or the new one."""

from __future__ import annotations

import polars as pl
import pytest

from pipelines.io import atomic_path, read_json, write_json_atomic, write_parquet_atomic


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
