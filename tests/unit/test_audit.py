"""The PII audit finds canaries in Parquet cells and text files, whole words only."""

from __future__ import annotations

import json
import unicodedata

import polars as pl
import pytest

from pipelines.audit import load_canaries, scan


def _canaries(tmp_path, values):
    path = tmp_path / "canaries.json"
    path.write_text(json.dumps([{"entity": e, "value": v} for e, v in values]))
    return load_canaries(path)


def test_finds_canaries_in_compressed_parquet_nested_cells_and_text(tmp_path):
    c = _canaries(tmp_path, [("EMAIL", "ana@example.org"), ("PERSON", "Hiroshi"), ("PHONE", "415-555-0134")])
    data = tmp_path / "data"
    data.mkdir()
    pl.DataFrame({"prompt": [[{"role": "user", "content": "mail ana@example.org"}]], "x": ["ok"]}).write_parquet(
        data / "a.parquet", compression="zstd")
    (data / "b.json").write_text(json.dumps({"note": "call 415-555-0134"}))
    (data / "c.txt").write_text("a trip to Hiroshima")  # not the name Hiroshi
    hits, n = scan([data], c)
    assert n == 3
    assert sorted((h.path.rsplit("/", 1)[-1], h.entity) for h in hits) == [("a.parquet", "EMAIL"), ("b.json", "PHONE")]


def test_short_values_are_ignored_and_clean_files_pass(tmp_path):
    c = _canaries(tmp_path, [("PERSON", "Al"), ("PERSON", "Maria Lopez")])
    assert [v for _, v in c] == ["Maria Lopez"]
    (tmp_path / "clean.txt").write_text("Al said the report is due.")
    assert scan([tmp_path / "clean.txt"], c) == ([], 1)


def test_canaries_already_in_public_inputs_are_excluded_and_reported(tmp_path):
    import gzip

    from pipelines.audit import without_public

    c = _canaries(tmp_path, [("PERSON", "Diego"), ("EMAIL", "ana@example.org")])
    public = tmp_path / "hh.jsonl.gz"
    public.write_bytes(gzip.compress(b'{"chosen": "I live in San Diego"}'))
    kept, excluded = without_public(c, [public])
    assert kept == [("EMAIL", "ana@example.org")] and excluded == [("PERSON", "Diego")]


# --- blind spots found in review: each case plants a canary the audit must report ---------

EMAIL, NAME = "maria.garcia@example.com", "José García"


def _hits(tmp_path, path):
    """Entities found in one file, with the canaries EMAIL and NAME."""
    c = _canaries(tmp_path, [("EMAIL", EMAIL), ("PERSON", NAME)])
    return sorted(h.entity for h in scan([path], c)[0])


def _parquet_cases():
    """Arrow tables that hide the e-mail outside a plain String column."""
    import datetime as dt

    import pyarrow as pa

    cell = f"mail {EMAIL}"
    return {
        "categorical": pl.DataFrame({"p": [cell]}, schema={"p": pl.Categorical}).to_arrow(),
        "dictionary": pa.table({"p": pa.array([cell]).dictionary_encode()}),
        "binary": pa.table({"p": pa.array([cell.encode()], pa.binary())}),
        "large_binary": pa.table({"p": pa.array([cell.encode()], pa.large_binary())}),
        "map": pa.table({"p": pa.array([[("user", cell)]], pa.map_(pa.string(), pa.string()))}),
        "map_key": pa.table({"p": pa.array([[(cell, "x")]], pa.map_(pa.string(), pa.string()))}),
        "deep": pa.table({"p": pa.array([[{"a": [{"b": [cell], "t": dt.datetime(2026, 11, 2)}]}]])}),
        "column_name": pa.table({f"score_{EMAIL}": [1.0]}),
        "nested_field_name": pa.table({"p": pa.array([{EMAIL: 1}])}),
        "metadata": pa.table({"x": ["ok"]}).replace_schema_metadata({"note": cell}),
        "json_extension": pa.table({"j": pa.ExtensionArray.from_storage(pa.json_(), pa.array([json.dumps(cell)]))}),
        "utf16_binary": pa.table({"p": pa.array([cell.encode("utf-16-le")], pa.binary())}),  # valid UTF-8 (NULs)
        "utf16_bom_binary": pa.table({"p": pa.array([b"\x00\xff", cell.encode("utf-16")], pa.binary())}),
    }


