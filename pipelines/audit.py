"""PII audit: search every file under some folders for known canary values.

The generator lists every PII value it planted in ``canaries.json``; after a run, none
of them may appear anywhere outside ``data/raw``. "Zero hits" must mean "no PII", so:

- the format is sniffed from the first bytes, never the suffix: gzip, xz, bz2, zip and
  zstd are decompressed (recursively, under a size cap), Parquet is parsed;
- Parquet is read with pyarrow and every string, binary and dictionary leaf is searched
  at any depth (lists, structs, maps), plus column names and key-value metadata;
- numbers are searched too: an integer, decimal or float cell, or a number in text
  (a JSON number, or digit groups with any separators), that equals a canary's digits
  ("4111 1111 1111 1111" as 4111111111111111 or 4111-1111-1111-1111, an SSN or phone
  number without separators) is a hit, and an international phone number also matches
  without its country code ("+44 7700 900724" as 7700900724 or "07700 900724") or with a
  trunk zero in brackets ("+44 (0) 7700 900724"), and an IPv4 address as its integer
  (192.168.0.1 as 3232235521); a float cell is a hit when the canary's integer rounds to it
  (float32 is exact only to 2^24, float64 to 2^53); only whole numbers of at least
  ``MIN_NUMBER_DIGITS`` digits count, so counts and ids do not match;
- text need not be UTF-8: UTF-16/32 (by BOM, or UTF-16 by its NUL bytes) is decoded, and
  invalid UTF-8 that is mostly ASCII is also read as cp1252 (Latin-1 "José García");
- bytes that are not UTF-8 (a file, a binary Parquet cell) are also searched for each
  non-ASCII canary as the legacy code pages in ``LEGACY_CODE_PAGES`` write it (a cp1251
  "Иван Петров", a Shift-JIS "山田太郎"), as written only;
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
import codecs
import gzip
import importlib
import io
import ipaddress
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
import pyarrow.compute as pc
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
canaries as written only; case-insensitive matches in random bytes would be noise. A UTF-16
reading with more control characters than this is not text either."""
MIN_NUMBER_DIGITS = 7
"""A canary is also looked for as a bare number when its digits (separators dropped) are at
least this many: a local phone number has 7; shorter numbers (counts, years, amounts) would
equal a canary by chance."""
UTF16_SNIFF_BYTES = 64 * 1024
"""UTF-16 without a BOM is recognised from this many leading bytes."""
UTF16_MIN_NUL_SHARE = 0.3
"""UTF-16 Latin-script text: one byte of most code units is NUL (ASCII "J" is ``4A 00``)..."""
UTF16_MAX_STRAY_NUL_SHARE = 0.02
"""...and the other byte almost never is (an array of small integers has NULs in both)."""
LATIN1_MIN_ASCII_SHARE = 0.7
"""Invalid UTF-8 is also read as cp1252 when at least this share of its bytes is printable
ASCII: Latin-script text in a legacy code page; random bytes have ~40%."""
LATIN1_BLOCK_BYTES = 64 * 1024
"""Only the blocks (about this size, cut at line ends) holding invalid UTF-8 are read as cp1252:
a log with one Latin-1 line is not searched twice."""

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
JSON_ESCAPE = re.compile(r'\\(?:u([0-9a-fA-F]{4})(?:\\u([0-9a-fA-F]{4}))?|(["\\/bfnrt]))')
"""One JSON string escape (a surrogate pair as one); the scrub stage maps offsets through it too."""
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_NUMBER_SEPARATORS = re.compile(r"[\s\-.()+]")
"""Dropped from a canary to get its digits: "(206) 555-0134", "+1 206.555.0134", "001-54-4970"."""
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
"""An IPv4 address with its dots dropped is no number anyone stores: not looked for as one."""
_NUMBER_TOKEN = rf"[\p{{L}}\p{{N}}]*[0-9]{{{MIN_NUMBER_DIGITS},}}[\p{{L}}\p{{N}}]*"
"""A run of letters and digits holding a long digit run; kept only when all digits (a whole number)."""
_SEPARATED_NUMBER = r"\p{L}?\+?\(?[0-9]+(?:[ .\-/()]{1,3}[0-9]+)+\p{L}?"
"""Digit groups with separators in text ("4111-1111-1111-1111", "07700 900724"), whatever the
canary's own separators; with a letter glued to either end the match is no number and is dropped."""
_INTERNATIONAL = re.compile(r"\s*(?:\+|00)")
"""A phone canary written with its country code ("+44 7700 900724", "0044 ...")."""
_TRUNK_ZERO = r"^(\s*(?:\+|00)[0-9]{1,3})[ .\-/]*\(0\)"
"""The national trunk zero in brackets right after a country code ("+44 (0) 7700 900724",
"+44(0)7700900724"): a caller abroad leaves it out, so it is no digit of the number. Only
there: "7700 (0) 900724" keeps its zero."""
LEGACY_CODE_PAGES = ("cp1252", "latin-1", "cp1250", "cp1251", "shift_jis")
"""Code pages a non-ASCII canary is also looked for in, as bytes, where it is encodable: Western
and Central European (the canaries' "José Fernández", "Dmitri Wiśniewski"), Cyrillic, Japanese."""
COUNTRY_CODE_DIGITS = (1, 2, 3)
NATIONAL_MIN_DIGITS = 9
"""An international canary is also looked for without its country code (the code is 1 to 3
digits, unknown here, so each is tried) when at least this many digits remain: stored the way
its owner's country writes it ("7700900724", "07700 900724"). Nine digits equal by chance
almost never, and the audit errs on the side of a hit."""
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_WIDE_BOM_STARTS = tuple(bom for bom, _ in _WIDE_BOMS)
_PRINTABLE_ASCII = bytes(range(0x20, 0x7F)) + b"\t\n\r"
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")
"""What text has almost none of: C0 controls but tab and line ends, DEL, U+FFFD."""


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
    """Searchable strings from one file; ``binary`` when they are leniently decoded bytes,
    ``numbers`` when they are numeric cells (integers, floats, or a decimal's digits): matched
    whole, not searched; ``legacy`` when they are bytes that are not UTF-8, one character per
    byte (latin-1): searched for the canaries as legacy code pages write them."""

    strings: pl.Series
    binary: bool = False
    numbers: bool = False
    legacy: bool = False


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
    yield from _texts_from_raw(data)


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


