"""Where each stage reads and writes, relative to the project root.

The same paths appear in ``dvc.yaml``; a unit test holds the two together. Paths are
not tunables (so they are not in ``params.yaml``), but a different root can be given,
which is how tests run the whole graph in a temporary copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """Every file and folder a stage touches, under one project root."""

    root: Path = Path(".")

    # inputs
    @property
    def raw_dir(self) -> Path:
        return self.root / "data" / "raw" / "events"

    @property
    def canaries(self) -> Path:
        return self.root / "data" / "raw" / "canaries.json"

    # ingest. data/raw/ is the PII zone: the landing folder and ingest's joined but not yet
    # scrubbed records live there, and nothing outside data/raw/ may hold PII.
    @property
    def staged_dir(self) -> Path:
        return self.root / "data" / "raw" / "staged"

    @property
    def records(self) -> Path:
        """One row per feedback event, joined with its interaction and output(s); not scrubbed."""
        return self.staged_dir / "records.parquet"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "data" / "quarantine"

    @property
    def rejects(self) -> Path:
        """Quarantined lines: position, hash, reason and a PII-scrubbed excerpt (no raw text)."""
        return self.quarantine_dir / "rejects.parquet"

    # scrub
    @property
    def scrubbed_dir(self) -> Path:
        return self.root / "data" / "scrubbed"

    @property
    def scrubbed(self) -> Path:
        return self.scrubbed_dir / "records.parquet"

    # validate
    @property
    def validation_dir(self) -> Path:
        return self.root / "data" / "validation"

    # pairs
    @property
    def pairs_dir(self) -> Path:
        return self.root / "data" / "pairs"

    def pairs_split(self, split: str) -> Path:
        return self.pairs_dir / f"{split}.parquet"

    @property
    def safety_pairs(self) -> Path:
        return self.pairs_dir / "safety.parquet"

    # models and evaluation
    @property
    def models_dir(self) -> Path:
        return self.root / "data" / "models"

    @property
    def base_model(self) -> Path:
        return self.models_dir / "base"

    @property
    def candidate(self) -> Path:
        return self.models_dir / "candidate"

    @property
    def eval_dir(self) -> Path:
        return self.root / "data" / "eval"

    @property
    def drift_dir(self) -> Path:
        return self.root / "data" / "drift"

    # metrics (small JSON, tracked by git through DVC's metrics)
    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    def metrics(self, stage: str) -> Path:
        return self.metrics_dir / f"{stage}.json"
