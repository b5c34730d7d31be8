"""Which scrubbed events the drift check compares: the reference and the current window.

Why a module of its own: the default reference is *the data the current champion was
trained on*, which only the model registry knows. Promotion records it on the model
version (:func:`training_events_tags`); the drift stage reads it back
(:func:`lookup_champion`) and turns it into two time windows (:func:`plan_windows`).
Everything but those two registry/file readers is pure, so each rule is a unit test.

The recorded tags (``train_events.*`` on the model version):

============================ ===========================================================
``train_events.first_ts``    ``ts`` of the oldest scrubbed record the pairs were built from
``train_events.last_ts``     ``ts`` of the newest one (ISO 8601, UTC, microseconds)
``train_events.count``       how many scrubbed records that was
``train_events.fingerprint`` :func:`~pipelines.drift_features.frame_fingerprint` of them
============================ ===========================================================

Windows by ``drift.reference`` (``reference_source`` in drift.json says which was used):

- ``champion`` (default): reference = the scrubbed records with ``first_ts <= ts <= last_ts``
  of the champion (``champion vN``); current = the last ``current_days`` days, but only
  events newer than ``last_ts`` (the champion never saw them). Falls back to the time
  split, saying why, when there is no registry or champion yet, when the champion has no
  ``train_events.*`` tags (promoted before they existed), when no event is newer than
  its training data, or when its training events are gone from the scrubbed records;
- ``time_split``: the days before the last ``current_days`` days (``reference_days`` of them, or all);
- ``dates``: ``reference_start`` (inclusive) .. ``reference_end`` (exclusive), clipped at
  the current window's start;
- ``path``: another Parquet file of scrubbed records, less any event of the current window.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from pipelines.drift_features import KEY_COLUMNS, frame_fingerprint

if TYPE_CHECKING:
    from pipelines.config import DriftParams, Params
    from pipelines.layout import Layout

log = logging.getLogger(__name__)

TAG_PREFIX = "train_events."
NO_CHAMPION = "time split (no champion yet)"
TICK = dt.timedelta(microseconds=1)
"""The resolution of ``ts`` (``Datetime("us")``): ``last_ts + TICK`` is the first instant after it."""


# ----------------------------------------------------------------------------- what was trained on


@dataclass(frozen=True)
class TrainingEvents:
    """The scrubbed records a candidate's pairs were built from, as tagged on its model version."""

    first_ts: dt.datetime
    last_ts: dt.datetime
    count: int
    fingerprint: str

    def to_tags(self) -> dict[str, str]:
        return {
            f"{TAG_PREFIX}first_ts": self.first_ts.isoformat(),
            f"{TAG_PREFIX}last_ts": self.last_ts.isoformat(),
            f"{TAG_PREFIX}count": str(self.count),
            f"{TAG_PREFIX}fingerprint": self.fingerprint,
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> TrainingEvents | None:
        """The recorded window, or None when a tag is missing or unreadable (then: time split)."""
        try:
            first = _utc(dt.datetime.fromisoformat(tags[f"{TAG_PREFIX}first_ts"]))
            last = _utc(dt.datetime.fromisoformat(tags[f"{TAG_PREFIX}last_ts"]))
            count = int(tags[f"{TAG_PREFIX}count"])
        except (KeyError, TypeError, ValueError):
            return None
        if last < first or count < 1:
            return None
        return cls(first, last, count, str(tags.get(f"{TAG_PREFIX}fingerprint", "")))


def _utc(ts: dt.datetime) -> dt.datetime:
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def summarise_events(records: pl.DataFrame) -> TrainingEvents | None:
    """Window, count and content fingerprint of scrubbed records (None when there are none)."""
    if records.height == 0:
        return None
    lo, hi = records.select(pl.col("ts").min().alias("lo"), pl.col("ts").max().alias("hi")).row(0)
    return TrainingEvents(_utc(lo), _utc(hi), records.height, frame_fingerprint(records, KEY_COLUMNS))


def training_events_tags(layout: Layout, manifest: Mapping[str, Any]) -> dict[str, str]:
    """``train_events.*`` tags for the candidate being promoted; empty (and a warning) when unsure.

    Why at promotion, from the scrubbed file: the manifest's pair hashes name the pairs,
    not the events behind them, and the scrubbed file grows every week, so only a time
    window recorded now can find those events again later. The pairs stage reads the
    whole scrubbed file, so its window is the training data's. Guard: the train pairs on
    disk must have the MD5 the candidate's manifest recorded, else the scrubbed file may
    have moved on since training, and no tags beat wrong ones.
    """
    from pipelines import tracking

    recorded = (manifest.get("data") or {}).get("train_pairs_md5")
    pairs = layout.pairs_split("train")
    if not recorded or not pairs.exists() or tracking.file_md5(pairs) != recorded:
        log.warning("promote: %s is not the candidate's train split (manifest md5 %s): no train_events.* tags, "
                    "so drift will use the time split while this version is champion", pairs, recorded or "missing")
        return {}
    try:
        lf = pl.scan_parquet(layout.scrubbed)
        present = lf.collect_schema().names()
        records = lf.select(c for c in ("ts", *KEY_COLUMNS) if c in present).collect()
    except (OSError, pl.exceptions.PolarsError) as exc:
        log.warning("promote: cannot read %s (%s): no train_events.* tags", layout.scrubbed, exc)
        return {}
    events = summarise_events(records)
    return events.to_tags() if events else {}


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Champion:
    """The registry's current champion and what it was trained on (None: not recorded)."""

    version: str
    events: TrainingEvents | None


@dataclass(frozen=True)
class ChampionLookup:
    """:func:`lookup_champion`'s answer: a champion, or the fallback's source and why."""

    champion: Champion | None
    source: str = NO_CHAMPION     # the time split's reference_source when there is no champion
    detail: str = ""


def lookup_champion(params: Params, layout: Layout) -> ChampionLookup:
    """The ``champion`` alias in the configured registry (MLFLOW_TRACKING_URI or the project's).

    Never creates a store: a missing local SQLite file means no registry yet. A registry
    that cannot be read is a reason to fall back, not a failure: the weekly check must
    still run, and drift.json says which reference it used.
    """
    from pipelines import tracking

    uri = tracking.tracking_uri(layout)
    name, alias = params.registry.model_name, params.registry.champion_alias
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return ChampionLookup(None, detail=f"no MLflow registry at {uri}")
    try:
        version = tracking.alias_version(tracking.client(layout), name, alias)
    except Exception as exc:  # any store error means: no champion to read
        return ChampionLookup(None, "time split (registry unreadable)", f"{uri}: {type(exc).__name__}: {exc}"[:300])
    if version is None:
        return ChampionLookup(None, detail=f"model {name!r} has no {alias!r} alias in {uri}")
    return ChampionLookup(Champion(str(version.version), TrainingEvents.from_tags(version.tags)))


# ----------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """The half-open interval ``start <= ts < end`` (None: unbounded on that side)."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def expr(self) -> pl.Expr:
        cond = pl.lit(True)
        if self.start is not None:
            cond = cond & (pl.col("ts") >= self.start)
        if self.end is not None:
            cond = cond & (pl.col("ts") < self.end)
        return cond


@dataclass(frozen=True)
class WindowPlan:
    """Both windows, where the reference came from, and why (when it is a fallback)."""

    source: str                      # drift.json reference_source: "champion v3", "date range", ...
    reference: Window | None         # None: the reference is another file (``path``)
    current: Window
    reference_description: str
    current_description: str
    note: str = ""                   # why, when the reference is a fallback
    champion: Champion | None = None


def day_start(ts: dt.datetime) -> dt.datetime:
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def parse_day(value: str) -> dt.datetime:
    """An ISO date (midnight UTC) or date-time (converted to UTC)."""
    return _utc(dt.datetime.fromisoformat(value))


def current_start(p: DriftParams, end: dt.datetime) -> dt.datetime:
    """First instant of the last ``current_days`` whole UTC days ending with ``end``."""
    return day_start(end) - dt.timedelta(days=p.current_days - 1)


def time_split(p: DriftParams, end: dt.datetime, source: str = "time split", note: str = "") -> WindowPlan:
    """Reference = the days before the current window (``reference_days`` of them, or all)."""
    cur = current_start(p, end)
    ref_start = cur - dt.timedelta(days=p.reference_days) if p.reference_days else None
    return WindowPlan(
        source=source, reference=Window(ref_start, cur), current=Window(cur),
        reference_description=f"{ref_start.date() if ref_start else 'start'} .. {(cur - dt.timedelta(days=1)).date()}",
        current_description=_last_days(p, cur, end), note=note,
    )


def plan_windows(p: DriftParams, end: dt.datetime, lookup: ChampionLookup | None = None) -> WindowPlan:
    """The windows for ``drift.reference``, given the newest record's ``ts`` and the registry's answer.

    ``champion`` mode clips the current window to events after the champion's training
    data: an event it was trained on is not new traffic, and counting it on both sides
    would hide drift. When that leaves nothing (the champion saw every event, as right
    after ``dvc repro`` on the bundled sample) the time split is used instead.
    """
    cur = current_start(p, end)
    last_days = _last_days(p, cur, end)
    if p.reference == "time_split":
        return time_split(p, end)
    if p.reference == "dates":
        return date_range(p, cur, last_days)
    if p.reference == "path":
        return WindowPlan(f"file {p.reference_path}", None, Window(cur), f"file {p.reference_path}", last_days)
    lookup = lookup or ChampionLookup(None)
    champ = lookup.champion
    if champ is None:
        return time_split(p, end, lookup.source, lookup.detail)
    ev = champ.events
    if ev is None:
        return time_split(p, end, f"time split (champion v{champ.version} has no training-window tags)",
                          f"champion v{champ.version} has no {TAG_PREFIX}* tags (promoted before they were "
                          "recorded); the next promotion records them")
    after = ev.last_ts + TICK
    if end < after:
        return time_split(p, end, f"time split (champion v{champ.version}: no events after its training data)",
                          f"champion v{champ.version} was trained on events up to {ev.last_ts.isoformat()}, "
                          f"and the newest scrubbed event is {end.isoformat()}")
    start = max(cur, after)
    clipped = f", only events after champion v{champ.version}'s training data" if start > cur else ""
    return WindowPlan(
        source=f"champion v{champ.version}", reference=Window(ev.first_ts, after), current=Window(start),
        reference_description=f"champion v{champ.version}'s training data: {_short(ev.first_ts)} .. "
                              f"{_short(ev.last_ts)}",
        current_description=f"{_short(start) if clipped else start.date()} .. {end.date()} "
                            f"(last {p.current_days} days{clipped})",
        champion=champ,
    )


def date_range(p: DriftParams, cur: dt.datetime, last_days: str) -> WindowPlan:
    """``reference_start`` .. ``reference_end``, its end clipped at the current window's start.

    Why clip: an event in both windows is compared with itself, which hides drift; a
    range reaching into the current window is clipped, and the note says so. A range
    that starts inside the current window leaves no reference: a clear error.
    """
    lo, hi = parse_day(p.reference_start or ""), parse_day(p.reference_end or "")
    if lo >= cur:
        raise ValueError(f"drift.reference_start {p.reference_start} is inside the current window "
                         f"({last_days}): the reference must end before {cur.date()}")
    clipped = hi > cur
    hi = min(hi, cur)
    description = f"{lo.date()} .. {(hi - dt.timedelta(days=1)).date()}"
    note = (f"reference_end {p.reference_end} reaches into the current window (from {cur.date()}): "
            f"reference clipped to {description}") if clipped else ""
    return WindowPlan("date range", Window(lo, hi), Window(cur), description, last_days, note=note)


def _last_days(p: DriftParams, start: dt.datetime, end: dt.datetime) -> str:
    return f"{start.date()} .. {end.date()} (last {p.current_days} days)"


def _short(ts: dt.datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S")


def champion_match(events: TrainingEvents, rows: int, fingerprint: str | None) -> str:
    """How the selected reference compares with what the champion recorded (for the report).

    Why say it: the window finds the champion's events again only while the scrubbed
    file still holds them unchanged (retention, a re-scrub, late events can change it).
    """
    if fingerprint is not None and rows == events.count and fingerprint == events.fingerprint:
        return f"exactly its {rows} training records, same content fingerprint"
    if rows == events.count:
        return f"{rows} records, as many as it was trained on, but their content differs from the recorded fingerprint"
    return f"{rows} of the {events.count} records it was trained on: the scrubbed records changed since"


def gone(plan: WindowPlan, end: dt.datetime, p: DriftParams) -> WindowPlan:
    """The fallback when the champion's window selects no record any more."""
    assert plan.champion is not None and plan.champion.events is not None
    v, ev = plan.champion.version, plan.champion.events
    return time_split(p, end, f"time split (champion v{v}: its training events are gone)",
                      f"no scrubbed record between {ev.first_ts.isoformat()} and {ev.last_ts.isoformat()}, "
                      f"where champion v{v} recorded {ev.count}")
