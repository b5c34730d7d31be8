"""The scrub stage: same schema and rows out, PII gone, nulls kept, metrics written."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pyarrow.parquet as pq
import pytest

from pipelines import audit, pii, scrub
from pipelines.config import Params, ScrubParams
from pipelines.io import read_json
from pipelines.layout import Layout
from pipelines.schemas import FREE_TEXT_FIELDS, RECORD_SCHEMA

PLANTED = {
    "EMAIL": "maria.garcia@example.com",
    "PHONE": "(415) 555-0134",
    "CREDIT_CARD": "4539 1488 0343 6467",
    "IBAN": "DE89 3704 0044 0532 0130 00",
    "US_SSN": "123-45-6789",
    "IP_ADDRESS": "10.20.30.40",
    "PERSON": "Siobhan Murphy",
    "STREET_ADDRESS": "5737 Willow Ave Apt 19E",
}


def _record(i: int, **texts: str | None) -> dict:
    base = dict.fromkeys(RECORD_SCHEMA)
    base.update(
        event_id=f"fb-{i}",
        ts=dt.datetime(2026, 11, 2, 9, i, tzinfo=dt.UTC),
        tenant_id="acme",
        skill="support_reply",
        thread_id=f"th-{i}",
        interaction_id=f"in-{i}",
        turn=1,
        feedback_type="accept",
        output_id=f"out-{i}",
        policy_id="base",
        source_event_ids=[f"in-{i}", f"out-{i}", f"fb-{i}"],
    )
    base.update(texts)
    return base


@pytest.fixture
def layout(tmp_path) -> Layout:
    rows = [
        _record(
            0,
            prompt=f"Hi, my email is {PLANTED['EMAIL']} and my phone is {PLANTED['PHONE']}.",
            context=f"Customer: {PLANTED['PERSON']}\nIBAN: {PLANTED['IBAN']}",
            output_text=f"Thanks, {PLANTED['PERSON']}. The refund goes back to the card {PLANTED['CREDIT_CARD']}.",
        ),
        _record(
            1,
            prompt=f"My SSN is {PLANTED['US_SSN']}; server {PLANTED['IP_ADDRESS']} is down.",
            output_text=f"We will ship the replacement to {PLANTED['STREET_ADDRESS']}.",
            edited_text="Dear team, the Monday release moved to Tuesday.",
        ),
        _record(2, prompt="Summarize the Kubernetes cost report.", output_text="Costs fell 12%."),
        _record(
            3,
            prompt=f"Hi, my email is {PLANTED['EMAIL']} and my phone is {PLANTED['PHONE']}.",
            output_text="Done.",
            other_output_text=f"Thanks, {PLANTED['PERSON']}.",
        ),
    ]
    out = Layout(tmp_path)
    out.records.parent.mkdir(parents=True)
    pl.DataFrame(rows, schema=RECORD_SCHEMA).write_parquet(out.records)
    return out


def test_stage_scrubs_every_free_text_field(layout):
    metrics = scrub.run(Params(), layout)
    before = pl.read_parquet(layout.records)
    after = pl.read_parquet(layout.scrubbed)

    assert pq.read_schema(layout.scrubbed) == pq.read_schema(layout.records)
    assert after.schema == before.schema
    assert after.height == before.height == metrics["rows_in"] == metrics["rows_out"] == 4
    others = [c for c in RECORD_SCHEMA if c not in FREE_TEXT_FIELDS]
    assert after.select(others).equals(before.select(others))
    for field in FREE_TEXT_FIELDS:  # nulls stay null
        assert after[field].is_null().to_list() == before[field].is_null().to_list()
    text = "\n".join(v for f in FREE_TEXT_FIELDS for v in after[f].drop_nulls().to_list())
    for entity, value in PLANTED.items():
        assert value not in text, entity
        assert f"<{entity}>" in text, entity
    assert "Summarize the Kubernetes cost report." in after["prompt"].to_list()
    assert "Dear team, the Monday release moved to Tuesday." in after["edited_text"].to_list()


def test_stage_metrics_count_per_entity_and_field(layout):
    metrics = scrub.run(Params(), layout)
    assert read_json(layout.metrics("scrub")) == metrics
    assert metrics["entities"]["EMAIL"] == 2  # the same prompt on two records counts twice
    assert metrics["entities"]["PERSON"] == 3
    assert metrics["fields"]["prompt"] == {"EMAIL": 2, "IP_ADDRESS": 1, "PHONE": 2, "US_SSN": 1}
    assert metrics["fields"]["other_output_text"] == {"PERSON": 1}
    assert sum(metrics["entities"].values()) == metrics["placeholders_total"]
    assert "seconds" not in metrics  # metrics are identical on a rerun


def test_stage_honours_entities_and_placeholder_format(layout):
    params = Params()
    params.scrub = ScrubParams(entities=["EMAIL"], placeholder_format="[{entity}]")
    metrics = scrub.run(params, layout)
    after = pl.read_parquet(layout.scrubbed)
    assert after["prompt"][0] == f"Hi, my email is [EMAIL] and my phone is {PLANTED['PHONE']}."
    assert {e for e, n in metrics["entities"].items() if n} == {"EMAIL"}


def test_stage_without_input_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="ingest"):
        scrub.run(Params(), Layout(tmp_path))


def test_stage_rerun_gives_identical_file(layout):
    scrub.run(Params(), layout)
    first = layout.scrubbed.read_bytes()
    scrub.run(Params(), layout)
    assert layout.scrubbed.read_bytes() == first


def test_stage_in_small_batches_with_workers(layout, monkeypatch):
    monkeypatch.setattr(scrub, "BATCH_ROWS", 1)
    monkeypatch.setattr(scrub, "PARALLEL_MIN_ROWS", 1)
    monkeypatch.setattr(pii, "PARALLEL_MIN_TEXTS", 1)
    single = scrub.run(Params(), layout)
    batched = pl.read_parquet(layout.scrubbed)
    assert single["batches"] == 4 and single["workers"] >= 1
    monkeypatch.setattr(scrub, "BATCH_ROWS", 100_000)
    monkeypatch.setattr(scrub, "PARALLEL_MIN_ROWS", 10**9)
    whole = scrub.run(Params(), layout)
    assert pl.read_parquet(layout.scrubbed).equals(batched)
    assert whole["entities"] == single["entities"] and whole["fields"] == single["fields"]


def test_scrub_frame_helper_for_ingest():
    df = pl.DataFrame({"a": ["Call (415) 555-0134", None], "b": ["ok", "Hi Siobhan,"], "n": [1, 2]})
    out, counts = scrub.scrub_frame(df, ["a", "b", "missing"], ScrubParams())
    assert out["a"].to_list() == ["Call <PHONE>", None]
    assert out["b"].to_list() == ["ok", "Hi <PERSON>,"]
    assert out["n"].to_list() == [1, 2]
    assert counts == {"PHONE": 1, "PERSON": 1}


def test_worker_count_depends_on_size():
    assert scrub.worker_count(10) == 1
    assert scrub.worker_count(10**7) >= 1


ESCAPED_CONTEXT = json.dumps([  # a client that stores its context list as a JSON string (ensure_ascii)
    {"source": "crm", "text": "Customer: Zo\u00eb M\u00fcller, Hauptstra\u00dfe 17, 10115 Berlin"},
    "Best regards,\nMarisol Quintanilla\nSSN\t219-09-9999",
])
ESCAPED_VALUES = ("Zo\u00eb M\u00fcller", "M\u00fcller", "Hauptstra\u00dfe 17", "Quintanilla", "219-09-9999")


def test_stage_scrubs_pii_written_with_json_escapes(tmp_path):
    """A field holding JSON text ("Zo\\u00eb M\\u00fcller", "\\nMarisol", "SSN\\t219-...") is scrubbed
    as read: the escapes no longer hide a name, an address or an SSN from the scrubber."""
    layout = Layout(tmp_path)
    layout.records.parent.mkdir(parents=True)
    plain = "Hi, my email is maria.garcia@example.com."
    rows = [_record(0, prompt=plain, context=ESCAPED_CONTEXT, output_text="Done."),
            _record(1, prompt="Summarise " + json.dumps({"note": "call Zo\u00eb M\u00fcller"}), output_text="ok")]
    pl.DataFrame(rows, schema=RECORD_SCHEMA).write_parquet(layout.records)
    metrics = scrub.run(Params(), layout)
    after = pl.read_parquet(layout.scrubbed)
    context, prompt = after["context"][0], after["prompt"][1]
    for text in (context, prompt):
        decoded = audit.json_unescape(text)
        for value in ESCAPED_VALUES:
            assert value not in decoded and value not in text, value
    assert json.loads(context)[0]["source"] == "crm"  # still the JSON it was, with placeholders in it
    assert "<PERSON>" in json.loads(context)[1] and "<US_SSN>" in json.loads(context)[1]
    assert after["prompt"][0] == pii.scrub_text(plain)[0]  # text without escapes: as before
    assert metrics["fields"]["context"]["US_SSN"] == 1
    assert metrics["fields"]["prompt"]["PERSON"] == 1
    assert sum(metrics["entities"].values()) == metrics["placeholders_total"]
    scrub.run(Params(), layout)  # and a rerun gives the same file
    assert pl.read_parquet(layout.scrubbed).equals(after)


def test_scrub_escaped_keeps_json_and_honours_entities_and_format():
    tool = json.dumps(json.dumps({"name": "Zo\u00eb M\u00fcller", "mail": "zoe@example.de"}))  # escaped twice
    params = ScrubParams(entities=["PERSON"], placeholder_format="[[{entity}]]")
    ((i, new, counts),) = scrub.scrub_escaped([tool, r"C:\Users\nancy\table.txt"], params)
    assert i == 0 and counts == {"PERSON": 1}
    assert json.loads(json.loads(new)) == {"name": "[[PERSON]]", "mail": "zoe@example.de"}
    assert scrub.scrub_escaped([new], params) == []  # a fixed point
