"""Pairs: scrubbed feedback records (+ public sets) -> train/val/test/safety preference pairs.

Where pairs come from (one row per pair, ``PAIR_SCHEMA``):

- ``edit``: chosen = the user's edited text, rejected = the model's original, only when
  the edit is substantive (at least ``pairs.min_edit_ratio`` of the words changed, words
  counted with their repeats);
- ``rating``: two outputs of one interaction whose mean ratings are at least
  ``min_rating_gap`` apart (an output rated several times counts once, at its mean);
- ``comparison``: the preferred of two drafts shown side by side vs the other one (when
  the same two drafts were compared more than once, the majority choice; a tie, none);
- ``accept_reject``: an accepted and a rejected output of the same interaction;
- ``public`` (hh-rlhf) and ``safety`` (xstest), through :mod:`pipelines.public_sources`.

A chosen and rejected equal up to whitespace, or empty, never make a pair.

Then: exact duplicates (same ``pair_id``) are merged into one row (the earliest copy, with
the source events of every copy in its thread), and near-duplicates (within a tenant, a MinHash estimate of the
Jaccard similarity of word 3-shingles above ``near_dup_threshold`` for the prompt, the
chosen AND the rejected alike) are removed; every pair lies inside one tenant by
construction (all joins are on the interaction); splits are drawn per (tenant, thread)
from a seeded hash, so a conversation never lands in two splits and adding new weeks
never moves old threads; training pairs whose prompt or content also appears in
val/test/safety are removed.
Skills with fewer than ``min_pairs_per_skill`` training pairs (none included) are reported,
not dropped.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from typing import Any, TypeVar

import numpy as np
import polars as pl

from pipelines.config import PairsParams, Params
from pipelines.io import write_json_atomic, write_parquet_atomic
from pipelines.layout import Layout
from pipelines.public_sources import hh_rlhf_pairs, xstest_pairs
from pipelines.schemas import MESSAGE, PAIR_SCHEMA, SPLITS

log = logging.getLogger(__name__)

MINHASH_PERMUTATIONS = 32  # per text: the prompt, the chosen and the rejected are signed apart
LSH_BANDS = 16  # 16 bands x 2 rows of both answers: a pair at Jaccard 0.9 on chosen and on
#                 rejected becomes a candidate with p > 0.9999999 (1 - (1 - 0.9**4)**16)
MINHASH_CHUNK_TEXTS = 4096  # texts signed at a time: bounds memory, keeps a chunk in cache
_WORD = r"[^\p{L}\p{N}<>_]+"

# ----------------------------------------------------------------------------- event pairs


_FINAL_ANSWER_RANK = {"edit": 0, "accept": 1, "comparison": 2, "rating": 3, "reject": 4}
"""Which record of an earlier turn says best what the assistant's answer ended up being."""


def with_history(rec: pl.LazyFrame) -> pl.LazyFrame:
    """Add ``_history``: the thread's earlier turns as user/assistant messages, oldest first.

    Why: a follow-up ("should we page anyone?") means nothing without the conversation
    before it, for training and for telling two prompts apart. The assistant side of an
    earlier turn is what the user ended up with: the edited text, else the accepted or
    preferred output, else the best-rated one. The messages are built as rows (one per
    message) and gathered into lists once at the end: moving list-of-struct columns
    through a join costs more than the texts themselves.
    """
    rank = pl.col("feedback_type").replace_strict(_FINAL_ANSWER_RANK, default=len(_FINAL_ANSWER_RANK))
    turns = (
        rec.with_columns(rank.alias("_rank"), pl.coalesce("edited_text", "output_text").alias("_answer"))
        .sort("_rank", pl.col("rating").fill_null(0), "event_id", descending=[False, True, False])
        .group_by("tenant_id", "thread_id", "turn")
        .agg(pl.col("prompt").first().alias("_user"), pl.col("_answer").first())
        .rename({"turn": "_turn"})
    )
    earlier = (
        rec.select("event_id", "tenant_id", "thread_id", "turn")
        .join(turns, on=["tenant_id", "thread_id"])
        .filter(pl.col("_turn") < pl.col("turn"))
    )
    history = (
        pl.concat(
            [
                earlier.select("event_id", "_turn", pl.lit(side, dtype=pl.UInt8).alias("_side"),
                               pl.lit(role).alias("role"), pl.col(column).alias("content"))
                for side, (role, column) in enumerate((("user", "_user"), ("assistant", "_answer")))
            ]
        )
        .sort("event_id", "_turn", "_side")
        .group_by("event_id", maintain_order=True)
        .agg(pl.struct("role", "content").alias("_history"))
    )
    return rec.join(history, on="event_id", how="left", maintain_order="left")


