"""Known library warnings are hidden inside the block only; everything else still shows."""

from __future__ import annotations

import warnings

import pytest

from pipelines import library_warnings


def test_only_the_named_known_warnings_are_hidden_and_only_inside_the_block():
    def warn(message: str, category: type[Warning]) -> None:
        warnings.warn(message, category, stacklevel=2)

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with library_warnings.hidden("is_gradient_checkpointing"):
            warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
            warn("something new is deprecated", FutureWarning)
            warn("\x1b[33mAdd type hints to the `predict` method to enable data validation", UserWarning)
        warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
    shown = [str(w.message) for w in seen]
    assert shown == [
        "something new is deprecated",
        "\x1b[33mAdd type hints to the `predict` method to enable data validation",
        "`is_gradient_checkpointing` is deprecated and will be removed in v6.",
    ]


def test_the_pattern_matches_what_transformers_really_says():
    """If transformers rewords the warning, this fails instead of the noise silently coming back."""
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    with pytest.warns(FutureWarning, match=library_warnings.KNOWN["is_gradient_checkpointing"][1]):
        _ = model.is_gradient_checkpointing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with library_warnings.hidden("is_gradient_checkpointing"):
            _ = model.is_gradient_checkpointing


def test_an_unknown_name_is_an_error():
    with pytest.raises(KeyError), library_warnings.hidden("no-such-warning"):
        pass
