"""Training and evaluation on each device this machine has: GPU against CPU, same run.

    .venv/bin/python benchmarks/bench_train.py                 # after `make run` (needs data/pairs)
    .venv/bin/python benchmarks/bench_train.py --models builtin --devices cpu
    .venv/bin/python benchmarks/bench_train.py --models mid --sft-steps 5 --dpo-steps 30
    .venv/bin/python benchmarks/bench_train.py --quick          # smoke run of the harness

What runs: the project's own stages (``base_model``, ``train``, ``evaluate``), in-process
in a child per (model, device), each in a temporary project root with its own MLflow
store and a copy of ``data/pairs``. The CPU child hides the GPU
(``CUDA_VISIBLE_DEVICES=""``), so :func:`pipelines.model.plan_device` chooses the CPU
path there (fp32) and the CUDA path (bf16 where supported, gradient checkpointing for
a non-builtin base) in the other.

Models:

- ``builtin``: the default ``params.yaml`` model (a ~0.7M-parameter Llama, tokenizer and
  warm-up built by ``base_model``). On a GPU this is the path ``make run`` takes there.
- ``mid``: a hub-style folder (``save_pretrained``: config, weights, tokenizer with a
  chat template) of a randomly initialised Llama of ``--hidden`` x ``--layers``, used as
  ``model.source``, so ``base_model`` loads it as it would a downloaded checkpoint and
  ``train`` takes the non-builtin path (gradient checkpointing on CUDA, 4-bit when
  bitsandbytes is installed). Random weights: its losses say nothing about quality,
  only the speed and that the path works.

Baseline: the CPU child of the same model in the same run; the figure to read is the
CPU/GPU ratio of seconds per DPO step and of the whole stage. Stage times include model
loading, checkpointing and the validation pass, which do not shrink with the GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ("builtin", "mid")
DEVICES = ("cpu", "cuda")


def has_cuda() -> bool:
    """Whether torch sees a GPU (imported lazily so ``--help`` stays fast)."""
    import torch

    return torch.cuda.is_available()


def overrides(args: argparse.Namespace, source: str) -> dict[str, Any]:
    """params.yaml overrides for one child: steps from the command line, no checkpoints."""
    o: dict[str, Any] = {
        "model.source": source,
        "train.save_steps": 10_000,  # a benchmark need not checkpoint
        "registry.model_name": "bench-train",
        "registry.experiment": "bench-train",
    }
    if args.sft_steps is not None:
        o["train.sft.max_steps"] = args.sft_steps
    if args.dpo_steps is not None:
        o["train.dpo.max_steps"] = args.dpo_steps
        o["train.eval_steps"] = max(args.dpo_steps, 1)
    if args.warmup_steps is not None:
        o["model.warmup.max_steps"] = args.warmup_steps
    if args.max_pairs:
        o["evaluate.max_pairs"] = args.max_pairs
    return o


def build_mid_model(dst: Path, pairs_dir: Path, hidden: int, layers: int, seed: int) -> int:
    """A hub-style checkpoint folder: random Llama + byte-level BPE tokenizer; returns its size.

    Why random weights: nothing may be downloaded here, and speed does not depend on them.
    """
    import polars as pl
    from transformers import LlamaConfig, LlamaForCausalLM, set_seed

    from pipelines.config import load_params
    from pipelines.model import corpus_conversations, ensure_chat_and_pad, train_tokenizer

    params = load_params(ROOT / "params.yaml")
    set_seed(seed)
    train = pl.read_parquet(pairs_dir / "train.parquet")
    convs = corpus_conversations(train, params.model.warmup.max_texts, seed)
    b = params.model.builtin
    tok = ensure_chat_and_pad(train_tokenizer([m["content"] for c in convs for m in c], b.vocab_size, b.min_frequency))
    heads = max(hidden // 64, 1)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 8 // 3 // 64 * 64 or hidden * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max(params.train.max_length, params.model.warmup.max_length) * 2,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(str(dst))
    tok.save_pretrained(str(dst))
    return sum(p.numel() for p in model.parameters())


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a child process: the three stages in a fresh project root; timings and metrics."""
    if spec["device"] == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    from pipelines import evaluate, train
    from pipelines import model as base_model
    from pipelines.config import load_params
    from pipelines.layout import Layout

    work = Path(spec["work"])
    layout = Layout(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    shutil.copytree(spec["pairs"], layout.pairs_split("train").parent)
    params = load_params(ROOT / "params.yaml", spec["overrides"])
    timings: dict[str, float] = {}
    for name, fn in (("base_model", base_model.run), ("train", train.run), ("evaluate", evaluate.run)):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn(params, layout)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        timings[name] = round(time.perf_counter() - t, 2)
    tr = json.loads(layout.metrics("train").read_text())
    ev = json.loads(layout.metrics("evaluate").read_text())
    out = {
        "model": spec["model"],
        "device": tr["device"],
        "precision": tr["precision"],
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "timings_s": timings,
        "sft_steps": params.train.sft.max_steps,
        "dpo_steps": tr["dpo_steps"],
        "dpo_train_loss": tr.get("dpo_train_loss"),
        "val_rewards_accuracies": tr.get("val_rewards_accuracies"),
        "win_rate": ev.get("win_rate"),
        "n_test": ev.get("n_test"),
    }
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """Each child's figures, then the CPU/GPU ratio per model (the in-run baseline)."""
    lines = [
        f"{'model':8} {'device':6} {'precision':9} {'base_model s':>12} {'train s':>8} {'s/step':>7} "
        f"{'evaluate s':>10} {'dpo loss':>8} {'win-rate':>8} {'GPU GB':>6}"
    ]
    for r in rows:
        t = r["timings_s"]
        steps = max(r["sft_steps"] + r["dpo_steps"], 1)
        lines.append(
            f"{r['model']:8} {r['device']:6} {r['precision']:9} {t['base_model']:12.1f} {t['train']:8.1f} "
            f"{t['train'] / steps:7.3f} {t['evaluate']:10.1f} {r['dpo_train_loss'] or 0:8.4f} "
            f"{r['win_rate'] or 0:8.3f} {r['peak_gpu_mem_gb'] if r['peak_gpu_mem_gb'] is not None else '-':>6}"
        )
    by = {(r["model"], r["device"]): r for r in rows}
    if not any(r["device"] == "cuda" for r in rows):
        lines.append("no GPU in this run: figures only, no GPU/CPU ratio (run it where torch sees CUDA)")
    for m in MODELS:
        cpu, gpu = by.get((m, "cpu")), by.get((m, "cuda"))
        if cpu and gpu:
            ratio = {k: cpu["timings_s"][k] / max(gpu["timings_s"][k], 1e-9) for k in gpu["timings_s"]}
            lines.append(
                f"{m}: GPU vs CPU (x faster): "
                + ", ".join(f"{k} {v:.1f}x" for k, v in ratio.items())
                + f"  (CPU: {cpu['cpu_threads']} threads; GPU: {gpu['gpu']})"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="builtin,mid", help="comma list of: " + ", ".join(MODELS))
    ap.add_argument("--devices", default="", help="comma list of cpu, cuda (default: cpu, plus cuda when present)")
    ap.add_argument("--pairs", type=Path, default=ROOT / "data" / "pairs", help="a pairs folder (train/val/test/safety)")
    ap.add_argument("--hidden", type=int, default=512, help="mid model width")
    ap.add_argument("--layers", type=int, default=8, help="mid model depth")
    ap.add_argument("--sft-steps", type=int, help="override train.sft.max_steps (both devices)")
    ap.add_argument("--dpo-steps", type=int, help="override train.dpo.max_steps (both devices)")
    ap.add_argument("--warmup-steps", type=int, help="override model.warmup.max_steps (builtin base)")
    ap.add_argument("--max-pairs", type=int, default=0, help="evaluate.max_pairs (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of the harness, not figures")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "bench_train.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.child:
        spec = json.loads(Path(args.child).read_text())
        Path(spec["result"]).write_text(json.dumps(run_child(spec)))
        return
    if not (args.pairs / "train.parquet").exists():
        sys.exit(f"bench_train: no pairs at {args.pairs} (run `make run` first, or pass --pairs DIR)")
    if args.quick:
        args.hidden, args.layers, args.sft_steps, args.dpo_steps, args.max_pairs = 64, 2, 2, 4, 40
        args.warmup_steps = 5
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] or (["cpu", "cuda"] if has_cuda() else ["cpu"])
    for bad in [m for m in models if m not in MODELS] + [d for d in devices if d not in DEVICES]:
        sys.exit(f"bench_train: unknown model or device {bad!r}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    rows: list[dict[str, Any]] = []
    try:
        for m in models:
            source = "builtin"
            if m == "mid":
                source = str(tmp / "mid-model")
                n = build_mid_model(Path(source), args.pairs, args.hidden, args.layers, args.seed)
                print(f"mid model: {n / 1e6:.1f}M parameters ({args.hidden} x {args.layers})", flush=True)
            for d in devices:
                spec = {
                    "model": m, "device": d, "pairs": str(args.pairs), "work": str(tmp / f"{m}-{d}"),
                    "overrides": {**overrides(args, source), "seed": args.seed},
                    "result": str(tmp / f"{m}-{d}.json"),
                }
                Path(tmp / f"{m}-{d}.spec.json").write_text(json.dumps(spec))
                print(f"--- {m} on {d}", flush=True)
                subprocess.run([sys.executable, __file__, "--child", str(tmp / f"{m}-{d}.spec.json")], check=True)
                rows.append(json.loads(Path(spec["result"]).read_text()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    command = "python benchmarks/bench_train.py " + " ".join(sys.argv[1:])
    print(f"\n{command.strip()}\n" + table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": command.strip(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
