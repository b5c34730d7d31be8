"""Fuzzed inputs: the event parser, the scrubber and the pair builder never crash and keep their promises.

- ingest: arbitrary lines (valid events with mutated, missing or wrongly typed fields,
  huge fields around ``max_text_chars``, arbitrary Unicode and bytes, nested junk JSON,
  adversarial strings, timestamps of any year and offset, truncated JSON, a truncated
  gzip partition) go through the real stage: no exception, and every input line is
  accounted for, ``lines_in == accepted + quarantined``, one reject row per quarantined
  line, each with a known reason.
- scrubber: text mixing PII-like tokens, well-formed and malformed placeholders and
  arbitrary Unicode, under several placeholder formats: no crash, no existing placeholder
  lost, ``scrub(scrub(x)) == scrub(x)``, only the requested entity types replaced, and the
  stage's batch path (``scrub_columns``: distinct values, nulls, two columns) equals
  ``scrub_text`` cell by cell. (tests/unit/test_pii.py already fuzzes idempotency of the
  default format on plain text; these extend it.)
- pair builder: small arbitrary event sets built with tests/factories.py, where tenants
  reuse each other's thread, interaction and output ids, go through the real ingest and
  ``build_pairs``: no pair holds text, history or source events of another tenant, no
  thread lands in two splits.

Example counts are modest (the whole file runs in well under a minute); a failure
prints the minimal example hypothesis found.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines import ingest, pairs, pii, scrub
from pipelines.config import Params, ScrubParams
from pipelines.layout import Layout
from pipelines.schemas import FEEDBACK_TYPES, RejectReason
from tests.factories import feedback, interaction, output
from tests.reliability.helpers import tally, threads_in_two_splits

NODE = "tests/reliability/test_fuzz.py"
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
"""derandomize: the same examples on every run, so CI is stable and the ledger reproducible."""

PARAMS = Params()
MAX_CHARS = PARAMS.ingest.max_text_chars
REASONS = {str(r) for r in RejectReason}

# ----------------------------------------------------------------------------- strategies

ADVERSARIAL = [
    "", " ", "\u0000", "\ufeff", "\u202e\u0645\u0631\u062d\u0628\u0627", "\u2028\u2029", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🧨👩‍👩‍👧",
    "\r", "\\", '"', "null", "{}", "[]", "<PERSON>", "<EMAIL", "Robert'); DROP TABLE events;--",
    "../../etc/passwd", "%s%n%x", "${jndi:ldap://x}", "a" * MAX_CHARS, "é" * (MAX_CHARS + 1),
    "x" * (MAX_CHARS + 1), "NaN", "1e999",
]
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
VALUES = st.one_of(st.text(max_size=30), st.sampled_from(ADVERSARIAL), JUNK)
OFFSETS = st.timedeltas(min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59))
TIMESTAMPS = st.one_of(
    st.builds(lambda d, off: d.replace(tzinfo=timezone(off)).isoformat(),
              st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)), OFFSETS),
    st.datetimes().map(datetime.isoformat),  # naive: rejected
    st.sampled_from(["2026-11-10T09:00:00Z", "2026-11-10", "yesterday", "2026-02-30T00:00:00+00:00", ""]),
)


@st.composite
def fuzzed_event(draw) -> dict:
    """A factory event, then up to three fields dropped or replaced by anything."""
    iid = draw(st.sampled_from(["i1", "i2", "i3"]))
    tenant = draw(st.sampled_from(["acme", "globex"]))
    kind = draw(st.sampled_from(["interaction", "output", "feedback"]))
    if kind == "interaction":
        event = interaction(iid, tenant=tenant, prompt=draw(st.text(max_size=40)))
    elif kind == "output":
        event = output(iid, draw(st.sampled_from(["o1", "o2"])), tenant=tenant, text=draw(st.text(max_size=40)))
    else:
        event = feedback(iid, draw(st.sampled_from(["f1", "f2", "f3"])), draw(st.sampled_from([*FEEDBACK_TYPES, "meh"])),
                         tenant=tenant, output_id="o1", rating=draw(st.integers(-1, 7)), edited_text="Better text.",
                         output_ids=["o1", "o2"], preferred_output_id=draw(st.sampled_from(["o1", "o2", "o3"])))
    event["ts"] = draw(TIMESTAMPS)
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([*sorted(event), "unexpected_field"]))
        if draw(st.booleans()):
            event.pop(name, None)
        else:
            event[name] = draw(VALUES)
    return event


def _no_newline(data: bytes) -> bytes:
    return data.replace(b"\n", b" ")


LINES = st.one_of(
    fuzzed_event().map(lambda e: json.dumps(e).encode()),
    fuzzed_event().map(lambda e: json.dumps(e, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.tuples(fuzzed_event(), st.integers(0, 400)).map(lambda t: json.dumps(t[0]).encode()[: t[1]]),  # truncated
    JUNK.map(lambda j: json.dumps(j).encode()),
    st.binary(max_size=80),
    st.text(max_size=80).map(lambda s: s.encode("utf-8", "surrogatepass")),
).map(_no_newline)


@contextlib.contextmanager
def _ingest(lines: list[bytes], gz_cut: int | None = None) -> Iterator[tuple[dict, Layout]]:
    """Run the real ingest stage on ``lines`` (one partition; gzipped and cut when asked)."""
    with tempfile.TemporaryDirectory(prefix="fuzz-ingest-") as tmp:
        layout = Layout(Path(tmp))
        layout.raw_dir.mkdir(parents=True)
        data = b"".join(line + b"\n" for line in lines)
        name = "2026-11-10.jsonl"
        if gz_cut is not None:
            data, name = gzip.compress(data, mtime=0)[:gz_cut], name + ".gz"
        (layout.raw_dir / name).write_bytes(data)
        yield ingest.run(PARAMS, layout), layout


def _reconciles(metrics: dict, layout: Layout) -> None:
    rejects = pl.read_parquet(layout.rejects)
    assert metrics["accepted"] + metrics["quarantined"] == metrics["lines_in"]
    assert rejects.height == metrics["quarantined"]
    assert set(rejects["reason"].to_list()) <= REASONS
    assert (rejects["excerpt"].str.len_chars() <= ingest.EXCERPT_CHARS).all()
    assert pl.read_parquet(layout.records).height == metrics["records_out"]


# ----------------------------------------------------------------------------- ingest


@FUZZ
@given(st.lists(LINES, max_size=25))
def test_every_fuzzed_line_is_accepted_or_quarantined(lines):
    row = tally("Fuzzed raw lines (ingest)", f"pytest {NODE} -k ingest", "lines")
    row.runs += 1
    row.inputs += len(lines)
    with _ingest(lines) as (metrics, layout):
        positions = pl.read_parquet(layout.rejects).filter(pl.col("line_no") > 0)["line_no"]
        row.losses += abs(metrics["lines_in"] - len(lines)) + abs(
            metrics["accepted"] + metrics["quarantined"] - metrics["lines_in"])
        assert metrics["lines_in"] == len(lines)
        _reconciles(metrics, layout)
        assert positions.is_unique().all() and positions.is_between(1, len(lines)).all()


@FUZZ
@given(st.lists(LINES, min_size=1, max_size=15), st.floats(0.0, 1.0))
def test_a_truncated_gzip_partition_is_accounted_for(lines, cut):
    row = tally("Fuzzed raw lines (ingest)", f"pytest {NODE} -k ingest", "lines")
    row.runs += 1
    row.inputs += len(lines)
    full = len(gzip.compress(b"".join(line + b"\n" for line in lines), mtime=0))
    at = max(1, int(cut * full))  # a 0-byte .gz reads as an empty partition (see RELIABILITY.md)
    with _ingest(lines, gz_cut=at) as (metrics, layout):
        _reconciles(metrics, layout)
        reasons = Counter(pl.read_parquet(layout.rejects)["reason"].to_list())
        if at < full:  # a cut stream is one file-level reject, after the lines it did yield
            assert reasons[str(RejectReason.UNREADABLE_FILE)] == 1
            assert metrics["lines_in"] <= len(lines) + 1
        else:
            assert metrics["lines_in"] == len(lines)


@pytest.mark.parametrize(("chars", "reason"), [(MAX_CHARS, None), (MAX_CHARS + 1, RejectReason.TEXT_TOO_LONG)])
def test_the_text_limit_is_exact(chars, reason):
    line = json.dumps(interaction("i1", prompt="ü" * chars), ensure_ascii=False).encode()
    with _ingest([line]) as (metrics, _):
        assert metrics["quarantined_by_reason"] == ({str(reason): 1} if reason else {})


# ----------------------------------------------------------------------------- scrubber

PLACEHOLDER_FORMATS = ["<{entity}>", "[{entity}]", "__{entity}__", "{{{entity}}}"]
PII_LIKE = [
    "jane.doe@example.com", "(415) 555-0134", "+44 20 7946 0958", "4111 1111 1111 1111", "378282246310005",
    "GB82 WEST 1234 5698 7654 32", "123-45-6789", "192.168.0.1", "2001:db8::1", "Sarah Connor", "Mr. Okonkwo",
    "221B Baker Street", "12 Main St", "Apt 4", "zip code 05520", "my name is Tihomir Zulu", "Dear Priya,",
]
PLACEHOLDER_LIKE = [
    *(f"<{e}>" for e in pii.ENTITY_TYPES), *(f"[{e}]" for e in pii.ENTITY_TYPES[:3]), "<EMAIL", "EMAIL>",
    "<<PHONE>>", "<person>", "< PERSON >", "<PERSON><PERSON>", "<PERSON>'s", "<STREET_ADDRESS>12", "<NOT_A_TYPE>",
    "{EMAIL}", "__PERSON__", "<>", "<{entity}>",
]
SEPARATORS = [" ", ", ", ".\n", "\n\n", ": ", "-", "", "\t", " at ", " call ", "Hi ", "regards,\n"]
SCRUB_TEXT = st.lists(
    st.one_of(st.sampled_from(PII_LIKE), st.sampled_from(PLACEHOLDER_LIKE), st.sampled_from(SEPARATORS),
              st.text(max_size=10)),
    max_size=12,
).map("".join)


def _placeholders(text: str, fmt: str) -> Counter[str]:
    return Counter({e: text.count(fmt.format(entity=e)) for e in pii.ENTITY_TYPES})


@FUZZ
@given(SCRUB_TEXT, st.sampled_from(PLACEHOLDER_FORMATS))
def test_scrubbing_never_breaks_a_placeholder(text, fmt):
    row = tally("Fuzzed text with PII and placeholder-like tokens (scrubber)", f"pytest {NODE} -k scrub", "texts")
    row.runs += 1
    row.inputs += 1
    once, counts = pii.scrub_text(text, placeholder_format=fmt)
    before, after = _placeholders(text, fmt), _placeholders(once, fmt)
    broken = [e for e in pii.ENTITY_TYPES if after[e] < before[e] + counts.get(e, 0)]
    row.losses += len(broken)
    assert not broken, f"placeholders lost: {broken}: {text!r} -> {once!r}"


IDEMPOTENT_EXAMPLES = 400
"""More than the other fuzz tests: glued values (``x@y.com192.168.0.1``) once failed ~2% of
these texts; the rescan brought it to 3 in 8,000 (RELIABILITY.md), and 400 take ~8 s."""


@settings(FUZZ, max_examples=IDEMPOTENT_EXAMPLES)
@given(SCRUB_TEXT, st.sampled_from(PLACEHOLDER_FORMATS))
def test_scrubbing_is_idempotent(text, fmt):
    row = tally("Fuzzed text: scrubbing twice = once", f"pytest {NODE} -k idempotent", "texts")
    row.runs += 1
    row.inputs += 1
    once, _ = pii.scrub_text(text, placeholder_format=fmt)
    twice = pii.scrub_text(once, placeholder_format=fmt)[0]
    row.leaks += twice != once  # the second pass found PII the first one left
    assert twice == once


@pytest.mark.parametrize(("text", "fragment"), [
    ("I moved from 12 Main St to 40 Oak Ave.", "Oak Ave"),
    ("Addresses: 12 Main St; 40 Oak Ave", "Oak Ave"),
    ("Ship to 221B Baker Street, 12 Main St", "Main St"),
    ("Contact jane@example.com/(415) 555-0134", "415"),
    ("Call Sarah(415) 555-0134", "415"),
    ("jane.doe@example.com(415) 555-0134", "555-0134"),
])
def test_pii_the_fuzzer_found_surviving_a_scrub(text, fragment):
    """Minimal cases the fuzzer led to: part of the PII survives one scrub."""
    assert fragment not in pii.scrub_text(text)[0]


@FUZZ
@given(SCRUB_TEXT, st.sampled_from(pii.ENTITY_TYPES))
def test_only_the_requested_entities_are_replaced(text, entity):
    once, counts = pii.scrub_text(text, entities=[entity])
    assert set(counts) <= {entity}
    others = [e for e in pii.ENTITY_TYPES if e != entity]
    assert all(_placeholders(once, "<{entity}>")[e] == _placeholders(text, "<{entity}>")[e] for e in others)


@FUZZ
@given(st.lists(st.one_of(st.none(), SCRUB_TEXT, st.sampled_from(PII_LIKE)), min_size=1, max_size=12),
       st.randoms(use_true_random=False))
def test_the_batch_path_equals_scrub_text_cell_by_cell(cells, rnd):
    row = tally("Fuzzed text with PII and placeholder-like tokens (scrubber)", f"pytest {NODE} -k scrub", "texts")
    row.inputs += len(cells)
    other = cells[:]
    rnd.shuffle(other)  # the same values in another column: scrubbed once, mapped back twice
    df = pl.DataFrame({"prompt": cells, "output_text": other}, schema={"prompt": pl.String, "output_text": pl.String})
    out, counts = scrub.scrub_columns(df, ["prompt", "output_text"], ScrubParams())
    for column, values in (("prompt", cells), ("output_text", other)):
        expected = [None if v is None else pii.scrub_text(v)[0] for v in values]
        assert out[column].to_list() == expected
        assert sum(counts[column].values()) == sum(sum(pii.scrub_text(v)[1].values()) for v in values if v)


# ----------------------------------------------------------------------------- pair builder

TENANTS = ("acme", "globex", "initech")
WORDS = st.lists(st.sampled_from(["invoice", "pod", "restart", "reply", "refund", "draft", "please", "logs",
                                  "friday", "vendor", "deploy", "summary"]), min_size=1, max_size=6).map(" ".join)


@st.composite
def event_set(draw) -> list[dict]:
    """Interactions of several tenants that reuse each other's thread, interaction and output ids."""
    events: list[dict] = []
    for k in range(draw(st.integers(1, 6))):
        tenant = draw(st.sampled_from(TENANTS))
        thread = draw(st.sampled_from(["t1", "t2", "t3"]))
        iid = draw(st.sampled_from([f"i{k}", "shared"]))
        common = {"tenant": tenant, "thread": thread}
        events.append(interaction(iid, prompt=f"{tenant} asks {draw(WORDS)}", turn=draw(st.integers(0, 2)), **common))
        oids = [draw(st.sampled_from([f"{iid}-o{j}", f"o{j}"])) for j in range(draw(st.integers(1, 3)))]
        for oid in oids:
            events.append(output(iid, oid, text=f"{tenant} says {draw(WORDS)}", **common))
        for f in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(FEEDBACK_TYPES))
            oid = draw(st.sampled_from([*oids, "o0", "o1"]))
            fields = {"output_id": oid}
            if kind == "rating":
                fields["rating"] = draw(st.integers(1, 5))
            elif kind == "edit":
                fields["edited_text"] = f"{tenant} edits {draw(WORDS)}"
            elif kind == "comparison":
                fields = {"output_ids": [oid, draw(st.sampled_from([*oids, "o1"]))], "preferred_output_id": oid}
            events.append(feedback(iid, f"{k}-{f}", kind, **common, **fields))
    for n, event in enumerate(events):  # distinct event ids (the factories derive them from the ids)
        event["event_id"] = f"ev-{n}"
    replays = draw(st.lists(st.sampled_from(events), max_size=2))
    return draw(st.permutations(events + replays))


