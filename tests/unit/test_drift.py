"""Drift check: feature definitions, PSI, the verdict rule, the MMD p-value, windows, the cache.

A hashed bag-of-words encoder stands in for all-MiniLM-L6-v2 here (the real model runs in
tests/integration/test_drift_detection.py), so these tests need no model and count
exactly which texts get encoded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Sequence

import numpy as np
import polars as pl
import pytest

from pipelines import drift
from pipelines.config import DriftParams, Params
from pipelines.drift import FeatureDrift, decide, detect_drift, mmd_permutation_pvalue, severity
from pipelines.drift_features import (
    OTHER,
    PsiReference,
    extract_features,
    frame_fingerprint,
    placeholder_regex,
    psi,
    psi_reference,
    sample_rows,
)
from pipelines.layout import Layout
from pipelines.schemas import RECORD_SCHEMA

PII = placeholder_regex(["EMAIL", "PERSON", "PHONE"])
WORDS = ("invoice", "refund", "shipping", "delay", "password", "reset", "login", "outage", "latency", "backup",
         "report", "meeting", "schedule", "customer", "vendor", "update", "summary", "billing")
TOPIC = ("kubernetes", "namespace", "cluster", "cost", "labels", "node", "pool", "autoscaler", "spot", "quota")


class BagOfWords:
    """Deterministic stand-in encoder: hashed word counts, L2-normalised; counts its inputs."""

    name = "bag-of-words/64"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(hashlib.md5(w.encode()).hexdigest()[:8], 16) % 64] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


def make_records(n: int, seed: int, *, tenants: Sequence[str] = ("acme", "globex", "initech"),
                 tenant_p: Sequence[float] | None = None, words: Sequence[str] = WORDS,
                 length: tuple[int, int] = (6, 20), start: str = "2026-11-02", days: int = 14) -> pl.DataFrame:
    """``n`` scrubbed records with the RECORD_SCHEMA columns, drawn from simple distributions."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(["accept", "reject", "edit", "rating", "comparison"], n, p=[0.3, 0.15, 0.15, 0.3, 0.1])
    t0 = dt.datetime.fromisoformat(start).replace(tzinfo=dt.UTC)
    rows = []
    for i in range(n):
        prompt = " ".join(rng.choice(words, rng.integers(*length)))
        if rng.random() < 0.2:
            prompt += " contact <EMAIL> or <PERSON>"
        out = " ".join(rng.choice(WORDS, rng.integers(10, 30)))
        kind = str(kinds[i])
        rows.append({
            "event_id": f"ev-{seed}-{i}", "ts": t0 + dt.timedelta(seconds=int(rng.integers(0, days * 86400))),
            "tenant_id": str(rng.choice(list(tenants), p=tenant_p)), "skill": str(rng.choice(["email_draft", "sre_chat"])),
            "thread_id": f"th-{i}", "interaction_id": f"in-{i}", "turn": 1, "prompt": prompt, "context": None,
            "feedback_type": kind, "output_id": f"o-{i}", "output_text": out, "policy_id": "p1", "model_version": "v1",
            "rating": int(rng.integers(1, 6)) if kind == "rating" else None,
            "edited_text": out + " thanks" if kind == "edit" else None,
            "other_output_id": None, "other_output_text": None, "source_event_ids": [f"ev-{seed}-{i}"],
        })
    return pl.DataFrame(rows, schema=RECORD_SCHEMA)


def small_params(**kw: object) -> DriftParams:
    return DriftParams(sample_size=5000, embedding_sample=150, permutations=100, **kw)


# ------------------------------------------------------------------------------ features


def test_placeholder_regex_follows_the_scrub_params():
    assert placeholder_regex(["EMAIL"], "[[{entity}]]") == r"\[\[(?:EMAIL)\]\]"
    rx = placeholder_regex(["PHONE", "EMAIL"])
    df = pl.DataFrame({"t": ["<EMAIL> <PHONE> <URL> <EMAIL>"]})
    assert df.select(pl.col("t").str.count_matches(rx)).item() == 3   # <URL> is not an entity