def _messages() -> pl.Expr:
    """Chat messages: the context as a system turn (when present), the history, then the user."""
    user = pl.concat_list(pl.struct(pl.lit("user").alias("role"), pl.col("prompt").alias("content")))
    system = pl.concat_list(pl.struct(pl.lit("system").alias("role"), pl.col("context").alias("content")))
    no_context = pl.col("context").is_null() | (pl.col("context").str.strip_chars() == "")
    history = pl.col("_history").fill_null(pl.lit([], dtype=pl.List(MESSAGE))).cast(pl.List(MESSAGE))
    return (
        pl.when(no_context)
        .then(pl.concat_list(history, user.cast(pl.List(MESSAGE))))
        .otherwise(pl.concat_list(system.cast(pl.List(MESSAGE)), history, user.cast(pl.List(MESSAGE))))
        .alias("prompt")
    )


def _words(col: str) -> pl.Expr:
    return pl.col(col).str.to_lowercase().str.replace_all(_WORD, " ").str.strip_chars().str.split(" ")


def substantive_edits(records: pl.LazyFrame, min_change: float) -> pl.LazyFrame:
    """``event_id`` of the edits that changed at least ``min_change`` of the text.

    The share changed is ``1 - |A & B| / |A | B|`` over the word multisets of the edited
    text A and the model's output B. Why multisets and not sets: deleting a repeated
    paragraph keeps the word set but is a real edit; with counts, removing two of three
    copies changes 2/3 of the text. Word order alone does not count (a pure reordering
    reads as 0). Why from the bare records, one row per (edit, word hash), counted in one
    group-by: per-list evaluation, or the records with their thread history, cost more.
    """
    edits = records.filter(pl.col("feedback_type") == "edit").select("event_id", "edited_text", "output_text")
    edits = edits.with_row_index("_row")
    sides = [
        edits.select("_row", _words(col).alias("_w"), pl.lit(side, dtype=pl.Int8).alias("_side")).explode("_w")
        for side, col in enumerate(("edited_text", "output_text"))
    ]
    per_word = (
        pl.concat(sides)
        .with_columns(pl.col("_w").hash())
        .group_by("_row", "_w")
        .agg((pl.col("_side") == 0).sum().alias("_a"), (pl.col("_side") == 1).sum().alias("_b"))
    )
    change = 1 - pl.min_horizontal("_a", "_b").sum() / pl.max_horizontal("_a", "_b").sum()
    kept = per_word.group_by("_row").agg(change.alias("_change")).filter(pl.col("_change") >= min_change)
    return edits.join(kept, on="_row", how="semi").select("event_id")


_Frame = TypeVar("_Frame", pl.DataFrame, pl.LazyFrame)
_LOOSE_WHITESPACE = r"\s{2,}|[^ \S]"
"""Whitespace that differs from one space: replacing only these, not every single space,
gives the same text at a third of the cost."""


def _normalised(col: str) -> pl.Expr:
    """Text with runs of whitespace made one space and the ends trimmed: for equality checks."""
    return pl.col(col).str.replace_all(_LOOSE_WHITESPACE, " ").str.strip_chars()


