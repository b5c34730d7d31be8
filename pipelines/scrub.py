"""The scrub stage: replace PII in every free-text field of the joined records.

Reads ``data/ingested/records.parquet`` (RECORD_SCHEMA) batch by batch, scrubs the
columns in FREE_TEXT_FIELDS with :mod:`pipelines.pii`, and writes
``data/scrubbed/records.parquet`` with the same schema through a temporary file that is
renamed into place only when every batch is written. Memory stays bounded by the batch
size whatever the input size. ``metrics/scrub.json`` counts rows and placeholders per
entity type and per field.

Why per batch and across fields at once: the free-text fields repeat each other (the
same prompt on several feedback events, an output as ``output_text`` here and
``other_output_text`` there), so the distinct values of all fields of a batch are
scrubbed once and mapped back. On large inputs the Python half of the detector runs in
worker processes while the main process prepares the next batch (polars, Rust threads).

Text written with JSON escapes (a context list a client stored with ``json.dumps``, a
tool result pasted into a prompt: a name as ``"Zo\\u00eb ..."``, a signature after
``"regards,\\n"``, a number after ``"SSN\\t"``) hides PII from the detectors, which read
it as written. Values holding such escapes are scanned once more, as decoded (two levels,
as the audit reads them), and what is found there is replaced in the text as written
(:func:`scrub_escaped`).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import pii
from pipelines.audit import JSON_ESCAPE, MAX_ESCAPE_ROUNDS, json_unescape
from pipelines.config import Params, ScrubParams
from pipelines.io import atomic_path, write_json_atomic
from pipelines.layout import Layout
from pipelines.schemas import FREE_TEXT_FIELDS, RECORD_SCHEMA

log = logging.getLogger(__name__)

BATCH_ROWS = 100_000
"""Rows read, scrubbed and written at a time (bounds memory on a million-row input)."""
PARALLEL_MIN_ROWS = 150_000
"""Inputs smaller than this run in one process (starting workers costs about a second)."""
MAX_WORKERS = 4


@dataclass
class _Prepared:
    """A batch whose distinct values are being scrubbed (maybe in worker processes)."""

    df: pl.DataFrame
    columns: list[str]
    values: list[str]
    pending: Any
    escaped: list[pii.ScrubResult] = field(default_factory=list)


def _prepare(
    df: pl.DataFrame, columns: Sequence[str], params: ScrubParams, pool: pii.WorkerPool, escapes: bool = False
) -> _Prepared:
    """Collect the distinct values of ``columns`` and start scrubbing them.

    With ``escapes``, values holding a JSON escape are scrubbed here by :func:`scrub_escaped`
    (they are rare) and listed after the others; the rest go to the pool.
    """
    columns = [c for c in columns if c in df.columns]
    if not columns or df.height == 0:
        return _Prepared(df, columns, [], None)
    values = pl.concat([df[c].cast(pl.String).rename("v") for c in columns]).drop_nulls().unique()
    escaped: list[str] = []
    if escapes:
        has_escape = values.str.contains(JSON_ESCAPE.pattern)
        escaped, values = values.filter(has_escape).to_list(), values.filter(~has_escape)
    texts = values.to_list()
    pending = pool.submit(texts, params.entities, params.placeholder_format)
    offset = len(texts)
    return _Prepared(
        df, columns, texts + escaped, pending,
        [(offset + i, new, n) for i, new, n in scrub_escaped(escaped, params)],
    )


def _finish(prep: _Prepared) -> tuple[pl.DataFrame, dict[str, Counter[str]]]:
    """Map the scrubbed values back into the batch; count placeholders per column."""
    results = prep.pending.get() if prep.pending is not None else []
    return _apply(prep.df, prep.columns, prep.values, [*results, *prep.escaped])


def _apply(
    df: pl.DataFrame, columns: Sequence[str], values: Sequence[str], results: Sequence[pii.ScrubResult]
) -> tuple[pl.DataFrame, dict[str, Counter[str]]]:
    """Replace each changed value (``results`` index into ``values``) in ``columns``; count per column.

    Why a table and joins rather than a dict per column: the mapping has one entry per
    changed value (tens of thousands); building it once on the Rust side is cheaper.
    """
    counts: dict[str, Counter[str]] = {c: Counter() for c in columns}
    if not results:
        return df, counts
    entities = list(pii.ENTITY_TYPES)
    table = pl.DataFrame(
        {
            "v": [values[i] for i, _, _ in results],
            "new": [new for _, new, _ in results],
            **{e: [n.get(e, 0) for _, _, n in results] for e in entities},
        },
        schema_overrides={"v": pl.String, "new": pl.String, **dict.fromkeys(entities, pl.Int64)},
    )
    replaced = []
    for c in columns:
        col = df[c].cast(pl.String)
        replaced.append(col.replace(table["v"], table["new"]).alias(c))
        hits = df.select(pl.col(c).cast(pl.String).alias("v")).join(
            table.select("v", *entities), on="v", how="inner"
        )
        if hits.height:
            for e, n in hits.select(entities).sum().row(0, named=True).items():
                if n:
                    counts[c][e] += n
    return df.with_columns(replaced), counts


# --------------------------------------------------------------------------- JSON escapes

ESCAPE_PASSES = 3
"""Passes over an escaped text: a value found only once its neighbour is a placeholder needs another."""


def unescape_with_offsets(text: str) -> tuple[str, list[int], list[int]]:
    """``text`` with one level of JSON escapes decoded, and per decoded character the
    ``[start, end)`` of the characters of ``text`` it was read from."""
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for m in JSON_ESCAPE.finditer(text):
        out.append(text[pos : m.start()])
        starts.extend(range(pos, m.start()))
        ends.extend(range(pos + 1, m.start() + 1))
        decoded = json_unescape(m.group())
        out.append(decoded)
        starts.extend([m.start()] * len(decoded))
        ends.extend([m.end()] * len(decoded))
        pos = m.end()
    out.append(text[pos:])
    starts.extend(range(pos, len(text)))
    ends.extend(range(pos + 1, len(text) + 1))
    return "".join(out), starts, ends


def _decoded_view(text: str) -> tuple[str, list[int], list[int]]:
    """Up to :data:`~pipelines.audit.MAX_ESCAPE_ROUNDS` levels decoded (as the audit reads them),
    offsets into ``text`` composed."""
    view, starts, ends = unescape_with_offsets(text)
    for _ in range(MAX_ESCAPE_ROUNDS - 1):
        if not JSON_ESCAPE.search(view):
            break
        view, s2, e2 = unescape_with_offsets(view)
        starts, ends = [starts[i] for i in s2], [ends[j - 1] for j in e2]
    return view, starts, ends


def _escape_pass(texts: Sequence[str], params: ScrubParams) -> list[pii.ScrubResult]:
    """One pass of :func:`scrub_escaped` over texts that hold escapes."""
    views = [_decoded_view(t) for t in texts]
    found = pii.detect_series(
        pl.Series([v for v, _, _ in views], dtype=pl.String), params.placeholder_format, params.entities
    )
    out: list[pii.ScrubResult] = []
    for i, spans in sorted(found.items()):
        text, (_, starts, ends) = texts[i], views[i]
        parts: list[str] = []
        counts: dict[str, int] = {}
        cur = 0
        for sp in spans:
            a, b = starts[sp.start], ends[sp.end - 1]
            if a < cur:  # two decoded characters of one escape: already covered
                continue
            parts += [text[cur:a], params.placeholder_format.format(entity=sp.entity)]
            counts[sp.entity] = counts.get(sp.entity, 0) + 1
            cur = b
        parts.append(text[cur:])
        new = "".join(parts)
        if new != text:
            out.append((i, new, counts))
    return out


def scrub_escaped(texts: Sequence[str], params: ScrubParams) -> list[pii.ScrubResult]:
    """Scrub texts that hold JSON escapes: through their decoded view, then as written.

    Returns ``(index, new text, placeholders per entity)`` for the texts that changed.
    What the decoded view shows (``Zo\\u00eb`` read as part of a name) is replaced in
    the text as written, escapes and all, so JSON text stays JSON text; then the text as
    written is scrubbed as any other (:func:`pipelines.pii.scrub_texts`); both again while
    either finds something (:data:`ESCAPE_PASSES` at most).
    """
    now = dict(enumerate(texts))
    totals: dict[int, dict[str, int]] = {}
    pending = list(now)
    for _ in range(ESCAPE_PASSES):
        if not pending:
            break
        changed: set[int] = set()
        for step in (_escape_pass, _written_pass):
            for j, new, counts in step([now[k] for k in pending], params):
                k = pending[j]
                now[k] = new
                changed.add(k)
                into = totals.setdefault(k, {})
                for e, n in counts.items():
                    into[e] = into.get(e, 0) + n
        pending = [k for k in pending if k in changed]
    return [(k, now[k], totals[k]) for k in sorted(totals)]


def _written_pass(texts: Sequence[str], params: ScrubParams) -> list[pii.ScrubResult]:
    """The scrubber on the texts as written (what every other value gets)."""
    return pii.scrub_texts(texts, params.entities, params.placeholder_format) if texts else []


def scrub_columns(
    df: pl.DataFrame,
    columns: Sequence[str],
    params: ScrubParams,
    pool: pii.WorkerPool | None = None,
) -> tuple[pl.DataFrame, dict[str, Counter[str]]]:
    """Scrub ``columns`` of ``df``; return the new frame and placeholder counts per column.

    Distinct values of all columns are scrubbed together, once each; nulls stay null.
    """
    return _finish(_prepare(df, columns, params, pool or pii.WorkerPool(1)))


def scrub_frame(
    df: pl.DataFrame, columns: Sequence[str], params: ScrubParams
) -> tuple[pl.DataFrame, Counter[str]]:
    """Scrub ``columns`` of ``df``; return the new frame and placeholder counts per entity."""
    out, by_column = scrub_columns(df, columns, params)
    total: Counter[str] = Counter()
    for c in by_column.values():
        total.update(c)
    return out, total


def worker_count(n_rows: int) -> int:
    """Worker processes for an input of ``n_rows`` (1 = none: small inputs, one core)."""
    if n_rows < PARALLEL_MIN_ROWS:
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def _check_schema(schema: pa.Schema) -> None:
    expected = list(RECORD_SCHEMA)
    if schema.names != expected:
        raise ValueError(f"records have columns {schema.names}, expected RECORD_SCHEMA {expected}")


def run(params: Params, layout: Layout) -> dict[str, Any]:
    """The scrub stage: write ``data/scrubbed/records.parquet`` and ``metrics/scrub.json``."""
    start = time.perf_counter()
    src = layout.records
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist; run the ingest stage first")
    source = pq.ParquetFile(src)
    schema = source.schema_arrow
    _check_schema(schema)
    columns = [c for c in FREE_TEXT_FIELDS if c in schema.names]
    by_field: dict[str, Counter[str]] = {c: Counter() for c in columns}
    rows_in = rows_out = batches = 0
    workers = worker_count(source.metadata.num_rows)
    log.info("scrub: %d rows in %s, %d worker process(es)", source.metadata.num_rows, src, workers)

    def write(prep: _Prepared) -> None:
        nonlocal rows_out, batches
        out, counts = _finish(prep)
        writer.write_table(out.to_arrow().cast(schema))
        for c, n in counts.items():
            by_field[c].update(n)
        batches += 1
        rows_out += out.height
        log.info(
            "scrub: batch %d written, %d rows so far, %d placeholders so far, %.1f s",
            batches,
            rows_out,
            sum(sum(c.values()) for c in by_field.values()),
            time.perf_counter() - start,
        )

    with (
        pii.WorkerPool(workers) as pool,
        atomic_path(layout.scrubbed, suffix=".parquet") as tmp,
        pq.ParquetWriter(tmp, schema, compression="zstd") as writer,
    ):
        pending: _Prepared | None = None
        for batch in source.iter_batches(batch_size=BATCH_ROWS):
            df = pl.from_arrow(pa.Table.from_batches([batch], schema=schema))
            assert isinstance(df, pl.DataFrame)
            rows_in += df.height
            # find candidates of this batch while the workers validate the previous one
            prepared = _prepare(df, columns, params.scrub, pool, escapes=True)
            if pending is not None:
                write(pending)
            pending = prepared
        if pending is not None:
            write(pending)
    entities: Counter[str] = Counter()
    for c in by_field.values():
        entities.update(c)
    metrics: dict[str, Any] = {
        "rows_in": rows_in,
        "rows_out": rows_out,
        "batches": batches,
        "workers": workers,
        "entities": {e: entities.get(e, 0) for e in pii.ENTITY_TYPES},
        "fields": {f: {e: n for e, n in sorted(c.items())} for f, c in by_field.items()},
        "placeholders_total": sum(entities.values()),
        "entities_enabled": list(params.scrub.entities),
    }  # no wall time here: metrics must be identical on a rerun (it is in the log)
    write_json_atomic(layout.metrics("scrub"), metrics)
    log.info(
        "scrub: %d rows, %d placeholders in %.1f s",
        rows_out,
        metrics["placeholders_total"],
        time.perf_counter() - start,
    )
    return metrics
