"""The base model, and everything that loads, scores or saves a policy.

Stage ``base_model`` writes ``data/models/base`` as a Hugging Face ``save_pretrained``
folder (weights, config, tokenizer with a chat template and a pad token):

- ``model.source: builtin`` (the default) trains a byte-level BPE tokenizer on the
  training corpus with ``tokenizers``, builds a small Llama-style model from a config
  and warms it up by full SFT from random init on the corpus conversations (prompt +
  chosen and prompt + rejected alike, so the base has no preference of its own).
- any other value is a Hugging Face id or a local folder: the model and tokenizer are
  loaded as they are (their chat template respected; a plain one added when missing;
  the pad token falls back to EOS) and saved, so DVC pins the exact weights used.

The rest of the module is shared by train, evaluate and promote: the device and
precision plan (bf16 on CUDA, 4-bit QLoRA when bitsandbytes is present), prompt fitting
(the same truncation in training and evaluation), the log-probability of a response
given a prompt, and loading a candidate folder (base + merged SFT adapter + DPO adapter).

Heavy libraries (torch, transformers, tokenizers, peft) are imported inside functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import library_warnings
from pipelines.io import atomic_dir, write_json_atomic

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

    from pipelines.config import Params, TrainParams
    from pipelines.layout import Layout

log = logging.getLogger(__name__)

BUILTIN = "builtin"
PAD, EOS = "<|pad|>", "<|end|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
SPECIAL_TOKENS = [PAD, EOS, *ROLE_TOKENS.values()]

BUILTIN_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}"
    "{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
"""Role markers are special tokens and no whitespace follows them, so the tokenized
prompt is always a prefix of the tokenized prompt + response (TRL's DPO relies on it)."""

FALLBACK_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '### ' + m['role'] | capitalize }}{{ ':\\n' + m['content'] + '\\n\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\\n' }}{% endif %}"
)
"""For a hub tokenizer that ships no chat template (plain-text role headers)."""

MANIFEST = "manifest.json"
ADAPTER_DIR = "adapter"
SFT_ADAPTER_DIR = "sft_adapter"
BUNDLED_BASE_DIR = "base"

Messages = list[dict[str, str]]


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DevicePlan:
    """Where and how a model trains: chosen from the hardware, never hard-coded."""

    device: str  # "cuda" | "cpu"
    bf16: bool
    load_in_4bit: bool

    @property
    def dtype_name(self) -> str:
        return "bfloat16" if self.bf16 else "float32"


def plan_device(
    train: TrainParams,
    *,
    builtin: bool,
    cuda: bool | None = None,
    bf16_supported: bool | None = None,
    bnb_available: bool | None = None,
) -> DevicePlan:
    """Pick device, precision and quantization; the hardware probes can be injected for tests.

    Why: the CUDA path (bf16, 4-bit QLoRA) cannot run on a CPU-only machine, so the
    decision is a pure function whose every branch a unit test can take.
    The builtin model is never quantized (it is tiny, and bitsandbytes 4-bit layers
    need hidden sizes the builtin shapes may not meet).
    """
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        return DevicePlan("cpu", bf16=train.precision == "bf16", load_in_4bit=False)
    if bf16_supported is None:
        import torch

        bf16_supported = torch.cuda.is_bf16_supported()
    if bnb_available is None:
        import importlib.util

        bnb_available = importlib.util.find_spec("bitsandbytes") is not None
    bf16 = train.precision == "bf16" or (train.precision == "auto" and bf16_supported)
    four_bit = train.load_in_4bit == "auto" and bnb_available and not builtin
    return DevicePlan("cuda", bf16=bf16, load_in_4bit=four_bit)


