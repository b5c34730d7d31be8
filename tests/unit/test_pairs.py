"""Pair building: each source kind, dedup, tenant and thread isolation, leakage, stats."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipelines import pairs
from pipelines.config import Params
from pipelines.layout import Layout
from pipelines.schemas import MESSAGE, PAIR_SCHEMA, RECORD_SCHEMA

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
T0 = datetime(2026, 11, 10, 9, tzinfo=UTC)


def rec(event_id: str, kind: str, *, iid: str = "i1", tenant: str = "acme", skill: str = "email_draft",
        thread: str = "t1", prompt: str = "Write to the vendor about invoice 7", output_id: str = "o1",
        output_text: str = "Dear vendor, the invoice will be paid on Friday.", **kw) -> dict:
    row = {c: None for c in RECORD_SCHEMA}
    row.update(event_id=event_id, ts=T0, tenant_id=tenant, skill=skill, thread_id=thread, interaction_id=iid,
               turn=0, prompt=prompt, feedback_type=kind, output_id=output_id, output_text=output_text,
               policy_id="p1", source_event_ids=[f"ev-{iid}", f"ev-{output_id}", event_id], **kw)
    return row


def frame(rows: list[dict]) -> pl.LazyFrame:
    return pl.DataFrame(rows, schema=RECORD_SCHEMA, orient="row").lazy()


def params_no_public(**pairs_kw) -> Params:
    p = Params()
    p.pairs.hh_rlhf.enabled = False
    p.pairs.xstest.enabled = False
    for k, v in pairs_kw.items():
        setattr(p.pairs, k, v)
    return p


def test_edit_pairs_only_when_substantive():
    rows = [
        rec("f1", "edit", edited_text="Hello Sam, thanks for waiting. We will pay invoice 7 this Friday by wire."),
        rec("f2", "edit", iid="i2", thread="t2", edited_text="Dear vendor, the invoice will be paid on Friday!"),
    ]
    out = pairs.event_pairs(frame(rows), Params().pairs).collect()
    assert out.height == 1
    row = out.row(0, named=True)
    assert row["pair_type"] == "edit" and row["chosen"].startswith("Hello Sam")
    assert row["rejected"] == "Dear vendor, the invoice will be paid on Friday."
    assert row["prompt"] == [{"role": "user", "content": "Write to the vendor about invoice 7"}]


def test_context_becomes_a_system_message():
    rows = [rec("f1", "comparison", context="Vendor: Initech", other_output_id="o2", other_output_text="ok")]
    out = pairs.event_pairs(frame(rows), Params().pairs).collect()
    assert [m["role"] for m in out["prompt"][0]] == ["system", "user"]


def test_rating_pairs_need_the_gap_and_the_same_interaction():
    rows = [
        rec("f1", "rating", output_id="oA", output_text="Detailed, specific answer.", rating=5),
        rec("f2", "rating", output_id="oB", output_text="meh", rating=2),
        rec("f3", "rating", output_id="oC", output_text="fine answer", rating=4),
        rec("f4", "rating", iid="i2", thread="t2", output_id="oD", output_text="other prompt", rating=1),
    ]
    out = pairs.event_pairs(frame(rows), Params().pairs).collect()
    got = sorted(zip(out["chosen"], out["rejected"], strict=True))
    assert got == sorted([("Detailed, specific answer.", "meh"), ("Detailed, specific answer.", "fine answer"),
                          ("fine answer", "meh")])
    assert set(out["pair_type"]) == {"rating"}
    p = Params().pairs
    p.min_rating_gap = 2
    assert pairs.event_pairs(frame(rows), p).collect().height == 2


def test_comparison_and_accept_reject():
    rows = [
        rec("f1", "comparison", output_id="o1", output_text="preferred", other_output_id="o2",
            other_output_text="other"),
        rec("f2", "accept", iid="i2", thread="t2", output_id="o3", output_text="accepted draft"),
        rec("f3", "reject", iid="i2", thread="t2", output_id="o4", output_text="rejected draft"),
        rec("f4", "reject", iid="i3", thread="t3", output_id="o5", output_text="lonely reject"),
    ]
    out = pairs.event_pairs(frame(rows), Params().pairs).collect().sort("pair_type")
    assert out.select("pair_type", "chosen", "rejected").rows() == [
        ("accept_reject", "accepted draft", "rejected draft"),
        ("comparison", "preferred", "other"),
    ]
    ar = out.filter(pl.col("pair_type") == "accept_reject")["source_event_ids"][0].to_list()
    assert "f2" in ar and "f3" in ar


def test_no_pair_crosses_tenants_even_with_a_shared_interaction_id():
    rows = [
        rec("f1", "accept", tenant="acme", output_id="o1", output_text="acme accepted"),
        rec("f2", "reject", tenant="globex", output_id="o2", output_text="globex rejected"),
    ]
    assert pairs.event_pairs(frame(rows), Params().pairs).collect().height == 0


def _many_threads(n: int, tenant: str = "acme", skill: str = "email_draft") -> list[dict]:
    """n comparison records, two per thread, with distinct texts per (tenant, skill)."""
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    rows = []
    for i in range(n):
        w = " ".join(words[(i * 7 + j) % len(words)] + str(i * 31 + j) for j in range(30))
        rows.append(rec(f"f{tenant}{i}", "comparison", iid=f"i{i}", tenant=tenant, skill=skill,
                        thread=f"t{i // 2}", prompt=f"{tenant} {skill} question {i}: {w}", output_id=f"o{i}",
                        output_text=f"good {tenant} answer {w}", other_output_id=f"x{i}",
                        other_output_text=f"bad {skill} {i}"))
    return rows


def test_splits_are_by_thread_and_reproducible():
    p = params_no_public()
    out, stats = pairs.build_pairs(frame(_many_threads(400)), p)
    threads = {s: set(out[s]["thread_id"]) for s in ("train", "val", "test")}
    assert not (threads["train"] & threads["val"]) and not (threads["train"] & threads["test"])
    assert not (threads["val"] & threads["test"])
    assert stats["threads_in_two_splits"] == 0
    n = sum(out[s].height for s in ("train", "val", "test"))
    assert n == 400
    assert 0.7 < out["train"].height / n < 0.9
    again, _ = pairs.build_pairs(frame(_many_threads(400)), p)
    assert all(out[s].equals(again[s]) for s in out)
    for s, df in out.items():
        assert dict(df.schema) == PAIR_SCHEMA, s
        assert set(df["split"]) <= {s}


def test_exact_and_near_duplicates_are_removed():
    base = _many_threads(50)
    dup = dict(base[0], event_id="dup-exact", interaction_id="i-dup")  # same content, other event
    near = dict(base[1], event_id="dup-near", interaction_id="i-near", output_id="on",
                output_text=base[1]["output_text"] + " thanks")  # one word more in the long answer
    out, stats = pairs.build_pairs(frame([*base, dup, near]), params_no_public())
    assert stats["dropped"]["exact_duplicates_removed"] == 1
    assert stats["dropped"]["near_duplicates_removed"] == 1
    assert sum(v.height for k, v in out.items() if k != "safety") == 50


def test_near_duplicate_mask_keeps_distinct_texts():
    fox = "the quick brown fox jumps over the lazy dog again and again"
    prompts = ["prompt number 0 about a topic"] * 2 + ["p2 other", "p3 more", "prompt number 0 about a topic"]
    df = pl.DataFrame({
        "tenant_id": ["a"] * 4 + ["b"],
        "prompt": [[{"role": "user", "content": t}] for t in prompts],
        "chosen": [fox, fox, "x y z", "p q r", fox],
        "rejected": ["no"] * 5,
    })
    # rows 0 and 1 are identical (tenant a); row 4 is identical to them but in tenant b
    mask = pairs.near_duplicate_mask(df, 0.9, seed=1)
    assert mask.tolist() == [False, True, False, False, False]


def test_minhash_estimates_jaccard():
    a = " ".join(f"w{i}" for i in range(200))
    b = " ".join(f"w{i}" for i in range(100)) + " " + " ".join(f"v{i}" for i in range(100))
    sig = pairs.minhash_signatures(pl.Series([a, a, b]), seed=3, k=128)
    assert (sig[0] == sig[1]).all()
    est = (sig[0] == sig[2]).mean()
    assert 0.2 < est < 0.5  # true Jaccard of the 3-shingle sets is 98/302 ~ 0.32
    assert sig.dtype == np.uint64


def test_minhash_signatures_do_not_depend_on_the_chunk_size(monkeypatch):
    texts = pl.Series(["", None, "one", "two words", "three words here", "Ünïcode <PERSON> text, again!",
                       " ".join(f"w{i}" for i in range(50))] * 3, dtype=pl.String)
    whole = pairs.minhash_signatures(texts, seed=5, k=8)
    monkeypatch.setattr(pairs, "MINHASH_CHUNK_TEXTS", 2)
    assert np.array_equal(pairs.minhash_signatures(texts, seed=5, k=8), whole)
    assert (whole[2] == whole[9]).all() and not (whole[2] == whole[3]).all()


def test_pair_ids_hash_the_json_text_of_the_prompt():
    prompts = [[], [{"role": "user", "content": 'Quote " and \\ and\nnew line \x01 é 😀'}],
               [{"role": "system", "content": None}, {"role": "user", "content": ""}]]
    df = pl.DataFrame({"tenant_id": ["a", "b", "c"], "prompt": prompts, "chosen": ["x", "y", "z"],
                       "rejected": ["r", "s", "t"]}, schema_overrides={"prompt": pl.List(MESSAGE)})
    expected = [
        hashlib.blake2b("\x1f".join((t, json.dumps(m, ensure_ascii=False, sort_keys=True), c, r)).encode(),
                        digest_size=12).hexdigest()
        for t, m, c, r in zip(df["tenant_id"], prompts, df["chosen"], df["rejected"], strict=True)
    ]
    assert pairs.pair_ids(df).to_list() == expected


def test_training_pairs_that_leak_into_held_out_sets_are_removed():
    train = pl.DataFrame({"prompt": [[{"role": "user", "content": "Same Prompt!"}], [{"role": "user", "content": "b"}]],
                          "chosen": ["c1", "c2"], "rejected": ["r1", "r2"]})
    held = pl.DataFrame({"prompt": [[{"role": "user", "content": "same prompt"}]], "chosen": ["x"], "rejected": ["y"]})
    kept, removed = pairs.remove_leakage(train, held)
    assert removed == 1 and kept["chosen"].to_list() == ["c2"]


def test_skills_below_minimum_are_reported_not_dropped():
    rows = _many_threads(300) + _many_threads(6, tenant="globex", skill="rare_skill")
    out, stats = pairs.build_pairs(frame(rows), params_no_public(min_pairs_per_skill=20))
    assert "rare_skill" in stats["skills_below_min"]
    assert "email_draft" not in stats["skills_below_min"]
    assert sum((v["skill"] == "rare_skill").sum() for v in out.values()) == 6


@pytest.mark.skipif(not (SHARED / "hh-rlhf").exists(), reason="../shared/data not present")
def test_stage_with_public_sources(tmp_path):
    layout = Layout(tmp_path)
    layout.scrubbed.parent.mkdir(parents=True)
    pl.DataFrame(_many_threads(200), schema=RECORD_SCHEMA, orient="row").write_parquet(layout.scrubbed)
    p = Params()
    p.pairs.hh_rlhf.path = str(SHARED / "hh-rlhf" / "harmless-base-test.jsonl.gz")
    p.pairs.hh_rlhf.max_pairs = 300
    p.pairs.xstest.prompts = str(SHARED / "xstest" / "xstest_prompts.csv")
    p.pairs.xstest.completions = [str(SHARED / "xstest" / f"xstest_v2_completions_{m}.csv") for m in ("gpt4", "llama2new")]
    metrics = pairs.run(p, layout)
    safety = pl.read_parquet(layout.safety_pairs)
    assert safety.height == 450 and set(safety["split"]) == {"safety"}
    train = pl.read_parquet(layout.pairs_split("train"))
    hh = train.filter(pl.col("source") == "hh_rlhf")
    assert hh.height > 100
    # the prompt ends on the user's turn and no answer contains another turn marker
    assert all(m[-1]["role"] == "user" for m in hh["prompt"].to_list())
    assert not hh["chosen"].str.contains("Human:").any()
    assert metrics["threads_in_two_splits"] == 0
    assert layout.metrics("pairs").exists()


def test_follow_up_turns_carry_the_thread_history():
    rows = [
        rec("f0", "edit", iid="i0", thread="t", prompt="Draft the vendor email", output_text="draft v1",
            edited_text="Dear vendor, here is the much better edited draft."),
        rec("f1", "comparison", iid="i1", thread="t", prompt="Make it more formal", output_id="o2",
            output_text="formal", other_output_id="o3", other_output_text="casual"),
    ]
    rows[1]["turn"] = 1
    out = pairs.event_pairs(frame(rows), Params().pairs).collect()
    cmp = out.filter(pl.col("pair_type") == "comparison")["prompt"][0].to_list()
    assert cmp == [
        {"role": "user", "content": "Draft the vendor email"},
        {"role": "assistant", "content": "Dear vendor, here is the much better edited draft."},
        {"role": "user", "content": "Make it more formal"},
    ]
    first = out.filter(pl.col("pair_type") == "edit")["prompt"][0].to_list()
    assert first == [{"role": "user", "content": "Draft the vendor email"}]


def _pair_frame(rows: list[tuple[str, str, str]], tenant: str = "a") -> pl.DataFrame:
    """(prompt, chosen, rejected) rows as pair columns, in one tenant."""
    return pl.DataFrame({
        "tenant_id": [tenant] * len(rows),
        "prompt": [[{"role": "user", "content": p}] for p, _, _ in rows],
        "chosen": [c for _, c, _ in rows],
        "rejected": [r for _, _, r in rows],
    })


def test_a_near_duplicate_repeats_the_prompt_and_both_answers():
    long_prompt = " ".join(f"clause{j} of the contract says item{j} costs {j * 7} dollars" for j in range(40))
    pay = "Pay the invoice on Friday by wire transfer and confirm the amount with the vendor in writing today."
    dispute = "We dispute line three of the invoice; please send a corrected copy before we approve any payment."
    df = _pair_frame([
        (long_prompt, pay, dispute),
        (long_prompt, dispute, "ok"),               # same long prompt, other answers: a pair of its own
        (long_prompt, pay, "ok"),                   # same prompt and chosen, other rejected: its own too
        (long_prompt, pay + " Thanks!", dispute),   # one word more in one answer: a near-duplicate of row 0
        ("a short other prompt", pay, dispute),     # same answers, another prompt: its own
    ])
    assert pairs.near_duplicate_mask(df, 0.9, seed=1).tolist() == [False, False, False, True, False]


def test_ratings_and_turns_that_share_a_long_context_are_all_kept():
    ctx = " ".join(f"clause{j} of the vendor contract says item{j} costs {j * 7} dollars" for j in range(40))
    rated = [rec(f"f{o}", "rating", output_id=o, output_text=t, rating=r, context=ctx) for o, t, r in (
        ("oA", "Pay the invoice on Friday by wire transfer.", 5),
        ("oB", "We dispute line three; please send a corrected invoice.", 3),
        ("oC", "ok", 1))]
    log = " ".join(f"2026-11-10T09:{j % 60:02d} host{j} svc{j % 7} error code {j * 13}" for j in range(120))
    turns = []
    for k in range(4):
        r = rec(f"g{k}", "comparison", iid=f"g{k}", thread="sre-1", output_id=f"a{k}", other_output_id=f"b{k}",
                prompt=f"Here is the log: {log}" if k == 0 else f"follow-up question {k} about another service",
                output_text=f"Turn {k}: restart service svc{k} and page the on-call for region {k}",
                other_output_text=f"Turn {k}: ignore it")
        r["turn"] = k
        turns.append(r)
    out, stats = pairs.build_pairs(frame(rated + turns), params_no_public())
    kept = [r for s in ("train", "val", "test") for r in out[s].select("chosen", "rejected").rows()]
    assert stats["dropped"]["near_duplicates_removed"] == 0
    assert len(kept) == 3 + 4 and len(set(kept)) == 7


def test_exact_duplicates_merge_their_events_the_same_way_whatever_the_input_order():
    import random

    base = _many_threads(40)
    # the same comparison logged again (same thread, same time), and later in another thread
    copies = [dict(r, event_id=f"{r['event_id']}-again", interaction_id=f"{r['interaction_id']}-again",
                   source_event_ids=[f"{r['event_id']}-again"]) for r in base[:10]]
    elsewhere = dict(base[0], event_id="other-thread", thread_id="t-elsewhere", source_event_ids=["other-thread"],
                     ts=T0.replace(hour=10))
    rows = [*base, *copies, elsewhere]
    p = params_no_public()
    runs = []
    for seed in range(4):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        out, stats = pairs.build_pairs(frame(shuffled), p)
        runs.append(out)
        assert stats["dropped"]["exact_duplicates_removed"] == 11
    assert all(all(run[s].equals(runs[0][s]) for s in runs[0]) for run in runs[1:])
    got = pl.concat([runs[0][s] for s in ("train", "val", "test")])
    first = got.filter(pl.col("chosen") == base[0]["output_text"]).row(0, named=True)
    assert first["thread_id"] == base[0]["thread_id"]
    # the earliest copy's thread stands for the pair, with the events of that thread only
    assert first["source_event_ids"] == sorted({*base[0]["source_event_ids"], "facme0-again"})
    owner = {i: r["thread_id"] for r in rows for i in r["source_event_ids"]}
    assert all(owner[i] == t for t, ids in zip(got["thread_id"], got["source_event_ids"], strict=True) for i in ids)


def test_a_skill_with_no_training_pairs_is_reported():
    p = params_no_public(min_pairs_per_skill=20)
    candidates = pl.DataFrame({"tenant_id": ["globex"] * 50, "thread_id": [f"rare{i}" for i in range(50)]})
    splits = pairs.assign_splits(candidates, p.pairs, p.seed)
    held_out = candidates["thread_id"].filter(splits != "train")[0]
    rows = _many_threads(100) + [
        rec(f"r{i}", "comparison", iid=f"ri{i}", tenant="globex", skill="rare_skill", thread=held_out,
            prompt=f"rare question {i} about quarterly figures", output_id=f"ro{i}",
            output_text=f"good rare answer {i} with details", other_output_id=f"rx{i}", other_output_text=f"bad {i}")
        for i in range(5)
    ]
    out, stats = pairs.build_pairs(frame(rows), p)
    assert out["train"].filter(pl.col("skill") == "rare_skill").height == 0
    assert stats["skills_below_min"]["rare_skill"] == 0
    assert stats["train_pairs_per_skill"]["rare_skill"] == 0
    assert "email_draft" not in stats["skills_below_min"]


def test_public_pairs_whose_answers_match_after_scrubbing_are_dropped(tmp_path):
    import gzip

    path = tmp_path / "hh.jsonl.gz"
    base = "\n\nHuman: How can I reach support?\n\nAssistant:"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps({"chosen": base + " Write to alice@example.com please.",
                             "rejected": base + " Write to bob@example.org please."}) + "\n")
        fh.write(json.dumps({"chosen": base + " Use the help page.", "rejected": base + " No idea."}) + "\n")
    p = Params()
    p.pairs.hh_rlhf.path, p.pairs.hh_rlhf.max_pairs, p.pairs.xstest.enabled = str(path), 0, False
    out, stats = pairs.build_pairs(frame([]), p)
    kept = pl.concat(out.values())
    assert kept.select("chosen", "rejected").rows() == [("Use the help page.", "No idea.")]
    assert stats["dropped"]["hh_rlhf_identical_after_scrub"] == 1


def test_an_output_rated_twice_counts_once_at_its_mean():
    rows = [
        rec("f1", "rating", output_id="oA", output_text="Answer A, detailed.", rating=5),
        rec("f2", "rating", output_id="oB", output_text="Answer B, short.", rating=3),
        rec("f3", "rating", output_id="oA", output_text="Answer A, detailed.", rating=2),  # A: mean 3.5
        rec("g1", "rating", iid="i2", thread="t2", output_id="oC", output_text="Answer C", rating=5),
        rec("g2", "rating", iid="i2", thread="t2", output_id="oC", output_text="Answer C", rating=4),
        rec("g3", "rating", iid="i2", thread="t2", output_id="oD", output_text="Answer D", rating=2),
    ]
    out = pairs.event_pairs(frame(rows), Params().pairs).collect()
    assert out.select("chosen", "rejected").rows() == [("Answer C", "Answer D")]  # never A > B and B > A
    assert {"g1", "g2", "g3"} <= set(out["source_event_ids"][0].to_list())


def test_drafts_compared_more_than_once_give_the_majority_choice_or_none():
    a, b = {"output_id": "oA", "output_text": "Draft A"}, {"output_id": "oB", "output_text": "Draft B"}

    def compare(event: str, iid: str, first: dict, second: dict) -> dict:
        return rec(event, "comparison", iid=iid, thread=f"t-{iid}", **first,
                   other_output_id=second["output_id"], other_output_text=second["output_text"])

    rows = [
        compare("f1", "i1", a, b), compare("f2", "i1", b, a), compare("f3", "i1", a, b),  # A wins 2:1
        compare("g1", "i2", a, b), compare("g2", "i2", b, a),  # a tie: no preference
        compare("h1", "i3", b, a),  # once: as it is
    ]
    out = pairs.event_pairs(frame(rows), Params().pairs).collect()
    got = sorted((r["thread_id"], r["chosen"], r["rejected"], tuple(r["source_event_ids"])) for r in out.iter_rows(named=True))
    assert [g[:3] for g in got] == [("t-i1", "Draft A", "Draft B"), ("t-i1", "Draft A", "Draft B"),
                                    ("t-i3", "Draft B", "Draft A")]
    assert not {"f2", "g1", "g2"} & {e for g in got for e in g[3]}  # the losing and tied votes make nothing


def test_sides_that_differ_only_in_whitespace_make_no_pair():
    rows = [
        rec("f1", "comparison", output_id="o1", output_text="Dear vendor, paid Friday.", other_output_id="o2",
            other_output_text="Dear vendor,  paid\tFriday.\n"),
        rec("f2", "accept", iid="i2", thread="t2", output_id="o3", output_text="Thanks, see you at 3pm."),
        rec("f3", "reject", iid="i2", thread="t2", output_id="o4", output_text=" Thanks, see you at 3pm. "),
        rec("f4", "rating", iid="i3", thread="t3", output_id="o5", output_text="Fine answer.", rating=5),
        rec("f5", "rating", iid="i3", thread="t3", output_id="o6", output_text="Fine\n\nanswer.", rating=1),
    ]
    assert pairs.event_pairs(frame(rows), Params().pairs).collect().height == 0


def test_deleting_a_repeated_paragraph_is_a_substantive_edit():
    para = "Thanks for your patience. We will pay invoice 7 on Friday by wire transfer."
    rows = [rec("f1", "edit", output_text=f"{para} {para} {para}", edited_text=para)]
    out = pairs.event_pairs(frame(rows), Params().pairs).collect()
    assert out.select("chosen", "rejected").rows() == [(para, f"{para} {para} {para}")]