def drop_same_sides(pairs: _Frame) -> _Frame:
    """Keep pairs whose chosen and rejected are both non-empty and differ beyond whitespace.

    Why: "a  b" against "a b\\n" states no preference. Why columns, not one predicate: a
    predicate would be pushed into every source branch and normalise each text there.
    """
    c, r = pl.col("_chosen"), pl.col("_rejected")
    return (
        pairs.with_columns(_normalised("chosen").alias("_chosen"), _normalised("rejected").alias("_rejected"))
        .filter((c != r) & (c != "") & (r != ""))
        .drop("_chosen", "_rejected")
    )


_PAIR_BASE = ("tenant_id", "skill", "thread_id")


def _select_pair(chosen: str, rejected: str, pair_type: str, ids: pl.Expr) -> list[pl.Expr]:
    return [
        pl.col("prompt"), pl.col(chosen).alias("chosen"), pl.col(rejected).alias("rejected"),
        pl.lit(pair_type).alias("pair_type"), pl.lit("events").alias("source"),
        *[pl.col(c) for c in _PAIR_BASE], ids.alias("source_event_ids"), pl.col("ts"),
    ]


def event_pairs(records: pl.LazyFrame, p: PairsParams) -> pl.LazyFrame:
    """All four kinds of pairs from joined, scrubbed feedback records."""
    rec = with_history(records).with_columns(_messages())
    ids = pl.col("source_event_ids")

    edits = (
        rec.filter(pl.col("feedback_type") == "edit")
        .join(substantive_edits(records, p.min_edit_ratio), on="event_id", how="semi")
        .select(_select_pair("edited_text", "output_text", "edit", ids))
    )
    comparisons = majority_comparisons(rec.filter(pl.col("feedback_type") == "comparison")).select(
        _select_pair("output_text", "other_output_text", "comparison", ids)
    )

    def _by_interaction(left: pl.LazyFrame, right: pl.LazyFrame, cond: pl.Expr, kind: str) -> pl.LazyFrame:
        joined = left.join(right, on=["interaction_id", "tenant_id"], suffix="_r").filter(
            (pl.col("output_id") != pl.col("output_id_r")) & cond
        )
        return joined.select(
            _select_pair("output_text", "output_text_r", kind,
                         pl.concat_list("source_event_ids", "source_event_ids_r").list.unique(maintain_order=True))
        )

    rated = aggregate_ratings(rec.filter(pl.col("feedback_type") == "rating"))
    ratings = _by_interaction(rated, rated, (pl.col("rating") - pl.col("rating_r")) >= p.min_rating_gap, "rating")
    accepted = rec.filter(pl.col("feedback_type") == "accept")
    rejected = rec.filter(pl.col("feedback_type") == "reject")
    accept_reject = _by_interaction(accepted, rejected, pl.lit(True), "accept_reject")

    return drop_same_sides(pl.concat([edits, comparisons, ratings, accept_reject], how="vertical_relaxed"))


def majority_comparisons(compared: pl.LazyFrame) -> pl.LazyFrame:
    """The comparison records whose choice agrees with the majority for their two outputs.

    Why: the same two drafts compared twice with opposite choices gave both A > B and
    B > A. Each comparison of a pair of outputs (within a tenant's interaction) is a
    vote; the records on the losing side are left out, and a tie states no preference,
    so neither side makes a pair. Repeats of the winning choice stay, and merge later as
    exact duplicates with all their events.
    """
    lo, hi = pl.min_horizontal("output_id", "other_output_id"), pl.max_horizontal("output_id", "other_output_id")
    vote = pl.when(pl.col("output_id") == pl.col("_lo")).then(1).otherwise(-1)
    return (
        compared.with_columns(lo.alias("_lo"), hi.alias("_hi"))
        .with_columns(vote.alias("_vote"))
        .with_columns(pl.col("_vote").sum().over("tenant_id", "interaction_id", "_lo", "_hi").alias("_total"))
        .filter(pl.col("_total").sign() == pl.col("_vote"))
        .drop("_lo", "_hi", "_vote", "_total")
    )


