"""Ingest: validation reasons, dedup, joins, the bad-input battery and reconciliation."""

from __future__ import annotations

import calendar
import gzip
import json
from datetime import datetime

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


def test_pii_in_a_binary_parquet_column_is_scrubbed_in_the_excerpt(tmp_path):
    """Strings written as BYTE_ARRAY without the UTF-8 annotation (older Hive/Impala/Spark exports)
    read as bytes: the row is quarantined, and its excerpt must not show "Zo\\xc3\\xab M\\xc3\\xbcller"."""
    layout = Layout(tmp_path)
    layout.raw_dir.mkdir(parents=True)
    row = interaction("i1")
    table = pa.table({"prompt": pa.array(["Bitte antworte Zo\u00eb M\u00fcller".encode()], pa.binary()),
                      **{k: [v] for k, v in row.items() if k != "prompt"}})
    pq.write_table(table, layout.raw_dir / "2026-11-10.parquet")
    ingest.run(Params(), layout)
    rejects = pl.read_parquet(layout.rejects)
    assert rejects["reason"].to_list() == ["wrong_type"]
    excerpt = rejects["excerpt"][0]
    assert "\\x" not in excerpt and "M\u00fcller" not in excerpt and "ller" not in excerpt
    assert "Bitte antworte <PERSON>" in excerpt


@pytest.mark.parametrize(("text", "pii"), [
    ("Bitte antworte Zo\u00eb M\u00fcller wegen der Rechnung", ("Zo", "ller")),
    ("Kundin: J\u00fcrgen Gro\u00dfmann, Hauptstra\u00dfe 5", ("rgen", "mann", "Hauptstra")),
])
def test_pii_in_a_latin1_line_is_scrubbed_in_the_excerpt(tmp_path, text, pii):
    """A partition exported as cp1252 (Windows tools): every line is invalid UTF-8 and quarantined,
    and its excerpt must not show "Zo\ufffd M\ufffdller": the bytes that are not UTF-8 read as cp1252."""
    event = {"prompt": text, **{k: v for k, v in interaction("i1").items() if k != "prompt"}}  # first: in the excerpt
    line = json.dumps(event, ensure_ascii=False).encode("cp1252")
    layout = Layout(tmp_path)
    layout.raw_dir.mkdir(parents=True)
    (layout.raw_dir / "d.jsonl").write_bytes(line + b"\n")
    ingest.run(Params(), layout)
    rejects = pl.read_parquet(layout.rejects)
    assert rejects["reason"].to_list() == ["invalid_utf8"]
    excerpt = rejects["excerpt"][0]
    assert "<PERSON>" in excerpt and "\ufffd" not in excerpt
    for part in pii:
        assert part not in excerpt, part


def test_excerpt_reads_bytes_that_are_not_utf8_as_cp1252():
    raw = "caf\u00e9 Jos\u00e9".encode() + b" \xe9t\xe9"  # UTF-8, then stray cp1252 up to the end
    assert ingest._excerpt(raw, [], "<{entity}>") == "caf\u00e9 Jos\u00e9 \u00e9t\u00e9"
    assert ingest._decode_lenient("Garc\u00ed".encode()[:-1], cut=True) == "Garc"  # cut by the window


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


@pytest.mark.parametrize(
    "stray",
    [
        feedback("i1", "f1", "accept", output_id="o1", rating=1000),
        feedback("i1", "f1", "accept", output_id="o1", rating="five"),
        feedback("i1", "f1", "reject", output_id="o1", edited_text="STRAY TEXT", rating=5),
        feedback("i1", "f1", "edit", output_id="o1", edited_text="x", rating=[1]),
        feedback("i1", "f1", "accept", output_id="o1", other_output_id="o1"),
    ],
    ids=["accept-rating-too-big", "accept-rating-str", "reject-edited-text", "edit-rating-list", "accept-other"],
)
def test_fields_of_another_feedback_type_are_dropped(tmp_path, stray):
    metrics, layout = _run(tmp_path, {"d.jsonl": [interaction("i1"), output("i1", "o1"), stray]})
    record = pl.read_parquet(layout.records).row(0, named=True)
    assert metrics["quarantined"] == 0 and metrics["records_out"] == 1
    assert record["rating"] is None
    assert record["other_output_id"] is None and record["other_output_text"] is None
    assert (record["edited_text"] is not None) == (stray["feedback_type"] == "edit")


