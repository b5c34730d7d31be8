"""The PII audit finds canaries in Parquet cells and text files, whole words only."""

from __future__ import annotations

import json

import polars as pl

from pipelines.audit import load_canaries, scan


def _canaries(tmp_path, values):
    path = tmp_path / "canaries.json"
    path.write_text(json.dumps([{"entity": e, "value": v} for e, v in values]))
    return load_canaries(path)


def test_finds_canaries_in_compressed_parquet_nested_cells_and_text(tmp_path):
    c = _canaries(tmp_path, [("EMAIL", "ana@example.org"), ("PERSON", "Hiroshi"), ("PHONE", "415-555-0134")])
    data = tmp_path / "data"
    data.mkdir()
    pl.DataFrame({"prompt": [[{"role": "user", "content": "mail ana@example.org"}]], "x": ["ok"]}).write_parquet(
        data / "a.parquet", compression="zstd")
    (data / "b.json").write_text(json.dumps({"note": "call 415-555-0134"}))
    (data / "c.txt").write_text("a trip to Hiroshima")  # not the name Hiroshi
    hits, n = scan([data], c)
    assert n == 3
    assert sorted((h.path.rsplit("/", 1)[-1], h.entity) for h in hits) == [("a.parquet", "EMAIL"), ("b.json", "PHONE")]


def test_short_values_are_ignored_and_clean_files_pass(tmp_path):
    c = _canaries(tmp_path, [("PERSON", "Al"), ("PERSON", "Maria Lopez")])
    assert [v for _, v in c] == ["Maria Lopez"]
    (tmp_path / "clean.txt").write_text("Al said the report is due.")
    assert scan([tmp_path / "clean.txt"], c) == ([], 1)


def test_canaries_already_in_public_inputs_are_excluded_and_reported(tmp_path):
    import gzip

    from pipelines.audit import without_public

    c = _canaries(tmp_path, [("PERSON", "Diego"), ("EMAIL", "ana@example.org")])
    public = tmp_path / "hh.jsonl.gz"
    public.write_bytes(gzip.compress(b'{"chosen": "I live in San Diego"}'))
    kept, excluded = without_public(c, [public])
    assert kept == [("EMAIL", "ana@example.org")] and excluded == [("PERSON", "Diego")]