def _sorted_union(col: str) -> pl.Expr:
    """In an aggregation: the group's lists joined, each item once, sorted (order-free provenance)."""
    return pl.col(col).list.explode(keep_nulls=False, empty_as_null=False).unique().sort()


def aggregate_ratings(rated: pl.LazyFrame) -> pl.LazyFrame:
    """One row per rated output (tenant, interaction, output): its mean rating, all its events.

    Why: two ratings of one output (two reviewers, a re-rating) paired one by one give
    both A > B and B > A. The rows of one output share the interaction, so the prompt,
    text and thread agree; the earliest ``ts`` stands for the output.
    """
    return (
        rated.sort("event_id")
        .group_by("tenant_id", "interaction_id", "output_id")
        .agg(
            pl.col("rating").mean(), pl.col("ts").min(), _sorted_union("source_event_ids"),
            pl.col("prompt", "output_text", "skill", "thread_id").first(),
        )
    )


# ----------------------------------------------------------------------------- public pairs


def _stable_fraction(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from a seeded hash: stable across runs, machines and versions."""
    digest = hashlib.blake2b(f"{seed}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def public_pairs(params: Params, stats: Counter[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(hh-rlhf pairs, xstest safety pairs), PII-scrubbed like our own text."""
    p = params.pairs
    hh = pl.DataFrame(schema={**_PAIR_COLUMNS_NO_ID})
    if p.hh_rlhf.enabled:
        rows = list(hh_rlhf_pairs(p.hh_rlhf.path, stats))
        if p.hh_rlhf.max_pairs:
            threads = sorted({r["thread_id"] for r in rows}, key=lambda t: _stable_fraction(params.seed, t))
            # whole dialogues only, so a thread is never cut in two
            keep: set[str] = set()
            count = Counter(r["thread_id"] for r in rows)
            total = 0
            for t in threads:
                if total >= p.hh_rlhf.max_pairs:
                    break
                keep.add(t)
                total += count[t]
            rows = [r for r in rows if r["thread_id"] in keep]
        hh = pl.DataFrame(rows, schema=_PAIR_COLUMNS_NO_ID, orient="row")
    safety = pl.DataFrame(schema={**_PAIR_COLUMNS_NO_ID})
    if p.xstest.enabled:
        safety = pl.DataFrame(
            list(xstest_pairs(p.xstest.prompts, p.xstest.completions, stats)), schema=_PAIR_COLUMNS_NO_ID, orient="row"
        )
    return _scrub_pairs(hh, params, stats, "hh_rlhf"), _scrub_pairs(safety, params, stats, "xstest")


_PAIR_COLUMNS_NO_ID = {k: v for k, v in PAIR_SCHEMA.items() if k not in ("pair_id", "split")}


def _scrub_pairs(df: pl.DataFrame, params: Params, stats: Counter[str], source: str) -> pl.DataFrame:
    """Public text passes the same scrubber: processed data holds no PII whatever its source.

    Scrubbing can make the two answers one ("write to <EMAIL>"), so sides that are equal
    or empty afterwards are dropped and counted as ``{source}_identical_after_scrub``.
    """
    if df.is_empty():
        return df
    from pipelines.pii import scrub_series

    s = params.scrub
    chosen, _ = scrub_series(df["chosen"], s.entities, s.placeholder_format)
    rejected, _ = scrub_series(df["rejected"], s.entities, s.placeholder_format)
    msgs = df.select(pl.col("prompt").alias("m"), pl.int_range(pl.len()).alias("_row")).explode("m").unnest("m")
    content, _ = scrub_series(msgs["content"], s.entities, s.placeholder_format)
    msgs = msgs.with_columns(content).group_by("_row", maintain_order=True).agg(
        pl.struct("role", "content").alias("prompt")
    )
    scrubbed = df.with_columns(chosen, rejected, msgs["prompt"].cast(pl.List(MESSAGE)))
    kept = drop_same_sides(scrubbed)
    stats[f"{source}_identical_after_scrub"] += scrubbed.height - kept.height
    return kept


# ----------------------------------------------------------------------------- ids and dedup


def pair_ids(df: pl.DataFrame) -> pl.Series:
    """Content id: the same tenant, prompt, chosen and rejected always get the same id.

    The prompt counts as its JSON text (``json.dumps(messages, ensure_ascii=False,
    sort_keys=True)``), written by polars: turning every prompt into Python dicts costs
    more than hashing.
    """
    keys = df.select(
        pl.concat_str("tenant_id", _prompt_json(), "chosen", "rejected", separator="\x1f")
    ).to_series()
    ids = [hashlib.blake2b(k.encode("utf-8"), digest_size=12).hexdigest() for k in keys.to_list()]
    return pl.Series("pair_id", ids, dtype=pl.String)


def _json_string(field: str) -> pl.Expr:
    """A message field as a JSON value, escaped as ``json.dumps(ensure_ascii=False)`` does."""
    wrapped = pl.struct(pl.element().struct.field(field).alias("v")).struct.json_encode()
    return wrapped.str.strip_prefix('{"v":').str.strip_suffix("}")


def _prompt_json() -> pl.Expr:
    """The prompt messages as the JSON text ``json.dumps`` writes with sorted keys."""
    message = pl.concat_str(
        pl.lit('{"content": '), _json_string("content"), pl.lit(', "role": '), _json_string("role"), pl.lit("}")
    )
    listed = pl.concat_str(pl.lit("["), pl.col("prompt").list.eval(message).list.join(", "), pl.lit("]"))
    return pl.when(pl.col("prompt").is_null()).then(pl.lit("null")).otherwise(listed)


def _prompt_key() -> pl.Expr:
    """All prompt messages' words, normalised: the key for prompt-level leakage checks.

    Why all messages and not the last one: follow-up turns ("make it more formal") repeat
    across many threads; only the whole conversation identifies a prompt.
    """
    return (
        pl.col("prompt").list.eval(pl.element().struct.field("content")).list.join(" \x1f ")
        .str.to_lowercase().str.replace_all(_WORD, " ").str.strip_chars()
    )


def minhash_signatures(texts: pl.Series, seed: int, k: int = MINHASH_PERMUTATIONS) -> np.ndarray:
    """MinHash signatures (n x k, uint64) of the word 3-shingles of each text.

    Why vectorised: a Python loop over 10^7 shingles takes minutes; here words are
    hashed once by polars, shingles are combined arithmetically and the k minima come
    from ``np.minimum.reduceat``. Why in chunks of texts: memory stays bounded (a million
    events make ~25M words) and the k passes over a chunk's shingles stay in cache.
    """
    n = len(texts)
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=k, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=k, dtype=np.uint64)
    sig = np.empty((n, k), dtype=np.uint64)
    for lo in range(0, n, MINHASH_CHUNK_TEXTS):
        chunk = texts.slice(lo, MINHASH_CHUNK_TEXTS)
        sig[lo : lo + len(chunk)] = _chunk_signatures(chunk, seed, a, b)
    return sig