def test_features_are_defined_per_feedback_kind():
    base = make_records(4, 0).with_columns(
        pl.Series("feedback_type", ["edit", "rating", "reject", "accept"]),
        pl.Series("prompt", ["Mail <EMAIL> now", "x" * 100, "hi <PERSON> <PHONE>", "plain"]),
        pl.Series("output_text", ["hello there friend", "ok", "ok", "fine"]),
        pl.Series("edited_text", ["hello there enemy", None, None, None]),
        pl.Series("rating", [None, 4, None, None], dtype=pl.Int8),
    )
    f = extract_features(base, PII)
    assert f.columns == ["prompt_chars", "response_chars", "rating", "accepted", "edited", "edit_ratio",
                         "pii_density", "skill", "tenant"]
    assert f["prompt_chars"].to_list() == [16, 100, 19, 5]
    assert f["response_chars"].to_list() == [18, 2, 2, 4]
    assert f["rating"].to_list() == [None, 4.0, None, None]          # only ratings carry one
    assert f["accepted"].to_list() == [None, None, 0.0, 1.0]          # mean = acceptance rate
    assert f["edited"].to_list() == [1.0, 0.0, 0.0, 0.0]
    assert f["edit_ratio"].to_list() == [pytest.approx(0.5), None, None, None]  # {hello,there} / 4 words
    # one placeholder in 16 + 18 + 17 characters of free text, per 100 characters
    assert f["pii_density"][0] == pytest.approx(100 / (16 + 18 + 17))
    assert f["pii_density"][2] == pytest.approx(2 * 100 / (19 + 2))
    assert f["pii_density"][3] == 0.0


def test_unchanged_edit_has_ratio_zero_and_rows_keep_their_order():
    df = make_records(50, 1).with_columns(
        pl.when(pl.col("feedback_type") == "edit").then(pl.col("output_text")).alias("edited_text")
    )
    f = extract_features(df, PII)
    edits = f.filter(pl.col("edited") == 1.0)
    assert edits.height > 0 and edits["edit_ratio"].to_list() == [0.0] * edits.height
    assert f["tenant"].to_list() == df["tenant_id"].to_list()


def test_sample_rows_is_seeded_and_bounded():
    df = pl.DataFrame({"x": range(1000)})
    assert sample_rows(df, 100, 7).equals(sample_rows(df, 100, 7))
    assert not sample_rows(df, 100, 7).equals(sample_rows(df, 100, 8))
    assert sample_rows(df, 5000, 7).height == 1000


def test_fingerprint_ignores_row_order_but_not_content():
    df = make_records(200, 2)
    cols = ["event_id", "prompt"]
    assert frame_fingerprint(df, cols) == frame_fingerprint(df.reverse(), cols)
    changed = df.with_columns(pl.when(pl.col("event_id") == "ev-2-5").then(pl.lit("other")).otherwise("prompt")
                              .alias("prompt"))
    assert frame_fingerprint(df, cols) != frame_fingerprint(changed, cols)


# ------------------------------------------------------------------------------ PSI


def test_psi_by_hand_on_reference_quantile_bins():
    ref = psi_reference(pl.Series("x", [float(v) for v in range(1, 11)] * 10), "num", bins=4)
    assert ref.edges == (3.0, 5.0, 8.0)       # observed values; bin i holds values <= edges[i]
    assert ref.shares == pytest.approx((0.3, 0.2, 0.3, 0.2))
    assert psi(ref, pl.Series("x", [float(v) for v in range(1, 11)])) == pytest.approx(0.0)
    # everything in the top bin: sum((c - r) ln(c / r)) with empty bins floored at 1e-4
    c = np.array([1e-4, 1e-4, 1e-4, 1.0])
    r = np.array([0.3, 0.2, 0.3, 0.2])
    assert psi(ref, pl.Series("x", [20.0] * 10)) == pytest.approx(float(np.sum((c - r) * np.log(c / r))))


