"""Ingest: validation reasons, dedup, joins, the bad-input battery and reconciliation."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import ingest
from pipelines.config import Params
from pipelines.layout import Layout
from pipelines.schemas import RECORD_SCHEMA, REJECT_SCHEMA, RejectReason
from tests.factories import feedback, interaction, output, write_jsonl

CANARY_EMAIL = "maria.gonzalez@example.org"


def good_events() -> list[dict]:
    return [
        interaction("i1", context="Customer wrote from " + CANARY_EMAIL),
        output("i1", "o1"),
        feedback("i1", "f1", "accept", output_id="o1"),
        interaction("i2", tenant="globex", skill="sre_chat"),
        output("i2", "o2a", tenant="globex", skill="sre_chat", text="Restart the pod."),
        output("i2", "o2b", tenant="globex", skill="sre_chat", text="Check the logs first, then restart."),
        feedback("i2", "f2", "comparison", tenant="globex", skill="sre_chat", output_ids=["o2a", "o2b"],
                 preferred_output_id="o2b"),
        interaction("i3"),
        output("i3", "o3"),
        feedback("i3", "f3", "rating", output_id="o3", rating=4),
        feedback("i3", "f4", "edit", output_id="o3", edited_text="Hi Sam, the invoice is paid Friday."),
        interaction("i4"),  # no feedback: accepted, but yields no record
    ]


BATTERY: list[tuple[bytes | str | dict, RejectReason]] = [
    ('{"event_id": "t1", "event_type": "interaction", "ts": "2026-11-10T09:0', RejectReason.INVALID_JSON),
    (feedback("i1", "bad-rating", "rating", output_id="o1", rating="five"), RejectReason.WRONG_TYPE),
    (feedback("i1", "bad-rating2", "rating", output_id="o1", rating=9), RejectReason.INVALID_VALUE),
    ({k: v for k, v in interaction("i9").items() if k != "tenant_id"}, RejectReason.MISSING_FIELD),
    ({**interaction("i10"), "event_type": "click"}, RejectReason.UNKNOWN_EVENT_TYPE),
    (feedback("i1", "bad-kind", "thumbs_sideways", output_id="o1"), RejectReason.UNKNOWN_FEEDBACK_TYPE),
    (interaction("i1"), RejectReason.DUPLICATE_EVENT_ID),  # replay of an earlier line
    (b'{"event_id": "bin", "prompt": "\xff\xfe caf\xe9"}', RejectReason.INVALID_UTF8),
    (interaction("i11", prompt="x" * 1_000_000), RejectReason.TEXT_TOO_LONG),
    (feedback("ghost", "f-orphan", "accept", output_id="o-ghost"), RejectReason.ORPHAN_FEEDBACK),
    (output("ghost2", "o-orphan"), RejectReason.ORPHAN_OUTPUT),
    ({**interaction("i12"), "ts": "yesterday"}, RejectReason.BAD_TIMESTAMP),
    ({**interaction("i13"), "ts": 1731229200}, RejectReason.WRONG_TYPE),
    ("[1, 2, 3]", RejectReason.NOT_AN_OBJECT),
    ("   ", RejectReason.EMPTY_LINE),
    (feedback("i2", "f-cross", "accept", output_id="o2a"), RejectReason.ORPHAN_FEEDBACK),  # tenant differs
    (feedback("i1", "f-cmp", "comparison", output_ids=["o1", "o1"], preferred_output_id="o1"),
     RejectReason.INVALID_VALUE),
]


def _run(tmp_path, files: dict[str, list]) -> tuple[dict, Layout]:
    layout = Layout(tmp_path)
    for name, rows in files.items():
        write_jsonl(layout.raw_dir / name, rows)
    return ingest.run(Params(), layout), layout


def test_good_events_join_into_one_record_per_feedback(tmp_path):
    metrics, layout = _run(tmp_path, {"2026-11-10.jsonl": good_events()})
    records = pl.read_parquet(layout.records)
    assert metrics["quarantined"] == 0
    assert metrics["lines_in"] == metrics["accepted"] == len(good_events())
    assert records.height == 4 == metrics["records_out"]
    assert dict(records.schema) == RECORD_SCHEMA
    cmp = records.filter(pl.col("feedback_type") == "comparison").row(0, named=True)
    assert (cmp["output_text"], cmp["other_output_text"]) == ("Check the logs first, then restart.", "Restart the pod.")
    assert cmp["tenant_id"] == "globex" and cmp["skill"] == "sre_chat"
    assert sorted(cmp["source_event_ids"]) == sorted(["ev-i-i2", "ev-o-o2a", "ev-o-o2b", "ev-f-f2"])
    edit = records.filter(pl.col("feedback_type") == "edit").row(0, named=True)
    assert edit["edited_text"].startswith("Hi Sam") and edit["rating"] is None


@pytest.mark.parametrize("bad,reason", BATTERY, ids=[r.value + str(i) for i, (_, r) in enumerate(BATTERY)])
def test_each_bad_line_is_quarantined_with_its_reason(tmp_path, bad, reason):
    metrics, layout = _run(tmp_path, {"2026-11-10.jsonl": [*good_events(), bad]})
    rejects = pl.read_parquet(layout.rejects)
    assert rejects["reason"].to_list() == [reason.value]
    assert metrics["quarantined_by_reason"] == {reason.value: 1}
    assert metrics["lines_in"] == metrics["accepted"] + metrics["quarantined"]
    # the good records are untouched by the bad line
    assert pl.read_parquet(layout.records).height == 4


def test_whole_battery_reconciles_and_keeps_no_raw_text(tmp_path):
    rows = [*good_events(), *[b for b, _ in BATTERY]]
    metrics, layout = _run(tmp_path, {"2026-11-10.jsonl": rows, "2026-11-11.jsonl": []})
    rejects = pl.read_parquet(layout.rejects)
    assert dict(rejects.schema) == REJECT_SCHEMA
    assert metrics["lines_in"] == len(rows)
    assert metrics["quarantined"] == len(BATTERY) == rejects.height
    assert metrics["accepted"] == len(good_events())
    expected = {}
    for _, r in BATTERY:
        expected[r.value] = expected.get(r.value, 0) + 1
    assert metrics["quarantined_by_reason"] == dict(sorted(expected.items()))
    assert rejects["raw_sha256"].str.len_chars().to_list() == [64] * rejects.height
    assert rejects["excerpt"].str.len_chars().max() <= ingest.EXCERPT_CHARS
    assert not any("x" * 500 in e for e in rejects["excerpt"].to_list())


def test_pii_in_a_rejected_line_is_scrubbed_in_the_excerpt(tmp_path):
    bad = {"prompt": f"mail me at {CANARY_EMAIL}", **interaction("i20", prompt="x"), "event_type": "click"}
    bad["prompt"] = f"mail me at {CANARY_EMAIL}"  # first key, so it is inside the excerpt
    _, layout = _run(tmp_path, {"d.jsonl": [bad]})
    rejects = pl.read_parquet(layout.rejects)
    assert CANARY_EMAIL not in rejects["excerpt"][0]
    assert "<EMAIL>" in rejects["excerpt"][0]


def test_replaying_a_partition_adds_no_duplicates(tmp_path):
    events = good_events()
    metrics, layout = _run(tmp_path, {"a.jsonl": events, "b.jsonl": events})
    assert pl.read_parquet(layout.records).height == 4
    assert metrics["quarantined_by_reason"] == {"duplicate_event_id": len(events)}


def test_events_may_arrive_out_of_order_across_partitions(tmp_path):
    events = good_events()
    feedback_first = [e for e in events if e["event_type"] == "feedback"]
    rest = [e for e in events if e["event_type"] != "feedback"]
    metrics, layout = _run(tmp_path, {"2026-11-09.jsonl": feedback_first, "2026-11-10.jsonl": rest})
    assert metrics["quarantined"] == 0
    assert pl.read_parquet(layout.records).height == 4


def test_parquet_partitions_and_an_unreadable_file(tmp_path):
    layout = Layout(tmp_path)
    layout.raw_dir.mkdir(parents=True)
    rows = good_events()
    cols = sorted({k for r in rows for k in r})
    table = pa.table({c: [json.dumps(r[c]) if isinstance(r.get(c), list) else r.get(c) for r in rows] for c in cols})
    # output_ids is a list in JSON; in Parquet it is a real list column
    table = table.set_column(cols.index("output_ids"), "output_ids",
                             pa.array([r.get("output_ids") for r in rows], pa.list_(pa.string())))
    pq.write_table(table, layout.raw_dir / "2026-11-10.parquet")
    (layout.raw_dir / "2026-11-11.parquet").write_bytes(b"PAR1 this is not parquet")
    metrics = ingest.run(Params(), layout)
    assert pl.read_parquet(layout.records).height == 4
    assert metrics["quarantined_by_reason"] == {"unreadable_file": 1}
    assert metrics["lines_in"] == len(rows) + 1


def test_rerun_is_byte_identical(tmp_path):
    _, layout = _run(tmp_path, {"a.jsonl": [*good_events(), *[b for b, _ in BATTERY]]})
    first = (layout.records.read_bytes(), layout.rejects.read_bytes(), layout.metrics("ingest").read_bytes())
    ingest.run(Params(), layout)
    assert (layout.records.read_bytes(), layout.rejects.read_bytes(), layout.metrics("ingest").read_bytes()) == first
    assert not [p for d in (layout.staged_dir, layout.quarantine_dir) for p in d.iterdir() if p.name.startswith(".")]


def test_missing_raw_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="generate"):
        ingest.run(Params(), Layout(tmp_path))


def test_validate_event_never_echoes_values():
    secret = "4111 1111 1111 1111"
    reason, detail = ingest.validate_event({**interaction("i1"), "turn": secret}, 100)
    assert reason == RejectReason.WRONG_TYPE and secret not in detail


class _Text(str):
    """A str subclass: takes the slow path of the field checks, with the same verdicts."""


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("tenant_id", " \t ", RejectReason.INVALID_VALUE),
        ("tenant_id", "", RejectReason.INVALID_VALUE),
        ("tenant_id", 7, RejectReason.WRONG_TYPE),
        ("tenant_id", None, RejectReason.MISSING_FIELD),
        ("tenant_id", _Text("acme"), None),
        ("prompt", "\u2003", RejectReason.INVALID_VALUE),  # an em space is white space too
    ],
)
def test_field_checks_fast_path_and_exact_path_agree(field, value, reason):
    event = {**interaction("i1"), field: value}
    found = ingest.validate_event(event, 100)
    assert (found[0] if found else None) == reason


def test_timestamp_is_parsed_once_with_the_same_value():
    event = interaction("i1")
    bad, ts = ingest._validate(event, 100)
    assert bad is None and ts == ingest.parse_ts(event["ts"])
