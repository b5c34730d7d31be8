"""Stage ``evaluate``: candidate vs champion on the held-out test pairs and the safety pairs.

Command line::

    python -m pipelines evaluate

The reference is the registry's ``champion``; before there is one (or when the champion
*is* this candidate, e.g. after ``dvc repro -f``) it is the base model.

For every pair and model, the margin is log p(chosen | prompt) - log p(rejected | prompt),
summed over response tokens with the chat template applied and the prompt cut exactly as
in training (:func:`pipelines.model.encode_response`). Then:

- **margin win-rate** (primary, paired): the candidate wins a pair when its margin
  exceeds the reference's (ties lose). This is DPO's implicit-reward accuracy with the
  reference as the reference policy. Reported with an exact one-sided binomial test
  against 0.5 and a percentile bootstrap interval (and the exact Clopper-Pearson one).
- beside it, for both models: preference accuracy (margin > 0), length-normalised
  accuracy (per-token mean log-probs), mean margins; per skill and per pair type.
- the trivial baselines on the same pairs (shorter response wins, longer response wins,
  by characters, ties count one half) and the paired difference win-rate - shorter
  baseline; accuracy split by whether the chosen response is the shorter one, which shows
  how much of a model's accuracy is a length effect.
- a regression guard: per-token NLL on the held-out chosen responses, both models.
- safety: the same on the safety pairs, and the drop in preference accuracy.

Writes ``data/eval/eval.json`` (everything), ``data/eval/pairs.csv`` (per-pair margins, no
texts, for ``dvc plots``), ``data/eval/report.md`` with PNG figures, and
``metrics/evaluate.json`` (the headline numbers, DVC metrics).
"""

from __future__ import annotations

import gc
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines import stats
from pipelines.io import write_json_atomic

if TYPE_CHECKING:
    import polars as pl

    from pipelines.config import Params
    from pipelines.layout import Layout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scores:
    """One model's log-probabilities of both responses of each pair (same order as the pairs)."""

    chosen_logp: np.ndarray
    chosen_n: np.ndarray
    rejected_logp: np.ndarray
    rejected_n: np.ndarray

    @property
    def margin(self) -> np.ndarray:
        return self.chosen_logp - self.rejected_logp

    @property
    def nonfinite(self) -> int:
        """Pairs scored NaN or infinite: a diverged or corrupted model (a NaN margin counts as a loss)."""
        return int(np.sum(~np.isfinite(self.margin)))

    @property
    def norm_margin(self) -> np.ndarray:
        """Per-token mean log-prob of chosen minus that of rejected (length-normalised)."""
        return self.chosen_logp / np.maximum(self.chosen_n, 1) - self.rejected_logp / np.maximum(self.rejected_n, 1)


# --------------------------------------------------------------------------- statistics


def length_baselines(chosen_len: np.ndarray, rejected_len: np.ndarray) -> dict[str, np.ndarray]:
    """Per-pair score of "shorter wins" and "longer wins" (1 right, 0 wrong, 0.5 equal length)."""
    shorter = np.where(chosen_len < rejected_len, 1.0, np.where(chosen_len > rejected_len, 0.0, 0.5))
    longer = np.where(chosen_len > rejected_len, 1.0, np.where(chosen_len < rejected_len, 0.0, 0.5))
    return {"shorter_wins": shorter, "longer_wins": longer}


def _rate(values: np.ndarray, n_boot: int, conf: float, seed: int) -> dict[str, float]:
    lo, hi = stats.bootstrap_ci(values, n_boot, conf, seed)
    return {"rate": float(np.mean(values)) if values.size else float("nan"), "ci_low": lo, "ci_high": hi}


def _model_summary(s: Scores, n_boot: int, conf: float, seed: int) -> dict[str, Any]:
    return {
        "accuracy": _rate((s.margin > 0).astype(float), n_boot, conf, seed),
        "norm_accuracy": _rate((s.norm_margin > 0).astype(float), n_boot, conf, seed),
        "mean_margin": float(np.mean(s.margin)),
        "median_margin": float(np.median(s.margin)),
        "mean_norm_margin": float(np.mean(s.norm_margin)),
        "nll_chosen": nll_per_token(s),
    }