def test_psi_puts_unseen_categories_in_other_and_ignores_nulls():
    ref = psi_reference(pl.Series("t", ["a"] * 50 + ["b"] * 50 + [None] * 10), "cat")
    assert ref.categories == ("a", "b", OTHER) and ref.shares == pytest.approx((0.5, 0.5, 0.0))
    assert psi(ref, pl.Series("t", ["a", "b"] * 30)) == pytest.approx(0.0)
    new_tenant = pl.Series("t", ["a"] * 30 + ["b"] * 30 + ["hooli"] * 40)
    assert psi(ref, new_tenant) > 0.25                                  # "major shift"
    assert math.isnan(psi(ref, pl.Series("t", [None, None], dtype=pl.String)))
    assert PsiReference.from_dict(json.loads(json.dumps(ref.to_dict()))) == ref


def test_few_distinct_values_collapse_to_one_bin_per_value():
    ref = psi_reference(pl.Series("r", [1.0, 2.0, 3.0, 4.0, 5.0] * 20), "num", bins=10)
    assert len(ref.shares) == 5 and ref.shares == pytest.approx((0.2,) * 5)


def test_a_constant_reference_still_measures_a_shift():
    """One reference value used to make one bin, so every current window had PSI 0."""
    ref = psi_reference(pl.Series("edited", [0.0] * 1000), "num", bins=10)
    assert psi(ref, pl.Series("edited", [0.0] * 10)) == pytest.approx(0.0)
    half = psi(ref, pl.Series("edited", [0.0] * 500 + [1.0] * 500))
    c, r = np.array([1e-4, 0.5, 0.5]), np.array([1e-4, 1.0, 1e-4])      # bins < 0, = 0, > 0
    assert half == pytest.approx(float(np.sum((c - r) * np.log(c / r))))
    assert psi(psi_reference(pl.Series("r", [5.0] * 100), "num"), pl.Series("r", [1.0] * 100)) > 0.25
    assert PsiReference.from_dict(json.loads(json.dumps(ref.to_dict()))) == ref


# ------------------------------------------------------------------------------ verdict


def feat(name: str, score: float, threshold: float = 0.1, method: str = "wasserstein", note: str = "") -> FeatureDrift:
    return FeatureDrift(name=name, kind="num", method=method, score=score, threshold=threshold,
                        drifted=score >= threshold and not note, severity=severity(score, threshold, method), note=note)


def test_severity_is_in_units_of_the_threshold_and_auc_starts_at_half():
    assert severity(0.25, 0.1, "wasserstein") == pytest.approx(2.5)
    assert severity(0.8, 0.6, "model") == pytest.approx(3.0)
    assert severity(0.45, 0.6, "model") == 0.0
    assert severity(float("nan"), 0.1, "psi") == 0.0


def test_one_mild_drift_out_of_ten_is_ok_two_are_drift():
    quiet = [feat(f"f{i}", 0.02) for i in range(8)]
    score, verdict, drifted, severe, reasons = decide([*quiet, feat("a", 0.15), feat("b", 0.01)], 0.15, 2.0)
    assert (score, verdict, drifted, severe) == (pytest.approx(0.1), "ok", ["a"], [])
    assert "none severe" in reasons[0]
    score, verdict, drifted, _, reasons = decide([*quiet, feat("a", 0.15), feat("b", 0.12)], 0.15, 2.0)
    assert (score, verdict, drifted) == (pytest.approx(0.2), "drift", ["a", "b"])
    assert "share 0.200 > 0.15" in reasons[0]


def test_a_single_severe_feature_is_drift_on_its_own_unless_disabled():
    features = [*(feat(f"f{i}", 0.02) for i in range(9)), feat("tenant", 0.4, method="jensenshannon")]
    _, verdict, drifted, severe, reasons = decide(features, 0.15, 2.0)
    assert (verdict, drifted, severe) == ("drift", ["tenant"], ["tenant"])
    assert "4.0x its threshold" in reasons[0]
    assert decide(features, 0.15, None)[1] == "ok"


