"""Warnings from the libraries we use that say nothing to our users, hidden where they arise.

Each entry names a warning the pipeline cannot act on, and why. Only these messages are
hidden, only inside :func:`hidden`, so every other warning (ours, or a library's new
ones) still shows. (MLflow's two UserWarnings at promote, "Add type hints to the
`predict` method" and "An input example was not provided", are answered, not hidden:
the policy's ``predict`` has a DataFrame hint and promote logs an input example.)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

KNOWN: dict[str, tuple[type[Warning], str]] = {
    "is_gradient_checkpointing": (
        FutureWarning,
        # PEFT and TRL read the old property name inside their own code; ours passes the new
        # `activation_checkpointing` argument. Printed several times in every training run,
        # and again each time PEFT loads an adapter (evaluate, promote's model).
        r"`is_gradient_checkpointing` is deprecated",
    ),
}


@contextmanager
def hidden(*names: str) -> Iterator[None]:
    """Inside the block, the named :data:`KNOWN` warnings are not shown (all of them if none named)."""
    with warnings.catch_warnings():
        for name in names or tuple(KNOWN):
            category, pattern = KNOWN[name]
            warnings.filterwarnings("ignore", message=pattern, category=category)
        yield
