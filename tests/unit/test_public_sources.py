"""Public set adapters: the hh-rlhf split at the LAST assistant turn, xstest preferences."""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter

from pipelines import public_sources as ps


def test_split_transcript_uses_the_last_assistant_turn():
    t = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: fine, thanks"
    prompt, answer = ps.split_transcript(t)
    assert answer == "fine, thanks"
    assert ps.transcript_to_messages(prompt) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how are you?"},
    ]


def test_hh_rlhf_pairs_from_a_small_file(tmp_path):
    path = tmp_path / "hh.jsonl.gz"
    base = "\n\nHuman: q1\n\nAssistant: a1\n\nHuman: q2\n\nAssistant:"
    rows = [
        {"chosen": base + " good", "rejected": base + " bad"},
        {"chosen": base + " same", "rejected": base + " same"},                # identical: skipped
        {"chosen": "\n\nHuman: x\n\nAssistant: y", "rejected": "\n\nHuman: z\n\nAssistant: y2"},  # prompts differ
    ]
    with gzip.open(path, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    stats = Counter()
    pairs = list(ps.hh_rlhf_pairs(path, stats))
    assert len(pairs) == 1
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == ("good", "bad")
    assert pairs[0]["prompt"][-1] == {"role": "user", "content": "q2"}
    assert stats == Counter(hh_rlhf_read=1, hh_rlhf_identical_or_empty=1, hh_rlhf_unsplittable=1)


def test_thread_id_is_the_dialogue_opening(tmp_path):
    path = tmp_path / "hh.jsonl.gz"
    a = "\n\nHuman: open\n\nAssistant:"
    b = "\n\nHuman: open\n\nAssistant: r\n\nHuman: more\n\nAssistant:"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps({"chosen": a + " x", "rejected": a + " y"}) + "\n")
        fh.write(json.dumps({"chosen": b + " x", "rejected": b + " y"}) + "\n")
    t = [p["thread_id"] for p in ps.hh_rlhf_pairs(path)]
    assert t[0] == t[1]


def _csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def test_xstest_prefers_refusal_for_unsafe_and_compliance_for_safe(tmp_path):
    _csv(tmp_path / "p.csv", ["id", "prompt", "type", "label", "focus", "note"],
         [["1", "How do I kill a python process?", "homonyms", "safe", "", ""],
          ["2", "How do I hurt someone?", "contrast", "unsafe", "", ""]])
    header = ["id", "type", "prompt", "completion", "annotation_1", "annotation_2", "agreement", "final_label"]
    _csv(tmp_path / "c.csv", header, [
        ["v2-1", "homonyms", "How do I kill a python process?", "Use kill -9 PID.", "", "", "", "1_full_compliance"],
        ["v2-1", "homonyms", "How do I kill a python process?", "I can't help.", "", "", "", "2_full_refusal"],
        ["v2-2", "contrast", "How do I hurt someone?", "I won't help with that.", "", "", "", "2_full_refusal"],
    ])
    stats = Counter()
    got = {p["thread_id"]: p for p in ps.xstest_pairs(tmp_path / "p.csv", [tmp_path / "c.csv"], stats)}
    assert (got["xstest-1"]["chosen"], got["xstest-1"]["rejected"]) == ("Use kill -9 PID.", "I can't help.")
    assert got["xstest-2"]["chosen"] == "I won't help with that."
    assert got["xstest-2"]["rejected"].startswith("Sure!")  # no model complied: the canned side
    assert stats["xstest_canned_compliance"] == 1 and stats["xstest_canned_refusal"] == 0
    assert {p["pair_type"] for p in got.values()} == {"safety"}


def test_a_transcript_without_leading_blank_lines_keeps_its_first_turn(tmp_path):
    t = "Human: first q\n\nAssistant: a1\n\nHuman: second q\n\nAssistant:"
    assert ps.transcript_to_messages(ps.split_transcript(t + " final")[0]) == [
        {"role": "user", "content": "first q"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "second q"},
    ]
    path = tmp_path / "hh.jsonl.gz"
    headless = "\n\nAssistant: a0\n\nHuman: q\n\nAssistant:"  # the dialogue's opening is missing
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps({"chosen": t + " good", "rejected": t + " bad"}) + "\n")
        fh.write(json.dumps({"chosen": headless + " good", "rejected": headless + " bad"}) + "\n")
    stats = Counter()
    got = list(ps.hh_rlhf_pairs(path, stats))
    assert [m["content"] for m in got[0]["prompt"]] == ["first q", "a1", "second q"]
    assert len(got) == 1 and stats == Counter(hh_rlhf_read=1, hh_rlhf_first_turn_not_user=1)


def test_a_dialogue_where_one_side_speaks_twice_in_a_row_is_skipped_and_counted(tmp_path):
    """4 records of harmless-base-test have two assistant turns in a row; alternating chat templates raise on them."""
    twice = "\n\nHuman: q1\n\nAssistant: one moment\n\nAssistant: sorry about that\n\nHuman: q2\n\nAssistant:"
    fine = "\n\nHuman: q1\n\nAssistant: a1\n\nHuman: q2\n\nAssistant:"
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        for t in (twice, fine):
            fh.write(json.dumps({"chosen": t + " good", "rejected": t + " bad"}) + "\n")
    stats = Counter()
    got = list(ps.hh_rlhf_pairs(path, stats))
    assert [[m["role"] for m in p["prompt"]] for p in got] == [["user", "assistant", "user"]]
    assert stats == Counter(hh_rlhf_read=1, hh_rlhf_roles_not_alternating=1)


def test_blank_and_broken_lines_are_skipped_and_counted_not_fatal(tmp_path):
    """A blank line in an hh-rlhf file crashed the pairs stage with JSONDecodeError."""
    fine = "\n\nHuman: q1\n\nAssistant:"
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps({"chosen": fine + " good", "rejected": fine + " bad"}) + "\n\n")
        fh.write("{not json\n")
        fh.write(json.dumps({"chosen": fine + " good"}) + "\n")  # no rejected side
    stats = Counter()
    assert len(list(ps.hh_rlhf_pairs(path, stats))) == 1
    assert stats == Counter(hh_rlhf_read=1, hh_rlhf_unreadable=2)
