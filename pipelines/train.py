"""Stage ``train``: LoRA SFT on the chosen responses, then LoRA DPO, on the train split.

Command lines::

    python -m pipelines train                                 # params.yaml as is
    python -m pipelines train --set train.dpo.beta=0.2 --set train.dpo.max_steps=200

The recipe, and why:

1. **SFT** (TRL ``SFTTrainer``, a LoRA adapter, loss on the chosen response only) moves
   the base towards the kind of answer people keep. The adapter is then *merged* into
   the weights; ``train.sft.max_steps: 0`` skips this phase.
2. **DPO** (TRL ``DPOTrainer`` with a fresh ``peft_config`` and ``ref_model=None``): the
   reference is the same network with the adapter disabled, i.e. exactly the SFT model,
   which is the reference DPO's derivation asks for, with no second copy in memory.

The candidate folder (``data/models/candidate``) holds both adapters, the tokenizer and
a ``manifest.json`` (base, data hashes, params, MLflow run); for the builtin base it also
bundles a copy of the base (a few MB), so a registered candidate loads on its own even
after the base is rebuilt. :func:`pipelines.model.load_policy` reassembles it.

Hardware is detected (:func:`pipelines.model.plan_device`): fp32 on CPU; bf16 on CUDA;
4-bit QLoRA when CUDA and bitsandbytes are present and the base is not builtin.

Checkpoints go to ``.cache/train/<key>/`` (outside DVC's outputs, which DVC deletes
before a stage runs), where the key hashes the base, the data and every training
parameter: a killed run started again with the same inputs resumes from the last
complete checkpoint (and logs into the same MLflow run); other inputs start afresh.
The folder is removed after success.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import library_warnings
from pipelines.io import exclusive_lock, is_locked, write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    import polars as pl

    from pipelines.config import Params
    from pipelines.layout import Layout
    from pipelines.model import DevicePlan

log = logging.getLogger(__name__)

SFT_FINAL = "final"
RUN_ID_FILE = "mlflow_run_id"
RUN_LOCK = ".lock"
"""Held (flock) by the process training into a checkpoint folder, for the whole run."""


class TrainingInProgress(RuntimeError):
    """Another process is training with the same inputs in this project right now."""


# --------------------------------------------------------------------------- pure helpers


def checkpoint_root(layout: Layout) -> Path:
    """Where resumable checkpoints live (git-ignored, not a DVC output)."""
    return layout.root / ".cache" / "train"


def run_key(params: Params, base_fingerprint: str, data_hashes: dict[str, str]) -> str:
    """Identity of a training run: same key, same inputs, so a checkpoint may be resumed."""
    blob = json.dumps(
        {
            "seed": params.seed,
            "model": params.model.model_dump(mode="json"),
            "train": params.train.model_dump(mode="json"),
            "base": base_fingerprint,
            "data": data_hashes,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest ``checkpoint-N`` whose trainer state was written (the Trainer writes it last).

    A checkpoint cut short by a kill has no (or an unreadable) ``trainer_state.json``;
    it is skipped so the resume starts from a checkpoint that loads.
    """
    if not folder.exists():
        return None
    found: list[tuple[int, Path]] = []
    for child in folder.iterdir():
        if child.is_dir() and child.name.startswith("checkpoint-"):
            try:
                step = int(child.name.split("-", 1)[1])
                json.loads((child / "trainer_state.json").read_text(encoding="utf-8"))
            except (ValueError, OSError):
                continue
            found.append((step, child))
    return max(found)[1] if found else None


def flatten(prefix: str, obj: Any) -> dict[str, Any]:
    """``{"train": {"dpo": {"beta": 0.1}}}`` -> ``{"train.dpo.beta": 0.1}`` (for MLflow params)."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: json.dumps(obj) if isinstance(obj, list) else obj}


def train_loss(reported: float, log_history: list[dict[str, Any]], *, resumed: bool) -> float:
    """The mean training loss of the whole run, also when it was resumed from a checkpoint.

    Why: the Trainer averages only the steps of its own call, so a retry that resumes
    from the final checkpoint (the run crashed after DPO, e.g. while logging to MLflow)
    trains no step and reports 0.0, and one resumed halfway reports the second half only.
    The per-window losses logged so far (restored with the checkpoint) cover every step.
    """
    if not resumed:
        return float(reported)
    losses = [float(e["loss"]) for e in log_history if "loss" in e]
    return sum(losses) / len(losses) if losses else math.nan


def sft_records(pairs: pl.DataFrame, tokenizer: Any, max_prompt_length: int) -> list[dict[str, Any]]:
    """Prompt-completion examples (chosen responses) with prompts fitted like evaluation's."""
    from pipelines.model import fit_prompt, pair_messages

    return [
        {
            "prompt": fit_prompt(tokenizer, pair_messages(r["prompt"]), max_prompt_length),
            "completion": [{"role": "assistant", "content": r["chosen"]}],
        }
        for r in pairs.select("prompt", "chosen").iter_rows(named=True)
    ]


