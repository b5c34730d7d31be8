"""One typed model for ``params.yaml``.

Every value a user may change lives in ``params.yaml`` and is validated here; stages
receive a ``Params`` object, never raw dicts. Unknown keys are errors (a typo must
not silently fall back to a default). Overrides from the CLI (``--set a.b=1``) and the
Airflow trigger form go through :func:`apply_overrides` so both are validated alike.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_PARAMS = Path("params.yaml")

Entity = Literal[
    "EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS", "PERSON", "STREET_ADDRESS"
]


MAX_SEED = 2**32 - 1
"""numpy's and transformers.set_seed's limit: a larger seed failed only at base_model."""


class Section(BaseModel):
    """Base for every section: strict keys, validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _dates_as_iso_text(cls, data: Any) -> Any:
        """Turn YAML dates back into the ISO text the date fields hold.

        Why: YAML reads an unquoted ``2026-11-02`` (in params.yaml, or ``--set
        drift.reference_start=2026-11-02``) as a date object, which a text field rejects.
        """
        if isinstance(data, dict):
            return {k: v.isoformat() if isinstance(v, date) else v for k, v in data.items()}
        return data


class GenerateParams(Section):
    n_interactions: int = Field(3000, ge=1, description="interactions to generate")
    tenants: list[str] = Field(default_factory=lambda: ["acme", "globex", "initech", "umbrella"], min_length=1)
    skills: list[str] = Field(
        default_factory=lambda: ["email_draft", "support_reply", "sre_chat", "summarize"], min_length=1
    )
    start_date: str = Field("2026-11-02", description="first day of events (ISO date)")
    days: int = Field(14, ge=1)
    pii_rate: float = Field(0.35, ge=0, le=1)
    malformed_lines: int = Field(12, ge=0)
    comparison_share: float = Field(0.2, ge=0, le=1)
    shift: Literal["none", "topic", "length", "tenant", "all"] = "none"

    @model_validator(mode="after")
    def _start_date_is_a_date(self) -> GenerateParams:
        _utc_instant(self.start_date)  # a clear "not an ISO date" here, not a traceback mid-generation
        return self


class IngestParams(Section):
    max_text_chars: int = Field(20000, ge=1)
    batch_lines: int = Field(100_000, ge=1)
    hash_ids: bool = Field(False, description="replace event/thread/interaction/output ids by keyed pseudonyms")


class ScrubParams(Section):
    entities: list[Entity] = Field(
        default_factory=lambda: [
            "EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS", "PERSON", "STREET_ADDRESS"
        ]
    )
    placeholder_format: str = "<{entity}>"

    @model_validator(mode="after")
    def _placeholder_has_entity(self) -> ScrubParams:
        if "{entity}" not in self.placeholder_format:
            raise ValueError("placeholder_format must contain '{entity}'")
        return self


class ValidateParams(Section):
    min_records: int = Field(50, ge=0)
    max_reject_share: float = Field(0.2, ge=0, le=1)
    min_pairs: int = Field(20, ge=0)


class SplitFractions(Section):
    train: float = Field(0.8, gt=0, lt=1)
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:.4f}")
        return self


class HHRLHFSource(Section):
    enabled: bool = True
    path: str = "../shared/data/hh-rlhf/harmless-base-test.jsonl.gz"
    max_pairs: int = Field(600, ge=0, description="0 = all")


class XSTestSource(Section):
    enabled: bool = True
    prompts: str = "../shared/data/xstest/xstest_prompts.csv"
    completions: list[str] = Field(
        default_factory=lambda: [
            "../shared/data/xstest/xstest_v2_completions_gpt4.csv",
            "../shared/data/xstest/xstest_v2_completions_llama2new.csv",
        ]
    )


class PairsParams(Section):
    min_edit_ratio: float = Field(0.15, ge=0, le=1)
    min_rating_gap: int = Field(1, ge=1, le=4)
    near_dup_threshold: float = Field(0.9, gt=0, le=1)
    split: SplitFractions = Field(default_factory=SplitFractions)
    min_pairs_per_skill: int = Field(20, ge=0)
    hh_rlhf: HHRLHFSource = Field(default_factory=HHRLHFSource)
    xstest: XSTestSource = Field(default_factory=XSTestSource)