def _tenant_tags(text: str) -> set[str]:
    return {t for t in TENANTS if f"{t} " in text}


@FUZZ
@given(event_set())
def test_no_pair_mixes_tenants_and_no_thread_spans_splits(events):
    row = tally("Fuzzed event sets with colliding ids across tenants (pair builder)", f"pytest {NODE} -k pair",
                "events")
    row.runs += 1
    row.inputs += len(events)
    owner = {e["event_id"]: e["tenant_id"] for e in events}
    params = Params()
    params.pairs.hh_rlhf.enabled = params.pairs.xstest.enabled = False
    with _ingest([json.dumps(e).encode() for e in events]) as (_, layout):
        out, metrics = pairs.build_pairs(pl.scan_parquet(layout.records), params)
    mixed = []
    for frame in out.values():
        for p in frame.iter_rows(named=True):
            texts = [p["chosen"], p["rejected"], *(m["content"] for m in p["prompt"] if m["role"] != "system")]
            if any(_tenant_tags(t) != {p["tenant_id"]} for t in texts) or any(
                owner[i] != p["tenant_id"] for i in p["source_event_ids"]
            ):
                mixed.append(p)
    spanning = threads_in_two_splits(out)
    row.leaks += len(mixed) + len(spanning)
    assert not mixed, mixed[:2]
    assert not spanning
    assert metrics["threads_in_two_splits"] == 0
    ids = pl.concat([f.select("pair_id") for f in out.values()])["pair_id"]
    assert ids.is_unique().all()
    assert all((f["chosen"] != f["rejected"]).all() for f in out.values() if f.height)