def dpo_records(pairs: pl.DataFrame, tokenizer: Any, max_prompt_length: int) -> list[dict[str, Any]]:
    """Conversational preference examples for TRL (prompt messages, chosen/rejected turns)."""
    from pipelines.model import fit_prompt, pair_messages

    return [
        {
            "prompt": fit_prompt(tokenizer, pair_messages(r["prompt"]), max_prompt_length),
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in pairs.select("prompt", "chosen", "rejected").iter_rows(named=True)
    ]


def _common_args(params: Params, plan: DevicePlan, output_dir: Path, max_steps: int, lr: float) -> dict[str, Any]:
    """TrainingArguments shared by both phases (device, precision, schedule, checkpoints)."""
    t = params.train
    return {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": t.batch_size,
        "per_device_eval_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "learning_rate": lr,
        "max_steps": max_steps if max_steps > 0 else -1,
        "warmup_steps": t.warmup_ratio,
        "lr_scheduler_type": "cosine",
        "logging_steps": t.logging_steps,
        "save_strategy": "steps",
        "save_steps": t.save_steps,
        "save_total_limit": 2,
        "seed": params.seed,
        "data_seed": params.seed,
        "use_cpu": plan.device == "cpu",
        "bf16": plan.bf16,
        "fp16": False,
        # checkpointing trades compute for memory: worth it only for big models on a GPU
        "activation_checkpointing": plan.device == "cuda" and params.model.source != "builtin",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "max_length": t.max_length,
    }


def lora_config(params: Params) -> Any:
    """The LoRA adapter shape from params (causal LM task)."""
    from peft import LoraConfig

    lo = params.train.lora
    return LoraConfig(
        r=lo.r,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        target_modules=list(lo.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


# --------------------------------------------------------------------------- callbacks


def _callbacks(phase: str, total_steps: int) -> list[Any]:
    """Console progress and MLflow step metrics, as Trainer callbacks."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """One console line per log event; step metrics to the active MLflow run."""

        def __init__(self) -> None:
            self.t0 = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            import mlflow

            logs = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
            if not logs:
                return
            keys = ("loss", "eval_loss", "rewards/accuracies", "eval_rewards/accuracies", "rewards/margins")
            shown = " ".join(f"{k}={logs[k]:.4f}" for k in keys if k in logs)
            total = state.max_steps or total_steps
            log.info("%s step %d/%d %s (%.0fs)", phase, state.global_step, total, shown, time.perf_counter() - self.t0)
            clean = {f"{phase}/{k.replace('@', '_')}": v for k, v in logs.items()}
            if mlflow.active_run() is not None:
                mlflow.log_metrics(clean, step=state.global_step)

    return [Progress()]


def _quiet(trainer: Any) -> None:
    """Drop the Trainer's raw dict printer: our Progress callback already logs each step."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


# --------------------------------------------------------------------------- phases


def _train_sft(model: Any, tokenizer: Any, train_df: pl.DataFrame, params: Params, plan: DevicePlan, work: Path) -> Any:
    """LoRA SFT on chosen responses; returns the base with the adapter merged in.

    A finished phase leaves ``work/sft/final`` (the adapter), so a resumed run skips it.
    """
    from datasets import Dataset
    from peft import PeftModel
    from trl import SFTConfig, SFTTrainer

    sft_dir = work / "sft"
    final = sft_dir / SFT_FINAL
    if (final / "adapter_config.json").exists():
        log.info("SFT phase already complete in %s; reusing its adapter", final)
        return PeftModel.from_pretrained(model, str(final)).merge_and_unload()
    s = params.train.sft
    args = SFTConfig(**_common_args(params, plan, sft_dir, s.max_steps, s.learning_rate), completion_only_loss=True)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(sft_records(train_df, tokenizer, params.train.max_prompt_length)),
        processing_class=tokenizer,
        peft_config=lora_config(params),
        callbacks=_callbacks("sft", s.max_steps),
    )
    _quiet(trainer)
    resume = last_complete_checkpoint(sft_dir)
    if resume is not None:
        log.info("resuming SFT from %s", resume)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    from pipelines.model import atomic_dir

    with atomic_dir(final) as tmp:
        trainer.model.save_pretrained(str(tmp))
    return trainer.model.merge_and_unload()


def _final_eval(trainer: Any) -> dict[str, Any]:
    """Validation metrics at the last step: from the log when the Trainer just evaluated, else fresh.

    Why: with ``eval_steps`` dividing the step count the Trainer has already evaluated
    the final weights; doing it again would cost a full pass over the val split.
    """
    step = trainer.state.global_step
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry and entry.get("step") == step:
            return entry
    return trainer.evaluate()


def _train_dpo(
    model: Any, tokenizer: Any, train_df: pl.DataFrame, val_df: pl.DataFrame, params: Params, plan: DevicePlan, work: Path
) -> tuple[Any, dict[str, Any]]:
    """LoRA DPO with the adapter-disabled model as reference; returns (trainer, final metrics)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    d, t = params.train.dpo, params.train
    dpo_dir = work / "dpo"
    args = DPOConfig(
        **_common_args(params, plan, dpo_dir, d.max_steps, d.learning_rate),
        num_train_epochs=d.num_epochs,
        beta=d.beta,
        loss_type=d.loss_types,
        loss_weights=d.loss_weights,
        label_smoothing=d.label_smoothing,
        ld_alpha=d.ld_alpha,
        eval_strategy="steps" if val_df.height else "no",
        eval_steps=t.eval_steps,
    )
    val = Dataset.from_list(dpo_records(val_df, tokenizer, t.max_prompt_length)) if val_df.height else None
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=Dataset.from_list(dpo_records(train_df, tokenizer, t.max_prompt_length)),
        eval_dataset=val,
        processing_class=tokenizer,
        peft_config=lora_config(params),
        callbacks=_callbacks("dpo", d.max_steps),
    )
    _quiet(trainer)
    resume = last_complete_checkpoint(dpo_dir)
    if resume is not None:
        log.info("resuming DPO from %s", resume)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    metrics: dict[str, Any] = {
        "dpo_steps": int(trainer.state.global_step),
        "dpo_train_loss": round(train_loss(result.training_loss, trainer.state.log_history, resumed=resume is not None), 6),
        "resumed_from_step": int(resume.name.split("-")[1]) if resume else 0,
    }
    if val is not None:
        ev = _final_eval(trainer)
        for key in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins"):
            if key in ev:
                metrics["val_" + key.removeprefix("eval_").replace("/", "_")] = round(float(ev[key]), 6)
    return trainer, metrics


# --------------------------------------------------------------------------- stage


def _load_splits(layout: Layout) -> tuple[pl.DataFrame, pl.DataFrame]:
    import polars as pl

    train_df = pl.read_parquet(layout.pairs_split("train"))
    val_path = layout.pairs_split("val")
    val_df = pl.read_parquet(val_path) if val_path.exists() else train_df.head(0)
    if train_df.height == 0:
        raise ValueError(f"no training pairs in {layout.pairs_split('train')}")
    return train_df, val_df


def _start_mlflow_run(params: Params, layout: Layout, work: Path) -> Any:
    """Start (or, when resuming, reopen) the training run in our tracking store."""
    import mlflow

    from pipelines import tracking

    exp_id = tracking.ensure_experiment(params, layout)
    run_file = work / RUN_ID_FILE
    if run_file.exists():
        run_id = run_file.read_text(encoding="utf-8").strip()
        try:
            return mlflow.start_run(run_id=run_id)
        except Exception:  # the store was reset since the checkpoint: start a new run
            log.warning("MLflow run %s not found; starting a new run", run_id)
    run = mlflow.start_run(experiment_id=exp_id, run_name=f"train-{work.name}")
    write_text_atomic(run_file, run.info.run_id)
    return run


def run(params: Params, layout: Layout) -> dict[str, Any]:
    """Stage ``train``: write ``data/models/candidate`` and ``metrics/train.json``."""
    from pipelines.model import apply_runtime

    apply_runtime(params)  # before torch loads
    import datasets
    import mlflow
    from transformers import set_seed

    from pipelines import tracking
    from pipelines.model import (
        ADAPTER_DIR,
        BUILTIN,
        BUNDLED_BASE_DIR,
        MANIFEST,
        SFT_ADAPTER_DIR,
        atomic_dir,
        candidate_fingerprint,
        folder_fingerprint,
        load_model_and_tokenizer,
        make_adapter_portable,
        plan_device,
    )

    datasets.disable_progress_bars()
    t0 = time.perf_counter()
    builtin = params.model.source == BUILTIN
    plan = plan_device(params.train, builtin=builtin)
    train_df, val_df = _load_splits(layout)
    base_fp = folder_fingerprint(layout.base_model)
    data = tracking.data_version(
        layout, {"train_pairs": layout.pairs_split("train"), "val_pairs": layout.pairs_split("val")}
    )
    key = run_key(params, base_fp, {k: str(v) for k, v in data.items()})
    with _checkpoint_folder(layout, key) as work:
        log.info("train: %d pairs, %d val, device %s %s, key %s", train_df.height, val_df.height,
                 plan.device, plan.dtype_name + (" 4-bit" if plan.load_in_4bit else ""), key)

        tracking.configure(layout)
        with _start_mlflow_run(params, layout, work) as active, library_warnings.hidden("is_gradient_checkpointing"):
            run_id = active.info.run_id
            if not active.data.params:
                mlflow.log_params(flatten("", {"seed": params.seed, "model": params.model.model_dump(mode="json"),
                                               "train": params.train.model_dump(mode="json")}))
            mlflow.set_tags({
                "stage": "train",
                "git_commit": tracking.git_commit(layout.root),
                "base_fingerprint": base_fp,
                "device": plan.device,
                "precision": plan.dtype_name,
                "load_in_4bit": str(plan.load_in_4bit),
                "n_train_pairs": str(train_df.height),
                "n_val_pairs": str(val_df.height),
                **{f"data.{k}": str(v) for k, v in data.items()},
            })
            set_seed(params.seed)
            model, tokenizer = load_model_and_tokenizer(
                layout.base_model, device=plan.device, dtype=plan.dtype_name, load_in_4bit=plan.load_in_4bit
            )
            if plan.load_in_4bit:
                from peft import prepare_model_for_kbit_training

                model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
            if params.train.sft.max_steps > 0:
                model = _train_sft(model, tokenizer, train_df, params, plan, work)
            trainer, metrics = _train_dpo(model, tokenizer, train_df, val_df, params, plan, work)

            manifest = {
                "format": 1,
                "base": {
                    "source": params.model.source,
                    "revision": params.model.revision,
                    "trust_remote_code": params.model.trust_remote_code,
                    "fingerprint": base_fp,
                },
                "sft_adapter": SFT_ADAPTER_DIR if params.train.sft.max_steps > 0 else None,
                "adapter": ADAPTER_DIR,
                "data": data,
                "params": {"seed": params.seed, "train": params.train.model_dump(mode="json")},
                "mlflow_run_id": run_id,
                "metrics": metrics,
            }
            with atomic_dir(layout.candidate) as tmp:
                trainer.model.save_pretrained(str(tmp / ADAPTER_DIR))
                make_adapter_portable(tmp / ADAPTER_DIR, params.model.source)
                tokenizer.save_pretrained(str(tmp))
                if params.train.sft.max_steps > 0:
                    shutil.copytree(work / "sft" / SFT_FINAL, tmp / SFT_ADAPTER_DIR)
                    make_adapter_portable(tmp / SFT_ADAPTER_DIR, params.model.source)
                if builtin:
                    shutil.copytree(layout.base_model, tmp / BUNDLED_BASE_DIR)
                write_json_atomic(tmp / MANIFEST, manifest)
            candidate_fp = candidate_fingerprint(layout.candidate)
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})
            mlflow.set_tag("candidate_fingerprint", candidate_fp)
            mlflow.log_artifacts(str(layout.candidate), artifact_path="candidate")

        metrics.update({
            "n_train_pairs": train_df.height,
            "n_val_pairs": val_df.height,
            "device": plan.device,
            "precision": plan.dtype_name,
            "candidate_fingerprint": candidate_fp,
            "mlflow_run_id": run_id,
        })
        write_json_atomic(layout.metrics("train"), metrics)
        shutil.rmtree(work, ignore_errors=True)
        log.info("candidate written to %s in %.1fs", layout.candidate, time.perf_counter() - t0)
        return metrics


@contextlib.contextmanager
def _checkpoint_folder(layout: Layout, key: str) -> Iterator[Path]:
    """The run's checkpoint folder, locked (flock) while the run goes on.

    Another run with the same inputs stops at once (it would write the same checkpoints);
    checkpoints of other inputs can never be resumed and go, unless their run is alive.
    """
    root = checkpoint_root(layout)
    work = root / key
    with exclusive_lock(work / RUN_LOCK) as mine:
        if not mine:
            raise TrainingInProgress(
                f"another train run with the same inputs is running in {layout.root} (checkpoints {work}); "
                "wait for it, or run the second one in its own project folder"
            )
        _drop_stale_checkpoints(root, keep=key)
        yield work


def _drop_stale_checkpoints(root: Path, keep: str) -> None:
    """Checkpoints of other inputs can never be resumed; those of a run still going (locked) stay."""
    for stale in root.iterdir():
        if stale.name != keep and not is_locked(stale / RUN_LOCK):
            shutil.rmtree(stale, ignore_errors=True)