def _texts_from_raw(data: bytes) -> Iterator[Text]:
    """Bytes read as UTF-8 (as always), plus a UTF-16/32 or cp1252 reading when they are such text,
    plus, when they are not UTF-8, the bytes themselves (``_legacy_text``).

    All readings are searched: a file may mix encodings, and no reading searched before is lost.
    """
    try:
        utf8, utf8_valid = Text(pl.Series([data.decode("utf-8")], dtype=pl.String)), True
    except UnicodeDecodeError:
        utf8, utf8_valid = _text_from_raw(data), False
    yield utf8
    if (other := _other_reading(data, utf8_valid)) is not None:
        yield Text(pl.Series([other], dtype=pl.String))
    if not utf8_valid:
        yield _legacy_text([data])


def _legacy_text(blobs: list[bytes]) -> Text:
    """Bytes that are not UTF-8, one character per byte, to be searched for the canaries' legacy
    code page bytes (``_Needles.legacy``).

    Why bytes and not a decoding per code page: one pass (Aho-Corasick) finds a cp1251 and a
    Shift-JIS name alike, and needs no guess of the encoding, which binary data has none of.
    Why not valid UTF-8: an accented Latin or a Cyrillic letter in these code pages is a byte
    UTF-8 reads as a lead byte (or never valid), and the ASCII or such letter after it is no
    continuation byte; text in them is valid UTF-8 only by a rare chance (cp1251 "Лё" is).
    """
    return Text(pl.Series([b.decode("latin-1") for b in blobs], dtype=pl.String), legacy=True)


