"""Real data: does DPO on hh-rlhf harmless-base provably improve a tiny model, beyond length?

    .venv/bin/python benchmarks/hh_rlhf_dpo.py                       # ~15 min on 2 CPU cores
    .venv/bin/python benchmarks/hh_rlhf_dpo.py --seed 7 --keep /tmp/hh7   # keep the models
    .venv/bin/python benchmarks/hh_rlhf_dpo.py --seed 7 --base-from /tmp/hh7 --ld-alpha 0.5
    .venv/bin/python benchmarks/hh_rlhf_dpo.py --json benchmarks/out/hh_rlhf_dpo.json
    .venv/bin/python benchmarks/hh_rlhf_dpo.py --quick               # smoke run (not figures)

Data: ``../shared/data/hh-rlhf/harmless-base-test.jsonl.gz`` (2,312 human preference
pairs, MIT). Each transcript is split at its LAST ``\\n\\nAssistant:`` (prompt = the
dialogue so far as chat messages; chosen/rejected = the final answers). Pairs are split by
dialogue: the SHA-256 of the first Human turn decides, so every pair of one conversation
lands on one side, and the held-out side is never trained on (nor used for the
tokenizer or the warm-up).

Pipeline: the project's own stages, in-process, in a temporary project root with its own
MLflow store: ``base_model`` (byte-level BPE + small Llama + warm-up SFT on the train
side), ``train`` (LoRA SFT on chosen for ``--sft-steps``, merged, then LoRA DPO; with
``--sft-steps 0`` the base is both DPO's starting model and its reference), ``evaluate`` (no champion: the
reference is the base model). The candidate is also scored against the model before
its DPO adapter (the SFT model, or the base again when there is no SFT phase).

Defaults (tuned here, see benchmarks/README.md for every configuration tried): two
epochs of DPO (450 steps of 8 pairs) with LD-DPO's ``ld_alpha=0.2``: the tokens of the
longer answer past the shorter one's length count a fifth in the DPO log-ratios, so
length alone earns less of the loss and what is learned has to come from the content.
Plain DPO for 200 steps learns mostly "shorter wins" on this data.

Figures printed (95% intervals; bootstrap over held-out pairs, paired where stated):

- margin win-rate of the candidate over its starting model (the base) with the exact
  one-sided binomial p; the same over DPO's reference (the SFT model, when there is one);
- win-rate minus the shorter-response baseline's accuracy on the same pairs (paired);
- plain and length-normalised preference accuracy, base vs candidate, with the paired
  change; accuracy split by whether the chosen answer is the shorter one;
- the shorter/longer-response baselines.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
ASSISTANT = "\n\nAssistant:"
TURN = re.compile(r"\n\n(Human|Assistant):")


def parse_transcript(text: str) -> tuple[list[dict[str, str]], str]:
    """Split one transcript into (prompt messages, final answer) at the LAST Assistant marker."""
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        raise ValueError("no Assistant turn")
    head, answer = text[:cut], text[cut + len(ASSISTANT) :]
    parts = TURN.split(head)
    messages = []
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        messages.append(
            {"role": "user" if role == "Human" else "assistant", "content": content.strip()}
        )
    return messages, answer.strip()


def load_pairs(path: Path) -> list[dict[str, Any]]:
    """hh-rlhf pairs as PAIR_SCHEMA rows; drops the few whose two prompts differ or answers tie."""
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            rec = json.loads(line)
            p1, chosen = parse_transcript(rec["chosen"])
            p2, rejected = parse_transcript(rec["rejected"])
            if p1 != p2 or not p1 or chosen == rejected or not chosen or not rejected:
                continue
            first_human = next(m["content"] for m in p1 if m["role"] == "user")
            dialogue = hashlib.sha256(first_human.encode("utf-8")).hexdigest()
            rows.append(
                {
                    "pair_id": f"hh-{i}",
                    "prompt": p1,
                    "chosen": chosen,
                    "rejected": rejected,
                    "pair_type": "public",
                    "source": "hh_rlhf",
                    "tenant_id": "public",
                    "skill": "harmless",
                    "thread_id": dialogue[:16],
                    "source_event_ids": [],
                    "split": "",
                }
            )
    return rows


def split_by_dialogue(
    rows: list[dict[str, Any]], test_share: float, val_share: float
) -> dict[str, list]:
    """Deterministic split on the dialogue hash: one conversation never lands on two sides."""
    out: dict[str, list] = {"train": [], "val": [], "test": []}
    for r in rows:
        u = int(r["thread_id"][:8], 16) / 0xFFFFFFFF
        split = "test" if u < test_share else "val" if u < test_share + val_share else "train"
        out[split].append({**r, "split": split})
    return out


def build_params(args: argparse.Namespace) -> Any:
    from pipelines.config import load_params

    overrides = {
        "seed": args.seed,
        "model.source": "builtin",
        "model.builtin.vocab_size": args.vocab,
        "model.builtin.hidden_size": args.hidden,
        "model.builtin.num_layers": args.layers,
        "model.builtin.num_heads": args.heads,
        "model.builtin.intermediate_size": args.hidden * 3,
        "model.warmup.max_steps": args.warmup_steps,
        "model.warmup.batch_size": 16,
        "model.warmup.max_length": args.warmup_length,
        "train.max_length": args.max_length,
        "train.max_prompt_length": args.max_prompt_length,
        "train.batch_size": args.batch,
        "train.sft.max_steps": args.sft_steps,
        "train.dpo.max_steps": args.dpo_steps,
        "train.dpo.beta": args.beta,
        "train.dpo.learning_rate": args.lr,
        "train.dpo.ld_alpha": args.ld_alpha,
        "train.dpo.loss_type": args.loss_type,
        "train.eval_steps": max(args.dpo_steps // 2, 1),
        "train.save_steps": 10_000,  # a benchmark need not checkpoint
        "train.logging_steps": 25,
        "evaluate.bootstrap_samples": 5000,
        "registry.model_name": "hh-rlhf-benchmark",
        "registry.experiment": "hh-rlhf-benchmark",
        "runtime.cpu_threads": args.threads,
    }
    return load_params(ROOT / "params.yaml", overrides)


def figures(ev: dict[str, Any], dpo_only: dict[str, Any]) -> dict[str, Any]:
    """The reported numbers, flat, from eval.json-shaped dicts."""
    t = ev["test"]
    w = t["win_rate"]
    return {
        "n_heldout_pairs": t["n"],
        "win_rate_vs_base": w["rate"],
        "win_rate_vs_base_ci": [w["ci_low"], w["ci_high"]],
        "win_rate_vs_base_exact_ci": [w["exact_ci_low"], w["exact_ci_high"]],
        "win_rate_vs_base_p_one_sided": w["p_value"],
        "win_rate_vs_sft": dpo_only["win_rate"]["rate"],
        "win_rate_vs_sft_ci": [dpo_only["win_rate"]["ci_low"], dpo_only["win_rate"]["ci_high"]],
        "win_rate_vs_sft_p_one_sided": dpo_only["win_rate"]["p_value"],
        "shorter_wins_accuracy": t["baselines"]["shorter_wins"]["rate"],
        "longer_wins_accuracy": t["baselines"]["longer_wins"]["rate"],
        "win_minus_shorter": t["paired"]["win_rate_minus_shorter"]["diff"],
        "win_minus_shorter_ci": [
            t["paired"]["win_rate_minus_shorter"]["ci_low"],
            t["paired"]["win_rate_minus_shorter"]["ci_high"],
        ],
        "accuracy_base": t["reference"]["accuracy"]["rate"],
        "accuracy_base_ci": [
            t["reference"]["accuracy"]["ci_low"],
            t["reference"]["accuracy"]["ci_high"],
        ],
        "accuracy_candidate": t["candidate"]["accuracy"]["rate"],
        "accuracy_candidate_ci": [
            t["candidate"]["accuracy"]["ci_low"],
            t["candidate"]["accuracy"]["ci_high"],
        ],
        "accuracy_change": t["paired"]["accuracy_change"]["diff"],
        "accuracy_change_ci": [
            t["paired"]["accuracy_change"]["ci_low"],
            t["paired"]["accuracy_change"]["ci_high"],
        ],
        "norm_accuracy_base": t["reference"]["norm_accuracy"]["rate"],
        "norm_accuracy_candidate": t["candidate"]["norm_accuracy"]["rate"],
        "norm_accuracy_change": t["paired"]["norm_accuracy_change"]["diff"],
        "norm_accuracy_change_ci": [
            t["paired"]["norm_accuracy_change"]["ci_low"],
            t["paired"]["norm_accuracy_change"]["ci_high"],
        ],
        "by_length": t["by_length"],
        "nll_chosen_base": t["nll"]["reference"],
        "nll_chosen_candidate": t["nll"]["candidate"],
    }


def word_baseline(layout: Any, params: Any) -> dict[str, Any]:
    """A second length baseline: fewer whitespace-separated words wins (ties one half).

    Why: "shorter" by characters is the issue's baseline, but a model's notion of length
    is closer to tokens or words; beating the character baseline alone could be a better
    length proxy rather than content, so the word-count version is reported beside it.
    """
    import numpy as np
    import polars as pl

    from pipelines import stats

    per_pair = pl.read_csv(layout.eval_dir / "pairs.csv").filter(pl.col("set") == "test")
    test = pl.read_parquet(layout.pairs_split("test")).select(
        "pair_id",
        pl.col("chosen").str.count_matches(r"\S+").alias("wc"),
        pl.col("rejected").str.count_matches(r"\S+").alias("wr"),
    )
    d = per_pair.join(test, on="pair_id", how="left")
    wc, wr = d["wc"].to_numpy(), d["wr"].to_numpy()
    fewer = np.where(wc < wr, 1.0, np.where(wc > wr, 0.0, 0.5))
    diff = stats.paired_bootstrap_diff(d["win"].to_numpy().astype(float), fewer,
                                       params.evaluate.bootstrap_samples, params.evaluate.confidence, params.seed)
    return {"fewer_words_accuracy": float(fewer.mean()), "win_minus_fewer_words": diff["diff"],
            "win_minus_fewer_words_ci": [diff["ci_low"], diff["ci_high"]]}


def show(f: dict[str, Any], timings: dict[str, float], command: str) -> str:
    def pct(x: float) -> str:
        return f"{100 * x:.1f}%"

    def ci(v: list[float]) -> str:
        return f"[{pct(v[0])}, {pct(v[1])}]"

    def pts(v: list[float]) -> str:
        return f"[{100 * v[0]:+.1f}, {100 * v[1]:+.1f}]"

    bl = f["by_length"]
    lines = [
        f"hh-rlhf harmless-base, {f['n_heldout_pairs']} held-out pairs (split by dialogue), 95% intervals",
        f"  command: {command}",
        f"  margin win-rate vs base (start)  {pct(f['win_rate_vs_base'])} {ci(f['win_rate_vs_base_ci'])}"
        f"  exact {ci(f['win_rate_vs_base_exact_ci'])}  p(one-sided)={f['win_rate_vs_base_p_one_sided']:.2g}",
        f"  margin win-rate vs DPO reference {pct(f['win_rate_vs_sft'])} {ci(f['win_rate_vs_sft_ci'])}"
        f"  p={f['win_rate_vs_sft_p_one_sided']:.2g}",
        f"  shorter-response baseline        {pct(f['shorter_wins_accuracy'])}   longer-response "
        f"{pct(f['longer_wins_accuracy'])}",
        f"  win-rate minus shorter baseline  {100 * f['win_minus_shorter']:+.1f} pts "
        f"{pts(f['win_minus_shorter_ci'])} (paired bootstrap)",
        f"  fewer-words baseline             {pct(f['fewer_words_accuracy'])}; win-rate minus it "
        f"{100 * f['win_minus_fewer_words']:+.1f} pts {pts(f['win_minus_fewer_words_ci'])} (paired)",
        f"  preference accuracy              base {pct(f['accuracy_base'])} {ci(f['accuracy_base_ci'])} -> "
        f"candidate {pct(f['accuracy_candidate'])} {ci(f['accuracy_candidate_ci'])}; change "
        f"{100 * f['accuracy_change']:+.1f} pts {pts(f['accuracy_change_ci'])}",
        f"  length-normalised accuracy       base {pct(f['norm_accuracy_base'])} -> candidate "
        f"{pct(f['norm_accuracy_candidate'])}; change {100 * f['norm_accuracy_change']:+.1f} pts "
        f"{pts(f['norm_accuracy_change_ci'])}",
        f"  accuracy when chosen is shorter  base {pct(bl['chosen_shorter']['reference_accuracy'])} -> "
        f"{pct(bl['chosen_shorter']['candidate_accuracy'])} (n={bl['chosen_shorter']['n']})",
        f"  accuracy when chosen is longer   base {pct(bl['chosen_longer']['reference_accuracy'])} -> "
        f"{pct(bl['chosen_longer']['candidate_accuracy'])} (n={bl['chosen_longer']['n']})",
        f"  per-token NLL of chosen          base {f['nll_chosen_base']:.3f} -> candidate "
        f"{f['nll_chosen_candidate']:.3f}",
        "  wall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--test-share", type=float, default=0.25, help="share of dialogues held out")
    ap.add_argument("--val-share", type=float, default=0.03)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--warmup-steps", type=int, default=300)
    ap.add_argument("--warmup-length", type=int, default=256, help="tokens per warm-up conversation")
    ap.add_argument("--max-length", type=int, default=256, help="prompt + response tokens in DPO and scoring")
    ap.add_argument("--max-prompt-length", type=int, default=128, help="the end of the dialogue is kept")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--sft-steps", type=int, default=30, help="0: DPO starts from the base (its reference)")
    ap.add_argument("--dpo-steps", type=int, default=450, help="~2 epochs of the train side")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=5e-4)
    ld_help = "LD-DPO: weight of the tokens past the shorter answer's length (1 = plain DPO)"
    ap.add_argument("--ld-alpha", type=float, default=0.2, help=ld_help)
    ap.add_argument("--loss-type", default="sigmoid", help="TRL DPO loss_type")
    reuse_help = "reuse the base model of a --keep folder (skips the ~4 min build; its sizes win)"
    ap.add_argument("--base-from", type=Path, help=reuse_help)
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0 = default; 1 on a busy machine)",
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of the harness")
    ap.add_argument(
        "--keep", type=Path, help="keep the temporary project here (models, eval report)"
    )
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.warmup_steps, args.sft_steps, args.dpo_steps, args.hidden, args.vocab = (
            20,
            5,
            10,
            32,
            600,
        )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    import polars as pl

    from pipelines import evaluate, train
    from pipelines import model as base_model
    from pipelines.io import write_parquet_atomic
    from pipelines.layout import Layout
    from pipelines.model import ADAPTER_DIR
    from pipelines.schemas import PAIR_SCHEMA

    params = build_params(args)
    splits = split_by_dialogue(load_pairs(args.data), args.test_share, args.val_share)
    assert not {r["thread_id"] for r in splits["test"]} & {r["thread_id"] for r in splits["train"]}
    work = Path(tempfile.mkdtemp(prefix="hh-rlhf-dpo-"))
    layout = Layout(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    for name, rows in splits.items():
        write_parquet_atomic(pl.DataFrame(rows, schema=PAIR_SCHEMA), layout.pairs_split(name))
    print(
        f"pairs: train {len(splits['train'])}, val {len(splits['val'])}, held-out {len(splits['test'])}",
        flush=True,
    )

    timings: dict[str, float] = {}
    t = time.perf_counter()
    if args.base_from:
        shutil.copytree(Layout(args.base_from).base_model, layout.base_model)
    else:
        base_model.run(params, layout)
    timings["base_model"] = time.perf_counter() - t
    t = time.perf_counter()
    train.run(params, layout)
    timings["train"] = time.perf_counter() - t
    t = time.perf_counter()
    evaluate.run(params, layout)
    ev = json.loads((layout.eval_dir / "eval.json").read_text())
    timings["evaluate"] = time.perf_counter() - t

    # DPO's own effect: the candidate against the model before its DPO adapter (the candidate
    # folder minus that adapter); without an SFT phase that model is the base, already scored
    t = time.perf_counter()
    if args.sft_steps == 0:
        dpo_only = ev["test"]
    else:
        sft_only = work / "sft_only"
        shutil.copytree(layout.candidate, sft_only, ignore=shutil.ignore_patterns(ADAPTER_DIR))
        test = {"test": pl.read_parquet(layout.pairs_split("test"))}
        cand = evaluate.score_model(layout.candidate, test, params, layout.base_model)["test"]
        sft = evaluate.score_model(sft_only, test, params, layout.base_model)["test"]
        df = test["test"]
        dpo_only = evaluate.compare(
            cand, sft, df["chosen"].str.len_chars().to_numpy(), df["rejected"].str.len_chars().to_numpy(),
            n_boot=params.evaluate.bootstrap_samples, confidence=params.evaluate.confidence, seed=params.seed,
        )
    timings["dpo_vs_sft"] = time.perf_counter() - t

    f = figures(ev, dpo_only)
    f.update(word_baseline(layout, params))
    command = "python benchmarks/hh_rlhf_dpo.py " + " ".join(sys.argv[1:])
    print(show(f, timings, command.strip()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "command": command.strip(),
                    "figures": f,
                    "timings_s": timings,
                    "params": params.model_dump(mode="json", by_alias=True),
                },
                indent=2,
            )
        )
    if args.keep:
        shutil.rmtree(args.keep, ignore_errors=True)
        shutil.copytree(work, args.keep)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
