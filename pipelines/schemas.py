"""Data contracts between stages: raw events, joined records, rejects and pairs.

The raw event contract (one JSON object per line, or Parquet rows with the same
fields) is described in ``../shared/DESIGN.md``. Field names here are the contract;
change them only together with the generator, the stages and the tests.
"""

from __future__ import annotations

from enum import StrEnum

import polars as pl

EVENT_TYPES = ("interaction", "output", "feedback")
FEEDBACK_TYPES = ("accept", "reject", "edit", "rating", "comparison")

COMMON_FIELDS = ("event_id", "event_type", "ts", "tenant_id", "skill", "thread_id", "interaction_id")
"""Required on every raw event (all strings; ``ts`` is ISO-8601 with a zone)."""

# Per type: required fields (beyond COMMON_FIELDS) and optional ones, with their JSON types.
# interaction: prompt (str), context (str, optional), turn (int, optional)
# output:      output_id (str), text (str), policy_id (str), model_version (str, optional)
# feedback:    feedback_type; accept/reject: output_id; edit: output_id + edited_text;
#              rating: output_id + rating (int 1-5); comparison: output_ids ([a, b]) +
#              preferred_output_id (one of them)

FREE_TEXT_FIELDS = ("prompt", "context", "output_text", "edited_text", "other_output_text")
"""Columns of a joined record that hold user or model text; the scrubber covers each."""


class RejectReason(StrEnum):
    """Why a raw line was quarantined. Values are stable: metrics and alerts key on them."""

    EMPTY_LINE = "empty_line"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    UNKNOWN_FEEDBACK_TYPE = "unknown_feedback_type"
    INVALID_VALUE = "invalid_value"
    BAD_TIMESTAMP = "bad_timestamp"
    TEXT_TOO_LONG = "text_too_long"
    DUPLICATE_EVENT_ID = "duplicate_event_id"
    ORPHAN_OUTPUT = "orphan_output"          # output whose interaction never arrived
    ORPHAN_FEEDBACK = "orphan_feedback"      # feedback whose interaction or output never arrived
    UNREADABLE_FILE = "unreadable_file"      # a Parquet partition that cannot be read at all


RECORD_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),            # the feedback event's id
    "ts": pl.Datetime("us", "UTC"),
    "tenant_id": pl.String(),
    "skill": pl.String(),
    "thread_id": pl.String(),
    "interaction_id": pl.String(),
    "turn": pl.Int32(),
    "prompt": pl.String(),
    "context": pl.String(),
    "feedback_type": pl.String(),
    "output_id": pl.String(),           # the rated/edited/accepted output; for comparison, the preferred one
    "output_text": pl.String(),
    "policy_id": pl.String(),
    "model_version": pl.String(),
    "rating": pl.Int8(),
    "edited_text": pl.String(),
    "other_output_id": pl.String(),     # comparison only: the output that was not preferred
    "other_output_text": pl.String(),
    "source_event_ids": pl.List(pl.String()),
}
"""One row per valid feedback event joined with its interaction and output(s)."""

REJECT_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),         # relative to the raw folder
    "line_no": pl.Int64(),              # 1-based line (JSONL) or row (Parquet); 0 = whole file
    "raw_sha256": pl.String(),          # hash of the raw bytes: the raw line itself stays in data/raw
    "event_id": pl.String(),
    "event_type": pl.String(),
    "reason": pl.String(),
    "detail": pl.String(),              # never contains field values, only names and types
    "excerpt": pl.String(),             # the first characters of the line, PII-scrubbed
}

MESSAGE = pl.Struct({"role": pl.String(), "content": pl.String()})

PAIR_SCHEMA: dict[str, pl.DataType] = {
    "pair_id": pl.String(),
    "prompt": pl.List(MESSAGE),         # chat messages, the last one the user's turn
    "chosen": pl.String(),
    "rejected": pl.String(),
    "pair_type": pl.String(),           # edit | rating | comparison | accept_reject | public | safety
    "source": pl.String(),              # events | hh_rlhf | xstest
    "tenant_id": pl.String(),
    "skill": pl.String(),
    "thread_id": pl.String(),
    "source_event_ids": pl.List(pl.String()),
    "split": pl.String(),               # train | val | test | safety
}

PAIR_TYPES = ("edit", "rating", "comparison", "accept_reject", "public", "safety")
SPLITS = ("train", "val", "test")
