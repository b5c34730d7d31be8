"""MLflow pyfunc for a registered policy (a "models from code" file).

MLflow copies this file into each registered model and executes it on
``mlflow.pyfunc.load_model("models:/prefpipe-policy@champion")``; the pipeline itself
never imports it (which is why ``mlflow`` may be imported at the top here). MLflow 3
refuses to unpickle Python models by default, so a code file is the supported form.

``predict`` takes a DataFrame with a ``prompt`` column (a JSON list of chat messages,
or plain user text) and either

- a ``response`` column: returns the response's summed log-probability, its token
  count and the per-token mean (the quantities the evaluation gate uses), or
- no ``response`` column: returns a greedy ``completion`` (``params={"max_new_tokens": N}``).
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


def _is_messages(value: Any) -> bool:
    """A list of objects that each have a role and a content."""
    return isinstance(value, list) and all(
        isinstance(m, dict) and "role" in m and "content" in m for m in value
    )


class PolicyModel(PythonModel):
    """Scores or completes prompts with a candidate folder (base + merged adapters)."""

    def load_context(self, context: Any) -> None:
        from pipelines.model import load_policy, read_manifest

        folder = context.artifacts["candidate"]
        self.model, self.tokenizer = load_policy(folder)
        train = read_manifest(folder).get("params", {}).get("train", {})
        self.max_length = int(train.get("max_length", 256))
        self.max_prompt_length = int(train.get("max_prompt_length", 128))

    @staticmethod
    def _messages(cell: Any) -> list[dict[str, str]]:
        """Chat messages from a cell: a list (or the array pandas reads from Parquet), JSON, or plain text.

        Why so lenient: plain user text may itself start with ``[`` ("[URGENT] ..."); only
        text that parses as a JSON list of role/content objects is taken as messages.
        """
        import numpy as np

        from pipelines.model import pair_messages

        if isinstance(cell, list | tuple | np.ndarray):
            return pair_messages(list(cell))
        text = str(cell)
        if text.lstrip().startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if _is_messages(parsed):
                return pair_messages(parsed)
        return [{"role": "user", "content": text}]

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        # a DataFrame hint is one MLflow derives no schema from (the signature is logged
        # explicitly); without any hint it warns on every log and load
        from pipelines.model import fit_prompt, response_logprobs

        prompts = [self._messages(c) for c in model_input["prompt"]]
        if "response" in model_input.columns:
            sums, counts = response_logprobs(
                self.model, self.tokenizer, prompts, [str(r) for r in model_input["response"]],
                max_length=self.max_length, max_prompt_length=self.max_prompt_length,
            )
            return pd.DataFrame({"logp": sums, "n_tokens": counts, "logp_per_token": sums / counts.clip(min=1)})
        import torch

        max_new = int((params or {}).get("max_new_tokens", 64))
        out = []
        for msgs in prompts:
            ids = self.tokenizer.apply_chat_template(
                fit_prompt(self.tokenizer, msgs, self.max_prompt_length),
                add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
            )
            with torch.inference_mode():
                gen = self.model.generate(**ids, max_new_tokens=max_new, do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id)
            out.append(self.tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
        return pd.DataFrame({"completion": out})


mlflow.models.set_model(PolicyModel())