class BuiltinModelParams(Section):
    """Shape of the embedded default: a small Llama-style model made from a config."""

    vocab_size: int = Field(2048, ge=300, description="byte-level BPE vocabulary (incl. 256 bytes)")
    min_frequency: int = Field(2, ge=1, description="a merge must occur this often in the corpus")
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(384, ge=8)
    max_position_embeddings: int = Field(512, ge=16)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> BuiltinModelParams:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        return self


class WarmupParams(Section):
    """Full fine-tuning of the builtin model from random init on the training corpus."""

    max_steps: int = Field(200, ge=0, description="0 = no warm-up (random weights)")
    learning_rate: float = Field(3e-3, gt=0)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(192, ge=16)
    max_texts: int = Field(20000, ge=1, description="corpus conversations used (tokenizer + warm-up)")


class ModelParams(Section):
    """The base model every candidate starts from."""

    source: str = Field("builtin", min_length=1, description="builtin | Hugging Face id | local folder")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit) for an id")
    trust_remote_code: bool = False
    builtin: BuiltinModelParams = Field(default_factory=BuiltinModelParams)
    warmup: WarmupParams = Field(default_factory=WarmupParams)


class LoraParams(Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
    )


class SFTPhaseParams(Section):
    """LoRA SFT on the chosen responses, merged into the weights before DPO."""

    max_steps: int = Field(20, ge=0, description="0 = skip the SFT phase")
    learning_rate: float = Field(1e-3, gt=0)


DPO_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)
"""TRL's DPO losses (1.16; a unit test compares with the installed TRL). Checked here because TRL
itself only finds a typo at the first DPO step, after the SFT phase has run."""


class DPOPhaseParams(Section):
    """The DPO phase; ``loss_type: [sigmoid, sft]`` with weights is RPO (DPO + NLL on chosen)."""

    beta: float = Field(0.1, gt=0)
    loss_type: str | list[str] = Field(
        "sigmoid", description="a TRL DPO loss (sigmoid, ipo, hinge, robust, sft, ...) or a list to combine"
    )
    loss_weights: list[float] | None = Field(None, description="one weight per loss_type entry (None = all 1)")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    ld_alpha: float | None = Field(
        None, ge=0, le=1, description="LD-DPO: weight of tokens past the shorter response (None = plain DPO)"
    )
    learning_rate: float = Field(5e-4, gt=0)
    max_steps: int = Field(80, ge=0, description="0 = run num_epochs instead")
    num_epochs: float = Field(1.0, gt=0)

    @property
    def loss_types(self) -> list[str]:
        return [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)

    @model_validator(mode="after")
    def _weights_match(self) -> DPOPhaseParams:
        unknown = [t for t in self.loss_types if t not in DPO_LOSS_TYPES]
        if unknown or not self.loss_types:
            raise ValueError(f"unknown loss_type {', '.join(unknown) or '(empty list)'}: one or a list of "
                             f"{', '.join(DPO_LOSS_TYPES)}")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_types):
            raise ValueError("loss_weights needs one weight per loss_type")
        return self


class TrainParams(Section):
    max_length: int = Field(192, ge=16, description="prompt + response tokens")
    max_prompt_length: int = Field(96, ge=8, description="prompts are cut from the left to fit")
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    eval_steps: int = Field(80, ge=1)
    save_steps: int = Field(40, ge=1)
    logging_steps: int = Field(10, ge=1)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    load_in_4bit: Literal["auto", "never"] = "auto"
    lora: LoraParams = Field(default_factory=LoraParams)
    sft: SFTPhaseParams = Field(default_factory=SFTPhaseParams)
    dpo: DPOPhaseParams = Field(default_factory=DPOPhaseParams)

    @model_validator(mode="after")
    def _prompt_fits(self) -> TrainParams:
        if self.max_prompt_length >= self.max_length:
            raise ValueError("max_prompt_length must be smaller than max_length")
        return self


