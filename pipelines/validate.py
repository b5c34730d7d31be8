"""Validate: Great Expectations suites on the scrubbed records and on the pairs.

Each suite mixes *critical* expectations (``meta={"critical": True}``: a failure stops
the pipeline, because training on such data would be wrong or unsafe) and warnings
(reported, never fatal). Results are saved as JSON plus a short Markdown report a
person can read, *before* a failure is raised, so the evidence is always on disk.

GX 1.x has no polars data source, so a frame goes in as pandas; frames larger than
``SAMPLE_ROWS`` are sampled (seeded) for the row-level expectations, while counts and
uniqueness that must hold exactly are computed on the full data with polars and fed to
GX as a one-row summary table: among them every critical row-level rule (no PII
sentinel, no missing required value, ...), so a bad row outside the sample still stops
the run. Unexpected *values* are stripped from every saved result:
they could be PII, and the report must never be the place where it leaks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.config import Params
from pipelines.io import read_json, write_json_atomic, write_text_atomic
from pipelines.layout import Layout
from pipelines.schemas import FEEDBACK_TYPES, PAIR_TYPES, SPLITS

log = logging.getLogger(__name__)

SAMPLE_ROWS = 200_000
PII_SENTINELS = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "us_ssn": r"\b\d{3}-\d{2}-\d{4}\b",
}
"""Cheap regexes for PII that must never survive scrubbing; a hit is a critical failure."""
RECORD_TEXT_COLUMNS = ("prompt", "context", "output_text", "edited_text", "other_output_text")
RECORD_REQUIRED = ("event_id", "ts", "tenant_id", "skill", "thread_id", "interaction_id", "prompt",
                   "feedback_type", "output_id", "output_text")
RATING_RANGE = (1, 5)
PAIR_TEXT_COLUMNS = ("chosen", "rejected", "prompt_text")
PAIR_REQUIRED = ("pair_id", "chosen", "rejected", "pair_type", "tenant_id", "thread_id", "split")
RECORD_COUNT_COLUMNS = ("rows_with_pii_sentinel", "missing_required_values", "unknown_feedback_types",
                       "ratings_out_of_range", "comparisons_without_other_text")
"""Summary columns of :func:`record_counts`: exact counts of critical row problems, each must be 0."""
PAIR_COUNT_COLUMNS = ("rows_with_pii_sentinel", "missing_required_values", "duplicate_pair_ids", "identical_sides")
"""Summary columns of :func:`pair_counts`, as RECORD_COUNT_COLUMNS for the pairs."""
_VALUE_KEYS = ("partial_unexpected_list", "partial_unexpected_counts", "partial_unexpected_index_list",
               "unexpected_list", "unexpected_index_list", "observed_value")


class ValidationFailed(RuntimeError):
    """A critical expectation failed; the message lists each one, the report is on disk."""


def _expectations(columns: dict[str, list[tuple[str, dict[str, Any], bool]]]) -> list[Any]:
    """Build GX expectation objects from ``{suite_part: [(type, kwargs, critical)]}``."""
    import great_expectations as gx

    built = []
    for items in columns.values():
        for name, kwargs, critical in items:
            cls = getattr(gx.expectations, name)
            built.append(cls(**kwargs, meta={"critical": critical}))
    return built


def run_suite(name: str, frames: dict[str, pl.DataFrame], spec: dict[str, list[tuple[str, dict[str, Any], bool]]],
              seed: int) -> dict[str, Any]:
    """Validate each frame against its part of ``spec``; return a value-free result summary."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = ctx.data_sources.add_pandas(name)
    results: list[dict[str, Any]] = []
    for part, frame in frames.items():
        if part not in spec:
            continue
        sample = frame.sample(SAMPLE_ROWS, seed=seed) if frame.height > SAMPLE_ROWS else frame
        batch = source.add_dataframe_asset(part).add_batch_definition_whole_dataframe("all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"{name}.{part}"))
        for exp in _expectations({part: spec[part]}):
            suite.add_expectation(exp)
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{name}.{part}", data=batch, suite=suite))
        res = vd.run(batch_parameters={"dataframe": sample.to_pandas()}, result_format="BASIC").to_json_dict()
        for r in res["results"]:
            cfg = r["expectation_config"]
            results.append({
                "table": part,
                "rows_checked": sample.height,
                "expectation": cfg["type"],
                "kwargs": {k: v for k, v in cfg["kwargs"].items() if k != "batch_id"},
                "critical": bool((cfg.get("meta") or {}).get("critical")),
                "success": bool(r["success"]),
                "unexpected_count": (r.get("result") or {}).get("unexpected_count"),
                "exception": (r.get("exception_info") or {}).get("exception_message") or None,
            })
    failed_critical = [r for r in results if r["critical"] and not r["success"]]
    return {
        "suite": name,
        "success": not failed_critical,
        "expectations": len(results),
        "failed_critical": len(failed_critical),
        "failed_warning": sum(1 for r in results if not r["critical"] and not r["success"]),
        "results": results,
    }


def _text_columns_pii_free(columns: tuple[str, ...]) -> list[tuple[str, dict[str, Any], bool]]:
    return [
        ("ExpectColumnValuesToNotMatchRegex", {"column": c, "regex": rx}, True)
        for c in columns for rx in PII_SENTINELS.values()
    ]


def _exact_zero(*columns: str) -> list[tuple[str, dict[str, Any], bool]]:
    """Critical summary expectations: each of ``columns`` (an exact count) must be 0."""
    return [("ExpectColumnValuesToBeBetween", {"column": c, "max_value": 0}, True) for c in columns]


def rows_matching(frame: pl.DataFrame, columns: tuple[str, ...], patterns: tuple[str, ...]) -> int:
    """Rows of ``frame`` (all of them, not a sample) where a column matches a pattern."""
    present = [c for c in columns if c in frame.columns]
    if not present or frame.is_empty():
        return 0
    rx = "|".join(f"(?:{p})" for p in patterns)
    hit = pl.any_horizontal(pl.col(c).str.contains(rx).fill_null(False) for c in present)
    return int(frame.select(hit.sum()).item())


def _nulls(frame: pl.DataFrame, columns: tuple[str, ...]) -> int:
    return int(sum(frame[c].null_count() for c in columns if c in frame.columns))


def record_counts(records: pl.DataFrame) -> dict[str, int]:
    """Exact, full-data counts of the records' critical row-level problems (all must be 0)."""
    rating, kind = pl.col("rating"), pl.col("feedback_type")
    counts = (
        rows_matching(records, RECORD_TEXT_COLUMNS, tuple(PII_SENTINELS.values())),
        _nulls(records, RECORD_REQUIRED),
        records.filter(kind.is_not_null() & ~kind.is_in(FEEDBACK_TYPES)).height,
        records.filter(rating.is_not_null() & ~rating.is_between(*RATING_RANGE)).height,
        records.filter((kind == "comparison") & pl.col("other_output_text").is_null()).height,
    )
    return dict(zip(RECORD_COUNT_COLUMNS, counts, strict=True))


def pair_counts(pairs: pl.DataFrame) -> dict[str, int]:
    """Exact, full-data counts of the pairs' critical row-level problems (all must be 0)."""
    counts = (
        rows_matching(pairs, PAIR_TEXT_COLUMNS, tuple(PII_SENTINELS.values())),
        _nulls(pairs, PAIR_REQUIRED),
        pairs.height - pairs["pair_id"].n_unique(),
        int(pairs["chosen_equals_rejected"].fill_null(False).sum()),
    )
    return dict(zip(PAIR_COUNT_COLUMNS, counts, strict=True))


def events_spec(params: Params) -> dict[str, list[tuple[str, dict[str, Any], bool]]]:
    """Expectations on the scrubbed records and on the ingest summary."""
    v = params.validate_
    lo, hi = RATING_RANGE
    return {
        "records": [
            *[("ExpectColumnValuesToNotBeNull", {"column": c}, True) for c in RECORD_REQUIRED],
            ("ExpectColumnValuesToBeInSet", {"column": "feedback_type", "value_set": list(FEEDBACK_TYPES)}, True),
            ("ExpectColumnValuesToBeBetween", {"column": "rating", "min_value": lo, "max_value": hi}, True),
            ("ExpectColumnValuesToNotBeNull", {"column": "other_output_text", "row_condition": 'feedback_type=="comparison"',
                                              "condition_parser": "pandas"}, True),
            ("ExpectColumnValueLengthsToBeBetween", {"column": "prompt", "min_value": 1}, False),
            ("ExpectColumnValueLengthsToBeBetween", {"column": "output_text", "min_value": 1}, False),
            *_text_columns_pii_free(RECORD_TEXT_COLUMNS),
        ],
        "summary": [
            ("ExpectColumnValuesToBeBetween", {"column": "records", "min_value": v.min_records}, True),
            ("ExpectColumnValuesToBeBetween", {"column": "duplicate_event_ids", "max_value": 0}, True),
            ("ExpectColumnValuesToBeBetween", {"column": "reject_share", "max_value": v.max_reject_share}, True),
            ("ExpectColumnValuesToBeBetween", {"column": "tenants", "min_value": 1}, True),
            *_exact_zero(*RECORD_COUNT_COLUMNS),
        ],
    }


def pairs_spec(params: Params) -> dict[str, list[tuple[str, dict[str, Any], bool]]]:
    """Expectations on all pairs (train/val/test/safety together) and their summary."""
    v = params.validate_
    return {
        "pairs": [
            *[("ExpectColumnValuesToNotBeNull", {"column": c}, True) for c in PAIR_REQUIRED],
            ("ExpectColumnValuesToBeUnique", {"column": "pair_id"}, True),
            ("ExpectColumnValuesToBeInSet", {"column": "pair_type", "value_set": list(PAIR_TYPES)}, True),
            ("ExpectColumnValuesToBeInSet", {"column": "split", "value_set": [*SPLITS, "safety"]}, True),
            ("ExpectColumnValuesToBeInSet", {"column": "chosen_equals_rejected", "value_set": [False]}, True),
            *_text_columns_pii_free(PAIR_TEXT_COLUMNS),
        ],
        "summary": [
            ("ExpectColumnValuesToBeBetween", {"column": "train_pairs", "min_value": v.min_pairs}, True),
            ("ExpectColumnValuesToBeBetween", {"column": "test_pairs", "min_value": 1}, True),
            ("ExpectColumnValuesToBeBetween", {"column": "threads_in_two_splits", "max_value": 0}, True),
            ("ExpectColumnValuesToBeBetween", {"column": "threads_in_two_tenants", "max_value": 0}, True),
            *_exact_zero(*PAIR_COUNT_COLUMNS),
        ],
    }


def report_markdown(result: dict[str, Any]) -> str:
    """A short, value-free Markdown report: what was checked, what failed, how badly."""
    status = "PASSED" if result["success"] else "FAILED"
    lines = [
        f"# Validation: {result['suite']} — {status}", "",
        f"{result['expectations']} expectations; {result['failed_critical']} critical and "
        f"{result['failed_warning']} warning failures.", "",
        "| table | expectation | column / args | critical | result | unexpected |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(result["results"], key=lambda r: (r["success"], not r["critical"])):
        args = ", ".join(f"{k}={v}" for k, v in r["kwargs"].items())
        mark = "ok" if r["success"] else ("**FAIL**" if r["critical"] else "warn")
        lines.append(f"| {r['table']} | {r['expectation']} | {args} | {'yes' if r['critical'] else 'no'} | "
                     f"{mark} | {r['unexpected_count'] if r['unexpected_count'] is not None else ''} |")
    return "\n".join(lines) + "\n"


def _save_and_check(result: dict[str, Any], out_dir: Path, metrics_path: Path) -> dict[str, Any]:
    write_json_atomic(out_dir / "result.json", result)
    write_text_atomic(out_dir / "report.md", report_markdown(result))
    metrics = {k: result[k] for k in ("success", "expectations", "failed_critical", "failed_warning")}
    write_json_atomic(metrics_path, metrics)
    if not result["success"]:
        failed = [f"{r['table']}.{r['expectation']}({r['kwargs'].get('column', '')})"
                  for r in result["results"] if r["critical"] and not r["success"]]
        raise ValidationFailed(
            f"{result['suite']}: {len(failed)} critical expectation(s) failed: {', '.join(failed)}; "
            f"see {out_dir / 'report.md'}"
        )
    return metrics


def run(params: Params, layout: Layout) -> dict[str, Any]:
    """Validate the scrubbed records (stage ``validate``)."""
    records = pl.read_parquet(layout.scrubbed)
    ingest = read_json(layout.metrics("ingest")) if layout.metrics("ingest").exists() else {}
    lines_in = ingest.get("lines_in", records.height) or 1
    summary = pl.DataFrame({
        "records": [records.height],
        "duplicate_event_ids": [records.height - records["event_id"].n_unique()],
        "reject_share": [ingest.get("quarantined", 0) / lines_in],
        "tenants": [records["tenant_id"].n_unique()],
        **{k: [n] for k, n in record_counts(records).items()},
    })
    result = run_suite("events", {"records": records, "summary": summary}, events_spec(params), params.seed)
    return _save_and_check(result, layout.validation_dir / "events", layout.metrics("validate"))


def run_pairs(params: Params, layout: Layout) -> dict[str, Any]:
    """Validate the preference pairs (stage ``validate_pairs``)."""
    frames = [pl.read_parquet(layout.pairs_split(s)) for s in SPLITS]
    if layout.safety_pairs.exists():
        frames.append(pl.read_parquet(layout.safety_pairs))
    pairs = pl.concat(frames).with_columns(
        (pl.col("chosen") == pl.col("rejected")).alias("chosen_equals_rejected"),
        pl.col("prompt").list.eval(pl.element().struct.field("content")).list.join("\n").alias("prompt_text"),
    )
    thread_splits = pairs.filter(pl.col("split") != "safety").group_by("tenant_id", "thread_id").agg(
        pl.col("split").n_unique().alias("n")
    )
    thread_tenants = pairs.group_by("thread_id").agg(pl.col("tenant_id").n_unique().alias("n"))
    summary = pl.DataFrame({
        "train_pairs": [pairs.filter(pl.col("split") == "train").height],
        "test_pairs": [pairs.filter(pl.col("split") == "test").height],
        "threads_in_two_splits": [thread_splits.filter(pl.col("n") > 1).height],
        "threads_in_two_tenants": [thread_tenants.filter(pl.col("n") > 1).height],
        **{k: [n] for k, n in pair_counts(pairs).items()},
    })
    result = run_suite("pairs", {"pairs": pairs.drop("prompt", "source_event_ids"), "summary": summary},
                       pairs_spec(params), params.seed)
    return _save_and_check(result, layout.validation_dir / "pairs", layout.metrics("validate_pairs"))
