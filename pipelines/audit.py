"""PII audit: search every file under some folders for known canary values.

The generator lists every PII value it planted in ``canaries.json``; after a run, none
of them may appear anywhere outside ``data/raw``. Parquet files are compressed, so a
byte search would miss them: Parquet is read and every text cell (nested lists and
structs included) is searched; every other file is searched as bytes, and as text
with whitespace folded (a canary split across a line break still counts).

Run it on your own deployment too::

    python -m pipelines audit --canaries data/raw/canaries.json data/scrubbed data/pairs data/quarantine mlflow/
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

MIN_CANARY_CHARS = 4
"""Shorter values (a lone first name like "Al") would match ordinary words."""
SKIP_SUFFIXES = (".pyc",)


@dataclass(frozen=True)
class Hit:
    """One canary found in one file (the value itself is not stored: it is PII)."""

    path: str
    entity: str
    canary_index: int


def load_canaries(path: str | Path) -> list[tuple[str, str]]:
    """(entity, value) pairs from a generator ``canaries.json``."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    return [(c["entity"], c["value"]) for c in raw if len(c["value"]) >= MIN_CANARY_CHARS]


def _texts_from_parquet(path: Path) -> Iterator[pl.Series]:
    df = pl.read_parquet(path)
    for name, dtype in df.schema.items():
        if dtype == pl.String:
            yield df[name].drop_nulls()
        elif isinstance(dtype, pl.List | pl.Struct | pl.Array):
            yield pl.Series([json.dumps(v, ensure_ascii=False) for v in df[name].drop_nulls().to_list()],
                            dtype=pl.String)


def file_texts(path: Path) -> Iterator[pl.Series]:
    """The searchable text of a file: Parquet cells, or the bytes decoded leniently."""
    if path.suffix == ".parquet":
        try:
            yield from _texts_from_parquet(path)
            return
        except Exception:
            pass
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    text = data.decode("utf-8", errors="replace")
    variants = [text, re.sub(r"\s+", " ", text)]
    if b"\\u" in data:  # JSON with escaped non-ASCII
        with contextlib.suppress(ValueError):
            variants.append(json.dumps(json.loads(text), ensure_ascii=False))
    yield pl.Series(variants, dtype=pl.String)


def _whole_word_in(value: str, series: pl.Series) -> bool:
    """True when ``value`` occurs not glued to letters or digits ("Hiroshi" in "Hiroshima" is no leak)."""
    pattern = re.compile(r"(?<!\w)" + re.escape(value) + r"(?!\w)")
    cells = series.filter(series.str.contains(value, literal=True))
    return any(pattern.search(text) for text in cells.to_list())


def iter_files(roots: Iterable[str | Path]) -> Iterator[Path]:
    """Every file under the roots (a root may itself be a file), in a stable order."""
    for root in roots:
        root = Path(root)
        if root.is_file():
            yield root
        elif root.is_dir():
            yield from sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(SKIP_SUFFIXES))


def scan(roots: Iterable[str | Path], canaries: list[tuple[str, str]]) -> tuple[list[Hit], int]:
    """Search every file under ``roots``; return (hits, files scanned).

    Why polars: ``extract_many`` runs Aho-Corasick over all canaries at once, so the
    audit costs one pass over the data, not one pass per canary.
    """
    values = [v for _, v in canaries]
    index = {v: i for i, v in enumerate(values)}
    hits: list[Hit] = []
    n_files = 0
    for path in iter_files(roots):
        n_files += 1
        found: set[int] = set()
        for series in file_texts(path):
            if series.is_empty() or not values:
                continue
            matched = series.str.extract_many(values, overlapping=True).explode().drop_nulls().unique()
            found.update(index[v] for v in matched.to_list() if _whole_word_in(v, series))
        hits.extend(Hit(str(path), canaries[i][0], i) for i in sorted(found))
    return hits, n_files


def without_public(canaries: list[tuple[str, str]], public_inputs: Iterable[str | Path]) -> tuple[
    list[tuple[str, str]], list[tuple[str, str]]
]:
    """Split canaries into (still checked, excluded) by whether public inputs already hold them.

    Why: the pipeline also reads public data sets (hh-rlhf, xstest). A planted first name
    like "Diego" also occurs there in "San Diego"; finding it in the pairs proves nothing
    about our events. Those values are excluded and reported, never silently dropped.
    """
    hits, _ = scan(public_inputs, canaries)
    public = {h.canary_index for h in hits}
    kept = [c for i, c in enumerate(canaries) if i not in public]
    return kept, [canaries[i] for i in sorted(public)]