def test_skipped_features_leave_the_denominator():
    features = [feat("a", 0.2), feat("b", 0.01), feat("c", float("nan"), note="skipped: no values")]
    score, verdict, *_ = decide(features, 0.4, None)
    assert score == pytest.approx(0.5) and verdict == "drift"


def test_a_feature_with_an_undefined_score_is_not_counted_as_tested_and_fine():
    features = [feat("a", 0.2), feat("b", float("nan"))]                # b: NaN score, no "skipped" note
    score, verdict, *_ = decide(features, 0.6, None)
    assert score == pytest.approx(1.0) and verdict == "drift"


# ------------------------------------------------------------------------------ embeddings


def test_mmd_statistic_matches_evidently_and_the_p_value_separates():
    import pandas as pd
    from evidently.metrics.embeddings import MMDDriftMethod

    rng = np.random.default_rng(0)
    x, y_same, y_shift = rng.normal(size=(150, 8)), rng.normal(size=(160, 8)), rng.normal(0.5, 1, size=(160, 8))
    for y in (y_same, y_shift):
        xd, yd = pd.DataFrame(x), pd.DataFrame(y)
        score, _, _ = MMDDriftMethod(threshold=1.0)(yd.copy(), xd.copy())
        ours, _ = mmd_permutation_pvalue(x, y, drift._median_gamma(xd, yd), 0, seed=0)
        assert max(ours, 0) == pytest.approx(score, abs=1e-9)
    _, p_same = mmd_permutation_pvalue(x, y_same, drift._median_gamma(pd.DataFrame(x), pd.DataFrame(y_same)), 200, 1)
    _, p_shift = mmd_permutation_pvalue(x, y_shift, drift._median_gamma(pd.DataFrame(x), pd.DataFrame(y_shift)), 200, 1)
    assert p_same > 0.05 and p_shift == pytest.approx(1 / 201)


def _templated(n: int, new_share: float) -> np.ndarray:
    """Unit vectors: all one prompt, but the last ``new_share`` of them another."""
    x = np.zeros((n, 8), np.float32)
    x[:, 0] = 1
    k = int(n * (1 - new_share))
    x[k:, 0], x[k:, 1] = 0, 1
    return x


def test_identical_prompts_still_give_an_mmd_score():
    """Median distance 0 makes Evidently's MMD NaN; the feature must still be tested."""
    ref, cur = _templated(100, 0.0), _templated(100, 0.3)
    f = drift.embedding_drift(ref, cur, small_params(), seed=0)
    observed, p_value = mmd_permutation_pvalue(ref, cur, 1.0, 100, 0)
    assert f.score == pytest.approx(observed) and f.score > f.threshold
    assert f.drifted and f.p_value == pytest.approx(p_value) and "median" in f.note


def test_a_templated_prompt_with_a_new_topic_is_drift(tmp_path):
    template, topic = "draft a reply to this email", "kubernetes node pool quotas"
    ref = make_records(400, 1).with_columns(pl.lit(template).alias("prompt"))
    cur = make_records(400, 2)
    new = np.random.default_rng(0).random(cur.height) < 0.3
    cur = cur.with_columns(pl.when(pl.Series(new)).then(pl.lit(topic)).otherwise(pl.lit(template)).alias("prompt"))
    r = detect_drift(ref, cur, small_params(), None, seed=0, encoder=BagOfWords())
    assert r.verdict == "drift" and "prompt_embedding" in r.drifted
    assert r.metrics()["embedding_score"] is not None


def test_an_undefined_classifier_auc_is_skipped_not_ok():
    """150 vs 2 prompts: the classifier's held-out half can hold one class, and its AUC is NaN."""
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(size=(150, 16)).astype(np.float32), rng.normal(size=(2, 16)).astype(np.float32)
    f = drift.embedding_drift(ref, cur, small_params(embedding_method="model"), seed=0)
    assert f.note.startswith("skipped") and not f.drifted


def test_auc_p_value():
    assert drift.auc_p_value(0.5, 1000, 1000) == pytest.approx(0.5)
    assert drift.auc_p_value(0.6, 1000, 1000) < 1e-6
    assert drift.auc_p_value(0.52, 100, 100) > 0.3


