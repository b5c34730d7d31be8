"""Ingest: raw event partitions -> one joined, typed record per feedback event.

Reads every ``*.jsonl``, ``*.jsonl.gz`` and ``*.parquet`` file under the raw folder (daily
partitions, in name order), validates each line against the event contract in
:mod:`pipelines.schemas` (id fields must be identifier-shaped: they are never scrubbed, see
:data:`IDENTIFIER_PATTERN`), drops replays by ``event_id`` (the first occurrence wins), and
joins feedback to its interaction and output(s). Every line that is not accepted goes to
the quarantine with a reason code, so ``lines_in == accepted + quarantined`` always holds.

Memory is bounded by ``ingest.batch_lines``: valid events are flushed to Parquet parts
in a scratch folder per batch, and the join runs on lazy scans of those parts. The
quarantine keeps no raw text (the raw line stays in ``data/raw``): a hash, the position,
and a PII-scrubbed excerpt.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import logging
import re
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow.parquet as pq

from pipelines.config import Params
from pipelines.io import scratch_dir, write_json_atomic, write_parquet_atomic
from pipelines.layout import Layout
from pipelines.pseudonym import (
    HASHED_FIELDS,
    Pseudonymizer,
    key_fingerprint,
    load_key,
    pseudonymizer,
)
from pipelines.schemas import (
    COMMON_FIELDS,
    EVENT_TYPES,
    FEEDBACK_TYPES,
    RECORD_SCHEMA,
    REJECT_SCHEMA,
    RejectReason,
)

log = logging.getLogger(__name__)

RAW_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
EXCERPT_CHARS = 160
"""Characters of a rejected line kept (after PII scrubbing) so a person can see what it was."""
EXCERPT_SCRUB_BYTES = 4096
RATING_RANGE = (1, 5)
TURN_MAX = 2**31 - 1
"""Largest ``turn`` accepted: the column is Int32, and one larger value would crash the whole stage."""
UTF8_BOM = b"\xef\xbb\xbf"
"""Some editors and exporters start a UTF-8 file with it; it is not part of the first JSON line."""
IDENTIFIER_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
"""What every id field, ``policy_id`` and ``model_version`` must look like (full match), else the line is quarantined.

