"""Drift check at scale: ~1M raw events per window, ours vs Evidently on all rows.

    .venv/bin/python benchmarks/bench_drift.py                          # 300k interactions per window
    .venv/bin/python benchmarks/bench_drift.py --interactions 30000 --json out.json
    .venv/bin/python benchmarks/bench_drift.py --workdir /tmp/bench-drift --reuse   # keep/reuse the data
    .venv/bin/python benchmarks/bench_drift.py --quick                  # smoke run (python -m benchmarks --quick)

Data: the generator at ``--interactions`` per window (300,000 interactions ~ 1M raw events,
~300k scrubbed records: one record per feedback event), run through the real ingest and
scrub stages once per window (timed apart, not part of the comparison). The reference is
``shift=none``; each current window (``--shifts``, default ``tenant none``) has its own seed.

Timed, in one process and in this order:

- ours, cold: :func:`pipelines.drift.detect_drift` with an empty cache, so the imports
  (Evidently, torch), the model load and the reference's features and embeddings count;
- ours, weekly: the same call again with the reference cached (what the weekly run pays);
- baseline: Evidently's ``DataDriftPreset`` (its default methods) on the full, unsampled
  tabular features of both windows, including the feature extraction and the pandas
  conversion it needs (Evidently is already imported by then). It has no embeddings, so
  ``tabular_s`` (ours without the embedding part) is the like-for-like figure.

Agreement is reported per tabular feature (drifted or not) and for the verdict. The
baseline's verdict is Evidently's dataset drift at ``drift_share = drift.threshold`` (the
ADR's 0.15) and at its default 0.5; ours also counts the prompt embedding and lets one
severe feature decide alone, which is where the two can differ. Target: ours <= 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_SECONDS = 60.0


def prepare(
    root: Path, shift: str, interactions: int, seed: int, reuse: bool
) -> tuple[Path, dict[str, float]]:
    """Generate, ingest and scrub one window under ``root``; return the scrubbed file and timings."""
    from pipelines import ingest, scrub
    from pipelines.config import load_params
    from pipelines.generate import generate_to
    from pipelines.layout import Layout

    layout = Layout(root)
    if reuse and layout.scrubbed.exists():
        return layout.scrubbed, {}
    params = load_params(
        ROOT / "params.yaml",
        {"generate.shift": shift, "generate.n_interactions": interactions, "seed": seed},
    )
    times: dict[str, float] = {}
    t = time.perf_counter()
    gen = generate_to(params, root / "data" / "raw")
    times["generate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ingest.run(params, layout)
    times["ingest_s"] = time.perf_counter() - t
    t = time.perf_counter()
    scrub.run(params, layout)
    times["scrub_s"] = time.perf_counter() - t
    times["raw_events"] = float(gen["events_total"])
    return layout.scrubbed, {k: round(v, 2) for k, v in times.items()}


def baseline(reference: Any, current: Any, pii_pattern: str, drift_share: float) -> dict[str, Any]:
    """Evidently DataDriftPreset with its defaults on every row of both windows."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from pipelines.drift_features import CATEGORICAL_FEATURES, NUMERIC_FEATURES, extract_features

    t0 = time.perf_counter()
    ref = extract_features(reference, pii_pattern)
    cur = extract_features(current, pii_pattern)
    t_feat = time.perf_counter() - t0
    definition = DataDefinition(
        numerical_columns=list(NUMERIC_FEATURES), categorical_columns=list(CATEGORICAL_FEATURES)
    )
    cur_ds = Dataset.from_pandas(cur.to_pandas(), data_definition=definition)
    ref_ds = Dataset.from_pandas(ref.to_pandas(), data_definition=definition)
    snapshot = Report([DataDriftPreset(drift_share=drift_share)]).run(cur_ds, ref_ds)
    seconds = time.perf_counter() - t0
    columns: dict[str, dict[str, Any]] = {}
    share = None
    for m in snapshot.dict()["metrics"]:
        cfg = m.get("config", {})
        if cfg.get("type", "").endswith(":ValueDrift"):
            # every default method on >1,000 rows is a distance: drifted when value >= threshold
            columns[cfg["column"]] = {
                "method": cfg.get("method"),
                "score": float(m["value"]),
                "threshold": float(cfg["threshold"]),
                "drifted": float(m["value"]) >= float(cfg["threshold"]),
            }
        elif cfg.get("type", "").endswith(":DriftedColumnsCount"):
            share = float(m["value"]["share"])
    return {
        "seconds": round(seconds, 2),
        "features_s": round(t_feat, 2),
        "rows": [ref.height, cur.height],
        "drift_share": share,
        "columns": columns,
        "dataset_drift_at_threshold": share is not None and share >= drift_share,
        "dataset_drift_at_0_5": share is not None and share >= 0.5,
    }