def _other_reading(data: bytes, utf8_valid: bool) -> str | None:
    """The text of bytes that UTF-8 misreads: UTF-16/32 (BOM or NUL pattern), else cp1252; or None.

    UTF-16 of ASCII is valid UTF-8 (with NULs), so it is looked for first; ``utf8_valid``
    spares valid UTF-8 the cp1252 look.
    """
    if (text := _wide_text(data)) is not None:
        return text
    return None if utf8_valid else _cp1252_blocks(data) or None


def _wide_text(data: bytes) -> str | None:
    """``data`` decoded as UTF-16/32 when ``_wide_encoding`` says so and the result is text."""
    encoding = _wide_encoding(data)
    if encoding is None:
        return None
    text = data.decode(encoding, errors="replace")
    return text if _control_share(text) <= BINARY_REPLACEMENT_RATIO else None


def _cp1252_blocks(data: bytes) -> str:
    """The blocks of ``data`` that are invalid UTF-8 but mostly printable ASCII, read as cp1252.

    Adjacent blocks are read together; others are NUL-separated (a word boundary that
    joins no phrase). Binary blocks are left out: they stay searched as written only.
    """
    spans: list[list[int]] = []
    start = 0
    while start < len(data):
        end = data.find(b"\n", start + LATIN1_BLOCK_BYTES) + 1 or len(data)
        block = data[start:end]
        if _printable_ascii_share(block) >= LATIN1_MIN_ASCII_SHARE and not _is_utf8(block):
            if spans and spans[-1][1] == start:
                spans[-1][1] = end
            else:
                spans.append([start, end])
        start = end
    return "\0".join(data[s:e].decode("cp1252", errors="replace") for s, e in spans)


def _is_utf8(data: bytes) -> bool:
    """Strict decoding: a block that already reads right as UTF-8 needs no cp1252 reading."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _wide_encoding(data: bytes) -> str | None:
    """UTF-32 or UTF-16 by BOM, or UTF-16 without one by its NULs: every other byte, one parity only."""
    if data.startswith(_WIDE_BOM_STARTS):
        return next(encoding for bom, encoding in _WIDE_BOMS if data.startswith(bom))
    sample = data[:UTF16_SNIFF_BYTES]
    units = len(sample) // 2
    if units == 0 or sample.count(0) < UTF16_MIN_NUL_SHARE * units:  # too few NULs: the usual case
        return None
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    for nuls, stray, encoding in ((odd, even, "utf-16-le"), (even, odd, "utf-16-be")):
        if nuls >= UTF16_MIN_NUL_SHARE * units and stray <= UTF16_MAX_STRAY_NUL_SHARE * units:
            return encoding
    return None


def _control_share(text: str) -> float:
    """Share of characters text has almost none of (controls, U+FFFD): high means binary."""
    return (len(text) - len(_CONTROL_CHARS.sub("", text))) / max(len(text), 1)


def _printable_ascii_share(data: bytes) -> float:
    """Share of bytes that are printable ASCII or whitespace (``bytes.translate`` runs in C)."""
    return 1 - len(data.translate(None, _PRINTABLE_ASCII)) / max(len(data), 1)


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
    """Column names, metadata and every text and number leaf of a Parquet file, one row group at a time.

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
                for leaf in _arrow_leaves(chunk):
                    yield from _texts_from_arrow(leaf)


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