Why: these columns are never scrubbed (only the free text is), yet they reach
``data/scrubbed`` and the pairs; an app that uses an e-mail as its thread id, or a note
with a name and a phone number as its model version, would leak PII through them. Real
ids (``evt_<hex>``, UUIDs, ``email_draft``, ``dpo-prod``, ``2026.11.02-rc1``) match; no
``@``, no ``/``, no spaces or other punctuation, bounded length. The same pattern decides
whether a quarantined line's ``event_id`` may be stored (else it is stored as null): the
line stays identified by source_file, line_no and raw_sha256.
"""
ID_FIELDS = ("event_id", "tenant_id", "skill", "thread_id", "interaction_id")
"""The common fields held to :data:`IDENTIFIER_PATTERN` (per type: output ids, ``policy_id``, ``model_version``)."""
NOT_AN_IDENTIFIER = "is not an identifier: letters, digits and _ . : - only, at most 128 characters"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)

Invalid = tuple[RejectReason, str]


# --------------------------------------------------------------------------- validation


def _require_str(obj: dict[str, Any], name: str) -> Invalid | None:
    value = obj.get(name)
    if type(value) is str and value and not value.isspace():  # the usual case, first
        return None
    if value is None:
        return RejectReason.MISSING_FIELD, f"missing required field '{name}'"
    if not isinstance(value, str):
        return RejectReason.WRONG_TYPE, f"field '{name}' must be a string, got {type(value).__name__}"
    if not value.strip():
        return RejectReason.INVALID_VALUE, f"field '{name}' is empty"
    return None


def _not_identifier(name: str) -> Invalid:
    """The reject for an id field that is not identifier-shaped; it names the field, never the value."""
    return RejectReason.INVALID_VALUE, f"field '{name}' {NOT_AN_IDENTIFIER}"


def _require_id(obj: dict[str, Any], name: str) -> Invalid | None:
    """A required string that is an identifier (see :data:`IDENTIFIER_PATTERN`)."""
    bad = _require_str(obj, name)
    if bad:
        return bad
    return None if IDENTIFIER_PATTERN.fullmatch(obj[name]) else _not_identifier(name)


def _optional_str(obj: dict[str, Any], name: str) -> Invalid | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        return RejectReason.WRONG_TYPE, f"field '{name}' must be a string, got {type(value).__name__}"
    return None


def _check_text_len(obj: dict[str, Any], names: tuple[str, ...], max_chars: int) -> Invalid | None:
    for name in names:
        value = obj.get(name)
        if isinstance(value, str) and len(value) > max_chars:
            return RejectReason.TEXT_TOO_LONG, f"field '{name}' has {len(value)} chars (max {max_chars})"
    return None


def parse_ts(value: str) -> int | None:
    """ISO-8601 with a zone -> microseconds since the epoch (UTC); None when invalid or naive."""
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    # integer arithmetic: a float (dt.timestamp()) loses microseconds outside ~1901-2255
    return (dt - EPOCH) // ONE_MICROSECOND


def _check_interaction(obj: dict[str, Any]) -> Invalid | None:
    bad = _require_str(obj, "prompt") or _optional_str(obj, "context")
    if bad:
        return bad
    turn = obj.get("turn")
    if turn is not None and (not isinstance(turn, int) or isinstance(turn, bool)):
        return RejectReason.WRONG_TYPE, f"field 'turn' must be an integer, got {type(turn).__name__}"
    if isinstance(turn, int) and turn < 0:
        return RejectReason.INVALID_VALUE, "field 'turn' is negative"
    if isinstance(turn, int) and turn > TURN_MAX:
        return RejectReason.INVALID_VALUE, "field 'turn' is out of range"
    return None


def _check_output(obj: dict[str, Any]) -> Invalid | None:
    bad = _require_id(obj, "output_id") or _require_str(obj, "text") or _require_id(obj, "policy_id")
    if bad:
        return bad
    bad = _optional_str(obj, "model_version")
    if bad:
        return bad
    version = obj.get("model_version")
    if version is not None and not IDENTIFIER_PATTERN.fullmatch(version):
        return _not_identifier("model_version")
    return None


def _check_feedback(obj: dict[str, Any]) -> Invalid | None:
    kind = obj.get("feedback_type")
    if kind is None:
        return RejectReason.MISSING_FIELD, "missing required field 'feedback_type'"
    if kind not in FEEDBACK_TYPES:
        return RejectReason.UNKNOWN_FEEDBACK_TYPE, "feedback_type is not one of " + "|".join(FEEDBACK_TYPES)
    if kind == "comparison":
        ids = obj.get("output_ids")
        if ids is None:
            return RejectReason.MISSING_FIELD, "missing required field 'output_ids'"
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            return RejectReason.WRONG_TYPE, "field 'output_ids' must be a list of strings"
        if not all(IDENTIFIER_PATTERN.fullmatch(i) for i in ids):
            return RejectReason.INVALID_VALUE, f"an item of field 'output_ids' {NOT_AN_IDENTIFIER}"
        if len(ids) != 2 or ids[0] == ids[1]:
            return RejectReason.INVALID_VALUE, "field 'output_ids' must name two distinct outputs"
        bad = _require_id(obj, "preferred_output_id")
        if bad:
            return bad
        if obj["preferred_output_id"] not in ids:
            return RejectReason.INVALID_VALUE, "preferred_output_id is not one of output_ids"
        return None
    bad = _require_id(obj, "output_id")
    if bad:
        return bad
    if kind == "edit":
        return _require_str(obj, "edited_text")
    if kind == "rating":
        rating = obj.get("rating")
        if rating is None:
            return RejectReason.MISSING_FIELD, "missing required field 'rating'"
        if not isinstance(rating, int) or isinstance(rating, bool):
            return RejectReason.WRONG_TYPE, f"field 'rating' must be an integer, got {type(rating).__name__}"
        if not RATING_RANGE[0] <= rating <= RATING_RANGE[1]:
            return RejectReason.INVALID_VALUE, f"field 'rating' must be in {RATING_RANGE[0]}..{RATING_RANGE[1]}"
    return None


_TYPE_CHECKS = {"interaction": _check_interaction, "output": _check_output, "feedback": _check_feedback}
_TEXT_FIELDS = ("prompt", "context", "text", "edited_text")


def validate_event(obj: Any, max_text_chars: int) -> Invalid | None:
    """Check one decoded event against the contract; None when it is valid.

    Why a hand-written check and not a schema library: each failure needs a stable
    reason code and a detail that names the field but never echoes its value (values
    may hold PII, and the quarantine must not).
    """
    return _validate(obj, max_text_chars)[0]


def _validate(obj: Any, max_text_chars: int) -> tuple[Invalid | None, int | None]:
    """:func:`validate_event`, plus the parsed ``ts`` (parsing it costs; once per line)."""
    if not isinstance(obj, dict):
        return (RejectReason.NOT_AN_OBJECT, f"line is a JSON {type(obj).__name__}, not an object"), None
    for name in COMMON_FIELDS:
        value = obj.get(name)
        if not (type(value) is str and value and not value.isspace()):  # the slow, exact check
            bad = _require_str(obj, name)
            if bad:
                return bad, None
    if obj["event_type"] not in EVENT_TYPES:
        return (RejectReason.UNKNOWN_EVENT_TYPE, "event_type is not one of " + "|".join(EVENT_TYPES)), None
    ts = parse_ts(obj["ts"])
    if ts is None:
        return (RejectReason.BAD_TIMESTAMP, "field 'ts' is not ISO-8601 with a time zone"), None
    for name in ID_FIELDS:
        if not IDENTIFIER_PATTERN.fullmatch(obj[name]):
            return _not_identifier(name), None
    return _check_text_len(obj, _TEXT_FIELDS, max_text_chars) or _TYPE_CHECKS[obj["event_type"]](obj), ts


# --------------------------------------------------------------------------- reading


@dataclass(slots=True)
class RawLine:
    """One unit of input: a JSONL line (bytes) or a Parquet row (already a dict)."""

    source_file: str
    line_no: int
    raw: bytes
    obj: Any = None
    decoded: bool = False


def iter_raw(raw_dir: Path) -> Iterator[RawLine | tuple[str, str]]:
    """Yield every input line in a stable order; an unreadable file yields (file, detail)."""
    files = sorted(p for p in raw_dir.rglob("*") if p.is_file() and p.name.endswith(RAW_SUFFIXES))
    for path in files:
        rel = str(path.relative_to(raw_dir))
        if path.name.endswith(".parquet"):
            yield from _iter_parquet(path, rel)
        else:
            yield from _iter_jsonl(path, rel)


def _iter_jsonl(path: Path, rel: str) -> Iterator[RawLine | tuple[str, str]]:
    """Lines of a JSONL file (gzipped or not); a leading BOM is dropped from the first line.

    Damaged gzip data raises ``zlib.error`` (not an ``OSError``): it quarantines the file too.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            for line_no, line in enumerate(fh, start=1):
                if line_no == 1:
                    line = line.removeprefix(UTF8_BOM)
                yield RawLine(rel, line_no, line.rstrip(b"\r\n"))
    except (OSError, EOFError) as err:
        yield rel, f"cannot read file: {type(err).__name__}"
    except zlib.error:
        yield rel, "cannot read file: corrupt gzip data"


