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
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import pii
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


def _prepare(
    df: pl.DataFrame, columns: Sequence[str], params: ScrubParams, pool: pii.WorkerPool
) -> _Prepared:
    """Collect the distinct values of ``columns`` and start scrubbing them."""
    columns = [c for c in columns if c in df.columns]
    if not columns or df.height == 0:
        return _Prepared(df, columns, [], None)
    values = pl.concat([df[c].cast(pl.String).rename("v") for c in columns]).drop_nulls().unique()
    texts = values.to_list()
    return _Prepared(
        df, columns, texts, pool.submit(texts, params.entities, params.placeholder_format)
    )


def _finish(prep: _Prepared) -> tuple[pl.DataFrame, dict[str, Counter[str]]]:
    """Map the scrubbed values back into the batch; count placeholders per column.

    Why a table and joins rather than a dict per column: the mapping has one entry per
    changed value (tens of thousands); building it once on the Rust side is cheaper.
    """
    counts: dict[str, Counter[str]] = {c: Counter() for c in prep.columns}
    results = prep.pending.get() if prep.pending is not None else []
    if not results:
        return prep.df, counts
    entities = list(pii.ENTITY_TYPES)
    table = pl.DataFrame(
        {
            "v": [prep.values[i] for i, _, _ in results],
            "new": [new for _, new, _ in results],
            **{e: [n.get(e, 0) for _, _, n in results] for e in entities},
        },
        schema_overrides={"v": pl.String, "new": pl.String, **dict.fromkeys(entities, pl.Int64)},
    )
    replaced = []
    for c in prep.columns:
        col = prep.df[c].cast(pl.String)
        replaced.append(col.replace(table["v"], table["new"]).alias(c))
        hits = prep.df.select(pl.col(c).cast(pl.String).alias("v")).join(
            table.select("v", *entities), on="v", how="inner"
        )
        if hits.height:
            for e, n in hits.select(entities).sum().row(0, named=True).items():
                if n:
                    counts[c][e] += n
    return prep.df.with_columns(replaced), counts


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
            prepared = _prepare(df, columns, params.scrub, pool)
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