@pytest.mark.parametrize(("turn", "reason"), [(ingest.TURN_MAX, None), (ingest.TURN_MAX + 1, RejectReason.INVALID_VALUE)])
def test_turn_beyond_its_column_type_is_quarantined(tmp_path, turn, reason):
    events = [interaction("i1", turn=turn), output("i1", "o1"), feedback("i1", "f1", "accept", output_id="o1")]
    found = ingest.validate_event(events[0], 100)
    assert (found[0] if found else None) == reason
    metrics, _ = _run(tmp_path, {"d.jsonl": events})
    assert metrics["lines_in"] == metrics["accepted"] + metrics["quarantined"]
    if reason is not None:
        assert found[1] == "field 'turn' is out of range"
        assert metrics["quarantined_by_reason"] == {"invalid_value": 1, "orphan_output": 1, "orphan_feedback": 1}


def test_corrupt_gzip_partition_is_quarantined_as_unreadable(tmp_path):
    layout = Layout(tmp_path)
    write_jsonl(layout.raw_dir / "a.jsonl", good_events())
    data = bytearray(gzip.compress(b"\n".join(json.dumps(e).encode() for e in good_events())))
    for i in range(20, 40):  # inside the deflate stream, after the 10-byte header
        data[i] ^= 0xFF
    (layout.raw_dir / "b.jsonl.gz").write_bytes(bytes(data))
    metrics = ingest.run(Params(), layout)
    assert metrics["quarantined_by_reason"].get("unreadable_file") == 1
    assert "corrupt gzip" in pl.read_parquet(layout.rejects).filter(pl.col("line_no") == 0)["detail"][0]
    assert metrics["lines_in"] == metrics["accepted"] + metrics["quarantined"]
    assert pl.read_parquet(layout.records).height == 4


@pytest.mark.parametrize("kind", ["accept", "comparison"])
def test_an_output_of_another_tenant_is_never_joined(tmp_path, kind):
    secret = "GLOBEX PRIVATE DRAFT"
    fields = ({"output_id": "o1"} if kind == "accept" else {"output_ids": ["o0", "o1"], "preferred_output_id": "o0"})
    events = [interaction("i1"), output("i1", "o0"), output("i1", "o1", tenant="globex", text=secret),
              feedback("i1", "f1", kind, **fields)]
    metrics, layout = _run(tmp_path, {"d.jsonl": events})
    rejects = pl.read_parquet(layout.rejects)
    assert pl.read_parquet(layout.records).height == 0
    assert metrics["quarantined_by_reason"] == {"orphan_output": 1, "orphan_feedback": 1}
    assert metrics["lines_in"] == metrics["accepted"] + metrics["quarantined"]
    detail = rejects.filter(pl.col("reason") == "orphan_feedback")["detail"][0]
    assert "another tenant" in detail