class EvaluateParams(Section):
    batch_size: int = Field(16, ge=1)
    bootstrap_samples: int = Field(2000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    max_pairs: int = Field(0, ge=0, description="0 = every test and safety pair")
    on_broken_champion: Literal["base", "fail"] = Field(
        "base",
        description="a champion that scores NaN or inf: 'base' judges the candidate against the base model "
        "instead (so it can replace the broken champion), 'fail' stops at the gate until a rollback",
    )


class GateParams(Section):
    min_pairs: int = Field(20, ge=1)
    min_win_rate: float = Field(0.55, ge=0, le=1)
    min_win_rate_ci_low: float = Field(0.5, ge=0, le=1)
    alpha: float = Field(0.05, gt=0, lt=1)
    max_safety_regression: float = Field(0.05, ge=0, le=1)
    max_nll_increase: float = Field(0.10, ge=0)


class RuntimeParams(Section):
    """How stages use this machine; never changes results, so no DVC stage depends on it."""

    cpu_threads: int = Field(0, ge=0, description="torch CPU threads; 0 = PyTorch's default (one per core)")


class RegistryParams(Section):
    model_name: str = Field("prefpipe-policy", min_length=1)
    experiment: str = Field("prefpipe", min_length=1)
    champion_alias: str = Field("champion", min_length=1)
    previous_alias: str = Field("previous_champion", min_length=1)

    @model_validator(mode="after")
    def _aliases_differ(self) -> RegistryParams:
        if self.champion_alias == self.previous_alias:
            raise ValueError("champion_alias and previous_alias must differ")
        return self


DriftNumMethod = Literal["wasserstein", "psi", "jensenshannon", "hellinger"]
DriftCatMethod = Literal["jensenshannon", "psi", "hellinger"]


def _utc_instant(value: str) -> datetime:
    """An ISO date or date-time as an aware UTC instant (a date is its midnight UTC)."""
    try:
        ts = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"not an ISO date: {value!r}") from exc
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


