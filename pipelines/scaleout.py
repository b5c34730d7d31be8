"""Per-skill fan-out and queue placement: the logic of ``dags/scaleout_dag.py``.

What a scaled-out deployment needs from the data, as pure functions of files:

- :func:`skills`: the skills present in the training pairs, the list a DAG maps over;
- :func:`skill_report`: one skill's pairs per split and type, prompt and reply lengths,
  tenants; written as ``skill=<name>.json`` (one mapped task instance each);
- :func:`training_mix`: the per-skill reports joined into the sampling weights a
  per-skill training would use (each skill's share of the training pairs, capped, so
  one big skill does not drown the others), with the accelerator found where it ran;
- :func:`train_queue`: the Celery queue of training tasks (``$PREFPIPE_TRAIN_QUEUE``,
  ``default`` when unset), read when a DAG file is parsed.

Polars, torch and :mod:`pipelines.io` (which imports polars) are imported inside the
functions: the DAG files import this module at parse time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

TRAIN_QUEUE_ENV = "PREFPIPE_TRAIN_QUEUE"
DEFAULT_QUEUE = "default"
SPLITS = ("train", "val", "test")


def train_queue(env: Mapping[str, str] | None = None) -> str:
    """The queue training tasks go to: ``$PREFPIPE_TRAIN_QUEUE``, else ``default``.

    Why an environment variable: a task's queue is fixed when the DAG file is parsed, so
    it must come from the dag-processor's environment (an Airflow Variable would cost a
    database query on every parse). Set it to ``gpu`` where a worker serves that queue
    (``airflow celery worker --queues gpu``); with no such worker the task waits queued.
    """
    env = os.environ if env is None else env
    return env.get(TRAIN_QUEUE_ENV, "").strip() or DEFAULT_QUEUE


def _split_file(pairs_dir: Path, split: str) -> Path:
    return Path(pairs_dir) / f"{split}.parquet"


def skills(pairs_dir: str | Path) -> list[str]:
    """The skills with at least one training pair, sorted (what a per-skill fan-out maps over)."""
    import polars as pl

    path = _split_file(Path(pairs_dir), "train")
    if not path.exists():
        raise FileNotFoundError(f"no training pairs at {path}: run the pairs stage first")
    found = pl.scan_parquet(path).select(pl.col("skill").drop_nulls().unique()).collect()
    return sorted(found["skill"].to_list())


def report_name(skill: str) -> str:
    """``skill=<name>.json`` with anything but letters, digits, ``._-`` replaced."""
    return "skill=" + (re.sub(r"[^A-Za-z0-9._-]+", "_", skill).strip("._") or "_") + ".json"


def skill_report(pairs_dir: str | Path, skill: str, out_dir: str | Path) -> dict[str, Any]:
    """One skill's pairs: count per split and pair type, tenants, mean lengths; written to ``out_dir``."""
    import polars as pl

    from pipelines.io import write_json_atomic

    pairs_dir, out_dir = Path(pairs_dir), Path(out_dir)
    frames = [pl.scan_parquet(p) for s in SPLITS if (p := _split_file(pairs_dir, s)).exists()]
    if not frames:
        raise FileNotFoundError(f"no pairs under {pairs_dir}")
    df = pl.concat(frames, how="diagonal_relaxed").filter(pl.col("skill") == skill).collect()
    if df.is_empty():
        raise ValueError(f"skill {skill!r} has no pairs under {pairs_dir}")
    per_split = dict(df.group_by("split").len().iter_rows())
    report = {
        "skill": skill,
        "pairs": df.height,
        "per_split": {s: int(per_split.get(s, 0)) for s in SPLITS},
        "pair_types": {k: int(v) for k, v in sorted(df.group_by("pair_type").len().iter_rows())},
        "tenants": int(df["tenant_id"].n_unique()),
        "threads": int(df["thread_id"].n_unique()),
        "mean_chosen_chars": round(float(df["chosen"].str.len_chars().mean()), 1),
        "mean_rejected_chars": round(float(df["rejected"].str.len_chars().mean()), 1),
    }
    write_json_atomic(out_dir / report_name(skill), report)
    return report


def training_mix(reports: Iterable[Mapping[str, Any]], out_dir: str | Path, max_share: float = 0.5) -> dict[str, Any]:
    """Per-skill sampling weights from the skill reports, written to ``out_dir/training_mix.json``.

    Each skill's weight is its share of the training pairs, capped at ``max_share`` and
    renormalised (a cap above 1/n cannot be met by n skills, so it is raised to 1/n).
    The accelerator of the process that ran it is recorded: this is the step that runs
    on the training queue.
    """
    from pipelines.io import write_json_atomic

    train = {r["skill"]: int(r["per_split"]["train"]) for r in reports}
    if not train or sum(train.values()) == 0:
        raise ValueError("no training pairs in any skill report")
    cap = max(max_share, 1.0 / len(train))
    weights = _capped_shares(train, cap)
    mix = {
        "train_pairs": dict(sorted(train.items())),
        "weights": {k: round(w, 6) for k, w in sorted(weights.items())},
        "max_share": cap,
        "accelerator": accelerator(),
    }
    write_json_atomic(Path(out_dir) / "training_mix.json", mix)
    return mix


def _capped_shares(counts: Mapping[str, int], cap: float) -> dict[str, float]:
    """Shares of ``counts`` with none above ``cap``: capped ones are fixed, the rest rescaled, until none is over."""
    capped: set[str] = set()
    while True:
        free = {k: v for k, v in counts.items() if k not in capped}
        budget, total = 1.0 - cap * len(capped), sum(free.values())
        shares = {k: budget * (v / total if total else 1 / len(free)) for k, v in free.items()}
        over = {k for k, w in shares.items() if w > cap + 1e-12}
        if not over or len(over) == len(free):
            return {**dict.fromkeys(capped, cap), **shares}
        capped |= over


def accelerator() -> dict[str, Any]:
    """What torch sees here: CUDA devices (name, memory) or the CPU."""
    import torch

    if torch.cuda.is_available():
        devices = [
            {"name": torch.cuda.get_device_name(i), "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
            for i in range(torch.cuda.device_count())
        ]
        return {"kind": "cuda", "devices": devices}
    return {"kind": "cpu", "devices": [], "threads": torch.get_num_threads()}