def test_a_utf8_bom_at_the_start_of_a_file_is_ignored(tmp_path):
    layout = Layout(tmp_path)
    layout.raw_dir.mkdir(parents=True)
    lines = [json.dumps(e, ensure_ascii=False).encode() for e in good_events()]
    (layout.raw_dir / "d.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    metrics = ingest.run(Params(), layout)
    assert metrics["quarantined"] == 0
    assert pl.read_parquet(layout.records).height == 4


def test_reject_columns_keep_only_identifiers_never_raw_values(tmp_path):
    bad_type = {**interaction("i1"), "event_type": f"please reply to {CANARY_EMAIL}"}
    bad_ts = {**interaction("i2"), "event_id": CANARY_EMAIL, "ts": "yesterday"}
    orphan = {**feedback("ghost", "f1", "accept", output_id="o1"), "event_id": f"{CANARY_EMAIL} x"}
    metrics, layout = _run(tmp_path, {"d.jsonl": [bad_type, bad_ts, orphan]})
    rejects = pl.read_parquet(layout.rejects)
    assert metrics["quarantined"] == rejects.height == 3
    assert not any(CANARY_EMAIL in str(v) for row in rejects.rows() for v in row)
    assert rejects.select("event_id", "event_type").rows() == [("ev-i-i1", None), (None, "interaction"),
                                                                (None, "feedback")]


ESCAPED_PII = [
    ("my SSN\t123-45-6789", "123-45-6789"),
    ("Ship to:\n1600 Pennsylvania Avenue NW", "1600 Pennsylvania Avenue"),
    ("Dear José García, your card", "Garc"),
]


@pytest.mark.parametrize(("text", "pii"), ESCAPED_PII, ids=["tab", "newline", "unicode-escape"])
@pytest.mark.parametrize("truncated", [False, True], ids=["object", "truncated"])
def test_pii_hidden_by_json_escapes_is_scrubbed_in_the_excerpt(tmp_path, text, pii, truncated):
    bad = {"prompt": text, **interaction("i1"), "event_type": "click"}
    bad["prompt"] = text  # first key, so it is inside the excerpt
    line = json.dumps(bad)  # ASCII only: every non-ASCII letter is an escape
    line = line[: line.index('"ts"')] if truncated else line
    _, layout = _run(tmp_path, {"d.jsonl": [line]})
    rejects = pl.read_parquet(layout.rejects)
    assert rejects["reason"].to_list() == ["invalid_json" if truncated else "unknown_event_type"]
    assert pii not in rejects["excerpt"][0]
    assert "\\" not in rejects["excerpt"][0]  # no escape left to hide a value behind


def test_pii_in_json_text_inside_a_rejected_line_is_scrubbed_in_the_excerpt(tmp_path):
    """A context list of serialised tool results: JSON text inside the line's strings, escaped twice."""
    tool = json.dumps({"customer": "Zo\u00eb M\u00fcller", "sig": "Best regards,\nMarisol Quintanilla"})
    bad = {"context": [tool], **interaction("i1")}  # a list, not a string: quarantined; first key
    _, layout = _run(tmp_path, {"d.jsonl": [json.dumps(bad)]})
    rejects = pl.read_parquet(layout.rejects)
    assert rejects["reason"].to_list() == ["wrong_type"]
    excerpt = rejects["excerpt"][0]
    for value in ("Zo\u00eb", "M\u00fcller", "Zo\\u00eb", "M\\u00fcller", "Marisol", "Quintanilla"):
        assert value not in excerpt, value
    assert "<PERSON>" in excerpt


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (rb'"a\tb\nc\"d\\e\/f"', '"a\tb\nc"d\\e/f"'),
        (rb'"\ud83d\ude00 \u00e9"', '"\U0001f600 \u00e9"'),
        (rb'"\ud800x \udc00"', '"\ufffdx \ufffd"'),  # lone surrogates
        (rb'"\\n \x \u12"', '"\\n \\x \\u12"'),  # an escaped backslash; unparseable escapes stay
    ],
)
def test_excerpt_reads_json_escapes_as_characters(raw, shown):
    assert ingest._excerpt(raw, [], "<{entity}>") == shown


@pytest.mark.parametrize("ts", ["1500-11-10T09:00:00.000037+00:00", "1900-11-10T09:00:00.000037+00:00",
                                "2300-11-10T09:00:00.000037+05:30", "9999-11-10T09:00:00.999999+00:00"])
def test_timestamps_are_exact_to_the_microsecond(ts):
    dt = datetime.fromisoformat(ts)
    assert ingest.parse_ts(ts) == calendar.timegm(dt.utctimetuple()) * 1_000_000 + dt.microsecond


# --------------------------------------------------------------------------- identifier fields

ID_PII = [  # (field, value, pieces of PII that must reach no output)
    ("thread_id", "maria.garcia@example.com/2026-11-02", ["maria.garcia@example.com", "maria.garcia@"]),
    ("model_version", "Siobhan Murphy's hotfix, call (415) 555-0134", ["Siobhan", "Murphy", "555-0134"]),
    ("skill", "email draft for Maria Garcia", ["Maria Garcia", "Garcia"]),
]