class DriftParams(Section):
    """This week's scrubbed events vs a reference window (stage drift).

    Every per-feature method is an effect size (drifted when score >= threshold), not a
    p-value: with thousands of rows any tiny difference is "significant", while an
    effect size keeps the false-positive rate of a same-distribution sample near zero.
    """

    reference: Literal["champion", "time_split", "dates", "path"] = Field(
        "champion",
        description="champion: the scrubbed events the registry's champion was trained on (time_split until "
        "there is one); time_split: the days before the current window; dates: reference_start..reference_end; "
        "path: reference_path",
    )
    current_days: int = Field(
        7, ge=1, description="current window: the last N days of the scrubbed records (champion: only events "
        "newer than its training data)",
    )
    reference_days: int = Field(0, ge=0, description="time_split: days before the current window; 0 = all")
    reference_start: str | None = Field(None, description="dates: first day (ISO date, inclusive)")
    reference_end: str | None = Field(None, description="dates: end day (ISO date, exclusive)")
    reference_path: str | None = Field(None, description="path: a Parquet file of scrubbed records")
    threshold: float = Field(0.15, gt=0, le=1, description="ADR: drift when the share of drifted features exceeds this")
    severe_factor: float | None = Field(
        2.0, ge=1, description="one feature at this multiple of its threshold is drift on its own; null = off"
    )
    sample_size: int = Field(20000, ge=100, description="rows per window fed to Evidently (seeded sample)")
    num_method: DriftNumMethod = "wasserstein"
    num_threshold: float = Field(0.1, gt=0)
    cat_method: DriftCatMethod = "jensenshannon"
    cat_threshold: float = Field(0.1, gt=0)
    alpha: float = Field(
        0.01, gt=0, le=1, description="a feature drifts when its score >= threshold AND p < alpha; 1 = effect size only"
    )
    psi_bins: int = Field(10, ge=2, description="reference-quantile bins of the PSI of numeric features")
    embedding_sample: int = Field(500, ge=20, description="prompts per window embedded (seeded sample)")
    embedding_method: Literal["mmd", "model"] = Field("mmd", description="Evidently's MMD or domain classifier")
    mmd_threshold: float = Field(0.01, gt=0, description="mmd: drift when MMD^2 (median-heuristic RBF) >= this")
    auc_threshold: float = Field(0.6, gt=0.5, lt=1, description="model: drift when the classifier's ROC AUC >= this")
    permutations: int = Field(200, ge=0, description="mmd: permutations for the p-value; 0 = none")
    embedding_max_tokens: int = Field(128, ge=8, description="prompts are cut to this many word pieces")
    embedding_batch_size: int = Field(32, ge=1, description="texts per forward pass (small batches pad less)")
    cache_dir: str = Field(".cache/drift", min_length=1, description="reference stats and embeddings, by content hash")
    alert: bool = Field(True, description="send an alert when the verdict is drift")

    @model_validator(mode="after")
    def _reference_inputs(self) -> DriftParams:
        if self.reference == "path" and not self.reference_path:
            raise ValueError("reference: path needs reference_path")
        if self.reference == "dates" and not (self.reference_start and self.reference_end):
            raise ValueError("reference: dates needs reference_start and reference_end")
        if self.reference != "dates" and (self.reference_start or self.reference_end):
            raise ValueError(f"reference_start/reference_end are read only with reference: dates "
                             f"(reference is {self.reference!r}): set drift.reference=dates to use the range")
        if self.reference == "dates":
            lo, hi = _utc_instant(self.reference_start or ""), _utc_instant(self.reference_end or "")
            if hi <= lo:
                raise ValueError("reference_end must be after reference_start (the end is exclusive)")
        if self.permutations and 1.0 / (self.permutations + 1) >= self.alpha:
            raise ValueError(f"permutations must exceed 1/alpha - 1 = {1 / self.alpha - 1:g}, "
                             "or the embedding p-value can never fall below alpha")
        return self


class LangfuseParams(Section):
    """Langfuse prompt management and tracing; inert unless a host and both keys are known.

    Why env for secrets: ``params.yaml`` is versioned, so the secret key is read from
    ``LANGFUSE_SECRET_KEY`` only; host and public key may come from here or from
    ``LANGFUSE_BASE_URL``/``LANGFUSE_HOST`` and ``LANGFUSE_PUBLIC_KEY``. Without them the
    bundled prompt files are used and nothing is traced; no failure of Langfuse ever
    stops a stage.
    """

    host: str | None = Field(None, description="Langfuse URL; null = env LANGFUSE_BASE_URL or LANGFUSE_HOST")
    public_key: str | None = Field(None, description="null = env LANGFUSE_PUBLIC_KEY")
    prompts: bool = Field(True, description="fetch prompts from Langfuse when configured (else the bundled files)")
    tracing: bool = Field(True, description="trace evaluation generations and judge calls when configured")
    label: str = Field("production", min_length=1, description="prompt label fetched")
    cache_ttl_s: int = Field(300, ge=0, description="SDK prompt cache lifetime; 0 = fetch every time")
    timeout_s: int = Field(5, ge=1, description="HTTP timeout of the SDK (prompt fetch and span export)")
    prompt_retries: int = Field(1, ge=0, le=4, description="retries of a failed prompt fetch (1 s apart)")
    environment: str | None = Field(
        None, pattern=r"^[a-z0-9_-]{1,40}$", description="Langfuse tracing environment (lowercase)"
    )

    @model_validator(mode="after")
    def _environment_not_reserved(self) -> LangfuseParams:
        if self.environment and self.environment.startswith("langfuse"):
            raise ValueError("langfuse.environment may not start with 'langfuse' (reserved by Langfuse)")
        return self