@pytest.mark.parametrize("case", sorted(_parquet_cases()))
def test_parquet_text_outside_plain_string_columns_is_searched(tmp_path, case):
    import pyarrow.parquet as pq

    pq.write_table(_parquet_cases()[case], tmp_path / "t.parquet", compression="zstd")
    assert _hits(tmp_path, tmp_path / "t.parquet") == ["EMAIL"]


def _bulk(cell: str, n: int = 3000) -> list[str]:
    """Many rows, the canary in one (neither min nor max: Parquet statistics keep those
    uncompressed): compression really hides it from a byte search."""
    rows = [f"row {i} the refund goes back to your card" for i in range(n)]
    rows[n // 2] = f"row {n // 2} {cell}"
    return rows


def test_a_datetime_date_or_decimal_column_does_not_hide_the_other_columns(tmp_path):
    import datetime as dt
    from decimal import Decimal

    n = 3000
    pl.DataFrame({
        "seen": [[dt.datetime(2026, 11, 2)]] * n,
        "msg": [{"content": c, "ts": dt.date(2026, 11, 2), "amount": Decimal("1.50")} for c in _bulk(f"mail {EMAIL}")],
        "prompt": _bulk(f"user {NAME}"),
    }).write_parquet(tmp_path / "t.parquet", compression="gzip")
    assert _hits(tmp_path, tmp_path / "t.parquet") == ["EMAIL", "PERSON"]


def test_a_parquet_file_that_cannot_be_read_is_reported_not_passed(tmp_path):
    from pipelines import audit

    pl.DataFrame({"prompt": _bulk(f"mail {EMAIL}")}).write_parquet(tmp_path / "ok.parquet", compression="zstd")
    (tmp_path / "cut.parquet").write_bytes((tmp_path / "ok.parquet").read_bytes()[:-100])  # footer lost
    c = _canaries(tmp_path, [("EMAIL", EMAIL)])
    hits, _ = scan([tmp_path / "cut.parquet"], c)
    assert [(h.canary_index, h.reason) for h in hits if h.entity == audit.NOT_AUDITED] == [
        (-1, "unreadable Parquet (ArrowInvalid)")]
    # an unreadable public input excludes nothing (index -1 must not exclude the last canary)
    (tmp_path / "junk.parquet").write_bytes(b"PAR1" + bytes(100))
    assert audit.without_public(c, [tmp_path / "junk.parquet"]) == (c, [])


def _compressed_cases():
    """name -> bytes: each holds the e-mail, none named by a suffix that says how."""
    import bz2
    import gzip
    import io
    import lzma
    import zipfile

    text = "\n".join(_bulk(f"mail {EMAIL}")).encode()
    parquet = io.BytesIO()
    pl.DataFrame({"prompt": _bulk(f"mail {EMAIL}")}).write_parquet(parquet, compression="zstd")
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.txt", text)
        z.writestr("b/part-0", gzip.compress(parquet.getvalue()))
    only_inner = io.BytesIO()
    with zipfile.ZipFile(only_inner, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("b/part-0", gzip.compress(parquet.getvalue()))
    return {
        "part-0.pq": parquet.getvalue(),
        "0123abcd": parquet.getvalue(),  # a DVC cache object: no suffix
        "events.jsonl.gzip": gzip.compress(text),
        "x.jsonl.xz": lzma.compress(text),
        "x.jsonl.bz2": bz2.compress(text),
        "a.zip": zipped.getvalue(),
        "inner.zip": only_inner.getvalue(),
        "p.parquet.gz": gzip.compress(parquet.getvalue()),
    }


@pytest.mark.parametrize("name", ["part-0.pq", "0123abcd", "events.jsonl.gzip", "x.jsonl.xz", "x.jsonl.bz2",
                                  "a.zip", "inner.zip", "p.parquet.gz"])
def test_format_is_sniffed_from_magic_bytes_not_the_suffix(tmp_path, name):
    (tmp_path / name).write_bytes(_compressed_cases()[name])
    assert _hits(tmp_path, tmp_path / name) == ["EMAIL"]


def test_zip_member_names_are_searched(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.writestr(f"export/{EMAIL}.txt", "nothing here")
    assert _hits(tmp_path, tmp_path / "a.zip") == ["EMAIL"]


def _not_audited(tmp_path, path):
    from pipelines import audit

    hits, _ = scan([path], _canaries(tmp_path, [("EMAIL", EMAIL)]))
    return [h.reason for h in hits if h.entity == audit.NOT_AUDITED]


def test_an_archive_past_the_size_cap_is_reported_not_expanded(tmp_path, monkeypatch):
    import gzip

    from pipelines import audit

    monkeypatch.setattr(audit, "MAX_DECOMPRESSED_BYTES", 1_000_000)
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(b"\0" * 2_000_000))
    (tmp_path / "small.gz").write_bytes(gzip.compress(b"\0" * 500_000))
    assert ["expands past" in r for r in _not_audited(tmp_path, tmp_path / "bomb.gz")] == [True]
    assert _not_audited(tmp_path, tmp_path / "small.gz") == []


def test_corrupt_compressed_data_is_reported(tmp_path):
    import gzip
    import zipfile

    packed = gzip.compress(f"mail {EMAIL}".encode() * 1000)
    (tmp_path / "cut.gz").write_bytes(packed[:50])
    (tmp_path / "bad.gz").write_bytes(packed[:20] + b"\xff" * 20 + packed[40:])
    with zipfile.ZipFile(tmp_path / "bad.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a", b"hello world " * 10000)
    data = bytearray((tmp_path / "bad.zip").read_bytes())
    data[60:80] = b"\xff" * 20
    (tmp_path / "bad.zip").write_bytes(bytes(data))
    for name in ("cut.gz", "bad.gz", "bad.zip"):
        assert len(_not_audited(tmp_path, tmp_path / name)) == 1, name


def test_zstd_without_the_zstandard_module_is_reported(tmp_path, monkeypatch):
    from pipelines import audit

    def no_module(name):
        raise ImportError(name)

    monkeypatch.setattr(audit.importlib, "import_module", no_module)
    (tmp_path / "x.bin").write_bytes(audit.ZSTD_MAGIC + b"\0" * 64)
    assert ["zstandard" in r for r in _not_audited(tmp_path, tmp_path / "x.bin")] == [True]


def test_zstd_is_decompressed_when_zstandard_is_installed(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    (tmp_path / "x.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(f"mail {EMAIL}".encode()))
    assert _hits(tmp_path, tmp_path / "x.jsonl.zst") == ["EMAIL"]


@pytest.mark.parametrize("name, text", [
    ("log.jsonl", "\n".join(json.dumps({"msg": f"user {NAME}", "mail": EMAIL.replace("@", "\\u0040")})
                             for _ in range(2))),
    ("split.json", json.dumps({"msg": "José\nGarcía", "to": f"{EMAIL}\n"}, ensure_ascii=False)),
    ("signature.jsonl", json.dumps({"t": f"Thanks,\n{NAME}\n{EMAIL}"}) + "\n" + json.dumps({"t": "x"})),
    ("run.log", "INFO payload=" + json.dumps({"user": NAME, "mail": EMAIL}) + " done\n"),
    ("twice.log", "INFO " + json.dumps(json.dumps({"user": NAME, "mail": EMAIL}))),
    ("spans.json", json.dumps({"attributes": {"input": json.dumps({"user": NAME, "mail": EMAIL})}})),
    ("emoji.jsonl", json.dumps({"msg": f"\U0001F600 {NAME} {EMAIL}"}) + "\n" + json.dumps([f"{EMAIL}\ud800"])),
])
def test_json_escapes_are_decoded_in_json_lines_and_logs(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    assert _hits(tmp_path, tmp_path / name) == ["EMAIL", "PERSON"]


def test_a_literal_backslash_before_a_name_does_not_hide_it(tmp_path):
    c = _canaries(tmp_path, [("PERSON", "Tyler")])
    (tmp_path / "path.jsonl").write_text(json.dumps({"p": "C:\\tyler\\x"}))  # "\t" is a tab only one level down
    assert [h.entity for h in scan([tmp_path / "path.jsonl"], c)[0]] == ["PERSON"]


@pytest.mark.parametrize("value", ["José García", 'a "quoted" \\ back/slash', "tab\tnl\ncr\r", "😀 𝒥 \u2028", "\ud800"])
def test_json_unescape_agrees_with_json_loads(value):
    from pipelines.audit import json_unescape

    escaped = json.dumps(value)[1:-1]
    assert json_unescape(escaped) == (value if value != "\ud800" else "\ufffd")


@pytest.mark.parametrize("name, write", [
    ("split.parquet", lambda p: pl.DataFrame({"c": ["José\nGarcía", f"mail {EMAIL.upper()}"]}).write_parquet(p)),
    ("nfd.txt", lambda p: p.write_text(unicodedata.normalize("NFD", f"user {NAME} {EMAIL}"))),
    ("upper.txt", lambda p: p.write_text(f"MAIL {EMAIL.upper()}\nUSER {NAME.upper()}")),
    ("nbsp.txt", lambda p: p.write_text("José\u00a0García " + EMAIL.replace("@", "\u200b@"))),
    ("fullwidth.txt", lambda p: p.write_text(f"{NAME} " + EMAIL.replace("@", "＠"))),
])
def test_whitespace_unicode_form_and_case_do_not_hide_a_canary(tmp_path, name, write):
    write(tmp_path / name)
    assert _hits(tmp_path, tmp_path / name) == ["EMAIL", "PERSON"]


def test_folding_keeps_the_whole_word_rule_and_binary_files_stay_case_sensitive(tmp_path):
    c = _canaries(tmp_path, [("PERSON", "Hiroshi"), ("PERSON", "Emre")])
    tmp_path = tmp_path / "data"
    tmp_path.mkdir()
    (tmp_path / "a.txt").write_text("A TRIP TO HIROSHIMA, hiroshima\nbay")
    weights = bytes(range(128, 256)) * 100
    (tmp_path / "w.bin").write_bytes(weights + b" emre " + weights)  # case-insensitive luck in random bytes
    (tmp_path / "x.bin").write_bytes(weights + b" Emre " + weights)  # as written: still found
    hits, _ = scan([tmp_path], c)
    assert [(h.path.rsplit("/", 1)[-1], h.entity) for h in hits] == [("x.bin", "PERSON")]


# --- numbers: a card or phone number stored as a number, not as text ---------------------

CARD, SSN, PHONE = "4111 1111 1111 1111", "001-54-4970", "(206) 555-0134"


def _number_cases():
    """Arrow tables holding the card (or the SSN, leading zeros lost) as a number, among counts."""
    from decimal import Decimal

    import pyarrow as pa

    counts = list(range(1, 3001))
    card, ssn = 4111111111111111, 1544970
    return {
        "int64": pa.table({"n": counts, "card": [card, *counts[1:]]}),
        "uint64": pa.table({"card": pa.array([card], pa.uint64())}),
        "decimal": pa.table({"card": pa.array([Decimal(f"{card}.00")], pa.decimal128(20, 2))}),
        "float_with_nulls": pa.table({"card": pa.array([float(card), None, 1.5])}),  # pandas: ints + NaN
        "dictionary": pa.table({"card": pa.array([card, card, 7]).dictionary_encode()}),
        "nested": pa.table({"p": pa.array([[{"card": [card]}]])}),
        "ssn": pa.table({"ssn": pa.array([ssn], pa.int32())}),
    }


@pytest.mark.parametrize("case", sorted(_number_cases()))
def test_a_card_or_ssn_stored_as_a_number_is_found(tmp_path, case):
    import pyarrow.parquet as pq

    c = _canaries(tmp_path, [("CREDIT_CARD", CARD), ("US_SSN", SSN)])
    pq.write_table(_number_cases()[case], tmp_path / "t.parquet", compression="zstd")
    assert [h.entity for h in scan([tmp_path / "t.parquet"], c)[0]] == ["US_SSN" if case == "ssn" else "CREDIT_CARD"]


def test_counts_do_not_match_short_canaries_only_equal_long_numbers_do(tmp_path):
    c = _canaries(tmp_path, [("PIN", "4821"), ("PIN", "90-21"), ("CREDIT_CARD", CARD), ("PHONE", PHONE)])
    tmp_path = tmp_path / "data"
    tmp_path.mkdir()
    pl.DataFrame({
        "count": list(range(1, 10_001)),  # holds 4821 and 9021
        "big": [41111111111111110 + i for i in range(10_000)],  # holds the card's digits, never equals them
        "card": [4111111111111111] + [None] * 9_999,
    }).write_parquet(tmp_path / "t.parquet")
    # the phone's digits glued to letters or inside a longer number; "90-21" as digits
    (tmp_path / "t.jsonl").write_text(json.dumps({"id": "ab2065550134", "x": 20655501340, "y": 9021}))
    assert [(h.path.rsplit("/", 1)[-1], h.entity) for h in scan([tmp_path], c)[0]] == [("t.parquet", "CREDIT_CARD")]


def test_a_card_or_phone_as_a_bare_json_number_is_found(tmp_path):
    c = _canaries(tmp_path, [("CREDIT_CARD", CARD), ("PHONE", PHONE), ("US_SSN", SSN)])
    tmp_path = tmp_path / "data"
    tmp_path.mkdir()
    (tmp_path / "a.jsonl").write_text(json.dumps({"card": 4111111111111111}) + "\n" + json.dumps({"tel": 2065550134}))
    (tmp_path / "b.log").write_text("INFO ssn=001544970 ok")
    assert sorted(h.entity for h in scan([tmp_path], c)[0]) == ["CREDIT_CARD", "PHONE", "US_SSN"]


# --- encodings: text that is not UTF-8 -----------------------------------------------------


def _encoded_cases():
    """file name -> bytes: the e-mail and the accented name in an encoding that is not UTF-8."""
    text = f"user {NAME} {EMAIL}"
    utf8_lines = "\n".join(json.dumps({"i": i, "msg": "caf\u00e9"}, ensure_ascii=False) for i in range(5000))
    return {
        "bom.txt": text.encode("utf-16"),
        "le.txt": text.encode("utf-16-le"),  # no BOM: found by its NUL bytes
        "be.txt": text.encode("utf-16-be"),
        "utf32.txt": text.encode("utf-32"),
        "latin1.csv": f"id;user;mail\n1;{NAME};{EMAIL}\n".encode("latin-1"),
        "cp1252.txt": f"\u201c{text}\u201d".encode("cp1252"),
        "mixed.jsonl": f"{utf8_lines}\n".encode() + json.dumps({"msg": text}, ensure_ascii=False).encode("latin-1"),
    }


@pytest.mark.parametrize("name", sorted(_encoded_cases()))
def test_utf16_and_latin1_text_is_decoded(tmp_path, name):
    (tmp_path / name).write_bytes(_encoded_cases()[name])
    assert _hits(tmp_path, tmp_path / name) == ["EMAIL", "PERSON"]


def test_binary_with_nuls_or_high_bytes_is_not_read_as_utf16_or_latin1(tmp_path):
    import struct

    c = _canaries(tmp_path, [("PERSON", "Emre")])
    tmp_path = tmp_path / "data"
    tmp_path.mkdir()
    ints = struct.pack("<3000i", *range(3000))  # small int32s: NULs in both byte parities
    (tmp_path / "ids.bin").write_bytes(ints + b" emre " + ints)
    (tmp_path / "w.bin").write_bytes(bytes(range(128, 256)) * 100 + b" emre ")
    assert scan([tmp_path], c)[0] == []


def test_a_percent_encoded_value_in_a_url_is_found(tmp_path):
    """Found by the leak hunt: 'jdoe1987%40gmail.com' in a logged URL was no hit."""
    c = _canaries(tmp_path, [("EMAIL", "jdoe1987@gmail.com"), ("PERSON", "José García")])
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.log").write_text("GET /reset?email=jdoe1987%40gmail.com&token=abc\n")
    pl.DataFrame({"url": ["https://crm.example/c?name=Jos%C3%A9%20Garc%C3%ADa"]}).write_parquet(data / "b.parquet")
    (data / "c.txt").write_text("a 50%40 discount")
    hits, n = scan([data], c)
    assert n == 3
    assert sorted((h.path.rsplit("/", 1)[-1], h.entity) for h in hits) == [("a.log", "EMAIL"), ("b.parquet", "PERSON")]


def test_a_number_written_with_other_separators_or_without_its_country_code_is_found(tmp_path):
    """The canary's digits in another written form: a card with dashes where the canary has
    spaces, an international phone as its owner's country writes it, or stored as an int."""
    c = _canaries(tmp_path, [("CREDIT_CARD", CARD), ("PHONE", "+44 7700 900724"), ("US_SSN", SSN)])
    data = tmp_path / "data"
    data.mkdir()
    (data / "card.log").write_text("charged 4111-1111-1111-1111 today")
    (data / "uk.txt").write_text("call 07700 900724 after six")
    (data / "ssn.csv").write_text("id,ssn\n7,001.54.4970\n")
    pl.DataFrame({"tel": [7700900724]}).write_parquet(data / "tel.parquet")
    found = sorted((h.path.rsplit("/", 1)[-1], h.entity) for h in scan([data], c)[0])
    assert found == [("card.log", "CREDIT_CARD"), ("ssn.csv", "US_SSN"), ("tel.parquet", "PHONE"), ("uk.txt", "PHONE")]


def test_grouped_digits_glued_to_letters_or_short_or_other_numbers_are_no_hit(tmp_path):
    c = _canaries(tmp_path, [("PHONE", PHONE), ("PHONE", "+44 7700 900724")])
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text(
        "ref x206 555 0134 | 206 555 0134x | at 2026-11-30 14:18:18 | 206 555 | 7700 900725 | v1.2.3.4"
    )
    pl.DataFrame({"n": [770090072, 477009007]}).write_parquet(data / "b.parquet")  # one digit short, shifted
    assert scan([data], c)[0] == []


def test_an_ipv4_address_stored_as_its_integer_is_found(tmp_path):
    """A database column of INET_ATON values, or ``int(ip_address(...))`` in a log."""
    c = _canaries(tmp_path, [("IP_ADDRESS", "192.168.0.1"), ("IP_ADDRESS", "10.0.0.7")])
    data = tmp_path / "data"
    data.mkdir()
    pl.DataFrame({"ip": [3232235521], "n": [1]}).write_parquet(data / "a.parquet")
    (data / "b.log").write_text("client=167772167 done")
    (data / "c.log").write_text("client=3232235522 count=1921680")  # the next address, and the dotted digits
    found = sorted((h.path.rsplit("/", 1)[-1], h.canary_index) for h in scan([data], c)[0])
    assert found == [("a.parquet", 0), ("b.log", 1)]


# --- session 8: a trunk zero in brackets, float cells, legacy code pages -------------------


@pytest.mark.parametrize("written", [
    "call +44 (0) 7700 900724 after six",
    "call +44 (0)7700 900724",
    "call +44(0)7700900724",
    "call 0044 (0) 7700 900724",
    "tel: +44 (0) 7700-900-724.",
])
def test_a_phone_with_its_trunk_zero_in_brackets_is_found(tmp_path, written):
    """The UK way of writing a number for callers at home and abroad: "+44 (0) 7700 900724"."""
    c = _canaries(tmp_path, [("PHONE", "+44 7700 900724")])
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text(written)
    pl.DataFrame({"note": [written]}).write_parquet(data / "b.parquet")
    assert sorted(h.path.rsplit("/", 1)[-1] for h in scan([data], c)[0]) == ["a.txt", "b.parquet"]


def test_a_bracketed_zero_elsewhere_joins_no_numbers(tmp_path):
    """Only a "(0)" right after an international prefix is a trunk zero: between other digit
    groups it stays a digit, and a phone one digit off stays no hit."""
    c = _canaries(tmp_path, [("PHONE", "+44 7700 900724"), ("PHONE", PHONE)])
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text(
        "score 7700 (0) 900724 | 206 (0) 555 0134 | +44 (0) 7700 900725 | (0) 7700 900 | 4477 (0) 00900724"
    )
    pl.DataFrame({"note": ["v 7700 (0) 900724", "+1 (0) 2065 550 134x"]}).write_parquet(data / "b.parquet")
    assert scan([data], c)[0] == []


def _float_cases():
    """Arrow tables holding a card or phone as a float, exact or not (float32 is exact to 2^24,
    float64 to 2^53: a card above that is stored rounded even in float64)."""
    import numpy as np
    import pyarrow as pa

    def f32(*values):
        return pa.array(np.array(values, dtype=np.float64).astype(np.float32))

    return {
        "float64_phone": (pa.table({"tel": [2065550134.0, 1.5]}), "PHONE"),
        "float64_card": (pa.table({"card": [4111111111111111.0]}), "CREDIT_CARD"),
        "float64_card_past_2_53": (pa.table({"card": [9111111111111111.0]}), "CREDIT_CARD_HIGH"),
        "float32_phone": (pa.table({"tel": f32(2065550134, 3.25)}), "PHONE"),
        "float32_card": (pa.table({"card": f32(4111111111111111)}), "CREDIT_CARD"),
        "float32_ssn": (pa.table({"ssn": f32(1544970)}), "US_SSN"),
        "float32_nested": (pa.table({"p": pa.array([[{"tel": 2065550134.0}]],
                                                  pa.list_(pa.struct([("tel", pa.float32())])))}), "PHONE"),
    }


@pytest.mark.parametrize("case", sorted(_float_cases()))
def test_a_number_in_a_float32_or_float64_column_is_found(tmp_path, case):
    import pyarrow.parquet as pq

    c = _canaries(tmp_path, [("CREDIT_CARD", CARD), ("PHONE", PHONE), ("US_SSN", SSN),
                             ("CREDIT_CARD_HIGH", "9111 1111 1111 1111")])
    table, entity = _float_cases()[case]
    pq.write_table(table, tmp_path / "t.parquet")
    assert [h.entity for h in scan([tmp_path / "t.parquet"], c)[0]] == [entity]


def test_float32_cells_that_round_elsewhere_are_no_hit(tmp_path):
    """A float32 cell is a hit only when the canary rounds to it; the phone's neighbours 2,000
    away, its digits scaled, a float64 one off, and inf (where a 40-digit number rounds to in
    float32) are not."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    c = _canaries(tmp_path, [("PHONE", PHONE), ("US_SSN", SSN), ("ACCOUNT", "9" * 40)])
    near = np.array([2065550134 - 2000, 2065550134 + 2000, 206555013.4, 1544971, np.inf], dtype=np.float32)
    pq.write_table(pa.table({"x": pa.array(near), "y": pa.array([2065550135.0, 1544969.0, 0.0, -1.0, np.nan])}),
                   tmp_path / "t.parquet")
    assert scan([tmp_path / "t.parquet"], c)[0] == []


LEGACY = {"cp1251": "Иван Петров", "shift_jis": "山田太郎", "latin-1": "José Núñez", "cp1250": "Dmitri Wiśniewski"}


def _legacy_cases():
    """file name -> bytes: a non-ASCII name in a legacy code page, where UTF-8 and the cp1252
    reading of mostly-ASCII text do not see it."""
    import gzip

    noise = bytes(range(128, 256)) * 20  # binary: no reading but "as written" applied before
    return {
        "cp1251.txt": f"Клиент: {LEGACY['cp1251']}, тел. не указан\n".encode("cp1251"),
        "sjis.txt": f"顧客名: {LEGACY['shift_jis']}\n住所: 東京都\n".encode("shift_jis"),
        "latin1.bin": noise + f" {LEGACY['latin-1']} ".encode("latin-1") + noise,
        "cp1250.csv": f"jméno;{LEGACY['cp1250']}\n".encode("cp1250") + noise,
        "cp1251.txt.gz": gzip.compress(f"Клиент: {LEGACY['cp1251']}\n".encode("cp1251")),
    }


@pytest.mark.parametrize("name", sorted(_legacy_cases()))
def test_a_name_in_a_legacy_code_page_is_found(tmp_path, name):
    c = _canaries(tmp_path, [("PERSON", v) for v in LEGACY.values()])
    (tmp_path / name).write_bytes(_legacy_cases()[name])
    found = [c[h.canary_index][1] for h in scan([tmp_path / name], c)[0]]
    encoding = {"cp1251": "cp1251", "sjis": "shift_jis", "latin1": "latin-1", "cp1250": "cp1250"}[name.split(".")[0]]
    assert found == [LEGACY[encoding]]


def test_a_name_in_a_legacy_code_page_inside_a_binary_parquet_cell_is_found(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    c = _canaries(tmp_path, [("PERSON", v) for v in LEGACY.values()])
    cells = [f"{v}\x00".encode(encoding) for encoding, v in LEGACY.items()] + [b"\xff\xfe ok", None]
    pq.write_table(pa.table({"b": pa.array(cells, pa.binary())}), tmp_path / "t.parquet")
    assert sorted(h.canary_index for h in scan([tmp_path / "t.parquet"], c)[0]) == [0, 1, 2, 3]


def test_a_legacy_encoded_name_glued_to_letters_is_no_hit(tmp_path):
    """Legacy bytes are searched whole words only, like other binary content."""
    c = _canaries(tmp_path, [("PERSON", v) for v in LEGACY.values()])
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_bytes("Иван Петрова и Иван Петровский\n".encode("cp1251"))
    (data / "b.bin").write_bytes(bytes(range(128, 256)) + " xJosé Núñez ".encode("latin-1"))
    assert scan([data], c)[0] == []