def _arrow_leaves(array: pa.Array) -> Iterator[pa.Array]:
    """Every string, binary or number array inside ``array``: dictionaries, lists, maps, structs, unions."""
    kind = array.type
    if _is_string(kind) or _is_binary(kind) or _is_number(kind):
        yield array
    elif pa.types.is_dictionary(kind):
        yield from _arrow_leaves(array.dictionary)
    elif isinstance(kind, pa.BaseExtensionType):  # arrow.json, arrow.uuid, user types
        yield from _arrow_leaves(array.storage)
    elif pa.types.is_struct(kind) or pa.types.is_union(kind):
        for i in range(kind.num_fields):
            yield from _arrow_leaves(array.field(i))
    elif hasattr(array, "values"):  # list, large/fixed-size list, list view, map, run-end encoded
        yield from _arrow_leaves(array.values)


def _is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _is_binary(kind: pa.DataType) -> bool:
    return (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
            or pa.types.is_fixed_size_binary(kind) or pa.types.is_binary_view(kind))


def _is_number(kind: pa.DataType) -> bool:
    """Integer, decimal and float columns: a card or phone number may be stored as a number."""
    return pa.types.is_integer(kind) or pa.types.is_decimal(kind) or pa.types.is_floating(kind)


def _texts_from_arrow(leaf: pa.Array) -> Iterator[Text]:
    """Non-null cells as strings, numbers as in ``_text_from_numbers``, binary as in ``_texts_from_binary``."""
    if _is_number(leaf.type):
        yield _text_from_numbers(leaf)
    elif _is_binary(leaf.type):
        yield from _texts_from_binary(leaf)
    else:
        yield Text(pl.Series(leaf.cast(pa.large_string())).drop_nulls())


def _texts_from_binary(leaf: pa.Array) -> Iterator[Text]:
    """Binary cells as UTF-8 (leniently, flagged binary, when some are not UTF-8, and then also
    as bytes, see ``_legacy_text``), plus the cells that hold UTF-16/32 text, decoded (see
    ``_wide_cells``)."""
    try:
        yield Text(pl.Series(leaf.cast(pa.large_string())).drop_nulls())
    except pa.ArrowInvalid:
        cells = [b for b in leaf.to_pylist() if b is not None]
        yield Text(pl.Series([b.decode("utf-8", errors="replace") for b in cells], dtype=pl.String), binary=True)
        yield _legacy_text(cells)
    wide = [text for cell in _wide_cells(leaf) if (text := _wide_text(cell)) is not None]
    if wide:
        yield Text(pl.Series(wide, dtype=pl.String))


def _wide_cells(leaf: pa.Array) -> list[bytes]:
    """Cells that may be UTF-16/32: a BOM's first two bytes, or NULs enough for UTF-16.

    pyarrow picks them; only those go through Python (a column of hashes or embeddings
    costs two vectorised passes, not a loop).
    """
    if pa.types.is_binary_view(leaf.type):  # no substring kernels for views
        leaf = leaf.cast(pa.large_binary())
    nuls_needed = pc.multiply(pc.divide(pc.binary_length(leaf), 2), UTF16_MIN_NUL_SHARE)
    enough_nuls = pc.greater_equal(pc.count_substring(leaf, "\0"), nuls_needed)
    bom = pc.is_in(pc.binary_slice(leaf, 0, 2), value_set=pa.array({b[:2] for b in _WIDE_BOM_STARTS}))
    maybe = pc.and_(pc.or_(enough_nuls, bom), pc.greater(pc.binary_length(leaf), 0))
    return pc.filter(leaf, maybe).to_pylist()


def _text_from_numbers(leaf: pa.Array) -> Text:
    """Integer cells as integers, float cells as floats (float16 as float32), decimal cells as
    their digits ("4111111111111111.00" loses its zero fraction), to be matched whole
    (``_find_numbers``)."""
    if pa.types.is_decimal(leaf.type):
        digits = pl.Series(leaf.cast(pa.large_string())).drop_nulls()
        return Text(digits.str.replace(r"\.0*$", ""), numbers=True)
    if pa.types.is_float16(leaf.type):  # exact in float32; polars has no float16
        leaf = leaf.cast(pa.float32())
    return Text(pl.Series(leaf).drop_nulls(), numbers=True)


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
    return JSON_ESCAPE.sub(_unescape_match, text) if "\\" in text else text


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
    return pl.concat([strings, _normalise(_unescaped(strings)), _normalise(_url_decoded(strings))])