def apply_runtime(params: Params) -> None:
    """Make torch's CPU threads wait passively; set their count if ``runtime.cpu_threads`` asks.

    Why: OpenMP threads spin while they wait for each other. When other processes share
    the cores (two engineers, or Airflow running two tasks) a spinning thread burns the
    time slice its partner needs: measured here, a training step of the builtin model
    took 2.7 s with spinning threads and 0.54 s with passive ones, and the same 0.54 s
    on an idle machine. ``OMP_WAIT_POLICY`` is read when torch loads, so it is set only
    if torch is not imported yet and the user has not chosen a policy. Results do not
    depend on either setting beyond float rounding.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if params.runtime.cpu_threads > 0:
        import torch

        torch.set_num_threads(params.runtime.cpu_threads)


# --------------------------------------------------------------------------- files


def folder_fingerprint(folder: Path, exclude: frozenset[str] = frozenset()) -> str:
    """SHA-256 over the names and bytes of every file in ``folder`` (sorted, recursive).

    ``exclude`` names files (by base name) that describe rather than constitute the
    model, such as a candidate's manifest with its run id, so that identical weights
    always give the same fingerprint.
    """
    h = hashlib.sha256()
    files = (p for p in Path(folder).rglob("*") if p.is_file() and p.name not in exclude)
    for path in sorted(files):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(b"\0")
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- corpus


def pair_messages(prompt: Sequence[dict[str, Any]]) -> Messages:
    """Normalise a Parquet ``prompt`` cell (list of structs) to plain chat messages."""
    return [{"role": str(m["role"]), "content": str(m["content"] or "")} for m in prompt]


def corpus_conversations(pairs: pl.DataFrame, max_texts: int, seed: int) -> list[Messages]:
    """Prompt + chosen and prompt + rejected conversations of the training pairs.

    Both responses go in, so the warmed-up base learns the language of the corpus
    without learning which answer people preferred (that is DPO's job). A seeded sample
    caps the size.
    """
    import random

    convs: list[Messages] = []
    for row in pairs.select("prompt", "chosen", "rejected").iter_rows(named=True):
        msgs = pair_messages(row["prompt"])
        convs.append([*msgs, {"role": "assistant", "content": row["chosen"]}])
        convs.append([*msgs, {"role": "assistant", "content": row["rejected"]}])
    if len(convs) > max_texts:
        convs = random.Random(seed).sample(convs, max_texts)
    return convs


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: Sequence[str], vocab_size: int, min_frequency: int) -> Any:
    """Train a byte-level BPE tokenizer and wrap it as a transformers tokenizer.

    Byte-level: every string is encodable (no unknown token), which matters for
    user text full of names, codes and emoji. Special tokens: pad, end-of-turn (EOS) and
    one marker per chat role; the chat template is set on the returned tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)
    wrapped.chat_template = BUILTIN_CHAT_TEMPLATE
    return wrapped


def ensure_chat_and_pad(tokenizer: Any) -> Any:
    """Give a hub tokenizer what the pipeline needs: a chat template and a pad token.

    The tokenizer's own template is kept when it has one. A missing pad token becomes
    EOS (TRL does the same); padded positions are masked, so reusing EOS is harmless and
    avoids resizing the embeddings.
    """
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# --------------------------------------------------------------------------- prompts


def chat_ids(tokenizer: Any, messages: Messages, *, add_generation_prompt: bool = False) -> list[int]:
    """Token ids of ``messages`` rendered with the tokenizer's chat template."""
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    return list(out["input_ids"])


def fit_prompt(tokenizer: Any, messages: Messages, max_prompt_tokens: int) -> Messages:
    """Cut a prompt from the left until its rendering fits ``max_prompt_tokens``.

    Oldest turns go first; if the last turn alone is too long its text keeps its end.
    Why at the text level: TRL tokenizes messages itself, and evaluation must score the
    exact context training saw, so both call this function on the messages.
    """
    msgs = [dict(m) for m in messages]
    if not msgs:
        return msgs
    while len(msgs) > 1 and len(chat_ids(tokenizer, msgs, add_generation_prompt=True)) > max_prompt_tokens:
        msgs.pop(0)
    n = len(chat_ids(tokenizer, msgs, add_generation_prompt=True))
    if n <= max_prompt_tokens:
        return msgs
    content_ids = tokenizer(msgs[-1]["content"], add_special_tokens=False)["input_ids"]
    overhead = n - len(content_ids)
    keep = max(max_prompt_tokens - overhead, 0)
    while True:
        msgs[-1]["content"] = tokenizer.decode(content_ids[len(content_ids) - keep :]) if keep else ""
        if keep == 0 or len(chat_ids(tokenizer, msgs, add_generation_prompt=True)) <= max_prompt_tokens:
            return msgs
        keep -= 1


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the shared prefix of two id lists."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def encode_response(
    tokenizer: Any, prompt: Messages, response: str, max_length: int, max_prompt_length: int
) -> tuple[list[int], int]:
    """Ids of prompt + response and where the response starts, truncated like TRL does.

    The prompt is fitted with :func:`fit_prompt`; the response starts where the
    rendered prompt (with the generation prompt) and the full conversation diverge, and
    the sequence is cut at ``max_length`` from the end ("keep_start").
    """
    msgs = fit_prompt(tokenizer, prompt, max_prompt_length)
    p_ids = chat_ids(tokenizer, msgs, add_generation_prompt=True)
    f_ids = chat_ids(tokenizer, [*msgs, {"role": "assistant", "content": response}])
    start = common_prefix(p_ids, f_ids)
    return f_ids[:max_length], min(start, max_length)


