"""A readable summary of the last run: every stage's metrics, in pipeline order.

Why not only ``dvc metrics show``: it puts every key of every metrics file in one table
row per file, hundreds of columns wide, which no terminal shows. Here each stage gets a
few lines: its scalar figures on one line, then one line per group (quarantine reasons,
entity counts, splits), in the order ``dvc.yaml`` runs the stages. It reads the same
``metrics/*.json`` files, so the two never disagree.
"""

from __future__ import annotations

import json
import math
import shutil
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

NOT_RUN = "not run yet"
FLOAT_DIGITS = 4
"""Significant digits shown for a float metric (the files keep full precision)."""
DEFAULT_WIDTH = 100
NAME_WIDTH = 16
"""Column of the stage names; the figures start after it."""
MAX_LIST_ITEMS = 12
"""A longer list is cut, with how many more it holds."""
_KEEP = "\xa0"
"""Joins a name to its value so that a wrapped line never separates them."""


def metrics_files(dvc_yaml: Path) -> list[tuple[str, Path]]:
    """(stage, metrics file) in the order ``dvc.yaml`` lists its stages."""
    stages = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages") or {}
    out = []
    for name, spec in stages.items():
        wdir = dvc_yaml.parent / str((spec or {}).get("wdir", "."))
        for entry in (spec or {}).get("metrics") or []:
            path = next(iter(entry)) if isinstance(entry, Mapping) else entry
            out.append((name, wdir / str(path)))
    return out


def fmt_value(value: Any) -> str:
    """One metric value as a person reads it: thousands separators, a few significant digits."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "-"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{FLOAT_DIGITS}g}"
    return str(value)


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, Mapping | list)


def _list_text(values: list[Any]) -> str:
    shown = ", ".join(fmt_value(v) if _is_scalar(v) else json.dumps(v, default=str) for v in values[:MAX_LIST_ITEMS])
    more = len(values) - MAX_LIST_ITEMS
    return shown + (f", ... ({more} more)" if more > 0 else "") if values else "(none)"


def metric_lines(metrics: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """The lines for one metrics object: its scalars together, then one line per group.

    A group of scalars (``entities``) is ``entities: EMAIL 499, PHONE 483``; a group of
    groups (``fields.prompt``) recurses with a dotted name.
    """
    scalars = [(k, v) for k, v in metrics.items() if _is_scalar(v)]
    if scalars:
        head = " · ".join(f"{k}{_KEEP}{fmt_value(v)}" for k, v in scalars)
        yield f"{prefix}: {head}" if prefix else head
    for key, value in metrics.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, list):
            yield f"{name}: {_list_text(value)}"
        elif isinstance(value, Mapping):
            if value and all(_is_scalar(v) for v in value.values()):
                yield f"{name}: " + ", ".join(f"{k}{_KEEP}{fmt_value(v)}" for k, v in value.items())
            elif not value:
                yield f"{name}: (none)"
            else:
                yield from metric_lines(value, name)


def summary(root: Path, width: int | None = None) -> str:
    """The summary text for the project at ``root`` (its ``dvc.yaml`` and metrics files)."""
    width = width or shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
    indent = " " * NAME_WIDTH
    out = []
    for stage, path in metrics_files(root / "dvc.yaml"):
        if not path.exists():
            lines = [NOT_RUN]
        else:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as err:
                data = None
                lines = [f"unreadable {path.name}: {err}"]
            if isinstance(data, Mapping):
                lines = list(metric_lines(data)) or ["(empty)"]
            elif data is not None:
                lines = [fmt_value(data)]
        first = f"{stage:<{NAME_WIDTH - 1}} "
        for i, line in enumerate(lines):
            out.extend(
                textwrap.wrap(
                    line, width=max(width, NAME_WIDTH + 20), initial_indent=first if i == 0 else indent,
                    subsequent_indent=indent + "  ", break_on_hyphens=False, break_long_words=False,
                )
            )
    return "\n".join(out).replace(_KEEP, " ")