# ------------------------------------------------------------------------------ detect + cache


def test_detect_drift_names_a_new_tenant_and_caches_the_reference(tmp_path):
    ref = make_records(1500, 10)
    cur = make_records(1500, 11, tenants=("acme", "globex", "initech", "hooli"), tenant_p=(0.2, 0.2, 0.2, 0.4))
    enc = BagOfWords()
    p = small_params()
    first = detect_drift(ref, cur, p, tmp_path, seed=3, encoder=enc)
    assert enc.calls == [150, 150]                           # reference and current prompts
    assert first.verdict == "drift" and first.drifted == ["tenant"] and first.severe == ["tenant"]
    assert first.feature("tenant").note.startswith("new: hooli ")
    assert first.feature("tenant").psi > 0.25
    assert first.cache["reference_stats_hit"] is False and first.cache["reference_embeddings_hit"] is False

    second = detect_drift(ref.reverse(), cur, p, tmp_path, seed=3, encoder=enc)
    assert enc.calls == [150, 150, 150]                      # only this week's prompts were encoded
    assert second.cache["reference_stats_hit"] is True and second.cache["reference_embeddings_hit"] is True
    assert [f.score for f in second.features] == pytest.approx([f.score for f in first.features], nan_ok=True)

    detect_drift(make_records(1500, 12), cur, p, tmp_path, seed=3, encoder=enc)
    assert enc.calls[-2:] == [150, 150]                      # another reference: a miss


def test_another_encoder_never_reuses_cached_vectors(tmp_path):
    ref, cur = make_records(600, 80), make_records(600, 81)
    detect_drift(ref, cur, small_params(), tmp_path, encoder=BagOfWords())
    other = BagOfWords()
    other.name = "bag-of-words/other"
    r = detect_drift(ref, cur, small_params(), tmp_path, encoder=other)
    assert r.cache["reference_stats_hit"] and not r.cache["reference_embeddings_hit"]
    assert other.calls == [150, 150]


def test_a_same_distribution_sample_is_ok_and_a_topic_shift_is_found(tmp_path):
    ref, same = make_records(1500, 20), make_records(1500, 21)
    topic = make_records(1500, 22, words=TOPIC)
    p = small_params()
    ok = detect_drift(ref, same, p, tmp_path, seed=1, encoder=BagOfWords())
    assert ok.verdict == "ok" and ok.drifted == [], ok.reasons
    shifted = detect_drift(ref, topic, p, tmp_path, seed=1, encoder=BagOfWords())
    assert "prompt_embedding" in shifted.drifted and shifted.verdict == "drift"
    assert shifted.feature("prompt_embedding").p_value == pytest.approx(1 / 101)


def test_empty_window_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="both windows"):
        detect_drift(make_records(10, 1), make_records(10, 1).head(0), small_params(), tmp_path,
                     encoder=BagOfWords())


def test_a_feature_without_values_is_skipped_not_fatal(tmp_path):
    ref = make_records(600, 30)
    cur = make_records(600, 31).filter(pl.col("feedback_type") != "rating")
    r = detect_drift(ref, cur, small_params(), None, encoder=BagOfWords())
    assert r.feature("rating").note.startswith("skipped") and not r.feature("rating").drifted
    assert json.loads(json.dumps(r.to_dict(), allow_nan=False))  # strict JSON: NaN became null


# ------------------------------------------------------------------------------ windows


def test_time_split_puts_the_last_days_in_current():
    df = make_records(700, 40, days=14).lazy()
    ref, cur, windows = drift.select_windows(df, DriftParams(current_days=7))
    end = df.select(pl.col("ts").max()).collect().item()
    start = end.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=6)
    assert cur["ts"].min() >= start and ref["ts"].max() < start
    assert ref.height + cur.height == 700
    assert windows["current"]["rows"] == cur.height
    ref3, _, _ = drift.select_windows(df, DriftParams(current_days=7, reference_days=3))
    assert ref3["ts"].min() >= start - dt.timedelta(days=3) and 0 < ref3.height < ref.height


