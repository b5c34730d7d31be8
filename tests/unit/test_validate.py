"""GX suites: good data passes, each critical problem stops the stage, reports hold no values."""

from __future__ import annotations

import re

import polars as pl
import pytest

from pipelines import validate
from pipelines.config import Params
from pipelines.io import write_json_atomic
from pipelines.layout import Layout
from tests.unit.test_pairs import frame, rec

LEAKED = "jane.doe@example.com"


def _records(n: int = 60, **override) -> pl.DataFrame:
    rows = [rec(f"f{i}", "comparison", iid=f"i{i}", thread=f"t{i}", output_id=f"o{i}", other_output_id=f"x{i}",
                other_output_text="other", prompt=f"prompt {i}") for i in range(n)]
    rows[0].update(override)
    return frame(rows).collect()


def _layout(tmp_path, records: pl.DataFrame, lines_in: int = 100, quarantined: int = 1) -> Layout:
    layout = Layout(tmp_path)
    layout.scrubbed.parent.mkdir(parents=True)
    records.write_parquet(layout.scrubbed)
    write_json_atomic(layout.metrics("ingest"), {"lines_in": lines_in, "quarantined": quarantined})
    return layout


def test_clean_records_pass(tmp_path):
    layout = _layout(tmp_path, _records())
    metrics = validate.run(Params(), layout)
    assert metrics["success"] and metrics["failed_critical"] == 0 and metrics["expectations"] > 20
    assert (layout.validation_dir / "events" / "report.md").read_text().startswith("# Validation: events — PASSED")


@pytest.mark.parametrize("override,expected", [
    ({"prompt": f"write to {LEAKED}"}, "expect_column_values_to_not_match_regex(prompt)"),
    ({"feedback_type": "thumbs"}, "expect_column_values_to_be_in_set(feedback_type)"),
    ({"rating": 9}, "expect_column_values_to_be_between(rating)"),
    ({"other_output_text": None}, "expect_column_values_to_not_be_null(other_output_text)"),
])
def test_critical_problem_stops_with_a_readable_report(tmp_path, override, expected):
    layout = _layout(tmp_path, _records(**override))
    with pytest.raises(validate.ValidationFailed, match=re.escape(expected)):
        validate.run(Params(), layout)
    report = (layout.validation_dir / "events" / "report.md").read_text()
    result = (layout.validation_dir / "events" / "result.json").read_text()
    assert "FAILED" in report
    assert LEAKED not in report and LEAKED not in result  # values never reach the report


def test_too_many_rejects_or_too_few_records_are_critical(tmp_path):
    with pytest.raises(validate.ValidationFailed, match="reject_share"):
        validate.run(Params(), _layout(tmp_path / "a", _records(), lines_in=100, quarantined=50))
    with pytest.raises(validate.ValidationFailed, match="records"):
        validate.run(Params(), _layout(tmp_path / "b", _records(n=10)))


def _pairs_layout(tmp_path, train: pl.DataFrame, test: pl.DataFrame) -> Layout:
    layout = Layout(tmp_path)
    layout.pairs_dir.mkdir(parents=True)
    train.write_parquet(layout.pairs_split("train"))
    train.head(0).write_parquet(layout.pairs_split("val"))
    test.write_parquet(layout.pairs_split("test"))
    return layout


def _pairs(n: int, split: str, thread_prefix: str = "t") -> pl.DataFrame:
    from pipelines.schemas import PAIR_SCHEMA

    return pl.DataFrame({
        "pair_id": [f"{split}{i}" for i in range(n)],
        "prompt": [[{"role": "user", "content": f"q{i}"}] for i in range(n)],
        "chosen": [f"good {i}" for i in range(n)], "rejected": [f"bad {i}" for i in range(n)],
        "pair_type": ["comparison"] * n, "source": ["events"] * n, "tenant_id": ["acme"] * n,
        "skill": ["email_draft"] * n, "thread_id": [f"{thread_prefix}{i}" for i in range(n)],
        "source_event_ids": [[f"e{i}"] for i in range(n)], "split": [split] * n,
    }, schema=PAIR_SCHEMA)


def test_pairs_suite_passes_and_catches_a_thread_in_two_splits(tmp_path):
    assert validate.run_pairs(Params(), _pairs_layout(tmp_path / "ok", _pairs(30, "train"), _pairs(5, "test", "u")))[
        "success"]
    with pytest.raises(validate.ValidationFailed, match="threads_in_two_splits"):
        validate.run_pairs(Params(), _pairs_layout(tmp_path / "bad", _pairs(30, "train"), _pairs(5, "test")))


def test_pairs_suite_catches_identical_sides(tmp_path):
    train = _pairs(30, "train").with_columns(pl.col("chosen").alias("rejected"))
    with pytest.raises(validate.ValidationFailed, match="chosen_equals_rejected"):
        validate.run_pairs(Params(), _pairs_layout(tmp_path, train, _pairs(5, "test", "u")))


def test_a_bad_row_outside_the_gx_sample_still_stops_the_run(tmp_path, monkeypatch):
    """Frames over SAMPLE_ROWS are sampled for GX; the critical rules are also counted on every row."""
    monkeypatch.setattr(validate, "SAMPLE_ROWS", 5)
    records = _records(n=60)
    leak = records.with_row_index("i").with_columns(
        pl.when(pl.col("i") == 59).then(pl.lit(f"write to {LEAKED}")).otherwise(pl.col("prompt")).alias("prompt"),
        pl.when(pl.col("i") == 58).then(pl.lit(None)).otherwise(pl.col("tenant_id")).alias("tenant_id"),
    ).drop("i")
    with pytest.raises(validate.ValidationFailed) as failed:
        validate.run(Params(), _layout(tmp_path / "events", leak))
    assert "summary.expect_column_values_to_be_between(rows_with_pii_sentinel)" in str(failed.value)
    assert "summary.expect_column_values_to_be_between(missing_required_values)" in str(failed.value)
    train = pl.concat([_pairs(30, "train"), _pairs(30, "train").head(1)])  # one pair id twice
    with pytest.raises(validate.ValidationFailed, match=re.escape("(duplicate_pair_ids)")):
        validate.run_pairs(Params(), _pairs_layout(tmp_path / "pairs", train, _pairs(5, "test", "u")))


def test_exact_counts_see_every_row():
    records = _records(n=8, rating=9, feedback_type="thumbs")
    counts = validate.record_counts(records.with_columns(pl.lit(f"mail {LEAKED}").alias("context")))
    assert counts == {"rows_with_pii_sentinel": 8, "missing_required_values": 0, "unknown_feedback_types": 1,
                      "ratings_out_of_range": 1, "comparisons_without_other_text": 0}
    assert set(counts) == set(validate.RECORD_COUNT_COLUMNS)
