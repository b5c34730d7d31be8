"""Per-event drift features, PSI with reference bins, seeded samples and fingerprints.

Everything here is pure and vectorised (Polars expressions, NumPy), so the drift stage
can turn a million scrubbed records into features in a few seconds and the unit tests
can pin each definition on a handful of rows. :mod:`pipelines.drift` does the rest
(windows, Evidently, embeddings, verdict, report).

One row per scrubbed feedback record:

============== ====== ===================================================================
feature        kind   definition
============== ====== ===================================================================
prompt_chars   num    characters of the prompt
response_chars num    characters of the rated / edited / accepted output
rating         num    the 1-5 rating; null unless the feedback is a rating
accepted       num    1 accept, 0 reject; null for other feedback (mean = acceptance rate)
edited         num    1 when the feedback is an edit, else 0 (mean = edit rate)
edit_ratio     num    1 - Jaccard similarity of the word sets of the output and the edit
                      (the definition ``pairs.min_edit_ratio`` uses); null unless an edit
pii_density    num    PII placeholders (``<EMAIL>``, ...) per 100 characters of free text
skill          cat    the skill
tenant         cat    the tenant id
============== ====== ===================================================================
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from pipelines.schemas import FREE_TEXT_FIELDS

NUMERIC_FEATURES = (
    "prompt_chars", "response_chars", "rating", "accepted", "edited", "edit_ratio", "pii_density",
)
CATEGORICAL_FEATURES = ("skill", "tenant")
TABULAR_FEATURES = NUMERIC_FEATURES + CATEGORICAL_FEATURES
EMBEDDING_FEATURE = "prompt_embedding"
"""The embedding drift counts as one feature in the drift share, under this name."""

PSI_EPS = 1e-4
"""Floor for an empty bin's share: PSI is infinite otherwise (a new tenant has share 0 before)."""
OTHER = "__other__"
"""Bucket for categories the reference never saw (a new tenant lands here)."""
KEY_COLUMNS = ("event_id", "feedback_type", "rating", "skill", "tenant_id", *FREE_TEXT_FIELDS)
"""Record columns the features read: a reference's cache key and the champion's recorded
fingerprint (:mod:`pipelines.reference`) hash exactly these."""
_WORD = r"[^\p{L}\p{N}<>_]+"  # the word split of pipelines.pairs, so edit_ratio means the same


def placeholder_regex(entities: Sequence[str], placeholder_format: str = "<{entity}>") -> str:
    """Regex matching the scrubber's placeholders, built from the same params it uses.

    Why from params: a custom ``scrub.placeholder_format`` (say ``[[{entity}]]``) must
    still be counted, and only the entities the scrubber replaces are PII.
    """
    head, _, tail = placeholder_format.partition("{entity}")
    names = "|".join(re.escape(e) for e in sorted(entities, key=len, reverse=True))
    return f"{re.escape(head)}(?:{names}){re.escape(tail)}"


def _words(col: str) -> pl.Expr:
    return pl.col(col).str.to_lowercase().str.replace_all(_WORD, " ").str.strip_chars().str.split(" ")


def edit_ratio_expr() -> pl.Expr:
    """1 - Jaccard similarity of the word sets of the edit and the output (as in pairs)."""
    edit_words, out_words = _words("edited_text"), _words("output_text")
    jaccard = (edit_words.list.set_intersection(out_words).list.len()
               / edit_words.list.set_union(out_words).list.len())
    return (1.0 - jaccard).alias("edit_ratio")


def feature_exprs(pii_pattern: str) -> list[pl.Expr]:
    """Polars expressions for every tabular feature except ``edit_ratio`` (see the module table)."""
    ft = pl.col("feedback_type")
    text = pl.concat_str([pl.col(c).fill_null("") for c in FREE_TEXT_FIELDS], separator="\n")
    chars = pl.sum_horizontal(pl.col(c).fill_null("").str.len_chars() for c in FREE_TEXT_FIELDS)
    return [
        pl.col("prompt").fill_null("").str.len_chars().cast(pl.Float64).alias("prompt_chars"),
        pl.col("output_text").fill_null("").str.len_chars().cast(pl.Float64).alias("response_chars"),
        pl.when(ft == "rating").then(pl.col("rating").cast(pl.Float64)).alias("rating"),
        pl.when(ft == "accept").then(1.0).when(ft == "reject").then(0.0).alias("accepted"),
        (ft == "edit").cast(pl.Float64).alias("edited"),
        (text.str.count_matches(pii_pattern).cast(pl.Float64) * 100.0
         / pl.max_horizontal(chars, 1)).alias("pii_density"),
        pl.col("skill").cast(pl.String).alias("skill"),
        pl.col("tenant_id").cast(pl.String).alias("tenant"),
    ]


