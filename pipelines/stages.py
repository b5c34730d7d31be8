"""The stage registry: name -> ``module:function``, imported only when the stage runs.

Every stage has the signature ``run(params: Params, layout: Layout) -> dict`` and
returns its small metrics (the same dict it writes to ``metrics/<stage>.json``).
``dvc.yaml`` calls ``python -m pipelines <stage>``; the Airflow DAG calls
:func:`run_stage`. Both go through this table, so there is one stage graph.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pipelines.config import Params
from pipelines.layout import Layout

StageFn = Callable[[Params, Layout], dict[str, Any]]

STAGES: dict[str, str] = {
    "generate": "pipelines.generate:run",
    "ingest": "pipelines.ingest:run",
    "scrub": "pipelines.scrub:run",
    "validate": "pipelines.validate:run",
    "pairs": "pipelines.pairs:run",
    "validate_pairs": "pipelines.validate:run_pairs",
    "base_model": "pipelines.model:run",
    "train": "pipelines.train:run",
    "evaluate": "pipelines.evaluate:run",
    "gate": "pipelines.gate:run",
    "promote": "pipelines.promote:run",
    "drift": "pipelines.drift:run",
}
"""In pipeline order. ``generate`` is not part of dvc.yaml: it makes the bundled sample."""

STAGE_HELP: dict[str, str] = {
    "generate": "Generate seeded synthetic raw events.",
    "ingest": "Validate, dedupe and join raw events; quarantine bad lines with a reason.",
    "scrub": "Replace PII in every free-text field with typed placeholders.",
    "validate": "Great Expectations suite on the scrubbed records (critical failures stop the run).",
    "pairs": "Build preference pairs, dedupe them, split by thread, remove leakage.",
    "validate_pairs": "Great Expectations suite on the preference pairs.",
    "base_model": "Build the base model (builtin: tokenizer + small Llama + SFT warm-up; or a HF model).",
    "train": "LoRA SFT then DPO on the train split; tracked in MLflow.",
    "evaluate": "Candidate vs champion on held-out and safety pairs, with paired statistics and a report.",
    "gate": "Apply the promotion rubric to the evaluation; write the verdict with every reason.",
    "promote": "Register the candidate; move the `champion` alias when the gate passed.",
    "drift": "This week's events vs the reference window: tabular and embedding drift.",
}


def resolve(name: str) -> StageFn:
    """Import and return the stage function for ``name``."""
    try:
        target = STAGES[name]
    except KeyError:
        known = ", ".join(STAGES)
        raise KeyError(f"unknown stage {name!r}; known stages: {known}") from None
    module_name, func_name = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, func_name)


def run_stage(name: str, params: Params, layout: Layout | None = None) -> dict[str, Any]:
    """Run one stage and return its metrics."""
    return resolve(name)(params, layout or Layout())