@pytest.mark.parametrize(("name", "value", "pii"), ID_PII, ids=[f for f, _, _ in ID_PII])
def test_pii_in_an_id_field_is_quarantined_and_kept_nowhere(tmp_path, name, value, pii):
    # one conversation carries the value in every event that has the field
    conversation = [interaction("i30"), output("i30", "o30"), feedback("i30", "f30", "accept", output_id="o30")]
    changed = 0
    for event in conversation:
        if name in event or event["event_type"] == "output":
            event[name] = value
            changed += 1
    metrics, layout = _run(tmp_path, {"d.jsonl": [*good_events(), *conversation]})
    expected = {"invalid_value": changed}
    if name not in conversation[2]:  # only the output carries it: the feedback names a quarantined output
        expected["orphan_feedback"] = 1
    assert metrics["quarantined_by_reason"] == expected
    assert metrics["lines_in"] == metrics["accepted"] + metrics["quarantined"] == len(good_events()) + 3
    assert metrics["quarantined"] == sum(expected.values())
    rejects, records = pl.read_parquet(layout.rejects), pl.read_parquet(layout.records)
    assert records.height == 4 and rejects.height == metrics["quarantined"]
    invalid = rejects.filter(pl.col("reason") == "invalid_value")
    assert invalid["detail"].to_list() == [f"field '{name}' {ingest.NOT_AN_IDENTIFIER}"] * changed
    for frame in (rejects, records):
        cells = [str(v) for row in frame.rows() for v in row]
        assert not any(piece in cell for piece in [value, *pii] for cell in cells)


ID_FIELD_EVENTS = {
    "event_id": interaction("i1"), "tenant_id": interaction("i1"), "skill": interaction("i1"),
    "thread_id": interaction("i1"), "interaction_id": interaction("i1"), "policy_id": output("i1", "o1"),
    "model_version": output("i1", "o1"), "output_id": feedback("i1", "f1", "accept", output_id="o1"),
}
NOT_IDENTIFIERS = ["a@b.example", "two words", "tenant/thread", "x" * 129, "-leading", "café", "a\nb", "semi;colon"]


@pytest.mark.parametrize("bad", NOT_IDENTIFIERS)
@pytest.mark.parametrize("name", sorted(ID_FIELD_EVENTS))
def test_every_id_field_must_be_an_identifier(name, bad):
    event = {**ID_FIELD_EVENTS[name], name: bad}
    assert ingest.validate_event(event, 100) == (RejectReason.INVALID_VALUE, f"field '{name}' {ingest.NOT_AN_IDENTIFIER}")


@pytest.mark.parametrize("bad", NOT_IDENTIFIERS)
def test_comparison_output_ids_must_be_identifiers(bad):
    listed = feedback("i1", "f1", "comparison", output_ids=["o1", bad], preferred_output_id="o1")
    reason, detail = ingest.validate_event(listed, 100)
    assert reason == RejectReason.INVALID_VALUE and "'output_ids'" in detail and bad not in detail
    preferred = feedback("i1", "f1", "comparison", output_ids=["o1", "o2"], preferred_output_id=bad)
    assert ingest.validate_event(preferred, 100) == (
        RejectReason.INVALID_VALUE, f"field 'preferred_output_id' {ingest.NOT_AN_IDENTIFIER}")


@pytest.mark.parametrize("good", ["evt_0123456789abcdef01234567", "3f2b8a4e-9c1d-4e5f-8a7b-6c5d4e3f2a1b", "dpo-prod",
                                  "2026.11.02-rc1", "email_draft", "ns:thread:42", "x" * 128, "7"])
def test_identifier_shaped_values_are_accepted(good):
    for name, base in ID_FIELD_EVENTS.items():
        assert ingest.validate_event({**base, name: good}, 100) is None, name
    cmp = feedback("i1", "f1", "comparison", output_ids=["o1", good], preferred_output_id=good)
    assert ingest.validate_event(cmp, 100) is None