def test_date_range_reference():
    df = make_records(700, 41, days=14).lazy()
    p = DriftParams(reference="dates", reference_start="2026-11-03", reference_end="2026-11-05", current_days=3)
    ref, _, windows = drift.select_windows(df, p)
    lo = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
    assert ref["ts"].min() >= lo and ref["ts"].max() < lo + dt.timedelta(days=2)
    assert windows["reference"]["description"] == "2026-11-03 .. 2026-11-04"


def test_params_refuse_combinations_that_cannot_work():
    with pytest.raises(ValueError, match="permutations must exceed"):
        DriftParams(permutations=50, alpha=0.01)      # the smallest p-value would be 1/51
    with pytest.raises(ValueError, match="reference_path"):
        DriftParams(reference="path")
    with pytest.raises(ValueError, match="reference_start"):
        DriftParams(reference="dates", reference_start="2026-11-01")


# ------------------------------------------------------------------------------ stage


def _stage(tmp_path, monkeypatch, records: pl.DataFrame, **drift_overrides: object):
    from pipelines import alerts

    sent: list[dict] = []
    monkeypatch.setattr(drift, "MiniLMEncoder", lambda *a, **k: BagOfWords())
    monkeypatch.setattr(alerts, "send", lambda message, *a, **k: sent.append(message) or True)
    layout = Layout(tmp_path)
    layout.scrubbed.parent.mkdir(parents=True)
    records.write_parquet(layout.scrubbed)
    params = Params(drift={"sample_size": 5000, "embedding_sample": 150, "permutations": 100, **drift_overrides})
    return params, layout, sent


def test_stage_writes_report_plot_json_and_alerts_on_drift(tmp_path, monkeypatch):
    old = make_records(800, 50, start="2026-11-02", days=7)
    new = make_records(800, 51, start="2026-11-09", days=7, tenants=("acme", "hooli"), tenant_p=(0.5, 0.5))
    params, layout, sent = _stage(tmp_path, monkeypatch, pl.concat([old, new]))
    metrics = drift.run(params, layout)
    assert metrics["verdict"] == "drift" and "tenant" in metrics["drifted_features"]
    assert metrics["alert"] == "sent" and len(sent) == 1
    assert "tenant" in json.dumps(sent[0])
    assert json.loads(layout.metrics("drift").read_text()) == metrics
    full = json.loads((layout.drift_dir / "drift.json").read_text())
    assert full["windows"]["current"]["rows"] == 800 and full["verdict"] == "drift"
    assert {f["name"]: f["method"] for f in full["features"]}["tenant"] == "jensenshannon"
    page = (layout.drift_dir / "report.html").read_text()
    assert 'id="prefpipe-drift-summary"' in page and "tenant" in page and "DataDriftPreset" in page
    assert (layout.drift_dir / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / ".cache" / "drift").is_dir()        # cache_dir is under the project root


def test_stage_sends_nothing_when_there_is_no_drift(tmp_path, monkeypatch):
    old = make_records(800, 60, start="2026-11-02", days=7)
    new = make_records(800, 61, start="2026-11-09", days=7)
    params, layout, sent = _stage(tmp_path, monkeypatch, pl.concat([old, new]))
    metrics = drift.run(params, layout)
    assert metrics["verdict"] == "ok" and metrics["alert"] == "not_needed" and sent == []


def test_stage_reads_a_reference_file(tmp_path, monkeypatch):
    ref = make_records(800, 70, start="2026-10-01", days=7)
    cur = make_records(800, 71, start="2026-11-09", days=7, words=TOPIC)
    params, layout, _ = _stage(tmp_path, monkeypatch, cur, reference="path", reference_path="champion.parquet",
                               alert=False)
    ref.write_parquet(tmp_path / "champion.parquet")
    metrics = drift.run(params, layout)
    assert metrics["reference_rows"] == 800 and metrics["current_rows"] == 800
    assert "prompt_embedding" in metrics["drifted_features"] and metrics["alert"] == "disabled"
