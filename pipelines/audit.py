"""PII audit: search every file under some folders for known canary values.

The generator lists every PII value it planted in ``canaries.json``; after a run, none
of them may appear anywhere outside ``data/raw``. "Zero hits" must mean "no PII", so:

- the format is sniffed from the first bytes, never the suffix: gzip, xz, bz2, zip and
  zstd are decompressed (recursively, under a size cap), Parquet is parsed;
- Parquet is read with pyarrow and every string, binary and dictionary leaf is searched
  at any depth (lists, structs, maps), plus column names and key-value metadata;
- every text is also searched with JSON string escapes decoded (``\\u00e9``, ``\\n``),
  and in a normalised form (NFKC, lower case, whitespace runs folded to one space) with
  the canaries normalised the same way: "JOSÉ\\nGARCÍA" still counts as "José García";
- a file that cannot be audited (unreadable Parquet, corrupt or oversized archive) is
  reported as a ``NOT_AUDITED`` hit, never passed silently.

Run it on your own deployment too::

    python -m pipelines audit --canaries data/raw/canaries.json data/scrubbed data/pairs data/quarantine mlflow/
"""

from __future__ import annotations

import bz2
import gzip
import importlib
import io
import json
import lzma
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

MIN_CANARY_CHARS = 4
"""Shorter values (a lone first name like "Al") would match ordinary words."""
SKIP_SUFFIXES = (".pyc",)
NOT_AUDITED = "NOT_AUDITED"
"""Entity of a Hit for a file that could not be searched (``canary_index`` is -1)."""
MAX_DECOMPRESSED_BYTES = 512 * 1024 * 1024
"""Per file, all archive layers together: a zip bomb is reported, not expanded."""
READ_CHUNK_BYTES = 16 * 1024 * 1024
"""Decompressed in steps of this size, so the cap is checked before memory is spent."""
MAX_NESTING = 4
"""Archives inside archives deeper than this are reported, not opened."""
MAX_ESCAPE_ROUNDS = 2
"""Levels of JSON escapes decoded: JSON inside a JSON string (a logged payload) has two."""
BINARY_REPLACEMENT_RATIO = 0.02
"""Above this share of undecodable bytes a file is binary (weights): it is searched for the
canaries as written only; case-insensitive matches in random bytes would be noise."""

PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b\x08"  # deflate, the only gzip method
XZ_MAGIC = b"\xfd7zXZ\x00"
BZ2_MAGIC = re.compile(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)")  # a block, or the end of an empty stream
ZIP_MAGIC = b"PK\x03\x04"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_ARROW_ERRORS = (pa.ArrowException, OSError, ValueError, TypeError)
"""What pyarrow raises for a corrupt or unsupported file."""
_INVISIBLE = "[\u00ad\u200b-\u200d\u2060\ufeff]"
"""Soft hyphen, zero-width spaces/joiners, BOM: invisible, so they may split a canary."""
_NON_ASCII = r"[^\x00-\x7f]"
_WHITESPACE_RUN = r"\s{2,}|[\s--[ ]]"
"""Any whitespace run but a lone space (which needs no rewrite: most text is words and spaces)."""
_CASEFOLD_EXTRA = {"ß": "ss", "ς": "σ"}
"""Where full case folding differs from lower-casing."""
_JSON_ESCAPE = re.compile(r'\\(?:u([0-9a-fA-F]{4})(?:\\u([0-9a-fA-F]{4}))?|(["\\/bfnrt]))')
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


@dataclass(frozen=True)
class Hit:
    """One canary found in one file (the value itself is not stored: it is PII).

    ``entity == NOT_AUDITED`` (``canary_index == -1``) marks a file that could not be
    searched; ``reason`` says why.
    """

    path: str
    entity: str
    canary_index: int
    reason: str = ""


@dataclass(frozen=True)
class Text:
    """Searchable strings from one file; ``binary`` when they are leniently decoded bytes."""

    strings: pl.Series
    binary: bool = False


class NotAuditedError(Exception):
    """Raised while reading a file whose content cannot be searched completely."""