def ours(
    reference: Any, current: Any, params: Any, cache: Path, seed: int, pii_pattern: str
) -> dict[str, Any]:
    from pipelines.drift import detect_drift

    t0 = time.perf_counter()
    r = detect_drift(reference, current, params, cache, seed=seed, pii_pattern=pii_pattern)
    seconds = time.perf_counter() - t0
    tabular = sum(r.timings[k] for k in ("reference_s", "current_features_s", "evidently_s"))
    return {
        "seconds": round(seconds, 2),
        "tabular_s": round(tabular, 2),
        "verdict": r.verdict,
        "drift_score": round(r.drift_score, 3),
        "drifted": r.drifted,
        "severe": r.severe,
        "reasons": r.reasons,
        "timings": r.timings,
        "sizes": r.sizes,
        "cache": {k: v for k, v in r.cache.items() if k.endswith("hit")},
        "columns": {
            f.name: {
                "method": f.method,
                "score": f.score,
                "drifted": f.drifted,
                "psi": f.psi,
                "p_value": f.p_value,
            }
            for f in r.features
        },
    }


def agreement(mine: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    cols = sorted(base["columns"])
    same = [c for c in cols if mine["columns"][c]["drifted"] == base["columns"][c]["drifted"]]
    return {
        "tabular_features_agree": f"{len(same)}/{len(cols)}",
        "disagree": [c for c in cols if c not in same],
        "verdict_ours": mine["verdict"],
        "verdict_baseline_at_threshold": "drift" if base["dataset_drift_at_threshold"] else "ok",
        "verdict_baseline_at_0_5": "drift" if base["dataset_drift_at_0_5"] else "ok",
        "verdicts_agree_at_threshold": (mine["verdict"] == "drift")
        == base["dataset_drift_at_threshold"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--interactions",
        type=int,
        default=300_000,
        help="interactions per window (~3.4 raw events each)",
    )
    ap.add_argument(
        "--shifts", nargs="+", default=["tenant", "none"], help="current windows to compare"
    )
    ap.add_argument(
        "--workdir",
        type=Path,
        help="where the generated windows live (default: a temp dir, removed)",
    )
    ap.add_argument(
        "--reuse", action="store_true", help="reuse scrubbed windows already in --workdir"
    )
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument(
        "--quick", action="store_true", help="3,000 interactions, tenant only: a smoke run"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.interactions, args.shifts = 3000, ["tenant"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import polars as pl

    from pipelines.config import load_params
    from pipelines.drift_features import placeholder_regex

    params = load_params(ROOT / "params.yaml")
    pii_pattern = placeholder_regex(params.scrub.entities, params.scrub.placeholder_format)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-drift-"))
    out: dict[str, Any] = {
        "interactions_per_window": args.interactions,
        "drift_params": params.drift.model_dump(),
        "load_avg_start": os.getloadavg(),
        "cpus": os.cpu_count(),
        "runs": {},
    }
    try:
        ref_path, out["prepare_reference"] = prepare(
            work / "ref", "none", args.interactions, 1, args.reuse
        )
        cache = Path(tempfile.mkdtemp(prefix="drift-cache-"))
        for i, shift in enumerate(args.shifts):
            cur_path, prep = prepare(
                work / f"cur-{shift}", shift, args.interactions, 2 + i, args.reuse
            )
            print(f"== current window: shift={shift} (prepared: {prep})", flush=True)
            t = time.perf_counter()
            reference, current = pl.read_parquet(ref_path), pl.read_parquet(cur_path)
            read_s = time.perf_counter() - t
            run: dict[str, Any] = {
                "prepare": prep,
                "read_s": round(read_s, 2),
                "rows": {"reference": reference.height, "current": current.height},
            }
            if i == 0:
                run["ours_cold"] = ours(
                    reference, current, params.drift, cache, params.seed, pii_pattern
                )
                print(
                    f"   ours, cold cache:  {run['ours_cold']['seconds']:7.1f} s  {run['ours_cold']['timings']}",
                    flush=True,
                )
            run["ours_weekly"] = ours(
                reference, current, params.drift, cache, params.seed, pii_pattern
            )
            print(
                f"   ours, weekly:      {run['ours_weekly']['seconds']:7.1f} s  {run['ours_weekly']['timings']}",
                flush=True,
            )
            run["baseline"] = baseline(reference, current, pii_pattern, params.drift.threshold)
            print(
                f"   baseline (all rows): {run['baseline']['seconds']:5.1f} s; "
                f"ours without embeddings: {run['ours_weekly']['tabular_s']:.1f} s",
                flush=True,
            )
            run["ratio_baseline_over_ours_weekly"] = round(
                run["baseline"]["seconds"] / run["ours_weekly"]["seconds"], 2
            )
            # like for like (no embeddings on either side): features, cached reference, Evidently
            run["ratio_baseline_over_ours_tabular"] = round(
                run["baseline"]["seconds"] / run["ours_weekly"]["tabular_s"], 2
            )
            run["agreement"] = agreement(run["ours_weekly"], run["baseline"])
            print(
                f"   ours: {run['ours_weekly']['verdict']} {run['ours_weekly']['drifted']}; "
                f"agreement: {run['agreement']}",
                flush=True,
            )
            out["runs"][shift] = run
        shutil.rmtree(cache, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)
    out["load_avg_end"] = os.getloadavg()
    first = out["runs"][args.shifts[0]]
    out["target_met"] = {
        "cold": first["ours_cold"]["seconds"] <= TARGET_SECONDS,
        "weekly": first["ours_weekly"]["seconds"] <= TARGET_SECONDS,
    }
    print(
        json.dumps(
            {k: out[k] for k in ("peak_rss_gb", "target_met", "load_avg_start", "load_avg_end")}
        ),
        flush=True,
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    main()