def extract_features(records: pl.DataFrame | pl.LazyFrame, pii_pattern: str) -> pl.DataFrame:
    """Tabular features of every record, in record order, columns as in :data:`TABULAR_FEATURES`.

    Why ``edit_ratio`` is computed on the edit rows only and joined back: word sets are
    the one costly feature (a regex split per text), and only about one record in
    eight is an edit; a ``when`` over all rows would build them for every row.
    """
    lf = (records.lazy() if isinstance(records, pl.DataFrame) else records).with_row_index("_i")
    edits = lf.filter((pl.col("feedback_type") == "edit") & pl.col("edited_text").is_not_null()).select(
        "_i", edit_ratio_expr()
    )
    feats = lf.select("_i", *feature_exprs(pii_pattern)).join(edits, on="_i", how="left", maintain_order="left")
    return feats.select(TABULAR_FEATURES).collect()


def sample_rows(df: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """A seeded sample of at most ``n`` rows (all rows when there are fewer).

    Why sample at all: Evidently and the embedding model are the slow parts; their
    verdicts use effect sizes whose noise at a few thousand rows is far below the
    thresholds, so a million rows would buy time, not accuracy.
    """
    if df.height <= n:
        return df
    return df.sample(n=n, seed=seed, shuffle=True)


# ------------------------------------------------------------------------------------ PSI


@dataclass(frozen=True)
class PsiReference:
    """The reference side of a PSI, computed once and cached with the reference window.

    ``edges`` (numeric) are the inner quantile edges of the reference: bin ``i`` holds
    values ``<= edges[i]``, the last bin everything above. ``categories`` (categorical)
    are the reference's categories, plus :data:`OTHER` for any unseen one.
    """

    kind: str                         # "num" | "cat"
    shares: tuple[float, ...]
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "shares": list(self.shares), "edges": list(self.edges),
                "categories": list(self.categories)}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> PsiReference:
        return cls(kind=str(d["kind"]), shares=tuple(d["shares"]), edges=tuple(d["edges"]),  # type: ignore[arg-type]
                   categories=tuple(d["categories"]))  # type: ignore[arg-type]


def _counts_to_shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    if total == 0:
        return np.full(len(counts), 1.0 / max(len(counts), 1))
    return counts / total


def psi_reference(values: pl.Series, kind: str, bins: int = 10) -> PsiReference:
    """Reference bins and shares for one feature (nulls dropped, as Evidently does).

    Numeric bins are reference quantiles, so each bin holds about ``1/bins`` of the
    reference; features with few distinct values (rating, 0/1 flags) collapse to one
    bin per value because duplicate edges are merged. A reference (nearly) all at one
    value gets the bins below, at and above it (:func:`_point_mass_edges`).
    """
    values = values.drop_nulls()
    if kind == "cat":
        vc = values.cast(pl.String).value_counts(sort=True)
        cats = (*(str(c) for c in vc[values.name].to_list()), OTHER)
        counts = np.append(vc["count"].to_numpy().astype(float), 0.0)
        return PsiReference(kind="cat", shares=tuple(_counts_to_shares(counts).tolist()), categories=cats)
    arr = values.cast(pl.Float64).to_numpy()
    if arr.size == 0:
        return PsiReference(kind="num", shares=(1.0,))
    # edges are observed values (no interpolation), so no bin is empty by construction;
    # an edge at the maximum would leave the last bin empty, so it goes
    qs = np.quantile(arr, np.linspace(0, 1, bins + 1)[1:-1], method="inverted_cdf")
    edges = np.unique(qs)
    edges = edges[edges < arr.max()]
    if edges.size == 0:
        edges = _point_mass_edges(float(arr.max()))
    counts = np.bincount(np.searchsorted(edges, arr, side="left"), minlength=len(edges) + 1).astype(float)
    return PsiReference(kind="num", shares=tuple(_counts_to_shares(counts).tolist()), edges=tuple(edges.tolist()))


def _point_mass_edges(c: float) -> np.ndarray:
    """Edges of the bins ``< c``, ``= c`` and ``> c`` for a reference (nearly) all at ``c``.

    Why: one bin holds every current value, so the PSI would be 0 whatever the current
    window looks like (a reference without edits vs a week of 50% edits). The empty
    outer bins are floored at :data:`PSI_EPS` like any other.
    """
    return np.array([np.nextafter(c, -np.inf), c])