def load_canaries(path: str | Path) -> list[tuple[str, str]]:
    """(entity, value) pairs from a generator ``canaries.json``."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    return [(c["entity"], c["value"]) for c in raw if len(c["value"]) >= MIN_CANARY_CHARS]


# --- reading: sniff, decompress, parse -------------------------------------------------


@dataclass
class _Budget:
    """Decompressed bytes one file may still expand to (shared by all its archive layers)."""

    left: int

    def read(self, stream: BinaryIO, what: str) -> bytes:
        """Read ``stream`` to its end, or fail once it passes the cap."""
        chunks: list[bytes] = []
        while chunk := stream.read(min(self.left + 1, READ_CHUNK_BYTES)):
            chunks.append(chunk)
            self.left -= len(chunk)
            if self.left < 0:
                raise NotAuditedError(f"{what} expands past {MAX_DECOMPRESSED_BYTES} bytes")
        return b"".join(chunks)


def _zstd_reader(data: bytes) -> BinaryIO:
    """A stream of the decompressed frames; without the zstandard module the file is not audited."""
    try:
        zstandard = importlib.import_module("zstandard")
    except ImportError as e:
        raise NotAuditedError("zstd data, but the zstandard module is not installed") from e
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)


def _gzip_reader(data: bytes) -> BinaryIO:
    return gzip.GzipFile(fileobj=io.BytesIO(data))


def _xz_reader(data: bytes) -> BinaryIO:
    return lzma.LZMAFile(io.BytesIO(data))


def _bz2_reader(data: bytes) -> BinaryIO:
    return bz2.BZ2File(io.BytesIO(data))


_DECOMPRESSORS: list[tuple[Callable[[bytes], bool], str, Callable[[bytes], BinaryIO]]] = [
    (lambda d: d.startswith(GZIP_MAGIC), "gzip", _gzip_reader),
    (lambda d: d.startswith(XZ_MAGIC), "xz", _xz_reader),
    (lambda d: BZ2_MAGIC.match(d) is not None, "bz2", _bz2_reader),
    (lambda d: d.startswith(ZSTD_MAGIC), "zstd", _zstd_reader),
]
"""(sniff, name, open): single-stream compressors, chosen by magic bytes, not by suffix."""


def _texts_from_bytes(data: bytes, budget: _Budget, depth: int = 0) -> Iterator[Text]:
    """Searchable text of one blob, whatever its format (recursing into compressed content)."""
    if depth > MAX_NESTING:
        raise NotAuditedError(f"archives nested deeper than {MAX_NESTING}")
    if data.startswith(PARQUET_MAGIC):
        yield from _texts_from_parquet(data)
        return
    if data.startswith(ZIP_MAGIC):
        yield from _texts_from_zip(data, budget, depth)
        return
    for sniff, name, opener in _DECOMPRESSORS:
        if sniff(data):
            yield from _texts_from_bytes(_decompress(data, name, opener, budget), budget, depth + 1)
            return
    yield _text_from_raw(data)


def _decompress(data: bytes, name: str, opener: Callable[[bytes], BinaryIO], budget: _Budget) -> bytes:
    """The whole decompressed stream; a corrupt one makes the file not audited."""
    try:
        with opener(data) as stream:
            return budget.read(stream, name)
    except NotAuditedError:
        raise
    except Exception as e:  # each codec has its own: EOFError, zlib.error, LZMAError, ZstdError
        raise NotAuditedError(f"corrupt {name} data ({type(e).__name__})") from e


def _text_from_raw(data: bytes) -> Text:
    """Bytes decoded leniently; mostly-undecodable bytes are flagged binary."""
    text = data.decode("utf-8", errors="replace")
    binary = text.count("\ufffd") > BINARY_REPLACEMENT_RATIO * max(len(text), 1)
    return Text(pl.Series([text], dtype=pl.String), binary=binary)


def _texts_from_zip(data: bytes, budget: _Budget, depth: int) -> Iterator[Text]:
    """Member names, then each member's content (sniffed again: a zip may hold Parquet or gzip)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            yield Text(pl.Series(archive.namelist(), dtype=pl.String))
            for info in archive.infolist():
                if info.is_dir():
                    continue
                with archive.open(info) as stream:
                    member = budget.read(stream, "zip member")
                yield from _texts_from_bytes(member, budget, depth + 1)
    except NotAuditedError:
        raise
    except Exception as e:  # BadZipFile, zlib.error, RuntimeError (encrypted), EOFError, ...
        raise NotAuditedError(f"unreadable zip ({type(e).__name__})") from e