_PERCENT_ESCAPE = r"%[0-9A-Fa-f]{2}"


def _url_decoded(strings: pl.Series) -> pl.Series:
    """The strings that hold percent escapes, decoded: a URL's query keeps ``jdoe%40example.com``."""
    from urllib.parse import unquote

    encoded = strings.filter(strings.str.contains(_PERCENT_ESCAPE))
    return pl.Series([unquote(s) for s in encoded.to_list()], dtype=pl.String)


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
    digits: dict[str, list[int]]  # digit forms, matched whole against numbers (``_digit_form``)
    legacy: dict[str, list[int]]  # non-ASCII canaries' bytes in LEGACY_CODE_PAGES, one char per byte

    @classmethod
    def of(cls, values: list[str]) -> _Needles:
        exact: dict[str, list[int]] = {}
        digits: dict[str, list[int]] = {}
        legacy: dict[str, list[int]] = {}
        for i, value in enumerate(values):
            exact.setdefault(value, []).append(i)
            for form in _number_forms(value):
                digits.setdefault(form, []).append(i)
            for form in _legacy_forms(value):
                legacy.setdefault(form, []).append(i)
        normalised = _normalise(pl.Series(values, dtype=pl.String)).str.strip_chars().to_list()
        any_form = {k: list(v) for k, v in exact.items()}
        for i, value in enumerate(normalised):
            if len(value) >= MIN_CANARY_CHARS and i not in any_form.setdefault(value, []):
                any_form[value].append(i)
        return cls(exact, any_form, digits, legacy)


def _legacy_forms(value: str) -> list[str]:
    """A non-ASCII canary's bytes in each code page of ``LEGACY_CODE_PAGES`` that can write it
    (distinct), read back one character per byte as ``_legacy_text`` reads data."""
    if value.isascii():
        return []
    forms: list[str] = []
    for code_page in LEGACY_CODE_PAGES:
        try:
            forms.append(value.encode(code_page).decode("latin-1"))
        except UnicodeEncodeError:
            continue
    return list(dict.fromkeys(forms))


def _digit_form(value: str) -> str | None:
    """A canary as a stored number: its digits without separators or leading zeros (an int has
    none), when that is all digits and long enough not to equal a count by chance; else None."""
    if _IPV4.fullmatch(value):
        return None
    digits = _NUMBER_SEPARATORS.sub("", value).lstrip("0")
    if digits.isascii() and digits.isdigit() and len(digits) >= MIN_NUMBER_DIGITS:
        return digits
    return None


def _number_forms(value: str) -> list[str]:
    """Every whole number a canary may be stored as (distinct): its digit form and, for an
    international phone, that without the country code (and without a trunk zero in brackets,
    ``_TRUNK_ZERO``, when the canary has one); or an IPv4 address's integer."""
    forms: list[str] = []
    for written in dict.fromkeys((value, re.sub(_TRUNK_ZERO, r"\1", value))):
        if (number := _digit_form(written)) is not None:
            forms += [number, *_national_forms(written, number)]
    if not forms and (packed := _ipv4_integer(value)) is not None:
        forms.append(packed)
    return list(dict.fromkeys(forms))


def _ipv4_integer(value: str) -> str | None:
    """An IPv4 canary as the integer a database stores it as (``INET_ATON``, ``int(ip_address)``),
    when that is long enough not to equal a count by chance; else None."""
    if not _IPV4.fullmatch(value):
        return None
    try:
        packed = str(int(ipaddress.IPv4Address(value)))
    except ValueError:
        return None
    return packed if len(packed) >= MIN_NUMBER_DIGITS else None