def current_shares(ref: PsiReference, values: pl.Series) -> np.ndarray:
    """Shares of the current values in the reference's bins (unseen categories -> OTHER)."""
    values = values.drop_nulls()
    if ref.kind == "cat":
        known = {c: i for i, c in enumerate(ref.categories)}
        other = known[OTHER]
        vc = values.cast(pl.String).value_counts()
        counts = np.zeros(len(ref.categories))
        for cat, n in zip(vc[values.name].to_list(), vc["count"].to_list(), strict=True):
            counts[known.get(str(cat), other)] += n
        return _counts_to_shares(counts)
    arr = values.cast(pl.Float64).to_numpy()
    edges = np.asarray(ref.edges, dtype=float)
    counts = np.bincount(np.searchsorted(edges, arr, side="left"), minlength=len(edges) + 1).astype(float)
    return _counts_to_shares(counts)


def psi(ref: PsiReference, values: pl.Series) -> float:
    """Population stability index of ``values`` against the cached reference bins.

    ``sum((cur - ref) * ln(cur / ref))`` with empty bins floored at :data:`PSI_EPS`.
    Reading (industry convention): < 0.1 stable, 0.1-0.25 moderate, > 0.25 major shift.
    """
    if values.drop_nulls().len() == 0:
        return float("nan")
    r = np.maximum(np.asarray(ref.shares, dtype=float), PSI_EPS)
    c = np.maximum(current_shares(ref, values), PSI_EPS)
    return float(np.sum((c - r) * np.log(c / r)))


# ---------------------------------------------------------------------------- significance

DISCRETE_MAX_VALUES = 10
"""Numeric features with at most this many distinct values (rating, 0/1 flags) are tested
as categories: a KS test on heavily tied data is far too conservative."""


def chi2_p_value(ref: pl.Series, cur: pl.Series) -> float:
    """Chi-square test of homogeneity of two samples of categories (nulls dropped)."""
    from scipy.stats import chi2_contingency

    r = ref.drop_nulls().cast(pl.String).value_counts()
    c = cur.drop_nulls().cast(pl.String).value_counts()
    table = r.join(c, on=r.columns[0], how="full", coalesce=True, suffix="_cur").fill_null(0)
    counts = np.vstack([table["count"].to_numpy(), table["count_cur"].to_numpy()]).astype(float)
    if counts.shape[1] < 2 or counts.sum(axis=1).min() == 0:
        return 1.0
    return float(chi2_contingency(counts, correction=False)[1])


def p_value(ref: pl.Series, cur: pl.Series, kind: str) -> float:
    """How surprising the difference is at these sample sizes (NaN when a side is empty).

    Why next to an effect size: an effect size ignores how many rows it rests on, so a
    window of a few hundred edits can show a large-looking Wasserstein distance by
    chance. A feature counts as drifted only when the effect is large enough *and* this
    p-value is small: large samples cannot flag trivial effects, small samples cannot
    flag noise. Two-sample KS for continuous numbers, chi-square otherwise.
    """
    r, c = ref.drop_nulls(), cur.drop_nulls()
    if r.len() == 0 or c.len() == 0:
        return float("nan")
    if kind == "cat" or pl.concat([r, c]).n_unique() <= DISCRETE_MAX_VALUES:
        return chi2_p_value(r, c)
    from scipy.stats import ks_2samp

    return float(ks_2samp(r.to_numpy(), c.to_numpy()).pvalue)


# ---------------------------------------------------------------------------- fingerprints


def frame_fingerprint(df: pl.DataFrame, columns: Sequence[str]) -> str:
    """Order-independent content hash of ``columns`` of ``df`` (a cache key).

    Why order-independent: the same reference window read from differently ordered
    partitions must hit the same cache entry. Polars row hashes are stable within a
    Polars version, which is part of the key.
    """
    cols = [c for c in columns if c in df.columns]
    h = hashlib.sha256(f"polars={pl.__version__};rows={df.height};cols={','.join(cols)}".encode())
    if df.height and cols:
        hashes = np.sort(df.select(cols).hash_rows(seed=0).to_numpy())
        h.update(hashes.tobytes())
    return h.hexdigest()


def texts_fingerprint(texts: Sequence[str], *salt: str) -> str:
    """Content hash of a list of texts (in order) plus salt (model, max tokens)."""
    h = hashlib.sha256("\x1f".join(salt).encode())
    for t in texts:
        h.update(b"\x1e")
        h.update(t.encode("utf-8", "surrogatepass"))
    return h.hexdigest()
