"""Unit tests for the synthetic raw-event generator (pipelines/generate.py)."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
import yaml

from pipelines import generate as gen
from pipelines.config import Params, parse_params
from pipelines.layout import Layout
from pipelines.schemas import COMMON_FIELDS, EVENT_TYPES, FEEDBACK_TYPES

SMALL = 200


def make_params(**generate: Any) -> Params:
    """Small, fast parameters; every malformed kind appears once."""
    base: dict[str, Any] = {
        "n_interactions": SMALL,
        "days": 3,
        "malformed_lines": len(gen.MALFORMED_KINDS_JSONL),
        "pii_rate": 0.5,
    }
    base.update(generate)
    return parse_params({"seed": 7, "generate": base, "ingest": {"max_text_chars": 2000}})


def read_lines(root: Path) -> list[tuple[str, bytes]]:
    """Every raw line with its file name, in file order."""
    out = []
    for path in sorted((root / "events").glob("*.jsonl")):
        out += [(path.name, line) for line in path.read_bytes().split(b"\n")[:-1]]
    return out


def parse_valid(lines: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """The lines that decode to an event object of a known type (malformed ones may too)."""
    events = []
    for _, raw in lines:
        try:
            ev = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(ev, dict) and ev.get("event_type") in EVENT_TYPES:
            events.append(ev)
    return events


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("raw")
    stats = gen.generate_to(make_params(), root)
    return root, stats


@pytest.fixture(scope="module")
def valid_events() -> list[dict[str, Any]]:
    return list(gen.generate_events(make_params()))


# --- determinism and layout --------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(sample, tmp_path: Path) -> None:
    root, stats = sample
    again = gen.generate_to(make_params(), tmp_path)
    assert again == stats
    for rel in stats["files"]:
        assert (root / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_other_seed_gives_other_events(tmp_path: Path) -> None:
    a = list(gen.generate_events(make_params()))
    b = list(
        gen.generate_events(parse_params({**make_params().model_dump(by_alias=True), "seed": 8}))
    )
    assert len(a) != len(b) or a[0]["event_id"] != b[0]["event_id"]


def test_one_partition_per_day_sorted_by_ts(sample) -> None:
    root, stats = sample
    names = sorted(p.name for p in (root / "events").iterdir())
    assert names == ["2026-11-02.jsonl", "2026-11-03.jsonl", "2026-11-04.jsonl"]
    assert stats["files"][-1] == "canaries.json"
    lines = read_lines(root)
    seen: set[str] = set()
    for name in names:
        ts = []
        for ev in parse_valid([x for x in lines if x[0] == name]):
            if ev.get("event_id") in seen:  # a replayed line keeps its original ts
                continue
            seen.add(ev.get("event_id"))
            if isinstance(ev.get("ts"), str) and ev["ts"].endswith("Z") and len(ev["ts"]) == 24:
                ts.append(ev["ts"])
        assert ts == sorted(ts)
        assert all(t.startswith(name[:10]) for t in ts)


def test_malformed_lines_do_not_change_valid_events() -> None:
    with_bad = list(gen.generate_events(make_params()))
    without = list(gen.generate_events(make_params(malformed_lines=0)))
    assert with_bad == without


def test_stale_partitions_are_removed(tmp_path: Path) -> None:
    gen.generate_to(make_params(days=3, malformed_lines=0), tmp_path)
    gen.generate_to(make_params(days=2, malformed_lines=0), tmp_path)
    assert len(list((tmp_path / "events").glob("*.jsonl"))) == 2


def test_run_writes_under_the_layout(tmp_path: Path) -> None:
    stats = gen.run(make_params(malformed_lines=0), Layout(tmp_path))
    layout = Layout(tmp_path)
    assert layout.canaries.exists()
    assert len(list(layout.raw_dir.glob("*.jsonl"))) == stats["days"]


# --- contents of valid events --------------------------------------------------------------


def test_every_event_and_feedback_kind_is_present(sample, valid_events) -> None:
    _, stats = sample
    assert all(stats["events"][t] > 0 for t in EVENT_TYPES)
    assert all(stats["feedback"][k] > 0 for k in FEEDBACK_TYPES)
    assert stats["n_interactions"] == SMALL
    counts = Counter(ev["event_type"] for ev in valid_events)
    assert dict(counts) == stats["events"]
    kinds = Counter(ev["feedback_type"] for ev in valid_events if ev["event_type"] == "feedback")
    assert dict(kinds) == {k: v for k, v in stats["feedback"].items() if v}


def test_valid_events_follow_the_contract(valid_events) -> None:
    outputs = {ev["output_id"] for ev in valid_events if ev["event_type"] == "output"}
    interactions = {
        ev["interaction_id"] for ev in valid_events if ev["event_type"] == "interaction"
    }
    assert len({ev["event_id"] for ev in valid_events}) == len(valid_events)
    for ev in valid_events:
        assert all(isinstance(ev[f], str) and ev[f] for f in COMMON_FIELDS)
        assert ev["interaction_id"] in interactions
        if ev["event_type"] == "interaction":
            assert isinstance(ev["prompt"], str) and ev["prompt"]
            assert ev.get("turn", 1) in (1, 2, 3, 4)
        elif ev["event_type"] == "output":
            assert ev["text"] and ev["policy_id"]
        elif ev["feedback_type"] == "comparison":
            assert len(ev["output_ids"]) == 2 and len(set(ev["output_ids"])) == 2
            assert ev["preferred_output_id"] in ev["output_ids"]
            assert set(ev["output_ids"]) <= outputs
        else:
            assert ev["output_id"] in outputs
            if ev["feedback_type"] == "rating":
                assert isinstance(ev["rating"], int) and 1 <= ev["rating"] <= 5
            if ev["feedback_type"] == "edit":
                assert isinstance(ev["edited_text"], str) and ev["edited_text"]


def test_threads_have_one_to_four_turns(valid_events) -> None:
    turns: dict[str, set[str]] = {}
    for ev in valid_events:
        if ev["event_type"] == "interaction":
            turns.setdefault(ev["thread_id"], set()).add(ev["interaction_id"])
    sizes = Counter(len(v) for v in turns.values())
    assert set(sizes) <= {1, 2, 3, 4} and sizes[1] > 0 and max(sizes) > 1


def test_rated_pairs_and_regenerations_exist(valid_events) -> None:
    by_interaction: dict[str, list[dict[str, Any]]] = {}
    for ev in valid_events:
        if ev["event_type"] == "feedback":
            by_interaction.setdefault(ev["interaction_id"], []).append(ev)
    two_ratings = [
        fb for fb in by_interaction.values() if sum(f["feedback_type"] == "rating" for f in fb) == 2
    ]
    regenerated = [
        fb
        for fb in by_interaction.values()
        if {"accept", "reject"} <= {f["feedback_type"] for f in fb}
    ]
    assert two_ratings and regenerated


def test_quality_signal_is_not_just_length() -> None:
    """Preferred drafts are longer often, but far from always (a length baseline is weak)."""
    events = list(gen.generate_events(make_params(n_interactions=1500, malformed_lines=0)))
    text = {ev["output_id"]: ev["text"] for ev in events if ev["event_type"] == "output"}
    longer = []
    for ev in events:
        if ev.get("feedback_type") == "comparison":
            a, b = ev["output_ids"]
            chosen, other = (a, b) if ev["preferred_output_id"] == a else (b, a)
            longer.append(len(text[chosen].split()) > len(text[other].split()))
    assert len(longer) > 100
    assert 0.4 < sum(longer) / len(longer) < 0.85


def test_unknown_skill_uses_the_generic_kit() -> None:
    events = list(gen.generate_events(make_params(skills=["code_review"], n_interactions=30)))
    prompts = [ev["prompt"] for ev in events if ev["event_type"] == "interaction"]
    assert len(prompts) == 30 and all(prompts)
    assert {ev["skill"] for ev in events} == {"code_review"}


# --- PII canaries --------------------------------------------------------------------------


def test_every_canary_appears_in_the_raw_files(sample) -> None:
    root, stats = sample
    blob = b"\n".join(p.read_bytes() for p in (root / "events").glob("*.jsonl"))
    canaries = orjson.loads((root / "canaries.json").read_bytes())
    assert (
        len(canaries)
        == stats["canaries_total"]
        == len({(c["entity"], c["value"]) for c in canaries})
    )
    missing = [c for c in canaries if c["value"].encode("utf-8") not in blob]
    assert not missing
    assert set(stats["canaries"]) == set(gen.ENTITIES)


def test_planted_values_are_valid_for_their_kind(sample) -> None:
    root, _ = sample
    canaries = orjson.loads((root / "canaries.json").read_bytes())
    for c in canaries:
        value = c["value"]
        if c["entity"] == "CREDIT_CARD":
            digits = "".join(ch for ch in value if ch.isdigit())
            assert len(digits) in (15, 16) and gen.luhn_check_digit(digits[:-1]) == digits[-1]
        elif c["entity"] == "IBAN":
            compact = value.replace(" ", "")
            assert compact[:2] in gen.IBAN_COUNTRIES
            numeric = "".join(str(int(ch, 36)) for ch in compact[4:] + compact[:4])
            assert int(numeric) % 97 == 1
        elif c["entity"] == "US_SSN":
            area, group, serial = (int(x) for x in value.split("-"))
            assert 1 <= area <= 899 and area != 666 and 1 <= group <= 99 and 1 <= serial <= 9999


def test_known_ibans_and_cards_check_out() -> None:
    assert gen.iban_check_digits("DE", "370400440532013000") == "89"
    assert gen.iban_check_digits("GB", "NWBK60161331926819") == "29"
    assert gen.luhn_check_digit("411111111111111") == "1"
    assert gen.luhn_check_digit("37828224631000") == "5"


def test_names_never_occur_inside_other_generator_text() -> None:
    """A canary name inside ordinary text would make leak checks report false leaks."""
    res = gen.RESOURCE_DIR
    pii = yaml.safe_load((res / "pii.yaml").read_text(encoding="utf-8"))
    vocab = (res / "skills.yaml").read_text(encoding="utf-8").lower()
    vocab += str({k: v for k, v in pii.items() if k not in ("first_names", "last_names")}).lower()
    clashes = [n for n in pii["first_names"] + pii["last_names"] if n.lower() in vocab]
    assert not clashes


def test_every_template_renders() -> None:
    content = gen.load_content()
    rng = random.Random(0)
    for kit in content.kits.values():
        for cat in kit.categories + kit.topic_categories:
            slots = gen.Slots(rng, content.pools, (("tenant_title", "Acme"), *cat.fixed))
            templates = [
                *cat.prompts,
                *cat.contexts,
                *cat.subjects,
                *cat.opens,
                *cat.steps,
                *cat.wrong,
                *kit.greet_anon,
                *kit.sign_anon,
                *kit.closes,
                *kit.generic,
                *kit.curt,
                *kit.wrong,
                *kit.elaborations,
                *(t for pair in cat.followups + kit.followups for t in pair),
            ]
            for template in templates:
                assert "{" not in gen.render(template, slots), template


# --- malformed lines -----------------------------------------------------------------------


REQUIRED = {
    "interaction": ("prompt",),
    "output": ("output_id", "text", "policy_id"),
    "feedback": ("feedback_type",),
}


def classify(raw: bytes, seen: set[str], interactions: set[str]) -> str | None:
    """What is wrong with one raw line (None: nothing), checked in the order ingest would."""
    if raw == b"":
        return "empty_line"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    try:
        ev = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "truncated_json"
    if not isinstance(ev, dict):
        return "not_an_object"
    if ev.get("event_id") in seen:
        return "duplicate_event_id"
    seen.add(ev.get("event_id"))
    if ev.get("event_type") not in EVENT_TYPES:
        return "unknown_event_type"
    required = COMMON_FIELDS + REQUIRED[ev["event_type"]]
    if ev.get("feedback_type") == "rating":
        required += ("rating",)
    if any(f not in ev for f in required):
        return "missing_field"
    if not isinstance(ev["ts"], str):
        return "wrong_type_ts"
    try:
        dt.datetime.fromisoformat(ev["ts"])
    except ValueError:
        return "bad_timestamp"
    if len(ev.get("prompt") or "") > 2000:
        return "oversized_text"
    if isinstance(ev.get("rating"), str):
        return "wrong_type_rating"
    if isinstance(ev.get("rating"), int) and not 1 <= ev["rating"] <= 5:
        return "invalid_rating"
    if ev["event_type"] == "feedback" and ev["feedback_type"] not in FEEDBACK_TYPES:
        return "unknown_feedback_type"
    if ev["event_type"] != "interaction" and ev["interaction_id"] not in interactions:
        return "orphan_" + ev["event_type"]
    return None


def test_malformed_kinds_are_present_as_listed(sample, valid_events) -> None:
    root, stats = sample
    assert stats["malformed"] == dict.fromkeys(sorted(gen.MALFORMED_KINDS_JSONL), 1)
    lines = read_lines(root)
    assert len(lines) == stats["lines_total"] == stats["events_total"] + stats["malformed_total"]
    interactions = {
        ev["interaction_id"] for ev in valid_events if ev["event_type"] == "interaction"
    }
    seen: set[str] = set()
    found = Counter(kind for _, raw in lines if (kind := classify(raw, seen, interactions)))
    assert dict(found) == stats["malformed"]


def test_oversized_text_exceeds_the_ingest_limit(sample) -> None:
    root, _ = sample
    longest = max(len(raw) for _, raw in read_lines(root))
    assert longest > make_params().ingest.max_text_chars


def test_fewer_malformed_lines_than_kinds_takes_the_first_kinds(tmp_path: Path) -> None:
    stats = gen.generate_to(make_params(malformed_lines=3), tmp_path)
    assert stats["malformed"] == dict.fromkeys(sorted(gen.MALFORMED_KINDS_JSONL[:3]), 1)


# --- shifts --------------------------------------------------------------------------------


def _profile(shift: str, seed: int = 7) -> dict[str, float]:
    params = make_params(shift=shift, n_interactions=2000, malformed_lines=0)
    params = parse_params({**params.model_dump(by_alias=True), "seed": seed})
    prompts, tenants = [], Counter()
    for ev in gen.generate_events(params):
        if ev["event_type"] == "interaction":
            prompts.append(ev["prompt"])
            tenants[ev["tenant_id"]] += 1
    return {
        "words": sum(len(p.split()) for p in prompts) / len(prompts),
        "kubernetes": sum("kubernetes" in p.lower() for p in prompts) / len(prompts),
        "hooli": tenants[gen.SHIFT_TENANT] / len(prompts),
        "acme": tenants["acme"] / len(prompts),
    }


@pytest.fixture(scope="module")
def profiles() -> dict[str, dict[str, float]]:
    return {s: _profile(s) for s in gen.SHIFTS} | {"none_other_seed": _profile("none", seed=99)}


def test_none_is_stationary_across_seeds(profiles) -> None:
    a, b = profiles["none"], profiles["none_other_seed"]
    assert abs(a["words"] - b["words"]) / a["words"] < 0.1
    assert abs(a["acme"] - b["acme"]) < 0.05
    assert a["kubernetes"] == b["kubernetes"] == 0 and a["hooli"] == b["hooli"] == 0


def test_length_shift_makes_prompts_two_to_three_times_longer(profiles) -> None:
    ratio = profiles["length"]["words"] / profiles["none"]["words"]
    assert 1.8 < ratio < 3.2
    assert profiles["all"]["words"] / profiles["none"]["words"] > 1.8


def test_tenant_shift_brings_a_new_tenant(profiles) -> None:
    assert 0.33 < profiles["tenant"]["hooli"] < 0.47
    assert profiles["all"]["hooli"] > 0.33


def test_topic_shift_brings_kubernetes_cost_vocabulary(profiles) -> None:
    assert profiles["topic"]["kubernetes"] > 0.5
    assert profiles["all"]["kubernetes"] > 0.5
    assert (
        abs(profiles["topic"]["words"] - profiles["none"]["words"]) / profiles["none"]["words"]
        < 0.3
    )


# --- formats and speed ---------------------------------------------------------------------


def test_parquet_holds_the_same_valid_events(sample, tmp_path: Path) -> None:
    _, jsonl_stats = sample
    stats = gen.generate_to(make_params(), tmp_path, fmt="parquet")
    frame = pl.read_parquet(sorted((tmp_path / "events").glob("*.parquet")))
    assert frame.height == stats["lines_total"]
    assert frame.schema["ts"] == pl.String and frame.schema["rating"] == pl.Int64
    assert stats["events"] == jsonl_stats["events"]
    assert set(stats["malformed"]) == set(gen.MALFORMED_KINDS_PARQUET)
    valid = {ev["event_id"]: ev for ev in gen.generate_events(make_params())}
    rows = frame.filter(pl.col("event_id").is_in(list(valid))).unique("event_id").to_dicts()
    assert len(rows) == len(valid) == stats["events_total"]
    for row in rows:
        assert {k: v for k, v in row.items() if v is not None} == valid[row["event_id"]]
    replays = stats["malformed"]["duplicate_event_id"]
    assert frame.height - len(rows) - replays == stats["malformed_total"] - replays


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        gen.generate_to(make_params(), tmp_path, fmt="csv")


def test_small_run_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    gen.generate_to(make_params(), tmp_path)
    assert time.perf_counter() - start < 5.0