def _texts_from_parquet(data: bytes) -> Iterator[Text]:
    """Column names, metadata and every text leaf of a Parquet file, one row group at a time.

    A file that starts like Parquet but does not parse is searched as bytes (uncompressed
    pages may still show a leak) and then reported: its compressed pages went unseen.
    """
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        strings = _schema_strings(parquet.schema_arrow, parquet.metadata.metadata)
    except _ARROW_ERRORS as e:
        yield _text_from_raw(data)
        raise NotAuditedError(f"unreadable Parquet ({type(e).__name__})") from e
    yield Text(pl.Series(strings, dtype=pl.String))
    for i in range(parquet.num_row_groups):
        try:
            group = parquet.read_row_group(i)
        except _ARROW_ERRORS as e:
            raise NotAuditedError(f"unreadable Parquet row group {i} ({type(e).__name__})") from e
        for column in group.columns:
            for chunk in column.chunks:
                yield from (_text_from_arrow(leaf) for leaf in _arrow_text_leaves(chunk))


def _schema_strings(schema: pa.Schema, file_metadata: dict[bytes, bytes] | None) -> list[str]:
    """Field names at every depth, field and schema metadata, the file's key-value metadata."""
    blobs: list[bytes | str] = []
    pending = list(schema)
    while pending:
        field = pending.pop()
        blobs.append(field.name)
        blobs.extend(_kv_items(field.metadata))
        pending.extend(field.type.field(i) for i in range(field.type.num_fields))
    blobs.extend(_kv_items(schema.metadata))
    blobs.extend(_kv_items(file_metadata))
    return [b.decode("utf-8", errors="replace") if isinstance(b, bytes) else b for b in blobs]


def _kv_items(metadata: dict[bytes, bytes] | None) -> Iterator[bytes]:
    """Keys and values of an Arrow/Parquet metadata map."""
    for key, value in (metadata or {}).items():
        yield key
        yield value


def _arrow_text_leaves(array: pa.Array) -> Iterator[pa.Array]:
    """Every string or binary array inside ``array``: dictionaries, lists, maps, structs, unions."""
    kind = array.type
    if _is_string(kind) or _is_binary(kind):
        yield array
    elif pa.types.is_dictionary(kind):
        yield from _arrow_text_leaves(array.dictionary)
    elif isinstance(kind, pa.BaseExtensionType):  # arrow.json, arrow.uuid, user types
        yield from _arrow_text_leaves(array.storage)
    elif pa.types.is_struct(kind) or pa.types.is_union(kind):
        for i in range(kind.num_fields):
            yield from _arrow_text_leaves(array.field(i))
    elif hasattr(array, "values"):  # list, large/fixed-size list, list view, map, run-end encoded
        yield from _arrow_text_leaves(array.values)


def _is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _is_binary(kind: pa.DataType) -> bool:
    return (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
            or pa.types.is_fixed_size_binary(kind) or pa.types.is_binary_view(kind))


def _text_from_arrow(leaf: pa.Array) -> Text:
    """Non-null cells as strings; binary cells that are not valid UTF-8 are decoded leniently."""
    if _is_binary(leaf.type):
        try:
            leaf = leaf.cast(pa.large_string())
        except pa.ArrowInvalid:
            cells = [b.decode("utf-8", errors="replace") for b in leaf.to_pylist() if b is not None]
            return Text(pl.Series(cells, dtype=pl.String), binary=True)
    return Text(pl.Series(leaf.cast(pa.large_string())).drop_nulls())