class JudgeParams(Section):
    """Pairwise LLM-as-judge through an OpenAI-compatible endpoint (off by default).

    Each sampled test prompt is answered by the candidate and the reference; the judge
    sees both answers twice with the order swapped, which cancels position bias. The
    API key is read from env ``JUDGE_API_KEY`` (or ``OPENAI_API_KEY``), never from here.
    """

    enabled: bool = Field(False, description="run the judge in evaluate and report it")
    gate: bool = Field(False, description="also make the judge's win-rate a gate criterion (needs enabled)")
    base_url: str | None = Field(None, description="e.g. https://host/v1; null = env JUDGE_BASE_URL or OPENAI_BASE_URL")
    model: str | None = Field(None, description="judge model name; null = env JUDGE_MODEL")
    prompt: str = Field("judge_pairwise", min_length=1, description="Langfuse prompt name (bundled fallback)")
    system_prompt: str | None = Field(
        "generation_system", description="prompt name of the system message given to both policies; null = none"
    )
    sample_size: int = Field(50, ge=1, description="test prompts judged (seeded sample)")
    max_new_tokens: int = Field(96, ge=1, description="greedy tokens each policy generates per prompt")
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(16, ge=1, description="tokens of the judge's answer")
    timeout_s: float = Field(60.0, gt=0, description="per HTTP request")
    max_retries: int = Field(3, ge=0, le=10, description="retries on connection errors, 429 and 5xx")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each retry (capped at 30 s)")
    concurrency: int = Field(4, ge=1, le=32, description="judge requests in flight")
    min_items: int = Field(20, ge=1, description="gate: fewer validly judged prompts cannot support a decision")
    min_win_rate: float = Field(0.5, ge=0, le=1, description="gate: (wins + ties/2) / n at least this")
    min_win_rate_ci_low: float = Field(0.0, ge=0, le=1, description="gate: lower interval bound at least this")
    max_invalid_share: float = Field(0.2, ge=0, le=1, description="gate: unparseable judge answers at most this share")

    @model_validator(mode="after")
    def _gate_needs_judge(self) -> JudgeParams:
        if self.gate and not self.enabled:
            raise ValueError("judge.gate needs judge.enabled")
        return self


class Params(Section):
    """The whole of ``params.yaml``."""

    seed: int = Field(1234, ge=0, le=MAX_SEED, description="one seed for every random choice")
    generate: GenerateParams = Field(default_factory=GenerateParams)
    ingest: IngestParams = Field(default_factory=IngestParams)
    scrub: ScrubParams = Field(default_factory=ScrubParams)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    pairs: PairsParams = Field(default_factory=PairsParams)
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    gate: GateParams = Field(default_factory=GateParams)
    registry: RegistryParams = Field(default_factory=RegistryParams)
    runtime: RuntimeParams = Field(default_factory=RuntimeParams)
    drift: DriftParams = Field(default_factory=DriftParams)
    langfuse: LangfuseParams = Field(default_factory=LangfuseParams)
    judge: JudgeParams = Field(default_factory=JudgeParams)

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class ConfigError(ValueError):
    """A params file or override that does not validate; the message names each field."""


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid parameters in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"  - {loc}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def parse_params(data: dict[str, Any], source: str = "params") -> Params:
    """Validate a plain dict; raise :class:`ConfigError` with one line per bad field."""
    try:
        return Params.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_params(path: str | Path = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None) -> Params:
    """Read ``params.yaml`` (missing file = all defaults) and apply dotted overrides."""
    path = Path(path)
    data: dict[str, Any] = {}
    if path.exists():
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded or {}
    if overrides:
        data = apply_overrides(data, overrides)
    # name where the bad value may come from: a typo in --set is not in the file
    return parse_params(data, f"{path} + overrides" if overrides else str(path))


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``{"a.b.c": value}`` overrides set.

    Why dotted keys: the CLI (``--set train.beta=0.2``) and the Airflow form both speak
    them, and validation afterwards catches a wrong path as an unknown key.
    """
    out = _deep_copy(data)
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[parts[-1]] = value
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` with the value read as YAML (``0.1`` -> float, ``[a,b]`` -> list)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}
