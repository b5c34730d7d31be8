"""The GPU benchmark's pure parts: overrides from the command line, and the ratio table."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "benchmarks" / "bench_train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(device: str, train_s: float, **kw) -> dict:
    return {
        "model": "mid", "device": device, "precision": "bfloat16" if device == "cuda" else "float32",
        "gpu": "H200" if device == "cuda" else None, "peak_gpu_mem_gb": 1.0 if device == "cuda" else None,
        "cpu_threads": 16, "timings_s": {"base_model": 2.0, "train": train_s, "evaluate": 4.0},
        "sft_steps": 2, "dpo_steps": 8, "dpo_train_loss": 0.65, "win_rate": 0.7, **kw,
    }


def test_overrides_apply_steps_to_both_phases_and_never_checkpoint():
    b = _bench()
    ns = argparse.Namespace(sft_steps=3, dpo_steps=12, warmup_steps=None, max_pairs=0)
    o = b.overrides(ns, "/models/x")
    assert o["model.source"] == "/models/x"
    assert (o["train.sft.max_steps"], o["train.dpo.max_steps"], o["train.eval_steps"]) == (3, 12, 12)
    assert o["train.save_steps"] > 12
    assert "evaluate.max_pairs" not in o and "model.warmup.max_steps" not in o


def test_overrides_are_valid_params():
    from pipelines.config import load_params

    b = _bench()
    ns = argparse.Namespace(sft_steps=1, dpo_steps=2, warmup_steps=3, max_pairs=40)
    p = load_params(ROOT / "params.yaml", b.overrides(ns, "builtin"))
    assert (p.train.dpo.max_steps, p.model.warmup.max_steps, p.evaluate.max_pairs) == (2, 3, 40)


def test_table_gives_the_cpu_over_gpu_ratio_per_stage():
    text = _bench().table([_row("cpu", 80.0), _row("cuda", 16.0)])
    assert "mid: GPU vs CPU (x faster): base_model 1.0x, train 5.0x, evaluate 1.0x" in text
    assert "8.000" in text  # CPU seconds per step: 80 s / (2 + 8) steps


def test_table_without_a_gpu_says_there_is_no_ratio():
    text = _bench().table([_row("cpu", 80.0)])
    assert "no GPU in this run" in text
    assert "x faster" not in text