def _chunk_signatures(texts: pl.Series, seed: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signatures of a few thousand texts (see :func:`minhash_signatures`)."""
    n = len(texts)
    words = (
        pl.DataFrame({"t": texts})
        .with_row_index("doc")
        .select("doc", pl.col("t").str.to_lowercase().str.replace_all(_WORD, " ").str.strip_chars().str.split(" "))
        .explode("t")
        .with_columns(pl.col("t").fill_null("").hash(seed=seed).alias("h"))
    )
    doc = words["doc"].to_numpy().astype(np.int64)
    h = words["h"].to_numpy().astype(np.uint64)
    # a text's shingles: its word 3-grams, or its words when it has fewer than three;
    # each text is one kind or the other, so both kinds line up in text order
    short = (np.bincount(doc, minlength=n) < 3)[doc]
    shingle = np.zeros(len(h), dtype=bool)
    shingle[:-2] = doc[:-2] == doc[2:]
    value = h.copy()
    with np.errstate(over="ignore"):
        value[:-2][shingle[:-2]] = (
            h[:-2] * np.uint64(0x9E3779B97F4A7C15) + h[1:-1] * np.uint64(0xC2B2AE3D27D4EB4F) + h[2:]
        )[shingle[:-2]]
    keep = shingle | short
    shingles, owner = value[keep], doc[keep]
    starts = np.searchsorted(owner, np.arange(n))
    sig = np.zeros((n, len(a)), dtype=np.uint64)
    if not len(shingles):
        return sig
    perm = np.empty_like(shingles)
    for i in range(len(a)):
        np.multiply(shingles, a[i], out=perm)  # uint64 arithmetic wraps, as a hash should
        np.add(perm, b[i], out=perm)
        sig[:, i] = np.minimum.reduceat(perm, starts)
    return sig


def distinct_signatures(texts: pl.Series, seed: int) -> np.ndarray:
    """:func:`minhash_signatures` of ``texts``, each distinct text signed once.

    Why: the answers of one interaction's rating pairs, and the prompts of its pairs,
    repeat. Texts are told apart by a 64-bit hash (a collision among a million: p < 1e-7).
    """
    texts = texts.fill_null("")
    _, first, index = np.unique(texts.hash(seed=seed).to_numpy(), return_index=True, return_inverse=True)
    return minhash_signatures(texts.gather(first), seed)[index.reshape(-1)]


def _alike(sigs: tuple[np.ndarray, ...], i: np.ndarray, j: np.ndarray, threshold: float) -> np.ndarray:
    """For each (i, j): does every signature set estimate a Jaccard of at least ``threshold``?"""
    alike = np.ones(len(i), dtype=bool)
    for sig in sigs:
        alike &= (sig[i] == sig[j]).mean(axis=1) >= threshold
    return alike


def _band_candidates(bands: list[np.ndarray], tenant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, other): rows whose band key (tenant + these signature columns) equals an earlier row's."""
    n = len(tenant)
    key = tenant.copy()
    with np.errstate(over="ignore"):
        for block in bands:
            for column in block.T:
                key = key * np.uint64(0x100000001B3) + column
    order = np.lexsort((np.arange(n), key))
    sorted_key = key[order]
    run_start = np.r_[True, sorted_key[1:] != sorted_key[:-1]]
    first = order[np.maximum.accumulate(np.where(run_start, np.arange(n), 0))]
    cand = np.flatnonzero(~run_start)
    return first[cand], order[cand]


def near_duplicate_mask(df: pl.DataFrame, threshold: float, seed: int) -> np.ndarray:
    """True for rows that are near-duplicates of an earlier row of the same tenant.

    A near-duplicate repeats the other pair in every part: the prompt, the chosen AND the
    rejected each reach ``threshold`` (estimated Jaccard of word 3-shingles). Why per
    part: one signature of the concatenation is ruled by the longest text, so pairs that
    share a long prompt (several ratings of one interaction, turns after a pasted
    document) but differ in both answers looked alike. LSH on the two answers' signatures
    finds candidates; a candidate is dropped when its band's first (earliest) row matches
    it on both answers and then on the prompt. Why prompts last: they are the long texts,
    and only the few candidates whose answers match need theirs signed.
    """
    n = df.height
    drop = np.zeros(n, dtype=bool)
    if n < 2:
        return drop
    answers = distinct_signatures(pl.concat([df["chosen"], df["rejected"]]), seed).reshape(2, n, -1)
    tenant = df["tenant_id"].cast(pl.Categorical).to_physical().to_numpy().astype(np.uint64)
    rows = MINHASH_PERMUTATIONS // LSH_BANDS
    candidates = []
    for band in range(LSH_BANDS):
        i, j = _band_candidates([a[:, band * rows:(band + 1) * rows] for a in answers], tenant)
        alike = _alike(tuple(answers), i, j, threshold)
        candidates.append((i[alike], j[alike]))
    involved = np.unique(np.concatenate([np.r_[i, j] for i, j in candidates]))
    at = np.zeros(n, dtype=np.int64)
    at[involved] = np.arange(len(involved))
    prompts = distinct_signatures(df[involved].select(_prompt_key()).to_series(), seed)
    for i, j in candidates:
        # a band's first rows are never candidates in that band, so checking them all at once
        # against the drops of earlier bands equals checking them one by one
        alike = _alike((prompts,), at[i], at[j], threshold)
        drop[j[alike & ~drop[i]]] = True
    return drop


# ----------------------------------------------------------------------------- splits


def assign_splits(df: pl.DataFrame, p: PairsParams, seed: int) -> pl.Series:
    """train/val/test per (tenant, thread), from a seeded hash of the thread key."""
    keys = df.select(pl.concat_str("tenant_id", "thread_id", separator="\x1f")).to_series()
    unique = keys.unique().to_list()
    cut_val, cut_test = p.split.train, p.split.train + p.split.val
    lookup = {}
    for key in unique:
        u = _stable_fraction(seed, key)
        lookup[key] = "train" if u < cut_val else "val" if u < cut_test else "test"
    return keys.replace_strict(lookup, return_dtype=pl.String).alias("split")


def remove_leakage(train: pl.DataFrame, held_out: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Drop training pairs whose prompt, or whose (chosen, rejected), also appears held out."""
    if held_out.is_empty() or train.is_empty():
        return train, 0
    held = held_out.select(_prompt_key().alias("_p"), pl.concat_str("chosen", "rejected", separator="\x1f").alias("_c"))
    t = train.with_columns(_prompt_key().alias("_p"), pl.concat_str("chosen", "rejected", separator="\x1f").alias("_c"))
    leak = t["_p"].is_in(held["_p"].implode()) | t["_c"].is_in(held["_c"].implode())
    return t.filter(~leak).drop("_p", "_c"), int(leak.sum())


# ----------------------------------------------------------------------------- stage


def build_pairs(records: pl.LazyFrame, params: Params) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    """All the pair logic, without I/O: returns frames per split (and safety) and stats."""
    p = params.pairs
    stats: Counter[str] = Counter()
    events = event_pairs(records, p).collect()
    stats["event_pairs_raw"] = events.height
    hh, safety = public_pairs(params, stats)
    hh = hh.with_columns(pl.lit(None, dtype=events["ts"].dtype).alias("ts"))
    pool = pl.concat([events, hh], how="diagonal_relaxed")
    before = pool.height
    pool = merge_exact_duplicates(pool.with_columns(pair_ids(pool)))
    stats["exact_duplicates_removed"] = before - pool.height
    near = near_duplicate_mask(pool, p.near_dup_threshold, params.seed)
    stats["near_duplicates_removed"] = int(near.sum())
    pool = pool.filter(pl.Series(~near)).with_columns(assign_splits(pool.filter(pl.Series(~near)), p, params.seed))
    safety = safety.with_columns(pair_ids(safety), pl.lit("safety").alias("split")).unique(
        subset="pair_id", keep="first", maintain_order=True
    )
    out = {s: pool.filter(pl.col("split") == s) for s in SPLITS}
    held = pl.concat([out["val"], out["test"], safety.with_columns(pl.lit(None, dtype=pool["ts"].dtype).alias("ts"))],
                     how="diagonal_relaxed")
    out["train"], stats["train_leakage_removed"] = remove_leakage(out["train"], held)
    out["safety"] = safety
    columns = list(PAIR_SCHEMA)
    out = {k: v.select([pl.col(c).cast(t) for c, t in PAIR_SCHEMA.items()]).select(columns) for k, v in out.items()}
    skills = set(records.select(pl.col("skill").unique()).collect()["skill"]) | set(pool["skill"])
    return out, _summarise(out, stats, p, skills)


_FIRST_COPY_ORDER = ("ts", "thread_id", "pair_type", "source", "skill")
"""Which copy of a pair stands for it: the earliest; the rest only break ties between copies."""


def merge_exact_duplicates(pool: pl.DataFrame) -> pl.DataFrame:
    """One row per ``pair_id``, the same whatever the input order.

    Copies of a pair (one comparison logged twice, one content reached two ways) share the
    tenant, prompt and texts; the earliest copy stands for them (``_FIRST_COPY_ORDER``
    leaves no ties that matter) and takes the source events of every copy in its thread,
    sorted: nothing depends on which copy came first. Events of another thread are left
    out, so a pair's provenance stays inside its thread. Rows come out in a total order
    (ts, thread, pair_id), which the near-duplicate pass relies on for "earlier".
    """
    ids = pool.group_by("pair_id", "thread_id").agg(_sorted_union("source_event_ids"))
    first = pool.drop("source_event_ids").sort(*_FIRST_COPY_ORDER, "pair_id", nulls_last=True).unique(
        subset="pair_id", keep="first", maintain_order=True
    )
    return (
        first.join(ids, on=["pair_id", "thread_id"], how="left", nulls_equal=True)
        .sort("ts", "thread_id", "pair_id", nulls_last=True)
        .select(pool.columns)
    )


def _summarise(out: dict[str, pl.DataFrame], stats: Counter[str], p: PairsParams, skills: set[str]) -> dict[str, Any]:
    """Counts per split, type and skill; ``skills`` are every skill seen, so one with no training pairs shows."""
    counted = dict(out["train"].group_by("skill").len().iter_rows())
    per_skill = {s: counted.get(s, 0) for s in sorted(skills - {None})}
    below = {s: n for s, n in per_skill.items() if n < p.min_pairs_per_skill}
    threads = {k: set(zip(v["tenant_id"], v["thread_id"], strict=True)) for k, v in out.items()}
    overlap = sum(len(threads[a] & threads[b]) for a in SPLITS for b in SPLITS if a < b)
    return {
        "pairs": {k: v.height for k, v in out.items()},
        "by_type": {
            k: dict(sorted(Counter(v["pair_type"].to_list()).items())) for k, v in out.items()
        },
        "train_pairs_per_skill": per_skill,
        "skills_below_min": below,
        "threads_in_two_splits": overlap,
        "dropped": {k: v for k, v in sorted(stats.items()) if k != "event_pairs_raw"},
        "event_pairs_raw": stats["event_pairs_raw"],
    }


def run(params: Params, layout: Layout) -> dict[str, Any]:
    """The pairs stage: write ``data/pairs/{train,val,test,safety}.parquet`` and ``metrics/pairs.json``."""
    start = time.perf_counter()
    out, metrics = build_pairs(pl.scan_parquet(layout.scrubbed), params)
    for split, frame in out.items():
        dest = layout.safety_pairs if split == "safety" else layout.pairs_split(split)
        write_parquet_atomic(frame, dest)
    write_json_atomic(layout.metrics("pairs"), metrics)
    if metrics["skills_below_min"]:
        log.warning("pairs: skills below %d training pairs: %s", params.pairs.min_pairs_per_skill,
                    metrics["skills_below_min"])
    log.info("pairs: %s in %.1fs", metrics["pairs"], time.perf_counter() - start)
    return metrics