def response_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Messages],
    responses: Sequence[str],
    *,
    max_length: int,
    max_prompt_length: int,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of log p(response token | everything before) per example, and the token counts.

    Sequences are sorted by length for padding efficiency and scored in batches with the
    model in eval mode; results come back in input order. The end-of-turn token closes
    each response and counts as one of its tokens, so "stopping here" is scored too.
    """
    import numpy as np
    import torch

    encoded = [
        encode_response(tokenizer, p, r, max_length, max_prompt_length)
        for p, r in zip(prompts, responses, strict=True)
    ]
    sums = np.zeros(len(encoded), dtype=np.float64)
    counts = np.zeros(len(encoded), dtype=np.int64)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            width = max(len(encoded[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            attn = torch.zeros((len(idx), width), dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.bool)
            for row, i in enumerate(idx):
                seq, start = encoded[i]
                ids[row, : len(seq)] = torch.tensor(seq)
                attn[row, : len(seq)] = 1
                mask[row, start : len(seq)] = True
            ids, attn, mask = ids.to(device), attn.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=attn).logits
            for row, i in enumerate(idx):
                # one row at a time in float32: a 150k-token vocabulary would not fit as a batch
                logp = torch.log_softmax(logits[row, :-1].float(), dim=-1)
                tok = logp.gather(-1, ids[row, 1:].unsqueeze(-1)).squeeze(-1)
                sel = mask[row, 1:]
                sums[i], counts[i] = float(tok[sel].sum()), int(sel.sum())
    model.train(was_training)
    return sums, counts


# --------------------------------------------------------------------------- builtin model


def build_builtin_model(params: Params, tokenizer: Any) -> Any:
    """A Llama-style causal LM from a config, randomly initialised with the global seed."""
    from transformers import LlamaConfig, LlamaForCausalLM, set_seed

    b = params.model.builtin
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=b.hidden_size,
        intermediate_size=b.intermediate_size,
        num_hidden_layers=b.num_layers,
        num_attention_heads=b.num_heads,
        num_key_value_heads=b.num_heads,
        max_position_embeddings=b.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    set_seed(params.seed)
    return LlamaForCausalLM(config)


def warm_up(model: Any, tokenizer: Any, conversations: Sequence[Messages], params: Params) -> dict[str, float]:
    """Full-parameter SFT (next-token loss on whole conversations) from random init.

    A plain, seeded PyTorch loop (on CUDA when present): AdamW, linear warm-up then
    cosine decay, gradient clipping. Why not a Trainer: no checkpoints are needed for a minute of work, and the
    loop stays deterministic and visible. Logs progress every tenth of the run.
    """
    import torch

    w = params.model.warmup
    if w.max_steps == 0 or not conversations:
        return {"warmup_steps": 0}
    seqs = [chat_ids(tokenizer, c)[: w.max_length] for c in conversations]
    seqs = [s for s in seqs if len(s) > 1]
    gen = torch.Generator().manual_seed(params.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=w.learning_rate, weight_decay=0.01, betas=(0.9, 0.95))
    warm = max(1, w.max_steps // 10)

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, w.max_steps - warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    pad_id = tokenizer.pad_token_id
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    model.train()
    first = last = float("nan")
    ema: float | None = None
    for step in range(w.max_steps):
        idx = torch.randint(len(seqs), (w.batch_size,), generator=gen).tolist()
        width = max(len(seqs[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, : len(seqs[i])] = torch.tensor(seqs[i])
            attn[row, : len(seqs[i])] = 1
        labels = ids.masked_fill(attn == 0, -100)
        ids, attn, labels = ids.to(device), attn.to(device), labels.to(device)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        value = float(loss.detach())
        first = value if step == 0 else first
        ema = value if ema is None else 0.9 * ema + 0.1 * value
        last = ema
        if (step + 1) % max(1, w.max_steps // 10) == 0 or step + 1 == w.max_steps:
            log.info("warm-up step %d/%d loss %.3f", step + 1, w.max_steps, ema)
    model.to("cpu")
    model.eval()
    return {"warmup_steps": w.max_steps, "warmup_loss_first": round(first, 4), "warmup_loss_last": round(last, 4)}


def build_builtin(params: Params, train_pairs: pl.DataFrame) -> tuple[Any, Any, dict[str, Any]]:
    """Tokenizer + model + warm-up on the training pairs; returns (model, tokenizer, metrics)."""
    from transformers import set_seed

    set_seed(params.seed)
    convs = corpus_conversations(train_pairs, params.model.warmup.max_texts, params.seed)
    texts = [m["content"] for c in convs for m in c]
    b = params.model.builtin
    tokenizer = train_tokenizer(texts, b.vocab_size, b.min_frequency)
    model = build_builtin_model(params, tokenizer)
    metrics: dict[str, Any] = {"corpus_conversations": len(convs), "vocab_size": len(tokenizer)}
    metrics.update(warm_up(model, tokenizer, convs, params))
    return model, tokenizer, metrics


# --------------------------------------------------------------------------- loading


def load_model_and_tokenizer(
    source: str | Path,
    *,
    revision: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    load_in_4bit: bool = False,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a hub id or a folder, ready for the pipeline.

    ``dtype`` is a torch dtype name, or ``auto`` to keep the checkpoint's own.
    ``load_in_4bit`` asks bitsandbytes for NF4 weights with bf16 compute (QLoRA); it is
    only ever set by :func:`plan_device` on CUDA. The tokenizer gets a chat template and
    a pad token if it lacks them, mirrored onto the model config.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    tokenizer = ensure_chat_and_pad(AutoTokenizer.from_pretrained(str(source), **kwargs))
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch_dtype, **kwargs)
    if not load_in_4bit:
        model.to(device)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def candidate_fingerprint(folder: Path) -> str:
    """Identity of a candidate's weights and tokenizer (its manifest excluded)."""
    return folder_fingerprint(folder, exclude=frozenset({MANIFEST}))


