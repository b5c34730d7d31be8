"""Drift's reference window: what promotion records, and how drift turns it into windows.

Pure rules on hand-made tags and records (no registry here: the real MLflow store runs in
tests/integration/test_drift_reference.py).
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from pipelines import drift, reference
from pipelines.config import DriftParams
from pipelines.drift_features import KEY_COLUMNS, frame_fingerprint
from pipelines.layout import Layout
from pipelines.reference import NO_CHAMPION, Champion, ChampionLookup, TrainingEvents, plan_windows
from pipelines.tracking import file_md5
from tests.unit.test_drift import BagOfWords, make_records, small_params

UTC = dt.UTC
END = dt.datetime(2026, 11, 29, 18, 30, tzinfo=UTC)          # the newest scrubbed event
FIRST = dt.datetime(2026, 11, 2, 0, 5, 1, 250, tzinfo=UTC)
LAST = dt.datetime(2026, 11, 15, 23, 59, 58, 999_999, tzinfo=UTC)


def champion(version: str = "3", first: dt.datetime = FIRST, last: dt.datetime = LAST,
             count: int = 100, fingerprint: str = "f" * 64) -> ChampionLookup:
    return ChampionLookup(Champion(version, TrainingEvents(first, last, count, fingerprint)))


# ------------------------------------------------------------------------------ tags


def test_tags_round_trip_and_bad_tags_mean_not_recorded():
    ev = TrainingEvents(FIRST, LAST, 1234, "ab" * 32)
    tags = ev.to_tags()
    assert tags == {"train_events.first_ts": "2026-11-02T00:05:01.000250+00:00",
                    "train_events.last_ts": "2026-11-15T23:59:58.999999+00:00",
                    "train_events.count": "1234", "train_events.fingerprint": "ab" * 32}
    assert TrainingEvents.from_tags({**tags, "gate": "passed"}) == ev
    assert TrainingEvents.from_tags({}) is None                                   # promoted before the tags
    assert TrainingEvents.from_tags({**tags, "train_events.count": "many"}) is None
    assert TrainingEvents.from_tags({**tags, "train_events.first_ts": "2026-12-01T00:00:00+00:00"}) is None
    naive = {**tags, "train_events.first_ts": "2026-11-02T00:05:01.000250"}     # read as UTC
    assert TrainingEvents.from_tags(naive).first_ts == FIRST


def test_summarise_events_is_the_window_count_and_content_of_the_records():
    records = make_records(300, 5)
    ev = reference.summarise_events(records)
    assert (ev.first_ts, ev.last_ts, ev.count) == (records["ts"].min(), records["ts"].max(), 300)
    assert ev.fingerprint == frame_fingerprint(records, KEY_COLUMNS)
    assert reference.summarise_events(records.head(0)) is None


def _promotable(tmp_path, records: pl.DataFrame) -> tuple[Layout, dict]:
    layout = Layout(tmp_path)
    layout.scrubbed.parent.mkdir(parents=True)
    records.write_parquet(layout.scrubbed)
    layout.pairs_dir.mkdir(parents=True)
    pl.DataFrame({"pair_id": ["p1", "p2"]}).write_parquet(layout.pairs_split("train"))
    return layout, {"data": {"train_pairs_md5": file_md5(layout.pairs_split("train"))}}


def test_promotion_tags_the_scrubbed_records_behind_the_candidates_pairs(tmp_path):
    records = make_records(200, 6)
    layout, manifest = _promotable(tmp_path, records)
    tags = reference.training_events_tags(layout, manifest)
    assert TrainingEvents.from_tags(tags) == reference.summarise_events(records)


def test_no_tags_when_the_pairs_on_disk_are_not_the_candidates(tmp_path, caplog):
    layout, manifest = _promotable(tmp_path, make_records(50, 7))
    assert reference.training_events_tags(layout, {"data": {"train_pairs_md5": "0" * 32}}) == {}
    assert "no train_events.* tags" in caplog.text
    assert reference.training_events_tags(layout, {}) == {}                      # a manifest without data
    layout.scrubbed.unlink()
    assert reference.training_events_tags(layout, manifest) == {}                # no scrubbed file


# ------------------------------------------------------------------------------ windows (pure)


def test_champion_reference_is_exactly_its_training_window():
    plan = plan_windows(DriftParams(current_days=7), END, champion())
    assert plan.source == "champion v3" and plan.champion.version == "3"
    assert (plan.reference.start, plan.reference.end) == (FIRST, LAST + dt.timedelta(microseconds=1))
    # its data ended before the last 7 days: the current window is the last 7 whole days
    assert plan.current == reference.Window(dt.datetime(2026, 11, 23, tzinfo=UTC))
    assert plan.reference_description == "champion v3's training data: 2026-11-02 00:05:01 .. 2026-11-15 23:59:58"
    assert plan.current_description == "2026-11-23 .. 2026-11-29 (last 7 days)"


def test_current_window_holds_only_events_the_champion_never_saw():
    last = dt.datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    plan = plan_windows(DriftParams(current_days=7), END, champion(last=last))
    assert plan.current.start == last + dt.timedelta(microseconds=1)
    assert "only events after champion v3's training data" in plan.current_description


@pytest.mark.parametrize(("lookup", "source"), [
    (None, NO_CHAMPION),
    (ChampionLookup(None, detail="no MLflow registry at sqlite:///x/mlflow.db"), NO_CHAMPION),
    (ChampionLookup(None, "time split (registry unreadable)", "boom"), "time split (registry unreadable)"),
    (ChampionLookup(Champion("2", None)), "time split (champion v2 has no training-window tags)"),
    (champion(last=END), "time split (champion v3: no events after its training data)"),
])
def test_without_a_usable_champion_the_time_split_is_used_and_says_why(lookup, source):
    p = DriftParams(current_days=7, reference_days=14)
    plan = plan_windows(p, END, lookup)
    split = reference.time_split(p, END)
    assert plan.source == source
    assert (plan.reference, plan.current) == (split.reference, split.current)
    assert plan.reference == reference.Window(dt.datetime(2026, 11, 9, tzinfo=UTC), dt.datetime(2026, 11, 23, tzinfo=UTC))
    assert plan.champion is None and (plan.note or lookup is None)


def test_explicit_modes_ignore_the_registry():
    lookup = champion()
    dates = DriftParams(reference="dates", reference_start="2026-11-03", reference_end="2026-11-05")
    plan = plan_windows(dates, END, lookup)
    assert plan.source == "date range" and plan.champion is None
    assert plan.reference == reference.Window(dt.datetime(2026, 11, 3, tzinfo=UTC), dt.datetime(2026, 11, 5, tzinfo=UTC))
    assert plan_windows(DriftParams(reference="time_split"), END, lookup).source == "time split"
    path = plan_windows(DriftParams(reference="path", reference_path="ref.parquet"), END, lookup)
    assert path.source == "file ref.parquet" and path.reference is None


def test_a_date_range_reaching_into_the_current_window_is_clipped_and_said():
    p = DriftParams(reference="dates", reference_start="2026-11-02", reference_end="2026-12-01", current_days=7)
    plan = plan_windows(p, END)
    cur = dt.datetime(2026, 11, 23, tzinfo=UTC)
    assert plan.reference == reference.Window(dt.datetime(2026, 11, 2, tzinfo=UTC), cur)
    assert plan.reference_description == "2026-11-02 .. 2026-11-22"
    assert plan.note == ("reference_end 2026-12-01 reaches into the current window (from 2026-11-23): "
                         "reference clipped to 2026-11-02 .. 2026-11-22")
    inside = DriftParams(reference="dates", reference_start="2026-11-24", reference_end="2026-11-26")
    with pytest.raises(ValueError, match="inside the current window"):
        plan_windows(inside, END)


def test_overlapping_dates_share_no_event_between_the_windows():
    records = make_records(700, 41, start="2026-11-02", days=14).lazy()
    p = DriftParams(reference="dates", reference_start="2026-11-02", reference_end="2026-11-16", current_days=7)
    ref, cur, windows = drift.select_windows(records, p)
    assert ref.height > 0 and cur.height > 0
    assert ref.join(cur, on="event_id").height == 0 and ref.height + cur.height == 700
    assert "clipped" in windows["reference"]["note"]


def test_a_reference_file_loses_the_events_of_the_current_window():
    records = make_records(700, 42, start="2026-11-02", days=14)
    p = DriftParams(reference="path", reference_path="ref.parquet", current_days=7)
    ref, cur, windows = drift.select_windows(records.lazy(), p, records.lazy())      # the same file twice
    assert ref.join(cur, on="event_id").height == 0 and ref.height == 700 - cur.height
    assert windows["reference"]["note"] == (f"{cur.height} of the 700 reference records are in the current "
                                            "window and were dropped")
    other = make_records(300, 43, start="2026-10-01", days=7)
    ref, _, windows = drift.select_windows(records.lazy(), p, other.lazy())
    assert ref.height == 300 and windows["reference"]["note"] == ""


def test_date_params_need_reference_dates_and_an_ordered_range():
    with pytest.raises(ValueError, match="only with reference: dates"):
        DriftParams(reference_start="2026-11-03", reference_end="2026-11-05")   # default mode: champion
    with pytest.raises(ValueError, match="must be after"):
        DriftParams(reference="dates", reference_start="2026-11-05", reference_end="2026-11-05")
    with pytest.raises(ValueError, match="ISO date"):
        DriftParams(reference="dates", reference_start="5 Nov", reference_end="2026-11-05")


# ------------------------------------------------------------------------------ windows on records


def _weeks() -> tuple[pl.DataFrame, pl.DataFrame]:
    trained = make_records(400, 90, start="2026-11-02", days=14)
    later = make_records(400, 91, start="2026-11-16", days=14)
    return trained, later


def test_select_windows_finds_the_champions_records_again():
    trained, later = _weeks()
    ev = reference.summarise_events(trained)
    lookup = ChampionLookup(Champion("4", ev))
    ref, cur, windows = drift.select_windows(pl.concat([later, trained]).lazy(), DriftParams(), None, lookup)
    assert frame_fingerprint(ref, KEY_COLUMNS) == ev.fingerprint and ref.height == 400
    cur_start = reference.current_start(DriftParams(), later["ts"].max())        # the last 7 days
    assert cur_start > ev.last_ts and cur.height == later.filter(pl.col("ts") >= cur_start).height
    w = windows["reference"]
    assert (w["source"], w["mode"], w["champion"]["fingerprint_match"]) == ("champion v4", "champion", True)
    assert w["note"] == "exactly its 400 training records, same content fingerprint"


def test_changed_or_vanished_training_records_are_said():
    trained, later = _weeks()
    ev = reference.summarise_events(trained)
    lookup = ChampionLookup(Champion("4", ev))
    fewer = pl.concat([trained.slice(10), later]).lazy()                          # retention dropped some
    _, _, windows = drift.select_windows(fewer, DriftParams(), None, lookup)
    assert windows["reference"]["source"] == "champion v4"
    assert windows["reference"]["note"].startswith("390 of the 400 records")
    edited = pl.concat([trained.with_columns(pl.lit("rescrubbed").alias("prompt")), later]).lazy()
    _, _, windows = drift.select_windows(edited, DriftParams(), None, lookup)
    assert not windows["reference"]["champion"]["fingerprint_match"]
    ref, _, windows = drift.select_windows(later.lazy(), DriftParams(), None, lookup)   # all gone
    assert windows["reference"]["source"] == "time split (champion v4: its training events are gone)"
    assert ref.height > 0 and ref["ts"].max() < reference.current_start(DriftParams(), later["ts"].max())


def test_report_header_names_the_reference(tmp_path):
    trained, later = _weeks()
    ref, cur, windows = drift.select_windows(pl.concat([trained, later]).lazy(), DriftParams(), None,
                                             ChampionLookup(Champion("4", reference.summarise_events(trained))))
    result = drift.detect_drift(ref, cur, small_params(), None, encoder=BagOfWords())
    page = drift.summary_html(result, windows)
    assert "<b>Reference: champion v4</b> (exactly its 400 training records" in page


def test_no_local_registry_means_no_champion_and_creates_nothing(tmp_path, monkeypatch):
    from pipelines.config import Params

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    lookup = reference.lookup_champion(Params(), Layout(tmp_path))
    assert lookup.champion is None and lookup.source == NO_CHAMPION
    assert lookup.detail.startswith("no MLflow registry at sqlite:///")
    assert not (tmp_path / "mlflow").exists()