def _parquet_json_default(value: Any) -> str:
    """How a Parquet value JSON cannot hold is written into the line kept for the hash and excerpt.

    Bytes (strings written as BYTE_ARRAY without the UTF-8 annotation, as older Hive,
    Impala or Spark exports do) become the text they hold: ``str(b"Zo\\xc3\\xab")`` would
    hide a name from the excerpt's scrubber behind ``\\x`` escapes. Anything else: ``str``.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _iter_parquet(path: Path, rel: str) -> Iterator[RawLine | tuple[str, str]]:
    try:
        pf = pq.ParquetFile(path)
        line_no = 0
        for batch in pf.iter_batches(batch_size=50_000):
            for row in batch.to_pylist():
                line_no += 1
                row = {k: v for k, v in row.items() if v is not None}
                if isinstance(row.get("ts"), datetime):
                    row["ts"] = row["ts"].isoformat()
                yield RawLine(rel, line_no, orjson.dumps(row, default=_parquet_json_default), row, True)
    except Exception as err:
        yield rel, f"cannot read Parquet file: {type(err).__name__}"


def decode_line(line: RawLine) -> tuple[Any, Invalid | None]:
    """Bytes -> JSON value, or the reason it is not one."""
    if line.decoded:
        return line.obj, None
    if not line.raw.strip():
        return None, (RejectReason.EMPTY_LINE, "empty line")
    try:
        text = line.raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, (RejectReason.INVALID_UTF8, f"invalid UTF-8 at byte {err.start}")
    try:
        return orjson.loads(text), None
    except orjson.JSONDecodeError:
        return None, (RejectReason.INVALID_JSON, "not valid JSON (truncated or malformed)")


# --------------------------------------------------------------------------- batching

_PART_COLUMNS: dict[str, dict[str, pl.DataType]] = {
    "interaction": {
        "event_id": pl.String(), "ts": pl.Int64(), "tenant_id": pl.String(), "skill": pl.String(),
        "thread_id": pl.String(), "interaction_id": pl.String(), "turn": pl.Int32(),
        "prompt": pl.String(), "context": pl.String(), "source_file": pl.String(), "line_no": pl.Int64(),
    },
    "output": {
        "event_id": pl.String(), "tenant_id": pl.String(), "interaction_id": pl.String(),
        "output_id": pl.String(), "text": pl.String(), "policy_id": pl.String(),
        "model_version": pl.String(), "source_file": pl.String(), "line_no": pl.Int64(),
    },
    "feedback": {
        "event_id": pl.String(), "ts": pl.Int64(), "tenant_id": pl.String(),
        "interaction_id": pl.String(), "feedback_type": pl.String(), "output_id": pl.String(),
        "other_output_id": pl.String(), "rating": pl.Int8(), "edited_text": pl.String(),
        "source_file": pl.String(), "line_no": pl.Int64(),
    },
}


def _feedback_row(obj: dict[str, Any]) -> dict[str, Any]:
    """The type-specific feedback columns, each taken only from the type that validates it.

    A field of another type (a ``rating`` on an accept, an ``edited_text`` on a reject) was
    never checked: it is dropped like any unknown field, so it can neither crash the typed
    columns nor turn into an assistant answer downstream.
    """
    kind = obj["feedback_type"]
    row: dict[str, Any] = {"output_id": None, "other_output_id": None, "rating": None, "edited_text": None}
    if kind == "comparison":
        preferred = obj["preferred_output_id"]
        row["output_id"] = preferred
        row["other_output_id"] = next(i for i in obj["output_ids"] if i != preferred)
        return row
    row["output_id"] = obj["output_id"]
    if kind == "rating":
        row["rating"] = obj["rating"]
    elif kind == "edit":
        row["edited_text"] = obj["edited_text"]
    return row


def to_part_row(obj: dict[str, Any], line: RawLine, ts: int | None = None,
                pseudonym: Pseudonymizer | None = None) -> dict[str, Any]:
    """Project a valid event onto its type's part columns (unknown fields are dropped).

    ``ts`` is the parsed timestamp when the caller has it already; ``pseudonym``
    (``ingest.hash_ids``) replaces the ids of :data:`pipelines.pseudonym.HASHED_FIELDS`.
    """
    kind = obj["event_type"]
    row = {name: obj.get(name) for name in _PART_COLUMNS[kind]}
    row["source_file"], row["line_no"] = line.source_file, line.line_no
    if "ts" in row:
        row["ts"] = parse_ts(obj["ts"]) if ts is None else ts
    if kind == "interaction":
        row["turn"] = obj.get("turn") or 0
    if kind == "feedback":
        row.update(_feedback_row(obj))
    if pseudonym is not None:
        for name in HASHED_FIELDS:
            if name in row:
                row[name] = pseudonym(row[name])
    return row


@dataclass
class Collector:
    """Accumulates valid events per type and flushes them to Parquet parts."""

    scratch: Path
    batch_lines: int
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {k: [] for k in _PART_COLUMNS})
    parts: int = 0
    pending: int = 0

    def add(self, kind: str, row: dict[str, Any]) -> None:
        self.rows[kind].append(row)
        self.pending += 1
        if self.pending >= self.batch_lines:
            self.flush()

    def flush(self) -> None:
        for kind, rows in self.rows.items():
            if rows:
                df = pl.DataFrame(rows, schema=_PART_COLUMNS[kind], orient="row")
                df.write_parquet(self.scratch / f"{kind}-{self.parts:05d}.parquet")
                rows.clear()
        self.parts += 1
        self.pending = 0

    def scan(self, kind: str) -> pl.LazyFrame:
        files = sorted(self.scratch.glob(f"{kind}-*.parquet"))
        if not files:
            return pl.LazyFrame(schema=_PART_COLUMNS[kind])
        return pl.scan_parquet(files)


# --------------------------------------------------------------------------- join


def join_records(interactions: pl.LazyFrame, outputs: pl.LazyFrame, feedback: pl.LazyFrame) -> tuple[
    pl.LazyFrame, pl.LazyFrame
]:
    """Join feedback to its interaction and output(s); return (records, orphan rejects).

    A feedback row is an orphan when its interaction or any output it names never
    arrived, or arrived for another tenant (pairs must never cross tenants).
    """
    inter = interactions.select(
        "interaction_id",
        pl.col("tenant_id").alias("i_tenant"), "skill", "thread_id", "turn", "prompt", "context",
        pl.col("event_id").alias("i_event"),
    )
    out = outputs.select(
        "output_id", pl.col("interaction_id").alias("o_interaction"), pl.col("tenant_id").alias("o_tenant"),
        pl.col("text").alias("output_text"), "policy_id", "model_version", pl.col("event_id").alias("o_event"),
    )
    other = out.select(
        pl.col("output_id").alias("other_output_id"), pl.col("o_interaction").alias("x_interaction"),
        pl.col("o_tenant").alias("x_tenant"), pl.col("output_text").alias("other_output_text"),
        pl.col("o_event").alias("x_event"),
    )
    joined = (
        feedback.join(inter, on="interaction_id", how="left")
        .join(out, on="output_id", how="left")
        .join(other, on="other_output_id", how="left")
    )
    is_comparison = pl.col("feedback_type") == "comparison"
    # an output's own tenant is checked too: one of another tenant is an orphan output, never joined
    other_ok = (
        pl.col("x_event").is_not_null()
        & (pl.col("x_interaction") == pl.col("interaction_id"))
        & (pl.col("x_tenant") == pl.col("tenant_id"))
    )
    ok = (
        pl.col("i_event").is_not_null()
        & (pl.col("i_tenant") == pl.col("tenant_id"))
        & pl.col("o_event").is_not_null()
        & (pl.col("o_interaction") == pl.col("interaction_id"))
        & (pl.col("o_tenant") == pl.col("tenant_id"))
        & (~is_comparison | other_ok)
    )
    output_of_other_tenant = (pl.col("o_tenant") != pl.col("tenant_id")) | (
        is_comparison & (pl.col("x_tenant") != pl.col("tenant_id"))
    )
    records = joined.filter(ok).select(
        "event_id",
        pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        "tenant_id", "skill", "thread_id", "interaction_id", "turn", "prompt", "context",
        "feedback_type", "output_id", "output_text", "policy_id", "model_version", "rating",
        "edited_text", "other_output_id", "other_output_text",
        pl.concat_list(
            pl.col("i_event"), pl.col("o_event"), pl.col("x_event"), pl.col("event_id")
        ).list.drop_nulls().alias("source_event_ids"),
    )
    orphans = joined.filter(~ok.fill_null(False)).select(
        "source_file", "line_no", "event_id", pl.lit("feedback").alias("event_type"),
        pl.when(pl.col("i_event").is_null()).then(pl.lit("interaction never arrived"))
        .when(pl.col("i_tenant") != pl.col("tenant_id")).then(pl.lit("tenant differs from its interaction's"))
        .when(output_of_other_tenant).then(pl.lit("an output it names belongs to another tenant"))
        .otherwise(pl.lit("an output it names never arrived for this interaction")).alias("detail"),
    )
    return records, orphans


def orphan_outputs(interactions: pl.LazyFrame, outputs: pl.LazyFrame) -> pl.LazyFrame:
    """Outputs whose interaction never arrived (or belongs to another tenant)."""
    inter = interactions.select("interaction_id", pl.col("tenant_id").alias("i_tenant"))
    return (
        outputs.join(inter, on="interaction_id", how="left")
        .filter(pl.col("i_tenant").is_null() | (pl.col("i_tenant") != pl.col("tenant_id")))
        .select("source_file", "line_no", "event_id", pl.lit("output").alias("event_type"),
                pl.lit("interaction never arrived for this tenant").alias("detail"))
    )


# --------------------------------------------------------------------------- stage


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
"""A byte that was not UTF-8, as ``surrogateescape`` keeps it."""


def _decode_lenient(data: bytes, cut: bool = False) -> str:
    """UTF-8, where each byte that is not UTF-8 is read as cp1252; with ``cut`` (``data`` is
    a window of a longer line), a character cut at the end is dropped.

    Why: a partition exported as cp1252 (Windows tools) is all invalid UTF-8, and U+FFFD
    for each of its letters (``Zo\ufffd M\ufffdller``) would hide a name from the scrubber
    while a person still reads it. Valid UTF-8 around a stray byte stays as it is.
    """
    text = codecs.getincrementaldecoder("utf-8")("surrogateescape").decode(data, final=not cut)
    return _ESCAPED_BYTE.sub(lambda m: bytes([ord(m.group()) - 0xDC00]).decode("cp1252", errors="replace"), text)


_ID_KEYS = "|".join((*HASHED_FIELDS, "preferred_output_id"))
_ID_VALUE = re.compile(rf'("(?:{_ID_KEYS})"\s*:\s*")([^"]*)("?)')
"""An id field's string value in a line's text (the closing quote may be cut off)."""
_ID_LIST = re.compile(r'("output_ids"\s*:\s*\[)([^\]]*)')
_QUOTED = re.compile(r'"([^"]*)"')


def _pseudonymise_ids(text: str, pseudonym: Pseudonymizer) -> str:
    """The id values in a rejected line's text replaced as ingest replaces them in records.

    Why a pattern and not a parse: the line is often not valid JSON (that may be why it
    was rejected), and a window of a long line is cut anywhere.
    """
    text = _ID_VALUE.sub(lambda m: m[1] + (pseudonym(m[2]) or "") + m[3], text)
    return _ID_LIST.sub(lambda m: m[1] + _QUOTED.sub(lambda q: f'"{pseudonym(q[1])}"', m[2]), text)


def _excerpt(raw: bytes, entities: list[str], placeholder_format: str,
             pseudonym: Pseudonymizer | None = None) -> str:
    """A short, PII-scrubbed view of a rejected line (lazy imports: pii loads resources).

    Escapes are read with the audit's decoder, which works on any text: a rejected line
    is often not valid JSON (truncated, or a window cut from a long line). With
    ``ingest.hash_ids`` the ids in it are pseudonymised like those of the records.
    """
    from pipelines.audit import json_unescape
    from pipelines.config import ScrubParams
    from pipelines.pii import scrub_text
    from pipelines.scrub import scrub_escaped

    # scrub a wider window first, then cut: a cut made before scrubbing could leave half
    # of a card number that no longer looks like one. Escapes are read first: the scrubber
    # cannot see "123-45-6789" in "SSN\t123-45-6789" or a name in "Jos\u00e9 Garc\u00eda".
    # JSON text inside the line's strings (a context list of serialised tool results) keeps
    # escapes after that: the scrub stage's escape-aware pass reads those too.
    text = json_unescape(_decode_lenient(raw[:EXCERPT_SCRUB_BYTES], cut=len(raw) > EXCERPT_SCRUB_BYTES))
    if pseudonym is not None:
        text = _pseudonymise_ids(text, pseudonym)
    if "\\" in text:
        found = scrub_escaped([text], ScrubParams(entities=entities, placeholder_format=placeholder_format))
        text = found[0][1] if found else text
    else:
        text = scrub_text(text, entities, placeholder_format)[0]
    return text[:EXCERPT_CHARS]


def _reject_event_id(value: str | None) -> str | None:
    """``value`` when it looks like an identifier (see :data:`IDENTIFIER_PATTERN`), else None."""
    return value if value is not None and IDENTIFIER_PATTERN.fullmatch(value) else None


def _reject_event_type(value: str | None) -> str | None:
    """``value`` when it is a known event type or identifier-shaped (``click``), else None: it may be any text."""
    return value if value in EVENT_TYPES else _reject_event_id(value)


@dataclass
class RejectLog:
    """The quarantine being built, plus its counts by reason.

    ``event_id`` and ``event_type`` are kept only when they look like an identifier (or a
    known type): the field may be the very reason a line was rejected, holding any text.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, *, source_file: str, line_no: int, raw: bytes, reason: RejectReason | str, detail: str,
            excerpt: str, event_id: str | None = None, event_type: str | None = None) -> None:
        self.counts[str(reason)] += 1
        self.rows.append({
            "source_file": source_file, "line_no": line_no, "raw_sha256": hashlib.sha256(raw).hexdigest(),
            "event_id": _reject_event_id(event_id), "event_type": _reject_event_type(event_type),
            "reason": str(reason), "detail": detail, "excerpt": excerpt,
        })


