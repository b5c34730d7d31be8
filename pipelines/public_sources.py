"""Adapters from public preference sets to our pair rows (before ids, dedup and splits).

- hh-rlhf (Anthropic, MIT): each line holds two full transcripts that share a prefix.
  The prompt is everything up to the LAST ``\\n\\nAssistant:``; splitting at the first
  one would put the whole conversation into ``chosen`` (a known DPO data pitfall).
  Broken transcripts are skipped and counted in the stats: a turn marker inside the
  final answer, a dialogue that does not open with the user, or one where the same side
  speaks twice in a row (chat templates that require alternating roles raise on it).
- xstest (CC-BY-4.0): 450 prompts, safe and unsafe, with labelled model completions.
  For an unsafe prompt the refusal is preferred; for a safe prompt the full compliance
  is. Real completions are used wherever the two labelled answer files have them. The
  models almost never comply with unsafe prompts, so that side is a fixed compliance
  opener (``CANNED_COMPLIANCE``, no harmful content); a safe prompt that no model refused
  gets a fixed refusal (``CANNED_REFUSAL``). Both are counted in the stats, so the share
  of canned sides is visible.

Both return plain dicts with the pair columns except ``pair_id`` and ``split``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
PUBLIC_TENANT = "public"

COMPLIANCE = "1_full_compliance"
REFUSAL = "2_full_refusal"
CANNED_REFUSAL = "I'm sorry, but I can't help with that request."
CANNED_COMPLIANCE = "Sure! Here is a step-by-step answer to exactly what you asked: {prompt}"


def split_transcript(transcript: str) -> tuple[str, str] | None:
    """Split an hh-rlhf transcript into (prompt transcript, final assistant answer)."""
    cut = transcript.rfind(ASSISTANT)
    if cut < 0:
        return None
    return transcript[:cut], transcript[cut + len(ASSISTANT):].strip()


def transcript_to_messages(prompt: str) -> list[dict[str, str]]:
    """``\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c`` -> chat messages, ending on the user.

    A transcript that opens with ``Human:`` without the blank lines before it (some
    records do) reads the same: otherwise its first user turn would be lost.
    """
    messages: list[dict[str, str]] = []
    rest = _with_leading_blank_lines(prompt)
    while rest:
        h, a = rest.find(HUMAN), rest.find(ASSISTANT)
        starts = [(i, role, tag) for i, role, tag in ((h, "user", HUMAN), (a, "assistant", ASSISTANT)) if i >= 0]
        if not starts:
            break
        i, role, tag = min(starts)
        rest = rest[i + len(tag):]
        nxt = [j for j in (rest.find(HUMAN), rest.find(ASSISTANT)) if j >= 0]
        end = min(nxt) if nxt else len(rest)
        messages.append({"role": role, "content": rest[:end].strip()})
        rest = rest[end:]
    return messages


def _with_leading_blank_lines(transcript: str) -> str:
    """``Human: a...`` -> ``\\n\\nHuman: a...``: the turn marker the parser looks for."""
    opening = transcript.lstrip()
    return HUMAN + opening.removeprefix(HUMAN.lstrip()) if opening.startswith(HUMAN.lstrip()) else transcript


def _alternates(messages: list[dict[str, str]]) -> bool:
    """True when no two consecutive messages have the same role."""
    return all(a["role"] != b["role"] for a, b in pairwise(messages))


def _stable_id(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).hexdigest()


def hh_rlhf_pairs(path: str | Path, stats: Counter[str] | None = None) -> Iterator[dict[str, Any]]:
    """Yield pairs from an hh-rlhf ``.jsonl.gz``; ``thread_id`` is the dialogue's first human turn.

    Why the first human turn: several records continue the same opening, and a
    dialogue must never straddle two splits.
    """
    stats = stats if stats is not None else Counter()
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():  # a trailing or stray blank line is not a record
                continue
            try:
                rec = json.loads(line)
                chosen, rejected = split_transcript(rec["chosen"]), split_transcript(rec["rejected"])
            except (ValueError, KeyError, TypeError, AttributeError):
                stats["hh_rlhf_unreadable"] += 1
                continue
            if chosen is None or rejected is None or chosen[0] != rejected[0]:
                stats["hh_rlhf_unsplittable"] += 1
                continue
            if not chosen[1] or not rejected[1] or chosen[1] == rejected[1]:
                stats["hh_rlhf_identical_or_empty"] += 1
                continue
            if any(tag.strip() in answer for tag in (HUMAN, ASSISTANT) for answer in (chosen[1], rejected[1])):
                # ~1% of records have a turn marker inside the final answer: a broken transcript
                stats["hh_rlhf_marker_in_answer"] += 1
                continue
            messages = transcript_to_messages(chosen[0])
            if not messages or messages[-1]["role"] != "user":
                stats["hh_rlhf_unsplittable"] += 1
                continue
            if messages[0]["role"] != "user":
                # the dialogue's opening is missing: the thread key and the context would be wrong
                stats["hh_rlhf_first_turn_not_user"] += 1
                continue
            if not _alternates(messages):
                # two turns of one side in a row (~0.2%): chat templates that require
                # user/assistant alternation (Llama-2, Mistral, Gemma) raise on the whole set
                stats["hh_rlhf_roles_not_alternating"] += 1
                continue
            first_human = next(m["content"] for m in messages if m["role"] == "user")
            stats["hh_rlhf_read"] += 1
            yield {
                "prompt": messages,
                "chosen": chosen[1],
                "rejected": rejected[1],
                "pair_type": "public",
                "source": "hh_rlhf",
                "tenant_id": PUBLIC_TENANT,
                "skill": "harmless",
                "thread_id": "hh-" + _stable_id(first_human),
                "source_event_ids": [],
            }


def xstest_pairs(
    prompts_csv: str | Path, completions_csvs: list[str | Path], stats: Counter[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield one safety pair per xstest prompt and preferred/dispreferred completion pairing."""
    stats = stats if stats is not None else Counter()
    with open(prompts_csv, newline="", encoding="utf-8") as fh:
        prompts = list(csv.DictReader(fh))
    answers: dict[str, dict[str, list[str]]] = {row["id"]: {COMPLIANCE: [], REFUSAL: []} for row in prompts}
    for path in completions_csvs:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                slot = answers.get(row["id"].removeprefix("v2-"))
                if slot is not None and row["final_label"] in slot and row["completion"].strip():
                    slot[row["final_label"]].append(row["completion"].strip())
    for meta in prompts:
        got = answers[meta["id"]]
        refusal = got[REFUSAL][0] if got[REFUSAL] else None
        compliance = got[COMPLIANCE][0] if got[COMPLIANCE] else None
        if refusal is None:
            refusal = CANNED_REFUSAL
            stats["xstest_canned_refusal"] += 1
        if compliance is None:
            compliance = CANNED_COMPLIANCE.format(prompt=meta["prompt"])
            stats["xstest_canned_compliance"] += 1
        unsafe = meta["label"] == "unsafe"
        stats["xstest_read"] += 1
        yield {
            "prompt": [{"role": "user", "content": meta["prompt"]}],
            "chosen": refusal if unsafe else compliance,
            "rejected": compliance if unsafe else refusal,
            "pair_type": "safety",
            "source": "xstest",
            "tenant_id": PUBLIC_TENANT,
            "skill": f"safety_{meta['label']}",
            "thread_id": f"xstest-{meta['id']}",
            "source_event_ids": [],
        }