def make_adapter_portable(adapter_dir: Path, base_source: str) -> None:
    """Replace the absolute training path PEFT records as the adapter's base with the source.

    Why: the recorded path is where the base happened to sit during training (another
    machine's temp folder); the source (``builtin`` or a hub id) is what a reader can
    use, and it keeps the candidate fingerprint independent of the project root.
    """
    cfg_path = Path(adapter_dir) / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = base_source
    write_json_atomic(cfg_path, cfg)


def is_candidate(folder: Path) -> bool:
    """A candidate folder (adapters over a base) rather than a plain model folder."""
    return (Path(folder) / MANIFEST).exists()


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))


def load_policy(
    folder: str | Path,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    base_fallback: Path | None = None,
) -> tuple[Any, Any]:
    """Load a plain model folder, or a candidate: base, SFT adapter merged, DPO adapter merged.

    A candidate's base is its bundled copy (builtin bases are bundled, being small and
    rebuilt whenever the corpus changes), else its recorded source (hub id or folder),
    else ``base_fallback``. Adapters are merged for fast scoring; nothing is written.
    """
    folder = Path(folder)
    if not is_candidate(folder):
        return load_model_and_tokenizer(folder, device=device, dtype=dtype)
    from peft import PeftModel
    from transformers import AutoTokenizer

    manifest = read_manifest(folder)
    base = manifest["base"]
    if (folder / BUNDLED_BASE_DIR).exists():
        base_src: str | Path = folder / BUNDLED_BASE_DIR
    elif base.get("source") and base["source"] != BUILTIN and not Path(base["source"]).is_absolute():
        base_src = base["source"]
    elif base_fallback is not None:
        base_src = base_fallback
    else:
        base_src = base["source"]
    model, _ = load_model_and_tokenizer(
        base_src,
        revision=base.get("revision"),
        device=device,
        dtype=dtype,
        trust_remote_code=bool(base.get("trust_remote_code", False)),
    )
    tokenizer = ensure_chat_and_pad(AutoTokenizer.from_pretrained(str(folder)))
    with library_warnings.hidden("is_gradient_checkpointing"):  # PEFT reads the old property name
        for name in (SFT_ADAPTER_DIR, ADAPTER_DIR):
            if (folder / name).exists():
                model = PeftModel.from_pretrained(model, str(folder / name)).merge_and_unload()
    model.eval()
    return model, tokenizer


# --------------------------------------------------------------------------- stage


def run(params: Params, layout: Layout) -> dict[str, Any]:
    """Stage ``base_model``: write ``data/models/base`` and ``metrics/base_model.json``."""
    apply_runtime(params)  # before torch loads
    import polars as pl
    from transformers import set_seed

    t0 = time.perf_counter()
    set_seed(params.seed)
    source = params.model.source
    if source == BUILTIN:
        train_pairs = pl.read_parquet(layout.pairs_split("train"))
        model, tokenizer, metrics = build_builtin(params, train_pairs)
    else:
        model, tokenizer = load_model_and_tokenizer(
            source, revision=params.model.revision, dtype="auto", trust_remote_code=params.model.trust_remote_code
        )
        metrics = {"vocab_size": len(tokenizer)}
    with atomic_dir(layout.base_model) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "source.json", {"source": source, "revision": params.model.revision})
    metrics.update(
        {
            "source": source,
            "n_params": int(sum(p.numel() for p in model.parameters())),
            "fingerprint": folder_fingerprint(layout.base_model),
        }
    )
    write_json_atomic(layout.metrics("base_model"), metrics)
    log.info("base model %s written to %s in %.1fs", source, layout.base_model, time.perf_counter() - t0)
    return metrics