def _safe_str(obj: Any, name: str) -> str | None:
    value = obj.get(name) if isinstance(obj, dict) else None
    return value if isinstance(value, str) else None


def _reject_id(obj: Any, pseudonym: Pseudonymizer | None) -> str | None:
    """A rejected line's ``event_id`` as the quarantine may keep it: identifier-shaped, pseudonymised when asked."""
    value = _reject_event_id(_safe_str(obj, "event_id"))
    return pseudonym(value) if pseudonym is not None else value


def read_events(raw_dir: Path, scratch: Path, params: Params,
                pseudonym: Pseudonymizer | None = None) -> tuple[Collector, RejectLog, dict[str, Any]]:
    """Parse and validate every input line; valid events go to parts, the rest to rejects."""
    collector = Collector(scratch, params.ingest.batch_lines)
    rejects = RejectLog()
    seen_event: set[str] = set()
    seen_key: dict[str, set[str]] = {"interaction": set(), "output": set()}
    lines_in = 0
    by_type: Counter[str] = Counter()
    excerpt_args = (list(params.scrub.entities), params.scrub.placeholder_format, pseudonym)
    for item in iter_raw(raw_dir):
        lines_in += 1
        if isinstance(item, tuple):
            rejects.add(source_file=item[0], line_no=0, raw=item[0].encode(), reason=RejectReason.UNREADABLE_FILE,
                        detail=item[1], excerpt="")
            continue
        obj, bad = decode_line(item)
        ts = None
        if bad is None:
            bad, ts = _validate(obj, params.ingest.max_text_chars)
        if bad is None:
            kind = obj["event_type"]
            key = obj["interaction_id"] if kind == "interaction" else obj.get("output_id")
            if obj["event_id"] in seen_event:
                bad = RejectReason.DUPLICATE_EVENT_ID, "event_id seen before (replay)"
            elif kind in seen_key and key in seen_key[kind]:
                bad = RejectReason.INVALID_VALUE, f"a second {kind} event for the same {kind} id"
        if bad is not None:
            rejects.add(source_file=item.source_file, line_no=item.line_no, raw=item.raw, reason=bad[0],
                        detail=bad[1], excerpt=_excerpt(item.raw, *excerpt_args),
                        event_id=_reject_id(obj, pseudonym), event_type=_safe_str(obj, "event_type"))
            continue
        seen_event.add(obj["event_id"])
        if kind in seen_key:
            seen_key[kind].add(key)
        by_type[kind] += 1
        collector.add(kind, to_part_row(obj, item, ts, pseudonym))
        if lines_in % 250_000 == 0:
            log.info("ingest: %d lines read, %d quarantined so far", lines_in, len(rejects.rows))
    collector.flush()
    return collector, rejects, {"lines_in": lines_in, "valid_by_type": dict(by_type)}