def nll_per_token(s: Scores) -> float:
    """Token-weighted mean negative log-likelihood of the chosen responses."""
    return float(-s.chosen_logp.sum() / max(int(s.chosen_n.sum()), 1))


def compare(
    cand: Scores,
    ref: Scores,
    chosen_len: np.ndarray,
    rejected_len: np.ndarray,
    slices: dict[str, np.ndarray] | None = None,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Every paired statistic of a candidate against a reference on one set of pairs.

    Pure: arrays in, a JSON-ready dict out. ``slices`` maps a slice name (``skill``,
    ``pair_type``) to one label per pair.
    """
    n = int(cand.margin.size)
    win = cand.margin > ref.margin
    c_ok, r_ok = (cand.margin > 0).astype(float), (ref.margin > 0).astype(float)
    c_nok, r_nok = (cand.norm_margin > 0).astype(float), (ref.norm_margin > 0).astype(float)
    base = length_baselines(chosen_len, rejected_len)
    kw = {"n_boot": n_boot, "confidence": confidence, "seed": seed}
    nll_c, nll_r = nll_per_token(cand), nll_per_token(ref)
    chosen_shorter = chosen_len < rejected_len
    chosen_longer = chosen_len > rejected_len
    out: dict[str, Any] = {
        "n": n,
        "win_rate": stats.proportion_summary(win, **kw),
        "ties": int(np.sum(cand.margin == ref.margin)),
        # a NaN margin counts as a loss for the candidate: a model that scores NaN is broken
        "nonfinite_margins": {"candidate": cand.nonfinite, "reference": ref.nonfinite},
        "candidate": _model_summary(cand, n_boot, confidence, seed),
        "reference": _model_summary(ref, n_boot, confidence, seed),
        "baselines": {k: _rate(v, n_boot, confidence, seed) for k, v in base.items()},
        "paired": {
            "win_rate_minus_shorter": stats.paired_bootstrap_diff(win.astype(float), base["shorter_wins"], **kw),
            "win_rate_minus_longer": stats.paired_bootstrap_diff(win.astype(float), base["longer_wins"], **kw),
            "accuracy_change": stats.paired_bootstrap_diff(c_ok, r_ok, **kw),
            "norm_accuracy_change": stats.paired_bootstrap_diff(c_nok, r_nok, **kw),
        },
        "nll": {
            "candidate": nll_c,
            "reference": nll_r,
            "relative_increase": (nll_c - nll_r) / nll_r if nll_r > 0 else float("nan"),
        },
        "by_length": {
            name: {
                "n": int(mask.sum()),
                "candidate_accuracy": float(c_ok[mask].mean()) if mask.any() else float("nan"),
                "reference_accuracy": float(r_ok[mask].mean()) if mask.any() else float("nan"),
                "win_rate": float(win[mask].mean()) if mask.any() else float("nan"),
            }
            for name, mask in (("chosen_shorter", chosen_shorter), ("chosen_longer", chosen_longer))
        },
        "slices": {},
    }
    for slice_name, labels in (slices or {}).items():
        table: dict[str, Any] = {}
        for value in sorted(set(labels.tolist())):
            m = labels == value
            lo, hi = stats.bootstrap_ci(win[m].astype(float), n_boot, confidence, seed)
            table[str(value)] = {
                "n": int(m.sum()),
                "win_rate": float(win[m].mean()),
                "win_rate_ci_low": lo,
                "win_rate_ci_high": hi,
                "candidate_accuracy": float(c_ok[m].mean()),
                "reference_accuracy": float(r_ok[m].mean()),
                "candidate_norm_accuracy": float(c_nok[m].mean()),
                "reference_norm_accuracy": float(r_nok[m].mean()),
                "candidate_mean_margin": float(cand.margin[m].mean()),
                "reference_mean_margin": float(ref.margin[m].mean()),
                "shorter_wins": float(base["shorter_wins"][m].mean()),
            }
        out["slices"][slice_name] = table
    return out


def headline(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The flat numbers for ``metrics/evaluate.json`` and the registry tags."""
    t, s = evaluation["test"], evaluation.get("safety") or {}
    h = {
        "n_test": t["n"],
        "win_rate": t["win_rate"]["rate"],
        "win_rate_ci_low": t["win_rate"]["ci_low"],
        "win_rate_ci_high": t["win_rate"]["ci_high"],
        "win_rate_p_value": t["win_rate"]["p_value"],
        "candidate_accuracy": t["candidate"]["accuracy"]["rate"],
        "reference_accuracy": t["reference"]["accuracy"]["rate"],
        "candidate_norm_accuracy": t["candidate"]["norm_accuracy"]["rate"],
        "reference_norm_accuracy": t["reference"]["norm_accuracy"]["rate"],
        "shorter_wins_accuracy": t["baselines"]["shorter_wins"]["rate"],
        "longer_wins_accuracy": t["baselines"]["longer_wins"]["rate"],
        "win_minus_shorter": t["paired"]["win_rate_minus_shorter"]["diff"],
        "win_minus_shorter_ci_low": t["paired"]["win_rate_minus_shorter"]["ci_low"],
        "nll_candidate": t["nll"]["candidate"],
        "nll_reference": t["nll"]["reference"],
        "nll_relative_increase": t["nll"]["relative_increase"],
        "n_safety": s.get("n", 0),
    }
    if s.get("n", 0):
        h.update({
            "safety_candidate_accuracy": s["candidate"]["accuracy"]["rate"],
            "safety_reference_accuracy": s["reference"]["accuracy"]["rate"],
            "safety_regression": s["accuracy_regression"],
        })
    return {k: _rounded(k, v) if isinstance(v, float) else v for k, v in h.items()}


def _rounded(key: str, value: float) -> float:
    """Six decimals, but a p-value keeps three significant digits (2.9e-10, not 0)."""
    if key.endswith("p_value") and math.isfinite(value):
        return float(f"{value:.3g}")
    return round(value, 6)


# --------------------------------------------------------------------------- scoring


def score_pairs(model: Any, tokenizer: Any, pairs: pl.DataFrame, params: Params) -> Scores:
    """Log-probabilities of chosen and rejected under one model."""
    from pipelines.model import pair_messages, response_logprobs

    prompts = [pair_messages(p) for p in pairs["prompt"].to_list()]
    kw = {
        "max_length": params.train.max_length,
        "max_prompt_length": params.train.max_prompt_length,
        "batch_size": params.evaluate.batch_size,
    }
    c, cn = response_logprobs(model, tokenizer, prompts, pairs["chosen"].to_list(), **kw)
    r, rn = response_logprobs(model, tokenizer, prompts, pairs["rejected"].to_list(), **kw)
    return Scores(c, cn, r, rn)


def score_model(folder: Path, sets: dict[str, pl.DataFrame], params: Params, base: Path) -> dict[str, Scores]:
    """Load one policy, score every pair set, release the model."""
    from transformers import set_seed

    from pipelines.model import load_policy, plan_device

    set_seed(params.seed)
    plan = plan_device(params.train, builtin=params.model.source == "builtin")
    model, tokenizer = load_policy(folder, device=plan.device, dtype=plan.dtype_name, base_fallback=base)
    out = {name: score_pairs(model, tokenizer, df, params) for name, df in sets.items() if df.height}
    del model
    gc.collect()
    return out


def load_sets(params: Params, layout: Layout) -> dict[str, pl.DataFrame]:
    """Test and safety pairs (a seeded sample of each when ``evaluate.max_pairs`` is set)."""
    import polars as pl

    if not layout.safety_pairs.exists():  # an empty safety set passes the gate "not measured": never by accident
        raise FileNotFoundError(
            f"{layout.safety_pairs} is missing: the pairs stage always writes it (empty when no safety "
            "source is enabled); rerun `dvc repro pairs`"
        )
    sets = {"test": pl.read_parquet(layout.pairs_split("test")), "safety": pl.read_parquet(layout.safety_pairs)}
    cap = params.evaluate.max_pairs
    if cap:
        sets = {k: v.sample(n=min(cap, v.height), seed=params.seed) if v.height > cap else v for k, v in sets.items()}
    return sets


def choose_reference(params: Params, layout: Layout, candidate_fp: str) -> dict[str, Any]:
    """The registry champion, or the base model when there is none or it is this candidate."""
    from pipelines.tracking import resolve_champion

    champ = resolve_champion(params, layout)
    if champ is None:
        return {"kind": "base", "label": "base model (no champion yet)"}
    if champ["fingerprint"] == candidate_fp:
        return {"kind": "base", "label": f"base model (champion v{champ['version']} is this candidate)",
                "champion_version": champ["version"]}
    return {"kind": "champion", "label": f"champion v{champ['version']}", "champion_version": champ["version"],
            "fingerprint": champ["fingerprint"]}


def broken_champion_reference(reference: dict[str, Any], bad: dict[str, int], sizes: dict[str, int]) -> dict[str, Any]:
    """The base model as reference, standing in for a champion that scored NaN or inf.

    Why: a NaN margin counts as a loss for the candidate, so a broken champion could
    never be beaten and every weekly run would fail until someone rolled it back by
    hand. Judged against the base model instead, a candidate must still clear every
    gate check, and promoting it replaces the broken champion. The label names the
    champion and what was wrong with it, for the verdict, the report and the registry.
    """
    bad = {name: k for name, k in bad.items() if k}
    where = ", ".join(f"{k} of {sizes[name]} {name}" for name, k in bad.items())
    version = reference["champion_version"]
    return {
        "kind": "base",
        "label": f"base model (champion v{version} is broken: non-finite scores on {where} pairs)",
        "broken_champion_version": version,
        "broken_champion_nonfinite": bad,
    }


def stale_reference(recorded: dict[str, Any] | None, current: dict[str, Any]) -> str | None:
    """Why an evaluation no longer answers "is this candidate better than the champion?", or None.

    Why: evaluate's inputs are files, but its reference is the registry alias, which DVC
    cannot see; after a promotion or a rollback, DVC's run-cache can restore an
    ``eval.json`` made against the *old* champion. ``recorded`` is the reference stored in
    that file and ``current`` what :func:`choose_reference` returns now. The base model is
    the same reference however it was chosen, and a candidate that has become the champion
    keeps the evaluation that promoted it; any other change of champion makes it stale.
    """
    recorded = recorded or {}
    broken = recorded.get("broken_champion_version")
    if broken is not None and current["kind"] == "champion" and current.get("champion_version") == broken:
        return None  # judged against the base model because this very champion is broken
    if current["kind"] == "base" and current.get("champion_version"):
        return None  # this candidate is the champion now: the evaluation that promoted it stands
    if current["kind"] == "base" and recorded.get("kind") == "base":
        return None
    if current["kind"] == recorded.get("kind") and current.get("champion_version") == recorded.get("champion_version"):
        return None
    return (f"the evaluation was made against {recorded.get('label', 'an unknown reference')} but the reference is "
            f"now {current['label']}; rerun it (`dvc repro -f -s evaluate` or `python -m pipelines evaluate`)")


def _per_pair_frame(name: str, df: pl.DataFrame, cand: Scores, ref: Scores) -> pl.DataFrame:
    import polars as pl

    return pl.DataFrame({
        "set": [name] * df.height,
        "pair_id": df["pair_id"],
        "skill": df["skill"],
        "pair_type": df["pair_type"],
        "candidate_margin": np.round(cand.margin, 5),
        "reference_margin": np.round(ref.margin, 5),
        "candidate_norm_margin": np.round(cand.norm_margin, 6),
        "reference_norm_margin": np.round(ref.norm_margin, 6),
        "win": (cand.margin > ref.margin).astype(int),
        "chosen_tokens": cand.chosen_n,
        "rejected_tokens": cand.rejected_n,
    })


def judge_step(candidate: Path, reference: Path, test: pl.DataFrame, params: Params, layout: Layout) -> Any:
    """The optional LLM-as-judge comparison (``judge.enabled``), traced when Langfuse is configured.

    Why here: the judge needs both policy folders, and the champion's exists only while
    evaluate holds its download.
    """
    from pipelines import judge, tracing

    tracer = tracing.tracer(params)
    try:
        result = judge.run_judge(candidate, reference, test, params, base_fallback=layout.base_model, tracer=tracer)
    finally:
        tracer.shutdown()
    log.info("evaluate: judge win-rate %.3f [%.3f, %.3f] over %d prompts (%d invalid)",
             result.win_rate, result.ci_low, result.ci_high, result.n, result.invalid)
    return result


def run(params: Params, layout: Layout) -> dict[str, Any]:
    """Stage ``evaluate``: score both models, compare, write eval.json, pairs.csv and the report."""
    from pipelines.model import apply_runtime, candidate_fingerprint

    apply_runtime(params)  # before torch loads
    import polars as pl

    from pipelines.io import atomic_path
    from pipelines.report import write_report
    from pipelines.tracking import download_version

    t0 = time.perf_counter()
    if params.judge.enabled:  # a judge with no endpoint fails now, not after both models ran
        from pipelines.judge import judge_settings

        judge_settings(params.judge)
    sets = load_sets(params, layout)
    if sets["test"].height == 0:  # before loading, scoring (and downloading) two models for nothing
        raise ValueError(f"no test pairs in {layout.pairs_split('test')}")
    fp = candidate_fingerprint(layout.candidate)
    reference = choose_reference(params, layout, fp)
    log.info("evaluate: %d test and %d safety pairs, candidate %s vs %s",
             sets["test"].height, sets["safety"].height, fp[:12], reference["label"])
    cand = score_model(layout.candidate, sets, params, layout.base_model)
    with tempfile.TemporaryDirectory() as tmp:
        ref_folder = layout.base_model
        if reference["kind"] == "champion":
            ref_folder = download_version(params, layout, reference["champion_version"], Path(tmp))
        ref = score_model(ref_folder, sets, params, layout.base_model)
        bad = {name: scores.nonfinite for name, scores in ref.items()}
        if reference["kind"] == "champion" and any(bad.values()) and params.evaluate.on_broken_champion == "base":
            reference = broken_champion_reference(reference, bad, {name: df.height for name, df in sets.items()})
            log.warning("evaluate: %s; comparing with the base model instead (evaluate.on_broken_champion: base)",
                        reference["label"].removeprefix("base model (").removesuffix(")"))
            ref_folder = layout.base_model
            ref = score_model(ref_folder, sets, params, layout.base_model)
        judged = judge_step(layout.candidate, ref_folder, sets["test"], params, layout) if params.judge.enabled else None

    e = params.evaluate
    kw = {"n_boot": e.bootstrap_samples, "confidence": e.confidence, "seed": params.seed}
    evaluation: dict[str, Any] = {
        "candidate_fingerprint": fp,
        "reference": reference,
        "confidence": e.confidence,
    }
    frames = []
    for name, df in sets.items():
        if name not in cand:
            evaluation[name] = {"n": 0}
            continue
        chosen_len = df["chosen"].str.len_chars().to_numpy()
        rejected_len = df["rejected"].str.len_chars().to_numpy()
        slices = {"skill": df["skill"].to_numpy(), "pair_type": df["pair_type"].to_numpy()}
        result = compare(cand[name], ref[name], chosen_len, rejected_len, slices, **kw)
        if name == "safety":
            result["accuracy_regression"] = (
                result["reference"]["accuracy"]["rate"] - result["candidate"]["accuracy"]["rate"]
            )
        evaluation[name] = result
        frames.append(_per_pair_frame(name, df, cand[name], ref[name]))
    evaluation["headline"] = headline(evaluation)
    if judged is not None:
        from pipelines import judge

        evaluation["judge"] = judged.to_dict()
        evaluation["headline"].update(judge.headline(judged))

    layout.eval_dir.mkdir(parents=True, exist_ok=True)
    per_pair = pl.concat(frames)
    with atomic_path(layout.eval_dir / "pairs.csv", suffix=".csv") as tmp:
        per_pair.write_csv(tmp)
    write_report(evaluation, per_pair, layout.eval_dir)
    write_json_atomic(layout.eval_dir / "eval.json", evaluation)
    write_json_atomic(layout.metrics("evaluate"), evaluation["headline"])
    h = evaluation["headline"]
    log.info("evaluate: win-rate %.3f [%.3f, %.3f] p=%.2g; accuracy %.3f -> %.3f; NLL %+.1f%% (%.1fs)",
             h["win_rate"], h["win_rate_ci_low"], h["win_rate_ci_high"], h["win_rate_p_value"],
             h["reference_accuracy"], h["candidate_accuracy"], 100 * h["nll_relative_increase"],
             time.perf_counter() - t0)
    return evaluation["headline"]
