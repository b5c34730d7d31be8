"""Fixtures of the reliability battery: one clean reference run of the data stages, and the ledger.

The reference run is the "new complete version" every crash is compared with, the first
of the two copies the idempotency tests compare, and the real outputs the isolation tests
inspect: one run of the bundled sample serves all of them (one per pytest-xdist worker).
The ledger is printed by ``tests/conftest.py``, which the xdist controller loads too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.project import SHARED
from tests.reliability.helpers import DATA_STAGES, fresh_copy, output_hashes, run_cli


@dataclass(frozen=True)
class Reference:
    """A project copy after one clean CLI run of every data stage."""

    repo: Path
    hashes: dict[str, str | None]
    seconds: dict[str, float]  # wall time of each stage's CLI run (process start included)


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Reference:
    if not SHARED.exists():
        pytest.skip("../shared not present (the pairs stage reads the public sets there)")
    repo = fresh_copy(tmp_path_factory.mktemp("reference"))
    seconds = {}
    for stage in DATA_STAGES:
        start = time.monotonic()
        proc = run_cli(repo, stage)
        seconds[stage] = time.monotonic() - start
        assert proc.returncode == 0, proc.stderr[-3000:]
    hashes = output_hashes(repo)
    assert all(hashes.values()), [k for k, v in hashes.items() if v is None]
    return Reference(repo, hashes, seconds)