def _late_rejects(frame: pl.DataFrame, reason: RejectReason, raw_dir: Path, rejects: RejectLog,
                  params: Params, pseudonym: Pseudonymizer | None = None) -> int:
    """Add rejects found only after the join (orphans), re-reading their raw lines for the hash."""
    if frame.is_empty():
        return 0
    wanted = {(r["source_file"], r["line_no"]): r for r in frame.iter_rows(named=True)}
    excerpt_args = (list(params.scrub.entities), params.scrub.placeholder_format, pseudonym)
    for item in iter_raw(raw_dir):
        if isinstance(item, tuple):
            continue
        row = wanted.pop((item.source_file, item.line_no), None)
        if row is not None:
            rejects.add(source_file=item.source_file, line_no=item.line_no, raw=item.raw, reason=reason,
                        detail=row["detail"], excerpt=_excerpt(item.raw, *excerpt_args),
                        event_id=row["event_id"], event_type=row["event_type"])
        if not wanted:
            break
    return frame.height


def run(params: Params, layout: Layout) -> dict[str, Any]:
    """The ingest stage: write ``records.parquet``, ``rejects.parquet`` and ``metrics/ingest.json``."""
    start = time.perf_counter()
    raw_dir = layout.raw_dir
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"raw event folder {raw_dir} does not exist; run `python -m pipelines generate`")
    key = load_key() if params.ingest.hash_ids else None  # a missing key stops before any work
    pseudonym = pseudonymizer(key) if key is not None else None
    # scratch parts hold raw (unscrubbed) events: a killed run's are removed by the next one
    with scratch_dir(layout.staged_dir, "ingest") as scratch:
        collector, rejects, stats = read_events(raw_dir, scratch, params, pseudonym)
        inter, outs, fb = collector.scan("interaction"), collector.scan("output"), collector.scan("feedback")
        records, orphan_fb = join_records(inter, outs, fb)
        orphans = _late_rejects(
            orphan_outputs(inter, outs).collect(), RejectReason.ORPHAN_OUTPUT, raw_dir, rejects, params, pseudonym
        ) + _late_rejects(orphan_fb.collect(), RejectReason.ORPHAN_FEEDBACK, raw_dir, rejects, params, pseudonym)
        records = records.sort("ts", "event_id").select(
            [pl.col(c).cast(t) for c, t in RECORD_SCHEMA.items()]
        )
        write_parquet_atomic(records, layout.records)
    reject_df = pl.DataFrame(rejects.rows, schema=REJECT_SCHEMA, orient="row").sort("source_file", "line_no")
    write_parquet_atomic(reject_df, layout.rejects)
    n_records = pl.scan_parquet(layout.records).select(pl.len()).collect().item()
    quarantined = sum(rejects.counts.values())
    accepted = sum(stats["valid_by_type"].values()) - orphans
    if accepted + quarantined != stats["lines_in"]:  # a bug, never bad input: stop loudly
        raise RuntimeError(f"ingest lost lines: {stats['lines_in']} in != {accepted} + {quarantined}")
    metrics = {
        "lines_in": stats["lines_in"],
        "accepted": accepted,
        "quarantined": quarantined,
        "quarantined_by_reason": dict(sorted(rejects.counts.items())),
        "valid_by_type": stats["valid_by_type"],
        "records_out": n_records,
        "ids_hashed": key is not None,
    }
    if key is not None:
        metrics["id_key_fingerprint"] = key_fingerprint(key)
    write_json_atomic(layout.metrics("ingest"), metrics)
    log.info("ingest: %d lines -> %d records, %d quarantined in %.1fs", stats["lines_in"], n_records,
             quarantined, time.perf_counter() - start)
    return metrics
