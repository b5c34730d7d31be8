"""Small builders of raw events and records for tests (no generator, no randomness)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TS = "2026-11-10T09:00:00+00:00"


def interaction(iid: str, *, tenant: str = "acme", skill: str = "email_draft", thread: str | None = None,
                prompt: str = "Draft a reply to the vendor about the late invoice.", **extra: Any) -> dict[str, Any]:
    return {"event_id": f"ev-i-{iid}", "event_type": "interaction", "ts": TS, "tenant_id": tenant,
            "skill": skill, "thread_id": thread or f"th-{iid}", "interaction_id": iid, "prompt": prompt, **extra}


def output(iid: str, oid: str, *, tenant: str = "acme", skill: str = "email_draft", thread: str | None = None,
           text: str = "Hello, thanks for your note. The invoice will be paid on Friday.", **extra: Any) -> dict[str, Any]:
    return {"event_id": f"ev-o-{oid}", "event_type": "output", "ts": TS, "tenant_id": tenant, "skill": skill,
            "thread_id": thread or f"th-{iid}", "interaction_id": iid, "output_id": oid, "text": text,
            "policy_id": "policy-v1", **extra}


def feedback(iid: str, fid: str, kind: str, *, tenant: str = "acme", skill: str = "email_draft",
             thread: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"ev-f-{fid}", "event_type": "feedback", "ts": TS, "tenant_id": tenant, "skill": skill,
            "thread_id": thread or f"th-{iid}", "interaction_id": iid, "feedback_type": kind, **fields}


def write_jsonl(path: Path, rows: list[dict[str, Any] | bytes | str]) -> Path:
    """Write rows as JSONL; ``bytes``/``str`` items are written verbatim (for malformed lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for row in rows:
            if isinstance(row, bytes):
                fh.write(row + b"\n")
            elif isinstance(row, str):
                fh.write(row.encode("utf-8") + b"\n")
            else:
                fh.write(json.dumps(row).encode("utf-8") + b"\n")
    return path