def file_texts(path: Path) -> Iterator[Text]:
    """The searchable text of a file; raises NotAuditedError for content it cannot search."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise NotAuditedError(f"unreadable file ({type(e).__name__})") from e
    yield from _texts_from_bytes(data, _Budget(MAX_DECOMPRESSED_BYTES))


# --- matching ---------------------------------------------------------------------------


def _normalise(strings: pl.Series) -> pl.Series:
    """NFKC, case-folded, invisible characters dropped, whitespace runs as one space."""
    if strings.str.contains(_NON_ASCII).any():  # NFKC costs a pass; ASCII needs none of it
        strings = (strings.str.replace_all(_INVISIBLE, "")
                   .str.normalize("NFKC")
                   .str.replace_many(list(_CASEFOLD_EXTRA), list(_CASEFOLD_EXTRA.values())))
    return strings.str.to_lowercase().str.replace_all(_WHITESPACE_RUN, " ")


def _unescape_match(match: re.Match[str]) -> str:
    high, low, simple = match.groups()
    if simple:
        return _SIMPLE_ESCAPES[simple]
    first = int(high, 16)
    if low is not None:
        second = int(low, 16)
        if 0xD800 <= first < 0xDC00 <= second < 0xE000:
            return chr(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
        return _code_point(first) + _code_point(second)
    return _code_point(first)


def _code_point(value: int) -> str:
    """A lone surrogate cannot be stored in a polars string: it becomes U+FFFD."""
    return "\ufffd" if 0xD800 <= value < 0xE000 else chr(value)


def json_unescape(text: str) -> str:
    """Decode JSON string escapes (one level) anywhere in ``text``, surrogate pairs included.

    Why not ``json.loads``: it needs one whole document, and a log line with a JSON
    payload or a pretty-printed JSON line is not one.
    """
    return _JSON_ESCAPE.sub(_unescape_match, text) if "\\" in text else text


def _with_inner_escapes(text: str) -> str:
    """``text`` plus, NUL-separated, its deeper decodings while backslashes remain.

    JSON inside a JSON string (a logged payload) is escaped twice; keeping every level
    means a literal backslash (``C:\\tyler``) cannot hide what the shallower level shows.
    """
    levels = [text]
    while len(levels) < MAX_ESCAPE_ROUNDS and "\\" in levels[-1]:
        levels.append(json_unescape(levels[-1]))
    return "\0".join(levels)


def _variants(text: Text) -> pl.Series:
    """The strings to search: as written, and normalised after JSON unescaping.

    Binary content is only searched as written and whitespace-folded (no case folding:
    random bytes would match short names case-insensitively).
    """
    strings = text.strings
    if text.binary:
        return pl.concat([strings, strings.str.replace_all(_WHITESPACE_RUN, " ")])
    return pl.concat([strings, _normalise(_unescaped(strings))])


def _unescaped(strings: pl.Series) -> pl.Series:
    """The same strings with JSON escapes decoded (only those holding a backslash are touched)."""
    escaped = strings.str.contains("\\", literal=True)
    if not escaped.any():
        return strings
    decoded = [_unescaped_lines(s) for s in strings.filter(escaped).to_list()]
    return pl.concat([strings.filter(~escaped), pl.Series(decoded, dtype=pl.String)])


def _unescaped_lines(text: str) -> str:
    """``text`` with JSON escapes decoded line by line.

    A line that is one JSON document (JSON Lines) is parsed by ``json.loads`` (C, ~7x
    faster than the regex on escape-dense text) and stands for its strings; any other line
    (a log with a JSON payload, pretty-printed JSON) goes through ``json_unescape``.
    """
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if "\\" in line:
            lines[i] = _with_inner_escapes(_json_line_strings(line) or json_unescape(line))
    return "\n".join(lines)


def _json_line_strings(line: str) -> str | None:
    """The keys and string values of a one-line JSON document, NUL-separated; None if it is not one.

    NUL keeps a word boundary without joining two fields into one phrase. Lines with
    surrogate escapes are left to ``json_unescape`` (a lone one would not fit a polars string).
    """
    if not line.lstrip().startswith(("{", "[")) or _SURROGATE_ESCAPE.search(line):
        return None
    try:
        pending = [json.loads(line)]
    except ValueError:
        return None
    found: list[str] = []
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            found.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return "\0".join(found)


@dataclass(frozen=True)
class _Needles:
    """Canary strings to look for, each mapped to the canary indices it stands for."""

    exact: dict[str, list[int]]
    any_form: dict[str, list[int]]  # exact plus normalised forms

    @classmethod
    def of(cls, values: list[str]) -> _Needles:
        exact: dict[str, list[int]] = {}
        for i, value in enumerate(values):
            exact.setdefault(value, []).append(i)
        normalised = _normalise(pl.Series(values, dtype=pl.String)).str.strip_chars().to_list()
        any_form = {k: list(v) for k, v in exact.items()}
        for i, value in enumerate(normalised):
            if len(value) >= MIN_CANARY_CHARS and i not in any_form.setdefault(value, []):
                any_form[value].append(i)
        return cls(exact, any_form)


def _whole_word_in(value: str, series: pl.Series) -> bool:
    """True when ``value`` occurs not glued to letters or digits ("Hiroshi" in "Hiroshima" is no leak).

    An underscore does not glue: ``score_ana@example.org`` (a column name) is a leak.
    """
    cells = series.filter(series.str.contains(value, literal=True))
    return any(_whole_word_at(value, text) for text in cells.to_list())


def _whole_word_at(value: str, text: str) -> bool:
    """``str.find`` and a look at both neighbours: a regex with a look-behind scans ~100x slower."""
    start = text.find(value)
    while start >= 0:
        end = start + len(value)
        if (start == 0 or not text[start - 1].isalnum()) and (end == len(text) or not text[end].isalnum()):
            return True
        start = text.find(value, start + 1)
    return False


def _find(variants: list[pl.Series], needles: dict[str, list[int]]) -> set[int]:
    """Canary indices whose needle occurs as a whole word in any of ``variants``.

    One ``extract_many`` call per file: building the Aho-Corasick automaton for thousands
    of needles costs ~5 ms, more than searching a small file.
    """
    if not variants or not needles:
        return set()
    series = pl.concat(variants)
    matched = series.str.extract_many(list(needles), overlapping=True).explode().drop_nulls().unique()
    return {i for v in matched.to_list() if _whole_word_in(v, series) for i in needles[v]}


def iter_files(roots: Iterable[str | Path]) -> Iterator[Path]:
    """Every file under the roots (a root may itself be a file), in a stable order."""
    for root in roots:
        root = Path(root)
        if root.is_file():
            yield root
        elif root.is_dir():
            yield from sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(SKIP_SUFFIXES))


def _scan_file(path: Path, canaries: list[tuple[str, str]], needles: _Needles) -> list[Hit]:
    """Hits in one file, plus a NOT_AUDITED hit when part of it could not be searched.

    Binary content is searched for the canaries as written only (see ``_variants``).
    """
    texts: list[pl.Series] = []
    binaries: list[pl.Series] = []
    hits: list[Hit] = []
    try:
        for text in file_texts(path):
            (binaries if text.binary else texts).append(_variants(text))
    except NotAuditedError as e:
        hits.append(Hit(str(path), NOT_AUDITED, -1, str(e)))
    found = _find(texts, needles.any_form) | _find(binaries, needles.exact)
    return hits + [Hit(str(path), canaries[i][0], i) for i in sorted(found)]


def scan(roots: Iterable[str | Path], canaries: list[tuple[str, str]]) -> tuple[list[Hit], int]:
    """Search every file under ``roots``; return (hits, files scanned).

    Why polars: ``extract_many`` runs Aho-Corasick over all canaries at once, so the
    audit costs one pass over the data, not one pass per canary. A file that could not be
    searched yields a ``NOT_AUDITED`` hit, so "no hits" still means "no PII".
    """
    needles = _Needles.of([v for _, v in canaries])
    hits: list[Hit] = []
    n_files = 0
    for path in iter_files(roots):
        n_files += 1
        hits.extend(_scan_file(path, canaries, needles))
    return hits, n_files


def without_public(canaries: list[tuple[str, str]], public_inputs: Iterable[str | Path]) -> tuple[
    list[tuple[str, str]], list[tuple[str, str]]
]:
    """Split canaries into (still checked, excluded) by whether public inputs already hold them.

    Why: the pipeline also reads public data sets (hh-rlhf, xstest). A planted first name
    like "Diego" also occurs there in "San Diego"; finding it in the pairs proves nothing
    about our events. Those values are excluded and reported, never silently dropped.
    A public file that could not be searched excludes nothing (the audit stays strict).
    """
    hits, _ = scan(public_inputs, canaries)
    public = {h.canary_index for h in hits if h.entity != NOT_AUDITED}
    kept = [c for i, c in enumerate(canaries) if i not in public]
    return kept, [canaries[i] for i in sorted(public)]