def _national_forms(value: str, number: str) -> list[str]:
    """An international canary's digit forms without its country code (see NATIONAL_MIN_DIGITS)."""
    if not _INTERNATIONAL.match(value):
        return []
    forms = (number[k:].lstrip("0") for k in COUNTRY_CODE_DIGITS)
    return [f for f in forms if len(f) >= NATIONAL_MIN_DIGITS]


def _number_tokens(strings: pl.Series) -> pl.Series:
    """Numbers of at least ``MIN_NUMBER_DIGITS`` digits in text, as digit forms (see ``_digit_form``).

    Whole numbers (a JSON number) and digit groups with any separators (a card written
    with dashes where its canary has spaces), a trunk zero in brackets after a country code
    dropped (``_TRUNK_ZERO``); a digit run glued to letters ("ab1234567", "x206 555 0134")
    is no number.
    """
    tokens = strings.str.extract_all(_NUMBER_TOKEN).explode().drop_nulls()
    whole = tokens.filter(tokens.str.contains(r"^[0-9]+$"))
    grouped = strings.str.extract_all(_SEPARATED_NUMBER).explode().drop_nulls()
    grouped = (grouped.filter(~grouped.str.contains(r"^\p{L}|\p{L}$"))
               .str.replace(_TRUNK_ZERO, "${1}").str.replace_all(r"[^0-9]", ""))
    grouped = grouped.filter(grouped.str.len_bytes() >= MIN_NUMBER_DIGITS)
    return pl.concat([whole, grouped]).str.strip_chars_start("0")


def _find_numbers(numbers: pl.Series, digits: dict[str, list[int]]) -> set[int]:
    """Canary indices whose digit form equals a whole number cell or token.

    Equality, not substring search: a column of counts or ids holds every short digit run.
    Integer cells are compared as integers (no string per cell); digit forms too large for
    the column's type cannot occur in it and are dropped. A float cell matches a digit form
    rounded to the column's type (to nearest, as a writer stores it): float64 is exact to
    2^53, float32 only to 2^24, so a float32 cell also matches a canary that differs from the
    number actually stored by less than half its spacing (512 for a 10-digit phone). That
    over-reports, which an audit may; it never misses the canary's own float.
    """
    if numbers.is_empty() or not digits:
        return set()
    keys = pl.Series(list(digits), dtype=pl.String)
    if numbers.dtype.is_float():
        rounded = keys.cast(numbers.dtype)
        finite = rounded.is_finite()  # a form past float32's range is inf, as an inf cell is
        keys, rounded = keys.filter(finite), rounded.filter(finite)
        stored = numbers.filter(numbers.is_in(rounded.implode())).unique()
        return {i for k in keys.filter(rounded.is_in(stored.implode())).to_list() for i in digits[k]}
    if numbers.dtype.is_integer():
        keys = keys.cast(numbers.dtype, strict=False).drop_nulls()
    matched = numbers.filter(numbers.is_in(keys.implode())).unique().cast(pl.String)
    return {i for v in matched.to_list() for i in digits[v]}


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

    Binary content is searched for the canaries as written only (see ``_variants``), bytes that
    are not UTF-8 for the non-ASCII ones in legacy code pages (``_legacy_text``); numbers
    (numeric cells, and whole numbers in text that is not binary) are matched by digit form.
    """
    texts: list[pl.Series] = []
    binaries: list[pl.Series] = []
    legacies: list[pl.Series] = []
    hits: list[Hit] = []
    found: set[int] = set()
    try:
        for text in file_texts(path):
            if text.numbers:
                found |= _find_numbers(text.strings, needles.digits)
            elif text.legacy:
                legacies.append(text.strings)
            elif text.binary:
                binaries.append(_variants(text))
            else:
                texts.append(_variants(text))
                found |= _find_numbers(_number_tokens(text.strings), needles.digits)
    except NotAuditedError as e:
        hits.append(Hit(str(path), NOT_AUDITED, -1, str(e)))
    found |= _find(texts, needles.any_form) | _find(binaries, needles.exact) | _find(legacies, needles.legacy)
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
