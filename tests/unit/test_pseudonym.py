"""ingest.hash_ids: keyed pseudonyms for ids that may hold a contact detail."""

from __future__ import annotations

import polars as pl
import pytest

from pipelines import ingest
from pipelines.config import ConfigError, Params
from pipelines.ingest import IDENTIFIER_PATTERN
from pipelines.layout import Layout
from pipelines.pseudonym import (
    ENV_KEY,
    PREFIX,
    IdKeyError,
    key_fingerprint,
    load_key,
    pseudonymizer,
)
from tests.factories import feedback, interaction, output, write_jsonl

KEY = "k" * 32
PHONE = "4155550199"
THREAD = f"sms-{PHONE}"


def _events(thread: str = THREAD) -> list[dict]:
    return [
        interaction("i1", thread=thread),
        output("i1", "o1", thread=thread),
        feedback("i1", "f1", "rating", thread=thread, output_id="o1", rating=4),
        interaction("i2"),
        output("i2", "o2a", text="Restart the pod."),
        output("i2", "o2b", text="Check the logs first, then restart."),
        feedback("i2", "f2", "comparison", output_ids=["o2a", "o2b"], preferred_output_id="o2b"),
    ]


def _run(tmp_path, rows: list, hash_ids: bool) -> tuple[dict, Layout]:
    layout = Layout(tmp_path)
    write_jsonl(layout.raw_dir / "d.jsonl", rows)
    return ingest.run(Params.model_validate({"ingest": {"hash_ids": hash_ids}}), layout), layout


def test_the_key_must_be_set_and_long_and_is_never_echoed():
    with pytest.raises(IdKeyError, match=f"{ENV_KEY} is not set"):
        load_key({})
    with pytest.raises(IdKeyError, match="shorter than") as err:
        load_key({ENV_KEY: "hunter2"})
    assert "hunter2" not in str(err.value)
    assert isinstance(err.value, ConfigError)  # the CLI's exit 2, one line
    assert load_key({ENV_KEY: KEY}) == KEY.encode()


def test_pseudonyms_are_stable_keyed_and_identifier_shaped():
    p, q = pseudonymizer(KEY.encode()), pseudonymizer(b"another key of 32 characters....")
    a = p(THREAD)
    assert a == p(THREAD) == pseudonymizer(KEY.encode())(THREAD)  # same id, same key: same pseudonym
    assert a != p("sms-4155550198") and a != q(THREAD)
    assert a.startswith(PREFIX) and PHONE not in a and IDENTIFIER_PATTERN.fullmatch(a)
    assert p(None) is None
    assert key_fingerprint(KEY.encode()) != key_fingerprint(b"another key") and KEY not in key_fingerprint(KEY.encode())


def test_hashed_ingest_keeps_every_count_and_join_but_no_raw_id(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_KEY, KEY)
    plain, plain_layout = _run(tmp_path / "plain", _events(), hash_ids=False)
    hashed, layout = _run(tmp_path / "hashed", _events(), hash_ids=True)
    for key in ("lines_in", "accepted", "quarantined", "records_out", "valid_by_type"):
        assert hashed[key] == plain[key]
    assert (plain["ids_hashed"], hashed["ids_hashed"]) == (False, True)
    assert hashed["id_key_fingerprint"] == key_fingerprint(KEY.encode())
    records, before = pl.read_parquet(layout.records), pl.read_parquet(plain_layout.records)
    p = pseudonymizer(KEY.encode())
    for col in ("event_id", "thread_id", "interaction_id", "output_id", "other_output_id"):
        want = [p(v) for v in before.sort("ts", "output_text")[col].to_list()]
        assert sorted(records.sort("ts", "output_text")[col].to_list(), key=str) == sorted(want, key=str), col
    cmp = records.filter(pl.col("feedback_type") == "comparison").row(0, named=True)
    assert (cmp["output_text"], cmp["other_output_text"]) == ("Check the logs first, then restart.", "Restart the pod.")
    assert records["tenant_id"].to_list() == before["tenant_id"].to_list()  # group labels are kept
    assert PHONE.encode() not in layout.records.read_bytes()


def test_a_quarantined_line_shows_pseudonyms_in_its_event_id_and_excerpt(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_KEY, KEY)
    bad = {"thread_id": THREAD, **interaction("i9", thread=THREAD), "event_type": "click"}
    ghost = feedback("ghost", "f-orphan", "accept", thread=THREAD, output_id="o-ghost")  # rejected after the join
    metrics, layout = _run(tmp_path, [*_events(), bad, ghost], hash_ids=True)
    assert metrics["quarantined_by_reason"] == {"orphan_feedback": 1, "unknown_event_type": 1}
    rejects = pl.read_parquet(layout.rejects)
    p = pseudonymizer(KEY.encode())
    assert set(rejects["event_id"]) == {p("ev-i-i9"), p("ev-f-f-orphan")}  # hashed once, not twice
    assert all(PHONE not in e for e in rejects["excerpt"])
    assert any(p(THREAD) in e for e in rejects["excerpt"])
    assert PHONE.encode() not in layout.rejects.read_bytes()


def test_ids_in_a_broken_line_are_pseudonymised_in_the_excerpt():
    p = pseudonymizer(KEY.encode())
    raw = b'{"thread_id": "sms-4155550199", "output_ids": ["o-1", "o-2"], "event_id": "ev-4155550199'
    text = ingest._excerpt(raw, [], "<{entity}>", p)
    assert PHONE not in text
    assert p("o-1") in text and p("o-2") in text and p("ev-4155550199") in text


def test_hash_ids_without_a_key_stops_before_writing_anything(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_KEY, raising=False)
    with pytest.raises(IdKeyError):
        _run(tmp_path, _events(), hash_ids=True)
    assert not Layout(tmp_path).records.exists()
