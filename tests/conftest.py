"""Suite-wide hooks only (fixtures live beside the tests that use them).

The reliability battery's ledger is printed here, not in ``tests/reliability``: under
pytest-xdist (``make test`` runs two workers) only this top-level conftest is loaded by
the controller, and each worker hands its part of the ledger back when it finishes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability.helpers import (
    LEDGER,
    dump_ledger,
    ledger_markdown,
    ledger_rows,
    merge_ledger,
)

LEDGER_ENV = "PREFPIPE_RELIABILITY_LEDGER"
"""When set, the ledger is also written there as JSON at the end of the run."""
WORKER_LEDGER_KEY = "reliability_ledger"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On an xdist worker: send this worker's ledger rows to the controller."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output[WORKER_LEDGER_KEY] = ledger_rows()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """On the xdist controller: add a finished worker's ledger rows."""
    merge_ledger(getattr(node, "workeroutput", {}).get(WORKER_LEDGER_KEY) or {})


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Print what the battery injected and found (the figures RELIABILITY.md reports)."""
    if not LEDGER:
        return
    terminalreporter.section("reliability ledger")
    terminalreporter.write_line(ledger_markdown())
    if os.environ.get(LEDGER_ENV):
        dump_ledger(Path(os.environ[LEDGER_ENV]))
